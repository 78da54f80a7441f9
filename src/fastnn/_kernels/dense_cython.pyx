"""Cython dense-layer kernels: fastnn.reference.dense compiled, same names.

The forward pass is one GEMM into z, then one pass over z that adds the bias and
applies the activation; the backward pass is one pass that forms dz and accumulates db
row by row, then one GEMM for dw. Arguments come checked from
``fastnn.backend("cython")``: C-contiguous arrays of one float dtype, outputs
preallocated.
"""

import numpy as np

from cython cimport floating
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy

from fastnn._kernels.activations_cython cimport (
    ELU, SIGMOID, SOFTMAX, STEP, TANH, c_g, c_g_d, c_softmax, c_softmax_backward, elu_1,
    elu_d1, sigmoid_1, step_1, step_d1, tanh_1,
)
from fastnn._kernels.blas_cython cimport (
    GEMM_COPY_MAX, fnn_pool_run, fnn_set_gemm, fnn_small_gemm_mnk, fnn_task_fn,
    fnn_transposed_f32, gemm, gemm_claim, gemm_copies_b, gemm_grid, gemm_one_tile, pw_sum,
)
from fastnn._kernels.fastnn_simd cimport (
    FNN_SMALL_K, fnn_act_grad_bias_f32, fnn_act_grad_bias_f64, fnn_bias_act_f32,
    fnn_bias_act_f64, fnn_small_k_bias_act_f32, fnn_small_k_bias_act_f64,
)

__all__ = [
    "dense_forward",
    "dense_backward",
    "dense_input_gradient",
]

# Every product of the Cython kernels (the epoch kernel's too) is made in this module:
# point its GEMM at fastnn's single-threaded BLAS instance before anything runs.
from fastnn._blas import gemm_addresses as _gemm_addresses
from fastnn._blas import own_gemm as _own_gemm
from fastnn._blas import share_addresses as _share_addresses
from fastnn._blas import small_gemm_mnk as _small_gemm_mnk

_sgemm, _dgemm = _gemm_addresses()
_share, _share_pack, _unshare = _share_addresses()
_own = _own_gemm()


def _point_gemm(double small_mnk, int own):
    """fnn_set_gemm with this process's GEMM and share addresses, and the tiling rule's
    ``small_mnk`` and ``own`` (the process's own values but in the tests' helpers)."""
    fnn_set_gemm(_sgemm, _dgemm, small_mnk, own, _share, _share_pack, _unshare)


_point_gemm(_small_gemm_mnk(), _own)


# --- C-level kernels -----------------------------------------------------------------

cdef void c_dense_forward(const floating* x, const floating* w, const floating* b,
                          Py_ssize_t m, Py_ssize_t n_in, Py_ssize_t n_out,
                          int activation, double alpha, floating* z, floating* a,
                          double* work, int n_threads) noexcept nogil:
    """z = x @ w + b, a = g(z); the bias is added in the array dtype, then g as in
    activations_cython. a may be z; work holds n_out doubles for softmax; the GEMM's
    blocks run on up to n_threads threads."""
    cdef Py_ssize_t i, j, row
    cdef floating t
    cdef floating alpha_ = <floating>alpha
    if 1 <= n_in <= FNN_SMALL_K:
        # A short inner dimension (fastnn's own product): product, bias and identity,
        # relu or leaky_relu in one pass, the same bits; on one tile, or one thread
        # (more threads share a product of several tiles).
        if n_threads <= 1 or gemm_one_tile(m, n_out, n_in):
            if floating is float:
                if fnn_small_k_bias_act_f32(x, w, b, m, n_in, n_out, activation, alpha_,
                                            z, a):
                    return
            else:
                if fnn_small_k_bias_act_f64(x, w, b, m, n_in, n_out, activation, alpha_,
                                            z, a):
                    return
    gemm(False, False, <int>m, <int>n_out, <int>n_in, x, <int>n_in, w, <int>n_out,
         z, <int>n_out, n_threads)
    # Identity, relu and leaky_relu: fastnn_simd.h's pass, multiversioned for the CPU.
    if floating is float:
        if fnn_bias_act_f32(z, b, m, n_out, activation, alpha_, a):
            return
    else:
        if fnn_bias_act_f64(z, b, m, n_out, activation, alpha_, a):
            return
    # The others: one loop per activation so the code is tested once per call.
    if activation == STEP:
        for i in range(m):
            row = i * n_out
            for j in range(n_out):
                t = z[row + j] + b[j]
                z[row + j] = t
                a[row + j] = step_1(t)
    elif activation == SIGMOID:
        for i in range(m):
            row = i * n_out
            for j in range(n_out):
                t = z[row + j] + b[j]
                z[row + j] = t
                a[row + j] = sigmoid_1(t)
    elif activation == TANH:
        for i in range(m):
            row = i * n_out
            for j in range(n_out):
                t = z[row + j] + b[j]
                z[row + j] = t
                a[row + j] = tanh_1(t)
    elif activation == ELU:
        for i in range(m):
            row = i * n_out
            for j in range(n_out):
                t = z[row + j] + b[j]
                z[row + j] = t
                a[row + j] = elu_1(t, alpha)
    elif activation == SOFTMAX:
        for i in range(m):
            row = i * n_out
            for j in range(n_out):
                z[row + j] = z[row + j] + b[j]
            c_softmax(z + row, 1, n_out, a + row, work)
    else:  # the activations of activations_cython.c_g, by code
        for i in range(m):
            row = i * n_out
            for j in range(n_out):
                t = z[row + j] + b[j]
                z[row + j] = t
                a[row + j] = <floating>c_g(activation, t)


