"""Cython optimizer kernels: fastnn.reference.optimizers compiled, same names.

Each update is one fused in-place pass over flat buffers and equals the reference bit
for bit: hyperparameter expressions in double rounded once to the array dtype, array
arithmetic in the array dtype in the reference's order (no FMA: setup.py builds with
-ffp-contract=off). The passes are fastnn_simd.h's loops, chosen at load time for the
CPU (AVX-512F, AVX2 or baseline) with identical results. Arguments come checked from
``fastnn.backend("cython")``.

``c_optimizer_step`` is the one entry point by code (the whole-epoch kernel's, and the
step path's through ``optimizer_step``); adding an optimizer here: its C kernel, its
branch there, its ``<name>_step`` wrapper.
"""

from cython cimport floating
from libc.math cimport pow

from fastnn._kernels.blas_cython cimport PW_BLOCK, pw_split
from fastnn._kernels.fastnn_simd cimport (
    fnn_adam_f32, fnn_adam_f64, fnn_adamax_f32, fnn_adamax_f64, fnn_adaptive_f32,
    fnn_adaptive_f64, fnn_momentum_f32, fnn_momentum_f64, fnn_scale_f32, fnn_scale_f64,
    fnn_sgd_f32, fnn_sgd_f64, fnn_sq_leaf_f32, fnn_sq_leaf_f64,
)

# The optimizer codes and the hyper slots, written by setup.py from fastnn/registry.py.
include "codes.pxi"

__all__ = [
    "sgd_step",
    "momentum_step",
    "nesterov_step",
    "adagrad_step",
    "rmsprop_step",
    "adam_step",
    "adamw_step",
    "adamax_step",
    "optimizer_step",
    "squared_norm",
    "scale_inplace",
]


# --- C-level kernels -----------------------------------------------------------------
# The hyperparameter expressions are computed here in double and rounded once to the
# array dtype; the loop itself is fastnn_simd.h's, built for several instruction sets
# with identical results.

cdef void c_sgd_step(floating* param, const floating* grad, Py_ssize_t n, double lr,
                     double weight_decay) noexcept nogil:
    """g = grad + wd param; param -= lr g."""
    cdef floating lr_ = <floating>lr
    cdef floating wd = <floating>weight_decay
    cdef int decay = weight_decay != 0
    if floating is float:
        fnn_sgd_f32(param, grad, n, lr_, wd, decay)
    else:
        fnn_sgd_f64(param, grad, n, lr_, wd, decay)


cdef inline void _momentum(floating* param, const floating* grad, floating* velocity,
                           Py_ssize_t n, double lr, double momentum, double dampening,
                           double weight_decay, int nesterov) noexcept nogil:
    cdef floating lr_ = <floating>lr
    cdef floating beta = <floating>momentum
    cdef floating keep = <floating>(1.0 - dampening)
    cdef floating wd = <floating>weight_decay
    cdef int decay = weight_decay != 0
    if floating is float:
        fnn_momentum_f32(param, grad, velocity, n, lr_, beta, keep, wd, decay, nesterov)
    else:
        fnn_momentum_f64(param, grad, velocity, n, lr_, beta, keep, wd, decay, nesterov)


cdef void c_momentum_step(floating* param, const floating* grad, floating* velocity,
                          Py_ssize_t n, double lr, double momentum, double dampening,
                          double weight_decay) noexcept nogil:
    """v = beta v + (1 - d) g; param -= lr v."""
    _momentum(param, grad, velocity, n, lr, momentum, dampening, weight_decay, 0)


cdef void c_nesterov_step(floating* param, const floating* grad, floating* velocity,
                          Py_ssize_t n, double lr, double momentum, double dampening,
                          double weight_decay) noexcept nogil:
    """v = beta v + (1 - d) g; param -= lr (g + beta v)."""
    _momentum(param, grad, velocity, n, lr, momentum, dampening, weight_decay, 1)


cdef inline void _adaptive(floating* param, const floating* grad, floating* sq,
                           Py_ssize_t n, double lr, double rho, double eps,
                           bint eps_inside_sqrt, double weight_decay,
                           int rmsprop) noexcept nogil:
    cdef floating lr_ = <floating>lr
    cdef floating rho_ = <floating>rho
    cdef floating rest = <floating>(1.0 - rho)
    cdef floating eps_ = <floating>eps
    cdef floating wd = <floating>weight_decay
    cdef int decay = weight_decay != 0
    cdef int inside = eps_inside_sqrt
    if floating is float:
        fnn_adaptive_f32(param, grad, sq, n, lr_, rho_, rest, eps_, wd, decay, inside,
                         rmsprop)
    else:
        fnn_adaptive_f64(param, grad, sq, n, lr_, rho_, rest, eps_, wd, decay, inside,
                         rmsprop)


