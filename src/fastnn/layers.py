"""Layers: each owns its parameters, its workspace, its forward and its backward.

A layer says which arrays it needs (:class:`Slot`: name, shape, whether it is a weight
matrix for L2 decay, its value before initialisation), and the model packs them into
its flat buffers with :func:`layout` -- the one place that decides where every
parameter lives, used by the model, ``fastnn.io`` and the whole-epoch kernels' plan.
Once bound, a layer reads its parameters as attributes (``W``, ``b``, ``gamma``...)
and writes their gradients into ``d<name>`` (``dW``, ``db``...), views into the
model's ``params`` and ``grads``; buffers (``running_mean``...) are views into
``buffers``.

The protocol (scikit-learn's per-layer arrays and micrograd's ops are the models):

- ``train_space(m, dtype)`` / ``eval_space(m, dtype)``: a dict of arrays for a batch
  of m rows, allocated once per batch size and reused by every step;
- ``forward(k, x, ws, ctx)``: training-mode output for input x (k: the backend's raw
  kernels; ctx: the step's :class:`Context`); ``forward_eval(k, x, ws)``: inference;
- ``backward(k, x, ws, g, need_input)``: given g = dL/d(output) (a buffer the layer
  may overwrite), write the parameters' gradients and return dL/d(input) (None when
  ``need_input`` is false and the layer has nothing cheaper to return);
- ``config()`` / ``from_config(d)``: the layer as plain JSON-able values.

A new layer type subclasses :class:`Layer` and registers itself in
:data:`LAYER_TYPES`; the model never names a layer type (docs/spec.md §1).

The passes of ``Dense``, ``BatchNorm`` and ``Dropout`` are the functions of
:mod:`fastnn.reference.ops` (one kernel sequence per operation), which the reference
epoch -- the contract of the compiled whole-epoch kernels -- runs too: the step is
written once (docs/spec.md §9).
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, NamedTuple

import numpy as np

from . import _validation as v
from ._kernels.codes import ACTIVATION_CODES, DEFAULT_ALPHA
from .initializers import initialize
from .reference import ops
from .reference.masks import dropout_ramp

__all__ = [
    "BatchNorm",
    "CSRRows",
    "Context",
    "Dense",
    "Dropout",
    "LAYER_TYPES",
    "Layer",
    "Layout",
    "Slot",
    "layer_from_config",
    "layout",
]

_ACTIVATIONS = tuple(ACTIVATION_CODES)


@dataclasses.dataclass(frozen=True)
class Slot:
    """One array a layer needs: its name, shape, whether it is a weight matrix (the
    weights region of ``params``, which L2 decay covers) and its value before
    initialisation."""

    name: str
    shape: tuple[int, ...]
    weight: bool = False
    fill: float = 0.0

    @property
    def size(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


class CSRRows:
    """A batch of rows of a checked CSR matrix, as a first :class:`Dense` layer reads
    it (docs/spec.md §2.1): the matrix's three arrays and the batch's row ids (int64).
    The model makes them from data checked by ``check_X``; nothing here re-checks."""

    __slots__ = ("indptr", "indices", "data", "rows")

    def __init__(self, X, rows: np.ndarray):
        self.indptr, self.indices, self.data = X.indptr, X.indices, X.data
        self.rows = rows

    @property
    def shape(self) -> tuple[int]:
        return (self.rows.shape[0],)


class Context(NamedTuple):
    """What one training forward shares between layers: the dropout key (the model's
    64-bit seed and its count of training forwards; docs/spec.md §7)."""

    dropout_seed: int
    dropout_step: int


class Layer:
    """Base class of fastnn's layers (see the module docstring for the protocol).

    Attributes
    ----------
    n_in, n_out : int
        Widths of the input and the output.
    frozen : bool
        A frozen layer's parameters are not updated (batch normalisation then uses
        its running statistics, as in inference).
    """

    type: ClassVar[str]
    n_in: int
    n_out: int
    frozen: bool = False

    # --- what the layer needs ------------------------------------------------------------
    def param_slots(self) -> tuple[Slot, ...]:
        return ()

    def buffer_slots(self) -> tuple[Slot, ...]:
        return ()

    @property
    def has_params(self) -> bool:
        return bool(self.param_slots())

    @property
    def min_batch(self) -> int:
        """Rows a training batch needs (batch statistics need two)."""
        return 1

    def reset(self, rng: np.random.Generator, init: str, distribution: str) -> None:
        """Initial values of the parameters and buffers (init: an initialiser name)."""
        for slot in self.param_slots() + self.buffer_slots():
            getattr(self, slot.name)[...] = slot.fill

    # --- passes ----------------------------------------------------------------------------
    def train_space(self, m: int, dtype) -> dict:
        return {}

    def eval_space(self, m: int, dtype) -> dict:
        return {}

    def forward(self, k, x: np.ndarray, ws: dict, ctx: Context) -> np.ndarray:
        raise NotImplementedError

    def forward_eval(self, k, x: np.ndarray, ws: dict) -> np.ndarray:
        raise NotImplementedError

    def backward(self, k, x: np.ndarray, ws: dict, g: np.ndarray, need_input: bool):
        raise NotImplementedError

    # --- description -------------------------------------------------------------------------
    def config(self) -> dict:
        raise NotImplementedError

    @classmethod
    def from_config(cls, d: dict, where: str = "layer") -> Layer:
        raise NotImplementedError

    def copy(self) -> Layer:
        """A new, unbound layer with the same configuration."""
        return type(self).from_config(self.config())

    def _repr_args(self) -> list[str]:
        return []

    def __repr__(self):
        args = self._repr_args() + (["frozen=True"] if self.frozen else [])
        return f"{type(self).__name__}({', '.join(args)})"


def _activation(value, name) -> str:
    return v.choice(value, name, _ACTIVATIONS)


def _alpha(alpha, activation, name) -> float:
    if alpha is None:
        return DEFAULT_ALPHA.get(activation, 0.0)
    return v.scalar(alpha, name)


def _size(value, name) -> int:
    return v.integer(value, name, low=1)


def _check_keys(d, where, allowed) -> None:
    if not isinstance(d, dict):
        raise TypeError(f"{where} must be a dict of settings, got {type(d).__name__}")
    extra = sorted(set(d) - set(allowed) - {"type"})
    if extra:
        raise ValueError(f"{where} has unknown settings {extra} (known: {sorted(allowed)})")


class _Activated(Layer):
    """A layer whose output goes through an activation g (fused into its kernels)."""

    activation: str
    alpha: float

    def _activation_args(self) -> list[str]:
        args = [] if self.activation == "identity" else [repr(self.activation)]
        if self.alpha != DEFAULT_ALPHA.get(self.activation, 0.0):
            args.append(f"alpha={self.alpha!r}")
        return args

    @property
    def code(self) -> int:
        """The kernels' code of the activation (fastnn.registry)."""
        return ACTIVATION_CODES[self.activation]


