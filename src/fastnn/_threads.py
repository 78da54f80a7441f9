"""fastnn's thread policy: one pool of threads, fastnn's own, runs the training loop.

Every matrix product is cut into blocks by a rule that looks at its shape only
(:func:`fastnn.reference.blas.gemm_partition`); each block is one single-threaded BLAS
call, and the whole-epoch kernels run the blocks of one product side by side on their
own threads (Cython: ``fastnn_pool.h``, where the caller never waits for a helper that
has not started a block; Numba: its ``prange`` pool). Small products are one block, so
small models run serially whatever the thread count. The bits never depend on the
number of threads. BLAS itself always runs on one thread: fastnn calls its own private
instance of SciPy's OpenBLAS, held at one thread (:mod:`fastnn._blas`), so the two pools
never compete and no thread or library can change the products' bits.

``n_threads=None`` means: as many threads as this process may use without
oversubscribing, the smallest of the CPUs it may run on (``os.sched_getaffinity``), the
BLAS pool's current size (``OPENBLAS_NUM_THREADS``, threadpoolctl's limits: joblib's loky
and Dask workers set these to share the machine between workers), ``OMP_NUM_THREADS``
when set, and for Numba its pool size (``NUMBA_NUM_THREADS``).
"""

from __future__ import annotations

import functools
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


def _env_threads() -> int | None:
    """OMP_NUM_THREADS as a cap (its first entry), when set to a positive int."""
    value = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    return int(value) if value.isdigit() and int(value) > 0 else None


def resolve(n_threads, backend_name: str) -> int:
    """The thread count to run a kernel with: ``n_threads`` itself, or for None the
    default described in the module docstring."""
    if n_threads is not None:
        return int(n_threads)
    limit = min(available_cpus(), blas_threads())
    env = _env_threads()
    if env is not None:
        limit = min(limit, env)
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
