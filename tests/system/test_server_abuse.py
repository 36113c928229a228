"""The server under abuse: schemathesis over its OpenAPI document, hostile and broken
clients, memory bounded by the in-flight limit, bearer tokens and TLS."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import ssl
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from conftest import Server, self_signed_certificate

pytest.importorskip("uvicorn")
schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402

FEATURES = 30


@pytest.fixture(scope="module")
def server(bundles):
    srv = Server(str(bundles["ae"]), str(bundles["vae"]), "--max-body-mb", "4", "--max-inflight-mb", "64")
    yield srv
    srv.stop()


def _no_leak(text: str, srv: Server) -> None:
    """No stack trace and no file-system path in what a client sees."""
    assert "Traceback" not in text and 'File "' not in text
    assert not re.search(r"/(tmp|root|home|usr|work)/", text), text


def test_schemathesis_finds_no_server_error_and_every_4xx_says_why(server):
    """Every operation of the served /openapi.json, fuzzed by schemathesis' strategies (driven
    by hypothesis directly: schemathesis' own pytest integration breaks on pytest 9.2)."""
    with urllib.request.urlopen(f"{server.base}/openapi.json", timeout=10) as response:
        schema = schemathesis.openapi.from_dict(json.loads(response.read()))
    calls = {"operations": 0, "requests": 0}

    for result in schema.get_all_operations():
        operation = result.ok()
        calls["operations"] += 1

        @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        @given(case=operation.as_strategy())
        def check(case) -> None:
            response = case.call(base_url=server.base, timeout=30)
            calls["requests"] += 1
            assert response.status_code < 500 or response.status_code == 503, (response.status_code, response.text)
            if 400 <= response.status_code < 600:
                assert isinstance(response.json().get("error"), str), response.text
            _no_leak(response.text, server)

        check()
    print(f"\nschemathesis: {calls['operations']} operations, {calls['requests']} requests")
    assert calls["operations"] == 10 and calls["requests"] >= 100


def _raw(srv: Server, payload: bytes, *, read: bool = True, timeout: float = 10.0) -> bytes:
    """Send ``payload`` on a fresh connection; return what the server answered (until close or timeout)."""
    with socket.create_connection(("127.0.0.1", srv.port), timeout=timeout) as sock:
        sock.sendall(payload)
        if not read:
            return b""
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
                if b"\r\n\r\n" in b"".join(chunks) and _complete(b"".join(chunks)):
                    break
        except TimeoutError:
            pass
        return b"".join(chunks)


def _complete(answer: bytes) -> bool:
    head, _, body = answer.partition(b"\r\n\r\n")
    found = re.search(rb"content-length: (\d+)", head, re.I)
    return found is not None and len(body) >= int(found.group(1))


def _status(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


def _healthy(srv: Server) -> None:
    body = json.dumps({"inputs": [{"name": "y", "datatype": "FP32", "shape": [1, FEATURES],
                                   "data": [1.0] * FEATURES}]}).encode()
    assert srv.post("/v2/models/ae/infer", body)[0] == 200
    assert "Traceback" not in srv.log() and "Exception in ASGI" not in srv.log()


def test_a_content_length_above_the_limit_is_413_before_the_body_is_sent(server):
    started = time.perf_counter()
    answer = _raw(server, b"POST /v2/models/ae/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                          b"Content-Length: 900000000\r\n\r\n")
    assert _status(answer) == 413 and b'"error"' in answer and b"max-body-mb" in answer
    assert time.perf_counter() - started < 5
    _healthy(server)


def test_lying_content_lengths_and_clients_that_vanish(server):
    body = json.dumps({"inputs": [{"name": "y", "datatype": "FP32", "shape": [1, FEATURES],
                                   "data": [1.0] * FEATURES}]}).encode()
    head = b"POST /v2/models/ae/infer HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
    _raw(server, head % (len(body) + 500) + body, read=False)           # promises more, then hangs up
    _raw(server, head % (len(body) + 500) + body, timeout=0.5)           # promises more, then waits
    answer = _raw(server, head % (len(body) - 10) + body)                # promises less: the rest is junk
    assert _status(answer) == 400 and b'"error"' in answer
    _raw(server, head % 4_000_000 + b"{" * 1000, read=False)             # leaves mid-body
    sample = json.dumps({"inputs": [{"name": "n", "datatype": "INT64", "shape": [1], "data": [60000]}]}).encode()
    for _ in range(5):                                                   # leaves mid-response
        _raw(server, head % len(sample) + sample, read=False)
    time.sleep(1.0)
    _healthy(server)


@pytest.mark.parametrize("request_body, header, expected", [
    ({"inputs": [{"name": "y", "datatype": "FP32", "shape": [1, FEATURES], "parameters": {"binary_data_size": 999}}]},
     True, "binary_data_size"),
    ({"inputs": [{"name": "y", "datatype": "FP32", "shape": [-1, FEATURES], "data": [1.0] * FEATURES}]}, False, "shape"),
    # orjson reads 10**30 as a float ("not a count"), json as an int ("values for shape"): both name the shape
    ({"inputs": [{"name": "y", "datatype": "FP32", "shape": [10**30, FEATURES], "data": [1.0] * FEATURES}]}, False,
     "shape"),
    ({"inputs": [{"name": "y", "datatype": "FP32", "shape": [2**62, 2**62], "data": [1.0]}]}, False, "shape"),
    ({"inputs": [{"name": "y", "datatype": "INT64", "shape": [1, FEATURES], "data": [1] * FEATURES}]}, False,
     "datatype"),
    ({"inputs": [{"name": "y", "datatype": "FP32", "shape": [1, FEATURES], "data": ["NaN"] * FEATURES}]}, False,
     "NaN"),
    ({"inputs": [{"name": "y", "datatype": "FP32", "shape": [1, FEATURES], "data": ["x"] * FEATURES}]}, False,
     "FP32"),
    ({"inputs": [{"name": "n", "datatype": "INT64", "shape": [1], "data": [2**80]}]}, False, "INT64"),
])
def test_malformed_tensors_get_a_400_saying_what(server, request_body, header, expected):
    model = "ae-sample" if request_body["inputs"][0]["name"] == "n" else "ae"
    head = json.dumps(request_body).encode()
    request = urllib.request.Request(f"{server.base}/v2/models/{model}/infer", data=head + (b"\0" * 8 if header else b""),
                                     headers={"Inference-Header-Content-Length": str(len(head))} if header else {},
                                     method="POST")
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=10)
    text = caught.value.read().decode()
    assert caught.value.code == 400 and expected in json.loads(text)["error"], text
    _no_leak(text, server)


def test_nan_in_binary_rows_is_a_400(server):
    rows = np.ones((3, FEATURES), np.float32)
    rows[2, 4] = np.nan
    head = json.dumps({"inputs": [{"name": "y", "datatype": "FP32", "shape": [3, FEATURES],
                                   "parameters": {"binary_data_size": rows.nbytes}}]}).encode()
    request = urllib.request.Request(f"{server.base}/v2/models/ae/infer", data=head + rows.tobytes(), method="POST",
                                     headers={"Inference-Header-Content-Length": str(len(head))})
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=10)
    assert caught.value.code == 400 and "row 3 holds NaN" in json.loads(caught.value.read())["error"]


