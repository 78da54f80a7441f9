"""Saving and loading models: numbers and plain metadata only, never code.

The file layout is safetensors' (see ``docs/format.md``): an 8-byte little-endian
header length, a JSON header describing each array (dtype, shape, byte range) plus a
``__metadata__`` map of strings, then the raw little-endian array bytes. fastnn
writes and reads it itself with the standard library and NumPy (the ``safetensors``
package can read the files too, but is not needed). Loading parses JSON and copies
bytes into freshly allocated arrays; nothing is unpickled or executed, and every
declared size is checked against the file's size before anything is allocated.

>>> import fastnn, tempfile, os
>>> net = fastnn.MLP([2, 4, 1], backend="numpy", random_state=0)
>>> path = os.path.join(tempfile.mkdtemp(), "net.fastnn")
>>> fastnn.save(net, path)
>>> fastnn.load(path).n_params == net.n_params
True
"""

from __future__ import annotations

import json
import math
import numbers
import os
import re
import stat
import struct
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import _validation as _v
from .schedules import schedule_from_config, schedule_to_config

__all__ = [
    "save",
    "load",
    "ModelFileError",
    "write_payload",
    "read_payload",
    "Payload",
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "register_kind",
]

FORMAT_NAME = "fastnn"
FORMAT_VERSION = 2  # 2: typed layer lists (fastnn.layers); 1 is read and migrated

# Limits that no genuine file reaches; they bound what a hostile header can make us do.
MAX_HEADER_BYTES = 16 * 1024 * 1024
# JSON values a header may hold (counted as commas and brackets, before parsing): a
# 16 MiB header of "[],[],..." would otherwise become 5 million Python lists (~380 MB).
MAX_HEADER_ITEMS = 1_000_000
MAX_TENSORS = 4096
MAX_NDIM = 8
MAX_LAYERS = 10_000
MAX_INT = 2**63 - 1  # a layer's size, as MLP accepts it
# No array NumPy can make is larger (its sizes are signed 64-bit); this bounds the
# declared dimensions of empty arrays too.
MAX_ARRAY_BYTES = 2**62

_DTYPES: dict[str, np.dtype] = {
    "F32": np.dtype("<f4"),
    "F64": np.dtype("<f8"),
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}
_CODES = {dt.newbyteorder("=") if dt.kind != "b" else dt: code for code, dt in _DTYPES.items()}

# Kinds of saved objects other than a bare model: kind -> the loader, a function
# taking (model, metadata, arrays) and returning the object, or "module:function"
# inside fastnn for a kind whose module is imported only when such a file is loaded
# (the estimators: scikit-learn is optional). Filled by register_kind; only loaders
# listed here are ever called or imported, a file cannot name a module.
KIND_LOADERS: dict[str, Callable[[Any, dict, dict], Any] | str] = {}
# scikit-learn pipelines (and other scikit-learn objects) holding fastnn estimators:
# the file's one array is a skops file, read by fastnn._pipeline_io.
PIPELINE_KIND = "pipeline"


def register_kind(kind: str, loader: Callable[[Any, dict, dict], Any] | str) -> None:
    """Make :func:`load` return ``loader(model, metadata, arrays)`` for files of ``kind``.

    The module that defines a kind of saved object (an estimator, the command line's
    tabular model) registers it, so that this module needs none of them.

    Parameters
    ----------
    kind : str
        The ``kind`` the object's payload writes (``"model"`` and ``"pipeline"`` are
        read by this module itself and cannot be registered).
    loader : callable or str
        A function ``(model, metadata, arrays) -> object`` raising
        :class:`ModelFileError` for metadata it refuses, or ``"fastnn.module:function"``
        naming one, imported when a file of this kind is first loaded.
    """
    if not isinstance(kind, str) or kind in ("model", PIPELINE_KIND):
        raise ValueError(f"kind {kind!r} cannot be registered")
    if isinstance(loader, str):
        module, _, func = loader.partition(":")
        if not (module == "fastnn" or module.startswith("fastnn.")) or not func:
            raise ValueError(f"loader must be 'fastnn.<module>:<function>', got {loader!r}")
    elif not callable(loader):
        raise TypeError(f"loader must be a function or a 'module:function' name, got {loader!r}")
    KIND_LOADERS[kind] = loader


