"""fastnn.to_onnx and the skl2onnx converter: the exported graphs, run in onnxruntime,
give fastnn's own predictions.

Tolerances: float32 models, outputs and probabilities within rtol = atol = 1e-5;
float64 models within rtol = atol = 1e-12 (observed: a few ULPs). Labels exactly equal.
Every exported model passes ``onnx.checker.check_model``.
"""

import os

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("sklearn")
skl2onnx = pytest.importorskip("skl2onnx")

import fastnn  # noqa: E402
from fastnn.onnx_export import DEFAULT_OPSET, to_onnx  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

ACTIVATIONS = [a.name for a in fastnn.registry.ACTIVATIONS]  # ONNX expresses them all
TOL = {"float32": dict(rtol=1e-5, atol=1e-5), "float64": dict(rtol=1e-12, atol=1e-12)}
# onnxruntime has no float64 Erf: a float64 gelu layer runs in float32 in the graph.
TOL_F32_INSIDE = TOL["float32"]


def _run(proto, X):
    """Check the model, run it in onnxruntime; {output name: array}."""
    onnx.checker.check_model(proto, full_check=True)
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(None, {sess.get_inputs()[0].name: X})))


def _randomise_batch_norm(model, rng):
    """Running statistics and affine parameters away from their initial 0/1."""
    for i, layer in enumerate(model.layers):
        if isinstance(layer, fastnn.BatchNorm):
            layer.running_mean[...] = rng.normal(size=layer.n_out)
            layer.running_var[...] = rng.uniform(0.3, 3.0, layer.n_out)
            layer.gamma[...] = rng.normal(size=layer.n_out)
            layer.beta[...] = rng.normal(size=layer.n_out)
            if i > 0:
                model.layers[i - 1].W[...] *= 3  # z well away from the running mean


def test_a_layer_list_exports_every_layer_in_its_order():
    """Batch normalisation on the inputs, a dense layer with bias before another one,
    dropout (the identity at inference): each layer is written as it runs."""
    rng = np.random.default_rng(3)
    for dtype in ("float32", "float64"):
        model = fastnn.MLP(
            [
                fastnn.BatchNorm(5),
                fastnn.Dense(5, 7, "tanh"),
                fastnn.Dropout(0.3),
                fastnn.Dense(7, 6),
                fastnn.BatchNorm(activation="relu", eps=1e-3),
                fastnn.Dense(6, 3),
            ],
            loss="cross_entropy",
            dtype=dtype,
            backend="numpy",
            random_state=0,
        )
        _randomise_batch_norm(model, rng)
        X, _ = _data()
        _check_mlp(model, X)


def test_a_layer_type_without_an_emitter_is_refused_naming_it(monkeypatch):
    from fastnn.layers import LAYER_TYPES, Dropout

    class Noise(Dropout):  # a layer type of one's own (the identity at inference)
        type = "test_noise"

    monkeypatch.setitem(LAYER_TYPES, Noise.type, Noise)
    model = fastnn.MLP([fastnn.Dense(3, 4), Noise(0.1), fastnn.Dense(4, 2)], backend="numpy")
    with pytest.raises(ValueError, match=r"layer 1 \(hidden layer, Noise\): .* cannot express"):
        to_onnx(model)


def _check_mlp(model, X):
    proto = to_onnx(model)
    X = X.astype(model.dtype)
    out = _run(proto, X)
    tol = TOL[model.dtype.name]
    if any(getattr(layer, "activation", "") == "gelu" for layer in model.layers):
        tol = TOL_F32_INSIDE
    assert out["output"].dtype == model.dtype
    np.testing.assert_allclose(out["output"], model.decision_function(X), **tol)
    if model.loss.name == "mse":
        assert set(out) == {"output"}
    else:
        assert set(out) == {"output", "probabilities", "label"}
        np.testing.assert_allclose(out["probabilities"], model.predict_proba(X), **tol)
        assert out["label"].dtype == np.int64
        np.testing.assert_array_equal(out["label"], model.predict(X))
    return out


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("loss", ["mse", "binary_cross_entropy", "cross_entropy"])
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_mlp_every_activation_and_loss(activation, loss, dtype):
    rng = np.random.default_rng(0)
    model = fastnn.MLP(
        [5, 8, 7, 3],
        activation,
        loss=loss,
        dtype=dtype,
        activation_alpha=(0.2 if activation in ("leaky_relu", "elu") else None),
        backend="numpy",
        random_state=1,
    )
    X = rng.normal(size=(40, 5)) * 2
    _check_mlp(model, X)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("activation", ["elu", "step", "sigmoid", "relu"])
