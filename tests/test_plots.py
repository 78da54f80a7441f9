"""fastnn.plots: learning curves and decision boundaries, drawn with the Agg backend and
checked through the figure's artists (lines, collections, labels, legend)."""

import os
import subprocess
import sys

import numpy as np
import pytest

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")

from matplotlib.collections import PathCollection  # noqa: E402
from matplotlib.contour import ContourSet  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

import fastnn  # noqa: E402
from fastnn.plots import plot_decision_boundary, plot_learning_curves  # noqa: E402

SRC = os.path.join(os.path.dirname(__file__), os.pardir, "src")


def _axes(n=1):
    fig = Figure()
    return fig.subplots(1, n) if n > 1 else fig.subplots()


def _blobs(seed=0):
    rs = np.random.RandomState(seed)
    centers = np.array([[-2.0, 0.0], [2.0, 0.0], [0.0, 2.5]])
    y = np.repeat(np.arange(3), 40)
    return centers[y] + rs.randn(120, 2) * 0.5, y


def _legend_texts(ax):
    legends = [a.get_legend() for a in ax.figure.axes if a.get_legend() is not None]
    assert len(legends) == 1
    return [t.get_text() for t in legends[0].get_texts()]


def test_import_does_not_import_matplotlib():
    code = "import sys, fastnn.plots; assert 'matplotlib' not in sys.modules"
    subprocess.run(
        [sys.executable, "-W", "ignore", "-c", code],
        check=True,
        env={**os.environ, "PYTHONPATH": SRC},
    )


# --- learning curves ----------------------------------------------------------------------


def test_learning_curves_from_a_fit_history():
    X, y = _blobs()
    net = fastnn.MLP([2, 8, 3], loss="cross_entropy", backend="numpy", random_state=0)
    hist = net.fit(X, y, epochs=6, batch_size=16, validation_split=0.25)
    ax = plot_learning_curves(hist, _axes())
    losses = {line.get_label(): line for line in ax.get_lines()}
    assert set(losses) == {"loss", "val loss"}
    np.testing.assert_array_equal(losses["loss"].get_xdata(), np.arange(1, 7))
    np.testing.assert_array_equal(losses["val loss"].get_ydata(), hist["val_loss"])
    twin = [a for a in ax.figure.axes if a is not ax]
    assert len(twin) == 1 and twin[0].get_ylabel() == "accuracy"
    scores = {line.get_label(): line for line in twin[0].get_lines()}
    assert set(scores) == {"accuracy", "val accuracy"}
    np.testing.assert_array_equal(scores["accuracy"].get_ydata(), hist["accuracy"])
    assert ax.get_xlabel() == "epoch" and ax.get_ylabel() == "loss"
    assert _legend_texts(ax) == ["loss", "val loss", "accuracy", "val accuracy"]
    # Every curve has its own colour.
    colors = [line.get_color() for a in ax.figure.axes for line in a.get_lines()]
    assert len(set(colors)) == 4


def test_learning_curves_from_an_estimator_and_two_runs_on_one_axes():
    sklearn = pytest.importorskip("sklearn")  # noqa: F841
    from fastnn import MLPClassifier

    X, y = _blobs()
    est = MLPClassifier((8,), max_iter=15, early_stopping=True, n_iter_no_change=50, random_state=0)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est.fit(X, y)
    ax = _axes()
    plot_learning_curves(est, ax, metrics=["loss"], label="fastnn")
    plot_learning_curves({"loss": [1.0, 0.5, 0.25]}, ax, label="other")
    assert [line.get_label() for line in ax.get_lines()] == ["fastnn loss", "other loss"]
    np.testing.assert_array_equal(ax.get_lines()[0].get_ydata(), est.loss_curve_)
    assert _legend_texts(ax) == ["fastnn loss", "other loss"]
    ax2 = plot_learning_curves(est, _axes())
    twin = [a for a in ax2.figure.axes if a is not ax2][0]
    np.testing.assert_array_equal(twin.get_lines()[0].get_ydata(), est.validation_scores_)
    assert twin.get_lines()[0].get_label() == "val accuracy"


def test_learning_curves_regression_and_log_scale():
    ax = plot_learning_curves({"loss": [100.0, 1.0, 0.1], "val_r2": [0.1, 0.8, 0.9]}, _axes())
    assert ax.get_yscale() == "log"
    twin = [a for a in ax.figure.axes if a is not ax][0]
    assert twin.get_ylabel() == "R²"
    ax = plot_learning_curves({"loss": [1.0, 0.8]}, _axes())
    assert ax.get_yscale() == "linear"


def test_learning_curves_bad_input():
    with pytest.raises(ValueError, match=r"metrics \['val_loss'\] are not in the history"):
        plot_learning_curves({"loss": [1.0]}, _axes(), metrics=["val_loss"])
    with pytest.raises(ValueError, match="no epochs"):
        plot_learning_curves({"loss": []}, _axes())
    with pytest.raises(TypeError, match="history must be"):
        plot_learning_curves([1.0, 2.0], _axes())


def test_learning_curves_new_figure_when_no_axes():
    import matplotlib.pyplot as plt

    ax = plot_learning_curves({"loss": [3.0, 2.0, 1.0]})
    try:
        assert ax.figure is not None and len(ax.get_lines()) == 1
    finally:
        plt.close(ax.figure)


