"""fastnn's thread policy: one pool of threads, fastnn's own, runs the training loop.

Every matrix product's output is cut into tiles by a rule that looks at its shape only
(:func:`fastnn.reference.blas.gemm_blocks`); each tile is one single-threaded BLAS
call, and the whole-epoch kernels run the tiles of one product side by side on their
own threads, each thread claiming the next tile when it is free (Cython:
``fastnn_pool.h``, where the caller never waits for a helper that has not started a
tile; Numba: its ``prange`` pool, chunk size 1). Products below 2**25 flops run on the
caller's thread (one tile, or the few tiles of OpenBLAS's small-matrix kernels), so
small models run serially whatever the thread count. The bits never depend on the
number of threads. BLAS itself always runs on one thread: fastnn calls its own private
OpenBLAS instance, held at one thread (:mod:`fastnn._blas`), so the two pools
never compete and no thread or library can change the products' bits.

``n_threads=None`` means: every core this process may use without oversubscribing,
the smallest of the CPUs it may run on (``os.sched_getaffinity``), its cgroup's CPU
quota (v2 ``cpu.max``, v1 ``cpu.cfs_quota_us``, rounded up: a container limited to
2.5 CPUs gets 3 threads), the BLAS pool's current size (threadpoolctl's limits: joblib's
loky and Dask workers set these to share the machine between workers), the thread
limits in the environment when set (``OMP_NUM_THREADS``'s first entry,
``OMP_THREAD_LIMIT``, ``OPENBLAS_NUM_THREADS``, ``MKL_NUM_THREADS``,
``BLIS_NUM_THREADS``), and for Numba its pool size (``NUMBA_NUM_THREADS``).
"""

from __future__ import annotations

import functools
import math
import os


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


@functools.lru_cache(maxsize=1)
def _blas_controllers() -> tuple:
    """threadpoolctl's controllers of SciPy's and NumPy's BLAS: their pool sizes are
    the limits joblib, Dask or the user set (fastnn's own instance, :mod:`fastnn._blas`,
    is not among them).

    threadpoolctl sees the libraries loaded when it looks: SciPy's BLAS is loaded first.
    """
    import scipy.linalg.cython_blas  # noqa: F401
    from threadpoolctl import ThreadpoolController

    blas = ThreadpoolController().select(user_api="blas").lib_controllers
    scipy_own = tuple(c for c in blas if "scipy" in os.path.basename(c.filepath))
    return scipy_own or tuple(blas)


def blas_threads() -> int:
    """The current size of the BLAS pool the kernels call (1 when unknown)."""
    counts = [c.get_num_threads() for c in _blas_controllers()]
    counts = [c for c in counts if c]
    return max(1, min(counts)) if counts else 1


# Environment variables that cap a process's threads (OpenMP, the BLAS libraries); for
# OMP_NUM_THREADS, a list for nested levels, the first entry.
ENV_LIMITS = (
    "OMP_NUM_THREADS",
    "OMP_THREAD_LIMIT",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "BLIS_NUM_THREADS",
)


def _env_threads() -> int | None:
    """The smallest of the ENV_LIMITS set to a positive int (None when none is)."""
    limits = []
    for name in ENV_LIMITS:
        value = os.environ.get(name, "").split(",")[0].strip()
        if value.isdigit() and int(value) > 0:
            limits.append(int(value))
    return min(limits) if limits else None


def _quota(text: str) -> float | None:
    """CPUs allowed by a cgroup quota: v2 ``"<quota> <period>"`` (``max``: none), or
    v1's two files joined by a space (a quota of -1: none)."""
    try:
        quota, period = text.split()[:2]
        if quota == "max" or float(quota) <= 0 or float(period) <= 0:
            return None
        return float(quota) / float(period)
    except ValueError:
        return None


def cgroup_cpus(root: str = "/sys/fs/cgroup", proc: str = "/proc/self/cgroup") -> int | None:
    """CPUs this process's cgroup quota allows, rounded up (None when there is none).

    cgroup v2: ``cpu.max`` of the process's cgroup and of every cgroup above it (the
    smallest quota applies); cgroup v1: ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``
    of the ``cpu`` controller's cgroup. ``root`` and ``proc`` are where the cgroup
    file system and the process's cgroup list are (the tests fake both).
    """
    try:
        with open(proc) as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    found = []
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        rel = path.strip("/")
        if controllers == "":  # v2: the unified hierarchy
            while True:
                try:
                    with open(os.path.join(root, rel, "cpu.max")) as f:
                        found.append(_quota(f.read()))
                except OSError:
                    pass
                if not rel:
                    break
                rel = os.path.dirname(rel)
        elif "cpu" in controllers.split(","):  # v1
            for mount in ("cpu", "cpu,cpuacct", "cpuacct,cpu"):
                base = os.path.join(root, mount, rel)
                try:
                    with open(os.path.join(base, "cpu.cfs_quota_us")) as f:
                        quota = f.read().strip()
                    with open(os.path.join(base, "cpu.cfs_period_us")) as f:
                        found.append(_quota(f"{quota} {f.read().strip()}"))
                    break
                except OSError:
                    continue
    quotas = [q for q in found if q is not None]
    return max(1, math.ceil(min(quotas) - 1e-9)) if quotas else None


def resolve(n_threads, backend_name: str) -> int:
    """The thread count to run a kernel with: ``n_threads`` itself, or for None the
    default described in the module docstring."""
    if n_threads is not None:
        return int(n_threads)
    limit = min(available_cpus(), blas_threads())
    for cap in (cgroup_cpus(), _env_threads()):
        if cap is not None:
            limit = min(limit, cap)
    if backend_name == "numba":
        import numba

        limit = min(limit, numba.config.NUMBA_NUM_THREADS)  # type: ignore[attr-defined]
    return max(1, limit)


def check_n_threads(n_threads, name: str = "n_threads"):
    """None or an int >= 1 (ValueError / TypeError otherwise)."""
    if n_threads is None:
        return None
    import numbers

    if isinstance(n_threads, bool) or not isinstance(n_threads, numbers.Integral):
        raise TypeError(f"{name} must be None or an int >= 1, got {n_threads!r}")
    if not 1 <= int(n_threads) <= 2**15:
        raise ValueError(f"{name} must be None or an int in [1, 32768], got {n_threads!r}")
    return int(n_threads)
