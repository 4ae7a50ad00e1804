"""Tiering to S3 (moto): what is due, only missing chunks copied, manifest last, resumable, locks, cold prune."""

from __future__ import annotations

import os
import random
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from coldkit import ColdKit, aws  # noqa: F401  (aws: the fixture, used through pytestmark)

from drsvc import clock
from drsvc.chunks import ChunkStore, StreamRef
from drsvc.crypto import Keys
from drsvc.errors import EXIT_OK, EXIT_PARTIAL, InvalidInput
from drsvc.health import recorded_tier_lag
from drsvc.storage.s3 import S3Store
from drsvc.tiering import ColdPruneJob, TierJob, plan_tiering

pytestmark = pytest.mark.usefixtures("aws")

NOW = clock.now()  # set again as each test starts (below): moto enforces Object Lock on real time


@pytest.fixture(autouse=True)
def _now() -> None:
    """A test's "now" is when it starts, not when the module was imported (minutes earlier in a
    long or parallel run), so locks computed from it relate to moto's real clock as intended."""
    global NOW
    NOW = clock.now()


MiB = 1024 * 1024


@pytest.fixture
def kit(tmp_path: Path) -> Iterator[ColdKit]:
    kit = ColdKit(tmp_path)
    yield kit
    kit.catalog.close()


def s3_puts(kit: ColdKit) -> list[str]:
    """Keys (relative to the store) of every PutObject the cold store's client sends from now on."""
    store = kit.services.cold.store
    assert isinstance(store, S3Store)
    keys: list[str] = []
    store._client.meta.events.register(
        "provide-client-params.s3.PutObject", lambda params, **_: keys.append(params["Key"][len(store.prefix) :])
    )
    return keys


def chunk_puts(keys: list[str]) -> list[str]:
    return [k for k in keys if k.startswith("chunks/")]


def pack_puts(keys: list[str]) -> list[str]:
    return [k for k in keys if k.startswith("packs/")]


def indexed_chunks(kit: ColdKit) -> list[str]:
    """Every chunk id the cold store's pack indexes list (duplicates included)."""
    return [c for index in kit.services.cold.refresh_packs().values() for c in index.chunk_ids]


def test_due_points_go_cold_with_only_missing_chunks_and_the_manifest_last(kit: ColdKit) -> None:
    kit.policy("std", ["alice"])
    base = os.urandom(2 * MiB)
    image = os.urandom(1 * MiB)
    p1 = kit.point("alice", NOW - timedelta(hours=5), base, checkpoint=os.urandom(300_000), image=image)
    p2 = kit.point("alice", NOW - timedelta(hours=4), base + os.urandom(MiB), image=image)
    young = kit.point("alice", NOW - timedelta(minutes=10), base, image=image)
    puts = s3_puts(kit)

    report = TierJob(kit.services, None).run(now=NOW)
    assert report.exit_code == EXIT_OK
    assert [m.point_id for m in report.moves] == [p1, p2]  # the young one waits for tiering.after
    distinct = set(kit.services.hot.list_chunk_ids())
    young_only = {c for c, _ in kit.services.hot.get_manifest("alice", young)["volume"]["stream"]["chunks"]}
    # both points' chunks travel as packs of the run (~4 MiB: one pack), each chunk once, no loose chunk
    assert chunk_puts(puts) == [] and len(pack_puts(puts)) == 1
    assert sorted(indexed_chunks(kit)) == sorted(distinct - (young_only - distinct))
    # a pack before its index, every pack and index before any manifest; the image record once, before p1
    first_manifest = puts.index(f"manifests/alice/{p1}")
    for key in pack_puts(puts):
        assert puts.index(key) < puts.index(f"index/{key.rsplit('/', 1)[1]}") < first_manifest
    assert (
        sum("_images" in k for k in puts) == 1
        and next(i for i, k in enumerate(puts) if "_images" in k) < first_manifest
    )
    assert puts[-1] == f"manifests/alice/{p2}"
    assert report.moves[1].chunks_uploaded < report.moves[1].chunks  # p2 reused p1's chunks
    # the cold copies are real chunk stores: readable with the key, byte for byte
    cold = kit.services.cold
    for pid in (p1, p2):
        manifest = cold.get_manifest("alice", pid)
        assert manifest == kit.services.hot.get_manifest("alice", pid)
        ref = StreamRef.from_dict(manifest["volume"]["stream"])
        assert cold.read_bytes(ref) == kit.services.hot.read_bytes(ref)
    assert kit.catalog.point(p1)["tiers"] == ["hot", "cold"]
    moves = kit.catalog.query("SELECT * FROM tier_moves ORDER BY id")
    assert [(m["point_id"], m["status"]) for m in moves] == [(p1, "ok"), (p2, "ok")]
    assert sum(m["chunks_uploaded"] for m in moves) == len(indexed_chunks(kit))
    row = kit.catalog.query("SELECT * FROM point_tiers WHERE point_id = ? AND tier = 'cold'", [p1])[0]
    assert row["store_url"] == kit.cold_url and row["stored_bytes"] > 0 and row["retain_until"] is None
    storage = boto3.client("s3")
    [pack] = pack_puts(puts)
    assert storage.head_object(Bucket=kit.bucket, Key=f"fleet/{pack}")["StorageClass"] == "STANDARD_IA"
    index = f"fleet/index/{pack.rsplit('/', 1)[1]}"
    assert "StorageClass" not in storage.head_object(Bucket=kit.bucket, Key=index)  # read without a restore
    assert "StorageClass" not in storage.head_object(Bucket=kit.bucket, Key=f"fleet/manifests/alice/{p1}")

    # idempotent: nothing more is due, nothing is uploaded
    before = len(puts)
    assert TierJob(kit.services, None).run(now=NOW).moves == []
    assert len(puts) == before


