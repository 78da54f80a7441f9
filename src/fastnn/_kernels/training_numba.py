"""Numba whole-epoch training kernel (contract: ``fastnn.reference.training``).

``train_epoch`` checks its arguments once, in Python (types, dtypes, layout) and at the
top of the compiled call (sizes and offsets against the buffers), then runs every batch
of [batch_start, batch_stop) inside one compiled call that never leaves native code. Each
step calls this backend's own kernels (``dense_numba``, ``losses_numba``,
``optimizers_numba``) in the reference's order with the reference's arguments, so the
weights equal the Numba step-by-step path bit for bit (a relu layer of 1-4 inputs runs
its product, bias and relu in one pass, ``dense_numba.small_k_forward``, and the
gradient passed down through 1-4 outputs to a relu layer joins that layer's pass,
``dense_numba.small_k_backward``: the same values). The kernel is compiled without
Numba's runtime (no reference counts): its scratch comes from the wrapper
(``scratch``, kept per thread).
"""

import math
import os
import threading

import numba
import numpy as np
from numba import prange, types
from numba.core import config
from numba.core.errors import TypingError
from numba.extending import overload

from ..reference.blas import GEMM_SMALL_K, GEMM_SMALL_MNK, GEMM_SPLIT_FLOPS
from . import codes
from ._numba_common import (
    DISABLE_JIT,
    PW_BLOCK,
    cast_like,
    gemm_threads,
    gemm_tile_grid,
    jit,
    jit_borrowing,
    jit_inline,
    jit_parallel,
    pairwise_split,
    pairwise_stack,
    pairwise_sum_ws,
)
from .dense_numba import (
    backward_by_code,
    backward_elu,
    backward_finish,
    backward_identity,
    backward_leaky_relu,
    backward_relu,
    backward_sigmoid,
    backward_softmax,
    backward_step,
    backward_tanh,
    forward_by_code,
    forward_elu,
    forward_identity,
    forward_leaky_relu,
    forward_relu,
    forward_sigmoid,
    forward_softmax,
    forward_step,
    forward_tanh,
    small_k_backward,
    small_k_forward,
)
from .epoch_args import ARGS, check_types, wanted
from .losses_numba import (
    binary_cross_entropy_and_gradient,
    mse_gradient,
    mse_ws,
    poisson_gradient,
    poisson_ws,
    softmax_cross_entropy_and_gradient,
)
from .normalization_numba import batch_norm_backward_ws, batch_norm_statistics
from .normalization_numba import dropout as dropout_kernel
from .optimizers_numba import optimizer_step, scale_inplace, squared_norm_ws

__all__ = ["train_epoch"]

_DECOUPLED = np.array(codes.DECOUPLED, np.int64)  # decoupled decay, per optimizer code

# Numba's pool size: numba.set_num_threads refuses more.
_MAX_THREADS = 1 if DISABLE_JIT else config.NUMBA_NUM_THREADS

# Numba's parallel loops run on its threading layer, GNU OpenMP here, which terminates a
# process forked after it started ("fork() called from a process already using GNU
# OpenMP"). A child forked from a process whose epochs ran threaded therefore runs its
# epochs on one thread: the same bits (they never depend on the thread count).
_state = {"threaded": False, "forked_after_threads": False}


def _after_fork_in_child():
    if _state["threaded"]:
        _state["forked_after_threads"] = True


os.register_at_fork(after_in_child=_after_fork_in_child)
_I64 = np.dtype(np.int64)
_F64 = np.dtype(np.float64)
_NO_WEIGHTS = np.zeros(0)

# SplitMix64 (fastnn.reference.masks): the increment and the finaliser's multipliers.
_GAMMA = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_S30, _S27, _S31, _S40 = np.uint64(30), np.uint64(27), np.uint64(31), np.uint64(40)


@jit_inline
def _one_tile(m, n, k):
    """The product's output is one tile of fastnn.reference.blas.gemm_blocks (asked for
    k <= GEMM_SMALL_K, which the small-matrix cut never takes: the transposition does
    not matter)."""
    rows, cols = gemm_tile_grid(m, n, k, False, False, GEMM_SMALL_MNK)
    return rows * cols == 1


@jit_inline
def _mix64(z):
    """SplitMix64's finaliser (uint64, wrapping)."""
    z = (z ^ (z >> _S30)) * _MIX1
    z = (z ^ (z >> _S27)) * _MIX2
    return z ^ (z >> _S31)


@jit
def _dropout_mask(mask, n, seed, t, layer, rate):
    """mask[:n] = the keep mask of ``layer`` in training forward t (reference
    ``dropout_mask``): unit i kept when splitmix(key_tl, i + 1) >> 40 >= ceil(rate 2^24)."""
    thr = np.uint64(math.ceil(rate * 16777216.0))
    key = _mix64(seed + np.uint64(t + 1) * _GAMMA)
    key = _mix64(key + np.uint64(layer + 1) * _GAMMA)
    for i in range(n):
        z = key + np.uint64(i + 1) * _GAMMA
        mask[i] = np.uint8((_mix64(z) >> _S40) >= thr)


