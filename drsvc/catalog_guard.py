"""The catalog protects itself: a damaged catalog is found before anything is written into it.

SQLite in WAL mode survives a killed process; what it cannot survive is a file damaged from
outside (a truncated copy, a disk error, a page overwritten). Checking the whole file at every
start costs time on a large catalog, so the check runs when there is a reason to suspect damage:

* every clean close writes a **stamp** beside the catalog (``<catalog>.clean``: the size and
  modification time of the database and its WAL file);
* an open that finds no stamp, or a file that differs from it (a process ended without closing
  it, or something else wrote to it), runs ``PRAGMA quick_check`` first;
* a file SQLite cannot even open ("file is not a database") is damaged too.

A damaged catalog is opened read-only (``PRAGMA query_only``) and every command except
``drsvc catalog check | export | restore | rebuild`` refuses to run with one line naming the file
and the way back (exit 4). ``quarantine`` moves a damaged file aside (never deleted: it is
evidence) so that ``catalog restore`` or ``rebuild`` can put a sound one in its place.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sqlite3
import time
from pathlib import Path
from typing import Any

from drsvc.errors import IntegrityError

STAMP_SUFFIX = ".clean"
_DAMAGE_WORDS = ("malformed", "not a database", "corrupt", "disk image", "file is encrypted")


class CatalogDamaged(IntegrityError):
    """The catalog file is damaged: nothing is written into it; restore or rebuild it."""

    def __init__(self, path: str, why: str) -> None:
        self.path = path
        self.why = why
        super().__init__(
            f"catalog {path} is damaged ({why}); nothing was written to it. Bring it back with "
            "`drsvc catalog restore` (its latest copy in the stores) or `drsvc catalog rebuild` "
            "(from the manifests; the damaged file is kept aside)"
        )


def is_damage(error: sqlite3.Error) -> bool:
    """Whether an SQLite error means a damaged file (not a busy lock or a bug in a statement)."""
    text = str(error).lower()
    return isinstance(error, sqlite3.DatabaseError) and any(w in text for w in _DAMAGE_WORDS)


def _files(path: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, p in (("db", path), ("wal", f"{path}-wal")):
        try:
            st = os.stat(p)
        except FileNotFoundError:
            out[name] = None
            continue
        out[name] = [st.st_size, st.st_mtime_ns]
    return out


def write_stamp(path: str) -> None:
    """After a clean close: remember what the files look like (best effort, never fails a command)."""
    if path == ":memory:":
        return
    stamp = Path(path + STAMP_SUFFIX)
    tmp = stamp.with_name(f".{stamp.name}.{os.getpid()}")
    with contextlib.suppress(OSError):
        tmp.write_text(json.dumps(_files(path)))
        os.chmod(tmp, 0o600)
        os.replace(tmp, stamp)


def needs_check(path: str) -> bool:
    """True when the files differ from the last clean close's stamp (or there is none)."""
    if path == ":memory:":
        return False
    try:
        stamp = json.loads(Path(path + STAMP_SUFFIX).read_text())
    except (OSError, ValueError):
        return True
    return bool(stamp != _files(path))


def quick_check(conn: sqlite3.Connection) -> list[str]:
    """``PRAGMA quick_check``'s problems (empty when sound); a damaged file's error is a problem."""
    try:
        rows = conn.execute("PRAGMA quick_check").fetchall()
    except sqlite3.DatabaseError as e:
        return [str(e)]
    return [str(r[0]) for r in rows if r[0] != "ok"]


# ---------------------------------------------------------------------- when a copy is due
# (here, not in catalog_copy: a cron minute with nothing to copy must not import the chunk store)
EPHEMERAL = ("leases",)
# rows that change without changing what a copy is for (a cron tick every minute)
NOT_A_CHANGE = (*EPHEMERAL, "scheduler_ticks", "tier_lag", "store_params")
COPIES_SUFFIX = ".copies"


