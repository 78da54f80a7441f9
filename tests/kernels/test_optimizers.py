"""Optimizer updates: each compiled backend equals the NumPy reference bit for bit.

docs/spec.md §5 and rule 1 of §11: every update is computed in the array dtype in the
reference's operation order, with each hyperparameter expression (1 - beta1, lr * wd,
1 - beta1 ** step) computed in float64 and cast once, and no FMA. So param and every
state buffer must be identical after each step (``assert_exact``), over several
consecutive steps, for float32 and float64, for any values including NaN, inf, signed
zeros and subnormals.
squared_norm is a float64 reduction (summation-order bound); scale_inplace is exact.
"""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fastnn import registry
from kernels._support import (
    ALL_BACKENDS,
    COMPILED,
    DTYPES,
    IN_LAYOUTS,
    SMALL,
    any_floats,
    arrays,
    assert_exact,
    assert_within,
    backend,
    case_id,
    finite_floats,
    laid_out,
    quiet_reference,
    reduction_floats,
    rng_array,
    run_pair,
    shapes_any,
    sum_bound,
    ulp,
)

# Every optimizer of the registry: kernel name -> its state buffers (a new row is
# tested here without an edit). States holding squares or maxima of |g| (non-negative):
SQUARES = {"sum_sq", "sq_avg", "v"}
ROWS = {o.kernel: o for o in registry.OPTIMIZERS}
OPTIMIZERS = {kernel: row.states for kernel, row in ROWS.items()}
STEPS = {kernel for kernel, row in ROWS.items() if row.step}  # take the step count t

unit_open = st.floats(0.0, 1.0, exclude_max=True)


def _hyper_values(h):
    """A hyperparameter's valid values (from its registry range), its default among them."""
    if isinstance(h.default, bool):
        return st.booleans()
    if h.high is None:  # eps-like: small positive numbers
        values = st.one_of(st.sampled_from([1e-10, 1e-8]), st.floats(1e-12, 0.1))
    else:
        values = st.floats(h.low, h.high, exclude_min=h.low_open, exclude_max=h.high_open)
    return st.one_of(st.just(h.default), values)


def hyper_strategy(opt):
    """Hyperparameters in their valid ranges, the defaults of docs/spec.md §5 among them."""
    row = ROWS[opt]
    lr = st.one_of(st.sampled_from([0.0, 1e-3, 0.01, 0.1, 1.0]), st.floats(0.0, 10.0))
    wd = st.one_of(st.just(0.0), st.sampled_from([1e-4, 0.01, 0.1]), st.floats(0.0, 1.0))
    fields = {"lr": lr, "weight_decay": wd, **{h.name: _hyper_values(h) for h in row.hypers}}
    if row.step:
        fields["step"] = st.one_of(st.integers(1, 20), st.integers(1, 10**7))
    return st.fixed_dictionaries(fields)


# The hyperparameters of the fixed-value tests: each row's defaults with some decay,
# and for the first seven the values chosen when they were written.
DEFAULTS = {
    kernel: {"lr": row.lr, **{h.name: h.default for h in row.hypers}, "weight_decay": 0.01}
    for kernel, row in ROWS.items()
}
DEFAULTS.update(
    {
        "sgd_step": {"lr": 0.1, "weight_decay": 0.01},
        "momentum_step": {"lr": 0.1, "momentum": 0.9, "dampening": 0.1, "weight_decay": 0.01},
        "nesterov_step": {"lr": 0.1, "momentum": 0.9, "dampening": 0.0, "weight_decay": 0.01},
        "adagrad_step": {
            "lr": 0.1,
            "eps": 1e-10,
            "eps_inside_sqrt": False,
            "weight_decay": 0.01,
        },
        "rmsprop_step": {
            "lr": 0.01,
            "rho": 0.9,
            "eps": 1e-8,
            "eps_inside_sqrt": True,
            "weight_decay": 0.01,
        },
        "adam_step": {
            "lr": 1e-3,
            "beta1": 0.9,
            "beta2": 0.999,
            "eps": 1e-8,
            "weight_decay": 1e-4,
        },
        "adamw_step": {
            "lr": 1e-3,
            "beta1": 0.9,
            "beta2": 0.999,
            "eps": 1e-8,
            "weight_decay": 0.01,
        },
    }
)


