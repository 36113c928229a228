"""Model kinds (AE, DAE, CAE, VAE) in one registry, with their config and energies.

Each kind is an ``EnergyAutoencoder`` subclass registered by name. The model works in
the *preprocessed* space ŷ = (y − shift) / scale (clipped to [0, 1] for the bce cost);
``preprocess``/``postprocess`` carry that transform so exported graphs take raw data.
Each kind defines two energies, both per row, both returning (cost, regulariser):
``training_energy`` (what the loss functional averages) and ``scoring_energy`` (the
deterministic F(y) used for anomaly scores, validation and export).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Callable, ClassVar

import numpy as np
import torch
from torch import nn

from aeserve.errors import BundleError, InputError
from aeserve.train import energy as E

__all__ = [
    "ModelConfig",
    "EnergyAutoencoder",
    "register_kind",
    "get_kind",
    "list_kinds",
    "build_model",
]

ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "relu": torch.relu,
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
}


@dataclass
class ModelConfig:
    """Architecture and energy hyper-parameters; saved in the manifest beside the weights."""

    kind: str
    n_features: int
    hidden: tuple[int, ...] = (256, 64)
    latent: int = 8
    activation: str = "relu"
    cost: str = "mse"          # C: mse | bce
    sparsity: float = 0.0      # ae/dae: weight of R(h) = ‖h‖₁
    contraction: float = 0.01  # cae: λ in R(h) = λ‖∂h/∂y‖²_F
    beta: float = 1.0          # vae: β in C + β·KL
    noise: float = 0.1         # dae: σ of the Gaussian corruption (preprocessed units)
    mask: float = 0.0          # dae: fraction of features set to 0 in the corrupted ŷ
    infer_steps: int = 10      # lvm: K gradient steps of the z-inference (target propagation)
    infer_lr: float = 0.1      # lvm: step size η of the z-inference
    distance_weight: float = 1.0  # lvm: μ in D(z, z̃) = μ‖z − z̃‖²
    latent_weight: float = 0.01   # lvm: λ in R(z) = λ‖z‖²
    energy: str = "point"      # lvm/vae scoring: point (E at ž or μ) | free (F_β / importance-weighted)
    free_samples: int = 64     # free energy: samples of z (lvm) or importance samples K (vae)
    free_beta: float = 1.0     # lvm free energy: inverse temperature β of softmin_β
    free_sigma: float = 0.5    # lvm free energy: spread of the samples z = ž + σ·ε
    free_seed: int = 0         # seed of the fixed ε stored with the weights
    arch: str = "mlp"          # mlp | conv (images: rows are flattened (C, H, W) pixels)
    image_shape: tuple[int, ...] = ()  # conv: (C, H, W)
    channels: tuple[int, ...] = (16, 32)  # conv: channels of the stride-2 3x3 convolutions

    def __post_init__(self) -> None:
        self.hidden = tuple(int(h) for h in self.hidden)
        self.image_shape = tuple(int(v) for v in self.image_shape)
        self.channels = tuple(int(v) for v in self.channels)
        if self.arch not in ("mlp", "conv"):
            raise InputError(f"--arch must be mlp or conv, got {self.arch!r}")
        if self.arch == "conv":
            if len(self.image_shape) != 3 or int(np.prod(self.image_shape)) != self.n_features:
                raise InputError(f"--arch conv needs image rows of shape (C, H, W) = {self.n_features} values, "
                                 f"got image_shape {self.image_shape}")
            step = 2 ** len(self.channels)
            if self.image_shape[1] % step or self.image_shape[2] % step:
                raise InputError(f"--arch conv with {len(self.channels)} stride-2 layers needs height and width "
                                 f"divisible by {step}, got {self.image_shape[1]}x{self.image_shape[2]}")
        if self.activation not in ACTIVATIONS:
            raise InputError(f"unknown activation {self.activation!r}; choose from {', '.join(ACTIVATIONS)}")
        if self.cost not in E.COSTS:
            raise InputError(f"unknown cost {self.cost!r}; choose from {', '.join(E.COSTS)}")
        if self.latent < 1 or any(h < 1 for h in self.hidden):
            raise InputError(f"layer sizes must be positive (hidden={self.hidden}, latent={self.latent})")
        if not 0.0 <= self.mask < 1.0:
            raise InputError(f"--mask must be in [0, 1), got {self.mask}")
        if self.energy not in ("point", "free"):
            raise InputError(f"--energy must be point or free, got {self.energy!r}")
        if self.energy == "free" and self.kind not in ("lvm", "vae"):
            raise InputError(f"--energy free is defined for the lvm and vae kinds, not {self.kind!r}")
        if self.infer_steps < 0 or self.free_samples < 1:
            raise InputError("--infer-steps must be >= 0 and --free-samples >= 1")

    def to_dict(self) -> dict:
        """JSON-ready dict (tuples become lists)."""
        data = dataclasses.asdict(self)
        for key in ("hidden", "image_shape", "channels"):
            data[key] = list(getattr(self, key))
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "ModelConfig":
        """Inverse of ``to_dict``; unknown keys are a BundleError."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise BundleError(f"architecture has unknown keys: {', '.join(sorted(unknown))}")
        return cls(**data)


