"""Series through the command line: train on windows, a score for every row of a file (split
files score as the whole), last / mean / max, explanations by channel and lag, standard input
scored as rows arrive, and the mistakes a user makes named in one line."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

import aeserve

from conftest import run_cli, sensor_rows


@pytest.fixture(scope="module")
def scored(series_bundle, tmp_path_factory):
    """The labelled test file scored with each --window-score."""
    out = tmp_path_factory.mktemp("scored")
    frames = {}
    for how in ("last", "mean", "max"):
        result = run_cli("score", series_bundle["path"], series_bundle["root"] / "test.csv", "-o", out / f"{how}.parquet",
                         "--window-score", how, "--quiet")
        assert result.returncode == 0, result.stderr
        frames[how] = pd.read_parquet(out / f"{how}.parquet")
    return frames


def test_the_bundle_records_its_window_and_names_cells_by_channel_and_lag(series_bundle):
    model = aeserve.load(series_bundle["path"], backend="onnxruntime")
    window = model.window
    assert (window.size, window.channels, window.time_column, window.group_column, window.max_gap) == \
        (16, ("vibration", "temperature", "load"), "time", "machine", 300.0)
    assert model.features[:2] == ["vibration@t-15", "vibration@t-14"] and model.features[-1] == "load@t"
    info = run_cli("info", series_bundle["path"])
    assert "windows of 16 rows of vibration, temperature, load" in info.stdout


def test_every_row_gets_the_energy_of_the_window_ending_at_it(series_bundle, scored):
    """One output row per input row, with time and group; a row's energy is the model's energy of
    the window of its machine's 16 rows up to it, built here by hand."""
    test, last = series_bundle["test"], scored["last"]
    assert len(last) == len(test) and list(last.columns[:3]) == ["row", "time", "machine"]
    assert (last["machine"] == test["machine"]).all()
    model = aeserve.load(series_bundle["path"], backend="onnxruntime")
    m1 = np.flatnonzero(test["machine"].to_numpy() == "m1")
    channels = test[list(model.window.channels)].to_numpy(np.float32)
    ends = m1[15:]
    windows = np.stack([channels[m1[i - 15:i + 1]].T.reshape(-1) for i in range(15, len(m1))])  # channel-major
    expected = model.energy(windows)["energy"]
    np.testing.assert_allclose(last["energy"].to_numpy()[ends], expected, rtol=1e-5, atol=1e-6)
    # each machine's first 15 rows end no window: no energy, not an anomaly, windows 0
    first = m1[:15]
    assert last["energy"].iloc[first].isna().all() and (last["anomaly"].iloc[first] == 0).all()
    assert (last["windows"].iloc[first] == 0).all() and (last["windows"].iloc[ends] == 1).all()
    assert int((last["windows"] == 0).sum()) == 2 * 15


def test_mean_and_max_come_from_the_windows_that_contain_each_row(series_bundle, scored):
    test, last = series_bundle["test"], scored["last"]
    rows = np.flatnonzero(test["machine"].to_numpy() == "m2")
    per_window = last["energy"].to_numpy()[rows]  # the window ending at each of m2's rows
    size = 16
    for how, combine in (("mean", np.nanmean), ("max", np.nanmax)):
        got = scored[how]["energy"].to_numpy()[rows]
        for i in (0, 5, 15, 200, len(rows) - 3, len(rows) - 1):
            covering = per_window[i:i + size]  # windows ending at the row and its 15 successors
            np.testing.assert_allclose(got[i], combine(covering), rtol=1e-5)
            assert scored[how]["windows"].iloc[rows[i]] == np.isfinite(covering).sum()
    terms = scored["mean"][["reconstruction", "regulariser"]].sum(axis=1)
    np.testing.assert_allclose(terms, scored["mean"]["energy"], rtol=1e-5)  # the terms still sum to the energy


def test_anomalies_rank_above_normal_rows_with_every_window_score(series_bundle, scored):
    """Spikes, a level shift, another frequency and a flat line in machine m1, 12 rows each."""
    label = series_bundle["test"]["label"].to_numpy()
    for how, frame in scored.items():
        seen = frame["windows"].to_numpy() > 0
        auroc = roc_auc_score(label[seen], frame["energy"].to_numpy()[seen])
        assert auroc > 0.9, (how, auroc)


