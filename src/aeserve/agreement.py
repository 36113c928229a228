"""How far a reduced precision's energies are from fp32: one rule for export and runtime.

int8, bf16 and fp16 energies depend on the kernels that compute them, and those depend on the
machine and on the batch: ONNX Runtime's dynamic int8 takes each activation's range from the
batch it is in, and on a CPU without VNNI its u8×s8 kernels for larger batches sum pairs of
products in 16 bits, which saturate unless the weights keep to 7 bits. So a reduced precision
is compared with fp32 on the rows a bundle keeps from validation, at every batch size scoring
uses (1, a mid size, the default batch, the file path's batch), and refused when at any of
them the median relative error exceeds the tolerance or Spearman's rank correlation falls
below the minimum: then it would change which rows are flagged. The export applies this rule
where it quantises; the runtime applies it again where it runs
(``aeserve.serve.backends.checked``).

numpy only; serve/ and export/ both use it.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from aeserve.batches import rows_per_call
from aeserve.evaluation import rank_correlation

__all__ = ["TOLERANCE", "MIN_RANK", "MID_BATCH", "SINGLE_ROWS", "check_rows",
           "scoring_batch_sizes", "energy_agreement", "agreement_by_batch", "worst_batch", "strayed"]

TOLERANCE = 0.05   # median relative error of the energy, at most
MIN_RANK = 0.999   # Spearman rank correlation with fp32, at least
MID_BATCH = 64     # a server's typical dynamic batch
SINGLE_ROWS = 256  # rows checked one at a time (batch 1 costs a call per row)


def check_rows(bundle) -> tuple[np.ndarray, str]:
    """Rows to compare a reduced precision with fp32 on, and what they are, for the record: the
    validation rows the bundle keeps (with its kept training rows when fewer than 32), else
    2048 rows drawn N(0, 1) in the preprocessed space."""
    kept = bundle.kept_rows()
    if kept is not None and len(kept[1]) >= 32:
        return kept[1], f"{len(kept[1])} validation rows kept in the bundle"
    if kept is not None and len(kept[0]) + len(kept[1]) >= 32:
        return np.concatenate(kept), f"{len(kept[0]) + len(kept[1])} training and validation rows kept in the bundle"
    return bundle.manifest.typical_rows(2048), "2048 rows drawn like the training data (N(0, 1) in the preprocessed space)"


def scoring_batch_sizes(default_batch: int) -> list[int]:
    """The batch sizes scoring runs a graph at: 1 (a lone request), 64 (a server's dynamic batch),
    ``default_batch`` (the API's), and the file path's (the multiple of it near 8192 rows)."""
    return sorted({1, MID_BATCH, default_batch, rows_per_call(default_batch)})


def energy_agreement(fp32: np.ndarray, reduced: np.ndarray) -> dict[str, float]:
    """How far reduced-precision energies are from fp32: median and p99 relative error,
    Spearman's rank correlation."""
    relative = np.abs(reduced - fp32) / np.maximum(np.abs(fp32), 1e-6)
    return {"energy_median_relative_error": float(np.median(relative)),
            "energy_p99_relative_error": float(np.quantile(relative, 0.99)),
            "energy_rank_agreement": rank_correlation(fp32, reduced)}


def _batched(run: Callable[[np.ndarray], np.ndarray], rows: np.ndarray, batch: int) -> np.ndarray:
    return np.concatenate([run(rows[i:i + batch]) for i in range(0, len(rows), batch)])


def agreement_by_batch(fp32: Callable[[np.ndarray], np.ndarray], reduced: Callable[[np.ndarray], np.ndarray],
                       rows: np.ndarray, batch_sizes: list[int]) -> dict[int, dict[str, float]]:
    """``energy_agreement`` at each batch size: ``fp32(rows)`` and ``reduced(rows)`` return the
    energies (n,) of a batch. The rows are repeated to fill the largest batch (kernels are chosen
    by batch size, so a big batch is checked as a big batch); batch 1 checks the first 256."""
    rows = np.ascontiguousarray(rows, np.float32)
    reference = _batched(fp32, rows, 1024)  # fp32 energies do not depend on the batch
    result = {}
    for batch in batch_sizes:
        count = min(len(rows), SINGLE_ROWS) if batch == 1 else max(len(rows), batch)
        picked = np.resize(rows, (count, rows.shape[1]))  # (count, width): the rows, repeated
        expected = np.resize(reference, count)
        result[batch] = energy_agreement(expected, _batched(reduced, picked, batch))
    return result


def worst_batch(by_batch: dict[int, dict[str, float]]) -> tuple[int, dict[str, float]]:
    """The batch size whose energies stray furthest (largest median relative error) and its errors."""
    batch = max(by_batch, key=lambda b: (by_batch[b]["energy_median_relative_error"],
                                         -by_batch[b]["energy_rank_agreement"]))
    return batch, by_batch[batch]


def strayed(by_batch: dict[int, dict[str, float]], tolerance: float = TOLERANCE,
            min_rank: float = MIN_RANK) -> str | None:
    """None when every batch size keeps within the rule; else what strayed worst, e.g. 'energies
    deviate from fp32 by 85.1% at batch 1024 (median relative error, tolerance 5%)'."""
    too_far = {b: e["energy_median_relative_error"] for b, e in by_batch.items()
               if not e["energy_median_relative_error"] <= tolerance}
    if too_far:
        batch = max(too_far, key=lambda b: np.nan_to_num(too_far[b], nan=np.inf))
        return (f"energies deviate from fp32 by {too_far[batch]:.1%} at batch {batch} "
                f"(median relative error, tolerance {tolerance:.0%})")
    misranked = {b: e["energy_rank_agreement"] for b, e in by_batch.items()
                 if not e["energy_rank_agreement"] >= min_rank}
    if misranked:
        batch = min(misranked, key=lambda b: np.nan_to_num(misranked[b], nan=-np.inf))
        return (f"energies rank rows differently from fp32 at batch {batch} "
                f"(Spearman {misranked[batch]:.5f}, at least {min_rank} needed)")
    return None
