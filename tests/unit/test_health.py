"""Fleet health (drsvc/health.py) and `drsvc status`: objectives judged from the catalog alone."""

from __future__ import annotations

from datetime import timedelta

from drsvc import clock
from drsvc.health import read_health


def test_a_desktop_inside_its_rpo_is_ok(fleet):
    fleet.desktop("d1")
    point = fleet.point("d1", timedelta(minutes=30))
    health = read_health(fleet.catalog, fleet.policies, fleet.now)
    (d,) = health.desktops
    assert (d.desktop, d.policy, d.last_point, d.rpo_missed) == ("d1", "gold", point, False)
    assert d.age_seconds == 1800
    assert health.ok and health.missed == []


def test_an_old_last_point_misses_the_rpo_and_failures_since_are_counted(fleet):
    fleet.desktop("d1")
    fleet.point("d1", timedelta(hours=5))
    fleet.point("d1", timedelta(hours=6), status="failed", reason="before the success: not counted")
    fleet.point("d1", timedelta(hours=2, minutes=1), status="failed", reason="pool full")
    fleet.point("d1", timedelta(hours=1), status="failed", reason="pool still full")
    health = read_health(fleet.catalog, fleet.policies, fleet.now)
    (d,) = health.desktops
    assert d.rpo_missed and d.age_seconds == 5 * 3600
    assert (d.consecutive_failures, d.last_error) == (2, "pool still full")
    assert not health.ok
    assert health.missed == ["RPO missed: d1 (gold) last point 5h ago, objective 2h"]
    assert any("2 failed backup(s) in a row: pool still full" in p for p in health.problems)


def test_a_desktop_never_backed_up_counts_from_when_it_was_first_seen(fleet):
    fleet.desktop("new", first_seen=timedelta(minutes=10))
    fleet.desktop("forgotten", first_seen=timedelta(hours=3))
    health = read_health(fleet.catalog, fleet.policies, fleet.now)
    missed = {d.desktop: d.rpo_missed for d in health.desktops}
    assert missed == {"new": False, "forgotten": True}


def test_desktops_no_policy_covers_are_a_problem_not_an_objective(fleet):
    fleet.desktop("stray", tier="none")
    health = read_health(fleet.catalog, fleet.policies, fleet.now)
    assert health.unprotected == ["stray"] and health.ok
    assert health.problems == ["1 desktop(s) covered by no policy: stray"]


def test_a_drill_over_its_rto_target_misses_the_rto_objective(fleet):
    fleet.desktop("d1")
    fleet.point("d1", timedelta(minutes=5))
    fleet.drill(timedelta(days=2), [("d1", 50.0, False)])
    fleet.drill(timedelta(hours=1), [("d1", 12.0, True)])
    assert read_health(fleet.catalog, fleet.policies, fleet.now).ok  # the newest drill counts
    fleet.drill(timedelta(minutes=10), [("d1", 41.5, False)])
    health = read_health(fleet.catalog, fleet.policies, fleet.now)
    (p,) = health.policies
    assert p.rto_missed and p.last_drill_max_rto == 41.5 and p.last_drill_status == "failed"
    assert health.missed == [
        f"RTO missed: last drill of gold ({clock.to_iso(fleet.now - timedelta(minutes=10))}) "
        "took up to 41.5s, objective 30s"
    ]


def test_a_restore_left_running_is_reported(fleet):
    fleet.desktop("d1")
    point = fleet.point("d1", timedelta(minutes=5))
    for started in (timedelta(hours=3), timedelta(minutes=1)):  # the second may still be working
        fleet.catalog.execute(
            "INSERT INTO restores (desktop_id, point_id, tier, started_at, target_seconds, status) "
            "VALUES ('d1', ?, 'hot', ?, 30, 'running')",
            [point, clock.to_iso(fleet.now - started)],
        )
    health = read_health(fleet.catalog, fleet.policies, fleet.now)
    assert [r["started_at"] for r in health.interrupted_restores] == [clock.to_iso(fleet.now - timedelta(hours=3))]


