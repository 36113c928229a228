"""File verbs of the runtime: score / encode / decode / reconstruct / sample, file to file.

All but ``sample`` stream (see ``aeserve.serve.stream``): any number of inputs of any
size, flat memory, output rows in input order, written atomically.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import numpy as np

from aeserve.batches import rows_per_call
from aeserve.bundle import code_columns
from aeserve.conformal import ExceedanceHistogram, check_alpha, p_value_of_count
from aeserve.errors import InputError
from aeserve.manifest import CONTRIBUTIONS
from aeserve.serve.model import Model
from aeserve.serve.series_rows import SeriesStage
from aeserve.serve.stream import StreamSummary, stream_verb
from aeserve.tables import check_output_path, write_table

__all__ = ["score_file", "score_columns", "series_stage", "encode_file", "decode_file", "reconstruct_file",
           "sample_file", "save_reconstructions", "encode_columns"]

Progress = Callable[[int, int, int], None]  # (bytes done, bytes total, rows written)


def _columns(names: list[str], array) -> dict[str, np.ndarray]:
    """Named columns of rows (n, features); a mixed bundle's rows are named columns already."""
    if isinstance(array, dict):
        return array
    return {name: array[:, i] for i, name in enumerate(names)}


def _run(model: Model, sources, out, *, fn, progress, id_column, on_error, codes: bool = False,
         npy_layout: list[str] | None = None, series: SeriesStage | None = None, observe=None) -> StreamSummary:
    """Stream ``sources`` through ``fn``: the bundle's input rows (a mixed bundle's encoded by the
    readers; a series bundle's windows, one ending at every row), or with ``codes`` the code
    columns z0.."""
    image = model.bundle.manifest.input.image
    expect, encoding = (model.code_names, None) if codes else (model.features, model.encoding)
    if model.window is not None and not codes:
        expect, series = list(model.window.channels), series or SeriesStage(model.window)
    summary = stream_verb(_as_list(sources), out, expect, fn, id_column=id_column, skip=on_error == "skip",
                          batch_rows=rows_per_call(model.batch_size), image_shape=image.shape if image else None,
                          npy_layout=npy_layout, progress=progress, encoding=encoding, series=series,
                          observe=observe)
    summary.backend, summary.reason = model.backend.describe(), model.backend_reason
    return summary


def _as_list(sources) -> list:
    return list(sources) if isinstance(sources, (list, tuple)) else [sources]


def score_file(model: Model, sources, out, *, threshold: float | None = None, progress: Progress | None = None,
               id_column: str | None = None, on_error: str = "fail", explain: int = 0,
               fdr: float | None = None, window_score: str = "last") -> StreamSummary:
    """One output row per good input row, same order: id/row, energy, its terms, p_value (when
    the bundle keeps held-out energies), anomaly (0/1); with ``explain=K`` also feature_1..K and
    share_1..K: the K features with the largest terms of the reconstruction cost, and each one's
    share of it.

    ``fdr``: anomaly is 1 for the rows Benjamini–Hochberg discovers among all the input's rows at
    that false-discovery rate, instead of energy > threshold. The decision needs every row's
    p-value, so the rows are scored once into a hidden Parquet file beside ``out`` while a
    histogram of their exceedance counts (n + 1 integers) is kept, and the anomaly column is
    written on a second pass over that file: memory stays flat, nothing is scored twice.

    A series bundle scores every row by the windows that contain it (``window_score``: last,
    mean or max; see ``aeserve.serve.series_rows``) and adds ``windows``, how many scored it (0:
    none, the first W−1 rows of a series; their energy and p_value are NaN, anomaly 0); the
    time and group columns lead the output."""
    if explain and Path(out).suffix.lower() == ".npy":
        raise InputError(f"{out}: --explain writes feature names, which a .npy cannot hold; use .csv or .parquet")
    series = series_stage(model, window_score, explain, threshold)
    if fdr is not None:
        if threshold is not None:
            raise InputError("give --threshold or --fdr, not both")
        return _score_by_fdr(model, sources, out, fdr=check_alpha(fdr), progress=progress, id_column=id_column,
                             on_error=on_error, explain=explain, series=series)
    limit = model.threshold if threshold is None else float(threshold)

    def fn(rows: np.ndarray) -> dict[str, np.ndarray]:
        return score_columns(model, rows, limit, explain)

    anomalies = [0]

    def count(columns: dict[str, np.ndarray]) -> None:
        anomalies[0] += int(columns["anomaly"].sum())

    summary = _run(model, sources, out, fn=fn, progress=progress, id_column=id_column, on_error=on_error,
                   series=series, observe=count)
    summary.extra = {"anomalies": anomalies[0], "threshold": limit}
    return summary


