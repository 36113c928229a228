"""Detection quality from energies and labels (1 = anomaly): AUROC, ROC and PR curves.

numpy only, so the runtime, the demo and the reports share one definition.
"""

from __future__ import annotations

import numpy as np

__all__ = ["auroc", "roc_curve", "pr_curve", "average_precision", "rates_at", "rank_correlation"]


def auroc(normal: np.ndarray, anomalous: np.ndarray) -> float:
    """P(energy of an anomaly > energy of a normal row), ties counted half (Mann-Whitney U)."""
    normal = np.sort(np.asarray(normal, dtype=np.float64))
    anomalous = np.asarray(anomalous, dtype=np.float64)
    below = np.searchsorted(normal, anomalous, side="left")
    not_above = np.searchsorted(normal, anomalous, side="right")
    return float((below + 0.5 * (not_above - below)).sum() / (normal.size * anomalous.size))


def _sorted_counts(scores: np.ndarray, labels: np.ndarray):
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="mergesort")
    scores, labels = np.asarray(scores)[order], np.asarray(labels)[order].astype(bool)
    last_of_tie = np.r_[np.flatnonzero(np.diff(scores)), scores.size - 1]
    true_pos = np.cumsum(labels)[last_of_tie]
    false_pos = (last_of_tie + 1) - true_pos
    return true_pos, false_pos, scores[last_of_tie]


def roc_curve(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(false-positive rate, true-positive rate, thresholds), from the strictest threshold down."""
    tp, fp, thresholds = _sorted_counts(scores, labels)
    positives, negatives = max(tp[-1], 1), max(fp[-1], 1)
    return np.r_[0.0, fp / negatives], np.r_[0.0, tp / positives], np.r_[np.inf, thresholds]


def pr_curve(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(recall, precision) from the strictest threshold down."""
    tp, fp, _ = _sorted_counts(scores, labels)
    return tp / max(tp[-1], 1), tp / (tp + fp)


def average_precision(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the PR curve as Σ (Rₙ − Rₙ₋₁) Pₙ."""
    recall, precision = pr_curve(scores, labels)
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def rates_at(scores: np.ndarray, labels: np.ndarray, threshold: float) -> dict[str, float]:
    """False-positive and true-positive rates of the rule energy > threshold."""
    labels = np.asarray(labels).astype(bool)
    flagged = np.asarray(scores) > threshold
    return {"false_positive_rate": float(flagged[~labels].mean()) if (~labels).any() else float("nan"),
            "true_positive_rate": float(flagged[labels].mean()) if labels.any() else float("nan")}


def rank_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation of two score vectors (Pearson's on their ranks; ties broken
    by position); 0 when either is constant."""
    if len(a) < 2:
        return 1.0
    ranks = [np.argsort(np.argsort(x, kind="stable"), kind="stable").astype(np.float64) for x in (a, b)]
    value = np.corrcoef(*ranks)[0, 1]
    return float(value) if np.isfinite(value) else 0.0
