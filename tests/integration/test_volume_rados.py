"""rados:// volumes on the real lab: reads at a pool snapshot, rollback, exact writes, clones.

The `desktops` pool is shared with other engineers' tests: every test here works in namespaces it
created (``vt<hex>-…``) and purges only those, and removes every pool snapshot it took.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import pytest

from drsvc.backup import snapshot_name
from drsvc.errors import BackendError, DrsvcError, IntegrityError, InvalidInput, NotFound
from drsvc.volumes import VolumeObject, object_digest, open_volume
from drsvc.volumes.rados import (
    RadosVolume,
    create_pool_snapshot,
    list_pool_snapshots,
    remove_pool_snapshot,
)

POOL = "desktops"
MiB = 1 << 20


@pytest.fixture
def ns(lab) -> Iterator[Callable[[str], RadosVolume]]:
    """ns(suffix) -> a RadosVolume in a fresh namespace of `desktops`, purged at teardown."""
    tag = f"vt{uuid.uuid4().hex[:8]}"
    made: list[RadosVolume] = []

    def make(suffix: str = "a") -> RadosVolume:
        vol = open_volume(f"rados://{POOL}/{tag}-{suffix}")
        assert isinstance(vol, RadosVolume)
        made.append(vol)
        return vol

    yield make
    for vol in made:
        vol.purge()
        vol.close()


@pytest.fixture
def snap(lab) -> Iterator[Callable[[], str]]:
    """snap() -> the name of a new pool snapshot of `desktops`, removed at teardown."""
    taken: list[str] = []

    def take() -> str:
        name = f"vt-{uuid.uuid4().hex[:10]}"
        taken.append(name)
        create_pool_snapshot(POOL, name)
        return name

    yield take
    for name in taken:
        remove_pool_snapshot(POOL, name)


def _content(size: int, seed: str) -> bytes:
    block = uuid.uuid5(uuid.NAMESPACE_OID, seed).bytes * 4096  # 64 KiB, distinct per seed
    return (block * (size // len(block) + 1))[:size]


ORIGINAL: dict[str, tuple[bytes, dict[str, bytes], dict[str, bytes]]] = {
    "docs/a.txt": (b"hello world\n" * 100, {"user.owner": b"alice", "user.mime": b"text/plain"}, {}),
    "conf/app.conf": (b"x=1\n", {}, {"setting.01": b"dark", "setting.02": b"en_US"}),
    "media/big.bin": (_content(9 * MiB + 123, "big"), {"user.mime": b"video/mp4"}, {}),
    "meta/profile": (b"", {"user.desktop": b"vt"}, {"tenant": b"acme"}),
    "var/old.log": (b"to be deleted\n" * 50, {}, {}),
}


def _streams(objs: dict[str, tuple[bytes, dict[str, bytes], dict[str, bytes]]], piece: int = 1 * MiB):
    for name, (data, xattrs, omap) in sorted(objs.items()):
        chunks = iter([data[i : i + piece] for i in range(0, len(data), piece)])
        yield VolumeObject(name, len(data), xattrs, omap), chunks


def _expected_objects(objs) -> list[VolumeObject]:
    return [VolumeObject(n, len(d), x, o) for n, (d, x, o) in sorted(objs.items())]


def _expected_digests(objs) -> dict[str, str]:
    return {n: object_digest([d], x, o) for n, (d, x, o) in objs.items()}


def _change_everything(vol: RadosVolume, io) -> None:
    """After the snap: overwrite one, delete one, create one, change an xattr and an omap key."""
    import rados

    io.set_namespace(vol.namespace)
    io.write_full("docs/a.txt", b"overwritten")
    io.set_xattr("docs/a.txt", "user.owner", b"mallory")
    io.rm_xattr("docs/a.txt", "user.mime")
    io.remove_object("var/old.log")
    io.write_full("new/created.txt", b"created after the snapshot")
    with rados.WriteOpCtx() as op:
        io.set_omap(op, ("setting.01", "setting.99"), (b"light", b"new"))
        io.operate_write_op(op, "conf/app.conf")
    io.write("media/big.bin", b"Z" * 100, 5 * MiB)


@pytest.fixture
def ioctx(rados_cluster):
    io = rados_cluster.open_ioctx(POOL)
    yield io
    io.close()


def test_reads_at_snapshot_are_exactly_the_old_content_then_rollback(ns, snap, ioctx):
    vol = ns()
    assert vol.write_objects(_streams(ORIGINAL)) == len(ORIGINAL)
    s = snap()
    _change_everything(vol, ioctx)

    # at the snap: exactly the old set (created object absent, deleted one present), old metadata
    assert vol.objects_at(s) == _expected_objects(ORIGINAL)
    for name, (data, _, _) in ORIGINAL.items():
        chunks = list(vol.read_at(s, name))
        assert all(len(c) <= 4 * MiB for c in chunks)
        assert b"".join(chunks) == data, name
    assert len(list(vol.read_at(s, "media/big.bin"))) == 3  # 9 MiB streamed in 4 MiB reads
    with pytest.raises(NotFound):
        list(vol.read_at(s, "new/created.txt"))
    assert vol.digest_at(s) == _expected_digests(ORIGINAL)

    # live: the changes are there
    now = {o.name: o for o in vol.objects_now()}
    assert "new/created.txt" in now and "var/old.log" not in now
    assert now["docs/a.txt"].xattrs == {"user.owner": b"mallory"}
    assert b"".join(vol.read("docs/a.txt")) == b"overwritten"

    # rollback: live == snap (deleted comes back, created removed, xattrs/omap/data restored)
    t = time.monotonic()
    vol.rollback_to(s, keep=[o.name for o in vol.objects_at(s)])
    print(f"\nrollback of {len(ORIGINAL)} objects: {time.monotonic() - t:.3f} s")
    assert vol.objects_now() == _expected_objects(ORIGINAL)
    assert vol.digests_now() == _expected_digests(ORIGINAL)


def test_one_pool_listing_names_what_each_namespace_listing_names(ns, snap, ioctx):
    """A backup batch lists its pool once (``names_by_volume``) instead of once per desktop: the
    names must be each namespace's own listing, and reading at the snapshot by those names must
    give what reading by the volume's own listing gives, after creates and deletes since."""
    changed, untouched, empty = ns("a"), ns("b"), ns("c")
    assert changed.write_objects(_streams(ORIGINAL)) == len(ORIGINAL)
    untouched.write_objects(_streams({"one": (b"1", {}, {}), "two/x": (b"22", {"user.k": b"v"}, {})}))
    s = snap()
    _change_everything(changed, ioctx)  # one deleted (still at the snap), one created (not at it)
    vols = [changed, untouched, empty]
    listing = changed.snapshots().names_by_volume([v.url for v in vols])
    assert set(listing) == {v.url for v in vols}
    for vol in vols:
        own = vol._names(vol._head_io())
        assert listing[vol.url] == own, vol.url
        names = listing[vol.url]
        assert vol.stamps_at(s, names) == vol.stamps_at(s)
        assert vol.objects_at(s, names) == vol.objects_at(s)
    assert "var/old.log" in listing[changed.url] and "new/created.txt" in listing[changed.url]
    assert [o.name for o in changed.objects_at(s, listing[changed.url])] == sorted(ORIGINAL)
    assert listing[empty.url] == []
    with pytest.raises(InvalidInput):
        changed.snapshots().names_by_volume(["rados://otherpool/x"])


