"""Numba kernels for the optimizer updates (contract: ``fastnn.reference.optimizers``).

One pass over flat, C-contiguous buffers, in place. Every scalar expression of the
hyperparameters is computed in float64 and cast once to the array dtype; the array
expressions then run in the array dtype in the reference's order, so the results equal
the reference bit for bit. The L2 term ``g = grad + wd * param`` is a local value (grad
is never written) and, as in the reference, only exists when wd != 0.

``optimizer_step`` is the one entry point by code, inlined into its callers (the
whole-epoch kernel); adding an optimizer here: its ``<name>_step`` and its branch there.

The ``*_still`` loops keep subnormal states out of the arithmetic of their still lanes
(docs/spec.md §5, "Subnormal moments"): the arithmetic sees +0 in place of the state
(``zeroed_where``, a bit mask), its step is then a zero, and the parameter is written
from the plain formula in every lane (only the states are selected). Both keep LLVM from
moving the state's product back into every lane: with ``0 if still else x`` (a branch)
or ``p if still else upd`` (the step computed only under ``not still``, where the state
is just ``x``), the vector loop multiplied every lane's state, subnormals included, with
a microcode assist each (measured: Momentum's still loop 7.5, Adamax's 13 against 1-2 ns
a value when all lanes are still).
"""

import math

import numpy as np

from . import codes
from ._numba_common import (
    PW_BLOCK,
    cast_like,
    div_by,
    float_limits,
    jit,
    jit_inline,
    lane_squares,
    lanes_total,
    np_maximum,
    pairwise_combine,
    pairwise_descend,
    pairwise_stack,
    still_decay,
    still_pmin,
    zeroed_where,
)

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


@jit
def sgd_step(param, grad, lr, weight_decay):
    """theta -= lr g, g = grad (+ wd theta)."""
    lr_ = cast_like(param, lr)
    wd = cast_like(param, weight_decay)
    decay = weight_decay != 0
    for i in range(param.size):
        p = param[i]
        g = grad[i] + wd * p if decay else grad[i]
        param[i] = p - lr_ * g


@jit
def momentum_step(param, grad, velocity, lr, momentum, dampening, weight_decay):
    """v = beta v + (1 - d) g; theta -= lr v."""
    _momentum(param, grad, velocity, lr, momentum, dampening, weight_decay, False)


@jit
def nesterov_step(param, grad, velocity, lr, momentum, dampening, weight_decay):
    """v = beta v + (1 - d) g; theta -= lr (g + beta v)."""
    _momentum(param, grad, velocity, lr, momentum, dampening, weight_decay, True)


@jit
def _momentum(param, grad, velocity, lr, momentum, dampening, weight_decay, nesterov):
    """Momentum or Nesterov; blocks whose velocity holds a subnormal run
    ``_momentum_still`` (the same bits, as ``_adam_still``)."""
    lr_ = cast_like(param, lr)
    beta = cast_like(param, momentum)
    keep = cast_like(param, 1.0 - dampening)
    wd = cast_like(param, weight_decay)
    decay = weight_decay != 0
    hyper = (lr_, beta, keep, wd)
    tiny = float_limits(param)[0]
    pmin = cast_like(param, np.inf)
    # +0 <= beta <= 1 and keep >= +0 (fl(beta v) + keep g has v's and g's signs);
    # |update| <= 2 lr tiny in a still lane
    signs = math.copysign(1.0, beta) > 0 and math.copysign(1.0, keep) > 0
    if signs and beta <= 1 and keep >= 0 and math.isfinite(keep):
        pmin = still_pmin(param, 2.0 * abs(float(lr_)), 1.0)
    tiny_ = cast_like(param, tiny)
    n = param.size
    i0 = 0
    while i0 < n:
        i1, still = _still_run(velocity, tiny_, i0, n, True)
        if not still:
            _momentum_block(param, grad, velocity, hyper, decay, nesterov, i0, i1)
        else:
            _momentum_still(param, grad, velocity, hyper, decay, nesterov, i0, i1, pmin, tiny_)
        i0 = i1


