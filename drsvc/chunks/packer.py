"""Writing packs: sealed chunk blobs in, packs and their indexes out (the format is in ``pack``).

``PackWriter`` holds what the steps of one ``write_packs`` call share -- the pack being filled, the
buffers, the uploads in flight -- so each step is a named method that reads top to bottom:

1. ``_fresh``: drop chunks already in a pack (or repeated in the input);
2. ``_opened`` (on ``workers`` threads, in order): authenticate each blob, and decompress it when
   it is compressible and ``recompress`` is on (a corrupt blob raises ``CorruptChunk``: nothing bad
   becomes a packed copy);
3. ``_units``: group runs of compressible chunks into frames (``FRAME_SIZE``/``FRAME_MAX``, objects
   kept whole where ``object_of`` says which object a chunk lies within); an incompressible chunk
   -- every chunk when ``recompress`` is off -- is a blob packed verbatim, and ends the run;
4. ``_compressed`` (on ``workers`` threads): compress each frame;
5. ``_add``: seal a frame for its place, copy it (or the blob) into the pack buffer;
6. ``_flush``/``_upload``/``_reap``: a full pack is uploaded on ``upload_workers`` threads while the
   next fills, then its index: a pack is visible once its index is.

Packs are assembled in ``upload_workers + 1`` buffers of ``pack_size`` bytes, allocated once and
reused (a fresh 16 MiB buffer per pack costs a page fault per 4 KiB, more than the copy itself),
and handed to ``store.put`` as views, so memory stays under ``(upload_workers + 1) * pack_size``
plus the frames in flight (a single blob larger than ``pack_size`` gets a buffer of its own). On an
error the packs already sent finish (and count), then the error is raised.
"""

from __future__ import annotations

import collections
import secrets
from collections.abc import Hashable, Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime

from drsvc.chunks.codec import CODEC_ZSTD, Codec
from drsvc.chunks.index import PackDirectory
from drsvc.chunks.layout import FRAME_MAX, FRAME_SIZE, chunk_key, frame_name, index_key, object_aad, pack_key
from drsvc.chunks.pack import Frame, PackEntry, PackIndex, seal_index
from drsvc.errors import CorruptChunk, IntegrityError
from drsvc.storage.base import ObjectStore, ordered_map

_Blob = tuple[str, bytes]  # (chunk id, sealed blob as a loose chunk object holds it)
_Unit = _Blob | list[tuple[str, bytes]]  # a verbatim blob, or a run of compressible chunks (id, plaintext)