def test_200_slow_clients_do_not_slow_16_normal_ones(server):
    slow = []
    for i in range(200):  # half stall inside the headers, half inside a promised body
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
        sock.sendall(b"POST /v2/models/ae/infer HTTP/1.1\r\nHost: x\r\n" if i % 2 else
                     b"POST /v2/models/ae/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n{\"inp")
        slow.append(sock)
    rows = np.random.default_rng(0).normal(size=(4, FEATURES)).astype(np.float32) + 10
    body = json.dumps({"inputs": [{"name": "y", "datatype": "FP32", "shape": [4, FEATURES],
                                   "data": rows.ravel().tolist()}]}).encode()

    def client(_) -> list[float]:
        times = []
        for _ in range(25):
            started = time.perf_counter()
            status, _answer = server.post("/v2/models/ae/infer", body)
            assert status == 200
            times.append(time.perf_counter() - started)
        return times

    try:
        with ThreadPoolExecutor(16) as pool:
            latencies = [t for times in pool.map(client, range(16)) for t in times]
    finally:
        for sock in slow:
            sock.close()
    p99 = float(np.percentile(latencies, 99))
    print(f"\n16 clients x 25 requests beside 200 slow connections: p50 {np.median(latencies) * 1e3:.1f} ms, "
          f"p99 {p99 * 1e3:.1f} ms")
    assert p99 < 1.0


