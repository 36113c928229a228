"""A reduced precision is checked where it runs, before it is trusted.

int8 (ONNX Runtime's dynamic graphs, OpenVINO's static IR), bf16 (OpenVINO) and fp16 (TensorRT
plans) compute with kernels that differ from machine to machine: the export checked them on
the machine that quantised, which says nothing of a CPU without VNNI or of another GPU. So a
backend started at a reduced precision is compared with fp32 on the rows the bundle keeps from
validation, at the batch sizes scoring uses (``aeserve.agreement``: the export's own rule and
tolerance), before it is handed out. A backend that strays is closed and refused with one line
(BackendUnavailable: which precision, by how much, at which batch, on what machine, and that
fp32 works); ``auto`` drops it with that reason.

The verdict is cached beside ``auto``'s measured choices (``precision-checks.json`` in the
cache directory), keyed by the machine (CPU model and its int8/bf16 flags, or the GPU), the
library's version, the precision and the sha256 of every file in the bundle, so each bundle is
checked once per machine kind and library version.
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import Callable

from aeserve.agreement import (
    MIN_RANK,
    TOLERANCE,
    agreement_by_batch,
    check_rows,
    scoring_batch_sizes,
    strayed,
    worst_batch,
)
from aeserve.batches import auto_batch_size
from aeserve.bundle import GRAPH_INPUTS, Bundle
from aeserve.errors import BackendUnavailable
from aeserve.machine import INT8_FLAGS, cpu_flags, cpu_model, cpu_summary
from aeserve.serve.backends.measured import cache_path, library_version, read_cache, write_cache

__all__ = ["check_precision", "CACHE_FILE", "rule_for"]

CACHE_FILE = "precision-checks.json"
#: the graph set a precision runs -> the export record that holds its tolerance
_RECORDS = {"int8": "int8", "int8-static": "int8_static"}


def rule_for(bundle: Bundle, graphs: str) -> tuple[float, float]:
    """(tolerance, minimum rank agreement) for a graph set: what its export recorded, else the defaults."""
    record = getattr(bundle.manifest.exports, _RECORDS[graphs], None) if graphs in _RECORDS else None
    if record is None:
        return TOLERANCE, MIN_RANK
    return float(record.tolerance), float(record.details.get("min_rank_agreement", MIN_RANK))


def _machine(backend) -> tuple[str, str]:
    """(what keys the cache, how the message names it): the GPU a backend runs on, else the CPU."""
    gpu = backend.gpu
    if gpu is not None:
        name = f"{gpu.name} sm{''.join(map(str, gpu.compute_capability))}"
        return name, name
    flags = sorted(f for f in INT8_FLAGS if f in cpu_flags())
    return f"{cpu_model()} [{' '.join(flags)}]", cpu_summary()


def _key(bundle: Bundle, backend, label: str, module: str, batches: list[int]) -> str:
    files = hashlib.sha256(json.dumps(sorted(bundle.manifest.files.items())).encode()).hexdigest()
    return json.dumps({"machine": _machine(backend)[0], "label": label, "version": library_version(module),
                       "files": files, "batches": batches}, sort_keys=True)


def check_precision(bundle: Bundle, backend, label: str, module: str, graphs: str,
                    reference: Callable[[], object]) -> str:
    """Compare ``backend`` (started at a reduced precision; ``label`` e.g. 'onnxruntime/int8')
    with fp32 energies from ``reference()`` (a backend at fp32, closed afterwards), at the
    scoring batch sizes; ``module`` is the library whose version keys the cache and ``graphs``
    the graph set whose export record gives the tolerance. Returns one line for the backend's
    reason; closes ``backend`` and raises BackendUnavailable when its energies stray."""
    batches = scoring_batch_sizes(auto_batch_size(bundle))
    key = _key(bundle, backend, label, module, batches)
    path = cache_path(CACHE_FILE)
    verdict = read_cache(path).get(key)
    if not (isinstance(verdict, dict) and isinstance(verdict.get("message"), str)):
        verdict = _measure(bundle, backend, label, graphs, batches, reference)
        write_cache(key, verdict, path)
    if verdict.get("refused"):
        backend.close()
        raise BackendUnavailable(verdict["message"])
    return verdict["message"]


def _measure(bundle: Bundle, backend, label: str, graphs: str, batches: list[int],
             reference: Callable[[], object]) -> dict:
    rows, checked_on = check_rows(bundle)
    name = GRAPH_INPUTS["energy"]
    fp32 = reference()
    try:
        by_batch = agreement_by_batch(lambda x: fp32.run("energy", {name: x}, ["energy"])[0],
                                      lambda x: backend.run("energy", {name: x}, ["energy"])[0], rows, batches)
    finally:
        fp32.close()
    tolerance, min_rank = rule_for(bundle, graphs)
    problem = strayed(by_batch, tolerance, min_rank)
    where = _machine(backend)[1]
    worst, errors = worst_batch(by_batch)
    if problem is None:
        message = (f"{label} checked against fp32 on {where}: median relative error at most "
                   f"{errors['energy_median_relative_error']:.2%} (batch {worst}) over batches "
                   f"{', '.join(map(str, batches))}")
    else:
        fix = (f"; or quantise again with this aeserve: aeserve export {bundle.path} --quantize int8"
               if graphs in _RECORDS else "")
        message = (f"{bundle.path}: {label} refused on {where}: its {problem}, on {checked_on}; "
                   f"--precision fp32 runs this bundle exactly here{fix}")
    return {"refused": problem is not None, "message": message, "checked": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "by_batch": {str(b): e for b, e in by_batch.items()}}
