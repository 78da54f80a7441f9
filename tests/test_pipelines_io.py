"""fastnn.save / fastnn.load of scikit-learn pipelines with fastnn estimators inside.

The pipeline is persisted by skops, stored as the one array of a fastnn file of kind
"pipeline" (docs/format.md, "Pipelines"). Loading refuses, before anything is built,
every type outside fastnn's explicit list; saving refuses what could not be loaded.
"""

import io
import json
import os
import struct
import sys
import zipfile

import numpy as np
import pytest

pytest.importorskip("sklearn")
sio = pytest.importorskip("skops.io")
pd = pytest.importorskip("pandas")

from sklearn.compose import ColumnTransformer  # noqa: E402
from sklearn.impute import SimpleImputer  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.pipeline import Pipeline, make_pipeline  # noqa: E402
from sklearn.preprocessing import (  # noqa: E402
    FunctionTransformer,
    MaxAbsScaler,
    MinMaxScaler,
    OneHotEncoder,
    OrdinalEncoder,
    RobustScaler,
    StandardScaler,
)

import fastnn  # noqa: E402
from fastnn import ModelFileError  # noqa: E402
from fastnn._pipeline_io import allowed_types, trusted_types  # noqa: E402
from fastnn.cli import main as cli_main  # noqa: E402
from fastnn.estimators import MLPClassifier, MLPRegressor  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


def _numeric(n=60, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3)) * [1.0, 10.0, 100.0]
    return X, np.where(X[:, 0] + X[:, 1] / 10 > 0, "yes", "no")


def _frame(n=48, seed=0):
    rng = np.random.default_rng(seed)
    df = pd.DataFrame(
        {
            "size": rng.normal(50, 10, n),
            "age": rng.integers(0, 30, n).astype(float),
            "colour": rng.choice(["red", "green", "blue"], n).astype(object),
            "shape": rng.choice(["round", "square"], n).astype(object),
        }
    )
    df.loc[::5, "size"] = np.nan
    df.loc[::7, "colour"] = np.nan
    y = df["age"].to_numpy() * 0.1 + (df["colour"] == "red") + rng.normal(0, 0.1, n)
    return df, y


def _column_pipeline():
    numeric = make_pipeline(SimpleImputer(), StandardScaler())
    categorical = make_pipeline(
        SimpleImputer(strategy="most_frequent"), OneHotEncoder(handle_unknown="ignore")
    )
    pre = ColumnTransformer(
        [("num", numeric, ["size", "age"]), ("cat", categorical, ["colour", "shape"])]
    )
    return Pipeline(
        [("pre", pre), ("net", MLPRegressor(hidden_layer_sizes=(6,), max_iter=30, random_state=0))]
    )


def _classifier_pipeline():
    X, y = _numeric()
    return Pipeline(
        [
            ("scale", StandardScaler()),
            ("net", MLPClassifier(hidden_layer_sizes=(5,), max_iter=30, random_state=0)),
        ]
    ).fit(X, y), X


# --- round trips --------------------------------------------------------------------------


def test_scaler_and_classifier_round_trip(tmp_path):
    pipe, X = _classifier_pipeline()
    path = tmp_path / "pipe.fastnn"
    fastnn.save(pipe, path)
    back = fastnn.load(path)
    assert type(back) is Pipeline and [n for n, _ in back.steps] == ["scale", "net"]
    assert np.array_equal(back.predict(X), pipe.predict(X))
    assert np.array_equal(back.predict_proba(X), pipe.predict_proba(X))  # bit for bit
    assert list(back.classes_) == ["no", "yes"]
    # the estimator keeps training where it stopped, as a fastnn estimator file does
    back.named_steps["net"].partial_fit(back.named_steps["scale"].transform(X), _numeric()[1])


def test_column_transformer_on_a_frame_with_nan_and_text(tmp_path):
    df, y = _frame()
    pipe = _column_pipeline().fit(df, y)
    path = tmp_path / "cols.fastnn"
    fastnn.save(pipe, path)
    back = fastnn.load(path)
    new, _ = _frame(20, seed=1)
    new.loc[0, "colour"] = "purple"  # unknown category: ignored, as before saving
    for frame in (df, new):
        assert np.array_equal(back.predict(frame), pipe.predict(frame))
    assert list(back.feature_names_in_) == list(df.columns)


