"""The volume interface: where a desktop's persistent data lives, and the snapshots that freeze it.

A volume is a flat set of named objects, each with data, xattrs and omap (a RADOS namespace today,
an RBD image later). A *snapshot* is named by the caller and shared by every volume of one
*snapshot scope* (for ``rados://POOL/NS`` the scope is the pool: one pool snapshot per policy run
and pool). Adapters know nothing of the catalog or policies; jobs talk to these protocols only.

``object_digest`` is the one digest of an object's content (data + xattrs + omap) that backup,
restore and drill all compute, so a namespace can be verified against what a manifest recorded.
It has two self-describing forms (``digest_form``): new points record BLAKE3 (``b3:…``), points
written before hold blake2b-256 (bare hex); every check hashes in the form of the digest it checks.
"""

from __future__ import annotations

import hashlib
import re
import struct
import threading
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple, Protocol, runtime_checkable

import blake3

from drsvc.errors import DrsvcError

READ_SIZE = 4 * 1024 * 1024
"""Largest single read or write of object data: memory stays bounded whatever the object size."""

WHOLE_MAX = 64 * 1024 * 1024
"""The largest object ``write_objects(whole=True)`` writes in one operation: below RADOS's default
osd_max_write_size (90 MiB), which refuses larger single writes."""

WRITER_XATTR = "drsvc.restore-writer"
"""The xattr a clone restore's write sets on each object it creates, in the op that creates it
(``write_objects(mark=...)``), until the restore has recorded that every object is written
(``unmark``): after a kill -9 it tells the restore's own objects from another writer's
(``remove_objects(marked=...)``)."""


OBJECT_METADATA_MAX = 64 * 1024 * 1024
"""Most bytes of xattrs and omap (names and values, ``ENTRY_COST`` each) drsvc reads for one object."""

VOLUME_METADATA_MAX = 128 * 1024 * 1024
"""Most bytes of xattrs and omap one capture reads for a whole volume. A desktop's processes write
their namespace: without a bound, one object's gigabytes of omap (RADOS accepts them) were held in
memory, then hex-encoded into a manifest no reader takes (``MANIFEST_MAX``), and the backup
process that serves every desktop ran out of memory. The manifest lists them as hex (twice the
bytes), well inside what a manifest may hold."""


VOLUME_OBJECTS_MAX = 1_000_000
"""Most objects drsvc backs up in one volume. A desktop's processes can create millions of empty
objects: each name costs memory while listed, a stat, and an entry in the point's manifest, which
readers take up to ``MANIFEST_MAX`` (about 1.5 million entries): past that the point was refused
only once hours of its batch's store time had gone into it."""


class TooManyObjects(DrsvcError):
    """A volume holds more objects than drsvc backs up (its desktop fails, the others go on)."""


def too_many_objects(url: str) -> TooManyObjects:
    return TooManyObjects(
        f"{url}: more than {VOLUME_OBJECTS_MAX:,} objects: drsvc does not back up a volume that large "
        "(the desktop's own processes created them)"
    )


class MetadataTooLarge(DrsvcError):
    """A volume's xattrs and omap are past what drsvc reads (its desktop fails, the others go on)."""


class MetadataBudget:
    """Counts the xattr and omap bytes one scan of a volume reads; thread-safe.

    ``check`` bounds one object while its omap pages come in (the reader stops asking for more);
    ``take`` adds a whole object to the volume's total. Both raise ``MetadataTooLarge``.
    """

    def __init__(self, what: str) -> None:
        self.what = what
        self.total = 0
        self._lock = threading.Lock()

    def check(self, name: str, nbytes: int) -> None:
        if nbytes > OBJECT_METADATA_MAX:
            raise MetadataTooLarge(
                f"{self.what}/{name}: more than {OBJECT_METADATA_MAX >> 20} MiB of xattrs and omap in one "
                "object: drsvc does not back up metadata that large (the desktop's own processes wrote it)"
            )

    def take(self, name: str, xattrs: Mapping[str, bytes], omap: Mapping[str, bytes]) -> None:
        nbytes = metadata_bytes(xattrs) + metadata_bytes(omap)
        self.check(name, nbytes)
        with self._lock:
            self.total += nbytes
            total = self.total
        if total > VOLUME_METADATA_MAX:
            raise MetadataTooLarge(
                f"{self.what}: more than {VOLUME_METADATA_MAX >> 20} MiB of xattrs and omap in the volume "
                f"(at {name}): drsvc does not back up metadata that large (the desktop's own processes wrote it)"
            )


