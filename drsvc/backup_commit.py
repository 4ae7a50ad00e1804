"""Backup, after the freeze: one desktop's volume, base image, manifest and catalog rows.

``drsvc.backup`` takes a batch's checkpoints and its pool snapshot (the capture); ``Committer``
then stores each desktop of the batch on its own worker thread: the volume as it was at the
snapshot (``drsvc.volume_capture``: only what changed since the parent point when that can be
told), the base image once per image id, the manifest last (under the lease's fence), and only
then the catalog rows that make the point ``complete``. A retryable error retries the desktop
alone; the others of the batch go on.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cached_property
from typing import Any, cast

from drsvc import clock, deadline, faults
from drsvc.catalog import Catalog
from drsvc.chunks import ChunkStore, StreamRef
from drsvc.errors import DrsvcError, NotFound
from drsvc.lease import Lease
from drsvc.log import event
from drsvc.point_manifest import IMAGES
from drsvc.policy import Policy
from drsvc.runtimes.base import ContainerRuntime, DesktopRef
from drsvc.services import Services
from drsvc.volume_capture import ParentFinder, VolumeCapture, versioned
from drsvc.volumes.base import VersionedVolume, VolumeObject

log = logging.getLogger("drsvc.backup")

MANIFEST_FORMAT = 1
DEFAULT_FULL_EVERY = 24  # a manual backup (no policy) reads everything every 24th point, as the policy default
DEFAULT_FREEZE_BUDGET = timedelta(seconds=5)  # manual backups without a policy
DEFAULT_CAPTURE_DEADLINE = timedelta(hours=2)  # manual backups without a policy, as the policy default

Event = Callable[..., None]


def _quiet(*_args: Any, **_kw: Any) -> None:
    return None


@dataclass
class Outcome:
    """What happened to one desktop in a run."""

    desktop: str
    point_id: str
    status: str = "pending"
    consistency: str = "paired"
    reason: str | None = None
    bytes: int = 0
    new_bytes: int = 0
    freeze_ms: float | None = None
    checkpoint_ms: float | None = None
    held: dict[str, Any] | None = None  # root filesystem files read inside the freeze (heldfiles)
    seconds: float = 0.0
    error: str | None = None
    rootfs: dict[str, Any] | None = None  # index of the archive's root filesystem diff (tarindex), manifest only

    def document(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "rootfs"}


class Phases:
    """Seconds a run spent per phase, for ``--json`` and the fleet benchmark (``bench/fleet.py``).

    ``record``, ``freeze`` (checkpoints, archives and the pool snapshot) and ``store`` are wall time
    per batch, summed over batches; ``listing`` (the part of the batch's pool listing a store still
    waited for: it starts once the snapshot exists), ``scan`` (volume metadata at the snapshot, the
    stats taken beside the listing included), ``volume`` (the whole volume capture, scan and listing
    wait included), ``image`` and ``commit`` (manifest and catalog) are summed over desktops, which
    run on several threads at once.
    """

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def timed(self, name: str) -> Iterator[None]:
        started = time.monotonic()
        try:
            yield
        finally:
            with self._lock:
                self.seconds[name] += time.monotonic() - started

    def document(self) -> dict[str, float]:
        return {name: round(s, 3) for name, s in sorted(self.seconds.items())}


@dataclass(frozen=True)
class StoreTask:
    """One desktop of a frozen batch, as its store thread gets it."""

    desktop: DesktopRef
    outcome: Outcome  # filled in by the store (status, bytes, error)
    archive: StreamRef | None  # the checkpoint archive in the hot store; None: no (usable) checkpoint
    snap: str  # the batch's pool snapshot
    taken_at: datetime
    policy: Policy | None  # None: a manual backup's defaults
    names: list[str] | None = None  # the volume's objects from the batch's listing; None: the capture lists
    # the batch's pool listing, still running when the store starts: its names for this volume
    # replace ``names``; the store waits for it after its own work that needs no names
    listing: Future[dict[str, list[str]]] | None = None
    stamped: Future[dict[str, VolumeObject]] | None = None  # ``Committer.stamp_ahead`` for this desktop


class EarlyParents(ParentFinder):
    """A ``ParentFinder`` whose lookups can start early: a batch's desktops are looked up on the run's
    side threads while their checkpoints run, and a store takes the result instead of reading the
    parent manifest itself after the pool listing. Desktops not started are looked up on demand."""

    def __init__(self, catalog: Catalog, hot: ChunkStore, *, skip: str) -> None:
        super().__init__(catalog, hot, skip=skip)
        self._started: dict[str, Future[tuple[str, dict[str, Any]] | None]] = {}
        self._lock = threading.Lock()

    def start(self, desktop: str, executor: Executor) -> None:
        """Look ``desktop`` up on ``executor`` (once per run)."""
        with self._lock:
            if desktop not in self._started:
                self._started[desktop] = executor.submit(super().find, desktop)

    def find(self, desktop: str) -> tuple[str, dict[str, Any]] | None:
        with self._lock:
            started = self._started.get(desktop)
        return super().find(desktop) if started is None else started.result()

    def forget(self, desktop: str) -> None:
        """Drop a desktop's kept lookup (its manifest) once its store no longer needs it."""
        with self._lock:
            self._started.pop(desktop, None)


