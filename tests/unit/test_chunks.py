"""The chunk store on file:// (and a counting null store for the streaming/memory checks)."""

from __future__ import annotations

import io
import itertools
import os
import random
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import blake3
import pytest

from drsvc.chunks import ChunkerParams, ChunkStore, StreamRef, chunk_key, referenced_chunks
from drsvc.chunks.cutter import Cutter, ObjectSegments
from drsvc.chunks.refs import chunk_list_hash
from drsvc.crypto import Keys
from drsvc.errors import IntegrityError, InvalidInput, NotFound
from drsvc.storage import open_store
from drsvc.storage.file import FileStore

MiB = 1024 * 1024


def pseudo(n: int, seed: int = 0) -> bytes:
    """Deterministic incompressible bytes, fast (BLAKE3 XOF)."""
    return blake3.blake3(b"%d" % seed).digest(length=n)


def logs(n: int, seed: int = 0) -> bytes:
    rng = random.Random(seed)
    lines = []
    size = 0
    while size < n:
        day, req, ms = rng.randrange(1, 30), rng.randrange(10**6), rng.randrange(500)
        line = f"2024-06-{day:02d} INFO req id={req} path=/api/v1/x ms={ms}\n"
        lines.append(line)
        size += len(line)
    return "".join(lines).encode()[:n]


class CountingStore(FileStore):
    """A file store that counts calls, to prove dedup never asks per chunk."""

    def __init__(self, root: Path) -> None:
        super().__init__(root, fsync=False)
        self.calls: dict[str, int] = {}
        self.puts = 0

    def _count(self, name: str) -> None:
        self.calls[name] = self.calls.get(name, 0) + 1

    def list(self, prefix: str = ""):
        self._count("list")
        return super().list(prefix)

    def exists(self, key: str) -> bool:
        self._count("exists")
        return super().exists(key)

    def put_many(self, items, **kw):
        def counted():
            for item in items:
                self.puts += 1
                yield item

        return super().put_many(counted(), **kw)


@pytest.fixture
def key() -> Keys:
    return Keys(bytes(range(32)))


@pytest.fixture
def store(tmp_path: Path) -> CountingStore:
    return CountingStore(tmp_path / "store")


@pytest.fixture
def cs(store: CountingStore, key: Keys) -> ChunkStore:
    return ChunkStore.init(store, key)


def test_round_trip_mixed(cs: ChunkStore) -> None:
    data = logs(3 * MiB) + pseudo(3 * MiB) + b"\x00" * MiB
    ref = cs.write_stream(io.BytesIO(data))
    assert ref.size == len(data)
    assert sum(n for _, n in ref.chunks) == len(data)
    assert all(cs.params.min_size <= n <= cs.params.max_size for _, n in ref.chunks[:-1])
    assert cs.read_bytes(ref) == data
    assert ref.hash == blake3.blake3(data, key=cs.keys.id_key).hexdigest()
    assert ref.stats.bytes_in == len(data) and ref.stats.chunks_total == len(ref.chunks)
    assert ref.stats.bytes_new_stored < len(data)  # logs and zeros compress


def test_empty_and_tiny_streams(cs: ChunkStore) -> None:
    empty = cs.write_stream(io.BytesIO(b""))
    assert empty.chunks == [] and empty.size == 0
    assert cs.read_bytes(empty) == b""
    tiny = cs.write_bytes(b"x")
    assert cs.read_bytes(tiny) == b"x"
    raw = cs.write_stream(bytearray(b"abc" * 100_000))  # a buffer is one piece, not an iterable of ints
    assert cs.read_bytes(raw) == b"abc" * 100_000


def test_sources_and_block_size_do_not_change_boundaries(store: CountingStore, key: Keys, cs: ChunkStore) -> None:
    data = pseudo(9 * MiB, 1)
    whole = [(c.offset, c.length) for c in cs.cutter.cdc.cut_buf(data)]
    small_blocks = ChunkStore(store, key, cs.params, block_size=2 * MiB)
    rng = random.Random(3)
    pieces, i = [], 0
    while i < len(data):
        n = rng.randrange(1, 300_000)
        pieces.append(data[i : i + n])
        i += n
    refs = [
        cs.write_stream(io.BytesIO(data)),
        small_blocks.write_stream(iter(pieces)),
        small_blocks.write_stream(io.BufferedReader(io.BytesIO(data), buffer_size=12345)),
    ]
    assert refs[0].chunks == refs[1].chunks == refs[2].chunks
    assert [n for _, n in refs[0].chunks] == [n for _, n in whole]


