"""CSV files for the command line: reading them (pandas), typing their columns, and the
scikit-learn preprocessing fitted on them.

:func:`read_csv` detects the delimiter (comma, semicolon, tab, bar, or runs of spaces)
on the first lines, reads the file with pandas' C parser, and keeps what error
messages need: the file name and, found lazily, the line of every data row. Empty
cells and pandas' usual missing-value markers (``NA``, ``N/A``, ``NaN``, ``null``...)
are missing values. scikit-learn's bundled data files (``wine_data.csv``,
``breast_cancer.csv``, ``iris.csv``...) start with a line of counts
(``n_samples,n_features,target names...``) instead of column names; it is recognised
and the columns are named ``feature_0``, ``feature_1``..., ``target``.

:func:`column_kind` sorts feature columns into numeric, boolean and text columns, and
:func:`preprocessor` builds the ColumnTransformer that ``fastnn train`` fits on the
training rows and saves in front of the network.
"""

from __future__ import annotations

import csv
import os
import re
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "CLIError",
    "Table",
    "read_csv",
    "column_kind",
    "as_kind",
    "preprocessor",
    "identifier_reason",
    "NA_VALUES",
]


class CLIError(Exception):
    """A problem with the user's input, reported as one line without a traceback."""


# pandas' default missing-value markers (pandas.io.parsers STR_NA_VALUES).
NA_VALUES = frozenset(
    {
        "",
        "#N/A",
        "#N/A N/A",
        "#NA",
        "-1.#IND",
        "-1.#QNAN",
        "-NaN",
        "-nan",
        "1.#IND",
        "1.#QNAN",
        "<NA>",
        "N/A",
        "NA",
        "NULL",
        "NaN",
        "None",
        "n/a",
        "nan",
        "null",
    }
)
DELIMITERS = (",", ";", "\t", "|")
WHITESPACE = r"\s+"
SAMPLE_BYTES = 1 << 16
SAMPLE_LINES = 200
_TRUE, _FALSE = frozenset({"true"}), frozenset({"false"})


def _pandas():
    try:
        import pandas
    except ImportError:
        raise ImportError(
            "fastnn train / predict read CSV files with pandas: pip install 'fastnn-mlp[cli]'"
        ) from None
    return pandas


@dataclass
class Table:
    """A CSV file read by :func:`read_csv`.

    ``header`` holds every column name of the file, ``frame`` its data rows (a pandas
    DataFrame with those columns; missing cells are NaN), ``first_line`` the line
    number of the first data row. ``line(i)`` is the line number of data row ``i``.
    """

    path: str
    header: list
    frame: Any  # a pandas DataFrame (pandas is imported on first use)
    first_line: int
    sep: str
    encoding: str
    note: str | None = None
    _lines: list | None = field(default=None, repr=False)

    @property
    def n_rows(self) -> int:
        return len(self.frame)

    def line(self, i) -> int:
        """The line number of data row ``i`` (blank lines and quoted line breaks
        counted; the file is scanned again the first time this is asked)."""
        if self._lines is None:
            self._lines = [ln for ln, _ in _scan(self)]
        return self._lines[int(i)] if int(i) < len(self._lines) else self.first_line + int(i)

    def column(self, name) -> list:
        """The column as stripped strings (None for a missing cell)."""
        return [None if _missing(v) else str(v).strip() for v in self.frame[name].tolist()]


def _missing(v) -> bool:
    return (
        v is None
        or (isinstance(v, float) and v != v)
        or (not isinstance(v, (str, bool, int, float, np.generic)) and _pandas().isna(v))
    )


def _scan(table: Table):
    """(line number, number of fields) of each data row, read with the csv module."""
    with open(table.path, newline="", encoding=table.encoding, errors="replace") as f:
        for _ in range(table.first_line - 1):
            f.readline()
        before = table.first_line - 1
        if table.sep == WHITESPACE:
            for n, text in enumerate(f, table.first_line):
                if text.strip():
                    yield n, len(text.split())
            return
        reader = csv.reader(f, delimiter=table.sep, skipinitialspace=True)
        done = 0
        for row in reader:
            if row and not (len(row) == 1 and not row[0].strip()):
                yield before + done + 1, len(row)
            done = reader.line_num


def _open_error(path, exc) -> CLIError:
    if isinstance(exc, FileNotFoundError):
        return CLIError(f"{path}: no such file")
    if isinstance(exc, IsADirectoryError):
        return CLIError(f"{path}: is a directory, not a CSV file")
    return CLIError(f"{path}: cannot read it ({exc.strerror or exc})")


