"""Peak RSS of `aeserve score` on a 20k-row and a 200k-row file (CSV and .npy): streaming must
keep memory flat, within ~1.5x, whatever the file size. Each run is a fresh process.

Usage: python benchmarks/stream_memory.py [--width 128] [--rows 20000,200000,400000]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

# VmHWM, not ru_maxrss: Linux carries ru_maxrss across exec, so a child forked from this
# (torch-laden) process would report the parent's size.
RUNNER = """
import sys, time
from aeserve.cli import main
start = time.perf_counter()
try:
    main(sys.argv[1:])
except SystemExit as exc:
    assert exc.code in (0, None), exc.code
hwm = next(line for line in open("/proc/self/status") if line.startswith("VmHWM"))
print(int(hwm.split()[1]) / 1024, time.perf_counter() - start)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--rows", default="20000,200000,400000")
    args = parser.parse_args()
    import pyarrow as pa
    import pyarrow.csv as pacsv

    from aeserve.tables import Table
    from aeserve.train.config import ModelConfig
    from aeserve.train.fit import FitConfig
    from aeserve.train.pipeline import train_bundle

    work = Path(tempfile.mkdtemp(prefix="aeserve-rss-"))
    names = [f"f{i}" for i in range(args.width)]
    rng = np.random.default_rng(0)
    train_bundle(Table(rng.random((5000, args.width), dtype=np.float32), names, "random"), work / "model",
                 ModelConfig(kind="ae", n_features=args.width, hidden=(64,), latent=8), FitConfig(epochs=1))
    results = {}
    for n in (int(v) for v in args.rows.split(",")):
        rows = rng.random((n, args.width), dtype=np.float32)
        np.save(work / f"rows{n}.npy", rows)
        pacsv.write_csv(pa.table({name: rows[:, i] for i, name in enumerate(names)}), work / f"rows{n}.csv")
        del rows
        for suffix in ("npy", "csv"):
            source = work / f"rows{n}.{suffix}"
            out = subprocess.run([sys.executable, "-c", RUNNER, "score", str(work / "model"), str(source), "-o",
                                  str(work / "scores.parquet"), "-q"], capture_output=True, text=True, check=True)
            rss, seconds = map(float, out.stdout.split())
            results[f"{suffix} {n:,} rows ({source.stat().st_size / 1e6:.0f} MB)"] = (rss, seconds)
    for label, (rss, seconds) in results.items():
        print(f"{label:34s} peak RSS {rss:7.1f} MiB  {seconds:6.2f} s")
    for suffix in ("npy", "csv"):
        peaks = [v[0] for k, v in results.items() if k.startswith(suffix)]
        steps = ", ".join(f"{b / a:.2f}" for a, b in zip(peaks[:-1], peaks[1:]))
        print(f"{suffix}: peak RSS ratio largest/smallest {peaks[-1] / peaks[0]:.2f}  [target <= 1.5]; "
              f"step by step {steps}")
    (work / "rss.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