class ModelFileError(ValueError):
    """A file that is not a readable fastnn model (the message names the file)."""


@dataclass
class Payload:
    """What a fastnn file holds: the model and, for other kinds, their own data."""

    kind: str
    model: object
    metadata: dict = field(default_factory=dict)
    arrays: dict = field(default_factory=dict)


# --- writing -------------------------------------------------------------------------------


def _json(obj) -> str:
    return json.dumps(obj, allow_nan=False, separators=(",", ":"), sort_keys=True)


def _write_file(path, metadata: dict[str, str], arrays: dict[str, np.ndarray]) -> None:
    header: dict[str, object] = {"__metadata__": metadata}
    offset = 0
    blobs = []
    for name, arr in arrays.items():
        arr = np.ascontiguousarray(arr)
        code = _CODES.get(arr.dtype.newbyteorder("=") if arr.dtype.kind != "b" else arr.dtype)
        if code is None:
            raise TypeError(f"cannot save array {name!r} of dtype {arr.dtype}")
        data = arr.astype(_DTYPES[code], copy=False)
        header[name] = {
            "dtype": code,
            "shape": list(arr.shape),
            "data_offsets": [offset, offset + data.nbytes],
        }
        offset += data.nbytes
        blobs.append(data)
    head = _json(header).encode()
    head += b" " * (-len(head) % 8)  # the data starts 8-byte aligned, as safetensors pads
    path = os.fspath(path)
    target = _destination(path)
    directory = os.path.dirname(target)
    try:
        # A short name of our own: "<name>.<random>.tmp" would exceed NAME_MAX (255)
        # for a legal name of 250+ characters.
        fd, tmp = tempfile.mkstemp(prefix=".fastnn-", suffix=".tmp", dir=directory)
    except OSError as exc:
        raise type(exc)(
            f"{path}: cannot create a file in {directory} ({exc.strerror or exc})"
        ) from None
    try:
        # mkstemp creates the file private (0600); the saved model gets the mode an
        # ordinary open() would give it (the old file's, or 0666 less the umask).
        os.chmod(tmp, _file_mode(target))
        with os.fdopen(fd, "wb") as f:
            f.write(struct.pack("<Q", len(head)))
            f.write(head)
            for data in blobs:
                f.write(data.data.cast("B"))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)  # atomic: a crash leaves the old file or the new one
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_directory(directory)


_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISSOCK, "a socket"),
)


def _not_regular(mode: int) -> str:
    """What a non-regular file is, in words ("a FIFO (named pipe)")."""
    return next((what for test, what in _KINDS if test(mode)), "not a regular file")


def _destination(path: str) -> str:
    """The absolute path a save replaces: ``path``, or the file a symlink leads to.

    Saving replaces the destination by a rename, so it must be a regular file (or
    not exist yet): renaming over /dev/null or a FIFO would replace the device or
    pipe with a regular file, and over a symlink would replace the link, leaving its
    target unwritten. A read-only file is refused as ``open(path, "w")`` refuses it,
    also for root (who could write it): its mode says it is not to be changed.
    """
    target = os.path.realpath(path)  # follows every link; a dangling one: its target
    try:
        st = os.stat(target)
    except FileNotFoundError:
        directory = os.path.dirname(target)
        if not os.path.isdir(directory):
            raise FileNotFoundError(
                f"{path}: cannot save there, the directory "
                f"{os.path.dirname(path) or directory} does not "
                f"exist"
            ) from None
        return target
    if stat.S_ISDIR(st.st_mode):
        raise IsADirectoryError(f"{path}: is a directory; give a file name to save to")
    if not stat.S_ISREG(st.st_mode):
        raise OSError(f"{path}: is {_not_regular(st.st_mode)}; fastnn saves to regular files only")
    if not st.st_mode & 0o222 or not os.access(target, os.W_OK):
        raise PermissionError(
            f"{path}: the file is read-only (mode "
            f"{stat.S_IMODE(st.st_mode):04o}); make it writable or "
            f"save to another file"
        )
    return target


