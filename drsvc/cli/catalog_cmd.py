"""drsvc catalog check | export: the health and contents of the catalog."""

from __future__ import annotations

import click
from rich.console import Console

from drsvc.cli._common import App, DrsvcGroup, pass_app
from drsvc.errors import IntegrityError

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
    """The SQLite catalog: check its integrity, export it."""


@command.command("check")
@pass_app
def check(app: App) -> None:
    """Check the catalog's integrity and foreign keys (exit 4 on a problem)."""
    catalog = app.catalog
    problems = catalog.check()
    doc = {"path": catalog.path, "schema_version": catalog.schema_version, "problems": problems}
    if problems:
        raise IntegrityError(f"catalog {catalog.path} has {len(problems)} problem(s)", details=problems)

    def render(out: Console) -> None:
        out.print(f"OK  catalog {catalog.path} (schema version {catalog.schema_version})")

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
