"""Shared inputs for the asv suite and for ``benchmarks/compare.py``.

Everything here is cheap to import (NumPy only; fastnn when a GEMM-only floor is
built): asv imports every module of the suite during discovery, and compare.py imports
this one for the training configurations, the GEMM-only floor and the step composed from
fastnn's kernels.

Environment variables read here:

- ``FASTNN_BENCH_THREADS`` (default 1): BLAS/OpenMP threads for the asv suite, set once
  at import through threadpoolctl. compare.py pins threads itself and ignores it.
- ``FASTNN_BENCH_BACKENDS`` (default "numpy,numba,cython"): the backends parametrised
  over, e.g. "numpy" for a fast smoke run of the suite itself.
- ``FASTNN_BENCH_QUICK`` (unset by default): when set to a non-empty value other than
  "0", the largest sizes (1e8 parameters) raise NotImplementedError in setup.
"""

from __future__ import annotations

import functools
import os
import time
from dataclasses import dataclass

import numpy as np

BACKENDS = tuple(b.strip() for b in os.environ.get(
    "FASTNN_BENCH_BACKENDS", "numpy,numba,cython").split(",") if b.strip())
DTYPES = ("float32", "float64")


def quick_mode() -> bool:
    """True when ``FASTNN_BENCH_QUICK`` asks for a smoke run (largest sizes skipped)."""
    return os.environ.get("FASTNN_BENCH_QUICK", "") not in ("", "0")


