"""Node agents report to the scheduler through the hot store, never through its catalog.

On Kubernetes the scheduler (``drsvc run``, a Deployment) starts one node-agent Job per node for a
due policy (``drsvc.executors.kubernetes``). SQLite cannot be shared safely across hosts, so an
agent (``drsvc backup --node N --lease-token T --run RUN``) works on a private, in-memory catalog:
it writes chunks and manifests to the hot store as any backup does, and a small **result
document** at ``runs/<run>/<node>`` in the same store, sealed with the store's key like a
manifest (AES-GCM bound to its key, so one node's result cannot stand in for another's). The
document lists the pool snapshots it took and every point it recorded (status, consistency,
reason, freeze and checkpoint times, new bytes), and is rewritten as desktops finish, so an agent
that dies mid-run still reports what it completed.

The scheduler then imports exactly those points (``import_run``): for each complete one it reads
the manifest and records it with the same per-point code ``catalog rebuild`` uses
(``drsvc.rebuild``), adding what only the live run knew; failed points are recorded failed with
their reason; points still pending in the last document the agent wrote are recorded failed
("interrupted"). Only points of desktops the scheduler sent to that node are taken, and the
import is fenced by the work lease like any commit. The result documents are deleted after the
import. Manifests an agent wrote but never reported (killed between the two) stay valid in the
store; ``catalog rebuild`` picks them up.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from drsvc import clock
from drsvc.catalog import Catalog
from drsvc.chunks import ChunkStore, object_aad
from drsvc.errors import DrsvcError, IntegrityError, NotFound
from drsvc.lease import Lease
from drsvc.rebuild import add_copy, add_desktop, add_point, record_snapshot
from drsvc.services import Services

if TYPE_CHECKING:
    from collections.abc import Callable

RESULTS_PREFIX = "runs/"
RESULT_FORMAT = "drsvc-agent-result/1"
MAX_RESULT = 16 << 20  # a result document larger than this is not read (hostile or broken store)
_POINT_FIELDS = (
    "id",
    "desktop_id",
    "policy",
    "taken_at",
    "status",
    "consistency",
    "reason",
    "bytes",
    "freeze_ms",
    "checkpoint_ms",
    "completed_at",
)


def _segment(text: str) -> str:
    if not text or "/" in text or text in (".", "..") or len(text) > 253:
        raise ValueError(f"bad run or node name {text!r}")
    return text


def result_key(run: str, node: str) -> str:
    return f"{RESULTS_PREFIX}{_segment(run)}/{_segment(node)}"


# ---------------------------------------------------------------------- the agent's side


def result_document(catalog: Catalog, *, run: str, node: str, final: bool) -> dict[str, Any]:
    """What an agent reports: its private catalog's points and pool snapshots (it holds only this run)."""
    snapshots = {r["id"]: r for r in catalog.query("SELECT id, pool, name, taken_at FROM pool_snapshots ORDER BY id")}
    stored = {
        r["point_id"]: r["stored_bytes"]
        for r in catalog.query("SELECT point_id, stored_bytes FROM point_tiers WHERE tier = 'hot'")
    }
    artifacts: dict[str, list[dict[str, Any]]] = {}
    for a in catalog.query("SELECT point_id, kind, name, new_chunks, new_bytes FROM artifacts ORDER BY kind, name"):
        artifacts.setdefault(a["point_id"], []).append(
            {"kind": a["kind"], "name": a["name"], "new_chunks": a["new_chunks"], "new_bytes": a["new_bytes"]}
        )
    points = []
    for row in catalog.query("SELECT * FROM points ORDER BY id"):
        point = {k: row[k] for k in _POINT_FIELDS}
        snap = snapshots.get(row["pool_snapshot_id"])
        point["pool_snapshot"] = snap["name"] if snap else None
        point["stored_bytes"] = stored.get(row["id"], 0)
        point["artifacts"] = artifacts.get(row["id"], [])
        points.append(point)
    return {
        "format": RESULT_FORMAT,
        "run": run,
        "node": node,
        "final": final,
        "written_at": clock.to_iso(clock.now()),
        "pool_snapshots": [
            {"pool": s["pool"], "name": s["name"], "taken_at": s["taken_at"]} for s in snapshots.values()
        ],
        "points": points,
    }