def _not_text(path, line=None) -> str:
    # UTF-16 without a byte-order mark decodes as "valid" UTF-8 with a NUL after
    # every ASCII character; binary files hold NUL bytes too.
    where = f", line {line}" if line is not None else ""
    return (
        f"{path}{where}: not a UTF-8 text file (it holds NUL bytes, as UTF-16 "
        f"text and binary files do); save it as UTF-8 CSV"
    )


def _check_bytes(path, f, sample) -> int:
    """Refuse UTF-16 (byte-order mark) and files holding NUL bytes, naming the line;
    the number of lines otherwise."""
    if sample.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise CLIError(
            f"{path}: not a UTF-8 text file (it starts with a UTF-16 "
            f"byte-order mark); save it as UTF-8 CSV"
        )
    lines, chunk, last = 0, sample, b"\n"
    while chunk:
        at = chunk.find(b"\x00")
        if at >= 0:
            raise CLIError(_not_text(path, lines + chunk.count(b"\n", 0, at) + 1))
        lines += chunk.count(b"\n")
        last = chunk[-1:]
        chunk = f.read(1 << 22)
    return lines + (last != b"\n")


def _widths(lines, sep):
    if sep == WHITESPACE:
        return [len(ln.split()) for ln in lines]
    return [len(r) for r in csv.reader(lines, delimiter=sep, skipinitialspace=True)]


def _count_header(first, data_width, n_lines=None) -> bool:
    """scikit-learn's "n_samples,n_features,target names..." first line: the second
    count is the number of feature columns; when the line is as wide as the data rows
    (iris.csv), the first count must also be the number of data lines."""
    if not (
        len(first) >= 2
        and first[0].strip().isdigit()
        and first[1].strip().isdigit()
        and int(first[1]) + 1 == data_width
    ):
        return False
    if len(first) != data_width:
        return True
    return (
        n_lines is not None
        and int(first[0]) == n_lines - 1
        and not any(_NUMBER.match(t.strip()) for t in first[2:])
    )


_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")
_DECIMAL_COMMA = re.compile(r"^[+-]?\d*,\d+$")


def detect_delimiter(lines) -> str:
    """The delimiter giving every sample line the same number (> 1) of fields (the first
    line may be a count header); the most fields wins, then the order of DELIMITERS.
    Runs of spaces when no delimiter fits; a comma when nothing does."""
    lines = [ln for ln in lines if ln.strip()]
    if not lines:
        return ","
    best = None
    for sep in (*DELIMITERS, WHITESPACE):
        if sep == WHITESPACE and best is not None:
            break
        if sep != WHITESPACE and sep not in lines[0]:
            continue
        widths = _widths(lines, sep)
        data = widths[1:] or widths
        if data[0] < 2 or any(w != data[0] for w in data):
            continue
        if widths[0] != data[0]:
            first = (
                lines[0].split()
                if sep == WHITESPACE
                else next(csv.reader([lines[0]], delimiter=sep))
            )
            if not _count_header(first, data[0]):
                continue
        if best is None or data[0] > best[0]:
            best = (data[0], sep)
    return best[1] if best else ","


