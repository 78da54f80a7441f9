"""The ``fastnn`` command line: train and predict on CSV files, errors, help."""

import csv
import os
import subprocess
import sys

import numpy as np
import pytest

import fastnn
from _cli_support import run_cli
from fastnn.cli import TabularModel, main

SRC = os.path.join(os.path.dirname(__file__), os.pardir, "src")


def _write_csv(path, header, rows):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return str(path)


def _blobs_csv(path, labels=("north", "south", "east"), n=90, seed=0):
    rs = np.random.RandomState(seed)
    centers = [(0, 3), (0, -3), (3, 0)]
    rows = []
    for i in range(n):
        lab = labels[i % len(labels)]
        x = np.array(centers[i % len(labels)]) + rs.randn(2) * 0.5
        rows.append([f"{x[0]:.6f}", f"{x[1]:.6f}", f"{rs.rand():.3f}", lab])
    return _write_csv(path, ["x1", "x2", "noise", "label"], rows)


def _regression_csv(path, n=200, seed=0):
    rs = np.random.RandomState(seed)
    X = rs.uniform(-1, 1, (n, 3))
    y = 100 + 50 * X[:, 0] - 20 * X[:, 1] ** 2 + rs.randn(n)
    return _write_csv(
        path, ["a", "b", "c", "y"], [[*map(str, x), f"{t:.6f}"] for x, t in zip(X, y)]
    )


def _saved(path):
    """(feature columns, class labels or None, layer sizes, predict(DataFrame)) of a
    model file written by `fastnn train`: a scikit-learn Pipeline (preprocessing and a
    fastnn estimator) where fastnn.save takes pipelines, else a TabularModel."""
    obj = fastnn.load(path)
    if isinstance(obj, TabularModel):
        return (
            obj.features,
            obj.classes,
            obj.model.layer_sizes,
            lambda df: obj.predict(df[obj.features].to_numpy(float)),
        )
    pre, est = obj.steps[0][1], obj.steps[-1][1]
    classes = list(est.classes_) if hasattr(est, "classes_") else None
    return list(pre.feature_names_in_), classes, est._model.layer_sizes, obj.predict


_run = run_cli


# --- train ---------------------------------------------------------------------------------


def test_train_classifier_prints_progress_metrics_speed_and_saves(tmp_path, capsys):
    data = _blobs_csv(tmp_path / "blobs.csv")
    model_path = tmp_path / "blobs.fnn"
    code, out, err = _run(
        capsys,
        "train",
        data,
        "--target",
        "label",
        "--hidden",
        "16",
        "--epochs",
        "30",
        "--batch-size",
        "16",
        "--lr",
        "0.01",
        "--seed",
        "0",
        "--backend",
        "numpy",
        "--output",
        model_path,
    )
    assert code == 0, err
    assert "task: classify (the target holds text), 3 classes: east, north, south" in out
    assert "model: [3, 16, 3] relu, loss cross_entropy, float32, backend 'numpy'" in out
    assert "training on 81 rows, validating on 9" in out
    epochs = [line for line in out.splitlines() if line.startswith("Epoch ")]
    assert len(epochs) == 30 and epochs[-1].startswith("Epoch 30/30 - loss: ")
    assert "val_accuracy" in epochs[0]
    train_line = next(line for line in out.splitlines() if line.strip().startswith("train "))
    assert float(train_line.split()[2]) > 0.9
    assert "samples/s" in out and "wall time" in out
    features, classes, sizes, _ = _saved(model_path)
    assert features == ["x1", "x2", "noise"] and classes == ["east", "north", "south"]
    assert sizes == [3, 16, 3]


