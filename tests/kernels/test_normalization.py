"""Dropout and batch normalisation: each compiled backend against the NumPy reference.

dropout (mask * x / (1 - rate) in the array dtype) and batch_norm_eval (only the
correctly rounded -, *, sqrt, / in float64, one rounding, then the affine part in the
array dtype) are exact. batch_norm_train and batch_norm_backward reduce over the rows
in float64: their bounds are derived in ``bn_train_bounds`` / ``bn_backward_bounds``
(tests/kernels/_support.py); the affine out = gamma x_hat + beta is then exact given
the kernel's own x_hat.
"""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from kernels._support import (
    COMPILED,
    DTYPES,
    IN_LAYOUTS,
    LAYOUT_PAIRS,
    OUT_LAYOUTS,
    SMALL,
    any_floats,
    arrays,
    assert_exact,
    assert_within,
    bn_backward_bounds,
    bn_train_bounds,
    case_id,
    finite_floats,
    reduction_floats,
    rng_array,
    run_pair,
    shapes_2d,
    shapes_any,
)

BN_OUT = ("out", "x_hat", "inv_std")
BN_STATE = ("running_mean", "running_var")


def check_dropout(name, dtype, x, mask, rate, in_layout, out_layout, err):
    actual, expected = run_pair(
        name,
        "dropout",
        {"x": x, "mask": mask, "rate": rate},
        outputs=("out",),
        in_layout=in_layout,
        out_layout=out_layout,
    )
    assert_exact(actual["out"], expected["out"], err)


def check_bn_train(name, args, in_layout, out_layout, err):
    actual, expected = run_pair(
        name,
        "batch_norm_train",
        args,
        outputs=BN_OUT,
        inplace=BN_STATE,
        in_layout=in_layout,
        out_layout=out_layout,
    )
    bounds = bn_train_bounds(args["x"], args["eps"], args["momentum"])
    for key in ("x_hat", "inv_std", "running_mean", "running_var"):
        assert_within(actual[key], expected[key], bounds[key], f"{key} {err}")
    with np.errstate(all="ignore"):
        out = args["gamma"] * np.ascontiguousarray(actual["x_hat"]) + args["beta"]
    assert_exact(actual["out"], out, "out = gamma x_hat + beta " + err)


def check_bn_eval(name, args, in_layout, out_layout, err):
    actual, expected = run_pair(
        name, "batch_norm_eval", args, outputs=("out",), in_layout=in_layout, out_layout=out_layout
    )
    assert_exact(actual["out"], expected["out"], err)


def check_bn_backward(name, args, in_layout, out_layout, err):
    actual, expected = run_pair(
        name,
        "batch_norm_backward",
        args,
        outputs=("dx", "dgamma", "dbeta"),
        in_layout=in_layout,
        out_layout=out_layout,
    )
    bounds = bn_backward_bounds(
        args["dout"], args["x_hat"], args["gamma"], args["inv_std"], expected
    )
    for key in ("dx", "dgamma", "dbeta"):
        assert_within(actual[key], expected[key], bounds[key], f"{key} {err}")


def bn_args(rng, dtype, m, k):
    x = rng_array(rng, (m, k), dtype, scale=3.0) + dtype(1.5)
    gamma = rng_array(rng, (k,), dtype) + dtype(1)
    beta = rng_array(rng, (k,), dtype)
    rm = rng_array(rng, (k,), dtype)
    rv = np.abs(rng_array(rng, (k,), dtype)) + dtype(0.5)
    train = {
        "x": x,
        "gamma": gamma,
        "beta": beta,
        "running_mean": rm,
        "running_var": rv,
        "eps": 1e-5,
        "momentum": 0.1,
    }
    ev = {"x": x, "gamma": gamma, "beta": beta, "running_mean": rm, "running_var": rv, "eps": 1e-5}
    x_hat = rng_array(rng, (m, k), dtype)
    inv_std = np.abs(rng_array(rng, (k,), dtype)) + dtype(0.1)
    back = {
        "dout": rng_array(rng, (m, k), dtype),
        "x_hat": x_hat,
        "gamma": gamma,
        "inv_std": inv_std,
    }
    return train, ev, back


