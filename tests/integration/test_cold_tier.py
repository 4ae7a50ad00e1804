"""The cold tier on the lab's radosgw: real points from `drsvc backup`, tiered, locked, verified, rebuilt."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from storage_suite import StorageSuite

from drsvc.backup import IMAGES, image_record_id
from drsvc.catalog import Catalog
from drsvc.chunks import ChunkStore, chunk_key, pack_key, referenced_chunks
from drsvc.errors import IntegrityError
from drsvc.prune import manifest_streams
from drsvc.storage.s3 import S3Store
from drsvc.tiering import ColdPruneJob, TierJob

POINT_FIELDS = ("id", "desktop_id", "policy", "taken_at", "status", "consistency", "reason", "image", "bytes", "tiers")


def _purge_bucket(lab: Any, name: str) -> None:
    # radosgw-admin works below S3, so it can remove what S3 Object Lock (rightly) refuses to
    subprocess.run(
        ["radosgw-admin", "-c", lab.ceph_conf, "bucket", "rm", "--bucket", name, "--purge-objects", "--bypass-gc"],
        capture_output=True,
        timeout=120,
    )


@pytest.fixture
def bucket(lab: Any) -> Iterator[str]:
    """A unique bucket name; the bucket is purged at the end even if Object Lock still holds it."""
    name = f"drsvc-it-{uuid.uuid4().hex[:10]}"
    yield name
    _purge_bucket(lab, name)


@pytest.fixture(scope="module")
def suite_bucket(lab: Any) -> Iterator[str]:
    name = f"drsvc-suite-{uuid.uuid4().hex[:10]}"
    S3Store(name, object_lock=True).close()  # the suite writes with retain_until
    yield name
    _purge_bucket(lab, name)


class TestS3StoreOnRadosgw(StorageSuite):
    @pytest.fixture
    def store(self, suite_bucket: str) -> Iterator[S3Store]:
        s = S3Store(suite_bucket, f"t{uuid.uuid4().hex[:8]}", object_lock=True)
        yield s
        s.close()


def s3() -> Any:
    return boto3.client("s3", endpoint_url=os.environ["S3_ENDPOINT_URL"])


def test_radosgw_refuses_a_body_changed_after_its_checksum_and_the_store_says_so(bucket: str) -> None:
    """The body checksum is one the server verifies: a byte flipped after drsvc hashed it is refused."""
    store = S3Store(bucket, "t")
    data = bytearray(os.urandom(3 * 1024 * 1024))
    flipped = bytes(data[:-1]) + bytes([data[-1] ^ 1])

    def change_on_the_way(request: Any, **_: Any) -> None:
        request.body = flipped  # after signing: what a bad link or a buggy proxy would do

    store._client.meta.events.register("before-send.s3.PutObject", change_on_the_way)
    with pytest.raises(IntegrityError) as e:
        store.put("packs/p1", memoryview(data))  # type: ignore[arg-type]
    assert "packs/p1" in str(e.value) and "\n" not in str(e.value)
    assert not store.exists("packs/p1")
    store._client.meta.events.unregister("before-send.s3.PutObject", change_on_the_way)
    store.put("packs/p1", memoryview(data))  # type: ignore[arg-type]
    assert store.get("packs/p1") == bytes(data)
    store.close()


def test_locked_writes_one_part_and_multipart_on_radosgw(bucket: str) -> None:
    store = S3Store(bucket, "t", object_lock=True, multipart_threshold=8 * 1024 * 1024)
    until = datetime.now(UTC).replace(microsecond=0) + timedelta(days=1)
    small, big = os.urandom(1000), bytearray(os.urandom(9 * 1024 * 1024 + 7))
    store.put("indexes/a", small, retain_until=until)
    store.put("packs/a", memoryview(big), retain_until=until)  # type: ignore[arg-type]
    for key, data in (("indexes/a", small), ("packs/a", bytes(big))):
        assert store.get(key) == data
        assert store.retain_until(key) == until
    store.close()


def cold_env(drsvc_env: Any, bucket: str, pack_mib: int = 16, recompress: bool = True) -> None:
    drsvc_env.write(
        f'[cold]\nstore = "s3://{bucket}/fleet"\nendpoint_url = "{os.environ["S3_ENDPOINT_URL"]}"\n'
        f"pack_mib = {pack_mib}\nrecompress = {'true' if recompress else 'false'}\n"
    )


def backup(drsvc_env: Any, *desktops: str) -> list[dict[str, Any]]:
    result = drsvc_env.cli("--json", "backup", *desktops)
    assert result.code == 0, result.output
    return result.json()["results"]


def chunk_ids(manifest: dict[str, Any]) -> set[str]:
    return {c for part in ("volume", "checkpoint") if manifest.get(part) for c, _ in manifest[part]["stream"]["chunks"]}


def needed_chunks(store: ChunkStore, manifest: dict[str, Any]) -> set[str]:
    """Every chunk a point needs: its own streams' and its base image record's (shared by desktops)."""
    refs = list(manifest_streams(manifest))
    image_id = image_record_id(manifest)
    if image_id is not None:
        refs += manifest_streams(store.get_manifest(IMAGES, image_id))
    return referenced_chunks(refs)


@pytest.mark.parametrize("recompress", [True, False], ids=["frames", "verbatim"])
def test_storage_classes_then_verify_read_data_finds_flipped_bytes(
    drsvc_env: Any, make_fleet: Any, bucket: str, recompress: bool
) -> None:
    d1, d2 = make_fleet(2)
    cold_env(drsvc_env, bucket, recompress=recompress)  # false: every hot chunk packed as it is
    tiering = {"after": "1s"}
    drsvc_env.policy("ia", [d1], tiering={**tiering, "storage_class": "STANDARD_IA"})
    drsvc_env.policy("archive", [d2], tiering={**tiering, "storage_class": "GLACIER"})
    outcomes = backup(drsvc_env, d1, d2)
    drsvc_env.wait_due_for_tier(*(o["point_id"] for o in outcomes))
    result = drsvc_env.cli("--json", "tier")
    assert result.code == 0, result.output
    moves = {m["desktop"]: m for m in result.json()["moves"]}
    assert {m["status"] for m in moves.values()} == {"done"}

    services = drsvc_env.services()
    hot, cold = services.hot, services.cold
    p1, p2 = (o["point_id"] for o in outcomes)
    m1, m2 = hot.get_manifest(d1, p1), hot.get_manifest(d2, p2)
    assert cold.get_manifest(d1, p1) == m1
    client = s3()
    for point_manifest, own, cls in (
        (m1, chunk_ids(m1) - chunk_ids(m2), "STANDARD_IA"),
        (m2, chunk_ids(m2) - chunk_ids(m1), "GLACIER"),
    ):
        assert own, "each desktop has data of its own"
        for cid in sorted(own)[:3]:  # the packs holding them (one storage class per pack)
            pack = cold.pack_of(cid)
            assert pack is not None
            head = client.head_object(Bucket=bucket, Key=f"fleet/{pack_key(pack)}")
            assert head["StorageClass"] == cls
        # the manifest stays STANDARD (S3 omits the header), readable without a restore request
        key = f"fleet/manifests/{point_manifest['desktop']}/{point_manifest['point_id']}"
        assert client.head_object(Bucket=bucket, Key=key).get("StorageClass", "STANDARD") == "STANDARD"
    assert drsvc_env.cli("--json", "verify", "--all", "--read-data").code == 0

    # flip one byte of a cold chunk only p1 uses, and of a hot chunk only p2 uses
    cold_victim = sorted(needed_chunks(cold, m1) - needed_chunks(cold, m2))[0]
    pack = cold.pack_of(cold_victim)
    assert pack is not None
    entries = cold.refresh_packs()[pack].entries
    [entry] = [e for e in entries if e.cid == cold_victim]
    offset, length = entry.offset, entry.length
    # a compressible chunk shares its frame with its neighbours (maybe of the other point, or of
    # the base image both points use); verbatim, it is alone
    spoilt = {e.cid for e in entries if e.offset == offset}
    assert spoilt == {cold_victim} or recompress
    assert any(e.in_frame for i in cold.refresh_packs().values() for e in i.entries) == recompress
    cold_hit = {p for p, m in ((p1, m1), (p2, m2)) if needed_chunks(cold, m) & spoilt}
    assert p1 in cold_hit
    blob = bytearray(cold.store.get(pack_key(pack)))
    blob[offset + length // 2] ^= 0x01
    cold.store.put(pack_key(pack), bytes(blob), storage_class="STANDARD_IA")
    hot_victim = sorted(needed_chunks(hot, m2) - needed_chunks(hot, m1))[0]
    blob = bytearray(hot.store.get(chunk_key(hot_victim)))
    blob[len(blob) // 3] ^= 0x80
    hot.store.put(chunk_key(hot_victim), bytes(blob))
    services.catalog.close()

    assert drsvc_env.cli("verify", "--all").code == 0  # existence only: a flipped bit is invisible
    result = drsvc_env.cli("--json", "verify", "--all", "--read-data")
    assert result.code == 4, result.stderr
    doc = result.json()
    assert sorted(doc["affected_points"]) == sorted([p1, p2])
    assert {(p["point_id"], p["tier"], p["kind"]) for p in doc["problems"]} == {
        *((p, "cold", "chunks-corrupt") for p in cold_hit),
        (p2, "hot", "chunks-corrupt"),
    }


def test_object_lock_refuses_deletes_and_cold_prune_skips_locked_points(
    drsvc_env: Any, make_fleet: Any, bucket: str
) -> None:
    [desk] = make_fleet(1)
    S3Store(bucket, "fleet", object_lock=True).close()  # the operator's lock-enabled bucket
    cold_env(drsvc_env, bucket)
    # a "compromised" config: cold retention keeps only the newest point
    drsvc_env.policy(
        "locked",
        [desk],
        retention={"hot": {"last": 5}, "cold": {"last": 1}},
        tiering={"after": "1s", "storage_class": "STANDARD_IA", "object_lock_days": 1},
    )
    backup(drsvc_env, desk)  # the older point: cold retention (last 1) never wants it
    [second] = backup(drsvc_env, desk)
    drsvc_env.wait_due_for_tier(second["point_id"])
    result = drsvc_env.cli("--json", "tier")
    assert result.code == 0, result.output
    assert [m["point_id"] for m in result.json()["moves"]] == [second["point_id"]]  # cold keeps 1: first never goes
    [move] = result.json()["moves"]
    assert move["retain_until"]

    client = s3()
    key = f"fleet/manifests/{desk}/{second['point_id']}"
    head = client.head_object(Bucket=bucket, Key=key)
    assert head["ObjectLockMode"] == "COMPLIANCE" and head["ObjectLockRetainUntilDate"]
    with pytest.raises(client.exceptions.ClientError, match="AccessDenied"):
        client.delete_object(Bucket=bucket, Key=key, VersionId=head["VersionId"])

    [third] = backup(drsvc_env, desk)
    drsvc_env.wait_due_for_tier(third["point_id"])
    assert drsvc_env.cli("tier").code == 0
    services = drsvc_env.services()
    report = ColdPruneJob(services, None).run()
    assert report.locked == [second["point_id"]]  # due by retention, but locked: skipped, no error
    assert services.cold.get_manifest(desk, second["point_id"])["point_id"] == second["point_id"]
    assert "cold" in services.catalog.point(second["point_id"])["tiers"]
    assert third["point_id"] in {pid for _, pid in services.cold.list_manifests(desk)}
    services.catalog.close()


def test_killed_tier_resumes_without_duplicates_and_lost_catalog_is_rebuilt(
    drsvc_env: Any, make_fleet: Any, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    desktops = make_fleet(2, data_mib=3)
    cold_env(drsvc_env, bucket, pack_mib=1)  # small packs: the run is several
    drsvc_env.policy("std", desktops, tiering={"after": "1s", "storage_class": "STANDARD_IA"})
    drsvc_env.wait_due_for_tier(*(o["point_id"] for o in backup(drsvc_env, *desktops)))

    def recorder(services: Any) -> list[str]:
        keys: list[str] = []
        store = services.cold.store
        store._client.meta.events.register(
            "provide-client-params.s3.PutObject", lambda params, **_: keys.append(params["Key"])
        )
        return keys

    services = drsvc_env.services()
    first = recorder(services)
    real_put = S3Store._put
    count = 0

    def dying(self: S3Store, oid: str, key: str, data: bytes, args: dict[str, Any]) -> None:
        nonlocal count
        if key.startswith("packs/"):
            count += 1
            if count == 3:
                raise KeyboardInterrupt  # killed mid-way
        real_put(self, oid, key, data, args)

    monkeypatch.setattr(S3Store, "_put", dying)
    with pytest.raises(KeyboardInterrupt):
        TierJob(services, None).run()
    monkeypatch.setattr(S3Store, "_put", real_put)
    indexed = [c for index in services.cold.refresh_packs().values() for c in index.chunk_ids]
    services.catalog.close()
    assert not [k for k in first if "/manifests/" in k]
    assert indexed, "some packs were indexed before the kill"

    services = drsvc_env.services()
    second = recorder(services)
    report = TierJob(services, None).run()
    assert report.exit_code == 0 and len(report.moves) == 2
    assert not [k for k in first + second if "/chunks/" in k]
    every = [c for index in services.cold.refresh_packs().values() for c in index.chunk_ids]
    assert len(every) == len(set(every)) == len(set(services.cold.list_chunk_ids()))  # nothing indexed twice
    assert sum(m.chunks_uploaded for m in report.moves) == len(every) - len(indexed)
    before = {p["id"]: {f: p[f] for f in POINT_FIELDS} for p in services.catalog.points()}
    snaps = {
        p["id"]: services.catalog.query("SELECT name FROM pool_snapshots WHERE id = ?", [p["pool_snapshot_id"]])[0][
            "name"
        ]
        for p in services.catalog.points()
    }
    db = Path(services.catalog.path)
    services.catalog.close()

    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    result = drsvc_env.cli("--json", "catalog", "rebuild")
    assert result.code == 0, result.output
    catalog = Catalog.open(db)
    after = {p["id"]: {f: p[f] for f in POINT_FIELDS} for p in catalog.points()}
    assert after == before
    assert {
        p["id"]: catalog.query("SELECT name FROM pool_snapshots WHERE id = ?", [p["pool_snapshot_id"]])[0]["name"]
        for p in catalog.points()
    } == snaps
    catalog.close()
    assert drsvc_env.cli("catalog", "check").code == 0


def test_a_killed_tier_runs_row_is_ended_once_its_owner_lapsed_though_its_pid_lives_again(
    drsvc_env: Any, make_fleet: Any, bucket: str
) -> None:
    """``drsvc tier`` SIGKILLed after a batch's packs leaves its job row running and its
    multipart-uploads intent pending, under one owner lease. Its pid reused by an unrelated process
    says nothing either way: while the lease is unexpired both are left (it may be running); once
    it lapsed, cleanup ends the row and aborts the uploads, and the next run tiers everything."""
    desktops = make_fleet(1, data_mib=3)
    cold_env(drsvc_env, bucket, pack_mib=1)
    drsvc_env.policy("std", desktops, tiering={"after": "1s", "storage_class": "STANDARD_IA"})
    drsvc_env.wait_due_for_tier(*(o["point_id"] for o in backup(drsvc_env, *desktops)))
    killed = drsvc_env.subprocess("tier", env={**os.environ, "DRSVC_FAULT": "tier-after-packs:kill"})
    out, err = killed.communicate(timeout=600)
    assert killed.returncode == -9, f"never reached tier-after-packs (exit {killed.returncode}):\n{out}\n{err}"
    catalog = drsvc_env.services().catalog
    try:
        [job] = catalog.query("SELECT id, host, owner, status FROM jobs WHERE kind = 'tier'")
        assert job["status"] == "running" and job["owner"], job
        other = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
        try:
            catalog.execute("UPDATE jobs SET pid = ? WHERE id = ?", [other.pid, job["id"]])
            catalog.execute("UPDATE leases SET holder = ? WHERE name = ?", [f"{job['host']}:{other.pid}", job["owner"]])
            left = drsvc_env.cli("--json", "cleanup")
            assert left.code == 0 and left.json()["interrupted_jobs"] == [] and not left.json()["undone"], left.output
            catalog.execute("UPDATE leases SET expires_at = ? WHERE name = ?", [time.time() - 1, job["owner"]])
            ended = drsvc_env.cli("--json", "cleanup")
            assert ended.code == 0 and ended.json()["interrupted_jobs"] == [job["id"]], ended.output
            assert any(line.startswith("multipart-uploads ") for line in ended.json()["undone"]), ended.output
        finally:
            assert other.stdin is not None
            other.stdin.close()
            other.wait()
        [row] = catalog.query("SELECT status, error FROM jobs WHERE id = ?", [job["id"]])
        assert row["status"] == "interrupted" and "interrupted" in row["error"]
    finally:
        catalog.close()
    assert s3().list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    again = drsvc_env.cli("--json", "tier")
    assert again.code == 0 and len(again.json()["moves"]) == 1, again.output
    check = drsvc_env.cli("catalog", "check")
    assert check.code == 0, check.output
