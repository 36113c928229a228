"""Streaming scoring: chunking changes nothing, order and ids survive many files, skip mode
reports exactly the bad rows, outputs are atomic and get ordinary permissions."""

from __future__ import annotations

import os

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

import aeserve
from aeserve.errors import InputError
from aeserve.serve.files import score_file
from aeserve.serve.stream import expand_inputs

from conftest import run_cli


@pytest.fixture(scope="module")
def rows(cancer):
    rng = np.random.default_rng(0)
    base = np.concatenate([cancer["test_normal"], cancer["anomalies"]])
    return base[rng.integers(0, len(base), 5000)] * rng.uniform(0.9, 1.1, (5000, 30)).astype(np.float32)


def _write(path, rows, names, ids=None):
    columns = {**({"id": ids} if ids is not None else {}), **{n: rows[:, j] for j, n in enumerate(names)}}
    if path.suffix == ".npy":
        np.save(path, rows)
    elif path.suffix == ".csv":
        pacsv.write_csv(pa.table(columns), path)
    else:
        pq.write_table(pa.table(columns), path, row_group_size=700)


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".npy"])
def test_chunked_scoring_equals_whole_file_scoring_bit_for_bit(bundles, cancer, rows, tmp_path, suffix, monkeypatch):
    import aeserve.readers as stream

    model = aeserve.load(bundles["ae"])
    source = tmp_path / f"rows{suffix}"
    _write(source, rows, cancer["names"])
    whole = model.score(np.asarray(read_back(source, cancer["names"]), dtype=np.float32))
    monkeypatch.setattr(stream, "chunk_rows_for", lambda width: 333)  # many small chunks
    score_file(model, source, tmp_path / "out.parquet")
    table = pq.read_table(tmp_path / "out.parquet")
    assert table.column("row").to_pylist() == list(range(1, 5001))
    for name in ("energy", "reconstruction", "regulariser", "anomaly"):
        np.testing.assert_array_equal(table.column(name).to_numpy(), whole[name])


def read_back(path, names):
    if path.suffix == ".npy":
        return np.load(path)
    table = pacsv.read_csv(path) if path.suffix == ".csv" else pq.read_table(path)
    return np.stack([table.column(n).to_numpy() for n in names], axis=1).astype(np.float32)


def test_order_and_ids_survive_several_files_globs_and_directories(bundles, cancer, rows, tmp_path):
    shards = tmp_path / "shards"
    shards.mkdir()
    ids = np.arange(5000) * 3 + 1000
    parts = np.array_split(np.arange(5000), 4)
    for i, part in enumerate(parts):
        _write(shards / f"part-{i}.{'csv' if i % 2 else 'parquet'}", rows[part], cancer["names"], ids[part])
    assert [p.name for p in expand_inputs([shards])] == ["part-0.parquet", "part-1.csv", "part-2.parquet", "part-3.csv"]
    result = run_cli("score", bundles["vae"], shards / "part-0.parquet", str(shards / "part-[123].*"),
                     "--id-column", "id", "-o", tmp_path / "scores.csv")
    assert result.returncode == 0, result.stderr
    table = pacsv.read_csv(tmp_path / "scores.csv")
    assert table.column_names[:2] == ["id", "source"]
    assert table.column("id").to_pylist() == ids.tolist()
    assert table.column("source").to_pylist() == [f"part-{i}.{'csv' if i % 2 else 'parquet'}"
                                                  for i, part in enumerate(parts) for _ in part]
    expected = aeserve.load(bundles["vae"]).score(rows)["energy"]
    np.testing.assert_array_equal(table.column("energy").to_numpy().astype(np.float32), expected)
    assert (os.stat(tmp_path / "scores.csv").st_mode & 0o777) == (0o666 & ~_umask())


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_skip_mode_reports_exactly_the_corrupted_rows(bundles, cancer, rows, tmp_path):
    good = tmp_path / "good.csv"
    _write(good, rows[:300], cancer["names"])
    lines = good.read_text().splitlines()  # lines[r] is data row r
    corrupt = {17: ("text", 4), 42: ("nan", 7), 43: ("", 0), 200: ("inf", 29)}
    for row, (value, column) in corrupt.items():
        cells = lines[row].split(",")
        cells[column] = value
        lines[row] = ",".join(cells)
    lines[150] = ",".join(lines[150].split(",")[:12])  # a truncated row
    bad = tmp_path / "bad.csv"
    bad.write_text("\n".join(lines) + "\n")
    out = tmp_path / "scores.csv"
    result = run_cli("score", bundles["ae"], bad, "--on-error", "skip", "-o", out)
    assert result.returncode == 3, result.stderr
    assert "skipped 5 bad rows" in result.stderr
    errors = pacsv.read_csv(tmp_path / "scores.csv.errors.csv").to_pydict()
    assert errors["row"] == [17, 42, 43, 150, 200]
    names = cancer["names"]
    assert errors["column"] == [names[4], names[7], names[0], "*", names[29]]
    reasons = errors["reason"]
    assert "expected a number, got 'text'" in reasons[0] and "not a finite" in reasons[1]
    assert "missing value" in reasons[2] and "expected 30 fields, got 12" in reasons[3] and "not a finite" in reasons[4]
    scored = pacsv.read_csv(out)
    kept = [r for r in range(1, 301) if r not in (17, 42, 43, 150, 200)]
    assert scored.column("row").to_pylist() == kept
    expected = aeserve.load(bundles["ae"]).score(rows[np.array(kept) - 1])["energy"]
    np.testing.assert_array_equal(scored.column("energy").to_numpy().astype(np.float32), expected)
    # the same file in fail mode: the first bad row, and no output at all
    out2 = tmp_path / "fail.csv"
    result = run_cli("score", bundles["ae"], bad, "-o", out2)
    assert result.returncode == 2 and not out2.exists()
    assert "bad.csv" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_failure_midway_leaves_no_output(bundles, cancer, rows, tmp_path):
    first, second = tmp_path / "a.npy", tmp_path / "b.npy"
    np.save(first, rows)
    broken = rows[:100].copy()
    broken[60, 3] = np.inf
    np.save(second, broken)
    out = tmp_path / "scores.parquet"
    with pytest.raises(InputError, match=r"b.npy: row 61, column 'mean_area'"):
        score_file(aeserve.load(bundles["ae"]), [first, second], out)
    assert not out.exists() and not list(tmp_path.glob(".scores.parquet*"))


def test_npy_output_streams_with_a_valid_header(bundles, rows, tmp_path, monkeypatch):
    import aeserve.readers as stream

    np.save(tmp_path / "rows.npy", rows)
    monkeypatch.setattr(stream, "chunk_rows_for", lambda width: 1000)
    score_file(aeserve.load(bundles["ae"]), tmp_path / "rows.npy", tmp_path / "out.npy")
    out = np.load(tmp_path / "out.npy")
    assert out.shape == (5000, 5) and out.dtype == np.float32  # energy, 2 terms, p_value, anomaly
    np.testing.assert_array_equal(out[:, 0], aeserve.load(bundles["ae"]).score(rows)["energy"])


def test_truncated_npy_is_reported(tmp_path, bundles, rows):
    np.save(tmp_path / "rows.npy", rows)
    data = (tmp_path / "rows.npy").read_bytes()
    (tmp_path / "cut.npy").write_bytes(data[: len(data) // 2])
    result = run_cli("score", bundles["ae"], tmp_path / "cut.npy", "-o", tmp_path / "o.csv")
    assert result.returncode == 2 and "truncated" in result.stderr and "5000 rows" in result.stderr
