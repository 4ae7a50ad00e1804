"""The catalog: migrations, pragmas, points, leases with fencing tokens."""

from __future__ import annotations

import sqlite3
import threading
import time

import pytest
from waits import wait_for

from drsvc import clock
from drsvc.catalog import Catalog, migrations
from drsvc.errors import NotFound


@pytest.fixture
def catalog(tmp_path):
    cat = Catalog.open(tmp_path / "catalog.db")
    yield cat
    cat.close()


def _desktop(cat: Catalog, desktop_id: str = "desk-001") -> None:
    cat.upsert_desktop(
        {
            "id": desktop_id,
            "runtime_url": "podman:///run/p.sock",
            "container": desktop_id,
            "volume": f"rados://desktops/{desktop_id}",
            "tenant": "acme",
            "labels": {"tier": "x"},
        }
    )


def _point(cat: Catalog, point_id: str, taken_at: str, desktop_id: str = "desk-001", **extra) -> None:
    cat.add_point(
        {
            "id": point_id,
            "desktop_id": desktop_id,
            "taken_at": taken_at,
            "status": "complete",
            "consistency": "paired",
            **extra,
        }
    )


def test_new_catalog_is_at_latest_version_with_wal_and_foreign_keys(catalog):
    assert catalog.schema_version == len(migrations()) >= 2
    assert catalog.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert catalog.db.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    recorded = [r["version"] for r in catalog.query("SELECT version FROM schema_migrations ORDER BY version")]
    assert recorded == [m.version for m in migrations()]


def test_opening_waits_while_another_process_writes_a_new_catalog(tmp_path):
    # another drsvc command holds a write lock on a catalog not yet in WAL mode: SQLite refuses
    # the switch at once (no busy timeout), so opening must wait for the lock like any statement
    path = tmp_path / "catalog.db"
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("CREATE TABLE t (x)")
    other.execute("BEGIN IMMEDIATE")
    other.execute("INSERT INTO t VALUES (1)")
    release = threading.Timer(0.3, lambda: other.execute("COMMIT"))
    release.start()
    t = time.monotonic()
    catalog = Catalog.open(path)
    assert time.monotonic() - t >= 0.25
    assert catalog.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert catalog.db.execute("SELECT x FROM t").fetchall() == [(1,)]
    release.join()
    catalog.close()
    other.close()


