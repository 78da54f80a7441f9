# C-level dropout and batch-normalisation kernels on raw pointers. x and the other
# batch arrays are (m, k) row-major; gamma, beta, running statistics and inv_std (k,).
# Batch statistics accumulate in float64 in NumPy's order (row after row; pairwise when
# k == 1) and are rounded once; the affine part gamma * x_hat + beta is evaluated in the
# array dtype.

from cython cimport floating


# out = mask * x / (1 - rate) on n values; mask holds 0/1 bytes.
cdef void c_dropout(const floating* x, const unsigned char* mask, Py_ssize_t n,
                    double rate, floating* out) noexcept nogil

# Training: normalise with the batch statistics (m >= 2), save x_hat (m, k) and
# inv_std (k,), move the running statistics; out may be x. work: 2 k doubles.
cdef void c_batch_norm_train(const floating* x, const floating* gamma,
                             const floating* beta, Py_ssize_t m, Py_ssize_t k,
                             double eps, double momentum, floating* running_mean,
                             floating* running_var, floating* out, floating* x_hat,
                             floating* inv_std, double* work) noexcept nogil

# Inference: out = gamma (x - running_mean) / sqrt(running_var + eps) + beta; out may
# be x. work: scratch for k doubles.
cdef void c_batch_norm_eval(const floating* x, const floating* gamma,
                            const floating* beta, const floating* running_mean,
                            const floating* running_var, Py_ssize_t m, Py_ssize_t k,
                            double eps, floating* out, double* work) noexcept nogil

# Gradients of the training pass; dx may be dout. work: scratch for 3 k doubles.
cdef void c_batch_norm_backward(const floating* dout, const floating* x_hat,
                                const floating* gamma, const floating* inv_std,
                                Py_ssize_t m, Py_ssize_t k, floating* dx,
                                floating* dgamma, floating* dbeta,
                                double* work) noexcept nogil
