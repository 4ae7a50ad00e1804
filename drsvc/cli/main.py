"""Entry point: global options, command registry, and the one place errors become exit codes."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from drsvc import __version__
from drsvc.cli import COMMANDS, load
from drsvc.cli._common import App, DrsvcGroup
from drsvc.errors import EXIT_FAILED, EXIT_INTEGRITY, EXIT_INVALID, DrsvcError
from drsvc.printable import printable

# Imported when used, not at start-up: logging (drsvc.log) once a command runs, rich when it
# prints, sqlite3 with the catalog. `drsvc --help` (every cron minute's cost) needs none of them.

LOG_INFO_BY_DEFAULT = ("run",)


class LazyGroup(DrsvcGroup):
    """The ``drsvc`` group: subcommands from ``drsvc.cli.COMMANDS``, each imported when first used."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(self.commands) | set(COMMANDS))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in COMMANDS:
            self.add_command(load(cmd_name), cmd_name)
        return self.commands.get(cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The command list with the registry's help lines, so ``--help`` imports no command."""
        names = self.list_commands(ctx)
        if not names:
            return
        limit = formatter.width - 6 - max(len(n) for n in names)
        rows = []
        for name in names:
            # a stand-in carrying the registry's line is shortened exactly as the real command would be
            command = self.commands.get(name) or click.Command(name, help=COMMANDS[name][1])
            rows.append((name, command.get_short_help_str(limit)))
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Config file (default: $DRSVC_CONFIG, ./drsvc.toml, /etc/drsvc/drsvc.toml; also after the command).",
)
@click.option("--json", "json_output", is_flag=True, help="Print one JSON document on stdout (also after the command).")
@click.option("--debug", is_flag=True, help="On an error, also print the Python traceback (for bug reports).")
@click.option("-v", "--verbose", count=True, help="More log lines on stderr (-v info, -vv debug).")
@click.option("-q", "--quiet", count=True, help="Fewer log lines on stderr (errors only).")
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="Log lines as text, or one JSON object a line (time, level, event, desktop, point, job, error).",
)
@click.version_option(__version__, prog_name="drsvc")
@click.pass_context
def cli(
    ctx: click.Context,
    config_path: Path | None,
    json_output: bool,
    debug: bool,
    verbose: int,
    quiet: int,
    log_format: str,
) -> None:
    """drsvc: backup and disaster recovery for container-based virtual desktops.

    Takes recovery points (CRIU container checkpoint + Ceph pool snapshot of the same instant)
    per policy, keeps them on a hot Ceph tier and a cold S3 tier, restores a desktop in one
    command and measures its RTO, and proves it with drills and a quarterly report.
    """
    import logging

    from drsvc.log import level_for
    from drsvc.log import setup as setup_logging

    # the scheduler (cron, daemon) reports what it did in its log; other commands print their results
    default = logging.INFO if ctx.invoked_subcommand in LOG_INFO_BY_DEFAULT else logging.WARNING
    setup_logging(level_for(verbose, quiet, default), log_format)
    app = App(config_path=config_path, json_output=json_output)
    ctx.obj = app
    ctx.call_on_close(app.close)


def hoist_global_options(args: list[str]) -> list[str]:
    """``drsvc points list --json`` means ``drsvc --json points list``; ``drsvc status --config
    F`` means ``drsvc --config F status``: move ``--json`` and ``--config F`` (``--config=F``)
    to the front, where the group reads them.

    Only before a ``--`` (after it they are arguments), and only because no command takes a
    ``--json`` or ``--config`` of its own (both are global options).
    """
    end = args.index("--") if "--" in args else len(args)
    front: list[str] = []
    rest: list[str] = []
    i = 0
    while i < end:
        arg = args[i]
        if arg == "--json" or arg.startswith("--config="):
            front.append(arg)
        elif arg == "--config" and i + 1 < end:
            front += [arg, args[i + 1]]
            i += 1
        else:
            rest.append(arg)
        i += 1
    return front + rest + args[end:]


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: run the CLI and map every DrsvcError to its exit code."""
    args = hoist_global_options(list(argv if argv is not None else sys.argv[1:]))
    json_output = "--json" in args
    debug = "--debug" in args or bool(os.environ.get("DRSVC_DEBUG"))
    try:
        # Commands return an exit code when they finished but must not report plain success
        # (e.g. 5: restored, but the RTO target was missed).
        rv = cli.main(args=args, prog_name="drsvc", standalone_mode=False)
    except DrsvcError as e:
        _report(e, json_output, debug)
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
    except Exception as e:
        # a catalog page that goes bad mid-command: still one line, naming the way back (sqlite3
        # is imported with the catalog: when it is not, no error can be its)
        sqlite3 = sys.modules.get("sqlite3")
        if sqlite3 is None or not isinstance(e, sqlite3.DatabaseError):
            raise
        from drsvc.catalog_guard import is_damage

        if debug:
            import traceback

            traceback.print_exc()
        damaged = is_damage(e)
        click.echo(
            f"drsvc: error: catalog: {e}"
            + (
                "; `drsvc catalog check` says more, `drsvc catalog restore` brings a sound copy back" if damaged else ""
            ),
            err=True,
        )
        sys.exit(EXIT_INTEGRITY if damaged else EXIT_FAILED)
    sys.exit(rv if isinstance(rv, int) else 0)


def _report(error: DrsvcError, json_output: bool, debug: bool) -> None:
    # The contract is one line (and the exit code); --debug / DRSVC_DEBUG=1 add the stack trace
    # for a bug report. Unexpected backend errors (``error.traceback``) were printed with one by
    # default, which buried the message under 30 lines a cron mail or a ticket had to carry.
    if debug:
        import traceback

        traceback.print_exc()
    if json_output:
        import json

        doc = {"error": error.message, "details": error.details, "exit_code": error.exit_code}
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
    click.echo(f"drsvc: error: {printable(error.message)}", err=True)
    for line in error.details:
        click.echo(f"  {printable(line)}", err=True)
