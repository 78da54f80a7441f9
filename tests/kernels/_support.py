"""Shared machinery of the kernel equivalence suite: backends, layouts, comparisons.

Every compiled backend is compared with the NumPy reference (``fastnn.backend("numpy")``)
through the public :class:`fastnn.Backend` methods, so the checks cover the copies and
write-backs the Backend layer does for non-contiguous arrays as well as the kernels.

Tolerances (docs/spec.md §11, "Equivalence rules")
==================================================

u = unit roundoff of a dtype (2**-24 for float32, 2**-53 for float64); U64 is the
float64 one, used where the contract evaluates in float64 whatever the array dtype;
ulp(x) = np.spacing(|x|) in the output dtype; k = row length (classes), m = rows,
n = number of terms. Non-finite values are never inside a tolerance: NaN must appear
exactly where the reference has NaN, +-inf exactly where it has the same infinity.

1. Exact, ``assert_exact`` (0 ULP via ``assert_array_max_ulp(maxulp=0)``, NaN at the
   same places, same sign of zero: bit for bit).
   identity, step, relu, leaky_relu and their derivatives; mse_gradient; dropout;
   every optimizer update (param and state, step after step); scale_inplace;
   activation_backward for identity/step/relu/leaky_relu and for sigmoid/tanh (from
   the saved a); the dense bias add; z, dw and db of the csr kernels (§2.1's loops);
   batch_norm_eval (only the correctly rounded -, *, sqrt, / in float64, one
   rounding); out = gamma x_hat + beta given x_hat.
   Why: docs/spec.md §5, the same operations in the same order in the array dtype, the
   scalars computed in float64 and cast once, no FMA: nothing is left to differ.
2. Exact products: z = x @ w (+ b), dw = x.T @ dz, dx = dz @ w.T, each compared with
   the same SciPy ?gemm call on the kernel's own operands.
   Why: every backend calls the same BLAS routine with the same operands.
3-5. Activations: each row of fastnn.registry.ACTIVATIONS states the bound of g, of g'
   and of activation_backward (``activation_rule``, ``check_activation``):
   3. ULP bounds (``assert_ulp``): 2 for sigmoid, tanh, elu, selu and elu's and
      selu's g' (exp/expm1/tanh from different libraries, NumPy's SIMD loops and
      glibc, each within 1 ULP of exact); 4 for silu, 8 for mish (a 1-ULP difference
      of e^-|z| amplified by their ratios); gelu is exact (SciPy's erfc everywhere).
      float32 is evaluated in float64 and rounded once.
   4. activation_backward: one ULP more than g' where g' comes from z through a
      transcendental (g' is rounded to the dtype, then multiplied by da).
   5. Cancellation, the ULP bound or |diff| <= derivative_atol * U64: 8 for sigmoid's
      s (1 - s) and tanh's 1 - t^2, 16 for gelu's, silu's and mish's g' (sums of
      terms of size about 1 that cancel near a root of g'): a 1-2 ULP difference in
      the terms is an absolute difference of a few U64, many ULP of a result near 0.
6. Summation order, ``sum_bound(n, sum|t|) = 2 n u sum|t|``: two orders of the same n
   terms (NumPy's pairwise sum, a kernel's row-after-row loop) are each within
   (n - 1) u sum|t| of the exact sum, so they differ by at most twice that.
   Used, plus the roundings that follow, by:
   - softmax: |diff| <= 2 ulp(p) + p (2k + 2) U64 (row sum of k positive terms
     in float64, plus 2 ULP of exp);
   - softmax_backward: |a| (sum_bound(k, sum|da a|) + ulp(da - S)) + 2 ulp;
   - db = dz.sum(0): sum_bound(m, sum|dz|) in the array dtype (NumPy sums one column
     pairwise, several columns row after row);
   - squared_norm and the loss means (float64; binary cross-entropy sums the k
     outputs of a row, then averages the rows): sum_bound / n plus the per-term
     differences of exp/log (``check_mse``, ``check_bce``, ``check_ce``,
     ``check_sparse_ce``);
   - batch-norm statistics and gradients (float64 column sums): ``bn_train_bounds``,
     ``bn_backward_bounds`` propagate the sum bounds through the formulas.
7. Cross-entropy and binary cross-entropy gradients (p - y) / m:
   |diff| <= ((2k + 4) U64 p + 2 U64 (p + |y|)) / m + 2 ulp (k = 1 and 6 U64 for
   binary cross-entropy). Why: p - y cancels when y is near p (one-hot targets), so
   the bound is in ulp of the operands p and y, not of the result.

Finite differences and the PyTorch twin have their own tolerances, stated where they
are used (tests/reference/).
"""

