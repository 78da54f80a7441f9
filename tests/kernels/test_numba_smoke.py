"""Checks of how the Numba backend is built, beyond the equivalence suite.

- Reductions follow NumPy's pairwise order, so where no exp/log is involved the Numba
  kernels equal the reference bit for bit (the suite only bounds the summation order).
- The kernels go into Numba's on-disk cache and a second process loads them: the BLAS
  and NumPy-loop symbols must resolve there, and a kernel that passes a function as an
  argument or calls a recursive one would silently not be cached (or crash on load).
- Every kernel releases the GIL and uses NumPy's error model.
- The whole-epoch kernel: Adam's bias corrections are Python's pow, a bad call raises
  ValueError before touching memory, a step allocates nothing, and its variants are
  cached.
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import fastnn
from fastnn._kernels import _numba_common as common

if common.DISABLE_JIT:
    pytest.skip("checks of compiled Numba kernels", allow_module_level=True)

from numba.core.registry import CPUDispatcher  # noqa: E402

DTYPES = (np.float32, np.float64)
LENGTHS = [*range(1, 140), 255, 256, 257, 1000, 8191, 8193, 100_003]


def _values(n, dtype, seed=0):
    rng = np.random.default_rng(seed + n)
    return (rng.standard_normal(n) * rng.choice([1e-3, 1.0, 1e3], n)).astype(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_pairwise_sum_is_numpys_sum(dtype):
    for n in LENGTHS:
        x = _values(n, dtype)
        assert common.pairwise_sum(x, n) == np.sum(x), f"n={n}"


@pytest.mark.parametrize("dtype", DTYPES)
def test_reductions_without_transcendentals_are_exact(dtype):
    """mse (float32 is summed per 8192-element cast buffer), squared_norm, db with one
    and several columns, softmax_backward's row sums, batch-norm statistics."""
    nb, ref = fastnn.backend("numba"), fastnn.backend("numpy")
    for n in (1, 7, 129, 8193, 100_003):
        a, b = _values(n, dtype, 1), _values(n, dtype, 2)
        assert nb.mse(a, b) == ref.mse(a, b), f"mse n={n}"
        assert nb.squared_norm(a) == ref.squared_norm(a), f"squared_norm n={n}"
    for m, k in ((300, 1), (300, 2), (7, 129), (1, 1000)):
        x = _values(m * 5, dtype, 3).reshape(m, 5)
        w = _values(5 * k, dtype, 4).reshape(5, k)
        da = _values(m * k, dtype, 5).reshape(m, k)
        z, a = ref.dense_forward(x, w, np.zeros(k, dtype), "identity")
        for got, want in zip(
            nb.dense_backward(x, z, a, da, "identity"), ref.dense_backward(x, z, a, da, "identity")
        ):
            np.testing.assert_array_equal(got, want, err_msg=f"dense_backward {m}x{k}")
        p = ref.softmax(da)
        np.testing.assert_array_equal(nb.softmax_backward(p, a), ref.softmax_backward(p, a))
        if m >= 2:
            g, be = _values(k, dtype, 6), _values(k, dtype, 7)
            stats = [np.abs(_values(k, dtype, s)) for s in (8, 9, 8, 9)]
            got = nb.batch_norm_train(da, g, be, stats[0], stats[1])
            want = ref.batch_norm_train(da, g, be, stats[2], stats[3])
            for u, v in zip(list(got) + stats[:2], list(want) + stats[2:]):
                np.testing.assert_array_equal(u, v, err_msg=f"batch_norm_train {m}x{k}")


_SCRIPT = textwrap.dedent("""
    import json, warnings
    import numpy as np
    from numba.core.errors import NumbaWarning
    warnings.simplefilter("error", NumbaWarning)  # "Cannot cache ..." fails the run
    import fastnn
    from fastnn._kernels import activations_numba as A, dense_numba as D
    from fastnn._kernels import optimizers_numba as O
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 300))
    w = rng.standard_normal((4, 300))
    dx, t, s = np.empty((3, 4)), np.empty(900), np.empty_like(x)
    D.dense_input_gradient(x, w, dx)  # SciPy's dgemm through a registered symbol
    A.tanh(x.ravel(), t)               # NumPy's tanh loop through a registered symbol
    A.softmax(x, s)                    # pairwise sums longer than one block
    n = O.squared_norm(x.ravel())
    print(json.dumps({
        "values": [dx.tolist(), t.tolist(), s.tolist(), n],
        "hits": {f.__name__: sum(f.stats.cache_hits.values())
                 for f in (D.dense_input_gradient, A.tanh, A.softmax, O.squared_norm)},
    }))
""")


