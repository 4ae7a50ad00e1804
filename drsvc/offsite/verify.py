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
        points = self.choose(point_ids)
        report = VerifyReport(read_data, points=[p["id"] for p in points])
        tier = f"site:{self.site}"
        job_id = self.catalog.start_job("verify", policy=policy, detail={"site": self.site, "points": len(points)})
        try:
            members = [p for p in points if self.site in p["sites"]]
            for p in points:
                if self.site not in p["sites"]:
                    report.problems.append(
                        Problem(p["id"], p["desktop_id"], tier, "-", "manifest-missing", f"no copy at site {self.site}")
                    )
            if members:
                self._verify_tier(tier, members, report)
        except BaseException as e:
            self.catalog.finish_job(job_id, "failed", error=str(e) or type(e).__name__)
            raise
        self.catalog.finish_job(
            job_id,
            "ok" if report.ok else "failed",
            error="; ".join(p.line() for p in report.problems[:20]) or None,
            detail=report.document(),
        )
        return report
