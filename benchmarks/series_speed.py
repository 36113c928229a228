"""Scoring a long series against the same model on precomputed windows, in one run (issue 23,
item 6): a series of 10M rows x 8 channels in Parquet, scored by ``aeserve score`` in a fresh
process (the backend ``auto`` picks; windows cut chunk by chunk, each group's last W-1 rows
carried; one output row per input row), against two baselines of the same model:

- precomputed windows in a file: the windows of the first tenth of the rows written to a .npy
  (what users do by hand today: W x 8 values a row, 1 KiB at W = 32), scored end to end by
  ``aeserve score`` of the same graphs and weights as a plain bundle (its manifest without the
  window), with the same output columns but ``windows``;
- the model alone: its ``energy`` on windows already in memory (no reading, no cutting, no
  writing), the ceiling.

Peak RSS at a tenth of the rows and at all of them (flat memory: it must not grow with the series).

Usage: python benchmarks/series_speed.py [--rows 10000000] [--channels 8] [--window 32] [--repeats 3]
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
from mixed_speed import score_once  # `aeserve score` in a fresh process: (seconds, peak RSS MiB)


def write_series(path: Path, rows: int, channels: int, seed: int = 0) -> None:
    """``rows`` rows of ``channels`` sensor-like channels (cycles plus noise), Parquet, 1M rows a group."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    writer = None
    for start in range(0, rows, 1_000_000):
        t = np.arange(start, min(start + 1_000_000, rows))
        columns = {f"c{j}": (np.sin(2 * np.pi * t / (20 + 3 * j)) + 0.1 * rng.standard_normal(len(t))).astype(np.float32)
                   for j in range(channels)}
        table = pa.table(columns)
        writer = writer or pq.ParquetWriter(path, table.schema)
        writer.write_table(table)
    writer.close()


def plain_twin(bundle: Path, twin: Path) -> Path:
    """A copy of ``bundle`` without its window: the same graphs and weights, taking windows as plain rows."""
    import dataclasses
    import shutil

    from aeserve.bundle import Bundle, write_manifest

    shutil.copytree(bundle, twin)
    manifest = Bundle.open(twin).manifest
    write_manifest(twin, dataclasses.replace(manifest, input=dataclasses.replace(manifest.input, window=None)))
    return twin


def precomputed_rate(bundle: Path, rows: int, channels: int, window: int, repeats: int) -> tuple[float, str]:
    """Rows/s of the model's energy on windows in memory (median of ``repeats``), and the backend."""
    import pyarrow.parquet as pq

    import aeserve
    from aeserve.series import SeriesWindows

    model = aeserve.load(bundle)  # auto, as the CLI
    series = np.stack([c.to_numpy() for c in pq.read_table(bundle.parent / "probe.parquet").columns], axis=1)
    windows = SeriesWindows(window, channels).push(series[:rows]).values  # (n, C x W), made before the clock
    model.energy(windows[:model.batch_size])  # warm
    rates = []
    for _ in range(repeats):
        started = time.perf_counter()
        model.energy(windows)
        rates.append(len(windows) / (time.perf_counter() - started))
    return statistics.median(rates), model.backend.describe()


def main() -> None:
    from aeserve.machine import cpu_summary

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--channels", type=int, default=8)
    parser.add_argument("--window", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"# CPU {cpu_summary()}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_series(root / "train.parquet", 20_000, args.channels, seed=1)
        subprocess.run([sys.executable, "-m", "aeserve", "train", str(root / "train.parquet"), "--window",
                        str(args.window), "--epochs", "2", "--out", str(root / "ae"), "--quiet"], check=True)
        write_series(root / "probe.parquet", 1_000_000, args.channels, seed=2)
        files = {}
        for label, rows in (("a tenth", args.rows // 10), ("all", args.rows)):
            files[label] = root / f"series-{rows}.parquet"
            write_series(files[label], rows, args.channels, seed=3)
        import pyarrow.parquet as pq

        from aeserve.series import SeriesWindows

        tenth = args.rows // 10
        series = np.stack([c.to_numpy() for c in pq.read_table(files["a tenth"]).columns], axis=1)
        np.save(root / "windows.npy", SeriesWindows(args.window, args.channels).push(series).values)
        del series
        twin = plain_twin(root / "ae", root / "ae-plain")
        file_runs = [score_once(twin, root / "windows.npy", root / "out-plain.parquet") for _ in range(args.repeats)]
        from_file = (tenth - args.window + 1) / statistics.median(seconds for seconds, _ in file_runs)
        alone, backend = precomputed_rate(root / "ae", 1_000_000, args.channels, args.window, args.repeats)
        print(f"# model: default layers on windows of {args.window} rows x {args.channels} channels; backend {backend}")
        print(f"# precomputed windows: from a .npy (aeserve score, end to end) {from_file:,.0f} rows/s, peak RSS "
              f"{max(rss for _, rss in file_runs):.0f} MiB; the model alone, in memory, {alone:,.0f} rows/s")
        print("| input | rows | series rows/s (aeserve score, end to end) | ratio to precomputed windows from a file | "
              "ratio to the model alone | peak RSS MiB |")
        print("| --- | --- | --- | --- | --- | --- |")
        for label, path in files.items():
            rows = tenth if label == "a tenth" else args.rows
            runs = [score_once(root / "ae", path, root / "out.parquet") for _ in range(args.repeats)]
            rate = rows / statistics.median(seconds for seconds, _ in runs)
            print(f"| Parquet, {label} | {rows:,} | {rate:,.0f} | {rate / from_file:.2f} | {rate / alone:.2f} | "
                  f"{max(rss for _, rss in runs):.0f} |", flush=True)


if __name__ == "__main__":
    main()
