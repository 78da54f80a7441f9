"""The checked kernel API never corrupts memory and behaves like NumPy (issue 11).

1. ndarray subclasses through every checked method of every backend
   (``SUBCLASS_CASES``: every array argument, input, output or in-place buffer, of
   every method in ``CALLS``, given as each of ``SUBCLASSES``). The policy, stated
   in ``fastnn.Backend``'s docstring:

   - np.ma.MaskedArray is refused with a TypeError naming the argument (a kernel
     would ignore the mask; converting would drop it silently);
   - np.memmap and a plain ndarray subclass are real buffers: inputs are read and
     outputs written through a base-class view, with the same numbers as plain
     arrays, and an ``out=`` is returned as given (like a ufunc's ``out``);
   - np.matrix likewise where the argument is 2-D; where the method needs a 1-D
     argument, the matrix's (1, n) shape is refused with a ValueError naming it.

   Before the fix, np.matrix outputs went to the kernels as 2-D arrays through
   ``reshape(-1)`` and the Numba kernels wrote past their end (SIGSEGV), so every
   case runs in one child process per backend (``_child_results``): a crash fails the
   case that was running instead of killing pytest (a new child goes on with the
   next case).
   ``ISSUE_CASES`` are the issue's own calls, a (1, 100000) np.matrix out.
2. 0-d input to the elementwise methods gives a 0-d result, like a NumPy ufunc
   (``ZERO_D_CASES``).
3. The raw kernels are private: ``Backend._raw``, no public ``raw`` attribute, and
   no public documentation presents them (``RAW_CASES``).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

import fastnn
from _reliability_record import record_module_once_passed
from kernels._support import ALL_BACKENDS

ROOT = Path(__file__).resolve().parents[1]
F64 = np.float64

# --- valid calls of every checked method ----------------------------------------------


def _vals(shape, seed, low=-2.0, high=2.0):
    rng = np.random.default_rng(seed)
    return rng.uniform(low, high, shape).astype(F64)


def _elementwise(extra=None):
    return lambda: ({"z": _vals((2, 3), 1), "out": np.zeros((2, 3)), **(extra or {})}, ("out",), ())


def _optimizer(*state, **hyper):
    def build():
        args = {"param": _vals((2, 3), 1), "grad": _vals((2, 3), 2)}
        for i, name in enumerate(state):
            args[name] = _vals((2, 3), 3 + i, 0.1, 1.0)
        return {**args, **hyper}, (), ("param",) + state

    return build


def _softmax_rows(seed):
    z = _vals((2, 3), seed)
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def _csr():
    """A 4 x 3 CSR matrix (one empty row) and a batch of two of its rows."""
    return {
        "indptr": np.array([0, 2, 2, 3, 5], np.int64),
        "indices": np.array([2, 0, 1, 0, 2], np.int64),
        "data": _vals(5, 4),
        "rows": np.array([3, 1], np.int64),
    }


ELEMENTWISE = tuple(
    kernel
    for row in fastnn.registry.ACTIVATIONS
    if not row.rowwise
    for kernel in (row.name, f"{row.name}_derivative")
)

# method -> builder of (kwargs with plain arrays, output names, in-place names)
CALLS = {
    **{m: _elementwise() for m in ELEMENTWISE},
    "softmax": _elementwise(),
    "softmax_backward": lambda: (
        {"a": _softmax_rows(1), "da": _vals((2, 3), 2), "out": np.zeros((2, 3))},
        ("out",),
        (),
    ),
    "activation_forward": _elementwise({"activation": "tanh"}),
    "activation_backward": lambda: (
        {
            "da": _vals((2, 3), 2),
            "z": _vals((2, 3), 1),
            "a": np.tanh(_vals((2, 3), 1)),
            "activation": "tanh",
            "out": np.zeros((2, 3)),
        },
        ("out",),
        (),
    ),
    "dense_forward": lambda: (
        {
            "x": _vals((4, 3), 1),
            "w": _vals((3, 2), 2),
            "b": _vals(2, 3),
            "activation": "relu",
            "z": np.zeros((4, 2)),
            "a": np.zeros((4, 2)),
        },
        ("z", "a"),
        (),
    ),
    "dense_backward": lambda: (
        {
            "x": _vals((4, 3), 1),
            "z": _vals((4, 2), 2),
            "a": np.maximum(_vals((4, 2), 2), 0),
            "da": _vals((4, 2), 3),
            "activation": "relu",
            "dz": np.zeros((4, 2)),
            "dw": np.zeros((3, 2)),
            "db": np.zeros(2),
        },
        ("dz", "dw", "db"),
        (),
    ),
    "csr_dense_forward": lambda: (
        {
            **_csr(),
            "w": _vals((3, 2), 2),
            "b": _vals(2, 3),
            "activation": "relu",
            "z": np.zeros((2, 2)),
            "a": np.zeros((2, 2)),
        },
        ("z", "a"),
        (),
    ),
    "csr_dense_backward": lambda: (
        {
            **_csr(),
            "z": _vals((2, 2), 2),
            "a": np.maximum(_vals((2, 2), 2), 0),
            "da": _vals((2, 2), 3),
            "activation": "relu",
            "dz": np.zeros((2, 2)),
            "dw": np.zeros((3, 2)),
            "db": np.zeros(2),
        },
        ("dz", "dw", "db"),
        (),
    ),
    "dense_input_gradient": lambda: (
        {"dz": _vals((4, 2), 1), "w": _vals((3, 2), 2), "dx": np.zeros((4, 3))},
        ("dx",),
        (),
    ),
    "mse": lambda: ({"y_pred": _vals((2, 3), 1), "y": _vals((2, 3), 2)}, (), ()),
    "mse_gradient": lambda: (
        {"y_pred": _vals((2, 3), 1), "y": _vals((2, 3), 2), "out": np.zeros((2, 3))},
        ("out",),
        (),
    ),
    "poisson": lambda: ({"z": _vals((2, 3), 1), "y": _vals((2, 3), 2, 0.0, 4.0)}, (), ()),
    "poisson_gradient": lambda: (
        {"z": _vals((2, 3), 1), "y": _vals((2, 3), 2, 0.0, 4.0), "out": np.zeros((2, 3))},
        ("out",),
        (),
    ),
    "binary_cross_entropy": lambda: (
        {"z": _vals((2, 3), 1), "y": _vals((2, 3), 2, 0.0, 1.0)},
        (),
        (),
    ),
    "binary_cross_entropy_gradient": lambda: (
        {"z": _vals((2, 3), 1), "y": _vals((2, 3), 2, 0.0, 1.0), "out": np.zeros((2, 3))},
        ("out",),
        (),
    ),
    "cross_entropy": lambda: ({"z": _vals((2, 3), 1), "y": np.array([2, 0])}, (), ()),
    "cross_entropy_gradient": lambda: (
        {"z": _vals((2, 3), 1), "y": np.array([2, 0]), "out": np.zeros((2, 3))},
        ("out",),
        (),
    ),
    "sparse_cross_entropy": lambda: ({"z": _vals((2, 3), 1), "labels": np.array([1, 2])}, (), ()),
    "sparse_cross_entropy_gradient": lambda: (
        {"z": _vals((2, 3), 1), "labels": np.array([1, 2]), "out": np.zeros((2, 3))},
        ("out",),
        (),
    ),
    **{
        o.kernel: _optimizer(*o.states, lr=0.1, **({"step": 2} if o.step else {}))
        for o in fastnn.registry.OPTIMIZERS
    },
    "optimizer_step": _optimizer(
        "state1",
        "state2",
        optimizer="adam",
        step=2,
        lr=0.1,
        hyper=np.array([0.9, 0.999, 1e-8, 0.0, 0.0, 0.0]),
    ),
    "squared_norm": lambda: ({"x": _vals((2, 3), 1)}, (), ()),
    "scale_inplace": lambda: ({"x": _vals((2, 3), 1), "factor": 0.5}, (), ("x",)),
    "clip_grad_norm": lambda: ({"grad": _vals((2, 3), 1), "max_norm": 0.1}, (), ("grad",)),
    "dropout": lambda: (
        {
            "x": _vals((2, 3), 1),
            "mask": _vals((2, 3), 2) > 0,
            "rate": 0.25,
            "out": np.zeros((2, 3)),
        },
        ("out",),
        (),
    ),
    "batch_norm_train": lambda: (
        {
            "x": _vals((4, 3), 1),
            "gamma": _vals(3, 2),
            "beta": _vals(3, 3),
            "running_mean": _vals(3, 4),
            "running_var": _vals(3, 5, 0.5, 2.0),
            "out": np.zeros((4, 3)),
            "x_hat": np.zeros((4, 3)),
            "inv_std": np.zeros(3),
        },
        ("out", "x_hat", "inv_std"),
        ("running_mean", "running_var"),
    ),
    "batch_norm_eval": lambda: (
        {
            "x": _vals((4, 3), 1),
            "gamma": _vals(3, 2),
            "beta": _vals(3, 3),
            "running_mean": _vals(3, 4),
            "running_var": _vals(3, 5, 0.5, 2.0),
            "out": np.zeros((4, 3)),
        },
        ("out",),
        (),
    ),
    "batch_norm_backward": lambda: (
        {
            "dout": _vals((4, 3), 1),
            "x_hat": _vals((4, 3), 2),
            "gamma": _vals(3, 3),
            "inv_std": _vals(3, 4, 0.5, 2.0),
            "dx": np.zeros((4, 3)),
            "dgamma": np.zeros(3),
            "dbeta": np.zeros(3),
        },
        ("dx", "dgamma", "dbeta"),
        (),
    ),
}


def test_calls_cover_every_checked_method():
    public = {n for n in dir(fastnn.Backend) if not n.startswith("_")}
    assert set(CALLS) == public


# --- ndarray subclasses ---------------------------------------------------------------


class Tagged(np.ndarray):
    """A do-nothing ndarray subclass (as libraries define them)."""


def _memmap(a, folder):
    fd, path = tempfile.mkstemp(suffix=".dat", dir=folder)
    os.close(fd)
    m = np.memmap(path, dtype=a.dtype, mode="w+", shape=a.shape)
    m[...] = a
    return m


SUBCLASSES = {
    "matrix": lambda a, folder: np.asmatrix(a),
    "masked": lambda a, folder: np.ma.masked_array(a),
    "memmap": _memmap,
    "tagged": lambda a, folder: a.view(Tagged),
}


def _expected(subclass, base):
    """ "ok", or the exception class name the argument must raise."""
    if subclass == "masked":
        return "TypeError"
    if subclass == "matrix" and base.ndim != 2:
        return "ValueError"
    return "ok"


SUBCLASS_CASES = [
    (method, arg, sub)
    for method, build in CALLS.items()
    for arg, val in build()[0].items()
    if isinstance(val, np.ndarray)
    for sub in SUBCLASSES
]


def _values(result):
    """A method's return value as a list of float64 arrays (or floats)."""
    if result is None:
        return []
    items = result if isinstance(result, tuple) else (result,)
    return [np.array(r, dtype=F64) for r in items]


