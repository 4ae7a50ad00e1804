"""The catalog protects itself: damage found before any write, copies in the stores, restore and rebuild.

ColdKit (file:// hot store, moto cold store) with a few points; the catalog file is damaged the
ways the fault suite damages it (truncated, one page overwritten).
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from coldkit import ColdKit, aws  # noqa: F401  (aws: the fixture)
from faultkit import overwrite_page, truncate

from drsvc import catalog_copy, catalog_guard, clock
from drsvc.catalog import Catalog
from drsvc.catalog_copy import copy_ids, push, stores_of
from drsvc.errors import EXIT_INTEGRITY


@pytest.fixture
def kit(tmp_path: Path, aws: None) -> Iterator[ColdKit]:  # noqa: F811
    kit = ColdKit(tmp_path)
    kit.policy("std", ["alice", "bob"])
    kit.ids = [
        kit.point(d, clock.now() - timedelta(hours=h), f"{d}{h}".encode() * 5000, policy="std")
        for d in ("alice", "bob")
        for h in range(1, 13)
    ]
    kit.catalog.close()  # a clean end
    yield kit


def cli(kit: ColdKit, run_cli: Any, *args: str) -> Any:
    return run_cli("--config", str(kit.root / "drsvc.toml"), *args)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def assert_refused(result: Any, db: Path) -> None:
    assert result.code == EXIT_INTEGRITY, result.output
    assert "Traceback" not in result.stderr, result.output
    [line] = result.stderr.strip().splitlines()
    assert str(db) in line and "drsvc catalog rebuild" in line and "drsvc catalog restore" in line, line


@pytest.mark.parametrize("damage", ["truncated", "page overwritten"])
def test_a_damaged_catalog_is_refused_with_one_line_and_nothing_writes_into_it(
    kit: ColdKit, run_cli: Any, damage: str
) -> None:
    db = kit.root / "catalog.db"
    if damage == "truncated":
        truncate(db, 3000)
    else:
        overwrite_page(db, page=3)
    before = digest(db)
    for args in (("points", "list"), ("prune",), ("tier",), ("cleanup",), ("run", "--once")):
        assert_refused(cli(kit, run_cli, *args), db)
    check = cli(kit, run_cli, "catalog", "check")
    assert_refused(check, db)
    assert digest(db) == before, "a command wrote into the damaged catalog"


def test_an_unclean_end_makes_the_next_open_check_the_file(kit: ColdKit, monkeypatch: pytest.MonkeyPatch) -> None:
    db = str(kit.root / "catalog.db")
    checked: list[str] = []
    real = catalog_guard.quick_check
    monkeypatch.setattr("drsvc.catalog.quick_check", lambda conn: checked.append(db) or real(conn))
    Catalog.open(db).close()
    assert checked == [], "a clean close must not cost a check at the next open"
    writer = Catalog.open(db)
    writer.execute("INSERT INTO jobs (kind, status, started_at) VALUES ('backup', 'running', 'x')")
    # killed: never closed. The next process checks the file first.
    Catalog.open(db).close()
    assert checked == [db]
    writer.db.conn.close()


def test_every_run_copies_the_catalog_once_and_restore_brings_it_back(kit: ColdKit, run_cli: Any) -> None:
    db = kit.root / "catalog.db"
    assert cli(kit, run_cli, "tier").code == 0  # a run that changed the catalog (and used the cold store)
    services = kit.fresh_services()
    hot_copies, cold_copies = copy_ids(services.hot), copy_ids(services.cold)
    assert len(hot_copies) == 1 and cold_copies == hot_copies
    assert cli(kit, run_cli, "points", "list").code == 0  # nothing changed: no new copy
    assert copy_ids(services.hot) == hot_copies
    before = {p["id"]: (p["status"], tuple(p["tiers"])) for p in services.catalog.points()}
    later = kit.point("alice", clock.now(), b"after the copy" * 1000, policy="std")  # not in the copy
    services.catalog.close()

    overwrite_page(db, page=3)
    restored = cli(kit, run_cli, "--json", "catalog", "restore")
    assert restored.code == 0, restored.output
    doc = restored.json()
    assert doc["copy"]["copy_id"] == hot_copies[0] and doc["moved_aside"]
    assert Path(doc["moved_aside"]).exists()  # the damaged file is kept as evidence
    assert doc["caught_up"]["points_added"] == [later]
    catalog = Catalog.open(db)
    try:
        after = {p["id"]: (p["status"], tuple(p["tiers"])) for p in catalog.points()}
        assert catalog.check() == []
    finally:
        catalog.close()
    assert {k: v for k, v in after.items() if k != later} == before
    assert cli(kit, run_cli, "points", "list").code == 0


def test_restore_refuses_to_replace_a_sound_catalog_and_rebuild_replaces_a_damaged_one(
    kit: ColdKit, run_cli: Any
) -> None:
    db = kit.root / "catalog.db"
    services = kit.fresh_services()
    assert push(services.catalog, stores_of(services)) == {
        "hot": copy_ids(services.hot)[0],
        "cold": copy_ids(services.cold)[0],
    }
    services.catalog.close()
    refused = cli(kit, run_cli, "catalog", "restore")
    assert refused.code == 2 and "is sound" in refused.stderr, refused.output

    truncate(db, 100)
    rebuilt = cli(kit, run_cli, "catalog", "rebuild")
    assert rebuilt.code == 0, rebuilt.output
    assert "moved to" in rebuilt.stderr
    catalog = Catalog.open(db)
    try:
        assert {p["id"] for p in catalog.points(status="complete")} == set(kit.ids)
    finally:
        catalog.close()


def test_a_copy_that_fails_its_check_is_skipped_for_an_older_one(kit: ColdKit, run_cli: Any) -> None:
    services = kit.fresh_services()
    first = push(services.catalog, stores_of(services))["hot"]
    services.catalog.execute("INSERT INTO jobs (kind, status, started_at) VALUES ('verify', 'ok', 'x')")
    second = push(services.catalog, stores_of(services))["hot"]
    assert second != first
    store = services.hot.store
    key = f"catalog-copies/{second}/part-0000"
    blob = bytearray(store.get(key))
    blob[-1] ^= 1
    store.put(key, bytes(blob))
    services.catalog.close()
    truncate(kit.root / "catalog.db", 100)
    restored = cli(kit, run_cli, "--json", "catalog", "restore", "--from", "hot", "--no-catch-up")
    assert restored.code == 0, restored.output
    assert restored.json()["copy"]["copy_id"] == first
    assert second in restored.json()["skipped"][0]


def test_copies_made_within_one_second_sort_in_the_order_they_were_made(kit: ColdKit) -> None:
    """The newest copy is the one restore takes and the oldest the one pruning drops: the order of
    the ids must be the order of the pushes, also within one second (a random suffix is not)."""
    services = kit.fresh_services()
    made = []
    for n in range(6):
        services.catalog.execute("INSERT INTO jobs (kind, status, started_at) VALUES ('verify', 'ok', ?)", [str(n)])
        made.append(push(services.catalog, stores_of(services))["hot"])
    kept = copy_ids(services.hot)  # pruning keeps the newest few
    assert len(kept) >= 2 and kept == made[-len(kept) :]
    services.catalog.close()


def test_a_tick_alone_is_no_reason_for_a_new_copy(kit: ColdKit) -> None:
    """`drsvc run --once` from cron records a tick every minute; a copy each minute would upload the
    whole catalog to both stores for nothing."""
    from drsvc.scheduler import record_tick

    services = kit.fresh_services()
    before = catalog_guard.fingerprint(services.catalog)
    record_tick(services.catalog, clock.now())
    assert catalog_guard.fingerprint(services.catalog) == before
    services.catalog.execute("INSERT INTO jobs (kind, status, started_at) VALUES ('verify', 'ok', 'x')")
    assert catalog_guard.fingerprint(services.catalog) != before
    services.catalog.close()


def test_a_bad_page_read_mid_command_is_one_line(kit: ColdKit, run_cli: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    def malformed(*_a: Any, **_k: Any) -> Any:
        raise sqlite3.DatabaseError("database disk image is malformed")

    monkeypatch.setattr(Catalog, "points", malformed)
    result = cli(kit, run_cli, "points", "list")
    assert result.code == EXIT_INTEGRITY and "Traceback" not in result.stderr, result.output
    assert "drsvc catalog restore" in result.stderr


def _count_lists(monkeypatch: pytest.MonkeyPatch, store: Any) -> list[str]:
    listed: list[str] = []
    real = store.list

    def counting(prefix: str = "") -> Any:
        listed.append(prefix)
        return real(prefix)

    monkeypatch.setattr(store, "list", counting)
    return listed


def _change(services: Any, n: int) -> None:
    services.catalog.execute("INSERT INTO jobs (kind, status, started_at) VALUES ('verify', 'ok', ?)", [f"x{n}"])


def test_a_copy_prunes_the_copies_it_made_without_listing_the_store(
    kit: ColdKit, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every run pushes a copy; a RADOS hot store lists a prefix by scanning its whole pool. The first
    push lists (once); later ones prune what they remember making, and list only every LIST_EVERY-th."""
    services = kit.fresh_services()
    listed = _count_lists(monkeypatch, services.hot.store)
    made = [push(services.catalog, [("hot", services.hot)])["hot"]]
    assert len(listed) == 1, listed
    for n in range(catalog_copy.LIST_EVERY - 1):
        _change(services, n)
        made.append(push(services.catalog, [("hot", services.hot)])["hot"])
    assert len(listed) == 1, listed  # nothing listed since the first push
    assert copy_ids(services.hot) == made[-catalog_copy.KEEP :]
    assert not [k for k in services.hot.store.list(catalog_copy.PREFIX) if k.split("/")[1] not in made[-3:]]
    listed.clear()
    _change(services, 99)
    push(services.catalog, [("hot", services.hot)])
    assert len(listed) == 1, listed  # the LIST_EVERY-th push lists the store again
    services.catalog.close()


