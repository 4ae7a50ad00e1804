"""Restore storms: many desktops back at once, in priority order, with admission control.

One engine for every "many desktops are down" case: ``drsvc restore --all | --node N | --tenant T``
at the primary site (a node or a pool lost), and ``drsvc site recover`` / ``site drill`` at
another site (``drsvc.offsite.recover``).

**Order** (``plan_fleet``, from the catalog alone): each desktop's latest restorable point, the
policy that governs it, then ``priority`` (1 first; default 100), then the RTO target (shorter
first), then the desktop id. **Running** (``FleetRestore``): ``parallel`` desktops in flight, taken
in that order; each one's phases pass through ``drsvc.admission`` (download, Ceph writes, CRIU
restores per host), so the first desktops are up in about their own restore time while the
others queue. ``limits=None`` is "everything at once" (the comparison the benchmark makes).

**What is measured**: per desktop, ``up_seconds`` -- from the start of the whole recovery to that
desktop up and healthy, the RTO its user sees, judged against the policy's target -- and the
restore's own RTO and phases. For the fleet: time to first, 50 %, 95 % and all desktops up, and
every failure with its reason. Runs are recorded in ``site_recoveries`` and
``site_recovery_desktops`` (``drsvc report`` shows them); a failing desktop never stops the others.
"""

from __future__ import annotations

import collections
import json
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from drsvc import clock
from drsvc.admission import Admission, Limits, RestoreGate
from drsvc.catalog import Catalog
from drsvc.errors import (
    EXIT_FAILED,
    EXIT_OBJECTIVE_MISSED,
    EXIT_OK,
    EXIT_PARTIAL,
    DrsvcError,
    InvalidInput,
    NotFound,
)
from drsvc.intents import Owner
from drsvc.policy import PolicySet
from drsvc.prune import policy_for
from drsvc.restore import DEFAULT_TARGET, RestoreJob, RestorePlan
from drsvc.runtimes.base import LABEL_CLONE_OF
from drsvc.services import Services
from drsvc.workpool import run_each

Event = Callable[..., None]
DEFAULT_PRIORITY = 100
LOCAL_HOST = "local"
DEFAULT_LIMITS = Limits()  # the CRIU slot key of desktops whose node drsvc does not know (one host)


def _quiet(*_a: Any, **_k: Any) -> None:
    return None


@dataclass
class FleetItem:
    """One desktop of a storm: where it is in the order, and what happened to it."""

    desktop: str
    rank: int = 0
    priority: int = DEFAULT_PRIORITY
    target_seconds: float = DEFAULT_TARGET
    point_id: str | None = None
    tier: str | None = None
    host: str = LOCAL_HOST
    status: str = "planned"  # planned | running | ok | objective_missed | failed | skipped
    up_seconds: float | None = None
    rto_seconds: float | None = None
    phases: dict[str, float] = field(default_factory=dict)
    checks: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    clone: str | None = None

    @property
    def up(self) -> bool:
        return self.status in ("ok", "objective_missed")

    def document(self) -> dict[str, Any]:
        return {
            "desktop": self.desktop,
            "rank": self.rank,
            "priority": self.priority,
            "point_id": self.point_id,
            "tier": self.tier,
            "status": self.status,
            "up_seconds": None if self.up_seconds is None else round(self.up_seconds, 3),
            "rto_seconds": None if self.rto_seconds is None else round(self.rto_seconds, 3),
            "target_seconds": self.target_seconds,
            "phases": {k: round(v, 3) for k, v in self.phases.items()},
            "checks": self.checks,
            "error": self.error,
            "clone": self.clone,
        }


def time_to_fraction(items: Sequence[FleetItem], fraction: float) -> float | None:
    """Seconds until ``fraction`` of the desktops were up (None when that many never came up)."""
    if not items:
        return None
    need = max(1, math.ceil(fraction * len(items)))
    ups = sorted(i.up_seconds for i in items if i.up and i.up_seconds is not None)
    return ups[need - 1] if len(ups) >= need else None


