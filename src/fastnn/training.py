"""The training loop: epochs of mini-batches, validation, callbacks, early stopping.

:func:`fit` drives a model's ``train_epoch`` (which calls ``train_step`` once per
mini-batch) and owns everything around it:

- validation on ``validation_data`` or on a ``validation_split`` held out once;
- a :class:`History` of the training loss, the validation loss, accuracy
  (classification) or R^2 (regression), the learning rate and the epoch time;
- callbacks, called at the end of every epoch; any of them can stop training;
- early stopping (:class:`EarlyStopping`), restoring the best weights;
- divergence: a non-finite loss or gradient stops training with
  :class:`~fastnn.optim.DivergenceError`, the model keeping its last finite weights;
- Ctrl-C: the step under way completes, then ``KeyboardInterrupt`` is raised with the
  model at that completed step (a second Ctrl-C interrupts at once);
- ``verbose`` lines and an optional tqdm progress bar.

For a given ``random_state``, backend and thread count the result is bit-identical
from run to run.

The epoch loop itself (:func:`run_epochs`: the deferred Ctrl-C, the rollback copy,
divergence detection and restoration) and :class:`BestState` are shared with the
scikit-learn estimators' stochastic solvers, which bring their own records and
stopping rules (scikit-learn's); they are package API, not in ``__all__``.
"""

from __future__ import annotations

import math
import os
import signal
import sys
import threading
import time
from collections.abc import Callable

import numpy as np

from . import _validation as v
from ._guard import trains_model
from .losses import check_sample_weight
from .optim import DivergenceError, Optimizer, get_optimizer

__all__ = ["fit", "History", "Callback", "LambdaCallback", "EarlyStopping", "ModelCheckpoint"]


class History:
    """Per-epoch records of one :func:`fit` call.

    Attributes
    ----------
    epoch : list of int
        Epoch numbers of this call, from 1.
    history : dict of str -> list
        "loss", "val_loss", "accuracy" / "val_accuracy" (classification),
        "val_r2" (regression with validation data), "lr", "time" (seconds).
    stop_reason : str
        "completed", "early_stopping", "callback", "diverged" or "interrupted".
    best_epoch : int or None
        The epoch whose weights early stopping restored.
    """

    def __init__(self):
        self.epoch: list[int] = []
        self.history: dict[str, list] = {}
        self.stop_reason = "completed"
        self.best_epoch = None

    def append(self, epoch: int, logs: dict) -> None:
        self.epoch.append(epoch)
        for key, value in logs.items():
            self.history.setdefault(key, []).append(value)

    def __getitem__(self, key: str) -> list:
        return self.history[key]

    def __contains__(self, key: str) -> bool:
        return key in self.history

    def __len__(self) -> int:
        return len(self.epoch)

    def __repr__(self):
        last = {k: vals[-1] for k, vals in self.history.items()} if self.epoch else {}
        return f"History(epochs={len(self.epoch)}, stop_reason={self.stop_reason!r}, last={last})"


class Callback:
    """Base class of training callbacks; override what you need.

    ``on_epoch_end`` returning True stops training after that epoch.
    """

    def on_train_begin(self, model, logs: dict) -> None:
        """Called once before the first epoch; ``logs`` says whether there is validation
        data (``{"has_validation": bool}``)."""

    def on_epoch_end(self, epoch: int, logs: dict) -> bool | None:
        """Called after every epoch with its 0-based index in this fit and its logs."""

    def on_train_end(self, history: History) -> None:
        """Called when training ends normally (not after a divergence or an interrupt)."""


class LambdaCallback(Callback):
    """Wrap a function ``f(epoch, logs) -> bool | None`` as an epoch-end callback."""

    def __init__(self, on_epoch_end: Callable[[int, dict], bool | None]):
        if not callable(on_epoch_end):
            raise TypeError(
                f"callbacks must be Callback objects or functions, got "
                f"{type(on_epoch_end).__name__}"
            )
        self._fn = on_epoch_end

    def on_epoch_end(self, epoch, logs):
        return self._fn(epoch, logs)


