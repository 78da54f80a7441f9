"""Numba kernels for the dense layer (contract: ``fastnn.reference.dense``).

x (m, n_in), w (n_in, n_out), b (n_out,), z, a, da, dz (m, n_out), dw (n_in, n_out).
Each kernel makes the reference's SciPy GEMM call (same flags, so the same bits) and
fuses the elementwise work around it into one pass over the (m, n_out) arrays, with
the activation code switched on once per call.
"""

import numpy as np

from ..reference.blas import GEMM_SMALL_K
from . import codes
from ._numba_common import (
    cast_like,
    gemm,
    gemm_threads,
    jit,
    pairwise_stack,
    pairwise_sum_ws,
    stack_panel,
    tanh_f64,
)
from .activations_numba import (
    _elu,
    _elu_d,
    _g,
    _g_d,
    _identity_d,
    _leaky_relu,
    _leaky_relu_d,
    _relu,
    _relu_d,
    _sigmoid,
    _sigmoid_d_from_a,
    _softmax_backward_out_row,
    _softmax_exp_row,
    _softmax_out_row,
    _step,
    _step_d,
    _tanh_d_from_a,
    _times_row,
)

_RELU = codes.RELU

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
    float64 ``pairwise_stack``. The GEMM, then the pass of the activation."""
    gemm(x, w, z, False, False)
    if activation == codes.IDENTITY:
        forward_identity(z, a, b)
    elif activation == codes.STEP:
        forward_step(z, a, b)
    elif activation == codes.SIGMOID:
        forward_sigmoid(z, a, b)
    elif activation == codes.TANH:
        forward_tanh(z, a, b, e)
    elif activation == codes.RELU:
        forward_relu(z, a, b)
    elif activation == codes.LEAKY_RELU:
        forward_leaky_relu(z, a, b, alpha)
    elif activation == codes.ELU:
        forward_elu(z, a, b, alpha)
    elif activation == codes.SOFTMAX:
        forward_softmax(z, a, b, e, nodes, sums)
    else:
        forward_by_code(z, a, b, activation)


# --- forward passes after the GEMM: z += b, a = g(z), row by row ------------------------
# One function per activation, so that a caller that knows which activations it needs
# (the whole-epoch kernel) compiles only those.


@jit
def forward_identity(z, a, b):
    m, n = z.shape
    if a.ctypes.data == z.ctypes.data:  # logits: one store, no run-time overlap test
        for i in range(m):
            for j in range(n):
                z[i, j] += b[j]
        return
    for i in range(m):
        for j in range(n):
            t = z[i, j] + b[j]
            z[i, j] = t
            a[i, j] = t


@jit
def forward_step(z, a, b):
    m, n = z.shape
    for i in range(m):
        for j in range(n):
            t = z[i, j] + b[j]
            z[i, j] = t
            a[i, j] = _step(t)


@jit
def forward_sigmoid(z, a, b):
    m, n = z.shape
    for i in range(m):
        for j in range(n):
            t = z[i, j] + b[j]
            z[i, j] = t
            a[i, j] = _sigmoid(t)


@jit
def forward_relu(z, a, b):
    m, n = z.shape
    if a.ctypes.data == z.ctypes.data:  # written over z: one store (as forward_identity)
        for i in range(m):
            for j in range(n):
                z[i, j] = _relu(z[i, j] + b[j])
        return
    for i in range(m):
        for j in range(n):
            t = z[i, j] + b[j]
            z[i, j] = t
            a[i, j] = _relu(t)


@jit
def forward_leaky_relu(z, a, b, alpha):
    m, n = z.shape
    alpha_ = cast_like(z, alpha)
    if a.ctypes.data == z.ctypes.data:
        for i in range(m):
            for j in range(n):
                z[i, j] = _leaky_relu(z[i, j] + b[j], alpha_)
        return
    for i in range(m):
        for j in range(n):
            t = z[i, j] + b[j]
            z[i, j] = t
            a[i, j] = _leaky_relu(t, alpha_)


@jit
def forward_elu(z, a, b, alpha):
    m, n = z.shape
    for i in range(m):
        for j in range(n):
            t = z[i, j] + b[j]
            z[i, j] = t
            a[i, j] = _elu(t, alpha)


@jit
def forward_by_code(z, a, b, code):
    """The activations without a loop of their own (activations_numba._g), by code."""
    m, n = z.shape
    for i in range(m):
        for j in range(n):
            t = z[i, j] + b[j]
            z[i, j] = t
            a[i, j] = _g(code, np.float64(t))


@jit
def forward_tanh(z, a, b, e):
    """tanh by NumPy's float64 loop over each row, through the float64 row e."""
    m, n = z.shape
    for i in range(m):
        for j in range(n):
            t = z[i, j] + b[j]
            z[i, j] = t
            e[j] = t
        tanh_f64(e, n)
        for j in range(n):
            a[i, j] = e[j]


