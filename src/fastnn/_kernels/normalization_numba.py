"""Numba kernels for dropout and batch normalisation (contract:
``fastnn.reference.normalization``).

Batch statistics are float64 sums over the rows, added row after row as NumPy's
``sum(axis=0)`` does; for a single column NumPy sums pairwise instead, and so do these
kernels. Normalised values are rounded once to the array dtype; the affine part
``gamma * x_hat + beta`` runs in the array dtype on the rounded x_hat.
"""

import numpy as np

from ._numba_common import cast_like, jit, pairwise_sum

__all__ = [
    "dropout",
    "batch_norm_train",
    "batch_norm_eval",
    "batch_norm_backward",
]
# Also used by the whole-epoch kernel: batch_norm_statistics, batch_norm_backward_ws.


@jit
def dropout(x, mask, rate, out):
    """out = mask * x / (1 - rate) over flat arrays; mask uint8 (or bool) 0/1."""
    keep = cast_like(x, 1.0 - rate)
    for i in range(x.size):
        out[i] = cast_like(x, mask[i]) * x[i] / keep


@jit
def _column_sums(x, total, center, squares, col):
    """total[j] = sum over rows of x[:, j], or of (x[:, j] - center[j])^2, in float64;
    col: m float64 of scratch (used when k == 1)."""
    m, k = x.shape
    if k == 1:  # NumPy reduces a single column pairwise
        for i in range(m):
            d = np.float64(x[i, 0])
            col[i] = (d - center[0]) * (d - center[0]) if squares else d
        total[0] = 0.0 + pairwise_sum(col, m)
        return
    total[:] = 0.0
    for i in range(m):
        for j in range(k):
            if squares:
                d = np.float64(x[i, j]) - center[j]
                total[j] += d * d
            else:
                total[j] += x[i, j]


# x (m, k), m >= 2, read; running_mean, running_var (k,) moved in place; mean, inv (k,)
# float64 and col (m,) float64 scratch written.
@jit
def batch_norm_statistics(x, eps, momentum, running_mean, running_var, mean, inv, col):
    """mean = mu and inv = 1 / sqrt(var + eps) of x's columns in float64 (var biased);
    the running statistics move by momentum towards mu and var m / (m - 1).

    Shared by ``batch_norm_train`` and the whole-epoch kernel, so both sum in one order.
    """
    m, k = x.shape
    _column_sums(x, mean, mean, False, col)
    for j in range(k):
        mean[j] /= m
    _column_sums(x, inv, mean, True, col)
    keep = 1.0 - momentum
    for j in range(k):
        var = inv[j] / m
        running_mean[j] = keep * np.float64(running_mean[j]) + momentum * mean[j]
        running_var[j] = keep * np.float64(running_var[j]) + momentum * (var * m / (m - 1))
        inv[j] = 1.0 / np.sqrt(var + eps)


@jit
def batch_norm_train(x, gamma, beta, eps, momentum, running_mean, running_var, out, x_hat, inv_std):
    """Normalise x (m, k), m >= 2, with its batch statistics; update the running ones.

    mu, var (biased) in float64; inv_std = 1 / sqrt(var + eps); x_hat = (x - mu) inv_std;
    out = gamma x_hat + beta; running stats move by momentum towards mu and var m/(m-1).
    """
    m, k = x.shape
    mean = np.empty(k)
    var = np.empty(k)  # the float64 inv_std
    batch_norm_statistics(x, eps, momentum, running_mean, running_var, mean, var, np.empty(m))
    for j in range(k):
        inv_std[j] = var[j]
    for i in range(m):
        for j in range(k):
            xh = cast_like(x, (np.float64(x[i, j]) - mean[j]) * var[j])
            x_hat[i, j] = xh
            out[i, j] = gamma[j] * xh + beta[j]


@jit
def batch_norm_eval(x, gamma, beta, running_mean, running_var, eps, out):
    """out = gamma (x - running_mean) / sqrt(running_var + eps) + beta, x (m, k).

    The normalised value is formed in float64 and rounded once, the affine part runs in
    the array dtype.
    """
    m, k = x.shape
    inv = np.empty(k)
    for j in range(k):
        inv[j] = 1.0 / np.sqrt(np.float64(running_var[j]) + eps)
    for i in range(m):
        for j in range(k):
            xh = cast_like(x, (np.float64(x[i, j]) - np.float64(running_mean[j])) * inv[j])
            out[i, j] = gamma[j] * xh + beta[j]


@jit
def batch_norm_backward(dout, x_hat, gamma, inv_std, dx, dgamma, dbeta):
    """dbeta = sum dout, dgamma = sum dout x_hat (float64, over the m rows),
    dx = gamma inv_std / m (m dout - dbeta - x_hat dgamma), rounded once."""
    m, k = dout.shape
    work = np.empty((3, k))
    batch_norm_backward_ws(
        dout, x_hat, gamma, inv_std, dx, dgamma, dbeta, work[0], work[1], work[2], np.empty(m)
    )


# dout, x_hat, dx (m, k), dx may be dout; gamma, inv_std, dgamma, dbeta (k,); db, dg,
# scale (k,) and col (m,) float64 scratch.
@jit
def batch_norm_backward_ws(dout, x_hat, gamma, inv_std, dx, dgamma, dbeta, db, dg, scale, col):
    """``batch_norm_backward`` on caller-given scratch (the whole-epoch kernel's); every
    element of dout is read before dx's element is written, so dx may be dout."""
    m, k = dout.shape
    if k == 1:  # NumPy reduces a single column pairwise
        for i in range(m):
            col[i] = dout[i, 0]
        db[0] = 0.0 + pairwise_sum(col, m)
        for i in range(m):
            col[i] = np.float64(dout[i, 0]) * np.float64(x_hat[i, 0])
        dg[0] = 0.0 + pairwise_sum(col, m)
    else:
        db[:] = 0.0
        dg[:] = 0.0
        for i in range(m):
            for j in range(k):
                d = np.float64(dout[i, j])
                db[j] += d
                dg[j] += d * np.float64(x_hat[i, j])
    rows = np.float64(m)
    for j in range(k):
        # the factor per column, once (a division per element would dominate the pass)
        scale[j] = np.float64(gamma[j]) * np.float64(inv_std[j]) / rows
        dgamma[j] = dg[j]
        dbeta[j] = db[j]
    for i in range(m):
        for j in range(k):
            dx[i, j] = scale[j] * (
                (rows * np.float64(dout[i, j]) - db[j]) - np.float64(x_hat[i, j]) * dg[j]
            )
