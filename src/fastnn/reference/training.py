"""One epoch of training in one call: the contract of the compiled whole-epoch kernels.

``train_epoch`` runs, for every mini-batch of an epoch, the training step of
:class:`fastnn.MLP` (gather the rows, forward, loss, loss gradient, backward, global
gradient norm, clipping, optimizer update). The step is not written twice: its
operations are the functions of :mod:`fastnn.reference.ops` (a dense layer's, a batch
normalisation's and a dropout's forward and backward, the loss, the norm, clipping,
the update), each taking a kernel namespace. The model's layers, loss and optimizers
call them with the model backend's raw kernels (the step-by-step path); ``train_epoch``
calls them with the reference kernels, in the order below, on the flat arrays of this
contract. ``train_epoch_with(k)`` is the same epoch driven through another namespace,
e.g. a backend's raw kernels (``fastnn.backend(name)._raw``): it is then that backend's
step-by-step path, the same functions with the same kernels in the same order
(tests/test_epoch.py checks the bits).

The compiled backends implement this contract as one call into compiled code (the
Python interpreter is left only at epoch boundaries), calling their own kernels in the
same order with the same arguments, so every backend's ``train_epoch`` gives bit for
bit the weights its own step-by-step path gives. Their ``train_epoch`` is the raw
kernel and checks nothing; ``fastnn.backend(name)._train_epoch`` checks a call first
(``fastnn._kernels.epoch_args``, docs/spec.md §9).

Scope: dense layers with any activation, inverted dropout and batch normalisation
(batch statistics in training, the running ones for a frozen layer).

Arguments (all arrays C-contiguous; ``dt`` is the model dtype, float32 or float64):

==============  ===============  ============================================================
X               (n, d) dt        the training inputs
y               (n, k) dt        float targets; (0, 0) with LOSS_SPARSE_CROSS_ENTROPY
labels          (n,) int64       class indices for LOSS_SPARSE_CROSS_ENTROPY; else (0,)
order           (n,) int64       the row order of this epoch (a permutation or arange)
batch_size      int              rows per batch; the last partial batch is kept
dims            (L+1,) int64     layer widths [d, h1, ..., k]
acts, alphas    (L,) int64/f64   activation code and alpha of each layer (codes.py)
w_off, b_off    (L,) int64       offsets of W_l (dims[l] x dims[l+1], row-major) and b_l
                                 in ``params`` (and of dW_l, db_l in ``grads``)
lowest          int              lowest trainable layer; gradients below it are not computed
loss_code       int              codes.LOSS_*
params, grads   (P,) dt          flat parameter and gradient buffers
ws              (W,) dt          workspace; ``ws_off`` gives its regions (element offsets),
ws_off          (2+3L,) int64    [xb, yb, z_0, a_0, g_0, z_1, ...], each region sized
                                 batch_size x width; a batch of m rows uses the first m rows.
                                 a_l may be z_l (same offset): for the output layer,
                                 and for a layer without batch normalisation or
                                 dropout whose g' reads the same at g(z) as at z
                                 (identity, relu, leaky_relu with 0 < alpha < inf;
                                 the backward then reads z_l's region as z).
lb              (bs,) int64      gathered labels (sparse cross-entropy), else (0,);
                                 bs = batch_size
opt_code        int              codes.OPT_*
state1, state2  (P,) dt or (0,)  optimizer state: velocity | sum_sq | sq_avg | (m, v)
hyper           (6,) float64     [h0, h1, eps, eps_inside_sqrt, weight_decay, clip_norm]
lrs             (nb,) float64    learning rate of each step of the epoch (nb batches)
batch_start,    int              the batches of the epoch this call runs: j in
batch_stop                       [batch_start, batch_stop) (so long epochs can be cut
                                 into calls that return to Python, e.g. for Ctrl-C)
t0              int              optimizer steps completed before this call
segments        (S, 3) int64     [start, stop, decayed] pieces of ``params`` to update
stats           (N_STATS,) f64   see codes.STAT_*: LOSS_SUM and CORRECT accumulate across
                                 calls (the caller zeroes them at the start of an epoch);
                                 the others are set by each call
n_threads       int (default 1)  threads the compiled kernels may run the tiles of each
                                 GEMM on (``fastnn.reference.blas.gemm_blocks``); the
                                 results never depend on it, so the reference ignores it
dropout         (L,) f64 | None  drop rate of each layer, in [0, 1) (0: no dropout). None
                                 (the default): no layer has dropout, and the four
                                 arguments below are not read
dropout_off     (L, 2) int64     per layer with dropout: the element offset in ``ws`` of
                                 its output o_l (batch_size x width; what the layer above
                                 reads) and the offset in ``masks`` of its keep mask
                                 (batch_size x width); ignored for the other layers
masks           (M,) uint8       the keep masks' workspace
dropout_seed    int [0, 2**64)   the model's dropout seed (docs/spec.md §7)
dropout_t0      int >= 0         training forwards the model ran before this call: batch
                                 j draws the masks of forward t = dropout_t0 + (j -
                                 batch_start) (``fastnn.reference.masks``). The caller
                                 advances its count by STAT_STEPS, plus one when the call
                                 stopped on a non-finite value (that batch's forward ran)
bn              (L,) int64       per layer: 0 no batch normalisation, 1 batch statistics
                | None           (training), 2 running statistics (a frozen layer). None
                                 (the default): none, and the four arguments below are not
                                 read. For a layer with bn, b_off is the offset of beta
bn_off          (L, 4) int64     per layer with bn: offsets of gamma in ``params`` (dgamma
                                 in ``grads``), of its running mean in ``buffers`` (the
                                 running variance follows it), of x_hat (rows x width) and
                                 of inv_std (width) in ``ws``; ignored for the other layers
buffers         (B,) dt          the running statistics, updated in place
bn_eps,         float            the model's bn_eps and bn_momentum (docs/spec.md §7)
bn_momentum
sample_weight   (n,) f64 | None  per-sample weights of X's rows (finite, >= 0), gathered by
                                 ``order`` like y; None or empty (the default): unweighted
==============  ===============  ============================================================

Batches. Batch j holds rows s = j batch_size up to e = min(n, s + batch_size); when a
layer has bn = 1 and the last batch of the epoch would hold a single row, it is merged
into the one before (as the step path's ``MLP._batches``): the epoch then has
ceil(n / batch_size) - 1 batches, the last of batch_size + 1 rows, and every region
sized "batch_size x width" above must hold rows = batch_size + 1 rows. bn = 1 needs
batch_size >= 2 and n >= 2 (ValueError otherwise).

Per batch j (rows s up to e as above, m = e - s):

1. xb = X[order[s:e]]; targets likewise.
2. for each layer (``ops.dense_forward``, ``ops.batch_norm_forward``,
   ``ops.dropout_forward``): dense_forward(x_in, W_l, b_l, acts[l], alphas[l], z_l,
   a_l); with bn, the step path's sequence instead: dense_forward(x_in, W_l, 0, identity, z_l,
   z_l), then batch_norm_train (bn = 1; saving x_hat_l, inv_std_l and moving the running
   statistics) or batch_norm_eval (bn = 2) from z_l into z_l itself, then
   activation_forward(z_l, acts[l], alphas[l], a_l). With dropout,
   mask_l = dropout_mask(dropout_seed, t, l, rate_l) and
   o_l = dropout(a_l, mask_l, rate_l) (the layer above reads o_l instead of a_l).
3. loss = the loss kernel on (out, targets) (``ops.loss_value``) and, with sample
   weights, the batch's weights wb = sample_weight[order[s:e]] (docs/spec.md §4, "Sample
   weights"); a non-finite loss stops the epoch with STATUS_LOSS_NOT_FINITE before
   anything is updated (a batch whose weights sum to 0 has a NaN loss). Correct rows are
   counted (unweighted). With sample weights and any optimizer but AdamW, this batch's
   weight_decay is ``hyper[4] * (m / S)``, S = sum(wb) (float64, pairwise): the L2 term
   is normalised by the weight sum like the loss (scikit-learn's alpha / S).
4. g_{L-1} = the loss gradient (``ops.loss_gradient``); for l = L-1 .. lowest: with
   dropout, g_l = dropout(g_l, mask_l, rate_l) in place (``ops.dropout_backward``);
   dense_backward(...) writing dW_l, db_l into ``grads``, and dense_input_gradient into
   g_{l-1} when l > lowest (``ops.dense_backward``). With bn
   (``ops.batch_norm_backward``): activation_backward(g_l, z_l, a_l) in place, then
   batch_norm_backward in place writing dgamma_l, dbeta_l into ``grads`` (bn = 1), or
   ``g_l *= gamma_l / sqrt(running_var_l + eps)``, the factor in float64 rounded to dt
   (bn = 2), then dense_backward(x_in, z_l, z_l, g_l, identity) for dW_l (its bias sum
   is not kept).
5. (``ops.gradient_norm``, ``ops.clip``) sq = sum over segments (in order) of
   squared_norm(grads[start:stop]); norm = sqrt(sq) (float64); a non-finite norm stops
   with STATUS_GRAD_NOT_FINITE, nothing updated. If 0 < clip_norm < norm, every segment
   is scaled by clip_norm / norm.
6. (``ops.update``) t = t0 + (j - batch_start) + 1; every segment is updated by the
   optimizer kernel (``optimizer_step``) with lr = lrs[j] and weight_decay if
   ``decayed`` else 0 (Adam's bias corrections use t).
7. stats: loss_sum += loss m, correct += ..., steps += 1, grad_norm = norm.
"""

