"""DrillJob on a real catalog and stores with the FAKE runtime and volumes: which desktops a drill
takes, how sandboxes are named and isolated, and that every sandbox is torn down whatever failed."""

from __future__ import annotations

import pytest
from deployment import Deployment

from drsvc import restore
from drsvc.drill import DrillJob
from drsvc.errors import InvalidInput, NotFound


def fleet(d: Deployment, *names: str) -> None:
    for n, name in enumerate(names):
        d.desktop(name, seed=n + 1)
    assert d.cli("backup", *names).code == 0


def leftovers(d: Deployment) -> list[str]:
    clones = [c["name"] for c in d.world.containers() if c["name"].startswith("drill-")]
    # a namespace with no object left is none (as in RADOS): only the fake keeps its directory
    spaces = [p.name for p in (d.world.root / "pools" / "desktops" / "live").glob("drill-*") if any(p.iterdir())]
    return clones + spaces


# ---------------------------------------------------------------- choosing
def test_choose_named_sampled_all(deploy: Deployment) -> None:
    fleet(deploy, "a1", "a2", "a3", "a4")
    deploy.desktop("fresh")  # covered by the policy, but no point yet: not drillable
    deploy.world.add_desktop("other", {}, tenant="globex")  # not covered
    assert deploy.cli("desktops", "discover").code == 0
    job = DrillJob(deploy.services())
    assert job.choose(desktops=["a2"]) == ["a2"]
    with pytest.raises(NotFound):
        job.choose(desktops=["nobody"])
    assert job.choose(everything=True) == ["a1", "a2", "a3", "a4"]
    picked = job.choose(sample=2, seed=5)
    assert len(picked) == 2 and set(picked) <= {"a1", "a2", "a3", "a4"}
    assert job.choose(sample=2, seed=5) == picked, "a seed makes the sample reproducible"
    assert job.choose(sample=99) == ["a1", "a2", "a3", "a4"], "never more than there are"
    assert job.choose(policy="standard") and len(job.choose(policy="standard")) == 1  # drill.sample: 1
    with pytest.raises(InvalidInput, match="--sample -1"):
        job.choose(sample=-1)


def test_gone_desktops_are_not_drilled(deploy: Deployment) -> None:
    fleet(deploy, "a1", "a2")
    deploy.world.remove_container("a2")
    assert deploy.cli("desktops", "discover").code == 0
    assert DrillJob(deploy.services()).choose(everything=True) == ["a1"]


# ---------------------------------------------------------------- sandboxes
def test_sandbox_name_network_and_labels(deploy: Deployment, monkeypatch: pytest.MonkeyPatch) -> None:
    fleet(deploy, "alice")
    seen: dict = {}
    real_health = restore.RestoreJob._health

    def spy(self, plan, restored, result):  # type: ignore[no-untyped-def]
        seen.update(deploy.world.container(plan.name))
        return real_health(self, plan, restored, result)

    monkeypatch.setattr(restore.RestoreJob, "_health", spy)
    services = deploy.services()
    report = DrillJob(services).run(["alice"])
    assert report.exit_code == 0
    assert seen["name"] == f"drill-{report.drill_id}-alice"
    assert seen["network"] == "none", "a drill sandbox must not reach users or production data"
    assert seen["labels"]["drsvc.clone-of"] == "alice"
    assert seen["labels"]["drsvc.volume"] == f"fakevol://desktops/drill-{report.drill_id}-alice"
    (row,) = services.catalog.query("SELECT as_name, drill_id FROM restores")
    assert row == {"as_name": f"drill-{report.drill_id}-alice", "drill_id": report.drill_id}
    assert leftovers(deploy) == []


# ---------------------------------------------------------------- teardown on every failure path
@pytest.mark.parametrize(
    ("knobs", "why"),
    [
        ({"restore_error": "criu failed hard"}, "criu failed hard"),
        ({"dies_after_restore": True}, "not running"),
        ({"not_from_checkpoint": True}, "not restored from the checkpoint"),
        ({"tcp_ports": [22]}, "health probe failed"),
        ({"restore_seconds": 1.1}, "over the 1 s target"),
    ],
)
def test_every_failure_is_recorded_and_torn_down(deploy: Deployment, knobs: dict, why: str) -> None:
    deploy.policy(objectives={"rpo": "1h", "rto": "1s"})
    fleet(deploy, "alice", "bob")
    deploy.world.set_knobs("alice", **knobs)
    services = deploy.services()
    report = DrillJob(services).run(["alice", "bob"])
    results = {r.desktop: r for r in report.results}
    assert not results["alice"].passed and why in (results["alice"].error or "")
    assert results["bob"].passed
    assert report.exit_code == 6
    assert leftovers(deploy) == []
    rows = {r["desktop_id"]: r for r in services.catalog.query("SELECT * FROM drill_results")}
    assert rows["alice"]["passed"] == 0 and why in rows["alice"]["error"] and rows["bob"]["passed"] == 1


def test_a_volume_that_differs_from_the_manifest_fails_verification_and_is_torn_down(deploy: Deployment) -> None:
    fleet(deploy, "alice")
    name, (data, *_) = next((n, v) for n, v in deploy.world.read_volume("desktops", "alice").items() if v[0])
    # same size: the copy from the snapshot goes through (sizes come from the manifest), the hash does not
    deploy.world.tamper_snapshot("desktops", "alice", name, b"rot".ljust(len(data), b"!"))
    report = DrillJob(deploy.services()).run(["alice"])
    (r,) = report.results
    assert not r.passed and not r.verified and "differs from the manifest" in (r.error or "")
    assert leftovers(deploy) == []


