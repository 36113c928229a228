"""The TensorRT and CUDA paths driven on the CPU by fake ``tensorrt`` and ``cuda.bindings``
modules with the real API surface (tests/fakes): the exporter builds "plans", the backend
runs them (the fake engine runs the ONNX graph with ONNX Runtime), and every failure the
real libraries report by return value is injected and must come out as a clear error."""

from __future__ import annotations

import importlib
import shutil
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

import aeserve
from aeserve.bundle import Bundle
from aeserve.errors import BackendUnavailable
from aeserve.export.tensorrt import Profile, build_tensorrt

FAKES = Path(__file__).parents[1] / "fakes"
_FAKE_MODULES = ("tensorrt", "cuda", "cuda.bindings", "cuda.bindings.runtime")


@pytest.fixture
def fake_gpu(monkeypatch):
    """Fake tensorrt + cuda.bindings importable, a fake H100 visible; (trt, cudart) knobs."""
    from aeserve.serve import gpu

    saved = {name: sys.modules.pop(name) for name in _FAKE_MODULES if name in sys.modules}
    monkeypatch.syspath_prepend(str(FAKES))
    importlib.invalidate_caches()
    trt = importlib.import_module("tensorrt")
    cudart = importlib.import_module("cuda.bindings.runtime")
    trt.reset()
    cudart.FAKE.live.clear()
    gpu.gpu_info.cache_clear()
    yield trt, cudart
    gpu.gpu_info.cache_clear()
    for name in _FAKE_MODULES:
        sys.modules.pop(name, None)
    sys.modules.update(saved)


@pytest.fixture
def rows(cancer):
    return np.concatenate([cancer["test_normal"], cancer["anomalies"]])  # 312 rows


PROFILE = Profile(4, 64, 256)


def _built(bundles, tmp_path, fp16: bool = False) -> Path:
    target = tmp_path / "b"
    shutil.copytree(bundles["ae"], target)
    result = build_tensorrt(target, PROFILE, fp16=fp16, require_tensorrt=True)
    assert result.built, result.message
    return target


@pytest.mark.parametrize("fp16, tolerance", [(False, 1e-5), (True, 1e-2)])
def test_plans_built_and_run_match_onnxruntime_with_batches_split_and_padded(fake_gpu, bundles, tmp_path, rows,
                                                                            fp16, tolerance):
    trt, cudart = fake_gpu
    bundle_dir = _built(bundles, tmp_path, fp16)
    strongly_typed = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    assert trt.FAKE.network_flags == [strongly_typed if fp16 else 0] * 3  # fp16: strongly typed on TensorRT 10 too
    assert all(int(trt.BuilderFlag.FP16) not in flags for flags in trt.FAKE.builder_flags)
    build = next(iter(Bundle.open(bundle_dir).manifest.exports.tensorrt.values()))
    assert build.compute_capability == (9, 0) and build.precision == ("fp16" if fp16 else "fp32")
    expected = aeserve.load(bundle_dir, backend="onnxruntime", device="cpu").energy(rows)["energy"]
    with aeserve.load(bundle_dir, backend="tensorrt", batch_size=1000) as model:
        assert trt.FAKE.engines == 3  # every plan deserialised at load
        # fp16 plans are checked against fp32 (ONNX Runtime) on this GPU before they are trusted
        assert ("tensorrt/fp16 checked against fp32 on NVIDIA H100" in model.backend_reason) == fp16
        trt.FAKE.batches.clear()
        got = model.energy(rows)["energy"]  # 312 rows > the profile's 256: split
        few = model.energy(rows[:2])["energy"]  # 2 rows < the profile's 4: padded
    assert trt.FAKE.batches == [256, 56, 4]
    np.testing.assert_allclose(got, expected, rtol=tolerance)
    np.testing.assert_allclose(few, expected[:2], rtol=tolerance)
    assert cudart.FAKE.live == {} and cudart.FAKE.streams == set()  # close() freed everything


def test_auto_chooses_tensorrt_for_matching_plans_and_says_why(fake_gpu, bundles, tmp_path):
    bundle_dir = _built(bundles, tmp_path)
    model = aeserve.load(bundle_dir)
    assert model.backend_name == "tensorrt" and "tensorrt is available" in model.backend_reason
    model.close()


def test_set_input_shape_returning_false_is_a_clear_error(fake_gpu, bundles, tmp_path, rows):
    trt, _ = fake_gpu
    model = aeserve.load(_built(bundles, tmp_path), backend="tensorrt")
    trt.FAKE.refuse_input_shape = True
    with pytest.raises(BackendUnavailable, match=r"refused input shape \(100, 30\) for 'y'.*4\.\.256 rows"):
        model.energy(rows[:100])
    model.close()


@pytest.mark.parametrize("device, version, reason", [
    ({"name": b"NVIDIA L4", "major": 8, "minor": 9}, None, "built for NVIDIA H100 80GB HBM3 sm90.*NVIDIA L4 sm89"),
    (None, "10.14.1.5", "TensorRT 10.13.3.9.*with TensorRT 10.14.1.5"),
])
def test_plans_for_another_gpu_or_tensorrt_make_auto_choose_onnxruntime(fake_gpu, bundles, tmp_path, device,
                                                                        version, reason):
    trt, cudart = fake_gpu
    bundle_dir = _built(bundles, tmp_path)
    from aeserve.serve import gpu

    if device:
        for key, value in device.items():
            setattr(cudart.FAKE.device, key, value)
    if version:
        trt.__version__ = version
    gpu.gpu_info.cache_clear()
    try:
        model = aeserve.load(bundle_dir)
        assert model.backend_name == "onnxruntime"
        assert model.backend_reason.startswith("auto: not tensorrt (") and __import__("re").search(reason,
                                                                                                   model.backend_reason)
        with pytest.raises(BackendUnavailable, match="rebuild"):
            aeserve.load(bundle_dir, backend="tensorrt")
    finally:
        cudart.FAKE.device.name, cudart.FAKE.device.major, cudart.FAKE.device.minor = b"NVIDIA H100 80GB HBM3", 9, 0
        trt.__version__ = "10.13.3.9"


