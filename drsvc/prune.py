"""Prune: apply each policy's hot retention, drop pool snapshots no hot point needs, collect chunks.

Retention is the pure function of ``drsvc.retention``, applied per desktop to its complete points
that hold a hot copy, with the rules of the policy that took them (manual points: the policy that
covers the desktop now; none: kept). A hot copy that cold retention still wants but that is not
cold yet is kept until tiering has copied it, so hot pruning never loses a point the cold tier
was meant to keep.

Chunk GC is mark and sweep with a grace period: every chunk no manifest of the store references is
remembered with the time it was first seen unreferenced, and deleted only once it has stayed so
for ``scheduler.gc_grace_seconds``. In a packed store (the cold tier) the unit of deletion is
the pack: it goes once none of its chunks is referenced (and its Object Lock has expired); a
partly live pack stays whole until a repack (see ``drsvc.chunks``). Backups and prune run under
the same work lease; the grace period covers what the lease cannot (a fenced-out run still
writing chunks).
"""

from __future__ import annotations

import contextlib
import logging
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from drsvc import clock, faults
from drsvc.catalog import Catalog
from drsvc.chunks import ChunkStore, StreamRef, index_key, pack_key
from drsvc.errors import EXIT_OK, EXIT_PARTIAL, DrsvcError, NotFound
from drsvc.intents import Owner, points_being_read
from drsvc.lease import Lease
from drsvc.log import event
from drsvc.policy import Policy, PolicySet
from drsvc.retention import RetentionRules, apply_retention
from drsvc.services import Services
from drsvc.storage.base import ordered_map

Event = Callable[..., None]
log = logging.getLogger(__name__)


