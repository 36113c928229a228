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
from dataclasses import dataclass, field
from typing import Callable, ClassVar

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

    def __post_init__(self) -> None:
        self.hidden = tuple(int(h) for h in self.hidden)
        if self.activation not in ACTIVATIONS:
            raise InputError(f"unknown activation {self.activation!r}; choose from {', '.join(ACTIVATIONS)}")
        if self.cost not in E.COSTS:
            raise InputError(f"unknown cost {self.cost!r}; choose from {', '.join(E.COSTS)}")
        if self.latent < 1 or any(h < 1 for h in self.hidden):
            raise InputError(f"layer sizes must be positive (hidden={self.hidden}, latent={self.latent})")
        if not 0.0 <= self.mask < 1.0:
            raise InputError(f"--mask must be in [0, 1), got {self.mask}")

    def to_dict(self) -> dict:
        """JSON-ready dict (tuples become lists)."""
        data = dataclasses.asdict(self)
        data["hidden"] = list(self.hidden)
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
        sizes = [config.n_features, *config.hidden, config.latent]
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
        y_hat = (y - self.shift) / self.scale  # (batch, features)
        return y_hat.clamp(0.0, 1.0) if self.config.cost == "bce" else y_hat

    def postprocess(self, y_hat: torch.Tensor) -> torch.Tensor:
        """Model space -> raw units."""
        return y_hat * self.scale + self.shift

    # -- encoder / decoder -------------------------------------------------------------
    def encode_trace(self, y_hat: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Code h and the hidden pre-activations a₁ … a_{k−1} (for the exact Jacobian)."""
        pres = []
        x = y_hat
        for layer in self.encoder_layers[:-1]:
            pre = layer(x)
            pres.append(pre)
            x = self.act(pre)
        return self.encoder_layers[-1](x), pres  # (batch, latent)

    def encode(self, y_hat: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The encoder graph's outputs in model space: (z,) here."""
        return (self.encode_trace(y_hat)[0],)

    def code(self, y_hat: torch.Tensor) -> torch.Tensor:
        """The deterministic code used for scoring, sampling statistics and ``encode``."""
        return self.encode(y_hat)[0]

    def decode_logits(self, z: torch.Tensor) -> torch.Tensor:
        """Decoder's last layer: ỹ for mse, logits for bce. (batch, latent) -> (batch, features)."""
        x = z
        for layer in self.decoder_layers[:-1]:
            x = self.act(layer(x))
        return self.decoder_layers[-1](x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """ỹ in model space."""
        return E.decoder_output(self.decode_logits(z), self.config.cost)

    # -- energies ----------------------------------------------------------------------
    def regulariser_value(self, y_hat: torch.Tensor, h: torch.Tensor,
                          pres: list[torch.Tensor]) -> torch.Tensor:
        """Weighted R(h) per row: sparsity·‖h‖₁ (0 when the weight is 0)."""
        return self.config.sparsity * E.l1_penalty(h)

    def scoring_energy(self, y_hat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """F(y) = C(y, Dec(Enc(y))) + R(h) on clean input; returns (C, R), each (batch,)."""
        h, pres = self.encode_trace(y_hat)
        cost = E.reconstruction_cost(y_hat, self.decode_logits(h), self.config.cost)
        reg = self.regulariser_value(y_hat, h, pres) + torch.zeros_like(cost)
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
        cost = E.reconstruction_cost(y_hat, self.decode_logits(h), self.config.cost)
        return cost, self.regulariser_value(y_hat, h, pres) + torch.zeros_like(cost)

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
        return self.config.contraction * E.contractive_penalty(
            list(self.encoder_layers), self.config.activation, pres)


@register_kind("vae")
class VariationalAutoencoder(EnergyAutoencoder):
    """VAE: Enc(y) -> (μ, log v); z = μ + √v·ε; training energy C + β·KL (seed, VAE).

    The scoring energy is deterministic: C(y, Dec(μ)) + β·KL(N(μ, v) ‖ N(0, 1)), so two
    runs give identical scores and no graph needs a random op.
    """

    regulariser = "kl"
    encoder_outputs = ("mu", "logvar")

    def _make_encoder(self, sizes: list[int]) -> nn.ModuleList:
        trunk = _mlp(sizes[:-1])
        self.logvar_head = nn.Linear(sizes[-2], sizes[-1])
        trunk.append(nn.Linear(sizes[-2], sizes[-1]))  # the μ head
        return trunk

    def encode(self, y_hat):
        """(μ, log v), each (batch, latent)."""
        x = y_hat
        for layer in self.encoder_layers[:-1]:
            x = self.act(layer(x))
        return self.encoder_layers[-1](x), self.logvar_head(x)

    def _terms(self, y_hat: torch.Tensor, eps: torch.Tensor | None):
        mu, logvar = self.encode(y_hat)
        z = mu if eps is None else mu + torch.exp(0.5 * logvar) * eps  # z = μ + √v·ε
        cost = E.reconstruction_cost(y_hat, self.decode_logits(z), self.config.cost)
        return cost, self.config.beta * E.kl_to_standard_normal(mu, logvar)

    def scoring_energy(self, y_hat):
        """C(y, Dec(μ)) + β·KL: deterministic."""
        return self._terms(y_hat, None)

    def training_energy(self, y_hat, generator=None):
        """C(y, Dec(μ + √v·ε)) + β·KL with ε ~ N(0, I) (reparameterisation)."""
        eps = torch.randn((y_hat.shape[0], self.config.latent), generator=generator,
                          dtype=y_hat.dtype)
        return self._terms(y_hat, eps)

    def energy_spec(self) -> dict:
        spec = super().energy_spec()
        spec["formula"] = "energy = reconstruction + regulariser, regulariser = beta * KL(N(mu, v) || N(0, 1)), decoded at mu"
        return spec
