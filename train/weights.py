"""Weights in and out of a bundle: safetensors plus the manifest's architecture config."""

from __future__ import annotations

from pathlib import Path

from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from aeserve.atomic import default_mode
from aeserve.bundle import WEIGHTS, Bundle
from aeserve.errors import BundleError
from aeserve.train.config import ModelConfig
from aeserve.train.network import EnergyAutoencoder
from aeserve.train.registry import build_model

__all__ = ["save_weights", "load_model"]


def save_weights(model: EnergyAutoencoder, directory: Path) -> None:
    """Write the model's parameters and buffers as ``weights.safetensors`` (no pickle)."""
    tensors = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    save_file(tensors, str(directory / WEIGHTS), metadata={"kind": model.kind})
    (directory / WEIGHTS).chmod(default_mode())  # safetensors writes 0600, whatever the umask


def load_model(bundle: Bundle) -> EnergyAutoencoder:
    """Rebuild the torch model of ``bundle`` from its config and safetensors weights."""
    config = ModelConfig.from_dict(bundle.manifest.architecture.to_flat_dict())
    if config.kind != bundle.kind:
        raise BundleError(f"{bundle.path}: manifest kind {bundle.kind!r} disagrees with "
                          f"architecture kind {config.kind!r}")
    model = build_model(config)
    try:
        state = load_file(str(bundle.file(WEIGHTS)))
    except FileNotFoundError:
        raise BundleError(f"{bundle.path}: {WEIGHTS} is missing") from None
    except SafetensorError as exc:  # not safetensors (a pickle, say): refused, never interpreted
        raise BundleError(f"{bundle.path / WEIGHTS}: not a safetensors file ({exc})") from None
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise BundleError(f"{bundle.path / WEIGHTS}: does not match the architecture "
                          f"({str(exc).splitlines()[0]})") from None
    return model.eval()
