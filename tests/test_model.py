"""The MLP: parameter layout, forward and backward, dropout, batch norm, dtypes, bad input,
freezing and transfer learning."""

import numpy as np
import pytest

import fastnn
from _gradients import grad_check
from fastnn.model import MLP


def _data(n=40, d=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, d))


def _address(a):
    return a.__array_interface__["data"][0]


# --- layout -------------------------------------------------------------------------------


def test_parameters_live_in_one_buffer_weights_first():
    net = MLP([3, 5, 4, 2], batch_norm=[False, True], backend="numpy", random_state=0)
    sizes = [3 * 5, 5 * 4, 4 * 2]
    assert net.n_weights == sum(sizes)
    # biases: 5 (layer 0) + gamma, beta 4 + 4 (layer 1, no bias) + 2 (output)
    assert net.n_params == sum(sizes) + 5 + 8 + 2
    assert [type(layer).__name__ for layer in net.layers] == [
        "Dense",
        "Dense",
        "BatchNorm",
        "Dense",
    ]
    offset = 0
    for layer, size in zip(net.dense_layers, sizes):
        assert np.shares_memory(layer.W, net.params)
        assert _address(layer.W) == _address(net.params[offset:])
        offset += size
    tail = net.params[net.n_weights :]
    bn = net.layers[2]
    for arr in (net.layers[0].b, bn.gamma, bn.beta, net.layers[3].b):
        assert np.shares_memory(arr, tail)
    assert _address(bn.gamma) == _address(tail[5:])  # layer order: b0, gamma, beta, b2
    assert net.layers[1].b is None
    assert net.buffers.size == 8  # running mean and variance of the batch-norm layer
    # the gradient buffer has the same layout
    assert np.shares_memory(net.layers[3].dW, net.grads)
    assert net.grads.shape == net.params.shape


def test_writing_a_layer_view_changes_the_flat_buffer():
    net = MLP([2, 3, 1], backend="numpy", random_state=0)
    net.layers[0].W[0, 0] = 42.0
    assert net.params[0] == 42.0


def test_repr_and_config_round_trip():
    net = MLP([4, 8, 3], "tanh", loss="cross_entropy", dropout=0.2, backend="numpy", random_state=0)
    assert "MLP([Dense(4, 8, 'tanh'), Dropout(0.2), Dense(8, 3)]" in repr(net)
    assert "cross_entropy" in repr(net)
    clone = MLP.from_config(net.get_config(), backend="numpy")
    assert clone.get_config() == net.get_config()
    copy = net.copy()
    np.testing.assert_array_equal(copy.params, net.params)
    copy.params[0] += 1
    assert copy.params[0] != net.params[0]


# --- forward ---------------------------------------------------------------------------------


def _np_act(name, z, alpha):
    if name == "identity":
        return z
    if name == "step":
        return (z >= 0).astype(z.dtype)
    if name == "sigmoid":
        return 1 / (1 + np.exp(-z))
    if name == "tanh":
        return np.tanh(z)
    if name == "relu":
        return np.maximum(z, 0)
    if name == "leaky_relu":
        return np.where(z > 0, z, alpha * z)
    if name == "elu":
        return np.where(z > 0, z, alpha * np.expm1(np.minimum(z, 0)))
    if name == "softmax":
        e = np.exp(z - z.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)
    raise AssertionError(name)


ACTS = ["identity", "step", "sigmoid", "tanh", "relu", "leaky_relu", "elu", "softmax"]


@pytest.mark.parametrize("act", ACTS)
def test_forward_matches_numpy(act):
    X = _data()
    net = MLP(
        [3, 6, 2],
        act,
        loss="mse",
        output_activation="tanh",
        dtype="float64",
        backend="numpy",
        random_state=1,
    )
    for layer in net.layers:  # nonzero biases so that they are exercised
        layer.b[...] = np.linspace(-0.3, 0.3, layer.n_out)
    h = _np_act(act, X @ net.weights[0] + net.biases[0], net.layers[0].alpha)
    want = np.tanh(h @ net.weights[1] + net.biases[1])
    # float64 products through the same BLAS in another order: agreement to 1e-12
    np.testing.assert_allclose(net.predict(X), want, rtol=1e-12, atol=1e-12)


