"""Training checkpoints: resume a long run where it stopped (safetensors and JSON, no pickle).

A checkpoint is a directory: ``state.safetensors`` holds the model's weights, the best epoch's
weights, the optimiser's moment tensors and the random generators' states; ``checkpoint.json``
the epoch, the history, the early-stopping counters, the optimiser's settings and a fingerprint
of what was being trained (model, fit settings, data), so a checkpoint never resumes another run.
Both files are replaced together (written to a sibling, then renamed).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from aeserve.errors import InputError

__all__ = ["CHECKPOINT_JSON", "CHECKPOINT_STATE", "TrainingState", "save_checkpoint", "load_checkpoint",
           "default_checkpoint_dir", "run_fingerprint"]

CHECKPOINT_JSON = "checkpoint.json"
CHECKPOINT_STATE = "state.safetensors"
_FORMAT = "aeserve-training-checkpoint"


def run_fingerprint(config, fit_config, data_sha256: str, **extra) -> dict:
    """What a checkpoint must match to be resumed: the model config, the fit settings, the data's
    sha256 and ``extra`` (JSON values, compared as JSON reads them back)."""
    return json.loads(json.dumps({"model": config.to_dict(), "fit": vars(fit_config), "data": data_sha256, **extra}))


def default_checkpoint_dir(bundle: Path) -> Path:
    """Where ``aeserve train --out BUNDLE`` keeps its checkpoint: ``BUNDLE.checkpoint`` beside it."""
    return bundle.with_name(bundle.name + ".checkpoint")


@dataclass
class TrainingState:
    """Everything a fit loop needs to go on after ``epoch``, on the CPU."""

    epoch: int                                # epochs completed
    model: dict[str, torch.Tensor]
    best_model: dict[str, torch.Tensor]
    optimiser: dict                           # torch optimiser state_dict
    generators: dict[str, torch.Tensor]       # name -> get_state() bytes
    best: float
    best_epoch: int
    stale: int
    history: dict[str, list[float]] = field(default_factory=dict)
    fingerprint: dict = field(default_factory=dict)


def _cpu(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}


def save_checkpoint(directory: Path, state: TrainingState) -> Path:
    """Write ``state`` to ``directory`` (replacing an older checkpoint there only once complete)."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tensors = {f"model.{k}": v for k, v in _cpu(state.model).items()}
    tensors.update({f"best.{k}": v for k, v in _cpu(state.best_model).items()})
    tensors.update({f"generator.{k}": v.to(torch.uint8) for k, v in state.generators.items()})
    moments = {}
    for index, values in state.optimiser["state"].items():
        for name, value in values.items():
            tensor = value if torch.is_tensor(value) else torch.tensor(value)
            tensors[f"optimiser.{index}.{name}"] = tensor.detach().to("cpu").contiguous().clone()
            moments.setdefault(str(index), []).append(name)
    record = {"format": _FORMAT, "version": 1, "epoch": state.epoch, "best": state.best,
              "best_epoch": state.best_epoch, "stale": state.stale, "history": state.history,
              "fingerprint": state.fingerprint, "optimiser": {"param_groups": state.optimiser["param_groups"],
                                                              "state": moments},
              "generators": sorted(state.generators)}
    built = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        save_file(tensors, str(built / CHECKPOINT_STATE), metadata={"what": "aeserve training checkpoint"})
        (built / CHECKPOINT_JSON).write_text(json.dumps(record, indent=1, allow_nan=True))
        old = directory.with_name(f".{directory.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        if directory.exists():
            directory.rename(old)
        built.rename(directory)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(built, ignore_errors=True)
        raise
    return directory


def load_checkpoint(directory: Path, fingerprint: dict | None = None) -> TrainingState:
    """Read a checkpoint; refuse one of another run (its fingerprint differs from ``fingerprint``)
    or one that is not a checkpoint, naming the directory and what differs."""
    directory = Path(directory)
    try:
        record = json.loads((directory / CHECKPOINT_JSON).read_text())
        tensors = load_file(str(directory / CHECKPOINT_STATE))
    except FileNotFoundError:
        raise InputError(f"{directory}: no checkpoint to resume from (train with --checkpoint-every N, or "
                         "interrupt a run with Ctrl-C, to make one)") from None
    except (json.JSONDecodeError, SafetensorError, UnicodeDecodeError) as exc:
        raise InputError(f"{directory}: not a readable checkpoint ({exc})") from None
    if record.get("format") != _FORMAT:
        raise InputError(f"{directory}: not an aeserve training checkpoint")
    if fingerprint is not None:
        theirs = record.get("fingerprint", {})
        differ = sorted(k for k in set(theirs) | set(fingerprint) if theirs.get(k) != fingerprint.get(k))
        if differ:
            raise InputError(f"{directory}: a checkpoint of another run (its {', '.join(differ)} differ from this "
                             "run's); resume with the same data and options, or remove it to start afresh")
    optimiser = {"param_groups": record["optimiser"]["param_groups"],
                 "state": {int(index): {name: tensors[f"optimiser.{index}.{name}"] for name in names}
                           for index, names in record["optimiser"]["state"].items()}}

    def part(prefix: str) -> dict[str, torch.Tensor]:
        return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}

    return TrainingState(epoch=int(record["epoch"]), model=part("model."), best_model=part("best."),
                         optimiser=optimiser, generators=part("generator."), best=float(record["best"]),
                         best_epoch=int(record["best_epoch"]), stale=int(record["stale"]),
                         history={k: list(v) for k, v in record["history"].items()},
                         fingerprint=record.get("fingerprint", {}))
