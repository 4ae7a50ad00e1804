"""Packs on the cold tier (moto): few PUTs per run, ranged reads, a bad blob named, pack GC and locks."""

from __future__ import annotations

import collections
import json
import os
import random
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from coldkit import ColdKit, aws  # noqa: F401  (aws: the fixture, used through pytestmark)

from drsvc import clock
from drsvc.backup import chunk_objects
from drsvc.chunks import FRAME_MAX, MAX_RANGE, PackIndex, StreamRef, chunk_key, index_key, object_aad, pack_key
from drsvc.chunks.pack import seal_index
from drsvc.errors import EXIT_OK, IntegrityError
from drsvc.prune import PruneJob
from drsvc.storage.s3 import S3Store
from drsvc.tiering import TierJob
from drsvc.verify import VerifyJob

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
    # and the tenant's data key record that sealed them (real backups seal with per-tenant keys)
    assert sorted(k.split("/")[0] for k in keys if k != "config") == [
        "index",
        "keys",
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
    [entry] = [e for e in cold.refresh_packs()[pack].entries if e.cid == victim]
    offset, length = entry.offset, entry.length
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

    def sealed(cid: str, size: int) -> bytes:  # incompressible: packed verbatim
        return cold.codec.encode(chunk_key(cid), os.urandom(size))

    ids = [os.urandom(32).hex() for _ in range(60)]
    blobs = {cid: sealed(cid, int.from_bytes(os.urandom(2)) * 4 + 1000) for cid in ids}
    big = os.urandom(32).hex()
    blobs[big] = sealed(big, 2 * MiB + 5)
    items = list(blobs.items())
    items.insert(20, items.pop())  # the oversize blob mid-stream
    written = cold.write_packs(items)
    assert len(written) >= 8  # far more packs than buffers
    assert sorted(cid for index in written for cid in index.chunk_ids) == sorted(blobs)
    for index in written:
        pack = cold.store.get(pack_key(index.pack_id))
        assert len(pack) == index.size
        assert index.size <= 1 * MiB or index.chunk_ids == [big]
        for entry in index.entries:
            assert pack[entry.offset : entry.offset + entry.length] == blobs[entry.cid]


def log_lines(size: int, seed: int) -> bytes:
    """Compressible text: lines drawn from a vocabulary larger than a chunk (like real logs)."""
    rng = random.Random(seed)
    words = [f"{rng.choice('abcdefgh')}{rng.randrange(10**6)}" for _ in range(4000)]
    vocab = [f"svc={rng.choice(words)} path=/api/{rng.choice(words)} user={rng.choice(words)}" for _ in range(3000)]
    out, n = [], 0
    while n < size:
        line = f"{rng.randrange(10**6):06d} {rng.choice(vocab)} ms={rng.randrange(999)}\n"
        out.append(line)
        n += len(line)
    return "".join(out).encode()[:size]


def framed_point(kit: ColdKit, data: bytes | None = None) -> tuple[str, bytes]:
    """A tiered point of text between incompressible media: (point id, its data)."""
    kit.policy("std", ["alice"])
    if data is None:
        data = os.urandom(MiB) + log_lines(3 * MiB, 1) + os.urandom(MiB // 2) + log_lines(2 * MiB, 2)
    # files of a megabyte (the volume's objects; frames follow them, so ~1 MiB frames)
    pid = kit.point(
        "alice", NOW - timedelta(hours=3), b"", objects=[data[i : i + MiB] for i in range(0, len(data), MiB)]
    )
    assert TierJob(kit.services, None).run(now=NOW).exit_code == EXIT_OK
    return pid, data


def test_compressible_chunks_are_packed_in_frames_and_incompressible_ones_verbatim(tmp_path: Path) -> None:
    kit = ColdKit(tmp_path)
    pid, data = framed_point(kit)
    cold, hot = kit.fresh_services().cold, kit.services.hot
    [index] = cold.refresh_packs().values()
    hot_blobs = dict(hot.store.get_many(chunk_key(e.cid) for e in index.entries))
    framed = [e for e in index.entries if e.in_frame]
    frames = {e.offset: e.length for e in framed}
    # ~5 MiB of text in 128 KiB chunks: a handful of ~1 MiB frames, several chunks each
    assert 3 <= len(frames) <= 8 and len(framed) >= 3 * len(frames)
    # a megabyte of context compresses the text better than chunk by chunk
    assert sum(frames.values()) < 0.97 * sum(len(hot_blobs[chunk_key(e.cid)]) for e in framed)
    stored = index.stored_bytes()  # what tiering reports: a frame's bytes shared among its chunks
    assert index.size - len(index.entries) <= sum(stored.values()) <= index.size  # rounding down per chunk
    pack = cold.store.get(pack_key(index.pack_id))
    for e in index.entries:
        if not e.in_frame:  # media: the hot blob itself, not re-encrypted
            assert pack[e.offset : e.offset + e.length] == hot_blobs[chunk_key(e.cid)]
    gets = calls(kit, "GetObject")
    ref = volume_ref(kit, "alice", pid)
    assert cold.read_bytes(ref) == data
    assert len([g for g in gets if "Range" in g]) == 1  # 7 MiB of one pack: one ranged read, each frame once
    config = kit.fresh_services().cold.config
    assert config is not None and config.sealed
    assert (config.settings["version"], config.settings["frames"]) == (5, {"target_size": MiB, "max_size": FRAME_MAX})
    kit.catalog.close()


def test_a_higher_cold_zstd_level_stores_frames_smaller(tmp_path: Path) -> None:
    # one key and one data set: the same chunks in the same frames, only the level differs
    kit3 = ColdKit(tmp_path / "3")
    kit7 = ColdKit(tmp_path / "7", zstd_level=7, key_of=kit3)
    pid3, data = framed_point(kit3)
    pid7, _ = framed_point(kit7, data)
    sizes, framed = {}, {}
    for level, kit, pid in ((3, kit3, pid3), (7, kit7, pid7)):
        [index] = kit.services.cold.refresh_packs().values()
        sizes[level] = sum({e.offset: e.length for e in index.entries if e.in_frame}.values())
        framed[level] = [(e.cid, e.pos) for e in index.entries if e.in_frame]
        assert kit.fresh_services().cold.read_bytes(volume_ref(kit, "alice", pid)) == data
        kit.catalog.close()
    # the premise: one tenant data key cuts the data into the same chunks, framed alike (with a key
    # each, chunk boundaries differ, frames take in more or less of the random media, and the sizes
    # compare frames of different contents)
    assert framed[7] == framed[3]
    assert sizes[7] < 0.98 * sizes[3]


def test_a_corrupted_frame_fails_exactly_its_chunks(tmp_path: Path) -> None:
    kit = ColdKit(tmp_path)
    pid, data = framed_point(kit)
    cold = kit.services.cold
    [index] = cold.refresh_packs().values()
    victim = next(e for e in index.entries if e.in_frame and e.pos > 0)  # not the frame's first chunk
    in_victim = sorted(e.cid for e in index.entries if e.in_frame and e.offset == victim.offset)
    blob = bytearray(cold.store.get(pack_key(index.pack_id)))
    blob[victim.offset + victim.length // 2] ^= 0x10
    cold.store.put(pack_key(index.pack_id), bytes(blob))

    report = cold.verify_chunks(index.chunk_ids, read_data=True)
    assert sorted(report.corrupt) == in_victim and not report.missing
    with pytest.raises(IntegrityError, match=f"pack {index.pack_id} at offset {victim.offset}"):
        kit.fresh_services().cold.read_bytes(volume_ref(kit, "alice", pid))
    [problem] = VerifyJob(kit.fresh_services()).run([pid], read_data=True).problems
    assert (problem.tier, problem.kind, sorted(problem.chunks)) == ("cold", "chunks-corrupt", in_victim)
    assert kit.services.hot.read_bytes(volume_ref(kit, "alice", pid)) == data
    kit.catalog.close()


def test_chunks_pointed_at_another_frame_fail_their_hash(kit: ColdKit) -> None:
    """Frames are sealed for their place and every chunk is re-hashed: no frame passes for another."""
    framed_point(kit)
    cold = kit.services.cold
    [index] = cold.refresh_packs().values()
    frames = {e.offset: e.length for e in index.entries if e.in_frame}
    first, second = sorted(frames)[:2]
    moved = [e._replace(offset=first, length=frames[first]) if e.offset == second else e for e in index.entries]
    cold.store.put(index_key(index.pack_id), seal_index(cold.codec, PackIndex(index.pack_id, index.size, tuple(moved))))
    report = kit.fresh_services().cold.verify_chunks(index.chunk_ids, read_data=True)
    assert sorted(report.corrupt) == sorted(e.cid for e in index.entries if e.offset == second)


def test_an_index_without_frames_stays_in_the_version_1_form(kit: ColdKit) -> None:
    cold = kit.services.cold
    cid = os.urandom(32).hex()
    [index] = cold.write_packs([(cid, cold.codec.encode(chunk_key(cid), os.urandom(4096)))])
    raw = cold.codec.zstd()[1].decompress(
        cold.keys.open_(cold.store.get(index_key(index.pack_id)), object_aad(index_key(index.pack_id)))
    )
    doc = json.loads(raw)
    assert doc["version"] == 1 and doc["chunks"] == [[cid, 0, index.size]]


def frame_bytes(kit: ColdKit) -> int:
    [index] = kit.services.cold.refresh_packs().values()
    return sum({e.offset: e.length for e in index.entries if e.in_frame}.values())


def test_frames_follow_the_volume_objects(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An object of up to FRAME_MAX is compressed whole; a larger one spans frames; text stores smaller."""
    logs = [log_lines(int(1.5 * MiB), seed) for seed in range(10, 14)]  # each its own vocabulary
    objects = [logs[0], os.urandom(MiB // 2), logs[1], logs[2], *(log_lines(20_000, s) for s in (1, 2)), logs[3]]
    objects.append(log_lines(6 * MiB, 20))
    kit = ColdKit(tmp_path / "objects")
    kit.policy("std", ["alice"])
    pid = kit.point("alice", NOW - timedelta(hours=3), b"", objects=objects)
    assert TierJob(kit.services, None).run(now=NOW).exit_code == EXIT_OK
    cold = kit.fresh_services().cold
    [index] = cold.refresh_packs().values()
    frame_of = {e.cid: e.offset for e in index.entries if e.in_frame}
    frame_size = collections.Counter()
    for e in index.entries:
        if e.in_frame:
            frame_size[e.offset] += e.size
    manifest = kit.services.hot.get_manifest("alice", pid)
    within = chunk_objects(manifest)
    by_object: dict[int, set[int]] = collections.defaultdict(set)
    for cid, obj in within.items():
        if cid in frame_of:
            by_object[obj].add(frame_of[cid])
    for obj in (0, 2, 3, 6):  # 1.5 MiB of text: one frame each
        assert len(by_object[obj]) == 1, (obj, by_object[obj])
    assert len(by_object[7]) == 2  # 6 MiB: cut at FRAME_MAX
    assert max(frame_size.values()) <= FRAME_MAX + cold.params.max_size
    assert cold.read_bytes(volume_ref(kit, "alice", pid)) == b"".join(objects)
    kit.catalog.close()

    # the same chunks framed without knowing the objects (points written before objects were listed)
    plain = ColdKit(tmp_path / "plain", key_of=kit)
    plain.policy("std", ["alice"])
    plain.point("alice", NOW - timedelta(hours=3), b"", objects=objects)
    monkeypatch.setattr("drsvc.tiering.chunk_objects", lambda manifest: {})
    assert TierJob(plain.services, None).run(now=NOW).exit_code == EXIT_OK
    with_objects, without = frame_bytes(kit), frame_bytes(plain)
    print(f"frames: {with_objects} bytes following objects, {without} without")
    assert with_objects < 0.98 * without
    plain.catalog.close()


def test_chunk_objects_names_the_object_a_chunk_lies_within() -> None:
    # objects [0,300) [300,350) [350,350) [350,770); chunks [0,300) [300,370) [370,470) [470,770)
    manifest = {
        "volume": {
            "objects": [{"name": n, "size": s} for n, s in (("a", 300), ("b", 50), ("empty", 0), ("c", 420))],
            "stream": {
                "size": 770,
                "hash": "0" * 64,
                "chunks": [["1" * 64, 300], ["2" * 64, 70], ["3" * 64, 100], ["4" * 64, 300]],
            },
        }
    }
    assert chunk_objects(manifest) == {"1" * 64: 0, "3" * 64: 3, "4" * 64: 3}  # "2..." straddles b and c
    assert chunk_objects({"volume": None, "checkpoint": {"stream": manifest["volume"]["stream"]}}) == {}
