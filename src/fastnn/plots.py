"""Plots: learning curves of a training run and the decision boundary of a 2-D classifier.

matplotlib is an optional extra (``pip install 'fastnn-mlp[plot]'``) imported only when a
function here is called. Both functions draw into ``ax`` when given (so they compose
into any figure) and otherwise into a new figure from ``matplotlib.pyplot``; both
return the axes they drew on.

>>> import fastnn.plots  # does not import matplotlib yet
"""

from __future__ import annotations

import numpy as np

__all__ = ["plot_learning_curves", "plot_decision_boundary"]

_INSTALL_HINT = "fastnn's plots need matplotlib; install it with `pip install 'fastnn-mlp[plot]'`"


def _pyplot():
    try:
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ImportError(_INSTALL_HINT) from exc
    return plt


def _check_matplotlib():
    try:
        import matplotlib  # noqa: F401
    except ImportError as exc:
        raise ImportError(_INSTALL_HINT) from exc


def _new_axes(ax):
    if ax is not None:
        return ax
    _, ax = _pyplot().subplots()
    return ax


# --- learning curves ---------------------------------------------------------------------

_LOSSES = ("loss", "val_loss")
_SCORES = ("accuracy", "val_accuracy", "r2", "val_r2")


def _curves(history) -> dict[str, list[float]]:
    """{metric: values per epoch} from a History, a dict, or a fitted estimator."""
    if hasattr(history, "history") and isinstance(history.history, dict):
        return {k: list(v) for k, v in history.history.items()}
    if isinstance(history, dict):
        return {k: list(v) for k, v in history.items()}
    curve = getattr(history, "loss_curve_", None)
    if curve is not None:
        out = {"loss": list(curve)}
        scores = getattr(history, "validation_scores_", None)
        if scores:
            key = "val_accuracy" if hasattr(history, "classes_") else "val_r2"
            out[key] = list(scores)
        return out
    raise TypeError(
        "history must be a fastnn History, a dict of per-epoch lists, or a "
        f"fitted estimator with loss_curve_, got {type(history).__name__}"
    )


def plot_learning_curves(history, ax=None, *, metrics=None, label: str | None = None):
    """Per-epoch training and validation curves.

    Parameters
    ----------
    history : fastnn.training.History, dict of str -> list, or fitted estimator
        ``model.fit(...)``'s History, its ``.history`` dict, or a fitted
        :class:`fastnn.MLPClassifier` / :class:`fastnn.MLPRegressor` (or
        scikit-learn's MLP), whose ``loss_curve_`` and ``validation_scores_`` are used.
    ax : matplotlib Axes, optional
        Where to draw; a new figure when None.
    metrics : sequence of str, optional
        Which curves to draw (default: every curve but "lr" and "time"). Names other
        than the accuracy and R^2 ones are drawn on the loss axes.
    label : str, optional
        Prefix of the legend entries, to compare several runs on one axes
        (``label="fastnn"`` gives "fastnn loss").

    Returns
    -------
    matplotlib Axes
        Losses are drawn on ``ax`` (y label "loss"); accuracy and R^2 curves, when
        drawn, on a twin axes sharing the epoch axis (y label "accuracy" or "R²"),
        dashed. One legend lists all curves.
    """
    _check_matplotlib()
    curves = _curves(history)
    if metrics is None:
        # Losses and scores in a fixed order, then any other curve (a custom loss
        # name); the learning rate and the epoch times are not drawn by default.
        metrics = [k for k in _LOSSES + _SCORES if k in curves]
        metrics += [k for k in curves if k not in metrics and k not in ("lr", "time")]
    else:
        missing = [m for m in metrics if m not in curves]
        if missing:
            raise ValueError(f"metrics {missing} are not in the history; it has {sorted(curves)}")
    if not metrics or not any(len(curves[m]) for m in metrics):
        raise ValueError("the history holds no epochs to plot")
    ax = _new_axes(ax)
    prefix = f"{label} " if label else ""
    siblings = [a for a in ax.get_shared_x_axes().get_siblings(ax) if a is not ax]
    score_ax = siblings[0] if siblings else None
    colors = _pyplot_free_colors()
    n_drawn = sum(len(a.get_lines()) for a in [ax, *siblings])
    for i, name in enumerate(metrics):
        values = curves[name]
        epochs = np.arange(1, len(values) + 1)
        style = dict(
            label=prefix + name.replace("_", " "), color=colors[(n_drawn + i) % len(colors)]
        )
        if name in _SCORES:
            if score_ax is None:
                score_ax = ax.twinx()
            score_ax.set_ylabel("R²" if name.endswith("r2") else "accuracy")
            score_ax.plot(epochs, values, linestyle="--", **style)
        else:
            ax.plot(epochs, values, linestyle="-." if name.startswith("val") else "-", **style)
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    losses = [v for line in ax.get_lines() for v in np.asarray(line.get_ydata(), float)]
    if losses and min(losses) > 0 and max(losses) / min(losses) > 50:
        ax.set_yscale("log")  # losses spanning decades read better on a log axis
    handles = [line for a in (ax, score_ax) if a is not None for line in a.get_lines()]
    # The legend goes on the axes drawn last, so that no curve is drawn over it.
    for a in (ax, score_ax):
        if a is not None and a.get_legend() is not None:
            a.get_legend().remove()
    (score_ax or ax).legend(
        handles, [h.get_label() for h in handles], loc="best", fontsize="small", framealpha=0.9
    )
    return ax


