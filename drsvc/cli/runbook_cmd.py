"""drsvc runbook list | show NAME: the incident runbooks, readable in the terminal at 3 a.m."""

from __future__ import annotations

import click
from rich.console import Console
from rich.markdown import Markdown
from rich.table import Table

from drsvc.cli._common import App, DrsvcGroup, pass_app
from drsvc.runbooks import find, runbook_dir, runbooks


@click.group("runbook", cls=DrsvcGroup)
def command() -> None:
    """Incident runbooks: what to do when a desktop, node, pool, S3, the catalog or a host is lost."""


@command.command("list")
@pass_app
def list_runbooks(app: App) -> None:
    """List the runbooks with their one-line summaries."""
    books = runbooks()

    def render(out: Console) -> None:
        if not books:
            out.print(f"no runbooks found in {runbook_dir()} (set DRSVC_RUNBOOKS to their directory)")
            return
        table = Table(box=None, pad_edge=False)
        table.add_column("NAME", no_wrap=True)
        table.add_column("WHEN")
        for book in books:
            table.add_row(book.name, book.title)
        out.print(table)
        out.print("\n[dim]drsvc runbook show NAME[/] prints one.")

    app.emit([book.document() for book in books], render)


@command.command("show")
@click.argument("name")
@pass_app
def show_runbook(app: App, name: str) -> None:
    """Print the runbook NAME (e.g. ransomware), rendered; with --json its Markdown text."""
    book = find(name)

    def render(out: Console) -> None:
        out.width = min(out.width, 100)  # prose reads best narrow, also when piped into a ticket
        out.print(Markdown(book.text, code_theme="ansi_dark"))

    app.emit(book.document(text=True), render)
