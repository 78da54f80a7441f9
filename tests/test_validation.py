"""Bad input through the public Backend methods, on every backend.

Kernels never validate (bounds checks are off in them), so every bad argument must be
refused by the Backend layer with a ValueError or TypeError whose message names the
argument, before any kernel runs: each backend's raw kernels are replaced by spies
that fail the test if called (without running the kernel on the bad input), and the
caller's arrays must be left untouched. A
hypothesis fuzz of random shapes and dtypes runs in a subprocess, so that a kernel
reading out of bounds (a segfault) fails the test instead of killing pytest.
"""

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import fastnn
from fastnn import Backend
from kernels._support import ALL_BACKENDS, COMPILED


class KernelReached(Exception):
    """A raw kernel was called: the Backend let the bad argument through."""


def spied(name):
    """Backend ``name`` whose raw kernels are replaced by spies: a call is recorded in
    ``calls`` and raises KernelReached instead of running the kernel, which with
    unchecked arguments could read or write out of bounds."""
    real = fastnn.backend(name)
    calls = []

    def spy_for(fname):
        def spy(*args, **kwargs):
            calls.append(fname)
            raise KernelReached(
                f"{name}: kernel {fname!r} was called: the Backend did not refuse the argument"
            )

        return spy

    raw = SimpleNamespace(**{n: spy_for(n) for n in vars(real._raw)})
    return Backend(name, raw), calls


def expect_refusal(name, method, kwargs, exc, arg_names):
    """``method(**kwargs)`` raises ``exc`` naming one of ``arg_names``, no kernel ran,
    and no array argument changed."""
    k, calls = spied(name)
    arrays = {
        n: v.copy()
        for n, v in kwargs.items()
        if isinstance(v, np.ndarray) and v.dtype.kind in "fiub"
    }
    with pytest.raises(exc) as info:
        getattr(k, method)(**kwargs)
    msg = str(info.value)
    names = (arg_names,) if isinstance(arg_names, str) else arg_names
    assert any(n in msg for n in names), f"{name}.{method}: {msg!r} names none of {names}"
    assert not calls, f"{name}.{method}: kernel {calls} ran before the check"
    for n, before in arrays.items():
        np.testing.assert_array_equal(kwargs[n], before, err_msg=f"{n} was modified")


F32, F64 = np.float32, np.float64


def f(shape, dtype=F64, value=0.5):
    return np.full(shape, value, dtype=dtype)


def optimizer_args(method, n=4, dtype=F64):
    base = {"param": f(n, dtype), "grad": f(n, dtype)}
    extra = {
        "sgd_step": {"lr": 0.1},
        "momentum_step": {"velocity": f(n, dtype), "lr": 0.1},
        "nesterov_step": {"velocity": f(n, dtype), "lr": 0.1},
        "adagrad_step": {"sum_sq": f(n, dtype)},
        "rmsprop_step": {"sq_avg": f(n, dtype)},
        "adam_step": {"m": f(n, dtype), "v": f(n, dtype), "step": 1},
        "adamw_step": {"m": f(n, dtype), "v": f(n, dtype), "step": 1},
    }[method]
    return {**base, **extra}


def bn_train_args(m=4, k=3, dtype=F64):
    return {
        "x": f((m, k), dtype),
        "gamma": f(k, dtype),
        "beta": f(k, dtype),
        "running_mean": f(k, dtype),
        "running_var": f(k, dtype),
    }


def bn_backward_args(m=4, k=3, dtype=F64):
    return {
        "dout": f((m, k), dtype),
        "x_hat": f((m, k), dtype),
        "gamma": f(k, dtype),
        "inv_std": f(k, dtype),
    }


def dense_fwd(m=4, n_in=3, n_out=2, dtype=F64):
    return {"x": f((m, n_in), dtype), "w": f((n_in, n_out), dtype), "b": f(n_out, dtype)}


def dense_bwd(m=4, n_in=3, n_out=2, dtype=F64):
    return {
        "x": f((m, n_in), dtype),
        "z": f((m, n_out), dtype),
        "a": f((m, n_out), dtype),
        "da": f((m, n_out), dtype),
    }


# --- wrong shapes -----------------------------------------------------------------------

