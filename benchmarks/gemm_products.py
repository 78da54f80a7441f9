#!/usr/bin/env python
"""Each matrix product of a training step on fastnn's BLAS, SciPy's, torch.mm, XLA's dot.

compare.py's GEMM-only rows time a step's products together; this times them one by
one, on one thread, to say which product a peer's kernels run faster. For each product
of a config (benchmarks/common.py's ``GemmOnly.products``: ``x @ W`` per layer,
``x^T @ dz`` per layer, ``dz @ W^T`` for all but the first) it prints the median time
of the very call GemmOnly makes (on the OpenBLAS instance fastnn's products run on,
``fastnn._blas.info()``), of the same call on SciPy's own BLAS, of ``torch.mm`` and of
a ``jax.jit`` of the product alone, each where installed, with the ratios to fastnn's
BLAS::

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE \\
        python benchmarks/gemm_products.py --configs C,D [--dtype float64]

Run it with OpenBLAS's environment unset, as compare.py (benchmarks/README.md says
why); the host and BLAS kernel are printed first. One product jitted alone is not how
XLA runs a step: it may lay out or fuse the step's products differently (compare.py's
"GEMM-only (XLA dot, one jit)" row times them in one jit).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
for p in (HERE, HERE.parent):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))


def host_line() -> str:
    """The CPU, the BLAS fastnn's products run on (its OpenBLAS instance: file, version,
    kernel), SciPy's and OpenBLAS's core type variable: what every figure below ran on."""
    import scipy.linalg.blas  # noqa: F401  (loaded, so threadpoolctl lists it)
    from scaling import cpu_model
    from threadpoolctl import threadpool_info

    from fastnn import _blas

    b = _blas.info()
    scipy_blas = [
        f"{i['internal_api']} {i.get('version')}"
        for i in threadpool_info()
        if "scipy.libs" in i["filepath"]
    ]
    return (
        f"CPU: {cpu_model()}; fastnn's BLAS: {os.path.basename(b['source'])} "
        f"(OpenBLAS {b['version'] or '?'}, kernel {b['kernel']}, private instance: "
        f"{b['private']}; own GEMM: {b['gemm']}); "
        f"SciPy's BLAS: {', '.join(scipy_blas) or 'not found'}; "
        f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(unset)')}"
    )


def median_time(fn, repeats: int, min_time: float) -> float:
    """Median seconds per call over ``repeats`` samples of at least ``min_time`` each."""
    fn()
    t0 = time.perf_counter()
    fn()
    inner = max(1, int(min_time / max(time.perf_counter() - t0, 1e-7)))
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        samples.append((time.perf_counter() - t0) / inner)
    return statistics.median(samples)


def scipy_calls(products):
    """The same calls through SciPy's own BLAS (f2py; one thread under the limit set in
    main): beside fastnn's column, the difference between SciPy's OpenBLAS release and
    the one fastnn's instance was copied from (the ``openblas`` extra's, when newer)."""
    from benchmarks.common import _scipy_gemm_call

    return [_scipy_gemm_call(a, b, out, ta, tb) for _, a, b, out, ta, tb in products]


def torch_calls(products):
    import torch

    torch.set_num_threads(1)
    calls = []
    for _, a, b, out, trans_a, trans_b in products:
        ta, tb, to = torch.from_numpy(a), torch.from_numpy(b), torch.from_numpy(out)
        ta = ta.t() if trans_a else ta
        tb = tb.t() if trans_b else tb
        calls.append(lambda ta=ta, tb=tb, to=to: torch.mm(ta, tb, out=to))
    return calls


def xla_calls(products):
    import jax
    import jax.numpy as jnp

    if products[0][1].dtype.itemsize == 8:
        jax.config.update("jax_enable_x64", True)
    calls = []
    for _, a, b, _, trans_a, trans_b in products:
        jitted = jax.jit(
            lambda a, b, ta=trans_a, tb=trans_b: (a.T if ta else a) @ (b.T if tb else b)
        )
        ja, jb = jnp.asarray(a), jnp.asarray(b)
        calls.append(lambda f=jitted, ja=ja, jb=jb: f(ja, jb).block_until_ready())
    return calls


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--configs", default="C,D")
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    p.add_argument("--repeats", type=int, default=7, help="samples per product")
    p.add_argument("--min-time", type=float, default=0.05, help="seconds per sample")
    p.add_argument(
        "--peers", default="scipy,torch,jax", help="of scipy, torch, jax; where installed"
    )
    opts = p.parse_args(argv)

    # one core: XLA sizes its pool at import, torch and BLAS are told below
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false"
    ).strip()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:1])
    import importlib.util

    from benchmarks.common import CONFIGS, GemmOnly
    from threadpoolctl import threadpool_limits

    print(host_line())
    peers = [
        name
        for name in opts.peers.split(",")
        if name and importlib.util.find_spec(name) is not None
    ]
    makers = {"scipy": scipy_calls, "torch": torch_calls, "jax": xla_calls}
    with threadpool_limits(1):
        for name in opts.configs.split(","):
            cfg = CONFIGS[name]
            gemm = GemmOnly(cfg, opts.dtype)
            columns = {"fastnn": gemm.calls[0]} | {
                peer: makers[peer](gemm.products) for peer in peers
            }
            print(
                f"\nconfig {name} {cfg.sizes} batch {cfg.batch}, {opts.dtype}, one thread "
                f"(us; peer / fastnn's BLAS)"
            )
            print(f"{'product':24s}" + "".join(f"{c:>20s}" for c in columns))
            totals = dict.fromkeys(columns, 0.0)
            for i, (label, *_) in enumerate(gemm.products):
                times = {
                    c: median_time(calls[i], opts.repeats, opts.min_time)
                    for c, calls in columns.items()
                }
                for c, t in times.items():
                    totals[c] += t
                cells = [f"{times['fastnn'] * 1e6:20.1f}"] + [
                    f"{times[c] * 1e6:12.1f} ({times[c] / times['fastnn']:4.2f})" for c in peers
                ]
                print(f"{label:24s}" + "".join(cells))
            cells = [f"{totals['fastnn'] * 1e6:20.1f}"] + [
                f"{totals[c] * 1e6:12.1f} ({totals[c] / totals['fastnn']:4.2f})" for c in peers
            ]
            print(f"{'sum':24s}" + "".join(cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