def fingerprint(catalog: Any) -> str:
    """Changes whenever a run changed the catalog: rows added anywhere, a job, restore or intent
    finished (every change to existing points happens inside a job). Cheap: counts and maxima."""
    import hashlib

    facts: list[Any] = []
    tables = [
        r["name"]
        for r in catalog.query("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")
        if r["name"] not in NOT_A_CHANGE
    ]
    for table in sorted(tables):
        facts.append(catalog.query(f'SELECT count(*) AS n, max(rowid) AS m FROM "{table}"')[0])
    for sql in (
        "SELECT max(finished_at) AS t FROM jobs",
        "SELECT max(finished_at) AS t FROM restores",
        "SELECT max(resolved_at) AS t FROM intents",
        "SELECT count(*) AS n FROM point_tiers",
    ):
        with contextlib.suppress(sqlite3.Error):  # an older schema without the table
            facts.append(catalog.query(sql)[0])
    return hashlib.blake2b(json.dumps(facts, default=str).encode(), digest_size=16).hexdigest()


def copy_state(catalog_path: str) -> dict[str, str]:
    """Per store label, the fingerprint of the catalog its latest copy was made from."""
    try:
        doc = json.loads(Path(catalog_path + COPIES_SUFFIX).read_text())
        return {k: str(v) for k, v in doc.items()} if isinstance(doc, dict) else {}
    except (OSError, ValueError):
        return {}


def write_copy_state(catalog_path: str, state: dict[str, str]) -> None:
    path = Path(catalog_path + COPIES_SUFFIX)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    with contextlib.suppress(OSError):
        tmp.write_text(json.dumps(state))
        os.replace(tmp, path)


def copy_labels(services: Any, *, opened_only: bool) -> list[str]:
    """The store labels a copy goes to: hot, and cold (if configured, and opened when ``opened_only``)."""
    labels = ["hot"] if services.config.hot is not None else []
    if services.has_cold and (not opened_only or "cold" in services.__dict__):
        labels.append("cold")
    return labels


def copy_due(catalog: Any, labels: list[str]) -> bool:
    """Whether any of ``labels`` lacks a copy of the catalog as it is now."""
    if getattr(catalog, "damaged", False) or catalog.path == ":memory:" or not labels:
        return False
    if not catalog.query("SELECT 1 FROM points LIMIT 1"):
        # nothing worth a copy, and it would stand newest in the stores: after a catalog is lost,
        # the first command's new empty one would be what `catalog restore` brings back
        return False
    state = copy_state(catalog.path)
    current = fingerprint(catalog)
    return any(state.get(label) != current for label in labels)


def leftovers_possible(catalog: Any) -> bool:
    """Whether cleanup may find work (one cheap query): a pending intent, a drill, site run or job
    recorded running (killed, perhaps; a job of an older drsvc only on this host, where its pid
    tells), or a pool snapshot row no pending or hot point refers to."""
    rows = catalog.query(
        "SELECT 1 FROM intents WHERE state = 'pending' UNION ALL "
        "SELECT 1 FROM drills WHERE status = 'running' AND owner IS NOT NULL UNION ALL "
        "SELECT 1 FROM site_recoveries WHERE status = 'running' AND owner IS NOT NULL UNION ALL "
        "SELECT 1 FROM jobs WHERE status = 'running' AND kind != 'backup' AND (owner IS NOT NULL OR host = ?) "
        "UNION ALL "
        "SELECT 1 FROM pool_snapshots s WHERE s.removed_at IS NULL AND NOT EXISTS ("
        " SELECT 1 FROM points p WHERE p.pool_snapshot_id = s.id AND (p.status = 'pending' OR EXISTS ("
        "  SELECT 1 FROM point_tiers t WHERE t.point_id = p.id AND t.tier = 'hot'))) LIMIT 1",
        [socket.gethostname()],
    )
    return bool(rows)


def quarantine(path: str | os.PathLike[str]) -> Path | None:
    """Move a damaged catalog (and its WAL, SHM, stamp) aside; return where it went (None: no file)."""
    path = str(path)
    if not os.path.exists(path):
        return None
    aside = Path(f"{path}.damaged-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}")
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.replace(path + suffix, str(aside) + suffix)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path + STAMP_SUFFIX)
    return aside