def batch_count(n, batch_size, bn_trains):
    """(batches, rows): as ``fastnn.reference.training.batch_rows`` (a last single row
    joins the batch before it when batch normalisation trains)."""
    n_batches = (n + batch_size - 1) // batch_size
    if bn_trains and n_batches > 1 and n - (n_batches - 1) * batch_size == 1:
        return n_batches - 1, batch_size + 1
    return n_batches, batch_size


_batch_count = jit(batch_count)


# Each thread's last scratch (the epoch kernels' float64 and array-dtype buffers), kept
# for its next call: reusing them spares a call two allocations and the sizing.
_scratch = threading.local()


@jit
def _f64_scratch(width, batch_size, n_weights):
    """The float64 scratch's size: 5 rows of ``width`` (the widest layer, at least
    PW_BLOCK), per-sample losses and a column of ``batch_size + 1`` rows each, the two
    halves of the gradient norm, ``n_weights`` sample weights; the epoch kernel cuts it
    in this order (the ``dtype`` scratch is 2 rows of width)."""
    return 5 * width + 2 * (batch_size + 1) + 2 + n_weights


def scratch(dims, batch_size, weighted, dtype):
    """The epoch kernel's scratch for layer widths ``dims`` and batches of up to
    ``batch_size + 1`` rows (with a sample weight per row when ``weighted``): float64
    and ``dtype`` arrays (sizes: ``_f64_scratch``), this thread's own (the kernel
    allocates nothing itself; their contents never carry from one call to the next)."""
    key = (dims.tobytes(), batch_size, weighted, dtype)
    if getattr(_scratch, "key", None) != key:
        width = max(PW_BLOCK, int(dims.max()))
        n_weights = batch_size + 1 if weighted else 0
        _scratch.buffers = (
            np.empty(_f64_scratch(width, batch_size, n_weights)),
            np.empty(2 * width, dtype),
        )
        _scratch.key = key
    return _scratch.buffers


# z, x_hat (m, k): z is overwritten in place; gamma, inv_std (k,); the running statistics
# rm, rv (k,) moved for code 1; mean, inv (k,), col (m,) float64 scratch.
@jit
def _bn_forward(z, gamma, rm, rv, x_hat, inv_std, code, eps, momentum, mean, inv, col):
    """z = gamma x_hat, x_hat = (z + 0 - mu) inv rounded once: the step path's
    dense_forward(identity, zero bias) then batch_norm_train (code 1, saving x_hat and
    inv_std) or batch_norm_eval (code 2) without its "+ beta", which the activation pass
    that follows adds (its bias is beta), so that pass is the plain layers' own."""
    m, k = z.shape
    if code == 1:
        batch_norm_statistics(z, eps, momentum, rm, rv, mean, inv, col)
        for j in range(k):
            inv_std[j] = inv[j]
    else:
        for j in range(k):
            mean[j] = rm[j]
            inv[j] = 1.0 / np.sqrt(np.float64(rv[j]) + eps)
    zero = cast_like(z, 0.0)  # the step path's zero bias: -0.0 becomes +0.0
    for r in range(m):
        for j in range(k):
            xh = cast_like(z, (np.float64(z[r, j] + zero) - mean[j]) * inv[j])
            x_hat[r, j] = xh
            z[r, j] = gamma[j] * xh


# g, x_hat (m, k), g in place; gamma, inv_std, rv, dgamma, dbeta (k,); db, dg, scale (k,)
# and col (m,) float64 scratch.
@jit
def _bn_backward(g, x_hat, gamma, inv_std, rv, dgamma, dbeta, code, eps, db, dg, scale, col):
    """g = dL/dz from g = dL/dzn: batch_norm_backward in place (code 1, writing dgamma,
    dbeta), or the frozen layer's g *= gamma / sqrt(running_var + eps) (code 2; the
    factor in float64 rounded to the dtype, as the step path's NumPy expression)."""
    if code == 1:
        batch_norm_backward_ws(g, x_hat, gamma, inv_std, g, dgamma, dbeta, db, dg, scale, col)
        return
    m, k = g.shape
    for j in range(k):
        db[j] = np.float64(gamma[j]) * (1.0 / np.sqrt(np.float64(rv[j]) + eps))
    for r in range(m):
        for j in range(k):
            g[r, j] = g[r, j] * cast_like(g, db[j])


