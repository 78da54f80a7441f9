"""Activation functions g and their derivatives g', written literally from docs/spec.md §3.

Contract shared by every backend (same names, same arguments):

- ``z``, ``out``: arrays of one float dtype and one shape; ``out`` may be ``z``.
  Elementwise functions accept any shape; ``softmax`` and ``softmax_backward`` are
  row-wise on 2-D arrays.
- Where a formula calls exp, log or tanh, float32 inputs are evaluated in float64 and
  rounded once, so results are within about half an ULP of exact.
- NaN propagates through every function and derivative (a NaN input gives NaN).
"""

import numpy as np
import scipy.special

from .. import registry
from .._kernels import codes

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


def _wide(z):
    """z in float64 (no copy when it already is)."""
    return np.asarray(z, dtype=np.float64)


# --- forward: out = g(z) -----------------------------------------------------------


def identity(z, out):
    """g(z) = z."""
    out[...] = z
    return out


def step(z, out):
    """g(z) = 1 if z >= 0 else 0 (the perceptron's threshold)."""
    out[...] = np.where(np.isnan(z), z, z >= 0)
    return out


def sigmoid(z, out):
    """g(z) = 1 / (1 + e^-z), evaluated so that e^x never overflows."""
    x = _wide(z)
    e = np.exp(-np.abs(x))  # in (0, 1]
    out[...] = np.where(x >= 0, 1 / (1 + e), e / (1 + e))
    return out


def tanh(z, out):
    """g(z) = tanh z."""
    out[...] = np.tanh(_wide(z))
    return out


def relu(z, out):
    """g(z) = max(0, z); relu(-0.0) is +0.0."""
    out[...] = np.maximum(z, 0)
    return out


def leaky_relu(z, alpha, out):
    """g(z) = z if z > 0 else alpha z."""
    out[...] = np.where(z > 0, z, alpha * z)
    return out


def elu(z, alpha, out):
    """g(z) = z if z > 0 else alpha (e^z - 1)."""
    x = _wide(z)
    out[...] = np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0)))
    return out


def softmax(z, out):
    """Row-wise g(z)_k = e^(z_k - max z) / sum_j e^(z_j - max z), z of shape (m, k)."""
    x = _wide(z)
    e = np.exp(x - x.max(axis=1, keepdims=True))
    out[...] = e / e.sum(axis=1, keepdims=True)
    return out


def _sigmoid_parts(x):
    """(e, s): e = e^-|x| and s = sigmoid(x) from it, x float64 (no overflow)."""
    e = np.exp(-np.abs(x))
    return e, np.where(x >= 0, 1.0, e) / (1 + e)


# Where a product x * h has h = 0 (x far in the negative tail, -inf included) the value
# is -0.0, as for a finite x: -inf * 0 would be NaN.
def _times(x, h):
    with np.errstate(invalid="ignore"):
        return np.where(h == 0, -0.0, x * h)


def gelu(z, out):
    """g(z) = z Phi(z) = z erfc(-z / sqrt 2) / 2, the exact (erf) form.

    erfc is SciPy's, in every backend, so the value is the same bit for bit; written
    with erfc rather than 1 + erf(z / sqrt 2), which cancels to 0 below z = -8.
    """
    x = _wide(z)
    out[...] = _times(0.5 * x, scipy.special.erfc(-x * _SQRT1_2))
    return out


def silu(z, out):
    """g(z) = z sigmoid(z)."""
    x = _wide(z)
    out[...] = _times(x, _sigmoid_parts(x)[1])
    return out


def selu(z, out):
    """g(z) = lambda z if z > 0 else lambda alpha (e^z - 1), registry's lambda and alpha."""
    x = _wide(z)
    neg = _SELU_SCALE_ALPHA * np.expm1(np.minimum(x, 0))
    with np.errstate(over="ignore"):  # lambda z beyond the dtype's range is inf, as compiled
        out[...] = np.where(x > 0, _SELU_SCALE * x, neg)
    return out


def _mish_t(x, e):
    """t = tanh(softplus(x)) from e = e^-|x|, as a ratio without tanh or log:
    (1 + 2e) / (1 + 2e + 2e^2) for x >= 0, e(e + 2) / (e(e + 2) + 2) below."""
    p_pos = 1 + 2 * e
    p_neg = e * (e + 2)
    return np.where(x >= 0, p_pos / (p_pos + 2 * e * e), p_neg / (p_neg + 2))


def mish(z, out):
    """g(z) = z tanh(softplus(z)), softplus(z) = log(1 + e^z)."""
    x = _wide(z)
    e = np.exp(-np.abs(x))
    out[...] = _times(x, _mish_t(x, e))
    return out


_SQRT1_2 = 0.7071067811865476  # 1 / sqrt 2, rounded
_INV_SQRT_2PI = 0.3989422804014327  # 1 / sqrt(2 pi), rounded
_SELU_SCALE = registry.SELU_SCALE
_SELU_SCALE_ALPHA = registry.SELU_SCALE * registry.SELU_ALPHA


# --- derivatives: out = g'(z) ------------------------------------------------------


def _nan_where_nan(z, d):
    """d, with NaN wherever z is NaN: a NaN input must not turn into a zero gradient."""
    return np.where(np.isnan(z), z, d)


def identity_derivative(z, out):
    """g'(z) = 1."""
    out[...] = _nan_where_nan(z, 1)
    return out


def step_derivative(z, out):
    """g'(z) = 0: the step function is not trainable by backpropagation."""
    out[...] = _nan_where_nan(z, 0)
    return out


