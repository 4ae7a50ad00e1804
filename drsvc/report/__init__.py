"""The quarterly DR drill report: gather (``data``) once, render (``render``) as HTML, PDF or Markdown.

    doc = build_report(catalog, "2026Q4", objectives=objectives_from_policies(policies))
    Path("q4.pdf").write_bytes(render(doc, "pdf"))

``doc`` is plain JSON (``drsvc --json report`` prints it); rendering computes nothing new.
"""

from __future__ import annotations

from drsvc.report.data import (
    PolicyObjectives,
    Quarter,
    build_report,
    objectives_from_policies,
    parse_quarter,
    percentile,
    rto_stats,
)
from drsvc.report.render import FORMATS, default_filename, render

__all__ = [
    "FORMATS",
    "PolicyObjectives",
    "Quarter",
    "build_report",
    "default_filename",
    "objectives_from_policies",
    "parse_quarter",
    "percentile",
    "render",
    "rto_stats",
]