def test_daily_files_given_in_order_score_bit_for_bit_as_the_whole_file(series_bundle, scored, tmp_path):
    test = series_bundle["test"]
    days = [test.iloc[:700], test.iloc[700:701], test.iloc[701:1500], test.iloc[1500:]]  # cuts anywhere
    names = []
    for i, day in enumerate(days):
        names.append(tmp_path / f"day-{i}.csv")
        day.to_csv(names[-1], index=False)
    for how in ("last", "max"):
        result = run_cli("score", series_bundle["path"], *names, "-o", tmp_path / f"{how}.parquet",
                         "--window-score", how, "--quiet")
        assert result.returncode == 0, result.stderr
        split = pd.read_parquet(tmp_path / f"{how}.parquet")
        assert list(split["source"].unique()) == [n.name for n in names]
        whole = scored[how]
        assert np.array_equal(split["energy"].to_numpy(), whole["energy"].to_numpy(), equal_nan=True)
        assert np.array_equal(split["anomaly"].to_numpy(), whole["anomaly"].to_numpy())


def test_explanations_name_channel_and_lag_and_are_exact_shares(series_bundle, tmp_path):
    result = run_cli("score", series_bundle["path"], series_bundle["root"] / "test.csv", "-o", tmp_path / "x.csv",
                     "--explain", "3", "--quiet")
    assert result.returncode == 0, result.stderr
    frame = pd.read_csv(tmp_path / "x.csv")
    worst = frame.loc[frame["energy"].idxmax()]
    assert worst["feature_1"].split("@t")[0] in ("vibration", "temperature", "load")
    assert worst["share_1"] >= worst["share_2"] >= worst["share_3"] > 0
    # the spike (rows 200..211 of m1) is explained by vibration at a lag inside the spike
    spike = frame[(frame["machine"] == "m1") & (series_bundle["test"]["label"] == 1)].iloc[:12]
    assert (spike["feature_1"].str.startswith("vibration@t")).mean() > 0.5
    assert frame["feature_1"][frame["windows"] == 0].isna().all()
    mean = run_cli("score", series_bundle["path"], series_bundle["root"] / "test.csv", "-o", tmp_path / "m.csv",
                   "--explain", "2", "--window-score", "mean")
    assert mean.returncode == 2 and "--explain names the cells of one window: use --window-score last or max" in mean.stderr


