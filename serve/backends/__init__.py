"""Runtime backends in one registry: each runs a bundle's graphs on numpy arrays.

A backend is created from a verified ``Bundle`` and exposes ``run(graph, feeds)`` which
returns the graph's outputs (manifest order) as numpy arrays. Modules are imported only
when a backend is created, so listing backends never imports torch or onnxruntime.
``auto`` prefers TensorRT (plans for this GPU and TensorRT version), then ONNX Runtime with
CUDA; on a machine without a GPU it times the installed CPU backends (ONNX Runtime, OpenVINO)
on a short probe and keeps the fastest, cached per machine and bundle
(``aeserve.serve.backends.measured``). It records why it chose what it chose; a backend that
fails while starting (a plan that does not deserialise, a CUDA provider whose libraries do not
load) is skipped with its reason. Backends free what they hold with ``close()``.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Protocol

from aeserve.bundle import Bundle
from aeserve.errors import BackendUnavailable

if TYPE_CHECKING:  # numpy stays out of `aeserve --help`, which lists the backends
    import numpy as np

__all__ = ["Backend", "BackendSpec", "register_backend", "list_backends", "available_backends",
           "create_backend", "choose_backend"]


class Backend(Protocol):
    """What the runtime needs of a backend."""

    name: str

    def run(self, graph: str, feeds: dict[str, np.ndarray], outputs: list[str] | None = None) -> list[np.ndarray]:
        """Run ``graph`` on ``feeds`` (input name -> array); the ``outputs`` named (default: all, in
        the graph record's order)."""

    def describe(self) -> str:
        """One line: library, version and device."""

    def close(self) -> None:
        """Free sessions, engines and device memory (the backend cannot run afterwards)."""


@dataclass(frozen=True)
class BackendSpec:
    """Where a backend lives, what it needs, and whether ``auto`` may pick it for a bundle."""

    name: str
    target: str                # "module:Class"
    requires: tuple[str, ...]  # importable modules it needs
    install: str               # what to install when they are missing
    priority: int              # lower is tried first by "auto"
    # bundle -> None when usable, else why not (checked after ``requires``)
    unusable: Callable[[Bundle], str | None] = lambda bundle: None
    auto: bool = True          # may ``auto`` choose it
    cpu: bool = False          # a CPU backend: on a machine without a GPU, ``auto`` times these and keeps the fastest
    options: tuple[str, ...] = ("device", "precision")  # the load options it takes; others are not passed to it


_BACKENDS: dict[str, BackendSpec] = {}


def register_backend(spec: BackendSpec) -> None:
    """Make a backend available under ``spec.name``."""
    _BACKENDS[spec.name] = spec


def list_backends() -> list[str]:
    """Every registered backend name, in ``auto`` preference order."""
    return [s.name for s in sorted(_BACKENDS.values(), key=lambda s: s.priority)]


def _missing(spec: BackendSpec) -> list[str]:
    missing = []
    for module in spec.requires:
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            missing.append(module)
    return missing


def available_backends() -> list[str]:
    """Backends whose libraries are installed here (without importing them)."""
    return [name for name in list_backends() if not _missing(_BACKENDS[name])]


def _why_not(spec: BackendSpec, bundle: Bundle) -> str | None:
    missing = _missing(spec)
    if missing:
        return f"{spec.name} needs {', '.join(missing)} ({spec.install})"
    return spec.unusable(bundle)


def _auto(bundle: Bundle, start: Callable[[BackendSpec], tuple[object, str | None]]) -> tuple[str, object, str]:
    """Walk the backends ``auto`` may take, in preference order: the first whose libraries are
    here, which can run ``bundle`` and which ``start`` accepts -> (name, what start made, why).
    ``start(spec)`` returns (value, None), or (None, why it cannot)."""
    skipped = []
    for candidate in list_backends():
        spec = _BACKENDS[candidate]
        if not spec.auto:
            continue
        reason = _why_not(spec, bundle)
        if reason is None:
            made, reason = start(spec)
            if reason is None:
                why = "auto: " + ("; ".join(skipped) + " -> " if skipped else "") + f"{candidate} is available"
                return candidate, made, why
        skipped.append(f"not {candidate} ({reason})")
    raise BackendUnavailable("no runtime backend can run this bundle: " + "; ".join(skipped))


def choose_backend(name: str, bundle: Bundle) -> tuple[str, str]:
    """Resolve ``name`` (``auto`` allowed) to (backend, why it was chosen), without starting it."""
    if name != "auto":
        if name not in _BACKENDS:
            raise BackendUnavailable(f"unknown backend {name!r}; choose from auto, {', '.join(list_backends())}")
        return name, "asked for"
    specs = _measure_on_cpu(bundle, {})
    if specs:
        from aeserve.serve.backends.measured import cached_choice

        names = [s.name for s in specs]
        cached = cached_choice(bundle, names, {s.name: s.requires[0] for s in specs})
        if cached is not None:
            return cached
        return names[0], f"auto: {', '.join(names)} are timed on the first load on this machine, the fastest kept"
    chosen, _, reason = _auto(bundle, lambda spec: (None, None))
    return chosen, reason


def _instantiate(spec: BackendSpec, bundle: Bundle, options: dict) -> Backend:
    module_name, attr = spec.target.split(":")
    taken = {k: v for k, v in options.items() if k in spec.options}
    return getattr(importlib.import_module(module_name), attr)(bundle, **taken)


def _measure_on_cpu(bundle: Bundle, options: dict) -> list[BackendSpec]:
    """The CPU backends ``auto`` should time against each other: at least two can run the bundle,
    no GPU is wanted or visible. Empty when the preference walk decides instead."""
    device = options.get("device", "auto")
    if device not in ("auto", "cpu"):
        return []
    specs = [_BACKENDS[n] for n in list_backends() if _BACKENDS[n].auto and _BACKENDS[n].cpu]
    specs = [s for s in specs if _why_not(s, bundle) is None]
    if len(specs) < 2:
        return []
    if device == "auto":
        from aeserve.serve.gpu import gpu_info

        if gpu_info() is not None:
            return []
    return specs


def create_backend(name: str, bundle: Bundle, **options) -> Backend:
    """Instantiate backend ``name`` (``auto`` allowed) for ``bundle``; sets ``.reason``. With
    ``auto``, a backend that fails to start (BackendUnavailable) is skipped for the next one."""
    if name != "auto":
        chosen, reason = choose_backend(name, bundle)
        why_not = _why_not(_BACKENDS[chosen], bundle)
        if why_not is not None:
            raise BackendUnavailable(f"backend {chosen!r} cannot run {bundle.path}: {why_not}")
        backend = _instantiate(_BACKENDS[chosen], bundle, options)
    elif specs := _measure_on_cpu(bundle, options):
        from aeserve.serve.backends.measured import choose_by_measurement

        backend, reason = choose_by_measurement(
            bundle, [s.name for s in specs], {s.name: s.requires[0] for s in specs},
            start=lambda name: _instantiate(_BACKENDS[name], bundle, options))
    else:
        def start(spec: BackendSpec):
            try:
                return _instantiate(spec, bundle, options), None
            except BackendUnavailable as exc:
                return None, f"it failed to start: {exc}"

        _, backend, reason = _auto(bundle, start)
    backend.reason = reason
    return backend


def _needs_graphs(bundle: Bundle) -> str | None:
    if bundle.manifest.graph("energy") is None:
        return f"{bundle.path} has no ONNX graphs; run `aeserve export {bundle.path}`"
    return None


def _needs_plans(bundle: Bundle) -> str | None:
    """None when the bundle has plans for this GPU and TensorRT version (the same matching as
    the backend's ``find_plan_dir``), else why not."""
    if not bundle.manifest.exports.tensorrt:
        return "no TensorRT plans in the bundle (aeserve export --format tensorrt)"
    from aeserve.serve.gpu import gpu_info

    gpu = gpu_info()
    if gpu is None:
        return "no NVIDIA GPU visible"
    import tensorrt

    from aeserve.serve.backends.tensorrt import match_plans

    return match_plans(bundle, gpu, tensorrt.__version__)[1] or None


register_backend(BackendSpec(
    name="tensorrt", target="aeserve.serve.backends.tensorrt:TensorRTBackend",
    requires=("tensorrt", "cuda.bindings"),
    install="pip install 'aeserve[gpu]' on CUDA 13 hosts, 'aeserve[gpu-cu12]' on CUDA 12 hosts", priority=10,
    unusable=_needs_plans))
register_backend(BackendSpec(
    name="onnxruntime", target="aeserve.serve.backends.onnxruntime:OnnxRuntimeBackend",
    requires=("onnxruntime",), install="pip install 'aeserve[cpu]', or 'aeserve[gpu]' for CUDA",
    priority=20, unusable=_needs_graphs, cpu=True, options=("device", "precision", "providers", "threads")))
register_backend(BackendSpec(
    name="openvino", target="aeserve.serve.backends.openvino:OpenVinoBackend", requires=("openvino",),
    install="pip install 'aeserve[openvino]'", priority=30, unusable=_needs_graphs, cpu=True,
    options=("device", "precision", "hint", "threads")))
# The reference backend rebuilds the torch model from the weights; used only when asked for.
register_backend(BackendSpec(
    name="torch", target="aeserve.train.torch_backend:TorchBackend", requires=("torch",),
    install="pip install 'aeserve[train]'", priority=90, auto=False))
