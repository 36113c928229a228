"""Prometheus text-format metrics without a dependency: counters and histograms with labels."""

from __future__ import annotations

import threading
from collections import defaultdict

__all__ = ["Metrics"]

LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192)
BYTE_BUCKETS = tuple(2 ** k for k in range(8, 28, 2))  # 256 B .. 64 MiB


def _labels(labels: tuple[tuple[str, str], ...]) -> str:
    return "{" + ",".join(f'{k}="{v}"' for k, v in labels) + "}" if labels else ""


class _Histogram:
    def __init__(self, buckets):
        self.buckets = buckets
        self.counts = [0] * len(buckets)
        self.total = 0
        self.sum = 0.0

    def observe(self, value: float) -> None:
        for i, bound in enumerate(self.buckets):
            if value <= bound:
                self.counts[i] += 1
        self.total += 1
        self.sum += value


class Metrics:
    """Thread-safe registry; ``render()`` gives the /metrics page."""

    HELP = {
        "aeserve_requests_total": ("counter", "Inference requests by model and status (HTTP code, or 'grpc CODE')."),
        "aeserve_rows_total": ("counter", "Rows inferred by model."),
        "aeserve_batch_rows": ("histogram", "Rows per backend call after dynamic batching."),
        "aeserve_request_latency_seconds": ("histogram", "Request latency from arrival to response."),
        "aeserve_queue_seconds": ("histogram", "Time a request's rows waited in the batcher before their batch ran "
                                  "(Triton: nv_inference_queue_duration_us)."),
        "aeserve_compute_seconds": ("histogram", "Backend time of one batch (Triton: nv_inference_compute_infer_"
                                    "duration_us)."),
        "aeserve_request_bytes": ("histogram", "Request body size (HTTP) or message size (gRPC)."),
    }
    BUCKETS = {"aeserve_batch_rows": BATCH_BUCKETS, "aeserve_request_bytes": BYTE_BUCKETS}

    def __init__(self):
        self._lock = threading.Lock()
        self._counters: dict[str, dict[tuple, float]] = defaultdict(lambda: defaultdict(float))
        self._histograms: dict[str, dict[tuple, _Histogram]] = defaultdict(dict)

    def inc(self, name: str, value: float = 1.0, **labels: str) -> None:
        """Add ``value`` to counter ``name`` with ``labels``."""
        with self._lock:
            self._counters[name][tuple(sorted(labels.items()))] += value

    def observe(self, name: str, value: float, **labels: str) -> None:
        """Record ``value`` in histogram ``name``."""
        buckets = self.BUCKETS.get(name, LATENCY_BUCKETS)
        key = tuple(sorted(labels.items()))
        with self._lock:
            self._histograms[name].setdefault(key, _Histogram(buckets)).observe(value)

    def render(self) -> str:
        """Prometheus exposition text."""
        lines = []
        with self._lock:
            for name, (kind, text) in self.HELP.items():
                lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]
                for key, value in sorted(self._counters.get(name, {}).items()):
                    lines.append(f"{name}{_labels(key)} {value:g}")
                for key, hist in sorted(self._histograms.get(name, {}).items()):
                    for bound, count in zip(hist.buckets, hist.counts):
                        lines.append(f"{name}_bucket{_labels(key + (('le', f'{bound:g}'),))} {count}")
                    lines.append(f"{name}_bucket{_labels(key + (('le', '+Inf'),))} {hist.total}")
                    lines.append(f"{name}_sum{_labels(key)} {hist.sum:g}")
                    lines.append(f"{name}_count{_labels(key)} {hist.total}")
        return "\n".join(lines) + "\n"
