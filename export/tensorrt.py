"""TensorRT plans from a bundle's ONNX graphs (or, without TensorRT, a build.sh for trtexec).

Written against the TensorRT 10/11 Python API: ``Builder`` + ``OnnxParser``, one
optimisation profile over the batch axis, a workspace memory-pool limit, and a timing
cache kept beside the plans so rebuilds are fast (a cache made on another device is refused
by ``set_timing_cache``, which returns False: then a fresh one is used). FP16, on TensorRT 10
and 11 alike: an FP16 ONNX graph made here (``fp16_graph``: MatMul/Gemm in FP16, I/O and the
energy's reductions in FP32) built as a strongly typed network, so the builder cannot move the
reductions to FP16 as ``BuilderFlag.FP16`` would let it. Plans go to
``tensorrt/<gpu>-sm<cc>-trt<version>/``; ``record_plans`` writes ``build.json`` there and adds
the build to the manifest (with the plans' sha256), which is where the runtime looks.
"""

from __future__ import annotations

import dataclasses
import json
import shlex
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from aeserve.atomic import atomic_path, write_bytes_atomic, write_text_atomic
from aeserve.bundle import GRAPH_FILES, GRAPH_INPUTS, Bundle
from aeserve.errors import BackendUnavailable, ExportError, InputError
from aeserve.manifest import TensorRTBuild
from aeserve.serve.gpu import GpuInfo, gpu_info, slug

__all__ = ["Profile", "plan_dir_name", "trtexec_script", "fp16_graph", "build_tensorrt",
           "TensorRTResult", "BUILD_JSON", "record_plans", "network_flags"]

BUILD_JSON = "build.json"
TIMING_CACHE = "timing.cache"


@dataclass(frozen=True)
class Profile:
    """Batch sizes of the one optimisation profile: min <= opt <= max."""

    min: int = 1
    opt: int = 1024
    max: int = 8192

    @classmethod
    def parse(cls, text: str) -> "Profile":
        """From ``"min,opt,max"``, e.g. ``"1,1024,8192"``."""
        try:
            low, opt, high = (int(v) for v in text.split(","))
        except ValueError:
            raise InputError(f"--batch expects three integers min,opt,max such as 1,1024,8192, got {text!r}") from None
        if not 1 <= low <= opt <= high:
            raise InputError(f"--batch needs 1 <= min <= opt <= max, got {low},{opt},{high}")
        return cls(low, opt, high)

    def shapes(self, width: int) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
        """(min, opt, max) input shapes for a (batch, width) input."""
        return (self.min, width), (self.opt, width), (self.max, width)


def plan_dir_name(gpu: GpuInfo, trt_version: str) -> str:
    """``nvidia-h100-80gb-hbm3-sm90-trt10.13.3``: plans only run where all three match."""
    return f"{slug(gpu.name)}-{gpu.sm}-trt{trt_version}"


def _input_width(bundle: Bundle, graph: str) -> int:
    return bundle.latent_size if GRAPH_INPUTS[graph] == "z" else bundle.n_features


