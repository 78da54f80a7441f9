"""The arguments of the whole-epoch kernels, checked in Python before the compiled call.

Every backend's raw ``train_epoch`` (the contract: :mod:`fastnn.reference.training`)
trusts its arguments: the compiled ones index the flat buffers with the offsets they
are given, so an inconsistent call would read or write outside them. The checks live
here, once, for every backend (docs/spec.md §9, "Whole-epoch kernels"):

- :func:`check_layout`: the model's layout (widths, codes, offsets into ``params``,
  ``buffers``, ``ws`` and ``masks``) against the buffers, for batches of up to
  ``rows`` rows. ``fastnn._epoch.EpochPlan`` runs it once, when it builds the layout
  for a batch size; the calls it then makes go straight to the compiled kernel.
- :func:`check_call`: a whole call (types, dtypes, layouts, the layout above, the
  data, the batch range, the rows the call reads, the optimizer state). The checked
  tier, ``fastnn.backend(name)._train_epoch``, runs it before every call (and
  ``FASTNN_CHECK_KERNELS=1`` routes the model's calls through that tier).

Every refusal is a ValueError starting with ``train_epoch:``; nothing is touched then.
"""

from __future__ import annotations

import numpy as np

from ..reference.training import batch_rows
from . import codes

__all__ = ["ARGS", "OPTIONAL_GROUPS", "batch_rows", "check_call", "check_groups", "check_layout"]

# What each argument must be, in signature order: an array of the model dtype ("f"),
# of int64 ("i"), float64 ("d") or uint8 ("u") with its ndim, an integer ("n") or a
# real number ("r"); "+" marks the arrays the kernel writes.
ARGS = (
    ("X", "f2"),
    ("y", "f2"),
    ("labels", "i1"),
    ("order", "i1"),
    ("batch_size", "n"),
    ("dims", "i1"),
    ("acts", "i1"),
    ("alphas", "d1"),
    ("w_off", "i1"),
    ("b_off", "i1"),
    ("lowest", "n"),
    ("loss_code", "n"),
    ("params", "f1+"),
    ("grads", "f1+"),
    ("ws", "f1+"),
    ("ws_off", "i1"),
    ("lb", "i1+"),
    ("opt_code", "n"),
    ("state1", "f1+"),
    ("state2", "f1+"),
    ("hyper", "d1"),
    ("lrs", "d1"),
    ("batch_start", "n"),
    ("batch_stop", "n"),
    ("t0", "n"),
    ("segments", "i2"),
    ("stats", "d1+"),
    ("dropout", "d1"),
    ("dropout_off", "i2"),
    ("masks", "u1+"),
    ("dropout_seed", "n"),
    ("dropout_t0", "n"),
    ("bn", "i1"),
    ("bn_off", "i2"),
    ("buffers", "f1+"),
    ("bn_eps", "r"),
    ("bn_momentum", "r"),
)

# The arguments a call may leave out (None), a group at a time, its first named first:
# without dropout or without batch normalisation.
OPTIONAL_GROUPS = (("dropout", "dropout_off", "masks"), ("bn", "bn_off", "buffers"))

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))
_KIND = {"i": np.dtype(np.int64), "d": np.dtype(np.float64), "u": np.dtype(np.uint8)}


def _fail(message):
    raise ValueError(f"train_epoch: {message}")


def wanted(name: str, kind: str, dt) -> str:
    """The refusal of a mistyped array argument (``kind`` as in :data:`ARGS`)."""
    what = {"f": np.dtype(dt).name, "i": "int64", "d": "float64", "u": "uint8"}[kind[0]]
    ro = "writeable " if kind.endswith("+") else ""
    return f"train_epoch: {name} must be a {ro}C-contiguous {kind[1]}-D {what} array"


def _is_int(a) -> bool:
    return isinstance(a, (int, np.integer)) and not isinstance(a, (bool, np.bool_))


def _within(offset, length, size) -> bool:
    return 0 <= offset and 0 <= length and offset <= size - length