def test_write_objects_exact_and_clone_reproduce_the_snapshot(ns, snap, ioctx):
    src = ns("src")
    src.write_objects(_streams(ORIGINAL))
    s = snap()
    _change_everything(src, ioctx)
    want = _expected_digests(ORIGINAL)

    # a restore from the cold tier: stream the snap's objects into another namespace holding junk
    dst = ns("dst")
    dst.write_objects(
        [
            (VolumeObject("junk", 4, {"user.x": b"1"}, {"k": b"v"}), iter([b"junk"])),
            (VolumeObject("docs/a.txt", 3, {"user.stale": b"1"}, {"stale": b"1"}), iter([b"old"])),
        ],
        exact=False,
    )
    assert dst.write_objects(src.read_objects_at(s), exact=True) == len(ORIGINAL)
    assert dst.digests_now() == want  # junk removed, stale xattr/omap gone

    # exact=False keeps what is there
    dst.write_objects([(VolumeObject("extra", 1), iter([b"e"]))], exact=False)
    assert set(dst.digests_now()) == {*want, "extra"}

    clone = src.clone_from_snapshot(s, f"{src.namespace}-clone")
    try:
        assert clone.url == f"rados://{POOL}/{src.namespace}-clone"
        assert clone.objects_now() == _expected_objects(ORIGINAL)
        assert clone.digests_now() == want
    finally:
        clone.purge()

    with pytest.raises(IntegrityError):
        dst.write_objects([(VolumeObject("short", 10), iter([b"abc"]))], exact=False)


