"""Numba kernels for the activations (contract: ``fastnn.reference.activations``).

Each activation and derivative is a scalar function (``_relu(v)``, ``_elu(v, alpha)``)
that the kernels here and in ``dense_numba`` call inside their loops; the activation
code is switched on once per call, outside the loops. Formulas without exp/log/tanh
stay in the array dtype with dtype-cast constants; the others are evaluated in float64
and rounded once on store. tanh is NumPy's own float64 loop
(``_numba_common.tanh_f64``), run over blocks of a float64 buffer.
"""

import numpy as np

from .. import registry
from . import codes
from ._numba_common import (
    cast_like,
    erfc_f64,
    jit,
    jit_inline,
    pairwise_stack,
    pairwise_sum_ws,
    tanh_f64,
)

__all__ = [
    "identity",
    "step",
    "sigmoid",
    "tanh",
    "relu",
    "leaky_relu",
    "elu",
    "softmax",
    "gelu",
    "silu",
    "selu",
    "mish",
    "identity_derivative",
    "step_derivative",
    "sigmoid_derivative",
    "tanh_derivative",
    "relu_derivative",
    "leaky_relu_derivative",
    "elu_derivative",
    "gelu_derivative",
    "silu_derivative",
    "selu_derivative",
    "mish_derivative",
    "softmax_backward",
    "activation_forward",
    "activation_backward",
]

_TANH_BLOCK = 512  # float64 buffer length for tanh of float32 data


# --- scalar functions: v in the array dtype -------------------------------------------


@jit_inline
def _step(v):
    if v != v:
        return v
    return cast_like(v, 1.0) if v >= 0 else cast_like(v, 0.0)


@jit_inline
def _relu(v):
    # as np.maximum(z, 0): NaN stays, -0.0 gives +0.0
    zero = cast_like(v, 0.0)
    return zero if v <= zero else v


@jit_inline
def _leaky_relu(v, alpha):
    """alpha already in the dtype of v."""
    return v if v > 0 else alpha * v


@jit_inline
def _sigmoid(v):
    """float64; the branch on the sign keeps e^x <= 1."""
    x = np.float64(v)
    e = np.exp(-np.abs(x))
    return 1.0 / (1.0 + e) if x >= 0 else e / (1.0 + e)


@jit_inline
def _elu(v, alpha):
    """float64, alpha float64; min(x, 0) as np.minimum (NaN stays, -0.0 gives +0.0)."""
    x = np.float64(v)
    return x if x > 0 else alpha * np.expm1(0.0 if x >= 0 else x)


@jit_inline
def _identity_d(v):
    return v if v != v else cast_like(v, 1.0)


@jit_inline
def _step_d(v):
    return v if v != v else cast_like(v, 0.0)


@jit_inline
def _relu_d(v):
    if v != v:
        return v
    return cast_like(v, 1.0) if v > 0 else cast_like(v, 0.0)


@jit_inline
def _leaky_relu_d(v, alpha):
    """alpha already in the dtype of v."""
    if v != v:
        return v
    return cast_like(v, 1.0) if v > 0 else alpha


@jit_inline
def _sigmoid_d(v):
    s = _sigmoid(v)
    return s * (1.0 - s)


@jit_inline
def _elu_d(v, alpha):
    """float64, alpha float64; NaN stays NaN through exp."""
    x = np.float64(v)
    return 1.0 if x > 0 else alpha * np.exp(0.0 if x >= 0 else x)


@jit_inline
def _sigmoid_d_from_a(a):
    """g'(z) from the saved a = sigmoid(z), in the dtype of a."""
    return a * (cast_like(a, 1.0) - a)


@jit_inline
def _tanh_d_from_a(a):
    """g'(z) from the saved a = tanh(z), in the dtype of a."""
    return cast_like(a, 1.0) - a * a


# The activations below have no loop of their own in dense_numba: the dense layer and
# the epoch kernel reach them through _g and _g_d (by code, inside the loop; their
# exp/erfc costs far more than the branch). float64 in, float64 out; the caller rounds.
_SQRT1_2 = 0.7071067811865476  # 1 / sqrt 2, rounded
_INV_SQRT_2PI = 0.3989422804014327  # 1 / sqrt(2 pi), rounded
_SELU_SCALE = registry.SELU_SCALE
_SELU_SCALE_ALPHA = registry.SELU_SCALE * registry.SELU_ALPHA


