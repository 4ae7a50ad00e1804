"""Reading single objects (and root filesystem files) of a point, from the fastest copy that holds them.

A ``PointSource`` is one point opened for reading: its catalog row, its manifest (from the hot
store while the point is hot, else the cold store) and the copies that can serve data, fastest
first:

1. ``snapshot``: the point's pool snapshot, while it exists -- plain RADOS reads, nothing to
   decrypt or decompress;
2. ``hot``: the hot chunk store (one RADOS object per chunk);
3. ``cold``: the cold chunk store (ranged GETs of packs on S3).

From chunks, an object is the byte range ``[offset, offset + size)`` of the volume's one stream:
``StreamSlicer`` finds the chunks covering it and only those are fetched (each authenticated and
re-hashed against its id). ``ChunkCache`` serves random reads (the mount): chunks are kept in a
bounded LRU by id, fetched in runs, and a sequential reader gets the next chunks fetched ahead.
"""

from __future__ import annotations

import bisect
import collections
import itertools
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from drsvc.chunks import ChunkStore, StreamRef
from drsvc.errors import IntegrityError, NotFound
from drsvc.granular import listing
from drsvc.granular.listing import ObjectEntry
from drsvc.services import Services
from drsvc.volumes.base import ObjectHasher

TIERS = ("snapshot", "hot", "cold")
MiB = 1 << 20


class StreamSlicer:
    """Byte ranges of a stream mapped onto its chunks (by cumulative size)."""

    def __init__(self, ref: StreamRef) -> None:
        self.ref = ref
        self.starts: list[int] = []
        pos = 0
        for _cid, size in ref.chunks:
            self.starts.append(pos)
            pos += size
        self.size = pos

    def index_at(self, offset: int) -> int:
        """The index of the chunk holding byte ``offset``."""
        return bisect.bisect_right(self.starts, offset) - 1

    def span(self, offset: int, length: int) -> tuple[int, int]:
        """Chunk indexes ``[first, last]`` covering ``length`` bytes from ``offset`` (length > 0)."""
        if offset < 0 or length <= 0 or offset + length > self.size:
            raise IntegrityError(f"range {offset}+{length} lies outside the stream ({self.size} bytes)")
        return self.index_at(offset), self.index_at(offset + length - 1)


def read_range(store: ChunkStore, slicer: StreamSlicer, offset: int, length: int) -> Iterator[bytes]:
    """Stream ``length`` bytes of the stream from ``offset``, fetching only the chunks that cover them."""
    if length == 0:
        return
    first, last = slicer.span(offset, length)
    skip = offset - slicer.starts[first]
    left = length
    for data in store.read_chunks(slicer.ref.chunks[first : last + 1], key_id=slicer.ref.key_id):
        piece = memoryview(data)[skip : skip + left]
        skip = 0
        left -= len(piece)
        yield bytes(piece)
    if left:
        raise IntegrityError("stream ended before the range did")


