"""Where fastnn plugs into compare.py: one factory per measured thing, per backend.

compare.py never builds fastnn objects itself; it calls the functions below with a
backend name ("numpy", "numba", "cython"), a dtype and a thread count. Each returns a
zero-argument callable doing one unit of work, or raises ``Unavailable``:
"not available yet" for a part of fastnn that does not exist yet, "not available" for
a backend that cannot run here (e.g. unbuilt Cython kernels).

THE PLUG-IN POINTS FOR THE TRAINING LIBRARY:

- :func:`make_fastnn_model` -- the model for a training configuration: an object with
  ``train_step(xb, yb)`` (one forward, loss, backward and Adam update, lr 1e-3, on a
  batch ``xb`` (batch, n_in) of ``dtype`` and int64 labels ``yb``), optionally
  ``prepare(xb, yb)`` (converts a batch once, untimed) and ``train_epoch(X, Y, batch)``
  (many steps in one call). Filled with ``fastnn.MLP`` + ``fastnn.Adam``.
- :func:`make_fastnn_classifier` -- the estimator for digits: ``fit(X, y)`` and
  ``predict(X)``. Filled with ``fastnn.MLPClassifier``.

When the installed fastnn lacks them they raise ``Unavailable("not available yet",
...)`` and the report says so; the harness never substitutes anything for them.
"""

from __future__ import annotations

import warnings

import numpy as np

from benchmarks.common import cycle
from peers import LR, MOMENTUM, Unavailable

NOT_YET = "not available yet"


def fastnn_backend(name: str):
    """``fastnn.backend(name)``, or Unavailable when that backend cannot run here."""
    try:
        import fastnn
    except ImportError as exc:
        raise Unavailable("not available", f"fastnn is not importable ({exc})") from None
    try:
        return fastnn.backend(name)
    except (ImportError, AttributeError) as exc:
        raise Unavailable("not available", f"backend {name!r}: {exc}") from None


# --- plug-in point 1: the training step -------------------------------------------------

class _MLPStepper:
    """fastnn.MLP with its Adam optimizer, behind the interface the harness times."""

    def __init__(self, net, optimizer):
        self.net, self.optimizer = net, optimizer

    def prepare(self, xb, yb):
        """(xb, yb) converted once, outside the timed region, as fastnn.fit does."""
        return self.net.check_data(xb, yb)

    def train_step(self, xb, yb):
        return self.net.train_step(xb, yb, self.optimizer)

    def train_epoch(self, X, Y, batch):
        """One pass over X in order (no shuffle), ``len(X) / batch`` steps."""
        return self.net.train_epoch(X, Y, self.optimizer, batch, shuffle=False)


def make_fastnn_model(backend: str, sizes: tuple[int, ...], dtype, batch: int,
                      n_threads: int, seed: int = 0, **regularisation):
    """fastnn's model for a ReLU MLP ``sizes`` with softmax cross-entropy and Adam
    (lr 1e-3, betas 0.9/0.999, eps 1e-8, no weight decay), running on ``backend`` in
    ``dtype``, ready for batches of ``batch`` rows.

    Returns an object with ``prepare(xb, yb)`` (called once per pre-made batch, not
    timed), ``train_step(xb, yb)`` (one forward, loss, backward and Adam update) and
    ``train_epoch(X, Y, batch)`` (consecutive steps over X in one call, fastnn's
    whole-epoch path). Threads are pinned by the harness around every call (BLAS for the
    step path); ``n_threads`` is also the model's own setting, the thread count of its
    whole-epoch kernel. ``regularisation``: ``dropout=`` / ``batch_norm=`` of
    ``fastnn.MLP``.
    """
    try:
        from fastnn import MLP, Adam
    except ImportError as exc:
        raise Unavailable(NOT_YET, f"fastnn has no MLP/Adam yet ({exc})") from None
    net = MLP(list(sizes), "relu", loss="cross_entropy", dtype=np.dtype(dtype).name,
              backend=backend, random_state=seed, **regularisation)
    if hasattr(net, "n_threads"):
        net.n_threads = n_threads
    return _MLPStepper(net, Adam(lr=LR))


def _prepared(model, batches):
    prepare = getattr(model, "prepare", None)
    return [prepare(x, y) for x, y in batches] if prepare else list(batches)


def fastnn_train_step(backend: str, cfg, dtype, batches, n_threads: int, seed: int = 0):
    """One ``train_step`` of fastnn's model per call, cycling over ``batches``."""
    fastnn_backend(backend)
    model = make_fastnn_model(backend, cfg.sizes, dtype, cfg.batch, n_threads, seed)
    nxt = cycle(_prepared(model, batches))

    def step():
        xb, yb = nxt()
        model.train_step(xb, yb)
    return step


