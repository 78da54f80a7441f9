"""Optuna studies over fastnn's hyperparameters, pruned from per-epoch validation
scores, with their trials as tasks on a Dask cluster."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import distributed
import numpy as np

from ..training import Callback, monitored_value
from .search import ThreadBudget, _client

__all__ = ["PruningCallback", "Objective", "DEFAULT_SPACE", "optimize_on_dask"]

# --- Optuna ----------------------------------------------------------------------------------


def _optuna():
    try:
        import optuna
    except ImportError as exc:  # pragma: no cover - exercised only without Optuna
        raise ImportError(
            "this needs Optuna; install it with `pip install 'fastnn-mlp[optuna]'`"
        ) from exc
    return optuna


class PruningCallback(Callback):
    """Report a per-epoch validation score to an Optuna trial; prune when it says so.

    After every epoch of :func:`fastnn.fit`, ``trial.report(logs[monitor], epoch)``
    (0-based epoch); when ``trial.should_prune()``, raises ``optuna.TrialPruned``,
    which ends the fit and the trial. The study's direction must match the monitor
    ("minimize" for losses, "maximize" for accuracy and R^2).

    Parameters
    ----------
    trial : optuna.Trial
    monitor : str, default "val_loss"
        A key of the epoch logs ("val_loss", "val_accuracy", "val_r2", ...).
    """

    def __init__(self, trial, monitor: str = "val_loss"):
        self.trial = trial
        self.monitor = monitor

    def on_epoch_end(self, epoch, logs):
        value = monitored_value(self, self.monitor, logs)
        self.trial.report(value, epoch)
        if self.trial.should_prune():
            raise _optuna().TrialPruned(
                f"pruned after epoch {epoch + 1}: {self.monitor} = {value:g}"
            )
        return None


# The default search space: ranges (low, high) are sampled (log scale for "lr" and
# "units"), lists are categorical, anything else is a fixed value.
DEFAULT_SPACE: dict[str, Any] = {
    "lr": (1e-4, 1e-1),
    "n_layers": (1, 3),
    "units": (8, 256),
    "activation": ["relu", "tanh", "elu"],
    "dropout": (0.0, 0.5),
    "optimizer": ["sgd", "momentum", "nesterov", "rmsprop", "adam", "adamw"],
    "schedule": ["constant", "cosine", "step"],
    "batch_size": [32, 64, 128, 256],
}
_LOG = ("lr", "units")


class Objective:
    """An Optuna objective training a :class:`fastnn.MLP` per trial, with pruning.

    Each trial samples the learning rate, the number of hidden layers and their
    widths (``units_0``, ...), the activation, the dropout rate, the optimizer, the
    learning-rate schedule ("constant", "cosine" over the epochs, or "step": x0.1
    every third of them) and the batch size; trains for ``epochs`` epochs with
    :func:`fastnn.fit` on (X, y), validated on (X_val, y_val) after every epoch and
    reported through :class:`PruningCallback`; and returns the last value of
    ``monitor``. Instances are picklable (they carry the data), so the same
    objective runs in worker processes (:func:`optimize_on_dask`).

    Parameters
    ----------
    X, y, X_val, y_val : arrays
        Training and validation data. y: class indices for ``loss="cross_entropy"``,
        0/1 columns for "binary_cross_entropy", targets for "mse".
    loss : {"cross_entropy", "binary_cross_entropy", "mse"}, default "cross_entropy"
    epochs : int, default 20
    monitor : str or None
        Reported and returned score; default "val_accuracy" for the cross-entropies
        and "val_loss" for mse.
    space : dict, optional
        Overrides of :data:`DEFAULT_SPACE` (same keys).
    random_state : int, default 0
        Seed of every trial's network (the same initial draws for every trial).
    dtype : {"float32", "float64"}, default "float32"
    backend : str or None
    n_threads : int or None, default 1
        Threads of each trial's training (``fastnn.MLP(n_threads=...)``); None:
        fastnn's default. The process's BLAS pools are left alone.

    Trials that diverge raise :class:`fastnn.DivergenceError`: pass
    ``catch=(fastnn.DivergenceError,)`` to ``study.optimize`` to record them as
    failed and go on.
    """

    def __init__(
        self,
        X,
        y,
        X_val,
        y_val,
        *,
        loss: str = "cross_entropy",
        epochs: int = 20,
        monitor: str | None = None,
        space: dict | None = None,
        random_state: int = 0,
        dtype: str = "float32",
        backend: str | None = None,
        n_threads: int | None = 1,
    ):
        unknown = set(space or {}) - set(DEFAULT_SPACE)
        if unknown:
            raise ValueError(
                f"unknown search-space keys {sorted(unknown)}; the keys are {sorted(DEFAULT_SPACE)}"
            )
        if loss not in ("cross_entropy", "binary_cross_entropy", "mse"):
            raise ValueError(f"unknown loss {loss!r}")
        self.X, self.y, self.X_val, self.y_val = X, y, X_val, y_val
        self.loss = loss
        self.epochs = int(epochs)
        self.monitor = monitor or ("val_loss" if loss == "mse" else "val_accuracy")
        self.space = {**DEFAULT_SPACE, **(space or {})}
        self.random_state = random_state
        self.dtype = dtype
        self.backend = backend
        self.n_threads = n_threads

    def _suggest(self, trial, name, *, index=None):
        spec = self.space[name]
        label = name if index is None else f"{name}_{index}"
        if isinstance(spec, tuple):
            low, high = spec
            if (
                isinstance(low, (int, np.integer))
                and isinstance(high, (int, np.integer))
                and name != "lr"
            ):
                return trial.suggest_int(label, int(low), int(high), log=name in _LOG)
            return trial.suggest_float(label, float(low), float(high), log=name in _LOG)
        if isinstance(spec, list):
            return trial.suggest_categorical(label, spec)
        return spec

    def _n_outputs(self) -> int:
        y = np.asarray(self.y)
        if self.loss == "cross_entropy":
            return int(max(y.max(), np.asarray(self.y_val).max())) + 1
        return 1 if y.ndim == 1 else y.shape[1]

    def __call__(self, trial) -> float:
        import fastnn

        from ..optim import get_optimizer
        from ..schedules import Cosine, StepDecay

        lr = self._suggest(trial, "lr")
        units = [
            self._suggest(trial, "units", index=i) for i in range(self._suggest(trial, "n_layers"))
        ]
        name = self._suggest(trial, "schedule")
        schedule = {
            "constant": lr,
            "cosine": Cosine(lr, T=max(1, self.epochs)),
            "step": StepDecay(lr, step_size=max(1, self.epochs // 3), gamma=0.1),
        }
        if name not in schedule:
            raise ValueError(f"unknown schedule {name!r}; use one of {sorted(schedule)}")
        X = np.asarray(self.X)
        model = fastnn.MLP(
            [X.shape[1], *units, self._n_outputs()],
            self._suggest(trial, "activation"),
            loss=self.loss,
            dropout=self._suggest(trial, "dropout"),
            dtype=self.dtype,
            backend=self.backend,
            random_state=self.random_state,
            n_threads=self.n_threads,
        )
        y = (
            self.y
            if self.loss != "mse" or np.ndim(self.y) == 2
            else np.asarray(self.y).reshape(-1, 1)
        )
        y_val = (
            self.y_val
            if self.loss != "mse" or np.ndim(self.y_val) == 2
            else np.asarray(self.y_val).reshape(-1, 1)
        )
        # n_threads is fastnn's own thread count (the model's); the BLAS pools are left
        # alone, as the estimators leave them.
        history = fastnn.fit(
            model,
            X,
            y,
            optimizer=get_optimizer(self._suggest(trial, "optimizer"), lr=schedule[name]),
            epochs=self.epochs,
            batch_size=int(self._suggest(trial, "batch_size")),
            validation_data=(self.X_val, y_val),
            callbacks=[PruningCallback(trial, self.monitor)],
        )
        return float(history[self.monitor][-1])


def _run_trial(study_name, storage, sampler, pruner, objective, catch):
    optuna = _optuna()
    # Every task unpickles the same sampler: reseeded from the OS, each draws its own
    # parameters (as study.optimize(n_jobs=...) reseeds); what it learns from comes
    # from the shared storage's finished trials.
    sampler.reseed_rng()
    study = optuna.load_study(
        study_name=study_name, storage=storage, sampler=sampler, pruner=pruner
    )
    study.optimize(objective, n_trials=1, catch=catch)


def optimize_on_dask(
    study,
    objective: Callable,
    n_trials: int,
    *,
    client: distributed.Client | None = None,
    catch: tuple = (),
    threads_per_task: int | None = 1,
) -> None:
    """Run ``n_trials`` trials of an Optuna study as tasks on a Dask cluster.

    One task per trial: the scheduler balances them over the workers, and a trial
    lost with a killed worker runs again elsewhere (the lost attempt stays in the
    study as RUNNING). Each task loads the study from its storage with the study's
    sampler and pruner, so the storage must be reachable from the workers: create the
    study with ``storage=optuna_integration.DaskStorage(client=client)`` (kept by the
    scheduler), an RDB URL or a journal file on a shared file system. Each task
    reseeds its copy of the sampler (``sampler.reseed_rng()``), so trials draw
    different parameters, and samplers see the trials finished so far, as with
    ``study.optimize(n_jobs=...)``; as there, a seeded sampler does not make the
    parallel study reproducible as a whole.

    Parameters
    ----------
    study : optuna.Study
    objective : callable ``trial -> float``
        Picklable (e.g. :class:`Objective`).
    n_trials : int
    client : distributed.Client or None
        None: the default client.
    catch : tuple of exception types
        As ``study.optimize``'s (e.g. ``(fastnn.DivergenceError,)``).
    threads_per_task : int or None, default 1
        BLAS threads per task (:class:`ThreadBudget`) during the study.
    """
    optuna = _optuna()
    client = _client(client)
    storage = study._storage
    if isinstance(storage, optuna.storages.InMemoryStorage):
        raise ValueError(
            "the study's storage lives in this process, where workers "
            "cannot reach it; create the study with "
            "storage=optuna_integration.DaskStorage(client=client) or a "
            "storage URL shared with the workers"
        )
    plugin = None
    if threads_per_task is not None:
        plugin = ThreadBudget(threads_per_task)
        client.register_plugin(plugin)
    try:
        futures = [
            client.submit(
                _run_trial,
                study.study_name,
                storage,
                study.sampler,
                study.pruner,
                objective,
                tuple(catch),
                pure=False,
            )
            for _ in range(int(n_trials))
        ]
        client.gather(futures)
    finally:
        if plugin is not None:
            client.unregister_worker_plugin(plugin.name)
