#!/usr/bin/env python
"""Count the array references Numba's compiled step takes, by function.

Numba keeps arrays alive with reference counts (its runtime, NRT): each NRT_incref is
an atomic increment, undone by an atomic NRT_decref, a few nanoseconds the pair. Code
that takes references per row or per block shows in small configs' steps: config A's
Numba step took 362 a step, 256 of them in one per-row loss helper (issue 14). perf
shows the time NRT_incref takes (``profile_step.py --perf-map``), not who calls it:
this counts the calls per caller.
Before anything is compiled, NRT_incref is redefined to report its return address;
the kernels are compiled afresh (a temporary Numba cache: cached code keeps the
uninstrumented NRT_incref), one epoch of ``--steps`` steps runs counted, and each
address is mapped to the compiled function that holds it:

    python benchmarks/nrt_refs.py --config A --steps 64

Counts, not times (the counting itself is slow): profile_step.py times the same
step. Relies on Numba's internal ``nrtdynmod._define_nrt_incref`` (Numba 0.60+).
"""

from __future__ import annotations

import argparse
import bisect
import collections
import ctypes
import gc
import os
import re
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))


class RefCounter:
    """NRT_incref, instrumented: counts per return address while ``active``."""

    def __init__(self):
        self.counts: collections.Counter = collections.Counter()
        self.active = False
        self._callback = ctypes.CFUNCTYPE(None, ctypes.c_void_p)(self._count)

    def _count(self, address):
        if self.active:
            self.counts[address] += 1

    def install(self):
        """Redefine NRT_incref for every module compiled from now on."""
        import llvmlite.binding as llvm
        from llvmlite import ir
        from numba.core import cgutils
        from numba.core.runtime import nrtdynmod

        symbol = "fastnn_bench_count_ref"
        llvm.add_symbol(symbol, ctypes.cast(self._callback, ctypes.c_void_p).value)

        def define_incref(module, atomic_incr):
            fn = cgutils.get_or_insert_function(module, nrtdynmod.incref_decref_ty, "NRT_incref")
            fn.attributes.add("noinline")  # as Numba's: its refcount pruning looks for calls
            builder = ir.IRBuilder(fn.append_basic_block())
            ptr = fn.args[0]
            with cgutils.if_unlikely(builder, cgutils.is_null(builder, ptr)):
                builder.ret_void()
            i8p = ir.IntType(8).as_pointer()
            ret_addr = module.declare_intrinsic(
                "llvm.returnaddress", fnty=ir.FunctionType(i8p, [ir.IntType(32)])
            )
            count = cgutils.get_or_insert_function(
                module, ir.FunctionType(ir.VoidType(), [i8p]), symbol
            )
            builder.call(count, [builder.call(ret_addr, [ir.Constant(ir.IntType(32), 0)])])
            builder.call(atomic_incr, [builder.bitcast(ptr, atomic_incr.args[0].type)])
            builder.ret_void()

        nrtdynmod._define_nrt_incref = define_incref


def demangle(name: str) -> str:
    """Numba's Itanium-style symbol -> dotted qualified name (other escaped characters,
    _xx, kept: Numba leaves "_" itself unescaped, so they cannot all be told apart)."""
    m = re.match(r"_ZN(.*)", name)
    if not m:
        return name
    rest, parts = m.group(1), []
    while rest and rest[0].isdigit():
        n = re.match(r"\d+", rest).group()
        rest = rest[len(n) :]
        parts.append(rest[: int(n)])
        rest = rest[int(n) :]
    return ".".join(parts).replace("_3clocals_3e", "<locals>") or name


def compiled_functions() -> tuple[list[int], list[str]]:
    """Start addresses and names of every function in every compiled Numba library."""
    from numba.core.dispatcher import Dispatcher

    starts = {}
    for obj in gc.get_objects():
        try:
            if not isinstance(obj, Dispatcher):
                continue
        except ReferenceError:  # a weak proxy whose object is gone
            continue
        for cres in obj.overloads.values():
            lib = cres.library
            for fn in lib._final_module.functions:
                if fn.is_declaration:
                    continue
                address = lib.get_pointer_to_function(fn.name)
                if address:
                    starts[address] = demangle(fn.name)
    addresses = sorted(starts)
    return addresses, [starts[a] for a in addresses]


def by_function(counts: collections.Counter) -> collections.Counter:
    """Counts per return address -> counts per function holding the address."""
    addresses, names = compiled_functions()
    out: collections.Counter = collections.Counter()
    for address, n in counts.items():
        i = bisect.bisect_right(addresses, address) - 1
        out[names[i] if i >= 0 else "(outside Numba's code)"] += n
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default="A")
    p.add_argument("--steps", type=int, default=64)
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    p.add_argument("--top", type=int, default=20)
    opts = p.parse_args(argv)

    # before Numba is imported: its configuration reads the variable once
    os.environ["NUMBA_CACHE_DIR"] = tempfile.mkdtemp(prefix="fastnn-nrt-refs-")
    counter = RefCounter()
    counter.install()

    import numpy as np
    from benchmarks.common import CONFIGS
    from threadpoolctl import threadpool_limits

    import fastnn

    cfg = CONFIGS[opts.config]
    rng = np.random.default_rng(0)
    X = rng.standard_normal((cfg.batch * opts.steps, cfg.sizes[0])).astype(opts.dtype)
    y = rng.integers(0, cfg.sizes[-1], X.shape[0])
    net = fastnn.MLP(list(cfg.sizes), loss="cross_entropy", dtype=opts.dtype,
                     backend="numba", random_state=0, n_threads=1)
    opt = fastnn.Adam(lr=1e-3)
    with threadpool_limits(1, user_api="blas"):
        net.train_epoch(X, y, opt, cfg.batch, shuffle=False)  # compiles, uncounted
        counter.active = True
        net.train_epoch(X, y, opt, cfg.batch, shuffle=False)
        counter.active = False

    table = by_function(counter.counts)
    total = sum(table.values())
    print(f"config {cfg.name} {cfg.sizes} batch {cfg.batch}, {opts.dtype}, backend numba: "
          f"{total / opts.steps:.1f} references per step ({len(counter.counts)} call sites)")
    for name, n in table.most_common(opts.top):
        print(f"{n / opts.steps:10.1f}  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
