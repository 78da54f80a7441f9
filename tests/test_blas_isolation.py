"""fastnn's products run on its own single-threaded BLAS instance (fastnn._blas).

OpenBLAS's thread count is one number for the whole process; a product computed on
several BLAS threads has other bits. These tests change that number from the test (as a
user's threadpool_limits, joblib or another library would), train in worker threads and
check that fastnn's results never move.
"""

import os
import subprocess
import sys
import threading
from types import SimpleNamespace

import numpy as np
import pytest
from threadpoolctl import threadpool_info, threadpool_limits

import fastnn
from _reliability_record import record
from fastnn import _blas, _epoch
from fastnn.reference.blas import gemm

BACKENDS = fastnn.available_backends()
_TRAINED = []
# Shapes whose float32 and float64 products differ between 1 and 2 OpenBLAS threads
# (seen on Zen 3 and Skylake-X kernels); others are computed identically either way.
SHAPES = [(128, 256, 784), (1024, 256, 784)]


def _scipy_is_openblas():
    return any(
        p["internal_api"] == "openblas" and "scipy" in p["filepath"] for p in threadpool_info()
    )


def test_the_private_instance_is_used_and_invisible_to_threadpoolctl():
    if not _scipy_is_openblas():
        pytest.skip("SciPy's BLAS is not OpenBLAS: fastnn falls back to it")
    assert _blas.info()["private"] is True
    gemm(np.ones((2, 3)), np.ones((3, 4)), np.empty((2, 4)))
    seen = [p["filepath"] for p in threadpool_info()]
    # The private copy is loaded from /proc/self/fd/N (a memfd): no library of that
    # name is under threadpoolctl's control, so its limits never reach it.
    assert not any(path.startswith("/proc/") or "memfd" in path for path in seen), seen


def _openblas_product(a, b):
    """a @ b in one call of the private OpenBLAS instance's own ?gemm_ (the one behind
    fastnn's own GEMM where that runs, which would take these shapes itself)."""
    out = np.empty((a.shape[0], b.shape[1]), a.dtype)
    fn = _blas._instance().gemm_for(a.dtype, blas_only=True)
    m, k = a.shape
    n = b.shape[1]
    fn(*_blas.gemm_arguments(False, False, m, n, k, a, 0, k, b, 0, n, out, 0, n)[1])
    return out


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("through", ["fastnn", "openblas"])
def test_products_ignore_the_process_wide_blas_thread_count(shape, dtype, through):
    """fastnn's products, and the private OpenBLAS instance's own calls (which fastnn's
    own GEMM hides on AVX-512 hosts), are the same under any process-wide BLAS limit."""
    m, n, k = shape
    rng = np.random.default_rng(0)
    a = rng.standard_normal((m, k)).astype(dtype)
    b = rng.standard_normal((k, n)).astype(dtype)
    outs = []
    for limit in (1, 2, 1, 2):
        with threadpool_limits(limits=limit, user_api="blas"):
            if through == "fastnn":
                outs.append(gemm(a, b, np.empty((m, n), dtype)))
            else:
                outs.append(_openblas_product(a, b))
    for out in outs[1:]:
        np.testing.assert_array_equal(out, outs[0])


def _train(backend, dropout, out):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((512, 784)).astype(np.float32)
    y = rng.integers(0, 10, 512)
    # the dropout model has batch norm too (the test picks the path)
    net = fastnn.MLP(
        [784, 256, 256, 10],
        loss="cross_entropy",
        dropout=dropout,
        batch_norm=dropout > 0,
        random_state=0,
        backend=backend,
        n_threads=1,
    )
    net.fit(X, y, optimizer=fastnn.Adam(lr=1e-3), epochs=1, batch_size=128, verbose=0)
    out.append(net.params.copy())


