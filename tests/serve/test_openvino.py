"""The OpenVINO backend (parity with ONNX Runtime for every kind, dense and convolutional) and
``auto`` on a CPU choosing the backend by measurement, cached per machine and bundle."""

from __future__ import annotations

import json

import numpy as np
import pytest

import aeserve

from conftest import KINDS

pytest.importorskip("openvino")


def _close(got: np.ndarray, expected: np.ndarray, what: str) -> None:
    scale = max(float(np.max(np.abs(expected))), 1e-6)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5 * scale, err_msg=what)


def _parity(path, rows: np.ndarray) -> None:
    reference = aeserve.load(path, backend="onnxruntime", device="cpu", batch_size=64)
    with aeserve.load(path, backend="openvino", batch_size=64) as model:  # several batches: the async queue
        assert model.backend.describe().startswith("openvino") and "f32" in model.backend.describe()
        expected, got = reference.explain(rows, k=2), model.explain(rows, k=2)
        for name in ("energy", *reference.terms, "contributions"):
            _close(got[name], expected[name], name)
        for name, array in reference.encode_all(rows).items():
            _close(model.encode_all(rows)[name], array, name)
        codes = reference.encode(rows)
        _close(model.decode(codes), reference.decode(codes), "decode")
        np.testing.assert_array_equal(model.sample(5, seed=3).shape, reference.sample(5, seed=3).shape)


@pytest.mark.parametrize("kind", KINDS)
def test_openvino_matches_onnxruntime_for_every_dense_kind(bundles, cancer, kind):
    _parity(bundles[kind], np.concatenate([cancer["test_normal"], cancer["anomalies"]]))


@pytest.mark.parametrize("kind", KINDS)
def test_openvino_matches_onnxruntime_for_every_convolutional_kind(conv_bundles, kind):
    paths, rows = conv_bundles
    _parity(paths[kind], rows[:300])


def test_openvino_refuses_what_it_cannot_run(bundles):
    with pytest.raises(aeserve.BackendUnavailable, match="CPU"):
        aeserve.load(bundles["ae"], backend="openvino", device="cuda")


def test_auto_on_a_cpu_measures_once_then_reuses_the_cached_choice(bundles, tmp_path, monkeypatch):
    monkeypatch.setenv("AESERVE_CACHE_DIR", str(tmp_path))
    first = aeserve.load(bundles["vae"])
    assert "measured now on" in first.backend_reason and "onnxruntime" in first.backend_reason \
        and "openvino" in first.backend_reason, first.backend_reason
    cache = json.loads((tmp_path / "backend-choice.json").read_text())
    (entry,) = cache.values()
    assert entry["backend"] == first.backend_name == max(entry["rates"], key=entry["rates"].get)
    assert set(entry["rates"]) == {"onnxruntime", "openvino"}
    second = aeserve.load(bundles["vae"])
    assert second.backend_name == first.backend_name and "cached in" in second.backend_reason
    key = json.loads(next(iter(cache)))
    assert key["cpu"] and key["graph"] and set(key["versions"]) == {"onnxruntime", "openvino"}
    (tmp_path / "backend-choice.json").write_text("{not json")  # a damaged cache: measured again
    assert "measured now" in aeserve.load(bundles["vae"]).backend_reason
    assert aeserve.load(bundles["vae"], device="cpu").backend_name in ("onnxruntime", "openvino")


def test_models_made_and_dropped_in_a_loop_do_not_hang(bundles):
    """A compiled model destroyed after batches ran asynchronously must not wait for the GIL
    (AsyncInferQueue callbacks did: the benchmark's batch sweep hung)."""
    import subprocess
    import sys

    script = ("import numpy as np, aeserve\n"
              "rows = np.random.default_rng(0).random((6000, 30), dtype=np.float32)\n"
              "for batch in (256, 512, 1024, 256, 512):\n"
              f"    model = aeserve.load({str(bundles['ae'])!r}, backend='openvino', batch_size=batch)\n"
              "    model.energy(rows)\n"
              "print('done')\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=240)
    assert result.returncode == 0 and "done" in result.stdout, result.stderr