@pytest.mark.parametrize(
    "steps",
    [
        [MinMaxScaler(), RobustScaler(), MaxAbsScaler()],
        [FunctionTransformer(), StandardScaler()],
        [FunctionTransformer(feature_names_out="one-to-one")],
    ],
)
def test_other_preprocessing_steps(tmp_path, steps):
    X, y = _numeric()
    pipe = make_pipeline(
        *steps, MLPClassifier(hidden_layer_sizes=(4,), max_iter=20, random_state=0)
    ).fit(X, y)
    fastnn.save(pipe, tmp_path / "p")
    assert np.array_equal(fastnn.load(tmp_path / "p").predict_proba(X), pipe.predict_proba(X))


def test_ordinal_encoder_passthrough_and_drop(tmp_path):
    df, y = _frame()
    pre = ColumnTransformer(
        [
            (
                "cat",
                OrdinalEncoder(
                    handle_unknown="use_encoded_value", unknown_value=-1, encoded_missing_value=-2
                ),
                ["colour", "shape"],
            ),
            ("age", "passthrough", ["age"]),
            ("size", "drop", ["size"]),
        ],
        remainder="drop",
    )
    pipe = make_pipeline(
        pre, StandardScaler(), MLPRegressor(hidden_layer_sizes=(3,), max_iter=20, random_state=0)
    ).fit(df, y)
    fastnn.save(pipe, tmp_path / "p")
    assert np.array_equal(fastnn.load(tmp_path / "p").predict(df), pipe.predict(df))


def test_unfitted_pipeline_round_trips(tmp_path):
    pipe = make_pipeline(StandardScaler(), MLPClassifier(hidden_layer_sizes=(3,)))
    fastnn.save(pipe, tmp_path / "p")
    back = fastnn.load(tmp_path / "p")
    assert back.get_params()["mlpclassifier__hidden_layer_sizes"] == (3,)


def test_backend_argument_applies_to_the_networks(tmp_path):
    pipe, X = _classifier_pipeline()
    fastnn.save(pipe, tmp_path / "p")
    back = fastnn.load(tmp_path / "p", backend="numpy")
    assert back.named_steps["net"]._model.backend_name == "numpy"
    np.testing.assert_allclose(back.predict_proba(X), pipe.predict_proba(X), rtol=1e-6)


def test_save_is_atomic_and_refuses_special_files(tmp_path):
    pipe, _ = _classifier_pipeline()
    with pytest.raises(IsADirectoryError):
        fastnn.save(pipe, tmp_path)
    with pytest.raises(FileNotFoundError):
        fastnn.save(pipe, tmp_path / "missing" / "p")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(OSError, match="FIFO"):
        fastnn.save(pipe, fifo)
    assert sorted(os.listdir(tmp_path)) == ["fifo"]  # no temporary file left


def test_the_file_is_a_fastnn_file_holding_a_skops_archive(tmp_path):
    pipe, _ = _classifier_pipeline()
    fastnn.save(pipe, tmp_path / "p")
    header, data = _split(tmp_path / "p")
    meta = header["__metadata__"]
    assert meta["format"] == "fastnn" and meta["kind"] == "pipeline"
    assert meta["object"] == "sklearn.pipeline.Pipeline"
    assert set(header) == {"__metadata__", "skops"} and header["skops"]["dtype"] == "U8"
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        assert zf.read("schema.json")
    # what fastnn trusts is an explicit list; skops' own loader accepts the archive
    # with exactly that list
    assert sio.get_untrusted_types(data=data) and set(sio.get_untrusted_types(data=data)) <= set(
        trusted_types()
    )
    assert type(sio.loads(data, trusted=trusted_types())) is Pipeline


# --- refused at save ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "step, match",
    [
        (
            FunctionTransformer(np.log1p),
            r"step 'functiontransformer' is a "
            r"FunctionTransformer with func=",
        ),
        (FunctionTransformer(inverse_func=np.expm1), "inverse_func="),
        (FunctionTransformer(lambda x: x), "<lambda>"),
        (FunctionTransformer(feature_names_out=lambda t, n: n), "feature_names_out="),
        (LogisticRegression(), r"step 'logisticregression' is a sklearn\.linear_model"),
    ],
)
def test_save_refuses_what_could_not_be_loaded_safely(tmp_path, step, match):
    pipe = make_pipeline(StandardScaler(), step)
    with pytest.raises(TypeError, match=match):
        fastnn.save(pipe, tmp_path / "p")
    assert not os.listdir(tmp_path)


def test_save_names_a_nested_step(tmp_path):
    pre = ColumnTransformer(
        [("num", make_pipeline(SimpleImputer(), FunctionTransformer(np.sqrt)), [0])]
    )
    with pytest.raises(TypeError, match=r"step 'pre/num/functiontransformer'"):
        fastnn.save(Pipeline([("pre", pre)]), tmp_path / "p")