SHAPE_CASES = {
    "relu out": ("relu", {"z": f((2, 3)), "out": f((3, 2))}, "out"),
    "leaky_relu out": ("leaky_relu", {"z": f(5), "out": f(4)}, "out"),
    "softmax 3-D": ("softmax", {"z": f((2, 2, 2))}, "z"),
    "softmax out": ("softmax", {"z": f((2, 3)), "out": f((2, 4))}, "out"),
    "softmax_backward da": ("softmax_backward", {"a": f((2, 3)), "da": f((2, 4))}, "da"),
    "activation_forward 1-D": ("activation_forward", {"z": f(3)}, "z"),
    "activation_backward a": (
        "activation_backward",
        {"da": f((2, 3)), "z": f((2, 3)), "a": f((3, 2))},
        "a",
    ),
    "activation_backward da": (
        "activation_backward",
        {"da": f((2, 2)), "z": f((2, 3)), "a": f((2, 3))},
        "da",
    ),
    "dense_forward w": ("dense_forward", dict(dense_fwd(), w=f((4, 2))), "w"),
    "dense_forward b": ("dense_forward", dict(dense_fwd(), b=f(3)), "b"),
    "dense_forward x 1-D": ("dense_forward", dict(dense_fwd(), x=f(3)), "x"),
    "dense_forward z": ("dense_forward", dict(dense_fwd(), z=f((4, 3))), "z"),
    "dense_forward empty": ("dense_forward", dense_fwd(m=0), ("m=0", "sample")),
    "dense_backward z rows": ("dense_backward", dict(dense_bwd(), z=f((3, 2))), "z"),
    "dense_backward da": ("dense_backward", dict(dense_bwd(), da=f((4, 3))), "da"),
    "dense_backward a": ("dense_backward", dict(dense_bwd(), a=f((4, 1))), "a"),
    "dense_backward dw": ("dense_backward", dict(dense_bwd(), dw=f((2, 3))), "dw"),
    "dense_backward db": ("dense_backward", dict(dense_bwd(), db=f(3)), "db"),
    "dense_input_gradient w": ("dense_input_gradient", {"dz": f((4, 2)), "w": f((3, 3))}, "w"),
    "dense_input_gradient dx": (
        "dense_input_gradient",
        {"dz": f((4, 2)), "w": f((3, 2)), "dx": f((4, 2))},
        "dx",
    ),
    "mse y": ("mse", {"y_pred": f((3, 2)), "y": f((2, 3))}, "y"),
    "mse empty": ("mse", {"y_pred": f(0), "y": f(0)}, "y_pred"),
    "mse_gradient out": ("mse_gradient", {"y_pred": f(3), "y": f(3), "out": f(4)}, "out"),
    "bce y": ("binary_cross_entropy", {"z": f(3), "y": f(4)}, "y"),
    "bce 3-D": ("binary_cross_entropy", {"z": f((2, 2, 2)), "y": f((2, 2, 2))}, "z"),
    "bce empty": ("binary_cross_entropy", {"z": f(0), "y": f(0)}, "z"),
    "ce labels shape": ("cross_entropy", {"z": f((3, 4)), "y": np.zeros(4, np.int64)}, "y"),
    "ce targets shape": ("cross_entropy", {"z": f((3, 4)), "y": f((3, 3))}, "y"),
    "ce no class": ("cross_entropy", {"z": f((3, 0)), "y": np.zeros(3, np.int64)}, "z"),
    "ce_gradient out": (
        "cross_entropy_gradient",
        {"z": f((3, 4)), "y": np.zeros(3, np.int64), "out": f((4, 3))},
        "out",
    ),
    "sparse labels": (
        "sparse_cross_entropy",
        {"z": f((3, 4)), "labels": np.zeros(2, int)},
        "labels",
    ),
    "sgd grad": ("sgd_step", dict(optimizer_args("sgd_step"), grad=f(5)), "grad"),
    "momentum velocity": (
        "momentum_step",
        dict(optimizer_args("momentum_step"), velocity=f(3)),
        "velocity",
    ),
    "adagrad sum_sq": (
        "adagrad_step",
        dict(optimizer_args("adagrad_step"), sum_sq=f((2, 2))),
        "sum_sq",
    ),
    "rmsprop sq_avg": ("rmsprop_step", dict(optimizer_args("rmsprop_step"), sq_avg=f(5)), "sq_avg"),
    "adam m": ("adam_step", dict(optimizer_args("adam_step"), m=f(5)), "m"),
    "adamw v": ("adamw_step", dict(optimizer_args("adamw_step"), v=f(3)), "v"),
    "dropout mask": (
        "dropout",
        {"x": f((2, 3)), "mask": np.ones((3, 2), bool), "rate": 0.5},
        "mask",
    ),
    "bn gamma": ("batch_norm_train", dict(bn_train_args(), gamma=f(2)), "gamma"),
    "bn beta": ("batch_norm_train", dict(bn_train_args(), beta=f(4)), "beta"),
    "bn running_mean": (
        "batch_norm_train",
        dict(bn_train_args(), running_mean=f(2)),
        "running_mean",
    ),
    "bn running_var": ("batch_norm_train", dict(bn_train_args(), running_var=f(4)), "running_var"),
    "bn one row": ("batch_norm_train", bn_train_args(m=1), "x"),
    "bn x_hat out": ("batch_norm_train", dict(bn_train_args(), x_hat=f((3, 3))), "x_hat"),
    "bn_eval running_var": (
        "batch_norm_eval",
        dict(bn_train_args(), running_var=f(2)),
        "running_var",
    ),
    "bn_backward x_hat": (
        "batch_norm_backward",
        dict(bn_backward_args(), x_hat=f((4, 2))),
        "x_hat",
    ),
    "bn_backward inv_std": (
        "batch_norm_backward",
        dict(bn_backward_args(), inv_std=f(2)),
        "inv_std",
    ),
    "bn_backward empty": ("batch_norm_backward", bn_backward_args(m=0), "dout"),
}