def test_classification_outputs():
    X = _data(10)
    net = MLP([3, 5, 4], loss="cross_entropy", dtype="float64", backend="numpy", random_state=0)
    logits = net.decision_function(X)
    p = net.predict_proba(X)
    np.testing.assert_allclose(p.sum(1), 1, rtol=1e-14)
    np.testing.assert_array_equal(net.predict(X), logits.argmax(1))
    bce = MLP(
        [3, 5, 2], loss="binary_cross_entropy", dtype="float64", backend="numpy", random_state=0
    )
    z = bce.decision_function(X)
    np.testing.assert_allclose(bce.predict_proba(X), 1 / (1 + np.exp(-z)), rtol=1e-14)
    np.testing.assert_array_equal(bce.predict(X), (z > 0).astype(int))
    reg = MLP([3, 5, 2], backend="numpy", random_state=0)
    with pytest.raises(ValueError, match="predict_proba needs a classification loss"):
        reg.predict_proba(X)


def test_inference_is_chunked_without_changing_results():
    X = _data(3000, 3)
    net = MLP([3, 700, 2], dtype="float64", backend="numpy", random_state=0)
    rows = net._inference_rows(len(X))
    assert rows < len(X)  # the widest layer forces several chunks
    h = np.maximum(X @ net.weights[0] + net.biases[0], 0)
    np.testing.assert_allclose(
        net.predict(X), h @ net.weights[1] + net.biases[1], rtol=1e-11, atol=1e-12
    )


# --- backward: finite differences -------------------------------------------------------------


@pytest.mark.parametrize(
    "act", ["identity", "sigmoid", "tanh", "relu", "leaky_relu", "elu", "softmax"]
)
def test_gradients_match_finite_differences_for_every_activation(act):
    X = _data(16)
    y = np.random.default_rng(1).standard_normal((16, 2))
    net = MLP(
        [3, 5, 4, 2],
        act,
        loss="mse",
        output_activation="sigmoid",
        dtype="float64",
        backend="numpy",
        random_state=2,
    )
    grad_check(net, X, y)


@pytest.mark.parametrize(
    "loss, y, n_out",
    [
        ("cross_entropy", np.arange(16) % 3, 3),
        ("cross_entropy", np.eye(3)[np.arange(16) % 3], 3),
        ("binary_cross_entropy", (np.arange(16) % 2).astype(float), 1),
        ("binary_cross_entropy", (np.arange(48).reshape(16, 3) % 2).astype(float), 3),
        ("mse", np.linspace(-1, 1, 48).reshape(16, 3), 3),
    ],
)
def test_gradients_match_finite_differences_for_every_loss(loss, y, n_out):
    X = _data(16)
    net = MLP([3, 6, n_out], "tanh", loss=loss, dtype="float64", backend="numpy", random_state=3)
    grad_check(net, X, y)


def test_gradients_with_batch_norm_and_dropout():
    X = _data(20)
    y = np.arange(20) % 3
    net = MLP(
        [3, 8, 6, 3],
        "relu",
        loss="cross_entropy",
        batch_norm=True,
        dropout=[0.3, 0.0],
        dtype="float64",
        backend="numpy",
        random_state=4,
    )
    grad_check(net, X, y, fix_dropout=True, n_check=60)


def test_gradient_through_a_frozen_batch_norm_layer():
    X = _data(20)
    y = np.arange(20) % 2
    net = MLP(
        [3, 6, 5, 2],
        "tanh",
        loss="cross_entropy",
        batch_norm=[False, True],
        dtype="float64",
        backend="numpy",
        random_state=5,
    )
    layer = net.layers[2]
    layer.running_mean[...] = 0.1
    layer.running_var[...] = 2.0
    layer.gamma[...] = 1.5
    net.freeze([1, 2])  # the second hidden layer's Dense and BatchNorm
    grad_check(net, X, y)  # frozen BN uses running statistics; still differentiable
    # the running statistics of a frozen layer do not move
    np.testing.assert_array_equal(layer.running_mean, 0.1)


