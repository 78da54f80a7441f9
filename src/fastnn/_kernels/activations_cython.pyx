"""Cython activation kernels: fastnn.reference.activations compiled, same names.

Each function is a thin wrapper that releases the GIL around a C-level kernel of
activations_cython.pxd. Arguments come checked from ``fastnn.backend("cython")``:
C-contiguous arrays of one float dtype, outputs preallocated (``out`` may be ``z``).
Formulas with exp/expm1/tanh are evaluated in float64 and rounded once; the others in
the array dtype, in the reference's order.
"""

from cython cimport floating
from libc.math cimport exp, expm1, fabs
from libc.stdlib cimport free, malloc

from fastnn._kernels.blas_cython cimport pw_dot, pw_sum

__all__ = [
    "identity",
    "step",
    "sigmoid",
    "tanh",
    "relu",
    "leaky_relu",
    "elu",
    "softmax",
    "gelu",
    "silu",
    "selu",
    "mish",
    "identity_derivative",
    "step_derivative",
    "sigmoid_derivative",
    "tanh_derivative",
    "relu_derivative",
    "leaky_relu_derivative",
    "elu_derivative",
    "gelu_derivative",
    "silu_derivative",
    "selu_derivative",
    "mish_derivative",
    "softmax_backward",
    "activation_forward",
    "activation_backward",
]

# The C enum of the .pxd, readable from Python (tests compare it with codes.py).
ACTIVATION_CODES = {
    "identity": IDENTITY,
    "step": STEP,
    "sigmoid": SIGMOID,
    "tanh": TANH,
    "relu": RELU,
    "leaky_relu": LEAKY_RELU,
    "elu": ELU,
    "softmax": SOFTMAX,
    "gelu": GELU,
    "silu": SILU,
    "selu": SELU,
    "mish": MISH,
}


# --- gelu, silu, selu, mish: float64 scalar forms (reference.activations) --------------

# SciPy's erfc, the reference's (scipy_special.py says why): set once at import.
ctypedef double (*erfc_fn)(double, int) noexcept nogil
cdef erfc_fn scipy_erfc
from fastnn._kernels.scipy_special import erfc_address as _erfc_address

scipy_erfc = <erfc_fn><size_t>_erfc_address()

cdef double SQRT1_2 = 0.7071067811865476  # 1 / sqrt 2, rounded
cdef double INV_SQRT_2PI = 0.3989422804014327  # 1 / sqrt(2 pi), rounded
from fastnn.registry import SELU_ALPHA as _SELU_ALPHA, SELU_SCALE as _SELU_SCALE

cdef double SELU_SCALE = _SELU_SCALE
cdef double SELU_SCALE_ALPHA = _SELU_SCALE * _SELU_ALPHA


cdef inline double times(double x, double h) noexcept nogil:
    """x h, and -0.0 where h = 0 (x far in the negative tail: -inf * 0 is NaN)."""
    return -0.0 if h == 0 else x * h


cdef inline double plus(double t, double x, double h) noexcept nogil:
    """t + x h, and t where h = 0."""
    return t if h == 0 else t + x * h


cdef inline double sigmoid_e(double x, double e) noexcept nogil:
    """sigmoid(x) from e = e^-|x|."""
    return (1.0 if x >= 0 else e) / (1.0 + e)


cdef inline double mish_t(double x, double e) noexcept nogil:
    """tanh(softplus(x)) from e = e^-|x|, as a ratio without tanh or log."""
    cdef double p
    if x >= 0:
        p = 1.0 + 2.0 * e
        return p / (p + 2.0 * e * e)
    p = e * (e + 2.0)
    return p / (p + 2.0)


cdef double c_g(int code, double x) noexcept nogil:
    cdef double e
    if code == GELU:
        return times(0.5 * x, scipy_erfc(-x * SQRT1_2, 0))
    if code == SILU:
        return times(x, sigmoid_e(x, exp(-fabs(x))))
    if code == SELU:
        return SELU_SCALE * x if x > 0 else SELU_SCALE_ALPHA * expm1(min0_wide(x))
    e = exp(-fabs(x))  # MISH
    return times(x, mish_t(x, e))