@pytest.mark.parametrize("case", list(SHAPE_CASES))
@pytest.mark.parametrize("name", ALL_BACKENDS)
def test_wrong_shapes(name, case):
    method, kwargs, arg = SHAPE_CASES[case]
    expect_refusal(name, method, kwargs, ValueError, arg)


# --- dtypes -------------------------------------------------------------------------------

MIXED_CASES = {
    "relu out": ("relu", {"z": f(3, F32), "out": f(3, F64)}, "out"),
    "softmax_backward da": ("softmax_backward", {"a": f((2, 3), F32), "da": f((2, 3))}, "da"),
    "activation_backward a": (
        "activation_backward",
        {"da": f((2, 3)), "z": f((2, 3)), "a": f((2, 3), F32)},
        "a",
    ),
    "dense_forward w": ("dense_forward", dict(dense_fwd(dtype=F32), w=f((3, 2))), "w"),
    "dense_forward b": ("dense_forward", dict(dense_fwd(), b=f(2, F32)), "b"),
    "dense_backward da": ("dense_backward", dict(dense_bwd(dtype=F32), da=f((4, 2))), "da"),
    "dense_backward dw": ("dense_backward", dict(dense_bwd(dtype=F32), dw=f((3, 2))), "dw"),
    "dense_input_gradient w": ("dense_input_gradient", {"dz": f((4, 2), F32), "w": f((3, 2))}, "w"),
    "mse y": ("mse", {"y_pred": f(3, F32), "y": f(3)}, "y"),
    "bce y": ("binary_cross_entropy", {"z": f(3), "y": f(3, F32)}, "y"),
    "ce targets": ("cross_entropy", {"z": f((2, 3), F32), "y": f((2, 3))}, "y"),
    "sgd grad": ("sgd_step", dict(optimizer_args("sgd_step", dtype=F32), grad=f(4)), "grad"),
    "adam v": ("adam_step", dict(optimizer_args("adam_step"), v=f(4, F32)), "v"),
    "momentum velocity": (
        "momentum_step",
        dict(optimizer_args("momentum_step", dtype=F32), velocity=f(4)),
        "velocity",
    ),
    "dropout out": (
        "dropout",
        {"x": f(3), "mask": np.ones(3, bool), "rate": 0.1, "out": f(3, F32)},
        "out",
    ),
    "bn gamma": ("batch_norm_train", dict(bn_train_args(dtype=F32), gamma=f(3)), "gamma"),
    "bn running_var": (
        "batch_norm_train",
        dict(bn_train_args(dtype=F32), running_var=f(3)),
        "running_var",
    ),
    "bn_backward inv_std": (
        "batch_norm_backward",
        dict(bn_backward_args(dtype=F32), inv_std=f(3)),
        "inv_std",
    ),
}


@pytest.mark.parametrize("case", list(MIXED_CASES))
@pytest.mark.parametrize("name", ALL_BACKENDS)
def test_mixed_dtypes(name, case):
    method, kwargs, arg = MIXED_CASES[case]
    expect_refusal(name, method, kwargs, TypeError, arg)