def test_frozen_bottom_layers_get_no_gradient_computation():
    X, y = _data(8), np.arange(8) % 2
    net = MLP([3, 4, 4, 2], loss="cross_entropy", dtype="float64", backend="numpy", random_state=0)
    net.freeze([0])
    net.grads[...] = 7.0
    net.loss_and_gradient(X, y)
    assert (net.layers[0].dW == 7.0).all()  # below the lowest trainable layer: skipped
    assert not (net.layers[1].dW == 7.0).all()


# --- dropout and batch normalisation -----------------------------------------------------------


def test_dropout_is_inverted_in_training_and_off_at_inference():
    X = np.ones((2000, 1))
    net = MLP(
        [1, 50, 1], "identity", dropout=0.25, dtype="float64", backend="numpy", random_state=0
    )
    net.dense_layers[0].W[...] = 1.0
    net.dense_layers[1].W[...] = 1.0 / 50
    assert np.all(net.predict(X) == pytest.approx(1.0))
    out = net.forward(X, training=True)[:, 0]
    # each output averages 50 units kept with probability 0.75 and scaled by 1/0.75:
    # mean 1; the mean over 2000 rows has standard error ~0.0016.
    assert out.mean() == pytest.approx(1.0, abs=0.01)
    assert out.std() > 0.05


def test_dropout_masks_drop_the_requested_fraction():
    X = _data(500, 3)
    net = MLP([3, 100, 1], "relu", dropout=0.4, backend="numpy", random_state=0)
    net.forward(X, training=True)
    mask = net._train_spaces[500].layers[1]["mask"]  # the Dropout after Dense 0
    assert set(np.unique(mask)) <= {0, 1}
    # 50000 Bernoulli(0.6) keeps: standard error 0.0022
    assert mask.mean() == pytest.approx(0.6, abs=0.01)


def test_batch_norm_training_normalises_and_updates_running_statistics():
    X = _data(256, 3) * 5 + 3
    net = MLP(
        [3, 4, 1], "identity", batch_norm=True, dtype="float64", backend="numpy", random_state=0
    )
    net.forward(X, training=True)
    ws = net._train_spaces[256]
    zn = ws.layers[1]["zn"]
    np.testing.assert_allclose(zn.mean(0), 0, atol=1e-12)
    np.testing.assert_allclose(zn.std(0), 1, rtol=1e-4)  # eps 1e-5 in the denominator
    z = ws.layers[0]["z"]
    dense, layer = net.layers[0], net.layers[1]
    np.testing.assert_allclose(layer.running_mean, 0.1 * z.mean(0), rtol=1e-12)
    np.testing.assert_allclose(layer.running_var, 0.9 + 0.1 * z.var(0, ddof=1), rtol=1e-12)
    # inference uses the running statistics
    inv = 1 / np.sqrt(layer.running_var + layer.eps)
    hidden = (X @ dense.W - layer.running_mean) * inv * layer.gamma + layer.beta
    out = hidden @ net.layers[2].W + net.layers[2].b
    np.testing.assert_allclose(net.predict(X), out, rtol=1e-10, atol=1e-12)


def test_batch_norm_needs_two_samples_and_merges_a_final_single_sample():
    net = MLP([2, 3, 1], batch_norm=True, backend="numpy", random_state=0)
    with pytest.raises(ValueError, match="X has a single row: .* at least 2 samples"):
        net.forward(np.ones((1, 2)), training=True)
    xb, yb = net.check_data(np.ones((1, 2)), np.ones((1, 1)))
    with pytest.raises(ValueError, match="xb has a single row: .* at least 2 samples"):
        net.train_step(xb, yb, fastnn.SGD(0.1))
    assert net._batches(9, 4) == [(0, 4), (4, 9)]
    plain = MLP([2, 3, 1], backend="numpy", random_state=0)
    assert plain._batches(9, 4) == [(0, 4), (4, 8), (8, 9)]


