/* fastnn's thread pool: runs the n tasks of a job (the tiles of one GEMM) on the calling
 * thread and up to n_threads - 1 helper threads, each task exactly once.
 *
 * Why not an OpenMP parallel region: its closing barrier waits for every thread of the
 * team, so a helper whose core is busy with another process (a shared machine, a
 * starved vCPU) stalls the caller for a scheduler time slice, milliseconds per GEMM.
 * Here the caller claims tasks too and only waits for tasks a helper has actually
 * started: a helper that is not running simply takes no task, and the job costs what
 * the serial loop costs. Which thread runs a task never changes its result.
 *
 * One job at a time per process: a second caller that finds the pool busy (another
 * Python thread training another model) runs its tasks itself. A forked child (whose
 * helpers did not survive the fork) starts a fresh pool. Helpers spin (10 ms) on the
 * next job (cheap back-to-back GEMMs), then sleep on a condition variable.
 *
 * Claims carry the job's generation in their upper 32 bits, so a helper waking late
 * can never take a task of a newer job with the old job's function.
 */
#ifndef FASTNN_POOL_H
#define FASTNN_POOL_H

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <time.h>
#include <unistd.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define FNN_PAUSE() _mm_pause()
#else
#define FNN_PAUSE() ((void)0)
#endif

#if defined(__GNUC__)
#define FNN_POOL_UNUSED __attribute__((unused))
#else
#define FNN_POOL_UNUSED
#endif

#define FNN_POOL_MAX_HELPERS 63
/* How long a helper spins on the next job before it sleeps: waking a sleeping thread
 * can take longer than a GEMM block (milliseconds on a busy VM), and a block a helper
 * takes late makes the caller wait; a step's serial part (the optimizer's pass over
 * every parameter) lasts a few milliseconds. */
#define FNN_POOL_SPIN_NS 10000000L

typedef void (*fnn_task_fn)(void *ctx, int task);

typedef struct {
    pthread_mutex_t job_lock;   /* held by the caller running a job */
    pthread_mutex_t wake_lock;  /* with wake: helpers sleep between jobs */
    pthread_cond_t wake;
    _Atomic uint32_t generation;     /* bumped when a job is published */
    _Atomic uint64_t claim;          /* (generation << 32) | next task */
    _Atomic int done;                /* tasks of the current job finished */
    _Atomic int helpers_wanted;      /* helpers allowed to join the current job */
    fnn_task_fn fn;
    void *ctx;
    int n_tasks;
    int n_helpers;                   /* helper threads started */
    pid_t pid;                       /* the process that started them */
} fnn_pool_t;

typedef struct {
    fnn_pool_t *pool;
    int index;
} fnn_helper_arg_t;

/* One pool per extension module that includes this header (only the dense kernels
 * run jobs). Initialised on first use. */
FNN_POOL_UNUSED static fnn_pool_t fnn_pool_state;
FNN_POOL_UNUSED static fnn_helper_arg_t fnn_helper_args[FNN_POOL_MAX_HELPERS];
FNN_POOL_UNUSED static pthread_mutex_t fnn_pool_init_lock = PTHREAD_MUTEX_INITIALIZER;

/* Claim and run tasks of generation gen until none is left (or a newer job exists). */
FNN_POOL_UNUSED static void fnn_pool_work(fnn_pool_t *p, uint32_t gen, fnn_task_fn fn, void *ctx, int n) {
    uint64_t c = atomic_load_explicit(&p->claim, memory_order_acquire);
    for (;;) {
        if ((uint32_t)(c >> 32) != gen || (int)(c & 0xffffffffu) >= n)
            return;
        if (atomic_compare_exchange_weak_explicit(&p->claim, &c, c + 1,
                                                  memory_order_acq_rel,
                                                  memory_order_acquire)) {
            fn(ctx, (int)(c & 0xffffffffu));
            atomic_fetch_add_explicit(&p->done, 1, memory_order_acq_rel);
            c = atomic_load_explicit(&p->claim, memory_order_acquire);
        }
    }
}

