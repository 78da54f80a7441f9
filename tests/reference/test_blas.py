"""fastnn.reference.blas.gemm: row-major products through SciPy's BLAS.

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

from fastnn.reference.blas import gemm
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
