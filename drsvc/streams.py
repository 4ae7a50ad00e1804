"""File objects over iterators of byte strings: chunk-store reads and runtime archives are
produced piece by piece but consumed by APIs that want something with ``read()``."""

from __future__ import annotations

import io
from collections.abc import Iterable
from typing import Any


class IterReader(io.RawIOBase):
    """A read-only raw stream over an iterable of byte strings (never holds more than one piece)."""

    def __init__(self, pieces: Iterable[bytes | bytearray | memoryview]) -> None:
        self._pieces = iter(pieces)
        self._current = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._current:
            piece = next(self._pieces, None)
            if piece is None:
                return 0
            self._current = memoryview(piece).cast("B")
        n = min(len(buffer), len(self._current))
        buffer[:n] = self._current[:n]
        self._current = self._current[n:]
        return n
