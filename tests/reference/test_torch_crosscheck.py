"""A twin in another framework: activations, losses and optimizers against PyTorch.

Skipped when torch is absent. PyTorch evaluates in the tensor's dtype (float32 stays
float32), with its own vectorised exp/tanh and its own operation order, so the
tolerances below bound PyTorch's rounding, not fastnn's (which the equivalence suite
pins to the reference):

- relu, leaky_relu and their derivatives: exact (one comparison and one product with
  alpha rounded to the dtype, the same in both).
- sigmoid, tanh, elu, softmax: TORCH_ULP = 4 ULP (PyTorch's float32 sigmoid is
  1 / (1 + exp(-x)) with three roundings after a 1-ULP exp; fastnn rounds a float64
  value once). softmax adds its row sum in the dtype: (k + 4) u relative.
- derivatives from autograd: PyTorch forms s (1 - s), 1 - t^2 from its own rounded s,
  t, so near saturation they agree to an absolute 4 eps of the dtype, not in ULP.
- loss values: every term is >= 0, so a recursive mean of n terms is within n u of
  exact relative to the terms' magnitudes M (max(z,0) + |z y| + log1p(e^-|z|) for
  binary cross-entropy, whose terms cancel); bound (n + 8) u M / n in the dtype.
- loss gradients: p - y cancels near 1: absolute (k + 4) eps / m (k = 1 for mse and
  binary cross-entropy), plus 4 ULP.
- optimizers over T = 50 steps: each step's update is the same formula in another
  operation order (documented per optimizer below); the difference of one step is a
  few roundings of |theta| + |update|, it adds up linearly over the steps (the updates
  do not amplify a perturbation of theta), so |d theta| <= T * 16 u * S, S the largest
  |theta_t| + |theta_t - theta_(t-1)| along fastnn's trajectory.
"""

import numpy as np
import pytest

from fastnn import registry
from kernels._support import ALL_BACKENDS, DTYPES, backend, ulp_distance

torch = pytest.importorskip("torch")
F = torch.nn.functional

TORCH_ULP = 4
STEPS = 50


def t(x):
    return torch.from_numpy(np.ascontiguousarray(x))


def u(dtype):
    return np.finfo(dtype).eps / 2


def assert_ulp_close(actual, expected, maxulp, err, atol=0.0):
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.dtype == expected.dtype, err
    np.testing.assert_array_equal(np.isnan(actual), np.isnan(expected), err_msg=err)
    keep = np.isfinite(expected)
    dist = ulp_distance(actual[keep], expected[keep])
    diff = np.abs(actual[keep].astype(np.float64) - expected[keep])
    atol = np.broadcast_to(np.asarray(atol, np.float64), expected.shape)[keep]
    bad = (dist > maxulp) & (diff > atol)
    assert not np.any(bad), (
        f"{err}: {int(bad.sum())} elements beyond {maxulp} ULP / "
        f"atol {atol.max(initial=0):g}; worst {dist.max():g} ULP, |diff| {diff.max():.3g}"
    )


def sample(dtype, shape, seed, scale=3.0):
    z = (np.random.default_rng(seed).standard_normal(shape) * scale).astype(dtype)
    z.reshape(-1)[:4] = [0.0, -0.0, 20.0, -20.0][: z.size]
    return z


ELEMENTWISE = {
    # name: (torch function, exact?)
    "sigmoid": (torch.sigmoid, False),
    "tanh": (torch.tanh, False),
    "relu": (F.relu, True),
    "leaky_relu": (lambda x: F.leaky_relu(x, negative_slope=0.01), True),
    "elu": (lambda x: F.elu(x, alpha=1.0), False),
    "gelu": (F.gelu, False),  # approximate="none": the erf form
    "silu": (F.silu, False),
    "selu": (torch.selu, False),
    "mish": (F.mish, False),
}
# PyTorch's float32 gelu forms 1 + erf(z / sqrt 2), which cancels for z < 0: its error
# there is about |z| eps / 2 absolute (fastnn's erfc form keeps the tail's relative
# accuracy), so those values are compared within |z| eps.
CANCELLING_IN_TORCH = {"gelu"}
# mish: PyTorch's t = tanh(softplus(z)) goes through log1p and tanh, two more functions
# within 1 ULP, and t's error reaches z t and t + z (1 - t^2) s amplified up to twice
# (docs/spec.md §11, mish): four times the bound of the others.
TORCH_ULP_OF = {"mish": 4 * TORCH_ULP}