def fastnn_epoch_step(backend: str, cfg, dtype, batches, n_threads: int, seed: int = 0,
                      **regularisation):
    """fastnn's ``train_epoch`` over all pre-made batches stacked (in order): one call
    does ``len(batches)`` steps, and the harness divides by ``steps_per_call``."""
    fastnn_backend(backend)
    model = make_fastnn_model(backend, cfg.sizes, dtype, cfg.batch, n_threads, seed,
                              **regularisation)
    if not hasattr(model, "train_epoch"):
        raise Unavailable(NOT_YET, "fastnn's model has no train_epoch")
    prepared = _prepared(model, batches)
    X = np.ascontiguousarray(np.concatenate([x for x, _ in prepared]))
    Y = np.ascontiguousarray(np.concatenate([y for _, y in prepared]))

    def epoch():
        model.train_epoch(X, Y, cfg.batch)
    epoch.steps_per_call = len(batches)
    return epoch


def fastnn_kernel_step(backend: str, cfg, dtype, batches, n_threads: int, seed: int = 0):
    """The step composed in Python from fastnn's public kernels (common.KernelStep):
    what the kernels give before a compiled whole-step path exists."""
    from benchmarks.common import KernelStep
    return KernelStep(fastnn_backend(backend), cfg, dtype, batches, seed=seed, lr=LR)


# --- the optimizer step alone ------------------------------------------------------------

def fastnn_optimizer(backend: str, kind: str, param, grad, n_threads: int):
    """``fastnn.backend(backend).adam_step`` / ``momentum_step`` (momentum 0.9, lr 1e-3)
    on the flat buffers ``param`` (updated in place) and ``grad``."""
    bk = fastnn_backend(backend)
    if kind == "adam":
        m = np.zeros_like(param)
        v = np.zeros_like(param)
        state = {"t": 0}

        def step():
            state["t"] += 1
            bk.adam_step(param, grad, m, v, state["t"], lr=LR)
    elif kind == "momentum":
        vel = np.zeros_like(param)

        def step():
            bk.momentum_step(param, grad, vel, LR, momentum=MOMENTUM)
    else:
        raise ValueError(kind)
    return step


# --- plug-in point 2: digits end to end ------------------------------------------------------

def make_fastnn_classifier(backend: str, hidden: tuple[int, ...], dtype, epochs: int,
                           batch: int, n_threads: int, seed: int = 0):
    """fastnn's scikit-learn-style classifier: ReLU hidden layers ``hidden``, softmax
    cross-entropy, Adam lr 1e-3, no L2 (alpha 0, as every peer here), ``batch`` rows per
    step, exactly ``epochs`` epochs (no early stopping), in ``dtype`` on ``backend``
    with ``n_threads`` threads.

    Returns an unfitted object with ``fit(X, y)``, ``predict(X)`` and ``n_iter_``.
    """
    try:
        import fastnn
        cls = fastnn.MLPClassifier
    except (ImportError, AttributeError) as exc:
        raise Unavailable(NOT_YET, f"fastnn has no MLPClassifier ({exc})") from None
    return cls(hidden_layer_sizes=tuple(hidden), activation="relu", solver="adam",
               alpha=0.0, batch_size=batch, learning_rate_init=LR, max_iter=epochs,
               shuffle=True, random_state=seed, tol=0.0, n_iter_no_change=epochs + 1,
               n_threads=n_threads, backend=backend, dtype=np.dtype(dtype).name)


def fastnn_digits(backend: str, data, sizes, epochs: int, batch: int, n_threads: int,
                  seed: int = 0):
    """fit -> test accuracy for fastnn's classifier on the digits split ``data``."""
    fastnn_backend(backend)
    Xtr, ytr, Xte, yte = data
    # Fail now, not in the timed region, when the classifier does not exist yet.
    make_fastnn_classifier(backend, tuple(sizes[1:-1]), Xtr.dtype, epochs, batch,
                           n_threads, seed)

    def fit():
        clf = make_fastnn_classifier(backend, tuple(sizes[1:-1]), Xtr.dtype, epochs,
                                     batch, n_threads, seed)
        with warnings.catch_warnings():
            # Reaching max_iter is the point here, not a problem to report.
            warnings.filterwarnings("ignore", category=_convergence_warning())
            clf.fit(Xtr, ytr)
        n_iter = getattr(clf, "n_iter_", epochs)
        if n_iter != epochs:
            raise RuntimeError(f"fastnn ran {n_iter} epochs, not {epochs}")
        return float(np.mean(np.asarray(clf.predict(Xte)) == yte))
    return fit


def _convergence_warning():
    try:
        from sklearn.exceptions import ConvergenceWarning
    except ImportError:
        return RuntimeWarning
    return ConvergenceWarning
