"""aeserve.serve: the torch-free runtime (backends, batching, file scoring)."""

from aeserve.serve.backends import available_backends, list_backends
from aeserve.serve.model import Model, load

__all__ = ["Model", "load", "available_backends", "list_backends"]