BAD_DTYPES = {
    "int32": lambda s: np.ones(s, np.int32),
    "int64": lambda s: np.ones(s, np.int64),
    "uint8": lambda s: np.ones(s, np.uint8),
    "bool": lambda s: np.ones(s, bool),
    "float16": lambda s: np.ones(s, np.float16),
    "longdouble": lambda s: np.ones(s, np.longdouble),
    "complex64": lambda s: np.ones(s, np.complex64),
    "complex128": lambda s: np.ones(s, np.complex128),
    "object": lambda s: np.full(s, 0.5, dtype=object),
    "str": lambda s: np.full(s, "0.5"),
    "bytes": lambda s: np.full(s, b"0.5"),
    "list of str": lambda s: np.full(s, "x").tolist(),
}

# (method, the other arguments, the argument replaced by a bad array, its shape)
BAD_DTYPE_TARGETS = {
    "relu z": ("relu", {}, "z", (2, 3)),
    "sigmoid_derivative z": ("sigmoid_derivative", {}, "z", (4,)),
    "softmax z": ("softmax", {}, "z", (2, 3)),
    "activation_forward z": ("activation_forward", {"activation": "tanh"}, "z", (2, 3)),
    "dense_forward x": ("dense_forward", {"w": f((3, 2)), "b": f(2)}, "x", (4, 3)),
    "dense_forward w": ("dense_forward", {"x": f((4, 3)), "b": f(2)}, "w", (3, 2)),
    "dense_backward da": (
        "dense_backward",
        {k: v for k, v in dense_bwd().items() if k != "da"},
        "da",
        (4, 2),
    ),
    "mse y_pred": ("mse", {"y": f(3)}, "y_pred", (3,)),
    "cross_entropy z": ("cross_entropy", {"y": np.zeros(2, np.int64)}, "z", (2, 3)),
    "sgd_step param": ("sgd_step", {"grad": f(4), "lr": 0.1}, "param", (4,)),
    "adam_step grad": ("adam_step", {"param": f(4), "m": f(4), "v": f(4), "step": 1}, "grad", (4,)),
    "dropout x": ("dropout", {"mask": np.ones(3, bool), "rate": 0.1}, "x", (3,)),
    "batch_norm_train x": (
        "batch_norm_train",
        {k: v for k, v in bn_train_args().items() if k != "x"},
        "x",
        (4, 3),
    ),
    "batch_norm_backward dout": (
        "batch_norm_backward",
        {k: v for k, v in bn_backward_args().items() if k != "dout"},
        "dout",
        (4, 3),
    ),
    "squared_norm x": ("squared_norm", {}, "x", (5,)),
    "scale_inplace x": ("scale_inplace", {"factor": 2.0}, "x", (5,)),
}


@pytest.mark.parametrize("bad", list(BAD_DTYPES))
@pytest.mark.parametrize("target", list(BAD_DTYPE_TARGETS))
@pytest.mark.parametrize("name", ALL_BACKENDS)
def test_unsupported_dtypes(name, target, bad):
    """int, bool, float16, longdouble, complex, object and strings are refused, never
    converted silently."""
    method, others, arg, shape = BAD_DTYPE_TARGETS[target]
    expect_refusal(name, method, {**others, arg: BAD_DTYPES[bad](shape)}, TypeError, arg)


@pytest.mark.parametrize("name", ALL_BACKENDS)
def test_non_native_byte_order_is_accepted(name):
    """Big-endian float64 is float64: converted, not refused, same values."""
    k = fastnn.backend(name)
    z = np.array([-1.0, 0.5, 2.0], dtype=">f8")
    np.testing.assert_array_equal(k.relu(z), [0.0, 0.5, 2.0])


# --- hyperparameters ------------------------------------------------------------------

NAN, INF = float("nan"), float("inf")

