"""The optimisation profile over the batch axis, and the plan directory's name."""

from __future__ import annotations

from dataclasses import dataclass

from aeserve.bundle import GRAPH_INPUTS, Bundle
from aeserve.errors import InputError
from aeserve.serve.gpu import GpuInfo, slug

__all__ = ["Profile", "plan_dir_name", "input_width", "TIMING_CACHE"]

TIMING_CACHE = "timing.cache"


@dataclass(frozen=True)
class Profile:
    """Batch sizes of the one optimisation profile: min <= opt <= max."""

    min: int = 1
    opt: int = 1024
    max: int = 8192

    @classmethod
    def parse(cls, text: str) -> "Profile":
        """From ``"min,opt,max"``, e.g. ``"1,1024,8192"``."""
        try:
            low, opt, high = (int(v) for v in text.split(","))
        except ValueError:
            raise InputError(f"--batch expects three integers min,opt,max such as 1,1024,8192, got {text!r}") from None
        if not 1 <= low <= opt <= high:
            raise InputError(f"--batch needs 1 <= min <= opt <= max, got {low},{opt},{high}")
        return cls(low, opt, high)

    def shapes(self, width: int) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
        """(min, opt, max) input shapes for a (batch, width) input."""
        return (self.min, width), (self.opt, width), (self.max, width)


def plan_dir_name(gpu: GpuInfo, trt_version: str) -> str:
    """``nvidia-h100-80gb-hbm3-sm90-trt10.13.3``: plans only run where all three match."""
    return f"{slug(gpu.name)}-{gpu.sm}-trt{trt_version}"


def input_width(bundle: Bundle, graph: str) -> int:
    """Width of ``graph``'s input: the latent size for the decoder, else the bundle's features."""
    return bundle.latent_size if GRAPH_INPUTS[graph] == "z" else bundle.n_features