@dataclass
class FleetReport:
    kind: str  # storm | recover | drill
    site: str | None = None
    recovery_id: int | None = None
    selection: str = ""
    parallel: int = 1
    admission: dict[str, Any] = field(default_factory=dict)
    items: list[FleetItem] = field(default_factory=list)
    dry_run: bool = False
    seconds: float = 0.0
    prepare: dict[str, Any] = field(default_factory=dict)  # e.g. the catalog rebuild of a site recovery
    interrupted: bool = False

    @property
    def exit_code(self) -> int:
        considered = [i for i in self.items if i.status != "skipped"]
        if not considered:
            return EXIT_OK if self.items or self.dry_run else EXIT_FAILED
        if self.dry_run:
            return EXIT_OK
        up = [i for i in considered if i.up]
        if len(up) < len(considered):
            return EXIT_PARTIAL if up else EXIT_FAILED
        return EXIT_OBJECTIVE_MISSED if any(i.status == "objective_missed" for i in up) else EXIT_OK

    def summary(self) -> dict[str, Any]:
        considered = [i for i in self.items if i.status != "skipped"]
        up = [i.up_seconds for i in considered if i.up and i.up_seconds is not None]
        rnd = lambda v: None if v is None else round(v, 2)  # noqa: E731
        return {
            "desktops": len(self.items),
            "up": sum(i.up for i in considered),
            "within_target": sum(i.status == "ok" for i in considered),
            "failed": sum(i.status == "failed" for i in considered),
            "skipped": sum(i.status == "skipped" for i in self.items),
            "first_up_seconds": rnd(min(up) if up else None),
            "p50_up_seconds": rnd(time_to_fraction(considered, 0.50)),
            "p95_up_seconds": rnd(time_to_fraction(considered, 0.95)),
            "all_up_seconds": rnd(time_to_fraction(considered, 1.0)),
            "seconds": round(self.seconds, 2),
        }

    def document(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "site": self.site,
            "recovery_id": self.recovery_id,
            "selection": self.selection,
            "parallel": self.parallel,
            "admission": self.admission,
            "dry_run": self.dry_run,
            "interrupted": self.interrupted,
            "prepare": self.prepare,
            "summary": self.summary(),
            "desktops": [i.document() for i in self.items],
        }


# ---------------------------------------------------------------------- choosing and ordering


def select_desktops(
    catalog: Catalog,
    policies: PolicySet,
    *,
    everything: bool = False,
    node: str | None = None,
    tenant: str | None = None,
    policy: str | None = None,
    pool: str | None = None,
) -> list[dict[str, Any]]:
    """The desktops a storm restores: all, one node's, tenant's, policy's or volume pool's (combinable)."""
    if not (everything or node or tenant or policy or pool):
        raise InvalidInput("say which desktops: --all, --node N, --tenant T, --pool P (or --policy P)")
    chosen = policies.get(policy) if policy else None
    desktops = [d for d in catalog.desktops() if LABEL_CLONE_OF not in (d["labels"] or {})]
    # a clone (drill, --as) is never restored as a desktop of its own
    _known_or_not_found(desktops, node=node, tenant=tenant, pool=pool)
    out = []
    for d in desktops:
        if node is not None and d["node"] != node:
            continue
        if tenant is not None and d["tenant"] != tenant:
            continue
        if pool is not None and not (d["volume"] or "").startswith(f"rados://{pool}/"):
            continue
        if chosen is not None and not chosen.covers(d["id"], d["tenant"], d["labels"]):
            continue
        out.append(d)
    return out


def _known_or_not_found(
    desktops: Sequence[dict[str, Any]], *, node: str | None, tenant: str | None, pool: str | None
) -> None:
    """A node, tenant or pool no desktop has is a typo at 3 a.m., not an empty storm that exits 0."""
    known = {
        "node": {d["node"] for d in desktops if d["node"]},
        "tenant": {d["tenant"] for d in desktops if d["tenant"]},
        "pool": {
            d["volume"][len("rados://") :].partition("/")[0]
            for d in desktops
            if (d["volume"] or "").startswith("rados://")
        },
    }
    for what, value in (("node", node), ("tenant", tenant), ("pool", pool)):
        if value is not None and value not in known[what]:
            names = ", ".join(sorted(known[what])) or "none"
            raise NotFound(f"no desktop has {what} {value!r} (known: {names}; drsvc desktops list)")