def test_dedup_second_write_stores_nothing_and_lists_once(cs: ChunkStore, store: CountingStore) -> None:
    data = pseudo(4 * MiB, 2) + logs(2 * MiB)
    first = cs.write_stream(io.BytesIO(data))
    puts = store.puts
    second = cs.write_stream(io.BytesIO(data))
    assert first.chunks == second.chunks
    assert second.stats.chunks_new == 0 and second.stats.bytes_new_stored == 0
    assert store.puts == puts
    assert store.calls.get("exists", 0) == 1  # only init's config check
    assert store.calls["list"] == 1
    # a fresh handle on the same store learns what exists from one listing, too
    again = ChunkStore.open(store, cs.keys).write_stream(io.BytesIO(data))
    assert again.stats.chunks_new == 0 and store.calls["list"] == 2


def test_repeated_content_inside_one_stream_stored_once(cs: ChunkStore) -> None:
    block = pseudo(3 * MiB, 9)
    ref = cs.write_stream(io.BytesIO(block * 4))
    assert ref.stats.chunks_new < ref.stats.chunks_total / 3
    assert cs.read_bytes(ref) == block * 4


def test_boundaries_survive_insertion_at_front(cs: ChunkStore) -> None:
    data = pseudo(16 * MiB, 4)
    a = cs.write_stream(io.BytesIO(data))
    b = cs.write_stream(io.BytesIO(b"inserted!" * 11 + data))
    shared = {c for c, _ in a.chunks} & {c for c, _ in b.chunks}
    assert len(shared) / len(a.chunks) > 0.9
    assert b.stats.chunks_new <= 2


def as_objects(blobs: list[bytes]) -> list[tuple[int, list[bytes]]]:
    """``write_objects`` input: each blob in 100 kB pieces, as a volume reader hands them over."""
    return [(len(b), [b[i : i + 100_000] for i in range(0, len(b), 100_000)]) for b in blobs]


def test_large_objects_start_and_end_chunks_small_ones_are_chunked_together(cs: ChunkStore) -> None:
    docs = [logs(3000, i) for i in range(40)]
    blobs = [pseudo(MiB, 1), *docs[:20], pseudo(700_000, 2), b"", pseudo(200_000, 3), *docs[20:]]
    ref = cs.write_objects(as_objects(blobs))
    data = b"".join(blobs)
    assert cs.read_bytes(ref) == data
    assert (ref.size, ref.hash) == (len(data), chunk_list_hash(cs.keys.hasher(), ref.chunks))
    starts = set(itertools.accumulate((n for _, n in ref.chunks), initial=0))
    offsets = list(itertools.accumulate(map(len, blobs), initial=0))
    large = [i for i, b in enumerate(blobs) if len(b) >= cs.params.avg_size]
    assert large == [0, 21, 23]
    assert all(offsets[i] in starts and offsets[i + 1] in starts for i in large)
    # the 20 small documents after the first large object: one or two chunks, not twenty
    assert 1 <= len([s for s in starts if offsets[1] <= s < offsets[21]]) <= 2
    assert cs.read_bytes(cs.write_objects([])) == b""


def test_an_object_inserted_between_large_ones_adds_only_its_own_chunk(cs: ChunkStore) -> None:
    image = [pseudo(600_000 + 1000 * i, 10 + i) for i in range(6)]  # a base image's objects
    base = cs.write_objects(as_objects(image))
    clone = cs.write_objects(as_objects([*image[:3], logs(50_000, 7), *image[3:]]))
    assert clone.stats.chunks_new == 1
    assert {c for c, _ in base.chunks} < {c for c, _ in clone.chunks}


