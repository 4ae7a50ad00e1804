"""drsvc site list | recover | drill: other sites, and recovering a whole site from one."""

from __future__ import annotations

from typing import Any

import click
from rich.console import Console
from rich.table import Table

from drsvc.cli import _fleet
from drsvc.cli._common import App, DrsvcGroup, pass_app
from drsvc.offsite.recover import SiteRecovery


@click.group("site", cls=DrsvcGroup)
def command() -> None:
    """Other sites ([sites.NAME]): what they hold, recovering a whole site from one, drilling it."""


@command.command("list")
@pass_app
def list_sites(app: App) -> None:
    """The configured sites and how many points the catalog records at each."""
    rows = []
    for name, site in sorted(app.config.sites.items()):
        counts = app.catalog.query(
            "SELECT count(*) AS n, max(p.taken_at) AS newest FROM point_sites s JOIN points p ON p.id = s.point_id "
            "WHERE s.site = ?",
            [name],
        )[0]
        rows.append(
            {
                "site": name,
                "store": site.store,
                "endpoint_url": site.endpoint_url,
                "storage_class": site.storage_class,
                "object_lock": site.object_lock,
                "restore_pool": site.restore_pool,
                "points": counts["n"],
                "newest_point": counts["newest"],
            }
        )

    def render(out: Console) -> None:
        if not rows:
            out.print("no sites configured ([sites.NAME] in the config)")
            return
        table = Table(box=None, pad_edge=False)
        for col in ("SITE", "STORE", "ENDPOINT", "CLASS", "LOCK", "RESTORE POOL", "POINTS", "NEWEST (UTC)"):
            table.add_column(col)
        for r in rows:
            table.add_row(
                r["site"],
                r["store"],
                r["endpoint_url"] or "AWS",
                r["storage_class"],
                "yes" if r["object_lock"] else "no",
                r["restore_pool"] or "(as recorded)",
                str(r["points"]),
                (r["newest_point"] or "-")[:19].replace("T", " "),
            )
        out.print(table)

    app.emit(rows, render)


def _common(f: Any) -> Any:
    for option in reversed(
        [
            click.option("--from", "site", required=True, help="The site whose copies to recover from."),
            click.option("--tenant", help="Only this tenant's desktops."),
            click.option("--policy", help="Only desktops this policy covers."),
            click.option(
                "--parallel", type=click.IntRange(min=1), help="Desktops in flight (default [recovery] parallel)."
            ),
            click.option("--no-admission", is_flag=True, help="No bounds per shared resource (for comparison)."),
            click.option("--dry-run", is_flag=True, help="Rebuild a scratch catalog, print the plan, restore nothing."),
        ]
    ):
        f = option(f)
    return f


@command.command("recover")
@_common
@click.option("--force", is_flag=True, help="Restore over desktops already running at this site.")
@pass_app
def recover(
    app: App,
    site: str,
    tenant: str | None,
    policy: str | None,
    parallel: int | None,
    no_admission: bool,
    dry_run: bool,
    force: bool,
) -> int:
    """Bring every desktop back at this site from the copies at site --from.

    For a DR site that has only the S3 copies, the key material, an empty Ceph pool and a
    container runtime: rebuilds the catalog from the site's manifests, then restores each
    desktop's latest point in priority order (policy priority, then RTO target), --parallel at
    once with admission control, volumes into [sites.NAME] restore_pool. Prints progress and the
    fleet table (time to first / 50 % / 95 % / all up, each desktop's RTO, failures and why) and
    records the run. Exit 6 when some desktops failed, 5 when all are up but some late. Running it
    again resumes: desktops already running here are skipped.
    """
    parallel = parallel or app.config.recovery.parallel
    recovery = SiteRecovery(app.services, site, on_event=None)
    app.services.site(site)  # unreachable, empty or another key: one clear error before anything
    if not dry_run:
        app.err.print(f"recovering from site {site}: rebuilding the catalog from its manifests…")
        recovery.on_event = _fleet.progress_printer(app, 0)
    report = recovery.recover(
        tenant=tenant,
        policy=policy,
        parallel=parallel,
        limits=_fleet.limits_of(app, no_admission),
        force=force,
        dry_run=dry_run,
    )
    app.emit(report.document(), lambda out: _fleet.render(report, out))
    return report.exit_code


@command.command("drill")
@_common
@pass_app
def drill(
    app: App,
    site: str,
    tenant: str | None,
    policy: str | None,
    parallel: int | None,
    no_admission: bool,
    dry_run: bool,
) -> int:
    """A site recovery rehearsed on sandboxed clones, touching nothing live.

    Rebuilds a scratch catalog from site --from, restores every selected desktop as a clone with
    no network into [sites.NAME] restore_pool, verifies its data against the manifest and that
    its processes continued from the checkpoint, removes it, and records the drill (with the
    fleet's times) for `drsvc report`. Exit 6 when some desktops failed.
    """
    parallel = parallel or app.config.recovery.parallel
    recovery = SiteRecovery(app.services, site, on_event=None if dry_run else _fleet.progress_printer(app, 0))
    report = recovery.drill(
        tenant=tenant, policy=policy, parallel=parallel, limits=_fleet.limits_of(app, no_admission), dry_run=dry_run
    )
    app.emit(report.document(), lambda out: _fleet.render(report, out))
    return report.exit_code
