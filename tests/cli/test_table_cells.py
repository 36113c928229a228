"""Cells of real tables as writers store them: number-coded categories, integers beyond float32's
exact range, decimals, dates. One bundle must read each the same from a CSV, a Parquet file and a
DataFrame, or refuse it at training in one line that says what to do (issue 22, items 5 and 6)."""

from __future__ import annotations

import decimal
import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

import aeserve
from aeserve.columns import OTHER, TableEncoding

from conftest import run_cli


def _coded_frame(n: int = 400, seed: int = 0) -> pd.DataFrame:
    """A number-coded category stored as floats (as pandas writes an integer code with gaps), which
    decides y; and a number x."""
    rng = np.random.default_rng(seed)
    code = rng.choice([1.0, 2.0, 3.5], n)
    return pd.DataFrame({"code": code, "x": rng.normal(size=n), "y": code * 2 + rng.normal(0, 0.1, n)})


def _slots(bundle, data) -> np.ndarray:
    """The category names ``bundle`` reads from ``data``'s code column."""
    encoding = TableEncoding.of(aeserve.load(bundle, backend="onnxruntime").bundle.manifest.input)
    return encoding.decode(encoding.encode_rows(data))["code"]


@pytest.mark.parametrize("trained_on", ["csv", "parquet"])
def test_a_number_coded_category_means_the_same_from_csv_parquet_and_a_dataframe(tmp_path, trained_on):
    """A CSV writes the code 1.0 as '1.0', a Parquet double reads as the category '1': the same cell
    either way, never '(other)'; the scores of the three sources agree exactly."""
    frame = _coded_frame()
    frame.to_csv(tmp_path / "t.csv", index=False)
    frame.to_parquet(tmp_path / "t.parquet", index=False)
    result = run_cli("train", tmp_path / f"t.{trained_on}", "--categorical", "code", "--epochs", "3",
                     "--out", tmp_path / "m", "--quiet")
    assert result.returncode == 0, result.stderr
    columns = json.loads((tmp_path / "m" / "manifest.json").read_text())["input"]["columns"]
    vocabulary = next(c["vocabulary"] for c in columns if c["name"] == "code")
    assert sorted(vocabulary) == (["1.0", "2.0", "3.5"] if trained_on == "csv" else ["1", "2", "3.5"])
    as_read = {"csv": pacsv.read_csv(tmp_path / "t.csv", convert_options=pacsv.ConvertOptions(
        column_types={"code": pa.string()})), "parquet": pq.read_table(tmp_path / "t.parquet"), "frame": frame}
    for source, data in as_read.items():
        names = _slots(tmp_path / "m", data)
        assert OTHER not in set(names), source
        assert sorted(set(names)) == sorted(vocabulary), source
    scores = {}
    for suffix in ("csv", "parquet"):
        result = run_cli("score", tmp_path / "m", tmp_path / f"t.{suffix}", "-o", tmp_path / f"s-{suffix}.csv",
                         "--quiet")
        assert result.returncode == 0, result.stderr
        scores[suffix] = pacsv.read_csv(tmp_path / f"s-{suffix}.csv").column("energy").to_numpy()
    scores["frame"] = aeserve.load(tmp_path / "m", backend="onnxruntime").energy(frame)["energy"]
    np.testing.assert_array_equal(scores["csv"], scores["parquet"])
    np.testing.assert_allclose(scores["frame"], scores["csv"], rtol=1e-6)


def test_a_streamed_pass_reads_a_csv_s_categories_as_the_whole_table_does(tmp_path):
    """--stream counts a CSV's categories from its text; reading the file whole now does too."""
    from aeserve.tables import read_training_table
    from aeserve.train.shards import Shards

    _coded_frame().to_csv(tmp_path / "t.csv", index=False)
    whole = read_training_table(tmp_path / "t.csv", categorical=["code"])
    streamed = Shards.find([tmp_path / "t.csv"], categorical=["code"])
    assert [s.vocabulary for s in whole.specs] == [s.vocabulary for s in streamed.specs]
    assert sorted(next(s.vocabulary for s in whole.specs if s.name == "code")) == ["1.0", "2.0", "3.5"]


