"""The BLAS that every fastnn matrix product calls: OpenBLAS, in a private copy.

fastnn's products must run on one BLAS thread whatever thread calls them (docs/spec.md
§10): OpenBLAS cuts a product differently on several threads, which changes
float32 and float64 results, and a threaded product holds OpenBLAS's level-3 lock and
its thread pool, which a ``fork`` from another thread copies locked (the child hangs).
OpenBLAS's thread count is one number for the whole process, which any thread or library
can change at any moment (threadpoolctl, joblib, another model's kernels), so setting it
around a call guarantees nothing.

So fastnn loads an OpenBLAS library file as a private instance (an in-memory copy of
the file, opened ``RTLD_LOCAL | RTLD_DEEPBIND``, so neither its symbols nor its thread
count are shared), sets that instance to one thread once, and makes every GEMM through
it: the reference through ctypes, the Numba kernels through a linked symbol, the Cython
kernels through a function pointer set when their module loads. threadpoolctl finds
BLAS libraries by file name and does not see it. The file is the newest of SciPy's own
OpenBLAS and the one of the ``scipy-openblas32`` wheel (the OpenBLAS project's build
for Python packages, the ``openblas`` extra), which is often a few releases ahead of the
one SciPy bundles and has faster single-precision kernels (``FASTNN_BLAS=scipy`` keeps
SciPy's).

Where the CPU has AVX-512 and the Cython kernels are built, the ``sgemm_`` and ``dgemm_``
handed out are fastnn's own GEMM (``_kernels/fastnn_gemm.h``, in ``gemm_cython``),
which takes the larger calls and passes the others to that OpenBLAS instance
(``FASTNN_GEMM=blas`` keeps OpenBLAS for every call; :func:`info` says which runs).

Where a private copy cannot be made (no OpenBLAS to copy: SciPy built against another BLAS and
no wheel; no ``memfd_create``; or ``FASTNN_SHARED_BLAS=1``), fastnn calls SciPy's own
BLAS and holds its pool at one thread while a whole-epoch kernel runs
(:func:`hold_one_thread`), a process-wide setting that others can change: :func:`info`
says which of the two is in use.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import functools
import os
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

import numpy as np

if TYPE_CHECKING:
    import _ctypes

_PREFIXES = ("scipy_", "")  # SciPy's OpenBLAS wheels prefix their symbols


@dataclass(frozen=True)
class _Blas:
    sgemm: _ctypes.CFuncPtr
    dgemm: _ctypes.CFuncPtr
    sdot: _ctypes.CFuncPtr
    ddot: _ctypes.CFuncPtr
    private: bool
    source: str
    threads: int | None  # the private instance's thread count when loaded
    kernel: str | None = None  # OpenBLAS's CPU kernel ("Haswell", "SkylakeX", ...)
    config: str | None = None  # OpenBLAS's build string: version, options, kernel
    # set when sgemm and dgemm are fastnn's own GEMM (_kernels/fastnn_gemm.h): the
    # BLAS's own, to which it hands the calls it does not take
    blas_sgemm: _ctypes.CFuncPtr | None = None
    blas_dgemm: _ctypes.CFuncPtr | None = None

    def gemm_for(self, dtype, blas_only: bool = False) -> _ctypes.CFuncPtr:
        """The ``?gemm_`` for ``dtype`` (float32: sgemm, else dgemm) that fastnn's
        products call; with ``blas_only``, the BLAS's own even where fastnn's own GEMM
        stands in front of it."""
        single = np.dtype(dtype) == np.float32
        own = self.blas_sgemm if single else self.blas_dgemm
        if blas_only and own is not None:
            return own
        return self.sgemm if single else self.dgemm


_lock = threading.Lock()
_loaded: _Blas | None = None
_GEMM_ARGTYPES = [ctypes.c_char_p, ctypes.c_char_p] + [ctypes.c_void_p] * 11
_DOT_ARGTYPES = [ctypes.c_void_p] * 5


def _version(text: str | None) -> tuple[int, ...]:
    """(0, 3, 34) from "0.3.34.481.3"; () when there is no leading number."""
    parts = []
    for part in (text or "").split(".")[:3]:
        if not part.isdigit():
            break
        parts.append(int(part))
    return tuple(parts)


def _openblas_candidates() -> list[tuple[str, bool]]:
    """(file, loaded) of the LP64 OpenBLAS libraries fastnn may copy, best first.

    SciPy's, already loaded (NumPy's is ILP64: its symbols have other names, and it is
    only a fallback source), and the ``scipy-openblas32`` wheel's when it is installed,
    not loaded: the newest version first, SciPy's at a tie (``FASTNN_BLAS=scipy``:
    SciPy's only).
    """
    from ._threads import _blas_controllers

    choice = os.environ.get("FASTNN_BLAS", "") or "auto"
    if choice not in ("auto", "scipy"):
        raise ValueError(f"FASTNN_BLAS must be 'auto' or 'scipy', got {choice!r}")
    found = [
        (c.filepath, True, _version(c.version), "scipy.libs" in c.filepath)
        for c in _blas_controllers()
        if c.internal_api == "openblas" and os.path.isfile(c.filepath)
    ]
    wheel = _wheel_library() if choice == "auto" else None
    if wheel is not None:
        found.append((wheel[0], False, wheel[1], False))
    found.sort(key=lambda f: (f[2], f[3]), reverse=True)
    return [(path, loaded) for path, loaded, _, _ in found]


def _wheel_library() -> tuple[str, tuple[int, ...]] | None:
    """The library file of the ``scipy-openblas32`` wheel and its version, if installed.

    Found without importing the package: its ``__init__`` loads the library into the
    process's global symbol scope, where SciPy modules imported later would bind to it.
    A wheel that cannot be read is not a candidate.
    """
    import glob
    import importlib.metadata
    import importlib.util

    try:
        spec = importlib.util.find_spec("scipy_openblas32")
        if spec is None or not spec.submodule_search_locations:
            return None
        lib_dir = os.path.join(list(spec.submodule_search_locations)[0], "lib")
        files = sorted(glob.glob(os.path.join(lib_dir, "libscipy_openblas*.so*")))
        version = _version(importlib.metadata.version("scipy-openblas32"))
    except Exception:  # a broken or foreign install: SciPy's library only
        return None
    return (files[0], version) if files and os.path.isfile(files[0]) else None


def _symbol(lib, names):
    for prefix in _PREFIXES:
        for name in names:
            fn = getattr(lib, prefix + name, None)
            if fn is not None:
                return fn
    return None


def _private_copy(path: str):
    """A second instance of the library at ``path``, loaded from an in-memory copy."""
    fd = os.memfd_create("fastnn-openblas", os.MFD_CLOEXEC)
    try:
        with open(path, "rb") as src:
            size = os.fstat(src.fileno()).st_size
            sent = 0
            while sent < size:
                n = os.sendfile(fd, src.fileno(), sent, size - sent)
                if n == 0:
                    raise OSError(f"short copy of {path}")
                sent += n
        mode = os.RTLD_NOW | os.RTLD_LOCAL | getattr(os, "RTLD_DEEPBIND", 0)
        return ctypes.CDLL(f"/proc/self/fd/{fd}", mode=mode)
    finally:
        os.close(fd)  # the mapping outlives the descriptor


def _load_private() -> _Blas | None:
    if not hasattr(os, "memfd_create"):
        return None
    for path, loaded in _openblas_candidates():
        # ILP64 builds (64-bit integers) are not the interface the kernels call; a file
        # already loaded is checked on its handle, the wheel's on the copy (a shared
        # load would start a thread pool of its own and share its symbols).
        if loaded and _symbol(ctypes.CDLL(path), ["sgemm_"]) is None:
            continue
        # A copy of SciPy's library that fails means no private instance (the shared
        # fallback); one of the wheel's, that the next candidate (SciPy's) is tried.
        try:
            lib = _private_copy(path)
        except OSError:
            if loaded:
                return None
            continue
        sgemm, dgemm = _symbol(lib, ["sgemm_"]), _symbol(lib, ["dgemm_"])
        sdot, ddot = _symbol(lib, ["sdot_"]), _symbol(lib, ["ddot_"])
        set_threads = _symbol(lib, ["openblas_set_num_threads"])
        get_threads = _symbol(lib, ["openblas_get_num_threads"])
        if None in (sgemm, dgemm, sdot, ddot, set_threads, get_threads):
            if loaded:
                return None
            continue
        set_threads.argtypes, set_threads.restype = [ctypes.c_int], None
        get_threads.argtypes, get_threads.restype = [], ctypes.c_int
        set_threads(1)
        if get_threads() != 1:
            if loaded:
                return None
            continue
        return _Blas(sgemm, dgemm, sdot, ddot, True, path, get_threads(), *_describe(lib))
    return None


def _describe(lib) -> tuple[str | None, str | None]:
    """(CPU kernel, build string) an OpenBLAS library reports, None where it does not:
    ("SkylakeX", "OpenBLAS 0.3.34.481.3 DYNAMIC_ARCH NO_AFFINITY SkylakeX ...")."""
    out: list[str | None] = []
    for name in ("openblas_get_corename", "openblas_get_config"):
        fn = _symbol(lib, [name])
        if fn is None:
            out.append(None)
            continue
        fn.argtypes, fn.restype = [], ctypes.c_char_p
        out.append(fn().decode("ascii", "replace").strip())
    return out[0], out[1]


def _load_shared() -> _Blas:
    """SciPy's own BLAS (the fallback): the functions scipy.linalg.cython_blas exports."""
    import scipy.linalg.cython_blas as cb

    get_pointer = ctypes.pythonapi.PyCapsule_GetPointer
    get_pointer.restype, get_pointer.argtypes = ctypes.c_void_p, [ctypes.py_object, ctypes.c_char_p]
    get_name = ctypes.pythonapi.PyCapsule_GetName
    get_name.restype, get_name.argtypes = ctypes.c_char_p, [ctypes.py_object]

    def function(name, restype=None):
        capsule = cb.__pyx_capi__[name]
        address = get_pointer(capsule, get_name(capsule))
        return (
            ctypes.CFUNCTYPE(restype, *_DOT_ARGTYPES)(address)
            if restype
            else ctypes.CFUNCTYPE(None, *_GEMM_ARGTYPES)(address)
        )

    return _Blas(
        function("sgemm"),
        function("dgemm"),
        function("sdot", ctypes.c_float),
        function("ddot", ctypes.c_double),
        False,
        cb.__file__,
        None,
        *_shared_description(),
    )


