"""A site's store is the one its copies went to: ``copy`` to a mistyped or deleted site bucket is
refused (exit 2, naming both), never a new bucket filled with every point again (moto S3)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from coldkit import aws  # noqa: F401  (aws: the fixture, used through pytestmark)
from sitekit import SiteKit, cold_points, site_kit

from drsvc.tiering import TierJob

pytestmark = pytest.mark.usefixtures("aws")


@pytest.fixture
def kit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SiteKit]:
    yield from site_kit(tmp_path, monkeypatch)


def test_copy_to_a_mistyped_site_bucket_is_refused_and_creates_nothing(kit: SiteKit, run_cli: Any) -> None:
    cold_points(kit, {"dr": {"after": "1h"}}, n=1)
    config = kit.root / "drsvc.toml"
    assert run_cli("--config", str(config), "copy").code == 0
    cold_points(kit, {"dr": {"after": "1h"}}, n=1)  # another point due at the site
    assert TierJob(kit.fresh_services(), None).run(now=kit.now).exit_code == 0  # (rewrites the config)
    typo = kit.dr_bucket + "x"
    config.write_text(config.read_text().replace(f"s3://{kit.dr_bucket}/site", f"s3://{typo}/site"))
    r = run_cli("--config", str(config), "copy", "--site", "dr")
    assert r.code == 2, r.output
    [line] = r.stderr.splitlines()
    assert f"sites.dr.store is s3://{typo}/site" in line and f"s3://{kit.dr_bucket}/site" in line, line
    assert "drsvc catalog adopt-store --site dr" in line, line
    assert typo not in {b["Name"] for b in boto3.client("s3").list_buckets()["Buckets"]}


def test_copy_to_a_deleted_site_bucket_is_refused(kit: SiteKit, run_cli: Any) -> None:
    cold_points(kit, {"dr": {"after": "1h"}}, n=1)
    config = str(kit.root / "drsvc.toml")
    assert run_cli("--config", config, "copy").code == 0
    s3 = boto3.client("s3")
    for o in s3.list_objects_v2(Bucket=kit.dr_bucket).get("Contents", []):
        s3.delete_object(Bucket=kit.dr_bucket, Key=o["Key"])
    s3.delete_bucket(Bucket=kit.dr_bucket)
    cold_points(kit, {"dr": {"after": "1h"}}, n=1)
    assert TierJob(kit.fresh_services(), None).run(now=kit.now).exit_code == 0
    r = run_cli("--config", config, "copy")
    assert r.code == 2 and "holds no drsvc store" in r.stderr and "adopt-store --site dr" in r.stderr, r.output
    assert kit.dr_bucket not in {b["Name"] for b in s3.list_buckets()["Buckets"]}
    assert run_cli("--config", config, "catalog", "adopt-store", "--site", "dr").code == 0
    assert run_cli("--config", config, "copy").code == 0
