"""Cold prune (``ColdPruneJob``): the policy's cold retention over cold copies; a dropped copy
loses its cold manifest (packs follow through ``PruneJob.collect_garbage`` on the cold store,
with the same grace period, once none of their chunks is referenced and their lock has expired).
A copy whose Object Lock has not expired is skipped, not attempted: S3 would refuse (or, on a
versioned bucket, only hide it), and skipping keeps a compromised or mistaken policy from even
hiding it. It is pruned by the first run after its lock expires.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from drsvc import clock
from drsvc.catalog import Catalog
from drsvc.errors import NotFound
from drsvc.intents import points_being_read
from drsvc.lease import Lease
from drsvc.policy import PolicySet
from drsvc.prune import Decision, PruneJob, point_groups
from drsvc.retention import apply_retention
from drsvc.services import Services
from drsvc.tiering.common import Event, _quiet


@dataclass
class ColdPruneReport:
    dry_run: bool
    decisions: list[Decision] = field(default_factory=list)
    locked: list[str] = field(default_factory=list)
    chunks_marked: int = 0
    chunks_deleted: int = 0

    def document(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "dropped": [d.document() for d in self.decisions if not d.keep],
            "kept": sum(d.keep for d in self.decisions),
            "locked": self.locked,
            "chunks_unreferenced": self.chunks_marked,
            "chunks_deleted": self.chunks_deleted,
        }


def plan_cold(catalog: Catalog, policies: PolicySet, now: datetime) -> tuple[list[Decision], list[str]]:
    """Keep/drop of every cold copy with reasons, and the ids kept only because still locked."""
    locks = {
        r["point_id"]: r["retain_until"]
        for r in catalog.query("SELECT point_id, retain_until FROM point_tiers WHERE tier = 'cold'")
    }
    decisions: list[Decision] = []
    locked: list[str] = []
    reading = points_being_read(catalog)
    for desktop, policy, members in point_groups(catalog, policies):
        cold = [p for p in members if "cold" in p["tiers"]]
        rules = policy.retention.cold
        if not cold or rules.empty:
            continue
        result = apply_retention([(p["id"], clock.from_iso(p["taken_at"])) for p in cold], rules, policy.tz)
        for p in cold:
            reasons = result.keep.get(p["id"])
            keep = reasons is not None
            until = locks.get(p["id"])
            if not keep and until and clock.from_iso(until) > now:
                keep, reasons = True, [f"locked until {until} (S3 Object Lock): pruned after it expires"]
                locked.append(p["id"])
            if not keep and p["id"] in reading:
                keep, reasons = True, ["a restore is reading it (kept until the restore ends)"]
            decisions.append(
                Decision(
                    p["id"],
                    desktop,
                    "cold",
                    p["taken_at"],
                    keep,
                    reasons or [f"not kept by cold rules ({rules.describe()})"],
                )
            )
    return decisions, locked


class ColdPruneJob:
    """Applies cold retention to cold copies and collects cold chunks no manifest references."""

    def __init__(self, services: Services, lease: Lease | None, *, on_event: Event | None = None) -> None:
        self.services = services
        self.catalog = services.catalog
        self.lease = lease
        self.on_event = on_event or _quiet

    def run(self, *, dry_run: bool = False, now: datetime | None = None) -> ColdPruneReport:
        now = now or clock.now()
        report = ColdPruneReport(dry_run)
        if not self.services.has_cold:
            return report
        report.decisions, report.locked = plan_cold(self.catalog, self.services.policies, now)
        if dry_run:
            return report
        cold = self.services.cold
        for decision in report.decisions:
            if decision.keep:
                continue
            if self.lease is not None:
                self.lease.check()
            with contextlib.suppress(NotFound):  # already gone: a previous run died after deleting it
                cold.delete_manifest(decision.desktop, decision.point_id)
            with self.catalog.transaction():
                self.catalog.drop_tier(decision.point_id, "cold")
                self.catalog.expire_if_uncopied(decision.point_id)  # copies at other sites keep it
            self.on_event("dropped", decision=decision)
        # Same mark-and-sweep with grace as the hot store (a tier run between its chunks and its
        # manifest is protected by the grace period, exactly as a backup is on the hot side).
        report.chunks_marked, report.chunks_deleted = PruneJob(self.services, self.lease).collect_garbage(cold, now)
        return report


def prune_cold(
    services: Services,
    lease: Lease | None,
    *,
    dry_run: bool = False,
    now: datetime | None = None,
    on_event: Event | None = None,
) -> ColdPruneReport:
    """``ColdPruneJob(...).run(...)`` for ``drsvc prune``."""
    return ColdPruneJob(services, lease, on_event=on_event).run(dry_run=dry_run, now=now)
