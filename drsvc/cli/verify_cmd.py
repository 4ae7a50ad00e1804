"""drsvc verify [ID | --all] [--read-data]: check manifests and chunks of recovery points."""

from __future__ import annotations

import click
from rich.console import Console

from drsvc.cli._common import App, DrsvcCommand, pass_app, shown
from drsvc.errors import InvalidInput
from drsvc.verify import VerifyJob, VerifyReport


def render(report: VerifyReport, out: Console) -> None:
    mode = "read, decrypted and re-hashed" if report.read_data else "present (listing)"
    chunks = ", ".join(f"{n} {tier}" for tier, n in report.chunks_checked.items()) or "0"
    for tier, why in report.unchecked.items():
        out.print(f"[yellow]NOT CHECKED[/] {len(report.unchecked_points[tier])} {tier} copies: {why}")
    if report.ok and report.unchecked:
        checked = report.copies  # only the copies of the tiers it reached
        out.print(f"OK  the {checked} copies that could be checked: manifests authentic, chunks {mode} ({chunks})")
        return
    if report.ok:
        out.print(
            f"OK  {len(report.points)} point(s), {report.copies} copies: manifests authentic, chunks {mode} ({chunks})"
        )
        return
    for problem in report.problems:
        out.print(f"[red]BAD[/] {shown(problem.line())}")
    out.print(f"{len(report.affected)} of {len(report.points)} point(s) affected; chunks checked: {chunks}")


@click.command("verify", cls=DrsvcCommand)
@click.argument("point_id", required=False)
@click.option("--all", "all_points", is_flag=True, help="Verify every point that has a stored copy.")
@click.option("--read-data", is_flag=True, help="Read, decrypt and re-hash every chunk (slow, thorough).")
@click.option("--site", "site", help="Verify the copies at this other site ([sites.NAME]) instead of the tiers.")
@pass_app
def command(app: App, point_id: str | None, all_points: bool, read_data: bool, site: str | None) -> int:
    """Check that points' manifests authenticate and their chunks exist (hot and cold copies).

    Without --read-data one batched listing per store checks that every chunk exists; with it
    every chunk is also read, decrypted and re-hashed. Exit 4 names the points (and tiers)
    whose copies are damaged; exit 6 when a tier could not be reached (its copies are named as
    not checked, the other tier is checked all the same).
    """
    if bool(point_id) == all_points:
        raise InvalidInput("name a point ID or give --all (not both)")
    job = VerifyJob(app.services, on_event=app.progress())
    if site is not None:
        from drsvc.offsite.verify import SiteVerifyJob
        from drsvc.sites import site_section

        site_section(app.config, site)  # an unknown site: exit 3 naming the configured ones
        job = SiteVerifyJob(app.services, site, on_event=app.progress())
    report = job.run(None if all_points else [point_id or ""], read_data=read_data)
    app.emit(report.document(), lambda out: render(report, out))
    if not report.ok:
        app.err.print(f"drsvc: error: integrity: damaged point(s): {', '.join(report.affected)}")
    for tier, why in report.unchecked.items():
        n = len(report.unchecked_points[tier])
        app.err.print(f"drsvc: error: partial: {n} {tier} copies could not be checked: {why}")
    return report.exit_code
