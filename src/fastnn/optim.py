"""Optimizers (docs/spec.md §5): one kernel call per step over a model's flat buffers.

Every model keeps all its parameters in one contiguous buffer (weights of every layer
first, then biases and normalisation parameters) and all gradients in a matching one.
An optimizer therefore updates the whole model with one call of its backend kernel
(``fastnn.backend(name).adam_step(...)`` and so on) -- two when L2 decay must skip the
bias slice, a few more when frozen layers cut the buffer into pieces.

>>> Adam()
Adam(lr=0.001, beta1=0.9, beta2=0.999, eps=1e-08, weight_decay=0.0)
>>> from fastnn.schedules import Cosine
>>> SGD(lr=Cosine(0.1, T=50), weight_decay=1e-4)
SGD(lr=Cosine(lr=0.1, T=50, eta_min=0.0, per='epoch'), weight_decay=0.0001)

Each step, before anything is updated, the global L2 norm of the trainable gradient
is computed (one reduction per piece): a non-finite norm raises
:class:`DivergenceError` and leaves the parameters untouched, and ``clip_norm``
rescales the gradient when the norm exceeds it.

Every optimizer is a row of ``fastnn.registry.OPTIMIZERS``: its hyperparameters (order,
defaults, ranges), states and kernel code come from there, and the update is the
backend's ``optimizer_step`` by code, so a class only declares its constructor. The
seven classes below are written out (their signatures are visible to type checkers and
editors); an optimizer added to the registry without one here gets its class built
from its row (:data:`OPTIMIZERS`, exported by ``fastnn`` as well).
"""

from __future__ import annotations

import inspect
import math
import operator
from typing import cast

import numpy as np

from . import _validation as v
from . import registry
from ._backend import check_hyperparameter
from .reference import ops
from .schedules import (
    Constant,
    Schedule,
    as_schedule,
    checked_rate,
    schedule_from_config,
    schedule_to_config,
)

__all__ = [
    "DivergenceError",
    "Optimizer",
    "SGD",
    "Momentum",
    "Nesterov",
    "Adagrad",
    "RMSProp",
    "Adam",
    "AdamW",
    "OPTIMIZERS",
    "get_optimizer",
    "optimizer_from_state",
]


class DivergenceError(FloatingPointError):
    """Training produced a non-finite loss or gradient and was stopped.

    Attributes
    ----------
    what : str
        "loss" or "gradient".
    value : float
        The offending value (nan or inf).
    history : fastnn.training.History or None
        What was recorded before the stop (set by the training loop).
    steps_done : int or None
        Steps completed in the epoch before the failing one, when the whole-epoch
        kernel reports it (the step-by-step loop tracks it itself).
    """

    def __init__(self, message: str, *, what: str = "loss", value: float = math.nan):
        super().__init__(message)
        self.what = what
        self.value = value
        self.history: object | None = None  # a fastnn.training.History
        self.steps_done: int | None = None