def available_memory_bytes() -> int | None:
    """MemAvailable from /proc/meminfo, or None where it cannot be read."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _usable_cpus() -> set[int]:
    try:
        return set(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return set(range(os.cpu_count() or 1))


def _cpu_seconds() -> tuple[float, float] | None:
    """(CPU seconds the CPUs this process may run on have been busy since boot, steal
    time of other guests included; CPU seconds of this process and its reaped
    children), or None where /proc/stat cannot be read."""
    cpus = {f"cpu{i}" for i in _usable_cpus()}
    busy = 0
    try:
        with open("/proc/stat") as fh:
            for line in fh:
                fields = line.split()
                if fields and fields[0] in cpus:
                    # user nice system idle iowait irq softirq steal
                    ticks = [int(x) for x in fields[1:9]]
                    busy += sum(ticks) - ticks[3] - ticks[4]
    except (OSError, ValueError):
        return None
    t = os.times()
    own = t.user + t.system + t.children_user + t.children_system
    return busy / os.sysconf("SC_CLK_TCK"), own


class OthersLoad:
    """How much of the machine other processes took while a benchmark ran.

    ``share()`` is the CPU time spent on the CPUs this process may use by every
    process but this one and the children it has waited for (and by other guests of
    the host, as steal time), since this object was made, divided by the wall time and
    the number of those CPUs: 0 on an idle machine whatever the benchmark's own
    threads do, where a load average counts them too. None where /proc/stat cannot be
    read (then only the load average tells).
    """

    def __init__(self) -> None:
        self._wall = time.monotonic()
        self._start = _cpu_seconds()

    def share(self) -> float | None:
        now = _cpu_seconds()
        wall = time.monotonic() - self._wall
        if now is None or self._start is None or wall <= 0:
            return None
        others = (now[0] - self._start[0]) - (now[1] - self._start[1])
        return max(0.0, others) / (wall * len(_usable_cpus()))


def require_memory(n_bytes: int, what: str) -> None:
    """Raise NotImplementedError when ``n_bytes`` would take over half the free memory.

    The machine is shared with other jobs; a benchmark that pushes it into swap or the
    OOM killer measures nothing useful.
    """
    free = available_memory_bytes()
    if free is not None and n_bytes > free // 2:
        raise NotImplementedError(
            f"{what} needs ~{n_bytes / 2**30:.1f} GiB, over half of the "
            f"{free / 2**30:.1f} GiB available")


def touched_zeros(shape, dtype) -> np.ndarray:
    """Zeros whose pages are resident: np.zeros maps untouched pages that the first
    write then faults in, which peakmem_ would charge to the benchmark, not the setup."""
    a = np.empty(shape, dtype)
    a.fill(0)
    return a


def get_backend(name: str):
    """``fastnn.backend(name)``, or NotImplementedError when it cannot run here.

    asv reports a benchmark whose setup raises NotImplementedError as skipped, which is
    what an unbuilt Cython backend or a Numba backend still being written should be.
    """
    try:
        import fastnn
        return fastnn.backend(name)
    except (ImportError, AttributeError) as exc:
        raise NotImplementedError(f"fastnn backend {name!r} unavailable: {exc}") from None


def set_bench_threads() -> int:
    """Limit BLAS/OpenMP pools to ``$FASTNN_BENCH_THREADS`` (default 1) for this process."""
    n = int(os.environ.get("FASTNN_BENCH_THREADS", "1"))
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return n
    # Kept alive for the process: asv runs each benchmark in its own process.
    global _LIMITER
    _LIMITER = threadpool_limits(limits=n)
    return n


_LIMITER = None


# --- training configurations (BENCHMARKS.md) ---------------------------------------

@dataclass(frozen=True)
class Config:
    """A ReLU MLP trained with softmax cross-entropy and Adam (lr 1e-3)."""

    name: str
    sizes: tuple[int, ...]
    batch: int

    @property
    def label(self) -> str:
        return f"{self.name} {'-'.join(map(str, self.sizes))}, batch {self.batch}"

    @property
    def n_params(self) -> int:
        return sum(i * o + o for i, o in zip(self.sizes[:-1], self.sizes[1:]))

    @property
    def step_flops(self) -> int:
        """FLOPs of the step's matrix products: x@W and a.T@dz per layer, dz@W.T for
        every layer but the first (the input gradient is never needed)."""
        m = self.batch
        layers = list(zip(self.sizes[:-1], self.sizes[1:]))
        return sum(2 * m * i * o * (2 if k == 0 else 3) for k, (i, o) in enumerate(layers))


CONFIGS = {
    "A": Config("A", (2, 128, 3), 64),
    "B": Config("B", (784, 256, 256, 10), 128),
    "C": Config("C", (1024, 2048, 2048, 10), 256),
    "D": Config("D", (784, 256, 256, 10), 1024),
}
# compare.py's digits fit (sklearn's 8x8 digits, 10 classes): its network and batch, for
# the scripts that look at one step's parts (packed_gemm.py, profile_step.py)
DIGITS = Config("digits", (64, 128, 128, 10), 64)


def make_batches(cfg: Config, dtype, n_batches: int = 8, seed: int = 0):
    """``n_batches`` pre-made (X, y) pairs: X (batch, n_in) standard normal in ``dtype``,
    y int64 class indices in [0, n_out). C-contiguous, touched once."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_batches):
        x = rng.standard_normal((cfg.batch, cfg.sizes[0])).astype(dtype)
        y = rng.integers(0, cfg.sizes[-1], cfg.batch).astype(np.int64)
        out.append((np.ascontiguousarray(x), y))
    return out


def cycle(items):
    """A function returning the items one after another, forever."""
    state = {"i": 0}
    n = len(items)

    def nxt():
        i = state["i"]
        state["i"] = i + 1
        return items[i % n]
    return nxt


# --- GEMM-only floor -----------------------------------------------------------------

def _gemm_call(a, b, out, trans_a=False, trans_b=False, blas_only=False):
    """A zero-argument call computing out = op(a) @ op(b) (row-major, C-contiguous
    operands) on the BLAS fastnn's products run on (its private single-threaded
    OpenBLAS instance and fastnn's own GEMM where it runs: ``fastnn._blas.info()``):
    the call ``fastnn._blas.gemm_call`` (and every backend) makes, its ctypes arguments
    built once. ``blas_only``: OpenBLAS's own sgemm_ or dgemm_ even where fastnn's own
    GEMM runs."""
    from fastnn._blas import _instance, gemm_arguments  # lazily: asv's discovery imports

    for x in (a, b, out):
        if not x.flags.c_contiguous:
            raise ValueError("GEMM-only operands must be C-contiguous")
    m, n = out.shape
    k = a.shape[0] if trans_a else a.shape[1]
    fn, args = gemm_arguments(trans_a, trans_b, m, n, k, a, 0, a.shape[1], b, 0, b.shape[1],
                              out, 0, n)
    if blas_only:
        fn = _instance().gemm_for(out.dtype, blas_only=True)

    def call():
        fn(*args)
    call.operands = (a, b, out)  # alive as long as the call (args holds addresses)
    return call


