#!/usr/bin/env bash
# GPU evidence for the TensorRT/CUDA issue, in one run of under 8 minutes on the lent machine
# (which has torch+CUDA, onnx, onnxruntime, safetensors, typer, rich, pyarrow, cuda-bindings and
# no network): installs aeserve without dependencies into a temp dir and runs gpu_check.py.
set -euo pipefail
cd "$(dirname "$0")/.."
site=$(mktemp -d)
python3 -m pip install -q --no-deps --no-build-isolation --target "$site" .
PYTHONPATH="$site" PYTHONUNBUFFERED=1 timeout 470 python3 benchmarks/gpu_check.py
