"""File verbs: ``score``, ``encode``, ``decode``, ``reconstruct`` and ``sample``, file to file,
streamed, without torch."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Callable, Optional

import typer
from rich.markup import escape

from aeserve.cli import app, err, out, user_errors
from aeserve.cli.options import (
    BACKEND_OPT,
    BATCH_OPT,
    BUNDLE_ARG,
    DATA_HELP,
    DEVICE_OPT,
    ID_OPT,
    JSON_OPT,
    ON_ERROR_OPT,
    OUTPUT_OPT,
    PRECISION_OPT,
    QUIET_OPT,
    Backend,
    Device,
    Engine,
    OnError,
    Precision,
    WindowScore,
    finish,
    open_model,
    progress_callback,
    row_progress,
)

__all__ = ["score", "sample"]  # and encode, decode, reconstruct: registered by _file_verb

CODES_HELP = "Codes: files, globs or directories of .csv, .parquet (columns z0..) or .npy."


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
    fdr: Optional[float] = typer.Option(None, "--fdr", metavar="ALPHA", help=(
        "Flag rows by Benjamini-Hochberg over their p-values instead of a threshold: of the rows flagged, at most "
        "a share ALPHA are expected to be normal. Decided over all the input's rows at once (a second pass over "
        "the scores; memory stays flat). The server decides each request on its own.")),
    engine: Engine = typer.Option(Engine.local, help="local, or ray: Ray Data over a local Ray or a cluster."),
    address: Optional[str] = typer.Option(None, help="ray: cluster address (ray://host:10001 or auto); default a local Ray."),
    id_column: Optional[str] = ID_OPT,
    on_error: OnError = ON_ERROR_OPT,
    save_reconstructions: Optional[Path] = typer.Option(
        None, help="Images: write each one's reconstruction and per-pixel energy map as PNG here."),
    explain: int = typer.Option(0, "--explain", help="Add feature_1..K and share_1..K: the K features with the largest "
                                "terms of the reconstruction cost (exact: C is a sum over features) and their shares; "
                                "a series' cells name channel and lag (load@t-3: three rows before the scored one)."),
    window_score: WindowScore = typer.Option(WindowScore.last, "--window-score", help=(
        "Series bundles: a row's score from the windows that contain it. last: the window ending at the row (never "
        "waits for later rows; the first W-1 rows of a series get none: energy NaN, windows 0); mean: the mean of "
        "the up to W windows containing it; max: the highest of them. mean and max wait for the W-1 rows after.")),
    max_delay_ms: float = typer.Option(10.0, "--max-delay-ms", min=0.0, help=(
        "Standard input (DATA '-'): the longest a row waits before it is scored with the rows that came with it.")),
    quiet: bool = QUIET_OPT,
    as_json: bool = JSON_OPT,
) -> None:
    """Score DATA for anomalies: one output row per input row, in order, with columns
    row (or --id-column), source (several inputs), energy, its terms, p_value and anomaly (0/1);
    a .npy output holds the score columns only. Files of any size stream in flat memory.

    p_value = (1 + held-out energies >= energy) / (held-out rows + 1): the share of the
    validation rows held out at training that score at least as high (conformal: for normal
    rows, P(p_value <= a) <= a).

    \b
    A series bundle (trained with --window) writes one row per input row too, with its time and
    group columns and windows: how many windows scored the row. Its files given in order are one
    series: each group's last rows carry from one chunk and file to the next, so daily files
    score as the single file would. DATA '-' reads CSV rows from standard input as they come and
    -o - writes each row's score as soon as it has one (within --max-delay-ms).

    \b
    Examples:
      aeserve score models/rows-ae new_rows.csv -o scores.parquet
      aeserve score models/rows-ae 'day-*.csv' --id-column id --on-error skip -o scores.csv
      aeserve score models/rows-ae shards/*.parquet -o scored/ --engine ray --id-column id
      aeserve score models/rows-ae new_rows.csv --explain 3 -o explained.csv
      aeserve score models/rows-ae new_rows.csv --fdr 0.05 -o flagged.csv
      aeserve score models/sensors-ae day-1.csv day-2.csv --window-score max -o scores.parquet
      tail -f sensors.csv | aeserve score models/sensors-ae - -o -
    """
    if explain < 0:
        raise typer.BadParameter(f"must be >= 0, got {explain}", param_hint="--explain")
    if threshold is not None and not math.isfinite(threshold):
        raise typer.BadParameter(f"must be a finite number, got {threshold}", param_hint="--threshold")
    if fdr is not None and not 0.0 < fdr < 1.0:
        raise typer.BadParameter(f"must be between 0 and 1, got {fdr}", param_hint="--fdr")
    if fdr is not None and threshold is not None:
        raise typer.BadParameter("give --threshold or --fdr, not both", param_hint="--fdr")
    if str(data[0]) == "-" or str(output) == "-":
        _score_stream(bundle, data, output, backend=backend, batch_size=batch_size, device=device,
                      precision=precision, threshold=threshold, explain=explain, window_score=window_score.value,
                      max_delay_ms=max_delay_ms, engine=engine, fdr=fdr, id_column=id_column, on_error=on_error)
        return
    if engine == Engine.ray:
        if window_score != WindowScore.last:
            raise typer.BadParameter("series run with --engine local", param_hint="--window-score")
        if fdr is not None:
            raise typer.BadParameter("--fdr runs with --engine local (it decides over all rows at once)",
                                     param_hint="--fdr")
        if explain:
            raise typer.BadParameter("--explain runs with --engine local", param_hint="--explain")
        from aeserve.serve.ray_engine import score_with_ray

        result = score_with_ray(bundle, data, output, address=address, threshold=threshold,
                                backend=backend.value, id_column=id_column, batch_size=batch_size or 4096)
        if as_json:
            out.print_json(json.dumps({"verb": "scored", "engine": "ray", **result}))
        elif not quiet:
            err.print(f"scored {result['rows']:,} rows with Ray Data -> {escape(result['output'])} "
                      f"| {result['rows'] / result['seconds']:,.0f} rows/s (Ray start-up included)")
        return
    from aeserve.serve.files import save_reconstructions as write_pictures
    from aeserve.serve.files import score_file

    model = open_model(bundle, backend, batch_size=batch_size, device=device, precision=precision.value)
    if explain > len(model.features):
        raise typer.BadParameter(f"the model has {len(model.features)} features, got {explain}", param_hint="--explain")
    with row_progress(not (quiet or as_json), "scoring") as bar:
        summary = score_file(model, data, output, threshold=threshold, progress=progress_callback(bar),
                             id_column=id_column, on_error=on_error.value, explain=explain, fdr=fdr,
                             window_score=window_score.value)
    if save_reconstructions is not None:
        count = write_pictures(model, data, save_reconstructions)
        if not quiet:
            err.print(f"wrote reconstructions and energy maps of {count} images to {escape(str(save_reconstructions))}")
    anomalies = summary.extra["anomalies"]
    rule = f"at threshold {summary.extra['threshold']:.4g}" if fdr is None else \
        f"by Benjamini-Hochberg at FDR {fdr:g}"
    finish(summary, "scored", quiet=quiet, as_json=as_json,
           detail=f": {anomalies:,} anomalies ({anomalies / max(summary.rows, 1):.1%}) {rule}")


def _score_stream(bundle: Path, data: list[Path], output: Path, *, backend, batch_size, device, precision, threshold,
                  explain, window_score, max_delay_ms, engine, fdr, id_column, on_error) -> None:
    """``aeserve score BUNDLE - -o -``: rows from standard input as they arrive, each row's score
    written as soon as it has one (see ``aeserve.serve.live``)."""
    from aeserve.serve.live import score_live

    if [str(d) for d in data] != ["-"] or str(output) != "-":
        raise typer.BadParameter("standard input goes with standard output: aeserve score BUNDLE - -o -",
                                 param_hint="DATA")
    for flag, given in (("--fdr", fdr is not None), ("--engine", engine != Engine.local),
                        ("--id-column", id_column is not None), ("--on-error", on_error != OnError.fail)):
        if given:
            raise typer.BadParameter("applies to files, not to a stream on standard input", param_hint=flag)
    model = open_model(bundle, backend, batch_size=batch_size, device=device, precision=precision.value,
                       hint="latency")
    try:
        summary = score_live(model, threshold=threshold, explain=explain, window_score=window_score,
                             max_delay_ms=max_delay_ms)
    except BrokenPipeError:  # the reader of standard output went away (| head): nothing more to say
        raise typer.Exit(0) from None
    err.print(f"scored {summary.rows:,} rows from standard input; latency row in -> score out: median "
              f"{summary.extra['latency_ms_median']:.1f} ms, p99 {summary.extra['latency_ms_p99']:.1f} ms"
              + ("; interrupted" if summary.interrupted else ""))
    if summary.interrupted:
        raise typer.Exit(130)


def _files():
    """``aeserve.serve.files``, imported when a verb runs, so that ``aeserve --help`` stays fast."""
    from aeserve.serve import files

    return files


def _file_verb(name: str, done: str, run: Callable, data_help: str, doc: str) -> None:
    """Register the streamed file-to-file verb ``name`` (encode, decode, reconstruct): every one
    takes the same flags; ``run()`` gives the function of ``aeserve.serve.files`` it calls."""

    def verb(
        bundle: Path = BUNDLE_ARG,
        data: list[Path] = typer.Argument(..., help=data_help, show_default=False, metavar="DATA"),
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
        model = open_model(bundle, backend, batch_size=batch_size, device=device, precision=precision.value)
        with row_progress(not (quiet or as_json), done) as bar:
            summary = run()(model, data, output, progress=progress_callback(bar), id_column=id_column,
                            on_error=on_error.value)
        finish(summary, done, quiet=quiet, as_json=as_json)

    verb.__doc__ = doc
    verb.__name__ = name
    app.command(name)(user_errors(verb))


_file_verb("encode", "encoded", lambda: _files().encode_file, DATA_HELP,
           """Encode rows to codes z0..z{k-1} (a VAE writes μ as z and its logvar columns).

    \b
    Example:
      aeserve encode models/rows-vae rows.csv -o codes.csv
    """)
_file_verb("decode", "decoded", lambda: _files().decode_file, CODES_HELP,
           """Decode codes (columns z0..z{k-1}, or a .npy of width k) to rows in raw units.

    \b
    Example:
      aeserve decode models/rows-vae codes.csv -o rows.csv
    """)
_file_verb("reconstruct", "reconstructed", lambda: _files().reconstruct_file, DATA_HELP,
           """Reconstruct rows: decode(encode(y)), in raw units.

    \b
    Example:
      aeserve reconstruct models/rows-ae rows.csv -o rebuilt.csv
    """)


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

    \b
    Example:
      aeserve sample models/rows-vae -n 1000 --seed 7 -o samples.csv
    """
    from aeserve.serve.files import sample_file

    if n < 1:
        raise typer.BadParameter("must be >= 1", param_hint="-n")
    summary = sample_file(open_model(bundle, backend, device=device), n, output, seed)
    finish(summary, "sampled", quiet=quiet, as_json=False)