# --- dtype and input rules ---------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_model_dtype_is_kept_and_inputs_are_converted(dtype):
    net = MLP([3, 4, 2], dtype=dtype, backend="numpy", random_state=0)
    assert net.params.dtype == dtype
    for X in (
        _data(5),
        _data(5).astype(np.float32),
        np.arange(15).reshape(5, 3),
        np.ones((5, 3), bool),
        _data(5).tolist(),
    ):
        out = net.predict(X)
        assert out.dtype == dtype and out.shape == (5, 2)
    # a float64 input is rounded once to float32: same result as converting it yourself
    X = _data(5)
    np.testing.assert_array_equal(net.predict(X), net.predict(X.astype(dtype)))


@pytest.mark.parametrize(
    "X, exc, match",
    [
        (np.ones((4, 3), complex), TypeError, "X must hold real numbers"),
        (np.array([["a", "b", "c"]]), TypeError, "X must hold real numbers"),
        (np.array([[1, None, 2]], dtype=object), TypeError, "X must hold real numbers"),
        (np.ones(3), ValueError, "X must be 2-D"),
        (np.ones((0, 3)), ValueError, "X is empty"),
        (np.ones((4, 2)), ValueError, "X has 2 features, but this model expects 3"),
        (np.array([[1.0, np.nan, 2.0]]), ValueError, "X contains NaN or infinity"),
        (np.array([[1.0, np.inf, 2.0]]), ValueError, "X contains NaN or infinity"),
        (np.array([[1e300, 0.0, 0.0]]), ValueError, r"after conversion to float32"),
    ],
)
def test_bad_X_is_rejected_with_a_clear_message(X, exc, match):
    net = MLP([3, 4, 1], backend="numpy", random_state=0)
    with pytest.raises(exc, match=match):
        net.predict(X)


def test_sparse_like_input_that_is_not_scipy_is_refused_with_a_hint():
    """SciPy sparse input is accepted (tests/test_model_sparse.py); another library's
    sparse type is refused with a hint rather than read as an object array."""

    class OtherSparse:
        shape = (2, 3)

        def tocsr(self):
            return self

    net = MLP([3, 4, 1], backend="numpy", random_state=0)
    with pytest.raises(TypeError, match="not a scipy.sparse matrix"):
        net.predict(OtherSparse())


@pytest.mark.parametrize(
    "y, loss, exc, match",
    [
        (np.ones(5), "mse", ValueError, "different numbers of samples"),
        (np.array([0, 1, np.nan, 1]), "mse", ValueError, "y contains NaN"),
        (np.array([0, 1, 3, 1]), "cross_entropy", ValueError, r"class indices in \[0, 3\)"),
        (np.array([0, 1, -1, 1]), "cross_entropy", ValueError, "class indices"),
        (np.array([0.5, 1, 2, 1]), "cross_entropy", ValueError, "whole numbers"),
        (np.array([0, 1, 2, 1]) > 0, "cross_entropy", TypeError, "booleans"),
        (np.array([0, 1, 2, 1]), "binary_cross_entropy", ValueError, r"in \[0, 1\]"),
        (np.array(["a", "b", "a", "b"]), "mse", TypeError, "real numbers"),
        (np.ones((4, 2)), "mse", ValueError, "must have shape"),
    ],
)
def test_bad_y_is_rejected_with_a_clear_message(y, loss, exc, match):
    n_out = 3 if loss == "cross_entropy" else 1
    net = MLP([2, 4, n_out], loss=loss, backend="numpy", random_state=0)
    with pytest.raises(exc, match=match):
        net.fit(np.ones((4, 2)), y, epochs=1)


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(layer_sizes=[3]), ValueError, "at least 2 entries"),
        (dict(layer_sizes=[3, 0, 1]), ValueError, r"layer_sizes\[1\] must be >= 1"),
        (dict(layer_sizes=[3, 2.5, 1]), TypeError, r"layer_sizes\[1\] must be an integer"),
        (dict(layer_sizes="abc"), TypeError, "layer_sizes must be a sequence"),
        (dict(activation="swish"), ValueError, "activation must be one of"),
        (dict(activation=["relu", "tanh"]), ValueError, "one per hidden layer"),
        (dict(loss="hinge"), ValueError, "loss must be one of"),
        (
            dict(loss="cross_entropy", output_activation="tanh"),
            ValueError,
            "output_activation must be None or 'softmax'",
        ),
        (dict(output_activation="swish"), ValueError, "output_activation must be one of"),
        (dict(dropout=1.0), ValueError, r"dropout must be in \[0, 1\)"),
        (dict(dropout=-0.1), ValueError, "dropout"),
        (dict(batch_norm="yes"), TypeError, "batch_norm"),
        (dict(init="orthogonal"), ValueError, "init must be one of"),
        (dict(dtype="float16"), ValueError, "dtype must be float32 or float64"),
        (dict(dtype="int"), ValueError, "dtype must be float32 or float64"),
        (dict(backend="torch"), ValueError, "backend must be one of"),
        (dict(random_state=-1), ValueError, "random_state"),
        (dict(random_state="seed"), TypeError, "random_state"),
        (dict(bn_eps=0.0), ValueError, "bn_eps"),
    ],
)
def test_bad_constructor_arguments_name_themselves(kwargs, exc, match):
    args = dict(layer_sizes=[3, 4, 2], backend="numpy")
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        MLP(**args)


