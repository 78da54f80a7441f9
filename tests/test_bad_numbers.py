"""Numbers out of any sane range, in constructors and in model files (issue 11, item 8).

A 401-digit integer is a valid JSON number and a valid Python int, but no float: every
constructor must refuse it (and other absurd values) with a ValueError naming the
argument, never an OverflowError, and fastnn.load with a ModelFileError naming the
file and the field. Counters, array shapes and schedule nesting are bounded too.
"""

from __future__ import annotations

import copy
import inspect
import json
import struct
import warnings

import numpy as np
import pytest

import fastnn
from _reliability_record import record_module_once_passed
from _saved_files import save_each
from fastnn import MLP, ModelFileError
from fastnn.cli import TabularModel
from fastnn.optim import OPTIMIZERS
from fastnn.schedules import MAX_DEPTH, SCHEDULES

HUGE = [10**400, -(10**400)]  # beyond float64 (float() raises OverflowError)
X = np.random.default_rng(0).standard_normal((30, 3))
Y = (X[:, 0] > 0).astype(int)


def _numeric_arguments(cls, base):
    """(name, default) of the constructor arguments that take a number."""
    out = []
    for name, p in inspect.signature(cls).parameters.items():
        value = base.get(name, p.default)
        if name == "clip_norm":
            value = 1.0
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out.append(name)
    return out


# --- constructors ------------------------------------------------------------------------------

SCHEDULE_BASE = {
    "constant": {"lr": 0.1},
    "step_decay": {"lr": 0.1, "step_size": 2},
    "cosine": {"lr": 0.1, "T": 10},
    "inverse_scaling": {"lr": 0.1},
    "linear_warmup": {"warmup": 2, "after": 0.1},
    "reduce_on_plateau": {"lr": 0.1},
}
MLP_BASE = {
    "layer_sizes": [3, 4, 2],
    "dropout": 0.1,
    "activation_alpha": 0.01,
    "bn_momentum": 0.1,
    "bn_eps": 1e-5,
}

CONSTRUCTOR_CASES = (
    [
        (cls.__name__, cls, {}, name)
        for cls in OPTIMIZERS.values()
        for name in _numeric_arguments(cls, {})
    ]
    + [
        (cls.__name__, cls, SCHEDULE_BASE[key], name)
        for key, cls in SCHEDULES.items()
        for name in _numeric_arguments(cls, SCHEDULE_BASE[key])
    ]
    + [
        ("MLP", MLP, MLP_BASE, name)
        for name in ("dropout", "activation_alpha", "bn_momentum", "bn_eps")
    ]
    + [("MLP", MLP, MLP_BASE, "layer_sizes")]
)


@pytest.mark.parametrize("huge", HUGE, ids=["+10**400", "-10**400"])
@pytest.mark.parametrize(
    "owner, cls, base, name", CONSTRUCTOR_CASES, ids=[f"{c[0]}.{c[3]}" for c in CONSTRUCTOR_CASES]
)
def test_constructors_refuse_huge_numbers_naming_the_argument(owner, cls, base, name, huge):
    kwargs = dict(base)
    if name == "layer_sizes":
        kwargs[name] = [3, huge, 2]
    else:
        kwargs[name] = huge
    args = [kwargs.pop("layer_sizes")] if cls is MLP else []
    with pytest.raises(ValueError, match=name) as info:
        cls(*args, **kwargs)
    assert len(str(info.value)) < 300  # the 401 digits are not printed


# A network too large to allocate: refused up front, naming layer_sizes (NumPy said
# "Maximum allowed dimension exceeded", or a 37 GiB allocation was attempted).
LAYER_SIZES_TOO_BIG = [
    [3, 2**62, 2**62, 2],
    [1, 10**7, 10**7, 1],
    [2**40, 2**40],
    [3, 2**63 - 1, 2],
]


@pytest.mark.parametrize("sizes", LAYER_SIZES_TOO_BIG, ids=str)
def test_mlp_refuses_layers_too_large_for_memory(sizes):
    with pytest.raises(ValueError, match="layer_sizes"):
        MLP(sizes, backend="numpy")


ESTIMATOR_PARAMS = [
    "alpha",
    "learning_rate_init",
    "power_t",
    "tol",
    "epsilon",
    "clip_norm",
    "max_iter",
    "batch_size",
    "max_fun",
]


@pytest.mark.parametrize("huge", HUGE, ids=["+10**400", "-10**400"])
@pytest.mark.parametrize("name", ESTIMATOR_PARAMS)
def test_estimators_refuse_huge_numbers_naming_the_parameter(name, huge):
    pytest.importorskip("sklearn")
    from fastnn import MLPClassifier

    est = MLPClassifier((3,), max_iter=2, backend="numpy", random_state=0)
    est.set_params(**{name: huge})
    with pytest.raises(ValueError, match=name):
        est.fit(X, Y)


# Schedules nest only through LinearWarmup; the depth is bounded on construction.
def test_schedule_nesting_is_bounded_on_construction():
    s = fastnn.Constant(0.1)
    for _ in range(MAX_DEPTH - 1):
        s = fastnn.LinearWarmup(1, s)  # MAX_DEPTH levels in all: allowed
    with pytest.raises(ValueError, match="after .* nest"):
        fastnn.LinearWarmup(1, s)


