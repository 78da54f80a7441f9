"""`fastnn train` / `fastnn predict` on the CSV files people have (issue 13, item 3):
missing cells, text and boolean columns, other delimiters, quoting, byte-order marks,
scikit-learn's own bundled files, id columns, --features / --feature / --exclude,
labels as written in the file, columns matched by name at predict time, one-line
errors, and Numba's compilation announced and kept out of the printed speed."""

from __future__ import annotations

import csv
import os
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("pandas")
pytest.importorskip("sklearn")

import fastnn  # noqa: E402
from _cli_support import run_cli
from fastnn import cli  # noqa: E402
from fastnn.cli import TabularModel  # noqa: E402

SRC = os.path.join(os.path.dirname(__file__), os.pardir, "src")
FAST = [
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
    "-q",
]


_run = run_cli


def _one_error_line(err, command="train"):
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"fastnn {command}: error: "), err
    return lines[0]


def _customers(n=120, seed=0):
    """Rows of a customer table: an id, numbers with NA and empty cells, a city (text,
    some with commas, some missing), a boolean with a missing cell, and a plan label
    that depends on the spend and the city."""
    rs = np.random.RandomState(seed)
    rows = []
    for i in range(n):
        city = ["Berlin", "Paris", "New York, NY"][i % 3]
        spend = rs.uniform(0, 200)
        plan = "premium" if (spend > 100) != (city == "Berlin") else "basic"
        rows.append(
            [
                str(1000 + i),
                str(rs.randint(18, 80)) if i % 10 else "NA",
                city if i % 17 else "",
                ["True", "False"][i % 2] if i % 13 else "",
                f"{spend:.2f}" if i % 11 else "",
                plan,
            ]
        )
    return ["id", "age", "city", "member", "spend", "plan"], rows


def _write(path, header, rows, delimiter=",", encoding="utf-8", bom=False):
    with open(path, "w", newline="", encoding=encoding) as f:
        if bom:
            f.write("\ufeff")
        w = csv.writer(f, delimiter=delimiter)
        w.writerow(header)
        w.writerows(rows)
    return str(path)


def _predictions(path):
    with open(path, newline="") as f:
        return list(csv.reader(f))


# --- mixed columns, missing cells, labels as written ------------------------------------------


def test_text_boolean_and_missing_cells_train_save_and_predict(tmp_path, capsys):
    header, rows = _customers()
    data = _write(tmp_path / "customers.csv", header, rows)
    model = tmp_path / "plan.fnn"
    code, out, err = _run(
        capsys, "train", data, "--target", "plan", "--exclude", "id", "-o", model, *FAST
    )
    assert code == 0, err
    assert err == ""  # the id column is excluded: no warning
    assert "120 rows, 4 feature columns (2 numeric, 1 boolean, 1 text)" in out
    assert "2 classes: basic, premium" in out
    obj = fastnn.load(model)
    if not isinstance(obj, TabularModel):  # fastnn.save of pipelines is available
        from sklearn.pipeline import Pipeline

        assert isinstance(obj, Pipeline)
        assert list(obj.steps[0][1].feature_names_in_) == ["age", "city", "member", "spend"]
        assert list(obj.classes_) == ["basic", "premium"]
    preds = tmp_path / "p.csv"
    code, out, err = _run(capsys, "predict", model, data, "--proba", "-o", preds)
    assert code == 0, err
    assert "has the target column 'plan': accuracy" in err
    accuracy = float(err.split("accuracy")[1])
    assert accuracy > 0.8
    got = _predictions(preds)
    assert got[0] == ["prediction", "proba_basic", "proba_premium"]
    assert len(got) == 121 and {g[0] for g in got[1:]} <= {"basic", "premium"}


def test_numeric_labels_keep_their_spelling(tmp_path, capsys):
    # Labels are written back as they appear in the file ("01", "2.50"), not as floats.
    rs = np.random.RandomState(1)
    labels = ["01", "2.50", "10"]
    rows = [[f"{rs.randn() + 3 * (i % 3):.4f}", labels[i % 3]] for i in range(90)]
    data = _write(tmp_path / "d.csv", ["x", "grade"], rows)
    model = tmp_path / "m.fnn"
    code, out, err = _run(
        capsys, "train", data, "--target", "grade", "--task", "classify", "-o", model, *FAST
    )
    assert code == 0, err
    assert "3 classes: 01, 2.50, 10" in out  # numeric order
    code, out, err = _run(capsys, "predict", model, data)
    assert code == 0, err
    assert set(out.splitlines()[1:]) == set(labels)