class _Custom(StandardScaler):
    pass


def test_save_refuses_an_unknown_class_and_a_function_in_a_parameter(tmp_path):
    with pytest.raises(TypeError, match="_Custom"):
        fastnn.save(make_pipeline(_Custom()), tmp_path / "p")
    # a callable hidden in a parameter of an accepted type: the audit of the skops data
    pipe, _ = _classifier_pipeline()
    pipe.named_steps["scale"].copy = print
    with pytest.raises(TypeError, match=r"step 'scale' holds builtins\.print"):
        fastnn.save(pipe, tmp_path / "p")
    assert not os.listdir(tmp_path)


def test_save_refuses_a_random_state_object(tmp_path):
    X, y = _numeric()
    pipe = make_pipeline(
        StandardScaler(),
        MLPClassifier(hidden_layer_sizes=(3,), max_iter=5, random_state=np.random.RandomState(0)),
    )
    with pytest.raises(
        TypeError,
        match=r"step 'mlpclassifier' has random_state="
        r"RandomState\(\.\.\.\).*integer seed",
    ):
        fastnn.save(pipe.fit(X, y), tmp_path / "p")


def test_without_skops_save_and_load_say_what_to_install(tmp_path, monkeypatch, capsys):
    pipe, X = _classifier_pipeline()
    fastnn.save(pipe, tmp_path / "p")
    monkeypatch.setitem(sys.modules, "skops", None)  # `import skops.io` fails
    monkeypatch.setitem(sys.modules, "skops.io", None)
    hint = r"pip install 'fastnn-mlp\[pipeline\]'"
    with pytest.raises(ImportError, match=hint):
        fastnn.save(pipe, tmp_path / "q")
    with pytest.raises(ImportError, match=hint):
        fastnn.load(tmp_path / "p")
    (tmp_path / "x.csv").write_text("a,b,c\n1,2,3\n")
    capsys.readouterr()
    assert cli_main(["predict", str(tmp_path / "p"), str(tmp_path / "x.csv")]) == 1
    assert "fastnn-mlp[pipeline]" in capsys.readouterr().err
    assert not (tmp_path / "q").exists()


def test_save_of_other_objects_still_refused(tmp_path):
    with pytest.raises(TypeError, match="got dict"):
        fastnn.save({"a": 1}, tmp_path / "p")


# --- refused at load ------------------------------------------------------------------------


def _split(path):
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8 : 8 + n]), raw[8 + n :]


def _write_pipeline_file(path, data: bytes):
    """A fastnn file of kind "pipeline" around any skops bytes (as an attacker would)."""
    fastnn.io._write_file(
        path,
        {"format": "fastnn", "format_version": "1", "kind": "pipeline"},
        {"skops": np.frombuffer(data, np.uint8)},
    )


def _rezip(data: bytes, edit, compression=zipfile.ZIP_STORED) -> bytes:
    """The skops archive ``data`` with its schema.json changed by ``edit(schema)``."""
    out = io.BytesIO()
    with (
        zipfile.ZipFile(io.BytesIO(data)) as src,
        zipfile.ZipFile(out, "w", compression=compression) as dst,
    ):
        for name in src.namelist():
            raw = src.read(name)
            if name == "schema.json":
                schema = json.loads(raw)
                edit(schema)
                raw = json.dumps(schema).encode()
            dst.writestr(name, raw)
    return out.getvalue()


def _nodes(state, loader=None, name=None):
    """Every node of a skops schema (optionally of a loader and type name)."""
    stack = [state]
    while stack:
        v = stack.pop()
        if isinstance(v, list):
            stack.extend(v)
        elif isinstance(v, dict):
            stack.extend(v.values())
            if (
                "__loader__" in v
                and (loader is None or v["__loader__"] == loader)
                and (name is None or f"{v['__module__']}.{v['__class__']}" == name)
            ):
                yield v


def test_function_transformer_with_os_system_is_refused(tmp_path):
    data = sio.dumps(make_pipeline(FunctionTransformer(os.system), StandardScaler()))
    _write_pipeline_file(tmp_path / "evil", data)
    with pytest.raises(ModelFileError, match=r"evil: refused: .*(posix|os)\.system"):
        fastnn.load(tmp_path / "evil")


