// Atomics, futex waits and signal-safe segment cleanup for expert parallelism over POSIX shared memory.
//
// Swift's standard library has no atomics on raw memory shared between processes, so the few operations the
// MoEParallel barrier needs live here as C11 atomics. Every function is lock-free and usable on memory mapped
// MAP_SHARED by several processes (and mapped several times by one process).
#ifndef MOE_ATOMICS_H
#define MOE_ATOMICS_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

// 64-bit words (epochs, states) ---------------------------------------------------------------------------
uint64_t moe_atomic_load_acquire_u64(const uint64_t *address);
void moe_atomic_store_release_u64(uint64_t *address, uint64_t value);
uint64_t moe_atomic_fetch_add_u64(uint64_t *address, uint64_t delta);

// 32-bit words (doorbells are 32-bit because the futex word is) -----------------------------------------------
uint32_t moe_atomic_load_acquire_u32(const uint32_t *address);
void moe_atomic_store_release_u32(uint32_t *address, uint32_t value);
/// Sequentially consistent fetch-add (the doorbell/sleeper handshake relies on a total order).
uint32_t moe_atomic_fetch_add_u32(uint32_t *address, uint32_t delta);
uint32_t moe_atomic_load_seq_cst_u32(const uint32_t *address);

/// A full memory fence.
void moe_atomic_fence(void);
/// A spin-loop hint (x86 `pause`, arm `yield`).
void moe_cpu_relax(void);

/// Sleeps until *address != expected, a wake arrives, or `timeout_ns` passes (spurious returns are allowed).
/// Uses a shared (not process-private) futex on Linux, so it wakes across processes; elsewhere it sleeps
/// briefly. Returns 0 when woken or the value differed, 1 on timeout, -errno on other errors.
int moe_futex_wait(uint32_t *address, uint32_t expected, int64_t timeout_ns);
/// Wakes every waiter sleeping on `address` (in any process).
void moe_futex_wake_all(uint32_t *address);

// Cleanup of named shared-memory segments on every exit path ------------------------------------------------
/// Remembers a segment name ("/moe-…") so that it is unlinked if the process exits (exit(), return from main)
/// or dies from a catchable signal (INT, TERM, HUP, QUIT, ABRT, SEGV, BUS, ILL, TRAP, FPE, PIPE) before
/// `moe_cleanup_forget` is called. Installs the handlers on first use; the handler unlinks every remembered
/// name with async-signal-safe calls, then re-raises the signal with its default action.
/// Returns 0, or -1 when the table (64 names) is full or the name is too long (> 63 bytes).
int moe_cleanup_remember(const char *name);
/// Forgets a name (after it was unlinked normally).
void moe_cleanup_forget(const char *name);

/// Tries a non-blocking shared flock on `fd`: returns 1 when it could be taken (so nobody holds the exclusive
/// lock: the segment's owner has exited), 0 when the owner still holds it, -errno on error. A taken lock is
/// released before returning.
int moe_probe_exclusive_holder_gone(int fd);
/// Takes a non-blocking exclusive flock on `fd`: 0 on success, -errno otherwise.
int moe_lock_exclusive(int fd);

// Process helpers for the rank launcher -----------------------------------------------------------------
/// Asks the kernel to send `signal_number` to this process when its parent exits (Linux; no-op elsewhere),
/// so ranks do not outlive a launcher killed with SIGKILL. Returns 0 or -errno.
int moe_die_with_parent(int signal_number);
/// Makes stdout line-buffered (rank output goes through the launcher's pipes).
void moe_line_buffer_stdout(void);
/// pipe2(fds, O_CLOEXEC): both ends close on exec. Returns 0 or -errno.
int moe_pipe_cloexec(int fds[2]);
/// Records INT, TERM and HUP instead of dying (the launcher forwards them to its ranks).
void moe_watch_termination_signals(void);
/// The last recorded signal since the previous call, or 0.
int moe_take_termination_signal(void);
/// How many termination signals arrived since the last call (atomically reset): two quick Ctrl-Cs count as two.
int moe_take_termination_count(void);

#ifdef __cplusplus
}
#endif

#endif
