"""A mixed bundle served over KServe v2: one input tensor per column (BYTES for text), over
HTTP (JSON and the binary extension) and gRPC, with the stock tritonclient."""

from __future__ import annotations

import json
import socket
import urllib.request

import numpy as np
import pandas as pd
import pytest

import aeserve

from conftest import Server

th = pytest.importorskip("tritonclient.http")
tg = pytest.importorskip("tritonclient.grpc")


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def served(mixed_bundle):
    grpc_port = _port()
    server = Server(str(mixed_bundle["path"]), "--grpc-port", str(grpc_port), "--backend", "onnxruntime")
    yield server, grpc_port
    server.stop()


def _frame(mixed_bundle):
    return mixed_bundle["anomalies"].head(8).reset_index(drop=True)


def _datatype(column) -> str:
    if pd.api.types.is_bool_dtype(column):
        return "BOOL"
    return "FP32" if pd.api.types.is_numeric_dtype(column) else "BYTES"


def _json_inputs(frame, shape) -> list[dict]:
    return [{"name": n, "datatype": _datatype(frame[n]), "shape": shape(len(frame)),
             "data": [None if isinstance(v, float) and v != v else v for v in frame[n].tolist()]} for n in frame.columns]


def _numpy_inputs(module, frame):
    inputs = []
    for name in frame.columns:
        column = frame[name]
        datatype = _datatype(column)
        if datatype == "BYTES":
            array = np.array([str(v) for v in column], dtype=object)
        elif datatype == "BOOL":
            array = column.to_numpy()
        else:
            array = column.to_numpy(np.float32)  # NaN: a missing cell
        tensor = module.InferInput(name, [len(array)], datatype)
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    return inputs


def test_json_columns_with_nulls_give_the_api_s_energies(served, mixed_bundle):
    server, _ = served
    frame = _frame(mixed_bundle)
    expected = aeserve.load(mixed_bundle["path"], backend="onnxruntime").energy(frame)["energy"]
    inputs = _json_inputs(frame, lambda n: [n, 1])
    status, body = server.post(f"/v2/models/{mixed_bundle['path'].name}/infer", json.dumps({"inputs": inputs}).encode())
    assert status == 200, body
    np.testing.assert_allclose(body["outputs"][0]["data"], expected, rtol=1e-5)
    with urllib.request.urlopen(f"{server.base}/v2/models/{mixed_bundle['path'].name}") as response:
        metadata = json.loads(response.read())
    assert [(t["name"], t["datatype"]) for t in metadata["inputs"]] == [
        ("age", "FP32"), ("home", "BYTES"), ("income", "FP32"), ("member", "BOOL"), ("job", "BYTES")]


def test_stock_tritonclient_over_http_binary_and_grpc(served, mixed_bundle):
    server, grpc_port = served
    frame = _frame(mixed_bundle)
    name = mixed_bundle["path"].name
    expected = aeserve.load(mixed_bundle["path"], backend="onnxruntime").energy(frame)["energy"]
    http = th.InferenceServerClient(server.url)
    got = http.infer(name, _numpy_inputs(th, frame), outputs=[th.InferRequestedOutput("energy", binary_data=True)])
    np.testing.assert_allclose(got.as_numpy("energy"), expected, rtol=1e-5)
    grpc = tg.InferenceServerClient(f"127.0.0.1:{grpc_port}")
    np.testing.assert_allclose(grpc.infer(name, _numpy_inputs(tg, frame)).as_numpy("energy"), expected, rtol=1e-5)
    # decoded rows come back as one tensor per column, category names as BYTES
    n = tg.InferInput("n", [1], "INT64")
    n.set_data_from_numpy(np.array([3], dtype=np.int64))
    sampled = grpc.infer(f"{name}-sample", [n])
    assert set(sampled.as_numpy("home").tolist()) <= {b"rent", b"mortgage, fixed", b"owner", b"(other)"}
    assert sampled.as_numpy("member").dtype == np.bool_


def test_a_bad_column_is_a_400_naming_the_input(served, mixed_bundle):
    server, _ = served
    frame = _frame(mixed_bundle)
    name = mixed_bundle["path"].name

    def post(**changes):
        inputs = _json_inputs(frame, lambda n: [n])
        for item in inputs:
            item.update(changes.get(item["name"], {}))
        return server.post(f"/v2/models/{name}/infer", json.dumps({"inputs": inputs}).encode())

    status, body = post(age={"data": ["old"] + [30.0] * 7})
    assert status == 400 and "input 'age'" in body["error"]
    status, body = post(member={"datatype": "INT64", "data": [2] * 8})
    assert status == 400 and "column 'member': expected true or false" in body["error"]
    status, body = post(job={"shape": [3], "data": ["fixed"] * 3})
    assert status == 400 and "different numbers of rows" in body["error"]


def test_concurrent_table_requests_are_batched_and_each_gets_its_own_rows(served, mixed_bundle):
    """The score endpoint encodes each request's columns and joins the rows of concurrent
    requests in one batch: every answer must hold exactly its own rows' energies."""
    from concurrent.futures import ThreadPoolExecutor

    server, _ = served
    frame = mixed_bundle["anomalies"].head(64).reset_index(drop=True)
    expected = aeserve.load(mixed_bundle["path"], backend="onnxruntime").energy(frame)["energy"]
    parts = [frame.iloc[i * 4:(i + 1) * 4 + i % 3] for i in range(15)]

    def ask(part):
        body = json.dumps({"inputs": _json_inputs(part, lambda n: [n])}).encode()
        return server.post(f"/v2/models/{mixed_bundle['path'].name}/infer", body)

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(ask, parts))
    for part, (status, body) in zip(parts, answers):
        assert status == 200, body
        np.testing.assert_allclose(body["outputs"][0]["data"], expected[part.index], rtol=1e-5)
