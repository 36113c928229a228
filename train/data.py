"""Training data: split, preprocessing statistics, and the data fingerprint."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from aeserve.bundle import rows_sha256 as data_sha256  # the fingerprint lives in the core: calibrate checks it
from aeserve.errors import InputError
from aeserve.manifest import Preprocessing
from aeserve.transforms import signed_log

__all__ = ["SCALINGS", "Split", "split_rows", "split_windows", "preprocessing_stats", "table_preprocessing",
           "window_preprocessing", "scaled_preprocessing", "mixed_preprocessing",
           "data_sha256"]


@dataclass
class Split:
    """Row indices of the training and validation parts."""

    train: np.ndarray  # (n_train,) int
    val: np.ndarray    # (n_val,) int


def split_rows(n_rows: int, val_fraction: float, seed: int) -> Split:
    """Shuffle rows with ``seed`` and hold out ``val_fraction`` of them (at least 1 each)."""
    if not 0.0 < val_fraction < 1.0:
        raise InputError(f"val_fraction must be in (0, 1), got {val_fraction}")
    n_val = max(1, int(round(n_rows * val_fraction)))
    if n_rows - n_val < 2:
        raise InputError(f"need at least 3 rows to train with a validation split, got {n_rows}")
    order = np.random.default_rng(seed).permutation(n_rows)
    return Split(train=np.sort(order[n_val:]), val=np.sort(order[:n_val]))


def split_windows(ends: np.ndarray, series: np.ndarray, size: int, val_fraction: float, seed: int) -> Split:
    """Hold out ``val_fraction`` of a series' windows in whole blocks of consecutive windows (drawn
    with ``seed``), and leave out of training every window that shares a row with a held-out one
    (its end less than ``size`` rows from a held-out window's end, in the same series): windows
    that overlap score alike, so a random split would hold out near-copies of training windows and
    make the held-out energies (threshold, p-values) too low. ``ends``: each window's last row (in
    the sorted rows), ``series``: its series."""
    if not 0.0 < val_fraction < 1.0:
        raise InputError(f"val_fraction must be in (0, 1), got {val_fraction}")
    n = len(ends)
    block = max(2 * size, n // 50, 1)  # at least 50 blocks when there are windows enough
    # block ids: consecutive windows of one series, a new block at each series' start
    starts = np.flatnonzero(np.diff(series, prepend=series[0] - 1) != 0)
    position = np.arange(n) - np.repeat(starts, np.diff(np.append(starts, n)))
    block_id = np.unique(np.stack([series, position // block], axis=1), axis=0, return_inverse=True)[1].ravel()
    blocks = int(block_id.max()) + 1
    n_val = min(max(1, int(round(blocks * val_fraction))), blocks - 1) if blocks > 1 else 0
    if n_val == 0:
        raise InputError(f"the series give {n} windows in one block; need more rows (or a smaller --window) to hold "
                         "out validation windows that share no row with training ones")
    held = np.zeros(blocks, bool)
    held[np.random.default_rng(seed).permutation(blocks)[:n_val]] = True
    val = held[block_id]
    near = np.zeros(n, bool)
    for s in np.unique(series[val]):  # training windows overlapping a held-out one of the same series
        mine = series == s
        held_ends = np.sort(ends[mine & val])
        at = np.searchsorted(held_ends, ends[mine])
        before = np.abs(ends[mine] - held_ends[np.clip(at - 1, 0, len(held_ends) - 1)])
        after = np.abs(held_ends[np.clip(at, 0, len(held_ends) - 1)] - ends[mine])
        near[np.flatnonzero(mine)] = np.minimum(before, after) < size
    train = np.flatnonzero(~val & ~near)
    if len(train) < 2:
        raise InputError(f"the series give {n} windows, too few to train on once validation windows and their "
                         "overlaps are held out: give more rows, a smaller --window or a smaller --val-fraction")
    return Split(train=train, val=np.flatnonzero(val))


#: how ``preprocessing_stats`` scales features for the mse cost
SCALINGS = ("standard", "robust")


def preprocessing_stats(train: np.ndarray, cost: str, scaling: str = "standard") -> Preprocessing:
    """Per-feature shift/scale from training rows: [0, 1] for bce; for mse, ``standard`` (mean and
    standard deviation) or ``robust`` (median and IQR / 1.349, the standard deviation of a normal
    distribution with that IQR, so a few anomalies in the training rows do not stretch the scale;
    a feature whose IQR is 0 falls back to its standard deviation).

    Constant features get scale 1 so they never divide by zero.
    """
    if scaling not in SCALINGS:
        raise InputError(f"unknown scaling {scaling!r}; choose from {', '.join(SCALINGS)}")
    if cost == "bce":
        return scaled_preprocessing(train.min(axis=0), train.max(axis=0) - train.min(axis=0), "minmax", cost)
    if scaling == "robust":
        q1, median, q3 = np.percentile(train, [25, 50, 75], axis=0)
        scale = (q3 - q1) / 1.349
        return scaled_preprocessing(median, np.where(scale > 1e-12, scale, train.std(axis=0)), "robust", cost)
    return scaled_preprocessing(train.mean(axis=0), train.std(axis=0), "standardize", cost)


def scaled_preprocessing(shift: np.ndarray, scale: np.ndarray, method: str, cost: str) -> Preprocessing:
    """The manifest's record of y_hat = (y - shift) / scale (clipped to [0, 1] for bce); a scale
    of 0 (a constant feature) becomes 1 so it never divides by zero."""
    scale = np.where(np.asarray(scale) > 1e-12, scale, 1.0)
    return Preprocessing(method=method, shift=tuple(np.asarray(shift).astype(np.float32).tolist()),
                         scale=tuple(scale.astype(np.float32).tolist()), clip=cost == "bce",
                         formula="y_hat = (y - shift) / scale" + (", clipped to [0, 1]" if cost == "bce" else ""))


def window_preprocessing(train: np.ndarray, channels: int, size: int, cost: str,
                         scaling: str = "standard") -> Preprocessing:
    """Shift/scale of windows (rows, channels x size, channel-major) per channel, the same at every
    lag (``preprocessing_stats`` of the channels' values in the training windows, repeated ``size``
    times), so that a value is scaled alike wherever it falls in a window."""
    cells = np.ascontiguousarray(train.reshape(len(train), channels, size).transpose(0, 2, 1)).reshape(-1, channels)
    prep = preprocessing_stats(cells, cost, scaling)
    return Preprocessing(method=prep.method, shift=tuple(np.repeat(prep.shift, size).tolist()),
                         scale=tuple(np.repeat(prep.scale, size).tolist()), clip=prep.clip,
                         formula=prep.formula + "; per channel, the same at every lag of the window")


def table_preprocessing(train: np.ndarray, columns, scaling: str = "standard") -> Preprocessing:
    """Shift/scale of a mixed table's encoded rows (value_j, then missing_j, per column): numeric
    columns by ``scaling`` over their observed training cells (through the signed log for a
    column with ``transform == "log"``); every other value 0 and 1 (slot
    indices, booleans and flags pass unscaled)."""
    n = len(columns)
    stats = {}
    for j, column in enumerate(columns):
        if column.type != "numeric":
            continue
        observed = train[train[:, n + j] == 0, j:j + 1]
        if column.transform == "log":  # the statistics of the values the graphs standardise
            observed = signed_log(observed.astype(np.float64)).astype(np.float32)
        if len(observed):
            prep = preprocessing_stats(observed, "mse", scaling)
            stats[j] = (prep.shift[0], prep.scale[0])
    return mixed_preprocessing(n, stats, scaling)


def mixed_preprocessing(n_columns: int, stats: dict[int, tuple[float, float]], scaling: str = "standard"
                        ) -> Preprocessing:
    """The record of a mixed table's preprocessing: ``stats`` maps a numeric column's index to
    its (shift, scale); every other value of the 2 x ``n_columns`` encoded ones passes as it is."""
    shift, scale = np.zeros(2 * n_columns, np.float32), np.ones(2 * n_columns, np.float32)
    for j, (column_shift, column_scale) in stats.items():
        shift[j], scale[j] = column_shift, column_scale
    method = "robust" if scaling == "robust" else "standardize"
    return Preprocessing(method=method, shift=tuple(shift.tolist()), scale=tuple(scale.tolist()), clip=False,
                         formula="numeric columns: y_hat = (y - shift) / scale (y read as sign(y)*log(1 + |y|) "
                                 "for a column whose transform is log), 0 when missing; categorical "
                                 "columns one-hot; booleans and missing flags as they are")
