"""Verify: do the stored copies of recovery points still hold what their manifests promise?

For each chosen point and each tier it has a copy on (hot, cold), the manifest is read and
authenticated (AEAD with its key as associated data), its stream references are parsed, and its
base image record (``_images/<id>``) too. Then, per store, **one** ``ChunkStore.verify_chunks``
call over every chunk id those manifests name: batched listings say which exist (never a HEAD
per chunk; on the packed cold tier: the chunk is in a pack index and that pack is in the listing
of ``packs/``); with ``read_data`` every chunk is also read (packs by coalesced ranged GETs),
decrypted, decompressed and re-hashed against its id. Problems are attributed back to every
point (and tier) that needs the bad object, so an operator sees which restores would fail.

Note: on real AWS, chunks in GLACIER / DEEP_ARCHIVE cannot be read without a restore request,
so ``read_data`` on such a cold tier fails with a clear error; the existence check works.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from drsvc.backup import IMAGES, image_record_id
from drsvc.catalog import Catalog
from drsvc.chunks import ChunkStore, StreamRef
from drsvc.errors import EXIT_INTEGRITY, EXIT_OK, EXIT_PARTIAL, BackendError, IntegrityError, NotFound
from drsvc.intents import Owner
from drsvc.policy import Policy
from drsvc.prune import manifest_streams
from drsvc.services import Services
from drsvc.store_identity import StoreMismatch, site_copies_as_cold

Event = Callable[..., None]
TIERS = ("hot", "cold")
SHOW_IDS = 5  # chunk ids named per problem (the count is always complete)


@dataclass
class Problem:
    """One thing wrong with one point's copy on one tier."""

    point_id: str
    desktop: str
    tier: str
    store_url: str
    kind: str  # manifest-missing | manifest-corrupt | image-missing | image-corrupt | chunks-missing | chunks-corrupt
    detail: str
    chunks: list[str] = field(default_factory=list)

    def document(self) -> dict[str, Any]:
        return {**self.__dict__, "chunks": self.chunks[:SHOW_IDS], "chunk_count": len(self.chunks)}

    def line(self) -> str:
        return f"{self.point_id} ({self.desktop}) {self.tier} copy in {self.store_url}: {self.detail}"


@dataclass
class VerifyReport:
    read_data: bool
    points: list[str] = field(default_factory=list)
    copies: int = 0
    chunks_checked: dict[str, int] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    unchecked: dict[str, str] = field(default_factory=dict)  # tier -> why its copies could not be checked
    unchecked_points: dict[str, list[str]] = field(default_factory=dict)  # tier -> the points left unchecked

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def exit_code(self) -> int:
        """4 when a copy is damaged; else 6 when a tier could not be checked at all; else 0."""
        if self.problems:
            return EXIT_INTEGRITY
        return EXIT_PARTIAL if self.unchecked else EXIT_OK

    @property
    def affected(self) -> list[str]:
        """Ids of points with at least one bad copy (sorted)."""
        return sorted({p.point_id for p in self.problems})

    def document(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "read_data": self.read_data,
            "points_checked": len(self.points),
            "copies_checked": self.copies,
            "chunks_checked": self.chunks_checked,
            "affected_points": self.affected,
            "problems": [p.document() for p in self.problems],
            "unchecked": [
                {"tier": tier, "why": why, "points": self.unchecked_points.get(tier, [])}
                for tier, why in self.unchecked.items()
            ],
        }


def _refs(doc: dict[str, Any]) -> list[StreamRef]:
    return list(manifest_streams(doc))


def sample_points(catalog: Catalog, policy: Policy, rng: random.Random | None = None) -> list[str]:
    """The points a scheduled verification of ``policy`` checks (see ``policy.Verify``).

    Each desktop's newest complete point first (in random order), then older ones at random, up to
    the sample size; only points with a stored copy.
    """
    assert policy.verify is not None
    rng = rng or random.Random()
    points = [p for p in catalog.points(status="complete", policy=policy.name) if p["tiers"]]
    newest: dict[str, str] = {}
    for p in points:  # newest first
        newest.setdefault(p["desktop_id"], p["id"])
    first = list(newest.values())
    rest = [p["id"] for p in points if p["id"] not in set(first)]
    rng.shuffle(first)
    rng.shuffle(rest)
    return (first + rest)[: policy.verify.sample_size(len(points))]


