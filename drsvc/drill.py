"""Drills: restore sampled desktops into a sandbox, verify them, measure RTO, always tear down.

Each chosen desktop is restored from its latest restorable point as a clone of its own: its own
container name and RADOS namespace (``drill-<drill id>-<desktop>``), no network (``'none'``:
loopback only, so the clone can reach neither users nor the production desktop's data), and
labels naming it a clone. The drill checks what an auditor asks for: the volume's objects hash
to the manifest's digests, the container runs restored from its checkpoint (its processes
continued rather than restarted), the policy's probe answers, and the RTO is within target.
The clone and its namespace are removed afterwards, also when a step failed or the operator
pressed Ctrl-C. Every drill and every desktop's result is recorded for ``drsvc report``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from drsvc import clock
from drsvc.catalog import Catalog
from drsvc.errors import EXIT_FAILED, EXIT_OK, EXIT_PARTIAL, DrsvcError, InvalidInput, NotFound
from drsvc.intents import Owner, abandoned_runs
from drsvc.log import event
from drsvc.restore import DEFAULT_TARGET, RestoreJob, RestorePlan
from drsvc.restore_effects import resolve_clone
from drsvc.runtimes.base import Isolation
from drsvc.services import Services
from drsvc.targets import owned_clone
from drsvc.workpool import run_each

log = logging.getLogger("drsvc.drill")

Event = Callable[..., None]


@dataclass
class DesktopResult:
    desktop: str
    point_id: str | None = None
    tier: str | None = None
    rto_seconds: float | None = None
    target_seconds: float = DEFAULT_TARGET
    rpo_seconds: float | None = None
    phases: dict[str, float] = field(default_factory=dict)
    verified: bool = False
    passed: bool = False
    error: str | None = None
    clone: str | None = None
    isolation: dict[str, Any] | None = None  # check_isolation() of the clone

    def document(self) -> dict[str, Any]:
        return {
            "desktop": self.desktop,
            "point_id": self.point_id,
            "tier": self.tier,
            "rto_seconds": None if self.rto_seconds is None else round(self.rto_seconds, 3),
            "target_seconds": self.target_seconds,
            "rpo_seconds": None if self.rpo_seconds is None else round(self.rpo_seconds, 1),
            "phases": {k: round(v, 3) for k, v in self.phases.items()},
            "verified": self.verified,
            "passed": self.passed,
            "error": self.error,
            "isolation": self.isolation,
        }


def check_isolation(clone: Isolation | None, original: Isolation | None) -> dict[str, Any]:
    """Whether a drill clone is a sandbox: no network, no host namespace, none of the original's storage.

    ``clone`` None: the runtime cannot say (the drill then fails: isolation is not assumed).
    """
    problems = []
    if clone is None:
        problems.append("the runtime cannot report the clone's isolation")
    else:
        if clone.network != "none":
            problems.append(f"network is {clone.network!r}, not 'none'")
        if clone.interfaces:
            problems.append(f"interfaces up besides loopback: {', '.join(clone.interfaces)}")
        if clone.host_namespaces:
            problems.append(f"shares the host's {', '.join(clone.host_namespaces)} namespace")
        shared = sorted(set(clone.sources) & set(original.sources if original else []))
        if shared:
            problems.append(f"mounts the original's {', '.join(shared)}")
        foreign = [s for s in clone.sources if s.startswith(("pvc:", "hostPath:"))]
        if foreign:
            problems.append(f"mounts {', '.join(foreign)}")
    return {
        "isolated": not problems,
        "problems": problems,
        "clone": clone.document() if clone else None,
        "original": original.document() if original else None,
    }


def interrupted_drills(catalog: Catalog, *, mark: bool = False) -> list[int]:
    """Drills still recorded running whose process is gone (killed: its owner lease lapsed).

    ``mark``: record them ``interrupted`` (``drsvc cleanup``; their clones are the restores'
    intents, undone there). A drill of an older drsvc (no owner) is left as it is.
    """
    return abandoned_runs(catalog, "drills", mark=mark)


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100): a value that was actually measured."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


@dataclass
class DrillReport:
    drill_id: int
    results: list[DesktopResult] = field(default_factory=list)
    interrupted: bool = False

    @property
    def exit_code(self) -> int:
        passed = sum(r.passed for r in self.results)
        if self.results and passed == len(self.results):
            return EXIT_OK
        return EXIT_PARTIAL if passed else EXIT_FAILED

    def summary(self) -> dict[str, Any]:
        rtos = [r.rto_seconds for r in self.results if r.rto_seconds is not None]
        rpos = [r.rpo_seconds for r in self.results if r.rpo_seconds is not None]
        targets = {r.target_seconds for r in self.results}
        return {
            "count": len(self.results),
            "passed": sum(r.passed for r in self.results),
            "rto_p50": percentile(rtos, 50),
            "rto_p95": percentile(rtos, 95),
            "rto_max": max(rtos) if rtos else None,
            "target_seconds": min(targets) if targets else DEFAULT_TARGET,
            "rpo_max_seconds": max(rpos) if rpos else None,
        }

    def document(self) -> dict[str, Any]:
        return {
            "drill_id": self.drill_id,
            "results": [r.document() for r in self.results],
            "summary": self.summary(),
            "interrupted": self.interrupted,
        }


class DrillJob:
    """Chooses desktops, restores each as a sandboxed clone, checks, tears down, records."""

    def __init__(self, services: Services, *, on_event: Event | None = None) -> None:
        self.services = services
        self.catalog: Catalog = services.catalog
        self.on_event = on_event or (lambda *a, **k: None)

    def choose(
        self,
        *,
        policy: str | None = None,
        sample: int | None = None,
        everything: bool = False,
        desktops: Sequence[str] = (),
        seed: int | None = None,
    ) -> list[str]:
        """Which desktops to drill: named ones, or those a policy (or any policy) covers, sampled."""
        if desktops:
            for name in desktops:
                self.catalog.desktop(name)  # unknown: exit 3
            return list(desktops)
        present = [d for d in self.catalog.desktops() if d["gone_since"] is None]
        policies = [self.services.policies.get(policy)] if policy else list(self.services.policies)
        covered = sorted({d["id"] for d in present for p in policies if p.covers(d["id"], d["tenant"], d["labels"])})
        restorable = {
            r["desktop_id"]
            for r in self.catalog.query(
                "SELECT DISTINCT p.desktop_id FROM points p JOIN point_tiers t ON t.point_id = p.id "
                "WHERE p.status = 'complete'"
            )
        }
        candidates = [d for d in covered if d in restorable]
        if everything:
            return candidates
        if sample is None:
            drill = policies[0].drill if len(policies) == 1 else None
            sample = drill.sample_size(len(candidates)) if drill else min(len(candidates), 1)
        if sample < 0:
            raise InvalidInput(f"--sample {sample}: must not be negative")
        return sorted(random.Random(seed).sample(candidates, min(sample, len(candidates))))

    def preview(self, desktops: Sequence[str]) -> list[dict[str, Any]]:
        """What a drill of ``desktops`` would restore (``--dry-run``): each one's point and tiers."""
        restore = RestoreJob(self.services)
        planned = []
        for desktop in desktops:
            point = restore.choose_point(desktop)
            planned.append({"desktop": desktop, "point_id": point["id"], "tiers": point["tiers"]})
        return planned

    def run(
        self, desktops: Sequence[str], *, parallel: int = 1, policy: str | None = None, selection: str = ""
    ) -> DrillReport:
        if parallel < 1:
            raise InvalidInput(f"--parallel {parallel}: must be at least 1")
        # the owner lease: a drill killed (-9) skips the finally below; once its owner lapses,
        # cleanup records it interrupted (``interrupted_drills``)
        with Owner(self.catalog) as owner:
            return self._run(desktops, parallel, policy, selection, owner.name)

    def _run(
        self, desktops: Sequence[str], parallel: int, policy: str | None, selection: str, owner: str
    ) -> DrillReport:
        started = clock.now()
        cursor = self.catalog.execute(
            "INSERT INTO drills (started_at, policy, selection, parallel, status, owner) "
            "VALUES (?, ?, ?, ?, 'running', ?)",
            [clock.to_iso(started), policy, selection or ",".join(desktops), parallel, owner],
        )
        report = DrillReport(int(cursor.lastrowid or 0))
        try:
            # Ctrl-C: desktops not started yet never start; those running finish their teardown
            report.results = run_each(
                lambda desktop: self._drill_one(report.drill_id, desktop, started),
                desktops,
                workers=parallel,
                name="drill",
                on_interrupt=lambda: setattr(report, "interrupted", True),
            )
        finally:
            status = (
                "interrupted"
                if report.interrupted
                else ("passed" if report.results and all(r.passed for r in report.results) else "failed")
            )
            self.catalog.execute(
                "UPDATE drills SET finished_at = ?, status = ? WHERE id = ?",
                [clock.to_iso(clock.now()), status, report.drill_id],
            )
        return report

    def _drill_one(self, drill_id: int, desktop: str, started: Any) -> DesktopResult:
        result = DesktopResult(desktop)
        restore = RestoreJob(self.services)
        plan: RestorePlan | None = None
        ran = False  # the restore finished (its clone is whole); a failed one tore its own down
        try:
            plan = restore.plan(desktop, as_name=f"drill-{drill_id}-{desktop}")
            result.point_id, result.tier, result.clone = plan.point["id"], plan.tier, plan.name
            result.target_seconds = plan.target_seconds
            result.rpo_seconds = (started - clock.from_iso(plan.point["taken_at"])).total_seconds()
            if plan.manifest.get("checkpoint") is None:
                raise DrsvcError("the latest point is crash-consistent (no checkpoint): nothing to prove continuity")
            self.on_event("start", desktop=desktop, plan=plan)
            outcome = restore.run(plan, network="none", verify=True, drill_id=drill_id, temporary=True)
            ran = True
            result.phases = outcome.phases
            result.rto_seconds = outcome.rto_seconds
            result.verified = "data" in outcome.checks and outcome.checks.get("restored_from_checkpoint") is True
            result.isolation = self._isolation(plan)
            result.passed = result.verified and outcome.status == "ok" and result.isolation["isolated"]
            if not result.isolation["isolated"]:
                result.error = "the clone is not isolated: " + "; ".join(result.isolation["problems"])
            elif outcome.status == "objective_missed":
                result.error = f"RTO {outcome.rto_seconds:.1f} s over the {plan.target_seconds:.0f} s target"
        except Exception as e:
            # a DrsvcError, or a bug the desktop's own data set off: this drill fails, not the run
            result.error = str(e) if isinstance(e, DrsvcError) else f"internal error: {type(e).__name__}: {e}"
            if not isinstance(e, DrsvcError):
                event(log, logging.ERROR, "drill.bug", f"{desktop}: {result.error}", exc_info=e)
            rows = self.catalog.query(
                "SELECT rto_seconds, phases FROM restores WHERE drill_id = ? AND desktop_id = ? "
                "ORDER BY id DESC LIMIT 1",
                [drill_id, desktop],
            )
            if rows and rows[0]["rto_seconds"] is not None:
                result.phases = json.loads(rows[0]["phases"])
                result.rto_seconds = rows[0]["rto_seconds"]
        finally:
            self._teardown(plan, result, ran=ran)
            self._record(drill_id, result)
            self.on_event("result", result=result)
        return result

    def _isolation(self, plan: RestorePlan) -> dict[str, Any]:
        """Ask the runtime what the clone (and the original, when it runs) can reach; judge it."""
        runtime = self.services.runtime
        probe = getattr(runtime, "isolation", None)
        if probe is None:
            return check_isolation(None, None)
        original = None
        with contextlib.suppress(NotFound):  # the original is gone: nothing of it to share
            original = probe(plan.manifest["runtime"]["container"])
        return check_isolation(probe(plan.name), original)

    def _teardown(self, plan: RestorePlan | None, result: DesktopResult, *, ran: bool) -> None:
        """Remove the clone: its container and the objects its restore wrote; never the production desktop.

        ``ran``: the restore finished, so it wrote every object of the point (into a namespace the
        plan found empty); those go, nothing else there does. A restore that failed removed what it
        wrote itself (``RestoreJob.teardown``)."""
        if plan is None or not plan.as_name:
            return
        try:
            runtime = self.services.runtime
            try:
                ref = runtime.inspect(plan.name)
            except NotFound:
                ref = None
            # only the clone this drill made: never a container another restore or tenant put there
            if ref is not None and owned_clone(ref, plan.desktop["id"], plan.name):
                runtime.remove(plan.name)
            if ran:
                self.services.volume(plan.volume_url).remove_objects(
                    o["name"] for o in plan.manifest["volume"]["objects"]
                )
            resolve_clone(self.catalog, plan.name, plan.volume_url)  # the restore's intents: undone
        except DrsvcError as e:
            note = f"teardown failed: {e}"
            result.error = f"{result.error}; {note}" if result.error else note
            result.passed = False

    def _record(self, drill_id: int, r: DesktopResult) -> None:
        try:
            self.catalog.desktop(r.desktop)
        except NotFound:
            return
        self.catalog.execute(
            "INSERT OR REPLACE INTO drill_results (drill_id, desktop_id, point_id, tier, rto_seconds, target_seconds, "
            "rpo_seconds, phases, verified, passed, error, isolation) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                drill_id,
                r.desktop,
                r.point_id,
                r.tier,
                r.rto_seconds,
                r.target_seconds,
                r.rpo_seconds,
                json.dumps(r.phases),
                int(r.verified),
                int(r.passed),
                r.error,
                json.dumps(r.isolation) if r.isolation is not None else None,
            ],
        )
