"""A drsvc deployment for unit tests of the cold tier: file:// hot store, moto S3 cold store.

Points are written the way ``BackupJob`` writes them (streams into the hot chunk store, the base
image once under ``_images``, the manifest last, then the catalog rows), without containers.
Use inside ``mock_aws`` (the ``aws`` fixture of the tests).
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from moto import mock_aws

from drsvc import clock
from drsvc.backup import IMAGES, MANIFEST_FORMAT
from drsvc.catalog import Catalog
from drsvc.config import parse_config
from drsvc.crypto import generate_key_file
from drsvc.services import Services


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """moto's in-process S3, with fake credentials and no lab endpoint leaking in."""
    monkeypatch.delenv("S3_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    with mock_aws():
        yield


# what backup records of a checkpoint's root filesystem files read inside the freeze (heldfiles)
HELD_FILES = {"files": [{"path": "tmp/held", "size": 12}], "notes": []}


@dataclass
class ColdKit:
    root: Path
    bucket: str = field(default_factory=lambda: f"drsvc-cold-{uuid.uuid4().hex[:8]}")
    pack_mib: int = 16
    zstd_level: int = 3
    key_of: ColdKit | None = None  # share another kit's key (and so its chunk boundaries)
    services: Services = field(init=False)

    def __post_init__(self) -> None:
        (self.root / "policies").mkdir(parents=True, exist_ok=True)
        if self.key_of is None:
            generate_key_file(self.root / "drsvc.key")
        else:
            shutil.copy2(self.key_of.root / "drsvc.key", self.root / "drsvc.key")
        self.services = self._services()

    @property
    def cold_url(self) -> str:
        return f"s3://{self.bucket}/fleet"

    @property
    def config_text(self) -> str:
        return (
            f'policies_dir = "policies"\n[catalog]\npath = "catalog.db"\n[keys]\nfile = "drsvc.key"\n'
            f'[hot]\nstore = "file://{self.root}/hot"\n[cold]\nstore = "{self.cold_url}"\npack_mib = {self.pack_mib}\n'
            f"zstd_level = {self.zstd_level}\n"
            f"[scheduler]\ngc_grace_seconds = 0\n"
        )

    def _services(self) -> Services:
        import tomllib

        path = self.root / "drsvc.toml"
        path.write_text(self.config_text)
        config = parse_config(tomllib.loads(self.config_text), path)
        return Services(config, Catalog.open(config.catalog.path))

    def fresh_services(self) -> Services:
        """New Services (new store handles), as a new process would have."""
        self.services.catalog.close()
        self.services = self._services()
        return self.services

    @property
    def catalog(self) -> Catalog:
        return self.services.catalog

    def policy(self, name: str, desktops: list[str], **fields: Any) -> None:
        doc: dict[str, Any] = {
            "name": name,
            "selector": {"desktops": desktops},
            "schedule": "0 * * * *",
            "retention": {"hot": {"last": 100}},
            "tiering": {"after": "1h", "storage_class": "STANDARD_IA"},
        }
        doc.update(fields)
        (self.root / "policies" / f"{name}.yaml").write_text(yaml.safe_dump(doc))
        self.services.__dict__.pop("policies", None)

    def point(
        self,
        desktop: str,
        taken_at: datetime,
        volume: bytes,
        checkpoint: bytes | None = None,
        image: bytes | None = None,
        policy: str | None = None,
        objects: list[bytes] | None = None,
        tenant: str | None = None,
    ) -> str:
        """Write one complete hot point as ``BackupJob`` would; returns its id.

        With ``objects``, the volume is those objects back to back (``volume`` is ignored), written
        and listed in the manifest as backup writes a volume's RADOS objects.
        """
        hot = self.services.hot.for_tenant(tenant)  # None: the fleet key, as points before per-tenant keys
        catalog = self.catalog
        point_id = f"{clock.compact(taken_at)}-{desktop}-{uuid.uuid4().hex[:6]}"
        catalog.upsert_desktop(
            {
                "id": desktop,
                "runtime_url": "podman:///run/p.sock",
                "container": desktop,
                "volume": f"rados://desktops/{desktop}",
                "tenant": tenant or "acme",
                "labels": {"drsvc.desktop": desktop},
                "image": "localhost/desk:1",
            }
        )
        snap = f"drsvc-{policy or 'manual'}-{clock.compact(taken_at)}-1"
        catalog.execute(
            "INSERT OR IGNORE INTO pool_snapshots (pool, name, taken_at) VALUES (?, ?, ?)",
            ["rados://desktops", snap, clock.to_iso(taken_at)],
        )
        snap_row = catalog.query("SELECT id FROM pool_snapshots WHERE name = ?", [snap])[0]["id"]
        if objects is None:
            vol, listed = hot.write_stream(volume), []
        else:
            vol = hot.write_objects((len(o), [o]) for o in objects)
            listed = [{"name": f"obj{i:04d}", "size": len(o)} for i, o in enumerate(objects)]
        ckpt = hot.write_stream(checkpoint) if checkpoint is not None else None
        image_doc = None
        if image is not None:
            image_id = uuid.uuid5(uuid.NAMESPACE_OID, image.hex()[:64]).hex
            record = image_id
            if hot.write_keys.key_id is not None:  # as backup names a tenant's image record
                record = f"{image_id}-{hot.write_keys.key_id}"
            try:
                hot.get_manifest(IMAGES, record)
            except Exception:
                ref = hot.write_stream(image)
                hot.put_manifest(
                    IMAGES, record, {"image": "localhost/desk:1", "image_id": image_id, "stream": ref.to_dict()}
                )
            image_doc = {"image": "localhost/desk:1", "image_id": image_id, "manifest": f"{IMAGES}/{record}"}
        manifest = {
            "format": MANIFEST_FORMAT,
            "point_id": point_id,
            "desktop": desktop,
            "taken_at": clock.to_iso(taken_at),
            "policy": policy,
            "consistency": "paired" if ckpt else "crash",
            "reason": None if ckpt else "no checkpoint",
            "freeze_ms": 12.5 if ckpt else None,
            "runtime": {
                "url": "podman:///run/p.sock",
                "container": desktop,
                "container_id": "c" * 64,
                "image": "localhost/desk:1",
                "image_id": image_doc and image_doc["image_id"],
                "labels": {"drsvc.desktop": desktop},
                "tenant": tenant or "acme",
                "tcp_established": True,
            },
            "volume": {
                "url": f"rados://desktops/{desktop}",
                "pool_snapshot": snap,
                "objects": listed,
                "stream": vol.to_dict(),
            },
            "checkpoint": {"stream": ckpt.to_dict(), "held_files": HELD_FILES} if ckpt else None,
            "image": image_doc,
        }
        hot.put_manifest(desktop, point_id, manifest)
        with catalog.transaction():
            catalog.add_point(
                {
                    "id": point_id,
                    "desktop_id": desktop,
                    "policy": policy,
                    "taken_at": clock.to_iso(taken_at),
                    "status": "complete",
                    "consistency": manifest["consistency"],
                    "reason": manifest["reason"],
                    "pool_snapshot_id": snap_row,
                    "image": image_doc and image_doc["image_id"],
                    "bytes": vol.size + (ckpt.size if ckpt else 0),
                    "freeze_ms": manifest["freeze_ms"],
                    "completed_at": clock.to_iso(taken_at),
                }
            )
            catalog.set_tier(point_id, "hot", hot.store.url, stored_bytes=vol.stats.bytes_new_stored)
        return point_id