@dataclass
class Decision:
    point_id: str
    desktop: str
    tier: str
    taken_at: str
    keep: bool
    reasons: list[str]

    def document(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class PruneReport:
    dry_run: bool
    decisions: list[Decision] = field(default_factory=list)
    snapshots_removed: list[str] = field(default_factory=list)
    chunks_marked: int = 0
    chunks_deleted: int = 0
    problems: list[str] = field(default_factory=list)  # what this run could not do; the next one retries

    @property
    def exit_code(self) -> int:
        return EXIT_PARTIAL if self.problems else EXIT_OK

    def document(self) -> dict[str, Any]:
        dropped = [d.document() for d in self.decisions if not d.keep]
        return {
            "dry_run": self.dry_run,
            "dropped": dropped,
            "kept": sum(d.keep for d in self.decisions),
            "snapshots_removed": self.snapshots_removed,
            "chunks_unreferenced": self.chunks_marked,
            "chunks_deleted": self.chunks_deleted,
            "problems": self.problems,
        }


def policy_for(point: dict[str, Any], policies: PolicySet, desktops: dict[str, dict[str, Any]]) -> Policy | None:
    """The policy that governs a point: the one that took it, else (manual points) the first that
    covers its desktop now; None when no policy covers it."""
    if point["policy"] and point["policy"] in policies:
        return policies.get(point["policy"])
    desktop = desktops.get(point["desktop_id"])
    if desktop is None:
        return None
    matching = policies.for_desktop(desktop["id"], desktop["tenant"], desktop["labels"])
    return matching[0] if matching else None


def point_groups(catalog: Catalog, policies: PolicySet) -> Iterator[tuple[str, Policy, list[dict[str, Any]]]]:
    """Complete points grouped per (desktop, governing policy), sorted: the unit that prune,
    tiering and site copies apply a policy's retention to."""
    desktops = {d["id"]: d for d in catalog.desktops()}
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    by_name: dict[str, Policy] = {}
    for point in catalog.points(status="complete"):
        policy = policy_for(point, policies, desktops)
        if policy is None:
            continue
        by_name[policy.name] = policy
        groups[(point["desktop_id"], policy.name)].append(point)
    for (desktop, name), members in sorted(groups.items()):
        yield desktop, by_name[name], members


def plan_hot(catalog: Catalog, policies: PolicySet, now: datetime | None = None) -> list[Decision]:
    """Keep/drop of every hot copy, with the reasons (pure over what the catalog says)."""
    reading = points_being_read(catalog)
    decisions = []
    for desktop, policy, members in point_groups(catalog, policies):
        stamps = [(p["id"], clock.from_iso(p["taken_at"])) for p in members]
        hot = [p for p in members if "hot" in p["tiers"]]
        hot_rules: RetentionRules = policy.retention.hot
        if hot_rules.empty:
            continue
        hot_result = apply_retention([(p["id"], clock.from_iso(p["taken_at"])) for p in hot], hot_rules, policy.tz)
        cold_wanted: set[str] = set()
        if policy.tiering is not None:
            cold_rules = policy.retention.cold
            if cold_rules.empty:
                cold_wanted = {pid for pid, _ in stamps}
            else:
                cold_wanted = set(apply_retention(stamps, cold_rules, policy.tz).keep)
        for p in hot:
            reasons = hot_result.keep.get(p["id"])
            keep = reasons is not None
            if not keep and p["id"] in cold_wanted and "cold" not in p["tiers"]:
                keep, reasons = True, ["waiting to be tiered (cold retention keeps it)"]
            if not keep and p["id"] in reading:
                keep, reasons = True, ["a restore is reading it (kept until the restore ends)"]
            decisions.append(
                Decision(
                    p["id"],
                    desktop,
                    "hot",
                    p["taken_at"],
                    keep,
                    reasons or [f"not kept by hot rules ({hot_rules.describe()})"],
                )
            )
    return decisions


class PruneJob:
    """Applies hot retention and collects what no hot point needs any more."""

    def __init__(self, services: Services, lease: Lease | None, *, on_event: Event | None = None) -> None:
        self.services = services
        self.catalog = services.catalog
        self.lease = lease
        self.on_event = on_event or (lambda *a, **k: None)

    def run(self, *, dry_run: bool = False, now: datetime | None = None) -> PruneReport:
        now = now or clock.now()
        report = PruneReport(dry_run)
        report.decisions = plan_hot(self.catalog, self.services.policies, now)
        if dry_run:
            report.snapshots_removed = [
                s["name"] for s in self._unreferenced_snapshots({d.point_id for d in report.decisions if not d.keep})
            ]
            return report
        # the row says how it ended; a kill -9 is ended by cleanup once the run's owner lapses
        with Owner(self.catalog) as owner:
            job_id = self.catalog.start_job("prune", token=self.lease.token if self.lease else None, owner=owner.name)
            with self.catalog.ends_job_if_raised(job_id, report.document):
                self._drop(report, now)
            self.catalog.finish_job(job_id, "partial" if report.problems else "ok", detail=report.document())
        return report

    def _drop(self, report: PruneReport, now: datetime) -> None:
        """Drop the hot copies ``report`` decided against, then the snapshots and chunks left unused."""
        hot = self.services.hot
        for decision in report.decisions:
            if decision.keep:
                continue
            self._check_lease()
            if decision.point_id in points_being_read(self.catalog):  # a restore began after the plan
                decision.keep, decision.reasons = True, ["a restore is reading it (kept until the restore ends)"]
                continue
            with contextlib.suppress(NotFound):
                hot.delete_manifest(decision.desktop, decision.point_id)
            with self.catalog.transaction():
                self.catalog.drop_tier(decision.point_id, "hot")
                self.catalog.expire_if_uncopied(decision.point_id)  # copies at other sites keep it
            faults.point("prune-after-drop")
            self.on_event("dropped", decision=decision)
        report.snapshots_removed = self.remove_unreferenced_snapshots(report.problems)
        report.chunks_marked, report.chunks_deleted = self.collect_garbage(hot, now)

    def remove_unreferenced_snapshots(self, problems: list[str]) -> list[str]:
        """Remove the pool snapshots no pending or hot point refers to (also those a killed backup
        recorded but never used); return their names.

        A snapshot that cannot be removed (Ceph refusing or timing out) is logged, reported as
        event ``snapshot_remove_failed`` and appended to ``problems``; its row stays, so the next
        run retries it, and the snapshots after it are still removed.
        """
        removed = []
        for snap in self._unreferenced_snapshots(set()):
            self._check_lease()
            try:
                self.services.snapshots(snap["pool"]).remove(snap["name"])
            except DrsvcError as e:
                problems.append(f"pool snapshot {snap['name']}: {e}")
                event(
                    log,
                    logging.WARNING,
                    "prune.snapshot_failed",
                    f"pool snapshot {snap['name']} not removed (the next prune retries): {e}",
                    snapshot=snap["name"],
                    error=str(e),
                    exc_info=e,
                )
                self.on_event("snapshot_remove_failed", name=snap["name"], error=e)
                continue
            faults.point("prune-after-snapshot-removed")
            self.catalog.execute(
                "UPDATE pool_snapshots SET removed_at = ? WHERE id = ?",
                [clock.to_iso(clock.now()), snap["id"]],
            )
            removed.append(snap["name"])
            self.on_event("snapshot_removed", name=snap["name"])
        return removed

    def unreferenced_snapshots(self, failing: Collection[str] = ()) -> list[str]:
        """Names of the pool snapshots ``remove_unreferenced_snapshots`` would remove now, or once
        the pending points ``failing`` (a dead backup's, which cleanup marks failed first) no
        longer hold theirs: what ``cleanup --dry-run`` must name."""
        if not failing:
            return [s["name"] for s in self._unreferenced_snapshots(set())]
        rows = self.catalog.query(
            "SELECT s.name, group_concat(p.id) AS ids FROM pool_snapshots s LEFT JOIN points p "
            "ON p.pool_snapshot_id = s.id AND (p.status = 'pending' OR EXISTS ("
            " SELECT 1 FROM point_tiers t WHERE t.point_id = p.id AND t.tier = 'hot')) "
            "WHERE s.removed_at IS NULL GROUP BY s.id ORDER BY s.id"
        )
        return [r["name"] for r in rows if r["ids"] is None or set(r["ids"].split(",")) <= set(failing)]

    def _check_lease(self) -> None:
        if self.lease is not None:
            self.lease.check()

    def _unreferenced_snapshots(self, also_dropped: set[str]) -> list[dict[str, Any]]:
        """Pool snapshots no pending point and no (remaining) hot copy refers to."""
        rows = self.catalog.query(
            "SELECT s.id, s.pool, s.name FROM pool_snapshots s WHERE s.removed_at IS NULL AND NOT EXISTS ("
            " SELECT 1 FROM points p WHERE p.pool_snapshot_id = s.id AND (p.status = 'pending' OR EXISTS ("
            "  SELECT 1 FROM point_tiers t WHERE t.point_id = p.id AND t.tier = 'hot'))) ORDER BY s.id"
        )
        if also_dropped:
            # dry run: snapshots whose every hot point is about to be dropped
            extra = self.catalog.query(
                "SELECT s.id, s.pool, s.name, group_concat(p.id) AS ids FROM pool_snapshots s "
                "JOIN points p ON p.pool_snapshot_id = s.id JOIN point_tiers t ON t.point_id = p.id AND t.tier = 'hot' "
                "WHERE s.removed_at IS NULL GROUP BY s.id"
            )
            rows += [r for r in extra if set(r["ids"].split(",")) <= also_dropped]
        read = self._snapshots_being_read()
        return [r for r in rows if r["id"] not in read]

    def _snapshots_being_read(self) -> set[int]:
        """Pool snapshots of points a live restore reads: one that began after prune dropped the
        point's hot copy (its plan came first) may be rolling a desktop back from it."""
        reading = sorted(points_being_read(self.catalog))
        if not reading:
            return set()
        rows = self.catalog.query(
            f"SELECT pool_snapshot_id FROM points WHERE id IN ({','.join('?' * len(reading))})", reading
        )
        return {r["pool_snapshot_id"] for r in rows if r["pool_snapshot_id"] is not None}

    def collect_garbage(self, store: ChunkStore, now: datetime) -> tuple[int, int]:
        """Mark chunks no manifest references; sweep those unreferenced for the grace period.

        Loose chunks go one by one. In a packed store (the cold tier) a pack goes as a whole, only
        once no manifest references any chunk in it, it has stayed so for the grace period, and
        its Object Lock (``cold_locks``, then the store itself) has expired; a pack without an
        index (a tier run killed between the two PUTs) is such a pack too. Pack candidates share
        ``gc_candidates`` with chunks, as ``pack:<id>`` (never a 64-hex chunk id). Returns
        (unreferenced chunks, chunks deleted), packed ones included.
        """
        referenced = referenced_by_manifests(store)
        loose = set(store.list_loose_chunk_ids())
        members = store.pack_members() if store.pack_size else {}
        unreferenced = {cid for cid in loose if cid not in referenced}
        dead_packs = {f"pack:{pid}" for pid, cids in members.items() if not any(c in referenced for c in cids)}
        marked = len(unreferenced) + len({c for cids in members.values() for c in cids if c not in referenced} - loose)
        url = store.store.url
        grace = timedelta(seconds=self.services.config.scheduler.gc_grace_seconds)
        known = {
            r["chunk_id"]: clock.from_iso(r["first_seen"])
            for r in self.catalog.query("SELECT chunk_id, first_seen FROM gc_candidates WHERE store_url = ?", [url])
        }
        candidates = unreferenced | dead_packs
        due = sorted(cid for cid, seen in known.items() if cid in candidates and now - seen >= grace)
        with self.catalog.transaction():
            for cid in set(known) - candidates:  # referenced again (dedup by a newer point)
                self.catalog.execute("DELETE FROM gc_candidates WHERE store_url = ? AND chunk_id = ?", [url, cid])
            for cid in candidates - set(known):
                self.catalog.execute("INSERT INTO gc_candidates VALUES (?, ?, ?)", [url, cid, clock.to_iso(now)])
        due_chunks = [c for c in due if not c.startswith("pack:")]
        due_packs = self._unlocked(store, [c[len("pack:") :] for c in due if c.startswith("pack:")], now)
        deleted = len(due_chunks) + sum(len(members.get(pid, ())) for pid in due_packs)
        if due_chunks or due_packs:
            self._check_lease()
            store.delete_chunks(due_chunks)
            store.delete_packs(due_packs)
            with self.catalog.transaction():
                for cid in due_chunks + [f"pack:{pid}" for pid in due_packs]:
                    self.catalog.execute("DELETE FROM gc_candidates WHERE store_url = ? AND chunk_id = ?", [url, cid])
        return marked, deleted

    def _unlocked(self, store: ChunkStore, pack_ids: list[str], now: datetime) -> list[str]:
        """The packs whose Object Lock (pack and index) has expired: the catalog's record, then the store's."""
        if not pack_ids:
            return []
        url, stamp = store.store.url, clock.to_iso(now)
        keys = {pid: (pack_key(pid), index_key(pid)) for pid in pack_ids}
        locked: set[str] = set()
        for start in range(0, len(pack_ids), 400):
            part = [k for pid in pack_ids[start : start + 400] for k in keys[pid]]
            rows = self.catalog.query(
                f"SELECT key FROM cold_locks WHERE store_url = ? AND retain_until > ? AND key IN "
                f"({','.join('?' * len(part))})",
                [url, stamp, *part],
            )
            locked.update(r["key"] for r in rows)
        free = [pid for pid in pack_ids if not (set(keys[pid]) & locked)]
        retention = getattr(store.store, "retain_until", None)
        if retention is None or not free or not getattr(store.store, "object_lock_enabled", False):
            return free
        # cold_locks is a cache (lost with a rebuilt catalog): ask the store about each pack it lets go

        def expired(pid: str) -> bool:
            for key in keys[pid]:
                try:
                    until = retention(key)
                except NotFound:
                    continue
                if until is not None and until > now:
                    return False
            return True

        return [pid for pid, ok in zip(free, ordered_map(expired, free, workers=8, window=16), strict=True) if ok]


def manifest_streams(manifest: dict[str, Any]) -> Iterable[StreamRef]:
    """Every stream a manifest refers to (volume, checkpoint, or an image record's stream)."""
    for part in (manifest.get("volume"), manifest.get("checkpoint"), manifest):
        if isinstance(part, dict) and isinstance(part.get("stream"), dict):
            yield StreamRef.from_dict(part["stream"])


def referenced_by_manifests(store: ChunkStore) -> set[str]:
    referenced: set[str] = set()
    for desktop, point_id in store.list_manifests():
        for ref in manifest_streams(store.get_manifest(desktop, point_id)):
            referenced.update(cid for cid, _ in ref.chunks)
    return referenced
