"""drsvc mount POINT|DESKTOP DIR: a read-only FUSE view of one point or of all points of a desktop."""

from __future__ import annotations

from pathlib import Path

import click

from drsvc.cli._common import App, DrsvcCommand, pass_app
from drsvc.cli.points_browse import TENANT_HELP
from drsvc.granular.browse import plan_mount, serve_mount
from drsvc.granular.scope import Scope


@click.command("mount", cls=DrsvcCommand)
@click.argument("what", metavar="POINT|DESKTOP")
@click.argument("directory", type=click.Path(path_type=Path, file_okay=False, exists=True))
@click.option("--cache-mib", type=click.IntRange(8, 4096), default=64, show_default=True, help="Chunk cache size.")
@click.option("--tenant", help=TENANT_HELP)
@pass_app
def command(app: App, what: str, directory: Path, cache_mib: int, tenant: str | None) -> None:
    """Mount a recovery point (or every point of DESKTOP, as dated directories) read-only at DIRECTORY.

    A point shows volume/ (its objects; "/" in a name makes directories) and rootfs/ (the
    checkpoint's root filesystem changes, where recorded). A desktop shows one directory per point
    (2026-11-27T17:30:12Z/...) and latest. Chunks are fetched when files are read, through a
    bounded cache. Runs in the foreground: Ctrl-C (or fusermount3 -u DIRECTORY) unmounts.
    Needs the 'mount' extra and libfuse3 (Debian: fuse3).
    """
    from drsvc.granular.fusefs import load_fuse

    load_fuse()  # a missing extra or libfuse is said before "mounting …", not after it
    scope = Scope(app.catalog, tenant, "mount")
    plan = plan_mount(app.services, scope, what)
    app.err.print(f"mounting {plan.describe()} at {directory} (read-only); Ctrl-C to unmount")
    serve_mount(app.services, scope, plan, directory, cache_mib=cache_mib)
    app.err.print(f"unmounted {directory}")