HYPER_CASES = [
    # (method, base args, hyperparameter, bad value, exception)
    *[
        (m, "lr", v, ValueError)
        for m in (
            "sgd_step",
            "momentum_step",
            "nesterov_step",
            "adagrad_step",
            "rmsprop_step",
            "adam_step",
            "adamw_step",
        )
        for v in (-0.1, NAN, INF)
    ],
    ("sgd_step", "lr", "0.1", TypeError),
    ("sgd_step", "lr", True, TypeError),
    ("sgd_step", "lr", None, TypeError),
    ("sgd_step", "weight_decay", -1e-4, ValueError),
    ("adamw_step", "weight_decay", NAN, ValueError),
    ("momentum_step", "momentum", 1.0, ValueError),
    ("momentum_step", "momentum", -0.1, ValueError),
    ("nesterov_step", "momentum", 1.5, ValueError),
    ("momentum_step", "dampening", 1.5, ValueError),
    ("nesterov_step", "dampening", -0.5, ValueError),
    ("adagrad_step", "eps", 0.0, ValueError),
    ("adagrad_step", "eps", -1e-10, ValueError),
    ("adagrad_step", "eps_inside_sqrt", "yes", TypeError),
    ("rmsprop_step", "rho", 1.0, ValueError),
    ("rmsprop_step", "rho", -0.1, ValueError),
    ("rmsprop_step", "eps", 0.0, ValueError),
    ("rmsprop_step", "eps_inside_sqrt", 1, TypeError),
    ("adam_step", "beta1", 1.0, ValueError),
    ("adam_step", "beta1", -0.1, ValueError),
    ("adam_step", "beta2", 1.0, ValueError),
    ("adamw_step", "beta2", 1.2, ValueError),
    ("adam_step", "eps", 0.0, ValueError),
    ("adam_step", "eps", -1e-8, ValueError),
    ("adam_step", "step", 0, ValueError),
    ("adamw_step", "step", -3, ValueError),
    ("adam_step", "step", 1.5, TypeError),
    ("adam_step", "step", 2.0, TypeError),
]


@pytest.mark.parametrize(
    "method,hyper,value,exc", HYPER_CASES, ids=[f"{m}-{h}={v!r}" for m, h, v, _ in HYPER_CASES]
)
@pytest.mark.parametrize("name", ALL_BACKENDS)
def test_optimizer_hyperparameters(name, method, hyper, value, exc):
    args = optimizer_args(method)
    args.setdefault("lr", 0.01)
    args[hyper] = value
    expect_refusal(name, method, args, exc, hyper)


OTHER_HYPER = {
    "dropout rate=1": ("dropout", {"x": f(3), "mask": np.ones(3, bool), "rate": 1.0}, "rate"),
    "dropout rate<0": ("dropout", {"x": f(3), "mask": np.ones(3, bool), "rate": -0.1}, "rate"),
    "dropout rate nan": ("dropout", {"x": f(3), "mask": np.ones(3, bool), "rate": NAN}, "rate"),
    "dropout mask=2": ("dropout", {"x": f(3), "mask": np.array([0, 1, 2]), "rate": 0.5}, "mask"),
    "bn eps=0": ("batch_norm_train", dict(bn_train_args(), eps=0.0), "eps"),
    "bn momentum>1": ("batch_norm_train", dict(bn_train_args(), momentum=1.5), "momentum"),
    "bn momentum nan": ("batch_norm_train", dict(bn_train_args(), momentum=NAN), "momentum"),
    "bn_eval eps<0": ("batch_norm_eval", dict(bn_train_args(), eps=-1e-5), "eps"),
    "leaky alpha nan": ("leaky_relu", {"z": f(3), "alpha": NAN}, "alpha"),
    "elu alpha inf": ("elu_derivative", {"z": f(3), "alpha": INF}, "alpha"),
    "activation alpha nan": (
        "activation_forward",
        {"z": f((2, 2)), "activation": "elu", "alpha": NAN},
        "alpha",
    ),
    "clip max_norm=0": ("clip_grad_norm", {"grad": f(3), "max_norm": 0.0}, "max_norm"),
    "scale factor inf": ("scale_inplace", {"x": f(3), "factor": INF}, "factor"),
}


@pytest.mark.parametrize("case", list(OTHER_HYPER))
@pytest.mark.parametrize("name", ALL_BACKENDS)
def test_other_hyperparameters(name, case):
    method, args, arg = OTHER_HYPER[case]
    expect_refusal(name, method, args, ValueError, arg)


@pytest.mark.parametrize("activation", ["swish", "Relu", "", "softmax ", 3, None])
@pytest.mark.parametrize(
    "method", ["activation_forward", "activation_backward", "dense_forward", "dense_backward"]
)
@pytest.mark.parametrize("name", ALL_BACKENDS)
def test_unknown_activation(name, method, activation):
    args = {
        "activation_forward": {"z": f((2, 3))},
        "activation_backward": {"da": f((2, 3)), "z": f((2, 3)), "a": f((2, 3))},
        "dense_forward": dense_fwd(),
        "dense_backward": dense_bwd(),
    }[method]
    expect_refusal(name, method, dict(args, activation=activation), ValueError, "activation")


