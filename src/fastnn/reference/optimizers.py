"""Optimizer updates (docs/spec.md §5), in place on flat parameter buffers.

Contract shared by every backend:

- ``param``, ``grad`` and the state buffers are 1-D, C-contiguous, of one float dtype
  and one length; ``param`` and the state are updated in place, ``grad`` is read only.
- Hyperparameters are Python floats. Every scalar expression of them (``1 - beta1``,
  ``1 - beta1 ** step``, ``lr * weight_decay``) is computed in float64 and cast once to
  the array dtype; every array expression is then evaluated in the array dtype in the
  order written here. The compiled kernels follow the same order with no FMA, so they
  equal this reference bit for bit.
- ``weight_decay`` is L2 regularisation, ``g = grad + weight_decay * param`` (a local
  value, the gradient buffer is not modified); AdamW's decay is decoupled instead.

``optimizer_step`` is the one entry point by code (the optimizer's registry row): the
step path (``fastnn.optim``) and the whole-epoch kernel call it, and it calls the
optimizer's ``<name>_step`` with the hyperparameters the row puts in ``hyper``. Adding
an optimizer here: its ``<name>_step`` (in ``__all__``) and its branch below.
"""

import numpy as np

from .._kernels import codes

__all__ = [
    "sgd_step",
    "momentum_step",
    "nesterov_step",
    "adagrad_step",
    "rmsprop_step",
    "adam_step",
    "adamw_step",
    "adamax_step",
    "optimizer_step",
    "squared_norm",
    "scale_inplace",
]


def _decayed(grad, param, weight_decay):
    """The gradient of the loss plus weight_decay/2 ||param||^2."""
    if weight_decay != 0:
        return grad + weight_decay * param
    return grad


def sgd_step(param, grad, lr, weight_decay):
    """theta -= lr g."""
    g = _decayed(grad, param, weight_decay)
    param -= lr * g


def momentum_step(param, grad, velocity, lr, momentum, dampening, weight_decay):
    """v = beta v + (1 - d) g; theta -= lr v."""
    g = _decayed(grad, param, weight_decay)
    velocity[...] = momentum * velocity + (1 - dampening) * g
    param -= lr * velocity


def nesterov_step(param, grad, velocity, lr, momentum, dampening, weight_decay):
    """v = beta v + (1 - d) g; theta -= lr (g + beta v)."""
    g = _decayed(grad, param, weight_decay)
    velocity[...] = momentum * velocity + (1 - dampening) * g
    param -= lr * (g + momentum * velocity)


def adagrad_step(param, grad, sum_sq, lr, eps, eps_inside_sqrt, weight_decay):
    """G += g^2; theta -= lr g / (sqrt(G) + eps), or lr g / sqrt(G + eps)."""
    g = _decayed(grad, param, weight_decay)
    sum_sq += g * g
    denom = np.sqrt(sum_sq + eps) if eps_inside_sqrt else np.sqrt(sum_sq) + eps
    param -= lr * g / denom


def rmsprop_step(param, grad, sq_avg, lr, rho, eps, eps_inside_sqrt, weight_decay):
    """s = rho s + (1 - rho) g^2; theta -= lr g / (sqrt(s) + eps), or lr g / sqrt(s + eps)."""
    g = _decayed(grad, param, weight_decay)
    sq_avg[...] = rho * sq_avg + (1 - rho) * (g * g)
    denom = np.sqrt(sq_avg + eps) if eps_inside_sqrt else np.sqrt(sq_avg) + eps
    param -= lr * g / denom


def adam_step(param, grad, m, v, step, lr, beta1, beta2, eps, weight_decay):
    """Adam (Kingma & Ba) at step t = ``step`` >= 1, with bias corrections.

    m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g^2;
    theta -= lr m_hat / (sqrt(v_hat) + eps), m_hat = m / (1 - b1^t), v_hat = v / (1 - b2^t).
    """
    g = _decayed(grad, param, weight_decay)
    m[...] = beta1 * m + (1 - beta1) * g
    v[...] = beta2 * v + (1 - beta2) * (g * g)
    m_hat = m / (1 - beta1**step)
    v_hat = v / (1 - beta2**step)
    param -= lr * m_hat / (np.sqrt(v_hat) + eps)