class Dense(_Activated):
    """Affine map and activation: ``a = g(x @ W + b)`` (docs/spec.md §1).

    Parameters
    ----------
    n_in, n_out : int
    activation : str, default "identity"
        A name of :data:`fastnn.registry.ACTIVATIONS`.
    alpha : float or None
        The slope (leaky_relu) or scale (elu) of g (None: the activation's default).
    bias : bool, default True
        Without bias (before a :class:`BatchNorm`, whose beta is the shift).

    Attributes
    ----------
    W : ndarray (n_in, n_out); b : ndarray (n_out,) or None
        Views into the model's ``params`` once the layer is in a model;
        ``dW``, ``db`` the same into ``grads``.
    """

    type = "dense"
    _KEYS = ("n_in", "n_out", "activation", "alpha", "bias", "frozen")

    W: Any
    b: Any
    dW: Any
    db: Any

    def __init__(
        self,
        n_in: int,
        n_out: int,
        activation: str = "identity",
        *,
        alpha=None,
        bias: bool = True,
        frozen: bool = False,
    ):
        self.n_in = _size(n_in, "n_in")
        self.n_out = _size(n_out, "n_out")
        self.activation = _activation(activation, "activation")
        self.alpha = _alpha(alpha, self.activation, "alpha")
        self.bias = v.boolean(bias, "bias")
        self.frozen = v.boolean(frozen, "frozen")
        self.W = self.b = self.dW = self.db = None

    def _repr_args(self) -> list[str]:
        bias = [] if self.bias else ["bias=False"]
        return [str(self.n_in), str(self.n_out)] + self._activation_args() + bias

    def param_slots(self) -> tuple[Slot, ...]:
        w = Slot("W", (self.n_in, self.n_out), weight=True)
        return (w, Slot("b", (self.n_out,))) if self.bias else (w,)

    def reset(self, rng, init, distribution) -> None:
        initialize(self.W, init, distribution, rng)
        if self.bias:
            self.b[...] = 0

    def train_space(self, m, dtype) -> dict:
        z = np.empty((m, self.n_out), dtype)
        # g_in is allocated by the first backward that needs it (the first layer's
        # never is: its input is the data, however wide)
        ws = {"z": z, "a": z if self.activation == "identity" else np.empty_like(z)}
        if not self.bias:
            ws["db"] = np.empty(self.n_out, dtype)  # the kernel's bias gradient, unused
            ws["zero"] = np.zeros(self.n_out, dtype)
        return ws

    def eval_space(self, m, dtype) -> dict:
        ws = {"z": np.empty((m, self.n_out), dtype)}
        if not self.bias:
            ws["zero"] = np.zeros(self.n_out, dtype)
        return ws

    def _forward(self, k, x, b, z, a):
        """dense_forward, or csr_dense_forward when x is a batch of CSR rows."""
        if isinstance(x, CSRRows):
            k.csr_dense_forward(x.indptr, x.indices, x.data, x.rows, self.W, b, self.code,
                                self.alpha, z, a)  # fmt: skip
        else:
            ops.dense_forward(k, x, self.W, b, self.code, self.alpha, z, a)

    def forward(self, k, x, ws, ctx):
        self._forward(k, x, self.b if self.bias else ws["zero"], ws["z"], ws["a"])
        return ws["a"]

    def forward_eval(self, k, x, ws):
        z = ws["z"]
        self._forward(k, x, self.b if self.bias else ws["zero"], z, z)
        return z

    def backward(self, k, x, ws, g, need_input):
        db = self.db if self.bias else ws["db"]
        if isinstance(x, CSRRows):  # the first layer: no input gradient is ever needed
            k.csr_dense_backward(x.indptr, x.indices, x.data, x.rows, ws["z"], ws["a"], g,
                                 self.code, self.alpha, g, self.dW, db)  # fmt: skip
            return None
        g_in = None
        if need_input:
            g_in = ws.get("g_in")
            if g_in is None:
                g_in = ws["g_in"] = np.empty((g.shape[0], self.n_in), g.dtype)
        ops.dense_backward(
            k, x, self.W, ws["z"], ws["a"], g, self.code, self.alpha, self.dW, db, g_in
        )
        return g_in

    def config(self) -> dict:
        return {
            "type": self.type,
            "n_in": self.n_in,
            "n_out": self.n_out,
            "activation": self.activation,
            "alpha": self.alpha,
            "bias": self.bias,
            "frozen": self.frozen,
        }

    @classmethod
    def from_config(cls, d, where="layer") -> Dense:
        _check_keys(d, where, cls._KEYS)
        for key in ("n_in", "n_out"):
            if key not in d:
                raise ValueError(f"{where} needs {key!r}")
        return cls(
            v.integer(d["n_in"], f"{where} n_in", low=1),
            v.integer(d["n_out"], f"{where} n_out", low=1),
            _activation(d.get("activation", "identity"), f"{where} activation"),
            alpha=d.get("alpha"),
            bias=d.get("bias", True),
            frozen=d.get("frozen", False),
        )


