"""fastnn.save / fastnn.load of scikit-learn pipelines holding fastnn estimators.

The objects are persisted by skops (``skops.io.dumps`` / ``skops.io.loads``, no pickle)
and the skops file is stored as the one array of a fastnn file of kind "pipeline"
(``docs/format.md``, "Pipelines"). Loading never runs code a file names: before skops
builds anything, fastnn reads the skops file's ``schema.json`` and refuses any node
outside a short explicit list (:func:`allowed_types`): the scikit-learn pipeline,
column transformer and common preprocessing classes, fastnn's own estimator classes,
and containers, strings, numbers and NumPy arrays. Functions, methods, ``partial``
objects, arbitrary ``__reduce__`` constructors, random generators and every other type
are refused, even those skops trusts by default. Then ``skops.io.get_untrusted_types``
must name nothing outside that list, and ``skops.io.loads`` runs with
``trusted=`` that list (never ``True``). Each fastnn estimator that comes back is
rebuilt through the checks of fastnn's own estimator loader.
"""

from __future__ import annotations

import functools
import io
import json
import zipfile

import numpy as np

from .io import (
    FORMAT_NAME,
    FORMAT_VERSION,
    MAX_HEADER_ITEMS,
    PIPELINE_KIND,
    ModelFileError,
    _json,
    _no_constant,
    _no_duplicates,
    _write_file,
)

__all__ = ["save_pipeline", "load_pipeline", "allowed_types", "trusted_types"]

_HINT = "pip install 'fastnn-mlp[pipeline]'"
# Bounds on what a file's skops part can make the loader do (no genuine file nears them).
MAX_MEMBERS = 100_000
MAX_NODES = 1_000_000

# The scikit-learn classes a saved pipeline may hold: (module, class).
_SKLEARN_STEPS = (
    ("sklearn.pipeline", "Pipeline"),
    ("sklearn.compose", "ColumnTransformer"),
    ("sklearn.impute", "SimpleImputer"),
    ("sklearn.preprocessing", "StandardScaler"),
    ("sklearn.preprocessing", "MinMaxScaler"),
    ("sklearn.preprocessing", "RobustScaler"),
    ("sklearn.preprocessing", "MaxAbsScaler"),
    ("sklearn.preprocessing", "OneHotEncoder"),
    ("sklearn.preprocessing", "OrdinalEncoder"),
    # only without functions (the identity): checked at save, and a function in the
    # file is a node type outside the list
    ("sklearn.preprocessing", "FunctionTransformer"),
)
# Held inside fitted objects, never a step of its own: MLPClassifier's label binarizer.
_SKLEARN_INTERNAL = (("sklearn.preprocessing", "LabelBinarizer"),)


def _import(pairs):
    import importlib

    return [getattr(importlib.import_module(m), c) for m, c in pairs]


def _name(t) -> str:
    # skops names a type by its __module__ and __name__ (skops.io._utils.get_type_name)
    return f"{t.__module__}.{t.__name__}"


def _require():
    try:
        import sklearn  # noqa: F401
        import skops.io
    except ImportError as exc:
        raise ImportError(
            f"saving and loading scikit-learn pipelines needs skops and "
            f"scikit-learn: {_HINT} ({exc})"
        ) from exc
    return skops.io


@functools.cache
def _step_types() -> tuple:
    from .estimators import MLPClassifier, MLPRegressor

    return tuple(_import(_SKLEARN_STEPS)) + (MLPClassifier, MLPRegressor)


