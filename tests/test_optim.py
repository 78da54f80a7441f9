"""Optimizers: the formulas of docs/spec.md §5 over the flat buffers, weight decay slicing,
clipping, frozen layers, one kernel call per step, divergence guard, state
save/restore."""

import inspect
import math
from collections import Counter

import numpy as np
import pytest

import fastnn
from fastnn import registry
from fastnn.model import MLP
from fastnn.optim import (
    OPTIMIZERS,
    SGD,
    Adagrad,
    Adam,
    AdamW,
    DivergenceError,
    Momentum,
    Nesterov,
    RMSProp,
    get_optimizer,
    optimizer_from_state,
)
from fastnn.schedules import Cosine, StepDecay

BACKENDS = ("numpy", "numba", "cython")


def test_defaults_and_readable_repr():
    assert repr(SGD()) == "SGD(lr=0.01, weight_decay=0.0)"
    assert repr(Momentum()) == "Momentum(lr=0.01, momentum=0.9, dampening=0.0, weight_decay=0.0)"
    assert (
        repr(Nesterov(0.1, momentum=0.5))
        == "Nesterov(lr=0.1, momentum=0.5, dampening=0.0, weight_decay=0.0)"
    )
    assert repr(Adagrad()) == "Adagrad(lr=0.01, eps=1e-10, eps_inside_sqrt=False, weight_decay=0.0)"
    assert (
        repr(RMSProp())
        == "RMSProp(lr=0.01, rho=0.9, eps=1e-08, eps_inside_sqrt=False, weight_decay=0.0)"
    )
    assert repr(Adam()) == "Adam(lr=0.001, beta1=0.9, beta2=0.999, eps=1e-08, weight_decay=0.0)"
    assert repr(AdamW()) == "AdamW(lr=0.001, beta1=0.9, beta2=0.999, eps=1e-08, weight_decay=0.01)"
    assert (
        repr(SGD(0.1, clip_norm=1.0, decay_biases=True, weight_decay=1e-4))
        == "SGD(lr=0.1, weight_decay=0.0001, decay_biases=True, clip_norm=1.0)"
    )
    assert repr(Adam(Cosine(0.1, T=10))).startswith("Adam(lr=Cosine(lr=0.1, T=10")


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: SGD(lr=-1), "lr must be >= 0"),
        (lambda: SGD(lr="fast"), "lr must be a real number"),
        (lambda: Adam(beta1=1.0), r"beta1 must be in \[0, 1\)"),
        (lambda: Adam(beta2=-0.1), "beta2"),
        (lambda: Adam(eps=0), "eps must be > 0"),
        (lambda: Momentum(momentum=1.5), "momentum"),
        (lambda: Momentum(dampening=2), "dampening"),
        (lambda: RMSProp(rho=1), "rho"),
        (lambda: Adagrad(eps_inside_sqrt=1), "eps_inside_sqrt must be True or False"),
        (lambda: SGD(weight_decay=-1e-4), "weight_decay must be >= 0"),
        (lambda: SGD(clip_norm=0), "clip_norm must be > 0"),
        (lambda: SGD(lr=math.nan), "lr must be finite"),
        (lambda: get_optimizer("no_such_optimizer"), "optimizer must be one of"),
    ],
)
def test_invalid_hyperparameters_name_themselves(make, match):
    with pytest.raises((ValueError, TypeError), match=match):
        make()


def test_get_optimizer_by_name():
    assert isinstance(get_optimizer("nesterov", lr=0.1), Nesterov)
    opt = Adam()
    assert get_optimizer(opt) is opt
    assert list(OPTIMIZERS) == [row.name for row in registry.OPTIMIZERS]


# --- the update formulas, written again in NumPy in the reference's operation order --------


