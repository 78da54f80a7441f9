"""Argument and input checks shared by the public layers.

Kernels never validate (bounds checks are off in them); everything that reaches a
kernel has passed through these functions first. Errors name the argument and say
what was expected.

The data checks (:func:`check_X`, :func:`all_finite`) and the model's construction
arguments (:func:`check_dtype`, :func:`check_random_state`) live here rather than in
``model.py`` so that the training loop and the estimators check data without
importing the model's module: the loop takes a model, it does not need its class.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def _dtype_name(dtype) -> str:
    return np.dtype(dtype).name


def _refuse_masked(x, name: str) -> None:
    if isinstance(x, np.ma.MaskedArray):
        raise TypeError(
            f"{name} is a masked array (numpy.ma): fastnn's kernels would "
            f"ignore its mask; pass {name}.filled(value) or a plain array"
        )


def plain_view(x, name: str) -> np.ndarray:
    """An output or in-place buffer ``x`` as a base-class ``np.ndarray`` over the same
    memory (no copy), so kernels never see a subclass's shape rules (np.matrix stays
    2-D through ``reshape(-1)``). np.memmap, np.matrix and other subclasses are
    written through this view; masked arrays are refused (the mask would be ignored).
    """
    if type(x) is np.ndarray:  # the common case
        return x
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{name} must be a NumPy array, got {type(x).__name__}")
    _refuse_masked(x, name)
    return np.ndarray.view(x, np.ndarray)


def plain_array(x, name: str) -> np.ndarray:
    """An input ``x`` as a base-class ``np.ndarray``: ndarray subclasses as a view of
    their memory (np.matrix, np.memmap...), other objects through ``np.asarray``.
    Masked arrays are refused: converting them would silently drop the mask."""
    if isinstance(x, np.ndarray):
        return plain_view(x, name)
    return np.asarray(x)


def float_array(
    x, name: str, *, ndim: int | tuple[int, ...] | None = None, dtype=None
) -> np.ndarray:
    """``x`` as a C-contiguous float32/float64 base-class ndarray in native byte order.

    A non-contiguous input (Fortran order, strided view) is copied; ints, bools,
    float16, complex, objects and strings are refused, never converted silently.
    ``dtype``, when given, is the dtype every float argument of the call must share.
    The number of dimensions is kept (a 0-d input stays 0-d, as with NumPy ufuncs).
    """
    if isinstance(x, np.ndarray):
        arr = plain_view(x, name)
    else:
        try:
            arr = np.asarray(x)
        except Exception as exc:  # ragged lists and other non-arrays
            raise TypeError(
                f"{name} must be an array of float32 or float64, got {type(x).__name__} ({exc})"
            ) from None
    if arr.dtype.kind != "f" or arr.dtype.newbyteorder("=") not in FLOAT_DTYPES:
        raise TypeError(
            f"{name} must be float32 or float64, got dtype "
            f"{arr.dtype}; convert it with .astype(np.float32) "
            f"or .astype(np.float64)"
        )
    if not arr.dtype.isnative:
        arr = arr.astype(arr.dtype.newbyteorder("="))
    if dtype is not None and arr.dtype != np.dtype(dtype):
        raise TypeError(
            f"{name} has dtype {arr.dtype} but this call works in "
            f"{_dtype_name(dtype)}; fastnn never mixes dtypes, so convert "
            f"it with .astype(np.{_dtype_name(dtype)})"
        )
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else ndim
        if arr.ndim not in allowed:
            want = " or ".join(f"{d}-D" for d in allowed)
            raise ValueError(f"{name} must be {want}, got an array of shape {arr.shape}")
    # np.ascontiguousarray would turn a 0-d array into shape (1,)
    return np.asarray(arr, order="C")


def check_shape(arr: np.ndarray, name: str, shape: tuple[int, ...]) -> None:
    if arr.shape != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {arr.shape}")


def index_array(values, name: str, n: int, bound: int, what: str, each: str) -> np.ndarray:
    """Indices as C-contiguous int64 of shape (n,), each in [0, bound); ``what`` names
    them ("class indices") and ``each`` says what one is for ("one per row")."""
    arr = plain_array(values, name)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"{name} must hold integer {what}, got dtype {arr.dtype}")
    if arr.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},), {each}, got {arr.shape}")
    if n and (arr.min() < 0 or arr.max() >= bound):
        raise ValueError(
            f"{name} must be {what} in [0, {bound}), got values in [{arr.min()}, {arr.max()}]"
        )
    return np.asarray(arr, dtype=np.int64, order="C")


INDEX_DTYPES = (np.dtype(np.int32), np.dtype(np.int64))


def csr_arrays(
    indptr, indices, data, n_features: int, dtype=None, name: str = "", rows: int | None = None
):
    """The three arrays of a CSR matrix with ``n_features`` columns, checked so that no
    kernel reads out of bounds: (indptr, indices, data) as C-contiguous 1-D arrays,
    indptr and indices of one index dtype (int32 or int64), indptr starting at 0,
    non-decreasing and ending at nnz = len(indices) = len(data), every index in
    [0, n_features) (unsorted and repeated indices are fine: a repeated column adds),
    data float32/float64 (``dtype`` when given). ``name`` prefixes the argument names
    in messages (``"X."`` names the arrays of a matrix X); ``rows``, when given, is the
    number of rows indptr must describe (n_rows + 1 entries)."""
    arrays = []
    for label, arr in ((f"{name}indptr", indptr), (f"{name}indices", indices)):
        arr = plain_array(arr, label)
        if arr.dtype.newbyteorder("=") not in INDEX_DTYPES:
            raise TypeError(
                f"{label} must have an index dtype int32 or int64 (a CSR matrix's), got {arr.dtype}"
            )
        if arr.ndim != 1:
            raise ValueError(f"{label} must be 1-D, got shape {arr.shape}")
        if not (arr.flags.c_contiguous and arr.dtype.isnative):
            arr = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("="))
        arrays.append(arr)
    ip, ind = arrays
    if ip.dtype != ind.dtype:
        raise TypeError(
            f"{name}indptr and {name}indices must share one index dtype, got "
            f"{ip.dtype} and {ind.dtype}"
        )
    dat = float_array(data, f"{name}data", ndim=1, dtype=dtype)
    nnz = ind.shape[0]
    if dat.shape[0] != nnz:
        raise ValueError(
            f"{name}data and {name}indices must have the same length (one value per "
            f"stored entry), got {dat.shape[0]} and {nnz}"
        )
    if ip.shape[0] == 0:
        raise ValueError(f"{name}indptr must have n_rows + 1 >= 1 entries, got none")
    if rows is not None and ip.shape[0] != rows + 1:
        raise ValueError(
            f"{name}indptr must have n_rows + 1 = {rows + 1} entries, got {ip.shape[0]}"
        )
    if ip[0] != 0 or ip[-1] != nnz or (ip.shape[0] > 1 and bool((np.diff(ip) < 0).any())):
        raise ValueError(
            f"{name}indptr is malformed: it must start at 0, never decrease and end at "
            f"the number of stored entries ({nnz}), got {ip[0]} ... {ip[-1]}"
        )
    if nnz and (int(ind.min()) < 0 or int(ind.max()) >= n_features):
        raise ValueError(
            f"{name}indices must be column indices in [0, {n_features}), got values in "
            f"[{ind.min()}, {ind.max()}]"
        )
    return ip, ind, dat


def label_array(labels, name: str, n_rows: int, n_classes: int) -> np.ndarray:
    """Class indices as C-contiguous int64 of shape (n_rows,), each in [0, n_classes)."""
    return index_array(
        labels, name, n_rows, n_classes, "class indices", "one class index per row of the logits"
    )


def mask_array(mask, name: str, shape: tuple[int, ...]) -> np.ndarray:
    """A keep mask (bool, or integers 0/1) as C-contiguous uint8 of the given shape."""
    arr = plain_array(mask, name)
    if arr.dtype.kind not in "biu":
        raise TypeError(f"{name} must be a boolean keep mask, got dtype {arr.dtype}")
    check_shape(arr, name, shape)
    if arr.dtype.kind != "b" and arr.size and (arr.min() < 0 or arr.max() > 1):
        raise ValueError(f"{name} must hold only 0 and 1 (keep or drop)")
    return np.asarray(arr, dtype=np.uint8, order="C")


# The largest integer any setting or size may be: the kernels take int64. A counter
# (optimizer steps, epochs) stays below 2**53, where floats still count exactly.
MAX_INT = 2**63 - 1
MAX_COUNT = 2**53


def show_number(value) -> str:
    """A number for an error message: a huge integer by its size, not by its digits
    (a 401-digit setting would fill the screen; str() refuses above 4300 digits)."""
    if isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_)):
        n = int(value)
        if abs(n) >= 10**30:
            digits = int(abs(n).bit_length() * math.log10(2)) + 1
            return f"{'-' if n < 0 else ''}an integer of about {digits} digits"
        return str(n)
    return f"{float(value):g}"


def real(value, name: str) -> float:
    """``value`` (a real number, not a bool) as a Python float; an integer or fraction
    too large for a float64 is refused with a ValueError naming ``name`` (float()
    would raise OverflowError)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    try:
        return float(value)
    except OverflowError:
        raise ValueError(
            f"{name} must be finite, got {show_number(value)} (too large for a float)"
        ) from None


