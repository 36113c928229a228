"""How long `aeserve --help` takes, against importing typer and rich alone (issue 21's bound:
at most 0.25 s more). Median of 15 runs each, side by side, in this process's Python.

    python benchmarks/cli_startup.py
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time


def median_seconds(command: list[str], runs: int = 15) -> float:
    """Median wall time of ``command`` over ``runs`` runs (output discarded)."""
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    """Print both medians and their difference, with the CPU model."""
    from aeserve.machine import cpu_summary

    help_time = median_seconds([sys.executable, "-m", "aeserve", "--help"])
    train_help = median_seconds([sys.executable, "-m", "aeserve", "train", "--help"])
    base = median_seconds([sys.executable, "-c", "import typer, rich"])
    print(f"cpu: {cpu_summary()}")
    print(f"import typer, rich    {base:.3f} s")
    print(f"aeserve --help        {help_time:.3f} s  (+{help_time - base:.3f} s)")
    print(f"aeserve train --help  {train_help:.3f} s  (+{train_help - base:.3f} s)")


if __name__ == "__main__":
    main()
