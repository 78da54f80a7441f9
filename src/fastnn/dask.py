"""fastnn on a Dask cluster: parallel searches, Optuna studies, out-of-core training.

fastnn does not schedule work across machines itself; this module plugs its
estimators and training loop into Dask (``pip install 'fastnn-mlp[dask]'``, plus
``'fastnn-mlp[optuna]'`` for the Optuna pieces). ``import fastnn`` does not import it.

- :func:`parallel_search` runs scikit-learn's joblib-parallel work (GridSearchCV,
  RandomizedSearchCV, cross_validate, ...) on a Dask cluster through joblib's Dask
  backend, with every worker's BLAS limited to a per-task thread budget
  (:class:`ThreadBudget`).
- :func:`fit_blocks` trains an estimator by ``partial_fit`` over the blocks of a Dask
  array or DataFrame, a few blocks at a time, in a seeded random block order each
  epoch; :func:`predict`, :func:`predict_proba` and :func:`score` run blockwise.
- :class:`PruningCallback`, :class:`Objective` and :func:`optimize_on_dask` run an
  Optuna study over fastnn's hyperparameters, pruned from per-epoch validation
  scores, with its trials as tasks on the same cluster.

Results do not depend on where tasks run: a fastnn network trained with a fixed
``random_state`` and thread count gives the same bits in any process, so a search
or an out-of-core fit on a cluster equals the same computation in one process.
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

try:
    import dask
    import dask.array as da
    import distributed
except ImportError as exc:  # pragma: no cover - exercised only without Dask
    raise ImportError("fastnn.dask needs Dask; install it with "
                      "`pip install 'fastnn-mlp[dask]'`") from exc

from .training import Callback, monitored_value

__all__ = ["ThreadBudget", "parallel_search", "fit_blocks", "predict", "predict_proba",
           "score", "PruningCallback", "Objective", "DEFAULT_SPACE", "optimize_on_dask"]

# Environment variables read by BLAS / OpenMP libraries when they are loaded.
_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                "BLIS_NUM_THREADS", "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")


# --- thread budget and parallel search -------------------------------------------------------

class ThreadBudget(distributed.WorkerPlugin):
    """Worker plugin limiting the BLAS pools of a worker process to ``n`` threads.

    It also sets ``OMP_NUM_THREADS`` and the like to ``n`` for libraries loaded later
    (OpenMP's own limit is per thread, so it cannot be set from the plugin's thread
    for the task threads). A worker running ``k`` tasks at once then uses ``k n``
    BLAS threads at most: with ``nthreads`` worker threads per process and ``n = 1``
    (the default), a search never oversubscribes the cores. The limit is set when the plugin reaches a worker
    (also one restarted later) and undone when it is unregistered. fastnn's training
    with ``n_threads=None`` never uses more threads than the BLAS pool has, so it
    keeps to the budget too; an explicit ``n_threads`` on an estimator or model
    applies inside its own fit and predict calls.

    Parameters
    ----------
    n : int
        BLAS threads per task, >= 1.
    """

    name = "fastnn-thread-budget"

    def __init__(self, n: int = 1):
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"the thread budget must be an int >= 1, got {n!r}")
        self.n = int(n)

    def setup(self, worker) -> None:
        from threadpoolctl import threadpool_limits
        # Libraries loaded later read the environment; those already loaded (NumPy's
        # and SciPy's BLAS, imported here so that threadpoolctl sees them) are limited
        # through their API.
        import scipy.linalg  # noqa: F401
        self._env = {k: os.environ.get(k) for k in _THREAD_VARS}
        os.environ.update({k: str(self.n) for k in _THREAD_VARS})
        self._limiter = threadpool_limits(limits=self.n)

    def teardown(self, worker) -> None:
        limiter = getattr(self, "_limiter", None)
        if limiter is not None:
            limiter.restore_original_limits()
        for k, value in getattr(self, "_env", {}).items():
            if value is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = value


def _client(client):
    """The given client, else the default one (ValueError when there is none)."""
    return client if client is not None else distributed.default_client()


def _resilient_backend():
    """joblib's Dask backend without its automatic scatter of large arguments.

    joblib scatters every argument over 1 kB (the data, the CV split indices) to one
    worker on its first use; data scattered that way dies with its worker and cannot
    be recomputed, so a killed worker would fail the whole search. Left in the tasks
    instead, arguments travel with the task definitions, which the scheduler can run
    again anywhere. Data named in ``scatter`` is still sent once, to every worker.
    """
    from joblib._dask import DaskDistributedBackend

    class ResilientDaskBackend(DaskDistributedBackend):
        def start_call(self):
            super().start_call()
            # _to_func_args scatters only while call_data_futures is set.
            self._call_data_futures, self.call_data_futures = self.call_data_futures, None

        def stop_call(self):
            self.call_data_futures = self._call_data_futures
            super().stop_call()

    return ResilientDaskBackend


@contextlib.contextmanager
def parallel_search(client: distributed.Client | None = None, *,
                    threads_per_task: int | None = 1,
                    scatter: Sequence | None = None) -> Iterator[distributed.Client]:
    """Run joblib-parallel scikit-learn work inside the block on a Dask cluster.

    Inside ``with parallel_search(client):``, ``GridSearchCV(...).fit``,
    ``RandomizedSearchCV(...).fit``, ``cross_validate`` and anything else that uses
    joblib (with ``n_jobs`` left at None) send their fits to the cluster's workers
    through joblib's Dask backend. A task lost with a worker is run again by the
    scheduler (up to its ``allowed-failures``), so a search survives a killed worker:
    unlike joblib's plain "dask" backend, arguments are not scattered to a single
    worker (where they would be lost with it) but travel with the tasks.

    Parameters
    ----------
    client : distributed.Client or None
        The cluster to use (None: the default client).
    threads_per_task : int or None, default 1
        BLAS threads each task may use (see :class:`ThreadBudget`); start workers
        with one thread per task slot, e.g. ``nthreads=1`` per process. None leaves
        the workers' thread pools as they are.
    scatter : sequence of arrays, optional
        Large data (e.g. ``[X, y]``, the very objects passed to ``fit``) sent once to
        every worker up front instead of with every task.

    Yields
    ------
    distributed.Client
    """
    import joblib
    client = _client(client)
    joblib.register_parallel_backend("fastnn-dask", _resilient_backend())
    plugin = None
    if threads_per_task is not None:
        plugin = ThreadBudget(threads_per_task)
        client.register_plugin(plugin)
    try:
        with joblib.parallel_config(backend="fastnn-dask", n_jobs=-1, client=client,
                                    scatter=scatter):
            yield client
    finally:
        if plugin is not None:
            client.unregister_worker_plugin(plugin.name)


# --- blocks of Dask collections --------------------------------------------------------------

def _is_frame(obj) -> bool:
    return hasattr(obj, "npartitions") and hasattr(obj, "map_partitions")


def _block_list(obj, name, row_chunks=None) -> list:
    """The row blocks of a Dask array, DataFrame or Series as a list of Delayed."""
    if _is_frame(obj):
        return list(obj.to_delayed())
    if isinstance(obj, da.Array):
        if obj.ndim not in (1, 2):
            raise ValueError(f"{name} must be 1-D or 2-D, got {obj.ndim}-D")
        if row_chunks is not None and obj.chunks[0] != row_chunks and \
                not any(math.isnan(c) for c in row_chunks):
            obj = obj.rechunk({0: row_chunks})
        if obj.ndim == 2 and len(obj.chunks[1]) > 1:
            obj = obj.rechunk({1: -1})
        return list(obj.to_delayed().ravel())
    raise TypeError(f"{name} must be a Dask array, DataFrame or Series, got "
                    f"{type(obj).__name__}")


def _blocks(X, y=None) -> tuple[list, list | None]:
    xs = _block_list(X, "X")
    if y is None:
        return xs, None
    rows = X.chunks[0] if isinstance(X, da.Array) else None
    ys = _block_list(y, "y", rows)
    if len(ys) != len(xs):
        raise ValueError(f"X has {len(xs)} blocks of rows and y {len(ys)}; give them the "
                         f"same partitions (e.g. y.rechunk(X.chunks[0]))")
    return xs, ys


def _concat(parts):
    if len(parts) == 1:
        return parts[0]
    if hasattr(parts[0], "iloc"):
        import pandas as pd
        return pd.concat(parts)
    return np.concatenate(parts)


def _partial_fit_step(estimator, xs, ys, fit_params):
    """partial_fit on the rows of some blocks, concatenated in the order given."""
    X, y = _concat(xs), _concat(ys)
    if len(X) != len(y):
        raise ValueError(f"a block of X has {len(X)} rows and the matching block of y "
                         f"{len(y)}")
    return estimator.partial_fit(X, y, **fit_params)


def fit_blocks(estimator, X, y, *, epochs: int = 1, classes=None,
               random_state: int | np.random.Generator | None = None,
               blocks_per_call: int = 1, prefetch: int = 1,
               client: distributed.Client | None | bool = None,
               on_epoch_end: Callable[[int, Any], bool | None] | None = None):
    """Train ``estimator`` by ``partial_fit`` over the blocks of a Dask collection.

    Every epoch draws a permutation of the row blocks (``rng.permutation(n_blocks)``
    with ``rng = np.random.default_rng(random_state)``, one draw per epoch) and calls
    ``partial_fit`` on consecutive groups of ``blocks_per_call`` blocks, their rows
    concatenated; the estimator shuffles the rows of each call itself (fastnn's
    ``shuffle=True``), so ``blocks_per_call > 1`` also mixes rows across blocks. Only
    the blocks of the calls in flight are ever computed, on the cluster's workers
    where the training runs too (the estimator travels from task to task), and they
    are computed again at the next epoch: the data set is never held anywhere whole.

    Parameters
    ----------
    estimator : fastnn.MLPClassifier or fastnn.MLPRegressor
        Any estimator with ``partial_fit``; it is copied, not modified. A fitted one
        continues from its state.
    X : dask.array.Array (n_samples, n_features) or dask.dataframe.DataFrame
        Row blocks are the training units (the columns are put into one chunk).
    y : dask.array.Array, dask Series or DataFrame
        Targets with the same row blocks as X (an array is rechunked to X's rows).
    epochs : int, default 1
    classes : array-like, optional
        All class labels, passed to a classifier's ``partial_fit``; required for a
        new classifier.
    random_state : int, Generator or None
        Seeds the block order.
    blocks_per_call : int, default 1
        Blocks concatenated for one ``partial_fit`` call.
    prefetch : int, default 1
        Calls submitted ahead of the one running (each holds its blocks in memory).
    client : distributed.Client, None or False
        None: the default client if there is one, else train in this process with
        Dask's local scheduler computing one call's blocks at a time. False: always in
        this process.
    on_epoch_end : callable ``(epoch, estimator) -> bool | None``, optional
        Called in this process after every epoch (0-based) with the estimator trained
        so far; returning True stops.

    Returns
    -------
    estimator
        The trained copy.
    """
    epochs = int(epochs)
    blocks_per_call = int(blocks_per_call)
    prefetch = int(prefetch)
    if epochs < 0 or blocks_per_call < 1 or prefetch < 0:
        raise ValueError("epochs must be >= 0, blocks_per_call >= 1 and prefetch >= 0")
    from sklearn.base import is_classifier
    fit_params = {"classes": classes} if is_classifier(estimator) else {}
    xs, ys = _blocks(X, y)
    rng = np.random.default_rng(random_state)
    if client is None:
        try:
            client = distributed.default_client()
        except ValueError:
            client = False
    est = copy.deepcopy(estimator)
    for epoch in range(epochs):
        order = rng.permutation(len(xs))
        groups = [order[s:s + blocks_per_call] for s in range(0, len(order),
                                                              blocks_per_call)]
        if client is False:
            for g in groups:
                xb, yb = dask.compute([xs[i] for i in g], [ys[i] for i in g],
                                      scheduler="threads")
                est = _partial_fit_step(est, xb, yb, fit_params)
        else:
            est = _epoch_on_cluster(client, est, xs, ys, groups, fit_params, prefetch)
        if on_epoch_end is not None and on_epoch_end(epoch, est):
            break
    return est


def _epoch_on_cluster(client, est, xs, ys, groups, fit_params, prefetch):
    """One epoch as a chain of partial_fit tasks; at most ``prefetch + 1`` in flight.

    The estimator enters the chain as a task argument (not scattered data), so a
    lost intermediate is recomputed from its lineage; the epoch's result is fetched,
    which also cuts the lineage there.
    """
    model = est
    in_flight = deque()
    for g in groups:
        blocks = client.compute([xs[i] for i in g] + [ys[i] for i in g])
        xb, yb = blocks[:len(g)], blocks[len(g):]
        model = client.submit(_partial_fit_step, model, xb, yb, fit_params, pure=False)
        in_flight.append(model)
        if len(in_flight) > prefetch:
            distributed.wait(in_flight.popleft())
    return model.result()


# --- blockwise prediction and scoring ----------------------------------------------------------

def _apply(block, estimator, method):
    return getattr(estimator, method)(block)


def _apply_frame(part, estimator, method, columns):
    import pandas as pd
    out = getattr(estimator, method)(part)
    if out.ndim == 1:
        return pd.Series(out, index=part.index)
    return pd.DataFrame(out, index=part.index, columns=columns)


def _output_spec(estimator, method):
    """(dtype, number of columns or None for 1-D, column names) of a method's output."""
    from sklearn.base import is_classifier
    fdtype = estimator.coefs_[0].dtype
    if method == "predict_proba":
        return fdtype, len(estimator.classes_), list(estimator.classes_)
    if is_classifier(estimator):
        multilabel = estimator._label_binarizer.y_type_ == "multilabel-indicator"
        k = len(estimator.classes_) if multilabel else None
        return estimator.classes_.dtype, k, None if k is None else list(range(k))
    k = estimator.n_outputs_
    return fdtype, (k if k > 1 else None), None if k == 1 else list(range(k))


def _blockwise(estimator, X, method):
    dtype, k, columns = _output_spec(estimator, method)
    if _is_frame(X):
        import pandas as pd
        if k is None:
            meta = pd.Series([], dtype=dtype)
        else:
            meta = pd.DataFrame({c: pd.Series([], dtype=dtype) for c in columns})
        return X.map_partitions(_apply_frame, estimator, method, columns, meta=meta)
    if not isinstance(X, da.Array) or X.ndim != 2:
        raise TypeError(f"X must be a 2-D Dask array or a Dask DataFrame, got "
                        f"{type(X).__name__}")
    X = X.rechunk({1: -1})
    if k is None:
        return X.map_blocks(_apply, estimator, method, dtype=dtype, drop_axis=1)
    return X.map_blocks(_apply, estimator, method, dtype=dtype,
                        chunks=(X.chunks[0], (k,)))


def predict(estimator, X):
    """``estimator.predict`` on every row block of X, lazily.

    Returns a Dask array (from an array X) or Series / DataFrame (from a DataFrame X)
    with X's row blocks; compute it (or store it) to run the blocks in parallel.
    """
    return _blockwise(estimator, X, "predict")


def predict_proba(estimator, X):
    """``estimator.predict_proba`` on every row block of X, lazily (see :func:`predict`)."""
    return _blockwise(estimator, X, "predict_proba")


def _block_score(estimator, X, y):
    """Sufficient statistics of one block for the whole-data score."""
    from sklearn.base import is_classifier
    pred = estimator.predict(X)
    y = np.asarray(y)
    if is_classifier(estimator):
        right = pred == y if y.ndim == 1 else (pred == y).all(axis=1)
        return {"n": len(y), "correct": int(right.sum())}
    y = y.reshape(len(y), -1).astype(np.float64)
    pred = np.asarray(pred, dtype=np.float64).reshape(y.shape)
    mean = y.mean(axis=0) if len(y) else np.zeros(y.shape[1])
    return {"n": len(y), "sse": ((y - pred) ** 2).sum(axis=0), "mean": mean,
            "m2": ((y - mean) ** 2).sum(axis=0)}


def _combine_r2(stats) -> float:
    """R^2 averaged over outputs (scikit-learn's r2_score) from per-block statistics:
    the total sum of squares is pooled with Chan et al.'s pairwise update."""
    n, mean, m2, sse = 0, 0.0, 0.0, 0.0
    for s in stats:
        if s["n"] == 0:
            continue
        delta = s["mean"] - mean
        total = n + s["n"]
        m2 = m2 + s["m2"] + delta ** 2 * n * s["n"] / total
        mean = mean + delta * s["n"] / total
        n = total
        sse = sse + s["sse"]
    sse, m2 = np.atleast_1d(sse), np.atleast_1d(m2)
    # scikit-learn's conventions for a constant target: 1 if predicted exactly, else 0.
    with np.errstate(divide="ignore", invalid="ignore"):
        r2 = np.where(m2 > 0, 1.0 - sse / m2, np.where(sse == 0, 1.0, 0.0))
    return float(r2.mean())


def score(estimator, X, y) -> float:
    """The estimator's ``score`` on (X, y) computed blockwise in parallel.

    Accuracy (classifiers; subset accuracy for multilabel) or R^2 averaged over
    outputs (regressors), from per-block counts and sums, so no block of X ever
    meets another. Equals ``estimator.score`` on the whole data, up to the order of
    the floating-point sums for R^2.
    """
    from sklearn.base import is_classifier
    xs, ys = _blocks(X, y)
    stats = dask.compute(*[dask.delayed(_block_score)(estimator, xb, yb)
                           for xb, yb in zip(xs, ys)])
    if is_classifier(estimator):
        n = sum(s["n"] for s in stats)
        return sum(s["correct"] for s in stats) / n
    return _combine_r2(stats)


# --- Optuna ----------------------------------------------------------------------------------

def _optuna():
    try:
        import optuna
    except ImportError as exc:  # pragma: no cover - exercised only without Optuna
        raise ImportError("this needs Optuna; install it with "
                          "`pip install 'fastnn-mlp[optuna]'`") from exc
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
            raise _optuna().TrialPruned(f"pruned after epoch {epoch + 1}: "
                                        f"{self.monitor} = {value:g}")
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
        Threads of each trial's training (``fastnn.MLP(n_threads=...)``) and limit of
        the BLAS pools meanwhile; None: fastnn's default and the pools left alone.

    Trials that diverge raise :class:`fastnn.DivergenceError`: pass
    ``catch=(fastnn.DivergenceError,)`` to ``study.optimize`` to record them as
    failed and go on.
    """

    def __init__(self, X, y, X_val, y_val, *, loss: str = "cross_entropy",
                 epochs: int = 20, monitor: str | None = None,
                 space: dict | None = None, random_state: int = 0,
                 dtype: str = "float32", backend: str | None = None,
                 n_threads: int | None = 1):
        unknown = set(space or {}) - set(DEFAULT_SPACE)
        if unknown:
            raise ValueError(f"unknown search-space keys {sorted(unknown)}; the keys are "
                             f"{sorted(DEFAULT_SPACE)}")
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
            if isinstance(low, (int, np.integer)) and isinstance(high, (int, np.integer)) \
                    and name != "lr":
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
        from .estimators import _threads
        from .optim import get_optimizer
        from .schedules import Cosine, StepDecay
        lr = self._suggest(trial, "lr")
        units = [self._suggest(trial, "units", index=i)
                 for i in range(self._suggest(trial, "n_layers"))]
        name = self._suggest(trial, "schedule")
        schedule = {"constant": lr,
                    "cosine": Cosine(lr, T=max(1, self.epochs)),
                    "step": StepDecay(lr, step_size=max(1, self.epochs // 3), gamma=0.1)}
        if name not in schedule:
            raise ValueError(f"unknown schedule {name!r}; use one of {sorted(schedule)}")
        X = np.asarray(self.X)
        model = fastnn.MLP([X.shape[1], *units, self._n_outputs()],
                           self._suggest(trial, "activation"), loss=self.loss,
                           dropout=self._suggest(trial, "dropout"), dtype=self.dtype,
                           backend=self.backend, random_state=self.random_state,
                           n_threads=self.n_threads)
        y = self.y if self.loss != "mse" or np.ndim(self.y) == 2 else \
            np.asarray(self.y).reshape(-1, 1)
        y_val = self.y_val if self.loss != "mse" or np.ndim(self.y_val) == 2 else \
            np.asarray(self.y_val).reshape(-1, 1)
        with _threads(self.n_threads, self.backend):
            history = fastnn.fit(
                model, X, y, optimizer=get_optimizer(self._suggest(trial, "optimizer"),
                                                     lr=schedule[name]),
                epochs=self.epochs, batch_size=int(self._suggest(trial, "batch_size")),
                validation_data=(self.X_val, y_val),
                callbacks=[PruningCallback(trial, self.monitor)])
        return float(history[self.monitor][-1])


def _run_trial(study_name, storage, sampler, pruner, objective, catch):
    optuna = _optuna()
    # Every task unpickles the same sampler: reseeded from the OS, each draws its own
    # parameters (as study.optimize(n_jobs=...) reseeds); what it learns from comes
    # from the shared storage's finished trials.
    sampler.reseed_rng()
    study = optuna.load_study(study_name=study_name, storage=storage, sampler=sampler,
                              pruner=pruner)
    study.optimize(objective, n_trials=1, catch=catch)


def optimize_on_dask(study, objective: Callable, n_trials: int, *,
                     client: distributed.Client | None = None,
                     catch: tuple = (), threads_per_task: int | None = 1) -> None:
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
        raise ValueError("the study's storage lives in this process, where workers "
                         "cannot reach it; create the study with "
                         "storage=optuna_integration.DaskStorage(client=client) or a "
                         "storage URL shared with the workers")
    plugin = None
    if threads_per_task is not None:
        plugin = ThreadBudget(threads_per_task)
        client.register_plugin(plugin)
    try:
        futures = [client.submit(_run_trial, study.study_name, storage, study.sampler,
                                 study.pruner, objective, tuple(catch), pure=False)
                   for _ in range(int(n_trials))]
        client.gather(futures)
    finally:
        if plugin is not None:
            client.unregister_worker_plugin(plugin.name)
