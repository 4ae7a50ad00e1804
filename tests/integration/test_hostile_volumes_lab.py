"""A tenant's own RADOS namespace is hostile: what it names must fail that desktop alone.

A desktop's processes hold librados credentials for their namespace, so they choose its object
names, xattr names and omap keys as raw bytes. The Python binding decodes each as strict UTF-8;
one object named ``b"bad\\xffname"`` made that decode raise out of the batch's one pool listing
and failed every desktop of the backup run, not only the tenant's own.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator

import pytest


def _rados(lab, namespace: str, *args: bytes, data: bytes | None = None) -> None:
    """The rados CLI on ``desktops``/``namespace`` with raw (possibly non-UTF-8) arguments, the way a
    tenant's own librados client can name things."""
    conf = lab.ceph_conf.encode()
    cmd = [b"rados", b"-c", conf, b"-p", b"desktops", b"-N", namespace.encode(), *args]
    subprocess.run(cmd, input=data, check=True, capture_output=True, timeout=60)


@pytest.fixture
def put(lab) -> Iterator[Callable[[str, bytes], None]]:
    """put(namespace, name): a small object; removed at teardown with the rados CLI (the fleet's purge
    goes through the binding, which cannot list such a name, and one left anywhere in the pool fails
    every later pool-wide listing that has no fix for it)."""
    made: list[tuple[str, bytes]] = []

    def make(namespace: str, name: bytes) -> None:
        made.append((namespace, name))
        _rados(lab, namespace, b"put", name, b"-", data=b"x\n")

    yield make
    for namespace, name in made:
        _rados(lab, namespace, b"rm", name)


@pytest.mark.parametrize("where", ["object name", "xattr name", "omap key"])
def test_a_non_utf8_name_in_one_namespace_fails_that_desktop_alone(drsvc_env, make_fleet, lab, put, where):
    victim, attacker = make_fleet(2)
    if where == "object name":
        put(attacker, b"bad\xffname")
    else:
        put(attacker, b"plain")
        _rados(lab, attacker, b"setxattr" if where == "xattr name" else b"setomapval", b"plain", b"k\xfe", b"v")
    result = drsvc_env.cli("--json", "backup", victim, attacker)
    error = _attacker_alone_failed(result, victim, attacker)
    assert "not UTF-8" in error, error
    assert "\\xff" in error or "\\xfe" in error


@pytest.mark.parametrize("reader", ["C API", "binding"])
@pytest.mark.parametrize("limit", ["object", "volume"])
def test_omap_past_the_metadata_bound_fails_that_desktop_alone(
    drsvc_env, make_fleet, rados_cluster, monkeypatch, limit, reader
):
    """A desktop's processes write omap into their objects: RADOS takes gigabytes. The bounds are
    lowered here (256 KiB) so the attack stays small on the shared lab; 1,500 keys of 300 bytes
    span two omap pages, so the bound is checked while pages come in, on both metadata readers."""
    from drsvc.volumes import base, rados_stamps

    monkeypatch.setattr(
        base, "OBJECT_METADATA_MAX" if limit == "object" else "VOLUME_METADATA_MAX", 256 << 10, raising=False
    )
    if reader == "binding":
        monkeypatch.setattr(rados_stamps, "metadata", lambda *a, **k: None)  # the C API is not there
    victim, attacker = make_fleet(2)
    io = rados_cluster.open_ioctx("desktops")
    try:
        io.set_namespace(attacker)
        # volume: spread over objects each well under the object bound; object: all in one
        for i in range(1 if limit == "object" else 3):
            keys = [f"k{i}-{n:05d}" for n in range(1500 if limit == "object" else 500)]
            with _write_op() as op:
                io.set_omap(op, tuple(keys), tuple(b"v" * 300 for _ in keys))
                io.operate_write_op(op, f"fat-{i}")
        result = drsvc_env.cli("--json", "backup", victim, attacker)
    finally:
        io.close()
    error = _attacker_alone_failed(result, victim, attacker)
    assert "of xattrs and omap" in error, error


def _attacker_alone_failed(result, victim, attacker):
    """The run was partial (exit 6): the victim's point complete, the attacker's failed; its error."""
    assert result.code == 6, result.output
    by_desktop = {o["desktop"]: o for o in result.json()["results"]}
    assert by_desktop[victim]["status"] == "complete", by_desktop[victim]
    assert by_desktop[attacker]["status"] == "failed", by_desktop[attacker]
    return by_desktop[attacker].get("error") or ""