def _scipy_gemm_call(a, b, out, trans_a=False, trans_b=False):
    """The same call through SciPy's BLAS (f2py), threaded as its pool is set: the
    GEMM-only floor above one thread, where fastnn's own instance (always one thread)
    is no floor."""
    from scipy.linalg import blas as scipy_blas

    fn = scipy_blas.sgemm if out.dtype == np.float32 else scipy_blas.dgemm
    at, bt, ct = a.T, b.T, out.T
    res = fn(1.0, bt, at, beta=0.0, c=ct, trans_a=trans_b, trans_b=trans_a,
             overwrite_c=True)
    if not np.shares_memory(res, out):
        raise RuntimeError("SciPy BLAS copied the output: the GEMM-only floor would "
                           "include a copy")

    def call():
        fn(1.0, bt, at, beta=0.0, c=ct, trans_a=trans_b, trans_b=trans_a,
           overwrite_c=True)
    return call


class GemmOnly:
    """Just the matrix products of one training step of ``cfg``, on fastnn's BLAS.

    Forward ``z = a @ W`` per layer; backward ``dW = a.T @ dz`` per layer and
    ``da = dz @ W.T`` for every layer but the first, at the step's shapes. This is the
    floor a GEMM-bound step is compared with ("within 8% of the GEMM-only time"). Each
    call is the next of ``n_batches`` steps, as the timed steps are: the input ``x`` is
    the next batch of one stacked array (as fastnn's epoch reads its batches from X),
    every other operand one array reused (as the steps' workspaces are).

    ``threaded``: the calls go through SciPy's BLAS, on as many threads as its pool is
    set to (the floor of a multi-threaded step); by default through fastnn's own BLAS
    instance, which always runs on one thread. ``blas_only``: on that instance's
    OpenBLAS alone, even where fastnn's own GEMM runs (what it is measured
    against).
    """

    def __init__(self, cfg: Config, dtype, seed: int = 0, n_batches: int = 8,
                 threaded: bool = False, blas_only: bool = False):
        rng = np.random.default_rng(seed)
        dtype = np.dtype(dtype)
        m = cfg.batch

        def rand(*shape):
            return rng.standard_normal(shape).astype(dtype)

        layers = list(zip(cfg.sizes[:-1], cfg.sizes[1:]))
        x_all = rand(n_batches * m, cfg.sizes[0])
        acts = [None] + [rand(m, o) for _, o in layers]
        weights = [rand(i, o) for i, o in layers]
        dws = [np.empty((i, o), dtype) for i, o in layers]
        dzs = [rand(m, o) for _, o in layers]
        das = [np.empty((m, i), dtype) for i, _ in layers]
        # per batch, (name, a, b, out, trans_a, trans_b) of each product in the step's
        # order: the lists every GEMM-only timing (fastnn's BLAS, torch, XLA) runs
        self.batches = []
        for j in range(n_batches):
            acts[0] = x_all[j * m:(j + 1) * m]
            products = [(f"z{k} = x @ W{k}", acts[k], weights[k], acts[k + 1], False, False)
                        for k in range(len(layers))]
            for k in reversed(range(len(layers))):
                products.append((f"dW{k} = x^T @ dz{k}", acts[k], dzs[k], dws[k], True,
                                 False))
                if k > 0:
                    products.append((f"dx{k} = dz{k} @ W{k}^T", dzs[k], weights[k], das[k],
                                     False, True))
            self.batches.append(products)
        self.products = self.batches[0]  # one step's (gemm_products.py times these)
        self.flops = cfg.step_flops
        self._calls = None
        self._call = (_scipy_gemm_call if threaded else
                      functools.partial(_gemm_call, blas_only=blas_only))
        self._next_calls = None

    @property
    def calls(self):
        """Per batch, a call per product on fastnn's BLAS (made when first asked for:
        the peers' timings of the same products do not load fastnn)."""
        if self._calls is None:
            self._calls = [[self._call(a, b, out, ta, tb) for _, a, b, out, ta, tb in products]
                           for products in self.batches]
        return self._calls

    def __call__(self):
        if self._next_calls is None:
            self._next_calls = cycle(self.calls)
        for call in self._next_calls():
            call()


