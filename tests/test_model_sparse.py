"""Sparse X through fastnn.MLP (docs/spec.md §2.1): every method that takes X.

A CSR X is read by the first layer's csr kernels, batch by batch, never densified. The
weights of a sparse fit equal the dense fit's up to the first layer's summation order
(§2.1), propagated through training: within §11's bound for whole training runs,
``n lr kappa 2 ulp`` (``whole_run_bound``). Across backends a sparse fit with relu, mse
and Adam is bit-identical, as a dense one is (§11).
"""

import numpy as np
import pytest
import scipy.sparse as sp

import fastnn._backend as backend_module
from _bounds import whole_run_bound
from fastnn import MLP
from fastnn._validation import check_X
from fastnn.optim import Adam

BACKENDS = ("numpy", "numba", "cython")
DTYPES = (np.float32, np.float64)
FORMATS = {
    "csr_matrix": sp.csr_matrix,
    "csr_array": sp.csr_array,
    "csc_matrix": sp.csc_matrix,
    "csc_array": sp.csc_array,
    "coo_matrix": sp.coo_matrix,
    "coo_array": sp.coo_array,
    "lil": sp.lil_matrix,
    "dok": sp.dok_matrix,
    "bsr": sp.bsr_matrix,
    "dia": sp.dia_matrix,
}


def make_data(n=120, p=60, density=0.1, seed=0, dtype=np.float64):
    """A CSR X with empty rows and empty columns, and class labels that depend on it."""
    rng = np.random.default_rng(seed)
    X = sp.random(n, p, density=density, format="csr", dtype=np.float64, rng=rng)
    X.data = rng.standard_normal(X.nnz)
    X = sp.csr_matrix(X.toarray() * (np.arange(n) % 7 != 3)[:, None])  # empty rows
    X = X.astype(dtype)
    w = rng.standard_normal(p)
    y = (X @ w > 0).astype(np.int64)
    return X, y


def fit_pair(X, y, backend, dtype, **kw):
    out = []
    for data in (X, X.toarray()):
        net = MLP(
            [X.shape[1], 16, 2],
            loss="cross_entropy",
            backend=backend,
            dtype=dtype,
            random_state=0,
            **kw,
        )
        net.fit(data, y, epochs=3, batch_size=32)
        out.append(net)
    return out


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("backend", BACKENDS)
def test_sparse_fit_matches_the_dense_fit(backend, dtype):
    X, y = make_data(dtype=dtype)
    sparse, dense = fit_pair(X, y, backend, dtype)
    steps = 3 * -(-X.shape[0] // 32)
    bound = whole_run_bound(steps, 1e-3, np.abs(dense.params).max(), dtype)
    np.testing.assert_allclose(sparse.params, dense.params, rtol=0, atol=bound)
    np.testing.assert_allclose(
        sparse.predict_proba(X), dense.predict_proba(X.toarray()), rtol=0, atol=bound * 10
    )


@pytest.mark.parametrize("backend", BACKENDS)
def test_sparse_fit_with_batch_norm_and_dropout_matches_the_dense_fit(backend):
    X, y = make_data()
    sparse, dense = fit_pair(X, y, backend, np.float64, batch_norm=True, dropout=0.2)
    bound = whole_run_bound(12, 1e-3, np.abs(dense.params).max(), np.float64)
    np.testing.assert_allclose(sparse.params, dense.params, rtol=0, atol=bound)
    np.testing.assert_allclose(sparse.buffers, dense.buffers, rtol=0, atol=bound)


@pytest.mark.parametrize("dtype", DTYPES)
def test_sparse_fit_is_bit_identical_across_backends(dtype):
    """relu, mse and Adam: every kernel on the path is exact across backends (§11)."""
    X, _ = make_data(dtype=dtype)
    y = np.asarray(X.sum(axis=1)).reshape(-1, 1)
    params = []
    for backend in BACKENDS:
        net = MLP([X.shape[1], 8, 1], loss="mse", backend=backend, dtype=dtype, random_state=0)
        net.fit(X, y, epochs=2, batch_size=16)
        params.append(net.params)
    for p in params[1:]:
        np.testing.assert_array_equal(p, params[0])


@pytest.mark.parametrize("backend", BACKENDS)
def test_inference_in_chunks_matches_the_dense_inference(backend, monkeypatch):
    X, y = make_data(n=50)
    net = MLP(
        [X.shape[1], 8, 2], loss="cross_entropy", backend=backend, dtype=np.float64, random_state=0
    )
    dense = net.decision_function(X.toarray())
    monkeypatch.setattr(MLP, "_inference_rows", lambda self, n, sparse=False: 7)
    out = net.decision_function(X)
    k = (X.toarray() != 0).sum(axis=1).max()
    np.testing.assert_allclose(out, dense, rtol=0, atol=1e-12 * (k + 2) * 16)
    np.testing.assert_array_equal(net.predict(X), np.argmax(out, axis=1))
    ev, evd = net.evaluate(X, y), net.evaluate(X.toarray(), y)
    assert ev["accuracy"] == evd["accuracy"]
    assert ev["loss"] == pytest.approx(evd["loss"], rel=1e-12)
    assert net.score(X, y) == net.score(X.toarray(), y)
    np.testing.assert_allclose(net.forward(X, training=True), dense, rtol=0, atol=1e-12)


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_scipy_format_gives_the_csr_results(fmt):
    X, y = make_data(n=40, p=24)
    net = MLP([24, 8, 2], loss="cross_entropy", backend="numba", random_state=0)
    want = net.decision_function(X)
    Xf = FORMATS[fmt](X)
    np.testing.assert_array_equal(net.decision_function(Xf), want)
    a = MLP([24, 8, 2], loss="cross_entropy", backend="numba", random_state=0)
    b = MLP([24, 8, 2], loss="cross_entropy", backend="numba", random_state=0)
    a.fit(X, y, epochs=1, batch_size=8)
    b.fit(Xf, y, epochs=1, batch_size=8)
    np.testing.assert_array_equal(a.params, b.params)


@pytest.mark.parametrize("index_dtype", [np.int32, np.int64])
def test_index_dtypes_and_unsorted_indices(index_dtype):
    X, y = make_data(n=30, p=20)
    X.indices, X.indptr = X.indices.astype(index_dtype), X.indptr.astype(index_dtype)
    net = MLP([20, 4, 2], loss="cross_entropy", backend="cython", dtype=np.float64, random_state=0)
    want = net.decision_function(X.toarray())
    rng = np.random.default_rng(1)
    U = X.copy()
    for i in range(U.shape[0]):  # shuffle each row's entries: unsorted indices
        s, e = U.indptr[i], U.indptr[i + 1]
        perm = rng.permutation(e - s) + s
        U.indices[s:e], U.data[s:e] = U.indices[perm], U.data[perm]
    U.has_sorted_indices = False
    for data in (X, U):
        got = net.decision_function(data)
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-13)
    assert check_X(X, np.float64).indices.dtype == index_dtype


