"""fastnn.layers: the layer protocol, layer lists, the layout rule and format 1 files."""

from pathlib import Path

import numpy as np
import pytest

import fastnn
from _bounds import whole_run_bound
from _gradients import grad_check
from fastnn import MLP, Adam, BatchNorm, Dense, Dropout, _epoch
from fastnn.layers import LAYER_TYPES, Layer, Slot, layout

DATA = Path(__file__).parent / "data"
BACKENDS = fastnn.available_backends()


def _data(n=48, d=5, k=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, d)), rng.integers(0, k, n)


# --- the layer list is the layer_sizes form ---------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_layer_list_trains_exactly_as_the_layer_sizes_form(backend, dtype):
    X, y = _data()
    sized = MLP(
        [5, 8, 6, 3],
        ["relu", "gelu"],
        loss="cross_entropy",
        dropout=[0.2, 0.0],
        batch_norm=[False, True],
        dtype=dtype,
        backend=backend,
        random_state=7,
    )
    listed = MLP(
        [
            Dense(5, 8, "relu"),
            Dropout(0.2),
            Dense(8, 6, bias=False),
            BatchNorm(activation="gelu"),
            Dense(6, 3),
        ],
        loss="cross_entropy",
        dtype=dtype,
        backend=backend,
        random_state=7,
    )
    assert listed.get_config() == sized.get_config()
    np.testing.assert_array_equal(listed.params, sized.params)
    for net in (sized, listed):
        net.fit(X, y, epochs=3, batch_size=16, verbose=0)
    np.testing.assert_array_equal(listed.params, sized.params)
    np.testing.assert_array_equal(listed.buffers, sized.buffers)


def test_the_model_builds_its_own_copies_of_the_layers():
    dense = Dense(4, 2)
    net = MLP([dense], backend="numpy", random_state=0)
    assert net.layers[0] is not dense and dense.W is None
    assert net.layers[0].W.shape == (4, 2)


def test_layer_views_and_layout_offsets_agree():
    net = MLP(
        [Dense(3, 4, bias=False), BatchNorm(), Dropout(0.5), Dense(4, 2)],
        backend="numpy",
        random_state=0,
    )
    plan = layout(net.layers)
    assert plan == net.layout
    base = net.params.__array_interface__["data"][0]
    for i, layer in enumerate(net.layers):
        for name, (offset, shape) in plan.params[i].items():
            view = getattr(layer, name)
            assert view.shape == shape
            assert view.__array_interface__["data"][0] == base + offset * net.params.itemsize
    # weights first (both W), then gamma, beta of the BatchNorm and b of the output
    assert plan.params[0]["W"][0] == 0 and plan.params[3]["W"][0] == 12
    assert [plan.params[1]["gamma"][0], plan.params[1]["beta"][0], plan.params[3]["b"][0]] == [
        20,
        24,
        28,
    ]
    assert plan.buffers[1] == {"running_mean": (0, (4,)), "running_var": (4, (4,))}
    np.testing.assert_array_equal(net.layers[1].gamma, 1)
    np.testing.assert_array_equal(net.layers[1].running_var, 1)


