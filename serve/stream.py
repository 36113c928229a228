"""Streaming file I/O: files of any size in flat memory, parsing, compute and writing overlapped.

Inputs (several files, globs, directories of .csv/.parquet/.npy) are read chunk by chunk
(pyarrow's streaming CSV reader, Parquet row batches, .npy read with plain reads — a
memory map would count towards RSS as its pages are touched). A reader thread parses, a
compute thread runs the model, the calling thread writes; bounded queues between them keep
memory flat and let the stages overlap, so the end-to-end time approaches the slowest
stage rather than their sum. Output rows keep input order; the output is written to a
temporary file and renamed into place only when everything succeeded.

Bad rows: ``on_error="fail"`` stops at the first one with file, row and column (and leaves
no output); ``"skip"`` scores the rest and lists every skipped row with its reason.
"""

from __future__ import annotations

import glob
import os
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from aeserve.atomic import atomic_path, output_errors
from aeserve.errors import InputError
from aeserve.readers import SUFFIXES, BadRow, CheckedRows, Chunk, exact_chunks, iter_chunks, row_width
from aeserve.serve.images import IMAGE_SUFFIXES, load_images
from aeserve.tables import check_output_path, refuse_output_among_inputs

__all__ = ["StreamSummary", "expand_inputs", "stream_verb", "TableWriter"]

_ACCEPTED = (*SUFFIXES, *IMAGE_SUFFIXES)  # tables, and images (one row per file)
_QUEUE_DEPTH = 2
_DONE = object()


@dataclass
class StreamSummary:
    """What a streaming verb did."""

    rows: int
    seconds: float
    backend: str
    output: str
    reason: str = ""
    skipped: list[BadRow] = field(default_factory=list)
    errors_file: str | None = None
    extra: dict = field(default_factory=dict)

    @property
    def rows_per_second(self) -> float:
        """Throughput over read + compute + write."""
        return self.rows / self.seconds if self.seconds > 0 else float("inf")


def expand_inputs(inputs: Sequence[str | os.PathLike]) -> list[Path]:
    """Files, glob patterns and directories (their .csv/.parquet/.npy files, sorted) -> files."""
    files: list[Path] = []
    for item in inputs:
        text = str(item)
        if any(ch in text for ch in "*?["):
            matches = sorted(Path(p) for p in glob.glob(text, recursive=True))
            if not matches:
                raise InputError(f"{text}: the pattern matches no file")
            files.extend(p for p in matches if p.is_file())
        elif Path(text).is_dir():
            found = sorted(p for p in Path(text).iterdir() if p.suffix.lower() in _ACCEPTED and p.is_file())
            if not found:
                raise InputError(f"{text}: directory holds no {', '.join(_ACCEPTED)} file")
            files.extend(found)
        else:
            files.append(Path(text))
    for path in files:
        if path.suffix.lower() not in _ACCEPTED:
            raise InputError(f"{path}: unsupported file type {path.suffix or '(none)'!r}; expected one of "
                             f"{', '.join(_ACCEPTED)}")
        if not path.is_file():
            raise InputError(f"{path}: no such file")
    return files


# -- writers -------------------------------------------------------------------------------

class TableWriter:
    """Writes named columns chunk by chunk to .csv, .parquet or .npy (float32 scores only)."""

    def __init__(self, path: Path, target: Path):
        self.path, self.target = path, target
        self.suffix = target.suffix.lower()
        self.rows = 0
        self.started = False  # whether anything (even zero rows) was written
        self._writer = None
        self._file = None
        self._schema = None

    def write(self, columns: dict[str, np.ndarray]) -> None:
        """Append the rows of ``columns`` (name -> 1-D array, all of one length)."""
        with output_errors(self.target):
            self._write(columns)

    def _write(self, columns: dict[str, np.ndarray]) -> None:
        import pyarrow as pa

        if self.suffix == ".npy":
            numeric = np.stack([np.asarray(v, dtype=np.float32) for v in columns.values()], axis=1)
            if self._file is None:
                self._file = open(self.path, "wb")
                self._width = numeric.shape[1]
                self._file.write(self._npy_header(0))
            self._file.write(np.ascontiguousarray(numeric).tobytes())
        else:
            table = pa.table(columns)
            if self._writer is None:
                self._schema = table.schema
                if self.suffix == ".csv":
                    import pyarrow.csv as pacsv
                    self._writer = pacsv.CSVWriter(str(self.path), self._schema)
                else:
                    import pyarrow.parquet as pq
                    self._writer = pq.ParquetWriter(str(self.path), self._schema)
            try:
                table = table.cast(self._schema)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                raise InputError(f"the id column's type changes between inputs ({self._schema} vs {table.schema})") from None
            self._writer.write_table(table)
        self.rows += len(next(iter(columns.values())))
        self.started = True

    def _npy_header(self, rows: int) -> bytes:
        # the row count is padded to a fixed width so the header can be rewritten in place
        text = "{'descr': '<f4', 'fortran_order': False, 'shape': (%-20d, %d), }" % (rows, self._width)
        pad = 64 - (10 + len(text) + 1) % 64
        header = (text + " " * pad + "\n").encode("latin1")
        return b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header

    def close(self) -> None:
        """Finish the file (the .npy header gets its row count)."""
        with output_errors(self.target):
            self._close()

    def _close(self) -> None:
        if self.suffix == ".npy":
            if self._file is None:
                self._width = 0
                self._file = open(self.path, "wb")
                self._file.write(self._npy_header(0))
            self._file.seek(0)
            self._file.write(self._npy_header(self.rows))
            self._file.close()
        elif self._writer is not None:
            self._writer.close()


