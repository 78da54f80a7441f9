"""Learning-rate schedules (docs/spec.md §6), usable with every optimizer.

A schedule maps a time ``t`` (0-based: the number of epochs, or of optimizer steps,
completed before the current one) to a learning rate. ``per`` says which clock it
reads: ``"epoch"`` (the default) or ``"step"``. Optimizers take a schedule wherever
they take a learning rate; a plain float means :class:`Constant`.

>>> s = Cosine(0.1, T=10)
>>> s(0), round(s(5), 4), s(10)
(0.1, 0.05, 0.0)
>>> w = LinearWarmup(5, after=Cosine(0.1, T=100))
>>> [round(w(t), 3) for t in range(6)]
[0.02, 0.04, 0.06, 0.08, 0.1, 0.1]

Schedules are plain objects with a JSON-able ``get_config()`` and ``state_dict()``,
so fastnn's model files can store them without pickling code.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, cast

from . import _validation as v

__all__ = [
    "Schedule",
    "Constant",
    "StepDecay",
    "Cosine",
    "InverseScaling",
    "LinearWarmup",
    "ReduceOnPlateau",
    "SCHEDULES",
    "as_schedule",
    "checked_rate",
    "schedule_from_config",
    "schedule_to_config",
]

PER = ("epoch", "step")
# Schedules nest only through LinearWarmup(after=...); a few levels are all anyone
# needs, and a bound keeps a file's 500-deep chain from exhausting Python's stack.
MAX_DEPTH = 32


class Schedule:
    """Base class: ``schedule(t)`` is the learning rate at time ``t`` (0-based).

    Subclasses set ``name`` (their key in :data:`SCHEDULES`) and implement
    ``__call__`` and ``get_config``. ``observe`` receives the monitored (validation)
    loss at the end of every epoch; only :class:`ReduceOnPlateau` uses it.
    """

    name = ""
    per = "epoch"

    def __call__(self, t: int) -> float:
        raise NotImplementedError

    @property
    def initial_lr(self) -> float:
        """The learning rate at t = 0."""
        return checked_rate(self, 0)

    def observe(self, value: float) -> None:
        """Record the monitored loss of the epoch that just ended (default: ignore it)."""

    def get_config(self) -> dict:
        """The constructor arguments, JSON-able (nested schedules as configs)."""
        raise NotImplementedError

    def state_dict(self) -> dict:
        """Mutable state beyond the configuration (JSON-able); empty for pure functions."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        if state:
            raise ValueError(f"{type(self).__name__} has no state, got {sorted(state)}")

    def __repr__(self):
        args = ", ".join(f"{k}={_short(val)}" for k, val in self.get_config().items())
        return f"{type(self).__name__}({args})"

    def __eq__(self, other):
        return (
            type(self) is type(other)
            and self.get_config() == other.get_config()
            and self.state_dict() == other.state_dict()
        )

    __hash__ = None  # type: ignore[assignment]


def checked_rate(schedule, t: int) -> float:
    """``schedule(t)`` as a learning rate: a finite real number >= 0, as a Python float.

    The one place where a schedule's value becomes a rate: :attr:`Optimizer.lr
    <fastnn.optim.Optimizer.lr>` (the step-by-step path, the training loop, the
    estimators) and the whole-epoch kernel's per-step rates all call it, so a custom
    schedule cannot make any path climb the loss with a negative rate. A rate of 0 is
    allowed (a cosine schedule ends there; PyTorch allows it too).

    Raises
    ------
    TypeError
        If the value is not a real number (a string, None, a bool, an array).
    ValueError
        If it is negative, nan or infinite.
    """
    value = schedule(t)
    # fastnn's schedules return Python floats: checked without the ABC test (an epoch
    # with a per-step schedule checks every step's rate)
    if type(value) is float and 0 <= value < math.inf:
        return value
    where = (
        f"schedule {type(schedule).__name__} returned lr={value!r} at "
        f"{getattr(schedule, 'per', 'epoch')} {t}"
    )
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{where}: learning rates must be real numbers, got {type(value).__name__}")
    lr = float(value)
    if not (math.isfinite(lr) and lr >= 0):
        raise ValueError(f"{where}: learning rates must be finite numbers >= 0")
    return lr


def _short(value):
    if isinstance(value, dict) and "name" in value:
        return repr(schedule_from_config(value))
    return repr(value)


def _lr(value, name="lr"):
    return v.scalar(value, name, low=0)


def _per(per):
    return v.choice(per, "per", PER)