def _run_subclass_case(k, method, arg, sub, folder):
    build = CALLS[method]
    ref_args, outputs, inplace = build()
    ref = _values(getattr(k, method)(**ref_args))
    args = build()[0]
    base = args[arg]
    given = SUBCLASSES[sub](base.copy(), folder)
    args[arg] = given
    expected = _expected(sub, base)
    try:
        got = getattr(k, method)(**args)
    except (TypeError, ValueError) as exc:
        if type(exc).__name__ != expected:
            return f"raised {type(exc).__name__}: {exc} (expected {expected})"
        if not re.search(rf"\b{arg}\b", str(exc)):
            return f"{type(exc).__name__} does not name {arg!r}: {exc}"
        return "ok"
    if expected != "ok":
        return f"returned instead of raising {expected}"
    got_values = _values(got)
    if len(got_values) != len(ref):
        return f"returned {len(got_values)} values, expected {len(ref)}"
    for i, (g, r) in enumerate(zip(got_values, ref)):
        if g.shape != r.shape or not np.array_equal(g, r, equal_nan=True):
            return f"result {i} differs from the plain-array call: {g} != {r}"
    if arg in outputs:
        returned = got if isinstance(got, tuple) else (got,)
        if returned[outputs.index(arg)] is not given:
            return f"{arg} given as {sub} was not returned as given"
    if arg in outputs or arg in inplace:
        if not np.array_equal(np.asarray(given), np.asarray(ref_args[arg]), equal_nan=True):
            return f"{arg} given as {sub} does not hold the result"
    elif not np.array_equal(np.asarray(given), base):
        return f"input {arg} given as {sub} was modified"
    return "ok"


