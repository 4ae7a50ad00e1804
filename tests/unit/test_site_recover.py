"""``site recover`` at a site that has only the copies (moto S3; restores themselves run on the lab)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from coldkit import aws  # noqa: F401  (aws: the fixture, used through pytestmark)
from sitekit import SiteKit, cold_points, site_kit

from drsvc.catalog import Catalog
from drsvc.offsite.copy import CopyJob

pytestmark = pytest.mark.usefixtures("aws")


@pytest.fixture
def kit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SiteKit]:
    yield from site_kit(tmp_path, monkeypatch)


def test_site_recover_dry_run_at_a_site_with_only_the_copies(kit: SiteKit, run_cli: Any, tmp_path: Path) -> None:
    _, p2 = cold_points(kit, {"dr": {"after": "1h"}}, priority=3)
    CopyJob(kit.services, None).run(now=kit.now)
    # the DR site: its own config with no hot, no cold, an empty catalog; the key and the policies
    dr = tmp_path / "dr-site"
    (dr / "policies").mkdir(parents=True)
    shutil.copy2(kit.root / "drsvc.key", dr / "drsvc.key")  # the key material, mode and all
    (dr / "policies" / "std.yaml").write_bytes((kit.root / "policies" / "std.yaml").read_bytes())
    (dr / "drsvc.toml").write_text(
        f'[catalog]\npath = "catalog.db"\n[keys]\nfile = "drsvc.key"\n'
        f'[sites.dr]\nstore = "s3://{kit.dr_bucket}/site"\nrestore_pool = "rados://dr-desktops"\n'
    )
    config = str(dr / "drsvc.toml")
    plan = run_cli("--config", config, "--json", "site", "recover", "--from", "dr", "--dry-run")
    assert plan.code == 0, plan.output
    doc = plan.json()
    assert doc["prepare"]["manifests"] == 2 and doc["prepare"]["points_added"] == 2
    [item] = doc["desktops"]  # one desktop, its latest point at the site, from the site's store
    assert item["desktop"] == "alice" and item["point_id"] == p2 and item["priority"] == 3
    assert item["tier"] == "cold" and item["status"] == "planned"
    # a dry run leaves the DR catalog empty
    assert Catalog.open(dr / "catalog.db").points() == []
    bad = run_cli("--config", config, "site", "recover", "--from", "primary")
    assert bad.code == 3 and "no site named 'primary'" in bad.stderr


def _dr_site(kit: SiteKit, tmp_path: Path) -> str:
    """The DR site's own config: no hot, no cold, an empty catalog; the key, the policies, a runtime."""
    dr = tmp_path / "dr-site"
    (dr / "policies").mkdir(parents=True)
    shutil.copy2(kit.root / "drsvc.key", dr / "drsvc.key")
    (dr / "policies" / "std.yaml").write_bytes((kit.root / "policies" / "std.yaml").read_bytes())
    (dr / "drsvc.toml").write_text(
        f'[catalog]\npath = "catalog.db"\n[keys]\nfile = "drsvc.key"\n[runtime]\nurl = "fake://{kit.name}"\n'
        f'[sites.dr]\nstore = "s3://{kit.dr_bucket}/site"\n'
    )
    return str(dr / "drsvc.toml")


def test_restore_from_a_site_brings_one_desktop_back_from_an_older_point(
    kit: SiteKit, run_cli: Any, tmp_path: Path
) -> None:
    # runbook site-lost: a desktop the recovery could not bring back on its latest point comes back
    # alone from an older one, at the DR site, whose config has no cold tier (the kit's checkpoints
    # are not restorable archives: the restore itself is tried on the lab)
    p1, _ = cold_points(kit, {"dr": {"after": "1h"}})
    CopyJob(kit.services, None).run(now=kit.now)
    config = _dr_site(kit, tmp_path)
    recovered = run_cli("--config", config, "--json", "site", "recover", "--from", "dr")
    assert recovered.code == 0, recovered.output
    assert run_cli("--config", config, "restore", "alice", "--point", p1, "--tier", "cold").code == 2
    plan = run_cli("--config", config, "--json", "restore", "alice", "--point", p1, "--site", "dr", "--dry-run")
    assert plan.code == 0, plan.output
    assert plan.json()["point_id"] == p1 and plan.json()["tier"] == "cold"
    unknown = run_cli("--config", config, "restore", "alice", "--site", "primary", "--dry-run")
    assert unknown.code == 3 and "no site named 'primary'" in unknown.stderr, unknown.output
    hot = run_cli("--config", config, "restore", "alice", "--site", "dr", "--tier", "hot", "--dry-run")
    assert hot.code == 2 and "--site" in hot.stderr, hot.output


