"""drsvc backup DESKTOP... | --policy NAME [--dry-run]: exit 0, 1, 2, 3, 6."""

from __future__ import annotations

import json

import pytest
from contractlib import assert_exit, contract
from deployment import Deployment, digests, slow_on


def _points(d: Deployment) -> list[dict]:
    r = d.cli("--json", "points", "list")
    assert r.code == 0, r.output
    return list(r.json())


@contract("backup", 0)
def test_backup_named_desktops_pairs_memory_and_volume(deploy: Deployment) -> None:
    alice = deploy.desktop("alice", seed=11)
    deploy.desktop("bob", seed=12)
    r = deploy.cli("backup", "alice", "bob")
    assert_exit(r, 0, "2/2 complete (2 paired)")
    points = {p["desktop"]: p for p in _points(deploy)}
    assert {p["status"] for p in points.values()} == {"complete"}
    assert {p["consistency"] for p in points.values()} == {"paired"}
    # the manifest lists exactly the objects the test wrote, with the test's own digests matching
    # what drsvc recorded for the same bytes (checked again, independently, by the restore tests)
    services = deploy.services()
    manifest = services.hot.get_manifest("alice", points["alice"]["id"])
    assert sorted(o["name"] for o in manifest["volume"]["objects"]) == sorted(alice)
    assert {o["name"]: o["size"] for o in manifest["volume"]["objects"]} == {n: len(v[0]) for n, v in alice.items()}
    assert set(digests(alice)) == {o["name"] for o in manifest["volume"]["objects"]}


@contract("backup", 0)
def test_backup_json_is_one_document(deploy: Deployment) -> None:
    deploy.desktop("alice")
    r = deploy.cli("--json", "backup", "alice")
    assert_exit(r, 0)
    doc = json.loads(r.stdout)
    assert doc["summary"] == {**doc["summary"], "count": 1, "complete": 1, "paired": 1, "failed": 0}


@contract("backup", 0)
def test_backup_dry_run_names_the_desktops_and_changes_nothing(deploy: Deployment) -> None:
    deploy.desktop("alice")
    deploy.desktop("bob")
    deploy.world.add_desktop("eve", {}, tenant="other")  # not covered by the policy
    r = deploy.cli("backup", "--policy", "standard", "--dry-run")
    assert_exit(r, 0, "would back up: alice, bob")
    assert "eve" not in r.stdout
    assert _points(deploy) == []
    assert not list((deploy.root / "world" / "pools").glob("*/snaps/*")), "a dry run took a pool snapshot"
    assert not (deploy.root / "hot").exists() or not list((deploy.root / "hot").rglob("manifests/*"))


@contract("backup", 0)
def test_without_the_freeze_hook_points_are_crash_consistent_and_say_why(deploy: Deployment) -> None:
    deploy.desktop("alice")
    deploy.world.hook_installed = False
    r = deploy.cli("backup", "alice")
    assert_exit(r, 0, "1/1 complete (0 paired)", "CRIU freeze hook not installed")
    (point,) = _points(deploy)
    assert (point["status"], point["consistency"]) == ("complete", "crash")
    assert "freeze hook not installed" in point["reason"]


@contract("backup", 0)
def test_a_failed_checkpoint_still_gives_a_crash_consistent_point(deploy: Deployment) -> None:
    deploy.desktop("alice")
    deploy.desktop("bob")
    deploy.world.set_knobs("bob", checkpoint_error="CRIU says no")
    r = deploy.cli("backup", "alice", "bob")
    assert_exit(r, 0, "2/2 complete (1 paired)", "checkpoint failed", "CRIU says no")
    points = {p["desktop"]: p for p in _points(deploy)}
    assert points["bob"]["consistency"] == "crash" and points["alice"]["consistency"] == "paired"


@contract("backup", 0)
def test_a_desktop_whose_memory_would_not_fit_on_the_disk_is_not_checkpointed(deploy: Deployment) -> None:
    # bob's memory grew to 1 EiB right before the backup: its checkpoint image would fill the disk
    # where the runtime writes it, for every tenant; alice (same batch) is checkpointed as usual
    deploy.desktop("alice")
    deploy.desktop("bob")
    deploy.world.set_knobs("alice", memory_current=4096, checkpoint_dir=str(deploy.root))
    deploy.world.set_knobs("bob", memory_current=2**60, checkpoint_dir=str(deploy.root))
    r = deploy.cli("backup", "alice", "bob")
    assert_exit(r, 0, "2/2 complete (1 paired)", "checkpoint refused", str(deploy.root))
    points = {p["desktop"]: p for p in _points(deploy)}
    assert points["alice"]["consistency"] == "paired"
    assert points["bob"]["consistency"] == "crash"
    assert "memory" in points["bob"]["reason"] and "free" in points["bob"]["reason"]


