"""OpenVINO backend: the bundle's ONNX graphs compiled for the CPU by OpenVINO, no conversion
step for the user.

Each graph is read from its bytes (after the bundle's ONNX checks, as for ONNX Runtime) and
compiled with ``INFERENCE_PRECISION_HINT=f32``: OpenVINO would otherwise run bf16 on CPUs
that have it, which changes the energies. ``precision="int8"`` runs the static int8 IR
graphs NNCF wrote at export (``aeserve export --quantize int8``); ``precision="bf16"`` runs
the fp32 graphs with bf16 arithmetic, which is fast only where the CPU has AMX. ``hint="throughput"`` (file scoring) keeps several
batches in flight on a pool of asynchronous infer requests; ``hint="latency"`` (the server)
runs one request per call. Infer requests are per thread, so ``run`` is thread-safe.
"""

from __future__ import annotations

import threading

import numpy as np
import openvino as ov

from aeserve.bundle import Bundle
from aeserve.errors import BackendUnavailable
from aeserve.onnx_guard import check_hash, checked_graph_bytes
from aeserve.serve.backends import BackendBase

__all__ = ["OpenVinoBackend"]

HINTS = {"throughput": "THROUGHPUT", "latency": "LATENCY"}
#: precision -> (the manifest's graph set, OpenVINO's inference precision)
PRECISIONS = {"fp32": ("fp32", "f32"), "int8": ("int8-static", "f32"), "bf16": ("fp32", "bf16")}


class OpenVinoBackend(BackendBase):
    """Runs the bundle's ONNX graphs (or its static int8 IR) with OpenVINO on the CPU."""

    name = "openvino"

    def __init__(self, bundle: Bundle, device: str = "auto", *, precision: str = "fp32", hint: str = "throughput",
                 threads: int = 0):
        if device not in ("auto", "cpu"):
            raise BackendUnavailable(f"openvino runs on the CPU here; --device {device} needs another backend")
        if precision not in PRECISIONS:
            raise BackendUnavailable(f"openvino: unknown precision {precision!r}; use {', '.join(PRECISIONS)}")
        if hint not in HINTS:
            raise BackendUnavailable(f"openvino: unknown hint {hint!r}; use throughput or latency")
        self.graphs, self.inference_precision = PRECISIONS[precision]
        if bundle.manifest.graph("energy", self.graphs) is None and precision == "int8":
            raise BackendUnavailable(f"openvino: {bundle.path} has no static int8 graphs; run `aeserve export "
                                     f"{bundle.path} --quantize int8` with nncf installed")
        bundle.graph("energy", self.graphs)  # BundleError now, not at the first call
        self.bundle, self.hint, self.threads, self.precision = bundle, hint, threads, precision
        self.core = ov.Core()
        self._compiled: dict[str, ov.CompiledModel] = {}
        self._local = threading.local()
        self._lock = threading.Lock()

    def _model(self, graph: str) -> ov.CompiledModel:
        compiled = self._compiled.get(graph)
        if compiled is None:
            with self._lock:
                compiled = self._compiled.get(graph)
                if compiled is None:
                    config = {"PERFORMANCE_HINT": HINTS[self.hint],
                              "INFERENCE_PRECISION_HINT": self.inference_precision}
                    if self.threads:
                        config["INFERENCE_NUM_THREADS"] = self.threads
                    try:
                        compiled = self.core.compile_model(self._read(graph), "CPU", config)
                    except RuntimeError as exc:
                        raise BackendUnavailable(f"{self.bundle.graph_file(graph, self.graphs)}: OpenVINO could "
                                                 f"not compile it ({str(exc).splitlines()[0][:200]})") from None
                    self._compiled[graph] = compiled
        return compiled

    def _read(self, graph: str) -> ov.Model:
        """The graph as an OpenVINO model: ONNX bytes after the bundle's checks, or IR (.xml and
        its .bin, both hashed by the manifest) for the static int8 graphs."""
        if self.graphs == "fp32":
            return self.core.read_model(checked_graph_bytes(self.bundle, graph), b"")
        xml = self.bundle.graph(graph, self.graphs).file
        if not xml.endswith(".xml"):
            raise BackendUnavailable(f"{self.bundle.path}: {xml!r} is not OpenVINO IR (.xml)")
        files = {rel: self.bundle.hashed_file(rel).read_bytes() for rel in (xml, xml[:-4] + ".bin")}
        for rel, data in files.items():
            check_hash(self.bundle, rel, data)
        return self.core.read_model(*files.values())

    def preload(self) -> None:
        """Compile every graph now, not at its first call (a server loads before it swaps)."""
        for graph in self.bundle.manifest.graphs.get(self.graphs, {}):
            self._model(graph)

    def _request(self, graph: str) -> ov.InferRequest:
        requests = getattr(self._local, "requests", None)
        if requests is None:
            requests = self._local.requests = {}
        if graph not in requests:
            requests[graph] = self._model(graph).create_infer_request()
        return requests[graph]

    def _outputs(self, graph: str, outputs: list[str] | None) -> list[str]:
        return outputs or list(self.bundle.graph(graph, self.graphs).outputs)

    def run(self, graph: str, feeds: dict[str, np.ndarray], outputs: list[str] | None = None) -> list[np.ndarray]:
        """The ``outputs`` of ``graph`` (default: all, in the graph record's order)."""
        request = self._request(graph)
        request.infer(feeds)
        return [request.get_tensor(name).data.copy() for name in self._outputs(graph, outputs)]

    def run_batches(self, graph: str, batches: list[dict[str, np.ndarray]],
                    outputs: list[str] | None = None) -> list[list[np.ndarray]]:
        """``run`` for several batches with up to the compiled model's optimal number of
        requests in flight; results in batch order. Requests are started and waited for from
        this thread (no Python callbacks on OpenVINO's threads: those need the GIL, and a
        compiled model destroyed while one waits for it never finishes joining its threads)."""
        names = self._outputs(graph, outputs)
        if len(batches) < 2 or self.hint != "throughput":
            return [self.run(graph, feeds, names) for feeds in batches]
        pool = self._pool(graph)
        results: list[list[np.ndarray]] = []
        in_flight: list[ov.InferRequest] = []
        for feeds in batches:
            if len(in_flight) == len(pool):  # the oldest request's slot is needed: collect it
                results.append(self._collect(in_flight.pop(0), names))
            request = pool[(len(results) + len(in_flight)) % len(pool)]
            request.start_async(feeds)
            in_flight.append(request)
        results.extend(self._collect(request, names) for request in in_flight)
        return results

    @staticmethod
    def _collect(request: ov.InferRequest, names: list[str]) -> list[np.ndarray]:
        request.wait()
        return [request.get_tensor(name).data.copy() for name in names]

    def _pool(self, graph: str) -> list[ov.InferRequest]:
        """This thread's requests for ``graph``: as many as OpenVINO finds optimal for throughput."""
        pools = getattr(self._local, "pools", None)
        if pools is None:
            pools = self._local.pools = {}
        if graph not in pools:
            compiled = self._model(graph)
            jobs = max(1, int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")))
            pools[graph] = [compiled.create_infer_request() for _ in range(jobs)]
        return pools[graph]

    def describe(self) -> str:
        """OpenVINO version, device, hint and precision."""
        what = {"fp32": "f32", "int8": "static int8", "bf16": "bf16"}[self.precision]
        return f"openvino {ov.__version__} (CPU, {self.hint}, {what})"

    def close(self) -> None:
        """Drop the compiled models and their requests."""
        with self._lock:
            self._compiled.clear()
            self._local = threading.local()
