"""Activations and their derivatives: each compiled backend against the NumPy reference.

Tolerances: see the table in tests/kernels/_support.py (exact for the formulas without
exp/tanh, 2 ULP for sigmoid/tanh/elu, cancellation bounds for s(1-s) and 1-t^2,
summation-order bounds for softmax and softmax_backward).
"""

import warnings

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fastnn._kernels import codes
from kernels._support import (
    ALL_BACKENDS,
    CANCELLING,
    COMPILED,
    DTYPES,
    EXACT,
    IN_LAYOUTS,
    LAYOUT_PAIRS,
    OUT_LAYOUTS,
    SMALL,
    TRANSCENDENTAL,
    TRANSCENDENTAL_ULP,
    any_floats,
    arrays,
    assert_exact,
    assert_ulp,
    backend,
    case_id,
    check_activation,
    check_elementwise,
    check_softmax,
    check_softmax_backward,
    laid_out,
    quiet_reference,
    reduction_floats,
    reference,
    rng_array,
    run_pair,
    shapes_2d,
    shapes_any,
    special_values,
)

ELEMENTWISE = EXACT + TRANSCENDENTAL + CANCELLING
WITH_ALPHA = {"leaky_relu", "elu", "leaky_relu_derivative", "elu_derivative"}
ACTIVATIONS = list(codes.ACTIVATION_CODES)
# 0.1 and 0.01 are not representable: the kernel must round alpha to the array dtype
# exactly as NumPy's weak Python-float scalar does.
ALPHAS = (0.01, 0.1, 1.0, 1.7)


def _scalars(kernel, alpha):
    return {"alpha": alpha} if kernel in WITH_ALPHA else {}


def mixed_values(dtype, shape, seed=0):
    """Random normal values with every special value planted among them."""
    rng = np.random.default_rng(seed)
    z = rng_array(rng, shape, dtype, scale=4.0)
    sp = special_values(dtype)
    flat = z.reshape(-1)
    flat[rng.choice(flat.size, size=min(flat.size, sp.size), replace=False)] = sp[
        : min(flat.size, sp.size)
    ]
    return z


# --- elementwise kernels ----------------------------------------------------------------


@pytest.mark.parametrize("in_layout,out_layout", LAYOUT_PAIRS)
@pytest.mark.parametrize("kernel", ELEMENTWISE)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", COMPILED)
def test_elementwise_layouts(name, dtype, kernel, in_layout, out_layout):
    z = mixed_values(dtype, (5, 7))
    args = {"z": z, **_scalars(kernel, 0.1)}
    actual, expected = run_pair(
        name, kernel, args, outputs=("out",), in_layout=in_layout, out_layout=out_layout
    )
    check_elementwise(
        kernel, actual["out"], expected["out"], case_id(name, dtype, kernel, in_layout, out_layout)
    )


@pytest.mark.parametrize("kernel", ELEMENTWISE)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", COMPILED)
def test_elementwise_property(name, dtype, kernel):
    @given(
        z=shapes_any().flatmap(lambda s: arrays(dtype, s, any_floats(dtype))),
        alpha=st.sampled_from(ALPHAS),
        in_layout=st.sampled_from(IN_LAYOUTS),
        out_layout=st.sampled_from(OUT_LAYOUTS),
    )
    def prop(z, alpha, in_layout, out_layout):
        actual, expected = run_pair(
            name,
            kernel,
            {"z": z, **_scalars(kernel, alpha)},
            outputs=("out",),
            in_layout=in_layout,
            out_layout=out_layout,
        )
        check_elementwise(
            kernel,
            actual["out"],
            expected["out"],
            case_id(name, dtype, kernel, z.shape, in_layout, out_layout),
        )

    prop()


@pytest.mark.parametrize("kernel", ELEMENTWISE)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", COMPILED)
def test_elementwise_large(name, dtype, kernel):
    shape = (13, 11) if SMALL else (129, 67)
    z = mixed_values(dtype, shape, seed=1)
    actual, expected = run_pair(name, kernel, {"z": z, **_scalars(kernel, 0.01)}, outputs=("out",))
    check_elementwise(kernel, actual["out"], expected["out"], case_id(name, dtype, kernel, shape))


@pytest.mark.parametrize("layout", ["C", "strided"])
@pytest.mark.parametrize("kernel", ELEMENTWISE)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ALL_BACKENDS)
def test_elementwise_in_place(name, dtype, kernel, layout):
    """out may be z itself (BRIEF aliasing rule): same values as a separate out."""
    z = laid_out(mixed_values(dtype, (4, 9), seed=2), layout)
    k = backend(name)
    with quiet_reference():
        separate = getattr(k, kernel)(z.copy(), **_scalars(kernel, 0.1))
    ret = getattr(k, kernel)(z, **_scalars(kernel, 0.1), out=z)
    assert ret is z
    assert_exact(z, separate, case_id(name, dtype, kernel, "out=z", layout))


