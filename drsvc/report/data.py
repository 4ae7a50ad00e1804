"""What the quarterly DR drill report says, gathered from the catalog into one JSON-able document.

``build_report(catalog, quarter, objectives=...)`` reads the quarter's drills and their results,
backup jobs and points, tier storage and the desktop inventory, and computes every number the
report prints, so rendering (``drsvc.report.render``) only lays them out and ``--json`` shows
exactly what the pages show.

Definitions an auditor may ask about (the report's Method section states them too):

* a drill belongs to the quarter it *started* in; times are UTC; the quarter is
  ``[first day 00:00, first day of the next quarter 00:00)``;
* **pass rate** = drill results marked passed / all drill results (a result is one desktop
  restored in one drill);
* **RTO percentiles** use the nearest-rank method over the results that measured an RTO: p95 is
  the smallest measured RTO that at least 95 % of the restores met (always an observed value);
* **RTO target** is the one recorded with each result (the policy's ``objectives.rto`` when the
  drill ran), so a policy changed mid-quarter is judged by what applied at the time;
* **RPO achieved** for a policy is the longest interval, for any one desktop, between consecutive
  complete recovery points of that policy, counting from the last point before the quarter and up
  to the end of the quarter (or now, or when the desktop disappeared): the most data that desktop
  would have lost at the worst moment. It is compared with the policy's ``objectives.rpo``.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from drsvc import __version__, clock
from drsvc.catalog import Catalog
from drsvc.errors import InvalidInput

__all__ = [
    "PHASES",
    "SCHEMA_VERSION",
    "PolicyObjectives",
    "Quarter",
    "build_report",
    "parse_quarter",
    "percentile",
    "rto_stats",
]

SCHEMA_VERSION = 1
PHASES = ("plan", "fetch", "volume", "container", "health")
TREND_QUARTERS = 4

_QUARTER_RE = re.compile(r"^\s*(\d{4})\s*-?\s*[Qq]([1-4])\s*$")


# --------------------------------------------------------------------------------------------
# quarters


@dataclass(frozen=True, order=True)
class Quarter:
    """A calendar quarter in UTC: ``start`` inclusive, ``end`` exclusive."""

    year: int
    number: int

    @property
    def name(self) -> str:
        return f"{self.year}Q{self.number}"

    @property
    def start(self) -> datetime:
        return datetime(self.year, 3 * self.number - 2, 1, tzinfo=UTC)

    @property
    def end(self) -> datetime:
        return self.next().start

    @property
    def last_day(self) -> datetime:
        return self.end - timedelta(days=1)

    def next(self) -> Quarter:
        return Quarter(self.year + 1, 1) if self.number == 4 else Quarter(self.year, self.number + 1)

    def previous(self) -> Quarter:
        return Quarter(self.year - 1, 4) if self.number == 1 else Quarter(self.year, self.number - 1)

    def __str__(self) -> str:
        return self.name


def parse_quarter(text: str) -> Quarter:
    """``"2026Q4"`` (also ``2026q4``, ``2026-Q4``) -> Quarter; anything else is invalid input (exit 2)."""
    m = _QUARTER_RE.match(text or "")
    if m is None or not 1970 <= int(m.group(1)) <= 9998:
        raise InvalidInput(f"malformed quarter {text!r}: expected YYYYQn with n from 1 to 4, e.g. 2026Q4")
    return Quarter(int(m.group(1)), int(m.group(2)))


# --------------------------------------------------------------------------------------------
# statistics


def percentile(values: Iterable[float], p: float) -> float | None:
    """Nearest-rank percentile (``p`` in (0, 100]): an observed value, or None without values."""
    ordered = sorted(values)
    if not ordered:
        return None
    if not 0 < p <= 100:
        raise ValueError(f"percentile must be in (0, 100], got {p}")
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def rto_stats(values: Iterable[float]) -> dict[str, Any]:
    """``count``, ``p50``, ``p95``, ``max``, ``mean`` of RTOs in seconds (None when empty)."""
    vals = [float(v) for v in values]
    return {
        "count": len(vals),
        "p50": percentile(vals, 50),
        "p95": percentile(vals, 95),
        "max": max(vals) if vals else None,
        "mean": sum(vals) / len(vals) if vals else None,
    }


def _rate(part: int, whole: int) -> float | None:
    return part / whole if whole else None


# --------------------------------------------------------------------------------------------
# gathering


@dataclass(frozen=True)
class PolicyObjectives:
    """What a policy promised: RPO (None = not tracked) and RTO, in seconds."""

    rpo_seconds: float | None
    rto_seconds: float | None


def objectives_from_policies(policies: Iterable[Any]) -> dict[str, PolicyObjectives]:
    """Objectives by policy name from ``drsvc.policy.Policy`` models (or anything shaped like them)."""
    found = {}
    for policy in policies:
        rpo = policy.objectives.rpo
        rto = policy.objectives.rto
        found[policy.name] = PolicyObjectives(
            rpo.total_seconds() if rpo is not None else None, rto.total_seconds() if rto is not None else None
        )
    return found


def _iso(moment: datetime) -> str:
    return clock.to_iso(moment)


def _results(catalog: Catalog, start: datetime, end: datetime) -> list[dict[str, Any]]:
    """Every drill result of drills started in [start, end), oldest first, with its policy."""
    rows = catalog.query(
        "SELECT r.*, d.started_at AS drill_started_at, d.policy AS drill_policy, p.policy AS point_policy, "
        "p.taken_at AS point_taken_at "
        "FROM drill_results r JOIN drills d ON d.id = r.drill_id LEFT JOIN points p ON p.id = r.point_id "
        "WHERE d.started_at >= ? AND d.started_at < ? ORDER BY d.started_at, r.drill_id, r.desktop_id",
        [_iso(start), _iso(end)],
    )
    results = []
    for row in rows:
        try:
            phases = json.loads(row["phases"] or "{}")
        except ValueError:
            phases = {}
        rto = row["rto_seconds"]
        target = row["target_seconds"]
        result = {
            "drill_id": row["drill_id"],
            "started_at": row["drill_started_at"],
            "desktop": row["desktop_id"],
            # the policy that took the point restored; a drill of named desktops has no policy
            "policy": row["point_policy"] or row["drill_policy"],
            "point_id": row["point_id"],
            "point_taken_at": row["point_taken_at"],
            "tier": row["tier"],
            "rto_seconds": rto,
            "target_seconds": target,
            "within_target": None if rto is None else rto <= target,
            "rpo_seconds": row["rpo_seconds"],
            "phases": {k: float(v) for k, v in phases.items() if isinstance(v, int | float)},
            "verified": bool(row["verified"]),
            "passed": bool(row["passed"]),
            "error": row["error"],
        }
        result["reasons"] = [] if result["passed"] else _failure_reasons(result)
        results.append(result)
    return results


def _failure_reasons(result: Mapping[str, Any]) -> list[str]:
    """Why a result failed, in words: the recorded error first, then what the numbers show."""
    reasons = []
    if result["error"]:
        reasons.append(str(result["error"]))
    if result["rto_seconds"] is None:
        if not result["error"]:
            reasons.append("restore did not finish (no RTO measured)")
    elif not result["within_target"] and "target" not in (result["error"] or ""):
        reasons.append(f"RTO {result['rto_seconds']:.1f} s over the {result['target_seconds']:g} s target")
    if not result["verified"] and result["rto_seconds"] is not None:
        reasons.append("verification failed (data hashes or process continuity)")
    return reasons or ["marked failed by the drill (no reason recorded)"]


def _summary(results: list[dict[str, Any]]) -> dict[str, Any]:
    rtos = [r["rto_seconds"] for r in results if r["rto_seconds"] is not None]
    passed = sum(r["passed"] for r in results)
    targets = sorted({r["target_seconds"] for r in results})
    within = sum(bool(r["within_target"]) for r in results)
    return {
        "results": len(results),
        "passed": passed,
        "failed": len(results) - passed,
        "pass_rate": _rate(passed, len(results)),
        "rto": rto_stats(rtos),
        "targets": targets,
        "within_target": within,
        "within_target_rate": _rate(within, len(results)),
        "verified": sum(r["verified"] for r in results),
    }


def _rpo_achieved(catalog: Catalog, start: datetime, end: datetime, now: datetime) -> dict[tuple[str, str], float]:
    """Longest gap between consecutive complete points per (policy, desktop), seconds (see module doc).

    One query, index seeks only (no scan of older history): the points taken in the quarter, plus
    each desktop's last point before it, gaps by a window function; then the tail from the last
    point to the window's end. A policy whose only point is the one before the quarter while the
    desktop was backed up by another policy since (it changed policy) is not judged.
    """
    ok = "('complete', 'expired')"
    rows = catalog.query(
        f"""
        WITH alive AS (
            SELECT id, gone_since FROM desktops
            WHERE first_seen < :end AND (gone_since IS NULL OR gone_since >= :start)
        ),
        pts AS (
            SELECT desktop_id, policy, taken_at FROM points
            WHERE status IN {ok} AND policy IS NOT NULL AND taken_at >= :start AND taken_at < :end
            UNION ALL
            SELECT x.desktop_id, x.policy, x.taken_at FROM alive a JOIN points x ON x.id = (
                SELECT y.id FROM points y
                WHERE y.desktop_id = a.id AND y.status IN {ok} AND y.policy IS NOT NULL AND y.taken_at < :start
                ORDER BY y.taken_at DESC LIMIT 1)
        ),
        gaps AS (
            SELECT desktop_id, policy, taken_at,
                   LAG(taken_at) OVER (PARTITION BY desktop_id, policy ORDER BY taken_at) AS prev
            FROM pts
        )
        SELECT g.policy, g.desktop_id,
               MAX((julianday(g.taken_at) - julianday(g.prev)) * 86400.0) AS max_gap,
               MAX(g.taken_at) AS last_taken, d.gone_since
        FROM gaps g LEFT JOIN desktops d ON d.id = g.desktop_id
        GROUP BY g.policy, g.desktop_id
        """,
        {"start": _iso(start), "end": _iso(end)},
    )
    desktop_last: dict[str, str] = {}
    for row in rows:
        desktop_last[row["desktop_id"]] = max(desktop_last.get(row["desktop_id"], ""), row["last_taken"])
    horizon = min(end, now)
    achieved: dict[tuple[str, str], float] = {}
    for row in rows:
        superseded = row["last_taken"] < desktop_last[row["desktop_id"]]
        if superseded and row["last_taken"] < _iso(start):
            continue  # the desktop moved to another policy before the quarter
        gap = round(row["max_gap"] or 0.0, 3)  # julianday arithmetic: 3600 s may come back as 3599.9999
        if not superseded:  # still this policy's desktop: the time since its last point counts too
            stop = horizon
            if row["gone_since"]:
                stop = min(stop, clock.from_iso(row["gone_since"]))
            gap = max(gap, round((stop - clock.from_iso(row["last_taken"])).total_seconds(), 3))
        if horizon > start:
            achieved[(row["policy"], row["desktop_id"])] = max(gap, 0.0)
    return achieved


def _policies(
    results: list[dict[str, Any]],
    rpo: dict[tuple[str, str], float],
    objectives: Mapping[str, PolicyObjectives],
) -> list[dict[str, Any]]:
    by_policy: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in results:
        by_policy[r["policy"] or ""].append(r)
    worst: dict[str, tuple[float, str]] = {}
    for (policy, desktop), seconds in rpo.items():
        if policy not in worst or seconds > worst[policy][0]:
            worst[policy] = (seconds, desktop)
    names = sorted(set(by_policy) | set(worst) | set(objectives), key=lambda n: (n == "", n))
    docs = []
    for name in names:
        rs = by_policy.get(name, [])
        obj = objectives.get(name)
        rpo_objective = obj.rpo_seconds if obj else None
        gap: float | None = worst[name][0] if name in worst else None
        gap_desktop = worst[name][1] if name in worst else None
        rpo_met = None if rpo_objective is None or gap is None else gap <= rpo_objective
        targets = sorted({r["target_seconds"] for r in rs})
        if not targets and obj and obj.rto_seconds is not None:
            targets = [obj.rto_seconds]
        ages = [r["rpo_seconds"] for r in rs if r["rpo_seconds"] is not None]
        docs.append(
            {
                "policy": name or None,
                "defined": obj is not None,
                **{k: v for k, v in _summary(rs).items() if k != "targets"},
                "target_seconds": targets,
                "rpo_objective_seconds": rpo_objective,
                "rpo_achieved_seconds": gap,
                "rpo_worst_desktop": gap_desktop,
                "rpo_met": rpo_met,
                "desktops_measured": sum(1 for (p, _d) in rpo if p == name),
                "drill_point_age_max_seconds": max(ages) if ages else None,
            }
        )
    return docs


def _latest_per_desktop(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    latest: dict[str, dict[str, Any]] = {}
    for r in results:  # oldest first: later drills overwrite
        latest[r["desktop"]] = r
    return [latest[k] for k in sorted(latest)]


def _desktops_in_quarter(catalog: Catalog, start: datetime, end: datetime) -> list[dict[str, Any]]:
    """Desktops that existed at some time during the quarter, with the policy of their latest point
    and when they were last drilled before the quarter (one grouped query, not one per desktop)."""
    s, e = _iso(start), _iso(end)
    rows = catalog.query(
        "SELECT d.id, d.tenant, d.first_seen, d.gone_since, "
        "(SELECT p.policy FROM points p WHERE p.desktop_id = d.id AND p.taken_at < :end "
        " ORDER BY p.taken_at DESC LIMIT 1) AS policy "
        "FROM desktops d WHERE d.first_seen < :end AND (d.gone_since IS NULL OR d.gone_since >= :start) "
        "ORDER BY d.id",
        {"start": s, "end": e},
    )
    before = {
        r["desktop_id"]: r["last"]
        for r in catalog.query(
            "SELECT r.desktop_id, MAX(d.started_at) AS last FROM drill_results r JOIN drills d ON d.id = r.drill_id "
            "WHERE d.started_at < ? GROUP BY r.desktop_id",
            [s],
        )
    }
    for row in rows:
        row["last_drilled_before"] = before.get(row["id"])
    return rows


def _backups(catalog: Catalog, start: datetime, end: datetime) -> dict[str, Any]:
    s, e = _iso(start), _iso(end)
    jobs = Counter(
        {
            r["status"]: r["n"]
            for r in catalog.query(
                "SELECT status, COUNT(*) AS n FROM jobs WHERE kind = 'backup' AND started_at >= ? AND started_at < ? "
                "GROUP BY status",
                [s, e],
            )
        }
    )
    points = Counter(
        {
            r["status"]: r["n"]
            for r in catalog.query(
                "SELECT status, COUNT(*) AS n FROM points WHERE taken_at >= ? AND taken_at < ? GROUP BY status",
                [s, e],
            )
        }
    )
    # an expired point was complete (retention dropped it later): it counts as a success
    points_ok = points["complete"] + points["expired"]
    points_total = points_ok + points["failed"] + points["pending"]
    finished_jobs = jobs["ok"] + jobs["partial"] + jobs["failed"] + jobs["interrupted"]
    return {
        "jobs": {k: jobs[k] for k in ("ok", "partial", "failed", "interrupted", "running")},
        "jobs_total": sum(jobs.values()),
        "job_success_rate": _rate(jobs["ok"], finished_jobs),
        "points": {k: points[k] for k in ("complete", "expired", "failed", "pending")},
        "points_total": points_total,
        "point_success_rate": _rate(points_ok, points_total),
    }


def _storage(catalog: Catalog, start: datetime, end: datetime) -> list[dict[str, Any]]:
    rows = {
        r["tier"]: r
        for r in catalog.query(
            "SELECT tier, COUNT(*) AS copies, COALESCE(SUM(stored_bytes), 0) AS stored_bytes FROM point_tiers "
            "WHERE added_at >= ? AND added_at < ? GROUP BY tier",
            [_iso(start), _iso(end)],
        )
    }
    return [
        {
            "tier": tier,
            "copies": rows[tier]["copies"] if tier in rows else 0,
            "stored_bytes": rows[tier]["stored_bytes"] if tier in rows else 0,
        }
        for tier in ("hot", "cold")
    ]


def _drills(catalog: Catalog, start: datetime, end: datetime) -> list[dict[str, Any]]:
    return catalog.query(
        "SELECT d.id, d.started_at, d.finished_at, d.policy, d.selection, d.parallel, d.status, "
        "COUNT(r.desktop_id) AS results, COALESCE(SUM(r.passed), 0) AS passed "
        "FROM drills d LEFT JOIN drill_results r ON r.drill_id = d.id "
        "WHERE d.started_at >= ? AND d.started_at < ? GROUP BY d.id ORDER BY d.started_at",
        [_iso(start), _iso(end)],
    )


def _site_recoveries(catalog: Catalog, start: datetime, end: datetime) -> list[dict[str, Any]]:
    """Site recoveries, their drills and restore storms of the quarter, with the fleet's times."""
    runs = catalog.query(
        "SELECT id, kind, site, started_at, finished_at, selection, parallel, status, summary "
        "FROM site_recoveries WHERE started_at >= ? AND started_at < ? ORDER BY started_at",
        [_iso(start), _iso(end)],
    )
    out = []
    for run in runs:
        summary = json.loads(run.pop("summary") or "{}")
        failures = catalog.query(
            "SELECT desktop_id, status, error FROM site_recovery_desktops WHERE recovery_id = ? "
            "AND status NOT IN ('ok', 'skipped') ORDER BY rank",
            [run["id"]],
        )
        out.append(
            {
                **run,
                "desktops": summary.get("desktops", 0),
                "up": summary.get("up", 0),
                "within_target": summary.get("within_target", 0),
                "first_up_seconds": summary.get("first_up_seconds"),
                "p50_up_seconds": summary.get("p50_up_seconds"),
                "p95_up_seconds": summary.get("p95_up_seconds"),
                "all_up_seconds": summary.get("all_up_seconds"),
                "failures": failures,
            }
        )
    return out