from __future__ import annotations

import os
import warnings
from contextlib import contextmanager

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import fastnn
from fastnn import registry

# --- backends -----------------------------------------------------------------------

REFERENCE = "numpy"
COMPILED = ("numba", "cython")
ALL_BACKENDS = (REFERENCE,) + COMPILED
DTYPES = (np.float32, np.float64)

# NUMBA_DISABLE_JIT runs (tests/kernels/test_numba_python_mode.py) set this so that the
# pure-Python kernel loops only see small arrays.
SMALL = os.environ.get("FASTNN_TEST_SMALL", "") not in ("", "0")


def backend(name: str) -> fastnn.Backend:
    """The backend under test. A compiled backend whose modules are missing raises
    here, so its tests fail (CI builds every backend: missing is a failure)."""
    return fastnn.backend(name)


def reference() -> fastnn.Backend:
    return fastnn.backend(REFERENCE)


# --- tolerances (see the table in the module docstring) ------------------------------

TRANSCENDENTAL_ULP = 2
U64 = np.finfo(np.float64).eps / 2


def unit_roundoff(dtype) -> float:
    return float(np.finfo(dtype).eps) / 2


def sum_bound(n, abs_sum, dtype):
    """Largest difference between two summation orders of n terms whose absolute
    values add up to ``abs_sum``: each order is within (n - 1) u abs_sum of the exact
    sum, so two orders differ by at most 2 n u abs_sum."""
    return 2.0 * n * unit_roundoff(dtype) * np.asarray(abs_sum, dtype=np.float64)


def ulp(x, dtype) -> np.ndarray:
    """Spacing of |x| in ``dtype`` (as float64), finite x only."""
    with np.errstate(all="ignore"):
        return np.spacing(np.abs(np.asarray(x, dtype=dtype))).astype(np.float64)


# --- layouts --------------------------------------------------------------------------

IN_LAYOUTS = ("C", "C_readonly", "F", "strided")
OUT_LAYOUTS = (None, "C", "F", "strided")
# The deterministic layout tests run these (input, output) pairs rather than all 16:
# every input layout and every output layout twice, contiguous and not mixed both ways.
# The hypothesis properties draw any pair.
LAYOUT_PAIRS = [
    ("C", None),
    ("C_readonly", "C"),
    ("F", "F"),
    ("strided", "strided"),
    ("C", "strided"),
    ("F", None),
    ("strided", "C"),
    ("C_readonly", "F"),
]
SENTINEL = 8675309.0  # prefills caller-provided outputs: an unwritten element shows


def _strided_index(ndim):
    """Every other element, the last axis walked backwards (negative strides)."""
    return tuple(slice(1, None, 2) for _ in range(ndim - 1)) + (slice(-2, None, -2),)


def laid_out(arr, layout):
    """A copy of ``arr`` with the same values in memory layout ``layout``:
    "C", "C_readonly" (C-contiguous, not writeable), "F" (Fortran order) or "strided"
    (a non-contiguous view with negative strides into a larger SENTINEL-filled buffer)."""
    arr = np.asarray(arr)
    if layout == "C":
        return np.array(arr, order="C", copy=True)
    if layout == "C_readonly":
        out = np.array(arr, order="C", copy=True)
        out.flags.writeable = False
        return out
    if layout == "F":
        return np.array(arr, order="F", copy=True)
    if layout == "strided":
        parent = np.full(tuple(2 * n + 1 for n in arr.shape), SENTINEL, dtype=arr.dtype)
        view = parent[_strided_index(arr.ndim)]
        view[...] = arr
        return view
    raise ValueError(layout)


def out_buffer(shape, dtype, layout):
    """A caller-provided output prefilled with SENTINEL, in ``layout``."""
    return laid_out(np.full(shape, SENTINEL, dtype=dtype), layout)


def assert_gaps_untouched(arr, name):
    """A strided output's parent buffer holds SENTINEL outside the view."""
    parent = arr.base
    if layout_of(arr) != "strided" or parent is None:
        return
    mask = np.ones(parent.shape, dtype=bool)
    mask[_strided_index(parent.ndim)] = False
    if not np.all(parent[mask] == SENTINEL):
        raise AssertionError(
            f"{name}: memory between the elements of a strided output was overwritten"
        )