def read_csv(path, *, text=(), encoding="utf-8-sig", header="auto") -> Table:
    """Read a CSV file with a header row (or scikit-learn's count line).

    ``text``: columns read as strings, as they are written (labels, categories).
    ``header``: "auto" (a first line of counts is recognised), "names" (the first
    line holds the column names) or "none" (no header: columns column_1, ...).
    Raises :class:`CLIError` with one line naming the file (and line) on a problem.
    """
    pd = _pandas()
    path = os.fspath(path)
    try:
        f = open(path, "rb")
    except OSError as exc:
        raise _open_error(path, exc) from None
    with f:
        try:
            sample = f.read(SAMPLE_BYTES)
            n_lines = _check_bytes(path, f, sample)
        except OSError as exc:
            raise _open_error(path, exc) from None
    if not sample.strip():
        raise CLIError(f"{path}: the file is empty (expected a header row)")
    cut = sample
    if len(sample) == SAMPLE_BYTES and b"\n" in sample:
        cut = sample[: sample.rfind(b"\n") + 1]
    try:
        text_sample = cut.decode(encoding)
    except LookupError:
        raise CLIError(f"--encoding {encoding}: unknown encoding") from None
    except UnicodeDecodeError as exc:
        line = cut[: exc.start].count(b"\n") + 1
        raise CLIError(
            f"{path}, line {line}: not a UTF-8 text file (byte "
            f"0x{cut[exc.start]:02x}); save it as UTF-8 CSV or give its "
            f"--encoding"
        ) from None
    lines = text_sample.splitlines()
    skipped = 0
    while skipped < len(lines) and not lines[skipped].strip():
        skipped += 1
    sample_lines = lines[skipped : skipped + SAMPLE_LINES]
    sep = detect_delimiter(sample_lines)
    first = (
        sample_lines[0].split()
        if sep == WHITESPACE
        else next(csv.reader([sample_lines[0]], delimiter=sep, skipinitialspace=True))
    )
    first = [h.strip() for h in first]
    data_widths = _widths([ln for ln in sample_lines[1:] if ln.strip()][:1], sep)
    note = None
    if header == "none":
        names = [f"column_{j + 1}" for j in range(len(first))]
        first_line = skipped + 1
    elif (
        header == "auto" and data_widths and _count_header(first, data_widths[0], n_lines - skipped)
    ):
        p = int(first[1])
        names = [f"feature_{j}" for j in range(p)] + ["target"]
        first_line = skipped + 2
        targets = [t for t in first[2:] if t]
        note = (
            f"{path}: line {skipped + 1} is scikit-learn's count line ({first[0]} "
            f"rows, {p} features"
            + (f", targets {', '.join(targets)}" if targets else "")
            + f"): columns named feature_0 ... "
            f"feature_{p - 1}, target"
        )
    else:
        names = first
        first_line = skipped + 2
        if any(not h for h in names):
            raise CLIError(
                f"{path}: the header row has an empty column name (column {names.index('') + 1})"
            )
        dup = sorted({h for h in names if names.count(h) > 1})
        if dup:
            raise CLIError(f"{path}: duplicate column names {dup}")
    if data_widths and data_widths[0] != len(names):
        raise CLIError(
            f"{path}, line {first_line + _blank_before(lines, first_line)}: "
            f"{data_widths[0]} fields, but the header has {len(names)} columns"
        )
    # semicolon-separated files with decimal commas (1,5), as spreadsheets write them
    decimal = "."
    if sep == ";":
        cells = [c.strip() for row in csv.reader(sample_lines[1:], delimiter=sep) for c in row]
        if any(_DECIMAL_COMMA.match(c) for c in cells) and not any(
            "." in c and _NUMBER.match(c) for c in cells
        ):
            decimal = ","
    position = {name: j for j, name in enumerate(names)}
    dtype = {position[c]: str for c in text if c in position}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ParserWarning, DtypeWarning
            frame = pd.read_csv(
                path,
                sep=sep,
                header=None,
                skiprows=first_line - 1,
                dtype=dtype,
                engine="c",
                low_memory=False,
                decimal=decimal,
                skipinitialspace=True,
                encoding=encoding,
                skip_blank_lines=True,
                keep_default_na=True,
                quotechar='"',
            )
    except pd.errors.EmptyDataError:
        frame = pd.DataFrame(columns=range(len(names)))
    except pd.errors.ParserError as exc:
        m = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", str(exc))
        if m:
            raise CLIError(
                f"{path}, line {m.group(2)}: {m.group(3)} fields, but the header "
                f"has {len(names)} columns"
            ) from None
        raise CLIError(f"{path}: not a valid CSV file ({str(exc).strip()})") from None
    except UnicodeDecodeError as exc:
        raise CLIError(
            f"{path}: not a UTF-8 text file (byte 0x{exc.object[exc.start]:02x}"
            f" after the first {len(cut)} bytes); save it as UTF-8 CSV or give "
            f"its --encoding"
        ) from None
    except OSError as exc:
        raise _open_error(path, exc) from None
    if len(frame) == 0:
        raise CLIError(f"{path}: no data rows after the header")
    if frame.shape[1] != len(names):
        raise CLIError(
            f"{path}, line {first_line}: {frame.shape[1]} fields, but the header "
            f"has {len(names)} columns"
        )
    frame.columns = names
    table = Table(path, names, frame, first_line, sep, encoding, note)
    # A row with fewer fields than the header comes back padded with missing cells;
    # only then can the last column be missing: count the fields of such files.
    if frame[names[-1]].isna().any():
        for line, width in _scan(table):
            if width < len(names):
                raise CLIError(
                    f"{path}, line {line}: {width} fields, but the header has {len(names)} columns"
                )
    return table


