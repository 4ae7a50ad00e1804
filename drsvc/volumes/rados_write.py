"""Writing whole objects into a namespace through one window of librados aio writes.

Each object is replaced whole by one compound op — ``remove`` (FAILOK) or an exclusive create,
then ``write_full`` + ``write``s of its first ``FIRST_OP_MAX`` bytes, its xattrs and omap — so no
stale xattr or omap key survives and, into a namespace found empty (``fresh``), an object that
appeared since is never written over: the whole op fails. Data past ``FIRST_OP_MAX`` follows as
``aio_write`` at explicit offsets (ops on one object keep their order); when the create was
exclusive, only once that create went through, so those plain writes cannot land on someone
else's object. Objects up to ``FIRST_OP_MAX`` (a 24 MiB media file) therefore never stall the
window: before, every fresh object past 4 MiB waited for its create before its next piece, and a
1 GiB desktop's restore spent ~0.9 s there with the window draining.

The window holds at most ``window`` ops and ``window_bytes`` bytes in flight, across object
boundaries. librados copies the data of every op it is given, so nothing here is kept alive for it.
"""

from __future__ import annotations

import collections
import errno
from collections.abc import Iterable, Iterator
from typing import Any

from drsvc import ceph, faults
from drsvc.errors import DrsvcError, IntegrityError, InvalidInput
from drsvc.volumes.base import READ_SIZE, WHOLE_MAX, WRITER_XATTR, ObjectStream, VolumeObject
from drsvc.volumes.rados_io import _coalesce, _drain, _rv_error

FIRST_OP_MAX = 32 * 1024 * 1024  # data carried by an object's first (creating) op; well under osd_max_write_size


class _Op:
    """One aio write in flight: ``size`` bytes of object ``name``; ``op`` the compound op (None: a plain write)."""

    __slots__ = ("comp", "name", "op", "size")

    def __init__(self, name: str, size: int, comp: Any, op: Any) -> None:
        self.name, self.size, self.comp, self.op = name, size, comp, op