def _json_node(value):
    # a new node: no "__id__" (skops reuses the first node of an id it has seen)
    return {
        "__class__": "str",
        "__module__": "builtins",
        "__loader__": "JsonNode",
        "content": json.dumps(value),
        "is_json": True,
    }


def test_a_file_that_would_run_code_on_load_is_refused_before_anything_runs(tmp_path):
    marker = tmp_path / "marker"
    # a node that skops builds by calling os.mkdir(marker), hidden in a step's state
    call = {
        "__class__": "mkdir",
        "__module__": "os",
        "__loader__": "ConstructorFromReduceNode",
        "content": {
            "__class__": "tuple",
            "__module__": "builtins",
            "__loader__": "TupleNode",
            "content": [_json_node(str(marker))],
        },
    }

    def hide(schema):
        scaler = next(_nodes(schema, "ObjectNode", "sklearn.preprocessing._data.StandardScaler"))
        scaler["content"]["content"]["with_mean"] = call

    evil = _rezip(sio.dumps(_classifier_pipeline()[0]), hide)
    # the file is live: skops, told to trust os.mkdir, runs it
    sio.loads(evil, trusted=trusted_types() + ["os.mkdir"])
    assert marker.is_dir()
    marker.rmdir()
    _write_pipeline_file(tmp_path / "evil", evil)
    with pytest.raises(ModelFileError, match=r"refused: .*os\.mkdir.*nothing was loaded"):
        fastnn.load(tmp_path / "evil")
    assert not marker.exists()


@pytest.mark.parametrize(
    "obj",
    [
        make_pipeline(StandardScaler(), LogisticRegression()),  # trusted by skops, not fastnn
        {"not": "an estimator"},
        [1, 2, 3],
    ],
)
def test_types_outside_fastnn_list_are_refused(tmp_path, obj):
    if isinstance(obj, Pipeline):
        obj.fit(*_numeric())
    _write_pipeline_file(tmp_path / "f", sio.dumps(obj))
    with pytest.raises(ModelFileError, match="refused"):
        fastnn.load(tmp_path / "f")


def test_allowed_types_hold_no_function_or_generic_constructor():
    allowed = allowed_types()
    assert set(allowed) == {
        "ObjectNode",
        "DictNode",
        "ListNode",
        "TupleNode",
        "SliceNode",
        "JsonNode",
        "TypeNode",
        "NdArrayNode",
        "DTypeNode",
    }
    assert "sklearn.linear_model._logistic.LogisticRegression" not in allowed["ObjectNode"]
    assert all(n.startswith(("builtins.", "numpy.")) for n in allowed["TypeNode"])