def layout_of(arr):
    if arr.flags.c_contiguous:
        return "C"
    if arr.flags.f_contiguous:
        return "F"
    return "strided"


def lay_out_all(arrays: dict, layout, *, keep_writeable=()):
    """``arrays`` (name -> ndarray) converted to ``layout``; names in keep_writeable
    (in-place buffers) never become read-only."""
    res = {}
    for name, a in arrays.items():
        lay = layout
        if lay == "C_readonly" and name in keep_writeable:
            lay = "C"
        res[name] = laid_out(a, lay)
    return res


# --- comparisons -------------------------------------------------------------------


def _ordered_int(x: np.ndarray) -> np.ndarray:
    """Float bits mapped to integers that are monotonic in the float value (-0 == +0)."""
    x = np.asarray(x)
    ity = np.int32 if x.dtype == np.float32 else np.int64
    bits = x.view(ity).astype(np.int64)
    imin = np.iinfo(ity).min
    return np.where(bits < 0, imin - bits, bits)


def ulp_distance(a, b) -> np.ndarray:
    """Number of representable values between a and b (float64 array; finite inputs)."""
    ia, ib = _ordered_int(a), _ordered_int(b)
    same_sign = (ia >= 0) == (ib >= 0)
    with np.errstate(over="ignore"):
        near = np.abs(ia - ib).astype(np.float64)
    far = np.abs(ia).astype(np.float64) + np.abs(ib).astype(np.float64)
    return np.where(same_sign, near, far)


def _check_arrays(actual, expected, err_msg):
    assert isinstance(actual, np.ndarray), f"{err_msg}: got {type(actual).__name__}"
    expected = np.asarray(expected)
    assert actual.shape == expected.shape, (
        f"{err_msg}: shape {actual.shape} != reference {expected.shape}"
    )
    assert actual.dtype == expected.dtype, (
        f"{err_msg}: dtype {actual.dtype} != reference {expected.dtype}"
    )
    return np.asarray(actual), expected


def assert_same_nonfinite(actual, expected, err_msg=""):
    """NaN exactly where the reference has NaN, +-inf exactly where it has the same."""
    a, e = np.asarray(actual), np.asarray(expected)
    an, en = np.isnan(a), np.isnan(e)
    if not np.array_equal(an, en):
        idx = np.argwhere(an != en)[:5].tolist()
        raise AssertionError(
            f"{err_msg}: NaN positions differ from the reference at "
            f"{idx} (actual {a[an != en][:5]}, reference {e[an != en][:5]})"
        )
    ai, ei = np.isinf(a), np.isinf(e)
    bad = (ai | ei) & ~((a == e) | an)
    if np.any(bad):
        idx = np.argwhere(bad)[:5].tolist()
        raise AssertionError(
            f"{err_msg}: infinities differ from the reference at {idx} "
            f"(actual {a[bad][:5]}, reference {e[bad][:5]})"
        )


def _report(a, e, bad, extra, err_msg, what):
    idx = np.argwhere(bad)
    first = tuple(idx[0])
    return (
        f"{err_msg}: {what} at {len(idx)} of {a.size} elements; first {list(first)}: "
        f"actual {a[first]!r}, reference {e[first]!r}{extra(first)}"
    )


def assert_exact(actual, expected, err_msg=""):
    """Bit for bit: NaN at the same places, 0 ULP elsewhere, same sign of zero."""
    a, e = _check_arrays(actual, expected, err_msg)
    assert_same_nonfinite(a, e, err_msg)
    keep = ~np.isnan(e)
    try:
        np.testing.assert_array_max_ulp(a[keep], e[keep], maxulp=0)
    except AssertionError as exc:
        bad = keep & (a != e)
        raise AssertionError(
            _report(a, e, bad, lambda i: "", err_msg, f"not bit-identical ({exc})")
        ) from None
    sign = keep & (np.signbit(a) != np.signbit(e))
    if np.any(sign):
        raise AssertionError(_report(a, e, sign, lambda i: "", err_msg, "sign of zero differs"))


