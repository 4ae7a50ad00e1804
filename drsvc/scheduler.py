"""The scheduler: what is due, and one tick that runs it (``drsvc run --once``, or the daemon loop).

A policy's backup is due when its latest cron slot at or before *now* (its *window*) is later
than the window it last ran for. Missed windows (the machine was off) therefore collapse into
one run, and a window never runs twice: the window is recorded in ``schedule_state`` under the
work lease, which also keeps overlapping cron ticks from running the same job twice.
A tick then prunes, tiers when a cold store is configured, and runs due drills.
"""

from __future__ import annotations

import logging
import signal
import socket
import threading
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from drsvc import clock
from drsvc.catalog import Catalog
from drsvc.catalog_guard import copy_due, copy_labels, leftovers_possible
from drsvc.errors import EXIT_FAILED, EXIT_OK, EXIT_PARTIAL, Busy, DrsvcError, Interrupted
from drsvc.intents import Owner
from drsvc.lease import Lease
from drsvc.log import event
from drsvc.policy import Policy, PolicySet
from drsvc.runtimes.base import DesktopRef
from drsvc.services import Services

PURPOSES = ("backup", "drill", "verify")
ERROR_RETRY = timedelta(minutes=1)  # after a failed daemon tick, the next one comes at most this late

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Due:
    """One policy purpose that is due now, with the reason a human can read."""

    policy: str
    purpose: str
    window: datetime
    last_window: datetime | None
    missed: int
    why: str

    def document(self) -> dict[str, Any]:
        return {
            "policy": self.policy,
            "purpose": self.purpose,
            "window": clock.to_iso(self.window),
            "last_window": clock.to_iso(self.last_window) if self.last_window else None,
            "missed": self.missed,
            "why": self.why,
        }


def _schedule(policy: Policy, purpose: str) -> Any:
    if purpose == "backup":
        return policy.cron
    if purpose == "verify":
        return policy.verify.cron if policy.verify else None
    return policy.drill.cron if policy.drill else None


MAX_ATTEMPTS = 5  # per window; after that the window is given up and the next one tries again


@dataclass(frozen=True)
class State:
    """What the catalog remembers of one policy purpose."""

    last_window: datetime | None = None
    attempts: int = 0
    retry_at: datetime | None = None


def backoff(attempts: int) -> timedelta:
    """1, 2, 4, 8 … minutes after the n-th failure, at most an hour."""
    return timedelta(minutes=min(2 ** max(attempts - 1, 0), 60))


def due(policies: Iterable[Policy], states: dict[tuple[str, str], State], now: datetime) -> list[Due]:
    """What is due at ``now`` given what ran before (pure: the catalog is read by the caller)."""
    items = []
    for policy in policies:
        for purpose in PURPOSES:
            schedule = _schedule(policy, purpose)
            if schedule is None:
                continue
            window = schedule.previous_run(now)
            if window is None:
                continue
            state = states.get((policy.name, purpose), State())
            last = state.last_window
            # recorded later than now: the clock has stepped back since; that window did not run
            # in this clock's future, and waiting for it would leave a gap as long as the step
            stepped_back = last is not None and last > now
            if last is not None and last >= window and not stepped_back:
                continue
            if state.retry_at is not None and now < state.retry_at <= now + backoff(MAX_ATTEMPTS):
                continue  # backing off after a failure at this window (a retry further off: a step back)
            if last is None:
                missed, why = 1, f"window {window.isoformat()} (never ran)"
            elif stepped_back:
                missed, why = (
                    1,
                    f"window {window.isoformat()} (last {last.isoformat()} is after now: clock stepped back)",
                )
            else:
                missed = len(schedule.runs_between(last + timedelta(microseconds=1), window))
                why = f"window {window.isoformat()}"
                if missed > 1:
                    why += f" ({missed} windows missed since {last.isoformat()}; runs once)"
            if state.attempts:
                why += f", attempt {state.attempts + 1} after a failure"
            items.append(Due(policy.name, purpose, window, last, max(missed, 1), why))
    return items


