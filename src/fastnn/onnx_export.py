"""Export fastnn models to ONNX, and a skl2onnx converter for fastnn's estimators.

:func:`to_onnx` turns a :class:`fastnn.MLP`, a fitted :class:`fastnn.MLPClassifier` /
:class:`fastnn.MLPRegressor`, or the command line's saved tabular model into an
``onnx.ModelProto`` that ONNX Runtime (or any ONNX runtime of opset >= 13) runs::

    import onnxruntime as ort
    proto = fastnn.to_onnx(model)
    sess = ort.InferenceSession(proto.SerializeToString())
    out = sess.run(None, {"X": X.astype(model.dtype)})

Importing this module (which ``fastnn.to_onnx`` does on first use) also registers
the estimators with skl2onnx when it is installed, so that a scikit-learn ``Pipeline``
ending in (or containing) a fastnn estimator converts with ``skl2onnx.to_onnx``;
:func:`register_skl2onnx` does it explicitly. onnx, onnxruntime and skl2onnx are
optional: ``pip install 'fastnn-mlp[onnx]'``.

The graph
---------
Input ``"X"``: shape ``(N, n_features)`` with a dynamic batch dimension ``N``, of the
model's dtype (float32 or float64); the tabular model takes float64. ONNX Runtime
refuses inputs of any other dtype (fastnn would convert them): convert first, e.g.
``X.astype(np.float32)``. Like fastnn's own predictions, the graph assumes finite
inputs (fastnn refuses NaN and infinity; the graph does not check).

Each layer is a ``Gemm`` (weights and bias as initializers in the model's dtype), or
for a batch-normalised layer a ``MatMul`` followed by batch normalisation in
inference form with the running statistics, computed as fastnn does: the normalised
value ``(z - running_mean) / sqrt(running_var + eps)`` in float64 (``Cast`` around it
for float32 models) and the affine part ``gamma x_hat + beta`` in the model's dtype.
Dropout is left out (inference). Activations:

=============  =========================================================================
identity       nothing
step           ``Cast(GreaterOrEqual(z, 0))``: 1 where z >= 0 (so step(0) = 1), else 0
sigmoid        ``Sigmoid``
tanh           ``Tanh``
relu           ``Relu``
leaky_relu     ``LeakyRelu(alpha)`` (float32); ``Where(z > 0, z, alpha z)`` (float64:
               ONNX attributes are float32 and ONNX Runtime has no float64 LeakyRelu)
elu            ``Elu(alpha)`` (float32); ``Where(z > 0, z, alpha (exp(min(z, 0)) - 1))``
               (float64, same reasons)
softmax        ``Softmax(axis=1)``
=============  =========================================================================

Every activation fastnn has is expressible; a layer whose activation this module
does not know (one added to fastnn later) is refused with a ValueError naming the
layer and the activation.

Outputs
-------
- :class:`fastnn.MLP`: ``"output"``, the model's :meth:`~fastnn.MLP.decision_function`
  (N, n_outputs) -- the logits for the cross-entropies. binary_cross_entropy adds
  ``"probabilities"`` (sigmoid, (N, n_outputs)) and ``"label"`` (int64 0/1,
  (N, n_outputs), 1 where the logit is > 0); cross_entropy adds ``"probabilities"``
  (softmax, (N, n_classes)) and ``"label"`` (int64 class index (N,), ``ArgMax``:
  the first of tied maxima, as NumPy); poisson adds ``"prediction"`` (e^output, the
  predicted mean, as :meth:`~fastnn.MLP.predict`).
- :class:`fastnn.MLPClassifier`: as skl2onnx's classifiers with ``zipmap=False``:
  ``"label"`` (N,) holding the user's class labels -- int64 for integer, boolean or
  whole-number float labels, string for text labels (``Gather`` on a constant) --
  and ``"probabilities"`` (N, n_classes) as ``predict_proba`` (two columns
  ``[1 - p, p]`` for binary targets). Multilabel: ``"label"`` is the int64 indicator
  matrix (N, n_labels) and ``"probabilities"`` the sigmoid per label.
- :class:`fastnn.MLPRegressor`: ``"variable"`` (N, n_outputs), ``predict``'s values
  (e^z for ``loss="poisson"``), also for one output (``predict`` returns (N,) then;
  skl2onnx's regressors also give (N, 1)).
- the command line's tabular model (``fastnn train --output``): input ``"X"`` float64
  holding the raw feature columns in the order of ``features`` (recorded in the
  model's ``metadata_props``), standardised inside the graph; ``"label"`` (string)
  and ``"probabilities"`` for classification, ``"variable"`` (N, 1) float64 for
  regression.

Inside skl2onnx, the estimators accept float, double and int64 inputs (cast to the
model's dtype) and give outputs of the input's float type (double for double inputs,
else float), as skl2onnx's own converters; classifiers honour skl2onnx's ``zipmap``
option (default: a ZipMap, as for scikit-learn's classifiers).
"""

