"""The ``fastnn`` command line: train on a CSV file, predict with a saved model, run the demo.

::

    fastnn train data.csv --target label --hidden 64,64 --epochs 30 --output model.fnn
    fastnn predict model.fnn new.csv --output predictions.csv
    fastnn demo --plot demo.png
    fastnn export model.fnn model.onnx

``train`` reads a CSV file with pandas (delimiter detected; see :mod:`fastnn._csv`),
sorts the feature columns into numbers, booleans and text, fits scikit-learn's
preprocessing on the training rows (numbers: median imputation and standardisation;
booleans: 0/1; text: one-hot), trains a :class:`fastnn.MLP` and prints one line per
epoch, then the final metrics and the training speed (Numba's compilation excluded).
``--output`` saves a scikit-learn Pipeline -- the fitted preprocessing, then a fastnn
MLPClassifier (labels as written in the CSV) or MLPRegressor (outputs in the target's
units) -- with :func:`fastnn.save`; ``predict`` applies it to a CSV file, matching
columns by name. Files from earlier versions hold a :class:`TabularModel` (numeric
columns, standardised), which ``predict`` and :func:`fastnn.load` still read.
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import re
import stat
import sys
import tempfile
import time
import warnings

import numpy as np

from . import __version__, _csv, registry
from ._backend import BACKENDS
from ._csv import CLIError, Table
from ._metrics import regression_scores
from .io import ModelFileError
from .optim import OPTIMIZERS, DivergenceError, get_optimizer
from .tabular import InputOverflow, TabularModel

__all__ = ["main", "build_parser", "TabularModel", "Table", "read_csv", "CLIError", "InputOverflow"]

HIDDEN_ACTIVATIONS = tuple(a.name for a in registry.ACTIVATIONS if a.hidden)
# A numeric target with at most this many distinct whole-number values is taken as
# class labels by --task auto.
MAX_AUTO_CLASSES = 20


# --- CSV --------------------------------------------------------------------------------------
# Reading (pandas), column kinds and the preprocessing live in fastnn._csv.


def read_csv(path, **options) -> Table:
    """The CSV file as a :class:`Table` (see :func:`fastnn._csv.read_csv`)."""
    return _csv.read_csv(path, **options)


def _float(value: str) -> float:
    x = float(value)  # accepts "1", "1.5e3", "nan", "inf": the last two are refused below
    if not math.isfinite(x):
        raise ValueError
    return x


def numeric_columns(table: Table, names, hint="") -> np.ndarray:
    """The named columns as a float64 array (n_rows, len(names)); a cell that is not a
    finite number is refused, naming its line (``hint`` ends the message)."""
    out = np.empty((table.n_rows, len(names)), np.float64)
    for j, name in enumerate(names):
        out[:, j] = _csv.as_kind(table, name, "numeric", hint=hint)
        miss = np.isnan(out[:, j])
        if miss.any():
            i = int(np.argmax(miss))
            raise CLIError(f"{table.path}, line {table.line(i)}: column {name!r} is empty{hint}")
    return out


def _label_order(labels: list[str]) -> list[str]:
    """Distinct labels, numerically sorted when they are all numbers, else as text."""
    distinct = sorted(set(labels))
    try:
        return sorted(distinct, key=float)
    except ValueError:
        return distinct


# --- train -------------------------------------------------------------------------------------


def _auto_task(values: list[str]) -> tuple[str, str]:
    try:
        nums = np.array([_float(v) for v in values])
    except ValueError:
        return "classify", "the target holds text"
    distinct = np.unique(nums)
    if np.all(distinct == np.round(distinct)) and len(distinct) <= MAX_AUTO_CLASSES:
        return "classify", f"{len(distinct)} distinct whole-number values"
    return "regress", "real-valued target"


def _split_rows(n, fraction, seed):
    n_val = int(round(n * fraction))
    if fraction <= 0 or n_val < 1:
        return np.arange(n), None
    if n - n_val < 1:
        raise CLIError(f"--validation-split {fraction} leaves no training rows out of {n}")
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def _standardise(X):
    """Column means and standard deviations (1 for constant columns), never inf for
    finite data: columns whose squares overflow are measured in units of their
    largest value."""
    with np.errstate(over="ignore", invalid="ignore"):
        mean = X.mean(axis=0)
        scale = X.std(axis=0)
    bad = ~(np.isfinite(mean) & np.isfinite(scale))
    if bad.any():
        top = np.abs(X[:, bad]).max(axis=0)
        unit = X[:, bad] / top
        mean[bad] = unit.mean(axis=0) * top
        scale[bad] = unit.std(axis=0) * top
    scale[scale == 0] = 1.0  # constant columns: centred, not scaled (as StandardScaler)
    return mean, scale


def _transform(tab, X, table, rows=None):
    """``tab.transform(X)``; a value too large is reported with its CSV line."""
    try:
        return tab.transform(X)
    except InputOverflow as exc:
        i = exc.row if rows is None else int(rows[exc.row])
        raise CLIError(
            f"{table.path}, line {table.line(i)}: column {exc.column!r} holds "
            f"{exc.value:.6g}, too large for this model (standardised with the "
            f"training rows, it overflows {tab.model.dtype.name}); rescale "
            f"the column or train in float64 (--dtype float64)"
        ) from None


def _column_list(values, header, option) -> list:
    """Column names from repeated ``--features A,B`` values: a name containing commas
    (``city_New York, NY``) is recognised when it is a column of the file; names
    given with --feature / --exclude-column are taken whole."""
    names = []
    for value in values or ():
        if value in header:
            names.append(value)
            continue
        parts, i = value.split(","), 0
        while i < len(parts):
            for j in range(len(parts), i, -1):  # the longest run that names a column
                name = ",".join(parts[i:j]).strip()
                if name in header:
                    break
            else:
                name, j = parts[i].strip(), i + 1
            if name:
                names.append(name)
            i = j
    return list(dict.fromkeys(names))


def _choose_features(args, table) -> list:
    header, path = table.header, table.path
    given = _column_list(args.features, header, "--features") + list(args.feature or ())
    excluded = _column_list(args.exclude, header, "--exclude")
    for names, option in ((given, "--features/--feature"), (excluded, "--exclude")):
        missing = [f for f in names if f not in header]
        if missing:
            raise CLIError(
                f"{path}: no column(s) {missing} (from {option}); the columns "
                f"are {', '.join(header)}"
            )
    if args.target in given:
        raise CLIError(f"--features includes the target column {args.target!r}")
    if given:
        features = [f for f in dict.fromkeys(given) if f not in excluded]
    else:
        features = [h for h in header if h != args.target and h not in excluded]
    if not features:
        raise CLIError(f"{path}: no feature columns besides the target {args.target!r}")
    return features


def _first_line(table, mask) -> int:
    return table.line(int(np.argmax(mask)))


def _overflow_check(table, ct, Z, dtype, rows=None):
    """Refuse inputs whose standardised values are not finite in the network's dtype,
    naming the CSV line and the column."""
    with np.errstate(over="ignore", invalid="ignore"):
        bad = ~np.isfinite(Z.astype(dtype))
    if bad.any():
        i, j = np.argwhere(bad)[0]
        row = int(i) if rows is None else int(rows[i])
        name = _csv.feature_of_output(ct, int(j))
        value = table.frame[name].iloc[row]
        raise CLIError(
            f"{table.path}, line {table.line(row)}: column {name!r} holds "
            f"{float(value):.6g}, too large for this model (standardised with "
            f"the training rows, it overflows {np.dtype(dtype).name}); rescale "
            f"the column or train in float64 (--dtype float64)"
        )


def _quietly(func, *args):
    """scikit-learn's preprocessing without its warnings (unknown categories at
    predict time are encoded as zeros, as intended)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return func(*args)