def test_commands_opening_a_new_catalog_together_migrate_it_once(tmp_path):
    # cron starting several drsvc commands on a new host: every one opens (and migrates) at once
    for attempt in range(10):
        path = tmp_path / f"catalog-{attempt}.db"
        errors: list[BaseException] = []

        def open_it(path=path, errors=errors):
            try:
                Catalog.open(path).close()
            except BaseException as e:
                errors.append(e)

        threads = [threading.Thread(target=open_it) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors
        catalog = Catalog.open(path)
        versions = [r["version"] for r in catalog.query("SELECT version FROM schema_migrations ORDER BY version")]
        assert versions == [m.version for m in migrations()] and catalog.schema_version == versions[-1]
        catalog.close()


def test_catalog_created_by_migration_1_upgrades_to_latest_keeping_rows(tmp_path):
    path = tmp_path / "old.db"
    old = Catalog.open(path, upto=1)
    assert old.schema_version == 1
    assert "restores" not in old.db.table_names()
    _desktop(old)
    _point(old, "p1", "2026-01-01T00:00:00.000000Z")
    old.close()

    new = Catalog.open(path)
    assert new.schema_version == len(migrations())
    assert "restores" in new.db.table_names() and "schedule_state" in new.db.table_names()
    assert [p["id"] for p in new.points()] == ["p1"]
    assert new.migrate() == []  # idempotent
    assert new.check() == []


def test_foreign_keys_are_enforced(catalog):
    with pytest.raises(sqlite3.IntegrityError):
        _point(catalog, "orphan", "2026-01-01T00:00:00.000000Z", desktop_id="nobody")


def test_points_newest_first_with_tiers_hot_before_cold(catalog):
    _desktop(catalog)
    _point(catalog, "a", "2026-01-01T00:00:00.000000Z")
    _point(catalog, "b", "2026-01-02T00:00:00.000000Z")
    catalog.set_tier("a", "cold", "s3://b/p")
    catalog.set_tier("a", "hot", "rados://hot")
    points = catalog.points("desk-001")
    assert [p["id"] for p in points] == ["b", "a"]
    assert points[1]["tiers"] == ["hot", "cold"]
    assert points[0]["tiers"] == []
    assert catalog.point("a")["tiers"] == ["hot", "cold"]


def test_point_lookup_by_unique_prefix_and_not_found(catalog):
    _desktop(catalog)
    _point(catalog, "20260101T000000Z-aa", "2026-01-01T00:00:00.000000Z")
    _point(catalog, "20260101T000000Z-ab", "2026-01-01T00:00:00.000000Z")
    assert catalog.point("20260101T000000Z-aa")["id"] == "20260101T000000Z-aa"
    with pytest.raises(NotFound, match="ambiguous"):
        catalog.point("20260101T000000Z-a")
    with pytest.raises(NotFound):
        catalog.point("nope")
    with pytest.raises(NotFound) as e:
        catalog.desktop("ghost")
    assert e.value.exit_code == 3


def test_transaction_rolls_back_every_row(catalog):
    _desktop(catalog)
    with pytest.raises(RuntimeError), catalog.transaction():
        _point(catalog, "x", "2026-01-01T00:00:00.000000Z")
        raise RuntimeError("boom")
    assert catalog.points() == []


def test_lease_excludes_others_and_fencing_token_grows(catalog):
    t1 = catalog.acquire_lease("scheduler", "host:1", ttl=60)
    assert t1 == 1
    assert catalog.acquire_lease("scheduler", "host:2", ttl=60) is None
    assert catalog.renew_lease("scheduler", t1, ttl=60)
    catalog.release_lease("scheduler", t1)
    t2 = catalog.acquire_lease("scheduler", "host:2", ttl=60)
    assert t2 == 2
    assert not catalog.lease_valid("scheduler", t1)
    assert catalog.lease_valid("scheduler", t2)


def test_expired_lease_can_be_taken_and_old_holder_is_fenced(catalog):
    t1 = catalog.acquire_lease("scheduler", "host:1", ttl=0.05)
    wait_for("the 50 ms lease to expire", lambda: not catalog.lease_valid("scheduler", t1), timeout=10)
    t2 = catalog.acquire_lease("scheduler", "host:2", ttl=60)
    assert t2 is not None and t2 > t1
    assert not catalog.renew_lease("scheduler", t1, ttl=60)


def test_jobs_record_status_and_error(catalog):
    job = catalog.start_job("backup", policy="standard", token=7)
    catalog.finish_job(job, "failed", error="ceph down")
    row = catalog.query("SELECT * FROM jobs WHERE id = ?", [job])[0]
    assert (row["status"], row["error"], row["fencing_token"]) == ("failed", "ceph down", 7)
    assert row["finished_at"] >= row["started_at"]


def test_a_job_body_that_raises_ends_its_row_failed_or_interrupted_and_a_returning_one_does_not(catalog):
    failed = catalog.start_job("prune")
    with pytest.raises(RuntimeError), catalog.ends_job_if_raised(failed, lambda: {"dropped": 2}):
        raise RuntimeError("pool gone")
    interrupted = catalog.start_job("tier")
    with pytest.raises(KeyboardInterrupt), catalog.ends_job_if_raised(interrupted):
        raise KeyboardInterrupt
    returned = catalog.start_job("verify")
    with catalog.ends_job_if_raised(returned):
        pass
    rows = {r["id"]: r for r in catalog.query("SELECT id, status, error, detail FROM jobs")}
    assert (rows[failed]["status"], rows[failed]["error"]) == ("failed", "pool gone")
    assert '"dropped": 2' in rows[failed]["detail"]
    assert (rows[interrupted]["status"], rows[interrupted]["error"]) == ("interrupted", "KeyboardInterrupt")
    assert rows[returned]["status"] == "running"  # the body records its own end


def test_check_reports_dangling_foreign_keys(catalog):
    _desktop(catalog)
    _point(catalog, "p", "2026-01-01T00:00:00.000000Z")
    catalog.execute("PRAGMA foreign_keys = OFF")
    catalog.execute("DELETE FROM desktops")
    problems = catalog.check()
    assert any("points" in p and "desktops" in p for p in problems)


def test_clock_iso_round_trip_sorts_as_time():
    a = clock.from_iso("2026-03-29T00:59:59Z")
    b = clock.from_iso("2026-03-29T03:00:00+02:00")
    assert clock.to_iso(a) < clock.to_iso(b)
    assert clock.from_iso(clock.to_iso(b)) == b
