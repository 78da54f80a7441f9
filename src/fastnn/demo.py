"""The main job (``fastnn demo``): two experiments, timed, side by side with scikit-learn.

1. **Digits** (scikit-learn's bundled 8x8 images, 1797 samples, 10 classes): a fixed
   stratified 80/20 split, standardised with the training part's mean and standard
   deviation, float32; a 64-128-128-10 ReLU network, Adam lr 1e-3, batch 64, 50
   epochs, scikit-learn's default alpha. fastnn's :class:`~fastnn.MLPClassifier` and
   scikit-learn's ``MLPClassifier`` get the same arguments (and so start from the same
   initial network); the test accuracy and training speed of both are printed.
2. **Spiral** (three interleaved arms of 300 points, the worked example of
   docs/spec.md §12): a 2-128-3 ReLU network, Adam lr 0.005, batch 64, L2 1e-4 on the
   weights, 300 epochs, through the core API (:class:`fastnn.MLP` and ``fit``); the
   original experiment reports 0.9967 training accuracy. scikit-learn's MLPClassifier
   trains the same network (``alpha = 1e-4 * 64``, its L2 term being alpha / batch
   size per batch).

Timings are the ``fit`` calls alone, after a short warm-up fit of each library (so
that one-time costs -- JIT compilation, first allocations -- are not counted);
samples/s is training samples times epochs divided by that time. The digits part
needs scikit-learn for its data; without scikit-learn only the spiral runs.
"""

from __future__ import annotations

import os
import time
import warnings
from dataclasses import dataclass, field
from typing import cast

import numpy as np

from . import __version__
from ._backend import backend as _get_backend
from .model import MLP
from .optim import Adam

__all__ = ["spiral", "load_digits_split", "run_demo", "DemoResult"]


def spiral(n_points: int = 300, n_classes: int = 3, seed: int = 42):
    """The spiral of docs/spec.md §12: ``n_classes`` arms of ``n_points`` points.

    Returns X (n_points * n_classes, 2) float64 and y (n,) int64 class indices.
    Arm k has radius r = linspace(0, 1) and angle linspace(4k, 4(k + 1)) plus
    N(0, 0.25) noise; the points are (r sin t, r cos t).
    """
    rs = np.random.RandomState(seed)
    X = np.zeros((n_points * n_classes, 2))
    y = np.zeros(n_points * n_classes, dtype=np.int64)
    for k in range(n_classes):
        ix = slice(n_points * k, n_points * (k + 1))
        r = np.linspace(0, 1, n_points)
        t = np.linspace(k * 4, (k + 1) * 4, n_points) + rs.randn(n_points) * 0.25
        X[ix] = np.column_stack([r * np.sin(t), r * np.cos(t)])
        y[ix] = k
    return X, y


def load_digits_split(test_size: float = 0.2, seed: int = 0, dtype=np.float32):
    """scikit-learn's digits, split (stratified, fixed seed) and standardised on the train part.

    Returns (X_train, X_test, y_train, y_test); features are scaled with the training
    mean and standard deviation (constant pixels keep scale 1, as StandardScaler does).
    """
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError as exc:
        raise ImportError(
            "the digits data set ships with scikit-learn; install it with "
            "`pip install 'fastnn-mlp[sklearn]'`"
        ) from exc
    X, y = load_digits(return_X_y=True)
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=test_size, random_state=seed, stratify=y)
    mean = Xtr.mean(axis=0)
    scale = Xtr.std(axis=0)
    scale[scale == 0] = 1.0
    return ((Xtr - mean) / scale).astype(dtype), ((Xte - mean) / scale).astype(dtype), ytr, yte


@dataclass
class Run:
    """One library's result on one experiment."""

    library: str
    accuracy: float
    seconds: float
    samples_per_s: float
    curve: dict = field(default_factory=dict)


@dataclass
class DemoResult:
    """What :func:`run_demo` measured (``None`` where a part did not run)."""

    backend: str
    digits: dict = field(default_factory=dict)  # library -> Run
    spiral: dict = field(default_factory=dict)  # library -> Run
    spiral_model: MLP | None = None
    spiral_data: tuple | None = None
    wall_seconds: float = 0.0
    notes: list = field(default_factory=list)


def _have_sklearn() -> bool:
    try:
        import sklearn  # noqa: F401
    except ImportError:
        return False
    return True


