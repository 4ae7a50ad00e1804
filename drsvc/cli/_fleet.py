"""What restore storms and site recoveries print: progress lines and the fleet table."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from drsvc.admission import Limits
from drsvc.cli._common import App, shown
from drsvc.storm import FleetItem, FleetReport


def limits_of(app: App, no_admission: bool) -> Limits | None:
    """The admission limits of the config's ``[recovery]`` section (None: everything at once)."""
    if no_admission:
        return None
    r = app.config.recovery
    return Limits(downloads=r.downloads, ceph_writes=r.ceph_writes, criu_per_host=r.criu_per_host)


def progress_printer(app: App, total: int) -> Any:
    """One line per desktop as it starts and as it is up (or not), with the elapsed time."""
    err = app.err
    done = [0]

    def count() -> str:
        return f"[{done[0]}/{total}]" if total else f"[{done[0]} done]"

    def on_event(kind: str, **f: Any) -> None:
        item: FleetItem | None = f.get("item")
        if item is None:
            return
        stamp = f"[dim]{f.get('elapsed', 0.0):7.1f}s[/]"
        if kind == "started":
            err.print(f"{stamp} {item.rank:>3}. {item.desktop} restoring from {item.point_id} ({item.tier})")
        elif kind == "finished":
            done[0] += 1
            if item.up:
                mark = "[green]✓[/]" if item.status == "ok" else "[yellow]✓ over target[/]"
                err.print(
                    f"{stamp} {mark} {item.desktop} up after {item.up_seconds:.1f} s (restore {item.rto_seconds:.1f} s)"
                    f" {count()}"
                )
            else:
                err.print(f"{stamp} [red]✗[/] {item.desktop} {item.status}: {shown(item.error)} {count()}")

    return on_event


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def render(report: FleetReport, out: Console) -> None:
    """The fleet table: per desktop its order, point, time up, RTO vs target; then the fleet's times."""
    doc = report.document()
    what = {"storm": "restore storm", "recover": f"site recovery from {report.site}", "drill": "site drill"}
    title = what.get(report.kind, report.kind) + (" (plan only)" if report.dry_run else "")
    out.print(
        f"[bold]{title}[/]: {len(report.items)} desktop(s), {report.parallel} in flight, admission "
        + (", ".join(f"{k} {v}" for k, v in doc["admission"].items() if k != "waited_seconds") or "off")
    )
    for key, value in report.prepare.items():
        out.print(f"  {key}: {value}")
    table = Table(box=None, pad_edge=False)
    for col in ("#", "DESKTOP", "PRIO", "POINT", "TIER", "STATUS", "UP AT (s)", "RTO (s)", "TARGET", "NOTE"):
        table.add_column(col, justify="right" if col in ("#", "PRIO", "UP AT (s)", "RTO (s)", "TARGET") else "left")
    for i in report.items:
        status = {"ok": "[green]up[/]", "objective_missed": "[yellow]up, late[/]", "failed": "[red]failed[/]"}.get(
            i.status, i.status
        )
        table.add_row(
            str(i.rank),
            i.desktop + (f" → {i.clone}" if i.clone else ""),
            str(i.priority),
            i.point_id or "-",
            i.tier or "-",
            status,
            _s(i.up_seconds),
            _s(i.rto_seconds),
            f"{i.target_seconds:.0f}",
            shown((i.error or "")[:160]),  # quotes what failed: names from the desktop
        )
    out.print(table)
    if report.dry_run:
        return
    s = doc["summary"]
    out.print(
        f"up: {s['up']}/{s['desktops'] - s['skipped']} ({s['within_target']} within target, {s['failed']} failed, "
        f"{s['skipped']} skipped); time to first up {_s(s['first_up_seconds'])} s, 50 % {_s(s['p50_up_seconds'])} s, "
        f"95 % {_s(s['p95_up_seconds'])} s, all {_s(s['all_up_seconds'])} s (total {s['seconds']:.1f} s)"
    )
    waited = doc["admission"].get("waited_seconds") if doc["admission"] else None
    if waited:
        out.print("queued for: " + ", ".join(f"{k} {v:.1f} s" for k, v in sorted(waited.items())))
