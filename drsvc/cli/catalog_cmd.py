"""drsvc catalog check | export | rebuild: the health and contents of the catalog, and its rebuild."""

from __future__ import annotations

import click
from rich.console import Console

from drsvc.cli._common import App, DrsvcGroup, pass_app
from drsvc.errors import EXIT_INTEGRITY, IntegrityError

EXPORT_TABLES = (
    "desktops",
    "pool_snapshots",
    "points",
    "point_tiers",
    "artifacts",
    "jobs",
    "tier_moves",
    "drills",
    "drill_results",
    "restores",
)


@click.group("catalog", cls=DrsvcGroup)
def command() -> None:
    """The SQLite catalog: check its integrity and drift, export it, rebuild it from the stores."""


@command.command("check")
@click.option("--no-stores", is_flag=True, help="Check the database only, not its drift from the stores.")
@pass_app
def check(app: App, no_stores: bool) -> None:
    """Check the catalog's integrity and foreign keys, and its drift from the stores (exit 4 on a problem).

    Drift is checked both ways with one listing per store: copies the catalog records whose
    manifest is gone, and manifests the catalog has no row for (``catalog rebuild`` adds those).
    """
    catalog = app.catalog
    problems = catalog.check()
    drift: list[str] = []
    if not no_stores and (app.config.hot is not None or app.config.cold is not None):
        from drsvc.rebuild import catalog_drift

        drift = catalog_drift(app.services)
    doc = {"path": catalog.path, "schema_version": catalog.schema_version, "problems": problems, "drift": drift}
    if problems or drift:
        raise IntegrityError(
            f"catalog {catalog.path} has {len(problems)} problem(s) and {len(drift)} difference(s) from the stores",
            details=problems + drift,
        )

    def render(out: Console) -> None:
        stores = "" if no_stores or not (app.config.hot or app.config.cold) else ", in step with the stores"
        out.print(f"OK  catalog {catalog.path} (schema version {catalog.schema_version}){stores}")

    app.emit(doc, render)


@command.command("export")
@pass_app
def export(app: App) -> None:
    """Print every catalog table as one JSON document (for audits and support)."""
    catalog = app.catalog
    doc = {table: catalog.query(f"SELECT * FROM {table}") for table in EXPORT_TABLES}
    doc["schema_version"] = catalog.schema_version  # type: ignore[assignment]
    app.json_output = True
    app.emit(doc, lambda out: None)


@command.command("rebuild")
@click.option("--dry-run", is_flag=True, help="Show what would be added (and forgotten), change nothing.")
@click.option(
    "--forget-missing",
    is_flag=True,
    help="Also drop the records of copies whose manifest is gone from the configured store (points stay).",
)
@pass_app
def rebuild(app: App, dry_run: bool, forget_missing: bool) -> int:
    """Rebuild the catalog from the manifests in the hot and cold stores (after it was lost).

    Every point comes back with its id, desktop, time, policy, consistency, pool snapshot and
    tiers; desktops are re-created from the manifests' runtime details. Rows that exist are kept,
    so it also repairs drift and is safe to run twice. With --forget-missing it repairs the other
    direction too: a copy the catalog records in the configured store but whose manifest is gone
    is forgotten (copies recorded in another store are left for `drsvc catalog check` to report).
    """
    from drsvc.rebuild import RebuildReport, rebuild_catalog

    def render(report: RebuildReport, out: Console) -> None:
        verb = "would add" if report.dry_run else "added"
        out.print(
            f"{report.manifests} manifest(s) in the stores; {verb} {len(report.points_added)} point(s), "
            f"{len(report.tiers_added)} tier copy(ies), {len(report.desktops_added)} desktop(s), "
            f"{len(report.snapshots_added)} pool snapshot(s); {report.points_present} already recorded"
        )
        if forget_missing:
            verb = "would forget" if report.dry_run else "forgot"
            out.print(f"{verb} {len(report.tiers_forgotten)} copy(ies) whose manifest is gone")
            for copy in report.tiers_forgotten:
                point, tier = copy.rsplit(":", 1)
                out.print(f"  {point} ({tier})")
        for problem in report.problems:
            out.print(f"[red]unreadable[/] {problem}")

    if dry_run:
        report = rebuild_catalog(app.services, dry_run=True, forget_missing=forget_missing)
    else:
        with app.lease():
            report = rebuild_catalog(app.services, forget_missing=forget_missing)
    app.emit(report.document(), lambda out: render(report, out))
    if report.problems:
        app.err.print(f"drsvc: error: {len(report.problems)} manifest(s) could not be read (see above)")
        return EXIT_INTEGRITY
    return 0