def _mode_for(monitor: str) -> str:
    return "max" if monitor.endswith(("accuracy", "r2")) else "min"


def monitored_value(callback: Callback, monitor: str, logs: dict) -> float:
    """``logs[monitor]`` as a float, or a ValueError naming the callback, the key and
    the keys the epoch logs do have."""
    if monitor not in logs:
        raise ValueError(
            f"{type(callback).__name__} monitors {monitor!r}, which is not "
            f"among the epoch logs {sorted(logs)}"
        )
    return float(logs[monitor])


class EarlyStopping(Callback):
    """Stop when ``monitor`` has not improved for ``patience`` epochs; restore the best weights.

    Parameters
    ----------
    monitor : str, default "val_loss"
        A key of the epoch logs ("val_loss", "loss", "val_accuracy", "val_r2", ...).
        "auto" watches "val_loss" when there is validation data, else "loss".
    patience : int, default 10
        Epochs without improvement before stopping.
    min_delta : float, default 0
        An epoch improves when it beats the best value by more than ``min_delta``.
    mode : {"auto", "min", "max"}
        "auto": "max" for accuracy and r2, "min" otherwise.
    restore_best_weights : bool, default True
        At the end of training (stopped early or not), put back the parameters and
        batch-norm statistics of the best epoch. The optimizer state is not restored.
    """

    def __init__(
        self,
        monitor: str = "val_loss",
        patience: int = 10,
        min_delta: float = 0.0,
        mode: str = "auto",
        restore_best_weights: bool = True,
    ):
        if not isinstance(monitor, str):
            raise TypeError(f"monitor must be a string, got {monitor!r}")
        self.monitor = monitor
        self.patience = v.integer(patience, "patience", low=1)
        self.min_delta = v.scalar(min_delta, "min_delta", low=0)
        self.mode = v.choice(mode, "mode", ("auto", "min", "max"))
        self.restore_best_weights = v.boolean(restore_best_weights, "restore_best_weights")

    def __repr__(self):
        return (
            f"EarlyStopping(monitor={self.monitor!r}, patience={self.patience}, "
            f"min_delta={self.min_delta}, restore_best_weights="
            f"{self.restore_best_weights})"
        )

    def on_train_begin(self, model, logs):
        monitor = self.monitor
        if monitor == "auto":
            monitor = "val_loss" if logs.get("has_validation") else "loss"
        if monitor.startswith("val_") and not logs.get("has_validation"):
            raise ValueError(
                f"EarlyStopping monitors {monitor!r} but there is no "
                f"validation data: pass validation_split or validation_data, "
                f"or monitor='loss'"
            )
        self._monitor = monitor
        self._sign = (
            1.0 if (self.mode if self.mode != "auto" else _mode_for(monitor)) == "min" else -1.0
        )
        self.best = math.inf
        self.best_epoch = None
        self.wait = 0
        self.stopped_epoch = None
        self._best = BestState(model)

    def on_epoch_end(self, epoch, logs):
        value = self._sign * monitored_value(self, self._monitor, logs)
        if math.isfinite(value) and value < self.best - self.min_delta:
            self.best, self.best_epoch, self.wait = value, epoch, 0
            if self.restore_best_weights:
                self._best.keep()
            return None
        self.wait += 1
        if self.wait >= self.patience:
            self.stopped_epoch = epoch
            return True
        return None

    def on_train_end(self, history):
        if self.best_epoch is not None:
            history.best_epoch = self.best_epoch + 1
            if self.restore_best_weights and self._best.kept:
                self._best.restore()


