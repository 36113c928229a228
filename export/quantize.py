"""int8 graphs: ONNX Runtime dynamic quantisation (signed int8 weights, uint8 activations
quantised per batch at run time), checked against the fp32 graphs before they are kept.

A graph whose int8 energies stray from fp32 by more than the tolerance (median relative
error), or rank rows differently (Spearman < 0.999 on the bundle's kept validation rows), is
refused: e.g. a CAE's exact Jacobian or an lvm's unrolled gradient steps multiply quantisation error.

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
from aeserve.evaluation import rank_correlation
from aeserve.manifest import Int8Export

__all__ = ["quantize_int8", "INT8_SUFFIX", "check_rows", "energy_agreement", "refuse_if_strayed"]

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


def check_rows(bundle: Bundle) -> tuple[np.ndarray, str]:
    """Rows to compare int8 with fp32 on: the validation rows the bundle keeps, else 2048 rows
    drawn N(0, 1) in the preprocessed space; and what they are, for the record."""
    kept = bundle.kept_rows()
    if kept is not None and len(kept[1]) >= 32:
        return kept[1], f"{len(kept[1])} validation rows kept in the bundle"
    return bundle.manifest.preprocessing.typical_rows(2048), "2048 rows drawn N(0, 1) in the preprocessed space"


def energy_agreement(fp32: np.ndarray, int8: np.ndarray) -> dict[str, float]:
    """How far int8 energies are from fp32: median and p99 relative error, Spearman's rank correlation."""
    relative = np.abs(int8 - fp32) / np.maximum(np.abs(fp32), 1e-6)
    return {"energy_median_relative_error": float(np.median(relative)),
            "energy_p99_relative_error": float(np.quantile(relative, 0.99)),
            "energy_rank_agreement": rank_correlation(fp32, int8)}


def refuse_if_strayed(bundle: Bundle, what: str, errors: dict[str, float], tolerance: float,
                      min_rank: float) -> None:
    """ExportError when the median relative error exceeds ``tolerance`` or the rank correlation
    falls below ``min_rank``: quantising this bundle would change which rows it flags."""
    median, rank = errors["energy_median_relative_error"], errors["energy_rank_agreement"]
    if not median <= tolerance:
        raise ExportError(f"{bundle.path}: {what} energies of this {bundle.kind} bundle deviate from fp32 by "
                          f"{median:.1%} (median, tolerance {tolerance:.0%}); quantising it is not safe, "
                          "keep --precision fp32")
    if not rank >= min_rank:
        raise ExportError(f"{bundle.path}: {what} energies of this {bundle.kind} bundle rank rows differently "
                          f"from fp32 (Spearman {rank:.5f}, at least {min_rank} needed); quantising it is not "
                          "safe, keep --precision fp32")


def quantize_int8(directory: str | Path, tolerance: float = 0.05, min_rank: float = 0.999) -> dict:
    """Write ``<graph>.int8.onnx`` for every graph; refuse (ExportError) when the int8 energy's
    median relative error against fp32 exceeds ``tolerance`` or its Spearman rank correlation
    with fp32 is below ``min_rank``, on the bundle's kept validation rows. Returns the measured errors."""
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
        rows, checked_on = check_rows(bundle)
        spec = bundle.graph("energy")
        fp32 = ort.InferenceSession(str(directory / GRAPH_FILES["energy"]), providers=["CPUExecutionProvider"])
        int8 = ort.InferenceSession(str(directory / GRAPH_FILES["energy"].replace(".onnx", INT8_SUFFIX)),
                                    providers=["CPUExecutionProvider"])
        feeds = {GRAPH_INPUTS["energy"]: rows}
        errors = energy_agreement(fp32.run([spec.outputs[0]], feeds)[0], int8.run([spec.outputs[0]], feeds)[0])
        refuse_if_strayed(bundle, "int8", errors, tolerance, min_rank)
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
                            "checked_on": checked_on, "min_rank_agreement": min_rank, **details})
    bundle.write(dataclasses.replace(m, graphs={**m.graphs, "int8": graphs},
                                     exports=dataclasses.replace(m.exports, int8=record)))
    return errors
