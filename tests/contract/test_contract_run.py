"""drsvc run [--once] [--dry-run]: exit 0, 6; concurrency, fencing and SIGTERM, for real.

Concurrency is decided by the code paths taken, not by timing: fault points (``drsvc.faults``,
``DRSVC_FAULT=POINT:wait=PATH``) park a process at a named moment while the test acts.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from contractlib import assert_exit, contract
from deployment import Deployment, slow_on
from waits import finish, wait_for

from drsvc import faults
from drsvc.catalog import Catalog


def _points(d: Deployment) -> dict[str, str]:
    return {p["desktop"]: p["status"] for p in d.cli("--json", "points", "list").json()}


@contract("run", 0)
def test_run_once_runs_the_due_window_once(deploy: Deployment) -> None:
    deploy.desktop("alice")
    deploy.desktop("bob")
    assert_exit(deploy.cli("desktops", "discover"), 0)  # the dry run counts what the catalog knows
    r = deploy.cli("run", "--dry-run")
    assert_exit(r, 0, "due: standard backup: window", "(never ran)", "2 desktop(s)")
    assert _points(deploy) == {}, "a dry run ran something"
    r = deploy.cli("run", "--once")
    assert_exit(r, 0, "ran: backup standard exit 0", "ran: prune")
    assert _points(deploy) == {"alice": "complete", "bob": "complete"}
    r = deploy.cli("run", "--once")
    assert_exit(r, 0, "nothing due")
    assert len(deploy.cli("--json", "points", "list").json()) == 2, "a window ran twice"


@contract("run", 6)
def test_run_once_with_one_desktop_failing_is_partial(deploy: Deployment) -> None:
    deploy.desktop("alice")
    deploy.desktop("bob")
    deploy.world.set_knobs("bob", read_error="OSD down")
    r = deploy.cli("--json", "run", "--once")
    assert_exit(r, 6)
    (backup,) = [x for x in r.json()["ran"] if x["purpose"] == "backup"]
    assert backup["exit_code"] == 6 and backup["summary"]["failed"] == 1


@contract("run", 6)
def test_run_once_gives_later_batches_their_points_past_a_desktop_slow_to_capture(
    deploy: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One desktop per batch: each batch freezes only once the one before it is stored. The first
    batch's desktop is slow to read (each object an hour, on its thread's own clock: ``slow_on``);
    past ``capture.deadline`` it fails, and the batches after it are frozen and stored."""
    slow_on(monkeypatch)
    deploy.policy(capture={"freeze_batch": 1, "deadline": "1h"})
    for name in ("a-mallory", "b-alice", "c-bob"):
        deploy.desktop(name)
    deploy.world.set_knobs("a-mallory", read_seconds=3600)
    r = deploy.cli("--json", "run", "--once")
    assert_exit(r, 6)
    (backup,) = [x for x in r.json()["ran"] if x["purpose"] == "backup"]
    assert backup["summary"]["failed"] == 1 and backup["summary"]["complete"] == 2, backup
    listed = deploy.cli("--json", "points", "list")
    assert listed.code == 0, listed.output
    rows = {p["desktop"]: p for p in listed.json()}
    assert rows["b-alice"]["status"] == rows["c-bob"]["status"] == "complete"
    assert rows["a-mallory"]["status"] == "failed" and "capture.deadline" in rows["a-mallory"]["reason"]


@contract("run", 0)
def test_two_run_once_started_together_one_works_one_is_refused(deploy: Deployment, tmp_path: Path) -> None:
    """Both start at once; the one holding the lease is parked inside its backup (fault point
    after-pending) until the other has finished. So the other ran *while* the first held the
    lease, and must have been refused -- two runs one after the other would instead both
    succeed, the second with "nothing due"."""
    deploy.desktop("alice")
    go, log = tmp_path / "go", tmp_path / "faults.log"
    env = {faults.ENV: f"after-pending:wait={go}", faults.LOG_ENV: str(log)}
    procs = [deploy.spawn("run", "--once", **env) for _ in range(2)]
    wait_for("one run to hold the lease and reach after-pending", Path(f"{go}.reached").exists)
    (parked,) = {pid for point, _, pid in faults.hits(log) if point == "after-pending"}
    winner = next(p for p in procs if p.pid == parked)
    loser = next(p for p in procs if p.pid != parked)
    code, out, err = finish(loser, "the refused run")
    assert winner.poll() is None, "the first run finished before the second was refused: not concurrent"
    assert code == 0 and "skipped: another drsvc run holds the 'work' lease" in out, out + err
    go.touch()
    code, out, err = finish(winner, "the working run")
    assert code == 0 and "ran: backup standard exit 0" in out, out + err
    assert [p for p in {pid for _, _, pid in faults.hits(log)}] == [parked], "the refused run reached a fault point"
    assert _points(deploy) == {"alice": "complete"}


@contract("backup", 1)
def test_a_fenced_backup_that_lost_its_lease_refuses_to_commit(deploy: Deployment, tmp_path: Path) -> None:
    """Parked just before the commit, the backup's lease expires and another run takes it (a
    newer fencing token); the backup must not write its manifest nor mark its point complete."""
    deploy.desktop("alice")
    go = tmp_path / "go"
    proc = deploy.spawn("backup", "alice", **{faults.ENV: f"before-manifest:wait={go}"})
    wait_for("the backup to reach before-manifest", Path(f"{go}.reached").exists)
    catalog = Catalog.open(deploy.root / "catalog.db")
    try:
        (old,) = catalog.query("SELECT token FROM leases WHERE name = 'work'")
        catalog.execute("UPDATE leases SET expires_at = 0 WHERE name = 'work'")  # it paused past its TTL
        newer = catalog.acquire_lease("work", "elsewhere:1", 60)
        assert newer == old["token"] + 1
    finally:
        catalog.close()
    go.touch()
    code, out, err = finish(proc, "the fenced backup")
    assert code == 1, out + err
    assert "lost the 'work' lease" in err
    assert _points(deploy) == {"alice": "failed"}
    assert not list((deploy.root / "hot").rglob("manifests/alice/*")), "a fenced job wrote its manifest"


@contract("run", 0)
def test_the_daemon_stops_cleanly_on_sigterm_mid_work(deploy: Deployment, tmp_path: Path) -> None:
    """SIGTERM while a backup is under way: the daemon finishes that work (the point completes,
    the lease is released) and exits 0, without starting another tick."""
    deploy.desktop("alice")
    go, log = tmp_path / "go", tmp_path / "faults.log"
    proc = deploy.spawn("run", **{faults.ENV: f"after-pending:wait={go}", faults.LOG_ENV: str(log)})
    wait_for("the daemon to be inside its first backup", Path(f"{go}.reached").exists)
    proc.send_signal(signal.SIGTERM)
    go.touch()
    code, out, err = finish(proc, "the daemon after SIGTERM")
    assert code == 0, out + err
    assert "drsvc scheduler running" in err
    assert _points(deploy) == {"alice": "complete"}, "the work under way was not finished"
    assert [p for p, _, _ in faults.hits(log)].count("after-pending") == 1, "it started more work after SIGTERM"
    catalog = Catalog.open(deploy.root / "catalog.db")
    try:
        assert catalog.acquire_lease("work", "next:1", 60) is not None, "the daemon left the lease held"
    finally:
        catalog.close()
