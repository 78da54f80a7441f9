"""SciPy's scalar special functions as C function addresses, for the compiled kernels.

gelu's erfc is SciPy's in every backend (``scipy.special.erfc`` in the reference; the
same C function, exported by ``scipy.special.cython_special``, in the Numba and Cython
kernels), so gelu's values agree bit for bit: libm's erfc and SciPy's differ by many
ULP far in the tail (docs/spec.md §3).
"""

import ctypes

__all__ = ["erfc_address"]

_SIGNATURE = b"double (double, int __pyx_skip_dispatch)"


def erfc_address() -> int:
    """The address of SciPy's ``double erfc(double x, int skip_dispatch)``."""
    from scipy.special import cython_special

    capsule = cython_special.__pyx_capi__["__pyx_fuse_1erfc"]
    get_name = ctypes.pythonapi.PyCapsule_GetName
    get_name.restype = ctypes.c_char_p
    get_name.argtypes = [ctypes.py_object]
    name = get_name(capsule)
    if name != _SIGNATURE:
        raise ImportError(f"scipy.special.cython_special's erfc has signature {name!r}")
    get_pointer = ctypes.pythonapi.PyCapsule_GetPointer
    get_pointer.restype = ctypes.c_void_p
    get_pointer.argtypes = [ctypes.py_object, ctypes.c_char_p]
    return int(get_pointer(capsule, name))
