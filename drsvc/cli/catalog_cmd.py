"""drsvc catalog check | export | restore | rebuild | adopt-store: the health and contents of the catalog."""

from __future__ import annotations

import click
from rich.console import Console

from drsvc.catalog_guard import CatalogDamaged, quarantine
from drsvc.cli._common import App, DrsvcGroup, pass_app, shown
from drsvc.errors import EXIT_INTEGRITY, ConfigError, IntegrityError, InvalidInput

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
    """The SQLite catalog: check, export, restore from its copy, rebuild from the stores, adopt a new store."""


@command.command("check")
@click.option(
    "--no-stores", is_flag=True, help="Check the database only, not its drift from the stores and Ceph (leftovers)."
)
@pass_app
def check(app: App, no_stores: bool) -> None:
    """Check the catalog's integrity and foreign keys, and its drift from the stores (exit 4 on a problem).

    Drift is checked both ways with one listing per store: copies the catalog records whose
    manifest is gone, and manifests the catalog has no row for (``catalog rebuild`` adds those).
    Leftovers of interrupted runs (pool snapshots no point needs, clones and uploads of killed
    restores and tier runs) and interrupted in-place restores are reported too (``drsvc cleanup``).
    """
    app.allow_damaged = True
    catalog = app.catalog  # a file SQLite cannot open at all: CatalogDamaged, exit 4, one line
    if catalog.damaged:
        raise CatalogDamaged(catalog.path, "; ".join(catalog.check()[:3]) or "; ".join(catalog.damaged[:3]))
    problems = catalog.check()
    drift: list[str] = []
    if not problems and not no_stores:
        from drsvc.cleanup import leftover_lines

        drift += leftover_lines(app.services)
    if not no_stores and (app.config.hot is not None or app.config.cold is not None):
        from drsvc.rebuild import catalog_drift

        drift += catalog_drift(app.services)
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
    """Print every catalog table as one JSON document (for audits and support; also of a damaged one)."""
    app.allow_damaged = True
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

    A damaged catalog is moved aside first (kept as evidence) and a new one rebuilt in its place;
    `drsvc catalog restore` is faster when the stores hold a copy of it.

    Every point comes back with its id, desktop, time, policy, consistency, pool snapshot and
    tiers; desktops are re-created from the manifests' runtime details. Rows that exist are kept,
    so it also repairs drift and is safe to run twice. With --forget-missing it repairs the other
    direction too: a copy the catalog records in the configured store but whose manifest is gone
    is forgotten (copies recorded in another store are left for `drsvc catalog check` to report).
    """
    from drsvc.rebuild import RebuildReport, rebuild_catalog

    if not dry_run:
        _set_damaged_aside(app)

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
            out.print(f"[red]unreadable[/] {shown(problem)}")

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


def _set_damaged_aside(app: App) -> None:
    """A damaged catalog (or one SQLite cannot open) is moved aside; the next access makes a new one."""
    app.allow_damaged = True
    try:
        damaged = bool(app.catalog.damaged)
    except CatalogDamaged:
        damaged = True
    if not damaged:
        return
    app.reset_catalog()
    aside = quarantine(app.config.catalog.path)
    app.err.print(f"the damaged catalog was moved to {aside}; starting a new one")


@command.command("restore")
@click.option("--from", "source", type=click.Choice(["hot", "cold"]), help="Only this store's copies.")
@click.option("--force", is_flag=True, help="Replace the catalog even though it is sound.")
@click.option("--no-catch-up", is_flag=True, help="Do not add the points written after the copy.")
@click.option("--dry-run", is_flag=True, help="List the copies in the stores and which would be used.")
@pass_app
def restore(app: App, source: str | None, force: bool, no_catch_up: bool, dry_run: bool) -> None:
    """Bring the catalog back from its latest copy in the stores (faster than a rebuild).

    Every run copies the catalog, encrypted, to the hot and cold stores. This takes the newest
    copy that authenticates and passes SQLite's integrity check (the damaged catalog is moved
    aside, never deleted), then adds the points written after the copy from their manifests.
    Stop the scheduler first. No copy at all: `drsvc catalog rebuild`.
    """
    from drsvc.catalog import Catalog
    from drsvc.catalog_copy import list_copies, restore_copy, stores_of
    from drsvc.rebuild import rebuild_catalog
    from drsvc.services import Services

    app.allow_damaged = True
    config = app.config
    # the stores, without the catalog (which may not even open)
    services = Services(config, Catalog.open(":memory:"))
    try:
        stores = [(label, store) for label, store in stores_of(services) if source in (None, label)]
        if dry_run:
            copies = [info.document() for info, _ in list_copies(stores)]
            doc = {"dry_run": True, "copies": copies}

            def show(out: Console) -> None:
                if not copies:
                    out.print("no catalog copy in the stores: `drsvc catalog rebuild` is the way back")
                for n, c in enumerate(copies):
                    mark = "would use" if n == 0 else "         "
                    out.print(
                        f"{mark} {c['store']} copy {c['copy_id']} ({c['created_at'][:19]}Z, {c['points']} points)"
                    )

            app.emit(doc, show)
            return
        app.reset_catalog()
        restored = restore_copy(stores, config.catalog.path, replace_sound=force)
    finally:
        services.close()
        services.catalog.close()
    doc = restored.document()
    added: list[str] | None = None
    if not no_catch_up:
        with app.lease():
            caught_up = rebuild_catalog(app.services)
        added = caught_up.points_added
        doc["caught_up"] = {"points_added": added, "problems": caught_up.problems}

    def render(out: Console) -> None:
        c = restored.copy
        out.print(
            f"restored the catalog from the {c.store} copy {c.copy_id} ({c.created_at[:19]}Z, {c.points} points)"
            + (f"; the old file is at {restored.moved_aside}" if restored.moved_aside else "")
        )
        for line in restored.skipped:
            out.print(f"[yellow]skipped[/] {line}")
        if added is not None:
            out.print(f"added {len(added)} point(s) written after the copy")

    app.emit(doc, render)


@command.command("adopt-store")
@click.argument("tier", type=click.Choice(["hot", "cold"]), required=False)
@click.option("--site", help="A site's store ([sites.NAME]) instead of a tier's.")
@pass_app
def adopt_store(app: App, tier: str | None, site: str | None) -> None:
    """Accept the configured store of TIER (or --site NAME) as the one its copies now go to.

    drsvc refuses a tier's store that is not where the catalog records its copies (a mistyped
    bucket, a missing or emptied bucket or pool, another store behind the same name) instead of
    creating and filling it (exit 2, naming both). When a new, empty store is wanted on purpose
    (the hot pool lost and recreated: runbook ceph-pool-lost; a tier moved to a new bucket), this
    says so once: the next command that opens it creates it if missing and records its identity.
    The catalog keeps the copies it records elsewhere or lost (`catalog check` lists them as drift).
    """
    from drsvc import sites, store_identity

    if (tier is None) == (site is None):
        raise InvalidInput("name a TIER (hot or cold) or give --site NAME")
    config = app.config
    if site is not None:
        url, label = sites.site_section(config, site).store, f"site:{site}"
    else:
        section = config.hot if tier == "hot" else config.cold
        if section is None:
            raise ConfigError(f"{config.path}: {tier}.store: no {tier} tier configured")
        url, label = section.store, str(tier)
    store_identity.adopt(app.catalog, url, label)
    what = f"site {site}'s" if site else f"the {tier}"
    app.emit(
        {"adopted": url, "tier": tier or "site", "site": site},
        lambda out: out.print(
            f"{shown(url)} adopted as {what} store: the next run creates it if it is missing and records its identity"
        ),
    )
