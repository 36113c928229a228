"""The five model kinds of the seed, each with the options it owns, registered by name:

====  =====================================  =========================================
kind  energy F(y) (seed)                     options
====  =====================================  =========================================
ae    C(y, ỹ) + sparsity·‖h‖₁                sparsity
dae   the same, trained on corrupted ŷ       sparsity, noise, mask
cae   C(y, ỹ) + λ‖∂h/∂y‖²_F                  contraction
vae   C(y, Dec(μ)) + β·KL(N(μ, v) ‖ N(0, 1))  beta, energy, free_samples, free_seed
lvm   C(y, Dec(ž)) + λ‖ž‖², ž inferred       infer_steps, infer_lr, distance_weight,
      by target propagation                  latent_weight, energy, free_*
====  =====================================  =========================================

``scoring_energy`` returns (C, R), or (C, R, free_correction) when a vae or lvm scores
with ``energy="free"``; the terms sum to the energy. ``explained_energy`` adds C's
per-feature terms (batch, features), which sum to C exactly.
"""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import nn

from aeserve.manifest import EnergySpec
from aeserve.train import energy as E
from aeserve.train.config import ModelConfig
from aeserve.train.network import EnergyAutoencoder, mlp
from aeserve.train.options import (  # the records live beside their flags' help; importable from here as before
    ContractiveOptions,
    DenoisingOptions,
    FreeEnergyOptions,
    LatentEBMOptions,
    SparseOptions,
    VariationalOptions,
)
from aeserve.train.registry import register_kind

__all__ = [
    "SparseOptions", "DenoisingOptions", "ContractiveOptions", "FreeEnergyOptions", "VariationalOptions",
    "LatentEBMOptions", "Autoencoder", "DenoisingAutoencoder", "ContractiveAutoencoder",
    "VariationalAutoencoder", "LatentVariableEBM",
]


# -- kinds ----------------------------------------------------------------------------------

@register_kind("ae")
class Autoencoder(EnergyAutoencoder):
    """Plain AE: F(y) = C(y, ỹ) + R(h), R(h) = sparsity·‖h‖₁ (sparsity 0: no regulariser)."""

    regulariser = "l1"

    def regulariser_value(self, y_hat, h, pres):
        """sparsity·‖h‖₁ per row (0, without computing ‖h‖₁, when the weight is 0)."""
        if self.options.sparsity == 0:
            return torch.zeros_like(h[:, 0])
        return self.options.sparsity * E.l1_penalty(h)

    @property
    def regulariser_weight(self) -> float:
        return self.options.sparsity