def test_unchanged_point_and_fleet_sharing_an_image_upload_almost_nothing(kit: ColdKit) -> None:
    desktops = [f"desk-{i}" for i in range(4)]
    kit.policy("fleet", desktops)
    # seeded, so the content-defined cuts (and the counts below) are the same on every run
    shared = random.Random(1).randbytes(3 * MiB)
    for i, d in enumerate(desktops):
        kit.point(d, NOW - timedelta(hours=3), shared + random.Random(100 + i).randbytes(200_000) if i else shared)
    first = TierJob(kit.services, None).run(now=NOW)
    assert first.exit_code == EXIT_OK
    uploaded = [m.chunks_uploaded for m in first.moves]
    # the shared 3 MiB goes up once; each other desktop adds only the chunks around its own 200 KB
    # (at most one maximum-size chunk on either side of it; cut points depend on the store's key)
    limit = 200_000 + 2 * kit.services.hot.params.max_size + 4096
    assert uploaded[0] == first.moves[0].chunks
    assert all(m.bytes_uploaded <= limit for m in first.moves[1:]), [m.bytes_uploaded for m in first.moves]
    kit.point("desk-0", NOW - timedelta(hours=2), shared)  # unchanged desktop: same data again
    again = TierJob(kit.services, None).run(now=NOW)
    assert [m.chunks_uploaded for m in again.moves] == [0]


def test_the_cold_listings_are_made_at_once_and_dedup_still_sees_every_chunk(kit: ColdKit) -> None:
    """The loose chunks, the pack indexes and the image records are listed concurrently (three
    round trips overlap, not queue), and a chunk known by any of them is still never uploaded."""
    kit.policy("p", ["desk"])
    data = random.Random(7).randbytes(2 * MiB)
    kit.point("desk", NOW - timedelta(hours=3), data)
    assert TierJob(kit.services, None).run(now=NOW).exit_code == EXIT_OK
    kit.point("desk", NOW - timedelta(hours=2), data)  # unchanged
    store = kit.services.cold.store
    listing = store.list
    # Each kind of listing waits, on its first call, until the other two have started too: made
    # one after another, they never meet and the barrier breaks (after its timeout, not a hang).
    meet = threading.Barrier(3, timeout=20)
    kinds = {"chunks/": "loose", "index/": "packs", "manifests/_images": "images"}
    met: set[str] = set()

    def meeting_list(prefix: str = "") -> Iterator[str]:
        kind = next((k for p, k in kinds.items() if prefix.startswith(p)), None)
        if kind is not None and kind not in met:
            met.add(kind)
            meet.wait()
        return listing(prefix)

    store.list = meeting_list  # type: ignore[method-assign]
    again = TierJob(kit.services, None).run(now=NOW)
    assert met == {"loose", "packs", "images"}
    assert again.exit_code == EXIT_OK, [m.error for m in again.moves]
    assert [m.chunks_uploaded for m in again.moves] == [0]
    assert again.moves[0].chunks > 0


