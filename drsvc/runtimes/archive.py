"""Checkpoint archives as tar streams: walk the members, pass most through as read, rewrite a few.

Podman, CRI-O and drsvc's Docker adapter share one archive layout (``config.dump``,
``spec.dump``, ``checkpoint/`` CRIU images, ``rootfs-diff.tar``, ``deleted.files`` …). An archive
holds the desktop's memory pages, so nothing here holds one whole: ``TarWalker`` reads a header,
hands out the member, and its data passes through block by block unless the caller reads it.
Members the caller does not rewrite come out byte for byte as they went in (their extended
headers included); a rewritten member gets a fresh PAX header.
"""

from __future__ import annotations

import tarfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import BinaryIO

from drsvc.errors import BackendError

CHUNK = 1 << 20
BLOCK = 512
END = b"\0" * (2 * BLOCK)  # the end-of-archive marker

Editor = Callable[[bytes], bytes]

_EXTENSIONS = (tarfile.XHDTYPE, tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK, tarfile.XGLTYPE)


@dataclass(frozen=True)
class Member:
    """One member's header as read: its full name (without ``./``), parsed and raw."""

    name: str
    info: tarfile.TarInfo
    raw: bytes  # the header block, preceded by any extended headers that belong to it


class TarWalker:
    """Iterate a tar stream's members; read, pass through or skip each one's data before the next."""

    def __init__(self, src: BinaryIO) -> None:
        self._src = src
        self._left = 0  # padded data bytes of the current member not yet read
        self._tail = b""  # the first block that is not a member header (end marker or garbage)
        self.ended = False  # an end-of-archive block was seen

    def __iter__(self) -> Iterator[Member]:
        pending: list[bytes] = []  # pax / GNU long-name headers that belong to the next member
        name: str | None = None
        while True:
            self._skip()
            header = read_exact(self._src, BLOCK)
            if len(header) < BLOCK or header == b"\0" * BLOCK:
                self._tail = b"".join(pending) + header
                self.ended = header == b"\0" * BLOCK
                return
            try:
                info = tarfile.TarInfo.frombuf(header, "utf-8", "surrogateescape")
            except tarfile.HeaderError as e:
                raise BackendError(f"checkpoint archive is not a tar stream: {e}") from e
            padded = _padded(info.size)
            if info.type in _EXTENSIONS:
                ext = read_exact(self._src, padded)
                if info.type == tarfile.GNUTYPE_LONGNAME:
                    name = ext[: info.size].rstrip(b"\0").decode("utf-8", "surrogateescape")
                elif info.type == tarfile.XHDTYPE:
                    name = _pax_path(ext[: info.size]) or name
                pending.append(header + ext)
                continue
            self._left = padded
            yield Member((name or info.name).removeprefix("./"), info, b"".join(pending) + header)
            pending, name = [], None

    def data(self) -> Iterator[bytes]:
        """The current member's data as stored (padded to whole blocks), in pieces of at most 1 MiB."""
        while self._left:
            block = self._src.read(min(CHUNK, self._left))
            if not block:
                raise BackendError("checkpoint archive ends in the middle of a member")
            self._left -= len(block)
            yield block

    def read(self, size: int) -> bytes:
        """The current member's data whole (its first ``size`` bytes): for small members only."""
        return b"".join(self.data())[:size]

    def end(self) -> Iterator[bytes]:
        """What follows the last member: the end-of-archive marker and the rest of the stream."""
        yield self._tail
        while block := self._src.read(CHUNK):
            yield block

    def _skip(self) -> None:
        for _ in self.data():
            pass


def member_header(template: tarfile.TarInfo, name: str, size: int) -> bytes:
    """A fresh PAX header for ``name`` of ``size`` bytes with ``template``'s mode, owner and times."""
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = size, template.mode, template.mtime
    info.uid, info.gid, info.uname, info.gname = template.uid, template.gid, template.uname, template.gname
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


def file_member(template: tarfile.TarInfo, name: str, data: bytes) -> bytes:
    """A whole regular-file member (header with ``template``'s attributes, data, padding)."""
    return member_header(template, name, len(data)) + data + b"\0" * (-len(data) % BLOCK)


def stream_member(template: tarfile.TarInfo, name: str, size: int, source: BinaryIO) -> Iterator[bytes]:
    """A member of ``size`` bytes read from ``source`` (header, data in pieces, padding)."""
    yield member_header(template, name, size)
    left = size
    while left:
        block = source.read(min(CHUNK, left))
        if not block:
            raise BackendError(f"{name}: its source ended {left} bytes early")
        left -= len(block)
        yield block
    yield b"\0" * (-size % BLOCK)


def rewrite_archive(
    src: BinaryIO,
    edits: Mapping[str, Editor | None],
    *,
    append: Iterable[tuple[str, bytes]] = (),
) -> Iterator[bytes]:
    """Stream a tar archive, replacing small members through ``edits[name]`` (None drops the member).

    Members not named pass through block by block (memory stays bounded whatever their size);
    named members are read whole, so only name small ones (``config.dump``). ``append`` adds
    members (name, data) before the end-of-archive marker, which the archive must then have.
    """
    walker = TarWalker(src)
    for m in walker:
        if m.name in edits and m.info.isfile():
            data = walker.read(m.info.size)
            editor = edits[m.name]
            if editor is not None:
                yield file_member(m.info, m.name, editor(data))
        else:
            yield m.raw
            yield from walker.data()
    extra = [file_member(_new_file(name), name, data) for name, data in append]
    if extra:
        if not walker.ended:
            raise BackendError("checkpoint archive ends without an end-of-archive marker (truncated?)")
        yield b"".join(extra) + END
        return
    yield from walker.end()


def read_exact(src: BinaryIO, n: int) -> bytes:
    """``n`` bytes from ``src``, fewer only at its end."""
    buf = bytearray()
    while len(buf) < n:
        block = src.read(n - len(buf))
        if not block:
            break
        buf += block
    return bytes(buf)


def _new_file(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.mode, info.mtime = 0o600, int(time.time())
    return info


def _padded(size: int) -> int:
    return -(-size // BLOCK) * BLOCK


def _pax_path(records: bytes) -> str | None:
    for line in records.split(b"\n"):
        _, _, kv = line.partition(b" ")
        key, _, value = kv.partition(b"=")
        if key == b"path":
            return value.decode("utf-8", "surrogateescape")
    return None
