/* fastnn's own float32 GEMM (docs/spec.md §10): a packed, single-threaded AVX-512 GEMM
 * behind BLAS's Fortran sgemm_ signature, so that the three backends call it exactly as
 * they call BLAS (fastnn/_blas.py hands out its address in place of OpenBLAS's sgemm_).
 * Compiled into gemm_cython only; built for AVX-512 by target attributes on each
 * function (GCC and clang), whatever the build flags, and handed out only where the CPU
 * has it.
 *
 * fnn_own_sgemm: column-major C (m x n) = op(A) (m x k) op(B) (k x n) for alpha 1,
 * beta 0, transa and transb 'N' or 'T', at least FNN_OWN_MIN_M rows and more than
 * the BLAS's small-matrix size (fnn_own_small_mnk); any other call goes to the BLAS's
 * sgemm_ unchanged (fnn_own_fallback). Which one runs depends on the call's shape
 * only, so a product's bits still depend on its shape and the host's libraries only.
 *
 * Goto/BLIS loop order (jc, pc, ic, jr, ir): NC columns of C, KC of the inner
 * dimension, MC rows. op(A)'s MC x KC block is packed into MR-row micro-panels (the
 * untransposed A whole before use, a transposed A micro-panel by micro-panel at first
 * use, by 16 x 16 register transposes); op(B) into NR-column micro-panels, each packed
 * just before its first use, so that it is still in L1/L2 when the kernel reads it
 * (+6-9% against packing the block ahead, docs/benchmarks/2026-12-05-packed-gemm.md).
 * Micro-kernel MR 32 x NR 14: 28 zmm accumulators, per k step 2 loads of packed A, 14
 * broadcasts of packed B, 28 FMAs; the last, narrower column panel has kernels of its
 * exact width; a partial row panel goes through a temporary tile.
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
#ifndef FASTNN_SGEMM_H
#define FASTNN_SGEMM_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdlib.h>

#include "fastnn_blas.h"

#define FNN_OWN_MIN_M 32

static fnn_sgemm_fn fnn_own_fallback = NULL;
static double fnn_own_small_mnk = 0.0;

#if defined(__x86_64__) && defined(__GNUC__)
#define FNN_OWN_SGEMM 1
#include <immintrin.h>

#define FNN_MR 32
#define FNN_NR 14
#define FNN_MC 256
#define FNN_KC 512
#define FNN_NC 4096
#define FNN_MV (FNN_MR / 16)

struct fnn_own_buffers {
    float *a, *b;
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

/* The calling thread's buffers, at least a_need and b_need floats; NULL when memory
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
        buf->a = (float *)aligned_alloc(64, (a_need * sizeof(float) + 63) / 64 * 64);
        buf->a_cap = buf->a ? a_need : 0;
    }
    if (b_need > buf->b_cap) {
        free(buf->b);
        buf->b = (float *)aligned_alloc(64, (b_need * sizeof(float) + 63) / 64 * 64);
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

FNN_OWN_TARGET static inline __mmask16 fnn_own_mask(int n) { return n >= 16 ? 0xffff : (__mmask16)((1u << n) - 1); }

/* op(A)[i0:i0+mc, p0:p0+kc] -> MR-row micro-panels dst[panel * kc * MR + p * MR + r],
 * rows past mc zero. */
FNN_OWN_TARGET static void fnn_own_pack_a(char ta, int mc, int kc, const float *A, int lda, int i0, int p0, float *dst)
{
    for (int ir = 0; ir < mc; ir += FNN_MR) {
        float *d = dst + (size_t)ir * kc;
        int mr = mc - ir < FNN_MR ? mc - ir : FNN_MR;
        if (ta == 'N') {
            const float *s = A + (i0 + ir) + (size_t)p0 * lda;
            for (int p = 0; p < kc; p++)
                for (int v = 0; v < FNN_MV; v++) {
                    int rem = mr - 16 * v;
                    __mmask16 mk = rem <= 0 ? 0 : fnn_own_mask(rem);
                    _mm512_store_ps(d + p * FNN_MR + 16 * v, _mm512_maskz_loadu_ps(mk, s + (size_t)p * lda + 16 * v));
                }
        } else { /* op(A)(i, p) = A[p + i * lda] */
            for (int v = 0; v < FNN_MV; v++) {
                int rows = mr - 16 * v;
                if (rows > 16)
                    rows = 16;
                for (int pb = 0; pb < kc; pb += 16) {
                    int pl = kc - pb < 16 ? kc - pb : 16;
                    __mmask16 mk = fnn_own_mask(pl);
                    __m512 r[16];
                    for (int q = 0; q < 16; q++)
                        r[q] = q < rows ? _mm512_maskz_loadu_ps(mk, A + (p0 + pb) + (size_t)(i0 + ir + 16 * v + q) * lda)
                                        : _mm512_setzero_ps();
                    fnn_own_t16(r);
                    for (int q = 0; q < pl; q++)
                        _mm512_store_ps(d + (pb + q) * FNN_MR + 16 * v, r[q]);
                }
            }
        }
    }
}

