# C-level whole-epoch training kernel (fastnn.reference.training's contract) on raw
# pointers. The layout arrays are described once per call by two structs; the kernel
# runs batches [batch_start, batch_stop) without the GIL, calling the C-level kernels of
# the other families in the order the Python step path calls their wrappers.

from cython cimport floating
from libc.stdint cimport int64_t, uint64_t


# The model: n_layers dense layers, widths dims[0..n_layers], the offsets of W_l and b_l
# in params (and of dW_l, db_l in grads), and of the workspace regions
# [xb, yb, z_0, a_0, g_0, z_1, ...] in ws (elements). Dropout: the rate of each layer
# (0: none), and per dropout layer the offsets of its output o_l in ws and of its keep
# mask in masks (dropout_off, n_layers x 2); masks are drawn for training forward
# dropout_t0 + (j - batch_start) with dropout_seed (fastnn.reference.masks). Batch
# normalisation: per layer bn (0 none, 1 batch statistics, 2 running statistics) and
# bn_off (n_layers x 4: gamma in params, running mean in buffers, x_hat and inv_std in
# ws); for such a layer b_off is beta's offset.
cdef struct EpochNet:
    Py_ssize_t n_layers
    Py_ssize_t lowest
    int loss_code
    const int64_t* dims
    const int64_t* acts
    const double* alphas
    const int64_t* w_off
    const int64_t* b_off
    const int64_t* ws_off
    const double* dropout
    const int64_t* dropout_off
    unsigned char* masks
    uint64_t dropout_seed
    long long dropout_t0
    const int64_t* bn
    const int64_t* bn_off
    double bn_eps
    double bn_momentum


# The optimizer: its code and hyperparameters (codes.py's ``hyper``, N_HYPER values,
# read by c_optimizer_step), whether its decay is decoupled (codes.DECOUPLED), and the
# (start, stop, decayed) segments of params it updates, n_segments x 3 values.
cdef struct EpochOpt:
    int opt_code
    const double* hyper
    bint decoupled
    double weight_decay
    double clip_norm
    const int64_t* segments
    Py_ssize_t n_segments


# One call of train_epoch. X (n, dims[0]); y (n, dims[-1]) or NULL and labels (n,) for
# sparse cross-entropy; order (n,); lb (batch_size,) gathered labels; state1/state2
# (P,) or NULL; lrs indexed by batch; stats (N_STATS,). work: scratch for
# 3 max(dims[1:]) doubles (softmax rows, batch-norm statistics); buffers: the running
# statistics (or NULL without batch normalisation); fwork: 2 max(dims[1:]) values of
# the dtype, the first half zero (the zero bias and the discarded bias sum of a
# batch-normalised layer). n_batches: the epoch's batches (the last one ends at n). The
# GEMMs' blocks run on up to n_threads threads of fastnn_pool.h (same bits for any
# count). sample_weight: the n rows' weights or NULL (unweighted); wb: scratch for the
# largest batch's weights (NULL without weights). Inputs are trusted: the def wrapper
# checks them.
cdef void c_train_epoch(const floating* X, const floating* y, const int64_t* labels,
                        Py_ssize_t n, const int64_t* order, Py_ssize_t batch_size,
                        const EpochNet* net, const EpochOpt* opt, floating* params,
                        floating* grads, floating* ws, int64_t* lb, floating* state1,
                        floating* state2, const double* lrs, Py_ssize_t batch_start,
                        Py_ssize_t batch_stop, Py_ssize_t n_batches, long long t0,
                        double* stats, double* work, floating* buffers, floating* fwork,
                        int n_threads, const double* sample_weight,
                        double* wb) noexcept nogil
