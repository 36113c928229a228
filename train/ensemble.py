"""An ensemble of K members of one kind, scored by the mean of their energies.

F(y) = 1/K Σ_k F_k(y): each term (C, R, ...) and C's per-feature contributions are the members'
means, so the terms still sum to the energy and the contributions to C. The members differ by
their initial weights (and their training noise: a DAE's corruption, a VAE's ε); they are trained
together on the mean of their loss functionals, which gives each the gradient of its own. The
ensemble exposes a single model's interface, so fitting, export (one energy graph holding every
member) and the torch backend need nothing else. Codes belong to one model, so ``encode``,
``decode`` and sampling use the first member.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from aeserve.manifest import EnergySpec
from aeserve.train.config import ModelConfig
from aeserve.train.network import EnergyAutoencoder

__all__ = ["Ensemble"]


def _mean(parts: list[tuple[torch.Tensor, ...]]) -> tuple[torch.Tensor, ...]:
    """Term-wise mean of the members' term tuples."""
    return tuple(torch.stack(terms).mean(dim=0) for terms in zip(*parts))


class Ensemble(nn.Module):
    """K members of one kind; energies averaged, codes from the first member."""

    def __init__(self, config: ModelConfig, members: list[EnergyAutoencoder]):
        super().__init__()
        self.config = config
        self.members = nn.ModuleList(members)
        first = members[0]
        self.kind, self.options = first.kind, first.options
        self.encoder_outputs, self.has_prior, self.regulariser = first.encoder_outputs, first.has_prior, first.regulariser

    @property
    def first(self) -> EnergyAutoencoder:
        """The member whose codes ``encode``/``decode`` use."""
        return self.members[0]

    @property
    def shift(self) -> torch.Tensor:
        return self.first.shift

    @property
    def scale(self) -> torch.Tensor:
        return self.first.scale

    def set_preprocessing(self, shift: torch.Tensor, scale: torch.Tensor, rows: int = 0) -> None:
        """The same ŷ = (y − shift) / scale (and a table's missing prior) for every member."""
        for member in self.members:
            member.set_preprocessing(shift, scale, rows)

    @property
    def table(self):
        return self.first.table

    def decoded_rows(self, z: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.first.decoded_rows(z)

    def preprocess(self, y: torch.Tensor) -> torch.Tensor:
        return self.first.preprocess(y)

    def postprocess(self, y_hat: torch.Tensor) -> torch.Tensor:
        return self.first.postprocess(y_hat)

    def encode(self, y_hat: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.first.encode(y_hat)

    def code(self, y_hat: torch.Tensor) -> torch.Tensor:
        return self.first.code(y_hat)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.first.decode(z)

    def explained_energy(self, y_hat: torch.Tensor) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
        """The members' mean terms, and their mean per-feature contributions (batch, features)."""
        parts = [member.explained_energy(y_hat) for member in self.members]
        contributions = torch.stack([c for _, c in parts]).mean(dim=0)
        return _mean([terms for terms, _ in parts]), contributions

    def scoring_energy(self, y_hat: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.explained_energy(y_hat)[0]

    def training_energy(self, y_hat: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, ...]:
        return _mean([member.training_energy(y_hat, generator) for member in self.members])

    def energy_spec(self) -> EnergySpec:
        spec = self.first.energy_spec()
        return dataclasses.replace(spec, formula=f"mean over {len(self.members)} members of: {spec.formula}",
                                   details={**spec.details, "ensemble": {"members": len(self.members),
                                                                         "codes": "first member"}})
