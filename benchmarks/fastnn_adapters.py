"""Where fastnn plugs into compare.py: one factory per measured thing, per backend.

compare.py never builds fastnn objects itself; it calls the functions below with a
backend name ("numpy", "numba", "cython"), a dtype and a thread count. Each returns a
zero-argument callable doing one unit of work, or raises ``Unavailable``:
"not available yet" for a part of fastnn that does not exist yet, "not available" for
a backend that cannot run here (e.g. unbuilt Cython kernels).

PLUG-IN POINTS FOR THE TRAINING LIBRARY (the only two functions to fill):

- :func:`make_fastnn_model` -- build the model for a training configuration; it must
  return an object with ``train_step(xb, yb)`` doing one forward, loss, backward and
  Adam update (lr 1e-3) on a batch ``xb`` (batch, n_in) of ``dtype`` and int64 labels
  ``yb`` (batch,).
- :func:`make_fastnn_classifier` -- build the estimator for digits; it must return an
  object with ``fit(X, y)`` and ``predict(X)``.

Until they are filled they raise ``Unavailable("not available yet", ...)`` and the
report says so; the harness never substitutes anything for them.
"""

from __future__ import annotations

import numpy as np

from peers import LR, MOMENTUM, Unavailable, _cycle

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

def make_fastnn_model(backend: str, sizes: tuple[int, ...], dtype, batch: int,
                      n_threads: int, seed: int = 0):
    """fastnn's model for a ReLU MLP ``sizes`` with softmax cross-entropy and Adam
    (lr 1e-3, betas 0.9/0.999, eps 1e-8, no weight decay), running on ``backend`` in
    ``dtype`` with ``n_threads`` threads, ready for batches of ``batch`` rows.

    Must return an object with ``train_step(xb, yb)``. Workspaces may be allocated
    here (the first call is also made during warm-up, before any timing).
    """
    raise Unavailable(NOT_YET, "fastnn has no training library yet: fill "
                               "fastnn_adapters.make_fastnn_model")


def fastnn_train_step(backend: str, cfg, dtype, batches, n_threads: int, seed: int = 0):
    """One training step of fastnn's model per call, cycling over ``batches``."""
    fastnn_backend(backend)
    model = make_fastnn_model(backend, cfg.sizes, dtype, cfg.batch, n_threads, seed)
    nxt = _cycle(batches)

    def step():
        xb, yb = nxt()
        model.train_step(xb, yb)
    return step


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
    cross-entropy, Adam lr 1e-3, ``batch`` rows per step, exactly ``epochs`` epochs
    (no early stopping), in ``dtype`` on ``backend`` with ``n_threads`` threads.

    Must return an unfitted object with ``fit(X, y)`` and ``predict(X)``.
    """
    raise Unavailable(NOT_YET, "fastnn has no estimator yet: fill "
                               "fastnn_adapters.make_fastnn_classifier")


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
        clf.fit(Xtr, ytr)
        return float(np.mean(np.asarray(clf.predict(Xte)) == yte))
    return fit
