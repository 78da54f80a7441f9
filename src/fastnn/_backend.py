"""The backend registry: ``fastnn.backend(name)`` and the checked kernel namespace.

Each backend ("numpy", "numba", "cython") provides the same raw kernel functions (see
``fastnn.reference`` for their contract). :class:`Backend` wraps one of them with the
argument checks, output allocation and contiguity handling that kernels never do, so
model code calls the same methods whichever backend runs.

The raw functions themselves are kept in ``Backend._raw``: private, unchecked
internal API used by fastnn's own hot paths (the model, the optimizers,
``fastnn._epoch``), which prepare their arguments themselves. The compiled kernels
do no bounds checks, so an inconsistent length there reads or writes out of bounds;
call the checked methods.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
import warnings
from collections.abc import Callable
from types import SimpleNamespace

import numpy as np

from . import _validation as v
from . import registry
from ._kernels import epoch_args
from ._kernels.codes import ACTIVATION_CODES, DEFAULT_ALPHA
from .losses import NO_WEIGHTS, check_sample_weight
from .reference.training import train_epoch as _reference_train_epoch

BACKENDS = ("numpy", "numba", "cython")

# Kernel families; each backend has one module per family with the same names
# (fastnn.reference.<f>, fastnn._kernels.<f>_numba, fastnn._kernels.<f>_cython).
# FAMILIES hold the kernels behind Backend's checked methods (fastnn.reference.__all__);
# MODEL_FAMILIES hold whole-model kernels (train_epoch), which fastnn._epoch calls with
# the arguments it prepares and checks itself (once per plan); Backend._train_epoch is
# their checked tier.
FAMILIES = ("activations", "dense", "csr", "losses", "optimizers", "normalization")
MODEL_FAMILIES = ("training",)

_MODULES = {
    "numpy": "fastnn.reference.{}",
    "numba": "fastnn._kernels.{}_numba",
    "cython": "fastnn._kernels.{}_cython",
}

# The debug switch of fastnn's own hot paths: with FASTNN_CHECK_KERNELS=1, the model,
# its losses and the optimizers call every kernel through the checked methods (which
# validate shapes, dtypes and contiguity on every call) instead of the raw functions.
CHECK_INTERNAL_CALLS = os.environ.get("FASTNN_CHECK_KERNELS", "") not in ("", "0")

BUILD_HINT = (
    "fastnn's Cython kernels are not built. Install the package with `pip install .` "
    "or, in a source checkout, build them in place with "
    "`python setup.py build_ext --inplace`."
)


# The whole-epoch kernel's signature (the contract's), for the checked tier.
_TRAIN_EPOCH_SIGNATURE = inspect.signature(_reference_train_epoch)


class BuildWarning(UserWarning):
    """fastnn runs without its Cython kernels (an unbuilt source tree)."""


def _load_raw(name: str) -> SimpleNamespace:
    """The raw kernel functions of one backend, gathered from its family modules."""
    if name not in _MODULES:
        raise ValueError(f"backend must be one of {list(BACKENDS)}, got {name!r}")
    try:
        modules = [
            importlib.import_module(_MODULES[name].format(f)) for f in FAMILIES + MODEL_FAMILIES
        ]
    except ImportError as exc:
        if name != "cython":
            raise
        raise ImportError(f"{BUILD_HINT} ({exc})") from None
    ns = {}
    for mod in modules:
        for fname in mod.__all__:
            ns[fname] = getattr(mod, fname)
    return SimpleNamespace(**ns)


def cython_is_built() -> bool:
    return all(
        importlib.util.find_spec(f"fastnn._kernels.{f}_cython") is not None
        for f in FAMILIES + MODEL_FAMILIES
    )


def default_backend_name() -> str:
    """$FASTNN_BACKEND if set, else the Cython kernels (no JIT wait) when built, else Numba."""
    env = os.environ.get("FASTNN_BACKEND")
    if env:
        return v.choice(env, "FASTNN_BACKEND", BACKENDS)
    return "cython" if cython_is_built() else "numba"


def available_backends() -> tuple[str, ...]:
    """The backends that can run here, fastest first."""
    names = ["numba", "numpy"]
    if cython_is_built():
        names.insert(0, "cython")
    return tuple(names)


_CACHE: dict[str, Backend] = {}


def backend(name: str | None = None) -> Backend:
    """The kernel namespace of backend ``name`` ("numpy", "numba" or "cython").

    ``None`` picks the default: ``$FASTNN_BACKEND`` if set, else "cython" when its
    extensions are built, else "numba". All backends expose the same methods and give
    the same numbers within the equivalence rules of docs/spec.md §11.
    """
    if name is None:
        name = default_backend_name()
    v.choice(name, "backend", BACKENDS)
    if name not in _CACHE:
        _CACHE[name] = Backend(name, _load_raw(name))
    return _CACHE[name]


def resolve_activation(activation, alpha):
    """(code, alpha) for an activation name; alpha defaults per docs/spec.md §3."""
    v.choice(activation, "activation", ACTIVATION_CODES)
    if alpha is None:
        alpha = DEFAULT_ALPHA.get(activation, 0.0)
    return ACTIVATION_CODES[activation], v.scalar(alpha, "alpha")


class _Output:
    """An output or in-place buffer handed to a kernel as C-contiguous memory.

    A caller's non-contiguous array is replaced by a contiguous work copy during the
    call and written back afterwards, so kernels only ever see contiguous memory. An
    ndarray subclass (np.memmap, np.matrix...) is written through a base-class view of
    its memory and returned as given, like a NumPy ufunc's ``out``; masked arrays are
    refused.
    """

    def __init__(self, arr, name, shape, dtype, *, inplace=False):
        shape = tuple(shape)
        self.given = arr
        if arr is None:
            self.target, self.work = None, np.empty(shape, dtype)
            return
        arr = v.plain_view(arr, name)
        if arr.dtype != np.dtype(dtype):
            raise TypeError(f"{name} must have dtype {np.dtype(dtype).name}, got {arr.dtype}")
        v.check_shape(arr, name, shape)
        if not arr.flags.writeable:
            raise ValueError(f"{name} must be writeable")
        if arr.flags.c_contiguous:
            self.target, self.work = None, arr
        else:
            self.target = arr
            self.work = np.ascontiguousarray(arr) if inplace else np.empty(shape, dtype)

    def done(self):
        if self.target is not None:
            self.target[...] = self.work
        return self.work if self.given is None else self.given


def _flat(a):
    return a.reshape(-1)


class Backend:
    """Checked access to one backend's kernels; see ``fastnn.reference`` for formulas.

    Every method validates its arguments, allocates the outputs it is not given and
    returns them. Arrays are float32 or float64, one dtype per call.

    Inputs may be any array-like: ndarray subclasses are read through a base-class
    view (results are plain ndarrays); masked arrays are refused, since the kernels
    would ignore the mask. Outputs and in-place buffers (``out=``, ``param``...) must
    be NumPy arrays of the exact shape and dtype; a subclass such as np.memmap or
    np.matrix is written through a view of its memory and returned as given, like a
    ufunc's ``out``. Elementwise methods keep the shape of their input, 0-d included.

    ``_raw`` holds the backend's kernel functions unchecked: it is private internal
    API for fastnn's own hot paths (they never validate their arguments, and a wrong
    length there corrupts memory), not part of the public interface.
    """

    def __init__(self, name: str, raw: SimpleNamespace):
        self.name = name
        self._raw = raw
        self._checked_raw: SimpleNamespace | None = None

    @property
    def _internal(self) -> SimpleNamespace:
        """The kernels fastnn's own hot paths call, with the raw signatures.

        The unchecked ``_raw`` functions, or, with the debug switch
        ``FASTNN_CHECK_KERNELS=1`` (``CHECK_INTERNAL_CALLS``), the checked methods
        behind the same signatures: a wrong argument then raises a clear error instead
        of reading or writing out of bounds.
        """
        if not CHECK_INTERNAL_CALLS:
            return self._raw
        if self._checked_raw is None:
            self._checked_raw = _checked_as_raw(self)
        return self._checked_raw

    def __repr__(self):
        return f"fastnn.backend({self.name!r})"

    # --- activations -------------------------------------------------------------
    def _elementwise(self, fn, z, out, *scalars):
        _no_overlap({"out": out}, {"z": z}, allow={("out", "z")})
        z = v.float_array(z, "z")
        o = _Output(out, "out", z.shape, z.dtype)
        fn(_flat(z), *scalars, _flat(o.work))
        return o.done()

    def _rows(self, z, name):
        z = v.float_array(z, name, ndim=(1, 2))
        if z.size == 0 or z.shape[-1] == 0:
            raise ValueError(
                f"{name} must have at least one row and one column for a "
                f"row-wise softmax, got shape {z.shape}"
            )
        return z.reshape(1, -1) if z.ndim == 1 else z

    def softmax(self, z, out=None):
        """Row-wise softmax of z (m, k); a 1-D z is one row. ``out`` may be ``z``."""
        _no_overlap({"out": out}, {"z": z}, allow={("out", "z")})
        shape = np.shape(z)
        z2 = self._rows(z, "z")
        o = _Output(out, "out", shape, z2.dtype)
        self._raw.softmax(z2, o.work.reshape(z2.shape))
        return o.done()

    def softmax_backward(self, a, da, out=None):
        """dz = a * (da - sum_j da_j a_j) row-wise, a = softmax(z), da = dL/da."""
        _no_overlap({"out": out}, {"a": a, "da": da})
        shape = np.shape(a)
        a2 = self._rows(a, "a")
        da2 = v.float_array(da, "da", dtype=a2.dtype)
        v.check_shape(da2, "da", shape)
        o = _Output(out, "out", shape, a2.dtype)
        self._raw.softmax_backward(a2, da2.reshape(a2.shape), o.work.reshape(a2.shape))
        return o.done()

    def activation_forward(self, z, activation="relu", alpha=None, out=None):
        """out = g(z) for the activation named ``activation``; z is (m, k); out may be z."""
        _no_overlap({"out": out}, {"z": z}, allow={("out", "z")})
        code, alpha = resolve_activation(activation, alpha)
        z = v.float_array(z, "z", ndim=2)
        if code == ACTIVATION_CODES["softmax"]:
            self._rows(z, "z")
        o = _Output(out, "out", z.shape, z.dtype)
        self._raw.activation_forward(z, code, alpha, o.work)
        return o.done()

    def activation_backward(self, da, z, a, activation="relu", alpha=None, out=None):
        """out = da * g'(z) given z and its saved output a = g(z); all (m, k).

        ``out`` may be ``da`` (except for softmax, whose row sums read all of ``da``).
        """
        code, alpha = resolve_activation(activation, alpha)
        softmax = code == ACTIVATION_CODES["softmax"]
        _no_overlap(
            {"out": out}, {"da": da, "z": z, "a": a}, allow=set() if softmax else {("out", "da")}
        )
        z = v.float_array(z, "z", ndim=2)
        if softmax:
            self._rows(z, "z")
        a = v.float_array(a, "a", dtype=z.dtype)
        da = v.float_array(da, "da", dtype=z.dtype)
        v.check_shape(a, "a", z.shape)
        v.check_shape(da, "da", z.shape)
        o = _Output(out, "out", z.shape, z.dtype)
        self._raw.activation_backward(da, z, a, code, alpha, o.work)
        return o.done()

    # --- dense layer ---------------------------------------------------------------
    def dense_forward(self, x, w, b, activation="identity", alpha=None, z=None, a=None):
        """z = x @ w + b, a = g(z); x (m, n_in), w (n_in, n_out), b (n_out,).

        Returns ``(z, a)``; ``a`` may be given as the same array as ``z``.
        """
        code, alpha = resolve_activation(activation, alpha)
        _no_overlap({"z": z, "a": a}, {"x": x, "w": w, "b": b}, allow={("z", "a")})
        x = v.float_array(x, "x", ndim=2)
        w = v.float_array(w, "w", ndim=2, dtype=x.dtype)
        b = v.float_array(b, "b", ndim=1, dtype=x.dtype)
        m, n_in = x.shape
        if w.shape[0] != n_in:
            raise ValueError(
                f"w must have shape ({n_in}, n_out) to multiply x of shape {x.shape}, got {w.shape}"
            )
        n_out = w.shape[1]
        v.check_shape(b, "b", (n_out,))
        _check_nonempty_product(m, n_in, n_out)
        zo = _Output(z, "z", (m, n_out), x.dtype)
        same = a is not None and a is z
        ao = zo if same else _Output(a, "a", (m, n_out), x.dtype)
        self._raw.dense_forward(x, w, b, code, alpha, zo.work, ao.work)
        zr = zo.done()
        return zr, (zr if same else ao.done())

    def dense_backward(
        self, x, z, a, da, activation="identity", alpha=None, dz=None, dw=None, db=None
    ):
        """dz = da * g'(z), dw = x.T @ dz, db = sum of dz over rows.

        x (m, n_in); z, a, da, dz (m, n_out); dw (n_in, n_out); db (n_out,). ``dz`` may
        be ``da``. Returns ``(dz, dw, db)``.
        """
        code, alpha = resolve_activation(activation, alpha)
        _no_overlap(
            {"dz": dz, "dw": dw, "db": db}, {"x": x, "z": z, "a": a, "da": da}, allow={("dz", "da")}
        )
        x = v.float_array(x, "x", ndim=2)
        z = v.float_array(z, "z", ndim=2, dtype=x.dtype)
        m, n_in = x.shape
        if z.shape[0] != m:
            raise ValueError(f"z must have {m} rows like x, got shape {z.shape}")
        n_out = z.shape[1]
        _check_nonempty_product(m, n_in, n_out)
        a, da_arr, dzo, dwo, dbo = _backward_outputs(z, a, da, dz, dw, db, n_in)
        self._raw.dense_backward(x, z, a, da_arr, code, alpha, dzo.work, dwo.work, dbo.work)
        return dzo.done(), dwo.done(), dbo.done()

    def dense_input_gradient(self, dz, w, dx=None):
        """dx = dz @ w.T; dz (m, n_out), w (n_in, n_out), dx (m, n_in)."""
        _no_overlap({"dx": dx}, {"dz": dz, "w": w})
        dz = v.float_array(dz, "dz", ndim=2)
        w = v.float_array(w, "w", ndim=2, dtype=dz.dtype)
        m, n_out = dz.shape
        if w.shape[1] != n_out:
            raise ValueError(
                f"w must have shape (n_in, {n_out}) to match dz of shape {dz.shape}, got {w.shape}"
            )
        n_in = w.shape[0]
        _check_nonempty_product(m, n_in, n_out)
        o = _Output(dx, "dx", (m, n_in), dz.dtype)
        self._raw.dense_input_gradient(dz, w, o.work)
        return o.done()

    # --- the first dense layer on CSR rows (docs/spec.md §2.1) ------------------------
    def _csr_rows(self, indptr, indices, data, rows, n_features, dtype):
        ip, ind, dat = v.csr_arrays(indptr, indices, data, n_features, dtype)
        n_rows = ip.shape[0] - 1
        r = v.plain_array(rows, "rows")
        if r.ndim != 1:
            raise ValueError(f"rows must be 1-D (one row id per batch row), got shape {r.shape}")
        if r.shape[0] == 0:
            raise ValueError("rows is empty: a batch needs at least one row")
        r = v.index_array(
            r, "rows", r.shape[0], n_rows, "row indices of the CSR matrix", "one per batch row"
        )
        return ip, ind, dat, r

    def csr_dense_forward(
        self, indptr, indices, data, rows, w, b, activation="identity", alpha=None, z=None, a=None
    ):
        """z = X[rows] @ w + b, a = g(z) for X the CSR matrix (indptr, indices, data).

        indptr (n_rows + 1,) and indices (nnz,) int32 or int64, data (nnz,) of w's dtype,
        rows (m,) integer row ids in [0, n_rows); w (n_features, n_out), b (n_out,). The
        sums run in the order of docs/spec.md §2.1 (bit-identical across backends).
        Returns ``(z, a)`` (m, n_out); ``a`` may be given as the same array as ``z``.
        """
        code, alpha = resolve_activation(activation, alpha)
        _no_overlap(
            {"z": z, "a": a},
            {"indptr": indptr, "indices": indices, "data": data, "rows": rows, "w": w, "b": b},
            allow={("z", "a")},
        )
        w = v.float_array(w, "w", ndim=2)
        b = v.float_array(b, "b", ndim=1, dtype=w.dtype)
        n_features, n_out = w.shape
        v.check_shape(b, "b", (n_out,))
        ip, ind, dat, r = self._csr_rows(indptr, indices, data, rows, n_features, w.dtype)
        _check_nonempty_product(r.shape[0], n_features, n_out)
        zo = _Output(z, "z", (r.shape[0], n_out), w.dtype)
        same = a is not None and a is z
        ao = zo if same else _Output(a, "a", (r.shape[0], n_out), w.dtype)
        self._raw.csr_dense_forward(ip, ind, dat, r, w, b, code, alpha, zo.work, ao.work)
        zr = zo.done()
        return zr, (zr if same else ao.done())

    def csr_dense_backward(
        self,
        indptr,
        indices,
        data,
        rows,
        z,
        a,
        da,
        activation="identity",
        alpha=None,
        dz=None,
        dw=None,
        db=None,
        *,
        n_features=None,
    ):
        """dz = da * g'(z), dw = X[rows].T @ dz, db = sum of dz over rows (§2.1).

        X is the CSR matrix (indptr, indices, data) as in :meth:`csr_dense_forward`;
        z, a, da, dz (m, n_out); dw (n_features, n_out), overwritten; db (n_out,).
        ``n_features`` is taken from ``dw`` when it is given, else required. ``dz`` may
        be ``da``. Returns ``(dz, dw, db)``.
        """
        code, alpha = resolve_activation(activation, alpha)
        _no_overlap(
            {"dz": dz, "dw": dw, "db": db},
            {
                "indptr": indptr,
                "indices": indices,
                "data": data,
                "rows": rows,
                "z": z,
                "a": a,
                "da": da,
            },
            allow={("dz", "da")},
        )
        z = v.float_array(z, "z", ndim=2)
        m, n_out = z.shape
        if dw is not None:
            n_features = np.shape(dw)[0]
        elif n_features is None:
            raise TypeError("csr_dense_backward needs dw or n_features (the number of columns)")
        n_features = v.integer(n_features, "n_features", low=1)
        ip, ind, dat, r = self._csr_rows(indptr, indices, data, rows, n_features, z.dtype)
        if r.shape[0] != m:
            raise ValueError(f"z must have one row per batch row ({r.shape[0]}), got {z.shape}")
        _check_nonempty_product(m, n_features, n_out)
        a, da_arr, dzo, dwo, dbo = _backward_outputs(z, a, da, dz, dw, db, n_features)
        self._raw.csr_dense_backward(
            ip, ind, dat, r, z, a, da_arr, code, alpha, dzo.work, dwo.work, dbo.work
        )
        return dzo.done(), dwo.done(), dbo.done()

    # --- losses ---------------------------------------------------------------------
    # sample_weight: per-sample weights (m,) (m = the rows of the prediction; a 1-D
    # prediction has one value per sample), or None (or empty); weighted, every value and gradient
    # is the weighted mean, sum_i w_i l_i / sum_i w_i (docs/spec.md §4, "Sample weights").
    def _pair(self, y_pred, y, pred_name, *, ndim=None):
        p = v.float_array(y_pred, pred_name, ndim=ndim)
        t = v.float_array(y, "y", dtype=p.dtype)
        v.check_shape(t, "y", p.shape)
        if p.size == 0:
            raise ValueError(f"{pred_name} is empty: a loss needs at least one sample")
        return p, t

    @staticmethod
    def _weights(sample_weight, p):
        """The kernels' weights: float64 (m,) for the m = len(p) samples, or empty for
        None or an empty array (the raw kernels' "no weights": no loss has 0 samples)."""
        if sample_weight is None or (
            isinstance(sample_weight, np.ndarray) and sample_weight.size == 0
        ):
            return NO_WEIGHTS
        m = p.shape[0] if p.ndim else 1
        return check_sample_weight(sample_weight, m)

    def mse(self, y_pred, y, sample_weight=None) -> float:
        """L = mean((y_pred - y)^2) over all elements (weighted: sum_i w_i sum_j d_ij^2 /
        (k sum_i w_i), k values per sample)."""
        p, t = self._pair(y_pred, y, "y_pred")
        return self._raw.mse(_flat(p), _flat(t), self._weights(sample_weight, p))

    def mse_gradient(self, y_pred, y, out=None, sample_weight=None):
        """dL/dy_pred = 2 (y_pred - y) / size (weighted: 2 w_i (y_pred - y) / (k S))."""
        _no_overlap({"out": out}, {"y_pred": y_pred, "y": y})
        p, t = self._pair(y_pred, y, "y_pred")
        w = self._weights(sample_weight, p)
        o = _Output(out, "out", p.shape, p.dtype)
        self._raw.mse_gradient(_flat(p), _flat(t), _flat(o.work), w)
        return o.done()

    def poisson(self, z, y, sample_weight=None) -> float:
        """L = mean(e^z - y z) over all elements; z the log of the predicted mean."""
        p, t = self._pair(z, y, "z")
        return self._raw.poisson(_flat(p), _flat(t), self._weights(sample_weight, p))

    def poisson_gradient(self, z, y, out=None, sample_weight=None):
        """dL/dz = (e^z - y) / size (weighted: w_i (e^z - y) / (k S))."""
        _no_overlap({"out": out}, {"z": z, "y": y})
        p, t = self._pair(z, y, "z")
        w = self._weights(sample_weight, p)
        o = _Output(out, "out", p.shape, p.dtype)
        self._raw.poisson_gradient(_flat(p), _flat(t), _flat(o.work), w)
        return o.done()

    @staticmethod
    def _as_rows(a):
        return a.reshape(a.shape[0], -1)

    def binary_cross_entropy(self, z, y, sample_weight=None) -> float:
        """``L = mean(max(z,0) - z y + log(1 + e^-|z|))`` on logits z (m,) or (m, k)."""
        p, t = self._pair(z, y, "z", ndim=(1, 2))
        w = self._weights(sample_weight, p)
        return self._raw.binary_cross_entropy(self._as_rows(p), self._as_rows(t), w)

    def binary_cross_entropy_gradient(self, z, y, out=None, sample_weight=None):
        """dL/dz = (sigmoid(z) - y) / m, m the number of samples (rows)."""
        _no_overlap({"out": out}, {"z": z, "y": y})
        p, t = self._pair(z, y, "z", ndim=(1, 2))
        w = self._weights(sample_weight, p)
        o = _Output(out, "out", p.shape, p.dtype)
        self._raw.binary_cross_entropy_gradient(
            self._as_rows(p), self._as_rows(t), self._as_rows(o.work), w
        )
        return o.done()

    @staticmethod
    def _logits(z):
        z = v.float_array(z, "z", ndim=2)
        if z.shape[0] == 0 or z.shape[1] == 0:
            raise ValueError(f"z must have at least one row and one class, got {z.shape}")
        return z

    def _logits_targets(self, z, y):
        """(z, y, sparse): y as int64 class indices or as float targets shaped like z."""
        z = self._logits(z)
        y_arr = v.plain_array(y, "y")
        if y_arr.dtype.kind in "iu":
            return z, v.label_array(y_arr, "y", z.shape[0], z.shape[1]), True
        t = v.float_array(y_arr, "y", dtype=z.dtype)
        v.check_shape(t, "y", z.shape)
        return z, t, False

    def cross_entropy(self, z, y, sample_weight=None) -> float:
        """L = mean(logsumexp(z) - z[y]); y class indices (m,) or one-hot (m, k)."""
        z, t, sparse = self._logits_targets(z, y)
        w = self._weights(sample_weight, z)
        return (self._raw.sparse_cross_entropy if sparse else self._raw.cross_entropy)(z, t, w)

    def cross_entropy_gradient(self, z, y, out=None, sample_weight=None):
        """dL/dz = (softmax(z) - onehot(y)) / m."""
        _no_overlap({"out": out}, {"z": z, "y": y})
        z, t, sparse = self._logits_targets(z, y)
        w = self._weights(sample_weight, z)
        o = _Output(out, "out", z.shape, z.dtype)
        fn = self._raw.sparse_cross_entropy_gradient if sparse else self._raw.cross_entropy_gradient
        fn(z, t, o.work, w)
        return o.done()

    def sparse_cross_entropy(self, z, labels, sample_weight=None) -> float:
        """cross_entropy with int class indices ``labels`` (m,)."""
        z = self._logits(z)
        return self._raw.sparse_cross_entropy(
            z,
            v.label_array(labels, "labels", z.shape[0], z.shape[1]),
            self._weights(sample_weight, z),
        )

    def sparse_cross_entropy_gradient(self, z, labels, out=None, sample_weight=None):
        """cross_entropy_gradient with int class indices ``labels`` (m,)."""
        _no_overlap({"out": out}, {"z": z, "labels": labels})
        z = self._logits(z)
        labels = v.label_array(labels, "labels", z.shape[0], z.shape[1])
        w = self._weights(sample_weight, z)
        o = _Output(out, "out", z.shape, z.dtype)
        self._raw.sparse_cross_entropy_gradient(z, labels, o.work, w)
        return o.done()

    # --- optimizers -----------------------------------------------------------------
    def _buffers(self, param, grad, **state):
        """Checked (param, grad, state...) work buffers and the handles to write back."""
        v.plain_view(param, "param")
        _no_overlap({"param": param, **state}, {"grad": grad})
        p_dtype = v.float_array(param[:0] if param.ndim else param, "param").dtype
        outs = [_Output(param, "param", param.shape, p_dtype, inplace=True)]
        g = v.float_array(grad, "grad", dtype=p_dtype)
        v.check_shape(g, "grad", param.shape)
        for name, arr in state.items():
            outs.append(_Output(arr, name, param.shape, p_dtype, inplace=True))
        return outs, g

    @staticmethod
    def _finish(outs):
        for o in outs:
            o.done()

    # The checked ``<name>_step`` of every optimizer is generated from its registry row
    # (below the class); this is the update by code that the step path calls.
    def optimizer_step(
        self, param, grad, state1, state2, optimizer, step, lr, hyper, weight_decay=0.0
    ):
        """One update of the optimizer named ``optimizer``, in place (docs/spec.md §5).

        Parameters
        ----------
        param, grad : ndarray of one float dtype and shape
            The parameters (updated) and their gradient.
        state1, state2 : ndarray (the shape and dtype of ``param``) or None
            The optimizer's state buffers in its registry row's order (``states``),
            updated; None (or an empty array) for those it does not have.
        optimizer : str
            A name of ``fastnn.registry.OPTIMIZERS``.
        step : int
            The step count t >= 1 (read by the optimizers with bias corrections).
        lr : float
            The learning rate, >= 0.
        hyper : array_like of float, shape (len(registry.HYPER_SLOTS),)
            The kernels' hyperparameter vector: the slots the optimizer's row fills
            (h0, h1, eps, eps_inside_sqrt; each checked against its range), the others
            ignored (its weight_decay slot too: ``weight_decay`` is this call's).
        weight_decay : float, default 0
            This call's weight decay, >= 0.
        """
        row = registry.optimizer(optimizer)
        step = v.integer(step, "step", low=1)
        lr = v.scalar(lr, "lr", low=0)
        wd = v.scalar(weight_decay, "weight_decay", low=0)
        h = np.array(v.float_array(hyper, "hyper", ndim=1, dtype=np.float64), np.float64)
        v.check_shape(h, "hyper", (len(registry.HYPER_SLOTS),))
        for hp in row.hypers:
            i = registry.HYPER_SLOTS.index(hp.slot)
            value = h[i]
            if isinstance(hp.default, bool):
                if value not in (0.0, 1.0):
                    raise ValueError(f"hyper's {hp.slot} ({hp.name}) must be 0 or 1, got {value}")
            else:
                check_hyperparameter(hp, value, f"hyper's {hp.slot} ({hp.name})")
        given = {"state1": state1, "state2": state2}
        names = dict(zip(("state1", "state2"), row.states))
        for key, arr in given.items():
            if key not in names and arr is not None and np.size(arr):
                raise ValueError(f"{key} must be None or empty: {row.name} has {len(names)} states")
        outs, g = self._buffers(param, grad, **{key: given[key] for key in names})
        empty = np.zeros(0, outs[0].work.dtype)
        states = [_flat(o.work) for o in outs[1:]] + [empty, empty]
        self._raw.optimizer_step(
            _flat(outs[0].work), _flat(g), states[0], states[1], row.code, step, lr, h, wd
        )
        self._finish(outs)

    def squared_norm(self, x) -> float:
        """sum x^2, accumulated in float64."""
        return self._raw.squared_norm(_flat(v.float_array(x, "x")))

    def scale_inplace(self, x, factor):
        """``x *= factor``, in place."""
        factor = v.scalar(factor, "factor")
        v.plain_view(x, "x")
        o = _Output(x, "x", x.shape, v.float_array(x[:0] if x.ndim else x, "x").dtype, inplace=True)
        self._raw.scale_inplace(_flat(o.work), factor)
        o.done()

    def clip_grad_norm(self, grad, max_norm) -> float:
        """Scale ``grad`` in place by max_norm / ||grad|| when its L2 norm exceeds
        max_norm; returns the norm before clipping (as torch's ``clip_grad_norm_``)."""
        max_norm = v.scalar(max_norm, "max_norm", low=0, low_open=True)
        g = v.float_array(v.plain_view(grad, "grad"), "grad")
        norm = float(np.sqrt(self._raw.squared_norm(_flat(g))))
        if norm > max_norm:
            o = _Output(grad, "grad", g.shape, g.dtype, inplace=True)
            self._raw.scale_inplace(_flat(o.work), max_norm / norm)
            o.done()
        return norm

    # --- dropout and batch normalisation -------------------------------------------
    def dropout(self, x, mask, rate, out=None):
        """out = mask * x / (1 - rate), mask the boolean keep mask (shape of x).

        ``out`` may be ``x``; the same call carries the gradient backwards.
        """
        _no_overlap({"out": out}, {"x": x, "mask": mask}, allow={("out", "x")})
        x = v.float_array(x, "x")
        rate = v.scalar(rate, "rate", low=0, high=1, high_open=True)
        mask = v.mask_array(mask, "mask", x.shape)
        o = _Output(out, "out", x.shape, x.dtype)
        self._raw.dropout(_flat(x), _flat(mask), rate, _flat(o.work))
        return o.done()

    def _bn_params(self, x, gamma, beta, name_x="x"):
        x = v.float_array(x, name_x, ndim=2)
        k = x.shape[1]
        gamma = v.float_array(gamma, "gamma", ndim=1, dtype=x.dtype)
        beta = v.float_array(beta, "beta", ndim=1, dtype=x.dtype)
        v.check_shape(gamma, "gamma", (k,))
        v.check_shape(beta, "beta", (k,))
        return x, gamma, beta

    def batch_norm_train(
        self,
        x,
        gamma,
        beta,
        running_mean,
        running_var,
        eps=1e-5,
        momentum=0.1,
        out=None,
        x_hat=None,
        inv_std=None,
    ):
        """Batch normalisation of x (m, k), m >= 2, updating the running statistics.

        Returns ``(out, x_hat, inv_std)``; the last two feed ``batch_norm_backward``.
        """
        _no_overlap(
            {
                "running_mean": running_mean,
                "running_var": running_var,
                "out": out,
                "x_hat": x_hat,
                "inv_std": inv_std,
            },
            {"x": x, "gamma": gamma, "beta": beta},
        )
        x, gamma, beta = self._bn_params(x, gamma, beta)
        m, k = x.shape
        if m < 2:
            raise ValueError(
                f"batch normalisation in training needs at least 2 rows, got x of shape {x.shape}"
            )
        eps = v.scalar(eps, "eps", low=0, low_open=True)
        momentum = v.scalar(momentum, "momentum", low=0, high=1)
        rm = _Output(running_mean, "running_mean", (k,), x.dtype, inplace=True)
        rv = _Output(running_var, "running_var", (k,), x.dtype, inplace=True)
        o = _Output(out, "out", x.shape, x.dtype)
        xh = _Output(x_hat, "x_hat", x.shape, x.dtype)
        inv = _Output(inv_std, "inv_std", (k,), x.dtype)
        self._raw.batch_norm_train(
            x, gamma, beta, eps, momentum, rm.work, rv.work, o.work, xh.work, inv.work
        )
        rm.done()
        rv.done()
        return o.done(), xh.done(), inv.done()

    def batch_norm_eval(self, x, gamma, beta, running_mean, running_var, eps=1e-5, out=None):
        """out = gamma (x - running_mean) / sqrt(running_var + eps) + beta."""
        _no_overlap(
            {"out": out},
            {
                "x": x,
                "gamma": gamma,
                "beta": beta,
                "running_mean": running_mean,
                "running_var": running_var,
            },
        )
        x, gamma, beta = self._bn_params(x, gamma, beta)
        k = x.shape[1]
        rm = v.float_array(running_mean, "running_mean", ndim=1, dtype=x.dtype)
        rv = v.float_array(running_var, "running_var", ndim=1, dtype=x.dtype)
        v.check_shape(rm, "running_mean", (k,))
        v.check_shape(rv, "running_var", (k,))
        eps = v.scalar(eps, "eps", low=0, low_open=True)
        o = _Output(out, "out", x.shape, x.dtype)
        self._raw.batch_norm_eval(x, gamma, beta, rm, rv, eps, o.work)
        return o.done()

    def batch_norm_backward(self, dout, x_hat, gamma, inv_std, dx=None, dgamma=None, dbeta=None):
        """Gradients of batch_norm_train; returns ``(dx, dgamma, dbeta)``."""
        _no_overlap(
            {"dx": dx, "dgamma": dgamma, "dbeta": dbeta},
            {"dout": dout, "x_hat": x_hat, "gamma": gamma, "inv_std": inv_std},
        )
        dout = v.float_array(dout, "dout", ndim=2)
        m, k = dout.shape
        if m == 0:
            raise ValueError("dout is empty: batch normalisation needs at least one row")
        x_hat = v.float_array(x_hat, "x_hat", dtype=dout.dtype)
        v.check_shape(x_hat, "x_hat", dout.shape)
        gamma = v.float_array(gamma, "gamma", ndim=1, dtype=dout.dtype)
        inv_std = v.float_array(inv_std, "inv_std", ndim=1, dtype=dout.dtype)
        v.check_shape(gamma, "gamma", (k,))
        v.check_shape(inv_std, "inv_std", (k,))
        dxo = _Output(dx, "dx", dout.shape, dout.dtype)
        dgo = _Output(dgamma, "dgamma", (k,), dout.dtype)
        dbo = _Output(dbeta, "dbeta", (k,), dout.dtype)
        self._raw.batch_norm_backward(dout, x_hat, gamma, inv_std, dxo.work, dgo.work, dbo.work)
        return dxo.done(), dgo.done(), dbo.done()

    # --- whole epoch -------------------------------------------------------------
    def _train_epoch(self, *args, **kwargs) -> None:
        """The backend's whole-epoch kernel, its arguments checked first.

        The arguments and their meaning are those of
        :func:`fastnn.reference.training.train_epoch` (docs/spec.md §9); a call that
        does not fit together raises ValueError (``train_epoch: ...``) before anything
        is touched. The raw kernel checks nothing: ``fastnn._epoch`` checks its layout
        once per plan (``epoch_args.check_layout``) and calls it directly. Private, like
        the kernel: its arguments are the model's flat layout, not a user API (users
        train with ``MLP.train_epoch``).
        """
        bound = _TRAIN_EPOCH_SIGNATURE.bind(*args, **kwargs)
        epoch_args.check_call(*bound.args, **bound.kwargs)
        self._raw.train_epoch(*bound.args, **bound.kwargs)


def _no_overlap(outputs: dict, inputs: dict, allow=()) -> None:
    """Refuse an output (or in-place buffer) that shares memory with an input or with
    another output, except the pairs in ``allow`` when they are the very same array
    (an elementwise kernel may write over its input; a partial overlap would let it
    read what it has already written)."""
    outs = [(n, a) for n, a in outputs.items() if isinstance(a, np.ndarray)]
    ins = [(n, a) for n, a in inputs.items() if isinstance(a, np.ndarray)]
    for i, (no, o) in enumerate(outs):
        for ni, x in outs[i + 1 :] + ins:
            if not np.may_share_memory(o, x) or not np.shares_memory(o, x):
                continue
            if ((no, ni) in allow or (ni, no) in allow) and _same_memory(o, x):
                continue
            hint = f" ({no} may be {ni} itself)" if (no, ni) in allow else ""
            raise ValueError(f"{no} and {ni} must not share memory{hint}")


def _same_memory(a, b) -> bool:
    return (
        isinstance(a, np.ndarray)
        and isinstance(b, np.ndarray)
        and a.__array_interface__["data"][0] == b.__array_interface__["data"][0]
        and a.shape == b.shape
        and a.strides == b.strides
    )


def _backward_outputs(z, a, da, dz, dw, db, n_in):
    """The checked arguments and outputs of a dense layer's backward (dense or CSR
    input): a and da shaped like z (m, n_out) in z's dtype, dz written over da when they
    are the same array, dw (n_in, n_out) and db (n_out,)."""
    a = v.float_array(a, "a", dtype=z.dtype)
    v.check_shape(a, "a", z.shape)
    in_place = dz is not None and dz is da
    da_arr = v.float_array(da, "da", dtype=z.dtype)
    v.check_shape(da_arr, "da", z.shape)
    dzo = _Output(dz, "dz", z.shape, z.dtype, inplace=in_place)
    if in_place:
        da_arr = dzo.work
    dwo = _Output(dw, "dw", (n_in, z.shape[1]), z.dtype)
    dbo = _Output(db, "db", (z.shape[1],), z.dtype)
    return a, da_arr, dzo, dwo, dbo


def _check_nonempty_product(m, n_in, n_out):
    if m == 0 or n_in == 0 or n_out == 0:
        raise ValueError(
            f"a dense layer needs at least one sample, one input and one "
            f"output, got m={m}, n_in={n_in}, n_out={n_out}"
        )


def warn_if_unbuilt() -> None:
    if not cython_is_built():
        warnings.warn(
            BUILD_HINT + " Falling back to the Numba backend.", BuildWarning, stacklevel=3
        )


def _elementwise_method(row: registry.Activation, derivative: bool):
    """Backend's checked method ``<name>`` or ``<name>_derivative`` for one registry row."""
    kernel = f"{row.name}_derivative" if derivative else row.name
    formula = row.derivative if derivative else row.formula
    method: Callable[..., np.ndarray]
    if row.alpha is None:

        def plain(self, z, out=None):
            return self._elementwise(getattr(self._raw, kernel), z, out)

        method = plain
    else:

        def with_alpha(self, z, alpha=row.alpha, out=None):
            return self._elementwise(getattr(self._raw, kernel), z, out, v.scalar(alpha, "alpha"))

        method = with_alpha
    method.__name__ = kernel
    method.__qualname__ = f"Backend.{kernel}"
    alpha = "" if row.alpha is None else f"alpha : float, default {row.alpha!r}\n"
    method.__doc__ = (
        f"{formula}, elementwise (docs/spec.md §3).\n\n"
        "Parameters\n----------\n"
        "z : array_like of float32 or float64, any shape\n"
        f"{alpha}"
        "out : ndarray, optional\n    Same shape and dtype as ``z``; may be ``z`` itself.\n\n"
        "Returns\n-------\nndarray\n    The shape and dtype of ``z``.\n"
    )
    return method


# One checked method per elementwise activation and derivative of the registry.
for _row in registry.ACTIVATIONS:
    if not _row.rowwise:
        setattr(Backend, _row.name, _elementwise_method(_row, False))
        setattr(Backend, f"{_row.name}_derivative", _elementwise_method(_row, True))
del _row


def check_hyperparameter(h: registry.Hyper, value, name: str | None = None):
    """``value`` of optimizer hyperparameter ``h`` checked against its registry range
    (a flag: True or False); ValueError / TypeError naming it otherwise."""
    name = h.name if name is None else name
    if isinstance(h.default, bool):
        return v.boolean(value, name)
    return v.scalar(value, name, low=h.low, high=h.high, low_open=h.low_open, high_open=h.high_open)


def _optimizer_method(row: registry.Optimizer):
    """Backend's checked ``<name>_step`` for one optimizer row: the raw kernel's
    signature (param, grad, the states, [step], lr, the row's hyperparameters,
    weight_decay) with the row's defaults."""
    P = inspect.Parameter
    names = ["self", "param", "grad", *row.states] + (["step"] if row.step else [])
    params = [P(n, P.POSITIONAL_OR_KEYWORD) for n in names]
    params.append(P("lr", P.POSITIONAL_OR_KEYWORD, default=row.lr))
    params += [P(h.name, P.POSITIONAL_OR_KEYWORD, default=h.default) for h in row.hypers]
    params.append(P("weight_decay", P.POSITIONAL_OR_KEYWORD, default=row.weight_decay))
    signature = inspect.Signature(params)

    def method(*args, **kwargs):
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        a = bound.arguments
        scalars: list = [v.integer(a["step"], "step", low=1)] if row.step else []
        scalars.append(v.scalar(a["lr"], "lr", low=0))
        scalars += [check_hyperparameter(h, a[h.name]) for h in row.hypers]
        scalars.append(v.scalar(a["weight_decay"], "weight_decay", low=0))
        k = a["self"]
        outs, g = k._buffers(a["param"], a["grad"], **{s: a[s] for s in row.states})
        getattr(k._raw, row.kernel)(
            _flat(outs[0].work), _flat(g), *[_flat(o.work) for o in outs[1:]], *scalars
        )
        k._finish(outs)

    method.__signature__ = signature  # type: ignore[attr-defined]
    method.__name__ = row.kernel
    method.__qualname__ = f"Backend.{row.kernel}"
    states = "".join(
        f"{s} : ndarray\n    Its state buffer, the shape and dtype of ``param``; updated.\n"
        for s in row.states
    )
    step = "step : int\n    The step count t >= 1 (bias corrections).\n" if row.step else ""
    hypers = "".join(
        f"{h.name} : {type(h.default).__name__}, default {h.default!r}\n" for h in row.hypers
    )
    decay = "decoupled" if row.decoupled else "L2, ``g = grad + weight_decay param``"
    method.__doc__ = (
        f"{row.cls}: {row.formula}; in place (docs/spec.md §5).\n\n"
        "Parameters\n----------\n"
        "param : ndarray of float32 or float64, any shape\n    Updated in place.\n"
        "grad : array_like\n    The shape and dtype of ``param``; only read.\n"
        f"{states}{step}"
        f"lr : float, default {row.lr!r}\n"
        f"{hypers}"
        f"weight_decay : float, default {row.weight_decay!r}\n    Weight decay ({decay}).\n"
    )
    return method


# One checked method per optimizer of the registry.
for _opt in registry.OPTIMIZERS:
    setattr(Backend, _opt.kernel, _optimizer_method(_opt))
del _opt


# Losses whose raw kernels take flat arrays (a weight per sample of k values).
_FLAT_LOSSES = ("mse", "mse_gradient", "poisson", "poisson_gradient")


def _checked_as_raw(k: Backend) -> SimpleNamespace:
    """Backend k's checked methods called with the raw kernels' signatures (the
    reference's parameter names; activation and optimizer codes turned back into names).
    The whole-epoch kernel's checked tier is ``Backend._train_epoch``; kernels without
    a checked method (none today) are kept."""
    names = {a.code: a.name for a in registry.ACTIVATIONS}
    optimizers = {o.code: o.name for o in registry.OPTIMIZERS}
    reference = backend("numpy")._raw  # the contract's signatures, same names
    out: dict[str, Callable] = {"train_epoch": k._train_epoch}  # the same signature
    for fname, raw in vars(k._raw).items():
        if fname in out:
            continue
        if not callable(getattr(Backend, fname, None)):
            out[fname] = raw
            continue
        params = list(inspect.signature(getattr(reference, fname)).parameters)

        def call(*args, _name=fname, _params=params):
            kwargs = dict(zip(_params, args))
            if "activation" in kwargs:
                kwargs["activation"] = names[int(kwargs["activation"])]
            if "optimizer" in kwargs:
                kwargs["optimizer"] = optimizers[int(kwargs["optimizer"])]

            if _name in _FLAT_LOSSES and np.size(kwargs["sample_weight"]):
                # the raw flat arrays hold m samples of size / m values: the checked
                # method's rows (views: the gradient is written in place)
                m = np.size(kwargs["sample_weight"])
                for key in ("y_pred", "z", "y", "out"):
                    if key in kwargs:
                        kwargs[key] = kwargs[key].reshape(m, -1)
            return getattr(k, _name)(**kwargs)

        out[fname] = call
    return SimpleNamespace(**out)