def test_cross_entropy_needs_two_outputs():
    with pytest.raises(ValueError, match="at least 2 outputs"):
        MLP([3, 1], loss="cross_entropy", backend="numpy")


# --- workspaces --------------------------------------------------------------------------------


def test_training_reuses_its_workspaces(monkeypatch):
    monkeypatch.setattr("fastnn._epoch.supports", lambda model, optimizer: False)
    X, y = _data(100), np.arange(100) % 2
    net = MLP([3, 8, 2], loss="cross_entropy", backend="numpy", random_state=0)
    net.fit(X, y, epochs=1, batch_size=32)
    spaces = dict(net._train_spaces)
    assert sorted(spaces) == [4, 32]  # the full batches and the last partial one

    def arrays(ws):
        return [id(a) for lws in ws.layers for a in lws.values()] + [id(ws.g), id(ws.xb)]

    ids = {m: arrays(ws) for m, ws in spaces.items()}
    params_id = id(net.params)
    net.fit(X, y, epochs=3, batch_size=32)
    assert {m: arrays(ws) for m, ws in net._train_spaces.items()} == ids
    assert id(net.params) == params_id


# --- backends -------------------------------------------------------------------------------


def test_default_backend_and_switching():
    net = MLP([2, 3, 1], random_state=0)
    assert net.backend_name == fastnn.default_backend_name()
    net.set_backend("numpy")
    assert net.kernels is fastnn.backend("numpy")


# --- freezing and transfer learning ------------------------------------------------------------


def test_frozen_layers_are_not_updated():
    X, y = _data(64), np.arange(64) % 3
    net = MLP([3, 8, 8, 3], loss="cross_entropy", backend="numpy", random_state=0)
    before = net.params.copy()
    net.freeze([0, 1])
    assert [layer.frozen for layer in net.layers] == [True, True, False]
    net.fit(X, y, optimizer=fastnn.Adam(0.01, weight_decay=0.1, decay_biases=True), epochs=3)
    changed = net.params != before
    w_out = net.n_weights - net.layers[2].W.size
    assert not changed[:w_out].any()  # weights of layers 0 and 1
    assert changed[w_out : net.n_weights].all()  # output weights
    b = net.n_weights
    assert not changed[b : b + 16].any()  # biases of layers 0 and 1
    assert changed[b + 16 :].all()  # output bias
    net.unfreeze()
    assert not any(layer.frozen for layer in net.layers)


def test_freeze_arguments():
    net = MLP([3, 4, 4, 2], backend="numpy")
    net.freeze(slice(0, -1))
    assert [layer.frozen for layer in net.layers] == [True, True, False]
    net.unfreeze(-2)
    assert [layer.frozen for layer in net.layers] == [True, False, False]
    with pytest.raises(ValueError, match="out of range"):
        net.freeze(5)
    net.freeze()
    with pytest.raises(ValueError, match="every layer of the model is frozen"):
        net.fit(_data(8), np.zeros((8, 2)), epochs=1)