FNN_POOL_UNUSED static void *fnn_pool_helper(void *arg) {
    fnn_helper_arg_t *h = (fnn_helper_arg_t *)arg;
    fnn_pool_t *p = h->pool;
    uint32_t seen = atomic_load_explicit(&p->generation, memory_order_acquire);
    for (;;) {
        uint32_t gen;
        int spins = 0;
        struct timespec t0, now;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        while ((gen = atomic_load_explicit(&p->generation, memory_order_acquire)) == seen) {
            FNN_PAUSE();
            if (++spins % 256 == 0) {
                clock_gettime(CLOCK_MONOTONIC, &now);
                if ((now.tv_sec - t0.tv_sec) * 1000000000L + (now.tv_nsec - t0.tv_nsec)
                        > FNN_POOL_SPIN_NS)
                    break;
            }
        }
        if (gen == seen) {
            pthread_mutex_lock(&p->wake_lock);
            while ((gen = atomic_load_explicit(&p->generation, memory_order_acquire))
                   == seen)
                pthread_cond_wait(&p->wake, &p->wake_lock);
            pthread_mutex_unlock(&p->wake_lock);
        }
        seen = gen;
        if (h->index < atomic_load_explicit(&p->helpers_wanted, memory_order_acquire)) {
            /* fn, ctx, n_tasks were written before generation (release): read them
             * now; if a newer job replaced them meanwhile, its claim's generation
             * differs and no task is taken with them. */
            fnn_pool_work(p, gen, p->fn, p->ctx, p->n_tasks);
        }
    }
    return NULL;
}

/* Start helpers up to `want` (fewer if the system refuses threads). */
FNN_POOL_UNUSED static void fnn_pool_grow(fnn_pool_t *p, int want) {
    if (want > FNN_POOL_MAX_HELPERS)
        want = FNN_POOL_MAX_HELPERS;
    while (p->n_helpers < want) {
        pthread_t t;
        pthread_attr_t attr;
        fnn_helper_arg_t *h = &fnn_helper_args[p->n_helpers];
        h->pool = p;
        h->index = p->n_helpers;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        int err = pthread_create(&t, &attr, fnn_pool_helper, h);
        pthread_attr_destroy(&attr);
        if (err != 0)
            break;
        p->n_helpers++;
    }
}

FNN_POOL_UNUSED static fnn_pool_t *fnn_pool_get(void) {
    fnn_pool_t *p = &fnn_pool_state;
    pid_t me = getpid();
    if (p->pid != me) {
        pthread_mutex_lock(&fnn_pool_init_lock);
        if (p->pid != me) { /* first use, or a forked child: no helper exists here */
            pthread_mutex_init(&p->job_lock, NULL);
            pthread_mutex_init(&p->wake_lock, NULL);
            pthread_cond_init(&p->wake, NULL);
            atomic_store(&p->generation, 0);
            atomic_store(&p->claim, 0);
            atomic_store(&p->done, 0);
            atomic_store(&p->helpers_wanted, 0);
            p->n_helpers = 0;
            p->pid = me;
        }
        pthread_mutex_unlock(&fnn_pool_init_lock);
    }
    return p;
}

/* Run fn(ctx, 0..n_tasks-1), each once, on the caller and up to n_threads - 1 helpers;
 * returns when all are done. */
FNN_POOL_UNUSED static void fnn_pool_run(fnn_task_fn fn, void *ctx, int n_tasks, int n_threads) {
    int i;
    fnn_pool_t *p;
    if (n_threads > n_tasks)
        n_threads = n_tasks;
    if (n_threads <= 1) {
        for (i = 0; i < n_tasks; i++)
            fn(ctx, i);
        return;
    }
    p = fnn_pool_get();
    if (pthread_mutex_trylock(&p->job_lock) != 0) { /* busy: run the tasks here */
        for (i = 0; i < n_tasks; i++)
            fn(ctx, i);
        return;
    }
    fnn_pool_grow(p, n_threads - 1);
    uint32_t gen = atomic_load_explicit(&p->generation, memory_order_relaxed) + 1;
    /* invalidate stale claims first, then the job, then publish it */
    atomic_store_explicit(&p->claim, (uint64_t)gen << 32, memory_order_release);
    atomic_store_explicit(&p->done, 0, memory_order_release);
    p->fn = fn;
    p->ctx = ctx;
    p->n_tasks = n_tasks;
    atomic_store_explicit(&p->helpers_wanted, n_threads - 1, memory_order_release);
    pthread_mutex_lock(&p->wake_lock);
    atomic_store_explicit(&p->generation, gen, memory_order_release);
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->wake_lock);
    fnn_pool_work(p, gen, fn, ctx, n_tasks);
    /* only tasks a helper has claimed are left: wait for those */
    for (i = 0; atomic_load_explicit(&p->done, memory_order_acquire) < n_tasks; i++) {
        if (i < 2000)
            FNN_PAUSE();
        else /* that helper lost its core: let it have ours */
            sched_yield();
    }
    pthread_mutex_unlock(&p->job_lock);
}

#endif /* FASTNN_POOL_H */