from __future__ import annotations

import numbers
import sys

import numpy as np

try:
    import onnx
    from onnx import TensorProto, helper, numpy_helper
except ImportError as exc:  # pragma: no cover - exercised only without onnx
    raise ImportError(
        "fastnn.to_onnx needs onnx; install it with `pip install 'fastnn-mlp[onnx]'`"
    ) from exc

from . import registry
from .layers import BatchNorm, Dense, Dropout
from .model import MLP
from .tabular import TabularModel

__all__ = ["to_onnx", "register_skl2onnx", "DEFAULT_OPSET", "MIN_OPSET"]

#: Opset used when ``to_onnx`` is given none: recent enough for every operator used
#: here, old enough for the runtimes of the last years.
DEFAULT_OPSET = 17
#: The oldest opset the graph can be written in (Softmax's row-wise semantics, Squeeze
#: and friends taking their axes as inputs).
MIN_OPSET = 13

_PROTO = {np.dtype(np.float32): TensorProto.FLOAT, np.dtype(np.float64): TensorProto.DOUBLE}
_ACTIVATIONS = (
    "identity",
    "step",
    "sigmoid",
    "tanh",
    "relu",
    "leaky_relu",
    "elu",
    "softmax",
    "gelu",
    "silu",
    "selu",
    "mish",
)


# --- graph builders --------------------------------------------------------------------------


class _Graph:
    """Nodes and initializers of a graph being built, with unique names."""

    def __init__(self):
        self.nodes: list = []
        self.initializers: list = []
        self._used: set[str] = set()

    def name(self, hint: str) -> str:
        name, i = hint, 1
        while name in self._used:
            name = f"{hint}_{i}"
            i += 1
        self._used.add(name)
        return name

    def reserve(self, name: str) -> str:
        """Claim a name chosen by the caller (a graph input or output)."""
        if name in self._used:
            raise ValueError(f"name {name!r} is already used in the graph")
        self._used.add(name)
        return name

    def const(self, hint: str, value) -> str:
        name = self.name(hint)
        arr = np.asarray(value)
        if arr.dtype.kind in "USO":
            tensor = helper.make_tensor(
                name,
                TensorProto.STRING,
                arr.shape,
                [
                    str(s).encode("utf-8")  # type: ignore[misc]
                    for s in arr.ravel()
                ],
            )
        else:
            tensor = numpy_helper.from_array(np.ascontiguousarray(arr), name)
        self.initializers.append(tensor)
        return name

    def op(
        self,
        op_type: str,
        inputs,
        hint: str | None = None,
        *,
        out: str | None = None,
        domain: str = "",
        **attrs,
    ) -> str:
        out = out if out is not None else self.name(hint or op_type.lower())
        self.nodes.append(
            helper.make_node(
                op_type,
                list(inputs),
                [out],
                name=self.name(f"{op_type}_node"),
                domain=domain or None,
                **attrs,
            )
        )
        return out


class _SklGraph(_Graph):
    """The same interface, writing into skl2onnx's scope and container."""

    def __init__(self, scope, container):
        super().__init__()
        self.scope, self.container = scope, container

    def name(self, hint):
        return self.scope.get_unique_variable_name(hint)

    def reserve(self, name):
        return name

    def const(self, hint, value):
        name = self.name(hint)
        arr = np.asarray(value)
        if arr.dtype.kind in "USO":
            self.container.add_initializer(
                name,
                TensorProto.STRING,
                list(arr.shape),
                [str(s).encode("utf-8") for s in arr.ravel()],
            )
        else:
            tensor = numpy_helper.from_array(np.ascontiguousarray(arr), name)
            self.container.add_initializer(name, tensor.data_type, list(arr.shape), tensor)
        return name

    def op(self, op_type, inputs, hint=None, *, out=None, domain="", **attrs):
        out = out if out is not None else self.name(hint or op_type.lower())
        self.container.add_node(
            op_type,
            list(inputs),
            [out],
            op_domain=domain,
            name=self.scope.get_unique_operator_name(op_type),
            **attrs,
        )
        return out


# --- the network -------------------------------------------------------------------------------


def _scalar(value, dtype) -> np.ndarray:
    return np.asarray(value, dtype=dtype)


