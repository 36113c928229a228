"""Series into windows, with each series' last W−1 rows carried from one call to the next.

A series bundle's graphs take windows of W consecutive rows of its C channels, laid out
channel-major (``WindowSpec.layout``: value c·W + l is channel c at row t−(W−1−l)). The
runtime scores one window per row: the window that ends at it. ``SeriesWindows.push`` takes
rows as they come (a file's chunks, several files in order, standard input, a server
sequence's requests) and gives the windows that end at them; since it keeps each series'
last W−1 rows (and its last time), a row gets the same window however the rows were cut,
so scores do not depend on where one chunk or file ended and the next began.

A series is one value of the group column (the whole input without one), in the order the
rows arrive: rows must come in time order within each group (``InputError`` naming the row
otherwise; training sorts them first). A step in time larger than ``max_gap`` ends a series
and starts another, so no window spans the gap. The first W−1 rows of a series end no
window. Windows are built one chunk at a time: never the whole input's W copies of each row.

numpy only: the runtime, the file verbs, the server and training share this module.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from aeserve.errors import InputError

__all__ = ["Windows", "SeriesWindows", "time_values", "parse_duration", "window_views", "group_rows", "plain"]

_UNITS = {"ms": 1e-3, "s": 1.0, "sec": 1.0, "min": 60.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str) -> float:
    """'5min' -> 300.0, '1.5h' -> 5400.0, '250ms' -> 0.25, '12' -> 12.0 (a bare number is in
    the time column's own unit: seconds for timestamps); InputError for anything else."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-z]*)\s*", str(text).lower())
    if not match or match.group(2) not in ("", *_UNITS):
        raise InputError(f"max gap {text!r}: expected a positive number, or one with a unit such as 90s, 5min, "
                         f"1h, 1d ({', '.join(_UNITS)})")
    value = float(match.group(1)) * _UNITS.get(match.group(2), 1.0)
    if not value > 0:
        raise InputError(f"max gap {text!r}: must be > 0")
    return value


def time_values(column, name: str, source: str, rows: np.ndarray) -> np.ndarray:
    """A time column as float64 (n,): numbers as they are, timestamps and dates in seconds since
    1970; InputError naming the first missing cell, or a column that is neither."""
    array = np.asarray(column)
    if array.dtype.kind == "M":  # datetime64 of any unit
        missing = np.isnat(array)
        values = array.astype("datetime64[ns]").astype(np.int64).astype(np.float64) / 1e9
    elif array.dtype.kind in "iuf":
        values = array.astype(np.float64)
        missing = ~np.isfinite(values)
    else:
        try:
            values = array.astype("datetime64[ns]").astype(np.int64).astype(np.float64) / 1e9
            missing = np.isnat(array.astype("datetime64[ns]"))
        except (TypeError, ValueError):
            first = next((str(v) for v in array if v is not None), "")
            raise InputError(f"{source}: time column {name!r} holds {first[:40]!r}: expected numbers or "
                             "timestamps (ISO 8601 such as 2024-05-01T12:00:00)") from None
    if missing.any():
        row = rows[int(np.argmax(missing))]
        raise InputError(f"{source}: row {row}, column {name!r}: missing time, expected a number or a timestamp")
    return values


def window_views(rows: np.ndarray, size: int, axis: int = 0) -> np.ndarray:
    """Every window of ``size`` consecutive rows of ``rows`` (n, C) as a view (n − size + 1, C, size):
    window j holds rows j..j+size−1, channel-major; with ``axis=1``, of rows given as (C, n),
    the view (C, n − size + 1, size). No copy."""
    return np.lib.stride_tricks.sliding_window_view(rows, size, axis=axis)


@dataclass
class Windows:
    """The windows a chunk of rows completes: ``values`` (m, C·W) float32 channel-major, and
    ``ends`` (m,), the index within the chunk of the row each one ends at (ascending)."""

    values: np.ndarray
    ends: np.ndarray


@dataclass
class _Tail:
    """What a series carries to its next rows: its last ≤ W−1 rows, how many rows its current
    run (since its start or its last gap) holds, and the time of its last row."""

    rows: np.ndarray
    run: int = 0
    time: float | None = None


@dataclass
class SeriesWindows:
    """The windows that end at each row, across calls (see the module docstring).

    ``size``: W; ``channels``: C; ``max_gap``: a larger step in time starts a new series;
    ``stride``: keep only every ``stride``-th window of a run (training)."""

    size: int
    channels: int
    max_gap: float | None = None
    stride: int = 1
    tails: dict = field(default_factory=dict)

    @classmethod
    def of(cls, window) -> "SeriesWindows":
        """The cutter of a bundle's ``WindowSpec`` (``model.window``): every window, one per row."""
        return cls(window.size, len(window.channels), window.max_gap)

    def push_chunk(self, chunk, window) -> Windows:
        """``push`` for a reader's ``Chunk`` of ``window``'s channels, whose ``keys`` hold its
        time and group columns (errors name the chunk's file and rows)."""
        rows = chunk.row_numbers
        times = time_values(chunk.keys[window.time_column], window.time_column, chunk.source, rows) \
            if window.time_column else None
        groups = chunk.keys[window.group_column] if window.group_column else None
        return self.push(chunk.values, times, groups, rows=rows, source=chunk.source,
                         time_name=window.time_column or "time")

    def push(self, values: np.ndarray, times: np.ndarray | None = None, groups: np.ndarray | None = None, *,
             rows: np.ndarray | None = None, source: str = "rows", time_name: str = "time") -> Windows:
        """The windows ending at the rows of ``values`` (n, C) float32, given each row's time
        (float64, or None: file order) and group (or None: one series). ``rows``: the rows'
        1-based numbers, for errors."""
        n = len(values)
        rows = np.arange(1, n + 1) if rows is None else rows
        if groups is None or n == 0:
            return self.push_series(None, values, times, rows, source, time_name)
        parts, ends = [], []
        for key, members in group_rows(groups, n):
            if len(members) == n:  # one group: no gather, no reordering
                return self.push_series(key, values, times, rows, source, time_name)
            found = self.push_series(key, values[members], None if times is None else times[members],
                                   rows[members], source, time_name)
            parts.append(found.values)
            ends.append(members[found.ends])
        ends_all = np.concatenate(ends)
        arrival = np.argsort(ends_all, kind="stable")
        return Windows(np.concatenate(parts)[arrival], ends_all[arrival])

    def push_series(self, key, values: np.ndarray, times, rows: np.ndarray, source: str = "rows",
                    time_name: str = "time") -> Windows:
        """``push`` for rows that all belong to the series ``key`` (a group value, a server
        sequence's id; None: the only one)."""
        size, n = self.size, len(values)
        tail = self.tails.get(key) or _Tail(np.empty((0, self.channels), np.float32))
        run = np.arange(tail.run, tail.run + n)  # rows in the current run, up to and including each row
        if times is not None and n:
            steps = np.diff(times, prepend=times[0] if tail.time is None else tail.time)
            if (steps < 0).any():
                at = int(np.argmax(steps < 0))
                before = times[at - 1] if at else tail.time
                where = f" of group {key!r}" if key is not None else ""
                raise InputError(f"{source}: row {rows[at]}, column {time_name!r}: time {_show(times[at])} comes "
                                 f"before {_show(before)}, the previous row{where}; rows must be in time order "
                                 "(sort the file by time)")
            if self.max_gap is not None:
                gaps = np.flatnonzero(steps > self.max_gap)
                if gaps.size:  # each gap restarts the run count
                    starts = np.zeros(n, np.int64)
                    starts[gaps] = 1
                    segment = np.cumsum(starts)
                    first = np.concatenate([[0], gaps])[segment]  # index of each row's run start in this chunk
                    run = np.where(segment > 0, np.arange(n) - first, run)
        complete = run >= size - 1
        if self.stride > 1:
            complete &= (run - (size - 1)) % self.stride == 0
        ends = np.flatnonzero(complete)
        carried = len(tail.rows)
        buffer = np.concatenate([tail.rows, values]) if carried else values
        if ends.size:
            by_channel = np.ascontiguousarray(buffer.T, dtype=np.float32)  # (C, carried + n): lags contiguous
            views = window_views(by_channel, size, axis=1).transpose(1, 0, 2)  # (carried + n - W + 1, C, W)
            starts = ends + carried - (size - 1)
            if ends.size == ends[-1] - ends[0] + 1:  # one contiguous run: a slice, copied once
                picked = views[starts[0]:starts[-1] + 1]
            else:
                picked = views[starts]
            # each window's W values of a channel are copied as one contiguous run (from (n, C)
            # they would be W strided reads: 2-3x slower)
            windows = np.ascontiguousarray(picked).reshape(len(ends), -1)
        else:
            windows = np.empty((0, self.channels * size), np.float32)
        if n:
            keep = int(min(size - 1, run[-1] + 1))
            self.tails[key] = _Tail(buffer[len(buffer) - keep:].copy() if keep else buffer[:0].copy(),
                                    int(run[-1] + 1), None if times is None else float(times[-1]))
        return Windows(windows, ends)

    def forget(self, key=None) -> None:
        """Drop what is carried for one series (``key``: its group value; None: the only one)."""
        self.tails.pop(key, None)


def group_rows(groups, n: int):
    """(group value, its rows' indices in arrival order) for each group among ``n`` rows; one
    group, None, without a group column."""
    if groups is None:
        yield None, np.arange(n)
        return
    groups = np.asarray(groups)
    try:
        keys, inverse = np.unique(groups, return_inverse=True)
    except TypeError:  # values of several types (ints in one file, text in another): compared as text
        keys, inverse = np.unique(groups.astype(str), return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    bounds = np.searchsorted(inverse[order], np.arange(len(keys) + 1))
    for g, key in enumerate(keys):
        yield plain(key), order[bounds[g]:bounds[g + 1]]


def plain(key):
    """A group value as a plain Python value (numpy scalars unwrapped), for keys and messages."""
    return key.item() if isinstance(key, np.generic) else key


def _show(value) -> str:
    return "?" if value is None else f"{value:g}"
