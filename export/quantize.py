"""int8 graphs: ONNX Runtime dynamic quantisation (int8 weights per output channel, kept to
7 bits; uint8 activations quantised per batch at run time), checked against fp32 before they
are kept.

Why 7-bit weights (``reduce_range``): on a CPU without VNNI (AVX2, or AVX-512 without VNNI),
ONNX Runtime's u8×s8 kernels for batches of more than a few rows add pairs of products in 16
bits, which saturate with full 8-bit weights: energies of about the same value whatever the
row. With 7-bit weights no pair can saturate, on any CPU, and VNNI CPUs run the same graph at
the same speed; per-channel scales win back most of the bit (ONNX Runtime's quantisation
guide recommends both for such CPUs). A bundle quantised on one CPU is scored on others, so
the graph must be right on every one; the runtime checks it again where it runs
(``aeserve.serve.backends.checked``).

A graph whose int8 energies stray from fp32 at any scoring batch size (``aeserve.agreement``:
median relative error above the tolerance, or Spearman < 0.999 on the bundle's kept
validation rows) is refused: e.g. a CAE's exact Jacobian or an lvm's unrolled gradient steps
multiply quantisation error.

Dynamic quantisation takes each activation's range from the batch it is in, so a row's int8
energy depends slightly on its batch-mates (fp32 energies do not). Score normal and unknown
rows in the same stream, as files are, rather than in separate batches.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from pathlib import Path
from typing import Callable

import numpy as np

from aeserve.agreement import (
    MIN_RANK,
    TOLERANCE,
    agreement_by_batch,
    check_rows,
    scoring_batch_sizes,
    strayed,
    worst_batch,
)
from aeserve.atomic import atomic_path
from aeserve.batches import auto_batch_size
from aeserve.bundle import GRAPH_FILES, GRAPH_INPUTS, Bundle
from aeserve.errors import BackendUnavailable, ExportError
from aeserve.machine import cpu_summary
from aeserve.manifest import Int8Export

__all__ = ["quantize_int8", "INT8_SUFFIX", "INT8_WEIGHTS", "check_against_fp32"]

INT8_SUFFIX = ".int8.onnx"
INT8_WEIGHTS = "int8 (signed), per channel, 7-bit range (reduce_range)"


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


def check_against_fp32(bundle: Bundle, what: str, fp32: Callable[[np.ndarray], np.ndarray],
                       reduced: Callable[[np.ndarray], np.ndarray], rows: np.ndarray, tolerance: float,
                       min_rank: float) -> dict:
    """Energies of ``reduced`` against ``fp32`` (each: a batch of raw rows -> energies) on ``rows``
    at every scoring batch size. ExportError when any strays (quantising this bundle would
    change which rows it flags); else the worst batch's errors, with ``by_batch`` and the CPU."""
    by_batch = agreement_by_batch(fp32, reduced, rows, scoring_batch_sizes(auto_batch_size(bundle)))
    problem = strayed(by_batch, tolerance, min_rank)
    if problem is not None:
        raise ExportError(f"{bundle.path}: {what} {problem} for this {bundle.kind} bundle on {cpu_summary()}; "
                          "quantising it is not safe, keep --precision fp32")
    worst, errors = worst_batch(by_batch)
    return {**errors, "worst_batch": worst, "checked_on_cpu": cpu_summary(),
            "by_batch": {str(b): e for b, e in by_batch.items()}}


def quantize_int8(directory: str | Path, tolerance: float = TOLERANCE, min_rank: float = MIN_RANK) -> dict:
    """Write ``<graph>.int8.onnx`` for every graph; refuse (ExportError) when, at any scoring
    batch size, the int8 energy's median relative error against fp32 exceeds ``tolerance`` or
    its Spearman rank correlation with fp32 is below ``min_rank``, on the bundle's kept
    validation rows. Returns the measured errors (the worst batch's, and ``by_batch``)."""
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
                quantize_dynamic(str(directory / file), str(tmp), weight_type=QuantType.QInt8, per_channel=True,
                                 reduce_range=True)
            written.append(target)
        rows, checked_on = check_rows(bundle)
        spec = bundle.graph("energy")
        fp32 = ort.InferenceSession(str(directory / GRAPH_FILES["energy"]), providers=["CPUExecutionProvider"])
        int8 = ort.InferenceSession(str(directory / GRAPH_FILES["energy"].replace(".onnx", INT8_SUFFIX)),
                                    providers=["CPUExecutionProvider"])
        name, output = GRAPH_INPUTS["energy"], [spec.outputs[0]]
        errors = check_against_fp32(bundle, "int8", lambda x: fp32.run(output, {name: x})[0],
                                    lambda x: int8.run(output, {name: x})[0], rows, tolerance, min_rank)
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        raise
    m = bundle.manifest
    graphs = {g: dataclasses.replace(bundle.graph(g), file=GRAPH_FILES[g].replace(".onnx", INT8_SUFFIX))
              for g in GRAPH_FILES}
    details = {k: v for k, v in errors.items() if k != "energy_median_relative_error"}
    record = Int8Export(method="onnxruntime dynamic quantisation", weights=INT8_WEIGHTS, tolerance=tolerance,
                        energy_median_relative_error=errors["energy_median_relative_error"], details={
                            "activations": "uint8, ranges per batch at run time (a row's score depends "
                                           "slightly on its batch-mates)",
                            "checked_on": checked_on, "min_rank_agreement": min_rank, **details})
    bundle.write(dataclasses.replace(m, graphs={**m.graphs, "int8": graphs},
                                     exports=dataclasses.replace(m.exports, int8=record)))
    return errors