def test_a_snapshot_object_of_another_size_than_the_manifest_says_fails_the_copy(deploy: Deployment) -> None:
    fleet(deploy, "alice")
    name = next(n for n, v in deploy.world.read_volume("desktops", "alice").items() if v[0])
    deploy.world.tamper_snapshot("desktops", "alice", name, b"rot")
    report = DrillJob(deploy.services()).run(["alice"])
    (r,) = report.results
    assert not r.passed and not r.verified and "expected" in (r.error or "")
    assert leftovers(deploy) == []


def test_ctrl_c_mid_drill_still_tears_down_and_records_interrupted(
    deploy: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    fleet(deploy, "alice")
    real_health = restore.RestoreJob._health

    def interrupted(self, plan, restored, result):  # type: ignore[no-untyped-def]
        assert deploy.world.container(plan.name)  # the sandbox exists at this moment
        raise KeyboardInterrupt

    monkeypatch.setattr(restore.RestoreJob, "_health", interrupted)
    services = deploy.services()
    with pytest.raises(KeyboardInterrupt):
        DrillJob(services).run(["alice"])
    monkeypatch.setattr(restore.RestoreJob, "_health", real_health)
    assert leftovers(deploy) == []
    assert [r["status"] for r in services.catalog.query("SELECT status FROM drills")] == ["interrupted"]


@pytest.mark.parametrize("point", ["after-clone-created", "after-restore-volume"])
def test_a_drill_killed_mid_restore_is_torn_down_and_recorded_interrupted_by_cleanup(
    deploy: Deployment, point: str
) -> None:
    """kill -9 (a real SIGKILL of a child drsvc) skips the drill's finally: cleanup must end what it left."""
    fleet(deploy, "alice")
    killed = deploy.run_child("drill", "alice", DRSVC_FAULT=f"{point}:kill")
    assert killed.returncode == -9, killed.stderr
    services = deploy.services()
    assert [r["status"] for r in services.catalog.query("SELECT status FROM drills")] == ["running"]
    assert deploy.cli("cleanup").code == 0
    assert leftovers(deploy) == []
    assert [r["status"] for r in services.catalog.query("SELECT status FROM drills")] == ["interrupted"]
    assert not services.catalog.query("SELECT 1 FROM drill_results WHERE passed = 1")
    assert deploy.cli("catalog", "check").code == 0
    # and a drill that runs now is not taken for a killed one
    assert deploy.cli("drill", "alice").code == 0
    assert [r["status"] for r in services.catalog.query("SELECT status FROM drills ORDER BY id")] == [
        "interrupted",
        "passed",
    ]


def test_a_failed_teardown_fails_the_desktop(deploy: Deployment) -> None:
    fleet(deploy, "alice")
    deploy.world.set_knobs("alice", remove_error="device busy")
    (r,) = DrillJob(deploy.services()).run(["alice"]).results
    assert not r.passed and "teardown failed" in (r.error or "")


def test_parallel_drills_each_get_their_own_sandbox(deploy: Deployment) -> None:
    fleet(deploy, "a1", "a2", "a3")
    report = DrillJob(deploy.services()).run(["a1", "a2", "a3"], parallel=3)
    assert report.exit_code == 0 and len({r.clone for r in report.results}) == 3
    assert leftovers(deploy) == []


def test_a_drills_teardown_leaves_what_someone_else_wrote_into_its_sandbox_namespace(
    deploy: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The clone's objects go; an object another writer put there after the plan found it empty stays."""
    fleet(deploy, "alice")
    real_health = restore.RestoreJob._health
    spaces: list[str] = []

    def meanwhile(self, plan, restored, result):  # type: ignore[no-untyped-def]
        spaces.append(plan.name)
        live = deploy.world.live("desktops", plan.name)
        objects = {n: v for n, v in deploy.world.read_volume("desktops", plan.name).items()}
        deploy.world.write_volume("desktops", plan.name, {**objects, "notes/operator.txt": b"mine"})
        assert live.is_dir()
        return real_health(self, plan, restored, result)

    monkeypatch.setattr(restore.RestoreJob, "_health", meanwhile)
    (r,) = DrillJob(deploy.services()).run(["alice"]).results
    assert r.passed, r.error
    [space] = spaces
    assert {n: v[0] for n, v in deploy.world.read_volume("desktops", space).items()} == {"notes/operator.txt": b"mine"}
    assert not deploy.world.containers() or all(c["name"] != space for c in deploy.world.containers())


def test_a_site_drills_teardown_removes_the_clones_objects_and_nothing_else(deploy: Deployment) -> None:
    from drsvc.offsite.recover import SiteRecovery
    from drsvc.storm import FleetItem

    fleet(deploy, "alice")
    services = deploy.services()
    job = restore.RestoreJob(services)
    plan = job.plan("alice", as_name="sitedrill-abc123-alice")
    result = job.run(plan, network="none", verify=True)
    deploy.world.write_volume(
        "desktops", plan.name, {**deploy.world.read_volume("desktops", plan.name), "notes/operator.txt": b"mine"}
    )
    item = FleetItem("alice", status="ok", checks=result.checks)
    SiteRecovery._teardown(services, item, plan)
    assert {n: v[0] for n, v in deploy.world.read_volume("desktops", plan.name).items()} == {
        "notes/operator.txt": b"mine"
    }
    assert all(c["name"] != plan.name for c in deploy.world.containers())
    # a failed restore tore its own clone down: the site drill removes no object then
    failed = FleetItem("alice", status="failed")
    SiteRecovery._teardown(services, failed, plan)
    assert list(deploy.world.read_volume("desktops", plan.name)) == ["notes/operator.txt"]
