/* fastnn's own GEMM (docs/spec.md §10), float32 and float64: a packed, single-threaded
 * AVX-512 GEMM behind BLAS's Fortran sgemm_ and dgemm_ signatures, so that the three
 * backends call it exactly as they call BLAS (fastnn/_blas.py hands out its addresses
 * in place of OpenBLAS's). Compiled into gemm_cython only; built for AVX-512 by target
 * attributes on each function (GCC and clang), whatever the build flags, and handed out
 * only where the CPU has it. One body (fastnn_gemm_body.h) for both types, included
 * once per type with that type's vector macros.
 *
 * fnn_own_xgemm_f32 / _f64: column-major C (m x n) = op(A) (m x k) op(B) (k x n)
 * for alpha 1, beta 0, transa and transb 'N' or 'T', at least FNN_OWN_MIN_M rows and
 * more than the BLAS's small-matrix size (fnn_own_small_mnk); any other call goes to the
 * BLAS's ?gemm_ unchanged (the type's fnn_own_fallback). Which one runs depends on the
 * call's shape only, so a product's bits still depend on its shape and the host's
 * libraries only.
 *
 * Goto/BLIS loop order (jc, pc, ic, jr, ir): NC columns of C, KC of the inner
 * dimension, MC rows. op(A)'s MC x KC block is packed into MR-row micro-panels (the
 * untransposed A whole before use, a transposed A micro-panel by micro-panel at first
 * use, by register transposes of a vector's lanes square); op(B) into NR-column
 * micro-panels, each packed just before its first use, so that it is still in L1/L2
 * when the kernel reads it (+6-9% against packing the block ahead,
 * docs/benchmarks/2026-12-05-packed-gemm.md). Micro-kernel MR x NR = 32 x 14 (float32)
 * or 16 x 14 (float64): two zmm rows of MR, 28 zmm accumulators, per k step 2 loads of
 * packed A, 14 broadcasts of packed B, 28 FMAs; KC 512 (float32) or 256 (float64), the
 * same bytes; the last, narrower column panel has kernels of its exact width; a partial
 * row panel goes through a temporary tile.
 *
 * Bits: an element is one FMA chain over p in k order within each KC block, the blocks
 * added in order, so its value depends on k alone, never on m, n or where the element
 * lies: a product cut into output tiles that this GEMM takes gives the whole call's
 * bits.
 *
 * Packing buffers are the calling thread's own (allocated at its first call, grown
 * when a larger block comes, freed when the thread exits), so that fastnn's pool
 * threads, Numba's and the caller's run tiles side by side and nothing is allocated
 * per call once a thread has seen its largest product. */
#ifndef FASTNN_GEMM_H
#define FASTNN_GEMM_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdlib.h>

#include "fastnn_blas.h"

#define FNN_OWN_MIN_M 32
#define FNN_SHARE_PANELS 8 /* NR-column micro-panels of op(B) a packing chunk, per KC block */

static double fnn_own_small_mnk = 0.0;
static int fnn_own_active = 0; /* set once the addresses are handed out */

static inline char fnn_own_trans(const char *t)
{
    return (*t == 'N' || *t == 'n') ? 'N' : (*t == 'T' || *t == 't') ? 'T' : 0;
}

/* Whether this GEMM takes a column-major call of this shape (M rows, N columns, inner
 * K; alpha 1, beta 0): the rule at the top of this file, in one place, for both types;
 * never before its addresses are handed out. */
static int fnn_own_takes(int M, int N, int K)
{
    return fnn_own_active && M >= FNN_OWN_MIN_M && N >= 1 && K >= 1 && (double)M * N * K > fnn_own_small_mnk;
}

#if defined(__x86_64__) && defined(__GNUC__)
#define FNN_OWN_GEMM 1
#include <immintrin.h>

#define FNN_NR 14
#define FNN_NC 4096

/* The calling thread's packing buffers (bytes: one pair serves both types). */
struct fnn_own_buffers {
    void *a, *b;
    size_t a_cap, b_cap;
};
static pthread_key_t fnn_own_key;
static pthread_once_t fnn_own_once = PTHREAD_ONCE_INIT;
static int fnn_own_key_ok = 0;
static __thread struct fnn_own_buffers *fnn_own_tls = NULL;