def _file_mode(path: str) -> int:
    try:
        return os.stat(path).st_mode & 0o7777
    except OSError:
        pass
    try:
        with open("/proc/self/status", encoding="ascii") as f:  # Linux: no race
            for line in f:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # elsewhere: read it by setting it (briefly)
    os.umask(mask)
    return 0o666 & ~mask


def _fsync_directory(directory: str) -> None:
    """Make the rename itself durable: without this a power cut soon after a save can
    bring back the directory entry of the previous file (POSIX; a no-op elsewhere)."""
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems cannot fsync a directory; the data itself is synced
    finally:
        os.close(fd)


def write_payload(
    path,
    model,
    *,
    kind: str = "model",
    metadata: dict | None = None,
    arrays: dict | None = None,
    include_optimizer: bool = True,
) -> None:
    """Write ``model`` (and its optimizer) plus a kind's own JSON metadata and arrays.

    ``metadata`` must be JSON-able (finite floats); ``arrays`` names must not start
    with "model." or "optimizer.". The estimators use this to add what they hold
    beyond the network (classes, scaler...).
    """
    from . import __version__
    from .model import MLP

    if not isinstance(model, MLP):
        raise TypeError(f"model must be a fastnn.MLP, got {type(model).__name__}")
    meta = {
        "format": FORMAT_NAME,
        "format_version": str(FORMAT_VERSION),
        "fastnn_version": __version__,
        "kind": kind,
        "model": _json({**model.get_config(), "rng": model.rng_states()}),
    }
    out = {"model.params": model.params}
    if model.buffers.size:
        out["model.buffers"] = model.buffers
    opt = model.optimizer if include_optimizer else None
    if opt is not None:
        st = opt.state_dict()
        meta["optimizer"] = _json(
            {k: st[k] for k in ("name", "config", "t", "epoch", "schedule_state")}
        )
        for name, arr in st["arrays"].items():
            out["optimizer." + name] = arr
    if metadata:
        meta["extra"] = _json(metadata)
    for name, arr in (arrays or {}).items():
        if name.startswith(("model.", "optimizer.")):
            raise ValueError(f"array name {name!r} is reserved")
        out["extra." + name] = np.asarray(arr)
    _write_file(path, meta, out)


def save(obj, path, *, include_optimizer: bool = True) -> None:
    """Save a model (or an object that knows how: an estimator) to ``path``.

    The file holds the parameters, batch-norm statistics, the architecture, the random
    streams' states and, unless ``include_optimizer=False``, ``model.optimizer`` with
    its state, so that :func:`load` gives a model that predicts bit-identically and
    continues training exactly where it stopped. The write is atomic (a temporary
    file renamed over ``path``); a symlink is written through to its target.

    ``obj`` may also be a scikit-learn ``Pipeline`` / ``ColumnTransformer`` with fastnn
    estimators and common preprocessing steps inside (needs skops:
    ``pip install 'fastnn-mlp[pipeline]'``); see ``docs/format.md``, "Pipelines". A step that
    :func:`load` would refuse (another class, a ``FunctionTransformer`` with a
    function) raises TypeError naming it, before anything is written.

    Raises
    ------
    OSError
        ``path`` is a directory (IsADirectoryError), a device, FIFO or socket, a
        read-only file (PermissionError), or in a directory that does not exist
        (FileNotFoundError). Nothing is written then.
    """
    from .model import MLP

    if isinstance(obj, MLP):
        write_payload(path, obj, include_optimizer=include_optimizer)
        return
    payload = getattr(obj, "_fastnn_payload", None)
    if payload is None:
        if _is_sklearn_estimator(obj):  # a Pipeline, ColumnTransformer, scaler...
            from ._pipeline_io import save_pipeline

            save_pipeline(obj, path)
            return
        raise TypeError(
            f"fastnn.save saves fastnn models and estimators, and "
            f"scikit-learn pipelines of them, got {type(obj).__name__}"
        )
    p = payload()
    write_payload(
        path,
        p.model,
        kind=p.kind,
        metadata=p.metadata,
        arrays=p.arrays,
        include_optimizer=include_optimizer,
    )


