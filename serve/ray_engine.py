"""Batch scoring on a Ray cluster (or a local Ray instance) with Ray Data.

``read_parquet``/``read_csv`` -> ``map_batches`` with an actor that loads the bundle once
-> ``write_parquet``. The same call runs on a laptop (local Ray) and on a cluster
(``address="ray://head:10001"`` or ``"auto"``); the bundle directory must be readable at
the same path on every worker. Ray is imported only here, only when asked for.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from aeserve.bundle import Bundle
from aeserve.errors import BackendUnavailable, InputError

__all__ = ["BundleScorer", "score_with_ray"]


class BundleScorer:
    """Ray Data actor: loads the bundle once, scores numpy batches of named columns."""

    def __init__(self, bundle: str, backend: str = "auto", threshold: float | None = None,
                 keep: tuple[str, ...] = ()):
        from aeserve.serve.model import load

        self.model = load(bundle, backend=backend)
        self.threshold = threshold
        self.keep = keep

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        missing = [f for f in self.model.features if f not in batch]
        if missing:
            raise InputError(f"input lacks column(s) {', '.join(missing[:5])} the model expects")
        if self.model.encoding is not None:  # a table of typed columns: encoded by the model
            rows = {f: batch[f] for f in self.model.features}
        else:
            rows = np.stack([np.asarray(batch[f], dtype=np.float32) for f in self.model.features], axis=1)
        scores = self.model.score(rows, self.threshold)
        return {**{k: batch[k] for k in self.keep}, **scores}


def score_with_ray(bundle: str | Path, sources: list[str | Path], out_dir: str | Path, *,
                   address: str | None = None, threshold: float | None = None, backend: str = "auto",
                   id_column: str | None = None, batch_size: int = 4096, concurrency: int | None = None) -> dict:
    """Score CSV or Parquet ``sources`` into a directory of Parquet files at ``out_dir``."""
    try:
        import ray
    except ImportError:
        raise BackendUnavailable("--engine ray needs Ray Data: pip install 'aeserve[ray]'") from None
    if Bundle.open(bundle).manifest.input.window is not None:  # fail fast, before starting Ray, on a bad bundle
        raise InputError(f"{bundle}: a series bundle scores each row with the rows before it, which Ray Data's "
                         "blocks would cut apart: score it with --engine local (files of any size stream in flat "
                         "memory), or split the series by group into files and score each")
    suffixes = {Path(s).suffix.lower() for s in sources}
    if len(suffixes) != 1 or not suffixes <= {".csv", ".parquet"}:
        raise InputError(f"--engine ray reads .csv or .parquet inputs of one kind, got {sorted(suffixes)}")
    for source in sources:
        if not Path(source).exists():
            raise InputError(f"{source}: no such file")
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise InputError(f"{out_dir}: exists and is not empty; --engine ray writes a directory of Parquet files")
    started = time.perf_counter()
    import logging

    for name in ("ray", "ray.data"):
        logging.getLogger(name).setLevel(logging.ERROR)
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True
    context.enable_progress_bars = False
    if concurrency is None:
        # leave a CPU to the read and write tasks, or the actors starve them
        concurrency = max(1, int(ray.cluster_resources().get("CPU", 2)) - 1)
    paths = [str(Path(s).resolve()) for s in sources]
    dataset = ray.data.read_parquet(paths) if suffixes == {".parquet"} else ray.data.read_csv(paths)
    scored = dataset.map_batches(
        BundleScorer, fn_constructor_kwargs={"bundle": str(Path(bundle).resolve()), "backend": backend,
                                             "threshold": threshold, "keep": (id_column,) if id_column else ()},
        batch_size=batch_size, batch_format="numpy", concurrency=concurrency, num_cpus=1)
    scored.write_parquet(str(out_dir.resolve()))
    rows = sum(pq_rows(p) for p in out_dir.glob("*.parquet"))
    return {"rows": rows, "seconds": time.perf_counter() - started, "output": str(out_dir)}


def pq_rows(path: Path) -> int:
    """Row count of one Parquet file (from its footer)."""
    import pyarrow.parquet as pq

    return pq.ParquetFile(path).metadata.num_rows
