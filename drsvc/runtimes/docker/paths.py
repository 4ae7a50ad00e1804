"""Where Docker keeps a container's things on this host, as the Engine itself reports them.

Every path here comes from the Engine's own answers (``docker info``, the container's inspect
document), never from anything inside a container.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from drsvc.errors import BackendError

RESTORE_MARKER = "drsvc-restore.id"  # a file unique to each restore's checkpoint directory


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


def spool_dir(root: Path) -> Path | None:
    """Docker's own temp directory (beside its data, on its file system), when it exists."""
    tmp = root / "tmp"
    return tmp if tmp.is_dir() else None
