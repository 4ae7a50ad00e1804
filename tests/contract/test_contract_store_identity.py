"""A tier's store is the one its copies went to (drsvc.store_identity): a mistyped, missing or
replaced store is refused with exit 2 naming both stores and the next step, and nothing is
created there; a brand-new deployment still creates its stores; ``catalog adopt-store`` takes a
new, empty store on purpose (runbook ceph-pool-lost).
"""

from __future__ import annotations

import json
import shutil
from datetime import timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from coldkit import aws  # noqa: F401  (the fixture, used by name)
from contractlib import assert_exit, contract
from deployment import Deployment

from drsvc import clock


def _tiered(d: Deployment) -> str:
    """alice backed up two hours ago and tiered: the catalog records a cold copy; its point id."""
    d.desktop("alice", seed=1)
    [pid] = d.backup_at(clock.now() - timedelta(hours=2), "alice")
    assert_exit(d.cli("tier"), 0)
    return pid


def _due(d: Deployment, name: str = "bob", seed: int = 2) -> None:
    """Another point due for tiering (so ``tier`` opens the cold store)."""
    d.desktop(name, seed=seed)
    d.backup_at(clock.now() - timedelta(hours=2), name)


def _set_store(d: Deployment, old: str, new: str) -> None:
    d.config_path.write_text(d.config_path.read_text().replace(f'store = "{old}"', f'store = "{new}"'))


def _one_error_line(r: Any) -> str:
    [line] = [ln for ln in r.stderr.splitlines() if ln.startswith("drsvc: error:")]
    return line


@contract("tier", 2)
def test_a_mistyped_cold_store_is_refused_and_never_created(deploy: Deployment) -> None:
    _tiered(deploy)
    good, typo = f"file://{deploy.root}/cold", f"file://{deploy.root}/cld"
    _set_store(deploy, good, typo)
    _due(deploy)
    for args in (("tier",), ("prune",), ("catalog", "rebuild")):
        r = deploy.cli(*args)
        assert_exit(r, 2, f"cold.store is {typo}", f"copies are in {good} (1)", "drsvc catalog adopt-store cold")
    # readers of every tier check the others and name this one as not checked
    assert_exit(deploy.cli("verify", "--all"), 6, "cold copies could not be checked", f"copies are in {good}")
    assert_exit(deploy.cli("catalog", "check"), 4, f"cold.store is {typo}", "adopt-store cold", report=True)
    assert not (deploy.root / "cld").exists(), "nothing was created at the mistyped store"
    _set_store(deploy, typo, good)
    assert_exit(deploy.cli("verify", "--all"), 0)


def test_a_brand_new_deployment_creates_its_stores(deploy: Deployment) -> None:
    _tiered(deploy)
    identity = json.loads((deploy.root / "cold" / "identity").read_bytes())
    assert identity["format"] == "drsvc-store-identity" and identity["id"]
    assert (deploy.root / "hot" / "identity").exists()


def test_a_store_whose_copies_are_gone_is_refused_not_recreated(deploy: Deployment) -> None:
    _tiered(deploy)
    shutil.move(deploy.root / "cold", deploy.root / "cold-away")  # the bucket deleted, or emptied
    _due(deploy)
    r = deploy.cli("tier")
    assert_exit(r, 2, "holds no drsvc store", "the catalog records cold copies there", "adopt-store cold")
    assert not (deploy.root / "cold").exists()


def test_another_store_behind_the_same_name_is_refused(deploy: Deployment) -> None:
    _tiered(deploy)
    (deploy.root / "cold" / "identity").write_text(json.dumps({"format": "drsvc-store-identity", "id": "other"}))
    _due(deploy)
    assert_exit(deploy.cli("tier"), 2, "is not the one the catalog's copies went to", "identity other")
    assert_exit(deploy.cli("verify", "--all"), 6, "is not the one the catalog's copies went to", "identity other")


