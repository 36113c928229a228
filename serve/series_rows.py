"""A series bundle's file path: rows in, windows to the model, one output row per input row out.

``SeriesStage`` sits between the readers and the writer of ``aeserve.serve.stream``: it cuts
each chunk of rows into the windows that end at them (``aeserve.series.SeriesWindows``, which
carries each series' last W−1 rows across chunks and files), hands the windows to the verb's
function, and turns the per-window outputs back into per-row outputs, in input order. How a
row's score comes from the windows that cover it (``--window-score``):

- ``last`` (default): the window that ends at the row, so a row's score never waits for later
  rows. The first W−1 rows of a series end no window: their energy, terms and p_value are
  empty (NaN), anomaly 0 and ``windows`` 0.
- ``mean``: the mean over the (up to W) windows that contain the row, each term and the
  energy alike (so the terms still sum to the energy); p_value and anomaly from that mean.
  A row waits for the W−1 rows after it in its series (or the series' end).
- ``max``: the window with the highest energy among those that contain the row, with all of
  its outputs; ``--explain`` names that window's cells relative to the row (``temp@t+2``: two
  rows after it). Waits like ``mean``.

``windows`` (every output) says how many windows scored the row: 0 marks a row no window
covered. Rows are written in input order, so with ``mean`` or ``max`` a row of one group
waits for its W−1 successors while other groups' rows queue behind it: streams should use
``last``. numpy only.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Callable

import numpy as np

from aeserve.errors import InputError
from aeserve.kind_names import WINDOW_SCORES
from aeserve.manifest import WindowSpec
from aeserve.readers import Chunk
from aeserve.series import SeriesWindows, Windows, group_rows

__all__ = ["WINDOW_SCORES", "SeriesStage", "scatter"]

WINDOWS = "windows"  # the output column: how many windows scored the row


def _empty(values: np.ndarray, n: int) -> np.ndarray:
    """An output column of ``n`` rows none of which a window scored: NaN, 0 or None by dtype."""
    if values.dtype.kind == "f":
        return np.full(n, np.nan, values.dtype)
    if values.dtype.kind == "O":
        return np.full(n, None, object)
    return np.zeros(n, values.dtype)


def scatter(outputs: dict[str, np.ndarray], ends: np.ndarray, n: int) -> dict[str, np.ndarray]:
    """Per-window outputs (each (m,)) as per-row columns of ``n`` rows: row ``ends[i]`` gets
    window i's values, the others ``_empty``'s."""
    columns = {}
    for name, values in outputs.items():
        column = _empty(values, n)
        column[ends] = values
        columns[name] = column
    return columns


@dataclass
class _Block:
    """A chunk whose output rows are being filled: written once ``unresolved`` reaches 0."""

    chunk: Chunk
    columns: dict[str, np.ndarray]
    unresolved: int


@dataclass
class _Recent:
    """One series' last ≤ W−1 rows not yet final (``mean``/``max``): where each row's output
    goes, and the outputs of the window ending at each (``has``: whether one does)."""

    refs: list[tuple[_Block, int]]
    outputs: dict[str, np.ndarray]
    has: np.ndarray


class SeriesStage:
    """Rows of series in, per-row outputs out (see the module docstring). ``how``: last, mean or
    max; ``recompute``: called on the per-row columns after ``mean`` averaged them (p_value and
    anomaly follow the mean energy)."""

    def __init__(self, window: WindowSpec, how: str = "last",
                 recompute: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]] | None = None):
        if how not in WINDOW_SCORES:
            raise InputError(f"window score {how!r}: choose from {', '.join(WINDOW_SCORES)}")
        self.window, self.how, self.recompute = window, how, recompute
        self.cutter = SeriesWindows.of(window)
        #: the columns the readers carry for it: time, group
        self.keys = tuple(c for c in (window.time_column, window.group_column) if c)
        #: values per window, as the graphs take them
        self.width = window.size * len(window.channels)
        self._blocks: deque[_Block] = deque()
        self._recent: dict = {}

    # -- windows ------------------------------------------------------------------------
    def cut(self, chunk: Chunk) -> Windows:
        """The windows ending at the chunk's rows (the chunk's ``values`` are rows of channels)."""
        return self.cutter.push_chunk(chunk, self.window)

    # -- rows -----------------------------------------------------------------------------
    def rows(self, chunk: Chunk, windows: Windows, outputs: dict[str, np.ndarray]) -> list[tuple[Chunk, dict]]:
        """The chunks whose every row is now final, with their per-row columns, in input order."""
        n = len(chunk.values)
        columns = scatter(outputs, windows.ends, n)
        has = np.zeros(n, bool)
        has[windows.ends] = True
        if self.how == "last":
            columns[WINDOWS] = has.astype(np.uint8)
            return [(chunk, columns)]
        block = _Block(chunk, {name: _empty(values, n) for name, values in columns.items()}, n)
        block.columns[WINDOWS] = np.zeros(n, np.uint16)
        self._blocks.append(block)
        groups = chunk.keys[self.window.group_column] if self.window.group_column else None
        for key, members in group_rows(groups, n):
            self._aggregate(key, [(block, int(i)) for i in members], {k: v[members] for k, v in columns.items()},
                            has[members], final_tail=False)
        return self._ready()

    def finish(self) -> list[tuple[Chunk, dict]]:
        """Every row still waiting (its series ended with the input), final."""
        for key in list(self._recent):
            recent = self._recent[key]
            self._aggregate(key, [], {k: v[:0] for k, v in recent.outputs.items()}, recent.has[:0], final_tail=True)
        return self._ready()

    def _ready(self) -> list[tuple[Chunk, dict]]:
        done = []
        while self._blocks and self._blocks[0].unresolved == 0:
            block = self._blocks.popleft()
            done.append((block.chunk, self._recomputed(block.columns)))
        return done

    def _recomputed(self, columns: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.recompute(columns) if self.how == "mean" and self.recompute else columns

    def _aggregate(self, key, refs: list, outputs: dict[str, np.ndarray], has: np.ndarray, *, final_tail: bool) -> None:
        """Append one series' new rows to its recent rows and write every row that is final: the
        windows ending at it and at its W−1 successors have all been seen (or, ``final_tail``, the
        series ended)."""
        size = self.window.size
        recent = self._recent.pop(key, None)
        if recent is not None:
            refs = recent.refs + refs
            outputs = {k: np.concatenate([recent.outputs[k], v]) for k, v in outputs.items()}
            has = np.concatenate([recent.has, has])
        length = len(refs)
        ready = length if final_tail else max(0, length - (size - 1))
        if ready:
            # each final row j: the windows ending at rows j..j+W-1 (those past the end: none)
            padded_has = np.concatenate([has, np.zeros(size - 1, bool)])
            cover = np.lib.stride_tricks.sliding_window_view(padded_has, size)[:ready]  # (ready, W)
            values = self._combine(outputs, cover, size, ready)
            values[WINDOWS] = cover.sum(axis=1).astype(np.uint16)
            blocks: dict[int, tuple[_Block, list, list]] = {}
            for position, (block, index) in enumerate(refs[:ready]):
                blocks.setdefault(id(block), (block, [], []))
                blocks[id(block)][1].append(index)
                blocks[id(block)][2].append(position)
            for block, indices, positions in blocks.values():
                for name, column in values.items():
                    block.columns[name][indices] = column[positions]
                block.unresolved -= len(indices)
        if not final_tail and length > ready:
            self._recent[key] = _Recent(refs[ready:], {k: v[ready:] for k, v in outputs.items()}, has[ready:])

    def _combine(self, outputs: dict[str, np.ndarray], cover: np.ndarray, size: int, ready: int) -> dict:
        """Each final row's outputs from the windows that contain it: their mean, or the
        highest-energy one's."""
        pad = size - 1

        def windows_of(values: np.ndarray) -> np.ndarray:  # (ready, W) view: the windows ending at j..j+W-1
            padded = np.concatenate([values, _empty(values, pad)])
            return np.lib.stride_tricks.sliding_window_view(padded, size)[:ready]

        count = cover.sum(axis=1)
        if self.how == "mean":
            combined = {}
            for name, values in outputs.items():
                if values.dtype.kind == "O":
                    raise InputError("--window-score mean averages numbers; --explain needs last or max")
                if values.dtype.kind != "f":
                    combined[name] = windows_of(values)[np.arange(ready), 0]  # recomputed after (anomaly)
                    continue
                sums = np.where(cover, windows_of(values), 0.0).sum(axis=1)
                with np.errstate(invalid="ignore", divide="ignore"):
                    combined[name] = np.where(count > 0, sums / np.maximum(count, 1), np.nan).astype(values.dtype)
            return combined
        energy = np.where(cover, windows_of(outputs["energy"].astype(np.float64)), -np.inf)
        offset = np.argmax(energy, axis=1)  # which of the windows ending at j..j+W-1
        combined = {}
        for name, values in outputs.items():
            picked = windows_of(values)[np.arange(ready), offset]
            combined[name] = np.where(count > 0, picked, _empty(values, ready)) if values.dtype.kind != "O" \
                else np.where(count > 0, picked, None)
            if name.startswith("feature_") and values.dtype.kind == "O":
                combined[name] = np.array([_relative(cell, int(k)) for cell, k in zip(combined[name], offset)],
                                          dtype=object)
        return combined

    def probe(self, outputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The per-row columns of no row, from one window's outputs (a file with no row)."""
        return {**{k: np.asarray(v)[:0] for k, v in outputs.items()}, WINDOWS: np.zeros(0, np.uint8)}


def _relative(cell, ahead: int):
    """A cell name of the window ending ``ahead`` rows after the scored row, relative to that row:
    'temp@t-3' two rows ahead is 'temp@t-1'; 'temp@t' is 'temp@t+2'."""
    if cell is None or not ahead:
        return cell
    channel, _, lag = str(cell).rpartition("@t")
    shift = (int(lag) if lag else 0) + ahead  # lag is '-3' or ''
    return f"{channel}@t{shift:+d}" if shift else f"{channel}@t"
