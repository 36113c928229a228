"""``aeserve train --engine ray``: Ray Train workers (DDP on gloo) on a local Ray, in a fresh
process as a user runs it; one of them killed mid-training, the run resumed from its checkpoint."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import cancer_auroc, write_shards

pytest.importorskip("ray.train.torch")
psutil = pytest.importorskip("psutil")


def _train_workers() -> list:
    """The live Ray Train worker processes (Ray titles them ray::RayTrainWorker...)."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(process.info.get("cmdline") or [])
        if cmdline.startswith("ray::RayTrainWorker"):
            found.append(process)
    return found


def _reported_epochs(storage) -> int:
    epochs = [json.loads(p.read_text())["epoch"] for p in storage.rglob("checkpoint_*/checkpoint.json")]
    return max(epochs, default=0)


def test_two_ray_workers_train_a_detector_and_survive_a_killed_worker(tmp_path, cancer):
    write_shards(tmp_path / "shards", cancer["train"], cancer["names"], 4)
    out = tmp_path / "models" / "cancer-ray"
    storage = tmp_path / "models" / "cancer-ray.checkpoint-ray"
    process = subprocess.Popen(
        [sys.executable, "-m", "aeserve", "train", str(tmp_path / "shards"), "--engine", "ray", "--workers", "2",
         "--kind", "vae", "--hidden", "32,16", "--latent", "4", "--epochs", "15", "--patience", "15",
         "--batch-size", "16", "--lr", "0.003", "--device", "cpu", "--out", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    killed = None
    try:
        deadline = time.monotonic() + 240
        while killed is None and time.monotonic() < deadline and process.poll() is None:
            if _reported_epochs(storage) >= 3:
                workers = _train_workers()
                if len(workers) == 2:
                    killed = _reported_epochs(storage)
                    workers[-1].kill()  # SIGKILL: a worker lost mid-training
            time.sleep(0.2)
        output = process.communicate(timeout=300)[0]
    finally:
        process.kill()
    assert killed is not None, output[-3000:]
    assert process.returncode == 0, output[-3000:]
    assert f"saved {out}" in output.replace("\n", "")
    resumed = int(output.split("resumed after epoch ")[1].split(")")[0].split(",")[0])
    assert 1 <= resumed <= killed  # the last checkpoint Ray Train had registered when the worker died
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["training"]["settings"]["engine"] == "ray" and manifest["training"]["settings"]["workers"] == 2
    assert len(manifest["training"]["history"]["val_energy"]) == 15  # every epoch, before and after the failure
    assert not storage.exists()  # a finished run leaves only its bundle
    # the bundle scores, with parity between its backends, and detects as a one-process run does
    import aeserve

    rows = np.concatenate([cancer["test_normal"], cancer["anomalies"]])
    onnx = aeserve.load(out, backend="onnxruntime").score(rows)["energy"]
    reference = aeserve.load(out, backend="torch").score(rows)["energy"]
    np.testing.assert_allclose(onnx, reference, rtol=1e-4, atol=1e-4)
    from aeserve.tables import Table
    from aeserve.train.config import ModelConfig
    from aeserve.train.fit import FitConfig
    from aeserve.train.pipeline import train_bundle

    train_bundle(Table(cancer["train"], cancer["names"], "cancer.csv"), tmp_path / "local",
                 ModelConfig(kind="vae", n_features=30, hidden=(32, 16), latent=4),
                 FitConfig(epochs=15, patience=15, batch_size=32, lr=0.003))
    ray_auroc, local_auroc = cancer_auroc(out, cancer), cancer_auroc(tmp_path / "local", cancer)
    assert ray_auroc > 0.88 and abs(ray_auroc - local_auroc) < 0.05, (ray_auroc, local_auroc)
