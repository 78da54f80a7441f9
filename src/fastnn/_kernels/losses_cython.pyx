"""Cython loss kernels: fastnn.reference.losses compiled, same names.

Losses return a Python float: per-sample terms in float64 (mse's square in the array
dtype, as the reference), added in NumPy's pairwise order, divided by the count.
Gradients with exp are evaluated in float64 and rounded once; mse_gradient stays in the
array dtype. Arguments come checked from ``fastnn.backend("cython")``.

Sample weights (``fastnn.reference.losses``): w a float64 array of the m samples, NULL
(an empty array in the wrappers) for none. Weighted, sample i's terms are multiplied by
w_i and the count m becomes S = sum w (pairwise); the row losses use w_i = 1, S = m
without weights, which changes no bit.
"""

from cython cimport floating
from libc.math cimport NAN, exp, fabs, log1p
from libc.stdint cimport int64_t
from libc.stdlib cimport free, malloc

from fastnn._kernels.activations_cython cimport relu_1, sigmoid_wide
from fastnn._kernels.blas_cython cimport PW_BLOCK, pw_block, pw_split, pw_sum

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

# NumPy's default ufunc buffer (np.getbufsize()). A float32 array averaged with
# dtype=float64 is cast through this buffer, and each buffer-full is summed pairwise
# on its own, the partial sums then added in order.
cdef enum:
    CAST_BUFSIZE = 8192


# --- helpers -------------------------------------------------------------------------

cdef inline double _weight(const double* w, Py_ssize_t i) noexcept nogil:
    """w[i], or 1.0 without weights (x * 1.0 is x)."""
    return 1.0 if w == NULL else w[i]


cdef inline double _weight_sum(const double* w, Py_ssize_t m) noexcept nogil:
    """S = pairwise float64 sum of the m weights (np.sum), or m without weights."""
    return <double>m if w == NULL else 0.0 + pw_sum(w, m)


