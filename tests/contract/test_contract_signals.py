"""SIGTERM, SIGINT and SIGHUP to long-running commands, in real processes.

Each command is parked at a named moment (``DRSVC_FAULT=POINT:wait=PATH``) inside its work, then
signalled, then let go. It must end as an interrupted job, not as a killed process: one line
saying so and what to do next, exit 1 (failed: the contract has no other code for it), its job row
``interrupted``, its leases released, no desktop left frozen; and what it left behind is finished
by the next ``drsvc cleanup``, after which nothing is left and the earlier points are intact.
"""

from __future__ import annotations

import signal
import subprocess
from datetime import timedelta
from pathlib import Path

import pytest
from contractlib import assert_exit
from deployment import Deployment
from waits import finish, wait_for

from drsvc import clock, faults
from drsvc.catalog import Catalog


def _park(deploy: Deployment, tmp_path: Path, point: str, *args: str) -> tuple[subprocess.Popen[str], Path]:
    go = tmp_path / "go"
    proc = deploy.spawn(*args, **{faults.ENV: f"{point}:wait={go}"})
    wait_for(f"drsvc {args[0]} to reach {point}", Path(f"{go}.reached").exists)
    return proc, go


def _leases_free(deploy: Deployment) -> None:
    catalog = Catalog.open(deploy.root / "catalog.db")
    try:
        assert catalog.acquire_lease("work", "next:1", 60) is not None, "the work lease was left held"
        catalog.release_lease("work", catalog.query("SELECT token FROM leases WHERE name = 'work'")[0]["token"])
        owners = catalog.query("SELECT name FROM leases WHERE name LIKE 'owner:%' AND expires_at > 0")
        assert owners == [], f"owner leases left behind: {owners}"
        running = catalog.query("SELECT id, kind FROM jobs WHERE status = 'running'")
        assert running == [], f"jobs still recorded running: {running}"
    finally:
        catalog.close()


def _jobs(deploy: Deployment, kind: str) -> list[tuple[str, str]]:
    catalog = Catalog.open(deploy.root / "catalog.db")
    try:
        rows = catalog.query("SELECT status, error FROM jobs WHERE kind = ? ORDER BY id", [kind])
        return [(r["status"], r["error"] or "") for r in rows]
    finally:
        catalog.close()


def _interrupted(code: int, err: str, sig: signal.Signals) -> None:
    assert code == 1, f"exit {code}, not 1\n{err}"
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if ln.startswith("drsvc: error:")]
    assert len(lines) == 1, err
    assert "interrupted" in lines[0] and sig.name in lines[0] and "drsvc cleanup" in lines[0], lines[0]


def _ends_interrupted(
    deploy: Deployment, proc: subprocess.Popen[str], go: Path, sig: signal.Signals, what: str
) -> None:
    """Let the parked, signalled command go on: it ends interrupted, in one line, its leases free."""
    go.touch()
    code, _out, err = finish(proc, what)
    _interrupted(code, err, sig)
    _leases_free(deploy)


SIGNALS = [signal.SIGTERM, signal.SIGINT, signal.SIGHUP]


@pytest.mark.parametrize("sig", SIGNALS, ids=lambda s: s.name)
def test_a_signalled_backup_is_interrupted_thaws_at_once_and_cleanup_finishes_it(
    deploy: Deployment, tmp_path: Path, sig: signal.Signals
) -> None:
    deploy.desktop("alice")
    assert_exit(deploy.cli("backup", "alice"), 0)
    proc, go = _park(deploy, tmp_path, "after-freeze", "backup", "alice")
    proc.send_signal(sig)
    # the desktop thaws without waiting for the parked worker: the freeze directory is released
    wait_for(
        "the frozen desktop to be released",
        # (a process that died is released by the kernel: the real hook blocks on its lock)
        lambda: proc.poll() is not None or any(deploy.freeze_root.glob("*/release")),
        timeout=20,
    )
    _ends_interrupted(deploy, proc, go, sig, "the signalled backup")
    assert_exit(deploy.cli("cleanup"), 0)
    assert_exit(deploy.cli("cleanup"), 0, "nothing left behind")
    points = deploy.cli("--json", "points", "list").json()
    assert sorted(p["status"] for p in points) in (["complete"], ["complete", "failed"]), points