def _write_op():
    import rados

    return rados.WriteOpCtx()


@pytest.mark.parametrize("batch", ["pool listing", "own listing"])
def test_objects_past_the_count_bound_fail_that_desktop_alone(drsvc_env, make_fleet, rados_cluster, monkeypatch, batch):
    """A desktop's processes create millions of empty objects; the bound is lowered here (the
    fleet's desktops hold a few objects) so the attack stays small on the shared lab."""
    from drsvc.volumes import base
    from drsvc.volumes.rados_snapshots import RadosPoolSnapshots

    victim, attacker = make_fleet(2)
    io = rados_cluster.open_ioctx("desktops")
    try:
        counts = {}
        for desktop in (victim, attacker):
            io.set_namespace(desktop)
            counts[desktop] = sum(1 for _ in io.list_objects())
        bound = max(counts.values())  # the victim is within it; the attacker goes one past
        io.set_namespace(attacker)
        for i in range(bound + 1 - counts[attacker]):
            io.write_full(f"tiny-{i:04d}", b"")
        monkeypatch.setattr(base, "VOLUME_OBJECTS_MAX", bound, raising=False)
        if batch == "own listing":  # the batch's one listing failed: each desktop lists its own
            monkeypatch.setattr(RadosPoolSnapshots, "names_by_volume", lambda *_a: {})
        result = drsvc_env.cli("--json", "backup", victim, attacker)
    finally:
        io.close()
    error = _attacker_alone_failed(result, victim, attacker)
    assert "objects: drsvc does not back up" in error, error


def test_a_desktop_slow_to_capture_fails_alone_at_its_capture_deadline(
    drsvc_env, make_fleet, rados_cluster, monkeypatch
):
    """A desktop's processes make their namespace slow to capture: a million objects, huge ones,
    metadata paged slowly. Each Ceph call has its timeout, but the calls added up to hours, and the
    run (its next batch, ``run --once``) waited for them. The lab cannot make Ceph slow on demand:
    here each object the attacker's capture reads takes an hour on the store thread's own clock
    (``drsvc.deadline`` reads it), while the reads themselves are the real ones. Past
    ``capture.deadline`` (2 h) the attacker fails with its reason, the victim gets its point, and
    the attacker's earlier point stays whole."""
    from deployment import ThreadClock

    from drsvc import deadline
    from drsvc.volumes.rados import RadosVolume

    victim, attacker = make_fleet(2)
    first = drsvc_env.cli("--json", "backup", victim, attacker)
    assert first.code == 0, first.output
    earlier = {o["desktop"]: o["point_id"] for o in first.json()["results"]}
    io = rados_cluster.open_ioctx("desktops")
    try:
        io.set_namespace(attacker)
        for i in range(4):  # new data: the next capture reads these (the rest is the parent's)
            io.write_full(f"slow-{i}", b"x" * 4096)
    finally:
        io.close()
    clock = ThreadClock()
    monkeypatch.setattr(deadline, "time", clock)
    real = RadosVolume.read_objects_at

    def slow(self, snap_name, objects=None):
        for item in real(self, snap_name, objects):
            if self.namespace == attacker:
                clock.advance(3600)
            yield item

    monkeypatch.setattr(RadosVolume, "read_objects_at", slow)
    result = drsvc_env.cli("--json", "backup", victim, attacker)
    error = _attacker_alone_failed(result, victim, attacker)
    assert f"the capture of desktop {attacker} (capture.deadline) took longer than 2h" in error, error
    listed = drsvc_env.cli("--json", "points", "list", attacker)
    assert listed.code == 0, listed.output
    rows = {p["id"]: p for p in listed.json()}
    failed = [p for p in rows.values() if p["status"] != "complete"]
    assert [p["status"] for p in failed] == ["failed"] and "capture.deadline" in failed[0]["reason"], failed
    assert rows[earlier[attacker]]["status"] == "complete"
    verified = drsvc_env.cli("verify", earlier[attacker], "--read-data")
    assert verified.code == 0, verified.output


