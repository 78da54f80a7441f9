"""The sequential multi-layer perceptron: a layer list over flat parameter buffers.

The model is its layers (:mod:`fastnn.layers`: each owns its forward and backward),
the flat buffers they live in, the loss, and the loops that chain the layers. The
``layer_sizes`` form builds, per hidden layer::

    x --Dense(W, b)--> g(z) = a [--Dropout-->] next layer
    x --Dense(W, no bias)--> z --BatchNorm(gamma, beta)--> g(.) = a [--Dropout-->] ...

and a Dense output layer.

Memory layout (:func:`fastnn.layers.layout`, the one rule): all trainable numbers of
a model live in ONE contiguous buffer ``model.params``; layers hold views into it.
The order is every dense layer's weight matrix ``W`` (row-major, (n_in, n_out))
first, then every layer's other parameters in layer order (a dense layer's bias
``b``, a batch normalisation's ``gamma`` and ``beta``). L2 decay of weights only is
therefore the slice ``params[:n_weights]``. ``model.grads`` has the same layout;
``model.buffers`` holds the batch-norm running statistics (not trained, saved with
the model).

Workspaces (activations and their gradients) are allocated once per batch size and
reused, so a training step allocates no array in steady state.

Threads. One model may be used from many threads at once (a model served by a
threaded web server): inference (``predict``, ``predict_proba``,
``decision_function``, ``evaluate``, ``score``) runs from any number of threads at
once, each call on workspaces lent to it alone, and gives every thread the answer it
would get alone. Training and whatever changes the parameters or layers (``fit``,
``train_epoch``, ``train_step``, ``set_state``, ``reset_parameters``, ``freeze``,
``replace_output``...) runs in one thread at a time: from another thread, inference
and training raise RuntimeError while it runs (the training thread itself, e.g. its
callbacks, may predict), and it waits for the inference calls already under way
before it changes anything. See :mod:`fastnn._guard`.

Input rule. ``X`` may hold any real dtype (bool, int, float); it is converted once per
call to the model's dtype (float32 or float64) -- a float64 array given to a float32
model is rounded to float32, an int array is converted. Complex, object and string
arrays are refused. NaN and infinity are refused (after conversion, so values too
large for float32 are caught too). Kernels only ever see the model's dtype.

Sparse input. ``X`` may be a SciPy sparse matrix or array (``csr_matrix``,
``csr_array``, CSC, COO and the other formats) in every method that takes ``X``.
CSR input of the model's dtype is used as given; other formats are converted to CSR
(a copy of the non-zeros, never a dense copy), other dtypes copied in the model's.
The first layer, which must be a :class:`Dense` layer, reads the CSR rows of each
batch (``csr_dense_forward`` / ``csr_dense_backward``, docs/spec.md §2.1), so a batch
costs O(nnz(batch) n_out) in that layer; the rest of the network is unchanged.
Training on CSR input runs the step-by-step path with the backend's compiled csr
kernels (the whole-epoch kernels read dense X only); inference runs in chunks of rows
with no dense copy of any chunk.
"""

from __future__ import annotations

import math
import numbers
import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import numpy as np

from . import _epoch, _threads
from . import _validation as v
from ._backend import backend as _get_backend
from ._backend import default_backend_name
from ._guard import TrainingGuard, trains, uses
from ._kernels.codes import ACTIVATION_CODES, DEFAULT_ALPHA
from ._metrics import regression_scores
from ._validation import all_finite as _all_finite
from ._validation import check_dtype, check_random_state, check_X
from .initializers import DISTRIBUTIONS, INITIALIZERS, default_init
from .layers import (
    BatchNorm,
    Context,
    CSRRows,
    Dense,
    Dropout,
    Layer,
    chain,
    layer_from_config,
    layout,
    legacy_configs,
)
from .losses import NO_WEIGHTS, Loss, check_sample_weight, get_loss
from .optim import DivergenceError, Optimizer
from .training import fit as _training_fit

__all__ = ["MLP", "Dense", "check_X", "check_random_state"]

ACTIVATIONS = tuple(ACTIVATION_CODES)


# --- argument helpers ------------------------------------------------------------------


def _physical_memory() -> int | None:
    """Bytes of physical memory (POSIX), None where the system does not say."""
    try:
        pages, size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None
    return pages * size if pages > 0 and size > 0 else None


def _short_sizes(sizes) -> str:
    text = str(list(sizes))
    return text if len(text) <= 80 else text[:77] + "...]"


def _per_layer(value, name, n, check):
    """A scalar setting repeated n times, or a sequence of exactly n settings, checked."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        return [check(value, name) for _ in range(n)]
    if len(value) != n:
        raise ValueError(
            f"{name} must be one value or a list of {n} (one per hidden layer), got {len(value)}"
        )
    return [check(x, f"{name}[{i}]") for i, x in enumerate(value)]


def _activation(value, name):
    return v.choice(value, name, ACTIVATIONS)


def _rate(value, name):
    return v.scalar(value, name, low=0, high=1, high_open=True)


# --- workspaces --------------------------------------------------------------------------


class _TrainSpace:
    """Buffers of one training step for batch size m (allocated once, reused): each
    layer's own (``Layer.train_space``), the gathered batch and dL/d(output)."""

    def __init__(self, model, m):
        dt = model.dtype
        self.m = m
        self._xb_shape = ((m, model.n_features_in), dt)
        self._xb: np.ndarray | None = None  # allocated on first use (never for CSR input)
        self.yb = {}
        self.layers = [layer.train_space(m, dt) for layer in model.layers]
        self.inputs: list[Any] = [None] * len(model.layers)  # each layer's input, by forward
        self.g = np.empty((m, model.n_outputs), dt)

    @property
    def xb(self) -> np.ndarray:
        if self._xb is None:
            self._xb = np.empty(*self._xb_shape)
        return self._xb

    def target_buffer(self, y):
        key = (y.shape[1:], y.dtype)
        buf = self.yb.get(key)
        if buf is None:
            buf = self.yb[key] = np.empty((self.m, *y.shape[1:]), y.dtype)
        return buf


class _EvalSpace:
    """Buffers of one inference pass over m rows (each layer's ``eval_space``)."""

    def __init__(self, model, m):
        self.m = m
        self.layers = [layer.eval_space(m, model.dtype) for layer in model.layers]


class _EvalPool:
    """Inference workspaces, each lent to one call at a time (calls from several
    threads never share one); up to ``limit`` returned ones are kept for reuse, the
    least recently returned dropped first, so memory stays bounded whatever the
    number of threads."""

    def __init__(self, limit):
        self.limit = limit
        self._free: list[_EvalSpace] = []  # least recently returned first
        self._lock = threading.Lock()

    def take(self, model, m) -> _EvalSpace:
        with self._lock:
            free = self._free
            for i in range(len(free) - 1, -1, -1):
                if free[i].m == m:
                    return free.pop(i)
        return _EvalSpace(model, m)

    def give_back(self, ws: _EvalSpace) -> None:
        with self._lock:
            self._free.append(ws)
            if len(self._free) > self.limit:
                del self._free[0]

    def sizes(self) -> list[int]:
        """Row counts of the workspaces kept (least recently returned first)."""
        with self._lock:
            return [ws.m for ws in self._free]