def test_fresh_writes_list_nothing_and_never_overwrite(ns, snap, monkeypatch):
    """A namespace the caller found empty (a clone's): written without listing it again, and an
    object that appeared there since is left as it was (the write fails) instead of overwritten."""
    src = ns("src")
    src.write_objects([(VolumeObject(n, len(d), x, o), iter([d])) for n, (d, x, o) in ORIGINAL.items()])
    s = snap()
    want = src.digests_now()

    def no_listing(*_a: object) -> list[str]:
        raise AssertionError("a fresh namespace is not listed again")

    monkeypatch.setattr(RadosVolume, "_names_apart", no_listing)
    clone = src.clone_from_snapshot(s, ns("fresh").namespace, fresh=True)
    assert clone.digests_now() == want
    monkeypatch.undo()

    taken = ns("taken")
    taken.write_objects([(VolumeObject("docs/a.txt", 5, {"user.owner": b"bob"}), iter([b"bob's"]))], exact=False)
    theirs = taken.digests_now()
    with pytest.raises(DrsvcError, match=r"docs/a\.txt: the object exists.*not overwritten"):
        taken.write_objects(src.read_objects_at(s), exact=True, fresh=True)
    assert taken.digests_now()["docs/a.txt"] == theirs["docs/a.txt"]
    # a large object is written in pieces: none of them lands on one that was there already
    big = ns("taken-big")
    big.write_objects([(VolumeObject("media/big.bin", 5), iter([b"bob's"]))], exact=False)
    theirs = big.digests_now()
    with pytest.raises(DrsvcError, match=r"media/big\.bin: the object exists.*not overwritten"):
        src.clone_from_snapshot(s, big.namespace, fresh=True)
    assert big.digests_now()["media/big.bin"] == theirs["media/big.bin"]


def test_reader_agrees_with_the_fleet_generator(ns, snap, ioctx, fleetdata):
    """An independent writer (dev/fleet.py) vs this reader: same objects, same bytes, same metadata."""
    vol = ns("fleet")
    fleetdata.write_namespace(ioctx, 7, vol.namespace, data_mib=2)
    s = snap()
    expected = fleetdata.expected_objects(7, vol.namespace, 2)
    expected[fleetdata.MARKER] = (fleetdata.marker_value(7, 2), {}, {})
    ioctx.set_namespace(vol.namespace)
    ioctx.remove_object("meta/profile")
    assert vol.objects_at(s) == _expected_objects(expected)
    assert vol.digest_at(s) == _expected_digests(expected)


