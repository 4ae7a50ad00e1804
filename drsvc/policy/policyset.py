"""``PolicySet``: every valid policy by name, with the file each came from, lookups by name or
desktop, and the non-fatal warnings (RPO shorter than the schedule allows, cold rules without
tiering, sites without tiering).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from drsvc.errors import NotFound
from drsvc.policy.model import Policy
from drsvc.units import format_duration


@dataclass(frozen=True)
class PolicySet:
    """Every valid policy, by name, with the file each came from and non-fatal warnings."""

    policies: Mapping[str, Policy] = field(default_factory=dict)
    sources: Mapping[str, Path] = field(default_factory=dict)
    files: tuple[Path, ...] = ()

    @cached_property
    def warnings(self) -> tuple[str, ...]:
        """Non-fatal problems, computed on first use: the RPO check samples a year of cron runs,
        which commands that only need the policies (restore at 3 a.m.) should not pay for."""
        return tuple(w for name, policy in self.policies.items() for w in _warnings(self.sources[name], policy))

    def __iter__(self) -> Iterator[Policy]:
        return iter(self.policies.values())

    def __len__(self) -> int:
        return len(self.policies)

    def __contains__(self, name: object) -> bool:
        return name in self.policies

    @property
    def names(self) -> list[str]:
        return list(self.policies)

    def get(self, name: str) -> Policy:
        """The policy called ``name``; ``NotFound`` (exit 3) names the known ones."""
        try:
            return self.policies[name]
        except KeyError:
            known = ", ".join(sorted(self.policies)) or "none"
            close = difflib.get_close_matches(name, list(self.policies), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise NotFound(f"no policy named {name!r}{hint}; known policies: {known}") from None

    def for_desktop(
        self, desktop_id: str, tenant: str | None = None, labels: Mapping[str, str] | None = None
    ) -> list[Policy]:
        """Every policy whose selector matches the desktop, in name order."""
        labels = labels or {}
        return [p for name, p in sorted(self.policies.items()) if p.selector.matches(desktop_id, tenant, labels)]


def _warnings(file: Path, policy: Policy) -> list[str]:
    out = []
    rpo = policy.objectives.rpo
    if rpo is not None:
        gap = policy.interval_max()
        if rpo < gap:
            out.append(
                f"{file}: objectives.rpo: {format_duration(rpo)} is shorter than the longest gap between "
                f"scheduled runs ({format_duration(gap)}); the RPO will be missed every such gap"
            )
    if not policy.retention.cold.empty and policy.tiering is None:
        out.append(f"{file}: retention.cold: rules given but no tiering section, so no point ever goes cold")
    if policy.sites and policy.tiering is None:
        out.append(f"{file}: sites: copies go to other sites from the cold tier, but there is no tiering section")
    return out
