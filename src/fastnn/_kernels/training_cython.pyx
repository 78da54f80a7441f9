"""Cython whole-epoch training kernel: fastnn.reference.training compiled, same name.

``train_epoch`` runs every mini-batch of [batch_start, batch_stop) in C with the GIL
released: gather the rows, dense forward, loss, loss gradient, dense backward, global
gradient norm, clipping, optimizer update. Each of these is the C-level kernel the
Cython backend's own ``def`` wrapper calls, with the same arguments in the same order,
so the epoch gives bit for bit the weights of the Cython step-by-step path; the one
exception computes the same values in one pass instead of two (a layer's input
gradient through a product of inner dimension 1-4 with the activation gradient and
bias sum of the layer below: _input_gradient_and_below). Nothing is allocated per
step: the scratch (softmax rows, bias sums) is allocated once per call.

The arguments come from fastnn._epoch, already consistent; the C code trusts them (no
bounds checks): the wrapper checks the arrays' types, fastnn._kernels.epoch_args their
lengths and offsets (once per plan, or every call in the checked tier).
"""

cimport numpy as cnp
from cython cimport floating
from libc.math cimport ceil, isfinite, sqrt
from libc.stdint cimport int64_t, uint64_t
from libc.stdlib cimport calloc, free, malloc
from libc.string cimport memcpy

from fastnn._kernels.blas_cython cimport gemm_one_tile, pw_split, pw_sum
from fastnn._kernels.fastnn_simd cimport (
    FNN_SMALL_K, fnn_small_k_act_grad_bias_f32, fnn_small_k_act_grad_bias_f64,
)
from fastnn._kernels.dense_cython cimport (
    c_dense_backward, c_dense_forward, c_dense_input_gradient, c_dense_weight_gradient,
    c_run_tasks,
)
from fastnn._kernels.activations_cython cimport c_activation_backward, c_activation_forward
from fastnn._kernels.normalization_cython cimport (
    c_batch_norm_backward, c_batch_norm_eval, c_batch_norm_train, c_dropout,
)
from fastnn._kernels.losses_cython cimport (
    c_binary_cross_entropy, c_binary_cross_entropy_gradient, c_cross_entropy,
    c_cross_entropy_and_gradient, c_cross_entropy_gradient, c_mse, c_mse_gradient,
    c_poisson, c_poisson_gradient, c_sparse_cross_entropy,
    c_sparse_cross_entropy_and_gradient, c_sparse_cross_entropy_gradient,
)
from fastnn._kernels.optimizers_cython cimport (
    c_optimizer_step, c_scale_inplace, c_squared_norm,
)

__all__ = ["train_epoch"]

# The activation, loss and optimizer codes, written by setup.py from fastnn/registry.py.
include "codes.pxi"

# The statistics the epoch reports (fastnn/_kernels/codes.py; checked once at import).
cdef enum:
    STAT_LOSS_SUM = 0
    STAT_CORRECT = 1
    STAT_STEPS = 2
    STAT_STATUS = 3
    STAT_GRAD_NORM = 4
    STAT_BAD_VALUE = 5
    N_STATS = 6
    STATUS_LOSS_NOT_FINITE = 1
    STATUS_GRAD_NOT_FINITE = 2


# --- pieces of one step --------------------------------------------------------------

# SplitMix64 (fastnn.reference.masks): the increment and the finaliser.
cdef enum:
    MASK_SHIFT = 40

cdef uint64_t GAMMA = 0x9E3779B97F4A7C15ULL


cdef inline uint64_t _mix64(uint64_t z) noexcept nogil:
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL
    return z ^ (z >> 31)


cdef void _dropout_mask(unsigned char* mask, Py_ssize_t n, uint64_t seed, long long t,
                        Py_ssize_t layer, double rate) noexcept nogil:
    """mask[:n] = the keep mask of ``layer`` in training forward t (reference
    dropout_mask): unit i kept when splitmix(key_tl, i + 1) >> 40 >= ceil(rate 2^24)."""
    cdef uint64_t thr = <uint64_t>ceil(rate * 16777216.0)
    cdef uint64_t key = _mix64(seed + <uint64_t>(t + 1) * GAMMA)
    cdef Py_ssize_t i
    key = _mix64(key + <uint64_t>(layer + 1) * GAMMA)
    for i in range(n):
        mask[i] = (_mix64(key + <uint64_t>(i + 1) * GAMMA) >> MASK_SHIFT) >= thr


cdef inline Py_ssize_t _argmax(const floating* row, Py_ssize_t k) noexcept nogil:
    """np.argmax of a row: the first maximum, or the first NaN (NumPy's NaN wins)."""
    cdef Py_ssize_t j, best = 0
    cdef floating mx = row[0]
    if mx != mx:
        return 0
    for j in range(1, k):
        if row[j] > mx:
            mx = row[j]
            best = j
        elif row[j] != row[j]:
            return j
    return best


cdef Py_ssize_t _n_correct(int loss_code, const floating* out, const floating* t,
                           const int64_t* lb, Py_ssize_t m,
                           Py_ssize_t k) noexcept nogil:
    """Rows predicted right, as the reference's _n_correct (none for mse)."""
    cdef Py_ssize_t i, j, count = 0
    cdef bint right
    if loss_code == LOSS_SPARSE_CROSS_ENTROPY:
        for i in range(m):
            count += _argmax(out + i * k, k) == lb[i]
    elif loss_code == LOSS_CROSS_ENTROPY:
        for i in range(m):
            count += _argmax(out + i * k, k) == _argmax(t + i * k, k)
    elif loss_code == LOSS_BINARY_CROSS_ENTROPY:
        for i in range(m):
            right = True
            for j in range(k):
                if (out[i * k + j] > 0) != (t[i * k + j] > 0.5):
                    right = False
                    break
            count += right
    return count


