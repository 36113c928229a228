"""Training does what the seed says: lowers the energy of data, ranks anomalies above it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import aeserve
from aeserve.evaluation import auroc
from aeserve.tables import Table
from aeserve.train.config import ModelConfig
from aeserve.train.fit import FitConfig, fit, scoring_energies
from aeserve.train.pipeline import train_bundle
from aeserve.train.registry import build_model, list_kinds

from conftest import KINDS


def test_registry_matches_the_core_list_of_kinds():
    from aeserve.bundle import KNOWN_KINDS

    assert list_kinds() == sorted(KNOWN_KINDS)


@pytest.mark.parametrize("kind", KINDS)
def test_training_lowers_validation_energy(cancer, kind):
    x = torch.from_numpy(cancer["train"])
    x = (x - x.mean(0)) / x.std(0)
    train, val = x[:220], x[220:]
    torch.manual_seed(0)
    model = build_model(ModelConfig(kind=kind, n_features=30, hidden=(32, 16), latent=4))
    before = scoring_energies(model, val).mean().item()
    result = fit(model, train, val, FitConfig(epochs=100, batch_size=64))
    after = scoring_energies(model, val).mean().item()
    assert after < 0.6 * before, (before, after)
    assert after == pytest.approx(min(result.val_energy), rel=1e-5)  # best epoch kept


@pytest.mark.parametrize("kind", KINDS)
def test_held_out_anomalies_rank_above_normal_rows(bundles, cancer, kind):
    model = aeserve.load(bundles[kind])
    score = auroc(model.energy(cancer["test_normal"])["energy"], model.energy(cancer["anomalies"])["energy"])
    assert score > 0.85, f"{kind}: AUROC {score:.3f}"
    # the threshold lets most normal rows through and flags most malignant ones
    assert model.score(cancer["test_normal"])["anomaly"].mean() < 0.25
    assert model.score(cancer["anomalies"])["anomaly"].mean() > 0.5


def test_auroc_helper_counts_ties_half():
    assert auroc(np.array([0.0, 1.0]), np.array([2.0, 3.0])) == 1.0
    assert auroc(np.array([1.0]), np.array([1.0])) == 0.5
    assert auroc(np.array([2.0, 3.0]), np.array([0.0])) == 0.0


def test_threshold_is_the_validation_quantile(bundles):
    model = aeserve.load(bundles["ae"], backend="torch")
    manifest = model.bundle.manifest
    assert manifest.threshold.provenance["quantile"] == 0.99
    assert manifest.threshold.provenance["on"] == "validation"
    assert manifest.threshold.provenance["rows"] == manifest.training.data.val_rows


def test_same_seed_same_weights_other_seed_other_weights(tmp_path, cancer):
    table = Table(cancer["train"], cancer["names"], "cancer.csv")
    config = ModelConfig(kind="dae", n_features=30, hidden=(16,), latent=3)
    for name, seed in [("a", 5), ("b", 5), ("c", 6)]:
        train_bundle(table, tmp_path / name, config, FitConfig(epochs=5, seed=seed), export=False)
    weights = {n: (tmp_path / n / "weights.safetensors").read_bytes() for n in "abc"}
    assert weights["a"] == weights["b"]
    assert weights["a"] != weights["c"]


def test_vae_scores_are_identical_across_runs_and_loads(bundles, cancer):
    first = aeserve.load(bundles["vae"]).score(cancer["anomalies"])["energy"]
    second = aeserve.load(bundles["vae"]).score(cancer["anomalies"])["energy"]
    assert np.array_equal(first, second)


@pytest.mark.parametrize("kind", ["ae", "vae"])
def test_sample_is_seeded_and_backend_independent(bundles, kind):
    ort_model = aeserve.load(bundles[kind], backend="onnxruntime")
    torch_model = aeserve.load(bundles[kind], backend="torch")
    a, b = ort_model.sample(50, seed=1), ort_model.sample(50, seed=1)
    assert a.shape == (50, 30) and np.array_equal(a, b)
    assert not np.array_equal(a, ort_model.sample(50, seed=2))
    np.testing.assert_allclose(a, torch_model.sample(50, seed=1), rtol=1e-4, atol=1e-4)


def test_non_vae_sampler_is_fitted_to_training_codes(bundles, cancer):
    model = aeserve.load(bundles["ae"], backend="torch")
    latent = model.bundle.manifest.latent
    codes = model.encode(cancer["train"])
    np.testing.assert_allclose(latent.mean, codes.mean(axis=0), atol=0.05 * codes.std())
    assert aeserve.load(bundles["vae"]).bundle.manifest.latent.sampler == "prior"


def test_an_ensemble_scores_the_mean_of_its_members_in_one_graph(cancer, tmp_path):
    """Three VAE members: the exported energy graph averages them, parity-checked against torch."""
    from aeserve.train.weights import load_model

    table = Table(cancer["train"], cancer["names"], "cancer.csv")
    config = ModelConfig(kind="vae", n_features=30, hidden=(16,), latent=3, members=3)
    train_bundle(table, tmp_path / "ens", config, FitConfig(epochs=20, seed=0))
    bundle = aeserve.load(tmp_path / "ens")
    assert bundle.bundle.manifest.architecture.members == 3
    rows = np.concatenate([cancer["test_normal"][:20], cancer["anomalies"][:20]])
    result = bundle.explain(rows)
    ensemble = load_model(bundle.bundle)
    with torch.no_grad():
        y_hat = ensemble.preprocess(torch.from_numpy(rows))
        by_member = torch.stack([sum(m.scoring_energy(y_hat)) for m in ensemble.members])  # (3, rows)
    np.testing.assert_allclose(result["energy"], by_member.mean(dim=0).numpy(), rtol=1e-4)
    assert by_member.std(dim=0).min() > 0  # the members differ
    np.testing.assert_allclose(result["contributions"].sum(axis=1), result["reconstruction"], rtol=1e-5)
    np.testing.assert_allclose(bundle.encode(rows), aeserve.load(tmp_path / "ens", backend="torch").encode(rows),
                               rtol=1e-4, atol=1e-5)
    assert type(build_model(ModelConfig(kind="ae", n_features=3, hidden=(2,), latent=1))).__name__ == "Autoencoder"