def test_a_seven_and_a_double_o_seven_stay_two_categories():
    """Matching by value applies only where it is unambiguous: '7' and '007' both categories, each
    cell goes to its own text; '7.0' matches neither (two categories read as 7) and is '(other)'."""
    from aeserve.manifest import ColumnSpec

    spec = ColumnSpec(name="code", type="categorical", vocabulary=("7", "007", "12"), missing=0, rows=10, other=0)
    encoding = TableEncoding([spec])
    names = encoding.decode(encoding.encode_rows({"code": ["007", "7", "12", "7.0", "12.0"]}))["code"]
    assert list(names) == ["007", "7", "12", OTHER, OTHER]
    spec = ColumnSpec(name="code", type="categorical", vocabulary=("7", "x", "12"), missing=0, rows=10, other=0)
    encoding = TableEncoding([spec])
    table = pa.table({"code": pa.array(["7.0", " 12 ", "x", "y", "1e1"]).dictionary_encode()})
    assert list(encoding.decode(encoding.encode_rows(table))["code"]) == ["7", "12", "x", OTHER, OTHER]


def test_unix_times_beyond_float32_and_decimals_are_numbers(tmp_path):
    """An int64 column of Unix times (beyond 2**24, where Arrow's checked cast to float32 refuses)
    beside a text column once stopped training with a traceback; a Parquet decimal was read as a
    category. Both are numeric now, and CSV and Parquet give the same energies."""
    rng = np.random.default_rng(2)
    n = 300
    table = pa.table({"when": pa.array(1_260_759_144 + rng.integers(0, 10**6, n), pa.int64()),
                      "kind": pa.array(rng.choice(["a", "b", "c"], n)),
                      "price": pa.array([decimal.Decimal(f"{v:.2f}") for v in rng.uniform(1, 9, n)],
                                        pa.decimal128(5, 2)),
                      "x": pa.array(rng.normal(size=n))})
    pq.write_table(table, tmp_path / "t.parquet")
    pacsv.write_csv(table, tmp_path / "t.csv")
    result = run_cli("train", tmp_path / "t.parquet", "--epochs", "2", "--out", tmp_path / "m", "--quiet")
    assert result.returncode == 0, result.stderr
    columns = json.loads((tmp_path / "m" / "manifest.json").read_text())["input"]["columns"]
    assert {c["name"]: c["type"] for c in columns} == {"when": "numeric", "kind": "categorical",
                                                       "price": "numeric", "x": "numeric"}
    energies = []
    for suffix in ("parquet", "csv"):
        result = run_cli("score", tmp_path / "m", tmp_path / f"t.{suffix}", "-o", tmp_path / f"s-{suffix}.csv",
                         "--quiet")
        assert result.returncode == 0, result.stderr
        energies.append(pacsv.read_csv(tmp_path / f"s-{suffix}.csv").column("energy").to_numpy())
    assert np.isfinite(energies[0]).all()
    np.testing.assert_allclose(energies[0], energies[1], rtol=1e-5)


def test_a_date_column_is_refused_in_one_line_that_says_how_to_keep_or_drop_it(tmp_path):
    from aeserve.errors import InputError
    from aeserve.tables import read_training_table

    rng = np.random.default_rng(3)
    n = 200
    frame = pd.DataFrame({"when": pd.date_range("2024-01-01", periods=n, freq="h"), "kind": rng.choice(["a", "b"], n),
                          "x": rng.normal(size=n)})
    frame.to_csv(tmp_path / "t.csv", index=False)  # ISO times, which Arrow's CSV reader types as timestamps
    frame.to_parquet(tmp_path / "t.parquet", index=False)
    result = run_cli("train", tmp_path / "t.csv", "--epochs", "1", "--out", tmp_path / "m")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "column 'when' holds dates or times" in result.stderr and "--drop when" in result.stderr
    with pytest.raises(InputError, match=r"column 'when' holds dates or times \(timestamp\[.*--window W --time-column when"):
        read_training_table(tmp_path / "t.parquet")
    for suffix in ("csv", "parquet"):
        assert [s.name for s in read_training_table(tmp_path / f"t.{suffix}", drop=["when"]).specs] == ["kind", "x"]
        kept = read_training_table(tmp_path / f"t.{suffix}", categorical=["when"]).specs[0]
        assert kept.type == "categorical" and kept.other == n  # each time once: every value "(other)"