def run_steps(name, opt, param, grads, state, hyper, layout, err, first_step=1):
    """Consecutive updates with grads[i]; bit-identical param and state after each."""
    cur = {"param": param, **state}
    inplace = ("param",) + OPTIMIZERS[opt]
    for i, g in enumerate(grads):
        h = dict(hyper)
        if opt in STEPS:
            h["step"] = hyper.get("step", first_step) + i
        args = {**cur, "grad": g, **h}
        actual, expected = run_pair(name, opt, args, inplace=inplace, in_layout=layout)
        for buf in inplace:
            assert_exact(actual[buf], expected[buf], f"{buf} after step {i + 1}: {err}")
        cur = {buf: np.ascontiguousarray(expected[buf]) for buf in inplace}
        assert actual.get("result") is None


def initial_state(opt, rng, shape, dtype):
    return {
        s: (np.abs(rng_array(rng, shape, dtype)) if s in SQUARES else rng_array(rng, shape, dtype))
        for s in OPTIMIZERS[opt]
    }


@pytest.mark.parametrize("layout", IN_LAYOUTS)
@pytest.mark.parametrize("opt", list(OPTIMIZERS))
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", COMPILED)
def test_optimizer_layouts(name, dtype, opt, layout):
    """param and state in ``layout`` (written back when not contiguous), grad too."""
    rng = np.random.default_rng(30)
    shape = (5, 7)
    param = rng_array(rng, shape, dtype)
    grads = [rng_array(rng, shape, dtype) for _ in range(3)]
    run_steps(
        name,
        opt,
        param,
        grads,
        initial_state(opt, rng, shape, dtype),
        DEFAULTS[opt],
        layout,
        case_id(name, dtype, opt, layout),
    )


def _subnormal_case(opt, rng, dtype, n=1024):
    """State decayed into the subnormal range by gradients that stay 0 (Adam's and
    Adamax's m, Adam's v, a velocity, RMSProp's average), among every neighbour a lane
    can have (docs/spec.md §5, "Subnormal moments")."""
    fi = np.finfo(dtype)
    sub, tiny = float(fi.smallest_subnormal), float(fi.tiny)
    ks = [1, 2, 3, 4, 5, 7, 9, 499, 500, 501, 1000, 2**20 + 3]
    ms = [0.0, -0.0, tiny - sub, -(tiny - sub), tiny, 1e-3, -2e-4]
    ms += [k * sub for k in ks] + [-k * sub for k in ks]
    vs = [0.0, -0.0, -sub, tiny - sub, tiny, 1e-8, 1e-20, 1.0, np.inf, np.nan]
    vs += [k * sub for k in ks]
    ps = [0.5, -1.5, 3.0, 1e-20, -1e-20, 1e-30, 1e-36, tiny, sub, 0.0, -0.0]
    ps += [np.inf, -np.inf, np.nan]
    gs = [0.0] * 12 + [-0.0] * 4 + [sub, -sub, 1e-3, -1e-3]

    def draw(values, size=n):
        out = rng.choice(np.array(values, np.float64), size).astype(dtype)
        out[:256] = 0.25  # a block (of 256, both kernels') with nothing subnormal
        return out

    m, v = draw(ms), draw(vs)
    stuck = rng.random(n) < 0.5  # the smallest subnormals, which 0.9 m keeps for good
    stuck[:256] = False
    m[stuck] = (rng.integers(1, 9, stuck.sum()) * sub).astype(dtype)
    param, grads = draw(ps), [draw(gs) for _ in range(4)]
    # the last block: every small m with gradients +-0 (the zeros' sign rule), beside
    # parameters that a step can and cannot move
    m[-64:] = np.resize(np.array([-0.0, 0.0, -sub, sub, -3 * sub, 3 * sub, 5 * sub, -5 * sub]), 64)
    param[-64:] = np.repeat(np.array([0.5, -1.5, 1e-30, -1e-20], dtype), 16)
    for g in grads:
        g[-64:] = np.resize(np.repeat(np.array([-0.0, 0.0], dtype), 8), 64)
    return param, grads, dict(zip(OPTIMIZERS[opt], (m, v)))


