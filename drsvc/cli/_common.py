"""What every command shares: the run context (config, catalog, --json) and output helpers.

Commands receive an ``App`` through ``@pass_app``; it loads the config and opens the catalog
lazily, once, so a command that needs neither (``policy check PATH``) works without a config.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from drsvc.errors import EXIT_CODES
from drsvc.printable import printable

if TYPE_CHECKING:
    from rich.console import Console  # imported when a command prints: `drsvc --help` never does

    from drsvc.catalog import Catalog
    from drsvc.config import Config
    from drsvc.lease import Lease
    from drsvc.services import Services


def _exit_codes_epilog(formatter: click.HelpFormatter) -> None:
    with formatter.section("Exit codes"):
        formatter.write_dl([(str(code), meaning) for code, meaning in EXIT_CODES])


class DrsvcGroup(click.Group):
    """A click group whose help ends with the exit codes (and so does every subcommand's)."""

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        super().format_epilog(ctx, formatter)
        _exit_codes_epilog(formatter)


class DrsvcCommand(click.Command):
    """A click command whose help ends with the exit codes."""

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        super().format_epilog(ctx, formatter)
        _exit_codes_epilog(formatter)


DrsvcGroup.command_class = DrsvcCommand
DrsvcGroup.group_class = DrsvcGroup


@dataclass
class App:
    """Per-invocation state: global options and lazily loaded config and catalog."""

    config_path: Path | None = None
    json_output: bool = False
    log_format: str = "text"  # json: every line on stderr (and stdout without --json) a JSON object
    command: str = ""  # the command run (events under --log-format json name it)
    allow_damaged: bool = False  # catalog check/export/restore/rebuild work on a damaged catalog
    copy_after: bool = True  # False: this run did nothing (another held the lease), so no catalog copy
    _config: Config | None = field(default=None, repr=False)
    _catalog: Catalog | None = field(default=None, repr=False)
    _services: Services | None = field(default=None, repr=False)
    _views: list[Any] = field(default_factory=list, repr=False)

    @property
    def config(self) -> Config:
        if self._config is None:
            from drsvc.config import load_config

            self._config = load_config(self.config_path)
        return self._config

    @property
    def catalog(self) -> Catalog:
        """The catalog; a damaged one is refused (exit 4) unless the command set ``allow_damaged``."""
        if self._catalog is None:
            from drsvc.catalog import Catalog

            self._catalog = Catalog.open(self.config.catalog.path)
        if not self.allow_damaged:
            self._catalog.refuse_if_damaged()
        return self._catalog

    @property
    def services(self) -> Services:
        """The adapters (stores, runtime, volumes, policies) built from the config."""
        if self._services is None:
            from drsvc.services import Services

            self._services = Services(self.config, self.catalog)
        return self._services

    def use_private_catalog(self) -> None:
        """Work on an in-memory catalog and never open the configured one (node agents: see drsvc.agents)."""
        from drsvc.catalog import Catalog

        if self._catalog is not None:
            raise RuntimeError("the configured catalog is already open")
        self._catalog = Catalog.open(":memory:")

    def lease(self) -> Lease:
        """The work lease (backups, prune, tiering): the catalog's, or the Kubernetes Lease."""
        return self.services.work_lease()

    def reset_catalog(self) -> None:
        """Close the catalog and the adapters built on it (a command that replaces the catalog file)."""
        if self._services is not None:
            self._services.close()
            self._services = None
        if self._catalog is not None:
            self._catalog.close()
            self._catalog = None

    def copy_catalog(self) -> None:
        """After a run: an encrypted copy of the catalog to the stores, if it changed (never fails the command)."""
        if not self.copy_after or self._services is None or self._catalog is None or self._catalog.damaged:
            return
        from drsvc.catalog_guard import copy_due, copy_labels

        if not copy_due(self._catalog, copy_labels(self._services, opened_only=True)):
            return  # nothing changed: no upload, and the chunk store is not even imported
        from drsvc.catalog_copy import push, stores_of
        from drsvc.errors import DrsvcError

        try:
            results = push(self._catalog, stores_of(self._services, opened_only=True))
        except DrsvcError as e:
            results = {"": f"error: {e.message}"}  # no store could be opened: which one, the message says
        for label, outcome in results.items():
            if outcome.startswith("error:"):
                where = f" to the {label} store" if label else ""
                self.err.print(f"[yellow]drsvc: warning: the catalog copy{where} was not written:{outcome[6:]}[/]")

    def progress(self, then: Callable[..., None] | None = None) -> Callable[..., None]:
        """An ``on_event`` for jobs: progress bars (bytes, ETA) on a terminal, plain lines otherwise;
        other events go to ``then``."""
        from drsvc.cli.progress import ProgressView

        view = ProgressView(self.err, then=then)
        self._views.append(view)
        return view

    def close(self) -> None:
        self.copy_catalog()
        for view in self._views:
            view.close()
        self._views.clear()
        if self._services is not None:
            self._services.close()
            self._services = None
        if self._catalog is not None:
            self._catalog.close()
            self._catalog = None

    @property
    def out(self) -> Console:
        """Human output (stdout); quiet when --json is given."""
        # Piped into a file or a ticket, tables keep their rows on one line (no 80-column squeeze).
        from rich.console import Console

        width = None if sys.stdout.isatty() else 200
        return Console(quiet=self.json_output, highlight=False, width=width)

    @property
    def err(self) -> Console:
        """Diagnostics and progress (stderr), so stdout stays clean for --json; under
        ``--log-format json`` a console writing each line as a JSON object (``drsvc.cli.jsonlines``)."""
        if self.log_format == "json":
            from drsvc.cli.jsonlines import JsonConsole

            return JsonConsole(self.command)  # type: ignore[return-value]  # the part commands use
        from rich.console import Console

        tty = sys.stderr.isatty()
        # piped (cron mail, a log file, a ticket): a line is never wrapped, so one error stays one line
        return Console(stderr=True, highlight=False, width=None if tty else 200, soft_wrap=not tty)

    def emit(self, document: Any, render: Callable[[Console], None]) -> None:
        """Print ``document`` as one JSON document with --json, else call ``render``; under
        ``--log-format json`` without --json, the document as one ``COMMAND.result`` JSON line."""
        if self.json_output:
            json.dump(document, sys.stdout, indent=2, default=str)
            sys.stdout.write("\n")
        elif self.log_format == "json":
            from drsvc.log import json_line

            json_line("info", f"{self.command}.result", f"{self.command}: result", stream=sys.stdout, result=document)
        else:
            render(self.out)


def shown(value: Any) -> str:
    """``value`` as text a rich console prints as it is: control characters escaped (``printable``)
    and ``[`` no markup. Every name or error that may come from a desktop goes through it."""
    from rich.markup import escape

    return escape(printable(str(value)))


pass_app = click.make_pass_decorator(App)