@functools.cache
def allowed_types() -> dict[str, frozenset[str]]:
    """skops node kind -> the type names a loadable file may use with it.

    Everything else in a file is refused, whatever skops itself would trust.
    """
    from . import schedules
    from .model import MLP
    from .training import History

    objects = [
        *_step_types(),
        *_import(_SKLEARN_INTERNAL),
        MLP,
        History,
        *(
            getattr(schedules, n)
            for n in (
                "Constant",
                "StepDecay",
                "Cosine",
                "InverseScaling",
                "LinearWarmup",
                "ReduceOnPlateau",
            )
        ),
    ]
    # numpy.float64, ...: NumPy's own scalar types only (other libraries, ml_dtypes
    # for one, register theirs in sctypeDict when they are imported)
    scalars = {n for n in map(_name, set(np.sctypeDict.values())) if n.startswith("numpy.")}
    builtins = {"builtins.str", "builtins.int", "builtins.float", "builtins.bool"}
    return {
        "ObjectNode": frozenset(map(_name, objects)),  # __new__, then __setstate__/__dict__
        "DictNode": frozenset({"builtins.dict"}),
        "ListNode": frozenset({"builtins.list"}),
        "TupleNode": frozenset({"builtins.tuple"}),
        "SliceNode": frozenset({"builtins.slice"}),
        "JsonNode": frozenset({"builtins.str"}),  # a JSON text, json.loads'ed
        # dtype arguments (OneHotEncoder(dtype=np.float64)) and dict key types
        "TypeNode": frozenset(builtins | scalars),
        "NdArrayNode": frozenset({"numpy.ndarray"} | scalars),  # np.load(allow_pickle=False)
        "DTypeNode": frozenset({"numpy.dtype"}),
    }


@functools.cache
def trusted_types() -> list[str]:
    """The ``trusted=`` list given to skops: every type fastnn accepts (never True)."""
    allowed = allowed_types()
    return sorted(allowed["ObjectNode"] | allowed["DTypeNode"])


# --- what a skops file holds ---------------------------------------------------------------


class _Refused(Exception):
    """The skops data names node types outside allowed_types() (args: the names)."""


def _schema(data: bytes) -> tuple[dict, set[str]]:
    """The parsed schema.json of skops data, and its member names; ValueError if damaged.

    Only uncompressed members are accepted: the declared sizes then add up to at most
    the data's own size, so reading them cannot allocate more than the file holds.
    """
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except MemoryError:
        raise
    except Exception as exc:  # BadZipFile, NotImplementedError (zip version)...
        raise ValueError(
            f"not a skops (zip) archive: {type(exc).__name__}: {str(exc)[:200]}"
        ) from None
    with zf:
        infos = zf.infolist()
        if len(infos) > MAX_MEMBERS:
            raise ValueError(f"{len(infos)} archive members (limit {MAX_MEMBERS:,})")
        names = [i.filename for i in infos]
        if len(set(names)) != len(names):
            raise ValueError("duplicate archive member names")
        for i in infos:
            if i.compress_type != zipfile.ZIP_STORED:
                raise ValueError(
                    f"archive member {i.filename[:60]!r} is compressed "
                    f"(fastnn writes and reads uncompressed skops files)"
                )
            if i.flag_bits & 0x1:
                raise ValueError(f"archive member {i.filename[:60]!r} is encrypted")
        if sum(i.file_size for i in infos) > len(data):
            raise ValueError("archive members declare more bytes than the archive holds")
        if "schema.json" not in names:
            raise ValueError("no schema.json in the skops archive")
        try:
            raw = zf.read("schema.json")
        except MemoryError:
            raise
        except Exception as exc:  # BadZipFile (CRC), EOFError...
            raise ValueError(
                f"schema.json cannot be read: {type(exc).__name__}: {str(exc)[:200]}"
            ) from None
    if raw.count(b",") + raw.count(b"[") + raw.count(b"{") > MAX_HEADER_ITEMS:
        raise ValueError(f"schema.json holds over {MAX_HEADER_ITEMS:,} JSON values")
    try:
        schema = json.loads(
            raw.decode("utf-8"), object_pairs_hook=_no_duplicates, parse_constant=_no_constant
        )
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ValueError(f"schema.json is not valid JSON: {exc}") from None
    if not isinstance(schema, dict):
        raise ValueError("schema.json is not a JSON object")
    return schema, set(names)


