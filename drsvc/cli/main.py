"""Entry point: global options, command registry, and the one place errors become exit codes."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import click

from drsvc import __version__
from drsvc.cli import COMMANDS, load
from drsvc.cli._common import App, DrsvcGroup
from drsvc.cli.signals import interrupted, interrupting
from drsvc.cli.signals import message as interrupted_message
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
    app = App(config_path=config_path, json_output=json_output, log_format=log_format)
    app.command = ctx.invoked_subcommand or ""
    ctx.obj = app
    ctx.call_on_close(app.close)


HOISTED = ("--config", "--log-format")  # global options with a value, also taken after the command


def hoist_global_options(args: list[str]) -> list[str]:
    """``drsvc points list --json`` means ``drsvc --json points list``; ``drsvc status --config
    F`` means ``drsvc --config F status``: move ``--json``, ``--config F`` (``--config=F``) and
    ``--log-format F`` to the front, where the group reads them.

    Only before a ``--`` (after it they are arguments), and only because no command takes a
    ``--json``, ``--config`` or ``--log-format`` of its own (they are global options).
    """
    end = args.index("--") if "--" in args else len(args)
    front: list[str] = []
    rest: list[str] = []
    i = 0
    while i < end:
        arg = args[i]
        if arg == "--json" or arg.startswith(tuple(f"{o}=" for o in HOISTED)):
            front.append(arg)
        elif arg in HOISTED and i + 1 < end:
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
    say = Say(json_lines=_log_format(args) == "json", debug=debug)
    try:
        # Commands return an exit code when they finished but must not report plain success
        # (e.g. 5: restored, but the RTO target was missed).
        with interrupting():
            rv = cli.main(args=args, prog_name="drsvc", standalone_mode=False)
    except DrsvcError as e:
        _report(e, json_output, say)
        sys.exit(e.exit_code)
    except click.exceptions.Abort as e:
        # click turns Ctrl-C (and our signals, drsvc.cli.signals) into Abort
        cause = e.__cause__ or e.__context__
        stopped = interrupted(cause) if isinstance(cause, KeyboardInterrupt) else None
        say.error(EXIT_FAILED, interrupted_message(stopped) if stopped else "aborted")
        sys.exit(EXIT_FAILED)
    except click.ClickException as e:
        code = EXIT_INVALID if e.exit_code == 2 else e.exit_code
        if say.json_lines:
            say.error(code, e.format_message(), hint=_usage_hint(e))
        else:
            e.show()
        sys.exit(code)
    except KeyboardInterrupt as e:
        say.error(EXIT_FAILED, interrupted_message(interrupted(e)))
        sys.exit(EXIT_FAILED)
    except Exception as e:
        # a full or read-only disk met where no write names its path (stdout redirected to a file)
        full = _host_fs_error(e) if isinstance(e, OSError) else None
        if full is not None:
            _report(full, json_output, say)
            sys.exit(full.exit_code)
        # a catalog page that goes bad mid-command: still one line, naming the way back (sqlite3
        # is imported with the catalog: when it is not, no error can be its)
        sqlite3 = sys.modules.get("sqlite3")
        if sqlite3 is None or not isinstance(e, sqlite3.DatabaseError):
            if say.json_lines:  # a bug: its traceback as a field, so the line still parses
                say.error(EXIT_FAILED, f"internal error: {type(e).__name__}: {e}", trace=True)
                sys.exit(EXIT_FAILED)
            raise
        from drsvc.catalog_guard import is_damage

        damaged = is_damage(e)
        hint = "`drsvc catalog check` says more, `drsvc catalog restore` brings a sound copy back"
        say.error(EXIT_INTEGRITY if damaged else EXIT_FAILED, f"catalog: {e}", hint=hint if damaged else None)
        sys.exit(EXIT_INTEGRITY if damaged else EXIT_FAILED)
    sys.exit(rv if isinstance(rv, int) else 0)


def _host_fs_error(error: OSError) -> DrsvcError | None:
    from drsvc import hostfs

    return hostfs.os_error(error.filename or "standard output or a file drsvc writes", error)


def _log_format(args: list[str]) -> str:
    """The ``--log-format`` the command line asks for (hoisted to the front), before click parses it."""
    for i, arg in enumerate(args):
        if arg == "--":
            break
        if arg.startswith("--log-format="):
            return arg.split("=", 1)[1]
        if arg == "--log-format" and i + 1 < len(args):
            return args[i + 1]
    return "text"


def _usage_hint(error: click.ClickException) -> str | None:
    ctx = getattr(error, "ctx", None)
    return f"`{ctx.command_path} --help` lists the arguments and options" if ctx is not None else None


class Say:
    """The final line of a failed command: ``drsvc: error: MESSAGE[; HINT]`` (text), or under
    ``--log-format json`` one ``error`` event with ``exit_code``, ``message`` and ``hint``."""

    def __init__(self, *, json_lines: bool, debug: bool) -> None:
        self.json_lines = json_lines
        self.debug = debug

    def error(
        self, code: int, message: str, *, hint: str | None = None, details: list[str] | None = None, trace: bool = False
    ) -> None:
        # The contract is one line (and the exit code); --debug / DRSVC_DEBUG=1 add the stack trace
        # for a bug report (a JSON line carries it as a field).
        import traceback

        if not self.json_lines:
            if self.debug or trace:
                traceback.print_exc()
            click.echo(f"drsvc: error: {printable(message)}" + (f"; {printable(hint)}" if hint else ""), err=True)
            for line in details or []:
                click.echo(f"  {printable(line)}", err=True)
            return
        from drsvc.log import json_line

        fields: dict[str, Any] = {"exit_code": code, "hint": hint}
        if details:
            fields["details"] = details
        if self.debug or trace:
            fields["traceback"] = traceback.format_exc()
        json_line("error", "error", message, **fields)


def _report(error: DrsvcError, json_output: bool, say: Say | bool) -> None:
    """The final lines of a DrsvcError (``say``: a ``Say``, or the debug flag of a text one)."""
    if isinstance(say, bool):
        say = Say(json_lines=False, debug=say)
    hint = getattr(error, "hint", None)
    if json_output:
        import json

        doc = {"error": error.message, "details": error.details, "exit_code": error.exit_code, "hint": hint}
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
    say.error(error.exit_code, error.message, hint=hint, details=error.details)
