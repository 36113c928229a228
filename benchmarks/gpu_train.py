"""GPU evidence for training (issue: training at the scale of the data): the same rows trained on
CUDA in fp32 and in bf16 autocast, and on the CPU, with rows/s and AUROC side by side.

Run on the lent GPU machine through benchmarks/gpu_train.sh (no scikit-learn there: the data is
generated; anomalies are rows off the normal rows' low-rank subspace). Prints one JSON line per run.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def rows(n: int, width: int = 32, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    mixing = rng.normal(size=(6, width)).astype(np.float32)
    normal = np.tanh(rng.normal(size=(n, 6)).astype(np.float32)) @ mixing
    normal += 0.1 * rng.normal(size=normal.shape).astype(np.float32)
    test = np.tanh(rng.normal(size=(2000, 6)).astype(np.float32)) @ mixing
    test += 0.1 * rng.normal(size=test.shape).astype(np.float32)
    anomalies = test[:200] + rng.normal(scale=0.15, size=(200, width)).astype(np.float32)
    return normal, test[200:], anomalies


def auroc(normal: np.ndarray, anomalous: np.ndarray) -> float:
    scores = np.concatenate([normal, anomalous])
    ranks = scores.argsort().argsort() + 1
    n1 = len(anomalous)
    return float((ranks[len(normal):].sum() - n1 * (n1 + 1) / 2) / (n1 * len(normal)))


def main() -> None:
    import aeserve
    from aeserve.tables import Table
    from aeserve.train.config import ModelConfig
    from aeserve.train.device import Hardware
    from aeserve.train.fit import FitConfig
    from aeserve.train.pipeline import train_bundle

    train, test, anomalies = rows(200_000)
    names = [f"f{i}" for i in range(train.shape[1])]
    work = Path(tempfile.mkdtemp())
    runs = [("cpu", "fp32"), ("cuda", "fp32"), ("cuda", "bf16"), ("cuda", "fp16")]
    print(json.dumps({"gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
                      "torch": torch.__version__}), flush=True)
    for device, precision in runs:
        if device == "cuda" and not torch.cuda.is_available():
            continue
        for kind in ("ae", "vae"):
            start = time.perf_counter()
            result = train_bundle(Table(train, names, "rows"), work / f"{kind}-{device}-{precision}",
                                  ModelConfig(kind=kind, n_features=train.shape[1], hidden=(256, 64), latent=8),
                                  FitConfig(epochs=5, batch_size=1024, patience=10), force=True,
                                  hardware=Hardware(device=device, precision=precision))
            seconds = time.perf_counter() - start
            model = aeserve.load(work / f"{kind}-{device}-{precision}", backend="onnxruntime")
            score = auroc(model.score(test)["energy"], model.score(anomalies)["energy"])
            print(json.dumps({"kind": kind, "device": device, "precision": precision,
                              "rows_per_s_fit": round(result.fit.rows_per_s),
                              "seconds_with_export": round(seconds, 1), "val_energy": min(result.fit.val_energy),
                              "auroc": round(score, 4)}), flush=True)


if __name__ == "__main__":
    main()
