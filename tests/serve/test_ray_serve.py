"""``aeserve serve --engine ray``: the KServe v2 routes on Ray Serve replicas (a local Ray):
answers equal the API's, and the replicas share the requests (each answer names its replica)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import aeserve

from conftest import _free_port

pytest.importorskip("ray.serve")
pytest.importorskip("starlette")


def test_replicas_answer_like_the_api_and_share_the_requests(bundles, cancer):
    port = _free_port()
    log = tempfile.TemporaryFile(mode="w+")
    process = subprocess.Popen([sys.executable, "-m", "aeserve", "serve", str(bundles["ae"]), "--engine", "ray",
                                "--replicas", "2", "--port", str(port), "--max-delay-ms", "1"],
                               stdout=subprocess.DEVNULL, stderr=log, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 180
        while time.time() < deadline and process.poll() is None:
            try:
                if urllib.request.urlopen(f"{base}/v2/health/ready", timeout=2).status == 200:
                    break
            except OSError:
                time.sleep(1)
        else:
            log.seek(0)
            pytest.fail(f"Ray Serve did not start: {log.read()[-3000:]}")
        rows = np.ascontiguousarray(cancer["anomalies"][:6], np.float32)
        expected = aeserve.load(bundles["ae"]).score(rows)["energy"]
        body = json.dumps({"inputs": [{"name": "y", "datatype": "FP32", "shape": list(rows.shape),
                                       "data": rows.ravel().tolist()}]}).encode()

        def ask(_):
            request = urllib.request.Request(f"{base}/v2/models/ae/infer", data=body, method="POST")
            with urllib.request.urlopen(request, timeout=60) as response:
                answer = json.loads(response.read())
                energy = next(o for o in answer["outputs"] if o["name"] == "energy")["data"]
                return response.headers["x-aeserve-replica"], np.asarray(energy, np.float32)

        with ThreadPoolExecutor(8) as pool:
            # ready answers once one replica is up; on a slow machine the second starts later
            deadline = time.time() + 120
            while len({replica for replica, _ in pool.map(ask, range(16))}) < 2 and time.time() < deadline:
                time.sleep(0.5)
            answers = list(pool.map(ask, range(80)))
        for _, energy in answers:
            np.testing.assert_allclose(energy, expected, rtol=1e-5)
        spread = Counter(replica for replica, _ in answers)
        print(f"requests per replica: {dict(spread)}")
        assert len(spread) == 2 and min(spread.values()) >= 10, spread
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