def write_result(hot: ChunkStore, doc: dict[str, Any]) -> None:
    """Seal and store a result document at ``runs/<run>/<node>``."""
    key = result_key(doc["run"], doc["node"])
    raw = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    hot.store.put(key, hot.keys.seal(raw, object_aad(key)))


class ResultWriter:
    """The agent's reporter: rewrites its result document as desktops finish, at most once a second."""

    def __init__(self, hot: ChunkStore, catalog: Catalog, *, run: str, node: str, interval: float = 1.0) -> None:
        self.hot = hot
        self.catalog = catalog
        self.run = run
        self.node = node
        self.interval = interval
        self._last: float | None = None

    def progress(self) -> None:
        """A desktop finished: report, unless the last report is younger than ``interval``."""
        if self._last is None or time.monotonic() - self._last >= self.interval:
            self._write(final=False)

    def final(self) -> None:
        self._write(final=True)

    def _write(self, *, final: bool) -> None:
        write_result(self.hot, result_document(self.catalog, run=self.run, node=self.node, final=final))
        self._last = time.monotonic()


# ---------------------------------------------------------------------- the scheduler's side


def read_result(hot: ChunkStore, run: str, node: str) -> dict[str, Any]:
    """Read and authenticate a node's result; ``NotFound`` when it reported nothing."""
    key = result_key(run, node)
    blob = hot.store.get(key, max_size=MAX_RESULT)  # a larger one is refused unread (ObjectTooLarge)
    try:
        doc = json.loads(hot.keys.open_(blob, object_aad(key)))
    except ValueError as e:
        raise IntegrityError(f"{key}: result document is unreadable ({e})") from e
    if not isinstance(doc, dict) or doc.get("format") != RESULT_FORMAT:
        raise IntegrityError(f"{key}: not a node-agent result document")
    if doc.get("run") != run or doc.get("node") != node:
        raise IntegrityError(f"{key}: the document names run {doc.get('run')!r}, node {doc.get('node')!r}")
    if not isinstance(doc.get("points"), list) or not isinstance(doc.get("pool_snapshots"), list):
        raise IntegrityError(f"{key}: result document without points or pool snapshots")
    return doc


@dataclass
class ImportReport:
    """What the scheduler recorded from its agents' results."""

    run: str
    points: list[dict[str, Any]] = field(default_factory=list)  # {id, desktop, status, node}
    snapshots: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # "node: why" for nodes that could not be imported

    @property
    def failed_nodes(self) -> set[str]:
        return {p.split(":", 1)[0] for p in self.problems}

    def document(self) -> dict[str, Any]:
        return {"run": self.run, "points": self.points, "pool_snapshots": self.snapshots, "problems": self.problems}


def import_run(
    services: Services,
    run: str,
    assigned: dict[str, Iterable[str]],
    *,
    job_id: int | None,
    lease: Lease,
    on_event: Callable[..., None] | None = None,
) -> ImportReport:
    """Record the points the agents of ``run`` report, for the desktops ``assigned`` to each node.

    One node's missing or damaged result is a problem of that node only; the others are imported.
    """
    on_event = on_event or (lambda *a, **k: None)
    report = ImportReport(run)
    hot = services.hot
    for node, desktops in sorted(assigned.items()):
        try:
            doc = read_result(hot, run, node)
        except NotFound:
            report.problems.append(f"{node}: the node agent reported no result")
            continue
        except DrsvcError as e:
            report.problems.append(f"{node}: {e}")
            continue
        allowed = set(desktops)
        lease.check()  # the fence: an import is a commit
        try:
            with services.catalog.transaction():
                _import_node(services, doc, allowed, job_id=job_id, report=report)
        except DrsvcError as e:
            report.problems.append(f"{node}: {e}")
            continue
        try:
            hot.store.delete(result_key(run, node))
        except DrsvcError as e:  # imported; a leftover document is only clutter, re-import is a no-op
            on_event("warning", message=f"could not delete result {result_key(run, node)}: {e}")
        on_event("imported", node=node, points=sum(1 for p in report.points if p["node"] == node))
    return report


