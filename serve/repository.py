"""The model repository: which bundles the server knows, loads, unloads and reloads.

Each bundle NAME is a directory; loaded, it answers as NAME, NAME-encode, NAME-decode and
NAME-sample. ``load`` opens and verifies the bundle (every file's sha256, the backend
started) beside the one being served, then swaps the new endpoints in with one dict update
per name: a request that already holds the old endpoint finishes on it, the next one gets the
new. A bundle that fails to open is not swapped in; the old version keeps serving, and the
reason is logged and shown by ``index()``. ``watch`` polls every bundle's ``manifest.json``
(``aeserve serve --poll SECONDS``) and reloads the ones whose manifest changed: retraining
or re-exporting a bundle in place updates the server without a restart or a failed request.
This is the KServe v2 / Triton model-repository extension's state: READY, UNAVAILABLE
(unloaded, or never loaded because it failed), and a reason.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from aeserve.bundle import MANIFEST

__all__ = ["Repository", "Entry"]

log = logging.getLogger("aeserve.serve")


@dataclass
class Entry:
    """One bundle of the repository."""

    name: str
    path: Path
    state: str = "UNAVAILABLE"  # READY or UNAVAILABLE
    reason: str = ""
    signature: tuple = ()       # manifest.json's (inode, size, mtime) when last looked at
    digest: str = ""            # manifest.json's sha256 of the version being served
    loads: int = 0              # how many times a version was swapped in
    watched: bool = True        # reloaded when its manifest changes (False once unloaded on purpose)


def _stat(path: Path) -> tuple:
    try:
        st = os.stat(path / MANIFEST)
    except OSError:
        return ()
    return st.st_ino, st.st_size, st.st_mtime_ns


def _digest(path: Path) -> str:
    try:
        return hashlib.sha256((path / MANIFEST).read_bytes()).hexdigest()
    except OSError:
        return ""


class Repository:
    """Bundles by name, with ``install(name, model)`` and ``remove(name)`` from the server: the
    first puts a loaded model's endpoints in service, the second takes them out."""

    def __init__(self, paths: dict[str, Path], loader: Callable[[Path], object],
                 install: Callable[[str, object], None], remove: Callable[[str], None]):
        self.entries = {name: Entry(name, Path(path)) for name, path in paths.items()}
        self.loader, self.install, self.remove = loader, install, remove
        self._locks: dict[str, asyncio.Lock] = {}

    def adopt(self, name: str, model) -> None:
        """Record ``model`` (loaded before the server started) as NAME's served version."""
        entry = self.entries[name]
        entry.state, entry.reason, entry.loads = "READY", "", entry.loads + 1
        entry.signature, entry.digest = _stat(entry.path), _digest(entry.path)
        self.install(name, model)

    def index(self, ready_only: bool = False) -> list[dict]:
        """The repository index: name, version, state and reason of each bundle."""
        return [{"name": e.name, "version": "1", "state": e.state, "reason": e.reason}
                for e in sorted(self.entries.values(), key=lambda e: e.name)
                if not ready_only or e.state == "READY"]

    async def load(self, name: str) -> Entry:
        """Open NAME's bundle now (in a thread) and serve it; on failure keep what is served
        and raise the error (its message is also the entry's reason)."""
        entry = self.entries[name]
        async with self._locks.setdefault(name, asyncio.Lock()):
            signature, digest = _stat(entry.path), _digest(entry.path)
            try:
                model = await asyncio.get_running_loop().run_in_executor(None, self.loader, entry.path)
            except Exception as exc:
                entry.signature = signature  # not retried until the manifest changes again
                kept = "; the previous version keeps serving" if entry.state == "READY" else ""
                entry.reason = f"load failed: {exc}{kept}"
                log.warning("model %s: %s", name, entry.reason)
                raise
            self.install(name, model)
            entry.state, entry.reason, entry.loads, entry.watched = "READY", "", entry.loads + 1, True
            entry.signature, entry.digest = signature, digest
            log.info("model %s: loaded version %d (manifest sha256 %s)", name, entry.loads, digest[:12])
            return entry

    def unload(self, name: str) -> None:
        """Take NAME out of service (its requests get 404 until it is loaded again)."""
        entry = self.entries[name]
        self.remove(name)
        entry.state, entry.reason, entry.watched = "UNAVAILABLE", "unloaded", False

    async def watch(self, every: float) -> None:
        """Reload every served bundle whose manifest.json changed, checking every ``every`` s."""
        while True:
            await asyncio.sleep(every)
            for entry in list(self.entries.values()):
                if not entry.watched:
                    continue  # unloaded on purpose: a change does not bring it back
                signature = _stat(entry.path)
                if not signature or signature == entry.signature:
                    continue  # no manifest (a retrain is swapping directories), or unchanged
                if _digest(entry.path) == entry.digest:
                    entry.signature = signature  # touched, same content
                    continue
                try:
                    await self.load(entry.name)
                except Exception:  # logged and recorded by load; the old version serves on
                    pass