def adamw_step(param, grad, m, v, step, lr, beta1, beta2, eps, weight_decay):
    """AdamW: theta -= lr wd theta (decoupled decay), then the Adam step without L2.

    With wd = 0 the decay is skipped (theta - 0 theta would turn -0.0 into +0.0): the
    Adam step exactly.
    """
    if weight_decay != 0:
        param -= lr * weight_decay * param
    adam_step(param, grad, m, v, step, lr, beta1, beta2, eps, 0.0)


def adamax_step(param, grad, m, u, step, lr, beta1, beta2, eps, weight_decay):
    """Adamax (Kingma & Ba, section 7.1) at step t = ``step`` >= 1.

    m = b1 m + (1 - b1) g; u = max(b2 u, abs(g) + eps); theta -= (lr / (1 - b1^t)) m / u,
    max as np.maximum (a NaN wins; a tie takes the second argument: max(-0, +0) is +0).
    """
    g = _decayed(grad, param, weight_decay)
    m[...] = beta1 * m + (1 - beta1) * g
    u[...] = np.maximum(beta2 * u, np.abs(g) + eps)
    param -= lr / (1 - beta1**step) * m / u


def optimizer_step(param, grad, state1, state2, optimizer, step, lr, hyper, weight_decay):
    """One update of the optimizer with code ``optimizer`` (``codes.OPT_*``), in place.

    ``state1``, ``state2``: its state buffers in its row's order (unused ones may be
    empty); ``step``: t >= 1 (read by the optimizers with bias corrections); ``hyper``:
    the kernels' vector (registry.HYPER_SLOTS), of which the slots h0, h1, eps and
    eps_inside_sqrt are read; ``weight_decay``: this call's (0 on a segment that is not
    decayed), not hyper's.
    """
    h0, h1 = float(hyper[codes.HYPER_H0]), float(hyper[codes.HYPER_H1])
    eps, inside = float(hyper[codes.HYPER_EPS]), bool(hyper[codes.HYPER_EPS_INSIDE_SQRT])
    lr, wd = float(lr), float(weight_decay)
    if optimizer == codes.OPT_SGD:
        sgd_step(param, grad, lr, wd)
    elif optimizer == codes.OPT_MOMENTUM:
        momentum_step(param, grad, state1, lr, h0, h1, wd)
    elif optimizer == codes.OPT_NESTEROV:
        nesterov_step(param, grad, state1, lr, h0, h1, wd)
    elif optimizer == codes.OPT_ADAGRAD:
        adagrad_step(param, grad, state1, lr, eps, inside, wd)
    elif optimizer == codes.OPT_RMSPROP:
        rmsprop_step(param, grad, state1, lr, h0, eps, inside, wd)
    elif optimizer == codes.OPT_ADAM:
        adam_step(param, grad, state1, state2, step, lr, h0, h1, eps, wd)
    elif optimizer == codes.OPT_ADAMW:
        adamw_step(param, grad, state1, state2, step, lr, h0, h1, eps, wd)
    elif optimizer == codes.OPT_ADAMAX:
        adamax_step(param, grad, state1, state2, step, lr, h0, h1, eps, wd)
    else:
        raise ValueError(f"optimizer_step: unknown optimizer code {optimizer}")


def squared_norm(x):
    """sum x^2 over the whole buffer, accumulated in float64 (for global-norm clipping)."""
    return float(np.sum(np.square(np.asarray(x, dtype=np.float64))))


def scale_inplace(x, factor):
    """``x *= factor``, the factor cast once to the dtype of x."""
    x *= factor
