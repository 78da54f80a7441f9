"""Row-major matrix products through SciPy's BLAS, the library the compiled kernels call.

NumPy's ``@`` links its own OpenBLAS build; going through ``scipy.linalg.blas`` here
makes the reference run the very GEMM the Numba and Cython kernels run, so products
agree between backends bit for bit (SPEC: "equal to the reference computed with the
same BLAS call").

Every product is cut into blocks by :func:`gemm_partition`, a rule that looks at the
shape only, and each block is one BLAS call. The compiled kernels make the same calls,
one after the other on one thread or side by side on several, so the bits never depend
on the thread count (OpenBLAS's own threading, and even computing a product whole
instead of in blocks, changes float32 results).
"""

import numpy as np
from scipy.linalg import blas as _scipy_blas

_GEMM = {np.dtype(np.float32): _scipy_blas.sgemm, np.dtype(np.float64): _scipy_blas.dgemm}

# The partition rule: Numba compiles gemm_partition itself, the Cython kernels carry a
# copy (blas_cython.pxd's gemm_block) that must stay equal to it (tests/test_threads.py).
# Products of 2 m n k >= 2**25 flops (a few hundred microseconds) are cut in 2 blocks,
# from 2**33 (~0.1 s) in 4; a block spans a multiple of GEMM_UNIT rows or columns (the
# BLAS micro-kernels' tile sizes divide it), so each stays one efficient call. On one
# thread 2 blocks cost 0-8% of a product's time (OpenBLAS, Zen 3), 4 blocks up to 20%:
# hence 4 only where a product is long enough for more than two cores to pay.
GEMM_UNIT = 16
GEMM_SPLIT_FLOPS = 2 ** 25
GEMM_SPLIT4_FLOPS = 2 ** 33


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


def _gemm_block(a, b, out, trans_a, trans_b, beta):
    gemm_ = _GEMM[out.dtype]
    result = gemm_(1.0, b.T, a.T, beta=beta, c=out.T, trans_a=trans_b, trans_b=trans_a,
                   overwrite_c=True)
    if not np.shares_memory(result, out):  # f2py copied (a block of out is strided)
        out[...] = result.T


def gemm(a, b, out, trans_a=False, trans_b=False, beta=0.0):
    """out = op(a) @ op(b) + beta * out, row-major; op transposes when asked.

    ``a``, ``b`` and ``out`` are C-contiguous 2-D arrays of one dtype. A C-contiguous
    row-major matrix is its own transpose in column-major order, so each block's call
    computes out.T = op(b).T @ op(a).T without copying anything (f2py copies the
    strided blocks; BLAS packs its operands anyway, so the values are the same).
    """
    m, n = out.shape
    k = a.shape[0] if trans_a else a.shape[1]
    by_columns, block = gemm_partition(m, n, k)
    for lo in range(0, max(n if by_columns else m, 1), block or 1):
        hi = lo + block
        if by_columns:  # out[:, lo:hi] = op(a) @ op(b)[:, lo:hi]
            b_part = b[lo:hi] if trans_b else b[:, lo:hi]
            _gemm_block(a, b_part, out[:, lo:hi], trans_a, trans_b, beta)
        else:  # out[lo:hi] = op(a)[lo:hi] @ op(b)
            a_part = a[:, lo:hi] if trans_a else a[lo:hi]
            _gemm_block(a_part, b, out[lo:hi], trans_a, trans_b, beta)
    return out
