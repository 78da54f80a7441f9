"""Quick checks of the Cython backend's build: what the equivalence suite assumes.

The enum in activations_cython.pxd, the names and signatures of every raw kernel, the
C-level API other Cython modules cimport, read-only inputs, the GIL released around
the C call, and sums that follow NumPy's pairwise order past its 128-value block and
8192-value cast buffer (bit for bit: the Cython reductions take NumPy's order).
"""

import importlib
import inspect
import re
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import fastnn
from fastnn._backend import FAMILIES
from fastnn._kernels import codes

KERNELS = Path(codes.__file__).parent
DTYPES = (np.float32, np.float64)


def cython_module(family):
    return importlib.import_module(f"fastnn._kernels.{family}_cython")


def reference_module(family):
    return importlib.import_module(f"fastnn.reference.{family}")


def test_pxd_enum_has_the_values_of_codes_py():
    text = (KERNELS / "activations_cython.pxd").read_text()
    block = re.search(r"cdef enum ActivationCode:\n((?:[ \t]+\w+ = \d+\n)+)", text)
    assert block, "no `cdef enum ActivationCode:` block in activations_cython.pxd"
    declared = {name: int(v) for name, v in re.findall(r"(\w+) = (\d+)", block.group(1))}
    expected = {name.upper(): code for name, code in codes.ACTIVATION_CODES.items()}
    assert declared == expected
    # The values the compiled module actually uses.
    assert cython_module("activations").ACTIVATION_CODES == codes.ACTIVATION_CODES


@pytest.mark.parametrize("family", FAMILIES)
def test_names_and_signatures_match_the_reference(family):
    cy, ref = cython_module(family), reference_module(family)
    assert cy.__all__ == ref.__all__
    for name in ref.__all__:
        got = list(inspect.signature(getattr(cy, name)).parameters)
        want = list(inspect.signature(getattr(ref, name)).parameters)
        assert got == want, f"{family}.{name}: {got} != {want}"


@pytest.mark.parametrize("family", FAMILIES)
def test_every_kernel_has_a_cimportable_c_level_twin(family):
    """c_<name> for float and double is exported for cimport (its .pxd declares it)."""
    cy = cython_module(family)
    exported = set(cy.__pyx_capi__)
    for name in cy.__all__:
        for spec in (0, 1):
            assert f"__pyx_fuse_{spec}c_{name}" in exported, (family, name, spec)
    assert (KERNELS / f"{family}_cython.pxd").is_file()


@pytest.mark.parametrize("dtype", DTYPES)
def test_read_only_inputs_are_accepted(dtype):
    raw = fastnn.backend("cython").raw
    z = np.array([[-1.0, 0.5], [2.0, -0.0]], dtype=dtype)
    w = np.eye(2, dtype=dtype)
    b = np.ones(2, dtype=dtype)
    for arr in (z, w, b):
        arr.flags.writeable = False
    out = np.empty_like(z)
    raw.relu(z.reshape(-1), out.reshape(-1))
    np.testing.assert_array_equal(out, [[0, 0.5], [2, 0]])
    zz, a = np.empty_like(z), np.empty_like(z)
    raw.dense_forward(z, w, b, codes.IDENTITY, 0.0, zz, a)
    np.testing.assert_array_equal(a, z + 1)


def test_kernels_release_the_gil():
    """While a long kernel runs in a thread, the main thread still runs Python."""
    raw = fastnn.backend("cython").raw
    z = np.linspace(-3, 3, 2_000_000)
    out = np.empty_like(z)
    start = time.perf_counter()
    raw.tanh_derivative(z, out)
    alone = time.perf_counter() - start

    worker = threading.Thread(target=lambda: [raw.tanh_derivative(z, out)
                                              for _ in range(4)])
    start = time.perf_counter()
    worker.start()
    time.sleep(alone / 4)  # the worker is now inside its first call
    sum(range(10_000))
    # perf_counter runs once the main thread holds the GIL again. Were the GIL held by
    # the kernel, that would be at the end of the worker's first call at the earliest.
    elapsed = time.perf_counter() - start
    worker.join()
    assert elapsed < 0.75 * alone, (elapsed, alone)


# --- sums in NumPy's order, past the sizes the equivalence suite draws ------------------

def _pair():
    return fastnn.backend("cython"), fastnn.backend("numpy")


def _values(n, dtype, seed, spread=6):
    """Values over many orders of magnitude, so a different order changes the sum."""
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(n) * 10.0 ** rng.uniform(-spread, spread, n)).astype(dtype)


@pytest.mark.parametrize("n", [129, 1000, 8193, 100_003])
@pytest.mark.parametrize("dtype", DTYPES)
def test_float_reductions_are_bit_identical(dtype, n):
    cy, ref = _pair()
    p, y = _values(n, dtype, 1), _values(n, dtype, 2)
    assert cy.mse(p, y) == ref.mse(p, y)
    assert cy.squared_norm(p) == ref.squared_norm(p)
    z, t = _values(n, dtype, 3, spread=1), np.abs(_values(n, dtype, 4, spread=0)) % 1
    assert cy.binary_cross_entropy(z, t) == ref.binary_cross_entropy(z, t)
    logits = _values(n - n % 3, dtype, 5, spread=1).reshape(-1, 3)
    labels = np.random.default_rng(6).integers(0, 3, logits.shape[0])
    assert cy.cross_entropy(logits, labels) == ref.cross_entropy(logits, labels)
    onehot = np.eye(3, dtype=dtype)[labels]
    assert cy.cross_entropy(logits, onehot) == ref.cross_entropy(logits, onehot)


@pytest.mark.parametrize("n_out", [1, 3])
@pytest.mark.parametrize("dtype", DTYPES)
def test_axis0_sums_are_bit_identical(dtype, n_out):
    """db and the batch-norm statistics: pairwise down a single column, else row by row."""
    cy, ref = _pair()
    m = 3001
    x = _values(m * 4, dtype, 7, spread=1).reshape(m, 4)
    w = _values(4 * n_out, dtype, 8, spread=1).reshape(4, n_out)
    z, a = ref.dense_forward(x, w, np.zeros(n_out, dtype), "relu")
    da = _values(m * n_out, dtype, 9).reshape(m, n_out)
    for got, want in zip(cy.dense_backward(x, z, a, da, "relu"),
                         ref.dense_backward(x, z, a, da, "relu")):
        np.testing.assert_array_equal(got, want)
    xb = _values(m * n_out, dtype, 10, spread=2).reshape(m, n_out)
    g, bt = np.ones(n_out, dtype), np.zeros(n_out, dtype)
    stats = [np.zeros(n_out, dtype), np.ones(n_out, dtype)]
    ref_stats = [s.copy() for s in stats]
    got = cy.batch_norm_train(xb, g, bt, *stats)
    want = ref.batch_norm_train(xb, g, bt, *ref_stats)
    for arr_got, arr_want in zip(list(got) + stats, list(want) + ref_stats):
        np.testing.assert_array_equal(arr_got, arr_want)
    for arr_got, arr_want in zip(cy.batch_norm_backward(xb, got[1], g, got[2]),
                                 ref.batch_norm_backward(xb, got[1], g, got[2])):
        np.testing.assert_array_equal(arr_got, arr_want)
