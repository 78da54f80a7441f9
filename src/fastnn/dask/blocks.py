"""Out-of-core training and blockwise inference over Dask arrays and DataFrames."""

from __future__ import annotations

import copy
import math
from collections import deque
from collections.abc import Callable
from typing import Any

import dask
import dask.array as da
import distributed
import numpy as np

__all__ = ["fit_blocks", "predict", "predict_proba", "score"]

# --- blocks of Dask collections --------------------------------------------------------------


def _is_frame(obj) -> bool:
    return hasattr(obj, "npartitions") and hasattr(obj, "map_partitions")


def _block_list(obj, name, row_chunks=None) -> list:
    """The row blocks of a Dask array, DataFrame or Series as a list of Delayed."""
    if _is_frame(obj):
        return list(obj.to_delayed())
    if isinstance(obj, da.Array):
        if obj.ndim not in (1, 2):
            raise ValueError(f"{name} must be 1-D or 2-D, got {obj.ndim}-D")
        if (
            row_chunks is not None
            and obj.chunks[0] != row_chunks
            and not any(math.isnan(c) for c in row_chunks)
        ):
            obj = obj.rechunk({0: row_chunks})
        if obj.ndim == 2 and len(obj.chunks[1]) > 1:
            obj = obj.rechunk({1: -1})
        return list(obj.to_delayed().ravel())
    raise TypeError(f"{name} must be a Dask array, DataFrame or Series, got {type(obj).__name__}")


def _blocks(X, y=None) -> tuple[list, Any]:  # Any: a list when y is given, else None
    xs = _block_list(X, "X")
    if y is None:
        return xs, None
    rows = X.chunks[0] if isinstance(X, da.Array) else None
    ys = _block_list(y, "y", rows)
    if len(ys) != len(xs):
        raise ValueError(
            f"X has {len(xs)} blocks of rows and y {len(ys)}; give them the "
            f"same partitions (e.g. y.rechunk(X.chunks[0]))"
        )
    return xs, ys


def _concat(parts):
    if len(parts) == 1:
        return parts[0]
    if hasattr(parts[0], "iloc"):
        import pandas as pd

        return pd.concat(parts)
    return np.concatenate(parts)


def _partial_fit_step(estimator, xs, ys, fit_params):
    """partial_fit on the rows of some blocks, concatenated in the order given."""
    X, y = _concat(xs), _concat(ys)
    if len(X) != len(y):
        raise ValueError(f"a block of X has {len(X)} rows and the matching block of y {len(y)}")
    return estimator.partial_fit(X, y, **fit_params)


