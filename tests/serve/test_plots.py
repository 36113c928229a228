"""Plots and the HTML report: real PNGs of the stated size, from trained models; metrics vs sklearn."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from aeserve.evaluation import auroc, average_precision, roc_curve
from aeserve.tables import write_table

from conftest import run_cli

pytest.importorskip("matplotlib")
PLOTS = ["latent", "energy", "roc", "reconstructions", "training"]


def _png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


@pytest.fixture(scope="module")
def labelled(tmp_path_factory, cancer):
    path = tmp_path_factory.mktemp("plots") / "labelled.csv"
    rows = np.concatenate([cancer["test_normal"], cancer["anomalies"]])
    labels = np.r_[np.zeros(len(cancer["test_normal"])), np.ones(len(cancer["anomalies"]))].astype(np.int64)
    write_table(path, {**{n: rows[:, j] for j, n in enumerate(cancer["names"])}, "label": labels})
    return path


@pytest.mark.parametrize("kind", ["vae", "lvm"])
@pytest.mark.parametrize("what", PLOTS)
def test_every_plot_is_a_real_png(bundles, labelled, tmp_path, kind, what):
    out = tmp_path / f"{what}.png"
    result = run_cli("plot", bundles[kind], labelled, "--what", what, "--labels", "label", "-o", out)
    assert result.returncode == 0, result.stderr
    assert _png_size(out) == (800, 500)
    assert out.stat().st_size > 10_000  # something was drawn


def test_reconstructions_of_square_rows_are_images(tmp_path):
    from sklearn.datasets import load_digits

    digits = load_digits()
    data = tmp_path / "digits.npy"
    np.save(data, digits.data[digits.target != 8].astype(np.float32))
    assert run_cli("train", data, "--hidden", "32", "--latent", "6", "--epochs", "5", "--out",
                   tmp_path / "digits", "--no-export").returncode == 0
    out = tmp_path / "rec.png"
    result = run_cli("plot", tmp_path / "digits", data, "--what", "reconstructions", "-o", out, "--backend", "torch")
    assert result.returncode == 0, result.stderr
    assert _png_size(out) == (800, 500)


def test_report_is_one_self_contained_html_file(bundles, labelled, tmp_path):
    out = tmp_path / "report.html"
    result = run_cli("report", bundles["vae"], labelled, "--labels", "label", "-o", out)
    assert result.returncode == 0, result.stderr
    assert "AUROC" in result.stderr
    page = out.read_text()
    assert page.count('src="data:image/png;base64,') == 5
    assert "http://" not in page and "https://" not in page
    assert "AUROC" in page and "false-positive rate at threshold" in page


def test_roc_needs_labels(bundles, labelled, tmp_path):
    result = run_cli("plot", bundles["ae"], labelled, "--what", "roc", "-o", tmp_path / "x.png")
    assert result.returncode == 2 and "--labels" in result.stderr
    assert not (tmp_path / "x.png").exists()


def test_detection_metrics_match_scikit_learn():
    from sklearn.metrics import average_precision_score, roc_auc_score
    from sklearn.metrics import roc_curve as sk_roc

    rng = np.random.default_rng(0)
    scores = rng.normal(size=400).round(1)  # ties on purpose
    labels = (rng.random(400) < 0.3) | (scores > 1.2)
    assert auroc(scores[~labels], scores[labels]) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert average_precision(scores, labels) == pytest.approx(average_precision_score(labels, scores), abs=1e-12)
    fpr, tpr, _ = roc_curve(scores, labels)
    sk_fpr, sk_tpr, _ = sk_roc(labels, scores, drop_intermediate=False)
    np.testing.assert_allclose(np.trapezoid(tpr, fpr), np.trapezoid(sk_tpr, sk_fpr))