/* The untransposed A's whole MC x KC block, column by column (mc contiguous floats a
 * column): full micro-panels here, a partial last one by fnn_own_pack_a. */
FNN_OWN_TARGET static void fnn_own_pack_a_block(int mc, int kc, const float *A, int lda, int i0, int p0, float *dst)
{
    int full = mc / FNN_MR;
    for (int p = 0; p < kc; p++) {
        const float *s = A + i0 + (size_t)(p0 + p) * lda;
        for (int ir = 0; ir < full; ir++)
            for (int v = 0; v < FNN_MV; v++)
                _mm512_store_ps(dst + (size_t)ir * FNN_MR * kc + p * FNN_MR + 16 * v,
                                _mm512_loadu_ps(s + ir * FNN_MR + 16 * v));
    }
    if (mc % FNN_MR)
        fnn_own_pack_a('N', mc - full * FNN_MR, kc, A, lda, i0 + full * FNN_MR, p0, dst + (size_t)full * FNN_MR * kc);
}

/* op(B)[p0:p0+kc, j0:j0+nr] -> one NR-column micro-panel dst[p * NR + c], columns past
 * nr zero. */
FNN_OWN_TARGET static void fnn_own_pack_b(char tb, int kc, int nr, const float *B, int ldb, int p0, int j0, float *dst)
{
    __mmask16 mk_nr = fnn_own_mask(nr), mk_NR = fnn_own_mask(FNN_NR);
    if (tb == 'T') {
        const float *s = B + j0 + (size_t)p0 * ldb;
        for (int p = 0; p < kc; p++)
            _mm512_mask_storeu_ps(dst + p * FNN_NR, mk_NR, _mm512_maskz_loadu_ps(mk_nr, s + (size_t)p * ldb));
    } else {
        for (int pb = 0; pb < kc; pb += 16) {
            int pl = kc - pb < 16 ? kc - pb : 16;
            __mmask16 mk = fnn_own_mask(pl);
            __m512 r[16];
            for (int q = 0; q < 16; q++)
                r[q] = q < nr ? _mm512_maskz_loadu_ps(mk, B + (p0 + pb) + (size_t)(j0 + q) * ldb) : _mm512_setzero_ps();
            fnn_own_t16(r);
            for (int q = 0; q < pl; q++)
                _mm512_mask_storeu_ps(dst + (pb + q) * FNN_NR, mk_NR, r[q]);
        }
    }
}

/* C[0:MR, 0:nr] = (accum ? C : 0) + Ap (MR x kc) Bp (kc x nr); nr a constant once
 * inlined. */
FNN_OWN_TARGET static inline __attribute__((always_inline)) void fnn_own_kernel(int kc, const float *restrict a,
        const float *restrict b, float *c, int ldc, int accum, const int nr)
{
    __m512 acc[FNN_MV][FNN_NR];
#pragma GCC unroll 64
    for (int j = 0; j < nr; j++)
#pragma GCC unroll 4
        for (int v = 0; v < FNN_MV; v++)
            acc[v][j] = _mm512_setzero_ps();
    /* the C tile is written at the end: fetch it for writing meanwhile */
#pragma GCC unroll 64
    for (int j = 0; j < nr; j++)
#pragma GCC unroll 4
        for (int v = 0; v < FNN_MV; v++)
            _m_prefetchw(c + (size_t)j * ldc + 16 * v);
#pragma GCC unroll 2
    for (int p = 0; p < kc; p++) {
        __m512 av[FNN_MV];
#pragma GCC unroll 4
        for (int v = 0; v < FNN_MV; v++)
            av[v] = _mm512_load_ps(a + 16 * v);
#pragma GCC unroll 64
        for (int j = 0; j < nr; j++) {
            __m512 bj = _mm512_set1_ps(b[j]);
#pragma GCC unroll 4
            for (int v = 0; v < FNN_MV; v++)
                acc[v][j] = _mm512_fmadd_ps(av[v], bj, acc[v][j]);
        }
        a += FNN_MR;
        b += FNN_NR;
    }
#pragma GCC unroll 64
    for (int j = 0; j < nr; j++)
#pragma GCC unroll 4
        for (int v = 0; v < FNN_MV; v++) {
            float *cj = c + (size_t)j * ldc + 16 * v;
            _mm512_storeu_ps(cj, accum ? _mm512_add_ps(acc[v][j], _mm512_loadu_ps(cj)) : acc[v][j]);
        }
}

