"""An index of a checkpoint's root filesystem changes, taken while the archive streams past.

A checkpoint archive (Podman's layout, which every runtime adapter produces) carries the
container's writable-layer changes as a nested tar, ``rootfs-diff.tar``, and the paths deleted
from the image as ``deleted.files`` (a JSON list). ``ArchiveIndexer`` wraps the archive on its way
into the chunk store and records, for each member of the nested tar, its path, type, size, mode,
owner, mtime, link target and -- for regular files -- where its data starts *in the archive
stream as stored*, so a single file can later be read back by byte range without fetching the
memory pages around it. Nothing is buffered but header blocks (and ``deleted.files``, capped):
data passes through untouched and uncopied, so it costs nothing measurable beside chunking.

The index goes into the manifest (``checkpoint.rootfs``); everything in it came from a
container and is hostile: readers must treat paths as untrusted names, never as host paths.
"""

from __future__ import annotations

import json
import tarfile
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, BinaryIO

BLOCK = 512
ROOTFS_DIFF = "rootfs-diff.tar"
DELETED_FILES = "deleted.files"
MAX_ENTRIES = 200_000  # past this the index says it is truncated (the manifest must stay readable)
MAX_EXTENSION = 1 << 20  # a pax or long-name header larger than this is not a header we record
MAX_DELETED = 1 << 20  # bytes of deleted.files read

_TYPES = {
    tarfile.REGTYPE: "file",
    tarfile.AREGTYPE: "file",
    tarfile.CONTTYPE: "file",
    tarfile.DIRTYPE: "dir",
    tarfile.SYMTYPE: "symlink",
    tarfile.LNKTYPE: "hardlink",
    tarfile.CHRTYPE: "char",
    tarfile.BLKTYPE: "block",
    tarfile.FIFOTYPE: "fifo",
}
_EXTENSIONS = (tarfile.XHDTYPE, tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK, tarfile.XGLTYPE)


@dataclass
class TarMember:
    """One member as its header describes it; ``offset`` = where its data starts in the outer stream."""

    path: str
    type: str
    size: int
    mode: int
    uid: int
    gid: int
    mtime: int
    link: str | None
    offset: int

    def document(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"path": self.path, "type": self.type, "size": self.size, "mode": self.mode}
        doc.update(uid=self.uid, gid=self.gid, mtime=self.mtime)
        if self.link is not None:
            doc["link"] = self.link
        if self.type == "file":
            doc["offset"] = self.offset
        return doc


