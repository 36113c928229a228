"""Exact per-feature explanations: C is a sum over features, so each feature's term is its share."""

from __future__ import annotations

import numpy as np
import pyarrow.csv as pacsv
import pytest

import aeserve

from conftest import KINDS, run_cli


@pytest.mark.parametrize("kind", KINDS)
def test_contributions_are_each_features_term_of_the_reconstruction_cost(bundles, cancer, kind):
    model = aeserve.load(bundles[kind])
    rows = np.concatenate([cancer["test_normal"][:50], cancer["anomalies"][:50]])
    result = model.explain(rows)
    contributions = result["contributions"]  # (rows, features)
    assert contributions.shape == rows.shape and (contributions >= 0).all()
    np.testing.assert_allclose(contributions.sum(axis=1), result["reconstruction"], rtol=1e-5)
    # by hand from the seed's C = sum_i ((y_i - ỹ_i) / scale_i)^2 in the model's standardised space,
    # with ỹ from the decoder graph at the code the energy is taken at (z, μ or ž)
    scale = np.asarray(model.bundle.manifest.preprocessing.scale, np.float64)
    by_hand = ((rows - model.reconstruct(rows).astype(np.float64)) / scale) ** 2
    np.testing.assert_allclose(contributions, by_hand, rtol=2e-3, atol=1e-4 * by_hand.max())
    np.testing.assert_array_equal(result["energy"], model.energy(rows)["energy"])


@pytest.mark.parametrize("kind", KINDS)
def test_an_out_of_range_feature_ranks_first(bundles, cancer, kind):
    model = aeserve.load(bundles[kind])
    rng = np.random.default_rng(1)
    rows = cancer["test_normal"].copy()  # real rows the model has not seen
    low, high = cancer["train"].min(axis=0), cancer["train"].max(axis=0)
    broken = rng.integers(0, rows.shape[1], len(rows))
    rows[np.arange(len(rows)), broken] = high[broken] + 3.0 * (high[broken] - low[broken])
    top = model.explain(rows, k=3)["top_features"]
    first = np.asarray([model.features.index(name) for name in top[:, 0]])
    assert np.mean(first == broken) >= 0.95


def test_score_explain_adds_feature_and_share_columns(bundles, cancer, tmp_path):
    from aeserve.tables import write_table

    names = aeserve.load(bundles["vae"]).features
    write_table(tmp_path / "rows.csv", {n: cancer["anomalies"][:20, i] for i, n in enumerate(names)})
    result = run_cli("score", bundles["vae"], tmp_path / "rows.csv", "--explain", "2", "-o", tmp_path / "out.csv")
    assert result.returncode == 0, result.stderr
    table = pacsv.read_csv(tmp_path / "out.csv").to_pydict()
    assert {"feature_1", "share_1", "feature_2", "share_2"} <= set(table)
    assert set(table["feature_1"]) <= set(names)
    shares = np.c_[table["share_1"], table["share_2"]]
    assert ((0 <= shares) & (shares <= 1)).all() and (shares[:, 0] >= shares[:, 1]).all()
    refused = run_cli("score", bundles["vae"], tmp_path / "rows.csv", "--explain", "2", "-o", tmp_path / "out.npy")
    assert refused.returncode == 2 and "use .csv or .parquet" in refused.stderr and "Traceback" not in refused.stderr
