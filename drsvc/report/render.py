"""Lay the report document out as self-contained HTML, PDF (from that HTML) or Markdown.

``render(doc, fmt)`` takes what ``build_report`` gathered and returns the file's bytes; it
computes no statistic of its own (beyond wording), so the three formats and ``--json`` always
agree. HTML carries its CSS and charts inline (SVG) and fetches nothing. PDF is the same HTML
laid out by WeasyPrint (a Python library on top of Pango: no browser, no network). Markdown is
for tickets: the same tables and findings, charts replaced by a note.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from drsvc import clock
from drsvc.errors import InvalidInput, MissingDependency
from drsvc.optional import require
from drsvc.printable import printable
from drsvc.units import format_bytes

if TYPE_CHECKING:
    import jinja2

__all__ = ["FORMATS", "default_filename", "findings", "render", "render_html", "render_markdown", "render_pdf"]

FORMATS = ("html", "pdf", "md")
TEMPLATES = Path(__file__).resolve().parent / "templates"


# --------------------------------------------------------------------------------------------
# wording shared by every format


def seconds(value: float | None) -> str:
    """RTO-scale durations: ``12.3 s``; ``-`` when not measured."""
    if value is None:
        return "-"
    if value < 60:
        return f"{value:.1f} s"
    return span(value)


def span(value: float | None) -> str:
    """RPO-scale durations in words an auditor reads: ``45 s``, ``12 min``, ``3 h 5 min``, ``2 d 4 h``."""
    if value is None:
        return "-"
    s = round(value)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        m, r = divmod(s, 60)
        return f"{m} min" + (f" {r} s" if r else "")
    if s < 86400:
        h, r = divmod(s, 3600)
        return f"{h} h" + (f" {r // 60} min" if r // 60 else "")
    d, r = divmod(s, 86400)
    return f"{d} d" + (f" {r // 3600} h" if r // 3600 else "")


def percent(value: float | None) -> str:
    """``71.4 %``; never rounds a shortfall up to ``100 %`` (or a few failures down to ``0 %``)."""
    if value is None:
        return "-"
    pct = value * 100
    if pct in (0, 100):
        return f"{pct:.0f} %"
    for digits in (1, 2):
        text = f"{pct:.{digits}f}"
        if text not in ("0.0", "0.00", "100.0", "100.00"):
            return (text.removesuffix(".0") if digits == 1 else text) + " %"
    return "> 99.99 %" if pct > 50 else "< 0.01 %"


def when(value: str | None) -> str:
    """``2026-11-27 17:30 UTC`` from the catalog's ISO text."""
    if not value:
        return "-"
    return clock.from_iso(value).strftime("%Y-%m-%d %H:%M UTC")


def when_short(value: str | None) -> str:
    """``2026-11-27 17:30`` for table cells under a "(UTC)" heading."""
    return clock.from_iso(value).strftime("%Y-%m-%d %H:%M") if value else "-"


def day(value: str | None) -> str:
    return clock.from_iso(value).strftime("%Y-%m-%d") if value else "-"


def target(value: float | None) -> str:
    """An RTO target as a policy states it: ``30 s``, ``5 min``."""
    if value is None:
        return "-"
    return f"{value:g} s" if value < 120 else span(value)


def targets(values: list[float]) -> str:
    return " / ".join(target(t) for t in values) or "-"


def findings(doc: Mapping[str, Any]) -> list[str]:
    """The executive summary in sentences (the same in every format), most important first."""
    s = doc["summary"]
    q = doc["quarter"]
    lines = []
    if not s["results"]:
        lines.append(
            f"No drills ran in {q['name']}: no desktop was restored into the drill sandbox between "
            f"{q['first_day']} and {q['last_day']}, so recoverability was not demonstrated this quarter."
        )
    else:
        rto = s["rto"]
        lines.append(
            f"{s['passed']} of {s['results']} drill restores passed ({percent(s['pass_rate'])}) "
            f"in {s['drills']} drill run{'s' if s['drills'] != 1 else ''}, "
            f"covering {s['desktops_drilled']} of {s['desktops']} desktops."
        )
        if rto["count"]:
            within = s["within_target"]
            lines.append(
                f"RTO p50 {seconds(rto['p50'])}, p95 {seconds(rto['p95'])}, max {seconds(rto['max'])} against "
                f"a target of {targets(s['targets'])}: {within} of {s['results']} restores "
                f"({percent(s['within_target_rate'])}) met their target."
            )
        if s["failed"]:
            lines.append(f"{s['failed']} restore{'s' if s['failed'] != 1 else ''} failed; reasons are listed below.")
    for p in doc["policies"]:
        if p["rpo_met"] is False:
            lines.append(
                f"RPO missed for policy {p['policy']}: up to {span(p['rpo_achieved_seconds'])} without a recovery "
                f"point (desktop {p['rpo_worst_desktop']}) against an objective of {span(p['rpo_objective_seconds'])}."
            )
    met = [p["policy"] for p in doc["policies"] if p["rpo_met"] is True]
    if met:
        lines.append(f"RPO objective met for: {', '.join(met)}.")
    b = doc["backups"]
    if b["points_total"]:
        lines.append(
            f"Backups: {percent(b['point_success_rate'])} of {b['points_total']} recovery points completed; "
            f"{b['jobs']['ok']} of {b['jobs_total']} backup jobs finished without error."
        )
    else:
        lines.append("Backups: no recovery point was taken in this quarter.")
    if s["desktops_never_drilled"]:
        n = s["desktops_never_drilled"]
        lines.append(f"{n} of {s['desktops']} desktops {'was' if n == 1 else 'were'} not drilled this quarter.")
    return lines