def _mlp(sizes: list[int]) -> nn.ModuleList:
    return nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))


class EnergyAutoencoder(nn.Module):
    """Base AE: h = Enc(ŷ) through an MLP with a linear code layer, ỹ = Dec(h).

    Subclasses override ``training_energy`` / ``scoring_energy`` (and the VAE its encoder).
    """

    kind: ClassVar[str] = ""
    #: what the regulariser term is, for the manifest
    regulariser: ClassVar[str] = "none"
    #: names of the encoder graph's outputs
    encoder_outputs: ClassVar[tuple[str, ...]] = ("z",)

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        flat = config.n_features
        self.encoder_convs, self.decoder_convs = nn.ModuleList(), nn.ModuleList()
        if config.arch == "conv":
            chans = [config.image_shape[0], *config.channels]
            self.encoder_convs.extend(nn.Conv2d(a, b, 3, stride=2, padding=1) for a, b in zip(chans[:-1], chans[1:]))
            self.decoder_convs.extend(nn.ConvTranspose2d(b, a, 3, stride=2, padding=1, output_padding=1)
                                      for a, b in reversed(list(zip(chans[:-1], chans[1:]))))
            shrink = 2 ** len(config.channels)
            self.conv_out = (chans[-1], config.image_shape[1] // shrink, config.image_shape[2] // shrink)
            flat = int(np.prod(self.conv_out))
        sizes = [flat, *config.hidden, config.latent]
        self.encoder_layers = self._make_encoder(sizes)
        self.decoder_layers = _mlp(sizes[::-1])
        self.act = ACTIVATIONS[config.activation]
        # preprocessing ŷ = (y - shift) / scale, set from training data before fitting
        self.register_buffer("shift", torch.zeros(config.n_features))
        self.register_buffer("scale", torch.ones(config.n_features))

    def _make_encoder(self, sizes: list[int]) -> nn.ModuleList:
        return _mlp(sizes)

    # -- preprocessing, baked into every graph ------------------------------------------
    def preprocess(self, y: torch.Tensor) -> torch.Tensor:
        """Raw rows -> the model's space ŷ (clipped to [0, 1] for bce)."""
        # a product with 1/scale: the exported graph multiplies, which is cheaper than Div
        y_hat = (y - self.shift) * (1.0 / self.scale)  # (batch, features)
        return y_hat.clamp(0.0, 1.0) if self.config.cost == "bce" else y_hat

    def postprocess(self, y_hat: torch.Tensor) -> torch.Tensor:
        """Model space -> raw units."""
        return y_hat * self.scale + self.shift

    # -- encoder / decoder -------------------------------------------------------------
    def features_trace(self, y_hat: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The convolutional stack's flattened output and its pre-activations (mlp: y itself)."""
        if not len(self.encoder_convs):
            return y_hat, []
        x, pres = y_hat.reshape(-1, *self.config.image_shape), []  # (batch, C, H, W)
        for conv in self.encoder_convs:
            pre = conv(x)
            pres.append(pre)
            x = self.act(pre)
        return x.flatten(1), pres

    def trunk_trace(self, y_hat: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The input of the code layer(s) and the pre-activations (convolutions first, then
        hidden dense layers)."""
        x, pres = self.features_trace(y_hat)
        for layer in self.encoder_layers[:-1]:
            pre = layer(x)
            pres.append(pre)
            x = self.act(pre)
        return x, pres

    def encode_trace(self, y_hat: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Code h and the pre-activations of ``trunk_trace``."""
        x, pres = self.trunk_trace(y_hat)
        return self.encoder_layers[-1](x), pres  # (batch, latent)

    def encode(self, y_hat: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The encoder graph's outputs in model space: (z,) here."""
        return (self.encode_trace(y_hat)[0],)

    def code(self, y_hat: torch.Tensor) -> torch.Tensor:
        """The deterministic code used for scoring, sampling statistics and ``encode``."""
        return self.encode(y_hat)[0]

    def decode_trace(self, z: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Decoder's last layer (ỹ for mse, logits for bce; (batch, features)) and the
        pre-activations: hidden dense layers, then, for conv, the last dense layer's output
        and each transposed convolution's."""
        pres, x = [], z
        for layer in self.decoder_layers[:-1]:
            pre = layer(x)
            pres.append(pre)
            x = self.act(pre)
        x = self.decoder_layers[-1](x)
        if not len(self.decoder_convs):
            return x, pres
        pres.append(x)
        x = self.act(x).reshape(-1, *self.conv_out)
        for i, conv in enumerate(self.decoder_convs):
            x = conv(x)
            pres.append(x)
            if i < len(self.decoder_convs) - 1:
                x = self.act(x)
        return x.flatten(1), pres  # (batch, C*H*W)

    def decode_logits(self, z: torch.Tensor) -> torch.Tensor:
        """Decoder's last layer: ỹ for mse, logits for bce. (batch, latent) -> (batch, features)."""
        return self.decode_trace(z)[0]

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """ỹ in model space."""
        return E.decoder_output(self.decode_logits(z), self.config.cost)

    # -- energies ----------------------------------------------------------------------
    def cost_at(self, y_hat: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """C(y, Dec(z)) per row (batch,)."""
        return E.reconstruction_cost(y_hat, self.decode_logits(z), self.config.cost)

    def regulariser_value(self, y_hat: torch.Tensor, h: torch.Tensor,
                          pres: list[torch.Tensor]) -> torch.Tensor:
        """Weighted R(h) per row: sparsity·‖h‖₁ (0, without computing ‖h‖₁, when the weight is 0)."""
        if self.config.sparsity == 0:
            return torch.zeros_like(h[:, 0])
        return self.config.sparsity * E.l1_penalty(h)

    def scoring_energy(self, y_hat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """F(y) = C(y, Dec(Enc(y))) + R(h) on clean input; returns (C, R), each (batch,)."""
        h, pres = self.encode_trace(y_hat)
        cost = self.cost_at(y_hat, h)
        reg = self.regulariser_value(y_hat, h, pres)
        return cost, reg

    def training_energy(self, y_hat: torch.Tensor,
                        generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The energy the loss functional averages during training; AE: the scoring energy."""
        return self.scoring_energy(y_hat)

    def energy_spec(self) -> dict:
        """The manifest's energy section."""
        return {
            "cost": self.config.cost,
            "regulariser": self.regulariser,
            "weight": {"l1": self.config.sparsity, "contractive": self.config.contraction,
                       "kl": self.config.beta}.get(self.regulariser, 0.0),
            "terms": ["reconstruction", "regulariser"],
            "formula": "energy = reconstruction + regulariser",
        }


_KINDS: dict[str, type[EnergyAutoencoder]] = {}


def register_kind(name: str) -> Callable[[type[EnergyAutoencoder]], type[EnergyAutoencoder]]:
    """Class decorator: make a model kind available to ``get_kind`` under ``name``."""
    def wrap(cls: type[EnergyAutoencoder]) -> type[EnergyAutoencoder]:
        if name in _KINDS:
            raise ValueError(f"kind {name!r} registered twice")
        cls.kind = name
        _KINDS[name] = cls
        return cls
    return wrap


def get_kind(name: str) -> type[EnergyAutoencoder]:
    """The model class registered as ``name``; InputError listing the kinds otherwise."""
    try:
        return _KINDS[name]
    except KeyError:
        raise InputError(f"unknown kind {name!r}; choose from {', '.join(list_kinds())}") from None


def list_kinds() -> list[str]:
    """Registered kind names, sorted."""
    return sorted(_KINDS)


def build_model(config: ModelConfig) -> EnergyAutoencoder:
    """Instantiate the model for ``config.kind``."""
    return get_kind(config.kind)(config)


@register_kind("ae")
class Autoencoder(EnergyAutoencoder):
    """Plain AE: F(y) = C(y, ỹ) + R(h), R(h) = sparsity·‖h‖₁ (optional)."""

    regulariser = "l1"


@register_kind("dae")
class DenoisingAutoencoder(Autoencoder):
    """DAE: trained to rebuild clean y from a corrupted ŷ; scored on clean y (seed, DAE)."""

    def corrupt(self, y_hat: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """ŷ + σ·ε with features dropped (set to 0) at rate ``mask``."""
        noisy = y_hat
        if self.config.noise > 0:
            eps = torch.randn(y_hat.shape, generator=generator, dtype=y_hat.dtype)
            noisy = noisy + self.config.noise * eps
        if self.config.mask > 0:
            keep = torch.rand(y_hat.shape, generator=generator) >= self.config.mask
            noisy = noisy * keep.to(y_hat.dtype)
        return noisy

    def training_energy(self, y_hat, generator=None):
        """C(y, Dec(Enc(corrupt(y)))) + R(h): the target is the clean row."""
        h, pres = self.encode_trace(self.corrupt(y_hat, generator))
        cost = self.cost_at(y_hat, h)
        return cost, self.regulariser_value(y_hat, h, pres)

    def energy_spec(self) -> dict:
        spec = super().energy_spec()
        spec["corruption"] = {"noise": self.config.noise, "mask": self.config.mask,
                              "scored_on": "clean input"}
        return spec


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
        return self.config.contraction * penalty.expand(h.shape[0])


@register_kind("vae")
class VariationalAutoencoder(EnergyAutoencoder):
    """VAE: Enc(y) -> (μ, log v); z = μ + √v·ε; training energy C + β·KL (seed, VAE).

    The scoring energy is deterministic: C(y, Dec(μ)) + β·KL(N(μ, v) ‖ N(0, 1)), so two
    runs give identical scores and no graph needs a random op.
    """

    regulariser = "kl"
    encoder_outputs = ("mu", "logvar")

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        if config.energy == "free":
            self.register_buffer("free_eps", torch.randn(
                (config.free_samples, config.latent), generator=torch.Generator().manual_seed(config.free_seed)))

    def _make_encoder(self, sizes: list[int]) -> nn.ModuleList:
        trunk = _mlp(sizes[:-1])
        self.logvar_head = nn.Linear(sizes[-2], sizes[-1])
        trunk.append(nn.Linear(sizes[-2], sizes[-1]))  # the μ head
        return trunk

    def encode(self, y_hat):
        """(μ, log v), each (batch, latent)."""
        x, _ = self.trunk_trace(y_hat)
        return self.encoder_layers[-1](x), self.logvar_head(x)

    def _terms(self, y_hat: torch.Tensor, eps: torch.Tensor | None):
        mu, logvar = self.encode(y_hat)
        z = mu if eps is None else mu + torch.exp(0.5 * logvar) * eps  # z = μ + √v·ε
        cost = self.cost_at(y_hat, z)
        return cost, self.config.beta * E.kl_to_standard_normal(mu, logvar)

    def scoring_energy(self, y_hat):
        """C(y, Dec(μ)) + β·KL: deterministic. Free mode adds the importance-weighted correction."""
        cost, reg = self._terms(y_hat, None)
        if self.config.energy != "free":
            return cost, reg
        return cost, reg, self.importance_weighted(y_hat) - cost - reg

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
        log_w = -cost.reshape(-1, samples) + self.config.beta * log_ratio  # (batch, K)
        return -(torch.logsumexp(log_w, dim=1) - math.log(samples))

    def training_energy(self, y_hat, generator=None):
        """C(y, Dec(μ + √v·ε)) + β·KL with ε ~ N(0, I) (reparameterisation)."""
        eps = torch.randn((y_hat.shape[0], self.config.latent), generator=generator,
                          dtype=y_hat.dtype)
        return self._terms(y_hat, eps)

    def energy_spec(self) -> dict:
        spec = super().energy_spec()
        spec["formula"] = "energy = reconstruction + regulariser, regulariser = beta * KL(N(mu, v) || N(0, 1)), decoded at mu"
        if self.config.energy == "free":
            spec["terms"] = ["reconstruction", "regulariser", "free_correction"]
            spec["formula"] = (f"energy = -log mean_k exp(-C(y, Dec(z_k)) + beta (log p(z_k) - log q(z_k|y))), "
                               f"z_k = mu + sqrt(v) eps_k, K={self.config.free_samples} fixed eps; terms at mu "
                               "plus free_correction")
        return spec


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
        if config.energy == "free":
            eps = torch.randn((config.free_samples, config.latent),
                              generator=torch.Generator().manual_seed(config.free_seed))
            eps[0] = 0.0  # ž itself is one of the samples, so F_β → min_s E(y, z_s) ≤ E(y, ž)
            self.register_buffer("free_eps", eps)

    def latent_penalty(self, z: torch.Tensor) -> torch.Tensor:
        """R(z) = λ‖z‖² per row."""
        return self.config.latent_weight * z.pow(2).sum(dim=1)

    def cost_and_gradient(self, y_hat: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """C(y, Dec(z)) per row and ∂C/∂z (batch, latent), by explicit back-propagation."""
        out, pres = self.decode_trace(z)  # (batch, features)
        hidden = len(self.decoder_layers) - 1
        cost = E.reconstruction_cost(y_hat, out, self.config.cost)
        grad = E.cost_gradient(out, y_hat, self.config.cost)
        if len(self.decoder_convs):
            dense_pre, conv_pres = pres[hidden], pres[hidden + 1:]
            grad = grad.reshape(conv_pres[-1].shape)  # (batch, C, H, W)
            for i in reversed(range(len(self.decoder_convs))):
                if i < len(self.decoder_convs) - 1:
                    grad = grad * E.activation_derivative(self.config.activation, conv_pres[i])
                # the adjoint of a transposed convolution is the convolution with the same weights
                grad = torch.nn.functional.conv2d(grad, self.decoder_convs[i].weight, stride=2, padding=1)
            grad = grad.flatten(1) * E.activation_derivative(self.config.activation, dense_pre)
        grad = torch.matmul(grad, self.decoder_layers[-1].weight)
        for layer, pre in zip(reversed(self.decoder_layers[:-1]), reversed(pres[:hidden])):
            grad = torch.matmul(grad * E.activation_derivative(self.config.activation, pre), layer.weight)
        return cost, grad  # (batch,), (batch, latent)

    def infer(self, y_hat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(ž, z̃): K steps z ← z − η ∂/∂z [C(y, Dec(z)) + λ‖z‖² + μ‖z − z̃‖²] from z = z̃."""
        z_tilde = self.encode_trace(y_hat)[0]  # (batch, latent)
        z = z_tilde
        lam, mu, lr = self.config.latent_weight, self.config.distance_weight, self.config.infer_lr
        for _ in range(self.config.infer_steps):
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
        return cost, self.config.distance_weight * (z_check - z_tilde).pow(2).sum(dim=1)

    def sample_energies(self, y_hat: torch.Tensor, z_check: torch.Tensor) -> torch.Tensor:
        """E(y, z_s) for z_s = ž + σ·ε_s: (batch, samples)."""
        samples, latent = self.free_eps.shape
        z = (z_check.unsqueeze(1) + self.config.free_sigma * self.free_eps).reshape(-1, latent)
        y_rep = y_hat.unsqueeze(1).expand(-1, samples, -1).reshape(-1, y_hat.shape[1])
        cost = self.cost_at(y_rep, z)
        return (cost + self.latent_penalty(z)).reshape(-1, samples)

    def scoring_energy(self, y_hat):
        """(C(y, Dec(ž)), R(ž)); in free mode a third term makes the sum F_β(y)."""
        z_check, _ = self.infer(y_hat)
        cost = self.cost_at(y_hat, z_check)
        reg = self.latent_penalty(z_check)
        if self.config.energy != "free":
            return cost, reg
        free = E.softmin(self.sample_energies(y_hat, z_check), self.config.free_beta)
        return cost, reg, free - cost - reg

    def energy_spec(self) -> dict:
        spec = super().energy_spec()
        spec["weight"] = self.config.latent_weight
        spec["inference"] = {"steps": self.config.infer_steps, "lr": self.config.infer_lr,
                             "distance_weight": self.config.distance_weight,
                             "objective": "C(y, Dec(z)) + latent_weight*|z|^2 + distance_weight*|z - Enc(y)|^2"}
        if self.config.energy == "free":
            spec["terms"] = ["reconstruction", "regulariser", "free_correction"]
            spec["formula"] = (f"energy = F_beta(y) = -1/beta log sum_s exp(-beta E(y, z_s)), z_s = z_check + "
                               f"sigma eps_s; beta={self.config.free_beta}, samples={self.config.free_samples}, "
                               f"sigma={self.config.free_sigma}; terms at z_check plus free_correction")
        else:
            spec["formula"] = "energy = E(y, z_check) = reconstruction + latent_weight*|z_check|^2"
        return spec