@dataclass
class PointSource:
    """One point opened for reading single objects and files."""

    services: Services
    point: dict[str, Any]
    desktop: dict[str, Any]
    manifest: dict[str, Any]
    manifest_tier: str
    snapshot: str | None  # the pool snapshot's name while it exists
    _entries: dict[str, ObjectEntry] | None = field(default=None, repr=False)
    _slicers: dict[str, StreamSlicer] = field(default_factory=dict, repr=False)

    @property
    def id(self) -> str:
        return str(self.point["id"])

    @property
    def tiers(self) -> list[str]:
        """Copies that can serve data, fastest first."""
        out = ["snapshot"] if self.snapshot else []
        return out + [t for t in ("hot", "cold") if t in self.point["tiers"]]

    def entries(self) -> dict[str, ObjectEntry]:
        if self._entries is None:
            self._entries = {e.name: e for e in listing.objects(self.manifest)}
        return self._entries

    def entry(self, name: str) -> ObjectEntry:
        found = self.entries().get(name)
        if found is None:
            raise NotFound(f"point {self.id} has no object {name!r}")
        return found

    def store(self, tier: str) -> ChunkStore:
        return self.services.hot if tier == "hot" else self.services.cold

    def chunk_tier(self, prefer: str | None = None) -> str:
        """The chunk store to read from: ``prefer`` when the point is there, else hot, else cold."""
        tiers = self.point["tiers"]
        for tier in ([prefer] if prefer else []) + ["hot", "cold"]:
            if tier in tiers:
                return tier
        raise NotFound(f"point {self.id} is held by no tier")

    def slicer(self, kind: str) -> StreamSlicer:
        """The volume's (``volume``) or the checkpoint archive's (``checkpoint``) stream layout."""
        if kind not in self._slicers:
            section = self.manifest.get(kind)
            if not isinstance(section, dict) or not isinstance(section.get("stream"), dict):
                raise NotFound(f"point {self.id} has no {kind} stream")
            self._slicers[kind] = StreamSlicer(StreamRef.from_dict(section["stream"]))
        return self._slicers[kind]

    def read_object(self, entry: ObjectEntry, tier: str) -> Iterator[bytes]:
        """The object's data from ``tier`` (``snapshot``, ``hot`` or ``cold``), verified at its end.

        The object's digest (data, xattrs and omap as the manifest recorded them) is checked once
        the last byte is through: a mismatch raises ``IntegrityError`` (chunks are authenticated
        one by one before any of their bytes is yielded; a snapshot read is not).
        """
        if tier == "snapshot":
            if not self.snapshot:
                raise NotFound(f"point {self.id}: its pool snapshot is gone")
            volume = self.services.volume(self.manifest["volume"]["url"])
            data = volume.read_at(self.snapshot, entry.name) if entry.size else iter(())
        else:
            data = read_range(self.store(tier), self.slicer("volume"), entry.offset, entry.size)
        hasher = ObjectHasher.like(entry.digest)  # the form the point recorded (points mix forms)
        for piece in data:
            hasher.update(piece)
            yield piece
        if hasher.finish(entry.xattrs, entry.omap) != entry.digest:
            raise IntegrityError(f"object {entry.name!r} of point {self.id} ({tier}) does not match its digest")

    def open_object(self, entry: ObjectEntry, tiers: Sequence[str] | None = None) -> tuple[str, Iterator[bytes]]:
        """(tier, data) from the fastest copy that answers (default: ``tiers``, fastest first).

        The first piece is read here, so a copy that is gone (a pool snapshot removed since the
        catalog said otherwise) falls through to the next before a caller writes anything.
        """
        last: NotFound | None = None
        for tier in tiers or self.tiers:
            data = self.read_object(entry, tier)
            try:
                first = next(data, None)
            except NotFound as e:
                last = e
                continue
            return tier, itertools.chain([first] if first is not None else [], data)
        raise last or NotFound(f"point {self.id}: no copy answers for {entry.name!r}")


def open_point(services: Services, point: dict[str, Any], desktop: dict[str, Any]) -> PointSource:
    """A point ready to read: its manifest from the fastest store holding it, its pool snapshot if alive."""
    tiers = point["tiers"]
    if point["status"] != "complete" or not tiers:
        raise NotFound(f"point {point['id']} is {point['status']} and held by no tier")
    manifest_tier = "hot" if "hot" in tiers else "cold"
    store = services.hot if manifest_tier == "hot" else services.cold
    manifest = store.get_manifest(point["desktop_id"], point["id"])
    snapshot = None
    if "hot" in tiers and point.get("pool_snapshot_id") is not None:
        rows = services.catalog.query(
            "SELECT name FROM pool_snapshots WHERE id = ? AND removed_at IS NULL", [point["pool_snapshot_id"]]
        )
        volume = manifest.get("volume") or {}
        if rows and volume.get("pool_snapshot") == rows[0]["name"]:
            snapshot = str(rows[0]["name"])
    return PointSource(services, point, desktop, manifest, manifest_tier, snapshot)


# ---------------------------------------------------------------------- random reads (the mount)