class ModelCheckpoint(Callback):
    """Save the model (with its optimizer) every ``every`` epochs.

    Parameters
    ----------
    path : str or os.PathLike
        Where to write; may contain ``{epoch}`` (the 1-based epoch number).
    every : int, default 1
        Save after every ``every``-th epoch.
    save : callable ``save(model, path)`` or None, default None
        What writes the file. None: :func:`fastnn.save`, which writes a temporary file
        and renames it, so an interrupted save never damages the previous checkpoint.
        The loop itself knows nothing of the file format: it only calls this function
        (and ``fastnn.io`` is imported only when None is given and a save is due).
    """

    def __init__(self, path, every: int = 1, *, save: Callable[..., object] | None = None):
        self.path = os.fspath(path)
        self.every = v.integer(every, "every", low=1)
        if save is not None and not callable(save):
            raise TypeError(f"save must be a function save(model, path), got {save!r}")
        self.save = save

    def on_train_begin(self, model, logs):
        self._model = model

    def on_epoch_end(self, epoch, logs):
        if (epoch + 1) % self.every == 0:
            save = self.save if self.save is not None else _default_save()
            save(self._model, self.path.format(epoch=epoch + 1))


def _default_save():
    # Imported when first needed, not at the top: io builds models (it uses
    # fastnn.model) and fastnn.model imports this loop, so a top-level import would
    # close the cycle model -> training -> io -> model.
    from .io import save

    return save


class _DeferredInterrupt:
    """While active, a first Ctrl-C only sets ``pending`` (checked between steps); a
    second one interrupts at once. Only installed in the main thread, and only over
    Python's default handler."""

    def __init__(self):
        self.pending = False
        self._installed = False

    def _handler(self, signum, frame):
        if self.pending:
            signal.signal(signal.SIGINT, signal.default_int_handler)
            raise KeyboardInterrupt
        self.pending = True

    def __enter__(self):
        if (
            threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGINT) is signal.default_int_handler
        ):
            signal.signal(signal.SIGINT, self._handler)
            self._installed = True
        return self

    def __exit__(self, *exc):
        if self._installed:
            signal.signal(signal.SIGINT, signal.default_int_handler)
        return False

    def check(self):
        if self.pending:
            self.pending = False
            raise KeyboardInterrupt


class BestState:
    """A copy of a model's parameters and batch-norm statistics, refreshed in place.

    What early stopping restores: :class:`EarlyStopping` keeps the best epoch's, the
    scikit-learn estimators their best validation score's (from the weights they
    started with).

    Parameters
    ----------
    model : fastnn.MLP
    now : bool, default False
        Take the first copy at once (else at the first :meth:`keep`).
    """

    def __init__(self, model, *, now: bool = False):
        self._model = model
        self._state = model.get_state() if now else None

    @property
    def kept(self) -> bool:
        """Whether a copy has been taken."""
        return self._state is not None

    def keep(self) -> None:
        """Copy the model's current ``params`` and ``buffers`` (into the same arrays
        after the first time: no allocation per improvement)."""
        if self._state is None:
            self._state = self._model.get_state()
        else:
            np.copyto(self._state["params"], self._model.params)
            np.copyto(self._state["buffers"], self._model.buffers)

    def restore(self) -> None:
        """Put the copy back into the model (nothing when none was taken)."""
        if self._state is not None:
            self._model.set_state(self._state)


class Diverged(Exception):
    """Raised by :func:`run_epochs` when training diverged, once it has restored what
    it could; the caller words the error for its users.

    Attributes
    ----------
    error : DivergenceError
        What the step or the weight check raised (``what`` is "loss", "gradient" or
        "weights").
    epoch : int
        The 0-based epoch (of this call) in which it happened.
    step : int
        The failing step, 1-based within its epoch.
    updates : int
        The optimizer's step count when it happened (before any rollback).
    kept : {"finite", "rolled back", "lost"}
        "finite": the weights were still finite (the failing step changes nothing), so
        the model keeps its last finite weights. "rolled back": they were not, and the
        model and its optimizer were restored to the start of the epoch. "lost": they
        were not and ``rollback=False`` kept no copy.
    """

    def __init__(self, error: DivergenceError, epoch: int, step: int, updates: int, kept: str):
        super().__init__(str(error))
        self.error, self.epoch, self.step = error, epoch, step
        self.updates, self.kept = updates, kept


