"""Each kind's own options: one record per kind, each field with its default and help text.

A new option is one field here, ``option(default, "help")``: ``ModelConfig`` hands it to the
kind's record (which checks it in ``validate``), the manifest saves it, and ``aeserve train``
gets a flag for it (``--field-name``, generated from these records by ``cli/options.py``,
with the kinds that own it and the default in its help). No torch here, so ``aeserve --help``
builds its flags without importing the kinds.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from typing import Any

from aeserve.errors import OptionError
from aeserve.train.config import KindOptions

__all__ = ["SparseOptions", "DenoisingOptions", "ContractiveOptions", "FreeEnergyOptions", "VariationalOptions",
           "LatentEBMOptions", "KIND_OPTIONS", "OptionHelp", "option", "option_help"]


def option(default: Any, help: str, *, choices: tuple[str, ...] = (), flag: bool = True) -> Any:
    """A field of an options record: ``default``, the flag's ``help`` (without kinds or default),
    its ``choices`` when it takes one of a few words; ``flag=False`` for one set from another flag."""
    return dataclasses.field(default=default, metadata={"help": help, "choices": choices, "flag": flag})


def _check_non_negative(options: KindOptions, *names: str) -> None:
    for name in names:
        value = getattr(options, name)
        if value < 0:
            raise OptionError(name, f"{name} must be >= 0, got {value}")


@dataclass(frozen=True)
class SparseOptions(KindOptions):
    """ae: weight λ of R(h) = λ‖h‖₁ (the seed's sparse code). Its default is chosen with
    benchmarks/quality.py (the figures: ``docs/measurements.md``)."""

    sparsity: float = option(1.0, "weight λ of the sparse code's R(h) = λ‖h‖₁; 0 turns it off")

    def validate(self) -> None:
        _check_non_negative(self, "sparsity")


@dataclass(frozen=True)
class DenoisingOptions(SparseOptions):
    """dae: σ of the Gaussian corruption (preprocessed units) and the fraction of features set to 0."""

    noise: float = option(0.1, "σ of the Gaussian corruption, in standardised units")
    mask: float = option(0.0, "fraction of features zeroed in the corrupted input")

    def validate(self) -> None:
        super().validate()
        _check_non_negative(self, "noise")
        if not 0.0 <= self.mask < 1.0:
            raise OptionError("mask", f"mask must be in [0, 1), got {self.mask}")


@dataclass(frozen=True)
class ContractiveOptions(KindOptions):
    """cae: λ in R(h) = λ‖∂h/∂y‖²_F."""

    contraction: float = option(0.01, "λ in R(h) = λ‖∂h/∂y‖²_F")

    def validate(self) -> None:
        _check_non_negative(self, "contraction")


@dataclass(frozen=True)
class FreeEnergyOptions(KindOptions):
    """Scores: the point energy, or a free energy over ``free_samples`` fixed codes (seeded)."""

    energy: str = option("point", "what a score is: the point energy, or a free energy (lvm: softmin_β over "
                                  "samples around ž; vae: the importance-weighted bound)", choices=("point", "free"))
    free_samples: int = option(64, "free energy: samples of z (lvm), importance samples K (vae)")
    free_seed: int = option(0, "seed of the free energy's fixed samples (aeserve train: --seed)", flag=False)

    def validate(self) -> None:
        if self.energy not in ("point", "free"):
            raise OptionError("energy", f"energy must be point or free, got {self.energy!r}")
        if self.free_samples < 1:
            raise OptionError("free_samples", f"free_samples must be >= 1, got {self.free_samples}")


@dataclass(frozen=True)
class VariationalOptions(FreeEnergyOptions):
    """vae: β in C + β·KL."""

    beta: float = option(1.0, "β in C + β·KL")

    def validate(self) -> None:
        super().validate()
        _check_non_negative(self, "beta")


@dataclass(frozen=True)
class LatentEBMOptions(FreeEnergyOptions):
    """lvm: K steps of size η inferring ž; D(z, z̃) = μ‖z − z̃‖²; R(z) = λ‖z‖²; softmin_β over
    z = ž + σ·ε for the free energy."""

    infer_steps: int = option(10, "gradient steps inferring ž from z̃ = Enc(y)")
    infer_lr: float = option(0.1, "step size of the z-inference")
    distance_weight: float = option(1.0, "μ in D(z, z̃) = μ‖z − z̃‖²")
    latent_weight: float = option(0.01, "λ in R(z) = λ‖z‖²")
    free_beta: float = option(1.0, "free energy: inverse temperature β")
    free_sigma: float = option(0.5, "free energy: spread σ of the samples around ž")

    def validate(self) -> None:
        super().validate()
        _check_non_negative(self, "infer_steps", "infer_lr", "distance_weight", "latent_weight", "free_sigma")
        if self.free_beta <= 0:
            raise OptionError("free_beta", f"free_beta must be > 0, got {self.free_beta}")


#: each kind's options record; ``register_kind`` gives the kind's class its record from here
KIND_OPTIONS: dict[str, type[KindOptions]] = {
    "ae": SparseOptions, "dae": DenoisingOptions, "cae": ContractiveOptions, "vae": VariationalOptions,
    "lvm": LatentEBMOptions,
}


@dataclass(frozen=True)
class OptionHelp:
    """One kind option as a flag sees it: its type, default, help, choices and the kinds that own it."""

    name: str
    type: type
    default: Any
    help: str
    choices: tuple[str, ...]
    kinds: tuple[str, ...]

    def text(self) -> str:
        """'ae, dae: weight ... (default 1)': the flag's help."""
        default = f"{self.default:g}" if isinstance(self.default, float) else str(self.default)
        return f"{', '.join(self.kinds)}: {self.help} (default {default})."


def option_help() -> list[OptionHelp]:
    """Every kind option that has a flag, in the order the records declare them."""
    found: dict[str, OptionHelp] = {}
    for kind, record in KIND_OPTIONS.items():
        types = typing.get_type_hints(record)
        for f in dataclasses.fields(record):
            if not f.metadata.get("flag", True):
                continue
            if f.name in found:
                found[f.name] = dataclasses.replace(found[f.name], kinds=(*found[f.name].kinds, kind))
            else:
                found[f.name] = OptionHelp(f.name, types[f.name], f.default, f.metadata.get("help", ""),
                                           tuple(f.metadata.get("choices", ())), (kind,))
    return list(found.values())
