"""Static int8 for OpenVINO (NNCF, calibrated on the rows a bundle keeps), and ``precision="auto"``:
every (backend, precision) the bundle allows, timed, reduced precisions kept only when they rank
rows as fp32 does."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

import aeserve
from aeserve.bundle import Bundle
from aeserve.errors import BackendUnavailable, BundleError, ExportError
from aeserve.evaluation import auroc, rank_correlation

from conftest import int8_accepted, load_reduced, run_cli

pytest.importorskip("openvino")
pytest.importorskip("nncf")

from aeserve.export.openvino_int8 import STATIC_DIR, quantize_static_int8  # noqa: E402
from aeserve.serve.backends import BackendBase, BackendSpec, Candidate, measured  # noqa: E402


@pytest.fixture(scope="module")
def static_bundle(quantised):
    path, result = quantised
    if not int8_accepted(result, "OpenVINO static int8"):
        pytest.skip(f"static int8 refused on this CPU: {result.stderr}")
    return path


def test_training_keeps_rows_for_calibration_and_hashes_them(bundles, cancer):
    bundle = Bundle.open(bundles["ae"])
    record = bundle.manifest.training.kept_rows
    train, validation = bundle.kept_rows()
    split = bundle.manifest.training.data
    assert (record.train, record.validation) == (split.train_rows, split.val_rows)  # fewer than 1024 of each
    assert train.shape == (split.train_rows, 30) and validation.shape == (split.val_rows, 30)
    # raw rows from the training file, not standardised ones
    assert {tuple(r) for r in train} <= {tuple(r) for r in cancer["train"]}
    assert record.file in bundle.manifest.files


def test_keep_rows_zero_keeps_none_and_static_int8_then_needs_calibration_data(cancer, tmp_path):
    table = tmp_path / "train.csv"
    header = ",".join(cancer["names"])
    np.savetxt(table, cancer["train"], delimiter=",", header=header, comments="")
    result = run_cli("train", table, "--kind", "ae", "--hidden", "32,16", "--latent", "4", "--epochs", "40",
                     "--keep-rows", "0", "--out", tmp_path / "b", "-q")
    assert result.returncode == 0, result.stderr
    assert not (tmp_path / "b" / "rows.safetensors").exists() and Bundle.open(tmp_path / "b").kept_rows() is None
    with pytest.raises(ExportError, match="keeps no training rows.*--calibration-data"):
        quantize_static_int8(tmp_path / "b")
    result = run_cli("export", tmp_path / "b", "--quantize", "int8", "--calibration-data", table)
    assert result.returncode == 0, result.stderr
    record = Bundle.open(tmp_path / "b").manifest.exports.int8_static
    assert record is not None and "calibration rows" in record.details["checked_on"]


def test_static_int8_ranks_rows_as_fp32_does(static_bundle, cancer):
    fp32 = aeserve.load(static_bundle, backend="onnxruntime")
    int8 = load_reduced(static_bundle, backend="openvino", precision="int8")
    assert "static int8" in int8.backend.describe() and "openvino/int8 checked against fp32" in int8.backend_reason
    rows = np.concatenate([cancer["test_normal"], cancer["anomalies"]])
    a, b = fp32.energy(rows)["energy"], int8.energy(rows)["energy"]
    assert np.median(np.abs(b - a) / np.abs(a)) < 0.05
    assert rank_correlation(a, b) > 0.999
    n = len(cancer["test_normal"])
    assert abs(auroc(b[:n], b[n:]) - auroc(a[:n], a[n:])) < 0.005
    # static ranges: a row's int8 score does not depend on its batch-mates
    assert np.allclose(int8.energy(rows[:1])["energy"], b[:1], rtol=1e-6)
    # every graph has a static int8 version, and encode/decode run on it
    manifest = int8.bundle.manifest
    assert {g.file for g in manifest.graphs["int8-static"].values()} == {
        f"{STATIC_DIR}/{g}.xml" for g in ("encoder", "decoder", "energy")}
    assert all(f"{STATIC_DIR}/{g}.bin" in manifest.files for g in ("encoder", "decoder", "energy"))
    assert manifest.exports.int8_static.details["energy_rank_agreement"] >= 0.999
    z = int8.encode(rows[:50])
    assert z.shape == (50, 4) and np.corrcoef(z.ravel(), fp32.encode(rows[:50]).ravel())[0, 1] > 0.99
    assert int8.decode(z).shape == (50, 30)


def test_static_int8_is_refused_when_it_ranks_rows_differently(bundles, tmp_path):
    path = tmp_path / "ae"
    shutil.copytree(bundles["ae"], path)
    before = (path / "manifest.json").read_text()
    with pytest.raises(ExportError, match="rank rows differently from fp32"):
        quantize_static_int8(path, min_rank=1.01)
    assert not (path / STATIC_DIR).exists() and (path / "manifest.json").read_text() == before


def test_a_static_int8_weights_file_the_manifest_does_not_hash_is_refused(static_bundle, tmp_path):
    path = tmp_path / "b"
    shutil.copytree(static_bundle, path)
    manifest = json.loads((path / "manifest.json").read_text())
    del manifest["files"][f"{STATIC_DIR}/energy.bin"]
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="not among the files"):
        aeserve.load(path, backend="openvino", precision="int8").energy(np.zeros((2, 30)) + 1)


def test_precision_auto_times_every_backend_and_precision_then_reuses_the_choice(static_bundle):
    model = aeserve.load(static_bundle, precision="auto")
    reason = model.backend_reason
    for label in ("onnxruntime ", "openvino ", "onnxruntime/int8", "openvino/int8"):
        assert label in reason, reason
    assert "measured now" in reason
    again = aeserve.load(static_bundle, precision="auto")
    assert "cached in" in again.backend_reason and again.backend.describe() == model.backend.describe()
    # the default stays exact fp32: auto only times fp32 backends
    assert "/int8" not in aeserve.load(static_bundle).backend_reason


def test_bf16_is_a_candidate_only_on_cpus_with_amx(monkeypatch):
    from aeserve.serve.backends import _candidate_precisions

    monkeypatch.setattr(measured, "cpu_has_amx", lambda: False)
    assert _candidate_precisions("auto") == ["fp32", "int8"]
    monkeypatch.setattr(measured, "cpu_has_amx", lambda: True)
    assert _candidate_precisions("auto") == ["fp32", "int8", "bf16"]
    assert _candidate_precisions("fp32") == ["fp32"]


def test_a_faster_candidate_that_ranks_rows_differently_is_not_chosen(static_bundle):
    class Fake(BackendBase):
        def __init__(self, noise):
            self.noise = noise

        def run(self, graph, feeds, outputs=None):
            rows = feeds["y"]
            energy = (rows ** 2).sum(1)
            if self.noise:  # fast, but scrambles the ranking
                energy = energy[::-1].copy()
            return [energy]

    fake = BackendSpec(name="fake", target="", requires=("numpy",), install="", priority=0)
    backend, reason = measured.choose_by_measurement(
        Bundle.open(static_bundle), [Candidate(fake), Candidate(fake, "bf16")],
        start=lambda candidate: Fake(noise=candidate.reduced))
    assert backend.noise is False
    assert "not fake/bf16 (ranks the probe rows differently from fp32" in reason


def test_openvino_bf16_runs_when_asked(static_bundle, cancer):
    bf16 = load_reduced(static_bundle, backend="openvino", precision="bf16")
    assert "bf16" in bf16.backend.describe() and "openvino/bf16 checked against fp32" in bf16.backend_reason
    a = aeserve.load(static_bundle, backend="onnxruntime").energy(cancer["anomalies"])["energy"]
    b = bf16.energy(cancer["anomalies"])["energy"]
    assert np.median(np.abs(b - a) / np.abs(a)) < 0.05


def test_precisions_a_backend_does_not_run_are_refused(static_bundle):
    with pytest.raises(BackendUnavailable, match="onnxruntime runs fp32, int8, not bf16"):
        aeserve.load(static_bundle, backend="onnxruntime", precision="bf16")
    with pytest.raises(BackendUnavailable, match="unknown precision"):
        aeserve.load(static_bundle, precision="int4")


def test_bench_times_every_backend_and_precision_auto_would_choose_among(static_bundle):
    result = run_cli("bench", static_bundle, "--rows", "4000", "--batch-sizes", "1024", "--repeats", "1")
    assert result.returncode == 0, result.stderr
    rows = [line for line in result.stdout.splitlines() if "rows" not in line and "│" in line]
    found = {tuple(cell.strip() for cell in line.split("│")[1:3]) for line in rows}
    assert {("onnxruntime", "fp32"), ("onnxruntime", "int8"), ("openvino", "fp32"), ("openvino", "int8"),
            ("torch", "fp32")} <= found, result.stdout