def test_mse_output_activations(activation, dtype):
    rng = np.random.default_rng(1)
    model = fastnn.MLP(
        [4, 6, 2],
        "tanh",
        output_activation=activation,
        dtype=dtype,
        backend="numpy",
        random_state=2,
    )
    _check_mlp(model, rng.normal(size=(30, 4)))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("loss", ["mse", "binary_cross_entropy", "cross_entropy"])
def test_batch_norm_dropout_and_trained_multilayer(loss, dtype):
    rng = np.random.default_rng(2)
    X = rng.normal(size=(120, 6))
    y = {
        "mse": X[:, :2] @ rng.normal(size=(2, 2)),
        "binary_cross_entropy": (X[:, :2] > 0).astype(float),
        "cross_entropy": (X[:, 0] > 0).astype(int) + (X[:, 1] > 0),
    }[loss]
    n_out = 3 if loss == "cross_entropy" else 2
    model = fastnn.MLP(
        [6, 16, 12, 8, n_out],
        ["relu", "elu", "tanh"],
        loss=loss,
        batch_norm=[True, False, True],
        dropout=[0.2, 0.0, 0.1],
        dtype=dtype,
        backend="numpy",
        random_state=3,
    )
    model.fit(X, y, epochs=3, batch_size=16, verbose=0)
    _randomise_batch_norm(model, rng)
    _check_mlp(model, X)


def test_step_at_zero_is_one():
    model = fastnn.MLP([2, 3, 1], "step", backend="numpy", random_state=0)
    model.layers[0].W[...] = 0
    model.layers[0].b[...] = [0.0, -1.0, 1.0]  # z = 0, -1, 1 -> step 1, 0, 1
    model.layers[1].W[...] = [[1.0], [10.0], [100.0]]
    model.layers[1].b[...] = 0
    X = np.zeros((3, 2), np.float32)
    out = _check_mlp(model, X)
    np.testing.assert_array_equal(out["output"], np.full((3, 1), 101.0, np.float32))


def test_graph_shape_names_opset_and_dynamic_batch():
    model = fastnn.MLP([3, 4, 2], loss="cross_entropy", backend="numpy", random_state=0)
    proto = to_onnx(model, name="my_net")
    assert proto.graph.name == "my_net"
    assert [o.domain for o in proto.opset_import] == [""]
    assert proto.opset_import[0].version == DEFAULT_OPSET == 17
    (inp,) = proto.graph.input
    assert inp.name == "X"
    assert inp.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    dims = inp.type.tensor_type.shape.dim
    assert dims[0].dim_param and dims[1].dim_value == 3
    assert [o.name for o in proto.graph.output] == ["output", "probabilities", "label"]
    assert {i.name for i in proto.graph.initializer} >= {"W0", "b0", "W1", "b1"}
    for n in (1, 7, 1000):  # any batch size
        X = np.random.default_rng(n).normal(size=(n, 3)).astype(np.float32)
        assert _run(proto, X)["label"].shape == (n,)
    for opset in (13, onnx.defs.onnx_opset_version()):
        _run(to_onnx(model, opset=opset), np.ones((2, 3), np.float32))


def test_other_input_dtypes_are_refused_by_onnxruntime():
    model = fastnn.MLP([3, 2], backend="numpy", random_state=0)
    sess = ort.InferenceSession(
        to_onnx(model).SerializeToString(), providers=["CPUExecutionProvider"]
    )
    with pytest.raises(Exception, match="(?i)type"):
        sess.run(None, {"X": np.ones((2, 3), np.float64)})


# --- estimators ------------------------------------------------------------------------------


def _data(n=80, d=5, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)), rng


def _check_classifier(clf, X):
    X = X.astype(clf._model.dtype)
    out = _run(to_onnx(clf), X)
    assert list(out) == ["label", "probabilities"]
    np.testing.assert_allclose(
        out["probabilities"], clf.predict_proba(X), **TOL[clf._model.dtype.name]
    )
    np.testing.assert_array_equal(out["label"], clf.predict(X))
    return out


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_classifier_binary_int_labels(dtype):
    X, rng = _data()
    y = np.where(X[:, 0] + X[:, 1] > 0, 7, -3)
    clf = fastnn.MLPClassifier((8,), max_iter=20, dtype=dtype, random_state=0).fit(X, y)
    out = _check_classifier(clf, X)
    assert out["label"].dtype == np.int64 and out["probabilities"].shape == (80, 2)
    assert set(out["label"]) == {7, -3}