cdef double c_g_d(int code, double x) noexcept nogil:
    cdef double e, s, t
    if code == GELU:
        return plus(0.5 * scipy_erfc(-x * SQRT1_2, 0), x, exp(-0.5 * x * x) * INV_SQRT_2PI)
    if code == SILU:
        s = sigmoid_e(x, exp(-fabs(x)))
        return plus(s, x, s * (1.0 - s))
    if code == SELU:
        return SELU_SCALE if x > 0 else SELU_SCALE_ALPHA * exp(min0_wide(x))
    e = exp(-fabs(x))  # MISH
    t = mish_t(x, e)
    return plus(t, x, (1.0 - t * t) * sigmoid_e(x, e))


cdef void c_by_code(const floating* z, Py_ssize_t n, int code,
                    floating* out) noexcept nogil:
    """out = g(z) for an activation of c_g, in float64, rounded once."""
    cdef Py_ssize_t i
    for i in range(n):
        out[i] = <floating>c_g(code, z[i])


cdef void c_derivative_by_code(const floating* z, Py_ssize_t n, int code,
                               floating* out) noexcept nogil:
    """out = g'(z) for an activation of c_g_d, in float64, rounded once."""
    cdef Py_ssize_t i
    for i in range(n):
        out[i] = <floating>c_g_d(code, z[i])


# --- C-level kernels -----------------------------------------------------------------

cdef void c_identity(const floating* z, Py_ssize_t n, floating* out) noexcept nogil:
    """out = z."""
    cdef Py_ssize_t i
    for i in range(n):
        out[i] = z[i]


cdef void c_step(const floating* z, Py_ssize_t n, floating* out) noexcept nogil:
    """out = 1 if z >= 0 else 0."""
    cdef Py_ssize_t i
    for i in range(n):
        out[i] = step_1(z[i])


cdef void c_sigmoid(const floating* z, Py_ssize_t n, floating* out) noexcept nogil:
    """out = 1 / (1 + e^-z), in float64, rounded once."""
    cdef Py_ssize_t i
    for i in range(n):
        out[i] = sigmoid_1(z[i])


cdef void c_tanh(const floating* z, Py_ssize_t n, floating* out) noexcept nogil:
    """out = tanh z, in float64, rounded once."""
    cdef Py_ssize_t i
    for i in range(n):
        out[i] = tanh_1(z[i])


cdef void c_relu(const floating* z, Py_ssize_t n, floating* out) noexcept nogil:
    """out = max(z, 0)."""
    cdef Py_ssize_t i
    for i in range(n):
        out[i] = relu_1(z[i])


cdef void c_leaky_relu(const floating* z, Py_ssize_t n, double alpha,
                       floating* out) noexcept nogil:
    """out = z if z > 0 else alpha z, alpha rounded to the array dtype first."""
    cdef floating alpha_ = <floating>alpha
    cdef Py_ssize_t i
    cdef floating v
    for i in range(n):
        v = z[i]  # read first: out may be z
        leaky_relu_to(v, alpha_, out + i)


cdef void c_elu(const floating* z, Py_ssize_t n, double alpha,
                floating* out) noexcept nogil:
    """out = z if z > 0 else alpha (e^z - 1), in float64, rounded once."""
    cdef Py_ssize_t i
    for i in range(n):
        out[i] = elu_1(z[i], alpha)


cdef void c_identity_derivative(const floating* z, Py_ssize_t n,
                                floating* out) noexcept nogil:
    """out = 1."""
    cdef Py_ssize_t i
    for i in range(n):
        out[i] = identity_d1(z[i])


cdef void c_step_derivative(const floating* z, Py_ssize_t n,
                            floating* out) noexcept nogil:
    """out = 0."""
    cdef Py_ssize_t i
    for i in range(n):
        out[i] = step_d1(z[i])


cdef void c_sigmoid_derivative(const floating* z, Py_ssize_t n,
                               floating* out) noexcept nogil:
    """out = s (1 - s), s = sigmoid(z), all in float64, rounded once."""
    cdef Py_ssize_t i
    cdef double s
    for i in range(n):
        s = sigmoid_wide(z[i])
        out[i] = <floating>(s * (1 - s))


