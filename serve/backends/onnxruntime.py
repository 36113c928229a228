"""ONNX Runtime backend: one InferenceSession per graph, created on first use."""

from __future__ import annotations

import threading

import numpy as np
import onnxruntime as ort

from aeserve.bundle import Bundle
from aeserve.errors import BackendUnavailable
from aeserve.onnx_guard import check_onnx_bytes

__all__ = ["OnnxRuntimeBackend"]

_PREFERRED = ("CUDAExecutionProvider", "CPUExecutionProvider")


class OnnxRuntimeBackend:
    """Runs the bundle's .onnx graphs; sessions are thread-safe for concurrent ``run``."""

    name = "onnxruntime"

    def __init__(self, bundle: Bundle, device: str = "auto", *, providers: list[str] | None = None,
                 threads: int = 0, precision: str = "fp32"):
        self.bundle = bundle
        self.precision = precision
        bundle.graph("energy", precision)  # BundleError now, not at the first call
        available = ort.get_available_providers()
        if providers is None:
            if device == "cuda" and "CUDAExecutionProvider" not in available:
                raise BackendUnavailable("onnxruntime here has no CUDAExecutionProvider: "
                                         "pip install 'aeserve[gpu]' (onnxruntime-gpu) on an NVIDIA host")
            wanted = {"auto": _PREFERRED, "cuda": _PREFERRED, "cpu": ("CPUExecutionProvider",)}.get(device)
            if wanted is None:
                raise BackendUnavailable(f"onnxruntime: unknown device {device!r}; use auto, cpu or cuda")
            providers = [p for p in wanted if p in available]
        self.providers = providers
        self.threads = threads
        self._sessions: dict[str, ort.InferenceSession] = {}
        self._lock = threading.Lock()

    def _session(self, graph: str) -> ort.InferenceSession:
        session = self._sessions.get(graph)
        if session is None:
            with self._lock:
                session = self._sessions.get(graph)
                if session is None:
                    options = ort.SessionOptions()
                    options.intra_op_num_threads = self.threads
                    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
                    path = self.bundle.graph_file(graph, self.precision)
                    model = path.read_bytes()
                    check_onnx_bytes(model, str(path))  # standard operator domains, no external data
                    # from bytes, not from the path: the session then has no directory to read files from
                    session = ort.InferenceSession(model, options, providers=self.providers)
                    self._sessions[graph] = session
        return session

    def run(self, graph: str, feeds: dict[str, np.ndarray], outputs: list[str] | None = None) -> list[np.ndarray]:
        """The ``outputs`` of ``graph`` (default: all, in the graph record's order); ONNX Runtime
        computes only what they need."""
        return self._session(graph).run(outputs or list(self.bundle.graph(graph).outputs), feeds)

    def describe(self) -> str:
        """Library version and execution providers."""
        precision = "" if self.precision == "fp32" else f", {self.precision}"
        return f"onnxruntime {ort.__version__} ({', '.join(self.providers)}{precision})"