# --- a training step composed from fastnn's public kernels ---------------------------

class KernelStep:
    """One training step of ``cfg`` written as Python calls to fastnn's checked kernels.

    Forward ``dense_forward`` per layer (ReLU, identity on the last), the loss and its
    gradient (``sparse_cross_entropy``), ``dense_backward`` and ``dense_input_gradient``
    per layer, then one ``adam_step`` over the flat parameter buffer (the layers' W and
    b are views of it, the gradients views of a second one). Workspaces are allocated
    once. This is what fastnn's kernels give without a compiled whole-step path; it is
    not fastnn's training library.
    """

    def __init__(self, bk, cfg: Config, dtype, batches, seed: int = 0, lr: float = 1e-3):
        dtype = np.dtype(dtype)
        m = cfg.batch
        layers = list(zip(cfg.sizes[:-1], cfg.sizes[1:]))
        self.bk, self.batches, self.lr = bk, batches, lr
        self.params = touched_zeros(cfg.n_params, dtype)
        self.grads = touched_zeros(cfg.n_params, dtype)
        self.m1 = touched_zeros(cfg.n_params, dtype)
        self.m2 = touched_zeros(cfg.n_params, dtype)
        rng = np.random.default_rng(seed)
        self.w, self.b, self.dw, self.db = [], [], [], []
        off = 0
        for i, o in layers:
            for store, gstore, shape in ((self.w, self.dw, (i, o)), (self.b, self.db, (o,))):
                n = int(np.prod(shape))
                store.append(self.params[off:off + n].reshape(shape))
                gstore.append(self.grads[off:off + n].reshape(shape))
                off += n
            self.w[-1][...] = rng.normal(0.0, np.sqrt(2.0 / i), (i, o))  # He init
        self.z = [touched_zeros((m, o), dtype) for _, o in layers]
        self.a = [touched_zeros((m, o), dtype) for _, o in layers[:-1]]
        # Gradients w.r.t. each layer's output; no workspace is aliased beyond what the
        # kernel contract allows (dense_backward's dz may be its da).
        self.d = [touched_zeros((m, o), dtype) for _, o in layers]
        self.acts = ["relu"] * (len(layers) - 1) + ["identity"]
        self.t = 0
        self.i = 0
        self.loss = float("nan")

    def __call__(self):
        bk = self.bk
        x, y = self.batches[self.i % len(self.batches)]
        self.i += 1
        n_layers = len(self.w)
        inputs = [x] + self.a
        for k in range(n_layers):
            out_a = self.a[k] if k < n_layers - 1 else self.z[k]
            bk.dense_forward(inputs[k], self.w[k], self.b[k], self.acts[k],
                             z=self.z[k], a=out_a)
        logits = self.z[-1]
        self.loss = bk.sparse_cross_entropy(logits, y)
        bk.sparse_cross_entropy_gradient(logits, y, out=self.d[-1])
        for k in reversed(range(n_layers)):
            a_k = self.a[k] if k < n_layers - 1 else self.z[k]
            dz = self.d[k]
            bk.dense_backward(inputs[k], self.z[k], a_k, dz, self.acts[k], dz=dz,
                              dw=self.dw[k], db=self.db[k])
            if k > 0:
                bk.dense_input_gradient(dz, self.w[k], dx=self.d[k - 1])
        self.t += 1
        bk.adam_step(self.params, self.grads, self.m1, self.m2, self.t, lr=self.lr)