def test_restore_from_a_site_before_site_recover_reads_the_desktop_from_the_site(
    kit: SiteKit, run_cli: Any, tmp_path: Path
) -> None:
    # runbook site-lost, the most important desktop first: `restore alice --site dr` on the DR
    # host's empty catalog, before any `site recover`, finds alice in the site's manifests (it
    # said "unknown desktop" before)
    p1, p2 = cold_points(kit, {"dr": {"after": "1h"}})
    CopyJob(kit.services, None).run(now=kit.now)
    config = _dr_site(kit, tmp_path)
    plain = run_cli("--config", config, "restore", "alice", "--dry-run")
    assert plain.code == 3 and "`drsvc restore alice --site dr`" in plain.stderr, plain.output
    plan = run_cli("--config", config, "--json", "restore", "alice", "--site", "dr", "--dry-run")
    assert plan.code == 0, plan.output
    assert plan.json()["point_id"] == p2 and plan.json()["tier"] == "cold"
    assert "did not know 'alice'" in plan.stderr or "did not know alice" in plan.stderr, plan.output
    dr_catalog = Path(config).parent / "catalog.db"
    assert Catalog.open(dr_catalog).points() == [], "a dry run records nothing"
    older = run_cli("--config", config, "--json", "restore", "alice", "--point", p1, "--site", "dr", "--dry-run")
    assert older.code == 0 and older.json()["point_id"] == p1, older.output
    nobody = run_cli("--config", config, "restore", "nobody", "--site", "dr", "--dry-run")
    assert nobody.code == 3, nobody.output
    assert "neither the catalog here nor site dr's copies know it" in nobody.stderr, nobody.output
    assert "drsvc site recover --from dr --dry-run" in nobody.stderr, nobody.output
    # for real: the desktop and its points are recorded as `site recover` records them (the
    # kit's checkpoints are no restorable archives: the restore itself runs on the lab)
    run_cli("--config", config, "restore", "alice", "--site", "dr")
    catalog = Catalog.open(dr_catalog)
    assert {p["id"] for p in catalog.points("alice")} == {p1, p2}
    sites = catalog.query("SELECT DISTINCT site FROM point_sites")
    assert [r["site"] for r in sites] == ["dr"]
    catalog.close()


def test_a_recovered_dr_host_with_its_own_cold_tier_verifies_clean(kit: SiteKit, run_cli: Any, tmp_path: Path) -> None:
    # runbook site-lost, Verify: "give the DR config its own [hot]/[cold] stores": the site's copies
    # that `site recover` recorded are the site's (verify --site dr), never the new cold tier's damage
    cold_points(kit, {"dr": {"after": "1h"}})
    CopyJob(kit.services, None).run(now=kit.now)
    config = _dr_site(kit, tmp_path)
    assert run_cli("--config", config, "site", "recover", "--from", "dr").code == 0
    with open(config, "a") as f:
        f.write(f'[cold]\nstore = "file://{tmp_path}/dr-cold"\n')
    verified = run_cli("--config", config, "verify", "--all")
    assert verified.code == 0, verified.output
    assert run_cli("--config", config, "verify", "--all", "--site", "dr").code == 0
    checked = run_cli("--config", config, "catalog", "check", "--no-stores")
    assert checked.code == 0, checked.output
    drift = run_cli("--config", config, "--json", "catalog", "check")
    assert not any("configured cold store" in line for line in drift.stdout.splitlines()), drift.output


def test_a_second_recover_dry_run_lists_the_desktops_already_up_as_skipped(
    kit: SiteKit, run_cli: Any, tmp_path: Path
) -> None:
    # runbook site-lost: "run the same command again to retry: desktops already running at this site
    # are skipped"; its dry run says so rather than planning them again
    cold_points(kit, {"dr": {"after": "1h"}})
    CopyJob(kit.services, None).run(now=kit.now)
    config = _dr_site(kit, tmp_path)
    assert run_cli("--config", config, "site", "recover", "--from", "dr").code == 0
    again = run_cli("--config", config, "--json", "site", "recover", "--from", "dr", "--dry-run")
    assert again.code == 0, again.output
    [item] = again.json()["desktops"]
    assert item["status"] == "skipped" and "already running here" in item["error"], item
    forced = run_cli("--config", config, "--json", "site", "recover", "--from", "dr", "--dry-run", "--force")
    assert [d["status"] for d in forced.json()["desktops"]] == ["planned"], forced.output
