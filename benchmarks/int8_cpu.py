"""int8 on this CPU: how far each int8 kind strays from fp32 at the batch sizes scoring uses,
quantised as aeserve did before (full 8-bit weights) and as it does now (7-bit per-channel
weights for ONNX Runtime's dynamic int8, NNCF's overflow fix on every layer for OpenVINO's
static int8), and how fast each runs against fp32. Prints the CPU's flags first: the figures
hold for this CPU kind only (run it on each kind you deploy to).

    python benchmarks/int8_cpu.py [--rows 65536] [--repeats 5]

Accuracy: a breast-cancer ``ae`` (hidden 32,16, latent 4, 150 epochs; the issue-20 bundle),
median relative error of the energy on its 312 held-out rows (100 benign, 212 malignant),
repeated to fill each batch. Speed: a 784-256-32-256-784 ``ae`` energy graph at batch 1024,
rows/s medians of interleaved rounds, ratio to fp32 on the same library.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

BATCHES = (1, 64, 1024, 8192)


def _cancer(work: Path):
    from sklearn.datasets import load_breast_cancer

    from aeserve.tables import Table
    from aeserve.train.config import ModelConfig
    from aeserve.train.fit import FitConfig
    from aeserve.train.pipeline import train_bundle

    data = load_breast_cancer()
    values = data.data.astype(np.float32)
    normal = values[data.target == 1]
    order = np.random.default_rng(0).permutation(len(normal))
    names = [n.replace(" ", "_") for n in data.feature_names]
    train_bundle(Table(normal[order[100:]], names, "cancer.csv"), work / "cancer",
                 ModelConfig(kind="ae", n_features=30, hidden=(32, 16), latent=4), FitConfig(epochs=150, seed=0))
    return work / "cancer", np.concatenate([normal[order[:100]], values[data.target == 0]])


def _dynamic(src: Path, dst: Path, new: bool) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    extra = {"per_channel": True, "reduce_range": True} if new else {}
    quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, **extra)


def _static(bundle_dir: Path, new: bool):
    """NNCF static int8 of the energy graph, with aeserve's settings (overflow fix: every layer, or NNCF's default)."""
    import nncf
    import openvino as ov
    from nncf.quantization.advanced_parameters import OverflowFix

    from aeserve.bundle import Bundle
    from aeserve.export.openvino_int8 import _settings

    settings = _settings(nncf)
    if not new:
        settings["advanced_parameters"].overflow_fix = OverflowFix.FIRST_LAYER
    calibration = Bundle.open(bundle_dir).kept_rows()[0]
    model = ov.Core().read_model(str(bundle_dir / "energy.onnx"))
    dataset = nncf.Dataset([{"y": calibration[i:i + 128]} for i in range(0, len(calibration), 128)])
    with contextlib.redirect_stdout(io.StringIO()):
        return nncf.quantize(model, dataset, subset_size=len(calibration), **settings)


def _ort(path: Path):
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return lambda rows: session.run(["energy"], {"y": rows})[0]


def _ov(model):
    import openvino as ov

    compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    return lambda rows: compiled(rows)[0]


def _errors(fp32, reduced, rows) -> dict[int, float]:
    from aeserve.agreement import agreement_by_batch

    by_batch = agreement_by_batch(fp32, reduced, rows, list(BATCHES))
    return {b: e["energy_median_relative_error"] for b, e in by_batch.items()}


def accuracy(work: Path) -> None:
    import openvino as ov

    bundle_dir, rows = _cancer(work)
    fp32_ort, fp32_ov = _ort(bundle_dir / "energy.onnx"), _ov(ov.Core().read_model(str(bundle_dir / "energy.onnx")))
    print("\nint8 energy, median relative error vs fp32 (breast-cancer ae, 312 held-out rows)")
    print("| int8 kind | quantised | " + " | ".join(f"batch {b}" for b in BATCHES) + " |")
    print("|---|---|" + "---|" * len(BATCHES))
    for new in (False, True):
        how = "now (7-bit per-channel weights)" if new else "before (8-bit weights)"
        target = work / f"energy.{'new' if new else 'old'}.int8.onnx"
        _dynamic(bundle_dir / "energy.onnx", target, new)
        errors = _errors(fp32_ort, _ort(target), rows)
        print(f"| onnxruntime dynamic | {how} | " + " | ".join(f"{errors[b]:.2%}" for b in BATCHES) + " |")
    for new in (False, True):
        how = "now (overflow fix, every layer)" if new else "before (overflow fix, first layer)"
        errors = _errors(fp32_ov, _ov(_static(bundle_dir, new)), rows)
        print(f"| OpenVINO static (NNCF) | {how} | " + " | ".join(f"{errors[b]:.2%}" for b in BATCHES) + " |")


def speed(work: Path, n_rows: int, repeats: int) -> None:
    import openvino as ov

    from aeserve.tables import Table
    from aeserve.train.config import ModelConfig
    from aeserve.train.fit import FitConfig
    from aeserve.train.pipeline import train_bundle

    rng = np.random.default_rng(0)
    train_bundle(Table(rng.random((4096, 784), dtype=np.float32), [f"p{i}" for i in range(784)], "r.npy"),
                 work / "mlp", ModelConfig(kind="ae", n_features=784, hidden=(256,), latent=32),
                 FitConfig(epochs=1, batch_size=256))
    src = work / "mlp" / "energy.onnx"
    runs = {"onnxruntime fp32": _ort(src), "OpenVINO fp32": _ov(ov.Core().read_model(str(src)))}
    for new in (False, True):
        target = work / f"mlp.{'new' if new else 'old'}.int8.onnx"
        _dynamic(src, target, new)
        runs[f"onnxruntime int8 {'now' if new else 'before'}"] = _ort(target)
        runs[f"OpenVINO int8 {'now' if new else 'before'}"] = _ov(_static(work / "mlp", new))
    rows = rng.random((n_rows, 784), dtype=np.float32)
    rates: dict[str, list[float]] = {name: [] for name in runs}
    for run in runs.values():
        run(rows[:1024])  # warm-up
    for _ in range(repeats):  # interleaved rounds: drift on a shared machine hits every contender alike
        for name, run in runs.items():
            started = time.perf_counter()
            for i in range(0, n_rows, 1024):
                run(rows[i:i + 1024])
            rates[name].append(n_rows / (time.perf_counter() - started))
    print(f"\nspeed, 784-256-32-256-784 ae energy graph, batch 1024, {n_rows} rows, median of {repeats} rounds")
    print("| path | rows/s | vs fp32 of the same library |")
    print("|---|---|---|")
    for name, values in rates.items():
        reference = rates["onnxruntime fp32" if name.startswith("onnxruntime") else "OpenVINO fp32"]
        ratio = statistics.median(a / b for a, b in zip(values, reference))
        print(f"| {name} | {statistics.median(values):,.0f} | {ratio:.2f}x |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=65536)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    logging.getLogger().setLevel(logging.ERROR)
    logging.getLogger("nncf").setLevel(logging.ERROR)
    from aeserve.machine import cpu_summary

    print(f"CPU: {cpu_summary()}")
    with tempfile.TemporaryDirectory(prefix="aeserve-int8-") as tmp:
        accuracy(Path(tmp))
        speed(Path(tmp), args.rows, args.repeats)


if __name__ == "__main__":
    main()
