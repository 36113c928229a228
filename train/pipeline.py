"""``train_bundle``: rows -> fitted model -> calibrated bundle directory (-> ONNX graphs)."""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

import aeserve
from aeserve.atomic import default_mode
from aeserve.bundle import write_manifest
from aeserve.errors import InputError
from aeserve.manifest import (
    SCHEMA_VERSION,
    Architecture,
    ColumnSpec,
    DataRecord,
    HeldOut,
    ImageSpec,
    InputSpec,
    KeptRows,
    Manifest,
    TrainingRecord,
)
from aeserve.tables import Table
from aeserve.train.calibrate import latent_sampler, quantile_threshold
from aeserve.train.checkpoint import run_fingerprint
from aeserve.train.config import ModelConfig
from aeserve.train.data import (
    data_sha256,
    preprocessing_stats,
    split_rows,
    split_windows,
    table_preprocessing,
    window_preprocessing,
)
from aeserve.train.device import Hardware
from aeserve.train.fit import Checkpointing, FitConfig, FitResult, fit, scoring_energies
from aeserve.train.registry import build_model
from aeserve.train.weights import save_weights

__all__ = ["TrainResult", "train_bundle", "replace_directory", "KEPT_ROWS", "keep_rows", "HELD_OUT", "keep_held_out"]

KEPT_ROWS = "rows.safetensors"
HELD_OUT = "held_out.safetensors"


@dataclass
class TrainResult:
    """Where the bundle went and how training went."""

    path: Path
    fit: FitResult
    threshold: float


