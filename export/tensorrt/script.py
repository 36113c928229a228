"""``tensorrt/build.sh``: the same plans built by ``trtexec`` on a GPU host."""

from __future__ import annotations

import shlex

from aeserve.bundle import GRAPH_FILES, GRAPH_INPUTS, Bundle
from aeserve.export.tensorrt.profile import TIMING_CACHE, Profile, input_width

__all__ = ["trtexec_script"]


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
        name, width = GRAPH_INPUTS[graph], input_width(bundle, graph)
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
        "python3 -m aeserve.export.tensorrt . \"$out\" --gpu \"$gpu\" --compute-capability \"$cc\" "
        f"--tensorrt \"$trt\" --precision {'fp16' if fp16 else 'fp32'} "
        f"--profile {profile.min},{profile.opt},{profile.max} --workspace-mb {workspace_mb} --built-with trtexec",
        'echo "plans written to $out"',
    ]
    return "\n".join(lines) + "\n"
