"""Restore planning: which point, from which tier, into which target, and how long it should take.

``RestorePlanner.plan`` chooses the point (latest complete, latest at or before ``--at``, or
``--point``; an interrupted in-place restore is resumed from its own point) and the fastest tier
holding it, reads its manifest, validates where the restore may write (``drsvc.targets``) and
predicts the phases' times from past restores. Nothing is changed but what a killed restore left at
the same clone name. ``drsvc.restore.RestoreJob`` (a planner) runs the phases.
"""

from __future__ import annotations

import json
import statistics
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from drsvc import clock
from drsvc.catalog import Catalog
from drsvc.chunks import ChunkStore
from drsvc.errors import (
    EXIT_OBJECTIVE_MISSED,
    EXIT_OK,
    InvalidInput,
    NotFound,
)
from drsvc.intents import interrupted_restores, leftovers
from drsvc.policy import Policy
from drsvc.prune import policy_for
from drsvc.runtimes.base import DesktopRef
from drsvc.services import Services
from drsvc.targets import Fleet, Target, check_restore_target

R = TypeVar("R")

PHASES = ("plan", "fetch", "volume", "container", "health")
DEFAULT_TARGET = 30.0
# Throughputs (bytes/s) and fixed costs used to predict an RTO before any restore was measured.
DEFAULT_RATE = {"hot": 200 * 2**20, "cold": 100 * 2**20}
DEFAULT_CONTAINER_SECONDS = 1.0
SETTLE_SECONDS = 0.3  # a restored container must still run after this long

Event = Callable[..., None]


def _quiet(*_a: Any, **_k: Any) -> None:
    return None


@dataclass
class RestorePlan:
    """What a restore will do; ``--dry-run`` prints it and stops."""

    desktop: dict[str, Any]
    point: dict[str, Any]
    tier: str
    manifest: dict[str, Any]
    as_name: str | None
    target_seconds: float
    predicted: dict[str, float]
    target: Target  # where the restore may write, validated (drsvc.targets)
    policy: Policy | None = None
    plan_seconds: float = 0.0
    from_snapshot: bool = True  # hot: the pool snapshot exists (else the volume is written from chunks)
    resumes: int | None = None  # the interrupted in-place restore (its restores id) this one finishes

    @property
    def name(self) -> str:
        return self.target.container

    @property
    def container_state(self) -> str | None:
        """The state of the container the restore replaces, None when there is none."""
        return self.target.existing.state if self.target.existing else None

    @property
    def predicted_rto(self) -> float:
        return sum(self.predicted.values())

    @property
    def volume_url(self) -> str:
        return self.target.volume_url

    @property
    def in_place(self) -> bool:
        """Whether the volume is the point's own namespace (rolled back, not copied)."""
        return self.volume_url == self.manifest["volume"]["url"]

    def document(self) -> dict[str, Any]:
        return {
            "desktop": self.desktop["id"],
            "point_id": self.point["id"],
            "taken_at": self.point["taken_at"],
            "consistency": self.point["consistency"],
            "tier": self.tier,
            "as": self.as_name,
            "container": self.name,
            "volume": self.volume_url,
            "existing_container": self.container_state,
            "predicted_rto_seconds": round(self.predicted_rto, 2),
            "predicted_phases": {k: round(v, 2) for k, v in self.predicted.items()},
            "target_seconds": self.target_seconds,
            "bytes": self.point["bytes"],
            "target": self.target.document(),
            "resumes": self.resumes,
        }


@dataclass
class RestoreResult:
    plan: RestorePlan
    status: str = "running"
    phases: dict[str, float] = field(default_factory=dict)
    rto_seconds: float = 0.0
    restore_id: int | None = None
    checks: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    @property
    def exit_code(self) -> int:
        if self.status == "ok":
            return EXIT_OK
        return EXIT_OBJECTIVE_MISSED if self.status == "objective_missed" else 1

    def document(self) -> dict[str, Any]:
        return {
            "desktop": self.plan.desktop["id"],
            "point_id": self.plan.point["id"],
            "tier": self.plan.tier,
            "as": self.plan.as_name,
            "status": self.status,
            "rto_seconds": round(self.rto_seconds, 3),
            "target_seconds": self.plan.target_seconds,
            "phases": {k: round(v, 3) for k, v in self.phases.items()},
            "checks": self.checks,
            "error": self.error,
            "restore_id": self.restore_id,
        }


