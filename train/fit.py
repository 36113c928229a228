"""The fit loop: Adam on the loss functional L = mean energy, early stopping on validation."""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Callable

import torch

from aeserve.errors import OptionError
from aeserve.train import energy as E
from aeserve.train.network import EnergyAutoencoder

__all__ = ["FitConfig", "FitResult", "fit", "scoring_energies"]


@dataclass
class FitConfig:
    """Optimisation settings (saved in the manifest's training record)."""

    epochs: int = 100
    batch_size: int = 128
    lr: float = 1e-3
    seed: int = 0
    patience: int = 10  # epochs without a better validation energy before stopping
    weight_decay: float = 0.0  # AdamW's decoupled weight decay (0: plain Adam)

    def __post_init__(self) -> None:
        """Refuse a value out of range before any work (OptionError names the field)."""
        for name in ("epochs", "batch_size", "patience"):
            if getattr(self, name) < 1:
                raise OptionError(name, f"{name} must be >= 1, got {getattr(self, name)}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise OptionError("lr", f"lr must be a finite number > 0, got {self.lr}")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise OptionError("weight_decay", f"weight_decay must be a finite number >= 0, got {self.weight_decay}")


@dataclass
class FitResult:
    """What happened: per-epoch mean energies, the best epoch and why training stopped."""

    train_energy: list[float] = field(default_factory=list)
    val_energy: list[float] = field(default_factory=list)
    best_epoch: int = 0
    stopped: str = "max epochs"


@torch.no_grad()
def scoring_energies(model: EnergyAutoencoder, y_hat: torch.Tensor,
                     batch_size: int = 4096) -> torch.Tensor:
    """Deterministic per-row energies F(y) of preprocessed rows, (rows,)."""
    model.eval()
    parts = [sum(model.scoring_energy(y_hat[i:i + batch_size]))
             for i in range(0, y_hat.shape[0], batch_size)]
    return torch.cat(parts)


def fit(model: EnergyAutoencoder, train: torch.Tensor, val: torch.Tensor, config: FitConfig, *,
        on_epoch: Callable[[int, float, float], None] | None = None) -> FitResult:
    """Minimise L(F, Y) = 1/m Σ F(y) with AdamW; keep the weights of the best validation epoch.

    ``train``/``val`` are preprocessed rows (rows, features). The validation energy is the
    deterministic scoring energy, so epochs compare fairly for every kind.
    """
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    optimiser = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    result = FitResult()
    best, best_state, stale = math.inf, copy.deepcopy(model.state_dict()), 0
    n = train.shape[0]
    for epoch in range(1, config.epochs + 1):
        model.train()
        order = torch.randperm(n, generator=generator)
        total = 0.0
        for start in range(0, n, config.batch_size):
            batch = train[order[start:start + config.batch_size]]  # (batch, features)
            cost, reg = model.training_energy(batch, generator)
            loss = E.loss_functional(cost + reg)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            total += float(loss.detach()) * batch.shape[0]
        val_energy = float(scoring_energies(model, val).mean())
        result.train_energy.append(total / n)
        result.val_energy.append(val_energy)
        if on_epoch is not None:
            on_epoch(epoch, total / n, val_energy)
        if not math.isfinite(val_energy):
            result.stopped = f"validation energy became {val_energy} at epoch {epoch}; lower --lr"
            break
        if val_energy < best and (best == math.inf or best - val_energy > 1e-7 * abs(best)):
            best, best_state, stale, result.best_epoch = val_energy, copy.deepcopy(model.state_dict()), 0, epoch
        else:
            stale += 1
            if stale >= config.patience:
                result.stopped = f"early stop: no better validation energy for {config.patience} epochs"
                break
    model.load_state_dict(best_state)
    model.eval()
    return result
