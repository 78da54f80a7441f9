"""Save and load: bit-identical round trips, continued training, and damaged or hostile files."""

import json
import os
import pickle
import struct
import subprocess
import sys
import tracemalloc

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import fastnn
from fastnn import MLP, ModelFileError
from fastnn.io import FORMAT_VERSION, read_payload, write_payload
from fastnn.optim import OPTIMIZERS
from fastnn.schedules import LinearWarmup, ReduceOnPlateau


def _data(n=80, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 3))
    return X, (X[:, 0] + X[:, 1] > 0).astype(int) + (X[:, 2] > 1)


def _trained(tmp_path=None, **kw):
    args = dict(loss="cross_entropy", dtype="float32", backend="numpy", random_state=0)
    args.update(kw)
    net = MLP([3, 8, 6, 3], **args)
    X, y = _data()
    net.fit(X, y, optimizer=fastnn.Adam(0.01), epochs=2, batch_size=16)
    return net


def _split_file(path):
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8 : 8 + n]), raw[8 + n :]


def _join_file(path, header, data):
    head = json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(head)) + head + data)


# --- round trips --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kw",
    [
        dict(),
        dict(dtype="float64", batch_norm=True, dropout=[0.2, 0.1]),
        dict(activation=["tanh", "elu"], loss="binary_cross_entropy"),
    ],
)
def test_round_trip_predicts_bit_identically(tmp_path, kw):
    if kw.get("loss") == "binary_cross_entropy":
        net = MLP([3, 8, 6, 1], **{**dict(backend="numpy", random_state=0), **kw})
        X, y = _data()
        net.fit(X, y > 0, epochs=2)
    else:
        net = _trained(**kw)
    net.freeze(0)
    path = tmp_path / "m.fastnn"
    fastnn.save(net, path)
    loaded = fastnn.load(path)
    assert loaded.get_config() == net.get_config()
    np.testing.assert_array_equal(loaded.params, net.params)
    np.testing.assert_array_equal(loaded.buffers, net.buffers)
    X, _ = _data(50, seed=1)
    np.testing.assert_array_equal(loaded.decision_function(X), net.decision_function(X))
    assert loaded.layers[0].frozen and not loaded.layers[1].frozen
    assert repr(loaded.optimizer) == repr(net.optimizer)


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_loaded_model_continues_training_exactly(tmp_path, name):
    X, y = _data()
    sched = LinearWarmup(1, ReduceOnPlateau(0.01, patience=1))
    a = MLP([3, 8, 3], loss="cross_entropy", dropout=0.1, backend="numpy", random_state=0)
    a.fit(
        X,
        y,
        optimizer=OPTIMIZERS[name](lr=sched, weight_decay=1e-3),
        epochs=3,
        batch_size=16,
        validation_split=0.25,
    )
    fastnn.save(a, tmp_path / "a.fastnn")
    b = fastnn.load(tmp_path / "a.fastnn")
    assert b.optimizer.t == a.optimizer.t and b.optimizer.epoch == 3
    # continuing both: same shuffles, dropout masks, optimizer state and schedule state
    a.fit(X, y, epochs=2, batch_size=16, validation_split=0.25)
    b.fit(X, y, epochs=2, batch_size=16, validation_split=0.25)
    np.testing.assert_array_equal(a.params, b.params)
    assert a.optimizer.lr == b.optimizer.lr


def test_save_without_optimizer(tmp_path):
    net = _trained()
    fastnn.save(net, tmp_path / "m.fastnn", include_optimizer=False)
    assert fastnn.load(tmp_path / "m.fastnn").optimizer is None


def test_file_is_readable_by_the_safetensors_library(tmp_path):
    safetensors_numpy = pytest.importorskip("safetensors.numpy")
    net = _trained(batch_norm=True)
    fastnn.save(net, tmp_path / "m.fastnn")
    tensors = safetensors_numpy.load_file(str(tmp_path / "m.fastnn"))
    np.testing.assert_array_equal(tensors["model.params"], net.params)
    np.testing.assert_array_equal(tensors["optimizer.m"], net.optimizer.state["m"])
    header, _ = _split_file(tmp_path / "m.fastnn")
    meta = header["__metadata__"]
    assert meta["format"] == "fastnn" and meta["format_version"] == str(FORMAT_VERSION)
    assert json.loads(meta["model"])["layers"][0]["n_out"] == 8