# --- decision boundary ----------------------------------------------------------------------


def test_decision_boundary_of_an_mlp():
    X, y = _blobs()
    net = fastnn.MLP([2, 16, 3], loss="cross_entropy", backend="numpy", random_state=0)
    net.fit(X, y, epochs=40, batch_size=16, optimizer=fastnn.Adam(0.01))
    ax = plot_decision_boundary(net, X, y, _axes(), resolution=60)
    contours = [c for c in ax.collections if isinstance(c, ContourSet)]
    assert len(contours) == 2  # filled regions and the boundary lines
    filled = [c for c in contours if c.filled][0]
    np.testing.assert_array_equal(filled.levels, [-0.5, 0.5, 1.5, 2.5])
    points = [c for c in ax.collections if type(c) is PathCollection]
    assert len(points) == 1
    np.testing.assert_allclose(points[0].get_offsets(), X)
    np.testing.assert_array_equal(points[0].get_array(), y)
    assert ax.get_xlabel() == "x1" and ax.get_ylabel() == "x2"
    assert _legend_texts(ax) == ["0", "1", "2"]
    # The plotted area holds every point with a margin.
    x0, x1 = ax.get_xlim()
    assert x0 < X[:, 0].min() and x1 > X[:, 0].max()


class _SignOfX1:
    """A fitted 'classifier' whose boundary is known: class by the sign of x1."""

    classes_ = np.array(["left", "right"])

    def predict(self, X):
        return self.classes_[(np.asarray(X)[:, 0] > 0).astype(int)]


def test_decision_boundary_is_where_the_prediction_changes():
    X = np.array([[-1.0, -1.0], [1.0, 1.0], [-0.5, 0.5], [0.5, -0.5]])
    y = np.array(["left", "right", "left", "right"])
    ax = plot_decision_boundary(_SignOfX1(), X, y, _axes(), resolution=101, margin=0.0)
    lines = [c for c in ax.collections if isinstance(c, ContourSet) and not c.filled][0]
    xs = np.concatenate([p.vertices[:, 0] for p in lines.get_paths()])
    # The grid step is 0.02: the drawn boundary lies within one step of x1 = 0.
    assert xs.size and np.abs(xs).max() <= 0.02 + 1e-12
    assert _legend_texts(ax) == ["left", "right"]


def test_decision_boundary_of_a_binary_mlp_and_an_estimator():
    X, y = _blobs()
    yb = (y == 1).astype(int)
    net = fastnn.MLP([2, 8, 1], loss="binary_cross_entropy", backend="numpy", random_state=0)
    net.fit(X, yb, epochs=20, batch_size=16)
    ax = plot_decision_boundary(net, X, yb, _axes(), resolution=30)
    assert _legend_texts(ax) == ["0", "1"]
    pytest.importorskip("sklearn")
    import warnings

    from fastnn import MLPClassifier

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est = MLPClassifier((8,), max_iter=30, random_state=0).fit(X, np.array(["a", "b", "c"])[y])
    ax = plot_decision_boundary(
        est, X, np.array(["a", "b", "c"])[y], _axes(), resolution=30, cmap="viridis"
    )
    assert _legend_texts(ax) == ["a", "b", "c"]


def test_decision_boundary_bad_input():
    X, y = _blobs()
    net = fastnn.MLP([2, 4, 3], loss="cross_entropy", backend="numpy", random_state=0)
    with pytest.raises(ValueError, match=r"X must have shape \(n_samples, 2\)"):
        plot_decision_boundary(net, np.c_[X, X[:, :1]], y, _axes())
    with pytest.raises(ValueError, match=r"y must have shape \(120,\)"):
        plot_decision_boundary(net, X, y[:-1], _axes())
    with pytest.raises(ValueError, match="resolution must be an integer >= 2"):
        plot_decision_boundary(net, X, y, _axes(), resolution=1)
    with pytest.raises(ValueError, match=r"y holds labels \[7\]"):
        plot_decision_boundary(net, X, np.where(y == 2, 7, y), _axes(), resolution=5)
    reg = fastnn.MLP([2, 4, 1], backend="numpy", random_state=0)
    with pytest.raises(ValueError, match="needs a classifier; this model uses the mse"):
        plot_decision_boundary(reg, X, y, _axes())
    with pytest.raises(TypeError, match="model must be a fastnn MLP"):
        plot_decision_boundary(object(), X, y, _axes())


def test_missing_matplotlib_gives_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ImportError, match=r"pip install 'fastnn-mlp\[plot\]'"):
        plot_learning_curves({"loss": [1.0]})
    with pytest.raises(ImportError, match=r"pip install 'fastnn-mlp\[plot\]'"):
        plot_decision_boundary(_SignOfX1(), np.zeros((2, 2)), ["left", "right"])


def test_saves_a_png(tmp_path):
    X, y = _blobs()
    net = fastnn.MLP([2, 8, 3], loss="cross_entropy", backend="numpy", random_state=0)
    hist = net.fit(X, y, epochs=5, batch_size=32)
    fig = Figure(figsize=(8, 3))
    a, b = fig.subplots(1, 2)
    plot_learning_curves(hist, a)
    plot_decision_boundary(net, X, y, b, resolution=40)
    path = tmp_path / "plot.png"
    fig.savefig(path)
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
