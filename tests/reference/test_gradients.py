"""Finite-difference checks of every derivative, on every backend, in float64.

Central differences (f(x + h) - f(x - h)) / 2h with h = 1e-6 have a truncation error
h^2 |f'''| / 6 (about 1e-13 for the smooth functions and O(1) inputs used here) and a
rounding error about u64 |f| / h (about 1e-10 |f|). The tolerance,
``|analytic - numeric| <= FD_ATOL + FD_RTOL |numeric|`` with FD_ATOL = 1e-7 and
FD_RTOL = 1e-6, sits a thousand times above both while any wrong factor, sign or
missing term (errors of order 1e-2 and more here) fails it. Points are kept at least
1e-3 away from the kinks of relu, leaky_relu, elu and step, far more than h.
"""

import numpy as np
import pytest

from fastnn import registry
from kernels._support import ALL_BACKENDS, backend

H = 1e-6
FD_ATOL = 1e-7
FD_RTOL = 1e-6
ACTIVATIONS = [a.name for a in registry.ACTIVATIONS if not a.rowwise]


def numeric_grad(f, x, h=H):
    """Central-difference gradient of the scalar function f at x (any shape)."""
    x = np.array(x, dtype=np.float64)
    grad = np.empty_like(x)
    flat, gflat = x.reshape(-1), grad.reshape(-1)
    for i in range(flat.size):
        keep = flat[i]
        flat[i] = keep + h
        up = f(x)
        flat[i] = keep - h
        down = f(x)
        flat[i] = keep
        gflat[i] = (up - down) / (2 * h)
    return grad


def assert_grad(analytic, numeric, what):
    np.testing.assert_allclose(
        analytic,
        numeric,
        rtol=FD_RTOL,
        atol=FD_ATOL,
        err_msg=f"{what}: analytic gradient vs central differences",
    )


def away_from_kinks(rng, shape, scale=2.0):
    z = rng.standard_normal(shape) * scale
    return np.where(np.abs(z) < 1e-3, 0.5, z)


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("name", ALL_BACKENDS)
def test_activation_derivative(name, activation):
    k = backend(name)
    z = away_from_kinks(np.random.default_rng(50), 12)
    fn, deriv = getattr(k, activation), getattr(k, activation + "_derivative")
    # g' is elementwise: the gradient of sum g(z) is g'(z).
    assert_grad(deriv(z), numeric_grad(lambda v: float(np.sum(fn(v))), z), f"{name} {activation}'")


@pytest.mark.parametrize("alpha", [0.01, 0.3, 2.0])
@pytest.mark.parametrize("activation", ["leaky_relu", "elu"])
@pytest.mark.parametrize("name", ALL_BACKENDS)
def test_activation_derivative_alpha(name, activation, alpha):
    k = backend(name)
    z = away_from_kinks(np.random.default_rng(51), 12)
    fn, deriv = getattr(k, activation), getattr(k, activation + "_derivative")
    assert_grad(
        deriv(z, alpha=alpha),
        numeric_grad(lambda v: float(np.sum(fn(v, alpha=alpha))), z),
        f"{name} {activation}' alpha={alpha}",
    )


@pytest.mark.parametrize("activation", ACTIVATIONS + ["softmax"])
@pytest.mark.parametrize("name", ALL_BACKENDS)
def test_activation_backward(name, activation):
    """L(z) = sum da * g(z): dL/dz = activation_backward(da, z, g(z)) (softmax: the
    Jacobian-vector product)."""
    k = backend(name)
    rng = np.random.default_rng(52)
    z = away_from_kinks(rng, (3, 4))
    da = rng.standard_normal((3, 4))

    def loss(v):
        return float(np.sum(da * k.activation_forward(v, activation)))

    a = k.activation_forward(z, activation)
    assert_grad(
        k.activation_backward(da, z, a, activation),
        numeric_grad(loss, z),
        f"{name} activation_backward {activation}",
    )
    if activation == "softmax":
        assert_grad(k.softmax_backward(a, da), numeric_grad(loss, z), f"{name} softmax_backward")