def test_the_listing_push_removes_what_a_killed_push_or_another_catalog_left(kit: ColdKit) -> None:
    services = kit.fresh_services()
    push(services.catalog, [("hot", services.hot)])
    # a complete copy another catalog made (older than ours), and a part a killed push left
    stray = "20000101T000000Z-000000abcdef"
    catalog_copy.write_copy(services.hot, stray, b"old", {"created_at": "2000", "size": 3})
    services.hot.store.put(f"{catalog_copy.PREFIX}20000101T000001Z-000000fedcba/part-0000", b"x")
    for n in range(catalog_copy.LIST_EVERY):
        _change(services, n)
        push(services.catalog, [("hot", services.hot)])
    assert not [k for k in services.hot.store.list(catalog_copy.PREFIX) if "/20000101" in f"/{k.split('/')[1]}"]
    assert len(copy_ids(services.hot)) == catalog_copy.KEEP
    services.catalog.close()


@pytest.mark.parametrize("made", ["x:y", "../../chunks/ab:1", "a:99999999", ""])
def test_a_damaged_copy_state_only_makes_the_push_list_the_store(kit: ColdKit, made: str) -> None:
    services = kit.fresh_services()
    push(services.catalog, [("hot", services.hot)])
    state = catalog_guard.copy_state(services.catalog.path)
    state.update({"hot:made": made, "hot:pushes": "3" if made else "z"})
    catalog_guard.write_copy_state(services.catalog.path, state)
    _change(services, 1)
    result = push(services.catalog, [("hot", services.hot)])
    assert not result["hot"].startswith("error"), result
    assert copy_ids(services.hot)[-1] == result["hot"]
    assert list(services.hot.store.list("chunks/"))  # nothing outside the copies was touched
    services.catalog.close()


