"""The ``aeserve`` command line. Stage code is imported inside each command, so that
``aeserve --help`` and the scoring verbs start without importing torch.

Every user mistake (bad file, bad bundle, missing backend) prints one red line on
stderr and exits with status 2; no traceback.
"""

from __future__ import annotations

import functools
import json
import sys
from enum import Enum
from pathlib import Path
from typing import Callable, Optional

import typer
from rich.console import Console
from rich.markup import escape

from aeserve.bundle import KNOWN_KINDS
from aeserve.errors import AeserveError

__all__ = ["app", "main"]

app = typer.Typer(
    name="aeserve",
    help="Energy-based autoencoders: train in PyTorch, export to ONNX, score files without PyTorch.\n\n"
         "Start with `aeserve demo`, then `aeserve train DATA --kind ae` and `aeserve score BUNDLE DATA -o OUT`.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
)
err = Console(stderr=True, soft_wrap=True, highlight=False)
out = Console(soft_wrap=True, highlight=False)


#: Model kinds, from the core's list (the train registry holds the same names; a test checks).
Kind = Enum("Kind", {name: name for name in KNOWN_KINDS}, type=str)


class Cost(str, Enum):
    """Reconstruction cost C(y, ỹ)."""

    mse = "mse"
    bce = "bce"


class Activation(str, Enum):
    """Hidden-layer activation."""

    relu = "relu"
    tanh = "tanh"
    sigmoid = "sigmoid"


class Arch(str, Enum):
    """Network shape: dense layers, or convolutions for images."""

    mlp = "mlp"
    conv = "conv"


class EnergyMode(str, Enum):
    """What the score is: the energy at the inferred code, or a free energy over many codes."""

    point = "point"
    free = "free"


class Backend(str, Enum):
    """Runtime backend for the scoring verbs."""

    auto = "auto"
    tensorrt = "tensorrt"
    onnxruntime = "onnxruntime"
    torch = "torch"


class Device(str, Enum):
    """Where onnxruntime / torch run (TensorRT is always the GPU)."""

    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


class ExportFormat(str, Enum):
    """What ``aeserve export`` writes."""

    onnx = "onnx"
    tensorrt = "tensorrt"
    triton = "triton"