cdef void c_tanh_derivative(const floating* z, Py_ssize_t n,
                            floating* out) noexcept nogil:
    """out = 1 - tanh^2 z in float64, rounded once.

    1 - t^2 cancels for large |z|, so t must be NumPy's tanh to the ULP: tanh_wide for
    both dtypes here, not the float32 shortcut of the forward pass.
    """
    cdef Py_ssize_t i
    cdef double t
    for i in range(n):
        t = tanh_wide(z[i])
        out[i] = <floating>(1 - t * t)


cdef void c_relu_derivative(const floating* z, Py_ssize_t n,
                            floating* out) noexcept nogil:
    """out = 1 if z > 0 else 0."""
    cdef Py_ssize_t i
    for i in range(n):
        out[i] = relu_d1(z[i])


cdef void c_leaky_relu_derivative(const floating* z, Py_ssize_t n, double alpha,
                                  floating* out) noexcept nogil:
    """out = 1 if z > 0 else alpha."""
    cdef floating alpha_ = <floating>alpha
    cdef Py_ssize_t i
    for i in range(n):
        out[i] = leaky_relu_d1(z[i], alpha_)


cdef void c_elu_derivative(const floating* z, Py_ssize_t n, double alpha,
                           floating* out) noexcept nogil:
    """out = 1 if z > 0 else alpha e^z, in float64, rounded once."""
    cdef Py_ssize_t i
    for i in range(n):
        out[i] = elu_d1(z[i], alpha)


cdef void c_softmax(const floating* z, Py_ssize_t m, Py_ssize_t k, floating* out,
                    double* work) noexcept nogil:
    """out[i] = e^(z[i] - max z[i]) / sum_j e^(z[i, j] - max z[i]) per row, in float64.

    The exponentials go to ``work`` (k doubles) and are summed in NumPy's pairwise
    order, so the row sum is the reference's; the row is read before it is written.
    """
    cdef Py_ssize_t i, j
    cdef const floating* row
    cdef floating* orow
    cdef double mx, v, s
    for i in range(m):
        row = z + i * k
        orow = out + i * k
        mx = row[0]
        for j in range(1, k):
            v = row[j]
            if v > mx or v != v:  # np.max: a NaN wins and stays
                mx = v
        for j in range(k):
            work[j] = exp(<double>row[j] - mx)
        s = 0.0 + pw_sum(work, k)
        for j in range(k):
            orow[j] = <floating>(work[j] / s)


cdef void c_softmax_backward(const floating* a, const floating* da, Py_ssize_t m,
                             Py_ssize_t k, floating* out) noexcept nogil:
    """out = a * (da - sum_j da_j a_j) per row, in the array dtype (out may be da)."""
    cdef Py_ssize_t i, j
    cdef floating s, zero = 0
    for i in range(m):
        s = zero + pw_dot(da + i * k, a + i * k, k)
        for j in range(i * k, i * k + k):
            out[j] = a[j] * (da[j] - s)


cdef void c_activation_forward(const floating* z, Py_ssize_t m, Py_ssize_t k,
                               int activation, double alpha, floating* out,
                               double* work) noexcept nogil:
    """out = g(z) for the activation code, z and out (m, k); work: k doubles."""
    cdef Py_ssize_t n = m * k
    if activation == IDENTITY:
        c_identity(z, n, out)
    elif activation == STEP:
        c_step(z, n, out)
    elif activation == SIGMOID:
        c_sigmoid(z, n, out)
    elif activation == TANH:
        c_tanh(z, n, out)
    elif activation == RELU:
        c_relu(z, n, out)
    elif activation == LEAKY_RELU:
        c_leaky_relu(z, n, alpha, out)
    elif activation == ELU:
        c_elu(z, n, alpha, out)
    elif activation == SOFTMAX:
        c_softmax(z, m, k, out, work)
    else:
        c_by_code(z, n, activation, out)


