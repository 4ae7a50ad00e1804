"""The wall clock steps forward while a run works (an NTP step, ``date -s``), for real processes.

The working run is a child parked inside its work (``DRSVC_FAULT=POINT:wait=PATH``); the
``cleanup`` / ``run --once`` that follows runs in this process with its wall clock (``time.time``
and ``drsvc.clock``) two hours ahead. The host's real clock is never set.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import pytest
from contractlib import assert_exit
from deployment import Deployment
from waits import finish, wait_for

from drsvc import clock, faults

STEP = 2 * 3600.0


@contextmanager
def stepped(deploy: Deployment, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    real = time.time
    with monkeypatch.context() as m, deploy.clock_at(clock.now() + timedelta(seconds=STEP)):
        m.setattr(time, "time", lambda: real() + STEP)
        yield


def test_cleanup_after_a_step_forward_leaves_a_live_restores_clone(
    deploy: Deployment, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    deploy.desktop("alice")
    assert_exit(deploy.cli("backup", "alice"), 0)
    go = tmp_path / "go"
    proc = deploy.spawn("restore", "alice", "--as", "alice-copy", **{faults.ENV: f"mid-restore-volume:wait={go}"})
    wait_for("the restore to be writing its clone", Path(f"{go}.reached").exists)
    with stepped(deploy, monkeypatch):
        dry = deploy.cli("--json", "cleanup", "--dry-run")
        assert_exit(dry, 0)
        assert dry.json()["undone"] == [], "cleanup would undo a live restore's clone"
        assert_exit(deploy.cli("cleanup"), 0)
    go.touch()
    code, out, err = finish(proc, "the restore")
    assert code == 0, out + err
    assert "alice-copy" in {c["name"] for c in deploy.world.containers()}
    assert_exit(deploy.cli("cleanup"), 0, "nothing left behind")


def test_run_once_after_a_step_forward_does_not_take_a_live_runs_work_lease(
    deploy: Deployment, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    deploy.desktop("alice")
    go = tmp_path / "go"
    proc = deploy.spawn("backup", "alice", **{faults.ENV: f"after-pending:wait={go}"})
    wait_for("the backup to hold the work lease", Path(f"{go}.reached").exists)
    with stepped(deploy, monkeypatch):
        r = deploy.cli("run", "--once")
        assert_exit(r, 0, "skipped: another drsvc run holds the 'work' lease")
    go.touch()
    code, out, err = finish(proc, "the backup")
    assert code == 0, out + err
    statuses = [p["status"] for p in deploy.cli("--json", "points", "list").json()]
    assert statuses == ["complete"], statuses
