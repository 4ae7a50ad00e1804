"""Intent records, owner liveness, what cleanup undoes, and the restore leases prune honours.

A moto cold store and file:// hot store (ColdKit); the container runtime and the volumes are
small fakes named as such (nothing real to remove in a unit test).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any, ClassVar

import boto3
import pytest
from coldkit import ColdKit, aws  # noqa: F401  (aws: the fixture)

from drsvc import clock
from drsvc.cleanup import CleanupJob, leftover_lines
from drsvc.errors import NotFound
from drsvc.intents import (
    Intents,
    Owner,
    interrupted_restores,
    leftovers,
    owner_alive,
    pack_names,
    points_being_read,
    resolve,
    unpack_names,
)
from drsvc.lease import Lease
from drsvc.prune import plan_hot
from drsvc.runtimes.base import LABEL_CLONE_OF, LABEL_DESKTOP, LABEL_RESTORE, DesktopRef


class FakeRuntime:
    """Containers by name, with labels; records removals."""

    url = "fake://"

    def __init__(self) -> None:
        self.containers: dict[str, dict[str, str]] = {}
        self.removed: list[str] = []

    def inspect(self, name: str) -> DesktopRef:
        if name not in self.containers:
            raise NotFound(f"no container {name}")
        return DesktopRef(name, name, "f" * 64, None, None, labels=self.containers[name])

    def remove(self, name: str) -> None:
        self.removed.append(name)
        self.containers.pop(name, None)

    def close(self) -> None:
        pass


class FakeVolume:
    purged: ClassVar[list[str]] = []
    removed: ClassVar[list[tuple[str, list[str]]]] = []

    def __init__(self, url: str) -> None:
        self.url = url

    def purge(self) -> int:
        FakeVolume.purged.append(self.url)
        return 1

    def remove_objects(self, names: list[str], *, marked: str | None = None) -> int:
        FakeVolume.removed.append((self.url, sorted(names)) if marked is None else (self.url, sorted(names), marked))
        return len(names)


@pytest.fixture
def kit(tmp_path: Path, aws: None) -> Iterator[ColdKit]:  # noqa: F811
    kit = ColdKit(tmp_path)
    kit.policy("std", ["alice"], retention={"hot": {"last": 1}}, tiering=None)
    kit.old = kit.point("alice", clock.now() - timedelta(hours=2), b"a" * 1000, policy="std")
    kit.new = kit.point("alice", clock.now() - timedelta(hours=1), b"b" * 1000, policy="std")
    kit.runtime = FakeRuntime()
    kit.services.__dict__["runtime"] = kit.runtime
    FakeVolume.purged = []
    FakeVolume.removed = []
    kit.services.volume = FakeVolume  # type: ignore[method-assign]
    yield kit
    kit.catalog.close()


def dead_owner(kit: ColdKit) -> str:
    """An owner lease held by a process of this host that has ended (a kill -9)."""
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(proc.stdout)
    name = f"owner:dead{pid}"
    kit.catalog.acquire_lease(name, f"{os.uname().nodename}:{pid}", ttl=3600)
    return name


def test_an_owner_is_alive_while_held_and_gone_after(kit: ColdKit) -> None:
    with Owner(kit.catalog) as owner:
        assert owner_alive(kit.catalog, owner.name)
    assert not owner_alive(kit.catalog, owner.name)
    assert not owner_alive(kit.catalog, dead_owner(kit))  # unexpired, but its pid is gone
    assert not owner_alive(kit.catalog, "owner:never")


def test_leftovers_are_the_pending_intents_of_gone_owners(kit: ColdKit) -> None:
    gone = Intents(kit.catalog, dead_owner(kit))
    a = gone.record("clone-container", "desk-clone", restore=1)
    done = gone.record("clone-volume", "rados://desktops/desk-clone")
    gone.resolve(done, "kept")
    with Owner(kit.catalog) as owner:
        Intents(kit.catalog, owner.name).record("clone-container", "other-clone")
        assert [i.id for i in leftovers(kit.catalog)] == [a]


def test_cleanup_removes_a_killed_restores_clone_and_only_a_clone(kit: ColdKit) -> None:
    kit.runtime.containers["desk-clone"] = {LABEL_DESKTOP: "desk-clone", LABEL_CLONE_OF: "alice"}
    kit.runtime.containers["bob"] = {LABEL_DESKTOP: "bob"}  # a real desktop that took the name
    gone = Intents(kit.catalog, dead_owner(kit))
    gone.record("clone-container", "desk-clone", restore=7, of="alice")
    gone.record("clone-volume", "rados://desktops/desk-clone", restore=7, of="alice")
    gone.record("clone-container", "bob", restore=8, of="alice")
    dry = CleanupJob(kit.services, None).run(dry_run=True)
    assert len(dry.undone) == 3 and kit.runtime.removed == [] and FakeVolume.purged == []
    assert any("leftover: clone-container desk-clone" in line for line in leftover_lines(kit.services))

    report = CleanupJob(kit.services, None).run()
    assert kit.runtime.removed == ["desk-clone"]
    assert FakeVolume.purged == ["rados://desktops/desk-clone"]
    assert "bob" in kit.runtime.containers  # not the clone the restore made: left, and said so
    assert any("bob" in p for p in report.problems)
    assert leftovers(kit.catalog) == []  # resolved: a second cleanup has nothing to do
    assert CleanupJob(kit.services, None).run().nothing


def test_cleanup_removes_only_the_objects_a_killed_clone_restore_recorded(kit: ColdKit) -> None:
    """Not the namespace: what the killed run recorded before writing (names with any character)."""
    names = ["home/a.bin", "odd\nname", "meta/profile"]
    assert unpack_names(pack_names(names)) == sorted(names)
    gone = Intents(kit.catalog, dead_owner(kit))
    gone.record("clone-volume", "rados://desktops/desk-clone", restore=7, of="alice", **pack_names(names))
    gone.record("clone-volume", "rados://desktops/old-clone", restore=6, of="alice")  # an older drsvc's intent
    report = CleanupJob(kit.services, None).run()
    assert FakeVolume.removed == [("rados://desktops/desk-clone", sorted(names))]
    assert FakeVolume.purged == ["rados://desktops/old-clone"]  # no names recorded: the namespace, as before
    assert any("objects 3" in line for line in report.undone), report.undone  # a count, not the names


def test_cleanup_after_a_kill_mid_write_removes_only_objects_carrying_the_runs_mark(kit: ColdKit) -> None:
    """A run killed while writing into an empty namespace: the names, but only those that carry its
    writer mark (set in the op creating each one); once it recorded `written`, every name."""
    gone = Intents(kit.catalog, dead_owner(kit))
    names = pack_names(["a", "b"])
    gone.record("clone-volume", "rados://desktops/mid", restore=7, of="alice", mark="7.x", **names)
    gone.record("clone-volume", "rados://desktops/done", restore=8, of="alice", mark="8.y", written=True, **names)
    report = CleanupJob(kit.services, None).run()
    assert FakeVolume.removed == [("rados://desktops/mid", ["a", "b"], "7.x"), ("rados://desktops/done", ["a", "b"])]
    assert not report.problems and any("writer mark" in line for line in report.others), report


def test_cleanup_removes_a_killed_restores_container_only_when_it_carries_its_mark(kit: ColdKit) -> None:
    gone = Intents(kit.catalog, dead_owner(kit))
    gone.record("clone-container", "ours", restore=7, of="alice", phase="container", mark="7.x")
    gone.record("clone-container", "swapped", restore=8, of="alice", phase="container", mark="8.y")
    gone.record("clone-container", "older", restore=9, of="alice", phase="container")  # an older drsvc's intent
    clone = {LABEL_CLONE_OF: "alice"}
    kit.runtime.containers["ours"] = {**clone, LABEL_DESKTOP: "ours", LABEL_RESTORE: "7.x"}
    kit.runtime.containers["swapped"] = {**clone, LABEL_DESKTOP: "swapped", LABEL_RESTORE: "9.z"}
    kit.runtime.containers["older"] = {**clone, LABEL_DESKTOP: "older"}
    report = CleanupJob(kit.services, None).run()
    assert sorted(kit.runtime.removed) == ["older", "ours"], "removed a container another restore made"
    assert not report.problems and any("swapped" in line for line in report.others), report
    assert leftovers(kit.catalog) == []


def test_cleanup_leaves_a_namespace_a_later_restore_of_the_same_name_holds(kit: ColdKit) -> None:
    gone = Intents(kit.catalog, dead_owner(kit))
    gone.record("clone-volume", "rados://desktops/desk-clone", restore=7, of="alice", **pack_names(["a"]))
    gone.record("clone-container", "desk-clone", restore=7, of="alice", phase="plan")
    kit.runtime.containers["desk-clone"] = {LABEL_DESKTOP: "desk-clone", LABEL_CLONE_OF: "alice"}
    with Owner(kit.catalog) as owner:  # the racer that won, and was kept
        winner = Intents(kit.catalog, owner.name)
        resolve(kit.catalog, winner.record("clone-volume", "rados://desktops/desk-clone", restore=8), "kept")
    report = CleanupJob(kit.services, None).run()
    assert FakeVolume.removed == [] and FakeVolume.purged == []
    assert kit.runtime.removed == [], "killed before its container phase: the container there is not its own"
    assert any("holds its clone (restore 8)" in p for p in report.problems), report.problems
    assert leftovers(kit.catalog) == []


def test_a_killed_in_place_restore_is_reported_not_undone(kit: ColdKit) -> None:
    cursor = kit.catalog.execute(
        "INSERT INTO restores (desktop_id, point_id, tier, started_at, target_seconds, status) "
        "VALUES ('alice', ?, 'hot', ?, 30, 'running')",
        [kit.new, clock.to_iso(clock.now())],
    )
    restore_id = cursor.lastrowid
    Intents(kit.catalog, dead_owner(kit)).record(
        "restore-in-place", "alice", restore=restore_id, point=kit.new, phase="container"
    )
    events: list[str] = []
    report = CleanupJob(kit.services, None, on_event=lambda kind, **_: events.append(kind)).run()
    assert events.count("restore-interrupted") == 1
    assert kit.runtime.removed == [] and FakeVolume.purged == []
    [line] = report.interrupted_restores
    assert "alice" in line and "container" in line
    [row] = kit.catalog.query("SELECT status, error FROM restores WHERE id = ?", [restore_id])
    assert row["status"] == "failed" and "interrupted" in row["error"] and "drsvc restore alice" in row["error"]
    [intent] = interrupted_restores(kit.catalog)  # still listed until a restore finishes it
    assert intent.detail["point"] == kit.new
    again = CleanupJob(kit.services, None, on_event=lambda kind, **_: events.append(kind)).run()
    assert events.count("restore-interrupted") == 1 and len(again.interrupted_restores) == 1


def test_prune_keeps_a_point_a_live_restore_reads(kit: ColdKit) -> None:
    dropped = {d.point_id for d in plan_hot(kit.catalog, kit.services.policies) if not d.keep}
    assert dropped == {kit.old}
    with Owner(kit.catalog) as owner, Intents(kit.catalog, owner.name).holding("point-read", kit.old):
        assert points_being_read(kit.catalog) == {kit.old}
        decisions = {d.point_id: d for d in plan_hot(kit.catalog, kit.services.policies)}
        assert decisions[kit.old].keep and "restore is reading" in decisions[kit.old].reasons[0]
    Intents(kit.catalog, dead_owner(kit)).record("point-read", kit.old)  # a killed restore's lease
    assert {d.point_id for d in plan_hot(kit.catalog, kit.services.policies) if not d.keep} == {kit.old}


def test_cleanup_aborts_the_multipart_uploads_a_killed_tier_run_left(kit: ColdKit) -> None:
    cold = kit.services.cold
    s3: Any = boto3.client("s3")
    key = f"{cold.store.prefix}packs/ab/abandoned"
    s3.create_multipart_upload(Bucket=kit.bucket, Key=key)
    Intents(kit.catalog, dead_owner(kit)).record("multipart-uploads", cold.store.url, job=3)
    assert len(s3.list_multipart_uploads(Bucket=kit.bucket).get("Uploads", [])) == 1
    with Lease(kit.catalog) as lease:
        CleanupJob(kit.services, lease).run()
    assert s3.list_multipart_uploads(Bucket=kit.bucket).get("Uploads", []) == []


def test_cleanup_ends_the_ownerless_job_rows_of_a_killed_tier_or_copy_and_only_those(kit: ColdKit) -> None:
    """kill -9 skips ``finish_job``. Rows an older drsvc started (no owner lease; tests/unit/
    test_job_owner.py has the rows that name one): the row of a process that has ended is recorded
    interrupted; a row whose process lives, or of another host, may still be running and is left."""
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    killed = {kind: kit.catalog.start_job(kind) for kind in ("tier", "copy")}
    live = kit.catalog.start_job("prune")
    elsewhere = kit.catalog.start_job("verify")
    kit.catalog.execute("UPDATE jobs SET pid = ? WHERE id IN (?, ?)", [int(ended.stdout), *killed.values()])
    kit.catalog.execute("UPDATE jobs SET host = 'another-node' WHERE id = ?", [elsewhere])
    assert sum("recorded running but its process is gone" in line for line in leftover_lines(kit.services)) == 2
    assert CleanupJob(kit.services, None).run(dry_run=True).interrupted_jobs == sorted(killed.values())
    report = CleanupJob(kit.services, None).run()
    assert report.interrupted_jobs == sorted(killed.values())
    status = {r["id"]: r["status"] for r in kit.catalog.query("SELECT id, status FROM jobs")}
    assert [status[j] for j in killed.values()] == ["interrupted", "interrupted"]
    assert status[live] == status[elsewhere] == "running"
    assert CleanupJob(kit.services, None).run().interrupted_jobs == []


def test_status_shows_a_killed_in_place_restore_at_once_until_a_restore_finishes_it(kit: ColdKit) -> None:
    """The desktop may be down: `drsvc status` (and the alert built on it) says so from the moment
    its restorer died, not an hour later, and also after cleanup marked the restore failed."""
    from drsvc.health import read_health

    cursor = kit.catalog.execute(
        "INSERT INTO restores (desktop_id, point_id, tier, started_at, target_seconds, status) "
        "VALUES ('alice', ?, 'hot', ?, 30, 'running')",
        [kit.new, clock.to_iso(clock.now())],
    )
    intent = Intents(kit.catalog, dead_owner(kit)).record(
        "restore-in-place", "alice", restore=cursor.lastrowid, point=kit.new, phase="container"
    )

    def shown() -> list[str]:
        health = read_health(kit.catalog, kit.services.policies)
        return [p for p in health.problems if "restore of alice" in p]

    assert len(shown()) == 1, "not shown before cleanup noticed it"
    CleanupJob(kit.services, None).run()
    assert len(shown()) == 1, "not shown once cleanup marked it failed"
    resolve(kit.catalog, intent, "done")  # a restore of alice finished it
    assert shown() == []