def test_the_cold_store_opens_while_the_hot_manifests_are_read(kit: ColdKit, monkeypatch: pytest.MonkeyPatch) -> None:
    """Opening the cold store (boto3, bucket, config, listings) and reading the due points' hot
    manifests overlap: each waits, on its first call, for the other to start. One after the other,
    they never meet and the barrier breaks (after its timeout, not a hang)."""
    kit.policy("p", ["desk"])
    kit.point("desk", NOW - timedelta(hours=3), random.Random(3).randbytes(MiB))
    services = kit.fresh_services()
    meet = threading.Barrier(2, timeout=20)
    met: list[str] = []
    open_store, read = ChunkStore.open.__func__, services.hot.get_sealed_manifest  # type: ignore[attr-defined]

    def opening(cls: type[ChunkStore], store: Any, *a: Any, **k: Any) -> ChunkStore:
        if isinstance(store, S3Store) and "cold" not in met:
            met.append("cold")
            meet.wait()
        return open_store(cls, store, *a, **k)

    def reading(desktop: str, point_id: str) -> Any:
        if "hot" not in met:
            met.append("hot")
            meet.wait()
        return read(desktop, point_id)

    monkeypatch.setattr(ChunkStore, "open", classmethod(opening))
    monkeypatch.setattr(services.hot, "get_sealed_manifest", reading)
    report = TierJob(services, None).run(now=NOW)
    assert sorted(met) == ["cold", "hot"] and not meet.broken
    assert report.exit_code == EXIT_OK, [m.error for m in report.moves]
    assert [m.status for m in report.moves] == ["done"]


def test_cold_retention_decides_what_is_worth_uploading(kit: ColdKit) -> None:
    kit.policy("daily", ["bob"], retention={"hot": {"last": 10}, "cold": {"daily": 7}})
    day = NOW.replace(hour=12, minute=0, second=0, microsecond=0) - timedelta(days=2)
    early = kit.point("bob", day, b"a" * 100_000)
    late = kit.point("bob", day + timedelta(hours=3), b"b" * 100_000)
    due = plan_tiering(kit.catalog, kit.services.policies, NOW)
    assert [c.point["id"] for c in due] == [late]  # cold keeps one per day: the early one never goes
    assert any(r.startswith("daily 1/7") for r in due[0].reasons)
    assert early not in [c.point["id"] for c in due]


def test_dry_run_changes_nothing(kit: ColdKit) -> None:
    kit.policy("std", ["alice"])
    pid = kit.point("alice", NOW - timedelta(hours=5), os.urandom(MiB))
    report = TierJob(kit.services, None).run(dry_run=True, now=NOW)
    assert [m.point_id for m in report.moves] == [pid]
    assert report.document()["moves"][0]["status"] == "planned"
    assert "cold" not in kit.catalog.point(pid)["tiers"]
    assert kit.catalog.query("SELECT * FROM tier_moves") == []
    assert kit.catalog.query("SELECT kind FROM jobs") == [{"kind": "backup"}], "the dry run started a job"
    assert boto3.client("s3").list_buckets()["Buckets"] == []  # not even the bucket was created
    assert recorded_tier_lag(kit.catalog) is None, "a dry run records no tier lag"