class WriteWindow:
    """Objects written whole into one I/O context (a namespace's head), pipelined through aio.

    ``fresh``: create each object exclusively (the caller found the namespace empty).
    ``created``: gets the name of every object whose creating op went through, also when a later
    one fails (what a failed restore's teardown may remove, and nothing else).
    ``mark``: the creating op also sets ``WRITER_XATTR`` to it (``drsvc.volumes.rados_removal``).
    ``whole``: objects up to ``WHOLE_MAX`` in their creating op alone (a kill never leaves part of one).
    """

    def __init__(
        self,
        io: Any,
        url: str,
        *,
        window: int,
        window_bytes: int,
        fresh: bool = False,
        created: set[str] | None = None,
        mark: str | None = None,
        whole: bool = False,
    ) -> None:
        self.io = io
        self.url = url
        self.window = max(1, window)
        self.window_bytes = max(READ_SIZE, window_bytes)
        self.first_max = max(READ_SIZE, min(FIRST_OP_MAX, self.window_bytes))
        if whole:  # atomic replacement: the creating op carries the object whole, up to WHOLE_MAX
            self.first_max = WHOLE_MAX
        self.fresh = fresh
        self.created = created
        self.mark = mark
        self.inflight: collections.deque[_Op] = collections.deque()
        self.inflight_bytes = 0

    def write_all(self, items: Iterable[ObjectStream]) -> set[str]:
        """Write every (object, data chunks); the names written. A data stream whose length differs
        from ``object.size`` raises ``IntegrityError``; a failed op raises naming its object."""
        written: set[str] = set()
        try:
            for obj, chunks in items:
                if not obj.name or obj.name in written:
                    raise InvalidInput(f"write to {self.url}: empty or repeated object name {obj.name!r}")
                faults.point("mid-restore-volume")
                size = self._write_one(obj, _coalesce(chunks, READ_SIZE))
                written.add(obj.name)
                if size != obj.size:
                    raise IntegrityError(
                        f"write {self.url}/{obj.name}: data stream of {size} bytes, expected {obj.size}"
                    )
            while self.inflight:
                self._reap()
        finally:
            _drain(self.inflight, self._wait)
        return written

    def _write_one(self, obj: VolumeObject, pieces: Iterator[bytes]) -> int:
        """Submit one object's ops; the bytes its data stream held."""
        head: list[bytes] = []
        offset = 0
        for piece in pieces:  # the creating op takes up to first_max bytes
            head.append(piece)
            offset += len(piece)
            if offset + READ_SIZE > self.first_max:
                break
        self._room(offset)
        comp, op = self._submit_first(obj, head)
        self._push(_Op(obj.name, offset, comp, op))
        rest = next(pieces, None)
        if rest is None:
            return offset
        if self.fresh:
            # plain writes only once the exclusive create went through: never onto another's object
            self._written(obj.name, ceph.wait(comp).get_return_value())
        for piece in _chain(rest, pieces):
            faults.point("mid-object-write")
            self._room(len(piece))
            with ceph.ceph_errors(f"write {self.url}/{obj.name}"):
                done = self.io.aio_write(obj.name, piece, offset)
            self._push(_Op(obj.name, len(piece), done, None))
            offset += len(piece)
        return offset

    def _submit_first(self, obj: VolumeObject, head: list[bytes]) -> tuple[Any, Any]:
        """The compound op replacing ``obj`` with ``head`` (its first pieces) and its metadata: (completion, op)."""
        rados = ceph.rados_module()
        op = self.io.create_write_op()
        try:
            if self.fresh:  # never over an object that appeared since the namespace was found empty
                op.new(rados.LIBRADOS_CREATE_EXCLUSIVE)
            else:
                op.remove()
                op.set_flags(rados.LIBRADOS_OP_FLAG_FAILOK)  # absent is fine: this is a create
            op.write_full(head[0] if head else b"")
            at = len(head[0]) if head else 0
            for piece in head[1:]:
                op.write(piece, at)
                at += len(piece)
            for key, value in obj.xattrs.items():
                op.set_xattr(key, bytes(value))
            if self.mark is not None:  # in the creating op: marked exactly when this writer made it
                op.set_xattr(WRITER_XATTR, self.mark.encode())
            if obj.omap:
                self.io.set_omap(op, tuple(obj.omap), tuple(bytes(v) for v in obj.omap.values()))
            with ceph.ceph_errors(f"write {self.url}/{obj.name}"):
                return self.io.operate_aio_write_op(op, obj.name), op
        except BaseException:
            op.release()
            raise

    def _push(self, entry: _Op) -> None:
        self.inflight.append(entry)
        self.inflight_bytes += entry.size

    def _room(self, size: int) -> None:
        """Wait until ``size`` more bytes and one more op fit the window."""
        while self.inflight and (len(self.inflight) >= self.window or self.inflight_bytes + size > self.window_bytes):
            self._reap()

    def _reap(self) -> None:
        entry = self.inflight.popleft()
        self.inflight_bytes -= entry.size
        self._wait(entry)
        self._written(entry.name, entry.comp.get_return_value())

    def _wait(self, entry: _Op) -> None:
        ceph.wait(entry.comp)
        if entry.op is not None:
            entry.op.release()
            entry.op = None
            # the op that creates (or replaces) the object: from here on it is this writer's
            if self.created is not None and entry.comp.get_return_value() >= 0:
                self.created.add(entry.name)

    def _written(self, name: str, rv: int) -> None:
        """Raise for a failed write of object ``name``."""
        if rv == -errno.EEXIST and self.fresh:
            raise DrsvcError(
                f"write {self.url}/{name}: the object exists, though the namespace was empty when the "
                "restore began (someone writes there); it is not overwritten"
            )
        if rv < 0:
            raise _rv_error(f"write {self.url}/{name}", rv)


def _chain(first: bytes, rest: Iterator[bytes]) -> Iterator[bytes]:
    yield first
    yield from rest