class PackWriter:
    """One batch of chunks into packs; create, call ``write`` once."""

    def __init__(
        self,
        store: ObjectStore,
        codec: Codec,
        directory: PackDirectory,
        *,
        pack_size: int,
        max_chunk: int,
        workers: int = 2,
        window: int = 8,
        upload_workers: int = 4,
        storage_class: str | None = None,
        retain_until: datetime | None = None,
        object_of: Mapping[str, Hashable] | None = None,
        recompress: bool = True,
    ) -> None:
        self.store = store
        self.codec = codec
        self.directory = directory
        self.pack_size = pack_size
        self.max_chunk = max_chunk
        self.workers = workers
        self.window = window
        self.upload_workers = max(1, upload_workers)
        self.storage_class = storage_class
        self.retain_until = retain_until
        self.objects: Mapping[str, Hashable] = object_of or {}
        self.recompress = recompress  # False: every chunk packed as the hot tier holds it (no zstd here at all)
        self.written: list[PackIndex] = []
        self._seen: set[bytes] = set()
        self._pool = ThreadPoolExecutor(max_workers=self.upload_workers, thread_name_prefix="drsvc-pack")
        self._inflight: collections.deque[Future[PackIndex]] = collections.deque()
        self._buffers: dict[Future[PackIndex], bytearray] = {}  # the buffer each upload reads
        self._spare: list[bytearray] = []  # buffers whose upload finished; at most upload_workers + 1 exist
        self._buf = bytearray(pack_size)
        self._pack_id = secrets.token_hex(16)
        self._fill = 0
        self._entries: list[PackEntry] = []

    def write(self, blobs: Iterable[_Blob]) -> list[PackIndex]:
        """Pack ``blobs`` (see ``ChunkStore.write_packs``); the indexes of the packs written."""
        try:
            units = self._units(ordered_map(self._opened, self._fresh(blobs), workers=self.workers, window=self.window))
            for unit in ordered_map(self._compressed, units, workers=self.workers, window=self.window):
                self._add(unit)
            self._flush()
            while self._inflight:
                self._reap()
        finally:
            # On an error, let what was already sent finish (its index lands, or the pack is an orphan).
            self._pool.shutdown(wait=True, cancel_futures=True)
        return self.written

    # ------------------------------------------------------------ input side

    def _fresh(self, blobs: Iterable[_Blob]) -> Iterator[_Blob]:
        for cid, blob in blobs:
            raw = bytes.fromhex(cid)
            if raw not in self._seen and not self.directory.has(raw):
                self._seen.add(raw)
                yield cid, blob

    def _opened(self, item: _Blob) -> tuple[str, bytes, bytes | None]:
        """(id, blob, plaintext if the chunk goes into a frame): authenticated, on a worker."""
        cid, blob = item
        key = chunk_key(cid)
        try:
            plain = self.codec.keys.verify(blob, object_aad(key))  # a scratch view, valid until this thread's next call
        except IntegrityError as e:
            raise CorruptChunk(cid, str(e)) from e
        if self.recompress and len(plain) and plain[0] == CODEC_ZSTD:
            return cid, blob, self.codec.uncompress(key, plain, self.max_chunk)
        return cid, blob, None

    def _units(self, opened: Iterable[tuple[str, bytes, bytes | None]]) -> Iterator[_Unit]:
        """A verbatim blob ``(id, blob)``, or a run of compressible chunks ``[(id, plaintext), ...]``."""
        run: list[tuple[str, bytes]] = []
        fill = 0
        last: Hashable | None = None  # the object the run's last chunk lies within
        for cid, blob, plain in opened:
            if plain is None:
                if run:
                    yield run
                    run, fill = [], 0
                yield cid, blob
                continue
            within = self.objects.get(cid)
            same = within is not None and within == last
            if run and (fill >= FRAME_MAX or (fill >= FRAME_SIZE and not same)):
                yield run
                run, fill = [], 0
            run.append((cid, plain))
            fill += len(plain)
            last = within
        if run:
            yield run

    def _compressed(self, unit: _Unit) -> _Blob | Frame:
        if isinstance(unit, tuple):
            return unit
        members, pos = [], 0
        for cid, plain in unit:
            members.append((cid, pos, len(plain)))
            pos += len(plain)
        return Frame(members, self.codec.compress(b"".join(plain for _, plain in unit)))

    # ------------------------------------------------------------ the pack being filled

    def _add(self, unit: _Blob | Frame) -> None:
        """Append a frame (sealed here, for its place) or a verbatim blob to the current pack."""
        if isinstance(unit, Frame):
            self._place(len(unit.body) + self.codec.keys.overhead)
            blob = self.codec.keys.seal(unit.body, object_aad(frame_name(self._pack_id, self._fill)))
            self._entries.extend(PackEntry(cid, self._fill, len(blob), pos, size) for cid, pos, size in unit.members)
        else:
            cid, blob = unit
            self._place(len(blob))
            self._entries.append(PackEntry(cid, self._fill, len(blob)))
        self._buf[self._fill : self._fill + len(blob)] = blob
        self._fill += len(blob)

    def _place(self, n: int) -> None:
        """Make room for ``n`` bytes at the fill mark: the next pack if this one is full."""
        if self._entries and self._fill + n > self.pack_size:
            self._flush()
        if n > len(self._buf):  # one blob larger than a pack: a buffer of its own
            self._buf = bytearray(n)

    def _flush(self) -> None:
        """Send the current pack (if it holds anything) and start the next in a spare buffer."""
        if not self._entries:
            return
        while len(self._inflight) >= self.upload_workers:
            self._reap()
        index = PackIndex(self._pack_id, self._fill, tuple(self._entries))
        future = self._pool.submit(self._upload, index, self._buf)
        self._buffers[future] = self._buf
        self._inflight.append(future)
        self._buf = self._spare.pop() if self._spare else bytearray(self.pack_size)
        self._pack_id, self._fill, self._entries = secrets.token_hex(16), 0, []

    # ------------------------------------------------------------ uploads

    def _upload(self, index: PackIndex, buffer: bytearray) -> PackIndex:
        """The pack, then its index (the commit record); on an upload thread."""
        data = memoryview(buffer)[: index.size]  # store.put copies or sends it, keeping no reference
        self.store.put(
            pack_key(index.pack_id),
            data,  # type: ignore[arg-type]
            storage_class=self.storage_class,
            retain_until=self.retain_until,
        )
        self.store.put(index_key(index.pack_id), seal_index(self.codec, index), retain_until=self.retain_until)
        self.directory.register(index)
        return index

    def _reap(self) -> None:
        """Wait for the oldest upload; its buffer becomes a spare (unless it was an oversized one)."""
        future = self._inflight.popleft()
        buffer = self._buffers.pop(future)
        self.written.append(future.result())
        if len(buffer) == self.pack_size:
            self._spare.append(buffer)
