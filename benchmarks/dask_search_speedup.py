"""Speed-up of a fastnn grid search on a Dask cluster from 1 to 2 worker processes.

The search: GridSearchCV over fastnn.MLPClassifier on scikit-learn's bundled digits
(1797 x 64), 8 candidates x 3 folds = 24 fits plus the refit. It is timed on a
distributed.LocalCluster of 1, then 2 worker processes (one thread each, on
loopback), through fastnn.dask.parallel_search with one BLAS thread per task, and in
this process with n_jobs=1 as the reference. Each configuration runs once untimed
(workers import fastnn and scikit-learn), then ``--repeats`` times; the median is
reported, with the load average of the machine during the run.

The machine may be shared: a control measures how much parallel CPU it gives at the
time, as the throughput of two processes each running the same single-threaded NumPy
GEMM loop, relative to one such process alone (2.0 on two idle cores). The search's
speed-up is bounded by it.

    PYTHONPATH=src python benchmarks/dask_search_speedup.py [--repeats 3] [--json out]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
import warnings


def make_search(n_jobs=None):
    from sklearn.model_selection import GridSearchCV

    from fastnn import MLPClassifier
    grid = {"learning_rate_init": [1e-3, 3e-3, 1e-2, 3e-2], "alpha": [1e-4, 1e-2]}
    return GridSearchCV(MLPClassifier((128,), max_iter=100, random_state=0, n_threads=1),
                        grid, cv=3, n_jobs=n_jobs)


def _gemm_loop(_=None) -> float:
    import numpy as np
    from threadpoolctl import threadpool_limits
    rng = np.random.default_rng(0)
    a, w = rng.random((1200, 64)), rng.random((64, 128))
    with threadpool_limits(1):
        t0 = time.perf_counter()
        for _ in range(1500):
            a @ w
        return time.perf_counter() - t0


def parallel_cpu() -> float:
    """Throughput of 2 concurrent single-threaded GEMM processes over 1 alone."""
    import multiprocessing as mp
    with mp.get_context("spawn").Pool(2) as pool:
        pool.map(_gemm_loop, [0, 1])
        alone = pool.apply(_gemm_loop)
        both = max(pool.map(_gemm_loop, [0, 1], chunksize=1))
    return 2 * alone / both


def time_search(X, y, repeats, cluster_workers=None):
    """Median wall time of the search (and all times) in this process or on a cluster."""
    def once():
        t0 = time.perf_counter()
        search = make_search(n_jobs=1 if cluster_workers is None else None).fit(X, y)
        return time.perf_counter() - t0, search.best_score_

    if cluster_workers is None:
        once()
        times = [once()[0] for _ in range(repeats)]
        return statistics.median(times), times
    from distributed import Client, LocalCluster

    import fastnn.dask as fdask
    with LocalCluster(n_workers=cluster_workers, threads_per_worker=1, processes=True,
                      host="127.0.0.1", dashboard_address=None) as cluster, \
            Client(cluster) as client, fdask.parallel_search(client, scatter=[X, y]):
        once()
        times = [once()[0] for _ in range(repeats)]
    return statistics.median(times), times


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)
    from sklearn.datasets import load_digits
    from sklearn.exceptions import ConvergenceWarning
    warnings.filterwarnings("ignore", category=ConvergenceWarning)
    X, y = load_digits(return_X_y=True)
    X = X / 16.0
    load0 = os.getloadavg()
    control0 = parallel_cpu()
    results = {}
    for label, workers in (("in-process, n_jobs=1", None), ("1 worker process", 1),
                           ("2 worker processes", 2)):
        median, times = time_search(X, y, args.repeats, workers)
        results[label] = {"median_s": median, "times_s": times}
        print(f"{label:24s} median {median:6.2f} s   runs {[round(t, 2) for t in times]}",
              flush=True)
    load1 = os.getloadavg()
    control = (control0 + parallel_cpu()) / 2
    speedup = (results["1 worker process"]["median_s"]
               / results["2 worker processes"]["median_s"])
    print(f"speed-up 1 -> 2 worker processes: {speedup:.2f}x")
    print(f"control: 2 GEMM processes give {control:.2f}x the throughput of 1 "
          f"(the ceiling of the speed-up on this machine now)")
    print(f"load average (1, 5, 15 min) before {load0}, after {load1}; "
          f"{os.cpu_count()} logical CPUs; Python {platform.python_version()}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"results": results, "speedup": speedup, "control": control,
                       "loadavg_before": load0,
                       "loadavg_after": load1, "cpus": os.cpu_count(),
                       "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())},
                      fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
