"""A series bundle served: windows [n, W, C] statelessly, and sequences as Triton's sequence
batcher keeps them (stock tritonclient over HTTP and gRPC), bounded, and across a reload."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest

import aeserve
from aeserve.manifest import WindowSpec
from aeserve.serve.model_server import ModelServer, ServerConfig
from aeserve.serve.protocol import RequestError, SequenceRef

from conftest import Server, _free_port, run_cli


@pytest.fixture(scope="module")
def whole_file(series_bundle, tmp_path_factory):
    """The test file scored by ``aeserve score`` (window ending at each row): the reference."""
    out = tmp_path_factory.mktemp("series-serving") / "scores.parquet"
    result = run_cli("score", series_bundle["path"], series_bundle["root"] / "test.csv", "-o", out, "--quiet")
    assert result.returncode == 0, result.stderr
    return pd.read_parquet(out)


@pytest.fixture(scope="module")
def server(series_bundle):
    port = _free_port()
    served = Server(str(series_bundle["path"]), "--grpc-port", str(port), "--max-sequences", "3",
                    "--sequence-idle-timeout", "2")
    served.grpc_url = f"127.0.0.1:{port}"
    yield served
    served.stop()


def _machine(series_bundle, machine: str):
    test = series_bundle["test"]
    rows = np.flatnonzero(test["machine"].to_numpy() == machine)
    return rows, test[["vibration", "temperature", "load"]].to_numpy(np.float32)[rows]


@pytest.mark.parametrize("transport", ["http", "grpc"])
def test_a_sequence_scores_each_row_as_the_whole_file_does(series_bundle, whole_file, server, transport):
    """Machine m1's rows sent 7 at a time as sequence 11 (times too): each answer holds the
    energies of its rows, those of the file's rows within float32 batching noise."""
    if transport == "http":
        import tritonclient.http as client_module
        url = server.url
    else:
        import tritonclient.grpc as client_module
        url = server.grpc_url
    client = client_module.InferenceServerClient(url)
    rows, values = _machine(series_bundle, "m1")
    times = series_bundle["test"]["time"].to_numpy()[rows].astype("datetime64[ns]").astype(np.int64) / 1e9
    energies, windows = [], []
    for start in range(0, 300, 7):
        y = client_module.InferInput("y", [len(values[start:start + 7]), 3], "FP32")
        y.set_data_from_numpy(values[start:start + 7])
        t = client_module.InferInput("time", [len(values[start:start + 7])], "FP64")
        t.set_data_from_numpy(times[start:start + 7])
        answer = client.infer("ae", [y, t], sequence_id=11, sequence_start=start == 0, sequence_end=start + 7 >= 300)
        energies.append(answer.as_numpy("energy"))
        windows.append(answer.as_numpy("windows"))
    energies, windows = np.concatenate(energies), np.concatenate(windows)
    expected = whole_file["energy"].to_numpy()[rows[:len(energies)]]
    assert np.isnan(energies[:15]).all() and (windows[:15] == 0).all() and (windows[15:] == 1).all()
    np.testing.assert_allclose(energies[15:], expected[15:], rtol=1e-5, atol=1e-6)
    # sequence_end closed it: the next request without sequence_start is refused, saying why
    y = client_module.InferInput("y", [2, 3], "FP32")
    y.set_data_from_numpy(values[:2])
    with pytest.raises(Exception, match=r"sequence 11 is not open \(ended \(sequence_end\)\)"):
        client.infer("ae", [y], sequence_id=11)


def test_windows_are_scored_without_state(series_bundle, whole_file, server):
    import tritonclient.http as httpclient

    rows, values = _machine(series_bundle, "m2")
    windows = np.stack([values[i - 15:i + 1] for i in range(15, 60)])  # (n, W, C): rows of each window
    client = httpclient.InferenceServerClient(server.url)
    y = httpclient.InferInput("y", list(windows.shape), "FP32")
    y.set_data_from_numpy(windows)
    answer = client.infer("ae", [y])
    np.testing.assert_allclose(answer.as_numpy("energy"), whole_file["energy"].to_numpy()[rows[15:60]], rtol=1e-5)
    wrong = httpclient.InferInput("y", [4, 3], "FP32")  # rows without a sequence_id
    wrong.set_data_from_numpy(values[:4])
    with pytest.raises(Exception, match=r"shape \[4, 3\], expected \[-1, 16, 3\]"):
        client.infer("ae", [wrong])


def test_sequences_are_bounded_and_a_closed_one_is_refused_never_scored(series_bundle, server):
    """--max-sequences 3: opening a fourth closes the least recently used; --sequence-idle-timeout 2."""
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(server.url)
    _, values = _machine(series_bundle, "m2")

    def send(ident, start=False):
        y = httpclient.InferInput("y", [3, 3], "FP32")
        y.set_data_from_numpy(values[:3])
        return client.infer("ae", [y], sequence_id=ident, sequence_start=start)

    for ident in (101, 102, 103, 104):
        send(ident, start=True)
    with pytest.raises(Exception, match=r"sequence 101 is not open \(closed to open another: --max-sequences 3"):
        send(101)
    send(104)
    with pytest.raises(Exception, match="sequence 555 is not open \\(never started\\)"):
        send(555)
    time.sleep(2.5)
    with pytest.raises(Exception, match=r"sequence 104 is not open \(closed after 2 s idle\)"):
        send(104)
    assert "Traceback" not in server.log()


def test_open_sequences_survive_a_reload_only_when_the_window_is_unchanged(series_bundle):
    """A bundle reloaded in place keeps its sequences' rows if it cuts the same windows."""
    model = aeserve.load(series_bundle["path"], backend="onnxruntime")
    served = ModelServer({"ae": model}, ServerConfig(max_batch=0))
    _, values = _machine(series_bundle, "m1")
    ref = SequenceRef(7, start=True)
    served.sequences["ae"].append(ref, values[:20])
    served.install("ae", model)  # the same window: the sequence goes on
    found = served.sequences["ae"].append(SequenceRef(7), values[20:22])
    assert found.ends.tolist() == [0, 1]  # both rows end a full window: the 20 rows before were kept
    other = aeserve.load(series_bundle["path"], backend="onnxruntime")
    other.window = WindowSpec(size=8, channels=model.window.channels)  # as if retrained with --window 8
    served.install("ae", other)
    with pytest.raises(RequestError, match=r"sequence 7 is not open \(never started\)"):
        served.sequences["ae"].append(SequenceRef(7), values[22:24])
