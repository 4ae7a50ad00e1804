"""Prometheus metrics from the catalog: values, naming conventions, bounded labels, the textfile."""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
from datetime import timedelta

from prometheus_client.parser import text_string_to_metric_families

import drsvc.health
from drsvc import metrics
from drsvc.health import _Reader, record_tier_lag
from drsvc.intents import Owner
from drsvc.policy import load_policies

# every label drsvc may put on a series: each has a bounded set of values (see drsvc/metrics.py)
BOUNDED_LABELS = {"desktop", "policy", "tier", "kind", "result", "lease", "host", "version"}
UNIT_SUFFIXES = ("_seconds", "_bytes", "_total", "_info", "_points", "_desktops", "_failures", "_attempts")


def scrape(fleet) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    registry = metrics.registry(fleet.catalog.path, lambda: fleet.policies)
    text = metrics.render(registry).decode()
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return samples


def one(samples, name: str, **labels: str) -> float:
    return samples[name][tuple(sorted(labels.items()))]


def test_objectives_per_desktop_and_policy(fleet) -> None:
    fleet.desktop("ok")
    fleet.point("ok", timedelta(minutes=10))
    fleet.desktop("late")
    fleet.point("late", timedelta(hours=7))
    fleet.point("late", timedelta(hours=1), status="failed", reason="boom")
    fleet.point("late", timedelta(minutes=2), status="failed", reason="boom again")
    s = scrape(fleet)
    assert one(s, "drsvc_rpo_breached", desktop="ok", policy="gold") == 0
    assert one(s, "drsvc_rpo_breached", desktop="late", policy="gold") == 1
    assert one(s, "drsvc_backup_consecutive_failures", desktop="late", policy="gold") == 2
    assert (
        one(s, "drsvc_last_point_timestamp_seconds", desktop="ok", policy="gold")
        == (fleet.now - timedelta(minutes=10)).timestamp()
    )
    assert one(s, "drsvc_rpo_objective_seconds", policy="gold") == 7200
    assert one(s, "drsvc_rto_objective_seconds", policy="gold") == 30
    assert one(s, "drsvc_backup_points_total", policy="gold", result="failed") == 2
    assert one(s, "drsvc_backup_points_total", policy="gold", result="ok") == 2
    assert one(s, "drsvc_policy_desktops", policy="gold") == 2


def test_tier_lag_comes_from_what_the_last_tier_run_recorded(fleet, monkeypatch) -> None:
    (fleet.root / "policies" / "gold.yaml").write_text(
        (fleet.root / "policies" / "gold.yaml").read_text() + "tiering: {after: 1h, storage_class: STANDARD}\n"
    )
    fleet.policies = load_policies([fleet.root / "policies"])
    fleet.desktop("a")
    fleet.desktop("b")
    planned: list[int] = []

    def plan(catalog, policies, now):  # type: ignore[no-untyped-def]
        planned.append(1)
        return {("a", "gold"): 5}

    monkeypatch.setattr(drsvc.health, "tier_lag", plan)
    # no tier run ever recorded one: the scrape plans tiering itself
    assert one(scrape(fleet), "drsvc_tier_lag_points", policy="gold") == 5 and planned == [1]
    record_tier_lag(fleet.catalog, {("a", "gold"): 2, ("b", "gold"): 1, ("c", "gold"): 0})
    s = scrape(fleet)
    assert one(s, "drsvc_tier_lag_points", policy="gold") == 3
    assert planned == [1], "with a recorded tier run, a scrape (drsvc metrics --textfile) does not plan tiering"
    record_tier_lag(fleet.catalog, {})
    assert one(scrape(fleet), "drsvc_tier_lag_points", policy="gold") == 0 and planned == [1]
    # the daemon's own last tier run comes first
    daemon = metrics.registry(fleet.catalog.path, lambda: fleet.policies, lambda: {("b", "gold"): 7})
    assert b'drsvc_tier_lag_points{policy="gold"} 7.0' in metrics.render(daemon)


def test_freeze_histogram_counts_every_point(fleet) -> None:
    fleet.desktop("d")
    for minutes in (10, 20, 30):
        fleet.point("d", timedelta(minutes=minutes))  # freeze 121, 122, 123 ms
    s = scrape(fleet)
    assert one(s, "drsvc_freeze_seconds_count", policy="gold") == 3
    assert one(s, "drsvc_freeze_seconds_bucket", policy="gold", le="0.1") == 0
    assert one(s, "drsvc_freeze_seconds_bucket", policy="gold", le="0.25") == 3
    assert abs(one(s, "drsvc_freeze_seconds_sum", policy="gold") - 0.366) < 1e-9
    assert one(s, "drsvc_freeze_last_seconds", desktop="d", policy="gold") == 0.121


