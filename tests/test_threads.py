"""One thread policy: the bits of training never depend on the thread count.

Every product is cut into blocks by a rule on its shape alone
(``fastnn.reference.blas.gemm_partition``), each block one single-threaded BLAS call;
the whole-epoch kernels run the blocks on ``n_threads`` threads while BLAS's own pool
is held at one. The shapes below are large enough to be cut (into 2 blocks, with a
shorter last block, and into 4), so these tests see the threaded code run. No timing here:
speed is benchmarks/compare.py's job.
"""

import contextlib
import inspect
import warnings

import numba
import numpy as np
import pytest
from threadpoolctl import threadpool_info, threadpool_limits

import fastnn
from fastnn import _blas, _threads
from fastnn.reference import blas
from fastnn.reference import dense as ref_dense

BACKENDS = ["numpy", "numba", "cython"]
DTYPES = ["float32", "float64"]


def _n_threads_of(args):
    """The n_threads argument of a train_epoch kernel call (bound by the contract's
    signature: the dropout arguments follow it)."""
    from fastnn.reference.training import train_epoch

    return inspect.signature(train_epoch).bind(*args).arguments["n_threads"]


def _scipy_blas_threads():
    return sorted(
        {
            i["num_threads"]
            for i in threadpool_info()
            if i["user_api"] == "blas" and "scipy" in i["filepath"].rsplit("/", 1)[-1]
        }
    )


def test_partition_depends_on_the_shape_only():
    assert blas.gemm_partition(64, 128, 2) == (True, 128)  # small: one block
    assert blas.gemm_partition(128, 256, 784) == (True, 128)  # 51 Mflop: 2 blocks
    assert blas.gemm_partition(1024, 256, 784) == (False, 512)  # rows are longer
    assert blas.gemm_partition(256, 2048, 1024) == (True, 1024)  # 2**30 flop: 2 blocks
    assert blas.gemm_partition(1024, 2048, 2048) == (True, 512)  # 2**33 flop: 4 blocks
    assert blas.gemm_partition(130, 600, 300) == (True, 304)  # last block shorter
    assert blas.gemm_partition(20, 20, 10**6) == (True, 20)  # sides < 2 units: whole


