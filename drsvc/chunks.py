"""The chunk store: content-defined chunks, dedup, zstd, AEAD and manifests on any ``ObjectStore``.

Layout (DESIGN.md "Storage format")::

    config                          plaintext JSON: format version, chunker parameters, key fingerprint,
                                    a sealed key check (a wrong key fails before anything is written),
                                    and ``packs``/``frames`` when the store keeps its chunks in packs (version 4)
    chunks/<2 hex>/<id>             sealed(codec byte + zstd or raw chunk); id = keyed BLAKE3 of the plaintext
    packs/<2 hex>/<pack-id>         packed stores (the cold tier): sealed chunk blobs and frames, concatenated
    index/<pack-id>                 sealed(zstd(JSON)): chunk id -> (offset, length[, position, size]) list
    manifests/<desktop>/<point-id>  sealed(zstd(JSON document))

Every sealed object carries ``b"drsvc/" + its key`` as associated data, so no object can stand in
for another (a manifest for a chunk, chunk A for chunk B). Streams are cut with FastCDC (keyed gear
table) block by block with the tail carried over, so memory stays bounded whatever the stream size.
A stream of objects (``write_objects``: a volume) is cut in segments: each object of at least
``avg_size`` alone, the smaller ones between them together, so large objects dedup like files.
Dedup checks an in-memory set of chunk ids loaded once by a batched listing, never one request per
chunk. Several threads may write streams at once (a backup stores a batch of desktops together):
a chunk another writer is still uploading counts as stored only once that upload is acknowledged,
so no stream ever refers to a chunk whose write failed.

**Packs** (``pack_size`` set; the S3 cold tier, where every request costs ~4 ms of a botocore
thread): a pack is up to ``pack_size`` bytes (16 MiB by default, one ``PutObject``) of two kinds
of entries. An incompressible chunk is a blob **exactly as a loose chunk object holds it** --
still sealed with the AAD of its own ``chunks/<2 hex>/<id>`` key, copied verbatim from the hot
store, and a pack index entry pointing a chunk id at another chunk's bytes fails authentication.
Compressible chunks (text, logs, binaries) are **frames**: a run of consecutive ones, at least
``FRAME_SIZE`` (1 MiB) of plaintext unless the run ends, compressed together and sealed for the
frame's place (``packs/<2 hex>/<pack-id>@<offset>``). Dedup stays at chunk granularity (128 KiB: a
small write re-stores little), while zstd gets a megabyte of context -- chunk by chunk, text whose
vocabulary is larger than a chunk compresses 5-10 % worse (the fleet benchmark in
docs/benchmarks.md). Frames follow the volume's objects where the writer knows them: past
``FRAME_SIZE`` a frame still takes the next chunk of the same object, up to ``FRAME_MAX`` (4 MiB),
so a file of a few megabytes is compressed whole (cut at an arbitrary megabyte, the part after
the cut lost its vocabulary: logs stored 3 % more). Every chunk, blob or frame slice, is
re-hashed against its id when read. The pack id is random (32 hex).

The index is a **separate small object** rather than a header or trailer inside the pack:

- knowing what the store holds (dedup for tiering, ``verify`` without ``--read-data``, GC) reads
  only indexes -- one listing, one small GET per pack, loaded once and then refreshed
  incrementally (indexes are immutable) -- and never touches the pack itself, which may sit in
  STANDARD_IA (retrieval billed per GB) or GLACIER (unreadable without a restore request); indexes
  stay in the default class like manifests;
- the index is written only after its pack is stored, so it is the commit record: a pack without
  an index (a run killed between the two PUTs) is invisible to readers and is collected by GC
  after the grace period, like an unreferenced chunk.

Indexes carry the pack's Object Lock retention too (a deleted index would orphan a locked pack).

Reading a packed store fetches by pack: the chunks a stream needs are located through the index,
runs of chunks that lie close together in one pack are coalesced into one ranged GET (up to
``MAX_RANGE`` bytes, skipping gaps up to ``MAX_GAP``), ranges are fetched on ``read_workers``
threads with ``read_ahead`` ranges in flight (bounded memory), each frame in a range is opened
once, then every chunk is re-hashed alone; a bad blob or frame raises ``IntegrityError`` naming
the chunk and its pack (a bad frame fails exactly the chunks in it). Loose chunks (stores written
before packs existed) and version-2 packs (no frames) stay readable.

A chunk cannot be deleted from a pack. GC deletes a pack (index first, then the pack) only when no
manifest references any of its chunks; a pack with a few live chunks stays whole (the space
trade-off: ``collect_garbage`` reports the dead bytes it holds). A later *repack* would copy the
live chunks of mostly-dead packs into new packs (blobs verbatim, live frame slices re-framed),
write their indexes, then delete the old indexes and packs -- safe under the same grace rule,
and skipped for packs still locked.
"""

from __future__ import annotations

import collections
import io
import json
import secrets
import threading
from collections.abc import Hashable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, BinaryIO, NamedTuple, Protocol

import zstandard
from pyfastcdc import FastCDC

from drsvc.crypto import OVERHEAD, Keys
from drsvc.errors import BackendError, CorruptChunk, IntegrityError, InvalidInput, NotFound
from drsvc.storage.base import ObjectStore, check_key, ordered_map
from drsvc.streams import IterReader

KiB = 1024
MiB = 1024 * KiB

FORMAT = "drsvc-chunkstore"
# 1: loose chunks; 2: packs; 3: frames in packs; 4: frames up to FRAME_MAX (version 3 readers stop at 1 MiB + a
# chunk). A store holding packs is upgraded to 4 by its next pack write.
FORMAT_VERSION = 4
CONFIG_KEY = "config"
CHUNKS_PREFIX = "chunks/"
PACKS_PREFIX = "packs/"
INDEX_PREFIX = "index/"
MANIFESTS_PREFIX = "manifests/"
PACK_SIZE = 16 * MiB  # default pack size: one PutObject (below the S3 store's multipart threshold)
MAX_RANGE = 16 * MiB  # largest ranged GET when reading packs (a whole default pack)
MAX_GAP = 256 * KiB  # bytes of unneeded chunks read through rather than starting a new range
INDEX_FORMAT = "drsvc-pack-index"
FRAME_SIZE = 1 * MiB  # a frame closes once it holds this much plaintext and the next chunk starts another object
FRAME_MAX = 4 * MiB  # ... and at this much in any case (an object larger than that spans frames)
BLOCK_SIZE = 8 * MiB  # read size of write_stream; the carried tail is at most one max-size chunk