def test_classifier_of_a_single_class():
    """scikit-learn fits a single-class y (one logistic output, predict_proba of two
    columns): the exported graph answers that class for every row."""
    X, _ = _data()
    clf = fastnn.MLPClassifier((8,), max_iter=5, random_state=0).fit(X, ["only"] * len(X))
    out = _check_classifier(clf, X)
    assert set(out["label"]) == {"only"} and out["probabilities"].shape == (len(X), 2)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_classifier_multiclass_string_labels(dtype):
    X, rng = _data()
    y = np.array(["cat", "dog", "emu"])[(X[:, 0] > 0).astype(int) + (X[:, 1] > 0.5)]
    clf = fastnn.MLPClassifier(
        (10, 6),
        activation="tanh",
        max_iter=30,
        dtype=dtype,
        batch_norm=[True, False],
        random_state=0,
    ).fit(X, y)
    _randomise_batch_norm(clf._model, rng)
    out = _check_classifier(clf, X)
    assert out["label"].dtype == object and set(out["label"]) <= {"cat", "dog", "emu"}


def test_classifier_bool_and_whole_float_labels():
    X, _ = _data()
    for y in (X[:, 0] > 0, np.where(X[:, 0] > 0, 2.0, 5.0)):
        clf = fastnn.MLPClassifier((6,), max_iter=10, random_state=0).fit(X, y)
        out = _run(to_onnx(clf), X.astype(clf._model.dtype))
        assert out["label"].dtype == np.int64
        np.testing.assert_array_equal(out["label"], clf.predict(X).astype(np.int64))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_classifier_multilabel(dtype):
    X, _ = _data()
    Y = np.stack([X[:, 0] > 0, X[:, 1] > 0, X[:, 0] + X[:, 2] > 0], axis=1).astype(int)
    clf = fastnn.MLPClassifier(
        (8,), activation="logistic", max_iter=20, dtype=dtype, random_state=0
    ).fit(X, Y)
    out = _check_classifier(clf, X)
    assert out["label"].shape == (80, 3) and out["label"].dtype == np.int64


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("n_outputs", [1, 3])
def test_regressor(n_outputs, dtype):
    X, rng = _data()
    y = X @ rng.normal(size=(5, n_outputs))
    reg = fastnn.MLPRegressor(
        hidden_layer_sizes=(8, 8), activation="elu", max_iter=20, dtype=dtype, random_state=0
    )
    reg.fit(X, y[:, 0] if n_outputs == 1 else y)
    Xd = X.astype(reg._model.dtype)
    out = _run(to_onnx(reg), Xd)
    assert list(out) == ["variable"] and out["variable"].shape == (80, n_outputs)
    np.testing.assert_allclose(out["variable"], reg.predict(Xd).reshape(80, -1), **TOL[dtype])


# --- skl2onnx --------------------------------------------------------------------------------


def test_pipeline_scaler_classifier_through_skl2onnx():
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, _ = _data(d=4)
    X = (X * [1, 10, 100, 0.1] + 5).astype(np.float32)
    y = np.array(["no", "yes", "maybe"])[(X[:, 0] > 5).astype(int) + (X[:, 1] > 8)]
    pipe = make_pipeline(StandardScaler(), fastnn.MLPClassifier((12,), max_iter=30, random_state=0))
    pipe.fit(X, y)
    clf = pipe[-1]
    # ZipMap off: skl2onnx's "label" / "probabilities" tensors
    proto = skl2onnx.to_onnx(pipe, X[:1], options={id(clf): {"zipmap": False}})
    out = _run(proto, X)
    assert list(out) == ["label", "probabilities"]
    np.testing.assert_array_equal(out["label"], pipe.predict(X))
    # skl2onnx scales in float32 where scikit-learn scales in float64
    np.testing.assert_allclose(out["probabilities"], pipe.predict_proba(X), rtol=1e-4, atol=1e-5)
    # default: a ZipMap, as for scikit-learn's classifiers
    out = _run(skl2onnx.to_onnx(pipe, X[:1]), X)
    np.testing.assert_array_equal(out["output_label"], pipe.predict(X))
    assert sorted(out["output_probability"][0]) == sorted(clf.classes_)


