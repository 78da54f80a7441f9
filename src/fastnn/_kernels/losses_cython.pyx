"""Cython loss kernels: fastnn.reference.losses compiled, same names.

Losses return a Python float: per-sample terms in float64 (mse's square in the array
dtype, as the reference), added in NumPy's pairwise order, divided by the count.
Gradients with exp are evaluated in float64 and rounded once; mse_gradient stays in the
array dtype. Arguments come checked from ``fastnn.backend("cython")``.
"""

from cython cimport floating
from libc.math cimport NAN, exp, fabs, log, log1p
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

cdef double _sq_diff_sum(const floating* p, const floating* y,
                         Py_ssize_t n) noexcept nogil:
    """Pairwise float64 sum of (p - y)^2, the square taken in the array dtype."""
    cdef double buf[PW_BLOCK]
    cdef floating d
    cdef Py_ssize_t i, n2
    if n <= PW_BLOCK:
        for i in range(n):
            d = p[i] - y[i]
            buf[i] = d * d
        return pw_block(buf, n)
    n2 = pw_split(n)
    return _sq_diff_sum(p, y, n2) + _sq_diff_sum(p + n2, y + n2, n - n2)


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


cdef double _poisson_sum(const floating* z, const floating* y,
                         Py_ssize_t n) noexcept nogil:
    """Pairwise float64 sum of e^z - y z."""
    cdef double buf[PW_BLOCK]
    cdef double x
    cdef Py_ssize_t i, n2
    if n <= PW_BLOCK:
        for i in range(n):
            x = z[i]
            buf[i] = exp(x) - <double>y[i] * x
        return pw_block(buf, n)
    n2 = pw_split(n)
    return _poisson_sum(z, y, n2) + _poisson_sum(z + n2, y + n2, n - n2)


cdef double _bce_rows(const floating* z, const floating* y, Py_ssize_t m,
                      Py_ssize_t k) noexcept nogil:
    """Pairwise sum over rows of each row's own sum of the k binary terms."""
    cdef double buf[PW_BLOCK]
    cdef Py_ssize_t i, m2
    if m <= PW_BLOCK:
        for i in range(m):
            buf[i] = 0.0 + _bce_sum(z + i * k, y + i * k, k)
        return pw_block(buf, m)
    m2 = pw_split(m)
    return _bce_rows(z, y, m2, k) + _bce_rows(z + m2 * k, y + m2 * k, m - m2, k)


cdef inline double _row_max(const floating* row, Py_ssize_t k) noexcept nogil:
    """max of a row as np.max: a NaN wins and stays."""
    cdef double mx = row[0], v
    cdef Py_ssize_t j
    for j in range(1, k):
        v = row[j]
        if v > mx or v != v:
            mx = v
    return mx


cdef inline double _exp_shifted(const floating* row, Py_ssize_t k, double mx,
                                double* e) noexcept nogil:
    """e = e^(row - mx); returns their sum in NumPy's pairwise order."""
    cdef Py_ssize_t j
    for j in range(k):
        e[j] = exp(<double>row[j] - mx)
    return 0.0 + pw_sum(e, k)


cdef double _ce_row(const floating* z, const floating* y, Py_ssize_t k,
                    double* work) noexcept nogil:
    """-sum_j y_j (z_j - max z - log sum e^(z - max z)) for one row."""
    cdef double mx = _row_max(z, k)
    cdef double log_s = log(_exp_shifted(z, k, mx, work))
    cdef Py_ssize_t j
    for j in range(k):
        work[j] = <double>y[j] * ((<double>z[j] - mx) - log_s)
    return -(0.0 + pw_sum(work, k))


cdef double _ce_rows(const floating* z, const floating* y, Py_ssize_t m, Py_ssize_t k,
                     double* work) noexcept nogil:
    """Pairwise sum over rows of _ce_row."""
    cdef double buf[PW_BLOCK]
    cdef Py_ssize_t i, m2
    if m <= PW_BLOCK:
        for i in range(m):
            buf[i] = _ce_row(z + i * k, y + i * k, k, work)
        return pw_block(buf, m)
    m2 = pw_split(m)
    return (_ce_rows(z, y, m2, k, work)
            + _ce_rows(z + m2 * k, y + m2 * k, m - m2, k, work))