def test_pool_snapshot_lifecycle(lab, ns):
    vol = ns()
    name = snapshot_name(f"vt{uuid.uuid4().hex[:6]}", datetime.now(UTC), 1)
    times = []
    try:
        t = time.monotonic()
        sid = vol.snapshots().create(name)
        times.append(time.monotonic() - t)
        listed = {s.name: s for s in list_pool_snapshots(POOL)}
        assert listed[name].snap_id == sid
        assert abs((listed[name].created - datetime.now(UTC)).total_seconds()) < 120
        with pytest.raises(BackendError, match="already exists"):
            create_pool_snapshot(POOL, name)
    finally:
        remove_pool_snapshot(POOL, name)
    remove_pool_snapshot(POOL, name)  # missing is fine
    remove_pool_snapshot(f"no-such-pool-{uuid.uuid4().hex[:6]}", name)  # a missing pool too
    assert name not in {s.name for s in list_pool_snapshots(POOL)}
    with pytest.raises(NotFound, match=name):
        vol.objects_at(name)
    with pytest.raises(NotFound):
        vol.rollback_to(name)
    for _ in range(4):
        extra = f"vt-{uuid.uuid4().hex[:10]}"
        t = time.monotonic()
        create_pool_snapshot(POOL, extra)
        times.append(time.monotonic() - t)
        remove_pool_snapshot(POOL, extra)
    print(f"\npool snapshot create: {', '.join(f'{x * 1000:.0f}' for x in times)} ms")


def test_two_thousand_small_objects_timing(ns, snap, ioctx):
    """Timings printed, not asserted (2 shared cores); correctness of the counts is asserted."""
    n = int(os.environ.get("DRSVC_VOLUME_BENCH_N", "2000"))
    vol = ns("many")
    items = [
        (
            VolumeObject(
                f"f/{i:05d}",
                1024,
                {"user.i": str(i).encode()} if i % 3 == 0 else {},
                {"k": b"v"} if i % 5 == 0 else {},
            ),
            iter([bytes([i % 251]) * 1024]),
        )
        for i in range(n)
    ]
    timings: dict[str, float] = {}

    def timed(label: str, fn):
        t = time.monotonic()
        out = fn()
        timings[label] = time.monotonic() - t
        return out

    timed("write_objects", lambda: vol.write_objects(items))
    s = timed("pool snapshot", snap)
    ioctx.set_namespace(vol.namespace)
    for i in range(0, n, 10):  # change 10 %
        ioctx.write_full(f"f/{i:05d}", b"changed")
    objs = timed("objects_at (list+stat+xattrs+omap)", lambda: vol.objects_at(s))
    assert len(objs) == n
    digests = timed("digest_at (objects_at + all data)", lambda: vol.digest_at(s))
    assert len(digests) == n

    import rados

    def sequential() -> int:  # baseline: one round trip after another, as a naive reader would
        ioctx.set_read(ioctx.lookup_snap(s).snap_id)
        try:
            for o in ioctx.list_objects():
                ioctx.stat(o.key)
                dict(ioctx.get_xattrs(o.key))
                ioctx.read(o.key, 4 * MiB)
        finally:
            ioctx.set_read(rados.LIBRADOS_SNAP_HEAD)
        return 0

    timed("sequential baseline (stat+xattrs+read)", sequential)
    timed("rollback_to", lambda: vol.rollback_to(s, keep=[o.name for o in objs]))
    assert vol.digests_now() == digests
    print(f"\n{n} small objects:")
    for label, secs in timings.items():
        print(f"  {label:42s} {secs:7.3f} s")


_SETTLE_THEN_COLLECT = """
import gc, sys, time
from drsvc import ceph
from drsvc.volumes.rados import RadosPoolSnapshots
snaps = RadosPoolSnapshots(sys.argv[1])
for _ in range(int(sys.argv[2])):
    io = ceph.open_ioctx(ceph.cluster(), sys.argv[1])
    snaps._settle(io)   # the aio_stat burst every pool snapshot ends with (callbacks)
    io.close()
    del io
    gc.collect()        # holds the GIL: librados' finisher cannot run a pending callback first
    time.sleep(0.005)   # ... now it can
print("ok")
"""


