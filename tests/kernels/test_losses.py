"""Losses and their gradients: each compiled backend against the NumPy reference.

mse_gradient is exact (no exp/log, array dtype); the loss values are float64 means and
the other gradients carry exp/log and cancellation: their bounds are derived in the
``check_*`` functions of tests/kernels/_support.py.
"""

import warnings

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from kernels._support import (
    ALL_BACKENDS,
    COMPILED,
    DTYPES,
    IN_LAYOUTS,
    LAYOUT_PAIRS,
    OUT_LAYOUTS,
    SMALL,
    arrays,
    assert_exact,
    backend,
    case_id,
    check_bce,
    check_bce_gradient,
    check_ce,
    check_ce_gradient,
    check_mse,
    check_poisson,
    check_poisson_gradient,
    check_sparse_ce,
    finite_floats,
    reduction_floats,
    rng_array,
    run_pair,
    shapes_1d,
    shapes_2d,
    shapes_any,
    unit_floats,
)


def onehot(labels, k, dtype):
    y = np.zeros((len(labels), k), dtype=dtype)
    y[np.arange(len(labels)), labels] = 1
    return y


def soft_targets(rng, m, k, dtype):
    w = rng.random((m, k))
    return (w / w.sum(axis=1, keepdims=True)).astype(dtype)


def run_loss_family(name, dtype, kind, z, y, in_layout, out_layout, err):
    """Loss value and gradient of one family on backend ``name`` vs the reference."""
    if kind == "mse":
        actual, expected = run_pair(name, "mse", {"y_pred": z, "y": y}, in_layout=in_layout)
        check_mse(actual["result"], expected["result"], z, y, "mse " + err)
        actual, expected = run_pair(
            name,
            "mse_gradient",
            {"y_pred": z, "y": y},
            outputs=("out",),
            in_layout=in_layout,
            out_layout=out_layout,
        )
        assert_exact(actual["out"], expected["out"], "mse_gradient " + err)
    elif kind == "poisson":
        actual, expected = run_pair(name, "poisson", {"z": z, "y": y}, in_layout=in_layout)
        check_poisson(actual["result"], expected["result"], z, y, "poisson " + err)
        actual, expected = run_pair(
            name,
            "poisson_gradient",
            {"z": z, "y": y},
            outputs=("out",),
            in_layout=in_layout,
            out_layout=out_layout,
        )
        check_poisson_gradient(actual["out"], expected["out"], z, "poisson_gradient " + err)
    elif kind == "bce":
        actual, expected = run_pair(
            name, "binary_cross_entropy", {"z": z, "y": y}, in_layout=in_layout
        )
        check_bce(actual["result"], expected["result"], z, y, "bce " + err)
        actual, expected = run_pair(
            name,
            "binary_cross_entropy_gradient",
            {"z": z, "y": y},
            outputs=("out",),
            in_layout=in_layout,
            out_layout=out_layout,
        )
        check_bce_gradient(actual["out"], expected["out"], z, y, "bce_gradient " + err)
    elif kind in ("ce", "ce_labels"):
        # y: float targets (one-hot or soft) or integer labels; cross_entropy dispatches.
        actual, expected = run_pair(name, "cross_entropy", {"z": z, "y": y}, in_layout=in_layout)
        if kind == "ce":
            check_ce(actual["result"], expected["result"], z, y, "ce " + err)
        else:
            check_sparse_ce(actual["result"], expected["result"], z, y, "ce labels " + err)
        actual, expected = run_pair(
            name,
            "cross_entropy_gradient",
            {"z": z, "y": y},
            outputs=("out",),
            in_layout=in_layout,
            out_layout=out_layout,
        )
        target = y if kind == "ce" else onehot(y, z.shape[1], np.float64)
        check_ce_gradient(actual["out"], expected["out"], z, target, "ce_gradient " + err)
    elif kind == "sparse":
        actual, expected = run_pair(
            name, "sparse_cross_entropy", {"z": z, "labels": y}, in_layout=in_layout
        )
        check_sparse_ce(actual["result"], expected["result"], z, y, "sparse " + err)
        actual, expected = run_pair(
            name,
            "sparse_cross_entropy_gradient",
            {"z": z, "labels": y},
            outputs=("out",),
            in_layout=in_layout,
            out_layout=out_layout,
        )
        check_ce_gradient(
            actual["out"],
            expected["out"],
            z,
            onehot(y, z.shape[1], np.float64),
            "sparse_gradient " + err,
        )
    else:
        raise ValueError(kind)


KINDS = ["mse", "poisson", "bce", "bce_rows", "ce_onehot", "ce_soft", "ce_labels", "sparse"]


