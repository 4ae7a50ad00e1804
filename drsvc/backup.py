"""Backup: recovery points that pair a desktop's memory (CRIU checkpoint) with its data (pool snapshot).

For one run (a policy's due window, or ``drsvc backup``), desktops are grouped by pool and cut into
batches of at most ``capture.freeze_batch``. For each batch:

1. a ``pending`` point per desktop is recorded first, so an interrupted run leaves a trace that the
   next run marks ``failed`` (its orphan chunks are collected by the hot-store GC);
2. the batch's checkpoints start together. CRIU's post-dump hook (``drsvc.runtimes.freeze``) holds
   each desktop frozen after its memory was dumped; once every desktop of the batch is frozen, ONE
   pool snapshot is taken and all are released. Memory and disk therefore describe the same
   instant: nothing the desktop does after its dump reaches the snapshot. Podman cannot checkpoint a
   paused container, which is why the freeze comes from CRIU rather than from ``pause``. While a
   desktop stands frozen, the files it holds open in its root filesystem are copied into its
   archive (``drsvc.runtimes.heldfiles``), or a file written right after the dump could make the
   checkpoint unrestorable;
3. each archive streams into the hot chunk store (never whole in memory), then the desktop's
   namespace as it was at the snapshot (objects concatenated in name order into one stream, so
   thousands of small objects become a few chunks, not one write each), then its base image once
   per image id. The pool listing and the stats of the objects each parent point names start as
   soon as the snapshot exists, on side threads, beside the archives (``Committer.stamp_ahead``);
4. the manifest is written last; only then is the point ``complete``.

The batch size bounds each desktop's freeze window: a desktop frozen first waits for the slowest
dump of its batch. Larger batches mean fewer pool snapshots, smaller ones shorter freezes
(docs/architecture.md, "Freeze windows"). A desktop whose checkpoint fails still gets a point,
``crash``-consistent (volume only), with the reason recorded.
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import contextlib
import logging
import secrets
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, BinaryIO

from drsvc import ceph, checkpoint_space, clock, deadline, faults
from drsvc.backup_commit import (  # the names below were defined here first: their import path stays
    DEFAULT_FREEZE_BUDGET,
    DEFAULT_FULL_EVERY,
    IMAGES,
    MANIFEST_FORMAT,
    Committer,
    Event,
    Outcome,
    Phases,
    StoreTask,
    _quiet,
    capture_deadline,
    image_key,
)
from drsvc.backup_threads import STORE_NICE, SnapshotReads, store_pool  # noqa: F401 (STORE_NICE: its import path stays)
from drsvc.catalog import Catalog
from drsvc.checkpoint_effects import RecordedCheckpoints
from drsvc.chunks import StreamRef
from drsvc.desktop_guard import record_refused, restores_in_place
from drsvc.errors import EXIT_FAILED, EXIT_OK, EXIT_PARTIAL, BackendError, DrsvcError, NotFound
from drsvc.intents import Owner
from drsvc.lease import Lease
from drsvc.log import event
from drsvc.point_manifest import chunk_objects, image_record_id
from drsvc.policy import Policy
from drsvc.runtimes.base import DesktopRef
from drsvc.runtimes.freeze import FreezeBudgetExceeded, checkpoint_batch, hook_installed
from drsvc.runtimes.tarindex import ArchiveIndexer
from drsvc.services import Services

__all__ = [
    "DEFAULT_FREEZE_BUDGET",
    "DEFAULT_FULL_EVERY",
    "FREEZE_WAIT",
    "IMAGES",
    "MANIFEST_FORMAT",
    "BackupJob",
    "BackupReport",
    "Outcome",
    "Phases",
    "chunk_objects",
    "image_key",
    "image_record_id",
    "new_point_id",
    "recover_interrupted",
    "snapshot_name",
]

log = logging.getLogger(__name__)

FREEZE_WAIT = 20.0  # seconds to wait for a batch's first desktop to freeze (its dump may take a while)


@dataclass
class BackupReport:
    job_id: int
    policy: str | None
    outcomes: list[Outcome] = field(default_factory=list)
    pool_snapshots: list[str] = field(default_factory=list)
    phases: Phases = field(default_factory=Phases)

    @property
    def exit_code(self) -> int:
        done = sum(o.status == "complete" for o in self.outcomes)
        if done == len(self.outcomes):
            return EXIT_OK
        return EXIT_PARTIAL if done else EXIT_FAILED

    def document(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "policy": self.policy,
            "pool_snapshots": self.pool_snapshots,
            "results": [o.document() for o in self.outcomes],
            "phases": self.phases.document(),
            "summary": {
                "count": len(self.outcomes),
                "complete": sum(o.status == "complete" for o in self.outcomes),
                "paired": sum(o.status == "complete" and o.consistency == "paired" for o in self.outcomes),
                "failed": sum(o.status == "failed" for o in self.outcomes),
                "bytes": sum(o.bytes for o in self.outcomes),
                "new_bytes": sum(o.new_bytes for o in self.outcomes),
            },
        }


def new_point_id(desktop: str, when: datetime) -> str:
    """Sortable, unique, readable: ``20261127T173012Z-desk-001-3fa9c1``."""
    return f"{clock.compact(when)}-{desktop}-{secrets.token_hex(3)}"


def snapshot_name(policy: str | None, when: datetime, batch: int) -> str:
    """Pool snapshot names an operator recognises in ``rados lssnap``.

    Unique also when two runs (or two drsvc deployments sharing a pool) start in the same second:
    pool snapshot names are pool-wide.
    """
    return f"drsvc-{policy or 'manual'}-{clock.compact(when)}-{batch}-{secrets.token_hex(2)}"


# ---------------------------------------------------------------------- interrupted runs


def recover_interrupted(catalog: Catalog) -> list[str]:
    """Mark points of jobs that died (no longer running, still ``pending``) as failed.

    Called under the work lease, so no live job can own a ``running`` backup row: any such row
    belongs to a process that was killed. Their chunks are orphans, collected by hot-store GC.
    """
    dead_jobs = catalog.query("SELECT id FROM jobs WHERE kind = 'backup' AND status = 'running'")
    points = catalog.query("SELECT id FROM points WHERE status = 'pending'")
    now = clock.to_iso(clock.now())
    with catalog.transaction():
        for job in dead_jobs:
            catalog.execute(
                "UPDATE jobs SET status = 'interrupted', finished_at = ?, error = ? WHERE id = ?",
                [now, "interrupted: the process ended before the job finished", job["id"]],
            )
        for point in points:
            catalog.update_point(point["id"], status="failed", reason="interrupted: its backup job did not finish")
    return [p["id"] for p in points]


# ---------------------------------------------------------------------- the job


class BackupJob:
    """Takes recovery points for a set of desktops (one run), under the work lease."""

    def __init__(self, services: Services, lease: Lease, *, on_event: Event = _quiet) -> None:
        self.services = services
        self.catalog = services.catalog
        self.lease = lease
        self.on_event = on_event
        self.workers = services.config.scheduler.workers
        # batches whose stores may still run when the next batch freezes (scheduler.pipeline)
        self.pipeline_depth = 1 if services.config.scheduler.pipeline else 0
        self.phases = Phases()
        self.committer = Committer(services, lease, self.phases, on_event)
        self._side: cf.Executor | None = None  # the run's listing threads (``run``)
        # what each checkpoint leaves (Docker's checkpoint directory), recorded before it is made
        self._checkpoints = RecordedCheckpoints(services.catalog)

    def run(self, desktops: Sequence[DesktopRef], policy: Policy | None) -> BackupReport:
        """Back up ``desktops`` now; ``policy`` decides capture options (None: manual defaults)."""
        # the job row's owner, renewed while the run lasts: ``catalog check`` tells a killed run by it
        with Owner(self.catalog) as owner:
            return self._run(desktops, policy, owner.name)

    def _run(self, desktops: Sequence[DesktopRef], policy: Policy | None, owner: str) -> BackupReport:
        # Open the hot store before freezing anything: a wrong key or a missing pool must fail
        # the run up front, not after desktops were frozen and a snapshot taken.
        _ = self.committer.hot
        if not self.lease.joined:
            # a joined lease (a node agent) must not fail its sibling agents' pending points
            recover_interrupted(self.catalog)
        policy_name = policy.name if policy else None
        job_id = self.catalog.start_job(
            "backup",
            policy=policy_name,
            token=self.lease.token,
            detail={"desktops": [d.desktop_id for d in desktops]},
            owner=owner,
        )
        report = BackupReport(job_id, policy_name, phases=self.phases)
        try:
            # One pool of store workers for the whole run. With scheduler.pipeline, batch k+1
            # freezes while batch k's desktops are stored (at most one batch's stores in flight
            # when a freeze starts); else each batch is stored before the next freezes: on a busy
            # host stores slow the CRIU dumps, and desktops stand frozen longer or miss their
            # batch's snapshot (docs/benchmarks.md, "Fleet throughput"). Leaving the pool waits for
            # every store: none writes after the job ended.
            # ``side``: the pool listings, the hot store's chunk listing, the parent manifests and
            # the stats ahead of each listing, started early so they run while checkpoints are taken
            # and archives stream in, not after them
            with (
                self._checkpoints,
                store_pool(self.workers, pipelined=self.pipeline_depth > 0) as pool,
                cf.ThreadPoolExecutor(2 + self.workers, thread_name_prefix="listing") as side,
            ):
                self._side = side
                side.submit(self._know_chunks)
                stores: collections.deque[list[cf.Future[None]]] = collections.deque()
                for pool_url, batch_no, batch in self._batches(desktops, policy):
                    while len(stores) > self.pipeline_depth:
                        self._wait_stores(stores.popleft(), report.phases)
                    outcomes, futures = self._run_batch(batch, pool_url, batch_no, policy, job_id, report, pool)
                    report.outcomes += outcomes
                    stores.append(futures)
                while stores:
                    self._wait_stores(stores.popleft(), report.phases)
        except BaseException as e:
            status = "interrupted" if isinstance(e, KeyboardInterrupt) else "failed"
            error = str(e) or type(e).__name__
            self.catalog.execute(
                "UPDATE points SET status = 'failed', reason = ? WHERE job_id = ? AND status = 'pending'",
                [f"backup job failed: {error}", job_id],
            )
            self.catalog.finish_job(job_id, status, error=error, detail=report.document())
            raise
        status = {EXIT_OK: "ok", EXIT_PARTIAL: "partial"}.get(report.exit_code, "failed")
        errors = "; ".join(f"{o.desktop}: {o.error}" for o in report.outcomes if o.error)
        self.catalog.finish_job(job_id, status, error=errors or None, detail=report.document())
        return report

    def _batches(
        self, desktops: Sequence[DesktopRef], policy: Policy | None
    ) -> Iterator[tuple[str, int, list[DesktopRef]]]:
        size = policy.capture.freeze_batch if policy else 8
        by_pool: dict[str, list[DesktopRef]] = defaultdict(list)
        for desktop in desktops:
            if not desktop.volume:
                raise NotFound(f"desktop {desktop.desktop_id} has no drsvc.volume label: nothing to snapshot")
            by_pool[self.services.volume(desktop.volume).scope].append(desktop)
        number = 0
        for pool_url in sorted(by_pool):
            members = sorted(by_pool[pool_url], key=lambda d: d.desktop_id)
            for start in range(0, len(members), size):
                number += 1
                yield pool_url, number, members[start : start + size]

    # ------------------------------------------------------------------ one batch

    def _run_batch(
        self,
        batch: list[DesktopRef],
        pool_url: str,
        batch_no: int,
        policy: Policy | None,
        job_id: int,
        report: BackupReport,
        pool: cf.Executor,
    ) -> tuple[list[Outcome], list[cf.Future[None]]]:
        """Freeze and snapshot ``batch`` now; its desktops' stores are handed to ``pool`` (returned)."""
        taken_at = clock.now()
        budget = (policy.capture.freeze_timeout if policy else DEFAULT_FREEZE_BUDGET).total_seconds()
        outcomes = {d.desktop_id: Outcome(d.desktop_id, new_point_id(d.desktop_id, taken_at)) for d in batch}
        snap = snapshot_name(policy.name if policy else None, taken_at, batch_no)
        phases = report.phases
        with phases.timed("record"), self.catalog.transaction():
            # desktops a live in-place restore is writing are left out, checked in the transaction
            # that records the batch's points (drsvc.desktop_guard: the restore sees those points)
            refused = self._refuse_restoring(batch, outcomes, policy, job_id, taken_at)
            batch = [d for d in batch if d.desktop_id in outcomes]
            if not batch:
                return refused, []
            # The pool snapshot is recorded before it is made: if this process dies in between,
            # the row (referenced by no complete point) is what prune and cleanup remove.
            snapshot_row = self._record_snapshot(pool_url, snap, taken_at, job_id)
            for d in batch:
                self.catalog.add_point(
                    {
                        "id": outcomes[d.desktop_id].point_id,
                        "desktop_id": d.desktop_id,
                        "policy": policy.name if policy else None,
                        "taken_at": clock.to_iso(taken_at),
                        "status": "pending",
                        "consistency": "paired",
                        "job_id": job_id,
                        "image": d.image_id,
                        "pool_snapshot_id": snapshot_row,
                        "freeze_budget_ms": budget * 1000,
                    }
                )
        faults.point("after-pending")
        assert self._side is not None
        side = self._side

        def find_parents() -> None:
            # the parent manifests are read while the dumps run, not before the checkpoints start:
            # a big manifest's parse holds the GIL, which the checkpoint threads need to start
            for d in batch:
                self.committer.parents.start(d.desktop_id, side)

        want_memory = policy is None or (policy.capture.checkpoint and policy.capture.consistency == "paired")
        if want_memory and not hook_installed():
            for o in outcomes.values():
                o.consistency, o.reason = "crash", "CRIU freeze hook not installed (see docs/operations.md)"
            want_memory = False
        if policy is not None and not policy.capture.checkpoint:
            for o in outcomes.values():
                o.consistency, o.reason = "crash", "policy captures volumes only"
        elif policy is not None and policy.capture.consistency == "crash":
            for o in outcomes.values():
                o.consistency, o.reason = "crash", "policy asks for crash consistency"

        volumes = self.services.snapshots(pool_url)
        archives: dict[str, StreamRef] = {}
        reads = SnapshotReads(side, lambda: self._listing(volumes, batch), self.committer.stamp_ahead, batch, snap)

        try:
            with phases.timed("freeze"):
                if want_memory:
                    archives = self._paired_capture(
                        batch, outcomes, volumes, snap, budget, reads.start, find_parents, policy=policy
                    )
                else:
                    find_parents()
                    self.on_event("snapshot", pool=pool_url, name=snap)
                    volumes.create(snap)
                    faults.point("after-snapshot")
                    reads.start()
        except FreezeBudgetExceeded as e:
            # Thawed without a snapshot: no point of this batch pairs (or even has) a volume image.
            self._freeze_facts(batch, outcomes, e.results)
            self._fail_batch(outcomes, f"pool snapshot {snap} failed: {e}")
            self._drop_snapshot(volumes, snap, snapshot_row, e.pending)
            return [outcomes[d.desktop_id] for d in batch] + refused, []
        except (BackendError, NotFound) as e:
            # NotFound: the desktops' pool is not there (a label's typo, a pool deleted): their
            # failure, not the run's; the other batches go on
            self._fail_batch(outcomes, f"pool snapshot {snap} failed: {e}")
            self._drop_snapshot(volumes, snap, snapshot_row, None)
            return [outcomes[d.desktop_id] for d in batch] + refused, []
        report.pool_snapshots.append(snap)
        # the stores start now; each waits for the listing only after the stats it could take ahead
        listing = reads.listing()
        futures = [
            pool.submit(
                self.committer.store,
                StoreTask(
                    d,
                    outcomes[d.desktop_id],
                    archives.get(d.desktop_id),
                    snap,
                    taken_at,
                    policy,
                    listing=listing,
                    stamped=reads.stamped.get(d.desktop_id),
                ),
            )
            for d in batch
        ]
        return [outcomes[d.desktop_id] for d in batch] + refused, futures

    def _know_chunks(self) -> None:
        """Load the hot store's listing of stored chunks (dedup) while the first checkpoints run;
        the first archive written would wait for it otherwise. A failure is the writer's to report."""
        with contextlib.suppress(DrsvcError):
            self.committer.hot.writer.known()

    @staticmethod
    def _wait_stores(futures: list[cf.Future[None]], phases: Phases) -> None:
        """Wait for one batch's stores (phase ``store``: the part of storing the pipeline did not hide)."""
        with phases.timed("store"):
            for future in futures:
                future.result()

    def _listing(self, volumes: Any, batch: list[DesktopRef]) -> dict[str, list[str]]:
        """Object names of every volume of the batch from one listing of the pool, after its snapshot.

        A pool whose snapshots cannot list by volume (``names_by_volume``, RADOS pools can), or a
        listing that fails, gives ``{}``: each desktop then lists its own volume, as before.
        """
        names_by_volume = getattr(volumes, "names_by_volume", None)
        if names_by_volume is None:
            return {}
        try:
            return dict(names_by_volume(sorted({d.volume for d in batch if d.volume})))
        except DrsvcError as e:
            event(log, logging.WARNING, "backup.listing", f"one listing for the batch failed, each desktop lists: {e}")
            return {}

    def _paired_capture(
        self,
        batch: list[DesktopRef],
        outcomes: dict[str, Outcome],
        volumes: Any,
        snap: str,
        budget: float,
        after_snapshot: Callable[[], None],
        while_dumping: Callable[[], None],
        *,
        policy: Policy | None = None,
    ) -> dict[str, StreamRef]:
        """Checkpoint the batch, snapshot the pool while all are frozen, stream the archives.

        The freeze ``budget`` (seconds) bounds every desktop's freeze: at its end they are thawed
        whatever the snapshot is doing (``FreezeBudgetExceeded``); a desktop that stood still
        longer anyway (its own memory dump outlasted the budget) is crash-consistent.
        ``after_snapshot`` is called once the snapshot exists (it must return at once: the
        desktops still stand frozen), ``while_dumping`` once the first dump has begun (the same).
        Each archive's stream into the store is bounded by ``capture.deadline`` (of ``policy``): a
        desktop whose memory takes longer gets a crash-consistent point, and its batch goes on.
        """
        by_container = {d.container_id: d.desktop_id for d in batch}

        def snapshot(frozen: set[str]) -> None:
            self.on_event("snapshot", name=snap, frozen=sorted(by_container[c] for c in frozen))
            volumes.create(snap)
            faults.point("after-snapshot")
            after_snapshot()

        self.on_event("freeze", desktops=[d.desktop_id for d in batch], budget=budget)

        def store_archive(d: DesktopRef, stream: BinaryIO) -> tuple[StreamRef, dict[str, Any]]:
            # indexed on its way into the store: `points ls` and `mount` list (and read) single
            # root filesystem files later without fetching the memory pages around them
            indexer = ArchiveIndexer(stream)
            limit = capture_deadline(policy, f"the checkpoint archive of desktop {d.desktop_id}")
            with deadline.within(limit):
                ref = self.committer.hot.for_tenant(d.tenant).write_stream(indexer)
            return ref, indexer.finish().document()

        # a desktop whose memory image would not fit on the host's disk is not checkpointed (its
        # volumes are still in the snapshot): its memory must not fill the disk of every tenant
        dumped = self._refuse_no_space(batch, outcomes)
        # the gate keeps the store threads of the batch before (base images) off the runtime
        # while this batch's checkpoints run: Podman holds a checkpointed container's lock
        with self.committer.runtime_gate:
            if not dumped:
                while_dumping()
                snapshot(set())
                return {}
            results = checkpoint_batch(
                self.committer.runtime,
                dumped,
                store_archive,
                while_frozen=snapshot,
                freeze_timeout=FREEZE_WAIT,
                freeze_budget=budget,
                while_dumping=while_dumping,
                open_checkpoint=self._checkpoints.checkpoint,
            )
        self._freeze_facts(dumped, outcomes, results)
        archives: dict[str, StreamRef] = {}
        for d in dumped:
            r, o = results[d.container_id], outcomes[d.desktop_id]
            if r.error is not None or r.value is None:
                o.consistency, o.reason = "crash", f"checkpoint failed: {r.error}"
                continue
            if r.released_early:
                # the hook let it go before the snapshot was taken
                o.consistency, o.reason = "crash", "released by the freeze hook before the snapshot"
                continue
            if not r.frozen:
                # It froze after the snapshot (or never reported): its memory is from a later
                # instant than its disk. Keep the volume, drop the memory.
                o.consistency, o.reason = "crash", "did not freeze in time to be in its batch's pool snapshot"
                continue
            if r.redumped:
                o.consistency = "crash"
                o.reason = "the runtime dumped it again after its batch's pool snapshot (a retried checkpoint)"
                continue
            if r.overran:
                o.consistency = "crash"
                o.reason = f"stood frozen {o.freeze_ms:.0f} ms, over its freeze budget of {budget:g} s"
                continue
            o.held = r.held or None
            archives[d.desktop_id], o.rootfs = r.value
        return archives

    def _refuse_no_space(self, batch: list[DesktopRef], outcomes: dict[str, Outcome]) -> list[DesktopRef]:
        """The batch's desktops whose checkpoint images fit on the host's disks together
        (``drsvc.checkpoint_space.refusals``); the others are marked crash-consistent with the
        reason (memory, free space, path)."""
        section = self.services.config.runtime
        reserve = (section.checkpoint_reserve_mib if section else 1024) * checkpoint_space.MIB
        where = str(section.checkpoint_dir) if section and section.checkpoint_dir else None
        spaces = {d.desktop_id: checkpoint_space.measure(self.committer.runtime, d, where) for d in batch}
        refused = checkpoint_space.refusals(spaces, reserve)  # the batch's dumps share each disk
        for desktop_id, why in refused.items():
            event(log, logging.WARNING, "backup.checkpoint_space", f"desktop {desktop_id}: {why}")
            outcomes[desktop_id].consistency, outcomes[desktop_id].reason = "crash", why
        return [d for d in batch if d.desktop_id not in refused]

    @staticmethod
    def _freeze_facts(batch: list[DesktopRef], outcomes: dict[str, Outcome], results: dict[str, Any]) -> None:
        for d in batch:
            r = results.get(d.container_id)
            if r is None:
                continue
            o = outcomes[d.desktop_id]
            o.checkpoint_ms = r.seconds * 1000
            o.freeze_ms = r.freeze_window * 1000 if r.freeze_window is not None else None

    def _refuse_restoring(
        self, batch: list[DesktopRef], outcomes: dict[str, Outcome], policy: Policy | None, job_id: int, at: datetime
    ) -> list[Outcome]:
        """The batch's desktops a live in-place restore is writing: out of ``outcomes``, recorded failed."""
        busy = restores_in_place(self.catalog, [d.desktop_id for d in batch])
        refused = [outcomes.pop(desktop_id) for desktop_id in sorted(busy)]
        record_refused(self.catalog, refused, busy, policy.name if policy else None, job_id, at)
        for o in refused:
            self.on_event("desktop", outcome=o)
        return refused

    def _fail_batch(self, outcomes: dict[str, Outcome], reason: str) -> None:
        for o in outcomes.values():
            o.status, o.error = "failed", reason
            self.catalog.update_point(
                o.point_id,
                status="failed",
                consistency="crash",
                reason=reason,
                freeze_ms=o.freeze_ms,
                checkpoint_ms=o.checkpoint_ms,
            )
            self.on_event("desktop", outcome=o)

    def _drop_snapshot(self, volumes: Any, snap: str, row: int, pending: cf.Future[None] | None) -> None:
        """Remove a snapshot the batch could not use (it may exist, or appear once Ceph answers).

        Waits for a still running create (bounded by its own Ceph timeout) first. When Ceph does
        not answer, the recorded row stays for ``prune`` / ``cleanup``, which retry.
        """
        if pending is not None:
            with contextlib.suppress(Exception):
                pending.result(timeout=ceph.timeouts().op_seconds + 5)
            if not pending.done():
                return
        try:
            volumes.remove(snap)
        except DrsvcError as e:
            self.on_event("snapshot-left", name=snap, error=e)
            return
        self.catalog.execute("UPDATE pool_snapshots SET removed_at = ? WHERE id = ?", [clock.to_iso(clock.now()), row])

    def _record_snapshot(self, pool_url: str, name: str, taken_at: datetime, job_id: int) -> int:
        with self.catalog.transaction():
            cursor = self.catalog.execute(
                "INSERT INTO pool_snapshots (pool, name, taken_at, job_id) VALUES (?, ?, ?, ?)",
                [pool_url, name, clock.to_iso(taken_at), job_id],
            )
            return int(cursor.lastrowid or 0)