def run_epochs(
    model,
    X,
    y,
    optimizer: Optimizer,
    *,
    epochs: int,
    batch_size: int,
    after_epoch: Callable[[int, dict], bool],
    shuffle: bool = True,
    order: Callable[[int], np.ndarray | None] | None = None,
    before_epoch: Callable[[int], None] | None = None,
    rollback: bool = True,
    sample_weight: np.ndarray | None = None,
) -> None:
    """The epoch loop under :func:`fit` and the scikit-learn estimators' stochastic
    solvers: what both must do the same way lives here once.

    Each epoch: ``before_epoch(epoch)``, a rollback copy of the model and optimizer,
    ``model.train_epoch`` (rows in ``order(epoch)`` when given, else shuffled from the
    model's stream when ``shuffle``), a check that the weights are finite, then
    ``after_epoch(epoch, logs)``, which returns True to stop. Ctrl-C is deferred to
    the end of the step under way.

    Parameters
    ----------
    model : fastnn.MLP
    X, y : ndarray
        Prepared by ``model.check_data``.
    optimizer : Optimizer
    epochs, batch_size : int
        Checked by the caller (``batch_size`` at most the number of rows).
    after_epoch : callable ``(epoch, logs) -> bool``
        The caller's records, validation and stopping rule; ``logs`` is what
        ``train_epoch`` returned.
    shuffle : bool
    order : callable ``epoch -> ndarray of int or None``, optional
        The rows' order of each epoch (the estimators: scikit-learn's shuffle).
    before_epoch : callable ``epoch -> None``, optional
        Runs before the rollback copy (the estimators set the epoch's learning rate).
    rollback : bool
        Keep the copy that undoes an epoch whose update made the weights non-finite.
    sample_weight : ndarray (n,) or None
        The rows' weights (``MLP.train_epoch``).

    Raises
    ------
    Diverged
        The loss, a gradient or the weights became non-finite; the model (and its
        optimizer) hold their last finite state when ``rollback`` or when the weights
        stayed finite.
    KeyboardInterrupt
        After Ctrl-C, once the step under way has completed.
    """
    snapshot = None
    where = {"epoch": 0, "step": -1}
    interrupt = _DeferredInterrupt()

    def poll(steps_done):
        where["step"] = steps_done - 1
        interrupt.check()

    try:
        with interrupt:
            for epoch in range(epochs):
                where["epoch"], where["step"] = epoch, -1
                if before_epoch is not None:
                    before_epoch(epoch)
                if rollback:
                    snapshot = _take_snapshot(model, optimizer, snapshot)
                rows = order(epoch) if order is not None else None
                logs = model.train_epoch(
                    X,
                    y,
                    optimizer,
                    batch_size,
                    shuffle=shuffle,
                    order=rows,
                    poll=poll,
                    sample_weight=sample_weight,
                )
                if not _all_finite(model.params, model.buffers):
                    raise DivergenceError("the weights became non-finite", what="weights")
                if after_epoch(epoch, logs):
                    break
                interrupt.check()
    except DivergenceError as err:
        # The failing step, 1-based within its epoch.
        step = (err.steps_done if err.steps_done is not None else where["step"] + 1) + 1
        updates = optimizer.t
        kept = _restore_last_finite(model, optimizer, snapshot)
        raise Diverged(err, where["epoch"], step, updates, kept) from None


def _progress_bar(enabled, total):
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=total, unit="epoch", dynamic_ncols=True)


def _format_logs(logs):
    parts = []
    for key, value in logs.items():
        if key in ("time", "lr"):
            continue
        parts.append(f"{key}: {value:.4f}")
    parts.append(f"lr: {logs['lr']:.3g}")
    parts.append(f"{logs['time']:.2f}s")
    return " - ".join(parts)


