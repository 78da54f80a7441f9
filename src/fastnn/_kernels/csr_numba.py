"""Numba kernels for the first dense layer on CSR rows (contract: ``fastnn.reference.csr``).

indptr (n_rows + 1,), indices, data (nnz,), rows (m,) int64; w (n_features, n_out),
b (n_out,), z, a, da, dz (m, n_out), dw (n_features, n_out). Plain loops in the order of
docs/spec.md §2.1 (no BLAS), so the results equal the reference's bit for bit; the
activation is the activations family's kernel, by code.
"""

from ._numba_common import jit
from .activations_numba import activation_backward, activation_forward

__all__ = [
    "csr_dense_forward",
    "csr_dense_backward",
]


@jit
def csr_dense_forward(indptr, indices, data, rows, w, b, activation, alpha, z, a):
    """z (m, n_out) = X[rows] @ w + b, entries in storage order; a = g(z) (a may be z)."""
    m, n_out = z.shape
    for r in range(m):
        i = rows[r]
        for j in range(n_out):
            z[r, j] = 0
        for p in range(indptr[i], indptr[i + 1]):
            c = indices[p]
            x = data[p]
            for j in range(n_out):
                z[r, j] += x * w[c, j]
        for j in range(n_out):
            z[r, j] += b[j]
    activation_forward(z, activation, alpha, a)


@jit
def csr_dense_backward(indptr, indices, data, rows, z, a, da, activation, alpha, dz, dw, db):
    """dz = da * g'(z) (dz may be da); dw (overwritten) = X[rows].T @ dz; db = column
    sums of dz, row after row."""
    activation_backward(da, z, a, activation, alpha, dz)
    m, n_out = dz.shape
    dw[...] = 0
    for j in range(n_out):
        db[j] = 0
    for r in range(m):
        i = rows[r]
        for p in range(indptr[i], indptr[i + 1]):
            c = indices[p]
            x = data[p]
            for j in range(n_out):
                dw[c, j] += x * dz[r, j]
        for j in range(n_out):
            db[j] += dz[r, j]
