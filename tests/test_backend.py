"""The backend registry: one namespace per backend, identical names everywhere."""

import numpy as np
import pytest

import fastnn
from fastnn import reference
from fastnn._backend import FAMILIES, Backend


def test_available_backends_lists_numpy_and_numba():
    names = fastnn.available_backends()
    assert "numpy" in names and "numba" in names
    assert fastnn.default_backend_name() in names


def test_unknown_backend_is_a_clear_value_error():
    with pytest.raises(ValueError, match="backend must be one of"):
        fastnn.backend("torch")


def test_numpy_backend_is_the_reference():
    k = fastnn.backend("numpy")
    assert isinstance(k, Backend)
    assert k._raw.relu is reference.relu
    assert fastnn.backend("numpy") is k  # one instance per backend


def test_reference_all_lists_every_family_function():
    import importlib

    names = set()
    for fam in FAMILIES:
        names |= set(importlib.import_module(f"fastnn.reference.{fam}").__all__)
    assert names == set(reference.__all__)


def test_backend_methods_cover_every_raw_kernel():
    k = fastnn.backend("numpy")
    for name in reference.__all__:
        assert callable(getattr(k, name)), name


def test_backend_returns_fresh_output_when_out_is_none():
    k = fastnn.backend("numpy")
    z = np.array([-1.0, 2.0], dtype=np.float32)
    out = k.relu(z)
    assert out is not z and out.dtype == np.float32


# --- the hot paths' kernels: raw, or checked behind the same signatures (debug switch) -----


def _train_a_little(backend, batch_norm):
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(40, 4)), rng.integers(0, 3, 40)
    net = fastnn.MLP(
        [4, 6, 5, 3],
        ["gelu", "relu"],
        loss="cross_entropy",
        dropout=[0.2, 0.0],
        batch_norm=[batch_norm, False],
        backend=backend,
        random_state=1,
    )
    opt = fastnn.Adam(lr=0.01, clip_norm=1.0)
    xb, yb = net.check_data(X, y)
    for s in range(0, 40, 8):
        net.train_step(xb[s : s + 8], yb[s : s + 8], opt)
    return net, net.decision_function(X), net.evaluate(X, y)


@pytest.mark.parametrize("batch_norm", [False, True])
@pytest.mark.parametrize("name", fastnn.available_backends())
def test_debug_switch_routes_internal_calls_through_the_checked_tier(name, batch_norm, monkeypatch):
    """FASTNN_CHECK_KERNELS=1 (CHECK_INTERNAL_CALLS): the model, its loss and the
    optimizer call the checked methods, with the same numbers as the raw kernels."""
    raw = _train_a_little(name, batch_norm)
    assert fastnn.backend(name)._internal is fastnn.backend(name)._raw
    monkeypatch.setattr("fastnn._backend.CHECK_INTERNAL_CALLS", True)
    checked_calls = []
    original = Backend.dense_forward

    def counting(self, *args, **kwargs):
        checked_calls.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Backend, "dense_forward", counting)
    internal = fastnn.backend(name)._internal
    assert internal is not fastnn.backend(name)._raw
    checked = _train_a_little(name, batch_norm)
    assert checked_calls, "the checked dense_forward was not called"
    np.testing.assert_array_equal(raw[0].params, checked[0].params)
    np.testing.assert_array_equal(raw[0].buffers, checked[0].buffers)
    np.testing.assert_array_equal(raw[1], checked[1])
    assert raw[2] == checked[2]


@pytest.mark.parametrize("loss", ["mse", "poisson", "cross_entropy", "binary_cross_entropy"])
@pytest.mark.parametrize("name", fastnn.available_backends())
def test_debug_switch_with_sample_weights(name, loss, monkeypatch):
    """Weighted losses behind the raw signatures (flat mse and poisson arrays of m
    samples) give the raw kernels' numbers on the step path."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((40, 3))
    y = {
        "mse": X[:, :2],
        "poisson": rng.poisson(1.0, (40, 2)),
        "cross_entropy": (X[:, 0] > 0).astype(int) + (X[:, 1] > 0),
        "binary_cross_entropy": (X[:, :2] > 0).astype(float),
    }[loss]
    w = rng.random(40)
    runs = []
    for checked in (False, True):
        monkeypatch.setattr("fastnn._backend.CHECK_INTERNAL_CALLS", checked)
        fastnn.backend(name)._checked_raw = None
        net = fastnn.MLP([3, 4, 3 if loss == "cross_entropy" else 2], loss=loss, backend=name)
        net.set_state({"params": np.linspace(-1, 1, net.n_params), "buffers": net.buffers})
        losses = [net.loss_and_gradient(X, y, sample_weight=w)]
        Xc, yc = net.check_data(X, y)
        opt = fastnn.SGD(0.1, weight_decay=1e-2)
        losses.append(net.train_step(Xc[:20], yc[:20], opt, sample_weight=w[:20]))
        runs.append((losses, net.params.copy()))
    assert runs[0][0] == runs[1][0]
    np.testing.assert_array_equal(runs[0][1], runs[1][1])


def test_checked_tier_behind_raw_signatures_names_the_bad_argument(monkeypatch):
    monkeypatch.setattr("fastnn._backend.CHECK_INTERNAL_CALLS", True)
    k = fastnn.backend("numpy")._internal
    x, w, b = np.ones((2, 3)), np.ones((3, 4)), np.ones(4)
    z = np.empty((2, 5))  # wrong: (2, 4) expected
    with pytest.raises(ValueError, match="z"):
        k.dense_forward(x, w, b, fastnn.registry.activation("relu").code, 0.0, z, z)


@pytest.mark.parametrize(
    "xb, yb, match",
    [
        (np.ones((6, 8))[:, ::2], np.zeros(6, np.int64), "C-contiguous"),
        (np.ones((6, 4), np.float64), np.zeros(6, np.int64), "float32"),
        (np.ones((6, 4), np.float32), np.zeros(6, np.int32), "yb must be targets"),
        (np.ones((6, 4), np.float32), np.zeros((6, 3), np.float64), "yb must be targets"),
        (np.ones((6, 4), np.float32), np.array([0, 1, 2, 3, 0, 1]), r"class indices in \[0, 3\)"),
        (np.ones((6, 4), np.float32), np.array([0, -1, 2, 0, 0, 1]), r"class indices in \[0, 3\)"),
    ],
)
def test_train_step_refuses_batches_the_raw_kernels_cannot_take(xb, yb, match):
    net = fastnn.MLP([4, 5, 3], loss="cross_entropy", backend="numpy", random_state=0)
    before = net.params.copy()
    with pytest.raises(ValueError, match=match):
        net.train_step(xb.astype(xb.dtype), yb, fastnn.SGD(0.1))
    np.testing.assert_array_equal(net.params, before)
