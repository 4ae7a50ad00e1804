"""``ChunkStore``: the one object callers use -- a thin facade over the cutter, codec, writer,
reader, pack writer, pack directory and manifests of one store (each in its own module)."""

from __future__ import annotations

import copy
import io
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any, BinaryIO, Literal

from drsvc.chunks.codec import Codec
from drsvc.chunks.config import ConfigFile
from drsvc.chunks.cutter import ChunkerParams, ObjectSegments, Source
from drsvc.chunks.index import PackDirectory
from drsvc.chunks.index_cache import IndexCache
from drsvc.chunks.keyring import Keyring
from drsvc.chunks.layout import BLOCK_SIZE, CHUNKS_PREFIX, chunk_key, chunk_stored_max, index_key, is_id, pack_key
from drsvc.chunks.manifests import Manifests
from drsvc.chunks.pack import PackIndex
from drsvc.chunks.packer import PackWriter
from drsvc.chunks.reader import ChunkReader
from drsvc.chunks.refs import StreamRef, VerifyReport, WriteStats
from drsvc.chunks.writer import ChunkWriter, Part
from drsvc.crypto import Keys
from drsvc.errors import InvalidInput
from drsvc.kms import FileKeyProvider, KeyProvider
from drsvc.storage.base import ObjectStore
from drsvc.streams import IterReader

Scope = Literal["tenant", "fleet"]


