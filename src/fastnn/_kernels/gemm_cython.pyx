# fastnn's own float32 GEMM (fastnn_sgemm.h): compiled here, once, and reached by every
# backend through the address fastnn._blas hands out in place of the BLAS's sgemm_.

cdef extern from "fastnn_sgemm.h" nogil:
    size_t fnn_own_sgemm_address(size_t fallback, double small_mnk)
    int fnn_own_takes(int M, int N, int K)


def sgemm_address(size_t fallback, double small_mnk):
    """The address of fastnn's own ``sgemm_`` (BLAS's Fortran signature), 0 where the CPU
    has no AVX-512.

    Calls it does not take (see fastnn_sgemm.h: alpha or beta other than 1 and 0, fewer
    than 32 rows, at most ``small_mnk`` multiply-adds) go to the BLAS ``sgemm_`` at
    ``fallback``. Set once, when fastnn._blas loads its BLAS.
    """
    return fnn_own_sgemm_address(fallback, small_mnk)


def takes(int m, int n, int k):
    """Whether the own GEMM takes the product out (m, n) = op(a) (m, k) @ op(b) (k, n)
    (alpha 1, beta 0) that fastnn._blas.gemm_call makes as one column-major call of n
    rows and m columns, once its address is handed out; False where it never runs."""
    return bool(fnn_own_takes(n, m, k))
