"""drsvc report --quarter YYYYQn: the quarterly DR drill report (HTML, PDF or Markdown)."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import click
from rich.console import Console

from drsvc import hostfs
from drsvc.cli._common import App, DrsvcCommand, pass_app
from drsvc.errors import InvalidInput, PolicyError
from drsvc.units import format_bytes

_SUFFIXES = {".html": "html", ".htm": "html", ".pdf": "pdf", ".md": "md", ".markdown": "md"}


def _write(path: Path, content: bytes) -> None:
    """Write atomically: a reader (a mail hook, a browser) never sees half a report."""
    with hostfs.writing(path):  # a full or read-only disk: one line naming the file, no traceback
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        _write_tmp(fd, tmp, path, content)


def _write_tmp(fd: int, tmp: str, path: Path, content: bytes) -> None:
    try:
        with os.fdopen(fd, "wb") as f:
            hostfs.write_all(f, content)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@click.command("report", cls=DrsvcCommand)
@click.option("--quarter", required=True, metavar="YYYYQn", help="Calendar quarter (UTC), e.g. 2026Q4.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["html", "pdf", "md"]),
    default=None,
    help="Output format (default: from the -o suffix, else html).",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path, dir_okay=False, allow_dash=True),
    default=None,
    help="Write here ('-' for stdout; default: ./drsvc-dr-report-YYYYQn.FORMAT).",
)
@pass_app
def command(app: App, quarter: str, fmt: str | None, output: Path | None) -> None:
    """Write the quarterly DR drill report an auditor reads.

    Drill pass rate, RTO p50/p95/max against each policy's target, RPO achieved against each
    policy's objective, charts (RTO distribution, RTO per policy, four-quarter trend), the latest
    result per desktop, failures with their reasons, desktops not drilled, backup success and
    storage per tier, and the method. HTML is self-contained (inline CSS and SVG charts), PDF is
    that HTML laid out for print, Markdown is for tickets. A quarter without drills still renders
    and says so. With --json the gathered data is printed, and a file is written only when
    --format or -o is given.
    """
    from drsvc.report import build_report, default_filename, objectives_from_policies, parse_quarter, render

    q = parse_quarter(quarter)
    if fmt is None and output is not None and str(output) != "-":
        fmt = _SUFFIXES.get(output.suffix.lower())
        if fmt is None:
            raise InvalidInput(f"cannot tell the format from {output.name!r}: give --format html, pdf or md")
    write_file = not app.json_output or fmt is not None or output is not None
    fmt = fmt or "html"

    warnings: list[str] = []
    try:
        objectives = objectives_from_policies(app.services.policies)
    except PolicyError as e:
        # the report is about what happened; a broken policy file must not hide it from the auditor
        objectives = {}
        warnings.append(f"policies could not be loaded, RPO objectives are not judged: {e.message}")
        for line in e.details:
            warnings.append(f"  {line}")
    doc = build_report(app.catalog, q, objectives=objectives)
    doc["warnings"] = warnings + doc["warnings"]
    for line in warnings:
        app.err.print(f"drsvc: warning: {line}")

    target: str | None = None
    if write_file:
        content = render(doc, fmt)
        if output is not None and str(output) == "-":
            if app.json_output:
                raise InvalidInput("-o - and --json both want stdout: write the report to a file")
            sys.stdout.flush()
            sys.stdout.buffer.write(content)
            sys.stdout.buffer.flush()
            return
        path = output if output is not None else Path(default_filename(doc, fmt))
        _write(path, content)
        target = str(path)
        doc["output"] = {"path": target, "format": fmt, "bytes": len(content)}

    def show(out: Console) -> None:
        s = doc["summary"]
        if s["results"]:
            rto = s["rto"]
            line = (
                f"{s['passed']}/{s['results']} drill restores passed; RTO p50 {_sec(rto['p50'])}, "
                f"p95 {_sec(rto['p95'])}, max {_sec(rto['max'])}"
            )
        else:
            line = f"no drills ran in {q.name}"
        where = f"wrote {target} ({fmt}, {format_bytes(doc['output']['bytes'])})" if target else "not written"
        out.print(f"{q.name} ({doc['quarter']['first_day']} to {doc['quarter']['last_day']}): {line}; {where}")

    app.emit(doc, show)


def _sec(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} s"
