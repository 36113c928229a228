"""Choices, shared options and helpers of the verbs. Choices come from the registries where one
exists without torch (kinds, backends, the model config's names); nothing here imports torch."""

from __future__ import annotations

import functools
import inspect
import json
from contextlib import nullcontext
from enum import Enum
from pathlib import Path
from typing import Callable, Optional

import typer
from rich.markup import escape

from aeserve.cli import err, out
from aeserve.kind_names import KNOWN_KINDS, WINDOW_SCORES
from aeserve.serve.backends import list_backends
from aeserve.train.config import ACTIVATION_NAMES, ARCHES, COST_NAMES
from aeserve.train.options import option_help

__all__ = [
    "Kind", "Cost", "Activation", "Arch", "Backend", "Device", "Precision", "OnError",
    "ExportFormat", "Engine", "TrainPrecision", "TrainEngine", "PlotKind", "WindowScore", "EXIT_SKIPPED", "BUNDLE_ARG", "OUTPUT_OPT", "ID_OPT", "ON_ERROR_OPT",
    "DATA_HELP", "BACKEND_OPT", "BATCH_OPT", "DEVICE_OPT", "PRECISION_OPT", "QUIET_OPT", "JSON_OPT",
    "choices", "kind_option_flags", "csv_list", "int_list", "row_progress", "progress_callback", "open_model", "finish", "flag_for",
]


def choices(name: str, values, doc: str) -> type[Enum]:
    """A str Enum of ``values`` for a Typer option."""
    choice = Enum(name, {v: v for v in values}, type=str)
    choice.__doc__ = doc
    return choice


#: model kinds, from the manifest's list (the train registry holds the same names; a test checks)
Kind = choices("Kind", KNOWN_KINDS, "Model kind.")
Cost = choices("Cost", COST_NAMES, "Reconstruction cost C(y, ỹ).")
Activation = choices("Activation", ACTIVATION_NAMES, "Hidden-layer activation.")
Arch = choices("Arch", ARCHES, "Network shape: dense layers, or convolutions for images.")
#: runtime backends, from the backend registry (auto first)
Backend = choices("Backend", ["auto", *list_backends()], "Runtime backend for the scoring verbs.")

Device = choices("Device", ("auto", "cpu", "cuda"), "Where onnxruntime / torch run (TensorRT is always the GPU).")
Precision = choices("Precision", ("fp32", "int8", "bf16", "auto"),
                     "Which graphs run: fp32, the int8 ones `aeserve export --quantize int8` wrote, bf16 "
                     "arithmetic (OpenVINO), or auto: the fastest the bundle allows, measured.")
TrainPrecision = choices("TrainPrecision", ("fp32", "bf16", "fp16"), "Arithmetic of training steps.")
TrainEngine = choices("TrainEngine", ("local", "ray"), "Where ``train`` runs: this process, or Ray Train workers.")
OnError = choices("OnError", ("fail", "skip"), "What to do with a bad row.")
ExportFormat = choices("ExportFormat", ("onnx", "tensorrt", "triton"), "What ``aeserve export`` writes.")
Engine = choices("Engine", ("local", "ray"), "Where ``score`` runs: this process, or a Ray cluster through Ray Data.")
WindowScore = choices("WindowScore", WINDOW_SCORES,
                      "How a series row's score comes from the windows that contain it.")
PlotKind = choices("PlotKind", ("latent", "energy", "roc", "reconstructions", "training"),
                    "Which picture ``aeserve plot`` draws.")


#: exit status when a run finished but skipped bad rows (--on-error skip)
EXIT_SKIPPED = 3

BUNDLE_ARG = typer.Argument(..., help="Bundle directory (made by `aeserve train`).", show_default=False, metavar="BUNDLE")
OUTPUT_OPT = typer.Option(..., "--output", "-o", help="Output file: .csv, .parquet or .npy.", show_default=False)
ID_OPT = typer.Option(None, "--id-column", help="Input column carried into the output (default: row, the 1-based data row).")
ON_ERROR_OPT = typer.Option(OnError.fail, "--on-error", help="fail: stop at the first bad row, write nothing; "
                            "skip: leave bad rows out, list them in OUTPUT.errors.csv, exit with status 3.")