def plan_fleet(services: Services, desktops: Sequence[dict[str, Any]], tier: str | None = None) -> list[FleetItem]:
    """Each desktop's point and tier, in restore order (priority, RTO target, id); ``tier``: each
    desktop's latest point that tier holds, restored from it.

    The catalog decides, except for a desktop with no restorable point: the runtime says whether it
    is lost (a failure to report) or running untouched (skipped: nothing to restore).
    """
    restore = RestoreJob(services)
    items: list[FleetItem] = []
    for d in desktops:
        item = FleetItem(d["id"], host=d.get("node") or LOCAL_HOST)
        try:
            point = restore.choose_point(d["id"], tier=tier)
            item.point_id = point["id"]
            item.tier = tier or restore._tier(point)
            policy = policy_for(point, services.policies, {d["id"]: d})
        except DrsvcError as e:
            item.status, item.error = ("skipped" if _running(services, d) else "failed"), str(e)
            policy = None
        if policy is not None:
            item.priority = policy.priority
            item.target_seconds = policy.objectives.rto.total_seconds()
        items.append(item)
    items.sort(key=lambda i: (i.status != "planned", i.priority, i.target_seconds, i.desktop))
    for rank, item in enumerate(items, start=1):
        item.rank = rank
    return items


def preview_skips(services: Services, items: list[FleetItem], desktops: Sequence[dict[str, Any]]) -> None:
    """For a dry run: mark what the run would skip, a planned desktop already running here (without
    --force the run restores over no running desktop), so the plan lists only what it would restore."""
    by_id = {d["id"]: d for d in desktops}
    for item in items:
        desktop = by_id.get(item.desktop)
        if item.status == "planned" and desktop is not None and _running(services, desktop):
            item.status = "skipped"
            item.error = f"{desktop['container']} is already running here (--force restores over it)"


def _running(services: Services, desktop: dict[str, Any]) -> bool:
    try:
        return services.runtime.inspect(desktop["container"]).state == "running"
    except DrsvcError:
        return False


# ---------------------------------------------------------------------- running


