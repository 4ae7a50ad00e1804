"""Cleanup: remove what interrupted jobs left behind, once their owners are gone.

Five kinds of leftovers, all found from the catalog:

1. points of backup jobs that died (still ``pending``): marked failed (``recover_interrupted``);
2. pool snapshots no pending or hot point refers to — among them those a killed backup recorded
   just before making them: removed (as prune removes them);
3. pending intents (``drsvc.intents``) whose owner's lease lapsed: a clone's container and
   namespace are removed (only if the container carries drsvc's clone label and no known desktop
   uses the namespace), open multipart uploads aborted, a killed restore's row marked failed; an
   in-place restore is not undone but marked ``interrupted`` and reported (event
   ``restore-interrupted``): the same ``drsvc restore`` command resumes it. What a runtime's
   restore left (a CRI-O checkpoint image or node archive, a base image it loaded) and the Docker
   checkpoint directory a killed backup left are removed by the runtime's ``forget`` (a loaded
   image only while no container runs from it);
4. drills, site recoveries and site drills still recorded ``running`` whose owner lease lapsed
   (killed): recorded ``interrupted`` (their sandbox clones are the restores' intents of 3; a
   site drill's are in its scratch catalog beside the catalog, undone there, then removed);
5. tier, copy, prune and verify jobs still recorded ``running`` whose owner lease lapsed (a row
   of an older drsvc, without an owner: whose process on this host is gone): recorded
   ``interrupted`` (what they left in stores is an intent of 3).

Runs under the work lease (``drsvc cleanup``, the scheduler's tick, ``prune``, ``backup``), so no live
backup owns a pending point. Each undo is idempotent: a second cleanup finds nothing to do.
"""

from __future__ import annotations

import contextlib
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from drsvc import clock
from drsvc.backup import recover_interrupted
from drsvc.catalog import Catalog
from drsvc.drill import interrupted_drills
from drsvc.errors import DrsvcError, NotFound
from drsvc.intents import (
    ARTIFACT_KINDS,
    MEMORY_KINDS,
    Intent,
    abandoned_runs,
    bound_owner_leases,
    end_runs,
    intents_of,
    interrupted_restores,
    leftovers,
    owner_alive,
    pending,
    resolve,
    unpack_names,
)
from drsvc.lease import Lease, holder_dead
from drsvc.prune import PruneJob
from drsvc.restore_effects import CONTAINER_PHASES
from drsvc.runtimes.base import LABEL_CLONE_OF, LABEL_RESTORE, forget
from drsvc.services import Services
from drsvc.targets import owned_clone

Event = Callable[..., None]


@dataclass
class CleanupReport:
    dry_run: bool
    failed_points: list[str] = field(default_factory=list)
    snapshots: list[str] = field(default_factory=list)
    undone: list[str] = field(default_factory=list)
    interrupted_restores: list[str] = field(default_factory=list)
    interrupted_drills: list[int] = field(default_factory=list)
    interrupted_recoveries: list[int] = field(default_factory=list)  # site recoveries, site drills, storms
    interrupted_jobs: list[int] = field(default_factory=list)  # tier, copy, prune, verify rows of a dead process
    problems: list[str] = field(default_factory=list)
    # what a killed run's intent names but the run did not make: left in place on purpose
    others: list[str] = field(default_factory=list)

    @property
    def nothing(self) -> bool:
        return not (
            self.failed_points
            or self.snapshots
            or self.undone
            or self.interrupted_drills
            or self.interrupted_recoveries
            or self.interrupted_jobs
        )

    def document(self) -> dict[str, Any]:
        return dict(self.__dict__)


def dead_backup_points(services: Services) -> list[str]:
    """Pending points of backup jobs still marked running (under the work lease: their process died)."""
    rows = services.catalog.query(
        "SELECT p.id FROM points p JOIN jobs j ON j.id = p.job_id "
        "WHERE p.status = 'pending' AND j.kind = 'backup' AND j.status = 'running' ORDER BY p.id"
    )
    return [r["id"] for r in rows]


def interrupted_jobs(catalog: Catalog, *, mark: bool = False) -> list[int]:
    """Tier, copy, prune and verify jobs still recorded running whose process is gone.

    A killed one skips its ``finish_job``; what it left in stores is undone through its intents,
    and this only ends its row: once its owner lease lapsed (``abandoned_runs``, as drills and site
    runs), or for a row of an older drsvc (no owner) by its pid (``ownerless_dead_jobs``). Backup
    rows are ended with their points (``recover_interrupted``). ``mark``: record them ``interrupted``.
    """
    return sorted(abandoned_runs(catalog, "jobs", mark=mark) + ownerless_dead_jobs(catalog, mark=mark))


