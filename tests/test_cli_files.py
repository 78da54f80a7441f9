"""The command line and the files it is given (issue 11, items 9 and 10).

Output paths are checked before training (a bad --output used to fail after the
whole run), every problem is one "error:" line naming the file or option (no
traceback), and predictions are written to a temporary file renamed at the end, so
an error or Ctrl-C midway leaves no partial CSV that looks complete.
"""

from __future__ import annotations

import csv
import errno
import os
import stat

import numpy as np
import pytest

import fastnn
from _cli_support import run_cli
from _reliability_record import record_module_once_passed
from fastnn import MLP, cli
from fastnn.cli import TabularModel

POSIX = hasattr(os, "mkfifo")


def _csv(path, n=40, seed=0):
    rs = np.random.RandomState(seed)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["a", "b", "label"])
        for _ in range(n):
            x = rs.randn(2)
            w.writerow([f"{x[0]:.4f}", f"{x[1]:.4f}", "yes" if x[0] > 0 else "no"])
    return str(path)


def _model(path):
    net = MLP([2, 4, 2], loss="cross_entropy", backend="numpy", random_state=0)
    fastnn.save(
        TabularModel(net, ["a", "b"], "label", "classify", ["no", "yes"], np.zeros(2), np.ones(2)),
        path,
    )
    return str(path)


_run = run_cli


def _one_error_line(err, command):
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"fastnn {command}: error: "), err
    assert "Traceback" not in err
    return lines[0]


def _canary(tmp_path):
    """Before any test writes near a real device: the save must refuse a FIFO (else a
    regression would make root's save replace /dev/full or /dev/null)."""
    fifo = tmp_path / "canary"
    os.mkfifo(fifo)
    try:
        fastnn.save(MLP([1, 1], backend="numpy"), fifo)
    except OSError:
        return
    finally:
        if os.path.lexists(fifo):
            os.unlink(fifo)
    pytest.fail("fastnn.save replaced a FIFO: not trying it on a device")


# --- train --output: checked before training -------------------------------------------------


def _missing_dir(d):
    return d / "missing" / "dir" / "m.fnn"


def _directory(d):
    return d


def _fifo(d):
    os.mkfifo(d / "pipe")
    return d / "pipe"


def _read_only(d):
    _model(d / "ro.fnn")
    os.chmod(d / "ro.fnn", 0o444)
    return d / "ro.fnn"


# (name, the --output path made in tmp_path, words of the error)
TRAIN_BAD_OUTPUTS = [
    ("missing directory", _missing_dir, "does not exist"),
    ("directory", _directory, "is a directory"),
    ("fifo", _fifo, "FIFO"),
    ("read-only model file", _read_only, "read-only"),
    ("/dev/full", lambda d: "/dev/full", "character device"),
    ("/dev/null", lambda d: "/dev/null", "character device"),
]


@pytest.mark.skipif(not POSIX, reason="POSIX only")
@pytest.mark.parametrize(
    "name, make, words", TRAIN_BAD_OUTPUTS, ids=[c[0] for c in TRAIN_BAD_OUTPUTS]
)
def test_train_checks_the_output_before_training(tmp_path, capsys, name, make, words):
    data = _csv(tmp_path / "d.csv")
    output = str(make(tmp_path))
    if output.startswith("/dev/"):
        if not os.path.exists(output) or not stat.S_ISCHR(os.stat(output).st_mode):
            pytest.skip(f"{output} is not a character device here")
        _canary(tmp_path)
    before = os.stat(output).st_mode if os.path.exists(output) else None
    code, out, err = _run(
        capsys,
        "train",
        data,
        "--target",
        "label",
        "--hidden",
        "4",
        "--epochs",
        "1",
        "--backend",
        "numpy",
        "-o",
        output,
    )
    assert code == 1
    line = _one_error_line(err, "train")
    assert output in line and words in line, line
    assert "final metrics" not in out and "Epoch" not in out  # no training was run
    if before is not None:
        assert os.stat(output).st_mode == before  # still what it was


