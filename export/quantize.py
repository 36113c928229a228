"""int8 graphs: ONNX Runtime dynamic quantisation (signed int8 weights, uint8 activations
quantised per batch at run time), checked against the fp32 graphs before they are kept.

A graph whose int8 energies stray from fp32 by more than the tolerance is refused: e.g. a
CAE's exact Jacobian or an lvm's unrolled gradient steps multiply quantisation error.

Dynamic quantisation takes each activation's range from the batch it is in, so a row's int8
energy depends slightly on its batch-mates (fp32 energies do not). Score normal and unknown
rows in the same stream, as files are, rather than in separate batches.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from pathlib import Path

import numpy as np

from aeserve.atomic import atomic_path
from aeserve.bundle import GRAPH_FILES, GRAPH_INPUTS, Bundle
from aeserve.errors import BackendUnavailable, ExportError
from aeserve.manifest import Int8Export

__all__ = ["quantize_int8", "INT8_SUFFIX"]

INT8_SUFFIX = ".int8.onnx"


@contextlib.contextmanager
def _quiet_root_logger():
    """onnxruntime.quantization logs advice on the root logger; keep the CLI's output clean."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def quantize_int8(directory: str | Path, tolerance: float = 0.05) -> dict:
    """Write ``<graph>.int8.onnx`` for every graph; refuse (ExportError) when the int8 energy's
    median relative error against fp32 exceeds ``tolerance``. Returns the measured errors."""
    try:
        import onnxruntime as ort
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError:
        raise BackendUnavailable("int8 export needs onnxruntime: pip install 'aeserve[cpu]'") from None
    directory = Path(directory)
    bundle = Bundle.open(directory)
    written, errors = [], {}
    try:
        for graph, file in GRAPH_FILES.items():
            bundle.graph(graph)
            target = directory / file.replace(".onnx", INT8_SUFFIX)
            with atomic_path(target) as tmp, _quiet_root_logger():
                quantize_dynamic(str(directory / file), str(tmp), weight_type=QuantType.QInt8)
            written.append(target)
        rows = bundle.manifest.preprocessing.typical_rows(2048)
        spec = bundle.graph("energy")
        fp32 = ort.InferenceSession(str(directory / GRAPH_FILES["energy"]), providers=["CPUExecutionProvider"])
        int8 = ort.InferenceSession(str(directory / GRAPH_FILES["energy"].replace(".onnx", INT8_SUFFIX)),
                                    providers=["CPUExecutionProvider"])
        feeds = {GRAPH_INPUTS["energy"]: rows}
        a = fp32.run([spec.outputs[0]], feeds)[0]
        b = int8.run([spec.outputs[0]], feeds)[0]
        relative = np.abs(b - a) / np.maximum(np.abs(a), 1e-6)
        errors = {"energy_median_relative_error": float(np.median(relative)),
                  "energy_p99_relative_error": float(np.quantile(relative, 0.99)),
                  "energy_rank_agreement": float(np.corrcoef(np.argsort(np.argsort(a)), np.argsort(np.argsort(b)))[0, 1])}
        if not errors["energy_median_relative_error"] <= tolerance:
            raise ExportError(f"{directory}: int8 energies of this {bundle.kind} bundle deviate from fp32 by "
                              f"{errors['energy_median_relative_error']:.1%} (median, tolerance {tolerance:.0%}); "
                              "quantising it is not safe, keep --precision fp32")
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        raise
    m = bundle.manifest
    graphs = {g: dataclasses.replace(bundle.graph(g), file=GRAPH_FILES[g].replace(".onnx", INT8_SUFFIX))
              for g in GRAPH_FILES}
    details = {k: v for k, v in errors.items() if k != "energy_median_relative_error"}
    record = Int8Export(method="onnxruntime dynamic quantisation", weights="int8 (signed)", tolerance=tolerance,
                        energy_median_relative_error=errors["energy_median_relative_error"], details={
                            "activations": "uint8, ranges per batch at run time (a row's score depends "
                                           "slightly on its batch-mates)",
                            "checked_on": "2048 rows drawn N(0, 1) in the preprocessed space", **details})
    bundle.write(dataclasses.replace(m, graphs={**m.graphs, "int8": graphs},
                                     exports=dataclasses.replace(m.exports, int8=record)))
    return errors
