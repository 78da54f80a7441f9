"""fastnn.MLPClassifier / MLPRegressor behave as scikit-learn's own estimators where
fastnn used to differ (issue 13, item 1): a single-class y, a run that diverges with
early stopping, coefs_ / intercepts_ as lists of the live weights, predict_log_proba
as log(predict_proba), and the early-stopping split's error naming the user's labels.
Each behaviour is run side by side with sklearn.neural_network on the same data."""

import copy
import pickle
import threading
import warnings

import numpy as np
import pytest

pytest.importorskip("sklearn")

import sklearn.neural_network as sknn  # noqa: E402
from sklearn.exceptions import ConvergenceWarning, NotFittedError  # noqa: E402

import fastnn  # noqa: E402
from fastnn import MLP, MLPClassifier, MLPRegressor  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

PAIRS = {"clf": (MLPClassifier, sknn.MLPClassifier), "reg": (MLPRegressor, sknn.MLPRegressor)}


def _X(n=60, d=3, seed=0):
    return np.random.RandomState(seed).randn(n, d)


def _both(kind, X, y, **kw):
    """(fastnn's, scikit-learn's) estimator fitted alike, and the warnings of each."""
    fitted, caught = [], []
    for cls in PAIRS[kind]:
        with warnings.catch_warnings(record=True) as w, np.errstate(all="ignore"):
            warnings.simplefilter("always")
            fitted.append(cls(**kw).fit(X, y))
        caught.append([x for x in w if not issubclass(x.category, RuntimeWarning)])
    return fitted, caught


