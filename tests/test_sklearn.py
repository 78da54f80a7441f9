"""fastnn.MLPClassifier / MLPRegressor: scikit-learn's own estimator checks, equivalence
with sklearn.neural_network step by step, fitted attributes, integration with
scikit-learn's tools, pickling and fastnn.save, bad input, and the digits
experiment that ``fastnn demo`` runs."""

import copy
import os
import pickle
import subprocess
import sys
import warnings

import numpy as np
import pytest

sklearn = pytest.importorskip("sklearn")

import joblib  # noqa: E402
import sklearn.neural_network as sknn  # noqa: E402
from sklearn.base import clone  # noqa: E402
from sklearn.datasets import (  # noqa: E402
    load_digits,
    make_classification,
    make_multilabel_classification,
    make_regression,
)
from sklearn.exceptions import ConvergenceWarning, NotFittedError  # noqa: E402
from sklearn.model_selection import (  # noqa: E402
    GridSearchCV,
    cross_val_score,
    train_test_split,
)
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.utils.estimator_checks import (  # noqa: E402
    check_param_validation,
    parametrize_with_checks,
)

import fastnn  # noqa: E402
from fastnn import MLPClassifier, MLPRegressor  # noqa: E402

SRC = os.path.join(os.path.dirname(__file__), os.pardir, "src")

# Short fits end at max_iter on purpose; tests about the warning use pytest.warns.
pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


# --- scikit-learn's estimator checks ------------------------------------------------------

# max_iter=100 as scikit-learn's own test suite uses for its MLPs. The third and fourth
# estimators exercise fastnn's options (another optimizer, activation, batch norm,
# dropout, clipping, a schedule) and solver="lbfgs" through the same suite.
CHECKED = [
    MLPClassifier(max_iter=100),
    MLPRegressor(max_iter=100),
    MLPClassifier(
        hidden_layer_sizes=(32,),
        activation="elu",
        optimizer="nesterov",
        learning_rate_init=0.05,
        batch_norm=True,
        clip_norm=5.0,
        schedule=fastnn.Cosine(0.05, T=100),
        max_iter=100,
    ),
    MLPRegressor(hidden_layer_sizes=(32,), activation="tanh", solver="lbfgs", max_iter=200),
]


def _expected_failures(estimator):
    """Checks an estimator fails by design (none for scikit-learn's own options)."""
    if np.any(np.asarray(estimator.batch_norm, dtype=bool)):
        # batch statistics weigh every row alike: a weight is not a repeated row there
        # (for dense and, now that sparse X is accepted, sparse data alike)
        reason = "batch normalisation's batch statistics are unweighted"
        return {
            "check_sample_weight_equivalence_on_dense_data": reason,
            "check_sample_weight_equivalence_on_sparse_data": reason,
        }
    return {}


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@parametrize_with_checks(CHECKED, expected_failed_checks=_expected_failures)
def test_scikit_learn_estimator_checks(estimator, check):
    check(estimator)


@pytest.mark.parametrize("est", [MLPClassifier(max_iter=5), MLPRegressor(max_iter=5)])
def test_param_validation_check(est):
    # Not part of the public suite: every constraint in _parameter_constraints is
    # enforced by fit and partial_fit with scikit-learn's InvalidParameterError.
    check_param_validation(type(est).__name__, est)


def test_import_fastnn_does_not_import_sklearn():
    code = (
        "import sys, fastnn; assert 'sklearn' not in sys.modules; "
        "from fastnn import MLPClassifier; assert 'sklearn' in sys.modules; "
        "assert 'MLPClassifier' in dir(fastnn)"
    )
    env = {**os.environ, "PYTHONPATH": SRC}
    subprocess.run([sys.executable, "-W", "ignore", "-c", code], check=True, env=env)


def test_unknown_attribute_of_fastnn():
    with pytest.raises(AttributeError, match="no attribute 'MLPClassifer'"):
        fastnn.MLPClassifer  # noqa: B018


# --- equivalence with scikit-learn ---------------------------------------------------------


def _reg_data(n_targets=3):
    X, y = make_regression(300, 6, n_targets=n_targets, noise=1.0, random_state=0)
    return X, y / y.std()


def _clf_data(n_classes=3):
    return make_classification(300, 6, n_classes=n_classes, n_informative=4, random_state=0)


def _weights(est):
    return list(est.coefs_) + list(est.intercepts_)


