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
    "identity_derivative",
    "step_derivative",
    "sigmoid_derivative",
    "tanh_derivative",
    "relu_derivative",
    "leaky_relu_derivative",
    "elu_derivative",
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
        d = np.empty_like(z)
        if activation == codes.IDENTITY:
            identity_derivative(z, d)
        elif activation == codes.STEP:
            step_derivative(z, d)
        elif activation == codes.RELU:
            relu_derivative(z, d)
        elif activation == codes.LEAKY_RELU:
            leaky_relu_derivative(z, alpha, d)
        elif activation == codes.ELU:
            elu_derivative(z, alpha, d)
        else:
            raise ValueError(f"unknown activation code {activation}")
        out[...] = da * d
    return out
