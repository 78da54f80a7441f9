"""Numba kernels for the losses (contract: ``fastnn.reference.losses``).

Loss values are means in float64 summed in NumPy's pairwise order (``pairwise_sum``),
so they equal the reference's ``np.mean`` bit for bit; gradients with exp or log are
evaluated in float64 and rounded once. ``mse``/``mse_gradient`` take flat arrays, the
cross-entropies (m, k) logits, one row per sample.
"""

import numpy as np

from ._numba_common import (
    PW_BLOCK, block_sum, cast_like, jit, jit_inline, pairwise_combine, pairwise_descend,
    pairwise_stack, pairwise_sum,
)

__all__ = [
    "mse",
    "mse_gradient",
    "binary_cross_entropy",
    "binary_cross_entropy_gradient",
    "cross_entropy",
    "cross_entropy_gradient",
    "sparse_cross_entropy",
    "sparse_cross_entropy_gradient",
]

# NumPy's default ufunc buffer (np.getbufsize()): a float32 array averaged with
# dtype=float64 is cast and summed in chunks of this many elements.
_NUMPY_BUFSIZE = 8192


@jit_inline
def _block_squared_errors(u, v, lo, n, buf):
    """Sum of (u[i] - v[i])^2 (in the array dtype, then widened) over one block."""
    for j in range(n):
        d = u[lo + j] - v[lo + j]
        buf[j] = d * d
    return block_sum(buf, np.intp(0), n)


@jit
def _pairwise_squared_errors(u, v, lo, n):
    """Float64 sum of (u[i] - v[i])^2, i in [lo, lo + n), n >= 1, in NumPy's pairwise
    order."""
    buf = np.empty(PW_BLOCK)
    if n <= PW_BLOCK:
        return _block_squared_errors(u, v, lo, n, buf)
    nodes, sums = pairwise_stack(buf)
    sp, cnt = pairwise_descend(nodes, 0, lo, n)
    while True:
        sp, total, lo, n = pairwise_combine(nodes, sums, sp,
                                            _block_squared_errors(u, v, lo, cnt, buf))
        if n == 0:
            return total
        sp, cnt = pairwise_descend(nodes, sp, lo, n)


@jit
def mse(y_pred, y):
    """L = mean((y_pred - y)^2) over flat arrays, accumulated in float64."""
    n = y_pred.size
    # NumPy sums float64 in one pairwise run, float32 cast buffer by buffer
    chunk = n if y_pred.itemsize == 8 else _NUMPY_BUFSIZE
    total = 0.0
    for lo in range(0, n, chunk):
        total += _pairwise_squared_errors(y_pred, y, lo, min(chunk, n - lo))
    return total / n


@jit
def mse_gradient(y_pred, y, out):
    """out = 2 (y_pred - y) / size over flat arrays, in the array dtype."""
    two = cast_like(y_pred, 2.0)
    size = cast_like(y_pred, y_pred.size)
    for i in range(y_pred.size):
        out[i] = two * (y_pred[i] - y[i]) / size


@jit
def binary_cross_entropy(z, y):
    """L = mean over the m rows of sum_k (max(z, 0) - z y + log(1 + e^-|z|)); z, y (m, k).

    Terms in float64; each row's sum and the mean over rows are pairwise, as NumPy's.
    """
    m, k = z.shape
    terms = np.empty(k)
    rows = np.empty(m)
    for i in range(m):
        for j in range(k):
            x = np.float64(z[i, j])
            # max(x, 0) as np.maximum: NaN stays
            terms[j] = (((0.0 if x <= 0 else x) - x * np.float64(y[i, j]))
                        + np.log1p(np.exp(-np.abs(x))))
        rows[i] = 0.0 + pairwise_sum(terms, k)
    return (0.0 + pairwise_sum(rows, m)) / m


@jit
def binary_cross_entropy_gradient(z, y, out):
    """out = (sigmoid(z) - y) / m, z (m, k), float64 inside."""
    m = z.shape[0]
    zf = z.reshape(z.size)
    yf = y.reshape(y.size)
    of = out.reshape(out.size)
    for i in range(zf.size):
        x = np.float64(zf[i])
        e = np.exp(-np.abs(x))
        s = 1.0 / (1.0 + e) if x >= 0 else e / (1.0 + e)
        of[i] = (s - np.float64(yf[i])) / m


@jit
def _shifted_exp_row(z, i, e):
    """Row i of z: e[j] = exp(z[i, j] - max), returns (max, pairwise sum of e), float64."""
    k = z.shape[1]
    mx = np.float64(z[i, 0])
    for j in range(1, k):
        x = np.float64(z[i, j])
        if x > mx or x != x:  # NaN wins, as in ndarray.max
            mx = x
    for j in range(k):
        e[j] = np.exp(np.float64(z[i, j]) - mx)
    return mx, pairwise_sum(e, k)


@jit
def cross_entropy(z, y):
    """L = mean over rows of -sum_k y_k log softmax(z)_k; z, y (m, k)."""
    m, k = z.shape
    e = np.empty(k)
    rows = np.empty(m)
    for i in range(m):
        mx, s = _shifted_exp_row(z, i, e)
        log_s = np.log(s)
        for j in range(k):  # e now holds the terms y (z - max - log s) of the row
            e[j] = np.float64(y[i, j]) * ((np.float64(z[i, j]) - mx) - log_s)
        rows[i] = -(0.0 + pairwise_sum(e, k))
    return (0.0 + pairwise_sum(rows, m)) / m


@jit
def cross_entropy_gradient(z, y, out):
    """out = (softmax(z) - y) / m, z, y, out (m, k), float64 inside."""
    m, k = z.shape
    e = np.empty(k)
    for i in range(m):
        mx, s = _shifted_exp_row(z, i, e)
        for j in range(k):
            out[i, j] = (e[j] / s - np.float64(y[i, j])) / m


@jit
def sparse_cross_entropy(z, labels):
    """L = mean over rows of logsumexp(z) - z[label]; labels int64 (m,)."""
    m, k = z.shape
    if m == 0:
        return np.nan  # the mean of no sample, as np.mean
    e = np.empty(k)
    rows = np.empty(m)
    for i in range(m):
        mx, s = _shifted_exp_row(z, i, e)
        rows[i] = np.log(s) - (np.float64(z[i, labels[i]]) - mx)
    return (0.0 + pairwise_sum(rows, m)) / m


@jit
def sparse_cross_entropy_gradient(z, labels, out):
    """out = (softmax(z) - onehot(labels)) / m, float64 inside."""
    m, k = z.shape
    e = np.empty(k)
    for i in range(m):
        _, s = _shifted_exp_row(z, i, e)
        label = labels[i]
        for j in range(k):
            g = e[j] / s
            if j == label:
                g -= 1.0
            out[i, j] = g / m
