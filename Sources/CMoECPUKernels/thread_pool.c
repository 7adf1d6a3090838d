// A persistent thread pool for the CPU backend's phases (see moekit_cpu.h).
//
// Hand-over: the caller publishes (task, context) and bumps `generation` (release); workers poll it (acquire)
// and run the task; each finishing worker decrements `pending` (release) and the caller waits for 0
// (acquire), so every write a worker made is visible to the caller when run() returns.
// Waiting: poll with `pause` for `pause_ns` (a hand-over between the phases of one forward pass costs well under
// a microsecond), then poll with sched_yield until `spin_ns` (so on an oversubscribed machine a waiting thread
// gives its core to the thread it waits for), then sleep on a condition variable (an idle process does not burn
// its cores).
#define _GNU_SOURCE
#include "moekit_cpu.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>

#if defined(__x86_64__)
#include <immintrin.h>
#define cpu_relax() _mm_pause()
#elif defined(__aarch64__)
#define cpu_relax() __asm__ volatile("yield")
#else
#define cpu_relax() ((void)0)
#endif

/// How long a waiting thread polls with `pause`, and how long it polls at all before it sleeps.
static const int64_t pause_ns = 50000;
static const int64_t spin_ns = 2000000;

struct moekit_pool {
    int32_t workers;
    pthread_t *threads;
    /// Serialises run() calls from different threads.
    pthread_mutex_t run_lock;
    /// Guards sleeping: workers waiting for a new generation, the caller waiting for `pending`.
    pthread_mutex_t sleep_lock;
    pthread_cond_t work_ready;
    pthread_cond_t work_done;
    _Atomic uint64_t generation;
    _Atomic int32_t pending;
    _Atomic int32_t sleepers;
    _Atomic int32_t caller_sleeping;
    _Atomic int stop;
    moekit_pool_task task;
    void *context;
};

typedef struct {
    moekit_pool *pool;
    int32_t index;
} worker_start;

static int64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

/// Polls until `generation` moves past `seen` (or stop), sleeping after spin_ns. Returns the new generation.
/// One step of a wait that started at `*start` (0: not yet timed). Returns 0 to keep polling, 1 to go to sleep.
static int wait_step(uint32_t spins, int64_t *start) {
    if ((spins & 255) != 255) {
        cpu_relax();
        return 0;
    }
    const int64_t t = now_ns();
    if (*start == 0) *start = t;
    if (t - *start > spin_ns) return 1;
    if (t - *start > pause_ns) sched_yield();
    else cpu_relax();
    return 0;
}

static uint64_t wait_for_work(moekit_pool *pool, uint64_t seen) {
    int64_t start = 0;
    for (uint32_t spins = 0;; spins++) {
        uint64_t g = atomic_load_explicit(&pool->generation, memory_order_acquire);
        if (g != seen || atomic_load_explicit(&pool->stop, memory_order_acquire)) return g;
        if (wait_step(spins, &start)) break;
    }
    pthread_mutex_lock(&pool->sleep_lock);
    atomic_fetch_add_explicit(&pool->sleepers, 1, memory_order_seq_cst);
    uint64_t g;
    while ((g = atomic_load_explicit(&pool->generation, memory_order_seq_cst)) == seen &&
           !atomic_load_explicit(&pool->stop, memory_order_seq_cst)) {
        pthread_cond_wait(&pool->work_ready, &pool->sleep_lock);
    }
    atomic_fetch_sub_explicit(&pool->sleepers, 1, memory_order_seq_cst);
    pthread_mutex_unlock(&pool->sleep_lock);
    return g;
}

