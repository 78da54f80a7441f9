"""Can a kernel of fastnn's own beat BLAS on config A's products? (issue 14, item 4)

Compiles ``small_products/bench.c`` with the candidate kernel
``small_products/fastnn_small_gemm.h`` (setup.py's flags: ``-O3 -ffp-contract=off``,
the kernel multiversioned for AVX-512/AVX2/SSE2 as fastnn_simd.h) and runs it on the
OpenBLAS file fastnn's private BLAS is loaded from, pinned to one CPU when ``taskset``
exists, with ``OPENBLAS_CORETYPE`` and ``OPENBLAS_L2_SIZE`` unset (benchmarks/README.md
says why). Prints the host, the BLAS kernel and, per product, the median time of one
BLAS call and of one candidate call, both in C in one process, alternately.

    python benchmarks/small_products.py [--repeats 4000] [--rounds 3] [--cpu 1]

docs/benchmarks/2026-12-02-small-products.md records a run and what it means.
"""

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "small_products")
FLAGS = ["-O3", "-ffp-contract=off", "-fno-math-errno"]


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=4000, help="calls per product (<= 10000)")
    p.add_argument("--rounds", type=int, default=3, help="runs of the whole table")
    p.add_argument("--cpu", type=int, default=1, help="CPU to pin to (taskset)")
    opts = p.parse_args()

    from fastnn import _blas

    info = _blas.info()
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        print("no C compiler found")
        return 1
    with tempfile.TemporaryDirectory() as tmp:
        exe = os.path.join(tmp, "bench")
        subprocess.run(
            [cc, *FLAGS, "-I", HERE, os.path.join(HERE, "bench.c"), "-o", exe, "-ldl", "-lm"],
            check=True,
        )
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
        }
        cmd = [exe, info["source"], str(opts.repeats)]
        if shutil.which("taskset"):
            cmd = ["taskset", "-c", str(opts.cpu), *cmd]
        print(f"host: {cpu_model()}; BLAS: {info['source']} (kernel {info['kernel']})")
        for r in range(opts.rounds):
            print(f"--- round {r + 1}")
            sys.stdout.flush()
            subprocess.run(cmd, check=True, env=env)
    return 0


if __name__ == "__main__":
    sys.exit(main())
