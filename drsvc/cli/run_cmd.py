"""drsvc run: the scheduler, one tick from cron (--once) or as a daemon."""

from __future__ import annotations

import logging
import time

import click
from rich.console import Console

from drsvc import clock
from drsvc.cli._common import App, DrsvcCommand, pass_app
from drsvc.errors import InvalidInput
from drsvc.scheduler import Scheduler, Stopper, TickReport

log = logging.getLogger(__name__)


def start_metrics(app: App, listen: str, scheduler: Scheduler) -> None:
    """Serve /metrics and /healthz from a background thread, fed by the scheduler's tick hooks."""
    from drsvc import metrics
    from drsvc.liveness import DaemonHealth

    if ":" not in listen or not listen.rpartition(":")[2].isdigit():
        raise InvalidInput(f"--metrics-listen {listen!r}: give HOST:PORT or :PORT")
    registry = metrics.registry(app.config.catalog.path, lambda: app.services.policies, lambda: scheduler.tier_lag)
    daemon = metrics.DaemonMetrics(registry)
    health = DaemonHealth()
    try:
        metrics.serve(registry, listen, health)
    except OSError as e:
        raise InvalidInput(f"--metrics-listen {listen}: {e.strerror or e}") from None
    log.info("serving metrics on http://%s/metrics", listen, extra={"drsvc": {"event": "metrics.listen"}})

    def on_tick(seconds: float, error: BaseException | None) -> None:
        daemon.ticks.observe(seconds)
        if error is not None:
            daemon.errors.inc()
        health.tick_finished(seconds, error)

    scheduler.on_tick = on_tick
    scheduler.on_tick_start = health.tick_started


def render(report: TickReport, planned: list[dict] | None, out: Console) -> None:
    if report.skipped:
        out.print(f"skipped: {report.skipped}")
        return
    items = planned if planned is not None else [d.document() for d in report.due]
    if not items:
        out.print("nothing due")
    for item in items:
        extra = f", {item['desktops']} desktop(s)" if "desktops" in item else ""
        out.print(f"due: {item['policy']} {item['purpose']}: {item['why']}{extra}")
    for ran in report.ran:
        what = ran.get("policy") or ""
        out.print(
            f"ran: {ran.get('purpose', 'backup')} {what} exit {ran['exit_code']}"
            + (f": {ran['error']}" if ran.get("error") else "")
        )


@click.command("run", cls=DrsvcCommand)
@click.option("--once", is_flag=True, help="One tick and exit (for cron, every minute is fine).")
@click.option("--dry-run", is_flag=True, help="List what is due and why; run nothing.")
@click.option(
    "--metrics-listen",
    metavar="ADDR",
    help="Serve Prometheus metrics on http://ADDR/metrics and the daemon's liveness on /healthz "
    "(200, or 503 when its ticks keep failing or stopped) while running (HOST:PORT or :PORT).",
)
@pass_app
def command(app: App, once: bool, dry_run: bool, metrics_listen: str | None) -> int:
    """Run the scheduler: due backups, tiering to S3, drills, then retention on every tier.

    Safe to start from cron every minute: a lease in the catalog lets one tick work at a time,
    each policy window runs once, missed windows run once, and failures retry with backoff.
    Without --once it runs as a daemon until SIGTERM.
    """
    # the scheduler reports through its log (drsvc.log: text or JSON lines, every error included)
    scheduler = Scheduler(app.services)
    if metrics_listen:
        start_metrics(app, metrics_listen, scheduler)
    if dry_run:
        started = time.perf_counter()
        now = clock.now()
        planned = scheduler.plan(now)
        report = TickReport(now, True)
        doc = {**report.document(), "due": planned, "planning_seconds": time.perf_counter() - started}
        app.emit(doc, lambda out: render(report, planned, out))
        return 0
    if once:
        report = scheduler.tick()
        # refused: the run holding the lease copies the catalog when it ends, not this one mid-way
        app.copy_after = report.skipped is None
        app.emit(report.document(), lambda out: render(report, None, out))
        return report.exit_code
    stopper = Stopper()
    stopper.install()
    app.err.print("drsvc scheduler running; SIGTERM stops it after the current work, a second SIGTERM at once")
    scheduler.serve(stopper)
    return 0
