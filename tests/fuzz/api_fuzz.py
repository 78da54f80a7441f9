"""Hypothesis fuzzing of fastnn's public API, run in a child process.

``python tests/fuzz/api_fuzz.py SURFACE N`` feeds N generated inputs to one surface
("model", "estimators" or "cli") and prints, as its last line, a JSON summary of the
outcomes. tests/test_fuzz_api.py runs it in a subprocess with a timeout, so that a
segfault or a hang in compiled code is a test failure, not a dead test run.

Each input must either work -- and then give an honest answer: finite weights,
predictions of the right shape that are classes seen in training or finite numbers --
or raise a ValueError / TypeError whose message names the argument (fit may also stop
with DivergenceError, which says what happened and what to try). Anything else
raises AssertionError, which hypothesis shrinks and reports.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import sys
import tempfile
import warnings
from collections import Counter

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastnn
from fastnn import MLP, DivergenceError

OUTCOMES: Counter = Counter()
MESSAGES: Counter = Counter()  # with FUZZ_MESSAGES=1: which errors the inputs met
SPECIAL = [np.nan, np.inf, -np.inf, 1e30, -1e300, 1e300, 3e38, 5e-324, 1e-45, -0.0, 1e-310, 2.0**63]


# --- inputs ---------------------------------------------------------------------------------


@st.composite
def arrays_2d(draw, n=None, f=None):
    """An (n, f) input in one of many forms, with special values sprinkled in."""
    n = draw(st.sampled_from([0, 1, 2, 3, 7, 12, 12, 20])) if n is None else n
    f = draw(st.sampled_from([0, 1, 2, 3, 3])) if f is None else f
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    base = rng.standard_normal((n, f)) * draw(st.sampled_from([1.0, 1e-3, 1e3, 1e20, 1e150]))
    if n * f and draw(st.sampled_from([False, False, True])):
        k = draw(st.integers(1, n * f))
        base.flat[rng.integers(0, n * f, k)] = rng.choice(SPECIAL, k)
    # well-formed kinds repeated: about half the inputs can be trained on
    kind = draw(
        st.sampled_from(
            ["float64"] * 6
            + ["float32"] * 4
            + ["frame"] * 2
            + [
                "float16",
                "int64",
                "int8",
                "uint8",
                "bool",
                "complex",
                "object-num",
                "object-str",
                "str",
                "list",
                "fortran",
                "big-endian",
                "strided",
                "sparse",
                "frame",
                "frame-mixed",
                "frame-str",
                "frame-nullable",
                "1-D",
                "3-D",
                "scalar",
                "none",
            ]
        )
    )
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if kind in ("float64", "float32", "float16"):
            return kind, base.astype(kind)
        if kind in ("int64", "int8", "uint8"):
            return kind, np.nan_to_num(base, posinf=0, neginf=0).astype(kind)
        if kind == "bool":
            return kind, base > 0
        if kind == "complex":
            return kind, base + 1j * (base > 0)
        if kind == "object-num":
            return kind, base.astype(object)
        if kind == "object-str":
            return kind, np.array([[str(v) for v in row] for row in base], dtype=object)
        if kind == "str":
            return kind, base.astype(str)
        if kind == "list":
            return kind, base.tolist()
        if kind == "fortran":
            return kind, np.asfortranarray(base)
        if kind == "big-endian":
            return kind, base.astype(">f8")
        if kind == "strided":
            return kind, np.repeat(base, 2, axis=1)[:, ::2]
        if kind == "sparse":
            import scipy.sparse as sp

            return kind, sp.csr_matrix(np.nan_to_num(base))
        if kind.startswith("frame"):
            import pandas as pd

            cols = {f"c{j}": base[:, j] for j in range(f)}
            if kind == "frame-mixed" and f:
                cols["c0"] = base[:, 0] > 0
                if f > 1:
                    cols["c1"] = np.nan_to_num(base[:, 1], posinf=0, neginf=0).astype(np.int32)
            elif kind == "frame-str" and f:
                cols["c0"] = [f"v{v:.2f}" for v in base[:, 0]]
            elif kind == "frame-nullable" and f:
                cols["c0"] = pd.array(
                    [None if v > 1 else int(v > 0) for v in base[:, 0]], dtype="Int64"
                )
            return kind, pd.DataFrame(cols, index=range(n))
        if kind == "1-D":
            return kind, base.ravel()
        if kind == "3-D":
            return kind, base[..., None]
        if kind == "scalar":
            return kind, 1.5
        return kind, None


def labels(draw, n, kind):
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    form = draw(
        st.sampled_from(
            ["int"] * 6
            + [
                "str",
                "bool",
                "float",
                "float-nan",
                "object",
                "one-class",
                "2-D",
                "wrong-length",
                "huge",
            ]
        )
    )
    k = draw(st.integers(2, 4))
    base = rng.integers(0, k, n)
    if n >= 2:
        base[:2] = [0, 1]  # at least two classes
    if form == "int":
        return form, base
    if form == "str":
        return form, np.array(["a", "b", "c", "d"])[base]
    if form == "bool":
        return form, base % 2 == 1
    if form == "float":
        return form, base.astype(float)
    if form == "float-nan":
        y = base.astype(float)
        y[: max(1, n // 2)] = np.nan
        return form, y
    if form == "object":
        return form, np.array([[1, "x"][int(b) % 2] for b in base], dtype=object)
    if form == "one-class":
        return form, np.zeros(n, int)
    if form == "2-D":
        return form, np.eye(k, dtype=int)[base]
    if form == "wrong-length":
        return form, base[:-1] if n else np.zeros(1, int)
    return form, base * 1e300 if kind == "regress" else base + 2**40


# --- the oracle -----------------------------------------------------------------------------

ARG_NAMES = re.compile(
    r"\b(X|y|X_val|y_val|x|xb|yb|classes|input|Input)\b|column|sample|"
    r"feature|label|class|target|array|dtype|sparse|dense|Complex|validation"
)


def clean_error(exc, what):
    """An error the user can act on: its type and that its message names an argument."""
    if isinstance(exc, DivergenceError):
        msg = str(exc)
        assert "diverged" in msg and ("Try" in msg or "Standardise" in msg), (
            f"{what}: divergence without advice: {msg}"
        )
        return "diverged (with advice)"
    assert isinstance(exc, (ValueError, TypeError)), f"{what}: raised {type(exc).__name__}: {exc}"
    msg = str(exc)
    assert msg and ARG_NAMES.search(msg), f"{what}: message names no argument: {msg!r}"
    return "clear " + ("ValueError" if isinstance(exc, ValueError) else "TypeError")


def honest(pred, n, allowed=None, what=""):
    pred = np.asarray(pred)
    assert pred.shape[0] == n, f"{what}: {pred.shape[0]} predictions for {n} rows"
    if allowed is None:
        assert np.isfinite(pred.astype(np.float64)).all(), f"{what}: non-finite predictions"
    else:
        assert np.isin(pred, allowed).all(), f"{what}: predictions {pred} not in {allowed}"


def attempt(what, fn):
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ConvergenceWarning, overflow notes
            return "worked", fn()
    except Exception as exc:  # noqa: BLE001 - classified, and re-raised when unclear
        if os.environ.get("FUZZ_MESSAGES"):
            MESSAGES[re.sub(r"[-+0-9.e]+", "#", str(exc))[:90]] += 1
        return clean_error(exc, what), None


# --- surfaces -------------------------------------------------------------------------------

SETTINGS = dict(
    deadline=None,
    derandomize=True,
    database=None,
    print_blob=True,
    suppress_health_check=list(HealthCheck),
)


def fuzz_model(n_examples):
    backends = fastnn.available_backends()

    @settings(max_examples=n_examples, **SETTINGS)
    @given(st.data())
    def run(data):
        kind, X = data.draw(arrays_2d())
        shape = np.shape(X) if not hasattr(X, "shape") else X.shape
        n = shape[0] if len(shape) else 0
        loss = data.draw(st.sampled_from(["mse", "cross_entropy", "binary_cross_entropy"]))
        form, y = labels(data.draw, n, "regress" if loss == "mse" else "classify")
        if loss == "binary_cross_entropy" and form in ("int", "float"):
            y = y % 2
        n_out = {"mse": 1, "binary_cross_entropy": 1, "cross_entropy": 4}[loss]
        f = shape[1] if len(shape) == 2 else 3
        net = MLP(
            [max(f, 1), 5, n_out],
            loss=loss,
            dtype=data.draw(st.sampled_from(["float32", "float64"])),
            backend=data.draw(st.sampled_from(backends)),
            dropout=data.draw(st.sampled_from([0.0, 0.0, 0.2])),
            random_state=0,
        )
        what = f"MLP({loss}, {net.dtype}, {net.backend_name}).fit(X {kind} {shape}, y {form})"
        outcome, _ = attempt(what, lambda: net.fit(X, y, epochs=2, batch_size=4))
        OUTCOMES["fit: " + outcome] += 1
        assert np.isfinite(net.params).all(), f"{what}: non-finite weights after fit"
        outcome, pred = attempt("predict " + what, lambda: net.predict(X))
        OUTCOMES["predict: " + outcome] += 1
        if pred is not None:
            honest(
                pred,
                n,
                np.arange(n_out)
                if loss == "cross_entropy"
                else ([0, 1] if loss == "binary_cross_entropy" else None),
                what,
            )
        outcome, logs = attempt("evaluate " + what, lambda: net.evaluate(X, y))
        OUTCOMES["evaluate: " + outcome] += 1
        if logs is not None:
            # an mse of 1e300-sized errors is honestly inf; NaN would be no answer
            assert not any(np.isnan(v) for v in logs.values()), f"{what}: {logs}"

    run()


def fuzz_estimators(n_examples):
    from fastnn import MLPClassifier, MLPRegressor

    @settings(max_examples=n_examples, **SETTINGS)
    @given(st.data())
    def run(data):
        kind, X = data.draw(arrays_2d())
        shape = X.shape if hasattr(X, "shape") else np.shape(X)
        n = shape[0] if len(shape) else 0
        classify = data.draw(st.booleans())
        form, y = labels(data.draw, n, "classify" if classify else "regress")
        kw = dict(
            hidden_layer_sizes=(4,),
            max_iter=3,
            random_state=0,
            backend=data.draw(st.sampled_from(fastnn.available_backends())),
            solver=data.draw(st.sampled_from(["adam", "sgd", "lbfgs"])),
            early_stopping=data.draw(st.sampled_from([False, False, True])),
        )
        est = (MLPClassifier if classify else MLPRegressor)(**kw)
        what = f"{type(est).__name__}({kw['solver']}).fit(X {kind} {shape}, y {form})"
        outcome, _ = attempt(what, lambda: est.fit(X, y))
        OUTCOMES["fit: " + outcome] += 1
        fitted = outcome == "worked"
        if fitted:
            assert np.isfinite(est._model.params).all(), f"{what}: non-finite weights"
            allowed = est.classes_ if classify and np.ndim(est.classes_) == 1 else None
            for method in ("predict", "score") + (("predict_proba",) if classify else ()):
                args = (X, y) if method == "score" else (X,)
                outcome, out = attempt(
                    f"{method} {what}", lambda m=method, a=args: getattr(est, m)(*a)
                )
                OUTCOMES[f"{method}: {outcome}"] += 1
                if out is None:
                    continue
                if method == "predict" and (allowed is not None or not classify):
                    honest(out, n, allowed if classify else None, what)
                elif method == "predict_proba":
                    assert np.isfinite(out).all() and (out >= 0).all() and (out <= 1).all()
                    if est._label_binarizer.y_type_ != "multilabel-indicator":
                        assert np.allclose(out.sum(axis=1), 1, atol=1e-3), what
        if kw["solver"] != "lbfgs" and not kw["early_stopping"]:
            part = (MLPClassifier if classify else MLPRegressor)(**kw)
            extra = {}
            if classify:
                try:
                    extra["classes"] = np.unique(np.asarray(y))
                except TypeError:
                    extra["classes"] = [0, 1]
            outcome, _ = attempt("partial_fit " + what, lambda: part.partial_fit(X, y, **extra))
            OUTCOMES["partial_fit: " + outcome] += 1

    run()


# --- the command line --------------------------------------------------------------------------

CELLS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(-(10**30), 10**30).map(str),
    st.sampled_from(
        [
            "",
            " ",
            "nan",
            "inf",
            "-inf",
            "1e300",
            "-1e308",
            "5e-324",
            "1e-45",
            "0x10",
            "1_000",
            "١٢",
            "NaN",
            "True",
            "a,b",
            '"q"',
            "\x00",
            "é",
            "1e999",
            "--",
            "0",
            "1",
            "2",
            "cat",
            "dog",
        ]
    ),
    st.text(max_size=6),
)


@st.composite
def csv_files(draw):
    """(header, rows, target): mostly well-formed tables (so that training runs) with
    special cells, and sometimes broken ones (duplicate or empty names, short rows)."""
    header = draw(
        st.sampled_from(
            [["a", "b", "y"]] * 4
            + [
                ["x", "target"],
                ["é", " a ", "y"],
                ["a", "a", "y"],
                ["", "y"],
                ["y"],
                ["a", "b", "c", "y"],
            ]
        )
    )
    n_rows = draw(st.sampled_from([0, 1, 2, 3, 5, 8, 8, 12]))
    numeric = draw(st.sampled_from([True, True, True, False]))
    cell = (
        st.sampled_from(
            ["0", "1", "2", "1.5", "-3", "1e30", "1e300", "-1e308", "5e-324", "0.1", "7"]
        )
        if numeric
        else CELLS
    )
    label = (
        st.sampled_from(["0", "1", "2", "cat", "dog", "1.5", "-2.25", "1e300", "", "nan"])
        if numeric
        else CELLS
    )
    rows = []
    ragged = draw(st.sampled_from([False] * 9 + [True]))
    for _ in range(n_rows):
        width = len(header) - (draw(st.sampled_from([0, 1])) if ragged else 0)
        rows.append(
            draw(st.lists(cell, min_size=width - 1, max_size=width - 1)) + [draw(label)]
            if width
            else []
        )
    target = draw(st.sampled_from([header[-1]] * 4 + header + ["missing"]))
    return header, rows, target


def _run_cli(args):
    from fastnn.cli import main

    out, err = io.StringIO(), io.StringIO()
    with (
        contextlib.redirect_stdout(out),
        contextlib.redirect_stderr(err),
        warnings.catch_warnings(),
    ):
        warnings.simplefilter("error")  # a RuntimeWarning on stderr is a finding
        try:
            rc = main(args)
        except SystemExit as exc:  # argparse usage errors
            rc = exc.code
    return rc, out.getvalue(), err.getvalue()


def fuzz_cli(n_examples):
    import csv

    tmp = tempfile.mkdtemp(prefix="fastnn-cli-fuzz-")

    @settings(max_examples=n_examples, **SETTINGS)
    @given(
        csv_files(),
        st.sampled_from(["auto", "classify", "regress"]),
        st.sampled_from(["0", "0.3"]),
        st.sampled_from(["float32", "float64"]),
    )
    def run(spec, task, split, dtype):
        header, rows, target = spec
        path = os.path.join(tmp, "data.csv")
        with open(path, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(header)
            w.writerows(rows)
        model = os.path.join(tmp, "model.fnn")
        if os.path.exists(model):
            os.unlink(model)
        args = [
            "train",
            path,
            "--target",
            target,
            "--task",
            task,
            "--epochs",
            "2",
            "--hidden",
            "4",
            "--batch-size",
            "4",
            "--validation-split",
            split,
            "--dtype",
            dtype,
            "--seed",
            "0",
            "-q",
            "-o",
            model,
        ]
        rc, out, err = _run_cli(args)
        what = f"fastnn {' '.join(args)} on {header} {rows}"
        assert rc in (0, 1, 2), f"{what}: exit status {rc}"
        if rc == 0:
            OUTCOMES["train: worked"] += 1
            assert "final metrics" in out, what
            classify = "task: classify" in out
            rc, out, err = _run_cli(["predict", model, path])
            what = "predict after " + what
            assert rc in (0, 1), f"{what}: exit status {rc}, {err}"
            if rc == 0:
                OUTCOMES["predict: worked"] += 1
                preds = list(csv.reader(io.StringIO(out)))[1:]
                assert len(preds) == len(rows), what
                train_labels = {r[header.index(target)].strip() for r in rows if r}
                for p in preds:
                    if classify:
                        assert p[0] in train_labels, f"{what}: label {p[0]!r}"
                    else:
                        assert np.isfinite(float(p[0])), f"{what}: prediction {p[0]}"
            else:
                OUTCOMES["predict: clear error"] += 1
                assert err.startswith("fastnn predict: error: ") and err.count("\n") == 1, (
                    f"{what}: {err!r}"
                )
        else:
            OUTCOMES["train: " + ("clear error" if rc == 1 else "usage error")] += 1
            if os.environ.get("FUZZ_MESSAGES"):
                MESSAGES[re.sub(r"[-+0-9.e]+", "#", err.split(": error: ")[-1])[:90]] += 1
            prefix = "fastnn train: error: " if rc == 1 else "usage: fastnn"
            assert err.startswith(prefix), f"{what}: {err!r}"
            if rc == 1:
                assert err.count("\n") == 1 and "Traceback" not in err, f"{what}: {err!r}"

    run()


if __name__ == "__main__":
    surface, n = sys.argv[1], int(sys.argv[2])
    {"model": fuzz_model, "estimators": fuzz_estimators, "cli": fuzz_cli}[surface](n)
    for msg, count in MESSAGES.most_common():
        print(f"{count:5d}  {msg}", file=sys.stderr)
    print(json.dumps({"surface": surface, "examples": n, "outcomes": dict(OUTCOMES)}))
