"""drsvc restore DESKTOP [--at T | --point ID] [--as NAME] [--tier hot|cold] [--dry-run] [--force]
[--verify]: exit 0, 1, 2, 3, 4, 5.

Content is checked against what the test itself wrote (``volume_for`` seeds, ``digests``), never
against drsvc's digests; the container's memory against what the test set before the backup.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from contractlib import assert_exit, contract
from deployment import Deployment, digests, volume_for

from drsvc import clock
from drsvc.runtimes.base import LABEL_DESKTOP


def _live(d: Deployment, name: str) -> dict[str, str]:
    return digests(d.world.read_volume("desktops", name))


@contract("restore", 0)
def test_restore_in_place_brings_back_volume_and_memory(fleet: Deployment) -> None:
    written = volume_for(1, "alice")
    fleet.world.write_volume("desktops", "alice", {"junk": b"ransomware was here"})
    fleet.world.set_memory("alice", counter=999)
    r = fleet.cli("restore", "alice", "--force")
    assert_exit(r, 0, "within the 30 s target", "rolled back to pool snapshot")
    assert _live(fleet, "alice") == digests(written)
    assert fleet.world.container("alice")["memory"] == {"counter": 0}
    assert fleet.world.container("alice")["restored_at"] is not None


@contract("restore", 0)
def test_restore_dry_run_plans_and_touches_nothing(fleet: Deployment) -> None:
    fleet.world.write_volume("desktops", "alice", {"junk": b"x"})
    before = fleet.world.container("alice")
    r = fleet.cli("restore", "alice", "--dry-run")
    assert_exit(r, 0, "restore alice from point", "on the hot tier", "predicted RTO", "existing container: running")
    assert fleet.world.read_volume("desktops", "alice") == {"junk": (b"x", {}, {})}
    assert fleet.world.container("alice") == before


@contract("restore", 0)
def test_restore_at_picks_the_latest_point_at_or_before_that_time(deploy: Deployment) -> None:
    deploy.desktop("alice", seed=1)
    t0 = clock.now() - timedelta(hours=3)
    (old,) = deploy.backup_at(t0, "alice")
    deploy.world.write_volume("desktops", "alice", volume_for(2, "alice"))
    (new,) = deploy.backup_at(t0 + timedelta(hours=2), "alice")
    at = (t0 + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%MZ")
    r = deploy.cli("--json", "restore", "alice", "--at", at, "--force")
    assert_exit(r, 0)
    assert r.json()["point_id"] == old
    assert _live(deploy, "alice") == digests(volume_for(1, "alice"))
    # and without --at the newest
    r = deploy.cli("--json", "restore", "alice", "--force")
    assert r.json()["point_id"] == new
    assert _live(deploy, "alice") == digests(volume_for(2, "alice"))


@contract("restore", 0)
def test_restore_point_restores_exactly_that_point(deploy: Deployment) -> None:
    deploy.desktop("alice", seed=1)
    t0 = clock.now() - timedelta(hours=3)
    (old,) = deploy.backup_at(t0, "alice")
    deploy.world.write_volume("desktops", "alice", volume_for(2, "alice"))
    deploy.backup_at(t0 + timedelta(hours=1), "alice")
    r = deploy.cli("--json", "restore", "alice", "--point", old[:20], "--force")
    assert_exit(r, 0)
    assert r.json()["point_id"] == old
    assert _live(deploy, "alice") == digests(volume_for(1, "alice"))


@contract("restore", 0)
def test_restore_as_a_clone_leaves_the_desktop_alone(fleet: Deployment) -> None:
    fleet.world.write_volume("desktops", "alice", {"today": b"new work"})
    r = fleet.cli("restore", "alice", "--as", "alice-copy")
    assert_exit(r, 0, "copied from pool snapshot")
    assert "{'" not in r.stdout, "a check printed as a Python dict\n" + r.stdout
    assert fleet.world.read_volume("desktops", "alice") == {"today": (b"new work", {}, {})}
    assert _live(fleet, "alice-copy") == digests(volume_for(1, "alice"))
    clone = fleet.world.container("alice-copy")
    assert clone["labels"]["drsvc.clone-of"] == "alice" and clone["labels"]["drsvc.desktop"] == "alice-copy"


@contract("restore", 0)
def test_restore_uses_the_fastest_tier_or_the_one_asked_for(deploy: Deployment) -> None:
    deploy.desktop("alice", seed=5)
    deploy.backup_at(clock.now() - timedelta(hours=2), "alice")
    assert_exit(deploy.cli("tier"), 0)
    r = deploy.cli("--json", "restore", "alice", "--force", "--verify")
    assert_exit(r, 0)
    assert r.json()["tier"] == "hot", "hot (its pool snapshot exists) is the fastest tier"
    r = deploy.cli("--json", "restore", "alice", "--force", "--verify", "--tier", "cold")
    assert_exit(r, 0)
    assert r.json()["tier"] == "cold"
    assert "cold store" in r.json()["checks"]["volume"]
    assert _live(deploy, "alice") == digests(volume_for(5, "alice"))


@contract("restore", 5)
def test_restore_that_misses_its_rto_target_exits_5(fleet: Deployment) -> None:
    fleet.policy(objectives={"rpo": "1h", "rto": "1s"})
    fleet.world.set_knobs("alice", restore_seconds=1.2)  # a restore this deployment cannot do in 1 s
    r = fleet.cli("restore", "alice", "--force")
    assert_exit(r, 5, "MISSED the 1 s target")
    assert _live(fleet, "alice") == digests(volume_for(1, "alice")), "missed the target, but restored"


@contract("restore", 2)
def test_restore_refuses_a_running_desktop_without_force(fleet: Deployment) -> None:
    fleet.world.write_volume("desktops", "alice", {"today": b"unsaved work"})
    r = fleet.cli("restore", "alice")
    assert_exit(r, 2, "desktop alice is running; refusing to overwrite it without --force")
    assert fleet.world.read_volume("desktops", "alice") == {"today": (b"unsaved work", {}, {})}


@contract("restore", 0)
def test_restore_of_a_stopped_desktop_needs_no_force(fleet: Deployment) -> None:
    record = fleet.world.container("alice")
    fleet.world.save_container({**record, "state": "exited"})
    assert_exit(fleet.cli("restore", "alice"), 0)


@contract("restore", 2)
def test_restore_refuses_a_running_clone_name_without_force(fleet: Deployment) -> None:
    assert_exit(fleet.cli("restore", "alice", "--as", "alice-copy"), 0)
    r = fleet.cli("restore", "alice", "--as", "alice-copy")
    assert_exit(r, 2, "--as alice-copy: a container of that name is running")


@contract("restore", 2)
def test_restore_option_errors(fleet: Deployment) -> None:
    assert_exit(fleet.cli("restore", "alice", "--at", "2026-01-01T00:00Z", "--point", "x"), 2, "--at or --point")
    assert_exit(fleet.cli("restore", "alice", "--at", "yesterday"), 2, "--at 'yesterday'", "ISO-8601")
    assert_exit(fleet.cli("restore", "alice", "--at", "2999-01-01T00:00Z"), 2, "in the future")
    assert_exit(fleet.cli("restore", "alice", "--as", "alice"), 2, "--as alice", "alice's own container")
    assert_exit(fleet.cli("restore", "alice", "--tier", "warm"), 2)


@contract("restore", 2)
def test_restore_never_writes_another_desktops_target(fleet: Deployment) -> None:
    before = fleet.world.read_volume("desktops", "bob")
    r = fleet.cli("restore", "alice", "--as", "bob", "--force")
    assert_exit(r, 2, "bob")
    assert fleet.world.read_volume("desktops", "bob") == before
    assert fleet.world.container("bob")["restored_at"] is None


@contract("restore", 2)
def test_restore_in_place_refuses_a_container_of_that_name_that_is_another_desktops(fleet: Deployment) -> None:
    # the container named alice now carries bob's label (recreated by hand, say): even --force
    # must not replace it, and alice's volume stays as it is
    c = fleet.world.container("alice")
    c["labels"] = {**c["labels"], LABEL_DESKTOP: "bob"}
    fleet.world.save_container(c)
    before = _live(fleet, "alice")
    r = fleet.cli("restore", "alice", "--force")
    assert_exit(r, 2, "desktop bob", "nothing was touched")
    assert fleet.world.container("alice")["restored_at"] is None
    assert _live(fleet, "alice") == before


@contract("restore", 3)
def test_restore_not_found(fleet: Deployment) -> None:
    assert_exit(fleet.cli("restore", "carol"), 3, "carol")
    assert_exit(
        fleet.cli("restore", "alice", "--at", "2001-01-01T00:00Z"),
        3,
        "no restorable recovery point of alice at or before 2001-01-01",
        "its oldest is ",  # where the points start, so a tired operator's next --at is right
        "`drsvc points list alice`",
    )
    assert_exit(fleet.cli("restore", "alice", "--point", "20010101T000000Z-nope"), 3)
    assert_exit(fleet.cli("restore", "alice", "--tier", "cold"), 3, "no restorable recovery point of alice with a cold")


@contract("restore", 4)
def test_restore_verify_catches_data_that_differs_from_the_manifest(fleet: Deployment) -> None:
    snap_objects = volume_for(1, "alice")
    victim = sorted(n for n, v in snap_objects.items() if v[0])[0]
    fleet.world.tamper_snapshot("desktops", "alice", victim, b"bit rot")
    r = fleet.cli("restore", "alice", "--force", "--verify")
    assert_exit(r, 4, "differs from the manifest", "1 different", victim)


@contract("restore", 1)
def test_restore_that_fails_exits_1_and_is_recorded(fleet: Deployment) -> None:
    fleet.world.set_knobs("alice", restore_error="CRIU restore failed: no memory")
    r = fleet.cli("restore", "alice", "--force")
    assert_exit(r, 1, "CRIU restore failed: no memory")
    rows = fleet.services().catalog.query("SELECT status, error FROM restores WHERE desktop_id = 'alice'")
    assert [r["status"] for r in rows] == ["failed"] and "no memory" in rows[0]["error"]


@contract("restore", 1)
def test_restore_whose_container_dies_fails_the_health_check(fleet: Deployment) -> None:
    fleet.world.set_knobs("alice", dies_after_restore=True)
    assert_exit(fleet.cli("restore", "alice", "--force"), 1, "restored container alice is exited, not running")


@contract("restore", 1)
def test_restore_of_a_fresh_start_is_not_a_restore_from_the_checkpoint(fleet: Deployment) -> None:
    fleet.world.set_knobs("alice", not_from_checkpoint=True)
    assert_exit(fleet.cli("restore", "alice", "--force"), 1, "was not restored from the checkpoint")


@contract("restore", 1)
def test_restore_whose_probe_never_answers_fails(fleet: Deployment) -> None:
    fleet.world.set_knobs("alice", tcp_ports=[22])
    assert_exit(fleet.cli("restore", "alice", "--force"), 1, "health probe failed for alice", "tcp 5900 refused")


@contract("restore", 3)
def test_a_storm_on_a_node_no_desktop_has_is_not_found(fleet: Deployment) -> None:
    # node-lost runbook: a mistyped node must not read as "0 desktops restored", exit 0
    r = fleet.cli("restore", "--node", "no-such-node", "--dry-run")
    assert_exit(r, 3, "no desktop has node 'no-such-node'", "known:")


def test_a_storm_dry_run_lists_running_desktops_as_skipped(fleet: Deployment) -> None:
    # runbook node-lost: "`restore --node NODE --dry-run` lists the ones a storm would restore";
    # a desktop still running is skipped by the run (without --force), so its plan says so
    fleet.world.remove_container("bob")
    dry = fleet.cli("--json", "restore", "--all", "--dry-run")
    assert dry.code == 0, dry.output
    status = {d["desktop"]: (d["status"], d["error"]) for d in dry.json()["desktops"]}
    assert status["bob"] == ("planned", None)
    assert status["alice"][0] == "skipped" and "already running here" in status["alice"][1], status
    forced = fleet.cli("--json", "restore", "--all", "--dry-run", "--force")
    assert {d["status"] for d in forced.json()["desktops"]} == {"planned"}, forced.output
    run = fleet.cli("--json", "restore", "--all")
    assert run.code == 0, run.output
    assert {d["desktop"]: d["status"] for d in run.json()["desktops"]} == {"alice": "skipped", "bob": "ok"}


def test_restore_at_a_time_copied_from_a_table_includes_that_second(deploy: Deployment) -> None:
    # `points list` shows 04:40:16 for a point taken at 04:40:16.517: `--at` copied from there (runbooks
    # ransomware, desktop-lost) must find it, not say "no restorable recovery point at or before"
    deploy.desktop("alice", seed=1)
    [pid] = deploy.backup_at((clock.now() - timedelta(hours=1)).replace(microsecond=517_000), "alice")
    [point] = deploy.cli("--json", "points", "list", "alice").json()
    moment = clock.from_iso(point["taken_at"])
    if moment.microsecond == 0:
        pytest.skip("the point was taken on a whole second: nothing to truncate")
    shown = moment.strftime("%Y-%m-%dT%H:%M:%SZ")  # as the table shows it
    r = deploy.cli("--json", "restore", "alice", "--at", shown, "--dry-run")
    assert r.code == 0 and r.json()["point_id"] == pid, r.output
    earlier = (moment - timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert_exit(deploy.cli("restore", "alice", "--at", earlier, "--dry-run"), 3, f"its oldest is {pid}")
