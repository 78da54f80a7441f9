"""Cython dropout and batch-normalisation kernels: fastnn.reference.normalization
compiled, same names.

Batch statistics are float64 sums over the m rows in NumPy's order for an axis-0
reduction (row after row from +0.0; pairwise down the column when k == 1), so they
equal the reference's; normalised values are rounded once. Arguments come checked from
``fastnn.backend("cython")``.
"""

from cython cimport floating
from libc.math cimport sqrt
from libc.stdlib cimport free, malloc

from fastnn._kernels.blas_cython cimport PW_BLOCK, pw_block, pw_split, pw_sum_wide
from fastnn._kernels.fastnn_simd cimport (
    fnn_bn_dx_f32, fnn_bn_dx_f64, fnn_bn_grad_sums_f32, fnn_bn_grad_sums_f64,
    fnn_bn_normalise_f32, fnn_bn_normalise_f64, fnn_bn_sums_f32, fnn_bn_sums_f64,
)

__all__ = [
    "dropout",
    "batch_norm_train",
    "batch_norm_eval",
    "batch_norm_backward",
]


# --- helpers -------------------------------------------------------------------------

cdef double _centered_sq_sum(const floating* x, Py_ssize_t n,
                             double mean) noexcept nogil:
    """Pairwise float64 sum of (x - mean)^2."""
    cdef double buf[PW_BLOCK]
    cdef double d
    cdef Py_ssize_t i, n2
    if n <= PW_BLOCK:
        for i in range(n):
            d = <double>x[i] - mean
            buf[i] = d * d
        return pw_block(buf, n)
    n2 = pw_split(n)
    return _centered_sq_sum(x, n2, mean) + _centered_sq_sum(x + n2, n - n2, mean)


cdef double _prod_sum(const floating* a, const floating* b, Py_ssize_t n) noexcept nogil:
    """Pairwise float64 sum of a b, both widened first."""
    cdef double buf[PW_BLOCK]
    cdef Py_ssize_t i, n2
    if n <= PW_BLOCK:
        for i in range(n):
            buf[i] = <double>a[i] * <double>b[i]
        return pw_block(buf, n)
    n2 = pw_split(n)
    return _prod_sum(a, b, n2) + _prod_sum(a + n2, b + n2, n - n2)


# --- C-level kernels -----------------------------------------------------------------

cdef void c_dropout(const floating* x, const unsigned char* mask, Py_ssize_t n,
                    double rate, floating* out) noexcept nogil:
    """out = mask x / (1 - rate) in the array dtype (1 - rate rounded to it once)."""
    cdef floating keep = <floating>(1.0 - rate)
    cdef Py_ssize_t i
    for i in range(n):
        out[i] = (<floating>mask[i] * x[i]) / keep


cdef void c_batch_norm_train(const floating* x, const floating* gamma,
                             const floating* beta, Py_ssize_t m, Py_ssize_t k,
                             double eps, double momentum, floating* running_mean,
                             floating* running_var, floating* out, floating* x_hat,
                             floating* inv_std, double* work) noexcept nogil:
    """mu = mean(x), var = mean((x - mu)^2), inv_std = 1 / sqrt(var + eps),
    x_hat = (x - mu) inv_std, out = gamma x_hat + beta; running statistics move by
    momentum towards mu and var m / (m - 1). Columns of x (m, k), m >= 2."""
    cdef double* mean = work
    cdef double* var = work + k  # then 1 / sqrt(var + eps)
    cdef double rows = m
    cdef double keep = 1.0 - momentum
    cdef Py_ssize_t j
    if k == 1:
        mean[0] = (0.0 + pw_sum_wide(x, m)) / rows
        var[0] = (0.0 + _centered_sq_sum(x, m, mean[0])) / rows
    else:
        # row after row from 0.0, lanes across columns (fastnn_simd.h, per CPU)
        if floating is float:
            fnn_bn_sums_f32(x, m, k, var, mean, 0)
        else:
            fnn_bn_sums_f64(x, m, k, var, mean, 0)
        for j in range(k):
            mean[j] = mean[j] / rows
        if floating is float:
            fnn_bn_sums_f32(x, m, k, mean, var, 1)
        else:
            fnn_bn_sums_f64(x, m, k, mean, var, 1)
        for j in range(k):
            var[j] = var[j] / rows
    for j in range(k):
        running_mean[j] = <floating>(keep * <double>running_mean[j] + momentum * mean[j])
        running_var[j] = <floating>(keep * <double>running_var[j]
                                    + momentum * (var[j] * rows / (rows - 1)))
        var[j] = 1 / sqrt(var[j] + eps)
        inv_std[j] = <floating>var[j]
    if floating is float:
        fnn_bn_normalise_f32(x, m, k, mean, var, gamma, beta, x_hat, out)
    else:
        fnn_bn_normalise_f64(x, m, k, mean, var, gamma, beta, x_hat, out)