@pytest.mark.parametrize(
    "labels", [[0, 4, 1], [0, -1, 1], [0, 1, 2**40]], ids=["k", "negative", "huge"]
)
@pytest.mark.parametrize(
    "method,arg",
    [
        ("cross_entropy", "y"),
        ("cross_entropy_gradient", "y"),
        ("sparse_cross_entropy", "labels"),
        ("sparse_cross_entropy_gradient", "labels"),
    ],
)
@pytest.mark.parametrize("name", ALL_BACKENDS)
def test_out_of_range_labels(name, method, arg, labels):
    expect_refusal(name, method, {"z": f((3, 4)), arg: np.array(labels)}, ValueError, arg)


@pytest.mark.parametrize("name", ALL_BACKENDS)
def test_non_integer_labels_are_refused(name):
    expect_refusal(
        name,
        "sparse_cross_entropy",
        {"z": f((3, 4)), "labels": np.array([0.0, 1.0, 2.0])},
        TypeError,
        "labels",
    )
    expect_refusal(
        name, "cross_entropy", {"z": f((3, 4)), "y": np.array([True, False, True])}, TypeError, "y"
    )


# --- overlapping buffers -------------------------------------------------------------


def overlapping(shape_a, shape_b, shift=1, dtype=F64):
    """Two C-contiguous arrays over one buffer, the second ``shift`` elements later."""
    na, nb = int(np.prod(shape_a)), int(np.prod(shape_b))
    buf = np.arange(max(na, nb + shift), dtype=dtype) / 7
    return buf[:na].reshape(shape_a), buf[shift : shift + nb].reshape(shape_b)


def _ov(shape_a, shape_b):
    return overlapping(shape_a, shape_b)


def _overlap_cases():
    cases = {}
    z, out = _ov((12,), (12,))
    cases["relu out/z"] = ("relu", {"z": z, "out": out}, ("out", "z"))
    z, out = _ov((3, 4), (3, 4))
    cases["softmax out/z"] = ("softmax", {"z": z, "out": out}, ("out", "z"))
    a, out = _ov((3, 4), (3, 4))
    cases["softmax_backward out/a"] = (
        "softmax_backward",
        {"a": a, "da": f((3, 4)), "out": out},
        ("out", "a"),
    )
    z, out = _ov((3, 4), (3, 4))
    cases["activation_forward out/z"] = (
        "activation_forward",
        {"z": z, "activation": "tanh", "out": out},
        ("out", "z"),
    )
    da, out = _ov((3, 4), (3, 4))
    cases["activation_backward out/da"] = (
        "activation_backward",
        {"da": da, "z": f((3, 4)), "a": f((3, 4)), "activation": "relu", "out": out},
        ("out", "da"),
    )
    z, out = _ov((3, 4), (3, 4))
    cases["activation_backward out/z"] = (
        "activation_backward",
        {"da": f((3, 4)), "z": z, "a": f((3, 4)), "activation": "relu", "out": out},
        ("out", "z"),
    )
    z, b = _ov((4, 2), (2,))
    cases["dense_forward b/z"] = ("dense_forward", dict(dense_fwd(), b=b, z=z), ("b", "z"))
    x, a = _ov((4, 3), (4, 2))
    cases["dense_forward a/x"] = ("dense_forward", dict(dense_fwd(), x=x, a=a), ("a", "x"))
    da, dw = _ov((4, 2), (3, 2))
    cases["dense_backward dw/da"] = (
        "dense_backward",
        dict(dense_bwd(), da=da, dw=dw),
        ("dw", "da"),
    )
    z, dz = _ov((4, 2), (4, 2))
    cases["dense_backward dz/z"] = ("dense_backward", dict(dense_bwd(), z=z, dz=dz), ("dz", "z"))
    p, out = _ov((6,), (6,))
    cases["mse_gradient out/y_pred"] = (
        "mse_gradient",
        {"y_pred": p, "y": f(6), "out": out},
        ("out", "y_pred"),
    )
    z, out = _ov((3, 2), (3, 2))
    cases["bce_gradient out/z"] = (
        "binary_cross_entropy_gradient",
        {"z": z, "y": f((3, 2)), "out": out},
        ("out", "z"),
    )
    z, out = _ov((3, 4), (3, 4))
    cases["ce_gradient out/z"] = (
        "cross_entropy_gradient",
        {"z": z, "y": np.zeros(3, np.int64), "out": out},
        ("out", "z"),
    )
    param, grad = _ov((8,), (8,))
    cases["sgd param/grad"] = (
        "sgd_step",
        {"param": grad, "grad": param, "lr": 0.1},
        ("param", "grad"),
    )
    param, grad = _ov((8,), (8,))
    cases["adam param/grad"] = (
        "adam_step",
        {"param": param, "grad": grad, "m": f(8), "v": f(8), "step": 1},
        ("param", "grad"),
    )
    m, v = _ov((8,), (8,))
    cases["adam m/v"] = (
        "adam_step",
        {"param": f(8), "grad": f(8), "m": m, "v": v, "step": 1},
        ("m", "v"),
    )
    g, vel = _ov((8,), (8,))
    cases["momentum velocity/grad"] = (
        "momentum_step",
        {"param": f(8), "grad": g, "velocity": vel, "lr": 0.1},
        ("velocity", "grad"),
    )
    x, out = _ov((6,), (6,))
    cases["dropout out/x"] = (
        "dropout",
        {"x": x, "mask": np.ones(6, bool), "rate": 0.5, "out": out},
        ("out", "x"),
    )
    x, out = _ov((4, 3), (4, 3))
    cases["bn_train out/x"] = (
        "batch_norm_train",
        dict(bn_train_args(), x=x, out=out),
        ("out", "x"),
    )
    rm, rv = _ov((3,), (3,))
    cases["bn_train running stats"] = (
        "batch_norm_train",
        dict(bn_train_args(), running_mean=rm, running_var=rv),
        ("running_mean", "running_var"),
    )
    x, out = _ov((4, 3), (4, 3))
    cases["bn_eval out/x"] = ("batch_norm_eval", dict(bn_train_args(), x=x, out=out), ("out", "x"))
    xh, dx = _ov((4, 3), (4, 3))
    cases["bn_backward dx/x_hat"] = (
        "batch_norm_backward",
        dict(bn_backward_args(), x_hat=xh, dx=dx),
        ("dx", "x_hat"),
    )
    dout, dx = _ov((4, 3), (4, 3))
    cases["bn_backward dx/dout"] = (
        "batch_norm_backward",
        dict(bn_backward_args(), dout=dout, dx=dx),
        ("dx", "dout"),
    )
    return cases


