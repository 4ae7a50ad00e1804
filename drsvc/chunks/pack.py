"""The pack format: what a pack holds and how its index describes it.

A pack (``packs/<2 hex>/<pack-id>``, the pack id random, 32 hex) is up to ``pack_size`` bytes (16
MiB by default, one ``PutObject``) of two kinds of entries, concatenated:

- a **blob**: an incompressible chunk **exactly as a loose chunk object holds it** -- still sealed
  with the AAD of its own ``chunks/<2 hex>/<id>`` key, copied verbatim from the hot store, so an
  index entry pointing a chunk id at another chunk's bytes fails authentication;
- a **frame**: a run of consecutive compressible chunks (text, logs, binaries), at least
  ``FRAME_SIZE`` (1 MiB) of plaintext unless the run ends, compressed together (codec byte +
  zstd) and sealed for the frame's place (``packs/<2 hex>/<pack-id>@<offset>``). Dedup stays at
  chunk granularity (128 KiB: a small write re-stores little), while zstd gets a megabyte of
  context -- chunk by chunk, text whose vocabulary is larger than a chunk compresses 5-10 % worse
  (the fleet benchmark in docs/benchmarks.md). Frames follow the volume's objects where the writer
  knows them: past ``FRAME_SIZE`` a frame still takes the next chunk of the same object, up to
  ``FRAME_MAX`` (4 MiB), so a file of a few megabytes is compressed whole.

Every chunk, blob or frame slice, is re-hashed against its id when read.

The **index** (``index/<pack-id>``, sealed ``zstd(JSON)``) is a separate small object rather than a
header or trailer inside the pack::

    {"format": "drsvc-pack-index", "version": 1 | 2, "pack": "<pack-id>", "size": <pack bytes>,
     "chunks": [[id, offset, length], ...              # a blob (version 1)
                [id, offset, length, pos, size], ...]} # a slice of a frame (version 2)

- knowing what the store holds (dedup for tiering, ``verify`` without ``--read-data``, GC) reads
  only indexes -- one listing, one small GET per pack -- and never touches the pack itself, which
  may sit in STANDARD_IA (retrieval billed per GB) or GLACIER; indexes stay in the default class;
- the index is written only after its pack is stored, so it is the commit record: a pack without
  an index (a run killed between the two PUTs) is invisible to readers and is collected by GC
  after the grace period, like an unreferenced chunk.

Indexes carry the pack's Object Lock retention too (a deleted index would orphan a locked pack).
"""

from __future__ import annotations

import collections
import json
from dataclasses import dataclass
from typing import NamedTuple

from drsvc.chunks.codec import Codec
from drsvc.chunks.layout import INDEX_MAX, chunk_stored_max, frame_plain_max, frame_stored_max, index_key, is_id
from drsvc.errors import IntegrityError

INDEX_FORMAT = "drsvc-pack-index"


class PackEntry(NamedTuple):
    """Where a chunk lies in a pack: a sealed blob of its own, or a slice of a frame's plaintext."""

    cid: str
    offset: int  # of the sealed blob or frame in the pack
    length: int  # stored bytes of that blob or frame
    pos: int = -1  # in a frame: where the chunk starts in the frame's plaintext; -1: a blob of its own
    size: int = 0  # in a frame: the chunk's plaintext size

    @property
    def in_frame(self) -> bool:
        """True when the chunk is a slice of a frame (shared with its neighbours)."""
        return self.pos >= 0


@dataclass(frozen=True)
class PackIndex:
    """What one pack holds: a ``PackEntry`` per chunk, in pack order."""

    pack_id: str
    size: int
    entries: tuple[PackEntry, ...]

    @property
    def chunk_ids(self) -> list[str]:
        """The ids of the chunks in this pack."""
        return [e.cid for e in self.entries]

    def stored_bytes(self) -> dict[str, int]:
        """Bytes each chunk takes in the pack (a frame's bytes shared in proportion to plaintext size)."""
        frame_plain: collections.Counter[int] = collections.Counter()
        for e in self.entries:
            if e.in_frame:
                frame_plain[e.offset] += e.size
        return {e.cid: e.length * e.size // frame_plain[e.offset] if e.in_frame else e.length for e in self.entries}


class Frame(NamedTuple):
    """A run of compressible chunks compressed together, before it is sealed for its place in a pack."""

    members: list[tuple[str, int, int]]  # (chunk id, position in the plaintext, size)
    body: bytes  # codec byte + zstd of the concatenated plaintexts


def seal_index(codec: Codec, index: PackIndex) -> bytes:
    """The sealed index object of ``index``."""
    # A blob of its own is [id, offset, length] (version 1); a chunk in a frame adds its
    # position and size in the frame's plaintext (version 2: an index a version-1 reader refuses).
    chunks = [list(e) if e.in_frame else [e.cid, e.offset, e.length] for e in index.entries]
    doc = {
        "format": INDEX_FORMAT,
        "version": 2 if any(e.in_frame for e in index.entries) else 1,
        "pack": index.pack_id,
        "size": index.size,
        "chunks": chunks,
    }
    return codec.seal_doc(index_key(index.pack_id), json.dumps(doc, separators=(",", ":")).encode())


def open_index(codec: Codec, pack_id: str, blob: bytes | memoryview, max_chunk: int) -> PackIndex:
    """Authenticate and parse the index of ``pack_id``; ``IntegrityError`` if it is not a sound one.

    Entries are bounded as well as placed: a blob no larger than a sealed chunk, a frame no larger
    than a sealed frame (``max_chunk``: the chunker's ``max_size``), so no index makes a reader
    fetch or open more than the format allows.
    """
    key = index_key(pack_id)
    try:
        doc = json.loads(codec.open_doc(key, blob, INDEX_MAX))
        if doc["format"] != INDEX_FORMAT or doc["pack"] != pack_id:
            raise ValueError("not this pack's index")
        if any(len(e) not in (3, 5) for e in doc["chunks"]):
            raise ValueError("an entry is neither a blob nor a chunk in a frame")
        entries = tuple(PackEntry(str(e[0]), *(int(x) for x in e[1:])) for e in doc["chunks"])
        index = PackIndex(pack_id, int(doc["size"]), entries)
    except (ValueError, KeyError, TypeError) as e:
        raise IntegrityError(f"{key}: pack index is unreadable ({e})") from e
    blob_max, frame_max = chunk_stored_max(max_chunk), frame_stored_max(max_chunk)
    if any(
        not is_id(e.cid)
        or e.offset < 0
        or e.length <= 0
        or e.offset + e.length > index.size
        or e.length > (frame_max if e.in_frame else blob_max)
        or (e.in_frame and not (0 < e.size <= max_chunk and e.pos + e.size <= frame_plain_max(max_chunk)))
        for e in entries
    ):
        raise IntegrityError(f"{key}: pack index has a bad entry")
    return index