static void *worker_main(void *argument) {
    worker_start start = *(worker_start *)argument;
    free(argument);
    moekit_pool *pool = start.pool;
    uint64_t seen = 0;
    for (;;) {
        seen = wait_for_work(pool, seen);
        if (atomic_load_explicit(&pool->stop, memory_order_acquire)) return NULL;
        pool->task(pool->context, start.index);
        if (atomic_fetch_sub_explicit(&pool->pending, 1, memory_order_seq_cst) == 1 &&
            atomic_load_explicit(&pool->caller_sleeping, memory_order_seq_cst)) {
            pthread_mutex_lock(&pool->sleep_lock);
            pthread_cond_signal(&pool->work_done);
            pthread_mutex_unlock(&pool->sleep_lock);
        }
    }
}

moekit_pool *moekit_pool_create(int32_t workers) {
    if (workers < 1) {
        errno = EINVAL;
        return NULL;
    }
    moekit_pool *pool = calloc(1, sizeof(moekit_pool));
    if (!pool) return NULL;
    pool->workers = workers;
    pool->threads = calloc((size_t)workers, sizeof(pthread_t));
    if (!pool->threads) {
        free(pool);
        return NULL;
    }
    pthread_mutex_init(&pool->run_lock, NULL);
    pthread_mutex_init(&pool->sleep_lock, NULL);
    pthread_cond_init(&pool->work_ready, NULL);
    pthread_cond_init(&pool->work_done, NULL);
    for (int32_t i = 1; i < workers; i++) {
        worker_start *start = malloc(sizeof(worker_start));
        int error = ENOMEM;
        if (start) {
            start->pool = pool;
            start->index = i;
            error = pthread_create(&pool->threads[i], NULL, worker_main, start);
        }
        if (error != 0) {
            free(start);
            pool->workers = i;  // stop and join the threads that did start
            moekit_pool_destroy(pool);
            errno = error;
            return NULL;
        }
    }
    return pool;
}

int32_t moekit_pool_workers(const moekit_pool *pool) { return pool->workers; }

void moekit_pool_run(moekit_pool *pool, moekit_pool_task task, void *context) {
    pthread_mutex_lock(&pool->run_lock);
    if (pool->workers == 1) {
        task(context, 0);
        pthread_mutex_unlock(&pool->run_lock);
        return;
    }
    pool->task = task;
    pool->context = context;
    atomic_store_explicit(&pool->pending, pool->workers - 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&pool->generation, 1, memory_order_seq_cst);
    if (atomic_load_explicit(&pool->sleepers, memory_order_seq_cst) > 0) {
        pthread_mutex_lock(&pool->sleep_lock);
        pthread_cond_broadcast(&pool->work_ready);
        pthread_mutex_unlock(&pool->sleep_lock);
    }
    task(context, 0);
    int64_t start = 0;
    for (uint32_t spins = 0; atomic_load_explicit(&pool->pending, memory_order_acquire) != 0; spins++) {
        if (wait_step(spins, &start)) {
            pthread_mutex_lock(&pool->sleep_lock);
            atomic_store_explicit(&pool->caller_sleeping, 1, memory_order_seq_cst);
            while (atomic_load_explicit(&pool->pending, memory_order_seq_cst) != 0)
                pthread_cond_wait(&pool->work_done, &pool->sleep_lock);
            atomic_store_explicit(&pool->caller_sleeping, 0, memory_order_seq_cst);
            pthread_mutex_unlock(&pool->sleep_lock);
            break;
        }
    }
    pthread_mutex_unlock(&pool->run_lock);
}

void moekit_pool_destroy(moekit_pool *pool) {
    if (!pool) return;
    pthread_mutex_lock(&pool->sleep_lock);
    atomic_store_explicit(&pool->stop, 1, memory_order_seq_cst);
    pthread_cond_broadcast(&pool->work_ready);
    pthread_mutex_unlock(&pool->sleep_lock);
    for (int32_t i = 1; i < pool->workers; i++) pthread_join(pool->threads[i], NULL);
    pthread_cond_destroy(&pool->work_ready);
    pthread_cond_destroy(&pool->work_done);
    pthread_mutex_destroy(&pool->sleep_lock);
    pthread_mutex_destroy(&pool->run_lock);
    free(pool->threads);
    free(pool);
}
