"""s3:// backend on moto: the shared suite, plus what is specific to S3 (URLs, classes, locks, batches)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from coldkit import aws  # noqa: F401  (the fixture, used through pytestmark)
from storage_suite import StorageSuite

from drsvc.errors import InvalidInput
from drsvc.storage import open_store
from drsvc.storage.s3 import S3Store

pytestmark = pytest.mark.usefixtures("aws")


def calls(store: S3Store, operation: str) -> list[dict[str, Any]]:
    """Record the parameters of every ``operation`` call the store's client makes."""
    seen: list[dict[str, Any]] = []
    store._client.meta.events.register(
        f"provide-client-params.s3.{operation}", lambda params, **_: seen.append(dict(params))
    )
    return seen


class TestS3Store(StorageSuite):
    @pytest.fixture
    def store(self) -> Iterator[S3Store]:
        # Object Lock on: the suite writes with retain_until, which S3 honours only on such buckets.
        s = open_store(f"s3://drsvc-test-{uuid.uuid4().hex[:8]}/pre/fix", object_lock=True)
        assert isinstance(s, S3Store)
        yield s
        s.close()


def test_url_and_prefix_isolation() -> None:
    a = open_store("s3://drsvc-shared/a")
    b = open_store("s3://drsvc-shared/b")
    assert a.url == "s3://drsvc-shared/a"
    a.put("chunks/x", b"1")
    assert list(b.list()) == []
    assert list(a.list()) == ["chunks/x"]
    raw = boto3.client("s3").list_objects_v2(Bucket="drsvc-shared")["Contents"]
    assert [o["Key"] for o in raw] == ["a/chunks/x"]


@pytest.mark.parametrize("url", ["s3://", "s3://UPPER/x", "s3://b/x?y=1", "s3://bucket/../x", "s3://a"])
def test_bad_urls(url: str) -> None:
    with pytest.raises(InvalidInput) as e:
        open_store(url)
    assert repr(url) in str(e.value)


def test_storage_class_per_put() -> None:
    s = open_store("s3://drsvc-classes")
    s.put("ia", b"x", storage_class="STANDARD_IA")
    s.put_many([("gl", b"y")], storage_class="GLACIER")
    s.put("std", b"z")
    assert isinstance(s, S3Store)
    assert (s.storage_class("ia"), s.storage_class("gl"), s.storage_class("std")) == (
        "STANDARD_IA",
        "GLACIER",
        "STANDARD",
    )


def test_object_lock_bucket_refuses_deleting_a_locked_version() -> None:
    s = S3Store("drsvc-locked", "cold", object_lock=True)
    until = datetime.now(UTC) + timedelta(days=1)
    s.put("manifests/d/p1", b"m", retain_until=until)
    assert s.retain_until("manifests/d/p1") is not None
    assert abs((s.retain_until("manifests/d/p1") - until).total_seconds()) < 1  # type: ignore[operator]
    client = boto3.client("s3")
    version = client.head_object(Bucket="drsvc-locked", Key="cold/manifests/d/p1")["VersionId"]
    with pytest.raises(client.exceptions.ClientError, match="AccessDenied"):
        client.delete_object(Bucket="drsvc-locked", Key="cold/manifests/d/p1", VersionId=version)
    # a plain delete only hides it behind a delete marker: the locked version stays
    s.delete("manifests/d/p1")
    assert not s.exists("manifests/d/p1")
    versions = client.list_object_versions(Bucket="drsvc-locked")["Versions"]
    assert [v["VersionId"] for v in versions] == [version]
    rules = client.get_bucket_lifecycle_configuration(Bucket="drsvc-locked")["Rules"]
    assert rules[0]["NoncurrentVersionExpiration"]["NoncurrentDays"] == 1


def test_lock_on_a_bucket_without_object_lock_is_invalid_input() -> None:
    s = open_store("s3://drsvc-unlocked")
    with pytest.raises(InvalidInput, match="object_lock_days"):
        s.put("k", b"x", retain_until=datetime.now(UTC) + timedelta(days=1))
    with pytest.raises(InvalidInput, match="without Object Lock"):
        S3Store("drsvc-unlocked", object_lock=True)


def test_delete_many_batches_of_1000_and_listing_pages() -> None:
    s = open_store("s3://drsvc-batches")
    assert isinstance(s, S3Store)
    keys = [f"k/{i:05d}" for i in range(2500)]
    puts = calls(s, "PutObject")
    s.put_many((k, b"") for k in keys)
    assert len(puts) == 2500
    lists = calls(s, "ListObjectsV2")
    assert sorted(s.list("k/")) == keys
    assert len(lists) == 3
    deletes = calls(s, "DeleteObjects")
    assert s.delete_many(keys) == 2500
    assert sorted(len(d["Delete"]["Objects"]) for d in deletes) == [500, 1000, 1000]
    assert list(s.list()) == []


def test_large_objects_use_multipart() -> None:
    s = S3Store("drsvc-mpu", multipart_threshold=5 * 1024 * 1024)
    parts = calls(s, "UploadPart")
    data = bytes(range(256)) * (48 * 1024)  # 12 MiB
    s.put("big", data, storage_class="STANDARD_IA")
    assert len(parts) >= 2
    assert s.get("big") == data
    assert s.storage_class("big") == "STANDARD_IA"


def test_views_are_stored_without_a_copy_and_intact() -> None:
    """A view of a larger buffer (a pack buffer) goes as a file over the buffer, single or multipart."""
    s = S3Store("drsvc-views", multipart_threshold=5 * 1024 * 1024)
    buffer = bytearray(os.urandom(13 * 1024 * 1024))
    s.put("small", memoryview(buffer)[: 3 * 1024 * 1024])  # type: ignore[arg-type]
    s.put("big", memoryview(buffer)[: 12 * 1024 * 1024 + 7])  # type: ignore[arg-type]
    buffer[:] = bytes(len(buffer))  # the caller reuses its buffer once put returns
    assert s.get("small") != bytes(3 * 1024 * 1024)
    assert len(s.get("small")) == 3 * 1024 * 1024 and len(s.get("big")) == 12 * 1024 * 1024 + 7
    assert s.get("big")[: 3 * 1024 * 1024] == s.get("small")


def test_put_many_bounds_what_is_in_flight() -> None:
    s = S3Store("drsvc-window", window=4, window_bytes=1 << 20, workers=2)
    pulled = 0
    written = calls(s, "PutObject")

    def items() -> Iterator[tuple[str, bytes]]:
        nonlocal pulled
        for i in range(40):
            pulled += 1
            # never more than the window ahead of what S3 has acknowledged
            assert pulled - len(written) <= 4 + 2
            yield f"w/{i}", b"x" * (300 * 1024)

    assert s.put_many(items()) == 40


def test_warnings_of_a_system_pyopenssl_are_not_shown(tmp_path: Any) -> None:
    """Debian's old pyOpenSSL, seen through a --system-site-packages venv, warns at import under botocore."""
    import subprocess
    import sys

    fake = tmp_path / "OpenSSL"
    fake.mkdir()
    (fake / "__init__.py").write_text("")
    (fake / "crypto.py").write_text("import warnings\nwarnings.warn('DSA is deprecated', UserWarning)\n")
    code = "import drsvc.storage.s3, OpenSSL.crypto"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])}
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "deprecated" not in r.stderr, r.stderr