def user_errors(fn: Callable) -> Callable:
    """Turn AeserveError into one red line and exit code 2; Ctrl-C into exit 130."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except AeserveError as exc:
            err.print(f"[bold red]error:[/] {escape(str(exc))}")
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            err.print("[red]interrupted[/]: nothing was written")
            raise typer.Exit(130) from None
    return wrapper


def _csv_list(value: Optional[str]) -> Optional[list[str]]:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


def _int_list(value: str, flag: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise typer.BadParameter(f"expected comma-separated integers such as 256,64, got {value!r}",
                                 param_hint=flag) from None


def _row_progress(enabled: bool, label: str):
    """A rich progress bar (input read, rows, rows/s, ETA) on a terminal; a no-op otherwise."""
    from contextlib import nullcontext

    if not enabled or not err.is_terminal:
        return nullcontext(None)
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn

    return Progress(TextColumn(label), BarColumn(), TaskProgressColumn(), TextColumn("{task.description}"),
                    TimeRemainingColumn(), console=err, transient=True)


def _progress_callback(bar):
    """(bytes done, bytes total, rows) -> the bar: share of input read, rows and rows/s."""
    if bar is None:
        return None
    import time

    task, started = bar.add_task("", total=None), time.perf_counter()

    def update(done: int, total: int, rows: int) -> None:
        rate = rows / max(time.perf_counter() - started, 1e-9)
        bar.update(task, completed=done, total=total, description=f"{rows:,} rows  {rate:,.0f} rows/s")

    return update


class Precision(str, Enum):
    """Which graphs run: fp32, or the int8 ones `aeserve export --quantize int8` wrote."""

    fp32 = "fp32"
    int8 = "int8"


class OnError(str, Enum):
    """What to do with a bad row."""

    fail = "fail"
    skip = "skip"


#: exit status when a run finished but skipped bad rows (--on-error skip)
EXIT_SKIPPED = 3


def _open_model(bundle: Path, backend: Backend, batch_size: int, device: Device = Device.auto,
                precision: str = "fp32"):
    from aeserve.serve.model import load

    if batch_size < 0:
        raise typer.BadParameter("must be >= 1, or 0 for automatic", param_hint="--batch-size")
    options = {} if device == Device.auto or backend == Backend.tensorrt else {"device": device.value}
    if precision != "fp32":
        if backend not in (Backend.auto, Backend.onnxruntime):
            raise typer.BadParameter("int8 graphs run on onnxruntime", param_hint="--precision")
        backend, options["precision"] = Backend.onnxruntime, precision
    return load(bundle, backend=backend.value, batch_size=batch_size or None, **options)


def _finish(summary, verb: str, quiet: bool, as_json: bool, detail: str = "") -> None:
    skipped = len(getattr(summary, "skipped", []))
    if as_json:
        out.print_json(json.dumps({"verb": verb, "rows": summary.rows, "seconds": summary.seconds,
                                   "rows_per_second": summary.rows_per_second,
                                   "backend": summary.backend, "backend_reason": summary.reason,
                                   "output": summary.output, "skipped_rows": skipped,
                                   "errors_file": getattr(summary, "errors_file", None),
                                   **summary.extra}))
    elif not quiet:
        err.print(f"{verb} {summary.rows:,} rows -> {escape(summary.output)}{detail} | "
                  f"{summary.rows_per_second:,.0f} rows/s | backend {escape(summary.backend)}")
    if skipped:
        err.print(f"[yellow]skipped {skipped:,} bad rows[/]: listed in {escape(summary.errors_file)}")
        raise typer.Exit(EXIT_SKIPPED)


BUNDLE_ARG = typer.Argument(..., help="Bundle directory (made by `aeserve train`).", show_default=False)
OUTPUT_OPT = typer.Option(..., "--output", "-o", help="Output file: .csv, .parquet or .npy.", show_default=False)
ID_OPT = typer.Option(None, "--id-column", help="Input column carried into the output (default: row, the 1-based data row).")
ON_ERROR_OPT = typer.Option(OnError.fail, "--on-error", help="fail: stop at the first bad row, write nothing; "
                            "skip: leave bad rows out, list them in OUTPUT.errors.csv, exit with status 3.")
DATA_HELP = "Input files, globs or directories of .csv, .parquet, .npy (read in order, streamed)."
BACKEND_OPT = typer.Option(Backend.auto, "--backend", "-b", help="Runtime backend; auto picks the fastest installed.")
BATCH_OPT = typer.Option(0, "--batch-size", help="Rows per backend call; 0 = chosen from the model's widest layer.")
DEVICE_OPT = typer.Option(Device.auto, "--device", help="onnxruntime/torch device; auto = CUDA when available.")
PRECISION_OPT = typer.Option(Precision.fp32, "--precision", help="int8: the quantised graphs (onnxruntime).")
QUIET_OPT = typer.Option(False, "--quiet", "-q", help="No progress bar or summary line.")
JSON_OPT = typer.Option(False, "--json", help="Print a JSON summary on stdout.")


@app.command()
@user_errors
def train(
    data: Path = typer.Argument(..., help="Training rows: .csv (with header), .parquet, .npy, or a folder of "
                                          "PNG/JPEG images.", show_default=False),
    kind: Kind = typer.Option(Kind.ae, "--kind", "-k", help="Model kind."),
    arch: Arch = typer.Option(Arch.mlp, help="mlp, or conv: stride-2 convolutions for images (every kind)."),
    image_size: Optional[str] = typer.Option(None, help="Images: resize to HEIGHT,WIDTH (default: the first image's)."),
    conv_channels: str = typer.Option("16,32", help="conv: channels of the stride-2 3x3 convolutions."),
    out_dir: Optional[Path] = typer.Option(None, "--out", help="Bundle directory (default: models/DATA-KIND, from the data file name and kind)."),
    hidden: str = typer.Option("256,64", help="Hidden layer widths of the encoder (decoder mirrors them)."),
    latent: int = typer.Option(8, help="Size of the code z."),
    activation: Activation = typer.Option(Activation.relu, help="Hidden-layer activation."),
    cost: Cost = typer.Option(Cost.mse, help="Reconstruction cost C: mse = ‖y−ỹ‖² on standardised data, "
                                             "bce = cross-entropy on data scaled to [0, 1]."),
    sparsity: float = typer.Option(0.0, help="ae/dae: weight of R(h) = ‖h‖₁."),
    contraction: float = typer.Option(0.01, help="cae: λ in R(h) = λ‖∂h/∂y‖²_F."),
    beta: float = typer.Option(1.0, help="vae: β in C + β·KL."),
    noise: float = typer.Option(0.1, help="dae: σ of the Gaussian corruption (standardised units)."),
    mask: float = typer.Option(0.0, help="dae: fraction of features zeroed in the corrupted input."),
    infer_steps: int = typer.Option(10, help="lvm: gradient steps inferring ž from z̃ = Enc(y)."),
    infer_lr: float = typer.Option(0.1, help="lvm: step size of the z-inference."),
    distance_weight: float = typer.Option(1.0, help="lvm: μ in D(z, z̃) = μ‖z − z̃‖²."),
    latent_weight: float = typer.Option(0.01, help="lvm: λ in R(z) = λ‖z‖²."),
    energy: EnergyMode = typer.Option(EnergyMode.point, help="lvm/vae scores: point energy, or free energy "
                                      "(lvm: softmin_β over samples around ž; vae: importance-weighted bound)."),
    free_samples: int = typer.Option(64, help="free energy: samples of z (lvm) / importance samples K (vae)."),
    free_beta: float = typer.Option(1.0, help="lvm free energy: inverse temperature β."),
    free_sigma: float = typer.Option(0.5, help="lvm free energy: spread σ of the samples around ž."),
    epochs: int = typer.Option(100, help="Maximum epochs."),
    batch_size: int = typer.Option(128, "--batch-size", help="Rows per optimisation step."),
    lr: float = typer.Option(1e-3, help="Adam learning rate."),
    patience: int = typer.Option(10, help="Stop after this many epochs without a better validation energy."),
    seed: int = typer.Option(0, help="Seed: same seed and data give the same weights."),
    val_fraction: float = typer.Option(0.1, help="Rows held out for early stopping and the threshold."),
    quantile: float = typer.Option(0.99, help="Threshold = this quantile of validation energies."),
    columns: Optional[str] = typer.Option(None, help="Comma-separated feature columns to use (default: all)."),
    drop: Optional[str] = typer.Option(None, help="Comma-separated columns to leave out (ids, labels)."),
    no_export: bool = typer.Option(False, "--no-export", help="Write weights only; export later."),
    force: bool = typer.Option(False, "--force", help="Replace an existing bundle directory."),
    quiet: bool = QUIET_OPT,
) -> None:
    """Train a detector on DATA and write a bundle (weights, manifest, ONNX graphs).

    Example: `aeserve train rows.csv --kind vae --latent 4 --drop id,label --out models/rows-vae`
    """
    from aeserve.train.fit import FitConfig
    from aeserve.train.kinds import ModelConfig
    from aeserve.train.pipeline import train_bundle

    table, image_shape = _training_rows(data, columns, drop, image_size)
    if arch == Arch.conv and not image_shape:
        raise typer.BadParameter("--arch conv trains on a folder of images", param_hint="--arch")
    config = ModelConfig(kind=kind.value, n_features=table.values.shape[1], arch=arch.value,
                         image_shape=image_shape if arch == Arch.conv else (),
                         channels=_int_list(conv_channels, "--conv-channels"),
                         hidden=_int_list(hidden, "--hidden"), latent=latent,
                         activation=activation.value, cost=cost.value, sparsity=sparsity,
                         contraction=contraction, beta=beta, noise=noise, mask=mask,
                         infer_steps=infer_steps, infer_lr=infer_lr, distance_weight=distance_weight,
                         latent_weight=latent_weight, energy=energy.value, free_samples=free_samples,
                         free_beta=free_beta, free_sigma=free_sigma, free_seed=seed)
    fit_config = FitConfig(epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, patience=patience)
    target = out_dir or Path("models") / f"{data.stem}-{kind.value}"
    if not quiet:
        err.print(f"training {kind.value} on {escape(str(data))}: {table.values.shape[0]:,} rows x "
                  f"{table.values.shape[1]} features")
    result = _train_with_progress(train_bundle, table, target, config, fit_config, quantile,
                                  val_fraction, not no_export, force, quiet)
    if not quiet:
        fit = result.fit
        err.print(f"[green]saved[/] {escape(str(result.path))}: best epoch {fit.best_epoch}/"
                  f"{len(fit.val_energy)} ({fit.stopped}), val energy {min(fit.val_energy):.4g}, "
                  f"threshold {result.threshold:.4g} ({quantile} quantile)"
                  + ("" if no_export else "; ONNX graphs exported and checked"))


def _training_rows(data: Path, columns, drop, image_size):
    """A table to train on, and the image shape (C, H, W) when DATA is a folder of images."""
    from aeserve.serve.images import image_files, image_shape_of, is_image_dir, load_images
    from aeserve.tables import Table, read_table

    if not is_image_dir(data):
        return read_table(data, columns=_csv_list(columns), drop=_csv_list(drop)), ()
    files = image_files(data)
    size = _int_list(image_size, "--image-size") if image_size else None
    if size is not None and len(size) != 2:
        raise typer.BadParameter("expected HEIGHT,WIDTH such as 28,28", param_hint="--image-size")
    shape = image_shape_of(files[0], size)
    values = load_images(files, shape)
    return Table(values, [f"px{i}" for i in range(values.shape[1])], str(data)), shape


def _train_with_progress(train_bundle, table, target, config, fit_config, quantile, val_fraction,
                         export, force, quiet):
    if quiet:
        return train_bundle(table, target, config, fit_config, quantile=quantile,
                            val_fraction=val_fraction, export=export, force=force)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("epoch"), MofNCompleteColumn(), BarColumn(),
                  TextColumn("{task.description}"), TimeElapsedColumn(), console=err) as bar:
        task = bar.add_task("", total=fit_config.epochs)

        def on_epoch(epoch: int, train_energy: float, val_energy: float) -> None:
            bar.update(task, completed=epoch,
                       description=f"train energy {train_energy:.4g}  val energy {val_energy:.4g}")

        result = train_bundle(table, target, config, fit_config, quantile=quantile,
                              val_fraction=val_fraction, export=export, force=force,
                              on_epoch=on_epoch)
        bar.update(task, total=len(result.fit.val_energy))
    return result


@app.command()
@user_errors
def export(
    bundle: Path = BUNDLE_ARG,
    format: ExportFormat = typer.Option(ExportFormat.onnx, "--format", "-f", help="What to export."),
    batch: str = typer.Option("1,1024,8192", help="tensorrt: optimisation profile batch sizes min,opt,max."),
    fp16: bool = typer.Option(False, "--fp16", help="tensorrt: FP16 plans (TensorRT 11: from an FP16 ONNX graph)."),
    workspace: int = typer.Option(1024, help="tensorrt: builder workspace limit in MiB."),
    require_tensorrt: bool = typer.Option(False, "--require-tensorrt",
                                          help="tensorrt: fail instead of writing build.sh when TensorRT is missing."),
    out_repo: Optional[Path] = typer.Option(None, "--out", help="triton: the model repository directory."),
    max_batch_size: int = typer.Option(8192, help="triton: max_batch_size of each model."),
    use_plans: bool = typer.Option(False, "--use-plans", help="triton: ship the TensorRT plans instead of ONNX."),
    quantize: Optional[Precision] = typer.Option(None, "--quantize",
                                                 help="onnx: also write int8 graphs (dynamic quantisation), if safe."),
    quiet: bool = QUIET_OPT,
) -> None:
    """Export a bundle's encoder, decoder and energy graphs: ONNX (checked against torch), or
    TensorRT plans for this GPU (without TensorRT: a build.sh of trtexec lines for the GPU host).

    Example: `aeserve export models/rows-ae --format tensorrt --batch 1,1024,8192 --fp16`

    Example: `aeserve export models/rows-ae --format triton --out triton-repo`
    """
    if format == ExportFormat.triton:
        from aeserve.export.triton import export_triton

        if out_repo is None:
            raise typer.BadParameter("give the repository directory", param_hint="--out")
        written = export_triton(bundle, out_repo, max_batch_size, use_plans=use_plans)
        if not quiet:
            err.print(f"[green]wrote[/] Triton models {', '.join(p.name for p in written)} to {escape(str(out_repo))}")
        return
    if format == ExportFormat.onnx:
        from aeserve.export.onnx import export_onnx

        if quantize == Precision.int8:
            from aeserve.export.quantize import quantize_int8

            if not (bundle / "energy.onnx").is_file():
                export_onnx(bundle)
            errors = quantize_int8(bundle)
            if not quiet:
                err.print(f"[green]quantised[/] to int8: energy median relative error "
                          f"{errors['energy_median_relative_error']:.2%}, rank agreement "
                          f"{errors['energy_rank_agreement']:.4f}; use --precision int8")
            return
        parity = export_onnx(bundle)
        if not quiet:
            worst = max(e for errors in parity.values() for e in errors.values())
            err.print(f"[green]exported[/] {', '.join(f'{g}.onnx' for g in parity)} to {escape(str(bundle))}; "
                      f"max abs error vs torch {worst:.2g}")
        return
    from aeserve.export.tensorrt import Profile, build_tensorrt

    result = build_tensorrt(bundle, Profile.parse(batch), fp16, workspace, require_tensorrt)
    if not quiet:
        err.print(("[green]built[/] " if result.built else "[yellow]note[/]: ") + escape(result.message))


class Engine(str, Enum):
    """Where ``score`` runs: this process, or a Ray cluster through Ray Data."""

    local = "local"
    ray = "ray"


@app.command()
@user_errors
def score(
    bundle: Path = BUNDLE_ARG,
    data: list[Path] = typer.Argument(..., help=DATA_HELP, show_default=False),
    output: Path = typer.Option(..., "--output", "-o", show_default=False,
                                help="Output file (.csv, .parquet, .npy); with --engine ray a directory of Parquet files."),
    backend: Backend = BACKEND_OPT,
    batch_size: int = BATCH_OPT,
    device: Device = DEVICE_OPT,
    precision: Precision = PRECISION_OPT,
    threshold: Optional[float] = typer.Option(None, help="Energy above which a row is an anomaly (default: the bundle threshold)."),
    engine: Engine = typer.Option(Engine.local, help="local, or ray: Ray Data over a local Ray or a cluster."),
    address: Optional[str] = typer.Option(None, help="ray: cluster address (ray://host:10001 or auto); default a local Ray."),
    id_column: Optional[str] = ID_OPT,
    on_error: OnError = ON_ERROR_OPT,
    save_reconstructions: Optional[Path] = typer.Option(
        None, help="Images: write each one's reconstruction and per-pixel energy map as PNG here."),
    quiet: bool = QUIET_OPT,
    as_json: bool = JSON_OPT,
) -> None:
    """Score DATA for anomalies: one output row per input row, in order, with columns
    row (or --id-column), source (several inputs), energy, its terms and anomaly (0/1);
    a .npy output holds the score columns only. Files of any size stream in flat memory.

    Example: `aeserve score models/rows-ae new_rows.csv -o scores.parquet`

    Example: `aeserve score models/rows-ae 'day-*.csv' --id-column id --on-error skip -o scores.csv`

    Example: `aeserve score models/rows-ae shards/*.parquet -o scored/ --engine ray --id-column id`
    """
    if engine == Engine.ray:
        from aeserve.serve.ray_engine import score_with_ray

        result = score_with_ray(bundle, data, output, address=address, threshold=threshold,
                                backend=backend.value, id_column=id_column, batch_size=batch_size or 4096)
        if as_json:
            out.print_json(json.dumps({"verb": "scored", "engine": "ray", **result}))
        elif not quiet:
            err.print(f"scored {result['rows']:,} rows with Ray Data -> {escape(result['output'])} "
                      f"| {result['rows'] / result['seconds']:,.0f} rows/s (Ray start-up included)")
        return
    from aeserve.serve.files import score_file

    model = _open_model(bundle, backend, batch_size, device, precision.value)
    with _row_progress(not (quiet or as_json), "scoring") as bar:
        summary = score_file(model, data, output, threshold, _progress_callback(bar), id_column, on_error.value)
    if save_reconstructions is not None:
        from aeserve.serve.files import save_reconstructions as write_pictures

        count = write_pictures(model, data, save_reconstructions)
        if not quiet:
            err.print(f"wrote reconstructions and energy maps of {count} images to {escape(str(save_reconstructions))}")
    anomalies = summary.extra["anomalies"]
    _finish(summary, "scored", quiet, as_json,
            f": {anomalies:,} anomalies ({anomalies / max(summary.rows, 1):.1%}) "
            f"at threshold {summary.extra['threshold']:.4g}")


def _file_verb(name: str, run_name: str, doc: str, arg_help: str) -> None:
    """Register encode / decode / reconstruct, which share their signature."""

    def command(
        bundle: Path = BUNDLE_ARG,
        data: list[Path] = typer.Argument(..., help=arg_help, show_default=False),
        output: Path = OUTPUT_OPT,
        backend: Backend = BACKEND_OPT,
        batch_size: int = BATCH_OPT,
        device: Device = DEVICE_OPT,
        precision: Precision = PRECISION_OPT,
        id_column: Optional[str] = ID_OPT,
        on_error: OnError = ON_ERROR_OPT,
        quiet: bool = QUIET_OPT,
        as_json: bool = JSON_OPT,
    ) -> None:
        from aeserve.serve import files

        model = _open_model(bundle, backend, batch_size, device, precision.value)
        with _row_progress(not (quiet or as_json), name) as bar:
            summary = getattr(files, run_name)(model, data, output, _progress_callback(bar), id_column,
                                               on_error.value)
        _finish(summary, f"{name}d" if name.endswith("e") else f"{name}ed", quiet, as_json)

    command.__doc__ = doc
    command.__name__ = name
    app.command(name=name)(user_errors(command))


_file_verb("encode", "encode_file",
           "Encode rows to codes z0..z{k-1} (a VAE writes μ as z and its logvar columns).\n\n"
           "Example: `aeserve encode models/rows-vae rows.csv -o codes.csv`",
           DATA_HELP)
_file_verb("decode", "decode_file",
           "Decode codes (columns z0..z{k-1}, or a .npy of width k) to rows in raw units.\n\n"
           "Example: `aeserve decode models/rows-vae codes.csv -o rows.csv`",
           "Codes: files, globs or directories of .csv, .parquet (columns z0..) or .npy.")
_file_verb("reconstruct", "reconstruct_file",
           "Reconstruct rows: decode(encode(y)), in raw units.\n\n"
           "Example: `aeserve reconstruct models/rows-ae rows.csv -o rebuilt.csv`",
           DATA_HELP)


@app.command()
@user_errors
def sample(
    bundle: Path = BUNDLE_ARG,
    n: int = typer.Option(100, "-n", help="How many rows to draw."),
    seed: int = typer.Option(0, help="Random seed: same seed, same rows, on every backend."),
    output: Path = OUTPUT_OPT,
    backend: Backend = BACKEND_OPT,
    device: Device = DEVICE_OPT,
    quiet: bool = QUIET_OPT,
) -> None:
    """Draw new rows: codes from the VAE prior (or a Gaussian fitted to training codes), decoded.

    Example: `aeserve sample models/rows-vae -n 1000 --seed 7 -o samples.csv`
    """
    from aeserve.serve.files import sample_file

    if n < 1:
        raise typer.BadParameter("must be >= 1", param_hint="-n")
    summary = sample_file(_open_model(bundle, backend, 0, device), n, output, seed)
    _finish(summary, "sampled", quiet, False)


@app.command()
@user_errors
def info(
    bundle: Path = BUNDLE_ARG,
    as_json: bool = typer.Option(False, "--json", help="Print the whole manifest as JSON."),
) -> None:
    """Show what a bundle holds: kind, inputs, energy, threshold, files, backends available.

    Example: `aeserve info models/rows-ae`
    """
    from aeserve.bundle import Bundle
    from aeserve.serve.backends import available_backends

    opened = Bundle.open(bundle)
    m = opened.manifest
    if as_json:
        out.print_json(json.dumps(m))
        return
    from rich.table import Table

    features = m["input"]["features"]
    training = m.get("training", {})
    table = Table(title=f"bundle {escape(str(bundle))}", show_header=False)
    rows = [
        ("kind", m["kind"]),
        ("input", f"{len(features)} features: {', '.join(features[:5])}{' ...' if len(features) > 5 else ''}"),
        ("preprocessing", m["preprocessing"]["formula"]),
        ("architecture", f"hidden {m['architecture']['hidden']}, latent {m['latent']['size']}, "
                         f"{m['architecture']['activation']}"),
        ("energy", m["energy"]["formula"] + f" (cost {m['energy']['cost']}, regulariser "
                   f"{m['energy']['regulariser']}, weight {m['energy']['weight']})"),
        ("threshold", f"{m['threshold']['value']:.6g} ({m['threshold']['quantile']} quantile of "
                      f"{m['threshold']['rows']} {m['threshold']['on']} energies)"),
        ("sampling", m["latent"]["sampler"]),
        ("training", f"{training.get('data', {}).get('rows', '?')} rows, {training.get('epochs_run', '?')} "
                     f"epochs, best {training.get('best_epoch', '?')}, seed {training.get('seed', '?')}"),
        ("graphs", ", ".join(g["file"] for g in m.get("graphs", {}).values()) or "none (run aeserve export)"),
        ("files", ", ".join(f"{name} ({sha[:8]})" for name, sha in m["files"].items())),
        ("versions", ", ".join(f"{k} {v}" for k, v in m["versions"].items())),
        ("backends here", ", ".join(available_backends()) or "none (pip install 'aeserve[cpu]')"),
        ("auto picks", _auto_choice(opened)),
        ("tensorrt", _tensorrt_status(opened)),
    ]
    for key, value in rows:
        table.add_row(key, escape(str(value)))
    out.print(table)


@app.command()
@user_errors
def serve(
    bundles: list[Path] = typer.Argument(..., help="One or more bundle directories; each is served under its directory name.",
                                         show_default=False),
    host: str = typer.Option("127.0.0.1", help="Address to bind; 0.0.0.0 exposes the server to the network."),
    port: int = typer.Option(8000, help="TCP port."),
    backend: Backend = BACKEND_OPT,
    device: Device = DEVICE_OPT,
    max_batch: int = typer.Option(1024, help="Dynamic batching: most rows per backend call (1 disables it)."),
    max_delay_ms: float = typer.Option(2.0, help="Dynamic batching: longest wait for more requests."),
    max_queue_rows: int = typer.Option(65536, help="Rows that may wait; more get 503 instead of piling up."),
    max_body_mb: float = typer.Option(64.0, help="Larger request bodies get 413."),
    workers: int = typer.Option(1, help="Threads running backend calls."),
) -> None:
    """Serve bundles over HTTP with the KServe v2 / Open Inference Protocol (JSON and binary
    tensors; works with tritonclient.http). Each bundle NAME is served as models NAME (score),
    NAME-encode, NAME-decode and NAME-sample; /metrics gives Prometheus metrics.

    Example: `aeserve serve models/cancer-vae --port 8000 --max-batch 2048`
    """
    try:
        import uvicorn

        from aeserve.serve.http import ServerConfig, create_app
    except ImportError as exc:
        from aeserve.errors import BackendUnavailable

        raise BackendUnavailable(f"serving needs {exc.name}: pip install 'aeserve[serve]'") from None
    models = {}
    for path in bundles:
        name = path.resolve().name
        if name in models:
            raise typer.BadParameter(f"two bundles are named {name!r}", param_hint="BUNDLES")
        models[name] = _open_model(path, backend, 0, device)
    config = ServerConfig(max_batch=max_batch, max_delay_ms=max_delay_ms, max_queue_rows=max_queue_rows,
                          max_body_mb=max_body_mb, workers=workers)
    err.print(f"serving {', '.join(models)} on http://{host}:{port}/v2 "
              f"(backend {escape(next(iter(models.values())).backend.describe())}; "
              f"batching up to {max_batch} rows / {max_delay_ms:g} ms); Ctrl-C stops after in-flight requests")
    uvicorn.run(create_app(models, config), host=host, port=port, log_level="warning",
                timeout_graceful_shutdown=30)


class PlotKind(str, Enum):
    """Which picture ``aeserve plot`` draws."""

    latent = "latent"
    energy = "energy"
    roc = "roc"
    reconstructions = "reconstructions"
    training = "training"


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

    Example: `aeserve plot models/cancer-vae demo/test.csv --what latent --labels label -o latent.png`
    """
    from aeserve.serve.plots import load_plot_data, render

    data_ = load_plot_data(_open_model(bundle, backend, 0), data, labels)
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

    Example: `aeserve report models/cancer-vae demo/test.csv --labels label -o report.html`
    """
    from aeserve.serve.plots import load_plot_data
    from aeserve.serve.report import build_report

    data_ = load_plot_data(_open_model(bundle, backend, 0), data, labels)
    numbers = build_report(data_, output, str(data))
    detail = f" (AUROC {numbers['auroc']:.3f})" if "auroc" in numbers else ""
    err.print(f"[green]wrote[/] {escape(str(output))}{detail}")


@app.command()
@user_errors
def bench(
    bundle: Path = BUNDLE_ARG,
    rows: int = typer.Option(100_000, help="Synthetic rows of the bundle's shape per run."),
    batch_sizes: str = typer.Option("256,1024,4096", help="Batch sizes to try; the best is reported."),
    repeats: int = typer.Option(5, help="Timed runs per setting; the median counts."),
) -> None:
    """Measure energy throughput (rows/s, GFLOP/s) per backend and precision on synthetic rows,
    beside this machine's fp32 MatMul ceiling in ONNX Runtime.

    Example: `aeserve bench models/cancer-vae --rows 200000 --batch-sizes 512,1024,4096`
    """
    from rich.table import Table

    from aeserve.bundle import Bundle
    from aeserve.serve.backends import available_backends
    from aeserve.serve.bench import bench_bundle, ceiling_shapes, dense_flops_per_row, matmul_ceiling

    opened = Bundle.open(bundle)
    here = available_backends()
    plan = [(b, "fp32") for b in ("onnxruntime", "torch") if b in here]
    if "onnxruntime" in here and opened.manifest.get("graphs_int8"):
        plan.insert(1, ("onnxruntime", "int8"))
    shapes = ceiling_shapes(opened)
    ceiling = max(matmul_ceiling(*shape) for shape in shapes) if "onnxruntime" in here else float("nan")
    results = bench_bundle(bundle, plan, list(_int_list(batch_sizes, "--batch-sizes")), rows, repeats)
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


def _auto_choice(bundle) -> str:
    from aeserve.errors import BackendUnavailable
    from aeserve.serve.backends import choose_backend

    try:
        name, reason = choose_backend("auto", bundle)
    except BackendUnavailable as exc:
        return f"nothing: {exc}"
    return f"{name} ({reason})"


def _tensorrt_status(bundle) -> str:
    check = bundle.manifest.get("export", {}).get("tensorrt_check")
    plans = sorted(bundle.manifest.get("tensorrt", {}))
    parse = ("graphs pass the TensorRT parser check" if check and check["parser_compatible"]
             else f"parser check: {'; '.join(check['problems'])}" if check else "not checked (export first)")
    return parse + (f"; plans: {', '.join(plans)}" if plans else "; no plans built")


@app.command()
@user_errors
def demo(
    workdir: Optional[Path] = typer.Option(None, help="Where to write the data, bundle and scores (default: a new temp dir)."),
    kind: Kind = typer.Option(Kind.vae, "--kind", "-k", help="Model kind to train."),
    epochs: int = typer.Option(150, help="Maximum epochs."),
) -> None:
    """Train on scikit-learn's breast-cancer data (benign = normal, malignant = anomalies),
    export to ONNX, score with ONNX Runtime in a torch-free process, print AUROC.

    Example: `aeserve demo --workdir demo --kind lvm`
    """
    from aeserve.train.demo import run_demo

    run_demo(workdir, kind.value, epochs, console=err)


def main(argv: Optional[list[str]] = None) -> None:
    """Console-script entry point: usage errors, like user errors, are one line and exit 2."""
    try:
        code = app(args=argv, standalone_mode=False)
    except typer.Abort:
        err.print("[red]interrupted[/]")
        code = 130
    except Exception as exc:
        # Click's exception protocol (click, or the copy typer vendors): format_message + exit_code.
        if not (hasattr(exc, "format_message") and hasattr(exc, "exit_code")):
            raise
        ctx = getattr(exc, "ctx", None)
        if type(exc).__name__ == "NoArgsIsHelpError" and ctx is not None:
            out.print(ctx.get_help(), markup=False)
            code = 0
        else:
            hint = f" (see: {ctx.command_path} --help)" if ctx is not None else ""
            err.print(f"[bold red]error:[/] {escape(exc.format_message())}{escape(hint)}")
            code = exc.exit_code
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