@jit_inline
def _times(x, h):
    """x h, and -0.0 where h = 0 (x far in the negative tail: -inf * 0 is NaN)."""
    return -0.0 if h == 0.0 else x * h


@jit_inline
def _plus(t, x, h):
    """t + x h, and t where h = 0."""
    return t if h == 0.0 else t + x * h


@jit_inline
def _sigmoid_e(x, e):
    """sigmoid(x) from e = e^-|x|."""
    return (1.0 if x >= 0 else e) / (1.0 + e)


@jit_inline
def _mish_t(x, e):
    """tanh(softplus(x)) from e = e^-|x| (reference.activations._mish_t)."""
    if x >= 0:
        p = 1.0 + 2.0 * e
        return p / (p + 2.0 * e * e)
    p = e * (e + 2.0)
    return p / (p + 2.0)


@jit_inline
def _gelu(x):
    return _times(0.5 * x, erfc_f64(-x * _SQRT1_2))


@jit_inline
def _gelu_d(x):
    return _plus(0.5 * erfc_f64(-x * _SQRT1_2), x, np.exp(-0.5 * x * x) * _INV_SQRT_2PI)


@jit_inline
def _silu(x):
    return _times(x, _sigmoid_e(x, np.exp(-np.abs(x))))


@jit_inline
def _silu_d(x):
    s = _sigmoid_e(x, np.exp(-np.abs(x)))
    return _plus(s, x, s * (1.0 - s))


@jit_inline
def _selu(x):
    return _SELU_SCALE * x if x > 0 else _SELU_SCALE_ALPHA * np.expm1(0.0 if x >= 0 else x)


@jit_inline
def _selu_d(x):
    return _SELU_SCALE if x > 0 else _SELU_SCALE_ALPHA * np.exp(0.0 if x >= 0 else x)


@jit_inline
def _mish(x):
    return _times(x, _mish_t(x, np.exp(-np.abs(x))))


@jit_inline
def _mish_d(x):
    e = np.exp(-np.abs(x))
    t = _mish_t(x, e)
    return _plus(t, x, (1.0 - t * t) * _sigmoid_e(x, e))


@jit_inline
def _g(code, x):
    """g(x) of the activations without a loop of their own, x float64."""
    if code == codes.GELU:
        return _gelu(x)
    if code == codes.SILU:
        return _silu(x)
    if code == codes.SELU:
        return _selu(x)
    return _mish(x)


@jit_inline
def _g_d(code, x):
    """g'(x) of the same activations, x float64."""
    if code == codes.GELU:
        return _gelu_d(x)
    if code == codes.SILU:
        return _silu_d(x)
    if code == codes.SELU:
        return _selu_d(x)
    return _mish_d(x)


# --- row and block helpers ------------------------------------------------------------


@jit
def _tanh_into(z, out, derivative):
    """out = tanh z, or 1 - tanh^2 z, over flat arrays, tanh in float64 by blocks."""
    n = z.size
    buf = np.empty(min(n, _TANH_BLOCK))
    for lo in range(0, n, _TANH_BLOCK):
        cnt = min(_TANH_BLOCK, n - lo)
        for j in range(cnt):
            buf[j] = z[lo + j]
        tanh_f64(buf, cnt)
        if derivative:
            for j in range(cnt):
                t = buf[j]
                out[lo + j] = 1.0 - t * t
        else:
            for j in range(cnt):
                out[lo + j] = buf[j]


# Softmax rows in two helpers, the row's pairwise sum between them in the kernel's own
# loop: a helper called per row that passed its arrays on to pairwise_sum_ws would take
# a reference to each with an atomic increment in every row (Numba's NRT).
@jit
def _softmax_exp_row(z, i, e):
    """e[j] = exp(z[i, j] - max) of row i, float64 (e a scratch row)."""
    k = z.shape[1]
    mx = np.float64(z[i, 0])
    for j in range(1, k):
        x = np.float64(z[i, j])
        if x > mx or x != x:  # NaN wins, as in ndarray.max
            mx = x
    for j in range(k):
        e[j] = np.exp(np.float64(z[i, j]) - mx)