@contract("catalog", 2)
def test_adopt_store_takes_a_new_empty_store_on_purpose(deploy: Deployment) -> None:
    pid = _tiered(deploy)
    good, new = f"file://{deploy.root}/cold", f"file://{deploy.root}/cold-2027"
    _set_store(deploy, good, new)
    _due(deploy)
    assert_exit(deploy.cli("tier"), 2, "adopt-store cold")
    assert_exit(deploy.cli("catalog", "adopt-store"), 2, "name a TIER")
    assert_exit(deploy.cli("catalog", "adopt-store", "cold", "--site", "dr"), 2)
    adopted = deploy.cli("catalog", "adopt-store", "cold")
    assert_exit(adopted, 0, new)
    assert_exit(deploy.cli("tier"), 0)
    assert (deploy.root / "cold-2027" / "identity").exists()
    # the old copy stays recorded where it went: verify names that store (nothing is forgotten)
    r = deploy.cli("--json", "verify", "--all")
    assert r.code == 4 and pid in r.stdout and good in r.stdout, r.output
    assert_exit(deploy.cli("verify", "--all"), 4, report=True)


def test_a_lost_hot_pool_recreated_empty_is_adopted(deploy: Deployment) -> None:
    # runbook ceph-pool-lost, "Hot store only": the pool recreated with the same name is empty
    deploy.desktop("alice", seed=1)
    assert_exit(deploy.cli("backup", "alice"), 0)
    shutil.rmtree(deploy.root / "hot")
    assert_exit(deploy.cli("backup", "alice"), 2, "hot.store is", "holds no drsvc store", "adopt-store hot")
    assert_exit(deploy.cli("catalog", "adopt-store", "hot"), 0)
    assert_exit(deploy.cli("backup", "alice"), 0)
    assert_exit(deploy.cli("backup", "alice"), 0)


@contract("catalog", 3)
def test_adopt_store_of_an_unknown_site_is_not_found(deploy: Deployment) -> None:
    assert_exit(deploy.cli("catalog", "adopt-store", "--site", "nope"), 3, "nope")


@pytest.mark.usefixtures("aws")
def test_a_mistyped_bucket_is_never_created_in_s3(deploy: Deployment) -> None:
    boto3.client("s3").create_bucket(Bucket="drsvc-cold")
    _set_store(deploy, f"file://{deploy.root}/cold", "s3://drsvc-cold/fleet")
    _tiered(deploy)
    _set_store(deploy, "s3://drsvc-cold/fleet", "s3://drsvc-cld/fleet")
    _due(deploy)
    r = deploy.cli("--log-format", "json", "tier")
    assert r.code == 2, r.output
    [error] = [json.loads(line) for line in r.stderr.splitlines()]
    assert "s3://drsvc-cld/fleet" in error["message"] and "s3://drsvc-cold/fleet" in error["message"]
    assert "adopt-store cold" in error["hint"], error
    assert [b["Name"] for b in boto3.client("s3").list_buckets()["Buckets"]] == ["drsvc-cold"]


@pytest.mark.usefixtures("aws")
def test_a_deleted_bucket_is_not_recreated(deploy: Deployment) -> None:
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="drsvc-cold")
    _set_store(deploy, f"file://{deploy.root}/cold", "s3://drsvc-cold/fleet")
    _tiered(deploy)
    for o in s3.list_objects_v2(Bucket="drsvc-cold").get("Contents", []):
        s3.delete_object(Bucket="drsvc-cold", Key=o["Key"])
    s3.delete_bucket(Bucket="drsvc-cold")
    _due(deploy)
    assert_exit(deploy.cli("tier"), 2, "s3 bucket drsvc-cold does not exist", "adopt-store cold")
    assert s3.list_buckets()["Buckets"] == []


def test_identity_is_under_the_store_root(tmp_path: Path) -> None:
    from drsvc.storage.file import FileStore
    from drsvc.store_identity import read_identity, write_identity

    store = FileStore(tmp_path / "s")
    assert read_identity(store) is None
    made = write_identity(store)
    assert read_identity(store) == made
    store.put("identity", b"not json")
    assert read_identity(store) == "unreadable"