ENTRY_COST = 96
"""Bytes one xattr or omap entry costs drsvc beyond its name and value: the ``str`` and ``bytes``
objects and the dict slot that hold it (measured in the lab: 2 million omap keys of 8 bytes with
empty values grew a capture by 195 MiB, about 100 bytes each). Counted in the bounds, so many tiny
keys are bounded by the memory they take, not by their few stored bytes."""


def metadata_bytes(pairs: Mapping[str, bytes]) -> int:
    """Bytes of xattrs or omap as drsvc holds them: names (UTF-8) and values, and ``ENTRY_COST`` each."""
    return sum(len(k.encode("utf-8", "surrogateescape")) + len(v) + ENTRY_COST for k, v in pairs.items())


@dataclass(frozen=True)
class VolumeObject:
    """One object of a volume: its name, data size, xattrs and omap (both name -> raw bytes).

    ``mtime`` (seconds since the epoch, whole) is what the backend reports when it lists with
    metadata; informational only (shown by ``points ls``), so it takes no part in equality.
    ``version`` neither: it says when the content changed, it is not the content.
    """

    name: str
    size: int
    xattrs: dict[str, bytes] = field(default_factory=dict)
    omap: dict[str, bytes] = field(default_factory=dict)
    mtime: int | None = field(default=None, compare=False)
    version: int | None = field(default=None, compare=False)
    """The backend's change counter at the snapshot read (RADOS user version), when it has one:
    any change to data, xattrs or omap gives another value (``drsvc.volumes.rados_meta``)."""


class SnapshotInfo(NamedTuple):
    """A snapshot as the backend reports it (for drift checks against the catalog)."""

    name: str
    snap_id: int
    created: datetime  # aware, UTC


# (object metadata, its data as an iterator of byte chunks): what reads yield and writes take
ObjectStream = tuple[VolumeObject, Iterator[bytes]]


@runtime_checkable
class PoolSnapshots(Protocol):
    """The snapshots of one snapshot scope (a Ceph pool for ``rados://``)."""

    scope: str

    def create(self, name: str) -> int:
        """Take a snapshot named ``name`` now and return its id; an existing name is an error."""
        ...

    def remove(self, name: str) -> None:
        """Remove the snapshot; a missing one is fine."""
        ...

    def list(self) -> list[SnapshotInfo]:
        """Every snapshot of the scope (drsvc's and others'), oldest first."""
        ...