def capture_deadline(policy: Policy | None, what: str) -> deadline.Deadline:
    """A deadline from now for one long step of one desktop's capture (``capture.deadline``): its
    checkpoint archive's stream, or its store (volume and base image). A desktop's processes shape
    what these read; past the deadline that desktop fails and its batch's other desktops go on."""
    seconds = (policy.capture.deadline if policy else DEFAULT_CAPTURE_DEADLINE).total_seconds()
    return deadline.Deadline.after(seconds, f"{what} (capture.deadline)")


def image_key(image_id: str) -> str:
    return image_id.removeprefix("sha256:")


class Committer:
    """Stores desktops of a run after their batch's freeze (shared by the run's worker threads)."""

    def __init__(self, services: Services, lease: Lease, phases: Phases, on_event: Event = _quiet) -> None:
        self.services = services
        self.catalog: Catalog = services.catalog
        self.lease = lease
        self.phases = phases
        self.on_event = on_event
        self.retries = services.config.scheduler.retries
        # Held by the run while a batch's checkpoints run: a store thread
        # calls the runtime (``save_image``) only outside every freeze. Uncontended unless
        # ``[scheduler] pipeline`` overlaps batches.
        self.runtime_gate = threading.Lock()

    @property
    def runtime(self) -> ContainerRuntime:
        """The run's container runtime (the job's too: ``BackupJob`` asks its committer)."""
        return self.services.runtime

    @property
    def hot(self) -> ChunkStore:
        """The run's hot chunk store (the job's too)."""
        return self.services.hot

    def store(self, task: StoreTask) -> None:
        """Store one desktop of a batch after its freeze; retryable errors retry this desktop alone."""
        outcome, policy = task.outcome, task.policy
        started = time.monotonic()
        limit = capture_deadline(policy, f"the capture of desktop {task.desktop.desktop_id}")  # retries included
        for attempt in range(self.retries + 1):
            try:
                self._once(task, limit)
                outcome.status = "complete"
                break
            except DrsvcError as e:
                outcome.error = str(e)
                if attempt == self.retries or not e.retryable:
                    outcome.status = "failed"
                    self.catalog.update_point(
                        outcome.point_id, status="failed", consistency=outcome.consistency, reason=str(e)
                    )
                    break
                time.sleep(min(2**attempt, 30))
            except Exception as e:
                # a bug the desktop's own data set off (everything read here is its tenant's to
                # shape): it fails this desktop, never the run and the other tenants' points
                outcome.error = f"internal error: {type(e).__name__}: {e} (a drsvc bug; the log has its traceback)"
                outcome.status = "failed"
                event(log, logging.ERROR, "backup.bug", f"{outcome.desktop}: {outcome.error}", exc_info=e)
                self.catalog.update_point(
                    outcome.point_id, status="failed", consistency=outcome.consistency, reason=outcome.error
                )
                break
        outcome.seconds = time.monotonic() - started
        event(
            log,
            logging.WARNING if outcome.status == "failed" else logging.INFO,  # a partial run still exits 6
            "backup.desktop",
            f"{outcome.desktop} {outcome.status} ({outcome.consistency}) in {outcome.seconds:.1f}s",
            desktop=outcome.desktop,
            point=outcome.point_id,
            policy=policy.name if policy else None,
            error=outcome.error if outcome.status == "failed" else None,
        )
        self.on_event("desktop", outcome=outcome)

    def _expected_bytes(self, desktop: str) -> int | None:
        """The volume size of the desktop's last complete point: the progress bar's estimate."""
        rows = self.catalog.query(
            "SELECT a.bytes FROM points p JOIN artifacts a ON a.point_id = p.id AND a.kind = 'volume' "
            "WHERE p.desktop_id = ? AND p.status = 'complete' ORDER BY p.taken_at DESC LIMIT 1",
            [desktop],
        )
        return rows[0]["bytes"] if rows else None

    def _once(self, task: StoreTask, limit: deadline.Deadline) -> None:
        d, outcome, archive, policy = task.desktop, task.outcome, task.archive, task.policy
        assert d.volume is not None
        hot = self.hot.for_tenant(d.tenant)  # the tenant's data key (the fleet key in the fleet scope)
        label, expected = f"backup {d.desktop_id}", self._expected_bytes(d.desktop_id)

        def progress(n: int) -> None:
            self.on_event("progress", task=label, advance=n, total=expected)

        # the deadline bounds what the desktop's content shapes, not the commit: a manifest is
        # written whole or not at all, never stopped between it and the rows that make it complete
        with deadline.within(limit):
            try:
                with self.phases.timed("volume"):
                    volume_section, volume_ref = self._capture_volume(d, hot, task, progress)
            finally:
                self.parents.forget(d.desktop_id)
            self.on_event("progress", task=label, done=True)
            with self.phases.timed("image"):
                image = self._ensure_image(d)
        manifest = {
            "format": MANIFEST_FORMAT,
            "point_id": outcome.point_id,
            "desktop": d.desktop_id,
            "taken_at": clock.to_iso(task.taken_at),
            "policy": policy.name if policy else None,
            "consistency": outcome.consistency if archive is not None else "crash",
            "reason": outcome.reason,
            "freeze_ms": outcome.freeze_ms,
            "freeze_budget_ms": (policy.capture.freeze_timeout if policy else DEFAULT_FREEZE_BUDGET).total_seconds()
            * 1000,
            "runtime": {
                "url": self.runtime.url,
                "container": d.container,
                "container_id": d.container_id,
                "image": d.image,
                "image_id": d.image_id,
                "labels": d.labels,
                "tenant": d.tenant,
                "network": d.network,
                "tcp_established": True,
            },
            "volume": {"url": d.volume, **volume_section},
            "checkpoint": {"stream": archive.to_dict(), "held_files": outcome.held, "rootfs": outcome.rootfs}
            if archive is not None
            else None,
            "image": image,
        }
        if archive is None:
            outcome.consistency = "crash"
            outcome.reason = outcome.reason or "no checkpoint"
        with self.phases.timed("commit"):
            self._commit(d, outcome, archive, hot, manifest, volume_ref)

    def _commit(
        self,
        d: DesktopRef,
        outcome: Outcome,
        archive: StreamRef | None,
        hot: ChunkStore,
        manifest: dict[str, Any],
        volume_ref: StreamRef,
    ) -> None:
        """The manifest last, under the lease's fence; then the rows that make the point ``complete``."""
        assert d.volume is not None
        faults.point("before-manifest")
        self.lease.check()  # the fence: never commit under a lease someone else now holds
        hot.put_manifest(d.desktop_id, outcome.point_id, manifest)
        faults.point("after-manifest")
        sizes = [volume_ref] + ([archive] if archive else [])
        outcome.bytes = sum(r.size for r in sizes)
        outcome.new_bytes = sum(r.stats.bytes_new_stored for r in sizes)
        with self.catalog.transaction():
            self.catalog.add_artifact(self._artifact(outcome.point_id, "volume", d.volume, volume_ref))
            if archive is not None:
                self.catalog.add_artifact(
                    self._artifact(outcome.point_id, "checkpoint", d.container, archive, held=outcome.held)
                )
            self.catalog.set_tier(outcome.point_id, "hot", self.hot.store.url, stored_bytes=outcome.new_bytes)
            self.catalog.update_point(
                outcome.point_id,
                status="complete",
                consistency=outcome.consistency,
                reason=outcome.reason,
                bytes=outcome.bytes,
                freeze_ms=outcome.freeze_ms,
                checkpoint_ms=outcome.checkpoint_ms,
                completed_at=clock.to_iso(clock.now()),
            )

    def _capture_volume(
        self, d: DesktopRef, hot: ChunkStore, task: StoreTask, progress: Callable[[int], None]
    ) -> tuple[dict[str, Any], StreamRef]:
        """The volume at the snapshot into ``hot``: only what changed since the parent point when
        that can be told, else everything (``drsvc.volume_capture``)."""
        assert d.volume is not None
        names = task.names
        if task.listing is not None:
            with self.phases.timed("listing"):  # the part of the batch's listing nothing else hid
                names = task.listing.result().get(d.volume)
        stamped = task.stamped.result() if task.stamped is not None else None
        full_every = task.policy.capture.full_every if task.policy else DEFAULT_FULL_EVERY
        capture = VolumeCapture(hot, self.parents, progress, timed=self.phases.timed)
        return capture.capture(
            self.services.volume(d.volume),
            d.desktop_id,
            task.snap,
            full_every=full_every,
            names=names,
            stamped=stamped,
        )

    def stamp_ahead(self, d: DesktopRef, snap: str) -> dict[str, VolumeObject]:
        """Stamps at ``snap`` of the objects the desktop's parent point lists, by name.

        Taken while the batch's pool listing runs (``BackupJob``): the listing scans the whole pool
        and the stats only need names, so an unchanged desktop's stats no longer wait for it; the
        capture then stats only names the listing adds. Stamps at a pool snapshot never change, so
        taking them early changes nothing else. ``{}`` when there is no parent to build on, the
        volume tells no versions, or the stats fail (the capture then stats everything itself).
        """
        if d.volume is None:
            return {}
        volume = self.services.volume(d.volume)
        found = self.parents.find(d.desktop_id) if versioned(volume) else None
        if found is None:
            return {}
        objects = (found[1].get("volume") or {}).get("objects")
        names = [o["name"] for o in objects or () if isinstance(o, dict) and isinstance(o.get("name"), str)]
        if not names:
            return {}
        try:
            with self.phases.timed("scan"):
                stamps = cast(VersionedVolume, volume).stamps_at(snap, names)
        except DrsvcError as e:
            event(log, logging.INFO, "backup.stamps", f"{d.desktop_id}: stats ahead of the listing failed: {e}")
            return {}
        return {o.name: o for o in stamps}

    @cached_property
    def parents(self) -> EarlyParents:
        """The run's parent point lookups (``BackupJob`` starts a batch's before its freeze)."""
        return EarlyParents(self.catalog, self.hot, skip=IMAGES)

    @staticmethod
    def _artifact(
        point_id: str, kind: str, name: str, ref: StreamRef, *, held: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        return {
            "point_id": point_id,
            "kind": kind,
            "name": name,
            "bytes": ref.size,
            "chunks": len(ref.chunks),
            "new_chunks": ref.stats.chunks_new,
            "new_bytes": ref.stats.bytes_new_stored,
            "digest": ref.hash,
            "held_files": json.dumps(held) if held else None,
        }

    def _ensure_image(self, d: DesktopRef) -> dict[str, Any] | None:
        """Store the desktop's base image once per image id, so a restore never depends on a registry."""
        if not d.image_id or not getattr(self.runtime, "stores_images", True):
            return None  # e.g. CRI-O: base images stay in their registry
        hot = self.hot.for_tenant(d.tenant)
        key = image_key(d.image_id)
        if hot.write_keys.key_id is not None:  # one record per image and tenant key: dedup stays in a tenant
            key = f"{key}-{hot.write_keys.key_id}"
        try:
            hot.get_manifest(IMAGES, key)
        except NotFound:
            with self.runtime_gate, self.runtime.save_image(d.image or d.image_id) as stream:
                ref = hot.write_stream(stream)
            hot.put_manifest(IMAGES, key, {"image": d.image, "image_id": d.image_id, "stream": ref.to_dict()})
        return {"image": d.image, "image_id": d.image_id, "manifest": f"{IMAGES}/{key}"}