@contract("backup", 0)
def test_a_batch_whose_every_checkpoint_is_refused_still_gets_its_volumes(deploy: Deployment) -> None:
    deploy.desktop("bob")
    deploy.world.set_knobs("bob", memory_current=2**60, checkpoint_dir=str(deploy.root))
    r = deploy.cli("backup", "bob")
    assert_exit(r, 0, "1/1 complete (0 paired)", "checkpoint refused")
    (point,) = _points(deploy)
    assert (point["status"], point["consistency"]) == ("complete", "crash")


@contract("backup", 0)
def test_a_desktop_that_never_freezes_is_snapshotted_without_its_memory(deploy: Deployment) -> None:
    deploy.desktop("alice")
    deploy.world.set_knobs("alice", hook="early")  # the hook lets it go before the snapshot
    r = deploy.cli("backup", "alice")
    assert_exit(r, 0, "1/1 complete (0 paired)", "released by the freeze hook before the snapshot")


@contract("backup", 2)
def test_backup_needs_desktops_or_a_policy_not_both(deploy: Deployment) -> None:
    deploy.desktop("alice")
    assert_exit(deploy.cli("backup"), 2, "name DESKTOPs or give --policy NAME")
    assert_exit(deploy.cli("backup", "alice", "--policy", "standard"), 2, "name DESKTOPs or give --policy NAME")
    assert _points(deploy) == []


@contract("backup", 2)
def test_backup_with_an_invalid_policy_file_is_refused(deploy: Deployment) -> None:
    deploy.desktop("alice")
    (deploy.root / "policies" / "broken.yaml").write_text("name: broken\nschedule: every tuesday\n")
    r = deploy.cli("backup", "--policy", "standard")
    assert_exit(r, 2, "problems in policy files; nothing was loaded")
    assert "broken.yaml: schedule:" in r.stderr
    assert _points(deploy) == []


@contract("backup", 3)
def test_backup_of_an_unknown_desktop_is_not_found(deploy: Deployment) -> None:
    deploy.desktop("alice")
    r = deploy.cli("backup", "alice", "carol")
    assert_exit(r, 3, "unknown desktop 'carol'", "running desktops: alice")
    assert _points(deploy) == []


@contract("backup", 3)
def test_backup_of_an_unknown_policy_is_not_found(deploy: Deployment) -> None:
    deploy.desktop("alice")
    assert_exit(deploy.cli("backup", "--policy", "gold"), 3, "gold")


@contract("backup", 6)
def test_one_desktop_failing_among_several_is_partial(deploy: Deployment) -> None:
    deploy.desktop("alice")
    deploy.desktop("bob")
    deploy.desktop("carol")
    deploy.world.set_knobs("bob", read_error="OSD down")
    r = deploy.cli("backup", "--policy", "standard")
    assert_exit(r, 6, "2/3 complete", "OSD down")
    points = {p["desktop"]: p["status"] for p in _points(deploy)}
    assert points == {"alice": "complete", "bob": "failed", "carol": "complete"}


@contract("backup", 6)
def test_a_bug_one_desktops_data_sets_off_fails_that_desktop_alone(deploy: Deployment) -> None:
    """A desktop's processes shape everything drsvc reads of it; a drsvc bug their data sets off
    (an empty omap value once made the binding's reader raise a TypeError) raised out of the
    run: every later batch, every other tenant's point, went with it. Now it fails that desktop,
    naming the error, and the log keeps the traceback."""
    deploy.desktop("alice")
    deploy.desktop("mallory", seed=2)
    deploy.desktop("carol", seed=3)
    deploy.world.set_knobs("mallory", read_bug="cannot convert 'NoneType' object to bytes")
    r = deploy.cli("--json", "backup", "--policy", "standard")
    assert r.code == 6, r.output
    results = {o["desktop"]: o for o in r.json()["results"]}
    assert results["alice"]["status"] == results["carol"]["status"] == "complete", results
    assert results["mallory"]["status"] == "failed"
    assert "TypeError: cannot convert 'NoneType' object to bytes" in results["mallory"]["error"]
    points = {p["desktop"]: p["status"] for p in _points(deploy)}
    assert points == {"alice": "complete", "mallory": "failed", "carol": "complete"}


