"""Fleet health: is every desktop inside its objectives, and what is going wrong (catalog only).

One reading of the catalog and the policies, shared by ``drsvc status`` (a screen, and a
Nagios/Icinga check: exit 5 when an objective is missed), the Prometheus metrics and the
notifications, so the three never disagree. It reads aggregates (one row per desktop and policy,
not per point) and touches no store, so it is cheap enough for every scrape at fleet scale.

*Objectives* are the policies' RPO (age of the newest complete point, per desktop and policy; a
desktop with no point yet counts from when drsvc first saw it) and RTO (the last drill of a
policy, every result within its target). Everything else (consecutive failures, tier lag, verify
failures, interrupted restores) is a *problem*: reported, alerted on, but not an objective.
"""

from __future__ import annotations

import json
import sqlite3
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from datetime import datetime, timedelta
from typing import Any

from drsvc import clock, store_params
from drsvc.catalog import Catalog
from drsvc.config import Config
from drsvc.policy import Policy, PolicySet
from drsvc.units import format_duration

__all__ = ["DesktopHealth", "FleetHealth", "PolicyHealth", "read_health"]

# A restore still 'running' this long after it started has lost its process (a restore that works
# ends within minutes: the RTO target is seconds). Replaced by the catalog's own record of
# interrupted restores where it has one (status 'interrupted').
STALE_RESTORE = timedelta(hours=1)

# A newest point stamped further ahead of this host's clock than skew between hosts explains: the
# clock stepped back after it was taken. Its age is negative, so the RPO would look met (and the
# failures since would not count) for as long as the step: said as a problem.
AHEAD_SLACK = timedelta(minutes=5)


@dataclass
class DesktopHealth:
    """One desktop under one policy."""

    desktop: str
    policy: str
    rpo_seconds: float | None
    last_point: str | None = None
    last_point_at: datetime | None = None
    age_seconds: float | None = None  # since the last point, else since drsvc first saw the desktop
    rpo_missed: bool = False
    ahead_seconds: float | None = None  # the newest point is stamped this far ahead of the clock
    consecutive_failures: int = 0
    last_error: str | None = None
    tier_lag: int = 0  # points due for the cold tier that are not there yet
    last_freeze_seconds: float | None = None  # the last point's freeze window
    last_drill_at: datetime | None = None
    last_drill_passed: bool | None = None
    last_rto_seconds: float | None = None

    def document(self) -> dict[str, Any]:
        doc = _shallow(self)  # every field is a scalar: asdict's deep copy cost 0.3 s at 10,000 desktops
        for key in ("last_point_at", "last_drill_at"):
            doc[key] = clock.to_iso(doc[key]) if doc[key] else None
        return doc


@dataclass
class PolicyHealth:
    """One policy: its objectives, its schedule's state and its last drill and verification."""

    policy: str
    rpo_seconds: float | None
    rto_seconds: float
    desktops: int = 0
    rpo_missed: int = 0
    next_backup: datetime | None = None
    retry_at: datetime | None = None
    attempts: int = 0
    last_error: str | None = None
    tier_lag: int = 0
    last_drill_at: datetime | None = None
    last_drill_status: str | None = None
    last_drill_max_rto: float | None = None
    rto_missed: bool = False
    last_verify_at: datetime | None = None
    last_verify_ok: bool | None = None
    last_verify_error: str | None = None

    def document(self) -> dict[str, Any]:
        doc = _shallow(self)
        for key, value in doc.items():
            if isinstance(value, datetime):
                doc[key] = clock.to_iso(value)
        return doc


