"""Writing streams as loose chunks: cut, dedup, compress, seal, store.

Dedup checks an in-memory set of chunk ids loaded once by a batched listing (loose chunks and, in
a packed store, pack indexes), never one request per chunk. Several threads may write streams at
once (a backup stores a batch of desktops together): a chunk another writer is still uploading
counts as stored only once that upload is acknowledged, so no stream ever refers to a chunk whose
write failed.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from drsvc import deadline
from drsvc.chunks.codec import Codec
from drsvc.chunks.cutter import Cutter, ObjectSegments, Source
from drsvc.chunks.layout import chunk_key
from drsvc.chunks.refs import StreamRef, WriteStats, chunk_list_hash
from drsvc.errors import BackendError, IntegrityError
from drsvc.storage.base import ObjectStore, ordered_map


@dataclass(frozen=True)
class Reuse:
    """A run of chunks of an earlier stream, taken as they are: their data is not read again.

    For ``ChunkStore.write_parts``: the run must start and end on the boundaries of what it stands
    for, its chunks keyed with the new stream's key, and every chunk stored (the write checks).
    """

    chunks: tuple[tuple[str, int], ...]


# A part of a composed stream: reused chunks, or objects ``(size, pieces)`` cut as write_objects cuts them
Part = Reuse | Iterable[tuple[int, Iterable[bytes]]]


class _Reused:
    """One reused chunk travelling through the encode pipeline in its place."""

    __slots__ = ("cid", "size")

    def __init__(self, cid: str, size: int) -> None:
        self.cid = cid
        self.size = size


class ChunkWriter:
    """Writes streams of one store, with any key; shared by the threads writing to it.

    One set of known ids serves every key: ids are keyed per tenant, so two tenants' ids meet only
    by a 256-bit collision.
    """

    def __init__(
        self,
        store: ObjectStore,
        list_ids: Callable[[], Iterable[str]],
        *,
        workers: int = 2,
        window: int = 8,
    ) -> None:
        self.store = store
        self.workers = workers
        self.window = window
        self.stats = WriteStats()  # everything this writer added
        self._list_ids = list_ids
        self._known: set[bytes] | None = None
        self._inflight: dict[bytes, threading.Event] = {}  # chunk ids some writer is uploading now
        self.lock = threading.Lock()

    def known(self) -> set[bytes]:
        """The ids (raw) of every chunk stored, loaded by one listing on first use."""
        with self.lock:  # concurrent writers must share one set
            if self._known is None:
                self._known = {bytes.fromhex(cid) for cid in self._list_ids()}
            return self._known

    def forget(self, cid: str) -> None:
        """A chunk was deleted: the next stream that holds it stores it again."""
        if self._known is not None:
            self._known.discard(bytes.fromhex(cid))

    def reset(self) -> None:
        """Chunks went away in bulk (packs deleted): list again on next use."""
        self._known = None

    def write(self, segments: Iterable[Source], codec: Codec, cutter: Cutter, *, list_hash: bool = False) -> StreamRef:
        """Store the chunks of ``segments`` cut by ``cutter``, sealed by ``codec``; the ``StreamRef``
        once every new chunk is durably written.

        ``list_hash``: the stream's hash is its chunk list's (``chunk_list_hash``) instead of the
        whole plaintext's, which saves hashing every byte a second time beside its chunk id.
        """
        one = _StreamWrite(self, self.known(), codec, cutter, hash_data=not list_hash)
        self._store(one, one.items(segments))
        digest = chunk_list_hash(codec.keys.hasher(), one.entries) if list_hash else one.hasher.hexdigest()
        return StreamRef(one.entries, one.stats.bytes_in, digest, one.stats, codec.keys.key_id)

    def write_parts(self, parts: Iterable[Part], codec: Codec, cutter: Cutter, align: int) -> StreamRef:
        """A stream made of reused chunk runs and new objects, in order (see ``Reuse``).

        New objects are cut as ``write_objects`` cuts them (``align``), each run of them starting on
        a chunk boundary. The stream's hash is its chunk list's (``chunk_list_hash``).
        """
        one = _StreamWrite(self, self.known(), codec, cutter)
        self._store(one, one.items_of_parts(parts, align))
        digest = chunk_list_hash(codec.keys.hasher(), one.entries)
        return StreamRef(one.entries, one.stats.bytes_in, digest, one.stats, codec.keys.key_id)

    def _store(self, one: _StreamWrite, items: Iterable[tuple[str, bytes]]) -> None:
        """Upload one stream's new chunks, settle what it borrowed or claimed, count its stats."""
        ok = False  # not sys.exc_info(): a caller's own except clause would show up there
        try:
            self.store.put_many(items)
            ok = True
        finally:
            one.settle(ok)
        one.wait_borrowed()
        with self.lock:
            self.stats.add(one.stats)

    def claim(self, raw: bytes) -> threading.Event | None:
        """Under ``lock``: claim the upload of a new chunk (None), or the event of the writer that has it."""
        other = self._inflight.get(raw)
        if other is None:
            self._inflight[raw] = threading.Event()
        return other

    def release(self, raw: bytes) -> None:
        """Under ``lock``: the upload of a claimed chunk is over (done or failed)."""
        self._inflight.pop(raw).set()


