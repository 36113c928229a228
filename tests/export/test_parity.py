"""torch reference vs ONNX Runtime on every graph of every kind, on real and random inputs."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

import aeserve
from aeserve.errors import ExportError
from aeserve.export.parity import Tolerance, compare_outputs

from conftest import KINDS

# Stated tolerance: |ort - torch| <= 1e-5 + 1e-4 * max|torch| (float32 accumulations differ).
ATOL, RTOL = 1e-5, 1e-4


def _close(got: np.ndarray, ref: np.ndarray) -> None:
    assert got.shape == ref.shape
    limit = ATOL + RTOL * np.abs(ref).max()
    assert np.abs(got - ref).max() <= limit


@pytest.fixture(scope="module")
def inputs(cancer):
    rng = np.random.default_rng(3)
    real = np.concatenate([cancer["test_normal"], cancer["anomalies"][:100]])
    scale = cancer["train"].std(axis=0)
    random = (cancer["train"].mean(axis=0) + 2 * scale * rng.standard_normal((200, 30))).astype(np.float32)
    return {"real": real, "random": random}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("which", ["real", "random"])
def test_onnxruntime_matches_torch(bundles, inputs, kind, which):
    ort_model = aeserve.load(bundles[kind], backend="onnxruntime", batch_size=64)
    torch_model = aeserve.load(bundles[kind], backend="torch")
    rows = inputs[which]
    _close(ort_model.encode(rows), torch_model.encode(rows))
    codes = torch_model.encode(rows)
    _close(ort_model.decode(codes), torch_model.decode(codes))
    got, ref = ort_model.energy(rows), torch_model.energy(rows)
    assert list(got) == ["energy", "reconstruction", "regulariser"]
    for name in got:
        _close(got[name], ref[name])
    np.testing.assert_allclose(got["reconstruction"] + got["regulariser"], got["energy"], rtol=1e-5)
    if kind == "vae":
        for a, b in zip(ort_model.encode_distribution(rows), torch_model.encode_distribution(rows)):
            _close(a, b)


@pytest.mark.parametrize("kind", KINDS)
def test_graphs_have_dynamic_batch_metadata_and_no_random_ops(bundles, kind):
    for graph in ("encoder", "decoder", "energy"):
        proto = onnx.load(str(bundles[kind] / f"{graph}.onnx"))
        dim = proto.graph.input[0].type.tensor_type.shape.dim[0]
        assert dim.dim_param and not dim.dim_value, "batch axis must be symbolic"
        ops = {node.op_type for node in proto.graph.node}
        assert not {op for op in ops if op.startswith("Random")}, ops
        props = {p.key: p.value for p in proto.metadata_props}
        assert props["aeserve.graph"] == graph
        assert props["aeserve.kind"] == kind
        assert float(props["aeserve.threshold"]) == aeserve.load(bundles[kind]).threshold


@pytest.mark.parametrize("batch", [1, 7, 1000])
def test_any_batch_size_gives_the_same_rows(bundles, inputs, batch):
    model = aeserve.load(bundles["cae"], backend="onnxruntime", batch_size=batch)
    whole = aeserve.load(bundles["cae"], backend="onnxruntime", batch_size=4096)
    rows = inputs["real"]
    np.testing.assert_allclose(model.energy(rows)["energy"], whole.energy(rows)["energy"], rtol=1e-6)


def test_manifest_records_the_parity_measured_at_export(bundles):
    for kind in KINDS:
        manifest = aeserve.load(bundles[kind]).bundle.manifest
        parity = manifest.exports.onnx.parity
        assert set(parity["max_abs_error"]) == {"encoder", "decoder", "energy"}
        assert parity["checked_on"] == ["random rows", "validation rows"]
        assert max(max(v.values()) for v in parity["max_abs_error"].values()) < 1e-2


def test_parity_failure_names_graph_output_and_error():
    with pytest.raises(ExportError, match=r"energy.onnx output 'energy' on random rows: max abs error 0.5"):
        compare_outputs("energy", ["energy"], [np.array([1.5])], [np.array([1.0])], tolerance=Tolerance(),
                        on="random rows")


def test_export_raises_when_parity_fails(bundles, tmp_path):
    import shutil

    from aeserve.export.onnx import export_onnx

    copy = tmp_path / "ae"
    shutil.copytree(bundles["ae"], copy)
    with pytest.raises(ExportError, match=r"encoder.onnx output 'z' on .*exceeds tolerance"):
        export_onnx(copy, tolerance=Tolerance(atol=-1.0, rtol=0.0))


def test_the_limit_widens_by_float32s_own_rounding_and_no_more():
    """A graph that amplifies rounding (the lvm's unrolled steps) is held to what float32 itself
    gives against float64: tolerance + 2 x |float32 - float64|, here 1.1e-4 + 2 x 6e-4."""
    got, expected = [np.array([1.001])], [np.array([1.0])]
    with pytest.raises(ExportError, match="max abs error 0.001 exceeds tolerance 0.00011"):
        compare_outputs("encoder", ["z"], got, expected, tolerance=Tolerance(), on="rows")
    with pytest.raises(ExportError, match="float32 itself strays 0.0004 from float64"):
        compare_outputs("encoder", ["z"], got, expected, tolerance=Tolerance(), on="rows", exact=[np.array([1.0004])])
    errors = compare_outputs("encoder", ["z"], got, expected, tolerance=Tolerance(), on="rows",
                             exact=[np.array([1.0006])])
    assert abs(errors["z"] - 0.001) < 1e-12