cdef double _loss(int loss_code, const floating* out, const floating* t,
                  const int64_t* lb, Py_ssize_t m, Py_ssize_t k,
                  double* work, const double* w) noexcept nogil:
    """The batch's mean loss (weighted by w unless NULL): the C function behind the
    loss's def wrapper."""
    if loss_code == LOSS_MSE:
        return c_mse(out, t, m * k, w, k)
    if loss_code == LOSS_BINARY_CROSS_ENTROPY:
        return c_binary_cross_entropy(out, t, m, k, w)
    if loss_code == LOSS_CROSS_ENTROPY:
        return c_cross_entropy(out, t, m, k, work, w)
    if loss_code == LOSS_POISSON:
        return c_poisson(out, t, m * k, w, k)
    return c_sparse_cross_entropy(out, lb, m, k, work, w)


cdef void _loss_gradient(int loss_code, const floating* out, const floating* t,
                         const int64_t* lb, Py_ssize_t m, Py_ssize_t k, floating* g,
                         double* work, const double* w) noexcept nogil:
    """dL/d(out) into g (m, k)."""
    if loss_code == LOSS_MSE:
        c_mse_gradient(out, t, m * k, g, w, k)
    elif loss_code == LOSS_BINARY_CROSS_ENTROPY:
        c_binary_cross_entropy_gradient(out, t, m, k, g, w)
    elif loss_code == LOSS_CROSS_ENTROPY:
        c_cross_entropy_gradient(out, t, m, k, g, work, w)
    elif loss_code == LOSS_POISSON:
        c_poisson_gradient(out, t, m * k, g, w, k)
    else:
        c_sparse_cross_entropy_gradient(out, lb, m, k, g, work, w)


cdef inline void _update(const EpochOpt* opt, floating* p, const floating* g,
                         floating* s1, floating* s2, Py_ssize_t n, long long t, double lr,
                         double weight_decay) noexcept nogil:
    """The optimizer kernel on a segment, as the step path's optimizer_step calls it."""
    c_optimizer_step(p, g, s1, s2, n, opt.opt_code, t, lr, opt.hyper, weight_decay)


# The optimizer update is elementwise, so any cut gives the same bits: segments of at
# least UPDATE_SPLIT parameters are updated in pieces of UPDATE_PIECE, a count that
# follows from the size alone, as the GEMM tiles do (pieces for every thread). Shorter
# segments stay on the caller. (On a 2-core machine busy with other work a helper
# preempted in the middle of a piece can cost more than it saves; on an idle one the
# cut pays: config B's step ran 1.36x faster on 2 threads with its products and update
# cut, and 1.0x without.)
cdef enum:
    UPDATE_SPLIT = 131072
    UPDATE_PIECE = 65536


cdef struct UpdateJob:
    const EpochOpt* opt
    void* p
    const void* g
    void* s1
    void* s2
    Py_ssize_t n
    Py_ssize_t chunk
    long long t
    double lr
    double wd


cdef inline void _update_piece(const UpdateJob* u, int i, floating* p, const floating* g,
                               floating* s1, floating* s2) noexcept nogil:
    """Piece i of the job's segment (p, g, s1, s2 are the job's pointers, typed)."""
    cdef Py_ssize_t lo = i * u.chunk
    cdef Py_ssize_t hi = min(u.n, lo + u.chunk)
    if hi > lo:
        _update(u.opt, p + lo, g + lo, s1 + lo if s1 != NULL else NULL,
                s2 + lo if s2 != NULL else NULL, hi - lo, u.t, u.lr, u.wd)


cdef void _update_piece_f32(void* job, int i) noexcept nogil:
    cdef UpdateJob* u = <UpdateJob*>job
    _update_piece(u, i, <float*>u.p, <const float*>u.g, <float*>u.s1, <float*>u.s2)


cdef void _update_piece_f64(void* job, int i) noexcept nogil:
    cdef UpdateJob* u = <UpdateJob*>job
    _update_piece(u, i, <double*>u.p, <const double*>u.g, <double*>u.s1, <double*>u.s2)


cdef void _update_threads(const EpochOpt* opt, floating* p, const floating* g,
                          floating* s1, floating* s2, Py_ssize_t n, long long t,
                          double lr, double weight_decay, int n_threads) noexcept nogil:
    """_update on a segment, in pieces on the thread pool when it is long enough."""
    cdef UpdateJob job
    if n_threads <= 1 or n < UPDATE_SPLIT:
        _update(opt, p, g, s1, s2, n, t, lr, weight_decay)
        return
    job.opt = opt
    job.p = p
    job.g = g
    job.s1 = s1
    job.s2 = s2
    job.n = n
    job.chunk = UPDATE_PIECE
    job.t = t
    job.lr = lr
    job.wd = weight_decay
    if floating is float:
        c_run_tasks(_update_piece_f32, &job, (n + UPDATE_PIECE - 1) // UPDATE_PIECE,
                    n_threads)
    else:
        c_run_tasks(_update_piece_f64, &job, (n + UPDATE_PIECE - 1) // UPDATE_PIECE,
                    n_threads)


