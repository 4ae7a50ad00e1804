"""Reading chunks back: loose objects one GET each (pipelined), packs by coalesced ranged GETs.

Reading a packed store fetches by pack: the chunks a stream needs are located through the index,
runs of chunks that lie close together in one pack are coalesced into one ranged GET (up to
``MAX_RANGE`` bytes, skipping gaps up to ``MAX_GAP``), ranges are fetched on ``read_workers``
threads with ``read_ahead`` ranges in flight (bounded memory), each frame in a range is opened
once, then every chunk is re-hashed alone, all on the worker that fetched the range (the consumer
only takes verified plaintext, range by range); a bad blob or frame raises ``IntegrityError`` naming
the chunk and its pack (a bad frame fails exactly the chunks in it). Loose chunks (stores written
before packs existed) and version-2 packs (no frames) stay readable.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from drsvc.chunks.codec import Codec
from drsvc.chunks.index import PackDirectory
from drsvc.chunks.layout import (
    MAX_GAP,
    MAX_RANGE,
    chunk_key,
    chunk_stored_max,
    frame_name,
    frame_plain_max,
    pack_key,
)
from drsvc.chunks.pack import PackEntry
from drsvc.chunks.refs import LIST_HASH, StreamRef, VerifyReport, chunk_list_hash
from drsvc.chunks.sidehash import SideHasher
from drsvc.crypto import Keys, sealed_key_id
from drsvc.errors import IntegrityError, NotFound
from drsvc.storage.base import ObjectStore, ordered_map


@dataclass
class Range:
    """One read: a ranged GET of a pack covering several chunks, or one loose chunk object."""

    key: str
    start: int
    end: int
    items: list[tuple[str, PackEntry | None, int | None]]  # (chunk id, where in the pack, plaintext size)
    pack_id: str | None = None


class Fetched(NamedTuple):
    """A chunk as read: its sealed blob, or (``sealed`` false) its plaintext cut from a frame."""

    cid: str
    size: int | None
    payload: bytes | memoryview | IntegrityError  # the error: its frame failed to open
    where: str
    sealed: bool = True
    codec: Codec | None = None  # of a frame slice: the key that opened its frame (re-hashes it)


class ChunkReader:
    """Reads and verifies chunks of one store (``directory`` None: a store of loose chunks only).

    ``codec_of`` says which key opens a sealed blob or frame: for a stream, the stream's key for
    every object (a blob sealed with any other key is refused: a manifest cannot pull in another
    tenant's chunks); for ``verify``, the key each object names.
    """

    def __init__(
        self,
        store: ObjectStore,
        codec_of: Callable[[bytes | memoryview], Codec],
        directory: PackDirectory | None,
        *,
        max_chunk: int,
        workers: int = 2,
        window: int = 8,
        read_workers: int = 3,
        read_ahead: int = 4,
    ) -> None:
        self.store = store
        self.codec_of = codec_of
        self.directory = directory
        self.max_chunk = max_chunk
        self.chunk_max = chunk_stored_max(max_chunk)  # a sealed chunk: what a loose chunk object may hold
        self.workers = workers
        self.window = window
        self.read_workers = max(1, read_workers)
        self.read_ahead = max(1, read_ahead)

    def read_stream(self, ref: StreamRef, keys: Keys) -> Iterator[bytes]:
        """Yield the stream's plaintext chunk by chunk, verified; raise ``IntegrityError`` before bad data.

        ``keys``: the stream's key, for the whole-stream hash (the reader's ``codec_of`` must open
        its chunks with that key alone)."""
        # a composed stream (write_parts) hashes its chunk list: each chunk was verified by its id
        composed = ref.hash.startswith(LIST_HASH)
        total = 0
        with SideHasher(keys.hasher()) as hasher:  # the consumer's thread does not wait on the hash
            try:
                for data in self.opened(ref.chunks):
                    if not composed:
                        hasher.update(data)
                    total += len(data)
                    yield data
            except NotFound as e:
                raise IntegrityError(f"a chunk of the stream is missing: {e}") from e
            digest = chunk_list_hash(keys.hasher(), ref.chunks) if composed else hasher.hexdigest()
        if total != ref.size or digest != ref.hash:
            raise IntegrityError("stream hash or size does not match its reference")

    def read_chunks(self, chunks: Sequence[tuple[str, int]]) -> Iterator[bytes]:
        """Yield the plaintext of ``chunks`` (a slice of a stream's list) in order, each verified against its id.

        For reading part of a stream (one object of a volume, one file of an archive): every chunk
        is authenticated and re-hashed, but there is no whole-stream hash to check.
        """
        try:
            yield from self.opened(chunks)
        except NotFound as e:
            raise IntegrityError(f"a chunk of the stream is missing: {e}") from e

    def opened(self, chunks: Sequence[tuple[str, int | None]]) -> Iterator[bytes]:
        """The verified plaintext of ``chunks`` in order; ``IntegrityError`` where the first bad one lies.

        A packed store's chunks are opened and re-hashed on the read worker that fetched their
        range (``fetch_opened``): one hand-over between threads per range, not a second pool and
        one future per chunk (thousands per GiB, each costing the consumer's thread time).
        """
        if self.directory is None:
            yield from ordered_map(self.open_fetched, self.blobs(chunks), workers=self.workers, window=self.window)
            return
        self.directory.ensure_loaded()
        ranges = self.ranges(chunks)
        for part in ordered_map(self.fetch_opened, ranges, workers=self.read_workers, window=self.read_ahead):
            for data in part:
                if isinstance(data, IntegrityError):
                    raise data  # the chunks before it in the range were good, and are yielded
                yield data

    def fetch_opened(self, r: Range) -> list[bytes | IntegrityError]:
        """Read one range and open every chunk in it: its plaintext, or why it cannot be read."""
        out: list[bytes | IntegrityError] = []
        for item in self.fetch(r):
            try:
                out.append(self.open_fetched(item))
            except IntegrityError as e:
                out.append(e)
                break  # nothing after a bad chunk is used
        return out

    def open_fetched(self, item: Fetched) -> bytes:
        """A fetched chunk's verified plaintext; ``IntegrityError`` naming the chunk and where it lies."""
        try:
            if isinstance(item.payload, IntegrityError):
                raise item.payload
            if item.sealed:
                return self.codec_of(item.payload).decode_chunk(item.cid, item.payload, item.size, self.max_chunk)
            assert item.codec is not None
            return item.codec.check_chunk(item.cid, bytes(item.payload), item.size)
        except IntegrityError as e:
            raise IntegrityError(f"{e}{item.where}") from e

    def blobs(self, chunks: Iterable[tuple[str, int | None]]) -> Iterator[Fetched]:
        """The chunks in input order, as read: loose objects, or ranges of packs (frames opened)."""
        if self.directory is None:
            items = list(chunks) if not isinstance(chunks, Sequence) else chunks
            blobs = self.store.get_many((chunk_key(cid) for cid, _ in items), max_size=self.chunk_max)
            for (cid, size), (_key, blob) in zip(items, blobs, strict=True):
                yield Fetched(cid, size, blob, "")
            return
        self.directory.ensure_loaded()
        for part in ordered_map(self.fetch, self.ranges(chunks), workers=self.read_workers, window=self.read_ahead):
            yield from part

    def ranges(self, chunks: Iterable[tuple[str, int | None]]) -> Iterator[Range]:
        """Coalesce the reads of consecutive chunks: one ranged GET per run of nearby chunks of a pack."""
        current: Range | None = None
        where = self.directory.where if self.directory is not None else {}
        for cid, size in chunks:
            loc = where.get(bytes.fromhex(cid))
            if loc is None:  # a loose chunk (or a missing one: its GET says NotFound)
                if current is not None:
                    yield current
                    current = None
                yield Range(chunk_key(cid), 0, 0, [(cid, None, size)])
                continue
            pid, entry = loc
            off, n = entry.offset, entry.length
            if (
                current is not None
                and current.pack_id == pid
                and (current.end <= off <= current.end + MAX_GAP or off + n == current.end)  # or: the same frame
                and off + n - current.start <= MAX_RANGE
            ):
                current.items.append((cid, entry, size))
                current.end = max(current.end, off + n)
            else:
                if current is not None:
                    yield current
                current = Range(pack_key(pid), off, off + n, [(cid, entry, size)], pid)
        if current is not None:
            yield current

    def fetch(self, r: Range) -> list[Fetched]:
        """Read one range; a frame is opened once for all its chunks in the range."""
        if r.pack_id is None:
            cid, _, size = r.items[0]
            return [Fetched(cid, size, self.store.get(r.key, max_size=self.chunk_max), "")]
        data = memoryview(self.store.get_range(r.key, r.start, r.end - r.start))
        frames: dict[int, tuple[bytes, Codec] | IntegrityError] = {}
        out: list[Fetched] = []
        for cid, entry, size in r.items:
            assert entry is not None
            off, n = entry.offset, entry.length
            blob = data[off - r.start : off - r.start + n]
            where = f" (in pack {r.pack_id} at offset {off})"
            if len(blob) != n:
                raise IntegrityError(f"chunk {cid}: pack {r.pack_id} is truncated at offset {off}")
            if not entry.in_frame:
                out.append(Fetched(cid, size, blob, where))
                continue
            if off not in frames:
                frames[off] = self._open_frame(r.pack_id, off, blob)
            opened = frames[off]
            if isinstance(opened, IntegrityError):
                out.append(Fetched(cid, size, opened, where, sealed=False))
                continue
            plain, codec = opened
            if entry.pos + entry.size > len(plain):
                problem = IntegrityError(f"chunk {cid}: beyond the end of its frame")
                out.append(Fetched(cid, size, problem, where, sealed=False))
            else:
                piece = memoryview(plain)[entry.pos : entry.pos + entry.size]
                size = size if size is not None else entry.size
                out.append(Fetched(cid, size, piece, where, sealed=False, codec=codec))
        return out

    def _open_frame(self, pack_id: str, offset: int, blob: bytes | memoryview) -> tuple[bytes, Codec] | IntegrityError:
        """A frame's plaintext and the codec that opened it, or the reason it cannot be read
        (every chunk in it is then unreadable)."""
        try:
            codec = self.codec_of(blob)
            return codec.decode(frame_name(pack_id, offset), blob, frame_plain_max(self.max_chunk)), codec
        except IntegrityError as e:
            return e

    def verify(
        self,
        wanted: list[str],
        present: set[str],
        *,
        read_data: bool,
        key_of: Mapping[str, str | None] | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> VerifyReport:
        """Which of ``wanted`` are missing from ``present`` and, with ``read_data``, which fail to read
        (``key_of``: chunk id -> the data key its stream names; a chunk sealed with another counts as
        corrupt, since a restore would refuse it; ``progress``: called with each chunk's size as read)."""
        report = VerifyReport(checked=len(wanted))
        report.missing = [cid for cid in wanted if cid not in present]
        if not read_data:
            return report
        have = [cid for cid in wanted if cid in present]
        where = self.directory.where if self.directory is not None else {}

        def place(cid: str) -> tuple[str, int]:  # pack order, then loose
            loc = where.get(bytes.fromhex(cid))
            return (loc[0], loc[1].offset) if loc else ("~", 0)

        have.sort(key=place)

        def check(item: Fetched) -> str | None:
            try:
                self.open_fetched(item)
            except IntegrityError:
                return item.cid
            if key_of is not None and item.cid in key_of:
                opened_with = item.codec.keys.key_id if item.codec is not None else _key_id(item.payload)
                if opened_with != key_of[item.cid]:
                    return item.cid
            return None

        def fetch(r: Range) -> list[Fetched]:
            try:
                return self.fetch(r)
            except NotFound:  # vanished since the listing
                report.missing.extend(cid for cid, _, _ in r.items)
            except IntegrityError:  # a truncated pack: every chunk of the range is bad
                report.corrupt.extend(cid for cid, _, _ in r.items)
            return []

        if self.directory is not None:
            ranges = self.ranges((cid, None) for cid in have)
            blobs: Iterator[Fetched] = (
                item
                for part in ordered_map(fetch, ranges, workers=self.read_workers, window=self.read_ahead)
                for item in part
            )
        else:
            blobs = (
                Fetched(key.rsplit("/", 1)[1], None, blob, "")
                for key, blob in self.store.get_many((chunk_key(c) for c in have), max_size=self.chunk_max)
            )
        if progress is not None:
            blobs = _reported(blobs, progress)
        for bad in ordered_map(check, blobs, workers=self.workers, window=self.window):
            if bad:
                report.corrupt.append(bad)
        return report


def _key_id(payload: bytes | memoryview | IntegrityError) -> str | None:
    return None if isinstance(payload, IntegrityError) else sealed_key_id(payload)


def _reported(items: Iterator[Fetched], progress: Callable[[int], None]) -> Iterator[Fetched]:
    """``items``, calling ``progress`` with each one's size as it is read."""
    for item in items:
        progress(0 if isinstance(item.payload, IntegrityError) else len(item.payload))
        yield item
