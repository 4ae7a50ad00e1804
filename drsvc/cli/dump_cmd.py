"""drsvc dump POINT OBJECT: one object's bytes on stdout, streamed."""

from __future__ import annotations

import sys

import click

from drsvc.cli._common import App, DrsvcCommand, pass_app
from drsvc.cli.points_browse import TENANT_HELP
from drsvc.errors import InvalidInput
from drsvc.granular.browse import dump_object
from drsvc.granular.scope import Scope


@click.command("dump", cls=DrsvcCommand)
@click.argument("point_id")
@click.argument("object_name", metavar="OBJECT")
@click.option(
    "--from",
    "copy",
    type=click.Choice(["snapshot", "hot", "cold"]),
    help="Read from this copy: the pool snapshot, hot chunks or cold chunks (default: the fastest that answers).",
)
@click.option("--tenant", help=TENANT_HELP)
@pass_app
def command(app: App, point_id: str, object_name: str, copy: str | None, tenant: str | None) -> None:
    """Write OBJECT of recovery point POINT to stdout, as it was at the point.

    Streamed with bounded memory from the fastest copy (the pool snapshot while it exists, else hot
    chunks, else cold chunks: only the chunks holding the object are fetched). The object's digest
    is checked after its last byte; a mismatch exits 4. Example:
    drsvc dump 20261127T173012Z-desk-001-3fa9c1 home/report.odt > report.odt
    """
    if app.json_output:
        raise InvalidInput("dump writes the object's bytes to stdout; --json does not apply")
    if sys.stdout.isatty():
        raise InvalidInput("dump writes raw bytes: redirect stdout to a file or a pipe")
    used, written = dump_object(
        app.services, Scope(app.catalog, tenant, "dump"), point_id, object_name, sys.stdout.buffer, copy=copy
    )
    app.err.print(f"[dim]{written} bytes from the {used} copy[/]")
