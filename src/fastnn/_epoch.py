"""The bridge from :class:`fastnn.MLP` to its backend's whole-epoch kernel.

``train_epoch`` (see :mod:`fastnn.reference.training` for the contract) runs forward,
loss, backward and the optimizer update of every mini-batch inside one compiled call.
This module decides when a model can use it, prepares the arrays it takes once per
batch size (so steps allocate nothing) and turns its status into the same results and
errors as the step-by-step path.

Vocabulary: this is the "epoch kernel" (or epoch path), as opposed to the "step path"
(``MLP.train_step`` per mini-batch). "Fused" in fastnn means one thing only, a loss
computed together with its output activation (:attr:`fastnn.losses.Loss.fused`).
"""

from __future__ import annotations

import numpy as np

from . import _blas, _threads, registry
from ._kernels import codes, epoch_args
from .layers import BatchNorm, Dense, Dropout
from .optim import OPTIMIZERS, DivergenceError
from .reference.training import batch_rows
from .schedules import checked_rate

# fastnn's own optimizer classes and the loss names, by their registry codes: only the
# exact classes (a subclass may override the update) take the whole-epoch kernel.
_OPT_ROWS = {row.name: row for row in registry.OPTIMIZERS}
_OPT_CODES = {OPTIMIZERS[name]: row.code for name, row in _OPT_ROWS.items()}
_LOSS_CODES = {row.name: row.code for row in registry.LOSSES}

# Work per call of the kernel, in floating-point operations: long epochs are cut into
# calls of about this size so that Ctrl-C and progress are seen between them.
_FLOPS_PER_CALL = 5e9

_EMPTY_I = np.zeros(0, np.int64)
# The workspace and each of its regions start on a cache line, so that the kernels' vector
# stores do not each straddle two lines (config A's first layer, 64 x 128 outputs: 2.6
# against 1.2 us a pass with the regions 16 bytes off a line).
_LINE = 64