def sigmoid_derivative(z, out):
    """g'(z) = s (1 - s), s = sigmoid(z)."""
    s = sigmoid(_wide(z), np.empty(np.shape(z)))
    out[...] = s * (1 - s)
    return out


def tanh_derivative(z, out):
    """g'(z) = 1 - tanh^2 z."""
    t = np.tanh(_wide(z))
    out[...] = 1 - t * t
    return out


def relu_derivative(z, out):
    """g'(z) = 1 if z > 0 else 0 (so g'(0) = 0)."""
    out[...] = _nan_where_nan(z, z > 0)
    return out


def leaky_relu_derivative(z, alpha, out):
    """g'(z) = 1 if z > 0 else alpha."""
    out[...] = _nan_where_nan(z, np.where(z > 0, 1, alpha))
    return out


def elu_derivative(z, alpha, out):
    """g'(z) = 1 if z > 0 else alpha e^z."""
    x = _wide(z)
    out[...] = np.where(x > 0, 1, alpha * np.exp(np.minimum(x, 0)))  # NaN stays NaN
    return out


def _plus(t, x, h):
    """t + x h, or t where h = 0 (x infinite there would give NaN)."""
    with np.errstate(invalid="ignore"):
        return np.where(h == 0, t, t + x * h)


def gelu_derivative(z, out):
    """g'(z) = Phi(z) + z phi(z), phi(z) = e^(-z^2 / 2) / sqrt(2 pi)."""
    x = _wide(z)
    cdf = 0.5 * scipy.special.erfc(-x * _SQRT1_2)
    with np.errstate(invalid="ignore", over="ignore"):
        pdf = np.exp(-0.5 * x * x) * _INV_SQRT_2PI
    out[...] = _plus(cdf, x, pdf)
    return out


def silu_derivative(z, out):
    """g'(z) = s + z s (1 - s), s = sigmoid(z)."""
    x = _wide(z)
    _, s = _sigmoid_parts(x)
    out[...] = _plus(s, x, s * (1 - s))
    return out


def selu_derivative(z, out):
    """g'(z) = lambda if z > 0 else lambda alpha e^z."""
    x = _wide(z)
    out[...] = np.where(x > 0, _SELU_SCALE, _SELU_SCALE_ALPHA * np.exp(np.minimum(x, 0)))
    return out


def mish_derivative(z, out):
    """g'(z) = t + z (1 - t^2) sigmoid(z), t = tanh(softplus(z))."""
    x = _wide(z)
    e, s = _sigmoid_parts(x)
    t = _mish_t(x, e)
    out[...] = _plus(t, x, (1 - t * t) * s)
    return out


def softmax_backward(a, da, out):
    """Row-wise Jacobian-vector product of softmax: dz = a * (da - sum_j da_j a_j).

    ``a`` is the softmax output, ``da = dL/da``; all of shape (m, k).
    """
    out[...] = a * (da - np.sum(da * a, axis=1, keepdims=True))
    return out


# --- fused forms used by the dense layer ---------------------------------------------

_FORWARD = {
    codes.IDENTITY: lambda z, alpha, out: identity(z, out),
    codes.STEP: lambda z, alpha, out: step(z, out),
    codes.SIGMOID: lambda z, alpha, out: sigmoid(z, out),
    codes.TANH: lambda z, alpha, out: tanh(z, out),
    codes.RELU: lambda z, alpha, out: relu(z, out),
    codes.LEAKY_RELU: leaky_relu,
    codes.ELU: elu,
    codes.SOFTMAX: lambda z, alpha, out: softmax(z, out),
    codes.GELU: lambda z, alpha, out: gelu(z, out),
    codes.SILU: lambda z, alpha, out: silu(z, out),
    codes.SELU: lambda z, alpha, out: selu(z, out),
    codes.MISH: lambda z, alpha, out: mish(z, out),
}

# g'(z) from z, for activation_backward (sigmoid, tanh and softmax use the saved a).
_DERIVATIVE = {
    codes.IDENTITY: lambda z, alpha, out: identity_derivative(z, out),
    codes.STEP: lambda z, alpha, out: step_derivative(z, out),
    codes.RELU: lambda z, alpha, out: relu_derivative(z, out),
    codes.LEAKY_RELU: leaky_relu_derivative,
    codes.ELU: elu_derivative,
    codes.GELU: lambda z, alpha, out: gelu_derivative(z, out),
    codes.SILU: lambda z, alpha, out: silu_derivative(z, out),
    codes.SELU: lambda z, alpha, out: selu_derivative(z, out),
    codes.MISH: lambda z, alpha, out: mish_derivative(z, out),
}


def activation_forward(z, activation, alpha, out):
    """out = g(z) for the activation with integer code ``activation`` (see codes.py).

    ``z`` and ``out`` are 2-D (m, k) so that softmax can work row-wise.
    """
    return _FORWARD[activation](z, alpha, out)


def activation_backward(da, z, a, activation, alpha, out):
    """out = da * g'(z), with a = g(z) the saved forward output; all of shape (m, k).

    Where g' can be written through g itself (sigmoid: a (1 - a); tanh: 1 - a^2) the
    derivative is taken from the saved ``a``, as a training step does; the others use
    ``z``. No transcendental call remains except elu's e^z.
    """
    if activation == codes.SIGMOID:
        out[...] = da * (a * (1 - a))
    elif activation == codes.TANH:
        out[...] = da * (1 - a * a)
    elif activation == codes.SOFTMAX:
        softmax_backward(a, da, out)
    else:
        if activation not in _DERIVATIVE:
            raise ValueError(f"unknown activation code {activation}")
        d = np.empty_like(z)
        _DERIVATIVE[activation](z, alpha, d)
        out[...] = da * d
    return out
