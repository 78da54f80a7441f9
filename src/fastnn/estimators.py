"""scikit-learn estimators on fastnn's kernels: :class:`MLPClassifier`, :class:`MLPRegressor`.

Drop-in replacements for ``sklearn.neural_network.MLPClassifier`` / ``MLPRegressor``:
the same constructor parameters with the same meanings and defaults, the same fitted
attributes and methods, plus fastnn's own options (any fastnn optimizer, dropout,
batch normalisation, learning-rate schedules, gradient clipping, backend, dtype).
They need scikit-learn (``pip install 'fastnn-mlp[sklearn]'``); ``import fastnn`` does not
import it, ``from fastnn import MLPClassifier`` does.

How scikit-learn's definitions map onto fastnn's
------------------------------------------------
scikit-learn's gradient for a batch of ``m`` samples is ``(A.T @ delta + alpha W) / m``
with ``delta = output - target`` (softmax / logistic output with log-loss, identity
output with half squared error). fastnn's cross-entropies have exactly this data
gradient, so ``alpha`` becomes the L2 ``weight_decay = alpha / batch_size`` on the
weights (biases are not decayed, as in scikit-learn). fastnn's ``mse`` is the mean of
squared errors over the ``m k`` elements (k outputs), whose gradient is ``c = 2 / k``
times scikit-learn's; the regressor therefore uses ``weight_decay = c alpha /
batch_size``, divides the learning rate of the SGD family by ``c`` and multiplies the
``epsilon`` of the adaptive optimizers by ``c``, which reproduces scikit-learn's
updates. ``loss_curve_`` and ``loss_`` are scikit-learn's numbers: log-loss, or half
the mean squared error, plus ``alpha / 2 ||W||^2 / m`` per batch (averaged over the
epoch's samples; see the note on ``loss_curve_`` below).

Sample weights
--------------
``fit`` and ``partial_fit`` take ``sample_weight`` with scikit-learn's meaning (1.7+):
each batch's loss and gradient are the weighted means ``sum_i w_i l_i / S`` and
``w_i dl_i / S``, ``S`` the batch's weight sum, and the L2 term is normalised by the same
``S`` (``alpha W / S``; fastnn's coupled weight decay of a weighted batch is scaled by
``m / S``, docs/spec.md §4). The loss kernels take the weights, so the whole epoch still
runs in one compiled call. With ``early_stopping=True`` the split carries the weights
and the validation score is weighted (accuracy or R^2 with the validation rows'
weights); ``loss_curve_`` adds the penalty ``alpha/2 ||W||^2 / S`` of every batch
(interpolated as below). ``solver="lbfgs"`` minimises the weighted loss plus
``alpha/2 ||W||^2 / S`` over the whole data set, as scikit-learn's. ``score`` takes
``sample_weight`` as scikit-learn's mixins do. Unit weights train exactly as no weights.
The L2 scale ``m / S`` is scikit-learn's ``1 / S`` for full batches; for the last,
partial batch fastnn's decay is ``alpha m / (batch_size S)`` where scikit-learn's is
``alpha / S`` (as without weights, where the decay is ``alpha / batch_size`` for every
batch).

Differences from scikit-learn, on purpose
-----------------------------------------
- ``init="sklearn"`` (the default) draws scikit-learn's initial weights and
  intercepts from ``random_state`` exactly as it does, and every epoch visits the
  samples in scikit-learn's order (its shuffle of the last epoch's order, from the same
  RandomState, after the early-stopping split): the same ``random_state`` trains
  through the same mini-batches as scikit-learn, to rounding. Dropout's masks come from
  a fastnn stream seeded from that RandomState.
- The early-stopping split of a multiclass classifier is stratified (scikit-learn
  stratifies only binary targets), so with ``early_stopping=True`` and more than two
  classes the validation rows, and the orders after them, differ from scikit-learn's.
  A class too small to stratify is named by its label (scikit-learn's error names
  its internal code, ``['True']``).
- A run that diverges (the loss, the gradient or the weights become non-finite)
  stops at the epoch that diverged: fastnn cannot train non-finite weights, where
  scikit-learn trains on to ``max_iter``. With ``early_stopping=True`` that epoch is
  recorded as scikit-learn records the epochs after a divergence (NaN in
  ``loss_curve_`` and ``validation_scores_``, ``loss_`` NaN; ``n_iter_`` counts the
  epochs run, scikit-learn's is ``max_iter``), the best-validation weights are
  restored as in scikit-learn (the weights the fit started from if no score was
  finite) and a ConvergenceWarning says so (scikit-learn's warning is the
  maximum-iterations one). scikit-learn's classifier scores non-finite outputs as the
  accuracy of the labels its NaN comparisons pick; fastnn records NaN. Without early
  stopping fastnn raises ValueError at once and keeps the last finite weights;
  scikit-learn trains on, then raises ValueError ("Solver produced non-finite
  parameter weights") with the non-finite weights in place.
- A warm-started fit with ``early_stopping=True`` that never beats the previous
  ``best_validation_score_`` keeps the weights it started from (those that scored
  it); scikit-learn's best-weights list is then its live list of weights, so it keeps
  the last epoch's.
- ``coefs_`` and ``intercepts_`` are lists of the network's own arrays, as
  scikit-learn's: writing into an array (``coefs_[0][:] = 0``) or assigning an item
  (``coefs_[1] = W``, or the whole list) changes the network. An assigned item is
  copied into the layer after checking its shape and that it is real-valued (a
  ValueError / TypeError names the layer), in the network's dtype: the item then is
  the layer's array, not ``W`` (later changes to ``W`` do not reach the network), and
  the lists cannot grow or shrink. Values assigned before the first fit read back as
  assigned and the fit replaces them, as in scikit-learn, but they do not make the
  estimator fitted (scikit-learn's ``check_is_fitted`` passes, then ``predict``
  raises AttributeError; fastnn's raises NotFittedError).
- Data of dtype float32 is trained in float32, anything else in float64 (``dtype``
  forces one); later calls convert their input to the fitted dtype.
- ``random_state`` seeds fastnn's own streams (dropout) once per new model; later
  ``partial_fit`` / warm-start calls continue them. The sample order of each call is
  scikit-learn's: from a RandomState made afresh from ``random_state``.
- Threads: ``predict``, ``predict_proba``, ``predict_log_proba`` and ``score`` may
  be called from any number of threads at once (each gets the answer it would get
  alone). ``fit`` and ``partial_fit`` run alone: while one runs, the others and every
  prediction from another thread raise RuntimeError (see :mod:`fastnn.model`,
  "Threads"); a fit waits for the predictions already under way.
- ``sample_weight`` must be non-negative: scikit-learn's MLPs accept negative weights
  (their ``_check_sample_weight`` call does not ask for non-negative ones); fastnn
  refuses them with a ValueError, as it refuses NaN, infinity, a wrong length or shape
  and all-zero weights (as scikit-learn does). A mini-batch whose weights are all zero
  raises ValueError before the epoch runs, where scikit-learn raises
  ZeroDivisionError in it. With batch normalisation the batch statistics are
  unweighted, so a weight is not a repeated row there.
- Sparse ``X`` (any SciPy sparse matrix or array) is accepted by ``fit``,
  ``partial_fit``, ``predict``, ``predict_proba``, ``predict_log_proba`` and ``score``,
  as scikit-learn accepts it. It is validated as CSR (``validate_data(...,
  accept_sparse="csr")``: another format is converted to CSR, a copy of its non-zeros,
  never a dense copy), the first layer reads the CSR rows of each batch (docs/spec.md
  §2.1) and the early-stopping split and the epoch orders select rows as for dense X.
  The weights differ from those of a fit on the dense copy of the same data only by
  the summation order of the first layer (§2.1); a sparse fit runs the step-by-step
  path, not the whole-epoch kernels.
- Adam's ``epsilon`` is added to ``sqrt(v_hat)`` (Kingma & Ba; docs/spec.md §5) where
  scikit-learn adds it to ``sqrt(v)``; the two agree up to the size of epsilon.
"""

from __future__ import annotations

import contextlib
import copy
import math
import numbers
import re
import threading
import warnings
from typing import cast

import numpy as np

try:
    from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin, _fit_context
except ImportError as exc:  # pragma: no cover - exercised only without scikit-learn
    raise ImportError(
        "fastnn.MLPClassifier and fastnn.MLPRegressor need scikit-learn; "
        "install it with `pip install 'fastnn-mlp[sklearn]'`"
    ) from exc
from scipy.special import expit, xlogy
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import r2_score
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import LabelBinarizer
from sklearn.utils import check_random_state, column_or_1d
from sklearn.utils._param_validation import Interval, Options, StrOptions
from sklearn.utils.metaestimators import available_if
from sklearn.utils.multiclass import (
    _check_partial_fit_first_call,
    check_classification_targets,
    type_of_target,
    unique_labels,
)
from sklearn.utils.validation import check_is_fitted, validate_data