# --- values the contract names ----------------------------------------------------------

FP_RAISE = dict(over="raise", invalid="raise", divide="raise")  # underflow is expected


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ALL_BACKENDS)
def test_sigmoid_saturates_exactly_without_warnings(name, dtype):
    # sigmoid(-1000) = e^-1000 / (1 + e^-1000) underflows to exactly 0, and
    # sigmoid(1000) = 1 / (1 + e^-1000) rounds to exactly 1; e^x is never formed with
    # x > 0, so nothing overflows.
    fi = np.finfo(dtype)
    z = np.array([-1000.0, 1000.0, -fi.max, fi.max, -np.inf, np.inf], dtype=dtype)
    k = backend(name)
    with warnings.catch_warnings(), np.errstate(**FP_RAISE):
        warnings.simplefilter("error")
        s = k.sigmoid(z)
        ds = k.sigmoid_derivative(z)
        a = k.activation_forward(z.reshape(2, 3), "sigmoid")
    assert_exact(s, np.array([0, 1, 0, 1, 0, 1], dtype=dtype), case_id(name, dtype, "sigmoid"))
    assert_exact(a.reshape(-1), s, case_id(name, dtype, "activation_forward sigmoid"))
    # s (1 - s) is 0 * 1 or 1 * 0: +0 on both sides.
    assert_exact(ds, np.zeros(6, dtype=dtype), case_id(name, dtype, "sigmoid_derivative"))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ALL_BACKENDS)
def test_softmax_large_logits_do_not_overflow(name, dtype):
    z = np.array([[1e4, 0.0, -1e4], [1e4, 1e4, 1e4], [-1e4, -1e4, -1e4 - 2]], dtype=dtype)
    k = backend(name)
    with warnings.catch_warnings(), np.errstate(**FP_RAISE):
        warnings.simplefilter("error")
        p = k.softmax(z)
        a = k.activation_forward(z, "softmax")
    # Row 0: e^(z - 1e4) = (1, e^-1e4 = 0, 0), so (1, 0, 0) exactly.
    assert_exact(p[0], np.array([1, 0, 0], dtype=dtype), case_id(name, dtype, "row 0"))
    # Row 1: three equal logits: 1/3 each (one rounding).
    np.testing.assert_array_max_ulp(p[1], np.full(3, 1 / 3, dtype=dtype), maxulp=1)
    # Row 2: shifted (0, 0, -2): 1 / (2 + e^-2) = 0.4404..., e^-2 / (2 + e^-2) = 0.0596...
    e2 = np.exp(-2.0)
    want = np.array([1 / (2 + e2), 1 / (2 + e2), e2 / (2 + e2)]).astype(dtype)
    np.testing.assert_array_max_ulp(p[2], want, maxulp=2)
    assert_exact(a, p, case_id(name, dtype, "activation_forward softmax"))


@pytest.mark.parametrize("kernel", ELEMENTWISE)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ALL_BACKENDS)
def test_nan_propagates(name, dtype, kernel):
    """A NaN input gives NaN out, in every function and derivative; nothing else does."""
    z = np.array([np.nan, -2.0, 0.0, np.nan, 3.0, -0.0], dtype=dtype)
    out = getattr(backend(name), kernel)(z, **_scalars(kernel, 0.01))
    np.testing.assert_array_equal(np.isnan(out), np.isnan(z), err_msg=case_id(name, dtype, kernel))


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ALL_BACKENDS)
def test_nan_propagates_through_activation_backward(name, dtype, activation):
    k = backend(name)
    z = np.array([[np.nan, 1.0, -1.0], [0.5, -0.5, 2.0]], dtype=dtype)
    with quiet_reference():
        a = k.activation_forward(z, activation)
        da = np.ones_like(z)
        dz = k.activation_backward(da, z, a, activation)
    err = case_id(name, dtype, activation)
    # Row 0 holds the NaN (softmax spreads it over its row, the others keep it in place).
    assert np.isnan(dz[0, 0]), err
    assert np.all(np.isfinite(dz[1])), err
    da[1, 2] = np.nan
    dz = k.activation_backward(da, z, a, activation)
    assert np.isnan(dz[1, 2]), err


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ALL_BACKENDS)
def test_kinks_and_signed_zero(name, dtype):
    k = backend(name)
    z = np.array([-0.0, 0.0, -1.0, 2.0], dtype=dtype)
    # relu(-0.0) = +0.0 (NumPy's maximum(z, 0)); relu(-1) = 0; relu(2) = 2.
    assert_exact(k.relu(z), np.array([0.0, 0.0, 0.0, 2.0], dtype=dtype), f"{name} relu")
    # step(z) = 1 if z >= 0: -0.0 >= 0 holds, so the perceptron fires at both zeros.
    assert_exact(k.step(z), np.array([1, 1, 0, 1], dtype=dtype), f"{name} step")
    # g'(0) = 0 for relu (z > 0 is false at zero) and alpha for leaky_relu.
    assert_exact(k.relu_derivative(z), np.array([0, 0, 0, 1], dtype=dtype), f"{name} relu'")
    assert_exact(
        k.leaky_relu_derivative(z, alpha=0.25),
        np.array([0.25, 0.25, 0.25, 1], dtype=dtype),
        f"{name} leaky'",
    )
    # leaky_relu(-0.0) = 0.25 * -0.0 = -0.0 (the branch z > 0 is false).
    assert_exact(
        k.leaky_relu(z, alpha=0.25), np.array([-0.0, 0.0, -0.25, 2.0], dtype=dtype), f"{name} leaky"
    )
    # elu'(0) = alpha e^0 = alpha exactly (z > 0 is false at zero); elu'(2) = 1;
    # elu'(-1) = 1.5 e^-1 = 0.5518..., within the 2 ULP of exp.
    d = k.elu_derivative(z, alpha=1.5)
    assert_exact(d[[0, 1, 3]], np.array([1.5, 1.5, 1.0], dtype=dtype), f"{name} elu'")
    assert_ulp(
        d[2:3], np.array([1.5 * np.exp(-1.0)], dtype=dtype), TRANSCENDENTAL_ULP, f"{name} elu'(-1)"
    )
    assert_exact(k.step_derivative(z), np.zeros(4, dtype=dtype), f"{name} step'")
    assert_exact(k.identity_derivative(z), np.ones(4, dtype=dtype), f"{name} identity'")