class ChunkCache:
    """Chunks by id in a bounded LRU, fetched in runs; a sequential reader's next chunks fetched ahead.

    Thread-safe: FUSE calls ``read`` from several threads. A chunk being fetched is a ``Future``
    every reader of it waits on, so no chunk is fetched twice at once.
    """

    def __init__(
        self, *, capacity: int = 64 * MiB, read_ahead: int = 16 * MiB, run_bytes: int = 4 * MiB, workers: int = 2
    ) -> None:
        self.capacity = max(capacity, 1 * MiB)
        self.read_ahead = max(0, min(read_ahead, self.capacity // 2))
        self.run_bytes = run_bytes
        self._lru: collections.OrderedDict[str, bytes] = collections.OrderedDict()
        self._bytes = 0
        self._inflight: dict[str, Future[bytes]] = {}
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max(1, workers), thread_name_prefix="drsvc-mount")
        self._last_end: dict[int, int] = {}  # id(slicer) -> end of the last read (sequential detection)
        self.fetched = 0  # chunks fetched (for tests and stats)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def read(self, store: ChunkStore, slicer: StreamSlicer, offset: int, size: int) -> bytes:
        """``size`` bytes at ``offset`` of the stream (fewer at its end)."""
        size = min(size, slicer.size - offset)
        if size <= 0:
            return b""
        first, last = slicer.span(offset, size)
        sequential = self._last_end.get(id(slicer)) == offset
        self._last_end[id(slicer)] = offset + size
        ahead = last
        if sequential and self.read_ahead:
            budget = self.read_ahead
            while ahead + 1 < len(slicer.ref.chunks) and budget > 0:
                ahead += 1
                budget -= slicer.ref.chunks[ahead][1]
        futures = self._ensure(store, slicer.ref.chunks, first, ahead, slicer.ref.key_id)
        out = bytearray()
        for i in range(first, last + 1):
            out += futures[i].result()
        skip = offset - slicer.starts[first]
        return bytes(out[skip : skip + size])

    def _ensure(
        self, store: ChunkStore, chunks: Sequence[tuple[str, int]], first: int, last: int, key_id: str | None = None
    ) -> dict[int, Future]:
        """Futures for chunks ``first..last``: cached, in flight, or fetched now in runs of consecutive missing ones."""
        futures: dict[int, Future[bytes]] = {}
        runs: list[list[tuple[int, str, int]]] = []
        with self._lock:
            run: list[tuple[int, str, int]] = []
            run_size = 0
            for i in range(first, last + 1):
                cid, n = chunks[i]
                if cid in self._lru:
                    self._lru.move_to_end(cid)
                    done: Future[bytes] = Future()
                    done.set_result(self._lru[cid])
                    futures[i] = done
                elif cid in self._inflight:
                    futures[i] = self._inflight[cid]
                else:
                    future = Future[bytes]()
                    self._inflight[cid] = futures[i] = future
                    if run and (run[-1][0] != i - 1 or run_size + n > self.run_bytes):
                        runs.append(run)
                        run, run_size = [], 0
                    run.append((i, cid, n))
                    run_size += n
                    continue
                if run:
                    runs.append(run)
                    run, run_size = [], 0
            if run:
                runs.append(run)
        for r in runs:
            self._pool.submit(self._fetch, store, r, key_id)
        return futures

    def _fetch(self, store: ChunkStore, run: list[tuple[int, str, int]], key_id: str | None = None) -> None:
        pending = collections.deque(run)
        try:
            for data in store.read_chunks([(cid, n) for _i, cid, n in run], key_id=key_id):
                _i, cid, _n = pending.popleft()
                self._store(cid, data)
                if not pending:
                    break
        except BaseException as e:
            self._fail(list(pending), e)
            return
        if pending:  # the store yielded fewer chunks than asked
            self._fail(list(pending), IntegrityError("chunk read ended early"))

    def _fail(self, pending: list[tuple[int, str, int]], error: BaseException) -> None:
        with self._lock:
            for _i, cid, _n in pending:
                future = self._inflight.pop(cid, None)
                if future is not None and not future.done():
                    future.set_exception(error)

    def _store(self, cid: str, data: bytes) -> None:
        with self._lock:
            self.fetched += 1
            future = self._inflight.pop(cid, None)
            if cid not in self._lru:
                self._lru[cid] = data
                self._bytes += len(data)
                while self._bytes > self.capacity and len(self._lru) > 1:
                    _old, dropped = self._lru.popitem(last=False)
                    self._bytes -= len(dropped)
        if future is not None:
            future.set_result(data)

    @property
    def cached_bytes(self) -> int:
        return self._bytes