def test_a_single_class_model_predicts_it_with_one_probability_column(tmp_path, capsys):
    # `fastnn train` refuses a single-class target; an estimator fitted on one (as
    # scikit-learn allows) and saved has predict_proba of two columns
    rs = np.random.RandomState(2)
    rows = [[f"{rs.randn():.4f}", "yes"] for _ in range(40)]
    model = tmp_path / "m.fnn"
    X = np.array([[float(r[0])] for r in rows])
    est = fastnn.MLPClassifier((4,), max_iter=3, n_iter_no_change=1, tol=1e9, random_state=0).fit(
        X, ["yes"] * len(X)
    )
    fastnn.save(est, model)
    features = _write(tmp_path / "x.csv", ["x"], [r[:1] for r in rows])
    code, out, err = _run(capsys, "predict", model, features, "--proba")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == "prediction,proba_yes"
    assert all(line.startswith("yes,") and line.count(",") == 1 for line in lines[1:])


def test_regression_with_text_features_predicts_in_target_units(tmp_path, capsys):
    rs = np.random.RandomState(0)
    rows = []
    for i in range(200):
        colour = ["red", "green", "blue"][i % 3]
        x = rs.uniform(-1, 1)
        y = 1000 + 50 * x + {"red": 100, "green": 0, "blue": -100}[colour]
        rows.append([f"{x:.4f}", colour, f"{y:.3f}"])
    data = _write(tmp_path / "r.csv", ["x", "colour", "price"], rows)
    model = tmp_path / "r.fnn"
    code, out, err = _run(
        capsys,
        "train",
        data,
        "--target",
        "price",
        "-o",
        model,
        "--hidden",
        "32",
        "--epochs",
        "80",
        "--batch-size",
        "16",
        "--lr",
        "0.01",
        "--seed",
        "0",
        "--backend",
        "numpy",
        "-q",
    )
    assert code == 0, err
    assert "task: regress" in out
    code, out, err = _run(capsys, "predict", model, data)
    assert code == 0, err
    values = np.array([float(v) for v in out.splitlines()[1:]])
    truth = np.array([float(r[2]) for r in rows])
    assert np.abs(values - truth).mean() < 30  # in the target's units (around 1000)
    assert "R^2" in err and float(err.split("R^2")[1]) > 0.9


def test_a_float32_model_refuses_targets_beyond_its_range_before_training(tmp_path, capsys):
    rows = [[str(i), f"{(i % 5) * 1e300:.3g}"] for i in range(20)]
    data = _write(tmp_path / "d.csv", ["x", "y"], rows)
    code, out, err = _run(
        capsys, "train", data, "--target", "y", "--task", "regress", "-o", tmp_path / "m.fnn", *FAST
    )
    if not cli._saves_pipelines():
        pytest.skip("saved as a TabularModel here (no pipeline extra)")
    assert code == 1 and "--dtype float64" in _one_error_line(err)
    assert "Epoch" not in out and not (tmp_path / "m.fnn").exists()
    code, out, err = _run(
        capsys,
        "train",
        data,
        "--target",
        "y",
        "--task",
        "regress",
        "-o",
        tmp_path / "m.fnn",
        "--dtype",
        "float64",
        *FAST,
    )
    assert code == 0, err
    code, out, err = _run(capsys, "predict", tmp_path / "m.fnn", data)
    assert code == 0, err
    assert all(np.isfinite(float(v)) for v in out.splitlines()[1:])


# --- delimiters, quoting, encodings --------------------------------------------------------------


@pytest.mark.parametrize(
    "delimiter", [";", "\t", " ", "|"], ids=["semicolon", "tab", "space", "bar"]
)
def test_delimiters_are_detected(tmp_path, capsys, delimiter):
    rs = np.random.RandomState(0)
    rows = [[f"{rs.randn():.4f}", f"{rs.randn():.4f}", "ab"[i % 2]] for i in range(60)]
    data = _write(tmp_path / "d.csv", ["x1", "x2", "label"], rows, delimiter=delimiter)
    code, out, err = _run(capsys, "train", data, "--target", "label", *FAST)
    assert code == 0, err
    assert "60 rows, 2 feature columns (2 numeric)" in out


def test_aligned_columns_and_decimal_commas(tmp_path, capsys):
    aligned = tmp_path / "aligned.txt"
    aligned.write_text(
        "x      y    label\n" + "".join(f"{i:<6} {i % 4:<4} {'ab'[i % 2]}\n" for i in range(40))
    )
    code, out, err = _run(capsys, "train", aligned, "--target", "label", *FAST)
    assert code == 0, err
    assert "40 rows, 2 feature columns (2 numeric)" in out
    euro = tmp_path / "euro.csv"
    euro.write_text(
        "preis;menge;klasse\n" + "".join(f"{i},5;{i % 3};{'ab'[i % 2]}\n" for i in range(40))
    )
    code, out, err = _run(capsys, "train", euro, "--target", "klasse", *FAST)
    assert code == 0, err
    assert "2 feature columns (2 numeric)" in out  # 1,5 is one and a half


