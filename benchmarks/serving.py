"""Serving benchmark: requests/s, rows/s and p50/p99 latency of ``aeserve serve`` with and
without dynamic batching, driven by the stock tritonclient from concurrent threads.

Usage: python benchmarks/serving.py [--clients 64] [--requests 40] [--rows 4] [--repeats 3]
It trains a small bundle on breast-cancer data first (seconds) unless --bundle is given.
Both servers run on this machine, one after the other, on the same bundle and requests.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_serving import Server  # noqa: E402  (the tests' subprocess server helper)


def _bundle(directory: Path) -> Path:
    from aeserve.tables import read_table
    from aeserve.train.config import ModelConfig
    from aeserve.train.demo import make_demo_data
    from aeserve.train.fit import FitConfig
    from aeserve.train.pipeline import train_bundle

    paths = make_demo_data(directory)
    table = read_table(paths["train"])
    train_bundle(table, directory / "bench", ModelConfig(kind="ae", n_features=30, hidden=(256, 64), latent=8),
                 FitConfig(epochs=20))
    return directory / "bench"


def _run(url: str, rows: np.ndarray, clients: int, requests: int, size: int) -> dict:
    import tritonclient.http as th

    latencies: list[float] = []

    def worker(index: int) -> None:
        client = th.InferenceServerClient(url)
        for i in range(requests):
            start = (index * requests + i) % (len(rows) - size)
            tensor = th.InferInput("y", [size, rows.shape[1]], "FP32")
            tensor.set_data_from_numpy(rows[start:start + size])
            began = time.perf_counter()
            client.infer("bench", [tensor])
            latencies.append(time.perf_counter() - began)

    began = time.perf_counter()
    with ThreadPoolExecutor(max_workers=clients) as pool:
        list(pool.map(worker, range(clients)))
    seconds = time.perf_counter() - began
    total = clients * requests
    return {"req_per_s": total / seconds, "rows_per_s": total * size / seconds,
            "p50_ms": 1e3 * float(np.percentile(latencies, 50)), "p99_ms": 1e3 * float(np.percentile(latencies, 99))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--requests", type=int, default=40)
    parser.add_argument("--rows", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    bundle = args.bundle or _bundle(Path(tempfile.mkdtemp(prefix="serve-bench-")))
    rows = np.random.default_rng(0).normal(size=(10_000, 30)).astype(np.float32)
    modes = {"dynamic batching (max 1024 rows, 2 ms)": ["--max-batch", "1024", "--max-delay-ms", "2"],
             "no batching (--max-batch 1)": ["--max-batch", "1"]}
    results = {}
    for label, flags in modes.items():
        server = Server(str(bundle), *flags, "--max-queue-rows", "1000000")
        try:
            _run(server.url, rows, 8, 5, args.rows)  # warm-up
            runs = [_run(server.url, rows, args.clients, args.requests, args.rows) for _ in range(args.repeats)]
        finally:
            server.stop()
        results[label] = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    print(f"{args.clients} clients x {args.requests} requests x {args.rows} rows, median of {args.repeats}")
    for label, r in results.items():
        print(f"{label:40s} {r['req_per_s']:8.0f} req/s {r['rows_per_s']:9.0f} rows/s "
              f"p50 {r['p50_ms']:6.1f} ms  p99 {r['p99_ms']:6.1f} ms")
    a, b = results.values()
    print(f"ratio batching / none: {a['req_per_s'] / b['req_per_s']:.2f}x requests/s")


if __name__ == "__main__":
    main()
