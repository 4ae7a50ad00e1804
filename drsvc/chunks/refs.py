"""What a stored stream is (``StreamRef``, as manifests record it) and what writing or verifying reported."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from drsvc.chunks.layout import is_id, is_key_id
from drsvc.errors import IntegrityError


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


LIST_HASH = "chunks:"
"""Prefix of a stream hash over the chunk list (``chunk_list_hash``): volume streams
(``write_objects``, and composed ones, whose reused chunks were never read) hash each byte once,
into its chunk's keyed id; every chunk is verified by its id when read, so the list's hash covers
the whole plaintext. Older volume streams hash the whole plaintext; readers take both."""


def chunk_list_hash(hasher: Any, chunks: Iterable[tuple[str, int]]) -> str:
    """``chunks:`` + keyed BLAKE3 (``hasher``: a fresh keyed hasher) of the ordered ``(id, size)`` list."""
    for cid, size in chunks:
        hasher.update(f"{cid}:{size}\n".encode())
    return LIST_HASH + str(hasher.hexdigest())


@dataclass
class StreamRef:
    """A stored stream: its chunks in order, total size, a hash, and the data key its chunks are
    keyed and sealed with (``key_id``; None: the fleet key). The hash is keyed BLAKE3 of the whole
    plaintext (``write_stream``), or of its chunk list (``chunk_list_hash``: a volume stream,
    ``write_objects`` / ``write_parts``)."""

    chunks: list[tuple[str, int]]
    size: int
    hash: str
    stats: WriteStats = field(default_factory=WriteStats, compare=False)
    key_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON form for manifests (``data_key`` only for a tenant's key: fleet streams as before)."""
        d: dict[str, Any] = {"size": self.size, "hash": self.hash, "chunks": [[cid, n] for cid, n in self.chunks]}
        if self.key_id is not None:
            d["data_key"] = self.key_id
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StreamRef:
        """Parse the manifest form, validating ids and sizes."""
        try:
            chunks = [(str(cid), int(n)) for cid, n in d["chunks"]]
            key_id = d.get("data_key")
            ref = cls(chunks, int(d["size"]), str(d["hash"]), key_id=None if key_id is None else str(key_id))
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise IntegrityError(f"malformed stream reference: {e}") from e
        if any(not is_id(cid) or n <= 0 for cid, n in chunks) or sum(n for _, n in chunks) != ref.size:
            raise IntegrityError("malformed stream reference: bad chunk id, size or total")
        if ref.key_id is not None and not is_key_id(ref.key_id):
            raise IntegrityError(f"malformed stream reference: bad data key id {ref.key_id!r}")
        return ref


def is_stream_dict(d: Any) -> bool:
    """Whether a manifest value is a stream reference (in any part of any manifest)."""
    return isinstance(d, dict) and "chunks" in d and "hash" in d and "size" in d


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


def referenced_chunks(refs: Iterable[StreamRef]) -> set[str]:
    """Every chunk id the given stream references use (GC: keep these)."""
    return {cid for ref in refs for cid, _ in ref.chunks}
