"""Granular restore without the lab: points ls/diff, dump, --to-dir, the mount's view, hostile names."""

from __future__ import annotations

import io
import json
import os
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from granularkit import GranularKit, Obj
from hypothesis import given
from hypothesis import strategies as st

from drsvc.errors import DrsvcError, IntegrityError, InvalidInput, NotFound
from drsvc.granular import listing, names
from drsvc.granular.browse import dump_object
from drsvc.granular.fusefs import MountView, dated_names
from drsvc.granular.reader import ChunkCache, StreamSlicer, open_point, read_range
from drsvc.granular.scope import Scope

MiB = 1 << 20
HOSTILE = ["../../etc/passwd", "/abs/olute", "a/../../b", "..", ".", "dir//x", "%2E%2E", "we%ird", "x" * 300]


def _objects(seed: int = 1) -> dict[str, Obj]:
    rnd = random.Random(seed)
    objs = {
        "small": Obj(b"hello", {"user.kind": b"note"}, {"k1": b"v1", "k2": b"\x00\xff"}),
        "docs/report.odt": Obj(rnd.randbytes(300_000), {}, {}),
        "docs/big.bin": Obj(rnd.randbytes(2 * MiB + 12345), {"user.a": b"1", "user.b": b"2"}, {}),
        "empty": Obj(b"", {}, {"only": b"omap"}, mtime=None),
    }
    for i in range(40):  # small objects sharing chunks
        objs[f"mail/{i:03d}.eml"] = Obj(rnd.randbytes(rnd.randrange(100, 9000)), {}, {})
    return objs


@pytest.fixture
def kit(tmp_path: Path) -> GranularKit:
    return GranularKit(tmp_path)


def cli(run_cli, kit: GranularKit, *args: str):
    return run_cli("--config", str(kit.config), *args)


# ---------------------------------------------------------------------- ls and diff


def test_ls_lists_every_object_and_rootfs_file_from_the_manifest(kit, run_cli):
    objs = _objects()
    pid = kit.point("desk-1", objs, rootfs={"etc/hostname": b"desk-1\n", "home/u/notes.txt": b"x" * 5000})
    result = cli(run_cli, kit, "points", "ls", pid, "--json", "--long")
    assert result.code == 0, result.output
    doc = result.json()
    listed = {o["name"]: o for o in doc["volume"]["objects"]}
    assert set(listed) == set(objs)
    for name, o in objs.items():
        assert listed[name]["size"] == len(o.data)
        assert listed[name]["xattrs"] == {k: v.hex() for k, v in o.xattrs.items()}
        assert listed[name]["omap"] == {k: v.hex() for k, v in o.omap.items()}
    assert listed["small"]["mtime"].startswith("2025-12-06") and listed["empty"]["mtime"] is None
    assert doc["rootfs"]["recorded"] is True
    assert {f["path"]: f["size"] for f in doc["rootfs"]["files"]} == {"etc/hostname": 7, "home/u/notes.txt": 5000}

    under = cli(run_cli, kit, "--json", "points", "ls", pid, "docs/")
    assert sorted(o["name"] for o in under.json()["volume"]["objects"]) == ["docs/big.bin", "docs/report.odt"]
    assert under.json()["volume"]["objects"][0]["xattrs"] in (0, 2)  # counts without --long

    text = cli(run_cli, kit, "points", "ls", pid, "--long")
    assert text.code == 0 and "docs/big.bin" in text.stdout and "/etc/hostname" in text.stdout
    assert f"{len(objs)} objects" in text.stdout


def test_ls_says_when_rootfs_files_were_not_recorded(kit, run_cli):
    pid = kit.point("desk-1", _objects())  # no checkpoint
    doc = cli(run_cli, kit, "--json", "points", "ls", pid).json()
    assert doc["rootfs"]["recorded"] is False and doc["rootfs"]["notes"]


