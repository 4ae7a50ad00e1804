"""drsvc points list | show: recovery points with their tiers, sizes and consistency."""

from __future__ import annotations

import json

import click
from rich.console import Console

from drsvc.cli._common import App, DrsvcGroup, pass_app, shown
from drsvc.intents import interrupted_restores
from drsvc.units import format_bytes


@click.group("points", cls=DrsvcGroup)
def command() -> None:
    """Recovery points: what can be restored, from which tier."""


def write_columns(out: Console, columns: list[str], rows: list[list[str]]) -> None:
    """Aligned plain columns, one whole line a row, written as they are formatted.

    Not a rich Table: it measures every cell and holds the rendered table in memory, minutes and
    gigabytes at a million points; these lines stay greppable and never wrap.
    """
    widths = [len(c) for c in columns]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]
    last = len(columns) - 1

    def line(cells: list[str]) -> str:
        return "  ".join(cell if i == last else cell.ljust(widths[i]) for i, cell in enumerate(cells)).rstrip() + "\n"

    if out.quiet:
        return
    write = out.file.write
    write(line(columns))
    for row in rows:
        write(line(row))


def point_document(point: dict) -> dict:
    """The ``points list`` JSON shape of DESIGN's contract (plus a few useful extras)."""
    return {
        "id": point["id"],
        "desktop": point["desktop_id"],
        "taken_at": point["taken_at"],
        "status": point["status"],
        "consistency": point["consistency"],
        "tiers": point["tiers"],
        "sites": point.get("sites", []),
        "bytes": point["bytes"],
        "policy": point["policy"],
        "reason": point["reason"],
        "freeze_ms": point["freeze_ms"],
        "freeze_budget_ms": point.get("freeze_budget_ms"),
    }


@command.command("list")
@click.argument("desktop", required=False)
@click.option(
    "--status",
    type=click.Choice(["pending", "complete", "failed", "expired"]),
    help="Only points with this status.",
)
@click.option("--limit", type=int, default=None, help="At most this many (newest first).")
@pass_app
def list_points(app: App, desktop: str | None, status: str | None, limit: int | None) -> None:
    """List recovery points, newest first (all desktops, or one DESKTOP)."""
    if desktop is not None:
        app.catalog.desktop(desktop)  # unknown desktop: exit 3, not an empty list
    points = app.catalog.points(desktop, status=status, limit=limit)

    interrupted = [i for i in interrupted_restores(app.catalog) if desktop in (None, i.target)]

    def render(out: Console) -> None:
        for i in interrupted:
            phase = f" during its {i.detail['phase']} phase" if i.detail.get("phase") else ""
            out.print(
                f"[red]interrupted[/] in-place restore of {i.target} from point {i.detail.get('point')} "
                f"(restore {i.detail.get('restore')}, {i.created_at[:19]}Z) ended{phase}: the desktop may be down; "
                f"`drsvc restore {i.target}` finishes it",
                soft_wrap=True,
            )
        if not points:
            kind = f"no {status} recovery points" if status else "no recovery points"
            out.print(kind + (f" for {desktop}" if desktop else ""))
            return
        with_sites = any(p["sites"] for p in points)
        columns = ["ID", "DESKTOP", "TAKEN (UTC)", "STATUS", "CONSISTENCY", "TIERS", "SIZE", "FREEZE"]
        if with_sites:
            columns.insert(6, "SITES")
        rows = []
        for p in points:
            freeze = f"{p['freeze_ms']:.0f} ms" if p["freeze_ms"] is not None else "-"
            row = [
                p["id"],
                p["desktop_id"],
                p["taken_at"][:19].replace("T", " "),
                p["status"],
                p["consistency"],
                ",".join(p["tiers"]) or "-",
                format_bytes(p["bytes"]),
                freeze,
            ]
            if with_sites:
                row.insert(6, ",".join(p["sites"]) or "-")
            rows.append(row)
        write_columns(out, columns, rows)

    app.emit([point_document(p) for p in points], render)


@command.command("show")
@click.argument("point_id")
@pass_app
def show_point(app: App, point_id: str) -> None:
    """Show one recovery point (an unambiguous id prefix is enough)."""
    point = app.catalog.point(point_id)
    artifacts = app.catalog.artifacts(point["id"])
    for a in artifacts:
        a["held_files"] = json.loads(a["held_files"]) if a.get("held_files") else None
    tiers = app.catalog.query("SELECT * FROM point_tiers WHERE point_id = ? ORDER BY tier DESC", [point["id"]])
    sites = app.catalog.query("SELECT * FROM point_sites WHERE point_id = ? ORDER BY site", [point["id"]])
    doc = {
        **point_document(point),
        "artifacts": artifacts,
        "tier_detail": tiers,
        "site_detail": sites,
        "pool_snapshot_id": point["pool_snapshot_id"],
        "image": point["image"],
        "held_files": next((a["held_files"] for a in artifacts if a["kind"] == "checkpoint"), None),
    }

    def render(out: Console) -> None:
        for key in ("id", "desktop", "taken_at", "status", "consistency", "policy", "reason", "image"):
            if doc.get(key) is not None:  # a reason quotes names from the desktop: text, not markup
                out.print(f"{key:12} {shown(doc[key])}")
        out.print(f"{'size':12} {format_bytes(point['bytes'])}")
        if point["freeze_ms"] is not None or point.get("freeze_budget_ms") is not None:
            measured = f"{point['freeze_ms']:.0f} ms" if point["freeze_ms"] is not None else "not measured"
            budget = point.get("freeze_budget_ms")
            within = ""
            if budget is not None and point["freeze_ms"] is not None:
                within = ", within" if point["freeze_ms"] <= budget else ", OVER"
            out.print(
                f"{'freeze':12} {measured}" + (f" (budget {budget:.0f} ms{within})" if budget is not None else "")
            )
        for t in tiers:
            lock = f", locked until {t['retain_until']}" if t["retain_until"] else ""
            out.print(f"{'tier':12} {t['tier']} in {t['store_url']} (+{format_bytes(t['stored_bytes'])}{lock})")
        for t in sites:
            lock = f", locked until {t['retain_until']}" if t["retain_until"] else ""
            out.print(f"{'site':12} {t['site']} in {t['store_url']} (+{format_bytes(t['copied_bytes'])} copied{lock})")
        for a in artifacts:
            out.print(
                f"{'artifact':12} {a['kind']} {a['name']}: {format_bytes(a['bytes'])} "
                f"in {a['chunks']} chunks ({a['new_chunks']} new)"
            )
        held = doc["held_files"] or {}
        for f in held.get("files", ()):
            out.print(f"{'held file':12} /{shown(f['path'])} ({format_bytes(f['size'])}, as at the freeze)")
        for note in held.get("notes", ()):
            out.print(f"{'held note':12} {shown(note)}")

    app.emit(doc, render)


# `points ls` and `points diff` (granular restore) live beside, in their own module
from drsvc.cli.points_browse import diff_command, ls_command  # noqa: E402

command.add_command(ls_command)
command.add_command(diff_command)
