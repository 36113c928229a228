"""Verbs that look at a bundle: ``info``, ``plot``, ``report``, ``bench`` and ``demo``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape

from aeserve.cli import app, err, out, user_errors
from aeserve.cli.options import BACKEND_OPT, BUNDLE_ARG, Backend, Kind, PlotKind, int_list, open_model

__all__ = ["info", "plot", "report", "bench", "demo"]


@app.command()
@user_errors
def info(
    bundle: Path = BUNDLE_ARG,
    as_json: bool = typer.Option(False, "--json", help="Print the whole manifest as JSON."),
) -> None:
    """Show what a bundle holds: kind, inputs, energy, threshold, files, backends available.

    \b
    Example:
      aeserve info models/rows-ae
    """
    from rich.table import Table

    from aeserve.bundle import Bundle
    from aeserve.serve.backends import available_backends

    opened = Bundle.open(bundle)
    m = opened.manifest
    if as_json:
        out.print_json(json.dumps(m.to_json()))
        return
    features = m.input.features
    training = m.training
    trained = (f"{training.data.rows} rows, {training.epochs_run} epochs, best {training.best_epoch}, "
               f"seed {training.settings.get('seed', '?')}" if training is not None else "no record")
    window = m.input.window
    rows = [
        ("kind", m.kind),
        ("input", f"{len(features)} {'columns' if m.input.mixed else 'features'}: {', '.join(features[:5])}"
                  f"{' ...' if len(features) > 5 else ''}" + (" (typed table: see columns)" if m.input.mixed else "")),
        *([("series", _describe_window(window))] if window is not None else []),
        ("preprocessing", m.preprocessing.formula),
        ("architecture", f"hidden {list(m.architecture.hidden)}, latent {m.latent.size}, {m.architecture.activation}"),
        ("energy", f"{m.energy.formula} (cost {m.energy.cost}, regulariser {m.energy.regulariser}, "
                   f"weight {m.energy.weight})"),
        ("threshold", f"{m.threshold.value:.6g} ({m.threshold.describe()})"),
        ("sampling", m.latent.sampler),
        ("training", trained),
        ("graphs", "; ".join(f"{precision}: {', '.join(g.file for g in graphs.values())}"
                             for precision, graphs in m.graphs.items()) or "none (run aeserve export)"),
        ("files", ", ".join(f"{name} ({sha[:8]})" for name, sha in m.files.items())),
        ("versions", ", ".join(f"{k} {v}" for k, v in m.versions.items())),
        ("backends here", ", ".join(available_backends()) or "none (pip install 'aeserve[cpu]')"),
        ("auto picks", _auto_choice(opened)),
        ("tensorrt", _tensorrt_status(opened)),
    ]
    table = Table(title=f"bundle {escape(str(bundle))}", show_header=False)
    for key, value in rows:
        table.add_row(key, escape(str(value)))
    out.print(table)
    if m.input.mixed:
        out.print(_columns_table(m.input.columns))


def _describe_window(window) -> str:
    """'windows of 32 rows of s1, s2, s3 (channel-major), training stride 1; time ts, group machine, max gap 300'."""
    facts = [f"time {window.time_column}" if window.time_column else "file order",
             f"group {window.group_column}" if window.group_column else "one series",
             f"max gap {window.max_gap:g}" if window.max_gap is not None else ""]
    return (f"windows of {window.size} rows of {', '.join(window.channels)} (channel-major), training stride "
            f"{window.stride}; " + ", ".join(f for f in facts if f) + "; a score for every row: the window ending at it")


def _columns_table(columns):
    """A mixed bundle's columns: type, vocabulary (most frequent first), missing cells in training."""
    from rich.table import Table

    table = Table(title="columns")
    for heading in ("column", "type", "categories", "missing in training"):
        table.add_column(heading)
    for c in columns:
        shown = ", ".join(c.vocabulary[:6]) + (f", ... ({len(c.vocabulary)} in all)" if len(c.vocabulary) > 6 else "")
        categories = f"{shown} + (other): {c.other} rows" if c.type == "categorical" else ""
        share = f"{c.missing} of {c.rows} ({c.missing / c.rows:.1%})" if c.rows and c.missing else "none"
        kind = f"{c.type} (log scale)" if c.transform == "log" else c.type
        table.add_row(escape(c.name), kind, escape(categories), share)
    return table


def _auto_choice(bundle) -> str:
    from aeserve.errors import BackendUnavailable
    from aeserve.serve.backends import choose_backend

    try:
        name, reason = choose_backend("auto", bundle)
    except BackendUnavailable as exc:
        return f"nothing: {exc}"
    return f"{name} ({reason})"


def _tensorrt_status(bundle) -> str:
    exports = bundle.manifest.exports
    check = exports.onnx.tensorrt_check if exports.onnx is not None else None
    plans = sorted(exports.tensorrt)
    parse = ("graphs pass the TensorRT parser check" if check and check.parser_compatible
             else f"parser check: {'; '.join(check.problems)}" if check else "not checked (export first)")
    return parse + (f"; plans: {', '.join(plans)}" if plans else "; no plans built")


