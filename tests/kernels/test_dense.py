"""Dense layer forward and backward: each compiled backend against the NumPy reference.

Every backend multiplies through the same SciPy BLAS ?gemm with the same operands, so
the products are asserted bit for bit: z = x @ w + b (BLAS, then the exact bias add),
dw = x.T @ dz and dx = dz @ w.T computed on the kernel's own dz. The activation part
follows tests/kernels/test_activations.py; db is a column sum (see ``check_db``).
"""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fastnn._kernels import codes
from fastnn.reference.blas import gemm
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
    assert_within,
    backend,
    case_id,
    check_activation,
    laid_out,
    quiet_reference,
    reduction_floats,
    reference,
    rng_array,
    run_pair,
    sizes,
    sum_bound,
)

ACTIVATIONS = list(codes.ACTIVATION_CODES)


def check_forward(activation, actual, expected, err):
    assert_exact(actual["z"], expected["z"], "z " + err)
    check_activation(activation, "forward", actual["a"], expected["a"], "a " + err)


def check_db(db, dz, err):
    """db is dz summed over the m rows in the array dtype. docs/spec.md §2: row after row; NumPy's
    axis-0 sum does that for k >= 2 columns but sums pairwise when k == 1, so the
    reference is only within sum_bound(m, sum|dz|) of a row-by-row sum."""
    dz = np.asarray(dz)
    with quiet_reference():
        want = dz.sum(axis=0)
        bound = sum_bound(dz.shape[0], np.abs(dz.astype(np.float64)).sum(axis=0), dz.dtype)
    assert_within(db, want, bound, "db " + err)


def check_backward(activation, x, bwd, actual, expected, err):
    """dz by the activation rule; dw exactly the BLAS product of the kernel's own dz;
    db within the summation bound of the kernel's own dz."""
    check_activation(
        activation, "backward", actual["dz"], expected["dz"], "dz " + err, a=bwd["a"], da=bwd["da"]
    )
    dz = np.ascontiguousarray(actual["dz"])
    dw = np.empty((x.shape[1], dz.shape[1]), dtype=dz.dtype)
    with quiet_reference():
        gemm(np.ascontiguousarray(x), dz, dw, trans_a=True)
    assert_exact(actual["dw"], dw, "dw " + err)
    check_db(actual["db"], dz, err)


def make_layer(rng, dtype, m, n_in, n_out, activation):
    x = rng_array(rng, (m, n_in), dtype)
    w = rng_array(rng, (n_in, n_out), dtype, scale=1 / np.sqrt(n_in))
    b = rng_array(rng, (n_out,), dtype, scale=0.1)
    fwd = {"x": x, "w": w, "b": b, "activation": activation}
    with quiet_reference():
        z, a = reference().dense_forward(**fwd)
    da = rng_array(rng, (m, n_out), dtype)
    bwd = {"x": x, "z": z, "a": a, "da": da, "activation": activation}
    return fwd, bwd


@pytest.mark.parametrize("in_layout,out_layout", LAYOUT_PAIRS)
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", COMPILED)
def test_dense_layouts(name, dtype, activation, in_layout, out_layout):
    rng = np.random.default_rng(10)
    fwd, bwd = make_layer(rng, dtype, 7, 5, 3, activation)
    err = case_id(name, dtype, activation, in_layout, out_layout)
    actual, expected = run_pair(
        name, "dense_forward", fwd, outputs=("z", "a"), in_layout=in_layout, out_layout=out_layout
    )
    check_forward(activation, actual, expected, err)
    actual, expected = run_pair(
        name,
        "dense_backward",
        bwd,
        outputs=("dz", "dw", "db"),
        in_layout=in_layout,
        out_layout=out_layout,
    )
    check_backward(activation, fwd["x"], bwd, actual, expected, err)
    args = {"dz": bwd["da"], "w": fwd["w"]}
    actual, expected = run_pair(
        name,
        "dense_input_gradient",
        args,
        outputs=("dx",),
        in_layout=in_layout,
        out_layout=out_layout,
    )
    assert_exact(actual["dx"], expected["dx"], "dx " + err)


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", COMPILED)
def test_dense_property(name, dtype, activation):
    """Shapes with one row, one input, one output and odd sizes; values of every
    magnitude that no summation order overflows, zeros and subnormals included."""

    @given(
        data=st.data(),
        dims=st.tuples(sizes(), sizes(), sizes()),
        alpha=st.sampled_from((0.01, 0.1, 1.0)),
        in_layout=st.sampled_from(IN_LAYOUTS),
        out_layout=st.sampled_from(OUT_LAYOUTS),
    )
    def prop(data, dims, alpha, in_layout, out_layout):
        m, n_in, n_out = dims
        el = reduction_floats(dtype)
        x = data.draw(arrays(dtype, (m, n_in), el), "x")
        w = data.draw(arrays(dtype, (n_in, n_out), el), "w")
        b = data.draw(arrays(dtype, (n_out,), el), "b")
        da = data.draw(arrays(dtype, (m, n_out), el), "da")
        err = case_id(name, dtype, activation, dims, alpha, in_layout, out_layout)
        fwd = {"x": x, "w": w, "b": b, "activation": activation, "alpha": alpha}
        actual, expected = run_pair(
            name,
            "dense_forward",
            fwd,
            outputs=("z", "a"),
            in_layout=in_layout,
            out_layout=out_layout,
        )
        check_forward(activation, actual, expected, err)
        bwd = {
            "x": x,
            "z": expected["z"],
            "a": expected["a"],
            "da": da,
            "activation": activation,
            "alpha": alpha,
        }
        actual, expected = run_pair(
            name,
            "dense_backward",
            bwd,
            outputs=("dz", "dw", "db"),
            in_layout=in_layout,
            out_layout=out_layout,
        )
        check_backward(activation, x, bwd, actual, expected, err)
        actual, expected = run_pair(
            name,
            "dense_input_gradient",
            {"dz": da, "w": w},
            outputs=("dx",),
            in_layout=in_layout,
            out_layout=out_layout,
        )
        assert_exact(actual["dx"], expected["dx"], "dx " + err)

    prop()