def test_standard_input_is_scored_as_rows_arrive(series_bundle, scored):
    """Each row's score comes out before the next row goes in (not at end of input), equal to the
    file's; end of input finishes cleanly with the latency on stderr."""
    lines = (series_bundle["root"] / "test.csv").read_bytes().splitlines(keepends=True)
    process = subprocess.Popen([sys.executable, "-m", "aeserve", "score", series_bundle["path"], "-", "-o", "-",
                                "--max-delay-ms", "0"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
    process.stdin.write(lines[0])
    received, latencies = [], []
    for line in lines[1:81]:
        started = time.perf_counter()
        process.stdin.write(line)
        process.stdin.flush()
        if not received:
            received.append(process.stdout.readline().decode())  # the header, with the first row
        received.append(process.stdout.readline().decode())
        latencies.append(time.perf_counter() - started)
    process.stdin.close()
    rest = process.stdout.read().decode()
    assert process.wait(timeout=60) == 0 and rest == ""
    stderr = process.stderr.read().decode()
    assert "scored 80 rows from standard input; latency row in -> score out: median" in stderr
    energy = pd.read_csv(io.StringIO("".join(received)))["energy"].to_numpy()
    np.testing.assert_allclose(energy, scored["last"]["energy"].to_numpy()[:80], rtol=1e-5, equal_nan=True)
    assert np.median(latencies) < 1.0  # seconds, subprocess included: a row does not wait for the end


def test_ctrl_c_on_a_stream_finishes_cleanly(series_bundle):
    """Ctrl-C while waiting for rows: the rows read so far were scored and written, the summary
    says so, exit 130, no traceback."""
    import signal

    lines = (series_bundle["root"] / "test.csv").read_bytes().splitlines(keepends=True)
    process = subprocess.Popen([sys.executable, "-m", "aeserve", "score", series_bundle["path"], "-", "-o", "-"],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    process.stdin.write(b"".join(lines[:41]))
    process.stdin.flush()
    written = [process.stdout.readline() for _ in range(41)]  # the header and the 40 rows' scores
    process.send_signal(signal.SIGINT)  # while it waits for more
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert "scored 40 rows from standard input" in err.decode() and "interrupted" in err.decode()
    assert "Traceback" not in err.decode() and written[-1].startswith(b"40,")


def test_series_mistakes_are_one_line_naming_what_to_do(series_bundle, tmp_path):
    test = series_bundle["test"]
    swapped = test.copy().iloc[:200]  # machine m1's rows 5 and 7 (1-based) trade times
    swapped.loc[4, "time"], swapped.loc[6, "time"] = swapped.loc[6, "time"], swapped.loc[4, "time"]
    swapped.to_csv(tmp_path / "swapped.csv", index=False)
    result = run_cli("score", series_bundle["path"], tmp_path / "swapped.csv", "-o", tmp_path / "o.csv")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "swapped.csv: row 7, column 'time': time" in result.stderr and "sort the file by time" in result.stderr
    test.drop(columns="machine").to_csv(tmp_path / "nogroup.csv", index=False)
    result = run_cli("score", series_bundle["path"], tmp_path / "nogroup.csv", "-o", tmp_path / "o.csv")
    assert result.returncode == 2 and "no column 'machine' (the model orders its series by it)" in result.stderr
    plain = run_cli("train", series_bundle["root"] / "train.csv", "--time-column", "time", "--out", tmp_path / "x")
    assert plain.returncode == 2 and "give --window W too" in plain.stderr
    conv = run_cli("train", series_bundle["root"] / "train.csv", "--arch", "conv1d", "--out", tmp_path / "x")
    assert conv.returncode == 2 and "--arch conv1d trains on windows of a series" in conv.stderr
    text = run_cli("train", series_bundle["root"] / "train.csv", "--window", "12", "--time-column", "time",
                   "--out", tmp_path / "x")
    assert text.returncode == 2 and "row 1, column 'machine': expected a number, got 'm1'; a series' channels are " \
        "numbers: make a text column the --group-column, or --drop it" in text.stderr
    odd = run_cli("train", series_bundle["root"] / "train.csv", "--window", "12", "--arch", "conv1d",
                  "--conv-channels", "4,8,8", "--time-column", "time", "--group-column", "machine", "--out", tmp_path / "x")
    assert odd.returncode == 2 and "needs a window divisible by 8, got 12" in odd.stderr


def test_calibrate_report_and_int8_take_a_series_file(series_bundle, tmp_path):
    """calibrate --labels scores the file's windows with the label of the row each ends at; the
    training file itself is refused; report pictures the windows."""
    import shutil

    bundle = tmp_path / "ae"
    shutil.copytree(series_bundle["path"], bundle)
    test = series_bundle["root"] / "test.csv"
    result = run_cli("calibrate", bundle, test, "--labels", "label", "--method", "f1")
    assert result.returncode == 0, result.stderr
    threshold = json.loads((bundle / "manifest.json").read_text())["threshold"]
    assert threshold["method"] == "f1" and threshold["provenance"]["rows"] == 2000 - 2 * 15
    assert threshold["provenance"]["recall"] > 0.6
    refused = run_cli("calibrate", bundle, series_bundle["root"] / "train.csv")
    assert refused.returncode == 2 and "rows" in refused.stderr and "was trained on" in refused.stderr
    report = run_cli("report", bundle, test, "--labels", "label", "-o", tmp_path / "report.html")
    assert report.returncode == 0 and "AUROC" in report.stderr, report.stderr


def test_conv1d_trains_on_windows_and_its_graphs_match_torch(tmp_path):
    """Temporal convolutions, every kind whose penalty or inference runs through them: the exact
    contractive penalty and the lvm's hand-written gradient both go through the 1x3 adjoints."""
    sensor_rows(600, 3, machines=("m1",)).drop(columns=["label", "machine"]).to_csv(tmp_path / "s.csv", index=False)
    for kind in ("cae", "lvm"):
        result = run_cli("train", tmp_path / "s.csv", "--window", "8", "--time-column", "time", "--arch", "conv1d",
                         "--conv-channels", "4,4", "--hidden", "16", "--latent", "3", "--kind", kind, "--epochs", "3",
                         "--out", tmp_path / kind, "--quiet")
        assert result.returncode == 0, result.stderr
        manifest = json.loads((tmp_path / kind / "manifest.json").read_text())
        assert manifest["architecture"]["arch"] == "conv1d" and manifest["architecture"]["image_shape"] == [3, 1, 8]
        windows = aeserve.load(tmp_path / kind, backend="onnxruntime").bundle.kept_rows()[1]
        onnx = aeserve.load(tmp_path / kind, backend="onnxruntime").energy(windows)["energy"]
        reference = aeserve.load(tmp_path / kind, backend="torch").energy(windows)["energy"]
        np.testing.assert_allclose(onnx, reference, rtol=1e-4, atol=1e-4)