def _emit_activation(g: _Graph, layer, z: str, dtype, where: str, out=None) -> str:
    act, alpha = layer.activation, float(layer.alpha)
    if act not in _ACTIVATIONS:
        raise ValueError(
            f"{where} has activation {act!r}, which fastnn.to_onnx cannot "
            f"express in ONNX (it knows {', '.join(_ACTIVATIONS)})"
        )
    f64 = dtype == np.float64
    if act == "identity":
        return z if out is None else g.op("Identity", [z], out=out)
    if act == "step":
        ge = g.op("GreaterOrEqual", [z, g.const("zero", _scalar(0, dtype))], "step_ge")
        return g.op("Cast", [ge], "step", out=out, to=_PROTO[dtype])
    if act in ("sigmoid", "tanh", "relu"):
        return g.op(act.capitalize(), [z], act, out=out)
    if act == "softmax":
        return g.op("Softmax", [z], "softmax", out=out, axis=1)
    if act == "leaky_relu":
        if not f64:
            return g.op("LeakyRelu", [z], "leaky_relu", out=out, alpha=alpha)
        pos = g.op("Greater", [z, g.const("zero", _scalar(0, dtype))], "positive")
        neg = g.op("Mul", [z, g.const("alpha", _scalar(alpha, dtype))], "alpha_z")
        return g.op("Where", [pos, z, neg], "leaky_relu", out=out)
    if act in ("gelu", "silu", "selu", "mish"):
        return _emit_modern(g, act, z, dtype, out)
    # elu
    if not f64:
        return g.op("Elu", [z], "elu", out=out, alpha=alpha)
    zero = g.const("zero", _scalar(0, dtype))
    pos = g.op("Greater", [z, zero], "positive")
    e = g.op("Exp", [g.op("Min", [z, zero], "negative_part")], "exp")
    em1 = g.op("Sub", [e, g.const("one", _scalar(1, dtype))], "expm1")
    neg = g.op("Mul", [em1, g.const("alpha", _scalar(alpha, dtype))], "alpha_expm1")
    return g.op("Where", [pos, z, neg], "elu", out=out)


def _emit_modern(g: _Graph, act: str, z: str, dtype, out) -> str:
    """gelu, silu, selu and mish from operators every opset >= 13 has, in the model's
    dtype (gelu's Erf excepted: onnxruntime has none for float64; docs/format.md)."""
    if act == "silu":
        return g.op("Mul", [z, g.op("Sigmoid", [z], "sigmoid")], "silu", out=out)
    if act == "selu":
        zero = g.const("zero", _scalar(0, dtype))
        e = g.op("Exp", [g.op("Min", [z, zero], "negative_part")], "exp")
        em1 = g.op("Sub", [e, g.const("one", _scalar(1, dtype))], "expm1")
        neg = g.op("Mul", [em1, g.const("scale_alpha", _scalar(_SELU_SCALE_ALPHA, dtype))])
        pos = g.op("Mul", [z, g.const("scale", _scalar(registry.SELU_SCALE, dtype))], "scaled")
        positive = g.op("Greater", [z, zero], "positive")
        return g.op("Where", [positive, pos, neg], "selu", out=out)
    if act == "mish":  # softplus = max(z, 0) + log(1 + e^-|z|), without Softplus
        e = g.op("Exp", [g.op("Neg", [g.op("Abs", [z], "abs")], "neg_abs")], "exp_neg_abs")
        one = g.const("one", _scalar(1, dtype))
        log1p = g.op("Log", [g.op("Add", [e, one], "one_plus_e")], "log1p")
        zero = g.const("zero", _scalar(0, dtype))
        softplus = g.op("Add", [g.op("Max", [z, zero], "positive_part"), log1p], "softplus")
        t = g.op("Tanh", [softplus], "tanh_softplus")
        return g.op("Mul", [z, t], "mish", out=out)
    # gelu: onnxruntime has no float64 Erf, so a float64 model's gelu runs in float32.
    f32 = z
    if dtype == np.float64:
        f32 = g.op("Cast", [z], "gelu_f32", to=TensorProto.FLOAT)
    scaled = g.op("Mul", [f32, g.const("sqrt1_2", _scalar(0.5**0.5, np.float32))])
    erf = g.op("Erf", [scaled], "erf")
    half = g.op("Mul", [f32, g.const("half", _scalar(0.5, np.float32))], "half_z")
    one32 = g.const("one_f32", _scalar(1, np.float32))
    r = g.op("Mul", [half, g.op("Add", [erf, one32], "one_plus_erf")], "gelu")
    if dtype == np.float64:
        return g.op("Cast", [r], "gelu", out=out, to=TensorProto.DOUBLE)
    return r if out is None else g.op("Identity", [r], out=out)


_SELU_SCALE_ALPHA = registry.SELU_SCALE * registry.SELU_ALPHA


def _emit_batch_norm(g: _Graph, model: MLP, layer, z: str, i: int) -> str:
    """fastnn's batch_norm_eval: x_hat = (z - mean) * inv_std in float64, rounded once
    to the model's dtype; then gamma x_hat + beta in the model's dtype."""
    dtype = model.dtype
    inv = 1.0 / np.sqrt(layer.running_var.astype(np.float64) + layer.eps)
    zw = z if dtype == np.float64 else g.op("Cast", [z], f"z{i}_f64", to=TensorProto.DOUBLE)
    centred = g.op(
        "Sub",
        [zw, g.const(f"running_mean{i}", layer.running_mean.astype(np.float64))],
        f"centred{i}",
    )
    x_hat = g.op("Mul", [centred, g.const(f"inv_std{i}", inv)], f"x_hat{i}")
    if dtype != np.float64:
        x_hat = g.op("Cast", [x_hat], f"x_hat{i}_f32", to=_PROTO[dtype])
    scaled = g.op("Mul", [x_hat, g.const(f"gamma{i}", layer.gamma.copy())], f"scaled{i}")
    return g.op("Add", [scaled, g.const(f"beta{i}", layer.beta.copy())], f"bn{i}")