def _twin_fits(ours, theirs, X, y, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return ours(**kw).fit(X, y), theirs(**kw).fit(X, y)


SGD_SETTINGS = [
    dict(solver="sgd", momentum=0.0, learning_rate_init=0.05),
    dict(solver="sgd", momentum=0.9, learning_rate_init=0.01),
    dict(solver="sgd", momentum=0.9, nesterovs_momentum=False, learning_rate_init=0.01),
    dict(solver="sgd", momentum=0.5, alpha=0.5, learning_rate_init=0.01),
]
CASES = [
    ("multiclass", MLPClassifier, sknn.MLPClassifier, _clf_data),
    ("binary", MLPClassifier, sknn.MLPClassifier, lambda: _clf_data(2)),
    ("one output", MLPRegressor, sknn.MLPRegressor, lambda: _reg_data(1)),
    ("three outputs", MLPRegressor, sknn.MLPRegressor, _reg_data),
]


@pytest.mark.parametrize("settings", SGD_SETTINGS)
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_sgd_training_equals_scikit_learn(case, settings):
    # Same random_state: the same initial network (init="sklearn"). Without shuffling
    # and with batches that divide the data, fastnn's updates (alpha as weight decay
    # alpha / m, fastnn's mse gradient rescaled by the learning rate) are
    # scikit-learn's: the weights agree to rounding after 8 epochs. The loss curves
    # include scikit-learn's L2 term alpha/2 ||W||^2 / m per batch, which fastnn
    # interpolates between the epoch's first and last weights (one compiled call per
    # epoch): with alpha = 0.5 and 6 batches per epoch that is within 1e-4 relative.
    _, ours, theirs, data = case
    X, y = data()
    a, b = _twin_fits(
        ours,
        theirs,
        X,
        y,
        hidden_layer_sizes=(8, 5),
        shuffle=False,
        batch_size=50,
        max_iter=8,
        random_state=3,
        **settings,
    )
    for p, q in zip(_weights(a), _weights(b)):
        np.testing.assert_allclose(p, q, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(a.loss_curve_, b.loss_curve_, rtol=1e-4)
    assert a.loss_ == a.loss_curve_[-1] and a.n_iter_ == b.n_iter_ == 8
    assert a.t_ == b.t_ == 8 * 300


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_shuffled_training_follows_scikit_learns_batches(case):
    # The same random_state draws the same initial network and then, epoch after
    # epoch, scikit-learn's own sample order (its shuffle of the last epoch's order,
    # from the same RandomState): shuffled training agrees with scikit-learn's to
    # rounding, as unshuffled training does (the loss curves to the interpolation of
    # scikit-learn's default L2 term, alpha 1e-4; see the test above).
    _, ours, theirs, data = case
    X, y = data()
    a, b = _twin_fits(
        ours,
        theirs,
        X,
        y,
        hidden_layer_sizes=(8, 5),
        shuffle=True,
        batch_size=50,
        max_iter=8,
        random_state=3,
        **SGD_SETTINGS[1],
    )
    for p, q in zip(_weights(a), _weights(b)):
        np.testing.assert_allclose(p, q, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(a.loss_curve_, b.loss_curve_, rtol=1e-6)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_full_batch_loss_curve_equals_scikit_learn(case):
    # One batch per epoch: the L2 term is taken at exactly the weights scikit-learn
    # uses, so the whole loss curve agrees to rounding.
    _, ours, theirs, data = case
    X, y = data()
    a, b = _twin_fits(
        ours,
        theirs,
        X,
        y,
        hidden_layer_sizes=(8,),
        solver="sgd",
        batch_size=300,
        alpha=0.3,
        learning_rate_init=0.1,
        max_iter=6,
        random_state=1,
    )
    np.testing.assert_allclose(a.loss_curve_, b.loss_curve_, rtol=1e-10)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_adam_training_close_to_scikit_learn(case):
    # fastnn's Adam adds epsilon to sqrt(v_hat) where scikit-learn adds it to sqrt(v):
    # the updates agree to about epsilon / sqrt(v_hat) relative.
    _, ours, theirs, data = case
    X, y = data()
    a, b = _twin_fits(
        ours,
        theirs,
        X,
        y,
        hidden_layer_sizes=(8,),
        shuffle=False,
        batch_size=100,
        max_iter=5,
        random_state=0,
    )
    for p, q in zip(_weights(a), _weights(b)):
        np.testing.assert_allclose(p, q, rtol=0, atol=1e-5)


def test_tol_stopping_and_adaptive_rate_follow_scikit_learn():
    # Identical trajectories make scikit-learn's stopping rule (loss > best - tol for
    # more than n_iter_no_change epochs) and its adaptive rate (divide by 5) testable.
    X, y = _clf_data()
    kw = dict(
        hidden_layer_sizes=(8,),
        solver="sgd",
        shuffle=False,
        batch_size=100,
        learning_rate_init=0.2,
        tol=1e-2,
        n_iter_no_change=3,
        random_state=0,
        max_iter=300,
    )
    for lr in ("constant", "adaptive"):
        a, b = _twin_fits(MLPClassifier, sknn.MLPClassifier, X, y, learning_rate=lr, **kw)
        assert a.n_iter_ == b.n_iter_ < 300
        assert a.best_loss_ == pytest.approx(b.best_loss_, rel=1e-6)
        assert a.best_loss_ == min(a.loss_curve_)
        if lr == "adaptive":
            assert a._learning_rate == pytest.approx(b._optimizer.learning_rate)
            assert a._learning_rate <= 1e-6 * 5


def test_warm_start_restarts_the_adaptive_rate_as_scikit_learn():
    # A warm-start fit creates a new optimizer at learning_rate_init and keeps
    # best_loss_ and the no-improvement count: the second fit follows scikit-learn's.
    X, y = _clf_data()
    kw = dict(
        hidden_layer_sizes=(8,),
        solver="sgd",
        shuffle=False,
        batch_size=100,
        learning_rate="adaptive",
        learning_rate_init=0.2,
        tol=1e-2,
        n_iter_no_change=2,
        warm_start=True,
        random_state=0,
        max_iter=25,
    )
    a, b = _twin_fits(MLPClassifier, sknn.MLPClassifier, X, y, **kw)
    assert a._learning_rate < 0.2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        a.fit(X, y)
        b.fit(X, y)
    assert a.n_iter_ == b.n_iter_ and len(a.loss_curve_) == len(b.loss_curve_)
    assert a._learning_rate == pytest.approx(b._optimizer.learning_rate)
    for p, q in zip(_weights(a), _weights(b)):
        np.testing.assert_allclose(p, q, rtol=1e-8, atol=1e-12)


def test_invscaling_rate():
    X, y = _clf_data()
    est = MLPClassifier(
        (8,),
        solver="sgd",
        learning_rate="invscaling",
        learning_rate_init=0.1,
        power_t=0.25,
        max_iter=3,
        random_state=0,
    )
    with pytest.warns(ConvergenceWarning):
        est.fit(X, y)
    # scikit-learn's rule: lr = lr_init / (t_ + 1) ** power_t after each epoch, t_
    # counting samples.
    assert est._learning_rate == pytest.approx(0.1 / (3 * 300 + 1) ** 0.25)
    assert est._model.optimizer.lr == pytest.approx(0.1 / (2 * 300 + 1) ** 0.25)


def test_early_stopping_follows_scikit_learn():
    # Same initial weights, the same validation split (drawn from the same
    # RandomState) and unshuffled batches: the validation scores and the stopping
    # epoch are scikit-learn's; the best weights are restored at the end.
    X, y = _reg_data(1)
    kw = dict(
        hidden_layer_sizes=(8,),
        solver="sgd",
        momentum=0.0,
        shuffle=False,
        early_stopping=True,
        validation_fraction=0.2,
        batch_size=60,
        learning_rate_init=0.2,
        n_iter_no_change=2,
        tol=1e-3,
        random_state=0,
        max_iter=200,
    )
    a, b = _twin_fits(MLPRegressor, sknn.MLPRegressor, X, y, **kw)
    assert a.n_iter_ == b.n_iter_ < 200
    np.testing.assert_allclose(a.validation_scores_, b.validation_scores_, rtol=1e-8)
    assert a.best_validation_score_ == pytest.approx(b.best_validation_score_)
    assert a.best_loss_ is None and b.best_loss_ is None
    for p, q in zip(_weights(a), _weights(b)):
        np.testing.assert_allclose(p, q, rtol=1e-8, atol=1e-12)


def test_early_stopping_classifier_split_is_stratified():
    X, y = make_classification(
        400, 8, n_classes=4, n_informative=4, weights=[0.55, 0.3, 0.1, 0.05], random_state=0
    )
    est = MLPClassifier(
        (16,), early_stopping=True, validation_fraction=0.25, max_iter=30, random_state=0
    )
    seen = {}
    real = fastnn.MLP.evaluate

    def spy(model, Xv, yv, **kw):
        seen["labels"] = np.asarray(yv)
        return real(model, Xv, yv, **kw)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(fastnn.MLP, "evaluate", spy)
            est.fit(X, y)
    counts = np.bincount(seen["labels"], minlength=4)
    expected = np.bincount(y, minlength=4) * 0.25
    assert np.all(np.abs(counts - expected) <= 1), (counts, expected)
    assert len(est.validation_scores_) == est.n_iter_
    assert est.best_validation_score_ == max(est.validation_scores_)


def test_partial_fit_follows_scikit_learn():
    X, y = _clf_data()
    kw = dict(
        hidden_layer_sizes=(8,),
        solver="sgd",
        shuffle=False,
        batch_size=100,
        learning_rate_init=0.05,
        random_state=0,
    )
    a, b = MLPClassifier(**kw), sknn.MLPClassifier(**kw)
    for _ in range(3):
        a.partial_fit(X, y, classes=[0, 1, 2])
        b.partial_fit(X, y, classes=[0, 1, 2])
    for p, q in zip(_weights(a), _weights(b)):
        np.testing.assert_allclose(p, q, rtol=1e-9, atol=1e-12)
    assert a.n_iter_ == 1 and a.t_ == 900 and len(a.loss_curve_) == 3
    assert a._model.optimizer.t == 9  # one optimizer across the calls


def test_partial_fit_needs_classes_first_and_rejects_unseen_classes():
    X, y = _clf_data()
    est = MLPClassifier((4,))
    with pytest.raises(ValueError, match="classes must be passed on the first call"):
        est.partial_fit(X, y)
    est.partial_fit(X[y < 2], y[y < 2], classes=[0, 1, 2])
    assert est.n_outputs_ == 3 and est.out_activation_ == "softmax"
    with pytest.raises(ValueError, match="classes not in"):
        est.partial_fit(X, y + 1)


def test_partial_fit_unavailable_for_lbfgs():
    est = MLPClassifier(solver="lbfgs")
    assert not hasattr(est, "partial_fit")
    with pytest.raises(AttributeError, match="has no attribute 'partial_fit'") as info:
        est.partial_fit  # noqa: B018
    assert "lbfgs is not stochastic" in str(info.value.__cause__)
    assert hasattr(MLPClassifier(solver="lbfgs", optimizer="adam"), "partial_fit")


def test_warm_start_continues_with_a_fresh_optimizer():
    X, y = _reg_data()
    est = MLPRegressor(hidden_layer_sizes=(8,), warm_start=True, max_iter=3, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est.fit(X, y)
        before = [w.copy() for w in est.coefs_]
        first_opt = est._model.optimizer
        est.fit(X, y)
    assert est._model.optimizer is not first_opt and est._model.optimizer.t == 3 * 2
    assert est.n_iter_ == 3 and est.t_ == 6 * 300 and len(est.loss_curve_) == 6
    # A cold fit with the same seed starts again from the same initial weights.
    cold = clone(est).set_params(warm_start=False, max_iter=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        cold.fit(X, y)
    np.testing.assert_array_equal(cold.coefs_[0], before[0])


def test_warm_start_with_other_layers_is_refused():
    X, y = _reg_data()
    est = MLPRegressor(hidden_layer_sizes=(8,), warm_start=True, max_iter=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est.fit(X, y)
    with pytest.raises(ValueError, match="warm_start=False"):
        est.set_params(hidden_layer_sizes=(9,)).fit(X, y)


def test_lbfgs_close_to_scikit_learn():
    X, y = _clf_data()
    a, b = _twin_fits(
        MLPClassifier,
        sknn.MLPClassifier,
        X,
        y,
        hidden_layer_sizes=(8,),
        solver="lbfgs",
        max_iter=30,
        random_state=0,
    )
    # The same objective and start: L-BFGS-B's first iterations agree closely.
    assert a.loss_ == pytest.approx(b.loss_, rel=1e-4)
    assert a.n_iter_ == b.n_iter_ == 30
    assert not hasattr(a, "loss_curve_")


def test_lbfgs_refuses_dropout():
    X, y = _clf_data()
    with pytest.raises(ValueError, match="lbfgs.*dropout"):
        MLPClassifier(solver="lbfgs", dropout=0.2).fit(X, y)


def test_convergence_warning_only_at_max_iter():
    X, y = _clf_data()
    with pytest.warns(ConvergenceWarning, match=r"Maximum iterations \(4\) reached"):
        MLPClassifier((8,), max_iter=4).fit(X, y)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        est = MLPClassifier((8,), tol=10.0, n_iter_no_change=1, max_iter=50).fit(X, y)
    # Epoch 1 sets best_loss_; epochs 2 and 3 do not beat it by tol: 2 > 1, stop.
    assert est.n_iter_ == 3


# --- fitted attributes, labels and outputs -----------------------------------------------


def test_fitted_attributes_multiclass_strings():
    X, y = _clf_data()
    labels = np.array(["ant", "bee", "cat"])[y]
    est = MLPClassifier((16, 8), batch_size=50, max_iter=60, random_state=0).fit(X, labels)
    assert list(est.classes_) == ["ant", "bee", "cat"]
    assert est.out_activation_ == "softmax" and est.n_outputs_ == 3 and est.n_layers_ == 4
    assert [w.shape for w in est.coefs_] == [(6, 16), (16, 8), (8, 3)]
    assert [b.shape for b in est.intercepts_] == [(16,), (8,), (3,)]
    assert est.n_features_in_ == 6 and est.t_ == est.n_iter_ * 300 and est.n_iter_ > 5
    assert set(est.predict(X)) <= set(labels) and est.score(X, labels) > 0.8
    proba = est.predict_proba(X)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-12)
    assert np.array_equal(est.classes_[proba.argmax(1)], est.predict(X))


def test_binary_has_one_logistic_output():
    X, y = _clf_data(2)
    est = MLPClassifier((8,), max_iter=50, random_state=0).fit(X, y == 1)
    assert est.out_activation_ == "logistic" and est.n_outputs_ == 1
    assert est.coefs_[-1].shape == (8, 1)
    proba = est.predict_proba(X)
    assert proba.shape == (300, 2)
    np.testing.assert_allclose(proba.sum(1), 1.0)
    assert est.predict(X).dtype == bool


def test_multilabel_sigmoid_outputs():
    X, Y = make_multilabel_classification(200, 8, n_classes=4, random_state=0)
    est = MLPClassifier((16,), max_iter=100, random_state=0).fit(X, Y)
    assert est.out_activation_ == "logistic" and est.n_outputs_ == 4
    assert est.predict(X).shape == (200, 4) and est.predict_proba(X).shape == (200, 4)
    assert set(np.unique(est.predict(X))) <= {0, 1}
    assert est._model.loss.name == "binary_cross_entropy"


def test_multioutput_regression():
    X, y = _reg_data(3)
    est = MLPRegressor(hidden_layer_sizes=(32,), max_iter=200, random_state=0).fit(X, y)
    assert est.predict(X).shape == (300, 3) and est.out_activation_ == "identity"
    assert est.score(X, y) > 0.9
    single = MLPRegressor(hidden_layer_sizes=(8,), max_iter=5, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        assert single.fit(X, y[:, 0]).predict(X).shape == (300,)


@pytest.mark.parametrize(
    "dtype_in, dtype_param, expected",
    [
        (np.float32, None, np.float32),
        (np.float64, None, np.float64),
        (np.int64, None, np.float64),
        (np.float64, "float32", np.float32),
        (np.float32, np.float64, np.float64),
    ],
)
def test_training_dtype(dtype_in, dtype_param, expected):
    X, y = _clf_data()
    est = MLPClassifier((8,), max_iter=2, dtype=dtype_param, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est.fit((X * 10).astype(dtype_in), y)
    assert est.coefs_[0].dtype == expected
    assert est.predict_proba(X).dtype == expected


def test_coefs_are_views_and_assignable():
    X, y = _clf_data()
    est = MLPClassifier((8,), max_iter=1, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est.fit(X, y)
    est.coefs_[0][...] = 0
    assert np.all(est._model.layers[0].W == 0)
    est.intercepts_ = [np.ones_like(b) for b in est.intercepts_]
    assert np.all(est._model.layers[1].b == 1)
    with pytest.raises(ValueError, match=r"coefs_\[1\] must have shape \(8, 3\)"):
        est.coefs_ = [est.coefs_[0], np.zeros((3, 8))]
    with pytest.raises(NotFittedError):
        MLPClassifier().coefs_  # noqa: B018


def test_batch_norm_layers_have_no_intercept():
    X, y = _clf_data()
    est = MLPClassifier((8, 8), batch_norm=[True, False], dropout=0.1, max_iter=3, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est.fit(X, y)
    assert est.intercepts_[0] is None and est.intercepts_[1].shape == (8,)


def test_feature_names_in():
    pd = pytest.importorskip("pandas")
    X, y = _clf_data()
    names = [f"f{i}" for i in range(6)]
    est = MLPClassifier((4,), max_iter=2, random_state=0).fit(pd.DataFrame(X, columns=names), y)
    assert list(est.feature_names_in_) == names
    with pytest.raises(ValueError, match="feature names"):
        est.predict(pd.DataFrame(X, columns=names[::-1]))


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_backends_agree(backend):
    X, y = _clf_data()
    kw = dict(hidden_layer_sizes=(8,), max_iter=3, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ref = MLPClassifier(backend="numpy", **kw).fit(X, y)
        other = MLPClassifier(backend=backend, **kw).fit(X, y)
    assert other._model.backend_name == backend
    np.testing.assert_allclose(other.predict_proba(X), ref.predict_proba(X), rtol=1e-9)


N_THREADS_SCRIPT = """
import warnings, numpy as np, threadpoolctl, fastnn
from fastnn import MLPClassifier
seen = []
real = fastnn.MLP.train_epoch
def spy(model, *args, **kwargs):
    seen.append(sorted(p["num_threads"] for p in threadpoolctl.threadpool_info()
                       if p["user_api"] == "blas"))
    return real(model, *args, **kwargs)
fastnn.MLP.train_epoch = spy
X = np.random.RandomState(0).randn(50, 3); y = np.arange(50) % 2
warnings.simplefilter("ignore")
MLPClassifier((4,), max_iter=2, n_threads=N).fit(X, y)
print(seen[-1])
"""


# The affinity, not os.cpu_count(): OpenBLAS sizes its pool from the CPUs this process
# may run on, so a process pinned to one core has one-thread pools anyway.
@pytest.mark.skipif(
    fastnn._threads.available_cpus() < 2, reason="needs 2 usable cores to see a limit"
)
def test_fit_leaves_the_process_blas_pools_alone():
    """n_threads is fastnn's own thread count: the process's BLAS pools (which other
    threads and libraries share) keep their size during fit, whatever it is; fastnn's
    products run on its private single-threaded BLAS instance."""
    pytest.importorskip("threadpoolctl")
    env = {k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS")}
    env["PYTHONPATH"] = SRC

    def run(n):
        out = subprocess.run(
            [sys.executable, "-W", "ignore", "-c", N_THREADS_SCRIPT.replace("N)", f"{n})")],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        return eval(out.stdout.strip().splitlines()[-1])

    assert run(1) == run(None) == run(2)
    assert max(run(1)) > 1


def test_keyboard_interrupt_keeps_the_model(monkeypatch):
    X, y = _clf_data()
    real = fastnn.MLP.train_epoch
    calls = []

    def interrupted(model, *args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(model, *args, **kwargs)

    monkeypatch.setattr(fastnn.MLP, "train_epoch", interrupted)
    with pytest.warns(UserWarning, match="Training interrupted by user"):
        est = MLPClassifier((4,), max_iter=10).fit(X, y)
    assert est.n_iter_ == 2 and est.predict(X).shape == (300,)


def test_divergence_is_a_clear_value_error():
    X, y = _reg_data(1)
    est = MLPRegressor(
        hidden_layer_sizes=(8,),
        solver="sgd",
        learning_rate_init=1e6,
        momentum=0.0,
        max_iter=50,
        random_state=0,
    )
    with pytest.raises(ValueError, match="diverged.*last finite weights"):
        est.fit(X * 1e3, y * 1e3)
    assert all(np.isfinite(w).all() for w in est.coefs_)


def test_an_update_that_overflows_rolls_back_the_network_and_its_optimizer():
    # One batch per epoch: the first update overflows the weights, which the check
    # after the epoch sees. The network and its optimizer both go back to the start of
    # that epoch (the shared training loop's rollback), so they stay consistent.
    rng = np.random.default_rng(1)
    X = rng.standard_normal((200, 3))
    y = X @ [1.0, -2.0, 0.5]
    est = MLPRegressor(
        hidden_layer_sizes=(8,),
        solver="sgd",
        learning_rate_init=1e307,
        momentum=0.9,
        batch_size=200,
        max_iter=20,
        random_state=0,
    )
    with pytest.raises(ValueError, match="iteration 1: the weights became non-finite") as info:
        est.fit(X * 1e5, y * 1e5)
    assert info.value.__cause__ is None
    opt = est._model.optimizer
    assert opt.t == 0 and est.n_iter_ == 0
    assert np.isfinite(est._model.params).all()
    assert all(np.isfinite(a).all() for a in opt.state.values())


# --- scikit-learn's tools --------------------------------------------------------------------


def test_pipeline_gridsearch_cross_val_score():
    X, y = _clf_data()
    pipe = make_pipeline(
        StandardScaler(), MLPClassifier(batch_size=32, max_iter=30, random_state=0)
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        scores = cross_val_score(pipe, X, y, cv=3)
        # n_jobs=2 sends the estimators to worker processes by pickling them.
        grid = GridSearchCV(
            pipe, {"mlpclassifier__optimizer": [None, "rmsprop"]}, cv=2, n_jobs=2
        ).fit(X, y)
    assert scores.shape == (3,) and scores.mean() > 0.7
    assert grid.best_score_ > 0.7 and len(grid.cv_results_["params"]) == 2
    assert grid.predict(X).shape == (300,)


def test_clone_is_unfitted_with_equal_params():
    est = MLPRegressor(
        hidden_layer_sizes=(8,),
        schedule=fastnn.Cosine(0.01, T=10),
        dtype="float32",
        backend="numpy",
    )
    c = clone(est)
    assert c.get_params()["schedule"] == est.schedule
    assert c.get_params()["schedule"] is not est.schedule
    with pytest.raises(NotFittedError):
        c.predict(np.zeros((1, 3)))


def _fitted_examples():
    X, y = _clf_data()
    Xm, Ym = make_multilabel_classification(100, 6, n_classes=3, random_state=0)
    Xr, yr = _reg_data()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return [
            (
                MLPClassifier((8,), max_iter=5, random_state=0).fit(
                    X, np.array(["x", "y", "z"])[y]
                ),
                X,
                "predict_proba",
            ),
            (
                MLPClassifier(
                    (8,),
                    max_iter=5,
                    batch_norm=True,
                    optimizer="adamw",
                    dtype="float32",
                    random_state=0,
                ).fit(X, y == 1),
                X,
                "predict_proba",
            ),
            (MLPClassifier((8,), max_iter=5, random_state=0).fit(Xm, Ym), Xm, "predict_proba"),
            (
                MLPRegressor(
                    hidden_layer_sizes=(8,),
                    max_iter=5,
                    random_state=0,
                    schedule=fastnn.ReduceOnPlateau(0.01),
                ).fit(Xr, yr),
                Xr,
                "predict",
            ),
        ]


def test_pickle_joblib_and_deepcopy_round_trips(tmp_path):
    for est, X, method in _fitted_examples():
        expected = getattr(est, method)(X)
        path = tmp_path / "est.joblib"
        joblib.dump(est, path)
        for other in (pickle.loads(pickle.dumps(est)), joblib.load(path), copy.deepcopy(est)):
            np.testing.assert_array_equal(getattr(other, method)(X), expected)
            # The rebuilt layers are views of the rebuilt parameter buffer again:
            # further training moves what predict uses.
            layer = other._model.layers[0]
            assert np.shares_memory(layer.W, other._model.params)


def test_fastnn_save_load_bit_identical_and_continues(tmp_path):
    for i, (est, X, method) in enumerate(_fitted_examples()):
        path = tmp_path / f"est{i}.fnn"
        fastnn.save(est, path)
        loaded = fastnn.load(path)
        assert type(loaded) is type(est)
        assert loaded.get_params() == est.get_params()
        np.testing.assert_array_equal(getattr(loaded, method)(X), getattr(est, method)(X))
        for name in (
            "n_iter_",
            "t_",
            "loss_",
            "loss_curve_",
            "best_loss_",
            "n_features_in_",
            "out_activation_",
            "n_outputs_",
            "n_layers_",
        ):
            assert getattr(loaded, name) == getattr(est, name), name
        if hasattr(est, "classes_"):
            np.testing.assert_array_equal(loaded.classes_, est.classes_)
        # The optimizer and the random streams are saved: one more epoch gives the
        # same weights in both.
        y = est.predict(X)
        est.partial_fit(X, y)
        loaded.partial_fit(X, y)
        np.testing.assert_array_equal(loaded._model.params, est._model.params)


def test_saved_estimator_file_is_plain_data(tmp_path):
    est, X, _ = _fitted_examples()[0]
    path = tmp_path / "est.fnn"
    fastnn.save(est, path)
    with open(path, "rb") as f:
        head = f.read(int.from_bytes(f.read(8), "little"))
    assert b"mlp_classifier" in head and b"pickle" not in head


# --- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize("Est", [MLPClassifier, MLPRegressor])
def test_bad_data_messages(Est):
    X, y = _clf_data()
    est = Est(max_iter=2)
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        est.fit(X, y[:-1])
    with pytest.raises(ValueError, match="Input X contains NaN"):
        est.fit(np.where(X > 2, np.nan, X), y)
    with pytest.raises(ValueError, match="Input X contains infinity"):
        est.fit(np.where(X > 2, np.inf, X), y)
    with pytest.raises(ValueError, match="Input y contains NaN"):
        est.fit(X, np.where(y > 1, np.nan, y))
    with pytest.raises(ValueError, match="0 sample"):
        est.fit(X[:0], y[:0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est.fit(X, y)
    with pytest.raises(ValueError, match="X has 5 features, but .* is expecting 6"):
        est.predict(X[:, :5])
    with pytest.raises(ValueError, match="Input X contains NaN"):
        est.predict(np.full((2, 6), np.nan))


def test_continuous_labels_are_refused():
    X, _ = _clf_data()
    with pytest.raises(ValueError, match="Unknown label type"):
        MLPClassifier().fit(X, np.linspace(0, 1, len(X)))


@pytest.mark.parametrize(
    "param, value, match",
    [
        ("activation", "softplus", "'activation' parameter of MLPClassifier must be a str among"),
        ("solver", "newton", "'solver' parameter"),
        ("optimizer", "no_such_optimizer", "'optimizer' parameter"),
        ("backend", "cuda", "'backend' parameter"),
        (
            "alpha",
            -1.0,
            r"'alpha' parameter of MLPClassifier must be a float in the range "
            r"\[0.0, inf\)",
        ),
        ("hidden_layer_sizes", 0, "'hidden_layer_sizes' parameter"),
        ("batch_size", 0, "'batch_size' parameter"),
        ("momentum", 1.0, "'momentum' parameter"),
        ("dtype", "float16", "'dtype' parameter"),
        ("n_threads", 0, "'n_threads' parameter"),
        ("clip_norm", 0.0, "'clip_norm' parameter"),
    ],
)
def test_invalid_hyperparameters_name_the_argument(param, value, match):
    X, y = _clf_data()
    with pytest.raises(ValueError, match=match):
        MLPClassifier(**{param: value}).fit(X, y)


def test_invalid_per_layer_settings():
    X, y = _clf_data()
    with pytest.raises(ValueError, match=r"hidden_layer_sizes must be > 0, got \[4, 0\]"):
        MLPClassifier(hidden_layer_sizes=(4, 0)).fit(X, y)
    with pytest.raises(ValueError, match="dropout must be one value or a list of 2"):
        MLPClassifier(hidden_layer_sizes=(4, 4), dropout=[0.1]).fit(X, y)
    with pytest.raises(ValueError, match="'loss' parameter"):
        MLPRegressor(loss="huber").fit(X, y)


def test_partial_fit_refuses_early_stopping():
    X, y = _clf_data()
    with pytest.raises(ValueError, match="partial_fit does not support early_stopping"):
        MLPClassifier(early_stopping=True).partial_fit(X, y, classes=[0, 1, 2])


def test_validation_set_too_small():
    X, y = _reg_data(1)
    with pytest.raises(ValueError, match="validation set is too small"):
        MLPRegressor(early_stopping=True, validation_fraction=0.1).fit(X[:10], y[:10])


def test_batch_size_larger_than_data_is_clipped_with_a_warning():
    X, y = _clf_data()
    with pytest.warns(UserWarning, match="It is going to be clipped"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            MLPClassifier((4,), batch_size=1000, max_iter=2).fit(X, y)


def test_fit_warnings_name_the_callers_line():
    # stacklevel: each warning of fit / partial_fit points at the call in this file
    X, y = _clf_data()
    Xr, yr = _reg_data(1)
    rs = np.random.RandomState(0)
    Xd = rs.randn(200, 4)
    yd = Xd @ rs.randn(4) * 10
    diverging = dict(
        hidden_layer_sizes=(8,), solver="sgd", max_iter=5, random_state=0, early_stopping=True
    )
    calls = [
        lambda: MLPClassifier((4,), batch_size=1000, max_iter=2).fit(X, y),
        lambda: MLPClassifier((4,), batch_size=1000).partial_fit(X, y, classes=[0, 1, 2]),
        lambda: MLPRegressor(hidden_layer_sizes=(4,), solver="lbfgs", max_iter=1).fit(Xr, yr),
        lambda: MLPRegressor(**diverging).fit(Xd * 1e200, yd),
    ]
    seen = set()
    for call in calls:
        with warnings.catch_warnings(record=True) as w, np.errstate(all="ignore"):
            warnings.simplefilter("always")
            call()
        assert w
        for x in w:
            seen.add(str(x.message).split()[0])
            assert (x.filename, x.lineno) == (__file__, call.__code__.co_firstlineno), x
    assert seen == {"Got", "Stochastic", "lbfgs", "Training"}


# --- the digits experiment (fastnn demo) -----------------------------------------------------


@pytest.mark.slow
def test_digits_reaches_scikit_learn_accuracy():
    # 64-128-128-10 ReLU, Adam lr 1e-3, batch 64, 50 epochs (n_iter_no_change=50: no
    # early stop), alpha as scikit-learn's default, a fixed stratified 80/20 split,
    # StandardScaler fitted on the training part, float32. Both estimators start from
    # the same initial network (same random_state) and go through the same
    # mini-batches; they differ in precision (float32) and Adam's epsilon placement, so
    # a run may differ by a test image: the test compares the mean over 8 seeds.
    X, y = load_digits(return_X_y=True)
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.2, random_state=0, stratify=y)
    scaler = StandardScaler().fit(Xtr)
    Xtr = scaler.transform(Xtr).astype(np.float32)
    Xte = scaler.transform(Xte).astype(np.float32)
    kw = dict(
        hidden_layer_sizes=(128, 128),
        solver="adam",
        learning_rate_init=1e-3,
        batch_size=64,
        max_iter=50,
        n_iter_no_change=50,
    )
    ours, theirs = [], []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for seed in range(8):
            ours.append(MLPClassifier(random_state=seed, **kw).fit(Xtr, ytr).score(Xte, yte))
            theirs.append(sknn.MLPClassifier(random_state=seed, **kw).fit(Xtr, ytr).score(Xte, yte))
    assert min(ours) > 0.96
    assert np.mean(ours) >= np.mean(theirs), (ours, theirs)
