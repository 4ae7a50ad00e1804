"""``points ls`` and ``points diff``: what a point holds and what changed, from manifests alone.

No data is read: one manifest per point, from the fastest store that holds it (hot, else cold;
manifests stay in the STANDARD class there, so a cold-only point lists without a restore request).
Every call is audited through its ``Scope``.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from drsvc import hostfs
from drsvc.errors import InvalidInput, NotFound
from drsvc.granular import listing
from drsvc.granular.listing import Diff, ObjectEntry, RootfsListing
from drsvc.granular.reader import ChunkCache, MiB, PointSource, open_point
from drsvc.granular.scope import Scope, audited
from drsvc.intents import reading
from drsvc.services import Services
from drsvc.volumes.base import ObjectHasher


@dataclass
class PointListing:
    """One point's objects (under a prefix) and root filesystem files."""

    source: PointSource
    prefix: str | None
    objects: list[ObjectEntry]
    rootfs: RootfsListing

    def document(self, *, long: bool = False) -> dict[str, Any]:
        point = self.source.point
        manifest = self.source.manifest
        return {
            "point_id": point["id"],
            "desktop": point["desktop_id"],
            "taken_at": point["taken_at"],
            "tiers": point["tiers"],
            "prefix": self.prefix,
            "volume": {
                "url": (manifest.get("volume") or {}).get("url"),
                "count": len(self.objects),
                "bytes": sum(o.size for o in self.objects),
                "objects": [o.document(long=long) for o in self.objects],
            },
            "rootfs": {
                "recorded": self.rootfs.recorded,
                "files": [f.document() for f in self.rootfs.files],
                "deleted": self.rootfs.deleted,
                "notes": self.rootfs.notes,
            },
        }


def list_point(services: Services, scope: Scope, point_ref: str, prefix: str | None = None) -> PointListing:
    """The objects of ``point_ref``'s volume under ``prefix`` and its root filesystem files."""
    point, desktop = scope.point(point_ref, detail={"prefix": prefix})
    with audited(scope, desktop=desktop["id"], point=point["id"], detail={"prefix": prefix}):
        source = open_point(services, point, desktop)
        objects = list(listing.under(listing.objects(source.manifest), prefix))
        rootfs = listing.rootfs(source.manifest)
        if prefix is not None:
            rootfs.files = [f for f in rootfs.files if f.path.startswith(prefix.lstrip("/"))]
            rootfs.deleted = [p for p in rootfs.deleted if p.startswith(prefix.lstrip("/"))]
    return PointListing(source, prefix, objects, rootfs)


@dataclass
class PointDiff:
    a: PointSource
    b: PointSource
    diff: Diff

    def document(self) -> dict[str, Any]:
        return {
            "desktop": self.a.point["desktop_id"],
            "from": {"point_id": self.a.id, "taken_at": self.a.point["taken_at"]},
            "to": {"point_id": self.b.id, "taken_at": self.b.point["taken_at"]},
            **self.diff.document(),
        }


def diff_points(services: Services, scope: Scope, a_ref: str, b_ref: str) -> PointDiff:
    """Objects added, removed and changed from point ``a_ref`` to point ``b_ref`` of one desktop."""
    pa, desktop = scope.point(a_ref, detail={"diff_to": b_ref})
    pb, _ = scope.point(b_ref, detail={"diff_from": a_ref})
    if pa["desktop_id"] != pb["desktop_id"]:
        raise InvalidInput(
            f"points {pa['id']} and {pb['id']} belong to different desktops "
            f"({pa['desktop_id']}, {pb['desktop_id']}); diff compares two points of one desktop"
        )
    with (
        audited(scope, desktop=desktop["id"], point=pa["id"], detail={"diff_to": pb["id"]}),
        contextlib.ExitStack() as leases,
    ):
        a = open_point(services, pa, desktop)
        b = open_point(services, pb, desktop)
        result = listing.diff(a.manifest, b.manifest, _ReadToCompare(services, b, leases))
    return PointDiff(a, b, result)


