"""aeserve: energy-based autoencoders, trained in PyTorch, served without it.

>>> import aeserve
>>> model = aeserve.load("models/digits-ae")          # doctest: +SKIP
>>> model.score(rows)["anomaly"]                        # doctest: +SKIP
"""

from __future__ import annotations

from aeserve.errors import AeserveError, BackendUnavailable, BundleError, ExportError, InputError

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "load",
    "AeserveError",
    "BundleError",
    "InputError",
    "BackendUnavailable",
    "ExportError",
    "Detector",
]


def __getattr__(name: str):
    """``aeserve.Detector`` (train/detector.py) is imported when first asked for: it needs torch
    and scikit-learn, which ``import aeserve`` and the torch-free runtime must not pull in."""
    if name == "Detector":
        from aeserve.train.detector import Detector

        return Detector
    raise AttributeError(f"module 'aeserve' has no attribute {name!r}")


def load(path, backend: str = "auto", batch_size: int | None = None, **backend_options):
    """Open the bundle at ``path`` and return a runtime ``Model`` (see aeserve.serve.load)."""
    from aeserve.serve.model import load as _load

    return _load(path, backend=backend, batch_size=batch_size, **backend_options)