def test_training_says_which_text_columns_keep_no_category(tmp_path):
    """An id or a name column (every value rarer than --min-category-count) is '(other)' in every
    row: training names it and says what to do, and the model still trains."""
    rng = np.random.default_rng(4)
    n = 200
    pd.DataFrame({"name": [f"person {i}" for i in range(n)], "kind": rng.choice(["a", "b"], n),
                  "x": rng.normal(size=n)}).to_csv(tmp_path / "t.csv", index=False)
    result = run_cli("train", tmp_path / "t.csv", "--epochs", "1", "--out", tmp_path / "m", "--no-export")
    assert result.returncode == 0, result.stderr
    assert ("column name: no value seen 5 times or more (--min-category-count), so every value is '(other)' and "
            "it adds nothing; --drop it") in result.stderr
    assert "kind" not in result.stderr.split("adds nothing")[0].split("\n")[-1]


def test_list_columns_and_a_name_given_twice_are_one_line_errors(tmp_path, mixed_bundle):
    """Both once ended in a traceback from pyarrow. A repeated name that nothing reads (dropped at
    training, or unused by the model at scoring) is no error."""
    from aeserve.tables import read_training_table

    rng = np.random.default_rng(5)
    n = 100
    pq.write_table(pa.table({"x": rng.normal(size=n), "tags": pa.array([[1, 2]] * n), "kind": rng.choice(["a", "b"], n)}),
                   tmp_path / "nested.parquet")
    result = run_cli("train", tmp_path / "nested.parquet", "--epochs", "1", "--out", tmp_path / "m")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "column 'tags' holds list<element: int64> values: aeserve takes one value per cell" in result.stderr
    assert [s.name for s in read_training_table(tmp_path / "nested.parquet", drop=["tags"]).specs] == ["x", "kind"]
    rows = "\n".join(f"{v:.4f},{v:.4f},{k}" for v, k in zip(rng.normal(size=n), rng.choice(["a", "b"], n)))
    (tmp_path / "twice.csv").write_text("x,x,kind\n" + rows + "\n")
    result = run_cli("train", tmp_path / "twice.csv", "--epochs", "1", "--out", tmp_path / "t")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "twice.csv: the column name 'x' is given 2 times (columns 1, 2); rename all but one" in result.stderr
    assert [s.name for s in read_training_table(tmp_path / "twice.csv", drop=["x"]).specs] == ["kind"]
    extra = mixed_bundle["normal"].head(20).assign(note="a", note2="b")
    extra.to_csv(tmp_path / "extra.csv", index=False)
    text = (tmp_path / "extra.csv").read_text().replace("note2", "note", 1)  # a name given twice, read by nothing
    (tmp_path / "extra.csv").write_text(text)
    result = run_cli("score", mixed_bundle["path"], tmp_path / "extra.csv", "-o", tmp_path / "s.csv", "--quiet")
    assert result.returncode == 0, result.stderr


def test_a_latin1_csv_is_one_line_naming_row_column_and_how_to_convert(tmp_path, mixed_bundle):
    """Text that is not UTF-8 (a Latin-1 export) once stopped training with a pyarrow traceback."""
    rng = np.random.default_rng(6)
    cities = rng.choice(["Bern", "Basel", "Zürich"], 200)
    cities[:3] = ["Bern", "Basel", "Zürich"]  # the first cell that is not UTF-8 is on row 3
    lines = "city,x\n" + "\n".join(f"{c},{v:.4f}" for c, v in zip(cities, rng.normal(size=200))) + "\n"
    (tmp_path / "latin.csv").write_bytes(lines.encode("latin-1"))
    result = run_cli("train", tmp_path / "latin.csv", "--epochs", "1", "--out", tmp_path / "x")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "latin.csv: row 3, column 'city': the text is not UTF-8; save the file as UTF-8" in result.stderr
    rows = mixed_bundle["normal"].head(5).assign(home=["rent", "owner", "Zürich", "rent", "owner"])
    (tmp_path / "rows.csv").write_bytes(rows.to_csv(index=False).encode("latin-1"))
    result = run_cli("score", mixed_bundle["path"], tmp_path / "rows.csv", "-o", tmp_path / "s.csv")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "rows.csv: row 3, column 'home': the text is not UTF-8" in result.stderr
