"""fastnn.registry: every copy of a code is derived from its tables, and checked.

The Numba kernels read ``fastnn._kernels.codes`` (built from the tables at import); the
Cython and C kernels are compiled with ``codes.pxi`` and ``fastnn_codes.h``, written by
setup.py from the same tables. These tests catch a stale build, a class or name the
tables do not know, and an unknown name that would slip through.
"""

import importlib
import inspect
import re
from pathlib import Path

import numpy as np
import pytest

import fastnn
from fastnn import losses, optim, registry
from fastnn._backend import cython_is_built
from fastnn._kernels import codes

KERNELS = Path(codes.__file__).parent
needs_cython = pytest.mark.skipif(not cython_is_built(), reason="Cython kernels not built")


def test_codes_number_the_rows_in_order():
    for table in (registry.ACTIVATIONS, registry.LOSSES, registry.OPTIMIZERS):
        assert [row.code for row in table] == list(range(len(table)))
        assert len({row.name for row in table}) == len(table)
    assert codes.ACTIVATION_CODES == {a.name: a.code for a in registry.ACTIVATIONS}
    assert codes.RELU == registry.activation("relu").code
    assert codes.OPT_ADAMW == 6 and codes.LOSS_SPARSE_CROSS_ENTROPY == 3
    with pytest.raises(AttributeError, match="no code 'SWISH'"):
        codes.SWISH  # noqa: B018


@needs_cython
@pytest.mark.parametrize(
    "name, text", [("codes.pxi", registry.cython_codes), ("fastnn_codes.h", registry.c_codes)]
)
def test_generated_files_match_the_tables(name, text):
    """The files the Cython/C kernels were compiled with are the tables as they are now
    (setup.py rewrites them; a table edited without a rebuild fails here)."""
    assert (KERNELS / name).read_text() == text()


@needs_cython
def test_compiled_modules_use_the_tables_codes():
    act = importlib.import_module("fastnn._kernels.activations_cython")
    assert act.ACTIVATION_CODES == codes.ACTIVATION_CODES
    training = importlib.import_module("fastnn._kernels.training_cython")
    training._check_codes()  # raises ImportError on any difference


def test_c_header_defines_every_activation():
    text = registry.c_codes()
    defined = dict(re.findall(r"#define FNN_(\w+) (\d+)", text))
    assert {k.lower(): int(v) for k, v in defined.items()} == codes.ACTIVATION_CODES


def test_every_optimizer_row_has_its_class_and_back():
    assert set(optim.OPTIMIZERS) == {o.name for o in registry.OPTIMIZERS}
    for row in registry.OPTIMIZERS:
        opt = optim.OPTIMIZERS[row.name]()
        for attribute in row.hyper.values():
            assert hasattr(opt, attribute), (row.name, attribute)
        assert set(row.hyper) <= set(registry.HYPER_SLOTS)
        params = inspect.signature(optim.OPTIMIZERS[row.name]).parameters
        assert set(row.estimator) <= set(params), row.name
    assert codes.N_STATES == tuple(len(o.states) for o in registry.OPTIMIZERS)


def test_every_estimator_mapping_names_an_estimator_parameter():
    sklearn = pytest.importorskip("sklearn")  # noqa: F841
    from fastnn.estimators import MLPClassifier, MLPRegressor

    for est in (MLPClassifier(), MLPRegressor()):
        params = est.get_params()
        for row in registry.OPTIMIZERS:
            for param in row.estimator.values():
                assert param.rstrip("*") in params, (row.name, param)


def test_every_loss_row_has_its_class():
    dense_losses = {row.name for row in registry.LOSSES if not row.sparse}
    assert set(losses.LOSSES) == dense_losses


@pytest.mark.parametrize("row", registry.ACTIVATIONS, ids=lambda r: r.name)
def test_every_activation_is_reachable_everywhere(row):
    """Each backend has its kernels; the checked tier has its methods; the model
    accepts its name (hidden ones in the estimators and the command line too)."""
    from fastnn.cli import HIDDEN_ACTIVATIONS

    for name in fastnn.available_backends():
        raw = fastnn.backend(name)._raw
        if not row.rowwise:
            assert callable(getattr(raw, row.name)) and callable(
                getattr(raw, f"{row.name}_derivative")
            )
    if not row.rowwise:
        k = fastnn.backend("numpy")
        z = np.array([-1.0, 0.5])
        assert k.__getattribute__(row.name)(z).shape == (2,)
        assert getattr(k, row.name).__doc__.startswith(row.formula)
    assert (row.name in HIDDEN_ACTIVATIONS) == row.hidden
    if row.hidden:
        m = fastnn.MLP([2, 3, 1], activation=row.name, random_state=0)
        assert m.layers[0].activation == row.name


@pytest.mark.parametrize("row", registry.OPTIMIZERS, ids=lambda r: r.name)
def test_every_optimizer_is_reachable_everywhere(row):
    """Each backend has its kernel and the update by code; the checked tier has its
    method (the row's signature and formula); the class and the estimators take it."""
    for name in fastnn.available_backends():
        raw = fastnn.backend(name)._raw
        assert callable(getattr(raw, row.kernel)) and callable(raw.optimizer_step)
    method = getattr(fastnn.Backend, row.kernel)
    assert method.__doc__.startswith(f"{row.cls}: {row.formula}")
    names = list(inspect.signature(method).parameters)
    step = ["step"] if row.step else []
    hypers = [h.name for h in row.hypers]
    assert names == ["self", "param", "grad", *row.states, *step, "lr", *hypers, "weight_decay"]
    assert optim.OPTIMIZERS[row.name].__name__ == row.cls
    assert registry.optimizer(row.name) is row


def test_unknown_names_raise_naming_the_known_ones():
    with pytest.raises(ValueError, match="activation must be one of"):
        registry.activation("swish")
    with pytest.raises(ValueError, match="activation"):
        fastnn.MLP([2, 3, 1], activation="swish")
    with pytest.raises(ValueError, match="activation"):
        fastnn.backend("numpy").activation_forward(np.zeros((1, 2)), "swish")
    with pytest.raises(ValueError, match="optimizer"):
        optim.get_optimizer("no_such_optimizer")
    with pytest.raises(ValueError, match="loss"):
        losses.get_loss("hinge")


def test_kernel_sources_hold_no_code_range():
    """No kernel compares a code with a fixed bound: a row added to a table must not
    fall outside a range written by hand."""
    pattern = re.compile(
        r"(loss_code|opt_code|optimizer|acts\[i\]|activation)\s*(<=?|>=?)\s*(\d+|codes\.[A-Z_]+|[A-Z_]+)"
    )
    allowed = {"N_ACTIVATIONS", "N_LOSSES", "N_OPTIMIZERS", "codes.N_ACTIVATIONS",
               "codes.N_LOSSES", "codes.N_OPTIMIZERS", "0"}  # fmt: skip
    for path in sorted(KERNELS.glob("*.py")) + sorted(KERNELS.glob("*.pyx")):
        for m in pattern.finditer(path.read_text()):
            assert m.group(3) in allowed, f"{path.name}: {m.group(0)}"