def _line_up(n: int, itemsize: int) -> int:
    """n values rounded up to a whole number of cache lines."""
    per_line = _LINE // itemsize
    return -(-n // per_line) * per_line


def aligned_empty(n: int, dtype) -> np.ndarray:
    """An uninitialised 1-D array of n values whose data starts on a cache line."""
    dt = np.dtype(dtype)
    raw = np.empty(n * dt.itemsize + _LINE, np.uint8)
    start = -raw.ctypes.data % _LINE
    return raw[start : start + n * dt.itemsize].view(dt)


def _derivative_reads_output(layer) -> bool:
    """True when the layer's g'(z), evaluated at a = g(z) instead of z, gives the same
    value for every z (NaN and infinities included), so that its activation may be
    written over z and the backward read z's region: the identity, relu, and
    leaky_relu with 0 < alpha < inf (g keeps the sign, and never makes a NaN:
    0 * -inf would)."""
    act = layer.activation
    return act in ("identity", "relu") or (act == "leaky_relu" and 0 < layer.alpha < np.inf)


class Unit:
    """One step of the epoch kernels' network: a dense layer, optionally followed by a
    batch normalisation (the dense layer then without bias and activation), optionally
    by a dropout; indices into ``model.layers``."""

    __slots__ = ("dense", "bn", "dropout")

    def __init__(self, dense: int, bn: int | None, dropout: int | None):
        self.dense, self.bn, self.dropout = dense, bn, dropout


def units(model) -> list[Unit] | None:
    """``model.layers`` as the epoch kernels' units, or None when the list has another
    shape (or batch normalisations with different settings: the kernels take one
    momentum and eps), which the step path trains. Exact types only: a subclass may
    override a pass. Found once per layer list (its layout token)."""
    cached = model.__dict__.get("_epoch_units")
    if cached is None or cached[0] is not model._layout_token:
        cached = model._epoch_units = (model._layout_token, _units(model.layers))
    return cached[1]


def _units(layers) -> list[Unit] | None:
    out: list[Unit] = []
    i = 0
    while i < len(layers):
        dense = layers[i]
        if type(dense) is not Dense:
            return None
        j, bn, drop = i + 1, None, None
        if j < len(layers) and type(layers[j]) is BatchNorm:
            if dense.bias or dense.activation != "identity":
                return None
            bn, j = j, j + 1
        elif not dense.bias:
            return None  # the kernels' dense units all have a bias (or a BatchNorm's beta)
        if j < len(layers) and type(layers[j]) is Dropout:
            drop, j = j, j + 1
        out.append(Unit(i, bn, drop))
        i = j
    settings = {(layers[u.bn].momentum, layers[u.bn].eps) for u in out if u.bn is not None}
    return out if len(settings) <= 1 else None


def settings(model, plan_units: list[Unit]) -> tuple:
    """The layer settings an :class:`EpochPlan` is built from, which may change between
    epochs (``layer.alpha = ...``): each unit's activation and alpha (its batch
    normalisation's when it has one, with its momentum and eps) and dropout rate."""
    layers = model.layers
    out: list = []
    for u in plan_units:
        act = layers[u.dense] if u.bn is None else layers[u.bn]
        out += (act.activation, act.alpha)
        if u.bn is not None:
            out += (act.momentum, act.eps)
        if u.dropout is not None:
            out.append(layers[u.dropout].rate)
    return tuple(out)


def supports(model, optimizer) -> bool:
    """True when ``model`` with ``optimizer`` can train through the whole-epoch kernel.

    Optimizers other than fastnn's own seven (subclasses included: they may override
    the update) use the step-by-step path, as do layer lists the kernels do not know
    (:func:`units`). Dropout and batch normalisation run in the kernel (the masks and
    the statistics are the step path's: docs/spec.md §7).
    """
    return (
        type(optimizer) in _OPT_CODES
        and hasattr(model.kernels._raw, "train_epoch")
        and units(model) is not None
    )


def _hyper(opt) -> np.ndarray:
    """The kernel's ``hyper`` vector (registry.HYPER_SLOTS): the step path's."""
    return opt._kernel_hyper()


class EpochPlan:
    """The layout arrays and the workspace of the whole-epoch kernel for one batch size
    (offsets from the model's :class:`fastnn.layers.Layout`)."""

    def __init__(self, model, batch_size: int):
        layers = model.layers
        plan_units = units(model)
        assert plan_units is not None  # supports() said so
        self.units: list[Unit] = plan_units
        self.settings = settings(model, plan_units)
        # the unit each layer belongs to (units cover the layer list in order)
        self.unit_of = [
            i
            for i, u in enumerate(plan_units)
            for _ in range(1 + (u.bn is not None) + (u.dropout is not None))
        ]
        dense = [layers[u.dense] for u in plan_units]
        bns = [None if u.bn is None else layers[u.bn] for u in plan_units]
        # a unit's activation: its batch normalisation's when it has one
        act_of = [bn if bn is not None else d for d, bn in zip(dense, bns)]
        where = model.layout.params
        dt = model.dtype
        self.batch_size = batch_size
        self.dims = np.array([dense[0].n_in] + [d.n_out for d in dense], np.int64)
        self.acts = np.array([codes.ACTIVATION_CODES[a.activation] for a in act_of], np.int64)
        self.alphas = np.array([a.alpha for a in act_of], np.float64)
        self.w_off = np.array([where[u.dense]["W"][0] for u in plan_units], np.int64)
        # a batch-normalised layer's beta takes the place of its bias (docs/spec.md §1)
        self.b_off = np.array(
            [
                where[u.dense]["b"][0] if u.bn is None else where[u.bn]["beta"][0]
                for u in plan_units
            ],
            np.int64,
        )
        bn_layers = [bn for bn in bns if bn is not None]
        self.has_bn = bool(bn_layers)
        self._no_bn = np.zeros(len(plan_units), np.int64)
        self._runs, self._segments = None, np.zeros((0, 3), np.int64)
        self.bn_eps = bn_layers[0].eps if bn_layers else 1e-5
        self.bn_momentum = bn_layers[0].momentum if bn_layers else 0.1
        # With batch normalisation a last single row joins the batch before it, so the
        # regions hold one row more (fastnn.reference.training.batch_rows).
        rows = batch_size + 1 if bn_layers else batch_size
        widths = [int(self.dims[0]), int(self.dims[-1])]
        size = dt.itemsize
        offsets, total = [], 0
        for w in widths:
            offsets.append(total)
            total += _line_up(rows * w, size)
        for i, d in enumerate(dense):
            region = _line_up(rows * d.n_out, size)
            z = total
            total += region
            if (i == len(dense) - 1 and model.loss.fused) or (
                plan_units[i].bn is None
                and plan_units[i].dropout is None
                and _derivative_reads_output(dense[i])
            ):
                a = z  # the logits, or an activation written over z: one region less
            else:
                a = total
                total += region
            g = total
            total += region
            offsets += [z, a, g]
        # Dropout: each such unit's output o_l (in ws) and keep mask (in masks).
        self.dropout = np.array(
            [0.0 if u.dropout is None else layers[u.dropout].rate for u in plan_units], np.float64
        )
        self.dropout_off = np.zeros((len(plan_units), 2), np.int64)
        n_mask = 0
        for i, u in enumerate(plan_units):
            if u.dropout is not None and layers[u.dropout].rate:
                self.dropout_off[i] = (total, n_mask)
                total += _line_up(rows * dense[i].n_out, size)
                n_mask += rows * dense[i].n_out
        # Batch normalisation: gamma (params), running statistics (buffers), x_hat and
        # inv_std (ws) of every such unit, frozen or not (freezing changes only bn).
        self.bn_off = np.zeros((len(plan_units), 4), np.int64)
        for i, u in enumerate(plan_units):
            if u.bn is not None:
                g_at = where[u.bn]["gamma"][0]
                r_at = model.layout.buffers[u.bn]["running_mean"][0]
                x_hat = _line_up(rows * dense[i].n_out, size)
                self.bn_off[i] = (g_at, r_at, total, total + x_hat)
                total += x_hat + _line_up(dense[i].n_out, size)
        self.masks = np.zeros(n_mask, np.uint8)
        self.ws_off = np.array(offsets, np.int64)
        self.ws = aligned_empty(total, dt)
        self.lb = np.empty(rows, np.int64)
        self.stats = np.zeros(codes.N_STATS, np.float64)
        self.no_targets = np.zeros((0, 0), dt)  # y of an epoch on class indices
        self.busy = False  # an epoch runs on this plan's buffers
        flops = 6.0 * batch_size * max(1, model.n_params)
        self.batches_per_call = max(1, int(_FLOPS_PER_CALL // flops))
        # Checked once, here: the calls of train_epoch below go straight to the raw
        # kernel (its other arguments are the model's checked data and buffers).
        epoch_args.check_layout(
            self.dims, self.acts, self.alphas, self.w_off, self.b_off, model.params.size,
            self.ws, self.ws_off, self.lb, self.stats, rows, None, self.dropout,
            self.dropout_off, self.masks,
            np.array([u.bn is not None for u in plan_units], np.int64), self.bn_off,
            model.buffers.size,
        )  # fmt: skip

    def bn_codes(self, model) -> np.ndarray:
        """Per unit: 0 no batch normalisation, 1 batch statistics, 2 running statistics
        (a frozen layer), as ``train_epoch``'s ``bn`` argument."""
        if not self.has_bn:
            return self._no_bn
        layers = model.layers
        return np.array(
            [0 if u.bn is None else (2 if layers[u.bn].frozen else 1) for u in self.units],
            np.int64,
        )

    def segments(self, runs) -> np.ndarray:
        """The optimizer's update runs ``(start, stop, decayed)`` as ``train_epoch``'s
        (n, 3) ``segments``; kept while the optimizer hands back the same tuple."""
        if runs is not self._runs:
            self._segments = np.array(runs, np.int64).reshape(-1, 3)
            self._runs = runs
        return self._segments

    def lowest(self, model) -> int:
        """The lowest unit with a trainable layer (the backward stops there); ValueError
        when every layer is frozen."""
        return self.unit_of[model._lowest_trainable()]


def train_epoch(
    model, X, y, optimizer, batch_size: int, order: np.ndarray, poll=None, sample_weight=None
) -> dict:
    """One epoch through the backend's ``train_epoch``; the logs of ``MLP.train_epoch``.

    ``poll(steps_done)`` is called after each compiled call (see ``MLP.train_epoch``).
    ``sample_weight``: None, or the rows' weights as ``losses.check_sample_weight``
    returns them (float64 (n,), C-contiguous), gathered by the kernel like y.
    """
    optimizer._bind(model)
    runs = optimizer._update_runs(model)
    if not runs:
        raise ValueError("every layer of the model is frozen: nothing to train")
    plan = model._epoch_plans.get(batch_size)
    if plan is None or plan.settings != settings(model, plan.units):
        # (a layer setting changed since the plan was made: its codes and layout follow)
        plan = model._epoch_plans[batch_size] = EpochPlan(model, batch_size)
    elif plan.busy:
        # A poll callback training this model again: its epoch gets a workspace and
        # sums of its own, so the outer epoch's logs stay its own.
        plan = EpochPlan(model, batch_size)
    plan.busy = True
    try:
        return _run(model, X, y, optimizer, batch_size, order, poll, sample_weight, plan, runs)
    finally:
        plan.busy = False


def _run(model, X, y, optimizer, batch_size, order, poll, sample_weight, plan, runs) -> dict:
    """``train_epoch``'s body, on ``plan``'s workspace and sums."""
    lowest = plan.lowest(model)
    n = X.shape[0]
    bn = plan.bn_codes(model)
    n_batches = batch_rows(n, batch_size, plan.has_bn and bool((bn == 1).any()))[0]
    loss_code = _LOSS_CODES[model.loss.name]
    if loss_code == codes.LOSS_CROSS_ENTROPY and y.ndim == 1:
        loss_code = codes.LOSS_SPARSE_CROSS_ENTROPY
        y_float, labels = plan.no_targets, y
    else:
        y_float, labels = y, _EMPTY_I
    schedule = optimizer.schedule
    if schedule.per == "step":
        # Every rate is checked before the first step runs: the epoch is refused whole.
        lrs = np.array(
            [checked_rate(schedule, optimizer.t + j) for j in range(n_batches)], np.float64
        )
    else:
        lrs = np.empty(n_batches)  # (not kept: a poll callback may train this model again)
        lrs.fill(optimizer.lr)  # (np.full takes three times as long on an epoch's few rates)
    empty = model.params[:0]
    states = [optimizer.state[name] for name in optimizer.state_names] + [empty, empty]
    segments = plan.segments(runs)
    stats = plan.stats
    stats.fill(0.0)
    # the raw kernel, or its checked tier with FASTNN_CHECK_KERNELS=1 (Backend._internal)
    kernel = model.kernels._internal.train_epoch
    n_threads = _threads.resolve(model.n_threads, model.backend_name)
    with _blas.hold_one_thread():
        for j0 in range(0, n_batches, plan.batches_per_call):
            j1 = min(n_batches, j0 + plan.batches_per_call)
            kernel(
                X,
                y_float,
                labels,
                order,
                batch_size,
                plan.dims,
                plan.acts,
                plan.alphas,
                plan.w_off,
                plan.b_off,
                lowest,
                loss_code,
                model.params,
                model.grads,
                plan.ws,
                plan.ws_off,
                plan.lb,
                _OPT_CODES[type(optimizer)],
                states[0],
                states[1],
                _hyper(optimizer),
                lrs,
                j0,
                j1,
                optimizer.t,
                segments,
                stats,
                n_threads,
                plan.dropout,
                plan.dropout_off,
                plan.masks,
                model._dropout_seed,
                model._dropout_step,
                bn,
                plan.bn_off,
                model.buffers,
                plan.bn_eps,
                plan.bn_momentum,
                sample_weight,
            )
            got = stats.tolist()  # (Python floats: cheaper to read than the array)
            steps = int(got[codes.STAT_STEPS])
            status = got[codes.STAT_STATUS]
            # every batch run made a training forward (the failed one included)
            model._dropout_step += steps + int(status != codes.STATUS_OK)
            optimizer.t += steps
            if steps:
                optimizer.last_grad_norm = got[codes.STAT_GRAD_NORM]
            done = j0 + steps
            if status != codes.STATUS_OK:
                bad = got[codes.STAT_BAD_VALUE]
                if status == codes.STATUS_LOSS_NOT_FINITE:
                    err = DivergenceError(f"the loss is {bad}", what="loss", value=bad)
                else:
                    optimizer.last_grad_norm = bad
                    err = DivergenceError(f"the gradient norm is {bad}", what="gradient", value=bad)
                err.steps_done = done
                raise err
            if poll is not None:
                poll(done)
    got = stats.tolist()
    logs = {"loss": got[codes.STAT_LOSS_SUM] / n}
    if model.loss.is_classifier:
        logs["accuracy"] = int(got[codes.STAT_CORRECT]) / n
    return logs