def test_extra_metadata_and_arrays_for_other_kinds(tmp_path):
    net = _trained()
    write_payload(
        tmp_path / "e.fastnn",
        net,
        kind="test_kind",
        metadata={"classes": ["a", "b", "c"]},
        arrays={"mean": np.arange(3.0)},
    )
    p = read_payload(tmp_path / "e.fastnn")
    assert p.kind == "test_kind" and p.metadata == {"classes": ["a", "b", "c"]}
    np.testing.assert_array_equal(p.arrays["mean"], np.arange(3.0))
    with pytest.raises(ModelFileError, match="unknown kind of saved object 'test_kind'"):
        fastnn.load(tmp_path / "e.fastnn")
    with pytest.raises(ValueError, match="reserved"):
        write_payload(tmp_path / "x", net, arrays={"model.params": np.zeros(1)})


def test_registered_kinds_load_through_their_loader(tmp_path, monkeypatch):
    net = _trained()
    write_payload(tmp_path / "k.fastnn", net, kind="test_kind", metadata={"n": 3})
    seen = []

    def loader(model, metadata, arrays):
        seen.append((model.n_params, metadata, arrays))
        return "loaded"

    monkeypatch.setitem(fastnn.io.KIND_LOADERS, "test_kind", None)  # removed afterwards
    fastnn.io.register_kind("test_kind", loader)
    assert fastnn.load(tmp_path / "k.fastnn") == "loaded"
    assert seen == [(net.n_params, {"n": 3}, {})]
    for kind in ("model", "pipeline", 3):
        with pytest.raises(ValueError, match="cannot be registered"):
            fastnn.io.register_kind(kind, loader)
    with pytest.raises(ValueError, match="fastnn.<module>:<function>"):
        fastnn.io.register_kind("test_kind", "os:system")
    with pytest.raises(TypeError, match="loader must be"):
        fastnn.io.register_kind("test_kind", 3)


def test_a_tabular_file_loads_without_the_command_line(tmp_path):
    # Written as `fastnn train` wrote it before it saved pipelines (kind "tabular"),
    # then loaded in a fresh interpreter: fastnn.load must not import fastnn.cli.
    net = MLP([2, 4, 2], loss="cross_entropy", backend="numpy", random_state=0)
    meta = {"features": ["a", "b"], "target": "label", "task": "classify"}
    meta.update({"classes": ["no", "yes"], "y_mean": 0.0, "y_scale": 1.0})
    arrays = {"x_mean": np.array([1.0, 2.0]), "x_scale": np.array([3.0, 4.0])}
    write_payload(tmp_path / "t.fnn", net, kind="tabular", metadata=meta, arrays=arrays)
    script = (
        "import sys, fastnn, numpy as np\n"
        f"tab = fastnn.load({str(tmp_path / 't.fnn')!r})\n"
        "print(type(tab).__module__, type(tab).__name__, tab.features, tab.classes,\n"
        "      tab.x_scale.tolist(), 'fastnn.cli' in sys.modules)\n"
        "print(tab.predict(np.array([[1.0, 2.0], [4.0, 6.0]])).tolist())\n"
    )
    proc = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", script], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    first, second = proc.stdout.splitlines()
    assert first == "fastnn.tabular TabularModel ['a', 'b'] ['no', 'yes'] [3.0, 4.0] False"
    X = (np.array([[1.0, 2.0], [4.0, 6.0]]) - [1.0, 2.0]) / [3.0, 4.0]
    assert second == str([["no", "yes"][k] for k in net.predict(X)])


def test_save_refuses_other_objects(tmp_path):
    with pytest.raises(TypeError, match="fastnn.save saves fastnn models"):
        fastnn.save({"a": 1}, tmp_path / "x")


def test_save_is_atomic(tmp_path, monkeypatch):
    net = _trained()
    path = tmp_path / "m.fastnn"
    fastnn.save(net, path)
    good = path.read_bytes()

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", boom)
    net.params[...] = 0
    with pytest.raises(OSError, match="disk full"):
        fastnn.save(net, path)
    assert path.read_bytes() == good  # the old file is intact
    assert os.listdir(tmp_path) == ["m.fastnn"]  # and no temporary file is left


# --- transfer learning from a saved model -----------------------------------------------


