"""Which points go to which site and when, and which copies a site keeps: pure over catalog + policies.

**Copies** (``plan_copies``): for each desktop and the policy that governs its points, for each
site the policy names (``sites: {NAME: {after, retention, object_lock_days}}``), the complete
points that are cold (sites copy the cold tier's packs as they are), at least ``after`` old, not at
the site yet, and kept by the site's own retention applied over the desktop's complete points --
nothing is sent that the site's prune would drop at once. A policy naming a site the config does
not define is reported, not guessed.

**Site prune** (``plan_site_prune``): the site's retention over the copies it holds. A copy whose
Object Lock at that site has not expired is kept (skipped, not attempted), whatever the rules; a
copy whose policy no longer names the site is kept (removing a site from a policy must not delete
its copies); prune at one site never looks at another site's copies or locks.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from drsvc import clock
from drsvc.catalog import Catalog
from drsvc.policy import Policy, PolicySet, SiteCopy
from drsvc.prune import Decision, point_groups, policy_for
from drsvc.retention import apply_retention
from drsvc.units import format_duration


@dataclass
class CopyCandidate:
    """A point due at a site, with the policy entry that sends it there and why."""

    point: dict[str, Any]
    policy: Policy
    site: str
    copy: SiteCopy | None
    reasons: list[str] = field(default_factory=list)
    problem: str | None = None  # set when the point cannot go (site not configured)


def _stamps(points: Iterable[dict[str, Any]]) -> list[tuple[str, datetime]]:
    return [(p["id"], clock.from_iso(p["taken_at"])) for p in points]


def plan_copies(
    catalog: Catalog, policies: PolicySet, configured: Iterable[str], now: datetime, *, site: str | None = None
) -> list[CopyCandidate]:
    """Points to copy now (to ``site`` only, when given), oldest first, with why."""
    known = set(configured)
    due: list[CopyCandidate] = []
    for _desktop, policy, members in point_groups(catalog, policies):
        for name, entry in sorted(policy.sites.items()):
            if site is not None and name != site:
                continue
            wanted = apply_retention(_stamps(members), entry.retention, policy.tz).keep
            cutoff = now - entry.after
            for point in members:
                if name in point["sites"] or "cold" not in point["tiers"]:
                    continue
                if clock.from_iso(point["taken_at"]) > cutoff or point["id"] not in wanted:
                    continue
                why = f"cold and older than sites.{name}.after ({format_duration(entry.after)})"
                reasons = [why, *wanted[point["id"]]]
                candidate = CopyCandidate(point, policy, name, entry, reasons)
                if name not in known:
                    candidate.problem = f"policy {policy.name} names site {name!r}, which the config does not define"
                due.append(candidate)
    due.sort(key=lambda c: (c.site, c.point["taken_at"], c.point["id"]))
    return due


def site_copies(catalog: Catalog, site: str) -> dict[str, dict[str, Any]]:
    """point id -> its ``point_sites`` row at ``site``."""
    rows = catalog.query("SELECT * FROM point_sites WHERE site = ?", [site])
    return {r["point_id"]: r for r in rows}


def plan_site_prune(
    catalog: Catalog, policies: PolicySet, site: str, now: datetime
) -> tuple[list[Decision], list[str]]:
    """Keep/drop of every copy at ``site`` with reasons, and the ids kept only because still locked."""
    copies = site_copies(catalog, site)
    if not copies:
        return [], []
    desktops = {d["id"]: d for d in catalog.desktops()}
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    by_name: dict[str, Policy | None] = {}
    for point in catalog.points():
        if point["id"] not in copies:
            continue
        policy = policy_for(point, policies, desktops)
        name = policy.name if policy else ""
        by_name[name] = policy
        groups[(point["desktop_id"], name)].append(point)
    decisions: list[Decision] = []
    locked: list[str] = []
    for (desktop, name), members in sorted(groups.items()):
        policy = by_name[name]
        entry = policy.sites.get(site) if policy else None
        if policy is None or entry is None or entry.retention.empty:
            why = (
                f"site {site} keeps every copy of policy {name} (no retention rules for it)"
                if entry is not None
                else f"no policy names site {site} for these points any more: copies kept"
            )
            decisions += [Decision(p["id"], desktop, f"site:{site}", p["taken_at"], True, [why]) for p in members]
            continue
        result = apply_retention(_stamps(members), entry.retention, policy.tz)
        for p in members:
            reasons = result.keep.get(p["id"])
            keep = reasons is not None
            until = copies[p["id"]]["retain_until"]
            if not keep and until and clock.from_iso(until) > now:
                keep, reasons = True, [f"locked at site {site} until {until} (S3 Object Lock)"]
                locked.append(p["id"])
            decisions.append(
                Decision(
                    p["id"],
                    desktop,
                    f"site:{site}",
                    p["taken_at"],
                    keep,
                    reasons or [f"not kept by sites.{site}.retention ({entry.retention.describe()})"],
                )
            )
    return decisions, locked