def _is_sklearn_estimator(obj) -> bool:
    import sys

    base = getattr(sys.modules.get("sklearn.base"), "BaseEstimator", None)
    return base is not None and isinstance(obj, base)


# --- JSON values of the kinds' own metadata ------------------------------------------------
# A kind's metadata is JSON, which has no infinity or NaN and whose integers other
# readers may not hold exactly; these helpers turn hyperparameters and fitted scalars
# into JSON values and back, checking what comes back as the constructors would.


def _jsonable(value):
    """Python / NumPy scalars and lists as JSON values; non-finite floats as strings."""
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        f = float(value)
        return f if math.isfinite(f) else {"float": repr(f)}
    if value is None or isinstance(value, str):
        return value
    raise TypeError(f"cannot save a value of type {type(value).__name__}")


def _from_jsonable(value, name="value"):
    """A value :func:`_jsonable` wrote, integers checked (``name`` in the error)."""
    if isinstance(value, list):
        return [_from_jsonable(v, name) for v in value]
    if isinstance(value, int) and not isinstance(value, bool):
        return _v.integer(value, name, low=-_v.MAX_INT)  # counters: no 401-digit t_
    if isinstance(value, dict):
        if set(value) != {"float"} or value["float"] not in ("inf", "-inf", "nan"):
            raise ValueError(f"invalid saved value {value!r}")
        return float(value["float"])
    return value


def _params_to_json(est) -> dict:
    """An estimator's ``get_params(deep=False)`` as JSON values (:func:`_params_from_json`
    reverses it)."""
    out = {}
    for k, value in est.get_params(deep=False).items():
        if k == "random_state":
            # A RandomState's state is not plain metadata; the fitted model carries
            # its own random streams, so only integer seeds are kept.
            value = value if isinstance(value, numbers.Integral) else None
        elif k == "schedule" and value is not None:
            value = {"schedule": schedule_to_config(value)}
        elif k == "dtype" and value is not None:
            value = np.dtype(value).name
        elif k == "hidden_layer_sizes" and not hasattr(value, "__iter__"):
            value = [value]
        out[k] = _jsonable(value) if k != "schedule" else value
    return out


def _params_from_json(params: dict) -> dict:
    """The constructor arguments :func:`_params_to_json` wrote."""
    out = {}
    for k, value in params.items():
        if k == "schedule" and value is not None:
            value = schedule_from_config(value["schedule"])
        elif k == "hidden_layer_sizes":
            value = tuple(value)
        else:
            value = _from_jsonable(value, k)
        out[k] = value
    return out


# --- reading -------------------------------------------------------------------------------


