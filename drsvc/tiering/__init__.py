"""Tiering: copy due recovery points to the cold tier (S3), and prune the cold tier.

**Which points** (``plan_tiering``, pure over the catalog and policies): complete points with a
hot copy and no cold copy, taken at least the policy's ``tiering.after`` ago, and kept by the
policy's *cold* retention applied over the desktop's complete points (the same set hot prune
uses to hold hot copies "waiting to be tiered"), so nothing is uploaded that cold prune would
drop at once.

**How points move** (``TierJob``): the hot and cold stores share the chunk/manifest format and
the key (``ChunkStore.open`` checks the key fingerprint of both), and every sealed chunk blob is
bound to its own chunk key, so incompressible chunks are copied byte for byte, never re-encrypted;
runs of compressible ones are compressed again together as ~1 MiB frames (more zstd context than
one chunk, ``[cold] zstd_level``) -- or, with ``[cold] recompress = false``, copied as they are too
(no zstd in tiering, a cold store ~2.5 % larger). The cold store keeps them in **packs** (``drsvc.chunks``:
``packs/<2 hex>/<pack-id>`` + ``index/<pack-id>``, ~16 MiB, ``[cold] pack_mib``), because on S3
every request costs: one object per chunk capped tiering at ~210 PUT/s. One listing of the
cold store's pack indexes per run (indexes are loaded once per process, then only new ones) says
what is there already; the cold store is opened and listed on a thread while the first due points'
manifests are read from the hot store (both are round trips). The due points of a run are
batched by (storage class, locked or not): the chunks none of the batch's points finds in the
cold store are read from the hot store (pipelined), authenticated, framed or kept as they are,
appended to packs and uploaded ``upload_workers`` packs at a time (memory: a few packs), each pack then its index.
Then, per point in order: Object Lock bookkeeping, the base image record (``_images/<id>``) when
the cold store lacks it, and the point's manifest **last**: a point is cold only once its
manifest is there. A run killed anywhere re-uploads nothing already indexed (the next listing
shows it); a pack whose index never landed is invisible and collected by GC; half-copied points
have no manifest and are invisible. When a pack upload fails, the batch's points whose chunks all
arrived still complete; the others fail and the next run finishes them.

**Object Lock and dedup**: packs and their indexes get ``retain_until = now + object_lock_days``
(the largest of the batch's points: locked and unlocked points never share a pack). A chunk is
uploaded once and later points reuse it, so a later point's lock would outlive the pack holding
it. The ``cold_locks`` table remembers each cold object's retention (packs, indexes, loose chunks
of stores tiered before packs, image records); the packs and indexes a locked point reuses that
fall short are extended (``PutObjectRetention``) to twice the lock period, so each shared pack is
extended at most once per period, in bulk.

**Storage classes**: packs take the policy's class; indexes, manifests, image records and the
store config stay STANDARD. They are small (IA bills at least 128 KiB per object) and read by
verify, GC, tiering's dedup, catalog rebuild and restore planning, which must work without a
GLACIER restore request.

**Cold prune** (``ColdPruneJob``): the policy's cold retention over cold copies; a dropped copy
loses its cold manifest (packs follow through ``PruneJob.collect_garbage`` on the cold store,
with the same grace period, once none of their chunks is referenced and their lock has expired).
A copy whose Object Lock has not expired is skipped, not attempted: S3 would refuse (or, on a
versioned bucket, only hide it), and skipping keeps a compromised or mistaken policy from even
hiding it. It is pruned by the first run after its lock expires.

The pieces (import from ``drsvc.tiering``; the names below are re-exported here): ``plan``
(which points are due), ``report`` (``TierMove``, ``TierReport``), ``cold_prune``
(``ColdPruneJob``, ``prune_cold``), ``common`` (``manifest_key``, ``META_CLASS``); the tier job
itself (``TierJob``) lives here.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime, timedelta

from drsvc import clock, faults
from drsvc.chunks import ChunkStore, chunk_key, index_key, pack_key
from drsvc.crypto import Keys
from drsvc.errors import EXIT_OK, EXIT_PARTIAL, CorruptChunk, DrsvcError, IntegrityError
from drsvc.health import record_tier_lag
from drsvc.intents import Intents, Owner
from drsvc.lease import Lease
from drsvc.point_manifest import IMAGES, chunk_objects, image_record_id
from drsvc.prune import manifest_streams
from drsvc.services import Services
from drsvc.tiering.cold_prune import ColdPruneJob, ColdPruneReport, plan_cold, prune_cold
from drsvc.tiering.common import META_CLASS, Event, _quiet, manifest_key
from drsvc.tiering.plan import Candidate, plan_tiering
from drsvc.tiering.report import TierMove, TierReport, _Point, _Read

# Points whose hot manifests are read while the cold store opens (bounded: a manifest of a large
# desktop is a few MiB parsed, and a fleet's batch may hold every desktop).
READ_AHEAD = 4

__all__ = [
    "META_CLASS",
    "Candidate",
    "ColdPruneJob",
    "ColdPruneReport",
    "Event",
    "TierJob",
    "TierMove",
    "TierReport",
    "chunk_objects",
    "manifest_key",
    "plan_cold",
    "plan_tiering",
    "prune_cold",
]


class TierJob:
    """Copies due points from the hot to the cold chunk store, under the work lease."""

    def __init__(self, services: Services, lease: Lease | None, *, on_event: Event | None = None) -> None:
        self.services = services
        self.catalog = services.catalog
        self.lease = lease
        self.on_event = on_event or _quiet
        self._cold_ids: set[str] | None = None
        self._cold_images: set[str] | None = None
        self._read: dict[str, _Read | DrsvcError] = {}  # manifests read ahead, by point id

    def run(self, *, dry_run: bool = False, now: datetime | None = None) -> TierReport:
        """Tier every due point (``dry_run``: only say which; nothing is read from or written to a store)."""
        now = now or clock.now()
        report = TierReport(dry_run)
        if not self.services.has_cold:
            report.note = "no cold tier configured ([cold] store in the config): nothing to tier"
            return report
        candidates = plan_tiering(self.catalog, self.services.policies, now)
        report.moves = [self._move(c) for c in candidates]
        if dry_run:
            return report
        try:
            if candidates:
                self._tier_all(report, candidates, now)
        finally:
            # what `drsvc metrics` reports as tier lag until the next run, however this one ends (a
            # catalog that cannot take it now keeps the previous record; the run's own error says why)
            with contextlib.suppress(sqlite3.Error):
                record_tier_lag(self.catalog, report.lag())
        return report

    def _tier_all(self, report: TierReport, candidates: list[Candidate], now: datetime) -> None:
        # Open (or create) the cold store first: a wrong key or an unreachable bucket stops the
        # whole run here, instead of failing every point one by one. Opening it (boto3, the bucket,
        # its config) and learning what it holds (listings, pack indexes) are S3 round trips: they
        # run on a thread while this one reads the first points' manifests from the hot store.
        self.services.key_provider  # noqa: B018 (shared by both stores: made once, here, not by two threads)
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="drsvc-cold-open") as pool:
            opened: Future[ChunkStore] = pool.submit(self._open_cold)
            try:
                for c in candidates[:READ_AHEAD]:
                    self._read[c.point["id"]] = self._read_manifest(c.point["desktop_id"], c.point["id"])
            finally:
                cold = opened.result()
        cold.check_takes_chunks_of(self.services.hot)  # a hot store made with larger chunks than the cold's
        self._recover_interrupted()
        # one owner for the run's row and its intents: once it lapses, cleanup ends what a killed run left
        with Owner(self.catalog) as owner:
            token = self.lease.token if self.lease else None
            report.job_id = self.catalog.start_job("tier", token=token, owner=owner.name)
            with self.catalog.ends_job_if_raised(report.job_id, report.document):
                self._tier_owned(Intents(self.catalog, owner.name), report, candidates, cold, now)
            status = {EXIT_OK: "ok", EXIT_PARTIAL: "partial"}.get(report.exit_code, "failed")
            errors = "; ".join(f"{m.point_id}: {m.error}" for m in report.moves if m.error)
            self.catalog.finish_job(report.job_id, status, error=errors or None, detail=report.document())

    def _tier_owned(
        self, intents: Intents, report: TierReport, candidates: list[Candidate], cold: ChunkStore, now: datetime
    ) -> None:
        """Multipart uploads a killed run leaves open cost storage until aborted: say where they
        may be before uploading. Resolved only when every upload finished cleanly."""
        assert report.job_id is not None  # started by ``_tier_all``
        uploads = intents.record("multipart-uploads", cold.store.url, job=report.job_id)
        for batch in self._batches(list(zip(candidates, report.moves, strict=True))):
            self._check_lease()
            self._tier_batch(batch, report.job_id, now)
        if not any(m.error for m in report.moves):
            intents.resolve(uploads, "done")

    # ------------------------------------------------------------------ helpers

    @staticmethod
    def _move(c: Candidate) -> TierMove:
        assert c.policy.tiering is not None
        return TierMove(
            c.point["id"],
            c.point["desktop_id"],
            c.policy.name,
            c.point["taken_at"],
            storage_class=c.policy.tiering.storage_class,
            reasons=c.reasons,
        )

    def _check_lease(self) -> None:
        if self.lease is not None:
            self.lease.check()

    def _recover_interrupted(self) -> None:
        """Moves and tier jobs still 'running' belong to a process that died (we hold the lease)."""
        now = clock.to_iso(clock.now())
        with self.catalog.transaction():
            self.catalog.execute(
                "UPDATE tier_moves SET status = 'failed', finished_at = ? WHERE status = 'running'", [now]
            )
            self.catalog.execute(
                "UPDATE jobs SET status = 'interrupted', finished_at = ?, error = ? "
                "WHERE kind = 'tier' AND status = 'running'",
                [now, "interrupted: the process ended before the job finished"],
            )

    def _open_cold(self) -> ChunkStore:
        cold = self.services.cold
        self._cold_state(cold)
        return cold

    def _cold_state(self, cold: ChunkStore) -> tuple[set[str], set[str]]:
        if self._cold_ids is None or self._cold_images is None:
            # One listing of the pack indexes (loaded incrementally) per run and after a failure:
            # never one request per chunk. The loose chunks, the packs and the image records are
            # independent listings (each an S3 round trip or more): made at once, not one after
            # another. What is known is the union of all three, as with ``list_chunk_ids``.
            with ThreadPoolExecutor(max_workers=2, thread_name_prefix="drsvc-cold-list") as pool:
                loose = pool.submit(lambda: set(cold.list_loose_chunk_ids()))
                images = pool.submit(lambda: {pid for _, pid in cold.list_manifests(IMAGES)})
                packs = cold.refresh_packs()
                ids = loose.result()
                for index in packs.values():
                    ids.update(index.chunk_ids)
                self._cold_images = images.result()
            self._cold_ids = ids
        return self._cold_ids, self._cold_images

    @staticmethod
    def _batches(items: list[tuple[Candidate, TierMove]]) -> list[list[tuple[Candidate, TierMove]]]:
        """The run's points grouped by (storage class, locked or not), oldest first: one pack stream each.

        Points of one batch share packs, so a pack has one storage class; locked and unlocked
        data never share a pack, so an unlocked policy's data is never made undeletable.
        """
        groups: dict[tuple[str, bool], list[tuple[Candidate, TierMove]]] = {}
        for c, move in items:
            assert c.policy.tiering is not None
            key = (c.policy.tiering.storage_class, bool(c.policy.tiering.object_lock_days))
            groups.setdefault(key, []).append((c, move))
        return list(groups.values())

    def _tier_batch(self, batch: list[tuple[Candidate, TierMove]], job_id: int, now: datetime) -> None:
        """Copy the batch's missing chunks as packs, then each point's image record and manifest."""
        started = time.monotonic()
        cold = self.services.cold
        points: list[_Point] = []
        for c, move in batch:
            tiering = c.policy.tiering
            assert tiering is not None
            until = now + timedelta(days=tiering.object_lock_days) if tiering.object_lock_days else None
            move.retain_until = clock.to_iso(until) if until else None
            cursor = self.catalog.execute(
                "INSERT INTO tier_moves (point_id, from_tier, to_tier, job_id, started_at, status) "
                "VALUES (?, 'hot', 'cold', ?, ?, 'running')",
                [move.point_id, job_id, clock.to_iso(clock.now())],
            )
            point = _Point(c, move, int(cursor.lastrowid or 0), until, tiering.object_lock_days or 0)
            try:
                read = self._read.pop(move.point_id, None) or self._read_manifest(move.desktop, move.point_id)
                if isinstance(read, DrsvcError):
                    raise read
                self._prepare(point, read)
            except DrsvcError as e:
                self._fail(point, str(e), started)
                continue
            except BaseException:
                self._finish_move(point.move_id, move, "failed")
                raise
            points.append(point)
        cold_ids, _ = self._cold_state(cold)
        storage_class = batch[0][0].policy.tiering.storage_class if batch[0][0].policy.tiering else None
        error: str | None = None
        while points:
            error, corrupt, cold_ids = self._copy_chunks(points, cold, cold_ids, storage_class)
            if corrupt is None:
                break
            # A corrupt hot chunk fails the points that need it, not their batch-mates: copy the
            # others again (packs that landed before the bad chunk was met count as copied).
            for point in [p for p in points if corrupt in p.wanted]:
                self._fail(point, error or "corrupt hot chunk", started)
            points = [p for p in points if corrupt not in p.wanted]
            error = None
        for point in points:
            lacking = [cid for cid in point.wanted if cid not in cold_ids]
            if lacking:
                why = error or f"{len(lacking)} chunk(s) did not reach the cold store"
                self._fail(point, why, started)
                continue
            try:
                self._finish_point(point, cold, cold_ids)
            except DrsvcError as e:
                self._fail(point, str(e), started)
                self._cold_ids = self._cold_images = None
                continue
            except BaseException:
                self._finish_move(point.move_id, point.move, "failed")
                raise
            faults.point("tier-before-commit")
            point.move.status = "done"
            point.move.seconds = round(time.monotonic() - started, 3)
            with self.catalog.transaction():
                self.catalog.set_tier(
                    point.move.point_id,
                    "cold",
                    cold.store.url,
                    stored_bytes=point.move.bytes_uploaded,
                    retain_until=point.move.retain_until,
                )
                self._finish_move(point.move_id, point.move, "ok")
            self.on_event("moved", move=point.move)

    def _copy_chunks(
        self, points: list[_Point], cold: ChunkStore, cold_ids: set[str], storage_class: str | None
    ) -> tuple[str | None, str | None, set[str]]:
        """Pack the chunks the points need that the cold store lacks: (error, corrupt chunk id, cold ids)."""
        hot = self.services.hot
        owner: dict[str, _Point] = {}  # a missing chunk is counted to the first point needing it
        for point in points:
            point.move.chunks = len(point.wanted)
            point.move.chunks_uploaded = point.move.bytes_uploaded = 0
            missing = 0
            for cid in point.wanted:
                if cid not in cold_ids and cid not in owner:
                    owner[cid] = point
                    missing += 1
            self.on_event("copying", move=point.move, missing=missing)
        pack_until = max((p.until for p in points if p.until is not None), default=None)
        # Frames follow the volume's objects, so zstd sees a file whole, as a file-aware tool compresses it.
        object_of: dict[str, tuple[int, int]] = {}
        for n, point in enumerate(points):
            for cid, obj in point.objects.items():
                object_of.setdefault(cid, (n, obj))  # as in `owner`: the first point needing a chunk

        def blobs(ids: list[str]) -> Iterator[tuple[str, bytes]]:
            for n, (cid, blob) in enumerate(hot.sealed_chunks(ids)):
                if n % 1024 == 1023:
                    self._check_lease()
                owner[cid].move.chunks_uploaded += 1
                self.on_event("progress", task="tier to cold", advance=len(blob), item=1, items=len(owner))
                yield cid, blob

        # A pack holds one key's chunks (its frames and index are sealed with that key), so the
        # batch's chunks go out per data key; each tenant key's record goes first (wrapped, verbatim).
        by_key: dict[str | None, tuple[Keys, list[str]]] = {}
        for point in points:
            assert point.keys is not None
            by_key.setdefault(point.keys.key_id, (point.keys, []))
        for cid, point in owner.items():
            assert point.keys is not None
            by_key[point.keys.key_id][1].append(cid)
        error: str | None = None
        corrupt: str | None = None
        fresh: list[str] = []
        try:
            for key_id in by_key:
                if key_id is not None:
                    cold.keyring.add_sealed(*hot.keyring.sealed_record(key_id))
            written = []
            for keys, ids in by_key.values():
                if not ids:
                    continue  # nothing of this key is missing (an unchanged point): no pack writer at all
                # write_packs authenticates every blob before packing it: hot-store rot is never
                # carried into the tier meant to survive the hot store.
                written += cold.keyed(keys).write_packs(
                    blobs(ids), storage_class=storage_class, retain_until=pack_until, object_of=object_of
                )
            fresh = [pack_key(i.pack_id) for i in written] + [index_key(i.pack_id) for i in written]
            self.on_event("progress", task="tier to cold", done=True)
            faults.point("tier-after-packs")
            cold_ids.update(owner)
            for index in written:
                for cid, stored in index.stored_bytes().items():
                    owner[cid].move.bytes_uploaded += stored
        except DrsvcError as e:
            error = str(e)
            if isinstance(e, CorruptChunk):
                corrupt = e.chunk_id
                error = f"hot chunk {e.chunk_id} of point {owner[e.chunk_id].move.point_id} is corrupt: {e}"
            self._cold_ids = self._cold_images = None  # some packs may have landed: list again
            cold_ids, _ = self._cold_state(cold)
        except BaseException:
            for point in points:
                self._finish_move(point.move_id, point.move, "failed")
            raise
        if pack_until is not None and fresh:
            self._record_locks(cold, fresh, pack_until)
        return error, corrupt, cold_ids

    def _fail(self, point: _Point, error: str, started: float) -> None:
        point.move.status, point.move.error = "failed", error
        point.move.seconds = round(time.monotonic() - started, 3)
        self._finish_move(point.move_id, point.move, "failed")
        self.on_event("moved", move=point.move)

    def _finish_move(self, move_id: int, move: TierMove, status: str) -> None:
        self.catalog.execute(
            "UPDATE tier_moves SET status = ?, finished_at = ?, chunks_uploaded = ?, bytes_uploaded = ? WHERE id = ?",
            [status, clock.to_iso(clock.now()), move.chunks_uploaded, move.bytes_uploaded, move_id],
        )

    def _read_manifest(self, desktop: str, point_id: str) -> _Read | DrsvcError:
        """Read and authenticate a point's manifest from the hot store (an error is returned, for its point)."""
        hot = self.services.hot
        try:
            manifest, raw = hot.get_sealed_manifest(desktop, point_id)  # authenticated
            keys = hot.manifest_keys(raw)
            streams = list(manifest_streams(manifest))
            objects = chunk_objects(manifest)
        except DrsvcError as e:
            return e
        return _Read(manifest_key(desktop, point_id), raw, keys, streams, objects, image_record_id(manifest))

    def _prepare(self, point: _Point, read: _Read) -> None:
        """Take the point's manifest (and read its image record): what chunks it needs."""
        hot = self.services.hot
        _, cold_images = self._cold_state(self.services.cold)
        point.key, point.raw_manifest, point.keys, point.objects = read.key, read.raw, read.keys, read.objects
        streams = list(read.streams)
        image_id = read.image_id
        if image_id is not None:
            point.image_key = manifest_key(IMAGES, image_id)
            if image_id not in cold_images or point.until is not None:
                image, image_raw = hot.get_sealed_manifest(IMAGES, image_id)
                if hot.manifest_keys(image_raw).key_id != point.keys.key_id:
                    raise IntegrityError(f"{point.image_key}: sealed with another key than the point naming it")
                streams += list(manifest_streams(image))
                if image_id not in cold_images:
                    point.image_raw = image_raw
        point.wanted = list(dict.fromkeys(cid for ref in streams for cid, _ in ref.chunks))

    def _finish_point(self, point: _Point, cold: ChunkStore, cold_ids: set[str]) -> None:
        """Locks of what the point reuses, its image record if new, then its manifest (last)."""
        move = point.move
        _, cold_images = self._cold_state(cold)
        image_key, image_raw = point.image_key, point.image_raw
        if image_raw is not None and image_key is not None and image_key.rsplit("/", 1)[1] in cold_images:
            image_raw = None  # an earlier point of this run uploaded it
        if point.until is not None:
            objects: dict[str, None] = {}
            for cid in point.wanted:
                pid = cold.pack_of(cid)
                if pid is None:
                    objects[chunk_key(cid)] = None  # a loose chunk (stores tiered before packs)
                else:
                    objects[pack_key(pid)] = objects[index_key(pid)] = None
            if image_key is not None and image_raw is None:
                objects[image_key] = None
            fresh = [image_key] if image_raw is not None and image_key else []
            move.locks_extended = self._lock(cold, list(objects), fresh, point.until, point.lock_days)
        if image_raw is not None and image_key is not None:
            cold.store.put(image_key, image_raw, storage_class=META_CLASS, retain_until=point.until)
            move.bytes_uploaded += len(image_raw)
            cold_images.add(image_key.rsplit("/", 1)[1])
        self._check_lease()  # the fence: a point becomes cold only under a lease still ours
        cold.store.put(point.key, point.raw_manifest, storage_class=META_CLASS, retain_until=point.until)
        move.bytes_uploaded += len(point.raw_manifest)

    def _record_locks(self, cold: ChunkStore, keys: list[str], until: datetime) -> None:
        """A fresh upload's lock is exact: remember it so later points extend only what falls short."""
        url, need = cold.store.url, clock.to_iso(until)
        with self.catalog.transaction():
            self.catalog.db.conn.executemany(
                "INSERT OR REPLACE INTO cold_locks VALUES (?, ?, ?)", [(url, k, need) for k in keys]
            )

    def _lock(self, cold: ChunkStore, reused: list[str], fresh: list[str], until: datetime, days: int) -> int:
        """Record fresh objects' retention; extend reused objects locked for less than ``until``."""
        url = cold.store.url
        known: dict[str, str] = {}
        for start in range(0, len(reused), 500):
            part = reused[start : start + 500]
            marks = ",".join("?" * len(part))
            rows = self.catalog.query(
                f"SELECT key, retain_until FROM cold_locks WHERE store_url = ? AND key IN ({marks})", [url, *part]
            )
            known.update((r["key"], r["retain_until"]) for r in rows)
        need = clock.to_iso(until)
        short = [k for k in reused if known.get(k, "") < need]
        extend = getattr(cold.store, "extend_retention", None)
        extended_to = until + timedelta(days=days)  # twice the period: once per period per object
        if short and extend is not None:
            extend(short, extended_to)
        with self.catalog.transaction():
            # A fresh upload's lock is exact (REPLACE); an extension never lowers what is known.
            self.catalog.db.conn.executemany(
                "INSERT OR REPLACE INTO cold_locks VALUES (?, ?, ?)", [(url, k, need) for k in fresh]
            )
            if extend is not None:
                self.catalog.db.conn.executemany(
                    "INSERT INTO cold_locks VALUES (?, ?, ?) ON CONFLICT (store_url, key) DO UPDATE SET "
                    "retain_until = max(retain_until, excluded.retain_until)",
                    [(url, k, clock.to_iso(extended_to)) for k in short],
                )
        return len(short) if extend is not None else 0