def _emit_dense(g: _Graph, model: MLP, layer, x: str, i: int) -> str:
    W = g.const(f"W{i}", layer.W.copy())
    if layer.b is None:
        return g.op("MatMul", [x, W], f"z{i}")
    return g.op("Gemm", [x, W, g.const(f"b{i}", layer.b.copy())], f"z{i}")


# How each layer type is written in ONNX (inference form; dropout is the identity):
# the linear part, then the layer's activation if it has one.
_EMITTERS = {
    Dense: _emit_dense,
    BatchNorm: _emit_batch_norm,
    Dropout: lambda g, model, layer, x, i: x,
}


def _where(model: MLP, i: int) -> str:
    last = i == len(model.layers) - 1
    return f"layer {i} ({'output' if last else 'hidden'} layer, {type(model.layers[i]).__name__})"


def _emit_network(g: _Graph, model: MLP, x: str, out: str | None = None) -> str:
    """The model's decision_function of x (already in the model's dtype)."""
    n = len(model.layers)
    for i, layer in enumerate(model.layers):
        x = _EMITTERS[type(layer)](g, model, layer, x, i)
        if hasattr(layer, "activation") or i == n - 1:
            x = _emit_activation(
                g, layer, x, model.dtype, _where(model, i), out=out if i == n - 1 else None
            )
    return x


def _check_model(model: MLP, what: str) -> None:
    if not (np.isfinite(model.params).all() and np.isfinite(model.buffers).all()):
        raise ValueError(
            f"{what}'s weights are not finite (training diverged with "
            f"rollback=False?): nothing sensible to export"
        )
    for i, layer in enumerate(model.layers):
        if type(layer) not in _EMITTERS:
            raise ValueError(
                f"{_where(model, i)}: fastnn.to_onnx cannot express this layer type in "
                f"ONNX (it knows {', '.join(t.__name__ for t in _EMITTERS)})"
            )
        act = getattr(layer, "activation", "identity")
        if act not in _ACTIVATIONS:
            raise ValueError(
                f"{_where(model, i)} has activation {act!r}, which "
                f"fastnn.to_onnx cannot express in ONNX (it knows "
                f"{', '.join(_ACTIVATIONS)})"
            )


# --- heads: what each kind of object outputs ---------------------------------------------------


def _label_constant(classes) -> np.ndarray:
    """Class labels as an int64 or string array for a Gather (skl2onnx's rule: integer,
    boolean and whole-number float labels become int64, text stays text)."""
    arr = np.asarray(classes)
    if arr.ndim != 1:
        raise ValueError(f"class labels must be one-dimensional, got shape {arr.shape}")
    if arr.dtype.kind in "iub":
        return arr.astype(np.int64)
    if arr.dtype.kind == "f":
        if not (np.isfinite(arr).all() and np.array_equal(arr, np.round(arr))):
            raise ValueError(
                f"class labels {arr.tolist()} are floats that are not whole "
                f"numbers; ONNX labels must be integers or strings (encode "
                f"them, e.g. with str or LabelEncoder, before fitting)"
            )
        return arr.astype(np.int64)
    if arr.dtype.kind in "US" or (arr.dtype.kind == "O" and all(isinstance(c, str) for c in arr)):
        return arr.astype(str)
    if arr.dtype.kind == "O" and all(isinstance(c, numbers.Integral) for c in arr):
        return arr.astype(np.int64)
    raise ValueError(
        f"class labels of type {arr.dtype} ({arr[:3].tolist()}...) cannot "
        f"be ONNX labels: use integers or strings"
    )


def _y_type(est) -> str:
    return est._label_binarizer.y_type_


def _emit_cast(g: _Graph, x: str, from_dtype, to_proto, out: str | None) -> str:
    if _PROTO[np.dtype(from_dtype)] == to_proto:
        return x if out is None else g.op("Identity", [x], out=out)
    return g.op("Cast", [x], "cast", out=out, to=to_proto)


