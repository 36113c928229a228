"""Shared fixtures: real data (scikit-learn's offline sets) and bundles trained once per session."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

KINDS = ("ae", "dae", "cae", "vae", "lvm")


@pytest.fixture(scope="session")
def cancer():
    """Breast-cancer rows: benign = normal (train / held-out test), malignant = anomalies."""
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    values = data.data.astype(np.float32)
    names = [n.replace(" ", "_") for n in data.feature_names]
    normal = values[data.target == 1]
    order = np.random.default_rng(0).permutation(len(normal))
    return {"names": names, "train": normal[order[100:]], "test_normal": normal[order[:100]],
            "anomalies": values[data.target == 0]}


@pytest.fixture(scope="session")
def bundles(tmp_path_factory, cancer):
    """One exported bundle per kind, trained on benign breast-cancer rows."""
    from aeserve.tables import Table
    from aeserve.train.config import ModelConfig
    from aeserve.train.fit import FitConfig
    from aeserve.train.pipeline import train_bundle

    root = tmp_path_factory.mktemp("bundles")
    table = Table(cancer["train"], cancer["names"], "cancer.csv")
    paths = {}
    for kind in KINDS:
        config = ModelConfig(kind=kind, n_features=30, hidden=(32, 16), latent=4)
        train_bundle(table, root / kind, config, FitConfig(epochs=150, seed=0))
        paths[kind] = root / kind
    return paths


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run ``aeserve ARGS`` as a user would, in a fresh process."""
    return subprocess.run([sys.executable, "-m", "aeserve", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=300)
