"""RestoreJob's decisions, on a real catalog and stores with the FAKE runtime and volumes.

Which point (latest, --at, --point), which tier (the fastest holding it, or the one asked for),
when a running desktop may be overwritten, how clones are named and labelled, what the probe
decides, and that a failure is recorded. Content is compared with the test's own data.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from deployment import Deployment, digests, volume_for

from drsvc import clock
from drsvc.errors import DrsvcError, InvalidInput, NotFound
from drsvc.restore import RestoreJob

HOUR = timedelta(hours=1)


def three_points(d: Deployment) -> list[str]:
    """alice backed up 3 h, 2 h and 1 h ago, with volumes made from seeds 1, 2, 3."""
    d.desktop("alice", seed=1)
    ids = []
    for n in (1, 2, 3):
        d.world.write_volume("desktops", "alice", volume_for(n, "alice"))
        ids += d.backup_at(clock.now() - (4 - n) * HOUR, "alice")
    return ids


# ---------------------------------------------------------------- the point
def test_point_choice_latest_at_and_point(deploy: Deployment) -> None:
    p1, p2, p3 = three_points(deploy)
    job = RestoreJob(deploy.services())
    assert job.choose_point("alice")["id"] == p3
    assert job.choose_point("alice", at=clock.now() - 90 * timedelta(minutes=1))["id"] == p2
    assert job.choose_point("alice", at=clock.now() - 2 * HOUR - timedelta(minutes=30))["id"] == p1
    with pytest.raises(NotFound, match="at or before"):
        job.choose_point("alice", at=clock.now() - 10 * HOUR)
    assert job.choose_point("alice", point_id=p1)["id"] == p1
    assert job.choose_point("alice", point_id=p2[:24])["id"] == p2  # an unambiguous prefix


def test_point_choice_skips_failed_points_and_names_the_owner(deploy: Deployment) -> None:
    _, p2, p3 = three_points(deploy)
    deploy.desktop("bob", seed=9)
    (b1,) = deploy.backup_at(clock.now(), "bob")
    services = deploy.services()
    services.catalog.update_point(p3, status="failed", reason="test")
    job = RestoreJob(services)
    assert job.choose_point("alice")["id"] == p2, "a failed point is never the one restored"
    with pytest.raises(NotFound, match="failed"):
        job.choose_point("alice", point_id=p3)
    with pytest.raises(InvalidInput, match="belongs to bob, not alice"):
        job.choose_point("alice", point_id=b1)
    with pytest.raises(NotFound):
        job.choose_point("carol")


# ---------------------------------------------------------------- the tier
def test_the_fastest_tier_is_hot_while_its_pool_snapshot_lives_then_cold(deploy: Deployment) -> None:
    deploy.policy(retention={"hot": {"last": 10}})  # no cold rules: the cold tier keeps every point
    p1, _, _ = three_points(deploy)
    assert deploy.cli("tier").code == 0
    services = deploy.services()
    job = RestoreJob(services)
    assert job.plan("alice", point_id=p1).tier == "hot"
    assert job.plan("alice", point_id=p1, tier="cold").tier == "cold"
    snap = services.catalog.query(
        "SELECT s.id, s.pool, s.name FROM pool_snapshots s JOIN points p ON p.pool_snapshot_id = s.id WHERE p.id = ?",
        [p1],
    )[0]
    services.snapshots(snap["pool"]).remove(snap["name"])
    services.catalog.execute(
        "UPDATE pool_snapshots SET removed_at = ? WHERE id = ?", [clock.to_iso(clock.now()), snap["id"]]
    )
    assert job.plan("alice", point_id=p1).tier == "cold", "its pool snapshot is gone: cold is the way back"


def test_a_hot_copy_without_its_pool_snapshot_restores_from_hot_chunks(deploy: Deployment) -> None:
    p1, _, _ = three_points(deploy)  # never tiered: hot is the only copy
    services = deploy.services()
    snap = services.catalog.query(
        "SELECT s.id, s.pool, s.name FROM pool_snapshots s JOIN points p ON p.pool_snapshot_id = s.id WHERE p.id = ?",
        [p1],
    )[0]
    services.snapshots(snap["pool"]).remove(snap["name"])
    services.catalog.execute(
        "UPDATE pool_snapshots SET removed_at = ? WHERE id = ?", [clock.to_iso(clock.now()), snap["id"]]
    )
    job = RestoreJob(services)
    plan = job.plan("alice", point_id=p1)
    assert plan.tier == "hot"
    result = job.run(plan, force=True, verify=True)
    assert result.status == "ok", result.error
    assert digests(deploy.world.read_volume("desktops", "alice")) == digests(volume_for(1, "alice"))


def test_asking_for_a_tier_the_point_lacks_is_not_found(deploy: Deployment) -> None:
    three_points(deploy)
    with pytest.raises(NotFound, match="has no cold copy"):
        RestoreJob(deploy.services()).plan("alice", tier="cold")


# ---------------------------------------------------------------- --force, clones
def test_force_rules(deploy: Deployment) -> None:
    three_points(deploy)
    services = deploy.services()
    job = RestoreJob(services)
    plan = job.plan("alice")
    assert plan.container_state == "running"
    with pytest.raises(InvalidInput, match="refusing to overwrite it without --force"):
        job.run(plan)
    assert services.catalog.query("SELECT count(*) AS n FROM restores")[0]["n"] == 0, "refused, yet recorded"
    assert job.run(plan, force=True).status == "ok"
    # a stopped desktop, or none at all, needs no --force
    deploy.world.save_container({**deploy.world.container("alice"), "state": "exited"})
    assert job.run(job.plan("alice")).status == "ok"
    deploy.world.remove_container("alice")
    plan = job.plan("alice")
    assert plan.container_state is None and job.run(plan).status == "ok"
    assert deploy.world.container("alice")["state"] == "running"


def test_a_clone_gets_its_own_name_namespace_and_labels(deploy: Deployment) -> None:
    three_points(deploy)
    job = RestoreJob(deploy.services())
    plan = job.plan("alice", as_name="alice-restored")
    assert plan.name == "alice-restored" and plan.volume_url == "fakevol://desktops/alice-restored"
    assert job.run(plan).status == "ok"
    clone = deploy.world.container("alice-restored")
    assert clone["labels"] == {
        **clone["labels"],
        "drsvc.desktop": "alice-restored",
        "drsvc.volume": "fakevol://desktops/alice-restored",
        "drsvc.clone-of": "alice",
    }
    assert digests(deploy.world.read_volume("desktops", "alice-restored")) == digests(volume_for(3, "alice"))
    assert deploy.world.container("alice")["restored_at"] is None, "the original was touched"


# ---------------------------------------------------------------- health and probes
@pytest.mark.parametrize(
    ("probe", "knobs", "ok"),
    [
        ({"tcp": 5900, "timeout": "1s"}, {}, True),
        ({"tcp": 5900, "timeout": "1s"}, {"tcp_ports": [22]}, False),
        ({"command": ["true"], "timeout": "1s"}, {}, True),
        ({"command": ["false"], "timeout": "1s"}, {"exec_exit": 1}, False),
        (None, {"tcp_ports": []}, True),  # no probe: running and restored from the checkpoint suffice
    ],
)
def test_probe_outcomes(deploy: Deployment, probe: dict | None, knobs: dict, ok: bool) -> None:
    deploy.policy(probe=probe)
    three_points(deploy)
    deploy.world.set_knobs("alice", **knobs)
    job = RestoreJob(deploy.services())
    if ok:
        result = job.run(job.plan("alice"), force=True)
        assert result.status == "ok" and result.checks["restored_from_checkpoint"] is True
        assert ("probe" in result.checks) == (probe is not None)
    else:
        with pytest.raises(DrsvcError, match="health probe failed for alice"):
            job.run(job.plan("alice"), force=True)


def test_a_failed_restore_is_recorded_with_its_error(deploy: Deployment) -> None:
    three_points(deploy)
    deploy.world.set_knobs("alice", restore_error="no space left")
    services = deploy.services()
    job = RestoreJob(services)
    with pytest.raises(DrsvcError, match="no space left"):
        job.run(job.plan("alice"), force=True)
    (row,) = services.catalog.query("SELECT status, error, rto_seconds FROM restores")
    assert row["status"] == "failed" and "no space left" in row["error"] and row["rto_seconds"] is not None


def test_a_missed_target_is_objective_missed_not_ok(deploy: Deployment) -> None:
    deploy.policy(objectives={"rpo": "1h", "rto": "1s"})
    three_points(deploy)
    deploy.world.set_knobs("alice", restore_seconds=1.1)
    job = RestoreJob(deploy.services())
    result = job.run(job.plan("alice"), force=True)
    assert (result.status, result.exit_code) == ("objective_missed", 5)
    assert result.rto_seconds > result.plan.target_seconds == 1.0
