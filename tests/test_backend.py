"""The backend registry: one namespace per backend, identical names everywhere."""

import numpy as np
import pytest

import fastnn
from fastnn import reference
from fastnn._backend import FAMILIES, Backend


def test_available_backends_lists_numpy_and_numba():
    names = fastnn.available_backends()
    assert "numpy" in names and "numba" in names
    assert fastnn.default_backend_name() in names


def test_unknown_backend_is_a_clear_value_error():
    with pytest.raises(ValueError, match="backend must be one of"):
        fastnn.backend("torch")


def test_numpy_backend_is_the_reference():
    k = fastnn.backend("numpy")
    assert isinstance(k, Backend)
    assert k._raw.relu is reference.relu
    assert fastnn.backend("numpy") is k  # one instance per backend


def test_reference_all_lists_every_family_function():
    import importlib

    names = set()
    for fam in FAMILIES:
        names |= set(importlib.import_module(f"fastnn.reference.{fam}").__all__)
    assert names == set(reference.__all__)


def test_backend_methods_cover_every_raw_kernel():
    k = fastnn.backend("numpy")
    for name in reference.__all__:
        assert callable(getattr(k, name)), name


def test_backend_returns_fresh_output_when_out_is_none():
    k = fastnn.backend("numpy")
    z = np.array([-1.0, 2.0], dtype=np.float32)
    out = k.relu(z)
    assert out is not z and out.dtype == np.float32
