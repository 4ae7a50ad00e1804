"""``drsvc verify --site NAME``: the copies at another site, checked as the cold tier is.

The same checks as ``drsvc.verify`` (manifests authenticate, their image records too, every chunk
is in an index whose pack exists; with ``read_data`` every chunk is read and re-hashed), against
the site's store, for the points the catalog records there. Problems name the site as the tier
(``site:NAME``), so an operator sees which copies a site recovery could not use.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from drsvc.chunks import ChunkStore
from drsvc.services import Services
from drsvc.verify import Problem, VerifyJob, VerifyReport


class SiteVerifyJob(VerifyJob):
    """Verifies the copies recorded at one site."""

    def __init__(self, services: Services, site: str, *, on_event: Callable[..., None] | None = None) -> None:
        super().__init__(services, on_event=on_event)
        self.site = site

    def _store(self, tier: str) -> ChunkStore | None:
        return self.services.site(self.site)

    def choose(self, point_ids: Iterable[str] | None) -> list[dict[str, Any]]:
        if point_ids is None:
            return [p for p in self.catalog.points() if self.site in p["sites"]]
        return [self.catalog.point(pid) for pid in point_ids]

    def run(
        self, point_ids: Iterable[str] | None = None, *, read_data: bool = False, policy: str | None = None
    ) -> VerifyReport:
        self.services.site(self.site)  # unreachable or empty site: one clear error before anything
        return super().run(point_ids, read_data=read_data, policy=policy)

    def _job_detail(self, points: list[dict[str, Any]], read_data: bool) -> dict[str, Any]:
        return {"site": self.site, "points": len(points)}

    def _verify_tiers(self, points: list[dict[str, Any]], report: VerifyReport) -> None:
        tier = f"site:{self.site}"
        members = [p for p in points if self.site in p["sites"]]
        for p in points:
            if self.site not in p["sites"]:
                report.problems.append(
                    Problem(p["id"], p["desktop_id"], tier, "-", "manifest-missing", f"no copy at site {self.site}")
                )
        if members:
            self._verify_tier(tier, members, report)