# --- the model -----------------------------------------------------------------------------


class MLP:
    """A sequential multi-layer perceptron of dense layers.

    Parameters
    ----------
    layer_sizes : sequence of int, or list of layers
        ``(n_features, hidden_1, ..., hidden_k, n_outputs)``, at least two entries:
        dense layers with the activations, dropout and batch normalisation given by
        the next arguments. Or a list of :mod:`fastnn.layers` layers
        (``[Dense(4, 16, "relu"), Dropout(0.2), Dense(16, 3)]``; the last one a
        :class:`~fastnn.layers.Dense`), which then carry their own settings: the
        model builds its own copies (``model.layers``). The parameters and their
        gradients must fit in the machine's physical memory (checked before
        anything is allocated).
    activation : str or list of str, default "relu"
        Hidden-layer activation, one for all or one per hidden layer: a name of
        :data:`fastnn.registry.ACTIVATIONS` ("relu", "gelu", "tanh"...; docs/spec.md §3).
    loss : {"mse", "binary_cross_entropy", "cross_entropy", "poisson"}, default "mse"
        The cross-entropies are fused with the output activation (sigmoid / softmax):
        the output layer computes logits; "poisson" with its log link: the output
        layer computes the log of the mean, ``predict`` returns e^z (see
        :mod:`fastnn.losses`).
    output_activation : str or None
        For "mse", the output layer's activation (default "identity"). For the fused
        losses only None or the fused activation ("sigmoid" / "softmax" / "exp") is
        accepted.
    dropout : float or list of float, default 0
        Drop rate of inverted dropout after each hidden layer, in [0, 1).
    batch_norm : bool or list of bool, default False
        Batch normalisation before each hidden layer's activation.
    activation_alpha : float or list of float or None
        alpha of leaky_relu (default 0.01) and elu (default 1.0) hidden layers.
    init : {"auto", "he", "kaiming", "xavier", "glorot", "lecun"}, default "auto"
        "auto": each activation's own (its registry row's ``init``: He for the relu
        family, gelu, silu and mish, LeCun for selu, Xavier for the others).
    init_distribution : {"normal", "uniform"}, default "normal"
    bn_momentum, bn_eps : float
        Running statistics move by ``bn_momentum`` per step; ``bn_eps`` is added to
        the variance.
    dtype : float32 or float64, default float32
    backend : {"numpy", "numba", "cython"} or None
        Which kernels run the model (None: ``fastnn.default_backend_name()``).
    random_state : None, int, numpy SeedSequence or Generator
        Seeds the initial weights, the shuffling, the validation split and the dropout
        masks (four independent streams).
    n_threads : int or None, default None
        Threads of the whole-epoch training kernel (``train_epoch``, ``fit``): the
        tiles of its large matrix products run side by side, BLAS's own pool held at
        one thread meanwhile; products too small to be cut run on one thread. The
        results are the same for every count. None: every core the process may use
        without oversubscribing (CPU affinity, the cgroup CPU quota, the BLAS and
        OpenMP limits set by ``OMP_NUM_THREADS``/``OPENBLAS_NUM_THREADS`` or
        threadpoolctl, as joblib and Dask workers do). A setting of this process:
        neither saved nor pickled.

    Examples
    --------
    >>> import fastnn
    >>> net = fastnn.MLP([2, 16, 3], loss="cross_entropy", backend="numpy",
    ...                  random_state=0)
    >>> net.n_params
    99
    """

    def __init__(
        self,
        layer_sizes: Sequence[int] | Sequence[Layer],
        activation="relu",
        *,
        loss="mse",
        output_activation: str | None = None,
        dropout=0.0,
        batch_norm=False,
        activation_alpha=None,
        init: str = "auto",
        init_distribution: str = "normal",
        bn_momentum: float = 0.1,
        bn_eps: float = 1e-5,
        dtype="float32",
        backend: str | None = None,
        random_state=None,
        n_threads: int | None = None,
    ):
        self._guard = TrainingGuard("this MLP")
        self.n_threads = n_threads
        self.loss: Loss = get_loss(loss)
        self.init = v.choice(init, "init", ("auto",) + INITIALIZERS)
        self.init_distribution = v.choice(init_distribution, "init_distribution", DISTRIBUTIONS)
        self.dtype = check_dtype(dtype)
        if _is_layer_list(layer_sizes):
            given = dict(
                activation=activation != "relu",
                dropout=_given(dropout),
                batch_norm=_given(batch_norm),
                activation_alpha=activation_alpha is not None,
                output_activation=output_activation is not None,
                bn_momentum=bn_momentum != 0.1,
                bn_eps=bn_eps != 1e-5,
            )
            if any(given.values()):
                names = ", ".join(k for k, g in given.items() if g)
                raise TypeError(
                    f"with a list of layers, {names} must be set on the layers "
                    f"themselves (e.g. Dense(16, 8, 'gelu'), Dropout(0.2), BatchNorm())"
                )
            layers = chain(list(layer_sizes), "layer_sizes")
            self._check_output_layer(self.loss, layers[-1])
        else:
            layers = self._layers_from_sizes(
                layer_sizes,
                activation,
                output_activation,
                dropout,
                batch_norm,
                activation_alpha,
                bn_momentum,
                bn_eps,
            )
        self._check_memory(layers, self.dtype)
        self.set_backend(backend)
        seeds = check_random_state(random_state).spawn(4)
        self.rngs = {
            name: np.random.default_rng(s)
            for name, s in zip(("init", "shuffle", "split", "dropout"), seeds)
        }
        self._draw_dropout_key()
        self.optimizer: Optimizer | None = None
        self.history = None
        self._build(layers)
        self.reset_parameters()

    def _layers_from_sizes(
        self,
        layer_sizes,
        activation,
        output_activation,
        dropout,
        batch_norm,
        activation_alpha,
        bn_momentum,
        bn_eps,
    ) -> list[Layer]:
        """The layers of the ``layer_sizes`` form: per hidden layer a Dense (without bias
        and activation when batch-normalised), a BatchNorm, a Dropout; a Dense output."""
        sizes = self._check_sizes(layer_sizes)
        n_hidden = len(sizes) - 2
        acts = _per_layer(activation, "activation", n_hidden, _activation)
        rates = _per_layer(dropout, "dropout", n_hidden, _rate)
        bns = _per_layer(batch_norm, "batch_norm", n_hidden, v.boolean)
        if activation_alpha is None:
            alphas = [DEFAULT_ALPHA.get(a, 0.0) for a in acts]
        else:
            alphas = _per_layer(activation_alpha, "activation_alpha", n_hidden, v.scalar)
        out_act = self._check_output_activation(self.loss, output_activation, sizes[-1])
        momentum = v.scalar(bn_momentum, "bn_momentum", low=0, high=1)
        eps = v.scalar(bn_eps, "bn_eps", low=0, low_open=True)
        layers: list[Layer] = []
        for i in range(n_hidden):
            n_in, n = sizes[i], sizes[i + 1]
            if bns[i]:
                layers.append(Dense(n_in, n, bias=False))
                layers.append(BatchNorm(n, acts[i], alpha=alphas[i], momentum=momentum, eps=eps))
            else:
                layers.append(Dense(n_in, n, acts[i], alpha=alphas[i]))
            if rates[i]:
                layers.append(Dropout(rates[i], n))
        layers.append(Dense(sizes[-2], sizes[-1], out_act))
        return chain(layers)

    def _draw_dropout_key(self):
        """The dropout masks' 64-bit seed, drawn once from the dropout stream, and the
        count of training forwards run so far (docs/spec.md §7)."""
        self._dropout_seed = int(self.rngs["dropout"].integers(0, 2**64, dtype=np.uint64))
        self._dropout_step = 0

    @property
    def n_threads(self) -> int | None:
        """Threads of the whole-epoch kernel (None: chosen per call; see the class)."""
        return self._n_threads

    @n_threads.setter
    def n_threads(self, value) -> None:
        self._n_threads = _threads.check_n_threads(value)

    # --- construction -----------------------------------------------------------------
    @staticmethod
    def _check_sizes(layer_sizes):
        if isinstance(layer_sizes, (str, bytes)) or not isinstance(layer_sizes, Sequence):
            raise TypeError(
                "layer_sizes must be a sequence of ints (n_features, hidden..., "
                f"n_outputs), got {layer_sizes!r}"
            )
        if len(layer_sizes) < 2:
            raise ValueError(
                "layer_sizes needs at least 2 entries (n_features and "
                f"n_outputs), got {list(layer_sizes)}"
            )
        return [v.integer(s, f"layer_sizes[{i}]", low=1) for i, s in enumerate(layer_sizes)]

    @staticmethod
    def _check_memory(layers, dtype):
        """Refuse, before allocating, a network whose parameters and gradients alone
        need more than the machine's physical memory (or 2**62 bytes where that is
        unknown): NumPy would fail with a message that names no argument, or the
        system would start swapping or kill the process during training."""
        plan = layout(layers)
        n = plan.n_params + plan.n_buffers
        needed = 2 * n * np.dtype(dtype).itemsize  # params and grads
        limit = _physical_memory() or 2**62
        if needed > limit:
            sizes = [layers[0].n_in] + [layer.n_out for layer in layers if layer.has_params]
            raise ValueError(
                f"layer_sizes {_short_sizes(sizes)} make {n:.3g} parameters: "
                f"{needed / 2**30:,.3g} GiB for them and their gradients, more than "
                f"{'this machine has' if limit < 2**62 else 'any machine has'} "
                f"({limit / 2**30:,.3g} GiB); use smaller layers"
            )

    @staticmethod
    def _check_output_layer(loss, layer):
        if not isinstance(layer, Dense):
            raise ValueError(
                f"the last layer must be a Dense layer (the output), got {type(layer).__name__}"
            )
        if layer.n_out < loss.min_outputs:
            raise ValueError(
                f"loss {loss.name!r} needs at least {loss.min_outputs} outputs, got a last "
                f"layer of {layer.n_out}"
            )
        if loss.fused and layer.activation != "identity":
            raise ValueError(
                f"the last layer must have activation 'identity' with loss {loss.name!r} (the "
                f"loss applies {loss.link!r} to its output), got {layer.activation!r}"
            )

    @staticmethod
    def _check_output_activation(loss, output_activation, n_out):
        if n_out < loss.min_outputs:
            raise ValueError(
                f"loss {loss.name!r} needs at least {loss.min_outputs} "
                f"outputs, got layer_sizes[-1] = {n_out}"
            )
        if loss.fused:
            if output_activation not in (None, loss.link):
                raise ValueError(
                    f"output_activation must be None or {loss.link!r} with loss "
                    f"{loss.name!r} (the loss applies it to the output layer's z), got "
                    f"{output_activation!r}"
                )
            return "identity"
        if output_activation is None:
            return "identity"
        return _activation(output_activation, "output_activation")

    def _build(self, layers, old_layers=None):
        """Allocate the flat buffers for ``layers`` (unbound, chained) and bind them.

        ``old_layers[i]``, when given, is a layer whose values layer i takes over.
        """
        plan = layout(layers)
        params = np.zeros(plan.n_params, self.dtype)
        grads = np.zeros(plan.n_params, self.dtype)
        buffers = np.zeros(plan.n_buffers, self.dtype)
        for i, layer in enumerate(layers):
            for slot in layer.param_slots():
                off, shape = plan.params[i][slot.name]
                setattr(layer, slot.name, params[off : off + slot.size].reshape(shape))
                setattr(layer, "d" + slot.name, grads[off : off + slot.size].reshape(shape))
                getattr(layer, slot.name)[...] = slot.fill
            for slot in layer.buffer_slots():
                off, shape = plan.buffers[i][slot.name]
                setattr(layer, slot.name, buffers[off : off + slot.size].reshape(shape))
                getattr(layer, slot.name)[...] = slot.fill
        if old_layers is not None:
            for layer, old in zip(layers, old_layers):
                if old is not None:
                    for slot in layer.param_slots() + layer.buffer_slots():
                        getattr(layer, slot.name)[...] = getattr(old, slot.name)
        self.layers = layers
        self.layout = plan
        # layers with parameters (a training step starts its backward at the lowest
        # trainable one), found once: frozen flags may change, the list does not
        self._with_params = tuple(i for i, p in enumerate(plan.params) if p)
        self.params, self.grads, self.buffers = params, grads, buffers
        self.n_weights = plan.n_weights
        self._layout_token = object()  # optimizer state is tied to this layout
        self._frozen_version = 0
        self._train_spaces: OrderedDict[int, _TrainSpace] = OrderedDict()
        self._eval_pool = _EvalPool(self._MAX_EVAL_SPACES)
        self._epoch_plans: dict[int, _epoch.EpochPlan] = {}
        self._rows = np.zeros(0, np.int64)  # 0 .. n - 1: an unshuffled epoch's order

    def _init_name(self, i) -> str:
        """The initialiser of layer i: with init="auto", that of the activation its
        output goes through (its own, or that of a normalisation right after it)."""
        if self.init != "auto":
            return self.init
        layers = self.layers
        act = getattr(layers[i], "activation", "identity")
        if act == "identity" and i + 1 < len(layers):
            after = layers[i + 1]  # a normalisation (no weight matrix) passes on its own
            if not any(slot.weight for slot in after.param_slots()):
                act = getattr(after, "activation", "identity")
        return default_init(act)

    @trains
    def reset_parameters(self) -> None:
        """Draw fresh initial weights (docs/spec.md §8; biases zero, gamma one)."""
        for i, layer in enumerate(self.layers):
            layer.reset(self.rngs["init"], self._init_name(i), self.init_distribution)

    # --- description ---------------------------------------------------------------------
    @property
    def layer_sizes(self) -> list[int]:
        """``[n_features, widths of the dense layers...]`` (as the ``layer_sizes`` form)."""
        return [self.layers[0].n_in] + [layer.n_out for layer in self.dense_layers]

    @property
    def dense_layers(self) -> list[Dense]:
        """The :class:`~fastnn.layers.Dense` layers, in order."""
        return [layer for layer in self.layers if isinstance(layer, Dense)]

    @property
    def n_features_in(self) -> int:
        return self.layers[0].n_in

    @property
    def n_outputs(self) -> int:
        return self.layers[-1].n_out

    @property
    def n_params(self) -> int:
        return self.params.size

    @property
    def weights(self) -> list[np.ndarray]:
        """The dense layers' weight matrices W (n_in, n_out), views into ``params``."""
        return [layer.W for layer in self.dense_layers]

    @property
    def biases(self) -> list[np.ndarray | None]:
        """The dense layers' biases b (n_out,), views into ``params`` (None for a dense
        layer without bias, as before a batch normalisation)."""
        return [layer.b for layer in self.dense_layers]

    def get_config(self) -> dict:
        """The architecture and settings as plain JSON-able values (no weights)."""
        return {
            "layers": [layer.config() for layer in self.layers],
            "loss": self.loss.name,
            "init": self.init,
            "init_distribution": self.init_distribution,
            "dtype": self.dtype.name,
            "backend": self.backend_name,
        }

    @classmethod
    def from_config(cls, config: dict, *, backend: str | None = None, random_state=None) -> MLP:
        """A freshly initialised model with the architecture of ``get_config()``.

        Also reads the configuration of fastnn's first file format (one entry per
        dense layer with ``dropout`` and ``batch_norm`` flags, ``bn_momentum`` and
        ``bn_eps`` beside the layers).
        """
        return cls(
            _config_layers(config),
            loss=config["loss"],
            init=config.get("init", "auto"),
            init_distribution=config.get("init_distribution", "normal"),
            dtype=config["dtype"],
            backend=backend,
            random_state=random_state,
        )

    def __repr__(self):
        return (
            f"MLP({self.layers}, loss={self.loss.name!r}, "
            f"dtype={self.dtype.name}, backend={self.backend_name!r}, "
            f"n_params={self.n_params})"
        )

    # --- backend ---------------------------------------------------------------------------
    @trains
    def set_backend(self, name: str | None = None) -> MLP:
        """Run this model on another backend (None: the default); returns self."""
        if name is None:
            name = default_backend_name()
        self.kernels = _get_backend(name)
        self.backend_name = self.kernels.name
        return self

    # --- freezing and transfer learning ---------------------------------------------------
    def _layer_indices(self, layers):
        n = len(self.layers)
        if layers is None:
            return list(range(n))
        if isinstance(layers, slice):
            return list(range(n))[layers]
        if isinstance(layers, numbers.Integral):
            layers = [layers]
        out = []
        for i in layers:
            i = v.integer(i, "layers")
            if not -n <= i < n:
                raise ValueError(f"layer index {i} is out of range for {n} layers")
            out.append(i % n)
        return out

    @trains
    def freeze(self, layers=None) -> MLP:
        """Freeze layers (an index into ``model.layers``, a list of them, a slice;
        None: all). Returns self.

        A frozen layer's parameters are not updated by any optimizer (nor decayed); a
        frozen ``BatchNorm`` normalises with its running statistics. (In the
        ``layer_sizes`` form a batch-normalised hidden layer is a ``Dense`` and a
        ``BatchNorm``: freeze both to freeze the whole hidden layer.)
        """
        for i in self._layer_indices(layers):
            self.layers[i].frozen = True
        self._frozen_version += 1
        return self

    @trains
    def unfreeze(self, layers=None) -> MLP:
        """Make layers trainable again (None: all). Returns self."""
        for i in self._layer_indices(layers):
            self.layers[i].frozen = False
        self._frozen_version += 1
        return self

    def param_segments(self) -> list[tuple[int, int, bool]]:
        """(start, stop, is_weight) slices of ``params`` of the trainable layers, in order."""
        return [(s, e, w) for s, e, w, i in self.layout.segments if not self.layers[i].frozen]

    @trains
    def replace_output(
        self, n_outputs: int, *, loss: str | None = None, output_activation: str | None = None
    ) -> MLP:
        """Replace the output layer by a freshly initialised one with ``n_outputs`` units.

        Hidden layers keep their values and frozen flags; ``loss`` changes the loss
        (default: keep it). The parameter buffers are rebuilt, so the model's
        optimizer is dropped (its state belongs to the old layout). Returns self.
        """
        n_outputs = v.integer(n_outputs, "n_outputs", low=1)
        new_loss = get_loss(loss if loss is not None else self.loss.name)
        out_act = self._check_output_activation(new_loss, output_activation, n_outputs)
        old = self.layers[:-1]
        new_out = Dense(self.layers[-1].n_in, n_outputs, out_act)
        layers = chain([layer.copy() for layer in old] + [new_out])
        self._check_output_layer(new_loss, layers[-1])
        self.loss = new_loss
        self._build(layers, old_layers=old + [None])
        last = len(layers) - 1
        layers[-1].reset(self.rngs["init"], self._init_name(last), self.init_distribution)
        self.optimizer = None
        return self

    # --- workspaces -------------------------------------------------------------------------
    _MAX_SPACES = 4  # training workspaces kept, one per batch size (one thread trains)
    _MAX_EVAL_SPACES = 8  # inference workspaces kept, lent to every thread's calls

    def _space(self, cache, cls, m):
        ws = cache.get(m)
        if ws is None:
            ws = cache[m] = cls(self, m)
            while len(cache) > self._MAX_SPACES:
                cache.popitem(last=False)
        else:
            cache.move_to_end(m)
        return ws

    def _inference_rows(self, n, sparse=False):
        # CSR input is never densified: its width does not count
        widest = max(self.layer_sizes[1:] if sparse else self.layer_sizes)
        return max(1, min(n, (1 << 20) // widest))

    def _csr_rows(self, X, rows) -> CSRRows:
        """Rows ``rows`` (int64) of a checked CSR X as the first layer's input; a
        TypeError when the first layer cannot read CSR rows (only Dense can)."""
        first = self.layers[0]
        if not isinstance(first, Dense):
            raise TypeError(
                f"X is sparse, which only a Dense first layer reads (docs/spec.md §2.1); "
                f"this model starts with {type(first).__name__}: start it with a Dense "
                f"layer or pass X.toarray()"
            )
        return CSRRows(X, rows)

    def _all_rows(self, X):
        """X itself, or every row of a checked CSR X as the first layer's input."""
        if not v.is_sparse(X):
            return X
        return self._csr_rows(X, np.arange(X.shape[0], dtype=np.int64))

    # --- forward ---------------------------------------------------------------------------
    def _forward_train(self, x, ws):
        """Training-mode forward of one batch into ws; returns the model output array.

        Calls the raw kernels (``Backend._internal``): every array here is C-contiguous
        and of the model's dtype by construction (check_X, the workspaces, the views
        into params), which the checked tier would verify again on every call.
        """
        k = self.kernels._internal
        ctx = Context(self._dropout_seed, self._dropout_step)
        for i, layer in enumerate(self.layers):
            ws.inputs[i] = x
            x = layer.forward(k, x, ws.layers[i], ctx)
        self._dropout_step += 1
        return x

    def _forward_eval(self, x, ws):
        k = self.kernels._internal
        for layer, lws in zip(self.layers, ws.layers):
            x = layer.forward_eval(k, x, lws)
        return x

    @uses
    def decision_function(self, X) -> np.ndarray:
        """The model output in inference mode: logits for the cross-entropies, else g(z).

        X (n, n_features) of any real dtype (converted, see the module's input rule), or
        a SciPy sparse matrix (read as CSR, never densified: see "Sparse input");
        returns (n, n_outputs) of the model's dtype. Evaluated in chunks of rows so that
        the workspace stays small; dropout is off and batch normalisation uses the
        running statistics.
        """
        X = check_X(X, self.dtype, self.n_features_in)
        with np.errstate(over="ignore", invalid="ignore"):  # checked just below
            out = self._decision_checked(X)
        return self._check_output(out, X)

    def _check_output(self, out, X):
        """``out``, or ValueError when it is not finite: NaN logits would otherwise come
        out of predict as class 0, a wrong answer that looks like a right one."""
        if _all_finite(out):
            return out
        if not _all_finite(self.params) or not _all_finite(self.buffers):
            raise ValueError(
                "the model's weights are not finite (training diverged with "
                "rollback=False?): re-initialise or reload the model"
            )
        bad = np.flatnonzero(~np.isfinite(out).all(axis=1))
        values = X.data if v.is_sparse(X) else X
        with np.errstate(over="ignore"):
            big = float(np.abs(values).max(initial=0))
        raise ValueError(
            f"X is too large for this model: its output overflows to "
            f"infinity or NaN in {self.dtype.name} for {bad.size} of "
            f"{out.shape[0]} rows (first: row {bad[0]}; largest |X| is "
            f"{big:.3g}); scale the inputs (e.g. standardise them as for "
            f"training)"
        )

    def forward(self, X, *, training: bool = False) -> np.ndarray:
        """The output for X; ``training=True`` uses batch statistics and dropout.

        In training mode the batch-norm running statistics are updated and dropout
        masks drawn, exactly as in a training step (without the update). Returns a new
        array (n, n_outputs).
        """
        if not training:
            return self.decision_function(X)
        return self._forward_training(X)

    @trains
    def _forward_training(self, X):
        X = check_X(X, self.dtype, self.n_features_in)
        ws = self._space(self._train_spaces, _TrainSpace, X.shape[0])
        self._check_bn_batch(X.shape[0], "X")
        return self._forward_train(self._all_rows(X), ws).copy()

    @uses
    def predict_proba(self, X) -> np.ndarray:
        """Probabilities: sigmoid (binary_cross_entropy) or softmax (cross_entropy) of logits."""
        return self.loss.proba(self.kernels, self.decision_function(X))

    @uses
    def predict(self, X) -> np.ndarray:
        """mse: the outputs (n, n_outputs); binary_cross_entropy: 0/1 labels (n, n_outputs);
        cross_entropy: class indices (n,)."""
        return self.loss.predict(self.kernels, self.decision_function(X))

    # --- targets -------------------------------------------------------------------------------
    def check_targets(self, y, n_samples: int | None = None, name: str = "y") -> np.ndarray:
        """``y`` checked and converted for this model's loss (see :mod:`fastnn.losses`)."""
        t = self.loss.prepare_targets(y, self.n_outputs, self.dtype, name)
        if n_samples is not None and t.shape[0] != n_samples:
            raise ValueError(
                f"X and {name} have different numbers of samples ({n_samples} and {t.shape[0]})"
            )
        return t

    def check_data(self, X, y) -> tuple[np.ndarray, np.ndarray]:
        """(X, y) checked and converted for training or evaluation."""
        X = check_X(X, self.dtype, self.n_features_in)
        return X, self.check_targets(y, X.shape[0])

    # --- training ------------------------------------------------------------------------------
    def _min_batch(self) -> int:
        """Rows a training batch needs (2 with batch normalisation in training)."""
        return max(layer.min_batch for layer in self.layers)

    def _check_bn_batch(self, m, name):
        if m < self._min_batch():
            rows = "a single row" if m == 1 else f"{m} rows"
            raise ValueError(
                f"{name} has {rows}: batch normalisation in training needs batches of at "
                f"least 2 samples"
            )

    def _lowest_trainable(self) -> int:
        layers = self.layers
        lowest = next((i for i in self._with_params if not layers[i].frozen), None)
        if lowest is None:
            raise ValueError("every layer of the model is frozen: nothing to train")
        return lowest

    def _backward(self, x, y, ws, out, w=NO_WEIGHTS):
        k = self.kernels._internal
        lowest = self._lowest_trainable()
        g = ws.g
        if w.size:
            self.loss.gradient(k, out, y, g, w)
        else:  # (a Loss of its own may not take weights)
            self.loss.gradient(k, out, y, g)
        for i in range(len(self.layers) - 1, lowest - 1, -1):
            g = self.layers[i].backward(k, ws.inputs[i], ws.layers[i], g, i > lowest)

    def _prepared_csr(self, X, name):
        """A CSR X as :meth:`check_data` returns it (the model's dtype and features,
        arrays checked by ``csr_arrays``), else a TypeError/ValueError naming it."""
        hint = "; prepare X and y once with model.check_data(X, y)"
        if X.format != "csr":
            raise TypeError(f"{name} must be a CSR matrix (format 'csr'), got {X.format!r}{hint}")
        if X.dtype != self.dtype:
            raise TypeError(
                f"{name} must have dtype {self.dtype.name} (the model's), got {X.dtype}{hint}"
            )
        if len(X.shape) != 2 or X.shape[1] != self.n_features_in:
            raise ValueError(f"{name} must have shape (n, {self.n_features_in}), got {X.shape}")
        v.csr_arrays(X.indptr, X.indices, X.data, X.shape[1], self.dtype, f"{name}.", X.shape[0])
        return X

    def _check_batch(self, xb, yb):
        """m, after checking (xb, yb) as the raw kernels need them: C-contiguous, the
        model's dtype and shapes, class indices in range (they index rows of memory).
        A batch of CSR rows (CSRRows) comes from a checked matrix and is trusted."""
        if isinstance(xb, CSRRows):
            pass
        elif not (
            isinstance(xb, np.ndarray)
            and xb.dtype == self.dtype
            and xb.ndim == 2
            and xb.shape[1] == self.n_features_in
            and xb.flags.c_contiguous
        ):
            raise ValueError(
                f"xb must be a C-contiguous (m, {self.n_features_in}) {self.dtype.name} "
                f"array or a CSR matrix; prepare data with model.check_data(X, y)"
            )
        m = xb.shape[0]
        if m == 0:
            raise ValueError("xb is empty: a training step needs at least one sample")
        if len(yb) != m:
            raise ValueError(f"xb and yb have different numbers of samples ({m} and {len(yb)})")
        k = self.n_outputs
        labels = (
            isinstance(yb, np.ndarray)
            and self.loss.name == "cross_entropy"
            and yb.dtype == np.int64
            and yb.ndim == 1
        )
        rows = isinstance(yb, np.ndarray) and yb.dtype == self.dtype and yb.shape == (m, k)
        if not ((labels or rows) and yb.flags.c_contiguous):
            raise ValueError(
                "yb must be targets prepared for this model (C-contiguous, the model's "
                "dtype and outputs, or int64 class indices); prepare data with "
                "model.check_data(X, y)"
            )
        if labels and (yb.min() < 0 or yb.max() >= k):
            raise ValueError(f"yb must hold class indices in [0, {k})")
        self._check_bn_batch(m, "xb")
        return m

    def _loss_and_gradient(self, xb, yb, wb=NO_WEIGHTS) -> float:
        if v.is_sparse(xb):
            xb = self._all_rows(self._prepared_csr(xb, "xb"))
        ws = self._space(self._train_spaces, _TrainSpace, self._check_batch(xb, yb))
        # Overflow on the way to a divergence is detected below and reported with
        # advice; NumPy's floating-point warnings would only add noise before it.
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            out = self._forward_train(xb, ws)
            if wb.size:
                loss = self.loss.value(self.kernels._internal, out, yb, wb)
            else:
                loss = self.loss.value(self.kernels._internal, out, yb)
            self._last_output = out
            if not math.isfinite(loss):
                raise DivergenceError(f"the loss is {loss}", what="loss", value=loss)
            self._backward(xb, yb, ws, out, wb)
        return loss

    @trains
    def loss_and_gradient(self, X, y, sample_weight=None) -> float:
        """Training-mode loss on (X, y), with its gradient written into ``model.grads``.

        Nothing is updated except the batch-norm running statistics (and the dropout
        stream). Gradients of frozen layers (below the lowest trainable one) are not
        computed. Useful for gradient checks and custom optimizers.

        ``sample_weight`` (n,), optional: non-negative per-sample weights, not all zero;
        the loss and its gradient are then the weighted means, ``sum_i w_i l_i / sum_i
        w_i`` (docs/spec.md §4, "Sample weights").
        """
        X, y = self.check_data(X, y)
        w = check_sample_weight(sample_weight, X.shape[0])
        return self._loss_and_gradient(X, y, NO_WEIGHTS if w is None else w)

    @trains
    def train_step(self, xb: np.ndarray, yb: np.ndarray, optimizer, sample_weight=None) -> float:
        """One optimizer step on the batch (xb, yb); returns the batch loss.

        ``xb`` (m, n_features) in the model's dtype (an array, or a CSR matrix as
        :meth:`check_data` returns it) and ``yb`` as returned by
        :meth:`check_targets` (the training loop prepares both once per fit). The step
        is forward (training mode), loss, backward, then ``optimizer.step(self)``; it
        is the unit a compiled whole-step path would replace.

        ``sample_weight`` (m,), optional: the batch's per-sample weights (non-negative,
        not all zero). The loss and gradient are the weighted means (normalised by the
        weight sum S instead of m) and the optimizer's L2 ``weight_decay`` (not
        AdamW's decoupled decay) is scaled by m / S for this step, as scikit-learn
        normalises its ``alpha`` term (docs/spec.md §4, "Sample weights").

        Raises
        ------
        DivergenceError
            When the loss or the gradient is not finite. Parameters are untouched then.
        """
        if v.is_sparse(xb):
            xb = self._all_rows(self._prepared_csr(xb, "xb"))
        if sample_weight is None:
            loss = self._loss_and_gradient(xb, yb)
            with np.errstate(over="ignore", invalid="ignore"):
                optimizer.step(self)
            return loss
        wb = check_sample_weight(sample_weight, self._check_batch(xb, yb))
        loss = self._loss_and_gradient(xb, yb, wb)
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            scale = float(np.float64(wb.size) / np.sum(wb))
            optimizer.step(self, decay_scale=scale)
        return loss

    def _batches(self, n, batch_size):
        """Batch bounds over n rows; the last partial batch is kept (merged into the
        previous one when it would be a single sample and batch norm needs >= 2)."""
        bounds = [(s, min(n, s + batch_size)) for s in range(0, n, batch_size)]
        if len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] == 1 and self._min_batch() > 1:
            last = bounds.pop()
            bounds[-1] = (bounds[-1][0], last[1])
        return bounds

    def _check_prepared(self, X, y, batch_size):
        """train_epoch's (X, y, batch_size), refused unless X and y are what
        :meth:`check_data` returns (so that no kernel reads them out of bounds or in
        another dtype); returns base-class views of X and y (no copy)."""
        hint = "; prepare X and y once with model.check_data(X, y)"
        batch_size = v.integer(batch_size, "batch_size", low=1)
        dt = self.dtype  # its f-string form is its name (read only on the error paths)
        if v.is_sparse(X):
            X = self._prepared_csr(X, "X")
        elif not isinstance(X, np.ndarray):
            raise TypeError(
                f"X must be a NumPy array or a SciPy CSR matrix, got {type(X).__name__}{hint}"
            )
        else:
            X = v.plain_view(X, "X")
            if X.dtype != self.dtype:
                raise TypeError(f"X must have dtype {dt} (the model's), got {X.dtype}{hint}")
            if X.ndim != 2 or X.shape[1] != self.n_features_in:
                raise ValueError(
                    f"X must have shape (n, {self.n_features_in}), got {X.shape}{hint}"
                )
            if not X.flags.c_contiguous:
                raise ValueError(f"X must be C-contiguous{hint}")
        n = X.shape[0]
        if n == 0:
            raise ValueError("X is empty: an epoch needs at least one sample")
        if not isinstance(y, np.ndarray):
            raise TypeError(f"y must be a NumPy array, got {type(y).__name__}{hint}")
        y = v.plain_view(y, "y")
        k = self.n_outputs
        if self.loss.name == "cross_entropy" and y.ndim == 1:
            if y.dtype != np.int64:
                raise TypeError(
                    f"y must hold class indices as int64 or targets as {dt}, got {y.dtype}{hint}"
                )
            # one pass: a negative label viewed as uint64 is >= 2**63 > k
            if y.size and y.view(np.uint64).max() >= k:
                raise ValueError(
                    f"y must be class indices in [0, {k}), got values in "
                    f"[{y.min()}, {y.max()}]{hint}"
                )
        elif y.dtype != self.dtype:
            raise TypeError(f"y must have dtype {dt} (the model's), got {y.dtype}{hint}")
        elif y.ndim != 2 or y.shape[1] != k:
            raise ValueError(f"y must have shape (n, {k}), got {y.shape}{hint}")
        if y.shape[0] != n:
            raise ValueError(f"X and y have different numbers of samples ({n} and {y.shape[0]})")
        if not y.flags.c_contiguous:
            raise ValueError(f"y must be C-contiguous{hint}")
        return X, y, batch_size

    def _check_batch_weights(self, w, order, batch_size):
        """ValueError naming sample_weight when a batch of the epoch has weights summing
        to 0 (its weighted mean loss would be 0 / 0; scikit-learn raises
        ZeroDivisionError there)."""
        bounds = self._batches(w.shape[0], batch_size)
        rows = w if order is None else w[order]
        sums = np.add.reduceat(rows, [s for s, _ in bounds])
        empty = np.flatnonzero(sums == 0)
        if empty.size:
            s, e = bounds[int(empty[0])]
            raise ValueError(
                f"sample_weight: the weights of batch {int(empty[0])} of this epoch (rows "
                f"{s}:{e} of its order) are all zero, so its weighted mean loss is undefined; "
                f"use a larger batch_size or give those rows some weight"
            )

    @trains
    def train_epoch(
        self,
        X: np.ndarray,
        y: np.ndarray,
        optimizer,
        batch_size: int,
        *,
        shuffle: bool = True,
        order=None,
        on_step=None,
        poll=None,
        sample_weight=None,
    ) -> dict:
        """One pass over (X, y) in mini-batches; returns ``{"loss", "accuracy"?}``.

        X and y must be prepared by :meth:`check_data` (X a dense array, or a CSR
        matrix whose batches the first layer reads row by row, docs/spec.md §2.1: a CSR
        epoch runs on the step-by-step path). With ``shuffle`` the batches
        follow a fresh permutation from the model's shuffle stream; each batch is
        gathered into a reused buffer (the data set is never copied). ``loss`` is the
        mean of the per-sample training losses seen during the epoch (each batch's
        loss weighted by its size); ``accuracy`` (classification) counts the batch
        predictions made before each update, as Keras reports it.

        The epoch runs in the backend's ``train_epoch`` kernel (many steps per
        compiled call, dropout and batch normalisation included, the same weights and
        running statistics as the step-by-step path), unless ``on_step`` is given.

        Parameters
        ----------
        order : array of int (n,), optional
            The rows of X in the order this epoch visits them (batch j is
            ``order[j * batch_size:(j + 1) * batch_size]``); given, it replaces
            ``shuffle``. The scikit-learn estimators pass scikit-learn's own order.
        on_step : callable ``(step_index, batch_loss)``, optional
            Called after every completed step; forces the step-by-step path.
        poll : callable ``(steps_done)``, optional
            Called between compiled calls (after every step on the step-by-step path)
            with the number of steps completed in this epoch; it may raise (e.g.
            ``KeyboardInterrupt``) to stop at a step boundary.
        sample_weight : array of float (n,), optional
            Non-negative weights of the rows of X (a scalar weighs all alike), gathered
            with the batches. Each batch's loss and gradient are its weighted means
            (divided by the batch's weight sum S instead of its m rows) and the L2
            ``weight_decay`` of the step is scaled by m / S (docs/spec.md §4, "Sample
            weights"); the logged ``loss`` stays the mean of the batch losses weighted
            by their row counts (as scikit-learn's ``loss_curve_``), accuracy is
            unweighted. Unit weights train exactly as no weights.

        Raises
        ------
        TypeError, ValueError
            For X or y not as :meth:`check_data` returns them (another dtype, shape or
            layout; X empty) and for a batch_size that is not an integer >= 1, or below
            2 (X of one row) when a batch-normalised layer trains. For a
            ``sample_weight`` of another length, with a negative, NaN or infinite
            weight, or with a batch of this epoch whose weights are all zero.
        """
        X, y, batch_size = self._check_prepared(X, y, batch_size)
        n = X.shape[0]
        if self._min_batch() > 1:
            # checked before any step, on both paths: batch statistics need two rows
            if n < 2:
                raise ValueError(
                    "X has a single row: batch normalisation in training needs batches "
                    "of at least 2 samples"
                )
            if batch_size < 2:
                raise ValueError(
                    f"batch_size must be at least 2 with batch normalisation in training "
                    f"(batches of at least 2 samples), got {batch_size}"
                )
        if order is not None:
            order = v.index_array(order, "order", n, n, "row indices", "one row index per sample")
        elif shuffle:
            order = self.rngs["shuffle"].permutation(n)
        w = check_sample_weight(sample_weight, n)
        if w is not None:
            self._check_batch_weights(w, order, batch_size)
        sparse = v.is_sparse(X)
        if sparse:
            self._csr_rows(X, order[:0] if order is not None else np.zeros(0, np.int64))
        # CSR input runs on the step path (the epoch kernels read dense X only)
        if on_step is None and not sparse and _epoch.supports(self, optimizer):
            if order is None:
                # kept between calls (the kernels only read it)
                if self._rows.size != n:
                    self._rows = np.arange(n, dtype=np.int64)
                order = self._rows
            return _epoch.train_epoch(self, X, y, optimizer, batch_size, order, poll, w)
        total, correct = 0.0, 0
        classify = self.loss.is_classifier
        for j, (s, e) in enumerate(self._batches(n, batch_size)):
            xb: np.ndarray | CSRRows
            if sparse and order is None:
                xb, yb = self._csr_rows(X, np.arange(s, e, dtype=np.int64)), y[s:e]
                wb = None if w is None else w[s:e]
            elif sparse:
                ws = self._space(self._train_spaces, _TrainSpace, e - s)
                xb = self._csr_rows(X, order[s:e])
                yb = np.take(y, order[s:e], axis=0, out=ws.target_buffer(y), mode="clip")
                wb = None if w is None else w[order[s:e]]
            elif order is None:
                xb, yb = X[s:e], y[s:e]
                wb = None if w is None else w[s:e]
            else:
                ws = self._space(self._train_spaces, _TrainSpace, e - s)
                idx = order[s:e]
                xb = np.take(X, idx, axis=0, out=ws.xb, mode="clip")
                yb = np.take(y, idx, axis=0, out=ws.target_buffer(y), mode="clip")
                wb = None if w is None else w[idx]
            if wb is None:
                loss = self.train_step(xb, yb, optimizer)
            else:
                loss = self.train_step(xb, yb, optimizer, sample_weight=wb)
            total += loss * (e - s)
            if classify:
                correct += self.loss.n_correct(self._last_output, yb)
            if on_step is not None:
                on_step(j, loss)
            if poll is not None:
                poll(j + 1)
        logs = {"loss": total / n}
        if classify:
            logs["accuracy"] = correct / n
        return logs

    # --- evaluation ------------------------------------------------------------------------------
    @uses
    def evaluate(self, X, y, *, checked: bool = False) -> dict:
        """Inference-mode loss and metrics on (X, y): ``{"loss", "accuracy" | "r2"}``.

        ``accuracy`` for the cross-entropies (a row counts when all its labels are
        right), ``r2`` (coefficient of determination, averaged over outputs) for mse.
        ``checked=True`` skips the input checks for data prepared by :meth:`check_data`.
        """
        if not checked:
            X, y = self.check_data(X, y)
        with np.errstate(over="ignore", invalid="ignore"):
            out = self._decision_checked(X)
        if not checked:
            self._check_output(out, X)
        n = X.shape[0]
        rows = self._inference_rows(n, v.is_sparse(X))
        total = 0.0
        for s in range(0, n, rows):
            e = min(n, s + rows)
            total += self.loss.value(self.kernels._internal, out[s:e], y[s:e]) * (e - s)
        logs = {"loss": total / n}
        if self.loss.is_classifier:
            logs["accuracy"] = self.loss.n_correct(out, y) / n
        else:
            logs["r2"] = _r2(y, self.loss.predict(self.kernels, out))
        return logs

    def _decision_checked(self, X):
        """Model outputs of a checked X in chunks of rows; a CSR X is read by the first
        layer's csr kernel chunk by chunk (docs/spec.md §2.1), never densified."""
        n = X.shape[0]
        result = np.empty((n, self.n_outputs), self.dtype)
        sparse = v.is_sparse(X)
        rows = self._inference_rows(n, sparse)
        for s in range(0, n, rows):
            e = min(n, s + rows)
            x = self._csr_rows(X, np.arange(s, e, dtype=np.int64)) if sparse else X[s:e]
            ws = self._eval_pool.take(self, e - s)
            try:
                result[s:e] = self._forward_eval(x, ws)
            finally:
                self._eval_pool.give_back(ws)
        return result

    @uses
    def score(self, X, y) -> float:
        """Accuracy (classification) or R^2 (regression) on (X, y)."""
        logs = self.evaluate(X, y)
        return logs["accuracy"] if self.loss.is_classifier else logs["r2"]

    @trains
    def fit(self, X, y, **kwargs):
        """Train the model; see :func:`fastnn.training.fit` for the arguments."""
        return _training_fit(self, X, y, **kwargs)

    # --- state -----------------------------------------------------------------------------------
    @uses
    def get_state(self) -> dict:
        """Copies of ``params`` and ``buffers`` (restore with :meth:`set_state`)."""
        return {"params": self.params.copy(), "buffers": self.buffers.copy()}

    @trains
    def set_state(self, state: dict) -> None:
        """Copy saved ``params`` and ``buffers`` back in place (the layout must match)."""
        for name in ("params", "buffers"):
            src, dst = np.asarray(state[name]), getattr(self, name)
            if src.shape != dst.shape:
                raise ValueError(f"{name} must have shape {dst.shape}, got {src.shape}")
            np.copyto(dst, src, casting="same_kind")

    @uses
    def rng_states(self) -> dict:
        """The bit-generator states of the four random streams and the dropout key
        (its seed and step count, decimal strings; JSON-able)."""
        out = {name: _rng_state_to_json(g) for name, g in self.rngs.items()}
        out["dropout_key"] = {"seed": str(self._dropout_seed), "step": str(self._dropout_step)}
        return out

    @trains
    def set_rng_states(self, states: dict) -> None:
        """Restore :meth:`rng_states`. States saved before the dropout key existed
        (no ``dropout_key``) derive it as a new model does: the seed drawn from the
        restored dropout stream, step 0."""
        key = states.get("dropout_key") if isinstance(states, dict) else None
        if key is not None:
            try:
                seed, step = int(key["seed"]), int(key["step"])
            except (KeyError, TypeError, ValueError):
                raise ValueError(
                    "random state 'dropout_key' is not a valid dropout key "
                    "(seed and step as decimal strings)"
                ) from None
            if not (0 <= seed < 2**64 and 0 <= step < 2**63):
                raise ValueError(
                    "random state 'dropout_key' is out of range (seed must "
                    "be in [0, 2**64), step in [0, 2**63))"
                )
        for name, g in self.rngs.items():
            g.bit_generator.state = _rng_state_from_json(states[name], name)
        if key is None:
            self._draw_dropout_key()
        else:
            self._dropout_seed, self._dropout_step = seed, step

    @uses
    def __getstate__(self):
        # Layers hold views into params/grads/buffers: pickled one by one they would
        # come back as independent copies (backward would write gradients the
        # optimizer never reads, and training would silently change nothing), and the
        # backend handle belongs to this process. Pickle what fastnn.save stores (not
        # the thread guard nor the workspaces: the copy makes its own).
        return {
            "config": self.get_config(),
            "params": self.params,
            "buffers": self.buffers,
            "rng": self.rng_states(),
            "optimizer": None if self.optimizer is None else self.optimizer.state_dict(),
            "history": self.history,
        }

    def __setstate__(self, state):
        from ._backend import available_backends
        from .io import ModelFileError, _expected_sizes
        from .optim import optimizer_from_state

        # The arrays' sizes are checked against the declared layers before the model is
        # built (as fastnn.load does): a state read from a file (fastnn.save of a
        # pipeline, via skops) cannot make this allocate more than the file holds.
        try:
            n_params, n_buf = _expected_sizes("MLP state", state["config"])
        except ModelFileError as exc:
            raise ValueError(str(exc)) from None
        for name, size in (("params", n_params), ("buffers", n_buf)):
            if np.shape(state[name]) != (size,):
                raise ValueError(
                    f"MLP state: {name} must have shape ({size},) for the "
                    f"declared layers, got {np.shape(state[name])}"
                )
        saved = state["config"].get("backend")
        rebuilt = MLP.from_config(
            state["config"], backend=saved if saved in available_backends() else None
        )
        self.__dict__.update(rebuilt.__dict__)
        self.set_state({"params": state["params"], "buffers": state["buffers"]})
        self.set_rng_states(state["rng"])
        if state["optimizer"] is not None:
            self.optimizer = optimizer_from_state(state["optimizer"])
        self.history = state["history"]

    @uses
    def copy(self) -> MLP:
        """An independent model with the same configuration, values and random states."""
        clone = MLP.from_config(self.get_config(), backend=self.backend_name)
        clone.set_state(self.get_state())
        clone.set_rng_states(self.rng_states())
        clone.n_threads = self.n_threads
        return clone


def _is_layer_list(value) -> bool:
    return isinstance(value, (list, tuple)) and any(isinstance(x, Layer) for x in value)


def _given(value) -> bool:
    """Whether a per-layer setting differs from "none" (0 / False, alone or in a list)."""
    if isinstance(value, (list, tuple)):
        return any(_given(x) for x in value)
    return bool(value) if isinstance(value, (bool, int, float, np.number)) else True


def _config_layers(config) -> list[Layer]:
    """The layers of ``get_config()["layers"]``, or of the first format's list."""
    specs = config["layers"]
    if not isinstance(specs, list) or not specs:
        raise ValueError("config['layers'] must be a non-empty list")
    if all(isinstance(s, dict) and "type" not in s for s in specs):
        specs = legacy_configs(specs, config.get("bn_momentum", 0.1), config.get("bn_eps", 1e-5))
        if any(s["type"] != "dense" for s in specs[-1:]):
            raise ValueError("the output layer cannot have dropout or batch normalisation")
    return [layer_from_config(s, f"config layer {i}") for i, s in enumerate(specs)]


def _r2(y, out):
    return float(regression_scores(y, out)[0].mean())


def _rng_state_to_json(g: np.random.Generator) -> dict:
    st = g.bit_generator.state
    if st.get("bit_generator") != "PCG64":
        raise ValueError(f"only PCG64 generators can be saved, got {st.get('bit_generator')}")
    # Python ints are arbitrary precision but other JSON readers are not: decimal strings.
    return {
        "bit_generator": "PCG64",
        "state": str(st["state"]["state"]),
        "inc": str(st["state"]["inc"]),
        "has_uint32": int(st["has_uint32"]),
        "uinteger": int(st["uinteger"]),
    }


def _rng_state_from_json(d, name) -> dict:
    try:
        if d["bit_generator"] != "PCG64":
            raise ValueError
        state, inc = int(d["state"]), int(d["inc"])
        has, uint = int(d["has_uint32"]), int(d["uinteger"])
    except (KeyError, TypeError, ValueError):
        raise ValueError(f"random state {name!r} is not a valid PCG64 state") from None
    for field, value, bound, shown in (
        ("state", state, 2**128, "2**128"),
        ("inc", inc, 2**128, "2**128"),
        ("has_uint32", has, 2, "2"),
        ("uinteger", uint, 2**32, "2**32"),
    ):
        if not 0 <= value < bound:
            raise ValueError(
                f"random state {name!r} is out of range ({field} must be in [0, {shown}))"
            )

    return {
        "bit_generator": "PCG64",
        "state": {"state": state, "inc": inc},
        "has_uint32": has,
        "uinteger": uint,
    }