from . import _blas, registry
from . import _validation as _v
from ._backend import BACKENDS
from ._guard import TrainingGuard, trains, uses
from .initializers import INITIALIZERS
from .io import (
    ModelFileError,
    Payload,
    _from_jsonable,
    _jsonable,
    _params_from_json,
    _params_to_json,
)
from .losses import check_sample_weight
from .model import MLP, _r2
from .optim import OPTIMIZERS, AdamW, DivergenceError
from .schedules import Constant, Schedule
from .training import BestState, Diverged, run_epochs

__all__ = ["MLPClassifier", "MLPRegressor"]

# scikit-learn's activation names and fastnn's own, from the registry (step and softmax
# are not offered for hidden layers: step has no gradient, softmax couples the units of
# a layer).
ACTIVATIONS = {a.name: a.name for a in registry.ACTIVATIONS if a.hidden} | {
    a.sklearn: a.name for a in registry.ACTIVATIONS if a.hidden and a.sklearn
}

# Updates proportional to the gradient (a gradient scale is undone by the learning
# rate) and updates invariant to its scale (undone by scaling epsilon).
_LINEAR_OPTIMIZERS = tuple(o.name for o in registry.OPTIMIZERS if not o.scale_free)
_OPTIMIZER_ROWS = {o.name: o for o in registry.OPTIMIZERS}
_DTYPES = {"float32": np.dtype(np.float32), "float64": np.dtype(np.float64)}


_GUARD_CREATION = threading.Lock()  # estimators make their thread guard at first use

# The stacklevel of a warning warned in _fit_stochastic / _fit_lbfgs: it names the
# user's fit / partial_fit call, above _fit, fit / partial_fit, the @trains wrapper and
# scikit-learn's @_fit_context wrapper (tests/test_sklearn.py checks the file).
_FIT_STACKLEVEL = 6