def _read_file(path):
    """(metadata, arrays) of a safetensors-layout file, every declared size checked."""
    f, size = _open_regular(path)
    with f:
        if size < 8:
            raise ModelFileError(f"{path}: not a fastnn model file (only {size} bytes)")
        (n,) = struct.unpack("<Q", f.read(8))
        if n == 0 or n > MAX_HEADER_BYTES:
            raise ModelFileError(
                f"{path}: not a fastnn model file (header length {n} is impossible)"
            )
        if 8 + n > size:
            raise ModelFileError(
                f"{path}: file is truncated (its header needs {n} bytes, {size - 8} remain)"
            )
        raw = f.read(n)
        items = raw.count(b",") + raw.count(b"[") + raw.count(b"{")
        if items > MAX_HEADER_ITEMS:
            raise ModelFileError(
                f"{path}: not a fastnn model file (its header holds "
                f"over {MAX_HEADER_ITEMS:,} JSON values)"
            )
        try:
            header = json.loads(
                raw.decode("utf-8"), object_pairs_hook=_no_duplicates, parse_constant=_no_constant
            )
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            raise ModelFileError(
                f"{path}: not a fastnn model file (header is not valid JSON: {exc})"
            ) from None
        if not isinstance(header, dict):
            raise ModelFileError(f"{path}: not a fastnn model file (header is not a JSON object)")
        meta = header.pop("__metadata__", None)
        if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
            raise ModelFileError(
                f"{path}: not a fastnn model file (no 'format': 'fastnn' entry in its metadata)"
            )
        if not all(isinstance(k, str) and isinstance(x, str) for k, x in meta.items()):
            raise ModelFileError(f"{path}: metadata values must be strings")
        text = meta.get("format_version", "")
        if not re.fullmatch(r"[0-9]{1,9}", text):  # int() would take " 1", "1_0", "١"
            raise ModelFileError(f"{path}: format_version {text[:40]!r} is not an integer")
        version = int(text)
        if version > FORMAT_VERSION:
            raise ModelFileError(
                f"{path}: written in fastnn format version {version}, "
                f"newer than this fastnn reads ({FORMAT_VERSION}); "
                f"upgrade fastnn to load it"
            )
        if version < 1:
            raise ModelFileError(f"{path}: invalid format_version {version}")
        if len(header) > MAX_TENSORS:
            raise ModelFileError(f"{path}: declares {len(header)} arrays (limit {MAX_TENSORS})")
        data_len = size - 8 - n
        entries = []
        for name, info in header.items():
            entries.append((*_check_entry(path, name, info), name))
        entries.sort()
        pos = 0
        for begin, end, _, _, name in entries:
            if begin != pos:
                raise ModelFileError(
                    f"{path}: array {name!r} starts at byte {begin}, "
                    f"expected {pos} (arrays must be contiguous)"
                )
            pos = end
        if pos > data_len:
            raise ModelFileError(
                f"{path}: file is truncated (the arrays need {pos} bytes "
                f"of data, {data_len} present)"
            )
        if pos < data_len:
            raise ModelFileError(f"{path}: {data_len - pos} unexpected bytes after the arrays")
        arrays = {}
        for begin, end, dtype, shape, name in entries:
            arr = np.empty(shape, dtype)
            f.seek(8 + n + begin)
            got = f.readinto(arr.reshape(-1).data.cast("B")) if end > begin else 0
            if got != end - begin:
                raise ModelFileError(f"{path}: file is truncated (array {name!r})")
            arrays[name] = (
                arr.astype(dtype.newbyteorder("="), copy=False) if dtype.kind != "b" else arr
            )
    return meta, arrays


def _open_regular(path):
    """(binary file, its size) of a regular file; anything else is refused unopened.

    A FIFO would block open() (and read()) forever, a directory fails in open(). The
    size comes from the opened descriptor, not the path: a save renaming another file
    over the path between a stat of the path and the open would otherwise make a
    complete file look truncated.
    """
    st = os.stat(path)  # a missing file: FileNotFoundError, as open() gives
    if not stat.S_ISREG(st.st_mode):
        raise ModelFileError(f"{path}: is {_not_regular(st.st_mode)}, not a fastnn model file")
    # O_NONBLOCK: should a FIFO take the file's place after the stat, the open
    # returns at once and fstat refuses it (no effect on regular files).
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ModelFileError(f"{path}: is {_not_regular(st.st_mode)}, not a fastnn model file")
        f = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    return f, st.st_size


def _no_duplicates(pairs):
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        for k, _ in pairs:
            if k in seen:
                raise ValueError(f"duplicate key {k[:60]!r}")
            seen.add(k)
    return out


def _no_constant(name):
    raise ValueError(f"{name} is not allowed")


