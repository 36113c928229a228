"""TensorRT backend: deserialised plans, one execution context per graph, its own CUDA stream.

Written against the TensorRT 10/11 Python API (``Runtime.deserialize_cuda_engine``,
``ICudaEngine.get_tensor_profile_shape``, ``IExecutionContext.set_input_shape`` /
``set_tensor_address`` / ``execute_async_v3``) and cuda-bindings' ``runtime`` module (every
call returns a tuple whose first item is a ``cudaError_t``). TensorRT reports most failures by
return value, not by exception: each one is checked here.

- Plans are chosen from the manifest's TensorRT records (``find_plan_dir``): the GPU's compute
  capability and the TensorRT version (major.minor.patch) must match. Every plan is
  deserialised when the backend is created, so a bad plan fails at start-up with its reason
  (and ``auto`` moves on to ONNX Runtime).
- A batch outside the plan's optimisation profile is split to the profile's max, or padded up
  to its min (rows are independent, the padding is dropped from the outputs).
- Device and pinned host buffers grow to the largest batch seen and are reused; ``close()``
  (or ``with``) frees them and the streams. When an allocation fails, the engine's buffers are
  freed before the error is raised.
"""

from __future__ import annotations

import ctypes
import threading
from pathlib import Path

import numpy as np

from aeserve.bundle import GRAPH_FILES, GRAPH_INPUTS, Bundle
from aeserve.errors import BackendUnavailable
from aeserve.serve.backends import BackendBase
from aeserve.serve.gpu import GpuInfo, gpu_info

__all__ = ["TensorRTBackend", "find_plan_dir", "match_plans", "same_tensorrt"]

INSTALL = "pip install 'aeserve[gpu]' (CUDA 13 hosts, driver >= 580) or 'aeserve[gpu-cu12]' (CUDA 12 hosts)"


def same_tensorrt(built: str | None, here: str) -> bool:
    """Whether plans built by TensorRT ``built`` run on TensorRT ``here``: the same
    major.minor.patch (``trtexec`` reports three parts, the Python package four)."""
    return built is not None and built.split(".")[:3] == here.split(".")[:3]


def match_plans(bundle: Bundle, gpu: GpuInfo | None, trt_version: str) -> tuple[Path | None, str]:
    """(plan directory for this GPU and TensorRT, "") or (None, why there is none)."""
    builds = bundle.manifest.exports.tensorrt
    if not builds:
        return None, (f"no TensorRT plans in the bundle; build them on this GPU host: "
                      f"aeserve export {bundle.path} --format tensorrt")
    if gpu is None:
        return None, "no NVIDIA GPU visible"
    seen = []
    for name, build in sorted(builds.items()):
        if tuple(build.compute_capability) == tuple(gpu.compute_capability) and same_tensorrt(build.tensorrt,
                                                                                              trt_version):
            return bundle.file(f"tensorrt/{name}"), ""
        seen.append(f"{build.gpu} sm{''.join(map(str, build.compute_capability))} TensorRT {build.tensorrt}")
    return None, (f"TensorRT plans were built for {'; '.join(seen)}, but this host has {gpu.name} {gpu.sm} "
                  f"with TensorRT {trt_version}; rebuild: aeserve export {bundle.path} --format tensorrt")


def find_plan_dir(bundle: Bundle, gpu: GpuInfo | None, trt_version: str) -> Path:
    """The plan directory built for this GPU and TensorRT version; else BackendUnavailable saying why."""
    directory, why = match_plans(bundle, gpu, trt_version)
    if directory is None:
        raise BackendUnavailable(f"{bundle.path}: {why}")
    return directory


def _check(result, what: str = "CUDA call"):
    """The values of a cuda-bindings call, or RuntimeError naming the CUDA error."""
    from cuda.bindings import runtime as cudart

    err, *rest = result if isinstance(result, tuple) else (result,)
    if err != cudart.cudaError_t.cudaSuccess:
        name = cudart.cudaGetErrorString(err)[1]
        raise RuntimeError(f"{what} failed: {name.decode() if isinstance(name, bytes) else name}")
    return rest[0] if len(rest) == 1 else rest