typedef void (*fnn_own_kernel_fn)(int, const float *, const float *, float *, int, int);
#define FNN_OWN_KERNEL(N)                                                                    \
    FNN_OWN_TARGET __attribute__((noinline)) static void fnn_own_kernel_##N(int kc,         \
            const float *a, const float *b, float *c, int ldc, int accum)                    \
    {                                                                                        \
        if (accum)                                                                           \
            fnn_own_kernel(kc, a, b, c, ldc, 1, N);                                          \
        else                                                                                 \
            fnn_own_kernel(kc, a, b, c, ldc, 0, N);                                          \
    }
FNN_OWN_KERNEL(1) FNN_OWN_KERNEL(2) FNN_OWN_KERNEL(3) FNN_OWN_KERNEL(4) FNN_OWN_KERNEL(5)
FNN_OWN_KERNEL(6) FNN_OWN_KERNEL(7) FNN_OWN_KERNEL(8) FNN_OWN_KERNEL(9) FNN_OWN_KERNEL(10)
FNN_OWN_KERNEL(11) FNN_OWN_KERNEL(12) FNN_OWN_KERNEL(13) FNN_OWN_KERNEL(14)
/* kernels by the width of their column panel (FNN_NR: the full one) */
static const fnn_own_kernel_fn fnn_own_kernels[FNN_NR + 1] = {
    NULL, fnn_own_kernel_1, fnn_own_kernel_2, fnn_own_kernel_3, fnn_own_kernel_4,
    fnn_own_kernel_5, fnn_own_kernel_6, fnn_own_kernel_7, fnn_own_kernel_8,
    fnn_own_kernel_9, fnn_own_kernel_10, fnn_own_kernel_11, fnn_own_kernel_12,
    fnn_own_kernel_13, fnn_own_kernel_14};

/* A partial row panel (mr < MR): the full kernel into a temporary tile, its mr x nr
 * corner added or stored by the full kernel's instructions (the same FMA chains and
 * the same final add, this block's sum first: the same bits as a full panel's, NaN
 * payloads included). */
FNN_OWN_TARGET static void fnn_own_kernel_edge(int kc, const float *a, const float *b, float *c, int ldc,
        int accum, int mr, int nr)
{
    if (mr == FNN_MR) {
        fnn_own_kernels[nr](kc, a, b, c, ldc, accum);
        return;
    }
    float tmp[FNN_MR * FNN_NR] __attribute__((aligned(64)));
    fnn_own_kernels[FNN_NR](kc, a, b, tmp, FNN_MR, 0);
    for (int j = 0; j < nr; j++)
        for (int v = 0; v < FNN_MV && 16 * v < mr; v++) {
            __mmask16 mk = fnn_own_mask(mr - 16 * v);
            float *cj = c + (size_t)j * ldc + 16 * v;
            __m512 t = _mm512_load_ps(tmp + j * FNN_MR + 16 * v);
            _mm512_mask_storeu_ps(cj, mk, accum ? _mm512_add_ps(t, _mm512_maskz_loadu_ps(mk, cj)) : t);
        }
}

/* C = op(A) op(B), column-major, m, n, k >= 1, on the given buffers; op(B) packed
 * here, or already packed whole in `shared` (fnn_own_share's layout). */