def scalar(
    value,
    name: str,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """A finite real hyperparameter as a Python float, optionally within bounds.

    Returned as a Python float so that NumPy treats it as a weak scalar: it is cast
    to the array dtype once, never the array promoted to float64.
    """
    v = real(value, name)
    if not math.isfinite(v):
        raise ValueError(f"{name} must be finite, got {v}")
    lo_bad = low is not None and (v <= low if low_open else v < low)
    hi_bad = high is not None and (v >= high if high_open else v > high)
    if lo_bad or hi_bad:
        lo = "" if low is None else ("(" if low_open else "[") + f"{low:g}"
        hi = "" if high is None else f"{high:g}" + (")" if high_open else "]")
        if low is None:
            rng = f"<{'' if high_open else '='} {high:g}"
        elif high is None:
            rng = f">{'' if low_open else '='} {low:g}"
        else:
            rng = f"in {lo}, {hi}"
        raise ValueError(f"{name} must be {rng}, got {v:g}")
    return v


def integer(value, name: str, *, low: int | None = None, high: int | None = MAX_INT) -> int:
    """An integer setting, size or counter in [low, high] (high: 2**63 - 1 unless
    given, so that no absurd value reaches an int64 kernel or an allocation)."""
    if type(value) is int:  # the common case, without the ABC check (bool is not int)
        v = value
    elif isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    else:
        v = int(value)
    if low is not None and v < low:
        raise ValueError(f"{name} must be >= {low}, got {show_number(v)}")
    if high is not None and v > high:
        shown = "2**63 - 1" if high == MAX_INT else "2**53" if high == MAX_COUNT else high
        raise ValueError(f"{name} must be <= {shown}, got {show_number(v)}")
    return v


def counter(value, name: str) -> int:
    """A count of steps or epochs: an integer in [0, 2**53]."""
    return integer(value, name, low=0, high=MAX_COUNT)


def boolean(value, name: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def choice(value, name: str, options) -> str:
    if not isinstance(value, str) or value not in options:
        raise ValueError(f"{name} must be one of {sorted(options)}, got {value!r}")
    return value


# --- data and model-construction inputs (used by the model, the loop and the estimators) ---


def check_random_state(random_state) -> np.random.SeedSequence:
    """A SeedSequence from None (fresh entropy), an int >= 0, a SeedSequence or a Generator."""
    if random_state is None:
        return np.random.SeedSequence()
    if isinstance(random_state, np.random.SeedSequence):
        return random_state
    if isinstance(random_state, np.random.Generator):
        return np.random.SeedSequence(random_state.integers(0, 2**63, size=4).tolist())
    if isinstance(random_state, numbers.Integral) and not isinstance(random_state, bool):
        if random_state < 0:
            raise ValueError(f"random_state must be >= 0, got {random_state}")
        return np.random.SeedSequence(int(random_state))
    raise TypeError(
        f"random_state must be None, an int, a numpy SeedSequence or Generator, "
        f"got {type(random_state).__name__}"
    )


def check_dtype(dtype) -> np.dtype:
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"dtype must be float32 or float64, got {dtype!r}") from None
    if dt not in FLOAT_DTYPES:
        raise ValueError(f"dtype must be float32 or float64, got {dt}")
    return dt


def all_finite(a: np.ndarray) -> bool:
    """True when every element is finite; one cheap sum in the common case.

    The sum runs in the array's own dtype (no conversion pass): a NaN or an infinity
    makes it non-finite, and so may an overflow of finite values, which the exact
    element-wise check then clears.
    """
    if a.dtype.kind != "f" or a.size == 0:
        return True
    with np.errstate(over="ignore", invalid="ignore"):
        s = float(np.add.reduce(a, axis=None))
    return math.isfinite(s) or bool(np.isfinite(a).all())


def check_X(X, dtype, n_features: int | None = None, name: str = "X") -> np.ndarray:
    """``X`` as a C-contiguous 2-D array of ``dtype``, checked (the input rule of
    :mod:`fastnn.model`: any real dtype, converted once; no NaN or infinity after the
    conversion).

    Raises TypeError for non-numeric data and ValueError for a wrong shape, an empty
    array, a wrong number of features or non-finite values.
    """
    if is_sparse(X):
        return check_sparse_X(X, dtype, n_features, name)
    if hasattr(X, "tocsr") or hasattr(X, "toarray"):
        raise TypeError(
            f"{name} is a sparse matrix of type {type(X).__name__}, not a scipy.sparse "
            f"matrix or array; convert it to scipy.sparse.csr_matrix (or {name}.toarray())"
        )
    try:
        arr = np.asarray(X)
    except Exception as exc:  # ragged nested lists
        raise TypeError(f"{name} must be a 2-D array of numbers ({exc})") from None
    if arr.dtype.kind == "O" and hasattr(X, "dtypes") and hasattr(X, "columns"):
        arr = _frame_values(X, name)
    if arr.dtype.kind not in "biuf":
        raise TypeError(
            f"{name} must hold real numbers (bool, int or float), got dtype {arr.dtype}"
        )
    if arr.ndim != 2:
        hint = f"; use {name}.reshape(-1, 1) for a single feature" if arr.ndim == 1 else ""
        raise ValueError(f"{name} must be 2-D (n_samples, n_features), got shape {arr.shape}{hint}")
    if arr.shape[0] == 0:
        raise ValueError(f"{name} is empty: it has 0 samples (shape {arr.shape})")
    if n_features is not None and arr.shape[1] != n_features:
        raise ValueError(f"{name} has {arr.shape[1]} features, but this model expects {n_features}")
    with np.errstate(over="ignore"):
        out = np.ascontiguousarray(arr, dtype=dtype)
    if not all_finite(out):
        extra = "" if out.dtype == arr.dtype else f" (after conversion to {out.dtype})"
        raise ValueError(f"{name} contains NaN or infinity{extra}")
    return out


def is_sparse(X) -> bool:
    """True for a scipy.sparse matrix or array (spmatrix or sparray, any format)."""
    if isinstance(X, np.ndarray) or not (hasattr(X, "tocsr") and hasattr(X, "format")):
        return False
    import scipy.sparse

    return bool(scipy.sparse.issparse(X))


def check_sparse_X(X, dtype, n_features: int | None = None, name: str = "X"):
    """A scipy.sparse ``X`` as a checked CSR matrix of ``dtype`` (docs/spec.md §2.1, §9).

    CSR input of the right dtype is returned as given (no copy); CSR of another real
    dtype gets a converted copy of its values; any other format (CSC, COO, BSR, LIL,
    DOK, DIA) is converted to CSR, a copy of its non-zeros (never a dense copy), as
    scikit-learn converts the formats it does not read. The arrays are checked as the
    kernels need them (:func:`csr_arrays`): a malformed matrix is refused with an error
    naming ``name``, never read out of bounds.
    """
    import scipy.sparse

    if len(X.shape) != 2:
        raise ValueError(f"{name} must be 2-D (n_samples, n_features), got shape {X.shape}")
    n, p = X.shape
    if n == 0:
        raise ValueError(f"{name} is empty: it has 0 samples (shape {X.shape})")
    if n_features is not None and p != n_features:
        raise ValueError(f"{name} has {p} features, but this model expects {n_features}")
    if X.dtype.kind not in "biuf":
        raise TypeError(
            f"{name} must hold real numbers (bool, int or float), got a sparse matrix of "
            f"dtype {X.dtype}"
        )
    fmt = X.format
    if fmt in ("csc", "bsr"):
        # compressed by columns (or blocks): checked before SciPy's converter reads them
        n_index = p if fmt == "csc" else n // max(1, X.blocksize[0])
        width = n if fmt == "csc" else p // max(1, X.blocksize[1])
        csr_arrays(
            X.indptr, X.indices, np.zeros(len(X.indices)), width, name=f"{name}.", rows=n_index
        )
    elif fmt == "coo":
        for label, idx, bound in (("row", X.row, n), ("col", X.col, p)):
            arr = np.asarray(idx)
            if arr.dtype not in INDEX_DTYPES:
                raise TypeError(
                    f"{name}.{label} must have an index dtype int32 or int64, got {arr.dtype}"
                )
            if arr.size and (int(arr.min()) < 0 or int(arr.max()) >= bound):
                raise ValueError(
                    f"{name}.{label} must hold indices in [0, {bound}), got values in "
                    f"[{arr.min()}, {arr.max()}]"
                )
    csr = X if fmt == "csr" else X.tocsr()
    data = np.asarray(csr.data)
    if data.dtype.kind not in "biuf":
        raise TypeError(f"{name} must hold real numbers, got stored values of dtype {data.dtype}")
    with np.errstate(over="ignore"):
        values = data.astype(dtype, copy=False)
    indptr, indices, values = csr_arrays(
        csr.indptr, csr.indices, values, p, dtype, name=f"{name}.", rows=n
    )
    if not all_finite(values):
        extra = "" if values.dtype == data.dtype else f" (after conversion to {values.dtype})"
        raise ValueError(f"{name} contains NaN or infinity{extra}")
    if values is csr.data and indptr is csr.indptr and indices is csr.indices:
        return csr
    cls = scipy.sparse.csr_array if isinstance(X, scipy.sparse.sparray) else scipy.sparse.csr_matrix
    out = cls((n, p), dtype=dtype)
    # the checked arrays themselves (the constructor would re-derive their index dtype)
    out.data, out.indices, out.indptr = values, indices, indptr
    return out


def _frame_values(frame, name):
    """A DataFrame whose columns mix bool, int and float (NumPy gives object) as
    float64, as scikit-learn converts it; other columns are named in a TypeError."""
    bad = [
        (c, dt)
        for c, dt in zip(frame.columns, frame.dtypes)
        if not (isinstance(dt, np.dtype) and dt.kind in "biuf")
    ]
    if bad:
        shown = ", ".join(f"{c!r} ({dt})" for c, dt in bad[:5])
        raise TypeError(
            f"{name} must hold real numbers (bool, int or float); column(s) "
            f"{shown} do not: encode or drop them first"
        )
    return np.asarray(frame, dtype=np.float64)