def _numba_cache_is_cold(module="training_numba") -> bool:
    """True when the Numba backend will compile: its on-disk cache (__pycache__ or
    $NUMBA_CACHE_DIR) holds no index for the kernels ``module`` defines."""
    try:
        from ._kernels import _numba_common

        if _numba_common.DISABLE_JIT:
            return False
        kernels = __import__(f"fastnn._kernels.{module}", fromlist=["_"])
        dispatcher = next(
            v
            for v in vars(kernels).values()
            if hasattr(v, "_cache") and hasattr(v._cache, "_cache_path")
        )
        where = dispatcher._cache._cache_path
        return not any(n.startswith(f"{module}.") and n.endswith(".nbi") for n in os.listdir(where))
    except Exception:  # no Numba, no cache directory yet, a Numba without these names
        return True


COMPILING = "fastnn: compiling fastnn's Numba kernels (first run only, ~30 s)..."


def _announce_compilation(backend_name, module="training_numba") -> bool:
    if backend_name == "numba" and _numba_cache_is_cold(module):
        print(COMPILING, file=sys.stderr, flush=True)
        return True
    return False


def _warm_up(model, activation, Xtr, ytr, val_data, make_optimizer, batch_size) -> float:
    """Train a network of the same shape for one epoch on a few rows (and predict with
    it), so that Numba compiles before the timed run; the seconds it took."""
    from .model import MLP

    t0 = time.perf_counter()
    tiny = MLP(
        model.layer_sizes,
        activation,
        loss=model.loss.name,
        dtype=model.dtype,
        backend=model.backend_name,
        random_state=0,
    )
    n = min(len(Xtr), batch_size + 1)
    val = None if val_data is None else (val_data[0][:2], val_data[1][:2])
    tiny.fit(
        Xtr[:n],
        ytr[:n],
        optimizer=make_optimizer(),
        epochs=1,
        batch_size=batch_size,
        validation_data=val,
        verbose=0,
    )
    tiny.predict(Xtr[:2])
    if model.loss.name == "cross_entropy":
        tiny.predict_proba(Xtr[:2])
    return time.perf_counter() - t0


