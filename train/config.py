"""The model config: layer sizes every kind shares, plus the options the kind owns.

``ModelConfig(kind="vae", n_features=30, latent=4, beta=0.5)`` hands ``beta`` to the VAE's
options record (``VariationalOptions`` in :mod:`aeserve.train.options`), which checks it; an
option the kind does not have is an :class:`~aeserve.errors.OptionError` naming it. The
config is saved flat in the manifest's ``architecture`` beside the weights (nanoGPT's way).
Library errors name config fields, not command-line flags; the CLI adds its flags.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from aeserve.errors import BundleError, OptionError

__all__ = ["ACTIVATION_NAMES", "COST_NAMES", "ARCHES", "KindOptions", "ModelConfig"]

ACTIVATION_NAMES = ("relu", "tanh", "sigmoid")
COST_NAMES = ("mse", "bce", "mixed")
ARCHES = ("mlp", "conv", "conv1d")


@dataclass(frozen=True)
class KindOptions:
    """A kind's own options (subclassed next to each kind); this base has none."""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):  # NaN and inf pass every range check: refuse them first
            value = getattr(self, f.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise OptionError(f.name, f"{f.name} must be a finite number, got {value}")
        self.validate()

    def validate(self) -> None:
        """Raise OptionError for a value out of range (subclasses extend)."""

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """The option names."""
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def create(cls, kind: str, values: dict[str, Any]) -> "KindOptions":
        """The options of ``kind`` from ``values``; OptionError for a name it does not have."""
        for name in values:
            if name not in cls.names():
                owned = ", ".join(cls.names()) or "none"
                raise OptionError(name, f"option {name!r} does not apply to kind {kind!r} (its options: {owned})")
        return cls(**values)


@dataclass(init=False)
class ModelConfig:
    """Architecture and energy hyper-parameters; saved in the manifest beside the weights."""

    kind: str
    n_features: int
    hidden: tuple[int, ...]
    latent: int
    activation: str
    cost: str           # C: mse | bce
    arch: str           # mlp | conv (images: rows are flattened (C, H, W) pixels) | conv1d (series windows)
    image_shape: tuple[int, ...]  # conv: (C, H, W); conv1d: (channels, 1, window), a window's channel-major layout
    channels: tuple[int, ...]     # conv, conv1d: channels of the stride-2 convolutions (3x3; 1x3 along the window)
    members: int        # ensemble: members whose energies are averaged (1: a single model)
    table: tuple[str, ...]  # mixed: each column 'numeric', 'binary' or 'categorical:K', '?' if seen missing
    options: KindOptions

    def __init__(self, *, kind: str, n_features: int, hidden=(256, 64), latent: int = 8, activation: str = "relu",
                 cost: str = "mse", arch: str = "mlp", image_shape=(), channels=(16, 32), members: int = 1,
                 table=(), **options: Any):
        from aeserve.train.registry import get_kind

        self.kind, self.n_features, self.latent = kind, int(n_features), int(latent)
        self.hidden = tuple(int(h) for h in hidden)
        self.image_shape = tuple(int(v) for v in image_shape)
        self.channels = tuple(int(v) for v in channels)
        self.activation, self.cost, self.arch, self.members = activation, cost, arch, int(members)
        self.table = tuple(str(c) for c in table)
        self._validate()
        self.options = get_kind(kind).options_type.create(kind, options)

    def _validate(self) -> None:
        for option, value, choices in (("arch", self.arch, ARCHES), ("activation", self.activation, ACTIVATION_NAMES),
                                       ("cost", self.cost, COST_NAMES)):
            if value not in choices:
                raise OptionError(option, f"unknown {option} {value!r}; choose from {', '.join(choices)}")
        if (self.cost == "mixed") != bool(self.table):
            raise OptionError("cost", "cost mixed goes with a table of typed columns (and only with one)")
        if self.table and (self.arch != "mlp" or self.n_features != 2 * len(self.table)):
            raise OptionError("arch", f"a table of {len(self.table)} typed columns takes arch mlp and "
                                      f"{2 * len(self.table)} encoded values per row, got {self.arch}, {self.n_features}")
        if self.members < 1:
            raise OptionError("members", f"members must be >= 1, got {self.members}")
        if self.latent < 1 or any(h < 1 for h in self.hidden):
            raise OptionError("hidden", f"layer sizes must be positive (hidden={self.hidden}, latent={self.latent})")
        if self.arch == "conv":
            if len(self.image_shape) != 3 or math.prod(self.image_shape) != self.n_features:
                raise OptionError("arch", f"arch conv needs image rows of shape (C, H, W) = {self.n_features} values, "
                                          f"got image_shape {self.image_shape}")
            step = 2 ** len(self.channels)
            if self.image_shape[1] % step or self.image_shape[2] % step:
                raise OptionError("channels", f"arch conv with {len(self.channels)} stride-2 layers needs height "
                                              f"and width divisible by {step}, got "
                                              f"{self.image_shape[1]}x{self.image_shape[2]}")
        if self.arch == "conv1d":
            if len(self.image_shape) != 3 or self.image_shape[1] != 1 or math.prod(self.image_shape) != self.n_features:
                raise OptionError("arch", f"arch conv1d takes windows of a series (channels, 1, window) = "
                                          f"{self.n_features} values, got {self.image_shape}")
            step = 2 ** len(self.channels)
            if self.image_shape[2] % step:
                raise OptionError("channels", f"arch conv1d with {len(self.channels)} stride-2 layers needs a window "
                                              f"divisible by {step}, got {self.image_shape[2]}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready flat dict: the shared fields, then the kind's options (tuples become lists)."""
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "options"}
        data.update(dataclasses.asdict(self.options))
        return {k: list(v) if isinstance(v, tuple) else v for k, v in data.items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelConfig":
        """Inverse of ``to_dict``. Options of other kinds are ignored (schema-1 bundles saved every
        kind's options); a key no kind knows is a BundleError."""
        from aeserve.train.registry import all_option_names, get_kind

        shared = {f.name for f in dataclasses.fields(cls)} - {"options"}
        own = set(get_kind(str(data.get("kind"))).options_type.names())
        unknown = set(data) - shared - all_option_names()
        if unknown:
            raise BundleError(f"architecture has unknown keys: {', '.join(sorted(unknown))}")
        try:
            return cls(**{k: v for k, v in data.items() if k in shared or k in own})
        except OptionError as exc:
            raise BundleError(f"architecture: {exc}") from None