@jit
def _momentum_block(param, grad, velocity, hyper, decay, nesterov, i0, i1):
    """Momentum or Nesterov on [i0, i1)."""
    lr_, beta, keep, wd = hyper
    for j in range(i1 - i0):
        i = np.uint64(i0) + np.uint64(j)
        p = param[i]
        g = grad[i] + wd * p if decay else grad[i]
        v = beta * velocity[i] + keep * g
        velocity[i] = v
        if nesterov:
            param[i] = p - lr_ * (g + beta * v)
        else:
            param[i] = p - lr_ * v


@jit
def _momentum_still(param, grad, velocity, hyper, decay, nesterov, i0, i1, pmin, tiny):
    """Momentum or Nesterov on [i0, i1), the still lanes (g == 0, v zero or subnormal,
    |p| > pmin) without subnormal arithmetic (selects only)."""
    lr_, beta, keep, wd = hyper
    for j in range(i1 - i0):
        i = np.uint64(i0) + np.uint64(j)
        p = param[i]
        g = grad[i] + wd * p if decay else grad[i]
        vv = velocity[i]
        still = (g == 0) & (abs(vv) < tiny) & ((p > pmin) | (p < -pmin))
        v = beta * zeroed_where(still, vv) + keep * g
        upd = p - lr_ * (g + beta * v) if nesterov else p - lr_ * v
        velocity[i] = still_decay(vv, beta, g) if still else v  # keep g: g's zero
        param[i] = upd  # p itself in a still lane (module docstring)


@jit
def adagrad_step(param, grad, sum_sq, lr, eps, eps_inside_sqrt, weight_decay):
    """G += g^2; theta -= lr g / (sqrt(G) + eps), or lr g / sqrt(G + eps)."""
    lr_ = cast_like(param, lr)
    eps_ = cast_like(param, eps)
    wd = cast_like(param, weight_decay)
    decay = weight_decay != 0
    for i in range(param.size):
        p = param[i]
        g = grad[i] + wd * p if decay else grad[i]
        s = sum_sq[i] + g * g
        sum_sq[i] = s
        denom = np.sqrt(s + eps_) if eps_inside_sqrt else np.sqrt(s) + eps_
        param[i] = p - lr_ * g / denom


@jit
def rmsprop_step(param, grad, sq_avg, lr, rho, eps, eps_inside_sqrt, weight_decay):
    """s = rho s + (1 - rho) g^2; theta -= lr g / (sqrt(s) + eps), or lr g / sqrt(s + eps).

    A block whose s holds a subnormal runs ``_rmsprop_still`` (docs/spec.md §5,
    "Subnormal moments"), the others ``_rmsprop_block``.
    """
    lr_ = cast_like(param, lr)
    rho_ = cast_like(param, rho)
    keep_ = cast_like(param, 1.0 - rho)
    eps_ = cast_like(param, eps)
    wd = cast_like(param, weight_decay)
    decay = weight_decay != 0
    hyper = (lr_, rho_, keep_, eps_, wd)
    tiny = cast_like(param, float_limits(param)[0])
    # +0 <= rho <= 1 and keep >= +0 (keep g^2 is +0), lr finite, eps > 0 (the step a zero)
    signs = math.copysign(1.0, rho_) > 0 and math.copysign(1.0, keep_) > 0
    stills = signs and rho_ <= 1 and keep_ >= 0 and math.isfinite(lr_) and eps_ > 0
    n = param.size
    i0 = 0
    while i0 < n:
        i1, still = _still_run(sq_avg, tiny, i0, n, stills)
        if still:
            _rmsprop_still(param, grad, sq_avg, hyper, decay, eps_inside_sqrt, i0, i1, tiny)
        else:
            _rmsprop_block(param, grad, sq_avg, hyper, decay, eps_inside_sqrt, i0, i1)
        i0 = i1


@jit
def _rmsprop_block(param, grad, sq_avg, hyper, decay, inside, i0, i1):
    """RMSProp on [i0, i1)."""
    lr_, rho_, keep, eps_, wd = hyper
    for j in range(i1 - i0):
        i = np.uint64(i0) + np.uint64(j)
        p = param[i]
        g = grad[i] + wd * p if decay else grad[i]
        s = rho_ * sq_avg[i] + keep * (g * g)
        sq_avg[i] = s
        denom = np.sqrt(s + eps_) if inside else np.sqrt(s) + eps_
        param[i] = p - lr_ * g / denom


