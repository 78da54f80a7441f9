"""One epoch of training in one call: the contract of the compiled whole-epoch kernels.

``train_epoch`` runs, for every mini-batch of an epoch, exactly the sequence the
Python training step of :class:`fastnn.MLP` runs (gather the rows, dense forward,
loss, loss gradient, dense backward, global gradient norm, clipping, optimizer update)
by calling this backend's own kernels in the same order with the same arguments. The
compiled backends implement it as one call into compiled code, so the Python
interpreter is left only at epoch boundaries; being the same kernels in the same
order, every backend's ``train_epoch`` gives bit for bit the weights its own
step-by-step path gives.

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
                                 a_l may be z_l (same offset) for the output layer.
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
2. for each layer: dense_forward(x_in, W_l, b_l, acts[l], alphas[l], z_l, a_l); with
   bn, the step path's sequence instead: dense_forward(x_in, W_l, 0, identity, z_l,
   z_l), then batch_norm_train (bn = 1; saving x_hat_l, inv_std_l and moving the running
   statistics) or batch_norm_eval (bn = 2) from z_l into z_l itself, then
   activation_forward(z_l, acts[l], alphas[l], a_l). With dropout,
   mask_l = dropout_mask(dropout_seed, t, l, rate_l) and
   o_l = dropout(a_l, mask_l, rate_l) (the layer above reads o_l instead of a_l).
3. loss = the loss kernel on (out, targets) and, with sample weights, the batch's
   weights wb = sample_weight[order[s:e]] (docs/spec.md §4, "Sample weights"); a
   non-finite loss stops the epoch with STATUS_LOSS_NOT_FINITE before anything is
   updated (a batch whose weights sum to 0 has a NaN loss). Correct rows are counted
   (unweighted). With sample weights and any optimizer but AdamW, this batch's
   weight_decay is ``hyper[4] * (m / S)``, S = sum(wb) (float64, pairwise): the L2
   term is normalised by the weight sum like the loss (scikit-learn's alpha / S).
4. g_{L-1} = the loss gradient; for l = L-1 .. lowest: with dropout, g_l =
   dropout(g_l, mask_l, rate_l) in place; dense_backward(...) writing dW_l, db_l into
   ``grads``, and dense_input_gradient into g_{l-1} when l > lowest. With bn:
   activation_backward(g_l, z_l, a_l) in place, then batch_norm_backward in place
   writing dgamma_l, dbeta_l into ``grads`` (bn = 1), or
   ``g_l *= gamma_l / sqrt(running_var_l + eps)``, the factor in float64 rounded to dt
   (bn = 2), then dense_backward(x_in, z_l, z_l, g_l, identity) for dW_l (its bias sum
   is not kept).
5. sq = sum over segments (in order) of squared_norm(grads[start:stop]); norm = sqrt(sq)
   (float64); a non-finite norm stops with STATUS_GRAD_NOT_FINITE, nothing updated.
   If 0 < clip_norm < norm, every segment is scaled by clip_norm / norm.
6. t = t0 + (j - batch_start) + 1; every segment is updated by the optimizer kernel
   (``optimizer_step``) with lr = lrs[j] and weight_decay if ``decayed`` else 0 (Adam's
   bias corrections use t).
7. stats: loss_sum += loss m, correct += ..., steps += 1, grad_norm = norm.
"""

import math

import numpy as np

from .._kernels import codes
from .activations import activation_backward, activation_forward
from .dense import dense_backward, dense_forward, dense_input_gradient
from .losses import (
    binary_cross_entropy,
    binary_cross_entropy_gradient,
    cross_entropy,
    cross_entropy_gradient,
    mse,
    mse_gradient,
    poisson,
    poisson_gradient,
    sparse_cross_entropy,
    sparse_cross_entropy_gradient,
)
from .masks import dropout_mask
from .normalization import batch_norm_backward, batch_norm_eval, batch_norm_train
from .normalization import dropout as dropout_kernel
from .optimizers import optimizer_step, scale_inplace, squared_norm