# -- the pipeline ---------------------------------------------------------------------------

def _producer(target: Callable[[], Iterator], out_queue: queue.Queue, stop: threading.Event) -> threading.Thread:
    def run() -> None:
        try:
            for item in target():
                while not stop.is_set():
                    try:
                        out_queue.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            out_queue.put(_DONE)
        except BaseException as exc:  # handed to the consumer, which raises it
            out_queue.put(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def _drain(in_queue: queue.Queue) -> Iterator:
    while True:
        item = in_queue.get()
        if item is _DONE:
            return
        if isinstance(item, BaseException):
            raise item
        yield item


@dataclass(frozen=True)
class _Columns:
    """The columns before ``fn``'s outputs: the id (or ``row``/``path``), ``source`` with several
    inputs, a series' time and group columns."""

    id_name: str
    several: bool
    scores_only: bool  # a .npy holds one float32 matrix: the outputs alone

    def leading(self, chunk: Chunk) -> dict[str, np.ndarray]:
        """This chunk's id, source and key columns."""
        if self.scores_only:
            return {}
        columns = {self.id_name: chunk.ids}
        if self.several:
            names = chunk.sources if chunk.sources is not None else np.full(len(chunk.ids), chunk.source, dtype=object)
            columns["source"] = np.array([Path(n).name for n in names], dtype=object)
        return {**columns, **chunk.keys}


def _input_chunks(files: list[Path], features: Sequence[str], *, image_shape, id_column: str | None,
                  chunk_rows: int, skip: bool, npy_layout, encoding, keys: Sequence[str] = ()) -> Iterator[Chunk]:
    """Every input's chunks in order: tables through their readers, images 256 files a chunk
    (one row per file, its path as the id)."""
    pending_images: list[Path] = []
    for path in [*files, None]:
        if path is not None and path.suffix.lower() in IMAGE_SUFFIXES:
            pending_images.append(path)
            if len(pending_images) < 256:
                continue
        if pending_images:
            yield Chunk(load_images(pending_images, image_shape), np.array([str(p) for p in pending_images],
                        dtype=object), str(pending_images[-1]), bytes_read=pending_images[-1].stat().st_size)
            pending_images = []
        if path is not None and path.suffix.lower() not in IMAGE_SUFFIXES:
            yield from iter_chunks(path, features, id_column=id_column, chunk_rows=chunk_rows, skip=skip,
                                   npy_layout=npy_layout, encoding=encoding, keys=keys)


def _write_results(results: queue.Queue, writer: TableWriter, columns: _Columns, *, total_bytes: int,
                   progress, observe=None) -> tuple[list[BadRow], np.dtype | None]:
    """Write each computed chunk in order; returns the bad rows seen and the ids' dtype (None: no id seen)."""
    skipped: list[BadRow] = []
    id_dtype = None
    finished_bytes, current = 0, None
    for chunk, outputs in _drain(results):
        if chunk.source != current:
            finished_bytes += Path(current).stat().st_size if current else 0
            current = chunk.source
        skipped.extend(chunk.bad)
        if len(chunk.ids):
            id_dtype = np.asarray(chunk.ids).dtype
        if outputs is not None:
            writer.write({**columns.leading(chunk), **outputs})
            if observe:
                observe(outputs)
        if progress:
            progress(finished_bytes + chunk.bytes_read, total_bytes, writer.rows)
    return skipped, id_dtype


def _write_errors(out: Path, skipped: list[BadRow]) -> str:
    """OUT.errors.csv: one line per skipped row (source, row, column, reason); returns its path."""
    from aeserve.tables import write_table

    errors = out.with_name(out.name + ".errors.csv")
    write_table(errors, {"source": np.array([b.source for b in skipped], dtype=object),
                         "row": np.array([b.row for b in skipped]),
                         "column": np.array([b.column for b in skipped], dtype=object),
                         "reason": np.array([b.reason for b in skipped], dtype=object)})
    return str(errors)


def series_outputs(series, chunk: Chunk, fn: Callable[[CheckedRows], dict[str, np.ndarray]]
                   ) -> Iterator[tuple[Chunk, dict]]:
    """A series chunk through ``fn``: its windows scored, then the chunks whose rows are all final
    with their per-row outputs (``SeriesStage``); rows that end no window are scored by none."""
    windows = series.cut(chunk)
    if len(windows.ends):
        outputs = fn(CheckedRows(windows.values))
    else:  # no window ends in this chunk: the output columns with no row (from a valid window)
        outputs = {k: np.asarray(v)[:0] for k, v in fn(CheckedRows(np.zeros((1, series.width), np.float32))).items()}
    yield from series.rows(chunk, windows, outputs)


def stream_verb(sources: Sequence[str | os.PathLike], out: str | os.PathLike, features: Sequence[str],
                fn: Callable[[CheckedRows], dict[str, np.ndarray]], *, id_column: str | None = None,
                skip: bool = False, chunk_rows: int | None = None, batch_rows: int = 2048,
                image_shape: Sequence[int] | None = None, npy_layout: Sequence[str] | None = None,
                progress: Callable[[int, int, int], None] | None = None, encoding=None,
                series=None, observe: Callable[[dict[str, np.ndarray]], None] | None = None) -> StreamSummary:
    """Read ``sources`` chunk by chunk, apply ``fn`` to each chunk's rows, write ``out``.

    The readers check every row; ``fn`` gets each chunk's rows as ``CheckedRows`` of exactly
    ``batch_rows`` rows (the last chunk shorter; see ``readers.exact_chunks``).

    Output columns: the id column (or ``row``, the 1-based data row), ``source`` when there
    are several inputs, then ``fn``'s outputs. ``progress(bytes_done, bytes_total, rows)``;
    ``observe(outputs)``: each written chunk's outputs (e.g. to count anomalies).
    ``npy_layout`` names the columns of a .npy wider than ``features`` (see ``iter_chunks``);
    ``encoding``, a mixed bundle's typed columns (rows reach ``fn`` encoded); ``series``, a
    series bundle's ``SeriesStage`` (``features`` are its channels; ``fn`` gets the windows that
    end at each chunk's rows, and the output has a row per input row, with the time and group
    columns). No input row gives a valid empty file with the usual columns. An output that is
    one of the inputs is refused before anything is read.
    """
    started = time.perf_counter()
    out = check_output_path(out)
    files = expand_inputs(sources)
    refuse_output_among_inputs(out, files)
    images = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
    if images and not image_shape:
        raise InputError(f"{images[0]}: this model takes table rows, not images")
    columns = _Columns(id_column or ("path" if images else "row"), len(files) > 1 and len(images) < len(files),
                       out.suffix.lower() == ".npy")

    def read() -> Iterator[Chunk]:
        return exact_chunks(_input_chunks(files, features, image_shape=image_shape, id_column=id_column,
                                          chunk_rows=chunk_rows or batch_rows, skip=skip, npy_layout=npy_layout,
                                          encoding=encoding, keys=series.keys if series else ()),
                            batch_rows)

    def computed() -> Iterator[tuple[Chunk, dict | None]]:
        # the rows were checked by their reader; Model cuts each chunk into its batches
        for chunk in _drain(parsed):
            if series is None:
                yield chunk, (fn(CheckedRows(chunk.values)) if len(chunk.values) else None)
            elif len(chunk.values):
                yield from series_outputs(series, chunk, fn)
            else:
                yield chunk, None
        if series is not None:
            yield from series.finish()

    stop = threading.Event()
    parsed: queue.Queue = queue.Queue(maxsize=_QUEUE_DEPTH)
    results: queue.Queue = queue.Queue(maxsize=_QUEUE_DEPTH)
    threads = [_producer(read, parsed, stop), _producer(computed, results, stop)]
    try:
        with atomic_path(out, clean_stale=True) as tmp:
            writer = TableWriter(tmp, out)
            try:
                skipped, id_dtype = _write_results(results, writer, columns, progress=progress, observe=observe,
                                                   total_bytes=sum(p.stat().st_size for p in files) or 1)
                if not writer.started:  # no good row: a valid file with the usual columns and no rows
                    width = series.width if series else row_width(features, encoding)
                    probe = fn(CheckedRows(np.zeros((1, width), np.float32)))  # a valid row (window), encoded or not
                    probe = series.probe(probe) if series else {k: np.asarray(v)[:0] for k, v in probe.items()}
                    default_ids = np.int64 if id_column is None and not images else object
                    empty = Chunk(np.empty((0, width), np.float32), np.empty(0, id_dtype or default_ids),
                                  str(files[-1]), keys={k: np.empty(0, object) for k in (series.keys if series else ())})
                    writer.write({**columns.leading(empty), **probe})
            finally:
                writer.close()
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=5)
    skipped.sort(key=lambda b: ([str(p) for p in files].index(b.source), b.row))
    return StreamSummary(rows=writer.rows, seconds=time.perf_counter() - started, backend="", output=str(out),
                         skipped=skipped, errors_file=_write_errors(out, skipped) if skipped else None)