def test_a_run_killed_mid_way_resumes_without_uploading_anything_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kit = ColdKit(tmp_path, pack_mib=1)  # small packs: a 12 MiB point is a dozen
    kit.policy("std", ["alice"])
    pid = kit.point("alice", NOW - timedelta(hours=5), os.urandom(12 * MiB))
    total = len(set(kit.services.hot.list_chunk_ids()))
    assert total >= 48
    puts = s3_puts(kit)
    real_put = S3Store._put
    calls = 0

    def dying_put(self: S3Store, oid: str, key: str, data: bytes, args: dict[str, Any]) -> None:
        nonlocal calls
        if key.startswith("packs/"):
            calls += 1
            if calls == 3:
                raise KeyboardInterrupt  # the process is killed: not an error drsvc handles
        real_put(self, oid, key, data, args)

    monkeypatch.setattr(S3Store, "_put", dying_put)
    with pytest.raises(KeyboardInterrupt):
        TierJob(kit.services, None).run(now=NOW)
    monkeypatch.setattr(S3Store, "_put", real_put)
    first = list(puts)
    assert 0 < len(pack_puts(first)) < 10 and not any(k.startswith("manifests/") for k in first)
    assert "cold" not in kit.catalog.point(pid)["tiers"]
    assert kit.catalog.query("SELECT status FROM tier_moves") == [{"status": "failed"}]
    assert recorded_tier_lag(kit.catalog) == {("alice", "std"): 1}, "a killed run still records what it left"
    indexed = indexed_chunks(kit)
    assert 0 < len(indexed) < total

    kit.fresh_services()  # a new process
    puts = s3_puts(kit)
    report = TierJob(kit.services, None).run(now=NOW)
    assert report.exit_code == EXIT_OK
    assert report.moves[0].chunks_uploaded == total - len(indexed)  # nothing indexed is sent again
    every = indexed_chunks(kit)
    assert len(every) == len(set(every)) == total
    assert puts[-1] == f"manifests/alice/{pid}"
    assert kit.catalog.point(pid)["tiers"] == ["hot", "cold"]
    ref = StreamRef.from_dict(kit.services.cold.get_manifest("alice", pid)["volume"]["stream"])
    assert kit.services.cold.read_bytes(ref) == kit.services.hot.read_bytes(ref)
    kit.catalog.close()


def test_a_failed_upload_fails_the_point_and_the_next_run_finishes_it(
    kit: ColdKit, monkeypatch: pytest.MonkeyPatch
) -> None:
    kit.policy("std", ["alice", "bob"])
    a = kit.point("alice", NOW - timedelta(hours=5), os.urandom(2 * MiB))
    b = kit.point("bob", NOW - timedelta(hours=5), os.urandom(MiB))
    real_put = S3Store._put

    def flaky(self: S3Store, oid: str, key: str, data: bytes, args: dict[str, Any]) -> None:
        if "/alice/" in key or (key.startswith("chunks/") and key.split("/")[-1] in alice_chunks):
            from drsvc.errors import BackendError

            raise BackendError("s3 put: SlowDown after 10 attempts")
        real_put(self, oid, key, data, args)

    alice_chunks = {c for c, _ in kit.services.hot.get_manifest("alice", a)["volume"]["stream"]["chunks"]}
    monkeypatch.setattr(S3Store, "_put", flaky)
    report = TierJob(kit.services, None).run(now=NOW)
    assert report.exit_code == EXIT_PARTIAL
    assert {m.point_id: m.status for m in report.moves} == {a: "failed", b: "done"}
    assert "SlowDown" in (next(m for m in report.moves if m.point_id == a).error or "")
    # what `drsvc metrics` reports until the next run: the point that did not get there
    assert recorded_tier_lag(kit.catalog) == {("alice", "std"): 1}
    monkeypatch.setattr(S3Store, "_put", real_put)
    assert [m.point_id for m in TierJob(kit.services, None).run(now=NOW).moves] == [a]
    assert recorded_tier_lag(kit.catalog) == {}
    assert TierJob(kit.services, None).run(now=NOW).moves == []
    assert recorded_tier_lag(kit.catalog) == {}, "a run with nothing due records that too"


def test_cold_store_with_another_key_is_refused(kit: ColdKit) -> None:
    kit.policy("std", ["alice"])
    kit.point("alice", NOW - timedelta(hours=5), os.urandom(MiB))
    ChunkStore.init(S3Store(kit.bucket, "fleet"), Keys.generate())
    with pytest.raises(InvalidInput, match="wrong key"):
        TierJob(kit.services, None).run(now=NOW)


def test_corrupt_hot_chunk_is_not_carried_to_the_cold_tier(kit: ColdKit) -> None:
    kit.policy("std", ["alice"])
    pid = kit.point("alice", NOW - timedelta(hours=5), os.urandom(MiB))
    [path, *_] = sorted((kit.root / "hot" / "chunks").rglob("*"), key=lambda p: (p.is_dir(), str(p)))
    blob = bytearray(path.read_bytes())
    blob[40] ^= 1
    path.write_bytes(bytes(blob))
    report = TierJob(kit.services, None).run(now=NOW)
    assert report.moves[0].status == "failed" and "corrupt" in (report.moves[0].error or "")
    assert "cold" not in kit.catalog.point(pid)["tiers"]
    assert list(kit.services.cold.list_manifests()) == []


