"""The typed manifest: every schema written so far loads, round-trips, and bad fields are named."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import aeserve
from aeserve.bundle import Bundle
from aeserve.errors import BackendUnavailable, BundleError
from aeserve.manifest import MIGRATIONS, SCHEMA_VERSION, Manifest

from conftest import KINDS

V1_BUNDLE = Path(__file__).parents[1] / "fixtures" / "bundle-v1-vae"


def test_a_schema_1_bundle_still_loads_and_scores_like_its_weights(cancer):
    """The fixture was written by the schema-1 code (a VAE with fp32 and int8 graphs)."""
    raw = json.loads((V1_BUNDLE / "manifest.json").read_text())
    assert raw["schema_version"] == 1 and "graphs_int8" in raw
    ort_model = aeserve.load(V1_BUNDLE, backend="onnxruntime")
    torch_model = aeserve.load(V1_BUNDLE, backend="torch")  # rebuilt from the schema-1 architecture
    rows = np.concatenate([cancer["test_normal"], cancer["anomalies"][:50]])
    a, b = ort_model.score(rows), torch_model.score(rows)
    np.testing.assert_allclose(a["energy"], b["energy"], rtol=1e-4, atol=1e-3)
    np.testing.assert_array_equal(a["anomaly"], b["anomaly"])
    assert ort_model.encoder_outputs == ("mu", "logvar")
    mu, logvar = ort_model.encode_distribution(rows)
    assert mu.shape == logvar.shape == (len(rows), 2)
    manifest = ort_model.bundle.manifest
    assert manifest.threshold.method == "quantile" and manifest.threshold.provenance["quantile"] == 0.99
    assert manifest.training.settings["epochs"] == 20 and manifest.exports.int8.weights == "int8 (signed)"
    # its int8 graphs have full 8-bit weights: checked where they run, close or refused with the fix
    try:
        int8 = aeserve.load(V1_BUNDLE, backend="onnxruntime", precision="int8").energy(rows)["energy"]
    except BackendUnavailable as exc:
        assert "refused on" in str(exc) and "aeserve export" in str(exc) and "--quantize int8" in str(exc), exc
    else:
        assert np.median(np.abs(int8 - a["energy"]) / np.abs(a["energy"])) < 0.05


def test_rewriting_a_schema_1_bundle_writes_the_current_schema(tmp_path):
    copy_dir = tmp_path / "v1"
    shutil.copytree(V1_BUNDLE, copy_dir)
    before = Bundle.open(copy_dir).manifest
    Bundle.open(copy_dir).write(before)
    raw = json.loads((copy_dir / "manifest.json").read_text())
    assert raw["schema_version"] == SCHEMA_VERSION and "graphs_int8" not in raw and "export" not in raw
    after = Bundle.open(copy_dir).manifest
    assert after == before
    np.testing.assert_array_equal(aeserve.load(copy_dir).energy(np.zeros((3, 30)))["energy"],
                                  aeserve.load(V1_BUNDLE).energy(np.zeros((3, 30)))["energy"])


def test_every_kind_round_trips_through_json(bundles):
    for kind in KINDS:
        manifest = Bundle.open(bundles[kind]).manifest
        assert Manifest.from_json(json.loads(manifest.dumps())) == manifest
        assert manifest.encoder_outputs == (("mu", "logvar") if kind == "vae" else ("z",))


def test_every_old_version_has_a_migration():
    assert sorted(MIGRATIONS) == list(range(1, SCHEMA_VERSION))


@pytest.mark.parametrize("change, message", [
    (lambda m: m["threshold"].__setitem__("value", "high"), r"field 'threshold.value': expected a number, got 'high'"),
    (lambda m: m.pop("energy"), r"field 'energy' is missing"),
    (lambda m: m["latent"].pop("size"), r"field 'latent.size' is missing"),
    (lambda m: m["input"].__setitem__("features", ["a", 2]), r"field 'input.features\[1\]': expected text, got 2"),
    (lambda m: m["graphs"]["encoder"].__setitem__("outputs", "z"), r"field 'graphs.fp32.encoder.outputs': expected a list"),
    (lambda m: m["graphs"]["decoder"].__setitem__("extra", 1), r"field 'graphs.fp32.decoder': unknown key\(s\) 'extra'"),
    (lambda m: m.__setitem__("schema_version", 99), r"schema_version 99 is not supported"),
    (lambda m: m.__setitem__("kind", "gan"), r"unknown kind 'gan'"),
    (lambda m: m.__setitem__("training", []), r"field 'training': expected an object, got a list"),
])
def test_a_bad_field_is_a_bundle_error_naming_it(tmp_path, change, message):
    raw = json.loads((V1_BUNDLE / "manifest.json").read_text())
    bad = copy.deepcopy(raw)
    change(bad)
    with pytest.raises(BundleError, match=message):
        Manifest.from_json(bad, "m.json")


def test_a_schema_2_manifest_migrates_to_plain_numeric_columns(bundles):
    import json

    from aeserve.manifest import Manifest

    data = json.loads((bundles["ae"] / "manifest.json").read_text())
    data["schema_version"] = 2
    del data["input"]["columns"], data["input"]["encoding"]
    migrated = Manifest.from_json(data)
    assert migrated.schema_version == SCHEMA_VERSION and not migrated.input.mixed
    assert [c.name for c in migrated.input.columns] == list(migrated.input.features)
    assert {c.type for c in migrated.input.columns} == {"numeric"} and migrated.input.width == 30
    assert all(c.rows == data["training"]["data"]["train_rows"] and c.missing == 0 for c in migrated.input.columns)