def _pyplot_free_colors() -> list:
    """The colours of matplotlib's property cycle (without importing pyplot)."""
    import matplotlib

    return matplotlib.rcParams["axes.prop_cycle"].by_key().get("color", ["C0"])


# --- decision boundary ------------------------------------------------------------------------


def _predictor(model):
    """(predict(X) -> labels, classes or None) for a fastnn MLP or an estimator."""
    from .model import MLP

    if isinstance(model, MLP):
        if model.loss.name == "mse":
            raise ValueError(
                "plot_decision_boundary needs a classifier; this model uses the mse loss"
            )
        if model.loss.name == "binary_cross_entropy" and model.n_outputs != 1:
            raise ValueError(
                "plot_decision_boundary needs a single-label classifier; "
                f"this model has {model.n_outputs} independent outputs"
            )

        def predict(X):
            out = model.predict(X)
            return out.ravel() if out.ndim == 2 else out

        classes = (
            np.arange(model.n_outputs) if model.loss.name == "cross_entropy" else np.array([0, 1])
        )
        return predict, classes
    if not hasattr(model, "predict"):
        raise TypeError(
            f"model must be a fastnn MLP or a fitted classifier with predict, "
            f"got {type(model).__name__}"
        )
    labels = getattr(model, "classes_", None)
    if labels is not None and np.ndim(labels) != 1:
        raise ValueError("plot_decision_boundary needs a single-output classifier")
    return model.predict, labels