def ownerless_dead_jobs(catalog: Catalog, *, mark: bool = False) -> list[int]:
    """Rows an older drsvc started (no owner) whose process is gone (this host, pid dead).

    A row of another host, or whose pid is alive (perhaps reused), is left: it may be running.
    """
    rows = catalog.query(
        "SELECT id, host, pid FROM jobs WHERE status = 'running' AND kind != 'backup' AND owner IS NULL ORDER BY id"
    )
    dead = [int(r["id"]) for r in rows if holder_dead(f"{r['host']}:{r['pid']}")]
    if mark:
        end_runs(catalog, "jobs", dead)
    return dead


def _job_gone(catalog: Catalog, row: dict[str, Any]) -> bool:
    """Whether a job row's process is gone: its owner lapsed, or (no owner) its pid here is dead."""
    if row["owner"] is not None:
        return not owner_alive(catalog, row["owner"])
    return holder_dead(f"{row['host']}:{row['pid']}")


def leftover_lines(services: Services) -> list[str]:
    """What ``drsvc cleanup`` would act on, readable without the work lease (``catalog check``).

    Pending points count only when their job's process is known to be gone (``_job_gone``).
    """
    catalog = services.catalog
    lines = []
    for row in catalog.query(
        "SELECT p.id, j.host, j.pid, j.owner FROM points p JOIN jobs j ON j.id = p.job_id "
        "WHERE p.status = 'pending' AND j.status = 'running' ORDER BY p.id"
    ):
        if _job_gone(catalog, row):
            lines.append(f"leftover: point {row['id']} is pending but its backup (pid {row['pid']}) is gone")
    for name in PruneJob(services, None).unreferenced_snapshots():
        lines.append(f"leftover: pool snapshot {name} is needed by no point")
    for intent in leftovers(catalog):
        if intent.kind in MEMORY_KINDS:
            lines.append(f"leftover: {intent.line()}: its owner is gone; it holds a desktop's memory in plaintext")
        elif intent.kind != "restore-in-place":
            lines.append(f"leftover: {intent.line()}: its owner is gone")
    for drill_id in interrupted_drills(catalog):
        lines.append(f"leftover: drill {drill_id} is recorded running but its process is gone")
    for run_id in abandoned_runs(catalog, "site_recoveries"):
        lines.append(f"leftover: site recovery or drill {run_id} is recorded running but its process is gone")
    for job_id in interrupted_jobs(catalog):
        lines.append(f"leftover: job {job_id} is recorded running but its process is gone")
    for intent in interrupted_restores(catalog):
        lines.append(f"interrupted: in-place restore {intent.line()}: `drsvc restore {intent.target}` finishes it")
    if lines:
        lines.append("(drsvc cleanup removes the leftovers)")
    return lines


def clean_before(services: Services, lease: Lease, on_event: Event | None = None) -> CleanupReport | None:
    """Cleanup at the start of a run (scheduler tick, backup, prune): never fails the run itself.

    Points of dead backups are marked failed first (cheap, catalog only); a cleanup that cannot
    reach Ceph or the runtime is reported as an event and retried by the next run.
    """
    event = on_event or (lambda *a, **k: None)
    try:
        report = CleanupJob(services, lease, on_event=on_event).run()
    except DrsvcError as e:
        event("cleanup-failed", error=e)
        return None
    if not report.nothing or report.problems:
        event("cleanup", report=report)
    return report


