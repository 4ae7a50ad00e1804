"""Checkpoint archives as tar streams: walk the members, pass most through as read, rewrite a few.

Podman, CRI-O and drsvc's Docker adapter share one archive layout (``config.dump``,
``spec.dump``, ``checkpoint/`` CRIU images, ``rootfs-diff.tar``, ``deleted.files`` …). An archive
holds the desktop's memory pages, so nothing here holds one whole: ``TarWalker`` reads a header,
hands out the member, and its data passes through block by block unless the caller reads it.
Members the caller does not rewrite come out byte for byte as they went in (their extended
headers included); a rewritten member gets a fresh PAX header. ``checked`` passes an archive
through while ``ArchiveCheck`` holds every member to the ``drsvc.containment`` rules.
"""

from __future__ import annotations

import json
import tarfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import BinaryIO

from drsvc.containment import CHECKPOINT, ROOTFS_DIFF, Escape, MemberRules, clean, prefixes
from drsvc.errors import BackendError, IntegrityError

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
    renames: Mapping[str, str] | None = None,
) -> Iterator[bytes]:
    """Stream a tar archive, replacing small members through ``edits[name]`` (None drops the member).

    Members not named pass through block by block (memory stays bounded whatever their size);
    named members are read whole, so only name small ones (``config.dump``). ``renames`` gives a
    passing member a new name (a fresh header, its data streamed); an editor may fill it for
    members that come later. ``append`` adds members (name, data) before the end-of-archive
    marker, which the archive must then have.
    """
    walker = TarWalker(src)
    renames = renames if renames is not None else {}
    for m in walker:
        if m.name in edits and m.info.isfile():
            data = walker.read(m.info.size)
            editor = edits[m.name]
            if editor is not None:
                yield file_member(m.info, m.name, editor(data))
        elif m.name in renames and m.info.isfile():
            yield member_header(m.info, renames[m.name], m.info.size)
            yield from walker.data()
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


# ---------------------------------------------------------------------- checking a stream as it passes
DELETED_FILES_LIMIT = 16 << 20  # bytes of a deleted-files list read (JSON of paths; far above any real one)
Sink = Callable[[bytes], None]