@pytest.mark.parametrize("name", ALL_BACKENDS)
def test_mse_gradient(name):
    k = backend(name)
    rng = np.random.default_rng(53)
    p, y = rng.standard_normal((4, 3)), rng.standard_normal((4, 3))
    assert_grad(k.mse_gradient(p, y), numeric_grad(lambda v: k.mse(v, y), p), f"{name} mse")


@pytest.mark.parametrize("shape", [(6,), (6, 1), (5, 3)], ids=["m", "m-by-1", "m-by-3"])
@pytest.mark.parametrize("name", ALL_BACKENDS)
def test_binary_cross_entropy_gradient(name, shape):
    """The gradient must be the derivative of the loss the same method returns, for
    one output per sample and for k independent outputs per sample."""
    k = backend(name)
    rng = np.random.default_rng(54)
    z = rng.standard_normal(shape) * 3
    y = rng.random(shape)
    assert_grad(
        k.binary_cross_entropy_gradient(z, y),
        numeric_grad(lambda v: k.binary_cross_entropy(v, y), z),
        f"{name} binary_cross_entropy {shape}",
    )


@pytest.mark.parametrize("targets", ["labels", "onehot", "soft"])
@pytest.mark.parametrize("name", ALL_BACKENDS)
def test_cross_entropy_gradient(name, targets):
    k = backend(name)
    rng = np.random.default_rng(55)
    z = rng.standard_normal((5, 4)) * 2
    labels = rng.integers(0, 4, size=5)
    if targets == "labels":
        y = labels
    elif targets == "onehot":
        y = np.eye(4)[labels]
    else:
        w = rng.random((5, 4))
        y = w / w.sum(axis=1, keepdims=True)
    assert_grad(
        k.cross_entropy_gradient(z, y),
        numeric_grad(lambda v: k.cross_entropy(v, y), z),
        f"{name} cross_entropy {targets}",
    )
    if targets == "labels":
        assert_grad(
            k.sparse_cross_entropy_gradient(z, labels),
            numeric_grad(lambda v: k.sparse_cross_entropy(v, labels), z),
            f"{name} sparse_cross_entropy",
        )


@pytest.mark.parametrize("name", ALL_BACKENDS)
def test_batch_norm_backward(name):
    """L = sum dout * batch_norm_train(x, gamma, beta): dx through the batch statistics,
    dgamma, dbeta from batch_norm_backward(dout, x_hat, gamma, inv_std)."""
    k = backend(name)
    rng = np.random.default_rng(56)
    m, n = 6, 3
    x = rng.standard_normal((m, n)) * 2 + 1
    gamma = rng.standard_normal(n) + 1.5
    beta = rng.standard_normal(n)
    dout = rng.standard_normal((m, n))

    def loss(x_, gamma_, beta_):
        out, _, _ = k.batch_norm_train(x_, gamma_, beta_, np.zeros(n), np.ones(n), eps=1e-5)
        return float(np.sum(dout * out))

    _, x_hat, inv_std = k.batch_norm_train(x, gamma, beta, np.zeros(n), np.ones(n), eps=1e-5)
    dx, dgamma, dbeta = k.batch_norm_backward(dout, x_hat, gamma, inv_std)
    assert_grad(dx, numeric_grad(lambda v: loss(v, gamma, beta), x), f"{name} dx")
    assert_grad(dgamma, numeric_grad(lambda v: loss(x, v, beta), gamma), f"{name} dgamma")
    assert_grad(dbeta, numeric_grad(lambda v: loss(x, gamma, v), beta), f"{name} dbeta")


STACKS = {
    # hidden activations, output activation, outputs, loss
    "tanh-relu-ce": (["tanh", "relu"], "identity", 3, "cross_entropy"),
    "sigmoid-elu-softmax-mse": (["sigmoid", "elu"], "softmax", 3, "mse"),
    "leaky-bce": (["leaky_relu"], "identity", 1, "binary_cross_entropy"),
}