def trtexec_script(bundle: Bundle, profile: Profile, fp16: bool, workspace_mb: int) -> str:
    """A bash script that builds the same plans with ``trtexec`` on a GPU host. The plan
    directory is named by the TensorRT version of ``trtexec`` itself (its banner), and the
    plans are recorded in the bundle's manifest by ``aeserve`` on that host."""
    lines = [
        "#!/usr/bin/env bash",
        "# Build TensorRT plans for this bundle on the GPU host that will run them (needs trtexec,",
        "# nvidia-smi, and aeserve, which runs the plans and records them in the bundle's manifest).",
        f"# Written by aeserve: profile batch {profile.min},{profile.opt},{profile.max}; "
        f"{'fp16' if fp16 else 'fp32'}; workspace {workspace_mb} MiB.",
        "set -euo pipefail",
        'cd "$(dirname "$0")/.."',
        "IFS=, read -r gpu cc < <(nvidia-smi --query-gpu=name,compute_cap --format=csv,noheader | head -n1)",
        "cc=${cc// /}",
        "# the version of the trtexec that builds the plans (banner: [TensorRT v101303] = 10.13.3)",
        "banner=$(trtexec --help 2>&1 | grep -o 'TensorRT v[0-9.]*' | head -n1 || true)",
        'v=${banner#TensorRT v}',
        'if [[ "$v" == *.* ]]; then trt=$(echo "$v" | cut -d. -f1-3)',
        'elif [[ -n "$v" ]]; then trt="$((10#$v / 10000)).$((10#$v / 100 % 100)).$((10#$v % 100))"',
        'else echo "cannot tell the TensorRT version of trtexec (no [TensorRT vNNNNNN] banner)" >&2; exit 1; fi',
        "slug=$(echo \"$gpu\" | tr 'A-Z' 'a-z' | sed -E 's/[^a-z0-9]+/-/g; s/^-|-$//g')",
        'out="tensorrt/${slug}-sm${cc/./}-trt${trt}"',
        'mkdir -p "$out"',
    ]
    if fp16:
        lines += [
            "# FP16: the fp16 graphs aeserve wrote (MatMul/Gemm in FP16, reductions in FP32), strongly typed;",
            "# TensorRT 11 is always strongly typed, TensorRT 10 is told so",
            'onnx_dir=tensorrt/fp16/; typed_flag=""; if [ "${trt%%.*}" -lt 11 ]; then typed_flag="--stronglyTyped"; fi',
        ]
    for graph, file in GRAPH_FILES.items():
        name, width = GRAPH_INPUTS[graph], _input_width(bundle, graph)
        low, opt, high = (f"{name}:{b}x{width}" for b in (profile.min, profile.opt, profile.max))
        onnx_file = f"${{onnx_dir}}{file}" if fp16 else file
        args = ["trtexec", f"--onnx={onnx_file}", f"--saveEngine=$out/{graph}.plan",
                f"--minShapes={low}", f"--optShapes={opt}", f"--maxShapes={high}",
                f"--memPoolSize=workspace:{workspace_mb}M", f"--timingCacheFile=$out/{TIMING_CACHE}",
                "--skipInference"]
        lines.append(" ".join(f'"{a}"' if "$" in a else shlex.quote(a) for a in args)
                     + (" $typed_flag" if fp16 else ""))
    lines += [
        "# build.json and the manifest's record tell the aeserve runtime which GPU and TensorRT these plans are for",
        f'python3 -c "import sys; from aeserve.export.tensorrt import record_plans; '
        f"record_plans('.', sys.argv[1], gpu=sys.argv[2], compute_capability=sys.argv[3], tensorrt=sys.argv[4], "
        f"precision='{'fp16' if fp16 else 'fp32'}', profile='{profile.min},{profile.opt},{profile.max}', "
        f'workspace_mb={workspace_mb}, built_with=\'trtexec\')" "$out" "$gpu" "$cc" "$trt"',
        'echo "plans written to $out"',
    ]
    return "\n".join(lines) + "\n"


