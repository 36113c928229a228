"""JSON for the server: orjson when installed (the ``serve`` extra brings it), else the standard
library. KServe v2 JSON tensors are long flat lists of numbers; orjson parses a 16 × 784 request
about 5x faster than ``json`` and writes numpy arrays without building Python lists."""

from __future__ import annotations

import json

import numpy as np

__all__ = ["loads", "dumps", "tensor_data", "ENGINE"]

try:
    import orjson
except ImportError:  # pragma: no cover - the serve extra installs it
    orjson = None

ENGINE = "orjson" if orjson is not None else "json"


def loads(data: bytes):
    """Parse JSON bytes; malformed text (bad UTF-8, NaN literals, too deep, integers beyond 64
    bits under orjson) raises ``json.JSONDecodeError`` (orjson's error is a subclass)."""
    if orjson is not None:
        return orjson.loads(data)
    try:
        return json.loads(data)
    except RecursionError:
        raise json.JSONDecodeError("nested too deeply", "", 0) from None


def dumps(value) -> bytes:
    """JSON bytes of ``value``; numpy arrays (from ``tensor_data``) are written directly."""
    if orjson is not None:
        return orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY)
    return json.dumps(value).encode()


def tensor_data(flat: np.ndarray):
    """A flat array as ``dumps`` writes it fastest: the array itself under orjson (C-contiguous,
    a dtype orjson knows), a list otherwise."""
    if orjson is not None and flat.dtype.kind in "fiub" and flat.flags.c_contiguous:
        return flat
    return flat.tolist()
