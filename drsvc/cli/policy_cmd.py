"""``drsvc policy check | plan``: validate policy files; preview run times and retention."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from drsvc.cli._common import App, DrsvcGroup, pass_app
from drsvc.policy import Policy, PolicySet, load_policies
from drsvc.retention import RetentionResult, RetentionRules, apply_retention
from drsvc.units import format_duration


@click.group("policy", cls=DrsvcGroup)
def command() -> None:
    """Validate policy files and preview what a policy does.

    Policies are YAML files (one policy each) in the configured policies directory; see
    policies/standard.yaml for a commented example.
    """


@command.command("check")
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@pass_app
def check(app: App, paths: tuple[Path, ...]) -> None:
    """Validate policy files: PATHs are files or directories (their *.yaml / *.yml).

    Without PATH, checks the configured policies directory. Every problem in every file is
    reported at once as 'file: field: why' (exit 2); warnings (e.g. an RPO the schedule cannot
    meet) are printed on stderr and do not fail the check.
    """
    targets: list[Path] = list(paths) if paths else [app.config.policies_dir]
    policies = load_policies(targets)
    document = {
        "policies": policies.names,
        "files": [str(f) for f in policies.files],
        "warnings": list(policies.warnings),
        "errors": [],
    }

    def render(out: Console) -> None:
        n, m = len(policies), len(policies.files)
        out.print(f"OK  {n} {'policy' if n == 1 else 'policies'} in {m} file{'' if m == 1 else 's'}", markup=False)

    app.emit(document, render)
    for warning in policies.warnings:
        click.echo(f"warning: {warning}", err=True)


def _parse_from(value: str | None, policy: Policy) -> datetime:
    if value is None:
        return datetime.now(UTC)
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is not an ISO 8601 time like 2024-03-30T12:00:00+01:00", param_hint="--from"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=policy.tz)


def _stamp(moment: datetime) -> str:
    return moment.isoformat()


def simulate_retention(
    policy: Policy, now: datetime, days: int
) -> dict[str, tuple[RetentionRules, RetentionResult, dict[str, datetime]]]:
    """Retention of a synthetic history: one point at every scheduled run of the last ``days``.

    The hot tier holds every point; the cold tier every point at least ``tiering.after`` old
    (assuming tiering copies a point before hot pruning may drop it). Because retention is
    monotone, judging the whole history at ``now`` equals pruning after every run.
    """
    now_utc = now.astimezone(UTC)
    runs = policy.runs_between(now_utc - timedelta(days=days), now_utc)
    taken = {_stamp(r): r for r in runs}
    tiers: dict[str, tuple[RetentionRules, RetentionResult, dict[str, datetime]]] = {}
    tiers["hot"] = (
        policy.retention.hot,
        apply_retention(taken.items(), policy.retention.hot, policy.tz),
        taken,
    )
    cold: dict[str, datetime] = {}
    if policy.tiering is not None:
        due = now_utc - policy.tiering.after
        cold = {pid: t for pid, t in taken.items() if t.astimezone(UTC) <= due}
    tiers["cold"] = (
        policy.retention.cold,
        apply_retention(cold.items(), policy.retention.cold, policy.tz),
        cold,
    )
    return tiers


@command.command("plan")
@click.argument("name")
@click.option(
    "--next",
    "count",
    type=click.IntRange(1, 10_000),
    default=5,
    show_default=True,
    help="How many upcoming runs to list.",
)
@click.option(
    "--retention",
    "show_retention",
    is_flag=True,
    help="Also simulate retention on both tiers over a history of scheduled runs.",
)
@click.option(
    "--days",
    type=click.IntRange(1, 3660),
    default=60,
    show_default=True,
    help="Length of the simulated history for --retention, in days.",
)
@click.option(
    "--policies",
    "policies_path",
    type=click.Path(path_type=Path, exists=True),
    help="Policy directory or file (default: policies_dir from the config).",
)
@click.option(
    "--from",
    "start",
    metavar="ISO",
    help="Plan as if now were this time (ISO 8601; without offset: the policy's zone).",
)
@pass_app
def plan(
    app: App,
    name: str,
    count: int,
    show_retention: bool,
    days: int,
    policies_path: Path | None,
    start: str | None,
) -> None:
    """Show the next run times of policy NAME and, with --retention, what its rules keep.

    Times are in the policy's time zone with their UTC offset, so DST changes are visible.
    The retention table explains every kept point by the rules that keep it.
    """
    policies: PolicySet = load_policies([policies_path or app.config.policies_dir])
    policy = policies.get(name)
    now = _parse_from(start, policy)
    runs = policy.next_runs(now, count)
    document: dict[str, Any] = {
        "policy": policy.name,
        "timezone": policy.timezone,
        "schedule": policy.schedule,
        "from": now.astimezone(policy.tz).isoformat(),
        "next_runs": [r.isoformat() for r in runs],
    }
    tiers = simulate_retention(policy, now, days) if show_retention else {}
    if show_retention:
        document["retention"] = {
            tier: [
                {
                    "taken_at": taken[pid].isoformat(),
                    "keep": pid in result.keep,
                    "reasons": result.keep.get(pid, []),
                }
                for pid in result.order
            ]
            for tier, (_, result, taken) in tiers.items()
        }

    def render(out: Console) -> None:
        out.print(f"policy {policy.name}: {policy.description}".rstrip(": "), markup=False)
        out.print(
            f"schedule {policy.schedule!r} in {policy.timezone}, "
            f"from {now.astimezone(policy.tz).isoformat(timespec='seconds')}",
            markup=False,
        )
        table = Table("#", f"next run ({policy.timezone})", "day", "in")
        for i, run in enumerate(runs, 1):
            wait = run.astimezone(UTC) - now.astimezone(UTC)
            table.add_row(
                str(i),
                run.isoformat(),
                run.strftime("%a"),
                format_duration(timedelta(seconds=round(wait.total_seconds()))),
            )
        out.print(table)
        for tier, (rules, result, taken) in tiers.items():
            _render_tier(out, tier, rules, result, taken, policy, days)

    app.emit(document, render)


def _render_tier(
    out: Console,
    tier: str,
    rules: RetentionRules,
    result: RetentionResult,
    taken: dict[str, datetime],
    policy: Policy,
    days: int,
) -> None:
    title = (
        f"{tier} tier ({rules.describe()}): {len(taken)} points, {len(result.keep)} kept, {len(result.drop)} dropped"
    )
    if tier == "cold" and policy.tiering is None:
        out.print(f"{tier} tier: no tiering section, no point goes cold", markup=False)
        return
    if not taken:
        out.print(
            f"{title} (none older than {format_duration(policy.tiering.after) if policy.tiering else '-'} "
            f"in the last {days} days)",
            markup=False,
        )
        return
    table = Table("taken at", "day", "verdict", "why", title=title, title_justify="left")
    dropped: list[str] = []

    def flush() -> None:
        if dropped:
            newest, oldest = taken[dropped[0]], taken[dropped[-1]]
            span = newest.isoformat() if len(dropped) == 1 else f"{oldest.isoformat()} .. {newest.isoformat()}"
            table.add_row(
                span,
                "",
                f"drop {len(dropped)}",
                "no rule keeps it" if len(dropped) == 1 else "no rule keeps them",
            )
            dropped.clear()

    for pid in result.order:
        if pid in result.keep:
            flush()
            table.add_row(taken[pid].isoformat(), taken[pid].strftime("%a"), "keep", ", ".join(result.keep[pid]))
        else:
            dropped.append(pid)
    flush()
    out.print(table)