cdef void c_activation_backward(const floating* da, const floating* z,
                                const floating* a, Py_ssize_t m, Py_ssize_t k,
                                int activation, double alpha,
                                floating* out) noexcept nogil:
    """out = da * g'(z), all (m, k); sigmoid and tanh use the saved a = g(z).

    The derivative is rounded to the array dtype before the product, as the reference
    forms the derivative array first. out may be da. (d is a separate statement: GCC
    if-converts and vectorizes the loop only then.)
    """
    cdef Py_ssize_t i, n = m * k
    cdef floating one = 1
    cdef floating alpha_ = <floating>alpha
    cdef floating d
    if activation == IDENTITY:
        for i in range(n):
            d = identity_d1(z[i])
            out[i] = da[i] * d
    elif activation == STEP:
        for i in range(n):
            d = step_d1(z[i])
            out[i] = da[i] * d
    elif activation == SIGMOID:
        for i in range(n):
            out[i] = da[i] * (a[i] * (one - a[i]))
    elif activation == TANH:
        for i in range(n):
            out[i] = da[i] * (one - a[i] * a[i])
    elif activation == RELU:
        for i in range(n):
            d = relu_d1(z[i])
            out[i] = da[i] * d
    elif activation == LEAKY_RELU:
        for i in range(n):
            d = leaky_relu_d1(z[i], alpha_)
            out[i] = da[i] * d
    elif activation == ELU:
        for i in range(n):
            d = elu_d1(z[i], alpha)
            out[i] = da[i] * d
    elif activation == SOFTMAX:
        c_softmax_backward(a, da, m, k, out)
    else:
        for i in range(n):
            d = <floating>c_g_d(activation, z[i])
            out[i] = da[i] * d


# --- Python wrappers (the reference's signatures) ------------------------------------

def identity(const floating[::1] z, floating[::1] out):
    """out = z; z, out 1-D."""
    if z.shape[0]:
        with nogil:
            c_identity(&z[0], z.shape[0], &out[0])


def step(const floating[::1] z, floating[::1] out):
    """out = 1 if z >= 0 else 0; z, out 1-D."""
    if z.shape[0]:
        with nogil:
            c_step(&z[0], z.shape[0], &out[0])


def sigmoid(const floating[::1] z, floating[::1] out):
    """out = 1 / (1 + e^-z); z, out 1-D."""
    if z.shape[0]:
        with nogil:
            c_sigmoid(&z[0], z.shape[0], &out[0])


def tanh(const floating[::1] z, floating[::1] out):
    """out = tanh z; z, out 1-D."""
    if z.shape[0]:
        with nogil:
            c_tanh(&z[0], z.shape[0], &out[0])


def relu(const floating[::1] z, floating[::1] out):
    """out = max(z, 0); z, out 1-D."""
    if z.shape[0]:
        with nogil:
            c_relu(&z[0], z.shape[0], &out[0])


def leaky_relu(const floating[::1] z, double alpha, floating[::1] out):
    """out = z if z > 0 else alpha z; z, out 1-D."""
    if z.shape[0]:
        with nogil:
            c_leaky_relu(&z[0], z.shape[0], alpha, &out[0])


def elu(const floating[::1] z, double alpha, floating[::1] out):
    """out = z if z > 0 else alpha (e^z - 1); z, out 1-D."""
    if z.shape[0]:
        with nogil:
            c_elu(&z[0], z.shape[0], alpha, &out[0])


def softmax(const floating[:, ::1] z, floating[:, ::1] out):
    """Row-wise softmax of z (m, k) into out (m, k)."""
    cdef Py_ssize_t m = z.shape[0], k = z.shape[1]
    cdef double* work
    if m == 0 or k == 0:
        return
    work = <double*>malloc(k * sizeof(double))
    if work == NULL:
        raise MemoryError()
    with nogil:
        c_softmax(&z[0, 0], m, k, &out[0, 0], work)
    free(work)


def _by_code(const floating[::1] z, int code, floating[::1] out):
    if z.shape[0]:
        with nogil:
            c_by_code(&z[0], z.shape[0], code, &out[0])


def _derivative_by_code(const floating[::1] z, int code, floating[::1] out):
    if z.shape[0]:
        with nogil:
            c_derivative_by_code(&z[0], z.shape[0], code, &out[0])


def gelu(z, out):
    """out = z Phi(z) = z erfc(-z / sqrt 2) / 2 (SciPy's erfc); z, out 1-D."""
    _by_code(z, GELU, out)


def silu(z, out):
    """out = z sigmoid(z); z, out 1-D."""
    _by_code(z, SILU, out)


def selu(z, out):
    """out = lambda z if z > 0 else lambda alpha (e^z - 1); z, out 1-D."""
    _by_code(z, SELU, out)