def _split(model, X, y, validation_split, w=None):
    n = X.shape[0]
    n_val = math.ceil(n * validation_split)
    if n_val < 1 or n - n_val < 1:
        raise ValueError(
            f"validation_split={validation_split} leaves {n - n_val} training "
            f"and {n_val} validation samples out of {n}; both need at least 1"
        )
    order = model.rngs["split"].permutation(n)
    val, train = np.sort(order[:n_val]), np.sort(order[n_val:])
    return X[train], y[train], X[val], y[val], (None if w is None else w[train])


def _all_finite(*arrays):
    return all(v.all_finite(a) for a in arrays)


@trains_model
def fit(
    model,
    X,
    y,
    *,
    optimizer: Optimizer | str | None = None,
    epochs: int = 10,
    batch_size: int = 32,
    shuffle: bool = True,
    validation_split: float = 0.0,
    validation_data: tuple | None = None,
    early_stopping=False,
    callbacks=(),
    verbose: int = 0,
    progress: bool = False,
    rollback: bool = True,
    sample_weight=None,
) -> History:
    """Train ``model`` on (X, y) for ``epochs`` epochs of mini-batches.

    Parameters
    ----------
    model : fastnn.MLP
    X : array-like (n_samples, n_features)
        Converted once to the model's dtype (see :mod:`fastnn.model`).
    y : array-like
        Targets for the model's loss (see :mod:`fastnn.losses`).
    optimizer : Optimizer, str or None
        An optimizer (or its name, with default hyperparameters). None continues with
        ``model.optimizer`` (its state kept) or, for a new model, uses ``Adam()``.
        The optimizer used is stored as ``model.optimizer``.
    epochs : int
        Number of passes over the training data (0: return at once, nothing changes).
    batch_size : int
        Mini-batch size (capped at the number of samples); the last partial batch is
        kept.
    shuffle : bool
        A fresh permutation of the training data every epoch.
    validation_split : float in [0, 1)
        Fraction of (X, y) held out (chosen once, from the model's split stream).
    validation_data : (X_val, y_val) or None
        Explicit validation data (exclusive with ``validation_split``).
    early_stopping : bool or EarlyStopping
        True: ``EarlyStopping(monitor="auto")`` with its defaults.
    callbacks : sequence of Callback or functions ``f(epoch, logs) -> bool | None``
    verbose : int
        1 or more prints one line per epoch.
    progress : bool
        Show a tqdm progress bar (silently skipped when tqdm is not installed).
    rollback : bool
        Keep a copy of the parameters and optimizer state from the start of each epoch,
        so that a divergence that made the weights themselves non-finite can be undone
        (costs one more copy of parameters and optimizer state).
    sample_weight : array-like (n_samples,) or None
        Non-negative weights of the training samples (not all zero; a scalar weighs
        all alike). Each batch's loss and gradient are then weighted means, normalised
        by the batch's weight sum, and the L2 ``weight_decay`` by the same factor
        (see :meth:`fastnn.MLP.train_epoch` and docs/spec.md §4, "Sample weights");
        with ``validation_split`` the held-out rows' weights are dropped. Validation
        metrics are unweighted. A batch whose weights are all zero raises ValueError.

    Returns
    -------
    History
        Also stored as ``model.history``.

    Raises
    ------
    DivergenceError
        The loss or the gradient became non-finite; the model keeps its last finite
        weights (``err.history`` holds what was recorded).
    KeyboardInterrupt
        After Ctrl-C, once the step under way has completed.
    RuntimeError
        When another thread is training the model (or, from another thread, while this
        fit runs: see :mod:`fastnn.model`, "Threads"). Callbacks run in the training
        thread and may use the model.
    """
    epochs = v.integer(epochs, "epochs", low=0)
    batch_size = v.integer(batch_size, "batch_size", low=1)
    shuffle = v.boolean(shuffle, "shuffle")
    validation_split = v.scalar(validation_split, "validation_split", low=0, high=1, high_open=True)
    verbose = v.integer(verbose, "verbose", low=0)
    progress = v.boolean(progress, "progress")
    rollback = v.boolean(rollback, "rollback")
    if validation_data is not None and validation_split:
        raise ValueError("give validation_data or validation_split, not both")

    X, y = model.check_data(X, y)
    w = check_sample_weight(sample_weight, X.shape[0])
    Xv = yv = None
    if validation_data is not None:
        if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
            raise ValueError("validation_data must be a pair (X_val, y_val)")
        Xv = _check_named(model, validation_data[0], "X_val")
        yv = model.check_targets(validation_data[1], Xv.shape[0], name="y_val")
    elif validation_split:
        X, y, Xv, yv, w = _split(model, X, y, validation_split, w)
    has_val = Xv is not None
    batch_size = min(batch_size, X.shape[0])

    if optimizer is not None:
        model.optimizer = get_optimizer(optimizer)
    elif model.optimizer is None:
        from .optim import Adam

        model.optimizer = Adam()
    opt = model.optimizer

    cbs = [c if isinstance(c, Callback) else LambdaCallback(c) for c in callbacks]
    if early_stopping is True:
        cbs.append(EarlyStopping(monitor="auto"))
    elif isinstance(early_stopping, EarlyStopping):
        cbs.append(early_stopping)
    elif early_stopping is not False and early_stopping is not None:
        raise TypeError(
            f"early_stopping must be a bool or an EarlyStopping, got {early_stopping!r}"
        )

    history = History()
    model.history = history
    for cb in cbs:
        cb.on_train_begin(model, {"has_validation": has_val})

    bar = _progress_bar(progress, epochs)
    say = bar.write if bar is not None else print
    started = {"epoch": 0, "lr": 0.0, "t0": 0.0}

    def before_epoch(epoch):
        started["epoch"] = epoch
        started["lr"] = opt.lr
        started["t0"] = time.perf_counter()

    def after_epoch(epoch, logs):
        if has_val:
            for key, value in model.evaluate(Xv, yv, checked=True).items():
                logs["val_" + key] = value
        logs["lr"] = started["lr"]
        logs["time"] = time.perf_counter() - started["t0"]
        history.append(epoch + 1, logs)
        opt.end_epoch(logs.get("val_loss", logs["loss"]))
        if verbose:
            say(f"Epoch {epoch + 1}/{epochs} - {_format_logs(logs)}")
        if bar is not None:
            bar.set_postfix(
                {
                    k: f"{val:.4g}"
                    for k, val in logs.items()
                    if k in ("loss", "val_loss", "accuracy", "val_accuracy")
                }
            )
            bar.update(1)
        stop = False
        for cb in cbs:
            if cb.on_epoch_end(epoch, dict(logs)):
                stop = True
                reason = "early_stopping" if isinstance(cb, EarlyStopping) else "callback"
                history.stop_reason = reason
        if stop and verbose:
            say(f"Stopped after epoch {epoch + 1} ({history.stop_reason}).")
        return stop

    try:
        run_epochs(
            model,
            X,
            y,
            opt,
            epochs=epochs,
            batch_size=batch_size,
            shuffle=shuffle,
            before_epoch=before_epoch,
            after_epoch=after_epoch,
            rollback=rollback,
            sample_weight=w,
        )
    except Diverged as diverged:
        history.stop_reason = "diverged"
        new = _divergence_error(model, opt, diverged)
        new.history = history
        if bar is not None:
            bar.close()
        raise new from None
    except KeyboardInterrupt:
        history.stop_reason = "interrupted"
        if bar is not None:
            bar.close()
        if verbose:
            print(
                f"Interrupted in epoch {started['epoch'] + 1}; the model holds the "
                f"weights of its last completed step.",
                file=sys.stderr,
            )
        raise
    if bar is not None:
        bar.close()
    for cb in cbs:
        cb.on_train_end(history)
    return history


