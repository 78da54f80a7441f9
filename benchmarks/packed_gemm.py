#!/usr/bin/env python
"""fastnn's own GEMM against OpenBLAS on the training steps' products (issue 14).

Times, on each product of a step of configs B, C and D (benchmarks/common.py's
``GemmOnly.products``, as fastnn calls BLAS: row-major through column-major; or
``digits``, compare.py's digits fit, ``DIGITS``), float32
and float64, in one process pinned to one CPU, the calls alternated, medians of
``--repeats`` samples:

- ``BLAS``: one whole call of OpenBLAS's ``sgemm_`` or ``dgemm_`` (fastnn's private
  instance);
- ``own``: one whole call of the ``?gemm_`` fastnn's kernels call, fastnn's own GEMM
  (src/fastnn/_kernels/fastnn_gemm.h), which hands the calls it does not take (fewer
  than 32 output columns, at most the BLAS's small-matrix size) to OpenBLAS;
- ``kernels``: the product as a training step makes it on one thread (its shape-only
  tiles, the transposed copy of small ``a @ b^T``; dense_cython._gemm_threads)::

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/packed_gemm.py \\
        [--configs B,C,D] [--dtypes float32,float64] [--repeats 9] [--min-time 0.2]

Per product: GFLOP/s of each, the ratio BLAS / own, which GEMM took the whole call, and
both errors against a wider product (float64 for float32 operands, long double for
float64 ones; largest error over the largest output); per config, the sums. Needs the
Cython kernels built and an AVX-512 CPU (it says so and stops otherwise).
docs/benchmarks/2026-12-05-packed-gemm.md and 2026-12-06-float64-gemm.md record runs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
for p in (HERE, HERE.parent):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))


def gemm_call(fn, a, b, out, trans_a, trans_b):
    """A zero-argument call of ``fn`` (an ``sgemm_`` or ``dgemm_``) computing the whole row-major
    out = op(a) @ op(b): the column-major out^T = op(b)^T op(a)^T, b first, as
    fastnn._blas.gemm_call makes it; its ctypes arguments built once."""
    from fastnn._blas import gemm_arguments

    m, n = out.shape
    k = a.shape[0] if trans_a else a.shape[1]
    _, args = gemm_arguments(trans_a, trans_b, m, n, k, a, 0, a.shape[1], b, 0, b.shape[1],
                             out, 0, n)

    def call():
        fn(*args)
    call.keep = (a, b, out)  # alive as long as the call (args holds addresses)
    return call


def _exact(a, b):
    """a @ b in a wider precision than the operands': float64 for float32 ones, x87's
    80-bit long double (64-bit significand, NumPy's own loops) for float64 ones."""
    wide = np.float64 if a.dtype == np.float32 else np.longdouble
    return a.astype(wide) @ b.astype(wide)


def calls_per_sample(fn, min_time):
    """How many calls of ``fn`` last about ``min_time`` seconds (after a warm-up call)."""
    fn()
    t0 = time.perf_counter()
    fn()
    return max(1, int(min_time / max(time.perf_counter() - t0, 1e-7)))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--configs", default="B,C,D")
    p.add_argument("--dtypes", default="float32,float64")
    p.add_argument("--repeats", type=int, default=9, help="samples per call")
    p.add_argument("--min-time", type=float, default=0.2, help="seconds per sample")
    opts = p.parse_args(argv)
    from fastnn import _blas

    if _blas.info()["gemm"] != "fastnn":
        print("packed_gemm.py: fastnn's own GEMM is not in use here (it needs an AVX-512 "
              "CPU, the built Cython kernels and FASTNN_GEMM unset or 'auto')")
        return 0
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[-1:])

    from benchmarks.common import CONFIGS, DIGITS, GemmOnly
    from gemm_products import host_line

    from fastnn._kernels import dense_cython, gemm_cython  # type: ignore[attr-defined]

    print(host_line())
    print("own: fastnn_gemm.h, MR x NR = 32 x 14 (float32) or 16 x 14 (float64), MC 256, "
          "KC 512 (float32) or 256 (float64), NC 4096; GFLOP/s per product, ratio = BLAS "
          "time / own time, error = max |out - exact| / max |exact|")
    blas = _blas._instance()
    for dtype, name in ((d, c) for d in opts.dtypes.split(",") for c in opts.configs.split(",")):
        cfg = DIGITS if name == "digits" else CONFIGS[name]
        gemm = GemmOnly(cfg, np.dtype(dtype), n_batches=1)
        fns = (blas.gemm_for(dtype, blas_only=True), blas.gemm_for(dtype))
        print(f"\nconfig {name} {cfg.sizes} batch {cfg.batch}, {dtype}, one thread")
        print(f"{'product':22s}{'m x n, k':>20s}{'BLAS':>9s}{'own':>9s}{'ratio':>7s}"
              f"{'taken by':>10s}{'kernels':>9s}{'error BLAS':>12s}{'error own':>11s}")
        totals = {"blas": 0.0, "own": 0.0, "kernels": 0.0}
        for label, a, b, out, ta, tb in gemm.products:
            m, n = out.shape
            k = a.shape[0] if ta else a.shape[1]
            exact = _exact(a.T if ta else a, b.T if tb else b)
            scale = float(np.abs(exact).max()) or 1.0
            calls = {
                "blas": gemm_call(fns[0], a, b, out, ta, tb),
                "own": gemm_call(fns[1], a, b, out, ta, tb),
                "kernels": lambda a=a, b=b, out=out, ta=ta, tb=tb: dense_cython._gemm_threads(
                    a, b, out, ta, tb, 1),
            }
            errors = {}
            for key in ("blas", "own"):
                out[...] = np.nan
                calls[key]()
                errors[key] = float(np.abs(out - exact).max()) / scale
            taken = "own" if gemm_cython.takes(m, n, k) else "BLAS"
            inner = {key: calls_per_sample(call, opts.min_time) for key, call in calls.items()}
            samples: dict[str, list[float]] = {key: [] for key in calls}
            for _ in range(opts.repeats):
                for key, call in calls.items():
                    t0 = time.perf_counter()
                    for _ in range(inner[key]):
                        call()
                    samples[key].append((time.perf_counter() - t0) / inner[key])
            med = {key: statistics.median(s) for key, s in samples.items()}
            for key, t in med.items():
                totals[key] += t
            gf = {key: 2.0 * m * n * k / t / 1e9 for key, t in med.items()}
            print(f"{label:22s}{f'{m} x {n}, {k}':>20s}{gf['blas']:9.1f}{gf['own']:9.1f}"
                  f"{med['blas'] / med['own']:7.2f}{taken:>10s}{gf['kernels']:9.1f}"
                  f"{errors['blas']:12.1e}{errors['own']:11.1e}")
        print(f"{'sum (ms)':42s}{totals['blas'] * 1e3:9.3f}{totals['own'] * 1e3:9.3f}"
              f"{totals['blas'] / totals['own']:7.2f}{'':10s}{totals['kernels'] * 1e3:9.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