def mish(z, out):
    """out = z tanh(softplus(z)); z, out 1-D."""
    _by_code(z, MISH, out)


def gelu_derivative(z, out):
    """out = Phi(z) + z phi(z); z, out 1-D."""
    _derivative_by_code(z, GELU, out)


def silu_derivative(z, out):
    """out = s + z s (1 - s), s = sigmoid(z); z, out 1-D."""
    _derivative_by_code(z, SILU, out)


def selu_derivative(z, out):
    """out = lambda if z > 0 else lambda alpha e^z; z, out 1-D."""
    _derivative_by_code(z, SELU, out)


def mish_derivative(z, out):
    """out = t + z (1 - t^2) sigmoid(z), t = tanh(softplus(z)); z, out 1-D."""
    _derivative_by_code(z, MISH, out)


def identity_derivative(const floating[::1] z, floating[::1] out):
    """out = 1 (NaN where z is NaN); z, out 1-D."""
    if z.shape[0]:
        with nogil:
            c_identity_derivative(&z[0], z.shape[0], &out[0])


def step_derivative(const floating[::1] z, floating[::1] out):
    """out = 0 (NaN where z is NaN); z, out 1-D."""
    if z.shape[0]:
        with nogil:
            c_step_derivative(&z[0], z.shape[0], &out[0])


def sigmoid_derivative(const floating[::1] z, floating[::1] out):
    """out = s (1 - s), s = sigmoid(z); z, out 1-D."""
    if z.shape[0]:
        with nogil:
            c_sigmoid_derivative(&z[0], z.shape[0], &out[0])


def tanh_derivative(const floating[::1] z, floating[::1] out):
    """out = 1 - tanh^2 z; z, out 1-D."""
    if z.shape[0]:
        with nogil:
            c_tanh_derivative(&z[0], z.shape[0], &out[0])


def relu_derivative(const floating[::1] z, floating[::1] out):
    """out = 1 if z > 0 else 0; z, out 1-D."""
    if z.shape[0]:
        with nogil:
            c_relu_derivative(&z[0], z.shape[0], &out[0])


def leaky_relu_derivative(const floating[::1] z, double alpha, floating[::1] out):
    """out = 1 if z > 0 else alpha; z, out 1-D."""
    if z.shape[0]:
        with nogil:
            c_leaky_relu_derivative(&z[0], z.shape[0], alpha, &out[0])


def elu_derivative(const floating[::1] z, double alpha, floating[::1] out):
    """out = 1 if z > 0 else alpha e^z; z, out 1-D."""
    if z.shape[0]:
        with nogil:
            c_elu_derivative(&z[0], z.shape[0], alpha, &out[0])


def softmax_backward(const floating[:, ::1] a, const floating[:, ::1] da,
                     floating[:, ::1] out):
    """out = a * (da - sum_j da_j a_j) per row; a = softmax(z), da = dL/da, all (m, k)."""
    if a.shape[0] and a.shape[1]:
        with nogil:
            c_softmax_backward(&a[0, 0], &da[0, 0], a.shape[0], a.shape[1], &out[0, 0])


def activation_forward(const floating[:, ::1] z, int activation, double alpha,
                       floating[:, ::1] out):
    """out = g(z) for the activation code (codes.py); z, out (m, k)."""
    cdef Py_ssize_t m = z.shape[0], k = z.shape[1]
    cdef double* work = NULL
    if m == 0 or k == 0:
        return
    if activation == SOFTMAX:
        work = <double*>malloc(k * sizeof(double))
        if work == NULL:
            raise MemoryError()
    with nogil:
        c_activation_forward(&z[0, 0], m, k, activation, alpha, &out[0, 0], work)
    free(work)


def activation_backward(const floating[:, ::1] da, const floating[:, ::1] z,
                        const floating[:, ::1] a, int activation, double alpha,
                        floating[:, ::1] out):
    """out = da * g'(z) given the saved a = g(z); all (m, k)."""
    if z.shape[0] and z.shape[1]:
        with nogil:
            c_activation_backward(&da[0, 0], &z[0, 0], &a[0, 0], z.shape[0],
                                  z.shape[1], activation, alpha, &out[0, 0])