@dataclass
class FleetHealth:
    """Everything ``status`` prints; ``missed`` lists the objectives missed, ``problems`` the rest."""

    now: datetime
    policies: list[PolicyHealth] = field(default_factory=list)
    desktops: list[DesktopHealth] = field(default_factory=list)
    unprotected: list[str] = field(default_factory=list)  # desktops no policy covers
    interrupted_restores: list[dict[str, Any]] = field(default_factory=list)
    missed: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    # where the tier lag came from: "given" (the daemon's own last tier run), "recorded" (what the
    # last tier run recorded, at tier_lag_recorded_at), "planned" (no tier run has recorded one yet:
    # tiering planned now) or "none" (no policy tiers)
    tier_lag_source: str = "none"
    tier_lag_recorded_at: datetime | None = None

    @property
    def ok(self) -> bool:
        return not self.missed

    def document(self) -> dict[str, Any]:
        return {
            "now": clock.to_iso(self.now),
            "ok": self.ok,
            "missed": self.missed,
            "problems": self.problems,
            "policies": [p.document() for p in self.policies],
            "desktops": [d.document() for d in self.desktops],
            "unprotected": self.unprotected,
            "interrupted_restores": self.interrupted_restores,
            "tier_lag": {
                "source": self.tier_lag_source,
                "recorded_at": clock.to_iso(self.tier_lag_recorded_at) if self.tier_lag_recorded_at else None,
            },
        }


LastPointKey = tuple[str, str | None]  # (desktop, policy; None for a manual point)
LastPoint = tuple[str, str, float | None]  # (taken_at, point id, freeze_ms) of the newest complete point


def _shallow(obj: Any) -> dict[str, Any]:
    """A dataclass of scalars as a dict (``asdict`` without its recursive copy)."""
    return {f.name: getattr(obj, f.name) for f in fields(obj)}


def _seconds(value: timedelta | None) -> float | None:
    return value.total_seconds() if value is not None else None


def _at(text: str | None) -> datetime | None:
    return clock.from_iso(text) if text else None


