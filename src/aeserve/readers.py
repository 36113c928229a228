"""Readers: one per file format (.csv, .parquet, .npy), each yielding chunks of float32 rows.

Every reader validates what it returns: text in a number column, a missing value, NaN or
inf raise :class:`~aeserve.errors.InputError` naming the file, the row (1-based, data rows)
and the column; in skip mode the row is left out and listed as a :class:`BadRow` instead.
CSV is parsed by pyarrow's streaming reader in small blocks, Parquet by row batches, .npy
by plain reads of its data after the header — so a file of any size is read in flat
memory. ``aeserve.tables.read_table`` (whole tables) and ``aeserve.serve.stream`` (file
verbs) both read through ``iter_chunks``, so each error message exists once.
"""

from __future__ import annotations

import csv
import io
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from aeserve.errors import InputError

__all__ = ["SUFFIXES", "NULL_VALUES", "BadRow", "Chunk", "CheckedRows", "iter_chunks", "exact_chunks", "row_width",
           "column_names", "chunk_rows_for", "parse_csv_lines", "check_finite", "convert_columns", "reject_non_finite", "preview"]

SUFFIXES = (".csv", ".parquet", ".npy")
_CHUNK_BYTES = 4 << 20  # target size of one parsed chunk: small, so memory stays flat


def preview(names: Sequence[str], n: int = 6) -> str:
    """'a, b, c, ... (40 in all)': the first ``n`` names of a long list."""
    shown = ", ".join(names[:n])
    return shown + (f", ... ({len(names)} in all)" if len(names) > n else "")


@dataclass(frozen=True)
class BadRow:
    """A row left out in skip mode, and why."""

    source: str
    row: int        # 1-based data row (the header is not a row)
    column: str
    reason: str


@dataclass
class Chunk:
    """Consecutive good rows of one input file."""

    values: np.ndarray        # (n, width) float32
    ids: np.ndarray           # (n,) id column values, or 1-based data row numbers
    source: str               # the file of the last row (see ``sources`` for each row)
    bad: list[BadRow] = field(default_factory=list)
    bytes_read: int = 0       # bytes of ``source`` read so far, this chunk included (progress)
    sources: np.ndarray | None = None  # (n,) file of each row, when rows span files
    keys: dict[str, np.ndarray] = field(default_factory=dict)  # (n,) each: a series' time and group columns
    rows: np.ndarray | None = None  # (n,) 1-based data rows, when ``ids`` hold an id column (errors name rows)

    def take(self, part) -> "Chunk":
        """The rows ``part`` (a slice or an index array) of this chunk, with their ids, sources and
        keys; bad rows and progress stay with the chunk they were found in."""
        return Chunk(self.values[part], self.ids[part], self.source, [], self.bytes_read,
                     None if self.sources is None else self.sources[part],
                     {name: column[part] for name, column in self.keys.items()},
                     None if self.rows is None else self.rows[part])

    @property
    def row_numbers(self) -> np.ndarray:
        """The 1-based data row of each row (in its own file)."""
        return self.rows if self.rows is not None else np.asarray(self.ids)


@dataclass(frozen=True)
class CheckedRows:
    """Rows that a reader or the request decoder has already checked: float32, C-contiguous,
    every cell finite. The runtime ``Model`` takes them as they are (it checks only the width),
    so each path checks finiteness once: files in the reader, requests in ``decode_tensors``."""

    values: np.ndarray  # (n, width) float32

    def __post_init__(self) -> None:
        object.__setattr__(self, "values", np.ascontiguousarray(self.values, dtype=np.float32))

    def __len__(self) -> int:
        return len(self.values)


def row_width(features: Sequence[str], encoding=None) -> int:
    """Values per row a reader yields: one per feature, or a mixed bundle's encoding's width."""
    return encoding.width if encoding is not None else len(features)


