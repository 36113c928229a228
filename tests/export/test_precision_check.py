"""A reduced precision is checked where it runs (serve/backends/checked.py), at the batch sizes
scoring uses (aeserve/agreement.py), and refused with one line when it strays: faked CPUs that
saturate, a graph whose weights were altered, and the export's own check at every batch size."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import aeserve
from aeserve.agreement import agreement_by_batch, scoring_batch_sizes, strayed
from aeserve.bundle import Bundle
from aeserve.errors import BackendUnavailable, ExportError
from aeserve.export.quantize import check_against_fp32
from aeserve.machine import cpu_model
from aeserve.serve.backends import checked
from aeserve.serve.backends.onnxruntime import OnnxRuntimeBackend

from conftest import int8_accepted, load_reduced, run_cli


@pytest.fixture
def int8_copy(quantised, tmp_path, monkeypatch):
    """A copy of the int8-exported ae bundle, with a cache directory of its own."""
    path, result = quantised
    if not int8_accepted(result, "onnxruntime dynamic int8"):
        pytest.skip(f"dynamic int8 refused on this CPU at export: {result.stderr}")
    monkeypatch.setenv("AESERVE_CACHE_DIR", str(tmp_path / "cache"))
    shutil.copytree(path, tmp_path / "ae")
    return tmp_path / "ae"


def _saturating(monkeypatch, calls: list):
    """Make ONNX Runtime's int8 graphs answer as a CPU whose 16-bit sums saturate would: right
    for single rows, about one value whatever the row from 64 rows on."""
    real = OnnxRuntimeBackend.run

    def run(self, graph, feeds, outputs=None):
        result = real(self, graph, feeds, outputs)
        if self.precision == "int8" and len(next(iter(feeds.values()))) >= 64:
            calls.append(len(next(iter(feeds.values()))))
            result = [np.full_like(result[0], 100.0), *result[1:]]
        return result

    monkeypatch.setattr(OnnxRuntimeBackend, "run", run)


def _fake_cpu(monkeypatch, name: str, flags=("avx2",)):
    monkeypatch.setattr(checked, "cpu_model", lambda: name)
    monkeypatch.setattr(checked, "cpu_flags", lambda: frozenset(flags))
    monkeypatch.setattr(checked, "cpu_summary", lambda: f"{name} ({', '.join(flags)}; no VNNI, no AMX)")


def test_the_batch_sizes_checked_are_the_ones_scoring_uses():
    assert scoring_batch_sizes(4096) == [1, 64, 4096, 8192]
    assert scoring_batch_sizes(1024) == [1, 64, 1024, 8192]
    assert scoring_batch_sizes(3000) == [1, 64, 3000, 6000]  # the file path: a multiple of the batch near 8192


def test_agreement_by_batch_finds_a_precision_that_strays_only_in_big_batches():
    rows = np.random.default_rng(0).standard_normal((300, 5)).astype(np.float32)

    def fp32(x):
        return (x ** 2).sum(1)

    def saturates(x):
        return fp32(x) if len(x) < 1000 else np.full(len(x), 3.0, np.float32)

    by_batch = agreement_by_batch(fp32, saturates, rows, [1, 64, 4096])
    assert by_batch[1]["energy_median_relative_error"] == 0 and by_batch[64]["energy_rank_agreement"] > 0.9999
    assert by_batch[4096]["energy_median_relative_error"] > 0.3  # 300 rows repeated to fill a batch of 4096
    assert "at batch 4096" in strayed(by_batch)
    assert strayed({1: by_batch[1], 64: by_batch[64]}) is None


def test_the_export_check_refuses_int8_that_strays_at_one_batch_size(bundles):
    bundle = Bundle.open(bundles["ae"])
    model = aeserve.load(bundles["ae"], backend="onnxruntime")
    rows, _ = bundle.kept_rows()

    def fp32(x):
        return model.energy(x)["energy"]

    def wrong_in_file_batches(x):
        return fp32(x) * (3.0 if len(x) > 4096 else 1.0)

    with pytest.raises(ExportError, match=rf"deviate from fp32 by 200.0% at batch 8192 .*{re.escape(cpu_model())}"):
        check_against_fp32(bundle, "int8", fp32, wrong_in_file_batches, rows, 0.05, 0.999)
    errors = check_against_fp32(bundle, "int8", fp32, fp32, rows, 0.05, 0.999)
    assert set(errors["by_batch"]) == {"1", "64", "4096", "8192"} and errors["energy_median_relative_error"] == 0


def test_int8_is_checked_on_this_cpu_once_and_the_verdict_cached(int8_copy, monkeypatch):
    model = load_reduced(int8_copy, backend="onnxruntime", precision="int8")
    assert f"onnxruntime/int8 checked against fp32 on {cpu_model()}" in model.backend_reason
    cache = json.loads(checked.cache_path(checked.CACHE_FILE).read_text())
    (key, verdict), = cache.items()
    assert json.loads(key)["batches"] == [1, 64, 4096, 8192] and verdict["refused"] is False
    measured = []
    monkeypatch.setattr(checked, "_measure", lambda *args: measured.append(args))
    again = aeserve.load(int8_copy, backend="onnxruntime", precision="int8")
    assert measured == [] and again.backend_reason == model.backend_reason  # from the cache


def test_a_cpu_whose_int8_saturates_is_refused_and_auto_drops_it(int8_copy, monkeypatch):
    calls = []
    _saturating(monkeypatch, calls)
    _fake_cpu(monkeypatch, "Fake EPYC without VNNI")
    with pytest.raises(BackendUnavailable) as refused:
        aeserve.load(int8_copy, backend="onnxruntime", precision="int8")
    message = str(refused.value)
    assert "\n" not in message and message.startswith(f"{int8_copy}: onnxruntime/int8 refused on Fake EPYC without VNNI")
    assert "deviate from fp32 by" in message and "--precision fp32 runs this bundle exactly here" in message
    assert calls  # the big batches were run

    # the verdict is cached for this CPU: refused again without running anything
    calls.clear()
    with pytest.raises(BackendUnavailable, match="refused on Fake EPYC"):
        aeserve.load(int8_copy, backend="onnxruntime", precision="int8")
    assert calls == []

    # auto (precision auto) drops it, saying why, and scores with what remains
    model = aeserve.load(int8_copy, precision="auto")
    assert "not onnxruntime/int8 (" in model.backend_reason and "refused on Fake EPYC" in model.backend_reason
    assert (model.backend.name, model.backend.precision) != ("onnxruntime", "int8")

    # another CPU is checked anew: there the real kernels answer, and int8 is accepted
    monkeypatch.undo()
    monkeypatch.setenv("AESERVE_CACHE_DIR", str(int8_copy.parent / "cache"))
    _fake_cpu(monkeypatch, "Fake Xeon with VNNI", ("avx2", "avx512f", "avx512_vnni"))
    model = load_reduced(int8_copy, backend="onnxruntime", precision="int8")
    assert "checked against fp32 on Fake Xeon with VNNI" in model.backend_reason


def _alter_int8_weights(path):
    """Negate the int8 weights of the int8 energy graph, then re-hash the bundle (it stays valid)."""
    graph_file = path / "energy.int8.onnx"
    model = onnx.load(str(graph_file))
    altered = 0
    for init in model.graph.initializer:
        values = numpy_helper.to_array(init)
        if values.dtype == np.int8 and values.size > 16:
            init.CopyFrom(numpy_helper.from_array((-values.astype(np.int16)).clip(-127, 127).astype(np.int8),
                                                  init.name))
            altered += 1
    assert altered
    onnx.save(model, str(graph_file))
    bundle = Bundle.open(path, verify=False)
    bundle.write(bundle.manifest)


def test_a_graph_whose_weights_were_altered_is_refused_from_the_cli_in_one_line(int8_copy, tmp_path):
    _alter_int8_weights(int8_copy)
    np.save(tmp_path / "rows.npy", Bundle.open(int8_copy).kept_rows()[1])
    result = run_cli("score", int8_copy, tmp_path / "rows.npy", "--backend", "onnxruntime", "--precision", "int8",
                     "-o", tmp_path / "out.csv")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "onnxruntime/int8 refused on" in result.stderr and "--precision fp32" in result.stderr
    assert not (tmp_path / "out.csv").exists()
    # fp32 still scores it, and auto takes another precision, saying why not int8
    assert run_cli("score", int8_copy, tmp_path / "rows.npy", "-o", tmp_path / "out.csv").returncode == 0
    model = aeserve.load(int8_copy, precision="auto")
    assert "not onnxruntime/int8 (" in model.backend_reason and "refused on" in model.backend_reason