def test_drills_and_restores(fleet) -> None:
    fleet.desktop("d")
    fleet.point("d", timedelta(minutes=5))
    fleet.drill(timedelta(hours=2), [("d", 12.5, True)])
    fleet.drill(timedelta(hours=1), [("d", 44.0, False)])
    s = scrape(fleet)
    assert one(s, "drsvc_drills_total", policy="gold", result="passed") == 1
    assert one(s, "drsvc_drills_total", policy="gold", result="failed") == 1
    assert one(s, "drsvc_drill_last_success", policy="gold") == 0
    assert one(s, "drsvc_drill_last_rto_seconds", policy="gold") == 44.0


def test_jobs_counted_by_kind_and_result_with_every_series_present(fleet) -> None:
    job = fleet.catalog.start_job("backup", policy="gold")
    fleet.catalog.finish_job(job, "failed", error="x")
    fleet.catalog.start_job("tier")  # still running: not counted yet
    s = scrape(fleet)
    assert one(s, "drsvc_jobs_total", kind="backup", result="failed") == 1
    assert one(s, "drsvc_jobs_total", kind="tier", result="ok") == 0  # present at 0, so rate() works
    assert len(s["drsvc_jobs_total"]) == len(metrics.JOB_KINDS) * len(metrics.JOB_RESULTS)


def test_names_follow_prometheus_conventions_and_labels_stay_bounded(fleet) -> None:
    fleet.desktop("d")
    fleet.point("d", timedelta(minutes=5), status="failed", reason="a long error text that must not be a label")
    fleet.drill(timedelta(hours=1), [("d", 3.0, True)])
    s = scrape(fleet)
    for name, series in s.items():
        assert re.fullmatch(r"drsvc_[a-z0-9_]+", name), name
        base = re.sub(r"_(bucket|count|sum|created)$", "", name)
        assert base.endswith(UNIT_SUFFIXES) or base in {
            "drsvc_rpo_breached",
            "drsvc_drill_last_success",
            "drsvc_verify_last_success",
            "drsvc_lease_held",
            "drsvc_catalog_healthy",
            "drsvc_catalog_schema_version",
            "drsvc_restores_interrupted",
            "drsvc_desktops_unprotected",
            "drsvc_scheduler_last_tick_exit_code",
        }, name
        for labels in series:
            assert {k for k, _ in labels} - {"le"} <= BOUNDED_LABELS, (name, labels)
            assert all("error" not in v for _, v in labels), (name, labels)


def test_the_owner_leases_of_single_runs_are_no_lease_series(fleet) -> None:
    """Every job, restore and drill holds an owner lease of its own name: as a label, unbounded."""
    fleet.catalog.acquire_lease("work", "host-a:1", 60)
    with Owner(fleet.catalog), Owner(fleet.catalog):
        s = scrape(fleet)
    assert {dict(labels)["lease"] for labels in s["drsvc_lease_held"]} == {"work"}
    assert fleet.catalog.query("SELECT name FROM leases") == [{"name": "work"}], "a released owner's row stays"


def test_textfile_is_written_atomically_for_node_exporter(fleet, tmp_path, run_cli) -> None:
    config = fleet.config()
    fleet.desktop("d")
    fleet.point("d", timedelta(hours=3))
    path = tmp_path / "drsvc.prom"
    result = run_cli("--config", str(config), "metrics", "--textfile", str(path))
    assert result.code == 0, result.output
    text = path.read_text()
    assert 'drsvc_rpo_breached{desktop="d",policy="gold"} 1.0' in text
    assert not list(tmp_path.glob("drsvc.prom.*"))  # no temp file left behind
    stdout = run_cli("--config", str(config), "metrics")
    assert stdout.code == 0 and "# TYPE drsvc_jobs_total counter" in stdout.stdout


def test_a_daemon_scrapes_again_without_passing_over_every_point_until_the_catalog_changes(fleet, monkeypatch) -> None:
    fleet.desktop("d")
    fleet.point("d", timedelta(minutes=30))
    passes: list[str] = []
    real_points, real_tier, real_last = metrics._points_by_desktop, metrics._points_by_tier, _Reader.last_points

    def by_desktop(catalog):  # type: ignore[no-untyped-def]
        passes.append("points")
        return real_points(catalog)

    def by_tier(catalog):  # type: ignore[no-untyped-def]
        passes.append("tier")
        return real_tier(catalog)

    def last_points(reader):  # type: ignore[no-untyped-def]
        passes.append("last points")
        return real_last(reader)

    monkeypatch.setattr(metrics, "_points_by_desktop", by_desktop)
    monkeypatch.setattr(metrics, "_points_by_tier", by_tier)
    monkeypatch.setattr(_Reader, "last_points", last_points)
    daemon = metrics.registry(fleet.catalog.path, lambda: fleet.policies)  # one registry, scraped again

    def counted() -> tuple[float, float]:
        families = text_string_to_metric_families(metrics.render(daemon).decode())
        samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families for s in f.samples}
        return (
            samples[("drsvc_backup_points_total", (("policy", "gold"), ("result", "ok")))],
            samples[("drsvc_last_point_timestamp_seconds", (("desktop", "d"), ("policy", "gold")))],
        )

    at = [(fleet.now - timedelta(minutes=m)).timestamp() for m in (30, 10)]
    assert counted() == (1, at[0]) and passes == ["points", "tier"], "one pass over points: no other for health"
    assert counted() == (1, at[0]) and passes == ["points", "tier"], "nothing changed: the passes are reused"
    fleet.point("d", timedelta(minutes=10))
    assert counted() == (2, at[1]) and passes == ["points", "tier"] * 2, "a new point is counted at the next scrape"


