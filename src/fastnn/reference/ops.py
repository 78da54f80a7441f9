"""One training step's operations, each written once as the kernel calls it makes.

A step (docs/spec.md §9, "One batch") is: every layer's forward, the loss, its
gradient and every layer's backward, the global gradient norm, clipping, and the
optimizer update. The functions below are those operations for the layers fastnn's
kernels know (a dense layer, a batch normalisation, a dropout), each the sequence of
kernel calls it makes. Both training paths are built from them:

- the layers' passes (``fastnn.layers``: ``Dense``, ``BatchNorm``, ``Dropout``), the
  model's loss (``fastnn.losses``) and the optimizers (``fastnn.optim``), which the
  step-by-step path runs with the model backend's raw kernels;
- the reference epoch (:func:`fastnn.reference.training.train_epoch`), the contract
  of the compiled whole-epoch kernels, which runs them with the reference kernels.
  Driven through a backend's kernels instead
  (:func:`fastnn.reference.training.train_epoch_with`), it is that backend's step
  path: the same functions, the same kernels, the same order, the same bits.

``k``, the first argument of every function, is a kernel namespace: a backend's raw
kernel functions (the names of ``fastnn.reference.__all__``, activations and
optimizers by code: ``fastnn.backend(name)._raw``) or :data:`REFERENCE`, the
reference's own. Arrays are as the raw kernels take them (C-contiguous, the model's
dtype); nothing is checked here, and nothing is allocated except where said. Layer
logic (which layers follow which, where their arrays live) is not here: the callers
own it.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np

from .._kernels import codes
from . import activations, csr, dense, losses, normalization, optimizers
from .masks import dropout_mask

__all__ = [
    "REFERENCE",
    "batch_norm_backward",
    "batch_norm_forward",
    "clip",
    "dense_backward",
    "dense_forward",
    "dropout_backward",
    "dropout_forward",
    "gradient_norm",
    "loss_gradient",
    "loss_value",
    "n_correct",
    "update",
]

# The reference's kernels as a namespace, like a backend's raw ones.
REFERENCE = SimpleNamespace(
    **{
        name: getattr(mod, name)
        for mod in (activations, dense, csr, losses, optimizers, normalization)
        for name in mod.__all__
    }
)


# --- layers ------------------------------------------------------------------------------
def dense_forward(k, x, w, b, act, alpha, z, a):
    """z = x W + b and a = g(z) for the activation code ``act`` (a may be z for the
    identity)."""
    k.dense_forward(x, w, b, act, alpha, z, a)


def dense_backward(k, x, w, z, a, g, act, alpha, dw, db, g_in=None):
    """A dense layer's backward from g = dL/da (overwritten by dL/dz): dW and db
    written, and dL/dx into ``g_in`` unless it is None (the lowest trainable layer)."""
    k.dense_backward(x, z, a, g, act, alpha, g, dw, db)
    if g_in is not None:
        k.dense_input_gradient(g, w, g_in)


def batch_norm_forward(
    k, frozen, x, gamma, beta, running_mean, running_var, eps, momentum, act, alpha, zn, a,
    x_hat, inv_std,
):  # fmt: skip
    """a = g(zn), zn = x normalised with the batch statistics (saving x_hat and inv_std
    and moving the running statistics by ``momentum``), or with the running statistics
    for a ``frozen`` layer; zn may be x (docs/spec.md §7)."""
    if frozen:
        k.batch_norm_eval(x, gamma, beta, running_mean, running_var, eps, zn)
    else:
        k.batch_norm_train(
            x, gamma, beta, eps, momentum, running_mean, running_var, zn, x_hat, inv_std
        )
    k.activation_forward(zn, act, alpha, a)


def batch_norm_backward(
    k, frozen, g, zn, a, gamma, running_var, eps, act, alpha, x_hat, inv_std, h, g_in, dgamma,
    dbeta, work=None,
):  # fmt: skip
    """From g = dL/da: h = dL/dzn (h may be g), then dL/dx into ``g_in`` (may be g)
    with dgamma and dbeta written; a ``frozen`` layer's statistics are constants, so
    dL/dx = h gamma / sqrt(running_var + eps), the factor in float64 (in ``work``,
    float64 (k,), allocated when None) rounded to the dtype, and dgamma, dbeta are not
    written."""
    k.activation_backward(g, zn, a, act, alpha, h)
    if frozen:
        f = np.empty(gamma.shape[0], np.float64) if work is None else work
        np.add(running_var, eps, out=f, dtype=np.float64)
        np.sqrt(f, out=f)
        np.divide(1.0, f, out=f)
        np.multiply(gamma, f, out=f, dtype=np.float64)
        # the factor rounded to the dtype once, then one product in the dtype
        np.multiply(h, f, out=g_in, dtype=g.dtype, casting="same_kind")
    else:
        k.batch_norm_backward(h, x_hat, gamma, inv_std, g_in, dgamma, dbeta)


def dropout_forward(k, seed, t, stream, rate, x, mask, out, work=None, tmp=None, ramp=None):
    """out = x mask / (1 - rate) with the keep mask of stream ``stream`` (the dense
    layer's index) in training forward t (docs/spec.md §7; ``work``, ``tmp``, ``ramp``:
    :func:`fastnn.reference.masks.dropout_mask`'s scratch, allocated when None)."""
    dropout_mask(seed, t, stream, rate, mask, work, tmp, ramp)
    k.dropout(x.reshape(-1), mask.reshape(-1), rate, out.reshape(-1))


def dropout_backward(k, rate, mask, g):
    """g = g mask / (1 - rate) in place: the same formula carries the gradient back."""
    gf = g.reshape(-1)
    k.dropout(gf, mask.reshape(-1), rate, gf)


# --- loss ----------------------------------------------------------------------------------
def loss_value(k, loss_code, out, t, w):
    """The batch's mean loss (weighted by w, float64 (m,), unless empty) as a float;
    t: float targets like out, or int64 class indices (LOSS_SPARSE_CROSS_ENTROPY)."""
    if loss_code == codes.LOSS_MSE:
        return k.mse(out.reshape(-1), t.reshape(-1), w)
    if loss_code == codes.LOSS_BINARY_CROSS_ENTROPY:
        return k.binary_cross_entropy(out, t, w)
    if loss_code == codes.LOSS_CROSS_ENTROPY:
        return k.cross_entropy(out, t, w)
    if loss_code == codes.LOSS_POISSON:
        return k.poisson(out.reshape(-1), t.reshape(-1), w)
    return k.sparse_cross_entropy(out, t, w)


def loss_gradient(k, loss_code, out, t, g, w):
    """dL/d(out) written into g (the 1/m, or 1/S with weights, included)."""
    if loss_code == codes.LOSS_MSE:
        k.mse_gradient(out.reshape(-1), t.reshape(-1), g.reshape(-1), w)
    elif loss_code == codes.LOSS_BINARY_CROSS_ENTROPY:
        k.binary_cross_entropy_gradient(out, t, g, w)
    elif loss_code == codes.LOSS_CROSS_ENTROPY:
        k.cross_entropy_gradient(out, t, g, w)
    elif loss_code == codes.LOSS_POISSON:
        k.poisson_gradient(out.reshape(-1), t.reshape(-1), g.reshape(-1), w)
    else:
        k.sparse_cross_entropy_gradient(out, t, g, w)


def n_correct(loss_code, out, t) -> int:
    """Rows predicted right: argmax for the cross-entropies (first maximum), every
    column's sign for binary cross-entropy, none for the regressions."""
    if loss_code == codes.LOSS_SPARSE_CROSS_ENTROPY:
        return int(np.count_nonzero(np.argmax(out, axis=1) == t))
    if loss_code == codes.LOSS_CROSS_ENTROPY:
        return int(np.count_nonzero(np.argmax(out, axis=1) == np.argmax(t, axis=1)))
    if loss_code == codes.LOSS_BINARY_CROSS_ENTROPY:
        return int(np.count_nonzero(((out > 0) == (t > 0.5)).all(axis=1)))
    return 0


# --- the update ------------------------------------------------------------------------------
# ``segments``: (start, stop, decayed) pieces of params / grads, in order (an (S, 3)
# int64 array or a sequence of triples).


def gradient_norm(k, grads, segments) -> float:
    """sqrt of the sum over the segments, in order, of squared_norm (float64)."""
    sq = 0.0
    for start, stop, _ in segments:
        sq += k.squared_norm(grads[start:stop])
    return math.sqrt(sq)


def clip(k, grads, segments, clip_norm, norm) -> None:
    """Every segment scaled by clip_norm / norm when 0 < clip_norm < norm."""
    if 0 < clip_norm < norm:
        factor = clip_norm / norm
        for start, stop, _ in segments:
            k.scale_inplace(grads[start:stop], factor)


def update(k, params, grads, state1, state2, segments, opt_code, t, lr, hyper, weight_decay):
    """Every segment updated by optimizer ``opt_code`` at step t (>= 1), with
    ``weight_decay`` where the segment is decayed and 0 elsewhere; state1, state2: the
    optimizer's state buffers (params' length, or empty when unused)."""
    for start, stop, decayed in segments:
        s1 = state1[start:stop] if state1.size else state1
        s2 = state2[start:stop] if state2.size else state2
        k.optimizer_step(
            params[start:stop],
            grads[start:stop],
            s1,
            s2,
            opt_code,
            t,
            lr,
            hyper,
            weight_decay if decayed else 0.0,
        )