@pytest.mark.parametrize("fn", list(ELEMENTWISE))
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ALL_BACKENDS)
def test_activation_and_derivative(name, dtype, fn):
    k = backend(name)
    tfn, exact = ELEMENTWISE[fn]
    z = sample(dtype, (7, 9), 60)
    tz = t(z).clone().requires_grad_(True)
    ty = tfn(tz)
    ty.sum().backward()
    want, want_d = ty.detach().numpy(), tz.grad.numpy()
    got, got_d = getattr(k, fn)(z), getattr(k, fn + "_derivative")(z)
    err = f"{name} {fn} {np.dtype(dtype).name}"
    if exact:
        np.testing.assert_array_equal(got, want, err_msg=err)
        np.testing.assert_array_equal(got_d, want_d, err_msg=err + "'")
    else:
        eps = np.finfo(dtype).eps
        maxulp = TORCH_ULP_OF.get(fn, TORCH_ULP)
        atol = np.abs(z.astype(np.float64)) * eps if fn in CANCELLING_IN_TORCH else 0.0
        assert_ulp_close(got, want, maxulp, err, atol=atol)
        assert_ulp_close(got_d, want_d, maxulp, err + "'", atol=maxulp * eps)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ALL_BACKENDS)
def test_softmax(name, dtype):
    k = backend(name)
    z = sample(dtype, (6, 11), 61)
    want = F.softmax(t(z), dim=1).numpy()
    got = k.softmax(z)
    kk = z.shape[1]
    bound = (kk + 4) * u(dtype) * np.abs(want.astype(np.float64)) + TORCH_ULP * np.spacing(
        np.abs(want)
    ).astype(np.float64)
    np.testing.assert_array_less(np.abs(got.astype(np.float64) - want), bound + 1e-300)
    # Jacobian-vector product against autograd.
    da = sample(dtype, (6, 11), 62, scale=1.0)
    tz = t(z).clone().requires_grad_(True)
    (F.softmax(tz, dim=1) * t(da)).sum().backward()
    dz = k.softmax_backward(got, da)
    np.testing.assert_allclose(
        dz,
        tz.grad.numpy(),
        rtol=(kk + 8) * u(dtype) * 4,
        atol=(kk + 8) * np.finfo(dtype).eps * np.abs(da).max(),
    )


def _loss_bound(n, magnitude, dtype):
    return (n + 8) * u(dtype) * magnitude / n


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ALL_BACKENDS)
def test_mse(name, dtype):
    k = backend(name)
    p, y = sample(dtype, (8, 3), 63), sample(dtype, (8, 3), 64)
    tp = t(p).clone().requires_grad_(True)
    loss = F.mse_loss(tp, t(y), reduction="mean")
    loss.backward()
    got = k.mse(p, y)
    n = p.size
    assert abs(got - loss.item()) <= _loss_bound(
        n, np.sum((p.astype(np.float64) - y) ** 2), dtype
    ), name
    assert_ulp_close(
        k.mse_gradient(p, y),
        tp.grad.numpy(),
        TORCH_ULP,
        f"{name} mse'",
        atol=4 * np.finfo(dtype).eps / n,
    )


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ALL_BACKENDS)
def test_poisson(name, dtype):
    """PyTorch's poisson_nll_loss(log_input=True, full=False) is mean(e^z - y z), its
    gradient (e^z - y) / size: the same formulas, in the dtype there."""
    k = backend(name)
    z = sample(dtype, (8, 3), 65, scale=1.5)
    y = np.random.default_rng(66).poisson(2.0, size=(8, 3)).astype(dtype)
    tz = t(z).clone().requires_grad_(True)
    loss = F.poisson_nll_loss(tz, t(y), log_input=True, full=False, reduction="mean")
    loss.backward()
    zf = z.astype(np.float64)
    magnitude = np.sum(np.exp(zf) + np.abs(y * zf))
    assert abs(k.poisson(z, y) - loss.item()) <= _loss_bound(z.size, magnitude, dtype), name
    assert_ulp_close(
        k.poisson_gradient(z, y),
        tz.grad.numpy(),
        TORCH_ULP,
        f"{name} poisson'",
        atol=4 * np.finfo(dtype).eps * np.exp(zf).max() / z.size,
    )


