"""Shared by the Dask tests: a two-process LocalCluster on loopback, and killing one
of its worker processes while a computation runs."""

from __future__ import annotations

import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor

from distributed import Client, LocalCluster


def local_cluster_client():
    """Generator for a module fixture: a client of 2 single-threaded worker processes."""
    cluster = LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None
    )
    client = Client(cluster)
    try:
        yield client
    finally:
        client.close()
        cluster.close()


def run_killing_a_worker(client, work, timeout=300):
    """Run ``work()`` in a thread; SIGKILL the process of the first worker seen
    running a task while it runs. Returns (work's result, the killed worker's address)."""
    client.wait_for_workers(2, timeout=60)
    pids = {
        nanny.worker_address: nanny.process.process.pid
        for nanny in client.cluster.workers.values()
        if nanny.process is not None
    }
    assert len(pids) == 2
    with ThreadPoolExecutor(1) as pool:
        result = pool.submit(work)
        victim = None
        deadline = time.monotonic() + 60
        while victim is None and time.monotonic() < deadline and not result.done():
            busy = [w for w, tasks in client.processing().items() if tasks and w in pids]
            victim = busy[0] if busy else None
            time.sleep(0.02)
        assert victim is not None and not result.done(), "the work ended before a kill"
        os.kill(pids[victim], signal.SIGKILL)
        value = result.result(timeout=timeout)
    assert victim not in client.scheduler_info()["workers"]
    return value, victim


class CountingObjective:
    """An Optuna objective that first records, in the trial's user attributes, how many
    trials of its study had finished (complete or pruned) when it started: what the
    sampler of the worker running it could learn from."""

    def __init__(self, objective):
        self.objective = objective

    def __call__(self, trial):
        import optuna

        done = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
        trial.set_user_attr(
            "finished_before", len(trial.study.get_trials(deepcopy=False, states=done))
        )
        return self.objective(trial)
