# fastnn's own float32 GEMM (fastnn_sgemm.h): compiled here, once, and reached by every
# backend through the address fastnn._blas hands out in place of the BLAS's sgemm_.

cdef extern from "fastnn_sgemm.h" nogil:
    size_t fnn_own_sgemm_address(size_t fallback, double small_mnk)
    int fnn_own_takes(int M, int N, int K)
    int fnn_own_share(int trans_a, int m, int n, int k, const float* a, int lda,
                      const float* out, int ldc, int narrowest)
    void fnn_own_share_pack(int chunk)
    void fnn_own_unshare()


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


def share_addresses():
    """The addresses of ``fnn_own_share``, ``fnn_own_share_pack`` and
    ``fnn_own_unshare`` (fastnn_sgemm.h): a float32 product cut into column tiles packs
    its ``op(a)`` once for them all.

    ``int share(int trans_a, int m, int n, int k, const float* a, int lda, const float*
    out, int ldc, int narrowest)`` for the row-major product ``out (m, n) = op(a) @
    op(b)`` whose narrowest tile has ``narrowest`` columns returns the number of chunks
    to pack, each once (``void pack(int chunk)``, on any thread) before the tiles, and
    ``void unshare()`` once every tile is made; or 0, and the tiles pack for
    themselves. Either way the tiles give the same bits.
    """
    return <size_t>&fnn_own_share, <size_t>&fnn_own_share_pack, <size_t>&fnn_own_unshare