def test_pipeline_column_transformer_regressor_float64_through_skl2onnx():
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import MinMaxScaler, StandardScaler

    X, rng = _data(d=4)
    y = X @ rng.normal(size=(4, 2))
    pipe = Pipeline(
        [
            (
                "cols",
                ColumnTransformer(
                    [("std", StandardScaler(), [0, 1]), ("mm", MinMaxScaler(), [2, 3])]
                ),
            ),
            (
                "mlp",
                fastnn.MLPRegressor(
                    hidden_layer_sizes=(8,),
                    max_iter=20,
                    batch_norm=True,
                    dtype="float64",
                    random_state=0,
                ),
            ),
        ]
    ).fit(X, y)
    _randomise_batch_norm(pipe[-1]._model, rng)
    proto = skl2onnx.to_onnx(pipe, X[:1])  # double input: double all the way
    out = _run(proto, X)
    np.testing.assert_allclose(out["variable"], pipe.predict(X), **TOL["float64"])
    # a float32 input: the float64 network runs on the cast input, float32 out
    out = _run(skl2onnx.to_onnx(pipe, X[:1].astype(np.float32)), X.astype(np.float32))
    assert out["variable"].dtype == np.float32
    np.testing.assert_allclose(out["variable"], pipe.predict(X), rtol=1e-4, atol=1e-4)


def test_estimator_alone_and_multilabel_through_skl2onnx():
    X, _ = _data()
    Y = np.stack([X[:, 0] > 0, X[:, 1] > 0], axis=1).astype(int)
    clf = fastnn.MLPClassifier((8,), max_iter=20, random_state=0).fit(X, Y)
    X32 = X.astype(np.float32)
    out = _run(skl2onnx.to_onnx(clf, X32[:1], options={"zipmap": False}), X32)
    np.testing.assert_array_equal(out["label"], clf.predict(X32))
    np.testing.assert_allclose(out["probabilities"], clf.predict_proba(X32), **TOL["float32"])


def test_importing_fastnn_does_not_import_onnx():
    import subprocess
    import sys

    code = (
        "import sys, fastnn; assert 'onnx' not in sys.modules, 'onnx'; "
        "assert 'skl2onnx' not in sys.modules; "
        "f = fastnn.to_onnx; assert 'onnx' in sys.modules; "
        "import fastnn.onnx_export as e; assert f is e.to_onnx"
    )
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    subprocess.run([sys.executable, "-c", code], check=True, env=env)


# --- the tabular model of the command line ---------------------------------------------------


@pytest.mark.parametrize("task", ["classify", "regress"])
def test_tabular_model(task):
    from fastnn.cli import TabularModel

    X, rng = _data(d=3)
    X = X * [1, 100, 0.01] + [0, 1000, -5]
    classify = task == "classify"
    model = fastnn.MLP(
        [3, 8, 3 if classify else 1],
        "relu",
        loss="cross_entropy" if classify else "mse",
        backend="numpy",
        random_state=0,
    )
    tab = TabularModel(
        model,
        ["a", "b", "c"],
        "t",
        task,
        ["x", "y", "z"] if classify else None,
        X.mean(axis=0),
        X.std(axis=0),
        y_mean=50.0,
        y_scale=3.0,
    )
    proto = to_onnx(tab)
    props = {p.key: p.value for p in proto.metadata_props}
    assert props["fastnn.features"] == "a,b,c"
    out = _run(proto, X)
    if classify:
        np.testing.assert_array_equal(out["label"], tab.predict(X))
        np.testing.assert_allclose(out["probabilities"], tab.predict_proba(X), **TOL["float32"])
    else:
        assert out["variable"].dtype == np.float64
        np.testing.assert_allclose(out["variable"][:, 0], tab.predict(X), rtol=1e-5, atol=1e-4)


# --- refusals --------------------------------------------------------------------------------


def test_refusals():
    from sklearn.exceptions import NotFittedError

    with pytest.raises(TypeError, match="fastnn.to_onnx exports a fastnn.MLP"):
        to_onnx(object())
    from sklearn.neural_network import MLPClassifier as SkMLP

    with pytest.raises(TypeError, match="sklearn.neural_network"):
        to_onnx(SkMLP())
    with pytest.raises(NotFittedError, match="MLPClassifier"):
        to_onnx(fastnn.MLPClassifier())
    assert issubclass(NotFittedError, ValueError)
    model = fastnn.MLP([3, 4, 2], backend="numpy", random_state=0)
    with pytest.raises(ValueError, match=r"opset must be in \[13, "):
        to_onnx(model, opset=12)
    with pytest.raises(TypeError, match="opset must be an int"):
        to_onnx(model, opset="17")
    model.layers[1].activation = "swish"  # an activation fastnn.to_onnx does not know
    with pytest.raises(ValueError, match=r"layer 1 \(output layer, Dense\) has activation 'swish'"):
        to_onnx(model)
    model = fastnn.MLP([3, 4, 2], backend="numpy", random_state=0)
    model.layers[0].W[0, 0] = np.nan
    with pytest.raises(ValueError, match="weights are not finite"):
        to_onnx(model)
    X, _ = _data()
    clf = fastnn.MLPClassifier((4,), max_iter=5, random_state=0)
    clf.fit(X, np.where(X[:, 0] > 0, 0.0, 1.0))
    clf.classes_ = np.array([0.5, 1.5])  # scikit-learn itself refuses to fit these
    with pytest.raises(ValueError, match="not whole numbers"):
        to_onnx(clf)