def test_object_lock_and_cold_prune_skips_locked_copies(kit: ColdKit) -> None:
    S3Store(kit.bucket, "fleet", object_lock=True)  # the bucket an operator created with Object Lock
    kit.policy(
        "locked",
        ["carol"],
        retention={"hot": {"last": 1}, "cold": {"last": 1}},
        tiering={"after": "1h", "storage_class": "STANDARD_IA", "object_lock_days": 1},
    )
    shared = os.urandom(2 * MiB)
    old = kit.point("carol", NOW - timedelta(hours=30), shared + b"old" * 50_000)
    first = TierJob(kit.services, None).run(now=NOW - timedelta(hours=20))
    assert [m.point_id for m in first.moves] == [old]
    lock_old = first.moves[0].retain_until
    assert lock_old and kit.services.cold.store.retain_until(f"manifests/carol/{old}") is not None  # type: ignore[attr-defined]

    new = kit.point("carol", NOW - timedelta(hours=5), shared + b"new" * 50_000)
    retained: list[dict[str, Any]] = []
    store = kit.services.cold.store
    assert isinstance(store, S3Store)
    store._client.meta.events.register(
        "provide-client-params.s3.PutObjectRetention", lambda params, **_: retained.append(params)
    )
    second = TierJob(kit.services, None).run(now=NOW)
    assert [m.point_id for m in second.moves] == [new]
    # the chunks it shares with the old point were locked only until the old point's lock: extended
    assert second.moves[0].locks_extended == len(retained) > 0
    assert all(r["Retention"]["RetainUntilDate"] > NOW + timedelta(days=1) for r in retained)

    # cold retention keeps 1: the old copy is due, but still locked -> skipped, no delete attempted
    report = ColdPruneJob(kit.services, None).run(now=NOW)
    assert report.locked == [old]
    assert kit.catalog.point(old)["tiers"] == ["hot", "cold"]
    assert kit.services.cold.get_manifest("carol", old)["point_id"] == old
    # S3 itself refuses to delete the locked version, whatever drsvc's config says
    client = boto3.client("s3")
    key = f"fleet/manifests/carol/{old}"
    version = client.head_object(Bucket=kit.bucket, Key=key)["VersionId"]
    with pytest.raises(client.exceptions.ClientError, match="AccessDenied"):
        client.delete_object(Bucket=kit.bucket, Key=key, VersionId=version)

    # after the lock expires the next run drops it, and the GC (grace 0) takes its own chunks
    later = clock.from_iso(lock_old) + timedelta(minutes=1)
    after = ColdPruneJob(kit.services, None).run(now=later)
    assert after.locked == [] and [d.point_id for d in after.decisions if not d.keep] == [old]
    assert kit.catalog.point(old)["tiers"] == ["hot"]
    assert list(kit.services.cold.list_manifests("carol")) == [("carol", new)]
    assert after.chunks_marked >= 1
    ColdPruneJob(kit.services, None).run(now=later + timedelta(seconds=1))
    still = set(kit.services.cold.list_chunk_ids())
    needed = {c for c, _ in kit.services.cold.get_manifest("carol", new)["volume"]["stream"]["chunks"]}
    own_old = {c for c, _ in kit.services.hot.get_manifest("carol", old)["volume"]["stream"]["chunks"]} - needed
    # the old point's own chunks share a pack with chunks the new point uses: that pack stays whole
    assert needed <= still and still - needed == own_old


def test_tier_cli_json_and_exit_code(kit: ColdKit, run_cli: Any) -> None:
    kit.policy("std", ["alice"])
    pid = kit.point("alice", clock.now() - timedelta(hours=5), os.urandom(MiB))
    config = str(kit.root / "drsvc.toml")
    dry = run_cli("--config", config, "--json", "tier", "--dry-run")
    assert dry.code == 0, dry.output
    assert dry.json()["moves"][0]["point_id"] == pid and dry.json()["dry_run"] is True
    real = run_cli("--config", config, "--json", "tier")
    assert real.code == 0, real.output
    doc = real.json()
    assert doc["summary"]["done"] == 1 and doc["summary"]["chunks_uploaded"] >= 1
    human = run_cli("--config", config, "tier")
    assert human.code == 0 and "nothing to tier" in human.stdout