@runtime_checkable
class Volume(Protocol):
    """One desktop's persistent data: read at a snapshot, read live, roll back, write, purge."""

    url: str
    scope: str  # volumes with the same scope share one snapshot per run (rados: "rados://POOL")

    def snapshots(self) -> PoolSnapshots:
        """The snapshots of this volume's scope (take one per run and scope, not per volume)."""
        ...

    def objects_at(self, snap_name: str) -> list[VolumeObject]:
        """Exactly the objects the volume held at the snapshot, sorted by name."""
        ...

    def read_objects_at(self, snap_name: str, objects: Iterable[VolumeObject] | None = None) -> Iterator[ObjectStream]:
        """Yield (object, data chunks) at the snapshot in input order, pipelined; drain each in turn."""
        ...

    def read_at(self, snap_name: str, name: str) -> Iterator[bytes]:
        """Stream one object's data at the snapshot in reads of at most ``READ_SIZE``."""
        ...

    def objects_now(self) -> list[VolumeObject]:
        """The live objects, sorted by name."""
        ...

    def read_objects(self, objects: Iterable[VolumeObject] | None = None) -> Iterator[ObjectStream]:
        """Like ``read_objects_at`` for the live objects."""
        ...

    def read(self, name: str) -> Iterator[bytes]:
        """Stream one live object's data."""
        ...

    def stat(self, name: str) -> VolumeObject | None:
        """One live object with its xattrs and omap, or None when it does not exist."""
        ...

    def digest_at(self, snap_name: str, like: Mapping[str, str] | None = None) -> dict[str, str]:
        """name -> ``object_digest`` of every object at the snapshot (``digest_streams``: in the form
        of ``like[name]``, the digests to check against, where given)."""
        ...

    def digests_now(self, like: Mapping[str, str] | None = None) -> dict[str, str]:
        """name -> ``object_digest`` of every live object (forms as in ``digest_at``)."""
        ...

    def rollback_to(self, snap_name: str, keep: Iterable[str] | None = None) -> None:
        """Make the live volume equal the snapshot (``keep``: names at the snap, if already known)."""
        ...

    def write_objects(
        self,
        items: Iterable[ObjectStream],
        *,
        exact: bool = True,
        fresh: bool = False,
        created: set[str] | None = None,
        mark: str | None = None,
        whole: bool = False,
    ) -> int:
        """Write objects (data, xattrs, omap replaced whole); with ``exact`` remove every other object;
        ``fresh``: the caller found the volume empty, so nothing is listed, and an object that
        appeared since is never overwritten (the write fails); ``created`` gets the name of each
        object whose write went through, also when a later one fails; ``mark`` (with ``fresh``):
        each object carries ``WRITER_XATTR`` = ``mark`` from the op that creates it on; ``whole``:
        each object in one operation (its data held in memory, up to ``WHOLE_MAX``), so a kill or a
        reader sees the old object or the new one, never a part (larger ones go in pieces all the same)."""
        ...

    def clone_from_snapshot(
        self,
        snap_name: str,
        target: str,
        objects: Iterable[VolumeObject] | None = None,
        *,
        fresh: bool = False,
        created: set[str] | None = None,
        mark: str | None = None,
    ) -> Volume:
        """Copy the snapshot's content into a sibling volume named ``target``; return it (``objects``:
        the snapshot's objects with their metadata when the caller knows them, e.g. from a manifest;
        ``fresh``, ``created`` and ``mark`` as in ``write_objects``)."""
        ...

    def purge(self) -> int:
        """Delete every live object of the volume; return how many."""
        ...

    def remove_objects(self, names: Iterable[str], *, marked: str | None = None) -> int:
        """Delete the named objects (absent ones are fine) and nothing else; return how many were removed
        (``marked``: only those whose ``WRITER_XATTR`` is ``marked``, as one guarded step each)."""
        ...

    def unmark(self, names: Iterable[str]) -> int:
        """Take ``WRITER_XATTR`` off the named objects (absent objects are fine); return how many had it."""
        ...

    def close(self) -> None:
        """Release backend handles."""
        ...


@runtime_checkable
class VersionedVolume(Volume, Protocol):
    """A volume whose objects carry a version that every change moves: what incremental capture needs."""

    def stamp_scope(self) -> str:
        """Where versions are comparable (a cluster and pool): versions of two scopes never are."""
        ...

    def stamps_at(self, snap_name: str, names: list[str] | None = None) -> list[VolumeObject]:
        """Every object at the snapshot with size and version only (no xattrs, omap or data), sorted;
        of ``names`` only when given (a listing the caller already has; names absent there left out)."""
        ...

    def objects_at(self, snap_name: str, names: list[str] | None = None) -> list[VolumeObject]:
        """``Volume.objects_at``, of ``names`` only when given (names absent at the snapshot left out)."""
        ...


# ---------------------------------------------------------------- digests
BLAKE2B = "blake2b"
BLAKE3 = "blake3"
DIGEST_FORM = BLAKE3
"""The form new digests take (what backup records); readers accept every form in ``DIGEST_FORMS``."""

_B3_PREFIX = "b3:"
_DIGEST_TEXT = re.compile(r"(?:b3:)?[0-9a-f]{64}")
_TAGS = {BLAKE2B: b"drsvc-object-v1\0", BLAKE3: b"drsvc-object-v2\0"}
DIGEST_FORMS = tuple(_TAGS)


def digest_form(digest: str) -> str:
    """The form of a recorded digest, told by its text: ``b3:`` and 64 hex digits is BLAKE3; bare
    64 hex digits is the first form (blake2b-256), which manifests written before hold."""
    return BLAKE3 if digest.startswith(_B3_PREFIX) else BLAKE2B