__all__ = ["train_epoch"]


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


# z, a (m, k) written, z in place from x W; x_hat (m, k), inv_std (k,) written (code 1).
def _bn_forward(
    code, x, w, gamma, beta, r_mean, r_var, eps, momentum, act, alpha, z, a, x_hat, inv
):
    """A batch-normalised layer's forward as the step path runs it: z = x W + 0 (the zero
    bias), normalised in place with the batch statistics (code 1, moving the running
    ones) or the running ones (code 2, a frozen layer), then a = g(z)."""
    dense_forward(x, w, np.zeros(w.shape[1], w.dtype), codes.IDENTITY, None, z, z)
    if code == 1:
        batch_norm_train(z, gamma, beta, eps, momentum, r_mean, r_var, z, x_hat, inv)
    else:
        batch_norm_eval(z, gamma, beta, r_mean, r_var, eps, z)
    activation_forward(z, act, alpha, a)


# g (m, k) in place; dw, dgamma, dbeta written (dgamma, dbeta for code 1 only).
def _bn_backward(code, x, z, a, g, gamma, r_var, eps, act, alpha, x_hat, inv, dw, dgamma, dbeta):
    """The step path's backward through a batch-normalised layer: g's activation
    derivative, the normalisation's backward (code 1) or the frozen layer's constant
    factor gamma / sqrt(running_var + eps) (code 2), then dW (its bias sum discarded)."""
    activation_backward(g, z, a, act, alpha, g)
    if code == 1:
        batch_norm_backward(g, x_hat, gamma, inv, g, dgamma, dbeta)
    else:
        factor = gamma * (1 / np.sqrt(r_var.astype(np.float64) + eps))
        np.multiply(g, factor.astype(g.dtype), out=g)
    dense_backward(x, z, z, g, codes.IDENTITY, None, g, dw, np.empty_like(gamma))


def _loss(loss_code, out, t, wb):
    """The mean (or weighted mean, wb not empty) loss of the batch."""
    if loss_code == codes.LOSS_MSE:
        return mse(out.reshape(-1), t.reshape(-1), wb)
    if loss_code == codes.LOSS_BINARY_CROSS_ENTROPY:
        return binary_cross_entropy(out, t, wb)
    if loss_code == codes.LOSS_CROSS_ENTROPY:
        return cross_entropy(out, t, wb)
    if loss_code == codes.LOSS_POISSON:
        return poisson(out.reshape(-1), t.reshape(-1), wb)
    return sparse_cross_entropy(out, t, wb)


def _loss_gradient(loss_code, out, t, g, wb):
    """dL/d(out) written into g."""
    if loss_code == codes.LOSS_MSE:
        mse_gradient(out.reshape(-1), t.reshape(-1), g.reshape(-1), wb)
    elif loss_code == codes.LOSS_BINARY_CROSS_ENTROPY:
        binary_cross_entropy_gradient(out, t, g, wb)
    elif loss_code == codes.LOSS_CROSS_ENTROPY:
        cross_entropy_gradient(out, t, g, wb)
    elif loss_code == codes.LOSS_POISSON:
        poisson_gradient(out.reshape(-1), t.reshape(-1), g.reshape(-1), wb)
    else:
        sparse_cross_entropy_gradient(out, t, g, wb)