def assert_ulp(actual, expected, maxulp, err_msg="", atol=0.0):
    """Within ``maxulp`` ULP of the reference, or within the absolute ``atol``
    (scalar or per element) where cancellation makes ULP meaningless."""
    a, e = _check_arrays(actual, expected, err_msg)
    assert_same_nonfinite(a, e, err_msg)
    fin = np.isfinite(e)
    dist = np.zeros(e.shape)
    dist[fin] = ulp_distance(a[fin], e[fin])
    with np.errstate(all="ignore"):
        diff = np.abs(a.astype(np.float64) - e.astype(np.float64))
    atol = np.broadcast_to(np.asarray(atol, dtype=np.float64), e.shape)
    bad = fin & (dist > maxulp) & ~(diff <= atol)
    if np.any(bad):
        raise AssertionError(
            _report(
                a,
                e,
                bad,
                lambda i: f", {dist[i]:g} ULP, |diff| {diff[i]:.3g} > atol {atol[i]:.3g}",
                err_msg,
                f"more than {maxulp} ULP from the reference",
            )
        )


def assert_within(actual, expected, bound, err_msg=""):
    """|actual - expected| <= bound elementwise (bound from the summation order)."""
    scalar = np.ndim(expected) == 0 and not isinstance(actual, np.ndarray)
    if scalar:
        assert isinstance(actual, float), (
            f"{err_msg}: expected a Python float, got {type(actual).__name__}"
        )
        a, e = np.asarray(actual), np.asarray(expected)
    else:
        a, e = _check_arrays(actual, expected, err_msg)
    assert_same_nonfinite(a, e, err_msg)
    fin = np.isfinite(e)
    with np.errstate(all="ignore"):
        diff = np.abs(a.astype(np.float64) - e.astype(np.float64))
    bound = np.broadcast_to(np.asarray(bound, dtype=np.float64), e.shape)
    bad = fin & ~(diff <= bound)
    if np.any(bad):
        a1, e1 = np.atleast_1d(a), np.atleast_1d(e)
        d1, b1 = np.atleast_1d(diff), np.atleast_1d(bound)
        raise AssertionError(
            _report(
                a1,
                e1,
                np.atleast_1d(bad),
                lambda i: f", |diff| {d1[i]:.3g} > bound {b1[i]:.3g}",
                err_msg,
                "outside the summation-order bound",
            )
        )


# --- the rule of each kernel (the table above, as code) ----------------------------


def activation_rule(kernel: str) -> tuple[int, int]:
    """(ULP bound, absolute bound in U64) of an elementwise activation kernel
    (``<name>`` or ``<name>_derivative``), from fastnn.registry (docs/spec.md §11)."""
    name = kernel.removesuffix("_derivative")
    row = registry.activation(name)
    if kernel != name:
        return row.derivative_ulp, row.derivative_atol
    return row.ulp, 0


ELEMENTWISE = [
    kernel
    for row in registry.ACTIVATIONS
    if not row.rowwise
    for kernel in (row.name, f"{row.name}_derivative")
]
EXACT = [k for k in ELEMENTWISE if activation_rule(k) == (0, 0)]
TRANSCENDENTAL = [k for k in ELEMENTWISE if activation_rule(k)[0] and not activation_rule(k)[1]]
CANCELLING = [k for k in ELEMENTWISE if activation_rule(k)[1]]  # 1 - s, Phi + z phi...


def check_elementwise(kernel, actual, expected, err):
    """The docs/spec.md §11 rule for one elementwise kernel (its registry row).

    Cancelling derivatives (s (1 - s), 1 - t^2, Phi(z) + z phi(z)...) are sums of terms
    of size about 1 whose values the backends may have 1-2 ULP apart: after the
    cancellation that is an absolute difference of a few U64, many ULP of a small result.
    """
    maxulp, atol = activation_rule(kernel)
    if (maxulp, atol) == (0, 0):
        assert_exact(actual, expected, err)
    else:
        assert_ulp(actual, expected, maxulp, err, atol=atol * U64)


def check_softmax(actual, expected, err):
    """2 ULP of exp, plus the row sum of k positive terms in another order:
    |dp| <= 2 ulp(p) + p (2k + 2) u64 (sum_bound relative to the sum, plus exp)."""
    e = np.asarray(expected)
    k = e.shape[-1]
    with np.errstate(invalid="ignore"):
        bound = 2 * ulp(e, e.dtype) + np.abs(e.astype(np.float64)) * (2 * k + 2) * U64
    assert_within(actual, expected, bound, err)


