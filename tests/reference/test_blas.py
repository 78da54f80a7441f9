"""fastnn.reference.blas.gemm: row-major products through fastnn's BLAS instance.

gemm is compared with NumPy's ``@`` (a different BLAS build, possibly another blocking
order), so not bit for bit but within the standard forward-error bound of a length-k
dot product: each computed entry satisfies |C_hat - C| <= gamma_k (|A||B|)_ij with
gamma_k = k u / (1 - k u), so two such computations differ by at most
2 gamma_k (|A||B|)_ij; with beta, gamma_(k+2) (|A||B| + |beta| |C0|).
"""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fastnn._blas import gemm_call
from fastnn.reference import blas
from fastnn.reference.blas import GEMM_SMALL_K, gemm
from kernels._support import DTYPES, arrays, finite_floats, sizes


def gamma(k, dtype):
    ku = k * np.finfo(dtype).eps / 2
    return ku / (1 - ku)


def check(a, b, out, trans_a, trans_b, beta, c0):
    opa = a.T if trans_a else a
    opb = b.T if trans_b else b
    a64, b64 = opa.astype(np.float64), opb.astype(np.float64)
    want = (opa @ opb).astype(np.float64) + beta * c0.astype(np.float64)
    kdim = opa.shape[1]
    bound = (
        2
        * gamma(kdim + 2, a.dtype)
        * (np.abs(a64) @ np.abs(b64) + abs(beta) * np.abs(c0.astype(np.float64)))
    )
    # The tiniest values: one subnormal ulp of slack per product term.
    bound += (kdim + 2) * np.finfo(a.dtype).smallest_subnormal
    diff = np.abs(out.astype(np.float64) - want)
    assert np.all(diff <= bound), f"max |diff| {diff.max():.3g}, bound at worst {bound.max():.3g}"


@pytest.mark.parametrize("dtype", DTYPES)
def test_gemm_matches_numpy_matmul(dtype):
    @given(
        dims=st.tuples(sizes(), sizes(), sizes()),
        data=st.data(),
        trans_a=st.booleans(),
        trans_b=st.booleans(),
        beta=st.sampled_from([0.0, 1.0, -0.5]),
    )
    def prop(dims, data, trans_a, trans_b, beta):
        m, kdim, n = dims
        el = finite_floats(dtype, 2.0**20)
        a = data.draw(arrays(dtype, (kdim, m) if trans_a else (m, kdim), el), "a")
        b = data.draw(arrays(dtype, (n, kdim) if trans_b else (kdim, n), el), "b")
        c0 = data.draw(arrays(dtype, (m, n), el), "c0")
        out = c0.copy()
        ret = gemm(a, b, out, trans_a=trans_a, trans_b=trans_b, beta=beta)
        assert ret is out  # written in place, no copy of the result
        check(a, b, out, trans_a, trans_b, beta, c0)

    prop()


@pytest.mark.parametrize("dtype", DTYPES)
def test_gemm_large_and_dense_shapes(dtype):
    """The shapes the dense layer uses: x @ w, x.T @ dz, dz @ w.T."""
    rng = np.random.default_rng(70)
    m, n_in, n_out = 257, 67, 33
    x = rng.standard_normal((m, n_in)).astype(dtype)
    w = rng.standard_normal((n_in, n_out)).astype(dtype)
    dz = rng.standard_normal((m, n_out)).astype(dtype)
    z = np.empty((m, n_out), dtype)
    gemm(x, w, z)
    check(x, w, z, False, False, 0.0, np.zeros_like(z))
    dw = np.empty((n_in, n_out), dtype)
    gemm(x, dz, dw, trans_a=True)
    check(x, dz, dw, True, False, 0.0, np.zeros_like(dw))
    dx = np.empty((m, n_in), dtype)
    gemm(dz, w, dx, trans_b=True)
    check(dz, w, dx, False, True, 0.0, np.zeros_like(dx))


@pytest.mark.parametrize("dtype", DTYPES)
def test_gemm_is_deterministic(dtype):
    """The equivalence suite asserts products bit for bit across backends: the same
    call on the same operands must give the same bits every time."""
    rng = np.random.default_rng(71)
    a = rng.standard_normal((129, 65)).astype(dtype)
    b = rng.standard_normal((65, 31)).astype(dtype)
    first = gemm(a, b, np.empty((129, 31), dtype))
    for _ in range(3):
        np.testing.assert_array_equal(gemm(a, b, np.empty((129, 31), dtype)), first)


