"""The chunk store: content-defined chunks, dedup, zstd, AEAD and manifests on any ``ObjectStore``.

Layout (DESIGN.md "Storage format")::

    config                          plaintext JSON: format version, chunker parameters, key fingerprint,
                                    and a sealed key check (a wrong key fails before anything is written)
    chunks/<2 hex>/<id>             sealed(codec byte + zstd or raw chunk); id = keyed BLAKE3 of the plaintext
    manifests/<desktop>/<point-id>  sealed(zstd(JSON document))

Every sealed object carries ``b"drsvc/" + its key`` as associated data, so no object can stand in
for another (a manifest for a chunk, chunk A for chunk B). Streams are cut with FastCDC (keyed gear
table) block by block with the tail carried over, so memory stays bounded whatever the stream size.
Dedup checks an in-memory set of chunk ids loaded once by a batched listing, never one request per
chunk. A ``ChunkStore`` is meant for one writing thread at a time; readers may share it.
"""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any, BinaryIO, Protocol

import zstandard
from pyfastcdc import FastCDC

from drsvc.crypto import Keys
from drsvc.errors import IntegrityError, InvalidInput, NotFound
from drsvc.storage.base import ObjectStore, check_key, ordered_map

KiB = 1024
MiB = 1024 * KiB

FORMAT = "drsvc-chunkstore"
FORMAT_VERSION = 1
CONFIG_KEY = "config"
CHUNKS_PREFIX = "chunks/"
MANIFESTS_PREFIX = "manifests/"
BLOCK_SIZE = 8 * MiB  # read size of write_stream; the carried tail is at most one max-size chunk

_CODEC_RAW = 0
_CODEC_ZSTD = 1
_KEY_CHECK = b"drsvc chunk store key check v1"
_HEX = frozenset("0123456789abcdef")


@dataclass(frozen=True)
class ChunkerParams:
    """FastCDC 2020 parameters, stored in the config so every writer cuts identically."""

    min_size: int = 64 * KiB
    avg_size: int = 256 * KiB
    max_size: int = 1 * MiB
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


def _is_id(cid: str) -> bool:
    return len(cid) == 64 and set(cid) <= _HEX


def chunk_key(cid: str) -> str:
    """Object key of a chunk id."""
    return f"{CHUNKS_PREFIX}{cid[:2]}/{cid}"


def object_aad(key: str) -> bytes:
    """Associated data binding a sealed object to its key (no object can stand in for another)."""
    return b"drsvc/" + key.encode()


def _segment(what: str, value: str) -> str:
    if "/" in value:
        raise InvalidInput(f"invalid {what} {value!r}: must not contain '/'")
    check_key(value)
    return value


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
    it = iter(source)  # type: ignore[arg-type]
    pending = memoryview(b"")

    def from_iter(view: memoryview) -> int:
        nonlocal pending
        while not pending:
            try:
                pending = memoryview(next(it))
            except StopIteration:
                return 0
            if pending.ndim != 1 or pending.itemsize != 1:
                pending = pending.cast("B")
        n = min(len(view), len(pending))
        view[:n] = pending[:n]
        pending = pending[n:]
        return n

    return from_iter