HIDDEN_TOO_LARGE = ["100000,100000", "10000000000", "1" + "0" * 30]


@pytest.mark.parametrize("hidden", HIDDEN_TOO_LARGE, ids=lambda h: f"{len(h)}chars")
def test_train_refuses_layers_too_large_in_one_line(tmp_path, capsys, hidden):
    data = _csv(tmp_path / "d.csv")
    code, out, err = _run(
        capsys,
        "train",
        data,
        "--target",
        "label",
        "--hidden",
        hidden,
        "--epochs",
        "1",
        "--backend",
        "numpy",
    )
    assert code == 1
    line = _one_error_line(err, "train")
    assert "--hidden" in line and "layer_sizes" in line, line
    assert len(line) < 400


# --- predict: files that are not what they should be -----------------------------------------


def _utf16(path, encoding):
    src = path.with_suffix(".utf8")
    _csv(src)
    text = src.read_text()
    path.write_bytes(text.encode(encoding))
    return path


def _binary(path):
    path.write_bytes(b"a,b\n1,2\n" + bytes(range(256)) * 4)
    return path


# (name, make (model path, data path) in tmp_path, the path the error names, words).
# A FIFO as the model is tried in test_special_files.py, guarded against blocking.
PREDICT_BAD_INPUTS = [
    ("model is a directory", lambda d: (d, _csv(d / "d.csv")), 0, "is a directory"),
    (
        "data is UTF-16-LE without BOM",
        lambda d: (_model(d / "m.fnn"), _utf16(d / "d.csv", "utf-16-le")),
        1,
        "not a UTF-8 text file",
    ),
    (
        "data is UTF-16-BE without BOM",
        lambda d: (_model(d / "m.fnn"), _utf16(d / "d.csv", "utf-16-be")),
        1,
        "not a UTF-8 text file",
    ),
    (
        "data is binary",
        lambda d: (_model(d / "m.fnn"), _binary(d / "d.csv")),
        1,
        "not a UTF-8 text file",
    ),
]


@pytest.mark.skipif(not POSIX, reason="POSIX only")
@pytest.mark.parametrize(
    "name, make, which, words", PREDICT_BAD_INPUTS, ids=[c[0] for c in PREDICT_BAD_INPUTS]
)
def test_predict_names_bad_input_files_in_one_line(tmp_path, capsys, name, make, which, words):
    paths = [str(p) for p in make(tmp_path)]
    code, out, err = _run(capsys, "predict", *paths)
    assert code == 1
    line = _one_error_line(err, "predict")
    assert f"error: {paths[which]}" in line and words in line, line


def _ro_csv(d):
    (d / "ro.csv").write_text("old\n")
    os.chmod(d / "ro.csv", 0o444)
    return d / "ro.csv"


# (name, the -o path made in tmp_path, words of the error)
PREDICT_BAD_OUTPUTS = [
    ("directory", _directory, "is a directory"),
    ("missing directory", lambda d: d / "missing" / "p.csv", "does not exist"),
    ("read-only file", _ro_csv, "read-only"),
    ("/dev/full", lambda d: "/dev/full", "No space left"),
]


@pytest.mark.skipif(not POSIX, reason="POSIX only")
@pytest.mark.parametrize(
    "name, make, words", PREDICT_BAD_OUTPUTS, ids=[c[0] for c in PREDICT_BAD_OUTPUTS]
)
def test_predict_output_errors_in_one_line(tmp_path, capsys, name, make, words):
    model, data = _model(tmp_path / "m.fnn"), _csv(tmp_path / "d.csv")
    output = str(make(tmp_path))
    if output == "/dev/full" and not os.path.exists(output):
        pytest.skip("no /dev/full here")
    before = sorted(os.listdir(tmp_path))
    code, out, err = _run(capsys, "predict", model, data, "-o", output)
    assert code == 1
    line = _one_error_line(err, "predict")
    assert output in line and words in line, line
    assert sorted(os.listdir(tmp_path)) == before  # no temporary file left
    if name == "read-only file":
        assert (tmp_path / "ro.csv").read_text() == "old\n"


