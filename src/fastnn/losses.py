"""Losses fused with the output activation (docs/spec.md §4).

A model's last layer computes ``out``; the loss decides what ``out`` means:

========================  ===============  ==========================================
loss                      ``out`` is       probabilities (``predict_proba``)
========================  ===============  ==========================================
``mse``                   the prediction   none (regression)
``binary_cross_entropy``  logits z         sigmoid(z), one independent label per column
``cross_entropy``         logits z         softmax(z) over the columns
``poisson``               log of the mean  none (regression; ``predict`` is e^z)
========================  ===============  ==========================================

The two cross-entropies take logits and use the stable formulas of the kernels;
probabilities are never formed and then logged. Every value and gradient is computed
by the model's backend (``fastnn.backend(name)``) through the step functions the
reference epoch runs too (``fastnn.reference.ops.loss_value`` / ``loss_gradient``, by
the loss's kernel code); this module only names the code and prepares the targets.

Targets (``prepare_targets``):

- ``mse``: real numbers, shape (n,) for one output or (n, n_outputs).
- ``binary_cross_entropy``: values in [0, 1], shape (n,) for one output or
  (n, n_outputs) (multi-label).
- ``cross_entropy``: class indices (n,) in [0, n_classes) -- integers, or floats
  holding whole numbers -- or one-hot / probability rows (n, n_classes).

Sample weights (``w``, float64 (m,), empty for none; :func:`check_sample_weight`
prepares them): every value and gradient becomes the weighted mean, the batch's
weight sum S in place of its m samples (docs/spec.md §4, "Sample weights").
"""

from __future__ import annotations

import numpy as np

from . import _validation as v
from ._kernels import codes
from .reference import ops

__all__ = [
    "NO_WEIGHTS",
    "check_sample_weight",
    "Loss",
    "MSE",
    "BinaryCrossEntropy",
    "CrossEntropy",
    "Poisson",
    "LOSSES",
    "get_loss",
]


# The raw kernels' "no sample weights": an empty float64 array.
NO_WEIGHTS = np.zeros(0)