def fit_blocks(
    estimator,
    X,
    y,
    *,
    epochs: int = 1,
    classes=None,
    random_state: int | np.random.Generator | None = None,
    blocks_per_call: int = 1,
    prefetch: int = 1,
    client: distributed.Client | None | bool = None,
    on_epoch_end: Callable[[int, Any], bool | None] | None = None,
):
    """Train ``estimator`` by ``partial_fit`` over the blocks of a Dask collection.

    Every epoch draws a permutation of the row blocks (``rng.permutation(n_blocks)``
    with ``rng = np.random.default_rng(random_state)``, one draw per epoch) and calls
    ``partial_fit`` on consecutive groups of ``blocks_per_call`` blocks, their rows
    concatenated; the estimator shuffles the rows of each call itself (fastnn's
    ``shuffle=True``), so ``blocks_per_call > 1`` also mixes rows across blocks. Only
    the blocks of the calls in flight are ever computed, on the cluster's workers
    where the training runs too (the estimator travels from task to task), and they
    are computed again at the next epoch: the data set is never held anywhere whole.

    Parameters
    ----------
    estimator : fastnn.MLPClassifier or fastnn.MLPRegressor
        Any estimator with ``partial_fit``; it is copied, not modified. A fitted one
        continues from its state.
    X : dask.array.Array (n_samples, n_features) or dask.dataframe.DataFrame
        Row blocks are the training units (the columns are put into one chunk).
    y : dask.array.Array, dask Series or DataFrame
        Targets with the same row blocks as X (an array is rechunked to X's rows).
    epochs : int, default 1
    classes : array-like, optional
        All class labels, passed to a classifier's ``partial_fit``; required for a
        new classifier.
    random_state : int, Generator or None
        Seeds the block order.
    blocks_per_call : int, default 1
        Blocks concatenated for one ``partial_fit`` call.
    prefetch : int, default 1
        Calls submitted ahead of the one running (each holds its blocks in memory).
    client : distributed.Client, None or False
        None: the default client if there is one, else train in this process with
        Dask's local scheduler computing one call's blocks at a time. False: always in
        this process.
    on_epoch_end : callable ``(epoch, estimator) -> bool | None``, optional
        Called in this process after every epoch (0-based) with the estimator trained
        so far; returning True stops.

    Returns
    -------
    estimator
        The trained copy.
    """
    epochs = int(epochs)
    blocks_per_call = int(blocks_per_call)
    prefetch = int(prefetch)
    if epochs < 0 or blocks_per_call < 1 or prefetch < 0:
        raise ValueError("epochs must be >= 0, blocks_per_call >= 1 and prefetch >= 0")
    from sklearn.base import is_classifier

    fit_params = {"classes": classes} if is_classifier(estimator) else {}
    xs, ys = _blocks(X, y)
    rng = np.random.default_rng(random_state)
    if client is None:
        try:
            client = distributed.default_client()
        except ValueError:
            client = False
    est = copy.deepcopy(estimator)
    for epoch in range(epochs):
        order = rng.permutation(len(xs))
        groups = [order[s : s + blocks_per_call] for s in range(0, len(order), blocks_per_call)]
        if client is False:
            for g in groups:
                xb, yb = dask.compute([xs[i] for i in g], [ys[i] for i in g], scheduler="threads")
                est = _partial_fit_step(est, xb, yb, fit_params)
        else:
            est = _epoch_on_cluster(client, est, xs, ys, groups, fit_params, prefetch)
        if on_epoch_end is not None and on_epoch_end(epoch, est):
            break
    return est


def _epoch_on_cluster(client, est, xs, ys, groups, fit_params, prefetch):
    """One epoch as a chain of partial_fit tasks; at most ``prefetch + 1`` in flight.

    The estimator enters the chain as a task argument (not scattered data), so a
    lost intermediate is recomputed from its lineage; the epoch's result is fetched,
    which also cuts the lineage there.
    """
    model = est
    in_flight: deque = deque()
    for g in groups:
        blocks = client.compute([xs[i] for i in g] + [ys[i] for i in g])
        xb, yb = blocks[: len(g)], blocks[len(g) :]
        model = client.submit(_partial_fit_step, model, xb, yb, fit_params, pure=False)
        in_flight.append(model)
        if len(in_flight) > prefetch:
            distributed.wait(in_flight.popleft())
    return model.result()


# --- blockwise prediction and scoring ----------------------------------------------------------


def _apply(block, estimator, method):
    return getattr(estimator, method)(block)


def _apply_frame(part, estimator, method, columns):
    import pandas as pd

    out = getattr(estimator, method)(part)
    if out.ndim == 1:
        return pd.Series(out, index=part.index)
    return pd.DataFrame(out, index=part.index, columns=columns)


def _output_spec(estimator, method):
    """(dtype, number of columns or None for 1-D, column names) of a method's output."""
    from sklearn.base import is_classifier

    fdtype = estimator.coefs_[0].dtype
    if method == "predict_proba":
        return fdtype, len(estimator.classes_), list(estimator.classes_)
    if is_classifier(estimator):
        multilabel = estimator._label_binarizer.y_type_ == "multilabel-indicator"
        k = len(estimator.classes_) if multilabel else None
        return estimator.classes_.dtype, k, None if k is None else list(range(k))
    k = estimator.n_outputs_
    return fdtype, (k if k > 1 else None), None if k == 1 else list(range(k))


