"""Model-file fuzzing: damaged, inconsistent and hostile files are refused cleanly.

Every file below must either load (and then predict, or refuse to with a ValueError)
or raise :class:`fastnn.ModelFileError` whose message starts with the file's path.
Nothing in a file is executed or imported, and nothing larger than the file justifies
is allocated. test_io.py has the round trips and the first examples of each kind of
damage; this module runs them systematically over every kind of saved object and
counts the cases for docs/reliability.md. The coverage-guided fuzzer (atheris) is in
tests/fuzz/fuzz_load.py; the last test runs it for a bounded number of inputs.
"""

from __future__ import annotations

import copy
import io
import json
import os
import pickle
import resource
import struct
import subprocess
import sys
import tracemalloc
import warnings
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastnn
from _reliability_record import record
from _saved_files import save_each
from fastnn import MLP, ModelFileError
from fastnn.cli import TabularModel
from fastnn.io import FORMAT_VERSION, MAX_HEADER_BYTES, MAX_TENSORS

HERE = os.path.dirname(os.path.abspath(__file__))
KINDS = ("model", "batchnorm64", "classifier", "regressor", "tabular")
X = np.random.default_rng(0).standard_normal((30, 3))
Y = (X[:, 0] > 0).astype(int)


def _make(kind):
    if kind == "model":
        net = MLP([3, 4, 2], loss="cross_entropy", backend="numpy", random_state=0)
        net.fit(X, Y, optimizer=fastnn.Adam(fastnn.Cosine(0.01, T=5)), epochs=1)
        return net
    if kind == "batchnorm64":
        net = MLP([3, 4, 1], batch_norm=True, dtype="float64", backend="numpy", random_state=0)
        net.fit(X, X[:, 0], optimizer=fastnn.Momentum(0.01), epochs=1)
        return net
    if kind == "tabular":
        net = MLP([3, 4, 2], loss="cross_entropy", backend="numpy", random_state=0)
        return TabularModel(
            net, ["a", "b", "c"], "y", "classify", ["no", "yes"], np.zeros(3), np.ones(3)
        )
    pytest.importorskip("sklearn")
    from fastnn import MLPClassifier, MLPRegressor

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if kind == "classifier":
            return MLPClassifier((3,), max_iter=2, backend="numpy", random_state=0).fit(
                X, np.array(["no", "yes"])[Y]
            )
        return MLPRegressor(
            hidden_layer_sizes=(3,), max_iter=2, backend="numpy", random_state=0
        ).fit(X, X[:, 0])


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """kind -> bytes of a valid file of that kind."""
    return save_each(tmp_path_factory, KINDS, _make)


def _split(raw):
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8 : 8 + n]), raw[8 + n :]


def _join(header, data=b""):
    head = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(head)) + head + data


def _outcome(path):
    """ "loaded" / "refused" for a clean outcome; raise on anything else.

    A loaded object must predict the valid inputs or refuse with a ValueError (flipped
    bits can make weights non-finite: predict then says so instead of answering).
    """
    try:
        obj = fastnn.load(path)
    except ModelFileError as exc:
        assert str(exc).startswith(str(path)), f"message does not name the file: {exc}"
        return "refused"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            pred = obj.predict(X)
        except ValueError:
            return "loaded"
    assert len(pred) == len(X)
    return "loaded"


# --- every metadata field replaced by values of every JSON type ----------------------------

VALUES = [None, True, 0, -1, 2**70, 1e308, 0.5, "", "x", [], {}, [1], {"a": 1}]
DELETE = object()


def _paths(obj, p=()):
    yield p
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, p + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _paths(v, p + (i,))


def _set(obj, p, value):
    if not p:
        return value
    target = obj
    for k in p[:-1]:
        target = target[k]
    if value is DELETE:
        del target[p[-1]]
    else:
        target[p[-1]] = value
    return obj


