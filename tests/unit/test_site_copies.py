"""Copies at other sites (moto S3): what is due, objects as they are, verified, resumable, locks per site."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import boto3
import pytest
from coldkit import aws  # noqa: F401  (aws: the fixture, used through pytestmark)
from sitekit import SiteKit, cold_points, site_kit

from drsvc.chunks import ChunkStore, StreamRef
from drsvc.errors import EXIT_OK, IntegrityError, NotFound
from drsvc.offsite.copy import CopyJob
from drsvc.offsite.plan import plan_copies
from drsvc.offsite.prune import prune_site
from drsvc.offsite.verify import SiteVerifyJob
from drsvc.storage.s3 import S3Store
from drsvc.storage.transfer import RateLimit, Transfer
from drsvc.tiering import ColdPruneJob, TierJob

pytestmark = pytest.mark.usefixtures("aws")


@pytest.fixture
def kit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SiteKit]:
    yield from site_kit(tmp_path, monkeypatch)


MiB = 1024 * 1024


def test_due_points_reach_the_site_byte_for_byte_and_read_back_with_the_key(kit: SiteKit) -> None:
    p1, p2 = cold_points(kit, {"dr": {"after": "1h"}})
    report = CopyJob(kit.services, None).run(now=kit.now)
    assert report.exit_code == EXIT_OK, report.document()
    assert [(m.point_id, m.site, m.status) for m in report.moves] == [(p1, "dr", "done"), (p2, "dr", "done")]
    assert report.modes == {"dr": "server-side"}  # one S3 service, one identity: nothing streamed
    cold = kit.site_keys(kit.bucket, "fleet/")
    site = kit.site_keys(kit.dr_bucket, "site/")
    # config, packs, indexes, manifests: the same bytes under the same keys (nothing re-encrypted)
    assert set(site) <= set(cold) and "config" in site
    assert all(site[k] == cold[k] for k in site)
    assert {k for k in cold if k.startswith(("packs/", "index/", "manifests/", "keys/"))} == {
        k for k in site if k.startswith(("packs/", "index/", "manifests/", "keys/"))
    }
    assert any(k.startswith("keys/") for k in site)  # the tenant's wrapped data key went too
    # the site is a chunk store of its own: opened with the key alone, it reads the points back
    store = ChunkStore.open(S3Store(kit.dr_bucket, "site", create=False), kit.services.keys)
    for pid in (p1, p2):
        manifest = store.get_manifest("alice", pid)
        ref = StreamRef.from_dict(manifest["volume"]["stream"])
        assert store.read_bytes(ref) == kit.services.hot.read_bytes(ref)
    assert kit.catalog.point(p1)["sites"] == ["dr"]
    head = boto3.client("s3").head_object
    pack = next(k for k in site if k.startswith("packs/"))
    assert head(Bucket=kit.dr_bucket, Key=f"site/{pack}")["StorageClass"] == "STANDARD_IA"
    assert "StorageClass" not in head(Bucket=kit.dr_bucket, Key=f"site/manifests/alice/{p1}")
    # nothing more is due
    assert CopyJob(kit.services, None).run(now=kit.now).moves == []


def test_another_account_is_streamed_and_verified(kit: SiteKit) -> None:
    [pid] = cold_points(kit, {"far": {"after": "1h"}}, n=1)
    sent: list[str] = []
    real = Transfer._streamed

    def counting(self: Transfer, key: str, *a: Any) -> Any:
        sent.append(key)
        return real(self, key, *a)

    Transfer._streamed = counting  # type: ignore[method-assign]
    try:
        report = CopyJob(kit.services, None).run(now=kit.now)
    finally:
        Transfer._streamed = real  # type: ignore[method-assign]
    assert report.exit_code == EXIT_OK and report.modes == {"far": "streamed"}
    assert "config" in sent and any(k.startswith("packs/") for k in sent)
    cold = kit.site_keys(kit.bucket, "fleet/")
    site = kit.site_keys(kit.far_bucket)
    assert site[f"manifests/alice/{pid}"] == cold[f"manifests/alice/{pid}"]


def test_what_is_due_follows_after_coldness_and_the_sites_retention(kit: SiteKit) -> None:
    kit.policy("std", ["alice"], sites={"dr": {"after": "6h", "retention": {"last": 1}}})
    old = kit.point("alice", kit.now - timedelta(hours=9), os.urandom(100_000))
    older = kit.point("alice", kit.now - timedelta(hours=10), os.urandom(100_000))
    young = kit.point("alice", kit.now - timedelta(hours=2), os.urandom(100_000))
    sites = kit.services.config.sites
    assert plan_copies(kit.catalog, kit.services.policies, sites, kit.now) == []  # nothing is cold yet
    TierJob(kit.services, None).run(now=kit.now)
    # the site keeps the last 1 (young): old and older are not worth sending, young is not 6 h old
    assert plan_copies(kit.catalog, kit.services.policies, sites, kit.now) == []
    later = plan_copies(kit.catalog, kit.services.policies, sites, kit.now + timedelta(hours=5))
    assert [c.point["id"] for c in later] == [young]
    kit.policy("std", ["alice"], sites={"dr": {"after": "6h", "retention": {"last": 2}}})
    due = plan_copies(kit.catalog, kit.services.policies, sites, kit.now)
    assert [c.point["id"] for c in due] == [old]  # last 2 = young + old; young is too young
    assert older not in [c.point["id"] for c in due]
    assert "cold and older than sites.dr.after (6h)" in due[0].reasons


def test_a_site_the_config_lacks_and_an_unknown_site_name_are_clear(kit: SiteKit) -> None:
    [pid] = cold_points(kit, {"nowhere": {"after": "1h"}}, n=1)
    report = CopyJob(kit.services, None).run(now=kit.now)
    assert [(m.point_id, m.status) for m in report.moves] == [(pid, "failed")]
    assert "names site 'nowhere', which the config does not define" in (report.moves[0].error or "")
    with pytest.raises(NotFound, match=r"no site named 'drr'.*did you mean 'dr'.*configured sites: dr, far"):
        CopyJob(kit.services, None).run(site="drr", now=kit.now)


def test_an_interrupted_copy_resumes_without_copying_anything_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kit = SiteKit(tmp_path, pack_mib=1)  # small packs: a 12 MiB point is a dozen
    kit.policy("std", ["alice"], sites={"dr": {"after": "1h"}})
    pid = kit.point("alice", kit.now - timedelta(hours=5), os.urandom(12 * MiB))
    TierJob(kit.services, None).run(now=kit.now)
    packs = [k for k in kit.site_keys(kit.bucket, "fleet/") if k.startswith("packs/")]
    assert len(packs) >= 10
    real = Transfer.copy
    done: list[str] = []

    def dying(self: Transfer, key: str, **kw: Any) -> Any:
        # >=, not ==: copies run on several threads, so the count can step past 3 between checks
        if key.startswith("packs/") and len([k for k in done if k.startswith("packs/")]) >= 3:
            raise KeyboardInterrupt  # the process is killed mid-copy
        out = real(self, key, **kw)
        done.append(key)
        return out

    monkeypatch.setattr(Transfer, "copy", dying)
    with pytest.raises(KeyboardInterrupt):
        CopyJob(kit.services, None).run(now=kit.now)
    monkeypatch.setattr(Transfer, "copy", real)
    at_site = kit.site_keys(kit.dr_bucket, "site/")
    assert not any(k.startswith("manifests/") for k in at_site)  # no point is at the site half-copied
    assert kit.catalog.point(pid)["sites"] == []
    copied_before = {k for k in at_site if k.startswith("packs/")}
    assert 0 < len(copied_before) < len(packs)
    assert kit.catalog.query("SELECT status FROM jobs WHERE kind = 'copy'") == [{"status": "interrupted"}]

    kit.fresh_services()
    sent: list[str] = []
    monkeypatch.setattr(Transfer, "copy", lambda self, key, **kw: (sent.append(key), real(self, key, **kw))[1])
    report = CopyJob(kit.services, None).run(now=kit.now)
    assert report.exit_code == EXIT_OK
    assert not copied_before & set(sent)  # nothing already there was sent again
    assert {k for k in kit.site_keys(kit.dr_bucket, "site/") if k.startswith("packs/")} == set(packs)
    assert kit.catalog.point(pid)["sites"] == ["dr"]
    kit.catalog.close()


def test_locked_copies_at_a_site_outlive_prune_at_the_primary_and_at_the_site(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAR_ACCESS_KEY_ID", "far-account")
    monkeypatch.setenv("FAR_SECRET_ACCESS_KEY", "far-secret")
    kit = SiteKit(tmp_path, lock=True)
    kit.policy(
        "std",
        ["carol"],
        retention={"hot": {"last": 1}, "cold": {"last": 1}},
        sites={"dr": {"after": "1h", "retention": {"last": 1}}},
    )
    old = kit.point("carol", kit.now - timedelta(hours=30), os.urandom(MiB))
    TierJob(kit.services, None).run(now=kit.now - timedelta(hours=20))
    first = CopyJob(kit.services, None).run(now=kit.now - timedelta(hours=20))
    assert [m.status for m in first.moves] == ["done"] and first.moves[0].retain_until, first.document()
    new = kit.point("carol", kit.now - timedelta(hours=5), os.urandom(MiB))
    TierJob(kit.services, None).run(now=kit.now)
    CopyJob(kit.services, None).run(now=kit.now)
    # the primary drops the old point everywhere it may: hot and cold
    from drsvc.prune import PruneJob

    # (no Ceph in unit tests: the pool snapshot the hot prune lets go of is forgotten, not removed)
    monkeypatch.setattr(kit.services, "snapshots", lambda scope: SimpleNamespace(remove=lambda name: None))
    PruneJob(kit.services, None).run(now=kit.now)
    ColdPruneJob(kit.services, None).run(now=kit.now)
    point = kit.catalog.point(old)
    assert point["tiers"] == [] and point["sites"] == ["dr"] and point["status"] == "complete"
    site = kit.services.site("dr")
    assert site.get_manifest("carol", old)["point_id"] == old  # the DR copy is untouched
    # the site's own prune: its retention (last 1) would drop it, but the lock there holds
    report = prune_site(kit.services, "dr", None, now=kit.now)
    assert report.locked == [old] and site.get_manifest("carol", old)["point_id"] == old
    client = boto3.client("s3")
    key = f"site/manifests/carol/{old}"
    version = client.head_object(Bucket=kit.dr_bucket, Key=key)["VersionId"]
    with pytest.raises(client.exceptions.ClientError, match="AccessDenied"):
        client.delete_object(Bucket=kit.dr_bucket, Key=key, VersionId=version)
    # once the lock expired, the site drops it, and the point has no copy left anywhere
    later = kit.now + timedelta(days=3)
    after = prune_site(kit.services, "dr", None, now=later)
    assert [d.point_id for d in after.decisions if not d.keep] == [old]
    assert kit.catalog.point(old)["status"] == "expired"
    assert list(site.list_manifests("carol")) == [("carol", new)]
    kit.catalog.close()


def test_verify_site_names_damage_at_the_site(kit: SiteKit) -> None:
    [pid] = cold_points(kit, {"dr": {"after": "1h"}}, n=1)
    CopyJob(kit.services, None).run(now=kit.now)
    assert SiteVerifyJob(kit.services, "dr").run(read_data=True).ok
    client = boto3.client("s3")
    pack = next(k for k in kit.site_keys(kit.dr_bucket, "site/") if k.startswith("packs/"))
    client.delete_object(Bucket=kit.dr_bucket, Key=f"site/{pack}")
    kit.fresh_services()
    report = SiteVerifyJob(kit.services, "dr").run()
    assert not report.ok and report.affected == [pid]
    assert report.problems[0].tier == "site:dr" and report.problems[0].kind == "chunks-missing"
    assert kit.catalog.point(pid)["tiers"] == ["hot", "cold"]  # the primary's copies are not involved


def test_a_destination_that_stores_other_bytes_is_caught(kit: SiteKit) -> None:
    source = S3Store(kit.bucket, "src")
    source.put("packs/ab/x", os.urandom(300_000))
    dest = S3Store(kit.dr_bucket, "dst")
    real_put = dest._put

    def flipping(oid: str, key: str, data: bytes, args: dict[str, Any]) -> str | None:
        return real_put(oid, key, bytes([data[0] ^ 1]) + data[1:], args)  # a bit flipped on the way in

    dest._put = flipping  # type: ignore[method-assign]
    transfer = Transfer(source, dest)
    transfer.server_side = False
    with pytest.raises(IntegrityError, match="content differs"):
        transfer.copy("packs/ab/x")


def test_the_rate_limit_spaces_bytes_out() -> None:
    limit = RateLimit(1_000_000)  # 1 MB/s, a one-second burst
    assert limit.take(900_000) == 0.0
    assert limit.take(400_000) >= 0.25  # 300 kB over the burst: ~0.3 s


def test_copy_cli_json_dry_run_and_unknown_site(kit: SiteKit, run_cli: Any) -> None:
    cold_points(kit, {"dr": {"after": "1h"}}, n=1)
    config = str(kit.root / "drsvc.toml")
    dry = run_cli("--config", config, "--json", "copy", "--dry-run")
    assert dry.code == 0, dry.output
    assert dry.json()["moves"][0]["site"] == "dr" and dry.json()["dry_run"] is True
    real = run_cli("--config", config, "--json", "copy", "--limit-upload", "100000")
    assert real.code == 0, real.output
    assert real.json()["summary"]["done"] == 1
    listed = run_cli("--config", config, "--json", "points", "list")
    assert listed.json()[0]["sites"] == ["dr"]
    table = run_cli("--config", config, "points", "list").stdout.splitlines()
    at = table[0].index("SITES")
    assert table[1][at:].split()[0] == "dr", table
    shown = run_cli("--config", config, "--json", "points", "show", listed.json()[0]["id"]).json()
    assert [s["site"] for s in shown["site_detail"]] == ["dr"]
    bad = run_cli("--config", config, "copy", "--site", "nope")
    assert bad.code == 3 and "no site named 'nope'" in bad.stderr and "Traceback" not in bad.stderr
    bad = run_cli("--config", config, "verify", "--all", "--site", "nope")
    assert bad.code == 3, bad.output


def test_the_scheduler_copies_after_tiering(kit: SiteKit) -> None:
    from drsvc.scheduler import Scheduler

    kit.policy("std", ["alice"], sites={"dr": {"after": "1h"}})
    pid = kit.point("alice", kit.now - timedelta(hours=5), os.urandom(300_000))
    report = Scheduler(kit.services).tick(now=kit.now)  # its backup of alice fails here: no runtime in unit tests
    purposes = [r["purpose"] for r in report.ran]
    assert purposes.index("tier") < purposes.index("copy")
    assert kit.catalog.point(pid)["tiers"] == ["hot", "cold"] and kit.catalog.point(pid)["sites"] == ["dr"]
