"""GPU evidence in one run (the lent GPU machine, or any CUDA host): what is installed,
torch-CUDA parity against ONNX Runtime on the CPU, and rows/s of the energy graph for the
MLP 784-256-32-256-784 at several batch sizes, host-to-device copies included and excluded.
TensorRT plans are built and checked too when ``import tensorrt`` works.

Usage: bash benchmarks/gpu_check.sh   (prints a report; writes gpu_check.json to $OUT or .)
"""

from __future__ import annotations

import importlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROWS = 200_000
BATCHES = (256, 1024, 4096, 16384, 65536)
REPEATS = 3


def _try(module: str) -> str:
    try:
        mod = importlib.import_module(module)
        return f"yes ({getattr(mod, '__version__', 'version unknown')})"
    except Exception as exc:  # report any failure, not only ImportError
        return f"no ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"


def _median_rate(fn, rows: int) -> float:
    rates = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        fn()
        rates.append(rows / (time.perf_counter() - start))
    return statistics.median(rates)


def main() -> dict:
    import onnxruntime as ort
    import torch

    import aeserve
    from aeserve.tables import Table
    from aeserve.train.config import ModelConfig
    from aeserve.train.fit import FitConfig
    from aeserve.train.pipeline import train_bundle

    report: dict = {"python": sys.version.split()[0], "torch": torch.__version__,
                    "cuda_available": torch.cuda.is_available(), "onnxruntime": ort.__version__,
                    "ort_providers": ort.get_available_providers(),
                    "import tensorrt": _try("tensorrt"), "import cuda.bindings": _try("cuda.bindings.runtime"),
                    "import onnxscript": _try("onnxscript")}
    try:
        report["nvidia-smi"] = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,compute_cap,driver_version,memory.total", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=30).stdout.strip()
    except OSError:
        report["nvidia-smi"] = "not found"
    if torch.cuda.is_available():
        report["gpu"] = torch.cuda.get_device_name(0)
    print(json.dumps(report, indent=2), flush=True)
    if report["import cuda.bindings"].startswith("yes"):
        report["cuda_bindings_buffer_round_trip"] = _buffer_round_trip()
    if not report["import onnxscript"].startswith("yes"):  # say so now, not after a failed export
        report["error"] = ("torch's dynamo ONNX exporter needs onnxscript, which does not import here; "
                           "install it (pip install onnxscript) or carry it; nothing was trained")
        _write(report)
        return report

    rng = np.random.default_rng(0)
    data = rng.random((20_000, 784), dtype=np.float32)
    workdir = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    config = ModelConfig(kind="ae", n_features=784, hidden=(256,), latent=32)
    start = time.perf_counter()
    train_bundle(Table(data, [f"p{i}" for i in range(784)], "synthetic.npy"), workdir / "mlp", config,
                 FitConfig(epochs=2, batch_size=512))
    report["bundle_seconds"] = round(time.perf_counter() - start, 1)
    rows = rng.random((ROWS, 784), dtype=np.float32)

    cpu = aeserve.load(workdir / "mlp", backend="onnxruntime", device="cpu", batch_size=1024)
    reference = cpu.energy(rows[:8192])["energy"]
    report["ort_cpu_rows_per_s(batch 1024)"] = round(_median_rate(lambda: cpu.energy(rows[:50_000]), 50_000))

    if torch.cuda.is_available():
        gpu = aeserve.load(workdir / "mlp", backend="torch", device="cuda")
        got = gpu.energy(rows[:8192])["energy"]
        report["torch_cuda_vs_ort_cpu_max_rel_err"] = float(np.max(np.abs(got - reference) / np.abs(reference)))
        module = gpu.backend.modules["energy"]
        resident = torch.from_numpy(rows).cuda()
        throughput = {}
        for batch in BATCHES:
            gpu.batch_size = batch
            with_copies = _median_rate(lambda: gpu.energy(rows), ROWS)

            def on_device(batch=batch):
                with torch.inference_mode():
                    for i in range(0, ROWS, batch):
                        module(resident[i:i + batch])
                torch.cuda.synchronize()

            on_device()  # warm-up
            throughput[batch] = {"h2d_included_rows_per_s": round(with_copies),
                                 "h2d_excluded_rows_per_s": round(_median_rate(on_device, ROWS))}
            print(f"batch {batch}: {throughput[batch]}", flush=True)
        report["torch_cuda_energy_throughput"] = throughput

    if report["import tensorrt"].startswith("yes") and report["import cuda.bindings"].startswith("yes"):
        from aeserve.export.tensorrt import Profile, build_tensorrt

        try:
            for fp16 in (False, True):
                build_tensorrt(workdir / "mlp", Profile(1, 4096, 65536), fp16=fp16, require_tensorrt=True)
                trt_model = aeserve.load(workdir / "mlp", backend="tensorrt", batch_size=4096)
                got = trt_model.energy(rows[:8192])["energy"]
                key = "fp16" if fp16 else "fp32"
                report[f"tensorrt_{key}_max_rel_err"] = float(np.max(np.abs(got - reference) / np.abs(reference)))
                report[f"tensorrt_{key}_rows_per_s(batch 4096, h2d included)"] = round(
                    _median_rate(lambda model=trt_model: model.energy(rows), ROWS))
        except Exception as exc:  # record, do not hide, what TensorRT said
            report["tensorrt_error"] = f"{type(exc).__name__}: {exc}"
    _write(report)
    return report


def _buffer_round_trip() -> str:
    """The TensorRT backend's pinned + device buffers (cuda-bindings, no TensorRT): host ->
    device -> another device buffer's host mirror, bytes compared."""
    from cuda.bindings import runtime as cudart

    from aeserve.serve.backends.tensorrt import _Buffer, _check

    try:
        data = np.random.default_rng(1).random((4096, 784), dtype=np.float32)
        first, second = _Buffer(), _Buffer()
        first.ensure(data.nbytes)
        second.ensure(data.nbytes)
        stream = _check(cudart.cudaStreamCreate())
        first.host_array(data.shape, data.dtype)[...] = data
        kinds = cudart.cudaMemcpyKind
        _check(cudart.cudaMemcpyAsync(first.device, first.host, data.nbytes, kinds.cudaMemcpyHostToDevice, stream))
        _check(cudart.cudaMemcpyAsync(second.device, first.device, data.nbytes, kinds.cudaMemcpyDeviceToDevice,
                                      stream))
        _check(cudart.cudaMemcpyAsync(second.host, second.device, data.nbytes, kinds.cudaMemcpyDeviceToHost, stream))
        _check(cudart.cudaStreamSynchronize(stream))
        same = np.array_equal(second.host_array(data.shape, data.dtype), data)
        first.free()
        second.free()
        cudart.cudaStreamDestroy(stream)
        return f"{'ok' if same else 'MISMATCH'}: {data.nbytes} bytes host->device->device->host"
    except Exception as exc:
        return f"failed: {type(exc).__name__}: {exc}"


def _write(report: dict) -> None:
    out = Path(os.environ.get("OUT", ".")) / "gpu_check.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
