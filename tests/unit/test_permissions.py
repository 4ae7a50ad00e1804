"""The catalog names every desktop, tenant, volume and restore: it and its WAL files are the owner's alone."""

from __future__ import annotations

import os
import sqlite3
import stat
from pathlib import Path

from drsvc.catalog import Catalog


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_a_new_catalog_and_its_wal_files_are_0600(tmp_path: Path) -> None:
    old = os.umask(0o022)  # a typical umask would make them 0644
    try:
        db = tmp_path / "catalog.db"
        catalog = Catalog.open(db)
        catalog.execute("INSERT INTO schedule_state (policy, purpose, last_run_at) VALUES ('p', 'backup', 'now')")
        files = [db, tmp_path / "catalog.db-wal", tmp_path / "catalog.db-shm"]
        assert all(f.exists() for f in files)
        assert [mode(f) for f in files] == [0o600, 0o600, 0o600]
        catalog.close()
    finally:
        os.umask(old)


def test_an_older_world_readable_catalog_is_narrowed_at_open(tmp_path: Path) -> None:
    db = tmp_path / "catalog.db"
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("CREATE TABLE t (x)")
    for f in (db, tmp_path / "catalog.db-wal", tmp_path / "catalog.db-shm"):
        f.touch()
        os.chmod(f, 0o644)
    Catalog.open(db).close()
    conn.close()
    assert mode(db) == 0o600
    for suffix in ("-wal", "-shm"):
        f = tmp_path / f"catalog.db{suffix}"
        assert not f.exists() or mode(f) == 0o600
