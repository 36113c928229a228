"""File verbs of the runtime: score / encode / decode / reconstruct / sample, file to file.

Each reads a table (validated, see ``aeserve.tables``), runs the model batch by batch
(reporting progress through an optional callback), and writes the result atomically.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from aeserve.bundle import code_columns
from aeserve.serve.model import Model, row_batches
from aeserve.tables import check_output_path, read_table, write_table

__all__ = ["Summary", "score_file", "encode_file", "decode_file", "reconstruct_file", "sample_file"]

Progress = Callable[[int, int], None]  # (rows done, rows total)


@dataclass
class Summary:
    """What a file verb did, for the CLI's summary line and ``--json``."""

    rows: int
    seconds: float
    backend: str
    output: str
    reason: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def rows_per_second(self) -> float:
        """Throughput over read + compute + write."""
        return self.rows / self.seconds if self.seconds > 0 else float("inf")


def _apply(fn: Callable[[np.ndarray], dict[str, np.ndarray]], values: np.ndarray, batch: int,
           progress: Progress | None) -> dict[str, np.ndarray]:
    """Run ``fn`` over row batches and concatenate its named outputs, reporting progress."""
    parts: list[dict[str, np.ndarray]] = []
    for rows in row_batches(len(values), batch):
        parts.append(fn(values[rows]))
        if progress:
            progress(rows.stop, len(values))
    return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}


def _columns(prefix_names: list[str], array: np.ndarray) -> dict[str, np.ndarray]:
    return {name: array[:, i] for i, name in enumerate(prefix_names)}


def _run_file(model: Model, source: str | Path, out: str | Path, expect: list[str],
              fn: Callable[[np.ndarray], dict[str, np.ndarray]],
              progress: Progress | None) -> tuple[Summary, dict[str, np.ndarray]]:
    start = time.perf_counter()
    check_output_path(out)
    table = read_table(source, expect=expect)
    result = _apply(fn, table.values, model.batch_size, progress)
    write_table(out, result)
    summary = Summary(rows=len(table.values), seconds=time.perf_counter() - start,
                      backend=model.backend.describe(), output=str(out), reason=model.backend_reason)
    return summary, result


def score_file(model: Model, source, out, threshold: float | None = None,
               progress: Progress | None = None) -> Summary:
    """One output row per input row, same order: energy, its terms, anomaly (0/1)."""
    limit = model.threshold if threshold is None else float(threshold)
    summary, result = _run_file(model, source, out, model.features,
                                lambda x: model.score(x, limit), progress)
    summary.extra = {"anomalies": int(result["anomaly"].sum()), "threshold": limit}
    return summary


def encode_file(model: Model, source, out, progress: Progress | None = None) -> Summary:
    """Codes z0..z{k-1} per row (VAE: μ, plus logvar0..logvar{k-1})."""
    names = code_columns(model.latent_size)

    def fn(x: np.ndarray) -> dict[str, np.ndarray]:
        if model.kind == "vae":
            mu, logvar = model.encode_distribution(x)
            return {**_columns(names, mu), **_columns(code_columns(model.latent_size, "logvar"), logvar)}
        return _columns(names, model.encode(x))

    return _run_file(model, source, out, model.features, fn, progress)[0]


def decode_file(model: Model, source, out, progress: Progress | None = None) -> Summary:
    """Rows in raw units, one per code row; columns named like the training features."""
    return _run_file(model, source, out, model.code_names,
                     lambda z: _columns(model.features, model.decode(z)), progress)[0]


def reconstruct_file(model: Model, source, out, progress: Progress | None = None) -> Summary:
    """ỹ = decode(encode(y)) per row, in raw units."""
    return _run_file(model, source, out, model.features,
                     lambda x: _columns(model.features, model.reconstruct(x)), progress)[0]


def sample_file(model: Model, n: int, out, seed: int = 0) -> Summary:
    """``n`` sampled rows (seeded) written to ``out``."""
    start = time.perf_counter()
    check_output_path(out)
    rows = model.sample(n, seed)
    write_table(out, _columns(model.features, rows))
    return Summary(rows=n, seconds=time.perf_counter() - start,
                   backend=model.backend.describe(), output=str(out), reason=model.backend_reason)
