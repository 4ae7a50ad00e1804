"""drsvc cleanup [--dry-run]: remove what interrupted runs left behind."""

from __future__ import annotations

import click
from rich.console import Console

from drsvc.cleanup import CleanupJob, CleanupReport
from drsvc.cli._common import App, DrsvcCommand, pass_app, shown
from drsvc.errors import EXIT_PARTIAL


def render(report: CleanupReport, out: Console) -> None:
    def did(past: str, verb: str) -> str:  # "marked", or "would mark" on a dry run
        return f"would {verb}" if report.dry_run else past

    if report.nothing and not report.problems:
        out.print("nothing left behind")
        return
    for pid in report.failed_points:
        out.print(f"{did('marked', 'mark')} failed: point {pid} (its backup was interrupted)")
    for name in report.snapshots:
        out.print(f"{did('removed', 'remove')} pool snapshot {name} (no point needs it)")
    for line in report.undone:
        out.print(f"{did('undid', 'undo')} {line}")
    for line in report.interrupted_restores:
        out.print(f"[red]interrupted[/] {line}: run the same `drsvc restore` again to finish it")
    gone = [
        ("drill", report.interrupted_drills),
        ("site run", report.interrupted_recoveries),
        ("job", report.interrupted_jobs),
    ]
    for what, ids in gone:
        for run_id in ids:
            out.print(f"{did('marked', 'mark')} interrupted: {what} {run_id} (its process is gone)")
    for line in report.others:
        out.print(f"[dim]note[/] {shown(line)}")
    for line in report.problems:
        out.print(f"[red]left[/] {line}")


@click.command("cleanup", cls=DrsvcCommand)
@click.option("--dry-run", is_flag=True, help="Show what would be removed, change nothing.")
@pass_app
def command(app: App, dry_run: bool) -> int:
    """Remove what interrupted runs left: pool snapshots, clones, uploads; report interrupted restores.

    Every external effect is recorded in the catalog before it is made. What a killed backup,
    restore or tier run left behind (its owner's lease has lapsed) is removed here: pool
    snapshots no point needs, a clone's container and namespace, unfinished multipart uploads;
    points of dead backups are marked failed. An interrupted in-place restore is not undone: it
    is listed, and the same `drsvc restore DESKTOP` finishes it. The scheduler, `backup` and
    `prune` do the same at their start. Exit 6 when something could not be removed (it is named).
    """
    if dry_run:
        report = CleanupJob(app.services, None).run(dry_run=True)
    else:
        with app.lease() as lease:
            report = CleanupJob(app.services, lease).run()
    app.emit(report.document(), lambda out: render(report, out))
    return EXIT_PARTIAL if report.problems else 0