def valid_digest(value: object) -> bool:
    """Whether ``value`` is a digest in one of the known forms (a manifest's entry is hostile input)."""
    return type(value) is str and _DIGEST_TEXT.fullmatch(value) is not None


class ObjectHasher:
    """Incremental ``object_digest``: feed data chunks with ``update``, then ``finish(xattrs, omap)``.

    ``form``: ``DIGEST_FORM`` (BLAKE3) for what is recorded now; a verifier takes the form of the
    digest it checks (``ObjectHasher.like(recorded)``), so points written before, and points that
    mix both forms (incremental capture copies an unchanged object's entry from its parent), verify.

    BLAKE3 is unkeyed here, unlike chunk ids: a chunk id names an object in the store, where anyone
    who can list it could confirm guessed content against an unkeyed hash; an object digest only
    sits inside manifests, which are sealed (AEAD) in the store, and in what drsvc prints to its
    operator. Unkeyed, a digest stays comparable across stores, tenants' keys and key rotation
    (``points diff``, restores of a point copied to another store) and a volume adapter computes it
    with no key material. The tag keeps the two forms' envelopes apart.
    """

    __slots__ = ("_data", "_size", "form")

    def __init__(self, form: str | None = None) -> None:
        form = form or DIGEST_FORM
        if form not in _TAGS:
            raise ValueError(f"unknown object digest form {form!r}")
        self.form = form
        # one thread: blake3 at ~0.17 CPU s/GiB on one core, and on 2 cores the other is busy
        # (reading, cutting, sealing); its threads bought no wall time here (docs/benchmarks.md)
        self._data: Any = blake3.blake3() if form == BLAKE3 else hashlib.blake2b(digest_size=32)
        self._size = 0

    @classmethod
    def like(cls, digest: str) -> ObjectHasher:
        """A hasher of the form ``digest`` was recorded in (to check an object against it)."""
        return cls(digest_form(digest))

    def update(self, chunk: bytes) -> None:
        self._data.update(chunk)
        self._size += len(chunk)

    def finish(self, xattrs: dict[str, bytes], omap: dict[str, bytes]) -> str:
        # Data goes through its own hash, then everything is length-prefixed: no two different
        # (data, xattrs, omap) triples can produce the same byte stream.
        parts = [_TAGS[self.form], self._data.digest(), struct.pack(">Q", self._size)]
        for tag, mapping in ((b"x", xattrs), (b"o", omap)):
            parts.append(tag + struct.pack(">I", len(mapping)))
            for key in sorted(mapping):
                k = key.encode()
                v = bytes(mapping[key])
                parts.append(struct.pack(">I", len(k)) + k + struct.pack(">Q", len(v)) + v)
        envelope = b"".join(parts)
        if self.form == BLAKE3:
            return _B3_PREFIX + blake3.blake3(envelope).hexdigest()
        return hashlib.blake2b(envelope, digest_size=32).hexdigest()


def object_digest(
    data_chunks: Iterable[bytes], xattrs: dict[str, bytes], omap: dict[str, bytes], form: str | None = None
) -> str:
    """The digest of an object's data, sorted xattrs and sorted omap in ``form`` (default
    ``DIGEST_FORM``); chunking does not matter. BLAKE3: ``b3:`` + 64 hex digits; the first form,
    blake2b-256: 64 hex digits."""
    hasher = ObjectHasher(form)
    for chunk in data_chunks:
        hasher.update(chunk)
    return hasher.finish(xattrs, omap)


def digest_streams(streams: Iterable[ObjectStream], like: Mapping[str, str] | None = None) -> dict[str, str]:
    """name -> ``object_digest`` for every (object, data chunks) pair; in the form of ``like[name]``
    where ``like`` (recorded digests to check against) names the object, else in ``DIGEST_FORM``."""
    out: dict[str, str] = {}
    for obj, chunks in streams:
        recorded = like.get(obj.name) if like is not None else None
        form = digest_form(recorded) if recorded is not None else None
        out[obj.name] = object_digest(chunks, obj.xattrs, obj.omap, form)
    return out