# Segments of at least UPDATE_SPLIT parameters are updated in pieces of UPDATE_PIECE
# (the update is elementwise; the count follows from the size alone, as the GEMM tiles
# do, so there are pieces for every thread), and their squared norm taken as its
# pairwise tree's two halves side by side (the tree adds the halves anyway): the same
# bits on any number of threads, as in the Cython kernel. Shorter segments stay on one
# thread, as in the Cython kernel (which says why).
UPDATE_SPLIT = 131072
UPDATE_PIECE = 65536


@jit_parallel
def _update_pieces(p, g, s1, s2, opt_code, t, lr, hyper, wd):
    """optimizer_step on consecutive pieces of UPDATE_PIECE side by side; s1 and s2 are
    cut alike when the optimizer has them."""
    n = p.size
    chunk = UPDATE_PIECE
    for i in prange((n + chunk - 1) // chunk):
        lo = i * chunk
        hi = min(n, lo + chunk)
        if hi > lo:
            optimizer_step(
                p[lo:hi],
                g[lo:hi],
                s1[lo:hi] if s1.size else s1,
                s2[lo:hi] if s2.size else s2,
                opt_code,
                t,
                lr,
                hyper,
                wd,
            )


@jit_parallel
def _norm_halves(x, nodes, sums, nodes2, sums2, part):
    """part[0], part[1] = squared_norm of x's two pairwise halves, side by side (each
    half with its own scratch)."""
    half = pairwise_split(x.size)
    for i in prange(2):
        if i == 0:
            part[0] = squared_norm_ws(x[:half], nodes, sums)
        else:
            part[1] = squared_norm_ws(x[half:], nodes2, sums2)


# The codes as plain globals: a condition on them and on a closure's constant is
# resolved by Numba before typing, so the branches a variant cannot take are dropped.
_MSE, _BCE, _POISSON = codes.LOSS_MSE, codes.LOSS_BINARY_CROSS_ENTROPY, codes.LOSS_POISSON
_CE, _SPARSE = codes.LOSS_CROSS_ENTROPY, codes.LOSS_SPARSE_CROSS_ENTROPY
_IDENTITY, _STEP, _SIGMOID, _TANH = codes.IDENTITY, codes.STEP, codes.SIGMOID, codes.TANH
_RELU, _LEAKY_RELU, _ELU, _SOFTMAX = codes.RELU, codes.LEAKY_RELU, codes.ELU, codes.SOFTMAX


def _make_epoch(loss_kind, used):
    """The epoch kernel for one loss and a set of activations.

    ``used[c]`` is True when activation code c may occur. Each variant is its own
    compiled (and cached) function containing only the loss and activation kernels it
    can call (those are most of the compile time; the optimizers are cheap and stay a
    run-time branch), so a first call compiles about half of what one kernel for every
    case would. Only plain constants are captured: a closure over a compiled function
    would never be found in Numba's cache.
    """
    # The activations with a loop of their own in dense_numba; the others share
    # forward_by_code / backward_by_code.
    has_identity, has_step, has_sigmoid, has_tanh = used[:4]
    has_relu, has_leaky_relu, has_elu, has_softmax = used[4:8]
    has_by_code = any(used[8:])

    @jit_borrowing
    def epoch(
        X,
        y,
        labels,
        order,
        batch_size,
        dims,
        acts,
        alphas,
        w_off,
        b_off,
        lowest,
        loss_code,
        params,
        grads,
        ws,
        ws_off,
        lb,
        opt_code,
        state1,
        state2,
        hyper,
        lrs,
        batch_start,
        batch_stop,
        t0,
        segments,
        stats,
        dropout,
        dropout_off,
        masks,
        dropout_seed,
        dropout_t0,
        bn,
        bn_off,
        buffers,
        bn_eps,
        bn_momentum,
        n_threads,
        sample_weight,
        f64s,
        dts,
    ):
        _check_types(
            X,
            y,
            labels,
            order,
            batch_size,
            dims,
            acts,
            alphas,
            w_off,
            b_off,
            lowest,
            loss_code,
            params,
            grads,
            ws,
            ws_off,
            lb,
            opt_code,
            state1,
            state2,
            hyper,
            lrs,
            batch_start,
            batch_stop,
            t0,
            segments,
            stats,
            dropout,
            dropout_off,
            masks,
            dropout_seed,
            dropout_t0,
            bn,
            bn_off,
            buffers,
            bn_eps,
            bn_momentum,
        )
        n = X.shape[0]
        n_layers = acts.size
        d, k = dims[0], dims[n_layers]
        sparse = loss_kind == _SPARSE
        weight_decay, clip_norm = hyper[4], hyper[5]
        # The kernels' scratch, cut from the caller's (``scratch``): float64 rows
        # (softmax/tanh rows, exps, loss terms, pairwise blocks), per-sample losses, an
        # array-dtype row (softmax backward); batch normalisation's float64 column
        # statistics and sums, a float64 column, an array-dtype row for the bias sum the
        # step path throws away; a batch's sample weights. The pairwise walk's stacks
        # live in this call's frame.
        width = PW_BLOCK
        for i in range(n_layers + 1):
            width = max(width, dims[i])
        e, terms = f64s[:width], f64s[width : 2 * width]
        bmean, binv = f64s[2 * width : 3 * width], f64s[3 * width : 4 * width]
        bscale = f64s[4 * width : 5 * width]
        at = 5 * width + batch_size + 1  # batches of up to batch_size + 1 rows
        rows, bcol = f64s[5 * width : at], f64s[at : at + batch_size + 1]
        halves = f64s[at + batch_size + 1 : at + batch_size + 3]
        prod, dbs = dts[:width], dts[width : 2 * width]
        nodes, sums = pairwise_stack(e)
        _, sums_dt = pairwise_stack(prod)
        nodes2, sums2 = pairwise_stack(e)  # a second thread's, for the norm's halves
        bn_trains = False
        for i in range(n_layers):
            bn_trains = bn_trains or bn[i] == 1
        n_batches, rows_max = _batch_count(n, batch_size, bn_trains)
        n_wb = rows_max if sample_weight.size else 0
        if f64s.size < _f64_scratch(width, batch_size, n_wb) or dts.size < 2 * width:
            raise ValueError("train_epoch: the scratch is too small")  # never: see scratch
        wb = f64s[f64s.size - n_wb :]
        stats[codes.STAT_STEPS] = 0.0
        stats[codes.STAT_STATUS] = 0.0
        for j in range(batch_start, batch_stop):
            s = j * batch_size
            m = (n if j == n_batches - 1 else min(n, s + batch_size)) - s
            # 1. the batch: rows order[s:s + m] of X and of the targets, gathered into
            # ws; a run of consecutive rows (an epoch without shuffling) is used in
            # place, as the step path does (same values, so the same results)
            row0 = order[s]
            run = True
            for r in range(1, m):
                if order[s + r] != row0 + r:
                    run = False
                    break
            ky = 0 if sparse else k
            if run:
                xb = X[row0 : row0 + m]
                yb = y[row0 : row0 + m] if not sparse else y[:0]
                t_lab = labels[row0 : row0 + m] if sparse else lb[:0]
            else:
                xb = ws[ws_off[0] : ws_off[0] + m * d].reshape((m, d))
                yb = ws[ws_off[1] : ws_off[1] + m * ky].reshape((m, ky))
                for r in range(m):
                    row = order[s + r]
                    for c in range(d):
                        xb[r, c] = X[row, c]
                    if sparse:
                        lb[r] = labels[row]
                    else:
                        for c in range(k):
                            yb[r, c] = y[row, c]
                t_lab = lb[:m]

            # 2. forward
            x_in = xb
            for i in range(n_layers):
                ni, no = dims[i], dims[i + 1]
                w = params[w_off[i] : w_off[i] + ni * no].reshape((ni, no))
                b = params[b_off[i] : b_off[i] + no]
                z = ws[ws_off[2 + 3 * i] : ws_off[2 + 3 * i] + m * no].reshape((m, no))
                a = ws[ws_off[3 + 3 * i] : ws_off[3 + 3 * i] + m * no].reshape((m, no))
                # dense_forward: the GEMM, then the activation's pass (in one pass for
                # a short inner dimension on one tile or one thread: the same bits)
                act, alpha = acts[i], alphas[i]
                fused = False
                if bn[i] == 0 and ni <= GEMM_SMALL_K and (n_threads <= 1 or _one_tile(m, no, ni)):
                    fused = small_k_forward(x_in, w, b, z, a, act, alpha)
                if not fused:
                    gemm_threads(x_in, w, z, False, False, n_threads)
                if bn[i] != 0:
                    # batch normalisation: z = gamma x_hat here, + beta (b) in the pass
                    g0, r0, x0, i0 = bn_off[i, 0], bn_off[i, 1], bn_off[i, 2], bn_off[i, 3]
                    _bn_forward(
                        z,
                        params[g0 : g0 + no],
                        buffers[r0 : r0 + no],
                        buffers[r0 + no : r0 + 2 * no],
                        ws[x0 : x0 + m * no].reshape((m, no)),
                        ws[i0 : i0 + no],
                        bn[i],
                        bn_eps,
                        bn_momentum,
                        bmean,
                        binv,
                        bcol,
                    )
                if fused:
                    pass
                elif has_relu and act == _RELU:
                    forward_relu(z, a, b)
                elif has_identity and act == _IDENTITY:
                    forward_identity(z, a, b)
                elif has_step and act == _STEP:
                    forward_step(z, a, b)
                elif has_sigmoid and act == _SIGMOID:
                    forward_sigmoid(z, a, b)
                elif has_tanh and act == _TANH:
                    forward_tanh(z, a, b, e)
                elif has_leaky_relu and act == _LEAKY_RELU:
                    forward_leaky_relu(z, a, b, alpha)
                elif has_elu and act == _ELU:
                    forward_elu(z, a, b, alpha)
                elif has_softmax and act == _SOFTMAX:
                    forward_softmax(z, a, b, e, nodes, sums)
                elif has_by_code:
                    forward_by_code(z, a, b, act)
                x_in = a
                rate = dropout[i]
                if rate != 0.0:
                    # the step path's mask, then its dropout kernel into o_i
                    o0, k0 = dropout_off[i, 0], dropout_off[i, 1]
                    mk = masks[k0 : k0 + m * no]
                    _dropout_mask(mk, m * no, dropout_seed, dropout_t0 + (j - batch_start), i, rate)
                    o = ws[o0 : o0 + m * no]
                    dropout_kernel(a.reshape(m * no), mk, rate, o)
                    x_in = o.reshape((m, no))
            out = x_in
            g_off = ws_off[4 + 3 * (n_layers - 1)]
            g_out = ws[g_off : g_off + m * k].reshape((m, k))

            # 3. loss (stop before any update when it is not finite), correct rows; the
            # cross-entropies write their gradient in the same pass (into workspace).
            # With sample weights: the batch's weights, and its L2 decay scaled by m / S
            wt = wb[:0]
            if sample_weight.size:
                wt = wb[:m]
                for r in range(m):
                    wt[r] = sample_weight[order[s + r]]
                if _DECOUPLED[opt_code] == 0:
                    weight_decay = hyper[4] * (m / (0.0 + pairwise_sum_ws(wt, m, nodes, sums)))
            correct = 0
            if loss_kind == _MSE:
                loss = mse_ws(out.reshape(m * k), yb.reshape(m * k), wt, e, nodes, sums)
            elif loss_kind == _POISSON:
                loss = poisson_ws(out.reshape(m * k), yb.reshape(m * k), wt, e, nodes, sums)
            elif loss_kind == _BCE:
                loss, correct = binary_cross_entropy_and_gradient(
                    out, yb, wt, g_out, terms, rows, nodes, sums
                )
            else:  # softmax cross-entropy: targets yb, or class indices t_lab (yb: no columns)
                loss, correct = softmax_cross_entropy_and_gradient(
                    out, yb, t_lab, wt, g_out, e, terms, rows, nodes, sums
                )
            if not math.isfinite(loss):
                stats[codes.STAT_STATUS] = codes.STATUS_LOSS_NOT_FINITE
                stats[codes.STAT_BAD_VALUE] = loss
                return

            # 4. loss gradient, backward down to the lowest trainable layer
            if loss_kind == _MSE:
                mse_gradient(out.reshape(m * k), yb.reshape(m * k), g_out.reshape(m * k), wt)
            elif loss_kind == _POISSON:
                poisson_gradient(out.reshape(m * k), yb.reshape(m * k), g_out.reshape(m * k), wt)
            below_done = False  # g_i is dz_i and db_i summed (small_k_backward)
            for i in range(n_layers - 1, lowest - 1, -1):
                ni, no = dims[i], dims[i + 1]
                if i == 0:
                    x_below = xb
                else:
                    off = ws_off[3 + 3 * (i - 1)]
                    if dropout[i - 1] != 0.0:
                        off = dropout_off[i - 1, 0]
                    x_below = ws[off : off + m * ni].reshape((m, ni))
                z = ws[ws_off[2 + 3 * i] : ws_off[2 + 3 * i] + m * no].reshape((m, no))
                a = ws[ws_off[3 + 3 * i] : ws_off[3 + 3 * i] + m * no].reshape((m, no))
                g = ws[ws_off[4 + 3 * i] : ws_off[4 + 3 * i] + m * no].reshape((m, no))
                dw = grads[w_off[i] : w_off[i] + ni * no].reshape((ni, no))
                db = grads[b_off[i] : b_off[i] + no] if bn[i] == 0 else dbs[:no]
                rate = dropout[i]  # (0 when below_done: see the condition below)
                if rate != 0.0:
                    gf = g.reshape(m * no)
                    k0 = dropout_off[i, 1]
                    dropout_kernel(gf, masks[k0 : k0 + m * no], rate, gf)
                # dense_backward in place on g: the activation's pass, db, dw
                act, alpha = acts[i], alphas[i]
                if below_done:
                    pass
                elif has_relu and act == _RELU:
                    backward_relu(z, g, db)
                elif has_identity and act == _IDENTITY:
                    backward_identity(z, g, db)
                elif has_step and act == _STEP:
                    backward_step(z, g, db)
                elif has_sigmoid and act == _SIGMOID:
                    backward_sigmoid(a, g, db)
                elif has_tanh and act == _TANH:
                    backward_tanh(a, g, db)
                elif has_leaky_relu and act == _LEAKY_RELU:
                    backward_leaky_relu(z, g, db, alpha)
                elif has_elu and act == _ELU:
                    backward_elu(z, g, db, alpha)
                elif has_softmax and act == _SOFTMAX:
                    backward_softmax(a, g, db, prod, nodes, sums_dt)
                elif has_by_code:
                    backward_by_code(z, g, db, act)
                if bn[i] != 0:
                    # batch normalisation: dL/dzn -> dL/dz, dgamma and dbeta into grads
                    g0, r0, x0, i0 = bn_off[i, 0], bn_off[i, 1], bn_off[i, 2], bn_off[i, 3]
                    _bn_backward(
                        g,
                        ws[x0 : x0 + m * no].reshape((m, no)),
                        params[g0 : g0 + no],
                        ws[i0 : i0 + no],
                        buffers[r0 + no : r0 + 2 * no],
                        grads[g0 : g0 + no],
                        grads[b_off[i] : b_off[i] + no],
                        bn[i],
                        bn_eps,
                        bmean,
                        binv,
                        bscale,
                        bcol,
                    )
                backward_finish(x_below, g, dw, db, nodes, sums_dt, n_threads)
                below_done = False
                if i > lowest:
                    w = params[w_off[i] : w_off[i] + ni * no].reshape((ni, no))
                    off = ws_off[4 + 3 * (i - 1)]
                    g_below = ws[off : off + m * ni].reshape((m, ni))
                    # the input gradient through a short product and the relu layer
                    # below's pass (and its db) in one: the same bits as the two passes
                    # (a single unit's db is summed pairwise: not here); small_k_backward
                    # declines other inner dimensions and activations
                    if (
                        has_relu
                        and ni > 1
                        and bn[i - 1] == 0
                        and dropout[i - 1] == 0.0
                        and (n_threads <= 1 or _one_tile(m, ni, no))
                    ):
                        zo = ws_off[2 + 3 * (i - 1)]
                        below_done = small_k_backward(
                            g,
                            w,
                            ws[zo : zo + m * ni].reshape((m, ni)),
                            g_below,
                            grads[b_off[i - 1] : b_off[i - 1] + ni],
                            acts[i - 1],
                        )
                    if not below_done:
                        gemm_threads(g, w, g_below, False, True, n_threads)

            # 5. global norm over the segments, in order; clipping
            sq = 0.0
            for si in range(segments.shape[0]):
                seg = grads[segments[si, 0] : segments[si, 1]]
                if n_threads > 1 and seg.size >= UPDATE_SPLIT:
                    _norm_halves(seg, nodes, sums, nodes2, sums2, halves)
                    sq += 0.0 + (halves[0] + halves[1])
                else:
                    sq += squared_norm_ws(seg, nodes, sums)
            norm = math.sqrt(sq)
            if not math.isfinite(norm):
                stats[codes.STAT_STATUS] = codes.STATUS_GRAD_NOT_FINITE
                stats[codes.STAT_BAD_VALUE] = norm
                return
            if 0 < clip_norm < norm:
                factor = clip_norm / norm
                for si in range(segments.shape[0]):
                    scale_inplace(grads[segments[si, 0] : segments[si, 1]], factor)

            # 6. the optimizer kernel of the step path on every segment (reference
            # ``optimizer_step``) at this step's count t
            t = t0 + (j - batch_start) + 1
            lr = lrs[j]
            for si in range(segments.shape[0]):
                lo, hi = segments[si, 0], segments[si, 1]
                wd = weight_decay if segments[si, 2] != 0 else 0.0
                s1 = state1[lo:hi] if state1.size else state1
                s2 = state2[lo:hi] if state2.size else state2
                if n_threads > 1 and hi - lo >= UPDATE_SPLIT:
                    _update_pieces(params[lo:hi], grads[lo:hi], s1, s2, opt_code, t, lr, hyper, wd)
                else:
                    optimizer_step(params[lo:hi], grads[lo:hi], s1, s2, opt_code, t, lr, hyper, wd)

            # 7. statistics
            stats[codes.STAT_LOSS_SUM] += loss * m
            stats[codes.STAT_CORRECT] += correct
            stats[codes.STAT_STEPS] += 1
            stats[codes.STAT_GRAD_NORM] = norm

    return epoch


# The epoch kernels made so far: by (loss_code, acts.tobytes()) for the call, and by
# the variant itself.
_EPOCHS = {}
_VARIANTS = {}


_PARALLEL: dict = {}


def _parallel_work(dims, batch_size, segments) -> bool:
    """Whether a call of these shapes may run a parallel loop: a product of
    GEMM_SPLIT_FLOPS or more (the first that gemm_grid cuts for threads; below it only
    the cut for OpenBLAS's small-matrix kernels, whose few tiles of a few microseconds
    each are not worth sharing; a batch holds at most batch_size + 1 rows) or an update
    segment of UPDATE_SPLIT values.
    Without any, the call runs on one thread: the same bits, without setting Numba's
    thread count and chunk size around it (~5 us a call, config A's steps took 9%
    longer on 2 threads than on 1). Kept per shape; True for arguments it cannot read
    (the kernel's own checks then refuse them)."""
    try:
        key = (dims.tobytes(), batch_size, segments.tobytes())
        got = _PARALLEL.get(key)
        if got is None:
            widest = max(int(a) * int(b) for a, b in zip(dims[:-1], dims[1:]))
            longest = max([int(b) - int(a) for a, b, _ in segments.tolist()] + [0])
            flops = 2.0 * (int(batch_size) + 1) * widest
            if len(_PARALLEL) > 256:
                _PARALLEL.clear()
            got = _PARALLEL[key] = flops >= GEMM_SPLIT_FLOPS or longest >= UPDATE_SPLIT
        return got
    except (AttributeError, TypeError, ValueError):
        return True


def _epoch_kernel(loss_code, acts):
    """The variant for these codes (made and cached on first use); ValueError for
    unknown codes."""
    ok = isinstance(loss_code, (int, np.integer)) and not isinstance(loss_code, np.bool_)
    if not (ok and not isinstance(loss_code, bool) and 0 <= loss_code < codes.N_LOSSES):
        raise ValueError(f"train_epoch: unknown loss_code {loss_code!r}")
    if type(acts) is not np.ndarray or acts.dtype != _I64 or acts.ndim != 1:
        raise ValueError(_wanted("acts", "i1", _F64))
    present = set(acts.tolist())
    if not present <= set(range(codes.N_ACTIVATIONS)):
        raise ValueError("train_epoch: unknown activation code")
    variant = (int(loss_code), tuple(c in present for c in range(codes.N_ACTIVATIONS)))
    kernel = _VARIANTS.get(variant)
    if kernel is None:
        kernel = _VARIANTS[variant] = _make_epoch(*variant)
    _EPOCHS[(loss_code, acts.tobytes())] = kernel
    return kernel


# What each argument must be (the checked tier's table, fastnn._kernels.epoch_args).
_ARGS = ARGS
_wanted = wanted


def _check_types(
    X,
    y,
    labels,
    order,
    batch_size,
    dims,
    acts,
    alphas,
    w_off,
    b_off,
    lowest,
    loss_code,
    params,
    grads,
    ws,
    ws_off,
    lb,
    opt_code,
    state1,
    state2,
    hyper,
    lrs,
    batch_start,
    batch_stop,
    t0,
    segments,
    stats,
    dropout,
    dropout_off,
    masks,
    dropout_seed,
    dropout_t0,
    bn,
    bn_off,
    buffers,
    bn_eps,
    bn_momentum,
):
    """ValueError unless every argument has the type, dtype and layout of ``_ARGS``
    (a real number must be a float, as Numba types it).

    Compiled, the same check runs once per signature at typing time (see the
    overload below), so that the call itself pays nothing for it.
    """
    check_types(locals(), real=(float, np.floating), real_name="a float")


if not DISABLE_JIT:

    @overload(_check_types)
    def _check_types_typing(
        X,
        y,
        labels,
        order,
        batch_size,
        dims,
        acts,
        alphas,
        w_off,
        b_off,
        lowest,
        loss_code,
        params,
        grads,
        ws,
        ws_off,
        lb,
        opt_code,
        state1,
        state2,
        hyper,
        lrs,
        batch_start,
        batch_stop,
        t0,
        segments,
        stats,
        dropout,
        dropout_off,
        masks,
        dropout_seed,
        dropout_t0,
        bn,
        bn_off,
        buffers,
        bn_eps,
        bn_momentum,
    ):
        values = locals()
        dt = params.dtype if isinstance(params, types.Array) else None
        if dt not in (types.float32, types.float64):
            raise TypingError("train_epoch: params must be a float32 or float64 array")
        for name, kind in _ARGS:
            ty = values[name]
            if kind == "n":
                if not isinstance(ty, types.Integer):
                    raise TypingError(f"train_epoch: {name} must be an integer")
                continue
            if kind == "r":
                if not isinstance(ty, types.Float):
                    raise TypingError(f"train_epoch: {name} must be a float")
                continue
            want = {"f": dt, "i": types.int64, "d": types.float64, "u": types.uint8}[kind[0]]
            if (
                not isinstance(ty, types.Array)
                or ty.dtype != want
                or ty.ndim != int(kind[1])
                or ty.layout != "C"
                or (kind.endswith("+") and not ty.mutable)
            ):
                raise TypingError(_wanted(name, kind, np.dtype(str(dt))))

        def impl(
            X,
            y,
            labels,
            order,
            batch_size,
            dims,
            acts,
            alphas,
            w_off,
            b_off,
            lowest,
            loss_code,
            params,
            grads,
            ws,
            ws_off,
            lb,
            opt_code,
            state1,
            state2,
            hyper,
            lrs,
            batch_start,
            batch_stop,
            t0,
            segments,
            stats,
            dropout,
            dropout_off,
            masks,
            dropout_seed,
            dropout_t0,
            bn,
            bn_off,
            buffers,
            bn_eps,
            bn_momentum,
        ):
            pass

        return impl


def train_epoch(
    X,
    y,
    labels,
    order,
    batch_size,
    dims,
    acts,
    alphas,
    w_off,
    b_off,
    lowest,
    loss_code,
    params,
    grads,
    ws,
    ws_off,
    lb,
    opt_code,
    state1,
    state2,
    hyper,
    lrs,
    batch_start,
    batch_stop,
    t0,
    segments,
    stats,
    n_threads=1,
    dropout=None,
    dropout_off=None,
    masks=None,
    dropout_seed=0,
    dropout_t0=0,
    bn=None,
    bn_off=None,
    buffers=None,
    bn_eps=1e-5,
    bn_momentum=0.1,
    sample_weight=None,
):
    """One epoch (batches [batch_start, batch_stop)) of mini-batch training in one
    compiled call; see :mod:`fastnn.reference.training` for the arguments
    (``dropout=None``: no layer has dropout; ``bn=None``: no batch normalisation;
    ``sample_weight=None``: unweighted).

    The raw kernel: sizes and offsets are not checked here (``fastnn._epoch`` checks
    its layout once per plan, ``fastnn.backend("numba")._train_epoch`` every call, with
    ``fastnn._kernels.epoch_args``); a call that does not fit together reads or writes
    outside its arrays. Types, dtypes and layouts are checked when a signature is
    compiled (a mistyped call fails to compile, and the Python check below names the
    argument). ``stats`` receives the results (LOSS_SUM and CORRECT accumulate, the
    caller zeroes them). The GEMMs' blocks run on up to ``n_threads`` Numba threads (at
    most ``numba.config.NUMBA_NUM_THREADS``; one in a child forked after threaded
    epochs, see ``_state``); the results never depend on it.
    """
    if dropout is None:
        L = acts.size
        dropout, dropout_off = np.zeros(L), np.zeros((L, 2), np.int64)
        masks = np.zeros(0, np.uint8)
    if bn is None:
        L = acts.size
        bn, bn_off = np.zeros(L, np.int64), np.zeros((L, 4), np.int64)
        buffers = np.zeros(0, params.dtype)
    # one signature: the seed as uint64, the count as int64, the floats as float
    args = (
        X,
        y,
        labels,
        order,
        batch_size,
        dims,
        acts,
        alphas,
        w_off,
        b_off,
        lowest,
        loss_code,
        params,
        grads,
        ws,
        ws_off,
        lb,
        opt_code,
        state1,
        state2,
        hyper,
        lrs,
        batch_start,
        batch_stop,
        t0,
        segments,
        stats,
        dropout,
        dropout_off,
        masks,
        np.uint64(dropout_seed),
        np.int64(dropout_t0),
        bn,
        bn_off,
        buffers,
        float(bn_eps),
        float(bn_momentum),
    )
    if sample_weight is None:
        sample_weight = _NO_WEIGHTS
    n_threads = max(1, min(int(n_threads), _MAX_THREADS))
    if _state["forked_after_threads"] or (
        n_threads > 1 and not _parallel_work(dims, batch_size, segments)
    ):
        n_threads = 1
    elif n_threads > 1:
        _state["threaded"] = True
    try:
        kernel = _EPOCHS[(loss_code, acts.tobytes())]
    except (KeyError, AttributeError, TypeError):
        kernel = _epoch_kernel(loss_code, acts)
    # Numba's thread count is per calling thread and read when a parallel loop starts;
    # set here, not in compiled code (where it would keep the kernel out of the cache).
    # Likewise the chunk size of the parallel loops: 1, so that a thread claims the next
    # tile or piece when it is free (gemm_threads).
    before = numba.get_num_threads() if n_threads > 1 else n_threads
    if before != n_threads:
        numba.set_num_threads(n_threads)
    chunk = numba.set_parallel_chunksize(1) if n_threads > 1 else None
    try:
        f64s, dts = scratch(dims, batch_size, sample_weight.size > 0, params.dtype)
        kernel(*args, n_threads, sample_weight, f64s, dts)
    except (TypingError, TypeError, AttributeError):
        _check_types(*args)
        raise
    finally:
        if chunk is not None:
            numba.set_parallel_chunksize(chunk)
        if before != n_threads:
            numba.set_num_threads(before)