def load_states(catalog: Catalog) -> dict[tuple[str, str], State]:
    return {
        (r["policy"], r["purpose"]): State(
            clock.from_iso(r["last_window"]) if r["last_window"] else None,
            r["attempts"],
            clock.from_iso(r["retry_at"]) if r["retry_at"] else None,
        )
        for r in catalog.query("SELECT * FROM schedule_state")
    }


def record_outcome(catalog: Catalog, item: Due, error: str | None, now: datetime) -> None:
    """Success closes the window; a failure schedules a retry with backoff, up to MAX_ATTEMPTS."""
    state = load_states(catalog).get((item.policy, item.purpose), State())
    attempts = 0 if error is None else state.attempts + 1
    closed = error is None or attempts >= MAX_ATTEMPTS
    catalog.execute(
        "INSERT INTO schedule_state (policy, purpose, last_window, last_run_at, attempts, retry_at, last_error) "
        "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (policy, purpose) DO UPDATE SET "
        "last_window = excluded.last_window, last_run_at = excluded.last_run_at, attempts = excluded.attempts, "
        "retry_at = excluded.retry_at, last_error = excluded.last_error",
        [
            item.policy,
            item.purpose,
            clock.to_iso(item.window) if closed else (clock.to_iso(state.last_window) if state.last_window else None),
            clock.to_iso(now),
            0 if closed else attempts,
            None if closed else clock.to_iso(now + backoff(attempts)),
            error,
        ],
    )


@dataclass
class TickReport:
    now: datetime
    dry_run: bool
    due: list[Due] = field(default_factory=list)
    ran: list[dict[str, Any]] = field(default_factory=list)
    skipped: str | None = None

    @property
    def exit_code(self) -> int:
        codes = {r["exit_code"] for r in self.ran}
        if not codes or codes == {EXIT_OK}:
            return EXIT_OK
        return EXIT_PARTIAL if EXIT_OK in codes or EXIT_PARTIAL in codes else EXIT_FAILED

    def document(self) -> dict[str, Any]:
        return {
            "now": clock.to_iso(self.now),
            "dry_run": self.dry_run,
            "skipped": self.skipped,
            "due": [d.document() for d in self.due],
            "ran": self.ran,
        }


class Stopper:
    """SIGTERM/SIGINT/SIGHUP set a flag the daemon loop checks between ticks (and while sleeping):
    the work under way is finished. A second signal interrupts that work (``Interrupted``, as a
    one-shot command: job rows ``interrupted``, leases released, desktops thawed), for a stop
    that cannot wait (systemd's stop timeout comes next, with SIGKILL)."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)

    def __init__(self) -> None:
        self.event = threading.Event()

    def install(self) -> None:
        for sig in self.SIGNALS:
            signal.signal(sig, self._on_signal)

    def _on_signal(self, signum: int, _frame: object) -> None:
        if not self.event.is_set():
            self.event.set()
            return
        for sig in self.SIGNALS:  # the unwinding that follows is not interrupted again
            signal.signal(sig, signal.SIG_IGN)
        raise Interrupted(signum)

    def sleep(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; True when asked to stop."""
        return self.event.wait(max(0.0, seconds))


def next_wakeup(policies: PolicySet, now: datetime, cap: timedelta = timedelta(minutes=5)) -> datetime:
    """The earliest next due time of any policy purpose (at most ``cap`` away, to notice config changes)."""
    candidates = [now + cap]
    for policy in policies:
        for purpose in PURPOSES:
            schedule = _schedule(policy, purpose)
            if schedule is not None:
                candidates.extend(schedule.next_runs(now, 1))
    return min(candidates)


Runner = Callable[[Due], dict[str, Any]]


