"""``train_shards``: training out of core, from shards on disk to a bundle in flat memory.

One pass over the shards (``aeserve.train.shards.scan``) gives the preprocessing statistics,
the counts, the fingerprint and bounded samples of validation and training rows; the fit then
streams every epoch's training rows from disk (``epoch_batches``). Memory holds the model, the
shuffle buffer, a few chunks read ahead and the samples: nothing that grows with the data.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

from aeserve.errors import InputError, OptionError
from aeserve.manifest import ColumnSpec, DataRecord, InputSpec
from aeserve.train.checkpoint import run_fingerprint
from aeserve.train.config import ModelConfig
from aeserve.train.data import mixed_preprocessing, scaled_preprocessing
from aeserve.train.device import Hardware
from aeserve.train.fit import Checkpointing, FitConfig, fit
from aeserve.train.pipeline import TrainResult, _write_bundle, save_kept_rows
from aeserve.train.registry import build_model
from aeserve.train.shards import Shards, ShardScan, epoch_batches, scan

__all__ = ["ShardRows", "StreamOptions", "stream_preprocessing", "train_shards", "shards_source"]


@dataclass(frozen=True)
class StreamOptions:
    """How epochs stream: the shuffle buffer, the read-ahead, and the size of the validation sample."""

    shuffle_buffer: int = 65_536  # rows mixed at once
    prefetch: int = 4             # chunks read ahead by the reader thread
    max_val_rows: int = 100_000   # validation rows kept in memory (early stopping, threshold, p-values)
    sample_rows: int = 20_000     # training rows kept in memory (the latent Gaussian, kept rows)

    def __post_init__(self) -> None:
        for name in ("shuffle_buffer", "prefetch", "max_val_rows", "sample_rows"):
            if getattr(self, name) < 1:
                raise OptionError(name, f"{name} must be >= 1, got {getattr(self, name)}")


@dataclass
class ShardRows:
    """A ``RowStream`` over shards: each epoch's training rows, as ``epoch_batches`` reads them."""

    shards: Shards
    scanned: ShardScan
    seed: int
    val_fraction: float
    batch_size: int
    options: StreamOptions
    part: tuple[int, int] = (0, 1)  # (worker, workers) of a data-parallel run

    @property
    def rows(self) -> int:
        """Training rows of one epoch (this worker's share, about)."""
        return self.scanned.train_rows // self.part[1]

    def batches(self, epoch: int) -> Iterator[np.ndarray]:
        """Raw training batches (batch, features) of ``epoch``."""
        steps = self.scanned.steps(self.shards, epoch, self.seed, self.part[1], self.batch_size)
        return epoch_batches(self.shards, epoch, seed=self.seed, val_fraction=self.val_fraction,
                             batch_size=self.batch_size, shuffle_buffer=self.options.shuffle_buffer,
                             prefetch=self.options.prefetch, part=self.part, max_batches=steps)


