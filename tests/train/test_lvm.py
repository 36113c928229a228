"""The latent-variable EBM (target propagation) and free energies, against the seed's definitions."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import aeserve
from aeserve.bundle import Bundle
from aeserve.evaluation import auroc
from aeserve.tables import Table
from aeserve.train import energy as E
from aeserve.train.config import ModelConfig
from aeserve.train.fit import FitConfig
from aeserve.train.pipeline import train_bundle
from aeserve.train.registry import build_model
from aeserve.train.weights import load_model


@pytest.mark.parametrize("cost,activation", [("mse", "tanh"), ("mse", "relu"), ("bce", "sigmoid")])
def test_explicit_decoder_gradient_equals_autograd(cost, activation):
    torch.manual_seed(0)
    model = build_model(ModelConfig(kind="lvm", n_features=7, hidden=(6, 5), latent=3, cost=cost,
                                    activation=activation)).double()
    y = torch.rand(5, 7, dtype=torch.float64)
    z = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    value, grad = model.cost_and_gradient(y, z)
    np.testing.assert_allclose(value.detach(), E.reconstruction_cost(y, model.decode_logits(z), cost).detach())
    (expected,) = torch.autograd.grad(value.sum(), z)
    np.testing.assert_allclose(grad.detach(), expected, rtol=1e-10, atol=1e-12)


def test_inference_lowers_the_target_propagation_objective():
    torch.manual_seed(0)
    model = build_model(ModelConfig(kind="lvm", n_features=6, hidden=(8,), latent=2, infer_steps=20)).double()
    y = torch.randn(16, 6, dtype=torch.float64)
    z_check, z_tilde = model.infer(y)

    def objective(z):
        return model.cost_and_gradient(y, z)[0] + model.latent_penalty(z) + (z - z_tilde).pow(2).sum(1)

    assert torch.all(objective(z_check) < objective(z_tilde))


@pytest.fixture(scope="module")
def free_bundles(tmp_path_factory, cancer):
    root = tmp_path_factory.mktemp("free")
    table = Table(cancer["train"], cancer["names"], "cancer.csv")
    paths = {}
    for kind in ("lvm", "vae"):
        config = ModelConfig(kind=kind, n_features=30, hidden=(32, 16), latent=4, energy="free", free_samples=32,
                             **({"free_beta": 1.0} if kind == "lvm" else {}))
        train_bundle(table, root / kind, config, FitConfig(epochs=60))
        paths[kind] = root / kind
    return paths


@pytest.mark.parametrize("kind", ["lvm", "vae"])
def test_free_energy_bundles_export_with_parity(free_bundles, cancer, kind):
    ort_model = aeserve.load(free_bundles[kind], backend="onnxruntime")
    torch_model = aeserve.load(free_bundles[kind], backend="torch")
    rows = cancer["anomalies"]
    got, ref = ort_model.energy(rows), torch_model.energy(rows)
    assert list(got) == ["energy", "reconstruction", "regulariser", "free_correction"]
    for name in got:
        np.testing.assert_allclose(got[name], ref[name], rtol=1e-4, atol=1e-4 * np.abs(ref[name]).max())
    np.testing.assert_allclose(sum(got[t] for t in ort_model.terms), got["energy"], rtol=1e-5)
    score = auroc(ort_model.energy(cancer["test_normal"])["energy"], got["energy"])
    assert score > 0.8, score


def test_free_energy_tends_to_the_zero_temperature_limit(free_bundles, cancer):
    model = load_model(Bundle.open(free_bundles["lvm"])).double()
    y = model.preprocess(torch.from_numpy(cancer["anomalies"][:50]).double())
    with torch.no_grad():
        z_check, _ = model.infer(y)
        energies = model.sample_energies(y, z_check)  # (rows, samples)
        f_inf = energies.min(dim=1).values
        gaps = []
        for beta in (0.1, 1.0, 10.0, 100.0, 1000.0):
            f_beta = E.softmin(energies, beta)
            gap = (f_inf - f_beta).max().item()
            assert 0.0 <= gap <= math.log(energies.shape[1]) / beta + 1e-9  # F_∞ − log S / β ≤ F_β ≤ F_∞
            gaps.append(gap)
    assert gaps == sorted(gaps, reverse=True) and gaps[-1] < 1e-2


def test_importance_weighted_bound_tightens_with_more_samples(bundles, cancer):
    base = load_model(Bundle.open(bundles["vae"]))
    y = base.preprocess(torch.from_numpy(np.concatenate([cancer["test_normal"], cancer["anomalies"]])))
    means = []
    for samples in (1, 4, 32, 256):
        config = ModelConfig.from_dict({**base.config.to_dict(), "energy": "free", "free_samples": samples})
        model = build_model(config)
        model.load_state_dict({**base.state_dict(), "free_eps": model.free_eps})
        with torch.no_grad():
            means.append(model.importance_weighted(y).mean().item())
    point = sum(base.scoring_energy(y)).mean().item()  # C at μ + β·KL
    assert means == sorted(means, reverse=True), means
    assert means[-1] < point


def test_lvm_and_ae_auroc_on_the_same_data(bundles, cancer):
    figures = {}
    for kind in ("ae", "lvm"):
        model = aeserve.load(bundles[kind])
        figures[kind] = auroc(model.energy(cancer["test_normal"])["energy"], model.energy(cancer["anomalies"])["energy"])
    print(f"AUROC on breast cancer (benign vs malignant): {figures}")
    assert figures["lvm"] > 0.85
