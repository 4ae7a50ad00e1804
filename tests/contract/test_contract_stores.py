"""drsvc tier | verify | prune: exit 0, 1, 2, 3, 4, 6 (the hot and cold chunk stores)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from contractlib import assert_exit, contract
from deployment import Deployment, digests, volume_for

from drsvc import clock
from drsvc.errors import BackendUnavailable
from drsvc.storage.file import FileStore


def _aged(d: Deployment, *names: str) -> dict[str, str]:
    """Points of ``names`` taken two hours ago (past the policy's tiering.after of 1h): name -> id."""
    for i, name in enumerate(names):
        d.desktop(name, seed=i + 1)
    ids = d.backup_at(clock.now() - timedelta(hours=2), *names)
    return dict(zip(names, ids, strict=True))


def _tiers(d: Deployment) -> dict[str, list[str]]:
    return {p["desktop"]: sorted(p["tiers"]) for p in d.cli("--json", "points", "list").json()}


# ---------------------------------------------------------------- tier
@contract("tier", 0)
def test_tier_copies_due_points_to_the_cold_tier(deploy: Deployment) -> None:
    _aged(deploy, "alice", "bob")
    deploy.desktop("carol", seed=9)
    assert_exit(deploy.cli("backup", "carol"), 0)  # taken now: not due yet
    r = deploy.cli("tier", "--dry-run")
    assert_exit(r, 0, "alice", "bob")
    assert "carol" not in r.stdout
    assert _tiers(deploy) == {"alice": ["hot"], "bob": ["hot"], "carol": ["hot"]}, "a dry run changed nothing"
    assert_exit(deploy.cli("tier"), 0)
    assert _tiers(deploy) == {"alice": ["cold", "hot"], "bob": ["cold", "hot"], "carol": ["hot"]}
    assert_exit(deploy.cli("tier"), 0, "nothing to tier")


@contract("tier", 6)
def test_tier_with_one_damaged_point_among_several_is_partial(deploy: Deployment) -> None:
    ids = _aged(deploy, "alice", "bob")
    deploy.damage_hot_chunk("alice", ids["alice"])
    r = deploy.cli("tier")
    assert_exit(r, 6, ids["alice"])
    assert _tiers(deploy) == {"alice": ["hot"], "bob": ["cold", "hot"]}, "the damage must not spread to the cold tier"


@contract("tier", 1)
def test_tier_with_every_point_failing_is_a_failure(deploy: Deployment) -> None:
    ids = _aged(deploy, "alice")
    deploy.damage_hot_chunk("alice", ids["alice"])
    assert_exit(deploy.cli("tier"), 1, ids["alice"], report=True)
    assert _tiers(deploy) == {"alice": ["hot"]}


@contract("tier", 2)
def test_tier_without_a_cold_tier_is_a_config_error(deploy: Deployment) -> None:
    deploy.write_config(cold=False)
    _aged(deploy, "alice")
    assert_exit(deploy.cli("tier"), 2, "no cold tier configured")


# ---------------------------------------------------------------- verify
@contract("verify", 0)
def test_verify_all_ok(fleet: Deployment) -> None:
    assert_exit(fleet.cli("verify", "--all", "--read-data"), 0)


@contract("verify", 4)
def test_verify_names_the_damaged_point(deploy: Deployment) -> None:
    ids = _aged(deploy, "alice", "bob")
    deploy.damage_hot_chunk("alice", ids["alice"])
    r = deploy.cli("verify", "--all", "--read-data")
    assert_exit(r, 4, f"damaged point(s): {ids['alice']}")
    assert ids["bob"] not in r.stderr.splitlines()[-1]
    assert_exit(deploy.cli("verify", ids["bob"], "--read-data"), 0)


@contract("verify", 4)
def test_verify_without_read_data_finds_a_missing_chunk(deploy: Deployment) -> None:
    from drsvc.chunks import chunk_key

    ids = _aged(deploy, "alice")
    cid = deploy.damage_hot_chunk("alice", ids["alice"])
    (deploy.root / "hot" / chunk_key(cid)).unlink()
    assert_exit(deploy.cli("verify", "--all"), 4, ids["alice"])


@contract("verify", 2)
def test_verify_needs_a_point_or_all(fleet: Deployment) -> None:
    assert_exit(fleet.cli("verify"), 2, "name a point ID or give --all")
    assert_exit(fleet.cli("verify", "x", "--all"), 2, "name a point ID or give --all")


@contract("verify", 3)
def test_verify_of_an_unknown_point(fleet: Deployment) -> None:
    assert_exit(fleet.cli("verify", "20010101T000000Z-nobody"), 3, "20010101T000000Z-nobody")


# ---------------------------------------------------------------- prune
@contract("prune", 0)
def test_prune_keeps_what_retention_keeps(deploy: Deployment) -> None:
    deploy.policy(retention={"hot": {"last": 2}}, tiering=None)  # no cold tier waiting for them
    deploy.desktop("alice")
    start = clock.now() - timedelta(hours=5)
    ids = [deploy.backup_at(start + timedelta(hours=h), "alice")[0] for h in range(4)]
    r = deploy.cli("prune", "--dry-run")
    assert_exit(r, 0)
    listed = deploy.cli("--json", "points", "list", "alice").json()
    assert sorted(p["id"] for p in listed if p["status"] == "complete") == sorted(ids), "a dry run dropped nothing"
    assert_exit(deploy.cli("prune"), 0)
    listed = deploy.cli("--json", "points", "list", "alice").json()
    kept = sorted(p["id"] for p in listed if p["tiers"])
    assert kept == sorted(ids[-2:])
    # what is left restores, with the test's own data
    assert_exit(deploy.cli("restore", "alice", "--force", "--verify"), 0)


@contract("prune", 0)
def test_prune_keeps_hot_copies_cold_retention_still_waits_for(deploy: Deployment) -> None:
    # hot keeps the newest point only; cold keeps one a day: the older points' hot copies are
    # all there is of them until `tier` copies them, so prune must leave them alone until then
    deploy.policy(retention={"hot": {"last": 1}, "cold": {"daily": 30}})
    deploy.desktop("alice")
    ids = []
    for day in (3, 2, 1):
        deploy.world.write_volume("desktops", "alice", volume_for(10 + day, "alice"))
        ids += deploy.backup_at(clock.now() - timedelta(days=day), "alice")
    assert_exit(deploy.cli("prune"), 0)
    assert _point_tiers(deploy) == {i: ["hot"] for i in ids}, "prune dropped points cold retention keeps"
    assert_exit(deploy.cli("tier"), 0)
    assert_exit(deploy.cli("prune"), 0)
    assert _point_tiers(deploy) == {ids[0]: ["cold"], ids[1]: ["cold"], ids[2]: ["cold", "hot"]}
    # the oldest point comes back from the cold tier with what the test wrote then
    assert_exit(deploy.cli("restore", "alice", "--point", ids[0], "--force", "--verify"), 0)
    assert digests(deploy.world.read_volume("desktops", "alice")) == digests(volume_for(13, "alice"))


def _point_tiers(d: Deployment) -> dict[str, list[str]]:
    return {p["id"]: sorted(p["tiers"]) for p in d.cli("--json", "points", "list").json() if p["tiers"]}


@contract("prune", 6)
def test_prune_goes_on_past_a_pool_snapshot_it_cannot_remove(
    deploy: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fakes.desktops import FakePoolSnapshots

    deploy.policy(retention={"hot": {"last": 1}}, tiering=None)
    deploy.desktop("alice")
    start = clock.now() - timedelta(hours=4)
    for h in range(3):
        deploy.backup_at(start + timedelta(hours=h), "alice")
    rows = deploy.services().catalog.query("SELECT name FROM pool_snapshots ORDER BY id")
    bad, good = rows[0]["name"], rows[1]["name"]
    real = FakePoolSnapshots.remove

    def remove(self: FakePoolSnapshots, name: str) -> None:
        if name == bad:
            raise BackendUnavailable("ceph", f"removing pool snapshot {name}", "timed out")
        real(self, name)

    monkeypatch.setattr(FakePoolSnapshots, "remove", remove)
    r = deploy.cli("prune")
    assert_exit(r, 6, bad, "the next prune retries")
    assert good in r.stdout, "the snapshot after the failing one is removed"
    monkeypatch.undo()
    assert_exit(deploy.cli("prune"), 0)  # its cleanup step (or prune itself) retries the snapshot
    live = deploy.services().catalog.query("SELECT name FROM pool_snapshots WHERE removed_at IS NULL")
    assert bad not in {row["name"] for row in live}


@contract("prune", 2)
def test_prune_with_an_invalid_policy_prunes_nothing(fleet: Deployment) -> None:
    (fleet.root / "policies" / "broken.yaml").write_text("name: broken\n")
    assert_exit(fleet.cli("prune"), 2, "problems in policy files")


@contract("verify", 6)
def test_verify_goes_on_past_a_tier_it_cannot_reach(deploy: Deployment, monkeypatch: pytest.MonkeyPatch) -> None:
    ids = _aged(deploy, "alice")
    assert_exit(deploy.cli("tier"), 0)
    cold = f"file://{deploy.root}/cold"

    def down(real):  # type: ignore[no-untyped-def]
        def call(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            if self.url == cold:
                raise BackendUnavailable(f"file store {cold}", "read", "connection refused", runbook="s3-unavailable")
            return real(self, *args, **kwargs)

        return call

    for name in ("get", "list", "get_range", "get_many", "exists", "size"):
        monkeypatch.setattr(FileStore, name, down(getattr(FileStore, name)))
    r = deploy.cli("--json", "verify", "--all")
    assert_exit(r, 6, "cold copies could not be checked")
    assert r.json()["unchecked"][0]["points"] == [ids["alice"]]
    # the text counts the copies it did check (the hot one), not those minus the unchecked again
    assert_exit(deploy.cli("verify", "--all"), 6, "OK  the 1 copies that could be checked")


@contract("verify", 4)
def test_verify_names_the_store_a_copy_was_recorded_in_when_the_config_names_another(deploy: Deployment) -> None:
    ids = _aged(deploy, "alice")
    assert_exit(deploy.cli("tier"), 0)
    # another [cold] store: refused (exit 2, test_contract_store_identity) until adopted on purpose;
    # then a new, empty store there, every earlier cold copy missing from it
    text = deploy.config_path.read_text().replace(f"{deploy.root}/cold", f"{deploy.root}/cold-typo")
    deploy.config_path.write_text(text)
    assert_exit(deploy.cli("verify", "--all"), 6, "adopt-store cold")
    assert_exit(deploy.cli("catalog", "adopt-store", "cold"), 0)
    r = deploy.cli("--json", "verify", "--all")
    assert_exit(r, 4, ids["alice"])
    [problem] = r.json()["problems"]
    assert problem["store_url"] == f"file://{deploy.root}/cold-typo"
    hint = f"the catalog records this copy in file://{deploy.root}/cold: is the config's [cold] right?"
    assert hint in problem["detail"], problem
