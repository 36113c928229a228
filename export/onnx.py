"""Export a bundle's encoder, decoder and energy graphs to ONNX, then prove them right.

Uses the current exporter (``torch.onnx.export(..., dynamo=True)``) with a dynamic
batch axis. Every graph is run with ONNX Runtime on validation rows and on random rows
and compared with the torch module it came from; a mismatch raises ``ExportError``.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import warnings
from pathlib import Path

import numpy as np
import torch

from aeserve.atomic import atomic_path
from aeserve.bundle import GRAPH_FILES, Bundle
from aeserve.errors import BackendUnavailable, ExportError
from aeserve.export.parity import Tolerance, compare_outputs
from aeserve.export.tensorrt_support import OPSET_RANGE, tensorrt_problems
from aeserve.manifest import GraphRecord, OnnxExport, TensorRTCheck
from aeserve.train.graphs import graph_io, graph_modules
from aeserve.train.network import EnergyAutoencoder
from aeserve.train.weights import load_model

__all__ = ["export_onnx", "OPSET", "parity_inputs"]

OPSET = 20
_EXAMPLE_BATCH = 4


def _metadata(bundle: Bundle, graph: str, io: GraphRecord) -> dict[str, str]:
    """Key manifest facts for ``metadata_props``, so a lone .onnx explains itself."""
    m = bundle.manifest
    return {
        "aeserve.graph": graph,
        "aeserve.kind": m.kind,
        "aeserve.inputs": ",".join(io.inputs),
        "aeserve.outputs": ",".join(io.outputs),
        "aeserve.n_features": str(m.input.width),
        "aeserve.latent": str(m.latent.size),
        "aeserve.energy": m.energy.formula,
        "aeserve.cost": m.energy.cost,
        "aeserve.preprocessing": m.preprocessing.formula + " (inside the graph: raw data in, raw data out)",
        "aeserve.threshold": repr(m.threshold.value),
        "aeserve.version": str(m.versions.get("aeserve", "")),
    }


def _export_graph(module: torch.nn.Module, example: torch.Tensor, io: GraphRecord, *, target: Path,
                  metadata: dict[str, str]) -> list[str]:
    """Export one graph to ``target``; return what TensorRT's parser would object to."""
    import onnx

    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            program = torch.onnx.export(
                module, (example,), None, input_names=list(io.inputs), output_names=list(io.outputs),
                dynamic_shapes=({0: torch.export.Dim("batch")},), opset_version=OPSET,
                dynamo=True, verbose=False)
        except Exception as exc:  # the exporter raises many types; report which graph failed
            raise ExportError(f"{target.name}: torch.onnx.export failed "
                              f"({type(exc).__name__}: {str(exc).splitlines()[0]})") from exc
    proto = program.model_proto
    onnx.helper.set_model_props(proto, metadata)
    onnx.checker.check_model(proto)
    with atomic_path(target) as tmp:
        onnx.save(proto, str(tmp))
    return tensorrt_problems(proto, target.name)


def parity_inputs(model: EnergyAutoencoder, rows: np.ndarray | None, seed: int = 0) -> dict[str, dict[str, np.ndarray]]:
    """Inputs to check each graph on: real rows (if any) and random rows/codes.

    Random rows are N(0, 1) in the model's space mapped back to raw units; random codes
    come from the latent sampler's scale, so both probe well beyond the training data.
    """
    rng = np.random.default_rng(seed)
    shift, scale = model.shift.numpy(), model.scale.numpy()
    random_rows = (shift + scale * rng.standard_normal((64, shift.size))).astype(np.float32)
    with torch.no_grad():
        random_codes = (3.0 * rng.standard_normal((64, model.config.latent))).astype(np.float32)
        cases = {"random rows": {"rows": random_rows, "codes": random_codes}}
        if rows is not None and len(rows):
            real = np.ascontiguousarray(rows[:512], dtype=np.float32)
            codes = model.code(model.preprocess(torch.from_numpy(real))).numpy()
            cases["validation rows"] = {"rows": real, "codes": codes}
    return cases


def export_onnx(directory: str | Path, model: EnergyAutoencoder | None = None,
                check_rows: np.ndarray | None = None,
                tolerance: Tolerance = Tolerance()) -> dict[str, dict[str, float]]:
    """Write encoder/decoder/energy .onnx into the bundle, check parity, update the manifest.

    Returns graph -> output -> max abs error (worst over validation and random inputs).
    """
    try:
        import onnx
        import onnxruntime as ort
    except ImportError as exc:
        raise BackendUnavailable(f"ONNX export needs onnx and onnxruntime ({exc.name} missing): "
                                 "pip install 'aeserve[train,cpu]'") from None
    directory = Path(directory)
    bundle = Bundle.open(directory)
    model = model if model is not None else load_model(bundle)
    modules, ios = graph_modules(model), graph_io(model)
    parity: dict[str, dict[str, float]] = {}
    cases = parity_inputs(model, check_rows)
    trt_problems: list[str] = []
    for name, module in modules.items():
        io = ios[name]
        exact = copy.deepcopy(module).double()  # the same graph in float64: how far float32 itself strays
        width = model.config.latent if name == "decoder" else model.config.n_features
        target = directory / GRAPH_FILES[name]
        trt_problems += _export_graph(module, torch.zeros(_EXAMPLE_BATCH, width), io, target=target,
                                      metadata=_metadata(bundle, name, io))
        session = ort.InferenceSession(str(target), providers=["CPUExecutionProvider"])
        worst: dict[str, float] = {}
        for on, feeds in cases.items():
            x = feeds["codes" if name == "decoder" else "rows"]
            got = session.run(list(io.outputs), {io.inputs[0]: x})
            with torch.no_grad():
                ref, ref64 = module(torch.from_numpy(x)), exact(torch.from_numpy(x).double())
            ref = [t.numpy() for t in (ref if isinstance(ref, tuple) else (ref,))]
            ref64 = [t.numpy() for t in (ref64 if isinstance(ref64, tuple) else (ref64,))]
            errors = compare_outputs(name, list(io.outputs), got, ref, tolerance=tolerance, on=on, exact=ref64)
            worst = {k: max(v, worst.get(k, 0.0)) for k, v in errors.items()}
        parity[name] = worst
    graphs = {name: ios[name] for name in modules}
    record = OnnxExport(opset=OPSET, exporter="torch.onnx.export(dynamo=True)",
                        parity={"tolerance": vars(tolerance), "max_abs_error": parity, "checked_on": sorted(cases)},
                        tensorrt_check=TensorRTCheck(parser_compatible=not trt_problems, problems=tuple(trt_problems),
                                                     opset_range=tuple(OPSET_RANGE)),
                        details={"format": "onnx", "dynamic_axes": {"batch": 0}})
    m = bundle.manifest
    bundle.write(dataclasses.replace(
        m, graphs={**m.graphs, "fp32": graphs}, exports=dataclasses.replace(m.exports, onnx=record),
        versions={**m.versions, "onnx": onnx.__version__, "opset": OPSET, "onnxruntime": ort.__version__}))
    return parity
