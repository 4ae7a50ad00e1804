"""drsvc drill: restore sampled desktops into a sandbox, verify, measure, tear down, record."""

from __future__ import annotations

from typing import Any

import click
from rich.console import Console
from rich.table import Table

from drsvc.cli._common import App, DrsvcCommand, pass_app, shown
from drsvc.drill import DesktopResult, DrillJob, DrillReport
from drsvc.errors import InvalidInput


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def render(report: DrillReport, out: Console) -> None:
    table = Table(box=None, pad_edge=False)
    for col in ("DESKTOP", "POINT", "TIER", "RTO s", "TARGET s", "RPO", "VERIFIED", "RESULT", "REASON"):
        table.add_column(col)
    for r in report.results:
        rpo = "-" if r.rpo_seconds is None else f"{r.rpo_seconds / 60:.0f} min"
        table.add_row(
            r.desktop,
            r.point_id or "-",
            r.tier or "-",
            _s(r.rto_seconds),
            f"{r.target_seconds:.0f}",
            rpo,
            "yes" if r.verified else "no",
            "[green]PASS[/]" if r.passed else "[red]FAIL[/]",
            shown(r.error or ""),  # quotes what failed: names from the desktop
        )
    out.print(table)
    s = report.summary()
    out.print(
        f"drill {report.drill_id}: {s['passed']}/{s['count']} passed; RTO p50 {_s(s['rto_p50'])} s, "
        f"p95 {_s(s['rto_p95'])} s, max {_s(s['rto_max'])} s (target {s['target_seconds']:.0f} s); "
        f"RPO achieved: oldest point {_s(None if s['rpo_max_seconds'] is None else s['rpo_max_seconds'] / 60)} min"
    )


def printer(app: App) -> Any:
    err = app.err

    def on_event(kind: str, **f: Any) -> None:
        if kind == "start":
            err.print(f"[dim]drilling {f['desktop']} from {f['plan'].point['id']} ({f['plan'].tier} tier)…[/]")
        elif kind == "result":
            r: DesktopResult = f["result"]
            mark = "[green]✓[/]" if r.passed else "[red]✗[/]"
            err.print(f"{mark} {r.desktop} RTO {_s(r.rto_seconds)} s" + (f": {shown(r.error)}" if r.error else ""))

    return on_event


@click.command("drill", cls=DrsvcCommand)
@click.argument("desktops", nargs=-1)
@click.option("--policy", help="Drill desktops this policy covers (its drill.sample unless --sample/--all).")
@click.option("--sample", type=int, help="Drill this many randomly chosen desktops.")
@click.option("--all", "everything", is_flag=True, help="Drill every covered desktop with a restorable point.")
@click.option("--parallel", type=int, default=1, show_default=True, help="Desktops restored at the same time.")
@click.option("--seed", type=int, help="Random seed for the sample (reproducible drills).")
@click.option("--dry-run", is_flag=True, help="Show which desktops (and points) would be drilled; restore nothing.")
@pass_app
def command(
    app: App,
    desktops: tuple[str, ...],
    policy: str | None,
    sample: int | None,
    everything: bool,
    parallel: int,
    seed: int | None,
    dry_run: bool,
) -> int:
    """Restore desktops as sandboxed clones, verify data and process continuity, measure RTO.

    Each clone gets its own container name and RADOS namespace and no network, so it never
    touches the production desktop; it is torn down afterwards, also on failure or Ctrl-C.
    Exit 0 when every desktop passed, 6 when some failed, 1 when none passed.
    """
    if desktops and (sample is not None or everything):
        raise InvalidInput("name DESKTOPs or use --sample/--all, not both")
    job = DrillJob(app.services, on_event=printer(app))
    chosen = job.choose(policy=policy, sample=sample, everything=everything, desktops=desktops, seed=seed)
    if not chosen:
        app.emit(
            {"drill_id": None, "results": [], "summary": {"count": 0}},
            lambda out: out.print("no desktop with a restorable point to drill"),
        )
        return 0
    if dry_run:
        planned = job.preview(chosen)

        def show(out: Console) -> None:
            for item in planned:
                out.print(f"would drill {item['desktop']} from {item['point_id']} ({','.join(item['tiers'])})")

        app.emit({"dry_run": True, "desktops": planned}, show)
        return 0
    selection = ("all" if everything else f"sample {sample}" if sample is not None else "") or ",".join(chosen)
    report = job.run(chosen, parallel=parallel, policy=policy, selection=selection)
    app.emit(report.document(), lambda out: render(report, out))
    return report.exit_code
