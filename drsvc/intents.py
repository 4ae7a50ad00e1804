"""Intent records: an external effect is written down before it is made, and resolved after.

A restore creating a clone records ``clone-volume`` and ``clone-container`` before it writes the
namespace or starts the container; a tier job records ``multipart-uploads`` before it uploads;
an in-place restore records ``restore-in-place`` before it touches the desktop; a restore records
``point-read`` on the point it reads (prune skips such points; so do single-object restores,
``dump`` and ``mount``, through ``reading``); a restore records ``checkpoint-image`` or
``checkpoint-archive`` before a CRI-O runtime pushes the checkpoint image or writes the archive
onto the node, and ``loaded-image`` before it loads a base image the runtime lacks; a Docker
backup records ``checkpoint-dir`` before dockerd writes the desktop's memory image into its
checkpoint directory (``drsvc.checkpoint_effects``). Each intent names its **owner**:
a lease (``leases`` row ``owner:<hex>``) that the owning process renews in the background. When
the process ends normally it resolves its intents; when it is killed they stay ``pending`` and
its lease lapses (at once on this host: its pid is gone). ``leftovers`` finds pending intents
whose owner is gone, and ``drsvc cleanup`` (also the next run and ``prune``) undoes them —
except an in-place restore, which is reported as interrupted and resumed by the same command.
Runs recorded ``running`` name an owner the same way (``drills.owner``, ``site_recoveries.owner``,
``jobs.owner``): a killed one never records its end, and ``abandoned_runs`` finds it once its
owner is gone, whatever became of its pid and on whichever host it ran.

Pool snapshots need no intent of their own: backup inserts the ``pool_snapshots`` row before it
creates the snapshot, so a killed backup leaves a row no complete point references, which prune
removes (and ``leftovers`` reports).
"""

from __future__ import annotations

import base64
import json
import time
import uuid
import zlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from drsvc import clock
from drsvc.catalog import Catalog
from drsvc.lease import Lease, holder_here

KINDS = (
    "clone-volume",  # target: rados://POOL/NAMESPACE of a restore's clone
    "clone-container",  # target: the clone's container name
    "multipart-uploads",  # target: the store URL a tier job uploads to (its multipart uploads)
    "restore-in-place",  # target: the desktop id being restored in place
    "point-read",  # target: the point id a restore reads (prune skips it)
    "checkpoint-image",  # target: HOST/REPO:TAG of the checkpoint image a CRI-O restore pushes
    "checkpoint-archive",  # target: the archive's path on the node a CRI-O restore (archive mode) writes
    "loaded-image",  # target: the base image id a restore loads because the runtime lacks it
    "checkpoint-dir",  # target: drsvc-<12 hex>, the Docker checkpoint directory a backup makes
)
# What a runtime's restore or checkpoint leaves outside drsvc (``ContainerRuntime.forget`` removes
# them): the checkpoint kinds hold every memory page of a desktop in plaintext.
MEMORY_KINDS = ("checkpoint-image", "checkpoint-archive", "checkpoint-dir")
ARTIFACT_KINDS = (*MEMORY_KINDS, "loaded-image")
STATES = ("pending", "kept", "undone", "done", "failed", "interrupted")
OWNER_TTL = 120.0  # seconds an owner stays alive without renewing (renewed every third of it)


# The names of the objects a clone restore may write (``clone-volume``), recorded before it writes
# one: zlib + base64 of their sorted JSON list (a namespace holds thousands of objects; a name may
# hold any character, a newline too).
NAMES_KEY = "objects_z"


def pack_names(names: Iterable[str]) -> dict[str, str]:
    """``names`` as intent detail (``Intents.record(..., **pack_names(names))``)."""
    listed = json.dumps(sorted(set(names))).encode()
    return {NAMES_KEY: base64.b64encode(zlib.compress(listed, 6)).decode("ascii")}


def unpack_names(detail: dict[str, Any]) -> list[str] | None:
    """The names ``pack_names`` recorded in ``detail``; None when it recorded none (older drsvc)."""
    packed = detail.get(NAMES_KEY)
    if packed is None:
        return None
    names = json.loads(zlib.decompress(base64.b64decode(packed)))
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ValueError("intent detail: recorded object names are not a list of strings")
    return names


class Owner(Lease):
    """A liveness lease for one process's work: alive while renewed, gone once it lapses or its pid dies."""

    def __init__(self, catalog: Catalog, ttl: float = OWNER_TTL) -> None:
        super().__init__(catalog, name=f"owner:{uuid.uuid4().hex[:16]}", ttl=ttl)

    def _release(self, token: int) -> None:
        """Its row goes (every run, every job has one; its name is never taken again): gone, as lapsed."""
        self.catalog.execute("DELETE FROM leases WHERE name = ? AND token = ?", [self.name, token])


