/* The Fortran GEMM entry points the Cython kernels call: fastnn's own single-threaded
 * BLAS instance (fastnn/_blas.py). Each extension module that includes this header has
 * its own copy of the pointers; a module that makes products sets them when it is
 * imported (fnn_set_gemm with fastnn._blas.gemm_addresses(), small_gemm_mnk(),
 * own_gemm() and share_addresses()). */
#ifndef FASTNN_BLAS_H
#define FASTNN_BLAS_H

#include <stddef.h>

typedef void (*fnn_sgemm_fn)(char *transa, char *transb, int *m, int *n, int *k,
                             float *alpha, float *a, int *lda, float *b, int *ldb,
                             float *beta, float *c, int *ldc);
typedef void (*fnn_dgemm_fn)(char *transa, char *transb, int *m, int *n, int *k,
                             double *alpha, double *a, int *lda, double *b, int *ldb,
                             double *beta, double *c, int *ldc);

static fnn_sgemm_fn fnn_sgemm __attribute__((unused)) = NULL;
static fnn_dgemm_fn fnn_dgemm __attribute__((unused)) = NULL;

/* fastnn._blas.small_gemm_mnk(): the tiling rule's GEMM_SMALL_MNK (0 until set) */
static double fnn_small_gemm_mnk __attribute__((unused)) = 0.0;

/* fastnn_gemm.h's fnn_own_share, fnn_own_share_pack and fnn_own_unshare (NULL where
 * the own GEMM is not built), for itemsize 4 (float32) or 8 (float64): a product cut
 * into column tiles packs its op(a) once for them all */
typedef int (*fnn_share_fn)(int itemsize, int trans_a, int m, int n, int k, const void *a,
                            int lda, const void *out, int ldc, int narrowest);
typedef void (*fnn_share_pack_fn)(int itemsize, int chunk);
typedef void (*fnn_unshare_fn)(int itemsize);
static fnn_share_fn fnn_gemm_share __attribute__((unused)) = NULL;
static fnn_share_pack_fn fnn_gemm_share_pack __attribute__((unused)) = NULL;
static fnn_unshare_fn fnn_gemm_unshare __attribute__((unused)) = NULL;

/* fastnn._blas.own_gemm(): products run on fastnn's own GEMM, whose tiles the tiling
 * rule cuts finer (0 until set) */
static int fnn_gemm_own __attribute__((unused)) = 0;

static inline __attribute__((unused)) void fnn_set_gemm(size_t s, size_t d, double small_mnk,
                                                        int own, size_t share, size_t pack,
                                                        size_t unshare) {
    fnn_sgemm = (fnn_sgemm_fn)s;
    fnn_dgemm = (fnn_dgemm_fn)d;
    fnn_small_gemm_mnk = small_mnk;
    fnn_gemm_own = own;
    fnn_gemm_share = (fnn_share_fn)share;
    fnn_gemm_share_pack = (fnn_share_pack_fn)pack;
    fnn_gemm_unshare = (fnn_unshare_fn)unshare;
}

/* A small float32 product out = a @ b^T is a @ bt on a transposed copy bt of b
 * (fastnn.reference.blas.gemm_copies_b, docs/spec.md §10): the copy is made by the
 * thread that makes the product, into that thread's buffer (the tiles' helpers read it
 * while it waits), so nothing is allocated. */
#define FNN_GEMM_COPY_MAX 16384
/* 16 floats more, and the start rounded up to 64 bytes at run time: a dlopen'ed module's
 * thread-local block need not keep a declared alignment, and OpenBLAS's small kernels
 * read an unaligned b half again slower */
static __thread float fnn_copy_f32[FNN_GEMM_COPY_MAX + 16] __attribute__((unused));

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
/* bt[p * ldt + j] = b[j * ldb + p] for a 16 x 16 block: rows of b loaded whole and
 * transposed in registers (unpacks, then 128-bit lane shuffles). */
__attribute__((target("avx512f"), unused)) static void fnn_t16_f32(const float *b,
        ptrdiff_t ldb, float *bt, ptrdiff_t ldt)
{
    __m512 r[16], t[16];
    for (int i = 0; i < 16; i++) r[i] = _mm512_loadu_ps(b + i * ldb);
    for (int i = 0; i < 16; i += 2) {
        t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
    }
    for (int i = 0; i < 16; i += 4) {
        __m512d t0 = _mm512_castps_pd(t[i]), t1 = _mm512_castps_pd(t[i + 1]);
        __m512d t2 = _mm512_castps_pd(t[i + 2]), t3 = _mm512_castps_pd(t[i + 3]);
        r[i] = _mm512_castpd_ps(_mm512_unpacklo_pd(t0, t2));
        r[i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(t0, t2));
        r[i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(t1, t3));
        r[i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(t1, t3));
    }
    for (int i = 0; i < 4; i++) {
        t[i] = _mm512_shuffle_f32x4(r[i], r[i + 4], 0x88);
        t[i + 4] = _mm512_shuffle_f32x4(r[i], r[i + 4], 0xdd);
        t[i + 8] = _mm512_shuffle_f32x4(r[i + 8], r[i + 12], 0x88);
        t[i + 12] = _mm512_shuffle_f32x4(r[i + 8], r[i + 12], 0xdd);
    }
    for (int i = 0; i < 4; i++) {
        r[i] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0x88);
        r[i + 8] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0xdd);
        r[i + 4] = _mm512_shuffle_f32x4(t[i + 4], t[i + 12], 0x88);
        r[i + 12] = _mm512_shuffle_f32x4(t[i + 4], t[i + 12], 0xdd);
    }
    for (int i = 0; i < 16; i++) _mm512_storeu_ps(bt + i * ldt, r[i]);
}
#define FNN_HAVE_T16 1
#endif

/* The thread's copy bt (k, n) of b (n, k) transposed, b's rows ldb apart; n k <=
 * FNN_GEMM_COPY_MAX. 16 x 16 blocks (in registers where the CPU has AVX-512 and
 * `registers` is set: every core with OpenBLAS's small kernels has AVX-512, so the
 * loops are a fallback, which the tests run with registers = 0), the edges value by
 * value: a copy, the same values whichever way. */
static inline __attribute__((unused)) float *fnn_transposed_f32(const float *b,
        ptrdiff_t n, ptrdiff_t k, ptrdiff_t ldb, int registers)
{
    float *bt = (float *)(((size_t)fnn_copy_f32 + 63) & ~(size_t)63);
    ptrdiff_t n16 = n - n % 16, k16 = k - k % 16;
#ifdef FNN_HAVE_T16
    if (registers && __builtin_cpu_supports("avx512f")) {
        for (ptrdiff_t j0 = 0; j0 < n16; j0 += 16)
            for (ptrdiff_t p0 = 0; p0 < k16; p0 += 16)
                fnn_t16_f32(b + j0 * ldb + p0, ldb, bt + p0 * n + j0, n);
    } else
#endif
    {
        for (ptrdiff_t j0 = 0; j0 < n16; j0 += 16)
            for (ptrdiff_t p0 = 0; p0 < k16; p0 += 16)
                for (ptrdiff_t p = p0; p < p0 + 16; p++)
                    for (ptrdiff_t j = j0; j < j0 + 16; j++) bt[p * n + j] = b[j * ldb + p];
    }
    /* the edges: columns p >= k16 of the rows j < n16, every column of the rows j >= n16 */
    for (ptrdiff_t j = 0; j < n; j++)
        for (ptrdiff_t p = (j < n16 ? k16 : 0); p < k; p++) bt[p * n + j] = b[j * ldb + p];
    return bt;
}

#endif
