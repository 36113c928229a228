"""Calibrate a bundle's threshold on scored rows and write it into the bundle, without torch."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np

from aeserve.bundle import Bundle, rows_sha256, sha256_file
from aeserve.conformal import conformal_threshold
from aeserve.errors import InputError
from aeserve.manifest import Threshold
from aeserve.readers import CheckedRows
from aeserve.serve.model import load
from aeserve.tables import read_model_rows, read_table
from aeserve.thresholds import METHODS, f1_threshold, pot_threshold, quantile_threshold, rates

__all__ = ["calibrate_bundle", "refuse_training_rows"]


def calibrate_bundle(path: str | os.PathLike, data: str | os.PathLike | None = None, *, method: str = "quantile",
                     target_fpr: float = 0.01, labels: str | None = None, backend: str = "auto") -> Threshold:
    """Choose a threshold by ``method`` and write it, with its provenance (method, target, data
    file and hash, rows, realised FPR and recall on them), into the bundle's manifest atomically.

    Without ``data``, on the energies of the validation rows the bundle held out at training
    (``quantile`` then flags exactly the rows whose conformal p-value is at most the target, see
    ``aeserve.conformal.conformal_threshold``). With ``data``: its rows are scored; the training
    data itself is refused (training rows score lower than rows the model never saw, so a
    threshold set on them flags more than the target). ``labels`` names a 0/1 column
    (1 = anomaly): ``quantile`` and ``pot`` then use the normal rows only, and ``f1`` needs it."""
    if method not in METHODS:
        raise InputError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
    if method == "f1" and labels is None:
        raise InputError("the f1 method needs labels: name the 0/1 column (1 = anomaly)")
    if data is None:
        return _calibrate_on_held_out(path, method, target_fpr, labels)
    model = load(path, backend=backend)
    if labels is None or model.encoding is not None or model.window is not None:
        # the graphs' rows (a series' windows, labels at the rows they end at)
        rows, truth = read_model_rows(data, model.bundle.manifest.input, labels)
    else:
        table = read_table(data, columns=[*model.features, labels])  # one read: the features, then the labels
        rows, truth = table.values[:, :len(model.features)], table.values[:, -1]
    refuse_training_rows(model.bundle, rows, data)
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
    return _write(model.bundle, dataclasses.replace(threshold, provenance=provenance))


def _write(bundle: Bundle, threshold: Threshold) -> Threshold:
    bundle.write(dataclasses.replace(bundle.manifest, threshold=threshold))
    return threshold


def _calibrate_on_held_out(path, method: str, target_fpr: float, labels: str | None) -> Threshold:
    """The threshold from the held-out validation energies the bundle keeps."""
    if labels is not None:
        raise InputError("--labels names a column of DATA; without DATA the bundle's held-out validation rows "
                         "are used, all normal")
    bundle = Bundle.open(path)
    reference = bundle.held_out_energies()
    if reference is None:
        raise InputError(f"{path}: this bundle keeps no held-out validation energies (it was trained before "
                         "bundles kept them): give DATA, rows the model was not trained on, or retrain it")
    if method == "quantile":
        threshold = Threshold(value=conformal_threshold(reference, target_fpr), method="quantile",
                              provenance={"target_fpr": target_fpr, "rows": int(reference.size)})
    else:
        threshold = pot_threshold(reference, target_fpr)
    provenance = {**threshold.provenance, "data": "the training hold-out", **rates(reference, None, threshold.value)}
    return _write(bundle, dataclasses.replace(threshold, provenance=provenance))


#: refuse DATA when at least this share of its rows is estimated to be rows the model trained on
TRAINING_SHARE_REFUSED = 0.1


def refuse_training_rows(bundle: Bundle, rows: np.ndarray, data) -> None:
    """InputError when ``rows`` are the training data (its fingerprint, ``training.data.sha256``)
    or hold many of its rows: of the training rows the bundle keeps (``rows.safetensors``), the
    share found in ``rows``, less the share expected by chance (``rows``' own duplicate rate),
    estimates how many training rows they hold."""
    record = bundle.manifest.training.data if bundle.manifest.training else None
    if record is None:
        return
    advice = (f"training rows score lower than rows the model never saw, so a threshold set on them flags far "
              f"more than the target. Calibrate on the {record.val_rows} rows held out at training: aeserve "
              f"calibrate {bundle.path} (no DATA); or give rows the model was not trained on")
    if rows.shape == (record.rows, bundle.n_features) and rows_sha256(rows) == record.sha256:
        raise InputError(f"{data}: this is the data {bundle.path} was trained on ({record.source}, same "
                         f"fingerprint); {advice}")
    kept = bundle.kept_rows()
    if kept is None or not len(kept[0]) or not len(rows):
        return
    hashes = _row_hashes(rows)
    found = np.isin(_row_hashes(kept[0]), hashes).mean()
    # rows drawn like the training rows meet some of them by chance where a table holds few
    # distinct rows; that rate is the share of DATA's rows that occur in it more than once
    _, inverse, counts = np.unique(hashes, return_inverse=True, return_counts=True)
    chance = float((counts[inverse] > 1).mean())
    share = min(1.0, max(0.0, found - chance) * record.train_rows / len(rows))
    if share >= TRAINING_SHARE_REFUSED:
        raise InputError(f"{data}: about {share:.0%} of its rows are rows {bundle.path} was trained on "
                         f"({found:.0%} of the {len(kept[0])} training rows it keeps are among them, "
                         f"{chance:.0%} would be by chance); {advice}")


def _row_hashes(rows: np.ndarray) -> np.ndarray:
    """A 64-bit hash of each float32 row's bits (n,) uint64: equal rows, equal hashes."""
    bits = np.ascontiguousarray(rows, np.float32).view(np.uint32).astype(np.uint64)  # (n, width)
    weights = np.random.default_rng(0x5EED).integers(1, 2**63, size=bits.shape[1], dtype=np.uint64) | np.uint64(1)
    with np.errstate(over="ignore"):
        return (bits * weights).sum(axis=1, dtype=np.uint64) ^ (bits[:, ::-1] * weights).sum(axis=1, dtype=np.uint64)