@jit
def _rmsprop_still(param, grad, sq_avg, hyper, decay, inside, i0, i1, tiny):
    """RMSProp on [i0, i1), whose still lanes (g == 0, s >= 0 zero or subnormal) compute
    with s = 0 and take s = fl(rho s) from ``still_decay``; p takes the plain formula's
    value (the step lr g / denom is a zero for any denom > 0)."""
    lr_, rho_, keep, eps_, wd = hyper
    zero = cast_like(param, 0.0)
    for j in range(i1 - i0):
        i = np.uint64(i0) + np.uint64(j)
        p = param[i]
        g = grad[i] + wd * p if decay else grad[i]
        ss = sq_avg[i]
        still = (g == 0) & (ss >= 0) & (ss < tiny)
        s = rho_ * zeroed_where(still, ss) + keep * (g * g)
        denom = np.sqrt(s + eps_) if inside else np.sqrt(s) + eps_
        param[i] = p - lr_ * g / denom
        sq_avg[i] = still_decay(ss, rho_, zero) if still else s  # keep g^2: +0


# Values a block, whose state is looked over for a subnormal first (fastnn_simd.h's
# FNN_STILL_BLOCK), then in steps of STILL_SUB values when it holds one (FNN_STILL_SUB).
# The blocks' loops index with unsigned integers: a signed start makes Numba test every
# index for wraparound, which stops the loops vectorising.
STILL_BLOCK = 256
STILL_SUB = 32


@jit
def _still_run(x, tiny, i0, n, look):
    """The next run from i0 (before n), as fastnn_simd.h's fnn_still_run: at most
    STILL_BLOCK values in steps of STILL_SUB, ``(i1, True)`` for the steps holding a
    subnormal from i0 on, else ``(i1, False)`` up to the next step holding one. look
    False: plain runs of STILL_BLOCK."""
    end = min(n, i0 + STILL_BLOCK)
    first = min(end, i0 + STILL_SUB)
    still = look and _has_subnormal(x, tiny, i0, first)
    if not look or (not still and not _has_subnormal(x, tiny, first, end)):
        return end, False  # a plain block: one look over it
    # the run goes on while the steps are of the first one's kind
    j = first
    while j < end and _has_subnormal(x, tiny, j, min(end, j + STILL_SUB)) == still:
        j += STILL_SUB
    return min(j, end), still


@jit
def _adam(
    param, grad, m, v, lr, beta1, beta2, correction1, correction2, eps, weight_decay, decoupled
):
    """Adam with bias corrections 1 - beta^t given (Python's pow, not Numba's).

    decoupled (AdamW): theta -= (lr wd) theta first when wd != 0 and no L2 term;
    otherwise L2 when wd != 0. A block holding subnormal moments runs ``_adam_still``
    (docs/spec.md §5, "Subnormal moments"), the others ``_adam_block``.
    """
    lr_ = cast_like(param, lr)
    b1 = cast_like(param, beta1)
    k1 = cast_like(param, 1.0 - beta1)
    b2 = cast_like(param, beta2)
    k2 = cast_like(param, 1.0 - beta2)
    c1 = cast_like(param, correction1)
    c2 = cast_like(param, correction2)
    eps_ = cast_like(param, eps)
    wd = cast_like(param, weight_decay)
    lr_wd = cast_like(param, lr * weight_decay)
    decay = weight_decay != 0 and not decoupled
    shrink = weight_decay != 0 and decoupled
    hyper = (lr_, b1, k1, b2, k2, c1, c2, eps_, wd, lr_wd, 1.0 / float(c1), 1.0 / float(c2))
    tiny = float_limits(param)[0]
    pmin = cast_like(param, np.inf)
    den = float(c1) * float(eps_)  # (may underflow to 0: no bound then)
    signs = math.copysign(1.0, b1) > 0 and math.copysign(1.0, b2) > 0
    if den > 0 and c2 > 0 and signs and b1 <= 1 and b2 <= 1:
        # |update| <= 2 lr tiny / (c1 eps) in a still lane
        pmin = still_pmin(param, 2.0 * abs(float(lr_)), den)
    tiny_ = cast_like(param, tiny)
    n = param.size
    i0 = 0
    while i0 < n:
        i1, still = _still_run(m, tiny_, i0, n, True)
        if not still:
            # a correction of 1 (after ~165 steps for beta1 = 0.9 in float32) divides
            # nothing (fastnn_simd.h's fnn_adam_plain)
            _adam_block(param, grad, m, v, hyper, c1 == 1, c2 == 1, decay, shrink, i0, i1)
        else:
            _adam_still(param, grad, m, v, hyper, decay, shrink, i0, i1, pmin, tiny_)
        i0 = i1


