"""Bad files, injected faults and interruptions: one clear line, the right exit status, no
partial output, no temporary file left behind, and the input untouched."""

from __future__ import annotations

import errno
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

import aeserve

from conftest import run_cli


def _write_csv(path: Path, names: list[str], values: np.ndarray) -> Path:
    pacsv.write_csv(pa.table({n: values[:, i] for i, n in enumerate(names)}), path)
    return path


def _read(path: Path) -> pa.Table:
    suffix = path.suffix
    if suffix == ".csv":
        return pacsv.read_csv(path)
    if suffix == ".parquet":
        return pq.read_table(path)
    array = np.load(path)
    return pa.table({f"c{i}": array[:, i] for i in range(array.shape[1])})


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith(".") and p.name.endswith(".tmp"))


@pytest.fixture(scope="module")
def rows_csv(tmp_path_factory, cancer):
    path = tmp_path_factory.mktemp("faults") / "rows.csv"
    return _write_csv(path, cancer["names"], np.concatenate([cancer["test_normal"], cancer["anomalies"]]))


@pytest.fixture(scope="module")
def huge_npy(tmp_path_factory):
    """600k rows x 30: scoring it to CSV takes seconds, long enough to interrupt."""
    path = tmp_path_factory.mktemp("huge") / "huge.npy"
    rng = np.random.default_rng(0)
    np.save(path, (rng.normal(size=(600_000, 30)) * 10 + 50).astype(np.float32))
    return path


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".npy"])
def test_random_bytes_are_one_line_for_train_and_score(tmp_path, bundles, suffix):
    data = tmp_path / f"noise{suffix}"
    data.write_bytes(np.random.default_rng(1).bytes(3000))
    for args in (["train", data, "--out", tmp_path / "m", "--epochs", "1"],
                 ["score", bundles["ae"], data, "-o", tmp_path / "s.csv"]):
        result = run_cli(*args)
        assert result.returncode == 2, result.stderr
        assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
        assert str(data) in result.stderr
    assert not (tmp_path / "m").exists() and not (tmp_path / "s.csv").exists()


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".npy"])
def test_no_input_rows_give_a_valid_empty_file_with_the_usual_columns(tmp_path, bundles, cancer, suffix):
    empty = tmp_path / "empty.csv"
    empty.write_text(",".join(cancer["names"]) + "\n")
    full = _write_csv(tmp_path / "some.csv", cancer["names"], cancer["test_normal"][:5])
    out_empty, out_full = tmp_path / f"e{suffix}", tmp_path / f"f{suffix}"
    for data, out in ((empty, out_empty), (full, out_full)):
        result = run_cli("score", bundles["vae"], data, "-o", out, "--json")
        assert result.returncode == 0, result.stderr
        if data == empty:
            assert json.loads(result.stdout)["rows"] == 0 and json.loads(result.stdout)["anomalies"] == 0
    table, reference = _read(out_empty), _read(out_full)
    assert table.num_rows == 0 and reference.num_rows == 5
    assert table.schema.names == reference.schema.names
    if suffix == ".npy":
        assert np.load(out_empty).shape == (0, np.load(out_full).shape[1])


@pytest.mark.parametrize("kind", ["vae", "ae"])
@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".npy"])
def test_encode_then_decode_round_trips_in_every_format(tmp_path, bundles, cancer, kind, suffix):
    data = _write_csv(tmp_path / "rows.csv", cancer["names"], cancer["test_normal"][:40])
    codes, decoded = tmp_path / f"z{suffix}", tmp_path / f"y{suffix}"
    assert run_cli("encode", bundles[kind], data, "-o", codes, "-q").returncode == 0
    result = run_cli("decode", bundles[kind], codes, "-o", decoded, "-q")
    assert result.returncode == 0, result.stderr
    model = aeserve.load(bundles[kind])
    expected = model.decode(model.encode(cancer["test_normal"][:40]))  # a VAE decodes its mean mu
    table = _read(decoded)
    got = np.stack([table.column(i).to_numpy() for i in range(table.num_columns - 30, table.num_columns)], axis=1)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-4)


def test_an_output_that_is_an_input_is_refused_before_anything_is_read(tmp_path, bundles, rows_csv):
    data = tmp_path / "rows.csv"
    data.write_bytes(rows_csv.read_bytes())
    before = data.read_bytes()
    (tmp_path / "link.csv").symlink_to(data)
    for out in (data, tmp_path / "." / "rows.csv", tmp_path / "link.csv"):
        for verb in ("score", "encode", "reconstruct"):
            result = run_cli(verb, bundles["ae"], data, "-o", out)
            assert result.returncode == 2 and "is also an input" in result.stderr, result.stderr
    assert data.read_bytes() == before