def _blas_threads() -> str:
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "?"
    counts = {p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"}
    return "/".join(str(c) for c in sorted(counts)) or "?"


def _blas_name() -> str:
    """The BLAS fastnn's products run on: "OpenBLAS 0.3.34 (SkylakeX)", or its file's
    name when it is not an OpenBLAS that reports its release; "and fastnn's GEMM"
    where that takes the larger products."""
    from . import _blas

    i = _blas.info()
    name = (
        os.path.basename(i["source"])
        if i["version"] is None
        else f"OpenBLAS {i['version']} ({i['kernel'] or '?'})"
    )
    return name + (" and fastnn's GEMM" if i["gemm"] == "fastnn" else "")


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def _digits(backend, epochs, out, result, compare):
    import sklearn.neural_network as sknn

    from .estimators import MLPClassifier

    Xtr, Xte, ytr, yte = load_digits_split()
    kw = dict(
        hidden_layer_sizes=(128, 128),
        activation="relu",
        solver="adam",
        learning_rate_init=1e-3,
        batch_size=64,
        max_iter=epochs,
        # Run all epochs in both libraries (no stop on a training-loss plateau).
        n_iter_no_change=epochs,
        random_state=0,
    )
    out(
        f"digits: {len(Xtr)} train / {len(Xte)} test images (8x8, standardised, "
        f"float32), 64-128-128-10 ReLU, Adam lr 1e-3, batch 64, {epochs} epochs"
    )
    libs = [("fastnn", lambda **a: MLPClassifier(backend=backend, **a))]
    if compare:
        libs.append(("scikit-learn", sknn.MLPClassifier))
    with warnings.catch_warnings():
        # Both run the full max_iter on purpose.
        from sklearn.exceptions import ConvergenceWarning

        warnings.simplefilter("ignore", ConvergenceWarning)
        for name, make in libs:
            make(**{**kw, "max_iter": 1}).fit(Xtr[:256], ytr[:256])  # warm-up
            est, secs = _timed(lambda make=make: make(**kw).fit(Xtr, ytr))
            result.digits[name] = Run(
                name,
                est.score(Xte, yte),
                secs,
                len(Xtr) * est.n_iter_ / secs,
                {"loss": list(est.loss_curve_)},
            )
    _table(out, result.digits, "test acc")


def _spiral(backend, epochs, out, result, compare):
    X, y = spiral()
    result.spiral_data = (X, y)
    out(
        f"spiral: {len(X)} points, 3 classes, 2-128-3 ReLU, Adam lr 0.005, "
        f"batch 64, L2 1e-4, {epochs} epochs"
    )
    X32 = X.astype(np.float32)

    def make():
        return MLP(
            [2, 128, 3],
            "relu",
            loss="cross_entropy",
            dtype="float32",
            backend=backend,
            random_state=0,
        )

    make().fit(X32, y, optimizer=Adam(0.005, weight_decay=1e-4), epochs=1, batch_size=64)
    net = make()
    hist, secs = _timed(
        lambda: net.fit(
            X32, y, optimizer=Adam(0.005, weight_decay=1e-4), epochs=epochs, batch_size=64
        )
    )
    result.spiral_model = net
    result.spiral["fastnn"] = Run(
        "fastnn", net.score(X32, y), secs, len(X) * len(hist) / secs, dict(hist.history)
    )
    if compare:
        import sklearn.neural_network as sknn
        from sklearn.exceptions import ConvergenceWarning

        kw = dict(
            hidden_layer_sizes=(128,),
            solver="adam",
            learning_rate_init=0.005,
            batch_size=64,
            alpha=1e-4 * 64,
            max_iter=epochs,
            n_iter_no_change=epochs,
            random_state=0,
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            sknn.MLPClassifier(**{**kw, "max_iter": 1}).fit(X32, y)
            est, secs = _timed(lambda: sknn.MLPClassifier(**kw).fit(X32, y))
        result.spiral["scikit-learn"] = Run(
            "scikit-learn",
            est.score(X32, y),
            secs,
            len(X) * est.n_iter_ / secs,
            {"loss": list(est.loss_curve_)},
        )
    _table(out, result.spiral, "train acc")


def _table(out, runs, what):
    out(f"  {'':14}{what:>10}{'fit time':>11}{'samples/s':>13}")
    for run in runs.values():
        out(
            f"  {run.library:14}{run.accuracy:>10.4f}{run.seconds:>9.3f} s"
            f"{run.samples_per_s:>13,.0f}"
        )
    if "fastnn" in runs and "scikit-learn" in runs:
        ratio = runs["scikit-learn"].seconds / runs["fastnn"].seconds
        delta = runs["fastnn"].accuracy - runs["scikit-learn"].accuracy
        out(
            f"  fastnn is {ratio:.1f}x {'faster' if ratio >= 1 else 'slower'} than "
            f"scikit-learn, accuracy {delta:+.4f}"
        )
    out("")


def run_demo(
    backend: str | None = None,
    *,
    quick: bool = False,
    plot: str | None = None,
    compare: bool = True,
    threads: int | None = 1,
    out=print,
) -> DemoResult:
    """Run the demo, printing with ``out``; returns the measurements.

    Parameters
    ----------
    backend : {"numpy", "numba", "cython"} or None
        fastnn's kernels (None: the fastest built).
    quick : bool
        10 digits epochs and 60 spiral epochs instead of 50 and 300 (a smoke test;
        the accuracies are then lower).
    plot : path or None
        Save a figure (learning curves of both experiments and the spiral's decision
        boundary) to this file; needs matplotlib.
    compare : bool
        Also train scikit-learn's MLPClassifier when scikit-learn is installed.
    threads : int or None, default 1
        BLAS threads for both libraries during the demo (1, as BENCHMARKS.md measures:
        these small matrix products gain nothing from a second thread); None leaves
        the BLAS thread pools as they are.
    """
    if threads is None:
        return _run_demo(backend, quick, plot, compare, out)
    # threadpoolctl limits the BLAS libraries loaded when it is called: load fastnn's
    # kernels (SciPy's BLAS) and scikit-learn first.
    _get_backend(backend)
    if compare and _have_sklearn():
        import sklearn.neural_network  # noqa: F401
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=threads, user_api="blas"):
        return _run_demo(backend, quick, plot, compare, out)


def _run_demo(backend, quick, plot, compare, out) -> DemoResult:
    if plot is not None:
        from .plots import _check_matplotlib

        _check_matplotlib()  # fail before training, not after
    t0 = time.perf_counter()
    kernels = _get_backend(backend)
    have_sklearn = _have_sklearn()
    result = DemoResult(kernels.name)
    out(
        f"fastnn {__version__} demo: backend {kernels.name!r}, BLAS threads {_blas_threads()}, "
        f"products on {_blas_name()}"
    )
    out("")
    if have_sklearn:
        _digits(kernels.name, 10 if quick else 50, out, result, compare)
    else:
        note = (
            "scikit-learn is not installed: skipping the digits (its bundled data set) "
            "and the side-by-side comparison (pip install 'fastnn-mlp[sklearn]')"
        )
        result.notes.append(note)
        out(note)
        out("")
    _spiral(kernels.name, 60 if quick else 300, out, result, compare and have_sklearn)
    if plot is not None:
        save_demo_plot(result, plot)
        out(f"saved learning curves and the spiral's decision boundary to {plot}")
    result.wall_seconds = time.perf_counter() - t0
    out(f"total wall time {result.wall_seconds:.2f} s")
    return result


def save_demo_plot(result: DemoResult, path) -> None:
    """Learning curves of both experiments and the spiral's decision boundary, as one image."""
    from matplotlib.figure import Figure

    from .plots import plot_decision_boundary, plot_learning_curves

    panels = (1 if result.digits else 0) + 2
    fig = Figure(figsize=(5.2 * panels, 4.6), layout="constrained")
    axes = list(np.atleast_1d(fig.subplots(1, panels)))
    if result.digits:
        ax = axes.pop(0)
        for run in result.digits.values():
            plot_learning_curves(run.curve, ax, metrics=["loss"], label=run.library)
        ax.set_title("digits: training loss")
    ax = axes.pop(0)
    fast = result.spiral["fastnn"]
    plot_learning_curves(
        fast.curve, ax, metrics=[m for m in ("loss", "accuracy") if m in fast.curve], label="fastnn"
    )
    if "scikit-learn" in result.spiral:
        # scikit-learn's loss_curve_ includes its L2 term; fastnn's History does not.
        plot_learning_curves(
            {"loss + L2 term": result.spiral["scikit-learn"].curve["loss"]},
            ax,
            label="scikit-learn",
        )
    ax.set_title("spiral: learning curves")
    X, y = cast(tuple, result.spiral_data)
    ax = plot_decision_boundary(result.spiral_model, X, y, axes.pop(0))
    ax.set_title(f"spiral: fastnn decision boundary (train acc {fast.accuracy:.4f})")
    fig.savefig(path, dpi=100)
