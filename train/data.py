"""Training data: split, preprocessing statistics, and the data fingerprint."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from aeserve.bundle import rows_sha256 as data_sha256  # the fingerprint lives in the core: calibrate checks it
from aeserve.errors import InputError
from aeserve.manifest import Preprocessing

__all__ = ["SCALINGS", "Split", "split_rows", "preprocessing_stats", "table_preprocessing", "data_sha256"]


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
        lo, hi = train.min(axis=0), train.max(axis=0)
        shift, scale, method = lo, hi - lo, "minmax"
    elif scaling == "robust":
        q1, median, q3 = np.percentile(train, [25, 50, 75], axis=0)
        shift, scale, method = median, (q3 - q1) / 1.349, "robust"
        scale = np.where(scale > 1e-12, scale, train.std(axis=0))
    else:
        shift, scale, method = train.mean(axis=0), train.std(axis=0), "standardize"
    scale = np.where(scale > 1e-12, scale, 1.0)
    return Preprocessing(method=method, shift=tuple(shift.astype(np.float32).tolist()),
                         scale=tuple(scale.astype(np.float32).tolist()), clip=cost == "bce",
                         formula="y_hat = (y - shift) / scale" + (", clipped to [0, 1]" if cost == "bce" else ""))


def table_preprocessing(train: np.ndarray, columns, scaling: str = "standard") -> Preprocessing:
    """Shift/scale of a mixed table's encoded rows (value_j, then missing_j, per column): numeric
    columns by ``scaling`` over their observed training cells; every other value 0 and 1 (slot
    indices, booleans and flags pass unscaled)."""
    n = len(columns)
    shift, scale = np.zeros(2 * n, np.float32), np.ones(2 * n, np.float32)
    for j, column in enumerate(columns):
        if column.type != "numeric":
            continue
        observed = train[train[:, n + j] == 0, j:j + 1]
        if len(observed):
            prep = preprocessing_stats(observed, "mse", scaling)
            shift[j], scale[j] = prep.shift[0], prep.scale[0]
    method = "robust" if scaling == "robust" else "standardize"
    return Preprocessing(method=method, shift=tuple(shift.tolist()), scale=tuple(scale.tolist()), clip=False,
                         formula="numeric columns: y_hat = (y - shift) / scale, 0 when missing; categorical "
                                 "columns one-hot; booleans and missing flags as they are")

