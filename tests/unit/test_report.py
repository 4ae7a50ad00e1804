"""The quarterly DR drill report: numbers, formats (HTML self-contained, PDF, Markdown golden), CLI.

One catalog with the real schema (``drsvc init``) holds a synthetic fleet over 2026Q2..Q4: hourly
``standard`` points, 15-minute ``executive`` points with one gap, drills with passes and failures,
backup jobs, tier copies. The expected numbers below are worked out by hand from that scenario,
not by the code under test.
"""

from __future__ import annotations

import json
import re
import statistics
import zlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from golden import check_golden

from drsvc import __version__, clock
from drsvc.bootstrap import init
from drsvc.catalog import Catalog
from drsvc.errors import InvalidInput
from drsvc.policy import load_policies
from drsvc.report import build_report, objectives_from_policies, parse_quarter, percentile, render, rto_stats
from drsvc.report.render import render_markdown

GOLDEN = Path(__file__).parent / "golden"
NOW = datetime(2026, 11, 27, 18, 0, tzinfo=UTC)
LAB_ENV = ("CEPH_CONF", "S3_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "CONTAINER_HOST", "DRSVC_PODMAN_SOCKET", "DOCKER_HOST")


def iso(text: str) -> str:
    return clock.to_iso(datetime.fromisoformat(text.replace("Z", "+00:00")))


def _points(desktop: str, policy: str, start: datetime, end: datetime, step: timedelta, skip=()):
    t = start
    while t <= end:
        if t not in skip:
            yield (f"{clock.compact(t)}-{desktop}", desktop, policy, clock.to_iso(t), "complete", "paired")
        t += step


def populate(catalog: Catalog) -> None:
    """The scenario (times UTC)."""
    db = catalog.db.conn
    desktops = [
        # id, first_seen, gone_since, tenant
        ("alice", "2026-01-05T00:00Z", None, "acme"),
        ("bob", "2026-01-05T00:00Z", None, "acme"),
        ("carol", "2026-01-05T00:00Z", None, "acme"),
        ("dave", "2026-01-05T00:00Z", None, "acme"),
        ("erin", "2026-01-05T00:00Z", None, "acme"),  # never drilled in Q3
        ("frank", "2026-01-05T00:00Z", "2026-06-01T00:00Z", "acme"),  # gone before Q3
        ("gina", "2026-10-02T00:00Z", None, "acme"),  # new in Q4
    ]
    with catalog.transaction():
        for did, first, gone, tenant in desktops:
            db.execute(
                "INSERT INTO desktops (id, runtime_url, container, volume, tenant, first_seen, last_seen, gone_since) "
                "VALUES (?, 'podman:///run/podman/podman.sock', ?, ?, ?, ?, ?, ?)",
                [did, did, f"rados://desktops/{did}", tenant, iso(first), iso("2026-11-27T00:00Z"), gone and iso(gone)],
            )
        rows = []
        q3_start, q3_last = datetime(2026, 6, 30, 23, tzinfo=UTC), datetime(2026, 9, 30, 23, tzinfo=UTC)
        for did in ("alice", "bob", "carol", "erin"):
            rows += _points(did, "standard", q3_start, q3_last, timedelta(hours=1))
        # executive every 15 minutes; two runs missing on Aug 10 -> a 45-minute gap (objective 15m)
        missing = {datetime(2026, 8, 10, 12, 15, tzinfo=UTC), datetime(2026, 8, 10, 12, 30, tzinfo=UTC)}
        rows += _points(
            "dave",
            "executive",
            datetime(2026, 6, 30, 23, 45, tzinfo=UTC),
            datetime(2026, 9, 30, 23, 45, tzinfo=UTC),
            timedelta(minutes=15),
            missing,
        )
        db.executemany(
            "INSERT INTO points (id, desktop_id, policy, taken_at, status, consistency, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            [(*r, r[3]) for r in rows],
        )
        extra = [
            ("f1-bob", "bob", "standard", iso("2026-07-03T10:30Z"), "failed"),
            ("f2-bob", "bob", "standard", iso("2026-07-03T11:30Z"), "failed"),
            ("f3-erin", "erin", "standard", iso("2026-08-03T11:30Z"), "failed"),
            ("p1-erin", "erin", "standard", iso("2026-09-30T23:30Z"), "pending"),
            ("x1-alice", "alice", "standard", iso("2026-09-01T00:30Z"), "expired"),
            ("q4-alice", "alice", "standard", iso("2026-10-15T00:00Z"), "complete"),
            ("q4-gina", "gina", "standard", iso("2026-10-15T00:00Z"), "complete"),
        ]
        db.executemany(
            "INSERT INTO points (id, desktop_id, policy, taken_at, status, consistency, created_at) "
            "VALUES (?, ?, ?, ?, ?, 'paired', ?)",
            [(*r, r[3]) for r in extra],
        )
        tiers = [
            ("20260801T000000Z-alice", "hot", 1000, "2026-08-01T00:01Z"),
            ("20260801T000000Z-bob", "hot", 2000, "2026-08-01T00:01Z"),
            ("20260801T000000Z-dave", "hot", 500, "2026-08-01T00:01Z"),
            ("20260801T000000Z-alice", "cold", 700, "2026-08-02T01:00Z"),
            ("20260801T000000Z-bob", "cold", 1300, "2026-08-02T01:00Z"),
            ("q4-alice", "hot", 99999, "2026-10-15T00:01Z"),  # Q4: not counted in Q3
        ]
        for pid, tier, stored, added in tiers:
            db.execute(
                "INSERT INTO point_tiers (point_id, tier, store_url, stored_bytes, added_at) VALUES (?, ?, ?, ?, ?)",
                [pid, tier, "rados://hot/store" if tier == "hot" else "s3://cold/store", stored, iso(added)],
            )
        jobs = [("ok", "2026-07-10T00:00Z")] * 10 + [("failed", "2026-07-11T00:00Z")] * 2
        jobs += [("partial", "2026-07-12T00:00Z"), ("ok", "2026-10-10T00:00Z")]
        jobs += [("failed", "2026-07-13T00:00Z")]  # a tier job, not a backup: not counted
        for n, (status, started) in enumerate(jobs):
            kind = "tier" if n == len(jobs) - 1 else "backup"
            db.execute(
                "INSERT INTO jobs (kind, policy, status, started_at) VALUES (?, 'standard', ?, ?)",
                [kind, status, iso(started)],
            )
        drills = [
            (1, "2026-05-15T03:00Z", "standard"),
            (2, "2026-07-01T03:00Z", "standard"),
            (3, "2026-08-01T03:00Z", "executive"),
            (4, "2026-09-01T03:00Z", "standard"),
            (5, "2026-10-15T03:00Z", None),
        ]
        for did, started, policy in drills:
            db.execute(
                "INSERT INTO drills (id, started_at, finished_at, policy, selection, parallel, status) "
                "VALUES (?, ?, ?, ?, 'sample 3', 2, ?)",
                [did, iso(started), iso(started[:-1] + ":42Z"), policy, "failed" if did in (2, 4) else "passed"],
            )
        phases = json.dumps({"plan": 0.2, "fetch": 2.0, "volume": 3.0, "container": 4.0, "health": 1.0})
        results = [
            # drill, desktop, point, tier, rto, target, rpo, verified, passed, error
            (1, "alice", None, "hot", 10.0, 30, 1800, 1, 1, None),
            (1, "bob", None, "hot", 11.0, 30, 1800, 1, 1, None),
            (2, "alice", "20260701T020000Z-alice", "hot", 12.0, 30, 3600, 1, 1, None),
            (2, "bob", "20260701T020000Z-bob", "hot", 18.5, 30, 3600, 1, 1, None),
            (2, "carol", "20260701T020000Z-carol", "cold", 41.0, 30, 3600, 1, 0, "RTO 41.0 s over the 30 s target"),
            (3, "dave", "20260801T024500Z-dave", "hot", 9.0, 30, 900, 1, 1, None),
            (4, "alice", "20260901T020000Z-alice", "hot", 14.0, 30, 3600, 1, 1, None),
            (4, "bob", "20260901T020000Z-bob", "hot", None, 30, 3600, 0, 0, "checkpoint restore failed: criu exit 1"),
            (4, "carol", "20260901T020000Z-carol", "hot", 22.0, 30, 3600, 1, 1, None),
            (5, "alice", "q4-alice", "hot", 8.0, 30, 10800, 1, 1, None),
            (5, "gina", "q4-gina", "hot", 7.5, 30, 10800, 1, 1, None),
        ]
        for r in results:
            db.execute(
                "INSERT INTO drill_results (drill_id, desktop_id, point_id, tier, rto_seconds, target_seconds, "
                "rpo_seconds, phases, verified, passed, error) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [*r[:7], phases, *r[7:]],
            )
        # a site drill in Q3: three desktops, one failed; and a restore storm in Q4 (not counted)
        for rid, kind, site, started in (
            (1, "drill", "dr", "2026-08-20T02:00Z"),
            (2, "storm", None, "2026-10-20T02:00Z"),
        ):
            summary = {
                "desktops": 3,
                "up": 2,
                "within_target": 2,
                "first_up_seconds": 4.2,
                "p50_up_seconds": 6.9,
                "p95_up_seconds": None,
                "all_up_seconds": None,
            }
            db.execute(
                "INSERT INTO site_recoveries (id, kind, site, started_at, finished_at, selection, parallel, status, "
                "summary) VALUES (?, ?, ?, ?, ?, '--all', 4, 'partial', ?)",
                [rid, kind, site, iso(started), iso(started[:-1] + ":01Z"), json.dumps(summary)],
            )
            for rank, (desktop, status, error) in enumerate(
                (("dave", "ok", None), ("alice", "ok", None), ("bob", "failed", "criu failed: restore of bob"))
            ):
                db.execute(
                    "INSERT INTO site_recovery_desktops (recovery_id, desktop_id, rank, status, error) "
                    "VALUES (?, ?, ?, ?, ?)",
                    [rid, desktop, rank + 1, status, error],
                )


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """A real config + catalog made by ``drsvc init`` (no lab), filled with the scenario."""
    root = tmp_path_factory.mktemp("report")
    with pytest.MonkeyPatch.context() as mp:
        for var in (*LAB_ENV, "DRSVC_CONFIG"):
            mp.delenv(var, raising=False)
        result = init(root / "drsvc.toml")
    catalog = Catalog.open(root / "catalog.db")
    populate(catalog)
    policies = load_policies([root / "policies"])
    yield {"root": root, "config": root / "drsvc.toml", "catalog": catalog, "policies": policies, "init": result}
    catalog.close()


@pytest.fixture(scope="module")
def q3(site):
    return build_report(site["catalog"], "2026Q3", objectives=objectives_from_policies(site["policies"]), now=NOW)


@pytest.fixture(scope="module")
def q3_pdf(q3):
    return render(q3, "pdf")  # once per module: the slowest part


# ------------------------------------------------------------------ statistics and quarters


def test_percentile_is_nearest_rank_and_an_observed_value():
    assert percentile([], 95) is None
    assert percentile([7.0], 50) == percentile([7.0], 95) == 7.0
    assert percentile([4, 1, 3, 2], 50) == 2  # rank ceil(0.5*4)=2
    assert percentile(range(1, 21), 95) == 19  # rank ceil(0.95*20)=19
    assert percentile(range(1, 22), 95) == 20  # rank ceil(19.95)=20
    assert percentile(range(1, 101), 100) == 100
    values = [3.5, 9.0, 1.25, 30.5, 12.0]
    assert rto_stats(values) == {
        "count": 5,
        "p50": 9.0,
        "p95": 30.5,
        "max": 30.5,
        "mean": pytest.approx(statistics.mean(values)),
    }
    with pytest.raises(ValueError):
        percentile([1], 0)


@pytest.mark.parametrize("text", ["2026Q4", "2026q4", "2026-Q4", " 2026Q4 "])
def test_parse_quarter_accepts(text):
    q = parse_quarter(text)
    assert (q.name, q.start, q.end) == ("2026Q4", datetime(2026, 10, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC))
    assert q.last_day.date().isoformat() == "2026-12-31"
    assert parse_quarter("2026Q1").previous().name == "2025Q4"


@pytest.mark.parametrize("text", ["2026Q5", "2026Q0", "Q4-2026", "2026-12", "26Q1", "", "2026 Q"])
def test_parse_quarter_rejects_with_the_expected_format(text):
    with pytest.raises(InvalidInput, match="YYYYQn"):
        parse_quarter(text)


# ------------------------------------------------------------------ the numbers


def test_summary_numbers(q3):
    s = q3["summary"]
    assert (s["drills"], s["results"], s["passed"], s["failed"]) == (3, 7, 5, 2)
    assert s["pass_rate"] == pytest.approx(5 / 7)
    rtos = sorted([12.0, 18.5, 41.0, 9.0, 14.0, 22.0])  # bob's failed restore measured none
    assert s["rto"]["count"] == 6
    assert s["rto"]["p50"] == rtos[2] == 14.0  # rank ceil(0.5*6)=3
    assert s["rto"]["p95"] == rtos[5] == 41.0  # rank ceil(0.95*6)=6
    assert s["rto"]["max"] == 41.0
    assert s["targets"] == [30]
    assert s["within_target"] == 5
    assert (s["desktops"], s["desktops_drilled"], s["desktops_never_drilled"]) == (5, 4, 1)


def test_policies_rto_and_rpo_against_objectives(q3):
    by = {p["policy"]: p for p in q3["policies"]}
    std, exe, lab = by["standard"], by["executive"], by["lab"]
    assert (std["results"], std["passed"]) == (6, 4)
    assert std["rto"]["p50"] == 18.5 and std["rto"]["max"] == 41.0  # of 12, 14, 18.5, 22, 41
    # hourly points, none missing; last point 23:00 on Sep 30 -> 1 h to the quarter's end
    assert std["rpo_objective_seconds"] == 3600
    assert std["rpo_achieved_seconds"] == pytest.approx(3600)
    assert std["rpo_met"] is True
    assert std["desktops_measured"] == 4
    # two runs missing on Aug 10 -> 45 minutes between points against a 15-minute objective
    assert exe["rpo_objective_seconds"] == 900
    assert exe["rpo_achieved_seconds"] == pytest.approx(2700)
    assert exe["rpo_met"] is False and exe["rpo_worst_desktop"] == "dave"
    assert (exe["results"], exe["rto"]["max"]) == (1, 9.0)
    # a policy with neither points nor drills is listed, not judged
    assert lab["results"] == 0 and lab["rpo_met"] is None and lab["target_seconds"] == [300]


def test_latest_result_per_desktop_failures_and_never_drilled(q3):
    latest = {r["desktop"]: r for r in q3["desktops"]}
    assert sorted(latest) == ["alice", "bob", "carol", "dave"]
    assert (latest["alice"]["drill_id"], latest["alice"]["rto_seconds"]) == (4, 14.0)
    assert latest["bob"]["passed"] is False and latest["bob"]["rto_seconds"] is None
    assert (latest["carol"]["drill_id"], latest["carol"]["passed"]) == (4, True)
    failures = {(f["drill_id"], f["desktop"]): f["reasons"] for f in q3["failures"]}
    assert failures == {
        (2, "carol"): ["RTO 41.0 s over the 30 s target"],
        (4, "bob"): ["checkpoint restore failed: criu exit 1"],
    }
    assert [(n["desktop"], n["policy"]) for n in q3["never_drilled"]] == [("erin", "standard")]


def test_backups_storage_and_trend(q3):
    b = q3["backups"]
    assert b["jobs"] == {"ok": 10, "partial": 1, "failed": 2, "interrupted": 0, "running": 0}
    assert b["job_success_rate"] == pytest.approx(10 / 13)
    q3_points = 4 * (24 * 92) + (96 * 92 - 2)  # hourly x4 desktops, 15-minute dave minus 2, all in Q3
    assert b["points"] == {"complete": q3_points, "expired": 1, "failed": 3, "pending": 1}
    assert b["point_success_rate"] == pytest.approx((q3_points + 1) / (q3_points + 5))
    assert q3["storage"] == [
        {"tier": "hot", "copies": 3, "stored_bytes": 3500},
        {"tier": "cold", "copies": 2, "stored_bytes": 2000},
    ]
    trend = {t["quarter"]: t for t in q3["trend"]}
    assert list(trend) == ["2025Q4", "2026Q1", "2026Q2", "2026Q3"]
    assert trend["2026Q1"]["results"] == 0 and trend["2026Q1"]["pass_rate"] is None
    assert (trend["2026Q2"]["pass_rate"], trend["2026Q2"]["rto_p95"]) == (1.0, 11.0)
    assert trend["2026Q3"]["rto_p95"] == 41.0


def test_in_progress_quarter_counts_new_desktops_and_rpo_up_to_now(site):
    doc = build_report(site["catalog"], "2026Q4", objectives=objectives_from_policies(site["policies"]), now=NOW)
    assert doc["quarter"]["in_progress"] is True
    assert {r["desktop"] for r in doc["desktops"]} == {"alice", "gina"}
    assert doc["summary"]["pass_rate"] == 1.0
    never = {n["desktop"]: n["last_drilled_before"] for n in doc["never_drilled"]}
    assert never == {
        "bob": iso("2026-09-01T03:00Z"),
        "carol": iso("2026-09-01T03:00Z"),
        "dave": iso("2026-08-01T03:00Z"),
        "erin": None,
    }
    std = {p["policy"]: p for p in doc["policies"]}["standard"]
    # bob's last point was Sep 30 23:00: no point since, up to now -> far over the objective
    assert std["rpo_achieved_seconds"] == pytest.approx((NOW - datetime(2026, 9, 30, 23, tzinfo=UTC)).total_seconds())
    assert std["rpo_met"] is False
    assert "still in progress" in render_markdown(doc)


# ------------------------------------------------------------------ formats


def test_site_recoveries_of_the_quarter_with_their_failures(q3):
    [run] = q3["site_recoveries"]  # the Q4 storm is not in Q3
    assert (run["kind"], run["site"], run["up"], run["desktops"], run["first_up_seconds"]) == ("drill", "dr", 2, 3, 4.2)
    assert run["all_up_seconds"] is None and run["status"] == "partial"
    assert run["failures"] == [{"desktop_id": "bob", "status": "failed", "error": "criu failed: restore of bob"}]
    text = render_markdown(q3)
    assert "## Site recovery" in text and "| #1 | drill | dr |" in text and "criu failed: restore of bob" in text


def test_markdown_matches_golden(q3):
    doc = {**q3, "catalog": "/var/lib/drsvc/catalog.db", "drsvc_version": "0.0.0-golden"}
    text = render_markdown(doc)
    # facts checked without the golden file (the HTML test checks the same figures)
    for figure in ("71.4 %", "5 of 7", "14.0 s", "41.0 s"):
        assert figure in text, figure
    check_golden(GOLDEN / "report_2026Q3.md", text)


def test_html_is_self_contained_with_summary_numbers_and_charts(q3):
    html = render(q3, "html").decode()
    assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", html, re.I)
    assert "<link" not in html and "@import" not in html and "<script" not in html
    assert html.count("<svg") == 3 and 'class="chart"' in html
    ids = re.findall(r'\bid="([^"]+)"', html)
    assert len(ids) == len(set(ids)), "chart element ids collide"
    assert "DR drill report 2026Q3: 2026-07-01 to 2026-09-30" in html
    for figure in ("71.4 %", "5 of 7", "14.0 s", "41.0 s", "9.0 s", "45 min", "15 min"):
        assert figure in html, figure
    assert "checkpoint restore failed: criu exit 1" in html
    assert f"by drsvc {__version__} from catalog" in html and q3["catalog"] in html
    assert "Generated 2026-11-27 18:00 UTC" in html


def pdf_pages(pdf: bytes) -> int:
    """The page count of the page tree (which may sit in a compressed object stream)."""
    bodies = [pdf]
    for m in re.finditer(rb"stream\r?\n(.*?)\r?\nendstream", pdf, re.S):
        try:
            bodies.append(zlib.decompress(m.group(1)))
        except zlib.error:
            continue
    for body in bodies:
        found = re.search(rb"/Type\s*/Pages\b[^>]*?/Count\s+(\d+)|/Count\s+(\d+)[^>]*?/Type\s*/Pages\b", body)
        if found:
            return int(found.group(1) or found.group(2))
    raise AssertionError("no page tree in the PDF")


def test_pdf_has_pages(q3_pdf):
    assert q3_pdf.startswith(b"%PDF-")
    assert q3_pdf.rstrip().endswith(b"%%EOF")
    assert pdf_pages(q3_pdf) >= 2


def test_empty_quarter_says_no_drills(site):
    doc = build_report(site["catalog"], "2025Q1", objectives=objectives_from_policies(site["policies"]), now=NOW)
    assert doc["summary"]["results"] == 0 and doc["summary"]["rto"]["p95"] is None
    md = render(doc, "md").decode()
    html = render(doc, "html").decode()
    for text in (md, html):
        assert "No drills ran in 2025Q1" in text
        assert "2025-01-01 to 2025-03-31" in text
    assert "<svg" not in html  # nothing to draw, said in words instead
    assert render(doc, "pdf").startswith(b"%PDF-")


# ------------------------------------------------------------------ CLI


def test_cli_writes_each_format(site, run_cli, tmp_path):
    config = str(site["config"])
    out = tmp_path / "q3.html"
    result = run_cli("--config", config, "report", "--quarter", "2026Q3", "-o", str(out))
    assert result.code == 0, result.output
    assert "5/7 drill restores passed" in result.stdout and str(out) in result.stdout
    assert "71.4 %" in out.read_text()
    md = run_cli("--config", config, "report", "--quarter", "2026Q3", "--format", "md", "-o", "-")
    assert md.code == 0 and md.stdout.startswith("# DR drill report 2026Q3")
    assert "| erin | acme | standard |" in md.stdout


def test_cli_json_prints_the_data_and_writes_nothing(site, run_cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = run_cli("--config", str(site["config"]), "--json", "report", "--quarter", "2026q3")
    assert result.code == 0, result.output
    doc = result.json()
    assert doc["quarter"]["name"] == "2026Q3" and doc["summary"]["passed"] == 5
    assert doc["catalog"] == str(site["root"] / "catalog.db")
    assert list(tmp_path.iterdir()) == []


def test_cli_default_file_name(site, run_cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = run_cli("--config", str(site["config"]), "report", "--quarter", "2025Q1", "--format", "md")
    assert result.code == 0, result.output
    assert "no drills ran in 2025Q1" in result.stdout
    assert "No drills ran in 2025Q1" in (tmp_path / "drsvc-dr-report-2025Q1.md").read_text()


@pytest.mark.parametrize("quarter", ["2026Q5", "2026-10", "Q3"])
def test_cli_malformed_quarter_is_invalid_input(site, run_cli, quarter):
    result = run_cli("--config", str(site["config"]), "report", "--quarter", quarter)
    assert result.code == 2
    assert "expected YYYYQn" in result.stderr


def test_cli_unknown_suffix_needs_format(site, run_cli, tmp_path):
    result = run_cli("--config", str(site["config"]), "report", "--quarter", "2026Q3", "-o", str(tmp_path / "r.txt"))
    assert result.code == 2 and "--format" in result.stderr