# (weight decay 0 in all but the first, where test_subnormal_state makes L2 gradients
# g = grad + wd p exactly 0 in a third of the lanes)
_ADAM_HYPER = [{}, {}, {"lr": 0.5, "eps": 1e-30}, {"lr": 0.0}, {"eps": 1e-38}]
_ADAM_HYPER += [{"beta1": 0.0}, {"beta1": -0.0}, {"beta2": 0.0}, {"beta2": -0.0}]
_MOMENTUM_HYPER = [{}, {}, {"lr": 1e30}, {"lr": 0.0}, {"momentum": 0.5}, {"momentum": -0.0}]
_RMSPROP_HYPER = [{}, {}, {"eps_inside_sqrt": False}, {"lr": 0.5, "eps": 1e-30}, {"lr": 0.0}]
_RMSPROP_HYPER += [{"eps": 1e-38}, {"eps": 1e-38, "eps_inside_sqrt": False}, {"rho": 0.0}]
_RMSPROP_HYPER += [{"rho": -0.0}, {"eps": 1e-46}]  # 1e-46: 0 in float32 (no still lane)
_ADAMAX_HYPER = [{}, {}, {"lr": 0.5, "eps": 1e-30}, {"lr": 0.0}, {"eps": 1e-38}]
_ADAMAX_HYPER += [{"beta1": 0.0}, {"beta1": -0.0}, {"beta2": 0.0}, {"beta2": -0.0}]
_ADAMAX_HYPER += [{"eps": 1e-46, "beta2": -0.0}]  # float32 u = max(-0, +0): +0
_ADAM_HYPER[1:] = [{"weight_decay": 0.0, **h} for h in _ADAM_HYPER[1:]]
_MOMENTUM_HYPER[1:] = [{"weight_decay": 0.0, **h} for h in _MOMENTUM_HYPER[1:]]
_RMSPROP_HYPER[1:] = [{"weight_decay": 0.0, **h} for h in _RMSPROP_HYPER[1:]]
_ADAMAX_HYPER[1:] = [{"weight_decay": 0.0, **h} for h in _ADAMAX_HYPER[1:]]
STILL_CASES = [
    (opt, hyper)
    for opt, hypers in [
        ("adam_step", _ADAM_HYPER),
        ("adamw_step", _ADAM_HYPER),
        ("momentum_step", _MOMENTUM_HYPER),
        ("nesterov_step", _MOMENTUM_HYPER),
        ("rmsprop_step", _RMSPROP_HYPER),
        ("adamax_step", _ADAMAX_HYPER),
    ]
    for hyper in hypers
]


@pytest.mark.parametrize("opt, hyper", STILL_CASES, ids=[f"{o}-{h}" for o, h in STILL_CASES])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", COMPILED)
def test_subnormal_state(name, dtype, opt, hyper):
    """The compiled kernels keep subnormal states out of their arithmetic (a microcode
    assist per instruction on Intel cores) and still give the reference's bits."""
    rng = np.random.default_rng(7)
    dt = np.dtype(dtype).type
    param, grads, state = _subnormal_case(opt, rng, dt)
    hyper = {**DEFAULTS[opt], **hyper}
    if hyper["weight_decay"] != 0 and opt != "adamw_step":
        # grad = -fl(wd p): the L2 gradient grad + fl(wd p) is +0, a still lane's
        with np.errstate(invalid="ignore", over="ignore"):
            for g in grads:
                g[256::3] = -(dt(hyper["weight_decay"]) * param[256::3])
    with quiet_reference():  # NaN and infinite parameters among the lanes
        run_steps(
            name,
            opt,
            param,
            grads,
            state,
            hyper,
            "C",
            case_id(name, dtype, opt, str(hyper)),
        )


# Positions of lone subnormal states: a run's first and last value, both sides of the
# 32-value steps in which a block of 256 is looked over, neighbouring steps, the tail.
_LONE = [0, 31, 32, 95, 200, 255, 256, 257, 511, 700, 701, 733, 998, 999]


