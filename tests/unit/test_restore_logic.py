"""RestoreJob's decisions, on a real catalog and stores with the FAKE runtime and volumes.

Which point (latest, --at, --point), which tier (the fastest holding it, or the one asked for),
when a running desktop may be overwritten, how clones are named and labelled, what the probe
decides, and that a failure is recorded. Content is compared with the test's own data.
"""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from deployment import Deployment, digests, volume_for

from drsvc import clock
from drsvc.errors import DrsvcError, IntegrityError, InvalidInput, NotFound
from drsvc.restore import RestoreJob
from drsvc.runtimes.base import LABEL_RESTORE
from drsvc.volumes.base import WRITER_XATTR

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
    # where the volume phase went, written from chunks: waiting for verified chunks, then writing
    detail = result.checks["volume_detail"]
    assert set(detail) == {"chunks_wait_s", "writes_s"} and all(v >= 0 for v in detail.values()), detail


def test_asking_for_a_tier_the_point_lacks_is_not_found(deploy: Deployment) -> None:
    three_points(deploy)
    with pytest.raises(NotFound, match="no restorable recovery point of alice with a cold copy"):
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


# ---------------------------------------------------------------- a failed clone's teardown
def _teardown_lines(services: object) -> tuple[RestoreJob, list[str]]:
    lines: list[str] = []
    job = RestoreJob(services, on_event=lambda kind, **f: lines.append(f["message"]) if kind == "teardown" else None)
    return job, lines


def test_a_failed_clone_removes_only_what_it_wrote_not_what_another_writer_put_there(deploy: Deployment) -> None:
    """A writer that starts after the plan found the namespace empty: its objects survive the teardown,
    the one it wrote under a name the restore also writes included, and the output says what stayed."""
    three_points(deploy)
    job, lines = _teardown_lines(deploy.services())
    plan = job.plan("alice", as_name="alice-x")
    assert plan.target.empty
    theirs = {"home/alice/file-03.bin": b"not drsvc's", "notes/operator.txt": b"mine"}
    deploy.world.write_volume("desktops", "alice-x", theirs)  # after the emptiness check
    with pytest.raises(DrsvcError, match="the object exists"):
        job.run(plan)
    left = deploy.world.read_volume("desktops", "alice-x")
    assert {name: data for name, (data, _, _) in left.items()} == theirs, "the teardown removed another writer's data"
    assert len(lines) == 1 and "2 object(s) this restore wrote removed" in lines[0]
    assert "2 object(s) in fakevol://desktops/alice-x this restore did not write" in lines[0]


def test_a_failed_clone_after_its_volume_removes_its_objects_and_leaves_a_strangers(deploy: Deployment) -> None:
    three_points(deploy)
    job, lines = _teardown_lines(deploy.services())
    plan = job.plan("alice", as_name="alice-x")
    deploy.world.write_volume("desktops", "alice-x", {"notes/operator.txt": b"mine"})
    deploy.world.set_knobs("alice", restore_error="no space left")
    with pytest.raises(DrsvcError, match="no space left"):
        job.run(plan)
    assert list(deploy.world.read_volume("desktops", "alice-x")) == ["notes/operator.txt"]
    assert "6 object(s) this restore wrote removed" in lines[0] and "1 object(s)" in lines[0]


def test_a_losing_racer_of_the_same_clone_name_leaves_the_winners_clone(deploy: Deployment) -> None:
    """Two `restore --as` of one name, both planned on the empty namespace: the one that loses at its
    first object must not take the winner's container and namespace down with it."""
    three_points(deploy)
    services = deploy.services()
    loser, lines = _teardown_lines(services)
    late = loser.plan("alice", as_name="alice-x")
    winner = RestoreJob(services)
    assert winner.run(winner.plan("alice", as_name="alice-x")).status == "ok"
    with pytest.raises(DrsvcError, match="the object exists"):
        loser.run(late)
    assert deploy.world.container("alice-x")["state"] == "running", "the winner's clone container was removed"
    assert digests(deploy.world.read_volume("desktops", "alice-x")) == digests(volume_for(3, "alice"))
    assert "0 object(s) this restore wrote removed" in lines[0] and "container alice-x" in lines[0]
    # the winner's intents are its own: still kept, not resolved by the loser's teardown
    states = {r["state"] for r in services.catalog.query("SELECT state FROM intents WHERE kind LIKE 'clone-%'")}
    assert states == {"kept", "undone"}


def test_a_clone_carries_its_writer_mark_only_while_written_and_its_container_the_label(deploy: Deployment) -> None:
    """The objects of a clone are created marked (what cleanup after a kill removes); the intent says
    `written` before the marks come off, so the kept clone holds the point's content, nothing more."""
    three_points(deploy)
    services = deploy.services()
    job = RestoreJob(services)
    plan = job.plan("alice", as_name="alice-x")
    assert job.run(plan, verify=True).status == "ok"  # verify: the digests (xattrs included) match
    left = deploy.world.read_volume("desktops", "alice-x")
    assert left and all(WRITER_XATTR not in xattrs for _, xattrs, _ in left.values())
    [volume] = services.catalog.query("SELECT detail FROM intents WHERE kind = 'clone-volume'")
    detail = json.loads(volume["detail"])
    assert detail["written"] is True and detail["mark"]
    labels = deploy.world.container("alice-x")["labels"]
    assert labels[LABEL_RESTORE] == detail["mark"], labels


def test_the_marks_come_off_beside_the_container_phase_and_a_mark_left_fails_the_restore(
    deploy: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without --verify the marks come off while the container is restored: gone when the restore
    returns; a removal that fails fails the restore, and its clone is torn down (never kept marked)."""
    from fakes.desktops import FakeVolume

    three_points(deploy)
    services = deploy.services()
    job = RestoreJob(services)
    phases: list[str] = []
    unmark = FakeVolume.unmark

    def slow_unmark(self: FakeVolume, names: object) -> int:
        phases.append("unmark")
        return unmark(self, names)  # type: ignore[arg-type]

    monkeypatch.setattr(FakeVolume, "unmark", slow_unmark)
    result = job.run(job.plan("alice", as_name="alice-x"))
    assert result.status == "ok" and result.checks["volume_detail"]["unmark_s"] >= 0
    left = deploy.world.read_volume("desktops", "alice-x")
    assert left and all(WRITER_XATTR not in xattrs for _, xattrs, _ in left.values())
    assert phases == ["unmark"]

    def failing_unmark(self: FakeVolume, names: object) -> int:
        raise DrsvcError("unmark rados://desktops/alice-y: timed out")

    monkeypatch.setattr(FakeVolume, "unmark", failing_unmark)
    with pytest.raises(DrsvcError, match=r"unmark .*timed out"):
        job.run(job.plan("alice", as_name="alice-y"))
    assert not deploy.world.read_volume("desktops", "alice-y")  # torn down: no marked object stays
    with pytest.raises(NotFound):
        deploy.world.container("alice-y")


def test_a_manifest_naming_a_base_image_by_anything_but_its_full_id_is_refused(deploy: Deployment) -> None:
    """The id is asked of the runtime, loaded, recorded and later forgotten: never a name or a path."""
    three_points(deploy)
    services = deploy.services()
    job = RestoreJob(services)
    plan = job.plan("alice", as_name="alice-x")
    plan.manifest["image"]["image_id"] = "../containers/bob"  # as a hostile store could serve it
    with pytest.raises(IntegrityError, match="not a full image id"):
        job.run(plan)
    assert not services.catalog.query("SELECT id FROM intents WHERE kind = 'loaded-image'")