@pytest.mark.parametrize("stack", list(STACKS))
@pytest.mark.parametrize("name", ALL_BACKENDS)
def test_dense_stack(name, stack):
    """A small network chained from dense_forward, the loss gradient, dense_backward
    and dense_input_gradient: every dW, db and dx against central differences."""
    k = backend(name)
    hidden, out_act, n_out, loss_name = STACKS[stack]
    rng = np.random.default_rng(57)
    sizes = [4] + [5] * len(hidden) + [n_out]
    acts = hidden + [out_act]
    x = rng.standard_normal((6, sizes[0]))
    ws = [rng.standard_normal((a, b)) / np.sqrt(a) for a, b in zip(sizes, sizes[1:])]
    bs = [rng.standard_normal(b) * 0.1 for b in sizes[1:]]
    if loss_name == "cross_entropy":
        y = rng.integers(0, 3, size=6)
    elif loss_name == "mse":
        y = rng.random((6, n_out))
    else:
        y = (rng.random((6, n_out)) < 0.5).astype(np.float64)
    loss_fn = getattr(k, loss_name)
    grad_fn = getattr(k, loss_name + "_gradient")

    def forward(x_, ws_, bs_):
        cache, a = [], x_
        for w, b, act in zip(ws_, bs_, acts):
            z, a_next = k.dense_forward(a, w, b, activation=act)
            cache.append((a, z, a_next))
            a = a_next
        return a, cache

    out, cache = forward(x, ws, bs)
    da = grad_fn(out, y)
    dws, dbs = [None] * len(ws), [None] * len(ws)
    for i in reversed(range(len(ws))):
        a_in, z, a_out = cache[i]
        dz, dws[i], dbs[i] = k.dense_backward(a_in, z, a_out, da, activation=acts[i])
        da = k.dense_input_gradient(dz, ws[i])
    dx = da

    def total(x_=x, ws_=ws, bs_=bs):
        return loss_fn(forward(x_, ws_, bs_)[0], y)

    assert_grad(dx, numeric_grad(lambda v: total(x_=v), x), f"{name} {stack} dx")
    for i in range(len(ws)):

        def with_w(v, i=i):
            return total(ws_=[v if j == i else w for j, w in enumerate(ws)])

        def with_b(v, i=i):
            return total(bs_=[v if j == i else b for j, b in enumerate(bs)])

        assert_grad(dws[i], numeric_grad(with_w, ws[i]), f"{name} {stack} dW{i + 1}")
        assert_grad(dbs[i], numeric_grad(with_b, bs[i]), f"{name} {stack} db{i + 1}")


@pytest.mark.parametrize(
    "loss", ["mse", "poisson", "binary_cross_entropy", "cross_entropy", "sparse_cross_entropy"]
)
@pytest.mark.parametrize("name", ALL_BACKENDS)
def test_weighted_loss_gradients(name, loss):
    """The weighted gradient w_i dl_i / S is the derivative of the weighted loss
    sum_i w_i l_i / S (docs/spec.md §4, "Sample weights"); zero weights included."""
    k = backend(name)
    rng = np.random.default_rng(60)
    m, c = 6, 3
    z = rng.standard_normal((m, c))
    w = rng.gamma(0.7, 2.0, m)
    w[2] = 0.0
    y = {
        "mse": rng.standard_normal((m, c)),
        "poisson": rng.poisson(2.0, (m, c)).astype(np.float64),
        "binary_cross_entropy": rng.random((m, c)),
        "cross_entropy": np.eye(c)[rng.integers(0, c, m)],
        "sparse_cross_entropy": rng.integers(0, c, m),
    }[loss]
    value, gradient = getattr(k, loss), getattr(k, loss + "_gradient")
    numeric = numeric_grad(lambda x: value(x, y, sample_weight=w), z)
    assert_grad(gradient(z, y, sample_weight=w), numeric, f"{name} weighted {loss}")
    assert not np.any(gradient(z, y, sample_weight=w)[2])
