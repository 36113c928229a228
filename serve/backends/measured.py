"""``auto`` on a CPU: the backend chosen by measurement, once per machine and bundle.

The fastest CPU path differs from machine to machine (AMD or Intel, with or without AMX) and
from library version to version. So the first time a bundle is loaded with ``auto`` on a
machine without a GPU, every installed CPU backend that can run it is started and timed on
a short probe (the manifest's ``typical_rows``: rows like the training data); the
fastest is kept. The result is cached in the user's cache directory (``$AESERVE_CACHE_DIR``,
else ``$XDG_CACHE_HOME/aeserve``, else ``~/.cache/aeserve``; never inside the bundle), keyed
by the CPU model, the libraries' versions and the energy graph's sha256, so later loads
start only the chosen backend. ``Model.backend_reason`` says what was measured.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import platform
import time
from pathlib import Path
from typing import Callable

import numpy as np

from aeserve.atomic import write_text_atomic
from aeserve.bundle import Bundle
from aeserve.errors import AeserveError, BackendUnavailable

__all__ = ["cache_path", "cpu_model", "choose_by_measurement", "cached_choice", "PROBE_ROWS", "PROBE_BATCH"]

PROBE_ROWS = 8192
PROBE_BATCH = 1024
_REPEATS = 3


def cache_path() -> Path:
    """Where measured choices are kept."""
    root = os.environ.get("AESERVE_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "aeserve")
    return Path(root) / "backend-choice.json"


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``; else what ``platform`` says)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _library_version(module: str) -> str:
    try:
        return str(getattr(importlib.import_module(module), "__version__", "?"))
    except ImportError:
        return "missing"


def _key(bundle: Bundle, names: list[str], requires: dict[str, str]) -> str:
    graph = bundle.manifest.graph("energy")
    digest = bundle.manifest.files.get(graph.file, "?") if graph else "?"
    versions = {name: _library_version(requires[name]) for name in sorted(names)}
    return json.dumps({"cpu": cpu_model(), "threads": os.cpu_count(), "versions": versions, "graph": digest},
                      sort_keys=True)


def _read_cache() -> dict:
    try:
        data = json.loads(cache_path().read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _write_cache(key: str, entry: dict) -> None:
    data = _read_cache()
    data[key] = entry
    with contextlib.suppress(AeserveError, OSError):  # a read-only home: measure again next time
        write_text_atomic(cache_path(), json.dumps(data, indent=1, sort_keys=True) + "\n")


def _rate(backend, rows: np.ndarray) -> float:
    """Median rows/s of the energy graph over the probe, after one warm-up pass."""
    batches = [{"y": rows[i:i + PROBE_BATCH]} for i in range(0, len(rows), PROBE_BATCH)]
    run_batches = getattr(backend, "run_batches", None)

    def once() -> None:
        if run_batches is not None:
            run_batches("energy", batches, ["energy"])
        else:
            for feeds in batches:
                backend.run("energy", feeds, ["energy"])

    once()
    times = []
    for _ in range(_REPEATS):
        started = time.perf_counter()
        once()
        times.append(time.perf_counter() - started)
    return len(rows) / float(np.median(times))


def cached_choice(bundle: Bundle, candidates: list[str], requires: dict[str, str]) -> tuple[str, str] | None:
    """(backend, why) when a measured choice for this machine and bundle is cached; else None."""
    return _cached(_key(bundle, candidates, requires), candidates)


def _cached(key: str, candidates: list[str]) -> tuple[str, str] | None:
    cached = _read_cache().get(key)
    if isinstance(cached, dict) and cached.get("backend") in candidates and isinstance(cached.get("rates"), dict):
        return cached["backend"], (f"auto: {_describe(cached['rates'], cached['backend'])} "
                                   f"(measured on {cpu_model()}, cached in {cache_path()})")
    return None


def choose_by_measurement(bundle: Bundle, candidates: list[str], requires: dict[str, str],
                          start: Callable[[str], object]) -> tuple[object, str]:
    """(the fastest of ``candidates`` started, why), from the cache or measured now.
    ``start(name)`` makes a backend or raises BackendUnavailable; ``requires`` maps each
    candidate to the module whose version keys the cache."""
    key = _key(bundle, candidates, requires)
    cached = _cached(key, candidates)
    if cached is not None:
        try:
            return start(cached[0]), cached[1]
        except BackendUnavailable:
            pass  # measure again below
    rows = bundle.manifest.preprocessing.typical_rows(PROBE_ROWS)  # like the training data, in raw units
    started, rates, failed = {}, {}, []
    for name in candidates:
        try:
            backend = start(name)
            rates[name] = round(_rate(backend, rows))
            started[name] = backend
        except BackendUnavailable as exc:
            failed.append(f"not {name} ({exc})")
    if not started:
        raise BackendUnavailable("no CPU backend can run this bundle: " + "; ".join(failed))
    best = max(rates, key=rates.get)
    for name, backend in started.items():
        if name != best and hasattr(backend, "close"):
            backend.close()
    _write_cache(key, {"backend": best, "rates": rates, "measured": time.strftime("%Y-%m-%dT%H:%M:%S")})
    skipped = ("; ".join(failed) + "; ") if failed else ""
    return started[best], f"auto: {skipped}{_describe(rates, best)} (measured now on {cpu_model()})"


def _describe(rates: dict, best: str) -> str:
    shown = ", ".join(f"{name} {rate:,.0f} rows/s" for name, rate in sorted(rates.items(), key=lambda kv: -kv[1]))
    return f"{shown} -> {best}"