# The squared norm is NumPy's pairwise sum: x's two halves (split where the tree splits)
# are summed independently and added, so two threads may each take one and the total
# keeps its bits (c_squared_norm's leading 0.0 + only turns a -0.0 into +0.0, which
# the final 0.0 + does anyway).
cdef struct NormJob:
    const void* x
    Py_ssize_t n
    Py_ssize_t half
    double part[2]


cdef void _norm_half_f32(void* job, int i) noexcept nogil:
    cdef NormJob* u = <NormJob*>job
    cdef const float* x = <const float*>u.x
    u.part[i] = (c_squared_norm(x, u.half) if i == 0
                 else c_squared_norm(x + u.half, u.n - u.half))


cdef void _norm_half_f64(void* job, int i) noexcept nogil:
    cdef NormJob* u = <NormJob*>job
    cdef const double* x = <const double*>u.x
    u.part[i] = (c_squared_norm(x, u.half) if i == 0
                 else c_squared_norm(x + u.half, u.n - u.half))


cdef double _squared_norm_threads(const floating* x, Py_ssize_t n,
                                  int n_threads) noexcept nogil:
    """c_squared_norm(x, n), its two halves on two threads when x is long enough."""
    cdef NormJob job
    if n_threads <= 1 or n < UPDATE_SPLIT:
        return c_squared_norm(x, n)
    job.x = x
    job.n = n
    job.half = pw_split(n)
    if floating is float:
        c_run_tasks(_norm_half_f32, &job, 2, n_threads)
    else:
        c_run_tasks(_norm_half_f64, &job, 2, n_threads)
    return 0.0 + (job.part[0] + job.part[1])


# Batch normalisation (docs/spec.md §7): a layer with bn runs the step path's kernels in
# its order. z = x W + 0 (the zero bias turns -0.0 into +0.0 as the step path's does),
# normalised in place (z becomes gamma x_hat + beta), then g; backward, g's derivative,
# the normalisation's backward in place (dgamma, dbeta into grads), then dW.

cdef void _bn_forward(const EpochNet* net, Py_ssize_t i, const floating* x_in,
                      const floating* params, floating* buffers, floating* ws,
                      Py_ssize_t m, const floating* zeros, double* work,
                      int n_threads) noexcept nogil:
    """Layer i's forward with batch normalisation into z_i (then zn) and a_i."""
    cdef Py_ssize_t k = net.dims[i + 1]
    cdef const int64_t* bo = net.bn_off + 4 * i
    cdef floating* z = ws + net.ws_off[2 + 3 * i]
    cdef floating* rm = buffers + bo[1]
    c_dense_forward(x_in, params + net.w_off[i], zeros, m, net.dims[i], k, IDENTITY, 0.0,
                    z, z, NULL, n_threads)
    if net.bn[i] == 1:
        c_batch_norm_train(z, params + bo[0], params + net.b_off[i], m, k, net.bn_eps,
                           net.bn_momentum, rm, rm + k, z, ws + bo[2], ws + bo[3], work)
    else:
        c_batch_norm_eval(z, params + bo[0], params + net.b_off[i], rm, rm + k, m, k,
                          net.bn_eps, z, work)
    c_activation_forward(z, m, k, <int>net.acts[i], net.alphas[i],
                         ws + net.ws_off[3 + 3 * i], work)


cdef void _bn_backward(const EpochNet* net, Py_ssize_t i, const floating* x_in,
                       const floating* params, floating* grads, const floating* buffers,
                       floating* ws, Py_ssize_t m, floating* db_scratch, double* work,
                       int n_threads) noexcept nogil:
    """Layer i's backward with batch normalisation: g_i from dL/da_i to dL/dz_i in place,
    dgamma and dbeta (batch statistics only) and dW_i into grads."""
    cdef Py_ssize_t r, j, k = net.dims[i + 1]
    cdef const int64_t* bo = net.bn_off + 4 * i
    cdef floating* z = ws + net.ws_off[2 + 3 * i]
    cdef floating* g = ws + net.ws_off[4 + 3 * i]
    cdef const floating* rv = buffers + bo[1] + k
    cdef floating s
    c_activation_backward(g, z, ws + net.ws_off[3 + 3 * i], m, k, <int>net.acts[i],
                          net.alphas[i], g)
    if net.bn[i] == 1:
        c_batch_norm_backward(g, ws + bo[2], params + bo[0], ws + bo[3], m, k, g,
                              grads + bo[0], grads + net.b_off[i], work)
    else:  # frozen: g *= gamma / sqrt(running_var + eps), the factor in float64
        for j in range(k):
            work[j] = <double>params[bo[0] + j] * (1 / sqrt(<double>rv[j] + net.bn_eps))
        for r in range(m):
            for j in range(k):
                s = <floating>work[j]
                g[r * k + j] = g[r * k + j] * s
    c_dense_backward(x_in, z, z, g, m, net.dims[i], k, IDENTITY, 0.0, g,
                     grads + net.w_off[i], db_scratch, n_threads)