def test_transfer_learning_from_a_saved_model(tmp_path):
    X, y = _data(200)
    src = MLP([3, 16, 16, 3], loss="cross_entropy", backend="numpy", random_state=0)
    src.fit(X, y, optimizer=fastnn.Adam(0.01), epochs=20, batch_size=32)
    fastnn.save(src, tmp_path / "source.fastnn")
    # new task: a binary label, fine-tuned with a ten times smaller learning rate
    tgt = fastnn.load(tmp_path / "source.fastnn")
    tgt.replace_output(1, loss="binary_cross_entropy").freeze(slice(0, -1))
    frozen = [layer.W.copy() for layer in tgt.layers[:-1]]
    y2 = (X[:, 0] + X[:, 1] > 0).astype(int)
    tgt.fit(X, y2, optimizer=fastnn.Adam(0.001), epochs=80, batch_size=32)
    for layer, w in zip(tgt.layers[:-1], frozen):
        np.testing.assert_array_equal(layer.W, w)
    assert tgt.score(X, y2) > 0.95  # 0.965 here; the source model scores 0.97


# --- damaged and hostile files ---------------------------------------------------------------


def _saved(tmp_path):
    path = tmp_path / "m.fastnn"
    fastnn.save(_trained(batch_norm=True), path)
    return path


@pytest.mark.parametrize(
    "content, match",
    [
        (b"", "only 0 bytes"),
        (b"abc", "only 3 bytes"),
        (b"\xff" * 64, "header length .* is impossible"),
        (struct.pack("<Q", 5) + b"{}   ", "no 'format': 'fastnn'"),
        (struct.pack("<Q", 4) + b"[1] ", "not a JSON object"),
        (struct.pack("<Q", 5) + b'{"a":', "not valid JSON"),
        (struct.pack("<Q", 100) + b"{}", "truncated"),
        (pickle.dumps({"params": np.zeros(3)}), "fastnn model file"),
        (b"PK\x03\x04" + b"\x00" * 60, "fastnn model file"),
    ],
)
def test_files_that_are_not_models_are_rejected(tmp_path, content, match):
    path = tmp_path / "bad"
    path.write_bytes(content)
    with pytest.raises(ModelFileError, match=match) as info:
        fastnn.load(path)
    assert str(path) in str(info.value)
    assert isinstance(info.value, ValueError)


def test_a_pickled_payload_is_never_executed(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path = tmp_path / "evil.fastnn"
    path.write_bytes(pickle.dumps(Evil()))
    with pytest.raises(ModelFileError):
        fastnn.load(path)
    # and hidden in a valid file's metadata it is only a string
    good = _saved(tmp_path)
    header, data = _split_file(good)
    header["__metadata__"]["extra"] = json.dumps({"blob": pickle.dumps(Evil()).hex()})
    _join_file(good, header, data)
    assert fastnn.load(good).n_params > 0
    assert not marker.exists()


def test_truncated_files_are_rejected_at_every_cut(tmp_path):
    path = _saved(tmp_path)
    raw = path.read_bytes()
    cut = tmp_path / "cut"
    for n in sorted({1, 7, 8, 9, 50, len(raw) // 3, len(raw) // 2, len(raw) - 8, len(raw) - 1}):
        cut.write_bytes(raw[:n])
        with pytest.raises(ModelFileError, match="truncated|only|impossible"):
            fastnn.load(cut)


def test_newer_format_version_is_rejected(tmp_path):
    path = _saved(tmp_path)
    header, data = _split_file(path)
    header["__metadata__"]["format_version"] = str(FORMAT_VERSION + 1)
    _join_file(path, header, data)
    with pytest.raises(ModelFileError, match="newer than this fastnn reads"):
        fastnn.load(path)


def _edit(path, fn):
    header, data = _split_file(path)
    fn(header)
    _join_file(path, header, data)


@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda h: h["model.params"].update(shape=[7]), "declares shape"),
        (lambda h: h["model.params"].update(dtype="F16"), "unsupported dtype"),
        (lambda h: h["model.params"].update(dtype="I32"), "must be float32"),
        (lambda h: h["model.params"].update(data_offsets=[8, 4]), "invalid data_offsets"),
        (lambda h: h["model.params"].update(shape=[-1]), "invalid shape"),
        (lambda h: h["model.params"].pop("dtype"), "must have exactly"),
        (lambda h: h["__metadata__"].update(format_version="one"), "not an integer"),
        (lambda h: h["__metadata__"].update(model="{"), "not valid JSON"),
        (
            lambda h: h["__metadata__"].update(model=_model_edit(h, -1, n_out=9)),
            "model.params must be float32 of shape",
        ),
        (
            lambda h: h["__metadata__"].update(model=_model_edit(h, -1, n_out=10**12)),
            "must be float32 of shape",
        ),
        (
            lambda h: h["__metadata__"].update(model=_model_edit(h, 0, n_out=9)),
            r"layers\[1\] \(BatchNorm\) takes 8 inputs but layers\[0\] outputs 9",
        ),
        (
            lambda h: h["__metadata__"].update(model=_model_edit(h, 0, n_out="8")),
            "layer 0 n_out must be an integer",
        ),
        (
            lambda h: h["__metadata__"].update(model=_model_edit(h, 1, type="conv")),
            "layer 1 has unknown type 'conv'",
        ),
        (
            lambda h: h["__metadata__"].update(model=_model_edit(h, 0, activation="swish")),
            "invalid layers in the model metadata: .*activation must be one of",
        ),
        (
            lambda h: h["__metadata__"].update(optimizer='{"name": "no_such_optimizer"}'),
            "invalid optimizer metadata",
        ),
        (lambda h: h["__metadata__"].update(fastnn=1), "metadata values must be strings"),
    ],
)
def test_inconsistent_metadata_is_rejected(tmp_path, edit, match):
    path = _saved(tmp_path)
    _edit(path, edit)
    with pytest.raises(ModelFileError, match=match):
        fastnn.load(path)