def _same_floats(a, b, rtol=1e-6):
    """Equal lists of floats, NaN and infinities in the same places."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    assert a.shape == b.shape
    np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
    np.testing.assert_array_equal(np.isinf(a), np.isinf(b))
    np.testing.assert_allclose(a, b, rtol=rtol, equal_nan=True)


# --- 1. a single class ------------------------------------------------------------------------


@pytest.mark.parametrize("labels", [["a"], [0], [2.0], [True]])
@pytest.mark.parametrize(
    "settings",
    [
        dict(),
        dict(early_stopping=True),
        dict(solver="lbfgs", max_iter=50),
        dict(solver="sgd", warm_start=True),
    ],
)
def test_single_class_is_fitted_as_scikit_learn_fits_it(labels, settings):
    X = _X()
    y = np.array(labels * len(X))
    (ours, theirs), (w_ours, w_theirs) = _both(
        "clf", X, y, **{"hidden_layer_sizes": (5,), "max_iter": 5, "random_state": 0, **settings}
    )
    assert ours.classes_.tolist() == theirs.classes_.tolist() == labels
    assert ours.classes_.dtype == theirs.classes_.dtype
    assert ours.n_outputs_ == theirs.n_outputs_ == 1
    assert ours.out_activation_ == theirs.out_activation_ == "logistic"
    assert [c.shape for c in ours.coefs_] == [c.shape for c in theirs.coefs_]
    np.testing.assert_array_equal(ours.predict(X), theirs.predict(X))
    assert ours.predict(X).dtype == theirs.predict(X).dtype
    # scikit-learn answers two columns for its one class: [1 - p, p]
    assert ours.predict_proba(X).shape == theirs.predict_proba(X).shape == (len(X), 2)
    np.testing.assert_allclose(ours.predict_proba(X), theirs.predict_proba(X), rtol=1e-6)
    np.testing.assert_allclose(ours.predict_log_proba(X), theirs.predict_log_proba(X), rtol=1e-6)
    assert ours.score(X, y) == theirs.score(X, y) == 1.0
    assert ours.n_iter_ == theirs.n_iter_
    if settings.get("early_stopping"):
        assert ours.validation_scores_ == theirs.validation_scores_ == [1.0] * 5
        assert ours.n_iter_ == 5
        assert ours.best_validation_score_ == theirs.best_validation_score_ == 1.0
    assert [x.category for x in w_ours] == [x.category for x in w_theirs]
    if settings.get("warm_start"):
        for est in (ours, theirs):
            est.fit(X, y)
        np.testing.assert_allclose(ours.predict_proba(X), theirs.predict_proba(X), rtol=1e-6)


def test_single_class_partial_fit_and_saving(tmp_path):
    X = _X()
    ests = [cls(hidden_layer_sizes=(5,), random_state=0) for cls in PAIRS["clf"]]
    for est in ests:
        est.partial_fit(X, np.zeros(len(X)), classes=[0.0])
        est.partial_fit(X, np.zeros(len(X)))
    ours, theirs = ests
    assert ours.classes_.tolist() == theirs.classes_.tolist() == [0.0]
    np.testing.assert_array_equal(ours.predict(X), theirs.predict(X))
    np.testing.assert_allclose(ours.predict_proba(X), theirs.predict_proba(X), rtol=1e-6)
    for est in ests:
        with pytest.raises(ValueError, match="`y` has classes not in `self.classes_`"):
            est.partial_fit(X, np.arange(len(X)) % 2)
    fastnn.save(ours, tmp_path / "one.fnn")
    back = fastnn.load(tmp_path / "one.fnn")
    np.testing.assert_array_equal(back.predict(X), ours.predict(X))
    np.testing.assert_array_equal(back.predict_proba(X), ours.predict_proba(X))


# --- 2. divergence with early stopping ------------------------------------------------------


def _diverging_regression():
    rs = np.random.RandomState(0)
    X = rs.randn(200, 4)
    return X, X @ rs.randn(4) * 10


def _check_diverged_like_scikit_learn(ours, theirs, w_ours, w_theirs):
    k = len(ours.validation_scores_)
    # the epochs before the divergence are scikit-learn's, to rounding
    _same_floats(ours.loss_curve_[: k - 1], theirs.loss_curve_[: k - 1])
    _same_floats(ours.validation_scores_[: k - 1], theirs.validation_scores_[: k - 1])
    # the diverged epoch is recorded as scikit-learn records it: a NaN score (NaN loss)
    assert np.isnan(ours.validation_scores_[-1]) and np.isnan(ours.loss_curve_[-1])
    assert np.isnan(theirs.validation_scores_[-1]) and np.isnan(theirs.loss_curve_[-1])
    assert np.isnan(ours.loss_) and np.isnan(theirs.loss_)
    assert ours.n_iter_ == len(ours.loss_curve_) == k <= theirs.n_iter_
    assert ours.best_loss_ is None and theirs.best_loss_ is None
    # both keep the best-validation weights
    assert ours.best_validation_score_ == pytest.approx(theirs.best_validation_score_, rel=1e-9)
    for a, b in zip([*ours.coefs_, *ours.intercepts_], [*theirs.coefs_, *theirs.intercepts_]):
        assert np.isfinite(a).all()
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)
    # scikit-learn trains on to max_iter and warns that it did; fastnn stops and says why
    assert [str(x.message) for x in w_theirs] == [
        f"Stochastic Optimizer: Maximum iterations ({theirs.max_iter}) reached and the "
        f"optimization hasn't converged yet."
    ]
    assert len(w_ours) == 1 and w_ours[0].category is ConvergenceWarning
    assert f"Training diverged in iteration {k}" in str(w_ours[0].message)


@pytest.mark.parametrize("lr", [0.1, 1.0])
def test_regressor_divergence_with_early_stopping_keeps_the_best_weights(lr):
    X, y = _diverging_regression()
    (ours, theirs), (w_ours, w_theirs) = _both(
        "reg",
        X,
        y,
        hidden_layer_sizes=(8,),
        solver="sgd",
        learning_rate_init=lr,
        max_iter=30,
        random_state=0,
        early_stopping=True,
    )
    _check_diverged_like_scikit_learn(ours, theirs, w_ours, w_theirs)
    assert "best validation score" in str(w_ours[0].message)
    np.testing.assert_allclose(ours.predict(X), theirs.predict(X), rtol=1e-9)
    assert ours.score(X, y) == pytest.approx(theirs.score(X, y), rel=1e-9)


def test_divergence_in_the_first_epoch_keeps_the_initial_weights():
    X, y = _diverging_regression()
    (ours, theirs), (w_ours, w_theirs) = _both(
        "reg",
        X * 1e200,
        y,
        hidden_layer_sizes=(8,),
        solver="sgd",
        max_iter=5,
        random_state=0,
        early_stopping=True,
    )
    assert ours.best_validation_score_ == theirs.best_validation_score_ == -np.inf
    assert ours.n_iter_ == 1 and np.isnan(ours.validation_scores_).all()
    assert np.isnan(theirs.validation_scores_).all()
    assert "keeps the weights it started from" in str(w_ours[0].message)
    init = sknn.MLPRegressor(hidden_layer_sizes=(8,), solver="sgd", max_iter=1, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        init._random_state = np.random.RandomState(0)
        init._initialize(y.reshape(-1, 1), [4, 8, 1], np.float64)
    for a, b, c in zip(ours.coefs_, theirs.coefs_, init.coefs_):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(b, c)


def test_classifier_divergence_with_early_stopping_keeps_the_best_weights():
    rs = np.random.RandomState(0)
    X = rs.randn(200, 4)
    y = (X[:, 0] + X[:, 1] > 0).astype(int)
    (ours, theirs), (w_ours, _) = _both(
        "clf",
        X * 1e30,
        y,
        hidden_layer_sizes=(8,),
        solver="sgd",
        momentum=0.0,
        learning_rate_init=1.0,
        max_iter=20,
        random_state=0,
        early_stopping=True,
    )
    k = ours.n_iter_
    assert k < 20 and np.isnan(ours.validation_scores_[-1]) and np.isnan(ours.loss_)
    # scikit-learn's accuracy of non-finite outputs is that of the labels its NaN
    # comparisons pick, not NaN: only the epochs before the divergence compare
    np.testing.assert_array_equal(
        ours.validation_scores_[: k - 1], theirs.validation_scores_[: k - 1]
    )
    assert ours.best_validation_score_ == theirs.best_validation_score_
    np.testing.assert_array_equal(ours.predict(X), theirs.predict(X))
    assert len(w_ours) == 1 and "Training diverged" in str(w_ours[0].message)


def test_divergence_without_early_stopping_still_raises():
    X, y = _diverging_regression()
    kw = dict(
        hidden_layer_sizes=(8,), solver="sgd", learning_rate_init=1.0, max_iter=30, random_state=0
    )
    ours, theirs = MLPRegressor(**kw), sknn.MLPRegressor(**kw)
    with np.errstate(all="ignore"):
        # scikit-learn trains on to max_iter, then refuses its non-finite weights
        with (
            pytest.warns(ConvergenceWarning, match="Maximum iterations"),
            pytest.raises(ValueError, match="Solver produced non-finite parameter"),
        ):
            theirs.fit(X, y)
        # fastnn stops at the epoch that diverged, keeping the last finite weights
        with pytest.raises(ValueError, match="diverged in iteration 6.*last finite weights"):
            ours.fit(X, y)
    assert theirs.n_iter_ == 30 and not np.isfinite(theirs.coefs_[0]).all()
    assert ours.n_iter_ == 5 and all(np.isfinite(w).all() for w in ours.coefs_)


# --- 3. coefs_ and intercepts_ ----------------------------------------------------------------


def _fitted_pair(kind="clf"):
    X = _X(80, 4)
    y = (X[:, 0] > 0).astype(int) + (X[:, 1] > 0) if kind == "clf" else X[:, 0] ** 2
    (ours, theirs), _ = _both(kind, X, y, hidden_layer_sizes=(6,), max_iter=20, random_state=0)
    # the same network in both (Adam's epsilon differs, docs: up to its size)
    ours.coefs_, ours.intercepts_ = theirs.coefs_, theirs.intercepts_
    return X, ours, theirs


def _answers(est, X):
    return est.predict_proba(X) if hasattr(est, "predict_proba") else est.predict(X)


@pytest.mark.parametrize("kind", ["clf", "reg"])
def test_coefs_are_live_lists_as_in_scikit_learn(kind):
    X, ours, theirs = _fitted_pair(kind)
    np.testing.assert_allclose(_answers(ours, X), _answers(theirs, X), rtol=1e-9)
    rs = np.random.RandomState(1)
    W = rs.randn(*theirs.coefs_[1].shape)
    b = rs.randn(*theirs.intercepts_[0].shape)
    for est in (ours, theirs):
        assert isinstance(est.coefs_, list) and isinstance(est.intercepts_, list)
        est.coefs_[0][:, 0] = 0.5  # writing into an array
        est.coefs_[1] = W  # replacing a layer
        est.intercepts_[0] = b
        est.intercepts_[-1][...] = 0.25
    for a, c in zip([*ours.coefs_, *ours.intercepts_], [*theirs.coefs_, *theirs.intercepts_]):
        np.testing.assert_array_equal(a, c)
    np.testing.assert_allclose(_answers(ours, X), _answers(theirs, X), rtol=1e-9)
    if kind == "clf":
        np.testing.assert_array_equal(ours.predict(X), theirs.predict(X))
    # the items are the network's arrays: the item assigned reads back as the layer
    assert ours.coefs_[1] is ours._model.layers[1].W
    layers = ours.coefs_
    layers[1] = 2 * W
    assert layers[1] is ours._model.layers[1].W and np.array_equal(layers[1], 2 * W)
    # whole lists and slices
    ours.coefs_ = [np.ones_like(c) for c in theirs.coefs_]
    ours.coefs_[:] = [c.copy() for c in theirs.coefs_]
    ours.coefs_[1:] = [2 * W]
    theirs.coefs_[1] = 2 * W
    np.testing.assert_allclose(_answers(ours, X), _answers(theirs, X), rtol=1e-9)
    # copies are plain lists of the values
    for dup in (
        copy.copy(ours.coefs_),
        copy.deepcopy(ours.coefs_),
        pickle.loads(pickle.dumps(ours.coefs_)),
        list(ours.coefs_),
    ):
        assert type(dup) is list and np.array_equal(dup[1], 2 * W)


def test_coefs_assignment_errors_name_the_layer():
    X, ours, _ = _fitted_pair()
    with pytest.raises(
        ValueError,
        match=r"coefs_\[1\] must have shape \(6, 3\) \(the "
        r"weight matrix of layer 1\), got \(3, 6\)",
    ):
        ours.coefs_[1] = np.zeros((3, 6))
    with pytest.raises(ValueError, match=r"intercepts_\[0\] must have shape \(6,\)"):
        ours.intercepts_[-2] = np.zeros(5)
    with pytest.raises(
        TypeError,
        match=r"coefs_\[0\] must be a real-valued array .* "
        r"got dtype complex128",
    ):
        ours.coefs_[0] = np.zeros((4, 6), complex)
    with pytest.raises(TypeError, match=r"coefs_\[0\] .* got None"):
        ours.coefs_[0] = None
    with pytest.raises(IndexError, match="coefs_ has 2 layers; there is no layer 2"):
        ours.coefs_[2] = np.zeros((6, 3))
    with pytest.raises(ValueError, match="coefs_ must be a list of 2 arrays"):
        ours.coefs_ = [np.zeros((4, 6))]
    for grow in (
        lambda c: c.append(c[0]),
        lambda c: c.pop(),
        lambda c: c.__delitem__(0),
        lambda c: c.extend([]),
        lambda c: c.insert(0, c[0]),
    ):
        with pytest.raises(TypeError, match="one entry per layer"):
            grow(ours.coefs_)
    with pytest.raises(ValueError, match=r"has 2 layers, got 1 arrays"):
        ours.coefs_[:] = [ours.coefs_[0]]
    # nothing was written by a failed assignment, even one checked item by item
    before = [c.copy() for c in ours.coefs_]
    with pytest.raises(ValueError):
        ours.coefs_ = [np.zeros((4, 6)), np.zeros((3, 6))]
    for a, b in zip(ours.coefs_, before):
        np.testing.assert_array_equal(a, b)
    # a float64 array in a float32 network is rounded to float32
    est = MLPClassifier((6,), max_iter=2, dtype="float32", random_state=0).fit(X, X[:, 0] > 0)
    est.coefs_[0] = np.full((4, 6), 0.1)
    assert est.coefs_[0].dtype == np.float32 and est.coefs_[0][0, 0] == np.float32(0.1)


def test_batch_normalised_layers_take_none_as_intercept():
    X = _X(80, 4)
    est = MLPClassifier((6,), batch_norm=True, max_iter=2, random_state=0).fit(X, X[:, 0] > 0)
    est.intercepts_[0] = None
    est.intercepts_ = [None, np.zeros(1)]
    with pytest.raises(
        ValueError,
        match=r"intercepts_\[0\] must be None: layer 0 is "
        r"batch-normalised",
    ):
        est.intercepts_[0] = np.zeros(6)


@pytest.mark.parametrize("kind", ["clf", "reg"])
def test_coefs_assigned_before_fit_as_in_scikit_learn(kind):
    X = _X(80, 4)
    y = (X[:, 0] > 0).astype(int) + (X[:, 1] > 0) if kind == "clf" else X[:, 0] ** 2
    kw = dict(hidden_layer_sizes=(6,), max_iter=20, random_state=0)
    (fresh, theirs), _ = _both(kind, X, y, **kw)
    zeros = [np.zeros((4, 6)), np.zeros((6, 3))]
    ests = [cls(**kw) for cls in PAIRS[kind]]
    for est in ests:
        est.coefs_ = zeros  # scikit-learn's plain attribute: no error
        est.intercepts_ = []
        assert est.coefs_ is zeros and est.intercepts_ == []
    with pytest.raises(NotFittedError):
        ests[0].predict(X)  # scikit-learn: AttributeError (NotFittedError is one)
    with pytest.raises(AttributeError):
        ests[1].predict(X)
    for est in ests:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            est.fit(X, y)  # the first fit replaces them
    ours, again = ests
    for a, b, c in zip(ours.coefs_, fresh.coefs_, again.coefs_):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_allclose(a, c, rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(again.coefs_[0], theirs.coefs_[0])
    with pytest.raises(NotFittedError):
        MLPClassifier().coefs_  # noqa: B018


def test_setting_coefs_counts_as_training():
    X, ours, _ = _fitted_pair()
    y = (X[:, 0] > 0).astype(int)
    in_fit, tried = threading.Event(), threading.Event()
    real_epoch = MLP.train_epoch
    errors = []

    def held_epoch(self, *args, **kwargs):
        logs = real_epoch(self, *args, **kwargs)
        if threading.current_thread().name == "trainer" and not in_fit.is_set():
            in_fit.set()
            tried.wait(30)
        return logs

    def train():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ours.set_params(max_iter=2).fit(X, y)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    MLP.train_epoch = held_epoch
    try:
        trainer = threading.Thread(target=train, name="trainer")
        trainer.start()
        try:
            assert in_fit.wait(30)
            layers = ours.coefs_
            attempts = (
                lambda: layers.__setitem__(0, np.zeros((4, 6))),
                lambda: setattr(ours, "coefs_", layers),
                lambda: setattr(ours, "intercepts_", ours.intercepts_),
                lambda: ours.intercepts_.__setitem__(1, np.zeros(3)),
            )
            for attempt in attempts:
                with pytest.raises(RuntimeError, match="being trained in another thread"):
                    attempt()
        finally:
            tried.set()
            trainer.join(60)
    finally:
        MLP.train_epoch = real_epoch
    assert not errors, errors
    ours.coefs_[0] = np.zeros((4, 6))  # once the fit is over
    assert not ours.coefs_[0].any()


# --- 4. predict_log_proba is log(predict_proba) --------------------------------------------


@pytest.mark.parametrize("target", ["binary", "multiclass", "multilabel"])
def test_predict_log_proba_is_log_of_predict_proba(target):
    X = _X(80, 4)
    y = {
        "binary": (X[:, 0] > 0).astype(int),
        "multiclass": (X[:, 0] > 0).astype(int) + (X[:, 1] > 0),
        "multilabel": np.c_[X[:, 0] > 0, X[:, 1] > 0, X[:, 2] > 0].astype(int),
    }[target]
    (ours, theirs), _ = _both("clf", X, y, hidden_layer_sizes=(6,), max_iter=20, random_state=0)
    ours.coefs_, ours.intercepts_ = theirs.coefs_, theirs.intercepts_
    np.testing.assert_array_equal(ours.predict_log_proba(X), np.log(ours.predict_proba(X)))
    np.testing.assert_allclose(ours.predict_log_proba(X), theirs.predict_log_proba(X), rtol=1e-9)
    # Huge logits: probabilities round to 1 and underflow to 0; the logs are log(p),
    # -inf where p is 0, with NumPy's warning, as scikit-learn's.
    for est in (ours, theirs):
        est.coefs_[1] = theirs.coefs_[1] * 1e3
    proba = theirs.predict_proba(X)
    assert (proba == 0).any() and (proba == 1).any()
    np.testing.assert_array_equal(ours.predict_proba(X) == 0, proba == 0)
    logs = []
    for est in (ours, theirs):
        with pytest.warns(RuntimeWarning, match="divide by zero encountered in log"):
            logs.append(est.predict_log_proba(X))
    np.testing.assert_array_equal(np.isneginf(logs[0]), np.isneginf(logs[1]))
    np.testing.assert_array_equal(logs[0] == 0, logs[1] == 0)
    finite = np.isfinite(logs[1])
    np.testing.assert_allclose(logs[0][finite], logs[1][finite], rtol=1e-6)
    with np.errstate(divide="ignore"):
        np.testing.assert_array_equal(logs[0], np.log(ours.predict_proba(X)))


def test_predict_log_proba_keeps_the_dtype():
    X = _X(80, 4).astype(np.float32)
    est = MLPClassifier((6,), max_iter=3, random_state=0).fit(X, X[:, 0] > 0)
    assert est.predict_log_proba(X).dtype == np.float32
    np.testing.assert_array_equal(est.predict_log_proba(X), np.log(est.predict_proba(X)))


# --- 5. the early-stopping split names the user's labels -------------------------------------


def test_too_small_class_for_the_stratified_split_is_named():
    X = _X(40, 3)
    y = np.array(["cat"] * 39 + ["dog"])
    kw = dict(hidden_layer_sizes=(4,), early_stopping=True, max_iter=3, random_state=0)
    theirs = sknn.MLPClassifier(**kw)
    with pytest.raises(
        ValueError,
        match=r"least populated classes.* too few members "
        r"are: \['True'\]",
    ):
        theirs.fit(X, y)  # scikit-learn names its binarised code
    with pytest.raises(
        ValueError,
        match=r"least populated classes in y have only 1 "
        r"member.* too few members are: \['dog'\] "
        r"\(early_stopping=True",
    ):
        MLPClassifier(**kw).fit(X, y)
    # fastnn stratifies multiclass targets too (scikit-learn does not)
    y3 = np.array(["cat"] * 20 + ["dog"] * 19 + ["emu"])
    with pytest.raises(ValueError, match=r"too few members are: \['emu'\]"):
        MLPClassifier(**kw).fit(X, y3)
    y3 = np.array([7] * 20 + [3] + [5] * 19)
    with pytest.raises(ValueError, match=r"too few members are: \[3\]"):
        MLPClassifier(**kw).fit(X, y3)


def _counts(n=300, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 4))
    return X, rng.poisson(np.exp(0.6 * X[:, 0] - 0.4 * X[:, 1])).astype(float)


@pytest.mark.parametrize(
    "solver, batch_size, rtol, loss_rtol",
    [
        ("sgd", 300, 1e-10, 1e-10),  # one batch per epoch: the same numbers to rounding
        # five equal batches (a partial one's L2 term differs); the curve's L2 term is
        # interpolated over the epoch's steps (the estimators' docstring)
        ("sgd", 60, 1e-9, 1e-5),
        ("lbfgs", "auto", 1e-7, 1e-7),
    ],
)
def test_poisson_regressor_fits_as_scikit_learn_fits_it(solver, batch_size, rtol, loss_rtol):
    """loss="poisson": log link (out_activation_ "exp"), half the Poisson deviance as
    loss_curve_ / loss_ (with its y log y - y terms), predict = e^z, score = r2 of it."""
    X, y = _counts()
    kw = dict(
        hidden_layer_sizes=(8,),
        loss="poisson",
        solver=solver,
        batch_size=batch_size,
        alpha=1e-3,
        learning_rate_init=0.02,
        max_iter=8,
        random_state=3,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ours = MLPRegressor(dtype="float64", **kw).fit(X, y)
        theirs = sknn.MLPRegressor(**kw).fit(X, y)
    assert ours.out_activation_ == theirs.out_activation_ == "exp"
    for a, b in zip(ours.coefs_ + ours.intercepts_, theirs.coefs_ + theirs.intercepts_):
        np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol)
    assert ours.loss_ == pytest.approx(theirs.loss_, rel=loss_rtol)
    if solver == "sgd":
        np.testing.assert_allclose(ours.loss_curve_, theirs.loss_curve_, rtol=loss_rtol)
    np.testing.assert_allclose(ours.predict(X), theirs.predict(X), rtol=rtol)
    assert ours.score(X, y) == pytest.approx(theirs.score(X, y), rel=rtol)


def test_poisson_regressor_refuses_negative_targets():
    X, y = _counts(40)
    y[3] = -1.0
    with pytest.raises(ValueError, match="non-negative"):
        MLPRegressor(hidden_layer_sizes=(4,), loss="poisson", max_iter=2).fit(X, y)


# --- sample_weight ------------------------------------------------------------------------

# scikit-learn (1.7+) normalises a batch's loss, its gradient and its L2 term by the
# batch's weight sum S (sum_i w_i l_i / S + alpha ||W||^2 / (2 S)); fastnn's weighted
# loss kernels and the m / S scale of the decay do the same (docs/spec.md §4).


def _weighted_data(seed=0, n=64):
    rs = np.random.RandomState(seed)
    X = rs.randn(n, 4)
    w = rs.gamma(0.8, 1.5, n)
    w[::6] = 0.0  # zero weights are allowed
    targets = {
        "multiclass": (X[:, 0] > 0).astype(int) + (X[:, 1] > 0.3),
        "binary": (X[:, 0] + 0.5 * X[:, 1] > 0).astype(int),
        "regression": X[:, 0] * 2 + X[:, 1],
        "poisson": rs.poisson(np.exp(0.3 * X[:, 0])),
    }
    return X, targets, w


def _max_coef_diff(a, b):
    return max(
        float(np.abs(x - y).max())
        for x, y in zip([*a.coefs_, *a.intercepts_], [*b.coefs_, *b.intercepts_])
    )


# (target, solver settings, batch_size, early_stopping, coefficient tolerance). With one
# batch per epoch, or several full ones, plain SGD reproduces scikit-learn's weights to
# rounding; Adam differs by where epsilon is added (module docstring of estimators).
WEIGHTED_CASES = [
    ("multiclass", dict(solver="sgd", momentum=0.9, learning_rate_init=0.05), 64, False, 1e-13),
    ("multiclass", dict(solver="sgd", momentum=0.9, learning_rate_init=0.05), 16, False, 1e-13),
    ("binary", dict(solver="sgd", momentum=0.9, learning_rate_init=0.05), "auto", True, 1e-13),
    ("regression", dict(solver="sgd", momentum=0.9, learning_rate_init=0.05), 16, False, 1e-13),
    ("regression", dict(solver="sgd", learning_rate_init=0.05), "auto", True, 1e-13),
    ("poisson", dict(solver="sgd", learning_rate_init=0.05, loss="poisson"), 16, False, 1e-13),
    ("multiclass", dict(solver="adam", learning_rate_init=0.01), 64, False, 2e-3),
    ("multiclass", dict(solver="adam", learning_rate_init=0.01), 16, False, 2e-3),
    ("binary", dict(solver="adam", learning_rate_init=0.01), "auto", True, 2e-3),
    ("regression", dict(solver="adam", learning_rate_init=0.01), 16, False, 2e-3),
    ("multiclass", dict(solver="lbfgs"), "auto", False, 1e-9),
    ("binary", dict(solver="lbfgs"), "auto", False, 1e-9),
    ("regression", dict(solver="lbfgs"), "auto", False, 1e-9),
    ("poisson", dict(solver="lbfgs", loss="poisson"), "auto", False, 1e-9),
]


@pytest.mark.parametrize("target, solver, batch_size, early_stopping, tol", WEIGHTED_CASES)
def test_weighted_fit_matches_scikit_learn(target, solver, batch_size, early_stopping, tol):
    X, targets, w = _weighted_data()
    y = targets[target]
    kind = "clf" if target in ("multiclass", "binary") else "reg"
    kw = dict(
        hidden_layer_sizes=(6,),
        alpha=1e-2,
        batch_size=batch_size,
        max_iter=30,
        random_state=0,
        early_stopping=early_stopping,
        **solver,
    )
    ours, theirs = (cls(**kw).fit(X, y, sample_weight=w) for cls in PAIRS[kind])
    assert _max_coef_diff(ours, theirs) < tol
    assert ours.n_iter_ == theirs.n_iter_
    if solver["solver"] == "lbfgs":
        assert ours.loss_ == pytest.approx(theirs.loss_, rel=1e-9)
    else:
        # ||W||^2 is interpolated over an epoch's batches (module docstring); Adam's
        # epsilon is added elsewhere
        rtol = 5e-3 if batch_size == 16 else 1e-3 if solver["solver"] == "adam" else 1e-12
        _same_floats(ours.loss_curve_, theirs.loss_curve_, rtol=rtol)
    if early_stopping:  # the validation rows' weights go to the score, as scikit-learn's
        _same_floats(ours.validation_scores_, theirs.validation_scores_, rtol=1e-6)
    # unweighted, the fit is another
    plain = PAIRS[kind][0](**kw).fit(X, y)
    assert _max_coef_diff(ours, plain) > 1e-3


@pytest.mark.parametrize("kind", ["clf", "reg"])
@pytest.mark.parametrize("solver", ["sgd", "adam", "lbfgs"])
def test_integer_weights_are_repeated_rows(kind, solver):
    """With one batch per epoch (scikit-learn's semantics make it exact there: the
    batch's weight sum is the repeated rows' count), weight k == the row k times."""
    X, targets, _ = _weighted_data(n=20)
    y = targets["multiclass" if kind == "clf" else "regression"]
    sw = np.random.RandomState(3).randint(0, 4, size=len(y))
    kw = dict(hidden_layer_sizes=(5,), solver=solver, alpha=1e-2, max_iter=25, random_state=0)
    kw["shuffle"] = False
    cls = PAIRS[kind][0]
    weighted = cls(**kw).fit(X, y, sample_weight=sw)  # batch_size "auto": one batch
    repeated = cls(**kw).fit(X.repeat(sw, axis=0), y.repeat(sw))
    X_test = _X(30, 4, seed=5)
    np.testing.assert_allclose(weighted.predict(X_test), repeated.predict(X_test), rtol=1e-7)
    assert _max_coef_diff(weighted, repeated) < 1e-9


@pytest.mark.parametrize("kind", ["clf", "reg"])
def test_unit_weights_fit_exactly_as_no_weights(kind):
    X, targets, _ = _weighted_data()
    y = targets["multiclass" if kind == "clf" else "regression"]
    for solver in ("sgd", "adam", "lbfgs"):
        kw = dict(hidden_layer_sizes=(6,), solver=solver, alpha=1e-2, batch_size=16)
        a = PAIRS[kind][0](max_iter=10, random_state=0, **kw).fit(X, y, np.ones(len(y)))
        b = PAIRS[kind][0](max_iter=10, random_state=0, **kw).fit(X, y)
        for x, z in zip([*a.coefs_, *a.intercepts_], [*b.coefs_, *b.intercepts_]):
            np.testing.assert_array_equal(x, z)


@pytest.mark.parametrize("kind", ["clf", "reg"])
def test_weighted_partial_fit_matches_scikit_learn(kind):
    X, targets, w = _weighted_data()
    y = targets["multiclass" if kind == "clf" else "regression"]
    kw = dict(hidden_layer_sizes=(6,), solver="sgd", alpha=1e-2, batch_size=16, random_state=0)
    ests = [cls(**kw) for cls in PAIRS[kind]]
    for est in ests:
        for _ in range(3):
            if kind == "clf":
                est.partial_fit(X, y, sample_weight=w, classes=[0, 1, 2])
            else:
                est.partial_fit(X, y, sample_weight=w)
    assert _max_coef_diff(*ests) < 1e-13


@pytest.mark.parametrize("kind", ["clf", "reg"])
def test_weighted_score_is_scikit_learns(kind):
    X, targets, w = _weighted_data()
    y = targets["multiclass" if kind == "clf" else "regression"]
    (ours, theirs), _ = _both(kind, X, y, hidden_layer_sizes=(6,), max_iter=20, random_state=0)
    assert ours.score(X, y, sample_weight=w) == pytest.approx(
        theirs.score(X, y, sample_weight=w), rel=1e-6
    )
    assert ours.score(X, y, sample_weight=w) != ours.score(X, y)


@pytest.mark.parametrize("kind", ["clf", "reg"])
@pytest.mark.parametrize(
    "weights, error, match",
    [
        (np.ones(63), ValueError, r"sample_weight must have one weight per sample"),
        (np.ones((64, 2)), ValueError, r"sample_weight must be a 1-D array"),
        (np.r_[np.nan, np.ones(63)], ValueError, r"sample_weight contains NaN or infinity"),
        (np.r_[np.inf, np.ones(63)], ValueError, r"sample_weight contains NaN or infinity"),
        (np.zeros(64), ValueError, r"sample_weight must contain at least one non-zero"),
        # scikit-learn accepts negative weights (its MLPs do not ask _check_sample_weight
        # for non-negative ones); fastnn refuses them
        (np.r_[-1.0, np.ones(63)], ValueError, r"sample_weight must be non-negative"),
        (["a"] * 64, TypeError, r"sample_weight must hold real numbers"),
    ],
    ids=["short", "2-D", "nan", "inf", "all zero", "negative", "strings"],
)
def test_bad_sample_weights_are_refused(kind, weights, error, match):
    X, targets, _ = _weighted_data()
    y = targets["multiclass" if kind == "clf" else "regression"]
    for solver in ("sgd", "lbfgs"):
        est = PAIRS[kind][0](hidden_layer_sizes=(4,), solver=solver, max_iter=3)
        with pytest.raises(error, match=match):
            est.fit(X, y, sample_weight=weights)
        assert not hasattr(est, "coefs_") or est.__sklearn_is_fitted__() is False


def test_a_batch_of_zero_weights_is_refused_where_scikit_learn_divides_by_zero():
    X, targets, _ = _weighted_data()
    y = targets["regression"]
    w = np.r_[np.zeros(16), np.ones(48)]
    kw = dict(hidden_layer_sizes=(4,), solver="sgd", batch_size=16, shuffle=False, max_iter=3)
    with pytest.raises(ZeroDivisionError):
        sknn.MLPRegressor(**kw).fit(X, y, sample_weight=w)
    with pytest.raises(ValueError, match="sample_weight: the weights of batch 0"):
        MLPRegressor(**kw).fit(X, y, sample_weight=w)