cdef void c_dense_backward(const floating* x, const floating* z, const floating* a,
                           const floating* da, Py_ssize_t m, Py_ssize_t n_in,
                           Py_ssize_t n_out, int activation, double alpha,
                           floating* dz, floating* dw, floating* db,
                           int n_threads) noexcept nogil:
    """dz = da * g'(z) (activation_backward's rules), db = sum of dz's rows, dw = x^T dz.

    db starts at +0.0 and adds row after row in the array dtype, NumPy's order for an
    axis-0 sum; with one column NumPy sums pairwise instead, and so does this. dz may
    be da: every element is read before it is written.
    """
    cdef Py_ssize_t i, j, row
    cdef floating t, d
    cdef floating one = 1
    cdef floating zero = 0
    cdef floating alpha_ = <floating>alpha
    cdef bint done
    for j in range(n_out):
        db[j] = 0
    # Identity, relu and leaky_relu: fastnn_simd.h's pass, multiversioned for the CPU.
    if floating is float:
        done = fnn_act_grad_bias_f32(da, z, m, n_out, activation, alpha_, dz, db)
    else:
        done = fnn_act_grad_bias_f64(da, z, m, n_out, activation, alpha_, dz, db)
    if done:
        pass  # identity, relu, leaky_relu
    elif activation == STEP:
        for i in range(m):
            row = i * n_out
            for j in range(n_out):
                d = step_d1(z[row + j])
                t = da[row + j] * d
                dz[row + j] = t
                db[j] = db[j] + t
    elif activation == SIGMOID:
        for i in range(m):
            row = i * n_out
            for j in range(n_out):
                t = da[row + j] * (a[row + j] * (one - a[row + j]))
                dz[row + j] = t
                db[j] = db[j] + t
    elif activation == TANH:
        for i in range(m):
            row = i * n_out
            for j in range(n_out):
                t = da[row + j] * (one - a[row + j] * a[row + j])
                dz[row + j] = t
                db[j] = db[j] + t
    elif activation == ELU:
        for i in range(m):
            row = i * n_out
            for j in range(n_out):
                d = elu_d1(z[row + j], alpha)
                t = da[row + j] * d
                dz[row + j] = t
                db[j] = db[j] + t
    elif activation == SOFTMAX:
        for i in range(m):
            row = i * n_out
            c_softmax_backward(a + row, da + row, 1, n_out, dz + row)
            for j in range(n_out):
                db[j] = db[j] + dz[row + j]
    else:  # activations_cython.c_g_d, by code, rounded to the dtype before the product
        for i in range(m):
            row = i * n_out
            for j in range(n_out):
                d = <floating>c_g_d(activation, z[row + j])
                t = da[row + j] * d
                dz[row + j] = t
                db[j] = db[j] + t
    if n_out == 1:
        db[0] = zero + pw_sum(dz, m)
    c_dense_weight_gradient(x, dz, m, n_in, n_out, dw, n_threads)


cdef void c_dense_weight_gradient(const floating* x, const floating* dz, Py_ssize_t m,
                                  Py_ssize_t n_in, Py_ssize_t n_out,
                                  floating* dw, int n_threads) noexcept nogil:
    """dw = x^T dz: one GEMM, x read transposed in place (c_dense_backward's last part;
    the epoch kernel calls it alone when another pass made dz and db)."""
    gemm(True, False, <int>n_in, <int>n_out, <int>m, x, <int>n_in, dz, <int>n_out,
         dw, <int>n_out, n_threads)


cdef void c_dense_input_gradient(const floating* dz, const floating* w, Py_ssize_t m,
                                 Py_ssize_t n_in, Py_ssize_t n_out,
                                 floating* dx, int n_threads) noexcept nogil:
    """dx = dz @ w^T: one GEMM, w read transposed in place."""
    gemm(False, True, <int>m, <int>n_in, <int>n_out, dz, <int>n_out, w, <int>n_out,
         dx, <int>n_in, n_threads)


cdef void c_run_tasks(fnn_task_fn fn, void* ctx, int n_tasks,
                      int n_threads) noexcept nogil:
    """fn(ctx, i) for i < n_tasks on this module's thread pool (fastnn_pool.h)."""
    fnn_pool_run(fn, ctx, n_tasks, n_threads)


# --- Python wrappers (the reference's signatures) ------------------------------------