class TarScanner:
    """Incremental tar header parser: ``feed`` it the stream piece by piece, in order.

    ``on_member(member, data_start)`` is called for each member (extension headers folded in) and
    may return a sink that receives the member's data (without padding), or None to skip it.
    """

    def __init__(self, on_member: Callable[[TarMember], Callable[[memoryview], None] | None], *, base: int = 0) -> None:
        self._on_member = on_member
        self._base = base  # offset of this tar's first byte in the outermost stream
        self._pos = 0  # bytes of this tar consumed so far
        self._need = BLOCK  # bytes wanted by the current state
        self._buf = bytearray()
        self._state = "header"  # header | ext | data | pad | end
        self._ext_type = b""
        self._ext_size = 0
        self._pending_name: str | None = None
        self._pending_link: str | None = None
        self._sink: Callable[[memoryview], None] | None = None
        self._pad = 0
        self.ended = False

    def feed(self, data: memoryview) -> None:
        """Consume ``data``; header blocks are buffered, member data is handed to sinks or skipped."""
        while data and not self.ended:
            take = min(self._need, len(data))
            piece, data = data[:take], data[take:]
            self._pos += take
            self._need -= take
            if self._state == "data":
                if self._sink is not None:
                    self._sink(piece)
            elif self._state in ("header", "ext"):
                self._buf += piece
            if self._need == 0:
                self._advance()

    def _advance(self) -> None:
        state = self._state
        if state == "header":
            self._header(bytes(self._buf))
        elif state == "ext":
            self._extension(bytes(self._buf))
        elif state == "data":
            self._state, self._need = "pad", self._pad
            if self._need == 0:
                self._state, self._need = "header", BLOCK
        elif state == "pad":
            self._state, self._need = "header", BLOCK
        self._buf.clear()

    def _header(self, block: bytes) -> None:
        if block == b"\0" * BLOCK:
            self.ended = True
            return
        try:
            info = tarfile.TarInfo.frombuf(block, "utf-8", "surrogateescape")
        except tarfile.HeaderError:
            self.ended = True  # not a tar (or damaged): stop indexing, the data still passes
            return
        padded = -(-info.size // BLOCK) * BLOCK
        if info.type in _EXTENSIONS:
            if padded > MAX_EXTENSION:
                self.ended = True
                return
            self._state, self._need, self._ext_type = "ext", padded, info.type
            self._ext_size = info.size
            if padded == 0:
                self._state, self._need = "header", BLOCK
            return
        name = self._pending_name or info.name
        link = self._pending_link or info.linkname or None
        self._pending_name = self._pending_link = None
        member = TarMember(
            path=name.removeprefix("./").rstrip("/") or ".",
            type=_TYPES.get(info.type, "other"),
            size=info.size if info.type in (tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.CONTTYPE) else 0,
            mode=info.mode,
            uid=info.uid,
            gid=info.gid,
            mtime=int(info.mtime),
            link=link if info.type in (tarfile.SYMTYPE, tarfile.LNKTYPE) else None,
            offset=self._base + self._pos,
        )
        self._sink = self._on_member(member)
        # hardlinks and others carry no data even when a size is set; a regular file does
        data_size = info.size if info.type not in (tarfile.LNKTYPE, tarfile.SYMTYPE, tarfile.DIRTYPE) else 0
        self._pad = -(-data_size // BLOCK) * BLOCK - data_size
        self._state, self._need = "data", data_size
        if data_size == 0:
            self._state, self._need = "header", BLOCK

    def _extension(self, raw: bytes) -> None:
        payload = raw[: self._ext_size]
        if self._ext_type == tarfile.GNUTYPE_LONGNAME:
            self._pending_name = payload.rstrip(b"\0").decode("utf-8", "surrogateescape")
        elif self._ext_type == tarfile.GNUTYPE_LONGLINK:
            self._pending_link = payload.rstrip(b"\0").decode("utf-8", "surrogateescape")
        elif self._ext_type == tarfile.XHDTYPE:
            for key, value in _pax_records(payload):
                if key == "path":
                    self._pending_name = value
                elif key == "linkpath":
                    self._pending_link = value
        self._state, self._need = "header", BLOCK


def _pax_records(payload: bytes) -> list[tuple[str, str]]:
    out = []
    pos = 0
    while pos < len(payload):
        space = payload.find(b" ", pos)
        if space < 0:
            break
        try:
            length = int(payload[pos:space])
        except ValueError:
            break
        if length <= 0:
            break
        record = payload[space + 1 : pos + length].rstrip(b"\n")
        key, _, value = record.partition(b"=")
        out.append((key.decode("utf-8", "replace"), value.decode("utf-8", "surrogateescape")))
        pos += length
    return out


@dataclass
class RootfsIndex:
    """What ``ArchiveIndexer`` found: the nested diff's members and the deleted paths."""

    files: list[TarMember] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    truncated: bool = False
    found_diff: bool = False

    def document(self) -> dict[str, Any]:
        """The manifest's ``checkpoint.rootfs`` (format 1)."""
        doc: dict[str, Any] = {
            "format": 1,
            "files": [m.document() for m in self.files],
            "deleted": self.deleted,
        }
        if self.truncated:
            doc["truncated"] = True
        if not self.found_diff:
            doc["notes"] = [f"the archive has no {ROOTFS_DIFF}: no root filesystem changes"]
        return doc


class ArchiveIndexer:
    """A file object over a checkpoint archive that indexes its root filesystem changes as it is read."""

    def __init__(self, src: BinaryIO) -> None:
        self._src = src
        self.index = RootfsIndex()
        self._deleted = bytearray()
        self._outer = TarScanner(self._outer_member)

    def _outer_member(self, member: TarMember) -> Callable[[memoryview], None] | None:
        if member.path == ROOTFS_DIFF and member.type == "file":
            self.index.found_diff = True
            inner = TarScanner(self._inner_member, base=member.offset)
            return inner.feed
        if member.path == DELETED_FILES and member.type == "file":
            return self._collect_deleted
        return None

    def _inner_member(self, member: TarMember) -> None:
        if len(self.index.files) >= MAX_ENTRIES:
            self.index.truncated = True
        elif member.path != ".":
            self.index.files.append(member)
        return None

    def _collect_deleted(self, piece: memoryview) -> None:
        if len(self._deleted) < MAX_DELETED:
            self._deleted += piece[: MAX_DELETED - len(self._deleted)]

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        readinto = getattr(self._src, "readinto", None)
        if readinto is not None:
            n = readinto(view) or 0
        else:
            data = self._src.read(len(view))
            n = len(data)
            view[:n] = data
        if n:
            self._outer.feed(view[:n])
        return n

    def read(self, n: int = -1) -> bytes:
        buf = bytearray(n if n and n > 0 else 1 << 20)
        got = self.readinto(buf)
        return bytes(buf[:got])

    def finish(self) -> RootfsIndex:
        """The index, once the whole archive was read (``deleted.files`` parsed here)."""
        if self._deleted:
            try:
                gone = json.loads(bytes(self._deleted))
                if isinstance(gone, list):
                    self.index.deleted = [str(p).lstrip("/") for p in gone[:MAX_ENTRIES]]
            except ValueError:
                pass  # not JSON: an archive layout we do not know; the diff itself is still indexed
        return self.index