class Constant(Schedule):
    """eta_t = lr."""

    name = "constant"

    def __init__(self, lr: float, *, per: str = "epoch"):
        self.lr = _lr(lr)
        self.per = _per(per)

    def __call__(self, t: int) -> float:
        return self.lr

    def get_config(self):
        return {"lr": self.lr, "per": self.per}


class StepDecay(Schedule):
    """eta_t = lr * gamma ** floor(t / step_size) (docs/spec.md §6; default gamma = 0.1)."""

    name = "step_decay"

    def __init__(self, lr: float, step_size: int, gamma: float = 0.1, *, per: str = "epoch"):
        self.lr = _lr(lr)
        self.step_size = v.integer(step_size, "step_size", low=1)
        self.gamma = v.scalar(gamma, "gamma", low=0, low_open=True)
        self.per = _per(per)

    def __call__(self, t: int) -> float:
        return self.lr * self.gamma ** (t // self.step_size)

    def get_config(self):
        return {"lr": self.lr, "step_size": self.step_size, "gamma": self.gamma, "per": self.per}


class Cosine(Schedule):
    """eta_t = eta_min + 1/2 (lr - eta_min)(1 + cos(pi t / T)), held at eta_min after T."""

    name = "cosine"

    def __init__(self, lr: float, T: int, eta_min: float = 0.0, *, per: str = "epoch"):
        self.lr = _lr(lr)
        self.T = v.integer(T, "T", low=1)
        self.eta_min = _lr(eta_min, "eta_min")
        if self.eta_min > self.lr:
            raise ValueError(f"eta_min must be <= lr ({self.lr:g}), got {self.eta_min:g}")
        self.per = _per(per)

    def __call__(self, t: int) -> float:
        t = min(t, self.T)
        return self.eta_min + 0.5 * (self.lr - self.eta_min) * (1 + math.cos(math.pi * t / self.T))

    def get_config(self):
        return {"lr": self.lr, "T": self.T, "eta_min": self.eta_min, "per": self.per}


class InverseScaling(Schedule):
    """eta_t = lr / (t + 1) ** power_t (scikit-learn's "invscaling"); per step by default."""

    name = "inverse_scaling"

    def __init__(self, lr: float, power_t: float = 0.5, *, per: str = "step"):
        self.lr = _lr(lr)
        self.power_t = v.scalar(power_t, "power_t", low=0)
        self.per = _per(per)

    def __call__(self, t: int) -> float:
        return self.lr / (t + 1) ** self.power_t

    def get_config(self):
        return {"lr": self.lr, "power_t": self.power_t, "per": self.per}


class LinearWarmup(Schedule):
    """Linear warm-up over ``warmup`` units, then the schedule ``after``.

    eta_t = eta0 (t + 1) / warmup for t < warmup, then after(t - warmup), with
    eta0 = after(0) (docs/spec.md §6): the usual ``eta0 t / Tw`` (t <= Tw) with t counted
    from 1 for the current epoch or step, so the first epoch already trains at eta0 / Tw
    instead of being spent at a learning rate of zero. The clock (``per``) is the
    ``after`` schedule's. Warm-ups of warm-ups nest at most ``MAX_DEPTH`` (32) levels.
    """

    name = "linear_warmup"

    def __init__(self, warmup: int, after: Schedule | float):
        self.warmup = v.integer(warmup, "warmup", low=1)
        self.after = as_schedule(after, "after")
        if _depth(self.after) >= MAX_DEPTH:
            raise ValueError(
                f"after already nests {_depth(self.after)} schedules deep; "
                f"schedules nest at most {MAX_DEPTH} levels deep"
            )
        self.per = self.after.per

    def __call__(self, t: int) -> float:
        if t < self.warmup:
            return self.after(0) * (t + 1) / self.warmup
        return self.after(t - self.warmup)

    def observe(self, value: float) -> None:
        self.after.observe(value)

    def get_config(self):
        return {"warmup": self.warmup, "after": _to_config(self.after)}

    def state_dict(self):
        return {"after": self.after.state_dict()} if self.after.state_dict() else {}

    def load_state_dict(self, state):
        self.after.load_state_dict(state.get("after", {}))


class ReduceOnPlateau(Schedule):
    """Multiply the learning rate by ``factor`` when the monitored loss stalls.

    An epoch improves when its loss is below ``best - min_delta``. After ``patience``
    epochs in a row without improvement, lr becomes max(lr * factor, min_lr), the
    count restarts and ``cooldown`` epochs pass before counting again. Fed by the
    training loop with the validation loss (the training loss when there is no
    validation data). Always per epoch.
    """

    name = "reduce_on_plateau"
    per = "epoch"

    def __init__(
        self,
        lr: float,
        factor: float = 0.1,
        patience: int = 10,
        min_delta: float = 1e-4,
        cooldown: int = 0,
        min_lr: float = 0.0,
    ):
        self.lr = _lr(lr)
        self.factor = v.scalar(factor, "factor", low=0, high=1, low_open=True, high_open=True)
        self.patience = v.integer(patience, "patience", low=1)
        self.min_delta = v.scalar(min_delta, "min_delta", low=0)
        self.cooldown = v.integer(cooldown, "cooldown", low=0)
        self.min_lr = _lr(min_lr, "min_lr")
        self._reset_state()

    def _reset_state(self):
        self.current_lr = self.lr
        self.best = math.inf
        self.bad_epochs = 0
        self.cooldown_left = 0

    def __call__(self, t: int) -> float:
        return self.current_lr

    @property
    def initial_lr(self) -> float:
        return self.lr

    def observe(self, value: float) -> None:
        value = float(value)
        if not math.isfinite(value):
            return  # a diverged epoch is handled by the training loop, not here
        if value < self.best - self.min_delta:
            self.best, self.bad_epochs = value, 0
            return
        if self.cooldown_left > 0:
            self.cooldown_left -= 1
            return
        self.bad_epochs += 1
        if self.bad_epochs >= self.patience:
            self.current_lr = max(self.current_lr * self.factor, self.min_lr)
            self.bad_epochs = 0
            self.cooldown_left = self.cooldown

    def get_config(self):
        return {
            "lr": self.lr,
            "factor": self.factor,
            "patience": self.patience,
            "min_delta": self.min_delta,
            "cooldown": self.cooldown,
            "min_lr": self.min_lr,
        }

    def state_dict(self):
        # JSON has no infinity: None stands for "no best value yet".
        return {
            "current_lr": self.current_lr,
            "best": None if math.isinf(self.best) else self.best,
            "bad_epochs": self.bad_epochs,
            "cooldown_left": self.cooldown_left,
        }

    def load_state_dict(self, state):
        expected = {"current_lr", "best", "bad_epochs", "cooldown_left"}
        if not isinstance(state, dict) or set(state) != expected:
            raise ValueError(f"ReduceOnPlateau state must have keys {sorted(expected)}")
        self.current_lr = _lr(state["current_lr"], "current_lr")
        self.best = math.inf if state["best"] is None else v.scalar(state["best"], "best")
        self.bad_epochs = v.counter(state["bad_epochs"], "bad_epochs")
        self.cooldown_left = v.counter(state["cooldown_left"], "cooldown_left")


SCHEDULES: dict[str, type[Schedule]] = {
    cls.name: cls
    for cls in (Constant, StepDecay, Cosine, InverseScaling, LinearWarmup, ReduceOnPlateau)
}


def _depth(schedule) -> int:
    """Levels of a schedule (1 for one that holds no other), counted without recursion."""
    n = 1
    while isinstance(schedule, LinearWarmup):
        schedule, n = schedule.after, n + 1
    return n


def as_schedule(lr, name: str = "lr") -> Schedule:
    """A Schedule as is; a non-negative float as ``Constant(lr)``."""
    if isinstance(lr, Schedule):
        return lr
    return Constant(_lr(lr, name))


def _to_config(schedule: Schedule) -> dict:
    return {"name": schedule.name, **schedule.get_config()}


def schedule_to_config(schedule: Schedule) -> dict:
    """``{"name": ..., **constructor arguments}``; the inverse of schedule_from_config."""
    return _to_config(schedule)


def schedule_from_config(config: dict) -> Schedule:
    """Rebuild a schedule from ``{"name": ..., **arguments}`` (names from SCHEDULES only)."""
    if not isinstance(config, dict) or "name" not in config:
        raise ValueError(f"a schedule config must be a dict with a 'name', got {config!r}")
    depth, inner = 1, cast(Any, config)
    while isinstance(inner, dict) and inner.get("name") == "linear_warmup":
        inner, depth = inner.get("after"), depth + 1
        if depth > MAX_DEPTH:  # checked before the recursion below
            raise ValueError(f"the schedule nests more than {MAX_DEPTH} levels deep (the limit)")
    kwargs = dict(config)
    name = v.choice(kwargs.pop("name"), "schedule name", SCHEDULES)
    if name == "linear_warmup" and isinstance(kwargs.get("after"), dict):
        kwargs["after"] = schedule_from_config(kwargs["after"])
    try:
        return SCHEDULES[name](**kwargs)
    except TypeError as exc:
        raise ValueError(f"bad arguments for schedule {name!r}: {exc}") from None
