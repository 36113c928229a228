"""Plans built, recorded: ``build.json`` beside them and a TensorRT build in the manifest.

``python -m aeserve.export.tensorrt BUNDLE PLAN_DIR --gpu ... --compute-capability ...
--tensorrt ... --precision ... --profile ... --workspace-mb ...`` (``main``) is what
``build.sh`` runs on the GPU host after ``trtexec``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from dataclasses import asdict
from pathlib import Path

from aeserve.atomic import write_text_atomic
from aeserve.bundle import GRAPH_FILES, Bundle
from aeserve.errors import AeserveError, ExportError
from aeserve.export.tensorrt.profile import Profile
from aeserve.manifest import TensorRTBuild

__all__ = ["BUILD_JSON", "record_plans", "main"]

BUILD_JSON = "build.json"


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


def main(argv: list[str] | None = None) -> int:
    """The command line ``build.sh`` calls: record the plans, exit 2 with one line on an error."""
    parser = argparse.ArgumentParser(prog="python -m aeserve.export.tensorrt",
                                     description="Record TensorRT plans built by trtexec in the bundle's manifest.")
    parser.add_argument("bundle")
    parser.add_argument("plan_dir")
    for flag in ("--gpu", "--compute-capability", "--tensorrt", "--precision", "--profile"):
        parser.add_argument(flag, required=True)
    parser.add_argument("--workspace-mb", type=int, required=True)
    parser.add_argument("--built-with", default="trtexec")
    args = parser.parse_args(argv)
    try:
        out = record_plans(args.bundle, args.plan_dir, gpu=args.gpu, compute_capability=args.compute_capability,
                           tensorrt=args.tensorrt, precision=args.precision, profile=args.profile,
                           workspace_mb=args.workspace_mb, built_with=args.built_with)
    except AeserveError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 2
    print(f"recorded the plans in {out}")
    return 0