def owner_alive(catalog: Catalog, name: str) -> bool:
    """Whether the owner lease ``name`` is still held by a live process.

    An owner on this host is alive exactly while its process is (``holder_here``: pid and start
    time), whatever the wall clock says of its expiry; elsewhere, while its lease is unexpired
    (``bound_owner_leases`` bounds one a clock stepped back left far ahead)."""
    rows = catalog.query("SELECT holder, expires_at FROM leases WHERE name = ?", [name])
    if not rows or rows[0]["expires_at"] <= 0:
        return False  # released, or never held
    here = holder_here(rows[0]["holder"])
    if here is not None:
        return here
    return bool(rows[0]["expires_at"] > time.time())


def bound_owner_leases(catalog: Catalog) -> None:
    """Bound owner leases expiring more than ``OWNER_TTL`` ahead (written before the clock stepped
    back) to ``OWNER_TTL`` from now: a dead owner on another host lapses in one lifetime, not in
    the size of the step. A live owner's next renewal writes the same bound anyway."""
    now = time.time()
    catalog.execute(
        "UPDATE leases SET expires_at = ? WHERE name LIKE 'owner:%' AND expires_at > ?",
        [now + OWNER_TTL, now + OWNER_TTL],
    )


@dataclass
class Intent:
    """One recorded effect."""

    id: int
    kind: str
    target: str
    owner: str
    state: str
    created_at: str
    detail: dict[str, Any]

    def line(self) -> str:
        shown = {k: v for k, v in self.detail.items() if v is not None and k != NAMES_KEY}
        if NAMES_KEY in self.detail:
            shown["objects"] = len(unpack_names(self.detail) or [])
        extra = ", ".join(f"{k} {v}" for k, v in shown.items())
        return f"{self.kind} {self.target} (intent {self.id}, {self.created_at[:19]}Z{', ' + extra if extra else ''})"


def _intent(row: dict[str, Any]) -> Intent:
    return Intent(
        row["id"],
        row["kind"],
        row["target"],
        row["owner"],
        row["state"],
        row["created_at"],
        json.loads(row["detail"] or "{}"),
    )


class Intents:
    """Record and resolve the effects of one owner."""

    def __init__(self, catalog: Catalog, owner: str) -> None:
        self.catalog = catalog
        self.owner = owner

    def record(self, kind: str, target: str, **detail: Any) -> int:
        """Write the intent down (``pending``) before the effect is made; return its id."""
        if kind not in KINDS:
            raise ValueError(f"unknown intent kind {kind!r}")
        cursor = self.catalog.execute(
            "INSERT INTO intents (kind, target, owner, state, created_at, detail) VALUES (?, ?, ?, 'pending', ?, ?)",
            [kind, target, self.owner, clock.to_iso(clock.now()), json.dumps(detail)],
        )
        return int(cursor.lastrowid or 0)

    def note(self, intent_id: int, **detail: Any) -> None:
        """Add to an intent's detail (e.g. the phase an in-place restore has reached)."""
        rows = self.catalog.query("SELECT detail FROM intents WHERE id = ?", [intent_id])
        if rows:
            merged = {**json.loads(rows[0]["detail"] or "{}"), **detail}
            self.catalog.execute("UPDATE intents SET detail = ? WHERE id = ?", [json.dumps(merged), intent_id])

    def resolve(self, intent_id: int, state: str) -> None:
        resolve(self.catalog, intent_id, state)

    @contextmanager
    def holding(self, kind: str, target: str, **detail: Any) -> Iterator[int]:
        """An intent that lasts as long as the block (``point-read``), resolved ``done`` however it ends."""
        intent_id = self.record(kind, target, **detail)
        try:
            yield intent_id
        finally:
            self.resolve(intent_id, "done")


@contextmanager
def reading(catalog: Catalog, point_ids: Iterable[str], **detail: Any) -> Iterator[None]:
    """A read lease on points for the block (single-object restores, dump, mount): ``point-read``
    intents under a live owner, so prune keeps the points; resolved ``done`` however it ends, and
    a killed reader's lapse with its owner."""
    with Owner(catalog) as owner:
        intents = Intents(catalog, owner.name)
        ids = [intents.record("point-read", point_id, **detail) for point_id in dict.fromkeys(point_ids)]
        try:
            yield
        finally:
            for intent_id in ids:
                intents.resolve(intent_id, "done")