class VerifyJob:
    """Checks manifests and chunks of the chosen points on every tier they have a copy on."""

    def __init__(self, services: Services, *, on_event: Event | None = None) -> None:
        self.services = services
        self.catalog: Catalog = services.catalog
        self.on_event = on_event or (lambda *a, **k: None)

    def choose(self, point_ids: Iterable[str] | None) -> list[dict[str, Any]]:
        """The named points (``NotFound`` for an unknown id) or, for None, every point with a copy."""
        if point_ids is None:
            return [p for p in self.catalog.points() if p["tiers"]]
        return [self.catalog.point(pid) for pid in point_ids]

    def _store(self, tier: str) -> ChunkStore | None:
        if tier == "cold" and not self.services.has_cold:
            return None
        return self.services.hot if tier == "hot" else self.services.cold

    def run(
        self, point_ids: Iterable[str] | None = None, *, read_data: bool = False, policy: str | None = None
    ) -> VerifyReport:
        """Verify the points; ``policy`` names the policy a scheduled verification ran for."""
        points = self.choose(point_ids)
        report = VerifyReport(read_data, points=[p["id"] for p in points])
        # the owner is renewed while it runs: once it lapses, cleanup ends a killed run's row
        with Owner(self.catalog) as owner:
            detail = self._job_detail(points, read_data)
            job_id = self.catalog.start_job("verify", policy=policy, detail=detail, owner=owner.name)
            with self.catalog.ends_job_if_raised(job_id):
                self._verify_tiers(points, report)
            unchecked = [f"{tier} copies not checked: {why}" for tier, why in report.unchecked.items()]
            self.catalog.finish_job(
                job_id,
                "failed" if not report.ok else "partial" if report.unchecked else "ok",
                error="; ".join([p.line() for p in report.problems[:20]] + unchecked) or None,
                detail=report.document(),
            )
        return report

    def _job_detail(self, points: list[dict[str, Any]], read_data: bool) -> dict[str, Any]:
        return {"points": len(points), "read_data": read_data}

    def _verify_tiers(self, points: list[dict[str, Any]], report: VerifyReport) -> None:
        cold = self.services.config.cold
        sites = site_copies_as_cold(self.services.catalog, cold.store if cold else None)
        for tier in TIERS:
            # a site's copies recorded as cold by `site recover` are `verify --site`'s, not the cold tier's
            members = [p for p in points if tier in p["tiers"] and not (tier == "cold" and p["id"] in sites)]
            if not members:
                continue
            try:
                self._verify_tier(tier, members, report)
            except (BackendError, StoreMismatch) as e:
                # An unreachable tier is not a verdict on its copies: check the other tier and
                # say what was not checked (exit 6), as the s3-unavailable runbook expects. So is
                # a store that is not the one they went to (a lost hot pool, a mistyped bucket).
                report.unchecked[tier] = str(e)
                report.unchecked_points[tier] = [p["id"] for p in members]
                self.on_event("unchecked", tier=tier, error=e)

    def _verify_tier(self, tier: str, members: list[dict[str, Any]], report: VerifyReport) -> None:
        store = self._store(tier)
        if store is None:
            for p in members:
                report.problems.append(
                    Problem(
                        p["id"],
                        p["desktop_id"],
                        tier,
                        "-",
                        "manifest-missing",
                        "the catalog records a cold copy but no cold tier is configured",
                    )
                )
            return
        url = store.store.url
        needs: dict[str, set[str]] = defaultdict(set)  # chunk id -> points needing it
        key_of: dict[str, str | None] = {}  # chunk id -> the data key of its streams
        images: dict[str, tuple[list[StreamRef] | None, str | None]] = {}  # image id -> (refs, problem)
        desktop_of = {p["id"]: p["desktop_id"] for p in members}
        for p in members:
            report.copies += 1
            pid, desktop = p["id"], p["desktop_id"]
            try:
                manifest = store.get_manifest(desktop, pid)
                refs = _refs(manifest)
            except NotFound:
                detail = "manifest is missing"
                recorded = self._recorded_url(pid, tier)
                if recorded not in (None, url):  # a store moved, or a mistyped [cold]/[hot]: say which
                    detail += f" (the catalog records this copy in {recorded}: is the config's [{tier}] right?)"
                report.problems.append(Problem(pid, desktop, tier, url, "manifest-missing", detail))
                continue
            except IntegrityError as e:
                report.problems.append(
                    Problem(
                        pid,
                        desktop,
                        tier,
                        url,
                        "manifest-corrupt",
                        f"manifest fails authentication or is malformed ({e})",
                    )
                )
                continue
            image_id = image_record_id(manifest)
            if image_id is not None:
                if image_id not in images:
                    images[image_id] = self._image(store, image_id)
                image_refs, problem = images[image_id]
                if problem is not None:
                    kind = "image-missing" if "missing" in problem else "image-corrupt"
                    report.problems.append(Problem(pid, desktop, tier, url, kind, problem))
                refs += image_refs or []
            for ref in refs:
                for cid, _ in ref.chunks:
                    needs[cid].add(pid)
                    key_of[cid] = ref.key_id
            self.on_event("manifest", tier=tier, point_id=pid)
        self.on_event("chunks", tier=tier, count=len(needs))
        task = f"verify {tier} (read data)"

        def progress(n: int) -> None:
            self.on_event("progress", task=task, advance=n, item=1, items=len(needs))

        result = store.verify_chunks(
            needs, read_data=report.read_data, key_of=key_of, progress=progress if report.read_data else None
        )
        if report.read_data:
            self.on_event("progress", task=task, done=True)
        report.chunks_checked[tier] = result.checked
        for kind, ids in (("chunks-missing", result.missing), ("chunks-corrupt", result.corrupt)):
            per_point: dict[str, list[str]] = defaultdict(list)
            for cid in ids:
                for pid in needs[cid]:
                    per_point[pid].append(cid)
            for pid, bad in sorted(per_point.items()):
                what = "missing" if kind == "chunks-missing" else "corrupt (fail decryption or hash)"
                report.problems.append(
                    Problem(
                        pid,
                        desktop_of[pid],
                        tier,
                        url,
                        kind,
                        f"{len(bad)} chunk(s) {what}: {', '.join(bad[:SHOW_IDS])}",
                        bad,
                    )
                )

    def _recorded_url(self, point_id: str, tier: str) -> str | None:
        """The store the catalog records ``point_id``'s ``tier`` copy in (asked only for a missing copy)."""
        rows = self.catalog.query("SELECT store_url FROM point_tiers WHERE point_id = ? AND tier = ?", [point_id, tier])
        return rows[0]["store_url"] if rows else None

    @staticmethod
    def _image(store: ChunkStore, image_id: str) -> tuple[list[StreamRef] | None, str | None]:
        try:
            return _refs(store.get_manifest(IMAGES, image_id)), None
        except NotFound:
            return None, f"base image record {IMAGES}/{image_id} is missing"
        except IntegrityError as e:
            return None, f"base image record {IMAGES}/{image_id} fails authentication ({e})"