class _Reader:
    """The aggregate queries, one per concern, each keyed by (desktop, policy) or policy."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog

    def last_points(self) -> dict[LastPointKey, LastPoint]:
        rows = self.catalog.query(
            "SELECT desktop_id, policy, MAX(taken_at) AS taken_at, id, freeze_ms FROM points "
            "WHERE status = 'complete' GROUP BY desktop_id, policy"
        )  # SQLite returns bare columns (id, freeze_ms) from the row holding MAX(): the newest point's
        return {(r["desktop_id"], r["policy"]): (r["taken_at"], r["id"], r["freeze_ms"]) for r in rows}

    def failures_since_last_success(self) -> dict[tuple[str, str | None], list[dict[str, Any]]]:
        rows = self.catalog.query(
            "SELECT p.desktop_id, p.policy, p.taken_at, p.reason FROM points p WHERE p.status = 'failed' "
            "AND p.taken_at > COALESCE((SELECT MAX(q.taken_at) FROM points q WHERE q.desktop_id = p.desktop_id "
            "AND q.status = 'complete' AND (q.policy IS p.policy OR q.policy IS NULL)), '') "
            "ORDER BY p.taken_at"
        )
        out: dict[tuple[str, str | None], list[dict[str, Any]]] = defaultdict(list)
        for r in rows:
            out[(r["desktop_id"], r["policy"])].append(r)
        return out

    def schedule(self) -> dict[tuple[str, str], dict[str, Any]]:
        return {(r["policy"], r["purpose"]): r for r in self.catalog.query("SELECT * FROM schedule_state")}

    def last_drills(self) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
        """(per policy: its newest drill with the largest RTO; per desktop: its newest result)."""
        per_policy = {}
        for r in self.catalog.query(
            "SELECT d.id, d.policy, d.started_at, d.status, MAX(x.rto_seconds) AS max_rto, "
            "MIN(x.rto_seconds <= x.target_seconds) AS within FROM drills d "
            "LEFT JOIN drill_results x ON x.drill_id = d.id WHERE d.status != 'running' "
            "GROUP BY d.id ORDER BY d.started_at"
        ):
            per_policy[r["policy"]] = r
        per_desktop = {}
        for r in self.catalog.query(
            "SELECT x.desktop_id, x.passed, x.rto_seconds, d.started_at FROM drill_results x "
            "JOIN drills d ON d.id = x.drill_id ORDER BY d.started_at"
        ):
            per_desktop[r["desktop_id"]] = r
        return per_policy, per_desktop

    def last_verify(self) -> dict[str | None, dict[str, Any]]:
        out = {}
        for r in self.catalog.query(
            "SELECT policy, status, started_at, finished_at, error FROM jobs WHERE kind = 'verify' "
            "AND status != 'running' ORDER BY started_at"
        ):
            out[r["policy"]] = r
        return out

    def interrupted_restores(self, now: datetime) -> list[dict[str, Any]]:
        """Restores that did not finish: long 'running' ones, and at once every in-place restore
        whose process died (its intent, drsvc.intents: the desktop may be down) until one finishes it."""
        from drsvc.intents import interrupted_restores

        stale = clock.to_iso(now - STALE_RESTORE)
        in_place = sorted({i.detail["restore"] for i in interrupted_restores(self.catalog) if i.detail.get("restore")})
        return self.catalog.query(
            "SELECT id, desktop_id, point_id, as_name, started_at, status FROM restores "
            "WHERE drill_id IS NULL AND (status = 'interrupted' OR (status = 'running' AND started_at < ?) "
            f"OR id IN ({','.join('?' * len(in_place))})) ORDER BY started_at",
            [stale, *in_place],
        )


def tier_lag(catalog: Catalog, policies: PolicySet, now: datetime) -> dict[tuple[str, str], int]:
    """Points due for the cold tier (per tiering's own plan) but not there yet, per (desktop, policy)."""
    from drsvc.tiering import plan_tiering  # the one definition of "due for the cold tier"

    lag: dict[tuple[str, str], int] = defaultdict(int)
    for candidate in plan_tiering(catalog, policies, now):
        lag[(candidate.point["desktop_id"], candidate.policy.name)] += 1
    return lag


def record_tier_lag(catalog: Catalog, lag: Mapping[tuple[str, str], int]) -> None:
    """Remember what a tier run left due for the cold tier (its ``TierReport.lag()``), replacing
    the previous run's record, for processes that did not run it (``recorded_tier_lag``)."""
    rows = sorted([desktop, policy, n] for (desktop, policy), n in lag.items() if n)
    catalog.execute(
        "INSERT INTO tier_lag (id, recorded_at, lag) VALUES (1, ?, ?) "
        "ON CONFLICT (id) DO UPDATE SET recorded_at = excluded.recorded_at, lag = excluded.lag",
        [clock.to_iso(clock.now()), json.dumps(rows)],
    )


def recorded_tier_lag(catalog: Catalog) -> dict[tuple[str, str], int] | None:
    """The tier lag the last tier run recorded, per (desktop, policy); None when no run has (or the
    catalog predates the record): then only planning tiering says it."""
    record = tier_lag_record(catalog)
    return None if record is None else record[0]


def tier_lag_record(catalog: Catalog) -> tuple[dict[tuple[str, str], int], datetime] | None:
    """``recorded_tier_lag`` and when the tier run recorded it; None when no tier run has."""
    try:
        rows = catalog.query("SELECT recorded_at, lag FROM tier_lag WHERE id = 1")
    except sqlite3.OperationalError:  # a catalog opened without migrating, older than the table
        return None
    if not rows:
        return None
    lag = {(str(d), str(p)): int(n) for d, p, n in json.loads(rows[0]["lag"])}
    return lag, clock.from_iso(rows[0]["recorded_at"])


def read_health(
    catalog: Catalog,
    policies: PolicySet,
    now: datetime | None = None,
    *,
    tier_lag_known: Mapping[tuple[str, str], int] | None = None,
    last_points: Mapping[LastPointKey, LastPoint] | None = None,
    config: Config | None = None,
) -> FleetHealth:
    """The fleet's health at ``now`` from the catalog and the policies.

    Tier lag: ``tier_lag_known`` when the caller has a fresh one (the daemon, from its last tier
    run), else what the last tier run recorded in the catalog (every tier run that is not a dry run
    records it), and only when no tier run ever did, tiering's plan (retention over every point:
    seconds at fleet scale). ``FleetHealth.tier_lag_source`` says which.

    ``last_points``: the newest complete point per (desktop, policy) as ``last_points()`` reads it,
    from a caller that already passed over every point (the metrics collector's one pass).

    ``config``: the settings to hold against what the catalog last saw of the stores (a
    ``[hot] chunk_kib`` the existing hot store does not follow is a problem: ``drsvc.store_params``).
    """
    now = now or clock.now()
    reader = _Reader(catalog)
    health = FleetHealth(now)
    last = reader.last_points() if last_points is None else last_points
    failures = reader.failures_since_last_success()
    schedule = reader.schedule()
    drill_of_policy, drill_of_desktop = reader.last_drills()
    verifies = reader.last_verify()
    lag = _tier_lag(health, catalog, policies, now, tier_lag_known)

    by_policy = {p.name: _policy_health(p, schedule, drill_of_policy, verifies, now) for p in policies}
    for desktop in catalog.desktops():
        if desktop["gone_since"]:
            continue
        covering = policies.for_desktop(desktop["id"], desktop["tenant"], desktop["labels"])
        if not covering:
            health.unprotected.append(desktop["id"])
        for policy in covering:
            d = _desktop_health(desktop, policy, last, failures, drill_of_desktop, now)
            d.tier_lag = lag.get((desktop["id"], policy.name), 0)
            p = by_policy[policy.name]
            p.desktops += 1
            p.rpo_missed += d.rpo_missed
            p.tier_lag += d.tier_lag
            health.desktops.append(d)
    health.policies = [by_policy[name] for name in sorted(by_policy)]
    health.interrupted_restores = reader.interrupted_restores(now)
    _judge(health)
    if config is not None and config.hot is not None:
        problem = store_params.chunk_size_problem(config, store_params.recorded_avg_size(catalog, config.hot.store))
        if problem is not None:
            health.problems.append(problem)
    return health


def _tier_lag(
    health: FleetHealth,
    catalog: Catalog,
    policies: PolicySet,
    now: datetime,
    known: Mapping[tuple[str, str], int] | None,
) -> dict[tuple[str, str], int]:
    """The tier lag ``read_health`` uses, noting in ``health`` where it came from."""
    if known is not None:
        health.tier_lag_source = "given"
        return dict(known)
    if not any(p.tiering for p in policies):
        return {}
    record = tier_lag_record(catalog)
    if record is not None:
        health.tier_lag_source, health.tier_lag_recorded_at = "recorded", record[1]
        return record[0]
    health.tier_lag_source = "planned"
    return tier_lag(catalog, policies, now)


def _policy_health(
    policy: Policy,
    schedule: dict[tuple[str, str], dict[str, Any]],
    drills: dict[str, dict[str, Any]],
    verifies: dict[str | None, dict[str, Any]],
    now: datetime,
) -> PolicyHealth:
    state = schedule.get((policy.name, "backup"))
    p = PolicyHealth(policy.name, _seconds(policy.objectives.rpo), policy.objectives.rto.total_seconds())
    upcoming = policy.next_runs(now, 1)
    p.next_backup = upcoming[0] if upcoming else None
    if state:
        p.attempts, p.last_error, p.retry_at = state["attempts"], state["last_error"], _at(state["retry_at"])
    drill = drills.get(policy.name)
    if drill:
        p.last_drill_at, p.last_drill_status = _at(drill["started_at"]), drill["status"]
        p.last_drill_max_rto = drill["max_rto"]
        p.rto_missed = drill["within"] == 0 or (drill["max_rto"] is not None and drill["max_rto"] > p.rto_seconds)
    verify = verifies.get(policy.name)
    if verify:
        p.last_verify_at = _at(verify["finished_at"] or verify["started_at"])
        p.last_verify_ok, p.last_verify_error = verify["status"] == "ok", verify["error"]
    return p


def _desktop_health(
    desktop: dict[str, Any],
    policy: Policy,
    last: Mapping[LastPointKey, LastPoint],
    failures: dict[tuple[str, str | None], list[dict[str, Any]]],
    drills: dict[str, dict[str, Any]],
    now: datetime,
) -> DesktopHealth:
    d = DesktopHealth(desktop["id"], policy.name, _seconds(policy.objectives.rpo))
    # a manual point (no policy) protects the desktop as well as one its policy took
    candidates = [v for v in (last.get((desktop["id"], policy.name)), last.get((desktop["id"], None))) if v]
    if candidates:
        taken_at, d.last_point, freeze_ms = max(candidates, key=lambda c: c[0])
        d.last_point_at = clock.from_iso(taken_at)
        d.last_freeze_seconds = freeze_ms / 1000 if freeze_ms is not None else None
        d.age_seconds = (now - d.last_point_at).total_seconds()
        if d.last_point_at - now > AHEAD_SLACK:
            d.ahead_seconds = -d.age_seconds
    else:
        d.age_seconds = (now - clock.from_iso(desktop["first_seen"])).total_seconds()
    d.rpo_missed = d.rpo_seconds is not None and d.age_seconds > d.rpo_seconds
    failed = failures.get((desktop["id"], policy.name), [])
    d.consecutive_failures = len(failed)
    if failed:
        d.last_error = failed[-1]["reason"]
    drill = drills.get(desktop["id"])
    if drill:
        d.last_drill_at, d.last_drill_passed = _at(drill["started_at"]), bool(drill["passed"])
        d.last_rto_seconds = drill["rto_seconds"]
    return d


def _age(seconds: float) -> str:
    """``5h``, ``1m30s``; tenths below a minute (RTOs)."""
    return format_duration(timedelta(seconds=round(seconds, 1) if seconds < 60 else round(seconds)))


def _judge(health: FleetHealth) -> None:
    for d in health.desktops:
        if d.rpo_missed:
            since = "last point" if d.last_point_at else "no point yet, first seen"
            health.missed.append(
                f"RPO missed: {d.desktop} ({d.policy}) {since} {_age(d.age_seconds or 0)} ago, "
                f"objective {_age(d.rpo_seconds or 0)}"
            )
        if d.ahead_seconds is not None:
            health.problems.append(
                f"{d.desktop} ({d.policy}): its newest point is stamped {_age(d.ahead_seconds)} ahead of this "
                "host's clock (the clock stepped back?): its RPO and failed backups since cannot be judged "
                "until the clock passes it; check the host's time (timedatectl, chronyc tracking)"
            )
        if d.consecutive_failures:
            health.problems.append(
                f"{d.desktop} ({d.policy}): {d.consecutive_failures} failed backup(s) in a row: {d.last_error}"
            )
    for p in health.policies:
        if p.rto_missed:
            health.missed.append(
                f"RTO missed: last drill of {p.policy} ({_when(p.last_drill_at)}) took up to "
                f"{_age(p.last_drill_max_rto or 0)}, objective {_age(p.rto_seconds)}"
            )
        elif p.last_drill_status == "failed":
            health.problems.append(f"last drill of {p.policy} failed ({_when(p.last_drill_at)})")
        if p.last_verify_ok is False:
            health.problems.append(f"last verification of {p.policy} failed: {p.last_verify_error}")
        if p.tier_lag:
            health.problems.append(f"{p.policy}: {p.tier_lag} point(s) due for the cold tier are not there")
        if p.attempts:
            health.problems.append(f"{p.policy}: backup window failed {p.attempts} time(s): {p.last_error}")
    for r in health.interrupted_restores:
        health.problems.append(
            f"restore of {r['desktop_id']} from {r['point_id']} started {r['started_at']} did not finish"
        )
    if health.unprotected:
        health.problems.append(f"{len(health.unprotected)} desktop(s) covered by no policy: {_few(health.unprotected)}")


def _when(at: datetime | None) -> str:
    return clock.to_iso(at) if at else "never"


def _few(names: Iterable[str], n: int = 5) -> str:
    names = list(names)
    return ", ".join(names[:n]) + (f" and {len(names) - n} more" if len(names) > n else "")
