"""Packs on the cold tier (moto): few PUTs per run, ranged reads, a bad blob named, pack GC and locks."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from coldkit import ColdKit, aws  # noqa: F401  (aws: the fixture, used through pytestmark)

from drsvc import clock
from drsvc.chunks import MAX_RANGE, PackIndex, StreamRef, chunk_key, index_key, pack_key
from drsvc.errors import EXIT_OK, IntegrityError
from drsvc.prune import PruneJob
from drsvc.storage.s3 import S3Store
from drsvc.tiering import TierJob
from drsvc.verify import VerifyJob

pytestmark = pytest.mark.usefixtures("aws")

NOW = clock.now()
MiB = 1024 * 1024


@pytest.fixture
def kit(tmp_path: Path) -> Iterator[ColdKit]:
    kit = ColdKit(tmp_path)
    yield kit
    kit.catalog.close()


def calls(kit: ColdKit, operation: str) -> list[dict[str, Any]]:
    """Parameters of every ``operation`` the cold store's client sends from now on."""
    store = kit.services.cold.store
    assert isinstance(store, S3Store)
    seen: list[dict[str, Any]] = []
    store._client.meta.events.register(f"provide-client-params.s3.{operation}", lambda params, **_: seen.append(params))
    return seen


def volume_ref(kit: ColdKit, desktop: str, pid: str) -> StreamRef:
    return StreamRef.from_dict(kit.services.hot.get_manifest(desktop, pid)["volume"]["stream"])


def test_a_run_of_points_tiers_as_a_few_pack_puts(kit: ColdKit) -> None:
    desktops = ["a", "b", "c"]
    kit.policy("std", desktops)
    pids = [kit.point(d, NOW - timedelta(hours=3), os.urandom(3 * MiB)) for d in desktops]
    chunks = len(set(kit.services.hot.list_chunk_ids()))
    assert chunks >= 50  # ~128 KiB chunks: one PutObject each before packs
    puts = calls(kit, "PutObject")
    report = TierJob(kit.services, None).run(now=NOW)
    assert report.exit_code == EXIT_OK
    keys = [p["Key"].split("/", 1)[1] for p in puts]
    # 9 MiB of chunks from three points: one 16 MiB pack, its index, config upgrade aside, 3 manifests
    assert sorted(k.split("/")[0] for k in keys if k != "config") == [
        "index",
        "manifests",
        "manifests",
        "manifests",
        "packs",
    ]
    assert sum(m.chunks_uploaded for m in report.moves) == chunks
    for d, pid in zip(desktops, pids, strict=True):
        ref = volume_ref(kit, d, pid)
        assert kit.services.cold.read_bytes(ref) == kit.services.hot.read_bytes(ref)


