"""TensorRT and GPU paths: everything that can be checked without TensorRT or a GPU,
plus ``gpu``-marked parity tests that skip with the reason where those are missing."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

import aeserve
from aeserve.bundle import Bundle
from aeserve.errors import BackendUnavailable, InputError
from aeserve.export.tensorrt import Profile, build_tensorrt, fp16_graph, plan_dir_name
from aeserve.export.tensorrt_support import tensorrt_problems
from aeserve.serve.backends.tensorrt import find_plan_dir
from aeserve.serve.gpu import GpuInfo, gpu_info

from conftest import KINDS, run_cli

H100 = GpuInfo("NVIDIA H100 80GB HBM3", (9, 0))


def test_profile_parsing():
    assert Profile.parse("1,512,4096") == Profile(1, 512, 4096)
    assert Profile(2, 8, 64).shapes(30) == ((2, 30), (8, 30), (64, 30))
    for bad in ("1,2", "a,b,c", "8,4,16", "0,1,2"):
        with pytest.raises(InputError, match="--batch"):
            Profile.parse(bad)


def test_plan_directory_names_gpu_cc_and_version():
    assert plan_dir_name(H100, "10.13.3.9") == "nvidia-h100-80gb-hbm3-sm90-trt10.13.3.9"
    assert H100.sm == "sm90"


@pytest.mark.parametrize("kind", KINDS)
def test_exported_graphs_pass_the_parser_check(bundles, kind):
    check = Bundle.open(bundles[kind]).manifest.exports.onnx.tensorrt_check
    assert (check.parser_compatible, check.problems, check.opset_range) == (True, (), (9, 20))


def _graph(op: str, opset: int = 20, batch: str = "batch", width: int | str = 3):
    x = helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, width])
    out = helper.make_tensor_value_info("out", TensorProto.FLOAT, [batch, width])
    node = helper.make_node(op, ["y"], ["out"]) if op != "RandomNormalLike" else \
        helper.make_node(op, ["y"], ["out"])
    return helper.make_model(helper.make_graph([node], "g", [x], [out]),
                             opset_imports=[helper.make_opsetid("", opset)])


def test_parser_check_rejects_what_tensorrt_cannot_take():
    assert tensorrt_problems(_graph("Relu")) == []
    for supported in ("Hardmax", "CastLike", "Mish", "Shrink", "NonZero", "MeanVarianceNormalization"):
        assert not any("operator" in p for p in tensorrt_problems(_graph(supported))), supported  # 10.x operators.md
    assert "operator StringNormalizer is not supported" in tensorrt_problems(_graph("StringNormalizer"))[0]
    assert "random operator RandomNormalLike" in tensorrt_problems(_graph("RandomNormalLike"))[0]
    assert "opset 21 is outside" in tensorrt_problems(_graph("Relu", opset=21))[0]
    assert any("axis 1 is dynamic" in p for p in tensorrt_problems(_graph("Relu", width="w")))
    assert any("no dynamic batch axis" in p for p in tensorrt_problems(_graph("Relu", batch=4)))


def test_fp16_graph_keeps_io_types_and_stays_close(bundles, cancer, tmp_path):
    fp32 = onnx.load(str(bundles["cae"] / "energy.onnx"))
    half = fp16_graph(fp32)
    assert tensorrt_problems(half) == []
    assert half.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert any(i.data_type == TensorProto.FLOAT16 for i in half.graph.initializer)
    rows = cancer["test_normal"]
    a = ort.InferenceSession(fp32.SerializeToString()).run(["energy"], {"y": rows})[0]
    b = ort.InferenceSession(half.SerializeToString()).run(["energy"], {"y": rows})[0]
    assert np.max(np.abs(a - b) / np.abs(a)) < 1e-2  # the stated fp16 tolerance


def _fake_gpu_host(tmp_path, trt_version: str = "10.13.3"):
    """nvidia-smi and a trtexec that only say what a GPU host would say; trtexec's banner
    carries its version ([TensorRT v101303] for 10.13.3), as the real one's does. The Python
    tensorrt module there is another version: the plans must be named by trtexec's."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    major, minor, patch = (int(p) for p in trt_version.split("."))
    (bin_dir / "nvidia-smi").write_text("#!/bin/sh\necho 'NVIDIA H100 80GB HBM3, 9.0'\n")
    (bin_dir / "trtexec").write_text(textwrap.dedent(f"""\
        #!/bin/sh
        echo "&&&& RUNNING TensorRT.trtexec [TensorRT v{major * 10000 + minor * 100 + patch}] [b9] # trtexec $*"
        [ "$1" = "--help" ] && exit 0
        for a in "$@"; do case "$a" in --saveEngine=*) echo plan > "${{a#--saveEngine=}}";; esac; done
        echo "$@" >> "$(dirname "$0")/calls"
        """))
    for tool in ("nvidia-smi", "trtexec"):
        (bin_dir / tool).chmod(0o755)
    module = tmp_path / "site" / "tensorrt"
    module.mkdir(parents=True)
    (module / "__init__.py").write_text("__version__ = '9.9.9'\n")
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", PYTHONPATH=str(tmp_path / "site"))
    return bin_dir, env


