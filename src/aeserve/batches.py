"""Batch sizes, in one place: the API's default batch, its slices, and the file path's calls.

The runtime model, the file pipeline and the precision checks (``aeserve.agreement``) all size
batches here, so a reduced precision is checked at exactly the batch sizes scoring uses.
"""

from __future__ import annotations

import math
from typing import Iterator

__all__ = ["auto_batch_size", "row_batches", "rows_per_call", "ROWS_PER_CALL"]

_ACTIVATION_BYTES = 4 << 20  # one layer's activations for a batch: about the L2 cache
ROWS_PER_CALL = 1 << 13      # rows the file path hands the model per call, about


def auto_batch_size(bundle) -> int:
    """Rows per backend call from the model's widest layer: a power of two near
    4 MiB / (4 bytes × width), between 256 and 4096 (784-wide MLP: 1024; 30-wide: 4096)."""
    widest = max([bundle.n_features, *bundle.manifest.architecture.hidden, bundle.latent_size])
    rows = _ACTIVATION_BYTES / (4 * widest)
    return int(min(4096, max(256, 2 ** round(math.log2(rows)))))


def row_batches(n: int, size: int) -> Iterator[slice]:
    """Consecutive slices of at most ``size`` rows covering ``range(n)``."""
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


def rows_per_call(batch_size: int) -> int:
    """Rows the file path hands the model per call: a multiple of ``batch_size`` near 8192, so
    per-call costs (queue hand-offs, checks, dicts) are paid less often for small batches while
    the backend still sees exactly the batches that scoring the whole input at once would."""
    return batch_size * max(1, ROWS_PER_CALL // batch_size)
