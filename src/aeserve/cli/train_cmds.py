"""Verbs that make bundles: ``train`` and ``export``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape

from aeserve.cli import app, err, user_errors
from aeserve.cli.options import (
    QUIET_OPT,
    Activation,
    Arch,
    Cost,
    ExportFormat,
    Kind,
    Precision,
    TrainEngine,
    TrainPrecision,
    csv_list,
    flag_for,
    int_list,
    kind_option_flags,
)
from aeserve.errors import OptionError

__all__ = ["train", "export"]

@app.command()
@user_errors
@kind_option_flags(after="cost")
def train(
    data: list[Path] = typer.Argument(..., help="Training rows: a .csv (with header), .parquet or .npy file, read "
                                                "into memory (text, boolean and missing cells are welcome: such a "
                                                "table's columns are typed and recorded in the bundle); several "
                                                "files, a folder or a quoted glob of numeric shards, streamed from "
                                                "disk in flat memory; or a folder of PNG/JPEG images.",
                                      show_default=False, metavar="DATA"),
    kind: Kind = typer.Option(Kind.ae, "--kind", "-k", help="Model kind."),
    arch: Arch = typer.Option(Arch.mlp, help="mlp; conv: stride-2 convolutions for images; conv1d: stride-2 temporal "
                                             "convolutions along --window (every kind)."),
    window: int = typer.Option(0, "--window", "-w", min=0,
                               help="Series: train on windows of this many consecutive rows of the channel columns "
                                    "(the bundle then scores every row by the window ending at it). 0: rows one by one."),
    stride: int = typer.Option(1, "--stride", min=1, help="Series: rows between the starts of training windows "
                                                           "(scoring takes every window)."),
    time_column: Optional[str] = typer.Option(None, "--time-column", help="Series: order rows by this column "
                                              "(numbers or timestamps); default: file order."),
    group_column: Optional[str] = typer.Option(None, "--group-column", help="Series: each value of this column "
                                               "(a sensor, a machine) is its own series; no window crosses two."),
    max_gap: Optional[str] = typer.Option(None, "--max-gap", help="Series: a step in time larger than this (in the time "
                                          "column's unit, or 90s, 5min, 1h, 1d for timestamps) starts a new series."),
    image_size: Optional[str] = typer.Option(None, help="Images: resize to HEIGHT,WIDTH (default: the first image's)."),
    conv_channels: str = typer.Option("16,32", help="conv: channels of the stride-2 3x3 convolutions."),
    out_dir: Optional[Path] = typer.Option(None, "--out", help="Bundle directory (default: models/DATA-KIND, from the data file name and kind)."),
    hidden: str = typer.Option("256,64", help="Hidden layer widths of the encoder (decoder mirrors them)."),
    latent: int = typer.Option(8, help="Size of the code z."),
    ensemble: int = typer.Option(1, "--ensemble", help="Members whose energies are averaged in one energy graph "
                                 "(each from its own initial weights); codes come from the first."),
    activation: Activation = typer.Option(Activation.relu, help="Hidden-layer activation."),
    cost: Cost = typer.Option(Cost.mse, help="Reconstruction cost C: mse = ‖y−ỹ‖² on standardised data, "
                                                "bce = cross-entropy on data scaled to [0, 1]."),
    epochs: int = typer.Option(100, help="Maximum epochs."),
    batch_size: int = typer.Option(128, "--batch-size", help="Rows per optimisation step."),
    lr: float = typer.Option(1e-3, help="Adam learning rate."),
    patience: int = typer.Option(10, help="Stop after this many epochs without a better validation energy."),
    seed: int = typer.Option(0, help="Seed: same seed and data give the same weights."),
    val_fraction: float = typer.Option(0.1, help="Rows held out for early stopping and the threshold."),
    quantile: float = typer.Option(0.99, help="Threshold = this quantile of validation energies."),
    columns: Optional[str] = typer.Option(None, help="Comma-separated feature columns to use (default: all)."),
    drop: Optional[str] = typer.Option(None, help="Comma-separated columns to leave out (ids, labels)."),
    categorical: Optional[str] = typer.Option(None, help="Comma-separated columns to treat as categories (e.g. an "
                                              "integer code); text columns are categorical already."),
    numeric: Optional[str] = typer.Option(None, help="Comma-separated columns to treat as numbers."),
    log: Optional[str] = typer.Option(None, "--log", help="Numeric columns the model reads on a log scale, "
                                      "sign(y)·log(1+|y|), inside the bundle: comma-separated names (amounts, "
                                      "incomes, counts with a long tail), or 'auto': every column with no negative "
                                      "value and a skewness above 1."),
    min_category_count: int = typer.Option(5, "--min-category-count", min=1,
                                           help="A category seen fewer times in training shares the 'other' "
                                                "slot (with every category never seen)."),
    max_categories: int = typer.Option(100, "--max-categories", min=1,
                                       help="Most categories a column keeps (the most frequent); the rest "
                                            "share the 'other' slot."),
    keep_rows: int = typer.Option(1024, "--keep-rows", min=0,
                                  help="Training and validation rows (up to this many of each) kept in the bundle "
                                       "for static int8 calibration (export --quantize int8); 0 keeps none, for "
                                       "data that must not leave the training machine."),
    stream: bool = typer.Option(False, "--stream", help="Stream DATA from disk even when it is one file (automatic "
                                "for several files, a folder or glob of shards, and a file larger than a quarter of "
                                "this machine's memory): one pass for the statistics, then each epoch read again."),
    shuffle_buffer: int = typer.Option(65_536, "--shuffle-buffer", min=1,
                                       help="Streaming: rows mixed at once (more: better mixed, more memory)."),
    device: str = typer.Option("auto", "--device", help="Where to train: auto (CUDA when torch sees a GPU), cpu, "
                               "cuda or cuda:N. The bundle is the same format whatever trained it."),
    precision: TrainPrecision = typer.Option(TrainPrecision.fp32, "--precision",
                                             help="Training arithmetic: fp32, or bf16/fp16 autocast (fp16 with "
                                                  "loss scaling); validation and the bundle stay fp32."),
    threads: int = typer.Option(0, "--threads", min=0, help="CPU threads for torch (0: torch's default)."),
    checkpoint_every: int = typer.Option(0, "--checkpoint-every", min=0,
                                         help="Write a checkpoint (OUT.checkpoint, safetensors and JSON) every N "
                                              "epochs; 0: only when Ctrl-C or SIGTERM stops the run. (ray: "
                                              "every epoch, for its fault tolerance.)"),
    resume: bool = typer.Option(False, "--resume", help="Go on from OUT.checkpoint (same data and options)."),
    engine: TrainEngine = typer.Option(TrainEngine.local, "--engine",
                                       help="local: this process; ray: data-parallel workers on a Ray cluster "
                                            "(Ray Train, DDP), each reading its own shards."),
    workers: int = typer.Option(2, "--workers", min=1, help="ray: training workers."),
    address: Optional[str] = typer.Option(None, "--address", help="ray: the cluster to join (default: a local "
                                          "Ray, or RAY_ADDRESS)."),
    no_export: bool = typer.Option(False, "--no-export", help="Write weights only; export later."),
    force: bool = typer.Option(False, "--force", help="Replace an existing bundle directory."),
    quiet: bool = QUIET_OPT,
    kind_options: Optional[dict] = None,
) -> None:
    """Train a detector on DATA and write a bundle (weights, manifest, ONNX graphs).

    Options marked with a kind apply to that kind only; giving one to another kind is an error.

    \b
    Examples:
      aeserve train rows.csv --kind vae --latent 4 --drop id,label --out models/rows-vae
      aeserve train credit.csv --kind vae --drop Status --categorical zip_code --min-category-count 10
      aeserve train loans.parquet --kind vae --log Income,Assets,Debt
      aeserve train sensors.csv --window 32 --time-column ts --group-column machine --max-gap 5min
      aeserve train ecg.csv --window 64 --stride 4 --arch conv1d --kind ae
      aeserve train 'sensors/*.parquet' --out models/sensors-ae --checkpoint-every 1 --device cuda --precision bf16
      aeserve train sensors/ --engine ray --workers 4 --address ray://head:10001
    """
    for value, flag in ((quantile, "--quantile"), (val_fraction, "--val-fraction")):
        if not 0.0 < value < 1.0:
            raise typer.BadParameter(f"must be between 0 and 1, got {value}", param_hint=flag)
    streamed = _streams(data, stream, engine.value)
    target = out_dir or Path("models") / f"{_data_name(data)}-{kind.value}"
    if target.exists() and not force and not resume:
        raise typer.BadParameter(f"{target} already exists; pass --force to replace it", param_hint="--out")
    series = _series_options(window, stride, time_column, group_column, max_gap)
    typing = dict(categorical=csv_list(categorical) or (), numeric=csv_list(numeric) or (),
                  min_category_count=min_category_count, max_categories=max_categories, log=log or ())
    fit_options = dict(epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, patience=patience)
    model_options = dict(arch=arch.value, hidden=hidden, latent=latent, members=ensemble, activation=activation.value,
                         cost=cost.value, conv_channels=conv_channels, image_size=image_size, columns=columns,
                         drop=drop, options=kind_options or {})
    run = _run_options(target, device=device, precision=precision.value, threads=threads,
                       checkpoint_every=checkpoint_every, resume=resume)
    if streamed:
        _refuse_for_shards(series=series, image_size=image_size, arch=arch.value)
        with _TrainProgress(epochs, quiet) as progress:  # the typing pass of shards with text columns
            config, fit_config, shards = _shard_configs(data, kind.value, fit=fit_options,
                                                        typing={**typing, "on_rows": progress.typing},
                                                        **model_options)
        if not quiet:
            size = shards.total_bytes
            what = _describe_columns(shards) if shards.specs else f"{len(shards.features)} features"
            err.print(f"training {kind.value} on {len(shards.files)} shard(s) ({size / 2**20:,.1f} MiB), "
                      f"{what}, streamed from disk"
                      + (f" by {workers} Ray workers" if engine.value == "ray" else ""))
            _say_about_columns(log, shards.specs, min_category_count)
        result = _train_shards_with_progress(shards, target, config, fit_config, quiet=quiet, run=run,
                                             engine=engine.value, workers=workers, address=address,
                                             shuffle_buffer=shuffle_buffer, quantile=quantile,
                                             val_fraction=val_fraction, kept_rows=keep_rows,
                                             export=not no_export, force=force or resume)
    else:
        if len(data) != 1:
            raise typer.BadParameter("--engine ray trains on shards; give several files or a folder", param_hint="DATA")
        config, fit_config, table = _configs(data[0], kind.value, series=series, typing=typing, **model_options,
                                             **fit_options)
        if not quiet:
            shape = "" if getattr(table, "window", None) is not None else f"{table.values.shape[0]:,} rows x "
            err.print(f"training {kind.value} on {escape(str(data[0]))}: {shape}{_describe_columns(table)}")
            _say_about_columns(log, table.specs, min_category_count)
        result = _train_with_progress(table, target, config, fit_config, quantile=quantile, val_fraction=val_fraction,
                                      kept_rows=keep_rows, export=not no_export, force=force or resume, quiet=quiet,
                                      **run)
    _remove_checkpoint(run["checkpointing"])
    if not quiet:
        fit = result.fit
        resumed = f", resumed after epoch {fit.resumed_from}" if fit.resumed_from is not None else ""
        speed = f", {fit.rows_per_s:,.0f} rows/s" if fit.rows_per_s else ""
        err.print(f"[green]saved[/] {escape(str(result.path))}: best epoch {fit.best_epoch}/"
                  f"{len(fit.val_energy)} ({fit.stopped}{resumed}{speed}), val energy {min(fit.val_energy):.4g}, "
                  f"threshold {result.threshold:.4g} ({quantile} quantile)"
                  + ("" if no_export else "; ONNX graphs exported and checked"))


def _streams(data: list[Path], stream: bool, engine: str) -> bool:
    """Whether DATA trains streamed from disk: asked for (--stream, --engine ray), several files, a
    glob, a folder that is not of images, or one file larger than a quarter of the memory."""
    import glob

    from aeserve.serve.images import is_image_dir

    if stream or engine == "ray" or len(data) > 1 or glob.has_magic(str(data[0])):
        return True
    path = data[0]
    if path.is_dir():
        return not is_image_dir(path)
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return False
    return path.is_file() and path.stat().st_size > memory // 4


def _data_name(data: list[Path]) -> str:
    """The default bundle name's data part: the file's stem, a folder's name, a glob's folder."""
    import glob

    first = data[0]
    if glob.has_magic(str(first)):
        return first.parent.name or "shards"
    return first.name if first.is_dir() else first.stem


def _refuse_for_shards(*, series, image_size, arch) -> None:
    """Flags that need the whole data in memory, refused with streamed shards."""
    for flag, given in (("--window", series is not None), ("--image-size", image_size), ("--arch", arch != "mlp")):
        if given:
            raise typer.BadParameter("trains from one file in memory; streamed shards (several files, a folder, a "
                                     "glob, --stream) take tables, with the mlp", param_hint=flag)


def _shard_configs(data, kind, *, arch, hidden, latent, members, activation, cost, conv_channels, image_size,
                   columns, drop, options, fit, typing):
    """(ModelConfig, FitConfig, Shards) for training from shards (typed columns when they hold
    text or booleans)."""
    from aeserve.train.mixed import table_options
    from aeserve.train.shards import Shards

    shards = Shards.find(data, columns=csv_list(columns), drop=csv_list(drop), **typing)
    width = shards.encoding.width if shards.encoding is not None else len(shards.features)
    return _model_configs(kind, width, arch=arch, image_shape=(), hidden=hidden, latent=latent,
                          members=members, activation=activation, cost=cost, conv_channels=conv_channels,
                          mixed=table_options(shards.specs), options=options, fit=fit) + (shards,)


def _run_options(target: Path, *, device: str, precision: str, threads: int, checkpoint_every: int,
                 resume: bool) -> dict:
    """``hardware`` and ``checkpointing`` for the training functions, from the flags."""
    import shlex
    import sys

    from aeserve.train.checkpoint import default_checkpoint_dir
    from aeserve.train.device import Hardware
    from aeserve.train.fit import Checkpointing

    try:
        hardware = Hardware(device=device, precision=precision, threads=threads)
        hardware.torch_device()
    except OptionError as exc:
        raise typer.BadParameter(str(exc), param_hint=flag_for(exc.option)) from None
    directory = default_checkpoint_dir(target)
    if resume and not directory.is_dir():
        raise typer.BadParameter(f"no checkpoint at {directory} to resume from", param_hint="--resume")
    argv = ["aeserve", *sys.argv[1:]] if sys.argv and Path(sys.argv[0]).name in ("aeserve", "__main__.py") else []
    command = " ".join(shlex.quote(a) for a in argv + (["--resume"] if "--resume" not in argv else []))
    return {"hardware": hardware,
            "checkpointing": Checkpointing(directory, every=checkpoint_every, resume=resume,
                                           command=command or "the same command with --resume")}


def _remove_checkpoint(checkpointing) -> None:
    """A run that wrote its bundle needs its checkpoint no more."""
    import shutil

    shutil.rmtree(checkpointing.directory, ignore_errors=True)


def _series_options(window: int, stride: int, time_column, group_column, max_gap) -> dict | None:
    """The series flags as ``read_series_table``'s options; None without --window (a flag that
    needs it is an error)."""
    from aeserve.series import parse_duration

    if not window:
        given = [flag for flag, value in (("--stride", stride != 1), ("--time-column", time_column),
                                          ("--group-column", group_column), ("--max-gap", max_gap)) if value]
        if given:
            raise typer.BadParameter("applies to series: give --window W too", param_hint=given[0])
        return None
    if max_gap is not None and not time_column:
        raise typer.BadParameter("needs --time-column (the gap is a step in time)", param_hint="--max-gap")
    return dict(size=window, stride=stride, time_column=time_column, group_column=group_column,
                max_gap=parse_duration(max_gap) if max_gap is not None else None)


def _describe_columns(table) -> str:
    """'8 features', a mixed table's '13 columns (8 numeric, 5 categorical; 455 missing cells; on a
    log scale: Income, Assets)', or
    a series' '3 channels in 9,800 windows of 32 rows (10,000 rows, 4 series)'; shards' like a table."""
    from aeserve.readers import preview

    if getattr(table, "window", None) is not None:
        w = table.window
        return (f"{len(w.channels)} channels in {table.values.shape[0]:,} windows of {w.size} rows "
                f"({table.rows:,} rows, {int(table.series.max()) + 1 if len(table.series) else 0} series)")
    if not table.specs:
        return f"{table.values.shape[1]} features"
    counts = {t: sum(c.type == t for c in table.specs) for t in ("numeric", "binary", "categorical")}
    kinds = ", ".join(f"{n} {t}" for t, n in counts.items() if n)
    logged = [c.name for c in table.specs if c.transform == "log"]
    scale = f"; on a log scale: {escape(preview(logged))}" if logged else ""
    return f"{len(table.specs)} columns ({kinds}; {sum(c.missing for c in table.specs):,} missing cells{scale})"


def _say_about_columns(log, specs, min_category_count: int) -> None:
    """What a user would not see from the summary: a text column with no category kept (an id, a
    name: every value is "other", so it adds nothing), and ``--log auto`` that found no column to
    read on a log scale (else the summary names them)."""
    from aeserve.readers import preview
    from aeserve.transforms import parse_log

    empty = [c.name for c in specs if c.type == "categorical" and not c.vocabulary]
    if empty:
        one = len(empty) == 1
        err.print(f"{'column' if one else 'columns'} {escape(preview(empty))}: no value seen {min_category_count} "
                  f"times or more (--min-category-count), so every value is '(other)' and {'it adds' if one else 'they add'} "
                  f"nothing; --drop {'it' if one else 'them'}, or lower --min-category-count")
    if parse_log(log) == "auto" and not any(c.transform for c in specs):
        err.print("--log auto: no numeric column is both never negative and skewed (skewness above 1); "
                  "every column is read as it is")


def _quantize(bundle: Path, calibration_data: Optional[Path], *, quiet: bool) -> None:
    """--quantize int8: onnxruntime's dynamic int8, then OpenVINO's static int8 when NNCF is
    installed; each refused on its own when its energies stray. Fails only when both are refused."""
    import importlib.util

    from aeserve.errors import ExportError
    from aeserve.export.quantize import quantize_int8

    calibration = None
    if calibration_data is not None:
        from aeserve.bundle import Bundle
        from aeserve.tables import read_model_rows

        calibration = read_model_rows(calibration_data, Bundle.open(bundle).manifest.input)[0]
    makers = {"onnxruntime dynamic int8": lambda: quantize_int8(bundle)}
    if importlib.util.find_spec("nncf") and importlib.util.find_spec("openvino"):
        from aeserve.export.openvino_int8 import quantize_static_int8

        makers["OpenVINO static int8"] = lambda: quantize_static_int8(bundle, calibration)
    elif not quiet:
        err.print("[yellow]note[/]: OpenVINO static int8 skipped: pip install 'aeserve[openvino]' nncf")
    refused = []
    for what, make in makers.items():
        try:
            errors = make()
        except ExportError as exc:
            refused.append(str(exc))
            if not quiet:
                err.print(f"[yellow]refused[/] {what}: {escape(str(exc))}")
            continue
        if not quiet:
            err.print(f"[green]quantised[/] {what}: energy median relative error "
                      f"{errors['energy_median_relative_error']:.2%}, Spearman vs fp32 "
                      f"{errors['energy_rank_agreement']:.4f}")
    if len(refused) == len(makers):
        raise ExportError(refused[0] if len(refused) == 1 else "; ".join(refused))
    if not quiet:
        err.print("score with --precision int8 (or auto: the fastest, measured)")


def _configs(data, kind, *, arch, hidden, latent, members, activation, cost, conv_channels, image_size, columns,
             drop, options, typing=None, series=None, **fit):
    """(ModelConfig, FitConfig, table) from the flags; an OptionError becomes a BadParameter naming the flag."""
    if arch == "conv1d" and series is None:  # before reading: the flags alone decide
        raise typer.BadParameter("--arch conv1d trains on windows of a series: give --window W", param_hint="--arch")
    if series is not None:
        from aeserve.tables import read_series_table

        if typing and (typing.get("categorical") or typing.get("numeric") or typing.get("log")):
            raise typer.BadParameter("a series' channels are numbers; --categorical/--numeric/--log apply to tables",
                                     param_hint="--categorical" if typing.get("categorical") else
                                     "--numeric" if typing.get("numeric") else "--log")
        table = read_series_table(data, columns=csv_list(columns), drop=csv_list(drop), **series)
        window = table.window
        image_shape = (len(window.channels), 1, window.size)  # conv1d: channels x 1 x window
    else:
        table, image_shape = _training_rows(data, columns, drop, image_size, typing or {})
    if arch == "conv" and (not image_shape or series is not None):
        raise typer.BadParameter("--arch conv trains on a folder of images (series: --arch conv1d)", param_hint="--arch")
    from aeserve.train.mixed import table_options

    mixed = table_options(table.specs)  # a mixed table: its layout and the lecture's cost per column type
    image_shape = image_shape if arch in ("conv", "conv1d") else ()
    return _model_configs(kind, table.values.shape[1], arch=arch, image_shape=image_shape, hidden=hidden,
                          latent=latent, members=members, activation=activation, cost=cost,
                          conv_channels=conv_channels, mixed=mixed, options=options, fit=fit) + (table,)


def _model_configs(kind, n_features, *, arch, image_shape, hidden, latent, members, activation, cost, conv_channels,
                   mixed, options, fit):
    """(ModelConfig, FitConfig) from the flags; an OptionError becomes a BadParameter naming the flag."""
    from aeserve.train.config import ModelConfig
    from aeserve.train.fit import FitConfig
    from aeserve.train.registry import get_kind

    if "free_seed" in get_kind(kind).options_type.names():
        options = {**options, "free_seed": fit["seed"]}
    try:
        config = ModelConfig(kind=kind, n_features=n_features, arch=arch, image_shape=image_shape,
                             channels=int_list(conv_channels, "--conv-channels"), hidden=int_list(hidden, "--hidden"),
                             latent=latent, members=members, activation=activation, **{"cost": cost, **mixed},
                             **options)
        fit_config = FitConfig(**fit)
    except OptionError as exc:
        raise typer.BadParameter(str(exc), param_hint=flag_for(exc.option)) from None
    return config, fit_config


def _training_rows(data: Path, columns, drop, image_size, typing: dict):
    """A table to train on (typed columns when it holds text, booleans or missing cells), and the
    image shape (C, H, W) when DATA is a folder of images."""
    from aeserve.serve.images import image_files, image_shape_of, is_image_dir, load_images
    from aeserve.tables import Table, read_training_table

    if not is_image_dir(data):
        if image_size:
            raise typer.BadParameter(f"applies to a folder of images; {data} is a table", param_hint="--image-size")
        return read_training_table(data, columns=csv_list(columns), drop=csv_list(drop), **typing), ()
    for flag in ("categorical", "numeric", "log"):
        if typing.get(flag):
            raise typer.BadParameter(f"applies to a table's columns; {data} is a folder of images", param_hint=f"--{flag}")
    files = image_files(data)
    size = int_list(image_size, "--image-size") if image_size else None
    if size is not None and len(size) != 2:
        raise typer.BadParameter("expected HEIGHT,WIDTH such as 28,28", param_hint="--image-size")
    shape = image_shape_of(files[0], size)
    values = load_images(files, shape)
    return Table(values, [f"px{i}" for i in range(values.shape[1])], str(data)), shape


class _TrainProgress:
    """The bars of a training run: the statistics pass over shards (rows read), then one bar per
    epoch (rows, rows/s, time left in the epoch, the last energies); nothing when quiet."""

    def __init__(self, epochs: int, quiet: bool):
        self.epochs, self.quiet, self.bar, self.task, self.last = epochs, quiet, None, None, 0.0
        self.energies = ""

    def __enter__(self) -> "_TrainProgress":
        if not self.quiet:
            from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

            self.bar = Progress(TextColumn("{task.description}"), BarColumn(bar_width=20),
                                TextColumn("{task.completed:,.0f}/{task.total:,.0f} rows"),
                                TextColumn("{task.fields[rate]}"), TimeRemainingColumn(), TextColumn("left"),
                                TextColumn("{task.fields[energies]}"), console=err)
            self.bar.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.__exit__(*exc)

    def _show(self, description: str, done: int, total: int, force: bool = False) -> None:
        import time

        if self.bar is None:
            return
        now = time.perf_counter()
        if not force and now - self.last < 0.1:  # a few updates a second, not one per batch
            return
        self.last = now
        if self.task is None or self.bar.tasks[0].description.split()[0] != description.split()[0]:
            if self.task is not None:
                self.bar.remove_task(self.task)
            self.task = self.bar.add_task(description, total=total, rate="", energies=self.energies)
        task = self.bar.tasks[0]
        elapsed = task.elapsed or 0.0
        rate = f"{done / elapsed:,.0f} rows/s" if elapsed > 0 and done else ""
        self.bar.update(self.task, description=description, completed=done, total=total, rate=rate,
                        energies=self.energies)

    def scan(self, rows: int) -> None:
        """on_scan: rows read by the statistics pass (total unknown: shown as it grows)."""
        self._scanned = getattr(self, "_scanned", 0) + rows
        self._show("statistics", self._scanned, self._scanned, force=True)

    def typing(self, rows: int) -> None:
        """on_rows of the typing pass over shards with text columns (categories, missing cells)."""
        self._typed = getattr(self, "_typed", 0) + rows
        self._show("typing", self._typed, self._typed, force=True)

    def batch(self, epoch: int, done: int, total: int) -> None:
        """on_batch: rows done of this epoch."""
        if self.bar is not None and self.task is not None and self.bar.tasks[0].completed > done:
            self.bar.reset(self.task)  # a new epoch: rows/s and time left start over
        self._show(f"epoch {epoch}/{self.epochs}", done, total, force=done >= total)

    def epoch(self, epoch: int, train_energy: float, val_energy: float) -> None:
        """on_epoch: the energies of the epoch just ended."""
        self.energies = f"train {train_energy:.4g}  val {val_energy:.4g}"
        if self.bar is not None and self.task is not None:
            self.bar.update(self.task, energies=self.energies)


def _train_with_progress(table, target, config, fit_config, *, quiet: bool, **options):
    """train_bundle with the epoch bars (unless quiet)."""
    from aeserve.train.pipeline import train_bundle

    with _TrainProgress(fit_config.epochs, quiet) as progress:
        return train_bundle(table, target, config, fit_config, on_epoch=progress.epoch, on_batch=progress.batch,
                            **options)


def _train_shards_with_progress(shards, target, config, fit_config, *, quiet: bool, run: dict, engine: str,
                                workers: int, address, shuffle_buffer: int, **options):
    """train_shards (or its Ray Train form) with the statistics and epoch bars (unless quiet)."""
    from aeserve.train.streaming import StreamOptions, train_shards

    stream = StreamOptions(shuffle_buffer=shuffle_buffer)
    with _TrainProgress(fit_config.epochs, quiet) as progress:
        if engine == "ray":
            from aeserve.train.ray_train import train_shards_ray

            return train_shards_ray(shards, target, config, fit_config, workers=workers, address=address,
                                    options=stream, on_scan=progress.scan, **run,
                                    **options)
        return train_shards(shards, target, config, fit_config, options=stream, on_scan=progress.scan,
                            on_epoch=progress.epoch, on_batch=progress.batch, **run, **options)


@app.command()
@user_errors
def export(
    bundle: Path = typer.Argument(..., help="Bundle directory (made by `aeserve train`).", show_default=False),
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
                                                 help="onnx: int8 writes int8 graphs, each kept only if its energies "
                                                      "rank rows as fp32 does: onnxruntime dynamic, and (with nncf "
                                                      "installed) OpenVINO static, calibrated on the rows the "
                                                      "bundle kept from training."),
    calibration_data: Optional[Path] = typer.Option(None, "--calibration-data",
                                                    help="--quantize int8: rows to calibrate static int8 on (.csv, "
                                                         ".parquet, .npy with the bundle's features), for a bundle "
                                                         "trained with --keep-rows 0."),
    quiet: bool = QUIET_OPT,
) -> None:
    """Export a bundle's encoder, decoder and energy graphs: ONNX (checked against torch), or
    TensorRT plans for this GPU (without TensorRT: a build.sh of trtexec lines for the GPU host).

    \b
    Examples:
      aeserve export models/rows-ae --format tensorrt --batch 1,1024,8192 --fp16
      aeserve export models/rows-ae --format triton --out triton-repo
    """
    if format == ExportFormat.triton:
        from aeserve.export.triton import export_triton

        if out_repo is None:
            raise typer.BadParameter("give the repository directory", param_hint="--out")
        written = export_triton(bundle, out_repo, max_batch_size=max_batch_size, use_plans=use_plans)
        if not quiet:
            err.print(f"[green]wrote[/] Triton models {', '.join(p.name for p in written)} to {escape(str(out_repo))}")
        return
    if format == ExportFormat.onnx:
        from aeserve.export.onnx import export_onnx

        if quantize is not None:
            if quantize != Precision.int8:
                raise typer.BadParameter("only int8 is a quantisation", param_hint="--quantize")
            if not (bundle / "energy.onnx").is_file():
                export_onnx(bundle)
            _quantize(bundle, calibration_data, quiet=quiet)
            return
        parity = export_onnx(bundle)
        if not quiet:
            worst = max(e for errors in parity.values() for e in errors.values())
            err.print(f"[green]exported[/] {', '.join(f'{g}.onnx' for g in parity)} to {escape(str(bundle))}; "
                      f"max abs error vs torch {worst:.2g}")
        return
    from aeserve.export.tensorrt import Profile, build_tensorrt

    result = build_tensorrt(bundle, Profile.parse(batch), fp16=fp16, workspace_mb=workspace,
                            require_tensorrt=require_tensorrt)
    if not quiet:
        err.print(("[green]built[/] " if result.built else "[yellow]note[/]: ") + escape(result.message))
