"""``aeserve demo``: a real detector, end to end, in under a minute.

Data: scikit-learn's breast-cancer set (shipped offline). Benign tumours are "normal";
the detector never sees a malignant one in training, and is then asked to rank held-out
benign rows below malignant ones. The demo runs the same commands a user would, each
in its own process, so scoring happens with ONNX Runtime and without torch.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from aeserve.errors import BackendUnavailable, InputError
from aeserve.evaluation import auroc
from aeserve.tables import read_table, write_table

__all__ = ["make_demo_data", "run_demo"]


def make_demo_data(directory: Path, seed: int = 0, n_test_normal: int = 100) -> dict[str, Path]:
    """Write train.csv (benign only) and test.csv (held-out benign + all malignant, with label)."""
    try:
        from sklearn.datasets import load_breast_cancer
    except ImportError:
        raise BackendUnavailable("the demo needs scikit-learn: pip install 'aeserve[demo]'") from None
    data = load_breast_cancer()
    names = [n.replace(" ", "_") for n in data.feature_names]
    values = data.data.astype(np.float32)
    normal = np.flatnonzero(data.target == 1)  # benign
    malignant = np.flatnonzero(data.target == 0)
    order = np.random.default_rng(seed).permutation(normal)
    test_normal, train = order[:n_test_normal], order[n_test_normal:]
    test = np.concatenate([test_normal, malignant])
    directory.mkdir(parents=True, exist_ok=True)
    paths = {"train": directory / "train.csv", "test": directory / "test.csv"}
    write_table(paths["train"], {n: values[train, j] for j, n in enumerate(names)})
    write_table(paths["test"], {"id": test.astype(np.int64),
                                **{n: values[test, j] for j, n in enumerate(names)},
                                "label": (data.target[test] == 0).astype(np.int64)})
    return paths


def _run(console, args: list[str]) -> None:
    shown = "aeserve " + " ".join(shlex.quote(a) for a in args)
    console.print(f"[bold]$ {shown}[/]")
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    code = subprocess.call([sys.executable, "-m", "aeserve", *args], env=env)
    if code != 0:
        raise InputError(f"demo step failed with exit code {code}: {shown}")


def run_demo(workdir: Path | None, kind: str = "vae", epochs: int = 150, console=None) -> dict:
    """Make data, train, score torch-free, and print AUROC and the false-positive rate."""
    from rich.console import Console

    console = console or Console(stderr=True)
    start = time.perf_counter()
    directory = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="aeserve-demo-"))
    paths = make_demo_data(directory)
    bundle = directory / f"breast-cancer-{kind}"
    scores = directory / "scores.csv"
    console.print(f"[bold]aeserve demo[/]: breast-cancer data in {directory} "
                  "(train on benign rows; malignant rows are the anomalies)")
    _run(console, ["train", str(paths["train"]), "--kind", kind, "--out", str(bundle),
                   "--hidden", "32,16", "--latent", "4", "--epochs", str(epochs), "--val-fraction", "0.3", "--force"])
    _run(console, ["score", str(bundle), str(paths["test"]), "-o", str(scores),
                   "--backend", "onnxruntime"])
    labels = read_table(paths["test"], columns=["label"]).values[:, 0]
    result = read_table(scores, columns=["energy", "anomaly"]).values
    normal, anomalous = result[labels == 0], result[labels == 1]
    figures = {
        "auroc": auroc(normal[:, 0], anomalous[:, 0]),
        "false_positive_rate": float(normal[:, 1].mean()),
        "detection_rate": float(anomalous[:, 1].mean()),
        "seconds": time.perf_counter() - start,
    }
    console.print(
        f"[bold green]AUROC {figures['auroc']:.3f}[/] on {len(normal)} held-out benign vs "
        f"{len(anomalous)} malignant rows | at the bundle's threshold: false-positive rate "
        f"{figures['false_positive_rate']:.1%}, malignant flagged {figures['detection_rate']:.1%} | "
        f"{figures['seconds']:.1f} s")
    console.print(f"next: aeserve info {bundle}   |   aeserve score {bundle} YOUR.csv -o scores.csv")
    return figures
