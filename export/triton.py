"""A Triton Inference Server model repository from a bundle: one model per graph.

``REPO/<bundle>-<graph>/config.pbtxt`` and ``REPO/<bundle>-<graph>/1/model.onnx`` (or
``model.plan`` with ``use_plans``), with max_batch_size, dynamic batching and tensor
names/dims taken from the bundle. Per-row outputs of shape (batch,) are declared as
dims [1] with ``reshape { shape: [] }``, Triton's way of describing a batch-only tensor.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

from aeserve.atomic import write_text_atomic
from aeserve.bundle import GRAPH_FILES, GRAPH_INPUTS, Bundle
from aeserve.errors import InputError
from aeserve.manifest import CONTRIBUTIONS, TritonExport

__all__ = ["export_triton", "config_pbtxt"]


def _dims(bundle: Bundle, graph: str, tensor: str) -> list[int]:
    """Per-row dims of a graph tensor (the batch axis excluded)."""
    if tensor == GRAPH_INPUTS[graph]:
        return [bundle.latent_size if tensor == "z" else bundle.n_features]
    if graph == "encoder":
        return [bundle.latent_size]
    if graph == "decoder" or tensor == CONTRIBUTIONS:
        return [bundle.n_features]
    return []  # energy and its terms: one value per row


def _tensor(name: str, dims: list[int]) -> str:
    if dims:
        return f'  {{ name: "{name}" data_type: TYPE_FP32 dims: [ {", ".join(map(str, dims))} ] }}'
    return f'  {{ name: "{name}" data_type: TYPE_FP32 dims: [ 1 ] reshape: {{ shape: [ ] }} }}'


def config_pbtxt(bundle: Bundle, graph: str, *, model_name: str, platform: str, max_batch_size: int,
                 max_queue_delay_us: int) -> str:
    """The text-format ModelConfig for one graph."""
    spec = bundle.graph(graph)
    inputs = ",\n".join(_tensor(t, _dims(bundle, graph, t)) for t in spec.inputs)
    outputs = ",\n".join(_tensor(t, _dims(bundle, graph, t)) for t in spec.outputs)
    params = {"aeserve.kind": bundle.kind, "aeserve.graph": graph,
              "aeserve.threshold": repr(bundle.threshold), "aeserve.energy": bundle.manifest.energy.formula}
    parameters = "\n".join(f'parameters {{ key: "{k}" value: {{ string_value: "{v}" }} }}' for k, v in params.items())
    return (f'name: "{model_name}"\nplatform: "{platform}"\nmax_batch_size: {max_batch_size}\n'
            f"input [\n{inputs}\n]\noutput [\n{outputs}\n]\n"
            f"dynamic_batching {{ max_queue_delay_microseconds: {max_queue_delay_us} }}\n{parameters}\n")


def _plan_dir(bundle: Bundle) -> Path:
    dirs = sorted(p.parent for p in (bundle.path / "tensorrt").glob("*/build.json"))
    if len(dirs) != 1:
        raise InputError(f"{bundle.path}: --use-plans needs exactly one TensorRT plan directory, found "
                         f"{len(dirs)} ({', '.join(d.name for d in dirs) or 'none'})")
    return dirs[0]


def export_triton(directory: str | Path, repo: str | Path, *, max_batch_size: int = 8192,
                  max_queue_delay_us: int = 2000, use_plans: bool = False) -> list[Path]:
    """Write one Triton model per graph into ``repo``; return the model directories."""
    bundle = Bundle.open(directory)
    if bundle.manifest.input.mixed:
        raise InputError(f"{bundle.path}: a bundle of typed table columns cannot go to a Triton repository: its "
                         "graphs take rows that the aeserve runtime encodes from text, booleans and missing cells "
                         "with the bundle's vocabularies, and Triton's ONNX Runtime and TensorRT backends have no "
                         "such step (clients would have to encode by hand, outside the bundle). Serve it with "
                         "`aeserve serve`, which speaks the same KServe v2 protocol to tritonclient, one tensor per "
                         "column")
    repo = Path(repo)
    name = bundle.path.resolve().name
    plan_dir = _plan_dir(bundle) if use_plans else None
    written = []
    for graph, file in GRAPH_FILES.items():
        bundle.graph(graph)
        model_dir = repo / f"{name}-{graph}"
        version = model_dir / "1"
        version.mkdir(parents=True, exist_ok=True)
        if plan_dir is None:
            source, target, platform = bundle.path / file, version / "model.onnx", "onnxruntime_onnx"
        else:
            source, target, platform = plan_dir / f"{graph}.plan", version / "model.plan", "tensorrt_plan"
        tmp = target.with_name(f".{target.name}.tmp")
        shutil.copyfile(source, tmp)
        tmp.replace(target)
        write_text_atomic(model_dir / "config.pbtxt",
                          config_pbtxt(bundle, graph, model_name=model_dir.name, platform=platform,
                                       max_batch_size=max_batch_size, max_queue_delay_us=max_queue_delay_us))
        written.append(model_dir)
    record = TritonExport(repository=str(repo), models=tuple(d.name for d in written), platform=platform,
                          max_batch_size=max_batch_size)
    bundle.write(dataclasses.replace(bundle.manifest, exports=dataclasses.replace(bundle.manifest.exports,
                                                                                  triton=record)))
    return written