def _shared_description() -> tuple[str | None, str | None]:
    """(CPU kernel, build string) of SciPy's shared OpenBLAS ((None, None) for another
    BLAS): the kernel a private copy of the same file reports, so that the tiling rule
    (small_gemm_mnk) follows the library that runs. FASTNN_SHARED_BLAS=1 runs SciPy's
    library: where the private copy would be the wheel's, another release, the bits
    (and the kernel) may differ from those of a run without it."""
    for path, loaded in _openblas_candidates():
        if not loaded:
            continue  # the wheel: not what SciPy calls
        shared = ctypes.CDLL(path)  # already loaded: only a handle to look symbols up
        if _symbol(shared, ["sgemm_"]) is None:
            continue  # ILP64: not SciPy's LP64 BLAS
        return _describe(shared)
    return None, None


def _instance() -> _Blas:
    global _loaded
    if _loaded is None:
        with _lock:
            if _loaded is None:
                loaded = None
                if os.environ.get("FASTNN_SHARED_BLAS", "") in ("", "0"):
                    loaded = _load_private()
                if loaded is None:
                    loaded = _load_shared()
                for fn in (loaded.sgemm, loaded.dgemm):
                    fn.argtypes, fn.restype = _GEMM_ARGTYPES, None
                loaded.sdot.argtypes, loaded.sdot.restype = _DOT_ARGTYPES, ctypes.c_float
                loaded.ddot.argtypes, loaded.ddot.restype = _DOT_ARGTYPES, ctypes.c_double
                _loaded = _with_own_gemm(loaded)
    return _loaded


