"""Which points go cold (``plan_tiering``, pure over the catalog and policies): complete points with
a hot copy and no cold copy, taken at least the policy's ``tiering.after`` ago, and kept by the
policy's *cold* retention applied over the desktop's complete points (the same set hot prune
uses to hold hot copies "waiting to be tiered"), so nothing is uploaded that cold prune would
drop at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from drsvc import clock
from drsvc.catalog import Catalog
from drsvc.policy import Policy, PolicySet
from drsvc.prune import point_groups
from drsvc.retention import apply_retention


@dataclass
class Candidate:
    """A point due for the cold tier, with the policy that sends it there."""

    point: dict[str, Any]
    policy: Policy
    reasons: list[str]


def plan_tiering(catalog: Catalog, policies: PolicySet, now: datetime) -> list[Candidate]:
    """Points to copy to the cold tier now, oldest first, with why (pure over catalog + policies)."""
    due: list[Candidate] = []
    for _desktop, policy, members in point_groups(catalog, policies):
        if policy.tiering is None:
            continue
        stamps = [(p["id"], clock.from_iso(p["taken_at"])) for p in members]
        wanted = apply_retention(stamps, policy.retention.cold, policy.tz).keep
        cutoff = now - policy.tiering.after
        for point in members:
            if "hot" not in point["tiers"] or "cold" in point["tiers"]:
                continue
            if clock.from_iso(point["taken_at"]) > cutoff or point["id"] not in wanted:
                continue
            reasons = [f"older than tiering.after ({policy.tiering.after})", *wanted[point["id"]]]
            due.append(Candidate(point, policy, reasons))
    due.sort(key=lambda c: (c.point["taken_at"], c.point["id"]))
    return due