def _emit_classifier_head(g, est, z, label_out, proba_out, proba_proto) -> None:
    dtype = est._model.dtype
    y_type = _y_type(est)
    if y_type == "multiclass":
        p = g.op("Softmax", [z], "softmax", axis=1)
        idx = g.op("ArgMax", [z], "argmax", axis=1, keepdims=0)
    elif y_type == "binary":
        p1 = g.op("Sigmoid", [z], "sigmoid")
        p0 = g.op("Sub", [g.const("one", _scalar(1, dtype)), p1], "one_minus_p")
        p = g.op("Concat", [p0, p1], "proba", axis=1)
        pos = g.op("Greater", [z, g.const("zero", _scalar(0, dtype))], "positive")
        idx = g.op(
            "Reshape",
            [
                g.op("Cast", [pos], "positive_int", to=TensorProto.INT64),
                g.const("flat", np.array([-1], np.int64)),
            ],
            "label_index",
        )
    else:  # multilabel-indicator
        p = g.op("Sigmoid", [z], "sigmoid")
        pos = g.op("Greater", [z, g.const("zero", _scalar(0, dtype))], "positive")
        g.op("Cast", [pos], out=label_out, to=TensorProto.INT64)
        _emit_cast(g, p, dtype, proba_proto, proba_out)
        return
    classes = est.classes_
    if len(classes) == 1:  # a single-class fit (as scikit-learn's): every index is it
        classes = np.repeat(classes, 2)
    g.op("Gather", [g.const("classes", _label_constant(classes)), idx], out=label_out, axis=0)
    _emit_cast(g, p, dtype, proba_proto, proba_out)


def _n_proba_columns(est) -> int:
    """predict_proba's columns: one per class, two for a single class (scikit-learn
    fits it as a binary target)."""
    return max(2, len(est.classes_)) if _y_type(est) == "binary" else len(est.classes_)


def _label_proto(est) -> int:
    if _y_type(est) == "multilabel-indicator":
        return TensorProto.INT64
    return (
        TensorProto.STRING if _label_constant(est.classes_).dtype.kind == "U" else TensorProto.INT64
    )


def _n_label_columns(est) -> int | None:
    return len(est.classes_) if _y_type(est) == "multilabel-indicator" else None


# --- what can be exported -------------------------------------------------------------------


def _kind(obj) -> str:
    if isinstance(obj, MLP):
        return "mlp"
    cls = type(obj)
    # Only an imported fastnn.estimators can have made obj: scikit-learn is not imported
    # for a bare MLP.
    estimators = sys.modules.get("fastnn.estimators")
    if estimators is not None and isinstance(
        obj, (estimators.MLPClassifier, estimators.MLPRegressor)
    ):
        from sklearn.utils.validation import check_is_fitted

        check_is_fitted(obj)  # NotFittedError, a ValueError, naming the estimator
        return "classifier" if isinstance(obj, estimators.MLPClassifier) else "regressor"
    if isinstance(obj, TabularModel):
        return "tabular"
    raise TypeError(
        f"fastnn.to_onnx exports a fastnn.MLP, a fitted fastnn.MLPClassifier "
        f"or MLPRegressor, or a model saved by `fastnn train`; got "
        f"{cls.__module__}.{cls.__qualname__}"
    )


def _check_opset(opset) -> int:
    newest = onnx.defs.onnx_opset_version()
    if opset is None:
        return min(DEFAULT_OPSET, newest)
    if isinstance(opset, bool) or not isinstance(opset, numbers.Integral):
        raise TypeError(f"opset must be an int, got {opset!r}")
    if not MIN_OPSET <= int(opset) <= newest:
        raise ValueError(
            f"opset must be in [{MIN_OPSET}, {newest}] (the newest this onnx "
            f"{onnx.__version__} knows), got {opset}"
        )
    return int(opset)


def _tensor(name, proto, shape):
    return helper.make_tensor_value_info(name, proto, shape)


def to_onnx(
    model_or_estimator, *, opset: int | None = None, name: str | None = None
) -> onnx.ModelProto:
    """The ONNX graph of a fastnn model, as an ``onnx.ModelProto``.

    Parameters
    ----------
    model_or_estimator : fastnn.MLP, fitted fastnn.MLPClassifier / MLPRegressor, a
        fitted scikit-learn Pipeline ending in one (converted by skl2onnx: one input per
        column when it starts with a ColumnTransformer over named columns, as the
        models ``fastnn train --output`` saves), or the older tabular model
    opset : int, optional
        ONNX opset of the default domain, in [13, the newest the installed onnx knows];
        default :data:`DEFAULT_OPSET` (17).
    name : str, optional
        The graph's name (default: the object's class name).

    Returns
    -------
    onnx.ModelProto
        Input ``"X"`` and outputs as described in :mod:`fastnn.onnx_export`; checked
        with ``onnx.checker.check_model``. Save it with ``onnx.save(proto, path)``.

    Raises
    ------
    TypeError
        For any other object, or a non-int opset.
    ValueError
        For an unfitted estimator (sklearn's NotFittedError), an opset out of range, a
        model whose weights are not finite, class labels ONNX cannot hold (floats that
        are not whole numbers), or an activation ONNX cannot express.
    """
    if _is_sklearn_pipeline(model_or_estimator):
        return _pipeline_to_onnx(model_or_estimator, _check_opset(opset), name)
    kind = _kind(model_or_estimator)
    opset = _check_opset(opset)
    if name is not None and not isinstance(name, str):
        raise TypeError(f"name must be a str, got {type(name).__name__}")
    obj = model_or_estimator
    model = obj if kind == "mlp" else obj.model if kind == "tabular" else obj._model
    with model._guard.use("exporting to ONNX"):
        _check_model(model, "the model")
        g = _Graph()
        graph_input, outputs, meta = _build(g, kind, obj, model)
    dtype_note = "float64" if kind == "tabular" else model.dtype.name
    graph = helper.make_graph(
        g.nodes, name or type(obj).__name__, [graph_input], outputs, initializer=g.initializers
    )
    graph.doc_string = (
        f"fastnn {type(obj).__name__} {model.layer_sizes}, loss "
        f"{model.loss.name}; input X ({dtype_note})"
    )
    opsets = [helper.make_opsetid("", opset)]
    proto = helper.make_model(
        graph, opset_imports=opsets, producer_name="fastnn", producer_version=_version()
    )
    proto.ir_version = helper.find_min_ir_version_for(opsets)
    helper.set_model_props(proto, meta)
    onnx.checker.check_model(proto)
    return proto