def test_tampered_chunk_detected_and_never_returned(cs: ChunkStore, store: CountingStore) -> None:
    data = pseudo(4 * MiB, 5)
    ref = cs.write_stream(io.BytesIO(data))
    victim = ref.chunks[2][0]
    path = store.root / chunk_key(victim)
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0x40
    path.write_bytes(bytes(raw))
    got = []
    with pytest.raises(IntegrityError, match=victim):
        for piece in cs.read_stream(ref):
            got.append(piece)
    assert b"".join(got) == data[: sum(n for _, n in ref.chunks[:2])]
    report = cs.verify_chunks([c for c, _ in ref.chunks], read_data=True)
    assert report.corrupt == [victim] and not report.missing and not report.ok


def test_volume_stream_hashes_its_chunk_list_and_still_catches_tampering(cs: ChunkStore, store: CountingStore) -> None:
    blobs = [pseudo(MiB, 21), logs(400_000, 22), pseudo(700_000, 23)]
    data = b"".join(blobs)
    ref = cs.write_objects(as_objects(blobs))
    assert ref.hash.startswith("chunks:") and cs.read_bytes(ref) == data
    # a volume stream written before volumes hashed their chunk list (the whole plaintext's hash) still reads
    old = StreamRef(ref.chunks, ref.size, blake3.blake3(data, key=cs.keys.id_key).hexdigest())
    assert cs.read_bytes(old) == data
    # chunks swapped in the list (each one sound): the list's hash no longer matches
    swapped = StreamRef([ref.chunks[1], ref.chunks[0], *ref.chunks[2:]], ref.size, ref.hash)
    with pytest.raises(IntegrityError, match="stream hash"):
        cs.read_bytes(swapped)
    # a byte flipped in a stored chunk: caught by its id before the bytes are returned
    victim = ref.chunks[1][0]
    path = store.root / chunk_key(victim)
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    path.write_bytes(bytes(raw))
    with pytest.raises(IntegrityError, match=victim):
        cs.read_bytes(ref)


def test_missing_chunk(cs: ChunkStore, store: CountingStore) -> None:
    ref = cs.write_stream(io.BytesIO(pseudo(2 * MiB, 6)))
    gone = ref.chunks[-1][0]
    store.delete(chunk_key(gone))
    assert cs.verify_chunks([c for c, _ in ref.chunks]).missing == [gone]
    with pytest.raises(IntegrityError, match="missing"):
        cs.read_bytes(ref)


def test_wrong_key_refused_before_writing(store: CountingStore, cs: ChunkStore) -> None:
    before = sorted(store.list())
    with pytest.raises(InvalidInput, match="wrong key"):
        ChunkStore.open(store, Keys.generate())
    assert sorted(store.list()) == before


def test_init_twice_and_open_uninitialised(tmp_path: Path, key: Keys, cs: ChunkStore, store: CountingStore) -> None:
    with pytest.raises(InvalidInput, match="already"):
        ChunkStore.init(store, key)
    with pytest.raises(NotFound, match="no chunk store"):
        ChunkStore.open(open_store(f"file://{tmp_path}/empty"), key)


def test_params_come_from_config(tmp_path: Path, key: Keys) -> None:
    store = open_store(f"file://{tmp_path}/s")
    params = ChunkerParams(min_size=16 * 1024, avg_size=64 * 1024, max_size=256 * 1024)
    ChunkStore.init(store, key, params=params)
    assert ChunkStore.open(store, key).params == params
    with pytest.raises(InvalidInput):
        ChunkerParams(min_size=2 * MiB, avg_size=MiB)