# The issue's reproductions: a (1, 100_000) float32 np.matrix as out / in-place buffer.
ISSUE_CASES = [
    "sigmoid",
    "relu",
    "tanh",
    "mse_gradient",
    "dropout",
    "scale_inplace",
    "clip_grad_norm",
]


def _run_issue_case(k, method):
    n = 100_000
    z = np.linspace(-3, 3, n, dtype=np.float32).reshape(1, n)
    out = np.asmatrix(np.zeros((1, n), np.float32))
    if method in ("sigmoid", "relu", "tanh"):
        res, want = getattr(k, method)(z, out=out), getattr(k, method)(z)
    elif method == "mse_gradient":
        res, want = k.mse_gradient(z, z * 0.5, out=out), k.mse_gradient(z, z * 0.5)
    elif method == "dropout":
        mask = np.arange(n).reshape(1, n) % 3 > 0
        res, want = k.dropout(z, mask, 0.25, out=out), k.dropout(z, mask, 0.25)
    else:
        out[...] = z
        plain = z.copy()
        if method == "scale_inplace":
            k.scale_inplace(out, 0.5)
            k.scale_inplace(plain, 0.5)
        else:
            k.clip_grad_norm(out, 1.0)
            k.clip_grad_norm(plain, 1.0)
        res, want = out, plain
    if res is not out:
        return "out was not returned as given"
    if not np.array_equal(np.asarray(out), want):
        return "out does not hold the plain-array result"
    return "ok"