class _BaseMLP(BaseEstimator):
    """Shared machinery of :class:`MLPClassifier` and :class:`MLPRegressor`."""

    _parameter_constraints: dict = {
        "hidden_layer_sizes": ["array-like", Interval(numbers.Integral, 1, None, closed="left")],
        "activation": [StrOptions(set(ACTIVATIONS))],
        "solver": [StrOptions({"lbfgs", "sgd", "adam"})],
        "alpha": [Interval(numbers.Real, 0, None, closed="left")],
        "batch_size": [StrOptions({"auto"}), Interval(numbers.Integral, 1, None, closed="left")],
        "learning_rate": [StrOptions({"constant", "invscaling", "adaptive"})],
        "learning_rate_init": [Interval(numbers.Real, 0, None, closed="neither")],
        "power_t": [Interval(numbers.Real, 0, None, closed="left")],
        "max_iter": [Interval(numbers.Integral, 1, None, closed="left")],
        "shuffle": ["boolean"],
        "random_state": ["random_state"],
        "tol": [Interval(numbers.Real, 0, None, closed="left")],
        "verbose": ["verbose"],
        "warm_start": ["boolean"],
        # fastnn's momentum kernels need momentum < 1 (1 never forgets a gradient).
        "momentum": [Interval(numbers.Real, 0, 1, closed="left")],
        "nesterovs_momentum": ["boolean"],
        "early_stopping": ["boolean"],
        "validation_fraction": [Interval(numbers.Real, 0, 1, closed="neither")],
        "beta_1": [Interval(numbers.Real, 0, 1, closed="left")],
        "beta_2": [Interval(numbers.Real, 0, 1, closed="left")],
        "epsilon": [Interval(numbers.Real, 0, None, closed="neither")],
        "n_iter_no_change": [
            Interval(numbers.Integral, 1, None, closed="left"),
            Options(numbers.Real, {np.inf}),
        ],
        "max_fun": [Interval(numbers.Integral, 1, None, closed="left")],
        "optimizer": [None, StrOptions(set(OPTIMIZERS))],
        "dropout": [Interval(numbers.Real, 0, 1, closed="left"), "array-like"],
        "batch_norm": ["boolean", "array-like"],
        "schedule": [None, Schedule],
        "clip_norm": [None, Interval(numbers.Real, 0, None, closed="neither")],
        # Bounded: threadpoolctl passes it to C as an int (2**31 used to crash predict).
        "n_threads": [None, Interval(numbers.Integral, 1, 2**15, closed="both")],
        "backend": [None, StrOptions(set(BACKENDS))],
        "dtype": [None, StrOptions(set(_DTYPES)), Options(type, {np.float32, np.float64})],
        "init": [StrOptions({"sklearn", "auto", *INITIALIZERS})],
    }

    def __init__(
        self,
        hidden_layer_sizes,
        activation,
        solver,
        alpha,
        batch_size,
        learning_rate,
        learning_rate_init,
        power_t,
        max_iter,
        shuffle,
        random_state,
        tol,
        verbose,
        warm_start,
        momentum,
        nesterovs_momentum,
        early_stopping,
        validation_fraction,
        beta_1,
        beta_2,
        epsilon,
        n_iter_no_change,
        max_fun,
        optimizer,
        dropout,
        batch_norm,
        schedule,
        clip_norm,
        n_threads,
        backend,
        dtype,
        init,
    ):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.learning_rate_init = learning_rate_init
        self.power_t = power_t
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_iter_no_change = n_iter_no_change
        self.max_fun = max_fun
        self.optimizer = optimizer
        self.dropout = dropout
        self.batch_norm = batch_norm
        self.schedule = schedule
        self.clip_norm = clip_norm
        self.n_threads = n_threads
        self.backend = backend
        self.dtype = dtype
        self.init = init

    def _validate_params(self):
        """scikit-learn's checks, then no number beyond what fit computes with: a
        401-digit alpha is inside Interval(Real, 0, None) but float() overflows."""
        super()._validate_params()
        for name, value in self.get_params(deep=False).items():
            if name == "random_state" or isinstance(value, (bool, np.bool_)):
                continue
            if isinstance(value, numbers.Integral):
                _v.integer(value, name)
            elif isinstance(value, numbers.Real):
                _v.real(value, name)

    # --- hooks of the subclasses ----------------------------------------------------------
    def _validate_input(self, X, y, incremental, reset, dtype):
        """(X, targets for fastnn's loss), also setting the label attributes."""
        raise NotImplementedError

    def _loss_name(self) -> str:
        raise NotImplementedError

    def _sklearn_scale(self):
        """(c, s): fastnn's loss gradient is c times scikit-learn's; its value times s
        is scikit-learn's loss."""
        return 1.0, 1.0

    def _score_name(self) -> str:
        raise NotImplementedError

    # --- threads (see fastnn.model, "Threads") --------------------------------------------------
    @property
    def _guard(self) -> TrainingGuard:
        """This estimator's thread guard (made at first use; never pickled or copied)."""
        guard = self.__dict__.get("_thread_guard")
        if guard is None:
            with _GUARD_CREATION:
                guard = self.__dict__.get("_thread_guard")
                if guard is None:
                    guard = TrainingGuard(f"this {type(self).__name__}")
                    self.__dict__["_thread_guard"] = guard
        return guard

    def __getstate__(self):
        state = dict(super().__getstate__())
        state.pop("_thread_guard", None)
        return state

    # --- fitted state -----------------------------------------------------------------------
    def __sklearn_is_fitted__(self):
        return "_model" in self.__dict__

    @property
    def coefs_(self) -> list:
        """Weight matrices (n_in, n_out) of every layer: the network's own arrays.

        As scikit-learn's list: ``coefs_[i][...] = ...`` and ``coefs_[i] = W`` change
        the network (see :class:`_Layers`); ``coefs_ = [...]`` sets every layer.
        """
        return self._layers("coefs_")

    @coefs_.setter
    def coefs_(self, values):
        self._set_layers("coefs_", values)

    @property
    def intercepts_(self) -> list:
        """Bias vectors (n_out,) of every layer (None for a batch-normalised layer)."""
        return self._layers("intercepts_")

    @intercepts_.setter
    def intercepts_(self, values):
        self._set_layers("intercepts_", values)

    def _layer_arrays(self, name) -> list:
        return self._model.weights if name == "coefs_" else self._model.biases

    def _layers(self, name):
        if not self.__sklearn_is_fitted__():
            # a value assigned before fit reads back as assigned (scikit-learn's plain
            # attribute); fit replaces it
            unfitted = self.__dict__.get("_unfitted_layers", {})
            if name in unfitted:
                return unfitted[name]
            check_is_fitted(self)
        return _Layers(self, name, self._layer_arrays(name))

    def _set_layers(self, name, values):
        """``coefs_ = values`` / ``intercepts_ = values``: training (see _guard)."""
        with self._guard.train(f"setting {name}"):
            if not self.__sklearn_is_fitted__():
                self.__dict__.setdefault("_unfitted_layers", {})[name] = values
                return
            try:
                values = list(values)
            except TypeError:
                raise TypeError(
                    f"{name} must be a list of arrays, got {type(values).__name__}"
                ) from None
            n = len(self._layer_arrays(name))
            if len(values) != n:
                raise ValueError(
                    f"{name} must be a list of {n} arrays (one per layer), got {len(values)}"
                )
            self._write_layers(name, range(n), values)

    def _write_layers(self, name, indices, values):
        """Copy values into the layers' arrays, all checked before any is written."""
        with self._guard.train(f"setting {name}"):
            check_is_fitted(self)
            targets = self._layer_arrays(name)
            checked = [
                (targets[i], _layer_value(name, i, targets[i], v)) for i, v in zip(indices, values)
            ]
            with self._model._guard.train(f"setting {name}"):
                for dst, src in checked:
                    if dst is not None:
                        dst[...] = src

    @property
    def _hidden(self) -> list[int]:
        h = self.hidden_layer_sizes
        h = [h] if not hasattr(h, "__iter__") else list(h)
        if any(int(s) != s or s <= 0 for s in h):
            raise ValueError(f"hidden_layer_sizes must be > 0, got {h}.")
        return [int(s) for s in h]

    def _uses_lr_schedule(self) -> bool:
        """learning_rate ('invscaling', 'adaptive') applies to solver 'sgd', as in
        scikit-learn, and to any optimizer named explicitly."""
        return self.optimizer is not None or self.solver == "sgd"

    def _optimizer_name(self) -> str:
        if self.optimizer is not None:
            return self.optimizer
        if self.solver == "sgd":
            if self.momentum > 0:
                return "nesterov" if self.nesterovs_momentum else "momentum"
            return "sgd"
        return self.solver

    # --- model and optimizer ------------------------------------------------------------------
    def _new_model(self, n_features, n_outputs, dtype):
        self._check_fastnn_options()
        rs = check_random_state(self.random_state)
        sizes = [n_features, *self._hidden, n_outputs]
        if self.init == "sklearn":
            # scikit-learn's Glorot-uniform draws, in its order (per layer: weights,
            # then intercepts) from the same RandomState: the same random_state gives
            # the same initial network as sklearn.neural_network.
            factor = 2.0 if self.activation in ("logistic", "sigmoid") else 6.0
            drawn = []
            for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
                bound = np.sqrt(factor / (fan_in + fan_out))
                drawn.append(
                    (
                        rs.uniform(-bound, bound, (fan_in, fan_out)),
                        rs.uniform(-bound, bound, fan_out),
                    )
                )
        # fastnn's own streams are seeded from a copy, so that `rs` reaches the
        # early-stopping split and the epochs' shuffles in the state scikit-learn's
        # would be in (_fit_random_state hands it on).
        seed = int(copy.deepcopy(rs).randint(np.iinfo(np.int32).max))
        model = MLP(
            sizes,
            ACTIVATIONS[self.activation],
            loss=self._loss_name(),
            dropout=self.dropout,
            batch_norm=self.batch_norm,
            init="auto" if self.init == "sklearn" else self.init,
            dtype=dtype,
            backend=self.backend,
            random_state=seed,
        )
        if self.init == "sklearn":
            for layer, (W, b) in zip(model.dense_layers, drawn):
                layer.W[...] = W
                if layer.b is not None:
                    layer.b[...] = b
        self._init_random_state = rs
        self.n_outputs_ = n_outputs
        self.n_layers_ = len(self._hidden) + 2
        self.n_iter_ = 0
        self.t_ = 0
        return model

    def _check_fastnn_options(self):
        if self.optimizer is None and self.solver == "lbfgs":
            if np.any(np.asarray(self.dropout, dtype=float) > 0):
                raise ValueError(
                    "solver='lbfgs' needs a deterministic loss; it cannot be used with dropout > 0"
                )

    def _lr_scale(self) -> float:
        c, _ = self._sklearn_scale()
        return 1.0 / c if self._optimizer_name() in _LINEAR_OPTIMIZERS else 1.0

    def _new_optimizer(self):
        name = self._optimizer_name()
        c, _ = self._sklearn_scale()
        lr = (
            copy.deepcopy(self.schedule)
            if self.schedule is not None
            else self.learning_rate_init * self._lr_scale()
        )
        # The constructor arguments the optimizer's registry row maps to estimator
        # parameters; "*" marks the ones the gradient scale c multiplies.
        kwargs = {"clip_norm": self.clip_norm}
        for argument, param in _OPTIMIZER_ROWS[name].estimator.items():
            value = getattr(self, param.rstrip("*"))
            kwargs[argument] = value * c if param.endswith("*") else value
        return OPTIMIZERS[name](lr, **kwargs)

    def _set_batch_decay(self, opt, batch_size):
        """scikit-learn's L2 term alpha W / m as fastnn's coupled weight decay."""
        if not isinstance(opt, AdamW):
            c, _ = self._sklearn_scale()
            opt.weight_decay = float(c * self.alpha / batch_size)

    def _penalty_weight(self) -> float:
        """alpha for the penalty term of loss_curve_ (0: AdamW's decay is no loss term)."""
        return 0.0 if self._optimizer_name() == "adamw" else float(self.alpha)

    def _sq_weights(self) -> float:
        # One single-threaded BLAS dot: NumPy's is threaded above 10,000 values, and
        # this sum decides the stopping rule (tol / n_iter_no_change) through loss_.
        return _blas.dot(self._model.params[: self._model.n_weights])

    # --- fit ----------------------------------------------------------------------------------
    def _fit(self, X, y, incremental=False, sample_weight=None):
        first_pass = not self.__sklearn_is_fitted__() or (not self.warm_start and not incremental)
        if self.early_stopping and incremental:
            raise ValueError("partial_fit does not support early_stopping=True")
        hidden = self._hidden
        if first_pass:
            dtype = (
                _DTYPES[np.dtype(self.dtype).name]
                if self.dtype is not None
                else (np.float64, np.float32)
            )
        else:
            dtype = self._model.dtype
        X, Y = self._validate_input(X, y, incremental, reset=first_pass, dtype=dtype)
        w = check_sample_weight(sample_weight, X.shape[0])
        # Y: class indices (n,) for softmax outputs, else (n, n_outputs).
        n_outputs = len(self.classes_) if Y.ndim == 1 else Y.shape[1]
        if X.shape[0] < 2 and np.any(np.asarray(self.batch_norm, dtype=bool)):
            # (scikit-learn's one-sample check: a y of one class reaches the training)
            raise ValueError(
                f"batch_norm needs at least 2 samples to train (batch "
                f"statistics), got n_samples={X.shape[0]}"
            )
        if first_pass:
            self._model: MLP = self._new_model(X.shape[1], n_outputs, X.dtype)
            # coefs_ / intercepts_ assigned before the first fit are replaced, as
            # scikit-learn's first fit replaces them
            self.__dict__.pop("_unfitted_layers", None)
            self._init_curves()
        else:
            model = self._model
            if model.layer_sizes[1:-1] != hidden or model.n_outputs != n_outputs:
                raise ValueError(
                    f"the fitted network has layers {model.layer_sizes}; with "
                    f"hidden_layer_sizes={self.hidden_layer_sizes} and this y it "
                    f"would need {[X.shape[1], *hidden, n_outputs]}. Set "
                    f"warm_start=False to fit a new network."
                )
            if self.backend is not None and self.backend != model.backend_name:
                model.set_backend(self.backend)
        # the network is trained alone (the lbfgs path writes its parameters too)
        with self._model._guard.train("fit()"):
            self._model.n_threads = self.n_threads
            try:
                if self.optimizer is None and self.solver == "lbfgs":
                    self._fit_lbfgs(X, Y, w)
                else:
                    self._fit_stochastic(X, Y, incremental, w)
            finally:
                self.__dict__.pop("_init_random_state", None)
        return self

    def _init_curves(self):
        if self.optimizer is None and self.solver == "lbfgs":
            return
        self.loss_curve_ = []
        self._no_improvement_count = 0
        if self.early_stopping:
            self.validation_scores_: list[float] | None = []
            self.best_validation_score_: float | None = -np.inf
            self.best_loss_: float | None = None
        else:
            self.best_loss_ = np.inf
            self.validation_scores_ = None
            self.best_validation_score_ = None

    def _fit_random_state(self):
        """scikit-learn's RandomState of this fit: the one that drew the initial weights
        (a first fit), or a fresh one from random_state (a warm start, partial_fit). It
        then makes the early-stopping split and every epoch's sample order, in that
        order, as scikit-learn's does."""
        rs = self.__dict__.pop("_init_random_state", None)
        return rs if rs is not None else check_random_state(self.random_state)

    def _split(self, X, Y, rs, w=None):
        """scikit-learn's early-stopping split, stratified except for multilabel/regression."""
        stratify = (Y if Y.ndim == 1 else Y[:, 0]) if self._stratify() else None
        idx = np.arange(X.shape[0])
        # the training rows keep the split's (shuffled) order, as scikit-learn's
        try:
            train, val = train_test_split(
                idx, random_state=rs, test_size=self.validation_fraction, stratify=stratify
            )
        except ValueError as exc:
            marker = "Classes with too few members are:"
            if stratify is None or marker not in str(exc):
                raise
            # scikit-learn's message names the codes it was given (fastnn's class
            # indices; scikit-learn's own estimator names 'True'): name the labels.
            codes, counts = np.unique(stratify.astype(np.intp), return_counts=True)
            labels = self.classes_[codes[counts < 2]].tolist()
            raise ValueError(
                f"{str(exc).split(marker)[0]}{marker} {labels} (early_stopping=True "
                f"holds out a stratified validation set: every class needs at least 2 "
                f"samples)"
            ) from None
        if val.shape[0] < 2:
            raise ValueError(
                "The validation set is too small. Increase "
                "'validation_fraction' or the size of your dataset."
            )
        if w is None:
            return X[train], Y[train], X[val], Y[val], None, None
        return X[train], Y[train], X[val], Y[val], w[train], w[val]

    def _stratify(self) -> bool:
        return False

    def _loss_offset(self, Y, w=None) -> float:
        """What scikit-learn's loss adds to fastnn's on targets Y (weighted by w) (hook)."""
        return 0.0

    def _sample_offsets(self, Y):
        """Per sample, what scikit-learn's loss adds to fastnn's (hook; None: nothing)."""
        return None

    def _fit_stochastic(self, X, Y, incremental, w=None):
        model = self._model
        if not incremental or model.optimizer is None:
            # A new optimizer starts again from learning_rate_init, as scikit-learn's.
            model.optimizer = self._new_optimizer()
            self._learning_rate = float(self.learning_rate_init)
        opt = model.optimizer
        rs = self._fit_random_state()
        wv = None
        if self.early_stopping:
            X, Y, Xv, Yv, w, wv = self._split(X, Y, rs, w)
            Xv, Yv = model.check_data(Xv, Yv)
        X, Y = model.check_data(X, Y)
        n = X.shape[0]
        if self.batch_size == "auto":
            batch_size = min(200, n)
        else:
            if self.batch_size > n:
                warnings.warn(
                    "Got `batch_size` less than 1 or larger than sample size. "
                    "It is going to be clipped",
                    stacklevel=_FIT_STACKLEVEL,
                )
            batch_size = min(self.batch_size, n)
        self._set_batch_decay(opt, batch_size)
        n_batches = -(-n // batch_size)
        _, loss_scale = self._sklearn_scale()
        loss_offset = self._loss_offset(Y)
        offsets = self._sample_offsets(Y) if w is not None else None
        alpha = self._penalty_weight()
        own_lr = self.schedule is None
        lr_scale = self._lr_scale()
        # scikit-learn's best-validation weights start as the network's weights at the
        # start (its _best_coefs), so an early stop always has weights to restore.
        best = BestState(model, now=True) if self.early_stopping else None
        rows_order = np.arange(n)
        sq0 = 0.0  # ||W||^2 at the start of the epoch (with a penalty)
        # Warnings of the epochs are warned once the loop is left, from here: their
        # stacklevel then names the user's fit / partial_fit call.
        pending: list[tuple[str, type[Warning]]] = []

        def before_epoch(epoch):
            nonlocal sq0
            if own_lr:
                self._set_rate(opt, self._learning_rate * lr_scale)
            sq0 = self._sq_weights() if alpha else 0.0

        def order(epoch):
            nonlocal rows_order
            if not self.shuffle:
                rows_order = np.arange(n)
                return None
            # scikit-learn's batches: its shuffle of the last epoch's order, drawn
            # from the same RandomState. The draw of sklearn.utils.shuffle, spelled
            # out: its argument validation took 8% of a small fit's time.
            perm = np.arange(n)
            rs.shuffle(perm)
            rows_order = rows_order[perm]
            return rows_order

        def after_epoch(epoch, logs) -> bool:
            if w is None:
                loss = logs["loss"] * loss_scale + loss_offset
            else:
                batch = self._weighted_batches(w, rows_order, batch_size, offsets)
                loss = logs["loss"] * loss_scale + batch["offset"]
            if alpha:
                # scikit-learn adds alpha/2 ||W||^2 / m to every batch's loss (/ S, its
                # weight sum, with sample weights), at the weights that batch saw
                # (before its update). The epoch runs in one compiled call, so ||W||^2
                # is taken at its start and end and interpolated linearly over its
                # steps: exact for one batch per epoch, within the curvature of
                # ||W||^2 otherwise.
                sq1 = self._sq_weights()
                if w is None:
                    seen = n_batches * sq0 + 0.5 * (n_batches - 1) * (sq1 - sq0)
                else:
                    # batch b (m_b rows, weight sum S_b) adds m_b / S_b of its ||W||^2
                    f = batch["rows_per_weight"]
                    at = np.arange(f.size) / f.size
                    seen = float(np.sum(f * (sq0 + at * (sq1 - sq0))))
                loss += 0.5 * alpha * seen / n
            self.n_iter_ += 1
            self.loss_ = loss
            self.t_ += n
            self.loss_curve_.append(loss)
            opt.end_epoch(loss)
            if self.verbose:
                print(f"Iteration {self.n_iter_:d}, loss = {self.loss_:.8f}")
            if best is not None:
                score = (
                    self._validation_score(Xv, Yv)
                    if wv is None
                    else self._weighted_validation_score(Xv, Yv, wv)
                )
                self._update_no_improvement_count_val(score, best)
            else:
                self._update_no_improvement_count_loss()
            if own_lr and self._uses_lr_schedule() and self.learning_rate == "invscaling":
                self._learning_rate = float(self.learning_rate_init) / (self.t_ + 1) ** self.power_t
            if self._no_improvement_count > self.n_iter_no_change:
                if self._trigger_stopping():
                    return True
                self._no_improvement_count = 0
            if incremental:
                return True
            if self.n_iter_ == self.max_iter:
                pending.append(
                    (
                        f"Stochastic Optimizer: Maximum iterations ({self.max_iter:d}) "
                        f"reached and the optimization hasn't converged yet.",
                        ConvergenceWarning,
                    )
                )
            return False

        self.n_iter_ = 0
        interrupted = False
        try:
            # Ctrl-C is seen between compiled calls: the epoch stops at a step
            # boundary, then the loop stops as scikit-learn's does.
            run_epochs(
                model,
                X,
                Y,
                opt,
                epochs=1 if incremental else self.max_iter,
                batch_size=batch_size,
                shuffle=False,
                order=order,
                before_epoch=before_epoch,
                after_epoch=after_epoch,
                sample_weight=w,
            )
        except Diverged as diverged:
            if best is None:
                self._diverged(diverged)  # raises ValueError
            pending.append((self._stop_diverged(diverged, n), ConvergenceWarning))
        except KeyboardInterrupt:
            interrupted = True
        for message, category in pending:
            warnings.warn(message, category, stacklevel=_FIT_STACKLEVEL)
        if interrupted:
            warnings.warn("Training interrupted by user.", stacklevel=_FIT_STACKLEVEL)
        if best is not None:
            best.restore()  # scikit-learn's: the best-validation weights

    @staticmethod
    def _set_rate(opt, lr):
        """Set a constant learning rate for the next epoch, scikit-learn's way.

        scikit-learn's momentum buffer holds ``lr g`` terms (``u = momentum u - lr g``)
        where fastnn's holds gradients (``theta -= lr v``); when the rate changes
        between epochs ('invscaling', 'adaptive'), rescaling v by old / new keeps the
        past steps at the rate they were taken with, as scikit-learn does.
        """
        old = opt.schedule.lr if isinstance(opt.schedule, Constant) else None
        if old is not None and old != lr and lr > 0 and "velocity" in opt.state:
            opt.state["velocity"] *= old / lr
        opt.schedule = Constant(lr)

    def _diverged(self, diverged):
        """Stop with a ValueError, as scikit-learn does; the loop has given the model
        back its last finite weights."""
        err = diverged.error
        if diverged.kept != "finite":
            what = "the weights became non-finite"
        else:
            what = f"the {err.what} became {err.value}"
        raise ValueError(
            f"Training diverged in iteration {self.n_iter_ + 1}: {what}. The model keeps "
            f"its last finite weights. The input data may contain large values and need "
            f"to be preprocessed (e.g. StandardScaler), or the learning rate "
            f"(learning_rate_init={self.learning_rate_init}) is too large."
        ) from (None if err.what == "weights" else err)

    def _stop_diverged(self, diverged, n) -> str:
        """Early stopping saw the training diverge: record the epoch and stop; returns
        the warning to warn.

        scikit-learn trains on with non-finite weights to max_iter, recording NaN
        losses and validation scores (the score of non-finite predictions is NaN), then
        restores its best-validation weights. fastnn cannot train non-finite weights:
        it records the diverged epoch as scikit-learn records the epochs after it (loss
        NaN, validation score NaN), stops, and the caller restores the best weights.
        """
        err = diverged.error
        if err.what == "weights":
            what = "the weights became non-finite"
        else:
            what = f"the {err.what} became {err.value}"
        self.n_iter_ += 1
        self.t_ += n
        self.loss_ = math.nan
        self.loss_curve_.append(math.nan)
        # (early stopping: _init_curves made the list)
        cast("list[float]", self.validation_scores_).append(math.nan)
        if self.verbose:
            print(f"Iteration {self.n_iter_:d}, loss = {self.loss_:.8f}")
            print(f"Validation score: {math.nan:f}")
        best = self.best_validation_score_
        kept = (
            "the weights it started from"
            if best == -np.inf
            else f"the weights of its best validation score ({best:.6g})"
        )
        return (
            f"Training diverged in iteration {self.n_iter_}: {what}. Training stopped "
            f"and the network keeps {kept} (early_stopping=True). The input data may "
            f"contain large values and need to be preprocessed (e.g. StandardScaler), "
            f"or the learning rate (learning_rate_init={self.learning_rate_init}) is "
            f"too large."
        )

    def _validation_score(self, Xv, Yv) -> float:
        """scikit-learn's validation score (accuracy or R^2) of the network on (Xv, Yv)."""
        return self._model.evaluate(Xv, Yv, checked=True)[self._score_name()]

    def _weighted_validation_score(self, Xv, Yv, wv) -> float:
        """scikit-learn's validation score with the validation rows' sample weights
        (its ``_score(X_val, y_val, sample_weight=sample_weight_val)``) (hook)."""
        raise NotImplementedError

    def _weighted_batches(self, w, rows, batch_size, offsets) -> dict:
        """Per batch of an epoch over ``rows`` with weights w: ``rows_per_weight`` m_b /
        S_b, and ``offset``, scikit-learn's loss minus fastnn's for the epoch (the
        weighted mean of ``offsets`` in each batch, averaged by rows as loss_curve_)."""
        n = rows.shape[0]
        starts = np.array([s for s, _ in self._model._batches(n, batch_size)])
        wb = w[rows]
        sums = np.add.reduceat(wb, starts)
        counts = np.diff(np.append(starts, n))
        out = {"rows_per_weight": counts / sums, "offset": 0.0}
        if offsets is not None:
            per_batch = np.add.reduceat(wb * offsets[rows], starts) / sums
            out["offset"] = float(np.sum(per_batch * counts) / n)
        return out

    def _update_no_improvement_count_loss(self):
        last = self.loss_curve_[-1]
        if last > self.best_loss_ - self.tol:
            self._no_improvement_count += 1
        else:
            self._no_improvement_count = 0
        if last < self.best_loss_:
            self.best_loss_ = last

    def _update_no_improvement_count_val(self, score, best):
        cast("list[float]", self.validation_scores_).append(score)  # (early stopping)
        if self.verbose:
            print(f"Validation score: {score:f}")
        if score < self.best_validation_score_ + self.tol:
            self._no_improvement_count += 1
        else:
            self._no_improvement_count = 0
        if score > self.best_validation_score_:
            self.best_validation_score_ = score
            best.keep()

    def _trigger_stopping(self) -> bool:
        what = "Validation score" if self.early_stopping else "Training loss"
        msg = (
            f"{what} did not improve more than tol={self.tol:f} for "
            f"{self.n_iter_no_change} consecutive epochs."
        )
        if not (
            self._uses_lr_schedule() and self.learning_rate == "adaptive" and self.schedule is None
        ):
            if self.verbose:
                print(msg + " Stopping.")
            return True
        if self._learning_rate <= 1e-6:
            if self.verbose:
                print(msg + " Learning rate too small. Stopping.")
            return True
        self._learning_rate /= 5.0
        if self.verbose:
            print(f"{msg} Setting learning rate to {self._learning_rate:f}")
        return False

    def _fit_lbfgs(self, X, Y, sw=None):
        import scipy.optimize

        model = self._model
        X, Y = model.check_data(X, Y)
        # scikit-learn's normaliser of the data and L2 terms: the sample count, or the
        # weight sum
        n = X.shape[0] if sw is None else float(np.sum(sw))
        n_w = model.n_weights
        _, s = self._sklearn_scale()
        alpha = float(self.alpha)
        params = model.params

        def fun(x):
            params[...] = x
            try:
                loss = model.loss_and_gradient(X, Y, sample_weight=sw)
            except DivergenceError as err:
                raise ValueError(
                    f"lbfgs: the loss became {err.value}; the input data "
                    f"may need to be preprocessed"
                ) from err
            grad = model.grads.astype(np.float64)
            grad *= s
            w = params[:n_w].astype(np.float64)
            grad[:n_w] += (alpha / n) * w
            return loss * s + 0.5 * alpha * _blas.dot(w) / n, grad

        iteration = [0]

        def report(intermediate_result):
            iteration[0] += 1
            print(f"Iteration {iteration[0]:d}, loss = {intermediate_result.fun:.8f}")

        res = scipy.optimize.minimize(
            fun,
            params.astype(np.float64),
            method="L-BFGS-B",
            jac=True,
            callback=report if self.verbose else None,
            options={"maxfun": self.max_fun, "maxiter": self.max_iter, "gtol": self.tol},
        )
        params[...] = res.x
        self.n_iter_ = min(int(res.nit), self.max_iter)
        self.loss_ = float(res.fun) + self._loss_offset(Y, sw)
        if res.status != 0:
            msg = res.message.decode() if isinstance(res.message, bytes) else res.message
            warnings.warn(
                f"lbfgs failed to converge after {self.n_iter_} iteration(s) "
                f"(status={res.status}):\n{msg}.\n\nIncrease the number of iterations "
                f"to improve the convergence (max_iter={self.max_iter}).",
                ConvergenceWarning,
                stacklevel=_FIT_STACKLEVEL,
            )
        if not np.isfinite(params).all():
            raise ValueError(
                "Solver produced non-finite parameter weights. The input "
                "data may contain large values and need to be preprocessed."
            )

    # --- prediction ---------------------------------------------------------------------------
    def _decision(self, X) -> np.ndarray:
        """The network output (logits for classifiers) for validated X."""
        check_is_fitted(self)
        with _naming_the_argument("X"):
            X = validate_data(self, X, reset=False, dtype=self._model.dtype, accept_sparse="csr")
        return self._model.decision_function(X)

    # --- saving (pickling is fastnn.MLP's: it rebuilds the layer views and backend) ---------
    _FITTED = (
        "n_features_in_",
        "n_outputs_",
        "n_layers_",
        "n_iter_",
        "t_",
        "loss_",
        "best_loss_",
        "loss_curve_",
        "validation_scores_",
        "best_validation_score_",
        "out_activation_",
        "_no_improvement_count",
        "_learning_rate",
    )

    @uses
    def _fastnn_payload(self) -> Payload:
        """What :func:`fastnn.save` writes: the model, parameters and fitted attributes."""
        check_is_fitted(self)
        fitted = {k: _jsonable(getattr(self, k)) for k in self._FITTED if hasattr(self, k)}
        if hasattr(self, "feature_names_in_"):
            fitted["feature_names_in_"] = [str(s) for s in self.feature_names_in_]
        meta = {"estimator": type(self).__name__, "params": _params_to_json(self), "fitted": fitted}
        arrays = {}
        if hasattr(self, "classes_"):
            meta["classes"], arrays = _classes_to_payload(self.classes_)
            meta["y_type"] = self._label_binarizer.y_type_
        return Payload(self._KIND, self._model, meta, arrays)

    @classmethod
    def _from_payload(cls, model, metadata, arrays):
        try:
            if metadata.get("estimator") != cls.__name__:
                raise ValueError(f"the file holds a {metadata.get('estimator')!r}")
            for key in ("params", "fitted"):
                if not isinstance(metadata.get(key), dict):
                    raise ValueError(f"{key!r} must be a JSON object")
            est = cls(**_params_from_json(metadata["params"]))
            est._validate_params()
            for k, value in metadata["fitted"].items():
                if k not in cls._FITTED and k != "feature_names_in_":
                    raise ValueError(f"unknown fitted attribute {k!r}")
                setattr(est, k, _from_jsonable(value, k))
            if "feature_names_in_" in metadata["fitted"]:
                est.feature_names_in_ = np.asarray(
                    metadata["fitted"]["feature_names_in_"], dtype=object
                )
            if "classes" in metadata:
                lb = LabelBinarizer()
                lb.classes_ = _classes_from_payload(metadata["classes"], arrays)
                lb.y_type_ = metadata["y_type"]
                lb.sparse_input_ = False
                est._label_binarizer = lb
                est.classes_ = lb.classes_
            if (
                model.n_features_in != getattr(est, "n_features_in_", None)
                or model.layer_sizes[1:-1] != est._hidden
                or model.n_outputs != getattr(est, "n_outputs_", None)
            ):
                raise ValueError(
                    "the network's layers do not match the estimator's "
                    "hidden_layer_sizes, n_features_in_ and n_outputs_"
                )
            est._check_loaded_outputs(model)
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelFileError(f"invalid {cls.__name__} metadata: {exc}") from None
        est._model = model
        return est


# --- coefs_ and intercepts_ --------------------------------------------------------------------


class _Layers(list):
    """``coefs_`` / ``intercepts_`` of a fitted estimator: a list of the network's own
    arrays (views of its parameters), as scikit-learn's list is of the arrays its
    model uses.

    Writing into an array (``coefs_[0][:] = 0``) changes the network. Assigning an item
    (``coefs_[1] = W``, slices too) copies ``W``'s values into that layer, after
    checking its shape and dtype; the item then is the layer's array again (not ``W``:
    later changes to ``W`` do not reach the network). The number of layers is fixed:
    the methods that would add, remove or reorder items raise TypeError. Copies
    (``copy.copy``, ``pickle``, ``list(...)``) are plain lists.
    """

    __slots__ = ("_est", "_name")

    def __init__(self, est, name, arrays):
        super().__init__(arrays)
        self._est = est
        self._name = name

    def __setitem__(self, index, value):
        if isinstance(index, slice):
            indices: range | list[int] = range(len(self))[index]
            try:
                value = list(value)
            except TypeError:
                raise TypeError(
                    f"can only assign a list of arrays to a slice of {self._name}"
                ) from None
            if len(value) != len(indices):
                raise ValueError(
                    f"this slice of {self._name} has {len(indices)} layers, "
                    f"got {len(value)} arrays: the number of layers is "
                    f"fixed"
                )
        else:
            try:
                indices = [range(len(self))[index]]
            except IndexError:
                raise IndexError(
                    f"{self._name} has {len(self)} layers; there is no layer {index}"
                ) from None
            value = [value]
        self._est._write_layers(self._name, indices, value)
        live = self._est._layer_arrays(self._name)
        for i in indices:
            list.__setitem__(self, i, live[i])

    def _fixed(self, *args, **kwargs):
        raise TypeError(
            f"{self._name} has one entry per layer of the network; it cannot "
            f"grow, shrink or be reordered (assign arrays to its items)"
        )

    append = extend = insert = pop = remove = clear = sort = reverse = _fixed
    __delitem__ = __iadd__ = __imul__ = _fixed

    def __reduce__(self):
        return list, (list(self),)

    def __copy__(self):
        return list(self)

    def __deepcopy__(self, memo):
        return copy.deepcopy(list(self), memo)


def _layer_value(name, i, dst, src):
    """src checked for layer i of coefs_ / intercepts_ (dst: the layer's array)."""
    if dst is None:
        if src is not None:
            raise ValueError(
                f"{name}[{i}] must be None: layer {i} is batch-normalised and has no intercept"
            )
        return None
    what = "weight matrix" if name == "coefs_" else "intercept vector"
    if src is None:
        raise TypeError(
            f"{name}[{i}] must be an array of shape {dst.shape} (the {what} of layer {i}), got None"
        )
    try:
        arr = np.asarray(src)
    except (ValueError, TypeError) as exc:
        raise ValueError(
            f"{name}[{i}] must be an array of shape {dst.shape} (the {what} of layer {i}): {exc}"
        ) from None
    if arr.dtype.kind not in "biuf":
        raise TypeError(
            f"{name}[{i}] must be a real-valued array of shape {dst.shape} "
            f"(the {what} of layer {i}), got dtype {arr.dtype}"
        )
    if arr.shape != dst.shape:
        raise ValueError(
            f"{name}[{i}] must have shape {dst.shape} (the {what} of layer {i}), got {arr.shape}"
        )
    return arr


# --- errors that name their argument ----------------------------------------------------------

_NAMED = re.compile(r"\b(X|y|Input|input|array|sample|feature)s?\b")


@contextlib.contextmanager
def _naming_the_argument(name):
    """Prefix scikit-learn's validation errors that name no argument ("could not
    convert string to float: 'a'") with the argument's name; ``name`` may be a
    function that finds it (called only on that error path)."""
    try:
        yield
    except (ValueError, TypeError) as exc:
        if _NAMED.search(str(exc)):
            raise
        which = name() if callable(name) else name
        try:
            new = type(exc)(f"{which}: {exc}")
        except Exception:  # an exception type with another signature: keep it
            raise exc from None
        raise new from exc


def _culprit(X, dtype) -> str:
    """Which of X and y made validate_data fail: X when it fails alone."""
    from sklearn.utils import check_array

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            check_array(X, dtype=dtype, accept_sparse="csr")
    except (ValueError, TypeError):
        return "X"
    return "y"


# --- class labels in saved files (the JSON helpers are in fastnn.io) -----------------------


def _classes_to_payload(classes):
    classes = np.asarray(classes)
    if classes.dtype.kind in "biuf":
        return {"array": "classes"}, {"classes": classes}
    if all(isinstance(c, str) for c in classes.tolist()):
        return {"strings": classes.tolist(), "object": classes.dtype.kind == "O"}, {}
    raise TypeError(
        f"fastnn.save can store numeric or string class labels, got {classes.dtype} labels"
    )


def _classes_from_payload(info, arrays):
    if "array" in info:
        return np.asarray(arrays["classes"])
    strings = info["strings"]
    if not all(isinstance(s, str) for s in strings):
        raise ValueError("class labels must be strings")
    return np.asarray(strings, dtype=object if info.get("object") else None)


def _check_solver(est) -> bool:
    if est.optimizer is None and est.solver not in ("sgd", "adam"):
        raise AttributeError(
            "partial_fit is only available for stochastic optimizers. "
            f"{est.solver} is not stochastic."
        )
    return True


_FASTNN_PARAMS_DOC = """
    optimizer : str or None
        fastnn's optimizer by name (a key of ``fastnn.optim.OPTIMIZERS``: "sgd",
        "momentum", "nesterov", "adagrad", "rmsprop", "adam", "adamw"...); overrides
        ``solver``. ``learning_rate_init`` and the parameters its registry row maps
        (``momentum`` for momentum and nesterov; ``beta_1``, ``beta_2`` and ``epsilon``
        for adam and adamw; ``epsilon`` for rmsprop and adagrad) are passed on, and
        ``learning_rate`` applies. For "adamw", ``alpha`` is the decoupled weight
        decay (``W -= lr alpha W`` per step) instead of an L2 term.
    dropout : float or list of float, default=0.0
        Inverted-dropout rate after each hidden layer, in [0, 1).
    batch_norm : bool or list of bool, default=False
        Batch normalisation before each hidden activation (the layer then has no
        intercept: its entry in ``intercepts_`` is None).
    schedule : fastnn.schedules.Schedule or None
        A learning-rate schedule (e.g. ``fastnn.Cosine(0.01, T=100)``) replacing
        ``learning_rate`` and ``learning_rate_init``; it is copied at every fit.
    clip_norm : float or None
        Clip the gradient to this global L2 norm.
    n_threads : int or None
        Threads of training (the whole-epoch kernel runs the blocks of its large
        matrix products on this many threads, BLAS on one; the results do not depend
        on it). None: as many threads as the process may use without oversubscribing
        (see ``fastnn.MLP``). The process's BLAS pools are never changed: fastnn's
        products run on its own single-threaded BLAS instance.
    backend : {"numpy", "numba", "cython"} or None
        Which kernels run the network; None picks the fastest built one.
    dtype : {"float32", "float64"} or None
        Training dtype. None: float32 input is trained in float32 and anything else
        in float64 (scikit-learn's rule).
    init : {"sklearn", "auto", "he", "xavier"}, default="sklearn"
        "sklearn": scikit-learn's Glorot-uniform weights and intercepts, drawn in its
        order from ``random_state`` (the same seed gives the same initial network as
        scikit-learn's estimator). The others are fastnn's normal initialisations
        with zero biases ("auto": He for relu-family activations, else Xavier).
"""


# (D101: the docstring is the __doc__ assigned in the body, joined with
# _FASTNN_PARAMS_DOC; ruff sees only a literal docstring)
class MLPClassifier(ClassifierMixin, _BaseMLP):  # noqa: D101
    __doc__ = (
        """Multi-layer perceptron classifier trained by fastnn's kernels.

    A drop-in replacement for ``sklearn.neural_network.MLPClassifier`` (the same
    parameters, defaults, fitted attributes and methods; see the module docstring for
    how scikit-learn's definitions map onto fastnn's). Binary targets get one
    logistic output, multiclass targets a softmax output, multilabel indicator
    matrices one logistic output per label; all are trained on logits with fused,
    stable cross-entropies. A ``y`` of a single class is fitted as scikit-learn fits
    it (a binary target of one class: ``classes_`` holds it, ``predict`` returns it,
    ``predict_proba`` has scikit-learn's two columns).

    Parameters
    ----------
    hidden_layer_sizes : array-like of int, default=(100,)
    activation : str, default "relu"
        Hidden activation: scikit-learn's "identity", "logistic", "tanh", "relu", or
        fastnn's other hidden activations ("leaky_relu", "elu", "gelu", "silu",
        "selu", "mish"; "sigmoid" is "logistic"; :data:`fastnn.registry.ACTIVATIONS`).
    solver : {"adam", "sgd", "lbfgs"}, default="adam"
        "lbfgs" minimises the full-batch loss with SciPy's L-BFGS-B.
    alpha, batch_size, learning_rate, learning_rate_init, power_t, max_iter, shuffle,
    random_state, tol, verbose, warm_start, momentum, nesterovs_momentum,
    early_stopping, validation_fraction, beta_1, beta_2, epsilon, n_iter_no_change,
    max_fun :
        As in scikit-learn (``momentum`` must be < 1).
    """
        + _FASTNN_PARAMS_DOC
        + """
    Attributes
    ----------
    classes_ : ndarray (n_classes,)
    coefs_, intercepts_ : list of ndarray
        The network's own arrays (views of its parameters): writing into them, or
        assigning an item or the whole list, changes the network (values are copied
        in; see the module docstring).
    loss_, loss_curve_, best_loss_, validation_scores_, best_validation_score_ :
        As in scikit-learn (loss_curve_ etc. only for the stochastic solvers).
    n_iter_ : int
        Epochs run by the last fit call.
    t_ : int
        Training samples seen since the network was created.
    n_features_in_, feature_names_in_, n_outputs_, n_layers_ : as in scikit-learn
    out_activation_ : {"softmax", "logistic"}

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from fastnn import MLPClassifier
    >>> X, y = load_iris(return_X_y=True)
    >>> clf = MLPClassifier((32,), max_iter=300, random_state=0).fit(X, y)
    >>> clf.score(X, y) > 0.9
    True
    """
    )

    _KIND = "mlp_classifier"

    def __init__(
        self,
        hidden_layer_sizes=(100,),
        activation="relu",
        *,
        solver="adam",
        alpha=0.0001,
        batch_size="auto",
        learning_rate="constant",
        learning_rate_init=0.001,
        power_t=0.5,
        max_iter=200,
        shuffle=True,
        random_state=None,
        tol=1e-4,
        verbose=False,
        warm_start=False,
        momentum=0.9,
        nesterovs_momentum=True,
        early_stopping=False,
        validation_fraction=0.1,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-8,
        n_iter_no_change=10,
        max_fun=15000,
        optimizer=None,
        dropout=0.0,
        batch_norm=False,
        schedule=None,
        clip_norm=None,
        n_threads=None,
        backend=None,
        dtype=None,
        init="sklearn",
    ):
        super().__init__(
            hidden_layer_sizes=hidden_layer_sizes,
            activation=activation,
            solver=solver,
            alpha=alpha,
            batch_size=batch_size,
            learning_rate=learning_rate,
            learning_rate_init=learning_rate_init,
            power_t=power_t,
            max_iter=max_iter,
            shuffle=shuffle,
            random_state=random_state,
            tol=tol,
            verbose=verbose,
            warm_start=warm_start,
            momentum=momentum,
            nesterovs_momentum=nesterovs_momentum,
            early_stopping=early_stopping,
            validation_fraction=validation_fraction,
            beta_1=beta_1,
            beta_2=beta_2,
            epsilon=epsilon,
            n_iter_no_change=n_iter_no_change,
            max_fun=max_fun,
            optimizer=optimizer,
            dropout=dropout,
            batch_norm=batch_norm,
            schedule=schedule,
            clip_norm=clip_norm,
            n_threads=n_threads,
            backend=backend,
            dtype=dtype,
            init=init,
        )

    def _loss_name(self):
        return (
            "cross_entropy"
            if self._label_binarizer.y_type_ == "multiclass"
            else "binary_cross_entropy"
        )

    def _score_name(self):
        return "accuracy"

    def _stratify(self):
        return self._label_binarizer.y_type_ != "multilabel-indicator"

    def _validation_score(self, Xv, Yv):
        if len(self.classes_) == 1:  # every prediction is that class (scikit-learn's)
            return 1.0
        return super()._validation_score(Xv, Yv)

    def _weighted_validation_score(self, Xv, Yv, wv):
        """scikit-learn's accuracy_score with the validation weights: the weighted
        fraction of rows predicted right (every label right, multilabel)."""
        if len(self.classes_) == 1:
            return 1.0
        with np.errstate(over="ignore", invalid="ignore"):
            out = self._model._decision_checked(Xv)
        if Yv.ndim == 1:
            right = np.argmax(out, axis=1) == Yv
        else:
            right = ((out > 0) == (Yv > 0.5)).all(axis=1)
        return float(np.average(right, weights=wv))

    def _check_loaded_outputs(self, model):
        # predict indexes classes_ with the network's outputs: they must agree.
        lb = getattr(self, "_label_binarizer", None)
        if lb is None:
            raise ValueError("the class labels are missing")
        y_type, k = lb.y_type_, len(self.classes_)
        want = {
            "binary": ("binary_cross_entropy", 1, k in (1, 2)),
            "multiclass": ("cross_entropy", k, k >= 2),
            "multilabel-indicator": ("binary_cross_entropy", k, k >= 1),
        }.get(y_type)
        if want is None:
            raise ValueError(f"unknown target type {y_type!r}")
        loss, n_out, ok = want
        if (
            not ok
            or model.loss.name != loss
            or model.n_outputs != n_out
            or np.ndim(self.classes_) != 1
        ):
            raise ValueError(
                f"{k} class labels of type {y_type!r} do not match a "
                f"{model.loss.name} network with {model.n_outputs} outputs"
            )
        out = {"binary": "logistic", "multiclass": "softmax", "multilabel-indicator": "logistic"}[
            y_type
        ]
        if getattr(self, "out_activation_", out) != out:
            raise ValueError(
                f"out_activation_ {self.out_activation_!r} does not match the class labels"
            )

    def _validate_input(self, X, y, incremental, reset, dtype):
        with _naming_the_argument(lambda: _culprit(X, dtype)):
            X, y = validate_data(
                self, X, y, multi_output=True, dtype=dtype, reset=reset, accept_sparse="csr"
            )
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        check_classification_targets(y)
        if not hasattr(self, "classes_") or (not self.warm_start and not incremental):
            self._label_binarizer = LabelBinarizer()
            self._label_binarizer.fit(y)
            self.classes_ = self._label_binarizer.classes_
        else:
            classes = unique_labels(y)
            if self.warm_start:
                if set(classes) != set(self.classes_):
                    raise ValueError(
                        "warm_start can only be used where `y` has the same classes as "
                        f"in the previous call to fit. Previously got {self.classes_}, "
                        f"`y` has {classes}"
                    )
            elif len(np.setdiff1d(classes, self.classes_, assume_unique=True)):
                raise ValueError(
                    "`y` has classes not in `self.classes_`. "
                    f"`self.classes_` has {self.classes_}. 'y' has {classes}."
                )
        # A single class is fitted as scikit-learn fits it: a "binary" target of one
        # logistic output trained towards 0 (LabelBinarizer's code for it).
        lb = self._label_binarizer
        if lb.y_type_ == "multiclass":
            self.out_activation_ = "softmax"
            Y = np.searchsorted(self.classes_, y) if y.ndim == 1 else y
            if y.ndim == 1 and not np.array_equal(self.classes_[Y], y):
                Y = lb.transform(y).argmax(axis=1)
        else:
            self.out_activation_ = "logistic"
            Y = lb.transform(y)
        return X, Y

    @_fit_context(prefer_skip_nested_validation=True)
    @trains
    def fit(self, X, y, sample_weight=None):
        """Fit the network to data X (n_samples, n_features) and labels y.

        y : (n_samples,) labels of any type scikit-learn accepts, or a multilabel
        indicator matrix (n_samples, n_labels). ``sample_weight`` (n_samples,),
        optional: non-negative per-sample weights, as scikit-learn's (see the module
        docstring, "Sample weights"). Returns self.
        """
        return self._fit(X, y, incremental=False, sample_weight=sample_weight)

    @available_if(_check_solver)
    @_fit_context(prefer_skip_nested_validation=True)
    @trains
    def partial_fit(self, X, y, sample_weight=None, classes=None):
        """One epoch over (X, y), continuing with the current optimizer state.

        ``classes`` (all labels that will ever be seen) is required on the first call,
        as in scikit-learn; ``sample_weight`` as in :meth:`fit`. Returns self.
        """
        if _check_partial_fit_first_call(self, classes):
            self._label_binarizer = LabelBinarizer()
            if type_of_target(y).startswith("multilabel"):
                self._label_binarizer.fit(y)
            else:
                self._label_binarizer.fit(classes)
        return self._fit(X, y, incremental=True, sample_weight=sample_weight)

    @uses
    def predict(self, X) -> np.ndarray:
        """Predicted labels (n_samples,), or an indicator matrix for multilabel."""
        z = self._decision(X)
        lb = self._label_binarizer
        if lb.y_type_ == "multiclass":
            return self.classes_.take(np.argmax(z, axis=1))
        if lb.y_type_ == "binary":
            if len(self.classes_) == 1:  # scikit-learn's LabelBinarizer: that class
                return np.repeat(self.classes_, z.shape[0])
            return self.classes_.take((z[:, 0] > 0).astype(np.intp))
        return lb.inverse_transform((z > 0).astype(z.dtype))

    @uses
    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities (n_samples, n_classes) in the order of ``classes_``.

        softmax of the logits (multiclass), [1 - p, p] with p = sigmoid(logit)
        (binary), or sigmoid per label (multilabel). A classifier fitted on a single
        class answers (n_samples, 2) as scikit-learn's does: column 0 is the
        probability of that class, column 1 its complement.
        """
        z = self._decision(X)
        if self.out_activation_ == "softmax":
            return self._model.kernels.softmax(z)
        # scikit-learn's logistic output is SciPy's expit, which rounds to 0 below
        # e^-709.78 (float64; e^-88.7 in float32) where fastnn's sigmoid keeps subnormal
        # numbers: expit gives scikit-learn's 0 and 1 (-inf and 0 in predict_log_proba).
        p = expit(z)
        if self._label_binarizer.y_type_ == "binary":
            return np.hstack([1 - p, p])
        return p

    @uses
    def predict_log_proba(self, X) -> np.ndarray:
        """``np.log(predict_proba(X))``, as scikit-learn computes it.

        A probability that underflows to 0 (a logit far below the others) gives -inf,
        with NumPy's "divide by zero" RuntimeWarning, exactly as scikit-learn's.
        """
        proba = self.predict_proba(X)
        return np.log(proba, out=proba)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = True
        tags.input_tags.sparse = True
        return tags


# (D101: the docstring is the __doc__ assigned in the body, joined with
# _FASTNN_PARAMS_DOC; ruff sees only a literal docstring)
class MLPRegressor(RegressorMixin, _BaseMLP):  # noqa: D101
    __doc__ = (
        """Multi-layer perceptron regressor trained by fastnn's kernels.

    A drop-in replacement for ``sklearn.neural_network.MLPRegressor``: identity
    output, squared error (``loss_`` is half the mean squared error as in
    scikit-learn), single or multiple outputs.

    Parameters
    ----------
    loss : {"squared_error", "poisson"}, default="squared_error"
        "poisson": half the Poisson deviance with a log link, as scikit-learn's
        (``out_activation_`` is "exp"; targets must be non-negative).
    hidden_layer_sizes, activation, solver, alpha, batch_size, learning_rate,
    learning_rate_init, power_t, max_iter, shuffle, random_state, tol, verbose,
    warm_start, momentum, nesterovs_momentum, early_stopping, validation_fraction,
    beta_1, beta_2, epsilon, n_iter_no_change, max_fun :
        As for :class:`MLPClassifier` and scikit-learn.
    """
        + _FASTNN_PARAMS_DOC
        + """
    Attributes
    ----------
    As :class:`MLPClassifier` without ``classes_``; ``out_activation_`` is
    "identity" and validation scores are R^2.

    Examples
    --------
    >>> import numpy as np
    >>> from fastnn import MLPRegressor
    >>> X = np.linspace(-1, 1, 200).reshape(-1, 1)
    >>> reg = MLPRegressor(hidden_layer_sizes=(32,), learning_rate_init=0.01,
    ...                    random_state=0).fit(X, X[:, 0] ** 2)
    >>> reg.score(X, X[:, 0] ** 2) > 0.9
    True
    """
    )

    _KIND = "mlp_regressor"
    _parameter_constraints = {
        **_BaseMLP._parameter_constraints,
        "loss": [StrOptions({"squared_error", "poisson"})],
    }

    def __init__(
        self,
        loss="squared_error",
        hidden_layer_sizes=(100,),
        activation="relu",
        *,
        solver="adam",
        alpha=0.0001,
        batch_size="auto",
        learning_rate="constant",
        learning_rate_init=0.001,
        power_t=0.5,
        max_iter=200,
        shuffle=True,
        random_state=None,
        tol=1e-4,
        verbose=False,
        warm_start=False,
        momentum=0.9,
        nesterovs_momentum=True,
        early_stopping=False,
        validation_fraction=0.1,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-8,
        n_iter_no_change=10,
        max_fun=15000,
        optimizer=None,
        dropout=0.0,
        batch_norm=False,
        schedule=None,
        clip_norm=None,
        n_threads=None,
        backend=None,
        dtype=None,
        init="sklearn",
    ):
        self.loss = loss
        super().__init__(
            hidden_layer_sizes=hidden_layer_sizes,
            activation=activation,
            solver=solver,
            alpha=alpha,
            batch_size=batch_size,
            learning_rate=learning_rate,
            learning_rate_init=learning_rate_init,
            power_t=power_t,
            max_iter=max_iter,
            shuffle=shuffle,
            random_state=random_state,
            tol=tol,
            verbose=verbose,
            warm_start=warm_start,
            momentum=momentum,
            nesterovs_momentum=nesterovs_momentum,
            early_stopping=early_stopping,
            validation_fraction=validation_fraction,
            beta_1=beta_1,
            beta_2=beta_2,
            epsilon=epsilon,
            n_iter_no_change=n_iter_no_change,
            max_fun=max_fun,
            optimizer=optimizer,
            dropout=dropout,
            batch_norm=batch_norm,
            schedule=schedule,
            clip_norm=clip_norm,
            n_threads=n_threads,
            backend=backend,
            dtype=dtype,
            init=init,
        )

    def _loss_name(self):
        return "poisson" if self.loss == "poisson" else "mse"

    def _score_name(self):
        return "r2"

    def _validation_score(self, Xv, Yv):
        with np.errstate(over="ignore", invalid="ignore"):
            out = self._model._decision_checked(Xv)
            pred = self._model.loss.predict(None, out)  # e^z for poisson
        if not np.isfinite(pred).all():
            return math.nan  # scikit-learn's score of non-finite predictions
        return _r2(Yv, pred)

    def _sklearn_scale(self):
        if self.loss == "poisson":
            # fastnn: mean over m k elements of e^z - y z, gradient (e^z - y) / (m k);
            # scikit-learn: the same mean plus y log y - y, gradient (e^z - y) / m.
            return 1.0 / self.n_outputs_, 1.0
        # fastnn's mse: mean over m k elements, gradient 2 (p - y) / (m k);
        # scikit-learn: half the mean, gradient (p - y) / m.
        return 2.0 / self.n_outputs_, 0.5

    def _loss_offset(self, Y, w=None) -> float:
        """What scikit-learn's loss adds to fastnn's on targets Y: Poisson's terms
        constant in the prediction, mean(y log y - y) (weighted by w over samples)."""
        if self.loss != "poisson":
            return 0.0
        if w is not None:
            return float(np.average(self._sample_offsets(Y), weights=w))
        y = np.asarray(Y, np.float64)
        return float(np.mean(xlogy(y, y) - y))

    def _sample_offsets(self, Y):
        """Poisson: mean over each sample's outputs of y log y - y."""
        if self.loss != "poisson":
            return None
        y = np.asarray(Y, np.float64)
        return (xlogy(y, y) - y).mean(axis=1)

    def _weighted_validation_score(self, Xv, Yv, wv):
        with np.errstate(over="ignore", invalid="ignore"):
            out = self._model._decision_checked(Xv)
            pred = self._model.loss.predict(None, out)  # e^z for poisson
        if not np.isfinite(pred).all():
            return math.nan  # scikit-learn's score of non-finite predictions
        return float(r2_score(Yv, pred, sample_weight=wv))

    def _check_loaded_outputs(self, model) -> None:
        """Refuse a loaded network whose loss does not fit the estimator (hook)."""
        if model.loss.name != self._loss_name():
            raise ValueError(
                f"this regressor (loss={self.loss!r}) needs a {self._loss_name()} network, "
                f"got {model.loss.name!r}"
            )

    def _validate_input(self, X, y, incremental, reset, dtype):
        with _naming_the_argument(lambda: _culprit(X, dtype)):
            X, y = validate_data(
                self,
                X,
                y,
                multi_output=True,
                y_numeric=True,
                dtype=dtype,
                reset=reset,
                accept_sparse="csr",
            )
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        self.out_activation_ = "exp" if self.loss == "poisson" else "identity"
        return X, (y.reshape(-1, 1) if y.ndim == 1 else y)

    @_fit_context(prefer_skip_nested_validation=True)
    @trains
    def fit(self, X, y, sample_weight=None):
        """Fit the network to X (n_samples, n_features) and y (n_samples,) or
        (n_samples, n_outputs). Returns self.

        ``sample_weight`` (n_samples,), optional: non-negative per-sample weights, as
        scikit-learn's (see the module docstring, "Sample weights").
        """
        return self._fit(X, y, incremental=False, sample_weight=sample_weight)

    @available_if(_check_solver)
    @_fit_context(prefer_skip_nested_validation=True)
    @trains
    def partial_fit(self, X, y, sample_weight=None):
        """One epoch over (X, y), continuing with the current optimizer state;
        ``sample_weight`` as in :meth:`fit`."""
        return self._fit(X, y, incremental=True, sample_weight=sample_weight)

    @uses
    def predict(self, X) -> np.ndarray:
        """Predictions (n_samples,) for one output, else (n_samples, n_outputs)."""
        z = self._decision(X)  # checks that the estimator is fitted
        out = self._model.loss.predict(None, z)  # e^z for poisson
        return out.ravel() if out.shape[1] == 1 else out

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        tags.input_tags.sparse = True
        return tags


def _classifier_from_payload(model, metadata, arrays):
    return MLPClassifier._from_payload(model, metadata, arrays)


def _regressor_from_payload(model, metadata, arrays):
    return MLPRegressor._from_payload(model, metadata, arrays)
