"""Losses on a batch of m samples and their gradients (docs/spec.md §4).

Logits in, stable formulas only: probabilities are never formed and then logged.
Contract shared by every backend:

- A loss returns a Python float: per-sample terms (in float64 where exp or log is
  involved) averaged in float64.
- A gradient is written into ``out`` (the shape and dtype of the prediction) and
  already holds the 1/m (or 1/size) factor. Gradients with exp or log are evaluated in
  float64 and rounded once; ``mse_gradient`` stays in the array dtype.
- ``mse`` and ``poisson`` work on 1-D arrays (the checked layer flattens); the
  cross-entropies on
  2-D (m, k) logits, one row per sample. ``y`` has the prediction's shape and dtype;
  ``labels`` are int64 class indices of shape (m,), each in [0, k).
"""

import numpy as np

__all__ = [
    "mse",
    "mse_gradient",
    "binary_cross_entropy",
    "binary_cross_entropy_gradient",
    "cross_entropy",
    "cross_entropy_gradient",
    "sparse_cross_entropy",
    "sparse_cross_entropy_gradient",
    "poisson",
    "poisson_gradient",
]


def _wide(x):
    return np.asarray(x, dtype=np.float64)


def mse(y_pred, y):
    """L = mean((y_pred - y)^2) over all elements."""
    d = y_pred - y
    return float(np.mean(d * d, dtype=np.float64))


def mse_gradient(y_pred, y, out):
    """dL/dy_pred = 2 (y_pred - y) / size."""
    out[...] = 2 * (y_pred - y) / y_pred.size
    return out


def binary_cross_entropy(z, y):
    """``L = mean over the m rows of sum_k (max(z, 0) - z y + log(1 + e^-|z|))``.

    Logits z and targets y in [0, 1] of shape (m, k): the k binary outputs of a sample
    add up and samples are averaged (docs/spec.md §4: a mean over the m samples), so
    that ``binary_cross_entropy_gradient``'s 1/m is exactly this loss's derivative.
    scikit-learn's multilabel log-loss uses the same convention; PyTorch's
    ``BCEWithLogitsLoss(reduction="mean")`` divides by m k instead.
    """
    z, y = _wide(z), _wide(y)
    terms = np.maximum(z, 0) - z * y + np.log1p(np.exp(-np.abs(z)))
    return float(np.mean(np.sum(terms, axis=1)))


def binary_cross_entropy_gradient(z, y, out):
    """dL/dz = (sigmoid(z) - y) / m, m = number of rows (samples)."""
    x = _wide(z)
    e = np.exp(-np.abs(x))
    s = np.where(x >= 0, 1 / (1 + e), e / (1 + e))
    out[...] = (s - _wide(y)) / z.shape[0]
    return out


def _shifted_exp(z):
    """(z - max z, e^(z - max z), sum of e^(z - max z)) per row, in float64."""
    x = _wide(z)
    shifted = x - x.max(axis=1, keepdims=True)
    e = np.exp(shifted)
    return shifted, e, e.sum(axis=1, keepdims=True)


def cross_entropy(z, y):
    """L = mean over rows of -sum_k y_k log softmax(z)_k, y one-hot (or soft), (m, k).

    log softmax(z)_k = (z_k - max z) - log sum_j e^(z_j - max z).
    """
    shifted, _, s = _shifted_exp(z)
    return float(np.mean(-np.sum(_wide(y) * (shifted - np.log(s)), axis=1)))


def cross_entropy_gradient(z, y, out):
    """dL/dz = (softmax(z) - y) / m for one-hot (or soft) targets y of shape (m, k)."""
    _, e, s = _shifted_exp(z)
    out[...] = (e / s - _wide(y)) / z.shape[0]
    return out


def sparse_cross_entropy(z, labels):
    """L = mean over rows of logsumexp(z) - z[label], labels int64 of shape (m,)."""
    shifted, _, s = _shifted_exp(z)
    picked = shifted[np.arange(z.shape[0]), labels]
    return float(np.mean(np.log(s[:, 0]) - picked))


def sparse_cross_entropy_gradient(z, labels, out):
    """dL/dz = (softmax(z) - onehot(labels)) / m."""
    _, e, s = _shifted_exp(z)
    g = e / s
    g[np.arange(z.shape[0]), labels] -= 1
    out[...] = g / z.shape[0]
    return out


def poisson(z, y):
    """``L = mean(e^z - y z)`` over all elements: the Poisson deviance with a log link,
    halved and without its constant terms; z is the log of the predicted mean."""
    x = _wide(z)
    with np.errstate(over="ignore"):
        terms = np.exp(x) - _wide(y) * x
    return float(np.mean(terms))


def poisson_gradient(z, y, out):
    """dL/dz = (e^z - y) / size, in float64, rounded once."""
    with np.errstate(over="ignore"):
        out[...] = (np.exp(_wide(z)) - _wide(y)) / z.size
    return out