OVERLAP_CASES = _overlap_cases()


@pytest.mark.parametrize("case", list(OVERLAP_CASES))
@pytest.mark.parametrize("name", ALL_BACKENDS)
def test_overlapping_buffers(name, case):
    """Buffers that partly share memory would let a kernel read what it already
    wrote: refused (only the aliases the BRIEF allows pass: elementwise out = z,
    dense_forward a = z, dense_backward dz = da, each the very same array)."""
    method, kwargs, names = OVERLAP_CASES[case]
    kwargs = {
        k: (v.copy() if isinstance(v, np.ndarray) and v.base is None else v)
        for k, v in kwargs.items()
    }
    expect_refusal(name, method, kwargs, ValueError, names)


@pytest.mark.parametrize("name", ALL_BACKENDS)
def test_empty_rows_never_reach_a_kernel(name):
    """A softmax over zero classes or a loss over zero samples has nothing to compute;
    a kernel that indexes the first element of a row would read out of bounds."""
    expect_refusal(name, "softmax", {"z": f((2, 0))}, ValueError, "z")
    expect_refusal(
        name, "activation_forward", {"z": f((2, 0)), "activation": "softmax"}, ValueError, "z"
    )
    expect_refusal(name, "softmax_backward", {"a": f((2, 0)), "da": f((2, 0))}, ValueError, "a")
    expect_refusal(
        name,
        "sparse_cross_entropy",
        {"z": f((0, 3)), "labels": np.zeros(0, np.int64)},
        ValueError,
        "z",
    )
    expect_refusal(
        name,
        "sparse_cross_entropy_gradient",
        {"z": f((0, 3)), "labels": np.zeros(0, np.int64)},
        ValueError,
        "z",
    )


# --- no input crashes the interpreter -------------------------------------------------------