cdef bint _input_gradient_and_below(const EpochNet* net, Py_ssize_t i,
                                    const floating* params, floating* grads,
                                    floating* ws, Py_ssize_t m,
                                    int n_threads) noexcept nogil:
    """Layer i's input gradient g_i W_i^T and layer i - 1's activation gradient and
    bias sum in one pass (fnn_small_k_act_grad_bias: the bits of c_dense_input_gradient
    then c_dense_backward's pass), leaving g_(i-1) = dz_(i-1) and db_(i-1) done; False,
    touching nothing, unless W_i's output width is 1-4 and layer i - 1 is a plain
    identity, relu or leaky_relu layer of more than one unit (one unit's db is summed
    pairwise), on one tile or one thread."""
    cdef const int64_t* off = net.ws_off
    cdef Py_ssize_t n = net.dims[i], kin = net.dims[i + 1], j
    cdef int act = <int>net.acts[i - 1]
    cdef floating* db = grads + net.b_off[i - 1]
    if (net.bn[i - 1] != 0 or net.dropout[i - 1] != 0 or n == 1 or kin > FNN_SMALL_K
            or not (act == IDENTITY or act == RELU or act == LEAKY_RELU)
            or (n_threads > 1 and not gemm_one_tile(m, n, kin))):
        return False
    for j in range(n):
        db[j] = 0
    if floating is float:
        fnn_small_k_act_grad_bias_f32(ws + off[4 + 3 * i], params + net.w_off[i],
                                      ws + off[2 + 3 * (i - 1)], m, kin, n, act,
                                      <float>net.alphas[i - 1], ws + off[4 + 3 * (i - 1)],
                                      db)
    else:
        fnn_small_k_act_grad_bias_f64(ws + off[4 + 3 * i], params + net.w_off[i],
                                      ws + off[2 + 3 * (i - 1)], m, kin, n, act,
                                      net.alphas[i - 1], ws + off[4 + 3 * (i - 1)], db)
    return True


# --- the epoch -----------------------------------------------------------------------

cdef inline void _copy_row(floating* dst, const floating* src,
                           Py_ssize_t n) noexcept nogil:
    """dst[:n] = src[:n] (rows of a few values inline, longer ones by memcpy)."""
    cdef Py_ssize_t c
    if n <= 16:
        for c in range(n):
            dst[c] = src[c]
    else:
        memcpy(dst, src, n * sizeof(floating))


