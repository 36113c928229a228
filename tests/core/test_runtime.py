"""Runtime behaviour beyond parity: threads, validation, export errors, table I/O."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import aeserve
from aeserve.errors import BackendUnavailable, ExportError, InputError
from aeserve.export.parity import Tolerance, compare_outputs
from aeserve.tables import read_table, write_table


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


def test_the_torch_backend_keeps_freed_memory_for_reuse_on_glibc():
    """Eager torch's fresh 3 MB intermediates otherwise page-fault on every call (0.63x the plain layers)."""
    import platform

    from aeserve.train.torch_backend import keep_freed_memory

    if platform.libc_ver()[0] != "glibc":
        pytest.skip("mallopt is glibc's")
    assert keep_freed_memory() is True
