"""The in-memory index of a packed store: which pack (and where in it) holds each chunk.

Loaded with one listing of ``index/`` and of ``packs/``, then a GET per index not seen before
(pipelined: ``get_many``, each request with the store's deadline), unless the local
``IndexCache`` holds it (``drsvc.chunks.index_cache``: a cached index is opened and checked exactly
as a fetched one; one that fails is reported, dropped and fetched). Indexes are immutable, so what
was loaded stays and only new ones are fetched on a refresh; removed ones are forgotten. A chunk
stored in two packs (a run that re-packed it) is read from the first registered; when that pack
goes, the other takes over.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping

from drsvc.chunks.codec import Codec
from drsvc.chunks.index_cache import IndexCache
from drsvc.chunks.layout import INDEX_PREFIX, INDEX_STORED_MAX, PACKS_PREFIX, index_key, is_pack_id
from drsvc.chunks.pack import PackEntry, PackIndex, open_index
from drsvc.errors import IntegrityError, NotFound
from drsvc.log import event
from drsvc.storage.base import ObjectStore

log = logging.getLogger(__name__)

Location = tuple[str, PackEntry]  # (pack id, where in it)


class PackDirectory:
    """Pack indexes of one store, and chunk id -> location; thread-safe."""

    def __init__(
        self,
        store: ObjectStore,
        codec_of: Callable[[bytes | memoryview], Codec],
        max_chunk: int,
        cache: IndexCache | None = None,
    ) -> None:
        self.store = store
        self.cache = cache
        self.codec_of = codec_of  # an index is sealed with the key of its pack's chunks
        self.max_chunk = max_chunk
        self._packs: dict[str, PackIndex] = {}
        self._where: dict[bytes, Location] = {}  # chunk id (raw) -> location
        self._pack_objects: set[str] = set()  # pack ids whose pack object was listed (or written)
        self._loaded = False
        self._lock = threading.Lock()
        self._loading = threading.Lock()  # one first load at a time (a restore warms it up beside its plan)

    @property
    def where(self) -> Mapping[bytes, Location]:
        """Chunk id (raw bytes) -> location, as known now (a snapshot: ``forget`` replaces it)."""
        return self._where

    def ensure_loaded(self) -> None:
        """Load the indexes once (``refresh`` does it again); a second caller waits for the first's load."""
        if self._loaded:
            return
        with self._loading:
            if not self._loaded:
                self.refresh()

    def refresh(self) -> dict[str, PackIndex]:
        """Load new indexes, forget removed ones; the indexes whose pack object exists.

        An index without its pack counts as missing data (its chunks are not returned).
        """
        listed = {k[len(INDEX_PREFIX) :] for k in self.store.list(INDEX_PREFIX)}
        listed = {pid for pid in listed if is_pack_id(pid)}
        objects = set(self.list_pack_objects())
        self.forget(set(self._packs) - listed)
        new = sorted(listed - set(self._packs))
        fetch = [pid for pid in new if not self._from_cache(pid)]
        for key, blob in self.store.get_many((index_key(pid) for pid in fetch), max_size=INDEX_STORED_MAX):
            pid = key[len(INDEX_PREFIX) :]
            self.register(open_index(self.codec_of(blob), pid, blob, self.max_chunk))
            if self.cache is not None:
                self.cache.put(pid, blob)  # only once it opened: nothing unchecked is kept
        if self.cache is not None:
            self.cache.keep_only(listed)
        with self._lock:
            self._pack_objects = objects  # listed after the indexes: every listed index's pack is in it
            self._loaded = True
            return {pid: idx for pid, idx in self._packs.items() if pid in self._pack_objects}

    def _from_cache(self, pack_id: str) -> bool:
        """Register ``pack_id``'s index from the local cache, checked as a fetched one; False: fetch it."""
        blob = self.cache.get(pack_id) if self.cache is not None else None
        if blob is None or self.cache is None:
            return False
        try:
            self.register(open_index(self.codec_of(blob), pack_id, blob, self.max_chunk))
        except (IntegrityError, NotFound) as e:
            # Tampered, truncated, or another object's bytes: never trusted, fetched again.
            event(
                log,
                logging.WARNING,
                "chunks.index_cache",
                f"cached pack index {pack_id} in {self.cache.root} fails its check ({e}): fetched again",
                error=str(e),
            )
            self.cache.drop(pack_id)
            return False
        return True

    def list_pack_objects(self) -> Iterator[str]:
        """Yield the id of every pack object (one listing of ``packs/``; with or without an index)."""
        for key in self.store.list(PACKS_PREFIX):
            parts = key.split("/")
            if len(parts) == 3 and is_pack_id(parts[2]) and parts[1] == parts[2][:2]:
                yield parts[2]

    def members(self) -> dict[str, list[str]]:
        """Every pack object -> the chunk ids its index lists (empty: a pack without an index)."""
        self.refresh()
        with self._lock:
            members = {pid: idx.chunk_ids for pid, idx in self._packs.items()}
            members.update({pid: [] for pid in self._pack_objects if pid not in members})
        return members

    def locate(self, cid: str) -> Location | None:
        """Where chunk ``cid`` lies (None: in no known pack)."""
        self.ensure_loaded()
        return self._where.get(bytes.fromhex(cid))

    def has(self, raw: bytes) -> bool:
        """Whether a known pack holds the chunk of raw id ``raw``."""
        return raw in self._where

    def size_of(self, pack_id: str) -> int:
        """Stored size of a known pack."""
        return self._packs[pack_id].size

    def register(self, index: PackIndex) -> None:
        """Add a pack (just loaded, or just written) to what readers see."""
        with self._lock:
            self._packs[index.pack_id] = index
            self._pack_objects.add(index.pack_id)
            for entry in index.entries:
                self._where.setdefault(bytes.fromhex(entry.cid), (index.pack_id, entry))

    def forget(self, pack_ids: Iterable[str]) -> None:
        """Drop packs (deleted, or their index vanished); a duplicate of a chunk elsewhere takes over."""
        gone = set(pack_ids)
        if not gone:
            return
        with self._lock:
            for pid in gone:
                self._packs.pop(pid, None)
                self._pack_objects.discard(pid)
            self._where = {raw: loc for raw, loc in self._where.items() if loc[0] not in gone}
            for index in self._packs.values():
                for entry in index.entries:
                    self._where.setdefault(bytes.fromhex(entry.cid), (index.pack_id, entry))
