"""Training data larger than memory: shards on disk, read in chunks, never whole.

``Shards`` is a directory, a glob or several files of Parquet, CSV or .npy rows (same columns
in each). Every row belongs to training or validation by a stable hash of (file name, row), so
every run and every worker agrees on the split without reading the data twice (``row_hash``).
One streaming pass (``scan``) gives the preprocessing statistics (``RunningMoments``: exact,
mergeable mean and variance, after Chan et al.), the data fingerprint and bounded samples of
both parts (``BottomK``: the rows of smallest hash, the same whatever the chunking). Epochs then
stream the training rows from a reader thread through a bounded ``ShuffleBuffer``
(``epoch_batches``), so memory holds a few chunks and the buffer, whatever the data's size.
"""

from __future__ import annotations

import hashlib
import itertools
import queue
import threading
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from aeserve.errors import InputError
from aeserve.readers import column_names, iter_chunks, preview
from aeserve.serve.stream import _drain, _producer  # the file verbs' read-ahead thread
from aeserve.transforms import parse_log, signed_log

__all__ = ["Shards", "RunningMoments", "BottomK", "ShardScan", "ShuffleBuffer", "row_hash", "scan", "epoch_batches",
           "file_key", "shards_of", "expand_paths", "scan_columns"]

_MASK = np.uint64(0xFFFFFFFFFFFFFFFF)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser, vectorised: a bijection of uint64 that spreads every input bit."""
    x = x.astype(np.uint64, copy=True)
    with np.errstate(over="ignore"):
        x += np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return (x ^ (x >> np.uint64(31))) & _MASK


def file_key(path: Path) -> int:
    """A file's hash key: CRC-32 of its name (not its folder, so moving the data keeps the split)."""
    return zlib.crc32(Path(path).name.encode())