@jit
def _softmax_out_row(out, i, e, s):
    """out[i] = e / s: the softmax of the row whose shifted exps are e and sum s."""
    for j in range(out.shape[1]):
        out[i, j] = e[j] / s


@jit
def _times_row(a, da, i, prod):
    """prod[j] = da[i, j] a[i, j] in the array dtype."""
    for j in range(a.shape[1]):
        prod[j] = da[i, j] * a[i, j]


@jit
def _softmax_backward_out_row(a, da, i, out, s):
    """out[i] = a[i] * (da[i] - s), s = sum_j da[i, j] a[i, j]; out may be da."""
    for j in range(a.shape[1]):
        out[i, j] = a[i, j] * (da[i, j] - s)


# --- forward: out = g(z), flat arrays, out may be z -----------------------------------


@jit
def identity(z, out):
    """out = z."""
    for i in range(z.size):
        out[i] = z[i]


@jit
def step(z, out):
    """out = 1 if z >= 0 else 0; NaN stays NaN."""
    for i in range(z.size):
        out[i] = _step(z[i])


@jit
def sigmoid(z, out):
    """out = 1 / (1 + e^-z), float64 inside, rounded once."""
    for i in range(z.size):
        out[i] = _sigmoid(z[i])


@jit
def tanh(z, out):
    """out = tanh z: NumPy's float64 tanh, rounded once."""
    _tanh_into(z, out, False)


@jit
def relu(z, out):
    """out = max(0, z); relu(-0.0) = +0.0."""
    for i in range(z.size):
        out[i] = _relu(z[i])


@jit
def leaky_relu(z, alpha, out):
    """out = z if z > 0 else alpha z, alpha cast to the dtype."""
    a = cast_like(z, alpha)
    for i in range(z.size):
        out[i] = _leaky_relu(z[i], a)


@jit
def elu(z, alpha, out):
    """out = z if z > 0 else alpha (e^z - 1), float64 inside."""
    for i in range(z.size):
        out[i] = _elu(z[i], alpha)


@jit
def softmax(z, out):
    """out = row-wise softmax of z (m, k): max-shifted, float64 inside."""
    if z.shape[1] == 0:
        return
    k = z.shape[1]
    e = np.empty(k)
    nodes, sums = pairwise_stack(e)
    for i in range(z.shape[0]):
        _softmax_exp_row(z, i, e)
        _softmax_out_row(out, i, e, pairwise_sum_ws(e, k, nodes, sums))


@jit
def by_code(z, code, out):
    """out = g(z) for one of the activations of ``_g``: float64 inside, rounded once."""
    for i in range(z.size):
        out[i] = _g(code, np.float64(z[i]))


@jit
def gelu(z, out):
    """out = z Phi(z) = z erfc(-z / sqrt 2) / 2 (SciPy's erfc), float64 inside."""
    by_code(z, codes.GELU, out)


@jit
def silu(z, out):
    """out = z sigmoid(z), float64 inside."""
    by_code(z, codes.SILU, out)


@jit
def selu(z, out):
    """out = lambda z if z > 0 else lambda alpha (e^z - 1), float64 inside."""
    by_code(z, codes.SELU, out)


@jit
def mish(z, out):
    """out = z tanh(softplus(z)), float64 inside."""
    by_code(z, codes.MISH, out)


# --- derivatives: out = g'(z), flat arrays, out may be z ------------------------------


@jit
def derivative_by_code(z, code, out):
    """out = g'(z) for one of the activations of ``_g_d``: float64 inside, rounded once."""
    for i in range(z.size):
        out[i] = _g_d(code, np.float64(z[i]))


@jit
def gelu_derivative(z, out):
    """out = Phi(z) + z phi(z), float64 inside."""
    derivative_by_code(z, codes.GELU, out)


@jit
def silu_derivative(z, out):
    """out = s + z s (1 - s), s = sigmoid(z), float64 inside."""
    derivative_by_code(z, codes.SILU, out)


@jit
def selu_derivative(z, out):
    """out = lambda if z > 0 else lambda alpha e^z, float64 inside."""
    derivative_by_code(z, codes.SELU, out)


@jit
def mish_derivative(z, out):
    """out = t + z (1 - t^2) sigmoid(z), t = tanh(softplus(z)), float64 inside."""
    derivative_by_code(z, codes.MISH, out)


