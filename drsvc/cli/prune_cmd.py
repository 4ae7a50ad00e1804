"""drsvc prune: apply retention, remove unneeded pool snapshots, collect unreferenced chunks."""

from __future__ import annotations

import click
from rich.console import Console

from drsvc.cleanup import clean_before
from drsvc.cli._common import App, DrsvcCommand, pass_app, shown
from drsvc.offsite.prune import SitePruneReport, prune_site
from drsvc.prune import PruneJob, PruneReport
from drsvc.tiering import ColdPruneReport, prune_cold


def render(report: PruneReport, out: Console) -> None:
    verb = "would drop" if report.dry_run else "dropped"
    for d in report.decisions:
        if not d.keep:
            out.print(f"{verb} {d.tier} copy of {d.point_id} ({d.desktop}, {d.taken_at[:19]}): {'; '.join(d.reasons)}")
    kept = sum(d.keep for d in report.decisions)
    out.print(
        f"{kept} hot copies kept, {len(report.decisions) - kept} {verb}; pool snapshots "
        f"{'to remove' if report.dry_run else 'removed'}: {', '.join(report.snapshots_removed) or 'none'}"
    )
    if not report.dry_run:
        out.print(
            f"chunks unreferenced: {report.chunks_marked}, deleted after the grace period: {report.chunks_deleted}"
        )
    for problem in report.problems:
        out.print(f"not done (the next prune retries): {shown(problem)}")


@click.command("prune", cls=DrsvcCommand)
@click.option("--dry-run", is_flag=True, help="Show what retention would drop, change nothing.")
@pass_app
def command(app: App, dry_run: bool) -> int:
    """Apply each policy's retention on every tier; drop pool snapshots and chunks nothing needs.

    Hot: hot retention, unreferenced pool snapshots, hot chunk GC. Cold (when configured): cold
    retention, never touching a copy whose S3 Object Lock has not expired, cold chunk GC. Each
    other site ([sites.NAME]) with copies: its own retention, its own locks, its own GC.
    Exit 6 when a pool snapshot could not be removed (the others are; the next prune retries it).
    """
    services = app.services
    cold: ColdPruneReport | None = None
    sites: list[SitePruneReport] = []
    if dry_run:
        report = PruneJob(services, None).run(dry_run=True)
        if services.has_cold:
            cold = prune_cold(services, None, dry_run=True)
        sites = [prune_site(services, name, None, dry_run=True) for name in sorted(app.config.sites)]
    else:
        with app.lease() as lease:
            clean_before(services, lease)  # what killed runs left behind, first
            report = PruneJob(services, lease).run()
            if services.has_cold:
                cold = prune_cold(services, lease)
            sites = [prune_site(services, name, lease) for name in sorted(app.config.sites)]
    doc = report.document()
    if cold is not None:
        doc["cold"] = cold.document()
    if sites:
        doc["sites"] = {s.site: s.document() for s in sites}

    def show(out: Console) -> None:
        render(report, out)
        if cold is not None:
            c = doc["cold"]
            verb = "would drop" if dry_run else "dropped"
            out.print(
                f"cold: {len(c['dropped'])} copies {verb}, {c['kept']} kept, {len(c['locked'])} still "
                f"object-locked (skipped until the lock expires)"
            )
        for s in sites:
            d = s.document()
            verb = "would drop" if dry_run else "dropped"
            out.print(
                f"site {s.site}: {len(d['dropped'])} copies {verb}, {d['kept']} kept, {len(d['locked'])} still "
                f"object-locked there"
            )

    app.emit(doc, show)
    return report.exit_code