def row_hash(key: int, rows: np.ndarray, seed: int = 0) -> np.ndarray:
    """Uniform numbers in [0, 1), (n,), one per (file ``key``, 1-based ``rows``), the same on every
    run and worker: a row is held out for validation when its hash is below ``val_fraction``."""
    mixed = _splitmix64(np.asarray(rows, np.uint64) ^ _splitmix64(np.asarray([key ^ (seed << 32)], np.uint64)))
    return (mixed >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


@dataclass
class RunningMoments:
    """Count, mean, sum of squared deviations, min and max per column, updated chunk by chunk in
    float64 and merged exactly (Chan, Golub and LeVeque's pairwise update): the same mean and
    variance as one pass over all rows, whatever the chunks or the workers."""

    count: int = 0
    mean: np.ndarray | None = None  # (columns,) float64
    m2: np.ndarray | None = None
    low: np.ndarray | None = None
    high: np.ndarray | None = None

    def update(self, rows: np.ndarray) -> None:
        """Add (n, columns) rows."""
        if len(rows) == 0:
            return
        rows = np.asarray(rows, np.float64)
        other = RunningMoments(len(rows), rows.mean(axis=0), ((rows - rows.mean(axis=0)) ** 2).sum(axis=0),
                               rows.min(axis=0), rows.max(axis=0))
        self.merge(other)

    def merge(self, other: "RunningMoments") -> None:
        """Fold ``other`` (moments of other rows) into these."""
        if other.count == 0:
            return
        if self.count == 0:
            self.count, self.mean, self.m2 = other.count, other.mean.copy(), other.m2.copy()
            self.low, self.high = other.low.copy(), other.high.copy()
            return
        n = self.count + other.count
        delta = other.mean - self.mean
        self.mean = self.mean + delta * (other.count / n)
        self.m2 = self.m2 + other.m2 + delta ** 2 * (self.count * other.count / n)
        self.low, self.high = np.minimum(self.low, other.low), np.maximum(self.high, other.high)
        self.count = n

    @property
    def std(self) -> np.ndarray:
        """Population standard deviation per column (numpy's ``std``, ddof 0)."""
        return np.sqrt(self.m2 / max(self.count, 1))


@dataclass
class BottomK:
    """The ``k`` rows of smallest hash among those offered: a uniform sample of fixed size that
    does not depend on the order or the chunking of the data (ties aside, of probability ~2^-53)."""

    k: int
    rows: list[np.ndarray] = field(default_factory=list)
    hashes: list[np.ndarray] = field(default_factory=list)
    held: int = 0

    def offer(self, rows: np.ndarray, hashes: np.ndarray) -> None:
        """Offer rows (n, width) with their hashes (n,)."""
        if self.k <= 0 or len(rows) == 0:
            return
        self.rows.append(np.array(rows, np.float32))
        self.hashes.append(np.asarray(hashes, np.float64))
        self.held += len(rows)
        if self.held > 2 * self.k:
            self._trim()

    def _trim(self) -> None:
        rows, hashes = np.concatenate(self.rows), np.concatenate(self.hashes)
        if len(hashes) > self.k:
            keep = np.argpartition(hashes, self.k - 1)[:self.k]
            rows, hashes = rows[keep], hashes[keep]
        self.rows, self.hashes, self.held = [rows], [hashes], len(rows)

    def values(self, width: int) -> np.ndarray:
        """The sample, (<= k, width) float32, in hash order (so the same on every run)."""
        if not self.rows:
            return np.empty((0, width), np.float32)
        self._trim()
        return np.ascontiguousarray(self.rows[0][np.argsort(self.hashes[0], kind="stable")])


@dataclass(frozen=True)
class Shards:
    """The files of a training set too large to read whole, and the columns to train on."""

    files: tuple[Path, ...]
    features: tuple[str, ...]
    encoding: Any = None  # a mixed table's aeserve.columns.TableEncoding (its chunks hold encoded rows)

    @property
    def specs(self) -> tuple:
        """A mixed table's column records (empty for numeric rows)."""
        return self.encoding.columns if self.encoding is not None else ()

    @classmethod
    def find(cls, paths: Sequence[str | Path], columns: Sequence[str] | None = None,
             drop: Sequence[str] | None = None, *, categorical: Sequence[str] = (), numeric: Sequence[str] = (),
             min_category_count: int = 5, max_categories: int = 100, log=(), on_rows=None) -> "Shards":
        """Expand folders (their .parquet, .csv and .npy files) and globs into files, sorted, and
        check that every file has the columns trained on (the first file's, less ``drop``). When
        the first shard holds text or booleans (or ``categorical`` names columns), one pass over
        all shards types the columns, counts their categories and missing cells (``scan_columns``)
        and the shards read as a mixed table; ``log`` (names, or 'auto') marks numeric columns to
        be read through the signed log (``aeserve.transforms``), which also makes a mixed table."""
        log = parse_log(log)
        files = expand_paths(paths)
        first = column_names(files[0])
        if columns:
            features = list(columns)
        else:
            features = [c for c in first if c not in set(drop or ())]
        for path in files:
            names = column_names(path)
            unknown = [c for c in (drop or ()) if c not in names]
            lacking = [c for c in features if c not in names]
            if unknown and path == files[0]:
                raise InputError(f"{path}: cannot drop unknown column(s) {', '.join(map(repr, unknown))}")
            if lacking:
                raise InputError(f"{path}: no column(s) {', '.join(map(repr, lacking[:5]))} that {files[0].name} "
                                 f"has; every shard needs the columns trained on ({preview(features)})")
            if path.suffix.lower() == ".npy" and len(names) != len(features):
                raise InputError(f"{path}: {len(names)} columns, but {files[0].name} gives {len(features)}; "
                                 "every .npy shard must have the same width")
        if not features:
            raise InputError(f"{files[0]}: no columns left to use")
        types = _first_shard_types(files[0], features, categorical, numeric)
        plain = all(t == "numeric" for t in types.values())
        if plain and not log:
            return cls(tuple(files), tuple(features))
        if any(p.suffix.lower() == ".npy" for p in files):
            what = "--log" if plain else "text or boolean columns"
            raise InputError(f"{files[0]}: {what} need(s) .csv or .parquet shards, not .npy")
        from aeserve.columns import TableEncoding

        specs = scan_columns(files, types, min_count=min_category_count, max_categories=max_categories,
                             log=log, on_rows=on_rows)
        if plain and not any(spec.transform for spec in specs):
            return cls(tuple(files), tuple(features))
        return cls(tuple(files), tuple(features), TableEncoding(specs))

    @property
    def total_bytes(self) -> int:
        """Size of all shards on disk."""
        return sum(path.stat().st_size for path in self.files)

    def chunks(self, path: Path) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(values (n, features) float32, 1-based rows (n,)) of one shard, chunk by chunk."""
        for chunk in iter_chunks(path, list(self.features), encoding=self.encoding):
            yield chunk.values, chunk.row_numbers


def _first_shard_types(path: Path, features: Sequence[str], categorical: Sequence[str] = (),
                       numeric: Sequence[str] = ()) -> dict[str, str]:
    """Each column's type from the first shard (``aeserve.columns.infer_types``: Parquet by its
    schema; CSV by the types of its first block, a number column with a stray cell staying numeric
    so that the reader names the cell's row)."""
    import pyarrow as pa

    suffix = path.suffix.lower()
    if suffix == ".npy":
        if categorical:
            raise InputError(f"{path}: --categorical needs .csv or .parquet shards")
        return {name: "numeric" for name in features}
    first = None
    if suffix == ".parquet":
        from aeserve.readers import _parquet_file

        schema = _parquet_file(path).schema_arrow
    else:
        import pyarrow.csv as pacsv

        from aeserve.readers import NULL_VALUES

        try:
            with pacsv.open_csv(path, read_options=pacsv.ReadOptions(block_size=1 << 20),
                                convert_options=pacsv.ConvertOptions(include_columns=list(features),
                                                                     null_values=NULL_VALUES)) as reader:
                schema, first = reader.schema, pa.Table.from_batches([reader.read_next_batch()])
        except (pa.ArrowException, OSError, StopIteration):
            return {name: "numeric" for name in features}  # the reader says what is wrong, with the row
    from aeserve.tables import column_types

    return column_types(schema, list(features), first, categorical=categorical, numeric=numeric)


#: distinct values a categorical column may show in a streaming pass (an id column would grow without bound)
MAX_DISTINCT = 1_000_000


def _arrow_batches(path: Path, features: Sequence[str]):
    """A shard's columns as pyarrow tables, a block at a time (CSV cells as text: the pass only
    counts categories and missing cells; the reader checks numbers later, naming the row)."""
    import pyarrow as pa

    if path.suffix.lower() == ".parquet":
        from aeserve.readers import _parquet_file

        for batch in _parquet_file(path).iter_batches(batch_size=65_536, columns=list(features)):
            yield pa.Table.from_batches([batch])
        return
    import pyarrow.csv as pacsv

    from aeserve.readers import NULL_VALUES

    options = pacsv.ConvertOptions(include_columns=list(features), column_types={f: pa.string() for f in features},
                                   null_values=NULL_VALUES, strings_can_be_null=True)
    with pacsv.open_csv(path, read_options=pacsv.ReadOptions(block_size=4 << 20), convert_options=options) as reader:
        for batch in reader:
            yield pa.Table.from_batches([batch])


def scan_columns(files: Sequence[Path], types: dict[str, str], *, min_count: int = 5, max_categories: int = 100,
                 log=(), on_rows=None) -> tuple:
    """One pass over the shards: each column's missing cells and a categorical column's category
    counts, merged across blocks and files, into the column records a mixed bundle keeps
    (``aeserve.columns.spec_from_counts``: the same records as from the whole table at once);
    with ``log == 'auto'``, each numeric column's ``ValueShape`` too, which picks the columns read
    through the signed log (``aeserve.transforms.with_log``, as for the whole table)."""
    import pyarrow as pa

    from aeserve.columns import TableEncoding, category_counts, missing_cells, spec_from_counts
    from aeserve.manifest import ColumnSpec
    from aeserve.transforms import ValueShape, with_log

    counts: dict[str, dict[str, int]] = {name: {} for name, kind in types.items() if kind == "categorical"}
    shapes = {name: ValueShape() for name, kind in types.items() if kind == "numeric"} \
        if parse_log(log) == "auto" else {}
    missing = dict.fromkeys(types, 0)
    rows = 0
    for path in files:
        try:
            for table in _arrow_batches(path, list(types)):
                for name in types:
                    column = table.column(name)
                    absent = missing_cells(column)
                    missing[name] += int(absent.sum())
                    if name in shapes:  # a bad cell reads as 0 here; the training pass names its row
                        values = TableEncoding._numeric(column, absent, ColumnSpec(name), lambda *bad: None)
                        shapes[name].update(values[~absent])
                    if name in counts:
                        merged = counts[name]
                        for value, count in category_counts(column, absent).items():
                            merged[value] = merged.get(value, 0) + count
                        if len(merged) > MAX_DISTINCT:
                            raise InputError(f"{path}: column {name!r} shows more than {MAX_DISTINCT:,} distinct "
                                             "values (an id?); leave it out with --drop")
                rows += table.num_rows
                if on_rows is not None:
                    on_rows(table.num_rows)
        except pa.ArrowException as exc:
            raise InputError(f"{path}: cannot read ({str(exc).splitlines()[0][:200]})") from None
    specs = tuple(spec_from_counts(name, kind, counts.get(name, {}), missing=missing[name], rows=rows,
                                   min_count=min_count, max_categories=max_categories) for name, kind in types.items())
    return with_log(specs, log, shapes)


def expand_paths(paths: Sequence[str | Path]) -> list[Path]:
    """Files from files, folders and globs (``aeserve.serve.stream.expand_inputs``: the scoring
    verbs' rule), refusing two shards of one name: the split hashes the file name."""
    from aeserve.serve.stream import expand_inputs

    files = list(dict.fromkeys(expand_inputs(paths)))
    names = [p.name for p in files]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise InputError(f"two shards are named {twice[0]!r}; give each shard its own file name "
                         "(the validation split hashes the file name and the row)")
    return files


@dataclass
class ShardScan:
    """What one pass over the shards found: the training rows' moments, the counts, the
    fingerprint, and bounded samples of validation and training rows."""

    moments: RunningMoments
    rows: int
    train_rows: int
    val_rows: int
    sha256: str
    column_moments: dict[int, RunningMoments]  # a mixed table's numeric columns: moments of their present cells
    val_sample: np.ndarray    # (<= max_val_rows, features) float32: early stopping, threshold, p-values
    train_sample: np.ndarray  # (<= sample_rows, features) float32: the latent Gaussian, kept rows
    shard_rows: dict[str, int] = field(default_factory=dict)  # training rows of each shard, by file name

    def steps(self, shards: Shards, epoch: int, seed: int, workers: int, batch_size: int) -> int | None:
        """Batches each of ``workers`` takes in ``epoch``: the fewest any of them has full batches
        for (data-parallel steps must match); None for one worker (all its rows)."""
        if workers == 1:
            return None
        rows = [sum(self.shard_rows[p.name] for p in shards_of(shards, epoch, seed, (w, workers)))
                for w in range(workers)]
        return max(1, min(rows) // batch_size)


def scan(shards: Shards, val_fraction: float, *, max_val_rows: int = 100_000, sample_rows: int = 20_000,
         on_rows=None) -> ShardScan:
    """One pass: moments of the training rows, the counts, the sha256 of all rows (as float32, in
    file order: the in-memory fingerprint of the same rows), and the samples."""
    width = shards.encoding.width if shards.encoding is not None else len(shards.features)
    n = len(shards.specs)
    numeric = [j for j, spec in enumerate(shards.specs) if spec.type == "numeric"]
    logged = {j for j, spec in enumerate(shards.specs) if spec.transform == "log"}
    column_moments = {j: RunningMoments() for j in numeric}
    moments, digest = RunningMoments(), hashlib.sha256()
    val, train = BottomK(max_val_rows), BottomK(sample_rows)
    rows = held = 0
    shard_rows: dict[str, int] = {}
    for path in shards.files:
        key = file_key(path)
        shard_rows[path.name] = 0
        for values, numbers in shards.chunks(path):
            digest.update(np.ascontiguousarray(values, np.float32).tobytes())
            hashes = row_hash(key, numbers)
            is_val = hashes < val_fraction
            moments.update(values[~is_val])
            for j in numeric:  # a mixed table's numeric columns: their present training cells, as the graphs read them
                present = values[~is_val & (values[:, n + j] == 0), j:j + 1]
                column_moments[j].update(signed_log(present) if j in logged else present)
            val.offer(values[is_val], hashes[is_val])
            train.offer(values[~is_val], hashes[~is_val])
            rows += len(values)
            held += int(is_val.sum())
            shard_rows[path.name] += int((~is_val).sum())
            if on_rows is not None:
                on_rows(len(values))
    if rows == 0:
        raise InputError(f"{shards.files[0]}: no data rows in {len(shards.files)} shard(s)")
    if held == 0 or rows - held < 2:
        raise InputError(f"{rows} rows give {held} validation rows at --val-fraction {val_fraction}: need more rows "
                         "(or a larger --val-fraction) to hold out rows for early stopping and the threshold")
    return ShardScan(moments, rows, rows - held, held, digest.hexdigest(), column_moments, val.values(width),
                     train.values(width), shard_rows)


class ShuffleBuffer:
    """Rows mixed across chunks in bounded memory: chunks go in; once ``capacity`` rows are held
    they are permuted and batches leave until half remain, which mix with the next chunks."""

    def __init__(self, capacity: int, batch_size: int, rng: np.random.Generator):
        self.capacity, self.batch_size, self.rng = max(int(capacity), batch_size), batch_size, rng
        self.parts: list[np.ndarray] = []
        self.held = 0

    def add(self, rows: np.ndarray) -> Iterator[np.ndarray]:
        """Put (n, width) rows in; yield the batches that are ready."""
        self.parts.append(rows)
        self.held += len(rows)
        if self.held >= self.capacity:
            yield from self._release(keep=self.capacity // 2)

    def drain(self) -> Iterator[np.ndarray]:
        """The last batches of an epoch (the final one may be short)."""
        yield from self._release(keep=0)

    def _release(self, keep: int) -> Iterator[np.ndarray]:
        if not self.parts:
            return
        rows = np.concatenate(self.parts) if len(self.parts) > 1 else self.parts[0]
        rows = rows[self.rng.permutation(len(rows))]
        out = ((len(rows) - keep) // self.batch_size) * self.batch_size if keep else len(rows)
        for start in range(0, out, self.batch_size):
            yield rows[start:start + self.batch_size]
        self.parts, self.held = ([rows[out:]] if out < len(rows) else []), len(rows) - out


def shards_of(shards: Shards, epoch: int, seed: int, part: tuple[int, int] = (0, 1)) -> list[Path]:
    """The shards a worker reads in an epoch: every ``workers``-th of an order drawn from (``seed``,
    ``epoch``), so each epoch deals them out anew."""
    worker, workers = part
    if len(shards.files) < workers:
        raise InputError(f"{len(shards.files)} shard(s) for {workers} workers: each worker reads its own shards; "
                         f"give at least {workers} files (or fewer --workers)")
    order = np.random.default_rng([seed, epoch]).permutation(len(shards.files))
    return [shards.files[i] for i in order[worker::workers]]


def epoch_batches(shards: Shards, epoch: int, *, seed: int, val_fraction: float, batch_size: int,
                  shuffle_buffer: int, prefetch: int = 4, part: tuple[int, int] = (0, 1), max_batches: int | None = None) -> Iterator[np.ndarray]:
    """The training rows of one epoch in batches (batch, features) float32: shards in an order
    drawn from (``seed``, ``epoch``), read by a thread ``prefetch`` chunks ahead (so the model does
    not wait on I/O), validation rows dropped by hash, rows mixed by a ``ShuffleBuffer``.
    ``part`` = (worker, workers): this worker's shards (``shards_of``); ``max_batches``: stop after
    that many (data-parallel workers must take the same number of steps)."""
    rng = np.random.default_rng([seed, epoch, part[0]])
    mine = shards_of(shards, epoch, seed, part)
    def training_rows() -> Iterator[np.ndarray]:
        for path in mine:
            key = file_key(path)
            for values, numbers in shards.chunks(path):
                yield values[row_hash(key, numbers) >= val_fraction]

    chunks: queue.Queue = queue.Queue(maxsize=max(1, prefetch))
    halt = threading.Event()
    reader = _producer(training_rows, chunks, halt)
    buffer = ShuffleBuffer(shuffle_buffer, batch_size, rng)

    def batches() -> Iterator[np.ndarray]:
        for item in _drain(chunks):
            yield from buffer.add(item)
        yield from buffer.drain()

    try:
        yield from itertools.islice(batches(), max_batches)
    finally:
        halt.set()
        while reader.is_alive():  # unblock a reader waiting on a full queue, then let it end
            try:
                chunks.get_nowait()
            except queue.Empty:
                pass
            reader.join(timeout=0.05)
