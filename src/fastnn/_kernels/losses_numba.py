"""Numba kernels for the losses (contract: ``fastnn.reference.losses``).

Loss values are means in float64 summed in NumPy's pairwise order (``pairwise_sum``),
so they equal the reference's ``np.mean`` bit for bit; gradients with exp or log are
evaluated in float64 and rounded once. ``mse``/``mse_gradient`` take flat arrays, the
cross-entropies (m, k) logits, one row per sample. ``sample_weight`` is a float64 (m,)
array or empty (no weights): a weighted loss multiplies sample i's terms by w_i and
divides by S = sum w (pairwise, float64) where the unweighted one divides by m; the
row losses take w_i = 1.0 and S = m when unweighted, which changes no bit.
"""

import numpy as np

from ._numba_common import (
    PW_BLOCK,
    block_sum,
    cast_like,
    exp_f64,
    jit,
    jit_inline,
    log_f64,
    pairwise_combine,
    pairwise_descend,
    pairwise_stack,
    pairwise_sum,
    pairwise_sum_ws,
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
    "poisson",
    "poisson_gradient",
]

# NumPy's default ufunc buffer (np.getbufsize()): a float32 array averaged with
# dtype=float64 is cast and summed in chunks of this many elements.
_NUMPY_BUFSIZE = 8192


_SQUARED_ERROR, _POISSON = 0, 1  # the terms _pairwise_terms adds