def _blockwise(estimator, X, method):
    dtype, k, columns = _output_spec(estimator, method)
    if _is_frame(X):
        import pandas as pd

        if k is None:
            meta = pd.Series([], dtype=dtype)
        else:
            meta = pd.DataFrame({c: pd.Series([], dtype=dtype) for c in columns})
        return X.map_partitions(_apply_frame, estimator, method, columns, meta=meta)
    if not isinstance(X, da.Array) or X.ndim != 2:
        raise TypeError(f"X must be a 2-D Dask array or a Dask DataFrame, got {type(X).__name__}")
    X = X.rechunk({1: -1})
    if k is None:
        return X.map_blocks(_apply, estimator, method, dtype=dtype, drop_axis=1)
    return X.map_blocks(_apply, estimator, method, dtype=dtype, chunks=(X.chunks[0], (k,)))


def predict(estimator, X):
    """``estimator.predict`` on every row block of X, lazily.

    Returns a Dask array (from an array X) or Series / DataFrame (from a DataFrame X)
    with X's row blocks; compute it (or store it) to run the blocks in parallel.
    """
    return _blockwise(estimator, X, "predict")


def predict_proba(estimator, X):
    """``estimator.predict_proba`` on every row block of X, lazily (see :func:`predict`)."""
    return _blockwise(estimator, X, "predict_proba")


def _block_score(estimator, X, y):
    """Sufficient statistics of one block for the whole-data score."""
    from sklearn.base import is_classifier

    pred = estimator.predict(X)
    y = np.asarray(y)
    if is_classifier(estimator):
        right = pred == y if y.ndim == 1 else (pred == y).all(axis=1)
        return {"n": len(y), "correct": int(right.sum())}
    y = y.reshape(len(y), -1).astype(np.float64)
    pred = np.asarray(pred, dtype=np.float64).reshape(y.shape)
    mean = y.mean(axis=0) if len(y) else np.zeros(y.shape[1])
    return {
        "n": len(y),
        "sse": ((y - pred) ** 2).sum(axis=0),
        "mean": mean,
        "m2": ((y - mean) ** 2).sum(axis=0),
    }


def _combine_r2(stats) -> float:
    """R^2 averaged over outputs (scikit-learn's r2_score) from per-block statistics:
    the total sum of squares is pooled with Chan et al.'s pairwise update."""
    m2: Any
    sse: Any  # floats, then arrays of one value per output
    n, mean, m2, sse = 0, 0.0, 0.0, 0.0
    for s in stats:
        if s["n"] == 0:
            continue
        delta = s["mean"] - mean
        total = n + s["n"]
        m2 = m2 + s["m2"] + delta**2 * n * s["n"] / total
        mean = mean + delta * s["n"] / total
        n = total
        sse = sse + s["sse"]
    sse, m2 = np.atleast_1d(sse), np.atleast_1d(m2)
    # scikit-learn's conventions for a constant target: 1 if predicted exactly, else 0.
    with np.errstate(divide="ignore", invalid="ignore"):
        r2 = np.where(m2 > 0, 1.0 - sse / m2, np.where(sse == 0, 1.0, 0.0))
    return float(r2.mean())


def score(estimator, X, y) -> float:
    """The estimator's ``score`` on (X, y) computed blockwise in parallel.

    Accuracy (classifiers; subset accuracy for multilabel) or R^2 averaged over
    outputs (regressors), from per-block counts and sums, so no block of X ever
    meets another. Equals ``estimator.score`` on the whole data, up to the order of
    the floating-point sums for R^2.
    """
    from sklearn.base import is_classifier

    xs, ys = _blocks(X, y)
    stats = dask.compute(*[dask.delayed(_block_score)(estimator, xb, yb) for xb, yb in zip(xs, ys)])
    if is_classifier(estimator):
        n = sum(s["n"] for s in stats)
        return sum(s["correct"] for s in stats) / n
    return _combine_r2(stats)
