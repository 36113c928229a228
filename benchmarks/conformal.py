"""Calibrated scores, measured: conformal p-values against the held-out validation energies a
bundle keeps, Benjamini–Hochberg's realised false-discovery rate, and the false-positive rate
of a threshold calibrated on the training file (before) against one calibrated on the rows the
bundle held out (``aeserve calibrate MODEL`` with no data: after).

    python benchmarks/conformal.py                          # every set below, 5 seeds
    python benchmarks/conformal.py --sets mnist-3,cancer --seeds 2

Sets and protocol are those of ``benchmarks/quality.py`` (clean setting): per set and seed the
normal rows are split 60/40, the test holds the 40% and as many anomalies; aeserve trains
``--kind vae`` (the README's recommendation) through ``train_bundle`` at its defaults but for
``--val-fraction`` (0.25 here, so that the MNIST one-class sets keep 75 held-out rows; the
default 0.1 keeps 30, too few for a 1% target) and scores with the torch reference backend.

- **p-values**: of the test's normal rows, pooled over seeds; KS = sup |F(a) − a| of their
  empirical CDF against the uniform (with n held-out rows p takes the levels k/(n+1), so a KS
  of about 1/(n+1) is the floor).
- **FDR**: BH at alpha over all the test rows; realised FDR = false discoveries / discoveries
  (0 when none), mean over seeds, and the power (share of anomalies found).
- **Calibration FPR** at targets 5% and 1% on the test's normal rows, pooled over seeds:
  *before*, the quantile of the energies of the training file (the rows trained on plus the
  held-out ones: what ``aeserve calibrate MODEL train.csv`` did before it refused); *after*, the
  conformal quantile of the held-out energies (``aeserve calibrate MODEL``; refused where a
  target needs more held-out rows than the bundle has, 1/target − 1); *pot*, peaks-over-threshold
  on the held-out energies (``aeserve calibrate MODEL --method pot``).
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

from quality import load_sets, split  # noqa: E402  (the quality benchmark's sets and split)

SETS = ("cancer", "wine-0", "wine-1", "wine-2", *(f"digits-{d}" for d in range(10)),
        *(f"mnist-{d}" for d in range(10)))
ALPHAS = (0.05, 0.1)
TARGETS = (0.05, 0.01)


def run_set(normal, anomalies, seed: int, kind: str, val_fraction: float) -> dict:
    """One set and seed: p-values of the test's normal rows, BH per alpha, FPR per target."""
    import aeserve
    from aeserve.conformal import benjamini_hochberg, conformal_threshold, p_values
    from aeserve.errors import InputError
    from aeserve.tables import Table
    from aeserve.thresholds import pot_threshold, quantile_threshold
    from aeserve.train.config import ModelConfig
    from aeserve.train.fit import FitConfig
    from aeserve.train.pipeline import train_bundle

    train, test, labels = split(normal, anomalies, seed, contaminated=False)
    with tempfile.TemporaryDirectory() as tmp:
        table = Table(np.asarray(train, np.float32), [f"f{i}" for i in range(train.shape[1])], "train")
        train_bundle(table, Path(tmp) / "m", ModelConfig(kind=kind, n_features=train.shape[1]),
                     FitConfig(seed=seed), val_fraction=val_fraction, export=False)
        model = aeserve.load(Path(tmp) / "m", backend="torch")
        reference = model.reference
        energies = model.energy(test)["energy"]
        training_file = model.energy(train)["energy"]  # every row of the training file
    normal_e = energies[labels == 0]
    out = {"p_normal": p_values(reference, normal_e), "held_out": reference.size, "fdr": {}, "fpr": {}}
    for alpha in ALPHAS:
        found = benjamini_hochberg(reference, energies, alpha)
        false = int((found & (labels == 0)).sum())
        out["fdr"][alpha] = (false / max(int(found.sum()), 1), float(found[labels == 1].mean()))
    for target in TARGETS:
        before = quantile_threshold(training_file, target).value
        try:
            after = conformal_threshold(reference, target)
        except InputError:
            after = math.nan  # too few held-out rows for this target
        pot = pot_threshold(reference, target).value  # aeserve calibrate MODEL --method pot
        out["fpr"][target] = (int((normal_e > before).sum()), None if math.isnan(after) else int((normal_e > after).sum()),
                              normal_e.size, int((normal_e > pot).sum()))
    return out


