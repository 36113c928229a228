"""A bundle is untrusted input: nothing it names may resolve outside it, its graphs may use
only standard operator domains and no external data, its manifest is bounded, and loading
it never executes code."""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest

import aeserve
from aeserve.bundle import MANIFEST, Bundle, sha256_file, write_manifest
from aeserve.errors import BundleError

from conftest import run_cli

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def copy(bundles, tmp_path):
    """A writable copy of the AE bundle, in tmp_path/bundle."""
    target = tmp_path / "bundle"
    shutil.copytree(bundles["ae"], target)
    return target


def _edit_manifest(bundle: Path, edit) -> None:
    data = json.loads((bundle / MANIFEST).read_text())
    edit(data)
    (bundle / MANIFEST).write_text(json.dumps(data))


def _refused(bundle: Path, match: str, rows: np.ndarray) -> None:
    """Both the API and ``aeserve score`` refuse ``bundle`` with a BundleError matching ``match``."""
    with pytest.raises(BundleError, match=match):
        aeserve.load(bundle).score(rows)
    data = bundle.parent / "rows.npy"
    np.save(data, rows)
    result = run_cli("score", bundle, data, "-o", bundle.parent / "scores.csv")
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert re.search(match, result.stderr) and not (bundle.parent / "scores.csv").exists()


def _point_energy_graph_at(data: dict, rel: str, digest: str) -> None:
    data["files"].pop(data["graphs"]["fp32"]["energy"]["file"])
    data["files"][rel] = digest
    data["graphs"]["fp32"]["energy"]["file"] = rel


def test_a_graph_outside_the_bundle_is_refused_even_with_its_correct_hash(copy, cancer):
    outside = copy.parent / "outside.onnx"
    shutil.move(copy / "energy.onnx", outside)
    digest = sha256_file(outside)
    _edit_manifest(copy, lambda d: _point_energy_graph_at(d, "../outside.onnx", digest))
    _refused(copy, "not a path inside the bundle", cancer["test_normal"])
    _edit_manifest(copy, lambda d: _point_energy_graph_at(d, str(outside), digest))
    _refused(copy, "not a path inside the bundle", cancer["test_normal"])


def test_a_symlink_leading_out_of_the_bundle_is_refused(copy, cancer):
    outside = copy.parent / "outside.onnx"
    shutil.move(copy / "energy.onnx", outside)
    (copy / "energy.onnx").symlink_to(outside)  # same name, same hash: only the link gives it away
    _refused(copy, "leads outside the bundle", cancer["test_normal"])
    (copy / "energy.onnx").unlink()
    shutil.move(outside, copy / "energy.onnx")
    real_manifest = copy.parent / "manifest.json"
    shutil.move(copy / MANIFEST, real_manifest)
    (copy / MANIFEST).symlink_to(real_manifest)
    _refused(copy, "leads outside the bundle", cancer["test_normal"])


def test_a_graph_missing_from_the_hashed_files_is_refused(copy, cancer):
    _edit_manifest(copy, lambda d: d["files"].pop("energy.onnx"))
    _refused(copy, "not among the files", cancer["test_normal"])


def _rehash(bundle: Path) -> None:
    write_manifest(bundle, Bundle.open(bundle, verify=False).manifest)


def test_onnx_external_data_is_refused_at_load(copy, cancer):
    model = onnx.load(str(copy / "energy.onnx"))
    onnx.save_model(model, str(copy / "energy.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="weights.bin", size_threshold=0)
    _rehash(copy)
    _refused(copy, "external data", cancer["test_normal"])


def test_an_operator_outside_the_standard_domains_is_refused_at_load(copy, cancer):
    model = onnx.load(str(copy / "energy.onnx"))
    graph = model.graph
    first = graph.node[0]
    evil = onnx.helper.make_node("Exec", [first.input[0]], ["evil_out"], domain="com.example.evil")
    graph.node.insert(0, evil)
    model.opset_import.append(onnx.helper.make_opsetid("com.example.evil", 1))
    onnx.save_model(model, str(copy / "energy.onnx"))
    _rehash(copy)
    _refused(copy, "outside the standard domains", cancer["test_normal"])


def test_the_shipped_and_quantised_graphs_pass_the_domain_check(bundles, tmp_path, cancer):
    from aeserve.onnx_guard import check_onnx_bytes

    for path in [*Path(bundles["vae"]).glob("*.onnx"), *(REPO / "models").glob("*/*.onnx"),
                 *(REPO / "tests" / "fixtures").glob("*/*.onnx")]:
        check_onnx_bytes(path.read_bytes(), str(path))
    for blob in (b"", b"\x08", b"\xff" * 20, os.urandom(500)):
        with pytest.raises(BundleError, match="not a valid ONNX model"):
            check_onnx_bytes(blob, "blob.onnx")


def test_a_huge_or_deeply_nested_manifest_is_refused_before_parsing(copy):
    text = (copy / MANIFEST).read_text()
    (copy / MANIFEST).write_text(text[:-2] + ', "padding": "' + "x" * (5 << 20) + '"}\n')
    with pytest.raises(BundleError, match="more than a manifest may hold"):
        Bundle.open(copy)
    (copy / MANIFEST).write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(BundleError, match="nested deeper"):
        Bundle.open(copy)


def test_loading_never_unpickles(copy, tmp_path, cancer):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    (copy / "weights.safetensors").write_bytes(pickle.dumps(Payload()))
    _rehash(copy)
    with pytest.raises(aeserve.AeserveError):
        aeserve.load(copy, backend="torch").score(cancer["test_normal"])
    assert not marker.exists()


def test_no_pickle_in_the_package():
    pattern = re.compile(r"\bimport pickle\b|\bpickle\.loads?\(|torch\.load\(|weights_only\s*=\s*False|allow_pickle\s*=\s*True")
    offenders = [f"{path.relative_to(REPO)}:{n}" for folder in ("src", "serve", "train", "export")
                 for path in (REPO / folder).rglob("*.py")
                 for n, line in enumerate(path.read_text().splitlines(), 1) if pattern.search(line)]
    assert offenders == []