def _check_entry(path, name, info):
    if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
        raise ModelFileError(
            f"{path}: array entry {name!r} must have exactly dtype, shape and data_offsets"
        )
    dtype = _DTYPES.get(info["dtype"])
    if dtype is None:
        raise ModelFileError(f"{path}: array {name!r} has unsupported dtype {info['dtype']!r}")
    shape, offs = info["shape"], info["data_offsets"]
    if (
        not isinstance(shape, list)
        or len(shape) > MAX_NDIM
        or not all(type(d) is int and d >= 0 for d in shape)
    ):
        raise ModelFileError(f"{path}: array {name!r} has an invalid shape {_brief(shape)}")
    if (
        not isinstance(offs, list)
        or len(offs) != 2
        or not all(type(o) is int and o >= 0 for o in offs)
        or offs[0] > offs[1]
    ):
        raise ModelFileError(f"{path}: array {name!r} has invalid data_offsets {_brief(offs)}")
    nbytes = math.prod(shape) * dtype.itemsize  # Python ints: no overflow
    if math.prod(max(d, 1) for d in shape) * dtype.itemsize > MAX_ARRAY_BYTES:
        # an empty array ([0, 10**30]) spans 0 bytes, yet NumPy refuses the shape
        raise ModelFileError(
            f"{path}: array {name!r} has an impossible shape {_short_shape(shape)}"
        )
    if offs[1] - offs[0] != nbytes:
        raise ModelFileError(
            f"{path}: array {name!r} declares shape {shape} "
            f"({nbytes} bytes) but spans {offs[1] - offs[0]} bytes"
        )
    return offs[0], offs[1], dtype, tuple(shape)


def _short_shape(shape) -> str:
    return "[" + ", ".join(_v.show_number(d) for d in shape) + "]"


def _brief(value) -> str:
    """A JSON value for a message, cut short (a 401-digit number is not shown whole)."""
    try:
        text = json.dumps(value)
    except ValueError:  # an integer beyond Python's 4300-digit str() limit
        text = type(value).__name__
    return text if len(text) <= 60 else text[:57] + "..."


