"""Hostile store content (part of the hostile-input corpus): crafted objects in a chunk store, each
refused with a clear ``IntegrityError`` and bounded memory, on every backend.

Whoever can write the bucket or pool (or holds a key, for the crafted *sealed* objects: a
compromised writer) must not make a reader allocate what an object declares: zstd frames declaring
512 MiB, objects of hundreds of MiB at a manifest's or an index's key, truncated or swapped objects.
Reads that could allocate run in a fresh process which reports its peak RSS growth
(``ru_maxrss``), so the bound is measured, not assumed.

Use it by subclassing and providing ``url`` (an empty store, reachable from a subprocess with this
process's environment) and ``big_object`` (make an object of ``size`` bytes cheaply: sparse file,
RADOS truncate, S3 streamed upload)::

    class TestHostileFile(HostileStoreSuite):
        @pytest.fixture
        def url(self, tmp_path): ...
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from typing import Any

import pytest
import zstandard

from drsvc.chunks import MANIFESTS_PREFIX, ChunkStore, StreamRef, chunk_key, frame_name, index_key, pack_key
from drsvc.chunks.cutter import ChunkerParams
from drsvc.chunks.layout import (
    CONFIG_KEY,
    CONFIG_MAX,
    INDEX_STORED_MAX,
    KEY_RECORD_MAX,
    MANIFEST_STORED_MAX,
    chunk_stored_max,
    object_aad,
)
from drsvc.chunks.pack import PackEntry, PackIndex, seal_index
from drsvc.crypto import Keys
from drsvc.errors import IntegrityError
from drsvc.storage import ObjectStore, open_store

KiB, MiB = 1024, 1024 * 1024
KEY = Keys(bytes(range(32)))
PARAMS = ChunkerParams(min_size=16 * KiB, avg_size=64 * KiB, max_size=256 * KiB)
DESK = "hostile-desk"
GROWTH_MAX_MIB = 16  # what a refused read may add to a reader's peak RSS (bombs declare 512 MiB+, objects 97 MiB)

_READER = textwrap.dedent(
    """
    import json, resource, sys
    import zstandard  # noqa: F401  (imported before the baseline)
    from drsvc.chunks import ChunkStore, StreamRef
    from drsvc.crypto import Keys
    from drsvc.errors import DrsvcError
    from drsvc.storage import open_store

    url, key, op, args = json.loads(sys.argv[1])
    store = open_store(url)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out = {"error": None}
    try:
        cs = ChunkStore.open(store, Keys(bytes.fromhex(key)))
        if op == "manifest":
            cs.get_manifest(*args)
        elif op == "stream":
            doc = cs.get_manifest(*args)
            cs.read_bytes(StreamRef.from_dict(doc["volume"]))
        elif op == "packs":
            cs.refresh_packs()
    except DrsvcError as e:
        out = {"error": type(e).__name__, "exit_code": e.exit_code, "message": str(e)}
    out["growth_mib"] = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024
    print(json.dumps(out))
    """
)


def bomb(declared: int) -> bytes:
    """A real zstd frame of ``declared`` zero bytes (it declares its size): ~16 KiB per 512 MiB."""
    cobj = zstandard.ZstdCompressor(level=1).compressobj(size=declared)
    zero = bytes(MiB)
    parts = [cobj.compress(zero) for _ in range(declared // MiB)]
    return b"".join([*parts, cobj.compress(bytes(declared % MiB)), cobj.flush()])


def data(n: int, seed: int) -> bytes:
    """Compressible, distinct content (chunks of it are zstd-coded, so frames get made)."""
    return b"".join(b"line %d of stream %d, some text to compress\n" % (i, seed) for i in range(n // 40))[:n]


class HostileStoreSuite:
    """The cases; subclasses provide ``url`` and ``big_object``."""

    def big_object(self, store: ObjectStore, key: str, size: int) -> None:
        raise NotImplementedError

    # ------------------------------------------------------------ fixtures and helpers

    @pytest.fixture
    def store(self, url: str) -> ObjectStore:
        return open_store(url)

    def _point(self, cs: ChunkStore, pid: str, seed: int) -> StreamRef:
        ref = cs.write_bytes(data(1 * MiB, seed))
        cs.put_manifest(DESK, pid, {"volume": ref.to_dict()})
        return ref

    @pytest.fixture
    def loose(self, store: ObjectStore) -> tuple[ChunkStore, StreamRef]:
        """A store of loose chunks holding points p1 and p2."""
        cs = ChunkStore.init(store, KEY, params=PARAMS)
        ref = self._point(cs, "p1", 1)
        self._point(cs, "p2", 2)
        return cs, ref

    @pytest.fixture
    def packed(self, store: ObjectStore) -> tuple[ChunkStore, StreamRef, PackIndex]:
        """A packed store holding point p1 in one pack (its chunks in frames)."""
        cs = ChunkStore.init(store, KEY, params=PARAMS, pack_size=16 * MiB)
        ref = cs.write_bytes(data(1 * MiB, 1))  # loose first, as in a hot store ...
        blobs = [(cid, store.get(chunk_key(cid))) for cid, _ in dict.fromkeys(ref.chunks)]
        [index] = cs.write_packs(blobs)  # ... then packed, as tiering does
        cs.delete_chunks(cid for cid, _ in blobs)
        cs.put_manifest(DESK, "p1", {"volume": ref.to_dict()})
        assert any(e.in_frame for e in index.entries)
        return cs, ref, index

    def read(self, url: str, op: str, *args: str) -> dict[str, Any]:
        """Run one read in a fresh process: its error (class, exit code, message) and RSS growth."""
        proc = subprocess.run(
            [sys.executable, "-c", _READER, json.dumps([url, KEY.master.hex(), op, args])],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        return json.loads(proc.stdout)

    def refused(self, url: str, op: str, *args: str, match: str) -> dict[str, Any]:
        out = self.read(url, op, *args)
        assert out["error"] is not None, out
        assert out["exit_code"] == 4 and out["error"] in ("IntegrityError", "ObjectTooLarge", "CorruptChunk"), out
        assert match in out["message"], out
        assert out["growth_mib"] < GROWTH_MAX_MIB, out
        return out

    # ------------------------------------------------------------ declared-size bombs (sealed with the key)

    def test_chunk_declaring_512_mib(self, url: str, store: ObjectStore, loose: Any) -> None:
        _cs, ref = loose
        cid = ref.chunks[0][0]
        store.put(chunk_key(cid), KEY.seal(b"\x01" + bomb(512 * MiB), object_aad(chunk_key(cid))))
        assert len(store.get(chunk_key(cid))) < 64 * KiB
        self.refused(url, "stream", DESK, "p1", match="declares 536870912 bytes")

    def test_frame_declaring_512_mib(self, url: str, store: ObjectStore, packed: Any) -> None:
        cs, ref, index = packed
        pid = "f" * 32
        frame = KEY.seal(b"\x01" + bomb(512 * MiB), object_aad(frame_name(pid, 0)))
        entries, pos = [], 0
        for cid, size in dict.fromkeys(ref.chunks):  # every chunk a slice of the bomb
            entries.append(PackEntry(cid, 0, len(frame), pos, size))
            pos += size
        store.put(pack_key(pid), frame)
        store.put(index_key(pid), seal_index(cs.codec, PackIndex(pid, len(frame), tuple(entries))))
        cs.delete_packs([index.pack_id])
        self.refused(url, "stream", DESK, "p1", match="declares 536870912 bytes")

    def test_manifest_declaring_1_gib(self, url: str, store: ObjectStore, loose: Any) -> None:
        key = f"{MANIFESTS_PREFIX}{DESK}/p1"
        store.put(key, KEY.seal(bomb(1024 * MiB), object_aad(key)))
        self.refused(url, "manifest", DESK, "p1", match="declares 1073741824 bytes")

    def test_index_declaring_1_gib(self, url: str, store: ObjectStore, packed: Any) -> None:
        _cs, _ref, index = packed
        key = index_key(index.pack_id)
        store.put(key, KEY.seal(bomb(1024 * MiB), object_aad(key)))
        self.refused(url, "packs", match="declares 1073741824 bytes")

    # ------------------------------------------------------------ huge objects (anyone who can write the bucket)

    def test_huge_object_at_a_manifest_key(self, url: str, store: ObjectStore, loose: Any) -> None:
        self.big_object(store, f"{MANIFESTS_PREFIX}{DESK}/p1", MANIFEST_STORED_MAX + MiB)
        self.refused(url, "manifest", DESK, "p1", match=f"more than the {MANIFEST_STORED_MAX}")

    def test_huge_object_at_an_index_key(self, url: str, store: ObjectStore, packed: Any) -> None:
        _cs, _ref, index = packed
        self.big_object(store, index_key(index.pack_id), INDEX_STORED_MAX + MiB)
        self.refused(url, "packs", match=f"more than the {INDEX_STORED_MAX}")

    def test_huge_object_at_a_chunk_key(self, url: str, store: ObjectStore, loose: Any) -> None:
        _cs, ref = loose
        limit = chunk_stored_max(PARAMS.max_size)
        self.big_object(store, chunk_key(ref.chunks[1][0]), 8 * MiB)
        self.refused(url, "stream", DESK, "p1", match=f"more than the {limit}")

    def test_huge_key_record(self, url: str, store: ObjectStore, loose: Any) -> None:
        cs, _ref = loose
        record = cs.keyring.rotate("acme")
        self.big_object(store, record.object_key, 4 * MiB)
        with pytest.raises(IntegrityError, match=f"more than the {KEY_RECORD_MAX}"):
            ChunkStore.open(open_store(url), KEY).keyring.records()

    def test_huge_config(self, url: str, store: ObjectStore, loose: Any) -> None:
        self.big_object(store, CONFIG_KEY, 4 * MiB)
        self.refused(url, "manifest", DESK, "p1", match=f"more than the {CONFIG_MAX}")

    # ------------------------------------------------------------ truncation and swaps (in process: small)

    def test_truncated_objects(self, store: ObjectStore, loose: Any) -> None:
        cs, ref = loose
        key = chunk_key(ref.chunks[2][0])
        store.put(key, store.get(key)[:-1])
        with pytest.raises(IntegrityError, match="authentication failed"):
            cs.read_bytes(ref)
        key = f"{MANIFESTS_PREFIX}{DESK}/p2"
        store.put(key, store.get(key)[:20])
        with pytest.raises(IntegrityError, match="p2"):
            cs.get_manifest(DESK, "p2")

    def test_truncated_pack_and_index(self, url: str, store: ObjectStore, packed: Any) -> None:
        _cs, ref, index = packed
        store.put(pack_key(index.pack_id), store.get(pack_key(index.pack_id))[: index.size // 2])
        with pytest.raises(IntegrityError, match=r"truncated|authentication failed"):
            ChunkStore.open(open_store(url), KEY).read_bytes(ref)
        store.put(index_key(index.pack_id), store.get(index_key(index.pack_id))[:-5])
        with pytest.raises(IntegrityError, match=index.pack_id):
            ChunkStore.open(open_store(url), KEY).refresh_packs()

    def test_swapped_objects(self, url: str, store: ObjectStore, loose: Any) -> None:
        cs, ref = loose
        a, b = ref.chunks[0][0], ref.chunks[1][0]
        store.put(chunk_key(b), store.get(chunk_key(a)))  # chunk A's object at chunk B's key
        with pytest.raises(IntegrityError, match=b):
            ChunkStore.open(open_store(url), KEY).read_bytes(ref)
        p1, p2 = f"{MANIFESTS_PREFIX}{DESK}/p1", f"{MANIFESTS_PREFIX}{DESK}/p2"
        store.put(p2, store.get(p1))  # p1's manifest served as p2's
        with pytest.raises(IntegrityError, match="p2"):
            cs.get_manifest(DESK, "p2")
        store.put(CONFIG_KEY, store.get(p1))  # a manifest at the config's key
        with pytest.raises(Exception, match="config"):
            ChunkStore.open(open_store(url), KEY)

    def test_swapped_index(self, url: str, store: ObjectStore, packed: Any) -> None:
        _cs, _ref, index = packed
        other = "e" * 32
        store.put(pack_key(other), store.get(pack_key(index.pack_id)))
        store.put(index_key(other), store.get(index_key(index.pack_id)))  # pack X's index at pack Y's key
        with pytest.raises(IntegrityError, match=other):
            ChunkStore.open(open_store(url), KEY).refresh_packs()

    def test_config_tampering(self, url: str, store: ObjectStore, loose: Any) -> None:
        config = json.loads(store.get(CONFIG_KEY))
        sealed = bytearray(bytes.fromhex(config["sealed"]))
        sealed[-1] ^= 1
        store.put(CONFIG_KEY, json.dumps({**config, "sealed": sealed.hex()}).encode())
        with pytest.raises(IntegrityError, match="config does not authenticate"):
            ChunkStore.open(open_store(url), KEY)
        # plaintext settings beside the sealed ones are not read (the chunker comes from `sealed`)
        hint = {**config, "chunker": {"algorithm": "fastcdc-2020", "min_size": 64, "avg_size": 256}}
        store.put(CONFIG_KEY, json.dumps(hint).encode())
        assert ChunkStore.open(open_store(url), KEY).params == PARAMS
        store.put(CONFIG_KEY, json.dumps({**config, "version": 4}).encode())  # a downgraded header
        with pytest.raises(IntegrityError, match="key check"):
            ChunkStore.open(open_store(url), KEY)


def zero_file(size: int) -> Any:
    """A file object of ``size`` zero bytes read in 1 MiB pieces (for streamed uploads)."""

    class Zeros:
        def __init__(self) -> None:
            self.left = size

        def read(self, n: int = -1) -> bytes:
            n = self.left if n < 0 else min(n, self.left, MiB)
            self.left -= n
            return bytes(n)

    return Zeros()


def sparse_file(path: str | os.PathLike[str], size: int) -> None:
    """A file of ``size`` bytes that takes no disk space."""
    with open(path, "wb") as f:
        f.truncate(size)