FNN_OWN_TARGET static void fnn_own_gemm(char ta, char tb, int m, int n, int k, const float *A, int lda,
        const float *B, int ldb, float *C, int ldc, struct fnn_own_buffers *buf, const float *shared)
{
    const size_t npad = (size_t)(n + FNN_NR - 1) / FNN_NR * FNN_NR;
    const int ncb = (FNN_NC / FNN_NR) * FNN_NR;
    for (int jc = 0; jc < n; jc += ncb) {
        int nc = n - jc < ncb ? n - jc : ncb;
        for (int pc = 0; pc < k; pc += FNN_KC) {
            int kc = k - pc < FNN_KC ? k - pc : FNN_KC;
            for (int ic = 0; ic < m; ic += FNN_MC) {
                int mc = m - ic < FNN_MC ? m - ic : FNN_MC;
                if (ta == 'N')
                    fnn_own_pack_a_block(mc, kc, A, lda, ic, pc, buf->a);
                for (int jr = 0; jr < nc; jr += FNN_NR) {
                    int nr = nc - jr < FNN_NR ? nc - jr : FNN_NR;
                    const float *bp;
                    if (shared != NULL) {
                        bp = shared + (size_t)pc * npad + (size_t)(jc + jr) * kc;
                    } else {
                        float *own = buf->b + (size_t)jr * kc;
                        if (ic == 0)
                            fnn_own_pack_b(tb, kc, nr, B, ldb, pc, jc + jr, own);
                        bp = own;
                    }
                    for (int ir = 0; ir < mc; ir += FNN_MR) {
                        int mr = mc - ir < FNN_MR ? mc - ir : FNN_MR;
                        float *ap = buf->a + (size_t)ir * kc;
                        if (jr == 0 && ta != 'N')
                            fnn_own_pack_a(ta, mr, kc, A, lda, ic + ir, pc, ap);
                        float *cp = C + (ic + ir) + (size_t)(jc + jr) * ldc;
                        fnn_own_kernel_edge(kc, ap, bp, cp, ldc, pc > 0, mr, nr);
                    }
                }
            }
        }
    }
}

static inline char fnn_own_trans(const char *t)
{
    return (*t == 'N' || *t == 'n') ? 'N' : (*t == 'T' || *t == 't') ? 'T' : 0;
}

/* Whether the shape of a column-major call (M rows, N columns, inner K; alpha 1, beta
 * 0) is one this GEMM takes: the rule at the top of this file, in one place. */
static int fnn_own_takes(int M, int N, int K)
{
    return M >= FNN_OWN_MIN_M && N >= 1 && K >= 1 && (double)M * N * K > fnn_own_small_mnk;
}

/* One product's op(B) packed once for all of its tiles. A product cut into column
 * tiles of the row-major output (fastnn.reference.blas.gemm_blocks with one row of
 * tiles) makes calls that all read the same op(B), the row-major op(a); each call
 * would pack all of it again, which made config C's products 5-9% slower in 16 tiles,
 * 10-19% in 32, and kept the tiles few (docs/benchmarks/2026-12-06-shared-packing.md). The product's caller takes the slot (fnn_own_share), which tells in how
 * many chunks op(a) is packed; the chunks are packed (fnn_own_share_pack: by the
 * caller, or by the threads of the product as tasks, each chunk once) and the last one
 * packed publishes the pack; the tiles then find it (fnn_own_shared_for: same operand,
 * same shape, an output inside the product's) and read it instead of packing, and the
 * caller releases it when every tile is done (fnn_own_unshare). Packing is a copy: a
 * tile gives the same bits either way.
 *
 * One product at a time holds the slot; another one (another Python thread's) finds
 * it taken and its tiles pack for themselves. The fields are published seqlock-wise
 * (seq odd while they are written), so a tile of another product can never match
 * half-written fields; a tile matches only within its holder's output, so no other
 * product's tile can still read the buffer after the holder's tiles are done. A forked
 * child starts with the slot free and empty (fnn_own_slot_after_fork): its holder, a
 * thread of the parent, did not survive the fork to release it, and the workspaces at
 * the same addresses will hold other values. */
#define FNN_SHARE_PANELS 8 /* NR-column micro-panels of op(B) a packing chunk, per KC block */
static struct {
    _Atomic unsigned seq;
    _Atomic int busy;
    _Atomic int chunks_done;
    int chunks, groups; /* chunks: KC blocks x groups of FNN_SHARE_PANELS micro-panels */
    char tb;
    int m, n, k, ldb, ldc; /* the column-major call's: C is m x n */
    const float *src;      /* op(B)'s operand, while it is being packed */
    const float *b, *c;    /* published: the operand the tiles read, and C */
    float *packed; /* KC blocks one after the other, each npad x kc in NR micro-panels */
    size_t cap;
} fnn_own_slot;

/* In a forked child: the slot free, nothing published (its pack stays allocated). */
static void fnn_own_slot_after_fork(void)
{
    unsigned s = atomic_load_explicit(&fnn_own_slot.seq, memory_order_relaxed);
    fnn_own_slot.b = NULL;
    fnn_own_slot.chunks = 0;
    atomic_store(&fnn_own_slot.chunks_done, 0);
    atomic_store(&fnn_own_slot.seq, (s + 1u) & ~1u);
    atomic_store(&fnn_own_slot.busy, 0);
}

