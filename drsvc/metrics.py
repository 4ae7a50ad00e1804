"""Prometheus metrics: the catalog read at scrape time, plus what only a running daemon knows.

``CatalogCollector`` turns one reading of the catalog (``drsvc.health`` and a few aggregates) into
metric families each time it is collected, so ``drsvc run --metrics-listen ADDR`` (``/metrics``)
and ``drsvc metrics --textfile PATH`` (node_exporter's textfile collector, for cron users) show the
same numbers, and a scrape never sees a half-updated in-memory copy. Counters are counts of catalog
rows (jobs, points, drills, restores), which only grow: drsvc keeps those rows (expired points stay
as ``expired``). A catalog rebuilt from the stores starts them again, which Prometheus reads as a
counter reset. The daemon adds its own tick histogram and error counter.

Naming follows Prometheus' conventions (``drsvc_`` prefix, base units ``_seconds`` and ``_bytes``,
counters ``_total``). Labels are bounded: ``desktop`` and ``policy`` (the fleet and its policy
files), ``tier`` (hot, cold), ``kind`` (a fixed set of job kinds) and ``result`` (a fixed set of
outcomes); never a point id, an error text or a pid.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Hashable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from drsvc import __version__, clock, hostfs
from drsvc.catalog import Catalog
from drsvc.health import FleetHealth, LastPoint, LastPointKey, read_health
from drsvc.liveness import DaemonHealth
from drsvc.policy import PolicySet

__all__ = ["FREEZE_BUCKETS", "RTO_BUCKETS", "CatalogCollector", "DaemonMetrics", "registry", "render", "write_textfile"]

FREEZE_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
RTO_BUCKETS = (1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 900.0)
TICK_BUCKETS = (0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0)
DEFAULT_FREEZE_BUDGET = 5.0  # seconds a desktop may stand frozen when its policy sets no budget
JOB_KINDS = ("backup", "tier", "prune", "restore", "drill", "verify", "gc")
JOB_RESULTS = ("ok", "partial", "failed", "interrupted")


def _ts(value: Any) -> float | None:
    """Unix seconds from a catalog ISO time (or a datetime)."""
    if value is None:
        return None
    moment = clock.from_iso(value) if isinstance(value, str) else value
    return float(moment.timestamp())


def _histogram(
    name: str, doc: str, labels: list[str], rows: dict[tuple[str, ...], list[float]], buckets: tuple[float, ...]
) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, doc, labels=labels)
    for key, values in sorted(rows.items()):
        cumulative = [(str(b), float(sum(v <= b for v in values))) for b in buckets]
        cumulative.append(("+Inf", float(len(values))))
        family.add_metric(list(key), cumulative, sum_value=float(sum(values)))
    return family


class CatalogCollector(Collector):
    """Every catalog-derived metric, read at each collection.

    ``open_catalog`` gives a connection for this collection (the HTTP server scrapes from its own
    thread; SQLite connections stay in the thread that made them) and ``policies`` the current
    policy set. The two passes over every point (one over ``points`` for the newest point per
    desktop, the outcome counters and the freeze histogram; one over ``point_tiers`` for storage
    per tier: ~0.7 s at 300,000 points) change only when someone commits to the catalog, so a
    collector that scrapes again (the daemon's) reuses them until ``_CatalogWatch`` sees a commit.
    """

    def __init__(
        self,
        open_catalog: Callable[[], Catalog],
        policies: Callable[[], PolicySet],
        tier_lag: Callable[[], Mapping[tuple[str, str], int] | None] | None = None,
    ) -> None:
        self.open_catalog = open_catalog
        self.policies = policies
        self.tier_lag = tier_lag or (lambda: None)
        self._passes: tuple[Hashable, _Passes] | None = None  # (catalog version, what it gave)
        self._watch: _CatalogWatch | None = None

    def collect(self) -> Iterator[Metric]:
        started = time.monotonic()
        catalog = self.open_catalog()
        try:
            policies = self.policies()
            # the daemon's own last tier run, else (read_health) what the last one recorded (a cron
            # `run --once`, `drsvc tier`); only a catalog no tier run ever recorded in plans tiering
            passes = self._points_passes(catalog)
            health = read_health(catalog, policies, tier_lag_known=self.tier_lag(), last_points=passes.last_points)
            yield from self._health(health, policies)
            yield from self._outcomes(catalog, passes.by_status)
            yield from self._distributions(catalog, passes.by_status)
            yield from self._storage(catalog, passes.by_tier)
            yield from self._operations(catalog, health)
        finally:
            catalog.close()
        took = GaugeMetricFamily("drsvc_metrics_collect_seconds", "Time to read the catalog for this scrape.")
        took.add_metric([], time.monotonic() - started)
        yield took

    def _points_passes(self, catalog: Catalog) -> _Passes:
        watch = self._watch
        if watch is None or watch.path != catalog.path:
            watch = self._watch = _CatalogWatch(catalog.path)
        key = watch.version()  # read before the passes: a commit between the two only costs a pass more
        cached = self._passes
        if key is not None and cached is not None and cached[0] == key:
            return cached[1]
        passes = _Passes.of(_points_by_desktop(catalog), _points_by_tier(catalog))
        self._passes = (key, passes)  # one assignment: concurrent scrapes see the old or the new pair
        return passes

    # ------------------------------------------------------------------ objectives, per desktop and policy
    def _health(self, health: FleetHealth, policies: PolicySet) -> Iterator[Metric]:
        dp = ["desktop", "policy"]
        last = GaugeMetricFamily(
            "drsvc_last_point_timestamp_seconds", "When the newest complete point was taken.", labels=dp
        )
        age = GaugeMetricFamily(
            "drsvc_point_age_seconds",
            "Age of the newest complete point (since first seen when there is none).",
            labels=dp,
        )
        breached = GaugeMetricFamily("drsvc_rpo_breached", "1 when the point age exceeds the policy's RPO.", labels=dp)
        failures = GaugeMetricFamily(
            "drsvc_backup_consecutive_failures", "Failed points since the last complete one.", labels=dp
        )
        freeze = GaugeMetricFamily(
            "drsvc_freeze_last_seconds", "Freeze window of the newest complete point.", labels=dp
        )
        for d in health.desktops:
            key = [d.desktop, d.policy]
            if d.last_point_at is not None:
                last.add_metric(key, _ts(d.last_point_at) or 0.0)
            age.add_metric(key, d.age_seconds or 0.0)
            breached.add_metric(key, float(d.rpo_missed))
            failures.add_metric(key, float(d.consecutive_failures))
            if d.last_freeze_seconds is not None:
                freeze.add_metric(key, d.last_freeze_seconds)
        yield from (last, age, breached, failures, freeze)

        p_ = ["policy"]
        rpo = GaugeMetricFamily("drsvc_rpo_objective_seconds", "The policy's recovery point objective.", labels=p_)
        rto = GaugeMetricFamily("drsvc_rto_objective_seconds", "The policy's recovery time objective.", labels=p_)
        budget = GaugeMetricFamily(
            "drsvc_freeze_budget_seconds", "Longest freeze the policy allows (capture.freeze_timeout).", labels=p_
        )
        lag = GaugeMetricFamily(
            "drsvc_tier_lag_points", "Points due for the cold tier that are not there yet.", labels=p_
        )
        attempts = GaugeMetricFamily(
            "drsvc_backup_window_failed_attempts", "Failed attempts at the current backup window.", labels=p_
        )
        nxt = GaugeMetricFamily("drsvc_next_backup_timestamp_seconds", "The policy's next scheduled run.", labels=p_)
        desktops = GaugeMetricFamily("drsvc_policy_desktops", "Desktops the policy covers.", labels=p_)
        drill_ts = GaugeMetricFamily(
            "drsvc_drill_last_timestamp_seconds", "When the policy's last finished drill started.", labels=p_
        )
        drill_ok = GaugeMetricFamily(
            "drsvc_drill_last_success", "1 when the policy's last drill passed, 0 when it failed.", labels=p_
        )
        drill_rto = GaugeMetricFamily(
            "drsvc_drill_last_rto_seconds", "Largest RTO measured by the policy's last drill.", labels=p_
        )
        verify_ts = GaugeMetricFamily(
            "drsvc_verify_last_timestamp_seconds", "When the policy's last verification finished.", labels=p_
        )
        verify_ok = GaugeMetricFamily(
            "drsvc_verify_last_success", "1 when the policy's last verification passed.", labels=p_
        )
        for p in health.policies:
            key = [p.policy]
            if p.rpo_seconds is not None:
                rpo.add_metric(key, p.rpo_seconds)
            rto.add_metric(key, p.rto_seconds)
            # the policy's own budget where policies carry one (capture.freeze_timeout), else the default
            freeze_budget = getattr(policies.get(p.policy).capture, "freeze_timeout", None)
            budget.add_metric(key, freeze_budget.total_seconds() if freeze_budget else DEFAULT_FREEZE_BUDGET)
            lag.add_metric(key, float(p.tier_lag))
            attempts.add_metric(key, float(p.attempts))
            if p.next_backup is not None:
                nxt.add_metric(key, _ts(p.next_backup) or 0.0)
            desktops.add_metric(key, float(p.desktops))
            if p.last_drill_status is not None:
                drill_ts.add_metric(key, _ts(p.last_drill_at) or 0.0)
                drill_ok.add_metric(key, float(p.last_drill_status == "passed"))
                if p.last_drill_max_rto is not None:
                    drill_rto.add_metric(key, p.last_drill_max_rto)
            if p.last_verify_ok is not None:
                verify_ts.add_metric(key, _ts(p.last_verify_at) or 0.0)
                verify_ok.add_metric(key, float(p.last_verify_ok))
        yield from (rpo, rto, budget, lag, attempts, nxt, desktops, drill_ts, drill_ok, drill_rto, verify_ts, verify_ok)

        unprotected = GaugeMetricFamily("drsvc_desktops_unprotected", "Known desktops no policy covers.")
        unprotected.add_metric([], float(len(health.unprotected)))
        interrupted = GaugeMetricFamily(
            "drsvc_restores_interrupted", "Restores that started and never finished (the desktop may be down)."
        )
        interrupted.add_metric([], float(len(health.interrupted_restores)))
        yield from (unprotected, interrupted)

    # ------------------------------------------------------------------ outcomes (counters)
    def _outcomes(self, catalog: Catalog, by_status: list[dict[str, Any]]) -> Iterator[Metric]:
        jobs = CounterMetricFamily("drsvc_jobs", "Finished jobs by kind and result.", labels=["kind", "result"])
        counted = {
            (r["kind"], r["status"]): r["n"]
            for r in catalog.query(
                "SELECT kind, status, COUNT(*) AS n FROM jobs WHERE status != 'running' GROUP BY 1, 2"
            )
        }
        for kind in JOB_KINDS:
            for result in JOB_RESULTS:
                jobs.add_metric([kind, result], float(counted.get((kind, result), 0)))
        points = CounterMetricFamily(
            "drsvc_backup_points", "Recovery points taken, by policy and result.", labels=["policy", "result"]
        )
        taken: dict[tuple[str, str], int] = {}
        for r in by_status:
            key = (r["policy"], "failed" if r["status"] == "failed" else "ok")
            taken[key] = taken.get(key, 0) + r["n"]
        for key, n in sorted(taken.items()):
            points.add_metric(list(key), float(n))
        drills = CounterMetricFamily(
            "drsvc_drills", "Finished drills by policy and result.", labels=["policy", "result"]
        )
        for r in catalog.query(
            "SELECT COALESCE(policy, '') AS policy, status, COUNT(*) AS n FROM drills WHERE status != 'running' "
            "GROUP BY 1, 2 ORDER BY 1, 2"
        ):
            drills.add_metric([r["policy"], r["status"]], float(r["n"]))
        restores = CounterMetricFamily("drsvc_restores", "Finished restores (not drills) by result.", labels=["result"])
        for r in catalog.query(
            "SELECT status, COUNT(*) AS n FROM restores WHERE drill_id IS NULL AND status != 'running' GROUP BY 1"
        ):
            restores.add_metric([r["status"]], float(r["n"]))
        yield from (jobs, points, drills, restores)

    # ------------------------------------------------------------------ freeze and RTO distributions
    def _distributions(self, catalog: Catalog, by_status: list[dict[str, Any]]) -> Iterator[Metric]:
        freezes = HistogramMetricFamily(
            "drsvc_freeze_seconds", "Freeze window of each point (desktops stood frozen).", labels=["policy"]
        )
        sums: dict[str, list[float]] = {}  # policy -> [bucket counts..., count, total ms]
        for r in by_status:
            if r["status"] in ("complete", "expired") and r["frozen"]:
                acc = sums.setdefault(r["policy"], [0.0] * (len(FREEZE_BUCKETS) + 2))
                for i in range(len(FREEZE_BUCKETS)):
                    acc[i] += r[f"b{i}"] or 0
                acc[-2] += r["frozen"]
                acc[-1] += r["total"] or 0
        for policy, acc in sorted(sums.items()):
            buckets = [(str(b), acc[i]) for i, b in enumerate(FREEZE_BUCKETS)] + [("+Inf", acc[-2])]
            freezes.add_metric([policy], buckets, sum_value=acc[-1] / 1000)
        yield freezes
        rtos: dict[tuple[str, ...], list[float]] = {}
        last: dict[str, tuple[str, float]] = {}
        for r in catalog.query(
            "SELECT drill_id IS NOT NULL AS drill, rto_seconds, finished_at FROM restores "
            "WHERE rto_seconds IS NOT NULL ORDER BY finished_at"
        ):
            kind = "drill" if r["drill"] else "restore"
            rtos.setdefault((kind,), []).append(r["rto_seconds"])
            last[kind] = (r["finished_at"], r["rto_seconds"])
        yield _histogram(
            "drsvc_restore_rto_seconds", "Measured RTO of restores and drills.", ["kind"], rtos, RTO_BUCKETS
        )
        last_rto = GaugeMetricFamily("drsvc_restore_last_rto_seconds", "RTO of the latest restore.", labels=["kind"])
        last_ts = GaugeMetricFamily(
            "drsvc_restore_last_timestamp_seconds", "When the latest restore finished.", labels=["kind"]
        )
        for kind, (finished, rto) in sorted(last.items()):
            last_rto.add_metric([kind], rto)
            last_ts.add_metric([kind], _ts(finished) or 0.0)
        yield from (last_rto, last_ts)

    # ------------------------------------------------------------------ storage
    def _storage(self, catalog: Catalog, by_tier: list[dict[str, Any]]) -> Iterator[Metric]:
        logical = GaugeMetricFamily(
            "drsvc_tier_points_bytes", "Bytes the complete points on a tier hold (before dedup).", labels=["tier"]
        )
        stored = GaugeMetricFamily(
            "drsvc_tier_stored_bytes", "New bytes those points added to the tier's store.", labels=["tier"]
        )
        count = GaugeMetricFamily("drsvc_tier_points", "Complete points with a copy on the tier.", labels=["tier"])
        for r in by_tier:
            logical.add_metric([r["tier"]], float(r["logical"] or 0))
            stored.add_metric([r["tier"]], float(r["stored"] or 0))
            count.add_metric([r["tier"]], float(r["n"]))
        lock = GaugeMetricFamily(
            "drsvc_cold_lock_soonest_expiry_timestamp_seconds",
            "Soonest end of Object Lock among locked cold copies (after it they can be deleted).",
        )
        (row,) = catalog.query(
            "SELECT MIN(retain_until) AS soonest FROM point_tiers WHERE tier = 'cold' AND retain_until > ?",
            [clock.to_iso(clock.now())],
        )
        if row["soonest"]:
            lock.add_metric([], _ts(row["soonest"]) or 0.0)
        yield from (logical, stored, count, lock)

    # ------------------------------------------------------------------ the service itself
    def _operations(self, catalog: Catalog, health: FleetHealth) -> Iterator[Metric]:
        info = GaugeMetricFamily("drsvc_build_info", "drsvc version (value 1).", labels=["version"])
        info.add_metric([__version__], 1.0)
        schema = GaugeMetricFamily("drsvc_catalog_schema_version", "Catalog schema version (migrations applied).")
        schema.add_metric([], float(catalog.schema_version))
        healthy = GaugeMetricFamily(
            "drsvc_catalog_healthy", "1 when the catalog's last integrity check passed (quick_check, hourly)."
        )
        healthy.add_metric([], float(_catalog_check(catalog)))
        yield from (info, schema, healthy)

        held = GaugeMetricFamily("drsvc_lease_held", "1 while a drsvc process holds the lease.", labels=["lease"])
        age = GaugeMetricFamily(
            "drsvc_lease_age_seconds", "How long the current holder has worked under the lease.", labels=["lease"]
        )
        holder = GaugeMetricFamily(
            "drsvc_lease_holder_info", "Host holding the lease (value 1).", labels=["lease", "host"]
        )
        now = time.time()
        # not the owner leases of single runs (``drsvc.intents.Owner``): one name per run, unbounded
        for r in catalog.query("SELECT name, holder, token, expires_at FROM leases WHERE name NOT LIKE 'owner:%'"):
            alive = r["expires_at"] > now
            held.add_metric([r["name"]], float(alive))
            if not alive:
                continue
            holder.add_metric([r["name"], r["holder"].rpartition(":")[0]], 1.0)
            (job,) = catalog.query(
                "SELECT MIN(started_at) AS since FROM jobs WHERE fencing_token = ? AND status = 'running'", [r["token"]]
            )
            if job["since"]:
                age.add_metric([r["name"]], max(0.0, now - (_ts(job["since"]) or now)))
        yield from (held, age, holder)

        tick = GaugeMetricFamily(
            "drsvc_scheduler_last_tick_timestamp_seconds", "When the scheduler last finished a tick.", labels=["host"]
        )
        tick_seconds = GaugeMetricFamily(
            "drsvc_scheduler_last_tick_duration_seconds", "How long the scheduler's last tick took.", labels=["host"]
        )
        tick_exit = GaugeMetricFamily(
            "drsvc_scheduler_last_tick_exit_code", "Exit code of the scheduler's last tick.", labels=["host"]
        )
        for r in catalog.query("SELECT * FROM scheduler_ticks WHERE finished_at IS NOT NULL ORDER BY host"):
            tick.add_metric([r["host"]], _ts(r["finished_at"]) or 0.0)
            tick_seconds.add_metric([r["host"]], r["seconds"] or 0.0)
            tick_exit.add_metric([r["host"]], float(r["exit_code"] or 0))
        yield from (tick, tick_seconds, tick_exit)


_checked: dict[str, tuple[float, bool]] = {}
_CHECK_EVERY = 3600.0


def _points_by_desktop(catalog: Catalog) -> list[dict[str, Any]]:
    """The one pass over ``points``: per (desktop, policy, status) how many points, their freeze
    bucket counts and sum, and the newest one (its time, id and freeze: SQLite takes the bare
    columns from the row holding the one MAX()). Health takes the newest complete point per desktop
    from it, the outcome counters and the freeze histogram the sums per (policy, status). A table
    scan and one sort (~0.4 s at 300,000 points): the ``status`` index would add a row lookup for
    nearly every point; a row per group, not per point, comes back."""
    counts = ", ".join(f"SUM(freeze_ms <= {b * 1000:g}) AS b{i}" for i, b in enumerate(FREEZE_BUCKETS))
    return catalog.query(
        "SELECT desktop_id, policy, status, COUNT(*) AS n, COUNT(freeze_ms) AS frozen, SUM(freeze_ms) AS total, "
        f"{counts}, MAX(taken_at) AS taken_at, id, freeze_ms FROM points NOT INDEXED WHERE status != 'pending' "
        "GROUP BY desktop_id, policy, status"
    )


def _by_policy_and_status(groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The per-desktop groups summed per (policy, status), in that order ('' for manual points)."""
    sums: dict[tuple[str, str], dict[str, Any]] = {}
    fields = ("n", "frozen", "total", *(f"b{i}" for i in range(len(FREEZE_BUCKETS))))
    for g in groups:
        key = (g["policy"] or "", g["status"])
        acc = sums.setdefault(key, {"policy": key[0], "status": key[1], **dict.fromkeys(fields, 0)})
        for f in fields:
            acc[f] += g[f] or 0
    return [sums[key] for key in sorted(sums)]


def _points_by_tier(catalog: Catalog) -> list[dict[str, Any]]:
    """Complete points per tier with their logical and stored bytes (one pass over point_tiers)."""
    return catalog.query(
        "SELECT t.tier, COUNT(*) AS n, SUM(p.bytes) AS logical, SUM(t.stored_bytes) AS stored "
        "FROM point_tiers t JOIN points p ON p.id = t.point_id WHERE p.status = 'complete' GROUP BY t.tier"
    )


class _CatalogWatch:
    """Has anyone committed to the catalog since the last look? SQLite's ``PRAGMA data_version``
    on a connection of the watch's own, which never writes: its value changes whenever another
    connection commits, from this process (the daemon's scheduler writes through its own
    connection) or any other (a cron ``drsvc``, an operator's ``sqlite3`` shell), inside a job or
    not; a checkpoint moves it too, which only costs a pass. No rule about who changes what. A
    catalog file replaced by another (same path, new inode) opens a new connection: a new version.
    ``version()`` is None when the file cannot be read: never equal, nothing reused.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()  # scrapes run in the HTTP server's threads
        self._conn: sqlite3.Connection | None = None
        self._file: tuple[int, int] | None = None
        self._opened = 0  # connections opened: data_version of different connections do not compare

    def version(self) -> tuple[int, int] | None:
        with self._lock:
            try:
                st = os.stat(self.path)
                if self._conn is None or self._file != (st.st_dev, st.st_ino):
                    self._reopen((st.st_dev, st.st_ino))
                assert self._conn is not None
                (value,) = self._conn.execute("PRAGMA data_version").fetchone()
            except (OSError, sqlite3.Error):
                self._close()
                return None
            return self._opened, int(value)

    def _reopen(self, file: tuple[int, int]) -> None:
        self._close()
        conn = sqlite3.connect(self.path, timeout=5.0, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA query_only = ON")
        self._conn, self._file, self._opened = conn, file, self._opened + 1

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self._conn = self._file = None


@dataclass(frozen=True)
class _Passes:
    """What the passes over every point gave: nothing in it depends on the time of the scrape."""

    by_status: list[dict[str, Any]]  # _by_policy_and_status
    last_points: dict[LastPointKey, LastPoint]  # health's newest complete point per (desktop, policy)
    by_tier: list[dict[str, Any]]  # _points_by_tier

    @classmethod
    def of(cls, groups: list[dict[str, Any]], by_tier: list[dict[str, Any]]) -> _Passes:
        last = {
            (g["desktop_id"], g["policy"]): (g["taken_at"], g["id"], g["freeze_ms"])
            for g in groups
            if g["status"] == "complete"
        }
        return cls(_by_policy_and_status(groups), last, by_tier)


def _catalog_check(catalog: Catalog) -> bool:
    """``PRAGMA quick_check`` at most hourly per catalog file (it reads every page)."""
    key = str(catalog.path)
    at, ok = _checked.get(key, (0.0, True))
    if time.monotonic() - at > _CHECK_EVERY or key not in _checked:
        rows = catalog.query("PRAGMA quick_check")
        ok = [r[next(iter(r))] for r in rows] == ["ok"]
        _checked[key] = (time.monotonic(), ok)
    return ok


class DaemonMetrics:
    """What only the running daemon knows: its ticks and its errors (in-process series)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.ticks = Histogram(
            "drsvc_scheduler_tick_duration_seconds",
            "Duration of the daemon's scheduler ticks.",
            buckets=TICK_BUCKETS,
            registry=registry,
        )
        self.errors = Counter(
            "drsvc_daemon_errors", "Errors the daemon logged (a tick that failed).", registry=registry
        )


def registry(
    catalog_path: str | Path,
    policies: Callable[[], PolicySet],
    tier_lag: Callable[[], Mapping[tuple[str, str], int] | None] | None = None,
) -> CollectorRegistry:
    """A registry holding the catalog collector for the catalog at ``catalog_path``.

    ``tier_lag``: the daemon's tier lag from its last tier run (None until it has one), so a scrape
    need not plan tiering over every point itself; without one, the lag the last tier run recorded
    in the catalog (``health.recorded_tier_lag``), and only when none ever did, tiering's plan.
    """
    reg = CollectorRegistry(auto_describe=False)
    reg.register(CatalogCollector(lambda: Catalog.open(catalog_path, migrate=False), policies, tier_lag))
    return reg


def render(reg: CollectorRegistry) -> bytes:
    """The Prometheus text exposition of ``reg``."""
    return generate_latest(reg)


def write_textfile(reg: CollectorRegistry, path: str | os.PathLike[str]) -> None:
    """Write ``reg`` for node_exporter's textfile collector (atomically: a temp file renamed).

    Not ``prometheus_client.write_to_textfile``: it ignores a short write, so on a disk that fills
    part-way it renamed a truncated file into place and reported nothing."""
    target = Path(path)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    with hostfs.writing(path):
        try:
            with open(tmp, "wb") as f:
                hostfs.write_all(f, generate_latest(reg))
            os.replace(tmp, target)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a scrape in flight never holds up the daemon's exit


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # scrapes every few seconds are not news
        pass


def _app(reg: CollectorRegistry, health: DaemonHealth | None) -> Callable[..., Any]:
    """``/healthz`` (when the daemon passes its ``health``), and the exposition on every other path."""
    from prometheus_client import make_wsgi_app

    exposition = make_wsgi_app(reg)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        if health is None or environ.get("PATH_INFO") != "/healthz":
            return exposition(environ, start_response)
        ok, doc = health.check()
        body = json.dumps(doc).encode()
        headers = [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
        start_response("200 OK" if ok else "503 Service Unavailable", headers)
        return [body]

    return app


def serve(
    reg: CollectorRegistry, listen: str, health: DaemonHealth | None = None
) -> tuple[WSGIServer, threading.Thread]:
    """Serve ``/metrics`` (and ``/healthz`` from ``health``) on ``listen`` (``HOST:PORT`` or ``:PORT``)
    from a background thread."""
    host, _, port = listen.rpartition(":")
    host = host.strip("[]") or "0.0.0.0"
    # the address family that fits HOST (an IPv6 literal needs AF_INET6)
    family, *_, sockaddr = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    server_class = type("_FamilyServer", (_Server,), {"address_family": family})
    httpd: WSGIServer = make_server(
        str(sockaddr[0]), int(port), _app(reg, health), server_class, handler_class=_QuietHandler
    )
    thread = threading.Thread(target=httpd.serve_forever, name="metrics-http", daemon=True)
    thread.start()
    return httpd, thread