def test_status_exits_5_on_a_missed_rpo_and_0_when_met(fleet, run_cli):
    config = fleet.config()
    fleet.desktop("d1")
    fleet.point("d1", timedelta(minutes=20))
    ok = run_cli("--config", str(config), "status")
    assert ok.code == 0, ok.output
    assert "OK  all objectives met" in ok.stdout
    fleet.desktop("d2")
    fleet.point("d2", timedelta(hours=9))
    missed = run_cli("--config", str(config), "status")
    assert missed.code == 5, missed.output
    assert "MISSED RPO missed: d2 (gold) last point 9h" in missed.stdout
    assert "CRITICAL  1 objective(s) missed" in missed.stdout
    doc = run_cli("--config", str(config), "--json", "status").json()
    assert doc["ok"] is False
    assert {d["desktop"]: d["rpo_missed"] for d in doc["desktops"]} == {"d1": False, "d2": True}


def test_status_takes_the_tier_lag_the_last_tier_run_recorded_and_says_when(fleet, run_cli, monkeypatch):
    import drsvc.health
    from drsvc.health import record_tier_lag
    from drsvc.policy import load_policies

    gold = fleet.root / "policies" / "gold.yaml"
    gold.write_text(gold.read_text() + "tiering: {after: 1h, storage_class: STANDARD}\n")
    fleet.policies = load_policies([fleet.root / "policies"])
    config = fleet.config()
    fleet.desktop("d1")
    fleet.point("d1", timedelta(minutes=20))
    planned: list[int] = []

    def plan(catalog, policies, now):  # type: ignore[no-untyped-def]
        planned.append(1)  # tiering's plan: retention over every point, seconds at fleet scale
        return {("d1", "gold"): 4}

    monkeypatch.setattr(drsvc.health, "tier_lag", plan)
    first = run_cli("--config", str(config), "--json", "status").json()
    assert planned == [1], "no tier run recorded a lag yet: status plans tiering"
    assert first["tier_lag"] == {"source": "planned", "recorded_at": None}
    assert first["policies"][0]["tier_lag"] == 4
    assert "no tier run has recorded one yet" in run_cli("--config", str(config), "status").stdout
    planned.clear()

    record_tier_lag(fleet.catalog, {("d1", "gold"): 2})
    doc = run_cli("--config", str(config), "--json", "status").json()
    text = run_cli("--config", str(config), "status", "--all").stdout
    assert planned == [], "a recorded tier lag is read, tiering is not planned again"
    assert doc["policies"][0]["tier_lag"] == 2 and doc["desktops"][0]["tier_lag"] == 2
    assert doc["tier_lag"]["source"] == "recorded"
    recorded = clock.from_iso(doc["tier_lag"]["recorded_at"])
    assert abs((recorded - clock.now()).total_seconds()) < 600
    assert "tier lag as the last tier run recorded it, " in text and " ago" in text.split("recorded it, ")[1]
    assert "gold: 2 point(s) due for the cold tier are not there" in text


def test_a_point_stamped_ahead_of_the_clock_is_a_problem_not_a_met_rpo(fleet):
    """The host's clock stepped back after a point was taken: the point looks newer than now, so
    the RPO would look met (and failures since would not count) for as long as the step. Said."""
    fleet.desktop("d1")
    point = fleet.point("d1", -timedelta(hours=3))
    health = read_health(fleet.catalog, fleet.policies, fleet.now)
    (d,) = health.desktops
    assert d.last_point == point and d.ahead_seconds == 3 * 3600
    assert any(
        p.startswith("d1 (gold): its newest point is stamped 3h ahead of this host's clock") for p in health.problems
    ), health.problems
    fleet.desktop("d2")
    fleet.point("d2", -timedelta(minutes=2))  # a few minutes of skew between hosts is not a step
    assert [d.ahead_seconds for d in read_health(fleet.catalog, fleet.policies, fleet.now).desktops] == [
        3 * 3600,
        None,
    ]
