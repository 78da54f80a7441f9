/*
 * A candidate kernel of fastnn's own for small matrix products, measured against
 * OpenBLAS by benchmarks/small_products.py (issue 14, item 4) and NOT used by fastnn:
 * docs/benchmarks/2026-12-02-small-products.md says why.
 *
 * c (m, n) = op(a) (m, k) @ op(b) (k, n), all row-major with row lengths lda, ldb, ldc,
 * k <= FNN_SMALL_MAX_K. Every output element is summed in one order, which the NumPy
 * reference and the Numba kernels could reproduce bit for bit
 * (``c = a[:, 0, None] * b[0]; c += a[:, p, None] * b[p]``, p = 1..k-1):
 *
 *     c[i, j] = op(a)[i, 0] op(b)[0, j]
 *     c[i, j] = c[i, j] + op(a)[i, p] op(b)[p, j]      for p = 1, ..., k - 1
 *
 * each product rounded to the dtype, then added (no fused multiply-add: compiled with
 * -ffp-contract=off and never fast-math, as setup.py builds fastnn's kernels, and the
 * "avx512f"/"avx2" clones do not even enable FMA instructions); k = 0 gives +0. The vector lanes run across output
 * elements, never along one sum, so every clone (AVX-512, AVX2, SSE2) and every
 * blocking below gives the same bits; only the speed differs.
 */
#ifndef FASTNN_SMALL_GEMM_H
#define FASTNN_SMALL_GEMM_H

#include <stddef.h>
#include <string.h>

#ifndef FNN_CLONES
#  if defined(__x86_64__) && defined(__ELF__) && defined(__GNUC__) && defined(__has_attribute)
#    if __has_attribute(target_clones)
#      define FNN_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#    endif
#  endif
#endif
#ifndef FNN_CLONES
#  define FNN_CLONES
#endif

/* The largest k accepted: bounds each output's chain of additions and the stack
 * panels. */
#define FNN_SMALL_MAX_K 256
#define FNN_INL static inline __attribute__((always_inline, unused))

/* 64-byte vectors (one AVX-512 register, two AVX2 ones, four SSE ones), readable at
 * any address of their element type. */
typedef float fnn_vf32 __attribute__((vector_size(64), aligned(4)));
typedef double fnn_vf64 __attribute__((vector_size(64), aligned(8)));
typedef int fnn_vi32 __attribute__((vector_size(64)));
typedef long long fnn_vi64 __attribute__((vector_size(64)));

/* Register tile: rows i..i+R of c, columns j..j+C*V, from op(b)'s rows bp + p * bs
 * (contiguous, C*V readable), op(a)[i, p] = a[i * sa_i + p * sa_p]. Stores full
 * vectors to cp (row length ldc). */
#define FNN_TILE(T, VT, V, R, C)                                                       \
    {                                                                                  \
        VT acc[R][C];                                                                  \
        for (int r = 0; r < R; r++) {                                                  \
            T s = ai[r * sa_i];                                                        \
            for (int q = 0; q < C; q++) acc[r][q] = s * *(const VT *)(bp + q * V);     \
        }                                                                              \
        for (ptrdiff_t p = 1; p < k; p++) {                                            \
            VT bv[C];                                                                  \
            for (int q = 0; q < C; q++) bv[q] = *(const VT *)(bp + p * bs + q * V);    \
            for (int r = 0; r < R; r++) {                                              \
                T s = ai[r * sa_i + p * sa_p];                                         \
                for (int q = 0; q < C; q++) acc[r][q] = acc[r][q] + s * bv[q];         \
            }                                                                          \
        }                                                                              \
        for (int r = 0; r < R; r++)                                                    \
            for (int q = 0; q < C; q++) *(VT *)(cp + r * ldc + q * V) = acc[r][q];     \
    }

/* Rows 0..m of c's columns [0, C*V) (full vectors), tiles of R rows then single rows. */
#define FNN_ROWS(S, T, VT, V, R, C)                                                    \
    FNN_INL void fnn_rows_##S##_##R##x##C(ptrdiff_t m, ptrdiff_t k, const T *a,         \
                                          ptrdiff_t sa_i, ptrdiff_t sa_p, const T *bp, \
                                          ptrdiff_t bs, T *c, ptrdiff_t ldc)           \
    {                                                                                  \
        ptrdiff_t i = 0;                                                               \
        for (; i + R <= m; i += R) {                                                   \
            const T *ai = a + i * sa_i;                                                \
            T *cp = c + i * ldc;                                                       \
            FNN_TILE(T, VT, V, R, C)                                                   \
        }                                                                              \
        for (; i < m; i++) {                                                           \
            const T *ai = a + i * sa_i;                                                \
            T *cp = c + i * ldc;                                                       \
            FNN_TILE(T, VT, V, 1, C)                                                   \
        }                                                                              \
    }