def test_train_then_predict_round_trip(tmp_path, capsys):
    data = _blobs_csv(tmp_path / "blobs.csv")
    model_path = tmp_path / "m.fnn"
    _run(
        capsys,
        "train",
        data,
        "--target",
        "label",
        "--hidden",
        "16",
        "--epochs",
        "20",
        "--batch-size",
        "16",
        "--lr",
        "0.01",
        "--seed",
        "1",
        "-q",
        "-o",
        model_path,
    )
    # Columns are matched by name: reorder them in the data to predict.
    with open(data) as f:
        rows = list(csv.reader(f))
    reordered = _write_csv(
        tmp_path / "new.csv",
        ["noise", "label", "x2", "x1"],
        [[r[2], r[3], r[1], r[0]] for r in rows[1:]],
    )
    preds = tmp_path / "preds.csv"
    code, out, err = _run(capsys, "predict", model_path, reordered, "--proba", "-o", preds)
    assert code == 0, err
    assert f"wrote 90 predictions to {preds}" in out
    assert "has the target column 'label': accuracy" in err
    with open(preds) as f:
        got = list(csv.reader(f))
    assert got[0] == ["prediction", "proba_east", "proba_north", "proba_south"]
    assert len(got) == 91
    import pandas as pd

    predict = _saved(model_path)[3]
    X = pd.DataFrame(
        [[float(r[0]), float(r[1]), float(r[2])] for r in rows[1:]], columns=["x1", "x2", "noise"]
    )
    assert [g[0] for g in got[1:]] == list(predict(X))
    np.testing.assert_allclose(np.array(got[1:])[:, 1:].astype(float).sum(1), 1, atol=1e-5)
    # Without --output the predictions go to stdout.
    code, out, _ = _run(capsys, "predict", model_path, reordered)
    assert out.splitlines()[0] == "prediction" and len(out.splitlines()) == 91


def test_train_regression_reports_r2_in_original_units(tmp_path, capsys):
    data = _regression_csv(tmp_path / "reg.csv")
    model_path = tmp_path / "reg.fnn"
    code, out, err = _run(
        capsys,
        "train",
        data,
        "--target",
        "y",
        "--hidden",
        "32,32",
        "--epochs",
        "60",
        "--batch-size",
        "16",
        "--seed",
        "0",
        "-q",
        "--validation-split",
        "0.2",
        "-o",
        model_path,
    )
    assert code == 0, err
    assert "task: regress (real-valued target)" in out
    line = next(line for line in out.splitlines() if line.strip().startswith("train "))
    assert float(line.split()[2]) > 0.9  # R^2
    assert "validating on 40" in out
    preds = tmp_path / "p.csv"
    code, _, err = _run(capsys, "predict", model_path, data, "-o", preds)
    assert "R^2" in err
    with open(preds) as f:
        values = np.array([float(r[0]) for r in list(csv.reader(f))[1:]])
    # Predictions are in the target's units (around 100), not standardised ones.
    assert 80 < values.mean() < 120


def test_regression_report_with_a_target_far_outside_the_training_rows(tmp_path, capsys):
    # The training rows' targets are all 0, so y_scale is 1 and the validation row's
    # 1e300 would overflow a plain sum of squares: scores are reported, no warning.
    data = _write_csv(tmp_path / "d.csv", ["a", "b", "y"], [["0", "0", "0"], ["0", "0", "1e300"]])
    code, out, err = _run(
        capsys,
        "train",
        data,
        "--target",
        "y",
        "--task",
        "regress",
        "--validation-split",
        "0.3",
        "--epochs",
        "1",
        "-q",
        "--dtype",
        "float64",
        "-o",
        tmp_path / "m.fnn",
    )
    assert code == 0, err
    line = next(line for line in out.splitlines() if line.strip().startswith("validation"))
    assert "RMSE" in line and "nan" not in line.split("RMSE")[1]


@pytest.mark.parametrize(
    "values, task",
    [
        (["1", "2", "3"] * 10, "classify"),  # few whole numbers: class labels
        ([f"{v:.3f}" for v in np.linspace(0, 1, 30)], "regress"),
        ([str(i) for i in range(30)], "regress"),  # too many distinct values
        (["a", "b"] * 15, "classify"),
    ],
)
def test_auto_task(tmp_path, capsys, values, task):
    rows = [[str(i), v] for i, v in enumerate(values)]
    data = _write_csv(tmp_path / "d.csv", ["x", "t"], rows)
    code, out, err = _run(
        capsys, "train", data, "--target", "t", "--epochs", "1", "--hidden", "4", "-q"
    )
    assert code == 0, err
    assert f"task: {task}" in out