cdef void c_batch_norm_eval(const floating* x, const floating* gamma,
                            const floating* beta, const floating* running_mean,
                            const floating* running_var, Py_ssize_t m, Py_ssize_t k,
                            double eps, floating* out, double* work) noexcept nogil:
    """out = gamma x_hat + beta, x_hat = (x - running_mean) / sqrt(running_var + eps)
    in float64 rounded once, the affine part in the array dtype."""
    cdef Py_ssize_t i, j, row
    cdef floating xh
    for j in range(k):
        work[j] = 1 / sqrt(<double>running_var[j] + eps)
    for i in range(m):
        row = i * k
        for j in range(k):
            xh = <floating>((<double>x[row + j] - <double>running_mean[j]) * work[j])
            out[row + j] = gamma[j] * xh + beta[j]


cdef void c_batch_norm_backward(const floating* dout, const floating* x_hat,
                                const floating* gamma, const floating* inv_std,
                                Py_ssize_t m, Py_ssize_t k, floating* dx,
                                floating* dgamma, floating* dbeta,
                                double* work) noexcept nogil:
    """dbeta = sum dout, dgamma = sum dout x_hat (over rows, float64),
    dx = gamma inv_std / m (m dout - dbeta - x_hat dgamma), in float64 rounded once."""
    cdef double* db = work
    cdef double* dg = work + k
    cdef double* scale = work + 2 * k
    cdef double rows = m
    cdef Py_ssize_t j
    if k == 1:
        db[0] = 0.0 + pw_sum_wide(dout, m)
        dg[0] = 0.0 + _prod_sum(dout, x_hat, m)
    elif floating is float:  # row after row, lanes across columns (fastnn_simd.h)
        fnn_bn_grad_sums_f32(dout, x_hat, m, k, db, dg)
    else:
        fnn_bn_grad_sums_f64(dout, x_hat, m, k, db, dg)
    for j in range(k):
        scale[j] = <double>gamma[j] * <double>inv_std[j] / rows
        dgamma[j] = <floating>dg[j]
        dbeta[j] = <floating>db[j]
    # dx may be dout: each element is read before it is written
    if floating is float:
        fnn_bn_dx_f32(dout, x_hat, m, k, scale, db, dg, dx)
    else:
        fnn_bn_dx_f64(dout, x_hat, m, k, scale, db, dg, dx)


# --- Python wrappers (the reference's signatures) ------------------------------------

cdef double* _work(Py_ssize_t n) except NULL:
    cdef double* work = <double*>malloc(n * sizeof(double))
    if work == NULL:
        raise MemoryError()
    return work


def dropout(const floating[::1] x, const unsigned char[::1] mask, double rate,
            floating[::1] out):
    """out = mask * x / (1 - rate); x, mask (uint8 0/1), out 1-D."""
    if x.shape[0]:
        with nogil:
            c_dropout(&x[0], &mask[0], x.shape[0], rate, &out[0])


def batch_norm_train(const floating[:, ::1] x, const floating[::1] gamma,
                     const floating[::1] beta, double eps, double momentum,
                     floating[::1] running_mean, floating[::1] running_var,
                     floating[:, ::1] out, floating[:, ::1] x_hat,
                     floating[::1] inv_std):
    """Batch normalisation of x (m, k) with its own statistics; updates the running
    statistics in place and saves x_hat (m, k) and inv_std (k,)."""
    cdef Py_ssize_t m = x.shape[0], k = x.shape[1]
    cdef double* work
    if m == 0 or k == 0:
        return
    work = _work(2 * k)
    with nogil:
        c_batch_norm_train(&x[0, 0], &gamma[0], &beta[0], m, k, eps, momentum,
                           &running_mean[0], &running_var[0], &out[0, 0], &x_hat[0, 0],
                           &inv_std[0], work)
    free(work)


def batch_norm_eval(const floating[:, ::1] x, const floating[::1] gamma,
                    const floating[::1] beta, const floating[::1] running_mean,
                    const floating[::1] running_var, double eps, floating[:, ::1] out):
    """out = gamma (x - running_mean) / sqrt(running_var + eps) + beta; x, out (m, k)."""
    cdef Py_ssize_t m = x.shape[0], k = x.shape[1]
    cdef double* work
    if m == 0 or k == 0:
        return
    work = _work(k)
    with nogil:
        c_batch_norm_eval(&x[0, 0], &gamma[0], &beta[0], &running_mean[0],
                          &running_var[0], m, k, eps, &out[0, 0], work)
    free(work)


def batch_norm_backward(const floating[:, ::1] dout, const floating[:, ::1] x_hat,
                        const floating[::1] gamma, const floating[::1] inv_std,
                        floating[:, ::1] dx, floating[::1] dgamma, floating[::1] dbeta):
    """Gradients of batch_norm_train: dx (m, k), dgamma and dbeta (k,)."""
    cdef Py_ssize_t m = dout.shape[0], k = dout.shape[1]
    cdef double* work
    if m == 0 or k == 0:
        return
    work = _work(3 * k)
    with nogil:
        c_batch_norm_backward(&dout[0, 0], &x_hat[0, 0], &gamma[0], &inv_std[0], m, k,
                              &dx[0, 0], &dgamma[0], &dbeta[0], work)
    free(work)
