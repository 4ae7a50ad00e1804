"""The catalog: every desktop, recovery point, job, tier move, drill and lease, in SQLite.

Schema changes are ordered SQL files shipped in the package (``drsvc/data/migrations/NNN_name.sql``,
numbered without gaps), applied in order, each in its own transaction, recorded in
``schema_migrations`` and ``PRAGMA user_version``.
The connection runs in WAL mode with foreign keys on. Multi-row changes go through
``transaction()``. The catalog is a record, not the source of truth: every point can be rebuilt
from the manifests in the stores (``drsvc catalog rebuild``).
"""

from __future__ import annotations

import json
import os
import re
import socket
import sqlite3
import stat
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from drsvc import clock, data, hostfs
from drsvc.catalog_guard import CatalogDamaged, is_damage, needs_check, quick_check, write_stamp
from drsvc.errors import BackendError, NotFound
from drsvc.sqlite import Database

MIGRATIONS_DIR = data.path("migrations")
_MIGRATION_NAME = re.compile(r"^(\d{3})_([a-z0-9_]+)\.sql$")

POINT_STATUSES = ("pending", "complete", "failed", "expired")
_OPEN_TIMEOUT = 30.0  # seconds a statement waits for another process's lock before failing


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    path: Path


def migrations(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """The ordered migrations; gaps or duplicate numbers are a packaging bug."""
    found = []
    for path in sorted(directory.glob("*.sql")):
        m = _MIGRATION_NAME.match(path.name)
        if not m:
            raise BackendError(f"catalog migration with a bad name: {path}")
        found.append(Migration(int(m.group(1)), m.group(2), path))
    for expected, migration in enumerate(found, start=1):
        if migration.version != expected:
            raise BackendError(f"catalog migrations out of order at {migration.path.name}")
    return found


def _use_wal(conn: sqlite3.Connection, path: str, timeout: float = _OPEN_TIMEOUT) -> None:
    """``PRAGMA journal_mode = WAL``, waiting for other processes as every other statement does.

    Switching a catalog to WAL takes an exclusive lock, and while another process holds a write
    lock SQLite fails the switch at once, without its busy timeout (a shared lock cannot wait for an
    exclusive one without risking deadlock): two ``drsvc`` commands opening a new catalog together
    hit it. Once the file is in WAL mode the pragma is a no-op.
    """
    deadline = time.monotonic() + timeout
    delay = 0.005
    while True:
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) and "busy" not in str(e):
                raise hostfs.sqlite_error(path, e) or BackendError(f"cannot open catalog {path}: {e}") from None
            if time.monotonic() > deadline:
                raise BackendError(f"catalog {path} stayed locked by another process for {timeout:.0f} s") from None
        time.sleep(delay)
        delay = min(2 * delay, 0.25)


def _private(path: str) -> None:
    """Make the catalog and its WAL, shared-memory and journal files readable by their owner alone.

    The catalog names every desktop, tenant, volume and restore. SQLite creates the -wal, -shm and
    -journal files with the database file's permissions, so a database created 0600 (never widened
    by the umask) keeps them 0600; files an older drsvc created 0644 are narrowed at every open.
    """
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as e:
        # every command writes the catalog (leases, audit rows); a read-only /etc under systemd's
        # ProtectSystem=strict is the usual cause
        if e.errno in hostfs.SPACE:
            raise hostfs.full(path, e.strerror or str(e)) from None
        if e.errno in hostfs.READ_ONLY and hostfs.state(path) == "read-only":  # not ProtectSystem's
            raise hostfs.read_only(path) from None
        raise BackendError(
            f"cannot open catalog {path}: {e.strerror or e}; [catalog] path must name a file this user "
            "can write (under the systemd units: below /var/lib/drsvc)"
        ) from None
    os.close(fd)
    for suffix in ("", "-wal", "-shm", "-journal"):
        try:
            st = os.stat(path + suffix)
            if stat.S_ISREG(st.st_mode) and st.st_mode & 0o077:
                os.chmod(path + suffix, 0o600)
        except FileNotFoundError:
            continue
        except OSError as e:
            raise BackendError(
                f"catalog {path + suffix}: cannot make it private (chmod 600): {e.strerror or e}"
            ) from None