class BatchNorm(_Activated):
    """Batch normalisation, then an activation (docs/spec.md §7).

    Training: ``g(gamma * (x - mean_B) / sqrt(var_B + eps) + beta)`` with the batch's
    statistics, which move the running ones by ``momentum``; inference (and a frozen
    layer): the running statistics. Batches of one row are refused in training.

    Parameters
    ----------
    n : int or None
        Width (None: the width of the layer before, when the model is built).
    activation : str, default "identity"
    alpha : float or None
    momentum : float in [0, 1], default 0.1
    eps : float > 0, default 1e-5
    """

    type = "batch_norm"
    _KEYS = ("n", "activation", "alpha", "momentum", "eps", "frozen")

    gamma: Any
    beta: Any
    dgamma: Any
    dbeta: Any
    running_mean: Any
    running_var: Any

    def __init__(
        self,
        n: int | None = None,
        activation: str = "identity",
        *,
        alpha=None,
        momentum: float = 0.1,
        eps: float = 1e-5,
        frozen: bool = False,
    ):
        self.n_in = self.n_out = None if n is None else _size(n, "n")  # type: ignore[assignment]
        self.activation = _activation(activation, "activation")
        self.alpha = _alpha(alpha, self.activation, "alpha")
        self.momentum = v.scalar(momentum, "momentum", low=0, high=1)
        self.eps = v.scalar(eps, "eps", low=0, low_open=True)
        self.frozen = v.boolean(frozen, "frozen")
        self.gamma = self.beta = self.dgamma = self.dbeta = None
        self.running_mean = self.running_var = None

    def _repr_args(self) -> list[str]:
        args = [str(self.n_out)] + self._activation_args()
        if self.momentum != 0.1:
            args.append(f"momentum={self.momentum!r}")
        if self.eps != 1e-5:
            args.append(f"eps={self.eps!r}")
        return args

    def param_slots(self) -> tuple[Slot, ...]:
        return (Slot("gamma", (self.n_out,), fill=1.0), Slot("beta", (self.n_out,)))

    def buffer_slots(self) -> tuple[Slot, ...]:
        return (Slot("running_mean", (self.n_out,)), Slot("running_var", (self.n_out,), fill=1.0))

    @property
    def min_batch(self) -> int:
        return 1 if self.frozen else 2

    def train_space(self, m, dtype) -> dict:
        shape = (m, self.n_out)
        return {
            "zn": np.empty(shape, dtype),
            "a": np.empty(shape, dtype),
            "x_hat": np.empty(shape, dtype),
            "inv_std": np.empty(self.n_out, dtype),
            "h": np.empty(shape, dtype),
            "frozen_scale": np.empty(self.n_out, np.float64),  # when frozen, dL/dx's factor
        }

    def eval_space(self, m, dtype) -> dict:
        return {"zn": np.empty((m, self.n_out), dtype), "a": np.empty((m, self.n_out), dtype)}

    def forward(self, k, x, ws, ctx):
        ops.batch_norm_forward(
            k, self.frozen, x, self.gamma, self.beta, self.running_mean, self.running_var,
            self.eps, self.momentum, self.code, self.alpha, ws["zn"], ws["a"], ws["x_hat"],
            ws["inv_std"],
        )  # fmt: skip
        return ws["a"]

    def forward_eval(self, k, x, ws):
        ops.batch_norm_forward(
            k, True, x, self.gamma, self.beta, self.running_mean, self.running_var, self.eps,
            self.momentum, self.code, self.alpha, ws["zn"], ws["a"], None, None,
        )  # fmt: skip
        return ws["a"]

    def backward(self, k, x, ws, g, need_input):
        # the frozen layer's running statistics are constants: dL/dx = h gamma / std
        ops.batch_norm_backward(
            k, self.frozen, g, ws["zn"], ws["a"], self.gamma, self.running_var, self.eps,
            self.code, self.alpha, ws["x_hat"], ws["inv_std"], ws["h"], g, self.dgamma,
            self.dbeta, ws["frozen_scale"],
        )  # fmt: skip
        return g

    def config(self) -> dict:
        return {
            "type": self.type,
            "n": self.n_out,
            "activation": self.activation,
            "alpha": self.alpha,
            "momentum": self.momentum,
            "eps": self.eps,
            "frozen": self.frozen,
        }

    @classmethod
    def from_config(cls, d, where="layer") -> BatchNorm:
        _check_keys(d, where, cls._KEYS)
        n = d.get("n")
        return cls(
            None if n is None else v.integer(n, f"{where} n", low=1),
            _activation(d.get("activation", "identity"), f"{where} activation"),
            alpha=d.get("alpha"),
            momentum=v.scalar(d.get("momentum", 0.1), f"{where} momentum", low=0, high=1),
            eps=v.scalar(d.get("eps", 1e-5), f"{where} eps", low=0, low_open=True),
            frozen=d.get("frozen", False),
        )


