"""The report's charts as self-contained inline SVG (matplotlib, text drawn as paths: no fonts needed).

Each function takes the report document (``drsvc.report.data``) and returns an ``<svg>`` element
ready to be placed in HTML, or None when there is nothing to draw (the template then says so in
words). Output is deterministic (fixed hash salt, no date metadata) so golden files stay stable,
and element ids are prefixed per chart so several charts can share one HTML page.
"""

from __future__ import annotations

import io
import re
from collections import defaultdict
from collections.abc import Mapping
from typing import Any

from drsvc.optional import require

INK = "#1f2933"
PASS = "#2f855a"
FAIL = "#c53030"
BAR = "#4a6fa5"
GRID = "#d9dee3"

_STYLE: dict[str, Any] = {
    "svg.fonttype": "path",
    "svg.hashsalt": "drsvc-report",
    "font.family": "DejaVu Sans",
    "font.size": 8.5,
    "axes.edgecolor": "#8a949e",
    "axes.labelcolor": INK,
    "axes.titlesize": 9.5,
    "axes.titleweight": "bold",
    "axes.spines.top": False,
    "axes.spines.right": False,
    "xtick.color": INK,
    "ytick.color": INK,
    "legend.frameon": False,
    "legend.fontsize": 7.5,
}


def _svg(fig: Any, prefix: str) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None, "Type": None, "Format": None})
    text = buf.getvalue()
    text = text[text.index("<svg") :]
    text = re.sub(r"<metadata>.*?</metadata>", "", text, flags=re.S)
    # several charts share one page: keep their ids apart
    text = re.sub(r'\bid="([^"]+)"', rf'id="{prefix}-\1"', text)
    text = re.sub(r'href="#([^"]+)"', rf'href="#{prefix}-\1"', text)
    text = re.sub(r"url\(#([^)]+)\)", rf"url(#{prefix}-\1)", text)
    # scale with the page, keep the aspect ratio from the viewBox
    text = re.sub(r'<svg([^>]*?) width="[^"]*" height="[^"]*"', r'<svg\1 class="chart" role="img"', text, count=1)
    return text


def _figure(width: float, height: float) -> Any:
    figure = require("matplotlib.figure", "report", "report charts")  # heavy: only when a chart is drawn
    return figure.Figure(figsize=(width, height), layout="constrained")


def _style() -> Any:
    matplotlib = require("matplotlib", "report", "report charts")
    return matplotlib.rc_context(_STYLE)