static pthread_once_t fnn_own_fork_once = PTHREAD_ONCE_INIT;
static void fnn_own_register_fork(void) { pthread_atfork(NULL, NULL, fnn_own_slot_after_fork); }

static void fnn_own_publish(const float *b)
{
    unsigned s = atomic_load_explicit(&fnn_own_slot.seq, memory_order_relaxed);
    atomic_store_explicit(&fnn_own_slot.seq, s + 1, memory_order_relaxed);
    atomic_thread_fence(memory_order_release);
    fnn_own_slot.b = b;
    atomic_store_explicit(&fnn_own_slot.seq, s + 2, memory_order_release);
}

/* The product out (m, n) = op(a) (m, k) @ op(b) (k, n), row-major (a's rows lda apart,
 * out's ldc), cut into column tiles of which the narrowest has `narrowest` columns:
 * takes the slot to pack op(a), the column-major calls' op(B), for its tiles. Returns
 * the number of chunks to pack (fnn_own_share_pack, each once, before the tiles; then
 * fnn_own_unshare once every tile is made), or 0 (this GEMM does not take the tiles,
 * another product holds the slot, memory ran out): the tiles then pack it themselves. */
static int fnn_own_share(int trans_a, int m, int n, int k, const float *a, int lda, const float *out, int ldc,
        int narrowest)
{
    int expected = 0;
    if (fnn_own_fallback == NULL || n < 1 || !fnn_own_takes(narrowest, m, k))
        return 0;
    if (!atomic_compare_exchange_strong(&fnn_own_slot.busy, &expected, 1))
        return 0;
    size_t npad = (size_t)(m + FNN_NR - 1) / FNN_NR * FNN_NR;
    if (npad * k > fnn_own_slot.cap) {
        free(fnn_own_slot.packed);
        fnn_own_slot.packed = (float *)aligned_alloc(64, (npad * k * sizeof(float) + 63) / 64 * 64);
        fnn_own_slot.cap = fnn_own_slot.packed ? npad * k : 0;
        if (fnn_own_slot.packed == NULL) {
            atomic_store(&fnn_own_slot.busy, 0);
            return 0;
        }
    }
    int panels = (m + FNN_NR - 1) / FNN_NR;
    fnn_own_slot.groups = (panels + FNN_SHARE_PANELS - 1) / FNN_SHARE_PANELS;
    fnn_own_slot.chunks = (k + FNN_KC - 1) / FNN_KC * fnn_own_slot.groups;
    atomic_store(&fnn_own_slot.chunks_done, 0);
    fnn_own_slot.tb = trans_a ? 'T' : 'N';
    fnn_own_slot.m = n;
    fnn_own_slot.n = m;
    fnn_own_slot.k = k;
    fnn_own_slot.ldb = lda;
    fnn_own_slot.ldc = ldc;
    fnn_own_slot.c = out;
    fnn_own_slot.src = a;
    return fnn_own_slot.chunks;
}

/* Packs chunk `chunk` of the slot's op(B) (any thread, each chunk once, after
 * fnn_own_share and before the tiles); the last chunk packed publishes the pack. */
static void fnn_own_share_pack(int chunk)
{
    if (chunk < 0 || chunk >= fnn_own_slot.chunks)
        return;
    int N = fnn_own_slot.n, K = fnn_own_slot.k;
    size_t npad = (size_t)(N + FNN_NR - 1) / FNN_NR * FNN_NR;
    int pc = chunk / fnn_own_slot.groups * FNN_KC;
    int kc = K - pc < FNN_KC ? K - pc : FNN_KC;
    int j0 = chunk % fnn_own_slot.groups * FNN_SHARE_PANELS * FNN_NR;
    int j1 = j0 + FNN_SHARE_PANELS * FNN_NR < N ? j0 + FNN_SHARE_PANELS * FNN_NR : N;
    for (int jr = j0; jr < j1; jr += FNN_NR)
        fnn_own_pack_b(fnn_own_slot.tb, kc, N - jr < FNN_NR ? N - jr : FNN_NR, fnn_own_slot.src,
                       fnn_own_slot.ldb, pc, jr, fnn_own_slot.packed + (size_t)pc * npad + (size_t)jr * kc);
    if (atomic_fetch_add(&fnn_own_slot.chunks_done, 1) + 1 == fnn_own_slot.chunks)
        fnn_own_publish(fnn_own_slot.src);
}

