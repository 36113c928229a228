"""The ready-made bundles in models/: intact, accurate on rows they never saw, usable without torch."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import aeserve
from aeserve.bundle import Bundle
from aeserve.evaluation import auroc

ROOT = Path(__file__).resolve().parents[2]
MODELS = ROOT / "models"


def _build_module():
    spec = importlib.util.spec_from_file_location("models_build", MODELS / "build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name, least", [("breast-cancer-vae", 0.93), ("digits-conv-ae", 0.99)])
def test_shipped_bundle_is_intact_small_and_detects(name, least):
    build = _build_module()
    bundle = Bundle.open(MODELS / name)  # checks every file's sha256
    assert sum(f.stat().st_size for f in bundle.path.rglob("*") if f.is_file()) <= 5_000_000
    rows, labels, names = build.held_out(name)
    assert bundle.features == names
    energies = aeserve.load(bundle.path, backend="onnxruntime").energy(rows)["energy"]
    assert auroc(energies[labels == 0], energies[labels == 1]) >= least


def test_readme_scores_the_shipped_bundles_without_torch(tmp_path):
    readme = (ROOT / "README.md").read_text()
    block = re.findall(r"```bash\n(.*?)```", readme.split("<!-- models -->", 1)[1], flags=re.S)[0]
    commands = [line for line in block.splitlines() if line.startswith("aeserve ")]
    assert len(commands) >= 3
    shutil.copytree(MODELS, tmp_path / "models")  # calibrate writes into the bundle
    blocker = tmp_path / "no-torch"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text("import sys\nsys.modules['torch'] = None  # import torch fails\n")
    env = {**os.environ, "PYTHONPATH": str(blocker)}
    for command in commands:
        argv = [sys.executable, "-m", "aeserve", *command.split()[1:]]
        result = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, f"{command}\n{result.stderr}"
    header = (tmp_path / "explained.csv").read_text().splitlines()[0]
    assert "feature_3" in header and "share_3" in header
    assert Bundle.open(tmp_path / "models" / "breast-cancer-vae").manifest.threshold.method == "f1"