def series_stage(model: Model, window_score: str, explain: int, threshold: float | None) -> SeriesStage | None:
    """A series bundle's ``SeriesStage`` for scoring (None for other bundles: ``window_score``
    then must be last): with ``mean``, p_value and anomaly follow each row's mean energy."""
    if model.window is None:
        if window_score != "last":
            raise InputError(f"--window-score {window_score} applies to a series bundle (trained with --window); "
                             f"{model.bundle.path} scores rows one by one")
        return None
    if explain and window_score == "mean":
        raise InputError("--explain names the cells of one window: use --window-score last or max")
    limit = model.threshold if threshold is None else float(threshold)

    def recompute(columns: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        energy = columns["energy"]
        scored = np.isfinite(energy)
        if "p_value" in columns:
            columns["p_value"] = np.where(scored, model.p_values(np.where(scored, energy, 0.0)), np.nan)
        columns["anomaly"] = (scored & (np.where(scored, energy, -np.inf) > limit)).astype(np.uint8)
        return columns

    return SeriesStage(model.window, window_score, recompute)


def score_columns(model: Model, rows: np.ndarray, limit: float, explain: int) -> dict[str, np.ndarray]:
    """The score columns of a chunk's rows: energy, terms, p_value, anomaly (and the top K)."""
    scores = model.score(rows, limit, explain=bool(explain), k=explain or None)
    if explain:  # the top K as columns; the whole (rows, features) map stays out of the file
        del scores[CONTRIBUTIONS]
        top, shares = scores.pop("top_features"), scores.pop("top_shares")
        text = scores.pop("top_explanations", None)  # a mixed bundle's: observed and expected values
        for i in range(top.shape[1]):
            scores[f"feature_{i + 1}"], scores[f"share_{i + 1}"] = top[:, i], shares[:, i]
            if text is not None:
                scores[f"explanation_{i + 1}"] = text[:, i]
    return scores


def _score_by_fdr(model: Model, sources, out, *, fdr: float, progress, id_column, on_error,
                  explain: int, series: SeriesStage | None) -> StreamSummary:
    """``score_file`` with ``fdr``: score into a hidden Parquet beside ``out`` counting each row's
    exceedances, then write ``out`` with anomaly = (p_value <= the Benjamini–Hochberg cut-off).
    A series' rows that no window scored (energy NaN) are no hypothesis: never flagged, not counted."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from aeserve.atomic import atomic_path
    from aeserve.serve.stream import TableWriter, expand_inputs
    from aeserve.tables import refuse_output_among_inputs

    out = check_output_path(out)
    refuse_output_among_inputs(out, expand_inputs(_as_list(sources)))
    counts = ExceedanceHistogram(model.reference_energies())
    staged = out.with_name(f".{out.name}.fdr.parquet")

    def fn(rows: np.ndarray) -> dict[str, np.ndarray]:
        return score_columns(model, rows, model.threshold, explain)

    def count(columns: dict[str, np.ndarray]) -> None:  # the rows as written (a series' per-row energies)
        energy = columns["energy"]
        counts.add(energy[np.isfinite(energy)])

    try:
        summary = _run(model, sources, staged, fn=fn, progress=progress, id_column=id_column, on_error=on_error,
                       series=series, observe=count)
        cutoff = counts.cutoff(fdr)
        limit = p_value_of_count(cutoff, model.reference.size) if cutoff >= 0 else -1.0
        flagged = 0
        with atomic_path(out, clean_stale=True) as tmp:
            writer = TableWriter(tmp, out)
            try:
                staged_file = pq.ParquetFile(staged)
                batches = staged_file.iter_batches(batch_size=65536) if staged_file.metadata.num_rows else \
                    [pa.RecordBatch.from_pylist([], schema=staged_file.schema_arrow)]  # no row: the columns alone
                for batch in batches:
                    columns = {name: batch.column(name).to_numpy(zero_copy_only=False) for name in batch.schema.names}
                    columns["anomaly"] = (columns["p_value"] <= limit).astype(np.uint8)
                    flagged += int(columns["anomaly"].sum())
                    if out.suffix.lower() == ".npy":  # the score columns only, from energy on
                        names = list(columns)
                        columns = {name: columns[name] for name in names[names.index("energy"):]}
                    writer.write(columns)
            finally:
                writer.close()
    finally:
        staged.unlink(missing_ok=True)
    if summary.errors_file:  # written beside the staged file: move it beside the output
        errors = Path(out).with_name(out.name + ".errors.csv")
        Path(summary.errors_file).replace(errors)
        summary.errors_file = str(errors)
    summary.output = str(out)
    summary.extra = {"anomalies": flagged, "fdr": fdr, "discoveries_p_value": float(limit) if cutoff >= 0 else None,
                     "threshold": None}
    return summary


def encode_file(model: Model, sources, out, *, progress: Progress | None = None, id_column: str | None = None,
                on_error: str = "fail") -> StreamSummary:
    """Codes z0..z{k-1} per row (the encoder's first output: z, or a VAE's μ), then its other
    outputs as NAME0..NAME{k-1} (a VAE's logvar0..). In a .npy the same columns, in the same
    order, without names: ``decode_file`` reads z0.. of either."""

    def fn(rows: np.ndarray) -> dict[str, np.ndarray]:
        outputs = model.encode_all(rows).values()
        return dict(zip(encode_columns(model), (column for array in outputs for column in array.T)))

    return _run(model, sources, out, fn=fn, progress=progress, id_column=id_column,
                on_error=on_error)


def decode_file(model: Model, sources, out, *, progress: Progress | None = None, id_column: str | None = None,
                on_error: str = "fail") -> StreamSummary:
    """Rows in raw units, one per code row; columns named like the training features. Reads the
    code z0..z{k-1} by name from .csv/.parquet; from a .npy either exactly k columns, or a file
    as wide as ``encode_file`` writes (z0.. first, then e.g. a VAE's logvar0..: μ is decoded)."""
    return _run(model, sources, out, codes=True,
                fn=lambda z: _columns(model.features, model.decode(z)),
                progress=progress, id_column=id_column, on_error=on_error, npy_layout=encode_columns(model))


def encode_columns(model: Model) -> list[str]:
    """The columns ``encode_file`` writes: z0..z{k-1}, then NAME0.. for each other encoder output."""
    prefixes = ["z", *model.encoder_outputs[1:]]
    return [name for prefix in prefixes for name in code_columns(model.latent_size, prefix)]


def reconstruct_file(model: Model, sources, out, *, progress: Progress | None = None, id_column: str | None = None,
                     on_error: str = "fail") -> StreamSummary:
    """ỹ = decode(encode(y)) per row, in raw units."""
    return _run(model, sources, out,
                fn=lambda x: _columns(model.features, model.reconstruct(x)),
                progress=progress, id_column=id_column, on_error=on_error)


def save_reconstructions(model: Model, sources, directory) -> int:
    """For every input image: ``<stem>.reconstruction.png`` and ``<stem>.energy.png``, the
    per-pixel reconstruction cost (in the model's space, summed over channels) scaled so the
    image's worst pixel is white. Returns how many images were written."""
    from pathlib import Path

    from aeserve.serve.images import IMAGE_SUFFIXES, load_images, save_image
    from aeserve.serve.stream import expand_inputs

    image = model.bundle.manifest.input.image
    if not image:
        raise InputError("--save-reconstructions needs an image bundle (trained on a folder of images)")
    shape = image.shape
    scale = np.asarray(model.bundle.manifest.preprocessing.scale, np.float32)  # (y - ỹ) / scale is the residual in model space
    paths = [p for p in expand_inputs(_as_list(sources)) if p.suffix.lower() in IMAGE_SUFFIXES]
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for start in range(0, len(paths), 256):
        batch = paths[start:start + 256]
        rows = load_images(batch, shape)
        rebuilt = model.reconstruct(rows)
        cost = (((rows - rebuilt) / scale) ** 2).reshape(len(batch), shape[0], -1).sum(axis=1)  # (n, H*W)
        for path, recon, pixel_cost in zip(batch, rebuilt, cost):
            save_image(directory / f"{path.stem}.reconstruction.png", recon, shape)
            save_image(directory / f"{path.stem}.energy.png", pixel_cost / max(pixel_cost.max(), 1e-12),
                       (1, shape[1], shape[2]))
    return len(paths)


def sample_file(model: Model, n: int, out, seed: int = 0) -> StreamSummary:
    """``n`` sampled rows (seeded) written to ``out``."""
    start = time.perf_counter()
    check_output_path(out)
    write_table(out, _columns(model.features, model.sample(n, seed)))
    return StreamSummary(rows=n, seconds=time.perf_counter() - start, backend=model.backend.describe(),
                         output=str(out), reason=model.backend_reason)