@pytest.mark.parametrize("sig", SIGNALS, ids=lambda s: s.name)
def test_a_signalled_restore_is_interrupted_and_the_next_run_finishes_it(
    deploy: Deployment, tmp_path: Path, sig: signal.Signals
) -> None:
    deploy.desktop("alice")
    assert_exit(deploy.cli("backup", "alice"), 0)
    proc, go = _park(deploy, tmp_path, "mid-restore-volume", "restore", "alice", "--as", "alice-copy")
    proc.send_signal(sig)
    _ends_interrupted(deploy, proc, go, sig, "the signalled restore")
    assert_exit(deploy.cli("cleanup"), 0)
    assert_exit(deploy.cli("cleanup"), 0, "nothing left behind")
    assert "alice-copy" not in {c["name"] for c in deploy.world.containers()}
    assert_exit(deploy.cli("restore", "alice", "--as", "alice-copy"), 0)


@pytest.mark.parametrize(
    ("kind", "point", "args"),
    [
        ("tier", "tier-after-packs", ("tier",)),
        ("prune", "prune-after-drop", ("prune",)),
    ],
)
def test_a_signalled_job_is_recorded_interrupted(
    deploy: Deployment, tmp_path: Path, kind: str, point: str, args: tuple[str, ...]
) -> None:
    if kind == "prune":
        deploy.policy(retention={"hot": {"last": 1}}, tiering=None)
    deploy.desktop("alice")
    start = clock.now() - timedelta(hours=3)
    deploy.backup_at(start, "alice")
    deploy.backup_at(start + timedelta(hours=1), "alice")
    proc, go = _park(deploy, tmp_path, point, *args)
    proc.send_signal(signal.SIGTERM)
    _ends_interrupted(deploy, proc, go, signal.SIGTERM, f"the signalled {kind}")
    assert _jobs(deploy, kind)[-1][0] == "interrupted", _jobs(deploy, kind)
    assert_exit(deploy.cli("cleanup"), 0)
    again = deploy.cli(*args)
    assert again.code == 0, again.output
    assert _jobs(deploy, kind)[-1][0] == "ok", _jobs(deploy, kind)


def test_a_signalled_drill_is_interrupted_and_cleanup_removes_its_sandbox(deploy: Deployment, tmp_path: Path) -> None:
    deploy.desktop("alice")
    assert_exit(deploy.cli("backup", "alice"), 0)
    proc, go = _park(deploy, tmp_path, "mid-restore-volume", "drill", "alice")
    proc.send_signal(signal.SIGTERM)
    _ends_interrupted(deploy, proc, go, signal.SIGTERM, "the signalled drill")
    assert_exit(deploy.cli("cleanup"), 0)
    catalog = Catalog.open(deploy.root / "catalog.db")
    try:
        assert [r["status"] for r in catalog.query("SELECT status FROM drills")] == ["interrupted"]
    finally:
        catalog.close()
    assert not [c["name"] for c in deploy.world.containers() if c["name"].startswith("drill-")]
    assert not list((deploy.world.root / "pools" / "desktops" / "live").glob("drill-*"))


def test_run_once_signalled_mid_backup_is_interrupted(deploy: Deployment, tmp_path: Path) -> None:
    deploy.desktop("alice")
    proc, go = _park(deploy, tmp_path, "after-pending", "run", "--once")
    proc.send_signal(signal.SIGTERM)
    _ends_interrupted(deploy, proc, go, signal.SIGTERM, "the signalled run --once")
    r = deploy.cli("run", "--once")
    assert_exit(r, 0, "ran: backup standard exit 0")


def test_the_daemon_stops_after_its_work_on_sighup_and_at_once_on_a_second_signal(
    deploy: Deployment, tmp_path: Path
) -> None:
    deploy.desktop("alice")
    proc, go = _park(deploy, tmp_path, "after-pending", "run")
    proc.send_signal(signal.SIGHUP)
    proc.send_signal(signal.SIGTERM)
    _ends_interrupted(deploy, proc, go, signal.SIGTERM, "the daemon after two signals")
