"""The first dense layer on CSR rows (docs/spec.md §2.1): backends and the dense path.

The three backends sum in the order §2.1 fixes (no BLAS), so z, dw and db are asserted
bit for bit against the reference; a and dz follow the activation's own rule (the
backend's activation kernel, by code: ``check_activation``). Against the dense BLAS
path (the same batch densified, ``dense_forward``/``dense_backward``) the sums are
within the summation-order bound of §2.1 (``dense_bound``).
"""

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from fastnn._kernels import codes
from kernels._support import (
    ALL_BACKENDS,
    COMPILED,
    DTYPES,
    assert_exact,
    assert_within,
    backend,
    case_id,
    check_activation,
    quiet_reference,
    reduction_floats,
    reference,
    rng_array,
    unit_roundoff,
)

ACTIVATIONS = list(codes.ACTIVATION_CODES)
INDEX_DTYPES = (np.int32, np.int64)


def make_csr(rng, n_rows, n_features, density, dtype, index_dtype, *, unsorted=False):
    """A random CSR matrix with its arrays in the given dtypes; ``unsorted`` shuffles
    the entries of every row (a valid CSR matrix whose indices are not sorted)."""
    x = sp.random(n_rows, n_features, density=density, format="csr", dtype=np.float64, rng=rng)
    x.data = rng.standard_normal(x.nnz)
    data, indices = x.data.astype(dtype), x.indices.astype(index_dtype)
    if unsorted:
        for i in range(n_rows):
            s, e = x.indptr[i], x.indptr[i + 1]
            perm = rng.permutation(e - s) + s
            data[s:e], indices[s:e] = data[perm], indices[perm]
    return x.indptr.astype(index_dtype), indices, data


def dense_rows(indptr, indices, data, rows, n_features):
    """X[rows] as a dense array (a repeated column adds, as in the kernels)."""
    x = sp.csr_matrix(
        (data, indices.astype(np.int64), indptr.astype(np.int64)),
        shape=(len(indptr) - 1, n_features),
    )
    return x[np.asarray(rows)].toarray()


def csr_args(indptr, indices, data, rows):
    return {"indptr": indptr, "indices": indices, "data": data, "rows": rows}


def check_backends(name, csr, w, b, da, activation, alpha, err):
    """Forward and backward of backend ``name`` against the reference."""
    fwd = {**csr, "w": w, "b": b, "activation": activation, "alpha": alpha}
    with quiet_reference():
        z_ref, a_ref = reference().csr_dense_forward(**fwd)
    z, a = backend(name).csr_dense_forward(**fwd)
    assert_exact(z, z_ref, "z " + err)
    with quiet_reference():
        a_own = backend(name).activation_forward(z, activation, alpha)
    assert_exact(a, a_own, "a (the backend's activation of its z) " + err)
    check_activation(activation, "forward", a, a_ref, "a " + err)

    bwd = {**csr, "z": z_ref, "a": a_ref, "da": da, "activation": activation, "alpha": alpha}
    with quiet_reference():
        dz_ref, _, _ = reference().csr_dense_backward(**bwd, n_features=w.shape[0])
        dz, dw, db = backend(name).csr_dense_backward(**bwd, n_features=w.shape[0])
        dz_own = backend(name).activation_backward(da, z_ref, a_ref, activation, alpha)
    assert_exact(dz, dz_own, "dz (the backend's activation_backward) " + err)
    check_activation(activation, "backward", dz, dz_ref, "dz " + err, a=a_ref, da=da)
    # dw and db on the backend's own dz: the reference with identity on da = dz.
    with quiet_reference():
        _, dw_ref, db_ref = reference().csr_dense_backward(
            **{**bwd, "da": dz, "activation": "identity"}, n_features=w.shape[0]
        )
    assert_exact(dw, dw_ref, "dw " + err)
    assert_exact(db, db_ref, "db " + err)
    return z_ref, a_ref, dz, dw, db


def dense_bound(x, w, b, dtype):
    """§2.1: |z_csr - z_dense| <= 2 (k + 2) u (sum_p |x_p w_pj| + |b_j|), k the row's
    non-zeros: each order of the k + 1 terms is within gamma_{k+1} of the exact sum
    (a zero of the dense row adds exactly)."""
    k = (x != 0).sum(axis=1, keepdims=True)
    abs_sum = np.abs(x.astype(np.float64)) @ np.abs(w.astype(np.float64)) + np.abs(b)
    return 2.0 * (k + 2) * unit_roundoff(dtype) * abs_sum