def _with_own_gemm(b: _Blas) -> _Blas:
    """``b`` with fastnn's own GEMM as its sgemm and dgemm where it can run: the Cython
    kernels are built, the CPU has AVX-512 and ``FASTNN_GEMM`` is not ``blas``.

    It takes the larger calls, which OpenBLAS packs (at least 32 output rows of the
    column-major call, more than :func:`small_gemm_mnk` multiply-adds) and hands the
    others to ``b``'s own sgemm and dgemm, so every backend still makes one call per
    tile and gets the same bits (docs/spec.md §10).
    """
    choice = os.environ.get("FASTNN_GEMM", "") or "auto"
    if choice not in ("auto", "blas"):
        raise ValueError(f"FASTNN_GEMM must be 'auto' or 'blas', got {choice!r}")
    if choice == "blas":
        return b
    try:
        from ._kernels import gemm_cython  # type: ignore[attr-defined]
    except ImportError:  # not built: the Numba kernels run, on the BLAS alone
        return b
    s, d = (cast(int, ctypes.cast(f, ctypes.c_void_p).value) for f in (b.sgemm, b.dgemm))
    own_s, own_d = gemm_cython.gemm_addresses(s, d, _small_mnk(b.kernel))
    if not (own_s and own_d):
        return b
    gemm_type = ctypes.CFUNCTYPE(None, *_GEMM_ARGTYPES)
    return dataclasses.replace(
        b, sgemm=gemm_type(own_s), dgemm=gemm_type(own_d), blas_sgemm=b.sgemm, blas_dgemm=b.dgemm
    )