/* Narrow c (n <= 4), a not transposed: each vector holds V/4 rows of c, four columns
 * each (the last ones padding). op(b) comes packed as b4 (k rows of 4); op(a)'s rows
 * are read four p at a time (FNN_Z_*: V/4 rows of four, side by side) and spread by
 * a shuffle: lane l gets row l/4 at p + q. */
typedef float fnn_vf32x4 __attribute__((vector_size(16), aligned(4)));
typedef float fnn_vf32x8 __attribute__((vector_size(32), aligned(4)));
typedef double fnn_vf64x4 __attribute__((vector_size(32), aligned(8)));
#define FNN_Z_f32(ptr, lda)                                                             \
    ({                                                                                  \
        const float *z_ = (ptr);                                                        \
        fnn_vf32x4 x0_ = *(const fnn_vf32x4 *)z_, x1_ = *(const fnn_vf32x4 *)(z_ + lda); \
        fnn_vf32x4 x2_ = *(const fnn_vf32x4 *)(z_ + 2 * lda);                           \
        fnn_vf32x4 x3_ = *(const fnn_vf32x4 *)(z_ + 3 * lda);                           \
        fnn_vf32x8 y0_ = __builtin_shufflevector(x0_, x1_, 0, 1, 2, 3, 4, 5, 6, 7);     \
        fnn_vf32x8 y1_ = __builtin_shufflevector(x2_, x3_, 0, 1, 2, 3, 4, 5, 6, 7);     \
        (fnn_vf32) __builtin_shufflevector(y0_, y1_, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10,  \
                                           11, 12, 13, 14, 15);                         \
    })
#define FNN_Z_f64(ptr, lda)                                                             \
    ({                                                                                  \
        const double *z_ = (ptr);                                                       \
        fnn_vf64x4 x0_ = *(const fnn_vf64x4 *)z_, x1_ = *(const fnn_vf64x4 *)(z_ + lda); \
        (fnn_vf64) __builtin_shufflevector(x0_, x1_, 0, 1, 2, 3, 4, 5, 6, 7);           \
    })
#define FNN_NARROW_STEP(VT, q, FIRST)                                                    \
    {                                                                                  \
        VT bq = __builtin_shuffle(*(const VT *)(b4 + (p + q) * 4), bidx);              \
        for (int g = 0; g < G; g++) {                                                  \
            VT pr = __builtin_shuffle(z[g], idx[q]) * bq;                              \
            acc[g] = FIRST ? pr : acc[g] + pr;                                         \
        }                                                                              \
    }