def test_settle_survives_a_garbage_collection_right_after(lab):
    """The CI segfault: callbacks still pending when the snapshot's Ioctx was dropped and collected.

    Waiting with ``wait_for_complete()`` let ``create`` return before librados' finisher had run
    the aio_stat callbacks; the completions and their Ioctx then formed an unreachable cycle that
    the next garbage collection freed, and the finisher called back into freed memory. Run in a
    child so that a crash fails this test instead of killing the session.
    """
    import subprocess
    import sys

    p = subprocess.run(
        [sys.executable, "-X", "faulthandler", "-c", _SETTLE_THEN_COLLECT, POOL, "5"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode == 0 and p.stdout.strip() == "ok", f"exit {p.returncode}\n{p.stderr[-3000:]}"


def test_stamps_through_the_c_api_are_the_bindings_and_move_with_every_change(ns, snap, ioctx, monkeypatch):
    """``stamps_at`` takes versions from aio completions (``rados_stamps``, librados' C API): the same
    name, size, version and mtime the binding's per-thread stats give, at every snapshot, and a
    version that moves with each kind of change (data, xattr, omap, append; deleted and created
    objects left out or in)."""
    from drsvc.volumes import rados_stamps

    vol = ns()
    vol.write_objects(_streams(ORIGINAL))
    before = snap()
    _change_everything(vol, ioctx)
    after = snap()
    fast = {s: vol.stamps_at(s) for s in (before, after)}
    assert fast[before] and rados_stamps._clusters, "the C API was not used"
    monkeypatch.setattr(rados_stamps, "stamps", lambda *a, **k: None)  # as where librados cannot be loaded
    for s in (before, after):
        assert fast[s] == vol.stamps_at(s), s
    old = {o.name: o for o in fast[before]}
    new = {o.name: o for o in fast[after]}
    assert sorted(old) == sorted(ORIGINAL)
    assert "var/old.log" not in new and "new/created.txt" in new
    for name in ("docs/a.txt", "conf/app.conf", "media/big.bin"):
        assert new[name].version != old[name].version, name
    untouched = set(old) - {"docs/a.txt", "conf/app.conf", "media/big.bin", "var/old.log"}
    assert untouched and all(new[n].version == old[n].version for n in untouched)


def test_metadata_through_one_compound_op_is_the_bindings(ns, snap, ioctx, monkeypatch):
    """``objects_at`` reads each object's size, version, mtime, xattrs and omap with one compound aio
    op (``rados_stamps.metadata``): what the binding's stat, getxattrs and omap reads give, at every
    snapshot, for names asked that are absent too, and for an omap longer than one page."""
    import rados

    from drsvc.volumes import rados_stamps

    vol = ns()
    vol.write_objects(_streams(ORIGINAL))
    ioctx.set_namespace(vol.namespace)
    keys = [f"k{i:05d}" for i in range(2 * rados_stamps.OMAP_PAGE + 7)]
    with rados.WriteOpCtx() as op:
        ioctx.set_omap(op, tuple(keys), tuple(k.encode() * 3 for k in keys))
        ioctx.operate_write_op(op, "meta/profile")
    before = snap()
    _change_everything(vol, ioctx)
    after = snap()
    calls = []
    real = rados_stamps.metadata
    monkeypatch.setattr(rados_stamps, "metadata", lambda *a, **k: calls.append(a) or real(*a, **k))
    asked = [*sorted(ORIGINAL), "new/created.txt", "not/there"]
    fast = {s: vol.objects_at(s) for s in (before, after)} | {"asked": vol.objects_at(after, asked)}
    assert len(calls) == 3 and all(fast.values()), "the C API was not used"
    profile = {o.name: o for o in fast[before]}["meta/profile"]
    assert profile.omap == {"tenant": b"acme"} | {k: k.encode() * 3 for k in keys}
    assert profile.xattrs == {"user.desktop": b"vt"} and profile.size == 0
    assert [o.name for o in fast["asked"]] == sorted({*ORIGINAL, "new/created.txt"} - {"var/old.log"})  # deleted
    monkeypatch.setattr(rados_stamps, "metadata", lambda *a, **k: None)  # as where librados cannot be loaded
    slow = {s: vol.objects_at(s) for s in (before, after)} | {"asked": vol.objects_at(after, asked)}
    assert fast == slow
    assert [(o.name, o.version) for o in fast[after]] == [(o.name, o.version) for o in vol.stamps_at(after)]