def test_restore_reads_packs_by_coalesced_ranges(tmp_path: Path) -> None:
    kit = ColdKit(tmp_path)
    kit.policy("std", ["alice"])
    data = os.urandom(12 * MiB)
    pid = kit.point("alice", NOW - timedelta(hours=3), data)
    assert TierJob(kit.services, None).run(now=NOW).exit_code == EXIT_OK
    cold = kit.fresh_services().cold  # a new process: it loads the indexes once
    gets = calls(kit, "GetObject")
    manifest = cold.get_manifest("alice", pid)
    assert b"".join(cold.read_stream(StreamRef.from_dict(manifest["volume"]["stream"]))) == data
    ranged = [g for g in gets if "Range" in g]
    ref = StreamRef.from_dict(manifest["volume"]["stream"])
    assert len(ref.chunks) >= 50
    # 12 MiB in one pack, read in ranges of at most MAX_RANGE: a couple of GETs, not one per chunk
    assert all(g["Key"].split("/", 1)[1].startswith("packs/") for g in ranged)
    assert 1 <= len(ranged) <= -(-13 * MiB // MAX_RANGE) + 1
    kit.catalog.close()


def test_a_corrupted_blob_inside_a_pack_is_detected_and_named(kit: ColdKit) -> None:
    kit.policy("std", ["alice"])
    pid = kit.point("alice", NOW - timedelta(hours=3), os.urandom(2 * MiB))
    assert TierJob(kit.services, None).run(now=NOW).exit_code == EXIT_OK
    cold = kit.services.cold
    ref = volume_ref(kit, "alice", pid)
    victim = ref.chunks[3][0]
    pack = cold.pack_of(victim)
    assert pack is not None
    [(_, offset, length)] = [e for e in cold.refresh_packs()[pack].entries if e[0] == victim]
    blob = bytearray(cold.store.get(pack_key(pack)))
    blob[offset + length // 2] ^= 0x04
    cold.store.put(pack_key(pack), bytes(blob))

    report = VerifyJob(kit.services).run([pid])
    assert report.ok  # the indexes cannot see a flipped bit
    report = VerifyJob(kit.services).run([pid], read_data=True)
    [problem] = report.problems
    assert (problem.tier, problem.kind, problem.chunks) == ("cold", "chunks-corrupt", [victim])
    with pytest.raises(IntegrityError, match=f"{victim}.*pack {pack}"):
        cold.read_bytes(ref)
    # the hot copy is fine: only the cold tier's copy is bad
    assert kit.services.hot.read_bytes(ref)


def test_gc_deletes_a_pack_only_when_none_of_its_chunks_is_referenced(kit: ColdKit) -> None:
    kit.policy("std", ["alice", "bob"], retention={"hot": {"last": 10}, "cold": {"last": 1}})
    shared = os.urandom(MiB)
    old = kit.point("alice", NOW - timedelta(hours=9), os.urandom(MiB), policy="std")
    TierJob(kit.services, None).run(now=NOW)  # pack 1: only the old point's chunks
    bob = kit.point("bob", NOW - timedelta(hours=8), shared, policy="std")
    mid = kit.point("alice", NOW - timedelta(hours=7), shared + os.urandom(MiB), policy="std")
    TierJob(kit.services, None).run(now=NOW)  # pack 2: bob's and mid's chunks
    new = kit.point("alice", NOW - timedelta(hours=6), shared, policy="std")
    TierJob(kit.services, None).run(now=NOW)  # nothing new: new reuses pack 2
    cold = kit.services.cold
    packs = cold.pack_members()
    assert len(packs) == 2
    pack_old = cold.pack_of(volume_ref(kit, "alice", old).chunks[0][0])
    pack_mid = cold.pack_of(volume_ref(kit, "alice", mid).chunks[-1][0])
    assert pack_old and pack_mid and pack_old != pack_mid

    # alice keeps only `new` cold: old and mid lose their manifests
    for pid in (old, mid):
        cold.delete_manifest("alice", pid)
    gc = PruneJob(kit.services, None)
    marked, deleted = gc.collect_garbage(cold, NOW)  # mark (grace 0 still needs a second look)
    assert marked > 0 and deleted == 0
    marked, deleted = gc.collect_garbage(cold, NOW + timedelta(seconds=1))
    # pack 1 is all garbage: gone; pack 2 still holds chunks of bob and new (mid's own chunks stay with it)
    assert set(cold.pack_members()) == {pack_mid}
    assert deleted == len(packs[pack_old])
    assert (
        not boto3.client("s3").list_objects_v2(Bucket=kit.bucket, Prefix=f"fleet/{index_key(pack_old)}").get("Contents")
    )
    for d, pid in (("bob", bob), ("alice", new)):
        ref = volume_ref(kit, d, pid)
        assert cold.read_bytes(ref) == kit.services.hot.read_bytes(ref)


def test_gc_never_deletes_a_locked_pack_and_collects_orphans(kit: ColdKit) -> None:
    S3Store(kit.bucket, "fleet", object_lock=True)  # the operator's lock-enabled bucket
    cold = kit.services.cold
    hot = kit.services.hot
    ref = hot.write_stream(os.urandom(MiB))
    blobs = [(cid, hot.store.get(chunk_key(cid))) for cid, _ in ref.chunks]
    until = NOW + timedelta(days=2)
    [locked] = cold.write_packs(blobs, storage_class="STANDARD_IA", retain_until=until)
    # a pack whose index never landed (a run killed between the two PUTs), unlocked
    orphan = "0" * 32
    cold.store.put(pack_key(orphan), b"partial pack")
    gc = PruneJob(kit.services, None)
    gc.collect_garbage(cold, NOW)
    gc.collect_garbage(cold, NOW + timedelta(hours=1))
    # nothing references the locked pack, but its lock (asked from S3: no cold_locks row) holds it
    assert set(cold.pack_members()) == {locked.pack_id}
    assert not cold.store.exists(pack_key(orphan))
    # the catalog's record of the lock is enough on its own: no HEAD needed
    heads = calls(kit, "HeadObject")
    kit.catalog.execute(
        "INSERT INTO cold_locks VALUES (?, ?, ?)", [cold.store.url, pack_key(locked.pack_id), clock.to_iso(until)]
    )
    gc.collect_garbage(cold, NOW + timedelta(days=1))
    assert set(cold.pack_members()) == {locked.pack_id} and heads == []
    gc.collect_garbage(cold, until + timedelta(minutes=1))  # the lock has expired
    assert cold.pack_members() == {}


def test_index_is_sealed_to_its_pack(kit: ColdKit) -> None:
    kit.policy("std", ["alice"])
    kit.point("alice", NOW - timedelta(hours=3), os.urandom(MiB))
    TierJob(kit.services, None).run(now=NOW)
    cold = kit.services.cold
    [(pid, index)] = cold.refresh_packs().items()
    other = "f" * 32
    cold.store.put(index_key(other), cold.store.get(index_key(pid)))  # a copied index under another id
    cold.store.put(pack_key(other), cold.store.get(pack_key(pid)))
    with pytest.raises(IntegrityError, match=f"index/{other}"):
        kit.fresh_services().cold.refresh_packs()
    assert isinstance(index, PackIndex)


def test_pack_buffers_are_reused_without_mixing_packs(kit: ColdKit) -> None:
    """Many packs through upload_workers + 1 reused buffers (and one blob larger than a pack) land intact."""
    cold = kit.services.cold
    cold.pack_size, cold.upload_workers = 1 * MiB, 2
    blobs = {os.urandom(32).hex(): os.urandom(int.from_bytes(os.urandom(2)) * 4 + 1000) for _ in range(60)}
    big = os.urandom(32).hex()
    blobs[big] = os.urandom(2 * MiB + 5)
    items = list(blobs.items())
    items.insert(20, items.pop())  # the oversize blob mid-stream
    written = cold.write_packs(items)
    assert len(written) >= 8  # far more packs than buffers
    assert sorted(cid for index in written for cid in index.chunk_ids) == sorted(blobs)
    for index in written:
        pack = cold.store.get(pack_key(index.pack_id))
        assert len(pack) == index.size
        assert index.size <= 1 * MiB or index.chunk_ids == [big]
        for cid, off, n in index.entries:
            assert pack[off : off + n] == blobs[cid]
