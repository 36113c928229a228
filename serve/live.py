"""Scoring rows as they arrive on standard input: ``aeserve score BUNDLE - -o -``.

A reader thread takes CSV lines from standard input as they come (the first is the header)
and stamps each with its arrival time. The scoring loop waits for a line, gathers the lines
that arrive within ``max_delay_ms`` of it (or up to the batch size), parses them as a file's
reader would (``readers.parse_csv_lines``: same column types, same errors naming row and
column), scores them and writes their rows to standard output as CSV at once, flushed. A
series bundle carries each group's last W−1 rows from one batch to the next
(``SeriesStage``), so a row's score is the one the whole file would give it, written as soon as
its window is complete (``last``) or its W−1 successors have come (``mean``, ``max``; a batch's
rows are written together, in order). End of input, Ctrl-C or SIGTERM finish cleanly, between
batches: every batch taken is scored and written (a series' waiting rows with the windows they
have; lines still unread are left), then a summary with the latency from a row's arrival to its score's write (median,
p99) goes to stderr.
"""

from __future__ import annotations

import io
import queue
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import BinaryIO, Callable

import numpy as np

from aeserve.errors import InputError
from aeserve.readers import CheckedRows, Chunk, parse_csv_lines
from aeserve.serve.files import score_columns, series_stage
from aeserve.serve.model import Model
from aeserve.serve.stream import series_outputs

__all__ = ["LiveSummary", "score_live"]

_END = object()


@dataclass
class LiveSummary:
    """What a live run did: rows scored, and each row's latency from arrival to written score."""

    rows: int = 0
    interrupted: bool = False
    latencies: list[float] = field(default_factory=list)  # seconds, one per written row

    @property
    def extra(self) -> dict:
        """Median and p99 latency in milliseconds."""
        lat = np.asarray(self.latencies) * 1000.0
        return {"latency_ms_median": float(np.median(lat)) if lat.size else 0.0,
                "latency_ms_p99": float(np.percentile(lat, 99)) if lat.size else 0.0}


def _read_lines(stream: BinaryIO, lines: queue.Queue) -> None:
    """Put (line, arrival time) for every line of ``stream``, then _END (also on a read error)."""
    try:
        for line in iter(stream.readline, b""):
            lines.put((line if line.endswith(b"\n") else line + b"\n", time.perf_counter()))
    finally:
        lines.put(_END)


def _gather(lines: queue.Queue, max_delay: float, max_rows: int, stop: threading.Event) -> tuple[list, bool]:
    """The next batch of (line, arrival): a first line (waited for, until ``stop`` is set), then
    those arriving within ``max_delay`` of it, up to ``max_rows``; and whether input has ended."""
    first = None
    while first is None:
        if stop.is_set():
            return [], True
        try:
            first = lines.get(timeout=0.1)
        except queue.Empty:
            continue
    if first is _END:
        return [], True
    batch, deadline = [first], first[1] + max_delay
    while len(batch) < max_rows:
        try:
            item = lines.get(timeout=max(0.0, deadline - time.perf_counter())) if max_delay else lines.get_nowait()
        except queue.Empty:
            break
        if item is _END:
            return batch, True
        batch.append(item)
    return batch, False


class _CsvOut:
    """Rows to ``sink`` as CSV: the header once, each batch flushed at once."""

    def __init__(self, sink: BinaryIO):
        self.sink, self.started = sink, False

    def write(self, columns: dict[str, np.ndarray]) -> None:
        import pyarrow as pa
        import pyarrow.csv as pacsv

        buffer = io.BytesIO()
        pacsv.write_csv(pa.table(columns), buffer, write_options=pacsv.WriteOptions(include_header=not self.started))
        self.started = True
        self.sink.write(buffer.getvalue())
        self.sink.flush()


def _stop_on_signals(stop: threading.Event) -> Callable[[], None]:
    """Ctrl-C (SIGINT) and SIGTERM set ``stop`` instead of raising, so the loop ends between
    batches with every scored row written; returns what puts the old handlers back. (Signals
    reach the main thread only: elsewhere, nothing is changed.)"""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    old = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    return lambda: [signal.signal(sig, handler) for sig, handler in old.items()]


def score_live(model: Model, *, threshold: float | None = None, explain: int = 0, window_score: str = "last",
               max_delay_ms: float = 10.0, source: BinaryIO | None = None, sink: BinaryIO | None = None,
               stop: threading.Event | None = None) -> LiveSummary:
    """Score CSV rows from ``source`` (standard input) as they arrive, writing each row's score to
    ``sink`` (standard output) as soon as it has one; see the module docstring. Output columns:
    row (the 1-based data row), a series' time and group columns, energy, its terms, p_value,
    anomaly (and the top K with ``explain``), a series' windows. Setting ``stop`` (Ctrl-C and
    SIGTERM do) ends the input early, as end of input does; ``interrupted`` then says so."""
    source = source if source is not None else sys.stdin.buffer
    out = _CsvOut(sink if sink is not None else sys.stdout.buffer)
    series = series_stage(model, window_score, explain, threshold)
    limit = model.threshold if threshold is None else float(threshold)
    features = list(model.window.channels) if series is not None else model.features
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=_read_lines, args=(source, lines), daemon=True, name="aeserve-stdin").start()
    header = lines.get()
    if header is _END:
        raise InputError("<stdin>: no header row (expected CSV: a header line, then rows)")
    summary, arrivals, next_row = LiveSummary(), {}, 1

    def emit(done: list[tuple[Chunk, dict]]) -> None:
        now = time.perf_counter()
        for chunk, columns in done:
            out.write({"row": chunk.ids, **chunk.keys, **columns})
            summary.rows += len(chunk.ids)
            summary.latencies.extend(now - arrivals.pop(int(r)) for r in chunk.ids)

    stop = stop or threading.Event()
    restore = _stop_on_signals(stop)
    try:
        ended = False
        while not ended:
            batch, ended = _gather(lines, max_delay_ms / 1000.0, model.batch_size, stop)
            if not batch:
                break
            chunk = parse_csv_lines(header[0], b"".join(line for line, _ in batch), features, first_row=next_row,
                                    keys=series.keys if series else (), encoding=model.encoding)
            arrivals.update(zip(range(next_row, next_row + len(batch)), (arrived for _, arrived in batch)))
            next_row += len(batch)
            if series is None:
                emit([(chunk, score_columns(model, CheckedRows(chunk.values), limit, explain))])
            else:
                emit(list(series_outputs(series, chunk, lambda rows: score_columns(model, rows, limit, explain))))
        if series is not None:
            emit(series.finish())
    finally:
        restore()
    summary.interrupted = stop.is_set()
    return summary
