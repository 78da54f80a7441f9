"""Input fuzzing of the public API: estimators, the model API and the command line.

The generated inputs (random shapes; int, bool, float16, object, complex and string
dtypes; NaN, inf, 1e30, 1e300, subnormals; empty arrays, one sample, one feature;
sparse matrices; DataFrames with mixed columns; CSV files with special cells) are fed
in a child process (tests/fuzz/api_fuzz.py), so that a segfault or a hang in compiled
code fails the test instead of killing the run; the child's oracle is described there.
A few regression cases found by the fuzzers are pinned here, as are a few command
lines run as real processes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest

import fastnn
from _reliability_record import record
from fastnn import MLP

HERE = os.path.dirname(os.path.abspath(__file__))
# the fastnn this process imported (the source tree, or site-packages when installed)
SRC = os.path.dirname(os.path.dirname(os.path.abspath(fastnn.__file__)))
ENV = dict(os.environ, PYTHONPATH=os.pathsep.join([SRC, HERE, os.environ.get("PYTHONPATH", "")]))
EXAMPLES = {"model": 200, "estimators": 150, "cli": 200}
WHAT = {
    "model": "MLP fit / predict / evaluate on every backend, float32 and float64, "
    "mse / cross-entropies, with and without dropout",
    "estimators": "MLPClassifier / MLPRegressor fit / predict / predict_proba / score / "
    "partial_fit, solvers adam, sgd, lbfgs, with and without early stopping",
    "cli": "fastnn train then predict (in-process main()) on generated CSV files: special "
    "cells (nan, inf, 1e300, 5e-324, '0x10', '1_000', NUL, unicode, empty), "
    "duplicate or empty column names, ragged rows, 0-12 rows, every --task",
}
INPUTS = (
    "inputs: 0-20 samples x 0-3 features as float64/32/16, int64/8, uint8, bool, "
    "complex, object (numbers or strings), str, lists, Fortran, big-endian, "
    "strided, sparse, DataFrames (mixed bool/int/float, strings, nullable ints), "
    "1-D, 3-D, scalars, None; NaN, +-inf, 1e30, 1e300, 3e38, subnormals; labels of "
    "ints, strings, bools, floats, NaN, objects, one class, one-hot, wrong length, "
    "huge"
)


@pytest.mark.parametrize("surface", sorted(EXAMPLES))
def test_fuzz_in_a_child_process(surface):
    if surface == "estimators":
        pytest.importorskip("sklearn")
    pytest.importorskip("pandas")
    n = EXAMPLES[surface]
    proc = subprocess.run(
        [sys.executable, os.path.join(HERE, "fuzz", "api_fuzz.py"), surface, str(n)],
        capture_output=True,
        text=True,
        timeout=300,
        env=ENV,
    )
    # a negative status is a signal: -11 a segfault, -6 an abort
    assert proc.returncode == 0, f"status {proc.returncode}\n{proc.stderr[-6000:]}"
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    outcomes = summary["outcomes"]
    assert any(k.endswith("worked") for k in outcomes), outcomes  # not all refused
    split = ", ".join(f"{k} {v}" for k, v in sorted(outcomes.items()))
    record(
        f"api.{surface}",
        "public API",
        WHAT[surface] + ("; " + INPUTS if surface != "cli" else ""),
        n,
        "each works with an honest answer (finite weights; predictions of the right "
        "length that are training classes or finite numbers) or raises ValueError / "
        "TypeError naming the argument (fit may stop with DivergenceError and advice); "
        "no crash, no hang (child process, 300 s)",
        split,
    )


# --- command lines run as real processes ----------------------------------------------------


def _cli(*args, cwd):
    return subprocess.run(
        [sys.executable, "-m", "fastnn.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
        env=ENV,
    )


def test_command_line_in_real_processes(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((40, 2))
    rows = [f"{a:.6g},{b:.6g},{'yes' if a + b > 0 else 'no'}" for a, b in X]
    (tmp_path / "ok.csv").write_text("a,b,label\n" + "\n".join(rows) + "\n")
    (tmp_path / "huge.csv").write_text("a,b,label\n1e300,1,yes\n-1e300,2,no\n0,3,yes\n")
    # a column of numbers with one word in it (a column of words is a text feature)
    bad = [f"{i},{2 * i},{'yes' if i % 2 else 'no'}" for i in range(12)]
    bad[5] = "5,x,yes"
    (tmp_path / "bad.csv").write_text("a,b,label\n" + "\n".join(bad) + "\n")
    (tmp_path / "bin.csv").write_bytes(b"a,b\n\xff\xfe\x00,1\n")
    (tmp_path / "garbage.fnn").write_bytes(os.urandom(256))
    cases = [
        (
            ("train", "ok.csv", "--target", "label", "--epochs", "3", "-q", "-o", "m.fnn"),
            0,
            "final metrics",
        ),
        (("predict", "m.fnn", "ok.csv"), 0, "prediction"),
        (
            (
                "train",
                "huge.csv",
                "--target",
                "label",
                "--epochs",
                "2",
                "-q",
                "--validation-split",
                "0",
            ),
            0,
            "final metrics",
        ),
        (("predict", "m.fnn", "huge.csv"), 1, "line 2: column 'a' holds 1e+300"),
        (("train", "bad.csv", "--target", "label"), 1, "column 'b' holds numbers, but here 'x'"),
        (("train", "bin.csv", "--target", "b"), 1, "not a UTF-8 text file"),
        (("predict", "garbage.fnn", "ok.csv"), 1, "garbage.fnn"),
        (("train", "ok.csv", "--target", "label", "--hidden", "0"), 2, "layer widths"),
    ]
    for args, status, text in cases:
        proc = _cli(*args, cwd=tmp_path)
        assert proc.returncode == status, (args, proc.stderr)
        assert text in proc.stdout + proc.stderr, (args, proc.stdout, proc.stderr)
        assert "Traceback" not in proc.stderr and "Warning" not in proc.stderr, proc.stderr
    record(
        "api.cli_processes",
        "public API",
        "fastnn train / predict as real processes: a good file, 1e300 features, a "
        "word in a column of numbers, a binary file, a random-bytes model file, a bad "
        "option",
        len(cases),
        "the expected exit status (0, 1 with one 'error:' line, 2 for "
        "usage), no traceback, no warning on stderr",
    )


# --- regressions found by the fuzzers ----------------------------------------------------------


@pytest.mark.parametrize("backend", fastnn.available_backends())
def test_overflowing_outputs_are_not_presented_as_classes(backend):
    """3e38 is a finite float32, but the network's logits overflow to NaN: predict used
    to answer class 0 for such rows."""
    net = MLP([3, 8, 2], loss="cross_entropy", backend=backend, random_state=0)
    X = np.array([[3e38, -3e38, 3e38], [0.1, 0.2, 0.3]], np.float32)
    for method in (net.predict, net.predict_proba, net.decision_function):
        with pytest.raises(ValueError, match=r"X is too large .* 1 of 2 rows \(first: row 0"):
            method(X)
    with pytest.raises(ValueError, match="X is too large"):
        net.evaluate(X, [0, 1])
    assert net.predict(X[1:]).shape == (1,)
    net.params[0] = np.nan
    with pytest.raises(ValueError, match="weights are not finite"):
        net.predict(X[1:])


def test_estimators_refuse_overflowing_outputs():
    pytest.importorskip("sklearn")
    from fastnn import MLPClassifier

    X = np.random.default_rng(0).standard_normal((20, 3))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf = MLPClassifier((4,), max_iter=2, random_state=0, dtype="float32").fit(X, X[:, 0] > 0)
    for method in (clf.predict, clf.predict_proba, clf.predict_log_proba):
        with pytest.raises(ValueError, match="X is too large"):
            method(np.array([[3e38, -3e38, 3e38]], np.float32))


@pytest.mark.parametrize("y", [np.full(6, 1e300), np.full((6, 2), 1e300)])
def test_targets_overflowing_the_dtype_are_named(y):
    loss = "mse" if y.ndim == 1 else "cross_entropy"
    net = MLP([2, 3, 1 if y.ndim == 1 else 2], loss=loss, backend="numpy")
    with pytest.raises(
        ValueError,
        match=r"y contains values too large for float32 "
        r"\(largest \|y\| is 1e\+300\)",
    ):
        net.fit(np.ones((6, 2)), y, epochs=1)


def test_dataframes_mixing_numeric_columns_are_converted():
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame(
        {"a": [1, 2, 3, 4], "b": [True, False, True, False], "c": [0.5, 1.5, 2.5, 3.5]}
    )
    net = MLP([3, 4, 2], loss="cross_entropy", backend="numpy", random_state=0)
    net.fit(df, [0, 1, 0, 1], epochs=1)
    np.testing.assert_array_equal(net.predict(df), net.predict(df.to_numpy(float)))
    with pytest.raises(TypeError, match=r"column\(s\) 'b' \(str\)"):
        net.predict(df.assign(b=["x", "y", "x", "y"]))


def test_estimator_errors_name_the_argument():
    pd = pytest.importorskip("pandas")
    pytest.importorskip("sklearn")
    from fastnn import MLPClassifier, MLPRegressor

    X = pd.DataFrame({"a": ["u", "v", "w"], "b": [1.0, 2.0, 3.0]})
    with pytest.raises(ValueError, match="^X: could not convert string to float"):
        MLPRegressor(hidden_layer_sizes=(2,)).fit(X, [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="^y: could not convert string to float"):
        MLPRegressor(hidden_layer_sizes=(2,)).fit(X[["b"]], np.array(["a", "b", "c"], dtype=object))
    with pytest.raises(ValueError, match="n_threads"):
        MLPClassifier(n_threads=2**70).fit(X[["b"]], [0, 1, 0])
