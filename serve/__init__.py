"""aeserve.serve: the torch-free runtime (backends, batching, file scoring).

``Model`` and ``load`` are imported on first use, so listing the backends (as ``aeserve
--help`` does) costs no numpy import.
"""

from aeserve.serve.backends import available_backends, list_backends

__all__ = ["Model", "load", "available_backends", "list_backends"]


def __getattr__(name: str):
    if name in ("Model", "load"):
        from aeserve.serve import model

        return getattr(model, name)
    raise AttributeError(f"module 'aeserve.serve' has no attribute {name!r}")