@pytest.mark.parametrize("kind", KINDS)
def test_every_metadata_field_with_every_json_type(saved, kind, tmp_path):
    if kind not in saved:
        pytest.skip("scikit-learn is not installed")
    header, data = _split(saved[kind])
    path = tmp_path / "x.fnn"
    counts = {"loaded": 0, "refused": 0}
    for section in ("model", "optimizer", "extra"):
        if section not in header["__metadata__"]:
            continue
        base = json.loads(header["__metadata__"][section])
        for p in list(_paths(base)):
            if p and p[0] == "rng" and len(p) > 2:
                continue  # four identical streams: one is enough
            for value in VALUES + ([DELETE] if p else []):
                edited = _set(copy.deepcopy(base), p, value)
                h = copy.deepcopy(header)
                h["__metadata__"][section] = json.dumps(edited)
                path.write_bytes(_join(h, data))
                counts[_outcome(path)] += 1
    assert counts["refused"] > 0
    record(
        f"files.metadata.{kind}",
        "model files",
        f"{kind}: every metadata field (model, optimizer, extra) replaced by each of "
        f"13 JSON values (null, bool, ints, 2^70, 1e308, strings, lists, objects) or "
        f"deleted",
        sum(counts.values()),
        "each loads and predicts (or refuses to predict with ValueError) or raises "
        "ModelFileError naming the file",
        f"{counts['refused']} refused, {counts['loaded']} loaded (values the format "
        f"allows, e.g. another learning rate)",
    )


# --- cut at every byte, bytes flipped, random headers --------------------------------------


def test_truncated_at_every_byte(saved, tmp_path):
    raw = saved["model"]
    path = tmp_path / "cut.fnn"
    for n in range(len(raw)):
        path.write_bytes(raw[:n])
        with pytest.raises(ModelFileError, match="truncated|only|impossible|not valid"):
            fastnn.load(path)
    record(
        "files.truncated",
        "model files",
        "a saved model (optimizer, schedule) cut after every byte offset",
        len(raw),
        "all raise ModelFileError (truncated / not a model file)",
    )


FLIP_EXAMPLES = 300


@settings(
    max_examples=FLIP_EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(data=st.data())
def test_flipped_bytes_in_every_kind(saved, tmp_path, data):
    kind = data.draw(st.sampled_from(sorted(saved)))
    raw = bytearray(saved[kind])
    n_head = struct.unpack("<Q", raw[:8])[0] + 8
    # half the flips land in the header, where they change the structure
    region = data.draw(st.sampled_from(["header", "anywhere"]))
    hi = n_head if region == "header" else len(raw)
    for pos, x in data.draw(
        st.lists(st.tuples(st.integers(0, hi - 1), st.integers(1, 255)), min_size=1, max_size=6)
    ):
        raw[pos] ^= x
    path = tmp_path / "flip.fnn"
    path.write_bytes(bytes(raw))
    _outcome(path)
    _FLIPS.append(1)


_FLIPS: list = []


def test_flipped_bytes_recorded():
    # recorded after the property ran (its examples are counted, not assumed)
    if not _FLIPS:
        pytest.skip("the flipped-bytes property did not run in this session")
    record(
        "files.flipped",
        "model files",
        "1-6 bytes XOR-ed with random values, in the header or anywhere, in files of "
        "every kind (hypothesis)",
        FLIP_EXAMPLES,
        "each loads and predicts (or refuses non-finite weights with ValueError) or "
        "raises ModelFileError",
        f"{len(_FLIPS)} examples ran",
    )


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)
HEADER_EXAMPLES = 200


@settings(
    max_examples=HEADER_EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    meta=st.dictionaries(
        st.sampled_from(["format", "format_version", "kind", "model", "optimizer", "extra"]),
        st.text(max_size=30) | json_values.map(json.dumps),
    ),
    arrays=st.dictionaries(st.text(max_size=12), json_values, max_size=3),
    tail=st.binary(max_size=64),
)
def test_random_headers(tmp_path, meta, arrays, tail):
    header = dict(arrays)
    if meta:
        header["__metadata__"] = {"format": "fastnn", "format_version": "1", **meta}
    path = tmp_path / "random.fnn"
    path.write_bytes(_join(header, tail))
    _outcome(path)
    _HEADERS.append(1)