# --- bad input -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "layers, error, match",
    [
        ([Dense(3, 4), Dense(5, 2)], ValueError, r"layer_sizes\[1\] \(Dense\) takes 5 inputs but"),
        ([Dense(3, 4), BatchNorm(5), Dense(5, 2)], ValueError, "do not chain"),
        ([Dropout(0.1), Dense(3, 2)], ValueError, r"layer_sizes\[0\] \(Dropout\) has no width"),
        ([BatchNorm(3), Dropout(0.1), Dense(3, 2)], ValueError, "must follow a Dense layer"),
        ([Dense(3, 4), Dropout(0.1), Dropout(0.2), Dense(4, 2)], ValueError, "at most one"),
        ([Dense(3, 4), Dropout(0.1)], ValueError, "the last layer must be a Dense layer"),
        ([Dense(3, 4, "relu"), Dense(4, 2, "softmax")], ValueError, "activation 'identity'"),
        ([Dense(3, 4), 7], TypeError, r"layer_sizes\[1\] must be a fastnn layer"),
    ],
)
def test_layer_lists_that_do_not_make_a_model_are_refused(layers, error, match):
    with pytest.raises(error, match=match):
        MLP(layers, loss="cross_entropy", backend="numpy")


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: Dense(3, 0), "n_out must be >= 1"),
        (lambda: Dense(3, 2, "swish"), "activation must be one of"),
        (lambda: Dropout(1.0), r"rate must be in \[0, 1\)"),
        (lambda: Dropout(-0.1), r"rate must be in \[0, 1\)"),
        (lambda: BatchNorm(4, eps=0), "eps must be > 0"),
        (lambda: BatchNorm(4, momentum=2), r"momentum must be in \[0, 1\]"),
    ],
)
def test_bad_layer_settings_are_refused_naming_the_setting(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_settings_of_the_layer_sizes_form_are_refused_with_a_layer_list():
    with pytest.raises(TypeError, match="dropout, batch_norm must be set on the layers"):
        MLP([Dense(3, 2)], dropout=0.1, batch_norm=True, backend="numpy")


def test_batch_norm_training_refuses_one_row_before_any_kernel():
    net = MLP([Dense(3, 4, bias=False), BatchNorm(), Dense(4, 2)], backend="numpy")
    with pytest.raises(ValueError, match="xb has a single row"):
        net.train_step(np.ones((1, 3), np.float32), np.ones((1, 2), np.float32), Adam())


# --- layer lists the epoch kernels do not know: the step path ----------------------------


@pytest.mark.parametrize(
    "layers",
    [
        [Dense(5, 6), BatchNorm(activation="tanh"), Dense(6, 3)],  # a biased Dense before BN
        [BatchNorm(5), Dense(5, 6, "tanh"), Dense(6, 3)],  # normalised inputs
        [
            Dense(5, 6, bias=False),
            BatchNorm(activation="tanh", momentum=0.3),
            Dense(6, 4, bias=False),
            BatchNorm(activation="elu", eps=1e-3),
            Dropout(0.3),
            Dense(4, 3),
        ],
    ],
    ids=["bias-before-bn", "bn-on-inputs", "mixed-bn-settings"],
)
def test_other_layer_lists_train_on_the_step_path_with_exact_gradients(layers):
    X, y = _data()
    net = MLP(layers, loss="cross_entropy", dtype="float64", backend="numpy", random_state=0)
    assert _epoch.units(net) is None and not _epoch.supports(net, Adam())
    grad_check(net, X, y, fix_dropout=True)
    before = net.params.copy()
    net.fit(X, y, epochs=2, batch_size=16, verbose=0)
    assert not np.array_equal(before, net.params) and np.isfinite(net.params).all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_step_path_of_a_layer_list_is_the_epoch_path(backend, monkeypatch):
    """Same bits on both paths for a model the kernels know, built from layers."""
    X, y = _data()
    nets = []
    for path in ("epoch", "step"):
        net = MLP(
            [Dense(5, 7, bias=False), BatchNorm(activation="relu"), Dropout(0.25), Dense(7, 3)],
            loss="cross_entropy",
            backend=backend,
            random_state=2,
        )
        with monkeypatch.context() as m:
            if path == "step":
                m.setattr(_epoch, "supports", lambda model, optimizer: False)
            net.fit(X, y, epochs=2, batch_size=16, verbose=0)
        nets.append(net)
    np.testing.assert_array_equal(nets[0].params, nets[1].params)
    np.testing.assert_array_equal(nets[0].buffers, nets[1].buffers)


# --- a new layer type does not touch the model ------------------------------------------


class _Scale(Layer):
    """y = x * s per unit (s trained): a layer type written outside fastnn."""

    type = "test_scale"

    def __init__(self, n=None, frozen=False):
        self.n_in = self.n_out = n
        self.frozen = frozen

    def param_slots(self):
        return (Slot("s", (self.n_out,), fill=1.0),)

    def train_space(self, m, dtype):
        return {"out": np.empty((m, self.n_out), dtype)}

    def eval_space(self, m, dtype):
        return self.train_space(m, dtype)

    def forward(self, k, x, ws, ctx):
        np.multiply(x, self.s, out=ws["out"])
        return ws["out"]

    forward_eval = lambda self, k, x, ws: self.forward(k, x, ws, None)  # noqa: E731

    def backward(self, k, x, ws, g, need_input):
        np.sum(g * x, axis=0, out=self.ds)
        g *= self.s
        return g

    def config(self):
        return {"type": self.type, "n": self.n_out, "frozen": self.frozen}

    @classmethod
    def from_config(cls, d, where="layer"):
        return cls(d.get("n"), d.get("frozen", False))


def test_a_new_layer_type_trains_saves_and_loads_without_touching_the_model(tmp_path, monkeypatch):
    monkeypatch.setitem(LAYER_TYPES, _Scale.type, _Scale)
    X, y = _data()
    net = MLP(
        [Dense(5, 6, "tanh"), _Scale(), Dense(6, 3)],
        loss="cross_entropy",
        dtype="float64",
        backend="numpy",
        random_state=0,
    )
    net.layers[1].s[...] = np.linspace(0.5, 1.5, 6)
    grad_check(net, X, y, fix_dropout=True)
    net.fit(X, y, epochs=2, batch_size=16, verbose=0)
    fastnn.save(net, tmp_path / "m.fastnn")
    back = fastnn.load(tmp_path / "m.fastnn")
    np.testing.assert_array_equal(back.params, net.params)
    np.testing.assert_array_equal(back.predict_proba(X), net.predict_proba(X))


# --- files of the first format ---------------------------------------------------------


def test_a_format_1_file_loads_and_trains_as_it_did(tmp_path):
    """tests/data/format1_mlp.fastnn was written by fastnn 7c0c086 (format 1: one entry
    per dense layer with dropout/batch_norm flags; hidden unit 0 batch-normalised,
    dropout 0.2, frozen; bn_momentum 0.2); the .npy files hold that version's
    predictions and its parameters after one more epoch (numpy backend, Adam(0.01)),
    computed on another host: the epoch goes through NumPy's exp and the host's BLAS
    kernel, so those parameters hold within §11's bound for whole runs, and the model
    saved again in today's format loads and trains to the same bits."""
    net = fastnn.load(DATA / "format1_mlp.fastnn", backend="numpy")
    fastnn.save(net, tmp_path / "format2.fastnn")
    rebuilt = fastnn.load(tmp_path / "format2.fastnn", backend="numpy")
    assert [type(layer).__name__ for layer in net.layers] == [
        "Dense",
        "BatchNorm",
        "Dropout",
        "Dense",
        "Dense",
    ]
    assert [layer.frozen for layer in net.layers[:3]] == [True, True, False]
    assert net.layers[1].momentum == 0.2 and net.layers[2].rate == 0.2
    X = np.load(DATA / "format1_mlp_X.npy")
    proba = net.predict_proba(X)
    np.testing.assert_array_equal(proba, rebuilt.predict_proba(X))
    # another host's exp and BLAS kernel, on products of k <= 6 terms: a few ulp
    np.testing.assert_array_max_ulp(proba, np.load(DATA / "format1_mlp_proba.npy"), maxulp=4)
    rng = np.random.default_rng(0)
    Xt = rng.normal(size=(64, 5)).astype(np.float32)
    yt = rng.integers(0, 3, 64)
    for model in (net, rebuilt):
        model.unfreeze()
        model.train_epoch(*model.check_data(Xt, yt), Adam(0.01), 16, shuffle=False)
    np.testing.assert_array_equal(net.params, rebuilt.params)
    want = np.load(DATA / "format1_mlp_next_params.npy")
    bound = whole_run_bound(64 // 16, 0.01, np.maximum(np.abs(want), 1), net.dtype)
    assert (np.abs(net.params - want) <= bound).all()
    # the file saved again is of format 2
    assert net.get_config()["layers"][1]["type"] == "batch_norm"