def check_layout(
    dims, acts, alphas, w_off, b_off, n_params, ws, ws_off, lb, stats, rows, sparse,
    dropout=None, dropout_off=None, masks=None, bn=None, bn_off=None, n_buffers=0,
) -> None:  # fmt: skip
    """ValueError unless the layout fits the buffers for batches of up to ``rows`` rows.

    The arrays must already have the types of :data:`ARGS` (the plan makes them so;
    :func:`check_call` checks them first). ``sparse``: the targets are class indices
    (``lb`` is read, the targets' region of ``ws`` is not); None checks both.
    ``dropout=None`` and ``bn=None`` leave those arguments out; otherwise ``bn`` gives
    the layers whose batch normalisation offsets are read (any non-zero code).
    ``n_params`` and ``n_buffers`` are the lengths of ``params`` and ``buffers``.
    """
    L = acts.size
    if (
        L < 1
        or dims.size != L + 1
        or alphas.size != L
        or w_off.size != L
        or b_off.size != L
        or ws_off.size != 2 + 3 * L
    ):
        _fail(
            f"dims, acts, alphas, w_off, b_off and ws_off do not describe one model of {L} layers"
        )
    if stats.size < codes.N_STATS:
        _fail(f"stats needs {codes.N_STATS} values")
    if (dims < 1).any():
        _fail(f"layer widths must be >= 1, got dims {dims.tolist()}")
    if ((acts < 0) | (acts >= codes.N_ACTIVATIONS)).any():
        _fail(f"unknown activation code in acts {acts.tolist()}")
    W = ws.size
    for i in range(L):
        k = int(dims[i + 1])
        if not (_within(w_off[i], dims[i] * k, n_params) and _within(b_off[i], k, n_params)):
            _fail(f"layer {i}'s parameters lie outside params")
        for c in range(3):
            if not _within(ws_off[2 + 3 * i + c], rows * k, W):
                _fail(f"layer {i}'s workspace lies outside ws")
    if not _within(ws_off[0], rows * dims[0], W) or not (
        sparse is True or _within(ws_off[1], rows * dims[L], W)
    ):
        _fail("the batch buffers lie outside ws")
    if sparse is not False and lb.size < rows:
        _fail("lb is shorter than the largest batch")
    if dropout is not None:
        if dropout.size != L or dropout_off.shape != (L, 2):
            _fail(f"dropout needs {L} rates and dropout_off ({L}, 2) offsets")
        if not ((dropout >= 0.0) & (dropout < 1.0)).all():
            _fail(f"a dropout rate is outside [0, 1): {dropout.tolist()}")
        for i in range(L):
            size = rows * int(dims[i + 1])
            if dropout[i] != 0 and not (
                _within(dropout_off[i, 0], size, W) and _within(dropout_off[i, 1], size, masks.size)
            ):
                _fail(f"layer {i}'s dropout output or mask lies outside ws or masks")
    if bn is not None:
        if bn.size != L or bn_off.shape != (L, 4):
            _fail(f"bn needs {L} codes and bn_off ({L}, 4) offsets")
        if ((bn < 0) | (bn > 2)).any():
            _fail(f"a bn code is not 0, 1 or 2: {bn.tolist()}")
        for i in range(L):
            k = int(dims[i + 1])
            if bn[i] != 0 and not (
                _within(bn_off[i, 0], k, n_params)
                and _within(bn_off[i, 1], 2 * k, n_buffers)
                and _within(bn_off[i, 2], rows * k, W)
                and _within(bn_off[i, 3], k, W)
            ):
                _fail(f"layer {i}'s batch normalisation lies outside params, buffers or ws")


def check_groups(values: dict) -> None:
    """ValueError unless each of :data:`OPTIONAL_GROUPS` in ``values`` is left out
    whole or given whole (its first argument given, the others too)."""
    for leader, *rest in OPTIONAL_GROUPS:
        if values[leader] is not None and any(values[name] is None for name in rest):
            _fail(f"{leader} needs {' and '.join(rest)}")


def check_types(
    values: dict, *, skip=(), real=(int, float, np.number), real_name="a real number"
) -> None:
    """ValueError unless each argument of :data:`ARGS` in ``values`` (not in ``skip``)
    has its type, dtype and layout; ``real`` are the types a real number may have."""
    params = values["params"]
    dt = getattr(params, "dtype", None)
    if type(params) is not np.ndarray or dt not in _FLOATS:
        _fail("params must be a float32 or float64 array")
    for name, kind in ARGS:
        a = values[name]
        if name in skip:
            continue
        if kind == "n":
            if not _is_int(a):
                _fail(f"{name} must be an integer")
            continue
        if kind == "r":
            if isinstance(a, (bool, np.bool_)) or not isinstance(a, real):
                _fail(f"{name} must be {real_name}")
            continue
        want = dt if kind[0] == "f" else _KIND[kind[0]]
        if (
            type(a) is not np.ndarray
            or a.dtype != want
            or a.ndim != int(kind[1])
            or not a.flags.c_contiguous
            or (kind.endswith("+") and not a.flags.writeable)
        ):
            raise ValueError(wanted(name, kind, dt))


