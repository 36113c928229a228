"""``auto`` on a CPU: the backend chosen by measurement, once per machine and bundle.

The fastest CPU path differs from machine to machine (AMD or Intel, with or without AMX) and
from library version to version. So the first time a bundle is loaded with ``auto`` on a
machine without a GPU, every installed CPU backend that can run it is started and timed on
a short probe (the manifest's ``typical_rows``: rows like the training data); the
fastest is kept. The result is cached in the user's cache directory (``$AESERVE_CACHE_DIR``,
else ``$XDG_CACHE_HOME/aeserve``, else ``~/.cache/aeserve``; never inside the bundle), keyed
by the CPU model, the libraries' versions and the energy graph's sha256, so later loads
start only the chosen backend. ``Model.backend_reason`` says what was measured.

Candidates are ``backends.Candidate`` records, labelled ``openvino`` or ``onnxruntime/int8``. A
reduced-precision candidate is kept only if its probe energies rank rows as the fp32 ones
do (Spearman >= 0.999): int8 graphs were checked at export, bf16 arithmetic was not.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import time
from pathlib import Path
from typing import Callable

import numpy as np

from aeserve.agreement import MIN_RANK
from aeserve.atomic import write_text_atomic
from aeserve.bundle import Bundle
from aeserve.errors import AeserveError, BackendUnavailable
from aeserve.evaluation import rank_correlation
from aeserve.machine import cpu_has_amx, cpu_model

__all__ = ["cache_path", "read_cache", "write_cache", "library_version", "cpu_model", "cpu_has_amx",
           "choose_by_measurement", "cached_choice", "PROBE_ROWS", "PROBE_BATCH", "MIN_RANK_AGREEMENT"]

PROBE_ROWS = 8192
PROBE_BATCH = 1024
_REPEATS = 3
MIN_RANK_AGREEMENT = MIN_RANK  # the export's and the precision check's rule


def cache_path(name: str = "backend-choice.json") -> Path:
    """Where measured choices (and, under other names, per-machine checks) are kept."""
    root = os.environ.get("AESERVE_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "aeserve")
    return Path(root) / name


def library_version(module: str) -> str:
    """``module.__version__`` without failing: '?' when it has none, 'missing' when not installed."""
    try:
        return str(getattr(importlib.import_module(module), "__version__", "?"))
    except ImportError:
        return "missing"


def _key(bundle: Bundle, candidates: list) -> str:
    graph = bundle.manifest.graph("energy")
    digest = bundle.manifest.files.get(graph.file, "?") if graph else "?"
    versions = {c.label: library_version(c.module) for c in sorted(candidates, key=lambda c: c.label)}
    return json.dumps({"cpu": cpu_model(), "threads": os.cpu_count(), "versions": versions, "graph": digest},
                      sort_keys=True)


def read_cache(path: Path | None = None) -> dict:
    """The cached entries (key -> entry) in ``path`` (default: the measured choices); {} if none."""
    try:
        data = json.loads((path or cache_path()).read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def write_cache(key: str, entry: dict, path: Path | None = None) -> None:
    """Add ``entry`` under ``key``; a cache that cannot be written is skipped (measured again next time)."""
    path = path or cache_path()
    data = read_cache(path)
    data[key] = entry
    with contextlib.suppress(AeserveError, OSError):  # a read-only home
        write_text_atomic(path, json.dumps(data, indent=1, sort_keys=True) + "\n")


def _rate(backend, rows: np.ndarray) -> tuple[float, np.ndarray]:
    """(median rows/s of the energy graph over the probe after one warm-up pass, the energies)."""
    batches = [{"y": rows[i:i + PROBE_BATCH]} for i in range(0, len(rows), PROBE_BATCH)]

    def once() -> list:
        return backend.run_batches("energy", batches, ["energy"])

    energies = np.concatenate([outputs[0] for outputs in once()])
    times = []
    for _ in range(_REPEATS):
        started = time.perf_counter()
        once()
        times.append(time.perf_counter() - started)
    return len(rows) / float(np.median(times)), energies


def cached_choice(bundle: Bundle, candidates: list) -> tuple[object, str] | None:
    """(the candidate, why) when a measured choice among ``candidates`` (``backends.Candidate``)
    for this machine and bundle is cached; else None."""
    return _cached(_key(bundle, candidates), candidates)


def _cached(key: str, candidates: list) -> tuple[object, str] | None:
    cached = read_cache().get(key)
    by_label = {c.label: c for c in candidates}
    if isinstance(cached, dict) and cached.get("backend") in by_label and isinstance(cached.get("rates"), dict):
        return by_label[cached["backend"]], (f"auto: {_describe(cached['rates'], cached['backend'])} "
                                             f"(measured on {cpu_model()}, cached in {cache_path()})")
    return None


def choose_by_measurement(bundle: Bundle, candidates: list, start: Callable[[object], object]) -> tuple[object, str]:
    """(the fastest of ``candidates`` (``backends.Candidate``) started, why), from the cache or
    measured now. ``start(candidate)`` makes a backend or raises BackendUnavailable."""
    key = _key(bundle, candidates)
    cached = _cached(key, candidates)
    if cached is not None:
        try:
            return start(cached[0]), cached[1]
        except BackendUnavailable:
            pass  # measure again below
    rows = bundle.manifest.typical_rows(PROBE_ROWS)  # like the training data, in raw units
    started, rates, failed, reference = {}, {}, [], None
    for candidate in sorted(candidates, key=lambda c: c.reduced):  # fp32 first: the reference energies
        label = candidate.label
        try:
            backend = start(candidate)
            rate, energies = _rate(backend, rows)
        except BackendUnavailable as exc:
            failed.append(f"not {label} ({exc})")
            continue
        if not candidate.reduced and reference is None:
            reference = energies
        agreement = rank_correlation(reference, energies) if reference is not None and candidate.reduced else 1.0
        if agreement < MIN_RANK_AGREEMENT:
            failed.append(f"not {label} (ranks the probe rows differently from fp32: Spearman {agreement:.4f})")
            backend.close()
            continue
        rates[label] = round(rate)
        started[label] = backend
    if not started:
        raise BackendUnavailable("no CPU backend can run this bundle: " + "; ".join(failed))
    best = max(rates, key=rates.get)
    for label, backend in started.items():
        if label != best:
            backend.close()
    write_cache(key, {"backend": best, "rates": rates, "measured": time.strftime("%Y-%m-%dT%H:%M:%S")})
    skipped = ("; ".join(failed) + "; ") if failed else ""
    return started[best], f"auto: {skipped}{_describe(rates, best)} (measured now on {cpu_model()})"


def _describe(rates: dict, best: str) -> str:
    shown = ", ".join(f"{name} {rate:,.0f} rows/s" for name, rate in sorted(rates.items(), key=lambda kv: -kv[1]))
    return f"{shown} -> {best}"
