"""A tier, copy, prune or verify killed -9 skips ``finish_job``: its ``jobs`` row stays ``running``.

Cleanup and the scheduler's tick end it once its owner lease (``jobs.owner``, renewed by the run)
is gone, as they end drills and site runs: whatever became of its pid (reused by an unrelated
process) and wherever it ran (a scheduler pod on another node). A row whose owner still renews
its lease may be running and is left. A row an older drsvc wrote (no owner) keeps the old rule:
ended when its pid is gone on this host.

The killed run is a real child ``drsvc prune`` SIGKILLed at a fault point (``DRSVC_FAULT``).
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

from deployment import Deployment

from drsvc import clock
from drsvc.catalog import Catalog
from drsvc.cleanup import leftover_lines


def _killed_prune(deploy: Deployment) -> dict[str, Any]:
    """A ``drsvc prune`` SIGKILLed after dropping a hot copy: its job row, left running."""
    deploy.policy(retention={"hot": {"last": 1}}, tiering=None)
    deploy.desktop("alice")
    start = clock.now() - timedelta(hours=4)
    for h in range(3):
        deploy.backup_at(start + timedelta(hours=h), "alice")
    killed = deploy.run_child("prune", DRSVC_FAULT="prune-after-drop:kill")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    [job] = deploy.services().catalog.query("SELECT id, host, pid, status FROM jobs WHERE kind = 'prune'")
    assert job["status"] == "running"
    return job


@contextmanager
def _unrelated_process() -> Iterator[int]:
    """A live process that is no drsvc (it waits on its stdin): the pid a killed run's may be reused as."""
    proc = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        yield proc.pid
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait()


def _move_owner_leases(catalog: Catalog, holder: str, to: str, *, expires_at: float | None = None) -> None:
    """The owner leases ``holder`` (``host:pid``, any start time) held now read ``to`` (a reused
    pid written by an older drsvc, a process elsewhere)."""
    catalog.execute(
        "UPDATE leases SET holder = ?, expires_at = COALESCE(?, expires_at) "
        "WHERE (holder = ? OR holder LIKE ? || '@%') AND name LIKE 'owner:%'",
        [to, expires_at, holder, holder],
    )


def _lapse(catalog: Catalog, holder: str) -> None:
    """The owner leases of ``holder`` lapse (no one renewed them for their lifetime)."""
    catalog.execute(
        "UPDATE leases SET expires_at = ? WHERE holder = ? AND name LIKE 'owner:%'", [time.time() - 1, holder]
    )


def _status(catalog: Catalog, job_id: int) -> str:
    return str(catalog.query("SELECT status FROM jobs WHERE id = ?", [job_id])[0]["status"])


def _job_lines(deploy: Deployment, job_id: int) -> list[str]:
    return [line for line in leftover_lines(deploy.services()) if f"job {job_id} " in line]


def test_a_killed_runs_row_is_ended_once_its_lease_lapsed_though_its_pid_was_reused(deploy: Deployment) -> None:
    job = _killed_prune(deploy)
    catalog = deploy.services().catalog
    with _unrelated_process() as reused:
        catalog.execute("UPDATE jobs SET pid = ? WHERE id = ?", [reused, job["id"]])
        _move_owner_leases(catalog, f"{job['host']}:{job['pid']}", f"{job['host']}:{reused}")
        # its lease has not lapsed and its pid lives: nothing says it is not running
        assert deploy.cli("cleanup").code == 0
        assert _status(catalog, job["id"]) == "running"
        assert _job_lines(deploy, job["id"]) == []
        _lapse(catalog, f"{job['host']}:{reused}")
        assert _job_lines(deploy, job["id"]) == [
            f"leftover: job {job['id']} is recorded running but its process is gone"
        ]
        dry = deploy.cli("--json", "cleanup", "--dry-run")
        assert dry.code == 0 and dry.json()["interrupted_jobs"] == [job["id"]], dry.output
        assert _status(catalog, job["id"]) == "running", "a dry run changed the row"
        r = deploy.cli("cleanup")
        assert r.code == 0 and f"marked interrupted: job {job['id']} (its process is gone)" in r.stdout, r.output
    [row] = catalog.query("SELECT status, finished_at, error FROM jobs WHERE id = ?", [job["id"]])
    assert row["status"] == "interrupted" and row["finished_at"] and "interrupted" in row["error"]
    assert deploy.cli("catalog", "check").code == 0
    assert deploy.cli("--json", "cleanup").json()["interrupted_jobs"] == []