# --- model files -------------------------------------------------------------------------------

KINDS = ("model", "batchnorm64", "classifier", "tabular")


def _make(kind):
    if kind == "model":
        net = MLP([3, 4, 2], loss="cross_entropy", backend="numpy", random_state=0)
        opt = fastnn.Adam(fastnn.LinearWarmup(2, fastnn.ReduceOnPlateau(0.01)))
        net.fit(X, Y, optimizer=opt, epochs=1, verbose=0)
        return net
    if kind == "batchnorm64":
        net = MLP([3, 4, 1], batch_norm=True, dtype="float64", backend="numpy", random_state=0)
        net.fit(
            X, X[:, 0], optimizer=fastnn.Momentum(fastnn.Cosine(0.01, T=3)), epochs=1, verbose=0
        )
        return net
    if kind == "tabular":
        net = MLP([3, 4, 1], backend="numpy", random_state=0)
        return TabularModel(
            net, ["a", "b", "c"], "y", "regress", None, np.zeros(3), np.ones(3), 2.5, 3.0
        )
    pytest.importorskip("sklearn")
    from fastnn import MLPClassifier

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return MLPClassifier((3,), max_iter=2, backend="numpy", random_state=0).fit(X, Y)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """kind -> (header, data) of a valid file of that kind."""
    out = {}
    for kind, raw in save_each(tmp_path_factory, KINDS, _make).items():
        (n,) = struct.unpack("<Q", raw[:8])
        out[kind] = (json.loads(raw[8 : 8 + n]), raw[8 + n :])
    return out


def _write(path, header, data, raw_json=None):
    head = (raw_json or json.dumps(header)).encode()
    path.write_bytes(struct.pack("<Q", len(head)) + head + data)
    return path


