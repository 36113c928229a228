"""``aeserve calibrate``: choose a bundle's anomaly threshold on data, and write it into the bundle."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape

from aeserve.cli import app, err, user_errors
from aeserve.cli.options import BACKEND_OPT, BUNDLE_ARG, Backend, choices
from aeserve.kind_names import THRESHOLD_METHODS

__all__ = ["calibrate"]

Method = choices("Method", THRESHOLD_METHODS, "How the threshold is chosen.")


@app.command()
@user_errors
def calibrate(
    bundle: Path = BUNDLE_ARG,
    data: Optional[Path] = typer.Argument(None, help=(
        "Rows to calibrate on: .csv, .parquet or .npy, rows the model was not trained on (the training data is "
        "refused). Without DATA: the validation rows the bundle held out at training."), show_default=False),
    method: Method = typer.Option(Method.quantile, "--method", "-m", help=(
        "quantile: the energy that the target share of normal rows exceeds; f1: the best F1 on labelled rows "
        "(needs --labels with both classes); pot: peaks-over-threshold, a generalised Pareto tail fitted to the "
        "highest energies, for targets (1e-3, 1e-4) too rare for a few hundred rows.")),
    target_fpr: float = typer.Option(0.01, "--target-fpr", help="quantile/pot: the false-positive rate to aim at."),
    labels: Optional[str] = typer.Option(None, help="0/1 column (1 = anomaly): quantile and pot then use the "
                                                    "normal rows only, and recall is reported."),
    backend: Backend = BACKEND_OPT,
) -> None:
    """Set the bundle's threshold from DATA, or from the validation rows held out at training,
    and record how (method, target, data file and hash, rows, realised false-positive rate and
    recall on them); `aeserve info` shows it and `aeserve score --threshold` still overrides it.

    Rows the model was trained on score lower than new ones, so a threshold set on them flags
    more than the target: given the training data (its fingerprint is in the manifest), or a
    file holding many of its rows, calibrate refuses and says what to do instead.

    \b
    Examples:
      aeserve calibrate models/rows-vae --target-fpr 0.05
      aeserve calibrate models/rows-vae val.csv --method pot --target-fpr 0.001
      aeserve calibrate models/rows-vae labelled.csv --labels label --method f1
    """
    from aeserve.serve.calibrate import calibrate_bundle

    if not 0.0 < target_fpr < 1.0:
        raise typer.BadParameter(f"must be between 0 and 1, got {target_fpr}", param_hint="--target-fpr")
    threshold = calibrate_bundle(bundle, data, method=method.value, target_fpr=target_fpr, labels=labels,
                                 backend=backend.value)
    err.print(f"[green]threshold[/] {threshold.value:.6g} written to {escape(str(bundle))}: "
              f"{escape(threshold.describe())}")