# --- the command line ------------------------------------------------------------------------


def _export(capsys, *argv):
    from _cli_support import run_cli

    return run_cli(capsys, *argv)


def test_cli_export_tabular_and_bare_models(tmp_path, capsys):
    from fastnn.cli import TabularModel

    X, _ = _data(d=3)
    model = fastnn.MLP(
        [3, 8, 2], "tanh", loss="cross_entropy", batch_norm=True, backend="numpy", random_state=0
    )
    tab = TabularModel(
        model, ["a", "b", "c"], "t", "classify", ["no", "yes"], X.mean(axis=0), X.std(axis=0)
    )
    fastnn.save(tab, tmp_path / "tab.fnn")
    code, out, err = _export(capsys, "export", tmp_path / "tab.fnn", tmp_path / "tab.onnx")
    assert code == 0 and err == ""
    assert "tab.onnx" in out and "label, probabilities" in out
    res = _run(onnx.load(tmp_path / "tab.onnx"), X)
    np.testing.assert_array_equal(res["label"], tab.predict(X))
    # a bare MLP, over an existing file; no temporary file is left behind
    fastnn.save(model, tmp_path / "net.fnn")
    code, out, err = _export(
        capsys, "export", tmp_path / "net.fnn", tmp_path / "tab.onnx", "--opset", "15"
    )
    assert code == 0, err
    proto = onnx.load(tmp_path / "tab.onnx")
    assert proto.opset_import[0].version == 15
    np.testing.assert_allclose(
        _run(proto, X.astype(np.float32))["probabilities"], model.predict_proba(X), **TOL["float32"]
    )
    assert sorted(os.listdir(tmp_path)) == ["net.fnn", "tab.fnn", "tab.onnx"]


@pytest.mark.parametrize("task", ["classify", "regress"])
def test_cli_export_of_a_model_trained_on_a_mixed_csv(tmp_path, capsys, task):
    """`fastnn train` on a CSV with numeric, boolean and text columns (and empty
    cells) saves Pipeline(ColumnTransformer, estimator); `fastnn export` turns it into
    a graph with one input per column (float32 numbers, strings with "" for a missing
    cell) whose answers are `fastnn predict`'s."""
    pd = pytest.importorskip("pandas")
    pytest.importorskip("skops")
    rng = np.random.default_rng(0)
    n = 240
    df = pd.DataFrame(
        {
            "age": rng.integers(18, 80, n).astype(float),
            "city": rng.choice(["Berlin", "Paris", "Rome"], n),
            "vip": rng.choice([True, False], n),
            "spend": rng.normal(100, 30, n),
        }
    )
    df.loc[::17, "age"] = np.nan
    df.loc[::23, "city"] = None
    score = df.spend + (df.city == "Paris") * 40
    df["plan"] = np.where(score > 110, "gold", "basic") if task == "classify" else score
    df.to_csv(tmp_path / "c.csv", index=False)
    from fastnn.cli import main

    assert (
        main(
            [
                "train",
                str(tmp_path / "c.csv"),
                "--target",
                "plan",
                "--epochs",
                "3",
                "-o",
                str(tmp_path / "m.fnn"),
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "predict",
                str(tmp_path / "m.fnn"),
                str(tmp_path / "c.csv"),
                "-o",
                str(tmp_path / "p.csv"),
            ]
        )
        == 0
    )
    code, out, err = _export(capsys, "export", tmp_path / "m.fnn", tmp_path / "m.onnx")
    assert code == 0, err
    assert "4 inputs, one per column (age, city, vip, spend)" in out
    sess = ort.InferenceSession(str(tmp_path / "m.onnx"))
    feeds = {
        i.name: (
            df[i.name].fillna("").astype(str)
            if i.type == "tensor(string)"
            else df[i.name].astype(np.float32)
        )
        .to_numpy()
        .reshape(-1, 1)
        for i in sess.get_inputs()
    }
    got = sess.run(None, feeds)[0].ravel()
    want = pd.read_csv(tmp_path / "p.csv")["prediction"].to_numpy()
    if task == "classify":
        np.testing.assert_array_equal(got, want.astype(str))
    else:  # float32 preprocessing in the graph: the standardised inputs differ in the
        # 7th digit, the outputs of a small network as much
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-3)