class _Buffer:
    """A device allocation plus a pinned host mirror, grown on demand."""

    def __init__(self):
        self.nbytes = 0
        self.device = 0
        self.host = 0

    def ensure(self, nbytes: int) -> None:
        """At least ``nbytes`` on both sides; on failure nothing of this buffer stays allocated."""
        from cuda.bindings import runtime as cudart

        if nbytes <= self.nbytes:
            return
        self.free()
        device = int(_check(cudart.cudaMalloc(nbytes), f"cudaMalloc({nbytes})"))
        try:
            host = int(_check(cudart.cudaMallocHost(nbytes), f"cudaMallocHost({nbytes})"))
        except RuntimeError:
            cudart.cudaFree(device)
            raise
        self.device, self.host, self.nbytes = device, host, nbytes

    def host_array(self, shape, dtype) -> np.ndarray:
        count = int(np.prod(shape)) * np.dtype(dtype).itemsize
        raw = (ctypes.c_byte * count).from_address(self.host)
        return np.frombuffer(raw, dtype=dtype).reshape(shape)

    def free(self) -> None:
        from cuda.bindings import runtime as cudart

        if self.nbytes:
            cudart.cudaFree(self.device)
            cudart.cudaFreeHost(self.host)
        self.nbytes, self.device, self.host = 0, 0, 0


class _Engine:
    """One deserialised plan: its context, stream, buffers and batch range."""

    def __init__(self, trt, runtime, plan: Path, input_name: str):
        from cuda.bindings import runtime as cudart

        self.trt, self.plan = trt, plan
        self.engine = runtime.deserialize_cuda_engine(plan.read_bytes())
        if self.engine is None:
            raise BackendUnavailable(f"{plan}: TensorRT could not deserialise it (built for another GPU or "
                                     "TensorRT version, or corrupted); rebuild with aeserve export --format tensorrt")
        self.context = self.engine.create_execution_context()
        if self.context is None:
            raise BackendUnavailable(f"{plan}: TensorRT could not create an execution context "
                                     "(out of GPU memory?)")
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if n not in self.inputs]
        if self.inputs != [input_name]:
            raise BackendUnavailable(f"{plan}: inputs {self.inputs}, expected [{input_name!r}]; rebuild the plans")
        low, _, high = self.engine.get_tensor_profile_shape(input_name, 0)
        self.min_batch, self.max_batch = max(int(low[0]), 1), int(high[0])
        self.buffers = {n: _Buffer() for n in names}
        self.stream = _check(cudart.cudaStreamCreate(), "cudaStreamCreate")
        self.lock = threading.Lock()

    def run(self, feeds: dict[str, np.ndarray], outputs: list[str]) -> list[np.ndarray]:
        """``outputs`` for the rows of the one input, in batches the profile takes."""
        x = feeds[self.inputs[0]]
        n = len(x)
        if n > self.max_batch:  # above the profile: in slices of its max
            parts = [self._run_batch(x[i:i + self.max_batch], outputs) for i in range(0, n, self.max_batch)]
            return [np.concatenate([p[j] for p in parts]) for j in range(len(outputs))]
        if n < self.min_batch:  # below it: pad with copies of the last row, then drop them
            pad = np.repeat(x[-1:], self.min_batch - n, axis=0) if n else np.zeros((self.min_batch, *x.shape[1:]),
                                                                                    x.dtype)
            return [r[:n] for r in self._run_batch(np.concatenate([x, pad]), outputs)]
        return self._run_batch(x, outputs)

    def _run_batch(self, x: np.ndarray, outputs: list[str]) -> list[np.ndarray]:
        from cuda.bindings import runtime as cudart

        h2d, d2h = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        name = self.inputs[0]
        with self.lock:
            try:
                array = np.ascontiguousarray(x, dtype=self.trt.nptype(self.engine.get_tensor_dtype(name)))
                buffer = self.buffers[name]
                buffer.ensure(array.nbytes)
                buffer.host_array(array.shape, array.dtype)[...] = array
                _check(cudart.cudaMemcpyAsync(buffer.device, buffer.host, array.nbytes, h2d, self.stream),
                       "cudaMemcpyAsync host->device")
                if not self.context.set_input_shape(name, array.shape):
                    raise BackendUnavailable(f"{self.plan}: TensorRT refused input shape {tuple(array.shape)} for "
                                             f"{name!r} (the plan takes {self.min_batch}..{self.max_batch} rows "
                                             "of its width); rebuild with a wider --batch profile")
                if not self.context.set_tensor_address(name, buffer.device):
                    raise BackendUnavailable(f"{self.plan}: TensorRT refused the address of {name!r}")
                shapes = {}
                for out in self.outputs:
                    shape = tuple(self.context.get_tensor_shape(out))
                    if any(d < 0 for d in shape):
                        raise BackendUnavailable(f"{self.plan}: output {out!r} has unresolved shape {shape}")
                    dtype = self.trt.nptype(self.engine.get_tensor_dtype(out))
                    self.buffers[out].ensure(max(1, int(np.prod(shape))) * np.dtype(dtype).itemsize)
                    if not self.context.set_tensor_address(out, self.buffers[out].device):
                        raise BackendUnavailable(f"{self.plan}: TensorRT refused the address of {out!r}")
                    shapes[out] = (shape, dtype)
                if not self.context.execute_async_v3(int(self.stream)):
                    raise BackendUnavailable(f"{self.plan}: TensorRT execute_async_v3 failed (see its log)")
                results = []
                for out in outputs:
                    shape, dtype = shapes[out]
                    buffer = self.buffers[out]
                    nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
                    _check(cudart.cudaMemcpyAsync(buffer.host, buffer.device, nbytes, d2h, self.stream),
                           "cudaMemcpyAsync device->host")
                    results.append((buffer, shape, dtype))
                _check(cudart.cudaStreamSynchronize(self.stream), "cudaStreamSynchronize")
            except RuntimeError as exc:  # a CUDA failure (e.g. out of memory): give back what we hold
                self.free_buffers()
                raise BackendUnavailable(f"{self.plan}: {exc}; buffers freed (a smaller --batch-size needs less)") \
                    from None
            return [buffer.host_array(shape, dtype).copy() for buffer, shape, dtype in results]

    def free_buffers(self) -> None:
        """Free the device and pinned buffers (they are allocated again on the next run)."""
        for buffer in self.buffers.values():
            buffer.free()

    def close(self) -> None:
        """Free buffers and the stream; drop the context and engine."""
        from cuda.bindings import runtime as cudart

        with self.lock:
            self.free_buffers()
            if self.stream is not None:
                cudart.cudaStreamDestroy(self.stream)
                self.stream = None
            self.context = self.engine = None


