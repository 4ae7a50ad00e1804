"""A drsvc deployment for unit tests of the cold tier: file:// hot store, moto S3 cold store.

Points are taken by the real ``BackupJob`` (the manifest, the chunk streams, the base image record
and the catalog rows are exactly what ``drsvc backup`` writes), on the FAKE runtime and volumes
of ``fakes/desktops.py`` holding the bytes the test gives, with drsvc's clock set to the point's
time. So when the manifest format or the catalog rows move, these tests move with them.
Use inside ``mock_aws`` (the ``aws`` fixture of the tests).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import yaml
from fakes.desktops import FakeWorld, register, unregister
from moto import mock_aws

import drsvc.backup
from drsvc import clock
from drsvc.backup import BackupJob
from drsvc.catalog import Catalog
from drsvc.chunks.layout import KEYS_PREFIX
from drsvc.config import parse_config
from drsvc.crypto import generate_key_file
from drsvc.errors import NotFound
from drsvc.inventory import select
from drsvc.lease import Lease
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


@dataclass
class ColdKit:
    root: Path
    bucket: str = field(default_factory=lambda: f"drsvc-cold-{uuid.uuid4().hex[:8]}")
    pack_mib: int = 16
    zstd_level: int = 3
    chunk_kib: int | None = None  # [hot] chunk_kib (None: not set, the default)
    key_of: ColdKit | None = None  # share another kit's keys (and so its chunk boundaries): see _share_keys
    services: Services = field(init=False)
    world: FakeWorld = field(init=False)

    def __post_init__(self) -> None:
        (self.root / "policies").mkdir(parents=True, exist_ok=True)
        (self.root / "freeze").mkdir(exist_ok=True)
        self.name = f"kit{uuid.uuid4().hex[:8]}"  # this kit's fake runtime and pool
        self.world = register(self.root / "world", runtime=self.name, pool=self.name)
        if self.key_of is None:
            generate_key_file(self.root / "drsvc.key")
        else:
            shutil.copy2(self.key_of.root / "drsvc.key", self.root / "drsvc.key")
        self.services = self._services()
        if self.key_of is not None:
            self._share_keys(self.key_of)

    def _share_keys(self, other: ColdKit) -> None:
        """Take ``other``'s tenant data keys as well as its key file.

        Points are sealed, and cut into chunks, with their tenant's data key (the gear table is
        keyed by it), made at random on a tenant's first backup: two kits sharing only the key
        file would cut the same data into different chunks. So the default tenant's key is made
        now in ``other`` if it has none, and every record and pointer is copied verbatim (they
        are wrapped with the key file's key, which both kits hold).
        """
        src, dst = other.services.hot, self.services.hot
        src.keyring.current("acme")
        for key in sorted(src.store.list(KEYS_PREFIX)):
            dst.store.put(key, src.store.get(key))

    @property
    def cold_url(self) -> str:
        return f"s3://{self.bucket}/fleet"

    @property
    def config_text(self) -> str:
        return (
            f'policies_dir = "policies"\n[catalog]\npath = "catalog.db"\n[keys]\nfile = "drsvc.key"\n'
            f'[hot]\nstore = "file://{self.root}/hot"\n'
            + (f"chunk_kib = {self.chunk_kib}\n" if self.chunk_kib else "")
            + f'[cold]\nstore = "{self.cold_url}"\npack_mib = {self.pack_mib}\n'
            f"zstd_level = {self.zstd_level}\n"
            f'[runtime]\nurl = "fake://{self.name}"\n'
            f"[scheduler]\ngc_grace_seconds = 0\nretries = 0\n"
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

    def close(self) -> None:
        self.services.catalog.close()
        unregister(self.world.root)

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
        """Take one complete hot point with ``BackupJob`` as if at ``taken_at``; return its id.

        The desktop's volume holds ``volume`` as one object (or ``objects``, named obj0000…),
        its checkpoint archive is ``checkpoint`` (none: a crash-consistent point, the checkpoint
        having failed) and its base image ``image``; ``tenant`` is its tenant label (default acme,
        whose points are sealed with the fleet key unless the config gives acme a key of its own).
        """
        contents = {"volume.bin": volume} if objects is None else {f"obj{i:04d}": o for i, o in enumerate(objects)}
        image_name = f"localhost/desk:{hashlib.sha256(image).hexdigest()[:8]}" if image is not None else ""
        try:
            record = self.world.container(desktop)
        except NotFound:
            record = self.world.add_desktop(desktop, None, tenant=tenant or "acme", labels={"drsvc.desktop": desktop})
        record["image"] = image_name
        record["image_id"] = self.world.ensure_image(image_name, image) if image is not None else ""
        self.world.save_container(record)
        self.world.write_volume(self.world.pool, desktop, contents)
        if checkpoint is not None:
            self.world.set_archive(desktop, checkpoint)
            self.world.set_knobs(desktop, checkpoint_error=None)
        else:
            self.world.set_knobs(desktop, checkpoint_error="no checkpoint wanted by the test")
        services = self.services
        chosen = services.policies.get(policy) if policy else None
        offset = taken_at - clock.now()
        real_now = clock.now
        env = {"DRSVC_FREEZE_ROOT": str(self.root / "freeze")}
        with (
            mock.patch.object(clock, "now", lambda: real_now() + offset),
            mock.patch.object(drsvc.backup, "hook_installed", lambda *_a: True),
            mock.patch.dict(os.environ, env),
            Lease(services.catalog) as lease,
        ):
            desktops = [d for d in select(services, names=[desktop])]
            report = BackupJob(services, lease).run(desktops, chosen)
        (outcome,) = report.outcomes
        assert outcome.status == "complete", f"coldkit: the backup of {desktop} failed: {outcome.error}"
        return outcome.point_id