@pytest.mark.parametrize("opt", sorted({opt for opt, _ in STILL_CASES}))
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", COMPILED)
def test_subnormal_runs(name, dtype, opt):
    """Lone subnormal states among normal ones (n = 1000, not a multiple of the runs):
    the compiled loops cut a block holding one into plain runs and a still run of 32
    values around it (docs/spec.md §5, "Subnormal moments"); every value is updated
    once, with the reference's bits."""
    rng = np.random.default_rng(43)
    n = 1000
    fi = np.finfo(dtype)
    param = rng_array(rng, n, dtype)
    grads = [rng_array(rng, n, dtype) for _ in range(3)]
    state = initial_state(opt, rng, n, dtype)
    first = state[OPTIMIZERS[opt][0]]
    first[_LONE] = np.array([3, -5, 1, 7, -2, 9, 4, -4, 6, 2, 8, -1, 5, 3]) * fi.smallest_subnormal
    for g in grads:
        g[_LONE[::2]] = 0  # still lanes beside lanes whose gradient moves the state
    hyper = {**DEFAULTS[opt], "weight_decay": 0.0}  # (an L2 term would make g non-zero)
    run_steps(name, opt, param, grads, state, hyper, "C", case_id(name, dtype, opt))


@pytest.mark.parametrize("lr", [3e-17, 1e-40])
@pytest.mark.parametrize("opt", ["adam_step", "adamw_step", "adamax_step"])
@pytest.mark.parametrize("name", COMPILED)
def test_still_bound_with_tiny_rates(name, opt, lr):
    """float64 steps of a tiny rate over a tiny eps (1e-30), zero gradients, subnormal
    first moments. With lr 3e-17 the product lr m / c1 is a subnormal of a few bits, and
    its quotient by eps (~1e-293) moves parameters below ~1e-278; with 1e-40 it is 0.
    The compiled kernels' bound for their still lanes (docs/spec.md §5, "Subnormal
    moments") must not underflow: as 2 lr 2^-1022 / (c1 eps) it was 0 at lr 3e-17, which
    left those parameters unmoved on the still path."""
    fi = np.finfo(np.float64)
    n = 512
    rng = np.random.default_rng(5)
    values = [1e-305, -3e-306, 1e-300, 5e-290, -1e-280, 1e-270, 0.5, fi.tiny, -2 * fi.tiny]
    param = np.resize(np.array(values), n)
    state = {s: np.zeros(n) for s in OPTIMIZERS[opt]}
    first = state[OPTIMIZERS[opt][0]]
    first[:] = rng.integers(1, 2**51, n) * fi.smallest_subnormal  # subnormal moments
    first[::4] *= -1
    grads = [np.zeros(n) for _ in range(3)]
    hyper = {**DEFAULTS[opt], "lr": lr, "eps": 1e-30, "weight_decay": 0.0}
    run_steps(name, opt, param, grads, state, hyper, "C", case_id(name, "float64", opt, lr))


@pytest.mark.parametrize("dtype", DTYPES)
def test_still_pmin_is_the_scaled_bound(dtype):
    """The Numba kernels' smallest |p| that a still lane's step cannot move (the C
    kernels' fnn_still_pmin has the same formula): max((step / den) 2^(emin + MANT + 3),
    2^emin) in float64, the division first, cast to the dtype; infinity (no still lanes)
    when it is not below 1e300, NaN or infinite (docs/spec.md §5)."""
    from fastnn._kernels._numba_common import still_pmin

    fi = np.finfo(dtype)
    tiny, x = float(fi.tiny), np.zeros(1, dtype)
    scale = tiny * 2.0 ** (fi.nmant + 3)  # a power of two: exact in float64

    def want(step, den):
        return np.dtype(dtype).type(max(step / den * scale, tiny))

    for step, den in [(2e-3, 1e-9), (2e-3, 1e-8), (6e-17, 1e-31), (2e-40, 1e-31), (1.0, 1.0)]:
        assert still_pmin(x, step, den) == want(step, den), (step, den)
    assert still_pmin(x, 0.0, 1.0) == np.dtype(dtype).type(tiny)
    # float64 at lr 3e-17: well above the smallest normal (2 lr 2^-1022 underflowed)
    assert np.dtype(dtype) != np.float64 or still_pmin(x, 6e-17, 1e-31) > 1e-280
    for step, den in [(1.0, 0.0), (np.nan, 1.0), (np.inf, 1.0), (1e300, 1e-300), (1.0, 1e-320)]:
        assert np.isinf(still_pmin(x, step, den)), (step, den)


