"""Entry point: global options, command registry, and the one place errors become exit codes."""

from __future__ import annotations

import os
import sys
import traceback
from pathlib import Path

import click

from drsvc import __version__
from drsvc.cli._common import App, DrsvcGroup
from drsvc.errors import EXIT_FAILED, EXIT_INVALID, DrsvcError


@click.group(cls=DrsvcGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Config file (default: $DRSVC_CONFIG, ./drsvc.toml, /etc/drsvc/drsvc.toml).",
)
@click.option("--json", "json_output", is_flag=True, help="Print one JSON document on stdout.")
@click.version_option(__version__, prog_name="drsvc")
@click.pass_context
def cli(ctx: click.Context, config_path: Path | None, json_output: bool) -> None:
    """drsvc: backup and disaster recovery for container-based virtual desktops.

    Takes recovery points (CRIU container checkpoint + Ceph pool snapshot of the same instant)
    per policy, keeps them on a hot Ceph tier and a cold S3 tier, restores a desktop in one
    command and measures its RTO, and proves it with drills and a quarterly report.
    """
    app = App(config_path=config_path, json_output=json_output)
    ctx.obj = app
    ctx.call_on_close(app.close)


def _register() -> None:
    from drsvc.cli import commands

    for command in commands():
        cli.add_command(command)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: run the CLI and map every DrsvcError to its exit code."""
    _register()
    json_output = "--json" in (argv if argv is not None else sys.argv[1:])
    try:
        # Commands return an exit code when they finished but must not report plain success
        # (e.g. 5: restored, but the RTO target was missed).
        rv = cli.main(args=argv, prog_name="drsvc", standalone_mode=False)
    except DrsvcError as e:
        _report(e, json_output)
        sys.exit(e.exit_code)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(EXIT_FAILED)
    except click.ClickException as e:
        e.show()
        sys.exit(EXIT_INVALID if e.exit_code == 2 else e.exit_code)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
    sys.exit(rv if isinstance(rv, int) else 0)


def _report(error: DrsvcError, json_output: bool) -> None:
    if error.traceback or os.environ.get("DRSVC_DEBUG"):
        traceback.print_exc()
    if json_output:
        import json

        doc = {"error": error.message, "details": error.details, "exit_code": error.exit_code}
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
    click.echo(f"drsvc: error: {error.message}", err=True)
    for line in error.details:
        click.echo(f"  {line}", err=True)
