"""drsvc drill [--policy P] [--sample N | --all | DESKTOP...] [--parallel K] [--dry-run]:
exit 0, 1, 2, 3, 6; sandboxes always torn down."""

from __future__ import annotations

from contractlib import assert_exit, contract
from deployment import Deployment


def _leftovers(d: Deployment) -> list[str]:
    """Drill clones or their namespaces still present (there must never be any after a drill)."""
    containers = [c["name"] for c in d.world.containers() if c["name"].startswith("drill-")]
    namespaces = [p.name for p in (d.world.root / "pools" / "desktops" / "live").glob("drill-*")]
    return containers + namespaces


def _results(r) -> dict[str, dict]:  # type: ignore[no-untyped-def]
    return {x["desktop"]: x for x in r.json()["results"]}


@contract("drill", 0)
def test_drill_all_restores_verifies_and_tears_down(fleet: Deployment) -> None:
    r = fleet.cli("drill", "--all", "--parallel", "2")
    assert_exit(r, 0, "2/2 passed")
    assert _leftovers(fleet) == []
    # production desktops untouched
    assert {c["name"] for c in fleet.world.containers()} == {"alice", "bob"}
    assert all(c["restored_at"] is None for c in fleet.world.containers())


@contract("drill", 0)
def test_drill_sample_drills_that_many(fleet: Deployment) -> None:
    fleet.desktop("carol", seed=3)
    assert_exit(fleet.cli("backup", "carol"), 0)
    r = fleet.cli("--json", "drill", "--sample", "2", "--seed", "7")
    assert_exit(r, 0)
    assert len(r.json()["results"]) == 2
    r2 = fleet.cli("--json", "drill", "--sample", "2", "--seed", "7", "--dry-run")
    assert sorted(x["desktop"] for x in r.json()["results"]) == sorted(x["desktop"] for x in r2.json()["desktops"])


@contract("drill", 0)
def test_drill_dry_run_restores_nothing(fleet: Deployment) -> None:
    r = fleet.cli("drill", "--all", "--dry-run")
    assert_exit(r, 0, "alice", "bob")
    services = fleet.services()
    assert services.catalog.query("SELECT count(*) AS n FROM drills")[0]["n"] == 0
    assert services.catalog.query("SELECT count(*) AS n FROM restores")[0]["n"] == 0


@contract("drill", 0)
def test_a_bug_one_desktops_data_sets_off_fails_that_drill_alone(fleet: Deployment) -> None:
    """An empty omap value made the binding's reader raise a TypeError in a drill's restore: the
    whole drill run raised, the other desktops' drills with it. Now that drill fails, naming it."""
    assert_exit(fleet.cli("backup", "--policy", "standard"), 0)
    fleet.world.set_knobs("bob", read_bug="cannot convert 'NoneType' object to bytes")
    r = fleet.cli("--json", "drill", "--all")
    assert r.code == 6, r.output  # the log keeps the bug's traceback
    results = _results(r)
    assert results["alice"]["passed"] and not results["bob"]["passed"]
    assert "TypeError: cannot convert 'NoneType' object to bytes" in results["bob"]["error"]
    assert _leftovers(fleet) == []


@contract("drill", 6)
def test_one_desktop_failing_among_several_is_partial_and_still_torn_down(fleet: Deployment) -> None:
    fleet.world.set_knobs("bob", restore_error="CRIU restore failed")
    r = fleet.cli("--json", "drill", "--all")
    assert_exit(r, 6)
    results = _results(r)
    assert results["alice"]["passed"] and not results["bob"]["passed"]
    assert "CRIU restore failed" in results["bob"]["error"]
    assert _leftovers(fleet) == []


@contract("drill", 6)
def test_a_drill_that_misses_the_rto_target_does_not_pass(fleet: Deployment) -> None:
    fleet.policy(objectives={"rpo": "1h", "rto": "1s"})
    fleet.world.set_knobs("alice", restore_seconds=1.2)
    r = fleet.cli("--json", "drill", "--all")
    assert_exit(r, 6)
    assert "over the 1 s target" in _results(r)["alice"]["error"]
    assert _results(r)["bob"]["passed"]


@contract("drill", 1)
def test_every_desktop_failing_is_a_failure(fleet: Deployment) -> None:
    for name in ("alice", "bob"):
        fleet.world.set_knobs(name, dies_after_restore=True)
    r = fleet.cli("drill", "--all")
    assert_exit(r, 1, "0/2 passed", report=True)
    assert _leftovers(fleet) == []


@contract("drill", 1)
def test_a_teardown_that_fails_fails_the_drill(fleet: Deployment) -> None:
    fleet.world.set_knobs("alice", remove_error="device busy")
    r = fleet.cli("--json", "drill", "alice")
    assert_exit(r, 1, report=True)
    assert "teardown failed" in _results(r)["alice"]["error"]


@contract("drill", 1)
def test_a_crash_consistent_point_cannot_prove_continuity(deploy: Deployment) -> None:
    deploy.desktop("alice")
    deploy.world.hook_installed = False
    assert_exit(deploy.cli("backup", "alice"), 0)
    r = deploy.cli("--json", "drill", "alice")
    assert_exit(r, 1, report=True)
    assert "crash-consistent" in _results(r)["alice"]["error"]


@contract("drill", 2)
def test_drill_option_errors(fleet: Deployment) -> None:
    assert_exit(fleet.cli("drill", "alice", "--sample", "1"), 2, "not both")
    assert_exit(fleet.cli("drill", "alice", "--parallel", "0"), 2, "--parallel 0")
    assert_exit(fleet.cli("drill", "--sample", "-1"), 2, "--sample -1")
    assert _leftovers(fleet) == []


@contract("drill", 3)
def test_drill_of_an_unknown_desktop(fleet: Deployment) -> None:
    assert_exit(fleet.cli("drill", "carol"), 3, "carol")