def test_cli_export_estimator(tmp_path, capsys):
    X, _ = _data()
    y = X[:, :2] @ [1.0, -2.0]
    reg = fastnn.MLPRegressor(hidden_layer_sizes=(6,), max_iter=10, random_state=0)
    fastnn.save(reg.fit(X, y), tmp_path / "reg.fnn")
    code, out, err = _export(capsys, "export", tmp_path / "reg.fnn", tmp_path / "reg.onnx")
    assert code == 0, err
    res = _run(onnx.load(tmp_path / "reg.onnx"), X)
    np.testing.assert_allclose(res["variable"][:, 0], reg.predict(X), **TOL["float64"])


def test_cli_export_errors(tmp_path, capsys):
    model = fastnn.MLP([3, 2], backend="numpy", random_state=0)
    fastnn.save(model, tmp_path / "net.fnn")
    code, _, err = _export(capsys, "export", tmp_path / "missing.fnn", tmp_path / "o.onnx")
    assert code == 1 and err.startswith("fastnn export: error: ") and "no such file" in err
    code, _, err = _export(capsys, "export", tmp_path / "net.fnn", tmp_path / "nodir" / "o.onnx")
    assert code == 1 and err.startswith("fastnn export: error: ") and "nodir" in err
    code, _, err = _export(capsys, "export", tmp_path / "net.fnn", tmp_path)
    assert code == 1 and "is a directory" in err
    code, _, err = _export(
        capsys, "export", tmp_path / "net.fnn", tmp_path / "o.onnx", "--opset", "12"
    )
    assert code == 1 and "opset must be in [13, " in err
    assert sorted(os.listdir(tmp_path)) == ["net.fnn"]


def test_without_skl2onnx_or_onnx():
    """skl2onnx is optional for to_onnx; without onnx, fastnn.to_onnx names the extra."""
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['skl2onnx'] = None\n"
        "import numpy as np, fastnn\n"
        "m = fastnn.MLP([2, 3], backend='numpy', random_state=0)\n"
        "assert fastnn.to_onnx(m).graph.output[0].name == 'output'\n"
        "try:\n    fastnn.register_skl2onnx()\nexcept ImportError as e:\n"
        '    assert "fastnn-mlp[onnx]" in str(e), e\nelse:\n    raise AssertionError\n'
    )
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    subprocess.run([sys.executable, "-c", code], check=True, env=env)
    code = (
        "import sys; sys.modules['onnx'] = None\nimport fastnn\n"
        "try:\n    fastnn.to_onnx\nexcept ImportError as e:\n"
        '    assert "fastnn-mlp[onnx]" in str(e), e\nelse:\n    raise AssertionError\n'
    )
    subprocess.run([sys.executable, "-c", code], check=True, env=env)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_poisson_models_export_their_predicted_mean(dtype):
    """loss="poisson": the MLP graph adds "prediction" = e^output; the regressor's
    "variable" (its own and inside a skl2onnx pipeline) is predict's e^z."""
    rng = np.random.default_rng(5)
    X = rng.normal(size=(60, 4))
    y = rng.poisson(np.exp(0.4 * X[:, 0]))
    model = fastnn.MLP([4, 6, 1], "gelu", loss="poisson", dtype=dtype, backend="numpy")
    fastnn.fit(model, X, y, epochs=3, batch_size=16)
    Xd = X.astype(dtype)
    out = _run(to_onnx(model), Xd)
    np.testing.assert_allclose(out["output"], model.decision_function(Xd), **TOL_F32_INSIDE)
    np.testing.assert_allclose(out["prediction"], model.predict(Xd), **TOL_F32_INSIDE)
    reg = fastnn.MLPRegressor(
        hidden_layer_sizes=(5,), loss="poisson", max_iter=5, random_state=0, dtype=dtype
    )
    reg.fit(X, y)
    got = _run(to_onnx(reg), Xd)["variable"]
    np.testing.assert_allclose(got.ravel(), reg.predict(Xd), rtol=1e-5, atol=1e-6)
