"""drsvc init: write a starter config, key and catalog (idempotent)."""

from __future__ import annotations

import os
from pathlib import Path

import click
from rich.console import Console

from drsvc.bootstrap import init
from drsvc.cli._common import App, DrsvcCommand, pass_app


@click.command("init", cls=DrsvcCommand)
@click.option(
    "--policies",
    "policies_dir",
    type=click.Path(path_type=Path, file_okay=False),
    help="Policy directory to reference (default: policies/ next to the config, "
    "seeded with the example policies when it does not exist).",
)
@pass_app
def command(app: App, policies_dir: Path | None) -> None:
    """Write a commented starter config wired to what this machine has, plus key and catalog.

    Uses --config (or $DRSVC_CONFIG, else ./drsvc.toml). Existing files are kept, never
    overwritten, so running it again is safe.
    """
    target = app.config_path or Path(os.environ.get("DRSVC_CONFIG") or "drsvc.toml")
    result = init(target, policies_dir)

    def render(out: Console) -> None:
        for item in result.created:
            out.print(f"[green]created[/]  {item}")
        for item in result.kept:
            out.print(f"[dim]kept[/]     {item}")
        # with the config kept, what this machine has is not what the config says: say so
        kept = str(result.config) in map(str, result.kept)
        for what, value in sorted(result.found.items()):
            out.print(
                f"[dim]found[/]    {what} = {value}" + (" [dim](not written: the config is kept)[/]" if kept else "")
            )
        out.print(f"next: drsvc --config {target} policy check")

    app.emit(
        {"config": str(result.config), "created": result.created, "kept": result.kept, "found": result.found},
        render,
    )