def _n_correct(loss_code, out, t):
    """Rows predicted right: argmax for the cross-entropies (first maximum), every
    column's sign for binary cross-entropy, none for mse."""
    if loss_code == codes.LOSS_SPARSE_CROSS_ENTROPY:
        return int(np.count_nonzero(np.argmax(out, axis=1) == t))
    if loss_code == codes.LOSS_CROSS_ENTROPY:
        return int(np.count_nonzero(np.argmax(out, axis=1) == np.argmax(t, axis=1)))
    if loss_code == codes.LOSS_BINARY_CROSS_ENTROPY:
        return int(np.count_nonzero(((out > 0) == (t > 0.5)).all(axis=1)))
    return 0


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
    """One epoch of mini-batch training; see the module docstring for the contract."""
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
    hyper = [float(h) for h in hyper]
    weight_decay, clip_norm = hyper[4], hyper[5]
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
    # batch normalisation: gamma (dgamma) and the running statistics; b is beta
    gamma = [None] * n_layers
    dgamma = [None] * n_layers
    r_mean = [None] * n_layers
    r_var = [None] * n_layers
    for i in range(n_layers):
        if bns[i]:
            k, (go, ro) = dims[i + 1], bn_off[i, :2]
            gamma[i], dgamma[i] = params[go : go + k], grads[go : go + k]
            r_mean[i], r_var[i] = buffers[ro : ro + k], buffers[ro + k : ro + 2 * k]

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
            if bns[i]:
                _bn_forward(
                    bns[i], x_in, W[i], gamma[i], b[i], r_mean[i], r_var[i], bn_eps, bn_momentum,
                    acts[i], alphas[i], z[i], a[i], x_hat[i], inv_std[i],
                )  # fmt: skip
            else:
                dense_forward(x_in, W[i], b[i], acts[i], alphas[i], z[i], a[i])
            if rates[i]:
                dropout_mask(dropout_seed, t_drop, i, rates[i], mask[i])
                dropout_kernel(a[i], mask[i], rates[i], o[i])
            x_in = o[i]
        out = o[-1]
        wb = sample_weight[rows] if sample_weight.size else sample_weight
        if wb.size and not codes.DECOUPLED[opt_code]:
            weight_decay = hyper[4] * float(np.float64(m) / np.sum(wb))
        loss = _loss(loss_code, out, t, wb)
        if not math.isfinite(loss):
            stats[codes.STAT_STATUS] = codes.STATUS_LOSS_NOT_FINITE
            stats[codes.STAT_BAD_VALUE] = loss
            return
        correct = _n_correct(loss_code, out, t)
        _loss_gradient(loss_code, out, t, g[-1], wb)

        for i in range(n_layers - 1, lowest - 1, -1):
            x_below = xb if i == 0 else o[i - 1]
            if rates[i]:
                dropout_kernel(g[i], mask[i], rates[i], g[i])
            if bns[i]:
                _bn_backward(
                    bns[i], x_below, z[i], a[i], g[i], gamma[i], r_var[i], bn_eps, acts[i],
                    alphas[i], x_hat[i], inv_std[i], dW[i], dgamma[i], db[i],
                )  # fmt: skip
            else:
                dense_backward(x_below, z[i], a[i], g[i], acts[i], alphas[i], g[i], dW[i], db[i])
            if i > lowest:
                dense_input_gradient(g[i], W[i], g[i - 1])

        sq = 0.0
        for start, stop, _ in segments:
            sq += squared_norm(grads[start:stop])
        norm = math.sqrt(sq)
        if not math.isfinite(norm):
            stats[codes.STAT_STATUS] = codes.STATUS_GRAD_NOT_FINITE
            stats[codes.STAT_BAD_VALUE] = norm
            return
        if 0 < clip_norm < norm:
            for start, stop, _ in segments:
                scale_inplace(grads[start:stop], clip_norm / norm)
        t_step = int(t0) + (j - batch_start) + 1
        for start, stop, decayed in segments:
            s1 = state1[start:stop] if state1.size else state1
            s2 = state2[start:stop] if state2.size else state2
            optimizer_step(
                params[start:stop],
                grads[start:stop],
                s1,
                s2,
                opt_code,
                t_step,
                float(lrs[j]),
                hyper,
                weight_decay if decayed else 0.0,
            )
        stats[codes.STAT_LOSS_SUM] += loss * m
        stats[codes.STAT_CORRECT] += correct
        stats[codes.STAT_STEPS] += 1
        stats[codes.STAT_GRAD_NORM] = norm