class TarScanner:
    """A tar stream pushed in pieces of any size: each header is parsed as it passes, data handed on.

    ``on_member(info, name)`` is called per member (pax and GNU long names and sizes applied) and
    may return a sink for that member's data. Nothing is buffered beyond one header or one
    extended header, so it can sit beside a stream of any size (and inside another scanner).
    """

    def __init__(self, on_member: Callable[[tarfile.TarInfo, str], Sink | None], *, what: str = "archive") -> None:
        self._on_member = on_member
        self.what = what
        self._buf = bytearray()
        self._left = 0  # data bytes of the current member still to come
        self._pad = 0  # padding bytes after them
        self._sink: Sink | None = None
        self._ext: bytearray | None = None  # the data of an extended header being read
        self._ext_type = b""
        self._pax: dict[str, str] = {}
        self._long: dict[bytes, str] = {}
        self.ended = False  # an end-of-archive block was seen
        self.members = 0

    def feed(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        i, n = 0, len(view)
        while i < n and not self.ended:
            if self._left:
                take = min(self._left, n - i)
                piece = view[i : i + take]
                if self._ext is not None:
                    self._ext += piece
                elif self._sink is not None:
                    self._sink(bytes(piece))
                self._left -= take
                i += take
                if not self._left:
                    self._member_done()
            elif self._pad:
                take = min(self._pad, n - i)
                self._pad -= take
                i += take
            else:
                take = min(BLOCK - len(self._buf), n - i)
                self._buf += view[i : i + take]
                i += take
                if len(self._buf) == BLOCK:
                    header = bytes(self._buf)
                    self._buf.clear()
                    self._header(header)

    def close(self) -> None:
        """The stream ended: refuse it if it stopped inside a member (truncated)."""
        if self._left or self._pad or self._buf or self._ext is not None:
            raise IntegrityError(f"{self.what} ends in the middle of a member (truncated)")

    def _header(self, header: bytes) -> None:
        if header == b"\0" * BLOCK:
            self.ended = True
            return
        try:
            info = tarfile.TarInfo.frombuf(header, "utf-8", "surrogateescape")
        except tarfile.HeaderError as e:
            raise IntegrityError(f"{self.what}: not a tar stream ({e})") from None
        if info.type in _EXTENSIONS:
            self._ext, self._ext_type = bytearray(), info.type
            self._left, self._pad = info.size, _padded(info.size) - info.size
            if not self._left:
                self._member_done()
            return
        name = self._long.pop(tarfile.GNUTYPE_LONGNAME, None) or self._pax.get("path") or info.name
        info.name = name
        linkname = self._long.pop(tarfile.GNUTYPE_LONGLINK, None) or self._pax.get("linkpath")
        if linkname is not None:
            info.linkname = linkname
        if "size" in self._pax:
            try:
                info.size = int(self._pax["size"])
            except ValueError:
                raise IntegrityError(f"{self.what}: member {name!r} has a malformed pax size") from None
        self._pax = {}
        self.members += 1
        self._sink = self._on_member(info, name)
        size = info.size if info.type in tarfile.REGULAR_TYPES else 0
        self._left, self._pad = size, _padded(size) - size
        if not size:
            self._member_done()

    def _member_done(self) -> None:
        if self._ext is not None:
            data, kind = bytes(self._ext), self._ext_type
            self._ext = None
            if kind == tarfile.XHDTYPE:
                self._pax = _pax_records(data)
            elif kind in (tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK):
                self._long[kind] = data.rstrip(b"\0").decode("utf-8", "surrogateescape")
            return
        self._sink = None


class ArchiveCheck:
    """Checks a checkpoint archive as it streams past (``drsvc.containment`` rules, nothing buffered).

    The archive's own members: files and directories with clean names; every nested ``*.tar``
    (``rootfs-diff.tar``, ``devshm-checkpoint.tar``, Podman's ``volumes/NAME.tar``: each is
    unpacked by the runtime) by the root filesystem rules; the
    ``deleted.files`` list: clean paths, none beneath a symlink the rootfs diff creates. The first
    violation raises ``containment.Escape`` (exit 4) naming the member and why.
    """

    def __init__(self, *, what: str = "checkpoint archive") -> None:
        self.what = what
        self.outer = MemberRules(CHECKPOINT, context="")
        self.nested: dict[str, tuple[TarScanner, MemberRules]] = {}
        self.deleted: list[str] = []
        self._deleted_raw = bytearray()
        self.scanner = TarScanner(self._member, what=what)

    def feed(self, data: bytes | memoryview) -> None:
        self.scanner.feed(data)

    def close(self) -> None:
        """The whole archive has passed: check what needs all of it (deletions against the diff)."""
        self.scanner.close()
        for name, (scanner, _) in self.nested.items():
            if not scanner.ended:
                raise IntegrityError(f"{self.what}: {name} ends without its end-of-archive marker (truncated)")
        if self._deleted_raw:
            self._check_deleted(bytes(self._deleted_raw))
            self._deleted_raw.clear()

    def _member(self, info: tarfile.TarInfo, name: str) -> Sink | None:
        rel = self.outer.check(info, name)
        if not info.isfile():
            return None
        if rel.endswith(".tar") and ("/" not in rel or rel.startswith("volumes/")):
            rules = MemberRules(ROOTFS_DIFF, context=f"{rel}: ")
            scanner = TarScanner(lambda i, n: (rules.check(i, n), None)[1], what=f"{self.what}: {rel}")
            self.nested[rel] = (scanner, rules)
            return scanner.feed
        if rel == "deleted.files":
            if info.size > DELETED_FILES_LIMIT:
                raise Escape(f"{self.what}: deleted.files is {info.size} bytes, over the {DELETED_FILES_LIMIT} limit")
            return self._deleted_raw.extend
        return None

    def _check_deleted(self, data: bytes) -> None:
        try:
            paths = json.loads(data or b"[]") or []
        except ValueError:
            raise IntegrityError(f"{self.what}: deleted.files is not a JSON list") from None
        if not isinstance(paths, list):
            raise IntegrityError(f"{self.what}: deleted.files is not a JSON list")
        rules = self.nested.get("rootfs-diff.tar", (None, MemberRules(ROOTFS_DIFF)))[1]
        for path in paths:
            rel = clean(path, what=f"{self.what}: deleted.files entry", absolute=True)
            if not rel:
                raise Escape(f"{self.what}: deleted.files names the root itself")
            for prefix in prefixes(rel):
                if prefix in rules.links and prefix != rel:
                    raise Escape(
                        f"{self.what}: deleted.files entry {path!r} lies beneath {prefix!r}, "
                        "a symlink the rootfs diff creates"
                    )
            self.deleted.append(rel)


def checked(pieces: Iterable[bytes], *, what: str = "checkpoint archive") -> Iterator[bytes]:
    """Pass a checkpoint archive through unchanged while ``ArchiveCheck`` checks it; raise at the first violation.

    The pieces come out as they went in; the last one is held back until the end has been
    checked, so a consumer never receives a whole archive whose tail breaks the rules.
    """
    check = ArchiveCheck(what=what)
    held: bytes | None = None
    for piece in pieces:
        check.feed(piece)
        if held is not None:
            yield held
        held = piece
    check.close()
    if held is not None:
        yield held


def _pax_records(data: bytes) -> dict[str, str]:
    out: dict[str, str] = {}
    pos = 0
    while pos < len(data):
        space = data.find(b" ", pos)
        if space < 0:
            break
        try:
            length = int(data[pos:space])
        except ValueError:
            break
        if length <= 0:
            break
        record = data[space + 1 : pos + length].rstrip(b"\n")
        key, _, value = record.partition(b"=")
        out[key.decode("utf-8", "surrogateescape")] = value.decode("utf-8", "surrogateescape")
        pos += length
    return out
