"""Points written the way ``BackupJob`` writes them, for unit tests of granular restore (file:// hot store).

``GranularKit.point(desktop, objects, rootfs=...)`` stores the objects as one volume stream with
``ChunkStore.write_objects`` and lists each in the manifest with backup's fields (name, size,
digest over data + xattrs + omap, mtime, xattrs and omap in hex); the checkpoint archive (a tar
holding ``rootfs-diff.tar``) goes through the same ``ArchiveIndexer`` backup uses. The expected
bytes stay with the test (``objects``), never read back through drsvc.
"""

from __future__ import annotations

import io
import tarfile
import tomllib
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from drsvc import clock
from drsvc.backup import MANIFEST_FORMAT
from drsvc.catalog import Catalog
from drsvc.config import parse_config
from drsvc.crypto import generate_key_file
from drsvc.runtimes.tarindex import ArchiveIndexer
from drsvc.services import Services
from drsvc.volumes.base import object_digest


@dataclass
class Obj:
    """What a test wrote: the oracle."""

    data: bytes
    xattrs: dict[str, bytes]
    omap: dict[str, bytes]
    mtime: int | None = 1_765_000_000


def tar_bytes(files: dict[str, bytes], *, symlinks: dict[str, str] | None = None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o640, 1_765_000_000
            t.addfile(info, io.BytesIO(data))
        for name, target in (symlinks or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            t.addfile(info)
    return buf.getvalue()


class GranularKit:
    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "policies").mkdir(parents=True, exist_ok=True)
        generate_key_file(root / "drsvc.key")
        self.config = root / "drsvc.toml"
        text = (
            f'policies_dir = "policies"\n[catalog]\npath = "catalog.db"\n[keys]\nfile = "drsvc.key"\n'
            f'[hot]\nstore = "file://{root}/hot"\n'
        )
        self.config.write_text(text)
        self.services = Services(parse_config(tomllib.loads(text), self.config), Catalog.open(root / "catalog.db"))

    @property
    def catalog(self) -> Catalog:
        return self.services.catalog

    def point(
        self,
        desktop: str,
        objects: dict[str, Obj],
        *,
        taken_at: datetime | None = None,
        rootfs: dict[str, bytes] | None = None,
        symlinks: dict[str, str] | None = None,
        tenant: str = "acme",
        forms: dict[str, str] | None = None,
        versions: dict[str, int] | None = None,
    ) -> str:
        """A point of ``objects`` (digests in ``forms[name]``, default today's form; with ``versions``
        each object carries one, of one pool, as capture records them)."""
        forms = forms or {}
        hot = self.services.hot
        taken_at = taken_at or datetime.now(UTC)
        point_id = f"{clock.compact(taken_at)}-{desktop}-{uuid.uuid4().hex[:6]}"
        self.catalog.upsert_desktop(
            {
                "id": desktop,
                "runtime_url": "podman:///run/p.sock",
                "container": desktop,
                "volume": f"rados://desktops/{desktop}",
                "tenant": tenant,
                "labels": {"drsvc.desktop": desktop, "drsvc.tenant": tenant},
            }
        )
        names = sorted(objects)
        listed = [
            {
                "name": n,
                "size": len(objects[n].data),
                "digest": object_digest([objects[n].data], objects[n].xattrs, objects[n].omap, forms.get(n)),
                **({"version": versions[n]} if versions is not None else {}),
                "mtime": clock.to_iso(datetime.fromtimestamp(objects[n].mtime, UTC)) if objects[n].mtime else None,
                "xattrs": {k: v.hex() for k, v in sorted(objects[n].xattrs.items())},
                "omap": {k: v.hex() for k, v in sorted(objects[n].omap.items())},
            }
            for n in names
        ]
        volume = hot.write_objects((len(objects[n].data), [objects[n].data]) for n in names)
        checkpoint: dict[str, Any] | None = None
        if rootfs is not None:
            archive = tar_bytes(
                {
                    "config.dump": b"{}",
                    "checkpoint/pages-1.img": b"\x07" * 300_000,
                    "rootfs-diff.tar": tar_bytes(rootfs, symlinks=symlinks),
                }
            )
            indexer = ArchiveIndexer(io.BytesIO(archive))
            ref = hot.write_stream(indexer)
            checkpoint = {"stream": ref.to_dict(), "held_files": None, "rootfs": indexer.finish().document()}
        manifest = {
            "format": MANIFEST_FORMAT,
            "point_id": point_id,
            "desktop": desktop,
            "taken_at": clock.to_iso(taken_at),
            "policy": None,
            "consistency": "paired" if checkpoint else "crash",
            "runtime": {"container": desktop, "tenant": tenant},
            "volume": {
                "url": f"rados://desktops/{desktop}",
                "pool_snapshot": "none",
                "objects": listed,
                "stream": volume.to_dict(),
                **({"stamps": {"kind": "rados-user-version", "scope": "rados:fsid:1"}} if versions is not None else {}),
            },
            "checkpoint": checkpoint,
            "image": None,
        }
        hot.put_manifest(desktop, point_id, manifest)
        with self.catalog.transaction():
            self.catalog.add_point(
                {
                    "id": point_id,
                    "desktop_id": desktop,
                    "taken_at": clock.to_iso(taken_at),
                    "status": "complete",
                    "consistency": manifest["consistency"],
                    "bytes": volume.size,
                    "completed_at": clock.to_iso(taken_at),
                }
            )
            self.catalog.set_tier(point_id, "hot", hot.store.url, stored_bytes=volume.size)
        return point_id