def test_diff_names_added_removed_and_changed_objects(kit, run_cli):
    before = _objects()
    after = dict(before)
    del after["mail/000.eml"]
    after["new"] = Obj(b"fresh", {}, {})
    after["small"] = Obj(b"hello", {"user.kind": b"changed"}, {"k1": b"v1", "k2": b"\x00\xff"})  # xattr only
    after["docs/report.odt"] = Obj(b"Y" * 300_000, {}, {})  # same size, other bytes
    t0 = datetime.now(UTC) - timedelta(hours=1)
    a = kit.point("desk-1", before, taken_at=t0, rootfs={"etc/a": b"1"})
    b = kit.point("desk-1", after, taken_at=t0 + timedelta(minutes=30), rootfs={"etc/a": b"22", "etc/b": b""})
    doc = cli(run_cli, kit, "--json", "points", "diff", a, b).json()
    assert [e["name"] for e in doc["added"]] == ["new"]
    assert [e["name"] for e in doc["removed"]] == ["mail/000.eml"]
    changed = {c["name"]: c["what"] for c in doc["changed"]}
    assert changed == {"small": ["xattrs"], "docs/report.odt": ["data"]}
    assert doc["unchanged"] == len(before) - 3
    assert doc["rootfs"]["added"] == ["etc/b"] and doc["rootfs"]["changed"] == ["etc/a"]
    text = cli(run_cli, kit, "points", "diff", a, b)
    assert "+ new" in text.stdout and "- mail/000.eml" in text.stdout and "M small  (xattrs" in text.stdout

    other = kit.point("desk-2", before)
    refused = cli(run_cli, kit, "points", "diff", a, other)
    assert refused.code == 2 and "different desktops" in refused.stderr


def test_tenant_scope_refuses_other_tenants_and_everything_is_audited(kit, run_cli):
    pid = kit.point("desk-1", _objects(), tenant="acme")
    assert cli(run_cli, kit, "points", "ls", pid, "--tenant", "acme").code == 0
    refused = cli(run_cli, kit, "points", "ls", pid, "--tenant", "globex")
    assert refused.code == 2 and "not a desktop of tenant globex" in refused.stderr
    rows = kit.catalog.query("SELECT action, tenant, desktop_id, point_id, outcome FROM point_access ORDER BY id")
    assert rows[-1] == {
        "action": "ls",
        "tenant": "globex",
        "desktop_id": "desk-1",
        "point_id": pid,
        "outcome": "refused",
    }
    assert {"action": "ls", "tenant": "acme", "desktop_id": "desk-1", "point_id": pid, "outcome": "ok"} in rows
    assert all(r["outcome"] != "running" for r in rows)


@pytest.mark.parametrize(
    "damage",
    [
        lambda m: m["volume"]["objects"][0].update(size=-1),
        lambda m: m["volume"]["objects"][0].update(name=""),
        lambda m: m["volume"]["objects"][0].update(name=7),
        lambda m: m["volume"]["objects"][0]["xattrs"].update({"user.x": "zz"}),
        lambda m: m["volume"].pop("objects"),
    ],
)
def test_a_malformed_manifest_is_an_integrity_error_not_a_crash(kit, damage):
    pid = kit.point("desk-1", _objects())
    manifest = kit.services.hot.get_manifest("desk-1", pid)
    damage(manifest)
    with pytest.raises(IntegrityError):
        listing.objects(manifest)


# ---------------------------------------------------------------------- reading ranges


def test_every_object_reads_back_exactly_from_its_range_of_the_volume_stream(kit):
    objs = _objects()
    pid = kit.point("desk-1", objs)
    source = open_point(kit.services, kit.catalog.point(pid), kit.catalog.desktop("desk-1"))
    for name, o in objs.items():
        tier, data = source.open_object(source.entry(name), ["hot"])
        assert tier == "hot" and b"".join(data) == o.data, name
    big = source.entry("docs/big.bin")
    slicer = source.slicer("volume")
    first, last = slicer.span(big.offset, big.size)
    assert last - first + 1 < len(slicer.ref.chunks)  # only the object's chunks are fetched
    part = b"".join(read_range(kit.services.hot, slicer, big.offset + 1_000_000, 777))
    assert part == objs["docs/big.bin"].data[1_000_000:1_000_777]