class _IterReader(io.RawIOBase):
    """A read-only raw stream over an iterator of byte strings."""

    def __init__(self, pieces: Iterator[bytes]) -> None:
        self._pieces = pieces
        self._current = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._current:
            piece = next(self._pieces, None)
            if piece is None:
                return 0
            self._current = memoryview(piece)
        n = min(len(buffer), len(self._current))
        buffer[:n] = self._current[:n]
        self._current = self._current[n:]
        return n


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
    ) -> None:
        self.store = store
        self.keys = keys
        self.params = params
        self.level = level
        self.workers = workers
        self.window = window
        self.block_size = max(block_size, 2 * params.max_size)
        self.stats = WriteStats()
        self._known: set[bytes] | None = None
        self._local = threading.local()
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
        config = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "chunker": params.to_dict(),
            "compression": "zstd",
            "encryption": "aes-256-gcm",
            "chunk_id": "blake3-keyed",
            "key_fingerprint": keys.fingerprint,
            "key_check": keys.seal(_KEY_CHECK, object_aad(CONFIG_KEY)).hex(),
        }
        store.put(CONFIG_KEY, json.dumps(config, indent=1, sort_keys=True).encode() + b"\n")
        return cls(store, keys, params, **options)

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
        return cls(store, keys, ChunkerParams.from_dict(config["chunker"]), **options)

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

    def _encode(self, key: str, data: memoryview | bytes) -> bytes:
        packed = self._zstd()[0].compress(data)
        if len(packed) < len(data) - len(data) // 64:
            plain = bytes([_CODEC_ZSTD]) + packed
        else:  # incompressible (media, encrypted data): store raw, skip decompression on restore
            plain = bytes([_CODEC_RAW]) + bytes(data)
        return self.keys.seal(plain, object_aad(key))

    def _decode(self, key: str, blob: bytes, limit: int) -> bytes:
        plain = self.keys.open_(blob, object_aad(key))
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

    def _decode_chunk(self, cid: str, blob: bytes, size: int | None) -> bytes:
        data = self._decode(chunk_key(cid), blob, size or self.params.max_size)
        if size is not None and len(data) != size:
            raise IntegrityError(f"chunk {cid}: size {len(data)} != expected {size}")
        if self.keys.chunk_id(data) != cid:
            raise IntegrityError(f"chunk {cid}: content does not match its id")
        return data

    # ---------------------------------------------------------------- streams

    def _known_ids(self) -> set[bytes]:
        if self._known is None:
            self._known = {bytes.fromhex(cid) for cid in self.list_chunk_ids()}
        return self._known

    def _cut(self, source: BinaryIO | _Readable | Iterable[bytes] | bytes) -> Iterator[memoryview]:
        """Yield chunks of the stream; reads ``block_size`` at a time and carries the tail chunk over.

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

    def write_stream(self, source: BinaryIO | _Readable | Iterable[bytes] | bytes) -> StreamRef:
        """Chunk, dedup, compress, seal and store a stream (file object or iterable of bytes).

        Memory stays bounded (one block, the carried tail and a small window of chunks in flight).
        Returns the ``StreamRef`` once every new chunk is durably written; ``ref.stats`` reports dedup.
        """
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
            for piece in self._cut(source):
                hasher.update(piece)
                stats.bytes_in += len(piece)
                yield piece

        def items() -> Iterator[tuple[str, bytes]]:
            for cid, size, blob in ordered_map(encode, pieces(), workers=self.workers, window=self.window):
                entries.append((cid, size))
                stats.chunks_total += 1
                raw = bytes.fromhex(cid)
                if blob is None or raw in known:  # known, or a duplicate earlier in this window
                    continue
                known.add(raw)
                stats.chunks_new += 1
                stats.bytes_new_stored += len(blob)
                yield chunk_key(cid), blob

        try:
            self.store.put_many(items())
        except BaseException:
            self._known = None  # ids were added before their writes were acknowledged: reload
            raise
        self.stats.add(stats)
        return StreamRef(entries, stats.bytes_in, hasher.hexdigest(), stats)

    def write_bytes(self, data: bytes) -> StreamRef:
        """``write_stream`` of one in-memory buffer."""
        return self.write_stream(data)

    def read_stream(self, ref: StreamRef) -> Iterator[bytes]:
        """Yield the stream's plaintext chunk by chunk, verified; raise ``IntegrityError`` before bad data."""
        hasher = self.keys.hasher()
        blobs = self.store.get_many(chunk_key(cid) for cid, _ in ref.chunks)

        def decode(item: tuple[tuple[str, int], tuple[str, bytes]]) -> bytes:
            (cid, size), (_key, blob) = item
            return self._decode_chunk(cid, blob, size)

        total = 0
        try:
            for data in ordered_map(
                decode, zip(ref.chunks, blobs, strict=True), workers=self.workers, window=self.window
            ):
                hasher.update(data)
                total += len(data)
                yield data
        except NotFound as e:
            raise IntegrityError(f"a chunk of the stream is missing: {e}") from e
        if total != ref.size or hasher.hexdigest() != ref.hash:
            raise IntegrityError("stream hash or size does not match its reference")

    def open_stream(self, ref: StreamRef) -> BinaryIO:
        """``read_stream`` as a file object (for APIs that read a body, e.g. a runtime restore)."""
        return io.BufferedReader(_IterReader(self.read_stream(ref)), buffer_size=1 << 20)

    def read_bytes(self, ref: StreamRef) -> bytes:
        """The whole stream in memory (small streams, tests)."""
        return b"".join(self.read_stream(ref))

    def verify_chunks(self, ids: Iterable[str], *, read_data: bool = False) -> VerifyReport:
        """Check chunks exist (one batched listing) and, with ``read_data``, decrypt and re-hash each."""
        wanted = list(dict.fromkeys(ids))
        present = {cid for cid in self.list_chunk_ids()}
        report = VerifyReport(checked=len(wanted))
        report.missing = [cid for cid in wanted if cid not in present]
        if read_data:

            def check(item: tuple[str, bytes]) -> str | None:
                key, blob = item
                cid = key.rsplit("/", 1)[1]
                try:
                    self._decode_chunk(cid, blob, None)
                except IntegrityError:
                    return cid
                return None

            have = (chunk_key(cid) for cid in wanted if cid in present)
            blobs = self.store.get_many(have)
            for bad in ordered_map(check, blobs, workers=self.workers, window=self.window):
                if bad:
                    report.corrupt.append(bad)
        return report

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
        return doc

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
        """Yield the id of every stored chunk (one batched listing)."""
        for key in self.store.list(CHUNKS_PREFIX):
            parts = key.split("/")
            if len(parts) == 3 and _is_id(parts[2]) and parts[1] == parts[2][:2]:
                yield parts[2]

    def delete_chunks(self, ids: Iterable[str]) -> int:
        """Delete chunks (pipelined); return how many ids were processed."""
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
