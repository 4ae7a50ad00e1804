"""drsvc points ls | diff: a point's objects and files, and what changed between two points."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import click

from drsvc.cli._common import App, DrsvcCommand, pass_app
from drsvc.printable import printable
from drsvc.units import format_bytes

if TYPE_CHECKING:  # the jobs load when a subcommand runs, not with `drsvc points list`
    from drsvc.granular.browse import PointDiff, PointListing

TENANT_HELP = "Act for this tenant only: desktops of other tenants are refused (and the refusal recorded)."


def _mtime(text: str | None) -> str:
    return text[:19].replace("T", " ") if text else "-" * 19


def render_listing(result: PointListing, long: bool) -> None:
    """Plain lines (not a rich table): a point may hold 100,000 objects."""
    doc = result.document()
    vol = doc["volume"]
    lines = [
        f"point {doc['point_id']} of {doc['desktop']}, taken {doc['taken_at'][:19].replace('T', ' ')}Z "
        f"({','.join(doc['tiers'])})",
        f"volume {vol['url']}: {vol['count']} objects, {format_bytes(vol['bytes'])}"
        + (f" under {result.prefix!r}" if result.prefix else ""),
    ]
    for o in result.objects:
        if long:
            lines.append(
                f"  {o.size:>12}  {_mtime(o.mtime)}  {o.digest[:16]}  x{len(o.xattrs):<3} o{len(o.omap):<5} {o.name}"
            )
        else:
            lines.append(f"  {o.size:>12}  {_mtime(o.mtime)}  {o.name}")
    rootfs = result.rootfs
    if rootfs.recorded:
        lines.append(f"root filesystem changes: {len(rootfs.files)} entries, {len(rootfs.deleted)} deleted")
        for f in rootfs.files:
            when = datetime.fromtimestamp(f.mtime, UTC).strftime("%Y-%m-%d %H:%M:%S")
            link = f" -> {f.link}" if f.link else ""
            lines.append(f"  {f.type:<8} {f.mode & 0o7777:04o} {f.size:>12}  {when}  /{f.path}{link}")
        lines.extend(f"  deleted           /{p}" for p in rootfs.deleted)
    lines.extend(f"note: {n}" for n in rootfs.notes)
    sys.stdout.write("\n".join(map(printable, lines)) + "\n")  # names are the desktop's: one line each


@click.command("ls", cls=DrsvcCommand)
@click.argument("point_id")
@click.argument("prefix", required=False)
@click.option("--long", "-l", "long", is_flag=True, help="Digests, xattr and omap counts (JSON: their values).")
@click.option("--tenant", help=TENANT_HELP)
@pass_app
def ls_command(app: App, point_id: str, prefix: str | None, long: bool, tenant: str | None) -> None:
    """List the objects of a point's volume (under PREFIX) and its root filesystem changes.

    Answers from the point's manifest alone: name, size, mtime (where recorded), digest, xattr and
    omap counts of every object; type, mode, size and mtime of every file the checkpoint's root
    filesystem diff holds (points taken before drsvc recorded them say so). No data is read.
    """
    from drsvc.granular.browse import list_point
    from drsvc.granular.scope import Scope

    result = list_point(app.services, Scope(app.catalog, tenant, "ls"), point_id, prefix)
    if app.json_output:
        # one line, through json's C encoder: indenting 100,000 objects took seconds
        sys.stdout.write(json.dumps(result.document(long=long), separators=(",", ":")) + "\n")
    elif app.log_format == "json":  # every line JSON: the listing as the one result line
        app.emit(result.document(long=long), lambda _out: None)
    else:
        render_listing(result, long)


def render_diff(result: PointDiff) -> None:
    doc = result.document()
    lines = [
        f"{doc['desktop']}: {doc['from']['point_id']} ({doc['from']['taken_at'][:19]}Z) -> "
        f"{doc['to']['point_id']} ({doc['to']['taken_at'][:19]}Z)",
        f"{len(doc['added'])} added, {len(doc['removed'])} removed, {len(doc['changed'])} changed, "
        f"{doc['unchanged']} unchanged"
        + (f" ({doc['read']} read to compare: their digests are of two forms)" if doc["read"] else ""),
    ]
    lines += [f"+ {e.name}  ({e.size} bytes)" for e in result.diff.added]
    lines += [f"- {e.name}  ({e.size} bytes)" for e in result.diff.removed]
    lines += [
        f"M {c.name}  ({', '.join(c.what)}; {c.before.size} -> {c.after.size} bytes)" for c in result.diff.changed
    ]
    rootfs = doc["rootfs"]
    if rootfs is None:
        lines.append("root filesystem: not compared (not recorded for one of the points)")
    else:
        lines.append(
            f"root filesystem: {len(rootfs['added'])} added, {len(rootfs['removed'])} removed, "
            f"{len(rootfs['changed'])} changed"
        )
        lines += [f"+ /{p}" for p in rootfs["added"]]
        lines += [f"- /{p}" for p in rootfs["removed"]]
        lines += [f"M /{p}" for p in rootfs["changed"]]
    sys.stdout.write("\n".join(map(printable, lines)) + "\n")  # names are the desktop's: one line each


@click.command("diff", cls=DrsvcCommand)
@click.argument("point_a")
@click.argument("point_b")
@click.option("--tenant", help=TENANT_HELP)
@pass_app
def diff_command(app: App, point_a: str, point_b: str, tenant: str | None) -> None:
    """Objects added, removed and changed from POINT_A to POINT_B of one desktop.

    From the two manifests alone (digests cover data, xattrs and omap; nothing is read, except an
    object whose two digests are of different forms and which only its data can tell). After
    ransomware, diff consecutive points to find the last one before mass changes began.
    """
    from drsvc.granular.browse import diff_points
    from drsvc.granular.scope import Scope

    result = diff_points(app.services, Scope(app.catalog, tenant, "diff"), point_a, point_b)
    if app.json_output or app.log_format == "json":
        app.emit(result.document(), lambda _out: None)
    else:
        render_diff(result)
