"""Searches on a Dask cluster: scikit-learn's joblib-parallel work through joblib's
Dask backend, with every worker's BLAS held to a per-task thread budget."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence

import distributed
import numpy as np

__all__ = ["ThreadBudget", "parallel_search"]

# Environment variables read by BLAS / OpenMP libraries when they are loaded.
_THREAD_VARS = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "BLIS_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
)

# --- thread budget and parallel search -------------------------------------------------------


class ThreadBudget(distributed.WorkerPlugin):
    """Worker plugin limiting the BLAS pools of a worker process to ``n`` threads.

    It also sets ``OMP_NUM_THREADS`` and the like to ``n`` for libraries loaded later
    (OpenMP's own limit is per thread, so it cannot be set from the plugin's thread
    for the task threads). A worker running ``k`` tasks at once then uses ``k n``
    BLAS threads at most: with ``nthreads`` worker threads per process and ``n = 1``
    (the default), a search never oversubscribes the cores. The limit is set when the
    plugin reaches a worker (also one restarted later) and undone when it is
    unregistered. fastnn's training with ``n_threads=None`` never uses more threads
    than the BLAS pool has, so it keeps to the budget too; an explicit ``n_threads``
    on an estimator or model applies inside its own fit and predict calls.

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
        # Libraries loaded later read the environment; those already loaded (NumPy's
        # and SciPy's BLAS, imported here so that threadpoolctl sees them) are limited
        # through their API.
        import scipy.linalg  # noqa: F401
        from threadpoolctl import threadpool_limits

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
            futures = self.call_data_futures  # type: ignore[has-type]
            self._call_data_futures, self.call_data_futures = futures, None

        def stop_call(self):
            self.call_data_futures = self._call_data_futures
            super().stop_call()

    return ResilientDaskBackend


@contextlib.contextmanager
def parallel_search(
    client: distributed.Client | None = None,
    *,
    threads_per_task: int | None = 1,
    scatter: Sequence | None = None,
) -> Iterator[distributed.Client]:
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
        with joblib.parallel_config(
            backend="fastnn-dask", n_jobs=-1, client=client, scatter=scatter
        ):
            yield client
    finally:
        if plugin is not None:
            client.unregister_worker_plugin(plugin.name)