def test_predict_to_a_character_device_writes_through(tmp_path, capsys):
    if not os.path.exists("/dev/null") or not stat.S_ISCHR(os.stat("/dev/null").st_mode):
        pytest.skip("no /dev/null here")
    model, data = _model(tmp_path / "m.fnn"), _csv(tmp_path / "d.csv")
    code, out, err = _run(capsys, "predict", model, data, "-o", "/dev/null")
    assert code == 0, err
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)


# --- predict -o: no partial CSV --------------------------------------------------------------


def _failing_writer(exc, after):
    """csv.writer whose writerow raises ``exc`` after ``after`` rows (Ctrl-C, a full
    disk midway through the predictions)."""
    real = csv.writer

    def writer(stream, *a, **k):
        w = real(stream, *a, **k)

        class Failing:
            rows = 0

            def writerow(self, row):
                if Failing.rows == after:
                    raise exc
                Failing.rows += 1
                return w.writerow(row)

        return Failing()

    return writer


INTERRUPTIONS = [
    ("Ctrl-C", KeyboardInterrupt(), 130),
    ("disk full", OSError(errno.ENOSPC, "No space left on device"), 1),
]


@pytest.mark.parametrize("existing", [False, True], ids=["new file", "existing file"])
@pytest.mark.parametrize("name, exc, status", INTERRUPTIONS, ids=[c[0] for c in INTERRUPTIONS])
def test_interrupted_predictions_leave_no_partial_csv(
    tmp_path, capsys, monkeypatch, name, exc, status, existing
):
    model, data = _model(tmp_path / "m.fnn"), _csv(tmp_path / "d.csv", n=200)
    output = tmp_path / "preds.csv"
    if existing:
        output.write_text("previous\n")
    before = sorted(os.listdir(tmp_path))
    monkeypatch.setattr(cli.csv, "writer", _failing_writer(exc, after=100))
    code, out, err = _run(capsys, "predict", model, data, "-o", output)
    assert code == status
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert sorted(os.listdir(tmp_path)) == before  # no partial file, no temporary file
    if existing:
        assert output.read_text() == "previous\n"


def test_predictions_replace_the_file_whole(tmp_path, capsys):
    model, data = _model(tmp_path / "m.fnn"), _csv(tmp_path / "d.csv")
    output = tmp_path / "preds.csv"
    output.write_text("x\n" * 1000)  # longer than the predictions: nothing may remain
    os.chmod(output, 0o640)
    code, out, err = _run(capsys, "predict", model, data, "-o", output)
    assert code == 0, err
    rows = list(csv.reader(output.read_text().splitlines()))
    assert rows[0] == ["prediction"] and len(rows) == 41
    assert stat.S_IMODE(os.stat(output).st_mode) == 0o640
    assert sorted(os.listdir(tmp_path)) == ["d.csv", "m.fnn", "preds.csv"]


def test_cli_files_recorded(request):
    record_module_once_passed(
        request,
        "api.cli_files",
        "special files",
        "fastnn train / predict with outputs in missing directories, directories, "
        "/dev/full, /dev/null, read-only files and FIFOs; --hidden too large for memory; "
        "directories, FIFOs, binary and UTF-16 files as inputs; Ctrl-C and a full disk "
        "while predictions are written",
        len(TRAIN_BAD_OUTPUTS)
        + len(HIDDEN_TOO_LARGE)
        + len(PREDICT_BAD_INPUTS)
        + len(PREDICT_BAD_OUTPUTS)
        + 1
        + 2 * len(INTERRUPTIONS)
        + 1,
        "one error line naming the file or option, before any training; predictions "
        "written to a temporary file and renamed (no partial CSV left); a device is "
        "written through",
    )
