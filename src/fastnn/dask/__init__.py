"""fastnn on a Dask cluster: parallel searches, Optuna studies, out-of-core training.

fastnn does not schedule work across machines itself; this module plugs its
estimators and training loop into Dask (``pip install 'fastnn-mlp[dask]'``, plus
``'fastnn-mlp[optuna]'`` for the Optuna pieces). ``import fastnn`` does not import it.

- :func:`parallel_search` runs scikit-learn's joblib-parallel work (GridSearchCV,
  RandomizedSearchCV, cross_validate, ...) on a Dask cluster through joblib's Dask
  backend, with every worker's BLAS limited to a per-task thread budget
  (:class:`ThreadBudget`).
- :func:`fit_blocks` trains an estimator by ``partial_fit`` over the blocks of a Dask
  array or DataFrame, a few blocks at a time, in a seeded random block order each
  epoch; :func:`predict`, :func:`predict_proba` and :func:`score` run blockwise.
- :class:`PruningCallback`, :class:`Objective` and :func:`optimize_on_dask` run an
  Optuna study over fastnn's hyperparameters, pruned from per-epoch validation
  scores, with its trials as tasks on the same cluster.

Results do not depend on where tasks run: a fastnn network trained with a fixed
``random_state`` and thread count gives the same bits in any process, so a search
or an out-of-core fit on a cluster equals the same computation in one process.
"""

from __future__ import annotations

# One module per subsystem: search.py (ThreadBudget, parallel_search), blocks.py
# (fit_blocks and blockwise inference), optuna.py (the Optuna pieces; Optuna itself is
# imported only when they run).
try:
    import dask  # noqa: F401
    import distributed  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised only without Dask
    raise ImportError(
        "fastnn.dask needs Dask; install it with `pip install 'fastnn-mlp[dask]'`"
    ) from exc

from .blocks import fit_blocks, predict, predict_proba, score
from .optuna import DEFAULT_SPACE, Objective, PruningCallback, optimize_on_dask
from .search import ThreadBudget, parallel_search

__all__ = [
    "ThreadBudget",
    "parallel_search",
    "fit_blocks",
    "predict",
    "predict_proba",
    "score",
    "PruningCallback",
    "Objective",
    "DEFAULT_SPACE",
    "optimize_on_dask",
]