def test_replace_output_keeps_hidden_layers_and_drops_the_optimizer():
    X = _data(60)
    net = MLP(
        [3, 6, 5, 3],
        loss="cross_entropy",
        batch_norm=[True, False],
        backend="numpy",
        random_state=0,
    )
    net.fit(X, np.arange(60) % 3, epochs=2)
    hidden = [layer.W.copy() for layer in net.dense_layers[:-1]]
    stats = net.layers[1].running_mean.copy()
    assert net.optimizer is not None
    net.replace_output(1, loss="mse")
    assert net.layer_sizes == [3, 6, 5, 1] and net.loss.name == "mse"
    assert net.optimizer is None
    for layer, w in zip(net.dense_layers[:-1], hidden):
        np.testing.assert_array_equal(layer.W, w)
    np.testing.assert_array_equal(net.layers[1].running_mean, stats)
    assert not net.layers[-1].b.any()
    net.fit(X, X[:, 0], epochs=1)  # trains on the new task


@pytest.mark.parametrize("backend", ["numba", "cython"])
def test_a_training_epoch_allocates_no_workspace_sized_arrays(backend):
    import tracemalloc

    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((2048, 64)), rng.integers(0, 10, 2048)
    net = MLP(
        [64, 256, 256, 10],
        loss="cross_entropy",
        batch_norm=True,
        dropout=0.1,
        backend=backend,
        random_state=0,
    )
    net.fit(X, y, epochs=1, batch_size=128)  # warm-up: workspaces, optimizer state
    Xc, yc = net.check_data(X, y)
    one_activation = 128 * 256 * net.dtype.itemsize
    tracemalloc.start()
    try:
        net.train_epoch(Xc, yc, net.optimizer, 128)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # 16 steps: the epoch's permutation (2048 int64) and small per-step objects only,
    # never an array the size of one batch's activations (the NumPy reference, which
    # allocates temporaries inside its kernels, is left out on purpose).
    assert peak < 2048 * 8 + one_activation // 4


# --- input fuzzing ----------------------------------------------------------------------------

from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.extra import numpy as hnp  # noqa: E402

_FUZZ_NET = MLP([3, 4, 2], loss="cross_entropy", backend="numpy", random_state=0)


@given(
    hnp.arrays(
        dtype=st.sampled_from(
            ["float16", "float32", "float64", "int8", "int64", "uint16", "bool", "complex64", "U3"]
        ),
        shape=hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=5),
    )
)
def test_any_input_predicts_correctly_or_raises_a_clear_error(X):
    try:
        out = _FUZZ_NET.predict_proba(X)
    except (TypeError, ValueError) as exc:
        assert str(exc).startswith("X ")  # the message names the argument
        return
    assert X.ndim == 2 and X.shape[0] > 0 and X.shape[1] == 3
    assert X.dtype.kind in "biuf"
    assert out.shape == (X.shape[0], 2) and np.isfinite(out).all()
    np.testing.assert_allclose(out.sum(1), 1, rtol=1e-5)


# --- pickling --------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_pickled_model_keeps_its_layout_and_trains_like_the_original(backend):
    import copy
    import pickle

    rng = np.random.default_rng(0)
    X = rng.standard_normal((64, 3)).astype(np.float32)
    y = (X[:, 0] > 0).astype(np.int64)
    net = MLP([3, 8, 2], loss="cross_entropy", batch_norm=True, backend=backend, random_state=0)
    net.fit(X, y, epochs=2, batch_size=16, optimizer=fastnn.Adam(0.01))
    for twin in (pickle.loads(pickle.dumps(net)), copy.deepcopy(net)):
        # The layers are views of the rebuilt flat buffers again.
        assert np.shares_memory(twin.layers[0].W, twin.params)
        assert np.shares_memory(twin.layers[0].dW, twin.grads)
        assert twin.backend_name == backend and twin.optimizer.t == net.optimizer.t
        np.testing.assert_array_equal(twin.predict_proba(X), net.predict_proba(X))
    twin = pickle.loads(pickle.dumps(net))
    net.fit(X, y, epochs=2, batch_size=16)
    twin.fit(X, y, epochs=2, batch_size=16)
    np.testing.assert_array_equal(twin.params, net.params)
    np.testing.assert_array_equal(twin.buffers, net.buffers)
