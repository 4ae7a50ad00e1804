"""A local file system drsvc writes to is full or read-only: said in one line, naming the path.

drsvc writes on the host: the catalog (SQLite, its WAL, its copies), a file store, restored
objects (``restore --to-dir``), the quarterly report, the node_exporter textfile. A full disk
(ENOSPC, EDQUOT) or one remounted read-only (EROFS) is not a bug to show a traceback for, nor a
damaged catalog to restore from a copy (SQLite says "disk I/O error" for both): it is the
operator's to fix, and the next run, once space is freed, cleans up what this one left
(``drsvc cleanup``: intents, pending points). Callers wrap their writes in ``writing(path)``;
the catalog classifies its SQLite errors with ``sqlite_error``.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from drsvc.errors import DrsvcError

SPACE = (errno.ENOSPC, errno.EDQUOT)
READ_ONLY = (errno.EROFS,)
LOW_SPACE = 256 * 1024  # bytes free below which SQLite's "disk I/O error" is a full disk


class HostFsError(DrsvcError):
    """A local file system is full or read-only (exit 1): the operator frees space or remounts."""


def full(path: str | os.PathLike[str], why: str = "No space left on device") -> HostFsError:
    return HostFsError(
        f"{path}: {why}: free space on its file system (or point drsvc elsewhere), then run again; "
        "`drsvc cleanup` removes what this run left, earlier points are intact"
    )


def read_only(path: str | os.PathLike[str]) -> HostFsError:
    return HostFsError(
        f"{path}: Read-only file system: remount it read-write (or point drsvc elsewhere), then run again; "
        "earlier points are intact"
    )


def os_error(path: str | os.PathLike[str], error: OSError) -> HostFsError | None:
    """``error`` (met writing ``path``) as a ``HostFsError``; None when it is no full/read-only disk."""
    if error.errno in SPACE:
        return full(path, error.strerror or os.strerror(error.errno or errno.ENOSPC))
    if error.errno in READ_ONLY:
        return read_only(path)
    return None


@contextmanager
def writing(path: str | os.PathLike[str]) -> Iterator[None]:
    """Writes to ``path`` inside the block: a full or read-only file system raises ``HostFsError``."""
    try:
        yield
    except OSError as e:
        translated = os_error(path, e)
        if translated is None:
            raise
        raise translated from e


def state(path: str | os.PathLike[str]) -> str | None:
    """``"read-only"`` or ``"full"`` for the file system holding ``path`` (or its nearest existing
    parent), else None (also when it cannot be asked)."""
    probe = Path(path)
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        st = os.statvfs(probe)
    except OSError:
        return None
    if st.f_flag & os.ST_RDONLY:
        return "read-only"
    if st.f_bavail * st.f_frsize < LOW_SPACE:
        return "full"
    return None


def sqlite_error(path: str, error: Exception) -> HostFsError | None:
    """An SQLite error on the catalog at ``path`` as a ``HostFsError`` when its file system is full
    or read-only (SQLite reports both as several things: "database or disk is full", "attempt to
    write a readonly database", "disk I/O error", "unable to open database file")."""
    if path == ":memory:" or path.startswith("file:"):
        return None
    text = str(error).lower()
    if not any(w in text for w in ("full", "readonly", "read-only", "i/o error", "unable to open")):
        return None
    found = state(path)
    if found == "read-only":
        return read_only(path)
    if found == "full" or "full" in text:
        return full(path, str(error))
    return None


def write_all(out: BinaryIO, data: bytes | memoryview) -> None:
    """Write every byte of ``data`` to ``out``, or raise.

    A buffered file's ``write`` of a piece larger than its buffer returns a short count when the
    disk fills part-way (measured: 4096 of 37,044 bytes returned, no error, the rest dropped):
    a caller that ignores the count reports success over a truncated file. Writing the rest makes
    the file system say ENOSPC.
    """
    view = memoryview(data)
    while view:
        written = out.write(view)
        if written is None or written <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        view = view[written:]