@pytest.mark.parametrize("dropout", [0.0, 0.2], ids=["compiled-epoch", "step-path"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_a_worker_thread_trains_the_main_threads_bits(backend, dropout, monkeypatch):
    """A worker thread, with another thread flipping the shared BLAS pool between 1 and
    2 threads all along, trains the very weights the main thread trains."""
    if dropout:  # the step-by-step path (dropout and batch norm also run compiled)
        monkeypatch.setattr(_epoch, "supports", lambda model, optimizer: False)
    main = []
    _train(backend, dropout, main)
    stop = threading.Event()
    flips = [0]

    def flip():
        while not stop.is_set():
            with threadpool_limits(limits=1 + flips[0] % 2, user_api="blas"):
                flips[0] += 1

    worker = []
    flipper = threading.Thread(target=flip)
    flipper.start()
    try:
        t = threading.Thread(target=_train, args=(backend, dropout, worker))
        t.start()
        t.join()
    finally:
        stop.set()
        flipper.join()
    assert flips[0] > 0
    np.testing.assert_array_equal(worker[0], main[0])
    _TRAINED.append((backend, dropout))


def test_the_shared_fallback_gives_the_same_bits():
    """FASTNN_SHARED_BLAS=1 calls SciPy's own BLAS (held at one thread while an epoch
    kernel runs): the same products as the private instance, and the same tiling (the
    same core, so the same small-matrix limit)."""
    code = (
        "import numpy as np, fastnn\n"
        "from fastnn import _blas\n"
        "from threadpoolctl import threadpool_limits\n"
        "rng = np.random.default_rng(0)\n"
        "X = rng.standard_normal((256, 784)).astype(np.float32)\n"
        "y = rng.integers(0, 10, 256)\n"
        "with threadpool_limits(limits=1, user_api='blas'):\n"
        "    net = fastnn.MLP([784, 256, 10], loss='cross_entropy', random_state=0)\n"
        "    net.fit(X, y, epochs=1, batch_size=64, verbose=0)\n"
        "print(_blas.info()['private'], net.params.astype(np.float64).sum().hex(),\n"
        "      _blas.info()['kernel'], _blas.small_gemm_mnk())\n"
    )
    outs = []
    for shared in ("1", "0"):
        # The fallback is SciPy's own library: the private instance copies the same file.
        env = {**os.environ, "FASTNN_SHARED_BLAS": shared, "FASTNN_BLAS": "scipy"}
        run = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300
        )
        assert run.returncode == 0, run.stderr
        outs.append(run.stdout.split())
    assert outs[0][0] == "False"
    assert outs[0][1] == outs[1][1]
    assert outs[0][2:] == outs[1][2:]  # kernel name and small-matrix limit


def test_openblas_versions_are_read_from_their_strings():
    assert _blas._version("0.3.34.481.3") == (0, 3, 34)
    assert _blas._version("0.3.30") == (0, 3, 30)
    assert _blas._version("0.3.31.dev") == (0, 3, 31)
    assert _blas._version(None) == ()
    assert _blas._version("unknown") == ()


def _candidates(monkeypatch, tmp_path, scipy, numpy, wheel, choice=None):
    """_openblas_candidates() on fake libraries: SciPy's LP64 and NumPy's ILP64 loaded
    (threadpoolctl's controllers), the wheel's (version or None: not installed)."""
    from fastnn import _threads

    def lib(name):
        path = tmp_path / name
        path.write_bytes(b"")
        return str(path)

    loaded = (
        SimpleNamespace(
            filepath=lib("scipy.libs-libscipy_openblas.so"), version=scipy, internal_api="openblas"
        ),
        SimpleNamespace(
            filepath=lib("numpy.libs-libscipy_openblas64_.so"),
            version=numpy,
            internal_api="openblas",
        ),
    )
    monkeypatch.setattr(_threads, "_blas_controllers", lambda: loaded)
    found = None if wheel is None else (lib("wheel-libscipy_openblas.so"), _blas._version(wheel))
    monkeypatch.setattr(_blas, "_wheel_library", lambda: found)
    if choice is None:
        monkeypatch.delenv("FASTNN_BLAS", raising=False)
    else:
        monkeypatch.setenv("FASTNN_BLAS", choice)
    return [
        (os.path.basename(p).split("-")[0], loaded_) for p, loaded_ in _blas._openblas_candidates()
    ]


def test_the_newest_openblas_is_copied_first(monkeypatch, tmp_path):
    # NumPy's ILP64 library stays in the list: _load_private skips it by its symbols.
    got = _candidates(monkeypatch, tmp_path, "0.3.30", "0.3.31", "0.3.34.481.3")
    assert got == [("wheel", False), ("numpy.libs", True), ("scipy.libs", True)]
    got = _candidates(monkeypatch, tmp_path, "0.3.30", "0.3.31", "0.3.29.0")
    assert got == [("numpy.libs", True), ("scipy.libs", True), ("wheel", False)]
    # a tie: SciPy's own, which is loaded already
    got = _candidates(monkeypatch, tmp_path, "0.3.30", "0.3.30", "0.3.30.0.1")
    assert got == [("scipy.libs", True), ("numpy.libs", True), ("wheel", False)]
    got = _candidates(monkeypatch, tmp_path, "0.3.30", "0.3.31", None)
    assert got == [("numpy.libs", True), ("scipy.libs", True)]


def test_fastnn_blas_scipy_keeps_scipys_library(monkeypatch, tmp_path):
    got = _candidates(monkeypatch, tmp_path, "0.3.30", "0.3.31", "0.3.34", choice="scipy")
    assert got == [("numpy.libs", True), ("scipy.libs", True)]
    got = _candidates(monkeypatch, tmp_path, "0.3.30", "0.3.31", "0.3.34", choice="auto")
    assert got[0] == ("wheel", False)


def test_an_unknown_fastnn_blas_is_refused(monkeypatch, tmp_path):
    with pytest.raises(ValueError, match="FASTNN_BLAS must be 'auto' or 'scipy', got 'mkl'"):
        _candidates(monkeypatch, tmp_path, "0.3.30", "0.3.31", "0.3.34", choice="mkl")


def test_the_wheels_openblas_runs_the_products_when_newer():
    """With the ``openblas`` extra installed (scipy-openblas32), fastnn copies the
    newer of its library and SciPy's; FASTNN_BLAS=scipy keeps SciPy's. Either way every
    backend makes the same calls on it: their trained weights are bit-identical."""
    wheel = _blas._wheel_library()
    if wheel is None or not _scipy_is_openblas():
        pytest.skip("needs scipy-openblas32 (the openblas extra) and SciPy on OpenBLAS")
    code = (
        "import numpy as np, fastnn\n"
        "from fastnn import _blas\n"
        "rng = np.random.default_rng(0)\n"
        "X = rng.standard_normal((256, 300)).astype(np.float32)\n"
        "y = rng.integers(0, 10, 256)\n"
        "params = set()\n"
        "for backend in fastnn.available_backends():\n"
        "    net = fastnn.MLP([300, 256, 10], loss='cross_entropy', random_state=0,\n"
        "                     backend=backend, dtype=np.float32)\n"
        "    net.fit(X, y, epochs=1, batch_size=64, verbose=0)\n"
        "    params.add(net.params.astype(np.float64).sum().hex())\n"
        "i = _blas.info()\n"
        "print(i['private'], i['source'], i['version'], len(params))\n"
    )
    scipy_version = max(
        (
            _blas._version(p.get("version"))
            for p in threadpool_info()
            if p["internal_api"] == "openblas" and "scipy.libs" in p["filepath"]
        ),
        default=None,
    )
    if scipy_version is None:
        pytest.skip("SciPy's OpenBLAS is not a scipy.libs wheel library here")
    outs = {}
    for choice in ("auto", "scipy"):
        env = {**os.environ, "FASTNN_BLAS": choice}
        env.pop("FASTNN_SHARED_BLAS", None)
        run = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300
        )
        assert run.returncode == 0, run.stderr
        outs[choice] = run.stdout.split()
    private, source, version, distinct = outs["auto"]
    assert private == "True" and distinct == "1" and _blas._version(version)
    if wheel[1] > scipy_version:  # (SciPy's at a tie)
        assert source == wheel[0]
    else:
        assert "scipy.libs" in source
    private, source, version, distinct = outs["scipy"]
    assert private == "True" and distinct == "1" and "scipy.libs" in source
    assert _blas._version(version) == scipy_version


