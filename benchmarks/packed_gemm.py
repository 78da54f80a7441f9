#!/usr/bin/env python
"""Would a GEMM of fastnn's own beat its BLAS on the training steps' products? (issue 14)

Builds ``packed_gemm/packed_sgemm.c`` (a packed, single-threaded AVX-512 float32 GEMM in
the Goto/BLIS structure, described in its header; ``-O3 -march=native``) and times it
against the OpenBLAS instance fastnn's products run on (``fastnn._blas.info()``), on
each product of a step of configs B, C and D (benchmarks/common.py's
``GemmOnly.products``, as fastnn calls BLAS: row-major through column-major), on one
pinned CPU, the two calls alternated, medians of ``--repeats`` samples::

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/packed_gemm.py \\
        [--configs B,C,D] [--repeats 9] [--min-time 0.2] [--compute-only]

First it checks that products cut into output tiles give the whole call's bits (four
shapes, 3 x 3 uneven tiles). Per product: both GFLOP/s, the ratio (BLAS time / own
time) and both errors against a float64 product (largest error over the largest
output); per config, the sums.
``--compute-only`` adds the own GEMM's time with its packing skipped (the kernels
alone, on stale panels: timing only). Needs gcc or cc and an AVX-512 CPU (it says so
and stops otherwise). docs/benchmarks/2026-12-05-packed-gemm.md records a run.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
for p in (HERE, HERE.parent):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

SOURCE = HERE / "packed_gemm" / "packed_sgemm.c"
FLAGS = ["-O3", "-march=native", "-shared", "-fPIC"]


def has_avx512() -> bool:
    try:
        with open("/proc/cpuinfo") as f:
            return any(
                line.startswith("flags") and " avx512f" in line for line in f
            )
    except OSError:
        return False


def build(tmp: str) -> ctypes.CDLL:
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        raise SystemExit("packed_gemm.py needs a C compiler (gcc or cc)")
    lib = os.path.join(tmp, "libpacked_sgemm.so")
    subprocess.run([cc, *FLAGS, str(SOURCE), "-o", lib], check=True)
    own = ctypes.CDLL(lib)
    i = ctypes.c_int
    own.packed_sgemm.argtypes = [ctypes.c_char, ctypes.c_char, i, i, i, ctypes.c_void_p, i,
                                 ctypes.c_void_p, i, ctypes.c_void_p, i]
    own.packed_sgemm.restype = None
    return own


def own_arguments(a, b, out, trans_a, trans_b, r0=0, r1=None, c0=0, c1=None):
    """packed_sgemm's arguments for out[r0:r1, c0:c1] = op(a)[r0:r1] @ op(b)[:, c0:c1]
    (row-major; the whole product by default), on offsets into the whole arrays as
    fastnn's tiles are made: the column-major out^T = op(b)^T op(a)^T, b first, as
    fastnn._blas.gemm_call."""
    r1 = out.shape[0] if r1 is None else r1
    c1 = out.shape[1] if c1 is None else c1
    size = out.itemsize
    k = a.shape[0] if trans_a else a.shape[1]
    lda, ldb, ldc = a.shape[1], b.shape[1], out.shape[1]
    a_off = r0 if trans_a else r0 * lda
    b_off = c0 * ldb if trans_b else c0
    return (b"T" if trans_b else b"N", b"T" if trans_a else b"N", c1 - c0, r1 - r0, k,
            b.ctypes.data + b_off * size, ldb, a.ctypes.data + a_off * size, lda,
            out.ctypes.data + (r0 * ldc + c0) * size, ldc)


def own_call(own, a, b, out, trans_a, trans_b):
    """A zero-argument call of the whole product through packed_sgemm, its arguments
    built once."""
    args = own_arguments(a, b, out, trans_a, trans_b)

    def call():
        own.packed_sgemm(*args)
    call.operands = (a, b, out)  # alive as long as the call (args holds addresses)
    return call


def tiles_agree(own) -> str:
    """Whether products cut into output tiles give the whole call's bits: an element's
    sum runs over the inner dimension in KC blocks, in order, whatever its position, so
    it must (odd edges, k across several KC blocks, the three transpositions)."""
    rng = np.random.default_rng(1)
    shapes = [(200, 300, 1100, False, False), (97, 61, 530, True, False),
              (130, 77, 64, False, True), (64, 256, 1024, True, False)]
    for m, n, k, ta, tb in shapes:
        a = rng.standard_normal((k, m) if ta else (m, k)).astype(np.float32)
        b = rng.standard_normal((n, k) if tb else (k, n)).astype(np.float32)
        whole = np.full((m, n), np.nan, np.float32)
        tiled = np.full((m, n), np.nan, np.float32)
        own.packed_sgemm(*own_arguments(a, b, whole, ta, tb))
        rows, cols = [0, m // 3, m // 3 + 17, m], [0, 45, n // 2 + 3, n]
        for r0, r1 in zip(rows[:-1], rows[1:]):
            for c0, c1 in zip(cols[:-1], cols[1:]):
                own.packed_sgemm(*own_arguments(a, b, tiled, ta, tb, r0, r1, c0, c1))
        if not np.array_equal(whole.view(np.uint32), tiled.view(np.uint32)):
            return f"tiles DIFFER from the whole call ({m} x {n}, k {k}, ta {ta}, tb {tb})"
    return f"tiles: the whole call's bits on {len(shapes)} shapes cut in 3 x 3 tiles"


def calls_per_sample(fn, min_time):
    """How many calls of ``fn`` last about ``min_time`` seconds (after a warm-up call)."""
    fn()
    t0 = time.perf_counter()
    fn()
    inner = max(1, int(min_time / max(time.perf_counter() - t0, 1e-7)))
    return inner


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--configs", default="B,C,D")
    p.add_argument("--repeats", type=int, default=9, help="samples per call")
    p.add_argument("--min-time", type=float, default=0.2, help="seconds per sample")
    p.add_argument("--compute-only", action="store_true",
                   help="also time the own GEMM with its packing skipped")
    opts = p.parse_args(argv)
    if not has_avx512():
        print("packed_gemm.py: this CPU has no AVX-512 (the kernel is written for it)")
        return 0
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[-1:])

    from benchmarks.common import CONFIGS, GemmOnly, _gemm_call
    from gemm_products import host_line

    print(host_line())
    print("own GEMM: packed_sgemm.c, MR x NR = 32 x 14, MC 256, KC 512, NC 4096; "
          "GFLOP/s per product, ratio = BLAS time / own time, error = max |out - exact| "
          "/ max |exact|")
    with tempfile.TemporaryDirectory() as tmp:
        own = build(tmp)
        print(tiles_agree(own))
        for name in opts.configs.split(","):
            cfg = CONFIGS[name]
            gemm = GemmOnly(cfg, np.float32, n_batches=1)
            print(f"\nconfig {name} {cfg.sizes} batch {cfg.batch}, float32, one thread")
            head = f"{'product':22s}{'m x n, k':>20s}{'BLAS':>9s}{'own':>9s}{'ratio':>7s}"
            head += f"{'own, no packing':>17s}" if opts.compute_only else ""
            print(head + f"{'error BLAS':>12s}{'error own':>11s}")
            totals = {"blas": 0.0, "own": 0.0, "bare": 0.0}
            for label, a, b, out, ta, tb in gemm.products:
                m, n = out.shape
                k = a.shape[0] if ta else a.shape[1]
                exact = (a.T if ta else a).astype(np.float64) @ (b.T if tb else b).astype(
                    np.float64)
                scale = float(np.abs(exact).max()) or 1.0
                errors = {}
                calls = {"blas": _gemm_call(a, b, out, ta, tb),
                         "own": own_call(own, a, b, out, ta, tb)}
                for key, call in calls.items():
                    out[...] = np.nan
                    call()
                    errors[key] = float(np.abs(out - exact).max()) / scale
                if opts.compute_only:
                    calls["bare"] = calls["own"]
                inner = {key: calls_per_sample(call, opts.min_time)
                         for key, call in calls.items()}
                samples = {key: [] for key in calls}
                for _ in range(opts.repeats):
                    for key, call in calls.items():
                        own.packed_sgemm_reuse_packing(int(key == "bare"))
                        t0 = time.perf_counter()
                        for _ in range(inner[key]):
                            call()
                        samples[key].append((time.perf_counter() - t0) / inner[key])
                own.packed_sgemm_reuse_packing(0)
                med = {key: statistics.median(s) for key, s in samples.items()}
                for key, t in med.items():
                    totals[key] += t
                flops = 2.0 * m * n * k
                row = (f"{label:22s}{f'{m} x {n}, {k}':>20s}{flops / med['blas'] / 1e9:9.1f}"
                       f"{flops / med['own'] / 1e9:9.1f}{med['blas'] / med['own']:7.2f}")
                if opts.compute_only:
                    row += f"{flops / med['bare'] / 1e9:17.1f}"
                print(row + f"{errors['blas']:12.1e}{errors['own']:11.1e}")
            row = (f"{'sum (ms)':42s}{totals['blas'] * 1e3:9.3f}{totals['own'] * 1e3:9.3f}"
                   f"{totals['blas'] / totals['own']:7.2f}")
            if opts.compute_only:
                row += f"{totals['bare'] * 1e3:17.3f}"
            print(row)
    return 0


if __name__ == "__main__":
    sys.exit(main())