def _rss_kb(pid: int, field: str = "VmRSS") -> int:
    with open(f"/proc/{pid}/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith(field + ":"))


async def _flood(port: int, body: bytes, head: bytes, count: int) -> list[int]:
    async def one() -> int:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(b"POST /v2/models/ae/infer HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                         b"Inference-Header-Content-Length: %d\r\nContent-Length: %d\r\n\r\n" % (len(head), len(body)))
            writer.write(body)
            await writer.drain()
        except (ConnectionError, OSError):
            pass  # refused before the whole body was sent: the answer may still be there to read
        try:
            answer = await reader.read()
        except (ConnectionError, OSError):
            answer = b""
        writer.close()
        return _status(answer) if answer else -1  # -1: the connection was reset after an early refusal
    return await asyncio.gather(*[one() for _ in range(count)])


@pytest.mark.parametrize("count", [pytest.param(1000, marks=pytest.mark.slow), 200])
def test_many_1mb_requests_in_flight_keep_memory_bounded(bundles, count):
    srv = Server(str(bundles["ae"]), "--max-inflight-mb", "64", "--max-connections", "2000")
    try:
        rows = np.random.default_rng(0).normal(size=(8738, FEATURES)).astype(np.float32)  # 1 MB of rows
        head = json.dumps({"inputs": [{"name": "y", "datatype": "FP32", "shape": list(rows.shape),
                                       "parameters": {"binary_data_size": rows.nbytes}}],
                           "outputs": [{"name": "energy", "parameters": {"binary_data": True}}]}).encode()
        _healthy(srv)
        before = _rss_kb(srv.process.pid)
        statuses = asyncio.run(_flood(srv.port, head + rows.tobytes(), head, count))
        peak = _rss_kb(srv.process.pid, "VmHWM")
        counts = {s: statuses.count(s) for s in sorted(set(statuses))}
        print(f"\n{count} x 1 MB requests at once: answers {counts}; server RSS {before / 1024:.0f} MB before, "
              f"peak {peak / 1024:.0f} MB (in-flight limit 64 MB)")
        assert set(counts) <= {200, 503} and counts.get(200, 0) >= 1
        assert (peak - before) / 1024 < 64 * 4 + 150  # bodies, their decoded rows and outputs: a few x the limit
        _healthy(srv)
    finally:
        srv.stop()


def test_bearer_token_and_tls(bundles, tmp_path, cancer):
    pytest.importorskip("cryptography")
    cert, key = self_signed_certificate(tmp_path)
    (tmp_path / "token").write_text("s3cret-token\n")
    context = ssl.create_default_context(cafile=str(cert))
    srv = Server(str(bundles["ae"]), "--token-file", str(tmp_path / "token"), "--ssl-certfile", str(cert),
                 "--ssl-keyfile", str(key), scheme="https", context=context)
    try:
        rows = cancer["test_normal"][:3]
        body = json.dumps({"inputs": [{"name": "y", "datatype": "FP32", "shape": [3, FEATURES],
                                       "data": rows.ravel().tolist()}]}).encode()

        def call(path: str, token: str | None, data: bytes | None = None) -> tuple[int, dict, dict]:
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            request = urllib.request.Request(f"{srv.base}{path}", data=data, headers=headers,
                                             method="POST" if data else "GET")
            try:
                with urllib.request.urlopen(request, timeout=10, context=context) as response:
                    return response.status, json.loads(response.read()), dict(response.headers)
            except urllib.error.HTTPError as exc:
                return exc.code, json.loads(exc.read()), dict(exc.headers)

        assert call("/v2/health/ready", None)[0] == 200  # probes need no token
        for token in (None, "wrong", "s3cret-toke"):
            status, answer, headers = call("/v2/models/ae/infer", token, body)
            assert status == 401 and "bearer token" in answer["error"] and headers.get("www-authenticate") == "Bearer"
            assert call("/v2/models/ae", token)[0] == 401 and call("/metrics", token)[0] == 401
        status, answer, _ = call("/v2/models/ae/infer", "s3cret-token", body)
        import aeserve
        expected = aeserve.load(bundles["ae"]).score(rows)["energy"]
        assert status == 200 and np.allclose(answer["outputs"][0]["data"], expected, rtol=1e-5)
        with pytest.raises(OSError):  # plain HTTP to the TLS port: no answer
            urllib.request.urlopen(f"http://{srv.url}/v2/health/ready", timeout=5)
    finally:
        srv.stop()


def test_binding_every_interface_without_a_token_warns(bundles):
    srv = Server(str(bundles["ae"]), "--host", "0.0.0.0")
    try:
        assert "without authentication" in srv.log()
    finally:
        srv.stop()


async def _asgi(app, method: str, path: str, body: bytes = b"") -> tuple[int, dict]:
    """One request through the ASGI app itself: (status, JSON body)."""
    sent, answer = [False], {"status": 0, "body": b""}

    async def receive():
        if sent[0]:
            await asyncio.sleep(3600)
        sent[0] = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message):
        if message["type"] == "http.response.start":
            answer["status"] = message["status"]
        elif message["type"] == "http.response.body":
            answer["body"] += message.get("body", b"")

    headers = [(b"content-length", str(len(body)).encode()), (b"content-type", b"application/json")]
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "path": path,
             "raw_path": path.encode(), "root_path": "", "scheme": "http", "query_string": b"", "headers": headers,
             "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80)}
    await app(scope, receive, send)
    return answer["status"], json.loads(answer["body"])


def test_an_unexpected_failure_is_a_500_without_details(bundles, monkeypatch):
    import aeserve
    from aeserve.serve.http import ServerConfig, create_app

    model = aeserve.load(bundles["ae"])

    def broken(*args, **kwargs):
        raise RuntimeError(f"secret detail in {bundles['ae']}")

    monkeypatch.setattr(model, "score", broken)
    app = create_app({"ae": model}, ServerConfig(max_batch=1))  # no batcher: no lifespan needed
    body = json.dumps({"inputs": [{"name": "y", "datatype": "FP32", "shape": [1, FEATURES],
                                   "data": [1.0] * FEATURES}]}).encode()
    assert asyncio.run(_asgi(app, "POST", "/v2/models/ae/infer", body)) == \
        (500, {"error": "internal error; the server log has the details"})
    for method, path, status in (("GET", "/nope", 404), ("GET", "/v2/models/ae/infer", 405)):
        got, answer = asyncio.run(_asgi(app, method, path))
        assert got == status and "error" in answer