_HEADERS: list = []


def test_random_headers_recorded():
    if not _HEADERS:
        pytest.skip("the random-header property did not run in this session")
    record(
        "files.random_headers",
        "model files",
        "random JSON headers: metadata entries of random JSON (format 'fastnn', "
        "version 1), random array entries, random data bytes (hypothesis)",
        HEADER_EXAMPLES,
        "all raise ModelFileError naming the file",
        f"{len(_HEADERS)} examples ran",
    )


# --- wrong magic, version, container --------------------------------------------------------


def _versioned(raw, version):
    header, data = _split(raw)
    header["__metadata__"]["format_version"] = version
    return _join(header, data)


def _wrong_files(raw):
    header, data = _split(raw)
    no_format = copy.deepcopy(header)
    del no_format["__metadata__"]["format"]
    other = copy.deepcopy(header)
    other["__metadata__"]["format"] = "pt"
    zipped = io.BytesIO()
    with zipfile.ZipFile(zipped, "w") as z:
        z.writestr("archive/data.pkl", pickle.dumps({"a": 1}))
    npy = io.BytesIO()
    np.save(npy, np.zeros(3))
    return {
        "empty": b"",
        "7 bytes": raw[:7],
        "header length 0": struct.pack("<Q", 0) + raw[8:],
        "header length 2^63": struct.pack("<Q", 2**63) + raw[8:],
        "header length > 16 MiB": struct.pack("<Q", MAX_HEADER_BYTES + 1) + raw[8:],
        "big-endian length": struct.pack(">Q", len(raw)) + raw[8:],
        "no format entry": _join(no_format, data),
        "format 'pt'": _join(other, data),
        "version newer": _versioned(raw, str(FORMAT_VERSION + 1)),
        "version 0": _versioned(raw, "0"),
        "version -1": _versioned(raw, "-1"),
        "version ' 1'": _versioned(raw, " 1"),
        "version '1.0'": _versioned(raw, "1.0"),
        "version '1_0'": _versioned(raw, "1_0"),
        "version arabic 1": _versioned(raw, "١"),
        "version 10^5000": _versioned(raw, "1" + "0" * 5000),
        "header UTF-16": _join(json.dumps(header).encode("utf-16"), data),
        "header with BOM": _join(b"\xef\xbb\xbf" + json.dumps(header).encode(), data),
        "header a list": _join([header]),
        "header a string": _join("fastnn"),
        "header NaN": _join(
            json.dumps(header).replace('"dtype"', '"x":NaN,"dtype"', 1).encode(), data
        ),
        "header nested 10^5 deep": _join(b"[" * 100_000 + b"]" * 100_000),
        "metadata nested 10^5 deep": _join(
            {
                **header,
                "__metadata__": {**header["__metadata__"], "model": "[" * 100_000 + "]" * 100_000},
            },
            data,
        ),
        "zip archive": zipped.getvalue(),
        "npy file": npy.getvalue(),
        "pickle": pickle.dumps(np.zeros(3)),
        "text": b"hello, world\n" * 10,
    }


def test_wrong_magic_version_and_containers(saved, tmp_path):
    cases = _wrong_files(saved["model"])
    path = tmp_path / "wrong.fnn"
    for name, content in cases.items():
        path.write_bytes(content)
        with pytest.raises(ModelFileError) as info:
            fastnn.load(path)
        assert str(info.value).startswith(str(path)), name
    record(
        "files.wrong_format",
        "model files",
        "wrong magic and versions: empty, 7 bytes, header lengths 0 / 2^63 / >16 MiB / "
        "big-endian, no or another format, versions newer / 0 / -1 / ' 1' / '1.0' / "
        "'1_0' / Arabic digit / 10^5000, UTF-16 or BOM header, non-object headers, "
        "NaN, JSON nested 10^5 deep, zip, npy, pickle, text",
        len(cases),
        "all raise ModelFileError naming the file",
    )


# --- metadata whose shapes disagree with the data ------------------------------------------