def record_plans(bundle_dir: str | Path, plan_dir: str | Path, *, gpu: str, compute_capability: str | tuple,
                 tensorrt: str, precision: str, profile: str | Profile, workspace_mb: int,
                 built_with: str = "tensorrt", seconds: dict[str, float] | None = None) -> Path:
    """Record plans built in ``plan_dir`` (inside the bundle): ``build.json`` there, and a
    TensorRT build in the manifest with the plans' sha256. The bundle is verified first, so
    recording never blesses a file modified since the manifest was written."""
    bundle = Bundle.open(bundle_dir)  # verifies every hashed file
    try:
        rel = Path(plan_dir).resolve().relative_to(bundle.path.resolve()).as_posix()
    except ValueError:
        raise ExportError(f"{plan_dir}: plans must be inside the bundle {bundle.path}") from None
    out = bundle.file(rel)
    if isinstance(compute_capability, str):
        compute_capability = tuple(int(p) for p in compute_capability.strip().split("."))
    profile = Profile.parse(profile) if isinstance(profile, str) else profile
    plans = {}
    for graph, file in GRAPH_FILES.items():
        if not (out / f"{graph}.plan").is_file():
            raise ExportError(f"{out}: {graph}.plan was not built")
        plans[graph] = {"file": f"{graph}.plan", "onnx": file,
                        **({"seconds": seconds[graph]} if seconds and graph in seconds else {})}
    record = {"gpu": gpu.strip(), "compute_capability": list(compute_capability), "tensorrt": tensorrt,
              "precision": precision, "profile": asdict(profile), "workspace_mb": workspace_mb,
              "built_with": built_with, "plans": plans}
    write_text_atomic(out / BUILD_JSON, json.dumps(record, indent=2) + "\n")
    build = TensorRTBuild(precision=precision, plans=plans, gpu=gpu.strip(),
                          compute_capability=tuple(compute_capability), tensorrt=tensorrt,
                          details={"profile": asdict(profile), "workspace_mb": workspace_mb, "built_with": built_with})
    m = bundle.manifest
    bundle.write(dataclasses.replace(m, exports=dataclasses.replace(
        m.exports, tensorrt={**m.exports.tensorrt, out.name: build})))
    return out


def network_flags(trt, fp16: bool) -> int:
    """``create_network`` flags: strongly typed for FP16 (TensorRT 10 and 11), else none."""
    strongly_typed = getattr(getattr(trt, "NetworkDefinitionCreationFlag", None), "STRONGLY_TYPED", None)
    return 1 << int(strongly_typed) if fp16 and strongly_typed is not None else 0


def fp16_graph(model):
    """An FP16 copy of an FP32 ONNX graph for strongly typed builds (TensorRT 11).

    MatMul/Gemm run in FP16 (their weights stored as FP16, activations cast in and out);
    everything else — preprocessing, the energy's reductions — stays FP32, and so do the
    graph's inputs and outputs, so callers see the same tensors.
    """
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    inits = {init.name: init for init in graph.initializer}
    converted: dict[str, str] = {}
    nodes = []
    for index, node in enumerate(graph.node):
        if node.op_type not in ("MatMul", "Gemm"):
            nodes.append(node)
            continue
        inputs = []
        for name in node.input:
            init = inits.get(name)
            if init is not None and init.data_type == TensorProto.FLOAT:
                if name not in converted:
                    half = numpy_helper.from_array(numpy_helper.to_array(init).astype(np.float16), f"{name}__fp16")
                    graph.initializer.append(half)
                    converted[name] = half.name
                inputs.append(converted[name])
            else:
                cast = f"{name}__fp16_{index}"
                nodes.append(helper.make_node("Cast", [name], [cast], to=TensorProto.FLOAT16))
                inputs.append(cast)
        outputs = [f"{o}__fp16" for o in node.output]
        nodes.append(helper.make_node(node.op_type, inputs, outputs, name=node.name, domain=node.domain))
        nodes[-1].attribute.extend(node.attribute)
        for half_out, out in zip(outputs, node.output):
            nodes.append(helper.make_node("Cast", [half_out], [out], to=TensorProto.FLOAT))
    del graph.node[:]
    graph.node.extend(nodes)
    used = {name for node in nodes for name in node.input}
    kept = [init for init in graph.initializer if init.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    # shapes/types recorded for the fp32 intermediates are stale for the renamed tensors
    del graph.value_info[:]
    onnx.checker.check_model(model)
    return model


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


def build_tensorrt(directory: str | Path, profile: Profile = Profile(), *, fp16: bool = False,
                   workspace_mb: int = 1024, require_tensorrt: bool = False) -> TensorRTResult:
    """Build plans for every graph of the bundle, or write ``tensorrt/build.sh`` without TensorRT."""
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
        opt_profile.set_shape(GRAPH_INPUTS[graph], *profile.shapes(_input_width(bundle, graph)))
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
