"""The network every kind shares: preprocessing, MLP or convolutional encoder and decoder, and
their traces (outputs with the pre-activations that exact penalties and gradients need).

The model works in the *preprocessed* space ŷ = (y − shift) / scale (clipped to [0, 1] for
the bce cost); ``preprocess``/``postprocess`` carry that transform so exported graphs take
raw data. A kind (:mod:`aeserve.train.kinds`) subclasses ``EnergyAutoencoder`` and defines
its energies, each per row and returned as a tuple of terms summing to the energy:
``training_energy`` (what the loss functional averages) and ``scoring_energy`` (the
deterministic F(y) of anomaly scores, validation and export): (C, R), or (C, R, correction)
for the free energies of ``vae`` and ``lvm``.
"""

from __future__ import annotations

from typing import Callable, ClassVar

import numpy as np
import torch
from torch import nn

from aeserve.manifest import EnergySpec
from aeserve.train import energy as E
from aeserve.train.config import KindOptions, ModelConfig
from aeserve.train.mixed import MixedTable

__all__ = ["ACTIVATIONS", "CONV_GEOMETRY", "EnergyAutoencoder", "mlp"]

ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "relu": torch.relu,
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
}


#: each convolutional arch's layers: kernel, stride, padding (transposed: the same, plus output padding)
CONV_GEOMETRY: dict[str, dict[str, tuple[int, int]]] = {
    "conv": {"kernel_size": (3, 3), "stride": (2, 2), "padding": (1, 1)},
    "conv1d": {"kernel_size": (1, 3), "stride": (1, 2), "padding": (0, 1)},
}


def _output_padding(geometry: dict) -> tuple[int, ...]:
    """The transposed convolution's output padding that gives back the even sizes it halved."""
    return tuple(s - 1 for s in geometry["stride"])


def mlp(sizes: list[int]) -> nn.ModuleList:
    """Dense layers sizes[0] -> sizes[1] -> ... (activations are applied by the traces)."""
    return nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))