def _model_edit(header, layer, **changes):
    cfg = json.loads(header["__metadata__"]["model"])
    cfg["layers"][layer].update(changes)
    return json.dumps(cfg)


def test_absurd_declared_sizes_fail_before_allocating(tmp_path):
    path = _saved(tmp_path)
    header, data = _split_file(path)
    header["model.params"]["shape"] = [10**12]
    header["model.params"]["data_offsets"] = [0, 4 * 10**12]
    _join_file(path, header, data)
    tracemalloc.start()
    try:
        with pytest.raises(ModelFileError, match="starts at byte|truncated"):
            fastnn.load(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 10 * os.path.getsize(path) + 1_000_000


def test_trailing_bytes_and_overlapping_arrays_are_rejected(tmp_path):
    path = _saved(tmp_path)
    with open(path, "ab") as f:
        f.write(b"junk")
    with pytest.raises(ModelFileError, match="unexpected bytes"):
        fastnn.load(path)
    path = _saved(tmp_path)
    header, data = _split_file(path)
    header["__metadata__"]["x"] = "1"
    header["model.buffers"]["data_offsets"] = [
        0,
        header["model.buffers"]["data_offsets"][1] - header["model.buffers"]["data_offsets"][0],
    ]
    _join_file(path, header, data)
    with pytest.raises(ModelFileError, match="contiguous|declares shape"):
        fastnn.load(path)


def test_duplicate_keys_and_nan_constants_are_rejected(tmp_path):
    path = _saved(tmp_path)
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    head = raw[8 : 8 + n].rstrip()
    dup = head[:-1] + b',"model.params":{"dtype":"F32","shape":[0],"data_offsets":[0,0]}}'
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(dup)) + dup + raw[8 + n :])
    with pytest.raises(ModelFileError, match="not valid JSON"):
        fastnn.load(path)
    path = _saved(tmp_path)
    _edit(
        path,
        lambda h: h["__metadata__"].update(
            optimizer=h["__metadata__"]["optimizer"].replace('"t":', '"x":NaN,"t":')
        ),
    )
    with pytest.raises(ModelFileError, match="not valid JSON"):
        fastnn.load(path)


@given(st.lists(st.tuples(st.integers(0, 10**9), st.integers(1, 255)), min_size=1, max_size=4))
def test_flipped_bytes_load_or_fail_cleanly(tmp_path_factory, flips):
    d = tmp_path_factory.mktemp("flip")
    path = d / "m.fastnn"
    if not hasattr(test_flipped_bytes_load_or_fail_cleanly, "raw"):
        fastnn.save(_trained(batch_norm=True), path)
        test_flipped_bytes_load_or_fail_cleanly.raw = path.read_bytes()
    raw = bytearray(test_flipped_bytes_load_or_fail_cleanly.raw)
    for pos, x in flips:
        raw[pos % len(raw)] ^= x
    path.write_bytes(bytes(raw))
    try:
        model = fastnn.load(path)
    except ModelFileError:
        return
    assert isinstance(model, MLP)  # a flip in the numbers: loads, with other numbers
