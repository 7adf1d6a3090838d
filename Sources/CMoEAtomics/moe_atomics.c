// See include/moe_atomics.h.
#define _GNU_SOURCE
#include "moe_atomics.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#if defined(__linux__)
#include <linux/futex.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#endif

uint64_t moe_atomic_load_acquire_u64(const uint64_t *address) {
    return atomic_load_explicit((const _Atomic uint64_t *)address, memory_order_acquire);
}

void moe_atomic_store_release_u64(uint64_t *address, uint64_t value) {
    atomic_store_explicit((_Atomic uint64_t *)address, value, memory_order_release);
}

uint64_t moe_atomic_fetch_add_u64(uint64_t *address, uint64_t delta) {
    return atomic_fetch_add_explicit((_Atomic uint64_t *)address, delta, memory_order_acq_rel);
}

uint32_t moe_atomic_load_acquire_u32(const uint32_t *address) {
    return atomic_load_explicit((const _Atomic uint32_t *)address, memory_order_acquire);
}

void moe_atomic_store_release_u32(uint32_t *address, uint32_t value) {
    atomic_store_explicit((_Atomic uint32_t *)address, value, memory_order_release);
}

uint32_t moe_atomic_fetch_add_u32(uint32_t *address, uint32_t delta) {
    return atomic_fetch_add_explicit((_Atomic uint32_t *)address, delta, memory_order_seq_cst);
}

uint32_t moe_atomic_load_seq_cst_u32(const uint32_t *address) {
    return atomic_load_explicit((const _Atomic uint32_t *)address, memory_order_seq_cst);
}

void moe_atomic_fence(void) { atomic_thread_fence(memory_order_seq_cst); }

void moe_cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

int moe_futex_wait(uint32_t *address, uint32_t expected, int64_t timeout_ns) {
    if (timeout_ns < 0) timeout_ns = 0;
    struct timespec timeout = {.tv_sec = timeout_ns / 1000000000, .tv_nsec = timeout_ns % 1000000000};
#if defined(__linux__)
    // FUTEX_WAIT without FUTEX_PRIVATE_FLAG: keyed on the shared page, so it works across processes.
    long rc = syscall(SYS_futex, address, FUTEX_WAIT, expected, &timeout, NULL, 0);
    if (rc == 0) return 0;
    if (errno == EAGAIN || errno == EINTR) return 0;
    if (errno == ETIMEDOUT) return 1;
    return -errno;
#else
    if (atomic_load_explicit((_Atomic uint32_t *)address, memory_order_acquire) != expected) return 0;
    struct timespec nap = {.tv_sec = 0, .tv_nsec = timeout_ns < 200000 ? timeout_ns : 200000};
    nanosleep(&nap, NULL);
    return 0;
#endif
}

void moe_futex_wake_all(uint32_t *address) {
#if defined(__linux__)
    syscall(SYS_futex, address, FUTEX_WAKE, 0x7fffffff, NULL, NULL, 0);
#else
    (void)address;
#endif
}

// Cleanup table -------------------------------------------------------------------------------------------
// Fixed storage, written only outside signal handlers; a slot is published by setting `used` last, so a
// handler sees either a complete name or none.

#define MOE_CLEANUP_SLOTS 64
#define MOE_CLEANUP_NAME 64

static char cleanup_names[MOE_CLEANUP_SLOTS][MOE_CLEANUP_NAME];
static volatile sig_atomic_t cleanup_used[MOE_CLEANUP_SLOTS];
static _Atomic int cleanup_installed = 0;

static const int cleanup_signals[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGABRT, SIGSEGV,
                                      SIGBUS, SIGILL, SIGTRAP, SIGFPE,  SIGPIPE};

static void cleanup_unlink_all(void) {
    for (int i = 0; i < MOE_CLEANUP_SLOTS; i++) {
        if (!cleanup_used[i]) continue;
#if defined(__linux__)
        // shm_unlink(name) is unlink("/dev/shm" + name) on Linux; unlink is async-signal-safe.
        char path[MOE_CLEANUP_NAME + 16] = "/dev/shm";
        size_t n = strlen(cleanup_names[i]);
        memcpy(path + 8, cleanup_names[i], n + 1);
        unlink(path);
#else
        shm_unlink(cleanup_names[i]);
#endif
        cleanup_used[i] = 0;
    }
}

static void cleanup_on_signal(int signal_number) {
    int saved = errno;
    cleanup_unlink_all();
    errno = saved;
    // Re-raise with the default action so the exit status still says which signal ended the process.
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_handler = SIG_DFL;
    sigemptyset(&action.sa_mask);
    sigaction(signal_number, &action, NULL);
    raise(signal_number);
}