def info() -> dict:
    """Which BLAS fastnn's products run on: ``{"private", "source", "kernel", "version",
    "config", "gemm"}``.

    ``private`` is True when fastnn runs its own single-threaded OpenBLAS instance (the
    normal case); False when it falls back to SciPy's shared BLAS
    (``FASTNN_SHARED_BLAS=1``, or a SciPy built on another BLAS). ``source`` is the
    library file, ``kernel`` the CPU kernel OpenBLAS chose ("SkylakeX"), ``version`` its
    release ("0.3.34") and ``config`` its build string (None where unknown). ``gemm``
    is ``"fastnn"`` where products run on fastnn's own GEMM (AVX-512, float32 and
    float64, the BLAS behind it for the calls it does not take; ``FASTNN_GEMM=blas``
    turns it off), ``"blas"`` where they run on the BLAS.
    """
    b = _instance()
    version = ".".join(map(str, _version((b.config or "").partition(" ")[2].split(" ")[0])))
    return {
        "private": b.private,
        "source": b.source,
        "kernel": b.kernel,
        "version": version or None,
        "config": b.config,
        "gemm": "fastnn" if own_gemm() else "blas",
    }


# OpenBLAS's cores with small-matrix GEMM kernels on x86-64 (its KERNEL.SKYLAKEX, which
# KERNEL.COOPERLAKE includes; KERNEL.SAPPHIRERAPIDS), as openblas_get_corename names them.
_SMALL_MATRIX_KERNELS = frozenset({"SkylakeX", "Cooperlake", "SapphireRapids"})


def own_gemm() -> bool:
    """Whether products run on fastnn's own GEMM (``info()["gemm"]``): the tiling rule
    cuts them finer (``fastnn.reference.blas.gemm_grid``)."""
    return _instance().blas_sgemm is not None


def small_gemm_mnk() -> int:
    """The largest ``m n k`` of a GEMM call that fastnn's BLAS runs on its small-matrix
    kernels (no packing), 0 when it has none or its core is unknown.

    ``fastnn.reference.blas.gemm_grid`` cuts products into tiles of at most this size
    (docs/spec.md §10); every backend reads this one value.
    """
    return _small_mnk(_instance().kernel)


