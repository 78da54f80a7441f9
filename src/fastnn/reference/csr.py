"""The first dense layer on rows of a CSR matrix (docs/spec.md §2.1), in a fixed order.

The input of the batch is ``X[rows]`` for a CSR matrix X given by its three arrays:
indptr (n_rows + 1,), indices and data (nnz,), with ``rows`` (m,) int64 the batch's row
ids (the epoch order). w (n_features, n_out), b (n_out,), z, a, da, dz (m, n_out), dw
(n_features, n_out). Nothing here uses BLAS: the sums run in the order of §2.1, which the
Numba and Cython kernels follow, so the three backends agree bit for bit. Each entry of
a row is used once, so a batch costs O(nnz(batch) n_out) (plus zeroing dw).
"""

import numpy as np

from .activations import activation_backward, activation_forward

__all__ = [
    "csr_dense_forward",
    "csr_dense_backward",
]


def _entries(indptr, rows):
    """(first entry, entry count) of each batch row, as int64."""
    rows = np.asarray(rows, dtype=np.int64)
    starts = np.asarray(indptr[rows], dtype=np.int64)
    return starts, np.asarray(indptr[rows + 1], dtype=np.int64) - starts


def csr_dense_forward(indptr, indices, data, rows, w, b, activation, alpha, z, a):
    """z = X[rows] @ w + b and a = g(z), written into ``z`` and ``a`` (``a`` may be ``z``).

    z[r, j] starts at 0 and adds data[p] * w[indices[p], j] for the entries p of row
    rows[r] in storage order (each product and sum rounded to the dtype), then b[j].
    The k-th entries of all rows are added in one vectorised step, which keeps that
    order for every element.
    """
    starts, counts = _entries(indptr, rows)
    z[...] = 0
    for k in range(int(counts.max(initial=0))):
        sel = np.flatnonzero(counts > k)
        p = starts[sel] + k
        z[sel] += data[p][:, None] * w[indices[p]]
    z += b
    activation_forward(z, activation, alpha, a)


def csr_dense_backward(indptr, indices, data, rows, z, a, da, activation, alpha, dz, dw, db):
    """dz = da * g'(z); dw = X[rows].T @ dz; db = dz summed over the batch.

    dw is zeroed, then dw[indices[p], j] += data[p] * dz[r, j] for r = 0 .. m - 1 and the
    entries p of row rows[r] in storage order (np.add.at adds in that order, unbuffered);
    db[j] adds dz[r, j] for r = 0 .. m - 1 in turn. ``dz`` may be ``da``.
    """
    activation_backward(da, z, a, activation, alpha, dz)
    starts, counts = _entries(indptr, rows)
    # Entry ids of the batch in (row, storage) order, and the batch row of each.
    p = np.repeat(starts - np.cumsum(counts) + counts, counts) + np.arange(counts.sum())
    r = np.repeat(np.arange(len(counts)), counts)
    dw[...] = 0
    np.add.at(dw, indices[p], data[p][:, None] * dz[r])
    db[...] = 0
    for i in range(dz.shape[0]):
        db += dz[i]
