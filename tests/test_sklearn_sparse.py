"""Sparse X through fastnn.MLPClassifier / MLPRegressor (docs/spec.md §2.1).

scikit-learn's own sparse checks run in tests/test_sklearn.py (the estimators' sparse
tag is True, so check_estimator_sparse_array / _matrix must fit and predict every
format). Here: a sparse fit gives the dense fit's weights up to the first layer's
summation order, whatever the format, the index dtype or the backend; partial_fit,
early stopping (rows of the CSR) and every prediction method take sparse X; bad sparse
X is refused with an error naming X.
"""

import warnings

import numpy as np
import pytest
import scipy.sparse as sp

pytest.importorskip("sklearn")

from sklearn.exceptions import ConvergenceWarning  # noqa: E402

from fastnn import MLPClassifier, MLPRegressor  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

BACKENDS = ("numpy", "numba", "cython")


def make_data(n=150, p=80, density=0.08, seed=0):
    rng = np.random.default_rng(seed)
    X = sp.random(n, p, density=density, format="csr", rng=rng)
    X.data = rng.standard_normal(X.nnz)
    w = rng.standard_normal(p)
    score = X @ w
    return X, (score > np.median(score)).astype(int), score


def parity_bound(est, dtype=np.float64):
    """§11's bound for whole training runs, n lr kappa 2 ulp (kappa = 1e4), over the
    steps the fit made."""
    steps = est.n_iter_ * -(-150 // 200) if hasattr(est, "n_iter_") else 1
    scale = max(np.abs(c).max() for c in est.coefs_)
    return max(steps, 1) * est.learning_rate_init * 1e4 * 2 * float(np.spacing(dtype(scale)))


def assert_same_fit(a, b):
    bound = parity_bound(b)
    for ca, cb in zip(a.coefs_ + a.intercepts_, b.coefs_ + b.intercepts_):
        np.testing.assert_allclose(ca, cb, rtol=0, atol=bound)
    assert a.n_iter_ == b.n_iter_
    np.testing.assert_allclose(a.loss_curve_, b.loss_curve_, rtol=1e-9)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("fmt", ["csr_matrix", "csr_array", "csc_matrix", "coo_array"])
def test_classifier_sparse_fit_matches_dense(backend, fmt):
    X, y, _ = make_data()
    Xs = getattr(sp, fmt)(X)
    kw = dict(hidden_layer_sizes=(12,), max_iter=6, random_state=0, backend=backend)
    a = MLPClassifier(**kw).fit(Xs, y)
    b = MLPClassifier(**kw).fit(X.toarray(), y)
    assert_same_fit(a, b)
    Xd = X.toarray()
    np.testing.assert_allclose(a.predict_proba(Xs), b.predict_proba(Xd), rtol=0, atol=1e-12)
    np.testing.assert_allclose(
        a.predict_log_proba(Xs), b.predict_log_proba(Xd), rtol=1e-12, atol=1e-12
    )
    np.testing.assert_array_equal(a.predict(Xs), b.predict(Xd))
    assert a.score(Xs, y) == b.score(Xd, y)


@pytest.mark.parametrize("solver", ["sgd", "adam", "lbfgs"])
def test_regressor_sparse_fit_matches_dense(solver):
    X, _, score = make_data()
    kw = dict(hidden_layer_sizes=(10,), solver=solver, max_iter=8, random_state=0)
    a = MLPRegressor(**kw).fit(X, score)
    b = MLPRegressor(**kw).fit(X.toarray(), score)
    for ca, cb in zip(a.coefs_ + a.intercepts_, b.coefs_ + b.intercepts_):
        np.testing.assert_allclose(ca, cb, rtol=0, atol=1e-9)
    np.testing.assert_allclose(a.predict(X), b.predict(X.toarray()), rtol=0, atol=1e-9)
    assert a.score(X, score) == pytest.approx(b.score(X.toarray(), score), abs=1e-9)


def test_early_stopping_splits_rows_of_the_csr():
    X, y, _ = make_data()
    kw = dict(hidden_layer_sizes=(12,), early_stopping=True, max_iter=8, random_state=0)
    a = MLPClassifier(**kw).fit(X, y)
    b = MLPClassifier(**kw).fit(X.toarray(), y)
    assert_same_fit(a, b)
    np.testing.assert_allclose(a.validation_scores_, b.validation_scores_, rtol=0, atol=0)


@pytest.mark.parametrize("index_dtype", [np.int32, np.int64])
def test_partial_fit_and_index_dtypes(index_dtype):
    X, y, _ = make_data()
    X.indices, X.indptr = X.indices.astype(index_dtype), X.indptr.astype(index_dtype)
    a = MLPClassifier(hidden_layer_sizes=(8,), random_state=0)
    b = MLPClassifier(hidden_layer_sizes=(8,), random_state=0)
    for _ in range(3):
        a.partial_fit(X, y, classes=[0, 1])
        b.partial_fit(X.toarray(), y, classes=[0, 1])
    assert_same_fit(a, b)


def test_float32_sparse_trains_in_float32():
    X, y, _ = make_data()
    a = MLPClassifier(hidden_layer_sizes=(8,), max_iter=3, random_state=0).fit(
        X.astype(np.float32), y
    )
    assert a.coefs_[0].dtype == np.float32
    b = MLPClassifier(hidden_layer_sizes=(8,), max_iter=3, random_state=0).fit(
        X.toarray().astype(np.float32), y
    )
    for ca, cb in zip(a.coefs_, b.coefs_):
        np.testing.assert_allclose(ca, cb, rtol=0, atol=parity_bound(b, np.float32))


def test_sparse_tag_is_set():
    for est in (MLPClassifier(), MLPRegressor()):
        assert est.__sklearn_tags__().input_tags.sparse


def _fitted():
    X, y, _ = make_data(n=40, p=6, density=0.3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return MLPClassifier(hidden_layer_sizes=(4,), max_iter=2, random_state=0).fit(X, y)


def _with(**arrays):
    X = sp.csr_matrix(np.eye(6)[:4])
    for k, val in arrays.items():
        setattr(X, k, val)
    return X


BAD = [
    (
        lambda: _with(indices=np.array([0, 1, 2, 3], np.int16)),
        TypeError,
        "X.indices must have an index dtype int32 or int64",
    ),
    (lambda: sp.csr_matrix(np.ones((3, 5))), ValueError, "X has 5 features"),
    (lambda: _with(data=np.array([1.0, np.nan, 1.0, 1.0])), ValueError, "X contains NaN"),
    (
        lambda: _with(indptr=np.array([0, 3, 1, 2, 4], np.int32)),
        ValueError,
        "X.indptr is malformed",
    ),
    (
        lambda: _with(indices=np.array([0, 1, 2, 9], np.int32)),
        ValueError,
        r"X.indices must be column indices in \[0, 6\)",
    ),
]


@pytest.mark.parametrize("make,exc,match", BAD)
def test_bad_sparse_X_is_refused_naming_X(make, exc, match):
    est = _fitted()
    for method in (est.predict, est.predict_proba, est.predict_log_proba):
        with pytest.raises(exc, match=match):
            method(make())
    with pytest.raises(exc, match=match):
        est.score(make(), np.zeros(make().shape[0], int))
    if "features" not in match:
        with pytest.raises(exc, match=match):
            MLPClassifier(max_iter=1).fit(make(), [0, 1, 0, 1])


def test_sample_weight_with_sparse_X():
    X, y, _ = make_data()
    w = np.random.default_rng(2).uniform(0.1, 2.0, X.shape[0])
    kw = dict(hidden_layer_sizes=(8,), max_iter=5, random_state=0)
    a = MLPClassifier(**kw).fit(X, y, sample_weight=w)
    b = MLPClassifier(**kw).fit(X.toarray(), y, sample_weight=w)
    assert_same_fit(a, b)


@pytest.mark.parametrize("shuffle", [False, True])
def test_sparse_training_equals_scikit_learn_on_sparse_input(shuffle):
    """scikit-learn's MLPClassifier takes CSR too (safe_sparse_dot): with the same
    random_state both walk the same batches from the same initial weights, and the
    weights agree to rounding (as the dense twins in tests/test_sklearn.py)."""
    import sklearn.neural_network as sknn

    X, y, _ = make_data(n=200)
    kw = dict(
        hidden_layer_sizes=(8, 5),
        solver="sgd",
        momentum=0.9,
        learning_rate_init=0.01,
        batch_size=50,
        max_iter=8,
        shuffle=shuffle,
        random_state=3,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        a = MLPClassifier(**kw).fit(X, y)
        b = sknn.MLPClassifier(**kw).fit(X, y)
    for p, q in zip(a.coefs_ + a.intercepts_, b.coefs_ + b.intercepts_):
        np.testing.assert_allclose(p, q, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(a.loss_curve_, b.loss_curve_, rtol=1e-6)
    np.testing.assert_allclose(a.predict_proba(X), b.predict_proba(X), rtol=1e-9, atol=1e-12)
