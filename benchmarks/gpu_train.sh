#!/usr/bin/env bash
# GPU evidence for training on CUDA (fp32, bf16, fp16) against the CPU, in one run of a few
# minutes on the lent machine (torch+CUDA, onnx, onnxruntime, safetensors, pyarrow; no network):
# installs aeserve without dependencies into a temp dir and runs gpu_train.py.
set -euo pipefail
cd "$(dirname "$0")/.."
site=$(mktemp -d)
python3 -m pip install -q --no-deps --no-build-isolation --target "$site" .
PYTHONPATH="$site" PYTHONUNBUFFERED=1 timeout 400 python3 benchmarks/gpu_train.py
