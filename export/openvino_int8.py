"""Static int8 for OpenVINO: NNCF post-training quantisation, calibrated on the rows the
bundle keeps from training, checked against fp32 on the rows it keeps from validation.

Static quantisation fixes every activation's range at export (from the calibration rows),
so unlike ONNX Runtime's dynamic int8 a row's score does not depend on its batch-mates.
The three graphs are written as OpenVINO IR (``openvino-int8/<graph>.xml`` and ``.bin``:
an XML graph and raw little-endian weights, no pickle) and hashed in the manifest like every
other file. The decoder is calibrated on the codes the fp32 encoder gives the same rows.
A bundle whose int8 energies stray at any scoring batch size (median relative error above the
tolerance, or Spearman rank correlation with fp32 below 0.999) is refused, as
``export.quantize`` refuses its own.

NNCF's overflow fix is on for every layer: OpenVINO's int8 kernels on CPUs without VNNI add
pairs of u8×s8 products in 16 bits, which saturate with full 8-bit weights (NNCF's default
fixes the first layer only). VNNI CPUs lose one bit of weight precision. The runtime checks
the IR again where it runs. Before and after on a CPU without VNNI: ``benchmarks/int8_cpu.py``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
import shutil
from pathlib import Path

import numpy as np

from aeserve.agreement import MIN_RANK, TOLERANCE
from aeserve.bundle import GRAPH_FILES, GRAPH_INPUTS, Bundle
from aeserve.errors import BackendUnavailable, ExportError
from aeserve.export.quantize import check_against_fp32
from aeserve.manifest import Int8Export
from aeserve.onnx_guard import checked_graph_bytes

__all__ = ["quantize_static_int8", "STATIC_DIR", "STATIC_PRECISION"]

STATIC_DIR = "openvino-int8"
STATIC_PRECISION = "int8-static"  # the manifest's graphs key
_CALIBRATION_BATCH = 128


def _libraries():
    try:
        import nncf
        import openvino as ov
    except ImportError as exc:
        raise BackendUnavailable(f"static int8 needs OpenVINO and NNCF ({exc.name} is missing): "
                                 "pip install 'aeserve[openvino]' nncf") from None
    logging.getLogger("nncf").setLevel(logging.ERROR)
    return nncf, ov


def _batches(rows: np.ndarray) -> list[np.ndarray]:
    return [rows[i:i + _CALIBRATION_BATCH] for i in range(0, len(rows), _CALIBRATION_BATCH)]


def _compiled(ov, model):
    """A function of a batch of rows -> the model's first output, compiled for the CPU in f32."""
    compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    return lambda rows: compiled(rows)[0]


def _run(ov, model, rows: np.ndarray) -> np.ndarray:
    run = _compiled(ov, model)
    return np.concatenate([run(batch) for batch in _batches(rows)])


def _settings(nncf) -> dict:
    """NNCF's settings: int8 MatMul inputs only, with SmoothQuant (alpha 0.5) moving activation
    outliers into the weights: NNCF's default (every quantisable op, no smoothing) ranked rows
    worse and ran slower (``docs/measurements.md``); the overflow fix on every layer."""
    from nncf.parameters import ModelType
    from nncf.quantization.advanced_parameters import (
        AdvancedQuantizationParameters,
        AdvancedSmoothQuantParameters,
        OverflowFix,
    )

    return {"preset": nncf.QuantizationPreset.MIXED, "model_type": ModelType.TRANSFORMER,
            "advanced_parameters": AdvancedQuantizationParameters(
                overflow_fix=OverflowFix.ENABLE, smooth_quant_alphas=AdvancedSmoothQuantParameters(matmul=0.5))}


def quantize_static_int8(directory: str | Path, calibration: np.ndarray | None = None,
                         tolerance: float = TOLERANCE, min_rank: float = MIN_RANK) -> dict:
    """Write NNCF static int8 IR graphs for OpenVINO into the bundle at ``directory``,
    calibrated on ``calibration`` rows (raw units; default: the training rows the bundle keeps)
    and checked on the validation rows it keeps. ExportError when there are no rows to
    calibrate on or the energies stray; returns the measured errors."""
    nncf, ov = _libraries()
    directory = Path(directory)
    bundle = Bundle.open(directory)
    kept = bundle.kept_rows()
    if calibration is None:
        if kept is None:
            raise ExportError(f"{directory}: keeps no training rows to calibrate static int8 on (it was trained "
                              "with --keep-rows 0 or by an older aeserve); pass --calibration-data FILE")
        calibration = kept[0]
    calibration = np.ascontiguousarray(calibration, np.float32)
    if calibration.ndim != 2 or calibration.shape[1] != bundle.n_features or len(calibration) < 32:
        raise ExportError(f"{directory}: static int8 needs at least 32 calibration rows of {bundle.n_features} "
                          f"features, got shape {calibration.shape}")
    validation = kept[1] if kept is not None and len(kept[1]) >= 32 else calibration
    checked_on = (f"{len(validation)} validation rows kept in the bundle" if validation is not calibration
                  else f"the {len(calibration)} calibration rows (the bundle keeps no validation rows)")
    core = ov.Core()
    fp32 = {graph: core.read_model(checked_graph_bytes(bundle, graph), b"") for graph in GRAPH_FILES}
    codes = _run(ov, fp32["encoder"], calibration)  # (rows, latent): the decoder's calibration inputs
    inputs = {"encoder": calibration, "energy": calibration, "decoder": codes}
    quantised = {}
    for graph, model in fp32.items():
        dataset = nncf.Dataset([{GRAPH_INPUTS[graph]: batch} for batch in _batches(inputs[graph])])
        try:  # NNCF draws progress bars on stdout, which belongs to the CLI's output
            with contextlib.redirect_stdout(io.StringIO()):
                quantised[graph] = nncf.quantize(model, dataset, subset_size=len(inputs[graph]), **_settings(nncf))
        except Exception as exc:  # NNCF raises many types; the user needs to know which graph and why
            raise ExportError(f"{directory}: NNCF could not quantise the {graph} graph "
                              f"({type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''})") from None
    errors = check_against_fp32(bundle, "static int8", _compiled(ov, fp32["energy"]),
                                _compiled(ov, quantised["energy"]), validation, tolerance, min_rank)

    target = directory / STATIC_DIR
    staging = directory / f".{STATIC_DIR}.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        for graph, model in quantised.items():
            ov.save_model(model, str(staging / f"{graph}.xml"), compress_to_fp16=False)
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    m = bundle.manifest
    graphs = {g: dataclasses.replace(bundle.graph(g), file=f"{STATIC_DIR}/{g}.xml") for g in GRAPH_FILES}
    details = {k: v for k, v in errors.items() if k != "energy_median_relative_error"}
    record = Int8Export(method=f"NNCF {nncf.__version__} static post-training quantisation (MatMul inputs, "
                                               "SmoothQuant alpha 0.5, mixed preset, overflow fix on every layer)",
                        weights="int8, per channel, 7-bit range (overflow fix)", tolerance=tolerance,
                        energy_median_relative_error=errors["energy_median_relative_error"], details={
                            "activations": f"int8, ranges fixed from {len(calibration)} calibration rows",
                            "runtime": "openvino (IR)", "checked_on": checked_on,
                            "min_rank_agreement": min_rank, **details})
    bundle.write(dataclasses.replace(m, graphs={**m.graphs, STATIC_PRECISION: graphs},
                                     exports=dataclasses.replace(m.exports, int8_static=record)))
    return errors