def _numeric_fields(obj, p=()):
    """Paths to every number (not bool) in a JSON value."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _numeric_fields(v, p + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _numeric_fields(v, p + (i,))
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
        yield p


def _with_literal(section, p, literal):
    """The JSON text of ``section`` with the value at ``p`` replaced by ``literal``
    (written as is: json.dumps cannot write a 401-digit number as a float field)."""
    edited = copy.deepcopy(section)
    target = edited
    for k in p[:-1]:
        target = target[k]
    target[p[-1]] = "@@HUGE@@"
    return json.dumps(edited).replace('"@@HUGE@@"', literal)


def _assert_refused(path, *words):
    with pytest.raises(ModelFileError) as info:
        fastnn.load(path)
    msg = str(info.value)
    assert msg.startswith(str(path)), msg
    for w in words:
        assert w in msg, (w, msg)
    assert len(msg) < 600, msg  # no 401-digit number in the message


@pytest.mark.parametrize("kind", KINDS)
def test_every_numeric_field_with_a_huge_integer(saved, kind, tmp_path):
    """Each number in the model, optimizer and extra metadata (layer sizes, rates,
    epsilons, counters, random-stream fields, estimator parameters...) replaced by
    each of HUGE: refused with ModelFileError naming the file and the field."""
    if kind not in saved:
        pytest.skip("scikit-learn is not installed")
    header, data = saved[kind]
    path = tmp_path / "x.fnn"
    tried = 0
    for section in ("model", "optimizer", "extra"):
        if section not in header["__metadata__"]:
            continue
        base = json.loads(header["__metadata__"][section])
        for p in _numeric_fields(base):
            field = [k for k in p if isinstance(k, str)][-1]
            for huge in HUGE:
                h = copy.deepcopy(header)
                h["__metadata__"][section] = _with_literal(base, p, str(huge))
                _assert_refused(_write(path, h, data), field)
                tried += 1
    assert tried >= 2 * 15  # every kind has at least 15 numeric fields
    _FIELDS_TRIED[kind] = tried


_FIELDS_TRIED: dict[str, int] = {}

COUNTERS = [("t", 2**53 + 1), ("epoch", 2**53 + 1), ("t", 2**63), ("epoch", 10**30)]


@pytest.mark.parametrize("field, value", COUNTERS, ids=[f"{f}={v}" for f, v in COUNTERS])
def test_absurd_optimizer_counters_are_refused(saved, tmp_path, field, value):
    header, data = saved["model"]
    h = copy.deepcopy(header)
    ost = json.loads(h["__metadata__"]["optimizer"])
    ost[field] = value
    h["__metadata__"]["optimizer"] = json.dumps(ost)
    _assert_refused(_write(tmp_path / "x.fnn", h, data), field)


PLATEAU_COUNTERS = [("bad_epochs", 2**53 + 1), ("cooldown_left", 2**63)]


@pytest.mark.parametrize(
    "field, value", PLATEAU_COUNTERS, ids=[f"{f}={v}" for f, v in PLATEAU_COUNTERS]
)
def test_absurd_schedule_counters_are_refused(saved, tmp_path, field, value):
    header, data = saved["model"]
    h = copy.deepcopy(header)
    ost = json.loads(h["__metadata__"]["optimizer"])
    ost["schedule_state"]["after"][field] = value
    h["__metadata__"]["optimizer"] = json.dumps(ost)
    _assert_refused(_write(tmp_path / "x.fnn", h, data), field)


# Shapes of empty arrays: 0 bytes of data, yet NumPy cannot make them.
EMPTY_SHAPES = [[0, 10**30], [10**30, 0], [0, 2**62, 2**62], [0, 2**63], [0, 10**400]]


@pytest.mark.parametrize("shape", EMPTY_SHAPES, ids=lambda s: f"{len(str(s))}chars")
def test_impossible_shapes_of_empty_arrays(saved, tmp_path, shape):
    header, data = saved["model"]
    h = copy.deepcopy(header)
    h["extra.empty"] = {"dtype": "F32", "shape": shape, "data_offsets": [len(data), len(data)]}
    _assert_refused(_write(tmp_path / "x.fnn", h, data), "extra.empty", "shape")


def _nested(depth):
    """JSON text of a schedule ``depth`` levels deep (written as text: json.dumps
    itself cannot nest 2000 levels)."""
    inner = '{"name":"constant","lr":0.01,"per":"epoch"}'
    return '{"name":"linear_warmup","warmup":1,"after":' * (depth - 1) + inner + "}" * (depth - 1)


def _with_schedule(header, depth):
    h = copy.deepcopy(header)
    ost = json.loads(h["__metadata__"]["optimizer"])
    ost["config"]["lr"] = "@@SCHEDULE@@"
    ost["schedule_state"] = {}
    h["__metadata__"]["optimizer"] = json.dumps(ost).replace('"@@SCHEDULE@@"', _nested(depth))
    return h


SCHEDULE_DEPTHS = [MAX_DEPTH + 1, 100, 600, 2000]


@pytest.mark.parametrize("depth", SCHEDULE_DEPTHS)
def test_deeply_nested_schedules_are_refused_on_load(saved, tmp_path, depth):
    header, data = saved["model"]
    path = _write(tmp_path / "x.fnn", _with_schedule(header, depth), data)
    _assert_refused(path, "optimizer")


def test_schedule_at_the_depth_limit_loads_and_trains(saved, tmp_path):
    header, data = saved["model"]
    net = fastnn.load(_write(tmp_path / "x.fnn", _with_schedule(header, MAX_DEPTH), data))
    net.fit(X, Y, epochs=1, verbose=0)


# Duplicate keys inside the JSON metadata (the header itself already refused them): the
# later value would silently win.
DUPLICATES = [
    ("model", lambda t: t[:-1] + ',"loss":"mse"}'),
    ("model", lambda t: t.replace('"n_in":3,', '"n_in":3,"n_in":3,', 1)),
    ("optimizer", lambda t: t.replace('"t":', '"t":0,"t":', 1)),
    ("extra", lambda t: t[:-1] + ',"y_mean":0.0}'),
]


@pytest.mark.parametrize(
    "section, edit", DUPLICATES, ids=[f"{s}-{i}" for i, (s, _) in enumerate(DUPLICATES)]
)
def test_duplicate_keys_in_nested_metadata_are_refused(saved, tmp_path, section, edit):
    kind = "tabular" if section == "extra" else "model"
    header, data = saved[kind]
    h = copy.deepcopy(header)
    text = json.dumps(json.loads(h["__metadata__"][section]), separators=(",", ":"))
    h["__metadata__"][section] = edit(text)
    assert h["__metadata__"][section] != text
    _assert_refused(_write(tmp_path / "x.fnn", h, data), "duplicate key", section)


def test_bad_numbers_recorded(request):
    constructors = (
        2 * len(CONSTRUCTOR_CASES) + 2 * len(ESTIMATOR_PARAMS) + len(LAYER_SIZES_TOO_BIG) + 1
    )
    record_module_once_passed(
        request,
        "api.huge_numbers",
        "public API",
        "+-10**400 for every numeric argument of the optimizers, schedules, MLP and "
        "the estimators; layer sizes too large for memory (up to 2**62); schedules "
        "nested past the depth limit",
        constructors,
        "ValueError naming the argument, before any allocation",
    )
    files = (
        sum(_FIELDS_TRIED.values())
        + len(COUNTERS)
        + len(PLATEAU_COUNTERS)
        + len(EMPTY_SHAPES)
        + len(SCHEDULE_DEPTHS)
        + 1
        + len(DUPLICATES)
    )
    record_module_once_passed(
        request,
        "files.huge_numbers",
        "model files",
        "saved files with a 401-digit integer in every numeric metadata field (model, "
        "estimator, batch-norm and tabular files), absurd step and plateau counters, "
        "empty arrays of impossible shapes, schedules nested 33-2000 deep, duplicate "
        "keys in nested metadata",
        files,
        "ModelFileError naming the file and the field; a schedule at the depth limit "
        "loads and trains",
        ", ".join(f"{k} {v} fields" for k, v in sorted(_FIELDS_TRIED.items())),
    )
