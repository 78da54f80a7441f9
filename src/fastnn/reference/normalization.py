"""Inverted dropout and batch normalisation (docs/spec.md §7).

Batch statistics are reductions over the m rows of a (m, k) batch; they are
accumulated in float64, row after row, and the normalised values rounded once to the
array dtype. The affine part ``gamma * x_hat + beta`` is evaluated in the array dtype.
"""

import numpy as np

__all__ = [
    "dropout",
    "batch_norm_train",
    "batch_norm_eval",
    "batch_norm_backward",
]


def _wide(x):
    return np.asarray(x, dtype=np.float64)


def dropout(x, mask, rate, out):
    """out = mask * x / (1 - rate): inverted dropout given a keep mask (bool or uint8).

    The same formula carries the gradient backwards (dx = mask * dout / (1 - rate)).
    """
    out[...] = mask * x / (1 - rate)
    return out


def batch_norm_train(x, gamma, beta, eps, momentum, running_mean, running_var, out, x_hat, inv_std):
    """Normalise x (m, k) with its batch statistics and update the running ones.

    mu = mean(x), var = mean((x - mu)^2) (biased), inv_std = 1 / sqrt(var + eps),
    x_hat = (x - mu) inv_std, out = gamma x_hat + beta. Running statistics move by
    ``momentum`` towards mu and the unbiased variance var m / (m - 1), as PyTorch does.
    ``x_hat`` (m, k) and ``inv_std`` (k,) are saved for the backward pass. Needs m >= 2.
    """
    m = x.shape[0]
    xw = _wide(x)
    mean = xw.mean(axis=0)
    var = ((xw - mean) ** 2).mean(axis=0)
    inv = 1 / np.sqrt(var + eps)
    x_hat[...] = (xw - mean) * inv
    inv_std[...] = inv
    out[...] = gamma * x_hat + beta
    running_mean[...] = (1 - momentum) * _wide(running_mean) + momentum * mean
    running_var[...] = (1 - momentum) * _wide(running_var) + momentum * (var * m / (m - 1))
    return out


def batch_norm_eval(x, gamma, beta, running_mean, running_var, eps, out):
    """out = gamma (x - running_mean) / sqrt(running_var + eps) + beta."""
    inv = 1 / np.sqrt(_wide(running_var) + eps)
    x_hat = ((_wide(x) - _wide(running_mean)) * inv).astype(x.dtype)
    out[...] = gamma * x_hat + beta
    return out


def batch_norm_backward(dout, x_hat, gamma, inv_std, dx, dgamma, dbeta):
    """Gradients of batch_norm_train: dbeta = sum dout, dgamma = sum dout x_hat,
    dx = gamma inv_std / m (m dout - dbeta - x_hat dgamma), sums over the m rows."""
    m = dout.shape[0]
    d, xh = _wide(dout), _wide(x_hat)
    db = d.sum(axis=0)
    dg = (d * xh).sum(axis=0)
    dx[...] = (_wide(gamma) * _wide(inv_std) / m) * (m * d - db - xh * dg)
    dgamma[...] = dg
    dbeta[...] = db
    return dx