def check_softmax_backward(actual, expected, a, da, err):
    """dz = a (da - S), S = sum_j da_j a_j summed in the array dtype: the kernel's S may
    differ by sum_bound(k, sum|da a|); da - S then rounds, and the product once more."""
    e = np.asarray(expected)
    dt = e.dtype
    a2, da2 = np.atleast_2d(a), np.atleast_2d(da)
    with np.errstate(all="ignore"):
        s = np.sum(da2 * a2, axis=1, keepdims=True)
        abs_s = np.sum(np.abs(da2.astype(np.float64) * a2), axis=1, keepdims=True)
        bound = np.abs(a2.astype(np.float64)) * (
            sum_bound(a2.shape[1], abs_s, dt) + ulp(da2 - s, dt)
        ) + 2 * ulp(np.atleast_2d(e), dt)
    assert_within(actual, expected, bound.reshape(e.shape), err)


def check_activation(name, kind, actual, expected, err, a=None, da=None):
    """activation_forward (kind "forward") or activation_backward ("backward").

    The backward's g' from z is rounded to the array dtype, then times da: one more
    rounding than g' alone (Activation.backward_ulp), and a cancelling g' keeps its
    absolute bound, times |da|.
    """
    row = registry.activation(name)
    if name == "softmax":
        if kind == "forward":
            check_softmax(actual, expected, err)
        else:
            check_softmax_backward(actual, expected, a, da, err)
        return
    maxulp = row.ulp if kind == "forward" else row.backward_ulp
    if maxulp == 0:
        assert_exact(actual, expected, err)
        return
    atol = 0.0
    if kind == "backward" and row.derivative_atol:
        with np.errstate(all="ignore"):
            atol = row.derivative_atol * U64 * np.abs(np.asarray(da, np.float64))
    assert_ulp(actual, expected, maxulp, err, atol=atol)


def _loss_bound(expected, per_term, abs_terms, n):
    """Bound on a mean of n float64 terms: the per-term differences (``per_term``,
    summed), the order of the float64 sum (sum_bound), then the division's rounding."""
    with np.errstate(all="ignore"):
        return (np.sum(per_term) + sum_bound(n, np.sum(abs_terms), np.float64)) / n + 2 * ulp(
            expected, np.float64
        )


def check_mse(actual, expected, y_pred, y, err):
    """L = mean(d * d), d = y_pred - y and its square in the array dtype (identical
    in every backend), averaged in float64: only the summation order may differ."""
    with np.errstate(all="ignore"):
        d = np.asarray(y_pred) - np.asarray(y)
        t = (d * d).astype(np.float64).reshape(-1)
    assert_within(actual, expected, _loss_bound(expected, 0.0, t, t.size), err)


def check_poisson(actual, expected, z, y, err):
    """L = mean(e^z - y z), terms in float64: each term differs by e^z's 2 ULP (two
    libraries' exp), then the float64 sum's order and the division."""
    with np.errstate(all="ignore"):
        x, t = np.asarray(z, np.float64).reshape(-1), np.asarray(y, np.float64).reshape(-1)
        e = np.exp(x)
        per_term = 2 * ulp(e, np.float64)
        terms = np.abs(e) + np.abs(t * x)
    assert_within(actual, expected, _loss_bound(expected, per_term, terms, x.size), err)


def check_poisson_gradient(actual, expected, z, err):
    """(e^z - y) / size in float64, rounded once: e^z's 2 ULP (absolute, before the
    cancellation with y) and the final rounding, 2 ULP of the result."""
    e = np.asarray(expected)
    with np.errstate(all="ignore"):
        ez = np.exp(np.asarray(z, np.float64))
        bound = 2 * ulp(ez, np.float64) / e.size + 2 * ulp(e, e.dtype)
    assert_within(actual, expected, bound, err)


def _bce_parts(z, y):
    z, y = np.asarray(z, np.float64), np.asarray(y, np.float64)
    with np.errstate(all="ignore"):
        c = np.log1p(np.exp(-np.abs(z)))
        t = np.maximum(z, 0) - z * y + c
        e = np.exp(-np.abs(z))
        s = np.where(z >= 0, 1 / (1 + e), e / (1 + e))
    return t, c, s