def layout_inputs(kind, dtype, rng, m=6, k=5):
    z = rng_array(rng, (m, k), dtype, scale=3.0)
    labels = rng.integers(0, k, size=m)
    if kind == "mse":
        return "mse", z, rng_array(rng, (m, k), dtype)
    if kind == "poisson":  # log-means and counts
        return "poisson", z, rng.poisson(3.0, size=(m, k)).astype(dtype)
    if kind == "bce":  # one logit per sample, (m,)
        return "bce", z[:, 0].copy(), rng.random(m).astype(dtype)
    if kind == "bce_rows":  # (m, k) independent binary outputs
        return "bce", z, rng.random((m, k)).astype(dtype)
    if kind == "ce_onehot":
        return "ce", z, onehot(labels, k, dtype)
    if kind == "ce_soft":
        return "ce", z, soft_targets(rng, m, k, dtype)
    if kind == "ce_labels":
        return "ce_labels", z, labels
    return "sparse", z, labels


@pytest.mark.parametrize("in_layout,out_layout", LAYOUT_PAIRS)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", COMPILED)
def test_loss_layouts(name, dtype, kind, in_layout, out_layout):
    family, z, y = layout_inputs(kind, dtype, np.random.default_rng(20))
    run_loss_family(
        name,
        dtype,
        family,
        z,
        y,
        in_layout,
        out_layout,
        case_id(name, dtype, kind, in_layout, out_layout),
    )


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", COMPILED)
def test_loss_large(name, dtype, kind):
    m, k = (20, 7) if SMALL else (4099, 33)
    family, z, y = layout_inputs(kind, dtype, np.random.default_rng(21), m, k)
    run_loss_family(name, dtype, family, z, y, "C", None, case_id(name, dtype, kind, (m, k)))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", COMPILED)
def test_mse_property(name, dtype):
    @given(
        data=st.data(),
        in_layout=st.sampled_from(IN_LAYOUTS),
        out_layout=st.sampled_from(OUT_LAYOUTS),
    )
    def prop(data, in_layout, out_layout):
        shape = data.draw(shapes_any())
        p = data.draw(arrays(dtype, shape, reduction_floats(dtype)))
        y = data.draw(arrays(dtype, shape, reduction_floats(dtype)))
        run_loss_family(
            name,
            dtype,
            "mse",
            p,
            y,
            in_layout,
            out_layout,
            case_id(name, dtype, shape, in_layout, out_layout),
        )

    prop()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", COMPILED)
def test_poisson_property(name, dtype):
    """Any shape and layout; log-means in [-30, 30] (e^z finite in float32 too) and
    non-negative targets, zeros included."""
    logits = st.floats(-30, 30, width=np.finfo(dtype).bits)
    counts = st.floats(0, 1e4, width=np.finfo(dtype).bits)

    @given(
        data=st.data(),
        in_layout=st.sampled_from(IN_LAYOUTS),
        out_layout=st.sampled_from(OUT_LAYOUTS),
    )
    def prop(data, in_layout, out_layout):
        shape = data.draw(shapes_any().filter(lambda s: int(np.prod(s)) > 0))
        z = data.draw(arrays(dtype, shape, logits))
        y = data.draw(arrays(dtype, shape, counts))
        run_loss_family(
            name,
            dtype,
            "poisson",
            z,
            y,
            in_layout,
            out_layout,
            case_id(name, dtype, shape, in_layout, out_layout),
        )

    prop()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", COMPILED)
def test_binary_cross_entropy_property(name, dtype):
    """Logits up to 2^50 (float32) or 2^330 (float64), where no summation order of the
    mean overflows, targets in [0, 1]; (m,) and (m, k)."""

    @given(
        data=st.data(),
        in_layout=st.sampled_from(IN_LAYOUTS),
        out_layout=st.sampled_from(OUT_LAYOUTS),
    )
    def prop(data, in_layout, out_layout):
        shape = data.draw(st.one_of(shapes_1d(), shapes_2d()))
        z = data.draw(arrays(dtype, shape, reduction_floats(dtype)))
        y = data.draw(arrays(dtype, shape, unit_floats(dtype)))
        run_loss_family(
            name,
            dtype,
            "bce",
            z,
            y,
            in_layout,
            out_layout,
            case_id(name, dtype, shape, in_layout, out_layout),
        )

    prop()


def _normalised(w, dtype):
    total = w.sum(axis=1, keepdims=True)
    w = np.where(total > 0, w, 1.0)  # an all-zero row becomes uniform
    return (w / w.sum(axis=1, keepdims=True)).astype(dtype)


