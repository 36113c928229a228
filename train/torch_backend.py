"""The torch reference backend: the same graph modules that export traces, run eagerly."""

from __future__ import annotations

import threading

import numpy as np
import torch

from aeserve.bundle import Bundle
from aeserve.errors import BackendUnavailable
from aeserve.train.graphs import graph_io, graph_modules
from aeserve.train.weights import load_model

__all__ = ["TorchBackend"]


class TorchBackend:
    """Reference backend from ``weights.safetensors``; ``device`` may be "cpu" or "cuda"."""

    name = "torch"

    def __init__(self, bundle: Bundle, device: str = "cpu", precision: str = "fp32"):
        if precision != "fp32":
            raise BackendUnavailable(f"torch backend: fp32 only; {precision} graphs run on onnxruntime")
        device = "cpu" if device == "auto" else device
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise BackendUnavailable("torch backend: --device cuda asked for, but torch sees no CUDA GPU")
        self.device = torch.device(device)
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