def _rto_results(doc: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [r for r in doc["results"] if r["rto_seconds"] is not None]


def rto_histogram(doc: Mapping[str, Any]) -> str | None:
    """Distribution of measured RTOs (passed / failed stacked) with the target line(s)."""
    results = _rto_results(doc)
    if not results:
        return None
    with _style():
        fig = _figure(7.0, 2.5)
        ax = fig.add_subplot()
        targets = sorted({r["target_seconds"] for r in results})
        top = max(max(r["rto_seconds"] for r in results), max(targets)) * 1.08
        bins = [top * i / 24 for i in range(25)]
        ok = [r["rto_seconds"] for r in results if r["passed"]]
        bad = [r["rto_seconds"] for r in results if not r["passed"]]
        ax.hist([ok, bad], bins=bins, stacked=True, color=[PASS, FAIL], label=["passed", "failed"], rwidth=0.9)
        for target in targets:
            ax.axvline(target, color=INK, linestyle="--", linewidth=1.2)
            ax.annotate(
                f"target {target:g} s",
                (target, 1),
                xycoords=("data", "axes fraction"),
                xytext=(-3, -2),
                textcoords="offset points",
                ha="right",
                va="top",
                fontsize=7.5,
            )
        ax.set_xlim(0, top)
        ax.set_xlabel("RTO (seconds)")
        ax.set_ylabel("restores")
        ax.yaxis.get_major_locator().set_params(integer=True)
        ax.grid(axis="y", color=GRID, linewidth=0.6)
        ax.set_axisbelow(True)
        ax.set_title("RTO distribution of drill restores")
        ax.legend(loc="upper left")
        return _svg(fig, "hist")


def rto_by_policy(doc: Mapping[str, Any]) -> str | None:
    """RTO per policy: a box plot (with every restore as a dot) and each policy's target."""
    results = _rto_results(doc)
    if not results:
        return None
    groups: dict[str, list[float]] = defaultdict(list)
    targets: dict[str, float] = {}
    for r in results:
        name = r["policy"] or "(no policy)"
        groups[name].append(r["rto_seconds"])
        targets[name] = max(targets.get(name, 0.0), r["target_seconds"])
    names = sorted(groups)
    with _style():
        fig = _figure(3.45, 2.6)
        ax = fig.add_subplot()
        positions = list(range(1, len(names) + 1))
        ax.boxplot(
            [groups[n] for n in names],
            positions=positions,
            widths=0.5,
            showfliers=False,
            medianprops={"color": BAR, "linewidth": 1.5},
            boxprops={"color": INK},
            whiskerprops={"color": INK},
            capprops={"color": INK},
        )
        for pos, name in zip(positions, names, strict=True):
            values = groups[name]
            offsets = [((i % 7) - 3) * 0.035 for i in range(len(values))]
            ax.scatter([pos + o for o in offsets], values, s=7, color=BAR, alpha=0.6, zorder=3, linewidths=0)
            ax.hlines(targets[name], pos - 0.35, pos + 0.35, colors=FAIL, linestyles="--", linewidth=1.2, zorder=4)
        ax.set_xticks(positions, names, rotation=20 if len(names) > 3 else 0)
        ax.set_ylim(0, max(max(max(v) for v in groups.values()), max(targets.values())) * 1.12)
        ax.set_ylabel("RTO (seconds)")
        ax.grid(axis="y", color=GRID, linewidth=0.6)
        ax.set_axisbelow(True)
        ax.set_title("RTO per policy (dashed: target)")
        return _svg(fig, "policy")


def trend(doc: Mapping[str, Any]) -> str | None:
    """p95 RTO (bars) and pass rate (line) over the last quarters."""
    rows = doc["trend"]
    if not any(row["results"] for row in rows):
        return None
    with _style():
        fig = _figure(3.45, 2.75)
        ax = fig.add_subplot()
        labels = [row["quarter"] for row in rows]
        xs = list(range(len(rows)))
        p95 = [row["rto_p95"] or 0.0 for row in rows]
        ax.bar(xs, p95, color=BAR, width=0.55, label="RTO p95 (s)")
        for x, row in zip(xs, rows, strict=True):
            if not row["results"]:
                ax.annotate("no drills", (x, 0), xytext=(0, 3), textcoords="offset points", ha="center", fontsize=7)
        targets = doc["summary"]["targets"] or sorted({t for p in doc["policies"] for t in p["target_seconds"]})
        if targets:
            ax.axhline(max(targets), color=INK, linestyle="--", linewidth=1.0, label=f"target {max(targets):g} s")
        ax.set_xticks(xs, labels)
        ax.set_ylabel("RTO p95 (seconds)")
        ax.set_ylim(0, max([*p95, *(targets or [1.0])]) * 1.25)
        ax.grid(axis="y", color=GRID, linewidth=0.6)
        ax.set_axisbelow(True)
        rate_ax = ax.twinx()
        rate_ax.spines["right"].set_visible(True)
        points = [(x, row["pass_rate"] * 100) for x, row in zip(xs, rows, strict=True) if row["pass_rate"] is not None]
        rate_ax.plot([p[0] for p in points], [p[1] for p in points], color=PASS, marker="o", label="pass rate (%)")
        rate_ax.set_ylim(0, 105)
        rate_ax.set_ylabel("pass rate (%)")
        handles = ax.get_legend_handles_labels()
        more = rate_ax.get_legend_handles_labels()
        fig.legend(handles[0] + more[0], handles[1] + more[1], loc="outside lower center", ncols=3, fontsize=6.5)
        ax.set_title("Trend: last four quarters")
        return _svg(fig, "trend")


def all_charts(doc: Mapping[str, Any]) -> dict[str, str | None]:
    """Every chart of the report by name (``histogram``, ``by_policy``, ``trend``)."""
    return {"histogram": rto_histogram(doc), "by_policy": rto_by_policy(doc), "trend": trend(doc)}
