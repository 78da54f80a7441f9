# fastnn's own float32 GEMM (fastnn_sgemm.h): compiled here, once, and reached by every
# backend through the address fastnn._blas hands out in place of the BLAS's sgemm_.

cdef extern from "fastnn_sgemm.h" nogil:
    size_t fnn_own_sgemm_address(size_t fallback, double small_mnk)


def sgemm_address(size_t fallback, double small_mnk):
    """The address of fastnn's own ``sgemm_`` (BLAS's Fortran signature), 0 where the CPU
    has no AVX-512.

    Calls it does not take (see fastnn_sgemm.h: alpha or beta other than 1 and 0, fewer
    than 32 rows, at most ``small_mnk`` multiply-adds) go to the BLAS ``sgemm_`` at
    ``fallback``. Set once, when fastnn._blas loads its BLAS.
    """
    return fnn_own_sgemm_address(fallback, small_mnk)