cdef void c_train_epoch(const floating* X, const floating* y, const int64_t* labels,
                        Py_ssize_t n, const int64_t* order, Py_ssize_t batch_size,
                        const EpochNet* net, const EpochOpt* opt, floating* params,
                        floating* grads, floating* ws, int64_t* lb, floating* state1,
                        floating* state2, const double* lrs, Py_ssize_t batch_start,
                        Py_ssize_t batch_stop, Py_ssize_t n_batches, long long t0,
                        double* stats, double* work, floating* buffers, floating* fwork,
                        int n_threads, const double* sample_weight,
                        double* wb) noexcept nogil:
    """Batches [batch_start, batch_stop) of the epoch; see fastnn.reference.training."""
    cdef Py_ssize_t L = net.n_layers
    cdef const int64_t* dims = net.dims
    cdef const int64_t* off = net.ws_off
    cdef const int64_t* seg = opt.segments
    cdef Py_ssize_t d = dims[0], k = dims[L], widest = 1
    cdef Py_ssize_t i, j, r, s, e, m, start, stop, correct
    cdef bint sparse = net.loss_code == LOSS_SPARSE_CROSS_ENTROPY
    cdef floating* xbuf = ws + off[0]
    cdef floating* ybuf = ws + off[1]
    cdef const floating* xb
    cdef const int64_t* lab
    cdef int64_t row0
    cdef bint run
    cdef const floating* x_in
    cdef const floating* t
    cdef floating* out
    cdef floating* g
    cdef double loss, sq, norm, factor
    cdef long long step
    cdef bint below_done
    # the optimizer as this batch runs it: with sample weights, its L2 decay is scaled
    # by m / S (set at the loss)
    cdef EpochOpt batch_opt = opt[0]
    cdef double opt_decay = opt.weight_decay
    cdef const double* wt = NULL
    opt = &batch_opt
    for i in range(1, L + 1):
        widest = max(widest, dims[i])
    stats[STAT_STEPS] = 0.0
    stats[STAT_STATUS] = 0.0
    for j in range(batch_start, batch_stop):
        s = j * batch_size
        e = s + batch_size if s + batch_size < n and j < n_batches - 1 else n
        m = e - s
        # 1. the rows order[s:s + m] of X and of the targets: a run of consecutive
        # rows (an epoch without shuffling) is read in place, as the Numba kernel and
        # the step path do (the same values), others are gathered into ws (a row of a
        # few values by a loop: a memcpy call per row cost more than the copy)
        row0 = order[s]
        run = True
        for r in range(1, m):
            if order[s + r] != row0 + r:
                run = False
                break
        if run:
            xb = X + row0 * d
            t = y
            lab = labels
            if sparse:
                lab = labels + row0
            else:
                t = y + row0 * k
        else:
            for r in range(m):
                _copy_row(xbuf + r * d, X + order[s + r] * d, d)
            if sparse:
                for r in range(m):
                    lb[r] = labels[order[s + r]]
            else:
                for r in range(m):
                    _copy_row(ybuf + r * k, y + order[s + r] * k, k)
            xb = xbuf
            t = ybuf
            lab = lb

        # 2. forward; z_i, a_i, g_i are ws + off[2 + 3 i + 0/1/2]; with dropout, the
        # step path's mask and its dropout kernel into o_i, which the layer above reads
        x_in = xb
        for i in range(L):
            if net.bn[i] != 0:
                _bn_forward(net, i, x_in, params, buffers, ws, m, fwork, work, n_threads)
            else:
                c_dense_forward(x_in, params + net.w_off[i], params + net.b_off[i], m,
                                dims[i], dims[i + 1], <int>net.acts[i], net.alphas[i],
                                ws + off[2 + 3 * i], ws + off[3 + 3 * i], work, n_threads)
            x_in = ws + off[3 + 3 * i]
            if net.dropout[i] != 0:
                _dropout_mask(net.masks + net.dropout_off[2 * i + 1], m * dims[i + 1],
                              net.dropout_seed, net.dropout_t0 + (j - batch_start), i,
                              net.dropout[i])
                c_dropout(ws + off[3 + 3 * i], net.masks + net.dropout_off[2 * i + 1],
                          m * dims[i + 1], net.dropout[i], ws + net.dropout_off[2 * i])
                x_in = ws + net.dropout_off[2 * i]
        out = <floating*>x_in

        # 3. loss (with sample weights: the batch's, and its decay scaled by m / S); a
        # non-finite one stops before anything is updated
        if sample_weight != NULL:
            for r in range(m):
                wb[r] = sample_weight[order[s + r]]
            wt = wb
            if not batch_opt.decoupled:
                batch_opt.weight_decay = opt_decay * (<double>m / (0.0 + pw_sum(wb, m)))
        # (softmax cross-entropy: the loss and its gradient in one pass, one softmax per
        # row; the same values as the two kernels)
        g = ws + off[4 + 3 * (L - 1)]
        if net.loss_code == LOSS_CROSS_ENTROPY:
            loss = c_cross_entropy_and_gradient(out, t, m, k, g, work, wt)
        elif net.loss_code == LOSS_SPARSE_CROSS_ENTROPY:
            loss = c_sparse_cross_entropy_and_gradient(out, lab, m, k, g, work, wt)
        else:
            loss = _loss(net.loss_code, out, t, lab, m, k, work, wt)
        if not isfinite(loss):
            stats[STAT_STATUS] = STATUS_LOSS_NOT_FINITE
            stats[STAT_BAD_VALUE] = loss
            return
        correct = _n_correct(net.loss_code, out, t, lab, m, k)

        # 4. backward down to the lowest trainable layer
        if net.loss_code != LOSS_CROSS_ENTROPY and \
                net.loss_code != LOSS_SPARSE_CROSS_ENTROPY:
            _loss_gradient(net.loss_code, out, t, lab, m, k, g, work, wt)
        below_done = False
        for i in range(L - 1, net.lowest - 1, -1):
            if i == 0:
                x_in = xb
            elif net.dropout[i - 1] != 0:
                x_in = ws + net.dropout_off[2 * (i - 1)]
            else:
                x_in = ws + off[3 + 3 * (i - 1)]
            if below_done:  # g_i is dz_i and db_i is summed: dW_i is left
                c_dense_weight_gradient(x_in, ws + off[4 + 3 * i], m, dims[i], dims[i + 1],
                                        grads + net.w_off[i], n_threads)
            else:
                if net.dropout[i] != 0:
                    c_dropout(ws + off[4 + 3 * i], net.masks + net.dropout_off[2 * i + 1],
                              m * dims[i + 1], net.dropout[i], ws + off[4 + 3 * i])
                if net.bn[i] != 0:
                    _bn_backward(net, i, x_in, params, grads, buffers, ws, m,
                                 fwork + widest, work, n_threads)
                else:
                    c_dense_backward(x_in, ws + off[2 + 3 * i], ws + off[3 + 3 * i],
                                     ws + off[4 + 3 * i], m, dims[i], dims[i + 1],
                                     <int>net.acts[i], net.alphas[i], ws + off[4 + 3 * i],
                                     grads + net.w_off[i], grads + net.b_off[i], n_threads)
            below_done = i > net.lowest and _input_gradient_and_below(
                net, i, params, grads, ws, m, n_threads)
            if i > net.lowest and not below_done:
                c_dense_input_gradient(ws + off[4 + 3 * i], params + net.w_off[i], m,
                                       dims[i], dims[i + 1], ws + off[4 + 3 * (i - 1)],
                                       n_threads)

        # 5. global gradient norm (segment by segment, as Optimizer.step), clipping
        sq = 0.0
        for i in range(opt.n_segments):
            start = seg[3 * i]
            stop = seg[3 * i + 1]
            if stop > start:
                sq += _squared_norm_threads(grads + start, stop - start, n_threads)
        norm = sqrt(sq)
        if not isfinite(norm):
            stats[STAT_STATUS] = STATUS_GRAD_NOT_FINITE
            stats[STAT_BAD_VALUE] = norm
            return
        if 0 < opt.clip_norm < norm:
            factor = opt.clip_norm / norm
            for i in range(opt.n_segments):
                start = seg[3 * i]
                stop = seg[3 * i + 1]
                c_scale_inplace(grads + start, stop - start, factor)

        # 6. the optimizer update of every segment
        step = t0 + (j - batch_start) + 1
        for i in range(opt.n_segments):
            start = seg[3 * i]
            stop = seg[3 * i + 1]
            if stop > start:
                _update_threads(opt, params + start, grads + start,
                                state1 + start if state1 != NULL else NULL,
                                state2 + start if state2 != NULL else NULL,
                                stop - start, step, lrs[j],
                                opt.weight_decay if seg[3 * i + 2] else 0.0, n_threads)

        # 7. statistics
        stats[STAT_LOSS_SUM] += loss * m
        stats[STAT_CORRECT] += correct
        stats[STAT_STEPS] += 1
        stats[STAT_GRAD_NORM] = norm


