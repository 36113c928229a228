"""int8 graphs, their refusal rule, and the bench command (figures are printed, not asserted)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

import aeserve
from aeserve.errors import BackendUnavailable, ExportError
from aeserve.evaluation import auroc
from aeserve.export.quantize import INT8_WEIGHTS, quantize_int8
from aeserve.serve.bench import dense_flops_per_row

from conftest import int8_accepted, load_reduced, run_cli


@pytest.fixture(scope="module")
def int8_bundle(quantised):
    path, result = quantised
    assert "WARNING" not in result.stderr
    if not int8_accepted(result, "onnxruntime dynamic int8"):
        pytest.skip(f"dynamic int8 refused on this CPU: {result.stderr}")
    return path


def test_int8_scores_stay_close_and_rank_the_same(int8_bundle, cancer):
    fp32 = aeserve.load(int8_bundle)
    int8 = load_reduced(int8_bundle, backend="onnxruntime", precision="int8")
    assert "int8" in int8.backend.describe() and "onnxruntime/int8 checked against fp32 on" in int8.backend_reason
    rows = np.concatenate([cancer["test_normal"], cancer["anomalies"]])
    a, b = fp32.energy(rows)["energy"], int8.energy(rows)["energy"]
    assert np.median(np.abs(b - a) / np.abs(a)) < 0.05
    normal, anomalous = len(cancer["test_normal"]), slice(len(cancer["test_normal"]), None)
    assert abs(auroc(b[:normal], b[anomalous]) - auroc(a[:normal], a[anomalous])) < 0.02
    manifest = int8.bundle.manifest
    assert manifest.exports.int8.weights == INT8_WEIGHTS
    # the export checked every batch size scoring uses (1, 64, the default batch, the file path's)
    assert set(manifest.exports.int8.details["by_batch"]) == {"1", "64", "4096", "8192"}
    assert set(manifest.graphs["int8"]) == {"encoder", "decoder", "energy"}


def test_int8_cli_and_missing_graphs(int8_bundle, bundles, tmp_path):
    np.save(tmp_path / "rows.npy", np.zeros((3, 30), dtype=np.float32) + 10)
    result = run_cli("score", int8_bundle, tmp_path / "rows.npy", "--precision", "int8", "-o", tmp_path / "o.csv")
    assert result.returncode == 0 and "int8" in result.stderr
    with pytest.raises(BackendUnavailable, match="--quantize int8"):
        aeserve.load(bundles["vae"], precision="int8")
    with pytest.raises(BackendUnavailable, match="no int8 graphs for onnxruntime"):
        aeserve.load(bundles["vae"], backend="onnxruntime", precision="int8")


def test_quantisation_is_refused_when_energies_stray(bundles, tmp_path):
    path = tmp_path / "cae"
    shutil.copytree(bundles["cae"], path)
    with pytest.raises(ExportError, match=r"deviate from fp32 by .* not safe"):
        quantize_int8(path, tolerance=0.0)
    assert not list(path.glob("*.int8.onnx"))
    aeserve.load(path)  # the bundle is intact


def test_bench_prints_rows_gflops_and_the_ceiling(int8_bundle):
    result = run_cli("bench", int8_bundle, "--rows", "4000", "--batch-sizes", "256,1024", "--repeats", "1")
    assert result.returncode == 0, result.stderr
    for text in ("onnxruntime", "int8", "rows/s", "GFLOP/s", "MatMul ceiling"):
        assert text in result.stdout


def test_dense_flops_count_the_layers(bundles):
    # 30-32-16-4 encoder, mirrored decoder: 2 * (30*32 + 32*16 + 16*4) * 2
    assert dense_flops_per_row(aeserve.load(bundles["ae"]).bundle) == 2 * (960 + 512 + 64) * 2