DATA_HELP = "Input files, globs or directories of .csv, .parquet, .npy (read in order, streamed)."
BACKEND_OPT = typer.Option(Backend.auto, "--backend", "-b", help="Runtime backend; auto picks the fastest installed.")
BATCH_OPT = typer.Option(0, "--batch-size", help="Rows per backend call; 0 = chosen from the model's widest layer.")
DEVICE_OPT = typer.Option(Device.auto, "--device", help="onnxruntime/torch device; auto = CUDA when available.")
PRECISION_OPT = typer.Option(Precision.fp32, "--precision",
                             help="fp32 (exact); int8: the graphs `aeserve export --quantize int8` wrote (onnxruntime "
                                  "dynamic, openvino static); bf16: openvino on AMX CPUs; auto: the fastest of these "
                                  "the bundle has, timed once per machine.")
QUIET_OPT = typer.Option(False, "--quiet", "-q", help="No progress bar or summary line.")
JSON_OPT = typer.Option(False, "--json", help="Print a JSON summary on stdout.")

#: config fields whose flag is not simply --field-name
_FLAGS = {"channels": "--conv-channels", "members": "--ensemble"}


def flag_for(option: str) -> str:
    """The command-line flag of a config field (``free_samples`` -> ``--free-samples``)."""
    return _FLAGS.get(option, "--" + option.replace("_", "-"))


def kind_option_flags(after: str) -> Callable[[Callable], Callable]:
    """Decorator: give a verb one ``--flag`` per kind option (``train/options.py``'s records, each
    field's type, choices and help, with the kinds that own it and its default), placed after its
    parameter ``after``. The verb takes ``kind_options``: the options given, by name (a flag not
    given is absent, so each kind keeps its own default)."""
    options = option_help()

    def decorate(fn: Callable) -> Callable:
        own = [p for p in inspect.signature(fn, eval_str=True).parameters.values() if p.name != "kind_options"]
        flags = []
        for item in options:
            kind = choices(item.name.title().replace("_", ""), item.choices, item.help) if item.choices else item.type
            flags.append(inspect.Parameter(item.name, inspect.Parameter.KEYWORD_ONLY, annotation=Optional[kind],
                                           default=typer.Option(None, flag_for(item.name), help=item.text(),
                                                                show_default=False)))
        at = [p.name for p in own].index(after) + 1

        @functools.wraps(fn)
        def verb(**values):
            flagged = {item.name: values.pop(item.name) for item in options}
            given = {name: getattr(value, "value", value) for name, value in flagged.items() if value is not None}
            return fn(**values, kind_options=given)

        keyword = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own]
        verb.__signature__ = inspect.Signature([*keyword[:at], *flags, *keyword[at:]])
        return verb

    return decorate


def csv_list(value: Optional[str]) -> Optional[list[str]]:
    """'a, b' -> ['a', 'b']; None stays None."""
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


def int_list(value: str, flag: str) -> tuple[int, ...]:
    """'256,64' -> (256, 64), or a BadParameter naming ``flag``."""
    try:
        return tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise typer.BadParameter(f"expected comma-separated integers such as 256,64, got {value!r}",
                                 param_hint=flag) from None


def row_progress(enabled: bool, label: str):
    """A rich progress bar (input read, rows, rows/s, ETA) on a terminal; a no-op otherwise."""
    if not enabled or not err.is_terminal:
        return nullcontext(None)
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn

    return Progress(TextColumn(label), BarColumn(), TaskProgressColumn(), TextColumn("{task.description}"),
                    TimeRemainingColumn(), console=err, transient=True)


def progress_callback(bar):
    """(bytes done, bytes total, rows) -> the bar: share of input read, rows and rows/s."""
    if bar is None:
        return None
    import time

    task, started = bar.add_task("", total=None), time.perf_counter()

    def update(done: int, total: int, rows: int) -> None:
        rate = rows / max(time.perf_counter() - started, 1e-9)
        bar.update(task, completed=done, total=total, description=f"{rows:,} rows  {rate:,.0f} rows/s")

    return update


def open_model(bundle: Path, backend: str, *, batch_size: int = 0, device: Device = Device.auto,
               precision: str = "fp32", hint: str = "throughput"):
    """aeserve.load with the verbs' flags; BadParameter for a flag combination that cannot work.
    ``hint``: throughput (files) or latency (the server), for backends that take one (OpenVINO)."""
    from aeserve.serve.model import load

    backend = getattr(backend, "value", backend)
    if batch_size < 0:
        raise typer.BadParameter("must be >= 1, or 0 for automatic", param_hint="--batch-size")
    options = {"hint": hint} if device == Device.auto else {"device": device.value, "hint": hint}
    if precision != "fp32":
        options["precision"] = precision
    return load(bundle, backend=backend, batch_size=batch_size or None, **options)


def finish(summary, verb: str, *, quiet: bool, as_json: bool, detail: str = "") -> None:
    """Print a verb's summary line (or JSON); exit 3 when rows were skipped."""
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
