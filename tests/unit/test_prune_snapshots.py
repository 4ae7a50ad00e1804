"""Prune removes every unreferenced pool snapshot it can: one that fails is reported, not fatal.

One bad snapshot (Ceph refusing the removal, a timeout) used to end the loop, leaving every
snapshot after it for the next run and the run reporting nothing about the one that failed.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from deployment import Deployment
from fakes.desktops import FakePoolSnapshots

from drsvc import clock
from drsvc.errors import EXIT_OK, EXIT_PARTIAL, BackendError
from drsvc.prune import PruneJob


def _three_unreferenced(deploy: Deployment) -> list[str]:
    """Four backups of one desktop under ``hot: last 1``: the older three's pool snapshots go."""
    deploy.policy(retention={"hot": {"last": 1}}, tiering=None)
    deploy.desktop("alice")
    start = clock.now() - timedelta(hours=5)
    for h in range(4):
        deploy.backup_at(start + timedelta(hours=h), "alice")
    rows = deploy.services().catalog.query("SELECT name FROM pool_snapshots WHERE removed_at IS NULL ORDER BY id")
    names = [r["name"] for r in rows]
    assert len(names) == 4, names
    return names[:3]


def _failing_on(monkeypatch: pytest.MonkeyPatch, bad: str) -> list[str]:
    tried: list[str] = []
    real = FakePoolSnapshots.remove

    def remove(self: FakePoolSnapshots, name: str) -> None:
        tried.append(name)
        if name == bad:
            raise BackendError(f"ceph: removing pool snapshot {name}: timed out")
        real(self, name)

    monkeypatch.setattr(FakePoolSnapshots, "remove", remove)
    return tried


def _live(deploy: Deployment) -> set[str]:
    rows = deploy.services().catalog.query("SELECT name FROM pool_snapshots WHERE removed_at IS NULL")
    return {r["name"] for r in rows}


def test_one_failing_snapshot_removal_does_not_stop_the_others(
    deploy: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, bad, last = _three_unreferenced(deploy)
    tried = _failing_on(monkeypatch, bad)
    events: list[tuple[str, dict[str, Any]]] = []
    services = deploy.services()
    report = PruneJob(services, None, on_event=lambda kind, **f: events.append((kind, f))).run()
    assert tried == [first, bad, last], "every unreferenced snapshot is tried, in order"
    assert report.snapshots_removed == [first, last]
    assert bad in _live(deploy) and first not in _live(deploy) and last not in _live(deploy)
    (pool,) = {r["pool"] for r in services.catalog.query("SELECT pool FROM pool_snapshots")}
    in_pool = {s.name for s in services.snapshots(pool).list()}
    assert bad in in_pool and not {first, last} & in_pool, "the pool agrees with the catalog"
    assert report.exit_code == EXIT_PARTIAL
    assert len(report.problems) == 1 and bad in report.problems[0] and "timed out" in report.problems[0]
    assert report.document()["problems"] == report.problems
    failed = [f for kind, f in events if kind == "snapshot_remove_failed"]
    assert [f["name"] for f in failed] == [bad] and "timed out" in str(failed[0]["error"])
    assert [f["name"] for kind, f in events if kind == "snapshot_removed"] == [first, last]
    job = services.catalog.query("SELECT status FROM jobs WHERE kind = 'prune' ORDER BY id DESC LIMIT 1")
    assert job[0]["status"] == "partial"


def test_the_snapshot_left_behind_goes_on_the_next_run(deploy: Deployment, monkeypatch: pytest.MonkeyPatch) -> None:
    _first, bad, _last = _three_unreferenced(deploy)
    _failing_on(monkeypatch, bad)
    assert PruneJob(deploy.services(), None).run().exit_code == EXIT_PARTIAL
    monkeypatch.undo()
    again = PruneJob(deploy.services(), None).run()
    assert again.snapshots_removed == [bad] and again.problems == [] and again.exit_code == EXIT_OK


def test_a_prune_that_fails_says_so_in_its_job_row(deploy: Deployment, monkeypatch: pytest.MonkeyPatch) -> None:
    """An error past the snapshots (the hot store unreachable while collecting chunks) ends the
    run; its job row records the failure instead of staying 'running'."""
    _three_unreferenced(deploy)

    def unreachable(*_a: object, **_k: object) -> None:
        raise BackendError("rados: listing the hot store: timed out")

    monkeypatch.setattr(PruneJob, "collect_garbage", unreachable)
    services = deploy.services()
    with pytest.raises(BackendError, match="timed out"):
        PruneJob(services, None).run()
    [job] = services.catalog.query("SELECT status, error FROM jobs WHERE kind = 'prune'")
    assert job["status"] == "failed" and "timed out" in job["error"]