def stream_preprocessing(scanned: ShardScan, cost: str, scaling: str = "standard"):
    """Shift/scale from the streaming pass's moments: mean and standard deviation (``standard``),
    or min and max for the bce cost. ``robust`` needs quantiles, which one bounded pass cannot
    give exactly: refused, naming the option."""
    moments = scanned.moments
    if scaling != "standard":
        raise OptionError("scaling", f"scaling {scaling!r} needs exact quantiles of all rows; training from shards "
                                     "computes exact means and variances in one pass: use scaling 'standard'")
    if cost == "mixed":  # a mixed table: its numeric columns' present training cells
        stats = {j: (float(m.mean[0]), float(m.std[0]) if m.std[0] > 1e-12 else 1.0)
                 for j, m in scanned.column_moments.items() if m.count}
        return mixed_preprocessing(len(moments.mean) // 2, stats, scaling)
    if cost == "bce":
        return scaled_preprocessing(moments.low, moments.high - moments.low, "minmax", cost)
    return scaled_preprocessing(moments.mean, moments.std, "standardize", cost)


def shards_source(shards: Shards) -> str:
    """The data's name in the manifest: 'FOLDER/ (N shards)', or the one file's name."""
    if len(shards.files) == 1:
        return shards.files[0].name
    return f"{shards.files[0].parent.name or '.'}/ ({len(shards.files)} shards)"


def train_shards(shards: Shards, out: str | Path, config: ModelConfig, fit_config: FitConfig, *,
                 quantile: float = 0.99, val_fraction: float = 0.1, scaling: str = "standard",
                 name: str | None = None, kept_rows: int = 1024, export: bool = True, force: bool = False,
                 options: StreamOptions | None = None, hardware: Hardware | None = None,
                 checkpointing: Checkpointing | None = None,
                 on_scan: Callable[[int], None] | None = None,
                 on_epoch: Callable[[int, float, float], None] | None = None,
                 on_batch: Callable[[int, int, int], None] | None = None,
                 on_scanned: Callable[[ShardScan], None] | None = None) -> TrainResult:
    """Fit ``config.kind`` on the rows of ``shards`` streamed from disk and write a bundle to ``out``.

    Validation rows are those whose (file, row) hash falls below ``val_fraction``; at most
    ``options.max_val_rows`` of them (the smallest hashes) score early stopping, the threshold and
    the held-out energies. ``on_scan(rows)`` reports the statistics pass, ``on_scanned`` its result.
    """
    out = Path(out)
    if out.exists() and not force:
        raise InputError(f"{out}: already exists; replace it with force=True")
    if not 0.0 < val_fraction < 1.0:
        raise InputError(f"val_fraction must be in (0, 1), got {val_fraction}")
    width = shards.encoding.width if shards.encoding is not None else len(shards.features)
    if config.n_features != width:
        raise InputError(f"config expects {config.n_features} features, the shards have {width}")
    if bool(shards.specs) != bool(config.table):
        raise InputError("shards of typed columns train with ModelConfig(table=column_layout(shards.specs), "
                         "cost='mixed'), and only such shards do")
    options = options or StreamOptions()
    scanned = scan(shards, val_fraction, max_val_rows=options.max_val_rows,
                   sample_rows=max(options.sample_rows, kept_rows), on_rows=on_scan)
    if on_scanned is not None:
        on_scanned(scanned)
    prep = stream_preprocessing(scanned, config.cost, scaling)
    torch.manual_seed(fit_config.seed)
    model = build_model(config)
    model.set_preprocessing(torch.tensor(prep.shift), torch.tensor(prep.scale),
                            rows=shards.specs[0].rows if shards.specs else 0)
    with torch.no_grad():
        val_rows = model.preprocess(torch.from_numpy(scanned.val_sample))  # (val sample, features)
        train_sample = model.preprocess(torch.from_numpy(scanned.train_sample))
    if checkpointing is not None:
        checkpointing = dataclasses.replace(checkpointing, fingerprint={
            **run_fingerprint(config, fit_config, scanned.sha256, val_fraction=val_fraction, scaling=scaling,
                              shuffle_buffer=options.shuffle_buffer),
            **checkpointing.fingerprint})
    source = ShardRows(shards, scanned, fit_config.seed, val_fraction, fit_config.batch_size, options)
    history = fit(model, source, val_rows, fit_config, on_epoch=on_epoch, on_batch=on_batch, hardware=hardware,
                  checkpointing=checkpointing)
    return finish_shards(model, shards, scanned, out, config, fit_config, history, prep=prep,
                         val_rows=val_rows, train_sample=train_sample, val_fraction=val_fraction,
                         options=options, kept_rows=kept_rows, quantile=quantile, export=export, force=force,
                         name=name, hardware=hardware)


def finish_shards(model, shards: Shards, scanned: ShardScan, out: Path, config: ModelConfig, fit_config: FitConfig,
                  history, *, prep, val_rows: torch.Tensor, train_sample: torch.Tensor, val_fraction: float,
                  options: StreamOptions, kept_rows: int, quantile: float, export: bool, force: bool,
                  name: str | None, hardware: Hardware | None, engine: dict | None = None) -> TrainResult:
    """The bundle of a model fitted on shards (by one process or by a cluster's workers)."""
    features = tuple(shards.features)
    input_spec = InputSpec(features=features, encoding="mixed" if shards.specs else "plain",
                           columns=shards.specs or tuple(ColumnSpec(name=c, rows=scanned.rows) for c in features))
    data = DataRecord(source=shards_source(shards), rows=scanned.rows, train_rows=scanned.train_rows,
                      val_rows=scanned.val_rows, sha256=scanned.sha256)
    hardware = hardware or Hardware()
    settings = {"val_fraction": val_fraction, "split": "hash of (file name, row)",
                "streamed": {"shards": len(shards.files), "shuffle_buffer": options.shuffle_buffer,
                             "validation_rows_scored": int(len(val_rows))},
                "device": hardware.device, "precision": hardware.precision, **(engine or {})}
    n = min(kept_rows, len(scanned.train_sample), len(scanned.val_sample))
    return _write_bundle(model, out, config, fit_config, history, input_spec=input_spec, prep=prep, data=data,
                         val_rows=val_rows, train_rows=train_sample, check_rows=scanned.val_sample[:4096],
                         kept=lambda built: save_kept_rows(built, {"train": scanned.train_sample[:kept_rows],
                                                                   "validation": scanned.val_sample[:kept_rows]})
                         if n > 0 else None,
                         settings=settings, quantile=quantile, export=export, force=force, name=name)
