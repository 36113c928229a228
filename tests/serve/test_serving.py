"""The KServe v2 server with the real tritonclient, a bounded load test, and bad requests."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import onnx
import pytest

import aeserve

from conftest import Server

th = pytest.importorskip("tritonclient.http")


@pytest.fixture(scope="module")
def server(bundles):
    srv = Server(str(bundles["ae"]), str(bundles["vae"]), "--max-batch", "256", "--max-delay-ms", "5")
    yield srv
    srv.stop()


def _input(rows: np.ndarray, binary: bool, name: str = "y"):
    tensor = th.InferInput(name, list(rows.shape), "FP32")
    tensor.set_data_from_numpy(rows, binary_data=binary)
    return tensor


@pytest.mark.parametrize("binary", [True, False])
@pytest.mark.parametrize("kind", ["ae", "vae"])
def test_tritonclient_inference_matches_the_api(server, bundles, cancer, kind, binary):
    client = th.InferenceServerClient(server.url)
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready(kind)
    rows = np.concatenate([cancer["test_normal"][:20], cancer["anomalies"][:20]])
    outputs = None if binary else [th.InferRequestedOutput(n, binary_data=False)
                                   for n in ("energy", "reconstruction", "regulariser", "p_value", "anomaly")]
    result = client.infer(kind, [_input(rows, binary)], outputs=outputs)
    expected = aeserve.load(bundles[kind]).score(rows)
    for name, values in expected.items():
        np.testing.assert_array_equal(result.as_numpy(name), values)


def test_metadata_encode_decode_sample(server, bundles, cancer):
    client = th.InferenceServerClient(server.url)
    meta = client.get_model_metadata("vae")
    assert [o["name"] for o in meta["outputs"]] == ["energy", "reconstruction", "regulariser", "p_value",
                                                    "anomaly", "contributions"]  # the last only when asked for
    assert meta["outputs"][3] == {"name": "p_value", "datatype": "FP64", "shape": [-1]}
    assert meta["inputs"] == [{"name": "y", "datatype": "FP32", "shape": [-1, 30]}]
    assert [o["name"] for o in client.get_model_metadata("vae-encode")["outputs"]] == ["mu", "logvar"]
    model = aeserve.load(bundles["vae"])
    rows = cancer["anomalies"][:7]
    mu = client.infer("vae-encode", [_input(rows, True)]).as_numpy("mu")
    np.testing.assert_array_equal(mu, model.encode(rows))
    decoded = client.infer("vae-decode", [_input(mu, True, "z")]).as_numpy("y_tilde")
    np.testing.assert_array_equal(decoded, model.decode(mu))
    n = th.InferInput("n", [1], "INT64")
    n.set_data_from_numpy(np.array([5], dtype=np.int64))
    seed = th.InferInput("seed", [1], "INT64")
    seed.set_data_from_numpy(np.array([3], dtype=np.int64))
    np.testing.assert_array_equal(client.infer("vae-sample", [n, seed]).as_numpy("y"), model.sample(5, seed=3))


def test_bounded_load_test_has_no_errors_and_batches_requests(server, bundles, cancer):
    clients, per_client = 64, 8
    expected = aeserve.load(bundles["ae"]).score(cancer["anomalies"])["energy"]
    errors, answered = [], []

    def worker(index: int) -> None:
        client = th.InferenceServerClient(server.url)
        rng = np.random.default_rng(index)
        for _ in range(per_client):
            start = int(rng.integers(0, len(cancer["anomalies"]) - 8))
            size = int(rng.integers(1, 9))
            try:
                got = client.infer("ae", [_input(cancer["anomalies"][start:start + size], True)]).as_numpy("energy")
                # coalesced with other requests, a row may land in another GEMM block: 1-ulp differences
                np.testing.assert_allclose(got, expected[start:start + size], rtol=1e-5)
                answered.append(size)
            except Exception as exc:  # collected and asserted below
                errors.append(repr(exc))

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=clients) as pool:
        list(pool.map(worker, range(clients)))
    seconds = time.perf_counter() - started
    assert errors == []
    assert len(answered) == clients * per_client
    text = urllib.request.urlopen(f"http://{server.url}/metrics").read().decode()
    count = next(float(line.split()[-1]) for line in text.splitlines()
                 if line.startswith('aeserve_batch_rows_count{model="ae"}'))
    assert count < clients * per_client, "concurrent requests were never coalesced"
    print(f"load test: {len(answered)} requests, {sum(answered)} rows in {seconds:.2f}s, "
          f"{len(answered) / seconds:.0f} req/s, {count:.0f} backend calls")


def test_bad_requests_get_protocol_errors(server):
    status, body = server.post("/v2/models/ae/infer", b'{"inputs": [')
    assert status == 400 and "not valid JSON" in body["error"]
    good = {"name": "y", "datatype": "FP32", "shape": [1, 30], "data": [0.0] * 30}
    for change, text in [({"shape": [1, 29], "data": [0.0] * 29}, "expected [-1, 30]"),
                         ({"datatype": "FP64"}, "expected FP32"),
                         ({"data": [0.0] * 5}, "5 values for shape"),
                         ({"name": "x"}, "has no input 'x'"),
                         ({"data": ["a"] * 30}, "does not hold FP32")]:
        status, body = server.post("/v2/models/ae/infer", json.dumps({"inputs": [{**good, **change}]}).encode())
        assert status == 400 and text in body["error"], body
    status, body = server.post("/v2/models/nope/infer", json.dumps({"inputs": [good]}).encode())
    assert status == 404 and "unknown model 'nope'" in body["error"]
    status, body = server.post("/v2/models/ae/infer", json.dumps({"inputs": [good], "outputs": [{"name": "q"}]}).encode())
    assert status == 400 and "no output 'q'" in body["error"]


def test_limits_queue_and_graceful_shutdown(bundles):
    srv = Server(str(bundles["ae"]), "--max-body-mb", "0.05", "--max-queue-rows", "8", "--max-delay-ms", "800")
    try:
        big = {"inputs": [{"name": "y", "datatype": "FP32", "shape": [500, 30], "data": [1.0] * 15000}]}
        status, body = srv.post("/v2/models/ae/infer", json.dumps(big).encode())
        assert status == 413 and "max-body-mb" in body["error"]
        eight = json.dumps({"inputs": [{"name": "y", "datatype": "FP32", "shape": [8, 30],
                                        "data": [1.0] * 240}]}).encode()
        first: dict = {}
        thread = threading.Thread(target=lambda: first.update(result=srv.post("/v2/models/ae/infer", eight)))
        thread.start()
        time.sleep(0.3)  # the first request now waits in the batcher for company
        status, body = srv.post("/v2/models/ae/infer", eight)
        assert status == 503 and "busy" in body["error"]
        time.sleep(0.1)
        srv.process.send_signal(signal.SIGINT)  # shutdown while the first request is in flight
        thread.join(timeout=30)
        assert first["result"][0] == 200 and len(first["result"][1]["outputs"][0]["data"]) == 8
        assert srv.process.wait(timeout=30) == 0
    finally:
        srv.process.kill()


def _model_config_module():
    import tritonclient
    path = os.path.join(os.path.dirname(tritonclient.__file__), "grpc", "model_config_pb2.py")
    spec = importlib.util.spec_from_file_location("triton_model_config_pb2", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # the protobuf module alone, without tritonclient.grpc's grpcio
    return module


@pytest.mark.parametrize("kind", ["ae", "vae"])
def test_triton_repository_configs_parse_and_match_the_graphs(bundles, tmp_path, kind):
    from google.protobuf import text_format

    from conftest import run_cli

    result = run_cli("export", bundles[kind], "--format", "triton", "--out", tmp_path / "repo")
    assert result.returncode == 0, result.stderr
    model_config = _model_config_module()
    for graph in ("encoder", "decoder", "energy"):
        folder = tmp_path / "repo" / f"{kind}-{graph}"
        config = text_format.Parse((folder / "config.pbtxt").read_text(), model_config.ModelConfig())
        proto = onnx.load(str(folder / "1" / "model.onnx"))
        assert config.name == folder.name and config.platform == "onnxruntime_onnx"
        assert config.max_batch_size == 8192 and config.HasField("dynamic_batching")
        assert [i.name for i in config.input] == [i.name for i in proto.graph.input]
        assert [o.name for o in config.output] == [o.name for o in proto.graph.output]
        for declared, actual in zip([*config.input, *config.output], [*proto.graph.input, *proto.graph.output]):
            dims = [d.dim_value for d in actual.type.tensor_type.shape.dim[1:]]
            shape = list(declared.reshape.shape) if declared.HasField("reshape") else list(declared.dims)
            assert shape == dims, (declared.name, shape, dims)


def test_contributions_come_back_when_a_request_asks_for_them(server, bundles, cancer):
    rows = np.ascontiguousarray(cancer["anomalies"][:7])
    client = th.InferenceServerClient(server.url)
    result = client.infer("ae", [_input(rows, True)],
                          outputs=[th.InferRequestedOutput("contributions"), th.InferRequestedOutput("energy")])
    expected = aeserve.load(bundles["ae"]).explain(rows)
    np.testing.assert_allclose(result.as_numpy("contributions"), expected["contributions"], rtol=1e-5)
    np.testing.assert_allclose(result.as_numpy("energy"), expected["energy"], rtol=1e-5)
    plain = client.infer("ae", [_input(rows, True)])  # not asked for: not sent
    assert plain.as_numpy("contributions") is None and plain.as_numpy("anomaly") is not None
    outputs = [o["name"] for o in client.get_model_metadata("ae")["outputs"]]
    assert outputs[-1] == "contributions"


def test_metrics_histograms_request_ids_and_one_json_line_per_error(server, cancer):
    rows = np.ascontiguousarray(cancer["anomalies"][:5], np.float32)
    body = json.dumps({"inputs": [{"name": "y", "datatype": "FP32", "shape": [5, 30],
                                   "data": rows.ravel().tolist()}]}).encode()
    request = urllib.request.Request(f"{server.base}/v2/models/ae/infer", data=body, method="POST",
                                     headers={"X-Request-Id": "job-42.part-7"})
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.headers["x-request-id"] == "job-42.part-7"
    bad = urllib.request.Request(f"{server.base}/v2/models/ae/infer", data=b'{"inputs": 3}', method="POST")
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(bad, timeout=30)
    generated = caught.value.headers["x-request-id"]
    assert len(generated) == 32  # a fresh id when the client gave none
    text = urllib.request.urlopen(f"{server.base}/metrics", timeout=10).read().decode()
    for family in ("aeserve_queue_seconds", "aeserve_compute_seconds", "aeserve_request_bytes", "aeserve_batch_rows"):
        assert f'{family}_count{{model="ae"}}' in text, family
    lines = [json.loads(line.split(" ", 3)[3]) for line in server.log().splitlines() if "request_failed" in line]
    mine = [entry for entry in lines if entry["request_id"] == generated]
    assert len(mine) == 1 and mine[0]["status"] == "400" and "'inputs' list" in mine[0]["error"]
