"""Reading and writing numeric tables (.csv, .parquet, .npy) with errors that say where.

A table is a 2-D float32 array plus one name per column. Readers validate every value
they return: text in a number column, a missing value, NaN or inf each raise
:class:`~aeserve.errors.InputError` naming the file, the row (1-based, data rows) and the
column. Writers are atomic. No torch here: the runtime uses this module.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from aeserve.atomic import atomic_path
from aeserve.errors import InputError

__all__ = ["Table", "read_table", "write_table", "check_output_path", "SUFFIXES", "check_finite"]

SUFFIXES = (".csv", ".parquet", ".npy")


@dataclass
class Table:
    """Numeric rows read from ``source``: ``values`` is (rows, columns) float32."""

    values: np.ndarray  # (rows, columns) float32
    columns: list[str]
    source: str


def _suffix(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise InputError(f"{path}: unsupported file type {suffix or '(none)'!r}; "
                         f"expected one of {', '.join(SUFFIXES)}")
    return suffix


def check_finite(values: np.ndarray, columns: Sequence[str], source: str) -> None:
    """Raise InputError at the first NaN/inf cell of ``values`` (rows, columns)."""
    finite = np.isfinite(values)
    if not finite.all():
        row, col = np.argwhere(~finite)[0]
        raise InputError(f"{source}: row {row + 1}, column {columns[col]!r}: "
                         f"value {values[row, col]} is not a finite number")


def _arrow_to_numeric(table, path: Path, first_row: int = 1) -> Table:
    """Convert a pyarrow Table to float32, naming the first cell that is not a number."""
    import pyarrow as pa

    names = list(table.column_names)
    out = np.empty((table.num_rows, len(names)), dtype=np.float32)
    for j, name in enumerate(names):
        column = table.column(j)
        kind = column.type
        if column.null_count:
            row = int(np.flatnonzero(column.is_null().to_numpy(zero_copy_only=False))[0])
            raise InputError(f"{path}: row {first_row + row}, column {name!r}: "
                             "missing value, expected a number")
        if pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind):
            out[:, j] = column.to_numpy(zero_copy_only=False)
            continue
        # Text (or another type): find the first cell that does not parse as a number.
        for row, cell in enumerate(column.to_pylist()):
            try:
                out[row, j] = float(cell)
            except (TypeError, ValueError):
                raise InputError(f"{path}: row {first_row + row}, column {name!r}: "
                                 f"expected a number, got {str(cell)[:40]!r}") from None
    return Table(out, names, str(path))


def _csv_convert_options():
    import pyarrow.csv as pacsv

    # "nan"/"inf" stay numbers (then rejected as non-finite); only these mean "missing".
    return pacsv.ConvertOptions(null_values=["", "NA", "N/A", "NULL", "null", "None"],
                                strings_can_be_null=True)


def _read_csv(path: Path):
    import pyarrow as pa
    import pyarrow.csv as pacsv

    if path.stat().st_size == 0:
        raise InputError(f"{path}: file is empty (expected a header row and data rows)")
    try:
        return pacsv.read_csv(path, convert_options=_csv_convert_options())
    except pa.ArrowInvalid as exc:
        detail = _csv_bad_row(path) or str(exc).splitlines()[0]
        raise InputError(f"{path}: cannot parse CSV ({detail})") from None


def _csv_bad_row(path: Path) -> str | None:
    """Re-read single-threaded to learn the line number of the first malformed row."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    bad = []

    def handler(row) -> str:
        bad.append(row)
        return "error"

    try:
        pacsv.read_csv(path, read_options=pacsv.ReadOptions(use_threads=False),
                       parse_options=pacsv.ParseOptions(invalid_row_handler=handler),
                       convert_options=_csv_convert_options())
    except pa.ArrowInvalid:
        pass
    if not bad or bad[0].number is None:
        return None
    row = bad[0]
    return (f"line {row.number}, data row {row.number - 1}: expected {row.expected_columns} "
            f"fields, got {row.actual_columns}; the row is truncated or malformed")