@jit
def identity_derivative(z, out):
    """out = 1; NaN where z is NaN."""
    for i in range(z.size):
        out[i] = _identity_d(z[i])


@jit
def step_derivative(z, out):
    """out = 0; NaN where z is NaN."""
    for i in range(z.size):
        out[i] = _step_d(z[i])


@jit
def sigmoid_derivative(z, out):
    """out = s (1 - s), s = sigmoid(z), float64 inside."""
    for i in range(z.size):
        out[i] = _sigmoid_d(z[i])


@jit
def tanh_derivative(z, out):
    """out = 1 - tanh^2 z, float64 inside."""
    _tanh_into(z, out, True)


@jit
def relu_derivative(z, out):
    """out = 1 if z > 0 else 0; NaN where z is NaN."""
    for i in range(z.size):
        out[i] = _relu_d(z[i])


@jit
def leaky_relu_derivative(z, alpha, out):
    """out = 1 if z > 0 else alpha; NaN where z is NaN."""
    a = cast_like(z, alpha)
    for i in range(z.size):
        out[i] = _leaky_relu_d(z[i], a)


@jit
def elu_derivative(z, alpha, out):
    """out = 1 if z > 0 else alpha e^z, float64 inside."""
    for i in range(z.size):
        out[i] = _elu_d(z[i], alpha)


@jit
def softmax_backward(a, da, out):
    """out = a * (da - sum_j da_j a_j) row-wise, all (m, k), array dtype; out may be da."""
    if a.shape[1] == 0:
        return
    k = a.shape[1]
    prod = np.empty_like(a[0])
    nodes, sums = pairwise_stack(prod)
    for i in range(a.shape[0]):
        _times_row(a, da, i, prod)
        _softmax_backward_out_row(a, da, i, out, pairwise_sum_ws(prod, k, nodes, sums))


# --- by activation code, (m, k) arrays ------------------------------------------------


@jit
def activation_forward(z, activation, alpha, out):
    """out = g(z) for the activation with integer code ``activation``; out may be z."""
    if activation == codes.SOFTMAX:
        softmax(z, out)
        return
    zf = z.reshape(z.size)
    of = out.reshape(out.size)
    if activation == codes.IDENTITY:
        identity(zf, of)
    elif activation == codes.STEP:
        step(zf, of)
    elif activation == codes.SIGMOID:
        sigmoid(zf, of)
    elif activation == codes.TANH:
        tanh(zf, of)
    elif activation == codes.RELU:
        relu(zf, of)
    elif activation == codes.LEAKY_RELU:
        leaky_relu(zf, alpha, of)
    elif activation == codes.ELU:
        elu(zf, alpha, of)
    else:
        by_code(zf, activation, of)


@jit
def activation_backward(da, z, a, activation, alpha, out):
    """out = da * g'(z), all (m, k); out may be da.

    sigmoid and tanh take g' from the saved a = g(z), softmax applies its Jacobian; the
    other derivatives are rounded to the dtype before the product, as the reference
    stores them in an array of that dtype.
    """
    if activation == codes.SOFTMAX:
        softmax_backward(a, da, out)
        return
    n = da.size
    daf = da.reshape(n)
    zf = z.reshape(n)
    af = a.reshape(n)
    of = out.reshape(n)
    if activation == codes.SIGMOID:
        for i in range(n):
            of[i] = daf[i] * _sigmoid_d_from_a(af[i])
    elif activation == codes.TANH:
        for i in range(n):
            of[i] = daf[i] * _tanh_d_from_a(af[i])
    elif activation == codes.IDENTITY:
        for i in range(n):
            of[i] = daf[i] * _identity_d(zf[i])
    elif activation == codes.STEP:
        for i in range(n):
            of[i] = daf[i] * _step_d(zf[i])
    elif activation == codes.RELU:
        for i in range(n):
            of[i] = daf[i] * _relu_d(zf[i])
    elif activation == codes.LEAKY_RELU:
        alpha_ = cast_like(z, alpha)
        for i in range(n):
            of[i] = daf[i] * _leaky_relu_d(zf[i], alpha_)
    elif activation == codes.ELU:
        for i in range(n):
            of[i] = daf[i] * cast_like(daf, _elu_d(zf[i], alpha))
    else:
        for i in range(n):
            of[i] = daf[i] * cast_like(daf, _g_d(activation, np.float64(zf[i])))