def check_bce(actual, expected, z, y, err):
    """mean over the m rows of sum_k t_ik, t = max(z,0) - z y + log1p(e^-|z|) in float64:
    log1p(e^-|z|) may differ by a few ULP between libms (8 u64 c), the last addition
    rounds (2 u64 |t|); then the order of the row sums over k and of the mean over m."""
    t, c, _ = _bce_parts(z, y)
    t2, c2 = t.reshape(t.shape[0], -1), c.reshape(t.shape[0], -1)
    m, k = t2.shape
    with np.errstate(all="ignore"):
        per_term = 8 * U64 * c2 + 2 * U64 * np.abs(t2)
        row_order = sum_bound(k, np.abs(t2).sum(axis=1), np.float64)
        rows = np.abs(t2.sum(axis=1))
    assert_within(
        actual, expected, _loss_bound(expected, np.sum(per_term) + np.sum(row_order), rows, m), err
    )


def check_bce_gradient(actual, expected, z, y, err):
    """(s - y) / m in float64, rounded once. s = sigmoid(z) may differ by 2 ULP of s
    (4 u64 |s|); s - y cancels when y is near s, so the bound is in ulp of the operands:
    6 u64 (|s| + |y|) / m, plus 2 ULP of the rounding to the array dtype."""
    e = np.asarray(expected)
    _, _, s = _bce_parts(z, y)
    m = np.shape(z)[0]
    bound = 6 * U64 * (np.abs(s) + np.abs(np.asarray(y, np.float64))) / m + 2 * ulp(e, e.dtype)
    assert_within(actual, expected, bound, err)


def _ce_parts(z):
    x = np.asarray(z, np.float64)
    with np.errstate(all="ignore"):
        shifted = x - x.max(axis=1, keepdims=True)
        e = np.exp(shifted)
        s = e.sum(axis=1, keepdims=True)
        return shifted, np.log(s), e / s


def check_ce_gradient(actual, expected, z, y, err):
    """(softmax(z) - y) / m: p carries the row sum's order (2k u64 p) and 2 ULP of exp
    (4 u64 p); p - y cancels near 1 (one-hot), so 2 u64 (|p| + |y|) is in ulp of the
    operands; /m and the rounding to the array dtype add 2 ULP of the result."""
    e = np.asarray(expected)
    m, k = np.shape(z)
    _, _, p = _ce_parts(z)
    y = np.asarray(y, np.float64)
    bound = ((2 * k + 4) * U64 * p + 2 * U64 * (p + np.abs(y))) / m + 2 * ulp(e, e.dtype)
    assert_within(actual, expected, bound, err)


def check_ce(actual, expected, z, y, err):
    """mean_i -sum_k y_ik (shifted_ik - log s_i): log s_i may differ by
    (2k + 4) u64 (1 + |log s_i|) (the row sum's order, exp and log), each product and
    the row sum over k by (2k + 2) u64 sum_k |y| (|shifted| + |log s|), then the mean."""
    m, k = np.shape(z)
    shifted, log_s, _ = _ce_parts(z)
    y = np.asarray(y, np.float64)
    with np.errstate(all="ignore"):
        delta = (2 * k + 4) * U64 * (1 + np.abs(log_s))
        mag = np.sum(np.abs(y) * (np.abs(shifted) + np.abs(log_s)), axis=1)
        r = -np.sum(y * (shifted - log_s), axis=1)
        per_row = np.sum(np.abs(y), axis=1) * delta[:, 0] + (2 * k + 2) * U64 * mag
    assert_within(actual, expected, _loss_bound(expected, per_row, np.abs(r), m), err)


def check_sparse_ce(actual, expected, z, labels, err):
    """mean_i log s_i - shifted_i[label_i]: log s_i as in check_ce, one subtraction."""
    m, k = np.shape(z)
    shifted, log_s, _ = _ce_parts(z)
    picked = shifted[np.arange(m), np.asarray(labels)]
    with np.errstate(all="ignore"):
        r = log_s[:, 0] - picked
        per_row = (2 * k + 4) * U64 * (1 + np.abs(log_s[:, 0])) + 2 * U64 * (
            np.abs(log_s[:, 0]) + np.abs(picked)
        )
    assert_within(actual, expected, _loss_bound(expected, per_row, np.abs(r), m), err)


