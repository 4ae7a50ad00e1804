"""Cutting streams into chunks: FastCDC 2020 with a keyed gear table, block by block.

Streams are cut block by block with the tail carried over, so memory stays bounded whatever the
stream size. A stream of objects (a volume) is cut in *segments*: each object of at least
``avg_size`` alone, the smaller ones between them together, so large objects dedup like files
whatever lies beside them.
"""

from __future__ import annotations

from collections.abc import Generator, Iterable, Iterator
from dataclasses import asdict, dataclass
from typing import Any, BinaryIO, Protocol

from pyfastcdc import FastCDC

from drsvc.chunks.layout import BLOCK_SIZE, KiB, MiB
from drsvc.errors import InvalidInput

# The average chunk size a new store may be made with (``[hot] chunk_kib``): powers of two from a
# 4 KiB minimum chunk (a page; smaller chunks cost more in ids and objects than they save) to a
# 4 MiB maximum one (one RADOS read; ``FRAME_MAX``). Stores keep what they were made with.
AVG_KIB_DEFAULT = 128
AVG_KIB_RANGE = (16, 1024)


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

    @classmethod
    def for_average(cls, avg_kib: int) -> ChunkerParams:
        """The parameters of a new store cutting ``avg_kib`` KiB chunks on average: the default's
        ratios (minimum a quarter, maximum four times the average; normalization 1)."""
        low, high = AVG_KIB_RANGE
        if not (low <= avg_kib <= high and avg_kib & (avg_kib - 1) == 0):
            raise InvalidInput(f"average chunk size {avg_kib} KiB: expected a power of two from {low} to {high}")
        avg = avg_kib * KiB
        return cls(avg // 4, avg, avg * 4)

    @property
    def avg_kib(self) -> int:
        """The average chunk size in KiB (rounded down)."""
        return self.avg_size // KiB

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


def _stable(piece: bytes | bytearray | memoryview) -> memoryview:
    """A byte view of ``piece`` that nobody can change while a chunk cut from it is in flight: a
    ``bytes`` piece as it is, anything else (a buffer its producer may reuse) copied."""
    return memoryview(piece if isinstance(piece, bytes) else bytes(piece))


def _blocks(source: Source, size: int) -> Iterator[memoryview]:
    """The bytes of ``source`` as a series of read-only views, in order (empty ones possible).

    An iterable's pieces and a ``read``'s results are taken as they are (no copy when they are
    ``bytes``); a ``readinto`` source fills a fresh ``size``-byte buffer per block, which nothing
    writes again once it is handed out.
    """
    if isinstance(source, bytes | bytearray | memoryview):
        yield _stable(source)  # one buffer, not an iterable of ints
        return
    readinto = getattr(source, "readinto", None)
    if readinto is not None:
        while True:
            view = memoryview(bytearray(size))
            n = 0
            while n < size:
                got = readinto(view[n:])
                if not got:
                    break
                n += got
            yield view[:n]
            if n < size:
                return
    read = getattr(source, "read", None)
    if read is not None:
        while data := read(size):
            yield _stable(data)
        return
    for piece in source:  # type: ignore[union-attr]
        yield _stable(piece)


class Cutter:
    """Cuts segments into chunks with the store's parameters and the key's gear-table seed."""

    def __init__(self, params: ChunkerParams, seed: int, block_size: int = BLOCK_SIZE) -> None:
        self.params = params
        self.block_size = max(block_size, 2 * params.max_size)
        self.span = 2 * params.max_size  # the least a cut is tried on before the end of a segment
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
        """Yield chunks of one segment, as views of its own pieces wherever a chunk lies within one.

        A FastCDC cut depends only on bytes from the chunk's start up to the cut, so every cut found
        in a buffer before its end is the one the whole stream would give; only a buffer's last
        (possibly truncated) chunk is *carried* and cut again with what follows. The carried bytes
        are joined (copied) with at most ``max_size`` bytes of the next piece: the last chunk of that
        join starts inside the piece, and cutting goes on from there in the piece itself. So a
        volume's 4 MiB pieces are cut without copying them into blocks first (that copy, and the
        page faults of a fresh block buffer, held the GIL for ~1 s per GiB on the capture thread).
        Pieces smaller than ``span`` together are gathered first (small objects, short reads).
        Memory: a chunk in flight keeps its piece (or join, at most ``span`` + ``max_size`` bytes) alive.
        """
        carry: list[memoryview] = []  # bytes from the start of the next chunk on, not cut yet
        carried = 0
        for piece in _blocks(source, self.block_size):
            if carried + len(piece) < self.span:
                if piece:
                    carry.append(piece)
                    carried += len(piece)
                continue
            data = piece
            if carry:
                take = min(len(piece), self.params.max_size)
                joined = memoryview(b"".join([*carry, piece[:take]]))
                last = yield from self._all_but_last(joined)
                if take == len(piece):
                    carry, carried = [joined[last:]], len(joined) - last
                    continue
                data = piece[last - carried :]  # the join's last chunk starts in the piece: last >= carried
            last = yield from self._all_but_last(data)
            carry, carried = [data[last:]], len(data) - last
        if carried:
            data = carry[0] if len(carry) == 1 else memoryview(b"".join(carry))
            for c in self.cdc.cut_buf(data):
                yield data[c.offset : c.offset + c.length]

    def _all_but_last(self, data: memoryview) -> Generator[memoryview, None, int]:
        """Yield the chunks of ``data`` but its last; return where the last starts."""
        cuts = [(c.offset, c.length) for c in self.cdc.cut_buf(data)]
        for off, length in cuts[:-1]:
            yield data[off : off + length]
        return cuts[-1][0]


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