def fuzz(backend_name, max_examples):
    """Random shapes, dtypes and values through many Backend methods; only ValueError
    and TypeError may come out. Run in a subprocess (see the test below)."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    k = fastnn.backend(backend_name)
    dtypes = [
        np.float32,
        np.float64,
        np.int64,
        np.bool_,
        np.float16,
        np.complex128,
        np.dtype(">f4"),
        object,
    ]
    shape = st.lists(st.integers(0, 4), min_size=0, max_size=3).map(tuple)

    def arr(draw):
        dt = draw(st.sampled_from(dtypes))
        s = draw(shape)
        seed = draw(st.integers(0, 2**16))
        vals = np.random.default_rng(seed).standard_normal(s) * 3
        if draw(st.booleans()):
            vals.reshape(-1)[:2] = [np.nan, np.inf][: vals.size]
        if dt is object:
            return vals.astype(object)
        with np.errstate(all="ignore"):
            return vals.astype(dt)

    @st.composite
    def call(draw):
        method = draw(
            st.sampled_from(
                [
                    "relu",
                    "sigmoid",
                    "softmax",
                    "softmax_backward",
                    "activation_forward",
                    "activation_backward",
                    "dense_forward",
                    "dense_backward",
                    "dense_input_gradient",
                    "mse",
                    "mse_gradient",
                    "binary_cross_entropy_gradient",
                    "cross_entropy",
                    "cross_entropy_gradient",
                    "sparse_cross_entropy",
                    "sgd_step",
                    "adam_step",
                    "dropout",
                    "batch_norm_train",
                    "batch_norm_eval",
                    "batch_norm_backward",
                    "squared_norm",
                    "scale_inplace",
                ]
            )
        )
        a = [arr(draw) for _ in range(5)]
        labels = np.random.default_rng(draw(st.integers(0, 99))).integers(-1, 5, size=draw(shape))
        act = draw(st.sampled_from(["relu", "softmax", "elu", "sigmoid", "step"]))
        args = {
            "relu": lambda: k.relu(a[0]),
            "sigmoid": lambda: k.sigmoid(a[0], out=a[1]),
            "softmax": lambda: k.softmax(a[0]),
            "softmax_backward": lambda: k.softmax_backward(a[0], a[1]),
            "activation_forward": lambda: k.activation_forward(a[0], act),
            "activation_backward": lambda: k.activation_backward(a[0], a[1], a[2], act),
            "dense_forward": lambda: k.dense_forward(a[0], a[1], a[2], act),
            "dense_backward": lambda: k.dense_backward(a[0], a[1], a[2], a[3], act),
            "dense_input_gradient": lambda: k.dense_input_gradient(a[0], a[1]),
            "mse": lambda: k.mse(a[0], a[1]),
            "mse_gradient": lambda: k.mse_gradient(a[0], a[1]),
            "binary_cross_entropy_gradient": lambda: k.binary_cross_entropy_gradient(a[0], a[1]),
            "cross_entropy": lambda: k.cross_entropy(a[0], labels),
            "cross_entropy_gradient": lambda: k.cross_entropy_gradient(a[0], a[1]),
            "sparse_cross_entropy": lambda: k.sparse_cross_entropy(a[0], labels),
            "sgd_step": lambda: k.sgd_step(a[0], a[1], 0.1),
            "adam_step": lambda: k.adam_step(a[0], a[1], a[2], a[3], 1),
            "dropout": lambda: k.dropout(a[0], labels, 0.5),
            "batch_norm_train": lambda: k.batch_norm_train(a[0], a[1], a[2], a[3], a[4]),
            "batch_norm_eval": lambda: k.batch_norm_eval(a[0], a[1], a[2], a[3], a[4]),
            "batch_norm_backward": lambda: k.batch_norm_backward(a[0], a[1], a[2], a[3]),
            "squared_norm": lambda: k.squared_norm(a[0]),
            "scale_inplace": lambda: k.scale_inplace(a[0], 0.5),
        }
        return method, args[method]

    @settings(
        max_examples=max_examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(call())
    def run(c):
        method, thunk = c
        try:
            with np.errstate(all="ignore"):
                thunk()
        except (ValueError, TypeError):
            pass

    run()


@pytest.mark.parametrize("name", COMPILED)
def test_fuzz_never_crashes(name, tmp_path):
    """300 random calls per compiled backend in a child interpreter: a segfault or any
    exception other than ValueError/TypeError fails the test with its output."""
    here = Path(__file__).resolve()
    src = Path(fastnn.__file__).resolve().parents[1]
    code = textwrap.dedent(f"""
        import importlib.util, sys, warnings
        warnings.simplefilter("ignore")
        sys.path[:0] = [{str(src)!r}, {str(here.parent)!r}]
        spec = importlib.util.spec_from_file_location("fuzz_validation", {str(here)!r})
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        mod.fuzz({name!r}, 300)
        print("fuzz ok")
    """)
    env = dict(os.environ)
    env["PYTHONFAULTHANDLER"] = "1"
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        cwd=tmp_path,
    )
    assert proc.returncode == 0 and "fuzz ok" in proc.stdout, (
        f"{name}: the fuzz ended with return code {proc.returncode}\n"
        f"{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    )
