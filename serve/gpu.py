"""What GPU is here, without torch: cuda-bindings when installed, else ``nvidia-smi``."""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from functools import lru_cache

__all__ = ["GpuInfo", "gpu_info", "slug"]


@dataclass(frozen=True)
class GpuInfo:
    """Device 0's name and compute capability (major, minor)."""

    name: str
    compute_capability: tuple[int, int]

    @property
    def sm(self) -> str:
        """``sm90`` style tag."""
        return f"sm{self.compute_capability[0]}{self.compute_capability[1]}"


def slug(text: str) -> str:
    """Lower-case, filesystem-safe form of a device name: 'NVIDIA H100 80GB HBM3' -> 'nvidia-h100-80gb-hbm3'."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def _from_cuda_bindings() -> GpuInfo | None:
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        return None
    err, count = cudart.cudaGetDeviceCount()
    if err != cudart.cudaError_t.cudaSuccess or count < 1:
        return None
    err, props = cudart.cudaGetDeviceProperties(0)
    if err != cudart.cudaError_t.cudaSuccess:
        return None
    name = props.name.decode() if isinstance(props.name, bytes) else str(props.name)
    return GpuInfo(name.strip("\x00 "), (int(props.major), int(props.minor)))


def _from_nvidia_smi() -> GpuInfo | None:
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        text = subprocess.run(["nvidia-smi", "--query-gpu=name,compute_cap", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=20, check=True).stdout
    except (subprocess.SubprocessError, OSError):
        return None
    first = text.strip().splitlines()[0] if text.strip() else ""
    if "," not in first:
        return None
    name, cap = (part.strip() for part in first.rsplit(",", 1))
    major, _, minor = cap.partition(".")
    return GpuInfo(name, (int(major), int(minor or 0)))


@lru_cache(maxsize=1)
def gpu_info() -> GpuInfo | None:
    """Device 0, or None when no NVIDIA GPU is visible."""
    return _from_cuda_bindings() or _from_nvidia_smi()
