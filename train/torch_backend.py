"""The torch reference backend: the same graph modules that export traces, run eagerly.

Eager torch allocates a fresh tensor for every intermediate. glibc's malloc hands large
blocks back to the kernel when they are freed and takes them again on the next call, so every
elementwise op of the energy (preprocessing, residual, square) and every bias copy paid page
faults. At start-up the backend therefore asks glibc (``mallopt``) to serve blocks below
64 MiB from the heap and keep up to 256 MiB of freed memory for reuse. It is a process-wide
setting (what PyTorch's CPU tuning guide gets from jemalloc or tcmalloc), made only on glibc.
What it is worth: ``docs/measurements.md``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import threading

import numpy as np
import torch

from aeserve.bundle import Bundle
from aeserve.errors import BackendUnavailable
from aeserve.serve.backends import BackendBase
from aeserve.train.graphs import graph_io, graph_modules
from aeserve.train.weights import load_model

__all__ = ["TorchBackend", "keep_freed_memory"]

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)


@functools.lru_cache(maxsize=None)
def keep_freed_memory(mmap_below: int = 64 << 20, keep: int = 256 << 20) -> bool:
    """Ask glibc's malloc to serve blocks under ``mmap_below`` bytes from the heap and keep up
    to ``keep`` freed bytes instead of returning them to the kernel. False where the C library
    is not glibc (nothing changes there)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, mmap_below)) and bool(mallopt(_M_TRIM_THRESHOLD, keep))


class TorchBackend(BackendBase):
    """Reference backend from ``weights.safetensors``; ``device`` may be "cpu" or "cuda"."""

    name = "torch"

    def __init__(self, bundle: Bundle, device: str = "cpu", precision: str = "fp32"):
        if precision != "fp32":
            raise BackendUnavailable(f"torch backend: fp32 only; {precision} graphs run on onnxruntime")
        device = "cpu" if device == "auto" else device
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise BackendUnavailable("torch backend: --device cuda asked for, but torch sees no CUDA GPU")
        self.device = torch.device(device)
        if self.device.type == "cpu":
            keep_freed_memory()
        model = load_model(bundle).to(self.device)
        self.modules = graph_modules(model)
        self.io = graph_io(model)
        self._lock = threading.Lock()  # eager modules are not documented as thread-safe

    def run(self, graph: str, feeds: dict[str, np.ndarray], outputs: list[str] | None = None) -> list[np.ndarray]:
        """The ``outputs`` of ``graph`` (default: all, in the graph record's order)."""
        record = self.io[graph]
        x = torch.from_numpy(feeds[record.inputs[0]]).to(self.device)
        with self._lock, torch.inference_mode():
            out = self.modules[graph](x)
        out = dict(zip(record.outputs, out if isinstance(out, tuple) else (out,)))
        return [out[name].cpu().numpy() for name in (outputs or record.outputs)]

    def close(self) -> None:
        """Drop the modules (and, on a GPU, the memory they hold)."""
        self.modules = {}
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def describe(self) -> str:
        """torch version and device."""
        return f"torch {torch.__version__} ({self.device})"
