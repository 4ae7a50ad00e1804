"""Cutting streams into chunks: FastCDC 2020 with a keyed gear table, block by block.

Streams are cut block by block with the tail carried over, so memory stays bounded whatever the
stream size. A stream of objects (a volume) is cut in *segments*: each object of at least
``avg_size`` alone, the smaller ones between them together, so large objects dedup like files
whatever lies beside them.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from typing import Any, BinaryIO, Protocol

from pyfastcdc import FastCDC

from drsvc.chunks.layout import BLOCK_SIZE, KiB, MiB
from drsvc.errors import InvalidInput
from drsvc.streams import IterReader


@dataclass(frozen=True)
class ChunkerParams:
    """FastCDC 2020 parameters, stored in the config so every writer cuts identically."""

    min_size: int = 32 * KiB
    avg_size: int = 128 * KiB
    max_size: int = 512 * KiB
    normalization: int = 1

    def __post_init__(self) -> None:
        if not (
            64 <= self.min_size <= self.avg_size <= self.max_size <= 16 * MiB
            and 256 <= self.avg_size <= 4 * MiB
            and self.max_size >= 1024
            and 0 <= self.normalization <= 3
        ):
            raise InvalidInput(f"invalid chunker parameters {self}")

    def to_dict(self) -> dict[str, Any]:
        """JSON form for the config."""
        return {"algorithm": "fastcdc-2020", "seed": "keyed", **asdict(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ChunkerParams:
        """Parse the config form."""
        if d.get("algorithm") != "fastcdc-2020":
            raise InvalidInput(f"unsupported chunker {d.get('algorithm')!r}")
        return cls(int(d["min_size"]), int(d["avg_size"]), int(d["max_size"]), int(d["normalization"]))


class _Readable(Protocol):
    def read(self, n: int = -1, /) -> bytes: ...


Source = BinaryIO | _Readable | Iterable[bytes] | bytes  # what write_stream chunks


def _reader(source: BinaryIO | _Readable | Iterable[bytes | memoryview] | bytes) -> Any:
    """A ``readinto(memoryview) -> int`` over a binary file or an iterable of byte strings."""
    if isinstance(source, bytes | bytearray | memoryview):
        source = [memoryview(source)]  # one buffer, not an iterable of ints
    readinto = getattr(source, "readinto", None)
    if readinto is not None:
        return readinto
    read = getattr(source, "read", None)
    if read is not None:

        def from_read(view: memoryview) -> int:
            data = read(len(view))
            view[: len(data)] = data
            return len(data)

        return from_read
    return IterReader(source).readinto  # type: ignore[arg-type]


class Cutter:
    """Cuts segments into chunks with the store's parameters and the key's gear-table seed."""

    def __init__(self, params: ChunkerParams, seed: int, block_size: int = BLOCK_SIZE) -> None:
        self.params = params
        self.block_size = max(block_size, 2 * params.max_size)
        self.cdc = FastCDC(
            params.avg_size,
            min_size=params.min_size,
            max_size=params.max_size,
            normalized_chunking=params.normalization,  # type: ignore[arg-type]
            seed=seed,
        )

    def cut(self, segments: Iterable[Source]) -> Iterator[memoryview]:
        """Yield chunks of each segment in turn: the end of a segment always ends a chunk."""
        for segment in segments:
            yield from self.cut_segment(segment)

    def cut_segment(self, source: Source) -> Iterator[memoryview]:
        """Yield chunks of one segment; reads ``block_size`` at a time and carries the tail chunk over.

        A FastCDC cut depends only on bytes from the chunk's start up to the cut, so every cut found
        before the end of a block is the one the whole stream would give; only the last (possibly
        truncated) chunk of a block is re-cut together with the next block.
        """
        readinto = _reader(source)
        tail = b""
        eof = False
        while not eof:
            buf = bytearray(len(tail) + self.block_size)
            buf[: len(tail)] = tail
            view = memoryview(buf)
            n = len(tail)
            while n < len(buf):
                got = readinto(view[n:])
                if not got:
                    eof = True
                    break
                n += got
            if n == 0:
                return
            data = view[:n]
            cuts = [(c.offset, c.length) for c in self.cdc.cut_buf(data)]
            if not eof:
                last_off, _ = cuts.pop()
                tail = bytes(data[last_off:])
            for off, length in cuts:
                yield data[off : off + length]


class ObjectSegments:
    """Segments of a stream of objects ``(size, pieces)``: each object of ``align`` bytes or more
    alone, the smaller ones between them together. Lazy: a segment pulls its objects while it is
    read, in order (so iterate the segments one after the other, reading each before the next)."""

    def __init__(self, objects: Iterable[tuple[int, Iterable[bytes]]], align: int) -> None:
        self._objects = iter(objects)
        self._align = align
        self._ahead: Iterable[bytes] | None = None  # a large object met while reading a run of small ones
        self._exhausted = False

    def __iter__(self) -> Iterator[Iterable[bytes]]:
        while not self._exhausted or self._ahead is not None:
            if self._ahead is not None:
                big, self._ahead = self._ahead, None
                yield big
            else:
                yield self._small_run()

    def _small_run(self) -> Iterator[bytes]:
        for size, pieces in self._objects:
            if size >= self._align:
                self._ahead = pieces
                return
            yield from pieces
        self._exhausted = True