def _small_mnk(kernel: str | None) -> int:
    return 1_000_000 if kernel in _SMALL_MATRIX_KERNELS else 0


def gemm_addresses() -> tuple[int, int]:
    """The addresses of the Fortran ``sgemm_`` and ``dgemm_`` the kernels call."""
    b = _instance()
    return (
        cast(int, ctypes.cast(b.sgemm, ctypes.c_void_p).value),
        cast(int, ctypes.cast(b.dgemm, ctypes.c_void_p).value),
    )


_SHARE_ARGTYPES = [ctypes.c_int] * 5 + [ctypes.c_void_p, ctypes.c_int] * 2 + [ctypes.c_int]
_share_types = (
    ctypes.CFUNCTYPE(ctypes.c_int, *_SHARE_ARGTYPES),
    ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_int),
    ctypes.CFUNCTYPE(None, ctypes.c_int),
)
# where the Cython kernels are not built: functions that never share, for Numba's
# kernels to link to (the calls happen once per product cut into column tiles)
_NO_SHARE = (
    _share_types[0](lambda *args: 0),
    _share_types[1](lambda itemsize, chunk: None),
    _share_types[2](lambda itemsize: None),
)


@functools.cache
def _share_functions() -> tuple[_ctypes.CFuncPtr, ...]:
    try:
        from ._kernels import gemm_cython  # type: ignore[attr-defined]
    except ImportError:
        return _NO_SHARE
    return tuple(t(a) for t, a in zip(_share_types, gemm_cython.share_addresses()))


def share_addresses() -> tuple[int, int, int]:
    """The addresses of ``share``, ``pack`` and ``unshare``
    (``_kernels/fastnn_gemm.h``, each taking the itemsize first, 4 or 8): a product
    cut into one row of column tiles packs its ``op(a)`` once for them all. ``share``
    returns 0, and the tiles pack for themselves, where fastnn's own GEMM does not run;
    the bits are the same either way."""
    return cast(
        tuple[int, int, int],
        tuple(ctypes.cast(f, ctypes.c_void_p).value for f in _share_functions()),
    )


def gemm_share(
    trans_a: bool,
    m: int,
    n: int,
    k: int,
    a: np.ndarray,
    lda: int,
    out: np.ndarray,
    ldc: int,
    narrowest: int,
) -> bool:
    """Packs ``op(a)`` of the product ``out (m, n) = op(a) @ op(b)`` (row-major,
    C-contiguous buffers of one dtype, float32 or float64) once for its column tiles,
    the narrowest ``narrowest`` wide, as the compiled kernels do, chunk by chunk on this
    thread; True when it did: then :func:`gemm_unshare` once every tile is made."""
    _instance()  # the own GEMM is set up with the BLAS
    share, pack, unshare = _share_functions()
    size = out.dtype.itemsize
    chunks = share(size, int(trans_a), m, n, k, a.ctypes.data, lda, out.ctypes.data, ldc, narrowest)
    try:
        for chunk in range(chunks):
            pack(size, chunk)
    except BaseException:  # an interrupt between two chunks: never leave the slot held
        unshare(size)
        raise
    return chunks > 0


def gemm_unshare(dtype) -> None:
    """Releases what :func:`gemm_share` packed for a product of this dtype (after its
    tiles)."""
    _share_functions()[2](np.dtype(dtype).itemsize)


def gemm_call(
    trans_a: bool,
    trans_b: bool,
    m: int,
    n: int,
    k: int,
    a: np.ndarray,
    a_off: int,
    lda: int,
    b: np.ndarray,
    b_off: int,
    ldb: int,
    c: np.ndarray,
    c_off: int,
    ldc: int,
    beta: float = 0.0,
) -> None:
    """c (m, n) = op(a) @ op(b) + beta c, row-major, in one BLAS call (alpha = 1).

    Each matrix starts ``*_off`` elements into its array's buffer and has rows of
    ``ld*`` elements. A row-major matrix is its own transpose in column-major order, so
    BLAS computes c^T = op(b)^T op(a)^T: b goes first and nothing is copied. The
    Cython and Numba kernels make exactly this call (blas_cython.pxd's gemm_call,
    _numba_common.py's _gemm_tile). Shapes are not checked: callers pass consistent ones.
    """
    if m == 0 or n == 0:
        return
    fn, args = gemm_arguments(
        trans_a, trans_b, m, n, k, a, a_off, lda, b, b_off, ldb, c, c_off, ldc, beta
    )
    fn(*args)