def check_dense(csr, n_features, w, b, activation, dtype, err):
    """The CSR layer against the dense (BLAS) layer on the densified batch."""
    x = dense_rows(csr["indptr"], csr["indices"], csr["data"], csr["rows"], n_features)
    k = reference()
    z, a = k.csr_dense_forward(**csr, w=w, b=b, activation=activation)
    zd, _ = k.dense_forward(x.astype(dtype), w, b, activation=activation)
    assert_within(z, zd, dense_bound(x, w, b, dtype), "z vs dense " + err)
    dz = rng_array(np.random.default_rng(5), z.shape, dtype)
    _, dw, db = k.csr_dense_backward(**csr, z=z, a=z, da=dz, n_features=n_features)
    _, dwd, dbd = k.dense_backward(x.astype(dtype), z, z, dz)
    kc = (x != 0).sum(axis=0)[:, None]
    bound_w = 2.0 * (kc + 2) * unit_roundoff(dtype) * (np.abs(x).T @ np.abs(dz.astype(float)))
    assert_within(dw, dwd, bound_w, "dw vs dense " + err)
    m = z.shape[0]
    bound_b = 2.0 * (m + 1) * unit_roundoff(dtype) * np.abs(dz.astype(float)).sum(axis=0)
    assert_within(db, dbd, bound_b, "db vs dense " + err)


@pytest.mark.parametrize("unsorted", [False, True])
@pytest.mark.parametrize("index_dtype", INDEX_DTYPES)
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", COMPILED)
def test_csr_backends(name, dtype, activation, index_dtype, unsorted):
    rng = np.random.default_rng(20)
    indptr, indices, data = make_csr(rng, 30, 23, 0.2, dtype, index_dtype, unsorted=unsorted)
    rows = rng.permutation(30)[:11]
    w = rng_array(rng, (23, 6), dtype, scale=0.3)
    b = rng_array(rng, (6,), dtype, scale=0.1)
    da = rng_array(rng, (11, 6), dtype)
    err = case_id(name, dtype, activation, np.dtype(index_dtype).name, unsorted)
    check_backends(name, csr_args(indptr, indices, data, rows), w, b, da, activation, 0.1, err)