def chunk_rows_for(width: int) -> int:
    """Rows per chunk so that one chunk of float32 rows is about 4 MiB (256..64k rows)."""
    return int(min(65_536, max(256, _CHUNK_BYTES // (4 * max(width, 1)))))


def _all_finite(values: np.ndarray) -> bool:
    """True when no cell is NaN or ±inf: one sum, no mask (both reach the sum). A sum of huge
    finite values can overflow, so a non-finite sum is checked cell by cell."""
    if values.dtype.kind == "f":
        with np.errstate(over="ignore", invalid="ignore"):
            if np.isfinite(values.sum()):
                return True
    return bool(np.isfinite(values).all())


def check_finite(values: np.ndarray, columns: Sequence[str], source: str) -> None:
    """Raise InputError at the first NaN/inf cell of ``values`` (rows, columns)."""
    if not _all_finite(values):
        reject_non_finite(values, np.ones(len(values), dtype=bool), [], features=columns,
                          rows=np.arange(1, len(values) + 1), source=source, skip=False)


def convert_columns(table, features: Sequence[str], rows: np.ndarray, *, source: str, skip: bool
             ) -> tuple[np.ndarray, np.ndarray, list[BadRow]]:
    """Feature columns of ``table`` -> float32 (n, width); returns (values, keep mask, bad rows).

    ``rows`` are the 1-based data row numbers of the table's rows. Typed numeric columns
    take the fast path; anything else is checked cell by cell, only where needed.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    n = table.num_rows
    keep = np.ones(n, dtype=bool)
    bad: list[BadRow] = []
    # the common case: one row-major copy by Arrow, not one Python call per column (784
    # columns: per-column calls took 0.4 of 1.6 s per 30k rows; checking 784 types, 0.05)
    selected = table if table.schema.names == list(features) else table.select(list(features))
    batches = selected.combine_chunks().to_batches()
    if len(batches) == 1:
        try:  # numbers of any width; nulls become NaN
            values = np.asarray(batches[0].to_tensor(null_to_nan=True, row_major=True))
        except (pa.ArrowTypeError, pa.ArrowNotImplementedError, pa.ArrowInvalid):
            values = None  # text or boolean columns: converted and checked one by one below
        if values is not None:
            values = values.astype(np.float32, copy=False)
            if _all_finite(values):
                return values, keep, bad
            # a missing or non-finite cell: the column-by-column pass below names it exactly
    values = np.empty((n, len(features)), dtype=np.float32)

    def reject(index: int, column: str, reason: str) -> None:
        if not skip:
            raise InputError(f"{source}: row {rows[index]}, column {column!r}: {reason}")
        if keep[index]:
            bad.append(BadRow(source, int(rows[index]), column, reason))
        keep[index] = False

    for j, name in enumerate(features):
        column = table.column(name)
        kind = column.type
        if pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind):
            col = column.to_numpy(zero_copy_only=False)
        else:
            try:
                col = pc.cast(column, pa.float32()).to_numpy(zero_copy_only=False)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                col = np.full(n, np.nan, dtype=np.float32)
                for index, cell in enumerate(column.to_pylist()):
                    if cell is None:
                        continue  # reported as a missing value below
                    try:
                        col[index] = float(cell)
                    except (TypeError, ValueError):
                        text = cell.decode("utf-8", "backslashreplace") if isinstance(cell, bytes) else str(cell)
                        reject(index, name, f"expected a number, got {text[:40]!r}")
        values[:, j] = col
        if table.column(name).null_count:
            nulls = table.column(name).is_null().to_numpy(zero_copy_only=False)
            for index in np.flatnonzero(nulls & keep):
                reject(int(index), name, "missing value, expected a number")
    return reject_non_finite(values, keep, bad, features=features, rows=rows, source=source, skip=skip)


def reject_non_finite(values: np.ndarray, keep: np.ndarray, bad: list[BadRow], *, features: Sequence[str],
                      rows: np.ndarray, source: str, skip: bool) -> tuple[np.ndarray, np.ndarray, list[BadRow]]:
    """Mark (skip) or report (fail) the rows holding NaN or inf; returns (values, keep, bad).
    ``rows`` are the 1-based data row numbers of ``values``' rows."""
    if not _all_finite(values):
        for index, j in np.argwhere(~np.isfinite(values)):
            if not keep[index]:
                continue
            reason = f"value {values[index, j]} is not a finite number"
            if not skip:
                raise InputError(f"{source}: row {rows[index]}, column {features[j]!r}: {reason}")
            bad.append(BadRow(source, int(rows[index]), features[j], reason))
            keep[index] = False
    return values, keep, bad


#: CSV cells that mean "missing"; "nan"/"inf" stay numbers (then rejected as non-finite)
NULL_VALUES = ["", "NA", "N/A", "NULL", "null", "None"]


def _csv_convert_options():
    import pyarrow.csv as pacsv

    return pacsv.ConvertOptions(null_values=NULL_VALUES, strings_can_be_null=True)


def first_malformed_csv_row(path: Path, convert_options=None):
    """Re-read ``path`` serially (the parser numbers rows only then) and return pyarrow's
    record of the first row with the wrong number of fields, or None."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    found = []

    def handler(row) -> str:
        found.append(row)
        return "error"

    try:
        for _ in pacsv.open_csv(path, read_options=pacsv.ReadOptions(use_threads=False),
                                parse_options=pacsv.ParseOptions(invalid_row_handler=handler),
                                convert_options=convert_options or _csv_convert_options()):
            pass
    except pa.ArrowInvalid:
        pass
    return found[0] if found else None


def describe_malformed(row) -> str:
    """'line N, data row N-1: expected F fields, got G; ...' for a pyarrow InvalidRow."""
    where = f"line {row.number}, data row {row.number - 1}: " if row.number else ""
    return (f"{where}expected {row.expected_columns} fields, got {row.actual_columns}; "
            "the row is truncated or malformed")


class _CountingFile(io.RawIOBase):
    """A file whose ``consumed`` says how many bytes the parser has read (for progress)."""

    def __init__(self, path: Path):
        self._file = open(path, "rb")
        self.consumed = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        count = self._file.readinto(buffer)
        self.consumed += count or 0
        return count

    def close(self) -> None:
        self._file.close()
        super().close()


def _csv_header(path: Path) -> list[str]:
    """The header row of a CSV, which must be UTF-8 text (BOM allowed); names must be non-empty
    text, as pyarrow's reader needs them. Bytes after the header are left to the reader."""
    with open(path, newline="", encoding="utf-8-sig", errors="surrogateescape") as fh:
        try:
            names = next(csv.reader(fh))
        except StopIteration:
            raise InputError(f"{path}: file is empty (expected a header row and data rows)") from None
        except csv.Error as exc:
            raise InputError(f"{path}: cannot parse the CSV header row ({exc})") from None
    text = "".join(names)
    undecodable = next((i for i, ch in enumerate(text) if "\udc80" <= ch <= "\udcff"), None)
    if undecodable is not None:
        raise InputError(f"{path}: the header row is not UTF-8 text (character {undecodable + 1} of its names); "
                         "expected a CSV file with a header row")
    if not names or "\0" in text:
        raise InputError(f"{path}: the header row holds no column names (or a NUL byte); "
                         "expected a CSV file with a header row")
    other = next((sep for sep in (";", "\t", "|") if len(names) == 1 and sep in names[0]), None)
    if other is not None:  # one column named 'a;b;c' would train a model of one useless text column
        raise InputError(f"{path}: the header is one column, {names[0][:60]!r}, separated by {other!r}: aeserve "
                         f"reads comma-separated CSV; write the table with commas (pandas: "
                         f"read_csv(path, sep={other!r}).to_csv(...)) or as Parquet")
    return names


def _check_columns(path: Path, names: Sequence[str], features: Sequence[str], id_column: str | None,
                   keys: Sequence[str] = ()) -> None:
    absent = [k for k in keys if k not in names]
    if absent:
        raise InputError(f"{path}: no column {absent[0]!r} (the model orders its series by it); "
                         f"it has {len(names)}: {preview(list(names))}")
    missing = [c for c in features if c not in names]
    if missing:
        raise InputError(f"{path}: has {len(names)} columns but lacks {len(missing)} the model expects "
                         f"({preview(missing)}); expected {len(features)} columns: {preview(list(features))}")
    if id_column is not None and id_column not in names:
        raise InputError(f"{path}: no id column {id_column!r}")
    refuse_repeated(path, names, [*features, *keys, *([id_column] if id_column else [])])


def refuse_repeated(path, names: Sequence[str], used: Sequence[str]) -> None:
    """A column that ``used`` needs and the file names twice is refused: which would it mean?"""
    counts = Counter(names)
    twice = next((n for n in used if counts[n] > 1), None)
    if twice is not None:
        where = [i + 1 for i, n in enumerate(names) if n == twice]
        raise InputError(f"{path}: the column name {twice!r} is given {len(where)} times (columns "
                         f"{', '.join(map(str, where))}); rename all but one")


def _row_numbers(start: int, count: int, skipped_lines: list[int]) -> np.ndarray:
    """1-based data rows of ``count`` parsed rows after ``start`` parsed rows, given the data
    rows the parser dropped as malformed (sorted)."""
    rows = np.arange(start + 1, start + count + 1)
    if not skipped_lines:
        return rows
    dropped = np.asarray(skipped_lines)
    result = rows.copy()
    for _ in range(len(dropped) + 1):  # fixed point of r = k + #{dropped <= r}
        updated = rows + np.searchsorted(dropped, result, side="right")
        if np.array_equal(updated, result):
            break
        result = updated
    return result


def _convert(table, features, rows, *, source: str, skip: bool, encoding):
    """A parsed table's rows: float32 features, or a mixed bundle's encoded columns."""
    if encoding is not None:
        return encoding.encode(table, rows, source=source, skip=skip)
    return convert_columns(table, features, rows, source=source, skip=skip)


def _csv_types(features, encoding, skip: bool) -> dict:
    """The type pyarrow's CSV reader gives each feature: float32 (text in skip mode, so that each
    bad cell is named); a mixed bundle's text and boolean columns as text, decoded by the encoding."""
    import pyarrow as pa

    numeric = pa.string() if skip else pa.float32()
    if encoding is None:
        return {f: numeric for f in features}
    # text stays text: dictionary-encoding in the CSV reader measured slower (341k against 446k
    # rows/s for 10 text columns) than pc.index_in on the strings
    return {c.name: numeric if c.type == "numeric" else pa.string() for c in encoding.columns}


def _read_csv(path: Path, features, *, id_column, chunk_rows, skip, encoding=None, keys=()) -> Iterator[Chunk]:
    import pyarrow as pa
    import pyarrow.csv as pacsv

    names = column_names(path)
    _check_columns(path, names, features, id_column, keys)
    malformed: list = []

    def on_invalid(row) -> str:
        malformed.append(row)
        return "skip" if skip else "error"

    columns = list(dict.fromkeys([*features, *([id_column] if id_column else []), *keys]))
    convert = pacsv.ConvertOptions(include_columns=columns, column_types=_csv_types(features, encoding, skip),
                                   null_values=NULL_VALUES, strings_can_be_null=True)
    # Small blocks: pyarrow's reader holds several in flight, and its peak memory grows with the
    # block size (200k rows x 128 columns: 167 MB at 1 MiB, 300 MB at 4 MiB, same speed); but
    # at least ~256 rows each, or wide rows pay per-block overhead (784 columns: 2 MiB).
    block = int(min(4 << 20, max(1 << 20, 256 * 10 * len(columns))))
    source, reader = _CountingFile(path), None
    try:
        # skip mode needs the parser's line numbers, which only its serial mode reports
        reader = pacsv.open_csv(source, read_options=pacsv.ReadOptions(block_size=block, use_threads=not skip),
                                parse_options=pacsv.ParseOptions(invalid_row_handler=on_invalid),
                                convert_options=convert)
        parsed = 0
        for batch in reader:
            table = pa.Table.from_batches([batch])
            skipped = sorted(int(r.number) - 1 for r in malformed if r.number is not None)
            rows = _row_numbers(parsed, table.num_rows, skipped)
            parsed += table.num_rows
            values, keep, bad = _convert(table, features, rows, source=str(path), skip=skip, encoding=encoding)
            bad = [BadRow(str(path), int(r.number) - 1 if r.number else -1, "*",
                          f"expected {r.expected_columns} fields, got {r.actual_columns}") for r in malformed] + bad
            malformed.clear()
            yield _chunk(table, values, keep, bad, rows, str(path), source.consumed, id_column, keys, skip)
    except (pa.ArrowException, OSError) as exc:
        if not isinstance(exc, pa.ArrowInvalid):  # e.g. a header pyarrow reads differently from the csv module
            raise InputError(f"{path}: cannot parse CSV ({_first_line(exc)})") from None
        if malformed:
            row = malformed[0] if malformed[0].number is not None else \
                first_malformed_csv_row(path, convert) or malformed[0]
            raise InputError(f"{path}: cannot parse CSV ({describe_malformed(row)})") from None
        if "conversion error" in str(exc):
            _locate_bad_cell(path, features, encoding)  # raises with row and column
        raise InputError(f"{path}: cannot parse CSV ({_first_line(exc)})") from None
    finally:
        if reader is not None:  # stop its read-ahead before the file it reads from closes
            reader.close()
        source.close()


def parse_csv_lines(header: bytes, lines: bytes, features: Sequence[str], *, first_row: int, source: str = "<stdin>",
                    keys: Sequence[str] = (), encoding=None) -> Chunk:
    """Complete CSV lines (``lines``, each ending in a newline) under ``header`` as one checked
    chunk, as a file's reader would give them: the rows of a stream that arrives line by line
    (standard input). ``first_row``: the 1-based data row of the first line, for errors."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    names = next(csv.reader([header.decode("utf-8-sig", "replace")]), [])
    _check_columns(Path(source), names, features, None, keys)
    columns = list(dict.fromkeys([*features, *keys]))
    convert = pacsv.ConvertOptions(include_columns=columns, column_types=_csv_types(features, encoding, False),
                                   null_values=NULL_VALUES, strings_can_be_null=True)
    try:
        table = pacsv.read_csv(io.BytesIO(header + lines), read_options=pacsv.ReadOptions(use_threads=False),
                               convert_options=convert)
    except pa.ArrowInvalid as exc:
        text = _first_line(exc)
        if "conversion error" in text or "column #" in text.lower():
            # name the cell: read again as text, converted column by column
            as_text = pacsv.read_csv(io.BytesIO(header + lines), convert_options=pacsv.ConvertOptions(
                include_columns=columns, column_types={f: pa.string() for f in features}, null_values=NULL_VALUES,
                strings_can_be_null=True))
            _convert(as_text, features, np.arange(first_row, first_row + as_text.num_rows), source=source,
                     skip=False, encoding=encoding)
        raise InputError(f"{source}: rows from {first_row}: cannot parse CSV ({text})") from None
    rows = np.arange(first_row, first_row + table.num_rows)
    values, keep, bad = _convert(table, features, rows, source=source, skip=False, encoding=encoding)
    return _chunk(table, values, keep, bad, rows, source, 0, None, keys, False)


def _first_line(exc: BaseException) -> str:
    """The first line of an exception's text, printable and at most 200 characters."""
    text = (str(exc).splitlines() or [type(exc).__name__])[0]
    text = text.encode("ascii", "backslashreplace").decode("ascii")
    return text[:200] + ("..." if len(text) > 200 else "")


def _locate_bad_cell(path: Path, features, encoding=None) -> None:
    """Re-read ``path`` with byte-string columns (so that cells which are not UTF-8 are seen too)
    to name the first cell that is not a number (raises
    InputError with its row and column); returns when the re-read cannot tell (e.g. bytes
    that are not UTF-8 text), leaving the caller's message."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    convert = pacsv.ConvertOptions(include_columns=list(features), column_types={f: pa.binary() for f in features},
                                   null_values=NULL_VALUES, strings_can_be_null=True)
    parsed = 0
    try:
        for batch in pacsv.open_csv(path, convert_options=convert):
            table = pa.Table.from_batches([batch])
            _convert(table, features, np.arange(parsed + 1, parsed + table.num_rows + 1), source=str(path),
                     skip=False, encoding=encoding)
            parsed += table.num_rows
    except (pa.ArrowException, OSError):
        return


def _read_parquet(path: Path, features, *, id_column, chunk_rows, skip, encoding=None, keys=()) -> Iterator[Chunk]:
    import pyarrow as pa

    # a mixed bundle's text columns read as dictionaries: the encoding then maps each chunk's
    # dictionary (its distinct values) to slots, not every cell
    text = [c.name for c in encoding.columns if c.type == "categorical"] if encoding is not None else []
    handle = _parquet_file(path, read_dictionary=text)
    _check_columns(path, handle.schema_arrow.names, features, id_column, keys)
    columns = list(dict.fromkeys([*features, *([id_column] if id_column else []), *keys]))
    size, total, parsed = path.stat().st_size, max(handle.metadata.num_rows, 1), 0
    try:
        for batch in handle.iter_batches(batch_size=chunk_rows, columns=columns):
            table = pa.Table.from_batches([batch])
            rows = np.arange(parsed + 1, parsed + table.num_rows + 1)
            parsed += table.num_rows
            values, keep, bad = _convert(table, features, rows, source=str(path), skip=skip, encoding=encoding)
            yield _chunk(table, values, keep, bad, rows, str(path), int(size * parsed / total), id_column, keys, skip)
    except InputError:
        raise
    except (pa.ArrowException, OSError, ValueError, IndexError, TypeError) as exc:
        raise InputError(f"{path}: cannot read Parquet ({_first_line(exc)})") from None


def _npy_header(path: Path, fh) -> tuple[tuple[int, int], np.dtype]:
    """(rows, columns) and dtype from an open .npy file, left at the start of its data. A 1-D
    array is refused: one row of N features and N rows of one feature look alike (scikit-learn
    refuses the same ambiguity)."""
    try:
        version = np.lib.format.read_magic(fh)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
        elif version in ((2, 0), (3, 0)):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)  # 3.0 differs only in the encoding
        else:
            raise ValueError(f"unsupported .npy format version {version}")
    except Exception as exc:  # numpy parses the untrusted header with ast/tokenize: any of their errors
        raise InputError(f"{path}: cannot read .npy ({type(exc).__name__}: {_first_line(exc)})") from None
    if len(shape) == 1:
        raise InputError(f"{path}: holds a 1-D array of {shape[0]} values; expected a 2-D array (rows, features): "
                         "save a.reshape(1, -1) for one row, or a.reshape(-1, 1) for one feature")
    if len(shape) != 2 or fortran or dtype.hasobject or not (np.issubdtype(dtype, np.number) or dtype == np.bool_) \
            or dtype.kind == "c":
        raise InputError(f"{path}: expected a numeric array (rows, features) in C order, "
                         f"got shape {shape} dtype {dtype}{' (Fortran order)' if fortran else ''}")
    # the header is untrusted: it may promise more data than the file holds (checked before any allocation)
    data_bytes = os.fstat(fh.fileno()).st_size - fh.tell()
    if shape[0] * shape[1] * dtype.itemsize > data_bytes or (shape[1] == 0 and shape[0] > 0):
        raise InputError(f"{path}: truncated: the header promises {shape[0]} rows of {shape[1]} columns "
                         f"({shape[0] * shape[1] * dtype.itemsize} bytes), the file holds {data_bytes} bytes of data")
    return shape, dtype


def _read_npy(path: Path, features, *, id_column, chunk_rows, skip, npy_layout=None, encoding=None,
              keys=()) -> Iterator[Chunk]:
    if keys:
        raise InputError(f"{path}: a .npy has no named columns, and this model orders its series by "
                         f"{', '.join(map(repr, keys))}: give a .csv or .parquet")
    if encoding is not None:
        raise InputError(f"{path}: a .npy holds numbers only; this bundle takes a table of typed columns "
                         f"({preview(list(features))}): give a .csv or .parquet")
    if id_column is not None:
        raise InputError(f"{path}: .npy files have no named columns; --id-column needs .csv or .parquet")
    with open(path, "rb") as fh:
        shape, dtype = _npy_header(path, fh)
        pick = None
        if npy_layout is not None and shape[1] == len(npy_layout) != len(features):
            pick = [list(npy_layout).index(f) for f in features]  # e.g. z0..z3 of an encode's z0..z3, logvar0..3
        elif shape[1] != len(features):
            wider = f" or {len(npy_layout)} ({preview(list(npy_layout))})" if npy_layout else ""
            raise InputError(f"{path}: has {shape[1]} columns, expected {len(features)} "
                             f"({preview(list(features))}){wider}")
        done = 0
        while done < shape[0]:
            count = min(chunk_rows, shape[0] - done)
            block = np.fromfile(fh, dtype=dtype, count=count * shape[1])
            if block.size != count * shape[1]:
                raise InputError(f"{path}: truncated: the header promises {shape[0]} rows, the data ends "
                                 f"after {done + block.size // shape[1]}")
            values = block.reshape(count, shape[1]).astype(np.float32, copy=False)
            if pick is not None:
                values = np.ascontiguousarray(values[:, pick])
            rows = np.arange(done + 1, done + count + 1)
            _, keep, bad = reject_non_finite(values, np.ones(count, dtype=bool), [], features=features, rows=rows,
                                             source=str(path), skip=skip)
            done += count
            yield Chunk(*_kept(keep, values, rows), str(path), bad, fh.tell())


def _chunk(table, values: np.ndarray, keep: np.ndarray, bad: list[BadRow], rows: np.ndarray, source: str,
           bytes_read: int, id_column: str | None, keys: Sequence[str], skip: bool) -> Chunk:
    """A parsed table's chunk: its good rows, their ids (an id column, or the data rows) and key
    columns (a series' time and group, as they are; a missing key is a bad row)."""
    for name in keys:
        column = table.column(name)
        if column.null_count:
            for index in np.flatnonzero(column.is_null().to_numpy(zero_copy_only=False) & keep):
                reason = "missing value, expected the series' time or group"
                if not skip:
                    raise InputError(f"{source}: row {rows[index]}, column {name!r}: {reason}")
                bad.append(BadRow(source, int(rows[index]), name, reason))
                keep[index] = False
    key_columns = {name: table.column(name).to_numpy(zero_copy_only=False) for name in keys}
    ids = table.column(id_column).to_numpy(zero_copy_only=False) if id_column else rows
    chunk = Chunk(values, ids, source, bad, bytes_read, keys=key_columns, rows=rows if id_column else None)
    if keep.all():
        return chunk
    kept = chunk.take(keep)
    kept.bad, kept.bytes_read = bad, bytes_read
    return kept


def _kept(keep: np.ndarray, *arrays: np.ndarray) -> tuple[np.ndarray, ...]:
    """``arrays`` without the rows ``keep`` drops; no copy when it drops none (a mask always copies)."""
    if keep.all():
        return arrays
    return tuple(array[keep] for array in arrays)


def _parquet_file(path: Path, read_dictionary: Sequence[str] = ()):
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        # pre_buffer (pyarrow's default) caches every column chunk read until the file closes: a
        # 10M-row file of 1M-row groups grew the reader to 348 MiB; unbuffered reads of 1 MiB
        # hold 24 MiB at most, at the same speed (0.13 s per 10M rows x 8 float32 columns)
        return pq.ParquetFile(path, read_dictionary=list(read_dictionary) or None, pre_buffer=False,
                              buffer_size=1 << 20)
    except (pa.ArrowException, OSError) as exc:
        raise InputError(f"{path}: cannot read Parquet ({str(exc).splitlines()[0]})") from None


def column_names(path: Path) -> list[str]:
    """The columns of a file: a CSV's header, a Parquet schema's names, f0..f{n-1} for a .npy."""
    suffix = path.suffix.lower()
    if suffix == ".csv":
        if path.stat().st_size == 0:
            raise InputError(f"{path}: file is empty (expected a header row and data rows)")
        return _csv_header(path)
    if suffix == ".parquet":
        return [str(n) for n in _parquet_file(path).schema_arrow.names]
    with open(path, "rb") as fh:
        shape, _ = _npy_header(path, fh)
    return [f"f{i}" for i in range(shape[1])]


_READERS = {".csv": _read_csv, ".parquet": _read_parquet, ".npy": _read_npy}


def iter_chunks(path: Path, features: Sequence[str], *, id_column: str | None = None,
                chunk_rows: int | None = None, skip: bool = False,
                npy_layout: Sequence[str] | None = None, encoding=None, keys: Sequence[str] = ()) -> Iterator[Chunk]:
    """Chunks of good rows of ``features`` from one file, in order (see the module docstring).
    ``encoding`` (an ``aeserve.columns.TableEncoding``): a mixed bundle's typed columns, whose
    rows the chunks hold encoded (2 values per column).
    ``skip``: leave bad rows out and list them in each chunk's ``bad``, instead of raising.
    ``npy_layout``: the column names of a .npy that is wider than ``features`` (a .npy has no
    names of its own), so that such a file is read by name: ``aeserve encode`` of a VAE writes
    z0.. then logvar0.., and ``decode`` reads the z columns of it."""
    if path.suffix.lower() not in _READERS:
        raise InputError(f"{path}: unsupported file type {path.suffix or '(none)'!r}; "
                         f"expected one of {', '.join(SUFFIXES)}")
    extra = {"npy_layout": npy_layout} if path.suffix.lower() == ".npy" else {}
    if keys:
        extra["keys"] = tuple(keys)
    width = row_width(features, encoding)
    return _READERS[path.suffix.lower()](path, list(features), id_column=id_column, encoding=encoding,
                                         chunk_rows=chunk_rows or chunk_rows_for(width), skip=skip, **extra)


def _joined(arrays: list[np.ndarray]) -> np.ndarray:
    """Columns of consecutive chunks as one; object when their kinds differ (int ids in one file,
    text in another)."""
    mixed = len({np.asarray(a).dtype.kind for a in arrays}) > 1
    return np.concatenate([np.asarray(a, dtype=object if mixed else None) for a in arrays])


def _merge(chunks: list[Chunk]) -> Chunk:
    """One chunk from consecutive chunks (each row's source kept, bad rows and progress carried)."""
    if len(chunks) == 1:
        return chunks[0]
    merged = Chunk(np.concatenate([c.values for c in chunks]), _joined([c.ids for c in chunks]), chunks[-1].source,
                   [b for c in chunks for b in c.bad], chunks[-1].bytes_read,
                   keys={name: _joined([c.keys[name] for c in chunks]) for name in chunks[0].keys})
    merged.sources = np.concatenate([c.sources if c.sources is not None else np.full(len(c.values), c.source,
                                     dtype=object) for c in chunks])
    if any(c.rows is not None for c in chunks):
        merged.rows = np.concatenate([c.row_numbers for c in chunks])
    return merged


def _split(chunks: list[Chunk], rows: int) -> tuple[Chunk, list[Chunk]]:
    """The first ``rows`` rows of ``chunks`` as one chunk, and what is left."""
    taken, left, need = [], [], rows
    for chunk in chunks:
        if need == 0:
            left.append(chunk)
        elif len(chunk.values) <= need:
            taken.append(chunk)
            need -= len(chunk.values)
        else:
            head = chunk.take(slice(None, need))
            head.bad = chunk.bad
            taken.append(head)
            left.append(chunk.take(slice(need, None)))
            need = 0
    return _merge(taken), left


def exact_chunks(chunks: Iterable[Chunk], rows: int) -> Iterator[Chunk]:
    """``chunks`` (of any sizes, from several files) as chunks of exactly ``rows`` rows, the last
    one shorter; a chunk with no good row left passes on at once, with its bad rows and progress.

    The file pipeline reads through this, with ``rows`` a multiple of the model's batch size, so
    the batches ``Model`` cuts from each chunk are those of scoring the whole input at once:
    identical bits, however the readers happened to cut the files."""
    pending: list[Chunk] = []
    held = 0
    for chunk in chunks:
        pending.append(chunk)
        held += len(chunk.values)
        while held >= rows:
            head, pending = _split(pending, rows)
            held -= rows
            yield head
        if held == 0 and pending:  # only chunks without good rows are left: hand on their bad rows now
            last = pending[-1]
            yield Chunk(last.values, last.ids, last.source, [b for c in pending for b in c.bad], last.bytes_read)
            pending = []
    if pending:
        yield _merge(pending)
