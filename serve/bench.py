"""Throughput measurements: rows/s and GFLOP/s of a bundle per backend and precision, beside
the machine's fp32 MatMul ceiling as ONNX Runtime reaches it. Medians of repeated runs."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from aeserve.bundle import Bundle
from aeserve.readers import CheckedRows

__all__ = ["BenchResult", "dense_flops_per_row", "matmul_ceiling", "ceiling_shapes", "time_rows", "bench_bundle"]


@dataclass
class BenchResult:
    """Best throughput of one backend/precision over the batch sizes tried."""

    backend: str
    precision: str
    batch: int
    rows_per_s: float
    gflops: float
    by_batch: dict[int, float]


def dense_flops_per_row(bundle: Bundle) -> float:
    """2·in·out summed over the encoder's and decoder's dense layers: the energy graph's MatMul
    work per row (the CAE Jacobian and lvm inference steps add more; not counted)."""
    arch = bundle.manifest.architecture
    sizes = [arch.model_width, *arch.hidden, arch.latent]  # a mixed table: its one-hot model space
    layers = sum(2 * a * b for a, b in zip(sizes[:-1], sizes[1:]))
    extra_heads = (len(bundle.manifest.encoder_outputs) - 1) * 2 * sizes[-2] * sizes[-1]  # a VAE's logvar head
    return float(arch.members * (2 * layers + extra_heads))  # encoder + mirrored decoder (+ code heads), per member


def _median_seconds(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def matmul_ceiling(m: int = 4096, k: int = 1024, n: int = 1024, repeats: int = 7) -> float:
    """GFLOP/s of one fp32 (m×k)·(k×n) MatMul in ONNX Runtime: this machine's practical ceiling
    for that shape (take the max over the shapes that matter)."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.random.default_rng(0).standard_normal((k, n)).astype(np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "matmul",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [m, k])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [m, n])], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(1).standard_normal((m, k)).astype(np.float32)
    return 2.0 * m * k * n / _median_seconds(lambda: session.run(None, {"x": x}), repeats) / 1e9


def ceiling_shapes(bundle: Bundle) -> list[tuple[int, int, int]]:
    """The (m, k, n) MatMuls whose best speed is taken as the ceiling: a large square one and
    the bundle's first dense layer at batch 1024."""
    arch = bundle.manifest.architecture
    return [(4096, 1024, 1024), (1024, arch.n_features, (arch.hidden or (arch.latent,))[0])]


def time_rows(fn: Callable[[np.ndarray], object], rows: np.ndarray, repeats: int = 5) -> float:
    """Median rows/s of ``fn(rows)``."""
    return len(rows) / _median_seconds(lambda: fn(rows), repeats)


def bench_bundle(path, backends: list[tuple[str, str]], batch_sizes: list[int], *, n_rows: int = 100_000,
                 repeats: int = 5) -> list[BenchResult]:
    """Energy throughput of the bundle at ``path`` for each (backend, precision)."""
    from aeserve.serve.model import load

    bundle = Bundle.open(path)
    typical = bundle.manifest.typical_rows(min(n_rows, 8192))
    rows = CheckedRows(np.resize(typical, (n_rows, bundle.n_features)))  # valid rows, encoded for a mixed table
    flops = dense_flops_per_row(bundle)
    results = []
    for backend, precision in backends:
        options = {"precision": precision} if precision != "fp32" else {}
        by_batch = {}
        for batch in batch_sizes:
            model = load(path, backend=backend, batch_size=batch, **options)
            by_batch[batch] = time_rows(model.energy, rows, repeats)
        best = max(by_batch, key=by_batch.get)
        results.append(BenchResult(backend, precision, best, by_batch[best], by_batch[best] * flops / 1e9, by_batch))
    return results