def network_for(plan: RestorePlan, requested: str | None) -> str | None:
    """The network the restored container gets (None: the checkpoint's own), checked before any phase.

    A clone gets ``'none'`` unless the operator asks otherwise: it runs the desktop's processes,
    which still hold the original's addresses and credentials in memory, and must not reach what
    the original reaches. ``'keep'`` keeps the checkpoint's network, never the host's for a clone.
    """
    if requested == "keep":
        if plan.target.clone and plan.manifest["runtime"].get("network") == "host":
            raise InvalidInput(
                f"--network keep: {plan.desktop['id']} uses the host's network; a clone never shares it "
                "(use --network none or a network of its own)"
            )
        return None
    if requested is None and plan.target.clone:
        return "none"
    if requested == "host":
        raise InvalidInput("--network host: drsvc never restores a desktop into the host's network namespace")
    return requested


def parse_time(text: str) -> datetime:
    """``--at`` values: ISO-8601, with an offset or ``Z``; a time without one is UTC."""
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInput(f"--at {text!r}: expected an ISO-8601 time such as 2026-11-27T02:00Z") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=clock.now().tzinfo)
    return moment


class RestorePlanner:
    """Plans restores of single desktops (``RestoreJob`` runs them)."""

    def __init__(
        self, services: Services, *, on_event: Event = _quiet, relocate: Callable[[str], str] | None = None
    ) -> None:
        self.services = services
        self.catalog: Catalog = services.catalog
        self.on_event = on_event
        # Where a point's volume goes when it is restored somewhere else than where it was taken
        # (a site recovery writes into its own pool, drsvc.offsite.recover): applied to the
        # manifest before the target is validated, so every rule and phase sees the new place.
        self.relocate = relocate

    # ------------------------------------------------------------------ planning

    def choose_point(
        self, desktop_id: str, *, at: datetime | None = None, point_id: str | None = None, tier: str | None = None
    ) -> dict:
        """The point to restore: ``point_id``, else the latest complete one (at or before ``at``) that
        a tier holds (``tier``: that tier; e.g. the newest cold point when the hot store is lost)."""
        if at is not None and at > clock.now():
            # "the latest point at or before a future time" would silently be the latest point:
            # almost always a typo (a wrong year, a local time read as UTC), so refuse it
            raise InvalidInput(f"--at {at.isoformat()} is in the future (now: {clock.to_iso(clock.now())})")
        self.catalog.desktop(desktop_id)  # unknown desktop: exit 3
        if point_id is not None:
            point = self.catalog.point(point_id)
            if point["desktop_id"] != desktop_id:
                raise InvalidInput(f"point {point['id']} belongs to {point['desktop_id']}, not {desktop_id}")
            if point["status"] != "complete" or not point["tiers"]:
                raise NotFound(f"point {point['id']} is {point['status']} and held by no tier: it cannot be restored")
            return point
        oldest = None
        for point in self.catalog.points(desktop_id, status="complete"):
            held = tier in point["tiers"] if tier else bool(point["tiers"])
            if held and (at is None or _taken(point, at) <= at):
                return point
            oldest = point if held else oldest
        when = (f" with a {tier} copy" if tier else "") + (f" at or before {at.isoformat()}" if at else "")
        hint = None
        if oldest is not None:  # --at before every point: say where they start (points come newest first)
            hint = f"its oldest is {oldest['id']} at {oldest['taken_at']}: `drsvc points list {desktop_id}`"
        raise NotFound(f"no restorable recovery point of {desktop_id}{when}", hint=hint)

    def _snapshot_alive(self, point: dict[str, Any]) -> bool:
        """Whether the point's pool snapshot still exists (the catalog has not recorded its removal)."""
        if point["pool_snapshot_id"] is None:
            return False
        rows = self.catalog.query("SELECT removed_at FROM pool_snapshots WHERE id = ?", [point["pool_snapshot_id"]])
        return bool(rows) and rows[0]["removed_at"] is None

    def _tier(self, point: dict[str, Any]) -> str:
        if "hot" in point["tiers"] and self._snapshot_alive(point):
            return "hot"
        if "cold" in point["tiers"]:
            return "cold"
        if "hot" in point["tiers"]:
            return "hot"  # chunks are there even without the pool snapshot: written from chunks
        raise NotFound(f"point {point['id']} is held by no tier")

    def store(self, tier: str) -> ChunkStore:
        """The chunk store of ``tier``."""
        return self.services.hot if tier == "hot" else self.services.cold

    def plan(
        self,
        desktop_id: str,
        *,
        at: datetime | None = None,
        point_id: str | None = None,
        as_name: str | None = None,
        tier: str | None = None,
        allow_cross_tenant: bool = False,
        clear_leftovers: bool = True,
    ) -> RestorePlan:
        """Choose the point and tier, read its manifest, validate the target; nothing is touched
        (but, with ``clear_leftovers``, what a killed restore left at the same clone name).

        An in-place restore of a desktop whose last one was interrupted resumes it (same point),
        unless ``--at`` or ``--point`` choose another. What a killed restore into the same clone
        name left behind is removed first (its owner is gone), so the same command works again.
        """
        started = time.monotonic()
        # the runtime's containers are listed (an API call or two) beside the store and manifest reads
        live = beside(self.services.runtime.list_desktops)
        resumes = None
        if as_name is None and at is None and point_id is None:
            for intent in interrupted_restores(self.catalog):
                if intent.target == desktop_id and intent.detail.get("point"):
                    point_id, resumes = intent.detail["point"], intent.detail.get("restore")
        point = self.choose_point(desktop_id, at=at, point_id=point_id, tier=tier)
        tier = tier or self._tier(point)
        if tier not in point["tiers"]:
            raise NotFound(f"point {point['id']} has no {tier} copy (tiers: {', '.join(point['tiers'])})")
        store = self.store(tier)
        warm_index(store)
        manifest = store.get_manifest(desktop_id, point["id"])
        if self.relocate is not None:
            volume = dict(manifest["volume"])
            volume["url"] = self.relocate(volume["url"])
            manifest = {**manifest, "volume": volume}
        desktop = self.catalog.desktop(desktop_id)
        policy = policy_for(point, self.services.policies, {desktop_id: desktop})
        rto_target = policy.objectives.rto.total_seconds() if policy else DEFAULT_TARGET
        listed = live.result()
        if as_name is not None and clear_leftovers and self._clear_leftovers(as_name):
            listed = self.services.runtime.list_desktops()  # again: what the clearing removed is gone
        target = self.check_target(desktop, manifest, as_name, allow_cross_tenant=allow_cross_tenant, live=listed)
        plan = RestorePlan(
            desktop=desktop,
            point=point,
            tier=tier,
            manifest=manifest,
            as_name=as_name,
            target_seconds=rto_target,
            predicted={},
            target=target,
            policy=policy,
            from_snapshot=tier == "hot" and self._snapshot_alive(point),
            resumes=resumes,
        )
        plan.plan_seconds = time.monotonic() - started
        plan.predicted = self.predict(plan)
        return plan

    def _clear_leftovers(self, as_name: str) -> bool:
        """Undo what killed restores left at the clone name ``as_name`` (container, namespace); whether
        there was anything."""
        from drsvc.cleanup import CleanupJob, CleanupReport

        mine = [i for i in leftovers(self.catalog) if i.kind == "clone-container" and i.target == as_name]
        restores = {i.detail.get("restore") for i in mine}
        volumes = [i for i in leftovers(self.catalog, "clone-volume") if i.detail.get("restore") in restores]
        if mine or volumes:
            report = CleanupReport(dry_run=False)
            CleanupJob(self.services, None, on_event=self.on_event).undo(mine + volumes, report)
        return bool(mine or volumes)

    def check_target(
        self,
        desktop: dict[str, Any],
        manifest: dict[str, Any],
        as_name: str | None,
        *,
        allow_cross_tenant: bool = False,
        live: list[DesktopRef] | None = None,
    ) -> Target:
        """Where restoring ``manifest`` may write (``drsvc.targets`` rules); exit 2 when nowhere.

        ``live``: the runtime's labelled containers, when the caller listed them already."""
        runtime = self.services.runtime
        fleet = Fleet.gather(self.catalog.desktops(), runtime.list_desktops() if live is None else live)
        return check_restore_target(
            desktop=desktop,
            manifest=manifest,
            as_name=as_name,
            fleet=fleet,
            inspect=runtime.inspect,
            namespace_empty=lambda url: not self.services.volume(url).objects_now(),
            allow_cross_tenant=allow_cross_tenant,
        )

    def predict(self, plan: RestorePlan) -> dict[str, float]:
        """Phase times from past restores of this tier (median rate per byte), else defaults."""
        rows = self.catalog.query(
            "SELECT r.phases, p.bytes FROM restores r JOIN points p ON p.id = r.point_id "
            "WHERE r.tier = ? AND r.status IN ('ok', 'objective_missed') ORDER BY r.id DESC LIMIT 20",
            [plan.tier],
        )
        size = max(int(plan.point["bytes"]), 1)
        rate: dict[str, float] = {}
        fixed: dict[str, float] = {}
        for phase in PHASES:
            samples = [(json.loads(r["phases"]).get(phase), r["bytes"]) for r in rows]
            samples = [(s, b) for s, b in samples if s is not None and b]
            if phase in ("fetch", "volume") and samples:
                rate[phase] = statistics.median(s / b for s, b in samples)
            elif samples:
                fixed[phase] = statistics.median(s for s, _ in samples)
        default = 1 / DEFAULT_RATE[plan.tier]
        return {
            "plan": plan.plan_seconds,
            # fetch and volume overlap: the slower of the two counts
            "fetch": 0.0,
            "volume": max(rate.get("fetch", default), rate.get("volume", default)) * size,
            "container": fixed.get("container", DEFAULT_CONTAINER_SECONDS),
            "health": fixed.get("health", SETTLE_SECONDS),
        }


