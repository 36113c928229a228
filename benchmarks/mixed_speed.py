"""Scoring speed of a mixed table against an all-numeric table of the same width, in one run
(issue 22, item 9): 1M rows x (10 numeric + 10 text columns) against 1M rows x 20 numeric
columns, from Parquet and from CSV, each scored by `aeserve score` in a fresh process (the
backend `auto` picks); rows/s, their ratio, and peak RSS at a quarter of the rows and at all
of them (flat memory: streaming must not grow with the file). Then the energy graphs alone, in
this process (ONNX Runtime on 65,536 encoded rows, batches of 2048, one and two threads): how
much of the gap is the graph and how much reading, encoding and writing.

Usage: python benchmarks/mixed_speed.py [--rows 1000000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

RUNNER = """
import sys
from aeserve.cli import main
try:
    main(sys.argv[1:])
except SystemExit as exc:
    assert exc.code in (0, None), exc.code
print(int(next(l for l in open("/proc/self/status") if l.startswith("VmHWM")).split()[1]) / 1024)
"""


def tables(rows: int, seed: int = 0):
    """(mixed, numeric) pyarrow tables of ``rows`` rows and 20 columns each."""
    import pyarrow as pa

    rng = np.random.default_rng(seed)
    numbers = {f"x{i}": rng.standard_normal(rows).astype(np.float32) for i in range(10)}
    words = np.array([f"category_{k:02d}" for k in range(20)], dtype=object)
    text = {f"t{i}": pa.array(words[rng.integers(0, 20, rows)].tolist(), pa.string()) for i in range(10)}
    more = {f"x{i}": rng.standard_normal(rows).astype(np.float32) for i in range(10, 20)}
    return pa.table({**numbers, **text}), pa.table({**numbers, **more})


def score_once(bundle: Path, data: Path, out: Path) -> tuple[float, float]:
    """(seconds, peak RSS MiB) of one `aeserve score` in a fresh process."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", RUNNER, "score", str(bundle), str(data), "-o", str(out), "--quiet"],
                          capture_output=True, text=True, check=True)
    return time.perf_counter() - started, float(done.stdout.strip().splitlines()[-1])


def graph_rows_per_second(bundle: Path, rows: np.ndarray, threads: int, repeats: int, batch: int = 2048) -> float:
    """Rows/s of ``bundle``'s energy graph on ``rows`` (the graph's input), best of ``repeats``."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(bundle / "energy.onnx"), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        for i in range(0, len(rows), batch):
            session.run(None, {name: rows[i:i + batch]})
        best = min(best, time.perf_counter() - started)
    return len(rows) / best


def graph_table(root: Path, repeats: int) -> None:
    """The energy graphs alone: the mixed bundle's on its encoded rows, the numeric one's on its rows."""
    import aeserve
    from aeserve.columns import TableEncoding

    mixed, numeric = tables(65_536, seed=2)
    encoding = TableEncoding.of(aeserve.load(root / "mixed-ae", backend="onnxruntime").bundle.manifest.input)
    inputs = {"mixed": encoding.encode_rows(mixed),
              "numeric": np.stack([c.to_numpy() for c in numeric.columns], axis=1).astype(np.float32)}
    print("\n| energy graph alone (ONNX Runtime, batch 2048) | mixed rows/s | numeric rows/s | ratio |")
    print("| --- | --- | --- | --- |")
    for threads in (1, 2):
        speed = {kind: graph_rows_per_second(root / f"{kind}-ae", inputs[kind], threads, repeats) for kind in inputs}
        print(f"| {threads} thread{'s' if threads > 1 else ''} | {speed['mixed']:,.0f} | {speed['numeric']:,.0f} | "
              f"{speed['mixed'] / speed['numeric']:.2f} |", flush=True)


def main() -> None:
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    from aeserve.machine import cpu_summary

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"# CPU {cpu_summary()}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        files = {}
        for size, label in ((args.rows // 4, "quarter"), (args.rows, "all")):
            mixed, numeric = tables(size)
            for kind, table in (("mixed", mixed), ("numeric", numeric)):
                pq.write_table(table, root / f"{kind}-{label}.parquet")
                pacsv.write_csv(table, root / f"{kind}-{label}.csv")
                files[kind, label] = root / f"{kind}-{label}"
        for kind in ("mixed", "numeric"):  # small bundles of the default architecture, trained briefly
            sample = tables(20_000, seed=1)[0 if kind == "mixed" else 1]
            pacsv.write_csv(sample, root / f"{kind}-train.csv")
            subprocess.run([sys.executable, "-m", "aeserve", "train", str(root / f"{kind}-train.csv"), "--epochs", "2",
                            "--out", str(root / f"{kind}-ae"), "--quiet"], check=True)
        print("| input | rows | mixed rows/s | numeric rows/s | ratio | mixed peak RSS MiB | numeric peak RSS MiB |")
        print("| --- | --- | --- | --- | --- | --- | --- |")
        for suffix in (".parquet", ".csv"):
            for label, rows in (("quarter", args.rows // 4), ("all", args.rows)):
                result = {}
                for kind in ("mixed", "numeric"):
                    runs = [score_once(root / f"{kind}-ae", files[kind, label].with_suffix(suffix),
                                       root / f"out-{kind}.parquet") for _ in range(args.repeats)]
                    result[kind] = (rows / statistics.median(s for s, _ in runs), max(r for _, r in runs))
                print(f"| {suffix[1:]} | {rows:,} | {result['mixed'][0]:,.0f} | {result['numeric'][0]:,.0f} | "
                      f"{result['mixed'][0] / result['numeric'][0]:.2f} | {result['mixed'][1]:.0f} | "
                      f"{result['numeric'][1]:.0f} |", flush=True)
        graph_table(root, args.repeats)


if __name__ == "__main__":
    main()