class Catalog:
    """A handle on the catalog database. Thread-safe for the short statements jobs issue."""

    def __init__(self, conn: sqlite3.Connection, path: str) -> None:
        self.path = path
        self.db = Database(conn, on_error=self._raise_host_fs)
        self._lock = threading.RLock()
        self.damaged: list[str] = []  # what the integrity check found at open; non-empty: read-only

    # ------------------------------------------------------------------ lifecycle
    @classmethod
    def open(cls, path: Path | str, *, migrate: bool = True, upto: int | None = None) -> Catalog:
        """Open (creating if needed) the catalog at ``path`` and bring its schema up to date.

        After an unclean end (or any change since the last clean close) the file's integrity is
        checked first (``drsvc.catalog_guard``): a damaged catalog opens read-only with
        ``damaged`` set and is not migrated; one SQLite cannot open at all raises ``CatalogDamaged``.
        """
        path = str(path)
        suspect = needs_check(path) and os.path.exists(path)
        if path != ":memory:" and not path.startswith("file:"):
            _private(path)
        try:
            conn = sqlite3.connect(path, timeout=_OPEN_TIMEOUT, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as e:
            raise hostfs.sqlite_error(path, e) or BackendError(f"cannot open catalog {path}: {e}") from None
        try:
            damaged = quick_check(conn) if suspect else []
            if damaged:
                conn.execute("PRAGMA query_only = ON")  # nothing may write into a damaged file
            conn.execute("PRAGMA foreign_keys = ON")
            if path != ":memory:" and not damaged:
                _use_wal(conn, path)
            conn.execute("PRAGMA synchronous = NORMAL")
        except sqlite3.DatabaseError as e:
            conn.close()
            if is_damage(e):
                raise CatalogDamaged(path, str(e)) from None
            raise hostfs.sqlite_error(path, e) or BackendError(f"cannot open catalog {path}: {e}") from None
        catalog = cls(conn, path)
        catalog.damaged = damaged
        if migrate and not damaged:
            catalog.migrate(upto=upto)
        return catalog

    def close(self) -> None:
        self.db.conn.close()
        if not self.damaged:
            write_stamp(self.path)  # a clean end: the next open need not check the file

    def mark_clean(self) -> None:
        """Everything is committed (a daemon between ticks): stamp the files as a clean close would."""
        if not self.damaged:
            write_stamp(self.path)

    def refuse_if_damaged(self) -> None:
        """Raise ``CatalogDamaged`` (exit 4, naming the file and the way back) if the catalog is damaged."""
        if self.damaged:
            raise CatalogDamaged(self.path, "; ".join(self.damaged[:3]))

    @property
    def schema_version(self) -> int:
        return int(self.db.execute("PRAGMA user_version").fetchone()[0])

    def migrate(self, *, upto: int | None = None) -> list[int]:
        """Apply pending migrations in order; returns the versions applied."""
        applied = []
        with self._lock:
            self.db.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations "
                "(version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)"
            )
            for migration in migrations():
                if upto is not None and migration.version > upto:
                    continue
                with self.transaction():
                    if migration.version <= self.schema_version:
                        continue  # applied already (maybe just now, by another process opening it too)
                    for statement in _split_sql(migration.path.read_text()):
                        self.db.execute(statement)
                    self.db.execute(
                        "INSERT INTO schema_migrations VALUES (?, ?, ?)",
                        [migration.version, migration.name, clock.to_iso(clock.now())],
                    )
                    self.db.execute(f"PRAGMA user_version = {migration.version}")
                applied.append(migration.version)
        return applied

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One atomic unit of change (nested calls join the outer transaction)."""
        with self._lock:
            conn = self.db.conn
            if conn.in_transaction:
                yield
                return
            self._write_step(conn, "BEGIN IMMEDIATE")
            try:
                yield
                self._write_step(conn, "COMMIT")  # fails on a full disk: rolled back below
            except BaseException:
                if conn.in_transaction:
                    with suppress(sqlite3.Error):  # a disk that failed the commit may fail this too
                        conn.execute("ROLLBACK")
                raise

    def _write_step(self, conn: sqlite3.Connection, statement: str) -> None:
        try:
            conn.execute(statement)
        except sqlite3.OperationalError as e:
            self._raise_host_fs(e)
            raise

    def _raise_host_fs(self, error: sqlite3.OperationalError) -> None:
        """A full or read-only file system under the catalog, as one clear error (``drsvc.hostfs``)."""
        translated = hostfs.sqlite_error(self.path, error)
        if translated is not None:
            raise translated from error

    def check(self) -> list[str]:
        """Integrity and foreign-key problems; empty when the catalog is sound."""
        try:
            problems = [row[0] for row in self.db.execute("PRAGMA integrity_check").fetchall() if row[0] != "ok"]
            for table, rowid, parent, _fk in self.db.execute("PRAGMA foreign_key_check").fetchall():
                problems.append(f"{table} row {rowid}: references a missing {parent} row")
        except sqlite3.DatabaseError as e:
            return [str(e)]
        return problems

    # ------------------------------------------------------------------ helpers
    def query(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.db.query(sql, params))

    def execute(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> sqlite3.Cursor:
        with self._lock:
            return self.db.execute(sql, params)

    # ------------------------------------------------------------------ desktops
    def upsert_desktop(self, desktop: dict[str, Any]) -> None:
        """Insert or refresh a desktop seen by discovery (``labels`` may be a dict)."""
        now = clock.to_iso(clock.now())
        row = dict(desktop)
        if isinstance(row.get("labels"), dict):
            row["labels"] = json.dumps(row["labels"], sort_keys=True)
        with self.transaction():
            existing = self.query("SELECT first_seen FROM desktops WHERE id = ?", [row["id"]])
            row["first_seen"] = existing[0]["first_seen"] if existing else now
            row["last_seen"] = now
            row["gone_since"] = None
            self.db["desktops"].upsert(row, pk="id")

    def mark_gone(self, present_ids: set[str], runtime_url: str) -> list[str]:
        """Desktops of ``runtime_url`` discovery no longer finds; their points are kept."""
        now = clock.to_iso(clock.now())
        rows = self.query("SELECT id FROM desktops WHERE runtime_url = ? AND gone_since IS NULL", [runtime_url])
        gone = [r["id"] for r in rows if r["id"] not in present_ids]
        with self.transaction():
            for desktop_id in gone:
                self.execute("UPDATE desktops SET gone_since = ? WHERE id = ?", [now, desktop_id])
        return gone

    def desktops(self) -> list[dict[str, Any]]:
        rows = self.query("SELECT * FROM desktops ORDER BY id")
        for row in rows:
            row["labels"] = json.loads(row["labels"])
        return rows

    def desktop(self, desktop_id: str) -> dict[str, Any]:
        rows = self.query("SELECT * FROM desktops WHERE id = ?", [desktop_id])
        if not rows:
            raise NotFound(f"unknown desktop {desktop_id!r} (drsvc desktops list shows the known ones)")
        rows[0]["labels"] = json.loads(rows[0]["labels"])
        return rows[0]

    # ------------------------------------------------------------------ points
    _POINT_SELECT = (
        "SELECT p.*, (SELECT group_concat(tier, ',') FROM "
        "(SELECT tier FROM point_tiers t WHERE t.point_id = p.id ORDER BY tier DESC)) AS tiers, "
        "(SELECT group_concat(site, ',') FROM "
        "(SELECT site FROM point_sites s WHERE s.point_id = p.id ORDER BY site)) AS sites "
        "FROM points p"
    )

    def points(
        self,
        desktop_id: str | None = None,
        *,
        status: str | None = None,
        policy: str | None = None,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        """Recovery points, newest first, each with ``tiers`` as a list (hot before cold) and ``sites``."""
        where, params = [], []
        if desktop_id is not None:
            where.append("p.desktop_id = ?")
            params.append(desktop_id)
        if status is not None:
            where.append("p.status = ?")
            params.append(status)
        if policy is not None:
            where.append("p.policy = ?")
            params.append(policy)
        sql = self._POINT_SELECT + (" WHERE " + " AND ".join(where) if where else "")
        sql += " ORDER BY p.taken_at DESC, p.id DESC"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return [_point_row(r) for r in self.query(sql, params)]

    def point(self, point_id: str) -> dict[str, Any]:
        rows = self.query(self._POINT_SELECT + " WHERE p.id = ?", [point_id])
        if not rows:
            rows = self.query(self._POINT_SELECT + " WHERE p.id LIKE ? ORDER BY p.id", [point_id + "%"])
            if len(rows) > 1:
                raise NotFound(f"point id prefix {point_id!r} is ambiguous ({len(rows)} points)")
        if not rows:
            raise NotFound(f"unknown recovery point {point_id!r}")
        return _point_row(rows[0])

    def add_point(self, point: dict[str, Any]) -> None:
        row = {"created_at": clock.to_iso(clock.now()), **point}
        with self._lock:
            self.db["points"].insert(row)

    def update_point(self, point_id: str, **fields: Any) -> None:
        if "status" in fields and fields["status"] not in POINT_STATUSES:
            raise ValueError(f"bad point status {fields['status']!r}")
        with self._lock:
            self.db["points"].update(point_id, fields)

    def set_tier(self, point_id: str, tier: str, store_url: str, **fields: Any) -> None:
        row = {
            "point_id": point_id,
            "tier": tier,
            "store_url": store_url,
            "added_at": clock.to_iso(clock.now()),
            **fields,
        }
        with self._lock:
            self.db["point_tiers"].upsert(row, pk=("point_id", "tier"))

    def drop_tier(self, point_id: str, tier: str) -> None:
        self.execute("DELETE FROM point_tiers WHERE point_id = ? AND tier = ?", [point_id, tier])

    def set_site(self, point_id: str, site: str, store_url: str, **fields: Any) -> None:
        """Record (or refresh) a point's copy at another site."""
        row = {"point_id": point_id, "site": site, "store_url": store_url, "added_at": clock.to_iso(clock.now())}
        row.update(fields)
        with self._lock:
            self.db["point_sites"].upsert(row, pk=("point_id", "site"))

    def drop_site(self, point_id: str, site: str) -> None:
        self.execute("DELETE FROM point_sites WHERE point_id = ? AND site = ?", [point_id, site])

    def expire_if_uncopied(self, point_id: str) -> None:
        """Mark a point expired once no tier and no site holds a copy of it any more."""
        point = self.point(point_id)
        if not point["tiers"] and not point["sites"]:
            self.update_point(point_id, status="expired")

    def add_artifact(self, artifact: dict[str, Any]) -> None:
        with self._lock:
            self.db["artifacts"].upsert(artifact, pk=("point_id", "kind", "name"))

    def artifacts(self, point_id: str) -> list[dict[str, Any]]:
        return self.query("SELECT * FROM artifacts WHERE point_id = ? ORDER BY kind, name", [point_id])

    # ------------------------------------------------------------------ jobs
    def start_job(
        self,
        kind: str,
        *,
        policy: str | None = None,
        token: int | None = None,
        detail: dict[str, Any] | None = None,
        owner: str | None = None,
    ) -> int:
        """Record a job ``running``; ``owner``: the owner lease (``drsvc.intents.Owner``) the run
        renews until it records its end, by which cleanup tells a killed run (``abandoned_runs``)."""
        with self._lock:
            cursor = self.execute(
                "INSERT INTO jobs (kind, policy, status, started_at, fencing_token, host, pid, detail, owner) "
                "VALUES (?, ?, 'running', ?, ?, ?, ?, ?, ?)",
                [
                    kind,
                    policy,
                    clock.to_iso(clock.now()),
                    token,
                    socket.gethostname(),
                    os.getpid(),
                    json.dumps(detail or {}),
                    owner,
                ],
            )
            return int(cursor.lastrowid or 0)

    def finish_job(
        self, job_id: int, status: str, *, error: str | None = None, detail: dict[str, Any] | None = None
    ) -> None:
        fields: dict[str, Any] = {"status": status, "finished_at": clock.to_iso(clock.now()), "error": error}
        if detail is not None:
            fields["detail"] = json.dumps(detail, default=str)
        with self._lock:
            self.db["jobs"].update(job_id, fields)

    @contextmanager
    def ends_job_if_raised(
        self, job_id: int, detail: Callable[[], dict[str, Any] | None] = lambda: None
    ) -> Iterator[None]:
        """Run the job's body; if it raises, record the job ``failed`` (``interrupted`` on Ctrl-C)
        with the error and ``detail()`` (what it did so far), then re-raise. A body that returns
        records its own end: only it knows whether that is ok, partial or failed."""
        try:
            yield
        except BaseException as e:
            status = "interrupted" if isinstance(e, KeyboardInterrupt) else "failed"
            self.finish_job(job_id, status, error=str(e) or type(e).__name__, detail=detail())
            raise

    # ------------------------------------------------------------------ leases
    def acquire_lease(
        self,
        name: str,
        holder: str,
        ttl: float,
        *,
        take_from: str | None = None,
        live: Callable[[str], bool] = lambda _holder: False,
    ) -> int | None:
        """Take the lease if it is free or expired; returns the new fencing token, else None.

        ``take_from`` takes it over from that holder even before it expires (the caller has
        established that the holder is dead). ``live(holder)``: the holder is known alive (a
        process on this host), so its lease is held whatever the wall clock says of its expiry.
        An expiry more than ``ttl`` ahead was written before the clock stepped back: it is bounded
        to ``ttl`` from now (a live holder's next renewal writes that anyway).

        The token grows with every acquisition, so work done under a lease that has since expired
        and been taken by someone else can be recognised (``lease_valid``) and refused.
        """
        now = time.time()
        with self.transaction():
            rows = self.query("SELECT holder, token, expires_at FROM leases WHERE name = ?", [name])
            if rows and rows[0]["holder"] not in (holder, take_from) and rows[0]["expires_at"] > 0:
                expires = rows[0]["expires_at"]
                if expires > now + ttl:
                    expires = now + ttl
                    self.execute("UPDATE leases SET expires_at = ? WHERE name = ?", [expires, name])
                if expires > now or live(rows[0]["holder"]):
                    return None
            token = (rows[0]["token"] if rows else 0) + 1
            self.execute(
                "INSERT INTO leases (name, holder, token, expires_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, token = excluded.token, "
                "expires_at = excluded.expires_at",
                [name, holder, token, now + ttl],
            )
            return token

    def renew_lease(self, name: str, token: int, ttl: float) -> bool:
        """Extend a lease still held with ``token``; False when it was lost (taken or released).

        Not "and not expired yet": while the token is ours nobody took it, so extending it is safe,
        and a wall clock stepped forward past the expiry must not cost a live run its lease."""
        with self.transaction():
            cursor = self.execute(
                "UPDATE leases SET expires_at = ? WHERE name = ? AND token = ? AND expires_at > 0",
                [time.time() + ttl, name, token],
            )
            return cursor.rowcount == 1

    def lease_valid(self, name: str, token: int, *, live: Callable[[str], bool] = lambda _holder: False) -> bool:
        """Whether ``token`` is the lease's current token, unexpired (or its holder known ``live``)."""
        rows = self.query("SELECT holder, token, expires_at FROM leases WHERE name = ?", [name])
        if not rows or rows[0]["token"] != token or rows[0]["expires_at"] <= 0:
            return False
        return bool(rows[0]["expires_at"] > time.time() or live(rows[0]["holder"]))

    def release_lease(self, name: str, token: int) -> None:
        self.execute("UPDATE leases SET expires_at = 0 WHERE name = ? AND token = ?", [name, token])


def _point_row(row: dict[str, Any]) -> dict[str, Any]:
    row["tiers"] = row["tiers"].split(",") if row.get("tiers") else []
    row["sites"] = row["sites"].split(",") if row.get("sites") else []
    return row


def _split_sql(script: str) -> list[str]:
    """Split a migration into statements (migrations hold no semicolons inside literals)."""
    lines = [line for line in script.splitlines() if not line.strip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]