def _expected(name, hyper, p, g, st, t, lr, wd_vec, decoupled):
    """The docs/spec.md §5 update on a flat float buffer; wd_vec holds each element's L2
    coefficient."""
    if decoupled:
        g = g.copy()
    else:
        g = g + wd_vec * p
    if name == "sgd":
        p = p - lr * g
    elif name in ("momentum", "nesterov"):
        st["velocity"] = hyper["momentum"] * st["velocity"] + (1 - hyper["dampening"]) * g
        if name == "momentum":
            p = p - lr * st["velocity"]
        else:
            p = p - lr * (g + hyper["momentum"] * st["velocity"])
    elif name == "adagrad":
        st["sum_sq"] = st["sum_sq"] + g * g
        p = p - lr * g / (np.sqrt(st["sum_sq"]) + hyper["eps"])
    elif name == "rmsprop":
        rho = hyper["rho"]
        st["sq_avg"] = rho * st["sq_avg"] + (1 - rho) * (g * g)
        p = p - lr * g / (np.sqrt(st["sq_avg"]) + hyper["eps"])
    else:
        b1, b2 = hyper["beta1"], hyper["beta2"]
        if decoupled:
            p = p - (lr * wd_vec) * p
        st["m"] = b1 * st["m"] + (1 - b1) * g
        st["v"] = b2 * st["v"] + (1 - b2) * (g * g)
        m_hat = st["m"] / (1 - b1**t)
        v_hat = st["v"] / (1 - b2**t)
        p = p - lr * m_hat / (np.sqrt(v_hat) + hyper["eps"])
    return p


# The optimizers whose formula _expected writes out (a newer one is checked against
# PyTorch's formula in tests/reference/test_torch_crosscheck.py).
WRITTEN_OUT = ("sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam", "adamw")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", WRITTEN_OUT)
def test_updates_follow_spec_exactly_and_skip_biases_when_decaying(name, dtype, backend):
    net = MLP([3, 4, 2], loss="mse", dtype=dtype, backend=backend, random_state=0)
    rng = np.random.default_rng(1)
    net.params[net.n_weights :] = rng.standard_normal(net.n_params - net.n_weights)
    opt = OPTIMIZERS[name](lr=0.05, weight_decay=0.1)
    hyper = opt.hyperparameters()
    dt = np.dtype(dtype)
    p = net.params.copy()
    state = {s: np.zeros_like(p) for s in opt.state_names}
    # L2 only on the weights: the coefficient is 0 on biases (cast like the kernels: once)
    wd_vec = np.zeros_like(p)
    wd_vec[: net.n_weights] = 0.1
    for t in (1, 2, 3):
        g = rng.standard_normal(net.n_params).astype(dt)
        net.grads[...] = g
        opt.step(net)
        if name == "adamw":
            # decoupled decay: theta -= (lr * wd) theta on weights, computed as one
            # float64 scalar cast once; biases get plain Adam.
            w = net.n_weights
            pw = p[:w] - dt.type(0.05 * 0.1) * p[:w]
            p = np.concatenate([pw, p[w:]])
            p = _expected("adam", hyper, p, g, state, t, 0.05, np.zeros_like(p), True)
        else:
            p = _expected(name, hyper, p, g, state, t, 0.05, wd_vec, False)
        # docs/spec.md §11: every optimizer update equals the reference bit for bit
        np.testing.assert_array_equal(net.params, p, err_msg=f"{name} step {t}")
        for s in opt.state_names:
            np.testing.assert_array_equal(opt.state[s], state[s], err_msg=s)
    assert opt.t == 3


def test_decay_biases_decays_everything():
    net = MLP([2, 3, 1], dtype="float64", backend="numpy", random_state=0)
    net.params[net.n_weights :] = 1.0
    before = net.params.copy()
    net.grads[...] = 0
    SGD(0.1, weight_decay=0.5, decay_biases=True).step(net)
    np.testing.assert_array_equal(net.params, before - 0.1 * (0.5 * before))
    net.params[...] = before
    SGD(0.1, weight_decay=0.5).step(net)
    np.testing.assert_array_equal(net.params[net.n_weights :], before[net.n_weights :])


class _Spy:
    """Counts calls to a Backend's methods and to its raw kernels (``internal``)."""

    def __init__(self, k, calls=None):
        self._k = k
        self.calls = Counter() if calls is None else calls

    def __getattr__(self, name):
        fn = getattr(self._k, name)
        if name == "_internal":
            return _Spy(fn, self.calls)
        if not callable(fn):
            return fn

        def wrapped(*args, **kwargs):
            self.calls[name] += 1
            return fn(*args, **kwargs)

        return wrapped