def bn_train_bounds(x, eps, momentum):
    """Bounds on batch_norm_train's outputs from the order of its float64 column sums.

    mean: sum_bound(m, sum|x|) / m plus its rounding. The squared deviations move by
    2 |x - mu| d_mean + d_mean^2 when the mean does, their sum by sum_bound. inv_std =
    (var + eps)^-1/2 moves by half var's relative change plus two roundings (sqrt, /).
    x_hat = (x - mu) inv_std by d_mean inv_std + |x - mu| d_inv, then one rounding to
    the array dtype. The running statistics move by momentum times their input's bound.
    """
    xw = np.asarray(x, np.float64)
    m = xw.shape[0]
    dt = np.asarray(x).dtype
    with np.errstate(all="ignore"):
        mean = xw.mean(axis=0)
        dev = xw - mean
        var = (dev**2).mean(axis=0)
        inv = 1 / np.sqrt(var + eps)
        d_mean = sum_bound(m, np.abs(xw).sum(axis=0), np.float64) / m + 2 * ulp(mean, np.float64)
        d_var = (
            2 * d_mean * np.abs(dev).mean(axis=0)
            + d_mean**2
            + sum_bound(m, (dev**2).sum(axis=0), np.float64) / m
            + 4 * U64 * var
        )
        d_inv = inv * (0.5 * d_var / (var + eps) + 4 * U64)
        x_hat = dev * inv
        return {
            "x_hat": d_mean * inv + np.abs(dev) * d_inv + 2 * U64 * np.abs(x_hat) + ulp(x_hat, dt),
            "inv_std": d_inv + ulp(inv, dt),
            "running_mean": momentum * d_mean + 4 * U64 * np.abs(mean) + ulp(mean, dt),
            "running_var": momentum * d_var * m / (m - 1)
            + 4 * U64 * np.abs(var) * m / (m - 1)
            + ulp(var * m / (m - 1), dt),
        }


def bn_backward_bounds(dout, x_hat, gamma, inv_std, expected):
    """dbeta = sum dout and dgamma = sum dout x_hat (float64, over the m rows) move by
    sum_bound; dx = (gamma inv_std / m)(m dout - dbeta - x_hat dgamma) cancels, so its
    bound is |gamma inv_std / m| (d_dbeta + |x_hat| d_dgamma + 4 u64 (|m dout| + |dbeta|
    + |x_hat dgamma|)); each result then rounds once to the array dtype."""
    d, xh = np.asarray(dout, np.float64), np.asarray(x_hat, np.float64)
    m = d.shape[0]
    dt = np.asarray(dout).dtype
    with np.errstate(all="ignore"):
        db = d.sum(axis=0)
        dg = (d * xh).sum(axis=0)
        d_db = sum_bound(m, np.abs(d).sum(axis=0), np.float64)
        d_dg = sum_bound(m, np.abs(d * xh).sum(axis=0), np.float64)
        c = np.abs(np.asarray(gamma, np.float64) * np.asarray(inv_std, np.float64) / m)
        dx = c * (
            d_db + np.abs(xh) * d_dg + 4 * U64 * (np.abs(m * d) + np.abs(db) + np.abs(xh * dg))
        )
        return {
            "dx": dx + ulp(expected["dx"], dt),
            "dgamma": d_dg + ulp(expected["dgamma"], dt),
            "dbeta": d_db + ulp(expected["dbeta"], dt),
        }


# --- running a case on a backend and on the reference -----------------------------


@contextmanager
def quiet_reference():
    """The reference is NumPy: inf - inf or overflow in extreme inputs make it warn.
    Its warnings are not what these comparisons check (tests/kernels/test_activations.py
    checks that large finite inputs raise none), so they are silenced around it only."""
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


def _copy_args(args):
    return {
        k: (np.array(v, copy=True) if isinstance(v, np.ndarray) else v) for k, v in args.items()
    }


def run_pair(
    name, method, args, *, outputs=(), inplace=(), in_layout="C", out_layout=None, out_shapes=None
):
    """Call ``method`` on backend ``name`` and on the reference with the same values.

    ``args``: keyword arguments (arrays C-contiguous, scalars). ``inplace``: names of
    argument arrays updated in place. ``outputs``: names of the output keywords, in
    the order the method returns them. The backend gets its arrays in ``in_layout``
    and, when ``out_layout`` is not None, caller-provided outputs in that layout.

    Returns ``(actual, expected)``, dicts mapping output / in-place names (and
    "result" for a float return) to values, after checking that read-only inputs were
    left unchanged and provided outputs are the arrays returned.
    """
    ref_args = _copy_args(args)
    with quiet_reference():
        ref_ret = getattr(reference(), method)(**ref_args)
    expected = _collect(ref_ret, ref_args, outputs, inplace)

    arrays = {k: v for k, v in args.items() if isinstance(v, np.ndarray)}
    scalars = {k: v for k, v in args.items() if not isinstance(v, np.ndarray)}
    laid = lay_out_all(arrays, in_layout, keep_writeable=inplace)
    before = {k: np.array(v, copy=True) for k, v in laid.items() if k not in inplace}
    given = {}
    if out_layout is not None:
        for o in outputs:
            shape = (out_shapes or {}).get(o, np.shape(expected[o]))
            given[o] = out_buffer(shape, expected[o].dtype, out_layout)
    ret = getattr(backend(name), method)(**laid, **scalars, **given)
    actual = _collect(ret, laid, outputs, inplace)

    for k, v in before.items():
        if not np.array_equal(laid[k], v, equal_nan=True):
            raise AssertionError(f"{name}.{method}: input {k!r} was modified")
    for o, buf in given.items():
        assert actual[o] is buf, f"{name}.{method}: did not return the given {o!r}"
        assert_gaps_untouched(buf, f"{name}.{method} {o!r}")
    for k in inplace:
        assert_gaps_untouched(laid[k], f"{name}.{method} {k!r}")
    return actual, expected