static void fnn_own_free(void *p)
{
    struct fnn_own_buffers *buf = (struct fnn_own_buffers *)p;
    free(buf->a);
    free(buf->b);
    free(buf);
    fnn_own_tls = NULL;
}

static void fnn_own_make_key(void) { fnn_own_key_ok = pthread_key_create(&fnn_own_key, fnn_own_free) == 0; }

/* The calling thread's buffers, at least a_need and b_need bytes; NULL when memory
 * runs out (the caller then hands the call to the BLAS). */
static struct fnn_own_buffers *fnn_own_buffers_for(size_t a_need, size_t b_need)
{
    struct fnn_own_buffers *buf = fnn_own_tls;
    if (buf == NULL) {
        pthread_once(&fnn_own_once, fnn_own_make_key);
        if (!fnn_own_key_ok)
            return NULL;
        buf = (struct fnn_own_buffers *)calloc(1, sizeof *buf);
        if (buf == NULL)
            return NULL;
        if (pthread_setspecific(fnn_own_key, buf) != 0) {
            free(buf);
            return NULL;
        }
        fnn_own_tls = buf;
    }
    if (a_need > buf->a_cap) {
        free(buf->a);
        buf->a = aligned_alloc(64, (a_need + 63) / 64 * 64);
        buf->a_cap = buf->a ? a_need : 0;
    }
    if (b_need > buf->b_cap) {
        free(buf->b);
        buf->b = aligned_alloc(64, (b_need + 63) / 64 * 64);
        buf->b_cap = buf->b ? b_need : 0;
    }
    return buf->a && (buf->b || b_need == 0) ? buf : NULL;
}

#define FNN_OWN_TARGET __attribute__((target("avx512f,prfchw")))