def test_dtype_conversion_and_no_copy():
    X, _ = make_data(n=10, p=8)
    assert check_X(X, np.float64) is X  # CSR of the model's dtype: used as given
    X32 = check_X(X, np.float32)
    assert X32.format == "csr" and X32.dtype == np.float32 and X32 is not X
    Xi = check_X(sp.csr_array(np.eye(3, dtype=np.int64)), np.float32)
    assert isinstance(Xi, sp.csr_array) and Xi.dtype == np.float32
    np.testing.assert_array_equal(Xi.toarray(), np.eye(3))


def test_nothing_is_densified(monkeypatch):
    """Fit, predict and score on CSR never call toarray/todense and never allocate the
    (m, n_features) batch buffer of dense input."""
    X, y = make_data(n=60, p=40)

    def refuse(self, *args, **kwargs):
        raise AssertionError("a sparse matrix was densified")

    for cls in (sp.csr_matrix, sp.csr_array, sp.csc_matrix):
        monkeypatch.setattr(cls, "toarray", refuse)
        monkeypatch.setattr(cls, "todense", refuse)
    net = MLP([40, 8, 2], loss="cross_entropy", backend="numba", random_state=0)
    net.fit(X, y, epochs=2, batch_size=16, validation_split=0.25)
    net.predict(X)
    net.score(sp.csc_matrix(X), y)
    assert all(ws._xb is None for ws in net._train_spaces.values())


@pytest.mark.parametrize("backend", BACKENDS)
def test_checked_internal_calls(backend, monkeypatch):
    """FASTNN_CHECK_KERNELS=1 routes the csr kernels through the checked methods: the
    same weights."""
    X, y = make_data(n=40, p=20)
    a = MLP([20, 6, 2], loss="cross_entropy", backend=backend, random_state=0)
    a.fit(X, y, epochs=2, batch_size=8)
    monkeypatch.setattr(backend_module, "CHECK_INTERNAL_CALLS", True)
    b = MLP([20, 6, 2], loss="cross_entropy", backend=backend, random_state=0)
    b.fit(X, y, epochs=2, batch_size=8)
    np.testing.assert_array_equal(a.params, b.params)
    assert b.kernels._checked_raw is not None


def test_train_step_train_epoch_and_loss_and_gradient_take_csr():
    X, y = make_data(n=40, p=20)
    a = MLP([20, 6, 2], loss="cross_entropy", backend="numba", dtype=np.float64, random_state=0)
    b = MLP([20, 6, 2], loss="cross_entropy", backend="numba", dtype=np.float64, random_state=0)
    la = a.loss_and_gradient(X, y)
    lb = b.loss_and_gradient(X.toarray(), y)
    assert la == pytest.approx(lb, rel=1e-13)
    np.testing.assert_allclose(a.grads, b.grads, rtol=0, atol=1e-14)
    Xc, yc = a.check_data(X, y)
    opt = Adam(1e-3)
    a.train_step(Xc[:8], yc[:8], opt)
    logs = a.train_epoch(Xc, yc, opt, 8, order=np.arange(40)[::-1])
    assert set(logs) == {"loss", "accuracy"}
    with pytest.raises(TypeError, match="X must have dtype float64"):
        a.train_epoch(X.astype(np.float32), yc, opt, 8)
    with pytest.raises(TypeError, match="xb must be a CSR matrix"):
        a.train_step(sp.csc_matrix(Xc[:8]), yc[:8], opt)


