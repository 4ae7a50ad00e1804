"""Where Docker keeps a container's things on this host, as the Engine itself reports them.

Every path here comes from the Engine's own answers (``docker info``, the container's inspect
document), never from anything inside a container.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from drsvc.errors import BackendError, InvalidInput

RESTORE_MARKER = "drsvc-restore.id"  # a file unique to each restore's checkpoint directory
CONTAINERD_TEMP_PREFIX = "ctrd-checkpoint"
STALE_SECONDS = 600.0  # a leftover of another drsvc restore this old is no longer being read
# the name of each checkpoint a drsvc backup asks dockerd for (``backup_checkpoint_name``)
BACKUP_CHECKPOINT = re.compile(r"drsvc-[0-9a-f]{12}")
_CONTAINER_ID = re.compile(r"[0-9a-f]{64}")


def upper_dir(c: dict[str, Any]) -> Path:
    """The container's writable layer (overlay2 ``UpperDir``) from its inspect document."""
    driver = c.get("GraphDriver") or {}
    upper = (driver.get("Data") or {}).get("UpperDir")
    if not upper:
        raise BackendError(
            f"container {c['Id'][:12]}: graph driver {driver.get('Name')!r} has no upper dir; "
            "drsvc's Docker adapter needs overlay2 for root filesystem changes"
        )
    return Path(upper)


def checkpoint_dir(root: Path, cid: str, name: str) -> Path:
    """``<DockerRootDir>/containers/<id>/checkpoints/<name>``: where dockerd keeps a checkpoint."""
    return root / "containers" / cid / "checkpoints" / name


def backup_checkpoint_name(token: str) -> str:
    """``drsvc-<12 hex>``: the checkpoint name a backup derives from its token (recorded before it exists)."""
    name = f"drsvc-{token[:12]}"
    if not BACKUP_CHECKPOINT.fullmatch(name):
        raise InvalidInput(f"checkpoint token {token[:40]!r}: not hexadecimal")
    return name


def remove_backup_checkpoint(root: Path, name: str) -> int:
    """Delete ``<root>/containers/<id>/checkpoints/<name>`` of every container; return how many.

    What a killed backup left (its ``checkpoint-dir`` intent names it): the whole memory image of
    a desktop. ``name`` must be drsvc's own ``drsvc-<12 hex>`` (random per checkpoint, so it names
    one directory); nothing is reached through a symlink, and nothing outside a container's
    ``checkpoints`` directory is touched. Gone already is fine (0).
    """
    if not BACKUP_CHECKPOINT.fullmatch(name):
        raise InvalidInput(f"forget checkpoint-dir {name[:80]!r}: not a drsvc checkpoint name (drsvc-<12 hex>)")
    containers = root / "containers"
    try:
        ids = [cid for cid in os.listdir(containers) if _CONTAINER_ID.fullmatch(cid)]
    except FileNotFoundError:
        return 0
    except OSError as e:
        raise BackendError(f"forget checkpoint-dir {name}: listing {containers}: {e}") from e
    removed = 0
    for cid in sorted(ids):
        parent = containers / cid / "checkpoints"
        target = parent / name
        if not all(_real_dir(p) for p in (containers / cid, parent, target)):
            continue
        try:
            shutil.rmtree(target)  # file-descriptor based: a link swapped in meanwhile is not followed
        except FileNotFoundError:
            continue
        except OSError as e:
            raise BackendError(f"forget checkpoint-dir {name}: removing {target}: {e}") from e
        removed += 1
    return removed


def _real_dir(path: Path) -> bool:
    """A directory itself, not a link to one."""
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


def spool_dir(root: Path) -> Path | None:
    """Docker's own temp directory (beside its data, on its file system), when it exists."""
    tmp = root / "tmp"
    return tmp if tmp.is_dir() else None


def containerd_temp_dirs() -> list[Path]:
    """Where containerd unpacks a checkpoint it restores: its ``$TMPDIR`` (``/tmp`` by default)."""
    dirs = {Path("/tmp")}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            if Path("/proc", pid, "comm").read_text().strip() != "containerd":
                continue
            env = Path("/proc", pid, "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        for entry in env:
            if entry.startswith(b"TMPDIR=") and entry[7:].startswith(b"/"):
                dirs.add(Path(os.fsdecode(entry[7:])))
    return sorted(dirs)


def remove_restore_leftovers(marker: str, *, temp_dirs: list[Path] | None = None, now: float | None = None) -> int:
    """Delete containerd's copies of drsvc restores' checkpoints (plaintext memory); return how many.

    containerd 1.6 unpacks the checkpoint it restores into ``$TMPDIR/ctrd-checkpoint*`` and never
    deletes it (every page of the desktop's memory, left behind by each Docker restore). drsvc
    marks each restore's checkpoint with a file of its own (``RESTORE_MARKER``), so it finds its
    copy: the one holding ``marker`` goes at once; copies of other drsvc restores go once they are
    ``STALE_SECONDS`` old (a restore running beside this one still reads its own). Only root-owned
    directories (containerd's) are touched, never through a link.
    """
    now = time.time() if now is None else now
    removed = 0
    for base in temp_dirs if temp_dirs is not None else containerd_temp_dirs():
        try:
            names = [n for n in os.listdir(base) if n.startswith(CONTAINERD_TEMP_PREFIX)]
        except OSError:
            continue
        for name in names:
            found = _marker(base / name)
            if found is None:
                continue
            text, st = found
            if text == marker or now - st.st_mtime > STALE_SECONDS:
                shutil.rmtree(base / name, ignore_errors=True)
                removed += 1
    return removed


def _marker(path: Path) -> tuple[str, os.stat_result] | None:
    """(drsvc's marker text, the directory's stat) when ``path`` is a root-owned directory holding one."""
    try:
        st = os.lstat(path)
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != 0:
            return None
        fd = os.open(path / RESTORE_MARKER, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        return os.read(fd, 256).decode(errors="replace").strip(), st
    finally:
        os.close(fd)


def iter_leftovers(base: Path) -> Iterator[Path]:
    """The ``ctrd-checkpoint*`` directories under ``base`` holding a drsvc marker (for reports and tests)."""
    try:
        names = sorted(os.listdir(base))
    except OSError:
        return
    for name in names:
        if name.startswith(CONTAINERD_TEMP_PREFIX) and _marker(base / name) is not None:
            yield base / name
