"""How a chunk store's objects are encoded: zstd (or raw) and AES-256-GCM bound to the object's key.

A chunk's sealed payload is a **codec byte** then the body: ``0`` raw (incompressible data: no
decompression on restore), ``1`` zstd. Manifests and pack indexes are ``zstd(JSON)`` without a
codec byte. Every chunk read is re-hashed against its id (``check_chunk``).
"""

from __future__ import annotations

import threading
from typing import Any

import zstandard

from drsvc.chunks.layout import chunk_key, object_aad
from drsvc.crypto import Keys
from drsvc.errors import IntegrityError

CODEC_RAW = 0
CODEC_ZSTD = 1


class Codec:
    """Compresses, seals, opens and checks objects with one key; safe to share between threads."""

    def __init__(self, keys: Keys, level: int = 3) -> None:
        self.keys = keys
        self.level = level
        self._local = threading.local()

    def zstd(self) -> tuple[zstandard.ZstdCompressor, zstandard.ZstdDecompressor]:
        """This thread's compressor and decompressor (zstandard objects are not thread-safe)."""
        pair: Any = getattr(self._local, "zstd", None)
        if pair is None:
            pair = self._local.zstd = (
                zstandard.ZstdCompressor(level=self.level),
                zstandard.ZstdDecompressor(),
            )
        return pair

    # ------------------------------------------------------------ chunk payloads (codec byte + body)

    def compress(self, data: memoryview | bytes) -> bytes:
        """Codec byte + payload: zstd, or the bytes themselves when zstd saves under 1/64."""
        packed = self.zstd()[0].compress(data)
        if len(packed) < len(data) - len(data) // 64:
            return bytes([CODEC_ZSTD]) + packed
        return bytes([CODEC_RAW]) + bytes(data)  # incompressible (media, encrypted data): no decompression on restore

    def uncompress(self, key: str, plain: bytes | memoryview, limit: int) -> bytes:
        """The inverse of ``compress`` (``key`` names the object in errors)."""
        if not plain:
            raise IntegrityError(f"{key}: empty payload")
        codec, body = plain[0], memoryview(plain)[1:]
        if codec == CODEC_RAW:
            return bytes(body)
        if codec == CODEC_ZSTD:
            try:
                return self._decompress(key, body, limit)
            except zstandard.ZstdError as e:
                raise IntegrityError(f"{key}: cannot decompress ({e})") from e
        raise IntegrityError(f"{key}: unknown codec {codec}")

    def _decompress(self, key: str, body: bytes | memoryview, limit: int) -> bytes:
        """zstd-decompress at most ``limit`` bytes; the size a frame declares is checked first.

        python-zstandard allocates what the frame header declares and ignores ``max_output_size``
        then, so a 16 KiB frame declaring 512 MiB would cost 512 MiB: refused here unread. A frame
        that declares no size is decompressed into at most ``limit`` bytes (an error past it).
        """
        declared = zstandard.frame_content_size(body)
        if declared > limit:
            raise IntegrityError(f"{key}: zstd frame declares {declared} bytes, more than the {limit} allowed there")
        return self.zstd()[1].decompress(body, max_output_size=limit)

    def encode(self, key: str, data: memoryview | bytes) -> bytes:
        """Compress and seal ``data`` for the object ``key``."""
        return self.keys.seal(self.compress(data), object_aad(key))

    def decode(self, key: str, blob: bytes | memoryview, limit: int) -> bytes:
        """Open and uncompress an object sealed for ``key`` (at most ``limit`` bytes of plaintext)."""
        return self.uncompress(key, self.keys.open_(blob, object_aad(key)), limit)

    def check_chunk(self, cid: str, data: bytes, size: int | None) -> bytes:
        """``data`` if it is chunk ``cid`` (of ``size`` bytes when known), else ``IntegrityError``."""
        if size is not None and len(data) != size:
            raise IntegrityError(f"chunk {cid}: size {len(data)} != expected {size}")
        if self.keys.chunk_id(data) != cid:
            raise IntegrityError(f"chunk {cid}: content does not match its id")
        return data

    def decode_chunk(self, cid: str, blob: bytes | memoryview, size: int | None, max_size: int) -> bytes:
        """A loose chunk object's verified plaintext."""
        return self.check_chunk(cid, self.decode(chunk_key(cid), blob, size or max_size), size)

    # ------------------------------------------------------------ documents (zstd(JSON), no codec byte)

    def seal_doc(self, key: str, raw: bytes) -> bytes:
        """Compress and seal a serialised document (a manifest, an index) for ``key``."""
        return self.keys.seal(self.zstd()[0].compress(raw), object_aad(key))

    def open_doc(self, key: str, blob: bytes | memoryview, limit: int) -> bytes:
        """Open a sealed document; ``IntegrityError`` if it is not one (tampered, or past ``limit`` bytes)."""
        try:
            return self._decompress(key, self.keys.open_(blob, object_aad(key)), limit)
        except zstandard.ZstdError as e:
            raise IntegrityError(f"{key}: cannot decompress ({e})") from e
