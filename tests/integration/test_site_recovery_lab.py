"""Off-site DR on the real lab: copies at the second site, losing the primary, recovering it there.

The lab's second site (dev/lab): another radosgw endpoint with its own user and keys, and the pool
drsvc-dr-desktops standing in for the DR site's Ceph; the same Podman host runs the recovered
desktops (simulated: one host; see docs/offsite.md).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest
from counting import counted_past
from runtime_suite import read_counter

from drsvc.catalog import Catalog

DR_POOL_ENV = "DRSVC_DR_POOL"


def _dr_client() -> Any:
    return boto3.client(
        "s3",
        endpoint_url=os.environ["DRSVC_DR_S3_ENDPOINT_URL"],
        aws_access_key_id=os.environ["DRSVC_DR_ACCESS_KEY_ID"],
        aws_secret_access_key=os.environ["DRSVC_DR_SECRET_ACCESS_KEY"],
        region_name="us-east-1",
    )


def _rm_bucket(lab: Any, name: str) -> None:
    # radosgw-admin removes a bucket whatever its Object Lock (the S3 API, rightly, cannot)
    subprocess.run(
        ["radosgw-admin", "-c", lab.ceph_conf, "bucket", "rm", "--bucket", name, "--purge-objects", "--bypass-gc"],
        capture_output=True,
        timeout=120,
    )


@pytest.fixture
def sites(lab: Any) -> Iterator[dict[str, str]]:
    if "DRSVC_DR_S3_ENDPOINT_URL" not in os.environ:
        pytest.fail("the lab has no second site: run dev/lab up (it adds client.rgw.dr and the DR pool)")
    names = {"cold": f"offsite-it-cold-{uuid.uuid4().hex[:8]}", "dr": f"offsite-it-dr-{uuid.uuid4().hex[:8]}"}
    yield names
    for bucket in names.values():
        _rm_bucket(lab, bucket)


@dataclass
class DRPool:
    """The DR pool, and the namespaces a test recovered into it (purged afterwards)."""

    ioctx: Any
    touched: list[str] = field(default_factory=list)


@pytest.fixture
def dr_pool(lab: Any, rados_cluster: Any, fleetdata: Any) -> Iterator[DRPool]:
    pool = DRPool(rados_cluster.open_ioctx(os.environ[DR_POOL_ENV]))
    yield pool
    if pool.touched:
        fleetdata.purge_namespaces(pool.ioctx, pool.touched)
    pool.ioctx.close()


def _primary(env: Any, sites: dict[str, str], *, pack_mib: int = 16) -> None:
    env.write(
        f'[cold]\nstore = "s3://{sites["cold"]}/fleet"\nendpoint_url = "{os.environ["S3_ENDPOINT_URL"]}"\n'
        f"pack_mib = {pack_mib}\n"
        f'[sites.dr]\nstore = "s3://{sites["dr"]}/fleet"\nendpoint_url = "{os.environ["DRSVC_DR_S3_ENDPOINT_URL"]}"\n'
        f'credentials = "env:DRSVC_DR"\nobject_lock = true\nrestore_pool = "rados://{os.environ[DR_POOL_ENV]}"\n'
    )


def _dr_site(env: Any, sites: dict[str, str]) -> Path:
    """The DR site's config: the key material and policies, the site's store, a runtime; nothing of the primary."""
    root = env.root / "dr-site"
    (root / "policies").mkdir(parents=True)
    (root / "drsvc.key").write_bytes((env.root / "drsvc.key").read_bytes())
    (root / "drsvc.key").chmod(0o600)
    for policy in (env.root / "policies").glob("*.yaml"):
        (root / "policies" / policy.name).write_bytes(policy.read_bytes())
    (root / "drsvc.toml").write_text(
        f'[catalog]\npath = "catalog.db"\n[keys]\nfile = "drsvc.key"\n'
        f'[runtime]\nurl = "podman://{os.environ["DRSVC_PODMAN_SOCKET"]}"\n'
        f'[sites.dr]\nstore = "s3://{sites["dr"]}/fleet"\nendpoint_url = "{os.environ["DRSVC_DR_S3_ENDPOINT_URL"]}"\n'
        f'credentials = "env:DRSVC_DR"\nobject_lock = true\nrestore_pool = "rados://{os.environ[DR_POOL_ENV]}"\n'
    )
    return root / "drsvc.toml"


def _kill_copy_once(env: Any, limit_kib: str, reached: Callable[[], bool], never: str) -> None:
    """Run ``drsvc copy`` slowed to ``limit_kib`` KiB/s and SIGKILL it once ``reached()`` holds."""
    copy = env.subprocess("copy", "--limit-upload", limit_kib)
    try:
        deadline = time.monotonic() + 60
        while not reached():
            assert copy.poll() is None, copy.communicate()
            assert time.monotonic() < deadline, f"{never} within 60 s"
            time.sleep(0.05)
        copy.send_signal(signal.SIGKILL)
    finally:
        copy.wait(30)


def test_a_lost_primary_comes_back_at_the_second_site(
    drsvc_env: Any, make_fleet: Any, sites: dict[str, str], dr_pool: DRPool, fleetdata: Any
) -> None:
    _primary(drsvc_env, sites)
    desktops = make_fleet(10, data_mib=1)
    drsvc_env.policy(
        "offsite",
        desktops,
        priority=1,
        retention={"hot": {"last": 1}, "cold": {"last": 1}},
        tiering={"after": "1s", "storage_class": "STANDARD_IA"},
        sites={"dr": {"after": "1s", "retention": {"last": 3}, "object_lock_days": 1}},
    )
    runtime = drsvc_env.services().runtime
    before = {d: read_counter(runtime, d) for d in desktops}
    first = drsvc_env.cli("--json", "backup", "--policy", "offsite")
    assert first.code == 0, first.output
    first_points = {r["desktop"]: r["point_id"] for r in first.json()["results"]}
    assert len(first_points) == 10
    time.sleep(1.2)
    assert drsvc_env.cli("tier").code == 0
    copied = drsvc_env.cli("--json", "copy")
    assert copied.code == 0, copied.output
    doc = copied.json()
    assert doc["summary"]["done"] == 10 and doc["modes"] == {"dr": "streamed"}  # two endpoints: streamed

    # a second point everywhere at the primary, and a prune there drops the first: hot and cold
    # keep one each. The DR copies of the first points are object-locked at the DR site.
    assert drsvc_env.cli("backup", "--policy", "offsite").code == 0
    time.sleep(1.2)
    assert drsvc_env.cli("tier").code == 0
    pruned = drsvc_env.cli("--json", "prune")
    assert pruned.code == 0, pruned.output
    catalog = Catalog.open(drsvc_env.root / "catalog.db")
    for pid in first_points.values():
        point = catalog.point(pid)
        assert point["tiers"] == [] and point["sites"] == ["dr"] and point["status"] == "complete", point
    dr = _dr_client()
    listed = {o["Key"] for o in dr.list_objects_v2(Bucket=sites["dr"], Prefix="fleet/manifests/").get("Contents", [])}
    assert all(f"fleet/manifests/{d}/{p}" in listed for d, p in first_points.items())
    some = next(iter(first_points.items()))
    retention = dr.get_object_retention(Bucket=sites["dr"], Key=f"fleet/manifests/{some[0]}/{some[1]}")
    assert retention["Retention"]["Mode"] == "COMPLIANCE"
    verified = drsvc_env.cli("--json", "verify", "--all", "--site", "dr", "--read-data")
    assert verified.code == 0, verified.output

    # the drill: the whole site rehearsed on clones, nothing live touched
    drill = drsvc_env.cli("--json", "site", "drill", "--from", "dr", "--parallel", "4")
    assert drill.code == 0, drill.output
    assert drill.json()["summary"]["up"] == 10
    assert all(runtime.inspect(d).state == "running" for d in desktops)
    leftovers = [
        n
        for n in subprocess.run(
            ["podman", "ps", "-a", "--format", "{{.Names}}"], capture_output=True, text=True, check=True
        ).stdout.split()
        if n.startswith("sitedrill-")
    ]
    assert leftovers == []

    # the primary site is lost: desktops, catalog, hot and cold stores gone from what recovery uses
    at_loss = {d: counted_past(runtime, d, 10) for d in desktops}
    for d in desktops:
        runtime.remove(d)
    dr_config = _dr_site(drsvc_env, sites)
    dr_pool.touched.extend(desktops)
    recovered = drsvc_env.run_cli("--config", str(dr_config), "--json", "site", "recover", "--from", "dr")
    assert recovered.code == 0, recovered.output
    report = recovered.json()
    assert report["summary"]["up"] == 10 and report["summary"]["all_up_seconds"] is not None
    assert {d["desktop"]: d["point_id"] for d in report["desktops"]} == first_points
    for d in desktops:
        # exact data, in the DR pool, compared with what the generator wrote (not drsvc's digests)
        assert fleetdata.verify_namespace(dr_pool.ioctx, 42, d, 1) == [], d
        count, boot = read_counter(runtime, d)
        assert boot == before[d][1]  # the same process, continued from its checkpoint ...
        assert before[d][0] <= count < at_loss[d]  # ... from the first point, not from the lost state
    time.sleep(0.6)
    assert all(read_counter(runtime, d)[0] > before[d][0] for d in desktops)  # and counting on
    # running it again resumes: nothing left to do
    again = drsvc_env.run_cli("--config", str(dr_config), "--json", "site", "recover", "--from", "dr")
    assert again.code == 0 and again.json()["summary"]["skipped"] == 10, again.output


def test_an_interrupted_copy_resumes(drsvc_env: Any, make_fleet: Any, sites: dict[str, str]) -> None:
    _primary(drsvc_env, sites, pack_mib=1)
    [desktop] = make_fleet(1, data_mib=6)
    drsvc_env.policy(
        "resume", [desktop], tiering={"after": "1s", "storage_class": "STANDARD_IA"}, sites={"dr": {"after": "1s"}}
    )
    assert drsvc_env.cli("backup", "--policy", "resume").code == 0
    time.sleep(1.2)
    assert drsvc_env.cli("tier").code == 0
    dr = _dr_client()

    def at_dr(prefix: str) -> list[str]:
        try:
            contents = dr.list_objects_v2(Bucket=sites["dr"], Prefix=f"fleet/{prefix}").get("Contents", [])
        except dr.exceptions.NoSuchBucket:
            return []
        return [o["Key"] for o in contents]

    # ~6 MiB at 512 KiB/s: ~12 s
    _kill_copy_once(drsvc_env, "512", lambda: len(at_dr("packs/")) >= 2, "no pack reached the DR site")
    assert at_dr("manifests/") == []  # killed mid-copy: no point is at the site
    packs_before = set(at_dr("packs/"))
    resumed = drsvc_env.cli("--json", "copy")
    assert resumed.code == 0, resumed.output
    [move] = resumed.json()["moves"]
    assert move["status"] == "done" and move["objects_copied"] < move["objects"]  # only what was missing
    assert packs_before < set(at_dr("packs/"))
    assert drsvc_env.cli("verify", "--all", "--site", "dr", "--read-data").code == 0


def test_a_killed_site_drill_leaves_no_sandbox_after_cleanup(
    drsvc_env: Any, make_fleet: Any, sites: dict[str, str], dr_pool: DRPool
) -> None:
    """kill -9 of ``site drill`` while its sandbox runs: the intents its restore recorded are in the
    drill's scratch catalog, which cleanup must find; the drill's record must not stay running."""
    _primary(drsvc_env, sites)
    [desktop] = make_fleet(1, data_mib=1)
    drsvc_env.policy("sd", [desktop], tiering={"after": "1s"}, sites={"dr": {"after": "1s"}})
    assert drsvc_env.cli("backup", "--policy", "sd").code == 0
    time.sleep(1.2)
    assert drsvc_env.cli("tier").code == 0
    time.sleep(1.2)
    assert drsvc_env.cli("copy").code == 0

    def sandboxes() -> list[str]:
        names = subprocess.run(
            ["podman", "ps", "-a", "--format", "{{.Names}}"], capture_output=True, text=True, check=True
        ).stdout.split()
        spaces = {o.nspace for o in dr_pool.ioctx.list_objects()}
        return [n for n in names if n.startswith("sitedrill-") and desktop in n] + sorted(
            n for n in spaces if n.startswith("sitedrill-") and desktop in n
        )

    killed = {**os.environ, "DRSVC_FAULT": "after-clone-created:kill"}
    proc = drsvc_env.subprocess("site", "drill", "--from", "dr", env=killed)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == -9, f"the site drill never reached after-clone-created:\n{out}\n{err}"
    left = sandboxes()
    dr_pool.touched.extend(left)  # purged afterwards, whatever the test found
    try:
        assert left, "the kill left no sandbox: the test tests nothing"
        cleaned = drsvc_env.cli("cleanup")
        assert cleaned.code == 0, cleaned.output
        assert sandboxes() == [], "a killed site drill's sandbox outlived cleanup"
        catalog = Catalog.open(drsvc_env.root / "catalog.db")
        try:
            statuses = [r["status"] for r in catalog.query("SELECT status FROM site_recoveries")]
        finally:
            catalog.close()
        assert statuses == ["interrupted"], statuses
        assert drsvc_env.cli("catalog", "check").code == 0
    finally:
        for name in left:
            subprocess.run(["podman", "rm", "-f", "-t", "0", name], capture_output=True, timeout=120)


def test_a_copy_killed_mid_multipart_leaves_no_open_upload_at_the_site_after_cleanup(
    drsvc_env: Any, make_fleet: Any, sites: dict[str, str]
) -> None:
    """A pack past the site store's 16 MiB multipart threshold is streamed as a multipart upload;
    kill -9 mid-upload leaves it open at the site (storage it bills for): cleanup must abort it."""
    from drsvc.volumes.base import VolumeObject

    _primary(drsvc_env, sites, pack_mib=32)
    [desktop] = make_fleet(1, data_mib=1)
    big = os.urandom(30 * 1024 * 1024)  # incompressible: one pack past the 16 MiB threshold
    drsvc_env.services().volume(f"rados://desktops/{desktop}").write_objects(
        [(VolumeObject("big", len(big)), iter([big]))], exact=False
    )
    drsvc_env.policy("mp", [desktop], tiering={"after": "1s"}, sites={"dr": {"after": "1s"}})
    assert drsvc_env.cli("backup", "--policy", "mp").code == 0
    time.sleep(1.2)
    assert drsvc_env.cli("tier").code == 0
    time.sleep(1.2)
    dr = _dr_client()

    def open_uploads() -> list[str]:
        try:
            return [u["Key"] for u in dr.list_multipart_uploads(Bucket=sites["dr"]).get("Uploads", [])]
        except dr.exceptions.NoSuchBucket:
            return []

    # ~31 MiB at 2 MiB/s: ~15 s
    _kill_copy_once(drsvc_env, "2048", lambda: bool(open_uploads()), "no multipart upload began at the DR site")
    assert open_uploads(), "the kill left no open upload: the test tests nothing"
    cleaned = drsvc_env.cli("cleanup")
    assert cleaned.code == 0, cleaned.output
    assert open_uploads() == [], "a killed copy's multipart upload is still open at the site after cleanup"
    resumed = drsvc_env.cli("copy")
    assert resumed.code == 0, resumed.output
    assert drsvc_env.cli("verify", "--all", "--site", "dr").code == 0


def test_wrong_site_names_and_unreachable_sites_are_clear_errors(drsvc_env: Any, sites: dict[str, str]) -> None:
    _primary(drsvc_env, sites)
    wrong = drsvc_env.cli("site", "recover", "--from", "dx")
    assert wrong.code == 3 and "no site named 'dx'" in wrong.stderr and "configured sites: dr" in wrong.stderr
    drsvc_env.write(
        f'[sites.dr]\nstore = "s3://{sites["dr"]}/fleet"\nendpoint_url = "http://127.0.0.1:9"\n'
        'credentials = "env:DRSVC_DR"\n'
    )
    down = drsvc_env.cli("site", "recover", "--from", "dr")
    assert down.code == 1, down.output
    assert "site dr (" in down.stderr and "cannot be used" in down.stderr and "Traceback" not in down.stderr
    assert [line for line in down.stderr.splitlines() if line.strip()] == [down.stderr.strip()]  # one line


def test_a_storm_at_the_primary_restores_a_tenant_in_place(drsvc_env: Any, make_fleet: Any) -> None:
    desktops = make_fleet(3, data_mib=1)  # tenants alternate: -001 and -003 are acme
    drsvc_env.policy("storm", desktops)
    runtime = drsvc_env.services().runtime
    assert drsvc_env.cli("backup", "--policy", "storm").code == 0
    acme = [d for d in desktops if runtime.inspect(d).labels.get("drsvc.tenant") == "acme"]
    assert len(acme) == 2
    boots = {d: read_counter(runtime, d)[1] for d in acme}
    for d in acme:
        runtime.remove(d)  # their node is lost
    # --policy keeps the storm to this test's desktops: the shared lab's other acme desktops (other
    # tests, benchmarks) may be down with no point in this catalog, which a storm rightly reports
    storm = drsvc_env.cli("--json", "restore", "--tenant", "acme", "--policy", "storm", "--parallel", "2")
    assert storm.code == 0, storm.output
    doc = storm.json()
    assert [(d["desktop"], d["status"]) for d in doc["desktops"]] == [(d, "ok") for d in sorted(acme)]
    assert all(read_counter(runtime, d)[1] == boots[d] for d in acme)
    rows = Catalog.open(drsvc_env.root / "catalog.db").query("SELECT kind, status FROM site_recoveries")
    assert rows == [{"kind": "storm", "status": "ok"}]