def _bce_magnitude(z, y):
    z, y = z.astype(np.float64), y.astype(np.float64)
    return np.sum(np.maximum(z, 0) + np.abs(z * y) + np.log1p(np.exp(-np.abs(z))))


@pytest.mark.parametrize("shape", [(9,), (5, 3)])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ALL_BACKENDS)
def test_binary_cross_entropy_with_logits(name, dtype, shape):
    """One and k outputs per sample. fastnn sums a sample's k outputs and averages the
    m samples (the loss whose derivative is (sigmoid - y) / m); torch's mean reduction
    divides by m k, so the twin is torch's sum reduction divided by m."""
    k = backend(name)
    z = sample(dtype, shape, 65)
    y = np.random.default_rng(66).random(shape).astype(dtype)
    m = shape[0]
    tz = t(z).clone().requires_grad_(True)
    loss = F.binary_cross_entropy_with_logits(tz, t(y), reduction="sum") / m
    loss.backward()
    got = k.binary_cross_entropy(z, y)
    assert (
        abs(got - loss.item()) <= _loss_bound(z.size, _bce_magnitude(z, y), dtype) * z.size / m
    ), (name, got, loss.item())
    assert_ulp_close(
        k.binary_cross_entropy_gradient(z, y),
        tz.grad.numpy(),
        TORCH_ULP,
        f"{name} bce'",
        atol=5 * np.finfo(dtype).eps / m,
    )


