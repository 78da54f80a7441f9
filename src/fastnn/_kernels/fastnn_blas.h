/* The Fortran GEMM entry points the Cython kernels call: fastnn's own single-threaded
 * BLAS instance (fastnn/_blas.py). Each extension module that includes this header has
 * its own copy of the two pointers; a module that makes products sets them when it is
 * imported (fnn_set_gemm with fastnn._blas.gemm_addresses() and small_gemm_mnk()). */
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

static inline __attribute__((unused)) void fnn_set_gemm(size_t s, size_t d, double small_mnk) {
    fnn_sgemm = (fnn_sgemm_fn)s;
    fnn_dgemm = (fnn_dgemm_fn)d;
    fnn_small_gemm_mnk = small_mnk;
}

#endif