def _blank_before(lines, first_line) -> int:
    """Blank lines between the header and the first data row."""
    n = 0
    for ln in lines[first_line - 1 :]:
        if ln.strip():
            break
        n += 1
    return n


# --- column kinds ----------------------------------------------------------------------------


def _strings(series):
    """Stripped strings of the non-missing cells, and the missing mask."""
    miss = series.isna().to_numpy()
    values = np.array([str(v).strip() for v in series.to_numpy(dtype=object)], dtype=object)
    return values, miss


def column_kind(table: Table, name) -> str:
    """The kind of a feature column, "numeric", "boolean" or "text" (see :func:`as_kind`);
    CLIError for a number column with a stray word, or infinite values."""
    pd = _pandas()
    s = table.frame[name]
    if pd.api.types.is_bool_dtype(s.dtype):
        return "boolean"
    if pd.api.types.is_numeric_dtype(s.dtype):
        _finite(table, name, s.to_numpy(dtype=np.float64))
        return "numeric"
    values, miss = _strings(s)
    present = values[~miss]
    if len(present) == 0:
        return "numeric"  # every cell is missing: imputed as 0 after standardising
    lower = {v.lower() for v in present}
    if lower <= {"true", "false"}:
        return "boolean"
    nums = pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(dtype=np.float64)
    bad = ~miss & np.isnan(nums)
    if not bad.any():
        _finite(table, name, nums)
        return "numeric"
    n_num = int((~miss & ~bad).sum())
    if n_num >= 10 and n_num >= 0.9 * len(present):
        i = int(np.argmax(bad))
        raise CLIError(
            f"{table.path}, line {table.line(i)}: column {name!r} holds "
            f"numbers, but here {values[i]!r}; leave missing values empty (or "
            f"NA), or leave the column out with --exclude"
        )
    return "text"


def _finite(table, name, x) -> None:
    bad = np.isinf(x)
    if bad.any():
        i = int(np.argmax(bad))
        raise CLIError(
            f"{table.path}, line {table.line(i)}: column {name!r} holds "
            f"{x[i]:g}; feature values must be finite numbers (leave missing "
            f"values empty or NA)"
        )


def as_kind(table: Table, name, kind, *, hint="") -> np.ndarray:
    """The column as the preprocessing expects it: float64 (numeric; booleans as 0/1)
    or object strings (text), NaN where missing. CLIError naming the line for a cell
    that does not fit the kind (a word in a numeric column of a model, say)."""
    pd = _pandas()
    s = table.frame[name]
    if kind == "text":
        values, miss = _strings(s)
        values[miss] = np.nan
        return values
    if kind == "boolean" and pd.api.types.is_bool_dtype(s.dtype):
        return np.array(s, dtype=np.float64)
    if (
        kind == "numeric"
        and pd.api.types.is_numeric_dtype(s.dtype)
        and not pd.api.types.is_bool_dtype(s.dtype)
    ):
        x = np.array(s, dtype=np.float64)
        _finite(table, name, x)
        return x
    values, miss = _strings(s)
    if kind == "boolean":
        low = np.array([v.lower() for v in values], dtype=object)
        x = np.where(low == "true", 1.0, np.where(low == "false", 0.0, np.nan))
        bad = ~miss & np.isnan(x)
        want = "true or false"
    else:
        x = np.array(pd.to_numeric(pd.Series(values), errors="coerce"), dtype=np.float64)
        bad = ~miss & np.isnan(x)
        want = "a number"
    x[miss] = np.nan
    if bad.any():
        i = int(np.argmax(bad))
        raise CLIError(
            f"{table.path}, line {table.line(i)}: column {name!r} holds "
            f"{values[i]!r}, not {want}{hint}"
        )
    if kind == "numeric":
        _finite(table, name, x)
    return x


def frame_of(table: Table, kinds: dict, *, hint=""):
    """A DataFrame of the named columns converted by :func:`as_kind`."""
    pd = _pandas()
    return pd.DataFrame(
        {name: as_kind(table, name, kind, hint=hint) for name, kind in kinds.items()}
    )


# --- identifier columns ----------------------------------------------------------------------

_ID_NAME = re.compile(
    r"(^|[^a-z])(id|ids|uuid|guid|key|index|idx)$|^(id|uuid|guid)[^a-z]|"
    r"^(row|record)[ _-]?(no|num|number|nr)$",
    re.I,
)
_ID_CAMEL = re.compile(r"[a-z](Id|ID|Uuid|UUID)$")