def test_a_digest_mismatch_is_reported_after_the_last_byte(kit):
    objs = _objects()
    pid = kit.point("desk-1", objs)
    source = open_point(kit.services, kit.catalog.point(pid), kit.catalog.desktop("desk-1"))
    entry = source.entry("small")
    forged = listing.ObjectEntry(entry.name, entry.size, "00" * 32, entry.offset, entry.xattrs, entry.omap)
    with pytest.raises(IntegrityError, match="does not match its digest"):
        b"".join(source.read_object(forged, "hot"))


def test_dump_streams_one_object_and_is_audited(kit):
    objs = _objects()
    pid = kit.point("desk-1", objs)
    out = io.BytesIO()
    tier, n = dump_object(kit.services, Scope(kit.catalog, None, "dump"), pid, "docs/big.bin", out)
    assert out.getvalue() == objs["docs/big.bin"].data and n == len(objs["docs/big.bin"].data) and tier == "hot"
    with pytest.raises(NotFound):
        dump_object(kit.services, Scope(kit.catalog, None, "dump"), pid, "nope", io.BytesIO())
    outcomes = [r["outcome"] for r in kit.catalog.query("SELECT outcome FROM point_access WHERE action = 'dump'")]
    assert outcomes == ["ok", "failed"]


def test_chunk_cache_reads_any_range_and_stays_bounded(kit):
    rnd = random.Random(3)
    data = rnd.randbytes(6 * MiB)
    ref = kit.services.hot.write_stream(data)
    slicer = StreamSlicer(ref)
    cache = ChunkCache(capacity=1 * MiB, read_ahead=512 * 1024)
    try:
        for _ in range(60):
            off = rnd.randrange(len(data))
            size = rnd.randrange(1, 300_000)
            assert cache.read(kit.services.hot, slicer, off, size) == data[off : off + size]
            assert cache.cached_bytes <= 1 * MiB + 1 * MiB  # capacity + at most one chunk over while inserting
        pos, got = 0, bytearray()
        while pos < len(data):  # sequential: read-ahead
            piece = cache.read(kit.services.hot, slicer, pos, 131072)
            got += piece
            pos += len(piece)
        assert bytes(got) == data
    finally:
        cache.close()


# ---------------------------------------------------------------------- hostile names


def test_names_map_to_distinct_components_that_cannot_leave_a_directory():
    mapped = {n: names.parts(n) for n in [*HOSTILE, "ok/name", "ok%name", "a", "a/b"]}
    for name, parts in mapped.items():
        for p in parts:
            assert p not in ("", ".", "..") and "/" not in p and "\0" not in p and len(p.encode()) <= 255, name
    assert len({tuple(p) for p in mapped.values()}) == len(mapped)
    assert names.parts("../../etc/passwd") == ["%2E%2E", "%2E%2E", "etc", "passwd"]
    tree = names.Tree((n, n) for n in ["a", "a/b"])
    assert tree.root.files == {"a%": "a"} and tree.root.dirs["a"].files == {"b": "a/b"}


def test_long_names_stay_apart_when_a_tenant_hunts_for_a_collision(monkeypatch):
    """A component too long for one file name keeps a head and a hash of the whole name. The hash
    was 64 bits: a tenant can find two names with one head and one hash in about 2**32 tries (a
    birthday search), and ``Tree`` kept the first and silently dropped the other from ``--to-dir``
    and the mount. The hash is now 128 bits, and two names on one path fail loudly."""
    long = "x" * 300
    assert len(names.component(long).rsplit("%~", 1)[1]) * 4 >= 128  # hex digits: bits
    for raw in (long, "é" * 200, "\udcff" * 300):  # the longest heads still leave room for FILE_SUFFIX
        assert len((names.component(raw) + names.FILE_SUFFIX).encode("utf-8", "surrogateescape")) <= names.NAME_MAX

    # what a found collision does: a weakened hash stands for one
    class _Same:
        def __init__(self, *_a, **_k):
            pass

        def hexdigest(self):
            return "0" * 32

    monkeypatch.setattr(names.hashlib, "blake2b", _Same)
    a, b = "d/" + long + "a", "d/" + long + "b"
    assert names.parts(a) == names.parts(b)
    with pytest.raises(DrsvcError, match="map to the same path"):
        names.Tree((n, n) for n in (a, b))