def test_the_wheel_is_never_loaded_shared():
    """The wheel's package is found, not imported: its __init__ would load the library
    into the global symbol scope, where SciPy modules imported later would bind to it.
    Only the private copy (a memfd) is mapped."""
    wheel = _blas._wheel_library()
    if wheel is None:
        pytest.skip("needs scipy-openblas32 (the openblas extra)")
    code = (
        "import sys, fastnn\n"
        "from fastnn import _blas\n"
        "_blas.info()\n"
        "maps = open('/proc/self/maps').read()\n"
        "print('scipy_openblas32' in sys.modules, sys.argv[1] in maps)\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", code, wheel[0]], capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["False", "False"]


def test_a_wheel_that_cannot_be_loaded_leaves_scipys_library(monkeypatch, tmp_path):
    if not _scipy_is_openblas() or not hasattr(os, "memfd_create"):
        pytest.skip("needs SciPy on OpenBLAS and memfd_create")
    broken = tmp_path / "libscipy_openblas.so"
    broken.write_bytes(b"not a shared library")
    monkeypatch.setattr(_blas, "_wheel_library", lambda: (str(broken), (99, 0, 0)))
    monkeypatch.delenv("FASTNN_BLAS", raising=False)
    assert _blas._openblas_candidates()[0] == (str(broken), False)
    loaded = _blas._load_private()  # a second private copy of SciPy's library
    assert loaded is not None and loaded.private and "scipy.libs" in loaded.source


def test_info_names_the_library_and_its_release():
    i = _blas.info()
    assert set(i) == {"private", "source", "kernel", "version", "config", "gemm"}
    assert i["gemm"] in ("fastnn", "blas")
    if _scipy_is_openblas():
        assert i["config"].startswith("OpenBLAS ")
        assert _blas._version(i["version"]) == _blas._version(i["config"].split()[1])


def test_blas_isolation_recorded():
    if len(_TRAINED) < 2 * len(BACKENDS):
        pytest.skip("not every case ran in this session")
    record(
        "concurrency.blas_threads",
        "threads",
        "a model trained in a worker thread while another thread keeps switching the "
        "process's BLAS pools between 1 and 2 threads (threadpoolctl), every backend, "
        "compiled epoch and step-by-step (dropout + batch norm) paths",
        len(_TRAINED),
        "weights bit-identical to the same training in the main thread",
    )
