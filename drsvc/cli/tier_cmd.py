"""drsvc tier [--dry-run]: copy due recovery points to the cold tier (S3)."""

from __future__ import annotations

from typing import Any

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from drsvc.cli._common import App, DrsvcCommand, pass_app
from drsvc.errors import ConfigError
from drsvc.tiering import TierJob, TierMove, TierReport
from drsvc.units import format_bytes


def progress_printer(app: App) -> Any:
    """One line per point on stderr (stdout stays clean for --json)."""
    err = app.err

    def on_event(kind: str, **fields: Any) -> None:
        if kind == "moved":
            m: TierMove = fields["move"]
            mark = "[green]✓[/]" if m.status == "done" else "[red]✗[/]"
            err.print(
                f"{mark} {m.point_id} {m.status}: {m.chunks_uploaded}/{m.chunks} chunks uploaded "
                f"({format_bytes(m.bytes_uploaded)}) in {m.seconds:.1f}s" + (f": {m.error}" if m.error else "")
            )

    return on_event


def render(report: TierReport, out: Console) -> None:
    if report.note:
        out.print(escape(report.note))
    if not report.moves:
        out.print("nothing to tier")
        return
    table = Table(box=None, pad_edge=False)
    for col in ("POINT", "DESKTOP", "TAKEN (UTC)", "CLASS", "LOCKED UNTIL", "STATUS", "UPLOADED", "NOTE"):
        table.add_column(col)
    for m in report.moves:
        uploaded = "-" if report.dry_run else f"{m.chunks_uploaded}/{m.chunks} chunks, {format_bytes(m.bytes_uploaded)}"
        note = m.error or ("; ".join(m.reasons) if report.dry_run else "")
        table.add_row(
            m.point_id,
            m.desktop,
            m.taken_at[:19].replace("T", " "),
            m.storage_class or "-",
            (m.retain_until or "-")[:19],
            "would tier" if report.dry_run else m.status,
            uploaded,
            note,
        )
    out.print(table)
    s = report.document()["summary"]
    if not report.dry_run:
        out.print(
            f"{s['done']}/{s['count']} points now cold; uploaded {s['chunks_uploaded']} chunks "
            f"({format_bytes(s['bytes_uploaded'])})"
        )


@click.command("tier", cls=DrsvcCommand)
@click.option("--dry-run", is_flag=True, help="Show which points are due for the cold tier, change nothing.")
@pass_app
def command(app: App, dry_run: bool) -> int:
    """Copy points older than their policy's tiering.after to the cold tier (S3).

    Only chunks the cold store lacks are uploaded (sealed blobs copied as they are), with the
    policy's storage class and Object Lock; a point's manifest is written last. Points cold
    retention would not keep are not uploaded. Safe to interrupt: the next run resumes.
    """
    services = app.services
    if not services.has_cold:
        raise ConfigError(f"{app.config.path}: cold.store: no cold tier configured, so nothing can be tiered")
    if dry_run:
        report = TierJob(services, None).run(dry_run=True)
    else:
        with app.lease() as lease:
            report = TierJob(services, lease, on_event=app.progress(progress_printer(app))).run()
    app.emit(report.document(), lambda out: render(report, out))
    return report.exit_code
