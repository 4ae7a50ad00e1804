"""``drsvc copy``: replicate due points' sealed objects from the cold tier to other sites.

Nothing is decrypted or re-encrypted: every object of a chunk store is sealed for its own key
(AES-GCM with ``drsvc/<key>`` as associated data), and a site's store uses the same keys, so the
cold tier's pack, its index, the image record and the manifest are copied byte for byte
(``drsvc.storage.transfer``: server-side when both stores are one S3 service, streamed
otherwise, each object verified at the destination). The store's ``config`` goes first, so the
site is a chunk store of its own that ``site recover`` opens with the key material alone; the
tenants' wrapped data keys (``keys/``) follow before any point that needs them.

**Order, and so resumability.** Per site one listing says what is there already (packs, indexes,
image records, manifests). Then: the packs (and loose chunks of stores tiered before packs) the
due points need, in parallel; then their indexes (an index is the commit record of its pack, as
in the cold tier); then per point its image record and **its manifest last**. A run killed at any
moment leaves objects that the next run's listing skips, and no manifest whose data is missing: a
point is at the site only once its manifest is. Copies are recorded in ``point_sites``.

**Object Lock per site.** Copied objects get the site's lock (``sites.NAME.object_lock_days`` of
the policy, else of the site); objects already there that a newly locked point reuses are extended
(``cold_locks`` remembers each object's retention per store URL, as for the cold tier). A site's
locks are its own: prune at the primary or at another site never deletes anything here.

**Bandwidth**: ``--limit-upload`` (KiB/s) bounds the bytes copied per second over all workers.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from drsvc import clock
from drsvc.backup import IMAGES, image_record_id
from drsvc.chunks import CONFIG_KEY, ChunkStore, chunk_key, index_key, pack_key
from drsvc.chunks.layout import KEYS_PREFIX
from drsvc.errors import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_PARTIAL,
    ConfigError,
    DrsvcError,
    IntegrityError,
    InvalidInput,
    NotFound,
)
from drsvc.intents import Intents, Owner
from drsvc.lease import Lease
from drsvc.offsite.plan import CopyCandidate, plan_copies
from drsvc.prune import manifest_streams
from drsvc.services import Services
from drsvc.sites import site_section
from drsvc.storage.base import ObjectStore, ordered_map
from drsvc.storage.transfer import RateLimit, Transfer
from drsvc.tiering import META_CLASS, manifest_key

Event = Callable[..., None]
WORKERS = 4  # packs in flight per site (~16 MiB each: memory stays ~64 MiB when streamed)
SMALL_WORKERS = 16  # indexes, image records, manifests: small, so latency-bound, not bandwidth-bound
# Store-level objects a site needs to be read with the key material alone, besides packs and
# indexes: the config (format, chunker parameters, key check) and the tenants' wrapped data keys.
STORE_OBJECTS = (CONFIG_KEY,)
STORE_PREFIXES = (KEYS_PREFIX,)


def _quiet(*_a: Any, **_k: Any) -> None:
    return None


@dataclass
class CopyMove:
    """One point's copy to one site."""

    point_id: str
    desktop: str
    policy: str
    site: str
    taken_at: str
    status: str = "planned"  # planned | done | failed
    retain_until: str | None = None
    objects: int = 0
    objects_copied: int = 0
    bytes_copied: int = 0
    seconds: float = 0.0
    reasons: list[str] = field(default_factory=list)
    error: str | None = None

    def document(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class CopyReport:
    dry_run: bool
    job_id: int | None = None
    moves: list[CopyMove] = field(default_factory=list)
    modes: dict[str, str] = field(default_factory=dict)  # site -> server-side | streamed
    timings: dict[str, dict[str, float]] = field(default_factory=dict)  # site -> step -> seconds
    notes: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        failed = sum(m.status == "failed" for m in self.moves)
        if not failed:
            return EXIT_OK
        return EXIT_PARTIAL if failed < len(self.moves) else EXIT_FAILED

    def document(self) -> dict[str, Any]:
        done = [m for m in self.moves if m.status == "done"]
        return {
            "dry_run": self.dry_run,
            "job_id": self.job_id,
            "notes": self.notes,
            "modes": self.modes,
            "timings": self.timings,
            "moves": [m.document() for m in self.moves],
            "summary": {
                "count": len(self.moves),
                "done": len(done),
                "failed": sum(m.status == "failed" for m in self.moves),
                "objects_copied": sum(m.objects_copied for m in self.moves),
                "bytes_copied": sum(m.bytes_copied for m in self.moves),
            },
        }


@dataclass
class _Point:
    """A point being copied: its move, lock, and the objects it needs at the site."""

    move: CopyMove
    until: datetime | None
    lock_days: int
    manifest_key: str = ""
    manifest: bytes = b""
    data: list[str] = field(default_factory=list)  # packs and loose chunks
    indexes: list[str] = field(default_factory=list)
    images: list[str] = field(default_factory=list)  # its base image record, copied like the rest


class _Stopwatch:
    """Seconds per step of one site's copy, into ``laps`` (the report's timings: where time goes)."""

    def __init__(self, laps: dict[str, float]) -> None:
        self.laps = laps
        self._mark = time.monotonic()

    def __call__(self, step: str) -> None:
        now = time.monotonic()
        self.laps[step] = round(now - self._mark, 3)
        self._mark = now


class _Destination:
    """What a site's store holds, from one listing per prefix, kept current as objects land."""

    def __init__(self, objects: ObjectStore) -> None:
        self.objects = objects
        self.keys: set[str] = set()
        for prefix in ("packs/", "index/", "chunks/", f"manifests/{IMAGES}/", *STORE_PREFIXES):
            self.keys.update(objects.list(prefix))

    def has(self, key: str) -> bool:
        return key in self.keys


class CopyJob:
    """Copies due points from the cold tier to other sites, under the work lease."""

    def __init__(
        self,
        services: Services,
        lease: Lease | None,
        *,
        limit: RateLimit | None = None,
        on_event: Event | None = None,
    ) -> None:
        self.services = services
        self.catalog = services.catalog
        self.lease = lease
        self.limit = limit or RateLimit(None)
        self.on_event = on_event or _quiet

    def run(self, *, site: str | None = None, dry_run: bool = False, now: datetime | None = None) -> CopyReport:
        """Copy every due point (to ``site`` only, when given); ``dry_run`` says which, touching nothing."""
        now = now or clock.now()
        report = CopyReport(dry_run)
        config = self.services.config
        if site is not None:
            site_section(config, site)  # an unknown name is a clear error before anything else
        if not config.sites:
            report.notes.append("no sites configured ([sites.NAME] in the config): nothing to copy")
            return report
        candidates = plan_copies(self.catalog, self.services.policies, config.sites, now, site=site)
        if candidates and not self.services.has_cold:
            report.notes.append("sites copy the cold tier's packs: configure [cold] and tier points first")
            return report
        report.moves = [self._move(c, now) for c in candidates]
        if dry_run or not candidates:
            return report
        # one owner for the run's row and its intents: once it lapses, cleanup ends what a killed run left
        with Owner(self.catalog) as owner:
            token = self.lease.token if self.lease else None
            report.job_id = self.catalog.start_job("copy", token=token, owner=owner.name)
            with self.catalog.ends_job_if_raised(report.job_id, report.document):
                self._copy_owned(Intents(self.catalog, owner.name), candidates, report)
            status = {EXIT_OK: "ok", EXIT_PARTIAL: "partial"}.get(report.exit_code, "failed")
            errors = "; ".join(f"{m.point_id}@{m.site}: {m.error}" for m in report.moves if m.error)
            self.catalog.finish_job(report.job_id, status, error=errors or None, detail=report.document())
        return report

    def _copy_owned(self, intents: Intents, candidates: list[CopyCandidate], report: CopyReport) -> None:
        """Each site's copies, its multipart uploads recorded before and resolved when all went cleanly."""
        for name in sorted({c.site for c in candidates}):
            items = [(c, m) for c, m in zip(candidates, report.moves, strict=True) if c.site == name]
            uploads = self._uploads_intent(intents, name, report.job_id)
            self._copy_site(name, items, report)
            if uploads is not None and not any(m.error for _, m in items):
                intents.resolve(uploads, "done")

    def _uploads_intent(self, intents: Intents, name: str, job_id: int | None) -> int | None:
        """A streamed pack past the site store's multipart threshold is a multipart upload, which a
        killed run leaves open at the site (billed storage): say where before copying, for cleanup.
        Resolved only when every copy to the site finished cleanly; None when the site is unreachable
        (its copies then fail before any upload)."""
        try:
            url = self.services.site_objects(name).url
        except DrsvcError:
            return None
        return intents.record("multipart-uploads", url, job=job_id, site=name)

    # ------------------------------------------------------------------ planning helpers

    def _move(self, c: CopyCandidate, now: datetime) -> CopyMove:
        move = CopyMove(c.point["id"], c.point["desktop_id"], c.policy.name, c.site, c.point["taken_at"])
        move.reasons = c.reasons
        if c.problem:
            move.status, move.error = "failed", c.problem
            return move
        days = self._lock_days(c)
        if days:
            move.retain_until = clock.to_iso(now + timedelta(days=days))
        return move

    def _lock_days(self, c: CopyCandidate) -> int:
        section = self.services.config.sites.get(c.site)
        days = (c.copy.object_lock_days if c.copy else None) or (section.object_lock_days if section else None)
        return int(days or 0)

    def _check_lease(self) -> None:
        if self.lease is not None:
            self.lease.check()

    # ------------------------------------------------------------------ one site

    def _copy_site(self, name: str, items: list[tuple[CopyCandidate, CopyMove]], report: CopyReport) -> None:
        started = time.monotonic()
        todo = [(c, m) for c, m in items if m.status == "planned"]
        if not todo:
            return
        section = site_section(self.services.config, name)
        step = _Stopwatch(report.timings.setdefault(name, {}))
        try:
            if any(self._lock_days(c) for c, _ in todo) and not section.object_lock:
                raise InvalidInput(
                    f"site {name}: a policy asks for object_lock_days but [sites.{name}] object_lock is false"
                )
            cold = self.services.cold
            objects = self.services.site_objects(name)
            transfer = Transfer(cold.store, objects, limit=self.limit)
            report.modes[name] = transfer.mode
            self._ensure_store(name, cold, objects, transfer)
            dest = _Destination(objects)
            self._sync_store_objects(cold, dest, transfer)
            step("open_and_list")
        except ConfigError:
            raise  # the site's store is not where its copies went (drsvc.store_identity): nothing to try
        except DrsvcError as e:
            for _, move in todo:
                self._fail(move, str(e), started)
            return
        points = self._prepared(cold, dest, todo, started)
        step("manifests")
        failed = self._copy_objects(transfer, dest, points, section.storage_class, "data")
        step("packs")
        failed.update(self._copy_objects(transfer, dest, points, META_CLASS, "indexes", skip=failed))
        failed.update(self._copy_objects(transfer, dest, points, META_CLASS, "images"))
        step("indexes")
        ready: list[_Point] = []
        for point in points:
            lacking = [k for k in point.data + point.indexes + point.images if not dest.has(k)]
            if lacking:
                why = failed.get(lacking[0]) or f"{len(lacking)} object(s) did not reach the site"
                self._fail(point.move, f"{lacking[0]}: {why}", started)
            else:
                ready.append(point)

        def finish(point: _Point) -> str | None:
            try:
                self._finish_point(name, transfer, dest, point)
            except DrsvcError as e:
                return str(e)
            return None

        for point, error in zip(
            ready, ordered_map(finish, ready, workers=SMALL_WORKERS, window=SMALL_WORKERS), strict=True
        ):
            if error is not None:
                self._fail(point.move, error, started)
                continue
            point.move.status = "done"
            point.move.seconds = round(time.monotonic() - started, 3)
            self.catalog.set_site(
                point.move.point_id,
                name,
                objects.url,
                copied_bytes=point.move.bytes_copied,
                retain_until=point.move.retain_until,
            )
            self.on_event("copied", move=point.move)
        step("points")

    def _fail(self, move: CopyMove, error: str, started: float) -> None:
        move.status, move.error = "failed", error
        move.seconds = round(time.monotonic() - started, 3)
        self.on_event("copied", move=move)

    def _ensure_store(self, name: str, cold: ChunkStore, objects: ObjectStore, transfer: Transfer) -> None:
        """The site's store config first (copied verbatim); an existing one must be for this key."""
        if objects.exists(CONFIG_KEY):
            ChunkStore.open(objects, self.services.keys)  # wrong key, wrong format: a clear error
            return
        for key in STORE_OBJECTS:
            try:
                transfer.copy(key, storage_class=META_CLASS)
            except NotFound:
                continue
        self.on_event("site_created", site=name, url=objects.url)

    def _sync_store_objects(self, cold: ChunkStore, dest: _Destination, transfer: Transfer) -> None:
        """The wrapped data keys the site lacks, before any point that needs one (immutable, small)."""
        for prefix in STORE_PREFIXES:
            for key in cold.store.list(prefix):
                if not dest.has(key):
                    transfer.copy(key, storage_class=META_CLASS)
                    dest.keys.add(key)

    def _prepared(
        self, cold: ChunkStore, dest: _Destination, todo: list[tuple[CopyCandidate, CopyMove]], started: float
    ) -> list[_Point]:
        """Every point's manifest and image record read (in parallel): what each needs at the site."""
        cold.refresh_packs()  # one load of the pack indexes, before the threads ask where chunks are
        points = []
        for c, move in todo:
            until = clock.from_iso(move.retain_until) if move.retain_until else None
            points.append(_Point(move, until, self._lock_days(c)))

        def prepare(point: _Point) -> str | None:
            try:
                self._prepare(cold, point)
            except DrsvcError as e:
                return str(e)
            return None

        ready = []
        for point, error in zip(points, ordered_map(prepare, points, workers=WORKERS, window=WORKERS * 2), strict=True):
            if error is not None:
                self._fail(point.move, error, started)
                continue
            ready.append(point)
            missing = sum(not dest.has(k) for k in point.data + point.indexes + point.images)
            self.on_event("copying", move=point.move, missing=missing)
        return ready

    def _prepare(self, cold: ChunkStore, point: _Point) -> None:
        """Read and authenticate the point's manifest and image record; which objects it needs."""
        move = point.move
        manifest, point.manifest = cold.get_sealed_manifest(move.desktop, move.point_id)
        point.manifest_key = manifest_key(move.desktop, move.point_id)
        streams = list(manifest_streams(manifest))
        image_id = image_record_id(manifest)
        if image_id is not None:
            image, _ = cold.get_sealed_manifest(IMAGES, image_id)
            point.images = [manifest_key(IMAGES, image_id)]
            streams += list(manifest_streams(image))
        chunk_ids = dict.fromkeys(cid for ref in streams for cid, _ in ref.chunks)
        data: dict[str, None] = {}
        indexes: dict[str, None] = {}
        loose: set[str] | None = None
        for cid in chunk_ids:
            pid = cold.pack_of(cid)
            if pid is not None:
                data[pack_key(pid)] = indexes[index_key(pid)] = None
                continue
            if loose is None:  # stores tiered before packs: one listing, only when needed
                loose = set(cold.list_loose_chunk_ids())
            if cid not in loose:
                raise IntegrityError(f"chunk {cid} of point {move.point_id} is missing from the cold tier")
            data[chunk_key(cid)] = None
        point.data, point.indexes = list(data), list(indexes)
        move.objects = len(point.data) + len(point.indexes) + len(point.images) + 1

    def _copy_objects(
        self,
        transfer: Transfer,
        dest: _Destination,
        points: list[_Point],
        storage_class: str,
        kind: str,
        *,
        skip: dict[str, str] | None = None,
    ) -> dict[str, str]:
        """Copy the points' missing ``data``, ``indexes`` or ``images`` in parallel; key -> error of failures."""
        owner: dict[str, _Point] = {}  # counted to the first point needing it
        until: dict[str, datetime | None] = {}
        for point in points:
            for key in getattr(point, kind):
                if dest.has(key):
                    continue
                owner.setdefault(key, point)
                if point.until is not None:
                    current = until.get(key)
                    until[key] = point.until if current is None else max(current, point.until)
                else:
                    until.setdefault(key, None)
        if kind == "indexes" and skip:
            # an index is copied only after its pack: a pack that failed keeps its index back
            owner = {k: p for k, p in owner.items() if pack_key(k.rsplit("/", 1)[1]) not in skip}
        failures: dict[str, str] = {}

        def one(key: str) -> tuple[str, int, str | None]:
            try:
                return key, transfer.copy(key, storage_class=storage_class, retain_until=until[key]).size, None
            except DrsvcError as e:
                return key, 0, str(e)

        workers = WORKERS if kind == "data" else SMALL_WORKERS
        for n, (key, size, error) in enumerate(ordered_map(one, list(owner), workers=workers, window=workers * 2)):
            if n % 64 == 63:
                self._check_lease()
            if error is not None:
                failures[key] = error
                continue
            dest.keys.add(key)
            move = owner[key].move
            move.objects_copied += 1
            move.bytes_copied += size
            if until[key] is not None:
                self._record_lock(dest.objects.url, [key], until[key])
        return failures

    def _finish_point(self, name: str, transfer: Transfer, dest: _Destination, point: _Point) -> None:
        """Locks of what the point reuses (extended where they fall short), then its manifest (last)."""
        move = point.move
        if point.until is not None:
            self._extend_locks(dest.objects, point.data + point.indexes + point.images, point.until, point.lock_days)
        self._check_lease()  # the fence: a point is at the site only under a lease still ours
        transfer.limit.take(len(point.manifest))
        dest.objects.put(point.manifest_key, point.manifest, storage_class=META_CLASS, retain_until=point.until)
        if dest.objects.get(point.manifest_key) != point.manifest:
            raise IntegrityError(f"site {name}: manifest {point.manifest_key} reads back different")
        move.objects_copied += 1
        move.bytes_copied += len(point.manifest)

    # ------------------------------------------------------------------ object lock bookkeeping

    def _record_lock(self, url: str, keys: list[str], until: datetime | None) -> None:
        if until is None:
            return
        with self.catalog.transaction():
            self.catalog.db.conn.executemany(
                "INSERT OR REPLACE INTO cold_locks VALUES (?, ?, ?)", [(url, k, clock.to_iso(until)) for k in keys]
            )

    def _extend_locks(self, objects: ObjectStore, keys: list[str], until: datetime, days: int) -> int:
        """Extend the lock of objects a locked point reuses when it falls short (twice the period: once per period)."""
        url, need = objects.url, clock.to_iso(until)
        known: dict[str, str] = {}
        for start in range(0, len(keys), 500):
            part = keys[start : start + 500]
            marks = ",".join("?" * len(part))
            rows = self.catalog.query(
                f"SELECT key, retain_until FROM cold_locks WHERE store_url = ? AND key IN ({marks})", [url, *part]
            )
            known.update((r["key"], r["retain_until"]) for r in rows)
        short = [k for k in keys if known.get(k, "") < need]
        extend = getattr(objects, "extend_retention", None)
        if not short or extend is None:
            return 0
        extended_to = until + timedelta(days=days)
        extend(short, extended_to)
        with self.catalog.transaction():
            self.catalog.db.conn.executemany(
                "INSERT INTO cold_locks VALUES (?, ?, ?) ON CONFLICT (store_url, key) DO UPDATE SET "
                "retain_until = max(retain_until, excluded.retain_until)",
                [(url, k, clock.to_iso(extended_to)) for k in short],
            )
        return len(short)


def iter_site_points(services: Services, site: str) -> Iterator[dict[str, Any]]:
    """Points the catalog records at ``site``, newest first."""
    for point in services.catalog.points():
        if site in point["sites"]:
            yield point