def cmd_train(args, out=print) -> int:
    from .model import MLP

    t_start = time.perf_counter()
    if args.output:
        _check_model_output(args.output)  # before training, not after it
    table = read_csv(args.data, text=[args.target], encoding=args.encoding, header=args.header)
    if table.note:
        out(table.note)
    header = table.header
    if args.target not in header:
        raise CLIError(
            f"{args.data}: no column {args.target!r}; the columns are {', '.join(header)}"
        )
    features = _choose_features(args, table)
    target = table.column(args.target)
    missing = np.array([t is None or t == "" for t in target])
    if missing.all():
        raise CLIError(f"{args.data}: the target column {args.target!r} is empty on every row")
    if missing.any():
        raise CLIError(
            f"{args.data}, line {_first_line(table, missing)}: the target "
            f"column {args.target!r} is empty"
        )
    task, why = (args.task, "given") if args.task != "auto" else _auto_task(target)

    if task == "classify":
        classes = _label_order(target)
        if len(classes) < 2:
            raise CLIError(
                f"{args.data}: the target column {args.target!r} has a single "
                f"class ({classes[0]!r}); classification needs at least 2"
            )
        index = {c: i for i, c in enumerate(classes)}
        y = np.array([index[t] for t in target], np.int64)
        loss, n_out = "cross_entropy", len(classes)
    else:
        classes = None
        bad = [i for i, t in enumerate(target) if not _is_number(t)]
        if bad:
            raise CLIError(
                f"{args.data}, line {table.line(bad[0])}: the target column "
                f"{args.target!r} holds {target[bad[0]]!r}, not a number; use "
                f"--task classify for class labels"
            )
        y = np.array([_float(t) for t in target])
        loss, n_out = "mse", 1

    kinds = {f: _csv.column_kind(table, f) for f in features}
    frame = _csv.frame_of(table, kinds)
    n = table.n_rows
    train, val = _split_rows(n, args.validation_split, 0 if args.seed is None else args.seed)
    y_mean, y_scale = 0.0, 1.0
    if task == "regress":
        m, sc = _standardise(y[train].reshape(-1, 1))
        y_mean, y_scale = float(m[0]), float(sc[0])
    as_pipeline = bool(args.output) and _saves_pipelines()
    if (
        as_pipeline
        and task == "regress"
        and args.dtype == "float32"
        and max(abs(y_mean), y_scale) > 1e30
    ):
        raise CLIError(
            f"{args.data}: the target column {args.target!r} reaches "
            f"{np.abs(y).max():.3g}, beyond what a float32 network's saved "
            f"predictions can hold; train in float64 (--dtype float64)"
        )
    ct = _csv.preprocessor(kinds)
    _quietly(ct.fit, frame.iloc[train])
    _csv.robust_scaler(ct, frame.iloc[train])
    Z = _quietly(ct.transform, frame).astype(np.float64)
    _overflow_check(table, ct, Z, args.dtype)
    for f in features:  # after the checks: a refused file prints one line only
        reason = _csv.identifier_reason(f, kinds[f], frame[f].to_numpy())
        if reason:
            print(
                f"fastnn train: warning: column {f!r} looks like a row identifier "
                f"({reason}) and is used as a feature; leave it out with --exclude "
                f"{_quote_option(f)}",
                file=sys.stderr,
            )
    n_in = Z.shape[1]
    tab = TabularModel(
        None,
        [f"z{j}" for j in range(n_in)],
        args.target,
        task,
        classes,
        np.zeros(n_in),
        np.ones(n_in),
        y_mean,
        y_scale,
    )
    try:
        model = MLP(
            [n_in, *args.hidden, n_out],
            args.activation,
            loss=loss,
            dtype=args.dtype,
            backend=args.backend,
            random_state=args.seed,
        )
    except ValueError as exc:  # layers too large for memory: say which option
        raise CLIError(f"--hidden {','.join(map(str, args.hidden))}: {exc}") from None
    tab.model = model

    def targets(rows_idx):
        return y[rows_idx] if task == "classify" else (y[rows_idx] - y_mean) / y_scale

    Xtr, ytr = tab.transform(Z[train]), targets(train)
    val_data = None if val is None else (tab.transform(Z[val]), targets(val))

    def make_optimizer():
        return (
            get_optimizer(args.optimizer)
            if args.lr is None
            else get_optimizer(args.optimizer, lr=args.lr)
        )

    opt = make_optimizer()
    counts = {k: sum(1 for v in kinds.values() if v == k) for k in ("numeric", "boolean", "text")}
    kinds_text = ", ".join(f"{c} {k}" for k, c in counts.items() if c)
    out(
        f"{args.data}: {n} rows, {len(features)} feature columns ({kinds_text}), target "
        f"{args.target!r}"
    )
    out(
        f"task: {task} ({why})"
        + (f", {len(classes)} classes: {_short_list(classes)}" if classes else "")
    )
    out(
        f"model: {model.layer_sizes} {args.activation}, loss {loss}, {model.dtype.name}, "
        f"backend {model.backend_name!r}, {model.n_params:,} parameters"
    )
    out(
        f"training on {len(train)} rows"
        + (f", validating on {len(val)}" if val is not None else "")
        + f": {opt!r}, batch "
        f"{args.batch_size}, {args.epochs} epochs"
    )
    compile_s = None
    if model.backend_name == "numba":
        # Compile before the timed run: the speed below is training only.
        _announce_compilation("numba")
        compile_s = _warm_up(
            model, args.activation, Xtr, ytr, val_data, make_optimizer, args.batch_size
        )
    t0 = time.perf_counter()
    try:
        hist = model.fit(
            Xtr,
            ytr,
            optimizer=opt,
            epochs=args.epochs,
            batch_size=args.batch_size,
            validation_data=val_data,
            verbose=0 if args.quiet else 1,
        )
    except DivergenceError as exc:
        raise CLIError(str(exc)) from None
    fit_s = time.perf_counter() - t0

    out("")
    out("final metrics:")
    labels = np.asarray(target, dtype=object)
    _report(out, "train", tab, Z[train], labels[train], y[train])
    if val is not None:
        _report(out, "validation", tab, Z[val], labels[val], y[val])
    n_seen = len(train) * len(hist)
    extra = (
        "" if compile_s is None else f"; Numba compilation, {compile_s:.1f} s, before the timed run"
    )
    out(
        f"speed: {len(hist)} epochs in {fit_s:.3f} s, {n_seen / fit_s:,.0f} samples/s "
        f"(wall time {time.perf_counter() - t_start:.2f} s{extra})"
    )
    if args.output:
        from .io import save

        if as_pipeline:
            saved = _pipeline(
                ct, model, task, classes, y_mean, y_scale, args, len(train), len(hist)
            )
        elif all(k == "numeric" for k in kinds.values()) and not frame.isna().any().any():
            scaler = ct.named_transformers_["numeric"].named_steps["scale"]
            saved = TabularModel(
                model,
                features,
                args.target,
                task,
                classes,
                scaler.mean_,
                scaler.scale_,
                y_mean,
                y_scale,
            )
        else:
            raise CLIError(
                f"{args.output}: saving a model with text, boolean or missing "
                f"values needs fastnn.save of scikit-learn pipelines (skops): "
                f"pip install 'fastnn-mlp[cli]'"
            )
        try:
            save(saved, args.output)
        except OSError as exc:  # changed since the check: a full disk, a new FIFO...
            raise CLIError(_os_error(args.output, exc, "cannot save the model")) from None
        out(f"saved the model to {args.output} (use: fastnn predict {args.output} DATA.csv)")
    return 0