def gemm_arguments(
    trans_a: bool,
    trans_b: bool,
    m: int,
    n: int,
    k: int,
    a: np.ndarray,
    a_off: int,
    lda: int,
    b: np.ndarray,
    b_off: int,
    ldb: int,
    c: np.ndarray,
    c_off: int,
    ldc: int,
    beta: float = 0.0,
) -> tuple:
    """``(fn, args)``: the BLAS function :func:`gemm_call` calls and its arguments, to
    call at once or, built once, many times (the GEMM-only floor of the benchmarks).
    The ctypes scalars live as long as ``args``; the arrays must outlive it."""
    ctype = np.ctypeslib.as_ctypes_type(c.dtype)
    fn = _instance().gemm_for(c.dtype)
    size = c.itemsize
    ints = [ctypes.c_int(v) for v in (n, m, k, ldb, lda, ldc)]
    alpha, beta_ = ctype(1.0), ctype(beta)
    return fn, (
        b"T" if trans_b else b"N",
        b"T" if trans_a else b"N",
        ctypes.byref(ints[0]),
        ctypes.byref(ints[1]),
        ctypes.byref(ints[2]),
        ctypes.byref(alpha),
        b.ctypes.data + b_off * size,
        ctypes.byref(ints[3]),
        a.ctypes.data + a_off * size,
        ctypes.byref(ints[4]),
        ctypes.byref(beta_),
        c.ctypes.data + c_off * size,
        ctypes.byref(ints[5]),
    )


def dot(x: np.ndarray) -> float:
    """x . x for a 1-D contiguous float32/float64 array, one single-threaded BLAS call.

    NumPy's ``np.dot`` runs on NumPy's own OpenBLAS, threaded above 10,000 values as
    its user set it, so its last bits depend on the BLAS thread count; this one never
    does (the sum of squares in the estimators' L2 penalty, which decides their
    stopping rule).
    """
    x = np.ascontiguousarray(x)
    b = _instance()
    fn = b.sdot if x.dtype == np.float32 else b.ddot
    n, one = ctypes.c_int(x.size), ctypes.c_int(1)
    return float(
        fn(ctypes.byref(n), x.ctypes.data, ctypes.byref(one), x.ctypes.data, ctypes.byref(one))
    )


# --- the fallback's guard -------------------------------------------------------------

_hold_lock = threading.Lock()
_holders = 0
_restore: list = []


def hold_one_thread():
    """SciPy's shared BLAS pool held at one thread inside the block (fallback only).

    Nested and concurrent holders share one hold: the first sets one thread, the last
    restores what was there. With the private instance (the normal case) it does
    nothing: that instance is always on one thread (and no generator is made: an
    epoch call of a small network pays for every microsecond here).
    """
    if _instance().private:
        return _NO_HOLD
    return _hold_shared()


_NO_HOLD = contextlib.nullcontext()


@contextlib.contextmanager
def _hold_shared():
    global _holders
    from ._threads import _blas_controllers

    with _hold_lock:
        if _holders == 0:
            _restore[:] = [(c, c.get_num_threads()) for c in _blas_controllers()]
            for c, n in _restore:
                if n and n != 1:
                    c.set_num_threads(1)
        _holders += 1
    try:
        yield
    finally:
        with _hold_lock:
            _holders -= 1
            if _holders == 0:
                for c, n in _restore:
                    if n and n != 1:
                        c.set_num_threads(n)
                _restore.clear()