@pytest.mark.parametrize("targets", ["indices", "probabilities"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ALL_BACKENDS)
def test_cross_entropy(name, dtype, targets):
    k = backend(name)
    m, kk = 7, 5
    z = sample(dtype, (m, kk), 67)
    rng = np.random.default_rng(68)
    if targets == "indices":
        y = rng.integers(0, kk, size=m)
        ty = torch.from_numpy(y)
    else:
        w = rng.random((m, kk))
        y = (w / w.sum(axis=1, keepdims=True)).astype(dtype)
        ty = t(y)
    tz = t(z).clone().requires_grad_(True)
    loss = F.cross_entropy(tz, ty, reduction="mean")
    loss.backward()
    got = k.cross_entropy(z, y)
    z64 = z.astype(np.float64)
    mag = np.sum(np.abs(z64 - z64.max(axis=1, keepdims=True))) + m * np.log(kk) + m
    assert abs(got - loss.item()) <= _loss_bound(m * kk, mag, dtype), (name, got, loss.item())
    assert_ulp_close(
        k.cross_entropy_gradient(z, y),
        tz.grad.numpy(),
        TORCH_ULP,
        f"{name} ce' {targets}",
        atol=(kk + 4) * np.finfo(dtype).eps / m,
    )


# --- optimizers over many steps ---------------------------------------------------------


def _torch_trajectory(make_opt, p0, grads):
    p = t(p0).clone().requires_grad_(True)
    opt = make_opt([p])
    for g in grads:
        p.grad = t(g).clone()
        opt.step()
    return p.detach().numpy()


OPTIMIZERS = {
    # name: (torch optimizer factory, fastnn method, fastnn kwargs, state buffers)
    # torch's SGD momentum buffer starts as g at step 1, without (1 - dampening);
    # fastnn's (docs/spec.md §5) v = beta 0 + (1 - d) g equals it only for d = 0, the default here.
    "sgd": (lambda ps: torch.optim.SGD(ps, lr=0.1), "sgd_step", {"lr": 0.1}, ()),
    "sgd_l2": (
        lambda ps: torch.optim.SGD(ps, lr=0.1, weight_decay=0.01),
        "sgd_step",
        {"lr": 0.1, "weight_decay": 0.01},
        (),
    ),
    "momentum": (
        lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9, dampening=0),
        "momentum_step",
        {"lr": 0.05, "momentum": 0.9, "dampening": 0.0},
        ("velocity",),
    ),
    # torch's Nesterov: g + beta buf, the same rewritten form as docs/spec.md §5.
    "nesterov": (
        lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3),
        "nesterov_step",
        {"lr": 0.05, "momentum": 0.9, "weight_decay": 1e-3},
        ("velocity",),
    ),
    # torch Adagrad: sum += g g; p -= clr g / (sqrt(sum) + eps), clr = lr with no decay:
    # eps outside the square root, fastnn's default (docs/spec.md §5).
    "adagrad": (
        lambda ps: torch.optim.Adagrad(ps, lr=0.1, eps=1e-10),
        "adagrad_step",
        {"lr": 0.1, "eps": 1e-10},
        ("sum_sq",),
    ),
    # torch RMSprop (alpha = rho): s = alpha s + (1 - alpha) g g via mul_/addcmul_;
    # p -= lr g / (sqrt(s) + eps): eps outside, fastnn's default (docs/spec.md §5).
    "rmsprop": (
        lambda ps: torch.optim.RMSprop(ps, lr=0.01, alpha=0.9, eps=1e-8),
        "rmsprop_step",
        {"lr": 0.01, "rho": 0.9, "eps": 1e-8},
        ("sq_avg",),
    ),
    # torch Adam: m.lerp_(g, 1 - b1) (m + (1 - b1)(g - m) instead of b1 m + (1 - b1) g);
    # step lr / bc1 * m / (sqrt(v) / sqrt(bc2) + eps) instead of
    # lr * (m / bc1) / (sqrt(v / bc2) + eps): the same value in another order.
    "adam": (
        lambda ps: torch.optim.Adam(ps, lr=0.01, betas=(0.9, 0.999), eps=1e-8, foreach=False),
        "adam_step",
        {"lr": 0.01, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8},
        ("m", "v"),
    ),
    "adam_l2": (
        lambda ps: torch.optim.Adam(ps, lr=0.01, weight_decay=0.01, foreach=False),
        "adam_step",
        {"lr": 0.01, "weight_decay": 0.01},
        ("m", "v"),
    ),
    # torch AdamW: p.mul_(1 - lr wd) instead of p -= lr wd p, then Adam as above.
    "adamw": (
        lambda ps: torch.optim.AdamW(ps, lr=0.01, weight_decay=0.05, foreach=False),
        "adamw_step",
        {"lr": 0.01, "weight_decay": 0.05},
        ("m", "v"),
    ),
    # torch Adamax: m.lerp_(g, 1 - b1) as Adam's; u = maximum(u * b2, |g| + eps), the same;
    # p.addcdiv_(m, u, value=-clr), clr = lr / (1 - b1^t): the same order. L2 as SGD's.
    "adamax": (
        lambda ps: torch.optim.Adamax(ps, lr=0.01, weight_decay=1e-3, foreach=False),
        "adamax_step",
        {"lr": 0.01, "weight_decay": 1e-3},
        ("m", "u"),
    ),
}


TAKE_STEP = {o.kernel for o in registry.OPTIMIZERS if o.step}  # bias corrections


def test_every_optimizer_has_its_twin():
    """A row added to the registry comes with its PyTorch twin above."""
    assert {o.kernel for o in registry.OPTIMIZERS} <= {m for _, m, _, _ in OPTIMIZERS.values()}


@pytest.mark.parametrize("opt", list(OPTIMIZERS))
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ALL_BACKENDS)
def test_optimizer_trajectory(name, dtype, opt):
    make_torch, method, kwargs, states = OPTIMIZERS[opt]
    k = backend(name)
    rng = np.random.default_rng(69)
    n = 37
    p0 = rng.standard_normal(n).astype(dtype)
    grads = [rng.standard_normal(n).astype(dtype) for _ in range(STEPS)]
    want = _torch_trajectory(make_torch, p0, grads)

    p = p0.copy()
    state = {s: np.zeros(n, dtype) for s in states}
    scale = 0.0
    for step, g in enumerate(grads, start=1):
        before = p.copy()
        extra = {"step": step} if method in TAKE_STEP else {}
        getattr(k, method)(p, g, **state, **kwargs, **extra)
        scale = max(scale, float(np.max(np.abs(p)) + np.max(np.abs(p - before))))
    bound = STEPS * 16 * u(dtype) * scale
    diff = float(np.max(np.abs(p.astype(np.float64) - want)))
    assert diff <= bound, f"{name} {opt} {np.dtype(dtype).name}: |diff| {diff:.3g} > {bound:.3g}"
