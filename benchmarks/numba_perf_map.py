"""Name Numba's compiled functions for perf: a ``/tmp/perf-<pid>.map`` of this process.

A sampling profiler shows the machine code Numba compiled as bare addresses. perf
reads, for a process that made code at run time, a text file ``/tmp/perf-<pid>.map``
of ``start size name`` lines. :func:`install` (before Numba compiles or loads anything)
keeps a copy of each object file Numba's JIT loads, freshly compiled or from the
on-disk cache; :func:`write` (after the kernels ran) lists their functions -- the
kernels Numba compiled as separate functions, and the helpers it linked into them --
with ``nm`` and asks Numba where each was loaded::

    python benchmarks/profile_step.py --config A --backend numba --perf-map ...

Relies on Numba's object-code hooks (``JITCodeLibrary._object_compiled_hook`` and
``_object_getbuffer_hook``, Numba 0.60+) and binutils' ``nm``.
"""

from __future__ import annotations

import os
import subprocess
import tempfile

from nrt_refs import demangle

_OBJECTS: list = []  # (code library, its object file)


def install() -> None:
    """Record every object file Numba's JIT loads from now on."""
    from numba.core import codegen

    cls = codegen.JITCodeLibrary
    compiled, getbuffer = cls._object_compiled_hook.__func__, cls._object_getbuffer_hook.__func__

    def library(ll_module):
        return getattr(ll_module, "_CPUCodeLibrary__library", None)

    def on_compiled(cls, ll_module, buf):
        if library(ll_module) is not None:
            _OBJECTS.append((library(ll_module), bytes(buf)))
        return compiled(cls, ll_module, buf)

    def on_getbuffer(cls, ll_module):
        buf = getbuffer(cls, ll_module)
        if buf and library(ll_module) is not None:
            _OBJECTS.append((library(ll_module), bytes(buf)))
        return buf

    cls._object_compiled_hook = classmethod(on_compiled)
    cls._object_getbuffer_hook = classmethod(on_getbuffer)


def functions() -> dict[int, tuple[int, str]]:
    """Load address -> (size in bytes, dotted name) of every function recorded."""
    out = {}
    for lib, obj in _OBJECTS:
        with tempfile.NamedTemporaryFile(suffix=".o") as f:
            f.write(obj)
            f.flush()
            listing = subprocess.run(
                ["nm", "--defined-only", "-S", f.name], capture_output=True, text=True, check=True
            ).stdout
        for line in listing.splitlines():
            parts = line.split()
            # code symbols: global, local, and the weak copies of linked-in helpers
            if len(parts) != 4 or parts[2] not in "tTwW":
                continue
            try:
                address = lib.get_pointer_to_function(parts[3])
            except Exception:  # a symbol this library did not keep
                continue
            if address:
                out[address] = (int(parts[1], 16), demangle(parts[3]))
    return out


def write(path: str | None = None) -> tuple[str, int]:
    """Write the map perf reads for this process; returns (path, functions written)."""
    path = path or f"/tmp/perf-{os.getpid()}.map"
    table = functions()
    with open(path, "w") as fh:
        for address in sorted(table):
            size, name = table[address]
            fh.write(f"{address:x} {size:x} {name}\n")
    return path, len(table)
