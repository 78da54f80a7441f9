"""Sparse X: a batch's cost follows its non-zeros, not the number of columns.

Fits ``fastnn.MLP([n_features, hidden, 2])`` on CSR data of 100,000 columns at 0.1%
density and on a 10x denser copy (1%), and on 10,000 columns with as many non-zeros
per row as the first case, and prints for each:

- seconds per epoch (after a first, warm-up epoch) on the step path a CSR fit runs;
- the first layer's kernels per batch: ``csr_dense_forward`` (O(nnz(batch) n_out)) and
  ``csr_dense_backward`` (O(nnz(batch) n_out) plus zeroing dW, n_features n_out
  stores), next to the dense layer's forward on the same batch densified (BLAS,
  O(m n_features n_out)), and the optimizer step (dense over every weight);
- memory: the CSR X itself, the parameters, the peak that NumPy allocated during the
  epochs (tracemalloc, on top of X and the model) and the process's peak RSS, next to
  the size a dense copy of X would take (never made).

    python benchmarks/sparse.py [--rows 4000] [--hidden 64] [--backend cython]

The machine is shared: read the figures as indicative, and the ratios within one run.
"""

from __future__ import annotations

import argparse
import resource
import time
import tracemalloc

import numpy as np
import scipy.sparse as sp

import fastnn
from fastnn.optim import Adam


def make_csr(n_rows, n_features, nnz_per_row, dtype, rng):
    """n_rows x n_features CSR with nnz_per_row distinct random columns in every row."""
    indices = np.empty(n_rows * nnz_per_row, np.int32)
    for i in range(n_rows):
        cols = rng.choice(n_features, nnz_per_row, replace=False)
        indices[i * nnz_per_row : (i + 1) * nnz_per_row] = np.sort(cols)
    indptr = np.arange(0, n_rows * nnz_per_row + 1, nnz_per_row, dtype=np.int32)
    data = rng.standard_normal(indices.size).astype(dtype)
    return sp.csr_matrix((data, indices, indptr), shape=(n_rows, n_features))


def median_time(fn, reps):
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def run_case(n_rows, n_features, nnz_per_row, args):
    rng = np.random.default_rng(0)
    dtype = np.dtype(args.dtype)
    X = make_csr(n_rows, n_features, nnz_per_row, dtype, rng)
    score = X @ rng.standard_normal(n_features).astype(dtype)
    y = (score > np.median(score)).astype(np.int64)
    model = fastnn.MLP(
        [n_features, args.hidden, 2],
        loss="cross_entropy",
        backend=args.backend,
        dtype=dtype,
        random_state=0,
    )
    X, y = model.check_data(X, y)
    opt = Adam(1e-3)
    model.train_epoch(X, y, opt, args.batch_size)  # warm-up (JIT, workspaces)
    tracemalloc.start()
    t = time.perf_counter()
    for _ in range(args.epochs):
        model.train_epoch(X, y, opt, args.batch_size)
    per_epoch = (time.perf_counter() - t) / args.epochs
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()

    # the first layer's kernels and the optimizer step, on one batch
    k = model.kernels._raw
    layer = model.layers[0]
    m = args.batch_size
    rows = rng.permutation(n_rows)[:m].astype(np.int64)
    z = np.empty((m, args.hidden), dtype)
    g = rng.standard_normal((m, args.hidden)).astype(dtype)
    dz = np.empty_like(z)
    dw = np.empty_like(layer.W)
    db = np.empty(args.hidden, dtype)
    relu = fastnn.registry.activation("relu").code
    fwd = median_time(
        lambda: k.csr_dense_forward(
            X.indptr, X.indices, X.data, rows, layer.W, layer.b, relu, 0.0, z, z
        ),
        args.reps,
    )
    bwd = median_time(
        lambda: k.csr_dense_backward(
            X.indptr, X.indices, X.data, rows, z, z, g, relu, 0.0, dz, dw, db
        ),
        args.reps,
    )
    step = median_time(lambda: opt.step(model), args.reps)
    # the dense layer on the same batch densified (one batch only: the whole dense X
    # is what this script shows is never needed)
    xd = np.ascontiguousarray(X[rows].toarray())
    dense = median_time(
        lambda: k.dense_forward(xd, layer.W, layer.b, relu, 0.0, z, z), max(3, args.reps // 4)
    )
    x_bytes = X.data.nbytes + X.indices.nbytes + X.indptr.nbytes
    return {
        "columns": n_features,
        "density": nnz_per_row / n_features,
        "nnz/row": nnz_per_row,
        "s/epoch": per_epoch,
        "fwd ms/batch": fwd * 1e3,
        "bwd ms/batch": bwd * 1e3,
        "dense fwd ms/batch": dense * 1e3,
        "opt ms/step": step * 1e3,
        "X MB": x_bytes / 1e6,
        "params MB": model.params.nbytes / 1e6,
        "peak alloc MB": peak / 1e6,
        "dense X would be MB": n_rows * n_features * dtype.itemsize / 1e6,
    }


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rows", type=int, default=4000)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=200)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--reps", type=int, default=20)
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    p.add_argument("--backend", default=None, choices=[None, *fastnn.available_backends()])
    args = p.parse_args(argv)
    cases = [(100_000, 100), (100_000, 1000), (10_000, 100)]
    rows = [run_case(args.rows, n_features, nnz, args) for n_features, nnz in cases]
    backend = fastnn.backend(args.backend).name
    print(
        f"fastnn {fastnn.__version__}, backend {backend}, {args.dtype}, {args.rows} rows, "
        f"MLP [n_features, {args.hidden}, 2], batch {args.batch_size}, Adam"
    )
    keys = list(rows[0])
    print(" | ".join(keys))
    for r in rows:
        print(" | ".join(f"{r[k]:.4g}" if isinstance(r[k], float) else str(r[k]) for k in keys))
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3
    print(f"peak RSS of the process: {rss:.0f} MB")


if __name__ == "__main__":
    main()