def _check_named(model, X, name):
    return v.check_X(X, model.dtype, model.n_features_in, name=name)


def _take_snapshot(model, opt, snapshot):
    """Copy params, buffers and optimizer state into ``snapshot``, reusing its arrays.

    Arrays are allocated once (the optimizer's state appears at its first step, so
    only those are added then): re-copying everything would hold the old and the new
    copies at once, one more parameter-sized array at the peak.
    """
    if (
        snapshot is None
        or snapshot["params"].shape != model.params.shape
        or snapshot["buffers"].shape != model.buffers.shape
    ):
        snapshot = {"params": model.params.copy(), "buffers": model.buffers.copy(), "opt": {}}
    else:
        np.copyto(snapshot["params"], model.params)
        np.copyto(snapshot["buffers"], model.buffers)
    saved = snapshot["opt"]
    for k in [
        k
        for k, a in saved.items()
        if k not in opt.state or a.shape != opt.state[k].shape or a.dtype != opt.state[k].dtype
    ]:
        del saved[k]
    for k, a in opt.state.items():
        if k in saved:
            np.copyto(saved[k], a)
        else:
            saved[k] = a.copy()
    snapshot["t"], snapshot["epoch"] = opt.t, opt.epoch
    snapshot["schedule"] = opt.schedule.state_dict()
    return snapshot