def test_quoted_commas_bom_and_a_column_named_with_a_comma(tmp_path, capsys):
    header, rows = _customers(60)
    header[2] = "city_New York, NY"
    data = _write(tmp_path / "d.csv", header, rows, bom=True)
    with open(data, "rb") as f:
        assert f.read(3) == b"\xef\xbb\xbf"
    code, out, err = _run(
        capsys, "train", data, "--target", "plan", "--features", "age,city_New York, NY", *FAST
    )
    assert code == 0, err
    assert "2 feature columns (1 numeric, 1 text)" in out
    # the name taken whole, and the old comma-separated form next to it
    code, out, err = _run(
        capsys,
        "train",
        data,
        "--target",
        "plan",
        "--feature",
        "city_New York, NY",
        "--features",
        "age,spend",
        *FAST,
    )
    assert code == 0, err
    assert "3 feature columns (2 numeric, 1 text)" in out
    code, out, err = _run(
        capsys, "train", data, "--target", "plan", "--features", "age,city", *FAST
    )
    assert code == 1 and "no column(s) ['city'] (from --features" in _one_error_line(err)


def test_latin1_needs_its_encoding(tmp_path, capsys):
    data = _write(
        tmp_path / "d.csv",
        ["x", "stadt"],
        [[str(i), ["Köln", "München"][i % 2]] for i in range(30)],
        encoding="latin-1",
    )
    code, _, err = _run(capsys, "train", data, "--target", "stadt", *FAST)
    assert code == 1
    line = _one_error_line(err)
    assert f"{data}, line 2: not a UTF-8 text file" in line and "--encoding" in line
    code, out, err = _run(
        capsys, "train", data, "--target", "stadt", "--encoding", "latin-1", *FAST
    )
    assert code == 0, err
    assert "2 classes: Köln, München" in out


# --- scikit-learn's bundled files -------------------------------------------------------------


def _bundled(name):
    import sklearn

    return os.path.join(os.path.dirname(sklearn.__file__), "datasets", "data", name)


@pytest.mark.parametrize(
    "name, rows, features, classes",
    [("wine_data.csv", 178, 13, 3), ("breast_cancer.csv", 569, 30, 2), ("iris.csv", 150, 4, 3)],
)
def test_scikit_learns_bundled_files(tmp_path, capsys, name, rows, features, classes):
    path = _bundled(name)
    if not os.path.exists(path):
        pytest.skip(f"{name} is not bundled with this scikit-learn")
    code, out, err = _run(
        capsys, "train", path, "--target", "target", "-o", tmp_path / "m.fnn", *FAST
    )
    assert code == 0, err
    assert "line 1 is scikit-learn's count line" in out
    assert f"{rows} rows, {features} feature columns ({features} numeric)" in out
    assert f"{classes} classes: " in out
    train = next(line for line in out.splitlines() if line.strip().startswith("train "))
    assert float(train.split()[2]) > 0.85
    code, out, err = _run(capsys, "predict", tmp_path / "m.fnn", path)
    assert code == 0, err
    assert len(out.splitlines()) == rows + 1
    # --header names: the count line read as column names (the old reading)
    code, out, err = _run(capsys, "train", path, "--target", "target", "--header", "names", *FAST)
    assert code == 1
    assert (
        f"{path}, line 2: {features + 1} fields, but the header has " in err
        or "no column 'target'" in err
    )


# --- features: id columns, --exclude -----------------------------------------------------------


@pytest.mark.parametrize(
    "name, values",
    [
        ("id", lambda i: str(1000 + 7 * i)),
        ("customer_id", lambda i: f"C{i:05d}"),
        ("row", lambda i: str(i + 1)),  # counts up by one
        ("uuid", lambda i: f"{i:08x}-4a1b"),
    ],
)
def test_identifier_columns_are_flagged(tmp_path, capsys, name, values):
    rs = np.random.RandomState(0)
    rows = [[values(i), f"{rs.randn():.3f}", "ab"[i % 2]] for i in range(40)]
    data = _write(tmp_path / "d.csv", [name, "x", "label"], rows)
    code, out, err = _run(capsys, "train", data, "--target", "label", *FAST)
    assert code == 0, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        f"fastnn train: warning: column {name!r} looks like a row identifier"
    )
    assert f"--exclude {name}" in lines[0]
    code, out, err = _run(capsys, "train", data, "--target", "label", "--exclude", name, *FAST)
    assert code == 0 and err == ""
    assert "1 feature columns" in out