cdef void c_adagrad_step(floating* param, const floating* grad, floating* sum_sq,
                         Py_ssize_t n, double lr, double eps, bint eps_inside_sqrt,
                         double weight_decay) noexcept nogil:
    """G += g^2; param -= lr g / (sqrt(G) + eps), or lr g / sqrt(G + eps)."""
    _adaptive(param, grad, sum_sq, n, lr, 0.0, eps, eps_inside_sqrt, weight_decay, 0)


cdef void c_rmsprop_step(floating* param, const floating* grad, floating* sq_avg,
                         Py_ssize_t n, double lr, double rho, double eps,
                         bint eps_inside_sqrt, double weight_decay) noexcept nogil:
    """s = rho s + (1 - rho) g^2; param -= lr g / (sqrt(s) + eps), or lr g / sqrt(s + eps)."""
    _adaptive(param, grad, sq_avg, n, lr, rho, eps, eps_inside_sqrt, weight_decay, 1)


cdef inline void _adam(floating* param, const floating* grad, floating* m, floating* v,
                       Py_ssize_t n, long long step, double lr, double beta1,
                       double beta2, double eps, double weight_decay,
                       bint decoupled) noexcept nogil:
    """Adam with L2 decay (decoupled false) or AdamW's param -= lr wd param first
    (skipped when wd = 0: the Adam update exactly)."""
    cdef floating lr_ = <floating>lr
    cdef floating b1 = <floating>beta1
    cdef floating b2 = <floating>beta2
    cdef floating rest1 = <floating>(1.0 - beta1)
    cdef floating rest2 = <floating>(1.0 - beta2)
    # Python's beta ** step is C pow on doubles.
    cdef floating corr1 = <floating>(1.0 - pow(beta1, <double>step))
    cdef floating corr2 = <floating>(1.0 - pow(beta2, <double>step))
    cdef floating eps_ = <floating>eps
    cdef floating wd = <floating>weight_decay
    cdef floating shrink = <floating>(lr * weight_decay)
    cdef int decay = weight_decay != 0 and not decoupled
    cdef int shrinks = weight_decay != 0 and decoupled
    if floating is float:
        fnn_adam_f32(param, grad, m, v, n, lr_, b1, b2, rest1, rest2, corr1, corr2, eps_,
                     wd, shrink, decay, shrinks)
    else:
        fnn_adam_f64(param, grad, m, v, n, lr_, b1, b2, rest1, rest2, corr1, corr2, eps_,
                     wd, shrink, decay, shrinks)


cdef void c_adam_step(floating* param, const floating* grad, floating* m, floating* v,
                      Py_ssize_t n, long long step, double lr, double beta1,
                      double beta2, double eps, double weight_decay) noexcept nogil:
    """m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g^2;
    param -= lr (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)."""
    _adam(param, grad, m, v, n, step, lr, beta1, beta2, eps, weight_decay, False)


cdef void c_adamw_step(floating* param, const floating* grad, floating* m, floating* v,
                       Py_ssize_t n, long long step, double lr, double beta1,
                       double beta2, double eps, double weight_decay) noexcept nogil:
    """param -= lr wd param, then the Adam step without L2 decay."""
    _adam(param, grad, m, v, n, step, lr, beta1, beta2, eps, weight_decay, True)


cdef void c_adamax_step(floating* param, const floating* grad, floating* m, floating* u,
                        Py_ssize_t n, long long step, double lr, double beta1,
                        double beta2, double eps, double weight_decay) noexcept nogil:
    """m = b1 m + (1 - b1) g; u = max(b2 u, |g| + eps); param -= (lr / (1 - b1^t)) m / u,
    max as np.maximum (NaN wins)."""
    cdef floating c = <floating>(lr / (1.0 - pow(beta1, <double>step)))
    cdef floating b1 = <floating>beta1
    cdef floating k1 = <floating>(1.0 - beta1)
    cdef floating b2 = <floating>beta2
    cdef floating eps_ = <floating>eps
    cdef floating wd = <floating>weight_decay
    cdef int decay = weight_decay != 0
    if floating is float:
        fnn_adamax_f32(param, grad, m, u, n, c, b1, k1, b2, eps_, wd, decay)
    else:
        fnn_adamax_f64(param, grad, m, u, n, c, b1, k1, b2, eps_, wd, decay)