def beside(fn: Callable[[], R]) -> Future[R]:
    """Run ``fn`` on a daemon thread of its own; its result (or its exception) in the future.

    For reads the plan makes beside its own: nothing waits for them on the way out, so a plan
    that fails early is not held up by them (they only read).
    """
    future: Future[R] = Future()

    def run() -> None:
        try:
            future.set_result(fn())
        except BaseException as e:
            future.set_exception(e)

    threading.Thread(target=run, name="drsvc-plan", daemon=True).start()
    return future


def warm_index(store: ChunkStore) -> None:
    """Start loading a packed store's index (a listing and a GET per pack) beside the plan.

    A cold restore reads its volume through the index; loading it took ~0.5 s before the first
    byte of a 1 GiB desktop could be fetched. Loaded beside the rest of the plan (manifest, target
    checks), the volume phase finds it ready. A failure here is not reported (the future is never
    asked): the reader loads the index again when it needs it and reports that (every S3 call has
    the store's deadlines).
    """
    if store.pack_size:
        beside(store.packs.ensure_loaded)


def _taken(point: dict, at: datetime) -> datetime:
    """When ``point`` was taken, to the precision of ``at``: tables show times to the second, so
    ``--at`` copied from one (04:40:16) must include the point taken at 04:40:16.517."""
    taken = clock.from_iso(point["taken_at"])
    return taken.replace(microsecond=0) if at.microsecond == 0 else taken
