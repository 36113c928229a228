"""Readers and tables (src/aeserve/readers.py, tables.py): formats, errors naming file, row and column, chunking."""

from __future__ import annotations

import re

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from aeserve.errors import InputError
from aeserve.tables import read_table, write_table


def test_tables_round_trip_and_select(tmp_path):
    values = np.arange(12, dtype=np.float32).reshape(4, 3)
    for suffix in (".csv", ".parquet", ".npy"):
        path = tmp_path / f"t{suffix}"
        write_table(path, {"a": values[:, 0], "b": values[:, 1], "c": values[:, 2]})
        table = read_table(path, drop=["b"] if suffix != ".npy" else ["f1"])
        np.testing.assert_array_equal(table.values, values[:, [0, 2]])
    assert read_table(tmp_path / "t.csv", expect=["c", "a"]).values[0].tolist() == [2.0, 0.0]


def test_parquet_errors_name_row_and_column(tmp_path):
    path = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"a": [1.0, 2.0, None], "b": ["1", "x", "3"]}), path)
    with pytest.raises(InputError, match=r"row 3, column 'a': missing value"):
        read_table(path, columns=["a"])
    with pytest.raises(InputError, match=r"row 2, column 'b': expected a number, got 'x'"):
        read_table(path, columns=["b"])
    (tmp_path / "cut.parquet").write_bytes(path.read_bytes()[:40])
    with pytest.raises(InputError, match="cut.parquet: cannot read Parquet"):
        read_table(tmp_path / "cut.parquet")
    np.save(tmp_path / "obj.npy", np.array([["a"]]))
    with pytest.raises(InputError, match="expected a numeric array"):
        read_table(tmp_path / "obj.npy")


def test_finite_check_names_the_cell_and_lets_huge_finite_values_through():
    from aeserve.tables import check_finite

    huge = np.full((4, 3), 3e38, dtype=np.float32)  # finite, but their float32 sum overflows
    check_finite(huge, ["a", "b", "c"], "huge.csv")
    for bad in (np.nan, np.inf, -np.inf):
        values = huge.copy()
        values[2, 1] = bad
        with pytest.raises(InputError, match=r"huge.csv: row 3, column 'b': value .* is not a finite number"):
            check_finite(values, ["a", "b", "c"], "huge.csv")


def _chunk(start: int, count: int, source: str, bad: int = 0):
    from aeserve.readers import BadRow, Chunk

    values = np.arange(start, start + count, dtype=np.float32)[:, None]  # (count, 1)
    return Chunk(values, np.arange(start, start + count), source,
                 [BadRow(source, start + count + 1, "a", "missing value")] * bad, bytes_read=start + count)


def test_exact_chunks_cut_rows_across_chunks_and_files_keeping_order_sources_and_bad_rows():
    from aeserve.readers import exact_chunks

    chunks = [_chunk(0, 3, "a.csv"), _chunk(3, 0, "a.csv", bad=2), _chunk(3, 6, "a.csv"), _chunk(9, 2, "b.csv", bad=1),
              _chunk(11, 0, "b.csv", bad=1), _chunk(11, 4, "b.csv")]
    out = list(exact_chunks(iter(chunks), 4))
    sizes = [len(c.values) for c in out]
    assert sizes == [4, 4, 4, 3]  # every chunk exactly 4 rows, the last one shorter
    np.testing.assert_array_equal(np.concatenate([c.values[:, 0] for c in out]), np.arange(15))
    np.testing.assert_array_equal(np.concatenate([c.ids for c in out]), np.arange(15))
    assert sum(len(c.bad) for c in out) == 4  # no bad row lost or counted twice
    spans = out[2]  # rows 8..11: 8 from a.csv, 9..11 from b.csv
    assert list(spans.sources) == ["a.csv", "b.csv", "b.csv", "b.csv"]
    assert out[-1].bytes_read == 15 and out[-1].source == "b.csv"


def test_exact_chunks_hand_on_bad_rows_at_once_when_no_good_row_waits():
    from aeserve.readers import exact_chunks

    out = list(exact_chunks(iter([_chunk(0, 4, "a.csv"), _chunk(4, 0, "a.csv", bad=3)]), 4))
    assert [len(c.values) for c in out] == [4, 0] and len(out[1].bad) == 3


@pytest.mark.parametrize("sep", [";", "\t", "|"])
def test_a_csv_separated_by_another_character_is_refused_not_read_as_one_text_column(tmp_path, sep):
    """A European CSV ('a;b;kind') once trained a model of one text column named 'a;b;kind'."""
    from aeserve.tables import read_training_table

    path = tmp_path / "t.csv"
    path.write_text(sep.join(["a", "b", "kind"]) + "\n" + "\n".join(sep.join(["1", "2", "x"]) for _ in range(20)) + "\n")
    with pytest.raises(InputError, match="one column, .*separated by " + re.escape(repr(sep)) + ": aeserve reads comma"):
        read_training_table(path)
    with pytest.raises(InputError, match="separated by"):
        read_table(path)
    one = tmp_path / "one.csv"  # a single column is still a table
    one.write_text("a\n" + "\n".join(str(i) for i in range(20)) + "\n")
    assert read_table(one).values.shape == (20, 1)
