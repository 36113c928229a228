"""Backend choice (serve/backends/): auto's reasons, and the GPU backends against ONNX Runtime on a CPU."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

import aeserve
from aeserve.bundle import Bundle
from aeserve.serve.backends import choose_backend
from aeserve.serve.gpu import gpu_info


def test_auto_says_why_it_chose(bundles):
    model = aeserve.load(bundles["ae"])
    name, reason = choose_backend("auto", Bundle.open(bundles["ae"]))  # what `aeserve info` says
    assert name == model.backend_name and reason.split(" (measured")[0] == model.backend_reason.split(" (measured")[0]
    if gpu_info() is None and model.backend_name in ("onnxruntime", "openvino") and "openvino" in reason:
        assert "rows/s" in reason and "measured on" in reason  # chosen by measurement on this CPU
    elif name == "onnxruntime":
        assert reason.startswith("auto: not tensorrt (")


@pytest.mark.gpu
def test_torch_cuda_matches_onnxruntime_cpu(bundles, cancer):
    import torch

    if not torch.cuda.is_available():
        pytest.skip("torch sees no CUDA GPU")
    cpu = aeserve.load(bundles["vae"], backend="onnxruntime", device="cpu")
    gpu = aeserve.load(bundles["vae"], backend="torch", device="cuda")
    rows = np.concatenate([cancer["test_normal"], cancer["anomalies"]])
    a, b = cpu.energy(rows)["energy"], gpu.energy(rows)["energy"]
    assert np.max(np.abs(a - b) / np.maximum(np.abs(a), 1.0)) <= 1e-3


@pytest.mark.gpu
def test_onnxruntime_cuda_matches_cpu(bundles, cancer):
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("onnxruntime here has no CUDAExecutionProvider (needs onnxruntime-gpu)")
    rows = cancer["anomalies"]
    a = aeserve.load(bundles["cae"], device="cpu").energy(rows)["energy"]
    b = aeserve.load(bundles["cae"], device="cuda").energy(rows)["energy"]
    assert np.max(np.abs(a - b) / np.maximum(np.abs(a), 1.0)) <= 1e-3