def _quote_option(name) -> str:
    return name if re.fullmatch(r"[\w.\-]+", name) else repr(name)


def _saves_pipelines() -> bool:
    """fastnn.save takes scikit-learn pipelines (fastnn._pipeline_io, with skops)."""
    import importlib.util

    return (
        importlib.util.find_spec("fastnn._pipeline_io") is not None
        and importlib.util.find_spec("skops") is not None
    )


def _pipeline(ct, model, task, classes, y_mean, y_scale, args, n_train, n_epochs):
    """Pipeline([("preprocess", ct), ("model", MLPClassifier | MLPRegressor)]) around
    the trained network; a regression network's last layer takes the target's scale
    (its outputs are in the target's units)."""
    from sklearn.pipeline import Pipeline

    from .estimators import MLPClassifier, MLPRegressor, _classes_to_payload
    from .io import _params_to_json

    cls = MLPClassifier if task == "classify" else MLPRegressor
    lr = args.lr if args.lr is not None else getattr(get_optimizer(args.optimizer), "lr", 1e-3)
    est = cls(
        hidden_layer_sizes=tuple(args.hidden),
        activation=args.activation,
        optimizer=args.optimizer,
        learning_rate_init=float(lr) if isinstance(lr, (int, float)) else 1e-3,
        batch_size=args.batch_size,
        max_iter=args.epochs,
        random_state=args.seed,
        backend=args.backend,
        dtype=args.dtype,
    )
    fitted = {
        "n_features_in_": model.n_features_in,
        "n_outputs_": model.n_outputs,
        "n_layers_": len(model.layer_sizes),
        "n_iter_": n_epochs,
        "t_": n_train * n_epochs,
        "out_activation_": "softmax" if task == "classify" else "identity",
    }
    meta = {"estimator": cls.__name__, "params": _params_to_json(est), "fitted": fitted}
    arrays = {}
    if task == "classify":
        meta["classes"], arrays = _classes_to_payload(np.asarray(classes, dtype=object))
        meta["y_type"] = "multiclass"  # one softmax output per class, even for two
    else:
        last = model.layers[-1]
        with np.errstate(over="ignore", invalid="ignore"):
            last.W[...] = last.W * y_scale
            last.b[...] = last.b * y_scale + y_mean
        if not (np.isfinite(last.W).all() and np.isfinite(last.b).all()):
            raise CLIError(
                f"{args.output}: the target's scale ({y_scale:.3g}) overflows "
                f"{model.dtype.name}; train in float64 (--dtype float64)"
            )
    est = cls._from_payload(model, meta, arrays)
    pipe = Pipeline([("preprocess", ct), ("model", est)])
    pipe.fastnn_target_ = args.target
    return pipe


def _os_error(path, exc: OSError, doing: str) -> str:
    """One line for an OSError: fastnn's own name the path already."""
    text = str(exc)
    if text.startswith(os.fspath(path)):
        return text
    return f"{path}: {doing} ({exc.strerror or text})"


def _writable_directory(path, what: str) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise CLIError(
            f"{path}: the directory {os.path.dirname(path) or directory} does "
            f"not exist; create it or choose another {what}"
        )
    if not os.access(directory, os.W_OK | os.X_OK):
        raise CLIError(
            f"{path}: cannot write in the directory {directory} (permission "
            f"denied); choose another {what}"
        )


def _check_model_output(path) -> None:
    """Refuse an --output that fastnn.save would refuse, before the training run."""
    from .io import _destination

    try:
        target = _destination(path)
    except OSError as exc:
        raise CLIError(_os_error(path, exc, "cannot save the model there")) from None
    _writable_directory(target, "--output")


def _is_number(text):
    try:
        _float(text)
    except ValueError:
        return False
    return True


def _short_list(items, limit=10):
    shown = ", ".join(str(i) for i in items[:limit])
    return shown + (f", ... ({len(items)} in all)" if len(items) > limit else "")


