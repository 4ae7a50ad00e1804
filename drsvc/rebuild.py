"""Catalog rebuild and drift: the stores are the truth, the catalog is a record of them.

``rebuild_catalog`` reads every manifest of the hot and cold chunk stores (one listing per store,
then each manifest once, hot preferred) and puts back what the catalog lacks: the desktop (from
the manifest's runtime section), its pool snapshot (name and pool from the manifest), the point
with the same id, desktop, time, policy, consistency and reason, its tiers (the cold tier with its
Object Lock retention, read from the manifest object), and its artifacts. It never deletes or
rewrites rows that exist, so it is safe to run on a live catalog to repair drift, and running it
twice changes nothing the second time.

Not recoverable from the stores (they never held it): jobs, drills, restores, per-point
``stored_bytes`` of the hot tier and dedup counters; ``cold_locks`` is a cache and refills itself
(tiering then extends each shared cold object's lock once).

``catalog_drift`` compares both ways with one listing per store: catalog copies whose manifest
is gone, and manifests with no catalog row. ``forget_missing`` repairs the first kind: the record
of a copy whose manifest is gone from its configured store is dropped (the point stays).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from drsvc import clock
from drsvc.backup import IMAGES
from drsvc.chunks import ChunkStore, StreamRef
from drsvc.errors import DrsvcError, IntegrityError, NotFound
from drsvc.services import Services
from drsvc.store_identity import StoreMismatch, site_copies_as_cold
from drsvc.tiering import manifest_key

Event = Callable[..., None]


@dataclass
class RebuildReport:
    dry_run: bool
    manifests: int = 0
    desktops_added: list[str] = field(default_factory=list)
    snapshots_added: list[str] = field(default_factory=list)
    points_added: list[str] = field(default_factory=list)
    tiers_added: list[str] = field(default_factory=list)
    tiers_forgotten: list[str] = field(default_factory=list)
    points_present: int = 0
    problems: list[str] = field(default_factory=list)

    def document(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _stores(services: Services) -> list[tuple[str, ChunkStore]]:
    stores = []
    if services.config.hot is not None:
        stores.append(("hot", services.hot))
    if services.has_cold:
        stores.append(("cold", services.cold))
    return stores


def _stores_for_check(services: Services) -> tuple[dict[str, ChunkStore], dict[str, str]]:
    """The configured stores, and for each one refused as not the one its copies went to, why."""
    stores: dict[str, ChunkStore] = {}
    refused: dict[str, str] = {}
    for tier, configured in (("hot", services.config.hot is not None), ("cold", services.has_cold)):
        if not configured:
            continue
        try:
            stores[tier] = services.hot if tier == "hot" else services.cold
        except StoreMismatch as e:
            refused[tier] = str(e)
    return stores, refused


def _listing(store: ChunkStore, desktop: str | None = None) -> dict[str, str]:
    """point id -> desktop of every point manifest in the store, or of one desktop's (one listing;
    image records skipped)."""
    return {pid: d for d, pid in store.list_manifests(desktop) if d != IMAGES}


def _scope(services: Services, volume_url: str) -> str:
    try:
        return services.volume(volume_url).scope
    except DrsvcError:
        return volume_url.rsplit("/", 1)[0]  # rados://POOL/NAMESPACE -> rados://POOL


def rebuild_catalog(
    services: Services,
    *,
    dry_run: bool = False,
    forget_missing: bool = False,
    now: datetime | None = None,
    on_event: Event | None = None,
    desktop: str | None = None,
) -> RebuildReport:
    """Add to the catalog every point (and desktop, snapshot, tier, artifact) the stores hold
    (``desktop``: only that desktop's; not with ``forget_missing``).

    With ``forget_missing``, also drop the catalog's record of each copy whose manifest is gone
    from the configured store of its tier (the other direction of drift). Points stay, with the
    copies they still have; copies recorded in another store than the configured one are left
    alone (a configuration mistake must not erase the catalog). A later rebuild adds back any
    copy whose manifest returns.
    """
    if desktop is not None and forget_missing:
        raise ValueError("forget_missing needs every manifest, not one desktop's")
    now = now or clock.now()
    on_event = on_event or (lambda *a, **k: None)
    catalog = services.catalog
    report = RebuildReport(dry_run)
    found: dict[str, dict[str, Any]] = {}  # point id -> {"desktop", "tiers": {tier: store}}
    listed: dict[str, tuple[str, set[str]]] = {}  # tier -> (store url, point ids with a manifest there)
    for tier, store in _stores(services):
        listing = _listing(store, desktop)
        listed[tier] = (store.store.url, set(listing))
        for pid, owner in listing.items():
            entry = found.setdefault(pid, {"desktop": owner, "tiers": {}})
            entry["tiers"][tier] = store
            report.manifests += 1
    forgotten: list[tuple[str, str]] = []
    if forget_missing:
        for r in catalog.query("SELECT point_id, tier, store_url FROM point_tiers ORDER BY point_id, tier"):
            url, present = listed.get(r["tier"], ("", set()))
            if r["store_url"] == url and r["point_id"] not in present:
                forgotten.append((r["point_id"], r["tier"]))
        report.tiers_forgotten = [f"{pid}:{tier}" for pid, tier in forgotten]
    known_points = {r["id"] for r in catalog.query("SELECT id FROM points")}
    known_tiers = {(r["point_id"], r["tier"]) for r in catalog.query("SELECT point_id, tier FROM point_tiers")}
    known_desktops = {r["id"] for r in catalog.query("SELECT id FROM desktops")}

    documents: list[tuple[str, dict[str, Any], dict[str, ChunkStore]]] = []
    for pid, entry in sorted(found.items()):
        missing_tiers = {t: s for t, s in entry["tiers"].items() if (pid, t) not in known_tiers}
        if pid in known_points and not missing_tiers:
            report.points_present += 1
            continue
        manifest = None
        for tier, store in entry["tiers"].items():
            try:
                manifest = store.get_manifest(entry["desktop"], pid)
                break
            except (IntegrityError, NotFound) as e:
                report.problems.append(f"{tier} manifest {entry['desktop']}/{pid} in {store.store.url}: {e}")
        if manifest is None or manifest.get("point_id") != pid:
            continue
        documents.append((pid, manifest, missing_tiers))

    if dry_run:
        for pid, manifest, tiers in documents:
            if pid not in known_points:
                report.points_added.append(pid)
            report.tiers_added += [f"{pid}:{t}" for t in tiers]
            if manifest["desktop"] not in known_desktops:
                known_desktops.add(manifest["desktop"])
                report.desktops_added.append(manifest["desktop"])
        return report

    # newest manifest per desktop describes the desktop (container, labels may have changed)
    newest: dict[str, dict[str, Any]] = {}
    for _pid, manifest, _ in documents:
        d = manifest["desktop"]
        if d not in newest or manifest["taken_at"] > newest[d]["taken_at"]:
            newest[d] = manifest
    hot_snapshots = {
        (m["volume"] or {}).get("pool_snapshot") for pid, m, _ in documents if "hot" in found[pid]["tiers"]
    }
    with catalog.transaction():
        for pid, tier in forgotten:
            catalog.drop_tier(pid, tier)
        for name, manifest in sorted(newest.items()):
            if name in known_desktops:
                continue
            add_desktop(catalog, manifest)
            report.desktops_added.append(name)
        for pid, manifest, tiers in documents:
            if pid not in known_points:
                snapshot_live = manifest_snapshot(manifest) in hot_snapshots
                snap_id = record_snapshot(services, manifest, snapshot_live=snapshot_live, now=now, report=report)
                add_point(catalog, pid, manifest, snap_id)
                report.points_added.append(pid)
            for tier, store in tiers.items():
                add_copy(catalog, pid, manifest, tier, store)
                report.tiers_added.append(f"{pid}:{tier}")
            on_event("point", point_id=pid)
    return report


# ---------------------------------------------------------------------- one point from its manifest
# rebuild_catalog uses these for every manifest it lacks; drsvc.agents for exactly the points a
# node agent reports.


def manifest_snapshot(manifest: dict[str, Any]) -> str | None:
    """The pool snapshot a manifest's volume was read from."""
    return (manifest.get("volume") or {}).get("pool_snapshot")


def add_desktop(catalog: Any, manifest: dict[str, Any]) -> None:
    """Record the desktop a manifest describes (container, volume, tenant, labels, image)."""
    runtime = manifest.get("runtime") or {}
    catalog.upsert_desktop(
        {
            "id": manifest["desktop"],
            "runtime_url": runtime.get("url") or "unknown://",
            "container": runtime.get("container") or manifest["desktop"],
            "volume": (manifest.get("volume") or {}).get("url"),
            "tenant": runtime.get("tenant"),
            "labels": runtime.get("labels") or {},
            "image": runtime.get("image"),
        }
    )


def add_copy(catalog: Any, pid: str, manifest: dict[str, Any], tier: str, store: ChunkStore, **fields: Any) -> None:
    """Record that ``store`` holds the point (the cold tier with its Object Lock retention)."""
    retain = None
    lookup = getattr(store.store, "retain_until", None)
    if tier == "cold" and lookup is not None:
        until = lookup(manifest_key(manifest["desktop"], pid))
        retain = clock.to_iso(until) if until else None
    catalog.set_tier(pid, tier, store.store.url, retain_until=retain, **fields)


def record_snapshot(
    services: Services,
    manifest: dict[str, Any],
    *,
    snapshot_live: bool,
    now: datetime,
    report: RebuildReport | None = None,
    job_id: int | None = None,
) -> int | None:
    """The catalog row of the pool snapshot a manifest names, added when missing.

    ``snapshot_live``: whether the snapshot still exists (prune removes one once no hot copy needs
    it, so a point with no hot copy left names a snapshot that is gone).
    """
    volume = manifest.get("volume") or {}
    name, url = volume.get("pool_snapshot"), volume.get("url")
    if not name or not url:
        return None
    catalog = services.catalog
    pool = _scope(services, url)
    rows = catalog.query("SELECT id FROM pool_snapshots WHERE pool = ? AND name = ?", [pool, name])
    if rows:
        return int(rows[0]["id"])
    cursor = catalog.execute(
        "INSERT INTO pool_snapshots (pool, name, taken_at, removed_at, job_id) VALUES (?, ?, ?, ?, ?)",
        [pool, name, manifest["taken_at"], None if snapshot_live else clock.to_iso(now), job_id],
    )
    if report is not None:
        report.snapshots_added.append(name)
    return int(cursor.lastrowid or 0)


def add_point(catalog: Any, pid: str, manifest: dict[str, Any], snap_id: int | None, **fields: Any) -> None:
    """The point row and its artifacts, from the manifest; ``fields`` add what only a live run knew."""
    volume = manifest.get("volume") or {}
    checkpoint = manifest.get("checkpoint") or None
    runtime = manifest.get("runtime") or {}
    refs = []
    if isinstance(volume.get("stream"), dict):
        refs.append(("volume", volume.get("url") or "volume", StreamRef.from_dict(volume["stream"])))
    if isinstance(checkpoint, dict) and isinstance(checkpoint.get("stream"), dict):
        refs.append(("checkpoint", runtime.get("container") or "checkpoint", StreamRef.from_dict(checkpoint["stream"])))
    image = manifest.get("image") or {}
    catalog.add_point(
        {
            "id": pid,
            "desktop_id": manifest["desktop"],
            "policy": manifest.get("policy"),
            "taken_at": manifest["taken_at"],
            "status": "complete",
            "consistency": manifest.get("consistency") or "crash",
            "reason": manifest.get("reason"),
            "pool_snapshot_id": snap_id,
            "image": image.get("image_id") or runtime.get("image_id"),
            "bytes": sum(ref.size for _, _, ref in refs),
            "freeze_ms": manifest.get("freeze_ms"),
            "freeze_budget_ms": manifest.get("freeze_budget_ms"),
            "completed_at": manifest["taken_at"],
            **fields,
        }
    )
    held = checkpoint.get("held_files") if isinstance(checkpoint, dict) else None
    for kind, name, ref in refs:
        catalog.add_artifact(
            {
                "point_id": pid,
                "kind": kind,
                "name": name,
                "bytes": ref.size,
                "chunks": len(ref.chunks),
                "digest": ref.hash,
                "held_files": json.dumps(held) if kind == "checkpoint" and held else None,
            }
        )


def catalog_drift(services: Services) -> list[str]:
    """Differences between catalog and stores, both ways (one listing per store)."""
    catalog = services.catalog
    problems: list[str] = []
    rows = catalog.query(
        "SELECT t.point_id, t.tier, t.store_url, p.desktop_id FROM point_tiers t "
        "JOIN points p ON p.id = t.point_id ORDER BY t.point_id, t.tier"
    )
    stores, refused = _stores_for_check(services)
    cold = services.config.cold
    sites = site_copies_as_cold(catalog, cold.store if cold else None)  # the sites' (verify --site)
    for tier in ("hot", "cold"):
        mine = [r for r in rows if r["tier"] == tier and not (tier == "cold" and r["point_id"] in sites)]
        store = stores.get(tier)
        if tier in refused:  # not the store the copies went to (drsvc.store_identity): the drift is that
            problems.append(f"{tier}: {refused[tier]}; its {len(mine)} recorded copies not checked")
            continue
        if store is None:
            if mine:
                problems.append(f"catalog: {len(mine)} point(s) have a {tier} copy, but no {tier} store is configured")
            continue
        url = store.store.url
        listing = _listing(store)
        recorded = set()
        for r in mine:
            recorded.add(r["point_id"])
            if r["store_url"] != url:
                problems.append(
                    f"catalog: point {r['point_id']} has its {tier} copy in {r['store_url']}, "
                    f"but the configured {tier} store is {url}"
                )
            elif r["point_id"] not in listing:
                problems.append(
                    f"catalog: point {r['point_id']} ({r['desktop_id']}) has a {tier} copy in {url}, "
                    "but its manifest is not there"
                )
        for pid, desktop in sorted(listing.items()):
            if pid not in recorded:
                problems.append(
                    f"storage: manifest {desktop}/{pid} in {url} has no catalog row (drsvc catalog rebuild adds it)"
                )
    return problems
