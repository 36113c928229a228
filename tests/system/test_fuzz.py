"""Property-based tests (hypothesis) of every reader and of the HTTP request decoder: any
input gives a correct result or the typed error (InputError, RequestError), never another
exception. Run with ``--hypothesis-show-statistics`` to see how many examples ran."""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from aeserve.errors import InputError
from aeserve.readers import iter_chunks
from aeserve.serve.kserve_json import decode_request
from aeserve.serve.protocol import COLUMN_DATATYPES, Endpoint, RequestError, TensorSpec
from aeserve.tables import read_table

#: examples per property: 500 in the default run; AESERVE_FUZZ_EXAMPLES=20000 for a long one
FUZZ = settings(max_examples=int(os.environ.get("AESERVE_FUZZ_EXAMPLES", "500")), deadline=None,
                suppress_health_check=[HealthCheck.too_slow])


def _read_any(data: bytes, suffix: str):
    """read_table and a streaming read of ``data`` saved as ``suffix``: the table or InputError."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"f{suffix}"
        path.write_bytes(data)
        try:
            table = read_table(path)
        except InputError:
            table = None
        try:
            for _ in iter_chunks(path, ["a", "b"] if suffix != ".npy" else ["f0", "f1"], skip=True):
                pass
        except InputError:
            pass
        return table


@FUZZ
@given(data=st.binary(max_size=2000), suffix=st.sampled_from([".csv", ".parquet", ".npy"]))
@example(data=b"a,b\n\xff\xfe,1\n", suffix=".csv")  # found by the long run: a non-UTF-8 cell
@example(data=b"\x93NUMPY\x01\x00\x10\x00{'descr': '<f4\n", suffix=".npy")
def test_arbitrary_bytes_are_read_or_refused_with_input_error(data, suffix):
    table = _read_any(data, suffix)
    if table is not None:
        assert table.values.dtype == np.float32 and np.isfinite(table.values).all()


_names = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), min_size=1, max_size=8)
_cells = st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=32, allow_subnormal=False).map(repr),
                   st.integers(-10**6, 10**6).map(str), st.sampled_from(["", "NA", "null", "nan", "inf", "x", "1e", "-"]),
                   st.text(max_size=5))


@FUZZ
@given(names=st.lists(_names, min_size=1, max_size=5, unique=True), rows=st.integers(0, 6), data=st.data(),
       quoting=st.sampled_from([csv.QUOTE_MINIMAL, csv.QUOTE_ALL, csv.QUOTE_NONNUMERIC]),
       encoding=st.sampled_from(["utf-8", "utf-8-sig", "latin-1", "utf-16"]), terminator=st.sampled_from(["\n", "\r\n"]))
def test_csv_like_text_is_read_or_refused(names, rows, data, quoting, encoding, terminator):
    cells = [[data.draw(_cells) for _ in names] for _ in range(rows)]
    ragged = data.draw(st.booleans())
    if ragged and cells:
        cells[0] = cells[0][:-1] or ["1", "2"]
    text = io.StringIO()
    writer = csv.writer(text, quoting=quoting, lineterminator=terminator)
    writer.writerow(names)
    writer.writerows(cells)
    try:
        raw = text.getvalue().encode(encoding)
    except UnicodeEncodeError:
        assume(False)
    table = _read_any(raw, ".csv")
    if table is not None:
        assert table.values.shape == (rows, len(names))


@FUZZ
@given(values=st.lists(st.lists(st.floats(-2.0**100, 2.0**100, width=32, allow_subnormal=False), min_size=3, max_size=3), min_size=1, max_size=20),
       quoting=st.sampled_from([csv.QUOTE_MINIMAL, csv.QUOTE_ALL, csv.QUOTE_NONNUMERIC]))
def test_numeric_csv_round_trips_exactly_whatever_the_quoting(values, quoting):
    text = io.StringIO()
    writer = csv.writer(text, quoting=quoting)
    writer.writerow(["a", "b,c", 'd"e'])
    writer.writerows([[repr(v) for v in row] for row in values])
    table = _read_any(text.getvalue().encode(), ".csv")
    assert table is not None and table.columns == ["a", "b,c", 'd"e']
    np.testing.assert_array_equal(table.values, np.asarray(values, dtype=np.float32))


_descr = st.sampled_from(["<f4", "<f8", ">f4", "<i8", "|u1", "|b1", "<c8", "|O", "<U3", "<f2", "xx", "[('a', '<f4')]"])
_shape = st.one_of(st.tuples(), st.tuples(st.integers(-3, 40)), st.tuples(st.integers(-3, 40), st.integers(-3, 6)),
                   st.tuples(st.integers(0, 4), st.integers(0, 4), st.integers(0, 4)),
                   st.tuples(st.just(2**62), st.just(2**40)))


@FUZZ
@given(descr=_descr, fortran=st.booleans(), shape=_shape, payload=st.binary(max_size=400),
       version=st.sampled_from([b"\x01\x00", b"\x02\x00", b"\x03\x00", b"\x09\x00"]), garble=st.booleans())
def test_npy_headers_are_read_or_refused(descr, fortran, shape, payload, version, garble):
    header = "{'descr': %r, 'fortran_order': %s, 'shape': %r, }" % (descr, fortran, shape)
    if garble:
        header = header.replace("'shape'", "'shap").replace("}", "")
    body = header.encode("latin1") + b" " * (63 - (len(header) + 12) % 64) + b"\n"
    size = len(body).to_bytes(2 if version == b"\x01\x00" else 4, "little")
    blob = b"\x93NUMPY" + version + size + body + payload
    table = _read_any(blob, ".npy")
    if table is not None:
        assert table.values.ndim == 2 and np.isfinite(table.values).all()


@pytest.fixture(scope="module")
def parquet_bytes():
    sink = io.BytesIO()
    pq.write_table(pa.table({"a": np.arange(50, dtype=np.float64), "b": np.linspace(0, 1, 50),
                             "c": [f"r{i}" for i in range(50)]}), sink, row_group_size=10)
    return sink.getvalue()


@FUZZ
@given(cut=st.integers(0, 10_000), flips=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 7)), max_size=4))
def test_truncated_and_bit_flipped_parquet_is_read_or_refused(parquet_bytes, cut, flips):
    blob = bytearray(parquet_bytes[:cut % (len(parquet_bytes) + 1)])
    for position, bit in flips:
        if blob:
            blob[position % len(blob)] ^= 1 << bit
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "f.parquet"
        path.write_bytes(bytes(blob))
        try:
            table = read_table(path, columns=["a", "b"])
        except InputError:
            return
    assert table.values.shape[1] == 2


# -- the HTTP request decoder -------------------------------------------------------------

SCORE = Endpoint("m", [TensorSpec("y", "FP32", [-1, 3])], [TensorSpec("energy", "FP32", [-1])], run=lambda x: x)
SAMPLE = Endpoint("m-sample", [TensorSpec("n", "INT64", [1]), TensorSpec("seed", "INT64", [1])],
                  [TensorSpec("y", "FP32", [-1, 3])], run=lambda x: x, batched=False, may_omit=("seed",))

#: a mixed bundle's score endpoint: one tensor per column, any datatype its column type accepts
TABLE = Endpoint("t", [TensorSpec("y", "FP32", [-1], accepts=COLUMN_DATATYPES["numeric"]),
                       TensorSpec("n", "BYTES", [-1], accepts=COLUMN_DATATYPES["categorical"])],
                 [TensorSpec("energy", "FP32", [-1])], run=lambda x: x, batched=False)

_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_subnormal=False) | st.text(max_size=6),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4),
    max_leaves=20)
_datatypes = st.sampled_from(["FP32", "FP64", "INT64", "BYTES", "fp32", "", None, 3])
_tensor = st.fixed_dictionaries(
    {"name": st.sampled_from(["y", "n", "seed", "z", "", None, 1, ["y"]]), "datatype": _datatypes,
     "shape": st.one_of(st.lists(st.integers(-2, 5), max_size=3), st.lists(st.integers(0, 2**70), max_size=2),
                        _json_values)},
    optional={"data": st.one_of(_json_values, st.lists(st.floats(width=32, allow_subnormal=False), max_size=12),
                                st.lists(st.lists(st.integers(-2**70, 2**70), max_size=3), max_size=4)),
              "parameters": st.one_of(_json_values, st.fixed_dictionaries(
                  {"binary_data_size": st.one_of(st.integers(-4, 64), _json_values)}))})
_request = st.fixed_dictionaries({"inputs": st.one_of(st.lists(_tensor, max_size=3), _json_values)},
                                 optional={"outputs": _json_values, "parameters": _json_values, "id": _json_values})


def _decode(body: bytes, header, endpoint: Endpoint):
    try:
        _, arrays = decode_request(body, header, endpoint)
    except RequestError as exc:
        assert 400 <= exc.status < 500
        return None
    for name, array in arrays.items():
        spec = {t.name: t for t in endpoint.inputs}[name]
        if spec.accepts:  # a table column: a pyarrow array of at least one cell
            assert len(array) >= 1
            continue
        assert len(array.shape) == len(spec.shape) and array.shape[0] >= 1
        if array.dtype.kind == "f":
            assert np.isfinite(array).all()
    return arrays


@FUZZ
@given(request=st.one_of(_request, _json_values), endpoint=st.sampled_from([SCORE, SAMPLE, TABLE]))
def test_random_kserve_json_is_decoded_or_refused_with_a_400(request, endpoint):
    _decode(json.dumps(request).encode(), None, endpoint)


@FUZZ
@example(request={"inputs": []}, binary=b"", header="\u00b2", endpoint=SCORE)  # found: '²'.isdigit() is True
@given(request=_request, binary=st.binary(max_size=64), header=st.one_of(st.none(), st.integers(-5, 400).map(str),
                                                                          st.text(max_size=5)),
       endpoint=st.sampled_from([SCORE, SAMPLE, TABLE]))
def test_random_binary_extension_bodies_are_decoded_or_refused_with_a_400(request, binary, header, endpoint):
    head = json.dumps(request).encode()
    _decode(head + binary, str(len(head)) if header is None else header, endpoint)


@FUZZ
@given(body=st.binary(max_size=300), header=st.one_of(st.none(), st.integers(0, 300).map(str)))
def test_random_bytes_are_refused_with_a_400(body, header):
    _decode(body, header, SCORE)


@FUZZ
@given(rows=st.integers(1, 5), values=st.data())
def test_valid_requests_decode_to_exactly_the_values_sent(rows, values):
    array = np.asarray(values.draw(st.lists(st.floats(-2.0**20, 2.0**20, width=32, allow_subnormal=False), min_size=rows * 3, max_size=rows * 3)),
                       dtype=np.float32).reshape(rows, 3)
    as_json = {"inputs": [{"name": "y", "datatype": "FP32", "shape": [rows, 3], "data": array.ravel().tolist()}]}
    np.testing.assert_array_equal(_decode(json.dumps(as_json).encode(), None, SCORE)["y"], array)
    head = json.dumps({"inputs": [{"name": "y", "datatype": "FP32", "shape": [rows, 3],
                                   "parameters": {"binary_data_size": array.nbytes}}]}).encode()
    np.testing.assert_array_equal(_decode(head + array.tobytes(), str(len(head)), SCORE)["y"], array)


_CELLS = st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.floats(allow_nan=True, allow_infinity=True),
                   st.text(max_size=6), st.sampled_from(["", "NA", "true", "no", "1", "a", "b"]))


@FUZZ
@given(columns=st.lists(st.lists(_CELLS, min_size=3, max_size=3), min_size=3, max_size=3),
       skip=st.booleans())
def test_any_cells_given_to_the_table_encoding_encode_or_raise_input_error(columns, skip):
    """A table of any cells (text, numbers, booleans, None, NaN, inf, mixed in one column) is
    encoded, or refused with an InputError naming row and column; never another exception."""
    from aeserve.columns import TableEncoding
    from aeserve.manifest import ColumnSpec

    encoding = TableEncoding((ColumnSpec("x"), ColumnSpec("b", "binary"), ColumnSpec("c", "categorical", ("a", "b"))))
    data = dict(zip(("x", "b", "c"), columns))
    try:
        values, keep, bad = encoding.encode(data, source="t", skip=skip)
    except InputError as exc:
        assert "column" in str(exc) or "columns" in str(exc)
        return
    assert values.shape == (3, 6) and values.dtype == np.float32 and np.isfinite(values).all()
    assert keep.shape == (3,) and len(bad) == int((~keep).sum())
    assert set(np.unique(values[:, 2])) <= {0.0, 1.0, 2.0} and set(np.unique(values[:, 3:])) <= {0.0, 1.0}