cdef double _sparse_ce_rows(const floating* z, const int64_t* labels, Py_ssize_t m,
                            Py_ssize_t k, double* work) noexcept nogil:
    """Pairwise sum over rows of log sum e^(z - max z) - (z[label] - max z)."""
    cdef double buf[PW_BLOCK]
    cdef double mx
    cdef Py_ssize_t i, m2
    if m <= PW_BLOCK:
        for i in range(m):
            mx = _row_max(z + i * k, k)
            buf[i] = (log(_exp_shifted(z + i * k, k, mx, work))
                      - (<double>z[i * k + labels[i]] - mx))
        return pw_block(buf, m)
    m2 = pw_split(m)
    return (_sparse_ce_rows(z, labels, m2, k, work)
            + _sparse_ce_rows(z + m2 * k, labels + m2, m - m2, k, work))


# --- C-level kernels -----------------------------------------------------------------

cdef double c_mse(const floating* y_pred, const floating* y, Py_ssize_t n) noexcept nogil:
    """mean((y_pred - y)^2) over n values."""
    cdef double total = 0.0
    cdef Py_ssize_t start = 0, chunk
    if floating is float:
        while start < n:
            chunk = n - start if n - start < CAST_BUFSIZE else CAST_BUFSIZE
            total = total + _sq_diff_sum(y_pred + start, y + start, chunk)
            start = start + chunk
    else:
        total = total + _sq_diff_sum(y_pred, y, n)
    return total / n


cdef void c_mse_gradient(const floating* y_pred, const floating* y, Py_ssize_t n,
                         floating* out) noexcept nogil:
    """out = 2 (y_pred - y) / n in the array dtype (n rounded to it, as NumPy does)."""
    cdef floating two = 2
    cdef floating size = <floating>n
    cdef Py_ssize_t i
    for i in range(n):
        out[i] = (two * (y_pred[i] - y[i])) / size


cdef double c_poisson(const floating* z, const floating* y, Py_ssize_t n) noexcept nogil:
    """mean(e^z - y z) over n values, the terms in float64."""
    return (0.0 + _poisson_sum(z, y, n)) / n


cdef void c_poisson_gradient(const floating* z, const floating* y, Py_ssize_t n,
                             floating* out) noexcept nogil:
    """out = (e^z - y) / n, in float64, rounded once."""
    cdef Py_ssize_t i
    cdef double size = n
    for i in range(n):
        out[i] = <floating>((exp(<double>z[i]) - <double>y[i]) / size)


cdef double c_binary_cross_entropy(const floating* z, const floating* y, Py_ssize_t m,
                                   Py_ssize_t k) noexcept nogil:
    """mean over the m rows of sum_k max(z, 0) - z y + log(1 + e^-|z|)."""
    return (0.0 + _bce_rows(z, y, m, k)) / m


cdef void c_binary_cross_entropy_gradient(const floating* z, const floating* y,
                                          Py_ssize_t m, Py_ssize_t k,
                                          floating* out) noexcept nogil:
    """out = (sigmoid(z) - y) / m, in float64, rounded once."""
    cdef Py_ssize_t i
    cdef double rows = m
    for i in range(m * k):
        out[i] = <floating>((sigmoid_wide(z[i]) - <double>y[i]) / rows)


cdef double c_cross_entropy(const floating* z, const floating* y, Py_ssize_t m,
                            Py_ssize_t k, double* work) noexcept nogil:
    """mean over rows of -sum_j y_j log softmax(z)_j."""
    return (0.0 + _ce_rows(z, y, m, k, work)) / m


cdef void c_cross_entropy_gradient(const floating* z, const floating* y, Py_ssize_t m,
                                   Py_ssize_t k, floating* out,
                                   double* work) noexcept nogil:
    """out = (softmax(z) - y) / m, in float64, rounded once."""
    cdef Py_ssize_t i, j
    cdef double s, rows = m
    for i in range(m):
        s = _exp_shifted(z + i * k, k, _row_max(z + i * k, k), work)
        for j in range(k):
            out[i * k + j] = <floating>((work[j] / s - <double>y[i * k + j]) / rows)


cdef double c_sparse_cross_entropy(const floating* z, const int64_t* labels,
                                   Py_ssize_t m, Py_ssize_t k,
                                   double* work) noexcept nogil:
    """mean over rows of logsumexp(z) - z[label]."""
    return (0.0 + _sparse_ce_rows(z, labels, m, k, work)) / m


cdef void c_sparse_cross_entropy_gradient(const floating* z, const int64_t* labels,
                                          Py_ssize_t m, Py_ssize_t k, floating* out,
                                          double* work) noexcept nogil:
    """out = (softmax(z) - onehot(labels)) / m, in float64, rounded once."""
    cdef Py_ssize_t i, j
    cdef double s, g, rows = m
    for i in range(m):
        s = _exp_shifted(z + i * k, k, _row_max(z + i * k, k), work)
        for j in range(k):
            g = work[j] / s
            if j == labels[i]:
                g = g - 1
            out[i * k + j] = <floating>(g / rows)


