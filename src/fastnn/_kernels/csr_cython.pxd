# C-level kernels of the first dense layer on CSR rows (contract: fastnn.reference.csr).
# indptr (n_rows + 1), indices and data (nnz), rows (m) the batch's row ids; w
# (n_features, n_out), b (n_out), z, a, da, dz (m, n_out), dw (n_features, n_out),
# row-major. Plain loops in the order of docs/spec.md §2.1, no BLAS.

from cython cimport floating
from libc.stdint cimport int32_t, int64_t

ctypedef fused csr_index:
    int32_t
    int64_t


# z = X[rows] @ w + b, a = g(z); a may be z. work: n_out doubles for softmax.
cdef void c_csr_dense_forward(const csr_index* indptr, const csr_index* indices,
                              const floating* data, const int64_t* rows,
                              const floating* w, const floating* b,
                              Py_ssize_t m, Py_ssize_t n_out, int activation,
                              double alpha, floating* z, floating* a,
                              double* work) noexcept nogil

# dz = da * g'(z) (dz may be da); dw (n_features rows, overwritten) = X[rows]^T dz;
# db = dz summed over the rows in order.
cdef void c_csr_dense_backward(const csr_index* indptr, const csr_index* indices,
                               const floating* data, const int64_t* rows,
                               const floating* z, const floating* a,
                               const floating* da, Py_ssize_t m, Py_ssize_t n_features,
                               Py_ssize_t n_out, int activation, double alpha,
                               floating* dz, floating* dw,
                               floating* db) noexcept nogil
