"""Numba kernels for the dense layer (contract: ``fastnn.reference.dense``).

x (m, n_in), w (n_in, n_out), b (n_out,), z, a, da, dz (m, n_out), dw (n_in, n_out).
Each kernel makes the reference's SciPy GEMM call (same flags, so the same bits) and
fuses the elementwise work around it into one pass over the (m, n_out) arrays, with
the activation code switched on once per call.
"""

import numpy as np

from . import codes
from ._numba_common import cast_like, gemm, jit, pairwise_sum, tanh_f64
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
    """z = x @ w + b and a = g(z) (a may be z): one GEMM, then one pass over z.

    The pass adds b and applies g row by row; softmax and tanh (NumPy's float64 loop)
    finish each row through a float64 row buffer.
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
        buf = np.empty(n)
        for i in range(m):
            for j in range(n):
                t = z[i, j] + b[j]
                z[i, j] = t
                buf[j] = t
            tanh_f64(buf, n)
            for j in range(n):
                a[i, j] = buf[j]
    elif activation == codes.SOFTMAX:
        e = np.empty(n)
        for i in range(m):
            for j in range(n):
                z[i, j] += b[j]
            _softmax_row(z, i, a, e)


@jit
def dense_backward(x, z, a, da, activation, alpha, dz, dw, db):
    """dz = da * g'(z) with db = dz summed over rows in the same pass; dw = x.T @ dz.

    dz may be da. sigmoid and tanh take g' from the saved a, as the reference does; the
    other derivatives are rounded to the dtype before the product. db adds row after
    row in the array dtype, as NumPy's dz.sum(axis=0); NumPy sums a single column
    pairwise instead, so that case is summed again at the end.
    """
    m, n = dz.shape
    for j in range(n):
        db[j] = 0
    if activation == codes.IDENTITY:
        for i in range(m):
            for j in range(n):
                v = da[i, j] * _identity_d(z[i, j])
                dz[i, j] = v
                db[j] += v
    elif activation == codes.STEP:
        for i in range(m):
            for j in range(n):
                v = da[i, j] * _step_d(z[i, j])
                dz[i, j] = v
                db[j] += v
    elif activation == codes.SIGMOID:
        for i in range(m):
            for j in range(n):
                v = da[i, j] * _sigmoid_d_from_a(a[i, j])
                dz[i, j] = v
                db[j] += v
    elif activation == codes.TANH:
        for i in range(m):
            for j in range(n):
                v = da[i, j] * _tanh_d_from_a(a[i, j])
                dz[i, j] = v
                db[j] += v
    elif activation == codes.RELU:
        for i in range(m):
            for j in range(n):
                v = da[i, j] * _relu_d(z[i, j])
                dz[i, j] = v
                db[j] += v
    elif activation == codes.LEAKY_RELU:
        alpha_ = cast_like(z, alpha)
        for i in range(m):
            for j in range(n):
                v = da[i, j] * _leaky_relu_d(z[i, j], alpha_)
                dz[i, j] = v
                db[j] += v
    elif activation == codes.ELU:
        for i in range(m):
            for j in range(n):
                v = da[i, j] * cast_like(da, _elu_d(z[i, j], alpha))
                dz[i, j] = v
                db[j] += v
    elif activation == codes.SOFTMAX:
        prod = np.empty_like(a[0])
        for i in range(m):
            _softmax_backward_row(a, da, i, dz, prod)
            for j in range(n):
                db[j] += dz[i, j]
    if n == 1:
        db[0] = cast_like(db, 0.0) + pairwise_sum(dz.reshape(m), m)
    gemm(x, dz, dw, True, False)


@jit
def dense_input_gradient(dz, w, dx):
    """dx = dz @ w.T: dz (m, n_out), w (n_in, n_out), dx (m, n_in); one GEMM."""
    gemm(dz, w, dx, False, True)
