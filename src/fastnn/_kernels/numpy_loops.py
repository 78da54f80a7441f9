"""NumPy's own float64 ufunc loops (exp, log, tanh) as C addresses, for the compiled
kernels.

The reference computes exp, log and tanh with NumPy's ufuncs, whose float64 loops are
NumPy's own code (SIMD on AVX-512F hosts), not the C library's. A compiled kernel that
calls the very same loop gets the reference's bits, and the loop's vector speed when it
is handed many values at once (the softmax rows of a batch: ~0.7 ns a value against
~5 ns for libm's scalar exp on AVX-512). NumPy gives JIT compilers its loops through
``ufunc._get_strided_loop`` (NumPy >= 1.24): a loop ``int f(context, data, n, strides,
auxdata)`` that needs no GIL for these ufuncs (checked).
"""

import ctypes

import numpy as np

__all__ = ["loop_addresses"]


class _UfuncCallInfo(ctypes.Structure):
    """NumPy's ``ufunc_call_info`` (capsule "numpy_1.24_ufunc_call_info")."""

    _fields_ = [
        ("strided_loop", ctypes.c_void_p),
        ("context", ctypes.c_void_p),
        ("auxdata", ctypes.c_void_p),
        ("requires_pyapi", ctypes.c_ubyte),
        ("no_floatingpoint_errors", ctypes.c_ubyte),
    ]


# The capsules own each loop's context and auxdata: kept alive with the module.
_KEEP: dict[str, tuple] = {}


def loop_addresses(name: str) -> tuple[int, int, int]:
    """(loop, context, auxdata) of NumPy's float64 -> float64 loop of ufunc ``name``
    (``"exp"``, ``"log"`` or ``"tanh"``); one lookup per process."""
    if name not in _KEEP:
        ufunc = getattr(np, name)
        f64 = np.dtype(np.float64)
        _, capsule = ufunc._resolve_dtypes_and_context((f64, f64))
        ufunc._get_strided_loop(capsule)
        get_pointer = ctypes.pythonapi.PyCapsule_GetPointer
        get_pointer.restype = ctypes.c_void_p
        get_pointer.argtypes = [ctypes.py_object, ctypes.c_char_p]
        address = get_pointer(capsule, b"numpy_1.24_ufunc_call_info")
        info = _UfuncCallInfo.from_address(address)
        if info.requires_pyapi:
            raise ImportError(f"NumPy's float64 {name} loop needs the GIL")
        _KEEP[name] = (capsule, info)
    info = _KEEP[name][1]
    return int(info.strided_loop), int(info.context or 0), int(info.auxdata or 0)
