"""drsvc desktops discover | list: the desktops drsvc protects."""

from __future__ import annotations

import click
from rich.console import Console
from rich.table import Table

from drsvc.cli._common import App, DrsvcGroup, pass_app
from drsvc.inventory import discover, policies_of


@click.group("desktops", cls=DrsvcGroup)
def command() -> None:
    """Desktops: containers labelled drsvc.desktop, and their data volumes."""


@command.command("discover")
@pass_app
def discover_cmd(app: App) -> None:
    """Ask the container runtime for labelled desktops and record them in the catalog."""
    found, gone = discover(app.services)
    docs = [{**d.as_dict(), "policies": policies_of(app.services, d)} for d in found]

    def render(out: Console) -> None:
        table = Table(box=None, pad_edge=False)
        for col in ("DESKTOP", "CONTAINER", "STATE", "VOLUME", "TENANT", "POLICIES"):
            table.add_column(col)
        for doc in docs:
            table.add_row(
                doc["desktop_id"],
                doc["container"],
                doc["state"],
                doc["volume"] or "-",
                doc["tenant"] or "-",
                ",".join(doc["policies"]) or "[yellow]none[/]",
            )
        out.print(table)
        out.print(f"{len(docs)} desktops" + (f"; no longer found: {', '.join(gone)}" if gone else ""))

    app.emit({"desktops": docs, "gone": gone}, render)


@command.command("list")
@pass_app
def list_cmd(app: App) -> None:
    """List the desktops the catalog knows, with their latest recovery point."""
    catalog = app.catalog
    rows = catalog.desktops()
    latest = {
        r["desktop_id"]: r
        for r in catalog.query(
            "SELECT desktop_id, max(taken_at) AS taken_at, count(*) AS points FROM points "
            "WHERE status = 'complete' GROUP BY desktop_id"
        )
    }
    docs = [
        {
            "id": r["id"],
            "container": r["container"],
            "volume": r["volume"],
            "tenant": r["tenant"],
            "last_seen": r["last_seen"],
            "gone_since": r["gone_since"],
            "latest_point": latest.get(r["id"], {}).get("taken_at"),
            "points": latest.get(r["id"], {}).get("points", 0),
        }
        for r in rows
    ]

    def render(out: Console) -> None:
        if not docs:
            out.print("no desktops known yet: drsvc desktops discover")
            return
        table = Table(box=None, pad_edge=False)
        for col in ("DESKTOP", "VOLUME", "TENANT", "POINTS", "LATEST POINT (UTC)", "STATE"):
            table.add_column(col)
        for d in docs:
            table.add_row(
                d["id"],
                d["volume"] or "-",
                d["tenant"] or "-",
                str(d["points"]),
                (d["latest_point"] or "-")[:19].replace("T", " "),
                f"gone since {d['gone_since'][:19]}" if d["gone_since"] else "present",
            )
        out.print(table)

    app.emit(docs, render)
