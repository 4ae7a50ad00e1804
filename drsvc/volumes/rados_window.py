"""Reading objects of known size (at a pool snapshot) through one window of librados aio reads.

Every object is read as pieces of at most ``READ_SIZE`` bytes, each an ``aio_read`` at its offset;
the window holds at most ``window`` pieces and ``window_bytes`` bytes in flight, across object
boundaries, so a 24 MiB object is six reads in flight together with the next objects' (before,
only an object's first 4 MiB came from the window and the rest from synchronous reads, one round
trip after another on the consumer's thread). Objects come out in input order, each with an
iterator of its pieces in order; taking a piece submits the next ones, so reads stay ahead of the
consumer by the window and memory stays bounded by it.
"""

from __future__ import annotations

import collections
import errno
from collections.abc import Iterable, Iterator
from typing import Any

from drsvc import ceph
from drsvc.errors import IntegrityError, NotFound
from drsvc.volumes.base import READ_SIZE, ObjectStream, VolumeObject
from drsvc.volumes.rados_io import _drain, _rv_error


class _Piece:
    """One aio read in flight: ``length`` bytes of object number ``seq`` at ``offset``."""

    __slots__ = ("comp", "data", "last", "length", "obj", "offset", "seq")

    def __init__(self, seq: int, obj: VolumeObject, offset: int, length: int, last: bool) -> None:
        self.seq, self.obj, self.offset, self.length, self.last = seq, obj, offset, length, last
        self.comp: Any = None
        self.data = b""

    def on_read(self, comp: Any, data: bytes | None) -> None:
        # the binding hands back its whole (uninitialised) buffer when a read returns fewer bytes
        rv = comp.get_return_value()
        if data is not None and rv >= 0:
            self.data = data[:rv]


def _pieces(objects: Iterable[VolumeObject]) -> Iterator[_Piece]:
    """Every read to make, in order; an empty object is one piece of no bytes (nothing submitted)."""
    for seq, obj in enumerate(objects):
        if obj.size <= 0:
            yield _Piece(seq, obj, 0, 0, True)
            continue
        for offset in range(0, obj.size, READ_SIZE):
            length = min(READ_SIZE, obj.size - offset)
            yield _Piece(seq, obj, offset, length, offset + length >= obj.size)


class ReadWindow:
    """Objects of known size from one I/O context (a snapshot's): pieces read ahead by aio, in order."""

    def __init__(self, io: Any, url: str, where: str, *, window: int, window_bytes: int) -> None:
        self.io = io
        self.url = url
        self.where = where
        self.window = max(1, window)
        self.window_bytes = max(READ_SIZE, window_bytes)
        self.inflight: collections.deque[_Piece] = collections.deque()
        self.inflight_bytes = 0
        self._todo: Iterator[_Piece] = iter(())
        self._next: _Piece | None = None

    def stream(self, objects: Iterable[VolumeObject]) -> Iterator[ObjectStream]:
        """(object, its data pieces) in input order; a piece's error is raised where it is taken."""
        self._todo = _pieces(objects)
        self._next = next(self._todo, None)
        try:
            self._fill()
            while self.inflight:
                head = self.inflight[0]
                data = self._data(head.seq)
                yield head.obj, data
                for _ in data:  # a consumer that stopped early must not shift the next object
                    pass
        finally:
            _drain(self.inflight, self._wait)

    def _fill(self) -> None:
        """Submit reads while the window has room (always one, so a piece larger than the bytes bound goes)."""
        while self._next is not None and (
            not self.inflight
            or (len(self.inflight) < self.window and self.inflight_bytes + self._next.length <= self.window_bytes)
        ):
            piece = self._next
            if piece.length:
                with ceph.ceph_errors(f"read {self.url}/{piece.obj.name}{self.where}"):
                    piece.comp = self.io.aio_read(piece.obj.name, piece.length, piece.offset, piece.on_read)
            self.inflight.append(piece)
            self.inflight_bytes += piece.length
            self._next = next(self._todo, None)

    def _data(self, seq: int) -> Iterator[bytes]:
        """Object ``seq``'s pieces as they complete, each checked, the window refilled after each."""
        while self.inflight and self.inflight[0].seq == seq:
            piece = self.inflight.popleft()
            self.inflight_bytes -= piece.length
            self._wait(piece)
            self._check(piece)
            self._fill()
            if piece.data:
                yield piece.data
            if piece.last:
                return

    def _check(self, piece: _Piece) -> None:
        if piece.comp is None:
            return
        rv = piece.comp.get_return_value()
        name = piece.obj.name
        if rv == -errno.ENOENT:
            raise NotFound(f"object {name} not found in {self.url}{self.where}")
        if rv < 0:
            raise _rv_error(f"read {self.url}/{name}{self.where}", rv)
        if len(piece.data) != piece.length:  # the size is final at a snapshot: short means it lied
            got = piece.offset + len(piece.data)
            raise IntegrityError(f"{self.url}/{name}{self.where}: read {got} bytes, stat said {piece.obj.size}")

    @staticmethod
    def _wait(piece: _Piece) -> None:
        if piece.comp is not None:
            ceph.wait(piece.comp)
