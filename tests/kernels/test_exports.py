"""The three backends export the same kernels (STYLE: one registry, identical names)."""

import importlib
import inspect

import pytest

import fastnn
from fastnn import reference
from fastnn._backend import FAMILIES
from kernels._support import ALL_BACKENDS, COMPILED

MODULE = {"numba": "fastnn._kernels.{}_numba", "cython": "fastnn._kernels.{}_cython"}


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("name", COMPILED)
def test_family_modules_export_the_reference_names(name, family):
    ref = importlib.import_module(f"fastnn.reference.{family}")
    mod = importlib.import_module(MODULE[name].format(family))
    assert len(set(mod.__all__)) == len(mod.__all__), f"{mod.__name__}: duplicates in __all__"
    assert sorted(mod.__all__) == sorted(ref.__all__), (
        f"{mod.__name__}.__all__ differs from the reference: missing "
        f"{sorted(set(ref.__all__) - set(mod.__all__))}, extra "
        f"{sorted(set(mod.__all__) - set(ref.__all__))}"
    )
    for fn in mod.__all__:
        assert callable(getattr(mod, fn)), f"{mod.__name__}.{fn} is not callable"


@pytest.mark.parametrize("name", COMPILED)
def test_kernels_take_the_reference_arguments(name):
    """Where a kernel's signature is introspectable (Numba dispatchers, Cython def
    functions with embedsignature), its parameter names are the reference's."""
    raw = fastnn.backend(name)._raw
    for fn in reference.__all__:
        want = list(inspect.signature(getattr(reference, fn)).parameters)
        try:
            got = list(inspect.signature(getattr(raw, fn)).parameters)
        except (TypeError, ValueError):
            continue  # a builtin without a signature: the name check above still holds
        assert got == want, f"{name}.{fn}{tuple(got)} != reference {fn}{tuple(want)}"


@pytest.mark.parametrize("name", COMPILED)
def test_backends_export_identical_kernels(name):
    """The raw namespace of each compiled backend has exactly the NumPy backend's
    kernels (the reference families plus any whole-model kernel such as train_epoch)."""
    want = set(vars(fastnn.backend("numpy")._raw))
    got = set(vars(fastnn.backend(name)._raw))
    assert got == want, f"{name}: missing {sorted(want - got)}, extra {sorted(got - want)}"


@pytest.mark.parametrize("name", ALL_BACKENDS)
def test_backend_methods_cover_every_kernel(name):
    k = fastnn.backend(name)
    assert set(reference.__all__) <= set(vars(k._raw))
    for fn in reference.__all__:
        assert callable(getattr(k, fn, None)), f"Backend.{fn} missing"