def _bad_index_dtype():
    X = sp.csr_matrix(np.eye(3))
    X.indices = X.indices.astype(np.int16)
    return X


def _bad_indptr():
    X = sp.csr_matrix(np.eye(3))
    X.indptr = np.array([0, 2, 1, 3], dtype=X.indptr.dtype)
    return X


def _out_of_range():
    X = sp.csr_matrix(np.eye(3))
    X.indices = np.array([0, 1, 7], dtype=X.indices.dtype)
    return X


def _nan():
    X = sp.csr_matrix(np.eye(3))
    X.data[1] = np.nan
    return X


def _csc_out_of_range():
    X = sp.csc_matrix(np.eye(3))
    X.indices = np.array([0, 1, 9], dtype=X.indices.dtype)
    return X


BAD = [
    (_bad_index_dtype, TypeError, "X.indices must have an index dtype int32 or int64"),
    (_bad_indptr, ValueError, "X.indptr is malformed"),
    (_out_of_range, ValueError, r"X.indices must be column indices in \[0, 3\)"),
    (_csc_out_of_range, ValueError, r"X.indices must be column indices in \[0, 3\)"),
    (_nan, ValueError, "X contains NaN or infinity"),
    (lambda: sp.csr_matrix((2, 4)), ValueError, "X has 4 features, but this model expects 3"),
    (lambda: sp.csr_matrix((0, 3)), ValueError, "X is empty"),
    (lambda: sp.csr_matrix(np.eye(3, dtype=complex)), TypeError, "X must hold real numbers"),
    (lambda: sp.csr_matrix(np.full((1, 3), 1e300)), ValueError, "after conversion to float32"),
]


@pytest.mark.parametrize("make,exc,match", BAD)
def test_bad_sparse_X_is_refused_naming_X(make, exc, match):
    net = MLP([3, 4, 2], loss="cross_entropy", backend="cython", random_state=0)
    for call in (net.predict, lambda X: net.fit(X, np.zeros(X.shape[0], int), epochs=1)):
        with pytest.raises(exc, match=match):
            call(make())


def test_layer_list_models_read_csr_in_their_first_dense_layer():
    """A model given as a list of layers (a bias-free Dense, then BatchNorm and Dropout)
    trains on CSR X as on its dense copy; a first layer that is not Dense cannot read
    CSR rows and is refused with a TypeError naming X."""
    from fastnn.layers import BatchNorm, Dense, Dropout

    X, y = make_data()
    nets = []
    for data in (X, X.toarray()):
        layers = [
            Dense(X.shape[1], 16, bias=False),
            BatchNorm(activation="relu"),
            Dropout(0.1),
            Dense(16, 2),
        ]
        net = MLP(layers, loss="cross_entropy", dtype=np.float64, random_state=0)
        net.fit(data, y, epochs=2, batch_size=32)
        nets.append(net)
    bound = whole_run_bound(8, 1e-3, np.abs(nets[1].params).max(), np.float64)
    np.testing.assert_allclose(nets[0].params, nets[1].params, rtol=0, atol=bound)
    net = MLP([BatchNorm(X.shape[1]), Dense(X.shape[1], 2)], loss="cross_entropy")
    for call in (net.predict, lambda X: net.fit(X, y, epochs=1)):
        with pytest.raises(TypeError, match="X is sparse, which only a Dense first layer"):
            call(X)
    net.fit(X.toarray(), y, epochs=1)  # the dense copy trains


@pytest.mark.parametrize("backend", BACKENDS)
def test_sparse_fit_with_sample_weight_matches_the_dense_fit(backend):
    X, y = make_data()
    w = np.random.default_rng(2).uniform(0.1, 2.0, X.shape[0])
    nets = []
    for data in (X, X.toarray()):
        net = MLP([X.shape[1], 8, 2], loss="cross_entropy", backend=backend,
                  dtype=np.float64, random_state=0)  # fmt: skip
        net.fit(data, y, epochs=2, batch_size=32, sample_weight=w)
        nets.append(net)
    bound = whole_run_bound(8, 1e-3, np.abs(nets[1].params).max(), np.float64)
    np.testing.assert_allclose(nets[0].params, nets[1].params, rtol=0, atol=bound)
    a, b = nets
    Xc, yc = a.check_data(X, y)
    la = a.train_step(Xc[:8], yc[:8], Adam(1e-3), sample_weight=w[:8])
    lb = b.train_step(X[:8].toarray(), yc[:8], Adam(1e-3), sample_weight=w[:8])
    assert la == pytest.approx(lb, rel=1e-9)
