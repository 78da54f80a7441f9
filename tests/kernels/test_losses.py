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
    U64,
    arrays,
    assert_exact,
    assert_within,
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
    ulp,
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


@pytest.mark.parametrize("kind", ["ce", "sparse"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", COMPILED)
def test_softmax_cross_entropies_equal_the_reference_bit_for_bit(name, dtype, kind):
    """exp and log of the softmax rows are NumPy's own float64 loops in every backend and
    the row sums are pairwise as np.sum (docs/spec.md §11, rule 1), so the loss values
    and gradients are the reference's exactly, weighted or not. The shapes cross the
    kernels' blocks: PW_BLOCK (128) rows, 256 values a call of the exp loop, rows wider
    than either."""
    ref, mine = backend("numpy"), backend(name)

    @given(
        m=st.integers(1, 300),
        k=st.sampled_from([1, 2, 3, 10, 85, 129, 257, 300]),
        scale=st.sampled_from([1e-3, 1.0, 30.0, 800.0]),
        weighted=st.booleans(),
        seed=st.integers(0, 2**32 - 1),
    )
    def prop(m, k, scale, weighted, seed):
        rng = np.random.default_rng(seed)
        z = (rng.standard_normal((m, k)) * scale).astype(dtype)
        labels = rng.integers(0, k, m)
        w = rng.random(m) + 0.05 if weighted else np.zeros(0)
        if kind == "sparse":
            loss, grad, y = "sparse_cross_entropy", "sparse_cross_entropy_gradient", labels
        else:
            loss, grad = "cross_entropy", "cross_entropy_gradient"
            y = soft_targets(rng, m, k, dtype) if seed % 2 else onehot(labels, k, dtype)
        assert getattr(mine, loss)(z, y, w) == getattr(ref, loss)(z, y, w)
        got, want = np.empty_like(z), np.empty_like(z)
        getattr(mine, grad)(z, y, got, w)
        getattr(ref, grad)(z, y, want, w)
        assert_exact(got, want, case_id(name, dtype, kind, (m, k), weighted, seed))

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


# --- sample weights (docs/spec.md §4, "Sample weights") -------------------------------

# (family, value method, gradient method, target name) of each weighted case
WEIGHTED = {
    "mse": ("mse", "mse_gradient", "y_pred", "y"),
    "poisson": ("poisson", "poisson_gradient", "z", "y"),
    "bce": ("binary_cross_entropy", "binary_cross_entropy_gradient", "z", "y"),
    "bce_rows": ("binary_cross_entropy", "binary_cross_entropy_gradient", "z", "y"),
    "ce_onehot": ("cross_entropy", "cross_entropy_gradient", "z", "y"),
    "ce_soft": ("cross_entropy", "cross_entropy_gradient", "z", "y"),
    "ce_labels": ("cross_entropy", "cross_entropy_gradient", "z", "y"),
    "sparse": ("sparse_cross_entropy", "sparse_cross_entropy_gradient", "z", "labels"),
}


def sample_weights(rng, m, zeros=True):
    """Weights over three decades with zeros among them (zero weights are allowed)."""
    w = rng.gamma(0.6, 2.0, m) * 10.0 ** rng.integers(-1, 2, m)
    if zeros and m > 2:
        w[:: max(2, m // 3)] = 0.0
        w[1] = max(w[1], 0.5)  # never all zero
    return w


def _row_magnitudes(kind, z, y):
    """Per sample, a bound on the sum of |terms| of its loss (float64), and the
    gradient's operand magnitudes |p| + |y| per element (for the ULP bounds)."""
    z2 = np.asarray(z, np.float64).reshape(np.shape(z)[0], -1)
    with np.errstate(all="ignore"):
        if kind in ("mse",):
            d = z2 - np.asarray(y, np.float64).reshape(z2.shape)
            return (d * d).sum(axis=1), None
        if kind == "poisson":
            t = np.asarray(y, np.float64).reshape(z2.shape)
            e = np.exp(z2)
            return (e + np.abs(t * z2)).sum(axis=1), e + np.abs(t)
        if kind.startswith("bce"):
            t = np.asarray(y, np.float64).reshape(z2.shape)
            c = np.log1p(np.exp(-np.abs(z2)))
            s = 1 / (1 + np.exp(-z2))
            return (np.abs(z2) * (1 + np.abs(t)) + c).sum(axis=1) + 1, s + np.abs(t)
        shifted, log_s, p = _ce_parts(z2)
        if kind in ("ce_labels", "sparse"):
            t = np.zeros_like(p)
            t[np.arange(p.shape[0]), np.asarray(y)] = 1
        else:
            t = np.asarray(y, np.float64)
        mag = (np.abs(t) * (np.abs(shifted) + np.abs(log_s))).sum(axis=1) + 1 + np.abs(log_s[:, 0])
        return mag, p + np.abs(t)


def _ce_parts(z):
    x = np.asarray(z, np.float64)
    shifted = x - x.max(axis=1, keepdims=True)
    e = np.exp(shifted)
    s = e.sum(axis=1, keepdims=True)
    return shifted, np.log(s), e / s


def check_weighted(kind, actual, expected, z, y, w, what, err):
    """mse is exact (same squares, same pairwise order, same division); the others
    carry the unweighted kernels' per-term ULP differences (exp, log, the row sums'
    order: (2k + 8) u64 of each term's magnitude), weighted by w_i / S, plus the
    weighted sum's order and the final rounding."""
    m = np.shape(z)[0]
    k = int(np.size(z) // m)
    if kind == "mse":
        if what == "value":
            assert actual == expected, f"{err}: {actual!r} != {expected!r}"
        else:
            assert_exact(actual, expected, err)
        return
    S = np.sum(w)
    mag, grad_mag = _row_magnitudes(kind, z, y)
    u = (2 * k + 8) * U64
    with np.errstate(all="ignore"):
        if what == "value":
            bound = (u * np.sum(w * mag) + 2 * m * U64 * np.sum(w * mag)) / S + 4 * np.spacing(
                abs(expected)
            )
        else:
            e = np.asarray(expected)
            wi = w.reshape(m, 1)
            g = u * wi * grad_mag / S
            bound = g.reshape(e.shape) + 2 * ulp(e, e.dtype)
    assert_within(actual, expected, bound, err)


def run_weighted(name, kind, z, y, w, in_layout, out_layout, err):
    value, gradient, zname, yname = WEIGHTED[kind]
    args = {zname: z, yname: y, "sample_weight": w}
    actual, expected = run_pair(name, value, args, in_layout=in_layout)
    check_weighted(kind, actual["result"], expected["result"], z, y, w, "value", f"{value} {err}")
    actual, expected = run_pair(
        name, gradient, args, outputs=("out",), in_layout=in_layout, out_layout=out_layout
    )
    check_weighted(kind, actual["out"], expected["out"], z, y, w, "gradient", f"{gradient} {err}")


@pytest.mark.parametrize("in_layout,out_layout", LAYOUT_PAIRS)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", COMPILED)
def test_weighted_loss_layouts(name, dtype, kind, in_layout, out_layout):
    rng = np.random.default_rng(30)
    _, z, y = layout_inputs(kind, dtype, rng)
    w = sample_weights(rng, z.shape[0])
    run_weighted(name, kind, z, y, w, in_layout, out_layout, case_id(name, dtype, kind))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", COMPILED)
def test_weighted_loss_large(name, dtype, kind):
    """Past one pairwise block and (float32 mse) NumPy's 8192-value cast buffers."""
    m, k = (20, 7) if SMALL else (4099, 33)
    rng = np.random.default_rng(31)
    _, z, y = layout_inputs(kind, dtype, rng, m, k)
    w = sample_weights(rng, m)
    run_weighted(name, kind, z, y, w, "C", None, case_id(name, dtype, kind, (m, k)))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ALL_BACKENDS)
def test_unit_weights_give_the_unweighted_bits(name, dtype, kind):
    """w = 1: every product w_i l_i is l_i, S = m exactly, so value and gradient are the
    unweighted kernels' bit for bit (mse's float32 gradient: one division in float64
    rounded to float32 is the float32 division, sizes below 2**24)."""
    m, k = (20, 7) if SMALL else (1031, 9)
    rng = np.random.default_rng(32)
    _, z, y = layout_inputs(kind, dtype, rng, m, k)
    value, gradient, zname, yname = WEIGHTED[kind]
    k_ = backend(name)
    ones = np.ones(z.shape[0])
    v1 = getattr(k_, value)(**{zname: z, yname: y, "sample_weight": ones})
    v0 = getattr(k_, value)(**{zname: z, yname: y})
    assert v1 == v0 or (np.isnan(v1) and np.isnan(v0))
    g1 = getattr(k_, gradient)(**{zname: z, yname: y, "sample_weight": ones})
    g0 = getattr(k_, gradient)(**{zname: z, yname: y})
    np.testing.assert_array_equal(g1, g0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ALL_BACKENDS)
def test_weighted_loss_formula(name, dtype):
    """The contract by hand: sum_i w_i l_i / S and w_i dl_i / S (mse and poisson over
    S k), against the unweighted kernels applied row by row."""
    rng = np.random.default_rng(33)
    m, k = 7, 3
    z = rng_array(rng, (m, k), dtype, scale=2.0)
    y = rng_array(rng, (m, k), dtype)
    w = sample_weights(rng, m)
    K = backend(name)
    rows = np.array([K.mse(z[i], y[i]) for i in range(m)])
    assert K.mse(z, y, sample_weight=w) == pytest.approx(np.sum(w * rows) / np.sum(w), rel=1e-14)
    g = K.mse_gradient(z, y, sample_weight=w)
    want = 2 * w[:, None] * (z.astype(np.float64) - y) / (np.sum(w) * k)
    np.testing.assert_allclose(g, want.astype(dtype), rtol=4 * np.finfo(dtype).eps)
    labels = rng.integers(0, k, m)
    rows = np.array([K.cross_entropy(z[i : i + 1], labels[i : i + 1]) for i in range(m)])
    got = K.cross_entropy(z, labels, sample_weight=w)
    assert got == pytest.approx(np.sum(w * rows) / np.sum(w), rel=1e-12)
    # a zero weight: that sample has no gradient
    g = K.cross_entropy_gradient(z, labels, sample_weight=w)
    assert not np.any(g[w == 0])


@pytest.mark.parametrize("name", ALL_BACKENDS)
@pytest.mark.parametrize(
    "weights, error, match",
    [
        (np.ones(5), ValueError, r"sample_weight must have one weight per sample: shape \(6,\)"),
        (np.ones((6, 1)), ValueError, r"sample_weight must be a 1-D array"),
        (np.r_[-1.0, np.ones(5)], ValueError, r"sample_weight must be non-negative"),
        (np.r_[np.nan, np.ones(5)], ValueError, r"sample_weight contains NaN or infinity"),
        (np.zeros(6), ValueError, r"sample_weight must contain at least one non-zero"),
        (np.array(list("abcdef")), TypeError, r"sample_weight must hold real numbers"),
    ],
)
def test_bad_sample_weights_are_refused_by_the_checked_kernels(name, weights, error, match):
    z = np.zeros((6, 3))
    K = backend(name)
    for call in (
        lambda: K.mse(z, z, sample_weight=weights),
        lambda: K.poisson_gradient(z, z, sample_weight=weights),
        lambda: K.binary_cross_entropy(z, z, sample_weight=weights),
        lambda: K.cross_entropy_gradient(z, np.zeros(6, np.int64), sample_weight=weights),
        lambda: K.sparse_cross_entropy(z, np.zeros(6, np.int64), sample_weight=weights),
    ):
        with pytest.raises(error, match=match):
            call()