def _quotient_edges(rng, dtype, n=1280):
    """Moments whose quotients by Adam's bias corrections sit where rounding is most
    delicate: moments turning subnormal in this step (from normal ones, so off the still
    path; subnormal quotients once the corrections near 1), quotients overflowing,
    moments of every binade, and any bit pattern. One kind per block of 256 values."""
    fi = np.finfo(dtype)
    tiny, big = float(fi.tiny), float(fi.max)
    block = 256
    spread = rng.random(block)
    m = np.zeros(n)
    v = np.zeros(n)
    g = np.zeros(n, np.float64)
    m[:block] = tiny * (1 + spread * 0.12)  # fl(0.9 m) subnormal for most
    m[:block] *= rng.choice([-1.0, 1.0], block)
    v[:block] = 1e-8
    m[block : 2 * block] = 1e-3
    v[block : 2 * block] = tiny * (1 + spread * 0.002)  # fl(0.999 v) subnormal for some
    m[2 * block : 3 * block] = big * (0.05 + 0.95 * spread)  # m / 0.1 overflows for most
    v[2 * block : 3 * block] = big * spread
    g[2 * block : 3 * block] = big * (rng.random(block) - 0.5) * 1e-2
    m[3 * block : 4 * block] = rng.choice([-1.0, 1.0], block) * np.exp2(
        rng.uniform(-126, 127, block)
    )
    v[3 * block : 4 * block] = np.exp2(rng.uniform(-126, 127, block))
    g[3 * block : 4 * block] = rng.normal(0, 1, block) * np.exp2(rng.uniform(-60, 60, block))
    param = rng.normal(0, 1, n)
    with np.errstate(over="ignore"):
        out = [a.astype(dtype) for a in (param, g, m, v)]
    bits = np.dtype(f"u{np.dtype(dtype).itemsize}")
    for a in out[1:]:  # the last block: random bits (NaN, infinities, subnormals)
        a[4 * block :] = rng.integers(0, np.iinfo(bits).max, n - 4 * block, bits).view(dtype)
    return tuple(out)