def test_features_option_and_numeric_class_order(tmp_path, capsys):
    data = _blobs_csv(tmp_path / "b.csv", labels=(10, 2, 1))
    code, out, err = _run(
        capsys,
        "train",
        data,
        "--target",
        "label",
        "--features",
        "x1,x2",
        "--epochs",
        "2",
        "--hidden",
        "none",
        "-q",
        "--task",
        "classify",
        "--optimizer",
        "sgd",
        "--dtype",
        "float64",
    )
    assert code == 0, err
    assert "3 classes: 1, 2, 10" in out  # numeric labels sort as numbers
    assert "model: [2, 3] relu" in out and "float64" in out


# --- errors ----------------------------------------------------------------------------------


def test_missing_file_and_missing_target_column(tmp_path, capsys):
    code, _, err = _run(capsys, "train", tmp_path / "nope.csv", "--target", "y")
    assert code == 1 and "nope.csv: no such file" in err
    data = _blobs_csv(tmp_path / "b.csv")
    code, _, err = _run(capsys, "train", data, "--target", "species")
    assert code == 1
    assert "no column 'species'; the columns are x1, x2, noise, label" in err


def test_a_stray_word_in_a_number_column_names_the_column_and_line(tmp_path, capsys):
    # A column of numbers with one word is a typo, not a text column (a column with
    # a few numbers among words is text, one-hot encoded: see test_cli_csv.py).
    rows = [[str(i % 7), str(i), "uv"[i % 2]] for i in range(30)]
    rows[4][1] = "oops"
    data = _write_csv(tmp_path / "d.csv", ["a", "b", "y"], rows)
    code, _, err = _run(capsys, "train", data, "--target", "y")
    assert code == 1
    assert "d.csv, line 6: column 'b' holds numbers, but here 'oops'" in err
    assert "--exclude" in err


def test_bad_targets(tmp_path, capsys):
    data = _write_csv(tmp_path / "d.csv", ["a", "y"], [["1", "u"], ["2", "u"]])
    code, _, err = _run(capsys, "train", data, "--target", "y")
    assert code == 1 and "has a single class ('u')" in err
    data = _write_csv(tmp_path / "r.csv", ["a", "y"], [["1", "1.5"], ["2", "x"]])
    code, _, err = _run(capsys, "train", data, "--target", "y", "--task", "regress")
    assert code == 1 and "line 3: the target column 'y' holds 'x', not a number" in err


def test_malformed_csv_files(tmp_path, capsys):
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    code, _, err = _run(capsys, "train", empty, "--target", "y")
    assert code == 1 and "the file is empty" in err
    ragged = tmp_path / "ragged.csv"
    ragged.write_text("a,y\n1,2\n3\n")
    code, _, err = _run(capsys, "train", ragged, "--target", "y")
    assert code == 1 and "line 3: 1 fields, but the header has 2 columns" in err
    header_only = tmp_path / "h.csv"
    header_only.write_text("a,y\n")
    code, _, err = _run(capsys, "train", header_only, "--target", "y")
    assert code == 1 and "no data rows" in err
    dup = tmp_path / "dup.csv"
    dup.write_text("a,a,y\n1,2,3\n")
    code, _, err = _run(capsys, "train", dup, "--target", "y")
    assert code == 1 and "duplicate column names ['a']" in err


@pytest.mark.parametrize(
    "args, message",
    [
        (["--hidden", "12,x"], "argument --hidden: expected comma-separated layer widths"),
        (["--hidden", "0"], "argument --hidden: layer widths must be >= 1"),
        (["--epochs", "0"], "argument --epochs: must be >= 1"),
        (["--lr", "-1"], "argument --lr: must be > 0"),
        (["--validation-split", "1"], r"argument --validation-split: must be in \[0, 1\)"),
        (
            ["--optimizer", "no_such_optimizer"],
            "argument --optimizer: invalid choice: 'no_such_optimizer'",
        ),
        (["--activation", "softmax"], "argument --activation: invalid choice"),
    ],
)
def test_bad_options_are_usage_errors(tmp_path, capsys, args, message):
    data = _blobs_csv(tmp_path / "b.csv")
    with pytest.raises(SystemExit) as info:
        main(["train", data, "--target", "label", *args])
    assert info.value.code == 2
    import re

    assert re.search(message, capsys.readouterr().err)


