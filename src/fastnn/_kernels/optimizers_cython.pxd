# C-level optimizer kernels: one fused in-place pass over flat buffers of n values.
# param and the state buffers are updated in place, grad is only read. Hyperparameters
# arrive as C doubles; each expression of them is computed in double and rounded once to
# the array dtype (bias corrections with C pow, as Python's ``**``), and the array
# arithmetic then follows the reference's order in the array dtype. weight_decay adds
# wd * param to a local copy of the gradient (L2); AdamW's decay is decoupled instead.

from cython cimport floating


cdef void c_sgd_step(floating* param, const floating* grad, Py_ssize_t n, double lr,
                     double weight_decay) noexcept nogil
cdef void c_momentum_step(floating* param, const floating* grad, floating* velocity,
                          Py_ssize_t n, double lr, double momentum, double dampening,
                          double weight_decay) noexcept nogil
cdef void c_nesterov_step(floating* param, const floating* grad, floating* velocity,
                          Py_ssize_t n, double lr, double momentum, double dampening,
                          double weight_decay) noexcept nogil
cdef void c_adagrad_step(floating* param, const floating* grad, floating* sum_sq,
                         Py_ssize_t n, double lr, double eps, bint eps_inside_sqrt,
                         double weight_decay) noexcept nogil
cdef void c_rmsprop_step(floating* param, const floating* grad, floating* sq_avg,
                         Py_ssize_t n, double lr, double rho, double eps,
                         bint eps_inside_sqrt, double weight_decay) noexcept nogil
cdef void c_adam_step(floating* param, const floating* grad, floating* m, floating* v,
                      Py_ssize_t n, long long step, double lr, double beta1,
                      double beta2, double eps, double weight_decay) noexcept nogil
cdef void c_adamw_step(floating* param, const floating* grad, floating* m, floating* v,
                       Py_ssize_t n, long long step, double lr, double beta1,
                       double beta2, double eps, double weight_decay) noexcept nogil

# The update of optimizer code ``optimizer`` (codes.pxi's OPT_*; fastnn.reference's
# optimizer_step): state1, state2 its states in its registry row's order (NULL when it
# has fewer), step t >= 1, hyper the N_HYPER slots (h0, h1, eps, eps_inside_sqrt read),
# weight_decay this call's. Adding an optimizer changes the .pyx only.
cdef void c_optimizer_step(floating* param, const floating* grad, floating* state1,
                           floating* state2, Py_ssize_t n, int optimizer, long long step,
                           double lr, const double* hyper,
                           double weight_decay) noexcept nogil

# sum of x^2 in float64 (NumPy's pairwise order), and x *= factor.
cdef double c_squared_norm(const floating* x, Py_ssize_t n) noexcept nogil
cdef void c_scale_inplace(floating* x, Py_ssize_t n, double factor) noexcept nogil
