"""ONNX Runtime backend: one InferenceSession per graph, created on first use.

ONNX Runtime lists the CUDA provider as available even when its CUDA/cuDNN libraries fail
to load, and then runs on the CPU without saying so. So with CUDA wanted, the energy graph's
session is created at start-up and ``session.get_providers()`` is checked: with
``device="cuda"`` a missing CUDA provider is BackendUnavailable naming the library that did
not load; with ``device="auto"`` the backend runs on the CPU and ``describe()`` says why.
``onnxruntime.preload_dlls()`` (ORT >= 1.21) is tried first, so CUDA and cuDNN installed
from pip are found.
"""

from __future__ import annotations

import os
import threading

import numpy as np
import onnxruntime as ort

from aeserve.bundle import Bundle
from aeserve.errors import BackendUnavailable
from aeserve.onnx_guard import checked_graph_bytes
from aeserve.serve.backends import BackendBase

__all__ = ["OnnxRuntimeBackend"]

_PREFERRED = ("CUDAExecutionProvider", "CPUExecutionProvider")


class OnnxRuntimeBackend(BackendBase):
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
        self.fallback = ""  # why CUDA was wanted but the CPU runs
        self._sessions: dict[str, ort.InferenceSession] = {}
        self._lock = threading.Lock()
        if "CUDAExecutionProvider" in providers:
            _preload_cuda_libraries()
            session = self._session("energy")
            if "CUDAExecutionProvider" not in session.get_providers():
                why = f"onnxruntime's CUDA provider did not start ({_cuda_provider_error()})"
                if device == "cuda":
                    raise BackendUnavailable(f"{why}; install CUDA 12/13 and cuDNN 9 as onnxruntime-gpu "
                                             "documents, or use --device cpu")
                self.fallback = why + "; running on the CPU"
                self.providers = [p for p in providers if p != "CUDAExecutionProvider"]

    def _session(self, graph: str) -> ort.InferenceSession:
        session = self._sessions.get(graph)
        if session is None:
            with self._lock:
                session = self._sessions.get(graph)
                if session is None:
                    options = ort.SessionOptions()
                    options.intra_op_num_threads = self.threads
                    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
                    model = checked_graph_bytes(self.bundle, graph, self.precision)
                    session = ort.InferenceSession(model, options, providers=self.providers)
                    self._sessions[graph] = session
        return session

    def preload(self) -> None:
        """Create every graph's session now, not at its first call (a server loads before it swaps)."""
        for graph in self.bundle.manifest.graphs.get(self.precision, {}):
            self._session(graph)

    def run(self, graph: str, feeds: dict[str, np.ndarray], outputs: list[str] | None = None) -> list[np.ndarray]:
        """The ``outputs`` of ``graph`` (default: all, in the graph record's order); ONNX Runtime
        computes only what they need."""
        return self._session(graph).run(outputs or list(self.bundle.graph(graph).outputs), feeds)

    def describe(self) -> str:
        """Library version and execution providers (and why CUDA is not among them, if it was wanted)."""
        precision = "" if self.precision == "fp32" else f", {self.precision}"
        fallback = f"; {self.fallback}" if self.fallback else ""
        return f"onnxruntime {ort.__version__} ({', '.join(self.providers)}{precision}{fallback})"

    def close(self) -> None:
        """Drop the sessions (and the device memory they hold)."""
        with self._lock:
            self._sessions.clear()


def _preload_cuda_libraries() -> None:
    """``onnxruntime.preload_dlls()`` where it exists (ORT >= 1.21): loads CUDA and cuDNN from
    the nvidia-* pip packages before the CUDA provider looks for them."""
    preload = getattr(ort, "preload_dlls", None)
    if preload is not None:
        try:
            preload()
        except Exception:  # best effort: the provider check after session creation decides
            pass


def _cuda_provider_error() -> str:
    """What fails when the CUDA provider's library is loaded by hand: names the missing CUDA or
    cuDNN library (e.g. 'libcublasLt.so.12: cannot open shared object file')."""
    import ctypes

    capi = os.path.join(os.path.dirname(ort.__file__), "capi")
    candidates = [f for f in os.listdir(capi) if "providers_cuda" in f] if os.path.isdir(capi) else []
    if not candidates:
        return "this onnxruntime has no CUDA provider library; install onnxruntime-gpu"
    try:
        ctypes.CDLL(os.path.join(capi, candidates[0]))
    except OSError as exc:
        return str(exc).splitlines()[0]
    return "its library loads, but the provider did not start; see onnxruntime's log"
