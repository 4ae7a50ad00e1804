"""drsvc.retention: properties (hypothesis) and worked examples with real calendars and DST."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drsvc.retention import RULE_NAMES, RetentionRules, apply_retention

BERLIN = ZoneInfo("Europe/Berlin")
ZONES = [ZoneInfo(k) for k in ("UTC", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata")]

# Instants drawn from a small grid collide often (ties) and straddle DST changes; the free ones
# cover everything else.
grid_instant = st.integers(min_value=0, max_value=400).map(
    lambda k: datetime(2024, 3, 30, tzinfo=UTC) + timedelta(minutes=37 * k)
)
free_instant = st.datetimes(min_value=datetime(2022, 12, 1), max_value=datetime(2025, 2, 1), timezones=st.just(UTC))
instant = st.one_of(grid_instant, free_instant)


@st.composite
def point_lists(draw: st.DrawFn, min_size: int = 0) -> list[tuple[str, datetime]]:
    times = draw(st.lists(instant, min_size=min_size, max_size=40))
    ids = draw(st.permutations([f"p{i:03d}" for i in range(len(times))]))
    return list(zip(ids, times, strict=True))


count = st.one_of(st.none(), st.integers(min_value=0, max_value=6))
rules_st = st.builds(RetentionRules, last=count, hourly=count, daily=count, weekly=count, monthly=count, yearly=count)
zones = st.sampled_from(ZONES)


def newest_first(points: list[tuple[str, datetime]]) -> list[str]:
    return [pid for pid, _ in sorted(points, key=lambda p: (p[1].astimezone(UTC), p[0]), reverse=True)]


@given(point_lists(min_size=1), rules_st, zones)
def test_newest_point_always_kept(points: list[tuple[str, datetime]], rules: RetentionRules, tz: ZoneInfo) -> None:
    if not rules.empty and not any(n for _, n in rules.items()):
        return  # all-zero rules keep nothing (policies reject them)
    result = apply_retention(points, rules, tz)
    assert newest_first(points)[0] in result.keep


@given(point_lists(), st.integers(min_value=0, max_value=50), zones)
def test_last_n_keeps_exactly_the_n_newest(points: list[tuple[str, datetime]], n: int, tz: ZoneInfo) -> None:
    result = apply_retention(points, RetentionRules(last=n), tz)
    expected = newest_first(points)[: min(n, len(points))]
    assert list(result.keep) == expected
    assert all(reasons == [f"last {i}/{n}"] for i, reasons in enumerate(result.keep.values(), 1))


@given(point_lists(min_size=1), rules_st, zones, st.integers(min_value=1, max_value=10**7))
def test_adding_an_older_point_never_changes_newer_verdicts(
    points: list[tuple[str, datetime]], rules: RetentionRules, tz: ZoneInfo, seconds_older: int
) -> None:
    before = apply_retention(points, rules, tz)
    oldest = min(t for _, t in points)
    after = apply_retention([*points, ("older", oldest - timedelta(seconds=seconds_older))], rules, tz)
    assert {pid: r for pid, r in after.keep.items() if pid != "older"} == before.keep
    assert [pid for pid in after.drop if pid != "older"] == before.drop


@given(point_lists(), rules_st, zones)
def test_pruning_twice_equals_pruning_once(
    points: list[tuple[str, datetime]], rules: RetentionRules, tz: ZoneInfo
) -> None:
    once = apply_retention(points, rules, tz)
    kept = [(pid, t) for pid, t in points if pid in once.keep]
    twice = apply_retention(kept, rules, tz)
    assert twice.keep == once.keep
    assert twice.drop == []


@given(point_lists(), rules_st, zones)
def test_every_point_is_judged_once_and_explained(
    points: list[tuple[str, datetime]], rules: RetentionRules, tz: ZoneInfo
) -> None:
    result = apply_retention(points, rules, tz)
    ids = {pid for pid, _ in points}
    assert set(result.keep) | set(result.drop) == ids
    assert not set(result.keep) & set(result.drop)
    assert all(result.keep[pid] for pid in result.keep)
    order = newest_first(points)
    assert result.order == order
    assert list(result.keep) == [pid for pid in order if pid in result.keep]
    assert result.drop == [pid for pid in order if pid not in result.keep]


@settings(max_examples=50)
@given(point_lists(), zones)
def test_no_rules_keeps_everything(points: list[tuple[str, datetime]], tz: ZoneInfo) -> None:
    rules = RetentionRules()
    assert rules.empty
    result = apply_retention(points, rules, tz)
    assert set(result.keep) == {pid for pid, _ in points}
    assert result.drop == []


@given(point_lists(), rules_st, zones)
def test_input_order_does_not_matter(points: list[tuple[str, datetime]], rules: RetentionRules, tz: ZoneInfo) -> None:
    assert apply_retention(points, rules, tz) == apply_retention(list(reversed(points)), rules, tz)


# -- examples -----------------------------------------------------------------------------------


def berlin(*args: int) -> datetime:
    return datetime(*args, tzinfo=BERLIN)  # type: ignore[misc]


def test_rules_validate_and_describe() -> None:
    assert RetentionRules().empty
    assert not RetentionRules(last=0).empty
    assert RetentionRules(last=24, daily=7).describe() == "last 24, daily 7"
    assert RetentionRules().describe() == "keep everything (no rules)"
    assert RULE_NAMES == ("last", "hourly", "daily", "weekly", "monthly", "yearly")
    for bad in (-1, 1.5, "3", True):
        with pytest.raises(ValueError, match="non-negative integer"):
            RetentionRules(last=bad)  # type: ignore[arg-type]


def test_all_zero_rules_keep_nothing() -> None:
    result = apply_retention([("a", berlin(2024, 1, 1))], RetentionRules(last=0, daily=0), BERLIN)
    assert result.keep == {}
    assert result.drop == ["a"]


def test_daily_uses_local_dates_across_spring_forward() -> None:
    # 2024-03-31 02:00 CET -> 03:00 CEST in Berlin. 23:30 UTC on the 30th is already the 31st
    # in Berlin (00:30 CET), so it belongs to the 31st, not the 30th.
    points = [
        ("sat-noon", berlin(2024, 3, 30, 12)),
        ("sat-late-utc", datetime(2024, 3, 30, 23, 30, tzinfo=UTC)),
        ("sun-0130", berlin(2024, 3, 31, 1, 30)),
        ("sun-0330", berlin(2024, 3, 31, 3, 30)),
        ("mon-0100", berlin(2024, 4, 1, 1, 0)),
    ]
    result = apply_retention(points, RetentionRules(daily=2), BERLIN)
    assert result.keep == {
        "mon-0100": ["daily 1/2 (2024-04-01)"],
        "sun-0330": ["daily 2/2 (2024-03-31)"],
    }
    assert result.drop == ["sun-0130", "sat-late-utc", "sat-noon"]
    # In UTC the late point is the 30th's newest, and Monday 01:00 CEST is still the 31st.
    utc = apply_retention(points, RetentionRules(daily=3), ZoneInfo("UTC"))
    assert utc.keep == {"mon-0100": ["daily 1/3 (2024-03-31)"], "sat-late-utc": ["daily 2/3 (2024-03-30)"]}


def test_hourly_counts_the_repeated_fall_back_hour_twice() -> None:
    # 2024-10-27 03:00 CEST -> 02:00 CET: the wall-clock hour 02:xx happens twice.
    first = datetime(2024, 10, 27, 0, 40, tzinfo=UTC)  # 02:40 CEST
    second = datetime(2024, 10, 27, 1, 40, tzinfo=UTC)  # 02:40 CET
    first_early = datetime(2024, 10, 27, 0, 10, tzinfo=UTC)  # 02:10 CEST
    points = [("a", first_early), ("b", first), ("c", second)]
    result = apply_retention(points, RetentionRules(hourly=5), BERLIN)
    assert result.keep == {
        "c": ["hourly 1/5 (2024-10-27 02:00 +0100)"],
        "b": ["hourly 2/5 (2024-10-27 02:00 +0200)"],
    }
    assert result.drop == ["a"]


def test_weekly_is_iso_week_across_new_year_and_monthly_yearly() -> None:
    utc = ZoneInfo("UTC")
    points = [
        ("2024-12-29", datetime(2024, 12, 29, tzinfo=UTC)),  # Sunday, ISO 2024-W52
        ("2024-12-30", datetime(2024, 12, 30, tzinfo=UTC)),  # Monday, ISO 2025-W01
        ("2025-01-02", datetime(2025, 1, 2, tzinfo=UTC)),  # Thursday, ISO 2025-W01
        ("2024-11-15", datetime(2024, 11, 15, tzinfo=UTC)),
    ]
    weekly = apply_retention(points, RetentionRules(weekly=2), utc)
    assert weekly.keep == {"2025-01-02": ["weekly 1/2 (2025-W01)"], "2024-12-29": ["weekly 2/2 (2024-W52)"]}
    gfs = apply_retention(points, RetentionRules(last=1, monthly=3, yearly=2), utc)
    assert gfs.keep == {
        "2025-01-02": ["last 1/1", "monthly 1/3 (2025-01)", "yearly 1/2 (2025)"],
        "2024-12-30": ["monthly 2/3 (2024-12)", "yearly 2/2 (2024)"],
        "2024-11-15": ["monthly 3/3 (2024-11)"],
    }
    assert gfs.drop == ["2024-12-29"]


def test_no_fallback_to_oldest_when_fewer_periods() -> None:
    # Two days of history, daily 7: both days' newest are kept, nothing else -- no "keep the
    # oldest to fill up" (borg), which would make verdicts depend on older history.
    points = [(f"p{h}", datetime(2024, 5, 1 + h // 24, h % 24, tzinfo=UTC)) for h in range(48)]
    result = apply_retention(points, RetentionRules(daily=7), ZoneInfo("UTC"))
    assert list(result.keep) == ["p47", "p23"]


def test_ties_are_ordered_by_id() -> None:
    t = datetime(2024, 5, 1, 12, tzinfo=UTC)
    result = apply_retention([("a", t), ("c", t), ("b", t)], RetentionRules(last=1, daily=1), ZoneInfo("UTC"))
    assert result.order == ["c", "b", "a"]
    assert result.keep == {"c": ["last 1/1", "daily 1/1 (2024-05-01)"]}


def test_naive_times_are_utc_and_duplicate_ids_rejected() -> None:
    naive = datetime(2024, 5, 1, 23, 30)
    result = apply_retention([("a", naive)], RetentionRules(daily=1), BERLIN)
    assert result.keep == {"a": ["daily 1/1 (2024-05-02)"]}
    with pytest.raises(ValueError, match="duplicate point id"):
        apply_retention([("a", naive), ("a", naive)], RetentionRules(daily=1), BERLIN)