def _report(out, name, tab, X, labels, y):
    pred = tab.predict(X)
    if tab.task == "classify":
        acc = float(np.mean(pred == labels))
        probs = tab.predict_proba(X).astype(np.float64)
        logloss = float(-np.mean(np.log(np.clip(probs[np.arange(len(y)), y], 1e-300, None))))
        out(f"  {name:<10} accuracy {acc:.4f}   log-loss {logloss:.4f}   ({len(y)} rows)")
    else:
        # in units of the target's scale, so that targets near 1e300 do not overflow
        u, p = (y - tab.y_mean) / tab.y_scale, (pred - tab.y_mean) / tab.y_scale
        r2, rmse = (float(v[0]) for v in regression_scores(u[:, None], p[:, None]))
        rmse *= tab.y_scale
        out(f"  {name:<10} R^2 {r2:.4f}   RMSE {rmse:.6g}   ({len(y)} rows)")


# --- predict -------------------------------------------------------------------------------------


def _csv_pipeline(obj):
    """The (preprocessing, final estimator) of a scikit-learn Pipeline whose first step
    selects DataFrame columns by name (a ColumnTransformer), else None."""
    steps = getattr(obj, "steps", None)
    if not steps or len(steps) < 2:
        return None
    first = steps[0][1]
    if not hasattr(first, "feature_names_in_"):
        return None
    return first, steps[-1][1]


PREDICT_HINT = " (the model was trained with this kind of value in this column)"


def cmd_predict(args, out=print) -> int:
    from .io import load
    from .model import MLP

    if not os.path.exists(args.model):
        raise CLIError(f"{args.model}: no such file")
    if args.output:
        _check_predictions_output(args.output)
    obj = load(args.model)
    target_name = None
    parts = _csv_pipeline(obj)
    text = []
    kinds: dict | None  # of the pipeline's ColumnTransformer (None: some other one)
    if isinstance(obj, TabularModel):
        target_name = obj.target
    elif parts is not None:
        target_name = getattr(obj, "fastnn_target_", None)
        kinds = _csv.kinds_of(parts[0]) or {}
        text = [c for c, k in kinds.items() if k == "text"]
    table = read_csv(
        args.data,
        text=[*text, *([target_name] if target_name else [])],
        encoding=args.encoding,
        header=args.header,
    )
    header = table.header
    proba, classes, truth, task = None, None, None, None
    backend = (
        getattr(getattr(obj, "model", None), "backend_name", None)
        or getattr(getattr(obj, "_model", None), "backend_name", None)
        or getattr(obj, "backend_name", None)
    )
    if parts is not None:
        backend = getattr(getattr(parts[1], "_model", None), "backend_name", None)
    _announce_compilation(backend, "dense_numba")
    if isinstance(obj, TabularModel):
        missing = [f for f in obj.features if f not in header]
        if missing:
            raise CLIError(
                f"{args.data}: no column(s) {missing}; the model was trained on "
                f"{', '.join(obj.features)}"
            )
        X = numeric_columns(table, obj.features, hint=PREDICT_HINT)
        _transform(obj, X, table)  # a value too large: named with its line
        pred = obj.predict(X)
        task = obj.task
        if obj.task == "classify":
            classes = obj.classes
            proba = obj.predict_proba(X) if args.proba else None
    elif parts is not None:
        pre, final = parts
        names = [str(c) for c in pre.feature_names_in_]
        missing = [f for f in names if f not in header]
        if missing:
            raise CLIError(
                f"{args.data}: no column(s) {missing}; the model was trained on {', '.join(names)}"
            )
        kinds = _csv.kinds_of(pre)
        if kinds is not None:
            frame = _csv.frame_of(table, kinds, hint=PREDICT_HINT)
        else:
            frame = table.frame[names]
        Z = _quietly(obj[:-1].transform, frame)
        net = getattr(final, "_model", None)
        if net is not None and kinds is not None:
            _overflow_check(table, pre, np.asarray(Z, np.float64), net.dtype)
        pred = _quietly(final.predict, Z)
        if hasattr(final, "predict_proba") and np.ndim(getattr(final, "classes_", [])) == 1:
            task = "classify"
            classes = list(final.classes_)
            proba = _quietly(final.predict_proba, Z) if args.proba else None
        else:
            task = "regress"
    elif isinstance(obj, MLP):
        if len(header) != obj.n_features_in:
            raise CLIError(
                f"{args.data}: {len(header)} columns, but the model takes "
                f"{obj.n_features_in} inputs (a bare fastnn.MLP reads every "
                f"column, in order)"
            )
        X = numeric_columns(table, header, hint=PREDICT_HINT)
        pred = obj.predict(X)
        if obj.loss.name == "cross_entropy":
            classes = list(range(obj.n_outputs))
            proba = obj.predict_proba(X) if args.proba else None
    elif hasattr(obj, "n_features_in_"):  # fastnn.MLPClassifier / MLPRegressor
        names = list(getattr(obj, "feature_names_in_", []))
        if names:
            missing = [f for f in names if f not in header]
            if missing:
                raise CLIError(
                    f"{args.data}: no column(s) {missing}; the estimator was "
                    f"fitted on {', '.join(names)}"
                )
        elif len(header) != obj.n_features_in_:
            raise CLIError(
                f"{args.data}: {len(header)} columns, but the estimator takes "
                f"{obj.n_features_in_} features (every column, in order)"
            )
        X = numeric_columns(table, names or header, hint=PREDICT_HINT)
        pred = obj.predict(X)
        if hasattr(obj, "predict_proba") and np.ndim(obj.classes_) == 1:
            classes = list(obj.classes_)
            proba = obj.predict_proba(X) if args.proba else None
            if proba is not None and len(classes) == 1:
                # scikit-learn's single-class predict_proba has two columns, the
                # class's probability first: one column per class here
                proba = proba[:, :1]
    else:
        raise CLIError(f"{args.model}: holds a {type(obj).__name__}, which predict cannot use")
    if target_name and target_name in header:
        truth = table.column(target_name)
    n_rows = table.n_rows
    pred = np.asarray(pred)
    cols = ["prediction"] if pred.ndim == 1 else [f"prediction_{j}" for j in range(pred.shape[1])]
    if proba is not None:
        assert classes is not None  # every branch that sets proba sets classes
        cols += [f"proba_{c}" for c in classes]

    def write(stream):
        writer = csv.writer(stream)
        writer.writerow(cols)
        for i in range(n_rows):
            cells = [_cell(v) for v in np.atleast_1d(pred[i])]
            if proba is not None:
                cells += [f"{p:.6g}" for p in proba[i]]
            writer.writerow(cells)

    if args.output:
        _write_atomically(args.output, write)
    else:
        write(sys.stdout)
    if truth is not None and all(t not in (None, "") for t in truth):
        if task == "classify":
            acc = float(
                np.mean(
                    np.asarray([_cell(p) for p in pred], dtype=object)
                    == np.asarray(truth, dtype=object)
                )
            )
            print(
                f"{args.data} has the target column {target_name!r}: accuracy {acc:.4f}",
                file=sys.stderr,
            )
        elif all(_is_number(t) for t in truth):
            # in units of the target's scale: targets near 1e300 do not overflow
            y_mean, y_scale = (
                (obj.y_mean, obj.y_scale)
                if isinstance(obj, TabularModel)
                else _standardise(np.array([[float(v)] for v in truth]))
            )
            y_mean, y_scale = float(np.ravel(y_mean)[0]), float(np.ravel(y_scale)[0])
            t = (np.array([float(v) for v in truth]) - y_mean) / y_scale
            p = (np.asarray(pred, np.float64) - y_mean) / y_scale
            r2 = float(regression_scores(t[:, None], p[:, None])[0][0])
            print(
                f"{args.data} has the target column {target_name!r}: R^2 {r2:.4f}", file=sys.stderr
            )
    if args.output:
        out(f"wrote {n_rows} predictions to {args.output}")
    return 0