#define FNN_NARROW(S, T, VT, VI, V)                                                    \
    FNN_INL ptrdiff_t fnn_narrow_##S(ptrdiff_t m, ptrdiff_t n, ptrdiff_t k, const T *a, \
                                     ptrdiff_t lda, const T *b4, T *c, ptrdiff_t ldc)  \
    {                                                                                  \
        enum { RV = V / 4, G = 4 }; /* rows per vector, vectors per block */           \
        VI idx[4], bidx;                                                               \
        for (int l = 0; l < V; l++) {                                                  \
            for (int q = 0; q < 4; q++) idx[q][l] = (l / 4) * 4 + q;                   \
            bidx[l] = l % 4;                                                           \
        }                                                                              \
        ptrdiff_t i0 = 0;                                                              \
        if (k < 4) return 0;                                                           \
        ptrdiff_t k4 = k - k % 4;                                                      \
        for (; i0 + G * RV <= m; i0 += G * RV) {                                       \
            VT acc[G], z[G];                                                           \
            ptrdiff_t p = 0;                                                           \
            for (int g = 0; g < G; g++) z[g] = FNN_Z_##S(a + (i0 + g * RV) * lda, lda); \
            FNN_NARROW_STEP(VT, 0, 1)                                                      \
            FNN_NARROW_STEP(VT, 1, 0)                                                      \
            FNN_NARROW_STEP(VT, 2, 0)                                                      \
            FNN_NARROW_STEP(VT, 3, 0)                                                      \
            for (p = 4; p < k4; p += 4) {                                              \
                for (int g = 0; g < G; g++)                                            \
                    z[g] = FNN_Z_##S(a + (i0 + g * RV) * lda + p, lda);                \
                FNN_NARROW_STEP(VT, 0, 0)                                                  \
                FNN_NARROW_STEP(VT, 1, 0)                                                  \
                FNN_NARROW_STEP(VT, 2, 0)                                                  \
                FNN_NARROW_STEP(VT, 3, 0)                                                  \
            }                                                                          \
            for (; p < k; p++) {                                                       \
                VT bq = __builtin_shuffle(*(const VT *)(b4 + p * 4), bidx);            \
                for (int g = 0; g < G; g++) {                                          \
                    VT x;                                                              \
                    for (int l = 0; l < V; l++) x[l] = a[(i0 + g * RV + l / 4) * lda + p]; \
                    acc[g] = acc[g] + x * bq;                                          \
                }                                                                      \
            }                                                                          \
            for (int g = 0; g < G; g++)                                                \
                for (int l = 0; l < V; l++)                                            \
                    if (l % 4 < n) c[(i0 + g * RV + l / 4) * ldc + l % 4] = acc[g][l];  \
        }                                                                              \
        return i0;                                                                     \
    }

/* Narrow c (n <= 4), a transposed: lanes down c's columns (op(a)[i0:i0+V, p] is a row
 * of a), two vectors of rows, one accumulator pair per column. */
#define FNN_COLS(S, T, VT, V)                                                          \
    FNN_INL ptrdiff_t fnn_cols_##S(ptrdiff_t m, int n, ptrdiff_t k, const T *a,        \
                                   ptrdiff_t lda, const T *b4, T *c, ptrdiff_t ldc)    \
    {                                                                                  \
        ptrdiff_t i0 = 0;                                                              \
        for (; i0 + 2 * V <= m; i0 += 2 * V) {                                         \
            VT acc[4][2];                                                              \
            VT x0 = *(const VT *)(a + i0), x1 = *(const VT *)(a + i0 + V);             \
            for (int j = 0; j < 4; j++) {                                              \
                acc[j][0] = b4[j] * x0;                                                \
                acc[j][1] = b4[j] * x1;                                                \
            }                                                                          \
            for (ptrdiff_t p = 1; p < k; p++) {                                        \
                x0 = *(const VT *)(a + p * lda + i0);                                  \
                x1 = *(const VT *)(a + p * lda + i0 + V);                              \
                for (int j = 0; j < 4; j++) {                                          \
                    if (j >= n) break;                                                 \
                    T s = b4[p * 4 + j];                                               \
                    acc[j][0] = acc[j][0] + s * x0;                                    \
                    acc[j][1] = acc[j][1] + s * x1;                                    \
                }                                                                      \
            }                                                                          \
            for (int j = 0; j < n; j++)                                                \
                for (int l = 0; l < V; l++) {                                          \
                    c[(i0 + l) * ldc + j] = acc[j][0][l];                              \
                    c[(i0 + V + l) * ldc + j] = acc[j][1][l];                          \
                }                                                                      \
        }                                                                              \
        return i0;                                                                     \
    }