class TensorRTBackend(BackendBase):
    """Runs the bundle's TensorRT plans for this GPU; thread-safe (one lock per graph)."""

    name = "tensorrt"

    def __init__(self, bundle: Bundle, device: str = "auto", precision: str = "fp32"):
        if device == "cpu":
            raise BackendUnavailable("tensorrt runs on the GPU; --device cpu needs another backend")
        if precision != "fp32":
            raise BackendUnavailable(f"tensorrt: the plans carry their own precision; {precision} graphs run on "
                                     "onnxruntime")
        try:
            import tensorrt as trt
            from cuda.bindings import runtime  # noqa: F401
        except ImportError as exc:
            raise BackendUnavailable(f"tensorrt backend needs {exc.name}: {INSTALL}") from None
        self.bundle = bundle
        self.trt = trt
        self.gpu = gpu_info()
        self.plan_dir = find_plan_dir(bundle, self.gpu, trt.__version__)
        build = bundle.manifest.exports.tensorrt.get(self.plan_dir.name)
        #: the plans' arithmetic (fp16 plans are checked against fp32 where they run, like int8)
        self.precision = build.precision if build is not None else "fp32"
        self.runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self._engines: dict[str, _Engine] = {}
        try:  # every plan now: a bad one fails at start-up, with its reason
            for graph in GRAPH_FILES:
                rel = f"tensorrt/{self.plan_dir.name}/{graph}.plan"
                if rel not in bundle.manifest.files:  # a plan is opaque code to TensorRT: hashed ones only
                    raise BackendUnavailable(f"{bundle.path}: {rel} is not among the files the manifest hashes; "
                                             f"rebuild: aeserve export {bundle.path} --format tensorrt")
                self._engines[graph] = _Engine(trt, self.runtime, bundle.file(rel), GRAPH_INPUTS[graph])
        except BaseException:
            self.close()
            raise

    def run(self, graph: str, feeds: dict[str, np.ndarray], outputs: list[str] | None = None) -> list[np.ndarray]:
        """The ``outputs`` of ``graph`` (default: all, in the graph record's order)."""
        engine = self._engines.get(graph)
        if engine is None:
            raise BackendUnavailable("tensorrt backend is closed")
        return engine.run(feeds, outputs or list(self.bundle.graph(graph).outputs))

    def describe(self) -> str:
        """TensorRT version, GPU and plan directory."""
        return f"tensorrt {self.trt.__version__} ({self.gpu.name if self.gpu else '?'}, {self.plan_dir.name})"

    def close(self) -> None:
        """Free every engine's GPU buffers and streams."""
        for engine in self._engines.values():
            engine.close()
        self._engines = {}
