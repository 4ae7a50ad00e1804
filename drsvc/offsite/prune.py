"""Prune at other sites: each site's own retention over the copies it holds, and its own GC.

A dropped copy loses its manifest at that site only (``point_sites`` row gone; the point keeps
its other copies, and expires only when no tier and no site holds it). Packs follow through the
same mark-and-sweep with grace as the cold tier (``PruneJob.collect_garbage`` on the site's
store): a pack goes once no manifest at that site references any of its chunks, the grace period
passed, and its Object Lock at that site expired. A copy still locked at its site is skipped,
never attempted. Nothing here reads or writes another site's store, or the primary's.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from drsvc import clock
from drsvc.errors import NotFound
from drsvc.lease import Lease
from drsvc.offsite.plan import plan_site_prune, site_copies
from drsvc.prune import Decision, PruneJob
from drsvc.services import Services

Event = Callable[..., None]


@dataclass
class SitePruneReport:
    site: str
    dry_run: bool
    decisions: list[Decision] = field(default_factory=list)
    locked: list[str] = field(default_factory=list)
    chunks_marked: int = 0
    chunks_deleted: int = 0
    note: str | None = None

    def document(self) -> dict[str, Any]:
        return {
            "site": self.site,
            "dry_run": self.dry_run,
            "dropped": [d.document() for d in self.decisions if not d.keep],
            "kept": sum(d.keep for d in self.decisions),
            "locked": self.locked,
            "chunks_unreferenced": self.chunks_marked,
            "chunks_deleted": self.chunks_deleted,
            "note": self.note,
        }


def prune_site(
    services: Services,
    site: str,
    lease: Lease | None,
    *,
    dry_run: bool = False,
    now: datetime | None = None,
    on_event: Event | None = None,
) -> SitePruneReport:
    """Apply ``site``'s retention to its copies and collect its unreferenced packs."""
    now = now or clock.now()
    on_event = on_event or (lambda *a, **k: None)
    catalog = services.catalog
    report = SitePruneReport(site, dry_run)
    report.decisions, report.locked = plan_site_prune(catalog, services.policies, site, now)
    if dry_run:
        return report
    if not site_copies(catalog, site):
        report.note = f"no copies recorded at site {site}"
        return report
    store = services.site(site)
    for decision in report.decisions:
        if decision.keep:
            continue
        if lease is not None:
            lease.check()
        with contextlib.suppress(NotFound):  # gone already: a previous run died after deleting it
            store.delete_manifest(decision.desktop, decision.point_id)
        with catalog.transaction():
            catalog.drop_site(decision.point_id, site)
            catalog.expire_if_uncopied(decision.point_id)
        on_event("dropped", decision=decision)
    report.chunks_marked, report.chunks_deleted = PruneJob(services, lease).collect_garbage(store, now)
    return report
