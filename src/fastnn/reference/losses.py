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
- ``sample_weight``: float64 per-sample weights of shape (m,) (for the flat ``mse`` and
  ``poisson``, m = size / k: sample i owns elements [i k, (i + 1) k)), or an empty
  array for no weights. Weighted, sample i's terms are multiplied by w_i (in float64)
  and the sample count m becomes the weight sum S = sum_i w_i (float64, NumPy's
  pairwise order): values are sum_i w_i l_i / S (mse and poisson: / (S k)), gradients
  w_i dl_i / S (docs/spec.md §4, "Sample weights"). Unit weights give the unweighted
  results bit for bit.
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


def _rows_weight(sample_weight, m):
    """(w as an (m, 1) float64 column, S) of non-empty weights."""
    w = np.asarray(sample_weight, dtype=np.float64)
    return w.reshape(m, 1), float(np.sum(w))


def _element_weight(sample_weight, size):
    """(w_i repeated over sample i's k elements (size,), S k) for the flat losses."""
    w = np.asarray(sample_weight, dtype=np.float64)
    k = size // w.size
    return np.repeat(w, k), float(np.sum(w)) * k


def mse(y_pred, y, sample_weight):
    """L = mean((y_pred - y)^2) over all elements; weighted sum_i w_i sum_j d_ij^2 / (S k).

    The square is taken in the array dtype; float32 terms are summed in NumPy's cast
    buffers (np.mean with dtype=float64), which the weighted sum keeps.
    """
    d = y_pred - y
    sq = d * d
    if not sample_weight.size:
        return float(np.mean(sq, dtype=np.float64))
    w, norm = _element_weight(sample_weight, sq.size)
    terms = w * sq.astype(np.float64)
    if sq.dtype == np.float64:
        return float(np.sum(terms) / norm)
    # NumPy's float32 mean with dtype=float64 sums buffer by buffer (8192 values)
    total = 0.0
    for lo in range(0, terms.size, 8192):
        total += np.sum(terms[lo : lo + 8192])
    return float(total / norm)


def mse_gradient(y_pred, y, out, sample_weight):
    """dL/dy_pred = 2 (y_pred - y) / size; weighted (2 w_i) (y_pred - y) / (S k) in
    float64 (y_pred - y in the array dtype), rounded once."""
    if not sample_weight.size:
        out[...] = 2 * (y_pred - y) / y_pred.size
        return out
    w, norm = _element_weight(sample_weight, y_pred.size)
    out[...] = (2.0 * w) * _wide(y_pred - y) / norm
    return out


def binary_cross_entropy(z, y, sample_weight):
    """``L = mean over the m rows of sum_k (max(z, 0) - z y + log(1 + e^-|z|))``.

    Logits z and targets y in [0, 1] of shape (m, k): the k binary outputs of a sample
    add up and samples are averaged (docs/spec.md §4: a mean over the m samples), so
    that ``binary_cross_entropy_gradient``'s 1/m is exactly this loss's derivative.
    scikit-learn's multilabel log-loss uses the same convention; PyTorch's
    ``BCEWithLogitsLoss(reduction="mean")`` divides by m k instead. Weighted: each
    row's sum times w_i, over S.
    """
    z, y = _wide(z), _wide(y)
    terms = np.maximum(z, 0) - z * y + np.log1p(np.exp(-np.abs(z)))
    return _row_mean(np.sum(terms, axis=1), sample_weight)


def _row_mean(rows, sample_weight):
    """mean of the per-sample losses rows (m,), or sum_i w_i rows_i / S."""
    if not sample_weight.size:
        return float(np.mean(rows))
    w = np.asarray(sample_weight, dtype=np.float64)
    return float(np.sum(w * rows) / np.sum(w))


def _row_gradient(diff, sample_weight, out):
    """out = diff / m, or (w_i diff_i) / S: diff (m, k) float64, rounded once."""
    if not sample_weight.size:
        out[...] = diff / diff.shape[0]
    else:
        w, total = _rows_weight(sample_weight, diff.shape[0])
        out[...] = (w * diff) / total
    return out


def binary_cross_entropy_gradient(z, y, out, sample_weight):
    """dL/dz = (sigmoid(z) - y) / m, m = number of rows (samples); weighted
    w_i (sigmoid(z) - y) / S."""
    x = _wide(z)
    e = np.exp(-np.abs(x))
    s = np.where(x >= 0, 1 / (1 + e), e / (1 + e))
    return _row_gradient(s - _wide(y), sample_weight, out)


def _shifted_exp(z):
    """(z - max z, e^(z - max z), sum of e^(z - max z)) per row, in float64."""
    x = _wide(z)
    shifted = x - x.max(axis=1, keepdims=True)
    e = np.exp(shifted)
    return shifted, e, e.sum(axis=1, keepdims=True)


def cross_entropy(z, y, sample_weight):
    """L = mean over rows of -sum_k y_k log softmax(z)_k, y one-hot (or soft), (m, k);
    weighted sum_i w_i l_i / S.

    log softmax(z)_k = (z_k - max z) - log sum_j e^(z_j - max z).
    """
    shifted, _, s = _shifted_exp(z)
    return _row_mean(-np.sum(_wide(y) * (shifted - np.log(s)), axis=1), sample_weight)


def cross_entropy_gradient(z, y, out, sample_weight):
    """dL/dz = (softmax(z) - y) / m for one-hot (or soft) targets y of shape (m, k);
    weighted w_i (softmax(z) - y) / S."""
    _, e, s = _shifted_exp(z)
    return _row_gradient(e / s - _wide(y), sample_weight, out)


def sparse_cross_entropy(z, labels, sample_weight):
    """L = mean over rows of logsumexp(z) - z[label], labels int64 of shape (m,);
    weighted sum_i w_i l_i / S."""
    shifted, _, s = _shifted_exp(z)
    picked = shifted[np.arange(z.shape[0]), labels]
    return _row_mean(np.log(s[:, 0]) - picked, sample_weight)


def sparse_cross_entropy_gradient(z, labels, out, sample_weight):
    """dL/dz = (softmax(z) - onehot(labels)) / m; weighted w_i (...) / S."""
    _, e, s = _shifted_exp(z)
    g = e / s
    g[np.arange(z.shape[0]), labels] -= 1
    return _row_gradient(g, sample_weight, out)


def poisson(z, y, sample_weight):
    """``L = mean(e^z - y z)`` over all elements: the Poisson deviance with a log link,
    halved and without its constant terms; z is the log of the predicted mean.
    Weighted: sum_i w_i sum_j (e^z - y z)_ij / (S k)."""
    x = _wide(z)
    with np.errstate(over="ignore"):
        terms = np.exp(x) - _wide(y) * x
    if not sample_weight.size:
        return float(np.mean(terms))
    w, norm = _element_weight(sample_weight, terms.size)
    return float(np.sum(w * terms) / norm)


def poisson_gradient(z, y, out, sample_weight):
    """dL/dz = (e^z - y) / size, in float64, rounded once; weighted
    w_i (e^z - y) / (S k)."""
    with np.errstate(over="ignore"):
        diff = np.exp(_wide(z)) - _wide(y)
    if not sample_weight.size:
        out[...] = diff / z.size
    else:
        w, norm = _element_weight(sample_weight, z.size)
        out[...] = (w * diff) / norm
    return out