def _model_cfg(header, **changes):
    cfg = json.loads(header["__metadata__"]["model"])
    cfg.update(changes)
    return cfg


def _shape_cases(raw):
    header, data = _split(raw)
    cfg = json.loads(header["__metadata__"]["model"])
    out = {}

    def case(name, fn):
        h = copy.deepcopy(header)
        d = fn(h)  # edits h; returns the new data section when it changes it
        out[name] = _join(h, d if isinstance(d, bytes) else data)

    def layer(i, **kw):
        def fn(h):
            c = copy.deepcopy(cfg)
            c["layers"][i].update(kw)
            h["__metadata__"]["model"] = json.dumps(c)

        return fn

    case("layer 0 n_out + 1", layer(0, n_out=cfg["layers"][0]["n_out"] + 1))
    case("layer 1 n_in + 1", layer(1, n_in=cfg["layers"][1]["n_in"] + 1))
    case("layer n_in 0", layer(0, n_in=0))
    case("layer n_in 1.5", layer(0, n_in=1.5))
    case("layer n_in true", layer(0, n_in=True))
    case("batch_norm added", layer(0, batch_norm=True))
    case("output batch_norm", layer(1, batch_norm=True))
    case("no layers", lambda h: h["__metadata__"].update(model=json.dumps({**cfg, "layers": []})))
    case(
        "10001 layers",
        lambda h: h["__metadata__"].update(
            model=json.dumps({**cfg, "layers": [cfg["layers"][0]] * 10_001})
        ),
    )
    case(
        "dtype float16",
        lambda h: h["__metadata__"].update(model=json.dumps({**cfg, "dtype": "float16"})),
    )
    case(
        "dtype float64, data float32",
        lambda h: h["__metadata__"].update(model=json.dumps({**cfg, "dtype": "float64"})),
    )
    n = header["model.params"]["shape"][0]

    def params(shape, dtype="F32", nbytes=None):
        def fn(h):
            end = h["model.params"]["data_offsets"][0] + (
                nbytes if nbytes is not None else int(np.prod(shape)) * 4
            )
            h["model.params"].update(shape=shape, dtype=dtype)
            h["model.params"]["data_offsets"][1] = end

        return fn

    case("params (n-1,)", params([n - 1]))
    case("params (n, 1)", params([n, 1]))
    case("params (1, n)", params([1, n]))
    case("params scalar shape", params([]))
    case("params as int32", params([n], "I32"))
    case("params offsets past shape", params([n], nbytes=4 * n + 4))
    case("params missing", lambda h: h.pop("model.params"))
    case("optimizer m shorter", lambda h: h["optimizer.m"].update(shape=[n - 1]))
    case("optimizer state renamed", lambda h: h.update({"optimizer.q": h.pop("optimizer.m")}))
    case("unknown array", lambda h: h.update({"weights": h.pop("optimizer.v")}))
    case(
        "arrays overlap",
        lambda h: h["optimizer.v"].update(data_offsets=h["optimizer.m"]["data_offsets"]),
    )
    case(
        "gap between arrays",
        lambda h: [
            h[k]["data_offsets"].__setitem__(slice(None), [o + 4 for o in h[k]["data_offsets"]])
            for k in h
            if k != "__metadata__"
        ],
    )
    case("data 4 bytes short", lambda h: data[:-4])
    case("data 4 bytes long", lambda h: data + b"\0" * 4)
    return out