class Dropout(Layer):
    """Inverted dropout after a dense layer: each unit kept with probability 1 - rate
    and scaled by 1 / (1 - rate) in training, the identity in inference.

    The keep mask is a function of the model's dropout key, its step count and the
    index of the dense layer this one follows (docs/spec.md §7), so every backend and
    every thread count draws the same mask. A model accepts at most one dropout layer
    per dense layer, after it.

    Parameters
    ----------
    rate : float in [0, 1)
    n : int or None
        Width (None: the width of the layer before, when the model is built).
    """

    type = "dropout"
    _KEYS = ("rate", "n", "frozen")
    stream = 0  # the index of the dense layer it follows, set by the model

    def __init__(self, rate: float, n: int | None = None, *, frozen: bool = False):
        self.rate = v.scalar(rate, "rate", low=0, high=1, high_open=True)
        self.n_in = self.n_out = None if n is None else _size(n, "n")  # type: ignore[assignment]
        self.frozen = v.boolean(frozen, "frozen")

    def _repr_args(self) -> list[str]:
        return [repr(self.rate)]

    def train_space(self, m, dtype) -> dict:
        size = m * self.n_out
        return {
            "mask": np.empty((m, self.n_out), np.uint8),
            "u": np.empty(size, np.uint64),
            "tmp": np.empty(size, np.uint64),
            "ramp": dropout_ramp(size),
            "out": np.empty((m, self.n_out), dtype),
        }

    def forward(self, k, x, ws, ctx):
        ops.dropout_forward(
            k, ctx.dropout_seed, ctx.dropout_step, self.stream, self.rate, x, ws["mask"],
            ws["out"], ws["u"], ws["tmp"], ws["ramp"],
        )  # fmt: skip
        return ws["out"]

    def forward_eval(self, k, x, ws):
        return x

    def backward(self, k, x, ws, g, need_input):
        ops.dropout_backward(k, self.rate, ws["mask"], g)
        return g

    def config(self) -> dict:
        return {"type": self.type, "rate": self.rate, "n": self.n_out, "frozen": self.frozen}

    @classmethod
    def from_config(cls, d, where="layer") -> Dropout:
        _check_keys(d, where, cls._KEYS)
        if "rate" not in d:
            raise ValueError(f"{where} needs 'rate'")
        n = d.get("n")
        return cls(
            v.scalar(d["rate"], f"{where} rate", low=0, high=1, high_open=True),
            None if n is None else v.integer(n, f"{where} n", low=1),
            frozen=d.get("frozen", False),
        )


