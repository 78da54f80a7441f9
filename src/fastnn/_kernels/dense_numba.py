"""Numba kernels for the dense layer (contract: ``fastnn.reference.dense``).

x (m, n_in), w (n_in, n_out), b (n_out,), z, a, da, dz (m, n_out), dw (n_in, n_out).
Each kernel makes the reference's SciPy GEMM call (same flags, so the same bits) and
fuses the elementwise work around it into one pass over the (m, n_out) arrays, with
the activation code switched on once per call.
"""

import numpy as np

from . import codes
from ._numba_common import cast_like, gemm, jit, pairwise_stack, pairwise_sum_ws, tanh_f64
from .activations_numba import (
    _elu, _elu_d, _identity_d, _leaky_relu, _leaky_relu_d, _relu, _relu_d, _sigmoid,
    _sigmoid_d_from_a, _softmax_backward_row, _softmax_row, _step, _step_d, _tanh_d_from_a,
)

__all__ = [
    "dense_forward",
    "dense_backward",
    "dense_input_gradient",
]


@jit
def dense_forward(x, w, b, activation, alpha, z, a):
    """z = x @ w + b and a = g(z) (a may be z): one GEMM, then one pass over z."""
    e = np.empty(z.shape[1])
    nodes, sums = pairwise_stack(e)
    dense_forward_ws(x, w, b, activation, alpha, z, a, e, nodes, sums)


@jit
def dense_forward_ws(x, w, b, activation, alpha, z, a, e, nodes, sums):
    """dense_forward with its scratch given: e float64 (>= n_out), (nodes, sums) a
    float64 ``pairwise_stack``.

    The pass adds b and applies g row by row; softmax and tanh (NumPy's float64 loop)
    finish each row through the float64 row e.
    """
    gemm(x, w, z, False, False)
    m, n = z.shape
    if activation == codes.IDENTITY:
        for i in range(m):
            for j in range(n):
                t = z[i, j] + b[j]
                z[i, j] = t
                a[i, j] = t
    elif activation == codes.STEP:
        for i in range(m):
            for j in range(n):
                t = z[i, j] + b[j]
                z[i, j] = t
                a[i, j] = _step(t)
    elif activation == codes.SIGMOID:
        for i in range(m):
            for j in range(n):
                t = z[i, j] + b[j]
                z[i, j] = t
                a[i, j] = _sigmoid(t)
    elif activation == codes.RELU:
        for i in range(m):
            for j in range(n):
                t = z[i, j] + b[j]
                z[i, j] = t
                a[i, j] = _relu(t)
    elif activation == codes.LEAKY_RELU:
        alpha_ = cast_like(z, alpha)
        for i in range(m):
            for j in range(n):
                t = z[i, j] + b[j]
                z[i, j] = t
                a[i, j] = _leaky_relu(t, alpha_)
    elif activation == codes.ELU:
        for i in range(m):
            for j in range(n):
                t = z[i, j] + b[j]
                z[i, j] = t
                a[i, j] = _elu(t, alpha)
    elif activation == codes.TANH:
        for i in range(m):
            for j in range(n):
                t = z[i, j] + b[j]
                z[i, j] = t
                e[j] = t
            tanh_f64(e, n)
            for j in range(n):
                a[i, j] = e[j]
    elif activation == codes.SOFTMAX:
        for i in range(m):
            for j in range(n):
                z[i, j] += b[j]
            _softmax_row(z, i, a, e, nodes, sums)


@jit
def dense_backward(x, z, a, da, activation, alpha, dz, dw, db):
    """dz = da * g'(z), db = dz summed over rows, dw = x.T @ dz; dz may be da."""
    prod = np.empty_like(db)
    nodes, sums = pairwise_stack(db)
    dense_backward_ws(x, z, a, da, activation, alpha, dz, dw, db, prod, nodes, sums)


@jit
def dense_backward_ws(x, z, a, da, activation, alpha, dz, dw, db, prod, nodes, sums):
    """dense_backward with its scratch given: prod (>= n_out) and (nodes, sums), a
    ``pairwise_stack``, of the array dtype.

    dz = da * g'(z) with db = dz summed over rows in the same pass; dw = x.T @ dz.
    The pass runs in place on dz (da is copied there first unless dz is da): with one
    array read and written, the compiler vectorises it without a run-time overlap test
    (which an in-place call would fail). sigmoid and tanh take g' from the saved a, as
    the reference does; the other derivatives are rounded to the dtype before the
    product. db adds row after row in the array dtype, as NumPy's dz.sum(axis=0); NumPy
    sums a single column pairwise instead, so that case is summed again at the end.
    """
    m, n = dz.shape
    if dz.ctypes.data != da.ctypes.data:
        dzf = dz.reshape(m * n)
        daf = da.reshape(m * n)
        for i in range(m * n):
            dzf[i] = daf[i]
    for j in range(n):
        db[j] = 0
    if activation == codes.IDENTITY:
        for i in range(m):
            for j in range(n):
                v = dz[i, j] * _identity_d(z[i, j])
                dz[i, j] = v
                db[j] += v
    elif activation == codes.STEP:
        for i in range(m):
            for j in range(n):
                v = dz[i, j] * _step_d(z[i, j])
                dz[i, j] = v
                db[j] += v
    elif activation == codes.SIGMOID:
        for i in range(m):
            for j in range(n):
                v = dz[i, j] * _sigmoid_d_from_a(a[i, j])
                dz[i, j] = v
                db[j] += v
    elif activation == codes.TANH:
        for i in range(m):
            for j in range(n):
                v = dz[i, j] * _tanh_d_from_a(a[i, j])
                dz[i, j] = v
                db[j] += v
    elif activation == codes.RELU:
        for i in range(m):
            for j in range(n):
                v = dz[i, j] * _relu_d(z[i, j])
                dz[i, j] = v
                db[j] += v
    elif activation == codes.LEAKY_RELU:
        alpha_ = cast_like(z, alpha)
        for i in range(m):
            for j in range(n):
                v = dz[i, j] * _leaky_relu_d(z[i, j], alpha_)
                dz[i, j] = v
                db[j] += v
    elif activation == codes.ELU:
        for i in range(m):
            for j in range(n):
                v = dz[i, j] * cast_like(dz, _elu_d(z[i, j], alpha))
                dz[i, j] = v
                db[j] += v
    elif activation == codes.SOFTMAX:
        for i in range(m):
            _softmax_backward_row(a, dz, i, dz, prod, nodes, sums)
            for j in range(n):
                db[j] += dz[i, j]
    if n == 1:
        db[0] = cast_like(db, 0.0) + pairwise_sum_ws(dz.reshape(m), m, nodes, sums)
    gemm(x, dz, dw, True, False)


@jit
def dense_input_gradient(dz, w, dx):
    """dx = dz @ w.T: dz (m, n_out), w (n_in, n_out), dx (m, n_in); one GEMM."""
    gemm(dz, w, dx, False, True)