_CODEC_RAW = 0
_CODEC_ZSTD = 1
_KEY_CHECK = b"drsvc chunk store key check v1"
_HEX = frozenset("0123456789abcdef")


@dataclass(frozen=True)
class ChunkerParams:
    """FastCDC 2020 parameters, stored in the config so every writer cuts identically."""

    min_size: int = 32 * KiB
    avg_size: int = 128 * KiB
    max_size: int = 512 * KiB
    normalization: int = 1

    def __post_init__(self) -> None:
        if not (
            64 <= self.min_size <= self.avg_size <= self.max_size <= 16 * MiB
            and 256 <= self.avg_size <= 4 * MiB
            and self.max_size >= 1024
            and 0 <= self.normalization <= 3
        ):
            raise InvalidInput(f"invalid chunker parameters {self}")

    def to_dict(self) -> dict[str, Any]:
        """JSON form for the config."""
        return {"algorithm": "fastcdc-2020", "seed": "keyed", **asdict(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ChunkerParams:
        """Parse the config form."""
        if d.get("algorithm") != "fastcdc-2020":
            raise InvalidInput(f"unsupported chunker {d.get('algorithm')!r}")
        return cls(int(d["min_size"]), int(d["avg_size"]), int(d["max_size"]), int(d["normalization"]))


@dataclass
class WriteStats:
    """What one write (or a store's lifetime) added: the dedup report."""

    chunks_total: int = 0
    chunks_new: int = 0
    bytes_in: int = 0
    bytes_new_stored: int = 0

    @property
    def dedup_ratio(self) -> float:
        """bytes_in / bytes_new_stored (compression and dedup together); inf when nothing new was stored."""
        return self.bytes_in / self.bytes_new_stored if self.bytes_new_stored else float("inf")

    def add(self, other: WriteStats) -> None:
        """Accumulate ``other`` into this."""
        self.chunks_total += other.chunks_total
        self.chunks_new += other.chunks_new
        self.bytes_in += other.bytes_in
        self.bytes_new_stored += other.bytes_new_stored


@dataclass
class StreamRef:
    """A stored stream: its chunks in order, total size, and keyed BLAKE3 of the whole plaintext."""

    chunks: list[tuple[str, int]]
    size: int
    hash: str
    stats: WriteStats = field(default_factory=WriteStats, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON form for manifests."""
        return {"size": self.size, "hash": self.hash, "chunks": [[cid, n] for cid, n in self.chunks]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StreamRef:
        """Parse the manifest form, validating ids and sizes."""
        try:
            chunks = [(str(cid), int(n)) for cid, n in d["chunks"]]
            ref = cls(chunks, int(d["size"]), str(d["hash"]))
        except (KeyError, TypeError, ValueError) as e:
            raise IntegrityError(f"malformed stream reference: {e}") from e
        if any(not _is_id(cid) or n <= 0 for cid, n in chunks) or sum(n for _, n in chunks) != ref.size:
            raise IntegrityError("malformed stream reference: bad chunk id, size or total")
        return ref


@dataclass
class VerifyReport:
    """Outcome of ``verify_chunks``."""

    checked: int = 0
    missing: list[str] = field(default_factory=list)
    corrupt: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when nothing is missing or corrupt."""
        return not self.missing and not self.corrupt


class _Readable(Protocol):
    def read(self, n: int = -1, /) -> bytes: ...


_Source = BinaryIO | _Readable | Iterable[bytes] | bytes  # what write_stream chunks


def _is_id(cid: str) -> bool:
    return len(cid) == 64 and set(cid) <= _HEX


def _is_pack_id(pid: str) -> bool:
    return len(pid) == 32 and set(pid) <= _HEX


def chunk_key(cid: str) -> str:
    """Object key of a chunk id."""
    return f"{CHUNKS_PREFIX}{cid[:2]}/{cid}"


def pack_key(pack_id: str) -> str:
    """Object key of a pack."""
    return f"{PACKS_PREFIX}{pack_id[:2]}/{pack_id}"


def index_key(pack_id: str) -> str:
    """Object key of a pack's index."""
    return f"{INDEX_PREFIX}{pack_id}"


def frame_name(pack_id: str, offset: int) -> str:
    """What a frame is sealed for (its associated data): its place, so no frame can stand in for another."""
    return f"{pack_key(pack_id)}@{offset}"


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


@dataclass
class _Range:
    """One read: a ranged GET of a pack covering several chunks, or one loose chunk object."""

    key: str
    start: int
    end: int
    items: list[tuple[str, PackEntry | None, int | None]]  # (chunk id, where in the pack, plaintext size)
    pack_id: str | None = None


class _Frame(NamedTuple):
    """A run of compressible chunks compressed together, before it is sealed for its place in a pack."""

    members: list[tuple[str, int, int]]  # (chunk id, position in the plaintext, size)
    body: bytes  # codec byte + zstd of the concatenated plaintexts


class _Fetched(NamedTuple):
    """A chunk as read: its sealed blob, or (``sealed`` false) its plaintext cut from a frame."""

    cid: str
    size: int | None
    payload: bytes | memoryview | IntegrityError  # the error: its frame failed to open
    where: str
    sealed: bool = True


def object_aad(key: str) -> bytes:
    """Associated data binding a sealed object to its key (no object can stand in for another)."""
    return b"drsvc/" + key.encode()


def _segment(what: str, value: str) -> str:
    if "/" in value:
        raise InvalidInput(f"invalid {what} {value!r}: must not contain '/'")
    check_key(value)
    return value


def _object_segments(objects: Iterable[tuple[int, Iterable[bytes]]], align: int) -> Iterator[Iterable[bytes]]:
    """Segments of a stream of objects: each object of ``align`` bytes or more alone, the smaller
    ones between them together. Lazy: a segment pulls its objects while it is read, in order."""
    it = iter(objects)
    ahead: Iterable[bytes] | None = None  # a large object met while reading a run of small ones
    exhausted = False

    def small_run() -> Iterator[bytes]:
        nonlocal ahead, exhausted
        for size, pieces in it:
            if size >= align:
                ahead = pieces
                return
            yield from pieces
        exhausted = True

    while not exhausted or ahead is not None:
        if ahead is not None:
            big, ahead = ahead, None
            yield big
        else:
            yield small_run()


def _packed_config(pack_size: int) -> dict[str, Any]:
    """What ``config`` records of a store that keeps its chunks in packs (with frames)."""
    return {
        "version": FORMAT_VERSION,
        "packs": {"target_size": pack_size},
        "frames": {"target_size": FRAME_SIZE, "max_size": FRAME_MAX},
    }


def _reader(source: BinaryIO | _Readable | Iterable[bytes | memoryview] | bytes) -> Any:
    """A ``readinto(memoryview) -> int`` over a binary file or an iterable of byte strings."""
    if isinstance(source, bytes | bytearray | memoryview):
        source = [memoryview(source)]  # one buffer, not an iterable of ints
    readinto = getattr(source, "readinto", None)
    if readinto is not None:
        return readinto
    read = getattr(source, "read", None)
    if read is not None:

        def from_read(view: memoryview) -> int:
            data = read(len(view))
            view[: len(data)] = data
            return len(data)

        return from_read
    return IterReader(source).readinto  # type: ignore[arg-type]


class ChunkStore:
    """Chunks, manifests and config of one store; create with ``init`` or ``open``."""

    def __init__(
        self,
        store: ObjectStore,
        keys: Keys,
        params: ChunkerParams,
        *,
        level: int = 3,
        workers: int = 2,
        window: int = 8,
        block_size: int = BLOCK_SIZE,
        pack_size: int | None = None,
        upload_workers: int = 4,
        read_workers: int = 3,
        read_ahead: int = 4,
        config: dict[str, Any] | None = None,
    ) -> None:
        self.store = store
        self.keys = keys
        self.params = params
        self.level = level
        self.workers = workers
        self.window = window
        self.block_size = max(block_size, 2 * params.max_size)
        self.pack_size = pack_size
        self.upload_workers = max(1, upload_workers)
        self.read_workers = max(1, read_workers)
        self.read_ahead = max(1, read_ahead)
        self.stats = WriteStats()
        self._config = config
        self._known: set[bytes] | None = None
        self._inflight: dict[bytes, threading.Event] = {}  # chunk ids some writer is uploading now
        self._write_lock = threading.Lock()
        self._local = threading.local()
        self._packs: dict[str, PackIndex] = {}
        self._where: dict[bytes, tuple[str, PackEntry]] = {}  # chunk id -> (pack id, where in it)
        self._pack_objects: set[str] = set()  # pack ids whose pack object was listed (or written)
        self._packs_loaded = False
        self._pack_lock = threading.Lock()
        self._cdc = FastCDC(
            params.avg_size,
            min_size=params.min_size,
            max_size=params.max_size,
            normalized_chunking=params.normalization,  # type: ignore[arg-type]
            seed=keys.chunker_seed,
        )

    # ---------------------------------------------------------------- config

    @classmethod
    def init(
        cls, store: ObjectStore, key: Keys | bytes, *, params: ChunkerParams | None = None, **options: Any
    ) -> ChunkStore:
        """Create a new chunk store (writes ``config``); refuse if one exists there."""
        keys = key if isinstance(key, Keys) else Keys(key)
        params = params or ChunkerParams()
        if store.exists(CONFIG_KEY):
            raise InvalidInput(f"{store.url} already holds a chunk store (config exists); open it instead")
        config: dict[str, Any] = {
            "format": FORMAT,
            "version": 1,
            "chunker": params.to_dict(),
            "compression": "zstd",
            "encryption": "aes-256-gcm",
            "chunk_id": "blake3-keyed",
            "key_fingerprint": keys.fingerprint,
            "key_check": keys.seal(_KEY_CHECK, object_aad(CONFIG_KEY)).hex(),
        }
        if options.get("pack_size"):
            config.update(_packed_config(int(options["pack_size"])))
        store.put(CONFIG_KEY, json.dumps(config, indent=1, sort_keys=True).encode() + b"\n")
        return cls(store, keys, params, config=config, **options)

    @classmethod
    def open(cls, store: ObjectStore, key: Keys | bytes, **options: Any) -> ChunkStore:
        """Open an existing chunk store, checking format version and that ``key`` is its key."""
        keys = key if isinstance(key, Keys) else Keys(key)
        try:
            raw = store.get(CONFIG_KEY)
        except NotFound:
            raise NotFound(f"no chunk store at {store.url} (no config object); initialise it first") from None
        try:
            config = json.loads(raw)
            fmt, version = config["format"], int(config["version"])
        except (ValueError, KeyError, TypeError) as e:
            raise InvalidInput(f"{store.url}: config is not a drsvc chunk store config ({e})") from e
        if fmt != FORMAT:
            raise InvalidInput(f"{store.url}: not a drsvc chunk store (format {fmt!r})")
        if version > FORMAT_VERSION:
            raise InvalidInput(
                f"{store.url}: chunk store format {version} is newer than this drsvc knows ({FORMAT_VERSION})"
            )
        if config.get("key_fingerprint") != keys.fingerprint:
            raise InvalidInput(
                f"wrong key for the chunk store at {store.url}: it was created with key "
                f"{config.get('key_fingerprint')}, the key given is {keys.fingerprint}"
            )
        try:
            check = keys.open_(bytes.fromhex(config["key_check"]), object_aad(CONFIG_KEY))
        except (KeyError, ValueError, TypeError):
            check = b""
        except IntegrityError:
            check = b""
        if check != _KEY_CHECK:
            raise IntegrityError(f"{store.url}: the key check in config does not verify (config tampered?)")
        packs = config.get("packs")
        if isinstance(packs, dict) and not options.get("pack_size"):
            # A store that holds packs is read as one whatever the caller asked for.
            options["pack_size"] = int(packs.get("target_size") or PACK_SIZE)
        return cls(store, keys, ChunkerParams.from_dict(config["chunker"]), config=config, **options)

    # ---------------------------------------------------------------- chunk codec

    def _zstd(self) -> tuple[zstandard.ZstdCompressor, zstandard.ZstdDecompressor]:
        # zstandard objects are not thread-safe: one pair per thread.
        pair = getattr(self._local, "zstd", None)
        if pair is None:
            pair = self._local.zstd = (
                zstandard.ZstdCompressor(level=self.level),
                zstandard.ZstdDecompressor(),
            )
        return pair

    def _compress(self, data: memoryview | bytes) -> bytes:
        """Codec byte + payload: zstd, or the bytes themselves when zstd saves under 1/64."""
        packed = self._zstd()[0].compress(data)
        if len(packed) < len(data) - len(data) // 64:
            return bytes([_CODEC_ZSTD]) + packed
        return bytes([_CODEC_RAW]) + bytes(data)  # incompressible (media, encrypted data): no decompression on restore

    def _encode(self, key: str, data: memoryview | bytes) -> bytes:
        return self.keys.seal(self._compress(data), object_aad(key))

    def _uncompress(self, key: str, plain: bytes | memoryview, limit: int) -> bytes:
        """The inverse of ``_compress`` (``key`` names the object in errors)."""
        if not plain:
            raise IntegrityError(f"{key}: empty payload")
        codec, body = plain[0], memoryview(plain)[1:]
        if codec == _CODEC_RAW:
            return bytes(body)
        if codec == _CODEC_ZSTD:
            try:
                return self._zstd()[1].decompress(body, max_output_size=limit)
            except zstandard.ZstdError as e:
                raise IntegrityError(f"{key}: cannot decompress ({e})") from e
        raise IntegrityError(f"{key}: unknown codec {codec}")

    def _decode(self, key: str, blob: bytes | memoryview, limit: int) -> bytes:
        return self._uncompress(key, self.keys.open_(blob, object_aad(key)), limit)

    def _check_chunk(self, cid: str, data: bytes, size: int | None) -> bytes:
        if size is not None and len(data) != size:
            raise IntegrityError(f"chunk {cid}: size {len(data)} != expected {size}")
        if self.keys.chunk_id(data) != cid:
            raise IntegrityError(f"chunk {cid}: content does not match its id")
        return data

    def _decode_chunk(self, cid: str, blob: bytes | memoryview, size: int | None) -> bytes:
        return self._check_chunk(cid, self._decode(chunk_key(cid), blob, size or self.params.max_size), size)

    def _open_fetched(self, item: _Fetched) -> bytes:
        """A fetched chunk's verified plaintext; ``IntegrityError`` naming the chunk and where it lies."""
        try:
            if isinstance(item.payload, IntegrityError):
                raise item.payload
            if item.sealed:
                return self._decode_chunk(item.cid, item.payload, item.size)
            return self._check_chunk(item.cid, bytes(item.payload), item.size)
        except IntegrityError as e:
            raise IntegrityError(f"{e}{item.where}") from e

    # ---------------------------------------------------------------- streams

    def _known_ids(self) -> set[bytes]:
        with self._write_lock:  # concurrent writers must share one set
            if self._known is None:
                self._known = {bytes.fromhex(cid) for cid in self.list_chunk_ids()}
            return self._known

    def _cut(self, segments: Iterable[_Source]) -> Iterator[memoryview]:
        """Yield chunks of each segment in turn: the end of a segment always ends a chunk."""
        for segment in segments:
            yield from self._cut_segment(segment)

    def _cut_segment(self, source: _Source) -> Iterator[memoryview]:
        """Yield chunks of one segment; reads ``block_size`` at a time and carries the tail chunk over.

        A FastCDC cut depends only on bytes from the chunk's start up to the cut, so every cut found
        before the end of a block is the one the whole stream would give; only the last (possibly
        truncated) chunk of a block is re-cut together with the next block.
        """
        readinto = _reader(source)
        tail = b""
        eof = False
        while not eof:
            buf = bytearray(len(tail) + self.block_size)
            buf[: len(tail)] = tail
            view = memoryview(buf)
            n = len(tail)
            while n < len(buf):
                got = readinto(view[n:])
                if not got:
                    eof = True
                    break
                n += got
            if n == 0:
                return
            data = view[:n]
            cuts = [(c.offset, c.length) for c in self._cdc.cut_buf(data)]
            if not eof:
                last_off, _ = cuts.pop()
                tail = bytes(data[last_off:])
            for off, length in cuts:
                yield data[off : off + length]

    def write_stream(self, source: _Source) -> StreamRef:
        """Chunk, dedup, compress, seal and store a stream (file object or iterable of bytes).

        Memory stays bounded (one block, the carried tail and a small window of chunks in flight).
        Returns the ``StreamRef`` once every new chunk is durably written; ``ref.stats`` reports dedup.
        """
        return self._write([source])

    def write_objects(self, objects: Iterable[tuple[int, Iterable[bytes]]]) -> StreamRef:
        """``write_stream`` of objects back to back, given as ``(size, pieces)`` and read in order.

        Every object of at least ``avg_size`` bytes starts and ends a chunk; smaller objects between
        two such are chunked together (no tiny chunks). So a large object's chunks do not depend on
        its neighbours: desktops cloned from one image dedup the image's objects whatever their own
        objects beside them, as a file-aware backup tool dedups files. ``size`` only places cuts.
        """
        return self._write(_object_segments(objects, self.params.avg_size))

    def _write(self, segments: Iterable[_Source]) -> StreamRef:
        known = self._known_ids()
        stats = WriteStats()
        hasher = self.keys.hasher()
        entries: list[tuple[str, int]] = []

        def encode(piece: memoryview) -> tuple[str, int, bytes | None]:
            cid = self.keys.chunk_id(piece)
            if bytes.fromhex(cid) in known:
                return cid, len(piece), None
            return cid, len(piece), self._encode(chunk_key(cid), piece)

        def pieces() -> Iterator[memoryview]:
            for piece in self._cut(segments):
                hasher.update(piece)
                stats.bytes_in += len(piece)
                yield piece

        mine: list[bytes] = []  # ids this stream uploads
        borrowed: list[tuple[str, threading.Event]] = []  # ids another writer is uploading

        def items() -> Iterator[tuple[str, bytes]]:
            for cid, size, blob in ordered_map(encode, pieces(), workers=self.workers, window=self.window):
                entries.append((cid, size))
                stats.chunks_total += 1
                raw = bytes.fromhex(cid)
                with self._write_lock:
                    if raw in known:  # stored, or a duplicate earlier in this stream
                        continue
                    other = self._inflight.get(raw)
                    if other is not None:
                        borrowed.append((cid, other))
                        continue
                    self._inflight[raw] = threading.Event()
                    mine.append(raw)
                assert blob is not None  # encode() skips only ids already in `known`, which only grows
                stats.chunks_new += 1
                stats.bytes_new_stored += len(blob)
                yield chunk_key(cid), blob

        ok = False  # not sys.exc_info(): a caller's own except clause would show up there
        try:
            self.store.put_many(items())
            ok = True
        finally:
            with self._write_lock:
                for raw in mine:
                    if ok:
                        known.add(raw)
                    self._inflight.pop(raw).set()
        for cid, done in borrowed:
            done.wait()
            if bytes.fromhex(cid) not in known:
                raise BackendError(f"chunk {cid}: a concurrent writer's upload failed; this stream is incomplete")
        with self._write_lock:
            self.stats.add(stats)
        return StreamRef(entries, stats.bytes_in, hasher.hexdigest(), stats)

    def write_bytes(self, data: bytes) -> StreamRef:
        """``write_stream`` of one in-memory buffer."""
        return self.write_stream(data)

    def read_stream(self, ref: StreamRef) -> Iterator[bytes]:
        """Yield the stream's plaintext chunk by chunk, verified; raise ``IntegrityError`` before bad data."""
        hasher = self.keys.hasher()

        total = 0
        try:
            chunks = self._blobs(ref.chunks)
            for data in ordered_map(self._open_fetched, chunks, workers=self.workers, window=self.window):
                hasher.update(data)
                total += len(data)
                yield data
        except NotFound as e:
            raise IntegrityError(f"a chunk of the stream is missing: {e}") from e
        if total != ref.size or hasher.hexdigest() != ref.hash:
            raise IntegrityError("stream hash or size does not match its reference")

    def _blobs(self, chunks: Iterable[tuple[str, int | None]]) -> Iterator[_Fetched]:
        """The chunks in input order, as read: loose objects, or ranges of packs (frames opened)."""
        if not self.pack_size:
            items = list(chunks) if not isinstance(chunks, Sequence) else chunks
            blobs = self.store.get_many(chunk_key(cid) for cid, _ in items)
            for (cid, size), (_key, blob) in zip(items, blobs, strict=True):
                yield _Fetched(cid, size, blob, "")
            return
        self._ensure_packs()
        for part in ordered_map(self._fetch, self._ranges(chunks), workers=self.read_workers, window=self.read_ahead):
            yield from part

    def _ranges(self, chunks: Iterable[tuple[str, int | None]]) -> Iterator[_Range]:
        """Coalesce the reads of consecutive chunks: one ranged GET per run of nearby chunks of a pack."""
        current: _Range | None = None
        where = self._where
        for cid, size in chunks:
            loc = where.get(bytes.fromhex(cid))
            if loc is None:  # a loose chunk (or a missing one: its GET says NotFound)
                if current is not None:
                    yield current
                    current = None
                yield _Range(chunk_key(cid), 0, 0, [(cid, None, size)])
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
                current = _Range(pack_key(pid), off, off + n, [(cid, entry, size)], pid)
        if current is not None:
            yield current

    def _fetch(self, r: _Range) -> list[_Fetched]:
        """Read one range; a frame is opened once for all its chunks in the range."""
        if r.pack_id is None:
            cid, _, size = r.items[0]
            return [_Fetched(cid, size, self.store.get(r.key), "")]
        data = memoryview(self.store.get_range(r.key, r.start, r.end - r.start))
        frames: dict[int, bytes | IntegrityError] = {}
        out: list[_Fetched] = []
        for cid, entry, size in r.items:
            assert entry is not None
            off, n = entry.offset, entry.length
            blob = data[off - r.start : off - r.start + n]
            where = f" (in pack {r.pack_id} at offset {off})"
            if len(blob) != n:
                raise IntegrityError(f"chunk {cid}: pack {r.pack_id} is truncated at offset {off}")
            if not entry.in_frame:
                out.append(_Fetched(cid, size, blob, where))
                continue
            if off not in frames:
                frames[off] = self._open_frame(r.pack_id, off, blob)
            plain = frames[off]
            if isinstance(plain, IntegrityError):
                out.append(_Fetched(cid, size, plain, where, sealed=False))
            elif entry.pos + entry.size > len(plain):
                problem = IntegrityError(f"chunk {cid}: beyond the end of its frame")
                out.append(_Fetched(cid, size, problem, where, sealed=False))
            else:
                piece = memoryview(plain)[entry.pos : entry.pos + entry.size]
                out.append(_Fetched(cid, size if size is not None else entry.size, piece, where, sealed=False))
        return out

    def _open_frame(self, pack_id: str, offset: int, blob: bytes | memoryview) -> bytes | IntegrityError:
        """A frame's plaintext, or the reason it cannot be read (every chunk in it is then unreadable)."""
        name = frame_name(pack_id, offset)
        try:
            return self._decode(name, blob, FRAME_MAX + self.params.max_size)
        except IntegrityError as e:
            return e

    def open_stream(self, ref: StreamRef) -> BinaryIO:
        """``read_stream`` as a file object (for APIs that read a body, e.g. a runtime restore)."""
        return io.BufferedReader(IterReader(self.read_stream(ref)), buffer_size=1 << 20)

    def read_bytes(self, ref: StreamRef) -> bytes:
        """The whole stream in memory (small streams, tests)."""
        return b"".join(self.read_stream(ref))

    def verify_chunks(self, ids: Iterable[str], *, read_data: bool = False) -> VerifyReport:
        """Check chunks exist (batched listings) and, with ``read_data``, decrypt and re-hash each.

        A packed chunk exists when an index lists it and its pack object is in the listing of
        ``packs/``; reading goes pack by pack in offset order, many chunks per ranged GET.
        """
        wanted = list(dict.fromkeys(ids))
        present = set(self.list_chunk_ids())
        report = VerifyReport(checked=len(wanted))
        report.missing = [cid for cid in wanted if cid not in present]
        if read_data:
            have = [cid for cid in wanted if cid in present]
            where = self._where

            def place(cid: str) -> tuple[str, int]:  # pack order, then loose
                loc = where.get(bytes.fromhex(cid))
                return (loc[0], loc[1].offset) if loc else ("~", 0)

            have.sort(key=place)

            def check(item: _Fetched) -> str | None:
                try:
                    self._open_fetched(item)
                except IntegrityError:
                    return item.cid
                return None

            def fetch(r: _Range) -> list[_Fetched]:
                try:
                    return self._fetch(r)
                except NotFound:  # vanished since the listing
                    report.missing.extend(cid for cid, _, _ in r.items)
                except IntegrityError:  # a truncated pack: every chunk of the range is bad
                    report.corrupt.extend(cid for cid, _, _ in r.items)
                return []

            if self.pack_size:
                ranges = self._ranges((cid, None) for cid in have)
                blobs: Iterator[_Fetched] = (
                    item
                    for part in ordered_map(fetch, ranges, workers=self.read_workers, window=self.read_ahead)
                    for item in part
                )
            else:
                blobs = (
                    _Fetched(key.rsplit("/", 1)[1], None, blob, "")
                    for key, blob in self.store.get_many(chunk_key(c) for c in have)
                )
            for bad in ordered_map(check, blobs, workers=self.workers, window=self.window):
                if bad:
                    report.corrupt.append(bad)
        return report

    # ---------------------------------------------------------------- packs

    def _ensure_packs(self) -> None:
        if self.pack_size and not self._packs_loaded:
            self.refresh_packs()

    def _seal_index(self, index: PackIndex) -> bytes:
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
        raw = json.dumps(doc, separators=(",", ":")).encode()
        key = index_key(index.pack_id)
        return self.keys.seal(self._zstd()[0].compress(raw), object_aad(key))

    def _open_index(self, pack_id: str, blob: bytes) -> PackIndex:
        key = index_key(pack_id)
        try:
            doc = json.loads(
                self._zstd()[1].decompress(self.keys.open_(blob, object_aad(key)), max_output_size=64 * MiB)
            )
            if doc["format"] != INDEX_FORMAT or doc["pack"] != pack_id:
                raise ValueError("not this pack's index")
            if any(len(e) not in (3, 5) for e in doc["chunks"]):
                raise ValueError("an entry is neither a blob nor a chunk in a frame")
            entries = tuple(PackEntry(str(e[0]), *(int(x) for x in e[1:])) for e in doc["chunks"])
            index = PackIndex(pack_id, int(doc["size"]), entries)
        except (ValueError, KeyError, TypeError, zstandard.ZstdError) as e:
            raise IntegrityError(f"{key}: pack index is unreadable ({e})") from e
        if any(
            not _is_id(e.cid)
            or e.offset < 0
            or e.length <= 0
            or e.offset + e.length > index.size
            or (e.in_frame and e.size <= 0)
            for e in entries
        ):
            raise IntegrityError(f"{key}: pack index has a bad entry")
        return index

    def _register(self, index: PackIndex) -> None:
        with self._pack_lock:
            self._packs[index.pack_id] = index
            self._pack_objects.add(index.pack_id)
            for entry in index.entries:
                self._where.setdefault(bytes.fromhex(entry.cid), (index.pack_id, entry))

    def _forget(self, pack_ids: Iterable[str]) -> None:
        gone = set(pack_ids)
        if not gone:
            return
        with self._pack_lock:
            for pid in gone:
                self._packs.pop(pid, None)
                self._pack_objects.discard(pid)
            self._where = {raw: loc for raw, loc in self._where.items() if loc[0] not in gone}
            for index in self._packs.values():  # a duplicate elsewhere takes over
                for entry in index.entries:
                    self._where.setdefault(bytes.fromhex(entry.cid), (index.pack_id, entry))

    def refresh_packs(self) -> dict[str, PackIndex]:
        """Load the pack indexes: one listing of ``index/`` and of ``packs/``, then a GET per *new* index.

        Indexes are immutable, so what was loaded stays; removed ones are forgotten. Returns the
        indexes whose pack object exists (an index without its pack counts as missing data).
        """
        if not self.pack_size:
            return {}
        listed = {k[len(INDEX_PREFIX) :] for k in self.store.list(INDEX_PREFIX)}
        listed = {pid for pid in listed if _is_pack_id(pid)}
        objects = set(self.list_pack_objects())
        self._forget(set(self._packs) - listed)
        new = sorted(listed - set(self._packs))
        for key, blob in self.store.get_many(index_key(pid) for pid in new):
            self._register(self._open_index(key[len(INDEX_PREFIX) :], blob))
        with self._pack_lock:
            self._pack_objects = objects  # listed after the indexes: every listed index's pack is in it
            self._packs_loaded = True
            return {pid: idx for pid, idx in self._packs.items() if pid in self._pack_objects}

    def list_pack_objects(self) -> Iterator[str]:
        """Yield the id of every pack object (one listing of ``packs/``; with or without an index)."""
        for key in self.store.list(PACKS_PREFIX):
            parts = key.split("/")
            if len(parts) == 3 and _is_pack_id(parts[2]) and parts[1] == parts[2][:2]:
                yield parts[2]

    def pack_members(self) -> dict[str, list[str]]:
        """Every pack object -> the chunk ids its index lists (empty: a pack without an index)."""
        self.refresh_packs()
        with self._pack_lock:
            members = {pid: idx.chunk_ids for pid, idx in self._packs.items()}
            members.update({pid: [] for pid in self._pack_objects if pid not in members})
        return members

    def pack_of(self, cid: str) -> str | None:
        """The pack a chunk is read from (None: a loose chunk, or unknown)."""
        self._ensure_packs()
        loc = self._where.get(bytes.fromhex(cid))
        return loc[0] if loc else None

    def pack_size_of(self, pack_id: str) -> int:
        """Stored size of a known pack."""
        return self._packs[pack_id].size

    def write_packs(
        self,
        blobs: Iterable[tuple[str, bytes]],
        *,
        storage_class: str | None = None,
        retain_until: datetime | None = None,
        object_of: Mapping[str, Hashable] | None = None,
    ) -> list[PackIndex]:
        """Store chunks, given as sealed blobs (``(chunk id, blob)``, as a loose chunk object holds them), in packs.

        Every blob is authenticated first: a corrupt one raises ``IntegrityError`` naming the chunk,
        so nothing bad becomes a packed copy. Blobs already in a pack (or repeated in ``blobs``)
        are skipped. An incompressible chunk is packed verbatim (no re-encryption). Runs of
        compressible chunks are decompressed and compressed again together as one *frame* of
        ``FRAME_SIZE`` bytes or more, sealed for its place in the pack: zstd then sees a megabyte of
        context instead of one chunk's (logs and text shrink by another 5-10 %), while dedup keeps
        its chunk granularity. A run ends at an incompressible chunk, so a frame's chunks are
        consecutive in the stream that brought them and a restore reads each frame once.
        ``object_of`` maps chunk ids to the object (file, RADOS object) they lie within, any
        hashable token: a frame past ``FRAME_SIZE`` still takes the next chunk while it belongs to
        the same object as the last, up to ``FRAME_MAX``, so an object is compressed whole. Chunks
        not in it close frames at ``FRAME_SIZE``.

        Each pack is stored with ``storage_class`` and ``retain_until``, then its index (default
        class, same retention): a pack is visible once its index is. ``upload_workers`` packs
        upload in parallel while the next fills; blobs are opened and frames compressed on
        ``workers`` threads, in order. Packs are assembled in ``upload_workers + 1`` buffers of
        ``pack_size`` bytes, allocated once and reused (a fresh 16 MiB buffer per pack costs a page
        fault per 4 KiB, more than the copy itself), and handed to ``store.put`` as views, so
        memory stays under ``(upload_workers + 1) * pack_size`` plus the frames in flight (a single
        blob larger than ``pack_size`` gets a buffer of its own). On an error the packs already
        sent finish (and count), then the error is raised.
        """
        if not self.pack_size:
            raise InvalidInput(f"{self.store.url}: not a packed chunk store")
        self._ensure_packs()
        self._upgrade_config(self.pack_size)
        pack_size = self.pack_size
        objects = object_of or {}
        written: list[PackIndex] = []
        inflight: collections.deque[Future[PackIndex]] = collections.deque()
        pool = ThreadPoolExecutor(max_workers=self.upload_workers, thread_name_prefix="drsvc-pack")
        spare: list[bytearray] = []  # buffers whose upload finished; at most upload_workers + 1 exist
        seen: set[bytes] = set()

        def fresh() -> Iterator[tuple[str, bytes]]:
            for cid, blob in blobs:
                raw = bytes.fromhex(cid)
                if raw not in seen and raw not in self._where:
                    seen.add(raw)
                    yield cid, blob

        def opened(item: tuple[str, bytes]) -> tuple[str, bytes, bytes | None]:
            """(id, blob, plaintext if the chunk is compressible): authenticated, on a worker."""
            cid, blob = item
            key = chunk_key(cid)
            try:
                plain = self.keys.verify(blob, object_aad(key))  # a scratch view, valid until this thread's next call
            except IntegrityError as e:
                raise CorruptChunk(cid, str(e)) from e
            if len(plain) and plain[0] == _CODEC_ZSTD:
                return cid, blob, self._uncompress(key, plain, self.params.max_size)
            return cid, blob, None

        def units() -> Iterator[tuple[str, bytes] | list[tuple[str, bytes]]]:
            """A verbatim blob ``(id, blob)``, or a run of compressible chunks ``[(id, plaintext), ...]``."""
            run: list[tuple[str, bytes]] = []
            fill = 0
            last: Hashable | None = None  # the object the run's last chunk lies within
            for cid, blob, plain in ordered_map(opened, fresh(), workers=self.workers, window=self.window):
                if plain is None:
                    if run:
                        yield run
                        run, fill = [], 0
                    yield cid, blob
                    continue
                within = objects.get(cid)
                same = within is not None and within == last
                if run and (fill >= FRAME_MAX or (fill >= FRAME_SIZE and not same)):
                    yield run
                    run, fill = [], 0
                run.append((cid, plain))
                fill += len(plain)
                last = within
            if run:
                yield run

        def compressed(unit: tuple[str, bytes] | list[tuple[str, bytes]]) -> tuple[str, bytes] | _Frame:
            if isinstance(unit, tuple):
                return unit
            members, pos = [], 0
            for cid, plain in unit:
                members.append((cid, pos, len(plain)))
                pos += len(plain)
            return _Frame(members, self._compress(b"".join(plain for _, plain in unit)))

        def upload(index: PackIndex, buffer: bytearray) -> PackIndex:
            data = memoryview(buffer)[: index.size]  # store.put copies or sends it, keeping no reference
            self.store.put(pack_key(index.pack_id), data, storage_class=storage_class, retain_until=retain_until)  # type: ignore[arg-type]
            self.store.put(index_key(index.pack_id), self._seal_index(index), retain_until=retain_until)
            self._register(index)
            return index

        def reap() -> None:
            future = inflight.popleft()
            buffer = buffers.pop(future)
            written.append(future.result())
            if len(buffer) == pack_size:
                spare.append(buffer)

        buffers: dict[Future[PackIndex], bytearray] = {}
        buf = bytearray(pack_size)
        pack_id = secrets.token_hex(16)
        fill = 0
        entries: list[PackEntry] = []

        def flush() -> None:
            nonlocal buf, fill, entries, pack_id
            if not entries:
                return
            while len(inflight) >= self.upload_workers:
                reap()
            future = pool.submit(upload, PackIndex(pack_id, fill, tuple(entries)), buf)
            buffers[future] = buf
            inflight.append(future)
            buf = spare.pop() if spare else bytearray(pack_size)
            pack_id, fill, entries = secrets.token_hex(16), 0, []

        def place(n: int) -> None:
            """Make room for ``n`` bytes at ``fill``: the next pack if this one is full."""
            nonlocal buf
            if entries and fill + n > pack_size:
                flush()
            if n > len(buf):  # one blob larger than a pack: a buffer of its own
                buf = bytearray(n)

        try:
            for unit in ordered_map(compressed, units(), workers=self.workers, window=self.window):
                if isinstance(unit, _Frame):
                    place(len(unit.body) + OVERHEAD)
                    blob = self.keys.seal(unit.body, object_aad(frame_name(pack_id, fill)))
                    entries.extend(PackEntry(cid, fill, len(blob), pos, size) for cid, pos, size in unit.members)
                else:
                    cid, blob = unit
                    place(len(blob))
                    entries.append(PackEntry(cid, fill, len(blob)))
                buf[fill : fill + len(blob)] = blob
                fill += len(blob)
            flush()
            while inflight:
                reap()
        finally:
            # On an error, let what was already sent finish (its index lands, or the pack is an orphan).
            pool.shutdown(wait=True, cancel_futures=True)
        return written

    def _upgrade_config(self, pack_size: int) -> None:
        """Record in ``config`` that the store holds packs and frames (version 4: older drsvc refuses it)."""
        config = self._config
        if config is None or int(config.get("version", 1)) >= FORMAT_VERSION:
            return
        config = {**config, **_packed_config(pack_size)}
        self.store.put(CONFIG_KEY, json.dumps(config, indent=1, sort_keys=True).encode() + b"\n")
        self._config = config

    def delete_packs(self, pack_ids: Iterable[str]) -> int:
        """Delete packs: their indexes first (readers stop seeing them), then the packs; return the count."""
        ids = sorted(set(pack_ids))
        self.store.delete_many(index_key(pid) for pid in ids)
        self._forget(ids)
        if self._known is not None:
            self._known = None
        self.store.delete_many(pack_key(pid) for pid in ids)
        return len(ids)

    # ---------------------------------------------------------------- manifests

    def _manifest_key(self, desktop: str, point_id: str) -> str:
        return f"{MANIFESTS_PREFIX}{_segment('desktop', desktop)}/{_segment('point id', point_id)}"

    def put_manifest(self, desktop: str, point_id: str, doc: dict[str, Any]) -> None:
        """Store a point's manifest (call after its streams are written: ``write_stream`` returns then)."""
        key = self._manifest_key(desktop, point_id)
        raw = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
        self.store.put(key, self.keys.seal(self._zstd()[0].compress(raw), object_aad(key)))

    def get_manifest(self, desktop: str, point_id: str) -> dict[str, Any]:
        """Read and authenticate a manifest; ``NotFound`` if absent, ``IntegrityError`` if tampered."""
        return self.get_sealed_manifest(desktop, point_id)[0]

    def get_sealed_manifest(self, desktop: str, point_id: str) -> tuple[dict[str, Any], bytes]:
        """``get_manifest``, and the sealed object as stored (one read, for a verbatim copy)."""
        key = self._manifest_key(desktop, point_id)
        try:
            blob = self.store.get(key)
        except NotFound:
            raise NotFound(f"no manifest for {desktop}/{point_id} in {self.store.url}") from None
        try:
            doc = json.loads(
                self._zstd()[1].decompress(self.keys.open_(blob, object_aad(key)), max_output_size=1 << 30)
            )
        except (ValueError, zstandard.ZstdError) as e:
            raise IntegrityError(f"{key}: manifest is unreadable ({e})") from e
        if not isinstance(doc, dict):
            raise IntegrityError(f"{key}: manifest is not a JSON object")
        return doc, blob

    def list_manifests(self, desktop: str | None = None) -> Iterator[tuple[str, str]]:
        """Yield ``(desktop, point_id)`` of every manifest (of one desktop if given)."""
        prefix = MANIFESTS_PREFIX + (f"{_segment('desktop', desktop)}/" if desktop else "")
        for key in self.store.list(prefix):
            parts = key.split("/")
            if len(parts) == 3:
                yield parts[1], parts[2]

    def delete_manifest(self, desktop: str, point_id: str) -> None:
        """Remove a manifest (its chunks stay until garbage collection)."""
        self.store.delete(self._manifest_key(desktop, point_id))

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
            if len(parts) == 3 and _is_id(parts[2]) and parts[1] == parts[2][:2]:
                yield parts[2]

    def delete_chunks(self, ids: Iterable[str]) -> int:
        """Delete loose chunks (pipelined; packed ones go with their pack); return how many ids were processed."""
        known = self._known

        def keys() -> Iterator[str]:
            for cid in ids:
                if known is not None:
                    known.discard(bytes.fromhex(cid))
                yield chunk_key(cid)

        return self.store.delete_many(keys())


def referenced_chunks(refs: Iterable[StreamRef]) -> set[str]:
    """Every chunk id the given stream references use (GC: keep these)."""
    return {cid for ref in refs for cid, _ in ref.chunks}