cdef inline void _weigh(double* buf, Py_ssize_t n, const double* w, Py_ssize_t k,
                        Py_ssize_t lo) noexcept nogil:
    """buf[i] *= w[(lo + i) // k] (element lo + i belongs to sample (lo + i) // k)."""
    cdef Py_ssize_t i
    if w != NULL:
        for i in range(n):
            buf[i] = w[(lo + i) // k] * buf[i]


cdef double _sq_diff_sum(const floating* p, const floating* y, Py_ssize_t n,
                         const double* w, Py_ssize_t k, Py_ssize_t lo) noexcept nogil:
    """Pairwise float64 sum of (p - y)^2, the square taken in the array dtype; each
    term times its sample's weight (p[0] is element lo) unless w is NULL."""
    cdef double buf[PW_BLOCK]
    cdef floating d
    cdef Py_ssize_t i, n2
    if n <= PW_BLOCK:
        for i in range(n):
            d = p[i] - y[i]
            buf[i] = d * d
        _weigh(buf, n, w, k, lo)
        return pw_block(buf, n)
    n2 = pw_split(n)
    return (_sq_diff_sum(p, y, n2, w, k, lo)
            + _sq_diff_sum(p + n2, y + n2, n - n2, w, k, lo + n2))


cdef double _bce_sum(const floating* z, const floating* y, Py_ssize_t n) noexcept nogil:
    """Pairwise float64 sum of max(z, 0) - z y + log(1 + e^-|z|)."""
    cdef double buf[PW_BLOCK]
    cdef double x
    cdef Py_ssize_t i, n2
    if n <= PW_BLOCK:
        for i in range(n):
            x = z[i]
            buf[i] = (relu_1(x) - x * <double>y[i]) + log1p(exp(-fabs(x)))
        return pw_block(buf, n)
    n2 = pw_split(n)
    return _bce_sum(z, y, n2) + _bce_sum(z + n2, y + n2, n - n2)


cdef double _poisson_sum(const floating* z, const floating* y, Py_ssize_t n,
                         const double* w, Py_ssize_t k, Py_ssize_t lo) noexcept nogil:
    """Pairwise float64 sum of e^z - y z, weighted as _sq_diff_sum."""
    cdef double buf[PW_BLOCK]
    cdef double x
    cdef Py_ssize_t i, n2
    if n <= PW_BLOCK:
        for i in range(n):
            x = z[i]
            buf[i] = exp(x) - <double>y[i] * x
        _weigh(buf, n, w, k, lo)
        return pw_block(buf, n)
    n2 = pw_split(n)
    return (_poisson_sum(z, y, n2, w, k, lo)
            + _poisson_sum(z + n2, y + n2, n - n2, w, k, lo + n2))


cdef double _bce_rows(const floating* z, const floating* y, Py_ssize_t m,
                      Py_ssize_t k, const double* w) noexcept nogil:
    """Pairwise sum over rows of each row's own sum of the k binary terms (times w_i)."""
    cdef double buf[PW_BLOCK]
    cdef Py_ssize_t i, m2
    if m <= PW_BLOCK:
        for i in range(m):
            buf[i] = _weight(w, i) * (0.0 + _bce_sum(z + i * k, y + i * k, k))
        return pw_block(buf, m)
    m2 = pw_split(m)
    return (_bce_rows(z, y, m2, k, w)
            + _bce_rows(z + m2 * k, y + m2 * k, m - m2, k, NULL if w == NULL else w + m2))


cdef inline double _row_max(const floating* row, Py_ssize_t k) noexcept nogil:
    """max of a row as np.max: a NaN wins and stays."""
    cdef double mx = row[0], v
    cdef Py_ssize_t j
    for j in range(1, k):
        v = row[j]
        # both tests, without short-circuit: a select, not an unpredictable branch
        if (v > mx) | (v != v):
            mx = v
    return mx


# NumPy's own float64 exp and log loops, the reference's (numpy_loops.py says why): set
# once at import. Handed a batch of rows' values at once, the loop runs as a vector loop.
ctypedef int (*ufunc_loop)(void* context, char** data, const Py_ssize_t* n,
                           const Py_ssize_t* strides, void* auxdata) noexcept nogil

cdef struct NumpyLoop:
    ufunc_loop fn
    void* context
    void* auxdata

from fastnn._kernels.numpy_loops import loop_addresses as _loop_addresses


cdef NumpyLoop _numpy_loop_of(str name):
    fn, context, auxdata = _loop_addresses(name)
    return NumpyLoop(<ufunc_loop><size_t>fn, <void*><size_t>context, <void*><size_t>auxdata)


cdef NumpyLoop NUMPY_EXP = _numpy_loop_of("exp")
cdef NumpyLoop NUMPY_LOG = _numpy_loop_of("log")


cdef inline void numpy_loop(NumpyLoop* f, double* x, Py_ssize_t n) noexcept nogil:
    """x[:n] = f(x[:n]) in place through NumPy's float64 loop f."""
    cdef char* data[2]
    cdef Py_ssize_t strides[2]
    data[0] = <char*>x
    data[1] = <char*>x
    strides[0] = sizeof(double)
    strides[1] = sizeof(double)
    f.fn(f.context, data, &n, strides, f.auxdata)


cdef enum:
    # shifted logits exponentiated per call in the row loops below: the rows of small
    # softmaxes (k of a few classes) go through NumPy's vector loop together
    EXP_BATCH = 256


cdef inline Py_ssize_t _exp_rows(const floating* z, Py_ssize_t m, Py_ssize_t k,
                                 double* mxs, double* e) noexcept nogil:
    """e[i k + j] = e^(z[i, j] - mxs[i]) (NumPy's exp), mxs[i] = max z[i] (a NaN wins),
    for the first r = min(m, max(1, EXP_BATCH / k)) rows of z; returns r. e holds
    EXP_BATCH values, or k when k > EXP_BATCH (one row)."""
    cdef Py_ssize_t i, j, r = EXP_BATCH // k
    if r < 1:
        r = 1
    if r > m:
        r = m
    for i in range(r):
        mxs[i] = _row_max(z + i * k, k)
        for j in range(k):
            e[i * k + j] = <double>z[i * k + j] - mxs[i]
    numpy_loop(&NUMPY_EXP, e, r * k)
    return r


cdef inline double _ce_terms(const floating* z, const floating* y, Py_ssize_t k,
                             double mx, double log_s, double* work) noexcept nogil:
    """-sum_j y_j (z_j - mx - log_s) for one row, the terms summed in work."""
    cdef Py_ssize_t j
    for j in range(k):
        work[j] = <double>y[j] * ((<double>z[j] - mx) - log_s)
    return -(0.0 + pw_sum(work, k))


cdef double _ce_rows(const floating* z, const floating* y, const int64_t* labels,
                     Py_ssize_t m, Py_ssize_t k, floating* g, double norm, double* work,
                     const double* w) noexcept nogil:
    """Pairwise sum over rows of w_i l_i, l_i the row's softmax cross-entropy: with
    targets y (labels NULL) -sum_j y_j log softmax(z)_j, with class indices labels (y
    NULL) log sum e^(z - max z) - (z[label] - max z). Unless g is NULL, each row's
    gradient (w_i (softmax(z) - y or onehot(label)), over norm) is written as it goes:
    one softmax per row for both."""
    cdef double buf[PW_BLOCK]
    cdef double mxs[PW_BLOCK]
    cdef double logs[PW_BLOCK]
    cdef double batch[EXP_BATCH]
    cdef double sums[EXP_BATCH]
    cdef double* e = work if k > EXP_BATCH else &batch[0]
    cdef double s, wi
    cdef Py_ssize_t i, j, m2, i0 = 0, r, lab
    if m <= PW_BLOCK:
        while i0 < m:
            r = _exp_rows(z + i0 * k, m - i0, k, mxs + i0, e)
            for i in range(i0, i0 + r):
                logs[i] = 0.0 + pw_sum(e + (i - i0) * k, k)
            if g != NULL:
                # w_i (softmax - target) in place of the exps, by passes over the block
                # (vector loops; the same operations on each value as row by row): the
                # divisions by the row sums, spread over their values (one row of more
                # than EXP_BATCH classes: by its sum)
                if k <= EXP_BATCH:
                    for i in range(r):
                        for j in range(k):
                            sums[i * k + j] = logs[i0 + i]
                    for j in range(r * k):
                        e[j] = e[j] / sums[j]
                else:
                    s = logs[i0]
                    for j in range(k):
                        e[j] = e[j] / s
                if y != NULL:
                    for j in range(r * k):
                        e[j] = e[j] - <double>y[i0 * k + j]
                else:
                    for i in range(r):
                        lab = labels[i0 + i]
                        if 0 <= lab < k:
                            e[i * k + lab] = e[i * k + lab] - 1
                if w != NULL:  # (x * 1.0 is x: nothing to do without weights)
                    for i in range(r):
                        wi = w[i0 + i]
                        for j in range(k):
                            e[i * k + j] = wi * e[i * k + j]
            if g != NULL:  # over norm, the block at once (a vector loop of divisions)
                for j in range(r * k):
                    g[i0 * k + j] = <floating>(e[j] / norm)
            numpy_loop(&NUMPY_LOG, logs + i0, r)
            for i in range(i0, i0 + r):
                if y != NULL:
                    d = _ce_terms(z + i * k, y + i * k, k, mxs[i], logs[i], work)
                else:
                    d = logs[i] - (<double>z[i * k + labels[i]] - mxs[i])
                buf[i] = _weight(w, i) * d
            i0 = i0 + r
        return pw_block(buf, m)
    m2 = pw_split(m)
    return (_ce_rows(z, y, labels, m2, k, g, norm, work, w)
            + _ce_rows(z + m2 * k, NULL if y == NULL else y + m2 * k,
                       NULL if labels == NULL else labels + m2, m - m2, k,
                       NULL if g == NULL else g + m2 * k, norm, work,
                       NULL if w == NULL else w + m2))


# --- C-level kernels -----------------------------------------------------------------

cdef double c_mse(const floating* y_pred, const floating* y, Py_ssize_t n,
                  const double* w, Py_ssize_t k) noexcept nogil:
    """mean((y_pred - y)^2) over n values; weighted (w not NULL: n / k samples of k
    values) sum w_i d^2 / (S k)."""
    cdef double total = 0.0
    cdef Py_ssize_t start = 0, chunk
    if floating is float:
        while start < n:
            chunk = n - start if n - start < CAST_BUFSIZE else CAST_BUFSIZE
            total = total + _sq_diff_sum(y_pred + start, y + start, chunk, w, k, start)
            start = start + chunk
    else:
        total = total + _sq_diff_sum(y_pred, y, n, w, k, 0)
    if w == NULL:
        return total / n
    return total / (_weight_sum(w, n // k) * k)


cdef void c_mse_gradient(const floating* y_pred, const floating* y, Py_ssize_t n,
                         floating* out, const double* w, Py_ssize_t k) noexcept nogil:
    """out = 2 (y_pred - y) / n in the array dtype (n rounded to it, as NumPy does);
    weighted ((2 w_i) (y_pred - y)) / (S k) in float64, rounded once."""
    cdef floating two = 2
    cdef floating size = <floating>n
    cdef floating d
    cdef double norm
    cdef Py_ssize_t i
    if w == NULL:
        for i in range(n):
            out[i] = (two * (y_pred[i] - y[i])) / size
        return
    norm = _weight_sum(w, n // k) * k
    for i in range(n):
        d = y_pred[i] - y[i]
        out[i] = <floating>(((2.0 * w[i // k]) * <double>d) / norm)


cdef double c_poisson(const floating* z, const floating* y, Py_ssize_t n,
                      const double* w, Py_ssize_t k) noexcept nogil:
    """mean(e^z - y z) over n values, the terms in float64; weighted as c_mse."""
    cdef double total = 0.0 + _poisson_sum(z, y, n, w, k, 0)
    if w == NULL:
        return total / n
    return total / (_weight_sum(w, n // k) * k)


cdef void c_poisson_gradient(const floating* z, const floating* y, Py_ssize_t n,
                             floating* out, const double* w, Py_ssize_t k) noexcept nogil:
    """out = (w_i (e^z - y)) / (S k) (w_i = 1, S k = n unweighted), in float64, rounded
    once."""
    cdef Py_ssize_t i
    cdef double size = n
    if w != NULL:
        size = _weight_sum(w, n // k) * k
    else:
        k = 1
    for i in range(n):
        out[i] = <floating>((_weight(w, i // k) * (exp(<double>z[i]) - <double>y[i])) / size)


cdef double c_binary_cross_entropy(const floating* z, const floating* y, Py_ssize_t m,
                                   Py_ssize_t k, const double* w) noexcept nogil:
    """mean over the m rows of sum_k max(z, 0) - z y + log(1 + e^-|z|); weighted
    sum_i w_i row_i / S."""
    return (0.0 + _bce_rows(z, y, m, k, w)) / _weight_sum(w, m)


cdef void c_binary_cross_entropy_gradient(const floating* z, const floating* y,
                                          Py_ssize_t m, Py_ssize_t k, floating* out,
                                          const double* w) noexcept nogil:
    """out = (w_i (sigmoid(z) - y)) / S (w_i = 1, S = m unweighted), in float64,
    rounded once."""
    cdef Py_ssize_t i
    cdef double norm = _weight_sum(w, m)
    for i in range(m * k):
        out[i] = <floating>((_weight(w, i // k) * (sigmoid_wide(z[i]) - <double>y[i]))
                            / norm)


cdef double c_cross_entropy(const floating* z, const floating* y, Py_ssize_t m,
                            Py_ssize_t k, double* work, const double* w) noexcept nogil:
    """mean over rows of -sum_j y_j log softmax(z)_j; weighted sum_i w_i l_i / S."""
    cdef double norm = _weight_sum(w, m)
    return (0.0 + _ce_rows(z, y, <int64_t*>NULL, m, k, <floating*>NULL, norm, work, w)) / norm


cdef void c_cross_entropy_gradient(const floating* z, const floating* y, Py_ssize_t m,
                                   Py_ssize_t k, floating* out, double* work,
                                   const double* w) noexcept nogil:
    """out = (w_i (softmax(z) - y)) / S (w_i = 1, S = m unweighted), in float64, rounded
    once: c_cross_entropy_and_gradient's, the loss it computes on the way dropped (its
    rows' exps go through NumPy's loop by blocks, not a call per row)."""
    c_cross_entropy_and_gradient(z, y, m, k, out, work, w)


cdef double c_cross_entropy_and_gradient(const floating* z, const floating* y,
                                         Py_ssize_t m, Py_ssize_t k, floating* out,
                                         double* work, const double* w) noexcept nogil:
    """c_cross_entropy(z, y, m, k, work, w), with c_cross_entropy_gradient's out written
    on the way (the same values: each row's softmax computed once)."""
    cdef double norm = _weight_sum(w, m)
    return (0.0 + _ce_rows(z, y, <int64_t*>NULL, m, k, out, norm, work, w)) / norm


cdef double c_sparse_cross_entropy_and_gradient(const floating* z, const int64_t* labels,
                                                Py_ssize_t m, Py_ssize_t k, floating* out,
                                                double* work,
                                                const double* w) noexcept nogil:
    """c_sparse_cross_entropy and its gradient into out, each row's softmax computed
    once (the two kernels' values exactly)."""
    cdef double norm = _weight_sum(w, m)
    return (0.0 + _ce_rows(z, <floating*>NULL, labels, m, k, out, norm, work, w)) / norm


cdef double c_sparse_cross_entropy(const floating* z, const int64_t* labels,
                                   Py_ssize_t m, Py_ssize_t k, double* work,
                                   const double* w) noexcept nogil:
    """mean over rows of logsumexp(z) - z[label]; weighted sum_i w_i l_i / S."""
    cdef double norm = _weight_sum(w, m)
    return (0.0 + _ce_rows(z, <floating*>NULL, labels, m, k, <floating*>NULL, norm, work,
                           w)) / norm


cdef void c_sparse_cross_entropy_gradient(const floating* z, const int64_t* labels,
                                          Py_ssize_t m, Py_ssize_t k, floating* out,
                                          double* work, const double* w) noexcept nogil:
    """out = (w_i (softmax(z) - onehot(labels))) / S, in float64, rounded once:
    c_sparse_cross_entropy_and_gradient's, the loss it computes on the way dropped."""
    c_sparse_cross_entropy_and_gradient(z, labels, m, k, out, work, w)


# --- Python wrappers (the reference's signatures) ------------------------------------

cdef double* _work(Py_ssize_t k) except NULL:
    cdef double* work = <double*>malloc(k * sizeof(double))
    if work == NULL:
        raise MemoryError()
    return work


cdef inline const double* _weights(const double[::1] sample_weight) noexcept nogil:
    """The weights' data, NULL for an empty array (no weights)."""
    return NULL if sample_weight.shape[0] == 0 else &sample_weight[0]


cdef inline Py_ssize_t _per_sample(Py_ssize_t n, const double[::1] sample_weight) noexcept nogil:
    """Values per sample of a flat loss: n / m, 1 without weights."""
    return 1 if sample_weight.shape[0] == 0 else n // sample_weight.shape[0]


def mse(const floating[::1] y_pred, const floating[::1] y,
        const double[::1] sample_weight):
    """mean((y_pred - y)^2); y_pred, y 1-D; sample_weight (m,) or empty. Returns a
    Python float."""
    cdef double res
    cdef Py_ssize_t n = y_pred.shape[0]
    if n == 0:
        return NAN
    with nogil:
        res = c_mse(&y_pred[0], &y[0], n, _weights(sample_weight),
                    _per_sample(n, sample_weight))
    return res


def mse_gradient(const floating[::1] y_pred, const floating[::1] y, floating[::1] out,
                 const double[::1] sample_weight):
    """out = 2 (y_pred - y) / size (weighted: 2 w_i (y_pred - y) / (S k)); all 1-D."""
    cdef Py_ssize_t n = y_pred.shape[0]
    if n:
        with nogil:
            c_mse_gradient(&y_pred[0], &y[0], n, &out[0], _weights(sample_weight),
                           _per_sample(n, sample_weight))


def binary_cross_entropy(const floating[:, ::1] z, const floating[:, ::1] y,
                         const double[::1] sample_weight):
    """mean over rows of sum_k (max(z, 0) - z y + log(1 + e^-|z|)); z, y (m, k).
    Returns a float."""
    cdef double res
    if z.shape[0] == 0 or z.shape[1] == 0:
        return NAN
    with nogil:
        res = c_binary_cross_entropy(&z[0, 0], &y[0, 0], z.shape[0], z.shape[1],
                                     _weights(sample_weight))
    return res


def binary_cross_entropy_gradient(const floating[:, ::1] z, const floating[:, ::1] y,
                                  floating[:, ::1] out, const double[::1] sample_weight):
    """out = (sigmoid(z) - y) / m (weighted: w_i (...) / S); z, y, out (m, k)."""
    if z.shape[0] and z.shape[1]:
        with nogil:
            c_binary_cross_entropy_gradient(&z[0, 0], &y[0, 0], z.shape[0], z.shape[1],
                                            &out[0, 0], _weights(sample_weight))


def cross_entropy(const floating[:, ::1] z, const floating[:, ::1] y,
                  const double[::1] sample_weight):
    """mean over rows of -sum_k y_k log softmax(z)_k; z, y (m, k). Returns a float."""
    cdef Py_ssize_t m = z.shape[0], k = z.shape[1]
    cdef double res
    cdef double* work
    if m == 0 or k == 0:
        return NAN
    work = _work(k)
    with nogil:
        res = c_cross_entropy(&z[0, 0], &y[0, 0], m, k, work, _weights(sample_weight))
    free(work)
    return res


def cross_entropy_gradient(const floating[:, ::1] z, const floating[:, ::1] y,
                           floating[:, ::1] out, const double[::1] sample_weight):
    """out = (softmax(z) - y) / m (weighted: w_i (...) / S); z, y, out (m, k)."""
    cdef Py_ssize_t m = z.shape[0], k = z.shape[1]
    cdef double* work
    if m == 0 or k == 0:
        return
    work = _work(k)
    with nogil:
        c_cross_entropy_gradient(&z[0, 0], &y[0, 0], m, k, &out[0, 0], work,
                                 _weights(sample_weight))
    free(work)


def sparse_cross_entropy(const floating[:, ::1] z, const int64_t[::1] labels,
                         const double[::1] sample_weight):
    """mean over rows of logsumexp(z) - z[label]; z (m, k), labels int64 (m,)."""
    cdef Py_ssize_t m = z.shape[0], k = z.shape[1]
    cdef double res
    cdef double* work
    if m == 0 or k == 0:
        return NAN
    work = _work(k)
    with nogil:
        res = c_sparse_cross_entropy(&z[0, 0], &labels[0], m, k, work,
                                     _weights(sample_weight))
    free(work)
    return res


def sparse_cross_entropy_gradient(const floating[:, ::1] z, const int64_t[::1] labels,
                                  floating[:, ::1] out, const double[::1] sample_weight):
    """out = (softmax(z) - onehot(labels)) / m (weighted: w_i (...) / S); z, out (m, k),
    labels int64 (m,)."""
    cdef Py_ssize_t m = z.shape[0], k = z.shape[1]
    cdef double* work
    if m == 0 or k == 0:
        return
    work = _work(k)
    with nogil:
        c_sparse_cross_entropy_gradient(&z[0, 0], &labels[0], m, k, &out[0, 0], work,
                                        _weights(sample_weight))
    free(work)


def poisson(const floating[::1] z, const floating[::1] y, const double[::1] sample_weight):
    """mean(e^z - y z); z, y 1-D. Returns a Python float."""
    cdef double res
    cdef Py_ssize_t n = z.shape[0]
    if n == 0:
        return NAN
    with nogil:
        res = c_poisson(&z[0], &y[0], n, _weights(sample_weight),
                        _per_sample(n, sample_weight))
    return res


def poisson_gradient(const floating[::1] z, const floating[::1] y, floating[::1] out,
                     const double[::1] sample_weight):
    """out = (e^z - y) / size (weighted: w_i (...) / (S k)); all 1-D."""
    cdef Py_ssize_t n = z.shape[0]
    if n:
        with nogil:
            c_poisson_gradient(&z[0], &y[0], n, &out[0], _weights(sample_weight),
                               _per_sample(n, sample_weight))