def test_a_row_whose_owner_lives_on_another_host_is_left_until_its_lease_lapses(deploy: Deployment) -> None:
    """A scheduler pod on another node renews its owner lease: its row is not ended; once the
    lease lapses (the pod died) the next scheduler tick ends it, though no pid here says so."""
    job = _killed_prune(deploy)
    catalog = deploy.services().catalog
    elsewhere = "another-node:4242"
    catalog.execute("UPDATE jobs SET host = 'another-node', pid = 4242 WHERE id = ?", [job["id"]])
    _move_owner_leases(catalog, f"{job['host']}:{job['pid']}", elsewhere, expires_at=time.time() + 600)
    assert deploy.cli("cleanup").code == 0  # what the killed prune left in the pool goes; its row stays
    assert _status(catalog, job["id"]) == "running"
    assert _job_lines(deploy, job["id"]) == []
    assert deploy.cli("--json", "cleanup", "--dry-run").json()["interrupted_jobs"] == []
    _lapse(catalog, elsewhere)
    assert len(_job_lines(deploy, job["id"])) == 1
    r = deploy.cli("run", "--once")  # the scheduler's tick: the row is the only thing left behind
    assert r.code == 0, r.output
    assert _status(catalog, job["id"]) == "interrupted"
    assert _job_lines(deploy, job["id"]) == []


def test_a_row_an_older_drsvc_wrote_without_an_owner_keeps_the_pid_rule(deploy: Deployment) -> None:
    """Upgraded mid-run: a row with no owner is ended when its pid is gone on this host, and left
    while that pid lives (it may be the run) or when it is another host's."""
    job = _killed_prune(deploy)
    catalog = deploy.services().catalog
    catalog.execute("UPDATE jobs SET owner = NULL WHERE id = ?", [job["id"]])
    with _unrelated_process() as reused:
        catalog.execute("UPDATE jobs SET pid = ? WHERE id = ?", [reused, job["id"]])
        assert deploy.cli("cleanup").code == 0
        assert _status(catalog, job["id"]) == "running"
    catalog.execute("UPDATE jobs SET pid = ? WHERE id = ?", [job["pid"], job["id"]])
    assert _job_lines(deploy, job["id"]) == [f"leftover: job {job['id']} is recorded running but its process is gone"]
    assert deploy.cli("--json", "cleanup").json()["interrupted_jobs"] == [job["id"]]
    assert _status(catalog, job["id"]) == "interrupted"


def test_every_job_row_a_run_starts_names_an_owner_it_held(deploy: Deployment) -> None:
    """backup, tier, prune and verify (by hand and from the scheduler's tick) record their owner."""
    deploy.desktop("alice")
    deploy.backup_at(clock.now() - timedelta(hours=3), "alice")
    for args in (("tier",), ("prune",), ("verify", "--all"), ("run", "--once")):
        r = deploy.cli(*args)
        assert r.code == 0, r.output
    rows = deploy.services().catalog.query("SELECT kind, status, owner FROM jobs ORDER BY id")
    assert {r["kind"] for r in rows} >= {"backup", "tier", "prune", "verify"}
    assert all(r["status"] != "running" for r in rows), rows
    assert all(r["owner"] and r["owner"].startswith("owner:") for r in rows), rows
    assert len({r["owner"] for r in rows}) == len(rows), "one owner per run"
