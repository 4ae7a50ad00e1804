"""Granular restore on the real lab: single objects back into a running desktop, ls/diff, dump, mount.

The oracle is what the test itself wrote into the desktop's RADOS namespace (data, xattrs, omap),
read back with librados directly, never drsvc's digests of it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from runtime_suite import read_counter

from drsvc.catalog import Catalog
from drsvc.granular import names
from drsvc.volumes.base import object_digest

MiB = 1 << 20
OURS = ("granular/doomed", "granular/over-1", "granular/over-2")


@pytest.fixture
def cold_bucket(lab: Any) -> Iterator[str]:
    name = f"granular-it-{uuid.uuid4().hex[:10]}"
    yield name
    subprocess.run(
        ["radosgw-admin", "-c", lab.ceph_conf, "bucket", "rm", "--bucket", name, "--purge-objects", "--bypass-gc"],
        capture_output=True,
        timeout=120,
    )


def _put(io: Any, name: str, data: bytes, xattrs: dict[str, bytes], omap: dict[str, bytes]) -> None:
    import rados

    io.write_full(name, data)
    for k, v in xattrs.items():
        io.set_xattr(name, k, v)
    if omap:
        with rados.WriteOpCtx() as op:
            io.set_omap(op, tuple(omap), tuple(omap.values()))
            io.operate_write_op(op, name)


def _get(io: Any, name: str) -> tuple[bytes, dict[str, bytes], dict[str, bytes]]:
    import rados

    size, _ = io.stat(name)
    data = io.read(name, size, 0) if size else b""
    xattrs = {k: bytes(v) for k, v in io.get_xattrs(name)}
    with rados.ReadOpCtx() as op:
        it, _ = io.get_omap_vals(op, "", "", 10000)
        io.operate_read_op(op, name)
        omap = {k: bytes(v) for k, v in it}
    return data, xattrs, omap


def _exists(io: Any, name: str) -> bool:
    import rados

    try:
        io.stat(name)
        return True
    except rados.ObjectNotFound:
        return False


def _originals() -> dict[str, tuple[bytes, dict[str, bytes], dict[str, bytes]]]:
    return {
        "granular/doomed": (os.urandom(64 * 1024), {"user.owner": b"alice"}, {"rev": b"1", "bin": b"\x00\x01"}),
        "granular/over-1": (os.urandom(300 * 1024), {}, {"k": b"v"}),
        "granular/over-2": (os.urandom(3 * MiB + 17), {"user.a": b"1", "user.b": os.urandom(40)}, {}),
    }


def _damage(io: Any) -> None:
    io.remove_object("granular/doomed")
    io.write_full("granular/over-1", b"encrypted by ransomware")
    _put(io, "granular/over-2", b"also encrypted", {"user.evil": b"1"}, {"ransom": b"pay"})


def _others(services: Any, url: str) -> dict[str, str]:
    """Digests of every object of the namespace but the test's own (drsvc's digest function, both sides live)."""
    return {n: d for n, d in services.volume(url).digests_now().items() if not n.startswith("granular/")}


def test_single_objects_come_back_into_a_running_desktop_from_hot_and_cold_points(
    drsvc_env, make_fleet, rados_cluster, cold_bucket
):
    drsvc_env.write(f'[cold]\nstore = "s3://{cold_bucket}/fleet"\nendpoint_url = "{os.environ["S3_ENDPOINT_URL"]}"\n')
    [desktop] = make_fleet(1, data_mib=2)
    drsvc_env.policy(
        "granular",
        [desktop],
        retention={"hot": {"last": 1}, "cold": {"last": 10}},
        tiering={"after": "1s", "storage_class": "STANDARD_IA"},
    )
    services = drsvc_env.services()
    url = f"rados://desktops/{desktop}"
    io = rados_cluster.open_ioctx("desktops")
    io.set_namespace(desktop)
    originals = _originals()
    for name, (data, xattrs, omap) in originals.items():
        _put(io, name, data, xattrs, omap)
    _put(io, "granular/changing", b"first version", {}, {})

    first = drsvc_env.cli("--json", "backup", "--policy", "granular")
    assert first.code == 0, first.output
    cold_point = first.json()["results"][0]["point_id"]
    drsvc_env.wait_due_for_tier(cold_point)
    assert drsvc_env.cli("tier").code == 0
    _put(io, "granular/new", b"added between the points", {}, {})
    io.write_full("granular/changing", b"second version!")
    second = drsvc_env.cli("--json", "backup", "--policy", "granular")
    assert second.code == 0, second.output
    hot_point = second.json()["results"][0]["point_id"]
    assert drsvc_env.cli("prune").code == 0
    catalog = Catalog.open(drsvc_env.root / "catalog.db")
    assert catalog.point(cold_point)["tiers"] == ["cold"] and "hot" in catalog.point(hot_point)["tiers"]

    # ls and diff agree with the manifests
    m_cold = services.cold.get_manifest(desktop, cold_point)
    m_hot = services.hot.get_manifest(desktop, hot_point)
    ls = drsvc_env.cli("points", "ls", hot_point, "--json", "--long")
    assert ls.code == 0, ls.output
    listed = {o["name"]: (o["size"], o["digest"], o["xattrs"], o["omap"]) for o in ls.json()["volume"]["objects"]}
    assert listed == {o["name"]: (o["size"], o["digest"], o["xattrs"], o["omap"]) for o in m_hot["volume"]["objects"]}
    for name, (data, xattrs, omap) in originals.items():
        assert listed[name] == (len(data), object_digest([data], xattrs, omap), _hex(xattrs), _hex(omap))
    rootfs = ls.json()["rootfs"]
    assert rootfs["recorded"] and "data/counter" in {f["path"] for f in rootfs["files"]}
    cold_ls = drsvc_env.cli("--json", "points", "ls", cold_point, "granular/")
    assert {o["name"] for o in cold_ls.json()["volume"]["objects"]} == {*OURS, "granular/changing"}
    diff = drsvc_env.cli("--json", "points", "diff", cold_point, hot_point)
    assert diff.code == 0, diff.output
    before = {o["name"]: o["digest"] for o in m_cold["volume"]["objects"]}
    after = {o["name"]: o["digest"] for o in m_hot["volume"]["objects"]}
    assert [e["name"] for e in diff.json()["added"]] == sorted(after.keys() - before.keys()) == ["granular/new"]
    assert [e["name"] for e in diff.json()["removed"]] == sorted(before.keys() - after.keys()) == []
    changed = sorted(n for n in before.keys() & after.keys() if before[n] != after[n])
    assert [c["name"] for c in diff.json()["changed"]] == changed == ["granular/changing"]

    runtime = services.runtime
    count0, boot = read_counter(runtime, desktop)

    # --- from the hot point (its pool snapshot), keeping the damaged objects aside
    _damage(io)
    damaged = {n: _get(io, n) for n in OURS if _exists(io, n)}
    others = _others(services, url)
    args = [a for n in OURS for a in ("--object", n)]
    hot = drsvc_env.cli("--json", "restore", desktop, *args, "--point", hot_point)
    assert hot.code == 0, hot.output
    doc = hot.json()
    assert (
        doc["tier"] == "snapshot"
        and doc["mode"] == "keep"
        and doc["bytes"] == sum(len(d) for d, _, _ in originals.values())
    )
    for name, expected in originals.items():
        assert _get(io, name) == expected, name
    kept = {o["name"]: o["kept_as"] for o in doc["objects"]}
    assert kept["granular/doomed"] is None  # it was gone: nothing to keep
    for name in ("granular/over-1", "granular/over-2"):
        assert kept[name] == f"{name}.drsvc-{hot_point}" and _get(io, kept[name]) == damaged[name]
    assert _others(services, url) == others  # nothing else touched
    count1, boot1 = read_counter(runtime, desktop)
    assert boot1 == boot and count1 > count0  # the desktop kept running throughout
    for name in damaged:
        io.remove_object(f"{name}.drsvc-{hot_point}")

    # --- from the cold-only point, replacing the damaged objects
    _damage(io)
    cold = drsvc_env.cli("--json", "restore", desktop, *args, "--point", cold_point, "--overwrite")
    assert cold.code == 0, cold.output
    assert cold.json()["tier"] == "cold" and cold.json()["mode"] == "overwrite"
    for name, expected in originals.items():
        assert _get(io, name) == expected, name
        assert not _exists(io, f"{name}.drsvc-{cold_point}")
    assert _others(services, url) == others
    count2, boot2 = read_counter(runtime, desktop)
    assert boot2 == boot and count2 > count1

    # an object already as at the point is left alone
    again = drsvc_env.cli("--json", "restore", desktop, "--object", "granular/over-1", "--point", hot_point)
    assert again.code == 0 and again.json()["objects"][0]["status"] == "unchanged"

    rows = catalog.query("SELECT point_id, status, tier, mode, bytes, requested_by FROM object_restores ORDER BY id")
    assert [(r["point_id"], r["status"], r["tier"]) for r in rows[:2]] == [
        (hot_point, "ok", "snapshot"),
        (cold_point, "ok", "cold"),
    ]
    assert all(r["requested_by"] for r in rows)
    audited = {r["action"] for r in catalog.query("SELECT action FROM point_access WHERE outcome = 'ok'")}
    assert {"ls", "diff", "restore-objects"} <= audited

    # dump: one object's bytes on stdout, from the cold-only point
    out = drsvc_env.root / "dumped"
    with out.open("wb") as f:
        p = subprocess.run(
            [
                str(Path(".venv/bin/drsvc").resolve()),
                "--config",
                str(drsvc_env.config),
                "dump",
                cold_point,
                "granular/over-2",
            ],
            stdout=f,
            stderr=subprocess.PIPE,
            timeout=120,
            cwd=Path(__file__).resolve().parents[2],
        )
    assert p.returncode == 0, p.stderr
    assert out.read_bytes() == originals["granular/over-2"][0]


def _hex(m: dict[str, bytes]) -> dict[str, str]:
    return {k: v.hex() for k, v in sorted(m.items())}


def _wait_mounted(path: Path, proc: subprocess.Popen[str], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not os.path.ismount(path):
        if proc.poll() is not None:
            raise AssertionError(f"drsvc mount exited {proc.returncode}: {proc.stderr.read() if proc.stderr else ''}")
        assert time.monotonic() < deadline, "not mounted in time"
        time.sleep(0.1)


def _stop(proc: subprocess.Popen[str], path: Path) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait(30)
    if os.path.ismount(path):
        subprocess.run(["fusermount3", "-u", "-z", str(path)], capture_output=True, timeout=30)


def test_a_mounted_point_reads_back_every_object_and_unmounts_cleanly(drsvc_env, make_fleet, rados_cluster, tmp_path):
    [desktop] = make_fleet(1, data_mib=2)
    io = rados_cluster.open_ioctx("desktops")
    io.set_namespace(desktop)
    originals = _originals()
    for name, (data, xattrs, omap) in originals.items():
        _put(io, name, data, xattrs, omap)
    _put(io, "../../escape", b"hostile name", {}, {})
    backup = drsvc_env.cli("--json", "backup", desktop)
    assert backup.code == 0, backup.output
    point = backup.json()["results"][0]["point_id"]
    manifest = drsvc_env.services().hot.get_manifest(desktop, point)
    objects = manifest["volume"]["objects"]
    count_at_backup, boot = read_counter(drsvc_env.services().runtime, desktop)

    mnt = tmp_path / "mnt"
    mnt.mkdir()
    proc = drsvc_env.subprocess("mount", point, str(mnt))
    try:
        _wait_mounted(mnt, proc)
        expected_paths = {"/".join(p) for p, _ in names.Tree((o["name"], o) for o in objects).paths()}
        listed = {p.relative_to(mnt / "volume").as_posix() for p in (mnt / "volume").rglob("*") if p.is_file()}
        assert listed == expected_paths
        for parts, o in names.Tree((o["name"], o) for o in objects).paths():
            data = (mnt / "volume").joinpath(*parts).read_bytes()
            xattrs = {k: bytes.fromhex(v) for k, v in o["xattrs"].items()}
            omap = {k: bytes.fromhex(v) for k, v in o["omap"].items()}
            assert object_digest([data], xattrs, omap) == o["digest"], o["name"]
            if o["name"] in originals:
                assert data == originals[o["name"]][0]
        assert (mnt / "volume" / "%2E%2E" / "%2E%2E" / "escape").read_bytes() == b"hostile name"
        count, counter_boot = (mnt / "rootfs" / "data" / "counter").read_text().split()
        assert counter_boot == boot and int(count) <= count_at_backup + 50
        with pytest.raises(OSError):
            (mnt / "volume" / "granular" / "doomed").write_bytes(b"x")
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        assert proc.wait(30) == 0, proc.stderr.read() if proc.stderr else ""
        assert not os.path.ismount(mnt)
    finally:
        _stop(proc, mnt)

    # every point of the desktop as dated directories; unmounted from outside this time
    assert drsvc_env.cli("backup", desktop).code == 0
    proc = drsvc_env.subprocess("mount", desktop, str(mnt))
    try:
        _wait_mounted(mnt, proc)
        dated = sorted(p.name for p in mnt.iterdir())
        assert len(dated) == 3 and dated[-1] == "latest"
        assert os.readlink(mnt / "latest") == dated[1]
        assert (mnt / dated[0] / "volume" / "granular" / "over-1").read_bytes() == originals["granular/over-1"][0]
        subprocess.run(["fusermount3", "-u", str(mnt)], check=True, timeout=30)
        assert proc.wait(30) == 0
        assert not os.path.ismount(mnt)
    finally:
        _stop(proc, mnt)
    catalog = Catalog.open(drsvc_env.root / "catalog.db")
    rows = catalog.query("SELECT outcome FROM point_access WHERE action = 'mount' ORDER BY id")
    assert [r["outcome"] for r in rows] == ["ok", "ok"]
