"""Checks of how the Numba backend is built, beyond the equivalence suite.

- Reductions follow NumPy's pairwise order, so where no exp/log is involved the Numba
  kernels equal the reference bit for bit (the suite only bounds the summation order).
- The kernels go into Numba's on-disk cache and a second process loads them: the BLAS
  and NumPy-loop symbols must resolve there, and a kernel that passes a function as an
  argument or calls a recursive one would silently not be cached (or crash on load).
- Every kernel releases the GIL and uses NumPy's error model.
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
        for got, want in zip(nb.dense_backward(x, z, a, da, "identity"),
                             ref.dense_backward(x, z, a, da, "identity")):
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


def test_kernels_are_cached_and_load_in_a_new_process(tmp_path):
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "cache"))
    env.pop("NUMBA_DISABLE_JIT", None)
    src = str(Path(fastnn.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join([src, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    runs = []
    for _ in range(2):
        proc = subprocess.run([sys.executable, "-W", "ignore::UserWarning", "-c", _SCRIPT],
                              capture_output=True, text=True, env=env, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    cold, warm = runs
    assert not any(cold["hits"].values()), cold["hits"]
    assert all(warm["hits"].values()), f"not loaded from the cache: {warm['hits']}"
    assert warm["values"] == cold["values"]


def _kernels():
    for family in fastnn._backend.FAMILIES:
        mod = __import__(f"fastnn._kernels.{family}_numba", fromlist=["__all__"])
        for name in dir(mod):
            obj = getattr(mod, name)
            if isinstance(obj, CPUDispatcher):
                yield f"{family}.{name}", obj


def test_every_kernel_releases_the_gil_and_never_uses_fast_math():
    kernels = dict(_kernels())
    assert "optimizers._adam" in kernels and "dense.dense_forward" in kernels
    for name, fn in kernels.items():
        opts = fn.targetoptions
        assert opts.get("nogil") is True, name
        assert opts.get("error_model") == "numpy", name
        assert type(fn._cache).__name__ != "NullCache", f"{name} is not cached"
        assert not opts.get("fastmath"), name
