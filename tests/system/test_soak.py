"""Soak: ten minutes (AESERVE_SOAK_SECONDS) of mixed valid and invalid traffic against
``aeserve serve`` with two bundles; every valid answer is checked against
``aeserve.load().score``; no answer is lost or wrong, and the server's memory stays flat."""

from __future__ import annotations

import http.client
import json
import os
import random
import threading
import time
from collections import Counter

import numpy as np
import pytest

import aeserve

from conftest import Server

pytest.importorskip("uvicorn")
SECONDS = float(os.environ.get("AESERVE_SOAK_SECONDS", "600"))
CLIENTS = 8


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmRSS:")) / 1024


def _requests(cancer, bundles):
    """Valid requests with their expected energies, and invalid ones with their expected status."""
    rng = np.random.default_rng(0)
    pool = np.concatenate([cancer["test_normal"], cancer["anomalies"]])
    valid = []
    for name in ("ae", "vae"):
        model = aeserve.load(bundles[name])
        for _ in range(100):
            rows = pool[rng.integers(0, len(pool), rng.integers(1, 65))]
            energy = model.score(rows)["energy"]
            binary = bool(rng.integers(0, 2))
            tensor = {"name": "y", "datatype": "FP32", "shape": list(rows.shape)}
            if binary:
                head = json.dumps({"inputs": [{**tensor, "parameters": {"binary_data_size": rows.nbytes}}],
                                   "outputs": [{"name": "energy"}]}).encode()
                body, headers = head + rows.tobytes(), {"Inference-Header-Content-Length": str(len(head))}
            else:
                body = json.dumps({"inputs": [{**tensor, "data": rows.ravel().tolist()}]}).encode()
                headers = {}
            valid.append((f"/v2/models/{name}/infer", body, headers, energy))
    nan_rows = pool[:2].copy()
    nan_rows[1, 3] = np.nan
    invalid = [
        ("/v2/models/ae/infer", b"{not json", {}, 400),
        ("/v2/models/ae/infer", json.dumps({"inputs": [{"name": "y", "datatype": "FP32", "shape": [1, 29],
                                                         "data": [1.0] * 29}]}).encode(), {}, 400),
        ("/v2/models/ae/infer", json.dumps({"inputs": [{"name": "y", "datatype": "FP32", "shape": [2, 30],
                                                         "data": [None if np.isnan(v) else float(v)
                                                                  for v in nan_rows.ravel()]}]}).encode(), {}, 400),
        ("/v2/models/nope/infer", b"{}", {}, 404),
        ("/v2/models/vae/infer", b'{"inputs": []}', {"Inference-Header-Content-Length": "999"}, 400),
        ("/v2/models/vae-sample/infer", json.dumps({"inputs": [{"name": "n", "datatype": "INT64", "shape": [1],
                                                                  "data": [10**9]}]}).encode(), {}, 400),
    ]
    return valid, invalid


@pytest.mark.slow
def test_soak_mixed_traffic_loses_nothing_and_memory_stays_flat(bundles, cancer):
    valid, invalid = _requests(cancer, bundles)
    srv = Server(str(bundles["ae"]), str(bundles["vae"]), "--max-body-mb", "1")
    counts: Counter = Counter()
    problems: list[str] = []
    lock = threading.Lock()
    warm = threading.Event()
    deadline = time.time() + SECONDS

    def client(seed: int) -> None:
        rng = random.Random(seed)
        connection = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=30)
        while time.time() < deadline:
            if rng.random() < 0.05:  # now and then a fresh connection
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=30)
            is_valid = rng.random() < 0.8
            path, body, headers, expected = rng.choice(valid if is_valid else invalid)
            try:
                connection.request("POST", path, body=body, headers=headers)
                response = connection.getresponse()
                raw = response.read()
            except (OSError, http.client.HTTPException) as exc:
                with lock:
                    counts["lost"] += 1
                    problems.append(f"{path}: {exc!r}")
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=30)
                continue
            with lock:
                counts["requests"] += 1
                counts[f"{response.status}"] += 1
            if is_valid:
                ok = response.status == 200
                if ok:
                    length = response.getheader("Inference-Header-Content-Length")
                    answer = json.loads(raw[:int(length)] if length else raw)
                    energy = answer["outputs"][0]
                    got = (np.frombuffer(raw[int(length):], np.float32) if "binary_data_size" in
                           energy.get("parameters", {}) else np.asarray(energy["data"], np.float32))
                    ok = got.shape == expected.shape and np.allclose(got, expected, rtol=1e-4, atol=1e-4)
                if not ok:
                    with lock:
                        counts["mismatched"] += 1
                        problems.append(f"{path}: {response.status} {raw[:200]!r}")
            elif response.status != expected or "error" not in json.loads(raw):
                with lock:
                    counts["wrong error"] += 1
                    problems.append(f"{path}: {response.status} {raw[:200]!r}")
            if counts["requests"] >= 2000:
                warm.set()
        connection.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
    try:
        for thread in threads:
            thread.start()
        warm.wait(timeout=SECONDS)
        start_rss, started = _rss_mb(srv.process.pid), time.time()
        for thread in threads:
            thread.join()
        end_rss = _rss_mb(srv.process.pid)
    finally:
        srv.stop()
    print(f"\nsoak {SECONDS:.0f} s, {CLIENTS} clients: {counts['requests']:,} requests "
          f"({counts['requests'] / SECONDS:,.0f}/s); by status {dict(sorted((k, v) for k, v in counts.items() if k.isdigit()))}; "
          f"lost {counts['lost']}, mismatched {counts['mismatched']}, wrong error {counts['wrong error']}; "
          f"RSS {start_rss:.0f} MB after warm-up -> {end_rss:.0f} MB at the end "
          f"({(end_rss / start_rss - 1) * 100:+.1f}% over {time.time() - started:.0f} s)")
    assert problems == []
    assert counts["requests"] > 0 and end_rss <= start_rss * 1.10