class Optimizer:
    """Base class. A subclass whose ``name`` is a registry row takes its states,
    hyperparameters and update from the row; any other sets ``name``, ``state_names``
    and implements ``_update``.

    Parameters
    ----------
    lr : float or Schedule
        Learning rate, or a schedule giving it (see :mod:`fastnn.schedules`).
    weight_decay : float, default 0
        L2 regularisation ``g += weight_decay * theta`` (decoupled decay for AdamW).
    decay_biases : bool, default False
        Decay biases and normalisation parameters too (by default only weights).
    clip_norm : float or None
        Rescale the gradient by ``clip_norm / ||g||`` when its global L2 norm (over all
        trainable parameters) exceeds ``clip_norm``.
    **hyperparameters
        The registry row's hyperparameters (checked against their ranges; a missing
        one takes its default).
    """

    name = ""
    state_names: tuple[str, ...] = ()
    _defaults: dict = {}
    _row: registry.Optimizer | None = None
    # the values _kernel_hyper's vector is made of: the row's hyperparameters, then
    # weight_decay and clip_norm
    _hyper_values = operator.attrgetter("weight_decay", "clip_norm")
    # True while the update is the registry row's kernel (fastnn.reference.ops.update over
    # every piece in one call); a subclass that defines _update turns it off.
    _registry_update = True

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__ and cls.name in {o.name for o in registry.OPTIMIZERS}:
            row = registry.optimizer(cls.name)
            cls._row = row
            cls.state_names = row.states
            cls._defaults = {h.name: h.default for h in row.hypers}
            cls._decay_in_loss = not row.decoupled
            cls._hyper_values = operator.attrgetter(
                *(h.name for h in row.hypers), "weight_decay", "clip_norm"
            )
        if "_update" in cls.__dict__:  # a subclass's own update, segment by segment
            cls._registry_update = False

    def __init__(
        self,
        lr,
        *,
        weight_decay: float = 0.0,
        decay_biases: bool = False,
        clip_norm: float | None = None,
        **hyperparameters,
    ):
        for h in self._row.hypers if self._row is not None else ():
            value = hyperparameters.pop(h.name, h.default)
            setattr(self, h.name, check_hyperparameter(h, value))
        if hyperparameters:
            raise TypeError(
                f"{type(self).__name__} got unexpected arguments {sorted(hyperparameters)}"
            )
        self.schedule: Schedule = as_schedule(lr)
        self.weight_decay = v.scalar(weight_decay, "weight_decay", low=0)
        self.decay_biases = v.boolean(decay_biases, "decay_biases")
        self.clip_norm = (
            None if clip_norm is None else v.scalar(clip_norm, "clip_norm", low=0, low_open=True)
        )
        self.reset()

    # --- state ----------------------------------------------------------------------
    def reset(self) -> None:
        """Forget the step count, the epoch count and every state buffer."""
        self.t = 0  # optimizer steps completed
        self.epoch = 0  # epochs completed (the clock of per-epoch schedules)
        self.state: dict[str, np.ndarray] = {}
        self.last_grad_norm = math.nan
        self._token = None  # the model parameter layout the state belongs to
        self._runs_key: tuple | None = None
        self._runs: tuple[tuple[int, int, bool], ...] = ()

    def _bind(self, model) -> None:
        if self._token is model._layout_token:
            return
        n, dtype = model.params.size, model.params.dtype
        if self.state or self.t:
            if (
                all(a.shape == (n,) and a.dtype == dtype for a in self.state.values())
                and self._token is None
            ):
                self._token = model._layout_token  # state loaded from a file for this model
                return
            raise ValueError(
                f"this {type(self).__name__} holds state for another model (or for this "
                f"model before its layers changed); call optimizer.reset() or create a "
                f"new optimizer"
            )
        self.state = {name: np.zeros(n, dtype) for name in self.state_names}
        self._token = model._layout_token

    # --- learning rate ----------------------------------------------------------------
    @property
    def lr(self) -> float:
        """The learning rate the next step will use (checked by
        :func:`fastnn.schedules.checked_rate`: a finite number >= 0)."""
        return checked_rate(self.schedule, self.t if self.schedule.per == "step" else self.epoch)

    def end_epoch(self, monitored: float | None = None) -> None:
        """Advance the epoch clock; ``monitored`` (the validation loss) feeds plateau schedules."""
        self.epoch += 1
        if monitored is not None:
            self.schedule.observe(monitored)

    # --- the step -----------------------------------------------------------------------
    def _update_runs(self, model):
        """Contiguous (start, stop, decayed) pieces of the trainable parameters."""
        decays = self.weight_decay > 0
        key = (model._layout_token, model._frozen_version, self.decay_biases, decays)
        if key != self._runs_key:
            runs: list[tuple[int, int, bool]] = []
            for start, stop, is_weight in model.param_segments():
                decayed = decays and (is_weight or self.decay_biases)
                if runs and runs[-1][1] == start and runs[-1][2] == decayed:
                    runs[-1] = (runs[-1][0], stop, decayed)
                else:
                    runs.append((start, stop, decayed))
            self._runs_key, self._runs = key, tuple(runs)
        return self._runs

    # False for a decoupled decay (AdamW; a registry row's ``decoupled``): not an L2 term
    # of the loss, so not scaled by a weighted batch's m / S.
    _decay_in_loss = True

    def step(self, model, *, decay_scale: float = 1.0) -> float:
        """Update ``model.params`` in place from ``model.grads``; returns the gradient norm.

        ``decay_scale`` multiplies ``weight_decay`` for this step (an L2 term, not
        AdamW's decoupled decay): a batch with sample weights passes m / S, so that the
        L2 term is normalised by the batch's weight sum as its loss is
        (:meth:`fastnn.MLP.train_step`, docs/spec.md §4 "Sample weights").

        Raises
        ------
        DivergenceError
            If the gradient norm is not finite; nothing is updated then.
        """
        self._bind(model)
        runs = self._update_runs(model)
        if not runs:
            raise ValueError("every layer of the model is frozen: nothing to train")
        # The raw kernels (Backend._internal): params, grads and the state are flat,
        # C-contiguous arrays of the model's dtype, and runs lie inside them. The norm,
        # the clipping and the update are the reference epoch's (fastnn.reference.ops).
        k, p, g = model.kernels._internal, model.params, model.grads
        norm = ops.gradient_norm(k, g, runs)
        self.last_grad_norm = norm
        if not math.isfinite(norm):
            raise DivergenceError(f"the gradient norm is {norm}", what="gradient", value=norm)
        if self.clip_norm is not None:  # (the reference's clip_norm 0: no clipping)
            ops.clip(k, g, runs, self.clip_norm, norm)
        lr = self.lr
        self.t += 1
        decay = self.weight_decay
        if decay_scale != 1.0 and self._decay_in_loss:
            decay = self.weight_decay * decay_scale
        if self._row is not None and self._registry_update:
            states = [self.state[name] for name in self.state_names] + [p[:0], p[:0]]
            ops.update(
                k, p, g, states[0], states[1], runs, self._row.code, self.t, lr,
                self._kernel_hyper(), decay,
            )  # fmt: skip
        else:
            for s, e, decayed in runs:
                st = {name: arr[s:e] for name, arr in self.state.items()}
                self._update(k, p[s:e], g[s:e], st, lr, decay if decayed else 0.0)
        return norm

    def _update(self, k, param, grad, state, lr, weight_decay):
        """One segment's update (a subclass's own; fastnn's optimizers update every
        segment with the registry row's kernel by code, ``fastnn.reference.ops.update``)."""
        if self._row is None:
            raise NotImplementedError(f"{type(self).__name__} must implement _update")
        states = [state[name] for name in self.state_names] + [param[:0], param[:0]]
        k.optimizer_step(
            param,
            grad,
            states[0],
            states[1],
            self._row.code,
            self.t,
            lr,
            self._kernel_hyper(),
            weight_decay,
        )

    def _kernel_hyper(self) -> np.ndarray:
        """The kernels' ``hyper`` vector (registry.HYPER_SLOTS), filled as the
        optimizer's registry row says; slots it does not use are 0. The step path and
        the whole-epoch kernel take the same one. Rebuilt only when a hyperparameter
        changed (the kernels read it, never write it)."""
        key = self._hyper_values(self)
        cached = self.__dict__.get("_hyper_cache")
        if cached is not None and cached[0] == key:
            return cached[1]
        hypers = self._row.hypers if self._row is not None else ()
        slots = dict.fromkeys(registry.HYPER_SLOTS, 0.0)
        for h in hypers:
            slots[h.slot] = float(getattr(self, h.name))
        slots["weight_decay"] = self.weight_decay
        slots["clip_norm"] = 0.0 if self.clip_norm is None else self.clip_norm
        vector = np.array([slots[s] for s in registry.HYPER_SLOTS], np.float64)
        self._hyper_cache = (key, vector)
        return vector

    # --- description, saving --------------------------------------------------------------
    def hyperparameters(self) -> dict:
        """The optimizer-specific hyperparameters (not lr, decay or clipping)."""
        return {name: getattr(self, name) for name in self._defaults}

    def get_config(self) -> dict:
        """Constructor arguments, JSON-able (a schedule as its config)."""
        lr = self.schedule
        return {
            "lr": lr.lr if isinstance(lr, Constant) else schedule_to_config(lr),
            **self.hyperparameters(),
            "weight_decay": self.weight_decay,
            "decay_biases": self.decay_biases,
            "clip_norm": self.clip_norm,
        }

    def __repr__(self):
        cfg = self.get_config()
        parts = [
            f"lr={cast(Constant, self.schedule).lr!r}"
            if isinstance(cfg["lr"], float)
            else f"lr={self.schedule!r}"
        ]
        parts += [f"{k}={val!r}" for k, val in self.hyperparameters().items()]
        parts.append(f"weight_decay={self.weight_decay!r}")
        if self.decay_biases:
            parts.append("decay_biases=True")
        if self.clip_norm is not None:
            parts.append(f"clip_norm={self.clip_norm!r}")
        return f"{type(self).__name__}({', '.join(parts)})"

    def state_dict(self) -> dict:
        """Everything needed to continue training: JSON-able metadata plus arrays.

        Returns ``{"name", "config", "t", "epoch", "schedule_state", "arrays"}``,
        ``arrays`` mapping state names to copies of the flat state buffers.
        """
        return {
            "name": self.name,
            "config": self.get_config(),
            "t": self.t,
            "epoch": self.epoch,
            "schedule_state": self.schedule.state_dict(),
            "arrays": {k: a.copy() for k, a in self.state.items()},
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore counters, schedule state and buffers saved by :meth:`state_dict`."""
        if state.get("name") != self.name:
            raise ValueError(f"state is for optimizer {state.get('name')!r}, not {self.name!r}")
        arrays = state.get("arrays", {})
        if arrays and set(arrays) != set(self.state_names):
            raise ValueError(
                f"{self.name} state arrays must be {list(self.state_names)}, got {sorted(arrays)}"
            )
        sizes = {a.shape for a in arrays.values()}
        if len(sizes) > 1 or any(len(s) != 1 for s in sizes):
            raise ValueError("optimizer state arrays must be 1-D and of one length")
        t = v.counter(state.get("t", 0), "t")
        epoch = v.counter(state.get("epoch", 0), "epoch")
        self.reset()
        self.schedule.load_state_dict(state.get("schedule_state", {}))
        self.t, self.epoch = t, epoch
        self.state = {k: np.array(a, copy=True, order="C") for k, a in arrays.items()}


class SGD(Optimizer):
    """theta -= lr g (docs/spec.md §5); default lr 0.01."""

    name = "sgd"

    def __init__(self, lr=0.01, *, weight_decay=0.0, decay_biases=False, clip_norm=None):
        super().__init__(
            lr, weight_decay=weight_decay, decay_biases=decay_biases, clip_norm=clip_norm
        )


class Momentum(Optimizer):
    """v = momentum v + (1 - dampening) g; theta -= lr v.

    dampening = 0 is the heavy-ball form (PyTorch's default); dampening = momentum the
    exponential moving-average form (docs/spec.md §5).
    """

    name = "momentum"

    def __init__(
        self,
        lr=0.01,
        momentum=0.9,
        dampening=0.0,
        *,
        weight_decay=0.0,
        decay_biases=False,
        clip_norm=None,
    ):
        super().__init__(
            lr,
            momentum=momentum,
            dampening=dampening,
            weight_decay=weight_decay,
            decay_biases=decay_biases,
            clip_norm=clip_norm,
        )


class Nesterov(Momentum):
    """Nesterov accelerated gradient: v = momentum v + (1 - d) g; theta -= lr (g + momentum v)."""

    name = "nesterov"


class Adagrad(Optimizer):
    """G += g^2; theta -= lr g / (sqrt(G) + eps), or lr g / sqrt(G + eps) with eps_inside_sqrt."""

    name = "adagrad"

    def __init__(
        self,
        lr=0.01,
        eps=1e-10,
        eps_inside_sqrt=False,
        *,
        weight_decay=0.0,
        decay_biases=False,
        clip_norm=None,
    ):
        super().__init__(
            lr,
            eps=eps,
            eps_inside_sqrt=eps_inside_sqrt,
            weight_decay=weight_decay,
            decay_biases=decay_biases,
            clip_norm=clip_norm,
        )


class RMSProp(Optimizer):
    """s = rho s + (1 - rho) g^2; theta -= lr g / (sqrt(s) + eps) (or sqrt(s + eps))."""

    name = "rmsprop"

    def __init__(
        self,
        lr=0.01,
        rho=0.9,
        eps=1e-8,
        eps_inside_sqrt=False,
        *,
        weight_decay=0.0,
        decay_biases=False,
        clip_norm=None,
    ):
        super().__init__(
            lr,
            rho=rho,
            eps=eps,
            eps_inside_sqrt=eps_inside_sqrt,
            weight_decay=weight_decay,
            decay_biases=decay_biases,
            clip_norm=clip_norm,
        )


class Adam(Optimizer):
    """Adam (Kingma & Ba) with bias corrections; L2 ``weight_decay`` added to the gradient."""

    name = "adam"

    def __init__(
        self,
        lr=1e-3,
        beta1=0.9,
        beta2=0.999,
        eps=1e-8,
        *,
        weight_decay=0.0,
        decay_biases=False,
        clip_norm=None,
    ):
        super().__init__(
            lr,
            beta1=beta1,
            beta2=beta2,
            eps=eps,
            weight_decay=weight_decay,
            decay_biases=decay_biases,
            clip_norm=clip_norm,
        )


class AdamW(Adam):
    """Adam with decoupled weight decay: theta -= lr wd theta, then the Adam step.

    Default ``weight_decay`` 0.01 (applied to weights only unless ``decay_biases``).
    """

    name = "adamw"

    def __init__(
        self,
        lr=1e-3,
        beta1=0.9,
        beta2=0.999,
        eps=1e-8,
        *,
        weight_decay=0.01,
        decay_biases=False,
        clip_norm=None,
    ):
        super().__init__(
            lr,
            beta1,
            beta2,
            eps,
            weight_decay=weight_decay,
            decay_biases=decay_biases,
            clip_norm=clip_norm,
        )


def _class_from_row(row: registry.Optimizer) -> type[Optimizer]:
    """The class of a registry optimizer that has none written out above: the
    constructor ``(lr, <hyperparameters>..., *, weight_decay, decay_biases,
    clip_norm)`` with the row's defaults, its docstring from the row's formula."""
    P = inspect.Parameter
    params = [P("self", P.POSITIONAL_OR_KEYWORD), P("lr", P.POSITIONAL_OR_KEYWORD, default=row.lr)]
    params += [P(h.name, P.POSITIONAL_OR_KEYWORD, default=h.default) for h in row.hypers]
    params += [
        P("weight_decay", P.KEYWORD_ONLY, default=row.weight_decay),
        P("decay_biases", P.KEYWORD_ONLY, default=False),
        P("clip_norm", P.KEYWORD_ONLY, default=None),
    ]
    signature = inspect.Signature(params)

    def __init__(*args, **kwargs):
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        a = dict(bound.arguments)
        Optimizer.__init__(a.pop("self"), a.pop("lr"), **a)

    __init__.__signature__ = signature  # type: ignore[attr-defined]
    __init__.__qualname__ = f"{row.cls}.__init__"
    hypers = "".join(
        f"{h.name} : {type(h.default).__name__}, default {h.default!r}\n" for h in row.hypers
    )
    decay = "decoupled: theta -= lr wd theta" if row.decoupled else "L2: g += wd theta"
    doc = (
        f"{row.formula} (docs/spec.md §5).\n\n"
        "Parameters\n----------\n"
        f"lr : float or Schedule, default {row.lr!r}\n"
        f"{hypers}"
        f"weight_decay : float, default {row.weight_decay!r}\n    Weight decay ({decay}).\n"
        "decay_biases, clip_norm\n    As :class:`Optimizer`'s.\n"
    )
    namespace = {"name": row.name, "__init__": __init__, "__doc__": doc, "__module__": __name__}
    return cast("type[Optimizer]", type(row.cls, (Optimizer,), namespace))


_WRITTEN: dict[str, type[Optimizer]] = {
    cls.name: cls for cls in (SGD, Momentum, Nesterov, Adagrad, RMSProp, Adam, AdamW)
}
# Every registry optimizer's class, by name, in code order.
OPTIMIZERS: dict[str, type[Optimizer]] = {
    row.name: _WRITTEN.get(row.name) or _class_from_row(row) for row in registry.OPTIMIZERS
}
for _cls in OPTIMIZERS.values():
    if _cls.__name__ not in __all__:
        globals()[_cls.__name__] = _cls
        __all__.append(_cls.__name__)
del _cls


def get_optimizer(optimizer: str | Optimizer = "adam", **kwargs) -> Optimizer:
    """An optimizer instance: returned as is, or built from its name and ``kwargs``.

    Names: those of :data:`OPTIMIZERS` (the registry's: "sgd", "momentum", "adam"...).
    """
    if isinstance(optimizer, Optimizer):
        if kwargs:
            raise TypeError("keyword arguments are only accepted with an optimizer name")
        return optimizer
    v.choice(optimizer, "optimizer", OPTIMIZERS)
    return OPTIMIZERS[optimizer](**kwargs)


def optimizer_from_state(state: dict) -> Optimizer:
    """Rebuild an optimizer from :meth:`Optimizer.state_dict` output (names from OPTIMIZERS)."""
    name = v.choice(state.get("name"), "optimizer name", OPTIMIZERS)
    config = dict(state.get("config", {}))
    if isinstance(config.get("lr"), dict):
        config["lr"] = schedule_from_config(config["lr"])
    try:
        opt = OPTIMIZERS[name](**config)
    except TypeError as exc:
        raise ValueError(f"bad arguments for optimizer {name!r}: {exc}") from None
    opt.load_state_dict(state)
    return opt
