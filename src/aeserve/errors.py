"""The errors aeserve raises on purpose.

Every one of them describes a user-fixable problem in one line: which file, row,
column or graph, and what was expected. The CLI prints that line and exits 2.
"""

from __future__ import annotations

__all__ = [
    "AeserveError",
    "BundleError",
    "InputError",
    "BackendUnavailable",
    "ExportError",
]


class AeserveError(Exception):
    """Base class: a problem the user can fix, explained in one line."""


class BundleError(AeserveError):
    """A bundle is missing, incomplete, tampered with, or of an unknown kind/schema."""


class InputError(AeserveError):
    """Input data is unusable: wrong width, NaN/inf, text in a number column, unreadable file."""


class BackendUnavailable(AeserveError):
    """A requested backend cannot run here; the message says what to install."""


class ExportError(AeserveError):
    """An exported graph disagrees with the torch model, or could not be written."""
