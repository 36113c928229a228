"""The three graphs of a bundle as torch modules taking and returning raw data.

Export traces exactly these modules, and the torch reference backend runs them, so
ONNX Runtime, TensorRT and torch compute one definition. Preprocessing is inside.
"""

from __future__ import annotations

import torch
from torch import nn

from aeserve.bundle import GRAPH_FILES, GRAPH_INPUTS
from aeserve.manifest import CONTRIBUTIONS, GraphRecord
from aeserve.train.network import EnergyAutoencoder

__all__ = ["EncoderGraph", "DecoderGraph", "EnergyGraph", "graph_modules", "graph_io"]


class EncoderGraph(nn.Module):
    """y (batch, features) raw -> z (batch, latent); VAE: (mu, logvar)."""

    def __init__(self, model: EnergyAutoencoder):
        super().__init__()
        self.model = model

    def forward(self, y: torch.Tensor):
        out = self.model.encode(self.model.preprocess(y))
        return out if len(out) > 1 else out[0]


class DecoderGraph(nn.Module):
    """z (batch, latent) -> ỹ (batch, features) in raw units; a table's rows (value, then
    p(missing), per column) and each categorical column's slot probabilities ``slot_p``."""

    def __init__(self, model: EnergyAutoencoder):
        super().__init__()
        self.model = model

    def forward(self, z: torch.Tensor):
        out = self.model.decoded_rows(z)
        return out if len(out) > 1 else out[0]


class EnergyGraph(nn.Module):
    """y raw -> (energy, *terms, contributions): the scoring energy and the terms summing to it,
    each (batch,), then C's per-feature terms (batch, features), which sum to the first term."""

    def __init__(self, model: EnergyAutoencoder):
        super().__init__()
        self.model = model

    def forward(self, y: torch.Tensor):
        terms, contributions = self.model.explained_energy(self.model.preprocess(y))
        return (sum(terms), *terms, contributions)


def graph_modules(model: EnergyAutoencoder) -> dict[str, nn.Module]:
    """name -> module for the encoder, decoder and energy graphs, in eval mode."""
    model.eval()
    modules = {"encoder": EncoderGraph(model), "decoder": DecoderGraph(model),
               "energy": EnergyGraph(model)}
    return {name: module.eval() for name, module in modules.items()}


def graph_io(model: EnergyAutoencoder) -> dict[str, GraphRecord]:
    """name -> the graph's record (file, input and output tensor names), as the ONNX graphs and
    the manifest hold them."""
    decoder = ("y_tilde", "slot_p") if model.config.table else ("y_tilde",)
    outputs = {"encoder": model.encoder_outputs, "decoder": decoder,
               "energy": ("energy", *model.energy_spec().terms, CONTRIBUTIONS)}
    return {name: GraphRecord(file=GRAPH_FILES[name], inputs=(GRAPH_INPUTS[name],), outputs=tuple(outputs[name]))
            for name in GRAPH_FILES}
