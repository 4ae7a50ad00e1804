"""A drsvc deployment with other sites for unit tests: ColdKit's primary plus sites on moto S3."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from coldkit import ColdKit

from drsvc import clock
from drsvc.errors import EXIT_OK
from drsvc.tiering import TierJob

MiB = 1024 * 1024


@dataclass
class SiteKit(ColdKit):
    """A ColdKit with sites: ``dr`` (same S3 service and identity: server-side copies) and
    ``far`` (another identity: streamed)."""

    dr_bucket: str = field(default_factory=lambda: f"drsvc-dr-{uuid.uuid4().hex[:8]}")
    far_bucket: str = field(default_factory=lambda: f"drsvc-far-{uuid.uuid4().hex[:8]}")
    lock: bool = False
    # "now" of the test: when its kit is made, not when this module was imported (minutes
    # earlier in a long run; moto enforces Object Lock on real time)
    now: datetime = field(default_factory=clock.now)

    @property
    def config_text(self) -> str:
        lock = "object_lock = true\nobject_lock_days = 2\n" if self.lock else ""
        return (
            super().config_text
            + f'[sites.dr]\nstore = "s3://{self.dr_bucket}/site"\nstorage_class = "STANDARD_IA"\n{lock}'
            + f'[sites.far]\nstore = "s3://{self.far_bucket}"\ncredentials = "env:FAR"\n'
        )

    def site_keys(self, bucket: str, prefix: str = "") -> dict[str, bytes]:
        client = boto3.client("s3")
        keys = [o["Key"] for o in client.list_objects_v2(Bucket=bucket).get("Contents", [])]
        return {k[len(prefix) :]: client.get_object(Bucket=bucket, Key=k)["Body"].read() for k in keys}


def site_kit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **options: Any) -> Iterator[SiteKit]:
    """The body of a test module's ``kit`` fixture (``far`` gets credentials of its own)."""
    monkeypatch.setenv("FAR_ACCESS_KEY_ID", "far-account")
    monkeypatch.setenv("FAR_SECRET_ACCESS_KEY", "far-secret")
    kit = SiteKit(tmp_path, **options)
    yield kit
    kit.catalog.close()


def cold_points(kit: SiteKit, sites: dict[str, Any], n: int = 2, **policy: Any) -> list[str]:
    kit.policy("std", ["alice"], sites=sites, **policy)
    base = os.urandom(2 * MiB)
    ids = [
        kit.point(
            "alice",
            kit.now - timedelta(hours=10 - i),
            base + os.urandom(300_000),
            checkpoint=os.urandom(50_000),
            tenant="acme",  # sealed with the tenant's data key, which the site needs too
        )
        for i in range(n)
    ]
    assert TierJob(kit.services, None).run(now=kit.now).exit_code == EXIT_OK
    return ids