def resolve(catalog: Catalog, intent_id: int, state: str) -> None:
    """Mark an intent ``state`` (anything but pending): the effect is kept, undone, done, failed …"""
    if state not in STATES or state == "pending":
        raise ValueError(f"bad intent state {state!r}")
    catalog.execute(
        "UPDATE intents SET state = ?, resolved_at = ? WHERE id = ?",
        [state, clock.to_iso(clock.now()), intent_id],
    )


def pending(catalog: Catalog, kind: str | None = None, target: str | None = None) -> list[Intent]:
    """Pending intents (of a kind, for a target), oldest first."""
    sql, params = "SELECT * FROM intents WHERE state = 'pending'", []
    if kind is not None:
        sql += " AND kind = ?"
        params.append(kind)
    if target is not None:
        sql += " AND target = ?"
        params.append(target)
    return [_intent(r) for r in catalog.query(sql + " ORDER BY id", params)]


def intents_of(catalog: Catalog, kind: str, target: str) -> list[Intent]:
    """Every intent of ``kind`` on ``target``, in any state, oldest first."""
    rows = catalog.query("SELECT * FROM intents WHERE kind = ? AND target = ? ORDER BY id", [kind, target])
    return [_intent(r) for r in rows]


def leftovers(catalog: Catalog, kind: str | None = None, target: str | None = None) -> list[Intent]:
    """Pending intents whose owner is gone: effects that may exist and that no one will resolve."""
    alive: dict[str, bool] = {}
    out = []
    for intent in pending(catalog, kind, target):
        if intent.owner not in alive:
            alive[intent.owner] = owner_alive(catalog, intent.owner)
        if not alive[intent.owner]:
            out.append(intent)
    return out


def points_being_read(catalog: Catalog) -> set[str]:
    """Points a live restore is reading: prune must not drop them."""
    reads = pending(catalog, "point-read")
    alive = {i.owner for i in reads if owner_alive(catalog, i.owner)}
    return {i.target for i in reads if i.owner in alive}


ENDED = "interrupted: the process ended before the job finished"  # a killed job's error


@dataclass(frozen=True)
class RunTable:
    """A table of runs recorded 'running' under an ``owner`` lease (column ``owner``)."""

    only: str = ""  # which running rows are runs ended here (an SQL condition)
    ends: str = ""  # what ending one records besides its status and end (SQL assignments)


# A killed run never records its end. Drills; site recoveries, site drills and restore storms; jobs
# but backups (a backup's row ends with its points, ``drsvc.backup.recover_interrupted``).
RUN_TABLES = {
    "drills": RunTable(),
    "site_recoveries": RunTable(),
    "jobs": RunTable(only="kind != 'backup'", ends=f"error = '{ENDED}'"),
}


def abandoned_runs(catalog: Catalog, table: str, *, mark: bool = False) -> list[int]:
    """Rows of ``table`` (one of ``RUN_TABLES``) still ``running`` whose owner is gone (killed).

    ``mark``: record them ``interrupted`` (``drsvc cleanup``). A row without an owner (written by
    an older drsvc) is left as it is (for jobs: ``drsvc.cleanup.ownerless_dead_jobs``).
    """
    if table not in RUN_TABLES:
        raise ValueError(f"not a table of owned runs: {table!r}")
    only = f" AND {RUN_TABLES[table].only}" if RUN_TABLES[table].only else ""
    rows = catalog.query(
        f"SELECT id, owner FROM {table} WHERE status = 'running' AND owner IS NOT NULL{only} ORDER BY id"
    )
    gone = [r["id"] for r in rows if not owner_alive(catalog, r["owner"])]
    if mark:
        end_runs(catalog, table, gone)
    return gone


def end_runs(catalog: Catalog, table: str, ids: list[int]) -> None:
    """Record the rows ``ids`` of ``table`` (one of ``RUN_TABLES``) ``interrupted``, if still running."""
    if not ids:
        return
    ends = f", {RUN_TABLES[table].ends}" if RUN_TABLES[table].ends else ""
    catalog.execute(
        f"UPDATE {table} SET status = 'interrupted', finished_at = ?{ends} WHERE status = 'running' "
        f"AND id IN ({','.join('?' * len(ids))})",
        [clock.to_iso(clock.now()), *ids],
    )


def interrupted_restores(catalog: Catalog) -> list[Intent]:
    """In-place restores whose process died before finishing: the desktop may be down.

    Pending with a gone owner (not noticed yet) or ``interrupted`` (noticed, not resumed yet).
    """
    noticed = [
        _intent(r)
        for r in catalog.query("SELECT * FROM intents WHERE kind = 'restore-in-place' AND state = 'interrupted'")
    ]
    return sorted(noticed + leftovers(catalog, "restore-in-place"), key=lambda i: i.id)
