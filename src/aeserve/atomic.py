"""Atomic file output: write to a temporary sibling, then rename over the target.

An interrupted or failed run therefore never leaves a half-written result behind: on any
exception (a full disk, Ctrl-C, SIGTERM turned into an exception by the CLI) the temporary
file is removed. A kill -9 cannot clean up; its temporary file carries the dead process's id
(``.NAME.<pid>.XXXX.tmp``), and the next run writing ``NAME`` removes it. Two runs writing one
target each rename a whole file onto it: the last one wins, never an interleaved file.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import tempfile
from pathlib import Path
from typing import Iterator

from aeserve.errors import OutputError

__all__ = ["atomic_path", "write_bytes_atomic", "write_text_atomic", "default_mode", "output_errors"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _umask()

#: errno values that mean "this output cannot be written here", with what to tell the user
_WRITE_ERRORS = {
    errno.ENOSPC: "the disk is full",
    errno.EFBIG: "the file grew past the file-size limit",
    errno.EDQUOT: "the disk quota is exceeded",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.ENOENT: "the directory does not exist",
    errno.ENOTDIR: "a parent of it is not a directory",
}


def default_mode(directory: bool = False) -> int:
    """The mode a plain ``open``/``mkdir`` would give (mkstemp/mkdtemp give 0600/0700)."""
    return (0o777 if directory else 0o666) & ~_UMASK


def _errno_of(exc: OSError) -> int | None:
    """The errno of ``exc``; pyarrow's OSErrors carry it only in their text ("[Errno 27] ...")."""
    if exc.errno is not None:
        return exc.errno
    found = re.search(r"\[Errno (\d+)\]", str(exc))
    return int(found.group(1)) if found else None


@contextlib.contextmanager
def output_errors(target: str | os.PathLike) -> Iterator[None]:
    """Turn an OSError raised while writing ``target`` into one OutputError line."""
    try:
        yield
    except OSError as exc:
        code = _errno_of(exc)
        why = _WRITE_ERRORS.get(code, exc.strerror or str(exc).splitlines()[0])
        raise OutputError(f"{target}: cannot write ({why}); nothing was written and the inputs are untouched") \
            from None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def remove_stale_temporaries(target: Path) -> list[Path]:
    """Remove ``.NAME.<pid>.*.tmp`` files beside ``target`` whose process is gone (a kill -9
    leaves them); returns what was removed. A live run's temporary file is left alone."""
    removed = []
    prefix = f".{target.name}."
    with contextlib.suppress(OSError):
        for entry in os.scandir(target.parent):
            name = entry.name
            if not (name.startswith(prefix) and name.endswith(".tmp")):
                continue
            pid = name[len(prefix):].split(".", 1)[0]
            if pid.isascii() and pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)
                    removed.append(Path(entry.path))
    return removed


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike, *, clean_stale: bool = False) -> Iterator[Path]:
    """Yield a temporary path next to ``target``; rename it onto ``target`` on success.

    On any exception the temporary file is removed and ``target`` is left untouched. A
    directory that cannot be written is an OutputError before anything is done.
    ``clean_stale`` first removes temporaries of ``target`` that a killed run left (it lists
    the directory, so it is asked for by the verbs' outputs, not by every small file).
    """
    target = Path(target)
    with output_errors(target):
        target.parent.mkdir(parents=True, exist_ok=True)
        if clean_stale:
            remove_stale_temporaries(target)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.{os.getpid()}.", suffix=".tmp", dir=target.parent)
        os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with output_errors(target):
            os.chmod(tmp, default_mode())
            os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def write_bytes_atomic(target: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``target`` atomically."""
    with atomic_path(target) as tmp, output_errors(target):
        tmp.write_bytes(data)


def write_text_atomic(target: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``target`` atomically."""
    write_bytes_atomic(target, text.encode("utf-8"))