@pytest.mark.parametrize("in_layout,out_layout", LAYOUT_PAIRS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", COMPILED)
def test_normalization_layouts(name, dtype, in_layout, out_layout):
    rng = np.random.default_rng(40)
    err = case_id(name, dtype, in_layout, out_layout)
    x = rng_array(rng, (6, 5), dtype)
    mask = rng.random((6, 5)) < 0.7
    for mk in (mask, mask.astype(np.uint8)):
        check_dropout(name, dtype, x, mk, 0.3, in_layout, out_layout, "dropout " + err)
    train, ev, back = bn_args(rng, dtype, 7, 5)
    check_bn_train(name, train, in_layout, out_layout, "bn_train " + err)
    check_bn_eval(name, ev, in_layout, out_layout, "bn_eval " + err)
    check_bn_backward(name, back, in_layout, out_layout, "bn_backward " + err)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", COMPILED)
def test_normalization_large(name, dtype):
    m, k = (9, 5) if SMALL else (1031, 67)
    rng = np.random.default_rng(41)
    err = case_id(name, dtype, (m, k))
    x = rng_array(rng, (m, k), dtype)
    check_dropout(name, dtype, x, rng.random((m, k)) < 0.5, 0.5, "C", None, "dropout " + err)
    train, ev, back = bn_args(rng, dtype, m, k)
    check_bn_train(name, train, "C", None, "bn_train " + err)
    check_bn_eval(name, ev, "C", None, "bn_eval " + err)
    check_bn_backward(name, back, "C", None, "bn_backward " + err)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", COMPILED)
def test_dropout_property(name, dtype):
    """Any x (NaN, inf, subnormals), bool or 0/1 integer masks, any rate in [0, 1)."""

    @given(
        data=st.data(),
        rate=st.one_of(st.sampled_from([0.0, 0.1, 0.5]), st.floats(0.0, 1.0, exclude_max=True)),
        in_layout=st.sampled_from(IN_LAYOUTS),
        out_layout=st.sampled_from(OUT_LAYOUTS),
    )
    def prop(data, rate, in_layout, out_layout):
        shape = data.draw(shapes_any())
        x = data.draw(arrays(dtype, shape, any_floats(dtype)))
        mdt = data.draw(st.sampled_from([np.bool_, np.uint8, np.int64]))
        mask = data.draw(arrays(mdt, shape, st.integers(0, 1).map(mdt)))
        check_dropout(
            name,
            dtype,
            x,
            mask,
            rate,
            in_layout,
            out_layout,
            case_id(name, dtype, shape, rate, in_layout, out_layout),
        )

    prop()


def _small_floats(dtype):
    """Magnitudes where products of three values and their column sums stay finite."""
    return finite_floats(dtype, 2.0 ** (50 if dtype == np.float32 else 100))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", COMPILED)
def test_batch_norm_property(name, dtype):
    """m >= 2 rows (one column among the shapes), values of many magnitudes with
    constant columns, zeros and subnormals; eps and momentum across their ranges."""

    @given(
        data=st.data(),
        eps=st.one_of(st.just(1e-5), st.floats(1e-12, 1.0)),
        momentum=st.floats(0.0, 1.0),
        in_layout=st.sampled_from(IN_LAYOUTS),
        out_layout=st.sampled_from(OUT_LAYOUTS),
    )
    def prop(data, eps, momentum, in_layout, out_layout):
        m, k = data.draw(shapes_2d(min_rows=2), "shape")
        el = reduction_floats(dtype)
        x = data.draw(arrays(dtype, (m, k), el), "x")
        gamma = data.draw(arrays(dtype, (k,), el), "gamma")
        beta = data.draw(arrays(dtype, (k,), el), "beta")
        rm = data.draw(arrays(dtype, (k,), el), "running_mean")
        rv = data.draw(arrays(dtype, (k,), el.map(abs)), "running_var")
        err = case_id(name, dtype, (m, k), eps, momentum, in_layout, out_layout)
        check_bn_train(
            name,
            {
                "x": x,
                "gamma": gamma,
                "beta": beta,
                "running_mean": rm,
                "running_var": rv,
                "eps": eps,
                "momentum": momentum,
            },
            in_layout,
            out_layout,
            "bn_train " + err,
        )
        check_bn_eval(
            name,
            {
                "x": x,
                "gamma": gamma,
                "beta": beta,
                "running_mean": rm,
                "running_var": rv,
                "eps": eps,
            },
            in_layout,
            out_layout,
            "bn_eval " + err,
        )
        small = _small_floats(dtype)
        back = {
            "dout": data.draw(arrays(dtype, (m, k), small), "dout"),
            "x_hat": data.draw(arrays(dtype, (m, k), small), "x_hat"),
            "gamma": data.draw(arrays(dtype, (k,), small), "gamma"),
            "inv_std": data.draw(arrays(dtype, (k,), small.map(abs)), "inv_std"),
        }
        check_bn_backward(name, back, in_layout, out_layout, "bn_backward " + err)

    prop()