# --- the codes' check and the Python wrapper ---------------------------------------------

def _check_codes():
    """The codes this module was built with equal codes.py (called once at import): a
    table changed since the build would otherwise send the kernels the wrong codes."""
    from fastnn._kernels import codes
    mine = {"LOSS_MSE": LOSS_MSE, "LOSS_BINARY_CROSS_ENTROPY": LOSS_BINARY_CROSS_ENTROPY,
            "LOSS_CROSS_ENTROPY": LOSS_CROSS_ENTROPY,
            "LOSS_SPARSE_CROSS_ENTROPY": LOSS_SPARSE_CROSS_ENTROPY,
            "OPT_SGD": OPT_SGD, "OPT_MOMENTUM": OPT_MOMENTUM,
            "OPT_NESTEROV": OPT_NESTEROV, "OPT_ADAGRAD": OPT_ADAGRAD,
            "OPT_RMSPROP": OPT_RMSPROP, "OPT_ADAM": OPT_ADAM, "OPT_ADAMW": OPT_ADAMW,
            "N_ACTIVATIONS": N_ACTIVATIONS, "N_LOSSES": N_LOSSES,
            "N_OPTIMIZERS": N_OPTIMIZERS,
            "STAT_LOSS_SUM": STAT_LOSS_SUM, "STAT_CORRECT": STAT_CORRECT,
            "STAT_STEPS": STAT_STEPS, "STAT_STATUS": STAT_STATUS,
            "STAT_GRAD_NORM": STAT_GRAD_NORM, "STAT_BAD_VALUE": STAT_BAD_VALUE,
            "N_STATS": N_STATS, "STATUS_LOSS_NOT_FINITE": STATUS_LOSS_NOT_FINITE,
            "STATUS_GRAD_NOT_FINITE": STATUS_GRAD_NOT_FINITE}
    for name, value in mine.items():
        if getattr(codes, name) != value:
            raise ImportError(f"training_cython was built with {name} = {value}, "
                              f"codes.py says {getattr(codes, name)}: rebuild")


_check_codes()
# Per optimizer code, whether its decay is decoupled (not scaled by a weighted batch's
# m / S).
from fastnn._kernels.codes import DECOUPLED as _DECOUPLED
from fastnn._kernels.epoch_args import ARGS as _ARGS
from fastnn._kernels.epoch_args import OPTIONAL_GROUPS as _GROUPS
from fastnn._kernels.epoch_args import check_groups as _check_groups
from fastnn._kernels.epoch_args import wanted as _wanted

import numpy as np

cnp.import_array()


# ARGS's table (fastnn._kernels.epoch_args) as the checks below read it, set at import:
# per argument, the array's type number (-1: a number, -2: the model's float dtype), its
# dimensions and whether the kernel writes it.
cdef enum:
    MAX_ARGS = 48
    MODEL_FLOAT = -2
    NOT_ARRAY = -1
cdef int _ARG_TYPE[MAX_ARGS]
cdef int _ARG_NDIM[MAX_ARGS]
cdef bint _ARG_WRITE[MAX_ARGS]
_ARG_NAMES = tuple(name for name, _ in _ARGS)
_ARG_KINDS = tuple(kind for _, kind in _ARGS)
# the arguments a call may leave out (None), a group at a time: dropout's and batch
# normalisation's, as positions in ARGS
_OPTIONAL = frozenset(name for group in _GROUPS for name in group)
_GROUP_AT = tuple(tuple(_ARG_NAMES.index(name) for name in group) for group in _GROUPS)


def _set_arg_table():
    numbers = {"f": MODEL_FLOAT, "i": cnp.NPY_INT64, "d": cnp.NPY_FLOAT64,
               "u": cnp.NPY_UINT8}
    if len(_ARGS) > MAX_ARGS:
        raise ImportError("training_cython: ARGS has more entries than MAX_ARGS")
    for i, (name, kind) in enumerate(_ARGS):
        if kind in ("n", "r"):
            _ARG_TYPE[i], _ARG_NDIM[i], _ARG_WRITE[i] = NOT_ARRAY, 0, False
        else:
            _ARG_TYPE[i] = numbers[kind[0]]
            _ARG_NDIM[i] = int(kind[1])
            _ARG_WRITE[i] = kind.endswith("+")


_set_arg_table()


cdef int _check_arrays(tuple values, int ft) except -1:
    """Refuse (ValueError naming it, epoch_args.wanted's message) any array of
    ``values`` (train_epoch's arguments in ARGS's order) that is not a native-order,
    C-contiguous ndarray of its dtype (``ft``: the model's) and dimensions, writeable
    where the kernel writes (the checks typed memoryviews make, at a fraction of their
    cost: an epoch call passes 27 arrays), and a group of OPTIONAL_GROUPS given in
    part."""
    cdef Py_ssize_t i
    cdef int typenum
    for i in range(len(values)):
        typenum = _ARG_TYPE[i]
        if typenum == NOT_ARRAY:
            continue
        a = values[i]
        if a is None and _ARG_NAMES[i] in _OPTIONAL:
            continue
        if not _fits(a, ft if typenum == MODEL_FLOAT else typenum, _ARG_NDIM[i],
                     _ARG_WRITE[i]):
            raise ValueError(_wanted(_ARG_NAMES[i], _ARG_KINDS[i],
                                     np.float32 if ft == cnp.NPY_FLOAT32 else np.float64))
    for at in _GROUP_AT:
        if values[at[0]] is not None and any(values[i] is None for i in at[1:]):
            _check_groups(dict(zip(_ARG_NAMES, values)))  # raises, naming the group
    return 0