def _limit_file_size(limit: int):
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def test_a_full_disk_is_one_line_with_no_partial_output_and_the_old_output_kept(tmp_path, bundles, rows_csv):
    out = tmp_path / "scores.csv"
    out.write_text("previous results\n")
    data = tmp_path / "many.csv"
    table = pacsv.read_csv(rows_csv)
    pacsv.write_csv(pa.concat_tables([table] * 60), data)  # ~16k rows: ~600 kB of scores
    before = data.read_bytes()
    result = subprocess.run([sys.executable, "-m", "aeserve", "score", str(bundles["ae"]), str(data), "-o", str(out)],
                            capture_output=True, text=True, timeout=300, preexec_fn=_limit_file_size(64 << 10))
    assert result.returncode == 2, result.stderr
    assert "file-size limit" in result.stderr and "nothing was written" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert out.read_text() == "previous results\n" and data.read_bytes() == before
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("sig, status", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_sigterm_and_ctrl_c_remove_the_temporary_file(tmp_path, bundles, huge_npy, sig, status):
    out = tmp_path / "scores.csv"
    process = subprocess.Popen([sys.executable, "-m", "aeserve", "score", str(bundles["ae"]), str(huge_npy),
                                "-o", str(out), "-q"], stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while not _leftovers(tmp_path) and time.time() < deadline and process.poll() is None:
        time.sleep(0.02)
    assert _leftovers(tmp_path), "the run never started writing"
    time.sleep(0.3)
    process.send_signal(sig)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == status, stderr
    assert "nothing was written" in stderr and "Traceback" not in stderr
    assert not out.exists() and _leftovers(tmp_path) == []


def test_kill_9_leaves_a_temporary_file_that_the_next_run_removes(tmp_path, bundles, huge_npy, rows_csv):
    out = tmp_path / "scores.csv"
    process = subprocess.Popen([sys.executable, "-m", "aeserve", "score", str(bundles["ae"]), str(huge_npy),
                                "-o", str(out), "-q"])
    deadline = time.time() + 60
    while not _leftovers(tmp_path) and time.time() < deadline:
        time.sleep(0.02)
    process.kill()
    process.wait(timeout=30)
    stale = _leftovers(tmp_path)
    assert stale and f".scores.csv.{process.pid}." in stale[0] and not out.exists()
    result = run_cli("score", bundles["ae"], rows_csv, "-o", out, "-q")
    assert result.returncode == 0, result.stderr
    assert _leftovers(tmp_path) == [] and pacsv.read_csv(out).num_rows > 0


def test_a_live_runs_temporary_file_is_not_removed(tmp_path):
    from aeserve.atomic import atomic_path, remove_stale_temporaries

    target = tmp_path / "out.csv"
    with atomic_path(target) as tmp:
        assert remove_stale_temporaries(target) == [] and tmp.exists()
        other = tmp_path / f".out.csv.{os.getppid()}.abc.tmp"  # a live process (our parent)
        other.write_text("x")
        assert remove_stale_temporaries(target) == [] and other.exists()
        tmp.write_text("done")
    assert target.read_text() == "done"


def test_a_read_only_output_directory_is_a_clear_error(tmp_path, bundles, rows_csv, monkeypatch, capsys):
    from aeserve.cli import main

    locked = tmp_path / "locked"
    locked.mkdir()
    if os.geteuid() == 0:  # root writes anywhere: inject the error the kernel gives everyone else
        def refuse(*args, **kwargs):
            raise PermissionError(errno.EACCES, "Permission denied", str(locked))
        monkeypatch.setattr(tempfile, "mkstemp", refuse)
    else:
        locked.chmod(0o500)
    with pytest.raises(SystemExit) as exit_info:
        main(["score", str(bundles["ae"]), str(rows_csv), "-o", str(locked / "scores.csv"), "-q"])
    locked.chmod(0o700)
    assert exit_info.value.code == 2
    message = capsys.readouterr().err
    assert "permission denied" in message and "scores.csv" in message and "Traceback" not in message
    assert list(locked.iterdir()) == []


def test_two_runs_writing_one_output_leave_one_whole_file(tmp_path, bundles, cancer):
    small = _write_csv(tmp_path / "small.csv", cancer["names"], cancer["test_normal"][:50])
    big = tmp_path / "big.csv"
    table = pacsv.read_csv(_write_csv(tmp_path / "part.csv", cancer["names"], cancer["anomalies"]))
    pacsv.write_csv(pa.concat_tables([table] * 100), big)
    reference = {}
    for data in (small, big):
        assert run_cli("score", bundles["ae"], data, "-o", tmp_path / f"ref-{data.stem}.csv", "-q").returncode == 0
        reference[data.stem] = (tmp_path / f"ref-{data.stem}.csv").read_bytes()
    out = tmp_path / "shared.csv"
    processes = [subprocess.Popen([sys.executable, "-m", "aeserve", "score", str(bundles["ae"]), str(data),
                                   "-o", str(out), "-q"]) for data in (big, small, big, small)]
    assert [p.wait(timeout=300) for p in processes] == [0, 0, 0, 0]
    assert out.read_bytes() in reference.values()
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("args, expected", [
    (["train", "{data}", "--epochs", "0"], "--epochs"),
    (["train", "{data}", "--lr", "nan"], "--lr"),
    (["train", "{data}", "--batch-size", "0"], "--batch-size"),
    (["train", "{data}", "--quantile", "1.5"], "--quantile"),
    (["train", "{data}", "--kind", "vae", "--beta", "inf"], "--beta"),
    (["train", "{data}", "--image-size", "8,8"], "--image-size"),
    (["score", "{bundle}", "{data}", "-o", "{out}", "--threshold", "nan"], "--threshold"),
    (["score", "{bundle}", "{data}", "-o", "{out}", "--explain", "31"], "--explain"),
    (["serve", "{bundle}", "--port", "70000"], "--port"),
    (["serve", "{bundle}", "--max-body-mb", "0"], "max_body_mb"),
    (["serve", "{bundle}", "--workers", "0"], "--workers"),
    (["serve", "{bundle}", "--max-inflight-mb", "1", "--max-body-mb", "8"], "max_inflight_mb"),
    (["bench", "{bundle}", "--rows", "-1"], "--rows"),
])
def test_every_option_is_checked_before_work_starts(tmp_path, bundles, rows_csv, args, expected):
    values = {"data": str(rows_csv), "bundle": str(bundles["ae"]), "out": str(tmp_path / "o.csv")}
    started = time.perf_counter()
    result = run_cli(*[a.format(**values) for a in args], cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert expected in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert time.perf_counter() - started < 30 and not (tmp_path / "models").exists()