@pytest.mark.parametrize("trt_version,typed", [("10.13.3", True), ("11.4.0", False)])
def test_build_sh_builds_plans_the_runtime_finds(bundles, tmp_path, trt_version, typed):
    bundle_dir = tmp_path / "b"
    shutil.copytree(bundles["ae"], bundle_dir)
    result = build_tensorrt(bundle_dir, Profile(1, 256, 2048), fp16=True, workspace_mb=512)
    assert not result.built and "build.sh" in result.message
    script = bundle_dir / "tensorrt" / "build.sh"
    text = script.read_text()
    assert "--minShapes=y:1x30 --optShapes=y:256x30 --maxShapes=y:2048x30" in text
    assert "--minShapes=z:1x4" in text and "--memPoolSize=workspace:512M" in text
    bin_dir, env = _fake_gpu_host(tmp_path, trt_version)
    run = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    calls = (bin_dir / "calls").read_text().splitlines()
    assert len(calls) == 3 and all("--onnx=tensorrt/fp16/" in call and "--skipInference" in call for call in calls)
    assert all(("--stronglyTyped" in call) == typed and "--fp16" not in call for call in calls)
    expected = bundle_dir / "tensorrt" / plan_dir_name(H100, trt_version)
    assert sorted(p.name for p in expected.iterdir()) == ["build.json", "decoder.plan", "encoder.plan", "energy.plan"]
    record = json.loads((expected / "build.json").read_text())
    assert record["compute_capability"] == [9, 0] and record["precision"] == "fp16"
    bundle = Bundle.open(bundle_dir)  # the plans are recorded with their sha256
    assert f"tensorrt/{expected.name}/energy.plan" in bundle.manifest.files
    assert bundle.manifest.exports.tensorrt[expected.name].tensorrt == trt_version
    assert find_plan_dir(bundle, H100, trt_version + ".7") == expected  # the Python package's 4-part version
    with pytest.raises(BackendUnavailable, match=r"built for NVIDIA H100 80GB HBM3 sm90 .*rebuild: aeserve export"):
        find_plan_dir(bundle, GpuInfo("NVIDIA L4", (8, 9)), trt_version)
    with pytest.raises(BackendUnavailable, match="rebuild"):
        find_plan_dir(bundle, H100, "9.0.0")


def test_missing_tensorrt_is_explained(bundles, tmp_path):
    bundle_dir = tmp_path / "b"
    shutil.copytree(bundles["ae"], bundle_dir)
    result = run_cli("export", bundle_dir, "--format", "tensorrt", "--require-tensorrt")
    if gpu_info() is None:
        assert result.returncode == 2
        assert result.stderr.startswith("error:") and "TensorRT" in result.stderr
    result = run_cli("score", bundle_dir, bundle_dir / "x.npy", "-o", tmp_path / "o.csv", "--backend", "tensorrt")
    assert result.returncode == 2 and "tensorrt" in result.stderr


# --- on a GPU host -------------------------------------------------------------------------

def _skip_without(module: str) -> None:
    try:
        __import__(module)
    except ImportError:
        pytest.skip(f"{module} is not installed here")


@pytest.mark.gpu
@pytest.mark.parametrize("fp16,tolerance", [(False, 1e-3), (True, 1e-2)])
def test_tensorrt_matches_onnxruntime_cpu(bundles, cancer, tmp_path, fp16, tolerance):
    _skip_without("tensorrt")
    _skip_without("cuda.bindings")
    if gpu_info() is None:
        pytest.skip("no NVIDIA GPU visible")
    bundle_dir = tmp_path / "b"
    shutil.copytree(bundles["ae"], bundle_dir)
    assert build_tensorrt(bundle_dir, Profile(1, 256, 1024), fp16=fp16, require_tensorrt=True).built
    rows = np.concatenate([cancer["test_normal"], cancer["anomalies"]])
    a = aeserve.load(bundle_dir, backend="onnxruntime", device="cpu").energy(rows)["energy"]
    model = aeserve.load(bundle_dir, backend="tensorrt", batch_size=1024)
    b = model.energy(rows)["energy"]
    assert np.max(np.abs(a - b) / np.maximum(np.abs(a), 1.0)) <= tolerance


def test_recording_plans_from_the_command_line_names_what_is_wrong(bundles, tmp_path):
    """``python -m aeserve.export.tensorrt`` is what build.sh runs after trtexec: one line, exit 2."""
    bundle_dir = tmp_path / "b"
    shutil.copytree(bundles["ae"], bundle_dir)
    args = ["--gpu", "NVIDIA H100", "--compute-capability", "9.0", "--tensorrt", "10.13.3", "--precision", "fp32",
            "--profile", "1,256,2048", "--workspace-mb", "512"]
    outside = subprocess.run([sys.executable, "-m", "aeserve.export.tensorrt", str(bundle_dir), str(tmp_path), *args],
                             capture_output=True, text=True, timeout=60)
    assert outside.returncode == 2 and outside.stderr.strip().startswith("error:"), outside.stderr
    assert "plans must be inside the bundle" in outside.stderr and len(outside.stderr.strip().splitlines()) == 1
    (bundle_dir / "tensorrt" / "x").mkdir(parents=True)
    unbuilt = subprocess.run([sys.executable, "-m", "aeserve.export.tensorrt", str(bundle_dir),
                              str(bundle_dir / "tensorrt" / "x"), *args], capture_output=True, text=True, timeout=60)
    assert unbuilt.returncode == 2 and "encoder.plan was not built" in unbuilt.stderr
