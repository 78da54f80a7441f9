# C-level loss kernels on raw pointers. Losses return the mean as a C double (per-sample
# terms and sums in float64, NumPy's pairwise order); gradients are written to ``out``
# (the prediction's shape) and include the 1/m (or 1/size) factor. 2-D arrays are
# (m, k) row-major; labels are int64 class indices in [0, k). w: float64 weights of
# the m samples, or NULL (unweighted); weighted, sample i's terms are multiplied by w_i
# and m becomes S = sum w (docs/spec.md §4, "Sample weights").

from cython cimport floating
from libc.stdint cimport int64_t


# Flat arrays of n values (n / k samples of k values each when weighted): mean((p - y)^2)
# and out = 2 (p - y) / n; weighted sum w_i d^2 / (S k), 2 w_i d / (S k).
cdef double c_mse(const floating* y_pred, const floating* y, Py_ssize_t n,
                  const double* w, Py_ssize_t k) noexcept nogil
cdef void c_mse_gradient(const floating* y_pred, const floating* y, Py_ssize_t n,
                         floating* out, const double* w, Py_ssize_t k) noexcept nogil

# Poisson with a log link on flat arrays of n values: mean(e^z - y z) and
# out = (e^z - y) / n; weighted as c_mse.
cdef double c_poisson(const floating* z, const floating* y, Py_ssize_t n,
                      const double* w, Py_ssize_t k) noexcept nogil
cdef void c_poisson_gradient(const floating* z, const floating* y, Py_ssize_t n,
                             floating* out, const double* w, Py_ssize_t k) noexcept nogil

# Logits z (m, k), targets y (m, k) in [0, 1]: each sample sums its k terms, the loss
# averages the m samples and the gradient divides by m.
cdef double c_binary_cross_entropy(const floating* z, const floating* y, Py_ssize_t m,
                                   Py_ssize_t k, const double* w) noexcept nogil
cdef void c_binary_cross_entropy_gradient(const floating* z, const floating* y,
                                          Py_ssize_t m, Py_ssize_t k, floating* out,
                                          const double* w) noexcept nogil

# Softmax cross-entropy on logits z (m, k) with one-hot (or soft) targets y (m, k) or
# class indices labels (m,). work: scratch for k doubles.
cdef double c_cross_entropy(const floating* z, const floating* y, Py_ssize_t m,
                            Py_ssize_t k, double* work, const double* w) noexcept nogil
cdef void c_cross_entropy_gradient(const floating* z, const floating* y, Py_ssize_t m,
                                   Py_ssize_t k, floating* out, double* work,
                                   const double* w) noexcept nogil
cdef double c_sparse_cross_entropy(const floating* z, const int64_t* labels,
                                   Py_ssize_t m, Py_ssize_t k, double* work,
                                   const double* w) noexcept nogil
cdef void c_sparse_cross_entropy_gradient(const floating* z, const int64_t* labels,
                                          Py_ssize_t m, Py_ssize_t k, floating* out,
                                          double* work, const double* w) noexcept nogil
# The loss and its gradient in one pass (each row's softmax once; the same values as the
# two kernels above), for the whole-epoch kernel.
cdef double c_cross_entropy_and_gradient(const floating* z, const floating* y,
                                         Py_ssize_t m, Py_ssize_t k, floating* out,
                                         double* work, const double* w) noexcept nogil
cdef double c_sparse_cross_entropy_and_gradient(const floating* z, const int64_t* labels,
                                                Py_ssize_t m, Py_ssize_t k, floating* out,
                                                double* work,
                                                const double* w) noexcept nogil
