"""Whole numeric tables (.csv, .parquet, .npy): read through the streaming readers, written
atomically. No torch here: the runtime uses this module.

A table is a 2-D float32 array plus one name per column. ``read_table`` picks the columns
and concatenates ``aeserve.readers.iter_chunks``, so its errors (empty file, missing column,
bad cell with its row and column, truncated file) are the readers' own.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from aeserve.atomic import atomic_path, output_errors
from aeserve.errors import InputError
from aeserve.manifest import WindowSpec
from aeserve.readers import SUFFIXES, check_finite, column_names, iter_chunks, preview, refuse_repeated, row_width

__all__ = ["Table", "SeriesTable", "column_types", "read_table", "read_training_table", "read_series_table", "read_series_windows",
           "read_model_rows", "typed_table", "write_table", "check_output_path", "refuse_output_among_inputs", "check_finite", "SUFFIXES"]


@dataclass
class Table:
    """Rows read from ``source``: ``values`` is (rows, columns) float32; for a mixed table (text,
    booleans, missing cells) ``specs`` holds each column's record and ``values`` the encoded rows
    (rows, 2 x columns), as ``aeserve.columns.TableEncoding`` makes them."""

    values: np.ndarray  # (rows, columns) float32, or (rows, 2 * columns) encoded
    columns: list[str]
    source: str
    specs: tuple = ()  # ColumnSpec per column, for a mixed table


@dataclass
class SeriesTable(Table):
    """The windows of a series to train on: ``values`` (windows, C x W) channel-major, one per
    ``stride`` rows of each run of at least W rows (``window`` says how they were cut); ``ends``
    (windows,) the row, in time order within each group, each window ends at, and ``series``
    the group index of each (0 without a group column), so that a split can keep validation
    windows from sharing rows with training ones."""

    window: WindowSpec | None = None
    ends: np.ndarray | None = None
    series: np.ndarray | None = None
    rows: int = 0


def _suffix(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise InputError(f"{path}: unsupported file type {suffix or '(none)'!r}; "
                         f"expected one of {', '.join(SUFFIXES)}")
    return suffix


def _select(names: Sequence[str], path: Path, columns: Sequence[str] | None,
            drop: Sequence[str] | None) -> list[str]:
    """The column names to keep: ``columns`` in that order, or all of ``names`` but ``drop``."""
    if columns:
        missing = [c for c in columns if c not in names]
        if missing:
            raise InputError(f"{path}: no column(s) {', '.join(map(repr, missing))}; "
                             f"it has {len(names)}: {preview(list(names))}")
        return list(columns)
    unknown = [c for c in (drop or ()) if c not in names]
    if unknown:
        raise InputError(f"{path}: cannot drop unknown column(s) {', '.join(map(repr, unknown))}")
    keep = [c for c in names if c not in set(drop or ())]
    refuse_repeated(path, names, keep)
    return keep


def read_table(path: str | os.PathLike, columns: Sequence[str] | None = None,
               drop: Sequence[str] | None = None,
               expect: Sequence[str] | None = None, encoding=None) -> Table:
    """Read a numeric table from .csv (with header), .parquet or .npy.

    ``columns`` keeps those (in that order), ``drop`` removes those. ``expect`` is the
    feature list a model needs: named columns are selected by name (extra columns such
    as ids or labels are ignored) and a .npy must have exactly that width. ``encoding``
    (a mixed bundle's ``Model.encoding``, with ``expect``): its rows encoded, 2 values a column.
    """
    path = Path(path)
    suffix = _suffix(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    names = column_names(path)
    npy = suffix == ".npy"
    if expect is not None:
        keep = list(expect)
    else:
        keep = _select(names, path, columns, drop)
    # a .npy's columns have no names to select by: read them all, then pick
    read = (keep if expect is not None else names) if npy else keep
    chunks = [chunk.values for chunk in iter_chunks(path, read, encoding=encoding)]
    values = np.concatenate(chunks) if chunks else np.empty((0, row_width(read, encoding)), np.float32)
    if npy and expect is None and keep != names:
        values = np.ascontiguousarray(values[:, [names.index(c) for c in keep]])
    if values.shape[0] == 0:
        raise InputError(f"{path}: no data rows")
    if values.shape[1] == 0:
        raise InputError(f"{path}: no columns left to use")
    return Table(values, keep, str(path))


#: a text column whose cells are this share numbers or more is numeric (its other cells are errors)
NUMERIC_TEXT_SHARE = 0.95


def _read_arrow(path: Path, keep: Sequence[str], text: Sequence[str] = ()):
    """The whole file as a pyarrow table of ``keep``, types inferred (CSV) or as stored (Parquet);
    a CSV's ``text`` columns (those given --categorical) as their text, as the scoring reader and
    a streamed training pass read them, so that categories are the file's words (``1.0``, not a
    number's ``1``)."""
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    from aeserve.readers import NULL_VALUES

    try:
        if path.suffix.lower() == ".csv":
            return pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(
                include_columns=list(keep), null_values=NULL_VALUES, strings_can_be_null=True,
                column_types={name: pa.string() for name in text if name in keep}))
        return pq.read_table(path, columns=list(keep))
    except (pa.ArrowException, OSError) as exc:
        raise InputError(f"{path}: cannot read ({str(exc).splitlines()[0][:200]})") from None


