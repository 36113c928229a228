"""The seed's energies, checked against hand computations in numpy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from aeserve.train import energy as E
from aeserve.train.config import ModelConfig
from aeserve.train.graphs import graph_modules
from aeserve.train.registry import build_model


def _set(layer: torch.nn.Linear, weight, bias) -> None:
    with torch.no_grad():
        layer.weight.copy_(torch.tensor(weight, dtype=torch.float32))
        layer.bias.copy_(torch.tensor(bias, dtype=torch.float32))


def _tiny(kind: str, cost: str = "mse", **options):
    """3 features -> hidden 2 (relu) -> latent 1 -> hidden 2 (relu) -> 3, hand-set weights."""
    model = build_model(ModelConfig(kind=kind, n_features=3, hidden=(2,), latent=1,
                                    activation="relu", cost=cost, **options))
    params = {
        "enc1": ([[0.5, -0.2, 0.1], [0.3, 0.8, -0.5]], [0.1, -0.1]),
        "enc2": ([[1.0, -0.7]], [0.2]),
        "dec1": ([[0.9], [-1.1]], [0.05, 0.3]),
        "dec2": ([[0.4, -0.3], [1.2, 0.5], [-0.6, 0.7]], [0.0, 0.1, -0.2]),
    }
    _set(model.encoder_layers[0], *params["enc1"])
    _set(model.encoder_layers[1], *params["enc2"])
    _set(model.decoder_layers[0], *params["dec1"])
    _set(model.decoder_layers[1], *params["dec2"])
    if kind == "vae":
        _set(model.logvar_head, [[-0.4, 0.6]], [-0.3])
    model.shift.copy_(torch.tensor([1.0, -2.0, 0.5]))
    model.scale.copy_(torch.tensor([2.0, 0.5, 1.5]))
    return model.eval(), params


RAW = np.array([[1.5, -2.3, 0.9], [-0.4, -1.0, 2.0], [3.0, -2.0, 0.5]], dtype=np.float32)


def _np_forward(params, y_hat):
    relu = lambda a: np.maximum(a, 0.0)  # noqa: E731
    lin = lambda x, wb: x @ np.array(wb[0]).T + np.array(wb[1])  # noqa: E731
    a1 = lin(y_hat, params["enc1"])
    h = lin(relu(a1), params["enc2"])
    out = lin(relu(lin(h, params["dec1"])), params["dec2"])
    return a1, h, out


def _energy(model, raw=RAW):
    """(energy, C, R) from the energy graph, checking on the way that its per-feature
    contributions sum to C."""
    with torch.no_grad():
        total, cost, reg, contributions = graph_modules(model)["energy"](torch.from_numpy(raw))
    np.testing.assert_allclose(contributions.sum(dim=1).numpy(), cost.numpy(), rtol=1e-6)
    return total.numpy(), cost.numpy(), reg.numpy()


def _contributions(model, raw=RAW):
    with torch.no_grad():
        return graph_modules(model)["energy"](torch.from_numpy(raw))[-1].numpy()


def test_ae_mse_energy_matches_hand_computation():
    model, params = _tiny("ae", sparsity=0.3)
    y_hat = (RAW - [1.0, -2.0, 0.5]) / [2.0, 0.5, 1.5]
    _, h, out = _np_forward(params, y_hat)
    cost = ((y_hat - out) ** 2).sum(axis=1)  # C = ‖y − ỹ‖²
    reg = 0.3 * np.abs(h).sum(axis=1)        # R(h) = sparsity·‖h‖₁
    total, got_cost, got_reg = _energy(model)
    np.testing.assert_allclose(got_cost, cost, rtol=1e-5)
    np.testing.assert_allclose(got_reg, reg, rtol=1e-5)
    np.testing.assert_allclose(total, cost + reg, rtol=1e-5)
    np.testing.assert_allclose(_contributions(model), (y_hat - out) ** 2, rtol=1e-5)  # cᵢ = (yᵢ − ỹᵢ)²


def test_bce_energy_is_the_seeds_cross_entropy():
    model, params = _tiny("ae", cost="bce", sparsity=0.0)  # no regulariser: C alone
    model.shift.copy_(torch.tensor([-1.0, -3.0, 0.0]))
    model.scale.copy_(torch.tensor([5.0, 2.0, 3.0]))
    y_hat = np.clip((RAW - [-1.0, -3.0, 0.0]) / [5.0, 2.0, 3.0], 0.0, 1.0)
    _, _, logits = _np_forward(params, y_hat)
    y_tilde = 1.0 / (1.0 + np.exp(-logits))
    cost = -(y_hat * np.log(y_tilde) + (1 - y_hat) * np.log(1 - y_tilde)).sum(axis=1)
    _, got_cost, got_reg = _energy(model)
    np.testing.assert_allclose(got_cost, cost, rtol=1e-5)
    assert np.all(got_reg == 0)
    per_feature = -(y_hat * np.log(y_tilde) + (1 - y_hat) * np.log(1 - y_tilde))
    np.testing.assert_allclose(_contributions(model), per_feature, rtol=1e-5)


def test_vae_energy_is_reconstruction_at_mu_plus_beta_kl():
    model, params = _tiny("vae", beta=0.7)
    y_hat = (RAW - [1.0, -2.0, 0.5]) / [2.0, 0.5, 1.5]
    a1, mu, out = _np_forward(params, y_hat)  # the μ head is enc2; decoding μ
    logvar = np.maximum(a1, 0) @ np.array([[-0.4, 0.6]]).T + [-0.3]
    v = np.exp(logvar)
    kl = 0.5 * (v - np.log(v) - 1 + mu ** 2).sum(axis=1)
    cost = ((y_hat - out) ** 2).sum(axis=1)
    total, got_cost, got_reg = _energy(model)
    np.testing.assert_allclose(got_cost, cost, rtol=1e-5)
    np.testing.assert_allclose(got_reg, 0.7 * kl, rtol=1e-5)
    np.testing.assert_allclose(total, cost + 0.7 * kl, rtol=1e-5)


@pytest.mark.parametrize("activation", ["relu", "tanh", "sigmoid"])
@pytest.mark.parametrize("hidden", [(), (7,), (9, 5)])
def test_contractive_penalty_is_the_exact_jacobian_norm(activation, hidden):
    torch.manual_seed(1)
    model = build_model(ModelConfig(kind="cae", n_features=6, hidden=hidden, latent=3,
                                    activation=activation, contraction=1.0)).double().eval()
    y = torch.randn(5, 6, dtype=torch.float64)
    _, reg = model.scoring_energy(y)
    for i in range(len(y)):
        jac = torch.autograd.functional.jacobian(lambda row: model.code(row[None])[0], y[i])
        assert jac.shape == (3, 6)
        assert reg[i].item() == pytest.approx(jac.pow(2).sum().item(), rel=1e-10)


def test_kl_closed_form_matches_monte_carlo():
    rng = np.random.default_rng(0)
    mu, logvar = rng.normal(size=(1, 3)), rng.normal(scale=0.5, size=(1, 3))
    closed = E.kl_to_standard_normal(torch.tensor(mu), torch.tensor(logvar)).item()
    sd = np.exp(0.5 * logvar)
    z = mu + sd * rng.standard_normal((400_000, 3))
    log_q = (-0.5 * ((z - mu) / sd) ** 2 - np.log(sd)).sum(axis=1)
    log_p = (-0.5 * z ** 2).sum(axis=1)
    samples = log_q - log_p
    stderr = samples.std() / np.sqrt(len(samples))
    assert abs(samples.mean() - closed) < 4 * stderr
    assert closed > 0


def test_loss_functional_is_the_mean_energy():
    energies = torch.tensor([1.0, 2.0, 6.0])
    assert E.loss_functional(energies).item() == pytest.approx(3.0)


def test_dae_trains_on_corrupted_input_but_scores_clean():
    model, _ = _tiny("dae", noise=0.5)
    y_hat = model.preprocess(torch.from_numpy(RAW))
    g = torch.Generator().manual_seed(0)
    trained = sum(model.training_energy(y_hat, g))
    scored = sum(model.scoring_energy(y_hat))
    again = sum(model.scoring_energy(y_hat))
    assert not torch.allclose(trained, scored)
    assert torch.equal(scored, again)