@jit
def _block_terms(u, v, w, k, lo, n, buf, kind):
    """Sum of one block of terms: (u[i] - v[i])^2 (in the array dtype, then widened) or
    e^u - v u (in float64); times w[i // k] (float64) when w is not empty."""
    if kind == _SQUARED_ERROR:
        for j in range(n):
            d = u[lo + j] - v[lo + j]
            buf[j] = d * d
    else:
        for j in range(n):
            x = np.float64(u[lo + j])
            buf[j] = np.exp(x) - np.float64(v[lo + j]) * x
    if w.size:
        for j in range(n):
            buf[j] = w[(lo + j) // k] * buf[j]
    return block_sum(buf, np.intp(0), n)


@jit
def _pairwise_terms(u, v, w, k, lo, n, buf, nodes, sums, kind):
    """Float64 sum of the terms of ``kind`` for i in [lo, lo + n), n >= 1, in NumPy's
    pairwise order, weighted by w (k elements per sample) unless w is empty; buf a
    float64 block (PW_BLOCK), (nodes, sums) a float64 ``pairwise_stack``."""
    if n <= PW_BLOCK:
        return _block_terms(u, v, w, k, lo, n, buf, kind)
    sp, cnt = pairwise_descend(nodes, 0, lo, n)
    while True:
        block = _block_terms(u, v, w, k, lo, cnt, buf, kind)
        sp, total, lo, n = pairwise_combine(nodes, sums, sp, block)
        if n == 0:
            return total
        sp, cnt = pairwise_descend(nodes, sp, lo, n)


# The row helpers that take arrays are plain calls, not inlined at Numba's IR level:
# inlined, their array arguments become references of the caller's row loop, each
# taken and dropped with an atomic increment (Numba's NRT), which cost config A's
# softmax cross-entropy a third of its time (6.6 vs 4.5 us per 64 x 3 batch).
@jit
def _weight_sum(w, m, nodes, sums):
    """S = the float64 pairwise sum of the weights (NumPy's np.sum), or m unweighted."""
    if w.size == 0:
        return np.float64(m)
    return 0.0 + pairwise_sum_ws(w, w.size, nodes, sums)


@jit
def _weight(w, i):
    """w[i], or 1.0 without weights (x * 1.0 is x: the unweighted bits)."""
    return w[i] if w.size else 1.0


@jit
def _per_sample(w, size):
    """Elements per sample of a flat loss: size / m, 1 without weights."""
    return size // w.size if w.size else 1


@jit
def mse(y_pred, y, sample_weight):
    """L = mean((y_pred - y)^2) over flat arrays, accumulated in float64; weighted
    sum_i w_i sum_j d_ij^2 / (S k)."""
    buf = np.empty(PW_BLOCK)
    nodes, sums = pairwise_stack(buf)
    return mse_ws(y_pred, y, sample_weight, buf, nodes, sums)


@jit
def mse_ws(y_pred, y, w, buf, nodes, sums):
    """mse with its scratch given: buf float64 (>= PW_BLOCK), (nodes, sums) a float64
    ``pairwise_stack``."""
    n = y_pred.size
    k = _per_sample(w, n)
    # NumPy sums float64 in one pairwise run, float32 cast buffer by buffer
    chunk = n if y_pred.itemsize == 8 else _NUMPY_BUFSIZE
    total = 0.0
    for lo in range(0, n, chunk):
        total += _pairwise_terms(
            y_pred, y, w, k, lo, min(chunk, n - lo), buf, nodes, sums, _SQUARED_ERROR
        )
    if w.size == 0:
        return total / n
    return total / (_weight_sum(w, 0, nodes, sums) * k)


@jit
def mse_gradient(y_pred, y, out, sample_weight):
    """out = 2 (y_pred - y) / size over flat arrays, in the array dtype; weighted
    (2 w_i) (y_pred - y) / (S k) in float64 (the difference in the array dtype),
    rounded once."""
    w = sample_weight
    if w.size == 0:
        two = cast_like(y_pred, 2.0)
        size = cast_like(y_pred, y_pred.size)
        for i in range(y_pred.size):
            out[i] = two * (y_pred[i] - y[i]) / size
        return
    k = _per_sample(w, y_pred.size)
    norm = 0.0 + pairwise_sum(w, w.size)
    norm = norm * k
    for i in range(y_pred.size):
        out[i] = ((2.0 * w[i // k]) * np.float64(y_pred[i] - y[i])) / norm


# --- binary cross-entropy: terms in float64 -------------------------------------------


@jit_inline
def _bce_term(x, y, e):
    """max(x, 0) - x y + log(1 + e), e = exp(-|x|); max as np.maximum (NaN stays)."""
    return ((0.0 if x <= 0 else x) - x * y) + np.log1p(e)


@jit_inline
def _bce_grad(x, y, e, wi, norm):
    """(wi (sigmoid(x) - y)) / norm from e = exp(-|x|); the branch on the sign keeps
    e <= 1."""
    s = 1.0 / (1.0 + e) if x >= 0 else e / (1.0 + e)
    return (wi * (s - y)) / norm


@jit
def binary_cross_entropy(z, y, sample_weight):
    """L = mean over the m rows of sum_k (max(z, 0) - z y + log(1 + e^-|z|)); z, y
    (m, k); weighted sum_i w_i row_i / S."""
    terms = np.empty(z.shape[1])
    rows = np.empty(z.shape[0])
    nodes, sums = pairwise_stack(rows)
    return binary_cross_entropy_ws(z, y, sample_weight, terms, rows, nodes, sums)


@jit
def binary_cross_entropy_ws(z, y, w, terms, rows, nodes, sums):
    """binary_cross_entropy with float64 scratch terms (>= k), rows (>= m) and a float64
    ``pairwise_stack``. Terms in float64; each row's sum and the mean over rows are
    pairwise, as NumPy's."""
    m, k = z.shape
    for i in range(m):
        for j in range(k):
            x = np.float64(z[i, j])
            terms[j] = _bce_term(x, np.float64(y[i, j]), np.exp(-np.abs(x)))
        rows[i] = _weight(w, i) * (0.0 + pairwise_sum_ws(terms, k, nodes, sums))
    return (0.0 + pairwise_sum_ws(rows, m, nodes, sums)) / _weight_sum(w, m, nodes, sums)


@jit
def binary_cross_entropy_gradient(z, y, out, sample_weight):
    """out = (w_i (sigmoid(z) - y)) / S (w_i = 1, S = m unweighted), z (m, k), float64
    inside."""
    w = sample_weight
    m, k = z.shape
    nodes, sums = pairwise_stack(np.empty(0))
    norm = _weight_sum(w, m, nodes, sums)
    for i in range(m):
        wi = _weight(w, i)
        for j in range(k):
            x = np.float64(z[i, j])
            out[i, j] = _bce_grad(x, np.float64(y[i, j]), np.exp(-np.abs(x)), wi, norm)


@jit
def binary_cross_entropy_and_gradient(z, y, w, out, terms, rows, nodes, sums):
    """(binary_cross_entropy(z, y, w), rows right) with its gradient written into out,
    one exp per element (the two kernels' values exactly). A row is right when every
    column's (z > 0) equals (y > 0.5)."""
    m, k = z.shape
    norm = _weight_sum(w, m, nodes, sums)
    correct = 0
    for i in range(m):
        right = True
        wi = _weight(w, i)
        for j in range(k):
            x = np.float64(z[i, j])
            t = np.float64(y[i, j])
            e = np.exp(-np.abs(x))
            terms[j] = _bce_term(x, t, e)
            out[i, j] = _bce_grad(x, t, e, wi, norm)
            right = right and (x > 0) == (t > 0.5)
        rows[i] = wi * (0.0 + pairwise_sum_ws(terms, k, nodes, sums))
        correct += right
    return (0.0 + pairwise_sum_ws(rows, m, nodes, sums)) / norm, correct


# --- softmax cross-entropy ------------------------------------------------------------


# The row helpers take the arrays they index and call nothing: a helper called per row
# that passes an array on to another call takes a reference to it with an atomic
# increment in every row (Numba's NRT), so the kernels' row loops call pairwise_sum_ws
# themselves.
@jit
def _row_max_at(z, i):
    """(max of row i of z in float64, index of its first maximum): np.max's value (a
    NaN wins) and np.argmax's index unless the row holds NaN (then the loss is NaN)."""
    mx = np.float64(z[i, 0])
    at = 0
    for j in range(1, z.shape[1]):
        x = np.float64(z[i, j])
        # NaN wins, as in ndarray.max; both tests, without short-circuit: a select,
        # not an unpredictable branch
        if (x > mx) | (x != x):
            mx = x
            at = j
    return mx, at


@jit
def _softmax_block(z, i0, m, e):
    """The rows i0 .. i0 + r - 1 of z that fit in e (r >= 1, at most m - i0; one row when
    k > PW_BLOCK): e[q k + j] = exp(z[i0 + q, j] - max) in float64, through NumPy's exp
    loop once for all of them (a vector loop over a batch of small softmaxes). Returns r."""
    k = z.shape[1]
    r = 1 if k > PW_BLOCK else min(m - i0, max(1, e.size // k))
    for q in range(r):
        mx, _ = _row_max_at(z, i0 + q)
        for j in range(k):
            e[q * k + j] = np.float64(z[i0 + q, j]) - mx
    exp_f64(e, 0, r * k)
    return r


@jit
def _argmax_row(a, i):
    """np.argmax(a[i]): the first NaN, else the first maximum."""
    at = 0
    best = a[i, 0]
    for j in range(1, a.shape[1]):
        if best != best:
            break
        v = a[i, j]
        if v > best or v != v:
            at = j
            best = v
    return at


@jit
def _ce_terms_row(z, y, i, mx, log_s, terms):
    """terms[j] = y_j (z_j - max - log s) of row i (float64): the row's loss is minus
    their pairwise sum."""
    for j in range(z.shape[1]):
        terms[j] = np.float64(y[i, j]) * ((np.float64(z[i, j]) - mx) - log_s)


@jit
def cross_entropy(z, y, sample_weight):
    """L = mean over rows of -sum_k y_k log softmax(z)_k; z, y (m, k); weighted
    sum_i w_i l_i / S."""
    no_labels, no_grad = np.empty(0, np.int64), np.empty((0, z.shape[1]), z.dtype)
    return _softmax_cross_entropy_alone(z, y, no_labels, sample_weight, no_grad)[0]


@jit
def cross_entropy_gradient(z, y, out, sample_weight):
    """out = (w_i (softmax(z) - y)) / S (w_i = 1, S = m unweighted), z, y, out (m, k),
    float64 inside (the fused kernel's, its loss dropped)."""
    _softmax_cross_entropy_alone(z, y, np.empty(0, np.int64), sample_weight, out)


@jit
def sparse_cross_entropy(z, labels, sample_weight):
    """L = mean over rows of logsumexp(z) - z[label]; labels int64 (m,); weighted
    sum_i w_i l_i / S."""
    if z.shape[0] == 0:
        return np.nan  # the mean of no sample, as np.mean
    no_grad = np.empty((0, z.shape[1]), z.dtype)
    return _softmax_cross_entropy_alone(z, z[:, :0], labels, sample_weight, no_grad)[0]


@jit
def sparse_cross_entropy_gradient(z, labels, out, sample_weight):
    """out = (w_i (softmax(z) - onehot(labels))) / S (w_i = 1, S = m unweighted),
    float64 inside (the fused kernel's, its loss dropped)."""
    _softmax_cross_entropy_alone(z, z[:, :0], labels, sample_weight, out)


@jit
def _softmax_cross_entropy_alone(z, y, labels, w, out):
    """softmax_cross_entropy_and_gradient with its scratch allocated here (the epoch
    kernel keeps its own): the four kernels above."""
    m, k = z.shape
    e, terms, rows = np.empty(max(k, PW_BLOCK)), np.empty(k), np.empty(m)
    nodes, sums = pairwise_stack(rows)
    return softmax_cross_entropy_and_gradient(z, y, labels, w, out, e, terms, rows, nodes, sums)


@jit
def softmax_cross_entropy_and_gradient(z, y, labels, w, out, e, terms, rows, nodes, sums):
    """(cross_entropy(z, y, w) or sparse_cross_entropy(z, labels, w), rows right) with
    the gradient written into out (unless out has no rows), each row's softmax computed
    once (the two kernels' values exactly): targets y (m, k), or class indices labels
    (m,) when y has no columns. float64 scratch e, terms (>= k), rows (>= m) and a float64
    stack. A row is right when the first maximum of z is at its label, or at the first
    maximum of y.

    The rows go by blocks (_softmax_block): their exps, each row's sum (pairwise, as
    np.sum), the gradient rows, NumPy's log of the block's sums at once, then each
    row's loss term (rows[i] holds the sum, then its log, then the term)."""
    m, k = z.shape
    sparse = y.shape[1] == 0
    norm = _weight_sum(w, m, nodes, sums)
    grad = out.shape[0] > 0
    correct = 0
    i0 = 0
    while i0 < m:
        r = _softmax_block(z, i0, m, e)
        for q in range(r):
            i = i0 + q
            # (when k > PW_BLOCK, q = 0: one row a block)
            s = block_sum(e, q * k, k) if k <= PW_BLOCK else pairwise_sum_ws(e, k, nodes, sums)
            if grad:  # w_i (softmax - target) in place of the exps
                wi = _weight(w, i)
                for j in range(k):
                    g = e[q * k + j] / s
                    if not sparse:
                        g = g - np.float64(y[i, j])
                    elif j == labels[i]:
                        g -= 1.0
                    e[q * k + j] = wi * g
            rows[i] = s
        if grad:  # over norm, the block's rows after their sums (independent divisions)
            for q in range(r):
                for j in range(k):
                    out[i0 + q, j] = e[q * k + j] / norm
        log_f64(rows, i0, r)
        for i in range(i0, i0 + r):
            mx, at = _row_max_at(z, i)
            if sparse:
                label = labels[i]
                rows[i] = _weight(w, i) * (rows[i] - (np.float64(z[i, label]) - mx))
                correct += at == label
            else:
                _ce_terms_row(z, y, i, mx, rows[i], terms)
                rows[i] = _weight(w, i) * -(0.0 + pairwise_sum_ws(terms, k, nodes, sums))
                correct += at == _argmax_row(y, i)
        i0 += r
    return (0.0 + pairwise_sum_ws(rows, m, nodes, sums)) / norm, correct


# --- Poisson (log link): terms in float64 ---------------------------------------------


@jit
def poisson(z, y, sample_weight):
    """L = mean(e^z - y z) over flat arrays, the terms in float64, one pairwise sum;
    weighted sum_i w_i sum_j (e^z - y z)_ij / (S k)."""
    buf = np.empty(PW_BLOCK)
    nodes, sums = pairwise_stack(buf)
    return poisson_ws(z, y, sample_weight, buf, nodes, sums)


@jit
def poisson_ws(z, y, w, buf, nodes, sums):
    """poisson with the scratch of ``mse_ws``."""
    n = z.size
    k = _per_sample(w, n)
    total = _pairwise_terms(z, y, w, k, 0, n, buf, nodes, sums, _POISSON)
    if w.size == 0:
        return total / n
    return total / (_weight_sum(w, 0, nodes, sums) * k)


@jit
def poisson_gradient(z, y, out, sample_weight):
    """out = (w_i (e^z - y)) / (S k) over flat arrays (w_i = 1, S k = size unweighted),
    in float64, rounded once."""
    w = sample_weight
    k = _per_sample(w, z.size)
    norm = np.float64(z.size)
    if w.size:
        norm = (0.0 + pairwise_sum(w, w.size)) * k
    for i in range(z.size):
        out[i] = (_weight(w, i // k) * (np.exp(np.float64(z[i])) - np.float64(y[i]))) / norm