class FleetRestore:
    """Restores planned desktops with admission control, and records the run in ``record``.

    ``relocate(url)`` moves each point's volume (a site recovery writes into its own pool, see
    ``RestoreJob``); ``finish(item, plan)`` runs after each desktop whatever happened (a drill tears its
    clone down, and resolves the clone's intents, left pending for it); ``clone_name(item)``
    restores each desktop as a clone of that name instead of in place. ``record`` is the catalog
    the run is recorded in (a drill restores through a scratch catalog but is recorded in the real one).
    """

    def __init__(
        self,
        services: Services,
        record: Catalog,
        *,
        kind: str = "storm",
        site: str | None = None,
        parallel: int = 4,
        limits: Limits | None = DEFAULT_LIMITS,
        force: bool = False,
        network: str | None = None,
        verify: bool = False,
        clone_name: Callable[[FleetItem], str] | None = None,
        relocate: Callable[[str], str] | None = None,
        finish: Callable[[FleetItem, RestorePlan], None] | None = None,
        on_event: Event | None = None,
    ) -> None:
        if parallel < 1:
            raise InvalidInput(f"--parallel {parallel}: must be at least 1")
        self.services = services
        self.record = record
        self.kind = kind
        self.site = site
        self.parallel = parallel
        self.admission = Admission(limits)
        self.force = force
        self.network = network
        self.verify = verify
        self.clone_name = clone_name
        self.relocate = relocate
        self.finish = finish
        self.on_event = on_event or _quiet
        self._lock = threading.Lock()

    def run(
        self,
        items: list[FleetItem],
        *,
        selection: str = "",
        started: float | None = None,
        report: FleetReport | None = None,
    ) -> FleetReport:
        """Restore every planned item (order kept); ``started`` (monotonic) is when the recovery began."""
        t0 = time.monotonic() if started is None else started
        report = report or FleetReport(self.kind, self.site)
        report.items, report.selection, report.parallel = items, selection, self.parallel
        report.admission = self.admission.document()
        # the owner lease: a run killed (-9) skips the finally that records its end; once its
        # owner lapses, cleanup records it interrupted (``drsvc.intents.abandoned_runs``)
        with Owner(self.record) as owner:
            report.recovery_id = self._start(report, owner.name)
            return self._run(items, report, t0)

    def _run(self, items: list[FleetItem], report: FleetReport, t0: float) -> FleetReport:
        # Shared adapters are built once, before the threads race to build them.
        self.services.runtime  # noqa: B018
        if any(i.tier == "cold" for i in items):
            self.services.cold  # noqa: B018
        planned = [item for item in items if item.status == "planned"]
        order = collections.deque(enumerate(planned))
        taking = threading.Lock()

        def next_one(_: FleetItem) -> None:
            # each worker takes the next item, and announces it, in plan order: the pool's threads
            # dequeue in order, but one may be preempted before it announces (or starts) its item
            with taking:
                rank, item = order.popleft()
                item.status = "running"
                self.on_event("started", item=item, elapsed=time.monotonic() - t0)
            self._one(item, t0, rank)

        try:
            run_each(
                next_one,
                planned,
                workers=self.parallel,
                name="storm",
                on_interrupt=lambda: setattr(report, "interrupted", True),
            )
        finally:
            report.seconds = time.monotonic() - t0
            report.admission = self.admission.document()
            self._finish(report)
        return report

    def _one(self, item: FleetItem, t0: float, rank: int) -> None:
        gate = RestoreGate(self.admission, item.host, rank=rank)
        job = RestoreJob(self.services, on_event=gate, relocate=self.relocate)
        plan: RestorePlan | None = None
        try:
            item.clone = self.clone_name(item) if self.clone_name else None
            plan = job.plan(item.desktop, point_id=item.point_id, tier=item.tier, as_name=item.clone)
            item.target_seconds = plan.target_seconds
            if plan.container_state == "running" and not self.force:
                item.status = "skipped"
                item.error = f"{plan.name} is already running here (--force restores over it)"
                return
            # a clone that ``finish`` tears down keeps its intents pending until then (``temporary``):
            # killed between the restore and the teardown, cleanup still finds and removes it
            temporary = self.finish is not None and bool(plan.as_name)
            result = job.run(plan, force=self.force, network=self.network, verify=self.verify, temporary=temporary)
            item.up_seconds = time.monotonic() - t0
            item.rto_seconds, item.phases, item.checks = result.rto_seconds, result.phases, result.checks
            item.status = "ok" if item.up_seconds <= item.target_seconds else "objective_missed"
        except Exception as e:  # one desktop's failure (or a bug in it) never stops the others
            item.status = "failed"
            item.error = str(e) if isinstance(e, DrsvcError) else f"{type(e).__name__}: {e}"
        finally:
            gate.release_all()
            if self.finish is not None and plan is not None:
                try:
                    self.finish(item, plan)
                except Exception as e:
                    note = f"teardown failed: {e}"
                    item.error = f"{item.error}; {note}" if item.error else note
                    if item.up:
                        item.status = "failed"
            self._record_item(item)
            self.on_event("finished", item=item, elapsed=time.monotonic() - t0)

    # ------------------------------------------------------------------ the record

    def _start(self, report: FleetReport, owner: str) -> int:
        with self.record.transaction():
            cursor = self.record.execute(
                "INSERT INTO site_recoveries (kind, site, started_at, selection, parallel, admission, status, owner) "
                "VALUES (?, ?, ?, ?, ?, ?, 'running', ?)",
                [
                    report.kind,
                    report.site,
                    clock.to_iso(clock.now()),
                    report.selection,
                    report.parallel,
                    json.dumps(report.admission),
                    owner,
                ],
            )
            recovery_id = int(cursor.lastrowid or 0)
            for item in report.items:
                self.record.execute(
                    "INSERT INTO site_recovery_desktops (recovery_id, desktop_id, rank, point_id, status, "
                    "target_seconds, error) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    [recovery_id, item.desktop, item.rank, item.point_id, item.status, item.target_seconds, item.error],
                )
        self._recovery_id = recovery_id
        return recovery_id

    def _record_item(self, item: FleetItem) -> None:
        with self._lock:
            self.record.execute(
                "UPDATE site_recovery_desktops SET status = ?, point_id = ?, up_seconds = ?, rto_seconds = ?, "
                "target_seconds = ?, phases = ?, error = ? WHERE recovery_id = ? AND desktop_id = ?",
                [
                    item.status,
                    item.point_id,
                    item.up_seconds,
                    item.rto_seconds,
                    item.target_seconds,
                    json.dumps(item.phases),
                    item.error,
                    self._recovery_id,
                    item.desktop,
                ],
            )

    def _finish(self, report: FleetReport) -> None:
        code = report.exit_code
        status = (
            "interrupted"
            if report.interrupted
            else {EXIT_OK: "ok", EXIT_OBJECTIVE_MISSED: "ok", EXIT_PARTIAL: "partial"}.get(code, "failed")
        )
        summary = {**report.summary(), "prepare": report.prepare, "admission": report.admission}
        self.record.execute(
            "UPDATE site_recoveries SET finished_at = ?, status = ?, summary = ?, admission = ? WHERE id = ?",
            [
                clock.to_iso(clock.now()),
                status,
                json.dumps(summary, default=str),
                json.dumps(report.admission),
                report.recovery_id,
            ],
        )