class _ReadToCompare:
    """``listing.SameContent`` for digests of two forms that nothing else decides: read B's object
    (checked against B's digest on the way, as a dump is) and hash it in the form of A's digest.
    Rare (a rewrite to the same size and metadata between a point of each form); the first read
    takes a read lease on B, so prune keeps it meanwhile."""

    def __init__(self, services: Services, b: PointSource, leases: contextlib.ExitStack) -> None:
        self.services, self.b, self.leases = services, b, leases
        self.leased = False

    def __call__(self, before: ObjectEntry, after: ObjectEntry) -> bool:
        if not self.leased:
            self.leases.enter_context(reading(self.services.catalog, [self.b.id], reader="diff"))
            self.leased = True
        _tier, data = self.b.open_object(after)
        hasher = ObjectHasher.like(before.digest)
        for piece in data:
            hasher.update(piece)
        return hasher.finish(after.xattrs, after.omap) == before.digest


# ---------------------------------------------------------------------- dump


def dump_object(
    services: Services, scope: Scope, point_ref: str, name: str, out: BinaryIO, *, copy: str | None = None
) -> tuple[str, int]:
    """Write one object's bytes to ``out`` as they arrive (bounded memory); returns (tier, bytes).

    The object's digest is checked after its last byte: a mismatch raises ``IntegrityError`` (exit 4),
    so a consumer that saw the bytes learns they were wrong.
    """
    point, desktop = scope.point(point_ref, detail={"object": name})
    detail: dict[str, Any] = {"object": name}
    with (
        audited(scope, desktop=desktop["id"], point=point["id"], detail=detail),
        reading(services.catalog, [point["id"]], reader="dump"),
    ):
        source = open_point(services, point, desktop)
        entry = source.entry(name)
        tiers = [t for t in source.tiers if copy is None or t == copy]
        if not tiers:
            raise NotFound(f"point {point['id']} has no {copy} copy (copies: {', '.join(source.tiers)})")
        used, data = source.open_object(entry, tiers)
        written = 0
        for piece in data:
            hostfs.write_all(out, piece)  # a short write on a full disk must not pass as done
            written += len(piece)
        out.flush()
        detail.update(tier=used, bytes=written)
    return used, written


# ---------------------------------------------------------------------- mount


@dataclass
class MountPlan:
    """What ``drsvc mount`` will serve: one point, or every restorable point of a desktop."""

    desktop: dict[str, Any]
    single: PointSource | None
    points: dict[str, dict[str, Any]]

    def describe(self) -> str:
        if self.single is not None:
            return f"point {self.single.id} of {self.desktop['id']}"
        return f"{len(self.points)} points of {self.desktop['id']}"


def plan_mount(services: Services, scope: Scope, what: str) -> MountPlan:
    """``what`` is a desktop id (all its points) or a point id (prefix)."""
    from drsvc.granular.fusefs import dated_names

    if services.catalog.query("SELECT 1 FROM desktops WHERE id = ?", [what]):
        desktop = scope.desktop(what, detail={"mount": "desktop"})
        rows = [p for p in services.catalog.points(what, status="complete") if p["tiers"]]
        if not rows:
            raise NotFound(f"desktop {what} has no restorable recovery point to mount")
        return MountPlan(desktop, None, dated_names(rows))
    point, desktop = scope.point(what, detail={"mount": "point"})
    return MountPlan(desktop, open_point(services, point, desktop), {})


def serve_mount(services: Services, scope: Scope, plan: MountPlan, directory: Path, *, cache_mib: int = 64) -> None:
    """Serve the plan at ``directory`` until it is unmounted (Ctrl-C, SIGTERM, fusermount3 -u)."""
    from drsvc.granular.fusefs import MountView, serve

    cache = ChunkCache(capacity=cache_mib * MiB, read_ahead=min(16 * MiB, cache_mib * MiB // 2))

    def opener(point: dict[str, Any]) -> PointSource:
        return open_point(services, point, plan.desktop)

    view = MountView(plan.points, opener, cache, single=plan.single)
    point_id = plan.single.id if plan.single else None
    detail: dict[str, Any] = {"directory": str(directory), "points": len(plan.points) or 1}
    try:
        # the points stay (prune skips them) while mounted, however long that is
        reading_ids = [point_id] if point_id else [p["id"] for p in plan.points.values()]
        with (
            audited(scope, desktop=plan.desktop["id"], point=point_id, detail=detail),
            reading(services.catalog, reading_ids, reader="mount"),
        ):
            serve(view, directory, fsname=f"drsvc:{point_id or plan.desktop['id']}")
            detail.update(reads=view.reads, chunks_fetched=cache.fetched)
    finally:
        cache.close()
