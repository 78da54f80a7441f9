"""Run every benchmark of the asv suite once, at its smallest sizes, in one process.

``asv run --quick`` does the same through asv, one new process per benchmark (over ten
minutes on two cores); this smoke run checks in seconds that every benchmark's setup
and body still run against the installed fastnn, for CI (tests/test_benchmarks.py).

    python benchmarks/smoke.py            # exit status 1 if any benchmark fails

For each benchmark class it runs every value of each parameter except the last, which
is the size axis of the suite (or the training configuration), where it takes the
first, the smallest. Benchmarks whose setup raises NotImplementedError (an unbuilt
backend, a missing optional peer) count as skipped, as asv reports them.
"""

from __future__ import annotations

import importlib
import inspect
import itertools
import os
import sys
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
MODULES = ("bench_kernels", "bench_optimizers", "bench_training")
PREFIXES = ("time_", "peakmem_", "track_", "mem_")


def _combinations(cls):
    params = getattr(cls, "params", [])
    if not params:
        return [()]
    if not isinstance(params[0], (list, tuple)):
        params = [params]
    axes = [list(p) for p in params[:-1]] + [list(params[-1])[:1]]
    return list(itertools.product(*axes))


def _benchmark_classes(module):
    for name, cls in inspect.getmembers(module, inspect.isclass):
        if name.startswith("_") or cls.__module__ != module.__name__:
            continue
        methods = [m for m in dir(cls) if m.startswith(PREFIXES)]
        if methods:
            yield name, cls, methods


def run() -> tuple[int, int, list[str]]:
    """Run the suite once; return (ran, skipped, failures)."""
    os.environ.setdefault("FASTNN_BENCH_QUICK", "1")
    sys.path.insert(0, HERE)
    ran, skipped, failures = 0, 0, []
    for mod_name in MODULES:
        module = importlib.import_module(f"benchmarks.{mod_name}")
        for name, cls, methods in _benchmark_classes(module):
            for args in _combinations(cls):
                label = f"{mod_name}.{name}{list(args)}"
                bench = cls()
                try:
                    if hasattr(bench, "setup"):
                        bench.setup(*args)
                except NotImplementedError:
                    skipped += len(methods)
                    continue
                except Exception:
                    failures.append(f"{label}.setup\n{traceback.format_exc()}")
                    continue
                for method in methods:
                    try:
                        getattr(bench, method)(*args)
                        ran += 1
                    except Exception:
                        failures.append(f"{label}.{method}\n{traceback.format_exc()}")
                if hasattr(bench, "teardown"):
                    bench.teardown(*args)
    return ran, skipped, failures


def main() -> int:
    ran, skipped, failures = run()
    for failure in failures:
        print("FAILED", failure, file=sys.stderr)
    print(f"{ran} benchmarks ran once, {skipped} skipped, {len(failures)} failed")
    return 1 if failures or not ran else 0


if __name__ == "__main__":
    sys.exit(main())
