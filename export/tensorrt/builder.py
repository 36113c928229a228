"""Plans built with TensorRT's Python API here, or ``build.sh`` written when it is missing."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from aeserve.atomic import atomic_path, write_bytes_atomic, write_text_atomic
from aeserve.bundle import GRAPH_FILES, GRAPH_INPUTS, Bundle
from aeserve.errors import BackendUnavailable, ExportError
from aeserve.export.tensorrt.fp16 import fp16_graph
from aeserve.export.tensorrt.profile import TIMING_CACHE, Profile, input_width, plan_dir_name
from aeserve.export.tensorrt.record import record_plans
from aeserve.export.tensorrt.script import trtexec_script
from aeserve.serve.gpu import GpuInfo, gpu_info

__all__ = ["TensorRTResult", "build_tensorrt", "network_flags"]


def network_flags(trt, fp16: bool) -> int:
    """``create_network`` flags: strongly typed for FP16 (TensorRT 10 and 11), else none."""
    strongly_typed = getattr(getattr(trt, "NetworkDefinitionCreationFlag", None), "STRONGLY_TYPED", None)
    return 1 << int(strongly_typed) if fp16 and strongly_typed is not None else 0


@dataclass
class TensorRTResult:
    """What ``build_tensorrt`` did: plans built, or a script written for a GPU host."""

    built: bool
    directory: Path
    message: str


def _require_tensorrt(require: bool):
    try:
        import tensorrt as trt
    except ImportError:
        if require:
            raise BackendUnavailable("TensorRT is not installed here: pip install 'aeserve[gpu]' on an NVIDIA "
                                     "GPU host (or drop --require-tensorrt to get a build.sh for trtexec)") from None
        return None
    return trt


def build_tensorrt(directory: str | Path, profile: Profile | None = None, *, fp16: bool = False,
                   workspace_mb: int = 1024, require_tensorrt: bool = False) -> TensorRTResult:
    """Build plans for every graph of the bundle (``profile``: the batch sizes, default 1, 1024,
    8192), or write ``tensorrt/build.sh`` without TensorRT."""
    profile = profile or Profile()
    directory = Path(directory)
    bundle = Bundle.open(directory)
    bundle.graph("energy")  # BundleError if not exported yet
    onnx_export = bundle.manifest.exports.onnx
    problems = list(onnx_export.tensorrt_check.problems) if onnx_export is not None else []
    if problems:
        raise ExportError(f"{directory}: graphs TensorRT cannot parse: {'; '.join(problems)}")
    trt = _require_tensorrt(require_tensorrt)
    gpu = gpu_info() if trt is not None else None
    if trt is not None and gpu is None:
        if require_tensorrt:
            raise BackendUnavailable("TensorRT is installed but no NVIDIA GPU is visible (nvidia-smi / CUDA)")
        trt = None
    if trt is None:
        if fp16:
            import onnx

            for file in GRAPH_FILES.values():  # the graphs build.sh builds from, on TensorRT 10 and 11
                with atomic_path(directory / "tensorrt" / "fp16" / file) as tmp:
                    onnx.save(fp16_graph(onnx.load(str(directory / file))), str(tmp))
        script = directory / "tensorrt" / "build.sh"
        write_text_atomic(script, trtexec_script(bundle, profile, fp16, workspace_mb))
        script.chmod(0o755)
        bundle.write(bundle.manifest)  # records build.sh's hash
        return TensorRTResult(False, script.parent,
                              f"TensorRT or a GPU is missing here: wrote {script} — run it on the GPU host")
    return _build_with_tensorrt(trt, bundle, gpu, profile=profile, fp16=fp16, workspace_mb=workspace_mb)


def _build_with_tensorrt(trt, bundle: Bundle, gpu: GpuInfo, *, profile: Profile, fp16: bool,
                         workspace_mb: int) -> TensorRTResult:
    import onnx

    out = bundle.path / "tensorrt" / plan_dir_name(gpu, trt.__version__)
    out.mkdir(parents=True, exist_ok=True)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    cache_path = out / TIMING_CACHE
    seconds = {}
    for graph, file in GRAPH_FILES.items():
        proto = onnx.load(str(bundle.file(file)))
        if fp16:
            proto = fp16_graph(proto)
        network = builder.create_network(network_flags(trt, fp16))
        parser = trt.OnnxParser(network, logger)
        if not parser.parse(proto.SerializeToString()):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise ExportError(f"{file}: TensorRT's ONNX parser rejected it: {errors}")
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mb << 20)
        cache = config.create_timing_cache(cache_path.read_bytes() if cache_path.exists() else b"")
        if not config.set_timing_cache(cache, ignore_mismatch=False):  # made on another device: start afresh
            cache = config.create_timing_cache(b"")
            if not config.set_timing_cache(cache, ignore_mismatch=False):
                raise ExportError(f"{file}: TensorRT refused even an empty timing cache")
        opt_profile = builder.create_optimization_profile()
        opt_profile.set_shape(GRAPH_INPUTS[graph], *profile.shapes(input_width(bundle, graph)))
        config.add_optimization_profile(opt_profile)
        started = time.perf_counter()
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise ExportError(f"{file}: TensorRT failed to build a plan (see the TensorRT log above)")
        write_bytes_atomic(out / f"{graph}.plan", bytes(serialized))
        write_bytes_atomic(cache_path, bytes(config.get_timing_cache().serialize()))
        seconds[graph] = round(time.perf_counter() - started, 2)
    record_plans(bundle.path, out, gpu=gpu.name, compute_capability=tuple(gpu.compute_capability),
                 tensorrt=trt.__version__, precision="fp16" if fp16 else "fp32", profile=profile,
                 workspace_mb=workspace_mb, seconds=seconds)
    return TensorRTResult(True, out, f"built {len(seconds)} plans in {out}")