def _cases():
    return [("issue", m) for m in ISSUE_CASES] + [("subclass", *c) for c in SUBCLASS_CASES]


def _child_main(backend, folder, start):
    """Run the cases from index ``start`` on ``backend``, printing START before and
    RESULT after each."""
    import faulthandler
    import warnings

    warnings.simplefilter("ignore")
    k = fastnn.backend(backend)
    for case in _cases()[start:]:
        key = "|".join(case)
        print("START", key, flush=True)
        # A kernel running over memory it does not own may also loop for ever: a
        # case (first JIT compilation included) that takes this long ends the child.
        faulthandler.dump_traceback_later(CASE_TIMEOUT, exit=True)
        try:
            if case[0] == "issue":
                result = _run_issue_case(k, case[1])
            else:
                result = _run_subclass_case(k, *case[1:], folder)
        except Exception as exc:  # reported, not raised: the other cases still run
            result = f"unexpected {type(exc).__name__}: {exc}"
        faulthandler.cancel_dump_traceback_later()
        print("RESULT", key, json.dumps(result), flush=True)


_RESULTS: dict = {}
MAX_CRASHES = 5  # child processes restarted after a crash, per backend
CASE_TIMEOUT = 120  # seconds


def _child_results(backend):
    """{case key: "ok" or what went wrong}, from child processes on ``backend``: one
    runs every case; a crash fails the case it was running and a new child goes on
    with the next one (at most MAX_CRASHES times; "__died__" records the crashes)."""
    if backend in _RESULTS:
        return _RESULTS[backend]
    keys = ["|".join(c) for c in _cases()]
    results, crashes = {}, []
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(
            [str(ROOT / "tests")] + [p for p in [os.environ.get("PYTHONPATH")] if p]
        ),
    )
    with tempfile.TemporaryDirectory() as folder:
        while len(results) < len(keys) and len(crashes) <= MAX_CRASHES:
            start = len(results)
            code = (
                "import importlib.util, sys\n"
                f"spec = importlib.util.spec_from_file_location('_safety', {__file__!r})\n"
                "mod = importlib.util.module_from_spec(spec)\n"
                "spec.loader.exec_module(mod)\n"
                f"mod._child_main({backend!r}, {folder!r}, {start})\n"
            )
            proc = subprocess.run(
                [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=1800
            )
            running = None
            for line in proc.stdout.splitlines():
                if line.startswith("START "):
                    running = line[6:]
                elif line.startswith("RESULT "):
                    key, _, value = line[7:].partition(" ")
                    results[key] = json.loads(value)
                    running = None
            if proc.returncode == 0 and len(results) == len(keys):
                break
            died = (
                f"the child process exited with {proc.returncode} while running "
                f"{running!r} (a crash, or a hang of {CASE_TIMEOUT} s): "
                f"{proc.stderr[-2000:]}"
            )
            crashes.append(died)
            if running is None:
                break  # died outside a case (e.g. on import): nothing to skip
            results[running] = died
    if crashes:
        results["__died__"] = "\n".join(crashes)
    _RESULTS[backend] = results
    return results


def _result(backend, key):
    results = _child_results(backend)
    return results.get(key, results.get("__died__", "the case did not run"))


@pytest.mark.parametrize("method", ISSUE_CASES)
@pytest.mark.parametrize("name", ALL_BACKENDS)
def test_matrix_out_of_the_issue_is_written_correctly(name, method):
    """The issue's SIGSEGV: sigmoid(z, out=np.asmatrix(np.empty((1, 100_000)))) etc."""
    assert _result(name, f"issue|{method}") == "ok"


@pytest.mark.parametrize(
    "method,arg,subclass", SUBCLASS_CASES, ids=[f"{m}-{a}-{s}" for m, a, s in SUBCLASS_CASES]
)
@pytest.mark.parametrize("name", ALL_BACKENDS)
def test_ndarray_subclass_arguments(name, method, arg, subclass):
    assert _result(name, f"subclass|{method}|{arg}|{subclass}") == "ok"


def test_child_process_completed():
    for name in ALL_BACKENDS:
        assert "__died__" not in _child_results(name), _child_results(name)["__died__"]


# --- 0-d input ----------------------------------------------------------------------

ZERO_D_CASES = [(m, kind) for m in ELEMENTWISE for kind in ("array", "scalar", "out")]


@pytest.mark.parametrize("method,kind", ZERO_D_CASES)
@pytest.mark.parametrize("name", ALL_BACKENDS)
def test_zero_d_input_gives_zero_d_output(name, method, kind):
    """Like a NumPy ufunc: np.relu-like(np.float64(x)) has shape (), not (1,)."""
    k = fastnn.backend(name)
    fn = getattr(k, method)
    for value in (-1.5, 0.0, 2.0):
        want = fn(np.array([value]))[0]
        z = np.float64(value) if kind == "scalar" else np.array(value)
        if kind == "out":
            out = np.array(np.nan)
            got = fn(z, out=out)
            assert got is out
        else:
            got = fn(z)
        assert isinstance(got, np.ndarray) and got.shape == (), (method, got)
        assert got.dtype == F64
        assert got[()] == want


# --- the raw tier is private -----------------------------------------------------------

RAW_CASES = list(ALL_BACKENDS)


@pytest.mark.parametrize("name", RAW_CASES)
def test_raw_kernels_are_private(name):
    k = fastnn.backend(name)
    assert not hasattr(k, "raw"), "the unchecked kernels must not be public"
    assert callable(k._raw.relu)
    for doc in (fastnn.Backend.__doc__, sys.modules["fastnn._backend"].__doc__):
        assert "_raw" in doc and "unchecked" in doc and "private" in doc


def test_public_docs_do_not_present_raw_kernels():
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    for page in pages:
        text = page.read_text(encoding="utf-8")
        assert not re.search(r"\.raw\b", text), f"{page} presents the raw kernels"


# --- learning rates from a schedule (item 5) -------------------------------------------


class BadRate(fastnn.schedules.Schedule):
    """0.01, then ``value`` from time ``bad_from`` on."""

    name = "bad_rate"  # not in SCHEDULES: a user's own schedule

    def __init__(self, value, bad_from=3, per="step"):
        self.value, self.bad_from, self.per = value, bad_from, per

    def __call__(self, t):
        return self.value if t >= self.bad_from else 0.01

    def get_config(self):
        return {"value": repr(self.value), "bad_from": self.bad_from, "per": self.per}


# Each bad value and the exception it must raise.
BAD_RATES = [
    (-0.5, ValueError),
    (-1e-300, ValueError),
    (float("nan"), ValueError),
    (float("inf"), ValueError),
    ("0.1", TypeError),
    (None, TypeError),
    (True, TypeError),
    (np.array(0.1), TypeError),
    (1j, TypeError),
]

# Every path that turns a schedule's value into a rate.
RATE_PATHS = ["compiled epoch", "step path", "train_step", "fit", "estimator"]


def _rate_data(net=None):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((64, 4))
    y = X[:, :1] * 2 - X[:, 1:2]
    return (X, y) if net is None else net.check_data(X, y)


def _train_on(path, schedule, net):
    """One epoch of 8 batches of 8 rows (no shuffle) on ``path``."""
    X, y = _rate_data(net)
    opt = fastnn.SGD(schedule)
    if path == "compiled epoch":
        assert fastnn._epoch.supports(net, opt)
        net.train_epoch(X, y, opt, 8, shuffle=False)
    elif path == "step path":
        net.train_epoch(X, y, opt, 8, shuffle=False, on_step=lambda j, loss: None)
    elif path == "train_step":
        for s in range(0, 64, 8):
            net.train_step(X[s : s + 8], y[s : s + 8], opt)
    elif path == "fit":
        fastnn.fit(net, X, y, optimizer=opt, epochs=2, batch_size=8, shuffle=False)
    else:
        raise AssertionError(path)
    return opt


def _net():
    return fastnn.MLP([4, 8, 1], "tanh", random_state=0)


@pytest.mark.parametrize("value,exc", BAD_RATES, ids=[repr(b[0]) for b in BAD_RATES])
@pytest.mark.parametrize("path", RATE_PATHS)
def test_bad_rates_from_a_schedule_are_refused_on_every_path(path, value, exc):
    """A custom schedule returning -0.5 made the whole-epoch kernel climb the loss
    (4.6e6, no error) and a string was trained with; the step path refused them with
    another message. Now one check (schedules.checked_rate) names the schedule, the
    value and the step on every path, before the bad rate updates anything."""
    where = re.escape(f"schedule BadRate returned lr={value!r} at step 3: learning rates must be")
    if path == "estimator":
        pytest.importorskip("sklearn")
        X, y = _rate_data()
        est = fastnn.MLPRegressor(
            hidden_layer_sizes=(8,),
            solver="sgd",
            batch_size=8,
            max_iter=3,
            shuffle=False,
            random_state=0,
            schedule=BadRate(value),
        )
        with pytest.raises(exc, match=where):
            est.fit(X, y.ravel())
        return
    net, good = _net(), _net()
    with pytest.raises(exc, match=where):
        _train_on(path, BadRate(value), net)
    # The first three steps ran (the compiled epoch, which fit takes here, refuses all
    # 8 before the first); the step with the bad rate updated nothing.
    X, y = _rate_data(good)
    opt = fastnn.SGD(0.01)
    if path not in ("compiled epoch", "fit"):
        for s in range(0, 24, 8):
            good.train_step(X[s : s + 8], y[s : s + 8], opt)
    np.testing.assert_array_equal(net.params, good.params)


EPOCH_RATE_PATHS = ["compiled epoch", "step path", "fit"]


@pytest.mark.parametrize("path", EPOCH_RATE_PATHS)
def test_bad_rate_of_a_per_epoch_schedule_names_the_epoch(path):
    """Per-epoch schedules are checked too; the message counts epochs."""
    net = _net()
    opt = fastnn.SGD(BadRate(-0.5, bad_from=1, per="epoch"))
    X, y = _rate_data(net)
    kwargs = {} if path != "step path" else {"on_step": lambda j, loss: None}
    if path == "fit":
        fastnn.fit(net, X, y, optimizer=opt, epochs=1, batch_size=8)
    else:
        net.train_epoch(X, y, opt, 8, **kwargs)
        opt.end_epoch()
    with pytest.raises(
        ValueError,
        match=re.escape(
            "schedule BadRate returned lr=-0.5 at epoch 1: learning rates must be finite "
            "numbers >= 0"
        ),
    ):
        if path == "fit":
            fastnn.fit(net, X, y, optimizer=opt, epochs=1, batch_size=8)
        else:
            net.train_epoch(X, y, opt, 8, **kwargs)


ZERO_RATE_PATHS = ["compiled epoch", "step path", "train_step", "fit"]


@pytest.mark.parametrize("path", ZERO_RATE_PATHS)
def test_a_zero_rate_is_allowed_and_changes_nothing(path):
    """lr = 0 is a rate (a cosine schedule ends there; PyTorch allows it)."""
    net = _net()
    before = net.params.copy()
    _train_on(path, BadRate(0.0, bad_from=0), net)
    np.testing.assert_array_equal(net.params, before)


# --- MLP.train_epoch on unprepared data (item 10) ----------------------------------------


def _classification(net):
    rng = np.random.default_rng(1)
    X = rng.standard_normal((64, 4))
    return net.check_data(X, (X[:, 0] > 0).astype(int) + (X[:, 1] > 0))


# (model: "mse" or "ce", change to the prepared (X, y, batch_size), exception, the
#  argument the message must name)
TRAIN_EPOCH_CASES = {
    "X float64 for a float32 model": ("mse", lambda X, y, b: (X.astype(F64), y, b), TypeError, "X"),
    "X int": ("mse", lambda X, y, b: (X.astype(int), y, b), TypeError, "X"),
    "X list": ("mse", lambda X, y, b: (X.tolist(), y, b), TypeError, "X"),
    "X Fortran order": ("mse", lambda X, y, b: (np.asfortranarray(X), y, b), ValueError, "X"),
    "X strided rows": (
        "mse",
        lambda X, y, b: (np.repeat(X, 2, axis=0)[::2], y, b),
        ValueError,
        "X",
    ),
    "X 1-D": ("mse", lambda X, y, b: (X[:, 0].copy(), y, b), ValueError, "X"),
    "X wrong width": ("mse", lambda X, y, b: (X[:, :3].copy(), y, b), ValueError, "X"),
    "X empty": ("mse", lambda X, y, b: (X[:0], y[:0], b), ValueError, "X"),
    "X masked": ("mse", lambda X, y, b: (np.ma.masked_array(X), y, b), TypeError, "X"),
    "y int": ("mse", lambda X, y, b: (X, y.astype(int), b), TypeError, "y"),
    "y float64": ("mse", lambda X, y, b: (X, y.astype(F64), b), TypeError, "y"),
    "y 1-D": ("mse", lambda X, y, b: (X, y[:, 0].copy(), b), ValueError, "y"),
    "y fewer rows": ("mse", lambda X, y, b: (X, y[:10], b), ValueError, "y"),
    "y more rows": ("mse", lambda X, y, b: (X[:10], y, b), ValueError, "y"),
    "y Fortran (n, 2)": ("mse2", lambda X, y, b: (X, np.asfortranarray(y), b), ValueError, "y"),
    "labels int32": ("ce", lambda X, y, b: (X, y.astype(np.int32), b), TypeError, "y"),
    "labels float": ("ce", lambda X, y, b: (X, y.astype(np.float32), b), TypeError, "y"),
    "labels = k": ("ce", lambda X, y, b: (X, np.where(y == 0, 3, y), b), ValueError, "y"),
    "labels 10**9": ("ce", lambda X, y, b: (X, np.where(y == 0, 10**9, y), b), ValueError, "y"),
    "labels negative": ("ce", lambda X, y, b: (X, y - 1, b), ValueError, "y"),
    "batch_size=0": ("mse", lambda X, y, b: (X, y, 0), ValueError, "batch_size"),
    "batch_size=-1": ("mse", lambda X, y, b: (X, y, -1), ValueError, "batch_size"),
    "batch_size=1.5": ("mse", lambda X, y, b: (X, y, 1.5), TypeError, "batch_size"),
    "batch_size=8.0": ("mse", lambda X, y, b: (X, y, 8.0), TypeError, "batch_size"),
    "batch_size=True": ("mse", lambda X, y, b: (X, y, True), TypeError, "batch_size"),
    "batch_size='8'": ("mse", lambda X, y, b: (X, y, "8"), TypeError, "batch_size"),
    "batch_size=None": ("mse", lambda X, y, b: (X, y, None), TypeError, "batch_size"),
}


def _model(kind, backend):
    if kind == "ce":
        net = fastnn.MLP([4, 8, 3], "tanh", loss="cross_entropy", backend=backend, random_state=0)
        return net, _classification(net)
    n_out = 2 if kind == "mse2" else 1
    net = fastnn.MLP([4, 8, n_out], "tanh", backend=backend, random_state=0)
    X, y = _rate_data()
    return net, net.check_data(X, np.tile(y, (1, n_out)))


@pytest.mark.parametrize("path", ["compiled epoch", "step path"])
@pytest.mark.parametrize("case", list(TRAIN_EPOCH_CASES))
@pytest.mark.parametrize("name", ALL_BACKENDS)
def test_train_epoch_refuses_unprepared_data(name, case, path):
    """A clear TypeError/ValueError naming the argument (and, for data, pointing to
    check_data), never "Buffer dtype mismatch", "No matching signature found" or a
    ZeroDivisionError from the kernels; nothing is trained."""
    kind, change, exc, arg = TRAIN_EPOCH_CASES[case]
    net, (X, y) = _model(kind, name)
    before = net.params.copy()
    X, y, batch_size = change(X, y, 8)
    kwargs = {} if path == "compiled epoch" else {"on_step": lambda j, loss: None}
    with pytest.raises(exc) as info:
        net.train_epoch(X, y, fastnn.SGD(0.01), batch_size, **kwargs)
    msg = str(info.value)
    assert re.search(rf"\b{arg}\b", msg), msg
    if arg in ("X", "y") and not re.search("samples|empty|masked", msg):
        assert "check_data" in msg, msg
    np.testing.assert_array_equal(net.params, before)


# Prepared data in forms check_data may give, or equivalent views: accepted.
TRAIN_EPOCH_ACCEPTED = {
    "prepared": lambda X, y, b: (X, y, b),
    "batch_size np.int64": lambda X, y, b: (X, y, np.int64(b)),
    "batch_size > n": lambda X, y, b: (X, y, 1000),
    "X memmap-like subclass": lambda X, y, b: (X.view(Tagged), y, b),
    "X np.matrix": lambda X, y, b: (np.asmatrix(X), y, b),
}


@pytest.mark.filterwarnings("ignore:the matrix subclass:PendingDeprecationWarning")
@pytest.mark.parametrize("path", ["compiled epoch", "step path"])
@pytest.mark.parametrize("case", list(TRAIN_EPOCH_ACCEPTED))
@pytest.mark.parametrize("name", ALL_BACKENDS)
def test_train_epoch_accepts_prepared_data(name, case, path):
    net, (X, y) = _model("mse", name)
    ref, _ = _model("mse", name)
    kwargs = {} if path == "compiled epoch" else {"on_step": lambda j, loss: None}
    X2, y2, batch_size = TRAIN_EPOCH_ACCEPTED[case](X, y, 8)
    logs = net.train_epoch(X2, y2, fastnn.SGD(0.01), batch_size, shuffle=False, **kwargs)
    want = ref.train_epoch(X, y, fastnn.SGD(0.01), int(batch_size), shuffle=False, **kwargs)
    assert logs == want
    np.testing.assert_array_equal(net.params, ref.params)


def test_kernel_api_safety_recorded(request):
    n = len(ALL_BACKENDS)
    record_module_once_passed(
        request,
        "api.kernel_arrays",
        "public API",
        "every checked kernel method of every backend given np.matrix, masked, memmap "
        "and other ndarray-subclass arrays as each input and output (the issue's "
        "np.matrix out= cases included), and 0-d inputs and outputs to the elementwise "
        "kernels (in child processes that survive a crash)",
        n * (len(SUBCLASS_CASES) + len(ISSUE_CASES) + len(ZERO_D_CASES)),
        "outputs written in place and returned as given, inputs read as plain arrays, "
        "masked arrays and wrong shapes refused with an error naming the argument, 0-d "
        "in gives 0-d out; no crash; the raw kernels are private (_raw)",
    )
    record_module_once_passed(
        request,
        "api.learning_rates",
        "public API",
        "schedules yielding negative, NaN, infinite, string, None, bool and complex "
        "rates, on the compiled epoch, the step path, train_step, fit and the "
        "estimators; per-epoch schedules; a rate of 0",
        len(BAD_RATES) * len(RATE_PATHS) + len(EPOCH_RATE_PATHS) + len(ZERO_RATE_PATHS),
        "ValueError / TypeError naming the schedule and the step or epoch, the "
        "parameters left as the last good step made them; a rate of 0 trains nothing",
    )
    record_module_once_passed(
        request,
        "api.train_epoch_inputs",
        "public API",
        "MLP.train_epoch given data check_data did not prepare (other dtypes, "
        "non-contiguous, wrong shapes, out-of-range labels, mismatched rows, empty) and "
        "bad batch sizes (0, -1, 1.5, True), both paths, every backend",
        n * 2 * len(TRAIN_EPOCH_CASES),
        "ValueError / TypeError naming the argument and saying to call check_data, "
        "before any kernel runs; the model untouched",
    )
