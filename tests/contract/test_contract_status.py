"""drsvc status | metrics: exit 0, and 5 when an objective is missed."""

from __future__ import annotations

from datetime import timedelta

from contractlib import assert_exit, contract
from deployment import Deployment

from drsvc import clock


@contract("status", 0)
def test_status_all_objectives_met(fleet: Deployment) -> None:
    assert_exit(fleet.cli("status", "--all"), 0, "OK  all objectives met", "alice", "bob")


@contract("status", 0)
def test_status_counts_a_desktop_two_policies_cover_once(deploy: Deployment) -> None:
    deploy.policy("weekly", schedule="0 0 * * 0", objectives={"rpo": "8d", "rto": "30s"})
    deploy.desktop("alice")
    assert_exit(deploy.cli("backup", "alice"), 0)
    assert_exit(deploy.cli("status"), 0, "OK  all objectives met (1 desktop(s),")


@contract("status", 5)
def test_status_with_a_desktop_past_its_rpo(deploy: Deployment) -> None:
    deploy.desktop("alice")
    deploy.desktop("bob")
    deploy.backup_at(clock.now() - timedelta(hours=3), "alice")  # the policy's RPO is 1 h
    deploy.backup_at(clock.now() - timedelta(minutes=5), "bob")
    r = deploy.cli("status")
    assert_exit(r, 5, "CRITICAL", "objective(s) missed", "alice")


@contract("metrics", 0)
def test_metrics_prints_prometheus_text(fleet: Deployment) -> None:
    r = fleet.cli("metrics")
    assert_exit(r, 0, "# TYPE drsvc_")
    out = fleet.root / "node" / "drsvc.prom"
    out.parent.mkdir()
    assert_exit(fleet.cli("metrics", "--textfile", str(out)), 0)
    assert "# TYPE drsvc_" in out.read_text()


@contract("metrics", 2)
def test_metrics_textfile_in_a_missing_directory(fleet: Deployment) -> None:
    assert_exit(fleet.cli("metrics", "--textfile", str(fleet.root / "nowhere" / "m.prom")), 2, "does not exist")