@jit
def _has_subnormal(m, tiny, i0, i1):
    """Whether m has a subnormal value in [i0, i1) (comparisons: no assist). Adam's v is
    not looked at: it decays 100 times slower than m, so a subnormal v comes after a
    subnormal m (either loop gives the same bits; only the time differs)."""
    found = False
    for j in range(i1 - i0):
        i = np.uint64(i0) + np.uint64(j)
        mi = m[i]
        found |= (mi != 0) & (abs(mi) < tiny)
    return found


@jit
def _adam_block(param, grad, m, v, hyper, unit1, unit2, decay, shrink, i0, i1):
    """Adam on [i0, i1); unit1, unit2: the corrections are 1 (m / 1 is m exactly)."""
    lr_, b1, k1, b2, k2, c1, c2, eps_, wd, lr_wd, inv1, inv2 = hyper
    for j in range(i1 - i0):
        i = np.uint64(i0) + np.uint64(j)
        p = param[i]
        if shrink:
            p = p - lr_wd * p
        g = grad[i] + wd * p if decay else grad[i]
        mi = b1 * m[i] + k1 * g
        m[i] = mi
        vi = b2 * v[i] + k2 * (g * g)
        v[i] = vi
        mh = mi if unit1 else div_by(mi, c1, inv1)
        vh = vi if unit2 else div_by(vi, c2, inv2)
        param[i] = p - lr_ * mh / (np.sqrt(vh) + eps_)


@jit
def _adam_still(param, grad, m, v, hyper, decay, shrink, i0, i1, pmin, tiny):
    """Adam on [i0, i1) where the still lanes (g == 0, m zero or subnormal, v >= 0,
    |p| > pmin) never enter the arithmetic: their m (and a subnormal v) by
    ``still_decay``, p the plain formula's (its step is a zero there)."""
    lr_, b1, k1, b2, k2, c1, c2, eps_, wd, lr_wd, _, _ = hyper  # (divides: below)
    zero = cast_like(param, 0.0)
    for j in range(i1 - i0):
        i = np.uint64(i0) + np.uint64(j)
        p = param[i]
        if shrink:
            p = p - lr_wd * p
        g = grad[i] + wd * p if decay else grad[i]
        mv, vv = m[i], v[i]
        v_sub = (vv != 0) & (vv < tiny)
        still = (g == 0) & (abs(mv) < tiny) & (vv >= 0) & (vv < np.inf)  # b2 inf: NaN
        still &= (p > pmin) | (p < -pmin)
        mi = b1 * zeroed_where(still, mv) + k1 * g
        vi = b2 * zeroed_where(still & v_sub, vv) + k2 * (g * g)
        # divisions, not div_by: this loop is bound by its selects and integer work,
        # where div_by's conversions cost more than the divider (docs/spec.md §5)
        upd = p - lr_ * (mi / c1) / (np.sqrt(vi / c2) + eps_)
        # rest1 g adds g's zero, rest2 g^2 +0
        m[i] = still_decay(mv, b1, g) if still else mi
        v[i] = still_decay(vv, b2, zero) if still & v_sub else vi
        param[i] = upd  # p itself in a still lane (module docstring)