static void cleanup_at_exit(void) { cleanup_unlink_all(); }

static void cleanup_install(void) {
    int expected = 0;
    if (!atomic_compare_exchange_strong(&cleanup_installed, &expected, 1)) return;
    // Runs once per process, before any name is published.
    for (size_t i = 0; i < sizeof cleanup_signals / sizeof cleanup_signals[0]; i++) {
        struct sigaction previous;
        if (sigaction(cleanup_signals[i], NULL, &previous) != 0) continue;
        // Leave signals the host program handles or ignores alone (it owns them).
        if (previous.sa_handler != SIG_DFL) continue;
        struct sigaction action;
        memset(&action, 0, sizeof action);
        action.sa_handler = cleanup_on_signal;
        sigemptyset(&action.sa_mask);
        action.sa_flags = SA_RESETHAND;
        sigaction(cleanup_signals[i], &action, NULL);
    }
    atexit(cleanup_at_exit);
}

// Several ranks may run as threads of one process (tests), so writers take a mutex; the handler does not.
static pthread_mutex_t cleanup_mutex = PTHREAD_MUTEX_INITIALIZER;

int moe_cleanup_remember(const char *name) {
    if (strlen(name) >= MOE_CLEANUP_NAME) return -1;
    cleanup_install();
    int result = -1;
    pthread_mutex_lock(&cleanup_mutex);
    for (int i = 0; i < MOE_CLEANUP_SLOTS; i++) {
        if (cleanup_used[i]) continue;
        strcpy(cleanup_names[i], name);
        atomic_signal_fence(memory_order_seq_cst);
        cleanup_used[i] = 1;
        result = 0;
        break;
    }
    pthread_mutex_unlock(&cleanup_mutex);
    return result;
}

void moe_cleanup_forget(const char *name) {
    pthread_mutex_lock(&cleanup_mutex);
    for (int i = 0; i < MOE_CLEANUP_SLOTS; i++) {
        if (cleanup_used[i] && strcmp(cleanup_names[i], name) == 0) cleanup_used[i] = 0;
    }
    pthread_mutex_unlock(&cleanup_mutex);
}

int moe_probe_exclusive_holder_gone(int fd) {
    if (flock(fd, LOCK_SH | LOCK_NB) == 0) {
        flock(fd, LOCK_UN);
        return 1;
    }
    if (errno == EWOULDBLOCK) return 0;
    return -errno;
}

int moe_lock_exclusive(int fd) {
    if (flock(fd, LOCK_EX | LOCK_NB) == 0) return 0;
    return -errno;
}

// Launcher helpers ----------------------------------------------------------------------------------------

int moe_die_with_parent(int signal_number) {
#if defined(__linux__)
    if (prctl(PR_SET_PDEATHSIG, signal_number) != 0) return -errno;
#else
    (void)signal_number;
#endif
    return 0;
}

void moe_line_buffer_stdout(void) { setvbuf(stdout, NULL, _IOLBF, 0); }

int moe_pipe_cloexec(int fds[2]) {
#if defined(__linux__)
    if (pipe2(fds, O_CLOEXEC) != 0) return -errno;
#else
    if (pipe(fds) != 0) return -errno;
    fcntl(fds[0], F_SETFD, FD_CLOEXEC);
    fcntl(fds[1], F_SETFD, FD_CLOEXEC);
#endif
    return 0;
}

static volatile sig_atomic_t termination_signal = 0;
static int termination_count = 0;  // atomic: signals since the last take, none lost between reads

static void record_termination_signal(int signal_number) {
    termination_signal = signal_number;
    __atomic_fetch_add(&termination_count, 1, __ATOMIC_SEQ_CST);
}

void moe_watch_termination_signals(void) {
    const int signals[] = {SIGINT, SIGTERM, SIGHUP};
    for (size_t i = 0; i < sizeof signals / sizeof signals[0]; i++) {
        struct sigaction action;
        memset(&action, 0, sizeof action);
        action.sa_handler = record_termination_signal;
        sigemptyset(&action.sa_mask);
        sigaction(signals[i], &action, NULL);
    }
}

int moe_take_termination_signal(void) {
    int value = termination_signal;
    termination_signal = 0;
    return value;
}

int moe_take_termination_count(void) { return __atomic_exchange_n(&termination_count, 0, __ATOMIC_SEQ_CST); }
