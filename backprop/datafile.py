"""Tables from files for the command line: CSV, Parquet, ``.npy`` and ``.npz``.

============ ================================================ ==================================
file         features                                         target (``--target``)
============ ================================================ ==================================
``.csv``     every column but the target (header row: names)   a column name
``.parquet`` every column but the target                       a column name
``.npy``     a 2-D array: every column but the target          a column index (negative counts
                                                               from the end)
``.npz``     the array ``X``, else the one array that is not   an array name (1-D, or a column)
             the target
============ ================================================ ==================================

CSV is read with pandas when it is installed (else with the standard ``csv`` module: numbers
and text only), Parquet with pandas and pyarrow. Feature columns must be numeric with no
missing values; the target may hold any labels. Every problem is a :class:`DataError` whose
message names the file and the column.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from .state import readable

FORMATS = (".csv", ".parquet", ".npy", ".npz")
#: pandas' nullable numeric dtypes, read as float64 with NA as NaN
NULLABLE = {"Int8", "Int16", "Int32", "Int64", "UInt8", "UInt16", "UInt32", "UInt64", "Float32",
            "Float64"}


class DataError(ValueError):
    """A data file that cannot be used, with a message naming the file and the problem."""


@dataclass
class Table:
    """Named columns of equal length, in file order (arrays of any dtype)."""

    path: str
    columns: dict[str, np.ndarray]
    indexed: bool = False      # .npy: the names are the column indices "0", "1", ...


def read(path: str) -> Table | dict[str, np.ndarray]:
    """The columns of a CSV, Parquet or ``.npy`` file, or the arrays of an ``.npz`` file."""
    try:
        readable(path)              # a missing file, a directory, /dev/null: said which
    except ValueError as e:
        raise DataError(str(e)) from None
    ext = os.path.splitext(path)[1].lower()
    if ext not in FORMATS:
        raise DataError(f"{path}: unknown file type {ext or '(none)'!r}; expected one of "
                        f"{', '.join(FORMATS)}")
    try:
        if ext == ".csv":
            return _read_csv(path)
        if ext == ".parquet":
            return _read_parquet(path)
        if ext == ".npy":
            array = np.load(path, allow_pickle=False)
            if array.ndim != 2:
                raise DataError(f"{path}: expected a 2-D array (samples x columns), got shape "
                                f"{array.shape}")
            return Table(path, {str(j): array[:, j] for j in range(array.shape[1])}, indexed=True)
        with np.load(path, allow_pickle=False) as npz:
            return {name: npz[name] for name in npz.files}
    except DataError:
        raise
    except (ValueError, OSError, EOFError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot be read as {ext[1:]}: {_first_line(e)}") from None


def split(data: Table | dict[str, np.ndarray], path: str, target: str | None,
          features: Sequence[str] | None = None
          ) -> tuple[np.ndarray, np.ndarray | None, list[str] | None, str | int | None]:
    """``(X, y, feature names, target key)`` from a file's columns.

    ``target``: the column (name; index for ``.npy``; array name for ``.npz``) or None (no
    target: predicting). ``features``: the feature columns to take by name (a saved model's),
    in that order; default every column but the target. X is float64 (n, n_features).
    """
    if isinstance(data, dict):
        return _split_npz(data, path, target)
    columns = dict(data.columns)
    key: str | int | None = None
    y = None
    if target is not None:
        name = target
        if data.indexed:
            try:
                index = int(target)
            except ValueError:
                raise DataError(f"--target: {path} is an .npy array; expected a column index, "
                                f"got {target!r}") from None
            if not -len(columns) <= index < len(columns):
                raise DataError(f"--target: column index {index} is out of range for "
                                f"{path}'s {len(columns)} columns")
            name, key = str(index % len(columns)), index % len(columns)
        elif target not in columns:
            raise DataError(f"--target: unknown column {target!r}; {path} has columns "
                            f"{_names(columns)}")
        else:
            key = target
        y = columns.pop(name)
    if features is None or data.indexed:
        names = list(columns)
    else:
        missing = [f for f in features if f not in columns]
        if missing:
            raise DataError(f"{path}: the model's feature columns {missing} are missing; it "
                            f"has {_names(columns)}")
        names = list(features)
    if not names:
        raise DataError(f"{path}: no feature columns besides the target")
    X = np.column_stack([_numeric(columns[n], n, path) for n in names])
    if len(X) == 0:
        raise DataError(f"{path}: no rows")
    return X, y, (None if data.indexed else names), key


def _split_npz(arrays: dict[str, np.ndarray], path: str, target: str | None):
    y = None
    if target is not None:
        if target not in arrays:
            raise DataError(f"--target: unknown array {target!r}; {path} holds {sorted(arrays)}")
        y = arrays[target]
        if y.ndim == 2 and y.shape[1] == 1:
            y = y[:, 0]
        if y.ndim != 1:
            raise DataError(f"--target: array {target!r} has shape {y.shape}; expected one "
                            "value per sample")
    others = [n for n in arrays if n != target]
    name = "X" if "X" in others else (others[0] if len(others) == 1 else None)
    if name is None:
        raise DataError(f"{path}: expected an array named 'X' (or a single array besides the "
                        f"target), found {sorted(arrays)}")
    X = arrays[name]
    if X.ndim != 2:
        raise DataError(f"{path}: the features {name!r} must be a 2-D array, got shape {X.shape}")
    if y is not None and len(y) != len(X):
        raise DataError(f"{path}: {target!r} has {len(y)} values but {name!r} has {len(X)} rows")
    return _numeric(X, name, path), y, None, target


def _numeric(column: np.ndarray, name: str, path: str) -> np.ndarray:
    if column.dtype.kind not in "biuf":
        try:
            column = column.astype(np.float64)
        except (TypeError, ValueError):
            raise DataError(f"{path}: column {name!r} is not numeric (dtype {column.dtype}); "
                            "encode it as numbers first") from None
    column = column.astype(np.float64)
    if not np.isfinite(column).all():
        raise DataError(f"{path}: column {name!r} has missing or non-finite values")
    return column


def _read_csv(path: str) -> Table:
    try:
        import pandas as pd
    except ImportError:
        return _read_csv_plain(path)
    try:
        frame = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as e:
        raise DataError(f"{path}: not a valid CSV file: {_first_line(e)}") from None
    return _from_frame(frame, path)


def _read_csv_plain(path: str) -> Table:
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    if not rows:
        raise DataError(f"{path}: not a valid CSV file: it is empty")
    header, body = rows[0], [r for r in rows[1:] if r]
    for i, row in enumerate(body, start=2):
        if len(row) != len(header):
            raise DataError(f"{path}: not a valid CSV file: line {i} has {len(row)} fields, "
                            f"the header has {len(header)}")
    columns = {}
    for j, name in enumerate(header):
        values = [r[j] for r in body]
        try:
            columns[name] = np.array([float(v) for v in values])
            if all(v.strip().lstrip("+-").isdigit() for v in values):
                columns[name] = columns[name].astype(np.int64)
        except ValueError:
            columns[name] = np.array(values, dtype=object)
    return Table(path, columns)


def _read_parquet(path: str) -> Table:
    try:
        import pandas as pd
    except ImportError:
        raise DataError(f"{path}: reading Parquet needs pandas and pyarrow: "
                        "pip install 'backprop[data]'") from None
    try:
        frame = pd.read_parquet(path)
    except ImportError as e:
        raise DataError(f"{path}: reading Parquet needs pyarrow: {_first_line(e)}") from None
    except Exception as e:      # pyarrow's errors (ArrowInvalid, ...) are not ValueErrors
        raise DataError(f"{path}: not a valid Parquet file: {_first_line(e)}") from None
    return _from_frame(frame, path)


def _from_frame(frame: Any, path: str) -> Table:
    names = [str(c) for c in frame.columns]
    if len(set(names)) != len(names):
        raise DataError(f"{path}: duplicate column names")
    columns = {}
    for name, column in zip(names, frame.columns):
        series = frame[column]
        if str(series.dtype) == "category":
            series = series.astype(object)
        if str(series.dtype) in NULLABLE:   # NA becomes NaN (refused for features and targets)
            columns[name] = series.to_numpy(dtype=np.float64, na_value=np.nan)
            continue
        columns[name] = series.to_numpy()
    return Table(path, columns)


def _names(columns: dict[str, Any]) -> str:
    names = list(columns)
    return str(names if len(names) <= 12 else names[:12] + ["..."])


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__