def adam_step(param, grad, m, v, step, lr, beta1, beta2, eps, weight_decay):
    """Adam at step t >= 1: m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g^2;
    theta -= lr m_hat / (sqrt(v_hat) + eps), m_hat = m / (1 - b1^t), v_hat = v / (1 - b2^t).

    The bias corrections 1 - beta^t use Python's pow (C pow), as the reference does.
    """
    _adam(
        param,
        grad,
        m,
        v,
        lr,
        beta1,
        beta2,
        1.0 - beta1**step,
        1.0 - beta2**step,
        eps,
        weight_decay,
        False,
    )


def adamw_step(param, grad, m, v, step, lr, beta1, beta2, eps, weight_decay):
    """AdamW: theta -= lr wd theta (decoupled decay), then the Adam step without L2."""
    _adam(
        param,
        grad,
        m,
        v,
        lr,
        beta1,
        beta2,
        1.0 - beta1**step,
        1.0 - beta2**step,
        eps,
        weight_decay,
        True,
    )


@jit
def _adamax(param, grad, m, u, step_size, beta1, beta2, eps, weight_decay):
    """Adamax with its step size lr / (1 - beta1^t) given (Python's pow, not Numba's).
    A block holding a subnormal m runs ``_adamax_still`` (docs/spec.md §5, "Subnormal
    moments"), the others ``_adamax_block``."""
    c = cast_like(param, step_size)
    b1 = cast_like(param, beta1)
    k1 = cast_like(param, 1.0 - beta1)
    b2 = cast_like(param, beta2)
    eps_ = cast_like(param, eps)
    wd = cast_like(param, weight_decay)
    decay = weight_decay != 0
    hyper = (c, b1, k1, b2, eps_, wd)
    tiny = float_limits(param)[0]
    pmin = cast_like(param, np.inf)
    signs = math.copysign(1.0, b1) > 0 and math.copysign(1.0, k1) > 0
    if eps_ > 0 and math.isfinite(c) and signs and b1 <= 1 and k1 >= 0:
        # |step| <= 2 |c| tiny / eps in a still lane (u >= eps after the step)
        pmin = still_pmin(param, 2.0 * abs(float(c)), float(eps_))
    tiny_ = cast_like(param, tiny)
    n = param.size
    i0 = 0
    while i0 < n:
        i1, still = _still_run(m, tiny_, i0, n, True)
        if not still:
            _adamax_block(param, grad, m, u, hyper, decay, i0, i1)
        else:
            _adamax_still(param, grad, m, u, hyper, decay, i0, i1, pmin, tiny_)
        i0 = i1


@jit
def _adamax_block(param, grad, m, u, hyper, decay, i0, i1):
    """Adamax on [i0, i1)."""
    c, b1, k1, b2, eps_, wd = hyper
    for j in range(i1 - i0):
        i = np.uint64(i0) + np.uint64(j)
        p = param[i]
        g = grad[i] + wd * p if decay else grad[i]
        mi = b1 * m[i] + k1 * g
        m[i] = mi
        ui = np_maximum(b2 * u[i], abs(g) + eps_)
        u[i] = ui
        param[i] = p - c * mi / ui


@jit
def _adamax_still(param, grad, m, u, hyper, decay, i0, i1, pmin, tiny):
    """Adamax on [i0, i1), the still lanes (g == 0, m zero or subnormal, u finite >= 0,
    |p| > pmin) without subnormal arithmetic: m by ``still_decay``, p and u plain."""
    c, b1, k1, b2, eps_, wd = hyper
    for j in range(i1 - i0):
        i = np.uint64(i0) + np.uint64(j)
        p = param[i]
        g = grad[i] + wd * p if decay else grad[i]
        mv, uv = m[i], u[i]
        still = (g == 0) & (abs(mv) < tiny) & (uv >= 0) & (uv < np.inf)
        still &= (p > pmin) | (p < -pmin)
        mi = b1 * zeroed_where(still, mv) + k1 * g
        ui = np_maximum(b2 * uv, abs(g) + eps_)
        upd = p - c * mi / ui
        m[i] = still_decay(mv, b1, g) if still else mi  # k1 g: g's zero
        u[i] = ui
        param[i] = upd  # p itself in a still lane (module docstring)


