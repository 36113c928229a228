"""Runtime backends in one registry: each runs a bundle's graphs on numpy arrays.

A backend is created from a verified ``Bundle`` and exposes ``run(graph, feeds)`` which
returns the graph's outputs (manifest order) as numpy arrays. Modules are imported only
when a backend is created, so listing backends never imports torch or onnxruntime.
``auto`` prefers TensorRT (plans for this GPU and TensorRT version), then ONNX Runtime with
CUDA; on a machine without a GPU it times the installed CPU backends (ONNX Runtime, OpenVINO)
on a short probe and keeps the fastest, cached per machine and bundle
(``aeserve.serve.backends.measured``). Each backend lists the precisions it runs and the
graph set each needs (ONNX Runtime int8: the dynamic int8 ONNX graphs; OpenVINO int8: the
static int8 IR; OpenVINO bf16: the fp32 graphs in bf16 arithmetic); ``precision="auto"``
times every (backend, precision) pair the bundle allows, bf16 only where the CPU has AMX.
It records why it chose what it chose; a backend that fails while starting (a plan that
does not deserialise, a CUDA provider whose libraries do not load) is skipped with its
reason. Backends free what they hold with ``close()``.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Protocol

from aeserve.errors import BackendUnavailable

if TYPE_CHECKING:  # numpy and the manifest stay out of `aeserve --help`, which lists the backends
    import numpy as np

    from aeserve.bundle import Bundle

__all__ = ["Backend", "BackendBase", "BackendSpec", "Candidate", "register_backend", "list_backends", "available_backends",
           "create_backend", "choose_backend", "cpu_candidates", "PRECISIONS"]

#: what ``precision`` may be: one of these, or ``auto`` (the fastest the bundle allows, measured)
PRECISIONS = ("fp32", "int8", "bf16")


class Backend(Protocol):
    """What the runtime needs of a backend: everything ``Model``, ``auto`` and the precision
    check call. ``BackendBase`` gives the defaults a backend may keep."""

    name: str
    #: the arithmetic it computes in: fp32, int8, bf16, or a TensorRT plan's fp16
    precision: str
    #: why it was chosen (``auto``'s reasoning, or "asked for"), set by ``create_backend``
    reason: str
    #: what the check against fp32 found, for a reduced precision; "" otherwise
    precision_check: str
    #: the GPU it runs on (``serve.gpu.GpuInfo``), None on the CPU
    gpu: object | None

    def run(self, graph: str, feeds: dict[str, np.ndarray], outputs: list[str] | None = None) -> list[np.ndarray]:
        """Run ``graph`` on ``feeds`` (input name -> array); the ``outputs`` named (default: all, in
        the graph record's order)."""

    def run_batches(self, graph: str, batches: list[dict[str, np.ndarray]],
                    outputs: list[str] | None = None) -> list[list[np.ndarray]]:
        """``run`` on each of ``batches``, in order (a backend may keep several in flight)."""

    def preload(self) -> None:
        """Load every graph now rather than at its first call."""

    def describe(self) -> str:
        """One line: library, version and device."""

    def close(self) -> None:
        """Free sessions, engines and device memory (the backend cannot run afterwards)."""


class BackendBase:
    """Defaults for ``Backend``: fp32, batches run one after another, nothing to preload or free."""

    name = "?"
    precision = "fp32"
    reason = ""
    precision_check = ""
    gpu = None

    def run(self, graph: str, feeds: dict[str, np.ndarray], outputs: list[str] | None = None) -> list[np.ndarray]:
        """Run ``graph`` on ``feeds``; every backend defines it."""
        raise NotImplementedError

    def run_batches(self, graph: str, batches: list[dict[str, np.ndarray]],
                    outputs: list[str] | None = None) -> list[list[np.ndarray]]:
        """``run`` on each of ``batches``, one after another."""
        return [self.run(graph, feeds, outputs) for feeds in batches]

    def preload(self) -> None:
        """Nothing to load ahead (graphs load at construction or first call)."""

    def describe(self) -> str:
        """The backend's name."""
        return self.name

    def close(self) -> None:
        """Nothing to free."""


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
    # precision -> the manifest's graph set it runs (fp32, int8, int8-static)
    precisions: dict[str, str] = field(default_factory=lambda: {"fp32": "fp32"})


@dataclass(frozen=True)
class Candidate:
    """One (backend, precision) ``auto`` may start: labelled ``openvino`` or ``onnxruntime/int8``
    in measurements, the cache and reasons."""

    spec: BackendSpec
    precision: str = "fp32"

    @property
    def label(self) -> str:
        """How measurements, the cache and reasons name it."""
        return self.spec.name if self.precision == "fp32" else f"{self.spec.name}/{self.precision}"

    @property
    def module(self) -> str:
        """The library whose version keys cached measurements and checks."""
        return self.spec.requires[0]

    @property
    def reduced(self) -> bool:
        """Whether it computes below fp32 (its energies are checked against fp32's)."""
        return self.precision != "fp32"


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


_EXPORT_HINT = {"int8": "aeserve export BUNDLE --quantize int8",
                "int8-static": "aeserve export BUNDLE --quantize int8, with nncf installed"}


def _why_not(spec: BackendSpec, bundle: Bundle, precision: str = "fp32") -> str | None:
    missing = _missing(spec)
    if missing:
        return f"{spec.name} needs {', '.join(missing)} ({spec.install})"
    if precision not in spec.precisions:
        return f"{spec.name} runs {', '.join(spec.precisions)}, not {precision}"
    graphs = spec.precisions[precision]
    if graphs != "fp32" and bundle.manifest.graph("energy", graphs) is None:
        return f"no {graphs} graphs for {spec.name} ({_EXPORT_HINT[graphs].replace('BUNDLE', str(bundle.path))})"
    return spec.unusable(bundle)


def _auto(bundle: Bundle, start: Callable[[BackendSpec], tuple[object, str | None]],
          precision: str = "fp32") -> tuple[str, object, str]:
    """Walk the backends ``auto`` may take, in preference order: the first whose libraries are
    here, which can run ``bundle`` and which ``start`` accepts -> (name, what start made, why).
    ``start(spec)`` returns (value, None), or (None, why it cannot)."""
    skipped = []
    for candidate in list_backends():
        spec = _BACKENDS[candidate]
        if not spec.auto:
            continue
        reason = _why_not(spec, bundle, precision)
        if reason is None:
            made, reason = start(spec)
            if reason is None:
                why = "auto: " + ("; ".join(skipped) + " -> " if skipped else "") + f"{candidate} is available"
                return candidate, made, why
        skipped.append(f"not {candidate} ({reason})")
    raise BackendUnavailable("no runtime backend can run this bundle: " + "; ".join(skipped))


def choose_backend(name: str, bundle: Bundle, precision: str = "fp32") -> tuple[str, str]:
    """Resolve ``name`` (``auto`` allowed) to (backend, why it was chosen), without starting it."""
    if name != "auto":
        if name not in _BACKENDS:
            raise BackendUnavailable(f"unknown backend {name!r}; choose from auto, {', '.join(list_backends())}")
        return name, "asked for"
    candidates = _measure_on_cpu(bundle, {}, precision)
    if candidates:
        from aeserve.serve.backends.measured import cached_choice

        cached = cached_choice(bundle, candidates)
        if cached is not None:
            return cached[0].spec.name, cached[1]
        return candidates[0].spec.name, (f"auto: {', '.join(c.label for c in candidates)} are timed on the first "
                                         "load on this machine, the fastest kept")
    chosen, _, reason = _auto(bundle, lambda spec: (None, None), "fp32" if precision == "auto" else precision)
    return chosen, reason


def _instantiate(candidate: Candidate, bundle: Bundle, options: dict) -> Backend:
    module_name, attr = candidate.spec.target.split(":")
    taken = {k: v for k, v in options.items() if k in candidate.spec.options}
    if candidate.reduced:
        taken["precision"] = candidate.precision
    return getattr(importlib.import_module(module_name), attr)(bundle, **taken)


def _start(candidate: Candidate, bundle: Bundle, options: dict) -> Backend:
    """``_instantiate``, then, when the backend computes at a reduced precision (int8, bf16, or a
    TensorRT fp16 plan), its energies checked against fp32 here (``checked.check_precision``):
    BackendUnavailable when they stray. The check's verdict lands in ``precision_check``."""
    backend = _instantiate(candidate, bundle, options)
    if backend.precision == "fp32":
        return backend
    try:
        backend.precision_check = _check_precision(candidate, bundle, backend, options)
    except BaseException:
        backend.close()
        raise
    return backend


def _check_precision(candidate: Candidate, bundle: Bundle, backend: Backend, options: dict) -> str:
    """Check ``backend`` against fp32 from the same library on the CPU (TensorRT: ONNX Runtime)."""
    from aeserve.serve.backends.checked import check_precision

    spec = candidate.spec
    reference = Candidate(spec if spec.cpu and "fp32" in spec.precisions else _BACKENDS["onnxruntime"])
    running = candidate if candidate.reduced else Candidate(spec, backend.precision)  # a plan's own fp16
    why_not = _why_not(reference.spec, bundle)
    if why_not is not None:
        return f"{running.label} not checked against fp32 here ({why_not})"
    cpu_options = {"device": "cpu", **({"threads": options["threads"]} if "threads" in options else {})}
    return check_precision(bundle, backend, running.label, running.module,
                           spec.precisions.get(running.precision, running.precision),
                           lambda: _instantiate(reference, bundle, cpu_options))


def _candidate_precisions(precision: str) -> list[str]:
    """``precision`` itself, or for ``auto`` every precision worth timing on this CPU (bf16
    only with AMX: without it OpenVINO emulates bf16 and is slower than fp32)."""
    if precision != "auto":
        return [precision]
    from aeserve.serve.backends.measured import cpu_has_amx

    return ["fp32", "int8", *(["bf16"] if cpu_has_amx() else [])]


def _cpu_candidates(bundle: Bundle, precision: str, names: list[str] | None = None) -> list[Candidate]:
    specs = [_BACKENDS[n] for n in (names or list_backends())
             if (names is not None or _BACKENDS[n].auto) and _BACKENDS[n].cpu]
    return [Candidate(s, p) for s in specs for p in _candidate_precisions(precision) if _why_not(s, bundle, p) is None]


def cpu_candidates(bundle: Bundle) -> list[Candidate]:
    """Every (CPU backend, precision) ``precision="auto"`` would time for ``bundle`` here."""
    return _cpu_candidates(bundle, "auto")


def _measure_on_cpu(bundle: Bundle, options: dict, precision: str = "fp32",
                    names: list[str] | None = None) -> list[Candidate]:
    """The candidates ``auto`` should time against each other: at least two can run the bundle,
    no GPU is wanted or visible. Empty when the preference walk decides instead. ``names``
    limits the backends (an explicit ``--backend`` with ``precision=auto``)."""
    device = options.get("device", "auto")
    if device not in ("auto", "cpu"):
        return []
    candidates = _cpu_candidates(bundle, precision, names)
    if len(candidates) < 2:
        return []
    if device == "auto" and names is None:
        from aeserve.serve.gpu import gpu_info

        if gpu_info() is not None:
            return []
    return candidates


def create_backend(name: str, bundle: Bundle, **options) -> Backend:
    """Instantiate backend ``name`` (``auto`` allowed) for ``bundle``; sets ``.reason``. With
    ``auto``, a backend that fails to start (BackendUnavailable) is skipped for the next one.
    ``precision``: fp32 (default), int8, bf16 (OpenVINO), or auto (the fastest the bundle allows)."""
    precision = options.pop("precision", "fp32")
    if precision != "auto" and precision not in PRECISIONS:
        raise BackendUnavailable(f"unknown precision {precision!r}; choose from auto, {', '.join(PRECISIONS)}")
    names = None if name == "auto" else [choose_backend(name, bundle)[0]]
    wanted = "fp32" if precision == "auto" else precision
    if candidates := _measure_on_cpu(bundle, options, precision, names):
        from aeserve.serve.backends.measured import choose_by_measurement

        backend, reason = choose_by_measurement(bundle, candidates,
                                                start=lambda candidate: _start(candidate, bundle, options))
    elif name != "auto":
        spec = _BACKENDS[names[0]]
        why_not = _why_not(spec, bundle, wanted)
        if why_not is not None:
            raise BackendUnavailable(f"backend {spec.name!r} cannot run {bundle.path}: {why_not}")
        backend, reason = _start(Candidate(spec, wanted), bundle, options), "asked for"
    else:
        def start(spec: BackendSpec):
            try:
                return _start(Candidate(spec, wanted), bundle, options), None
            except BackendUnavailable as exc:
                return None, f"it failed to start: {exc}"

        _, backend, reason = _auto(bundle, start, wanted)
    backend.reason = f"{reason}; {backend.precision_check}" if backend.precision_check else reason
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
    priority=20, unusable=_needs_graphs, cpu=True, options=("device", "precision", "providers", "threads"),
    precisions={"fp32": "fp32", "int8": "int8"}))
register_backend(BackendSpec(
    name="openvino", target="aeserve.serve.backends.openvino:OpenVinoBackend", requires=("openvino",),
    install="pip install 'aeserve[openvino]'", priority=30, unusable=_needs_graphs, cpu=True,
    options=("device", "precision", "hint", "threads"),
    precisions={"fp32": "fp32", "int8": "int8-static", "bf16": "fp32"}))
# The reference backend rebuilds the torch model from the weights; used only when asked for.
register_backend(BackendSpec(
    name="torch", target="aeserve.train.torch_backend:TorchBackend", requires=("torch",),
    install="pip install 'aeserve[train]'", priority=90, auto=False))