@jit
def forward_softmax(z, a, b, e, nodes, sums):
    m, n = z.shape
    for i in range(m):
        for j in range(n):
            z[i, j] += b[j]
        _softmax_exp_row(z, i, e)
        _softmax_out_row(a, i, e, pairwise_sum_ws(e, n, nodes, sums))


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

    dz = da * g'(z) with db = dz summed over rows in the same pass; dw = x.T @ dz. The
    pass runs in place on dz (da is copied there first unless dz is da): with one array
    read and written, the compiler vectorises it without a run-time overlap test (which
    an in-place call would fail).
    """
    if dz.ctypes.data != da.ctypes.data:
        m, n = dz.shape
        dzf = dz.reshape(m * n)
        daf = da.reshape(m * n)
        for i in range(m * n):
            dzf[i] = daf[i]
    if activation == codes.IDENTITY:
        backward_identity(z, dz, db)
    elif activation == codes.STEP:
        backward_step(z, dz, db)
    elif activation == codes.SIGMOID:
        backward_sigmoid(a, dz, db)
    elif activation == codes.TANH:
        backward_tanh(a, dz, db)
    elif activation == codes.RELU:
        backward_relu(z, dz, db)
    elif activation == codes.LEAKY_RELU:
        backward_leaky_relu(z, dz, db, alpha)
    elif activation == codes.ELU:
        backward_elu(z, dz, db, alpha)
    elif activation == codes.SOFTMAX:
        backward_softmax(a, dz, db, prod, nodes, sums)
    else:
        backward_by_code(z, dz, db, activation)
    backward_finish(x, dz, dw, db, nodes, sums, 1)


# --- backward passes: g = g * g'(z) in place, db = g summed over rows ----------------------
# sigmoid and tanh take g' from the saved a, as the reference does; the other derivatives
# are rounded to the dtype before the product. db adds row after row in the array dtype,
# as NumPy's dz.sum(axis=0) (``backward_finish`` redoes the single-column case).


@jit
def backward_identity(z, g, db):
    m, n = g.shape
    for j in range(n):
        db[j] = 0
    for i in range(m):
        for j in range(n):
            v = g[i, j] * _identity_d(z[i, j])
            g[i, j] = v
            db[j] += v


@jit
def backward_step(z, g, db):
    m, n = g.shape
    for j in range(n):
        db[j] = 0
    for i in range(m):
        for j in range(n):
            v = g[i, j] * _step_d(z[i, j])
            g[i, j] = v
            db[j] += v


@jit
def backward_sigmoid(a, g, db):
    m, n = g.shape
    for j in range(n):
        db[j] = 0
    for i in range(m):
        for j in range(n):
            v = g[i, j] * _sigmoid_d_from_a(a[i, j])
            g[i, j] = v
            db[j] += v


@jit
def backward_tanh(a, g, db):
    m, n = g.shape
    for j in range(n):
        db[j] = 0
    for i in range(m):
        for j in range(n):
            v = g[i, j] * _tanh_d_from_a(a[i, j])
            g[i, j] = v
            db[j] += v


@jit
def backward_relu(z, g, db):
    m, n = g.shape
    for j in range(n):
        db[j] = 0
    for i in range(m):
        for j in range(n):
            v = g[i, j] * _relu_d(z[i, j])
            g[i, j] = v
            db[j] += v


@jit
def backward_leaky_relu(z, g, db, alpha):
    m, n = g.shape
    alpha_ = cast_like(z, alpha)
    for j in range(n):
        db[j] = 0
    for i in range(m):
        for j in range(n):
            v = g[i, j] * _leaky_relu_d(z[i, j], alpha_)
            g[i, j] = v
            db[j] += v


@jit
def backward_elu(z, g, db, alpha):
    m, n = g.shape
    for j in range(n):
        db[j] = 0
    for i in range(m):
        for j in range(n):
            v = g[i, j] * cast_like(g, _elu_d(z[i, j], alpha))
            g[i, j] = v
            db[j] += v


@jit
def backward_by_code(z, g, db, code):
    """The activations of activations_numba._g_d, by code: g' in float64, rounded to
    the dtype before the product (as elu's)."""
    m, n = g.shape
    for j in range(n):
        db[j] = 0
    for i in range(m):
        for j in range(n):
            v = g[i, j] * cast_like(g, _g_d(code, np.float64(z[i, j])))
            g[i, j] = v
            db[j] += v


@jit
def backward_softmax(a, g, db, prod, nodes, sums):
    """The softmax Jacobian row by row (prod and the stack of the array dtype)."""
    m, n = g.shape
    for j in range(n):
        db[j] = 0
    for i in range(m):
        _times_row(a, g, i, prod)
        _softmax_backward_out_row(a, g, i, g, pairwise_sum_ws(prod, n, nodes, sums))
        for j in range(n):
            db[j] += g[i, j]


@jit
def backward_finish(x, dz, dw, db, nodes, sums, n_threads):
    """NumPy sums a single column pairwise, not row after row: db again in that case;
    then dw = x.T @ dz (its blocks on up to n_threads threads)."""
    m, n = dz.shape
    if n == 1:
        db[0] = cast_like(db, 0.0) + pairwise_sum_ws(dz.reshape(m), m, nodes, sums)
    gemm_threads(x, dz, dw, True, False, n_threads)


# --- a product of a short inner dimension fused with the pass after it ----------------
# (fastnn_simd.h's fnn_small_k_bias_act, for the epoch kernel): each value computed by
# the same operations in the same order as the product (_gemm_small_k: p = 0 .. k - 1
# in the dtype) and the pass, so the same bits, in one pass over (m, n) instead of two.
# Unsigned column indices: Numba tests signed ones for wrap-around, which keeps LLVM
# from vectorizing.


@jit
def small_k_forward(x, w, b, z, a, act, alpha):
    """z = x @ w + b and a = relu(z) in one pass for x (m, k) with 1 <= k <= 4
    (GEMM_SMALL_K); False, doing nothing, for another k or activation. a may be z (then
    only a is stored)."""
    m, k = x.shape
    n = np.uint64(z.shape[1])
    if act != _RELU or k < 1 or k > GEMM_SMALL_K:
        return False
    both = a.ctypes.data != z.ctypes.data
    # one loop per k (a branch inside the inner loop keeps LLVM from vectorizing it, but
    # for ``both``, a loop invariant that it takes out of the loop)
    for i in range(m):
        x0 = x[i, 0]
        x1 = x[i, 1] if k > 1 else x0
        x2 = x[i, 2] if k > 2 else x0
        x3 = x[i, 3] if k > 3 else x0
        if k == 1:
            for j in range(n):
                t = x0 * w[0, j] + b[j]
                if both:
                    z[i, j] = t
                a[i, j] = _relu(t)
        elif k == 2:
            for j in range(n):
                t = (x0 * w[0, j] + x1 * w[1, j]) + b[j]
                if both:
                    z[i, j] = t
                a[i, j] = _relu(t)
        elif k == 3:
            for j in range(n):
                t = (x0 * w[0, j] + x1 * w[1, j] + x2 * w[2, j]) + b[j]
                if both:
                    z[i, j] = t
                a[i, j] = _relu(t)
        else:
            for j in range(n):
                t = (x0 * w[0, j] + x1 * w[1, j] + x2 * w[2, j] + x3 * w[3, j]) + b[j]
                if both:
                    z[i, j] = t
                a[i, j] = _relu(t)
    return True


@jit
def small_k_backward(g, w, z, dz, db, act):
    """dz = (g @ w.T) * relu'(z) and db = dz's rows summed row after row, in one pass,
    for g (m, k) with 1 <= k <= 4 (GEMM_SMALL_K), w (n, k), z and dz (m, n): the layer
    above's input gradient (_gemm_small_k's sums: w^T copied into a panel on the stack)
    and this relu layer's pass (backward_relu), the same bits, the product never
    written. dz must not overlap g, z or db. False, doing nothing, for another k or
    activation (fastnn_simd.h's fnn_small_k_act_grad_bias)."""
    m, k = g.shape
    n = w.shape[0]
    if act != _RELU or k < 1 or k > GEMM_SMALL_K:
        return False
    for j in range(n):
        db[j] = 0
    panel = stack_panel(dz)
    width = panel.shape[1]
    for j0 in range(0, n, width):
        u0 = np.uint64(j0)
        cols = np.uint64(min(width, n - j0))
        for p in range(k):
            for j in range(cols):
                panel[p, j] = w[u0 + j, p]
        # one loop per k (a branch inside the inner loop keeps LLVM from vectorizing it),
        # four rows a pass: each column's weights and db loaded once for four rows, db
        # still summed row after row (the same bits)
        i = 0
        if k == 1:
            while i + 4 <= m:
                a0, b0, c0, e0 = g[i, 0], g[i + 1, 0], g[i + 2, 0], g[i + 3, 0]
                for j in range(cols):
                    q = u0 + j
                    w0 = panel[0, j]
                    v0 = (a0 * w0) * _relu_d(z[i, q])
                    v1 = (b0 * w0) * _relu_d(z[i + 1, q])
                    v2 = (c0 * w0) * _relu_d(z[i + 2, q])
                    v3 = (e0 * w0) * _relu_d(z[i + 3, q])
                    dz[i, q] = v0
                    dz[i + 1, q] = v1
                    dz[i + 2, q] = v2
                    dz[i + 3, q] = v3
                    db[q] = (((db[q] + v0) + v1) + v2) + v3
                i += 4
        elif k == 2:
            while i + 4 <= m:
                a0, a1, b0, b1 = g[i, 0], g[i, 1], g[i + 1, 0], g[i + 1, 1]
                c0, c1, e0, e1 = g[i + 2, 0], g[i + 2, 1], g[i + 3, 0], g[i + 3, 1]
                for j in range(cols):
                    q = u0 + j
                    w0, w1 = panel[0, j], panel[1, j]
                    v0 = (a0 * w0 + a1 * w1) * _relu_d(z[i, q])
                    v1 = (b0 * w0 + b1 * w1) * _relu_d(z[i + 1, q])
                    v2 = (c0 * w0 + c1 * w1) * _relu_d(z[i + 2, q])
                    v3 = (e0 * w0 + e1 * w1) * _relu_d(z[i + 3, q])
                    dz[i, q] = v0
                    dz[i + 1, q] = v1
                    dz[i + 2, q] = v2
                    dz[i + 3, q] = v3
                    db[q] = (((db[q] + v0) + v1) + v2) + v3
                i += 4
        elif k == 3:
            while i + 4 <= m:
                a0, a1, a2 = g[i, 0], g[i, 1], g[i, 2]
                b0, b1, b2 = g[i + 1, 0], g[i + 1, 1], g[i + 1, 2]
                c0, c1, c2 = g[i + 2, 0], g[i + 2, 1], g[i + 2, 2]
                e0, e1, e2 = g[i + 3, 0], g[i + 3, 1], g[i + 3, 2]
                for j in range(cols):
                    q = u0 + j
                    w0, w1, w2 = panel[0, j], panel[1, j], panel[2, j]
                    v0 = (a0 * w0 + a1 * w1 + a2 * w2) * _relu_d(z[i, q])
                    v1 = (b0 * w0 + b1 * w1 + b2 * w2) * _relu_d(z[i + 1, q])
                    v2 = (c0 * w0 + c1 * w1 + c2 * w2) * _relu_d(z[i + 2, q])
                    v3 = (e0 * w0 + e1 * w1 + e2 * w2) * _relu_d(z[i + 3, q])
                    dz[i, q] = v0
                    dz[i + 1, q] = v1
                    dz[i + 2, q] = v2
                    dz[i + 3, q] = v3
                    db[q] = (((db[q] + v0) + v1) + v2) + v3
                i += 4
        else:
            while i + 4 <= m:
                a0, a1, a2, a3 = g[i, 0], g[i, 1], g[i, 2], g[i, 3]
                b0, b1, b2, b3 = g[i + 1, 0], g[i + 1, 1], g[i + 1, 2], g[i + 1, 3]
                c0, c1, c2, c3 = g[i + 2, 0], g[i + 2, 1], g[i + 2, 2], g[i + 2, 3]
                e0, e1, e2, e3 = g[i + 3, 0], g[i + 3, 1], g[i + 3, 2], g[i + 3, 3]
                for j in range(cols):
                    q = u0 + j
                    w0, w1, w2, w3 = panel[0, j], panel[1, j], panel[2, j], panel[3, j]
                    v0 = (a0 * w0 + a1 * w1 + a2 * w2 + a3 * w3) * _relu_d(z[i, q])
                    v1 = (b0 * w0 + b1 * w1 + b2 * w2 + b3 * w3) * _relu_d(z[i + 1, q])
                    v2 = (c0 * w0 + c1 * w1 + c2 * w2 + c3 * w3) * _relu_d(z[i + 2, q])
                    v3 = (e0 * w0 + e1 * w1 + e2 * w2 + e3 * w3) * _relu_d(z[i + 3, q])
                    dz[i, q] = v0
                    dz[i + 1, q] = v1
                    dz[i + 2, q] = v2
                    dz[i + 3, q] = v3
                    db[q] = (((db[q] + v0) + v1) + v2) + v3
                i += 4
        for r in range(i, m):  # the last rows, one at a time
            x0 = g[r, 0]
            x1 = g[r, 1] if k > 1 else x0
            x2 = g[r, 2] if k > 2 else x0
            x3 = g[r, 3] if k > 3 else x0
            for j in range(cols):
                t = x0 * panel[0, j]
                if k > 1:
                    t = t + x1 * panel[1, j]
                if k > 2:
                    t = t + x2 * panel[2, j]
                if k > 3:
                    t = t + x3 * panel[3, j]
                v = t * _relu_d(z[r, u0 + j])
                dz[r, u0 + j] = v
                db[u0 + j] += v
    return True


@jit
def dense_input_gradient(dz, w, dx):
    """dx = dz @ w.T: dz (m, n_out), w (n_in, n_out), dx (m, n_in); one GEMM."""
    gemm(dz, w, dx, False, True)
