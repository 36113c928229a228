"""Training speed: aeserve's fit (in memory, and streamed from Parquet shards) against PyOD's
AutoEncoder and VAE ``fit`` on the same rows, layers, epochs and batch size, in one process.

Also PyOD with its defaults (batch norm, dropout) and a hand-written PyTorch loop of the same layers
(the framework's own speed here). Prints rows/s trained, the final validation loss of each (its own
units: aeserve's mean validation energy, PyOD's mean decision score), and rows/s as a share of
the model's training bound: forward + backward GEMM FLOPs per row (3 x 2 x sum of in x out over
the dense layers) against the GEMM rate measured here at the model's shapes. Then a profile of
aeserve's fit (where the time goes). The median of ``--repeats`` runs; the CPU model and flags.

Usage: python benchmarks/training.py [--rows 100000] [--width 32] [--epochs 5] [--batch-size 128]
       [--repeats 3] [--threads 0] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

HIDDEN, LATENT = (256, 64), 8


def make_rows(n: int, width: int, seed: int = 0) -> np.ndarray:
    """Low-rank rows with noise (n, width) float32: what an autoencoder is for."""
    rng = np.random.default_rng(seed)
    mixing = rng.normal(size=(6, width)).astype(np.float32)
    rows = np.tanh(rng.normal(size=(n, 6)).astype(np.float32)) @ mixing
    return rows + 0.1 * rng.normal(size=rows.shape).astype(np.float32)


def layer_shapes(width: int, vae: bool) -> list[tuple[int, int]]:
    """(in, out) of every dense layer of the benchmark's encoder and decoder."""
    sizes = [width, *HIDDEN]
    encoder = list(zip(sizes[:-1], sizes[1:])) + [(HIDDEN[-1], LATENT * (2 if vae else 1))]
    decoder = [(LATENT, HIDDEN[-1])] + [(b, a) for a, b in reversed(list(zip(sizes[:-1], sizes[1:])))]
    return encoder + decoder


def gemm_bound(width: int, batch: int, vae: bool, repeats: int = 50, trials: int = 7) -> tuple[float, float]:
    """(training FLOPs per row, rows/s bound): each layer's three GEMMs of a step timed here at
    the model's shapes (forward X W; backward dY W^T and X^T dY), the fastest of ``trials``."""
    shapes = layer_shapes(width, vae)
    flops = 3 * 2 * sum(a * b for a, b in shapes)
    seconds = 0.0
    for a, b in shapes:
        x, w, dy = torch.randn(batch, a), torch.randn(a, b), torch.randn(batch, b)
        products = ((x, w), (dy, w.T.contiguous()), (x.T.contiguous(), dy))
        best = []
        for left, right in products:
            for _ in range(10):
                left @ right
            times = []
            for _ in range(trials):
                start = time.perf_counter()
                for _ in range(repeats):
                    left @ right
                times.append((time.perf_counter() - start) / repeats)
            best.append(min(times))
        seconds += sum(best)
    return flops, batch / seconds


def time_aeserve(rows, names, kind, args, work: Path, streamed: bool) -> dict:
    from aeserve.tables import Table
    from aeserve.train.config import ModelConfig
    from aeserve.train.fit import FitConfig
    from aeserve.train.pipeline import train_bundle
    from aeserve.train.shards import Shards
    from aeserve.train.streaming import StreamOptions, train_shards

    config = ModelConfig(kind=kind, n_features=rows.shape[1], hidden=HIDDEN, latent=LATENT)
    fit = FitConfig(epochs=args.epochs, batch_size=args.batch_size, patience=args.epochs + 1)
    start = time.perf_counter()
    if streamed:
        result = train_shards(Shards.find([work / "shards"]), work / "b", config, fit, export=False, force=True,
                              options=StreamOptions(), kept_rows=0)
    else:
        result = train_bundle(Table(rows, names, "rows"), work / "b", config, fit, export=False, force=True,
                              kept_rows=0)
    seconds = time.perf_counter() - start
    train_rows = int(json.loads((work / "b" / "manifest.json").read_text())["training"]["data"]["train_rows"])
    return {"rows_per_s": train_rows * args.epochs / seconds, "val_loss": min(result.fit.val_energy)}


def time_plain_torch(rows, kind, args) -> dict:
    """A hand-written PyTorch loop of the same layers (nn.Sequential, fused AdamW, the same loss):
    the framework's own speed on this machine, the ceiling a library's fit can approach."""
    torch.manual_seed(0)
    n_val = len(rows) // 10
    data = torch.from_numpy(rows[n_val:])
    data = (data - data.mean(0)) / data.std(0)
    layers: list[torch.nn.Module] = []
    for i, (a, b) in enumerate(layer_shapes(rows.shape[1], kind == "vae")):
        layers.append(torch.nn.Linear(a, b))
        if i not in (len(HIDDEN), 2 * len(HIDDEN) + 1):  # no activation on the code and the output
            layers.append(torch.nn.ReLU())
    encoder = torch.nn.Sequential(*layers[:2 * len(HIDDEN) + 1])
    decoder = torch.nn.Sequential(*layers[2 * len(HIDDEN) + 1:])
    params = list(encoder.parameters()) + list(decoder.parameters())
    optimiser = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.0, fused=True)
    start = time.perf_counter()
    for _ in range(args.epochs):
        order = torch.randperm(len(data))
        for i in range(0, len(data), args.batch_size):
            batch = data[order[i:i + args.batch_size]]
            code = encoder(batch)
            if kind == "vae":
                mu, logvar = code.chunk(2, dim=1)
                code = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
                kl = 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(1)
            loss = (decoder(code) - batch).pow(2).sum(1)
            loss = (loss + kl).mean() if kind == "vae" else loss.mean()
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
    return {"rows_per_s": len(data) * args.epochs / (time.perf_counter() - start), "val_loss": float("nan")}


