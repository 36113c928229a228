"""The errors aeserve raises on purpose.

Every one of them describes a user-fixable problem in one line: which file, row,
column or graph, and what was expected. The CLI prints that line and exits 2.

    AeserveError
    ├── BundleError         a bundle is missing, incomplete, tampered with, of an unknown kind/schema
    ├── InputError          unusable data or arguments: width, NaN/inf, text in a number column, file
    │   └── OptionError     a model option's value (``option`` names the config field)
    ├── OutputError         an output cannot be written: full disk, file-size limit, read-only directory
    ├── BackendUnavailable  a backend cannot run here; says what to install
    └── ExportError         an exported graph disagrees with torch, or could not be written
"""

from __future__ import annotations

__all__ = [
    "AeserveError",
    "BundleError",
    "InputError",
    "OptionError",
    "OutputError",
    "BackendUnavailable",
    "ExportError",
    "Interrupted",
]


class AeserveError(Exception):
    """Base class: a problem the user can fix, explained in one line."""


class BundleError(AeserveError):
    """A bundle is missing, incomplete, tampered with, or of an unknown kind/schema."""


class InputError(AeserveError, ValueError):
    """Input data is unusable: wrong width, NaN/inf, text in a number column, unreadable file.
    A ValueError too, as scikit-learn and numpy callers expect of bad input."""


class OptionError(InputError):
    """A model or fit option has a bad value, or does not apply to the kind; ``option`` names the
    config field so that a command line can name its own flag."""

    def __init__(self, option: str, message: str):
        super().__init__(message)
        self.option = option


class OutputError(AeserveError):
    """An output cannot be written (disk full, file-size limit, read-only or missing directory);
    nothing was written and the inputs are untouched."""


class BackendUnavailable(AeserveError):
    """A requested backend cannot run here; the message says what to install."""


class ExportError(AeserveError):
    """An exported graph disagrees with the torch model, or could not be written."""


class Interrupted(AeserveError):
    """A long run stopped cleanly by Ctrl-C (exit 130) or SIGTERM (exit 143): nothing half-written,
    and the message says what was kept and how to go on."""

    def __init__(self, message: str, exit_code: int = 130):
        super().__init__(message)
        self.exit_code = exit_code