def dense_forward(const floating[:, ::1] x, const floating[:, ::1] w,
                  const floating[::1] b, int activation, double alpha,
                  floating[:, ::1] z, floating[:, ::1] a):
    """z = x @ w + b and a = g(z), written into z and a (a may be z)."""
    cdef Py_ssize_t m = x.shape[0], n_in = x.shape[1], n_out = w.shape[1]
    cdef double* work = NULL
    if m == 0 or n_out == 0:
        return
    if activation == SOFTMAX:
        work = <double*>malloc(n_out * sizeof(double))
        if work == NULL:
            raise MemoryError()
    with nogil:
        c_dense_forward(&x[0, 0], &w[0, 0], &b[0], m, n_in, n_out, activation, alpha,
                        &z[0, 0], &a[0, 0], work, 1)
    free(work)


def dense_backward(const floating[:, ::1] x, const floating[:, ::1] z,
                   const floating[:, ::1] a, const floating[:, ::1] da, int activation,
                   double alpha, floating[:, ::1] dz, floating[:, ::1] dw,
                   floating[::1] db):
    """dz = da * g'(z); dw = x.T @ dz; db = dz summed over the batch (dz may be da)."""
    cdef Py_ssize_t m = x.shape[0], n_in = x.shape[1], n_out = z.shape[1]
    if m == 0 or n_in == 0 or n_out == 0:
        return
    with nogil:
        c_dense_backward(&x[0, 0], &z[0, 0], &a[0, 0], &da[0, 0], m, n_in, n_out,
                         activation, alpha, &dz[0, 0], &dw[0, 0], &db[0], 1)


def dense_input_gradient(const floating[:, ::1] dz, const floating[:, ::1] w,
                         floating[:, ::1] dx):
    """dx = dz @ w.T; dz (m, n_out), w (n_in, n_out), dx (m, n_in)."""
    cdef Py_ssize_t m = dz.shape[0], n_out = dz.shape[1], n_in = w.shape[0]
    if m == 0 or n_in == 0 or n_out == 0:
        return
    with nogil:
        c_dense_input_gradient(&dz[0, 0], &w[0, 0], m, n_in, n_out, &dx[0, 0], 1)


# --- for the tests: the tiling rule and a threaded product, as the kernels run them ---

def _gemm_grid(Py_ssize_t m, Py_ssize_t n, Py_ssize_t k, bint trans_a=False,
               bint trans_b=False, small_mnk=None, bint single=False, own=None):
    """blas_cython.pxd's gemm_grid (to compare with fastnn.reference.blas.gemm_grid),
    with fnn_small_gemm_mnk and fnn_gemm_own set to ``small_mnk`` and ``own`` for the
    call when given (no kernel may run meanwhile)."""
    cdef int rows, cols
    cdef double kept = fnn_small_gemm_mnk
    _point_gemm(kept if small_mnk is None else small_mnk, _own if own is None else own)
    try:
        gemm_grid(m, n, k, trans_a, trans_b, single, &rows, &cols)
    finally:
        _point_gemm(kept, _own)
    return rows, cols


def _gemm_claim(int t, int tiles):
    """blas_cython.pxd's gemm_claim (to compare with fastnn.reference.blas.gemm_claim)."""
    return gemm_claim(t, tiles)


def _gemm_copies_b(Py_ssize_t m, Py_ssize_t n, Py_ssize_t k, bint trans_a, bint trans_b,
                   small_mnk, bint single):
    """blas_cython.pxd's gemm_copies_b (to compare with the reference's), with
    fnn_small_gemm_mnk set to ``small_mnk`` for the call (no kernel may run meanwhile)."""
    cdef double kept = fnn_small_gemm_mnk
    cdef bint res
    _point_gemm(small_mnk, _own)
    try:
        res = gemm_copies_b(m, n, k, trans_a, trans_b, single)
    finally:
        _point_gemm(kept, _own)
    return res


def _transposed_copy(const float[:, ::1] b, bint registers):
    """fastnn_blas.h's transposed copy of b (n, k), n k <= GEMM_COPY_MAX, as a new array;
    in registers (AVX-512, where the CPU has it) or, registers False, by its fallback
    loops."""
    cdef Py_ssize_t n = b.shape[0], k = b.shape[1]
    cdef const float* bt
    if n * k > GEMM_COPY_MAX:
        raise ValueError(f"b has {n * k} values, more than the copy's {GEMM_COPY_MAX}")
    out = np.empty((k, n), np.float32)
    cdef float[:, ::1] o = out
    if n and k:
        bt = fnn_transposed_f32(&b[0, 0], n, k, k, registers)
        memcpy(&o[0, 0], bt, n * k * sizeof(float))
    return out


def _gemm_threads(const floating[:, ::1] a, const floating[:, ::1] b,
                  floating[:, ::1] out, bint trans_a, bint trans_b, int n_threads):
    """out = op(a) @ op(b) through the kernels' gemm, its tiles on n_threads threads."""
    cdef int m = out.shape[0], n = out.shape[1]
    cdef int k = a.shape[0] if trans_a else a.shape[1]
    if m == 0 or n == 0:
        return
    with nogil:
        gemm(trans_a, trans_b, m, n, k, &a[0, 0], <int>a.shape[1], &b[0, 0],
             <int>b.shape[1], &out[0, 0], n, n_threads)
