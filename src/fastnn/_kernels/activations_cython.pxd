# C-level activation kernels: the integer codes, the scalar forms as inline functions
# (for fused loops in other kernels), and the array kernels on raw pointers that the
# Python wrappers of activations_cython.pyx call. Arrays are C-contiguous; 2-D arrays
# are (m, k) row-major. ``out`` may be the input itself; nothing else aliases.

from cython cimport floating
from libc.math cimport exp, expm1, fabs, tanhl
from libc.math cimport tanh as tanh_libm


# The codes (ActivationCode: IDENTITY, ..., and N_ACTIVATIONS), written by setup.py
# from fastnn/registry.py.
include "codes.pxi"


# --- scalar forms --------------------------------------------------------------------
# Formulas with exp/expm1/tanh take float64 and return float64; the caller rounds once
# to the array dtype. The others stay in the array dtype. NaN in gives NaN out.

cdef inline double sigmoid_wide(double x) noexcept nogil:
    """1 / (1 + e^-|x|) for x >= 0, else e^-|x| / (1 + e^-|x|): e^x never overflows.

    Only the numerator depends on the sign, so the compiler selects it without a branch
    (random signs would mispredict one); the values are the reference's two branches.
    """
    cdef double e = exp(-fabs(x))
    cdef double num = 1.0 if x >= 0 else e
    return num / (1 + e)


cdef inline double tanh_wide(double x) noexcept nogil:
    """tanh x, nearly correctly rounded: the x87 tanhl rounded to double.

    NumPy's float64 tanh is its own SIMD loop, within 1 ULP of exact; glibc's tanh is
    within 2, and the two differ by 3 ULP at worst (1.5 in 10^5 inputs beyond 2). The
    rounded tanhl stays within 1 ULP of NumPy's, at about 4x glibc's cost.
    """
    return <double>tanhl(x)


cdef inline double min0_wide(double x) noexcept nogil:
    """np.minimum(x, 0): NaN propagates and min(-0.0, 0) is +0.0, as in NumPy."""
    if x < 0 or x != x:
        return x
    return 0.0


cdef inline floating step_1(floating z) noexcept nogil:
    """1 if z >= 0 else 0 (so step(-0.0) = 1)."""
    if z != z:
        return z
    return 1 if z >= 0 else 0


cdef inline floating relu_1(floating z) noexcept nogil:
    """np.maximum(z, 0): NaN propagates and relu(-0.0) is +0.0."""
    if z > 0 or z != z:
        return z
    return 0


cdef inline void leaky_relu_to(floating z, floating alpha, floating* dst) noexcept nogil:
    """dst[0] = z if z > 0 else alpha z.

    Written as a store and an overwrite because GCC vectorizes that form; a select would
    have the product in one branch only, which it may not speculate (trapping math).
    """
    dst[0] = alpha * z
    if z > 0:
        dst[0] = z


cdef inline floating sigmoid_1(floating z) noexcept nogil:
    """sigmoid(z) in float64, rounded once."""
    return <floating>sigmoid_wide(z)


cdef inline floating tanh_1(floating z) noexcept nogil:
    """tanh z in float64, rounded once."""
    if floating is float:
        # glibc's tanh is close enough once rounded to float32, and 4x faster.
        return <float>tanh_libm(z)
    else:
        return tanh_wide(z)


cdef inline floating elu_1(floating z, double alpha) noexcept nogil:
    """z if z > 0 else alpha (e^z - 1), the latter in float64 rounded once."""
    cdef double x = z
    if x > 0:
        return z
    return <floating>(alpha * expm1(min0_wide(x)))


# Derivatives from z: NaN where z is NaN, so a NaN never becomes a zero gradient.

cdef inline floating identity_d1(floating z) noexcept nogil:
    return z if z != z else 1


cdef inline floating step_d1(floating z) noexcept nogil:
    return z if z != z else 0


cdef inline floating relu_d1(floating z) noexcept nogil:
    if z != z:
        return z
    return 1 if z > 0 else 0


cdef inline floating leaky_relu_d1(floating z, floating alpha) noexcept nogil:
    if z != z:
        return z
    return 1 if z > 0 else alpha


cdef inline floating elu_d1(floating z, double alpha) noexcept nogil:
    """1 if z > 0 else alpha e^z, the latter in float64 rounded once."""
    cdef double x = z
    if x > 0:
        return 1
    return <floating>(alpha * exp(min0_wide(x)))


# --- array kernels ---------------------------------------------------------------------
# Elementwise, on n values: out[i] = g(z[i]) or g'(z[i]).
cdef void c_identity(const floating* z, Py_ssize_t n, floating* out) noexcept nogil
cdef void c_step(const floating* z, Py_ssize_t n, floating* out) noexcept nogil
cdef void c_sigmoid(const floating* z, Py_ssize_t n, floating* out) noexcept nogil
cdef void c_tanh(const floating* z, Py_ssize_t n, floating* out) noexcept nogil
cdef void c_relu(const floating* z, Py_ssize_t n, floating* out) noexcept nogil
cdef void c_leaky_relu(const floating* z, Py_ssize_t n, double alpha,
                       floating* out) noexcept nogil
cdef void c_elu(const floating* z, Py_ssize_t n, double alpha,
                floating* out) noexcept nogil
cdef void c_identity_derivative(const floating* z, Py_ssize_t n,
                                floating* out) noexcept nogil
cdef void c_step_derivative(const floating* z, Py_ssize_t n, floating* out) noexcept nogil
cdef void c_sigmoid_derivative(const floating* z, Py_ssize_t n,
                               floating* out) noexcept nogil
cdef void c_tanh_derivative(const floating* z, Py_ssize_t n, floating* out) noexcept nogil
cdef void c_relu_derivative(const floating* z, Py_ssize_t n, floating* out) noexcept nogil
cdef void c_leaky_relu_derivative(const floating* z, Py_ssize_t n, double alpha,
                                  floating* out) noexcept nogil
cdef void c_elu_derivative(const floating* z, Py_ssize_t n, double alpha,
                           floating* out) noexcept nogil

# Row-wise on (m, k). ``work`` is scratch for k float64 values (the row's exponentials).
cdef void c_softmax(const floating* z, Py_ssize_t m, Py_ssize_t k, floating* out,
                    double* work) noexcept nogil
cdef void c_softmax_backward(const floating* a, const floating* da, Py_ssize_t m,
                             Py_ssize_t k, floating* out) noexcept nogil

# g(x) and g'(x) by code for the activations without a loop of their own in
# dense_cython (gelu, silu, selu, mish; registry.py): float64 in and out.
cdef double c_g(int code, double x) noexcept nogil
cdef double c_g_d(int code, double x) noexcept nogil
# out = g(z) / out = g'(z) elementwise for those codes, float64 inside, rounded once.
cdef void c_by_code(const floating* z, Py_ssize_t n, int code, floating* out) noexcept nogil
cdef void c_derivative_by_code(const floating* z, Py_ssize_t n, int code,
                               floating* out) noexcept nogil

# out = g(z) / out = da * g'(z) for an activation code; (m, k). The backward takes
# sigmoid's and tanh's derivative from the saved a = g(z), softmax's Jacobian from a.
# work (k doubles) is only used by softmax and may be NULL for the other codes.
cdef void c_activation_forward(const floating* z, Py_ssize_t m, Py_ssize_t k,
                               int activation, double alpha, floating* out,
                               double* work) noexcept nogil
cdef void c_activation_backward(const floating* da, const floating* z,
                                const floating* a, Py_ssize_t m, Py_ssize_t k,
                                int activation, double alpha,
                                floating* out) noexcept nogil
