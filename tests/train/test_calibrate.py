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