def _phases(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    names = list(PHASES) + sorted({k for r in results for k in r["phases"]} - set(PHASES))
    docs = []
    for name in names:
        values = [r["phases"][name] for r in results if name in r["phases"]]
        docs.append({"phase": name, "count": len(values), "p50": percentile(values, 50), "p95": percentile(values, 95)})
    return docs


def build_report(
    catalog: Catalog,
    quarter: Quarter | str,
    *,
    objectives: Mapping[str, PolicyObjectives] | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """The quarter's report document (plain JSON types): everything ``render`` prints.

    ``objectives`` are the policies' RPO/RTO by name (``objectives_from_policies``); without them
    RPO achieved is still measured but not judged. ``now`` fixes the generation time (tests).
    """
    if isinstance(quarter, str):
        quarter = parse_quarter(quarter)
    now = now or clock.now()
    objectives = objectives or {}
    start, end = quarter.start, quarter.end

    results = _results(catalog, start, end)
    summary = _summary(results)
    drills = _drills(catalog, start, end)
    summary["drills"] = len(drills)
    latest = _latest_per_desktop(results)
    drilled = {r["desktop"] for r in results}
    inventory = _desktops_in_quarter(catalog, start, end)
    never = [
        {
            "desktop": d["id"],
            "tenant": d["tenant"],
            "policy": d["policy"],
            "gone_since": d["gone_since"],
            "last_drilled_before": d["last_drilled_before"],
        }
        for d in inventory
        if d["id"] not in drilled
    ]
    summary["desktops"] = len(inventory)
    summary["desktops_drilled"] = len(drilled)
    summary["desktops_never_drilled"] = len(never)
    rpo = _rpo_achieved(catalog, start, end, now)

    trend = []
    q = quarter
    for _ in range(TREND_QUARTERS - 1):
        q = q.previous()
    for _ in range(TREND_QUARTERS):
        qs = _summary(results if q == quarter else _results(catalog, q.start, q.end))
        trend.append(
            {
                "quarter": q.name,
                "results": qs["results"],
                "pass_rate": qs["pass_rate"],
                "rto_p95": qs["rto"]["p95"],
                "rto_max": qs["rto"]["max"],
            }
        )
        q = q.next()

    failures = [r for r in results if not r["passed"]]
    return {
        "schema_version": SCHEMA_VERSION,
        "quarter": {
            "name": quarter.name,
            "start": _iso(start),
            "end": _iso(end),
            "first_day": start.date().isoformat(),
            "last_day": quarter.last_day.date().isoformat(),
            "in_progress": start <= now < end,
            "future": now < start,
        },
        "generated_at": _iso(now),
        "catalog": catalog.path,
        "drsvc_version": __version__,
        "warnings": [],
        "summary": summary,
        "policies": _policies(results, rpo, objectives),
        "drills": drills,
        "site_recoveries": _site_recoveries(catalog, start, end),
        "desktops": latest,
        "failures": failures,
        "never_drilled": never,
        "backups": _backups(catalog, start, end),
        "storage": _storage(catalog, start, end),
        "phases": _phases(results),
        "trend": trend,
        "results": results,
        "rpo_by_desktop": [
            {"policy": p, "desktop": d, "rpo_achieved_seconds": gap} for (p, d), gap in sorted(rpo.items())
        ],
    }