@register_kind("dae")
class DenoisingAutoencoder(Autoencoder):
    """DAE: trained to rebuild clean y from a corrupted ŷ; scored on clean y (seed, DAE)."""

    def corrupt(self, y_hat: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """ŷ + σ·ε with features dropped (set to 0) at rate ``mask``."""
        noisy = y_hat
        if self.options.noise > 0:
            eps = torch.randn(y_hat.shape, generator=generator, dtype=y_hat.dtype, device=y_hat.device)
            noisy = noisy + self.options.noise * eps
        if self.options.mask > 0:
            keep = torch.rand(y_hat.shape, generator=generator, device=y_hat.device) >= self.options.mask
            noisy = noisy * keep.to(y_hat.dtype)
        return noisy

    def training_energy(self, y_hat, generator=None):
        """C(y, Dec(Enc(corrupt(y)))) + R(h): the target is the clean row."""
        h, pres = self.encode_trace(self.corrupt(y_hat, generator))
        cost = self.cost_at(y_hat, h)
        return cost, self.regulariser_value(y_hat, h, pres)

    def energy_spec(self) -> EnergySpec:
        spec = super().energy_spec()
        corruption = {"noise": self.options.noise, "mask": self.options.mask, "scored_on": "clean input"}
        return dataclasses.replace(spec, details={**spec.details, "corruption": corruption})


@register_kind("cae")
class ContractiveAutoencoder(EnergyAutoencoder):
    """CAE: R(h) = λ‖∂h/∂y‖²_F, computed exactly for the MLP encoder (seed, CAE)."""

    regulariser = "contractive"

    def regulariser_value(self, y_hat, h, pres):
        """λ‖J‖²_F with J the encoder's Jacobian with respect to its (preprocessed) input."""
        n_conv = len(self.encoder_convs)
        penalty = E.contractive_penalty(list(self.encoder_layers), self.config.activation, pres[n_conv:],
                                        convs=list(self.encoder_convs), conv_pres=pres[:n_conv])
        # a linear encoder has one Jacobian for every row: (1,) -> (batch,)
        return self.options.contraction * penalty.expand(h.shape[0])

    @property
    def regulariser_weight(self) -> float:
        return self.options.contraction


def _fixed_eps(options: FreeEnergyOptions, latent: int) -> torch.Tensor:
    """The seeded ε (samples, latent) a free energy averages over, stored with the weights."""
    return torch.randn((options.free_samples, latent), generator=torch.Generator().manual_seed(options.free_seed))


def _free_spec(spec: EnergySpec, formula: str) -> EnergySpec:
    return dataclasses.replace(spec, terms=("reconstruction", "regulariser", "free_correction"), formula=formula)


@register_kind("vae")
class VariationalAutoencoder(EnergyAutoencoder):
    """VAE: Enc(y) -> (μ, log v); z = μ + √v·ε; training energy C + β·KL (seed, VAE).

    The scoring energy is deterministic: C(y, Dec(μ)) + β·KL(N(μ, v) ‖ N(0, 1)), so two
    runs give identical scores and no graph needs a random op.
    """

    regulariser = "kl"
    encoder_outputs = ("mu", "logvar")
    has_prior = True

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        if self.options.energy == "free":
            self.register_buffer("free_eps", _fixed_eps(self.options, config.latent))

    def _make_encoder(self, sizes: list[int]) -> nn.ModuleList:
        trunk = mlp(sizes[:-1])
        self.logvar_head = nn.Linear(sizes[-2], sizes[-1])
        trunk.append(nn.Linear(sizes[-2], sizes[-1]))  # the μ head
        return trunk

    def encode(self, y_hat):
        """(μ, log v), each (batch, latent)."""
        x, _ = self.trunk_trace(y_hat)
        return self.encoder_layers[-1](x), self.logvar_head(x)

    def explained_energy(self, y_hat):
        """C(y, Dec(μ)) + β·KL: deterministic. Free mode adds the importance-weighted correction.
        The contributions are C's per-feature terms at μ."""
        mu, logvar = self.encode(y_hat)
        contributions = self.cost_terms_at(y_hat, mu)  # (batch, features)
        cost, reg = contributions.sum(dim=1), self.options.beta * E.kl_to_standard_normal(mu, logvar)
        if self.options.energy != "free":
            return (cost, reg), contributions
        return (cost, reg, self.importance_weighted(y_hat) - cost - reg), contributions

    def importance_weighted(self, y_hat: torch.Tensor) -> torch.Tensor:
        """−log (1/K) Σ_k exp(−C(y, Dec(z_k)) + β[log p(z_k) − log q(z_k|y)]), z_k = μ + √v·ε_k.

        With β = 1 this is the importance-weighted bound on −log p(y) (up to C's normalising
        constant); K = 1 gives C + β·KL in expectation, and the bound tightens as K grows.
        The ε_k are fixed (seeded, stored with the weights), so scores are deterministic.
        """
        mu, logvar = self.encode(y_hat)  # (batch, latent) each
        samples, latent = self.free_eps.shape
        z = mu.unsqueeze(1) + torch.exp(0.5 * logvar).unsqueeze(1) * self.free_eps  # (batch, K, latent)
        y_rep = y_hat.unsqueeze(1).expand(-1, samples, -1).reshape(-1, y_hat.shape[1])
        cost = self.cost_at(y_rep, z.reshape(-1, latent))
        log_ratio = 0.5 * (self.free_eps.pow(2).sum(dim=1) - z.pow(2).sum(dim=2) + logvar.sum(dim=1, keepdim=True))
        log_w = -cost.reshape(-1, samples) + self.options.beta * log_ratio  # (batch, K)
        return -(torch.logsumexp(log_w, dim=1) - math.log(samples))

    def training_energy(self, y_hat, generator=None):
        """C(y, Dec(μ + √v·ε)) + β·KL with ε ~ N(0, I) (reparameterisation)."""
        eps = torch.randn((y_hat.shape[0], self.config.latent), generator=generator, dtype=y_hat.dtype,
                          device=y_hat.device)
        mu, logvar = self.encode(y_hat)
        z = mu + torch.exp(0.5 * logvar) * eps  # z = μ + √v·ε
        return self.cost_at(y_hat, z), self.options.beta * E.kl_to_standard_normal(mu, logvar)

    @property
    def regulariser_weight(self) -> float:
        return self.options.beta

    def energy_spec(self) -> EnergySpec:
        spec = dataclasses.replace(super().energy_spec(), formula=(
            "energy = reconstruction + regulariser, regulariser = beta * KL(N(mu, v) || N(0, 1)), decoded at mu"))
        if self.options.energy != "free":
            return spec
        return _free_spec(spec, f"energy = -log mean_k exp(-C(y, Dec(z_k)) + beta (log p(z_k) - log q(z_k|y))), "
                                f"z_k = mu + sqrt(v) eps_k, K={self.options.free_samples} fixed eps; terms at mu "
                                "plus free_correction")


@register_kind("lvm")
class LatentVariableEBM(EnergyAutoencoder):
    """Latent-variable EBM trained by target propagation (seed, "Propagation de la cible").

    E(y, z) = C(y, Dec(z)) + R(z) with R(z) = λ‖z‖²; z̃ = Enc(y) is the amortised guess;
    ž = argmin_z E(y, z) + D(z, z̃), D = μ‖z − z̃‖², by K gradient steps started at z̃. The
    decoder learns from C(y, Dec(ž)), the encoder from D(ž, z̃). The gradient of E + D with
    respect to z is written out layer by layer (no autograd), so the exported graphs unroll
    the same K steps. Scores: F_∞(y) ≈ E(y, ž), or with ``energy="free"`` the softmin
    F_β(y) = −1/β · log Σ_s exp(−β E(y, z_s)) over z_s = ž + σ·ε_s (ε₀ = 0, the others fixed).
    """

    regulariser = "latent_l2"

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        if self.options.energy == "free":
            eps = _fixed_eps(self.options, config.latent)
            eps[0] = 0.0  # ž itself is one of the samples, so F_β → min_s E(y, z_s) ≤ E(y, ž)
            self.register_buffer("free_eps", eps)

    def latent_penalty(self, z: torch.Tensor) -> torch.Tensor:
        """R(z) = λ‖z‖² per row."""
        return self.options.latent_weight * z.pow(2).sum(dim=1)

    def cost_and_gradient(self, y_hat: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """C(y, Dec(z)) per row and ∂C/∂z (batch, latent), by explicit back-propagation."""
        out, pres = self.decode_trace(z)  # (batch, features)
        hidden = len(self.decoder_layers) - 1
        cost = self.cost_terms(y_hat, out).sum(dim=1)
        grad = self.cost_gradient(out, y_hat)
        if len(self.decoder_convs):
            dense_pre, conv_pres = pres[hidden], pres[hidden + 1:]
            grad = grad.reshape(conv_pres[-1].shape)  # (batch, C, H, W)
            for i in reversed(range(len(self.decoder_convs))):
                if i < len(self.decoder_convs) - 1:
                    grad = grad * E.activation_derivative(self.config.activation, conv_pres[i])
                # the adjoint of a transposed convolution is the convolution with the same weights
                grad = E.conv_adjoint(grad, self.decoder_convs[i], transposed=True)
            grad = grad.flatten(1) * E.activation_derivative(self.config.activation, dense_pre)
        grad = torch.matmul(grad, self.decoder_layers[-1].weight)
        for layer, pre in zip(reversed(self.decoder_layers[:-1]), reversed(pres[:hidden])):
            grad = torch.matmul(grad * E.activation_derivative(self.config.activation, pre), layer.weight)
        return cost, grad  # (batch,), (batch, latent)

    def infer(self, y_hat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(ž, z̃): K steps z ← z − η ∂/∂z [C(y, Dec(z)) + λ‖z‖² + μ‖z − z̃‖²] from z = z̃."""
        z_tilde = self.encode_trace(y_hat)[0]  # (batch, latent)
        z = z_tilde
        lam, mu, lr = self.options.latent_weight, self.options.distance_weight, self.options.infer_lr
        for _ in range(self.options.infer_steps):
            grad = self.cost_and_gradient(y_hat, z)[1] + 2.0 * lam * z + 2.0 * mu * (z - z_tilde)
            z = z - lr * grad
        return z, z_tilde

    def encode(self, y_hat):
        """(ž,): the inferred code, not just the amortised z̃."""
        return (self.infer(y_hat)[0],)

    def training_energy(self, y_hat, generator=None):
        """(C(y, Dec(ž)), μ‖ž − z̃‖²) with ž held fixed: the decoder step and the encoder step."""
        with torch.no_grad():
            z_check, _ = self.infer(y_hat)
        z_tilde = self.encode_trace(y_hat)[0]
        cost = self.cost_at(y_hat, z_check)
        return cost, self.options.distance_weight * (z_check - z_tilde).pow(2).sum(dim=1)

    def sample_energies(self, y_hat: torch.Tensor, z_check: torch.Tensor) -> torch.Tensor:
        """E(y, z_s) for z_s = ž + σ·ε_s: (batch, samples)."""
        samples, latent = self.free_eps.shape
        z = (z_check.unsqueeze(1) + self.options.free_sigma * self.free_eps).reshape(-1, latent)
        y_rep = y_hat.unsqueeze(1).expand(-1, samples, -1).reshape(-1, y_hat.shape[1])
        cost = self.cost_at(y_rep, z)
        return (cost + self.latent_penalty(z)).reshape(-1, samples)

    def explained_energy(self, y_hat):
        """(C(y, Dec(ž)), R(ž)); in free mode a third term makes the sum F_β(y). The contributions
        are C's per-feature terms at ž."""
        z_check, _ = self.infer(y_hat)
        contributions = self.cost_terms_at(y_hat, z_check)  # (batch, features)
        cost, reg = contributions.sum(dim=1), self.latent_penalty(z_check)
        if self.options.energy != "free":
            return (cost, reg), contributions
        free = E.softmin(self.sample_energies(y_hat, z_check), self.options.free_beta)
        return (cost, reg, free - cost - reg), contributions

    @property
    def regulariser_weight(self) -> float:
        return self.options.latent_weight

    def energy_spec(self) -> EnergySpec:
        o = self.options
        inference = {"steps": o.infer_steps, "lr": o.infer_lr, "distance_weight": o.distance_weight,
                     "objective": "C(y, Dec(z)) + latent_weight*|z|^2 + distance_weight*|z - Enc(y)|^2"}
        spec = super().energy_spec()
        spec = dataclasses.replace(spec, details={**spec.details, "inference": inference},
                                   formula="energy = E(y, z_check) = reconstruction + latent_weight*|z_check|^2")
        if o.energy != "free":
            return spec
        return _free_spec(spec, f"energy = F_beta(y) = -1/beta log sum_s exp(-beta E(y, z_s)), z_s = z_check + "
                                f"sigma eps_s; beta={o.free_beta}, samples={o.free_samples}, "
                                f"sigma={o.free_sigma}; terms at z_check plus free_correction")
