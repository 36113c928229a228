"""The torch reference backend (train/torch_backend.py)."""

from __future__ import annotations

import pytest


def test_the_torch_backend_keeps_freed_memory_for_reuse_on_glibc():
    """Eager torch's fresh 3 MB intermediates otherwise page-fault on every call (0.63x the plain layers)."""
    import platform

    from aeserve.train.torch_backend import keep_freed_memory

    if platform.libc_ver()[0] != "glibc":
        pytest.skip("mallopt is glibc's")
    assert keep_freed_memory() is True
