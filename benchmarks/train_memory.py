"""Peak RSS of `aeserve train` on 1 GB and on 10 GB of Parquet shards, streamed from disk: memory
must not grow with the data. Each run is a fresh process (VmHWM of that process); the shards are
generated once (a low-rank signal plus noise, 16 float32 columns, 2M rows = 128 MiB a shard).

Usage: python benchmarks/train_memory.py [--sizes 1,10] [--epochs 1] [--work /tmp/aeserve-shards]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from stream_memory import RUNNER  # a verb in a fresh process; prints its VmHWM (MiB) and seconds

ROWS_PER_SHARD, WIDTH = 2_000_000, 16


def make_shards(folder: Path, count: int) -> list[Path]:
    """``count`` shards of ROWS_PER_SHARD x WIDTH float32 rows (made once; kept between runs)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    mixing = np.random.default_rng(0).normal(size=(4, WIDTH)).astype(np.float32)
    paths = []
    for i in range(count):
        path = folder / f"part-{i:04d}.parquet"
        if not path.exists():
            rng = np.random.default_rng(i + 1)
            rows = rng.normal(size=(ROWS_PER_SHARD, 4)).astype(np.float32) @ mixing
            rows += 0.1 * rng.normal(size=rows.shape).astype(np.float32)
            pq.write_table(pa.table({f"s{j}": rows[:, j] for j in range(WIDTH)}), path.with_suffix(".tmp"),
                           row_group_size=250_000)
            path.with_suffix(".tmp").rename(path)
        paths.append(path)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1,10", help="GB of shards per run")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--work", type=Path, default=Path("/tmp/aeserve-shards"))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    shard_bytes = ROWS_PER_SHARD * WIDTH * 4
    records = []
    for gb in (float(s) for s in args.sizes.split(",")):
        count = max(1, round(gb * 1e9 / shard_bytes))
        shards = make_shards(args.work / "all", count)
        folder = args.work / f"{gb:g}GB"
        folder.mkdir(parents=True, exist_ok=True)
        for path in shards:  # each size: links to the first shards
            link = folder / path.name
            if not link.exists():
                os.symlink(path, link)
        size = sum(p.stat().st_size for p in shards)
        out = args.work / f"model-{gb:g}GB"
        start = time.perf_counter()
        run = subprocess.run([sys.executable, "-c", RUNNER, "train", str(folder), "--epochs", str(args.epochs),
                              "--batch-size", str(args.batch_size), "--out", str(out), "--force", "-q",
                              "--device", "cpu"], capture_output=True, text=True)
        if run.returncode != 0:
            sys.exit(run.stderr[-2000:])
        peak, _ = map(float, run.stdout.split()[-2:])
        seconds = time.perf_counter() - start
        rows = count * ROWS_PER_SHARD
        record = {"gb": gb, "shards": count, "bytes": size, "rows": rows, "peak_rss_mib": round(peak, 1),
                  "seconds": round(seconds, 1), "rows_per_s_incl_scan": round(rows * (args.epochs + 1) / seconds)}
        records.append(record)
        print(json.dumps(record), flush=True)
    if len(records) > 1:
        print(f"peak RSS ratio {records[-1]['gb']:g} GB / {records[0]['gb']:g} GB: "
              f"{records[-1]['peak_rss_mib'] / records[0]['peak_rss_mib']:.2f}")
    if args.json:
        args.json.write_text(json.dumps(records, indent=1))


if __name__ == "__main__":
    main()