def _parse_json(path, meta, key):
    try:
        # the header's own rule: a duplicated key would be read as its last value
        return json.loads(meta[key], object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except (KeyError, ValueError, RecursionError) as exc:  # deep nesting: RecursionError
        raise ModelFileError(
            f"{path}: metadata entry {key!r} is missing or not valid JSON ({exc})"
        ) from None


def _expected_sizes(path, config):
    """(n_params, n_buffers) that the declared layers need, before allocating anything
    (the layers are described, chained and laid out; no array is made)."""
    from .layers import chain, layout
    from .model import _config_layers

    specs = config.get("layers") if isinstance(config, dict) else None
    if not isinstance(specs, list) or not 1 <= len(specs) <= MAX_LAYERS:
        raise ModelFileError(f"{path}: model metadata must list 1 to {MAX_LAYERS} layers")
    try:
        plan = layout(chain(_config_layers(config), "layers"))
    except (TypeError, ValueError, RecursionError) as exc:
        raise ModelFileError(f"{path}: invalid layers in the model metadata: {exc}") from None
    return plan.n_params, plan.n_buffers


# What building objects from metadata raises on bad values. The checks raise
# ValueError/TypeError; the others are a safety net, so that no number or nesting a
# check missed reaches the caller as anything but ModelFileError.
_BAD_METADATA = (KeyError, TypeError, ValueError, OverflowError, RecursionError)


def read_payload(path, *, backend: str | None = None) -> Payload:
    """Read any fastnn file: the model (with its optimizer) and the kind's own data."""
    path = os.fspath(path)
    meta, arrays = _read_file(path)
    return _payload_from(path, meta, arrays, backend)


def _payload_from(path, meta, arrays, backend) -> Payload:
    from ._backend import available_backends
    from .model import MLP
    from .optim import optimizer_from_state

    cfg = _parse_json(path, meta, "model")
    if not isinstance(cfg, dict):
        raise ModelFileError(f"{path}: model metadata is not a JSON object")
    n_params, n_buf = _expected_sizes(path, cfg)
    name = cfg.get("dtype")
    dtypes: dict[str, np.dtype] = {"float32": np.dtype(np.float32), "float64": np.dtype(np.float64)}
    dtype = dtypes.get(name) if isinstance(name, str) else None
    if dtype is None:
        raise ModelFileError(f"{path}: model dtype {cfg.get('dtype')!r} is not float32 or float64")
    params = arrays.pop("model.params", None)
    buffers = arrays.pop("model.buffers", np.zeros(0, dtype))
    for name, arr, size in (("model.params", params, n_params), ("model.buffers", buffers, n_buf)):
        if arr is None or arr.dtype != dtype or arr.shape != (size,):
            got = "missing" if arr is None else f"{arr.dtype} of shape {arr.shape}"
            raise ModelFileError(
                f"{path}: {name} must be {dtype.name} of shape ({size},) "
                f"for the declared layers, got {got}"
            )
    if backend is None:
        saved = cfg.get("backend")
        backend = saved if saved in available_backends() else None
    try:
        model = MLP.from_config(cfg, backend=backend)
        model.set_state({"params": params, "buffers": buffers})
        model.set_rng_states(cfg["rng"])
    except _BAD_METADATA as exc:
        raise ModelFileError(
            f"{path}: invalid model metadata ({type(exc).__name__}: {exc})"
        ) from None
    if "optimizer" in meta:
        ost = _parse_json(path, meta, "optimizer")
        if not isinstance(ost, dict):
            raise ModelFileError(f"{path}: optimizer metadata is not a JSON object")
        ost["arrays"] = {
            k[len("optimizer.") :]: arrays.pop(k)
            for k in [k for k in arrays if k.startswith("optimizer.")]
        }
        for k, arr in ost["arrays"].items():
            if arr.dtype != dtype or arr.shape != (n_params,):
                raise ModelFileError(
                    f"{path}: optimizer state {k!r} must be {dtype.name} "
                    f"of shape ({n_params},), got {arr.dtype} {arr.shape}"
                )
        try:
            model.optimizer = optimizer_from_state(ost)
        except _BAD_METADATA as exc:
            raise ModelFileError(f"{path}: invalid optimizer metadata ({exc})") from None
        model.optimizer._bind(model)
    extra = _parse_json(path, meta, "extra") if "extra" in meta else {}
    if not isinstance(extra, dict):
        raise ModelFileError(f"{path}: extra metadata is not a JSON object")
    leftover = [k for k in arrays if not k.startswith("extra.")]
    if leftover:
        raise ModelFileError(f"{path}: unknown arrays {leftover}")
    kind = meta.get("kind", "model")
    return Payload(kind, model, extra, {k[len("extra.") :]: a for k, a in arrays.items()})


def load(path, *, backend: str | None = None):
    """Load what :func:`save` wrote: a model (or an estimator, or a pipeline).

    ``backend`` None runs the model on the backend it was saved from when that one is
    available here (so that predictions are bit-identical), else on the default.

    Raises
    ------
    ModelFileError (a ValueError)
        The file is not a fastnn model (or not a regular file: a directory, device,
        FIFO or socket), is truncated or damaged, declares sizes that disagree with
        its data, or comes from a newer format version; or a pipeline file holds a
        type outside fastnn's list (``docs/format.md``, "Pipelines"), refused before
        anything in it is built.
    """
    path = os.fspath(path)
    meta, arrays = _read_file(path)
    if meta.get("kind") == PIPELINE_KIND:  # scikit-learn objects, persisted by skops
        from ._pipeline_io import load_pipeline

        return load_pipeline(path, meta, arrays, backend=backend)
    payload = _payload_from(path, meta, arrays, backend)
    if payload.kind == "model":
        return payload.model
    target = KIND_LOADERS.get(payload.kind)
    if target is None:
        raise ModelFileError(f"{os.fspath(path)}: unknown kind of saved object {payload.kind!r}")
    if isinstance(target, str):
        import importlib

        module, func = target.split(":")
        target = getattr(importlib.import_module(module), func)
    try:
        return target(payload.model, payload.metadata, payload.arrays)
    except ModelFileError as exc:  # the kind's loader does not know the path
        raise ModelFileError(f"{os.fspath(path)}: {exc}") from None
