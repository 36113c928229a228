"""The runtime model (serve/model.py): threads, input validation, backend names."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import aeserve
from aeserve.errors import BackendUnavailable, InputError


def test_concurrent_calls_give_the_same_answers(bundles, cancer):
    model = aeserve.load(bundles["vae"], batch_size=32)
    rows = np.concatenate([cancer["test_normal"], cancer["anomalies"]])
    expected = model.score(rows)["energy"]
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda _: model.score(rows)["energy"], range(16)))
    for result in results:
        np.testing.assert_array_equal(result, expected)


def test_model_validates_its_input(bundles):
    model = aeserve.load(bundles["ae"])
    with pytest.raises(InputError, match=r"expected shape \(rows, 30\), got \(2, 29\)"):
        model.score(np.zeros((2, 29)))
    bad = np.zeros((3, 30), dtype=np.float32)
    bad[2, 4] = np.nan
    with pytest.raises(InputError, match=r"row 3, column 'mean_smoothness'"):
        model.score(bad)
    with pytest.raises(InputError, match="codes"):
        model.decode(np.zeros((2, 5)))
    assert model.score(np.zeros(30))["energy"].shape == (1,)


def test_unknown_backend_is_explained(bundles):
    with pytest.raises(BackendUnavailable, match="unknown backend 'tensorflow'"):
        aeserve.load(bundles["ae"], backend="tensorflow")


def test_checked_rows_are_taken_without_a_second_check_and_cut_into_the_models_batches(bundles, cancer,
                                                                                      monkeypatch):
    import aeserve.serve.model as model_module
    from aeserve.readers import CheckedRows

    model = aeserve.load(bundles["ae"], backend="onnxruntime", batch_size=64)
    rows = np.ascontiguousarray(np.concatenate([cancer["test_normal"], cancer["anomalies"]]), np.float32)
    expected = model.score(rows)["energy"]
    calls: list[int] = []
    run_batches = model.backend.run_batches
    monkeypatch.setattr(model.backend, "run_batches",
                        lambda graph, batches, outputs: calls.extend(len(b["y"]) for b in batches)
                        or run_batches(graph, batches, outputs))

    def no_second_check(*args, **kwargs):
        raise AssertionError("checked rows were checked again")

    monkeypatch.setattr(model_module, "check_finite", no_second_check)
    np.testing.assert_array_equal(model.score(CheckedRows(rows))["energy"], expected)
    assert calls == [64] * (len(rows) // 64) + ([len(rows) % 64] if len(rows) % 64 else [])
    with pytest.raises(InputError, match=r"expected shape \(rows, 30\), got \(2, 29\)"):
        model.score(CheckedRows(np.zeros((2, 29), np.float32)))
    with pytest.raises(AssertionError, match="checked again"):
        model.score(rows)  # plain arrays are still checked


def test_each_path_checks_finiteness_once(bundles, cancer, tmp_path, monkeypatch):
    """Files: the reader checks; requests: decode_tensors checks; Model checks neither again."""
    import aeserve.serve.model as model_module
    from aeserve.serve.files import score_file
    from aeserve.serve.protocol import RequestError, WireTensor, decode_tensors, endpoints_for
    from aeserve.tables import write_table

    model = aeserve.load(bundles["ae"], backend="onnxruntime")
    rows = np.ascontiguousarray(cancer["anomalies"], np.float32)
    expected = model.score(rows)["energy"]
    checks = []
    real = model_module.check_finite
    monkeypatch.setattr(model_module, "check_finite", lambda *a, **k: checks.append(1) or real(*a, **k))
    path = tmp_path / "rows.csv"
    write_table(path, {name: rows[:, i] for i, name in enumerate(model.features)})
    score_file(model, path, tmp_path / "out.parquet")
    import pyarrow.parquet as pq

    np.testing.assert_allclose(pq.read_table(tmp_path / "out.parquet")["energy"].to_numpy(), expected, rtol=1e-6)
    endpoint = endpoints_for("m", model)[0]
    tensor = WireTensor("y", "FP32", list(rows.shape), data=None, raw=rows.tobytes())
    np.testing.assert_array_equal(endpoint.run(decode_tensors(endpoint, [tensor]))["energy"], expected)
    assert checks == []  # neither path checked twice
    bad = rows.copy()
    bad[1, 2] = np.nan
    with pytest.raises(RequestError, match="row 2 holds NaN or inf"):
        decode_tensors(endpoint, [WireTensor("y", "FP32", list(bad.shape), data=None, raw=bad.tobytes())])


def test_a_dataframe_is_matched_by_name_and_scored_on_its_index(bundles, cancer, mixed_bundle):
    """Columns by name, in any order, extra ones ignored, a missing one named; the result is a
    DataFrame on the input's index whose values are those of the array path."""
    import pandas as pd

    from aeserve.errors import InputError

    from conftest import mixed_rows

    model = aeserve.load(bundles["vae"])
    rows = cancer["test_normal"][:25]
    frame = pd.DataFrame(rows, columns=cancer["names"], index=[f"r{i}" for i in range(25)])
    frame = frame[cancer["names"][::-1]].assign(label=1)  # reversed, plus a column the model ignores
    scored = model.score(frame)
    assert isinstance(scored, pd.DataFrame) and list(scored.index) == list(frame.index)
    assert list(scored.columns) == ["energy", *model.terms, "p_value", "anomaly"]
    expected = model.score(rows)
    for name in scored.columns:
        np.testing.assert_array_equal(scored[name].to_numpy(), expected[name])
    explained = model.explain(frame, k=2)
    assert {"contribution_" + cancer["names"][0], "feature_1", "share_2"} <= set(explained.columns)
    with pytest.raises(InputError, match=repr(cancer["names"][3])):
        model.score(frame.drop(columns=[cancer["names"][3]]))
    table = mixed_rows(40, seed=3)
    table.index = range(100, 140)
    mixed = aeserve.load(mixed_bundle["path"]).score(table.assign(extra="x"))
    assert list(mixed.index) == list(range(100, 140)) and mixed["energy"].notna().all()