def _restore_last_finite(model, opt, snapshot) -> str:
    """After a divergence: the model's last finite state, and how it was obtained
    (``Diverged.kept``)."""
    if _all_finite(model.params, model.buffers):
        return "finite"
    if snapshot is None:
        return "lost"
    model.params[...] = snapshot["params"]
    model.buffers[...] = snapshot["buffers"]
    for k, a in opt.state.items():
        # state created during the epoch (a new optimizer's first step) started as
        # zeros, which is what it is put back to
        a[...] = snapshot["opt"][k] if k in snapshot["opt"] else 0
    opt.t, opt.epoch = snapshot["t"], snapshot["epoch"]
    opt.schedule.load_state_dict(snapshot["schedule"])
    return "rolled back"


def _divergence_error(model, opt, diverged: Diverged) -> DivergenceError:
    """fit's DivergenceError: where it happened, what the model now holds, what to try."""
    err = diverged.error
    # No update ever happened: the learning rate cannot be the cause, the data is.
    before_any_update = diverged.updates == 0 and err.what in ("loss", "gradient")
    epoch = diverged.epoch + 1
    if err.what == "weights":
        where = f"during epoch {epoch}: the weights became non-finite"
    else:
        where = f"at step {diverged.step} of epoch {epoch}: the {err.what} became {err.value}"
    if diverged.kept == "finite":
        kept = "The model keeps its last finite weights (those before the failing step)."
    elif diverged.kept == "rolled back":
        kept = (
            f"The weights had become non-finite, so the model and its optimizer were "
            f"restored to the start of epoch {epoch}, their last finite state."
        )
    else:
        kept = (
            "The weights had become non-finite and rollback=False kept no copy: "
            "re-initialise or reload the model before using it."
        )
    if before_any_update:
        return DivergenceError(
            f"Training diverged {where}, before any update: the learning rate is not "
            f"the cause, the data is too large for the model's {model.dtype.name} "
            f"arithmetic. {kept} Standardise X and y"
            f"{' (or train in float64)' if model.dtype == np.float32 else ''}.",
            what=err.what,
            value=err.value,
        )
    clip = "" if opt.clip_norm is None else f" (it is {opt.clip_norm:g} now)"
    msg = (
        f"Training diverged {where}. {kept} Try a lower learning rate (the current "
        f"one is {opt.lr:g}), gradient clipping with a smaller clip_norm on the "
        f"optimizer{clip or ' (e.g. clip_norm=1.0)'}, or standardised inputs."
    )
    return DivergenceError(msg, what=err.what, value=err.value)