def _read_parquet(path: Path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        raise InputError(f"{path}: cannot read Parquet ({str(exc).splitlines()[0]})") from None


def _read_npy(path: Path) -> Table:
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise InputError(f"{path}: cannot read .npy ({str(exc).splitlines()[0]})") from None
    if array.ndim == 1:
        array = array[None, :] if array.size else array.reshape(0, 0)
    if array.ndim != 2:
        raise InputError(f"{path}: expected a 2-D array (rows, features), got shape {array.shape}")
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_):
        raise InputError(f"{path}: expected a numeric array, got dtype {array.dtype}")
    values = np.ascontiguousarray(array, dtype=np.float32)
    return Table(values, [f"f{i}" for i in range(values.shape[1])], str(path))


def _select(table: Table, path: Path, columns: Sequence[str] | None,
            drop: Sequence[str] | None) -> Table:
    if columns:
        missing = [c for c in columns if c not in table.columns]
        if missing:
            raise InputError(f"{path}: no column(s) {', '.join(map(repr, missing))}; "
                             f"it has {len(table.columns)}: {_preview(table.columns)}")
        keep = list(columns)
    else:
        unknown = [c for c in (drop or ()) if c not in table.columns]
        if unknown:
            raise InputError(f"{path}: cannot drop unknown column(s) {', '.join(map(repr, unknown))}")
        keep = [c for c in table.columns if c not in set(drop or ())]
    return keep


def _preview(names: Sequence[str], n: int = 6) -> str:
    shown = ", ".join(names[:n])
    return shown + (f", ... ({len(names)} in all)" if len(names) > n else "")


def read_table(path: str | os.PathLike, columns: Sequence[str] | None = None,
               drop: Sequence[str] | None = None,
               expect: Sequence[str] | None = None) -> Table:
    """Read a numeric table from .csv (with header), .parquet or .npy.

    ``columns`` keeps those (in that order), ``drop`` removes those. ``expect`` is the
    feature list a model needs: named columns are selected by name (extra columns such
    as ids or labels are ignored) and a .npy must have exactly that width.
    """
    path = Path(path)
    suffix = _suffix(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    if suffix == ".npy":
        table = _read_npy(path)
        if expect is not None and table.values.shape[1] != len(expect):
            raise InputError(f"{path}: has {table.values.shape[1]} columns, "
                             f"expected {len(expect)} ({_preview(list(expect))})")
        if expect is not None:
            table.columns = list(expect)
    else:
        arrow = _read_csv(path) if suffix == ".csv" else _read_parquet(path)
        names = [str(n) for n in arrow.column_names]
        if expect is not None:
            missing = [c for c in expect if c not in names]
            if missing:
                raise InputError(
                    f"{path}: has {len(names)} columns but lacks {len(missing)} the model expects "
                    f"({_preview(missing)}); expected {len(expect)} columns: {_preview(list(expect))}")
            keep = list(expect)
        else:
            keep = _select(Table(np.empty((0, 0)), names, str(path)), path, columns, drop)
        table = _arrow_to_numeric(arrow.select(keep), path)
    if table.values.shape[0] == 0:
        raise InputError(f"{path}: no data rows")
    if table.values.shape[1] == 0:
        raise InputError(f"{path}: no columns left to use")
    if suffix == ".npy" and (columns or drop):
        keep = _select(table, path, columns, drop)
        index = [table.columns.index(c) for c in keep]
        table = Table(np.ascontiguousarray(table.values[:, index]), keep, table.source)
    check_finite(table.values, table.columns, table.source)
    return table


def check_output_path(path: str | os.PathLike) -> Path:
    """Fail early, before any work, if ``path`` has no supported suffix or is a directory."""
    path = Path(path)
    _suffix(path)
    if path.is_dir():
        raise InputError(f"{path}: is a directory; give an output file name")
    return path


def write_table(path: str | os.PathLike, columns: Mapping[str, np.ndarray]) -> None:
    """Write named 1-D columns to .csv/.parquet, or as a 2-D float32 .npy; atomically."""
    import pyarrow as pa

    path = Path(path)
    suffix = _suffix(path)
    with atomic_path(path) as tmp:
        if suffix == ".npy":
            stacked = np.stack([np.asarray(v, dtype=np.float32) for v in columns.values()], axis=1)
            with open(tmp, "wb") as fh:
                np.save(fh, stacked)
            return
        table = pa.table({name: np.asarray(values) for name, values in columns.items()})
        if suffix == ".csv":
            import pyarrow.csv as pacsv
            pacsv.write_csv(table, tmp)
        else:
            import pyarrow.parquet as pq
            pq.write_table(table, tmp)