def test_restore_objects_prints_a_hostile_name_as_one_escaped_line(kit, run_cli, tmp_path, monkeypatch):
    """The result table of ``restore --object`` listed each object's name (and its file) as the
    tenant wrote it: a newline forged a line, an ESC sequence rewrote the operator's terminal."""
    monkeypatch.chdir(tmp_path)  # a short --to-dir: no line is long enough for the console to wrap (200)
    evil = "notes\n  restored   forged (1 B)\x1b[2J\u202eevil"
    pid = kit.point("desk-1", {evil: Obj(b"payload", {}, {}), "plain": Obj(b"x", {}, {})})
    result = cli(run_cli, kit, "restore", "desk-1", "--prefix", "", "--point", pid, "--to-dir", "out")
    assert result.code == 0, result.output
    out = result.stdout
    assert "\x1b" not in out and "\u202e" not in out and "forged" in out
    assert len(out.splitlines()) == 4, out  # the plan, two objects, the summary
    assert "notes\\n  restored   forged" in out and "\\x1b[2J\\u202eevil" in out


def test_names_become_file_names_without_control_characters(kit, run_cli, tmp_path):
    """``--to-dir`` and the mount made a file for each object under the name the tenant chose:
    a newline in a host file name breaks an operator's ``find | xargs``, and an escape sequence
    or a bidi override reaches their terminal through ``ls``. Such characters are percent-encoded
    (``%0A``), as ``%`` itself is, so names stay distinct."""
    evil = "notes\nrm -rf ~\x1b[2J\u202etxt.exe\udcff"
    assert names.parts(evil) == ["notes%0Arm -rf ~%1B[2J%E2%80%AEtxt.exe%FF"]
    assert names.parts("a%0Ab") == ["a%250Ab"] and names.parts("plain name.txt") == ["plain name.txt"]
    pid = kit.point("desk-1", {evil.replace("\udcff", ""): Obj(b"payload", {}, {})})
    target = tmp_path / "out"
    result = cli(run_cli, kit, "restore", "desk-1", "--prefix", "", "--point", pid, "--to-dir", str(target))
    assert result.code == 0, result.output
    written = [p.name for p in target.iterdir()]
    assert all(name.isprintable() for name in written), written


@given(
    st.lists(
        st.text(alphabet=st.characters(codec=None, blacklist_categories=("Cs",))) | st.just("x" * 300), unique=True
    )
)
def test_distinct_names_give_distinct_printable_paths(many):
    paths = [tuple(names.parts(n)) for n in many]
    assert len(set(paths)) == len(paths)
    assert all(p.isprintable() and p not in ("", ".", "..") and "/" not in p for path in paths for p in path)


def test_write_beneath_never_follows_a_planted_symlink(tmp_path):
    root = tmp_path / "out"
    root.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / "evil").symlink_to(outside)
    (root / "file-link").symlink_to(outside / "target")
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with pytest.raises(InvalidInput):
            names.write_beneath(fd, ["evil", "x"], overwrite=True)
        with pytest.raises(InvalidInput):
            names.write_beneath(fd, ["file-link"], overwrite=True)
        with pytest.raises(InvalidInput):
            names.write_beneath(fd, [".."], overwrite=True)
    finally:
        os.close(fd)
    assert list(outside.iterdir()) == []