#define FNN_SMALL_GEMM(T, S, VT, VI, V)                                                \
    FNN_ROWS(S, T, VT, V, 4, 2)                                                        \
    FNN_ROWS(S, T, VT, V, 2, 4)  FNN_ROWS(S, T, VT, V, 4, 4)                                                        \
    FNN_ROWS(S, T, VT, V, 4, 1)                                                        \
    FNN_NARROW(S, T, VT, VI, V)                                                        \
    FNN_COLS(S, T, VT, V)                                                              \
    FNN_CLONES __attribute__((unused)) static void fnn_small_gemm_##S(                 \
        int trans_a, int trans_b, ptrdiff_t m, ptrdiff_t n, ptrdiff_t k, const T *a,   \
        ptrdiff_t lda, const T *b, ptrdiff_t ldb, T *c, ptrdiff_t ldc)                 \
    {                                                                                  \
        T panel[FNN_SMALL_MAX_K * 4 * V]; /* op(b) columns, packed */                 \
        T out[4 * V];                                                                  \
        ptrdiff_t sa_i = trans_a ? 1 : lda, sa_p = trans_a ? lda : 1;                  \
        ptrdiff_t sb_p = trans_b ? 1 : ldb, sb_j = trans_b ? ldb : 1;                  \
        if (m == 0 || n == 0) return;                                                  \
        if (k == 0) {                                                                  \
            for (ptrdiff_t i = 0; i < m; i++)                                          \
                for (ptrdiff_t j = 0; j < n; j++) c[i * ldc + j] = 0;                  \
            return;                                                                    \
        }                                                                              \
        if (n <= 4) { /* narrow: op(b) packed into rows of 4 */                        \
            ptrdiff_t i0;                                                              \
            for (ptrdiff_t p = 0; p < k; p++)                                          \
                for (ptrdiff_t j = 0; j < 4; j++)                                      \
                    panel[p * 4 + j] = j < n ? b[p * sb_p + j * sb_j] : 0;             \
            if (trans_a)                                                               \
                i0 = fnn_cols_##S(m, (int)n, k, a, lda, panel, c, ldc);                \
            else                                                                       \
                i0 = fnn_narrow_##S(m, n, k, a, lda, panel, c, ldc);                   \
            for (ptrdiff_t i = i0; i < m; i++) { /* the last rows, one at a time */    \
                for (ptrdiff_t j = 0; j < n; j++) {                                    \
                    T s = a[i * sa_i] * panel[j];                                      \
                    for (ptrdiff_t p = 1; p < k; p++)                                  \
                        s = s + a[i * sa_i + p * sa_p] * panel[p * 4 + j];             \
                    c[i * ldc + j] = s;                                                \
                }                                                                      \
            }                                                                          \
            return;                                                                    \
        }                                                                              \
        for (ptrdiff_t j0 = 0; j0 < n; j0 += 4 * V) {                                  \
            ptrdiff_t w = n - j0 < 4 * V ? n - j0 : 4 * V;                             \
            ptrdiff_t wv = (w + V - 1) / V; /* vectors, the last one maybe partial */  \
            const T *bp = b + j0 * sb_j;                                               \
            ptrdiff_t bs = ldb;                                                        \
            if (trans_b || w % V) { /* op(b)[:, j0:j0+w] into rows of wv * V */         \
                for (ptrdiff_t p = 0; p < k; p++)                                      \
                    for (ptrdiff_t j = 0; j < wv * V; j++)                             \
                        panel[p * wv * V + j] = j < w ? bp[p * sb_p + j * sb_j] : 0;   \
                bp = panel;                                                            \
                bs = wv * V;                                                           \
            }                                                                          \
            ptrdiff_t full = w / V; /* whole vectors of c */                           \
            ptrdiff_t q = 0;                                                           \
            if (full == 4) {                                                           \
                if (m >= 4 && k <= 4) { fnn_rows_##S##_4x4(m, k, a, sa_i, sa_p, bp, bs, c + j0, ldc); q = 4; } else if (m >= 4)                                                          \
                    for (; q < 4; q += 2)                                              \
                        fnn_rows_##S##_4x2(m, k, a, sa_i, sa_p, bp + q * V, bs,        \
                                           c + j0 + q * V, ldc);                       \
                else                                                                   \
                    fnn_rows_##S##_2x4(m, k, a, sa_i, sa_p, bp, bs, c + j0, ldc), q = 4; \
            }                                                                          \
            for (; q < full; q++)                                                      \
                fnn_rows_##S##_4x1(m, k, a, sa_i, sa_p, bp + q * V, bs, c + j0 + q * V, \
                                   ldc);                                               \
            if (w % V) { /* the last, partial vector: row by row through out */        \
                for (ptrdiff_t i = 0; i < m; i++) {                                    \
                    fnn_rows_##S##_4x1(1, k, a + i * sa_i, sa_i, sa_p, bp + full * V,  \
                                       bs, out, 4 * V);                                \
                    for (ptrdiff_t j = 0; j < w % V; j++)                              \
                        c[i * ldc + j0 + full * V + j] = out[j];                       \
                }                                                                      \
            }                                                                          \
        }                                                                              \
    }

FNN_SMALL_GEMM(float, f32, fnn_vf32, fnn_vi32, 16)
FNN_SMALL_GEMM(double, f64, fnn_vf64, fnn_vi64, 8)

#endif /* FASTNN_SMALL_GEMM_H */