def test_manifests(cs: ChunkStore) -> None:
    ref = cs.write_bytes(b"checkpoint archive bytes" * 1000)
    doc = {"desktop": "alice", "files": {"checkpoint.tar": ref.to_dict()}, "consistency": "paired"}
    cs.put_manifest("alice", "20240601T120000Z", doc)
    cs.put_manifest("alice", "20240601T130000Z", doc)
    cs.put_manifest("bob", "20240601T120000Z", {"x": 1})
    assert cs.get_manifest("alice", "20240601T120000Z") == doc
    assert sorted(cs.list_manifests()) == [
        ("alice", "20240601T120000Z"),
        ("alice", "20240601T130000Z"),
        ("bob", "20240601T120000Z"),
    ]
    assert sorted(cs.list_manifests("bob")) == [("bob", "20240601T120000Z")]
    back = StreamRef.from_dict(cs.get_manifest("alice", "20240601T120000Z")["files"]["checkpoint.tar"])
    assert cs.read_bytes(back) == b"checkpoint archive bytes" * 1000
    assert referenced_chunks([back]) == {c for c, _ in ref.chunks}
    cs.delete_manifest("alice", "20240601T130000Z")
    with pytest.raises(NotFound, match="alice/20240601T130000Z"):
        cs.get_manifest("alice", "20240601T130000Z")
    with pytest.raises(InvalidInput):
        cs.put_manifest("a/b", "p", {})


def test_manifest_swapped_for_chunk_fails_authentication(cs: ChunkStore, store: CountingStore) -> None:
    ref = cs.write_bytes(pseudo(300_000, 7))
    cs.put_manifest("alice", "p1", {"k": "v"})
    cid = ref.chunks[0][0]
    store.put(chunk_key(cid), store.get("manifests/alice/p1"))
    with pytest.raises(IntegrityError, match=cid):
        cs.read_bytes(ref)
    other = cs.write_bytes(pseudo(300_000, 8))
    store.put("manifests/alice/p2", store.get(chunk_key(other.chunks[0][0])))
    with pytest.raises(IntegrityError):
        cs.get_manifest("alice", "p2")


def test_gc_helpers(cs: ChunkStore) -> None:
    a = cs.write_bytes(pseudo(2 * MiB, 10))
    b = cs.write_bytes(pseudo(2 * MiB, 11))
    assert set(cs.list_chunk_ids()) == referenced_chunks([a, b])
    dead = referenced_chunks([a]) - referenced_chunks([b])
    assert cs.delete_chunks(dead) == len(dead)
    assert set(cs.list_chunk_ids()) == referenced_chunks([b])
    again = cs.write_bytes(pseudo(2 * MiB, 10))  # the dedup set forgot deleted chunks
    assert again.stats.chunks_new == len(dead)
    assert cs.read_bytes(again) == pseudo(2 * MiB, 10)


@pytest.mark.parametrize("params", [ChunkerParams(), ChunkerParams(1024, 4096, 16384, 2)])
def test_pieces_of_any_size_cut_as_the_whole_stream(params: ChunkerParams) -> None:
    """Pieces from 1 byte to several max-size chunks, alone or as objects: the whole buffer's cuts."""
    rng = random.Random(11)
    cutter = Cutter(params, 12345)
    data = logs(2 * MiB, 2) + pseudo(3 * MiB, 2) + b"\x00" * 300_000 + logs(MiB, 3)
    whole = [bytes(data[c.offset : c.offset + c.length]) for c in cutter.cdc.cut_buf(data)]
    for trial in range(6):
        pieces, i = [], 0
        while i < len(data):
            n = rng.randrange(1, rng.choice([64, 5000, 2 * params.max_size, 5 * MiB]))
            pieces.append(data[i : i + n])
            i += n
        assert [bytes(c) for c in cutter.cut_segment(iter(pieces))] == whole, trial
    # as objects of a volume: each large object cut alone, whatever its pieces
    objects = [pseudo(n, n) for n in (5, 70_000, 3 * MiB, 1000, 2000, 600_000)]
    expected = []
    for segment in ([objects[0], objects[1]], [objects[2]], [objects[3], objects[4]], [objects[5]]):
        joined = b"".join(segment)
        expected += [joined[c.offset : c.offset + c.length] for c in cutter.cdc.cut_buf(joined)]
    split = [(len(o), [o[j : j + 300_000] for j in range(0, len(o), 300_000)]) for o in objects]
    assert [bytes(c) for c in cutter.cut(ObjectSegments(split, 128 * 1024))] == expected