def check_sample_weight(sample_weight, n_samples: int, name: str = "sample_weight"):
    """``sample_weight`` as the kernels take it: None (kept), or a C-contiguous float64
    array of shape (n_samples,); a scalar is repeated for every sample.

    Refused (ValueError / TypeError naming ``name``): non-real values, another shape or
    length, NaN or infinity, negative weights, and weights that are all zero (the
    weighted mean would be 0 / 0). Zero weights are allowed otherwise.
    """
    if sample_weight is None:
        return None
    if isinstance(sample_weight, (bool, np.bool_)):
        raise TypeError(f"{name} must hold real numbers, got a boolean")
    arr = _real_array(sample_weight, name)
    if arr.dtype.kind == "b":
        raise TypeError(f"{name} must hold real numbers, got booleans")
    if arr.ndim == 0:
        arr = np.full(n_samples, arr, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(
            f"{name} must be a 1-D array of shape ({n_samples},) or a scalar, got an "
            f"array of shape {arr.shape}"
        )
    if arr.shape[0] != n_samples:
        raise ValueError(
            f"{name} must have one weight per sample: shape ({n_samples},), got {arr.shape}"
        )
    with np.errstate(over="ignore"):
        w = np.ascontiguousarray(arr, dtype=np.float64)
    if not np.isfinite(w).all():
        raise ValueError(f"{name} contains NaN or infinity")
    if w.size and w.min() < 0:
        raise ValueError(f"{name} must be non-negative, got a minimum of {w.min()}")
    if w.size and not w.any():
        raise ValueError(f"{name} must contain at least one non-zero weight")
    if w is arr and not w.flags.writeable:
        w = w.copy()
    return w


def _real_array(y, name: str) -> np.ndarray:
    """y as an ndarray of real numbers (bool, int or float); anything else is refused."""
    try:
        arr = np.asarray(y)
    except Exception as exc:  # ragged nested lists
        raise TypeError(f"{name} must be an array of numbers ({exc})") from None
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{name} must hold real numbers, got dtype {arr.dtype}")
    return arr


def _check_finite(arr: np.ndarray, name: str) -> None:
    if arr.dtype.kind == "f" and arr.size and not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or infinity")


class Loss:
    """One loss: which kernels compute it and how targets and outputs are read.

    Attributes
    ----------
    name : str
        Key in :data:`LOSSES`.
    fused : bool
        True when the loss is fused with its output activation: the output layer
        produces logits and the loss applies the sigmoid or softmax itself (the output
        layer's activation is then "identity"). This is the only meaning of "fused" in
        fastnn; the compiled whole-epoch training is the "epoch kernel"
        (``fastnn._epoch``).
    is_classifier : bool
        True for the cross-entropies (accuracy is reported, ``predict_proba`` works).
    """

    name = ""
    fused = False
    link = ""  # the output activation a fused loss applies itself
    is_classifier = False
    min_outputs = 1

    def value(self, k, out: np.ndarray, y: np.ndarray, w: np.ndarray = NO_WEIGHTS) -> float:
        """The mean loss over the batch (weighted by ``w`` unless empty), a Python float.

        ``k`` is a backend's raw kernels (``Backend._internal``): ``out``, ``y`` and
        ``grad`` must be C-contiguous, of the model's dtype (int64 class indices for
        sparse targets), as the model's workspaces and ``prepare_targets`` make them;
        ``w`` float64 (m,) or empty.
        """
        raise NotImplementedError

    def gradient(
        self, k, out: np.ndarray, y: np.ndarray, grad: np.ndarray, w: np.ndarray = NO_WEIGHTS
    ) -> np.ndarray:
        """dL/d(out) written into ``grad`` (the shape of ``out``); includes the 1/m (1/S
        with weights)."""
        raise NotImplementedError

    def prepare_targets(self, y, n_outputs: int, dtype, name: str = "y") -> np.ndarray:
        """Checked, C-contiguous targets in the form the kernels take."""
        raise NotImplementedError

    def proba(self, k, out: np.ndarray) -> np.ndarray:
        raise ValueError(
            f"predict_proba needs a classification loss (binary_cross_entropy "
            f"or cross_entropy); this model uses {self.name!r}"
        )

    def predict(self, k, out: np.ndarray) -> np.ndarray:
        """Predictions from the model output: values, 0/1 labels or class indices."""
        raise NotImplementedError

    def n_correct(self, out: np.ndarray, y: np.ndarray) -> int:
        """How many rows are predicted exactly right (classification only)."""
        raise NotImplementedError

    def __repr__(self):
        return f"get_loss({self.name!r})"


class MSE(Loss):
    """L = mean((out - y)^2) over all elements; dL/dout = 2 (out - y) / size."""

    name = "mse"

    def value(self, k, out, y, w=NO_WEIGHTS):
        return ops.loss_value(k, codes.LOSS_MSE, out, y, w)

    def gradient(self, k, out, y, grad, w=NO_WEIGHTS):
        ops.loss_gradient(k, codes.LOSS_MSE, out, y, grad, w)
        return grad

    def prepare_targets(self, y, n_outputs, dtype, name="y"):
        arr = _real_array(y, name)
        _check_finite(arr, name)
        return _as_2d_float(arr, n_outputs, dtype, name)

    def predict(self, k, out):
        return out


def _as_2d_float(arr, n_outputs, dtype, name):
    if arr.ndim == 1 and n_outputs == 1:
        arr = arr.reshape(-1, 1)
    if arr.ndim != 2 or arr.shape[1] != n_outputs:
        want = f"(n,) or (n, {n_outputs})" if n_outputs == 1 else f"(n, {n_outputs})"
        raise ValueError(
            f"{name} must have shape {want} for a model with {n_outputs} output(s), got {arr.shape}"
        )
    return _converted(arr, dtype, name)


def _converted(arr, dtype, name):
    """arr as C-contiguous ``dtype``, refusing values that overflow in the conversion
    (1e300 as float32 is inf: training would then report a divergence, not the data)."""
    with np.errstate(over="ignore"):
        out = np.ascontiguousarray(arr, dtype=dtype)
    if out.dtype != arr.dtype and out.size and not np.isfinite(out).all():
        raise ValueError(
            f"{name} contains values too large for {np.dtype(dtype).name} "
            f"(largest |{name}| is {float(np.abs(arr).max()):.3g})"
        )
    return out


class BinaryCrossEntropy(Loss):
    """Sigmoid fused in: L = mean(max(z,0) - z y + log(1 + e^-|z|)), dL/dz = (s - y) / m.

    Each output column is an independent yes/no label (binary or multi-label).
    """

    name = "binary_cross_entropy"
    fused = True
    link = "sigmoid"
    is_classifier = True

    def value(self, k, out, y, w=NO_WEIGHTS):
        return ops.loss_value(k, codes.LOSS_BINARY_CROSS_ENTROPY, out, y, w)

    def gradient(self, k, out, y, grad, w=NO_WEIGHTS):
        ops.loss_gradient(k, codes.LOSS_BINARY_CROSS_ENTROPY, out, y, grad, w)
        return grad

    def prepare_targets(self, y, n_outputs, dtype, name="y"):
        arr = _real_array(y, name)
        _check_finite(arr, name)
        if arr.size and (arr.min() < 0 or arr.max() > 1):
            raise ValueError(
                f"{name} must hold targets in [0, 1] for binary_cross_entropy, "
                f"got values in [{arr.min()}, {arr.max()}]"
            )
        return _as_2d_float(arr, n_outputs, dtype, name)

    def proba(self, k, out):
        return k.sigmoid(out)

    def predict(self, k, out):
        # sigmoid(z) > 1/2 exactly when z > 0: no transcendental call needed.
        return (out > 0).astype(np.int64)

    def n_correct(self, out, y):
        return ops.n_correct(codes.LOSS_BINARY_CROSS_ENTROPY, out, y)


class CrossEntropy(Loss):
    """Softmax fused in: L = mean(logsumexp(z) - z[y]), dL/dz = (softmax(z) - onehot(y)) / m."""

    name = "cross_entropy"
    fused = True
    link = "softmax"
    is_classifier = True
    min_outputs = 2

    @staticmethod
    def _code(y) -> int:
        """Class indices (m,) or float targets (m, k)."""
        return codes.LOSS_SPARSE_CROSS_ENTROPY if y.ndim == 1 else codes.LOSS_CROSS_ENTROPY

    def value(self, k, out, y, w=NO_WEIGHTS):
        return ops.loss_value(k, self._code(y), out, y, w)

    def gradient(self, k, out, y, grad, w=NO_WEIGHTS):
        ops.loss_gradient(k, self._code(y), out, y, grad, w)
        return grad

    def prepare_targets(self, y, n_outputs, dtype, name="y"):
        arr = _real_array(y, name)
        _check_finite(arr, name)
        if arr.ndim == 1:
            if arr.dtype.kind == "b":
                raise TypeError(f"{name} must hold integer class indices, got booleans")
            if arr.dtype.kind == "f":
                if arr.size and not np.array_equal(arr, np.round(arr)):
                    raise ValueError(
                        f"{name} must hold class indices (whole numbers) for "
                        f"cross_entropy; for probabilities pass an array of "
                        f"shape (n, {n_outputs})"
                    )
            if arr.size and (arr.min() < 0 or arr.max() >= n_outputs):
                raise ValueError(
                    f"{name} must be class indices in [0, {n_outputs}), got "
                    f"values in [{arr.min()}, {arr.max()}]"
                )
            return np.ascontiguousarray(arr, dtype=np.int64)
        if arr.ndim != 2 or arr.shape[1] != n_outputs:
            raise ValueError(
                f"{name} must be class indices of shape (n,) or one-hot rows "
                f"of shape (n, {n_outputs}), got {arr.shape}"
            )
        if arr.size and arr.min() < 0:
            raise ValueError(f"{name} must hold non-negative class probabilities")
        return _converted(arr, dtype, name)

    def proba(self, k, out):
        return k.softmax(out)

    def predict(self, k, out):
        return np.argmax(out, axis=1)

    def n_correct(self, out, y):
        return ops.n_correct(self._code(y), out, y)


class Poisson(Loss):
    """Log link fused in: L = mean(e^z - y z) over all elements, dL/dz = (e^z - y) / size.

    The output layer computes z, the log of the predicted mean, so that the mean e^z is
    positive whatever the weights (scikit-learn's ``MLPRegressor(loss="poisson")``);
    the loss is half the Poisson deviance without its terms constant in z. Targets are
    non-negative counts or rates.
    """

    name = "poisson"
    fused = True
    link = "exp"

    def value(self, k, out, y, w=NO_WEIGHTS):
        return ops.loss_value(k, codes.LOSS_POISSON, out, y, w)

    def gradient(self, k, out, y, grad, w=NO_WEIGHTS):
        ops.loss_gradient(k, codes.LOSS_POISSON, out, y, grad, w)
        return grad

    def prepare_targets(self, y, n_outputs, dtype, name="y"):
        arr = _real_array(y, name)
        _check_finite(arr, name)
        if arr.size and arr.min() < 0:
            raise ValueError(
                f"{name} must be non-negative for the poisson loss (counts or rates), "
                f"got a minimum of {arr.min()}"
            )
        return _as_2d_float(arr, n_outputs, dtype, name)

    def predict(self, k, out):
        with np.errstate(over="ignore"):
            return np.exp(out)


LOSSES: dict[str, type[Loss]] = {
    cls.name: cls for cls in (MSE, BinaryCrossEntropy, CrossEntropy, Poisson)
}


def get_loss(loss: str | Loss) -> Loss:
    """The Loss named ``loss`` ("mse", "binary_cross_entropy", "cross_entropy" or
    "poisson")."""
    if isinstance(loss, Loss):
        return loss
    v.choice(loss, "loss", LOSSES)
    return LOSSES[loss]()
