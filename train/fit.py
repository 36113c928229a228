"""The fit loop: Adam on the loss functional L = mean energy, early stopping on validation.

Rows come either as one preprocessed tensor in memory (``fit(model, train, ...)``, as always) or
streamed from disk (a ``RowStream``: raw batches per epoch, preprocessed batch by batch). Training
runs on the ``Hardware``'s device and precision; with ``Checkpointing`` it writes a checkpoint
every few epochs, resumes from one, and on Ctrl-C or SIGTERM saves the last complete epoch and
raises ``Interrupted`` saying how to resume.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Protocol

import numpy as np
import torch

from aeserve.errors import Interrupted, OptionError
from aeserve.train import energy as E
from aeserve.train.checkpoint import TrainingState, load_checkpoint, save_checkpoint
from aeserve.train.device import Hardware
from aeserve.train.network import EnergyAutoencoder

__all__ = ["FitConfig", "FitResult", "RowStream", "Checkpointing", "EnergyLoss", "fit", "scoring_energies"]


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
    resumed_from: int | None = None  # the epoch a checkpoint resumed after (None: a fresh run)
    rows_per_s: float = 0.0  # training rows per second over the epochs run here


class RowStream(Protocol):
    """Training rows read from disk epoch by epoch (``aeserve.train.shards``)."""

    rows: int  # training rows an epoch goes through (for progress)

    def batches(self, epoch: int) -> Iterator[np.ndarray]:
        """Raw rows (batch, features) float32 of ``epoch`` (1-based), shuffled."""


@dataclass
class Checkpointing:
    """Where checkpoints go, how often, whether to resume, and what run they belong to."""

    directory: Path
    every: int = 0  # epochs between checkpoints on disk; 0: one only when stopped by a signal
    resume: bool = False
    fingerprint: dict = field(default_factory=dict)
    command: str = ""  # how to resume, for the message of an interrupted run


class EnergyLoss(torch.nn.Module):
    """The model's training energy as ``forward`` (batch, generator) -> (cost, regulariser): the
    module a data-parallel wrapper (DDP) needs, since it synchronises gradients of ``forward``."""

    def __init__(self, model: EnergyAutoencoder):
        super().__init__()
        self.model = model

    def forward(self, batch: torch.Tensor, generator: torch.Generator | None = None):
        return self.model.training_energy(batch, generator)


@torch.no_grad()
def scoring_energies(model: EnergyAutoencoder, y_hat: torch.Tensor,
                     batch_size: int = 4096) -> torch.Tensor:
    """Deterministic per-row energies F(y) of preprocessed rows, (rows,), on their device."""
    model.eval()
    parts = [sum(model.scoring_energy(y_hat[i:i + batch_size]))
             for i in range(0, y_hat.shape[0], batch_size)]
    return torch.cat(parts)


def _memory_batches(train: torch.Tensor, batch_size: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    order = torch.randperm(train.shape[0], generator=generator)
    for start in range(0, train.shape[0], batch_size):
        yield train[order[start:start + batch_size]]  # (batch, features)


def _generators(device: torch.device, seed: int) -> tuple[torch.Generator, torch.Generator]:
    """(order, noise) generators: one CPU generator for both on a CPU (so CPU runs are those of
    before devices existed), a CPU one for the order and one on the device for the noise else."""
    order = torch.Generator().manual_seed(seed)
    if device.type == "cpu":
        return order, order
    return order, torch.Generator(device=device).manual_seed(seed)


def fit(model: EnergyAutoencoder, train: torch.Tensor | RowStream, val: torch.Tensor, config: FitConfig, *,
        on_epoch: Callable[[int, float, float], None] | None = None,
        on_batch: Callable[[int, int, int], None] | None = None,
        hardware: Hardware | None = None, checkpointing: Checkpointing | None = None,
        loss_module: torch.nn.Module | None = None,
        on_state: Callable[[TrainingState], None] | None = None) -> FitResult:
    """Minimise L(F, Y) = 1/m Σ F(y) (the seed's loss functional, mean energy) with AdamW; keep the
    weights of the best validation epoch. The model ends on the CPU in float32.

    ``train``: preprocessed rows (rows, features), or a ``RowStream`` of raw rows; ``val``:
    preprocessed rows. The validation energy is the deterministic scoring energy in float32, so
    epochs compare fairly for every kind and precision. ``on_batch(epoch, rows done, rows of the
    epoch)`` after each step. ``loss_module`` (a data-parallel run's DDP wrapper of ``EnergyLoss``)
    computes the training energy in place of the model; ``on_state`` receives every epoch's state
    (a cluster's checkpoints).
    """
    hardware = hardware or Hardware()
    hardware.apply_threads()
    device = hardware.torch_device()
    torch.manual_seed(config.seed)
    order_gen, noise_gen = _generators(device, config.seed)
    model.to(device)
    streamed = not torch.is_tensor(train)
    # streamed runs (large data, where speed is the point) step with the fused AdamW kernel, 1.3x
    # the steps/s of the per-tensor loop on a CPU; in memory keeps the loop, so a seed gives the
    # weights it always gave
    optimiser = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay,
                                  fused=True if streamed else None)
    scaler = hardware.scaler(device)
    if not streamed:
        train = train.to(device)
    val = val.to(device)
    result = FitResult()
    best, best_state, stale, first = math.inf, copy.deepcopy(model.state_dict()), 0, 1

    def generator_states() -> dict[str, torch.Tensor]:
        states = {"order": order_gen.get_state()}
        if noise_gen is not order_gen:
            states["noise"] = noise_gen.get_state()
        return states

    def snapshot(epoch: int) -> TrainingState:
        return TrainingState(epoch=epoch, model=copy.deepcopy(model.state_dict()), best_model=best_state,
                             optimiser=copy.deepcopy(optimiser.state_dict()), generators=generator_states(),
                             best=best, best_epoch=result.best_epoch, stale=stale,
                             history={"train_energy": list(result.train_energy),
                                      "val_energy": list(result.val_energy)},
                             fingerprint=checkpointing.fingerprint if checkpointing else {})

    energy = loss_module if loss_module is not None else model.training_energy

    if checkpointing is not None and checkpointing.resume:
        state = load_checkpoint(checkpointing.directory, checkpointing.fingerprint)
        model.load_state_dict(state.model)
        optimiser.load_state_dict(state.optimiser)
        order_gen.set_state(state.generators["order"])
        if "noise" in state.generators and noise_gen is not order_gen:
            noise_gen.set_state(state.generators["noise"])
        best, best_state, stale = state.best, {k: v.to(device) for k, v in state.best_model.items()}, state.stale
        result.best_epoch, result.resumed_from, first = state.best_epoch, state.epoch, state.epoch + 1
        result.train_energy, result.val_energy = state.history["train_energy"], state.history["val_energy"]
        if stale >= config.patience or first > config.epochs:
            first = config.epochs + 1  # the checkpoint's run had finished: nothing left but the bundle
    last = snapshot(first - 1) if checkpointing is not None else None
    rows_seen, started = 0, time.perf_counter()
    epoch = first
    try:
        for epoch in range(first, config.epochs + 1):
            model.train()
            total, n, epoch_rows = 0.0, 0, train.rows if streamed else train.shape[0]
            batches = train.batches(epoch) if streamed else _memory_batches(train, config.batch_size, order_gen)
            for batch in batches:
                if streamed:
                    with torch.no_grad():
                        batch = model.preprocess(torch.from_numpy(batch).to(device, non_blocking=True))
                with hardware.autocast(device):
                    cost, reg = energy(batch, noise_gen)
                    loss = E.loss_functional(cost + reg)
                optimiser.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimiser)
                scaler.update()
                total += float(loss.detach()) * batch.shape[0]
                n += batch.shape[0]
                if on_batch is not None:
                    on_batch(epoch, n, epoch_rows)
            rows_seen += n
            val_energy = float(scoring_energies(model, val).mean())
            result.train_energy.append(total / max(n, 1))
            result.val_energy.append(val_energy)
            if on_epoch is not None:
                on_epoch(epoch, total / max(n, 1), val_energy)
            if not math.isfinite(val_energy):
                result.stopped = f"validation energy became {val_energy} at epoch {epoch}; lower --lr"
                break
            if val_energy < best and (best == math.inf or best - val_energy > 1e-7 * abs(best)):
                best, best_state, stale, result.best_epoch = val_energy, copy.deepcopy(model.state_dict()), 0, epoch
            else:
                stale += 1
            state = snapshot(epoch) if on_state is not None or checkpointing is not None else None
            if on_state is not None:
                on_state(state)
            if checkpointing is not None:
                last = state
                if checkpointing.every and epoch % checkpointing.every == 0:
                    save_checkpoint(checkpointing.directory, last)
            if stale >= config.patience:
                result.stopped = f"early stop: no better validation energy for {config.patience} epochs"
                break
    except BaseException as exc:
        if isinstance(exc, Exception) or checkpointing is None:
            raise
        save_checkpoint(checkpointing.directory, last)
        code = 143 if type(exc).__name__ == "Terminated" else 130
        raise Interrupted(f"stopped in epoch {epoch}; nothing was written but the checkpoint of epoch {last.epoch} "
                          f"({checkpointing.directory}); go on with: {checkpointing.command or 'resume=True'}",
                          exit_code=code) from None
    if rows_seen:
        result.rows_per_s = rows_seen / max(time.perf_counter() - started, 1e-9)
    if checkpointing is not None and checkpointing.every and last is not None:
        save_checkpoint(checkpointing.directory, last)  # the final epoch too, so --resume can rebuild the bundle
    model.load_state_dict(best_state)
    model.to("cpu")
    model.eval()
    return result