def time_pyod(rows, kind, args, defaults: bool = False) -> dict:
    """PyOD's fit with exactly the benchmark's layers (no batch norm, no dropout), or with PyOD's
    defaults for those (batch norm for the AE, dropout 0.2: what its users run)."""
    from pyod.models.auto_encoder import AutoEncoder
    from pyod.models.vae import VAE

    common = dict(epoch_num=args.epochs, batch_size=args.batch_size, lr=1e-3, device="cpu", verbose=0,
                  preprocessing=True, optimizer_params={"weight_decay": 0.0})
    if not defaults:
        common.update(dropout_rate=0.0, batch_norm=False)
    if kind == "ae":
        model = AutoEncoder(hidden_neuron_list=[*HIDDEN, LATENT], **common)
    else:
        model = VAE(encoder_neuron_list=list(HIDDEN), decoder_neuron_list=list(reversed(HIDDEN)), latent_dim=LATENT,
                    **common)
    n_val = len(rows) // 10
    start = time.perf_counter()
    model.fit(rows[n_val:])
    seconds = time.perf_counter() - start
    return {"rows_per_s": (len(rows) - n_val) * args.epochs / seconds,
            "val_loss": float(np.mean(model.decision_function(rows[:n_val])))}


def profile_fit(rows, names, args, work: Path) -> list[tuple[str, float]]:
    """Self CPU time share of the top operators over one epoch of aeserve's streamed ae fit."""
    from torch.profiler import ProfilerActivity, profile

    from aeserve.train.config import ModelConfig
    from aeserve.train.fit import FitConfig
    from aeserve.train.shards import Shards
    from aeserve.train.streaming import train_shards

    config = ModelConfig(kind="ae", n_features=rows.shape[1], hidden=HIDDEN, latent=LATENT)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        train_shards(Shards.find([work / "shards"]), work / "p", config,
                     FitConfig(epochs=1, batch_size=args.batch_size), export=False, force=True, kept_rows=0)
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    top = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:10]
    return [(e.key, e.self_cpu_time_total / total) for e in top]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    import pyarrow as pa
    import pyarrow.parquet as pq

    from aeserve.machine import cpu_summary

    rows = make_rows(args.rows, args.width)
    names = [f"f{i}" for i in range(args.width)]
    work = Path(tempfile.mkdtemp(prefix="aeserve-train-bench-"))
    (work / "shards").mkdir()
    for i, part in enumerate(np.array_split(rows, 4)):
        pq.write_table(pa.table({n: part[:, j] for j, n in enumerate(names)}), work / "shards" / f"p{i}.parquet")
    print(f"CPU: {cpu_summary()}; torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"{args.rows:,} rows x {args.width}, layers {HIDDEN} latent {LATENT}, {args.epochs} epochs, "
          f"batch {args.batch_size}, median of {args.repeats}")
    results = {}
    for kind in ("ae", "vae"):
        flops, bound = gemm_bound(args.width, args.batch_size, kind == "vae")
        pyod_name = f"PyOD {kind.upper()}"
        runs = {"aeserve (memory)": [], "aeserve (streamed)": [], pyod_name: [], f"{pyod_name} (defaults)": [],
                "plain PyTorch loop": []}
        for repeat in range(args.repeats + 1):  # interleaved, so drift in the machine's speed hits all alike
            if repeat == 0:  # a warm-up round (torch's first steps, page cache), not counted
                time_aeserve(rows, names, kind, args, work, streamed=True)
                time_pyod(rows[:20_000], kind, args)
                continue
            runs["aeserve (memory)"].append(time_aeserve(rows, names, kind, args, work, streamed=False))
            runs["aeserve (streamed)"].append(time_aeserve(rows, names, kind, args, work, streamed=True))
            runs[pyod_name].append(time_pyod(rows, kind, args))
            runs[f"{pyod_name} (defaults)"].append(time_pyod(rows, kind, args, defaults=True))
            runs["plain PyTorch loop"].append(time_plain_torch(rows, kind, args))
        pyod = statistics.median(r["rows_per_s"] for r in runs[pyod_name])
        print(f"\n{kind}: training bound {bound:,.0f} rows/s ({flops / 1e6:.2f} MFLOP per row)")
        print(f"| {'contender':<20} | rows/s | x {pyod_name} | share of GEMM bound | final validation loss (own units) |")
        print("| --- | --- | --- | --- | --- |")
        for name, values in runs.items():
            speed = statistics.median(r["rows_per_s"] for r in values)
            loss = statistics.median(r["val_loss"] for r in values)
            results[f"{kind} {name}"] = {"rows_per_s": speed, "x_pyod": speed / pyod, "share": speed / bound,
                                         "val_loss": loss}
            print(f"| {name:<20} | {speed:,.0f} | {speed / pyod:.2f} | {speed / bound:.0%} | {loss:.4g} |")
    print("\nprofile of aeserve's streamed fit (ae, one epoch; self CPU time):")
    for name, share in profile_fit(rows, names, args, work):
        print(f"  {share:6.1%}  {name}")
    if args.json:
        args.json.write_text(json.dumps({"cpu": cpu_summary(), "args": vars(args) | {"json": None},
                                         "results": results}, indent=1, default=str))


if __name__ == "__main__":
    main()