def _import_node(
    services: Services, doc: dict[str, Any], allowed: set[str], *, job_id: int | None, report: ImportReport
) -> None:
    catalog = services.catalog
    node = doc["node"]
    now = clock.now()
    known_points = {
        r["id"]
        for r in catalog.query(
            "SELECT id FROM points WHERE desktop_id IN (SELECT value FROM json_each(?))", [json.dumps(sorted(allowed))]
        )
    }
    known_desktops = {r["id"] for r in catalog.query("SELECT id FROM desktops")}
    snapshot_ids: dict[str, int] = {}
    for snap in doc["pool_snapshots"]:
        snapshot_ids[str(snap["name"])] = _snapshot_row(catalog, snap, job_id, report)
    for point in doc["points"]:
        pid, desktop = str(point.get("id")), str(point.get("desktop_id"))
        if desktop not in allowed:
            report.problems.append(f"{node}: reported point {pid} of desktop {desktop}, which was not sent there")
            continue
        if pid in known_points:
            continue  # imported before (a retried import)
        status = point.get("status")
        if status == "complete":
            manifest = services.hot.get_manifest(desktop, pid)
            if manifest.get("point_id") != pid or manifest.get("desktop") != desktop:
                raise IntegrityError(f"manifest {desktop}/{pid} names another point")
            if desktop not in known_desktops:
                add_desktop(catalog, manifest)
                known_desktops.add(desktop)
            snap_id = record_snapshot(services, manifest, snapshot_live=True, now=now, job_id=job_id)
            add_point(
                catalog,
                pid,
                manifest,
                snap_id,
                job_id=job_id,
                checkpoint_ms=point.get("checkpoint_ms"),
                completed_at=point.get("completed_at") or manifest["taken_at"],
            )
            for a in point.get("artifacts") or []:
                catalog.execute(
                    "UPDATE artifacts SET new_chunks = ?, new_bytes = ? WHERE point_id = ? AND kind = ? AND name = ?",
                    [int(a["new_chunks"]), int(a["new_bytes"]), pid, a["kind"], a["name"]],
                )
            add_copy(catalog, pid, manifest, "hot", services.hot, stored_bytes=int(point.get("stored_bytes") or 0))
        else:
            if desktop not in known_desktops:
                report.problems.append(f"{node}: point {pid} of unknown desktop {desktop} not recorded")
                continue
            reason = point.get("reason") or "failed on its node agent"
            if status != "failed":
                reason = "interrupted: the node agent ended before the point was complete"
            catalog.add_point(
                {
                    "id": pid,
                    "desktop_id": desktop,
                    "policy": point.get("policy"),
                    "taken_at": _iso(point.get("taken_at"), now),
                    "status": "failed",
                    "consistency": point.get("consistency")
                    if point.get("consistency") in ("paired", "crash")
                    else "crash",
                    "reason": reason,
                    "pool_snapshot_id": snapshot_ids.get(str(point.get("pool_snapshot"))),
                    "job_id": job_id,
                    "freeze_ms": point.get("freeze_ms"),
                    "checkpoint_ms": point.get("checkpoint_ms"),
                }
            )
            status = "failed"
        report.points.append({"id": pid, "desktop": desktop, "status": status, "node": node})


def _snapshot_row(catalog: Catalog, snap: dict[str, Any], job_id: int | None, report: ImportReport) -> int:
    """The pool snapshot an agent took, recorded so prune removes it once no point needs it."""
    pool, name = str(snap["pool"]), str(snap["name"])
    rows = catalog.query("SELECT id FROM pool_snapshots WHERE pool = ? AND name = ?", [pool, name])
    if rows:
        return int(rows[0]["id"])
    cursor = catalog.execute(
        "INSERT INTO pool_snapshots (pool, name, taken_at, job_id) VALUES (?, ?, ?, ?)",
        [pool, name, _iso(snap.get("taken_at"), clock.now()), job_id],
    )
    report.snapshots.append(name)
    return int(cursor.lastrowid or 0)


def _iso(value: Any, default: datetime) -> str:
    try:
        return clock.to_iso(clock.from_iso(str(value)))
    except (TypeError, ValueError):
        return clock.to_iso(default)
