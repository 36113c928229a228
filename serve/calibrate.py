"""Calibrate a bundle's threshold on scored rows and write it into the bundle, without torch."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np

from aeserve.bundle import sha256_file
from aeserve.errors import InputError
from aeserve.manifest import Threshold
from aeserve.readers import CheckedRows
from aeserve.serve.model import load
from aeserve.tables import read_table
from aeserve.thresholds import METHODS, f1_threshold, pot_threshold, quantile_threshold, rates

__all__ = ["calibrate_bundle"]


def calibrate_bundle(path: str | os.PathLike, data: str | os.PathLike, *, method: str = "quantile",
                     target_fpr: float = 0.01, labels: str | None = None, backend: str = "auto") -> Threshold:
    """Score ``data`` with the bundle at ``path``, choose a threshold by ``method`` and write it,
    with its provenance (method, target, data file and hash, rows, realised FPR and recall on
    them), into the bundle's manifest atomically. ``labels`` names a 0/1 column (1 = anomaly):
    ``quantile`` and ``pot`` then use the normal rows only, and ``f1`` needs it."""
    if method not in METHODS:
        raise InputError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
    if method == "f1" and labels is None:
        raise InputError("the f1 method needs labels: name the 0/1 column (1 = anomaly)")
    model = load(path, backend=backend)
    if labels is None or model.encoding is not None:
        rows = read_table(data, expect=model.features, encoding=model.encoding).values
        truth = read_table(data, columns=[labels]).values[:, 0] if labels is not None else None
    else:
        table = read_table(data, columns=[*model.features, labels])  # one read: the features, then the labels
        rows, truth = table.values[:, :len(model.features)], table.values[:, -1]
    if labels is not None:
        bad = ~np.isin(truth, (0, 1))
        if bad.any():
            raise InputError(f"{data}: row {int(np.argmax(bad)) + 1}, column {labels!r}: expected 0 (normal) or "
                             f"1 (anomaly), got {truth[bad][0]:g}")
    energies = model.energy(CheckedRows(rows))["energy"].astype(np.float64)  # checked by the reader
    normal = energies if truth is None else energies[truth == 0]
    if method == "f1":
        threshold = f1_threshold(energies, truth)
    elif normal.size == 0:
        raise InputError(f"{data}: no normal rows (label 0) to calibrate a false-positive rate on")
    else:
        threshold = (quantile_threshold if method == "quantile" else pot_threshold)(normal, target_fpr)
    provenance = {**threshold.provenance, "data": Path(data).name, "data_sha256": sha256_file(data),
                  **({"labels": labels} if labels else {}), **rates(energies, truth, threshold.value)}
    threshold = dataclasses.replace(threshold, provenance=provenance)
    model.bundle.write(dataclasses.replace(model.bundle.manifest, threshold=threshold))
    return threshold