def _is_sklearn_pipeline(obj) -> bool:
    pipeline = sys.modules.get("sklearn.pipeline")
    return pipeline is not None and isinstance(obj, pipeline.Pipeline)


def _pipeline_inputs(pipe) -> list:
    """skl2onnx's initial types of a fitted Pipeline: one input per DataFrame column
    when it starts with a ColumnTransformer over named columns (strings for the columns
    its encoders read, float32 for the others, as ``fastnn train`` reads a CSV), else
    one float32 matrix "X" of ``n_features_in_`` columns. float32, not float64: ONNX
    Runtime's Imputer and Scaler have no float64 kernels, so the preprocessing runs in
    float32 in the exported graph."""
    from skl2onnx.common.data_types import FloatTensorType, StringTensorType
    from sklearn.compose import ColumnTransformer
    from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder

    first = pipe.steps[0][1]
    names = getattr(first, "feature_names_in_", None)
    if not isinstance(first, ColumnTransformer) or names is None:
        return [("X", FloatTensorType([None, int(pipe.n_features_in_)]))]
    text: set[object] = set()  # names of the encoded (string) columns
    for _, transformer, cols in first.transformers_:
        steps = getattr(transformer, "steps", [(None, transformer)])
        if any(isinstance(t, (OneHotEncoder, OrdinalEncoder)) for _, t in steps):
            text.update(cols if not isinstance(cols, str) else [cols])
    return [
        (str(c), StringTensorType([None, 1]) if c in text else FloatTensorType([None, 1]))
        for c in names
    ]


def _string_missing_values(pipe):
    """A copy of ``pipe`` whose imputers of text columns take "" as the missing value:
    skl2onnx converts an imputer of strings only with a string missing value (pandas
    reads an empty text cell as NaN). The ONNX model's string inputs use "" for a
    missing cell; fitted statistics are unchanged."""
    import copy

    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer

    first = pipe.steps[0][1]
    if not isinstance(first, ColumnTransformer):
        return pipe
    text = {name for name, kind in _input_kinds(pipe).items() if kind == "string"}
    pipe = copy.deepcopy(pipe)
    first = pipe.steps[0][1]
    for _, transformer, cols in first.transformers_:
        cols = [cols] if isinstance(cols, str) else list(cols)
        if not cols or not set(cols) <= text:
            continue
        for _, step in getattr(transformer, "steps", [(None, transformer)]):
            if isinstance(step, SimpleImputer) and not isinstance(step.missing_values, str):
                step.missing_values = ""
    return pipe


def _input_kinds(pipe) -> dict:
    """name -> "string" / "float" of a ColumnTransformer-led pipeline's input columns."""
    return {
        name: ("string" if type(t).__name__ == "StringTensorType" else "float")
        for name, t in _pipeline_inputs(pipe)
    }


def _pipeline_to_onnx(pipe, opset: int, name: str | None):
    """A scikit-learn Pipeline holding a fastnn estimator, through skl2onnx (whose
    converters for fastnn's estimators :func:`register_skl2onnx` registers)."""
    try:
        import skl2onnx
    except ImportError as exc:
        raise ImportError(
            "exporting a Pipeline needs skl2onnx; install it with `pip install 'fastnn-mlp[onnx]'`"
        ) from exc
    from sklearn.utils.validation import check_is_fitted

    check_is_fitted(pipe)
    register_skl2onnx()
    pipe = _string_missing_values(pipe)
    options = {}
    final = pipe.steps[-1][1]
    estimators = sys.modules.get("fastnn.estimators")
    if estimators is not None and isinstance(final, estimators.MLPClassifier):
        options = {id(final): {"zipmap": False}}  # "probabilities" as a plain tensor
    proto = skl2onnx.to_onnx(
        pipe,
        initial_types=_pipeline_inputs(pipe),
        target_opset=opset,
        options=options,
        naming=name or "Pipeline",
    )
    onnx.checker.check_model(proto)
    return proto


