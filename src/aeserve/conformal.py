"""Conformal p-values of energies against a bundle's held-out validation energies, and the
Benjamini–Hochberg procedure over them (numpy only: the runtime needs neither torch nor scipy).

A bundle keeps the energies v_1..v_n of the validation rows it held out at training (rows the
fit never learned from; ``Bundle.held_out_energies``). For a new row of energy e,

    p(e) = (1 + #{i : v_i >= e}) / (n + 1)

is a conformal p-value: if the row is drawn like the validation rows (exchangeable with them),
P(p(e) <= a) <= a for every a. Flagging rows with p <= a bounds the false-positive rate by a;
flagging a set of m rows by Benjamini–Hochberg at level alpha (the largest k with
p_(k) <= alpha * k / m) bounds the expected share of false discoveries among the flagged by
alpha (conformal p-values are positively dependent, Bates et al., Ann. Statist. 2023).

p takes the n + 1 values (1 + c) / (n + 1), c = #{v_i >= e} = 0..n; every function here works
on these counts c, so a stream can run Benjamini–Hochberg from a histogram of n + 1 counts
(``ExceedanceHistogram``) in flat memory, with the same decisions as on all the p-values at once.
"""

from __future__ import annotations

import math

import numpy as np

from aeserve.errors import InputError

__all__ = ["exceed_counts", "p_values", "p_value_of_count", "conformal_threshold", "bh_count_cutoff",
           "benjamini_hochberg", "ExceedanceHistogram", "check_alpha"]


def check_alpha(alpha: float, what: str = "fdr") -> float:
    """``alpha`` as a float in (0, 1), or InputError naming ``what``."""
    alpha = float(alpha)
    if not 0.0 < alpha < 1.0:
        raise InputError(f"{what} must be between 0 and 1, got {alpha:g}")
    return alpha


def exceed_counts(reference: np.ndarray, energies: np.ndarray) -> np.ndarray:
    """c = #{v_i >= e} for each energy (n,) int64; ``reference`` is the validation energies
    sorted ascending. A NaN energy counts as exceeding every reference (c = 0, the smallest p)."""
    energies = np.asarray(energies, np.float64).reshape(-1)
    below = np.searchsorted(reference, energies, side="left")  # how many v_i < e
    counts = reference.size - below
    counts[np.isnan(energies)] = 0
    return counts.astype(np.int64)


def p_value_of_count(counts: np.ndarray | int, n_reference: int) -> np.ndarray:
    """p = (1 + c) / (n + 1), float64."""
    return (np.asarray(counts, np.float64) + 1.0) / (n_reference + 1.0)


def p_values(reference: np.ndarray, energies: np.ndarray) -> np.ndarray:
    """Conformal p-values (n,) float64 of ``energies`` against the sorted ``reference``."""
    return p_value_of_count(exceed_counts(reference, energies), reference.size)


def conformal_threshold(reference: np.ndarray, target_fpr: float) -> float:
    """The energy threshold t (anomaly: e > t) that flags exactly the rows with p <= target_fpr:
    the k-th smallest reference energy, k = n + 1 - floor(target_fpr * (n + 1)). A row drawn like
    the validation rows exceeds it with probability floor(target_fpr (n+1)) / (n+1) <= target_fpr.
    When target_fpr < 1 / (n + 1) no row can be flagged at that rate: InputError says how many
    held-out rows the target needs."""
    n = int(reference.size)
    allowed = math.floor(target_fpr * (n + 1) + 1e-9)  # c <= allowed - 1 is flagged
    if allowed < 1:
        raise InputError(f"a target false-positive rate of {target_fpr:g} needs at least "
                         f"{math.ceil(1 / target_fpr) - 1} held-out rows; this bundle holds {n} "
                         "(train on more rows, a larger --val-fraction, or use --method pot)")
    return float(reference[n - allowed])


def bh_count_cutoff(histogram: np.ndarray, alpha: float) -> int:
    """Benjamini–Hochberg on a histogram of counts (``histogram[c]`` rows with c = #{v_i >= e},
    c = 0..n): the largest c* with p(c*) <= alpha * R(c*) / m, R(c) = rows with count <= c and m
    all rows; rows with c <= c* are discoveries. -1 when there are none."""
    histogram = np.asarray(histogram, np.int64)
    m = int(histogram.sum())
    if m == 0:
        return -1
    n = histogram.size - 1
    rejected = np.cumsum(histogram)  # R(c)
    levels = np.arange(n + 1)
    ok = (levels + 1.0) * m <= alpha * rejected * (n + 1.0) * (1 + 1e-12)  # p(c) <= alpha R(c) / m, with room for rounding
    ok &= histogram > 0
    hits = np.flatnonzero(ok)
    return int(hits[-1]) if hits.size else -1


def benjamini_hochberg(reference: np.ndarray, energies: np.ndarray, alpha: float) -> np.ndarray:
    """Discoveries (n,) bool among ``energies`` by Benjamini–Hochberg at level ``alpha`` over
    their conformal p-values against the sorted ``reference``."""
    counts = exceed_counts(reference, energies)
    cutoff = bh_count_cutoff(np.bincount(counts, minlength=reference.size + 1), check_alpha(alpha))
    return counts <= cutoff


class ExceedanceHistogram:
    """The counts c of a stream's rows, gathered chunk by chunk (n + 1 integers whatever the
    stream's length), for one Benjamini–Hochberg decision over all of them at the end."""

    def __init__(self, reference: np.ndarray):
        self.reference = reference
        self.histogram = np.zeros(reference.size + 1, np.int64)

    def add(self, energies: np.ndarray) -> np.ndarray:
        """Count a chunk's rows; returns their counts c (n,) int64."""
        counts = exceed_counts(self.reference, energies)
        self.histogram += np.bincount(counts, minlength=self.histogram.size)
        return counts

    def cutoff(self, alpha: float) -> int:
        """``bh_count_cutoff`` over every row added so far."""
        return bh_count_cutoff(self.histogram, check_alpha(alpha))