cdef void c_optimizer_step(floating* param, const floating* grad, floating* state1,
                           floating* state2, Py_ssize_t n, int optimizer, long long step,
                           double lr, const double* hyper,
                           double weight_decay) noexcept nogil:
    """The update of optimizer code ``optimizer`` (reference optimizer_step): one branch
    per call, then that optimizer's loop; an unknown code updates nothing (the callers
    check codes)."""
    cdef double h0 = hyper[HYPER_H0]
    cdef double h1 = hyper[HYPER_H1]
    cdef double eps = hyper[HYPER_EPS]
    cdef bint inside = hyper[HYPER_EPS_INSIDE_SQRT] != 0
    if optimizer == OPT_SGD:
        c_sgd_step(param, grad, n, lr, weight_decay)
    elif optimizer == OPT_MOMENTUM:
        c_momentum_step(param, grad, state1, n, lr, h0, h1, weight_decay)
    elif optimizer == OPT_NESTEROV:
        c_nesterov_step(param, grad, state1, n, lr, h0, h1, weight_decay)
    elif optimizer == OPT_ADAGRAD:
        c_adagrad_step(param, grad, state1, n, lr, eps, inside, weight_decay)
    elif optimizer == OPT_RMSPROP:
        c_rmsprop_step(param, grad, state1, n, lr, h0, eps, inside, weight_decay)
    elif optimizer == OPT_ADAM:
        c_adam_step(param, grad, state1, state2, n, step, lr, h0, h1, eps, weight_decay)
    elif optimizer == OPT_ADAMW:
        c_adamw_step(param, grad, state1, state2, n, step, lr, h0, h1, eps, weight_decay)
    elif optimizer == OPT_ADAMAX:
        c_adamax_step(param, grad, state1, state2, n, step, lr, h0, h1, eps, weight_decay)


cdef double _sq_sum(const floating* x, Py_ssize_t n) noexcept nogil:
    """Pairwise float64 sum of x^2, each x widened before squaring: NumPy's tree, its
    leaves summed by fastnn_simd.h."""
    cdef Py_ssize_t n2
    if n <= PW_BLOCK:
        if floating is float:
            return fnn_sq_leaf_f32(x, n)
        else:
            return fnn_sq_leaf_f64(x, n)
    n2 = pw_split(n)
    return _sq_sum(x, n2) + _sq_sum(x + n2, n - n2)


cdef double c_squared_norm(const floating* x, Py_ssize_t n) noexcept nogil:
    """sum x^2 in float64."""
    return 0.0 + _sq_sum(x, n)


cdef void c_scale_inplace(floating* x, Py_ssize_t n, double factor) noexcept nogil:
    """x *= factor, the factor rounded to the array dtype."""
    cdef floating f = <floating>factor
    if floating is float:
        fnn_scale_f32(x, n, f)
    else:
        fnn_scale_f64(x, n, f)


# --- Python wrappers (the reference's signatures) ------------------------------------

def sgd_step(floating[::1] param, const floating[::1] grad, double lr,
             double weight_decay):
    """param -= lr (grad + weight_decay param), in place; 1-D buffers."""
    if param.shape[0]:
        with nogil:
            c_sgd_step(&param[0], &grad[0], param.shape[0], lr, weight_decay)


def momentum_step(floating[::1] param, const floating[::1] grad,
                  floating[::1] velocity, double lr, double momentum, double dampening,
                  double weight_decay):
    """v = momentum v + (1 - dampening) g; param -= lr v, in place; 1-D buffers."""
    if param.shape[0]:
        with nogil:
            c_momentum_step(&param[0], &grad[0], &velocity[0], param.shape[0], lr,
                            momentum, dampening, weight_decay)


def nesterov_step(floating[::1] param, const floating[::1] grad,
                  floating[::1] velocity, double lr, double momentum, double dampening,
                  double weight_decay):
    """v = momentum v + (1 - dampening) g; param -= lr (g + momentum v); 1-D buffers."""
    if param.shape[0]:
        with nogil:
            c_nesterov_step(&param[0], &grad[0], &velocity[0], param.shape[0], lr,
                            momentum, dampening, weight_decay)