def test_shapes_that_disagree_with_the_data(saved, tmp_path):
    cases = _shape_cases(saved["model"])
    # tabular: the standardisation arrays must match the feature list
    header, data = _split(saved["tabular"])
    h = copy.deepcopy(header)
    h["__metadata__"]["extra"] = json.dumps(
        {**json.loads(h["__metadata__"]["extra"]), "features": ["a", "b"]}
    )
    cases["tabular: 2 names for 3 inputs"] = _join(h, data)
    h = copy.deepcopy(header)
    h["__metadata__"]["extra"] = json.dumps(
        {**json.loads(h["__metadata__"]["extra"]), "classes": ["no", "yes", "maybe"]}
    )
    cases["tabular: 3 classes for 2 outputs"] = _join(h, data)
    path = tmp_path / "shape.fnn"
    for content in cases.values():
        path.write_bytes(content)
        with pytest.raises(ModelFileError, match=str(path)):
            fastnn.load(path)
    record(
        "files.shapes",
        "model files",
        "metadata whose shapes disagree with the data: layer sizes, chained sizes, "
        "non-integer sizes, batch norm added, no or 10001 layers, dtypes, parameter "
        "arrays of other shapes / dtypes / spans, missing, renamed, unknown, "
        "overlapping or spaced arrays, short or long data, tabular names "
        "and classes",
        len(cases),
        "all raise ModelFileError",
    )


# --- absurd declared sizes fail before allocating --------------------------------------------


def _absurd_cases(raw):
    header, data = _split(raw)
    cfg = json.loads(header["__metadata__"]["model"])
    out = {}
    n = header["model.params"]["shape"][0]
    big = 10**12

    h = copy.deepcopy(header)
    h["model.params"].update(shape=[big], data_offsets=[0, 4 * big])
    out["params declare 1e12 elements"] = _join(h, data)

    h = {
        "__metadata__": header["__metadata__"],
        "model.params": {"dtype": "F32", "shape": [big], "data_offsets": [0, 4 * big]},
    }
    c = copy.deepcopy(cfg)
    c["layers"] = [dict(c["layers"][0], n_in=10**6, n_out=10**6)]
    h["__metadata__"] = dict(h["__metadata__"], model=json.dumps(c))
    out["layers and params both declare 1e12"] = _join(h, data)

    h = copy.deepcopy(header)
    end = h["optimizer.v"]["data_offsets"][1]
    h["extra.blob"] = {"dtype": "U8", "shape": [big], "data_offsets": [end, end + big]}
    out["extra array of 1e12 bytes"] = _join(h, data)

    h = copy.deepcopy(header)
    h["model.params"].update(shape=[10**6] * 8, data_offsets=[0, 4 * 10**48])
    out["8 dimensions of 1e6"] = _join(h, data)

    h = copy.deepcopy(header)
    h["model.params"]["shape"] = [1] * 9 + [n]
    out["10 dimensions"] = _join(h, data)

    c = copy.deepcopy(cfg)
    c["layers"] = [dict(layer, n_in=10**9, n_out=10**9) for layer in c["layers"]]
    h = copy.deepcopy(header)
    h["__metadata__"]["model"] = json.dumps(c)
    out["layers declare 2e18 parameters"] = _join(h, data)

    h = {"__metadata__": {"format": "fastnn", "format_version": "1"}}
    for i in range(MAX_TENSORS + 1):
        h[f"t{i}"] = {"dtype": "U8", "shape": [0], "data_offsets": [0, 0]}
    out[f"{MAX_TENSORS + 1} arrays"] = _join(h)

    out["header length 2^64-1"] = struct.pack("<Q", 2**64 - 1) + raw[8:]
    out["16 MiB header of spaces"] = _join(b"{" + b" " * (MAX_HEADER_BYTES - 2) + b"}")
    # JSON that would parse into millions of Python objects (~380 MB for 16 MiB)
    n = (MAX_HEADER_BYTES - 64) // 3
    out["16 MiB header of empty lists"] = _join(
        b'{"__metadata__":{"format":"fastnn"},"x":[' + b"[]," * n + b"0]}"
    )
    return out