def _sequential(a, b, trans_a, trans_b):
    """op(a) @ op(b) element by element in the dtype's scalars, p = 0, 1, ...: the
    order docs/spec.md §10 sets for inner dimensions of 1 to GEMM_SMALL_K."""
    opa, opb = (a.T if trans_a else a), (b.T if trans_b else b)
    out = np.empty((opa.shape[0], opb.shape[1]), a.dtype)
    with np.errstate(all="ignore"):
        for i in range(out.shape[0]):
            for j in range(out.shape[1]):
                s = opa[i, 0] * opb[0, j]
                for p in range(1, opa.shape[1]):
                    s = s + opa[i, p] * opb[p, j]
                out[i, j] = s
    return out


@pytest.mark.parametrize("dtype", DTYPES)
def test_short_inner_dimension_is_summed_in_order(dtype):
    """k <= GEMM_SMALL_K: no BLAS call, each element summed p = 0 .. k - 1, products
    and sums rounded to the dtype: the bits of the scalar loop, and within the
    dot-product bound of the exact product."""

    @given(
        m=st.integers(1, 9),
        n=st.integers(1, 40),
        k=st.integers(1, GEMM_SMALL_K),
        data=st.data(),
        trans_a=st.booleans(),
        trans_b=st.booleans(),
    )
    def prop(m, n, k, data, trans_a, trans_b):
        el = finite_floats(dtype, 2.0**20)
        a = data.draw(arrays(dtype, (k, m) if trans_a else (m, k), el), "a")
        b = data.draw(arrays(dtype, (n, k) if trans_b else (k, n), el), "b")
        out = np.full((m, n), np.nan, dtype)
        gemm(a, b, out, trans_a=trans_a, trans_b=trans_b)
        np.testing.assert_array_equal(
            out.view(np.uint8), _sequential(a, b, trans_a, trans_b).view(np.uint8)
        )
        check(a, b, out, trans_a, trans_b, 0.0, np.zeros_like(out))

    prop()


@pytest.mark.parametrize("dtype", DTYPES)
def test_short_inner_dimension_special_values(dtype):
    """IEEE rules of the sequential sum: NaN and inf propagate (inf * 0 is NaN), an
    exact zero keeps the sign of the first product."""
    a = np.array([[-1.0], [np.inf], [np.nan], [2.0]], dtype)
    b = np.array([[0.0, 1.0, -3.0]], dtype)
    out = gemm(a, b, np.empty((4, 3), dtype))
    np.testing.assert_array_equal(
        out.view(np.uint8), _sequential(a, b, False, False).view(np.uint8)
    )
    assert np.signbit(out[0, 0]) and out[0, 0] == 0  # (-1) * 0 = -0.0
    assert np.isnan(out[1, 0]) and out[1, 1] == np.inf and out[1, 2] == -np.inf
    assert np.isnan(out[2]).all()
    a2 = np.array([[1.0, -1.0]], dtype)  # 1 * 2 + (-1) * 2 = +0.0
    b2 = np.array([[2.0], [2.0]], dtype)
    z = gemm(a2, b2, np.empty((1, 1), dtype))
    assert z[0, 0] == 0 and not np.signbit(z[0, 0])


def test_inner_dimension_past_the_threshold_goes_to_blas(monkeypatch):
    """k = GEMM_SMALL_K + 1 is one BLAS call, not the sequential sum: its bits are
    those of that call made directly (whether they also match the sequential loop
    depends on the host's BLAS kernel, FMA or not, so that is not asserted)."""
    rng = np.random.default_rng(5)
    k = GEMM_SMALL_K + 1
    a = rng.standard_normal((64, k)).astype(np.float32)
    b = rng.standard_normal((k, 64)).astype(np.float32)

    def no_sequential_sum(*args):
        raise AssertionError("gemm_small_k called for k past GEMM_SMALL_K")

    monkeypatch.setattr(blas, "gemm_small_k", no_sequential_sum)
    out = gemm(a, b, np.empty((64, 64), np.float32))
    check(a, b, out, False, False, 0.0, np.zeros_like(out))
    direct = np.empty((64, 64), np.float32)
    gemm_call(False, False, 64, 64, k, a, 0, k, b, 0, 64, direct, 0, 64)
    np.testing.assert_array_equal(out.view(np.uint8), direct.view(np.uint8))