def test_large_bytes_pieces_are_cut_in_place_and_reused_buffers_are_copied(cs: ChunkStore) -> None:
    """A chunk within a ``bytes`` piece is a view of it (no copy into a block buffer first), while a
    producer's reused ``bytearray`` is copied before its chunks go on: rewriting it corrupts nothing."""
    piece = pseudo(4 * MiB, 5)
    chunks = list(cs.cutter.cut_segment(iter([piece])))
    assert [bytes(c) for c in chunks] == [piece[c.offset : c.offset + c.length] for c in cs.cutter.cdc.cut_buf(piece)]
    assert all(c.obj is piece for c in chunks)
    data = pseudo(6 * MiB, 6)

    def reused() -> Iterator[bytearray]:
        buf = bytearray(MiB)
        for i in range(0, len(data), MiB):
            buf[:] = data[i : i + MiB]
            yield buf

    ref = cs.write_stream(reused())
    assert cs.read_bytes(ref) == data


def test_streaming_keeps_memory_bounded(tmp_path: Path) -> None:
    """256 MiB of unique data through write_stream in a fresh process: peak RSS grows < 64 MiB."""
    script = textwrap.dedent(
        """
        import resource, sys, blake3
        from drsvc.chunks import ChunkStore
        from drsvc.crypto import Keys
        from drsvc.storage.base import StoreBase

        class Null(StoreBase):
            _url = "null://"
            def list(self, prefix=""):
                return iter(())
            def exists(self, key):
                return False
            def put(self, key, data, **kw):
                pass

        def source(total, block=4 << 20):
            for i in range(total // block):
                yield blake3.blake3(b"%d" % i).digest(length=block)

        cs = ChunkStore.init(Null(), Keys(bytes(32)))
        list(source(8 << 20))  # warm up allocator and imports
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        ref = cs.write_stream(source(256 << 20))
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        assert ref.size == 256 << 20, ref.size
        print((peak - base) // 1024, ref.stats.chunks_new)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )
    assert out.returncode == 0, out.stderr
    growth_mib, chunks = map(int, out.stdout.split())
    assert chunks > 500
    assert growth_mib < 64, f"peak RSS grew {growth_mib} MiB while streaming 256 MiB"


def test_concurrent_writers_store_each_chunk_once_and_never_refer_to_a_failed_upload(
    cs: ChunkStore, store: CountingStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading

    data = pseudo(3 * MiB, seed=7)
    refs: list = []
    threads = [threading.Thread(target=lambda: refs.append(cs.write_stream(data))) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [cs.read_bytes(r) for r in refs] == [data] * 3
    assert sum(r.stats.chunks_new for r in refs) == len({cid for cid, _ in refs[0].chunks}) == store.puts

    # a writer whose upload fails must not leave another writer's stream pointing at its chunks
    other = pseudo(2 * MiB, seed=8)
    started, release = threading.Event(), threading.Event()
    real_put_many = store.put_many

    def failing_put_many(items, **kw):
        first = next(iter(items))  # claims the stream's chunks as in flight
        started.set()
        release.wait(5)
        raise OSError(f"disk full while writing {first[0]}")

    monkeypatch.setattr(store, "put_many", failing_put_many)
    failed: list = []
    t = threading.Thread(target=lambda: failed.append(_capture(cs.write_stream, other)))
    t.start()
    assert started.wait(5)
    monkeypatch.setattr(store, "put_many", real_put_many)
    second: list = []
    t2 = threading.Thread(target=lambda: second.append(_capture(cs.write_stream, other)))
    t2.start()
    release.set()
    t.join()
    t2.join()
    [outcome] = second
    assert isinstance(failed[0], OSError)
    # either it uploaded what the failed writer had claimed itself, or it says its stream is incomplete
    if isinstance(outcome, Exception):
        assert "concurrent writer" in str(outcome)
    else:
        assert cs.read_bytes(outcome) == other


def _capture(fn, *args):
    try:
        return fn(*args)
    except Exception as e:
        return e


def test_a_stream_written_while_the_caller_handles_an_exception_is_complete(cs: ChunkStore) -> None:
    """write_stream inside an except clause (backup stores a base image after a NotFound)."""
    data = bytes(4 * MiB) + pseudo(MiB, seed=9) + bytes(4 * MiB)  # repeated chunks within the stream
    try:
        raise KeyError("not stored yet")
    except KeyError:
        ref = cs.write_stream(data)
    assert cs.read_bytes(ref) == data