def test_absurd_sizes_fail_before_allocating(saved, tmp_path):
    cases = _absurd_cases(saved["model"])
    path = tmp_path / "absurd.fnn"
    fastnn.load(_write(tmp_path / "ok.fnn", saved["model"]))  # warm up imports, caches
    peaks = []
    for name, content in cases.items():
        path.write_bytes(content)
        tracemalloc.start()
        try:
            with pytest.raises(ModelFileError):
                fastnn.load(path)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        # Only the header is parsed: its bytes, its text and the parsed JSON (at most
        # ~12 bytes per byte of JSON, for headers of many small objects).
        assert peak < 12 * len(content) + 2_000_000, (name, peak)
        peaks.append(peak)
    record(
        "files.absurd_sizes",
        "model files",
        "absurd declared sizes: 1e12-element arrays (alone, with matching layers, as "
        "an extra array), 8 dimensions of 1e6, 10 dimensions, layers of 1e9 x 1e9, "
        "4097 arrays, header lengths 2^64-1 and 16 MiB, a 16 MiB header of 5 million "
        "empty lists",
        len(cases),
        "all raise ModelFileError before allocating any array: tracemalloc peak < 12 x "
        "file size + 2 MB",
        f"largest peak {max(peaks) / 1e6:.1f} MB (a 16 MiB header)",
    )


def _write(path, content):
    path.write_bytes(content)
    return path


def test_zip_bomb_is_not_opened(tmp_path):
    """fastnn files are not zip archives: a zip (bomb) is refused from its first bytes."""
    bomb = tmp_path / "bomb.fnn"
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("data.pkl", b"\0" * 50_000_000)  # 50 MB inflated, ~50 kB on disk
    size = bomb.stat().st_size
    assert size < 200_000
    tracemalloc.start()
    try:
        with pytest.raises(ModelFileError, match="not a fastnn model file"):
            fastnn.load(bomb)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < size + 1_000_000
    record(
        "files.zip_bomb",
        "model files",
        "a zip bomb (50 MB of zeros deflated to ~50 kB) given as a model file",
        1,
        "raises ModelFileError without inflating anything (tracemalloc peak < file "
        "size + 1 MB); the format has no zip container",
    )


# --- executable payloads ---------------------------------------------------------------------


class _Marker:
    """Unpickling it would create the marker file."""

    path = ""

    def __reduce__(self):
        return (open, (self.path, "w"))


def _payloads(raw, marker):
    _Marker.path = str(marker)
    header, data = _split(raw)
    evil = [pickle.dumps(_Marker(), protocol=p) for p in range(pickle.HIGHEST_PROTOCOL + 1)]
    out = {f"pickle protocol {p}": e for p, e in enumerate(evil)}
    npy = io.BytesIO()
    np.save(npy, np.array([_Marker()], dtype=object), allow_pickle=True)
    out["npy with an object array"] = npy.getvalue()
    zipped = io.BytesIO()
    with zipfile.ZipFile(zipped, "w") as z:
        z.writestr("archive/data.pkl", evil[2])
    out["torch-style zip with data.pkl"] = zipped.getvalue()

    def variant(name, fn, new_data=None):
        h = copy.deepcopy(header)
        fn(h)
        out[name] = _join(h, data if new_data is None else new_data)

    def meta(key, value):
        return lambda h: h["__metadata__"].update({key: value})

    def cfg(**kw):
        c = json.loads(header["__metadata__"]["model"])
        c.update(kw)
        return meta("model", json.dumps(c))

    variant("kind naming os:system", meta("kind", "os:system"))
    variant("kind naming a fastnn function", meta("kind", "fastnn.cli:main"))
    variant("kind naming a module path", meta("kind", "../../evil"))
    variant("backend 'os'", cfg(backend="os"))
    variant("loss naming __import__", cfg(loss="__import__('os').system('touch x')"))
    variant("init naming eval", cfg(init="eval"))
    c = json.loads(header["__metadata__"]["model"])
    c["layers"][0]["activation"] = "__import__"
    variant("activation naming __import__", meta("model", json.dumps(c)))
    o = json.loads(header["__metadata__"]["optimizer"])
    variant("optimizer named 'pickle'", meta("optimizer", json.dumps({**o, "name": "pickle"})))
    variant(
        "schedule named 'os.system'",
        meta(
            "optimizer",
            json.dumps({**o, "config": {**o["config"], "lr": {"name": "os.system", "lr": 0.1}}}),
        ),
    )
    variant(
        "optimizer config with __class__",
        meta("optimizer", json.dumps({**o, "config": {**o["config"], "__class__": "os.system"}})),
    )
    # a pickle where the numbers are: read as bytes, never unpickled
    end = header["optimizer.v"]["data_offsets"][1]

    def blob(h):
        h["extra.payload"] = {
            "dtype": "U8",
            "shape": [len(evil[4])],
            "data_offsets": [end, end + len(evil[4])],
        }

    variant("pickle as an extra array", blob, data + evil[4])
    variant("pickle in the metadata", meta("extra", json.dumps({"x": evil[4].hex()})))
    variant("params dtype 'O'", lambda h: h["model.params"].update(dtype="O"))
    variant("params dtype 'object'", lambda h: h["model.params"].update(dtype="object"))
    return out