def adamax_step(param, grad, m, u, step, lr, beta1, beta2, eps, weight_decay):
    """Adamax at step t >= 1: m = b1 m + (1 - b1) g; u = max(b2 u, |g| + eps);
    theta -= (lr / (1 - b1^t)) m / u."""
    _adamax(param, grad, m, u, lr / (1.0 - beta1**step), beta1, beta2, eps, weight_decay)


@jit_inline
def _correction(beta, step):
    """1 - beta^t with C pow, as Python's ``beta ** step`` (Numba's float ** int would
    multiply repeatedly; the float exponent keeps the libm call)."""
    return 1.0 - math.pow(beta, np.float64(step))


# One update by code (reference ``optimizer_step``): state1, state2 the optimizer's
# states (unused ones may be empty), hyper the float64 ``hyper`` vector (slots h0, h1,
# eps, eps_inside_sqrt read), weight_decay this call's. The branch runs once per call,
# outside the element loops. An unknown code updates nothing (the callers check codes;
# a raise here would keep the prange loop of training_numba from running in parallel).
@jit
def optimizer_step(param, grad, state1, state2, optimizer, step, lr, hyper, weight_decay):
    """One update of optimizer code ``optimizer`` in place; see the reference."""
    h0 = hyper[codes.HYPER_H0]
    h1 = hyper[codes.HYPER_H1]
    eps = hyper[codes.HYPER_EPS]
    inside = hyper[codes.HYPER_EPS_INSIDE_SQRT] != 0.0
    if optimizer == codes.OPT_SGD:
        sgd_step(param, grad, lr, weight_decay)
    elif optimizer == codes.OPT_MOMENTUM:
        momentum_step(param, grad, state1, lr, h0, h1, weight_decay)
    elif optimizer == codes.OPT_NESTEROV:
        nesterov_step(param, grad, state1, lr, h0, h1, weight_decay)
    elif optimizer == codes.OPT_ADAGRAD:
        adagrad_step(param, grad, state1, lr, eps, inside, weight_decay)
    elif optimizer == codes.OPT_RMSPROP:
        rmsprop_step(param, grad, state1, lr, h0, eps, inside, weight_decay)
    elif optimizer == codes.OPT_ADAM or optimizer == codes.OPT_ADAMW:
        c1, c2 = _correction(h0, step), _correction(h1, step)
        adamw = optimizer == codes.OPT_ADAMW
        _adam(param, grad, state1, state2, lr, h0, h1, c1, c2, eps, weight_decay, adamw)
    elif optimizer == codes.OPT_ADAMAX:
        c = lr / _correction(h0, step)
        _adamax(param, grad, state1, state2, c, h0, h1, eps, weight_decay)


@jit
def squared_norm(x):
    """sum x^2 over the flat buffer, in float64, in NumPy's pairwise order."""
    nodes, sums = pairwise_stack(np.empty(0))
    return squared_norm_ws(x, nodes, sums)


@jit
def squared_norm_ws(x, nodes, sums):
    """squared_norm with its scratch given: (nodes, sums) a float64 ``pairwise_stack``.

    Each block's terms x[i]^2 are computed on the fly and added as ``block_sum`` adds a
    block (written out here, not called: see ``block_sum``)."""
    n = x.size
    if n == 0:
        return 0.0
    lo = np.intp(0)
    sp, cnt = (0, n) if n <= PW_BLOCK else pairwise_descend(nodes, 0, lo, n)
    while True:
        if cnt < 8:
            v = np.float64(x[lo])
            res, tail = v * v, lo + 1
        else:
            tail = lo + cnt - cnt % 8
            res = lanes_total(lane_squares(x, lo, tail))
        for i in range(tail, lo + cnt):
            v = np.float64(x[i])
            res += v * v
        if sp == 0:  # nothing pending: a run of one block
            return 0.0 + res
        sp, total, lo, n = pairwise_combine(nodes, sums, sp, res)
        if n == 0:
            return 0.0 + total
        sp, cnt = pairwise_descend(nodes, sp, lo, n)


@jit
def scale_inplace(x, factor):
    """x *= factor, factor cast once to the dtype of x."""
    f = cast_like(x, factor)
    for i in range(x.size):
        x[i] *= f
