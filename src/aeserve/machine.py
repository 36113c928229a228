"""What CPU this is: its model name and the instruction-set flags that change reduced-precision
results (VNNI for int8, AMX for bf16). Read from ``/proc/cpuinfo``; ``platform`` elsewhere.

Results that depend on a CPU feature are checked where they run, and cached per CPU: these
names key those caches and explain their verdicts.
"""

from __future__ import annotations

import contextlib
import functools
import platform
from pathlib import Path

__all__ = ["cpu_model", "cpu_flags", "cpu_has_amx", "cpu_has_vnni", "cpu_summary", "INT8_FLAGS"]

#: the flags that decide how int8 and bf16 run (and so key the per-CPU checks)
INT8_FLAGS = ("avx2", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "amx_int8", "amx_bf16", "avx512_bf16")


def _cpuinfo_field(name: str) -> str | None:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(name):
                return line.split(":", 1)[1].strip()
    return None


@functools.lru_cache(maxsize=1)
def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``; else what ``platform`` says)."""
    return _cpuinfo_field("model name") or platform.processor() or platform.machine()


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (``flags`` in /proc/cpuinfo); empty where it cannot be read."""
    return frozenset((_cpuinfo_field("flags") or "").split())


def cpu_has_amx() -> bool:
    """Whether the CPU has AMX tiles for bf16 (``amx_bf16``)."""
    return "amx_bf16" in cpu_flags()


def cpu_has_vnni() -> bool:
    """Whether the CPU has VNNI int8 dot products (AVX-512 VNNI or AVX-VNNI): without them, the
    u8×s8 kernels sum pairs of products in 16 bits."""
    return bool({"avx512_vnni", "avx_vnni"} & cpu_flags())


def cpu_summary() -> str:
    """The model and its int8/bf16-relevant flags, e.g. 'AMD EPYC (avx2; no VNNI, no AMX)'."""
    flags = [f for f in INT8_FLAGS if f in cpu_flags()]
    missing = [what for what, present in (("VNNI", cpu_has_vnni()), ("AMX", cpu_has_amx())) if not present]
    shown = ", ".join(flags) or "flags unknown"
    return f"{cpu_model()} ({shown}{'; no ' + ', no '.join(missing) if missing else ''})"