class _StreamWrite:
    """The state of one stream being written: its chunk list, hash, stats, and the uploads it owns."""

    def __init__(
        self, writer: ChunkWriter, known: set[bytes], codec: Codec, cutter: Cutter, *, hash_data: bool = True
    ) -> None:
        self.writer = writer
        self.hash_data = hash_data  # False: the stream's hash is its chunk list's, taken at the end
        self.known = known
        self.codec = codec
        self.cutter = cutter
        self.stats = WriteStats()
        self.hasher = codec.keys.hasher()
        self.entries: list[tuple[str, int]] = []
        self.mine: list[bytes] = []  # ids this stream uploads
        self.borrowed: list[tuple[str, threading.Event]] = []  # ids another writer is uploading

    def _pieces(self, segments: Iterable[Source]) -> Iterator[memoryview]:
        for piece in self.cutter.cut(segments):
            deadline.check()  # the writing thread's (a desktop's capture): a huge stream takes its time
            if self.hash_data:
                self.hasher.update(piece)
            self.stats.bytes_in += len(piece)
            yield piece

    def _encode(self, piece: memoryview | _Reused) -> tuple[str, int, bytes | None]:
        """(id, size, sealed blob or None when the chunk is stored already); on a worker."""
        if isinstance(piece, _Reused):
            return piece.cid, piece.size, None
        cid = self.codec.keys.chunk_id(piece)
        if bytes.fromhex(cid) in self.known:
            return cid, len(piece), None
        return cid, len(piece), self.codec.encode(chunk_key(cid), piece)

    def _part_pieces(self, parts: Iterable[Part], align: int) -> Iterator[memoryview | _Reused]:
        """The chunks of a composed stream in order: reused ones as markers, new ones cut (not hashed)."""
        for part in parts:
            if isinstance(part, Reuse):
                for cid, size in part.chunks:
                    if bytes.fromhex(cid) not in self.known:
                        raise IntegrityError(f"chunk {cid} to be reused is not in the store")
                    self.stats.bytes_in += size
                    yield _Reused(cid, size)
                continue
            for piece in self.cutter.cut(ObjectSegments(part, align)):
                deadline.check()
                self.stats.bytes_in += len(piece)
                yield piece

    def items_of_parts(self, parts: Iterable[Part], align: int) -> Iterator[tuple[str, bytes]]:
        """``items`` of a composed stream (``ChunkWriter.write_parts``)."""
        return self._upload(self._part_pieces(parts, align))

    def items(self, segments: Iterable[Source]) -> Iterator[tuple[str, bytes]]:
        """``(key, blob)`` of each chunk this stream must upload, in order."""
        return self._upload(self._pieces(segments))

    def _upload(self, pieces: Iterable[memoryview | _Reused]) -> Iterator[tuple[str, bytes]]:
        w = self.writer

        # a reused chunk is only a marker: no hand-off to a worker (an unchanged 1 GiB volume has thousands)
        def reused(piece: memoryview | _Reused) -> bool:
            return isinstance(piece, _Reused)

        for cid, size, blob in ordered_map(self._encode, pieces, workers=w.workers, window=w.window, inline=reused):
            self.entries.append((cid, size))
            self.stats.chunks_total += 1
            raw = bytes.fromhex(cid)
            with w.lock:
                if raw in self.known:  # stored, or a duplicate earlier in this stream
                    continue
                other = w.claim(raw)
                if other is not None:
                    self.borrowed.append((cid, other))
                    continue
                self.mine.append(raw)
            assert blob is not None  # _encode skips only ids already in `known`, which only grows
            self.stats.chunks_new += 1
            self.stats.bytes_new_stored += len(blob)
            yield chunk_key(cid), blob

    def settle(self, ok: bool) -> None:
        """The uploads of this stream are over: known if they succeeded, released either way."""
        with self.writer.lock:
            for raw in self.mine:
                if ok:
                    self.known.add(raw)
                self.writer.release(raw)

    def wait_borrowed(self) -> None:
        """Wait for the chunks other writers were uploading; fail if one of those uploads failed."""
        for cid, done in self.borrowed:
            done.wait()
            if bytes.fromhex(cid) not in self.known:
                raise BackendError(f"chunk {cid}: a concurrent writer's upload failed; this stream is incomplete")
