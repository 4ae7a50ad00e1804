"""The aio read window for objects of known size (drsvc/volumes/rados_window.py), on a fake ioctx.

Pieces come back in order whatever the sizes; reads run ahead across objects but never past the
window (pieces and bytes); a failing read ends the stream with its error, naming the object, and
every completion still in flight is waited (librados must never be left holding a callback).
"""

from __future__ import annotations

import errno
import random
from typing import Any

import pytest

from drsvc.errors import DrsvcError, IntegrityError, NotFound
from drsvc.volumes import rados_window
from drsvc.volumes.base import VolumeObject
from drsvc.volumes.rados_io import _coalesce
from drsvc.volumes.rados_window import ReadWindow

PIECE = 8  # READ_SIZE for these tests


class FakeCompletion:
    def __init__(self, io: FakeIo, rv: int, data: bytes | None, callback: Any) -> None:
        self.io, self.rv, self.data, self.callback = io, rv, data, callback
        self.done = False

    def get_return_value(self) -> int:
        return self.rv

    def wait_for_complete_and_cb(self) -> None:
        if not self.done:
            self.done = True
            self.io.outstanding.remove(self)
            self.callback(self, self.data)


class FakeIo:
    """``aio_read`` of objects held in a dict; tracks what is in flight and the most ever at once."""

    def __init__(self, objects: dict[str, bytes], fail: dict[str, int] | None = None, short: str = "") -> None:
        self.objects = objects
        self.fail = fail or {}
        self.short = short
        self.outstanding: list[FakeCompletion] = []
        self.most_pieces = 0
        self.most_bytes = 0
        self.reads: list[tuple[str, int, int]] = []

    def aio_read(self, name: str, length: int, offset: int, callback: Any) -> FakeCompletion:
        self.reads.append((name, offset, length))
        if name in self.fail:
            comp = FakeCompletion(self, -self.fail[name], None, callback)
        else:
            data = self.objects[name][offset : offset + length]
            if name == self.short:
                data = data[:-1]
            # like the binding: the whole buffer comes back, the return value says how much is real
            comp = FakeCompletion(self, len(data), data + b"\xee" * (length - len(data)), callback)
        self.outstanding.append(comp)
        self.most_pieces = max(self.most_pieces, len(self.outstanding))
        self.most_bytes = max(self.most_bytes, sum(n for _, _, n in self.reads[-len(self.outstanding) :]))
        return comp


@pytest.fixture(autouse=True)
def small_pieces(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rados_window, "READ_SIZE", PIECE)


def volume(sizes: list[int]) -> tuple[dict[str, bytes], list[VolumeObject]]:
    data = {f"o{i:03d}": bytes((i * 7 + k) % 251 for k in range(n)) for i, n in enumerate(sizes)}
    return data, [VolumeObject(name, len(body)) for name, body in data.items()]


def window(io: FakeIo, pieces: int = 4, nbytes: int = 4 * PIECE) -> ReadWindow:
    return ReadWindow(io, "rados://p/ns", " at snapshot s", window=pieces, window_bytes=nbytes)


def test_objects_and_pieces_come_back_in_order_with_their_bytes() -> None:
    data, objs = volume([0, 1, PIECE, PIECE + 1, 3 * PIECE, 5, 0, 2 * PIECE - 1])
    io = FakeIo(data)
    got = {obj.name: b"".join(pieces) for obj, pieces in window(io).stream(objs)}
    assert list(got) == [o.name for o in objs]
    assert got == data
    assert not io.outstanding
    assert all(0 < n <= PIECE for _, _, n in io.reads)  # empty objects are not read


def test_reads_run_ahead_across_objects_but_never_past_the_window() -> None:
    data, objs = volume([3 * PIECE, 2 * PIECE, PIECE, PIECE, 4 * PIECE, 1, 1, 1])
    io = FakeIo(data)
    stream = window(io, pieces=3, nbytes=2 * PIECE + 1).stream(objs)
    first, pieces = next(stream)
    assert next(pieces) == data[first.name][:PIECE]
    # taking the first piece refilled the window: reads of this object and the next are in flight
    assert len(io.outstanding) >= 2 and {n for n, _, _ in io.reads} >= {"o000"}
    rest = b"".join(pieces)
    assert data[first.name] == data[first.name][:PIECE] + rest
    for obj, more in stream:
        assert b"".join(more) == data[obj.name]
    assert io.most_pieces <= 3
    assert io.most_bytes <= 2 * PIECE + 1
    assert io.most_pieces >= 2  # it did pipeline


def test_a_consumer_that_skips_an_object_does_not_shift_the_next() -> None:
    data, objs = volume([3 * PIECE, 2 * PIECE + 3, 4])
    io = FakeIo(data)
    seen = {}
    for obj, pieces in window(io).stream(objs):
        if obj.name != "o000":
            seen[obj.name] = b"".join(pieces)
    assert seen == {"o001": data["o001"], "o002": data["o002"]}
    assert not io.outstanding


@pytest.mark.parametrize(("code", "error"), [(errno.ENOENT, NotFound), (errno.EIO, DrsvcError)])
def test_a_failing_read_ends_the_stream_with_its_error_and_nothing_left_in_flight(code: int, error: type) -> None:
    data, objs = volume([PIECE, 2 * PIECE, 3 * PIECE, PIECE, PIECE])
    io = FakeIo(data, fail={"o002": code})
    seen = []
    with pytest.raises(error, match="o002"):
        for obj, pieces in window(io).stream(objs):
            seen.append((obj.name, b"".join(pieces)))
    assert seen == [("o000", data["o000"]), ("o001", data["o001"])]
    assert not io.outstanding  # every completion waited, callbacks run


def test_a_short_read_at_a_snapshot_is_an_integrity_error() -> None:
    data, objs = volume([PIECE, 2 * PIECE, PIECE])
    io = FakeIo(data, short="o001")
    with pytest.raises(IntegrityError, match=r"o001.*stat said 16"):
        for _obj, pieces in window(io).stream(objs):
            b"".join(pieces)
    assert not io.outstanding


def test_leaving_the_stream_early_waits_for_what_is_in_flight() -> None:
    data, objs = volume([2 * PIECE] * 6)
    io = FakeIo(data)
    stream = window(io).stream(objs)
    _obj, pieces = next(stream)
    next(pieces)
    assert io.outstanding
    stream.close()
    assert not io.outstanding


def test_coalesce_recuts_any_chunks_into_exact_pieces() -> None:
    """The restore's writer re-cuts chunks into 4 MiB writes: every byte once, in order, exact sizes."""
    rng = random.Random(5)
    for _ in range(2000):
        size = rng.randint(1, 20)
        chunks: list[Any] = [rng.randbytes(rng.randint(0, 50)) for _ in range(rng.randint(0, 8))]
        if rng.random() < 0.3:
            chunks = [memoryview(c) for c in chunks]
        out = list(_coalesce(chunks, size))
        assert b"".join(out) == b"".join(chunks)
        assert all(len(p) == size for p in out[:-1])
        assert not out or 0 < len(out[-1]) <= size
        assert all(type(p) is bytes for p in out)  # what aio_write takes
