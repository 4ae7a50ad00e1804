"""drsvc init | policy | desktops | points | catalog | report | runbook: their exit codes."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from contractlib import assert_exit, contract
from deployment import Deployment

from drsvc import clock


# ---------------------------------------------------------------- init
@contract("init", 0)
def test_init_writes_config_key_and_catalog_then_keeps_them(tmp_path: Path, run_cli) -> None:  # type: ignore[no-untyped-def]
    config = tmp_path / "etc" / "drsvc.toml"
    r = run_cli("--config", str(config), "init")
    assert_exit(r, 0, "created", "next: drsvc --config")
    assert config.is_file() and (tmp_path / "etc" / "drsvc.key").is_file()
    key = (tmp_path / "etc" / "drsvc.key").read_bytes()
    r = run_cli("--config", str(config), "init")
    assert_exit(r, 0, "kept")
    assert (tmp_path / "etc" / "drsvc.key").read_bytes() == key, "init must never replace a key"


@contract("init", 2)
def test_init_with_a_policies_path_that_is_a_file(tmp_path: Path, run_cli) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "f").write_text("")
    r = run_cli("--config", str(tmp_path / "drsvc.toml"), "init", "--policies", str(tmp_path / "f"))
    assert_exit(r, 2, "--policies")


# ---------------------------------------------------------------- policy
@contract("policy", 0)
def test_policy_check_and_plan(deploy: Deployment) -> None:
    assert_exit(deploy.cli("policy", "check"), 0, "OK  1 policy in 1 file")
    r = deploy.cli("--json", "policy", "plan", "standard", "--next", "3")
    assert_exit(r, 0)
    assert len(r.json()["next_runs"]) == 3


@contract("policy", 2)
def test_policy_check_reports_every_problem_as_file_field_why(deploy: Deployment) -> None:
    bad = deploy.root / "policies" / "bad.yaml"
    bad.write_text("name: bad\nselector: {tenant: acme}\nschedule: '61 * * * *'\nretention: {hot: {last: -1}}\n")
    r = deploy.cli("policy", "check")
    assert_exit(r, 2, "2 problems in policy files")
    assert f"{bad}: schedule:" in r.stderr and f"{bad}: retention.hot.last:" in r.stderr


@contract("policy", 3)
def test_policy_plan_of_an_unknown_policy(deploy: Deployment) -> None:
    assert_exit(deploy.cli("policy", "plan", "gold"), 3, "gold")


# ---------------------------------------------------------------- desktops
@contract("desktops", 0)
def test_desktops_discover_then_list(deploy: Deployment) -> None:
    assert_exit(deploy.cli("desktops", "list"), 0, "no desktops known yet: drsvc desktops discover")
    deploy.desktop("alice")
    deploy.world.add_desktop("eve", {}, tenant="other")
    r = deploy.cli("desktops", "discover")
    assert_exit(r, 0, "2 desktops")
    r = deploy.cli("--json", "desktops", "list")
    assert_exit(r, 0)
    assert {d["id"]: d["points"] for d in r.json()} == {"alice": 0, "eve": 0}
    assert_exit(deploy.cli("backup", "alice"), 0)
    deploy.world.remove_container("eve")
    assert_exit(deploy.cli("desktops", "discover"), 0, "no longer found: eve")
    listed = {d["id"]: d for d in deploy.cli("--json", "desktops", "list").json()}
    assert listed["alice"]["points"] == 1 and listed["alice"]["latest_point"]
    assert listed["eve"]["gone_since"] is not None


@contract("desktops", 0)
def test_desktops_discover_skips_clones(fleet: Deployment) -> None:
    assert_exit(fleet.cli("restore", "alice", "--as", "alice-copy"), 0)
    r = fleet.cli("--json", "desktops", "discover")
    assert sorted(d["desktop_id"] for d in r.json()["desktops"]) == ["alice", "bob"]


@contract("desktops", 2)
def test_desktops_with_an_unknown_runtime_scheme(deploy: Deployment) -> None:
    text = deploy.config_path.read_text().replace("fake://fleet", "lxc://host")
    deploy.config_path.write_text(text)
    r = deploy.cli("desktops", "discover")
    assert_exit(r, 2, "invalid configuration")
    assert "drsvc.toml: runtime.url: 'lxc://host' is not a URL with scheme" in r.stderr


# ---------------------------------------------------------------- points
@contract("points", 0)
def test_points_list_with_a_status_none_has_says_which(fleet: Deployment) -> None:
    # runbook backups-failing: "no recovery points" for a desktop that has some would mislead
    assert_exit(fleet.cli("points", "list", "alice", "--status", "failed"), 0, "no failed recovery points for alice")


@contract("points", 0)
def test_points_list_and_show(fleet: Deployment) -> None:
    r = fleet.cli("--json", "points", "list", "alice")
    assert_exit(r, 0)
    (point,) = r.json()
    r = fleet.cli("--json", "points", "show", point["id"][:22])
    assert_exit(r, 0)
    assert r.json()["id"] == point["id"] and {a["kind"] for a in r.json()["artifacts"]} == {"volume", "checkpoint"}


@contract("points", 3)
def test_points_of_unknown_desktops_and_points(fleet: Deployment) -> None:
    assert_exit(fleet.cli("points", "list", "carol"), 3, "carol")
    assert_exit(fleet.cli("points", "show", "20010101T000000Z-nobody"), 3, "20010101T000000Z-nobody")


# ---------------------------------------------------------------- catalog
@contract("catalog", 0)
def test_catalog_check_export_and_rebuild(fleet: Deployment) -> None:
    assert_exit(fleet.cli("catalog", "check"), 0, "OK  catalog", "in step with the stores")
    exported = fleet.cli("catalog", "export")
    assert_exit(exported, 0)
    before = {p["id"] for p in json.loads(exported.stdout)["points"]}
    (fleet.root / "catalog.db").unlink()
    for suffix in ("-wal", "-shm"):
        (fleet.root / f"catalog.db{suffix}").unlink(missing_ok=True)
    assert_exit(fleet.cli("catalog", "rebuild"), 0, "added 2 point(s)")
    after = {p["id"] for p in json.loads(fleet.cli("catalog", "export").stdout)["points"]}
    assert after == before


@contract("catalog", 4)
def test_catalog_check_reports_drift_from_the_stores(fleet: Deployment) -> None:
    manifests = sorted((fleet.root / "hot").rglob("manifests/alice/*"))
    assert manifests, "no manifest of alice in the hot store"
    manifests[0].unlink()
    r = fleet.cli("catalog", "check")
    assert_exit(r, 4, "1 difference(s) from the stores")


# ---------------------------------------------------------------- report
@contract("report", 0)
def test_report_writes_the_quarter(fleet: Deployment) -> None:
    assert_exit(fleet.cli("drill", "--all"), 0)
    out = fleet.root / "report.md"
    now = clock.now()
    assert_exit(fleet.cli("report", "--quarter", f"{now.year}Q{(now.month - 1) // 3 + 1}", "-o", str(out)), 0)
    assert "alice" in out.read_text() and "bob" in out.read_text()


@contract("report", 2)
def test_report_with_a_malformed_quarter(fleet: Deployment) -> None:
    assert_exit(fleet.cli("report", "--quarter", "2026Q5", "-o", str(fleet.root / "r.md")), 2, "2026Q5")


# ---------------------------------------------------------------- runbook
@contract("runbook", 0)
def test_runbook_list_and_show(run_cli) -> None:  # type: ignore[no-untyped-def]
    r = run_cli("--json", "runbook", "list")
    assert_exit(r, 0)
    names = [b["name"] for b in r.json()]
    assert names
    assert_exit(run_cli("runbook", "show", names[0]), 0)


@contract("runbook", 3)
def test_runbook_show_unknown(run_cli) -> None:  # type: ignore[no-untyped-def]
    assert_exit(run_cli("runbook", "show", "meteor-strike"), 3, "meteor-strike")


@contract("points", 0)
def test_json_may_follow_the_subcommand(fleet: Deployment) -> None:
    before, after = fleet.cli("--json", "points", "list"), fleet.cli("points", "list", "--json")
    assert_exit(after, 0)
    assert after.json() == before.json() and len(after.json()) == 2
    failed = fleet.cli("points", "show", "20010101T000000Z-nobody", "--json")
    assert_exit(failed, 3, "20010101T000000Z-nobody")
    assert failed.json()["exit_code"] == 3, "a --json error is one JSON document on stdout too"


@contract("desktops", 1)
def test_desktops_on_docker_without_the_docker_extra_names_it(
    deploy: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "docker", None)  # the 'docker' extra not installed
    text = deploy.config_path.read_text().replace("fake://fleet", f"docker://{deploy.root}/docker.sock")
    deploy.config_path.write_text(text)
    assert_exit(deploy.cli("desktops", "discover"), 1, "pip install 'drsvc[docker]'")
