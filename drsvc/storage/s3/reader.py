"""A zero-copy, seekable file over bytes for boto3's uploads (it may rewind a body to retry)."""

from __future__ import annotations

import io
from typing import Any


class _ViewReader(io.RawIOBase):
    """A seekable read-only file over a buffer, without copying it (``io.BytesIO`` copies anything but ``bytes``).

    botocore reads a body several times (the payload's signature, then the send; again on a
    retry), a block at a time, seeking back in between; a 16 MiB pack buffer is never duplicated.
    With ``views=True`` a sized read returns a slice of the buffer itself, not a copy: for a body
    whose blocks go straight to a hash or ``socket.sendall`` within the call (a single PutObject),
    it saves copying every byte once per pass. The caller keeps the buffer unchanged until then.
    """

    def __init__(self, data: bytes | bytearray | memoryview, *, views: bool = False) -> None:
        self._view = memoryview(data).cast("B")
        self._pos = 0
        self._views = views

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def __len__(self) -> int:
        return len(self._view)

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: len(self._view)}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buffer: Any) -> int:
        piece = self._view[self._pos : self._pos + len(buffer)]
        n = len(piece)
        memoryview(buffer).cast("B")[:n] = piece
        self._pos += n
        return n

    def read(self, size: int = -1) -> Any:
        whole = size is None or size < 0  # a reader that takes everything at once keeps it: a copy
        piece = self._view[self._pos : len(self._view) if whole else self._pos + size]
        self._pos += len(piece)
        return piece if self._views and not whole else bytes(piece)

    def readall(self) -> Any:
        return self.read()
