"""drsvc copy [--site NAME] [--dry-run] [--limit-upload KIB]: copies of due points at other sites."""

from __future__ import annotations

from typing import Any

import click
from rich.console import Console
from rich.table import Table

from drsvc.cli._common import App, DrsvcCommand, pass_app
from drsvc.offsite.copy import CopyJob, CopyMove, CopyReport
from drsvc.storage.transfer import RateLimit
from drsvc.units import format_bytes


def progress_printer(app: App) -> Any:
    """One line per point and site on stderr (stdout stays clean for --json)."""
    err = app.err

    def on_event(kind: str, **fields: Any) -> None:
        if kind == "copied":
            m: CopyMove = fields["move"]
            mark = "[green]✓[/]" if m.status == "done" else "[red]✗[/]"
            err.print(
                f"{mark} {m.point_id} → {m.site} {m.status}: {m.objects_copied}/{m.objects} objects copied "
                f"({format_bytes(m.bytes_copied)}) in {m.seconds:.1f}s" + (f": {m.error}" if m.error else "")
            )
        elif kind == "site_created":
            err.print(f"[dim]site {fields['site']}: new chunk store at {fields['url']}[/]")

    return on_event


def render(report: CopyReport, out: Console) -> None:
    for note in report.notes:
        out.print(note)
    if not report.moves:
        if not report.notes:
            out.print("nothing to copy")
        return
    table = Table(box=None, pad_edge=False)
    for col in ("POINT", "DESKTOP", "SITE", "TAKEN (UTC)", "LOCKED UNTIL", "STATUS", "COPIED", "NOTE"):
        table.add_column(col)
    for m in report.moves:
        copied = "-" if report.dry_run else f"{m.objects_copied}/{m.objects} objects, {format_bytes(m.bytes_copied)}"
        note = m.error or ("; ".join(m.reasons) if report.dry_run else "")
        table.add_row(
            m.point_id,
            m.desktop,
            m.site,
            m.taken_at[:19].replace("T", " "),
            (m.retain_until or "-")[:19],
            "would copy" if report.dry_run and m.status == "planned" else m.status,
            copied,
            note,
        )
    out.print(table)
    s = report.document()["summary"]
    if not report.dry_run:
        modes = ", ".join(f"{site}: {mode}" for site, mode in sorted(report.modes.items()))
        out.print(
            f"{s['done']}/{s['count']} copies made; {s['objects_copied']} objects "
            f"({format_bytes(s['bytes_copied'])}) copied" + (f" ({modes})" if modes else "")
        )


@click.command("copy", cls=DrsvcCommand)
@click.option("--site", "site", help="Only this site ([sites.NAME] in the config).")
@click.option("--dry-run", is_flag=True, help="Show which points are due at which site, change nothing.")
@click.option(
    "--limit-upload",
    type=click.IntRange(min=1),
    metavar="KIB",
    help="Copy at most this many KiB per second (all workers together).",
)
@pass_app
def command(app: App, site: str | None, dry_run: bool, limit_upload: int | None) -> int:
    """Copy due points from the cold tier to other sites, as they are (never decrypted).

    A point goes to each site its policy names once it is cold and older than the site's
    `after`, if the site's retention keeps it. Packs, indexes, image records and manifests are
    copied byte for byte (server-side when both stores are one S3 service, streamed otherwise)
    and verified at the destination; the manifest comes last. Safe to interrupt: the next run
    copies only what the site lacks.
    """
    services = app.services
    limit = RateLimit(limit_upload * 1024) if limit_upload else None
    if dry_run:
        report = CopyJob(services, None).run(site=site, dry_run=True)
    else:
        with app.lease() as lease:
            report = CopyJob(services, lease, limit=limit, on_event=progress_printer(app)).run(site=site)
    app.emit(report.document(), lambda out: render(report, out))
    return report.exit_code
