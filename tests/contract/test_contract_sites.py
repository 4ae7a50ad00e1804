"""drsvc copy | site list: exit 0, 3 (other sites' S3 stores, moto here).

The copies are checked against the cold store's own objects read with boto3 by the test: a site
holds them byte for byte (never decrypted), whatever drsvc reports.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from coldkit import aws  # noqa: F401  (aws: the fixture, used through pytestmark)
from contractlib import assert_exit, contract
from sitekit import SiteKit, cold_points, site_kit

pytestmark = pytest.mark.usefixtures("aws")


@pytest.fixture
def kit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SiteKit]:
    yield from site_kit(tmp_path, monkeypatch)


@contract("copy", 0)
def test_copy_puts_due_points_at_the_site_byte_for_byte(kit: SiteKit, run_cli: Any) -> None:
    [point] = cold_points(kit, {"dr": {"after": "1h"}}, n=1)
    config = str(kit.root / "drsvc.toml")
    dry = run_cli("--config", config, "copy", "--dry-run")
    assert_exit(dry, 0, point)
    [listed] = run_cli("--config", config, "--json", "points", "list").json()
    assert listed["sites"] == [], "a dry run copied nothing"
    assert_exit(run_cli("--config", config, "copy"), 0)
    cold = kit.site_keys(kit.bucket, "fleet/")
    site = kit.site_keys(kit.dr_bucket, "site/")
    manifests = [k for k in site if k.startswith("manifests/")]
    assert manifests and all(point in k for k in manifests), sorted(site)
    both = set(site) & set(cold)
    assert any(k.startswith("packs/") for k in both), sorted(site)
    assert {k: site[k] for k in both} == {k: cold[k] for k in both}
    assert {k for k in site if not k.startswith("keys/")} <= set(cold), "the site holds what the cold tier holds"
    [listed] = run_cli("--config", config, "--json", "points", "list").json()
    assert listed["sites"] == ["dr"]


@contract("copy", 3)
def test_copy_to_a_site_the_config_lacks_is_not_found(kit: SiteKit, run_cli: Any) -> None:
    cold_points(kit, {"dr": {"after": "1h"}}, n=1)
    assert_exit(run_cli("--config", str(kit.root / "drsvc.toml"), "copy", "--site", "nope"), 3, "no site named 'nope'")


@contract("site", 0)
def test_site_list_names_each_site_and_the_points_it_holds(kit: SiteKit, run_cli: Any) -> None:
    cold_points(kit, {"dr": {"after": "1h"}}, n=2)
    config = str(kit.root / "drsvc.toml")
    assert_exit(run_cli("--config", config, "copy"), 0)
    r = run_cli("--config", config, "site", "list")
    assert_exit(r, 0, "dr", "far")
    listed = run_cli("--config", config, "--json", "site", "list")
    assert_exit(listed, 0)
    assert "dr" in listed.stdout and "far" in listed.stdout