def _check_predictions_output(path) -> None:
    """Refuse an --output that cannot be written, before loading and predicting."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        _writable_directory(path, "--output")
        return
    except OSError as exc:
        raise CLIError(_os_error(path, exc, "cannot write there")) from None
    if stat.S_ISDIR(st.st_mode):
        raise CLIError(f"{path}: is a directory; give a file name for the predictions")
    if stat.S_ISREG(st.st_mode):
        _writable_directory(os.path.realpath(path), "--output")
        if not st.st_mode & 0o222 or not os.access(path, os.W_OK):
            raise CLIError(
                f"{path}: the file is read-only; make it writable or choose another --output"
            )


def _write_atomically(path, write) -> None:
    """Call ``write(stream)`` on a temporary file beside ``path``, renamed over it at
    the end: an error or Ctrl-C midway leaves no partial CSV that looks complete
    (nor destroys the previous file). A device or FIFO (/dev/stdout) is written
    directly."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        st = None
    if st is not None and not stat.S_ISREG(st.st_mode):
        try:
            with open(path, "w", newline="") as stream:
                write(stream)
        except OSError as exc:
            raise CLIError(_os_error(path, exc, "cannot write the predictions")) from None
        return
    from .io import _file_mode

    target = os.path.realpath(path)  # through a symlink: replace its target
    try:
        fd, tmp = tempfile.mkstemp(prefix=".fastnn-", suffix=".tmp", dir=os.path.dirname(target))
    except OSError as exc:
        raise CLIError(_os_error(path, exc, "cannot write the predictions")) from None
    try:
        os.chmod(tmp, _file_mode(target))  # the old file's, or what open() would give
        with os.fdopen(fd, "w", newline="") as stream:
            write(stream)
        os.replace(tmp, target)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(exc, OSError):
            raise CLIError(_os_error(path, exc, "cannot write the predictions")) from None
        raise


def _cell(value):
    if isinstance(value, (float, np.floating)):
        return f"{float(value):.9g}"
    return str(value)


# --- export ------------------------------------------------------------------------------------