def plot_decision_boundary(
    model_or_estimator,
    X,
    y,
    ax=None,
    resolution: int = 200,
    *,
    margin: float = 0.1,
    alpha: float = 0.3,
    cmap=None,
):
    """Regions where a 2-D classifier predicts each class, with the data on top.

    Parameters
    ----------
    model_or_estimator : fastnn.MLP or fitted classifier
        A cross-entropy :class:`fastnn.MLP` (classes are output indices), a
        single-output binary-cross-entropy MLP (classes 0 and 1), or any fitted
        classifier with ``predict`` (its ``classes_`` name the classes).
    X : array-like (n_samples, 2)
    y : array-like (n_samples,)
        True labels of X, drawn as the colour of the points.
    ax : matplotlib Axes, optional
    resolution : int, default 200
        Grid points per axis; the model is evaluated on resolution^2 points.
    margin : float, default 0.1
        Space around the data, as a fraction of its range on each axis.
    alpha : float, default 0.3
        Opacity of the filled regions.
    cmap : matplotlib colormap or name, optional
        Default: "tab10" for up to 10 classes, else "tab20".

    Returns
    -------
    matplotlib Axes
        Filled regions (a contour set), the boundary lines between them and a scatter
        of X coloured by y; axis labels "x1", "x2" and a legend of the classes.
    """
    _check_matplotlib()
    from matplotlib import colormaps
    from matplotlib.colors import ListedColormap
    from matplotlib.lines import Line2D

    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y)
    if X.ndim != 2 or X.shape[1] != 2:
        raise ValueError(
            f"X must have shape (n_samples, 2) to draw a 2-D decision boundary, got {X.shape}"
        )
    if y.shape != (X.shape[0],):
        raise ValueError(
            f"y must have shape ({X.shape[0]},), one label per row of X, got {y.shape}"
        )
    if not isinstance(resolution, (int, np.integer)) or resolution < 2:
        raise ValueError(f"resolution must be an integer >= 2, got {resolution!r}")
    predict, classes = _predictor(model_or_estimator)

    lo, hi = X.min(axis=0), X.max(axis=0)
    pad = margin * np.where(hi > lo, hi - lo, 1.0)
    gx = np.linspace(lo[0] - pad[0], hi[0] + pad[0], resolution)
    gy = np.linspace(lo[1] - pad[1], hi[1] + pad[1], resolution)
    xx, yy = np.meshgrid(gx, gy)
    Z = np.asarray(predict(np.column_stack([xx.ravel(), yy.ravel()])))
    if classes is None:
        classes = np.unique(np.concatenate([np.unique(y), np.unique(Z)]))
    classes = np.asarray(classes)
    zi = _indices(Z, classes, "predictions").reshape(xx.shape)
    yi = _indices(y, classes, "y")
    k = len(classes)
    if cmap is None:
        base = colormaps["tab10" if k <= 10 else "tab20"]
        cmap = ListedColormap([base(i % base.N) for i in range(k)])
    elif isinstance(cmap, str):
        cmap = colormaps[cmap].resampled(k)

    ax = _new_axes(ax)
    levels = np.arange(k + 1) - 0.5
    ax.contourf(xx, yy, zi, levels=levels, cmap=cmap, alpha=alpha, vmin=-0.5, vmax=k - 0.5)
    if k > 1:
        ax.contour(xx, yy, zi, levels=levels[1:-1], colors="k", linewidths=0.6, alpha=0.6)
    ax.scatter(
        X[:, 0],
        X[:, 1],
        c=yi,
        cmap=cmap,
        vmin=-0.5,
        vmax=k - 0.5,
        s=14,
        edgecolors="k",
        linewidths=0.3,
    )
    ax.set_xlim(gx[0], gx[-1])
    ax.set_ylim(gy[0], gy[-1])
    ax.set_xlabel("x1")
    ax.set_ylabel("x2")
    # The colour of class i is cmap((i + 0.5) / k), as the scatter's vmin/vmax give it.
    handles = [
        Line2D(
            [],
            [],
            marker="o",
            linestyle="",
            markerfacecolor=cmap((i + 0.5) / k),
            markeredgecolor="k",
            label=str(c),
        )
        for i, c in enumerate(classes)
    ]
    ax.legend(handles=handles, title="class", loc="best", fontsize="small")
    return ax


def _indices(labels, classes, name):
    """Positions of labels in classes (which is sorted, as np.unique and classes_ are)."""
    labels = np.asarray(labels)
    pos = np.searchsorted(classes, labels)
    pos = np.clip(pos, 0, len(classes) - 1)
    if not np.array_equal(classes[pos], labels):
        unknown = np.setdiff1d(np.unique(labels), classes)
        raise ValueError(
            f"{name} holds labels {unknown.tolist()[:5]} that are not among the "
            f"classes {classes.tolist()[:10]}"
        )
    return pos
