"""Conformal p-values and Benjamini–Hochberg (src/aeserve/conformal.py), checked against
hand computations and a direct implementation of the textbook procedure."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aeserve.conformal import (
    ExceedanceHistogram,
    benjamini_hochberg,
    conformal_threshold,
    exceed_counts,
    p_values,
)
from aeserve.errors import InputError


def textbook_bh(p: np.ndarray, alpha: float) -> np.ndarray:
    """Benjamini–Hochberg as written: sort, find the largest k with p_(k) <= alpha k / m, reject p <= p_(k)."""
    m = p.size
    order = np.sort(p)
    passing = np.flatnonzero(order <= alpha * np.arange(1, m + 1) / m)
    return p <= order[passing[-1]] if passing.size else np.zeros(m, bool)


def test_p_values_by_hand():
    reference = np.array([1.0, 2.0, 2.0, 5.0])  # n = 4
    # e = 0: all 4 are >= it -> (1 + 4) / 5; e = 2: three (2, 2, 5); e = 3: one; e = 9: none; NaN: the smallest p
    got = p_values(reference, np.array([0.0, 2.0, 3.0, 9.0, np.nan]))
    np.testing.assert_allclose(got, [5 / 5, 4 / 5, 2 / 5, 1 / 5, 1 / 5])
    np.testing.assert_array_equal(exceed_counts(reference, np.array([2.0])), [3])


def test_p_values_of_rows_like_the_reference_are_uniform():
    """Marginally (over draws of the reference), p takes the values k / (n + 1) with equal
    probability: P(p <= a) = floor(a (n + 1)) / (n + 1) <= a. 400 references of 99 rows, 100 rows
    each: the pooled CDF sits within sampling error of that at every level."""
    rng = np.random.default_rng(0)
    p = np.concatenate([p_values(np.sort(rng.gamma(2.0, size=99)), rng.gamma(2.0, size=100)) for _ in range(400)])
    levels = np.arange(1, 101) / 100
    ecdf = (p[:, None] <= levels + 1e-12).mean(axis=0)
    assert np.abs(ecdf - levels).max() < 0.02  # about 4 standard errors of 40k rows drawn in 400 groups
    assert (ecdf <= levels + 0.02).all()


def test_conformal_threshold_flags_exactly_the_rows_with_p_at_most_the_target():
    rng = np.random.default_rng(1)
    reference = np.sort(rng.normal(size=199))
    energies = rng.normal(size=5000)
    for target in (0.01, 0.05, 0.1, 0.5):
        t = conformal_threshold(reference, target)
        np.testing.assert_array_equal(energies > t, p_values(reference, energies) <= target)
    with pytest.raises(InputError, match="needs at least 999 held-out rows"):
        conformal_threshold(reference, 0.001)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(-5, 5, allow_nan=False), min_size=1, max_size=40),
       st.lists(st.floats(-8, 8, allow_nan=False), min_size=1, max_size=120),
       st.sampled_from([0.01, 0.05, 0.1, 0.2, 0.5]))
def test_benjamini_hochberg_matches_the_textbook_and_streams_in_chunks(reference, energies, alpha):
    reference, energies = np.sort(np.array(reference)), np.array(energies)
    p = p_values(reference, energies)
    found = benjamini_hochberg(reference, energies, alpha)
    np.testing.assert_array_equal(found, textbook_bh(p, alpha))
    stream = ExceedanceHistogram(reference)  # the same rows in chunks of 7: the same decisions
    counts = np.concatenate([stream.add(energies[i:i + 7]) for i in range(0, energies.size, 7)])
    np.testing.assert_array_equal(counts <= stream.cutoff(alpha), found)


def test_benjamini_hochberg_keeps_the_false_discovery_rate():
    """Null rows drawn like the reference and clear anomalies: the realised FDR, averaged over
    200 draws, stays under alpha, and most anomalies are found."""
    rng = np.random.default_rng(2)
    fdp, power = [], []
    for _ in range(200):
        reference = np.sort(rng.normal(size=500))
        energies = np.r_[rng.normal(size=180), rng.normal(4.0, 1.0, size=20)]
        found = benjamini_hochberg(reference, energies, 0.1)
        fdp.append(found[:180].sum() / max(found.sum(), 1))
        power.append(found[180:].mean())
    assert np.mean(fdp) <= 0.1 and np.mean(power) > 0.5
