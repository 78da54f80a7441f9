"""Row-major matrix products through SciPy's BLAS, the library the compiled kernels call.

NumPy's ``@`` links its own OpenBLAS build; going through ``scipy.linalg.blas`` here
makes the reference run the very GEMM the Numba and Cython kernels run, so products
agree between backends bit for bit (SPEC: "equal to the reference computed with the
same BLAS call").
"""

import numpy as np
from scipy.linalg import blas as _scipy_blas

_GEMM = {np.dtype(np.float32): _scipy_blas.sgemm, np.dtype(np.float64): _scipy_blas.dgemm}


def gemm(a, b, out, trans_a=False, trans_b=False, beta=0.0):
    """out = op(a) @ op(b) + beta * out, row-major; op transposes when asked.

    ``a``, ``b`` and ``out`` are C-contiguous 2-D arrays of one dtype. A C-contiguous
    row-major matrix is its own transpose in column-major order, so the call computes
    out.T = op(b).T @ op(a).T without copying anything.
    """
    gemm_ = _GEMM[out.dtype]
    result = gemm_(1.0, b.T, a.T, beta=beta, c=out.T, trans_a=trans_b, trans_b=trans_a,
                   overwrite_c=True)
    if not np.shares_memory(result, out):  # f2py copied: never expected, but stay right
        out[...] = result.T
    return out