@app.command()
@user_errors
def plot(
    bundle: Path = BUNDLE_ARG,
    data: Path = typer.Argument(..., help="Rows to picture: .csv, .parquet or .npy.", show_default=False),
    what: PlotKind = typer.Option(PlotKind.latent, "--what", "-w", help="Which picture."),
    output: Path = typer.Option(..., "--output", "-o", help="PNG file to write.", show_default=False),
    labels: Optional[str] = typer.Option(None, help="0/1 column (1 = anomaly): colours, and needed for roc."),
    backend: Backend = BACKEND_OPT,
) -> None:
    """Draw a picture of the detector on DATA: latent map (a VAE's bubbles), energy histogram
    with the threshold, ROC/PR curves, reconstructions, or training curves.

    \b
    Example:
      aeserve plot models/cancer-vae demo/test.csv --what latent --labels label -o latent.png
    """
    from aeserve.serve.plots import load_plot_data, render

    data_ = load_plot_data(open_model(bundle, backend), data, labels)
    err.print(f"[green]wrote[/] {escape(str(render(what.value, data_, output)))}")


@app.command()
@user_errors
def report(
    bundle: Path = BUNDLE_ARG,
    data: Path = typer.Argument(..., help="Rows to report on: .csv, .parquet or .npy.", show_default=False),
    output: Path = typer.Option(..., "--output", "-o", help="HTML file to write (self-contained).", show_default=False),
    labels: Optional[str] = typer.Option(None, help="0/1 column (1 = anomaly): adds ROC/PR and AUROC."),
    backend: Backend = BACKEND_OPT,
) -> None:
    """Write one self-contained HTML report: energy histogram and threshold, ROC/PR with AUROC
    (given labels), latent map, reconstructions, training curves.

    \b
    Example:
      aeserve report models/cancer-vae demo/test.csv --labels label -o report.html
    """
    from aeserve.serve.plots import load_plot_data
    from aeserve.serve.report import build_report

    data_ = load_plot_data(open_model(bundle, backend), data, labels)
    numbers = build_report(data_, output, str(data))
    detail = f" (AUROC {numbers['auroc']:.3f})" if "auroc" in numbers else ""
    err.print(f"[green]wrote[/] {escape(str(output))}{detail}")


@app.command()
@user_errors
def bench(
    bundle: Path = BUNDLE_ARG,
    rows: int = typer.Option(100_000, min=1, help="Synthetic rows of the bundle's shape per run."),
    batch_sizes: str = typer.Option("256,1024,4096", help="Batch sizes to try; the best is reported."),
    repeats: int = typer.Option(5, help="Timed runs per setting; the median counts."),
) -> None:
    """Measure energy throughput (rows/s, GFLOP/s) per backend and precision on synthetic rows,
    beside this machine's fp32 MatMul ceiling in ONNX Runtime: every CPU backend and precision
    the bundle allows here (what `--precision auto` chooses among), and the torch reference.

    \b
    Example:
      aeserve bench models/cancer-vae --rows 200000 --batch-sizes 512,1024,4096
    """
    from rich.table import Table

    from aeserve.bundle import Bundle
    from aeserve.serve.backends import available_backends, cpu_candidates
    from aeserve.serve.bench import bench_bundle, ceiling_shapes, dense_flops_per_row, matmul_ceiling

    opened = Bundle.open(bundle)
    here = available_backends()
    plan = [*((c.spec.name, c.precision) for c in cpu_candidates(opened)), *([("torch", "fp32")] if "torch" in here else [])]
    shapes = ceiling_shapes(opened)
    ceiling = max(matmul_ceiling(*shape) for shape in shapes) if "onnxruntime" in here else float("nan")
    results = bench_bundle(bundle, plan, list(int_list(batch_sizes, "--batch-sizes")), n_rows=rows,
                           repeats=repeats)
    table = Table(title=f"energy throughput, {escape(str(bundle))} ({dense_flops_per_row(opened) / 1e6:.2f} "
                        f"dense MFLOP/row), median of {repeats}")
    for column in ("backend", "precision", "best batch", "rows/s", "GFLOP/s", "of MatMul ceiling"):
        table.add_column(column, justify="right")
    for r in results:
        table.add_row(r.backend, r.precision, str(r.batch), f"{r.rows_per_s:,.0f}", f"{r.gflops:.1f}",
                      f"{r.gflops / ceiling:.0%}")
    out.print(table)
    out.print(f"fp32 MatMul ceiling (ONNX Runtime, best of {' and '.join('x'.join(map(str, s)) for s in shapes)}): "
              f"{ceiling:.1f} GFLOP/s")


@app.command()
@user_errors
def demo(
    workdir: Optional[Path] = typer.Option(None, help="Where to write the data, bundle and scores (default: a new temp dir)."),
    kind: Kind = typer.Option(Kind.vae, "--kind", "-k", help="Model kind to train."),
    epochs: int = typer.Option(150, help="Maximum epochs."),
) -> None:
    """Train on scikit-learn's breast-cancer data (benign = normal, malignant = anomalies),
    export to ONNX, score with ONNX Runtime in a torch-free process, print AUROC.

    \b
    Example:
      aeserve demo --workdir demo --kind lvm
    """
    from aeserve.train.demo import run_demo

    run_demo(workdir, kind.value, epochs, console=err)