@pytest.mark.parametrize("unsorted", [False, True])
@pytest.mark.parametrize("index_dtype", INDEX_DTYPES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_csr_against_dense(dtype, index_dtype, unsorted):
    rng = np.random.default_rng(21)
    indptr, indices, data = make_csr(rng, 40, 57, 0.1, dtype, index_dtype, unsorted=unsorted)
    rows = rng.permutation(40)[:25]
    w = rng_array(rng, (57, 9), dtype, scale=0.3)
    b = rng_array(rng, (9,), dtype, scale=0.1)
    err = case_id("numpy", dtype, np.dtype(index_dtype).name, unsorted)
    check_dense(csr_args(indptr, indices, data, rows), 57, w, b, "relu", dtype, err)


@st.composite
def csr_cases(draw, dtype):
    """A CSR matrix and a batch: densities from none to full, empty rows and columns,
    batches of zeros, repeated rows and repeated (summed) column indices."""
    n_rows = draw(st.integers(1, 12))
    n_features = draw(st.integers(1, 15))
    n_out = draw(st.integers(1, 7))
    density = draw(st.sampled_from((0.0, 0.05, 0.3, 1.0)))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    index_dtype = draw(st.sampled_from(INDEX_DTYPES))
    indptr, indices, data = make_csr(
        rng, n_rows, n_features, density, dtype, index_dtype, unsorted=draw(st.booleans())
    )
    if draw(st.booleans()) and len(indices):  # a repeated column inside a row
        indices = indices.copy()
        first = np.flatnonzero(np.diff(indptr) >= 2)
        if len(first):
            i = first[0]
            indices[indptr[i] + 1] = indices[indptr[i]]
    if len(data):
        values = draw(st.lists(reduction_floats(dtype), min_size=len(data), max_size=len(data)))
        data = np.array(values, dtype=dtype)
    m = draw(st.integers(1, 9))
    rows = rng.integers(0, n_rows, size=m)
    return csr_args(indptr, indices, data, rows), n_features, n_out, rng


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", COMPILED)
def test_csr_property(name, dtype):
    @settings(deadline=None)
    @given(case=csr_cases(dtype), activation=st.sampled_from(ACTIVATIONS))
    def prop(case, activation):
        csr, n_features, n_out, rng = case
        m = len(csr["rows"])
        w = rng_array(rng, (n_features, n_out), dtype)
        b = rng_array(rng, (n_out,), dtype)
        da = rng_array(rng, (m, n_out), dtype)
        err = case_id(name, dtype, activation, n_features, n_out, csr["rows"])
        check_backends(name, csr, w, b, da, activation, 0.1, err)

    prop()


@pytest.mark.parametrize("dtype", DTYPES)
def test_csr_dense_property(dtype):
    """Normal values (no underflow, where relative bounds fail) on every shape."""

    @settings(deadline=None)
    @given(case=csr_cases(dtype))
    def prop(case):
        csr, n_features, n_out, rng = case
        csr["data"] = rng_array(rng, csr["data"].shape, dtype)
        w = rng_array(rng, (n_features, n_out), dtype)
        b = rng_array(rng, (n_out,), dtype)
        check_dense(csr, n_features, w, b, "identity", dtype, case_id("numpy", dtype))

    prop()


@pytest.mark.parametrize("name", ALL_BACKENDS)
def test_csr_batch_without_nonzeros(name):
    """A batch whose rows store nothing: z = b, dw = 0, db = column sums of dz."""
    indptr = np.array([0, 0, 0, 2], np.int32)
    indices = np.array([0, 3], np.int32)
    data = np.array([1.5, -2.0])
    w = np.arange(12.0).reshape(4, 3)
    b = np.array([0.5, -1.0, 2.0])
    k = backend(name)
    z, a = k.csr_dense_forward(indptr, indices, data, [1, 0], w, b, "relu")
    assert_exact(z, np.tile(b, (2, 1)))
    assert_exact(a, np.maximum(z, 0))
    dw = np.full((4, 3), 7.0)
    dz, dw, db = k.csr_dense_backward(indptr, indices, data, [1, 0], z, z, np.ones((2, 3)), dw=dw)
    assert_exact(dw, np.zeros((4, 3)))
    assert_exact(db, np.full(3, 2.0))
    # an all-empty matrix (no stored entry at all)
    empty = np.zeros(0, np.int64)
    z, _ = k.csr_dense_forward(np.zeros(3, np.int64), empty, np.zeros(0), [0, 1, 1], w, b)
    assert_exact(z, np.tile(b, (3, 1)))


@pytest.mark.parametrize("name", ALL_BACKENDS)
def test_csr_outputs_in_place_and_noncontiguous(name):
    """a may be z, dz may be da; strided outputs are written through."""
    rng = np.random.default_rng(3)
    indptr, indices, data = make_csr(rng, 10, 8, 0.4, np.float64, np.int64)
    w, b = rng_array(rng, (8, 4), np.float64), rng_array(rng, (4,), np.float64)
    k = backend(name)
    want_z, want_a = reference().csr_dense_forward(indptr, indices, data, [2, 5], w, b, "tanh")
    z = np.empty((2, 4))
    out = k.csr_dense_forward(indptr, indices, data, [2, 5], w, b, "identity", z=z, a=z)
    assert out[0] is z and out[1] is z
    zs = np.zeros((2, 8))[:, ::2]
    k.csr_dense_forward(indptr, indices, data, [2, 5], w, b, "tanh", z=zs)
    assert_exact(zs, want_z)
    da = rng_array(rng, (2, 4), np.float64)
    want = reference().csr_dense_backward(
        indptr, indices, data, [2, 5], want_z, want_a, da.copy(), "identity", n_features=8
    )
    dwt = np.zeros((4, 8)).T  # Fortran-ordered output
    dz, dw, db = k.csr_dense_backward(
        indptr, indices, data, [2, 5], want_z, want_a, da, "identity", dz=da, dw=dwt
    )
    assert dz is da and dw is dwt
    for got, exp in zip((dz, dw, db), want):
        assert_exact(got, exp)


def _bad(**change):
    indptr = np.array([0, 2, 3], np.int64)
    indices = np.array([1, 0, 2], np.int64)
    data = np.array([1.0, 2.0, 3.0])
    args = {"indptr": indptr, "indices": indices, "data": data, "rows": [0, 1]}
    args.update(change)
    return args


BAD = [
    (_bad(indices=np.array([1, 0, 2], np.int16)), TypeError, "indices must have an index dtype"),
    (_bad(indptr=np.array([0, 2, 3], np.uint64)), TypeError, "indptr must have an index dtype"),
    (_bad(indptr=np.array([0, 2, 3], np.int32)), TypeError, "share one index dtype"),
    (_bad(indptr=np.array([0, 4, 3])), ValueError, "indptr is malformed"),
    (_bad(indptr=np.array([1, 2, 3])), ValueError, "indptr is malformed"),
    (_bad(indptr=np.array([0, 2, 5])), ValueError, "indptr is malformed"),
    (_bad(indptr=np.array([0, 2, 2])), ValueError, "indptr is malformed"),
    (_bad(indices=np.array([1, 0, 3])), ValueError, r"indices must be column indices in \[0, 3\)"),
    (_bad(indices=np.array([1, -1, 2])), ValueError, "indices must be column indices"),
    (_bad(data=np.array([1.0, 2.0])), ValueError, "data and indices must have the same length"),
    (_bad(data=np.array([1, 2, 3], np.float32)), TypeError, "data has dtype float32"),
    (_bad(data=np.array([1, 2, 3])), TypeError, "data must be float32 or float64"),
    (_bad(rows=[0, 2]), ValueError, r"rows must be row indices of the CSR matrix in \[0, 2\)"),
    (_bad(rows=[]), ValueError, "rows is empty"),
    (_bad(rows=[[0]]), ValueError, "rows must be 1-D"),
    (_bad(rows=[0.0]), TypeError, "rows must hold integer"),
]


@pytest.mark.parametrize("name", ALL_BACKENDS)
@pytest.mark.parametrize("args,exc,match", BAD)
def test_csr_bad_input(name, args, exc, match):
    """Malformed CSR arrays are refused before any kernel reads them."""
    w, b = np.ones((3, 2)), np.zeros(2)
    k = backend(name)
    with pytest.raises(exc, match=match):
        k.csr_dense_forward(**args, w=w, b=b)
    with pytest.raises(exc, match=match):
        k.csr_dense_backward(
            **args, z=np.zeros((2, 2)), a=np.zeros((2, 2)), da=np.zeros((2, 2)), dw=np.zeros((3, 2))
        )


@pytest.mark.parametrize("name", ALL_BACKENDS)
def test_csr_bad_shapes(name):
    k = backend(name)
    args = _bad()
    with pytest.raises(ValueError, match="b must have shape"):
        k.csr_dense_forward(**args, w=np.ones((3, 2)), b=np.zeros(3))
    with pytest.raises(ValueError, match="z must have one row per batch row"):
        k.csr_dense_backward(
            **args, z=np.zeros((3, 2)), a=np.zeros((3, 2)), da=np.zeros((3, 2)), n_features=3
        )
    with pytest.raises(TypeError, match="needs dw or n_features"):
        k.csr_dense_backward(**args, z=np.zeros((2, 2)), a=np.zeros((2, 2)), da=np.zeros((2, 2)))
    with pytest.raises(ValueError, match="dw must have shape"):
        k.csr_dense_backward(
            **args, z=np.zeros((2, 2)), a=np.zeros((2, 2)), da=np.zeros((2, 2)), dw=np.zeros((3, 3))
        )


@pytest.mark.parametrize("name", ALL_BACKENDS)
def test_csr_strided_and_readonly_inputs(name):
    """Strided (non-contiguous) indptr, indices, data and rows, and read-only arrays,
    give the contiguous arrays' results."""
    rng = np.random.default_rng(4)
    indptr, indices, data = make_csr(rng, 12, 9, 0.3, np.float64, np.int64)
    rows = np.array([5, 0, 11, 3])
    w, b = rng_array(rng, (9, 3), np.float64), rng_array(rng, (3,), np.float64)

    def strided(a):
        s = np.zeros(2 * len(a), a.dtype)
        s[::2] = a
        return s[::2]

    def readonly(a):
        a = a.copy()
        a.flags.writeable = False
        return a

    k = backend(name)
    want_z, want_a = reference().csr_dense_forward(indptr, indices, data, rows, w, b, "tanh")
    da = rng_array(rng, (4, 3), np.float64)
    want = reference().csr_dense_backward(
        indptr, indices, data, rows, want_z, want_a, da, "tanh", n_features=9
    )
    for lay in (strided, readonly):
        args = [lay(indptr), lay(indices), lay(data), lay(rows)]
        z, a = k.csr_dense_forward(*args, w, b, "tanh")
        assert_exact(z, want_z, f"{name} {lay.__name__}")
        got = k.csr_dense_backward(*args, want_z, want_a, da, "tanh", n_features=9)
        check_activation("tanh", "backward", got[0], want[0], name, a=want_a, da=da)
        _, dw, db = reference().csr_dense_backward(
            indptr, indices, data, rows, want_z, want_a, got[0], "identity", n_features=9
        )
        assert_exact(got[1], dw, f"{name} {lay.__name__} dw")
        assert_exact(got[2], db, f"{name} {lay.__name__} db")