def test_the_same_tensorrt_patch_release_runs_the_plans(fake_gpu, bundles, tmp_path):
    trt, _ = fake_gpu
    bundle_dir = _built(bundles, tmp_path)
    trt.__version__ = "10.13.3.1"  # another build number of 10.13.3: the same plans run
    try:
        assert aeserve.load(bundle_dir).backend_name == "tensorrt"
    finally:
        trt.__version__ = "10.13.3.9"


def test_a_bad_plan_fails_at_start_up_and_auto_moves_on(fake_gpu, bundles, tmp_path):
    trt, cudart = fake_gpu
    bundle_dir = _built(bundles, tmp_path)
    plan_dir = next((bundle_dir / "tensorrt").glob("*/energy.plan")).parent
    (plan_dir / "energy.plan").write_bytes(b"not a plan")
    bundle = Bundle.open(bundle_dir, verify=False)
    bundle.write(bundle.manifest)  # the owner re-hashed it: the hash is right, the plan is not
    with pytest.raises(BackendUnavailable, match="could not deserialise"):
        aeserve.load(bundle_dir, backend="tensorrt")
    model = aeserve.load(bundle_dir)
    assert model.backend_name == "onnxruntime" and "failed to start" in model.backend_reason
    assert cudart.FAKE.live == {} and cudart.FAKE.streams == set()  # what the good plans held was freed
    trt.FAKE.no_context = True
    (plan_dir / "energy.plan").write_bytes((plan_dir / "encoder.plan").read_bytes())
    bundle.write(bundle.manifest)
    with pytest.raises(BackendUnavailable, match="execution context"):
        aeserve.load(bundle_dir, backend="tensorrt")


def test_an_allocation_failure_frees_the_engines_buffers_and_the_next_call_recovers(fake_gpu, bundles, tmp_path,
                                                                                  rows):
    _, cudart = fake_gpu
    model = aeserve.load(_built(bundles, tmp_path), backend="tensorrt", batch_size=256)
    before = model.energy(rows[:50])["energy"]
    cudart.FAKE.fail_host_alloc_after = 0  # the next pinned allocation fails (the buffers must grow for 256 rows)
    held = len(cudart.FAKE.live)
    with pytest.raises(BackendUnavailable, match=r"cudaMallocHost\(\d+\) failed: cudaErrorMemoryAllocation"):
        model.energy(rows[:256])
    assert len(cudart.FAKE.live) < held  # the energy engine's buffers were given back, none leaked
    np.testing.assert_array_equal(model.energy(rows[:50])["energy"], before)
    model.close()
    assert cudart.FAKE.live == {}


def test_a_timing_cache_from_another_device_is_replaced(fake_gpu, bundles, tmp_path):
    trt, _ = fake_gpu
    bundle_dir = _built(bundles, tmp_path)
    trt.FAKE.reject_timing_cache = True  # the cache file now "comes from another device"
    assert build_tensorrt(bundle_dir, PROFILE, require_tensorrt=True).built


def test_onnxruntime_without_its_cuda_libraries_does_not_fall_back_silently(bundles, rows, monkeypatch):
    # a CPU build listed as having CUDA: the session then comes up without it, as onnxruntime-gpu does
    # when libcudnn or libcublas fail to load
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    with pytest.raises(BackendUnavailable, match="CUDA provider did not start"):
        aeserve.load(bundles["ae"], backend="onnxruntime", device="cuda")
    model = aeserve.load(bundles["ae"], backend="onnxruntime", device="auto")
    assert model.backend.providers == ["CPUExecutionProvider"]
    assert "CUDA provider did not start" in model.backend.describe() and "running on the CPU" in model.backend.describe()
    # the reference is ONNX Runtime on the CPU itself: with backend auto the machine may pick OpenVINO
    expected = aeserve.load(bundles["ae"], backend="onnxruntime", device="cpu").energy(rows)["energy"]
    np.testing.assert_array_equal(model.energy(rows)["energy"], expected)


def test_a_mixed_table_bundle_builds_plans_that_score_and_decode_as_onnxruntime(fake_gpu, mixed_bundle, tmp_path):
    target = tmp_path / "mixed"
    shutil.copytree(mixed_bundle["path"], target)
    result = build_tensorrt(target, PROFILE, require_tensorrt=True)
    assert result.built, result.message
    frame = mixed_bundle["anomalies"].head(100)
    reference = aeserve.load(target, backend="onnxruntime", device="cpu")
    with aeserve.load(target, backend="tensorrt") as model:
        np.testing.assert_allclose(model.energy(frame)["energy"], reference.energy(frame)["energy"], rtol=1e-5)
        explained = model.explain(frame, k=1)  # the decoder's two outputs: rows and slot probabilities
        # a DataFrame in, a DataFrame on its index out: the top column's text is explanation_1
        assert list(explained["explanation_1"]) == list(reference.explain(frame, k=1)["explanation_1"])
        assert list(model.reconstruct(frame)["home"]) == list(reference.reconstruct(frame)["home"])