def replace_directory(built: Path, target: Path, force: bool) -> None:
    """Move the finished ``built`` directory onto ``target`` (replacing it only with ``force``)."""
    if target.exists():
        if not force:
            shutil.rmtree(built, ignore_errors=True)
            raise InputError(f"{target}: already exists; replace it with force=True")
        old = target.with_name(f".{target.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        target.rename(old)
        built.rename(target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        built.rename(target)


def keep_rows(directory: Path, values: np.ndarray, split, n: int, seed: int) -> KeptRows | None:
    """Write up to ``n`` training and ``n`` validation rows (raw units, drawn with ``seed``) as
    ``rows.safetensors``; static int8 calibrates on the first and is checked on the second."""
    if n <= 0:
        return None
    rng = np.random.default_rng(seed)
    chosen = {name: np.sort(rng.choice(rows, min(n, rows.size), replace=False))
              for name, rows in (("train", split.train), ("validation", split.val))}
    return save_kept_rows(directory, {name: values[rows] for name, rows in chosen.items()})


def save_kept_rows(directory: Path, parts: dict[str, np.ndarray]) -> KeptRows:
    """Write ``{"train": rows, "validation": rows}`` (raw units) as ``rows.safetensors``."""
    from safetensors.numpy import save_file

    save_file({name: np.ascontiguousarray(rows, np.float32) for name, rows in parts.items()},
              str(directory / KEPT_ROWS), metadata={"what": "rows kept for int8 calibration, raw units"})
    (directory / KEPT_ROWS).chmod(default_mode())
    return KeptRows(file=KEPT_ROWS, train=int(len(parts["train"])), validation=int(len(parts["validation"])))


def keep_held_out(directory: Path, energies: np.ndarray) -> HeldOut:
    """Write the validation rows' energies, sorted, as ``held_out.safetensors``: the reference
    of the runtime's conformal p-values and of ``aeserve calibrate`` without data."""
    from safetensors.numpy import save_file

    save_file({"energy": np.sort(np.asarray(energies, np.float32))}, str(directory / HELD_OUT),
              metadata={"what": "energies of the validation rows held out at training, fp32, sorted"})
    (directory / HELD_OUT).chmod(default_mode())
    return HeldOut(file=HELD_OUT, rows=int(energies.size))


def train_bundle(table: Table, out: str | Path, config: ModelConfig, fit_config: FitConfig,
                 *, quantile: float = 0.99, val_fraction: float = 0.1, scaling: str = "standard",
                 name: str | None = None, kept_rows: int = 1024,
                 export: bool = True, force: bool = False,
                 on_epoch: Callable[[int, float, float], None] | None = None,
                 on_batch: Callable[[int, int, int], None] | None = None, hardware: Hardware | None = None,
                 checkpointing: Checkpointing | None = None) -> TrainResult:
    """Fit ``config.kind`` on ``table`` and write a bundle to ``out``; export ONNX unless told not to.

    The bundle is assembled in a temporary sibling directory and renamed into place, so a
    failed or interrupted run never leaves a half-written bundle. It keeps ``kept_rows``
    training and validation rows (``rows.safetensors``) for static int8 calibration; 0 keeps none.
    ``hardware``: device, precision and threads of the fit; ``checkpointing``: see ``fit``.
    """
    out = Path(out)
    if out.exists() and not force:  # before training, not after it
        raise InputError(f"{out}: already exists; replace it with force=True")
    values = table.values  # (rows, features) raw float32
    if config.n_features != values.shape[1]:
        raise InputError(f"config expects {config.n_features} features, data has {values.shape[1]}")
    if bool(table.specs) != bool(config.table):
        raise InputError(f"{table.source}: a table of typed columns trains with ModelConfig(table=column_layout(specs), "
                         "cost='mixed'), and only such a table does")
    window = getattr(table, "window", None)  # a SeriesTable: rows are windows of a series
    if window is not None:
        split = split_windows(table.ends, table.series, window.size, val_fraction, fit_config.seed)
        prep = window_preprocessing(values[split.train], len(window.channels), window.size, config.cost, scaling)
    else:
        split = split_rows(values.shape[0], val_fraction, fit_config.seed)
        if table.specs:
            prep = table_preprocessing(values[split.train], table.specs, scaling)
        else:
            prep = preprocessing_stats(values[split.train], config.cost, scaling)

    torch.manual_seed(fit_config.seed)
    model = build_model(config)
    model.set_preprocessing(torch.tensor(prep.shift), torch.tensor(prep.scale),
                            rows=table.specs[0].rows if table.specs else 0)
    with torch.no_grad():
        raw = torch.from_numpy(values)
        y_hat = model.preprocess(raw)  # (rows, features)
    train_rows, val_rows = y_hat[torch.from_numpy(split.train)], y_hat[torch.from_numpy(split.val)]

    sha = data_sha256(values)
    if checkpointing is not None:
        checkpointing = dataclasses.replace(checkpointing, fingerprint={
            **run_fingerprint(config, fit_config, sha, val_fraction=val_fraction, scaling=scaling),
            **checkpointing.fingerprint})
    history = fit(model, train_rows, val_rows, fit_config, on_epoch=on_epoch, on_batch=on_batch,
                  hardware=hardware, checkpointing=checkpointing)
    input_spec = InputSpec(features=tuple(table.columns),
                           image=ImageSpec(shape=config.image_shape) if config.arch == "conv" else None,
                           encoding="mixed" if table.specs else "plain",
                           columns=table.specs or tuple(ColumnSpec(name=c, rows=int(values.shape[0]))
                                                        for c in table.columns),
                           window=window)
    data = DataRecord(source=Path(table.source).name, rows=int(values.shape[0]),  # a series': its windows
                      train_rows=int(split.train.size), val_rows=int(split.val.size), sha256=sha)
    return _write_bundle(
        model, out, config, fit_config, history, input_spec=input_spec, prep=prep, data=data,
        val_rows=val_rows, train_rows=train_rows, check_rows=values[split.val],
        kept=lambda built: keep_rows(built, values, split, kept_rows, fit_config.seed),
        settings={"val_fraction": val_fraction}, quantile=quantile, export=export, force=force, name=name)


def _write_bundle(model, out: Path, config: ModelConfig, fit_config: FitConfig, history: FitResult, *,
                  input_spec: InputSpec, prep, data: DataRecord, val_rows: torch.Tensor, train_rows: torch.Tensor,
                  check_rows: np.ndarray, kept: Callable[[Path], KeptRows | None], settings: dict,
                  quantile: float, export: bool, force: bool, name: str | None = None) -> TrainResult:
    """The fitted model as a bundle at ``out``: threshold and held-out energies from ``val_rows``,
    the latent Gaussian from ``train_rows`` (both preprocessed), weights, manifest, ONNX graphs
    checked on ``check_rows`` (raw); assembled in a temporary sibling and renamed into place."""
    val_energies = scoring_energies(model, val_rows).numpy()
    threshold = quantile_threshold(val_energies, quantile)
    manifest = Manifest(
        schema_version=SCHEMA_VERSION,
        name=name or out.name,
        kind=config.kind,
        input=input_spec,
        preprocessing=prep,
        architecture=Architecture.from_flat_dict(config.to_dict()),
        energy=model.energy_spec(),
        latent=latent_sampler(model, train_rows),
        threshold=threshold,
        training=TrainingRecord(
            data=data, epochs_run=len(history.train_energy), best_epoch=history.best_epoch, stopped=history.stopped,
            settings={"optimiser": "adamw", **vars(fit_config), **settings},
            history={"train_energy": tuple(history.train_energy), "val_energy": tuple(history.val_energy)}),
        versions={"aeserve": aeserve.__version__, "torch": torch.__version__.split("+")[0],
                  "numpy": np.__version__},
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    built = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    built.chmod(default_mode(directory=True))
    try:
        save_weights(model, built)
        manifest = dataclasses.replace(manifest, training=dataclasses.replace(
            manifest.training, kept_rows=kept(built), held_out=keep_held_out(built, val_energies)))
        write_manifest(built, manifest)
        if export:
            from aeserve.export.onnx import export_onnx
            export_onnx(built, model=model, check_rows=check_rows)
        replace_directory(built, out, force)
    except BaseException:
        shutil.rmtree(built, ignore_errors=True)
        raise
    return TrainResult(out, history, threshold.value)