def cmd_export(args, out=print) -> int:
    """Write a saved model as ONNX (see :mod:`fastnn.onnx_export`), atomically."""
    from .io import _file_mode, load
    from .onnx_export import to_onnx  # ImportError: the "onnx" extra, reported by main

    if not os.path.exists(args.model):
        raise CLIError(f"{args.model}: no such file")
    if os.path.isdir(args.output):
        raise CLIError(f"{args.output}: is a directory; give a file name for the ONNX model")
    _writable_directory(args.output, "output file")
    obj = load(args.model)
    try:
        proto = to_onnx(obj, opset=args.opset)
    except TypeError as exc:  # an object fastnn cannot export
        raise CLIError(f"{args.model}: {exc}") from None
    target = os.path.realpath(args.output)  # through a symlink: replace its target
    try:
        fd, tmp = tempfile.mkstemp(prefix=".fastnn-", suffix=".tmp", dir=os.path.dirname(target))
    except OSError as exc:
        raise CLIError(_os_error(args.output, exc, "cannot write the ONNX model")) from None
    try:
        os.chmod(tmp, _file_mode(target))
        with os.fdopen(fd, "wb") as stream:
            stream.write(proto.SerializeToString())
        os.replace(tmp, target)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(exc, OSError):
            raise CLIError(_os_error(args.output, exc, "cannot write the ONNX model")) from None
        raise
    from onnx.helper import tensor_dtype_to_np_dtype

    opset = next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
    inputs = proto.graph.input
    outputs = ", ".join(o.name for o in proto.graph.output)
    if len(inputs) == 1:
        x = inputs[0].type.tensor_type
        what = (
            f"input {inputs[0].name} ({x.shape.dim[1].dim_value} columns, "
            f"{tensor_dtype_to_np_dtype(x.elem_type).name})"
        )
    else:  # a pipeline over named columns: one input per column
        what = f"{len(inputs)} inputs, one per column ({', '.join(i.name for i in inputs)})"
    out(f"wrote {args.output}: ONNX opset {opset}, {what}, outputs {outputs}")
    return 0


# --- demo --------------------------------------------------------------------------------------


def cmd_demo(args, out=print) -> int:
    from .demo import run_demo

    run_demo(
        args.backend,
        quick=args.quick,
        plot=args.plot,
        compare=not args.no_compare,
        threads=args.threads or None,
        out=out,
    )
    return 0


# --- argument parsing --------------------------------------------------------------------------


def _hidden(text: str) -> list[int]:
    if text.strip() in ("", "none"):
        return []
    try:
        sizes = [int(s) for s in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated layer widths such as 128,64, got {text!r}"
        ) from None
    if any(s < 1 for s in sizes):
        raise argparse.ArgumentTypeError(f"layer widths must be >= 1, got {text!r}")
    return sizes


def _positive(kind, low=1):
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not (value >= low if kind is int else (value > 0 and math.isfinite(value))):
            raise argparse.ArgumentTypeError(
                f"must be >= {low}, got {text}" if kind is int else f"must be > 0, got {text}"
            )
        return value

    return parse