LAYER_TYPES: dict[str, type[Layer]] = {cls.type: cls for cls in (Dense, BatchNorm, Dropout)}


def layer_from_config(d, where: str = "layer") -> Layer:
    """The layer that ``config()`` describes; ValueError/TypeError naming ``where``."""
    if not isinstance(d, dict):
        raise TypeError(f"{where} must be a dict of settings, got {type(d).__name__}")
    kind = d.get("type")
    cls = LAYER_TYPES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise ValueError(f"{where} has unknown type {kind!r} (known: {sorted(LAYER_TYPES)})")
    return cls.from_config(d, where)


def chain(layers, name: str = "layers") -> list[Layer]:
    """Fresh copies of ``layers`` with every size-free layer's width filled in from
    the layer before; ValueError when neighbouring widths disagree or a dropout layer
    does not follow a dense layer (at most one per dense layer)."""
    if isinstance(layers, Layer) or not isinstance(layers, (list, tuple)) or not layers:
        raise TypeError(f"{name} must be a non-empty list of fastnn layers")
    out: list[Layer] = []
    width = None
    n_dense = 0
    dropped = set()
    for i, layer in enumerate(layers):
        if not isinstance(layer, Layer):
            raise TypeError(f"{name}[{i}] must be a fastnn layer, got {type(layer).__name__}")
        cfg = layer.config()
        if cfg.get("n") is None and "n" in cfg:
            if width is None:
                raise ValueError(
                    f"{name}[{i}] ({type(layer).__name__}) has no width and no layer before "
                    f"it to take one from: give n"
                )
            cfg["n"] = width
        new = type(layer).from_config(cfg, f"{name}[{i}]")
        if width is not None and new.n_in != width:
            raise ValueError(
                f"{name}[{i}] ({type(layer).__name__}) takes {new.n_in} inputs but "
                f"{name}[{i - 1}] outputs {width}: the layers do not chain"
            )
        if isinstance(new, Dense):
            n_dense += 1
        elif isinstance(new, Dropout):
            if n_dense == 0 or (n_dense - 1) in dropped:
                raise ValueError(
                    f"{name}[{i}] (Dropout) must follow a Dense layer, at most one "
                    f"Dropout per Dense layer"
                )
            new.stream = n_dense - 1
            dropped.add(n_dense - 1)
        width = new.n_out
        out.append(new)
    return out


