"""Ray Data batch scoring on a local Ray instance equals single-process scoring, row for row."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import aeserve

from conftest import run_cli

pytest.importorskip("ray")


def test_ray_engine_matches_local_scoring(bundles, cancer, tmp_path):
    rows = np.concatenate([cancer["test_normal"], cancer["anomalies"]])
    ids = np.arange(len(rows)) * 7 + 3
    shards = []
    for i, part in enumerate(np.array_split(np.arange(len(rows)), 3)):  # three Parquet shards
        path = tmp_path / f"shard-{i}.parquet"
        pq.write_table(pa.table({"id": ids[part], **{n: rows[part, j] for j, n in enumerate(cancer["names"])}}), path)
        shards.append(path)
    result = run_cli("score", bundles["vae"], *shards, "-o", tmp_path / "scored", "--engine", "ray",
                     "--id-column", "id", "--json")
    assert result.returncode == 0, result.stderr
    scored = pq.read_table(tmp_path / "scored").to_pydict()
    assert sorted(scored["id"]) == sorted(ids.tolist())
    order = np.argsort(scored["id"])
    expected = aeserve.load(bundles["vae"]).score(rows)
    for name in ("energy", "reconstruction", "regulariser", "anomaly"):
        got = np.asarray(scored[name])[order]
        np.testing.assert_allclose(got, expected[name], rtol=1e-5)  # batch composition: at most ulps apart
    np.testing.assert_array_equal(np.asarray(scored["anomaly"])[order], expected["anomaly"])


def test_ray_engine_refuses_mixed_inputs_before_starting_ray(bundles, tmp_path):
    result = run_cli("score", bundles["ae"], tmp_path / "a.csv", tmp_path / "b.npy", "-o", tmp_path / "out",
                     "--engine", "ray")
    assert result.returncode == 2 and "one kind" in result.stderr


def test_ray_engine_scores_a_mixed_table_as_the_api_does(mixed_bundle, tmp_path):
    frame = mixed_bundle["anomalies"].head(60).reset_index(drop=True).assign(id=lambda f: f.index * 3)
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), tmp_path / "rows.parquet")
    result = run_cli("score", mixed_bundle["path"], tmp_path / "rows.parquet", "-o", tmp_path / "scored",
                     "--engine", "ray", "--id-column", "id")
    assert result.returncode == 0, result.stderr
    scored = pq.read_table(tmp_path / "scored").to_pydict()
    order = np.argsort(scored["id"])
    expected = aeserve.load(mixed_bundle["path"]).score(frame.drop(columns="id"))
    np.testing.assert_allclose(np.asarray(scored["energy"])[order], expected["energy"], rtol=1e-5)