def _mostly_numbers(column) -> bool:
    """Whether a text column is numbers with a few stray cells (then it is numeric, and the
    stray cells are reported as bad cells)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        return False
    present = column.drop_null()
    if len(present) == 0:
        return False
    from aeserve.columns import NUMBER_PATTERN

    numbers = pc.sum(pc.match_substring_regex(present, NUMBER_PATTERN).cast("int64")).as_py() or 0
    return numbers >= NUMERIC_TEXT_SHARE * len(present)


def read_training_table(path: str | os.PathLike, columns: Sequence[str] | None = None,
                        drop: Sequence[str] | None = None, *, categorical: Sequence[str] = (),
                        numeric: Sequence[str] = (), min_category_count: int = 5,
                        max_categories: int = 100, log=()) -> Table:
    """The table to train on. Complete numeric rows are read as ``read_table`` reads them; a table
    with text, boolean or missing cells (or ``categorical`` columns) becomes a mixed table: each
    column typed (``aeserve.columns.infer_types``; a text column of numbers with a few stray cells
    stays numeric), its vocabulary and missing cells counted, its rows encoded; ``log``: the
    numeric columns read through the signed log (names, or 'auto')."""
    path = Path(path)
    if _suffix(path) == ".npy" or not path.is_file():
        for given, flag in ((categorical, "--categorical"), (log, "--log")):
            if given:
                raise InputError(f"{path}: {flag} needs a .csv or .parquet table")
        return read_table(path, columns=columns, drop=drop)
    keep = _select(column_names(path), path, columns, drop)
    data = _read_arrow(path, keep, text=categorical)
    if data.num_rows == 0:
        raise InputError(f"{path}: no data rows")
    typed = typed_table(data, str(path), categorical=categorical, numeric=numeric,
                        min_category_count=min_category_count, max_categories=max_categories, log=log)
    return typed if typed is not None else read_table(path, columns=keep)


def read_series_table(path: str | os.PathLike, size: int, *, stride: int = 1, time_column: str | None = None,
                      group_column: str | None = None, max_gap: float | None = None,
                      columns: Sequence[str] | None = None, drop: Sequence[str] | None = None) -> SeriesTable:
    """A series file as the windows to train on: the channel columns (``columns``, or all but
    ``drop`` and the time and group columns), rows sorted by group then time (file order
    without a time column; a stable sort), each group its own series, a step in time above
    ``max_gap`` a new one; windows of ``size`` rows every ``stride`` rows of each run
    (``aeserve.series.SeriesWindows``, which the runtime scores with too)."""
    from aeserve.series import SeriesWindows, group_rows, time_values

    path = Path(path)
    if _suffix(path) == ".npy" and (time_column or group_column):
        raise InputError(f"{path}: a .npy has no named columns; --time-column and --group-column need .csv or .parquet")
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    keys = [c for c in (time_column, group_column) if c]
    names = column_names(path)
    for key in keys:
        if key not in names:
            raise InputError(f"{path}: no column {key!r}; it has {len(names)}: {preview(names)}")
    channels = [c for c in _select(names, path, columns, drop) if c not in keys]
    if not channels:
        raise InputError(f"{path}: no channel columns left besides {', '.join(keys)}")
    try:
        chunks = list(iter_chunks(path, channels, keys=keys))
    except InputError as exc:
        if "expected a number" not in str(exc):
            raise
        raise InputError(f"{exc}; a series' channels are numbers: make a text column the --group-column, "
                         "or --drop it") from None
    if not chunks or not sum(len(c.values) for c in chunks):
        raise InputError(f"{path}: no data rows")
    values = np.concatenate([c.values for c in chunks])
    rows = np.concatenate([c.row_numbers for c in chunks])
    times = time_values(np.concatenate([c.keys[time_column] for c in chunks]), time_column, str(path), rows) \
        if time_column else None
    groups = np.concatenate([c.keys[group_column] for c in chunks]) if group_column else None
    series = np.zeros(len(values), np.int64)
    for index, (_, members) in enumerate(group_rows(groups, len(values))):
        series[members] = index
    order = np.lexsort((times if times is not None else np.arange(len(values)), series))  # by group, then time
    cutter = SeriesWindows(size, len(channels), max_gap, stride)
    windows = cutter.push(values[order], None if times is None else times[order], series[order],
                          rows=rows[order], source=str(path), time_name=time_column or "time")
    if not len(windows.ends):
        raise InputError(f"{path}: no series holds {size} consecutive rows{' within --max-gap' if max_gap else ''}, "
                         f"so there is no window of {size} rows to train on: lower --window")
    spec = WindowSpec(size=size, channels=tuple(channels), stride=stride, time_column=time_column,
                      group_column=group_column, max_gap=max_gap)
    return SeriesTable(windows.values, list(spec.cells), str(path), window=spec, ends=windows.ends,
                       series=series[order][windows.ends], rows=len(values))


def read_series_windows(path: str | os.PathLike, window: WindowSpec, carry: Sequence[str] = ()
                        ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Every window of a series file as the runtime scores it (one ending at each row whose series
    has W rows up to it; file order, each group's rows in time order), and the ``carry`` columns
    (e.g. labels) at the rows the windows end at: (windows (m, C x W), {name: (m,)})."""
    from aeserve.series import SeriesWindows

    path = Path(path)
    cutter = SeriesWindows.of(window)
    keys = [c for c in (window.time_column, window.group_column) if c]
    parts, carried = [], {name: [] for name in carry}
    for chunk in iter_chunks(path, list(window.channels), keys=[*keys, *[c for c in carry if c not in keys]]):
        found = cutter.push_chunk(chunk, window)
        parts.append(found.values)
        for name in carry:
            carried[name].append(chunk.keys[name][found.ends])
    values = np.concatenate(parts) if parts else np.empty((0, window.size * len(window.channels)), np.float32)
    if not len(values):
        raise InputError(f"{path}: no series holds the {window.size} consecutive rows a window needs")
    return values, {name: np.concatenate(columns) for name, columns in carried.items()}