@pytest.mark.parametrize("first_step", [1, 2, 37, 3000, 10**6])
@pytest.mark.parametrize("opt", ["adam_step", "adamw_step"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", COMPILED)
def test_adam_quotient_edges(name, dtype, opt, first_step):
    """The compiled float32 Adam takes its quotients by the bias corrections as double
    products (docs/spec.md §5): the reference's divisions' bits, edge cases included."""
    rng = np.random.default_rng(41)
    param, g, m, v = _quotient_edges(rng, dtype)
    hyper = {**DEFAULTS[opt], "weight_decay": 0.0}
    with quiet_reference():  # overflowing quotients
        run_steps(
            name,
            opt,
            param,
            [g, g * dtype(0.5)],
            {"m": m, "v": v},
            hyper,
            "C",
            case_id(name, dtype, opt, first_step),
            first_step=first_step,
        )


@pytest.mark.parametrize("variant", ["eps_outside", "eps_inside", "no_decay"])
@pytest.mark.parametrize("opt", list(OPTIMIZERS))
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", COMPILED)
def test_optimizer_large_many_steps(name, dtype, opt, variant):
    """A long buffer (not a multiple of any SIMD width) over 5 steps from zero state;
    the Adam step count starts at 1 or, to exercise the bias corrections near 1, 4999."""
    n = 101 if SMALL else 100_003
    rng = np.random.default_rng(31)
    hyper = dict(DEFAULTS[opt])
    if "eps_inside_sqrt" in hyper:
        hyper["eps_inside_sqrt"] = variant == "eps_inside"
    if variant == "no_decay":
        hyper["weight_decay"] = 0.0
    state = {s: np.zeros(n, dtype) for s in OPTIMIZERS[opt]}
    grads = [rng_array(rng, n, dtype) for _ in range(5)]
    first = 1 if variant == "eps_outside" else 4999
    run_steps(
        name,
        opt,
        rng_array(rng, n, dtype),
        grads,
        state,
        hyper,
        "C",
        case_id(name, dtype, opt, variant),
        first_step=first,
    )


@pytest.mark.parametrize("opt", list(OPTIMIZERS))
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", COMPILED)
def test_optimizer_property(name, dtype, opt):
    @given(data=st.data(), hyper=hyper_strategy(opt), layout=st.sampled_from(IN_LAYOUTS))
    def prop(data, hyper, layout):
        shape = data.draw(shapes_any(), "shape")
        el = any_floats(dtype)
        param = data.draw(arrays(dtype, shape, el), "param")
        grads = [data.draw(arrays(dtype, shape, el), "grad") for _ in range(2)]
        state = {
            s: data.draw(arrays(dtype, shape, el.map(abs) if s in SQUARES else el), s)
            for s in OPTIMIZERS[opt]
        }
        run_steps(
            name,
            opt,
            param,
            grads,
            state,
            hyper,
            layout,
            case_id(name, dtype, opt, shape, hyper, layout),
        )

    prop()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", COMPILED)
def test_squared_norm_and_scale_property(name, dtype):
    """squared_norm: sum x^2 accumulated in float64, within sum_bound of the reference's
    pairwise sum (terms x^2 are exact in float64 for float32 x, rounded once for float64
    x in both). scale_inplace: x *= factor, factor cast once: exact."""

    @given(
        data=st.data(),
        layout=st.sampled_from(IN_LAYOUTS),
        factor=st.one_of(st.sampled_from([0.1, 0.5, -3.0, 0.0]), finite_floats(np.float64)),
    )
    def prop(data, layout, factor):
        shape = data.draw(shapes_any())
        x = data.draw(arrays(dtype, shape, reduction_floats(dtype)))
        err = case_id(name, dtype, shape, layout, factor)
        actual, expected = run_pair(name, "squared_norm", {"x": x}, in_layout=layout)
        x64 = x.astype(np.float64)
        bound = sum_bound(x.size, np.sum(x64 * x64), np.float64) + 2 * ulp(
            expected["result"], np.float64
        )
        assert_within(actual["result"], expected["result"], bound, "squared_norm " + err)
        lay = "C" if layout == "C_readonly" else layout
        actual, expected = run_pair(
            name, "scale_inplace", {"x": x, "factor": factor}, inplace=("x",), in_layout=lay
        )
        assert_exact(actual["x"], expected["x"], "scale_inplace " + err)

    prop()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", COMPILED)
def test_squared_norm_large(name, dtype):
    x = rng_array(np.random.default_rng(32), 101 if SMALL else 1_000_003, dtype, scale=3.0)
    actual, expected = run_pair(name, "squared_norm", {"x": x})
    x64 = x.astype(np.float64)
    bound = sum_bound(x.size, np.sum(x64 * x64), np.float64) + 2 * ulp(
        expected["result"], np.float64
    )
    assert_within(actual["result"], expected["result"], bound, case_id(name, dtype))


@pytest.mark.parametrize("layout", ["C", "F", "strided"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ALL_BACKENDS)
def test_clip_grad_norm(name, dtype, layout):
    """||g|| = sqrt(squared_norm(g)); if above max_norm, g *= max_norm / ||g||, in place
    through the Backend's own squared_norm and scale_inplace."""
    k = backend(name)
    g0 = rng_array(np.random.default_rng(33), (6, 5), dtype, scale=2.0)
    g = laid_out(g0, layout)
    norm = k.clip_grad_norm(g, max_norm=1.0)
    want_norm = float(np.sqrt(np.sum(g0.astype(np.float64) ** 2)))
    assert norm == pytest.approx(want_norm, rel=60 * np.finfo(np.float64).eps), name
    want = g0.copy()
    k.scale_inplace(want, 1.0 / norm)
    assert_exact(g, want, case_id(name, dtype, layout))
    before = g.copy()
    assert k.clip_grad_norm(g, max_norm=10.0) <= 10.0  # under the bound: untouched
    assert_exact(g, before, case_id(name, dtype, layout, "no clip"))


@pytest.mark.parametrize("opt", list(OPTIMIZERS))
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ALL_BACKENDS)
def test_nan_gradient_poisons_only_its_parameter(name, dtype, opt):
    """NaN is never hidden: a NaN gradient element makes that parameter NaN (and its
    state), the others update normally."""
    k = backend(name)
    rng = np.random.default_rng(34)
    param = rng_array(rng, 6, dtype)
    grad = rng_array(rng, 6, dtype)
    grad[2] = np.nan
    state = initial_state(opt, rng, 6, dtype)
    hyper = dict(DEFAULTS[opt])
    if opt in STEPS:
        hyper["step"] = 1
    getattr(k, opt)(param, grad, **state, **hyper)
    np.testing.assert_array_equal(np.isnan(param), np.isnan(grad), err_msg=f"{name} {opt}")


def _kernel_hyper(row, hyper):
    """The kernels' hyper vector (registry.HYPER_SLOTS) for a row and its values."""
    slots = dict.fromkeys(registry.HYPER_SLOTS, 0.0)
    for h in row.hypers:
        slots[h.slot] = float(hyper[h.name])
    return np.array([slots[s] for s in registry.HYPER_SLOTS])


@pytest.mark.parametrize("decay", [0.0, 0.01])
@pytest.mark.parametrize("opt", list(OPTIMIZERS))
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ALL_BACKENDS)
def test_optimizer_step_by_code_is_the_kernel(name, dtype, opt, decay):
    """optimizer_step (the update by code the step path and the epoch kernels call),
    raw and checked, gives the bits of the optimizer's own kernel over 3 steps, signed
    zeros included (AdamW with wd = 0 keeps -0.0, as Adam)."""
    k, row = backend(name), ROWS[opt]
    rng = np.random.default_rng(35)
    param = rng_array(rng, 37, dtype)
    param[:3] = -0.0
    state = initial_state(opt, rng, 37, dtype)
    hyper = {**DEFAULTS[opt], "weight_decay": decay}
    vec = _kernel_hyper(row, hyper)
    mine = [param.copy()] + [state[s].copy() for s in row.states]
    raw = [param.copy()] + [state[s].copy() for s in row.states]
    theirs = [param.copy()] + [state[s].copy() for s in row.states]
    empty = np.zeros(0, dtype)
    for t in (1, 2, 3):
        grad = rng_array(rng, 37, dtype)
        grad[:2] = 0.0
        states = mine[1:] + [None, None]
        k.optimizer_step(mine[0], grad, states[0], states[1], row.name, t, hyper["lr"], vec, decay)
        rs = raw[1:] + [empty, empty]
        k._raw.optimizer_step(raw[0], grad, rs[0], rs[1], row.code, t, hyper["lr"], vec, decay)
        args = {"step": t} if row.step else {}
        getattr(k, opt)(theirs[0], grad, *theirs[1:], **args, **hyper)
        for a, b, c, what in zip(mine, raw, theirs, ("param",) + row.states):
            assert_exact(a, c, case_id(name, dtype, opt, decay, t, what))
            assert_exact(b, c, case_id(name, dtype, opt, decay, t, what, "raw"))


def test_optimizer_step_refuses_bad_arguments():
    k = backend("numpy")
    p, g = np.zeros(3), np.zeros(3)
    vec = _kernel_hyper(ROWS["adam_step"], DEFAULTS["adam_step"])
    with pytest.raises(ValueError, match="optimizer must be one of"):
        k.optimizer_step(p, g, None, None, "adamax_", 1, 0.1, vec)
    with pytest.raises(ValueError, match="hyper's h0 \\(beta1\\)"):
        k.optimizer_step(p, g, np.zeros(3), np.zeros(3), "adam", 1, 0.1, np.ones(6))
    with pytest.raises(ValueError, match="hyper must have shape"):
        k.optimizer_step(p, g, np.zeros(3), np.zeros(3), "adam", 1, 0.1, vec[:4])
    with pytest.raises(ValueError, match="state2 must be None or empty"):
        k.optimizer_step(p, g, np.zeros(3), np.zeros(3), "momentum", 1, 0.1, vec)
    with pytest.raises(ValueError, match="state2 must have shape"):
        k.optimizer_step(p, g, np.zeros(3), np.zeros(2), "adam", 1, 0.1, vec)