cdef inline bint _fits(object a, int typenum, int ndim, bint write):
    """a is a native-order, C-contiguous ndarray of typenum and ndim dimensions,
    writeable if write (alignment is not required, as typed memoryviews do not require
    it: arrays unpickled from a buffer, as Dask's workers receive them, may start at
    any byte, and x86-64 loads them all the same)."""
    cdef cnp.ndarray arr
    if not cnp.PyArray_Check(a):
        return False
    arr = <cnp.ndarray>a
    return (cnp.PyArray_TYPE(arr) == typenum and cnp.PyArray_NDIM(arr) == ndim
            and cnp.PyArray_IS_C_CONTIGUOUS(arr) and cnp.PyArray_ISNOTSWAPPED(arr)
            and (not write or cnp.PyArray_ISWRITEABLE(arr)))


cdef inline void* _data(object a) noexcept:
    return cnp.PyArray_DATA(<cnp.ndarray>a)


cdef inline Py_ssize_t _dim(object a, int i) noexcept:
    return cnp.PyArray_DIM(<cnp.ndarray>a, i)


def train_epoch(X, y, labels, order, Py_ssize_t batch_size, dims, acts, alphas, w_off,
                b_off, Py_ssize_t lowest, int loss_code, params, grads, ws, ws_off, lb,
                int opt_code, state1, state2, hyper, lrs, Py_ssize_t batch_start,
                Py_ssize_t batch_stop, long long t0, segments, stats, int n_threads=1,
                dropout=None, dropout_off=None, masks=None, dropout_seed=0,
                long long dropout_t0=0, bn=None, bn_off=None, buffers=None,
                double bn_eps=1e-5, double bn_momentum=0.1, sample_weight=None):
    """One epoch (batches [batch_start, batch_stop)) of mini-batch training in C.

    See fastnn.reference.training for the arguments and the steps; the GEMMs' blocks
    run on up to ``n_threads`` threads (fastnn_pool.h; the same bits for any count);
    ``params``, ``grads``, ``ws``, ``lb``, the optimizer state and ``stats`` are updated
    in place (and ``masks``, and ``buffers``, the running statistics; ``dropout=None``:
    no layer has dropout, ``bn=None``: no batch normalisation, ``sample_weight=None``
    or empty: unweighted).

    The raw kernel: beyond the arrays' types (fastnn._kernels.epoch_args.ARGS: dtype,
    dimensions, C order, writeable), nothing is checked (the checked tier,
    ``fastnn.backend("cython")._train_epoch``, runs
    ``fastnn._kernels.epoch_args.check_call`` first); a call whose arrays do not fit
    together reads or writes outside them.
    """
    cdef Py_ssize_t L, n, i, widest, first, last
    cdef Py_ssize_t n_batches, rows, itemsize
    cdef bint bn_trains = False
    cdef bint single
    cdef int ft
    cdef void* fwork
    cdef void* px
    cdef void* py
    cdef void* pp
    cdef void* pg
    cdef void* pws
    cdef const int64_t* plab
    cdef int64_t* plb
    cdef const int64_t* porder
    cdef const double* plrs
    cdef double* pstats
    cdef void* buf = NULL
    cdef void* s1 = NULL
    cdef void* s2 = NULL
    cdef bint sparse = loss_code == LOSS_SPARSE_CROSS_ENTROPY
    cdef EpochNet net
    cdef EpochOpt opt
    cdef double* work
    cdef double* wb = NULL
    cdef const double* weights = NULL
    cdef double* no_rates = NULL
    cdef int64_t* no_off = NULL
    cdef int64_t* no_bn = NULL
    cdef const int64_t* bn_p = NULL
    cdef uint64_t seed

    # The arrays' types, in ARGS's order; nothing else is checked here:
    # fastnn._epoch checks its layout once per plan and
    # fastnn.backend("cython")._train_epoch checks every call (fastnn._kernels.epoch_args).
    if not cnp.PyArray_Check(params) or cnp.PyArray_TYPE(<cnp.ndarray>params) not in (
            cnp.NPY_FLOAT32, cnp.NPY_FLOAT64):
        raise ValueError("train_epoch: params must be a float32 or float64 array")
    ft = cnp.PyArray_TYPE(<cnp.ndarray>params)
    single = ft == cnp.NPY_FLOAT32
    _check_arrays((X, y, labels, order, batch_size, dims, acts, alphas, w_off, b_off,
                   lowest, loss_code, params, grads, ws, ws_off, lb, opt_code, state1,
                   state2, hyper, lrs, batch_start, batch_stop, t0, segments, stats,
                   dropout, dropout_off, masks, dropout_seed, dropout_t0, bn, bn_off,
                   buffers, bn_eps, bn_momentum), ft)
    if sample_weight is not None and not _fits(sample_weight, cnp.NPY_FLOAT64, 1, False):
        raise ValueError("train_epoch: sample_weight must be None or a C-contiguous 1-D "
                         "float64 array")
    seed = dropout_seed
    itemsize = 4 if single else 8
    L = _dim(acts, 0)
    n = _dim(X, 0)

    if bn is not None:
        bn_p = <const int64_t*>_data(bn)
        if _dim(buffers, 0):
            buf = _data(buffers)
        for i in range(L):
            bn_trains = bn_trains or bn_p[i] == 1
    n_batches = (n + batch_size - 1) // batch_size
    rows = batch_size
    if bn_trains and n_batches > 1 and n - (n_batches - 1) * batch_size == 1:
        n_batches -= 1
        rows = batch_size + 1
    if sample_weight is not None and _dim(sample_weight, 0):
        weights = <const double*>_data(sample_weight)
    first = batch_start * batch_size
    last = n if batch_stop == n_batches else min(n, batch_stop * batch_size)
    if first >= last:
        (<double*>_data(stats))[STAT_STEPS] = 0.0
        (<double*>_data(stats))[STAT_STATUS] = 0.0
        return

    net.n_layers = L
    net.lowest = lowest
    net.loss_code = loss_code
    net.dims = <const int64_t*>_data(dims)
    net.acts = <const int64_t*>_data(acts)
    net.alphas = <const double*>_data(alphas)
    net.w_off = <const int64_t*>_data(w_off)
    net.b_off = <const int64_t*>_data(b_off)
    net.ws_off = <const int64_t*>_data(ws_off)
    net.dropout_seed = seed
    net.dropout_t0 = dropout_t0
    if dropout is None:
        no_rates = <double*>malloc(L * sizeof(double))
        no_off = <int64_t*>malloc(2 * L * sizeof(int64_t))
        if no_rates == NULL or no_off == NULL:
            free(no_rates)
            free(no_off)
            raise MemoryError()
        for i in range(L):
            no_rates[i] = 0.0
            no_off[2 * i] = no_off[2 * i + 1] = 0
        net.dropout = no_rates
        net.dropout_off = no_off
        net.masks = NULL
    else:
        net.dropout = <const double*>_data(dropout)
        net.dropout_off = <const int64_t*>_data(dropout_off)
        net.masks = <unsigned char*>_data(masks) if _dim(masks, 0) else NULL
    net.bn_eps = bn_eps
    net.bn_momentum = bn_momentum
    if bn is None:
        no_bn = <int64_t*>malloc(L * sizeof(int64_t))
        if no_bn == NULL:
            free(no_rates)
            free(no_off)
            raise MemoryError()
        for i in range(L):
            no_bn[i] = 0
        net.bn = no_bn
        net.bn_off = NULL
    else:
        net.bn = bn_p
        net.bn_off = <const int64_t*>_data(bn_off)
    opt.opt_code = opt_code
    opt.hyper = <const double*>_data(hyper)
    opt.decoupled = _DECOUPLED[opt_code]
    opt.weight_decay = opt.hyper[4]
    opt.clip_norm = opt.hyper[5]
    opt.segments = <const int64_t*>_data(segments) if _dim(segments, 0) else NULL
    opt.n_segments = _dim(segments, 0)
    if _dim(state1, 0):
        s1 = _data(state1)
    if _dim(state2, 0):
        s2 = _data(state2)

    widest = 1
    for i in range(1, L + 1):
        widest = max(widest, net.dims[i])
    # softmax rows and batch-norm sums (3 widest doubles); the zero bias and the bias sum
    # a batch-normalised layer discards (2 widest values)
    work = <double*>malloc(3 * widest * sizeof(double))
    fwork = calloc(2 * widest, itemsize)
    if weights != NULL:
        wb = <double*>malloc(rows * sizeof(double))  # a batch's gathered weights
    if work == NULL or fwork == NULL or (weights != NULL and wb == NULL):
        free(work)
        free(fwork)
        free(wb)
        free(no_rates)
        free(no_off)
        free(no_bn)
        raise MemoryError()
    px, pp, pg, pws = _data(X), _data(params), _data(grads), _data(ws)
    py = _data(y) if not sparse else NULL
    plab = <const int64_t*>_data(labels) if sparse else NULL
    plb = <int64_t*>_data(lb) if sparse else NULL
    porder = <const int64_t*>_data(order)
    plrs = <const double*>_data(lrs)
    pstats = <double*>_data(stats)
    n_threads = max(1, n_threads)
    with nogil:
        if single:
            c_train_epoch(<const float*>px, <const float*>py, plab, n, porder, batch_size,
                          &net, &opt, <float*>pp, <float*>pg, <float*>pws, plb,
                          <float*>s1, <float*>s2, plrs, batch_start, batch_stop,
                          n_batches, t0, pstats, work, <float*>buf, <float*>fwork,
                          n_threads, weights, wb)
        else:
            c_train_epoch(<const double*>px, <const double*>py, plab, n, porder,
                          batch_size, &net, &opt, <double*>pp, <double*>pg, <double*>pws,
                          plb, <double*>s1, <double*>s2, plrs, batch_start, batch_stop,
                          n_batches, t0, pstats, work, <double*>buf, <double*>fwork,
                          n_threads, weights, wb)
    free(work)
    free(wb)
    free(fwork)
    free(no_rates)
    free(no_off)
    free(no_bn)