def test_the_one_pass_over_points_counts_what_separate_queries_count(fleet) -> None:
    fleet.desktop("a")
    fleet.desktop("b")
    for ago, status in ((50, "complete"), (40, "failed"), (30, "complete"), (20, "expired"), (5, "pending")):
        fleet.point("a", timedelta(minutes=ago), status=status)
    fleet.point("b", timedelta(minutes=15))
    fleet.catalog.execute("UPDATE points SET policy = NULL, freeze_ms = NULL WHERE desktop_id = 'b'")  # a manual one
    fleet.catalog.execute("UPDATE points SET freeze_ms = 700 WHERE desktop_id = 'a' AND status = 'complete' LIMIT 1")
    groups = metrics._points_by_desktop(fleet.catalog)
    by_status = metrics._by_policy_and_status(groups)
    expected = fleet.catalog.query(
        "SELECT COALESCE(policy, '') AS policy, status, COUNT(*) AS n, COUNT(freeze_ms) AS frozen, "
        "SUM(freeze_ms <= 500) AS b3 FROM points WHERE status != 'pending' GROUP BY 1, 2 ORDER BY 1, 2"
    )
    assert [(r["policy"], r["status"], r["n"], r["frozen"], r["b3"] or 0) for r in by_status] == [
        (r["policy"], r["status"], r["n"], r["frozen"], r["b3"] or 0) for r in expected
    ]
    assert [r["b3"] for r in by_status] == [0, 1, 1, 1], "the point frozen 700 ms is above 0.5 s"
    assert metrics._Passes.of(groups, []).last_points == _Reader(fleet.catalog).last_points()


def test_a_change_made_outside_any_job_by_another_process_is_seen_by_the_next_scrape(fleet) -> None:
    fleet.desktop("d")
    first = fleet.point("d", timedelta(minutes=30))
    fleet.point("d", timedelta(minutes=10))
    daemon = metrics.registry(fleet.catalog.path, lambda: fleet.policies)  # one registry, scraped again

    def outcomes() -> dict[str, float]:
        families = text_string_to_metric_families(metrics.render(daemon).decode())
        return {
            s.labels["result"]: s.value for f in families for s in f.samples if s.name == "drsvc_backup_points_total"
        }

    assert outcomes() == {"ok": 2}
    assert outcomes() == {"ok": 2}  # the passes are kept
    # an operator's sqlite3 shell, no job, no new row: the same number of rows and the same maxima
    script = f"import sqlite3; c = sqlite3.connect({str(fleet.catalog.path)!r}); "
    script += f"c.execute(\"UPDATE points SET status = 'failed' WHERE id = '{first}'\"); c.commit()"
    subprocess.run([sys.executable, "-c", script], check=True)
    assert outcomes() == {"ok": 1, "failed": 1}, "the next scrape sees another process's commit"


def test_a_catalog_file_put_in_place_of_the_old_one_is_read_at_the_next_scrape(fleet) -> None:
    from drsvc.catalog_guard import quarantine

    fleet.desktop("d")
    point = fleet.point("d", timedelta(minutes=30))
    daemon = metrics.registry(fleet.catalog.path, lambda: fleet.policies)

    def outcomes() -> dict[str, float]:
        families = text_string_to_metric_families(metrics.render(daemon).decode())
        return {
            s.labels["result"]: s.value for f in families for s in f.samples if s.name == "drsvc_backup_points_total"
        }

    assert outcomes() == {"ok": 1}
    # what `drsvc catalog restore` does: a copy written beside the catalog, the old file moved aside
    path = str(fleet.catalog.path)
    copy = sqlite3.connect(path + ".copy")
    fleet.catalog.db.conn.backup(copy)
    copy.execute("UPDATE points SET status = 'failed' WHERE id = ?", [point])
    copy.commit()
    copy.close()
    fleet.catalog.close()
    quarantine(path)
    os.replace(path + ".copy", path)
    assert outcomes() == {"failed": 1}, "the scrape reads the file now at the catalog's path"
