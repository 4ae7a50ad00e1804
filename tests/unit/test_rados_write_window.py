"""The aio write window (drsvc/volumes/rados_write.py), on a fake ioctx that applies ops when waited.

An object up to the first op's cap is one compound op (its create and all its data), so a fresh
namespace's writes never stop the window to wait for a create; past the cap, plain writes follow
only once an exclusive create went through, so none lands on an object that appeared meanwhile;
a stream shorter than its object fails; every completion is waited, even after an error.
"""

from __future__ import annotations

import errno
from typing import Any

import pytest

from drsvc.errors import DrsvcError, IntegrityError
from drsvc.volumes import rados_write
from drsvc.volumes.base import WRITER_XATTR, VolumeObject
from drsvc.volumes.rados_write import WriteWindow

PIECE = 8  # READ_SIZE for these tests


class FakeCompletion:
    def __init__(self, io: FakeIo, apply: Any) -> None:
        self.io, self.apply, self.rv, self.done = io, apply, 0, False

    def get_return_value(self) -> int:
        return self.rv

    def wait_for_complete_and_cb(self) -> None:
        if not self.done:
            self.done = True
            self.io.outstanding.remove(self)
            self.rv = self.apply()


class FakeOp:
    def __init__(self) -> None:
        self.steps: list[tuple[str, Any]] = []
        self.released = False

    def new(self, flag: int) -> None:
        self.steps.append(("new", flag))

    def remove(self) -> None:
        self.steps.append(("remove", None))

    def set_flags(self, flag: int) -> None:
        self.steps.append(("flags", flag))

    def write_full(self, data: bytes) -> None:
        self.steps.append(("write", (bytes(data), 0)))

    def write(self, data: bytes, offset: int) -> None:
        self.steps.append(("write", (bytes(data), offset)))

    def set_xattr(self, key: str, value: bytes) -> None:
        self.steps.append(("xattr", (key, value)))

    def release(self) -> None:
        self.released = True


class FakeIo:
    """Objects in a dict; an op takes effect when its completion is waited (as late as librados may)."""

    def __init__(self, existing: dict[str, bytes] | None = None) -> None:
        self.objects: dict[str, bytearray] = {k: bytearray(v) for k, v in (existing or {}).items()}
        self.outstanding: list[FakeCompletion] = []
        self.log: list[tuple[str, str]] = []  # (kind, object) in submission order
        self.waited_creates: set[str] = set()
        self.ops: list[FakeOp] = []

    def create_write_op(self) -> FakeOp:
        op = FakeOp()
        self.ops.append(op)
        return op

    def set_omap(self, op: FakeOp, keys: tuple[str, ...], values: tuple[bytes, ...]) -> None:
        op.steps.append(("omap", dict(zip(keys, values, strict=True))))

    def operate_aio_write_op(self, op: FakeOp, name: str) -> FakeCompletion:
        self.log.append(("op", name))

        def apply() -> int:
            if ("new", rados_write.ceph.rados_module().LIBRADOS_CREATE_EXCLUSIVE) in op.steps:
                self.waited_creates.add(name)
                if name in self.objects:
                    return -errno.EEXIST
            body = bytearray()
            for kind, arg in op.steps:
                if kind == "write":
                    data, offset = arg
                    body[offset : offset + len(data)] = data
            self.objects[name] = body
            return 0

        return self._pending(apply)

    def aio_write(self, name: str, data: bytes, offset: int) -> FakeCompletion:
        self.log.append(("write", name))
        # a plain write into a fresh namespace is only made once its exclusive create was waited
        self.plain_after_create = name in self.waited_creates

        def apply() -> int:
            body = self.objects.setdefault(name, bytearray())
            body[offset : offset + len(data)] = data
            return 0

        return self._pending(apply)

    def _pending(self, apply: Any) -> FakeCompletion:
        comp = FakeCompletion(self, apply)
        self.outstanding.append(comp)
        return comp


@pytest.fixture(autouse=True)
def small_pieces(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rados_write, "READ_SIZE", PIECE)
    monkeypatch.setattr(rados_write, "FIRST_OP_MAX", 4 * PIECE)


def body(name: str, size: int) -> bytes:
    return bytes((len(name) * 31 + k) % 251 for k in range(size))


def items(sizes: dict[str, int], chunk: int = 5) -> list[tuple[VolumeObject, Any]]:
    out = []
    for name, size in sizes.items():
        data = body(name, size)
        out.append(
            (VolumeObject(name, size, {"user.a": b"1"}), iter([data[i : i + chunk] for i in range(0, size, chunk)]))
        )
    return out


def window(io: FakeIo, *, fresh: bool, created: set[str] | None = None) -> WriteWindow:
    return WriteWindow(io, "rados://p/ns", window=4, window_bytes=64 * PIECE, fresh=fresh, created=created)


@pytest.mark.parametrize("fresh", [True, False])
def test_objects_up_to_the_cap_are_one_op_each_and_never_wait_for_their_create(fresh: bool) -> None:
    io = FakeIo()
    sizes = {"a": 0, "b": 3, "c": 4 * PIECE, "d": 4 * PIECE - 1, "e": 17}
    created: set[str] = set()
    assert window(io, fresh=fresh, created=created).write_all(items(sizes)) == set(sizes)
    assert [kind for kind, _ in io.log] == ["op"] * len(sizes)  # data and create in one op each
    assert {k: bytes(v) for k, v in io.objects.items()} == {n: body(n, s) for n, s in sizes.items()}
    assert created == set(sizes)
    assert all(op.released for op in io.ops) and not io.outstanding


def test_past_the_cap_a_fresh_object_gets_plain_writes_only_after_its_create_went_through() -> None:
    io = FakeIo()
    sizes = {"big": 9 * PIECE + 3, "small": 2}
    window(io, fresh=True).write_all(items(sizes))
    assert io.log[0] == ("op", "big") and ("write", "big") in io.log
    assert io.plain_after_create
    assert bytes(io.objects["big"]) == body("big", sizes["big"])


def test_an_object_that_appeared_meanwhile_is_never_written_over() -> None:
    theirs = b"someone else's"
    io = FakeIo({"big": theirs})
    created: set[str] = set()
    with pytest.raises(DrsvcError, match="big: the object exists"):
        window(io, fresh=True, created=created).write_all(items({"first": 3, "big": 9 * PIECE}))
    assert bytes(io.objects["big"]) == theirs
    assert ("write", "big") not in io.log
    assert "big" not in created and not io.outstanding


def test_a_stream_shorter_than_its_object_fails_and_everything_in_flight_is_waited() -> None:
    io = FakeIo()
    obj = VolumeObject("short", 10)
    with pytest.raises(IntegrityError, match="data stream of 3 bytes, expected 10"):
        window(io, fresh=False).write_all([(obj, iter([b"abc"])), *items({"never": 4})])
    assert not io.outstanding and "never" not in io.objects


def test_the_writer_mark_rides_in_the_creating_op_only() -> None:
    io = FakeIo()
    w = WriteWindow(io, "rados://p/ns", window=4, window_bytes=64 * PIECE, fresh=True, mark="restore-7")
    w.write_all(items({"big": 9 * PIECE, "small": 3}))
    marks = [op for op in io.ops if ("xattr", (WRITER_XATTR, b"restore-7")) in op.steps]
    assert len(marks) == len(io.ops) == 2  # one creating op per object, each marked; plain writes carry none
