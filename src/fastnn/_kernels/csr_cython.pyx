"""Cython kernels of the first dense layer on CSR rows: fastnn.reference.csr compiled.

Plain loops in the order of docs/spec.md §2.1 (no BLAS), so the results equal the
reference's and the Numba kernels' bit for bit; the activation is the activations
family's C kernel, by code. Arguments come checked from ``fastnn.backend("cython")``.
"""

from cython cimport floating
from libc.stdint cimport int32_t, int64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memset

from fastnn._kernels.activations_cython cimport (
    SOFTMAX, c_activation_backward, c_activation_forward,
)

__all__ = [
    "csr_dense_forward",
    "csr_dense_backward",
]


# --- C-level kernels -----------------------------------------------------------------

cdef void c_csr_dense_forward(const csr_index* indptr, const csr_index* indices,
                              const floating* data, const int64_t* rows,
                              const floating* w, const floating* b,
                              Py_ssize_t m, Py_ssize_t n_out, int activation,
                              double alpha, floating* z, floating* a,
                              double* work) noexcept nogil:
    """z[r] = sum over the entries p of row rows[r], in storage order, of
    data[p] w[indices[p]], then + b; a = g(z)."""
    cdef Py_ssize_t r, j, p, i
    cdef floating x
    cdef floating* zr
    cdef const floating* wc
    for r in range(m):
        i = rows[r]
        zr = z + r * n_out
        for j in range(n_out):
            zr[j] = 0
        for p in range(indptr[i], indptr[i + 1]):
            x = data[p]
            wc = w + <Py_ssize_t>indices[p] * n_out
            for j in range(n_out):
                zr[j] = zr[j] + x * wc[j]
        for j in range(n_out):
            zr[j] = zr[j] + b[j]
    c_activation_forward(z, m, n_out, activation, alpha, a, work)


cdef void c_csr_dense_backward(const csr_index* indptr, const csr_index* indices,
                               const floating* data, const int64_t* rows,
                               const floating* z, const floating* a,
                               const floating* da, Py_ssize_t m, Py_ssize_t n_features,
                               Py_ssize_t n_out, int activation, double alpha,
                               floating* dz, floating* dw,
                               floating* db) noexcept nogil:
    """dz = da g'(z); dw zeroed, then dw[indices[p]] += data[p] dz[r] for r in order
    and the entries of row rows[r] in storage order; db[j] += dz[r, j] in row order."""
    cdef Py_ssize_t r, j, p, i
    cdef floating x
    cdef floating* dwc
    cdef const floating* dzr
    c_activation_backward(da, z, a, m, n_out, activation, alpha, dz)
    memset(dw, 0, n_features * n_out * sizeof(floating))
    for j in range(n_out):
        db[j] = 0
    for r in range(m):
        i = rows[r]
        dzr = dz + r * n_out
        for p in range(indptr[i], indptr[i + 1]):
            x = data[p]
            dwc = dw + <Py_ssize_t>indices[p] * n_out
            for j in range(n_out):
                dwc[j] = dwc[j] + x * dzr[j]
        for j in range(n_out):
            db[j] = db[j] + dzr[j]


# --- Python wrappers (the reference's signatures) ------------------------------------
# indices and data may be empty (a batch of zeros): their pointers are then NULL and
# never read, since every row's range indptr[i] .. indptr[i + 1] is empty.

def csr_dense_forward(const csr_index[::1] indptr, const csr_index[::1] indices,
                      const floating[::1] data, const int64_t[::1] rows,
                      const floating[:, ::1] w, const floating[::1] b, int activation,
                      double alpha, floating[:, ::1] z, floating[:, ::1] a):
    """z = X[rows] @ w + b, a = g(z), in the order of docs/spec.md §2.1; a may be z."""
    cdef Py_ssize_t m = z.shape[0], n_out = z.shape[1]
    cdef double* work = NULL
    cdef const csr_index* ind = &indices[0] if indices.shape[0] else NULL
    cdef const floating* dat = &data[0] if data.shape[0] else NULL
    if m == 0 or n_out == 0:
        return
    if activation == SOFTMAX:
        work = <double*>malloc(n_out * sizeof(double))
        if work == NULL:
            raise MemoryError()
    with nogil:
        c_csr_dense_forward(&indptr[0], ind, dat, &rows[0], &w[0, 0], &b[0], m, n_out,
                            activation, alpha, &z[0, 0], &a[0, 0], work)
    free(work)


def csr_dense_backward(const csr_index[::1] indptr, const csr_index[::1] indices,
                       const floating[::1] data, const int64_t[::1] rows,
                       const floating[:, ::1] z, const floating[:, ::1] a,
                       const floating[:, ::1] da, int activation, double alpha,
                       floating[:, ::1] dz, floating[:, ::1] dw, floating[::1] db):
    """dz = da g'(z), dw = X[rows]^T dz (overwritten), db = column sums of dz (§2.1)."""
    cdef Py_ssize_t m = dz.shape[0], n_out = dz.shape[1], n_features = dw.shape[0]
    cdef const csr_index* ind = &indices[0] if indices.shape[0] else NULL
    cdef const floating* dat = &data[0] if data.shape[0] else NULL
    if m == 0 or n_out == 0 or n_features == 0:
        return
    with nogil:
        c_csr_dense_backward(&indptr[0], ind, dat, &rows[0], &z[0, 0], &a[0, 0],
                             &da[0, 0], m, n_features, n_out, activation, alpha,
                             &dz[0, 0], &dw[0, 0], &db[0])
