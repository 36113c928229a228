"""Typed table columns: what training infers and records, and how the runtime encodes rows.

A bundle trained on a table with text, boolean or missing cells has ``input.encoding ==
"mixed"`` and one :class:`~aeserve.manifest.ColumnSpec` per column. Its graphs take rows of
2 values per column (``TableEncoding.width``), in column order:

    value_j    numeric: the number; binary: 0 or 1; categorical: the slot index of the category
               in the column's vocabulary (``len(vocabulary)``: "other", for rarer and unseen
               categories); 0 when the cell is missing
    missing_j  1 when the cell is missing (null, an empty CSV cell, NaN), else 0

Encoding is vectorised with pyarrow (``pc.index_in`` against the vocabulary, applied to a
dictionary column's dictionary only): no Python loop per row, except to name a bad cell. A
category that reads as a number is matched by its value when its text does not match
(``1.0`` in a CSV is the category ``1`` that a Parquet double or a DataFrame gave training),
so that a number-coded column means the same from every source.

Dates and times are not inferred as any type: a moment seldom recurs, so as categories or as
a number it would make every row after training look unusual. Training refuses such a
column and says how to drop it, keep it as categories, or make it a series' time column.
Training encodes its rows with this same code, so the bundle sees the same numbers on every
runtime. numpy and pyarrow only: the runtime imports this module.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from aeserve.errors import InputError
from aeserve.manifest import ColumnSpec, InputSpec, Preprocessing
from aeserve.transforms import signed_exp

__all__ = ["OTHER", "TRUE_TEXT", "FALSE_TEXT", "infer_types", "fit_columns", "as_arrow_table", "TableEncoding",
           "needs_mixed", "missing_cells", "category_counts", "spec_from_counts"]

#: the name of a categorical column's last slot (rarer and unseen categories)
OTHER = "(other)"
#: text read as true / false in a binary column (case-insensitive)
TRUE_TEXT = ("true", "t", "yes", "y", "1")
FALSE_TEXT = ("false", "f", "no", "n", "0")
#: text that reads as a number (a whole match; surrounding spaces allowed)
NUMBER_PATTERN = r"^\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*$"


def _pa():
    import pyarrow as pa
    import pyarrow.compute as pc

    return pa, pc


def infer_types(schema, names: Sequence[str], *, categorical: Sequence[str] = (),
                numeric: Sequence[str] = ()) -> dict[str, str]:
    """Each column's type from an Arrow schema: booleans binary, numbers numeric, text and
    dictionaries categorical; ``categorical`` / ``numeric`` override (e.g. an integer code)."""
    pa, _ = _pa()
    for flag, given in (("categorical", categorical), ("numeric", numeric)):
        unknown = [c for c in given if c not in names]
        if unknown:
            raise InputError(f"--{flag}: no column(s) {', '.join(map(repr, unknown))} among the training columns")
    both = set(categorical) & set(numeric)
    if both:
        raise InputError(f"column(s) {', '.join(map(repr, sorted(both)))} given both as --categorical and --numeric")
    types = {}
    for name in names:
        arrow_type = schema.field(name).type
        if pa.types.is_dictionary(arrow_type):
            arrow_type = arrow_type.value_type
        if name in categorical:
            types[name] = "categorical"
        elif name in numeric:
            types[name] = "numeric"
        elif pa.types.is_boolean(arrow_type):
            types[name] = "binary"
        elif _is_number(arrow_type) or pa.types.is_null(arrow_type):
            types[name] = "numeric"
        elif pa.types.is_nested(arrow_type):
            raise InputError(f"column {name!r} holds {arrow_type} values: aeserve takes one value per cell; leave "
                             f"it out (--drop {name}) or flatten it into columns of their own")
        elif pa.types.is_temporal(arrow_type):
            raise InputError(f"column {name!r} holds dates or times ({arrow_type}): a moment seldom recurs, so "
                             f"every row after training would look unusual; leave it out (--drop {name}), keep "
                             f"its values as categories (--categorical {name}), or, for a series, give --window W "
                             f"--time-column {name}")
        else:
            types[name] = "categorical"
    return types


def _is_number(arrow_type) -> bool:
    """Integers, floats and decimals."""
    pa, _ = _pa()
    return pa.types.is_integer(arrow_type) or pa.types.is_floating(arrow_type) or pa.types.is_decimal(arrow_type)


def needs_mixed(table, types: Mapping[str, str]) -> bool:
    """Whether a table needs the mixed encoding: a column that is not numeric, or a missing cell."""
    if any(t != "numeric" for t in types.values()):
        return True
    return any(table.column(n).null_count for n in types)  # NaN alone is a bad number, as in a plain table


def as_arrow_table(data: Any, names: Sequence[str] | None = None):
    """A pyarrow Table from a pyarrow Table/RecordBatch, a pandas DataFrame or a dict of columns
    (lists or 1-D arrays); ``names`` selects (and orders) columns, naming any that is absent."""
    pa, _ = _pa()
    if isinstance(data, pa.RecordBatch):
        data = pa.Table.from_batches([data])
    elif not isinstance(data, pa.Table):
        if hasattr(data, "columns") and hasattr(data, "dtypes"):  # a pandas DataFrame
            data = _from_pandas(data)
        elif isinstance(data, Mapping):
            try:
                data = pa.table({str(k): _as_array(v, str(k)) for k, v in data.items()})
            except pa.ArrowInvalid as exc:
                raise InputError(f"columns: {str(exc).splitlines()[0]}") from None
        else:
            raise InputError(f"expected a table (pyarrow Table, pandas DataFrame or dict of columns), "
                             f"got {type(data).__name__}")
    if names is not None:
        absent = [n for n in names if n not in data.column_names]
        if absent:
            raise InputError(f"table lacks {len(absent)} column(s) the model expects: "
                             f"{', '.join(map(repr, absent[:6]))}; expected {', '.join(names)}")
        data = data.select(list(names))
    return data


def _from_pandas(frame):
    """A DataFrame as an Arrow table; a column of mixed Python objects (numbers and text) as text,
    so that the encoding names its bad cell rather than Arrow failing on the whole column."""
    pa, _ = _pa()
    try:
        return pa.Table.from_pandas(frame, preserve_index=False)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        columns = {}
        for name in frame.columns:
            try:
                columns[str(name)] = pa.Array.from_pandas(frame[name])
            except (pa.ArrowInvalid, pa.ArrowTypeError):
                columns[str(name)] = pa.array(_as_text(frame[name].tolist()), pa.string())
        return pa.table(columns)


def _as_text(values) -> list:
    """Cells as text, missing ones (None, NaN) kept missing: a column of mixed Python objects."""
    return [None if v is None or (isinstance(v, float) and v != v) else str(v) for v in values]


def _as_array(values, name: str):
    """One column of a dict as an Arrow array; mixed objects (numbers and text) become text, so
    that the encoding names the cell that does not fit its column."""
    pa, _ = _pa()
    if isinstance(values, (pa.Array, pa.ChunkedArray)):
        return values
    array = np.asarray(values, dtype=object) if isinstance(values, (list, tuple)) else np.asarray(values)
    if array.ndim != 1:
        raise InputError(f"column {name!r}: expected a 1-D column of values, got shape {array.shape}")
    try:
        return pa.array(array.tolist() if array.dtype.kind in "OUS" else array, from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return pa.array(_as_text(array.tolist()), pa.string())


def _plain(column):
    """A ChunkedArray without dictionary encoding (its values, in row order)."""
    pa, pc = _pa()
    if pa.types.is_dictionary(column.type):
        return pc.cast(column, column.type.value_type)
    return column


#: why a cell of bytes that are not UTF-8 (a Latin-1 export, say) is refused, and what to do
NOT_UTF8 = "the text is not UTF-8; save the file as UTF-8 (e.g. iconv -f latin1 -t utf-8 in.csv > out.csv)"


def _text(column):
    """A column as UTF-8 text (numbers and booleans by their Arrow text); dictionaries decoded."""
    pa, pc = _pa()
    column = _plain(column)
    if pa.types.is_string(column.type):
        return column
    return pc.cast(column, pa.string())


def _not_utf8(column) -> np.ndarray:
    """The 0-based rows of a column of bytes whose cell is not UTF-8 text (a Python loop: for the
    error path only, after Arrow's cast to text has failed)."""
    bad = []
    for index, cell in enumerate(_plain(column).to_pylist()):
        if isinstance(cell, bytes):
            try:
                cell.decode("utf-8")
            except UnicodeDecodeError:
                bad.append(index)
    return np.asarray(bad, dtype=np.int64)


def _replaced_text(column):
    """A column of bytes as text, each byte that is not UTF-8 replaced (its rows already named)."""
    pa, _ = _pa()
    return pa.array([c.decode("utf-8", "replace") if isinstance(c, bytes) else c for c in _plain(column).to_pylist()],
                    pa.string())


def missing_cells(column) -> np.ndarray:
    """Which cells are missing (n,) bool: nulls, NaN, and text that a CSV reads as missing ("",
    "NA", "null", ... : ``aeserve.readers.NULL_VALUES``), so that a table means the same from a
    file, a DataFrame or a request. A dictionary column is tested on its dictionary only."""
    pa, pc = _pa()
    from aeserve.readers import NULL_VALUES

    nulls = pa.array(NULL_VALUES)
    value_type = column.type.value_type if pa.types.is_dictionary(column.type) else column.type
    text = pa.types.is_string(value_type) or pa.types.is_large_string(value_type)
    if column.null_count == 0 and not pa.types.is_floating(value_type) and not text:
        return np.zeros(len(column), dtype=bool)  # no null, and no NaN or null text to look for
    missing = pc.is_null(column, nan_is_null=True)
    if not text:
        return missing.to_numpy(zero_copy_only=False)
    if pa.types.is_dictionary(column.type):
        flagged = [pc.is_in(chunk.dictionary, value_set=nulls) for chunk in column.chunks]
        if column.null_count == 0 and not any(pc.any(f).as_py() for f in flagged):
            return np.zeros(len(column), dtype=bool)  # no entry of any dictionary reads as missing
        parts = [pc.take(f, chunk.indices) for f, chunk in zip(flagged, column.chunks)]
        text_null = pa.chunked_array(parts, pa.bool_()) if parts else pa.chunked_array([], pa.bool_())
    else:
        text_null = pc.is_in(column, value_set=nulls)
    return pc.or_(missing, pc.fill_null(text_null, False)).to_numpy(zero_copy_only=False)


def fit_columns(table, types: Mapping[str, str], *, min_count: int = 5, max_categories: int = 100,
                source: str = "table") -> tuple[ColumnSpec, ...]:
    """Each column's record from the training rows: a categorical column keeps the categories seen
    at least ``min_count`` times, the ``max_categories`` most frequent (ties by name), in that
    order; every column counts its missing cells. A text cell that is not UTF-8 is an InputError
    naming ``source``, its row and its column."""
    if min_count < 1 or max_categories < 1:
        raise InputError(f"--min-category-count and --max-categories must be >= 1, got {min_count}, {max_categories}")
    pa, _ = _pa()
    specs = []
    for name, column_type in types.items():
        column = table.column(name)
        absent = missing_cells(column)
        try:
            counts = category_counts(column, absent) if column_type == "categorical" else {}
        except pa.ArrowInvalid:
            bad = _not_utf8(column)
            if not len(bad):
                raise
            raise InputError(f"{source}: row {bad[0] + 1}, column {name!r}: {NOT_UTF8}") from None
        specs.append(spec_from_counts(name, column_type, counts, missing=int(absent.sum()), rows=table.num_rows,
                                      min_count=min_count, max_categories=max_categories))
    return tuple(specs)


def category_counts(column, absent: np.ndarray) -> dict[str, int]:
    """How often each category of a column's present cells occurs (mergeable across chunks)."""
    pa, pc = _pa()
    return {c["values"]: c["counts"] for c in pc.value_counts(_text(column).filter(pa.array(~absent))).to_pylist()}


def spec_from_counts(name: str, column_type: str, counts: Mapping[str, int], *, missing: int, rows: int,
                     min_count: int = 5, max_categories: int = 100) -> ColumnSpec:
    """A column's record from its category counts and missing cells (whole-table or merged from
    chunks alike): categories seen at least ``min_count`` times, the ``max_categories`` most
    frequent (ties by name), the rest counted as "other"."""
    vocabulary, other = (), 0
    if column_type == "categorical":
        ranked = sorted(((count, value) for value, count in counts.items()), key=lambda pair: (-pair[0], pair[1]))
        kept = [value for count, value in ranked if count >= min_count][:max_categories]
        vocabulary = tuple(kept)
        other = int(sum(counts.values()) - sum(counts[value] for value in kept))
    return ColumnSpec(name=name, type=column_type, vocabulary=vocabulary, missing=missing, rows=rows, other=other)


@dataclass
class _Reject:
    """Bad cells of one table: raised at once, or (skip) collected and their rows dropped."""

    rows: np.ndarray
    source: str
    skip: bool
    keep: np.ndarray
    bad: list

    def __call__(self, index: int, column: str, reason: str) -> None:
        from aeserve.readers import BadRow

        if not self.skip:
            raise InputError(f"{self.source}: row {self.rows[index]}, column {column!r}: {reason}")
        if self.keep[index]:
            self.bad.append(BadRow(self.source, int(self.rows[index]), column, reason))
        self.keep[index] = False


def _shown(cell) -> str:
    text = cell.decode("utf-8", "backslashreplace") if isinstance(cell, bytes) else str(cell)
    return repr(text[:40]) if isinstance(cell, (str, bytes)) else text[:40]


class TableEncoding:
    """The bundle's columns and how a table becomes the graphs' rows (see the module docstring)."""

    def __init__(self, columns: Sequence[ColumnSpec]):
        self.columns = tuple(columns)
        self.names = [c.name for c in self.columns]
        self.width = 2 * len(self.columns)
        self._slot_names = {c.name: np.asarray([*c.vocabulary, OTHER], dtype=object)
                            for c in self.columns if c.type == "categorical"}

    @classmethod
    def of(cls, spec: InputSpec) -> "TableEncoding | None":
        """The encoding of a mixed bundle's input; None for plain numeric rows."""
        return cls(spec.columns) if spec.mixed else None

    # -- table -> rows ---------------------------------------------------------------------
    def encode(self, table, rows: np.ndarray | None = None, *, source: str = "table", skip: bool = False
               ) -> tuple[np.ndarray, np.ndarray, list]:
        """``table``'s columns -> (values (n, width) float32, keep mask (n,), bad rows); bad cells
        (text in a numeric column, a number where a boolean is expected, ±inf) raise InputError
        naming source, row and column, or in ``skip`` mode drop their row. ``rows``: the 1-based
        row numbers of ``table``'s rows (1..n by default)."""
        table = as_arrow_table(table, self.names)
        n = table.num_rows
        rows = np.arange(1, n + 1) if rows is None else rows
        reject = _Reject(rows, source, skip, np.ones(n, dtype=bool), [])
        cells = np.empty((self.width, n), dtype=np.float32)  # one contiguous row per encoded value
        count = len(self.columns)
        for j, spec in enumerate(self.columns):
            column = table.column(spec.name)
            missing = missing_cells(column)
            cells[j] = self._ENCODERS[spec.type](column, missing, spec, reject)
            cells[count + j] = missing
        # one transposing copy: writing each column into a row-major array took half the time
        return np.ascontiguousarray(cells.T), reject.keep, reject.bad

    def encode_rows(self, data, what: str = "table") -> np.ndarray:
        """A table (pyarrow, pandas or dict of columns) as the graphs' rows (n, width) float32."""
        values, _, _ = self.encode(data, source=what)
        return values

    @staticmethod
    def _numeric(column, missing, spec, reject) -> np.ndarray:
        pa, pc = _pa()
        column = _plain(column)
        if pa.types.is_decimal(column.type):
            column = pc.cast(column, pa.float64())
        if not (pa.types.is_integer(column.type) or pa.types.is_floating(column.type)
                or pa.types.is_boolean(column.type) or pa.types.is_null(column.type)):
            try:
                column = pc.cast(_text(column), pa.float64())
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                values = np.zeros(len(missing), dtype=np.float32)
                for index, cell in enumerate(column.to_pylist()):
                    if cell is None:
                        continue
                    try:
                        values[index] = float(cell)
                    except (TypeError, ValueError):
                        reject(index, spec.name, f"expected a number, got {_shown(cell)}")
                return _finite(values, missing, spec, reject)
        # unsafe: an integer beyond 2**24 (a Unix time, an id) rounds to the nearest float32, as
        # numpy rounds a numeric table's; a float64 beyond float32's range becomes inf and is named
        values = pc.cast(column, pa.float32(), safe=False).to_numpy(zero_copy_only=False)
        return _finite(values, missing, spec, reject)

    @staticmethod
    def _binary(column, missing, spec, reject) -> np.ndarray:
        pa, pc = _pa()
        column = _plain(column)
        if pa.types.is_boolean(column.type) or pa.types.is_null(column.type):
            return pc.fill_null(pc.cast(column, pa.float32()), 0.0).to_numpy(zero_copy_only=False)
        if pa.types.is_integer(column.type) or pa.types.is_floating(column.type):
            values = pc.fill_null(pc.cast(column, pa.float64()), 0.0).to_numpy(zero_copy_only=False)
            values = np.where(missing, 0.0, values)
            wrong = (values != 0) & (values != 1)
            for index in np.flatnonzero(wrong):
                reject(int(index), spec.name, f"expected true or false (or 1/0), got {values[index]:g}")
            return np.where(wrong, 0.0, values).astype(np.float32)  # a skipped row's cell: 0, never inf
        words = pa.array([*FALSE_TEXT, *TRUE_TEXT])  # index i: false for i < 5, else true
        found = pc.index_in(pc.utf8_lower(pc.utf8_trim_whitespace(_text(column))), value_set=words)
        index = pc.fill_null(found, -1).to_numpy(zero_copy_only=False)
        for bad in np.flatnonzero((index < 0) & ~missing):
            reject(int(bad), spec.name, f"expected true or false, got {_shown(column[int(bad)].as_py())}")
        return (index >= len(FALSE_TEXT)).astype(np.float32)

    @staticmethod
    def _categorical(column, missing, spec, reject) -> np.ndarray:
        pa, pc = _pa()
        if pa.types.is_dictionary(column.type):  # map the dictionary once, then take by the codes
            parts = []
            for chunk in column.chunks:  # a null code takes slot 0; ``missing`` flags it
                mapped = pa.array(_slots(_text(pa.chunked_array([chunk.dictionary])), spec.vocabulary))
                parts.append(pc.fill_null(pc.take(mapped, chunk.indices), 0).to_numpy(zero_copy_only=False))
            slots = np.concatenate(parts) if parts else np.empty(0, np.int64)
        else:
            try:
                text = _text(column)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                bad = _not_utf8(column)
                if not len(bad):
                    raise InputError(f"column {spec.name!r}: cannot read as text ({str(exc).splitlines()[0]})") from None
                for index in bad:  # raises at the first, or (skip) drops each row
                    reject(int(index), spec.name, NOT_UTF8)
                text = _replaced_text(column)
            slots = _slots(text, spec.vocabulary)
        slots = np.where(missing, 0, slots) if missing.any() else slots
        return slots.astype(np.float32)

    #: each column type's encoder: (column, missing mask, spec, reject) -> values (n,)
    _ENCODERS = {"numeric": _numeric, "binary": _binary, "categorical": _categorical}

    # -- rows -> table -----------------------------------------------------------------------
    def slot_name(self, column: str, slots: np.ndarray) -> np.ndarray:
        """Category names of slot indices of ``column`` (the last slot: OTHER)."""
        names = self._slot_names[column]
        return names[np.clip(np.rint(slots).astype(np.int64), 0, len(names) - 1)]

    def decode(self, values: np.ndarray) -> dict[str, np.ndarray]:
        """The decoder's rows (value_j: a number, p(true), or the most likely slot; then p(missing))
        as named columns: numbers, booleans (p ≥ 0.5) and category names."""
        values = values.reshape(len(values), self.width) if values.size == 0 else values
        out = {}
        for j, spec in enumerate(self.columns):
            cell = values[:, j]
            if spec.type == "categorical":
                out[spec.name] = self.slot_name(spec.name, cell)
            elif spec.type == "binary":
                out[spec.name] = cell >= 0.5
            else:
                out[spec.name] = cell
        return out

    def typical_rows(self, prep: Preprocessing, n: int, seed: int = 0) -> np.ndarray:
        """``n`` encoded rows like the training data: numbers drawn N(shift, scale) (on the log
        scale for a column read through the signed log), booleans and
        slots uniform, cells missing at each column's training rate; (n, width) float32."""
        rng = np.random.default_rng(seed)
        out = np.zeros((n, self.width), dtype=np.float32)
        count = len(self.columns)
        for j, spec in enumerate(self.columns):
            if spec.type == "numeric":
                drawn = prep.shift[j] + prep.scale[j] * rng.standard_normal(n)
                out[:, j] = signed_exp(drawn) if spec.transform == "log" else drawn
            else:
                out[:, j] = rng.integers(0, 2 if spec.type == "binary" else spec.slots, n)
            missing = rng.random(n) < (spec.missing / spec.rows if spec.rows else 0.0)
            out[missing, j], out[missing, count + j] = 0.0, 1.0
        return out


def _slots(text, vocabulary: tuple[str, ...]) -> np.ndarray:
    """Each cell's slot in ``vocabulary`` (n,) int: its category's, matched by text, else, for a
    cell that reads as a number, the category of the same value (``_numbered``), else "other"
    (``len(vocabulary)``; also for a null cell, which ``missing`` flags)."""
    pa, pc = _pa()
    found = pc.index_in(text, value_set=pa.array(list(vocabulary), type=pa.string()))
    slots = pc.fill_null(found, len(vocabulary)).to_numpy(zero_copy_only=False)
    numbered = _numbered(vocabulary)
    if numbered is None or found.null_count == 0:
        return slots
    unmatched = np.flatnonzero(pc.is_null(found).to_numpy(zero_copy_only=False))
    cells = pc.take(text, pa.array(unmatched))
    number = pc.fill_null(pc.match_substring_regex(cells, NUMBER_PATTERN), False).to_numpy(zero_copy_only=False)
    if not number.any():
        return slots
    rows, slots = unmatched[number], slots.copy()  # (a zero-copy view of Arrow's buffer is read-only)
    values = pc.cast(pc.utf8_trim_whitespace(pc.take(text, pa.array(rows))), pa.float64())
    hit = pc.fill_null(pc.index_in(values, value_set=numbered[0]), -1).to_numpy(zero_copy_only=False)
    slots[rows[hit >= 0]] = numbered[1][hit[hit >= 0]]
    return slots


@functools.lru_cache(maxsize=256)
def _numbered(vocabulary: tuple[str, ...]):
    """(values float64, slots) of the categories that read as numbers, to match a cell by its
    value (a CSV's ``1.0`` is the category ``1`` of a Parquet double); None when no category is a
    number, or when two read as one (``7`` and ``007``: then only the text decides)."""
    pa, _ = _pa()
    pattern = re.compile(NUMBER_PATTERN)
    pairs = [(float(word), slot) for slot, word in enumerate(vocabulary) if pattern.match(word)]
    if not pairs or len({value for value, _ in pairs}) < len(pairs):
        return None
    return pa.array([value for value, _ in pairs], pa.float64()), np.array([slot for _, slot in pairs], np.int64)


def _finite(values: np.ndarray, missing: np.ndarray, spec: ColumnSpec, reject) -> np.ndarray:
    """Numbers with missing cells set to 0; ±inf (not missing: NaN is) rejected."""
    values = np.where(missing, 0.0, values).astype(np.float32)
    if not np.isfinite(values.sum()):
        for index in np.flatnonzero(~np.isfinite(values)):
            reject(int(index), spec.name, f"value {values[index]} is not a finite number")
        values = np.where(np.isfinite(values), values, 0.0).astype(np.float32)
    return values
