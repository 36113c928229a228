"""TensorRT backend: deserialised plans, one execution context per graph, its own CUDA stream.

Device and pinned host buffers come from ``cuda-bindings`` (no torch); they grow to the
largest batch seen and are reused. Inputs are copied host->device, the plan runs with
``execute_async_v3`` on the backend's stream, outputs come back device->host.
"""

from __future__ import annotations

import ctypes
import json
import threading
from pathlib import Path

import numpy as np

from aeserve.bundle import Bundle
from aeserve.errors import BackendUnavailable
from aeserve.serve.gpu import GpuInfo, gpu_info

__all__ = ["TensorRTBackend", "find_plan_dir"]


def find_plan_dir(bundle: Bundle, gpu: GpuInfo | None, trt_version: str) -> Path:
    """The plan directory built for this GPU and TensorRT version; else a clear rebuild message."""
    root = bundle.path / "tensorrt"
    records = sorted(root.glob("*/build.json")) if root.is_dir() else []
    if not records:
        raise BackendUnavailable(f"{bundle.path}: no TensorRT plans; build them with "
                                 f"`aeserve export {bundle.path} --format tensorrt` on this GPU host")
    if gpu is None:
        raise BackendUnavailable("tensorrt backend: no NVIDIA GPU visible")
    seen = []
    for path in records:
        record = json.loads(path.read_text())
        if tuple(record["compute_capability"]) == gpu.compute_capability and record["tensorrt"] == trt_version:
            return path.parent
        seen.append(f"{record['gpu']} sm{''.join(map(str, record['compute_capability']))} "
                    f"TensorRT {record['tensorrt']}")
    raise BackendUnavailable(
        f"{bundle.path}: TensorRT plans were built for {'; '.join(seen)}, but this host has {gpu.name} "
        f"{gpu.sm} with TensorRT {trt_version}; rebuild: aeserve export {bundle.path} --format tensorrt")


def _check(result):
    from cuda.bindings import runtime as cudart

    err, *rest = result if isinstance(result, tuple) else (result,)
    if err != cudart.cudaError_t.cudaSuccess:
        raise RuntimeError(f"CUDA call failed: {cudart.cudaGetErrorString(err)[1].decode()}")
    return rest[0] if len(rest) == 1 else rest


class _Buffer:
    """A device allocation plus a pinned host mirror, grown on demand."""

    def __init__(self):
        self.nbytes = 0
        self.device = 0
        self.host = 0

    def ensure(self, nbytes: int) -> None:
        from cuda.bindings import runtime as cudart

        if nbytes <= self.nbytes:
            return
        self.free()
        self.device = int(_check(cudart.cudaMalloc(nbytes)))
        self.host = int(_check(cudart.cudaMallocHost(nbytes)))
        self.nbytes = nbytes

    def host_array(self, shape, dtype) -> np.ndarray:
        count = int(np.prod(shape)) * np.dtype(dtype).itemsize
        raw = (ctypes.c_byte * count).from_address(self.host)
        return np.frombuffer(raw, dtype=dtype).reshape(shape)

    def free(self) -> None:
        from cuda.bindings import runtime as cudart

        if self.nbytes:
            cudart.cudaFree(self.device)
            cudart.cudaFreeHost(self.host)
        self.nbytes = 0


class _Engine:
    def __init__(self, trt, runtime, plan: Path):
        from cuda.bindings import runtime as cudart

        self.trt = trt
        self.engine = runtime.deserialize_cuda_engine(plan.read_bytes())
        if self.engine is None:
            raise BackendUnavailable(f"{plan}: TensorRT could not deserialise it (built for another GPU or "
                                     "TensorRT version?); rebuild with aeserve export --format tensorrt")
        self.context = self.engine.create_execution_context()
        self.stream = _check(cudart.cudaStreamCreate())
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if n not in self.inputs]
        self.buffers = {n: _Buffer() for n in names}
        self.lock = threading.Lock()

    def run(self, feeds: dict[str, np.ndarray], outputs: list[str]) -> list[np.ndarray]:
        from cuda.bindings import runtime as cudart

        h2d, d2h = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        with self.lock:
            for name in self.inputs:
                array = np.ascontiguousarray(feeds[name], dtype=self.trt.nptype(self.engine.get_tensor_dtype(name)))
                buffer = self.buffers[name]
                buffer.ensure(array.nbytes)
                buffer.host_array(array.shape, array.dtype)[...] = array
                _check(cudart.cudaMemcpyAsync(buffer.device, buffer.host, array.nbytes, h2d, self.stream))
                self.context.set_input_shape(name, array.shape)
                self.context.set_tensor_address(name, buffer.device)
            shapes = {}
            for name in self.outputs:
                shape = tuple(self.context.get_tensor_shape(name))
                dtype = self.trt.nptype(self.engine.get_tensor_dtype(name))
                self.buffers[name].ensure(max(1, int(np.prod(shape))) * np.dtype(dtype).itemsize)
                self.context.set_tensor_address(name, self.buffers[name].device)
                shapes[name] = (shape, dtype)
            if not self.context.execute_async_v3(int(self.stream)):
                raise RuntimeError("TensorRT execute_async_v3 failed")
            results = []
            for name in outputs:
                shape, dtype = shapes[name]
                buffer = self.buffers[name]
                nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
                _check(cudart.cudaMemcpyAsync(buffer.host, buffer.device, nbytes, d2h, self.stream))
                results.append((buffer, shape, dtype))
            _check(cudart.cudaStreamSynchronize(self.stream))
            return [buffer.host_array(shape, dtype).copy() for buffer, shape, dtype in results]


class TensorRTBackend:
    """Runs the bundle's TensorRT plans for this GPU; thread-safe (one lock per graph)."""

    name = "tensorrt"

    def __init__(self, bundle: Bundle):
        try:
            import tensorrt as trt
            from cuda.bindings import runtime  # noqa: F401
        except ImportError as exc:
            raise BackendUnavailable(f"tensorrt backend needs {exc.name}: pip install 'aeserve[gpu]'") from None
        self.bundle = bundle
        self.trt = trt
        self.gpu = gpu_info()
        self.plan_dir = find_plan_dir(bundle, self.gpu, trt.__version__)
        self.runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self._engines: dict[str, _Engine] = {}
        self._lock = threading.Lock()

    def _engine(self, graph: str) -> _Engine:
        with self._lock:
            if graph not in self._engines:
                rel = (self.plan_dir / f"{graph}.plan").relative_to(self.bundle.path).as_posix()
                if rel not in self.bundle.manifest.files:  # a plan is foreign code to TensorRT: hashed ones only
                    raise BackendUnavailable(f"{self.bundle.path}: {rel} is not among the files the manifest hashes; "
                                             f"rebuild: aeserve export {self.bundle.path} --format tensorrt")
                self._engines[graph] = _Engine(self.trt, self.runtime, self.bundle.file(rel))
            return self._engines[graph]

    def run(self, graph: str, feeds: dict[str, np.ndarray], outputs: list[str] | None = None) -> list[np.ndarray]:
        """The ``outputs`` of ``graph`` (default: all, in the graph record's order)."""
        return self._engine(graph).run(feeds, outputs or list(self.bundle.graph(graph).outputs))

    def describe(self) -> str:
        """TensorRT version, GPU and plan directory."""
        return f"tensorrt {self.trt.__version__} ({self.gpu.name if self.gpu else '?'}, {self.plan_dir.name})"