class EnergyAutoencoder(nn.Module):
    """Base: h = Enc(ŷ) through an MLP (after stride-2 convolutions for images) with a linear code
    layer, ỹ = Dec(h); F(y) = C(y, ỹ) with no regulariser. Kinds override the energies."""

    kind: ClassVar[str] = ""
    #: the kind's options record (validated by ModelConfig)
    options_type: ClassVar[type[KindOptions]] = KindOptions
    #: what the regulariser term is, for the manifest
    regulariser: ClassVar[str] = "none"
    #: names of the encoder graph's outputs: the code first
    encoder_outputs: ClassVar[tuple[str, ...]] = ("z",)
    #: whether codes are sampled from an N(0, I) prior (else from a Gaussian fitted to codes)
    has_prior: ClassVar[bool] = False

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.options = config.options
        flat = config.n_features
        #: a mixed table's cost and model space (None for plain numeric rows or images)
        self.table = MixedTable(config.table) if config.table else None
        if self.table is not None:
            flat = self.table.width
        self.encoder_convs, self.decoder_convs = nn.ModuleList(), nn.ModuleList()
        if config.arch in CONV_GEOMETRY:
            # conv: 3x3 over images (C, H, W); conv1d: 1x3 over a window's channels (C, 1, W), i.e. a
            # temporal convolution along the window; both stride 2, so each layer halves W (and H)
            geometry = CONV_GEOMETRY[config.arch]
            chans = [config.image_shape[0], *config.channels]
            self.encoder_convs.extend(nn.Conv2d(a, b, **geometry) for a, b in zip(chans[:-1], chans[1:]))
            self.decoder_convs.extend(nn.ConvTranspose2d(b, a, **geometry, output_padding=_output_padding(geometry))
                                      for a, b in reversed(list(zip(chans[:-1], chans[1:]))))
            height, width = config.image_shape[1:]
            for _ in config.channels:
                height, width = -(-height // geometry["stride"][0]), -(-width // geometry["stride"][1])
            self.conv_out = (chans[-1], height, width)
            flat = int(np.prod(self.conv_out))
        sizes = [flat, *config.hidden, config.latent]  # flat: the model space's width
        self.encoder_layers = self._make_encoder(sizes)
        self.decoder_layers = mlp(sizes[::-1])
        self.act = ACTIVATIONS[config.activation]
        # preprocessing ŷ = (y - shift) / scale, set from training data before fitting
        self.register_buffer("shift", torch.zeros(config.n_features))
        self.register_buffer("scale", torch.ones(config.n_features))

    def _make_encoder(self, sizes: list[int]) -> nn.ModuleList:
        return mlp(sizes)

    # -- preprocessing, baked into every graph ------------------------------------------
    def preprocess(self, y: torch.Tensor) -> torch.Tensor:
        """Raw rows -> the model's space ŷ (clipped to [0, 1] for bce)."""
        if self.table is not None:  # encoded table rows (batch, 2 columns) -> (batch, model width)
            return self.table.preprocess(y, self.shift, 1.0 / self.scale)
        # a product with 1/scale: the exported graph multiplies, which is cheaper than Div
        y_hat = (y - self.shift) * (1.0 / self.scale)  # (batch, features)
        return y_hat.clamp(0.0, 1.0) if self.config.cost == "bce" else y_hat

    def postprocess(self, y_hat: torch.Tensor) -> torch.Tensor:
        """Model space -> raw units."""
        return y_hat * self.scale + self.shift

    def set_preprocessing(self, shift: torch.Tensor, scale: torch.Tensor, rows: int = 0) -> None:
        """Set ŷ = (y − shift) / scale from training statistics (and a table's missing prior from
        its ``rows`` training rows), before fitting."""
        self.shift.copy_(shift)
        self.scale.copy_(scale)
        if self.table is not None:
            self.table.set_rows(rows)

    def decoded_rows(self, z: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The decoder graph's outputs from codes: ỹ in raw units; for a table (rows, slot_p)."""
        if self.table is not None:
            return self.table.rows(self.decode_logits(z), self.shift, self.scale)
        return (self.postprocess(self.decode(z)),)

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
        """The encoder graph's outputs in model space, named by ``encoder_outputs``: (z,) here."""
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
    def cost_terms(self, y_hat: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """Each feature's (a table's: each column's) term of C(y, ỹ) from the decoder's last layer."""
        if self.table is not None:
            return self.table.terms(y_hat, out)  # (batch, columns)
        return E.reconstruction_terms(y_hat, out, self.config.cost)  # (batch, features)

    def cost_gradient(self, out: torch.Tensor, y_hat: torch.Tensor) -> torch.Tensor:
        """∂C/∂out (batch, model width)."""
        if self.table is not None:
            return self.table.gradient(out, y_hat)
        return E.cost_gradient(out, y_hat, self.config.cost)

    def cost_at(self, y_hat: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """C(y, Dec(z)) per row (batch,)."""
        return self.cost_terms(y_hat, self.decode_logits(z)).sum(dim=1)

    def cost_terms_at(self, y_hat: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Each feature's term of C(y, Dec(z)): (batch, features), summing to ``cost_at``."""
        return self.cost_terms(y_hat, self.decode_logits(z))

    def regulariser_value(self, y_hat: torch.Tensor, h: torch.Tensor,
                          pres: list[torch.Tensor]) -> torch.Tensor:
        """Weighted R(h) per row (batch,); none here."""
        return torch.zeros_like(h[:, 0])

    def explained_energy(self, y_hat: torch.Tensor) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
        """The scoring energy's terms, and C's per-feature terms (batch, features) that sum to the
        first term: F(y) = C(y, Dec(Enc(y))) + R(h) on clean input -> ((C, R), c)."""
        h, pres = self.encode_trace(y_hat)
        contributions = self.cost_terms_at(y_hat, h)  # (batch, features)
        return (contributions.sum(dim=1), self.regulariser_value(y_hat, h, pres)), contributions

    def scoring_energy(self, y_hat: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The terms of the deterministic F(y), each (batch,), summing to it: (C, R) here."""
        return self.explained_energy(y_hat)[0]

    def training_energy(self, y_hat: torch.Tensor,
                        generator: torch.Generator | None = None) -> tuple[torch.Tensor, ...]:
        """The energy the loss functional averages during training; here the scoring energy."""
        return self.scoring_energy(y_hat)

    @property
    def regulariser_weight(self) -> float:
        """The weight in front of R, for the manifest."""
        return 0.0

    def energy_spec(self) -> EnergySpec:
        """The manifest's energy section."""
        return EnergySpec(cost=self.config.cost, regulariser=self.regulariser, weight=self.regulariser_weight,
                          terms=("reconstruction", "regulariser"), formula="energy = reconstruction + regulariser")