@pytest.mark.parametrize(
    "wd, decay_biases, frozen, calls",
    [
        (0.0, False, [], 1),  # one call over the whole flat buffer
        (1e-4, True, [], 1),  # decaying everything: still one call
        (1e-4, False, [], 2),  # weights decayed, biases not: two slices
        (0.0, False, [0], 2),  # frozen first layer: its bias splits W1 W2 | b1 b2
        (1e-4, False, [0], 2),
        (0.0, False, [1], 3),  # frozen middle layer: W0 | W2 b0 | b2
    ],
)
def test_one_kernel_call_per_step(wd, decay_biases, frozen, calls):
    X, y = np.ones((8, 3)), np.zeros((8, 2))
    net = MLP([3, 4, 4, 2], backend="numpy", random_state=0)
    net.freeze(frozen)
    spy = _Spy(net.kernels)
    net.kernels = spy
    opt = Adam(weight_decay=wd, decay_biases=decay_biases)
    net.train_step(*net.check_data(X, y), opt)
    assert spy.calls["optimizer_step"] == calls  # the update by code (the adam kernel)
    assert spy.calls["squared_norm"] == calls  # the divergence check: one reduction per run


def test_frozen_layers_keep_their_parameters_and_state():
    net = MLP([3, 4, 4, 2], dtype="float64", backend="numpy", random_state=0)
    net.freeze(1)
    before = net.params.copy()
    net.grads[...] = 1.0
    opt = Momentum(0.1)
    opt.step(net)
    lay = net.layers[1]
    start = net.layers[0].W.size
    sl = slice(start, start + lay.W.size)
    np.testing.assert_array_equal(net.params[sl], before[sl])
    assert not opt.state["velocity"][sl].any()
    assert (net.params[:start] != before[:start]).all()


def test_clip_norm_rescales_the_global_gradient():
    net = MLP([2, 3, 1], dtype="float64", backend="numpy", random_state=0)
    g = np.random.default_rng(0).standard_normal(net.n_params)
    norm = np.linalg.norm(g)
    for clip, scale in ((norm / 4, 0.25), (norm * 2, 1.0)):
        before = net.params.copy()
        net.grads[...] = g
        opt = SGD(1.0, clip_norm=clip)
        assert opt.step(net) == pytest.approx(norm, rel=1e-14)
        np.testing.assert_allclose(before - net.params, g * scale, rtol=1e-12)


def test_clip_norm_counts_only_trainable_parameters():
    net = MLP([2, 3, 1], dtype="float64", backend="numpy", random_state=0)
    net.freeze(0)
    net.grads[...] = 1.0
    n_trainable = sum(e - s for s, e, _ in net.param_segments())
    assert SGD(1.0).step(net) == pytest.approx(math.sqrt(n_trainable))


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_non_finite_gradient_never_reaches_the_parameters(bad):
    net = MLP([2, 3, 1], backend="numpy", random_state=0)
    before = net.params.copy()
    net.grads[...] = 0.5
    net.grads[3] = bad
    opt = Adam()
    with pytest.raises(DivergenceError, match="gradient norm is") as info:
        opt.step(net)
    assert info.value.what == "gradient"
    np.testing.assert_array_equal(net.params, before)
    assert opt.t == 0 and not opt.state["m"].any()


def test_state_dict_round_trip_continues_identically():
    rng = np.random.default_rng(0)
    a = MLP([3, 5, 2], dtype="float64", backend="numpy", random_state=0)
    b = a.copy()
    opt_a = RMSProp(StepDecay(0.01, step_size=1, gamma=0.5, per="step"), weight_decay=0.01)
    grads = [rng.standard_normal(a.n_params) for _ in range(6)]
    for g in grads[:3]:
        a.grads[...] = g
        opt_a.step(a)
    st = opt_a.state_dict()
    b.params[...] = a.params
    opt_b = optimizer_from_state(st)
    assert repr(opt_b) == repr(opt_a) and opt_b.t == 3
    for g in grads[3:]:
        a.grads[...] = g
        b.grads[...] = g
        opt_a.step(a)
        opt_b.step(b)
    np.testing.assert_array_equal(a.params, b.params)


