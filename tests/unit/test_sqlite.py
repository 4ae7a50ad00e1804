"""drsvc/sqlite.py: the catalog's row helpers behave as the sqlite-utils calls they replace."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime

import pytest

from drsvc.errors import NotFound
from drsvc.sqlite import Database


@pytest.fixture
def db() -> Database:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    conn.execute("CREATE TABLE t (id TEXT PRIMARY KEY, a INTEGER, b TEXT, c TEXT)")
    conn.execute("CREATE TABLE pair (x TEXT, y TEXT, v INTEGER, PRIMARY KEY (x, y))")
    return Database(conn)


def test_insert_query_and_json_values(db) -> None:
    db["t"].insert({"id": "1", "a": 5, "b": {"k": [1, 2]}, "c": datetime(2026, 1, 2, tzinfo=UTC)})
    assert list(db.query("SELECT * FROM t")) == [
        {"id": "1", "a": 5, "b": '{"k": [1, 2]}', "c": "2026-01-02T00:00:00+00:00"}
    ]
    assert db.table_names() == ["pair", "t"]


def test_upsert_updates_only_the_named_columns(db) -> None:
    db["t"].insert({"id": "1", "a": 5, "b": "keep"})
    db["t"].upsert({"id": "1", "a": 6}, pk="id")
    db["t"].upsert({"id": "2", "a": 7}, pk="id")
    assert list(db.query("SELECT id, a, b FROM t ORDER BY id")) == [
        {"id": "1", "a": 6, "b": "keep"},
        {"id": "2", "a": 7, "b": None},
    ]
    db["pair"].upsert({"x": "a", "y": "b", "v": 1}, pk=("x", "y"))
    db["pair"].upsert({"x": "a", "y": "b", "v": 2}, pk=("x", "y"))
    db["pair"].upsert({"x": "a", "y": "b"}, pk=("x", "y"))  # nothing to update: kept
    assert list(db.query("SELECT * FROM pair")) == [{"x": "a", "y": "b", "v": 2}]


def test_update_by_primary_key_and_missing_rows(db) -> None:
    db["t"].insert({"id": "1", "a": 5})
    db["t"].update("1", {"a": 9, "b": ["x"]})
    assert list(db.query("SELECT a, b FROM t")) == [{"a": 9, "b": '["x"]'}]
    with pytest.raises(NotFound, match="no row 'nope' in catalog table t"):
        db["t"].update("nope", {"a": 1})
    with pytest.raises(ValueError, match="identifier"):
        db["t; DROP TABLE t"].insert({"id": "x"})
