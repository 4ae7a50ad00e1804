"""The few table helpers the catalog uses, on plain ``sqlite3`` (``catalog.db``).

drsvc used sqlite-utils for ``insert``/``upsert``/``update`` of a row given as a dict and ``query``
returning dicts. Importing sqlite-utils cost 80 ms (180 ms where numpy is installed, which it
imports when present) on every command, including each cron minute's ``run --once``; these helpers
keep the same calls (``db["points"].insert(row)``, ``db.query(sql)``) in a few lines.
Values that are dicts or lists are stored as JSON, datetimes and paths as text, as sqlite-utils did.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import date, datetime
from pathlib import PurePath
from typing import Any

from drsvc.errors import NotFound

__all__ = ["Database", "Table"]

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
Params = Sequence[Any] | Mapping[str, Any]


def _ident(name: str) -> str:
    """A table or column name, checked: only catalog code names them, never user input."""
    if not _NAME.match(name):
        raise ValueError(f"not a plain SQL identifier: {name!r}")
    return f'"{name}"'


def _value(value: Any) -> Any:
    if isinstance(value, Mapping | list | tuple):
        return json.dumps(value, default=str)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, PurePath):
        return str(value)
    return value


class Table:
    """One table: write a row given as a dict."""

    def __init__(self, db: Database, name: str) -> None:
        self.db, self.name = db, name

    def insert(self, row: Mapping[str, Any]) -> None:
        cols = list(row)
        self.db.execute(
            f"INSERT INTO {_ident(self.name)} ({', '.join(map(_ident, cols))}) VALUES ({', '.join('?' * len(cols))})",
            [_value(row[c]) for c in cols],
        )

    def upsert(self, row: Mapping[str, Any], pk: str | Sequence[str]) -> None:
        """Insert ``row``, or update the columns it names in the row with the same primary key."""
        keys = [pk] if isinstance(pk, str) else list(pk)
        cols = list(row)
        rest = [c for c in cols if c not in keys]
        sql = (
            f"INSERT INTO {_ident(self.name)} ({', '.join(map(_ident, cols))}) VALUES ({', '.join('?' * len(cols))}) "
            f"ON CONFLICT ({', '.join(map(_ident, keys))}) DO "
        )
        sql += "UPDATE SET " + ", ".join(f"{_ident(c)} = excluded.{_ident(c)}" for c in rest) if rest else "NOTHING"
        self.db.execute(sql, [_value(row[c]) for c in cols])

    def update(self, pk_value: Any, fields: Mapping[str, Any]) -> None:
        """Set ``fields`` on the row whose primary key is ``pk_value``; NotFound when there is none."""
        (pk,) = self.db.primary_key(self.name)
        if fields:
            sets = ", ".join(f"{_ident(c)} = ?" for c in fields)
            cursor = self.db.execute(
                f"UPDATE {_ident(self.name)} SET {sets} WHERE {_ident(pk)} = ?",
                [*(_value(v) for v in fields.values()), pk_value],
            )
            found = cursor.rowcount > 0
        else:
            found = bool(
                self.db.execute(f"SELECT 1 FROM {_ident(self.name)} WHERE {_ident(pk)} = ?", [pk_value]).fetchone()
            )
        if not found:
            raise NotFound(f"no row {pk_value!r} in catalog table {self.name}")


class Database:
    """A sqlite3 connection with dict rows on demand and ``db[table]`` writers."""

    def __init__(
        self, conn: sqlite3.Connection, on_error: Callable[[sqlite3.OperationalError], None] | None = None
    ) -> None:
        """``on_error`` sees every ``OperationalError`` first and may raise a clearer one instead."""
        self.conn = conn
        self._pks: dict[str, list[str]] = {}
        self._on_error = on_error

    def execute(self, sql: str, params: Params = ()) -> sqlite3.Cursor:
        try:
            return self.conn.execute(sql, params)
        except sqlite3.OperationalError as e:
            if self._on_error is not None:
                self._on_error(e)
            raise

    def query(self, sql: str, params: Params = ()) -> Iterator[dict[str, Any]]:
        cursor = self.execute(sql, params)
        names = [d[0] for d in cursor.description or ()]
        try:
            for row in cursor:
                yield dict(zip(names, row, strict=True))
        except sqlite3.OperationalError as e:
            if self._on_error is not None:
                self._on_error(e)
            raise

    def table_names(self) -> list[str]:
        return [r[0] for r in self.conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]

    def primary_key(self, table: str) -> list[str]:
        if table not in self._pks:
            info = self.conn.execute(f"PRAGMA table_info({_ident(table)})").fetchall()
            self._pks[table] = [r[1] for r in sorted(info, key=lambda r: r[5]) if r[5]]
        return self._pks[table]

    def __getitem__(self, table: str) -> Table:
        return Table(self, table)
