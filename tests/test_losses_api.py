"""The loss registry: fused output activations, target preparation, stable extreme logits."""

import numpy as np
import pytest

import fastnn
from fastnn.losses import LOSSES, MSE, BinaryCrossEntropy, CrossEntropy, get_loss

K = fastnn.backend("numpy")


def test_registry_and_unknown_names():
    assert set(LOSSES) == {"mse", "binary_cross_entropy", "cross_entropy", "poisson"}
    assert isinstance(get_loss("mse"), MSE)
    loss = CrossEntropy()
    assert get_loss(loss) is loss
    with pytest.raises(ValueError, match="loss must be one of"):
        get_loss("log_loss")
    assert get_loss("cross_entropy").fused and get_loss("binary_cross_entropy").fused
    assert not get_loss("mse").fused
    assert get_loss("poisson").fused and get_loss("poisson").link == "exp"


def test_poisson_model_predicts_the_mean_and_refuses_negative_targets():
    """loss="poisson": the output layer computes z = log of the mean, predict e^z; the
    loss is mean(e^z - y z) with gradient (e^z - y) / size (docs/spec.md §4)."""
    net = fastnn.MLP([2, 3, 1], "tanh", loss="poisson", backend="numpy", random_state=0)
    assert net.layers[-1].activation == "identity"
    X = np.array([[0.5, -1.0], [1.0, 2.0], [0.0, 0.0]])
    z = net.decision_function(X)
    np.testing.assert_array_equal(net.predict(X), np.exp(z))
    y = np.array([0.0, 2.0, 5.0])
    zf = z.astype(np.float64).ravel()
    want = float(np.mean(np.exp(zf) - y * zf))
    assert net.evaluate(X, y)["loss"] == pytest.approx(want, rel=1e-6)
    with pytest.raises(ValueError, match="non-negative"):
        net.check_targets(np.array([1.0, -1.0, 0.0]))
    with pytest.raises(ValueError, match="output_activation must be None or 'exp'"):
        fastnn.MLP([2, 3, 1], loss="poisson", output_activation="relu")


def test_fused_losses_make_the_output_layer_linear():
    net = fastnn.MLP([2, 3, 4], "tanh", loss="cross_entropy", backend="numpy")
    assert net.layers[-1].activation == "identity"
    net = fastnn.MLP(
        [2, 3, 1], "tanh", loss="binary_cross_entropy", output_activation="sigmoid", backend="numpy"
    )
    assert net.layers[-1].activation == "identity"
    net = fastnn.MLP([2, 3, 1], loss="mse", output_activation="sigmoid", backend="numpy")
    assert net.layers[-1].activation == "sigmoid"


def test_extreme_logits_stay_finite_and_exact():
    # Probabilities are never formed then logged: softmax(z) would round to one-hot
    # here and log(0) would give inf.
    z = np.array([[1000.0, 0.0, -1000.0], [0.0, 0.0, 0.0]])
    ce = CrossEntropy()
    # row 1: logsumexp = 1000 (+ e^-1000 ~ 0), label 2 -> 2000; row 2: log 3 - 0
    assert ce.value(K, z, np.array([2, 0])) == pytest.approx((2000 + np.log(3)) / 2, rel=1e-15)
    bce = BinaryCrossEntropy()
    zb = np.array([[800.0], [-800.0]])
    assert bce.value(K, zb, np.array([[0.0], [0.0]])) == pytest.approx(400.0, rel=1e-15)
    g = bce.gradient(K, zb, np.array([[1.0], [0.0]]), np.empty((2, 1)))
    np.testing.assert_allclose(g, 0, atol=1e-300)


def test_predict_proba_uses_sigmoid_or_softmax():
    z = np.array([[2.0, -1.0, 0.5]])
    p = CrossEntropy().proba(K, z)
    np.testing.assert_allclose(p, np.exp(z) / np.exp(z).sum(), rtol=1e-15)
    s = BinaryCrossEntropy().proba(K, z)
    np.testing.assert_allclose(s, 1 / (1 + np.exp(-z)), rtol=1e-15)
    with pytest.raises(ValueError, match="predict_proba needs a classification loss"):
        MSE().proba(K, z)


def test_target_preparation():
    ce = CrossEntropy()
    t = ce.prepare_targets([0, 2, 1], 3, np.float32)
    assert t.dtype == np.int64 and t.tolist() == [0, 2, 1]
    t = ce.prepare_targets(np.array([0.0, 2.0]), 3, np.float32)
    assert t.dtype == np.int64
    oh = ce.prepare_targets(np.eye(3)[[0, 2]], 3, np.float32)
    assert oh.dtype == np.float32 and oh.shape == (2, 3)
    with pytest.raises(ValueError, match="one-hot rows of shape"):
        ce.prepare_targets(np.ones((2, 4)), 3, np.float32)
    bce = BinaryCrossEntropy()
    t = bce.prepare_targets([0, 1, 1], 1, np.float64)
    assert t.shape == (3, 1) and t.dtype == np.float64
    t = bce.prepare_targets(np.ones((3, 2), bool), 2, np.float32)
    assert t.dtype == np.float32 and t.shape == (3, 2)
    mse = MSE()
    assert mse.prepare_targets([1, 2], 1, np.float32).shape == (2, 1)
    with pytest.raises(ValueError, match=r"must have shape \(n, 2\)"):
        mse.prepare_targets([1, 2], 2, np.float32)
    with pytest.raises(ValueError, match="y_val contains NaN"):
        mse.prepare_targets([1, np.inf], 1, np.float32, name="y_val")
    with pytest.raises(TypeError, match="real numbers"):
        mse.prepare_targets([1 + 2j], 1, np.float32)


def test_accuracy_counts():
    out = np.array([[2.0, 1.0], [0.0, 3.0], [1.0, 0.0]])
    assert CrossEntropy().n_correct(out, np.array([0, 1, 1])) == 2
    assert CrossEntropy().n_correct(out, np.eye(2)[[0, 1, 1]]) == 2
    # multi-label: a row counts when all its labels are right
    zb = np.array([[1.0, -1.0], [1.0, 1.0]])
    assert BinaryCrossEntropy().n_correct(zb, np.array([[1.0, 0.0], [1.0, 0.0]])) == 1


def test_model_loss_value_is_the_backend_loss():
    X = np.random.default_rng(0).standard_normal((10, 3))
    y = np.arange(10) % 4
    net = fastnn.MLP(
        [3, 5, 4], loss="cross_entropy", dtype="float64", backend="numpy", random_state=0
    )
    z = net.decision_function(X)
    assert net.evaluate(X, y)["loss"] == pytest.approx(K.cross_entropy(z, y), rel=1e-15)