def _version() -> str:
    from . import __version__

    return __version__


def _build(g: _Graph, kind: str, obj, model: MLP):
    dtype, proto_t = model.dtype, _PROTO[model.dtype]
    n_in, n_out = model.n_features_in, model.n_outputs
    meta = {"fastnn.kind": kind, "fastnn.loss": model.loss.name, "fastnn.dtype": dtype.name}
    if kind == "tabular":
        return _build_tabular(g, obj, model, meta)
    x = g.reserve("X")
    graph_input = _tensor(x, proto_t, ["N", n_in])
    if kind == "mlp":
        loss = model.loss.name
        z = _emit_network(g, model, x, out=g.reserve("output"))
        outputs = [_tensor("output", proto_t, ["N", n_out])]
        if loss == "binary_cross_entropy":
            g.op("Sigmoid", [z], out=g.reserve("probabilities"))
            pos = g.op("Greater", [z, g.const("zero", _scalar(0, dtype))], "positive")
            g.op("Cast", [pos], out=g.reserve("label"), to=TensorProto.INT64)
            outputs += [
                _tensor("probabilities", proto_t, ["N", n_out]),
                _tensor("label", TensorProto.INT64, ["N", n_out]),
            ]
        elif loss == "poisson":
            g.op("Exp", [z], out=g.reserve("prediction"))
            outputs.append(_tensor("prediction", proto_t, ["N", n_out]))
        elif loss == "cross_entropy":
            g.op("Softmax", [z], out=g.reserve("probabilities"), axis=1)
            g.op("ArgMax", [z], out=g.reserve("label"), axis=1, keepdims=0)
            outputs += [
                _tensor("probabilities", proto_t, ["N", n_out]),
                _tensor("label", TensorProto.INT64, ["N"]),
            ]
        return graph_input, outputs, meta
    if kind == "regressor":
        if model.loss.name == "poisson":  # predict is e^z
            g.op("Exp", [_emit_network(g, model, x)], out=g.reserve("variable"))
        else:
            _emit_network(g, model, x, out=g.reserve("variable"))
        return graph_input, [_tensor("variable", proto_t, ["N", n_out])], meta
    # classifier
    z = _emit_network(g, model, x)
    label, proba = g.reserve("label"), g.reserve("probabilities")
    _emit_classifier_head(g, obj, z, label, proba, proto_t)
    k = _n_label_columns(obj)
    outputs = [
        _tensor(label, _label_proto(obj), ["N"] if k is None else ["N", k]),
        _tensor(proba, proto_t, ["N", _n_proba_columns(obj)]),
    ]
    meta["fastnn.classes"] = repr(np.asarray(obj.classes_).tolist())
    return graph_input, outputs, meta


def _build_tabular(g: _Graph, tab, model: MLP, meta: dict):
    """fastnn.tabular.TabularModel: standardise (float64), the network, then labels or
    the regression value rescaled in float64."""
    dtype = model.dtype
    x = g.reserve("X")
    graph_input = _tensor(x, TensorProto.DOUBLE, ["N", len(tab.features)])
    centred = g.op("Sub", [x, g.const("x_mean", tab.x_mean.astype(np.float64))], "centred")
    std = g.op("Div", [centred, g.const("x_scale", tab.x_scale.astype(np.float64))], "standardised")
    std = _emit_cast(g, std, np.float64, _PROTO[dtype], None)
    z = _emit_network(g, model, std)
    meta.update(
        {
            "fastnn.features": ",".join(tab.features),
            "fastnn.target": tab.target,
            "fastnn.task": tab.task,
        }
    )
    if tab.task == "classify":
        label, proba = g.reserve("label"), g.reserve("probabilities")
        g.op("Softmax", [z], out=proba, axis=1)
        idx = g.op("ArgMax", [z], "argmax", axis=1, keepdims=0)
        g.op(
            "Gather",
            [g.const("classes", np.asarray(tab.classes, dtype=str)), idx],
            out=label,
            axis=0,
        )
        meta["fastnn.classes"] = repr(list(tab.classes))
        return (
            graph_input,
            [
                _tensor(label, TensorProto.STRING, ["N"]),
                _tensor(proba, _PROTO[dtype], ["N", model.n_outputs]),
            ],
            meta,
        )
    first = z
    if model.n_outputs != 1:
        first = g.op("Gather", [z, g.const("first", np.array([0], np.int64))], "first", axis=1)
    first = _emit_cast(g, first, dtype, TensorProto.DOUBLE, None)
    scaled = g.op("Mul", [g.const("y_scale", np.float64(tab.y_scale)), first], "scaled")
    out = g.reserve("variable")
    g.op("Add", [g.const("y_mean", np.float64(tab.y_mean)), scaled], out=out)
    return graph_input, [_tensor(out, TensorProto.DOUBLE, ["N", 1])], meta