def test_restore_object_over_a_live_object_bloated_past_the_metadata_bound(
    drsvc_env, make_fleet, rados_cluster, monkeypatch
):
    """The tenant's file is lost and its live object now carries omap past the metadata bound
    (lowered to 256 KiB here, as above). ``restore --object`` read the live object's metadata
    whole before writing (to compare it, to keep it aside) and failed on it, both ways: the
    operator could not get the file back without removing the live object by hand. Now
    ``--overwrite`` replaces it without reading its metadata, and the default (keep the live
    object aside first) refuses before touching anything, saying why and what to pass."""
    from drsvc.volumes import base

    (desktop,) = make_fleet(1)
    io = rados_cluster.open_ioctx("desktops")
    try:
        io.set_namespace(desktop)
        io.write_full("lost-file", b"the tenant's file\n")
        io.set_xattr("lost-file", "user.kind", b"report")
        taken = drsvc_env.cli("--json", "backup", desktop)
        assert taken.code == 0, taken.output
        point = taken.json()["results"][0]["point_id"]
        io.write_full("lost-file", b"overwritten")
        keys = [f"k-{n:05d}" for n in range(1500)]
        with _write_op() as op:
            io.set_omap(op, tuple(keys), tuple(b"v" * 300 for _ in keys))
            io.operate_write_op(op, "lost-file")
        monkeypatch.setattr(base, "OBJECT_METADATA_MAX", 256 << 10, raising=False)

        kept = drsvc_env.cli("restore", desktop, "--object", "lost-file", "--point", point)
        assert kept.code == 2, kept.output
        assert "--overwrite" in kept.output and "xattrs and omap" in kept.output, kept.output
        assert _omap_count(io, "lost-file") == 1500  # untouched
        assert io.read("lost-file") == b"overwritten"

        over = drsvc_env.cli("--json", "restore", desktop, "--object", "lost-file", "--point", point, "--overwrite")
        assert over.code == 0, over.output
        assert io.read("lost-file") == b"the tenant's file\n"
        assert {k: bytes(v) for k, v in io.get_xattrs("lost-file")} == {"user.kind": b"report"}
        assert _omap_count(io, "lost-file") == 0
    finally:
        io.close()


def _omap_count(io, name: str) -> int:
    """Every omap key of the object, in pages (an OSD answers at most 1,024 keys a request)."""
    import rados

    count, after = 0, ""
    while True:
        with rados.ReadOpCtx() as op:
            it, _ = io.get_omap_vals(op, after, "", 1000)
            io.operate_read_op(op, name)
            keys = [k for k, _ in it]
        count += len(keys)
        if len(keys) < 1000:
            return count
        after = keys[-1]


def test_a_checkpoint_archive_slow_to_store_leaves_a_point_without_memory_and_the_desktop_running(
    drsvc_env, make_fleet, monkeypatch
):
    """A desktop whose memory is huge streams its checkpoint archive for hours while its batch
    waits. On the real Podman: each piece of the attacker's archive takes an hour on its
    checkpoint thread's own clock; past ``capture.deadline`` the stream is given up mid-way (the
    runtime's export closed under it), the attacker's point keeps its volume alone and says why,
    the victim's point pairs, and the attacker's desktop runs on."""
    from deployment import ThreadClock
    from runtime_suite import read_counter, wait_counter_above

    from drsvc import backup, deadline

    victim, attacker = make_fleet(2)
    clock = ThreadClock()
    monkeypatch.setattr(deadline, "time", clock)

    def slow() -> None:
        limit = deadline._current.get()
        if limit is not None and f"desktop {attacker} " in limit.what:
            clock.advance(3600)

    class SlowForTheAttacker(backup.ArchiveIndexer):
        def read(self, n=-1):
            slow()
            return super().read(n)

        def readinto(self, buffer):
            slow()
            return super().readinto(buffer)

    monkeypatch.setattr(backup, "ArchiveIndexer", SlowForTheAttacker)
    result = drsvc_env.cli("--json", "backup", victim, attacker)
    assert result.code == 0, result.output
    by_desktop = {o["desktop"]: o for o in result.json()["results"]}
    assert by_desktop[victim]["consistency"] == "paired", by_desktop[victim]
    assert by_desktop[attacker]["status"] == "complete", by_desktop[attacker]
    assert by_desktop[attacker]["consistency"] == "crash"
    assert f"the checkpoint archive of desktop {attacker} (capture.deadline)" in by_desktop[attacker]["reason"]
    runtime = drsvc_env.services().runtime
    count, _ = read_counter(runtime, attacker)
    wait_counter_above(runtime, attacker, count)
