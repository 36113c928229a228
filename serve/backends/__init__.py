"""Runtime backends in one registry: each runs a bundle's graphs on numpy arrays.

A backend is created from a verified ``Bundle`` and exposes ``run(graph, feeds)`` which
returns the graph's outputs (manifest order) as numpy arrays. Modules are imported only
when a backend is created, so listing backends never imports torch or onnxruntime.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from aeserve.bundle import Bundle
from aeserve.errors import BackendUnavailable

__all__ = ["Backend", "BackendSpec", "register_backend", "list_backends", "available_backends",
           "create_backend", "choose_backend"]


class Backend(Protocol):
    """What the runtime needs of a backend."""

    name: str

    def run(self, graph: str, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Run ``graph`` on ``feeds`` (input name -> array); outputs in manifest order."""

    def describe(self) -> str:
        """One line: library, version and device."""


@dataclass(frozen=True)
class BackendSpec:
    """Where a backend lives and what it needs."""

    name: str
    target: str               # "module:Class"
    requires: tuple[str, ...]  # importable modules it needs
    install: str              # what to install when they are missing
    needs_graphs: bool        # runs the ONNX graphs (vs the weights)
    priority: int             # lower is tried first by "auto"


_BACKENDS: dict[str, BackendSpec] = {}


def register_backend(spec: BackendSpec) -> None:
    """Make a backend available under ``spec.name``."""
    _BACKENDS[spec.name] = spec


def list_backends() -> list[str]:
    """Every registered backend name, in ``auto`` preference order."""
    return [s.name for s in sorted(_BACKENDS.values(), key=lambda s: s.priority)]


def _installed(spec: BackendSpec) -> bool:
    return all(importlib.util.find_spec(module) is not None for module in spec.requires)


def available_backends() -> list[str]:
    """Backends whose libraries are installed here (without importing them)."""
    return [name for name in list_backends() if _installed(_BACKENDS[name])]


def choose_backend(name: str, bundle: Bundle) -> str:
    """Resolve ``auto`` to the first installed backend that can run ``bundle``."""
    if name != "auto":
        if name not in _BACKENDS:
            raise BackendUnavailable(f"unknown backend {name!r}; choose from auto, {', '.join(list_backends())}")
        return name
    has_graphs = bool(bundle.manifest.get("graphs"))
    for candidate in list_backends():
        spec = _BACKENDS[candidate]
        if spec.needs_graphs and not has_graphs:
            continue
        if spec.name != "torch" and _installed(spec):
            return candidate
    if has_graphs:
        raise BackendUnavailable("no runtime backend installed: pip install 'aeserve[cpu]' "
                                 "(onnxruntime), or 'aeserve[gpu]' on NVIDIA GPUs")
    raise BackendUnavailable(f"{bundle.path}: has no ONNX graphs; run `aeserve export {bundle.path}` "
                             "or use --backend torch")


def create_backend(name: str, bundle: Bundle, **options) -> Backend:
    """Instantiate backend ``name`` (``auto`` allowed) for ``bundle``."""
    spec = _BACKENDS[choose_backend(name, bundle)]
    if not _installed(spec):
        raise BackendUnavailable(f"backend {spec.name!r} needs {', '.join(spec.requires)}: {spec.install}")
    if spec.needs_graphs and not bundle.manifest.get("graphs"):
        raise BackendUnavailable(f"{bundle.path}: has no ONNX graphs for backend {spec.name!r}; "
                                 f"run `aeserve export {bundle.path}`")
    module_name, attr = spec.target.split(":")
    return getattr(importlib.import_module(module_name), attr)(bundle, **options)


register_backend(BackendSpec(
    name="onnxruntime", target="aeserve.serve.backends.onnxruntime:OnnxRuntimeBackend",
    requires=("onnxruntime",), install="pip install 'aeserve[cpu]' (or 'aeserve[gpu]' for CUDA)",
    needs_graphs=True, priority=20))
# The reference backend rebuilds the torch model from the weights; only used when asked for.
register_backend(BackendSpec(
    name="torch", target="aeserve.train.torch_backend:TorchBackend", requires=("torch",),
    install="pip install 'aeserve[train]'", needs_graphs=False, priority=90))
