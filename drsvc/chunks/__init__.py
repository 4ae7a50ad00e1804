"""The chunk store: content-defined chunks, dedup, zstd, AEAD and manifests on any ``ObjectStore``.

A package of small modules, one concern each (restic keeps chunker, pack, index and repository
apart the same way); callers use ``ChunkStore`` and the names re-exported here:

- ``layout``: object keys, associated data, the sizes the format fixes (start here for the layout);
- ``cutter``: FastCDC with a keyed gear table, block by block, objects aligned to chunk boundaries;
- ``codec``: codec byte + zstd, AES-256-GCM sealing bound to the object key, chunk re-hashing;
- ``refs``: ``StreamRef`` (a stored stream, as manifests hold it), ``WriteStats``, ``VerifyReport``;
- ``writer``: streams to loose chunks, dedup against one listing, concurrent writers; streams
  composed of reused chunk runs and new objects (incremental capture);
- ``pack``: the pack format (blobs and frames) and its index object;
- ``index``: the in-memory pack directory (chunk id -> pack and offset);
- ``packer``: ``PackWriter``, sealed blobs into packs and indexes (the cold tier);
- ``reader``: reads by coalesced ranged GETs, verification;
- ``manifests``: one sealed document per recovery point;
- ``config``: the store's config object (format, chunker, key check);
- ``store``: ``ChunkStore``, the facade.

A chunk cannot be deleted from a pack. GC deletes a pack (index first, then the pack) only when no
manifest references any of its chunks; a pack with a few live chunks stays whole (the space
trade-off: ``collect_garbage`` reports the dead bytes it holds). A later *repack* would copy the
live chunks of mostly-dead packs into new packs (blobs verbatim, live frame slices re-framed),
write their indexes, then delete the old indexes and packs -- safe under the same grace rule,
and skipped for packs still locked.
"""

from __future__ import annotations

from drsvc.chunks.cutter import ChunkerParams
from drsvc.chunks.layout import (
    BLOCK_SIZE,
    CHUNKS_PREFIX,
    CONFIG_KEY,
    FORMAT,
    FORMAT_VERSION,
    FRAME_MAX,
    FRAME_SIZE,
    INDEX_PREFIX,
    MANIFESTS_PREFIX,
    MAX_GAP,
    MAX_RANGE,
    PACK_SIZE,
    PACKS_PREFIX,
    chunk_key,
    frame_name,
    index_key,
    object_aad,
    pack_key,
)
from drsvc.chunks.pack import INDEX_FORMAT, PackEntry, PackIndex
from drsvc.chunks.refs import StreamRef, VerifyReport, WriteStats, referenced_chunks
from drsvc.chunks.store import ChunkStore
from drsvc.chunks.writer import Reuse

__all__ = [
    "BLOCK_SIZE",
    "CHUNKS_PREFIX",
    "CONFIG_KEY",
    "FORMAT",
    "FORMAT_VERSION",
    "FRAME_MAX",
    "FRAME_SIZE",
    "INDEX_FORMAT",
    "INDEX_PREFIX",
    "MANIFESTS_PREFIX",
    "MAX_GAP",
    "MAX_RANGE",
    "PACKS_PREFIX",
    "PACK_SIZE",
    "ChunkStore",
    "ChunkerParams",
    "PackEntry",
    "PackIndex",
    "Reuse",
    "StreamRef",
    "VerifyReport",
    "WriteStats",
    "chunk_key",
    "frame_name",
    "index_key",
    "object_aad",
    "pack_key",
    "referenced_chunks",
]