def test_no_payload_is_ever_executed_or_imported(saved, tmp_path):
    marker = tmp_path / "pwned"
    cases = _payloads(saved["model"], marker)
    path = tmp_path / "evil.fnn"
    fastnn.load(_write(tmp_path / "ok.fnn", saved["model"]))
    modules = set(sys.modules)
    outcomes = {"refused": 0, "loaded": 0}
    for name, content in cases.items():
        path.write_bytes(content)
        outcomes[_outcome(path)] += 1
        assert not marker.exists(), name
        assert set(sys.modules) == modules, (name, set(sys.modules) - modules)
    record(
        "files.payloads",
        "model files",
        "executable payloads: pickles (every protocol) whose unpickling creates a "
        "marker file, an object .npy, a torch-style zip, 'kind' / backend / loss / "
        "activation / optimizer / schedule names naming modules or builtins, a pickle "
        "stored as an array or as metadata, object dtypes",
        len(cases),
        "none executes (no marker file) and none imports a module (sys.modules "
        "unchanged); each raises ModelFileError or loads plain data",
        f"{outcomes['refused']} refused, {outcomes['loaded']} loaded (a pickle stored "
        f"as bytes is only bytes)",
    )


# --- coverage-guided fuzzing (atheris), bounded --------------------------------------------

ATHERIS_RUNS = 2500


def test_atheris_loader_fuzzer_bounded_run(saved, tmp_path):
    pytest.importorskip("atheris")
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for kind, raw in saved.items():
        (corpus / kind).write_bytes(raw)
    # the fastnn this process imported (the source tree, or site-packages when installed)
    src = os.path.dirname(os.path.dirname(os.path.abspath(fastnn.__file__)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([src, os.environ.get("PYTHONPATH", "")]))
    # libFuzzer's RSS limit reads the process's peak RSS, which Linux carries over an
    # exec from the process that started it: a child of this pytest process starts at
    # pytest's own peak. The fuzzer gets 2 GB above that.
    rss_limit = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024 + 2048
    proc = subprocess.run(
        [
            sys.executable,
            os.path.join(HERE, "fuzz", "fuzz_load.py"),
            str(corpus),
            f"-runs={ATHERIS_RUNS}",
            "-max_total_time=60",
            "-timeout=10",
            f"-rss_limit_mb={rss_limit}",
            f"-artifact_prefix={tmp_path}/",
            "-print_final_stats=1",
        ],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=tmp_path,
        env=env,
    )
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    runs = int(
        next(
            line.rsplit(":", 1)[1]
            for line in log.splitlines()
            if line.startswith("stat::number_of_executed_units")
        )
    )
    cov = next(
        (
            line.split("cov:")[1].split()[0]
            for line in log.splitlines()
            if "DONE" in line and "cov:" in line
        ),
        "?",
    )
    record(
        "files.atheris",
        "model files",
        "atheris (libFuzzer) on fastnn.load, seeded with a valid file of every kind; "
        f"bounded at {ATHERIS_RUNS} inputs or 60 s in CI (tests/fuzz/fuzz_load.py runs "
        "unbounded by hand)",
        ATHERIS_RUNS,
        "no exception other than ModelFileError, no crash, no hang (10 s per input), RSS < 2 GB",
        f"{runs} inputs ran, {cov} coverage edges",
    )