def _fraction(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {text}")
    return value


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows "(default: X)" only for real defaults that the help text does not state."""

    def _get_help_string(self, action):
        text = action.help or ""
        if action.default in (None, False, argparse.SUPPRESS) or "default" in text:
            return text
        return super()._get_help_string(action)


def _add_csv_reading_options(p) -> None:
    """--encoding and --header, read the same way by train and predict."""
    p.add_argument(
        "--encoding",
        default="utf-8-sig",
        metavar="NAME",
        help="text encoding of the CSV file (default: UTF-8, with or without a byte-order mark)",
    )
    p.add_argument(
        "--header",
        choices=("auto", "names", "none"),
        default="auto",
        help="auto: the first line holds the column names, or scikit-learn's "
        "counts (n_samples,n_features,...: columns feature_0, ..., target); "
        "names: always column names; none: no header (column_1, ...)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The ``fastnn`` command line's argument parser: one subcommand per command."""
    parser = argparse.ArgumentParser(
        prog="fastnn",
        description="Fast CPU training of dense neural networks (MLPs).",
        epilog="Run `fastnn COMMAND --help` for the options of a command. "
        "Start with `fastnn demo`.",
    )
    parser.add_argument("--version", action="version", version=f"fastnn {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    fmt = _HelpFormatter
    p = sub.add_parser(
        "train",
        formatter_class=fmt,
        help="train a network on a CSV file",
        description="Train an MLP on a CSV file with a header row (comma, semicolon, tab "
        "or space separated, detected). Feature columns may hold numbers, "
        "true/false or text; empty cells and NA are missing values. Numbers "
        "are imputed with the median and standardised, booleans become 0/1, "
        "text is one-hot encoded (all fitted on the training rows only); "
        "--output saves this preprocessing with the network. Prints one "
        "line per epoch, then the final metrics and the speed.",
        epilog="example: fastnn train customers.csv --target plan --exclude id "
        "--hidden 32 --epochs 100 --output plan.fnn",
    )
    p.add_argument("data", metavar="DATA.csv", help="training data (CSV with a header row)")
    p.add_argument(
        "--target", required=True, metavar="COLUMN", help="name of the column to predict"
    )
    p.add_argument(
        "--features",
        metavar="COL,COL,...",
        action="append",
        help="feature columns to use (default: every column but the target); "
        "may be repeated; a column name containing commas is recognised",
    )
    p.add_argument(
        "--feature",
        metavar="COLUMN",
        action="append",
        help="one feature column, its name taken whole; may be repeated",
    )
    p.add_argument(
        "--exclude",
        metavar="COL,COL,...",
        action="append",
        help="columns not to use as features (an id column, say); may be repeated",
    )
    p.add_argument(
        "--task",
        choices=("auto", "classify", "regress"),
        default="auto",
        help="auto: text targets, or at most "
        f"{MAX_AUTO_CLASSES} distinct whole numbers, are class labels",
    )
    p.add_argument(
        "--hidden",
        type=_hidden,
        default="128,128",
        metavar="W,W,...",
        help="hidden layer widths, e.g. 128,128 ('none' for no hidden layer)",
    )
    p.add_argument(
        "--activation", choices=HIDDEN_ACTIVATIONS, default="relu", help="hidden-layer activation"
    )
    p.add_argument(
        "--optimizer",
        choices=sorted(OPTIMIZERS),
        default="adam",
        help="optimizer (its other hyperparameters keep their usual values)",
    )
    p.add_argument(
        "--lr",
        type=_positive(float),
        help="learning rate (default: the optimizer's, 1e-3 for adam)",
    )
    p.add_argument(
        "--epochs", type=_positive(int), default=50, help="passes over the training rows"
    )
    p.add_argument(
        "--batch-size",
        type=_positive(int),
        default=64,
        help="rows per mini-batch (the last partial batch is kept)",
    )
    p.add_argument(
        "--validation-split",
        type=_fraction,
        default=0.1,
        metavar="FRACTION",
        help="fraction of the rows held out to report validation metrics",
    )
    p.add_argument(
        "--backend",
        choices=BACKENDS,
        default=None,
        help="kernels to run (default: the fastest built)",
    )
    p.add_argument(
        "--dtype",
        choices=("float32", "float64"),
        default="float32",
        help="floating-point type of the network",
    )
    p.add_argument(
        "--seed",
        type=_positive(int, 0),
        default=None,
        help="random seed (initial weights, shuffling, validation split)",
    )
    p.add_argument(
        "--output",
        "-o",
        metavar="MODEL.fnn",
        help="save the trained model to this file (checked before training)",
    )
    p.add_argument("--quiet", "-q", action="store_true", help="no per-epoch lines")
    _add_csv_reading_options(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "predict",
        formatter_class=fmt,
        help="predict with a saved model",
        description="Predict every row of a CSV file with a model saved by `fastnn train "
        "--output` (columns are matched by name, other columns are ignored, "
        "the saved preprocessing is applied; a target column, if present, "
        "is used to report the accuracy or R^2 on stderr), by fastnn.save of an "
        "MLPClassifier/MLPRegressor, or of a bare fastnn.MLP (every column, in "
        "order).",
    )
    p.add_argument("model", metavar="MODEL", help="a fastnn model file")
    p.add_argument("data", metavar="DATA.csv", help="rows to predict (CSV with a header row)")
    p.add_argument(
        "--output",
        "-o",
        metavar="PREDS.csv",
        help="write the predictions here, whole or not at all (default: standard output)",
    )
    p.add_argument(
        "--proba", action="store_true", help="also write one probability column per class"
    )
    _add_csv_reading_options(p)
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser(
        "export",
        formatter_class=fmt,
        help="write a saved model as ONNX",
        description="Write a model saved by `fastnn train --output` (input: the raw "
        "feature columns in training order, standardised inside the graph), "
        "by fastnn.save of an MLPClassifier/MLPRegressor or of a bare "
        "fastnn.MLP as an ONNX model that onnxruntime runs (see "
        "fastnn.to_onnx). Needs `pip install 'fastnn-mlp[onnx]'`.",
    )
    p.add_argument("model", metavar="MODEL", help="a fastnn model file")
    p.add_argument("output", metavar="OUT.onnx", help="the ONNX file to write")
    p.add_argument("--opset", type=_positive(int), default=None, help="ONNX opset (default: 17)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser(
        "demo",
        formatter_class=fmt,
        help="the main job: digits and spiral, side by side with scikit-learn",
        description="Train on scikit-learn's bundled digits (64-128-128-10, Adam 1e-3, "
        "batch 64, 50 epochs, standardised, fixed split) and on the "
        "three-class spiral (2-128-3, Adam 0.005, batch 64, L2 1e-4, 300 "
        "epochs); print test/training accuracy, samples/s and wall time, and "
        "scikit-learn's MLPClassifier on the same data when it is installed.",
    )
    p.add_argument(
        "--plot",
        metavar="FILE.png",
        help="save learning curves and the spiral's decision boundary (needs matplotlib)",
    )
    p.add_argument(
        "--backend",
        choices=BACKENDS,
        default=None,
        help="fastnn kernels (default: the fastest built)",
    )
    p.add_argument(
        "--quick", action="store_true", help="10 digits and 60 spiral epochs: a fast smoke run"
    )
    p.add_argument(
        "--threads",
        type=_positive(int, 0),
        default=1,
        help="BLAS threads for both libraries; 0 leaves BLAS as configured",
    )
    p.add_argument(
        "--no-compare", action="store_true", help="do not train scikit-learn's MLPClassifier"
    )
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv=None) -> int:
    """Entry point of the ``fastnn`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (CLIError, ModelFileError, ImportError) as exc:
        print(f"fastnn {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except ValueError as exc:  # fastnn's argument checks
        print(f"fastnn {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"fastnn {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader of our output went away (`fastnn predict ... | head`): stop
        # quietly, and keep Python from complaining again when it flushes stdout.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    except OSError as exc:  # a file that could not be read or written
        name = f"{exc.filename}: " if exc.filename and str(exc.filename) not in str(exc) else ""
        print(f"fastnn {args.command}: error: {name}{exc.strerror or exc}", file=sys.stderr)
        return 1
    except MemoryError:
        print(
            f"fastnn {args.command}: error: out of memory; use smaller layers, batches or data",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":  # pragma: no cover
    # `python -m fastnn.cli`: run the module imported as fastnn.cli, not this __main__
    # copy of it, so that one set of its classes and globals is in use whichever way
    # the command starts.
    from fastnn.cli import main as _main

    sys.exit(_main())
