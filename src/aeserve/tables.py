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
from aeserve.readers import SUFFIXES, check_finite, column_names, iter_chunks, preview

__all__ = ["Table", "read_table", "write_table", "check_output_path", "refuse_output_among_inputs", "check_finite",
           "SUFFIXES"]


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
    return [c for c in names if c not in set(drop or ())]


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
    names = column_names(path)
    npy = suffix == ".npy"
    if expect is not None:
        keep = list(expect)
    else:
        keep = _select(names, path, columns, drop)
    # a .npy's columns have no names to select by: read them all, then pick
    read = (keep if expect is not None else names) if npy else keep
    chunks = [chunk.values for chunk in iter_chunks(path, read)]
    values = np.concatenate(chunks) if chunks else np.empty((0, len(read)), np.float32)
    if npy and expect is None and keep != names:
        values = np.ascontiguousarray(values[:, [names.index(c) for c in keep]])
    if values.shape[0] == 0:
        raise InputError(f"{path}: no data rows")
    if values.shape[1] == 0:
        raise InputError(f"{path}: no columns left to use")
    return Table(values, keep, str(path))


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
