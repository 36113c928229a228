"""``aeserve train`` on shards from the command line: folders and globs streamed, the flags of
long runs, Ctrl-C and SIGTERM leaving a checkpoint and the previous bundle untouched, --resume."""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import sys
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import cancer_auroc, run_cli, write_shards


@pytest.fixture(scope="module")
def shard_folder(tmp_path_factory, cancer):
    folder = tmp_path_factory.mktemp("cli") / "cancer"
    write_shards(folder, cancer["train"], cancer["names"], 3, suffix=".csv")
    return folder


def test_a_folder_and_a_glob_of_shards_train_streamed(tmp_path, shard_folder, cancer):
    result = run_cli("train", shard_folder, "--kind", "ae", "--hidden", "32,16", "--latent", "4", "--epochs", "80",
                     "--shuffle-buffer", "128", "--device", "cpu", "--threads", "1", "--out", tmp_path / "a")
    assert result.returncode == 0, result.stderr
    assert "3 shard(s)" in result.stderr and "streamed from disk" in result.stderr
    assert cancer_auroc(tmp_path / "a", cancer) > 0.9
    assert not (tmp_path / "a.checkpoint").exists()
    glob = run_cli("train", str(shard_folder / "part-0[01].csv"), "--epochs", "2", "--out", tmp_path / "g", "-q")
    assert glob.returncode == 0, glob.stderr
    rows = json.loads((tmp_path / "g" / "manifest.json").read_text())["training"]["data"]["rows"]
    assert rows == sum(len(p) for p in np.array_split(cancer["train"], 3)[:2])


@pytest.mark.parametrize("args, message", [
    (["--window", "8"], "--window.*in memory"),
    (["--device", "cuda:3"], "--device.*cuda:3"),
    (["--precision", "fp8"], "--precision"),
    (["--resume"], "--resume.*no checkpoint"),
    (["--engine", "ray", "--workers", "5"], "3 shard\\(s\\) for 5 workers"),
])
def test_bad_flags_are_one_line_and_exit_2(tmp_path, shard_folder, args, message):
    import re

    import torch
    if args[:1] == ["--device"] and torch.cuda.device_count() > 3:
        pytest.skip("this machine has a fourth GPU")
    result = run_cli("train", shard_folder, "--epochs", "1", "--out", tmp_path / "b", *args)
    assert result.returncode == 2, result.stderr
    assert re.search(message, result.stderr), result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "b").exists()


def test_shards_with_text_train_as_a_mixed_table_and_bad_cells_name_their_row(tmp_path):
    for i in range(2):
        pq.write_table(pa.table({"x": np.arange(40.0) % 7, "site": ["a", "b"] * 20}), tmp_path / f"s{i}.parquet")
    result = run_cli("train", tmp_path / "s0.parquet", tmp_path / "s1.parquet", "--epochs", "2", "--out",
                     tmp_path / "m", "--min-category-count", "1")
    assert result.returncode == 0, result.stderr
    assert "2 columns (1 numeric, 1 categorical; 0 missing cells)" in result.stderr
    vocabulary = json.loads((tmp_path / "m" / "manifest.json").read_text())["input"]["columns"][1]["vocabulary"]
    assert vocabulary == ["a", "b"]
    (tmp_path / "csv").mkdir()
    for i in range(2):
        lines = ["x,site"] + [f"{k % 7},{'ab'[k % 2]}" for k in range(40)]
        if i == 1:
            lines[12] = "seven,a"  # data row 12: text in a number column
        (tmp_path / "csv" / f"s{i}.csv").write_text("\n".join(lines) + "\n")
    bad = run_cli("train", tmp_path / "csv", "--epochs", "1", "--out", tmp_path / "n")
    assert bad.returncode == 2 and "s1.csv" in bad.stderr and "row 12" in bad.stderr and "'x'" in bad.stderr, \
        bad.stderr


def _sha(folder) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_stopped_run_keeps_the_old_bundle_and_resumes(tmp_path, sig, code):
    rng = np.random.default_rng(0)
    folder = tmp_path / "big"
    rows = (rng.normal(size=(40_000, 4)) @ rng.normal(size=(4, 12))).astype(np.float32)
    write_shards(folder, rows, [f"s{i}" for i in range(12)], 2)
    out = tmp_path / "m"
    assert run_cli("train", folder, "--epochs", "1", "--out", out, "-q").returncode == 0
    before = _sha(out)
    command = [sys.executable, "-m", "aeserve", "train", str(folder), "--epochs", "6", "--batch-size", "32",
               "--checkpoint-every", "1", "--out", str(out), "--force"]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    checkpoint = tmp_path / "m.checkpoint"
    try:
        deadline = time.monotonic() + 180
        while not (checkpoint / "checkpoint.json").exists() and time.monotonic() < deadline:
            time.sleep(0.1)  # into the epochs: the first epoch's checkpoint is on disk
        process.send_signal(sig)
        stderr = process.communicate(timeout=120)[1]
    finally:
        process.kill()
    assert process.returncode == code, stderr
    assert "nothing was written but the checkpoint of epoch" in stderr and "--resume" in stderr, stderr
    assert _sha(out) == before  # the previous bundle is untouched
    assert sorted(p.name for p in checkpoint.iterdir()) == ["checkpoint.json", "state.safetensors"]
    epoch = json.loads((checkpoint / "checkpoint.json").read_text())["epoch"]
    other = run_cli(*command[3:], "--resume", "--lr", "0.01")
    assert other.returncode == 2 and "another run" in other.stderr, other.stderr  # other options: another run
    resumed = run_cli(*command[3:], "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert f"resumed after epoch {epoch}" in resumed.stderr
    assert _sha(out) != before and not checkpoint.exists()
    history = json.loads((out / "manifest.json").read_text())["training"]["history"]["val_energy"]
    assert len(history) == 6
