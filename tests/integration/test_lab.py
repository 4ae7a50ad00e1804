"""Self-tests of the local lab (dev/lab): what drsvc relies on must really work here."""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
import uuid
from pathlib import Path

import pytest


def _counter(name: str) -> tuple[int, str]:
    out = subprocess.run(["podman", "exec", name, "cat", "/data/counter"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    n, boot = out.stdout.split()
    return int(n), boot


def _wait_counter(name: str, at_least: int, timeout: float = 20) -> tuple[int, str]:
    deadline = time.monotonic() + timeout
    while True:
        try:
            n, boot = _counter(name)
            if n >= at_least:
                return n, boot
        except (AssertionError, ValueError):
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"{name}: counter did not reach {at_least} in {timeout} s")
        time.sleep(0.2)


# ---------------------------------------------------------------- Ceph
def test_ceph_health_ok_and_pools(lab):
    assert lab.ceph("health").strip() == "HEALTH_OK"
    pools = json.loads(lab.ceph("osd", "pool", "ls", "detail", "-f", "json"))
    by_name = {p["pool_name"]: p for p in pools}
    for name in ("desktops", "drsvc-hot"):
        assert name in by_name, f"pool {name} missing: {sorted(by_name)}"
        assert "rados" in by_name[name]["application_metadata"]
    st = json.loads(lab.ceph("status", "-f", "json"))
    assert st["osdmap"]["num_up_osds"] == 1
    pgs = st["pgmap"]["pgs_by_state"]
    # snapshot trimming (others' tests remove pool snaps) is still active+clean
    assert pgs and all(s["state_name"].startswith("active+clean") for s in pgs), pgs


def test_env_exports(lab):
    env = lab.env
    assert env["S3_ENDPOINT_URL"] == "http://127.0.0.1:7480"
    assert env["AWS_DEFAULT_REGION"] == "us-east-1"
    assert env["CONTAINER_HOST"] == "unix://" + env["DRSVC_PODMAN_SOCKET"]
    assert Path(env["CEPH_CONF"]).is_file() and Path(env["CEPH_KEYRING"]).is_file()
    assert Path(env["DRSVC_PODMAN_SOCKET"]).is_socket()
    shim = sorted(p.name for p in Path(env["DRSVC_LAB_PYSHIM"]).iterdir())
    assert any(n.startswith("rados") for n in shim) and all(n.startswith(("rados", "rbd")) for n in shim), shim


def test_pool_snapshot_round_trip(lab, rados_cluster):
    import rados

    ns = f"itest-snap-{uuid.uuid4().hex[:8]}"
    snap = f"itest-{uuid.uuid4().hex[:8]}"
    io = rados_cluster.open_ioctx("desktops")
    io.set_namespace(ns)

    def put(oid, data, xattrs, omap):
        io.write_full(oid, data)
        for k, v in xattrs.items():
            io.set_xattr(oid, k, v)
        with rados.WriteOpCtx() as op:
            io.set_omap(op, tuple(omap), tuple(omap.values()))
            io.operate_write_op(op, oid)

    def omap_of(oid):
        with rados.ReadOpCtx() as op:
            it, _ = io.get_omap_vals(op, "", "", 100)
            io.operate_read_op(op, oid)
            return {k: bytes(v) for k, v in it}

    try:
        put("a", b"old-a" * 1000, {"user.v": b"1"}, {"k": b"old"})
        put("b", b"old-b", {"user.v": b"1"}, {"k": b"b"})
        io.create_snap(snap)
        snap_id = io.lookup_snap(snap).snap_id
        assert snap in [s.name for s in io.list_snaps()]

        put("a", b"new-a", {"user.v": b"2"}, {"k": b"new", "k2": b"added"})
        io.remove_object("b")
        put("c", b"created-later", {}, {"x": b"y"})

        io.set_read(snap_id)
        assert io.read("a", 1 << 20) == b"old-a" * 1000
        assert io.get_xattr("a", "user.v") == b"1"
        assert omap_of("a") == {"k": b"old"}
        assert io.read("b", 100) == b"old-b"  # deleted since: still there at the snap
        assert omap_of("b") == {"k": b"b"}
        with pytest.raises(rados.ObjectNotFound):  # created since: absent at the snap
            io.stat("c")

        io.set_read(rados.LIBRADOS_SNAP_HEAD)
        assert io.read("a", 100) == b"new-a"
        assert io.get_xattr("a", "user.v") == b"2"
        assert omap_of("a") == {"k": b"new", "k2": b"added"}
        with pytest.raises(rados.ObjectNotFound):
            io.stat("b")
        assert io.read("c", 100) == b"created-later"
    finally:
        io.set_read(rados.LIBRADOS_SNAP_HEAD)
        if snap in [s.name for s in io.list_snaps()]:
            io.remove_snap(snap)
        for oid in ("a", "b", "c"):
            with contextlib.suppress(rados.ObjectNotFound):
                io.remove_object(oid)
        io.close()
    io = rados_cluster.open_ioctx("desktops")
    try:
        assert snap not in [s.name for s in io.list_snaps()]
    finally:
        io.close()


# ---------------------------------------------------------------- S3 (radosgw)
def test_s3_storage_classes(lab):
    boto3 = pytest.importorskip("boto3")
    s3 = boto3.client(
        "s3",
        endpoint_url=lab.env["S3_ENDPOINT_URL"],
        aws_access_key_id=lab.env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=lab.env["AWS_SECRET_ACCESS_KEY"],
        region_name=lab.env["AWS_DEFAULT_REGION"],
    )
    bucket = f"itest-{uuid.uuid4().hex[:10]}"
    s3.create_bucket(Bucket=bucket)
    try:
        for sc in ("STANDARD", "STANDARD_IA", "GLACIER"):
            body = f"payload in {sc} ".encode() * 100
            s3.put_object(Bucket=bucket, Key=f"obj-{sc}", Body=body, StorageClass=sc)
            head = s3.head_object(Bucket=bucket, Key=f"obj-{sc}")
            # S3 omits the header for STANDARD
            assert head.get("StorageClass", "STANDARD") == sc, head
            assert s3.get_object(Bucket=bucket, Key=f"obj-{sc}")["Body"].read() == body
        listed = {o["Key"]: o["StorageClass"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]}
        assert listed == {
            "obj-STANDARD": "STANDARD",
            "obj-STANDARD_IA": "STANDARD_IA",
            "obj-GLACIER": "GLACIER",
        }
    finally:
        for o in s3.list_objects_v2(Bucket=bucket).get("Contents", []):
            s3.delete_object(Bucket=bucket, Key=o["Key"])
        s3.delete_bucket(Bucket=bucket)


def test_second_site_is_another_endpoint_identity_and_pool(lab):
    """The DR site (docs/offsite.md): its own radosgw, S3 user and RADOS pool; the users see
    nothing of each other's buckets (nothing server-side between the sites)."""
    boto3 = pytest.importorskip("boto3")
    env = lab.env
    assert env["DRSVC_DR_S3_ENDPOINT_URL"] == "http://127.0.0.1:7481"
    pools = json.loads(lab.ceph("osd", "pool", "ls", "detail", "-f", "json"))
    dr_pool = {p["pool_name"]: p for p in pools}.get(env["DRSVC_DR_POOL"])
    assert dr_pool is not None and "rados" in dr_pool["application_metadata"]

    def client(prefix: str, endpoint: str):
        return boto3.client(
            "s3",
            endpoint_url=endpoint,
            aws_access_key_id=env[f"{prefix}ACCESS_KEY_ID"],
            aws_secret_access_key=env[f"{prefix}SECRET_ACCESS_KEY"],
            region_name=env["AWS_DEFAULT_REGION"],
        )

    dr = client("DRSVC_DR_", env["DRSVC_DR_S3_ENDPOINT_URL"])
    primary = client("AWS_", env["S3_ENDPOINT_URL"])
    assert env["DRSVC_DR_ACCESS_KEY_ID"] != env["AWS_ACCESS_KEY_ID"]
    bucket = f"itest-dr-{uuid.uuid4().hex[:10]}"
    dr.create_bucket(Bucket=bucket)
    try:
        dr.put_object(Bucket=bucket, Key="k", Body=b"at the DR site")
        assert dr.get_object(Bucket=bucket, Key="k")["Body"].read() == b"at the DR site"
        assert bucket not in {b["Name"] for b in primary.list_buckets()["Buckets"]}
        with pytest.raises(primary.exceptions.ClientError) as denied:
            primary.get_object(Bucket=bucket, Key="k")
        assert denied.value.response["Error"]["Code"] == "AccessDenied"
    finally:
        dr.delete_object(Bucket=bucket, Key="k")
        dr.delete_bucket(Bucket=bucket)


# ---------------------------------------------------------------- Podman + CRIU
def test_checkpoint_export_remove_import_continues(lab, make_fleet, podman_api, tmp_path):
    (desk,) = make_fleet(1)
    labels = podman_api.inspect(desk)["Config"]["Labels"]
    assert labels["drsvc.desktop"] == desk and labels["drsvc.lab"] == "1"
    before, boot = _wait_counter(desk, 3)

    archive = tmp_path / "ckpt.tar"
    size = podman_api.checkpoint_export(desk, archive)
    assert size > 0 and archive.stat().st_size == size
    assert podman_api.inspect(desk)["State"]["Status"] == "exited"
    podman_api.remove(desk)
    assert subprocess.run(["podman", "container", "exists", desk]).returncode == 1

    rep = podman_api.restore_import(archive, name=desk)
    assert rep.get("Id")
    state = podman_api.inspect(desk)
    assert state["State"]["Status"] == "running"
    assert state["Config"]["Labels"]["drsvc.volume"] == f"rados://desktops/{desk}"
    after, boot_after = _wait_counter(desk, before + 1)
    assert boot_after == boot, "restored process must keep its in-memory boot id"
    assert after > before


def test_fleet_labels_and_data_verify(lab, make_fleet, rados_cluster, fleetdata):
    ids = make_fleet(3, seed=7, data_mib=2)
    assert ids[0].endswith("-001") and ids[2].endswith("-003")
    out = subprocess.run(["podman", "inspect", *ids], capture_output=True, text=True, check=True).stdout
    labels = {c["Name"].lstrip("/"): c["Config"]["Labels"] for c in json.loads(out)}
    assert labels[ids[0]]["drsvc.tenant"] == "acme" and labels[ids[1]]["drsvc.tenant"] == "globex"
    assert [labels[d]["tier"] for d in ids] == ["standard", "standard", "executive"]
    assert all(labels[d]["drsvc.volume"] == f"rados://desktops/{d}" for d in ids)

    io = rados_cluster.open_ioctx("desktops")
    try:
        for d in ids:
            assert fleetdata.verify_namespace(io, 7, d, 2, strict=True) == []
        # byte for byte by digest too, and the realistic mix is there
        exp = fleetdata.expected_objects(7, ids[0], 2)
        assert fleetdata.read_digests(io, ids[0]) == {n: fleetdata._digest(o) for n, o in exp.items()}
        total = sum(len(o[0]) for o in exp.values())
        assert 1.8 * 2**20 <= total <= 2.3 * 2**20
        assert any(o[1] for o in exp.values()) and any(o[2] for o in exp.values())
        # the base image set is shared by all desktops of a seed, the rest is per desktop
        other = fleetdata.expected_objects(7, ids[1], 2)
        base = [n for n in exp if n.startswith("base/")]
        assert base and all(exp[n] == other[n] for n in base)
        assert exp["meta/profile"] != other["meta/profile"]
        # a modification is detected
        name = next(n for n in exp if n.startswith("home/docs/"))
        io.set_namespace(ids[0])
        io.write(name, b"X", 0)
        problems = fleetdata.verify_namespace(io, 7, ids[0], 2)
        assert len(problems) == 1 and name in problems[0]
    finally:
        io.close()


@pytest.mark.slow
def test_desktop_image_host_network_checkpoint_needs_tcp_established(
    lab, make_fleet, podman_api, rados_cluster, tmp_path
):
    """The desktop image runs with --network host (librados reaches the host's 127.0.0.1) and keeps
    established TCP connections to the mon/OSD: CRIU refuses those unless tcpEstablished is set,
    with it the process (Xvfb, x11vnc, python + librados) continues, writing to RADOS again."""
    (desk,) = make_fleet(1, image="desktop")  # builds the image on first use (~1-2 min)
    info = podman_api.inspect(desk)
    assert info["HostConfig"]["NetworkMode"] == "host"
    before, boot = _wait_counter(desk, 3)
    io = rados_cluster.open_ioctx("desktops")
    io.set_namespace(desk)
    try:
        assert io.read("counter", 100).split()[1].decode() == boot

        with pytest.raises(AssertionError, match="checkpoint"):
            podman_api.checkpoint_export(desk, tmp_path / "refused.tar")
        assert podman_api.inspect(desk)["State"]["Status"] == "running"

        archive = tmp_path / "ckpt.tar"
        podman_api.checkpoint_export(desk, archive, tcpEstablished="true")
        at_ckpt = int(io.read("counter", 100).split()[0])
        podman_api.remove(desk)
        podman_api.restore_import(archive, name=desk, tcpEstablished="true")
        _, boot_after = _wait_counter(desk, before + 2)
        assert boot_after == boot
        deadline = time.monotonic() + 15
        while True:  # librados in the restored process writes again
            n, b = io.read("counter", 100).decode().split()
            if int(n) > at_ckpt:
                break
            assert time.monotonic() < deadline, f"RADOS counter stuck at {n}"
            time.sleep(0.2)
        assert b == boot
    finally:
        io.close()