def run_due(items: list[Due], catalog: Catalog, runner: Runner) -> list[dict[str, Any]]:
    """Run each due item once and record its outcome (window closed, or retry with backoff)."""
    results = []
    for item in items:
        try:
            result = runner(item)
            # a verification that found damage ran to its end: its finding is the result, not a reason to retry
            done = result["exit_code"] in (EXIT_OK, EXIT_PARTIAL) or result.get("completed", False)
            error = None if done else result.get("error", "failed")
        except DrsvcError as e:
            result = {
                "policy": item.policy,
                "purpose": item.purpose,
                "exit_code": e.exit_code,
                "error": str(e),
            }
            error = str(e)
        record_outcome(catalog, item, error, clock.now())
        _log_result(item, result, error)
        results.append(result)
    return results


def _log_result(item: Due, result: dict[str, Any], error: str | None) -> None:
    name = f"scheduler.{item.purpose}"
    fields = {"policy": item.policy, "job": result.get("job_id"), "exit_code": result["exit_code"]}
    if error is None and result.get("error"):  # ran to its end with a finding (verify: damage)
        message = f"{item.purpose} of {item.policy}: {result['error']}"
        event(log, logging.ERROR, name, message, error=result["error"], **fields)
    elif error is None:
        event(log, logging.INFO, name, f"{item.purpose} of {item.policy} done (exit {result['exit_code']})", **fields)
    else:
        window = clock.to_iso(item.window)
        event(
            log, logging.ERROR, name, f"{item.purpose} of {item.policy} failed (window {window})", error=error, **fields
        )


def _interrupted_backups(catalog: Catalog) -> bool:
    """Whether a backup job died mid-way (one indexed lookup; recovering imports the backup job)."""
    rows = catalog.query(
        "SELECT 1 FROM jobs WHERE kind = 'backup' AND status = 'running' "
        "UNION ALL SELECT 1 FROM points WHERE status = 'pending' LIMIT 1"
    )
    return bool(rows)


def record_tick(
    catalog: Catalog,
    started: datetime,
    *,
    seconds: float | None = None,
    exit_code: int | None = None,
    error: str | None = None,
) -> None:
    """Remember this host's latest tick (start, then end) for ``status``, metrics and the no-tick alert."""
    finished = clock.to_iso(clock.now()) if seconds is not None else None
    catalog.execute(
        "INSERT INTO scheduler_ticks (host, started_at, finished_at, seconds, exit_code, error) "
        "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (host) DO UPDATE SET started_at = excluded.started_at, "
        "finished_at = COALESCE(excluded.finished_at, scheduler_ticks.finished_at), "
        "seconds = COALESCE(excluded.seconds, scheduler_ticks.seconds), "
        "exit_code = COALESCE(excluded.exit_code, scheduler_ticks.exit_code), error = excluded.error",
        [socket.gethostname(), clock.to_iso(started), finished, seconds, exit_code, error],
    )


