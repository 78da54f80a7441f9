#!/usr/bin/env python
"""What one ``MLP.train_epoch`` call costs besides its steps, per backend.

compare.py's ``train_epoch`` rows run a few batches per call (8 by default), so a
call's fixed cost counts a few times per step on small configs. This prints, for a
config (A by default), the medians of:

- the raw compiled kernel called with no batch (its argument checks and conversion)
  and with 1, 8 and 128 batches (microseconds per step);
- the Python around it in ``MLP.train_epoch`` (checks, plan, rates, statistics), with
  the compiled kernel replaced by one that does nothing but report its steps.

::

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE \\
        python benchmarks/epoch_call.py --config A --backends cython,numba [--dtype float64]

Run it with OpenBLAS's environment unset, as compare.py (benchmarks/README.md says why).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
for p in (HERE, HERE.parent):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))


def median_us(fn, calls: int, repeats: int = 9) -> float:
    """Median over ``repeats`` samples of the microseconds one call of ``fn`` takes."""
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        samples.append((time.perf_counter() - t0) / calls * 1e6)
    return statistics.median(samples)


def _model(epoch):
    """The fastnn model an adapter's epoch function trains (its closure's stepper)."""
    return next(c.cell_contents.net for c in epoch.__closure__ if hasattr(c.cell_contents, "net"))


def measure(backend: str, config: str, dtype: str) -> list[str]:
    from benchmarks.common import CONFIGS, make_batches
    from fastnn_adapters import fastnn_epoch_step

    from fastnn._kernels import codes

    cfg = CONFIGS[config]
    epoch = fastnn_epoch_step(backend, cfg, dtype, make_batches(cfg, dtype, n_batches=128), 1)
    for _ in range(3):
        epoch()  # compiled, planned, warm
    internal = _model(epoch).kernels._internal
    raw = internal.train_epoch
    seen = []
    internal.train_epoch = lambda *a: (seen.append(list(a)), raw(*a))[1]
    epoch()
    args = seen[0]
    lines = []  # (batch_start, batch_stop are arguments 22 and 23: epoch_args.ARGS)
    for n in (0, 1, 8, 128):
        call = list(args)
        call[22], call[23] = 0, n
        us = median_us(lambda call=call: raw(*call), max(20, 4000 // max(n, 1)))
        per = f", {us / n:.2f} us a step" if n else ""
        lines.append(f"{backend} {dtype} kernel, {n:3d} batches a call: {us:8.1f} us{per}")

    def no_steps(*a):
        a[26][codes.STAT_STEPS] = a[23] - a[22]  # stats: every step "done"

    internal.train_epoch = no_steps
    small = fastnn_epoch_step(backend, cfg, dtype, make_batches(cfg, dtype, n_batches=8), 1)
    small_model = _model(small)
    small_model.kernels._internal.train_epoch = no_steps
    for _ in range(50):
        small()
    us = median_us(small, 5000)
    lines.append(f"{backend} {dtype} MLP.train_epoch's Python, kernel doing nothing: {us:.1f} us")
    internal.train_epoch = raw
    small_model.kernels._internal.train_epoch = raw
    return lines


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default="A")
    p.add_argument("--backends", default="cython,numba")
    p.add_argument("--dtype", default="float32")
    opts = p.parse_args(argv)
    from gemm_products import host_line

    print(host_line())
    for backend in opts.backends.split(","):
        for line in measure(backend, opts.config, opts.dtype):
            print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
