"""The registry of model kinds (torchvision's ``register_model`` / ``get_model`` / ``list_models``).

Kinds register themselves in :mod:`aeserve.train.kinds`; looking one up imports that module,
so ``get_kind("vae")`` works without importing it first.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from aeserve.errors import InputError

if TYPE_CHECKING:
    from aeserve.train.config import ModelConfig
    from aeserve.train.network import EnergyAutoencoder

__all__ = ["register_kind", "get_kind", "list_kinds", "build_model", "all_option_names"]

_KINDS: dict[str, type["EnergyAutoencoder"]] = {}


def register_kind(name: str) -> Callable[[type["EnergyAutoencoder"]], type["EnergyAutoencoder"]]:
    """Class decorator: make a model kind available to ``get_kind`` under ``name``."""
    def wrap(cls: type["EnergyAutoencoder"]) -> type["EnergyAutoencoder"]:
        if name in _KINDS:
            raise ValueError(f"kind {name!r} registered twice")
        from aeserve.train.options import KIND_OPTIONS

        cls.kind = name
        cls.options_type = KIND_OPTIONS[name]  # its options record (train/options.py)
        _KINDS[name] = cls
        return cls
    return wrap


def _registered() -> dict[str, type["EnergyAutoencoder"]]:
    import aeserve.train.kinds  # noqa: F401  (registers the kinds)

    return _KINDS


def get_kind(name: str) -> type["EnergyAutoencoder"]:
    """The model class registered as ``name``; InputError listing the kinds otherwise."""
    try:
        return _registered()[name]
    except KeyError:
        raise InputError(f"unknown kind {name!r}; choose from {', '.join(list_kinds())}") from None


def list_kinds() -> list[str]:
    """Registered kind names, sorted."""
    return sorted(_registered())


def all_option_names() -> set[str]:
    """Every option any kind owns."""
    return {name for cls in _registered().values() for name in cls.options_type.names()}


def build_model(config: "ModelConfig") -> "EnergyAutoencoder":
    """Instantiate the model for ``config.kind``: one, or an ensemble of ``config.members``
    (each initialised from the next draws of torch's random generator)."""
    kind = get_kind(config.kind)
    if config.members == 1:
        return kind(config)
    from aeserve.train.ensemble import Ensemble

    return Ensemble(config, [kind(config) for _ in range(config.members)])