def _run_twice_with_a_fresh_cache(script, tmp_path, timeout):
    """Run `script` in two new processes sharing one empty Numba cache; return the JSON
    each printed last (the first compiles, the second should load from the cache)."""
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "cache"))
    env.pop("NUMBA_DISABLE_JIT", None)
    src = str(Path(fastnn.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join([src, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    runs = []
    for _ in range(2):
        proc = subprocess.run(
            [sys.executable, "-W", "ignore::UserWarning", "-c", script],
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    return runs


def test_kernels_are_cached_and_load_in_a_new_process(tmp_path):
    cold, warm = _run_twice_with_a_fresh_cache(_SCRIPT, tmp_path, timeout=600)
    assert not any(cold["hits"].values()), cold["hits"]
    assert all(warm["hits"].values()), f"not loaded from the cache: {warm['hits']}"
    assert warm["values"] == cold["values"]


def _kernels():
    from fastnn._kernels import codes
    from fastnn._kernels.training_numba import _make_epoch

    for family in (*fastnn._backend.FAMILIES, "training"):
        mod = __import__(f"fastnn._kernels.{family}_numba", fromlist=["__all__"])
        for name in dir(mod):
            obj = getattr(mod, name)
            if isinstance(obj, CPUDispatcher):
                yield f"{family}.{name}", obj
    yield "training.epoch", _make_epoch(codes.LOSS_MSE, (True,) * 8)


def test_every_kernel_releases_the_gil_and_never_uses_fast_math():
    kernels = dict(_kernels())
    assert "optimizers._adam" in kernels and "dense.dense_forward" in kernels
    for name, fn in kernels.items():
        opts = fn.targetoptions
        assert opts.get("nogil") is True, name
        assert opts.get("error_model") == "numpy", name
        assert type(fn._cache).__name__ != "NullCache", f"{name} is not cached"
        assert not opts.get("fastmath"), name


# --- the whole-epoch kernel (training_numba) ---------------------------------------------


def _epoch_args(
    monkeypatch, n=50, batch=16, loss="cross_entropy", dtype="float32", batch_norm=False
):
    """The arguments fastnn._epoch passes to train_epoch for a small model, as a list,
    and the names of training_numba._ARGS."""
    from fastnn._kernels import training_numba as T
    from fastnn.optim import Adam

    rng = np.random.default_rng(0)
    X = rng.standard_normal((n, 5))
    y = rng.integers(0, 3, n)
    net = fastnn.MLP(
        [5, 8, 3],
        ["relu"],
        loss=loss,
        dtype=dtype,
        batch_norm=batch_norm,
        backend="numba",
        random_state=0,
    )
    X, y = net.check_data(X, y)
    seen = []
    kernel = net.kernels._raw.train_epoch
    monkeypatch.setattr(net.kernels._raw, "train_epoch", lambda *a: (seen.append(a), kernel(*a))[1])
    net.train_epoch(X, y, Adam(), batch)
    monkeypatch.undo()
    return list(seen[0]), [name for name, _ in T._ARGS]


def test_bias_correction_is_pythons_pow():
    """Adam's 1 - beta^t inside the epoch kernel equals the step path's Python
    ``1.0 - beta ** t`` (C pow) for every t up to 10^6: Numba's float ** int would
    multiply repeatedly and differ in the last bits."""
    from numba import njit

    from fastnn._kernels.optimizers_numba import _correction as _bias_correction

    @njit
    def corrections(beta, n, out):
        for t in range(1, n + 1):
            out[t - 1] = _bias_correction(beta, t)

    n = 1_000_000
    out = np.empty(n)
    for beta in (0.9, 0.999, 0.99, 0.95, 0.5, 0.123456789):
        corrections(beta, n, out)
        want = np.array([1.0 - beta**t for t in range(1, n + 1)])
        bad = np.flatnonzero(out.view(np.int64) != want.view(np.int64))
        assert bad.size == 0, f"beta={beta}: t={bad[:5] + 1}"


def test_train_epoch_refuses_bad_calls_without_touching_memory(monkeypatch):
    train_epoch = fastnn.backend("numba")._train_epoch  # the checked tier

    good, names = _epoch_args(monkeypatch)
    g = dict(zip(names, good))
    ro = g["params"].copy()
    ro.flags.writeable = False
    # A wrongly typed call fails to compile (about a second each): a few of those, then
    # values that compile but do not fit the buffers.
    bad = {
        "X": [g["X"].astype(np.float64), np.asfortranarray(g["X"]), g["X"][:, :4].copy()],
        "batch_size": [True, 0],
        "lowest": [5],
        "loss_code": [7],
        "opt_code": [9],
        "ws": [g["ws"][:10]],
        "order": [g["order"][:10], np.full(50, 99, np.int64)],
        "labels": [np.full(50, 7, np.int64)],
        "segments": [np.array([[0, 10**6, 0]], np.int64), np.array([[5, 2, 0]], np.int64)],
        "state2": [np.zeros(0, np.float32)],
        "batch_stop": [100],
        "batch_start": [-1],
        "params": [np.zeros(3, np.float32), ro],
        "stats": [np.zeros(2)],
        "hyper": [np.zeros(5)],
        "lrs": [np.zeros(1)],
        "dims": [np.array([5, 8, 4], np.int64)],
        "w_off": [np.array([0, 10**9], np.int64), np.array([-1, 0], np.int64)],
        "ws_off": [g["ws_off"][:3], np.array([0, 0, 0, 0, 0, 10**9, 0, 0], np.int64)],
        "acts": [np.array([4, 99], np.int64)],
    }
    before = {name: np.copy(v) for name, v in g.items() if isinstance(v, np.ndarray)}
    for name, values in bad.items():
        for value in values:
            args = list(good)
            args[names.index(name)] = value
            with pytest.raises(ValueError, match="train_epoch"):
                train_epoch(*args)
            for key, arr in before.items():
                np.testing.assert_array_equal(g[key], arr, err_msg=f"{name} changed {key}")


@pytest.mark.parametrize("batch_norm", [False, True])
def test_train_epoch_allocates_nothing_per_step(monkeypatch, batch_norm):
    """The epoch kernel is compiled without Numba's runtime: its scratch comes from the
    caller (allocated once per call, in Python), so no call allocates an NRT block, for
    1 batch or 13 (batch normalisation's scratch included)."""
    from numba.core.runtime import _nrt_python as nrt

    from fastnn._kernels.training_numba import train_epoch

    args, names = _epoch_args(monkeypatch, n=200, batch=15, batch_norm=batch_norm)
    start, stop = names.index("batch_start"), names.index("batch_stop")
    counts = []
    enabled = nrt.memsys_stats_enabled()
    nrt.memsys_enable_stats()
    try:
        for n_batches in (1, 13, 1):
            args[start], args[stop] = 0, n_batches
            before = nrt.memsys_get_stats_alloc()
            train_epoch(*args)
            counts.append(nrt.memsys_get_stats_alloc() - before)
    finally:
        if not enabled:
            nrt.memsys_disable_stats()
    assert counts == [0, 0, 0], counts


_EPOCH_SCRIPT = textwrap.dedent("""
    import json, warnings
    import numpy as np
    from numba.core.errors import NumbaWarning
    warnings.simplefilter("error", NumbaWarning)  # "Cannot cache ..." fails the run
    import fastnn
    from fastnn._kernels import training_numba as T
    rng = np.random.default_rng(0)
    X = rng.standard_normal((40, 3))
    y = rng.integers(0, 2, 40)
    net = fastnn.MLP([3, 6, 2], "tanh", loss="cross_entropy", backend="numba",
                     random_state=1)
    hist = fastnn.fit(net, X, y, optimizer="adam", epochs=2, batch_size=8)
    kernels = list(T._VARIANTS.values())
    print(json.dumps({
        "params": net.params.tolist(), "loss": hist.history["loss"],
        "hits": [sum(k.stats.cache_hits.values()) for k in kernels],
    }))
""")


def test_epoch_kernel_is_cached_and_loads_in_a_new_process(tmp_path):
    """Each (loss, activations) variant is a closure: Numba caches it by its captured
    constants, and a second process must load it instead of compiling again."""
    cold, warm = _run_twice_with_a_fresh_cache(_EPOCH_SCRIPT, tmp_path, timeout=900)
    assert cold["hits"] == [0], cold["hits"]
    assert warm["hits"] == [1], f"not loaded from the cache: {warm['hits']}"
    assert warm["params"] == cold["params"] and warm["loss"] == cold["loss"]


_PY_MODE_SCRIPT = textwrap.dedent("""
    import numpy as np
    import fastnn
    from fastnn import _epoch
    from fastnn.optim import Adam

    rng = np.random.default_rng(0)
    X = rng.standard_normal((40, 3))
    labels = rng.integers(0, 3, 40)
    supports = _epoch.supports
    for acts, loss, y in ((["tanh", "softmax"], "cross_entropy", labels),
                          ("relu", "binary_cross_entropy", np.eye(3)[labels])):
        runs = []
        for epoch_kernel in (True, False):
            net = fastnn.MLP([3, 5, 4, 3], acts, loss=loss, backend="numba",
                             random_state=0)
            X_, y_ = net.check_data(X, y)
            opt = Adam(lr=0.05, clip_norm=0.3)
            _epoch.supports = supports if epoch_kernel else (lambda model, optimizer: False)
            logs = [net.train_epoch(X_, y_, opt, 16, shuffle=shuffle)
                    for shuffle in (True, False)]
            runs.append((net.params, logs))
        _epoch.supports = supports
        assert np.array_equal(runs[0][0], runs[1][0]), (acts, loss)
        assert runs[0][1] == runs[1][1], (acts, loss)
    print("ok")
""")


def test_epoch_kernel_runs_as_python(tmp_path):
    """training_numba with NUMBA_DISABLE_JIT=1 (as coverage sees it) equals the step
    path too."""
    env = dict(os.environ, NUMBA_DISABLE_JIT="1", NUMBA_CACHE_DIR=str(tmp_path / "c"))
    src = str(Path(fastnn.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join([src, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    proc = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", _PY_MODE_SCRIPT],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-3000:]


def test_the_on_disk_cache_never_maps_a_key_to_another_entrys_code(tmp_path):
    """Two processes compiling different overloads of one kernel at once each read the
    index before the other wrote it. Numba's numbered data files then both take number
    1, and the index left by one can point at the other's machine code (a segfault on
    the next load; seen when the reliability tests' subprocesses compiled the epoch
    kernel's variants together). fastnn's keyed names keep every entry in its own file."""
    from numba.core.caching import IndexDataCacheFile

    def race(cls):
        where = tmp_path / cls.__name__
        where.mkdir()
        first, second = (cls(str(where), "kernel-1", "stamp") for _ in "ab")
        first._load_index = second._load_index = dict  # both saw the empty index
        first.save("key a", "code a")
        second.save("key b", "code b")
        reader = cls(str(where), "kernel-1", "stamp")
        return {key: reader._load_data(name) for key, name in reader._load_index().items()}

    # Numba's own files: both entries took data file 1 (here the last writer wrote
    # both its index and its data; had the other's data landed last, "key b" would
    # load "code a")
    assert race(IndexDataCacheFile) == {"key b": "code b"}
    assert len(list((tmp_path / "IndexDataCacheFile").glob("*.nbc"))) == 1
    # keyed: one data file per key, so no interleaving can cross the entries; the
    # lost index entry is only a future recompilation
    assert race(common.KeyedCacheFile) == {"key b": "code b"}
    assert len(list((tmp_path / "KeyedCacheFile").glob("kernel-1.*.nbc"))) == 2
    # fastnn's kernels use the keyed files
    for kernel in (common.pairwise_sum, common.gemm):
        assert type(kernel._cache._cache_file) is common.KeyedCacheFile


_CALLER_SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np
    from fastnn._kernels import _numba_common as common
    from fastnn.reference.blas import gemm
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((256, 256)), rng.standard_normal((256, 256))
    rows, cols = common.gemm_tile_grid(256, 256, 256)
    assert rows * cols > 1, (rows, cols)  # the tile loop, not a single call
    out, want = np.empty((256, 256)), np.empty((256, 256))
    gemm(a, b, want)
    if sys.argv[1] == "callee":
        common._gemm_parallel(a, b, out, False, False, rows, cols)
    else:
        common.gemm_threads(a, b, out, False, False, 1)  # one thread
    print(json.dumps({
        "equal": bool(np.array_equal(out, want)),
        "hits": {f.__name__: sum(f.stats.cache_hits.values())
                 for f in (common._gemm_parallel, common.gemm_threads)},
    }))
""")


def test_a_kernel_compiled_against_a_cached_parallel_callee_loads_in_a_new_process(tmp_path):
    """A kernel with a parallel loop saves, with its machine code, a function that
    starts Numba's threading layer when a new process loads it; its callers inherit it.
    Numba forgot it for a callee that came from the cache, so a process that found
    ``_gemm_parallel`` cached and compiled ``gemm_threads`` (or the epoch kernel, after
    the test suite had cached its callees) saved an entry whose next load crashed with
    a segmentation fault, even on one thread. Three processes sharing one cache:
    compile the parallel callee alone, compile its caller (finding the callee cached),
    load the caller."""
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "cache"))
    env.pop("NUMBA_DISABLE_JIT", None)
    src = str(Path(fastnn.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join([src, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    runs = []
    for what in ("callee", "caller", "caller"):
        proc = subprocess.run(
            [sys.executable, "-W", "ignore::UserWarning", "-c", _CALLER_SCRIPT, what],
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
        )
        # a negative status is a signal: -11 a segfault
        assert proc.returncode == 0, f"{what}: status {proc.returncode}\n{proc.stderr[-3000:]}"
        runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    assert all(run["equal"] for run in runs), runs
    # the caller was compiled against the cached callee, then loaded from the cache
    assert runs[1]["hits"] == {"_gemm_parallel": 1, "gemm_threads": 0}, runs[1]
    assert runs[2]["hits"]["gemm_threads"] == 1, runs[2]


def test_indexes_written_before_the_reload_fix_are_not_trusted(tmp_path):
    """Caches written by an earlier fastnn can hold entries saved without their reload
    functions (see the test above): an index without fastnn's format tag is ignored."""
    from numba.core.caching import IndexDataCacheFile

    old = IndexDataCacheFile(str(tmp_path), "kernel-1", "stamp")
    old.save("key", "code")
    assert old._load_index() == {"key": "kernel-1.1.nbc"}
    assert common.KeyedCacheFile(str(tmp_path), "kernel-1", "stamp")._load_index() == {}
    for kernel in (common.gemm_threads, common._gemm_parallel):
        assert type(kernel._cache._impl) is common.ReloadingCacheImpl
        assert kernel._cache._cache_file._version[1] == common.KeyedCacheFile.FORMAT


def test_cache_tag_follows_every_kernel_source(tmp_path):
    """A change to any kernel source (not only the cached function's own file, the one
    Numba checks) or to the BLAS's small-matrix limit (the tiling rule's
    GEMM_SMALL_MNK) gives the cache index another tag, and an index written under
    another tag is not trusted: a kernel cached before a fix to a helper it inlines
    never runs the old helper. So does whether the own GEMM runs (GEMM_OWN,
    which FASTNN_GEMM sets: its tiling rule is compiled in)."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.py").write_text("x = 1\n")
    (src / "b.py").write_text("y = 2\n")
    before = common.sources_digest(src)
    (src / "b.py").write_text("y = 3\n")
    assert common.sources_digest(src) != before
    # the sources' digest, then the tiling rule's small-matrix limit and own GEMM
    digest = common.sources_digest(*common.SOURCE_PATHS)
    assert common.sources_tag(*common.SOURCE_PATHS) == digest
    # a source that cannot be read as a file (a zip import) gives the fixed tag
    assert common.sources_tag(src, tmp_path / "missing.py") == "unread"
    tail = f"-{digest}-{common.GEMM_SMALL_MNK}-{int(common.GEMM_OWN)}"
    assert common.KeyedCacheFile.FORMAT.endswith(tail)
    here = Path(common.__file__).resolve().parent
    assert here in common.SOURCE_PATHS and here.parent / "reference" in common.SOURCE_PATHS
    stale = common.KeyedCacheFile(str(tmp_path), "kernel-1", "stamp")
    stale._version = (stale._version[0], "fastnn-keyed-2-" + before)
    stale.save("key", "code")
    assert "key" in stale._load_index()  # read back under its own tag
    assert common.KeyedCacheFile(str(tmp_path), "kernel-1", "stamp")._load_index() == {}

    # a key's data file is named after the tag too: a process under another tag (the
    # small-matrix limit of another BLAS core) never writes code under a listed name
    class OtherTag(common.KeyedCacheFile):
        FORMAT = common.KeyedCacheFile.FORMAT + "-other"

    names = []
    for cls, where in ((common.KeyedCacheFile, "one"), (OtherTag, "two")):
        (tmp_path / where).mkdir()
        cache = cls(str(tmp_path / where), "kernel-2", "stamp")
        cache.save("key", "code")
        names.append(cache._load_index()["key"])
    assert names[0] != names[1]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("k", [1, 2, 3, 4, 5])
def test_small_k_forward_is_the_product_then_the_pass(k, dtype):
    """The epoch kernel's fused forward (a short inner dimension, relu) gives the
    reference's dense_forward bits, zeros of both signs, infinities and NaN included,
    and declines (touching nothing) other inner dimensions and activations."""
    from fastnn._kernels import codes
    from fastnn._kernels.dense_numba import small_k_forward
    from fastnn.reference.dense import dense_forward

    rng = np.random.default_rng(k)
    x = rng.standard_normal((21, k)).astype(dtype)
    w = rng.standard_normal((k, 67)).astype(dtype)
    b = rng.standard_normal(67).astype(dtype)
    x[0, 0], x[1, -1], w[0, 2], b[3], b[4] = np.nan, np.inf, -np.inf, -0.0, np.nan
    z_ref, a_ref = np.empty((21, 67), dtype), np.empty((21, 67), dtype)
    with np.errstate(all="ignore"):
        dense_forward(x, w, b, codes.RELU, 0.0, z_ref, a_ref)
    z, a = np.full((21, 67), 7, dtype), np.full((21, 67), 7, dtype)
    done = small_k_forward(x, w, b, z, a, codes.RELU, 0.0)
    assert done == (k <= 4)
    if done:
        np.testing.assert_array_equal(z, z_ref)
        np.testing.assert_array_equal(a, a_ref)
        assert (np.signbit(z) == np.signbit(z_ref)).all()
        # the activation written over z (the epoch workspace's alias): a's bits
        za = np.full((21, 67), 7, dtype)
        assert small_k_forward(x, w, b, za, za, codes.RELU, 0.0)
        np.testing.assert_array_equal(za, a_ref)
        assert (np.signbit(za) == np.signbit(a_ref)).all()
    else:
        assert (z == 7).all() and (a == 7).all()
    assert not small_k_forward(x, w, b, z, a, codes.TANH, 0.0) or k > 4


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("k", [1, 2, 3, 4, 5])
def test_small_k_backward_is_the_product_then_the_pass(k, dtype):
    """The epoch kernel's fused backward (the input gradient through a short product,
    then the relu layer's pass and db) gives the reference's dense_input_gradient and
    activation pass bits, over more than one panel of columns, zeros of both signs,
    infinities and NaN included; it declines other inner dimensions and activations."""
    from fastnn._kernels import codes
    from fastnn._kernels.dense_numba import small_k_backward
    from fastnn.reference.dense import dense_backward, dense_input_gradient

    rng = np.random.default_rng(k)
    m, n = 21, 300  # 300 columns: two panels of the stack (256 columns each)
    g = rng.standard_normal((m, k)).astype(dtype)
    w = rng.standard_normal((n, k)).astype(dtype)
    z = rng.standard_normal((m, n)).astype(dtype)
    g[0, 0], g[1, -1], w[2, 0], z[3, 3], z[4, 4], z[5, 5] = (
        np.nan,
        np.inf,
        -np.inf,
        -0.0,
        0.0,
        np.nan,
    )
    da = np.empty((m, n), dtype)
    dz_ref, dw_ref, db_ref = np.empty((m, n), dtype), np.empty((1, n), dtype), np.empty(n, dtype)
    with np.errstate(all="ignore"):
        dense_input_gradient(g, w, da)
        dense_backward(np.ones((m, 1), dtype), z, z, da, codes.RELU, 0.0, dz_ref, dw_ref, db_ref)
    dz, db = np.full((m, n), 7, dtype), np.full(n, 7, dtype)
    done = small_k_backward(g, w, z, dz, db, codes.RELU)
    assert done == (k <= 4)
    if done:
        np.testing.assert_array_equal(dz, dz_ref)
        np.testing.assert_array_equal(db, db_ref)
        assert (np.signbit(dz) == np.signbit(dz_ref)).all()
    else:
        assert (dz == 7).all() and (db == 7).all()
    assert not small_k_backward(g, w, z, dz, db, codes.TANH) or k > 4