@dataclasses.dataclass
class Layout:
    """Where every layer's arrays live in the model's flat buffers.

    ``params[i]`` maps layer i's parameter names to ``(offset, shape)`` in
    ``params`` (and ``grads``), ``buffers[i]`` its buffers' in ``buffers``. Weight
    matrices come first (``params[:n_weights]``), then every layer's other parameters
    in layer order; ``segments`` are the (start, stop, is_weight, layer index) pieces.
    """

    n_params: int
    n_weights: int
    n_buffers: int
    params: list[dict[str, tuple[int, tuple[int, ...]]]]
    buffers: list[dict[str, tuple[int, tuple[int, ...]]]]
    segments: list[tuple[int, int, bool, int]]


def layout(layers) -> Layout:
    """The flat-buffer layout of ``layers`` (docs/spec.md §1); allocates nothing."""
    slots = [layer.param_slots() for layer in layers]
    n_weights = sum(s.size for ss in slots for s in ss if s.weight)
    params: list[dict] = [{} for _ in layers]
    buffers: list[dict] = [{} for _ in layers]
    segments = []
    w_off, r_off, b_off = 0, n_weights, 0
    for i, ss in enumerate(slots):
        for s in ss:
            if s.weight:
                params[i][s.name] = (w_off, s.shape)
                segments.append((w_off, w_off + s.size, True, i))
                w_off += s.size
    for i, ss in enumerate(slots):
        start = r_off
        for s in ss:
            if not s.weight:
                params[i][s.name] = (r_off, s.shape)
                r_off += s.size
        if r_off > start:
            segments.append((start, r_off, False, i))
        for s in layers[i].buffer_slots():
            buffers[i][s.name] = (b_off, s.shape)
            b_off += s.size
    segments.sort()
    return Layout(r_off, n_weights, b_off, params, buffers, segments)


def legacy_configs(units, bn_momentum: float = 0.1, bn_eps: float = 1e-5) -> list[dict]:
    """Layer configs for the layer list of fastnn's first file format (one dict per
    dense layer with its batch normalisation and dropout; read by ``fastnn.io``)."""
    out = []
    for i, u in enumerate(units):
        where = f"layer {i}"
        _check_keys(
            u, where, ("n_in", "n_out", "activation", "alpha", "dropout", "batch_norm", "frozen")
        )
        bn = v.boolean(u.get("batch_norm", False), f"{where} batch_norm")
        frozen = u.get("frozen", False)
        act, alpha = u.get("activation", "identity"), u.get("alpha")
        dense = {"type": "dense", "n_in": u.get("n_in"), "n_out": u.get("n_out"), "frozen": frozen}
        if bn:
            dense.update(activation="identity", bias=False)
            out += [
                dense,
                {
                    "type": "batch_norm",
                    "n": u.get("n_out"),
                    "activation": act,
                    "alpha": alpha,
                    "momentum": bn_momentum,
                    "eps": bn_eps,
                    "frozen": frozen,
                },
            ]
        else:
            out.append({**dense, "activation": act, "alpha": alpha})
        rate = u.get("dropout", 0.0)
        if rate:
            out.append({"type": "dropout", "rate": rate, "n": u.get("n_out")})
    return out