def identifier_reason(name, kind, column) -> str | None:
    """Why a feature column looks like a row identifier (None if it does not): all
    values unique and the name is id-like, or whole numbers increasing by one."""
    n = len(column)
    if n < 3:
        return None
    if kind == "numeric":
        x = column[~np.isnan(column)]
        if len(x) != n or not np.all(x == np.round(x)):
            return None
        unique = len(np.unique(x)) == n
        if unique and (_ID_NAME.search(name) or _ID_CAMEL.search(name)):
            return "its values are all different whole numbers"
        if n >= 10 and np.all(np.diff(x) == 1):
            return "its values count up by one, row after row"
        return None
    if kind == "text":
        present = [v for v in column if isinstance(v, str)]
        if (
            len(present) == n
            and len(set(present)) == n
            and (_ID_NAME.search(name) or _ID_CAMEL.search(name))
        ):
            return "its values are all different"
    return None


# --- preprocessing -------------------------------------------------------------------------


def preprocessor(kinds: dict):
    """The ColumnTransformer for these feature columns (name -> kind): numeric ->
    median imputation + standardisation; boolean (0/1) -> most frequent imputation;
    text -> most frequent imputation + one-hot (unknown categories: all zeros).
    Output columns in that order."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    groups = {
        k: [n for n, kind in kinds.items() if kind == k] for k in ("numeric", "boolean", "text")
    }
    parts = []
    if groups["numeric"]:
        parts.append(
            (
                "numeric",
                Pipeline(
                    [
                        ("impute", SimpleImputer(strategy="median", keep_empty_features=True)),
                        ("scale", StandardScaler()),
                    ]
                ),
                groups["numeric"],
            )
        )
    if groups["boolean"]:
        parts.append(
            (
                "boolean",
                SimpleImputer(strategy="most_frequent", keep_empty_features=True),
                groups["boolean"],
            )
        )
    if groups["text"]:
        parts.append(
            (
                "text",
                Pipeline(
                    [
                        (
                            "impute",
                            SimpleImputer(strategy="most_frequent", keep_empty_features=True),
                        ),
                        ("onehot", OneHotEncoder(handle_unknown="ignore", sparse_output=False)),
                    ]
                ),
                groups["text"],
            )
        )
    return ColumnTransformer(parts, remainder="drop", sparse_threshold=0.0)


def robust_scaler(ct, frame) -> None:
    """Make the numeric StandardScaler's mean_/scale_/var_ finite for finite data:
    columns whose squares overflow are measured in units of their largest value (as
    TabularModel always was); constant columns keep scale 1."""
    if "numeric" not in ct.named_transformers_:
        return
    num = ct.named_transformers_["numeric"]
    scaler = num.named_steps["scale"]
    # scikit-learn leaves scale_ at 1 where the variance overflows (var_ = inf): such
    # a column would reach the network unscaled
    bad = ~(np.isfinite(scaler.mean_) & np.isfinite(scaler.scale_) & np.isfinite(scaler.var_))
    if not bad.any():
        return
    cols = [c for name, _, c in ct.transformers_ if name == "numeric"][0]
    X = num.named_steps["impute"].transform(frame[cols])
    top = np.abs(X[:, bad]).max(axis=0)
    top[top == 0] = 1.0
    unit = X[:, bad] / top
    scaler.mean_ = scaler.mean_.copy()
    scaler.scale_ = scaler.scale_.copy()
    scaler.mean_[bad] = unit.mean(axis=0) * top
    scale = unit.std(axis=0) * top
    scale[scale == 0] = 1.0
    scaler.scale_[bad] = scale
    with np.errstate(over="ignore"):
        scaler.var_ = scaler.scale_**2


def kinds_of(ct) -> dict | None:
    """name -> kind of a ColumnTransformer made by :func:`preprocessor` (None if it is
    some other transformer)."""
    kinds = {}
    for name, _, cols in getattr(ct, "transformers_", []):
        if name == "remainder":
            continue
        if name not in ("numeric", "boolean", "text"):
            return None
        for c in cols:
            kinds[c] = name
    order = list(getattr(ct, "feature_names_in_", kinds))
    return {c: kinds[c] for c in order if c in kinds}


def feature_of_output(ct, j) -> str:
    """The input column behind output column j of the fitted ColumnTransformer."""
    names = ct.get_feature_names_out()
    group, _, rest = str(names[j]).partition("__")
    for name, _, cols in ct.transformers_:
        if name == group:
            for c in cols:
                if rest == c or rest.startswith(f"{c}_"):
                    return c
            return cols[0]
    return rest
