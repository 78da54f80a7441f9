"""`fastnn demo`, the README's main job: data, output, plot, and runs without the extras."""

import sys

import numpy as np
import pytest

import fastnn
from fastnn import demo
from fastnn.cli import main


def test_spiral_is_seed_002s():
    # The experiment's own code draws it with NumPy's global generator; the same
    # statements give the same points.
    np_state = np.random.get_state()
    try:
        np.random.seed(42)
        n_pts, n_cls = 300, 3
        X_sp = np.zeros((n_pts * n_cls, 2))
        y_sp = np.zeros(n_pts * n_cls, dtype=int)
        for k in range(n_cls):
            ix = range(n_pts * k, n_pts * (k + 1))
            r = np.linspace(0, 1, n_pts)
            th = np.linspace(k * 4, (k + 1) * 4, n_pts) + np.random.randn(n_pts) * 0.25
            X_sp[ix] = np.column_stack([r * np.sin(th), r * np.cos(th)])
            y_sp[ix] = k
    finally:
        np.random.set_state(np_state)
    X, y = demo.spiral()
    np.testing.assert_array_equal(X, X_sp)
    np.testing.assert_array_equal(y, y_sp)


def test_digits_split_is_fixed_and_standardised_on_the_training_part():
    pytest.importorskip("sklearn")
    Xtr, Xte, ytr, yte = demo.load_digits_split()
    assert Xtr.shape == (1437, 64) and Xte.shape == (360, 64) and Xtr.dtype == np.float32
    np.testing.assert_allclose(Xtr.mean(0), 0, atol=1e-5)
    std = Xtr.std(0)
    assert np.all((np.abs(std - 1) < 1e-4) | (std == 0))  # constant pixels stay 0
    again = demo.load_digits_split()
    np.testing.assert_array_equal(again[1], Xte)
    # Stratified: every digit has its share of the test set.
    assert np.all(np.abs(np.bincount(yte) - 36) <= 1)


def test_quick_demo_prints_both_experiments_side_by_side_and_plots(tmp_path, capsys):
    pytest.importorskip("sklearn")
    pytest.importorskip("matplotlib")
    png = tmp_path / "demo.png"
    assert main(["demo", "--quick", "--plot", str(png)]) == 0
    out = capsys.readouterr().out
    assert "BLAS threads 1" in out
    assert f"products on {demo._blas_name()}" in out
    assert "digits: 1437 train / 360 test images" in out and "10 epochs" in out
    assert "spiral: 900 points" in out and "60 epochs" in out
    for head in ("test acc", "train acc"):
        assert head in out
    rows = [
        line.split()
        for line in out.splitlines()
        if line.startswith("  ")
        and line.split()[0] in ("fastnn", "scikit-learn")
        and line.split()[1] != "is"
    ]
    assert [r[0] for r in rows] == ["fastnn", "scikit-learn"] * 2
    for r in rows:
        assert 0 <= float(r[1]) <= 1 and float(r[2]) > 0 and r[3] == "s"
    assert out.count("than scikit-learn, accuracy") == 2
    assert f"saved learning curves and the spiral's decision boundary to {png}" in out
    assert "total wall time" in out
    with open(png, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_demo_without_scikit_learn_runs_the_spiral(monkeypatch):
    monkeypatch.setattr(demo, "_have_sklearn", lambda: False)
    lines = []
    result = demo.run_demo("numpy", quick=True, out=lines.append)
    text = "\n".join(lines)
    assert "scikit-learn is not installed: skipping the digits" in text
    assert result.digits == {} and list(result.spiral) == ["fastnn"]
    assert result.backend == "numpy"
    assert result.spiral["fastnn"].samples_per_s > 0


def test_no_compare_trains_fastnn_only():
    pytest.importorskip("sklearn")
    lines = []
    result = demo.run_demo(quick=True, compare=False, out=lines.append)
    assert list(result.digits) == ["fastnn"] and list(result.spiral) == ["fastnn"]
    assert not any("scikit-learn" in line for line in lines)


def test_plot_without_matplotlib_fails_before_training(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    called = []
    monkeypatch.setattr(demo, "_spiral", lambda *a, **k: called.append(1))
    assert main(["demo", "--quick", "--plot", str(tmp_path / "x.png")]) == 1
    err = capsys.readouterr().err
    assert "pip install 'fastnn-mlp[plot]'" in err and not called


@pytest.mark.slow
def test_full_demo_reaches_the_seeds_accuracies():
    pytest.importorskip("sklearn")
    result = demo.run_demo(out=lambda line: None)
    # The spiral's original experiment reports 0.9967; the digits network about 0.97-0.98.
    assert result.spiral["fastnn"].accuracy >= 0.99
    assert result.digits["fastnn"].accuracy >= 0.96
    assert set(result.digits) == {"fastnn", "scikit-learn"}
    assert result.backend == fastnn.default_backend_name()