@contract("backup", 6)
def test_a_desktop_whose_pool_does_not_exist_fails_alone(deploy: Deployment, monkeypatch: pytest.MonkeyPatch) -> None:
    """A desktop labelled with a pool that is not there (a typo, a pool deleted): its batch fails
    with Ceph's reason, the other desktops get their points and the command says partial."""
    from fakes.desktops import FakePoolSnapshots, register

    from drsvc.errors import NotFound

    register(deploy.world.root, pool="gone")  # the same fake host, a second pool name

    real = FakePoolSnapshots.create

    def create(self: FakePoolSnapshots, name: str) -> int:
        if self.pool == "gone":  # as drsvc.ceph says of a pool that does not exist
            raise NotFound("Ceph pool 'gone' does not exist (create it: ceph osd pool create gone)")
        return real(self, name)

    monkeypatch.setattr(FakePoolSnapshots, "create", create)
    deploy.desktop("alice")
    deploy.desktop("eve", seed=2, pool="gone")
    r = deploy.cli("backup", "--policy", "standard")
    assert_exit(r, 6, "1/2 complete", "Ceph pool 'gone' does not exist")
    points = {p["desktop"]: p["status"] for p in _points(deploy)}
    assert points == {"alice": "complete", "eve": "failed"}


@contract("backup", 6)
def test_a_desktop_slow_to_capture_fails_alone_at_its_capture_deadline(
    deploy: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A desktop's processes make its namespace slow to read (each object takes an hour: a million
    of them, or huge ones). Past ``capture.deadline`` (2 h by default) that desktop fails with its
    reason and the others get their points; its earlier point stays. The fake's slow reads pass
    time on the reading thread's own clock (``slow_on``), so nothing here waits."""
    slow_on(monkeypatch)
    deploy.desktop("alice")
    deploy.desktop("mallory", seed=2)
    assert_exit(deploy.cli("backup", "--policy", "standard"), 0)
    earlier = {p["desktop"]: p["id"] for p in _points(deploy)}
    deploy.world.set_knobs("mallory", read_seconds=3600)
    r = deploy.cli("--json", "backup", "--policy", "standard")
    assert r.code == 6, r.output
    results = {o["desktop"]: o for o in r.json()["results"]}
    assert results["alice"]["status"] == "complete", results["alice"]
    assert results["mallory"]["status"] == "failed"
    assert "the capture of desktop mallory (capture.deadline) took longer than 2h" in results["mallory"]["error"]
    points = {(p["desktop"], p["id"]): p for p in _points(deploy)}
    failed = points[("mallory", results["mallory"]["point_id"])]
    assert failed["status"] == "failed" and "capture.deadline" in (failed.get("reason") or ""), failed
    assert not [p for p in points.values() if p["status"] == "pending"]
    # the earlier point is intact: it still verifies, data read and re-hashed
    assert points[("mallory", earlier["mallory"])]["status"] == "complete"
    assert_exit(deploy.cli("verify", earlier["mallory"], "--read-data"), 0)


@contract("backup", 0)
def test_a_checkpoint_archive_slow_to_store_leaves_that_desktop_a_point_without_memory(
    deploy: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A desktop with huge memory streams its checkpoint archive for hours while its batch waits:
    past ``capture.deadline`` the archive is given up (its point is crash-consistent, the volume
    alone, saying why) and the batch goes on (``slow_on``, as above)."""
    slow_on(monkeypatch)
    deploy.desktop("alice")
    deploy.desktop("mallory", seed=2)
    deploy.world.set_knobs("mallory", archive_seconds=3 * 3600)
    r = deploy.cli("--json", "backup", "--policy", "standard")
    assert r.code == 0, r.output
    results = {o["desktop"]: o for o in r.json()["results"]}
    assert results["alice"]["consistency"] == "paired", results["alice"]
    assert results["mallory"]["status"] == "complete" and results["mallory"]["consistency"] == "crash"
    assert (
        "the checkpoint archive of desktop mallory (capture.deadline) took longer than 2h"
        in (results["mallory"]["reason"])
    )


@contract("backup", 1)
def test_every_desktop_failing_is_a_failure(deploy: Deployment) -> None:
    deploy.desktop("alice")
    deploy.world.set_knobs("alice", read_error="OSD down")
    r = deploy.cli("backup", "alice")
    assert_exit(r, 1, "0/1 complete", "OSD down", report=True)
    assert [p["status"] for p in _points(deploy)] == ["failed"]
