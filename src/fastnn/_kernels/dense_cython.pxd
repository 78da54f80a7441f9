# C-level dense-layer kernels on raw pointers. Row-major: x (m, n_in), w (n_in, n_out),
# b (n_out,), z, a, da, dz (m, n_out), dw (n_in, n_out), dx (m, n_in). Products go
# through SciPy's BLAS with the reference's operands and blocks, the blocks on up to
# n_threads threads (fastnn_pool.h; the same bits for any n_threads); nothing divides
# by m.

from cython cimport floating

from fastnn._kernels.blas_cython cimport fnn_task_fn


# z = x @ w + b and a = g(z); a may be z. work: n_out doubles, only used by softmax
# (NULL is fine for the other codes).
cdef void c_dense_forward(const floating* x, const floating* w, const floating* b,
                          Py_ssize_t m, Py_ssize_t n_in, Py_ssize_t n_out,
                          int activation, double alpha, floating* z, floating* a,
                          double* work, int n_threads) noexcept nogil

# dz = da * g'(z), db = dz summed over rows, dw = x^T @ dz; dz may be da.
cdef void c_dense_backward(const floating* x, const floating* z, const floating* a,
                           const floating* da, Py_ssize_t m, Py_ssize_t n_in,
                           Py_ssize_t n_out, int activation, double alpha,
                           floating* dz, floating* dw, floating* db,
                           int n_threads) noexcept nogil

# dx = dz @ w^T.
cdef void c_dense_input_gradient(const floating* dz, const floating* w, Py_ssize_t m,
                                 Py_ssize_t n_in, Py_ssize_t n_out,
                                 floating* dx, int n_threads) noexcept nogil
cdef void c_dense_weight_gradient(const floating* x, const floating* dz, Py_ssize_t m,
                                  Py_ssize_t n_in, Py_ssize_t n_out,
                                  floating* dw, int n_threads) noexcept nogil

# fn(ctx, 0 .. n_tasks - 1) on the caller and up to n_threads - 1 helpers: the thread
# pool of fastnn_pool.h that this module's GEMMs run on, shared so that one set of
# helper threads serves the whole epoch kernel.
cdef void c_run_tasks(fnn_task_fn fn, void* ctx, int n_tasks,
                      int n_threads) noexcept nogil