class ChunkStore:
    """Chunks, manifests, config and data keys of one store; create with ``init`` or ``open``.

    A store object writes with one key (``write_keys``: the fleet key unless it is a tenant's view,
    ``for_tenant``) and reads with whichever key each object names (``drsvc.chunks.keyring``).
    """

    def __init__(
        self,
        store: ObjectStore,
        keys: Keys | KeyProvider,
        params: ChunkerParams,
        *,
        level: int = 3,
        recompress: bool = True,
        workers: int = 2,
        window: int = 8,
        block_size: int = BLOCK_SIZE,
        pack_size: int | None = None,
        upload_workers: int = 4,
        read_workers: int = 3,
        read_ahead: int = 4,
        scope: Scope = "tenant",
        config: ConfigFile | None = None,
        index_cache: IndexCache | None = None,
    ) -> None:
        provider = _provider(keys)
        self.store = store
        self.keys = provider.fleet_keys()  # the store's own objects (config) and the fleet scope
        self.params = params
        self.level = level
        self.recompress = recompress  # write_packs: frames of compressible chunks at ``level``, or every chunk verbatim
        self.workers = workers
        self.window = window
        self.pack_size = pack_size
        self.upload_workers = max(1, upload_workers)
        self.read_workers = max(1, read_workers)
        self.read_ahead = max(1, read_ahead)
        if scope not in ("tenant", "fleet"):
            raise InvalidInput(f"keys scope {scope!r}: expected tenant or fleet")
        self.scope = scope
        self.config = config  # None: a store object made without one (tests); nothing is upgraded then
        self.keyring = Keyring(store, provider, params, level=level)
        self._block_size = block_size
        self.packs = PackDirectory(store, self.keyring.codec_of, params.max_size, index_cache)
        self.manifests = Manifests(store, self.keyring.codec_of)
        self.writer = ChunkWriter(store, self.list_chunk_ids, workers=workers, window=window)
        self._use(self.keys)

    def _use(self, keys: Keys) -> None:
        self.write_keys = keys
        self.codec = self.keyring.codec(keys)
        self.cutter = self.keyring.cutter(keys, self._block_size)

    # ---------------------------------------------------------------- keys

    def keyed(self, keys: Keys) -> ChunkStore:
        """This store, writing with ``keys`` (sharing everything else: caches, dedup set, stats)."""
        if keys is self.write_keys:
            return self
        view = copy.copy(self)
        view._use(keys)
        return view

    def key_for(self, tenant: str | None) -> Keys:
        """The key a tenant's new points use: its current data key (made on first use), or the
        fleet key in the fleet scope and for desktops without a tenant."""
        if self.scope == "fleet" or not tenant:
            return self.keys
        return self.keyring.current(tenant)

    def for_tenant(self, tenant: str | None) -> ChunkStore:
        """This store, writing with ``key_for(tenant)``."""
        return self.keyed(self.key_for(tenant))

    def manifest_keys(self, blob: bytes) -> Keys:
        """The key a sealed manifest (as ``get_sealed_manifest`` returns it) is sealed with."""
        return self.keyring.keys_of(blob)

    @property
    def stats(self) -> WriteStats:
        """What this store object wrote (all streams together)."""
        return self.writer.stats

    @property
    def block_size(self) -> int:
        """Read size of ``write_stream``."""
        return self.cutter.block_size

    # ---------------------------------------------------------------- config

    @classmethod
    def init(
        cls,
        store: ObjectStore,
        key: Keys | KeyProvider | bytes,
        *,
        params: ChunkerParams | None = None,
        **options: Any,
    ) -> ChunkStore:
        """Create a new chunk store (writes ``config``); refuse if one exists there."""
        provider = _provider(key)
        params = params or ChunkerParams()
        config = ConfigFile.create(store, provider.fleet_keys(), params, options.get("pack_size"))
        return cls(store, provider, params, config=config, **options)

    @classmethod
    def open(cls, store: ObjectStore, key: Keys | KeyProvider | bytes, **options: Any) -> ChunkStore:
        """Open an existing chunk store, checking format version and that ``key`` is its key."""
        provider = _provider(key)
        config = ConfigFile.read(store, provider.fleet_keys())
        if config.pack_size and not options.get("pack_size"):
            # A store that holds packs is read as one whatever the caller asked for.
            options["pack_size"] = config.pack_size
        return cls(store, provider, config.params, config=config, **options)

    def check_takes_chunks_of(self, source: ChunkStore) -> None:
        """``InvalidInput`` unless every chunk ``source`` may hold lies within what this store's
        readers accept (its ``max_size``): chunks are copied as they were cut (tiering), never
        cut again, and a larger one would be stored where no reader of this store opens it."""
        if source.params.max_size > self.params.max_size:
            raise InvalidInput(
                f"{self.store.url} takes chunks up to {self.params.max_size // 1024} KiB (made for "
                f"{self.params.avg_kib} KiB chunks); {source.store.url} cuts chunks up to "
                f"{source.params.max_size // 1024} KiB ({source.params.avg_kib} KiB on average): tier into a "
                "new cold store (created with the hot store's chunk size)"
            )

    def _before_write(self, pack_size: int | None = None) -> None:
        """A store written before its config was sealed is sealed by its first write (see ``config``)."""
        if self.config is not None:
            self.config.ensure_sealed(pack_size)

    # ---------------------------------------------------------------- streams

    def write_stream(self, source: Source) -> StreamRef:
        """Chunk, dedup, compress, seal and store a stream (file object or iterable of bytes).

        Memory stays bounded (one block, the carried tail and a small window of chunks in flight).
        Returns the ``StreamRef`` once every new chunk is durably written; ``ref.stats`` reports dedup.
        """
        self._before_write()
        return self.writer.write([source], self.codec, self.cutter)

    def write_objects(self, objects: Iterable[tuple[int, Iterable[bytes]]]) -> StreamRef:
        """``write_stream`` of objects back to back, given as ``(size, pieces)`` and read in order.

        Every object of at least ``avg_size`` bytes starts and ends a chunk; smaller objects between
        two such are chunked together (no tiny chunks). So a large object's chunks do not depend on
        its neighbours: desktops cloned from one image dedup the image's objects whatever their own
        objects beside them, as a file-aware backup tool dedups files. ``size`` only places cuts.
        The stream's hash is its chunk list's (``chunk_list_hash``), as for ``write_parts``: every
        byte is hashed once, into its chunk's id, which every read checks.
        """
        self._before_write()
        segments = ObjectSegments(objects, self.params.avg_size)
        return self.writer.write(segments, self.codec, self.cutter, list_hash=True)

    def write_parts(self, parts: Iterable[Part]) -> StreamRef:
        """A volume stream made of chunk runs reused from an earlier stream (``Reuse``) and new objects.

        New objects are cut exactly as ``write_objects`` cuts them; reused runs are taken as they
        are, unread (each must be stored: see ``missing``). Incremental capture uses it.
        """
        self._before_write()
        return self.writer.write_parts(parts, self.codec, self.cutter, self.params.avg_size)

    def missing(self, ids: Iterable[str]) -> set[str]:
        """Of ``ids``, those not stored (the writer's listing of stored chunks: no request per id)."""
        known = self.writer.known()
        return {cid for cid in ids if bytes.fromhex(cid) not in known}

    def write_bytes(self, data: bytes) -> StreamRef:
        """``write_stream`` of one in-memory buffer."""
        return self.write_stream(data)

    def _reader(self, codec: Codec | None = None) -> ChunkReader:
        """A reader opening everything with ``codec``, or (None) with the key each object names."""
        return ChunkReader(
            self.store,
            (lambda _blob: codec) if codec is not None else self.keyring.codec_of,
            self.packs if self.pack_size else None,
            max_chunk=self.params.max_size,
            workers=self.workers,
            window=self.window,
            read_workers=self.read_workers,
            read_ahead=self.read_ahead,
        )

    def read_stream(self, ref: StreamRef) -> Iterator[bytes]:
        """Yield the stream's plaintext chunk by chunk, verified; raise ``IntegrityError`` before bad data.

        Every chunk must open with the stream's own key (``ref.key_id``), which ``get_manifest``
        checked is the manifest's."""
        keys = self.keyring.keys(ref.key_id)
        return self._reader(self.keyring.codec(keys)).read_stream(ref, keys)

    def read_chunks(self, chunks: Sequence[tuple[str, int]], *, key_id: str | None = None) -> Iterator[bytes]:
        """Yield a slice of a stream's chunks (``StreamRef.chunks[i:j]``), each verified; no whole-stream
        hash. ``key_id``: the stream's (``StreamRef.key_id``); its chunks open with that key alone."""
        return self._reader(self.keyring.codec(self.keyring.keys(key_id))).read_chunks(chunks)

    def open_stream(self, ref: StreamRef) -> BinaryIO:
        """``read_stream`` as a file object (for APIs that read a body, e.g. a runtime restore)."""
        return io.BufferedReader(IterReader(self.read_stream(ref)), buffer_size=1 << 20)

    def read_bytes(self, ref: StreamRef) -> bytes:
        """The whole stream in memory (small streams, tests)."""
        return b"".join(self.read_stream(ref))

    def verify_chunks(
        self,
        ids: Iterable[str],
        *,
        read_data: bool = False,
        key_of: Mapping[str, str | None] | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> VerifyReport:
        """Check chunks exist (batched listings) and, with ``read_data``, decrypt and re-hash each.

        A packed chunk exists when an index lists it and its pack object is in the listing of
        ``packs/``; reading goes pack by pack in offset order, many chunks per ranged GET. Each
        chunk opens with the key it names; ``key_of`` (chunk id -> ``StreamRef.key_id``) also
        requires that key to be its stream's. ``progress`` is called with the stored size of each
        chunk read.
        """
        wanted = list(dict.fromkeys(ids))
        present = set(self.list_chunk_ids())
        return self._reader().verify(wanted, present, read_data=read_data, key_of=key_of, progress=progress)

    # ---------------------------------------------------------------- packs

    def refresh_packs(self) -> dict[str, PackIndex]:
        """Load the pack indexes (one listing of ``index/`` and ``packs/``, a GET per *new* index);
        the indexes whose pack object exists. Empty for a store of loose chunks."""
        return self.packs.refresh() if self.pack_size else {}

    def list_pack_objects(self) -> Iterator[str]:
        """Yield the id of every pack object (one listing of ``packs/``; with or without an index)."""
        return self.packs.list_pack_objects()

    def pack_members(self) -> dict[str, list[str]]:
        """Every pack object -> the chunk ids its index lists (empty: a pack without an index)."""
        return self.packs.members() if self.pack_size else {}

    def pack_of(self, cid: str) -> str | None:
        """The pack a chunk is read from (None: a loose chunk, or unknown)."""
        loc = self.packs.locate(cid) if self.pack_size else None
        return loc[0] if loc else None

    def pack_size_of(self, pack_id: str) -> int:
        """Stored size of a known pack."""
        return self.packs.size_of(pack_id)

    def write_packs(
        self,
        blobs: Iterable[tuple[str, bytes]],
        *,
        storage_class: str | None = None,
        retain_until: datetime | None = None,
        object_of: Mapping[str, Hashable] | None = None,
    ) -> list[PackIndex]:
        """Store chunks, given as sealed blobs (``(chunk id, blob)``, as a loose chunk object holds them), in packs.

        Every blob is authenticated first: a corrupt one raises ``CorruptChunk`` naming the chunk,
        so nothing bad becomes a packed copy. Blobs already in a pack (or repeated in ``blobs``)
        are skipped. An incompressible chunk is packed verbatim (no re-encryption); runs of
        compressible chunks are compressed again together as *frames* (``drsvc.chunks.pack``) at
        the store's ``level`` -- or, for a store opened with ``recompress=False``, packed verbatim
        too, as the loose chunk object holds them (no zstd at all; a larger store, see ``[cold]``).
        ``object_of`` maps chunk ids to the object (file, RADOS object) they lie within, any
        hashable token: a frame past ``FRAME_SIZE`` still takes the next chunk while it belongs to
        the same object as the last, up to ``FRAME_MAX``. Each pack is stored with
        ``storage_class`` and ``retain_until``, then its index (default class, same retention): a
        pack is visible once its index is. How, and in how much memory: ``drsvc.chunks.packer``.
        """
        if not self.pack_size:
            raise InvalidInput(f"{self.store.url}: not a packed chunk store")
        self.packs.ensure_loaded()
        self._before_write(self.pack_size)
        writer = PackWriter(
            self.store,
            self.codec,
            self.packs,
            pack_size=self.pack_size,
            max_chunk=self.params.max_size,
            workers=self.workers,
            window=self.window,
            upload_workers=self.upload_workers,
            storage_class=storage_class,
            retain_until=retain_until,
            object_of=object_of,
            recompress=self.recompress,
        )
        return writer.write(blobs)

    def sealed_chunks(self, ids: Iterable[str]) -> Iterator[tuple[str, bytes]]:
        """``(id, sealed blob)`` of loose chunks, pipelined, in input order, as stored (not yet
        authenticated: ``write_packs`` does that); an object larger than a chunk is refused unread."""
        keys = (chunk_key(cid) for cid in ids)
        for key, blob in self.store.get_many(keys, max_size=chunk_stored_max(self.params.max_size)):
            yield key.rsplit("/", 1)[1], blob

    def delete_packs(self, pack_ids: Iterable[str]) -> int:
        """Delete packs: their indexes first (readers stop seeing them), then the packs; return the count."""
        ids = sorted(set(pack_ids))
        self.store.delete_many(index_key(pid) for pid in ids)
        self.packs.forget(ids)
        self.writer.reset()
        self.store.delete_many(pack_key(pid) for pid in ids)
        return len(ids)

    # ---------------------------------------------------------------- manifests

    def put_manifest(self, desktop: str, point_id: str, doc: dict[str, Any]) -> None:
        """Store a point's manifest (call after its streams are written: ``write_stream`` returns then)."""
        self._before_write()
        self.manifests.put(desktop, point_id, doc, self.codec)

    def get_manifest(self, desktop: str, point_id: str) -> dict[str, Any]:
        """Read and authenticate a manifest; ``NotFound`` if absent, ``IntegrityError`` if tampered."""
        return self.manifests.get_sealed(desktop, point_id)[0]

    def get_sealed_manifest(self, desktop: str, point_id: str) -> tuple[dict[str, Any], bytes]:
        """``get_manifest``, and the sealed object as stored (one read, for a verbatim copy)."""
        return self.manifests.get_sealed(desktop, point_id)

    def list_manifests(self, desktop: str | None = None) -> Iterator[tuple[str, str]]:
        """Yield ``(desktop, point_id)`` of every manifest (of one desktop if given)."""
        return self.manifests.list(desktop)

    def delete_manifest(self, desktop: str, point_id: str) -> None:
        """Remove a manifest (its chunks stay until garbage collection)."""
        self.manifests.delete(desktop, point_id)

    # ---------------------------------------------------------------- garbage collection

    def list_chunk_ids(self) -> Iterator[str]:
        """Yield the id of every stored chunk: loose (one listing) and, in a packed store, packed (indexes)."""
        seen: set[str] = set()
        for cid in self.list_loose_chunk_ids():
            seen.add(cid)
            yield cid
        for index in self.refresh_packs().values():
            for cid in index.chunk_ids:
                if cid not in seen:
                    seen.add(cid)
                    yield cid

    def list_loose_chunk_ids(self) -> Iterator[str]:
        """Yield the id of every chunk stored as its own object (one batched listing)."""
        for key in self.store.list(CHUNKS_PREFIX):
            parts = key.split("/")
            if len(parts) == 3 and is_id(parts[2]) and parts[1] == parts[2][:2]:
                yield parts[2]

    def delete_chunks(self, ids: Iterable[str]) -> int:
        """Delete loose chunks (pipelined; packed ones go with their pack); return how many ids were processed."""

        def keys() -> Iterator[str]:
            for cid in ids:
                self.writer.forget(cid)
                yield chunk_key(cid)

        return self.store.delete_many(keys())


def _provider(key: Keys | KeyProvider | bytes) -> KeyProvider:
    """What a store is opened with: a provider, or a master key (the file provider's)."""
    if isinstance(key, bytes):
        key = Keys(key)
    return FileKeyProvider(key) if isinstance(key, Keys) else key
