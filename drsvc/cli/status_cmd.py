"""drsvc status: objectives per policy and desktop, on one screen; exit 5 when one is missed."""

from __future__ import annotations

from datetime import datetime, timedelta

import click
from rich.console import Console
from rich.table import Table

from drsvc import clock
from drsvc.cli._common import App, DrsvcCommand, pass_app
from drsvc.cli._common import shown as shown_text  # `shown` is this module's list of rows
from drsvc.errors import EXIT_OBJECTIVE_MISSED, EXIT_OK
from drsvc.health import FleetHealth, read_health
from drsvc.units import format_duration


def _ago(seconds: float | None) -> str:
    return "-" if seconds is None else format_duration(timedelta(seconds=round(seconds)))


def _when(health: FleetHealth, at: datetime | None) -> str:
    if at is None:
        return "-"
    delta = (at - health.now).total_seconds()
    return f"in {_ago(delta)}" if delta >= 0 else f"{_ago(-delta)} ago"


def _table(*columns: str) -> Table:
    table = Table(box=None, pad_edge=False)
    for column in columns:
        table.add_column(column)
    return table


def _tier_lag_note(health: FleetHealth) -> str | None:
    """Where TIER LAG comes from: the last tier run's record (and its age), or a plan made now."""
    if health.tier_lag_source == "recorded":
        return f"tier lag as the last tier run recorded it, {_when(health, health.tier_lag_recorded_at)}"
    if health.tier_lag_source == "planned":
        return "tier lag planned now: no tier run has recorded one yet"
    return None


def render(health: FleetHealth, out: Console, *, all_desktops: bool) -> None:
    policies = _table("POLICY", "DESKTOPS", "RPO", "RPO MISSED", "NEXT RUN", "TIER LAG", "LAST DRILL", "VERIFY")
    for p in health.policies:
        nxt = _when(health, p.retry_at or p.next_backup) + (f" (retry {p.attempts})" if p.attempts else "")
        drill = "-" if p.last_drill_status is None else f"{p.last_drill_status} {_when(health, p.last_drill_at)}"
        if p.rto_missed:
            drill = f"[red]{drill}, RTO {_ago(p.last_drill_max_rto)} > {_ago(p.rto_seconds)}[/]"
        verify = "-" if p.last_verify_ok is None else ("ok" if p.last_verify_ok else "[red]FAILED[/]")
        policies.add_row(
            p.policy,
            str(p.desktops),
            _ago(p.rpo_seconds),
            f"[red]{p.rpo_missed}[/]" if p.rpo_missed else "0",
            nxt,
            str(p.tier_lag),
            drill,
            verify,
        )
    out.print(policies)
    lag = _tier_lag_note(health)
    if lag:
        out.print(lag)
    shown = [d for d in health.desktops if all_desktops or d.rpo_missed or d.consecutive_failures or d.tier_lag]
    if shown:
        desktops = _table("DESKTOP", "POLICY", "LAST POINT", "AGE / RPO", "FAILURES", "TIER LAG", "LAST ERROR")
        for d in shown:
            age = f"{_ago(d.age_seconds)} / {_ago(d.rpo_seconds)}"
            desktops.add_row(
                d.desktop,
                d.policy,
                d.last_point or "none",
                f"[red]{age}[/]" if d.rpo_missed else age,
                str(d.consecutive_failures),
                str(d.tier_lag),
                shown_text((d.last_error or "")[:80]),  # quotes names from the desktop
            )
        out.print(desktops)
    for line in health.missed:
        out.print(f"[red]MISSED[/] {shown_text(line)}")
    for line in health.problems:  # a problem quotes errors, and they quote names from the desktops
        out.print(f"[yellow]PROBLEM[/] {shown_text(line)}")
    verdict = "all objectives met" if health.ok else f"{len(health.missed)} objective(s) missed"
    # a desktop several policies cover has a row per policy: count desktops, not rows
    summary = f"{len({d.desktop for d in health.desktops})} desktop(s), {clock.to_iso(health.now)}"
    out.print(f"{'OK' if health.ok else 'CRITICAL'}  {verdict} ({summary})")


@click.command("status", cls=DrsvcCommand)
@click.option("--all", "all_desktops", is_flag=True, help="List every desktop, not only those with a problem.")
@pass_app
def command(app: App, all_desktops: bool) -> int:
    """Show objectives per policy and desktop: last point vs RPO, failures, next run, tier lag, drills.

    Reads the catalog only; the tier lag is what the last tier run recorded (its age is shown),
    planned from the catalog only when no tier run has recorded one yet. Exit 0 when every
    objective is met, 5 when an RPO or RTO objective is missed (so it works as a Nagios/Icinga
    check); other problems (failed backups still inside the RPO, tier lag, a failed verification,
    an interrupted restore, a `[hot] chunk_kib` the existing hot store does not follow) are listed
    either way.
    """
    health = read_health(app.catalog, app.services.policies, config=app.services.config)
    app.emit(health.document(), lambda out: render(health, out, all_desktops=all_desktops))
    return EXIT_OK if health.ok else EXIT_OBJECTIVE_MISSED
