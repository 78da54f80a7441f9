"""Row-major matrix products through fastnn's BLAS, the library the compiled kernels call.

NumPy's ``@`` links its own OpenBLAS build, threaded as its user set it; going through
:mod:`fastnn._blas` (a private, single-threaded instance of SciPy's OpenBLAS) makes the
reference run the very GEMM calls the Numba and Cython kernels run, so products agree
between backends bit for bit (docs/spec.md §10, rule 2 of §11), whatever thread calls
them and whatever BLAS thread limits are set.

Every product is cut into blocks by :func:`gemm_partition`, a rule that looks at the
shape only, and each block is one BLAS call. The compiled kernels make the same calls,
one after the other on one thread or side by side on several, so the bits never depend
on the thread count (OpenBLAS's own threading, and even computing a product whole
instead of in blocks, changes float32 results).
"""

import numpy as np

from .._blas import gemm_call

# The partition rule: Numba compiles gemm_partition itself, the Cython kernels carry a
# copy (blas_cython.pxd's gemm_block) that must stay equal to it (tests/test_threads.py).
# Products of 2 m n k >= 2**25 flops (a few hundred microseconds) are cut in 2 blocks,
# from 2**33 (~0.1 s) in 4; a block spans a multiple of GEMM_UNIT rows or columns (the
# BLAS micro-kernels' tile sizes divide it), so each stays one efficient call. On one
# thread 2 blocks cost 0-8% of a product's time (OpenBLAS, Zen 3), 4 blocks up to 20%:
# hence 4 only where a product is long enough for more than two cores to pay.
GEMM_UNIT = 16
GEMM_SPLIT_FLOPS = 2**25
GEMM_SPLIT4_FLOPS = 2**33


def gemm_partition(m, n, k):
    """(by_columns, block) for a row-major product out (m, n) = op(a) (m, k) @ op(b).

    The output is cut along its longer side (columns on a tie) into pieces of
    ``block`` rows or columns, the last one shorter; ``block`` equals that side when
    the product is not cut. Depends on the shape only, never on a thread count.
    """
    flops = 2 * m * n * k
    parts = 4 if flops >= GEMM_SPLIT4_FLOPS else 2 if flops >= GEMM_SPLIT_FLOPS else 1
    by_columns = n >= m
    side = n if by_columns else m
    while parts > 1 and side < parts * GEMM_UNIT:
        parts //= 2
    if parts == 1:
        return by_columns, side
    per = -(-side // parts)
    return by_columns, -(-per // GEMM_UNIT) * GEMM_UNIT


def gemm(a, b, out, trans_a=False, trans_b=False, beta=0.0):
    """out = op(a) @ op(b) + beta * out, row-major; op transposes when asked.

    ``a`` (m, k) or (k, m) and ``b`` (k, n) or (n, k), ``out`` (m, n), all 2-D of one
    dtype. Each block of :func:`gemm_partition` is one call of fastnn's single-threaded
    BLAS (:func:`fastnn._blas.gemm_call`) on the arrays' own buffers, as the compiled
    kernels make it; operands that are not C-contiguous are copied first (the values
    are the same: BLAS packs its operands anyway).
    """
    a, b = np.ascontiguousarray(a), np.ascontiguousarray(b)
    target = out
    if not out.flags.c_contiguous:
        out = np.ascontiguousarray(out)
    m, n = out.shape
    k = a.shape[0] if trans_a else a.shape[1]
    lda, ldb, ldc = max(1, a.shape[1]), max(1, b.shape[1]), max(1, n)
    by_columns, block = gemm_partition(m, n, k)
    side = n if by_columns else m
    for lo in range(0, side, block or 1):
        hi = min(side, lo + block)
        if by_columns:  # out[:, lo:hi] = op(a) @ op(b)[:, lo:hi]
            gemm_call(
                trans_a,
                trans_b,
                m,
                hi - lo,
                k,
                a,
                0,
                lda,
                b,
                lo * ldb if trans_b else lo,
                ldb,
                out,
                lo,
                ldc,
                beta,
            )
        else:  # out[lo:hi] = op(a)[lo:hi] @ op(b)
            gemm_call(
                trans_a,
                trans_b,
                hi - lo,
                n,
                k,
                a,
                lo if trans_a else lo * lda,
                lda,
                b,
                0,
                ldb,
                out,
                lo * ldc,
                ldc,
                beta,
            )
    if out is not target:
        target[...] = out
    return target