def _collect(ret, args, outputs, inplace):
    res = {k: args[k] for k in inplace}
    if len(outputs) == 1:
        res[outputs[0]] = ret
    elif len(outputs) > 1:
        assert isinstance(ret, tuple) and len(ret) == len(outputs), ret
        res.update(zip(outputs, ret))
    elif ret is not None:
        res["result"] = ret
    return res


def case_id(name, dtype, *extra):
    return " ".join([name, np.dtype(dtype).name, *map(str, extra)])


# --- hypothesis strategies ------------------------------------------------------

ODD_SIZES = (1, 3, 7, 17, 33)  # not a multiple of any SIMD width
MAX_SIDE = 12 if SMALL else 40


def sizes():
    """A vector length: the odd sizes, or any small length."""
    return st.one_of(
        st.sampled_from(ODD_SIZES if not SMALL else (1, 3, 7)), st.integers(1, MAX_SIDE)
    )


def shapes_1d():
    return sizes().map(lambda n: (n,))


def shapes_2d(min_rows=1):
    """(m, k) with one row, one column, and odd sizes among the draws."""
    side = sizes()
    return st.tuples(side, side).filter(lambda s: s[0] >= min_rows)


def shapes_any(min_rows=1):
    return st.one_of(shapes_1d(), shapes_2d(min_rows))


def finite_floats(dtype, bound=None, *, allow_subnormal=True):
    """Finite floats of ``dtype`` including signed zeros, subnormals and, without a
    ``bound``, the largest magnitudes."""
    width = 32 if dtype == np.float32 else 64
    kw = {}
    if bound is not None:
        kw = dict(min_value=-float(bound), max_value=float(bound))
    return st.floats(
        width=width, allow_nan=False, allow_infinity=False, allow_subnormal=allow_subnormal, **kw
    )


def any_floats(dtype):
    """Every float of ``dtype``: NaN, +-inf, signed zeros, subnormals, huge values."""
    width = 32 if dtype == np.float32 else 64
    return st.floats(width=width, allow_nan=True, allow_infinity=True, allow_subnormal=True)


def arrays(dtype, shape, elements):
    return hnp.arrays(np.dtype(dtype), shape, elements=elements)


# Magnitudes for kernels that reduce: large enough to exercise the exponent range,
# small enough that no summation order overflows where another does not.
REDUCTION_BOUND = {np.float32: 2.0**50, np.float64: 2.0**330}


def reduction_floats(dtype):
    return finite_floats(dtype, REDUCTION_BOUND[dtype])


def unit_floats(dtype):
    """Targets and probabilities: [0, 1], zeros and subnormals included."""
    return finite_floats(dtype, 1.0).map(abs)


def rng_array(rng, shape, dtype, scale=1.0):
    """Random normal values, rounded to dtype, for the deterministic layout tests."""
    return (rng.standard_normal(shape) * scale).astype(dtype)


def special_values(dtype):
    """One of each kind of nasty value of dtype, as a 1-D array."""
    fi = np.finfo(dtype)
    return np.array(
        [
            0.0,
            -0.0,
            fi.smallest_subnormal,
            -fi.smallest_subnormal,
            fi.tiny,
            -fi.tiny,
            fi.max,
            -fi.max,
            1.0,
            -1.0,
            0.5,
            -2.5,
            np.inf,
            -np.inf,
            np.nan,
        ],
        dtype=dtype,
    )
