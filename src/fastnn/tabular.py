"""The tabular model that ``fastnn train`` saved before it saved pipelines.

A :class:`TabularModel` is a :class:`fastnn.MLP` with the column names, the task, the
class labels and the standardisation of its inputs and outputs around it. ``fastnn
train`` now saves a scikit-learn Pipeline instead, but files of kind "tabular" keep
loading (:func:`fastnn.load`, ``fastnn predict``, ``fastnn export``), and this module
is where they come from: it registers the kind's loader with :mod:`fastnn.io` when it
is imported (``import fastnn`` imports it), so that loading a file never imports the
command line.
"""

from __future__ import annotations

import numpy as np

from . import _validation as _v
from .io import ModelFileError, Payload, register_kind

__all__ = ["TabularModel", "InputOverflow"]


class InputOverflow(ValueError):
    """A feature value too large for a :class:`TabularModel`'s network."""

    def __init__(self, row: int, column: str, value: float, dtype):
        self.row, self.column, self.value = row, column, value
        super().__init__(
            f"row {row}: column {column!r} holds {value:.6g}, too large for "
            f"this model (standardised, it is not finite in "
            f"{np.dtype(dtype).name})"
        )


class TabularModel:
    """A trained :class:`fastnn.MLP` with what tabular data needs around it.

    Parameters
    ----------
    model : fastnn.MLP
    features : list of str
        The input columns, in the network's input order.
    target : str
        The name of the target column.
    task : {"classify", "regress"}
    classes : list of str or None
        Class labels (classify); output i of the network is ``classes[i]``.
    x_mean, x_scale : ndarray (n_features,)
        Inputs are ``(x - x_mean) / x_scale`` before the network.
    y_mean, y_scale : float
        Regression outputs are ``y_mean + y_scale * network(x)``.
    """

    def __init__(
        self, model, features, target, task, classes, x_mean, x_scale, y_mean=0.0, y_scale=1.0
    ):
        self.model = model
        self.features = list(features)
        self.target = target
        self.task = task
        self.classes = None if classes is None else list(classes)
        self.x_mean = np.asarray(x_mean, np.float64)
        self.x_scale = np.asarray(x_scale, np.float64)
        self.y_mean, self.y_scale = float(y_mean), float(y_scale)

    def __repr__(self):
        return (
            f"TabularModel(task={self.task!r}, target={self.target!r}, "
            f"features={self.features}, model={self.model!r})"
        )

    def transform(self, X) -> np.ndarray:
        """Standardised inputs (n, n_features) in the network's dtype.

        Raises :class:`InputOverflow` (a ValueError) when a value is too large for the
        network: standardised, it is not finite in the network's dtype.
        """
        X = np.asarray(X, np.float64)
        if X.ndim != 2 or X.shape[1] != len(self.features):
            raise ValueError(f"X must have shape (n, {len(self.features)}), got {X.shape}")
        with np.errstate(over="ignore", invalid="ignore"):
            Z = ((X - self.x_mean) / self.x_scale).astype(self.model.dtype)
        if not np.isfinite(Z).all():
            i, j = np.argwhere(~np.isfinite(Z))[0]
            raise InputOverflow(int(i), self.features[j], float(X[i, j]), Z.dtype)
        return Z

    def predict(self, X) -> np.ndarray:
        """Class labels (str) or regression values (float64), one per row of X."""
        out = self.model.predict(self.transform(X))
        if self.task == "classify":
            return np.asarray(self.classes, dtype=object)[out]
        return self.y_mean + self.y_scale * out[:, 0].astype(np.float64)

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities (n, n_classes) in the order of ``classes``."""
        if self.task != "classify":
            raise ValueError("predict_proba needs a classification model")
        return self.model.predict_proba(self.transform(X))

    def _fastnn_payload(self) -> Payload:
        meta = {
            "features": self.features,
            "target": self.target,
            "task": self.task,
            "classes": self.classes,
            "y_mean": self.y_mean,
            "y_scale": self.y_scale,
        }
        return Payload(
            "tabular", self.model, meta, {"x_mean": self.x_mean, "x_scale": self.x_scale}
        )


def _tabular_from_payload(model, metadata, arrays) -> TabularModel:
    """The loader of kind "tabular" (registered with :func:`fastnn.io.register_kind`)."""
    try:
        features, task, classes = metadata["features"], metadata["task"], metadata["classes"]
        if not (isinstance(features, list) and all(isinstance(f, str) for f in features)):
            raise ValueError("features must be a list of column names")
        if task not in ("classify", "regress"):
            raise ValueError(f"unknown task {task!r}")
        if task == "classify" and (
            not isinstance(classes, list)
            or len(classes) != model.n_outputs
            or model.loss.name != "cross_entropy"
        ):
            raise ValueError("the class labels do not match the network's outputs")
        if len(features) != model.n_features_in:
            raise ValueError("the feature names do not match the network's inputs")
        for name in ("x_mean", "x_scale"):
            if arrays[name].shape != (len(features),):
                raise ValueError(f"{name} has shape {arrays[name].shape}")
        return TabularModel(
            model,
            features,
            str(metadata["target"]),
            task,
            classes if task == "classify" else None,
            arrays["x_mean"],
            arrays["x_scale"],
            _v.scalar(metadata["y_mean"], "y_mean"),
            _v.scalar(metadata["y_scale"], "y_scale", low=0, low_open=True),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelFileError(f"invalid tabular model metadata: {exc}") from None


register_kind("tabular", _tabular_from_payload)