# --- skl2onnx --------------------------------------------------------------------------------


def _skl_types():
    from skl2onnx.common.data_types import (
        DoubleTensorType,
        FloatTensorType,
        Int64TensorType,
        StringTensorType,
    )

    return DoubleTensorType, FloatTensorType, Int64TensorType, StringTensorType


def _skl_check_input(operator):
    from skl2onnx.common.utils import check_input_and_output_numbers

    Double, Float, Int64, _ = _skl_types()
    check_input_and_output_numbers(operator, input_count_range=1, output_count_range=[1, 2])
    t = operator.inputs[0].type
    if not isinstance(t, (Double, Float, Int64)):
        raise TypeError(
            f"{type(operator.raw_operator).__name__} takes a float, double or "
            f"int64 tensor, got {type(t).__name__}"
        )
    return Double if isinstance(t, Double) else Float


def _skl_shape_classifier(operator):
    est = operator.raw_operator
    out_t = _skl_check_input(operator)
    _, _, Int64, String = _skl_types()
    N = operator.inputs[0].get_first_dimension()
    k = _n_label_columns(est)
    label_t = String if _label_proto(est) == TensorProto.STRING else Int64
    operator.outputs[0].type = label_t(shape=[N] if k is None else [N, k])
    if len(operator.outputs) > 1:
        operator.outputs[1].type = out_t(shape=[N, _n_proba_columns(est)])


def _skl_shape_regressor(operator):
    out_t = _skl_check_input(operator)
    N = operator.inputs[0].get_first_dimension()
    operator.outputs[0].type = out_t(shape=[N, operator.raw_operator._model.n_outputs])


def _skl_prepare(scope, operator, container):
    est = operator.raw_operator
    if container.target_opset < MIN_OPSET:
        raise RuntimeError(
            f"fastnn's {type(est).__name__} needs target_opset >= "
            f"{MIN_OPSET}, got {container.target_opset}"
        )
    model = est._model
    _check_model(model, f"the {type(est).__name__}")
    g = _SklGraph(scope, container)
    x = operator.inputs[0].full_name
    Double = _skl_types()[0]
    in_t = operator.inputs[0].type
    in_proto = (
        TensorProto.DOUBLE
        if isinstance(in_t, Double)
        else (TensorProto.FLOAT if isinstance(in_t, _skl_types()[1]) else TensorProto.INT64)
    )
    if in_proto != _PROTO[model.dtype]:
        x = g.op("Cast", [x], "cast_input", to=_PROTO[model.dtype])
    out_proto = TensorProto.DOUBLE if isinstance(in_t, Double) else TensorProto.FLOAT
    return est, model, g, x, out_proto


def _skl_convert_classifier(scope, operator, container):
    est, model, g, x, out_proto = _skl_prepare(scope, operator, container)
    with model._guard.use("exporting to ONNX"):
        z = _emit_network(g, model, x)
        proba = (
            operator.outputs[1].full_name if len(operator.outputs) > 1 else g.name("probabilities")
        )
        _emit_classifier_head(g, est, z, operator.outputs[0].full_name, proba, out_proto)


def _skl_convert_regressor(scope, operator, container):
    est, model, g, x, out_proto = _skl_prepare(scope, operator, container)
    with model._guard.use("exporting to ONNX"):
        z = _emit_network(g, model, x)
        if model.loss.name == "poisson":  # predict is e^z
            z = g.op("Exp", [z], "mean")
        _emit_cast(g, z, model.dtype, out_proto, operator.outputs[0].full_name)


_REGISTERED = False


def register_skl2onnx() -> None:
    """Register converters for fastnn.MLPClassifier and MLPRegressor with skl2onnx.

    Done when this module is imported (``import fastnn.onnx_export``, or the first
    ``fastnn.to_onnx``) if scikit-learn and skl2onnx are installed; calling it again
    does nothing. Raises ImportError naming the extra when skl2onnx is missing.
    """
    global _REGISTERED
    if _REGISTERED:
        return
    try:
        from skl2onnx import update_registered_converter
    except ImportError as exc:
        raise ImportError(
            "registering fastnn's estimators with skl2onnx needs skl2onnx; "
            "install it with `pip install 'fastnn-mlp[onnx]'`"
        ) from exc
    from .estimators import MLPClassifier, MLPRegressor

    update_registered_converter(
        MLPClassifier,
        "FastnnMLPClassifier",
        _skl_shape_classifier,
        _skl_convert_classifier,
        options={"zipmap": [True, False, "columns"], "nocl": [False]},
    )
    update_registered_converter(
        MLPRegressor, "FastnnMLPRegressor", _skl_shape_regressor, _skl_convert_regressor
    )
    _REGISTERED = True


def _register_if_available() -> None:
    import importlib.util

    if importlib.util.find_spec("skl2onnx") is None or importlib.util.find_spec("sklearn") is None:
        return
    register_skl2onnx()


_register_if_available()
