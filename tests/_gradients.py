"""Gradient checks shared by the model and layer tests."""

import numpy as np
import pytest


def grad_check(net, X, y, fix_dropout=False, n_check=40):
    """model.grads after ``loss_and_gradient`` against central differences of the loss
    on ``n_check`` random trainable parameters (float64 models)."""

    def loss_at():
        if fix_dropout:
            net._dropout_step = 0  # the masks of the model's first training forward
        return net.loss_and_gradient(X, y)

    loss_at()
    analytic = net.grads.copy()
    rng = np.random.default_rng(0)
    trainable = np.concatenate([np.arange(s, e) for s, e, _ in net.param_segments()])
    idx = rng.choice(trainable, size=min(n_check, trainable.size), replace=False)
    h = 1e-6
    for i in idx:
        old = net.params[i]
        net.params[i] = old + h
        lp = loss_at()
        net.params[i] = old - h
        lm = loss_at()
        net.params[i] = old
        numeric = (lp - lm) / (2 * h)
        # central differences in float64: truncation O(h^2) and rounding
        # O(eps * |L| / h) ~ 1e-10, so 1e-6 absolute plus 1e-5 relative is generous
        # yet far below any real gradient bug.
        assert numeric == pytest.approx(analytic[i], rel=1e-5, abs=1e-6), i
