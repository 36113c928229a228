"""Where and in what precision training runs: ``--device``, ``--precision``, ``--threads``.

The bundle is the same whatever trained it: the model goes back to the CPU in float32 before
its weights are written and its graphs exported (and checked against it), so only the weights'
values depend on the device and precision, as on any other seed of rounding.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from aeserve.errors import OptionError

__all__ = ["PRECISIONS", "Hardware", "resolve_device"]

#: training precisions: float32, or autocast to bfloat16 / float16 (the latter with loss scaling)
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(spec: str = "cpu") -> torch.device:
    """``auto`` (the first CUDA device torch sees, else the CPU), ``cpu``, ``cuda`` or ``cuda:N``;
    an OptionError naming ``device`` when CUDA is asked for and torch sees none."""
    spec = (spec or "cpu").strip().lower()
    if spec == "auto":
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if spec == "cuda" or spec.startswith("cuda:"):
        index = spec.partition(":")[2] or "0"
        if not index.isdigit():
            raise OptionError("device", f"expected cuda or cuda:N, got {spec!r}")
        if not torch.cuda.is_available():
            raise OptionError("device", f"{spec}: torch {torch.__version__} sees no CUDA device "
                                        f"({'a CPU-only build' if torch.version.cuda is None else 'no GPU visible'}); "
                                        "use --device cpu or auto")
        if int(index) >= torch.cuda.device_count():
            raise OptionError("device", f"{spec}: torch sees {torch.cuda.device_count()} CUDA device(s)")
        return torch.device(f"cuda:{index}")
    raise OptionError("device", f"unknown device {spec!r}; choose auto, cpu, cuda or cuda:N")


@dataclass(frozen=True)
class Hardware:
    """The device, precision and CPU threads of one training run."""

    device: str = "cpu"
    precision: str = "fp32"
    threads: int = 0  # 0: torch's default

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise OptionError("precision", f"unknown precision {self.precision!r}; choose {', '.join(PRECISIONS)}")
        if self.threads < 0:
            raise OptionError("threads", f"threads must be >= 0, got {self.threads}")

    def torch_device(self) -> torch.device:
        """The resolved device (see ``resolve_device``)."""
        return resolve_device(self.device)

    def apply_threads(self) -> None:
        """Set torch's intra-op threads when asked for."""
        if self.threads:
            torch.set_num_threads(self.threads)

    def autocast(self, device: torch.device):
        """The forward pass's context: autocast to the precision, or nothing for fp32."""
        dtype = PRECISIONS[self.precision]
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=device.type, dtype=dtype)

    def scaler(self, device: torch.device) -> "torch.amp.GradScaler":
        """Loss scaling: on for fp16 (its gradients underflow), a pass-through otherwise."""
        return torch.amp.GradScaler(device.type, enabled=self.precision == "fp16")