def test_ordinary_integer_columns_are_not_flagged(tmp_path, capsys):
    rows = [[str(i % 9), str(2000 + i // 5), "ab"[i % 2]] for i in range(40)]
    data = _write(tmp_path / "d.csv", ["rooms", "year", "label"], rows)
    code, out, err = _run(capsys, "train", data, "--target", "label", *FAST)
    assert code == 0 and err == ""


def test_exclude_errors(tmp_path, capsys):
    header, rows = _customers(30)
    data = _write(tmp_path / "d.csv", header, rows)
    code, _, err = _run(capsys, "train", data, "--target", "plan", "--exclude", "ID")
    assert code == 1 and "no column(s) ['ID'] (from --exclude)" in _one_error_line(err)
    code, _, err = _run(
        capsys, "train", data, "--target", "plan", "--exclude", "id,age,city,member,spend"
    )
    assert code == 1 and "no feature columns besides the target" in _one_error_line(err)


# --- predict: columns by name ---------------------------------------------------------------------


def test_predict_matches_columns_by_name(tmp_path, capsys):
    header, rows = _customers()
    data = _write(tmp_path / "d.csv", header, rows)
    model = tmp_path / "m.fnn"
    code, _, err = _run(
        capsys, "train", data, "--target", "plan", "--exclude", "id", "-o", model, *FAST
    )
    assert code == 0, err
    code, base, err = _run(capsys, "predict", model, data)
    assert code == 0, err
    # reordered, without the target, with an extra column and a city never seen
    order = [4, 3, 2, 1, 0]
    new_rows = [[r[j] for j in order] + ["extra"] for r in rows]
    new_rows[0][2] = "Lisbon"
    shuffled = _write(tmp_path / "s.csv", [header[j] for j in order] + ["notes"], new_rows)
    code, out, err = _run(capsys, "predict", model, shuffled)
    assert code == 0 and err == "", err
    assert out.splitlines()[2:] == base.splitlines()[2:]
    assert out.splitlines()[1] in ("basic", "premium")
    # a column the model needs is missing: one line naming it
    dropped = _write(
        tmp_path / "m.csv", ["id", "age", "city", "spend"], [r[:3] + [r[4]] for r in rows]
    )
    code, out, err = _run(capsys, "predict", model, dropped, "-o", tmp_path / "p.csv")
    line = _one_error_line(err, "predict")
    assert code == 1 and "no column(s) ['member']" in line
    assert not (tmp_path / "p.csv").exists()
    # a word in a column the model reads as numbers: the hint names no train option
    rows[5][1] = "forty"
    bad = _write(tmp_path / "b.csv", header, rows)
    code, out, err = _run(capsys, "predict", model, bad)
    line = _one_error_line(err, "predict")
    assert f"{bad}, line 7: column 'age' holds 'forty', not a number" in line
    assert "--features" not in line and "--exclude" not in line


def test_predict_with_an_old_tabular_model_file(tmp_path, capsys):
    net = fastnn.MLP([2, 4, 2], loss="cross_entropy", backend="numpy", random_state=0)
    fastnn.save(
        TabularModel(net, ["a", "b"], "label", "classify", ["no", "yes"], np.zeros(2), np.ones(2)),
        tmp_path / "m.fnn",
    )
    data = _write(tmp_path / "d.csv", ["b", "a", "other"], [["1", "2", "x"], ["3", "oops", "y"]])
    code, _, err = _run(capsys, "predict", tmp_path / "m.fnn", data)
    line = _one_error_line(err, "predict")
    assert code == 1 and "line 3: column 'a' holds 'oops', not a number" in line
    assert "--features" not in line


# --- bad input files: one line naming the file, exit 1, no output file -------------------------


def _binary(path):
    path.write_bytes(b"a,b\n1,2\n" + bytes(range(256)) * 4)


BAD_FILES = [
    ("empty", lambda p: p.write_text(""), "the file is empty"),
    ("blank lines only", lambda p: p.write_text("\n\n  \n"), "the file is empty"),
    ("binary", _binary, "line 3: not a UTF-8 text file"),
    (
        "UTF-16 with BOM",
        lambda p: p.write_bytes("x,y\n1,2\n".encode("utf-16")),
        "not a UTF-8 text file (it starts with a UTF-16 byte-order mark)",
    ),
    ("header only", lambda p: p.write_text("x,y\n"), "no data rows after the header"),
    (
        "no target column",
        lambda p: p.write_text("x,z\n1,2\n3,4\n"),
        "no column 'y'; the columns are x, z",
    ),
    (
        "target all empty",
        lambda p: p.write_text("x,y\n1,\n2,NA\n3,\n"),
        "the target column 'y' is empty on every row",
    ),
    (
        "target empty on a line",
        lambda p: p.write_text("x,y\n1,a\n\n2,\n3,b\n"),
        "line 4: the target column 'y' is empty",
    ),
    (
        "short row",
        lambda p: p.write_text("x,w,y\n1,2,a\n3,4\n"),
        "line 3: 2 fields, but the header has 3 columns",
    ),
    (
        "long row",
        lambda p: p.write_text("x,y\n1,a\n2,b\n3,c,d\n"),
        "line 4: 3 fields, but the header has 2 columns",
    ),
    ("infinite value", lambda p: p.write_text("x,y\n1,a\ninf,b\n"), "line 3: column 'x' holds inf"),
]


@pytest.mark.parametrize("name, make, words", BAD_FILES, ids=[c[0] for c in BAD_FILES])
def test_bad_files_one_error_line(tmp_path, capsys, name, make, words):
    path = tmp_path / "d.csv"
    make(path)
    out_path = tmp_path / "m.fnn"
    code, out, err = _run(capsys, "train", path, "--target", "y", "-o", out_path, *FAST)
    assert code == 1
    line = _one_error_line(err)
    assert f"error: {path}" in line and words in line, line
    assert not out_path.exists() and "Epoch" not in out


# --- Numba: announced, and not counted in the speed ---------------------------------------------


def test_numba_compilation_is_announced_and_not_timed(tmp_path, capsys, monkeypatch):
    pytest.importorskip("numba")
    from fastnn._backend import available_backends

    if "numba" not in available_backends():
        pytest.skip("no Numba backend")
    monkeypatch.setattr(cli, "_numba_cache_is_cold", lambda module="": True)
    header, rows = _customers(40)
    data = _write(tmp_path / "d.csv", header, rows)
    args = [a if a != "numpy" else "numba" for a in FAST]
    code, out, err = _run(
        capsys, "train", data, "--target", "plan", "--exclude", "id", *args, "--epochs", "2"
    )
    assert code == 0, err
    assert err.splitlines() == [cli.COMPILING]
    assert "Numba compilation" in out.splitlines()[-1] and "before the timed run" in out
    monkeypatch.setattr(cli, "_numba_cache_is_cold", lambda module="": False)
    code, out, err = _run(
        capsys, "train", data, "--target", "plan", "--exclude", "id", *args, "--epochs", "2"
    )
    assert code == 0 and err == ""


def test_a_fresh_numba_cache_is_detected_as_cold(tmp_path):
    pytest.importorskip("numba")
    code = "from fastnn.cli import _numba_cache_is_cold as c; print(c(), c('dense_numba'))"
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path), "PYTHONPATH": SRC}
    env.pop("NUMBA_DISABLE_JIT", None)
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["True", "True"]


# --- the README's example -------------------------------------------------------------------


def test_readme_csv_example_runs(tmp_path):
    import re
    import shutil

    readme = os.path.join(os.path.dirname(__file__), os.pardir, "README.md")
    with open(readme, encoding="utf-8") as f:
        blocks = [
            b for b in re.findall(r"```bash\n(.*?)```", f.read(), re.S) if "customers.csv" in b
        ]
    assert len(blocks) == 1
    if shutil.which("bash") is None:
        pytest.skip("no bash")
    bindir = os.path.dirname(sys.executable)
    if not os.path.exists(os.path.join(bindir, "fastnn")):
        pytest.skip("the fastnn console script is not installed beside this Python")
    env = {
        **os.environ,
        "PATH": bindir + os.pathsep + os.environ.get("PATH", ""),
        "FASTNN_BACKEND": "numpy",
    }
    proc = subprocess.run(
        ["bash", "-e", "-c", blocks[0]],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    # the id column is excluded: no warning; predict reports the accuracy on stderr
    assert proc.stderr.splitlines() == [
        f"customers.csv has the target column 'plan': accuracy "
        f"{proc.stderr.split('accuracy ')[-1].strip()}"
    ], proc.stderr
    got = _predictions(tmp_path / "plans.csv")
    assert got[0] == ["prediction", "proba_basic", "proba_premium"] and len(got) == 9
    assert {g[0] for g in got[1:]} <= {"basic", "premium"}