/* 16 x 16 transpose in registers: r[i] holds row i on entry, column i on exit. */
FNN_OWN_TARGET static inline void fnn_own_t16(__m512 r[16])
{
    __m512 t[16], u[16];
    for (int i = 0; i < 8; i++) {
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    for (int i = 0; i < 4; i++) {
        __m512d t0 = _mm512_castps_pd(t[4 * i]), t1 = _mm512_castps_pd(t[4 * i + 1]);
        __m512d t2 = _mm512_castps_pd(t[4 * i + 2]), t3 = _mm512_castps_pd(t[4 * i + 3]);
        u[4 * i + 0] = _mm512_castpd_ps(_mm512_unpacklo_pd(t0, t2));
        u[4 * i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(t0, t2));
        u[4 * i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(t1, t3));
        u[4 * i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(t1, t3));
    }
    for (int c = 0; c < 4; c++) {
        __m512 v0 = _mm512_shuffle_f32x4(u[c], u[4 + c], 0x88);
        __m512 v1 = _mm512_shuffle_f32x4(u[c], u[4 + c], 0xdd);
        __m512 w0 = _mm512_shuffle_f32x4(u[8 + c], u[12 + c], 0x88);
        __m512 w1 = _mm512_shuffle_f32x4(u[8 + c], u[12 + c], 0xdd);
        r[c] = _mm512_shuffle_f32x4(v0, w0, 0x88);
        r[8 + c] = _mm512_shuffle_f32x4(v0, w0, 0xdd);
        r[4 + c] = _mm512_shuffle_f32x4(v1, w1, 0x88);
        r[12 + c] = _mm512_shuffle_f32x4(v1, w1, 0xdd);
    }
}

/* 8 x 8 transpose in registers: r[i] holds row i on entry, column i on exit. */
FNN_OWN_TARGET static inline void fnn_own_t8(__m512d r[8])
{
    __m512d t[8], u[8];
    for (int i = 0; i < 4; i++) {
        t[2 * i] = _mm512_unpacklo_pd(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_pd(r[2 * i], r[2 * i + 1]);
    }
    for (int h = 0; h < 2; h++) { /* rows 4h .. 4h + 3 */
        u[4 * h + 0] = _mm512_shuffle_f64x2(t[4 * h], t[4 * h + 2], 0x88);
        u[4 * h + 1] = _mm512_shuffle_f64x2(t[4 * h + 1], t[4 * h + 3], 0x88);
        u[4 * h + 2] = _mm512_shuffle_f64x2(t[4 * h], t[4 * h + 2], 0xdd);
        u[4 * h + 3] = _mm512_shuffle_f64x2(t[4 * h + 1], t[4 * h + 3], 0xdd);
    }
    for (int c = 0; c < 4; c++) {
        r[c] = _mm512_shuffle_f64x2(u[c], u[4 + c], 0x88);
        r[4 + c] = _mm512_shuffle_f64x2(u[c], u[4 + c], 0xdd);
    }
}

/* One product's op(B) packed once for all of its tiles. A product cut into column
 * tiles of the row-major output (fastnn.reference.blas.gemm_blocks with one row of
 * tiles) makes calls that all read the same op(B), the row-major op(a); each call
 * would pack all of it again, which made config C's products 5-9% slower in 16 tiles,
 * 10-19% in 32, and kept the tiles few (docs/benchmarks/2026-12-06-shared-packing.md).
 * The product's caller takes its type's slot (fnn_own_share), which tells in how many
 * chunks op(a) is packed; the chunks are packed (fnn_own_share_pack: by the
 * caller, or by the threads of the product as tasks, each chunk once) and the last one
 * packed publishes the pack; the tiles then find it (fnn_own_shared_for: same operand,
 * same shape, an output inside the product's) and read it instead of packing, and the
 * caller releases it when every tile is done (fnn_own_unshare). Packing is a copy: a
 * tile gives the same bits either way.
 *
 * One product at a time holds a type's slot; another one (another Python thread's) finds
 * it taken and its tiles pack for themselves. The fields are published seqlock-wise
 * (seq odd while they are written), so a tile of another product can never match
 * half-written fields; a tile matches only within its holder's output, so no other
 * product's tile can still read the buffer after the holder's tiles are done. A forked
 * child starts with the slot free and empty (fnn_own_slot_after_fork): its holder, a
 * thread of the parent, did not survive the fork to release it, and the workspaces at
 * the same addresses will hold other values. */

/* float32: MR 32, KC 512 */
#define FNN_T float
#define FNN_V __m512
#define FNN_L 16
#define FNN_MASK __mmask16
#define FNN_MR 32
#define FNN_MC 256
#define FNN_KC 512
#define FNN_N(name) name##_f32
#define FNN_GEMM_FN fnn_sgemm_fn
#define FNN_SETZERO _mm512_setzero_ps
#define FNN_LOAD _mm512_load_ps
#define FNN_LOADU _mm512_loadu_ps
#define FNN_MASKZ_LOADU _mm512_maskz_loadu_ps
#define FNN_STORE _mm512_store_ps
#define FNN_STOREU _mm512_storeu_ps
#define FNN_MASK_STOREU _mm512_mask_storeu_ps
#define FNN_SET1 _mm512_set1_ps
#define FNN_FMADD _mm512_fmadd_ps
#define FNN_ADD _mm512_add_ps
#define FNN_TRANSPOSE fnn_own_t16
#include "fastnn_gemm_body.h"

/* float64: MR 16, KC 256 (the float32 block's bytes; KC 384, MC 128 or 192 measured
 * the same within 2%) */
#define FNN_T double
#define FNN_V __m512d
#define FNN_L 8
#define FNN_MASK __mmask8
#define FNN_MR 16
#define FNN_MC 256
#define FNN_KC 256
#define FNN_N(name) name##_f64
#define FNN_GEMM_FN fnn_dgemm_fn
#define FNN_SETZERO _mm512_setzero_pd
#define FNN_LOAD _mm512_load_pd
#define FNN_LOADU _mm512_loadu_pd
#define FNN_MASKZ_LOADU _mm512_maskz_loadu_pd
#define FNN_STORE _mm512_store_pd
#define FNN_STOREU _mm512_storeu_pd
#define FNN_MASK_STOREU _mm512_mask_storeu_pd
#define FNN_SET1 _mm512_set1_pd
#define FNN_FMADD _mm512_fmadd_pd
#define FNN_ADD _mm512_add_pd
#define FNN_TRANSPOSE fnn_own_t8
#include "fastnn_gemm_body.h"

static void fnn_own_slots_after_fork(void)
{
    fnn_own_slot_after_fork_f32();
    fnn_own_slot_after_fork_f64();
}

static pthread_once_t fnn_own_fork_once = PTHREAD_ONCE_INIT;
static void fnn_own_register_fork(void) { pthread_atfork(NULL, NULL, fnn_own_slots_after_fork); }

/* The product out (m, n) = op(a) (m, k) @ op(b) (k, n), row-major (a's rows lda apart,
 * out's ldc), of `itemsize`-byte values (4: float32, 8: float64), cut into column
 * tiles of which the narrowest has `narrowest` columns: takes the type's slot to pack
 * op(a), the column-major calls' op(B), for its tiles. Returns the number of chunks to
 * pack (fnn_own_share_pack, each once, before the tiles; then fnn_own_unshare once
 * every tile is made), or 0 (this GEMM does not take the tiles, another product holds
 * the slot, memory ran out): the tiles then pack it themselves. */
static int fnn_own_share(int itemsize, int trans_a, int m, int n, int k, const void *a, int lda, const void *out,
        int ldc, int narrowest)
{
    if (itemsize == 4)
        return fnn_own_share_f32(trans_a, m, n, k, (const float *)a, lda, (const float *)out, ldc, narrowest);
    if (itemsize == 8)
        return fnn_own_share_f64(trans_a, m, n, k, (const double *)a, lda, (const double *)out, ldc, narrowest);
    return 0;
}

/* Packs chunk `chunk` of the type's shared op(B) (any thread, each chunk once, after
 * fnn_own_share and before the tiles); the last chunk packed publishes the pack. */
static void fnn_own_share_pack(int itemsize, int chunk)
{
    if (itemsize == 4)
        fnn_own_share_pack_f32(chunk);
    else if (itemsize == 8)
        fnn_own_share_pack_f64(chunk);
}

/* Releases the slot fnn_own_share took (its holder only, after the tiles). */
static void fnn_own_unshare(int itemsize)
{
    if (itemsize == 4)
        fnn_own_unshare_f32();
    else if (itemsize == 8)
        fnn_own_unshare_f64();
}

/* How many calls of the type with this itemsize (4 or 8) have read a shared pack. */
static unsigned long fnn_own_shared_calls(int itemsize)
{
    if (itemsize == 4)
        return atomic_load(&fnn_own_shared_calls_f32);
    if (itemsize == 8)
        return atomic_load(&fnn_own_shared_calls_f64);
    return 0;
}

/* The addresses of fnn_own_xgemm_f32 (BLAS's sgemm_) and fnn_own_xgemm_f64 (dgemm_)
 * with the BLAS's behind them (calls they do not take go there) and that BLAS's
 * small-matrix size; 0 where the CPU has no AVX-512 (or a fallback is missing). */
static void fnn_own_gemm_addresses(size_t sgemm, size_t dgemm, double small_mnk, size_t *own_s, size_t *own_d)
{
    *own_s = *own_d = 0;
    __builtin_cpu_init();
    if (!__builtin_cpu_supports("avx512f") || sgemm == 0 || dgemm == 0)
        return;
    fnn_own_fallback_f32 = (fnn_sgemm_fn)sgemm;
    fnn_own_fallback_f64 = (fnn_dgemm_fn)dgemm;
    fnn_own_small_mnk = small_mnk;
    fnn_own_active = 1;
    pthread_once(&fnn_own_fork_once, fnn_own_register_fork);
    *own_s = (size_t)&fnn_own_xgemm_f32;
    *own_d = (size_t)&fnn_own_xgemm_f64;
}

#else /* not x86-64 GCC: BLAS only */
static int fnn_own_share(int itemsize, int trans_a, int m, int n, int k, const void *a, int lda, const void *out,
        int ldc, int narrowest)
{
    (void)itemsize, (void)trans_a, (void)m, (void)n, (void)k, (void)a, (void)lda, (void)out, (void)ldc,
        (void)narrowest;
    return 0;
}

static void fnn_own_share_pack(int itemsize, int chunk) { (void)itemsize, (void)chunk; }

static void fnn_own_unshare(int itemsize) { (void)itemsize; }

static unsigned long fnn_own_shared_calls(int itemsize)
{
    (void)itemsize;
    return 0;
}

static void fnn_own_gemm_addresses(size_t sgemm, size_t dgemm, double small_mnk, size_t *own_s, size_t *own_d)
{
    (void)sgemm, (void)dgemm, (void)small_mnk;
    *own_s = *own_d = 0;
}
#endif

#endif /* FASTNN_GEMM_H */