def check_call(
    X, y, labels, order, batch_size, dims, acts, alphas, w_off, b_off, lowest, loss_code,
    params, grads, ws, ws_off, lb, opt_code, state1, state2, hyper, lrs, batch_start,
    batch_stop, t0, segments, stats, n_threads=1, dropout=None, dropout_off=None,
    masks=None, dropout_seed=0, dropout_t0=0, bn=None, bn_off=None, buffers=None,
    bn_eps=1e-5, bn_momentum=0.1, sample_weight=None,
) -> None:  # fmt: skip
    """ValueError unless a ``train_epoch`` call with these arguments stays inside its
    arrays (the contract of :mod:`fastnn.reference.training`). ``dropout=None`` leaves
    out the dropout arguments, ``bn=None`` the batch normalisation ones."""
    values = locals()
    skip = {name for group in OPTIONAL_GROUPS if values[group[0]] is None for name in group}
    check_types(values, skip=skip)
    if not _is_int(n_threads):
        _fail("n_threads must be an integer")
    for name, value, bound in (
        ("dropout_seed", dropout_seed, 2**64),
        ("dropout_t0", dropout_t0, 2**63),
    ):
        if not 0 <= int(value) < bound:
            _fail(f"{name} must be an integer in [0, {bound})")
    if not 0 <= t0 < 2**63:
        _fail("t0 must be an integer in [0, 2**63)")
    if not 0 <= loss_code < codes.N_LOSSES:
        _fail(f"unknown loss_code {loss_code}")
    if not 0 <= opt_code < codes.N_OPTIMIZERS:
        _fail(f"unknown opt_code {opt_code}")
    if hyper.size != codes.N_HYPER:
        _fail(f"hyper needs {codes.N_HYPER} values")
    L, n, P = acts.size, X.shape[0], params.size
    sparse = loss_code == codes.LOSS_SPARSE_CROSS_ENTROPY
    if grads.size != P:
        _fail("params and grads differ in length")
    if batch_size < 1:
        _fail("batch_size must be >= 1")
    if not 0 <= lowest < L:
        _fail(f"lowest = {lowest} is not a layer of {L}")
    if bn is not None and bn.size != L:
        _fail(f"bn needs {L} codes")
    bn_trains = bn is not None and bool((bn == 1).any())
    if bn_trains and (batch_size < 2 or n < 2):
        _fail("batch normalisation in training needs batch_size >= 2 and n >= 2")
    n_batches, rows = batch_rows(n, batch_size, bn_trains)
    check_layout(
        dims, acts, alphas, w_off, b_off, P, ws, ws_off, lb, stats, rows, sparse, dropout,
        dropout_off, masks, bn, bn_off, 0 if buffers is None else buffers.size,
    )  # fmt: skip
    k = int(dims[L])
    if X.shape[1] != dims[0] or order.size != n:
        _fail("X or order does not match dims / the row count")
    if sparse:
        if labels.size != n:
            _fail("labels must have one entry per row of X")
    elif y.shape != (n, k):
        _fail(f"y must have shape ({n}, {k})")
    if sample_weight is not None and (
        type(sample_weight) is not np.ndarray
        or sample_weight.dtype != np.float64
        or sample_weight.ndim != 1
        or not sample_weight.flags.c_contiguous
        or sample_weight.size not in (0, n)
    ):
        _fail(
            "sample_weight must be None or a C-contiguous 1-D float64 array with one "
            "weight per row of X"
        )
    if not 0 <= batch_start <= batch_stop <= n_batches or lrs.size < batch_stop:
        _fail("batch_size, batch_start, batch_stop or lrs are inconsistent with the rows")
    if segments.shape[1] != 3:
        _fail("segments must have shape (S, 3)")
    if (
        segments.size
        and not (
            (segments[:, 0] >= 0) & (segments[:, 0] <= segments[:, 1]) & (segments[:, 1] <= P)
        ).all()
    ):
        _fail("a segment lies outside params")
    n_states = codes.N_STATES[opt_code]
    if (n_states >= 1 and state1.size != P) or (n_states >= 2 and state2.size != P):
        _fail("the optimizer state must have params' length")
    # the rows (and labels) this call reads
    first = batch_start * batch_size
    last = n if batch_stop == n_batches else min(n, batch_stop * batch_size)
    read = order[first:last]
    if read.size and (read.min() < 0 or read.max() >= n):
        _fail("order holds a row outside X")
    if sparse and read.size:
        lab = labels[read]
        if lab.min() < 0 or lab.max() >= k:
            _fail(f"a label is outside [0, {k})")
