# fastnn's own GEMM (fastnn_gemm.h), float32 and float64: compiled here, once, and
# reached by every backend through the addresses fastnn._blas hands out in place of the
# BLAS's sgemm_ and dgemm_.

cdef extern from "fastnn_gemm.h" nogil:
    void fnn_own_gemm_addresses(size_t sgemm, size_t dgemm, double small_mnk,
                                size_t* own_s, size_t* own_d)
    int fnn_own_takes(int M, int N, int K)
    int fnn_own_share(int itemsize, int trans_a, int m, int n, int k, const void* a,
                      int lda, const void* out, int ldc, int narrowest)
    void fnn_own_share_pack(int itemsize, int chunk)
    void fnn_own_unshare(int itemsize)
    unsigned long fnn_own_shared_calls(int itemsize)


def gemm_addresses(size_t sgemm, size_t dgemm, double small_mnk):
    """The addresses ``(sgemm_, dgemm_)`` of fastnn's own GEMM (BLAS's Fortran
    signatures), ``(0, 0)`` where the CPU has no AVX-512.

    Calls they do not take (see fastnn_gemm.h: alpha or beta other than 1 and 0, fewer
    than 32 rows, at most ``small_mnk`` multiply-adds) go to the BLAS functions at
    ``sgemm`` and ``dgemm``. Set once, when fastnn._blas loads its BLAS.
    """
    cdef size_t own_s, own_d
    fnn_own_gemm_addresses(sgemm, dgemm, small_mnk, &own_s, &own_d)
    return own_s, own_d


def takes(int m, int n, int k):
    """Whether the own GEMM takes the product out (m, n) = op(a) (m, k) @ op(b) (k, n)
    (alpha 1, beta 0) that fastnn._blas.gemm_call makes as one column-major call of n
    rows and m columns (either dtype); False before its addresses are handed out."""
    return bool(fnn_own_takes(n, m, k))


def share_addresses():
    """The addresses of ``fnn_own_share``, ``fnn_own_share_pack`` and
    ``fnn_own_unshare`` (fastnn_gemm.h): a product cut into column tiles packs its
    ``op(a)`` once for them all.

    ``int share(int itemsize, int trans_a, int m, int n, int k, const void* a, int lda,
    const void* out, int ldc, int narrowest)`` for the row-major product ``out (m, n) =
    op(a) @ op(b)`` of ``itemsize``-byte values (4 or 8) whose narrowest tile has
    ``narrowest`` columns returns the number of chunks to pack, each once (``void
    pack(int itemsize, int chunk)``, on any thread) before the tiles, and ``void
    unshare(int itemsize)`` once every tile is made; or 0, and the tiles pack for
    themselves. Either way the tiles give the same bits.
    """
    return <size_t>&fnn_own_share, <size_t>&fnn_own_share_pack, <size_t>&fnn_own_unshare


def shared_calls(int itemsize):
    """How many calls of the own GEMM on ``itemsize``-byte values (4: float32, 8:
    float64) have read an ``op(a)`` packed once for its product's column tiles, since
    this module loaded: how the tests see that a backend shares (its bits are the same
    either way)."""
    return fnn_own_shared_calls(itemsize)