def adagrad_step(floating[::1] param, const floating[::1] grad, floating[::1] sum_sq,
                 double lr, double eps, bint eps_inside_sqrt, double weight_decay):
    """G += g^2; param -= lr g / (sqrt(G) + eps) (or / sqrt(G + eps)); 1-D buffers."""
    if param.shape[0]:
        with nogil:
            c_adagrad_step(&param[0], &grad[0], &sum_sq[0], param.shape[0], lr, eps,
                           eps_inside_sqrt, weight_decay)


def rmsprop_step(floating[::1] param, const floating[::1] grad, floating[::1] sq_avg,
                 double lr, double rho, double eps, bint eps_inside_sqrt,
                 double weight_decay):
    """s = rho s + (1 - rho) g^2; param -= lr g / (sqrt(s) + eps); 1-D buffers."""
    if param.shape[0]:
        with nogil:
            c_rmsprop_step(&param[0], &grad[0], &sq_avg[0], param.shape[0], lr, rho,
                           eps, eps_inside_sqrt, weight_decay)


def adam_step(floating[::1] param, const floating[::1] grad, floating[::1] m,
              floating[::1] v, long long step, double lr, double beta1, double beta2,
              double eps, double weight_decay):
    """One bias-corrected Adam update at step >= 1, in place; 1-D buffers."""
    if param.shape[0]:
        with nogil:
            c_adam_step(&param[0], &grad[0], &m[0], &v[0], param.shape[0], step, lr,
                        beta1, beta2, eps, weight_decay)


def adamw_step(floating[::1] param, const floating[::1] grad, floating[::1] m,
               floating[::1] v, long long step, double lr, double beta1, double beta2,
               double eps, double weight_decay):
    """param -= lr weight_decay param, then Adam without L2, in place; 1-D buffers."""
    if param.shape[0]:
        with nogil:
            c_adamw_step(&param[0], &grad[0], &m[0], &v[0], param.shape[0], step, lr,
                         beta1, beta2, eps, weight_decay)


def adamax_step(floating[::1] param, const floating[::1] grad, floating[::1] m,
                floating[::1] u, long long step, double lr, double beta1, double beta2,
                double eps, double weight_decay):
    """One Adamax update at step >= 1, in place; 1-D buffers."""
    if param.shape[0]:
        with nogil:
            c_adamax_step(&param[0], &grad[0], &m[0], &u[0], param.shape[0], step, lr,
                          beta1, beta2, eps, weight_decay)


def optimizer_step(floating[::1] param, const floating[::1] grad, floating[::1] state1,
                   floating[::1] state2, int optimizer, long long step, double lr,
                   const double[::1] hyper, double weight_decay):
    """One update of optimizer code ``optimizer`` in place (reference optimizer_step);
    unused states may be empty, ``hyper`` holds the registry's N_HYPER slots."""
    if hyper.shape[0] < N_HYPER:
        raise ValueError(f"optimizer_step: hyper needs {N_HYPER} values")
    if param.shape[0]:
        with nogil:
            c_optimizer_step(&param[0], &grad[0],
                             &state1[0] if state1.shape[0] else NULL,
                             &state2[0] if state2.shape[0] else NULL, param.shape[0],
                             optimizer, step, lr, &hyper[0], weight_decay)


def _check_codes():
    """The codes this module was built with equal codes.py (called once at import): a
    table changed since the build would otherwise send the kernels the wrong codes."""
    from fastnn._kernels import codes
    mine = {"N_OPTIMIZERS": N_OPTIMIZERS, "N_HYPER": N_HYPER,
            "HYPER_H0": HYPER_H0, "HYPER_H1": HYPER_H1, "HYPER_EPS": HYPER_EPS,
            "HYPER_EPS_INSIDE_SQRT": HYPER_EPS_INSIDE_SQRT}
    for name, value in mine.items():
        if getattr(codes, name) != value:
            raise ImportError(f"optimizers_cython was built with {name} = {value}, "
                              f"codes.py says {getattr(codes, name)}: rebuild")


_check_codes()


def squared_norm(const floating[::1] x):
    """sum of x^2 accumulated in float64; returns a Python float."""
    cdef double res = 0.0
    if x.shape[0]:
        with nogil:
            res = c_squared_norm(&x[0], x.shape[0])
    return res


def scale_inplace(floating[::1] x, double factor):
    """x *= factor, in place; x 1-D."""
    if x.shape[0]:
        with nogil:
            c_scale_inplace(&x[0], x.shape[0], factor)