def test_restore_to_dir_writes_hostile_names_beneath_the_directory(kit, run_cli, tmp_path):
    objs = {n: Obj(n.encode() * 3, {"user.n": b"1"}, {"o": b"2"}) for n in HOSTILE}
    objs["fine/file"] = Obj(b"payload", {}, {})
    pid = kit.point("desk-1", objs)
    target = tmp_path / "restored"
    result = cli(run_cli, kit, "--json", "restore", "desk-1", "--prefix", "", "--point", pid, "--to-dir", str(target))
    assert result.code == 0, result.output
    written = {p.relative_to(target).as_posix(): p.read_bytes() for p in target.rglob("*") if p.is_file()}
    meta = json.loads(written.pop("%drsvc-objects.json"))
    assert sorted(written.values()) == sorted(o.data for o in objs.values())
    assert all(p.resolve().is_relative_to(target.resolve()) for p in target.rglob("*"))
    assert not (tmp_path / "etc").exists() and not Path("/abs/olute").exists()
    by_name = {m["name"]: m for m in meta["objects"]}
    assert (
        by_name["../../etc/passwd"]["xattrs"] == {"user.n": "31"}
        and written[by_name["fine/file"]["path"]] == b"payload"
    )
    # again without --overwrite: refused before anything is written
    again = cli(run_cli, kit, "restore", "desk-1", "--object", "fine/file", "--point", pid, "--to-dir", str(target))
    assert again.code == 2 and "--overwrite" in again.stderr
    [row] = kit.catalog.query("SELECT mode, status, bytes, requested_by, point_id FROM object_restores")
    assert row["mode"] == "to-dir" and row["status"] == "ok" and row["point_id"] == pid
    assert row["bytes"] == sum(len(o.data) for o in objs.values())


def test_object_restore_refuses_unknown_names_and_whole_desktop_options(kit, run_cli, tmp_path):
    pid = kit.point("desk-1", _objects())
    target = tmp_path / "x"
    missing = cli(run_cli, kit, "restore", "desk-1", "--object", "nope", "--point", pid, "--to-dir", str(target))
    assert missing.code == 3 and "no object 'nope'" in missing.stderr
    [row] = kit.catalog.query("SELECT action, outcome, detail FROM point_access WHERE action = 'restore-objects'")
    assert row["outcome"] == "refused" and "nope" in row["detail"]
    assert not target.exists()  # refused before anything was written
    no_copy = cli(run_cli, kit, "restore", "desk-1", "--object", "small", "--from", "cold", "--to-dir", str(target))
    assert no_copy.code == 3 and "no cold copy" in no_copy.stderr
    mixed = cli(run_cli, kit, "restore", "desk-1", "--object", "small", "--as", "clone")
    assert mixed.code == 2
    both = cli(run_cli, kit, "restore", "desk-1", "--object", "small", "--prefix", "d")
    assert both.code == 2


# ---------------------------------------------------------------------- the mount's view


def _walk(view: MountView, path: str = "/") -> dict[str, bytes]:
    out = {}
    for name in view.readdir(path):
        if name in (".", ".."):
            continue
        child = path.rstrip("/") + "/" + name
        attrs = view.getattr(child)
        if attrs["st_mode"] & 0o170000 == 0o040000:
            out.update(_walk(view, child))
        elif attrs["st_mode"] & 0o170000 == 0o100000:
            fh = view.open(child, os.O_RDONLY)
            data, pos = bytearray(), 0
            while True:
                piece = view.read(child, 65536, pos, fh)
                if not piece:
                    break
                data += piece
                pos += len(piece)
            view.release(child, fh)
            assert len(data) == attrs["st_size"]
            out[child] = bytes(data)
        else:
            out[child] = ("-> " + view.readlink(child)).encode()
    return out


def _paths(objs: dict[str, Obj]) -> list[tuple[str, str]]:
    return [("/".join(p), n) for p, n in names.Tree((n, n) for n in objs).paths()]


