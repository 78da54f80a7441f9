#!/usr/bin/env python
"""Run one training configuration's steps in steady state, for a sampling profiler.

compare.py says how long a step takes; this says where the time goes. It builds the
config's network (benchmarks/common.py: A-D, or ``digits``: compare.py's digits
network and batch on random data), warms it up (workspaces, BLAS buffers,
the optimizer state's first touch), prints when the steady state starts, runs
``--steps`` steps through ``MLP.train_epoch`` (the path ``fit`` takes) and prints the
time per step. Profile it from outside, skipping the set-up:

    perf record -e cpu-clock -F 4000 -D 5000 -o step.data \\
        python benchmarks/profile_step.py --config C --steps 128
    perf report -i step.data --no-children --sort sym

(``-D`` delays recording by that many ms; choose it past the "steady state" line.
``py-spy record --native`` works too.) ``--batches 8`` trains on compare.py's 8 batches
a call, which config A needs to run as it does there (on the default 1024 random
batches a third of its Adam moments decay into subnormals, and the update's slower
loops for them show in the profile). With ``--perf-map``, perf names the functions
Numba compiled (benchmarks/numba_perf_map.py). Threads: ``--threads`` for fastnn's pool, BLAS
held at one thread as in fit.
"""

from __future__ import annotations

import time

T_START = time.perf_counter()

import argparse  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from benchmarks.common import CONFIGS, DIGITS  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", choices=[*sorted(CONFIGS), "digits"], default="C")
    p.add_argument("--steps", type=int, default=64)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    p.add_argument("--backend", default=None, help="numpy, numba or cython (default: "
                   "fastnn's default)")
    p.add_argument("--batches", type=int, default=None, help="distinct batches, one "
                   "train_epoch call over them (default: up to 1024 or 16 MB; compare.py "
                   "uses 8, which A needs to train as it does there: on 1024 random "
                   "batches a third of A's Adam moments decay into subnormals)")
    p.add_argument("--perf-map", action="store_true", help="name Numba's functions for "
                   "perf in /tmp/perf-<pid>.map (numba_perf_map.py)")
    opts = p.parse_args(argv)
    if opts.batches is not None and opts.batches < 1:
        p.error(f"--batches must be at least 1, got {opts.batches}")
    if opts.perf_map:
        import numba_perf_map

        numba_perf_map.install()

    from threadpoolctl import threadpool_limits

    import fastnn

    cfg = DIGITS if opts.config == "digits" else CONFIGS[opts.config]
    # steps per train_epoch call: by default an epoch of up to 1024 batches or 16 MB of
    # data, so the Python around each call weighs on small configs no more than in fit
    batches = opts.batches
    if batches is None:
        batches = max(1, min(1024, 2**24 // (cfg.batch * cfg.sizes[0] * np.dtype(
            opts.dtype).itemsize)))
    rng = np.random.default_rng(0)
    X = rng.standard_normal((cfg.batch * batches, cfg.sizes[0])).astype(opts.dtype)
    y = rng.integers(0, cfg.sizes[-1], X.shape[0])
    net = fastnn.MLP(list(cfg.sizes), loss="cross_entropy", dtype=opts.dtype,
                     backend=opts.backend, random_state=0, n_threads=opts.threads)
    opt = fastnn.Adam(lr=1e-3)
    calls = max(1, -(-opts.steps // batches))
    with threadpool_limits(1, user_api="blas"):
        net.train_epoch(X, y, opt, cfg.batch, shuffle=False)
        net.train_epoch(X, y, opt, cfg.batch, shuffle=False)
        if opts.perf_map:
            path, count = numba_perf_map.write()
            print(f"{count} Numba functions named in {path}", flush=True)
        print(f"steady state after {time.perf_counter() - T_START:.1f} s", flush=True)
        t0 = time.perf_counter()
        for _ in range(calls):
            net.train_epoch(X, y, opt, cfg.batch, shuffle=False)
        dt = time.perf_counter() - t0
    print(f"config {cfg.name} {cfg.sizes} batch {cfg.batch}, {opts.dtype}, backend "
          f"{net.backend_name}, {opts.threads} thread(s): {dt / (calls * batches) * 1e3:.4g} "
          f"ms per step over {calls * batches} steps")
    return 0


if __name__ == "__main__":
    sys.exit(main())
