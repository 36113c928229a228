"""Convolutional kinds on images: exact CAE Jacobian and lvm gradient through convolutions,
torch vs ONNX Runtime parity, and a folder of generated images scored end to end."""

from __future__ import annotations

import numpy as np
import pyarrow.csv as pacsv
import pytest
import torch

import aeserve
from aeserve.train.config import ModelConfig
from aeserve.train.registry import build_model

from conftest import KINDS, run_cli

Image = pytest.importorskip("PIL.Image")
SHAPE = (1, 16, 16)


def _blob(rng) -> np.ndarray:
    yy, xx = np.mgrid[0:16, 0:16]
    cy, cx, r = rng.uniform(4, 12), rng.uniform(4, 12), rng.uniform(2, 4)
    return (255 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))).astype(np.uint8)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    (root / "train").mkdir()
    (root / "test").mkdir()
    for i in range(240):
        Image.fromarray(_blob(rng)).save(root / "train" / f"blob{i:03d}.png")
    for i in range(10):
        Image.fromarray(_blob(rng)).save(root / "test" / f"blob{i:02d}.png")
        Image.fromarray((rng.random((16, 16)) * 255).astype(np.uint8)).save(root / "test" / f"noise{i:02d}.png")
    return root


def _conv(kind: str, **options):
    return ModelConfig(kind=kind, n_features=256, hidden=(16,), latent=3, arch="conv", image_shape=SHAPE,
                       channels=(4, 8), **options)


def test_conv_cae_jacobian_is_exact():
    torch.manual_seed(0)
    model = build_model(_conv("cae", activation="tanh", contraction=1.0)).double()
    y = torch.rand(3, 256, dtype=torch.float64)
    _, reg = model.scoring_energy(y)
    for i in range(3):
        jac = torch.autograd.functional.jacobian(lambda row: model.code(row[None])[0], y[i])
        assert reg[i].item() == pytest.approx(jac.pow(2).sum().item(), rel=1e-10)


def test_conv_lvm_gradient_is_explicit_and_exact():
    torch.manual_seed(0)
    model = build_model(_conv("lvm", activation="relu")).double()
    y = torch.rand(4, 256, dtype=torch.float64)
    z = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    cost, grad = model.cost_and_gradient(y, z)
    (expected,) = torch.autograd.grad(cost.sum(), z)
    np.testing.assert_allclose(grad.detach(), expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kind", KINDS)
def test_conv_bundles_export_with_parity(conv_bundles, kind):
    paths, rows = conv_bundles  # exported: the export checked parity on validation and random rows
    manifest = aeserve.load(paths[kind]).bundle.manifest
    assert manifest.exports.onnx.tensorrt_check.parser_compatible
    a = aeserve.load(paths[kind], backend="onnxruntime").energy(rows[:300])["energy"]
    b = aeserve.load(paths[kind], backend="torch").energy(rows[:300])["energy"]
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * np.abs(b).max())


def test_image_folder_scores_end_to_end(folders, tmp_path):
    result = run_cli("train", folders / "train", "--arch", "conv", "--kind", "ae", "--hidden", "32", "--latent", "4",
                     "--conv-channels", "4,8", "--epochs", "40", "--out", tmp_path / "blobs")
    assert result.returncode == 0, result.stderr
    result = run_cli("score", tmp_path / "blobs", folders / "test", "-o", tmp_path / "scores.csv",
                     "--save-reconstructions", tmp_path / "pictures")
    assert result.returncode == 0, result.stderr
    table = pacsv.read_csv(tmp_path / "scores.csv").to_pydict()
    assert [p.rsplit("/", 1)[-1] for p in table["path"]] == sorted(p.name for p in (folders / "test").iterdir())
    energy = np.array(table["energy"])
    noise = np.array(["noise" in p for p in table["path"]])
    assert energy[noise].min() > energy[~noise].max()  # every noise image above every blob
    pictures = sorted(p.name for p in (tmp_path / "pictures").iterdir())
    assert len(pictures) == 40 and "noise00.energy.png" in pictures and "blob00.reconstruction.png" in pictures
    assert Image.open(tmp_path / "pictures" / "blob00.reconstruction.png").size == (16, 16)


def test_broken_image_is_named(folders, tmp_path):
    result = run_cli("train", folders / "train", "--arch", "conv", "--hidden", "8", "--latent", "2",
                     "--conv-channels", "4", "--epochs", "1", "--out", tmp_path / "m")
    assert result.returncode == 0, result.stderr
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "broken.png").write_bytes(b"not a png")
    result = run_cli("score", tmp_path / "m", bad, "-o", tmp_path / "s.csv")
    assert result.returncode == 2 and "broken.png" in result.stderr and "cannot read the image" in result.stderr
    assert not (tmp_path / "s.csv").exists()