def _audit(data: bytes) -> None:
    """Refuse skops data naming any node outside allowed_types(), before skops reads it.

    Every JSON object with a "__loader__" key is a node skops would build (wherever it
    sits: skops follows "content", "__reduce__", "key_types", "shape"... keys); each
    is checked, so skops cannot build an object whose type this did not see. Raises
    ValueError (damaged) or _Refused (the refused "kind type" descriptions).
    """
    schema, members = _schema(data)
    allowed = allowed_types()
    root = (schema.get("__loader__"), f"{schema.get('__module__')}.{schema.get('__class__')}")
    refused, stack, nodes = set(), [schema], 0
    while stack:
        value = stack.pop()
        if isinstance(value, list):
            stack.extend(value)
            continue
        if not isinstance(value, dict):
            continue
        stack.extend(value.values())
        if "__loader__" not in value:
            continue
        nodes += 1
        if nodes > MAX_NODES:
            raise ValueError(f"over {MAX_NODES:,} objects")
        loader, module, cls = (value.get(k) for k in ("__loader__", "__module__", "__class__"))
        if not (isinstance(loader, str) and isinstance(module, str) and isinstance(cls, str)):
            raise ValueError("an object without a string __loader__, __module__ and __class__")
        name = f"{module}.{cls}"
        if name not in allowed.get(loader, ()):
            refused.add(name if loader == "ObjectNode" else f"{name} ({loader})")
        member = value.get("file")
        if (
            loader == "NdArrayNode"
            and value.get("type") == "numpy"
            and (not isinstance(member, str) or member not in members)
        ):
            raise ValueError(f"an array refers to a missing archive member {str(member)[:60]!r}")
    if refused:
        raise _Refused(*sorted(refused))
    if root[0] != "ObjectNode" or root[1] not in allowed["ObjectNode"]:
        raise _Refused(f"{root[1]} (as the saved object)")


# --- saving --------------------------------------------------------------------------------


def _leaf_steps(obj, where="the object"):
    """(description, object) of every step in a Pipeline / ColumnTransformer tree."""
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline

    yield where, obj
    if isinstance(obj, Pipeline):
        steps = obj.steps
    elif isinstance(obj, ColumnTransformer):
        fitted = getattr(obj, "transformers_", None)
        steps = [(t[0], t[1]) for t in (fitted if fitted is not None else obj.transformers)]
        if fitted is None and obj.remainder not in ("drop", "passthrough"):
            steps.append(("remainder", obj.remainder))
    else:
        return
    for name, step in steps:
        if isinstance(step, str) or step is None:  # "passthrough", "drop"
            continue
        yield from _leaf_steps(
            step, f"step {name!r}" if where == "the object" else f"{where[:-1]}/{name}'"
        )


def _check_steps(obj) -> None:
    """TypeError naming the step that fastnn.load could not bring back safely."""
    from sklearn.preprocessing import FunctionTransformer

    types = _step_types()
    for where, step in _leaf_steps(obj):
        if type(step) not in types:
            raise TypeError(
                f"fastnn.save: {where} is a {type(step).__module__}."
                f"{type(step).__qualname__}, which fastnn cannot save in a pipeline: a "
                f"pipeline file holds only {', '.join(t.__name__ for t in types)} "
                f"steps (and 'passthrough' / 'drop'), so that loading never runs code "
                f"named by the file"
            )
        seed = getattr(step, "random_state", None)
        if isinstance(seed, (np.random.RandomState, np.random.Generator)):
            raise TypeError(
                f"fastnn.save: {where} has random_state={type(seed).__name__}(...), "
                f"which a saved pipeline cannot hold; give an integer seed or None "
                f"(the fitted network carries its own random streams)"
            )
        if isinstance(step, FunctionTransformer):
            for attr in ("func", "inverse_func", "feature_names_out"):
                value = getattr(step, attr, None)
                if value is not None and not (
                    attr == "feature_names_out" and value == "one-to-one"
                ):
                    raise TypeError(
                        f"fastnn.save: {where} is a FunctionTransformer with "
                        f"{attr}={value!r}; a saved pipeline cannot hold a function "
                        f"(loading it would run code named by the file). Only "
                        f"FunctionTransformer() without functions (the identity) is "
                        f"saved"
                    )


def _dumps(sio, obj) -> bytes:
    try:
        return sio.dumps(obj)  # uncompressed (ZIP_STORED), as _schema requires
    except Exception as exc:  # skops: UnsupportedTypeException, TypeError, ...
        raise TypeError(
            f"fastnn.save: skops cannot save this "
            f"{type(obj).__name__} ({type(exc).__name__}: {exc})"
        ) from None