def test_mount_view_of_a_desktop_shows_dated_points_with_exact_bytes(kit):
    t0 = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
    first = _objects(1)
    second = {**_objects(2), **{n: Obj(n.encode(), {}, {}) for n in HOSTILE}}
    kit.point("desk-1", first, taken_at=t0, rootfs={"etc/hostname": b"desk-1\n"}, symlinks={"etc/l": "/etc/shadow"})
    kit.point("desk-1", second, taken_at=t0 + timedelta(hours=1))
    points = dated_names([p for p in kit.catalog.points("desk-1")])
    desktop = kit.catalog.desktop("desk-1")
    cache = ChunkCache(capacity=8 * MiB)
    view = MountView(points, lambda p: open_point(kit.services, p, desktop), cache)
    try:
        assert view.readdir("/") == [".", "..", "2026-12-01T08:00:00Z", "2026-12-01T09:00:00Z", "latest"]
        assert view.readlink("/latest") == "2026-12-01T09:00:00Z"
        tree = _walk(view, "/2026-12-01T08:00:00Z")
        for path, name in _paths(first):
            assert tree["/2026-12-01T08:00:00Z/volume/" + path] == first[name].data
        assert tree["/2026-12-01T08:00:00Z/rootfs/etc/hostname"] == b"desk-1\n"
        assert tree["/2026-12-01T08:00:00Z/rootfs/etc/l"] == b"-> /etc/shadow"  # shown as a link, never followed
        later = _walk(view, "/2026-12-01T09:00:00Z")
        assert len(later) == len(second)
        for path, name in _paths(second):
            assert later["/2026-12-01T09:00:00Z/volume/" + path] == second[name].data
        assert "/2026-12-01T09:00:00Z/volume/%2E%2E%" in later  # ".." beside the directory of "../../etc/passwd"
        assert all("/../" not in p for p in later)
        with pytest.raises(OSError):
            view.open("/2026-12-01T08:00:00Z/volume/small", os.O_WRONLY)
        with pytest.raises(OSError):
            view.getattr("/2026-12-01T08:00:00Z/volume/../../x")
    finally:
        cache.close()


# ---------------------------------------------------------------------- read leases
def test_object_restores_dumps_and_mounts_hold_a_read_lease_on_their_points(kit, tmp_path, monkeypatch):
    """While one of them reads a point, prune must keep it (``points_being_read``); after, it may go."""
    from drsvc.granular import fusefs
    from drsvc.granular.browse import plan_mount, serve_mount
    from drsvc.granular.objects import ObjectRestoreJob
    from drsvc.intents import points_being_read

    objs = _objects()
    first = kit.point("desk-1", objs)
    second = kit.point("desk-1", objs)
    seen: dict[str, set[str]] = {}

    class Out(io.BytesIO):
        def write(self, data):  # type: ignore[no-untyped-def]
            seen.setdefault("dump", points_being_read(kit.catalog))
            return super().write(data)

    dump_object(kit.services, Scope(kit.catalog, None, "dump"), first, "docs/big.bin", Out())

    job = ObjectRestoreJob(kit.services, Scope(kit.catalog, None, "restore"))
    to_dir = job._to_dir

    def spying_to_dir(plan, result):  # type: ignore[no-untyped-def]
        seen["restore"] = points_being_read(kit.catalog)
        return to_dir(plan, result)

    monkeypatch.setattr(job, "_to_dir", spying_to_dir)
    job.run(job.plan("desk-1", objects=["docs/big.bin"], point_id=second, to_dir=tmp_path / "out"))

    monkeypatch.setattr(
        fusefs, "serve", lambda view, directory, fsname: seen.setdefault("mount", points_being_read(kit.catalog))
    )
    scope = Scope(kit.catalog, None, "mount")
    serve_mount(kit.services, scope, plan_mount(kit.services, scope, "desk-1"), tmp_path / "mnt")

    assert seen == {"dump": {first}, "restore": {second}, "mount": {first, second}}
    assert points_being_read(kit.catalog) == set(), "a read lease outlived its reader"
