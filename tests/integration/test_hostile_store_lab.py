"""Hostile store content on the lab's RADOS pool and radosgw bucket (the cases: tests/hostile_store.py).

Each crafted object (declared-size bombs, objects past their kind's cap, truncations, swaps) is
refused with an ``IntegrityError`` (exit 4) by a reader in a fresh process whose peak RSS grows by
less than ``GROWTH_MAX_MIB``: on RADOS the bound is one read block (4 MiB) and a stat, on S3 the
GET's Content-Length checked before the body is read.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from hostile_store import HostileStoreSuite, zero_file

from drsvc.storage import ObjectStore, open_store
from drsvc.storage.rados import RadosStore
from drsvc.storage.s3 import S3Store

POOL = "drsvc-hot"


class TestHostileRados(HostileStoreSuite):
    @pytest.fixture
    def url(self, lab: Any) -> Iterator[str]:
        if POOL not in lab.ceph("osd", "pool", "ls").split():
            lab.ceph("osd", "pool", "create", POOL)
        url = f"rados://{POOL}/chunks-hostile-{uuid.uuid4().hex[:10]}"
        yield url
        store = open_store(url)
        store.delete_many(list(store.list()))
        store.close()

    def big_object(self, store: ObjectStore, key: str, size: int) -> None:
        assert isinstance(store, RadosStore)
        store._ioctx.trunc(store._oid(key), size)  # sparse: what a pool writer can do in one call


class TestHostileRadosgw(HostileStoreSuite):
    @pytest.fixture
    def url(self, lab: Any) -> Iterator[str]:
        bucket = f"chunks-hostile-{uuid.uuid4().hex[:10]}"
        S3Store(bucket).close()  # creates the bucket
        yield f"s3://{bucket}/h"
        subprocess.run(
            ["radosgw-admin", "-c", lab.ceph_conf, "bucket", "rm", "--bucket", bucket, "--purge-objects"],
            capture_output=True,
            timeout=120,
        )

    def big_object(self, store: ObjectStore, key: str, size: int) -> None:
        assert isinstance(store, S3Store)
        client = boto3.client("s3", endpoint_url=store._client.meta.endpoint_url)
        client.upload_fileobj(zero_file(size), store.bucket, store._oid(key))