def ks_uniform(p: np.ndarray) -> float:
    """sup |F(a) − a| of the empirical CDF of ``p`` against U(0, 1), at every jump."""
    p = np.sort(p)
    n = p.size
    return float(max(np.max(np.arange(1, n + 1) / n - p), np.max(p - np.arange(n) / n)))


def main(argv: list[str] | None = None) -> None:
    import torch

    from aeserve.machine import cpu_model

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", default=",".join(SETS))
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--kind", default="vae")
    parser.add_argument("--val-fraction", type=float, default=0.25)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    names = args.sets.split(",")
    data = load_sets(names)
    print(f"CPU: {cpu_model()}; kind {args.kind}, val-fraction {args.val_fraction}, {args.seeds} seeds\n", flush=True)
    print("| set | held-out rows | KS of normal p-values (rows) | " +
          " | ".join(f"FDR at {a:g} (power)" for a in ALPHAS) + " | " +
          " | ".join(f"FPR at {t:g}: before / after / pot" for t in TARGETS) + " |")
    print("| --- " * (3 + len(ALPHAS) + len(TARGETS)) + "|", flush=True)
    pooled = {t: [0, 0, 0, 0, 0] for t in TARGETS}
    mnist = {t: [0, 0, 0, 0, 0] for t in TARGETS}
    all_fdr = {a: [] for a in ALPHAS}
    for name in names:
        runs = [run_set(*data[name], seed, args.kind, args.val_fraction) for seed in range(args.seeds)]
        p = np.concatenate([r["p_normal"] for r in runs])
        cells = [name, f"{int(np.median([r['held_out'] for r in runs]))}", f"{ks_uniform(p):.3f} ({p.size})"]
        for alpha in ALPHAS:
            fdp = [r["fdr"][alpha][0] for r in runs]
            power = [r["fdr"][alpha][1] for r in runs]
            all_fdr[alpha].extend(fdp)
            cells.append(f"{np.mean(fdp):.3f} ± {np.std(fdp):.3f} ({np.mean(power):.2f})")
        for target in TARGETS:
            before = sum(r["fpr"][target][0] for r in runs)
            after = [r["fpr"][target][1] for r in runs]
            rows = sum(r["fpr"][target][2] for r in runs)
            pot = sum(r["fpr"][target][3] for r in runs)
            shown_after = "refused" if None in after else f"{sum(after) / rows:.3f}"
            cells.append(f"{before / rows:.3f} / {shown_after} / {pot / rows:.3f}")
            for acc in (pooled, *((mnist,) if name.startswith("mnist") else ())):
                acc[target][3] += pot
                acc[target][4] += rows
                if None not in after:
                    acc[target][0] += before
                    acc[target][1] += sum(after)
                    acc[target][2] += rows
        print("| " + " | ".join(cells) + " |", flush=True)
    print()
    for alpha in ALPHAS:
        print(f"BH at {alpha:g}: mean realised FDR over every set and seed {np.mean(all_fdr[alpha]):.4f}")
    for label, acc in (("MNIST one-class sets", mnist), ("every set with enough held-out rows", pooled)):
        for target in TARGETS:
            before, after, rows, pot, all_rows = acc[target]
            if rows:
                se = math.sqrt(max(after / rows * (1 - after / rows), 1e-12) / rows)
                print(f"{label}, target {target:g}: before {before / rows:.4f}, after {after / rows:.4f} ± {se:.4f} "
                      f"({rows} held-out normal rows)")
            if all_rows:
                print(f"{label}, target {target:g}, pot on the held-out energies: {pot / all_rows:.4f} "
                      f"({all_rows} rows)")


if __name__ == "__main__":
    main()
