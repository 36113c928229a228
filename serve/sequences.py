"""Per-sequence state for serving a series bundle, as Triton's sequence batcher keeps it.

A request that carries ``sequence_id`` (with ``sequence_start`` on its first request and
``sequence_end`` on its last, as stock ``tritonclient`` sends them) appends its rows to that
sequence; the server keeps each sequence's last W−1 rows (``SeriesWindows``, the same cutter
the file verbs use), so every appended row is scored by the window ending at it, exactly as
the whole series in one file would score it. Memory is bounded: at most ``max_sequences``
are open (opening one more closes the least recently used) and one idle for
``idle_seconds`` is closed. A request for a sequence that is not open — never started,
ended, or closed for either reason — is a 400 saying which, never a score from a wrong
window. Requests of one sequence run one at a time, in the order they arrive.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict

import numpy as np

from aeserve.manifest import WindowSpec
from aeserve.series import SeriesWindows, Windows
from aeserve.serve.protocol import RequestError, SequenceRef

__all__ = ["Sequences"]

_REMEMBERED = 65536  # closed sequences remembered, to say why one is not open


class Sequences:
    """The open sequences of one served series bundle (see the module docstring)."""

    def __init__(self, window: WindowSpec, max_sequences: int = 10000, idle_seconds: float = 600.0):
        self.window = window
        self.max_sequences, self.idle_seconds = max_sequences, idle_seconds
        self._cutter = SeriesWindows.of(window)
        self._used: OrderedDict = OrderedDict()  # open id -> last use (monotonic), least recent first
        self._locks: dict = {}
        self._closed: OrderedDict = OrderedDict()  # id -> why it was closed
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._used)

    def append(self, ref: SequenceRef, rows: np.ndarray, times: np.ndarray | None = None) -> Windows:
        """Append ``rows`` (n, channels) to sequence ``ref`` (opening it on ``sequence_start``,
        closing it after ``sequence_end``); the windows that end at them."""
        lock = self._open(ref)
        with lock:
            with self._lock:
                if ref.id not in self._used:  # closed between opening and now (idle, or evicted)
                    raise RequestError(f"sequence {str(ref.id)[:40]} is not open ({self._closed.get(ref.id)}); "
                                       "send its first request with sequence_start")
            try:
                return self._cutter.push_series(ref.id, rows, times, np.arange(1, len(rows) + 1),
                                                f"sequence {ref.id}", self.window.time_column or "time")
            finally:
                if ref.end:
                    self._close(ref.id, "ended (sequence_end)")

    def _open(self, ref: SequenceRef) -> threading.Lock:
        """The sequence's lock, after expiring idle sequences and opening this one if it starts."""
        now = time.monotonic()
        with self._lock:
            while self._used and now - next(iter(self._used.values())) > self.idle_seconds:
                oldest = next(iter(self._used))
                self._close_locked(oldest, f"closed after {self.idle_seconds:g} s idle")
            if ref.start:
                self._cutter.forget(ref.id)
                if ref.id not in self._used and len(self._used) >= self.max_sequences:
                    self._close_locked(next(iter(self._used)), f"closed to open another: --max-sequences "
                                                               f"{self.max_sequences} were open")
                self._closed.pop(ref.id, None)
                self._locks.setdefault(ref.id, threading.Lock())
            elif ref.id not in self._used:
                why = self._closed.get(ref.id, "never started")
                raise RequestError(f"sequence {str(ref.id)[:40]} is not open ({why}); send its first request "
                                   "with sequence_start")
            self._used[ref.id] = now
            self._used.move_to_end(ref.id)
            return self._locks[ref.id]

    def _close(self, ident, why: str) -> None:
        with self._lock:
            self._close_locked(ident, why)

    def _close_locked(self, ident, why: str) -> None:
        self._used.pop(ident, None)
        self._locks.pop(ident, None)
        self._cutter.forget(ident)
        self._closed[ident] = why
        self._closed.move_to_end(ident)
        while len(self._closed) > _REMEMBERED:
            self._closed.popitem(last=False)
