"""Typed table columns: inference, vocabularies, missing cells and the runtime's encoding."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from aeserve.columns import OTHER, TableEncoding, fit_columns, infer_types, missing_cells
from aeserve.errors import InputError
from aeserve.manifest import ColumnSpec


def _table():
    return pa.table({"age": [30.0, None, 41.0, 52.0], "home": ["rent", "owner", None, "rent"],
                     "member": [True, False, None, True], "code": [3, 3, 7, 3]})


def test_types_follow_the_arrow_schema_and_the_overrides():
    table = _table()
    assert infer_types(table.schema, table.column_names) == {
        "age": "numeric", "home": "categorical", "member": "binary", "code": "numeric"}
    assert infer_types(table.schema, table.column_names, categorical=["code"])["code"] == "categorical"
    with pytest.raises(InputError, match="both"):
        infer_types(table.schema, table.column_names, categorical=["code"], numeric=["code"])
    with pytest.raises(InputError, match="'nope'"):
        infer_types(table.schema, table.column_names, categorical=["nope"])


def test_vocabulary_keeps_frequent_categories_and_counts_the_rest_and_the_missing():
    table = pa.table({"c": ["a"] * 6 + ["b"] * 5 + ["c"] * 2 + [None, ""]})
    (spec,) = fit_columns(table, {"c": "categorical"}, min_count=3, max_categories=10)
    assert spec.vocabulary == ("a", "b") and spec.other == 2 and spec.missing == 2 and spec.rows == 15
    (top,) = fit_columns(table, {"c": "categorical"}, min_count=1, max_categories=1)
    assert top.vocabulary == ("a",) and top.other == 7


def test_encoding_gives_values_then_missing_flags_per_column():
    table = _table()
    specs = fit_columns(table, infer_types(table.schema, table.column_names, categorical=["code"]), min_count=1)
    encoding = TableEncoding(specs)
    values, keep, bad = encoding.encode(table)
    assert keep.all() and not bad and values.shape == (4, 8)
    home = specs[1].vocabulary  # ('rent', 'owner')
    np.testing.assert_array_equal(values[:, 0], [30, 0, 41, 52])
    np.testing.assert_array_equal(values[:, 1], [home.index("rent"), home.index("owner"), 0, home.index("rent")])
    np.testing.assert_array_equal(values[:, 2], [1, 0, 0, 1])
    np.testing.assert_array_equal(values[:, 4:], [[0, 0, 0, 0], [1, 0, 0, 0], [0, 1, 1, 0], [0, 0, 0, 0]])
    # an unseen category takes the "other" slot; the same table as pandas, a dict or a dictionary column
    unseen = encoding.encode_rows({"age": [1.0], "home": ["castle"], "member": [True], "code": [3]})
    assert unseen[0, 1] == len(home)
    assert encoding.slot_name("home", unseen[:, 1])[0] == OTHER
    np.testing.assert_array_equal(encoding.encode_rows(table.to_pandas()), values)
    dictionary = table.set_column(1, "home", table.column("home").dictionary_encode())
    np.testing.assert_array_equal(encoding.encode_rows(dictionary), values)


def test_text_cells_that_a_csv_reads_as_missing_are_missing_everywhere():
    assert missing_cells(pa.chunked_array([["a", "", "NA", None, "b"]])).tolist() == [False, True, True, True, False]
    assert missing_cells(pa.chunked_array([[1.0, float("nan"), None]])).tolist() == [False, True, True]


@pytest.mark.parametrize("column, cells, message", [
    ("age", ["thirty"], "row 1, column 'age': expected a number, got 'thirty'"),
    ("age", [float("inf")], "row 1, column 'age': value inf is not a finite number"),
    ("member", [2], "row 1, column 'member': expected true or false \\(or 1/0\\), got 2"),
    ("member", ["maybe"], "row 1, column 'member': expected true or false, got 'maybe'"),
])
def test_a_bad_cell_is_named_by_source_row_and_column(column, cells, message):
    specs = (ColumnSpec("age"), ColumnSpec("member", "binary"))
    data = {"age": [1.0], "member": [True]} | {column: cells}
    with pytest.raises(InputError, match=f"^rows.csv: {message}$"):
        TableEncoding(specs).encode(data, source="rows.csv")
    _, keep, bad = TableEncoding(specs).encode(data, source="rows.csv", skip=True)
    assert not keep.any() and bad[0].column == column


def test_booleans_read_from_text_and_numbers():
    spec = (ColumnSpec("b", "binary"),)
    values = TableEncoding(spec).encode_rows({"b": ["True", "no", " yes ", "0", None]})
    np.testing.assert_array_equal(values, [[1, 0], [0, 0], [1, 0], [0, 0], [0, 1]])
    np.testing.assert_array_equal(TableEncoding(spec).encode_rows({"b": [1, 0]})[:, 0], [1, 0])


def test_a_table_lacking_a_column_is_refused_naming_it():
    with pytest.raises(InputError, match="lacks 1 column.*'member'"):
        TableEncoding((ColumnSpec("age"), ColumnSpec("member", "binary"))).encode_rows({"age": [1.0]})


def test_typical_rows_of_a_mixed_table_are_valid_encodings():
    from aeserve.manifest import Preprocessing

    specs = (ColumnSpec("x", missing=50, rows=100), ColumnSpec("b", "binary", rows=100),
             ColumnSpec("c", "categorical", ("a", "b", "c"), rows=100))
    prep = Preprocessing("standardize", (5.0, 0, 0, 0, 0, 0), (2.0, 1, 1, 1, 1, 1), False, "")
    rows = TableEncoding(specs).typical_rows(prep, 2000, seed=1)
    assert rows.shape == (2000, 6) and rows.dtype == np.float32
    assert set(np.unique(rows[:, 1])) == {0.0, 1.0} and set(np.unique(rows[:, 2])) == {0.0, 1.0, 2.0, 3.0}
    assert set(np.unique(rows[:, 3:])) == {0.0, 1.0} and 0.4 < rows[:, 3].mean() < 0.6  # x missing half the time
    observed = rows[rows[:, 3] == 0, 0]
    assert abs(observed.mean() - 5.0) < 0.2 and abs(observed.std() - 2.0) < 0.2