def _soft_rows(dtype, shape):
    """Target rows that sum to 1 (soft labels), zeros and tiny weights included."""
    return arrays(np.float64, shape, finite_floats(np.float64, 1.0).map(abs)).map(
        lambda w: _normalised(w, dtype)
    )


@pytest.mark.parametrize("kind", ["ce", "ce_labels", "sparse"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", COMPILED)
def test_cross_entropy_property(name, dtype, kind):
    """Logits of magnitudes up to 2^50 (float32) or 2^330 (float64), one row, one class,
    odd sizes; soft or one-hot targets, or labels of several integer dtypes."""

    @given(
        data=st.data(),
        in_layout=st.sampled_from(IN_LAYOUTS),
        out_layout=st.sampled_from(OUT_LAYOUTS),
    )
    def prop(data, in_layout, out_layout):
        m, k = data.draw(shapes_2d())
        z = data.draw(arrays(dtype, (m, k), reduction_floats(dtype)))
        if kind == "ce":
            y = data.draw(
                st.one_of(
                    _soft_rows(dtype, (m, k)),
                    arrays(np.int64, (m,), st.integers(0, k - 1)).map(
                        lambda lab: onehot(lab, k, dtype)
                    ),
                )
            )
        else:
            ldt = data.draw(st.sampled_from([np.int64, np.int32, np.uint8]))
            y = data.draw(arrays(ldt, (m,), st.integers(0, min(k - 1, 255))))
        run_loss_family(
            name,
            dtype,
            kind,
            z,
            y,
            in_layout,
            out_layout,
            case_id(name, dtype, kind, (m, k), in_layout, out_layout),
        )

    prop()


FP_RAISE = dict(over="raise", invalid="raise", divide="raise")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ALL_BACKENDS)
def test_losses_with_large_logits_stay_finite(name, dtype):
    """Logits in, stable formulas only: |z| = 1e4 neither overflows nor warns."""
    k = backend(name)
    z = np.array([[1e4, 0.0, -1e4], [-1e4, 1e4, 0.0]], dtype=dtype)
    labels = np.array([0, 2])
    zb = np.array([1e4, -1e4, 1e4], dtype=dtype)
    yb = np.array([1.0, 0.0, 0.0], dtype=dtype)
    with warnings.catch_warnings(), np.errstate(**FP_RAISE):
        warnings.simplefilter("error")
        ce = k.cross_entropy(z, labels)
        g = k.cross_entropy_gradient(z, labels)
        bce = k.binary_cross_entropy(zb, yb)
        gb = k.binary_cross_entropy_gradient(zb, yb)
    # Row 0: label 0 holds the largest logit: log sum e^(z - 1e4) = log 1 = 0, so 0.
    # Row 1: label 2 has z = 0, 1e4 below the max: 1e4 + log(1 + 2 e^-1e4) = 1e4.
    # Mean 5000.
    assert ce == 5000.0, (name, ce)
    # softmax rows (1, 0, 0) and (0, 1, 0); minus onehot, over m = 2.
    want = np.array([[0, 0, 0], [0, 0.5, -0.5]], dtype=dtype)
    np.testing.assert_array_equal(g, want, err_msg=name)
    # BCE: the two right ones cost log1p(e^-1e4) = 0; (z=1e4, y=0) costs 1e4. Mean 1e4/3.
    assert bce == pytest.approx(1e4 / 3, rel=1e-15), (name, bce)
    # gradient (sigmoid - y) / 3: (1 - 1, 0 - 0, 1 - 0) / 3.
    np.testing.assert_array_equal(gb, np.array([0, 0, 1 / 3], dtype=dtype), err_msg=name)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ALL_BACKENDS)
def test_nan_in_logits_propagates(name, dtype):
    k = backend(name)
    z = np.array([[0.5, np.nan, -1.0], [2.0, 1.0, 0.0]], dtype=dtype)
    labels = np.array([0, 1])
    assert np.isnan(k.cross_entropy(z, labels)), name
    assert np.isnan(k.cross_entropy(z, onehot(labels, 3, dtype))), name
    g = k.cross_entropy_gradient(z, labels)
    assert np.all(np.isnan(g[0])) and np.all(np.isfinite(g[1])), name
    assert np.isnan(k.binary_cross_entropy(z, np.zeros_like(z))), name
    gb = k.binary_cross_entropy_gradient(z, np.zeros_like(z))
    np.testing.assert_array_equal(np.isnan(gb), np.isnan(z), err_msg=name)
    assert np.isnan(k.mse(z, np.zeros_like(z))), name
    np.testing.assert_array_equal(
        np.isnan(k.mse_gradient(z, np.zeros_like(z))), np.isnan(z), err_msg=name
    )