def verdict(doc: Mapping[str, Any]) -> tuple[str, str]:
    """(css class, one line) for the banner: no drills, all passed, or attention needed."""
    s = doc["summary"]
    if not s["results"]:
        return "none", "No drills ran in this quarter"
    rpo_missed = any(p["rpo_met"] is False for p in doc["policies"])
    if s["failed"] or rpo_missed:
        return "fail", "Attention: " + (
            f"{s['failed']} failed drill restore{'s' if s['failed'] != 1 else ''}" if s["failed"] else "RPO missed"
        )
    return "pass", "All drill restores passed"


# --------------------------------------------------------------------------------------------
# formats


def _md_cell(value: Any) -> str:
    # errors hold names from desktops: a CR (a line end to CommonMark) or an escape would break
    # out of the table row as surely as a newline
    text = "-" if value is None or value == "" else str(value)
    return printable(text.replace("\n", " ")).replace("|", "\\|")


def _environment(*, html: bool) -> jinja2.Environment:
    jinja2 = require("jinja2", "report", "rendering the report as HTML, PDF or Markdown")
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=html,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters.update(
        seconds=seconds,
        span=span,
        percent=percent,
        when=when,
        when_short=when_short,
        day=day,
        target=target,
        targets=targets,
        bytes=format_bytes,
        cell=_md_cell,
    )
    return env


def _context(doc: Mapping[str, Any]) -> dict[str, Any]:
    css, line = verdict(doc)
    return {"d": doc, "findings": findings(doc), "verdict_class": css, "verdict": line}


def render_html(doc: Mapping[str, Any]) -> str:
    env = _environment(html=True)  # first: it names the extra when Jinja2 is missing

    from markupsafe import Markup  # installed with Jinja2

    from drsvc.report.charts import all_charts

    css = (TEMPLATES / "report.css").read_text(encoding="utf-8")
    charts = {k: (Markup(v) if v else None) for k, v in all_charts(doc).items()}
    return env.get_template("report.html.j2").render(**_context(doc), css=Markup(css), charts=charts)


def render_markdown(doc: Mapping[str, Any]) -> str:
    return _environment(html=False).get_template("report.md.j2").render(**_context(doc))


def render_pdf(doc: Mapping[str, Any], html: str | None = None) -> bytes:
    """The HTML edition laid out for print by WeasyPrint."""
    try:
        import weasyprint
    except ImportError as e:  # the Python package missing, or Pango (a Debian library) missing
        raise MissingDependency(
            f"PDF reports need WeasyPrint and Pango ({e}): pip install 'drsvc[report]'; "
            "apt-get install -y libpango-1.0-0 libpangoft2-1.0-0 fonts-dejavu-core",
        ) from None
    except OSError as e:
        raise MissingDependency(
            f"PDF reports need Pango ({e}): apt-get install -y libpango-1.0-0 libpangoft2-1.0-0 fonts-dejavu-core"
        ) from None
    # WeasyPrint logs every CSS property it ignores; those are ours to fix, not the operator's to read
    logging.getLogger("weasyprint").setLevel(logging.ERROR)
    logging.getLogger("fontTools").setLevel(logging.ERROR)
    html = html if html is not None else render_html(doc)
    meta_date = clock.from_iso(doc["generated_at"]).replace(microsecond=0)
    document = weasyprint.HTML(string=html, base_url=None).render()
    document.metadata.created = meta_date.isoformat()
    document.metadata.modified = meta_date.isoformat()
    pdf = document.write_pdf()
    if not isinstance(pdf, bytes):  # pragma: no cover - write_pdf() without a target returns bytes
        raise TypeError("WeasyPrint returned no bytes")
    return pdf


def render(doc: Mapping[str, Any], fmt: str) -> bytes:
    """The report in ``fmt`` (``html``, ``pdf`` or ``md``) as the bytes of the file."""
    if fmt == "html":
        return render_html(doc).encode("utf-8")
    if fmt == "md":
        return render_markdown(doc).encode("utf-8")
    if fmt == "pdf":
        return render_pdf(doc)
    raise InvalidInput(f"unknown report format {fmt!r}: expected one of {', '.join(FORMATS)}")


def default_filename(doc: Mapping[str, Any], fmt: str) -> str:
    """``drsvc-dr-report-2026Q4.pdf``."""
    return f"drsvc-dr-report-{doc['quarter']['name']}.{fmt}"