# --- row-wise: softmax and softmax_backward -------------------------------------------


@pytest.mark.parametrize("in_layout,out_layout", LAYOUT_PAIRS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", COMPILED)
def test_softmax_layouts(name, dtype, in_layout, out_layout):
    z = rng_array(np.random.default_rng(3), (6, 9), dtype, scale=5.0)
    z[2, 4] = np.nan  # the whole row becomes NaN, the others are untouched
    actual, expected = run_pair(
        name, "softmax", {"z": z}, outputs=("out",), in_layout=in_layout, out_layout=out_layout
    )
    check_softmax(actual["out"], expected["out"], case_id(name, dtype, in_layout, out_layout))

    rng = np.random.default_rng(4)
    a = reference().softmax(rng_array(rng, (6, 9), dtype, scale=3.0))
    da = rng_array(rng, (6, 9), dtype)
    actual, expected = run_pair(
        name,
        "softmax_backward",
        {"a": a, "da": da},
        outputs=("out",),
        in_layout=in_layout,
        out_layout=out_layout,
    )
    check_softmax_backward(
        actual["out"],
        expected["out"],
        a,
        da,
        case_id(name, dtype, "softmax_backward", in_layout, out_layout),
    )


def _logit_rows(dtype):
    """(m, k) logits: any float (NaN and inf included), one row and one column among
    the shapes; 1-D (one row) too."""
    return st.one_of(shapes_2d(), shapes_any()).flatmap(
        lambda s: arrays(dtype, s, any_floats(dtype))
    )


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", COMPILED)
def test_softmax_property(name, dtype):
    @given(
        z=_logit_rows(dtype),
        in_layout=st.sampled_from(IN_LAYOUTS),
        out_layout=st.sampled_from(OUT_LAYOUTS),
    )
    def prop(z, in_layout, out_layout):
        actual, expected = run_pair(
            name, "softmax", {"z": z}, outputs=("out",), in_layout=in_layout, out_layout=out_layout
        )
        check_softmax(
            actual["out"], expected["out"], case_id(name, dtype, z.shape, in_layout, out_layout)
        )

    prop()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", COMPILED)
def test_softmax_backward_property(name, dtype):
    @given(
        data=st.data(),
        in_layout=st.sampled_from(IN_LAYOUTS),
        out_layout=st.sampled_from(OUT_LAYOUTS),
    )
    def prop(data, in_layout, out_layout):
        shape = data.draw(shapes_2d())
        z = data.draw(arrays(dtype, shape, reduction_floats(dtype)))
        with quiet_reference():
            a = reference().softmax(z)
        da = data.draw(arrays(dtype, shape, reduction_floats(dtype)))
        actual, expected = run_pair(
            name,
            "softmax_backward",
            {"a": a, "da": da},
            outputs=("out",),
            in_layout=in_layout,
            out_layout=out_layout,
        )
        check_softmax_backward(
            actual["out"],
            expected["out"],
            a,
            da,
            case_id(name, dtype, shape, in_layout, out_layout),
        )

    prop()


# --- fused forms used by the dense layer -----------------------------------------------


def _fused_args(activation, dtype, z):
    """(forward args, backward args) with a = g(z) from the reference."""
    fwd = {"z": z, "activation": activation}
    with quiet_reference():
        a = reference().activation_forward(z, activation)
    da = rng_array(np.random.default_rng(z.size), z.shape, dtype)
    return fwd, {"da": da, "z": z, "a": a, "activation": activation}


@pytest.mark.parametrize("in_layout,out_layout", LAYOUT_PAIRS)
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", COMPILED)
def test_activation_forward_backward_layouts(name, dtype, activation, in_layout, out_layout):
    z = mixed_values(dtype, (5, 7), seed=5)
    if activation == "softmax":  # rows of finite values: a NaN row is checked above
        z = rng_array(np.random.default_rng(5), (5, 7), dtype, scale=4.0)
    fwd, bwd = _fused_args(activation, dtype, z)
    actual, expected = run_pair(
        name,
        "activation_forward",
        fwd,
        outputs=("out",),
        in_layout=in_layout,
        out_layout=out_layout,
    )
    check_activation(
        activation,
        "forward",
        actual["out"],
        expected["out"],
        case_id(name, dtype, "forward", activation, in_layout, out_layout),
    )
    actual, expected = run_pair(
        name,
        "activation_backward",
        bwd,
        outputs=("out",),
        in_layout=in_layout,
        out_layout=out_layout,
    )
    check_activation(
        activation,
        "backward",
        actual["out"],
        expected["out"],
        case_id(name, dtype, "backward", activation, in_layout, out_layout),
        a=bwd["a"],
        da=bwd["da"],
    )


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", COMPILED)
def test_activation_forward_backward_property(name, dtype, activation):
    elements = reduction_floats(dtype) if activation == "softmax" else any_floats(dtype)

    @given(
        data=st.data(),
        alpha=st.sampled_from(ALPHAS),
        in_layout=st.sampled_from(IN_LAYOUTS),
        out_layout=st.sampled_from(OUT_LAYOUTS),
    )
    def prop(data, alpha, in_layout, out_layout):
        shape = data.draw(shapes_2d())
        z = data.draw(arrays(dtype, shape, elements))
        da = data.draw(arrays(dtype, shape, elements))
        fwd = {"z": z, "activation": activation, "alpha": alpha}
        actual, expected = run_pair(
            name,
            "activation_forward",
            fwd,
            outputs=("out",),
            in_layout=in_layout,
            out_layout=out_layout,
        )
        err = case_id(name, dtype, activation, shape, alpha, in_layout, out_layout)
        check_activation(activation, "forward", actual["out"], expected["out"], "fwd " + err)
        a = expected["out"]
        bwd = {"da": da, "z": z, "a": a, "activation": activation, "alpha": alpha}
        actual, expected = run_pair(
            name,
            "activation_backward",
            bwd,
            outputs=("out",),
            in_layout=in_layout,
            out_layout=out_layout,
        )
        check_activation(
            activation, "backward", actual["out"], expected["out"], "bwd " + err, a=a, da=da
        )

    prop()


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ALL_BACKENDS)
def test_activation_forward_matches_the_elementwise_kernels(name, dtype, activation):
    """activation_forward(z, "name") is the kernel ``name`` (same backend), the default
    alpha being docs/spec.md §3's (0.01 for leaky_relu, 1.0 for elu)."""
    k = backend(name)
    z = rng_array(np.random.default_rng(6), (4, 5), dtype, scale=3.0)
    fused = k.activation_forward(z, activation)
    alone = getattr(k, activation)(z)
    assert_exact(fused, alone, case_id(name, dtype, activation))


@pytest.mark.parametrize("kernel", ELEMENTWISE)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ALL_BACKENDS)
def test_infinities_give_the_limits_never_nan(name, dtype, kernel):
    """NaN comes out only where NaN goes in: at -inf every g unbounded below is -inf and
    every other g and g' takes its value at the most negative finite number (gelu, silu
    and mish: -0.0, not -inf * 0), g' at +inf its value at the largest (docs/spec.md
    §3, "Infinite tails")."""
    k = backend(name)
    big = np.finfo(dtype).max
    z = np.array([-np.inf, -big, np.inf, big, np.nan], dtype=dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the reference's overflows
        out = getattr(k, kernel)(z, **_scalars(kernel, 0.1))
    assert np.isnan(out).tolist() == [False, False, False, False, True], out
    if out[0] != -np.inf:
        assert_exact(out[0:1], out[1:2], f"{name} {kernel}(-inf) vs (-max)")
    if kernel.endswith("_derivative"):
        assert_exact(out[2:3], out[3:4], f"{name} {kernel}(+inf) vs (+max)")