@pytest.mark.parametrize("activation", ["relu", "tanh", "softmax"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", COMPILED)
def test_dense_large(name, dtype, activation):
    m, n_in, n_out = (9, 7, 5) if SMALL else (257, 67, 33)
    fwd, bwd = make_layer(np.random.default_rng(11), dtype, m, n_in, n_out, activation)
    err = case_id(name, dtype, activation, (m, n_in, n_out))
    actual, expected = run_pair(name, "dense_forward", fwd, outputs=("z", "a"))
    check_forward(activation, actual, expected, err)
    actual, expected = run_pair(name, "dense_backward", bwd, outputs=("dz", "dw", "db"))
    check_backward(activation, fwd["x"], bwd, actual, expected, err)
    actual, expected = run_pair(
        name, "dense_input_gradient", {"dz": bwd["da"], "w": fwd["w"]}, outputs=("dx",)
    )
    assert_exact(actual["dx"], expected["dx"], "dx " + err)


@pytest.mark.parametrize("layout", ["C", "F", "strided"])
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ALL_BACKENDS)
def test_dense_aliasing(name, dtype, activation, layout):
    """BRIEF: dense_forward's a may be z, dense_backward's dz may be da; the results
    equal those with separate buffers and land in the shared one."""
    k = backend(name)
    fwd, bwd = make_layer(np.random.default_rng(12), dtype, 6, 4, 5, activation)
    err = case_id(name, dtype, activation, layout)
    z_sep, a_sep = k.dense_forward(**fwd)
    buf = laid_out(np.zeros((6, 5), dtype), layout)
    z, a = k.dense_forward(**fwd, z=buf, a=buf)
    assert z is buf and a is buf, err
    assert_exact(buf, a_sep, "a=z " + err)

    dz_sep, dw_sep, db_sep = k.dense_backward(**bwd)
    da = laid_out(bwd["da"], layout)
    args = dict(bwd, da=da)
    dz, dw, db = k.dense_backward(**args, dz=da)
    assert dz is da, err
    assert_exact(dz, dz_sep, "dz=da " + err)
    assert_exact(dw, dw_sep, "dw with dz=da " + err)
    assert_exact(db, db_sep, "db with dz=da " + err)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ALL_BACKENDS)
def test_dense_nan_propagates(name, dtype):
    k = backend(name)
    fwd, bwd = make_layer(np.random.default_rng(13), dtype, 4, 3, 2, "relu")
    fwd["x"] = fwd["x"].copy()  # bwd keeps the finite x
    fwd["x"][1, 2] = np.nan
    z, a = k.dense_forward(**fwd)
    # x[1] feeds every output of row 1, through z = x @ w + b and relu(NaN) = NaN.
    assert np.all(np.isnan(z[1])) and np.all(np.isnan(a[1])), name
    assert np.all(np.isfinite(np.delete(a, 1, axis=0))), name
    bwd["da"][2, 1] = np.nan
    dz, dw, db = k.dense_backward(**bwd)
    # dz[2, 1] is NaN; dw[:, 1] = x.T @ dz[:, 1] and db[1] = sum dz[:, 1] pick it up.
    assert np.isnan(dz[2, 1]) and np.all(np.isnan(dw[:, 1])) and np.isnan(db[1]), name
    assert np.all(np.isfinite(dw[:, 0])) and np.isfinite(db[0]), name


@pytest.mark.parametrize("n_in", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("activation", ["identity", "relu", "leaky_relu", "tanh"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", COMPILED)
def test_dense_forward_short_inner_dimension_is_exact(name, dtype, activation, n_in):
    """An inner dimension of at most 4 is summed by fastnn itself, product, bias and
    activation in one pass where the activation allows: z and a equal the reference's
    bit for bit, with zeros of both signs, infinities and NaN among the values, a
    separate from z or the same buffer."""
    rng = np.random.default_rng(n_in)
    m, n_out = 37, 70
    x = rng_array(rng, (m, n_in), dtype)
    w = rng_array(rng, (n_in, n_out), dtype)
    b = rng_array(rng, (n_out,), dtype)
    x[0, 0], x[1, -1], x[2, 0] = np.nan, np.inf, -0.0
    w[0, 3], w[-1, 4] = -np.inf, -0.0
    b[5], b[6] = -0.0, np.nan
    fwd = {"x": x, "w": w, "b": b, "activation": activation, "alpha": 0.1}
    with quiet_reference():
        z_ref, a_ref = reference().dense_forward(**fwd)
    k = backend(name)
    z, a = k.dense_forward(**fwd)
    err = case_id(name, dtype, activation, n_in)
    assert_exact(z, z_ref, "z " + err)
    check_activation(activation, "forward", a, a_ref, "a " + err)
    buf = np.empty((m, n_out), dtype)
    k.dense_forward(**fwd, z=buf, a=buf)
    check_activation(activation, "forward", buf, a_ref, "a = z " + err)