def test_an_optimizer_refuses_state_of_another_model():
    a = MLP([3, 5, 2], backend="numpy", random_state=0)
    b = MLP([3, 5, 2], backend="numpy", random_state=1)
    opt = Adam()
    a.grads[...] = 1
    opt.step(a)
    with pytest.raises(ValueError, match="holds state for another model"):
        opt.step(b)
    opt.reset()
    opt.step(b)
    assert opt.t == 1


def test_learning_rate_follows_the_schedule_clock():
    net = MLP([2, 3, 1], backend="numpy", random_state=0)
    per_step = SGD(StepDecay(1.0, step_size=2, gamma=0.5, per="step"))
    per_epoch = SGD(StepDecay(1.0, step_size=2, gamma=0.5))
    seen_step, seen_epoch = [], []
    for _epoch in range(3):
        for _ in range(2):
            seen_step.append(per_step.lr)
            seen_epoch.append(per_epoch.lr)
            net.grads[...] = 0
            per_step.step(net)
            per_epoch._token = None
            per_epoch.step(net)
            per_step._token = None
        per_step.end_epoch()
        per_epoch.end_epoch()
    assert seen_step == [1.0, 1.0, 0.5, 0.5, 0.25, 0.25]
    assert seen_epoch == [1.0, 1.0, 1.0, 1.0, 0.5, 0.5]


def test_gradient_descent_seed_example():
    # docs/spec.md §12: C(w) = (w - 3)^2 from w0 = 0 with lr 0.1 gives w1 = 0.6.
    # As a one-weight linear model: x = 1, y = 3, mse loss (w x + b - y)^2.
    net = MLP([1, 1], "identity", loss="mse", dtype="float64", backend="numpy")
    net.params[...] = 0
    net.freeze()
    net.unfreeze()
    X, y = np.array([[1.0]]), np.array([3.0])
    net.train_step(*net.check_data(X, y), SGD(0.1))
    assert net.layers[0].W[0, 0] == pytest.approx(0.6)


@pytest.mark.parametrize("row", registry.OPTIMIZERS, ids=lambda r: r.name)
def test_every_registry_optimizer_has_its_class(row):
    """Each row's class (written out or built from the row): its name, its exported
    name, the constructor the row describes, range checks, saving and loading."""
    cls = OPTIMIZERS[row.name]
    assert cls.__name__ == row.cls and getattr(fastnn, row.cls) is cls
    assert row.cls in fastnn.__all__
    params = inspect.signature(cls).parameters
    assert list(params) == [
        "lr",
        *(h.name for h in row.hypers),
        "weight_decay",
        "decay_biases",
        "clip_norm",
    ]
    assert params["lr"].default == row.lr
    assert params["weight_decay"].default == row.weight_decay
    assert params["weight_decay"].kind is inspect.Parameter.KEYWORD_ONLY
    for h in row.hypers:
        assert params[h.name].default == h.default
    opt = cls()
    assert opt.name == row.name and opt.state_names == row.states
    assert opt.hyperparameters() == {h.name: h.default for h in row.hypers}
    assert cls.__doc__
    for h in row.hypers:
        bad = 2 if isinstance(h.default, bool) else (h.high if h.high is not None else -1.0)
        if h.high is not None and not h.high_open:
            bad = h.high + 1
        with pytest.raises((ValueError, TypeError), match=h.name):
            cls(**{h.name: bad})
    net = MLP([3, 4, 2], loss="mse", backend="numpy", random_state=0)
    net.grads[...] = 0.5
    opt.step(net)
    again = optimizer_from_state(opt.state_dict())
    assert type(again) is cls and again.t == 1 and repr(again) == repr(opt)
    for s in row.states:
        np.testing.assert_array_equal(again.state[s], opt.state[s])
