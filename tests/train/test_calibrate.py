"""Thresholds: quantile at a target FPR, F1 with labels, peaks-over-threshold; written into bundles."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest

import aeserve
from aeserve.bundle import Bundle, sha256_file
from aeserve.errors import InputError
from aeserve.thresholds import f1_threshold, fit_gpd, pot_threshold, quantile_threshold

from conftest import run_cli


@pytest.mark.parametrize("xi, sigma", [(0.3, 2.0), (-0.2, 1.0), (0.0, 1.5)])
def test_gpd_fit_recovers_the_parameters(xi, sigma):
    u = np.random.default_rng(0).random(20000)
    y = -sigma * np.log(u) if xi == 0 else sigma / xi * (u ** -xi - 1)  # inverse of the GPD survival
    got_xi, got_sigma = fit_gpd(y)
    assert abs(got_xi - xi) < 0.03 and abs(got_sigma / sigma - 1) < 0.04


def test_pot_resolves_rare_targets_better_than_a_quantile():
    """Log-normal energies, 500 rows, target 1e-3: compare the realised tail probability."""
    def tail(value: float) -> float:  # P(E > value) for E = exp(0.8 N(0, 1))
        return 0.5 * math.erfc(math.log(value) / 0.8 / math.sqrt(2))

    errors = {"quantile": [], "pot": []}
    for seed in range(60):
        energies = np.exp(0.8 * np.random.default_rng(seed).standard_normal(500))
        errors["quantile"].append(abs(math.log(tail(quantile_threshold(energies, 1e-3).value) / 1e-3)))
        errors["pot"].append(abs(math.log(tail(pot_threshold(energies, 1e-3).value) / 1e-3)))
    assert np.median(errors["pot"]) < np.median(errors["quantile"])


def test_f1_picks_the_best_split_and_refuses_one_class():
    energies = np.r_[np.arange(10.0), np.arange(20.0, 25.0)]
    labels = np.r_[np.zeros(10), np.ones(5)]
    threshold = f1_threshold(energies, labels)
    assert 9 < threshold.value < 20 and threshold.provenance["f1"] == 1.0
    with pytest.raises(InputError, match="needs labels of both classes"):
        f1_threshold(energies, np.zeros(15))


def test_calibrate_writes_the_threshold_and_its_provenance(bundles, cancer, tmp_path):
    from aeserve.tables import write_table

    bundle = tmp_path / "vae"
    shutil.copytree(bundles["vae"], bundle)
    names = aeserve.load(bundle).features
    rows = np.concatenate([cancer["test_normal"], cancer["anomalies"]])
    label = np.r_[np.zeros(len(cancer["test_normal"])), np.ones(len(cancer["anomalies"]))]
    data = tmp_path / "val.csv"
    write_table(data, {**{n: rows[:, i] for i, n in enumerate(names)}, "label": label})
    result = run_cli("calibrate", bundle, data, "--labels", "label", "--method", "quantile", "--target-fpr", "0.05")
    assert result.returncode == 0, result.stderr
    manifest = Bundle.open(bundle).manifest  # verifies every file's sha256 against the new manifest
    p = manifest.threshold.provenance
    assert manifest.threshold.method == "quantile" and p["target_fpr"] == 0.05 and p["rows"] == 100
    assert p["data"] == "val.csv" and p["data_sha256"] == sha256_file(data) and p["labels"] == "label"
    model = aeserve.load(bundle)
    flagged = model.score(rows)["anomaly"]
    assert model.threshold == manifest.threshold.value
    assert flagged[label == 0].mean() == pytest.approx(p["realised_fpr"]) and p["realised_fpr"] <= 0.05
    assert flagged[label == 1].mean() == pytest.approx(p["recall"]) and p["recall"] > 0.5
    info = run_cli("info", bundle)
    assert "quantile at target FPR 0.05 on 100 rows of val.csv" in info.stdout.replace("\n", " ").replace("│", "")
    assert json.loads(run_cli("info", bundle, "--json").stdout)["threshold"]["method"] == "quantile"
    result = run_cli("calibrate", bundle, data, "--labels", "label", "--method", "f1")
    assert result.returncode == 0 and Bundle.open(bundle).manifest.threshold.method == "f1"
    write_table(tmp_path / "normal.csv", {**{n: rows[:100, i] for i, n in enumerate(names)}, "label": label[:100]})
    refused = run_cli("calibrate", bundle, tmp_path / "normal.csv", "--labels", "label", "--method", "f1")
    assert refused.returncode == 2 and "both classes" in refused.stderr and "Traceback" not in refused.stderr
    assert Bundle.open(bundle).manifest.threshold.method == "f1"  # the refused run changed nothing


def test_calibrate_without_data_uses_the_held_out_rows_and_refuses_the_training_data(bundles, cancer, tmp_path):
    """No DATA: the threshold is the conformal quantile of the held-out validation energies the
    bundle keeps (it flags exactly the rows whose p-value is at most the target). The training
    file itself, or a part of it, is refused in one line that says what to do instead."""
    from aeserve.conformal import conformal_threshold, p_values
    from aeserve.tables import write_table

    bundle = tmp_path / "vae"
    shutil.copytree(bundles["vae"], bundle)
    reference = Bundle.open(bundle).held_out_energies()
    assert reference.size == Bundle.open(bundle).manifest.training.data.val_rows  # every held-out row
    result = run_cli("calibrate", bundle, "--target-fpr", "0.05")
    assert result.returncode == 0, result.stderr
    threshold = Bundle.open(bundle).manifest.threshold
    assert threshold.value == conformal_threshold(reference, 0.05)
    assert threshold.provenance["data"] == "the training hold-out"
    model = aeserve.load(bundle)
    energies = model.energy(cancer["test_normal"])["energy"]
    np.testing.assert_array_equal(model.score(cancer["test_normal"])["anomaly"] == 1,
                                  p_values(reference, energies) <= 0.05)

    names = cancer["names"]
    train = tmp_path / "cancer.csv"  # the very rows the fixture trained on
    write_table(train, {n: cancer["train"][:, i] for i, n in enumerate(names)})
    before = (bundle / "manifest.json").read_bytes()
    for data, says in ((train, "this is the data"), (None, "of its rows are rows")):
        if data is None:  # 150 training rows and 50 unseen ones
            data = tmp_path / "mixed.csv"
            rows = np.concatenate([cancer["train"][:150], cancer["test_normal"][:50]])
            write_table(data, {n: rows[:, i] for i, n in enumerate(names)})
        refused = run_cli("calibrate", bundle, data)
        assert refused.returncode == 2 and says in refused.stderr, refused.stderr
        assert f"aeserve calibrate {bundle} (no DATA)" in refused.stderr.replace("\n", " ")
        assert "Traceback" not in refused.stderr and len(refused.stderr.strip().splitlines()) <= 3
    assert (bundle / "manifest.json").read_bytes() == before  # nothing changed
    fresh = tmp_path / "fresh.csv"  # rows the model never saw are welcome
    write_table(fresh, {n: cancer["test_normal"][:, i] for i, n in enumerate(names)})
    assert run_cli("calibrate", bundle, fresh).returncode == 0


def test_score_fdr_flags_rows_by_benjamini_hochberg_over_the_whole_file(bundles, cancer, tmp_path):
    """`score --fdr`: p_value per row as Model gives it, anomaly = BH discoveries over all rows of
    the file, the same whatever the batch size cuts; realised FDR on labelled rows reported."""
    import pyarrow.parquet as pq

    from aeserve.conformal import benjamini_hochberg
    from aeserve.tables import write_table

    rows = np.concatenate([cancer["test_normal"], cancer["anomalies"][:40]])
    data = tmp_path / "rows.csv"
    write_table(data, {n: rows[:, i] for i, n in enumerate(cancer["names"])})
    model = aeserve.load(bundles["vae"])
    energies = model.energy(rows)["energy"]
    expected = benjamini_hochberg(model.reference, energies, 0.1)
    assert 20 <= expected.sum() and expected[100:].mean() > 0.5  # the anomalies are found
    for batch, out in (("7", tmp_path / "a.parquet"), ("4096", tmp_path / "b.csv")):
        result = run_cli("score", bundles["vae"], data, "--fdr", "0.1", "--batch-size", batch, "-o", out)
        assert result.returncode == 0, result.stderr
        assert "by Benjamini-Hochberg at FDR 0.1" in result.stderr
        table = pq.read_table(out).to_pydict() if out.suffix == ".parquet" else None
        if table is None:
            import pandas as pd
            table = pd.read_csv(out).to_dict("list")
        np.testing.assert_array_equal(np.asarray(table["anomaly"]) == 1, expected)
        np.testing.assert_allclose(table["p_value"], model.p_values(energies), rtol=0, atol=1e-12)
        assert table["row"] == list(range(1, len(rows) + 1))
    assert not list(tmp_path.glob(".*fdr*"))  # the staged scores are gone
    both = run_cli("score", bundles["vae"], data, "--fdr", "0.1", "--threshold", "3", "-o", tmp_path / "c.csv")
    assert both.returncode == 2 and "not both" in both.stderr
    bad = run_cli("score", bundles["vae"], data, "--fdr", "1.5", "-o", tmp_path / "c.csv")
    assert bad.returncode == 2 and "between 0 and 1" in bad.stderr