def test_predict_errors(tmp_path, capsys):
    data = _blobs_csv(tmp_path / "b.csv")
    code, _, err = _run(capsys, "predict", tmp_path / "none.fnn", data)
    assert code == 1 and "none.fnn: no such file" in err
    code, _, err = _run(capsys, "predict", data, data)
    assert code == 1 and "not a fastnn model file" in err
    model_path = tmp_path / "m.fnn"
    _run(capsys, "train", data, "--target", "label", "--epochs", "1", "-q", "-o", model_path)
    other = _write_csv(tmp_path / "o.csv", ["x1", "noise"], [["1", "2"]])
    code, _, err = _run(capsys, "predict", model_path, other)
    assert code == 1 and "no column(s) ['x2']; the model was trained on x1, x2, noise" in err


def test_predict_with_a_bare_mlp_and_an_estimator(tmp_path, capsys):
    net = fastnn.MLP([2, 4, 3], loss="cross_entropy", backend="numpy", random_state=0)
    path = tmp_path / "net.fnn"
    fastnn.save(net, path)
    data = _write_csv(tmp_path / "x.csv", ["p", "q"], [["0.5", "1"], ["-1", "2"]])
    code, out, err = _run(capsys, "predict", path, data, "--proba")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == "prediction,proba_0,proba_1,proba_2"
    expected = net.predict(np.array([[0.5, 1.0], [-1.0, 2.0]], np.float32))
    assert [int(line.split(",")[0]) for line in lines[1:]] == list(expected)
    wide = _write_csv(tmp_path / "w.csv", ["p", "q", "r"], [["1", "2", "3"]])
    code, _, err = _run(capsys, "predict", path, wide)
    assert code == 1 and "3 columns, but the model takes 2 inputs" in err
    pytest.importorskip("sklearn")
    from fastnn import MLPRegressor

    est = MLPRegressor(hidden_layer_sizes=(4,), max_iter=3, random_state=0)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est.fit(np.array([[0.0, 1.0], [1.0, 0.0], [2.0, 2.0]]), [1.0, 2.0, 3.0])
    fastnn.save(est, tmp_path / "est.fnn")
    code, out, err = _run(capsys, "predict", tmp_path / "est.fnn", data)
    assert code == 0, err
    got = [float(v) for v in out.splitlines()[1:]]
    np.testing.assert_allclose(got, est.predict(np.array([[0.5, 1.0], [-1.0, 2.0]])), rtol=1e-7)


def test_tabular_file_with_bad_metadata_is_refused(tmp_path):
    net = fastnn.MLP([2, 3], loss="cross_entropy", backend="numpy", random_state=0)
    tab = TabularModel(net, ["a", "b"], "y", "classify", ["u", "v"], [0, 0], [1, 1])
    path = tmp_path / "t.fnn"
    with pytest.raises(fastnn.ModelFileError, match="class labels do not match"):
        fastnn.save(tab, path)
        fastnn.load(path)


# --- help and the console script ----------------------------------------------------------------


def test_help_texts(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for command in ("train", "predict", "demo"):
        assert command in out
    for command, options in (
        (
            "train",
            [
                "--target",
                "--hidden",
                "--epochs",
                "--output",
                "--validation-split",
                "--seed",
                "--dtype",
            ],
        ),
        ("predict", ["--output", "--proba"]),
        ("demo", ["--plot", "--backend", "--quick"]),
    ):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        out = capsys.readouterr().out
        assert all(o in out for o in options), (command, out)
    with pytest.raises(SystemExit) as info:
        main([])
    assert info.value.code == 2


def test_runs_as_a_module():
    proc = subprocess.run(
        [sys.executable, "-m", "fastnn.cli", "--version"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": SRC},
    )
    assert proc.returncode == 0 and proc.stdout.strip() == f"fastnn {fastnn.__version__}"