/* Releases the slot fnn_own_share took (its holder only, after the tiles). */
static void fnn_own_unshare(void)
{
    fnn_own_publish(NULL);
    fnn_own_slot.chunks = 0;
    atomic_store(&fnn_own_slot.busy, 0);
}

/* The shared op(B) for this column-major call, when it is a tile of the holder's
 * product; NULL otherwise. */
static const float *fnn_own_shared_for(char tb, int M, int N, int K, const float *b, int ldb, const float *c,
        int ldc)
{
    unsigned s = atomic_load_explicit(&fnn_own_slot.seq, memory_order_acquire);
    if (s & 1u)
        return NULL;
    int match = fnn_own_slot.b == b && b != NULL && fnn_own_slot.tb == tb && fnn_own_slot.n == N
                && fnn_own_slot.k == K && fnn_own_slot.ldb == ldb && fnn_own_slot.ldc == ldc
                && (size_t)c >= (size_t)fnn_own_slot.c
                && (size_t)(c + M) <= (size_t)(fnn_own_slot.c + fnn_own_slot.m);
    const float *packed = fnn_own_slot.packed;
    atomic_thread_fence(memory_order_acquire);
    if (atomic_load_explicit(&fnn_own_slot.seq, memory_order_relaxed) != s)
        return NULL;
    return match ? packed : NULL;
}

/* BLAS's sgemm_, column-major (see the top of this file). */
static void fnn_own_sgemm(char *transa, char *transb, int *m, int *n, int *k, float *alpha,
        float *a, int *lda, float *b, int *ldb, float *beta, float *c, int *ldc)
{
    char ta = fnn_own_trans(transa), tb = fnn_own_trans(transb);
    int M = *m, N = *n, K = *k;
    if (ta && tb && *alpha == 1.0f && *beta == 0.0f && fnn_own_takes(M, N, K) && *lda >= (ta == 'N' ? M : K)
        && *ldb >= (tb == 'N' ? K : N) && *ldc >= M) {
        int kc = K < FNN_KC ? K : FNN_KC, mc = M < FNN_MC ? M : FNN_MC;
        int ncb = (FNN_NC / FNN_NR) * FNN_NR, nc = N < ncb ? N : ncb;
        const float *shared = fnn_own_shared_for(tb, M, N, K, b, *ldb, c, *ldc);
        struct fnn_own_buffers *buf = fnn_own_buffers_for(
            (size_t)(mc + FNN_MR - 1) / FNN_MR * FNN_MR * kc,
            shared ? 0 : (size_t)(nc + FNN_NR - 1) / FNN_NR * FNN_NR * kc);
        if (buf != NULL) {
            fnn_own_gemm(ta, tb, M, N, K, a, *lda, b, *ldb, c, *ldc, buf, shared);
            return;
        }
    }
    fnn_own_fallback(transa, transb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

/* The address of fnn_own_sgemm with BLAS's sgemm_ behind it (calls it does not take go
 * there) and that BLAS's small-matrix size; 0 where the CPU has no AVX-512. */
static size_t fnn_own_sgemm_address(size_t fallback, double small_mnk)
{
    __builtin_cpu_init();
    if (!__builtin_cpu_supports("avx512f") || fallback == 0)
        return 0;
    fnn_own_fallback = (fnn_sgemm_fn)fallback;
    fnn_own_small_mnk = small_mnk;
    pthread_once(&fnn_own_fork_once, fnn_own_register_fork);
    return (size_t)&fnn_own_sgemm;
}

#else /* not x86-64 GCC: BLAS only */
static int fnn_own_share(int trans_a, int m, int n, int k, const float *a, int lda, const float *out, int ldc,
        int narrowest)
{
    (void)trans_a, (void)m, (void)n, (void)k, (void)a, (void)lda, (void)out, (void)ldc, (void)narrowest;
    return 0;
}

static void fnn_own_share_pack(int chunk) { (void)chunk; }

static void fnn_own_unshare(void) {}

static int fnn_own_takes(int M, int N, int K)
{
    (void)M;
    (void)N;
    (void)K;
    return 0;
}

static size_t fnn_own_sgemm_address(size_t fallback, double small_mnk)
{
    (void)fallback;
    (void)small_mnk;
    return 0;
}
#endif

#endif /* FASTNN_SGEMM_H */