class CleanupJob:
    """Finds and removes leftovers of owners that are gone."""

    def __init__(self, services: Services, lease: Lease | None, *, on_event: Event | None = None) -> None:
        self.services = services
        self.catalog = services.catalog
        self.lease = lease
        self.on_event = on_event or (lambda *a, **k: None)

    def run(self, *, dry_run: bool = False) -> CleanupReport:
        report = CleanupReport(dry_run)
        prune = PruneJob(self.services, self.lease, on_event=self.on_event)
        if dry_run:
            report.failed_points = dead_backup_points(self.services)
            report.snapshots = prune.unreferenced_snapshots(report.failed_points)
            for intent in leftovers(self.catalog):
                target = report.interrupted_restores if intent.kind == "restore-in-place" else report.undone
                target.append(intent.line())
            report.interrupted_restores += [
                i.line() for i in interrupted_restores(self.catalog) if i.state == "interrupted"
            ]
            report.interrupted_drills = interrupted_drills(self.catalog)
            report.interrupted_recoveries = abandoned_runs(self.catalog, "site_recoveries")
            report.interrupted_jobs = interrupted_jobs(self.catalog)
            return report
        bound_owner_leases(self.catalog)  # a clock stepped back must not keep dead owners for hours
        if self.lease is None or not self.lease.joined:
            report.failed_points = recover_interrupted(self.catalog)
            self._drop_manifests(report)
        try:  # a snapshot Ceph will not remove now stays (its row too): the next cleanup retries
            report.snapshots = prune.remove_unreferenced_snapshots(report.problems)
        except DrsvcError as e:  # the lease lost, the catalog unreadable
            report.problems.append(f"pool snapshots: {e}")
        self.undo(leftovers(self.catalog), report)  # a killed drill's clones among them
        self._site_drills(report)
        report.interrupted_drills = interrupted_drills(self.catalog, mark=True)
        report.interrupted_recoveries = abandoned_runs(self.catalog, "site_recoveries", mark=True)
        report.interrupted_jobs = interrupted_jobs(self.catalog, mark=True)
        # owner leases that lapsed and guard nothing any more (a killed run's: a run that ends removes its own)
        self._forget_lapsed_owners()
        # every in-place restore still interrupted, not only those noticed now
        report.interrupted_restores = [i.line() for i in interrupted_restores(self.catalog)]
        return report

    def _forget_lapsed_owners(self) -> None:
        """Owner rows that lapsed and guard nothing any more go (a killed run's: a run that ends
        removes its own); not one whose process still runs here (the clock stepped forward)."""
        rows = self.catalog.query(
            "SELECT name FROM leases WHERE name LIKE 'owner:%' AND expires_at < ? "
            "AND name NOT IN (SELECT owner FROM intents WHERE state = 'pending')",
            [time.time()],
        )
        for name in [r["name"] for r in rows if not owner_alive(self.catalog, r["name"])]:
            self.catalog.execute("DELETE FROM leases WHERE name = ?", [name])

    def _site_drills(self, report: CleanupReport) -> None:
        """A killed ``site drill`` recorded its sandboxes' intents in its scratch catalog: undone
        there (with the site's services), then the scratch catalog goes."""
        from drsvc.offsite.recover import SiteServices, abandoned_scratch

        for site, catalog, directory in abandoned_scratch(self.services, report.problems):
            try:
                site_services = SiteServices(self.services, site, catalog)
                CleanupJob(site_services, None, on_event=self.on_event).undo(leftovers(catalog), report)
                left = pending(catalog)
            finally:
                catalog.close()
            if not left:
                shutil.rmtree(directory, ignore_errors=True)

    def _drop_manifests(self, report: CleanupReport) -> None:
        """A backup killed after writing a manifest left a point the catalog now calls failed:
        its manifest goes too, or a rebuild would bring back a point whose snapshot is gone."""
        if not report.failed_points or self.services.config.hot is None:
            return
        marks = ",".join("?" * len(report.failed_points))
        rows = self.catalog.query(f"SELECT id, desktop_id FROM points WHERE id IN ({marks})", report.failed_points)
        try:
            hot = self.services.hot
            for row in rows:
                with contextlib.suppress(NotFound):
                    hot.delete_manifest(row["desktop_id"], row["id"])
        except DrsvcError as e:
            report.problems.append(f"manifests of interrupted points: {e}")

    def undo(self, intents: list[Intent], report: CleanupReport) -> None:
        """Undo each leftover intent (or report it, for in-place restores)."""
        for intent in intents:
            try:
                state = self._undo(intent, report)
            except DrsvcError as e:
                report.problems.append(f"{intent.line()}: {e}")
                continue
            resolve(self.catalog, intent.id, state)
            if state == "interrupted":
                self.on_event("restore-interrupted", intent=intent)
            else:
                report.undone.append(intent.line())
                self.on_event("undone", intent=intent)
            self._fail_restore(intent)

    def _undo(self, intent: Intent, report: CleanupReport) -> str:
        if intent.kind == "clone-container":
            if intent.detail.get("phase", "container") not in CONTAINER_PHASES:
                return "undone"  # killed before its container phase: a container there is not its own
            return self._remove_clone(intent.target, intent.detail.get("of"), intent.detail.get("mark"), report)
        if intent.kind == "clone-volume":
            return self._remove_clone_objects(intent, report)
        if intent.kind == "multipart-uploads":
            store = self._upload_store(intent.target)
            if store is None:
                report.problems.append(f"{intent.line()}: that store is not this config's cold store or a site's")
                return "failed"
            if self.lease is None:  # stays pending for a cleanup that holds the lease
                raise DrsvcError("left for a cleanup under the work lease")
            abort = getattr(store, "abort_multipart_uploads", None)
            if abort is not None:
                # Every unfinished upload of the store, not only those begun after the intent:
                # under the work lease no tier run uploads, and S3 clocks are not ours to trust.
                abort()
            return "undone"
        if intent.kind in ARTIFACT_KINDS:
            return self._forget(intent)
        if intent.kind == "restore-in-place":
            return "interrupted"
        return "done"  # point-read: nothing was made

    def _upload_store(self, url: str) -> Any:
        """The object store a ``multipart-uploads`` intent names: the cold tier's (tier runs) or a
        site's (copies); None when the config has no such store any more."""
        if self.services.has_cold and self.services.cold.store.url == url:
            return self.services.cold.store
        for name in self.services.config.sites:
            objects = self.services.site_objects(name, create=False)
            if objects.url == url:
                return objects
        return None

    def _remove_clone_objects(self, intent: Intent, report: CleanupReport) -> str:
        """A killed clone restore's objects: of the names it recorded before writing, those it wrote.

        Killed while writing into an empty namespace (``mark`` recorded, not ``written``): only the
        objects that still carry its writer mark, which it set in the op creating each one; an
        object another writer put under one of those names stays. Once ``written``: every recorded
        name (each one created by it). Recorded by an older drsvc: the names, or without names the
        whole namespace, as before."""
        users = self.catalog.query(
            "SELECT id FROM desktops WHERE volume = ? AND gone_since IS NULL AND labels NOT LIKE '%drsvc.clone-of%'",
            [intent.target],
        )
        if users:
            report.problems.append(f"{intent.line()}: not purged, desktop {users[0]['id']} uses that volume")
            return "failed"
        names = unpack_names(intent.detail)
        mark = intent.detail.get("mark")
        volume = self.services.volume(intent.target)
        if names is not None and mark is not None and not intent.detail.get("written"):
            # exact whoever else writes there (a racing restore of the same name, an operator)
            removed = volume.remove_objects(names, marked=str(mark))
            report.others.append(
                f"{intent.target}: removed the {removed} object(s) carrying the killed restore's writer mark; "
                "an object without it is not its own and stays"
            )
            return "undone"
        # a restore of the same name that succeeded since, or still runs, writes the same names
        since = [
            i
            for i in intents_of(self.catalog, "clone-volume", intent.target)
            if (i.state == "kept" and i.id > intent.id)
            or (i.state == "pending" and i.id != intent.id and owner_alive(self.catalog, i.owner))
        ]
        if since:
            why = "holds its clone" if since[0].state == "kept" else "is being written by it"
            report.problems.append(
                f"{intent.line()}: not removed, the namespace {why} (restore {since[0].detail.get('restore')})"
            )
            return "failed"
        if names is None:  # recorded by an older drsvc, without the names: the namespace was its own
            volume.purge()
        else:
            volume.remove_objects(names)
        return "undone"

    def _forget(self, intent: Intent) -> str:
        """What a killed restore's runtime left (checkpoint image, node archive, loaded base image): removed."""
        loading = pending(self.catalog, "loaded-image", intent.target) if intent.kind == "loaded-image" else []
        # a live restore loading the same image may be about to run a container from it
        if any(i.owner != intent.owner and owner_alive(self.catalog, i.owner) for i in loading):
            raise DrsvcError("left for now: a running restore loads the same image")
        return forget(self.services.runtime, intent.kind, intent.target)

    def _remove_clone(self, name: str, source: str | None, mark: str | None, report: CleanupReport) -> str:
        runtime = self.services.runtime
        try:
            container = runtime.inspect(name)
        except NotFound:
            return "undone"  # never created, or removed already
        # only the clone the killed restore made: never a container someone else put there since
        if not (owned_clone(container, source, name) if source else LABEL_CLONE_OF in container.labels):
            report.problems.append(f"container {name}: not removed, it is not the clone a restore of {source} made")
            return "failed"
        if mark is not None and container.labels.get(LABEL_RESTORE) != mark:
            # recorded by a drsvc that labels what it makes: another restore of that name made this one
            report.others.append(f"container {name}: not removed, the killed restore did not make it")
            return "undone"
        runtime.remove(name)
        return "undone"

    def _fail_restore(self, intent: Intent) -> None:
        object_restore = intent.detail.get("object_restore")  # a single-object restore's read lease
        if intent.kind == "point-read" and object_restore is not None:
            self.catalog.execute(
                "UPDATE object_restores SET status = 'failed', error = ?, finished_at = ? "
                "WHERE id = ? AND status = 'running'",
                [
                    "interrupted: the restoring process ended; run the same `drsvc restore --object` again",
                    clock.to_iso(clock.now()),
                    object_restore,
                ],
            )
            return
        restore_id = intent.detail.get("restore")
        if restore_id is None:
            return
        phase = intent.detail.get("phase")
        why = "interrupted: the restoring process ended" + (f" during its {phase} phase" if phase else "")
        if intent.kind == "restore-in-place":
            why += f"; run `drsvc restore {intent.target}` again to finish it"
        self.catalog.execute(
            "UPDATE restores SET status = 'failed', error = ?, finished_at = ? WHERE id = ? AND status = 'running'",
            [why, clock.to_iso(clock.now()), restore_id],
        )