def test_the_hot_and_cold_copies_are_written_at_once(kit: ColdKit, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each store's first write waits until the other store is written to as well: only pushes made
    at once get past it (one after the other, the barrier breaks and the push is reported failed)."""
    import threading

    services = kit.fresh_services()
    both = threading.Barrier(2, timeout=10)
    met: list[str] = []
    for label, store in stores_of(services):
        real = store.store.put

        def put(key: str, data: bytes, *a: Any, _real: Any = real, _label: str = label, **k: Any) -> Any:
            if _label not in met:
                met.append(_label)
                both.wait()
            return _real(key, data, *a, **k)

        monkeypatch.setattr(store.store, "put", put)
    both_stores = stores_of(services)
    assert [label for label, _ in both_stores] == ["hot", "cold"]
    results = push(services.catalog, both_stores)
    assert results["hot"] == results["cold"] and not results["hot"].startswith("error"), results
    assert not both.broken
    services.catalog.close()


def test_a_deleted_catalog_comes_back_whole_whatever_ran_first(kit: ColdKit, run_cli: Any) -> None:
    # runbook catalog-lost, followed literally: the file is gone, the operator looks first
    # (`points list`, `verify --all`, `catalog check`: each creates a new, empty catalog), then
    # `catalog restore`. The empty catalog wrote no copy to the stores (it stood newest and was
    # what came back, 0 points, the history lost), and it is replaced without --force.
    db = kit.root / "catalog.db"
    assert cli(kit, run_cli, "tier").code == 0
    services = kit.fresh_services()
    copies = copy_ids(services.hot)
    jobs = services.catalog.query("SELECT COUNT(*) AS n FROM jobs")[0]["n"]
    services.catalog.close()
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    for args in (("points", "list"), ("verify", "--all"), ("catalog", "check")):
        cli(kit, run_cli, *args)
    assert copy_ids(kit.fresh_services().hot) == copies, "no copy of the empty catalog"
    kit.services.catalog.close()
    restored = cli(kit, run_cli, "--json", "catalog", "restore")
    assert restored.code == 0, restored.output
    assert restored.json()["copy"]["copy_id"] == copies[0]
    catalog = Catalog.open(db)
    try:
        assert {p["id"] for p in catalog.points()} >= set(kit.ids)
        assert catalog.query("SELECT COUNT(*) AS n FROM jobs")[0]["n"] >= jobs, "the history came back"
    finally:
        catalog.close()