def read_model_rows(path: str | os.PathLike, spec, labels: str | None = None
                    ) -> tuple[np.ndarray, np.ndarray | None]:
    """The rows a bundle's graphs take from a file, given its ``InputSpec``: its features, a mixed
    table's encoded columns, or a series' windows (one ending at each row that has one); and the
    ``labels`` column at those rows (None without it)."""
    if spec.window is not None:
        rows, carried = read_series_windows(path, spec.window, [labels] if labels else [])
        return rows, (np.asarray(carried[labels], np.float64) if labels else None)
    from aeserve.columns import TableEncoding

    rows = read_table(path, expect=list(spec.features), encoding=TableEncoding.of(spec)).values
    return rows, (read_table(path, columns=[labels]).values[:, 0] if labels else None)


def column_types(schema, names: Sequence[str], sample=None, *, categorical: Sequence[str] = (),
                 numeric: Sequence[str] = ()) -> dict[str, str]:
    """Each column's type (``aeserve.columns.infer_types``), where a text column of ``sample`` (a
    pyarrow table: the whole table, or a file's first block) that is numbers with a few stray cells
    stays numeric, so that its stray cells are reported by row as bad cells."""
    from aeserve.columns import infer_types

    stray = [n for n in names if sample is not None and n not in categorical and _mostly_numbers(sample.column(n))]
    return infer_types(schema, list(names), categorical=categorical, numeric=[*numeric, *stray])


def typed_table(data, source: str, *, categorical: Sequence[str] = (), numeric: Sequence[str] = (),
                min_category_count: int = 5, max_categories: int = 100, log=()) -> Table | None:
    """A mixed table to train on from a pyarrow table (or a DataFrame, or a dict of columns):
    each column typed, its vocabulary and missing cells counted, its rows encoded, the numeric
    columns ``log`` names (or 'auto': ``aeserve.transforms.with_log``) marked to be read through
    the signed log; None when every column is a complete number column and none takes the log
    (then the plain numeric path applies)."""
    from aeserve.columns import TableEncoding, as_arrow_table, fit_columns, needs_mixed
    from aeserve.transforms import parse_log, shapes_of_rows, with_log

    data = as_arrow_table(data)
    names = data.column_names
    types = column_types(data.schema, names, data, categorical=categorical, numeric=numeric)
    log = parse_log(log)
    plain = not needs_mixed(data, types) and not categorical
    if plain and not log:
        return None
    specs = fit_columns(data, types, min_count=min_category_count, max_categories=max_categories, source=source)
    values, _, _ = TableEncoding(specs).encode(data, source=source)
    specs = with_log(specs, log, shapes_of_rows(values, specs) if log == "auto" else None)
    if plain and not any(spec.transform for spec in specs):
        return None
    return Table(values, list(names), source, specs)


def check_output_path(path: str | os.PathLike) -> Path:
    """Fail early, before any work, if ``path`` has no supported suffix or is a directory."""
    path = Path(path)
    _suffix(path)
    if path.is_dir():
        raise InputError(f"{path}: is a directory; give an output file name")
    return path


def refuse_output_among_inputs(out: Path, inputs: Sequence[Path]) -> None:
    """InputError when ``out`` (or its ``.errors.csv`` list) is one of ``inputs``: writing it
    would destroy the data before it was read."""
    targets = [out, out.with_name(out.name + ".errors.csv")]
    for path in inputs:
        for target in targets:
            same = os.path.samefile(path, target) if target.exists() and path.exists() else \
                path.resolve() == target.resolve()
            if same:
                raise InputError(f"{target}: is also an input; write the output to another file "
                                 "(nothing was read or written)")


def write_table(path: str | os.PathLike, columns: Mapping[str, np.ndarray]) -> None:
    """Write named 1-D columns to .csv/.parquet, or as a 2-D float32 .npy; atomically."""
    import pyarrow as pa

    path = Path(path)
    suffix = _suffix(path)
    with atomic_path(path, clean_stale=True) as tmp, output_errors(path):
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