import functools
import math

import numpy as np

from .._kernels import codes
from . import ops
from .ops import REFERENCE

__all__ = ["train_epoch"]  # train_epoch_with: a test hook, not a kernel


def _region(ws, offset, m, width):
    return ws[offset : offset + m * width].reshape(m, width)


def batch_rows(n, batch_size, bn_trains):
    """(batches, rows): the epoch's number of batches and the rows of its largest one.

    With a batch-normalised layer in training (``bn_trains``) a last batch of a single
    row is merged into the one before, as ``MLP._batches`` does.
    """
    n_batches = -(-n // batch_size)
    if bn_trains and n_batches > 1 and n - (n_batches - 1) * batch_size == 1:
        return n_batches - 1, batch_size + 1
    return n_batches, batch_size


# Silent as the compiled kernels are: a diverging step's overflow is reported through
# the status, not as NumPy warnings.
@np.errstate(over="ignore", invalid="ignore", divide="ignore")
def _train_epoch(
    k,
    X,
    y,
    labels,
    order,
    batch_size,
    dims,
    acts,
    alphas,
    w_off,
    b_off,
    lowest,
    loss_code,
    params,
    grads,
    ws,
    ws_off,
    lb,
    opt_code,
    state1,
    state2,
    hyper,
    lrs,
    batch_start,
    batch_stop,
    t0,
    segments,
    stats,
    n_threads=1,
    dropout=None,
    dropout_off=None,
    masks=None,
    dropout_seed=0,
    dropout_t0=0,
    bn=None,
    bn_off=None,
    buffers=None,
    bn_eps=1e-5,
    bn_momentum=0.1,
    sample_weight=None,
):
    """One epoch on the kernel namespace k (see :mod:`fastnn.reference.ops`)."""
    n, n_layers = X.shape[0], len(acts)
    rates = [0.0] * n_layers if dropout is None else [float(r) for r in dropout]
    bns = [0] * n_layers if bn is None else [int(c) for c in bn]
    if 1 in bns and (batch_size < 2 or n < 2):
        raise ValueError("train_epoch: batch normalisation in training needs batch_size >= 2")
    n_batches = batch_rows(n, batch_size, 1 in bns)[0]
    if not 0 <= batch_start <= batch_stop <= n_batches:
        raise ValueError("train_epoch: batch range out of range")
    bn_eps, bn_momentum = float(bn_eps), float(bn_momentum)
    # Python floats, as the step path passes them: a NumPy float64 scalar would make
    # NumPy 2 compute leaky_relu's alpha z of a float32 z in float64
    alphas = [float(al) for al in alphas]
    sparse = loss_code == codes.LOSS_SPARSE_CROSS_ENTROPY
    stats[codes.STAT_STEPS] = stats[codes.STAT_STATUS] = 0.0
    if sample_weight is None:
        sample_weight = np.zeros(0)
    if sample_weight.size not in (0, n):
        raise ValueError("train_epoch: sample_weight must have one weight per row of X")
    hyper = np.ascontiguousarray(hyper, np.float64)  # an array, as the kernels take it
    weight_decay, clip_norm = float(hyper[4]), float(hyper[5])
    W = [
        params[w_off[i] : w_off[i] + dims[i] * dims[i + 1]].reshape(dims[i], dims[i + 1])
        for i in range(n_layers)
    ]
    b = [params[b_off[i] : b_off[i] + dims[i + 1]] for i in range(n_layers)]
    dW = [
        grads[w_off[i] : w_off[i] + dims[i] * dims[i + 1]].reshape(dims[i], dims[i + 1])
        for i in range(n_layers)
    ]
    db = [grads[b_off[i] : b_off[i] + dims[i + 1]] for i in range(n_layers)]
    # batch normalisation: gamma (dgamma) and the running statistics; b is beta (db its
    # gradient); the dense layer's zero bias and the bias gradient it discards
    zero: list = [None] * n_layers
    db_unused: list = [None] * n_layers
    b_grad = db
    gamma = [None] * n_layers
    dgamma = [None] * n_layers
    r_mean = [None] * n_layers
    r_var = [None] * n_layers
    for i in range(n_layers):
        if bns[i]:
            width, (go, ro) = dims[i + 1], bn_off[i, :2]
            gamma[i], dgamma[i] = params[go : go + width], grads[go : go + width]
            r_mean[i] = buffers[ro : ro + width]
            r_var[i] = buffers[ro + width : ro + 2 * width]
            zero[i], db_unused[i] = np.zeros(width, params.dtype), np.empty(width, params.dtype)

    for j in range(batch_start, batch_stop):
        s = j * batch_size
        e = n if j == n_batches - 1 else s + batch_size
        m = e - s
        rows = order[s:e]
        xb = _region(ws, ws_off[0], m, dims[0])
        xb[...] = X[rows]
        if sparse:
            t = lb[:m]
            t[...] = labels[rows]
        else:
            t = _region(ws, ws_off[1], m, dims[-1])
            t[...] = y[rows]
        z = [_region(ws, ws_off[2 + 3 * i], m, dims[i + 1]) for i in range(n_layers)]
        a = [_region(ws, ws_off[3 + 3 * i], m, dims[i + 1]) for i in range(n_layers)]
        g = [_region(ws, ws_off[4 + 3 * i], m, dims[i + 1]) for i in range(n_layers)]

        # a batch-normalised layer's saved x_hat (m x width) and inv_std (width)
        x_hat = [
            _region(ws, bn_off[i, 2], m, dims[i + 1]) if bns[i] else None for i in range(n_layers)
        ]
        inv_std = [
            ws[bn_off[i, 3] : bn_off[i, 3] + dims[i + 1]] if bns[i] else None
            for i in range(n_layers)
        ]
        o = list(a)
        mask: list[np.ndarray | None] = [None] * n_layers
        t_drop = int(dropout_t0) + (j - batch_start)
        for i in range(n_layers):
            if rates[i]:
                o[i] = _region(ws, dropout_off[i, 0], m, dims[i + 1])
                lo = dropout_off[i, 1]
                mask[i] = masks[lo : lo + m * dims[i + 1]].reshape(m, dims[i + 1])

        x_in = xb
        for i in range(n_layers):
            if bns[i]:  # the step path's Dense (no bias, identity), then its BatchNorm
                ops.dense_forward(k, x_in, W[i], zero[i], codes.IDENTITY, 0.0, z[i], z[i])
                ops.batch_norm_forward(
                    k, bns[i] == 2, z[i], gamma[i], b[i], r_mean[i], r_var[i], bn_eps,
                    bn_momentum, acts[i], alphas[i], z[i], a[i], x_hat[i], inv_std[i],
                )  # fmt: skip
            else:
                ops.dense_forward(k, x_in, W[i], b[i], acts[i], alphas[i], z[i], a[i])
            if rates[i]:
                ops.dropout_forward(
                    k, dropout_seed, t_drop, i, rates[i], a[i], mask[i], o[i]
                )  # fmt: skip
            x_in = o[i]
        out = o[-1]
        wb = sample_weight[rows] if sample_weight.size else sample_weight
        if wb.size and not codes.DECOUPLED[opt_code]:
            weight_decay = float(hyper[4]) * float(np.float64(m) / np.sum(wb))
        loss = float(ops.loss_value(k, loss_code, out, t, wb))
        if not math.isfinite(loss):
            stats[codes.STAT_STATUS] = codes.STATUS_LOSS_NOT_FINITE
            stats[codes.STAT_BAD_VALUE] = loss
            return
        correct = ops.n_correct(loss_code, out, t)
        ops.loss_gradient(k, loss_code, out, t, g[-1], wb)

        for i in range(n_layers - 1, lowest - 1, -1):
            x_below = xb if i == 0 else o[i - 1]
            g_in = g[i - 1] if i > lowest else None
            if rates[i]:
                ops.dropout_backward(k, rates[i], mask[i], g[i])
            if bns[i]:  # the BatchNorm's backward, then its Dense's (no bias, identity)
                ops.batch_norm_backward(
                    k, bns[i] == 2, g[i], z[i], a[i], gamma[i], r_var[i], bn_eps, acts[i],
                    alphas[i], x_hat[i], inv_std[i], g[i], g[i], dgamma[i], b_grad[i],
                )  # fmt: skip
                ops.dense_backward(
                    k, x_below, W[i], z[i], z[i], g[i], codes.IDENTITY, 0.0, dW[i], db_unused[i],
                    g_in,
                )  # fmt: skip
            else:
                ops.dense_backward(
                    k, x_below, W[i], z[i], a[i], g[i], acts[i], alphas[i], dW[i], db[i], g_in
                )

        norm = ops.gradient_norm(k, grads, segments)
        if not math.isfinite(norm):
            stats[codes.STAT_STATUS] = codes.STATUS_GRAD_NOT_FINITE
            stats[codes.STAT_BAD_VALUE] = norm
            return
        ops.clip(k, grads, segments, clip_norm, norm)
        t_step = int(t0) + (j - batch_start) + 1
        ops.update(
            k, params, grads, state1, state2, segments, opt_code, t_step, float(lrs[j]), hyper,
            weight_decay,
        )  # fmt: skip
        stats[codes.STAT_LOSS_SUM] += loss * m
        stats[codes.STAT_CORRECT] += correct
        stats[codes.STAT_STEPS] += 1
        stats[codes.STAT_GRAD_NORM] = norm


def train_epoch(
    X,
    y,
    labels,
    order,
    batch_size,
    dims,
    acts,
    alphas,
    w_off,
    b_off,
    lowest,
    loss_code,
    params,
    grads,
    ws,
    ws_off,
    lb,
    opt_code,
    state1,
    state2,
    hyper,
    lrs,
    batch_start,
    batch_stop,
    t0,
    segments,
    stats,
    n_threads=1,
    dropout=None,
    dropout_off=None,
    masks=None,
    dropout_seed=0,
    dropout_t0=0,
    bn=None,
    bn_off=None,
    buffers=None,
    bn_eps=1e-5,
    bn_momentum=0.1,
    sample_weight=None,
):
    """One epoch of mini-batch training on the reference kernels; see the module
    docstring for the contract."""
    _train_epoch(REFERENCE, **locals())


def train_epoch_with(k):
    """``train_epoch`` (the same arguments) driven through the kernel namespace ``k``
    (a backend's raw kernels, ``fastnn.backend(name)._raw``) instead of the reference's:
    the step functions of :mod:`fastnn.reference.ops` in the order above, which is
    that backend's step-by-step path (the model's layers call the same functions)."""
    return functools.partial(_train_epoch, k)