def save_pipeline(obj, path) -> None:
    """Write a scikit-learn object (a Pipeline...) as a fastnn file of kind "pipeline".

    Raises TypeError, before writing anything, when the object holds something that
    :func:`load_pipeline` would refuse (naming the step and the type).
    """
    from . import __version__

    sio = _require()
    _check_steps(obj)
    data = _dumps(sio, obj)
    try:
        _audit(data)
    except _Refused as exc:
        where = "the object"
        for w, step in _leaf_steps(obj):  # the innermost step whose own data is refused
            try:
                _audit(_dumps(sio, step))
            except (_Refused, TypeError):
                where = w
        raise TypeError(
            f"fastnn.save: {where} holds {', '.join(exc.args)}, which "
            f"fastnn.load does not load (it loads only the types listed in "
            f'docs/format.md, "Pipelines")'
        ) from None
    import skops

    meta = {
        "format": FORMAT_NAME,
        "format_version": str(FORMAT_VERSION),
        "fastnn_version": __version__,
        "kind": PIPELINE_KIND,
        "object": f"{type(obj).__module__}.{type(obj).__qualname__}",
        "skops_version": skops.__version__,
    }
    _write_file(path, meta, {"skops": np.frombuffer(data, np.uint8)})


# --- loading -------------------------------------------------------------------------------


def load_pipeline(path, meta: dict, arrays: dict, *, backend: str | None = None):
    """The object of a fastnn file of kind "pipeline" (fastnn.load dispatches here)."""
    if set(arrays) != {"skops"} or arrays["skops"].dtype != np.uint8 or arrays["skops"].ndim != 1:
        raise ModelFileError(
            f"{path}: a pipeline file holds one uint8 array 'skops', got {sorted(arrays)[:10]}"
        )
    sio = _require()
    data = arrays["skops"].tobytes()
    try:
        _audit(data)
    except _Refused as exc:
        raise ModelFileError(
            f"{path}: refused: the pipeline holds {', '.join(exc.args)}, "
            f"outside the types fastnn loads (docs/format.md, "
            f'"Pipelines"); nothing was loaded'
        ) from None
    except (ValueError, TypeError, KeyError, RecursionError) as exc:
        raise ModelFileError(f"{path}: damaged pipeline data ({exc})") from None
    trusted = trusted_types()
    try:
        untrusted = [t for t in sio.get_untrusted_types(data=data) if t not in trusted]
        if untrusted:  # the audit above already refuses these; skops' own view agrees
            raise ModelFileError(
                f"{path}: refused: the pipeline holds "
                f"{', '.join(untrusted)}, outside the types fastnn "
                f"loads; nothing was loaded"
            )
        obj = sio.loads(data, trusted=trusted)
    except (ModelFileError, MemoryError):
        raise
    except Exception as exc:  # whatever skops or a __setstate__ raises on bad data
        raise ModelFileError(
            f"{path}: damaged pipeline data ({type(exc).__name__}: {str(exc)[:300]})"
        ) from None
    _check_loaded(path, obj, backend)
    return obj


def _check_loaded(path, root, backend) -> None:
    """Rebuild each fastnn estimator in ``root`` through fastnn's estimator loader.

    skops restores an estimator's attributes as the file gives them; passing them
    through ``_fastnn_payload`` / ``_from_payload`` applies the checks a fastnn
    estimator file gets (the network matches n_features_in_, n_outputs_, the classes,
    the hyperparameters are valid...), and the estimator takes the rebuilt state.
    """
    from .estimators import _BaseMLP
    from .model import MLP

    stack, seen = [root], set()
    while stack:
        obj = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        if isinstance(obj, (list, tuple)):
            stack.extend(obj)
        elif isinstance(obj, dict):
            stack.extend(obj.values())
        elif isinstance(obj, _BaseMLP):
            if "_model" not in obj.__dict__:  # not fitted: fit validates what it holds
                continue
            try:
                p = obj._fastnn_payload()
                if not isinstance(p.model, MLP):
                    raise ValueError("its network is not a fastnn.MLP")
                rebuilt = type(obj)._from_payload(p.model, json.loads(_json(p.metadata)), p.arrays)
            except ModelFileError as exc:
                raise ModelFileError(f"{path}: {exc}") from None
            except Exception as exc:
                raise ModelFileError(
                    f"{path}: invalid {type(obj).__name__} in the "
                    f"pipeline ({type(exc).__name__}: {exc})"
                ) from None
            obj.__dict__.clear()
            obj.__dict__.update(rebuilt.__getstate__())
            stack.append(obj._model)
        elif isinstance(obj, MLP):
            if backend is not None:
                obj.set_backend(backend)
        elif hasattr(obj, "__dict__") and not isinstance(obj, type):
            stack.extend(vars(obj).values())
