"""The hostile-archive corpus: tricks a checkpoint archive can carry, each aimed at a host directory.

Every attack starts from a real (or, for CRI-O, the fake's) checkpoint archive and adds one
trick a tenant could get into it by racing the runtime's own archiving, or anyone holding the key
could plant: traversal in member names and in ``deleted.files``, a symlink in the root
filesystem diff with a file or a deletion beneath it, hard links out of the diff, links and
devices among the CRIU images. ``ATTACKS[name](victim_dir)`` gives ``craft``'s arguments.
Used by tests/integration/test_hostile_archives.py (Podman, Docker) and
tests/unit/test_hostile_crio.py (CRI-O through the kubelet protocol fake).
"""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

UP = "../" * 16  # past any container root on this host


def _tar(members: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def _members(data: bytes) -> list[tuple[tarfile.TarInfo, bytes | None]]:
    out = []
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tf:
        for m in tf:
            out.append((m, tf.extractfile(m).read() if m.isfile() else None))  # type: ignore[union-attr]
    return out


def member(name: str, kind: bytes = tarfile.REGTYPE, data: bytes | None = None, link: str = "") -> tuple:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = kind, link, 0o644
    return info, (data if data is not None else (b"planted\n" if kind == tarfile.REGTYPE else None))


def craft(
    archive: bytes,
    *,
    diff: list[tuple] = (),  # type: ignore[assignment]
    deleted: list[str] | None = None,
    outer: list[tuple] = (),  # type: ignore[assignment]
) -> bytes:
    """``archive`` with members added to its rootfs diff, its deleted.files replaced, members added to it."""
    out = []
    seen_diff = seen_deleted = False
    for info, data in _members(archive):
        if info.name == "rootfs-diff.tar":
            seen_diff = True
            data = _tar(_members(data or b"") + list(diff)) if diff else data
        elif info.name == "deleted.files" and deleted is not None:
            seen_deleted = True
            data = json.dumps(deleted).encode()
        out.append((info, data))
    if diff and not seen_diff:
        out.append(member("rootfs-diff.tar", data=_tar(list(diff))))
    if deleted is not None and not seen_deleted:
        out.append(member("deleted.files", data=json.dumps(deleted).encode()))
    return _tar(out + list(outer))


ATTACKS: dict[str, Callable[[Path], dict[str, Any]]] = {
    "deleted-files-traversal": lambda v: {"deleted": [f"/{UP}{v}/victim"]},
    "deleted-files-beneath-a-diff-symlink": lambda v: {
        "diff": [member("evil", tarfile.SYMTYPE, link=str(v))],
        "deleted": ["/evil/victim"],
    },
    "diff-file-beneath-a-diff-symlink": lambda v: {
        "diff": [member("evil", tarfile.SYMTYPE, link=str(v)), member("evil/planted")],
    },
    "diff-member-traversal": lambda v: {"diff": [member(f"{UP}{v}/planted")]},
    "diff-absolute-member": lambda v: {"diff": [member(f"{v}/planted")]},
    "diff-hardlink-out": lambda v: {"diff": [member("hl", tarfile.LNKTYPE, link=f"{UP}{v}/victim")]},
    "diff-hardlink-absolute": lambda v: {"diff": [member("hl", tarfile.LNKTYPE, link=f"{v}/victim")]},
    "outer-traversal": lambda v: {"outer": [member(f"{UP}{v}/planted")]},
    "checkpoint-image-symlink": lambda v: {
        "outer": [member("checkpoint/pages-9.img", tarfile.SYMTYPE, link=f"{v}/victim")]
    },
    "checkpoint-image-device": lambda v: {"outer": [member("checkpoint/dev.img", tarfile.CHRTYPE)]},
}