# --- Python wrappers (the reference's signatures) ------------------------------------

cdef double* _work(Py_ssize_t k) except NULL:
    cdef double* work = <double*>malloc(k * sizeof(double))
    if work == NULL:
        raise MemoryError()
    return work


def mse(const floating[::1] y_pred, const floating[::1] y):
    """mean((y_pred - y)^2); y_pred, y 1-D. Returns a Python float."""
    cdef double res
    if y_pred.shape[0] == 0:
        return NAN
    with nogil:
        res = c_mse(&y_pred[0], &y[0], y_pred.shape[0])
    return res


def mse_gradient(const floating[::1] y_pred, const floating[::1] y, floating[::1] out):
    """out = 2 (y_pred - y) / size; all 1-D."""
    if y_pred.shape[0]:
        with nogil:
            c_mse_gradient(&y_pred[0], &y[0], y_pred.shape[0], &out[0])


def binary_cross_entropy(const floating[:, ::1] z, const floating[:, ::1] y):
    """mean over rows of sum_k (max(z, 0) - z y + log(1 + e^-|z|)); z, y (m, k).
    Returns a float."""
    cdef double res
    if z.shape[0] == 0 or z.shape[1] == 0:
        return NAN
    with nogil:
        res = c_binary_cross_entropy(&z[0, 0], &y[0, 0], z.shape[0], z.shape[1])
    return res


def binary_cross_entropy_gradient(const floating[:, ::1] z, const floating[:, ::1] y,
                                  floating[:, ::1] out):
    """out = (sigmoid(z) - y) / m; z, y, out (m, k)."""
    if z.shape[0] and z.shape[1]:
        with nogil:
            c_binary_cross_entropy_gradient(&z[0, 0], &y[0, 0], z.shape[0], z.shape[1],
                                            &out[0, 0])


def cross_entropy(const floating[:, ::1] z, const floating[:, ::1] y):
    """mean over rows of -sum_k y_k log softmax(z)_k; z, y (m, k). Returns a float."""
    cdef Py_ssize_t m = z.shape[0], k = z.shape[1]
    cdef double res
    cdef double* work
    if m == 0 or k == 0:
        return NAN
    work = _work(k)
    with nogil:
        res = c_cross_entropy(&z[0, 0], &y[0, 0], m, k, work)
    free(work)
    return res


def cross_entropy_gradient(const floating[:, ::1] z, const floating[:, ::1] y,
                           floating[:, ::1] out):
    """out = (softmax(z) - y) / m; z, y, out (m, k)."""
    cdef Py_ssize_t m = z.shape[0], k = z.shape[1]
    cdef double* work
    if m == 0 or k == 0:
        return
    work = _work(k)
    with nogil:
        c_cross_entropy_gradient(&z[0, 0], &y[0, 0], m, k, &out[0, 0], work)
    free(work)


def sparse_cross_entropy(const floating[:, ::1] z, const int64_t[::1] labels):
    """mean over rows of logsumexp(z) - z[label]; z (m, k), labels int64 (m,)."""
    cdef Py_ssize_t m = z.shape[0], k = z.shape[1]
    cdef double res
    cdef double* work
    if m == 0 or k == 0:
        return NAN
    work = _work(k)
    with nogil:
        res = c_sparse_cross_entropy(&z[0, 0], &labels[0], m, k, work)
    free(work)
    return res


def sparse_cross_entropy_gradient(const floating[:, ::1] z, const int64_t[::1] labels,
                                  floating[:, ::1] out):
    """out = (softmax(z) - onehot(labels)) / m; z, out (m, k), labels int64 (m,)."""
    cdef Py_ssize_t m = z.shape[0], k = z.shape[1]
    cdef double* work
    if m == 0 or k == 0:
        return
    work = _work(k)
    with nogil:
        c_sparse_cross_entropy_gradient(&z[0, 0], &labels[0], m, k, &out[0, 0], work)
    free(work)


def poisson(const floating[::1] z, const floating[::1] y):
    """mean(e^z - y z); z, y 1-D. Returns a Python float."""
    cdef double res
    if z.shape[0] == 0:
        return NAN
    with nogil:
        res = c_poisson(&z[0], &y[0], z.shape[0])
    return res


def poisson_gradient(const floating[::1] z, const floating[::1] y, floating[::1] out):
    """out = (e^z - y) / size; all 1-D."""
    if z.shape[0]:
        with nogil:
            c_poisson_gradient(&z[0], &y[0], z.shape[0], &out[0])