def test_truncated_and_corrupt_files(tmp_path):
    pipe, _ = _classifier_pipeline()
    path = tmp_path / "p"
    fastnn.save(pipe, path)
    raw = path.read_bytes()
    (tmp_path / "short").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ModelFileError, match="short: file is truncated"):
        fastnn.load(tmp_path / "short")
    _, data = _split(path)
    for name, bad in [
        ("garbage", b"not a zip" * 10),
        ("cut", data[: len(data) // 2]),
        ("flipped", data[:-40] + bytes(b ^ 0xFF for b in data[-40:])),
        ("noschema", _rezip(data, lambda s: s.clear())),
    ]:
        _write_pipeline_file(tmp_path / name, bad)
        with pytest.raises(ModelFileError, match=f"{name}: (damaged|refused)"):
            fastnn.load(tmp_path / name)
    # every byte of the archive's end (central directory) damaged one at a time
    for i in range(len(data) - 22, len(data), 3):
        bad = data[:i] + bytes([data[i] ^ 0x5A]) + data[i + 1 :]
        _write_pipeline_file(tmp_path / "b", bad)
        try:
            fastnn.load(tmp_path / "b")
        except ModelFileError:
            pass


def test_random_damage_gives_model_file_error_or_a_loadable_pipeline(tmp_path):
    """Values of schema.json replaced, keys dropped, bytes flipped: fastnn.load raises
    ModelFileError or returns an object (never another exception)."""
    import copy
    import random

    pipe, X = _classifier_pipeline()
    data = sio.dumps(pipe)
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        schema = json.loads(zf.read("schema.json"))
    rnd = random.Random(0)
    values = [None, 0, -1, 10**30, "x", [], {}, 1.5, True, "numpy.ndarray", _json_node("1e400")]
    refused = 0
    for _ in range(150):
        s = copy.deepcopy(schema)
        objs = [d for d in _dicts(s) if d]
        for _ in range(rnd.randint(1, 3)):
            d = rnd.choice(objs)
            key = rnd.choice(list(d))
            if rnd.random() < 0.3:
                del d[key]
            else:
                d[key] = copy.deepcopy(rnd.choice(values + objs[:20]))
        bad = _rezip(data, lambda t, s=s: (t.clear(), t.update(s)))
        if rnd.random() < 0.5:
            i = rnd.randrange(len(bad))
            bad = bad[:i] + bytes([bad[i] ^ 0xFF]) + bad[i + 1 :]
        _write_pipeline_file(tmp_path / "f", bad)
        try:
            fastnn.load(tmp_path / "f")
        except ModelFileError:
            refused += 1
    assert refused > 100


def _dicts(state):
    stack, out = [state], []
    while stack:
        v = stack.pop()
        if isinstance(v, list):
            stack.extend(v)
        elif isinstance(v, dict):
            out.append(v)
            stack.extend(v.values())
    return out


def test_compressed_members_are_refused(tmp_path):
    pipe, _ = _classifier_pipeline()
    data = _rezip(sio.dumps(pipe), lambda s: None, compression=zipfile.ZIP_DEFLATED)
    _write_pipeline_file(tmp_path / "z", data)
    with pytest.raises(ModelFileError, match="is compressed"):
        fastnn.load(tmp_path / "z")


def test_a_network_larger_than_its_arrays_is_refused_before_allocation(tmp_path):
    pipe, _ = _classifier_pipeline()

    def grow(schema):
        mlp = next(_nodes(schema, "ObjectNode", "fastnn.model.MLP"))
        layer = mlp["content"]["content"]["config"]["content"]["layers"]["content"][-1]
        layer["content"]["n_out"] = _json_node(10**9)  # the output layer: it still chains

    _write_pipeline_file(tmp_path / "big", _rezip(sio.dumps(pipe), grow))
    with pytest.raises(ModelFileError, match=r"damaged pipeline data .*params must have"):
        fastnn.load(tmp_path / "big")


def test_an_estimator_inconsistent_with_its_network_is_refused(tmp_path):
    pipe, _ = _classifier_pipeline()

    def lie(schema):
        est = next(_nodes(schema, "ObjectNode", "fastnn.estimators.MLPClassifier"))
        est["content"]["content"]["n_features_in_"] = _json_node(7)

    _write_pipeline_file(tmp_path / "lie", _rezip(sio.dumps(pipe), lie))
    with pytest.raises(ModelFileError, match="lie: invalid MLPClassifier metadata"):
        fastnn.load(tmp_path / "lie")


def test_extra_arrays_are_refused(tmp_path):
    fastnn.io._write_file(
        tmp_path / "x",
        {"format": "fastnn", "format_version": "1", "kind": "pipeline"},
        {"skops": np.zeros(4, np.uint8), "more": np.zeros(2)},
    )
    with pytest.raises(ModelFileError, match="one uint8 array 'skops'"):
        fastnn.load(tmp_path / "x")


# --- the command line -----------------------------------------------------------------------


def test_cli_predict_with_a_numeric_pipeline(tmp_path, capsys):
    pipe, X = _classifier_pipeline()
    fastnn.save(pipe, tmp_path / "p.fastnn")
    csv = tmp_path / "x.csv"
    csv.write_text("a,b,c\n" + "".join(",".join(repr(float(v)) for v in row) + "\n" for row in X))
    out = tmp_path / "pred.csv"
    assert (
        cli_main(["predict", str(tmp_path / "p.fastnn"), str(csv), "-o", str(out), "--proba"]) == 0
    )
    lines = out.read_text().splitlines()
    assert lines[0] == "prediction,proba_no,proba_yes"
    assert [ln.split(",")[0] for ln in lines[1:]] == list(pipe.predict(X))


def test_cli_predict_with_a_column_transformer_pipeline(tmp_path, capsys):
    df, y = _frame()
    pipe = _column_pipeline().fit(df, y)
    fastnn.save(pipe, tmp_path / "p.fastnn")
    df.to_csv(tmp_path / "x.csv", index=False)
    out = tmp_path / "pred.csv"
    rc = cli_main(["predict", str(tmp_path / "p.fastnn"), str(tmp_path / "x.csv"), "-o", str(out)])
    if rc != 0:
        pytest.skip(
            "fastnn predict cannot yet feed text and empty cells to a "
            "Pipeline: " + capsys.readouterr().err.strip()
        )
    got = pd.read_csv(out)["prediction"].to_numpy()
    np.testing.assert_allclose(got, pipe.predict(df), rtol=1e-6)