@pytest.mark.parametrize("backend", ["numba", "cython"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "m, n_in, n_out",
    [(130, 300, 600), (512, 80, 600), (16, 20, 1), (256, 700, 100), (1024, 2048, 2048)],
)
def test_dense_kernels_make_the_reference_blocks(backend, dtype, m, n_in, n_out):
    """The backends' products are the reference's blocks, bit for bit (float32 products
    computed whole differ from the blocks, so this sees a wrong partition). The last
    shape's forward product (2**33 flop) is cut in 4."""
    if m * n_in * n_out > 2**30 and dtype == "float64":
        pytest.skip("the 4-block shape once is enough (float32: the partition is shared)")
    raw = fastnn.backend(backend)._raw
    rng = np.random.default_rng(m + n_out)
    x = rng.standard_normal((m, n_in)).astype(dtype)
    w = rng.standard_normal((n_in, n_out)).astype(dtype)
    b = np.zeros(n_out, dtype)
    dz = rng.standard_normal((m, n_out)).astype(dtype)
    with threadpool_limits(1, user_api="blas"):
        for mod in (ref_dense, raw):
            z = np.empty((m, n_out), dtype)
            mod.dense_forward(x, w, b, 0, 0.0, z, z)  # identity: z = x @ w
            dw, db = np.empty((n_in, n_out), dtype), np.empty(n_out, dtype)
            mod.dense_backward(x, z, z, dz.copy(), 0, 0.0, dz.copy(), dw, db)
            dx = np.empty((m, n_in), dtype)
            mod.dense_input_gradient(dz, w, dx)
            if mod is ref_dense:
                want = z, dw, dx
    for got, ref in zip((z, dw, dx), want):
        np.testing.assert_array_equal(got, ref)


def _fit(
    backend,
    dtype,
    sizes,
    n_threads,
    *,
    epoch_kernel=True,
    batch=128,
    n=256,
    epochs=2,
    monkeypatch=None,
):
    rng = np.random.default_rng(1)
    X = rng.standard_normal((n, sizes[0]))
    y = rng.integers(0, sizes[-1], n)
    net = fastnn.MLP(
        sizes,
        "relu",
        loss="cross_entropy",
        dtype=dtype,
        backend=backend,
        random_state=2,
        n_threads=n_threads,
    )
    opt = fastnn.Adam(lr=1e-3, clip_norm=1.0)
    Xc, yc = net.check_data(X, y)
    seen = []
    kernel = net.kernels._raw.train_epoch

    def spy(*args):
        seen.append((_n_threads_of(args), _scipy_blas_threads()))
        return kernel(*args)

    monkeypatch.setattr(net.kernels._raw, "train_epoch", spy)
    for _ in range(epochs):
        net.train_epoch(Xc, yc, opt, batch, on_step=None if epoch_kernel else (lambda j, loss: 0))
    monkeypatch.undo()
    return net, opt, seen


# Products cut along the columns (batch 128: 2 * 128 * 520 * 600 flop, a shorter last
# block; the output layer's products are single blocks), and along the rows (batch 512
# of 400 inputs to 100 units: the forward product and dW, transposed operand).
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("sizes, batch", [([520, 600, 300, 7], 128), ([400, 100, 7], 512)])
def test_epoch_is_the_same_on_one_and_two_threads(backend, dtype, sizes, batch, monkeypatch):
    with threadpool_limits(2, user_api="blas"):
        one, opt1, seen1 = _fit(
            backend, dtype, sizes, 1, batch=batch, n=2 * batch, monkeypatch=monkeypatch
        )
        two, opt2, seen2 = _fit(
            backend, dtype, sizes, 2, batch=batch, n=2 * batch, monkeypatch=monkeypatch
        )
        after = _scipy_blas_threads()
    np.testing.assert_array_equal(one.params, two.params)
    np.testing.assert_array_equal(opt1.state["m"], opt2.state["m"])
    assert opt1.last_grad_norm == opt2.last_grad_norm  # the norm's halves on 2 threads
    # the kernel got the model's count; SciPy's shared BLAS pool was left alone (the
    # products ran on fastnn's private single-threaded instance; the fallback holds the
    # shared pool at one thread meanwhile) and has its own count afterwards
    assert {s[0] for s in seen1} == {1} and {s[0] for s in seen2} == {2}
    during = [2] if _blas.info()["private"] else [1]
    assert all(s[1] == during for s in seen1 + seen2)
    assert after == [2]


@pytest.mark.parametrize("backend", BACKENDS)
def test_epoch_equals_the_step_path_with_one_blas_thread(backend, monkeypatch):
    """The step-by-step path (BLAS on one thread) makes the same blocks."""
    sizes = [520, 600, 300, 7]
    with threadpool_limits(1, user_api="blas"):
        step, _, _ = _fit(
            backend, "float32", sizes, 1, epoch_kernel=False, epochs=1, monkeypatch=monkeypatch
        )
    epoch, _, _ = _fit(backend, "float32", sizes, 2, epochs=1, monkeypatch=monkeypatch)
    np.testing.assert_array_equal(step.params, epoch.params)


@contextlib.contextmanager
def _thread_settings(*, cpus, blas, omp=None, numba_pool=64):
    """Every input of ``_threads.resolve(None, ...)`` set, whatever the host's
    environment and what earlier tests left behind: the CPUs this process may use
    (affinity), the BLAS pool's size, OMP_NUM_THREADS (unset when None) and Numba's
    pool size. Everything is restored on exit."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(_threads, "available_cpus", lambda: cpus)
        mp.setattr(_threads, "blas_threads", lambda: blas)
        if omp is None:
            mp.delenv("OMP_NUM_THREADS", raising=False)
        else:
            mp.setenv("OMP_NUM_THREADS", omp)
        mp.setattr(numba.config, "NUMBA_NUM_THREADS", numba_pool)
        yield


# (cpus, BLAS pool, OMP_NUM_THREADS, Numba pool, backend) -> resolve(None, backend)
RESOLVE_CASES = [
    ((2, 2, None, 64, "numba"), 2),
    ((1, 2, None, 64, "numba"), 1),  # the affinity
    ((4, 1, None, 64, "cython"), 1),  # a BLAS limit (joblib's loky, Dask workers)
    ((4, 3, None, 64, "numpy"), 3),
    ((4, 4, "1", 64, "cython"), 1),  # OMP_NUM_THREADS
    ((4, 4, "3,2", 64, "cython"), 3),  # its first entry (nested levels)
    ((4, 4, "0", 64, "cython"), 4),  # not a positive int: no cap
    ((4, 4, "many", 64, "cython"), 4),
    ((4, 4, None, 2, "numba"), 2),  # Numba's pool size ...
    ((4, 4, None, 2, "cython"), 4),  # ... only for Numba
]


@pytest.mark.parametrize(
    "settings, expected", RESOLVE_CASES, ids=["-".join(map(str, c)) for c, _ in RESOLVE_CASES]
)
def test_default_thread_count_is_the_smallest_limit(settings, expected):
    cpus, blas, omp, pool, backend = settings
    with _thread_settings(cpus=cpus, blas=blas, omp=omp, numba_pool=pool):
        assert _threads.resolve(None, backend) == expected
        assert _threads.resolve(3, backend) == 3  # a count given is used as it is


def test_default_respects_the_blas_limit_and_the_affinity(monkeypatch):
    """n_threads=None inside a worker limited to one thread (joblib's loky and Dask do
    this through threadpoolctl or OPENBLAS_NUM_THREADS) runs on one thread, and on two
    where everything allows two; the kernel gets that count."""
    for limit in (1, 2):
        with _thread_settings(cpus=2, blas=limit):
            _, _, seen = _fit(
                "cython", "float32", [20, 30, 3], None, epochs=1, monkeypatch=monkeypatch
            )
        assert seen and {s[0] for s in seen} == {limit}


def test_numba_thread_count_is_given_back(monkeypatch):
    before = numba.get_num_threads()
    _fit(
        "numba",
        "float32",
        [520, 600, 300, 7],
        min(2, numba.config.NUMBA_NUM_THREADS),
        epochs=1,
        monkeypatch=monkeypatch,
    )
    assert numba.get_num_threads() == before


@pytest.mark.parametrize("bad, error", [(0, ValueError), (True, TypeError), (1.5, TypeError)])
def test_n_threads_is_checked(bad, error):
    with pytest.raises(error, match="n_threads"):
        fastnn.MLP([2, 3], n_threads=bad)
    net = fastnn.MLP([2, 3], n_threads=2)
    assert net.copy().n_threads == 2


def test_estimator_passes_n_threads_to_the_kernel(monkeypatch):
    pytest.importorskip("sklearn")
    seen = []
    est = fastnn.MLPClassifier(
        hidden_layer_sizes=(8,), max_iter=2, n_threads=2, backend="cython", random_state=0
    )
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((64, 4)), rng.integers(0, 2, 64)
    raw = fastnn.backend("cython")._raw
    kernel = raw.train_epoch
    monkeypatch.setattr(
        raw,
        "train_epoch",
        lambda *a: (seen.append((_n_threads_of(a), _scipy_blas_threads())), kernel(*a)),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # max_iter=2 does not converge
        est.fit(X, y)
    # the process's BLAS pools are left as they were (the fallback holds them at one)
    during = _scipy_blas_threads() if _blas.info()["private"] else [1]
    assert seen and {s[0] for s in seen} == {2} and all(s[1] == during for s in seen)