class Scheduler:
    """One tick: run what is due under the work lease; the daemon calls it in a loop."""

    def __init__(
        self,
        services: Services,
        *,
        on_event: Callable[..., None] | None = None,
        on_tick: Callable[[float, BaseException | None], None] | None = None,
    ) -> None:
        self.services = services
        self.catalog = services.catalog
        self.on_event = on_event or (lambda *a, **k: None)
        self.tick_errors = 0  # ticks of this daemon that ended in an exception
        self.on_tick = on_tick or (lambda seconds, error: None)
        self.on_tick_start: Callable[[], None] = lambda: None  # the daemon's /healthz follows its ticks
        # points the last tier run found due and did not move, per (desktop, policy); None before one
        self.tier_lag: dict[tuple[str, str], int] | None = None

    def plan(self, now: datetime) -> list[dict[str, Any]]:
        """What is due now and for how many known desktops (catalog only: fast at fleet scale)."""
        policies = self.services.policies
        items = due(policies, load_states(self.catalog), now)
        desktops = self.catalog.desktops()
        planned = []
        for item in items:
            policy = policies.get(item.policy)
            covered = sum(
                1 for d in desktops if d["gone_since"] is None and policy.covers(d["id"], d["tenant"], d["labels"])
            )
            planned.append({**item.document(), "desktops": covered})
        return planned

    def tick(self, *, dry_run: bool = False, now: datetime | None = None) -> TickReport:
        """One tick; every real one (not --dry-run) is recorded in the catalog and logged."""
        now = now or clock.now()
        if dry_run:
            report = TickReport(now, dry_run)
            report.due = due(self.services.policies, load_states(self.catalog), now)
            return report
        self.on_tick_start()
        started, t0 = clock.now(), time.monotonic()
        record_tick(self.catalog, started)
        try:
            report = self._tick(now)
        except BaseException as e:
            seconds = time.monotonic() - t0
            record_tick(self.catalog, started, seconds=seconds, exit_code=getattr(e, "exit_code", 1), error=str(e))
            self.on_tick(seconds, e)
            raise
        seconds = time.monotonic() - t0
        record_tick(self.catalog, started, seconds=seconds, exit_code=report.exit_code)
        self.on_tick(seconds, None)
        if report.skipped:
            event(log, logging.INFO, "scheduler.skipped", report.skipped)
        else:
            ran = ", ".join(f"{r.get('purpose', '?')} exit {r['exit_code']}" for r in report.ran) or "nothing"
            event(
                log,
                logging.INFO if report.due or report.ran else logging.DEBUG,
                "scheduler.tick",
                f"tick done in {seconds:.1f}s: {len(report.due)} due, ran {ran}",
                exit_code=report.exit_code,
            )
        return report

    def _tick(self, now: datetime) -> TickReport:
        report = TickReport(now, False)
        lease = self.services.work_lease()
        try:
            lease.__enter__()
        except Busy as e:
            report.skipped = str(e)
            return report
        try:
            if _interrupted_backups(self.catalog) or leftovers_possible(self.catalog):
                from drsvc.cleanup import clean_before  # imports the jobs: only when there is work

                clean_before(self.services, lease, self.on_event)  # what killed runs left behind
            report.due = due(self.services.policies, load_states(self.catalog), now)
            backups = [d for d in report.due if d.purpose == "backup"]
            if backups:
                report.ran += run_due(backups, self.catalog, lambda item: self._backup(item, lease))
            if not self.services.has_cold:
                self.tier_lag = {}
            else:
                # cheap when nothing is due: the plan reads only the catalog
                from drsvc.tiering import TierJob

                tier = TierJob(self.services, lease, on_event=self.on_event).run(now=clock.now())
                self.tier_lag = tier.lag()
                if tier.moves:
                    report.ran.append({"purpose": "tier", "exit_code": tier.exit_code, **tier.document()})
            if self.services.has_cold and self.services.config.sites:
                # copies at other sites follow the cold tier (cheap when nothing is due)
                from drsvc.offsite.copy import CopyJob

                copy = CopyJob(self.services, lease, on_event=self.on_event).run(now=clock.now())
                if copy.moves:
                    report.ran.append({"purpose": "copy", "exit_code": copy.exit_code, **copy.document()})
            drills = [d for d in report.due if d.purpose == "drill"]
            if drills:
                report.ran += run_due(drills, self.catalog, self._drill)
            verifies = [d for d in report.due if d.purpose == "verify"]
            if verifies:
                report.ran += run_due(verifies, self.catalog, self._verify)
            if backups:
                from drsvc.prune import PruneJob
                from drsvc.tiering import prune_cold

                prune = PruneJob(self.services, lease, on_event=self.on_event).run(now=clock.now())
                report.ran.append({"purpose": "prune", "exit_code": prune.exit_code, **prune.document()})
                if self.services.has_cold:
                    cold = prune_cold(self.services, lease, now=clock.now(), on_event=self.on_event)
                    report.ran.append({"purpose": "prune-cold", "exit_code": EXIT_OK, **cold.document()})
                for site in sorted(self.services.config.sites):
                    report.ran.append(self._prune_site(site, lease))
        finally:
            self.notify()  # under the lease: one process tells the webhooks, even after a failed tick
            lease.__exit__(None, None, None)
        return report

    def notify(self) -> None:
        """Tell the configured webhooks what changed in the fleet's health (never fails the tick)."""
        config = self.services.config.notify
        if not config.webhooks:
            return
        from drsvc.health import read_health
        from drsvc.notify import Notifier

        try:
            Notifier(self.catalog, config).run(read_health(self.catalog, self.services.policies))
        except Exception as e:
            event(log, logging.ERROR, "notify.error", f"notifications not sent: {e}", error=str(e), exc_info=e)

    def _prune_site(self, site: str, lease: Lease) -> dict[str, Any]:
        """One site's own retention and GC; a site that cannot be reached fails only its own entry."""
        from drsvc.offsite.prune import prune_site

        try:
            pruned = prune_site(self.services, site, lease, now=clock.now(), on_event=self.on_event)
        except DrsvcError as e:
            return {"purpose": f"prune-site-{site}", "exit_code": e.exit_code, "error": str(e)}
        return {"purpose": f"prune-site-{site}", "exit_code": EXIT_OK, **pruned.document()}

    def _after_tick(self) -> None:
        """Between ticks: copy the catalog to the stores if it changed, stamp it as cleanly closed."""
        try:
            if not copy_due(self.catalog, copy_labels(self.services, opened_only=True)):
                self.catalog.mark_clean()
                return
            from drsvc.catalog_copy import push, stores_of

            results = push(self.catalog, stores_of(self.services, opened_only=True))
            for label, outcome in results.items():
                if outcome.startswith("error:"):
                    self.on_event("catalog-copy-failed", store=label, error=outcome[7:])
            self.catalog.mark_clean()
        except Exception as e:  # never the end of the daemon
            self.on_event("error", error=e, traceback=traceback.format_exc(), count=self.tick_errors)

    def _backup(self, item: Due, lease: Lease) -> dict[str, Any]:
        self.on_event("due", item=item)
        policy = self.services.policies.get(item.policy)
        from drsvc.backup import BackupJob
        from drsvc.inventory import select

        desktops = select(self.services, policy=item.policy)
        if not desktops:
            return {"policy": item.policy, "purpose": "backup", "exit_code": EXIT_OK, "desktops": 0}
        if self.services.config.scheduler.executor == "kubernetes":
            return self._backup_on_nodes(item, desktops, lease)
        result = BackupJob(self.services, lease, on_event=self.on_event).run(desktops, policy)
        return {"purpose": "backup", "exit_code": result.exit_code, **result.document()}

    def _backup_on_nodes(self, item: Due, desktops: list[DesktopRef], lease: Lease) -> dict[str, Any]:
        """One node-agent Job per node (``drsvc.executors``), then import what the agents report."""
        with Owner(self.catalog) as owner:  # the job row's owner, renewed while the agents run
            return self._run_on_nodes(item, desktops, lease, owner.name)

    def _run_on_nodes(self, item: Due, desktops: list[DesktopRef], lease: Lease, owner: str) -> dict[str, Any]:
        from drsvc.agents import import_run
        from drsvc.executors import open_executor
        from drsvc.executors.kubernetes import new_run_id

        run_id = new_run_id()
        job_id = self.catalog.start_job(
            "backup",
            policy=item.policy,
            token=lease.token,
            detail={"executor": "kubernetes", "run": run_id, "desktops": [d.desktop_id for d in desktops]},
            owner=owner,
        )
        executor = open_executor(self.services.config, on_event=self.on_event)
        try:
            result = executor.run_backup(item.policy, desktops, lease_token=lease.token, run_id=run_id)
        except BaseException as e:
            self.catalog.finish_job(job_id, "failed", error=str(e) or type(e).__name__)
            raise
        finally:
            executor.close()
        assigned = {n["node"]: n["desktops"] for n in result["nodes"]}
        imported = import_run(self.services, run_id, assigned, job_id=job_id, lease=lease, on_event=self.on_event)
        for n in result["nodes"]:
            trouble = [p.split(": ", 1)[1] for p in imported.problems if p.split(": ", 1)[0] == n["node"]]
            if trouble and n["exit_code"] == EXIT_OK:
                n.update(status="failed", exit_code=EXIT_FAILED, error="; ".join(trouble))
        result["points"] = imported.points
        result["pool_snapshots"] = imported.snapshots
        codes = {n["exit_code"] for n in result["nodes"]}
        complete = sum(p["status"] == "complete" for p in imported.points)
        if codes <= {EXIT_OK} and complete == len(desktops):
            result["exit_code"] = EXIT_OK
        elif complete or codes & {EXIT_OK, EXIT_PARTIAL}:
            result["exit_code"] = EXIT_PARTIAL
        else:
            result["exit_code"] = EXIT_FAILED
        errors = "; ".join(f"{n['node']}: {n['error']}" for n in result["nodes"] if n.get("error"))
        if errors:
            result["error"] = errors
        status = {EXIT_OK: "ok", EXIT_PARTIAL: "partial"}.get(result["exit_code"], "failed")
        self.catalog.finish_job(job_id, status, error=errors or None, detail=result)
        result["job_id"] = job_id
        return result

    def _verify(self, item: Due) -> dict[str, Any]:
        from drsvc.verify import VerifyJob, sample_points

        self.on_event("due", item=item)
        policy = self.services.policies.get(item.policy)
        assert policy.verify is not None
        chosen = sample_points(self.catalog, policy)
        if not chosen:
            return {"policy": item.policy, "purpose": "verify", "exit_code": EXIT_OK, "points": 0}
        report = VerifyJob(self.services, on_event=self.on_event).run(
            chosen, read_data=policy.verify.read_data, policy=item.policy
        )
        doc = {"purpose": "verify", "policy": item.policy, "exit_code": report.exit_code, "completed": True}
        if not report.ok:
            doc["error"] = f"{len(report.affected)} damaged point(s): {', '.join(report.affected[:5])}"
        return {**doc, **report.document()}

    def _drill(self, item: Due) -> dict[str, Any]:
        self.on_event("due", item=item)
        from drsvc.drill import DrillJob

        job = DrillJob(self.services, on_event=self.on_event)
        chosen = job.choose(policy=item.policy)
        if not chosen:
            return {"policy": item.policy, "purpose": "drill", "exit_code": EXIT_OK, "desktops": 0}
        parallel = self.services.config.scheduler.workers
        result = job.run(chosen, parallel=parallel, policy=item.policy, selection=f"scheduled sample of {item.policy}")
        return {"purpose": "drill", "policy": item.policy, "exit_code": result.exit_code, **result.document()}

    def serve(self, stopper: Stopper) -> None:
        """The daemon: tick, sleep until the next due time, until SIGTERM/SIGINT.

        No exception ends the daemon: a failed tick is reported (``error`` event, with the
        traceback for what drsvc did not expect), counted in ``tick_errors``, and the next tick
        comes at most ``ERROR_RETRY`` later (a window that failed is retried by its own backoff).
        """
        while not stopper.event.is_set():
            failed, skipped = False, False
            try:
                skipped = self.tick().skipped is not None
            except Exception as e:
                failed = True
                self.tick_errors += 1
                trace = None if isinstance(e, DrsvcError) and not e.traceback else traceback.format_exc()
                message = f"tick failed: {e}" if isinstance(e, DrsvcError) else f"tick failed unexpectedly: {e!r}"
                message += f" ({self.tick_errors} failed tick(s); the next comes within {ERROR_RETRY})"
                event(log, logging.ERROR, "scheduler.error", message, error=str(e), exc_info=e, count=self.tick_errors)
                self.on_event("error", error=e, traceback=trace, count=self.tick_errors)
            if not skipped:  # another process holds the lease: its own end copies the catalog
                self._after_tick()
            try:
                now = clock.now()
                wait = (next_wakeup(self.services.policies, now) - now).total_seconds() + 0.5
            except Exception as e:  # e.g. a policy file broken while the daemon runs
                event(log, logging.ERROR, "scheduler.error", f"cannot plan the next tick: {e}", error=str(e))
                self.on_event("error", error=e, traceback=None, count=self.tick_errors)
                wait = ERROR_RETRY.total_seconds()
            if failed:
                wait = min(wait, ERROR_RETRY.total_seconds())
            if stopper.sleep(wait):
                break
