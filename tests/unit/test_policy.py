"""drsvc.policy: validation messages, schedules across DST, selectors, the policy set."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml
from croniter import croniter
from hypothesis import given, settings
from hypothesis import strategies as st

from drsvc.errors import EXIT_INVALID, EXIT_NOT_FOUND, NotFound, PolicyError
from drsvc.policy import CronSchedule, Policy, PolicySet, load_policies, normalize_cron
from drsvc.retention import RetentionRules, apply_retention

REPO = Path(__file__).resolve().parents[2]
BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")

BASE: dict[str, Any] = {
    "name": "p",
    "selector": {"labels": {"tier": "x"}},
    "schedule": "0 * * * *",
    "timezone": "UTC",
}


def write(tmp_path: Path, name: str, doc: Any) -> Path:
    path = tmp_path / name
    path.write_text(doc if isinstance(doc, str) else yaml.safe_dump(doc), encoding="utf-8")
    return path


def errors_of(*paths: Path) -> list[str]:
    with pytest.raises(PolicyError) as info:
        load_policies(paths)
    assert info.value.exit_code == EXIT_INVALID
    return info.value.details


def policy(**changes: Any) -> Policy:
    return Policy.model_validate({**BASE, **changes})


# -- the shipped policies -------------------------------------------------------------------------


def test_shipped_policies_are_valid_and_warning_free() -> None:
    policies = load_policies([REPO / "policies"])
    assert policies.names == ["executive", "lab", "standard"]
    assert policies.warnings == ()
    std = policies.get("standard")
    assert std.retention.hot == RetentionRules(last=24, daily=7)
    assert isinstance(std.retention.cold, RetentionRules)
    assert std.retention.cold == RetentionRules(daily=30, weekly=8, monthly=12)
    assert std.tiering is not None and std.tiering.after == timedelta(days=1)
    assert std.tiering.storage_class == "STANDARD_IA"
    assert std.objectives.rpo == timedelta(hours=1) and std.objectives.rto == timedelta(seconds=30)
    assert std.probe is not None and std.probe.tcp == 5900
    assert std.capture.freeze_batch == 8 and std.capture.consistency == "paired"
    assert std.drill is not None and std.drill.sample_size(35) == 4
    assert std.drill.cron.next_runs(datetime(2024, 5, 1, tzinfo=UTC), 1) == [datetime(2024, 7, 1, 3, tzinfo=BERLIN)]
    assert str(std.drill.cron.next_runs(datetime(2024, 5, 1, tzinfo=UTC), 1)[0].tzinfo) == "Europe/Berlin"
    lab = policies.get("lab")
    assert lab.capture.consistency == "crash" and not lab.capture.checkpoint
    assert lab.tiering is not None and lab.tiering.storage_class == "GLACIER"
    exe = policies.get("executive")
    assert exe.tiering is not None and exe.tiering.object_lock_days == 30
    assert exe.retention.cold.yearly and exe.interval_max() == timedelta(minutes=15)
    # retention rules from a policy feed apply_retention directly
    apply_retention([("a", datetime(2024, 1, 1, tzinfo=UTC))], std.retention.hot, std.tz)


# -- one message per mistake ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"schedule": "61 * * * *"}, "schedule: minute field: 61 is out of range 0-59"),
        ({"schedule": "0 24 * * *"}, "schedule: hour field: 24 is out of range 0-23"),
        ({"schedule": "0 0 32 * *"}, "schedule: day-of-month field: 32 is out of range 1-31"),
        ({"schedule": "0 0 * 13 *"}, "schedule: month field: 13 is out of range 1-12"),
        ({"schedule": "0 0 * * 8"}, "schedule: day-of-week field: 8 is out of range 0-7"),
        ({"schedule": "0 * * *"}, "schedule: '0 * * *' has 4 fields"),
        ({"schedule": "*/0 * * * *"}, "schedule: minute field: step 0"),
        ({"schedule": "0 0 30 2 *"}, "schedule: '0 0 30 2 *' never fires"),
        ({"schedule": "@hourlyy"}, "schedule: unknown cron macro '@hourlyy' (did you mean '@hourly'?)"),
        ({"schedul": "0 * * * *"}, "schedul: unknown field (did you mean 'schedule'?)"),
        ({"timezone": "Europe/Berlim"}, "timezone: unknown time zone 'Europe/Berlim'"),
        ({"retention": {"hot": {"last": -1}}}, "retention.hot.last: must be a non-negative integer, got -1"),
        (
            {"retention": {"hot": {"daily": 1.5}}},
            "retention.hot.daily: must be a non-negative integer, got non-integer 1.5",
        ),
        (
            {"retention": {"cold": {"weekly": "3"}}},
            "retention.cold.weekly: must be a non-negative integer, got a string '3'",
        ),
        (
            {"retention": {"hot": {"last": True}}},
            "retention.hot.last: must be a non-negative integer, got non-integer True",
        ),
        ({"retention": {"hot": {"dayly": 3}}}, "retention.hot.dayly: unknown field (did you mean 'daily'?)"),
        ({"retention": {"hot": {"last": 0}}}, "retention.hot: every rule is 0"),
        ({"retention": {"warm": {}}}, "retention.warm: unknown field (known: hot, cold)"),
        ({"objectives": {"rpo": "1hour"}}, "objectives.rpo: malformed duration '1hour'"),
        ({"objectives": {"rpo": 60}}, "objectives.rpo: must be a duration like 30s, 15m, 1h, 1d, 2w, got 60"),
        ({"objectives": {"rto": "0s"}}, "objectives.rto: duration must be positive"),
        ({"tiering": {"after": "1d", "storage_class": "standard_ia"}}, "(did you mean 'STANDARD_IA'?)"),
        ({"tiering": {"storage_class": "GLACIER"}}, "tiering.after: required field missing"),
        ({"selector": {}}, "selector: needs at least one of tenant, labels, desktops"),
        (
            {"selector": {"labels": {"tier": 1}}},
            "selector.labels.tier: input should be a valid string, got 1",
        ),
        ({"capture": {"consistency": "crash"}}, "capture.consistency: 'crash' captures the volume only"),
        ({"capture": {"checkpoint": False}}, "capture.consistency: 'paired' needs checkpoint: true"),
        (
            {"capture": {"consistency": "atomic"}},
            "capture.consistency: must be one of paired, crash, got 'atomic'",
        ),
        ({"capture": {"freeze_batch": 0}}, "capture.freeze_batch: must be a positive integer, got 0"),
        ({"capture": {"deadline": "5s"}}, "capture.deadline: must be between 10s and 1d"),
        ({"capture": {"deadline": "2d"}}, "capture.deadline: must be between 10s and 1d"),
        ({"capture": {"checkpoint": "yes"}}, "capture.checkpoint: must be true or false, got 'yes'"),
        (
            {"drill": {"schedule": "0 3 1 */3 *", "sample": "150%"}},
            "drill.sample: must be a count >= 1 or a percentage",
        ),
        ({"drill": {"schedule": "0 3 1 */3 *", "sample": 0}}, "drill.sample: must be a count >= 1"),
        ({"probe": {"tcp": 70000}}, "probe.tcp: must be a TCP port 1-65535, got 70000"),
        ({"probe": {"tcp": 5900, "command": ["true"]}}, "probe: give exactly one of tcp"),
        ({"name": "bad name"}, "name: 'bad name': use letters"),
        ({"name": None}, "name: input should be a valid string"),
    ],
)
def test_each_mistake_names_file_and_field(tmp_path: Path, changes: dict[str, Any], expected: str) -> None:
    doc = {**BASE, **changes}
    if "schedul" in changes:
        del doc["schedule"]
    file = write(tmp_path, "bad.yaml", doc)
    details = errors_of(file)
    assert any(line.startswith(f"{file}: ") and expected in line for line in details), details


def test_missing_required_fields(tmp_path: Path) -> None:
    details = errors_of(write(tmp_path, "x.yaml", {"description": "nothing else"}))
    assert sorted(details) == sorted(
        f"{tmp_path / 'x.yaml'}: {field}: required field missing" for field in ("name", "selector", "schedule")
    )


def test_yaml_syntax_error_gives_line(tmp_path: Path) -> None:
    file = write(tmp_path, "x.yaml", "name: x\nselector:\n  labels: {tier: a\nschedule: '0 * * * *'\n")
    [line] = errors_of(file)
    assert line.startswith(f"{file}: line 4: ")


def test_duplicate_yaml_key_is_an_error(tmp_path: Path) -> None:
    text = "name: x\nselector: {tenant: t}\nschedule: '0 * * * *'\nschedule: '@daily'\n"
    [line] = errors_of(write(tmp_path, "x.yaml", text))
    assert line.endswith("line 4: duplicate key 'schedule' (first given on line 3)")


@pytest.mark.parametrize(
    ("text", "why"), [("- a\n- b\n", "got list"), ("just text\n", "got str"), ("", "file is empty")]
)
def test_not_a_mapping(tmp_path: Path, text: str, why: str) -> None:
    file = write(tmp_path, "x.yaml", text)
    [line] = errors_of(file)
    assert line.startswith(f"{file}: (top level): ") and why in line


def test_all_errors_of_all_files_at_once_and_nothing_loaded(tmp_path: Path) -> None:
    good = write(tmp_path, "a-good.yaml", BASE)
    bad1 = write(tmp_path, "b.yaml", {**BASE, "name": "b", "schedule": "61 * * * *", "objectives": {"rpo": "x"}})
    bad2 = write(tmp_path, "c.yml", {**BASE, "name": "c", "retention": {"hot": {"last": -1}}})
    write(tmp_path, "notes.txt", "ignored: not a policy file")
    with pytest.raises(PolicyError) as info:
        load_policies([tmp_path])
    details = info.value.details
    assert "3 problems" in info.value.message and "nothing was loaded" in info.value.message
    assert [line.split(": ")[0] for line in details] == [str(bad1), str(bad1), str(bad2)]
    assert str(good) not in "\n".join(details)


def test_duplicate_names_across_files_name_both(tmp_path: Path) -> None:
    first = write(tmp_path, "one.yaml", BASE)
    second = write(tmp_path, "two.yaml", BASE)
    [line] = errors_of(tmp_path)
    assert line == f"{second}: name: policy 'p' is already defined in {first}"


def test_missing_path(tmp_path: Path) -> None:
    [line] = errors_of(tmp_path / "nope")
    assert line == f"{tmp_path / 'nope'}: no such file or directory"


def test_rpo_warning(tmp_path: Path) -> None:
    file = write(tmp_path, "x.yaml", {**BASE, "schedule": "0 */2 * * *", "objectives": {"rpo": "1h"}})
    policies = load_policies([file])
    assert policies.names == ["p"]
    assert policies.warnings == (
        f"{file}: objectives.rpo: 1h is shorter than the longest gap between scheduled runs (2h); "
        "the RPO will be missed every such gap",
    )


def test_cold_rules_without_tiering_warn(tmp_path: Path) -> None:
    file = write(tmp_path, "x.yaml", {**BASE, "retention": {"cold": {"daily": 3}}})
    [warning] = load_policies([file]).warnings
    assert warning.startswith(f"{file}: retention.cold: ")


# -- schedules ------------------------------------------------------------------------------------


def iso(runs: list[datetime]) -> list[str]:
    return [r.isoformat() for r in runs]


def test_spring_forward_fixed_hour_runs_once_after_the_jump() -> None:
    p = policy(schedule="0 2 * * *", timezone="Europe/Berlin")
    assert iso(p.next_runs(datetime(2024, 3, 29, 12, tzinfo=BERLIN), 4)) == [
        "2024-03-30T02:00:00+01:00",
        "2024-03-31T03:00:00+02:00",  # 02:00 does not exist that night
        "2024-04-01T02:00:00+02:00",
        "2024-04-02T02:00:00+02:00",
    ]


def test_fall_back_fixed_hour_runs_once() -> None:
    p = policy(schedule="0 2 * * *", timezone="Europe/Berlin")
    assert iso(p.next_runs(datetime(2024, 10, 25, 12, tzinfo=BERLIN), 4)) == [
        "2024-10-26T02:00:00+02:00",
        "2024-10-27T02:00:00+02:00",  # first 02:00 only, not again at 02:00+01:00
        "2024-10-28T02:00:00+01:00",
        "2024-10-29T02:00:00+01:00",
    ]
    assert p.interval_max() == timedelta(hours=25)


def test_hourly_keeps_its_rhythm_through_both_dst_changes() -> None:
    p = policy(schedule="30 * * * *", timezone="Europe/Berlin")
    spring = p.next_runs(datetime(2024, 3, 31, 0, 0, tzinfo=UTC), 4)  # 01:00 CET
    assert iso(spring) == [
        "2024-03-31T01:30:00+01:00",
        "2024-03-31T03:30:00+02:00",
        "2024-03-31T04:30:00+02:00",
        "2024-03-31T05:30:00+02:00",
    ]
    fall = p.next_runs(datetime(2024, 10, 26, 23, 0, tzinfo=UTC), 4)  # 01:00 CEST
    assert iso(fall) == [
        "2024-10-27T01:30:00+02:00",
        "2024-10-27T02:30:00+02:00",
        "2024-10-27T02:30:00+01:00",
        "2024-10-27T03:30:00+01:00",
    ]
    gaps = {b.astimezone(UTC) - a.astimezone(UTC) for a, b in pairwise(fall)}
    assert gaps == {timedelta(hours=1)}
    assert p.interval_max() == timedelta(hours=1)


def test_new_york_and_starting_inside_the_repeated_hour() -> None:
    p = policy(schedule="*/30 * * * *", timezone="America/New_York")
    # 2024-11-03 01:00 EDT -> back to 01:00 EST; start at 01:10 EST (the second 01:10)
    start = datetime(2024, 11, 3, 6, 10, tzinfo=UTC)
    assert iso(p.next_runs(start, 3)) == [
        "2024-11-03T01:30:00-05:00",
        "2024-11-03T02:00:00-05:00",
        "2024-11-03T02:30:00-05:00",
    ]
    assert iso(p.next_runs(datetime(2024, 11, 3, 5, 10, tzinfo=UTC), 3)) == [
        "2024-11-03T01:30:00-04:00",
        "2024-11-03T01:00:00-05:00",
        "2024-11-03T01:30:00-05:00",
    ]


def test_next_runs_match_independent_utc_stepping() -> None:
    p = policy(schedule="0 * * * *", timezone="Europe/Berlin")
    start = datetime(2024, 3, 30, 22, 17, tzinfo=UTC)
    expected = [(datetime(2024, 3, 30, 23, tzinfo=UTC) + timedelta(hours=i)).astimezone(BERLIN) for i in range(50)]
    assert iso(p.next_runs(start, 50)) == iso(expected)


def test_naive_start_is_policy_wall_time_and_runs_are_strictly_after() -> None:
    p = policy(schedule="@daily", timezone="America/New_York")
    assert iso(p.next_runs(datetime(2024, 6, 1, 0, 0), 1)) == ["2024-06-02T00:00:00-04:00"]


def test_previous_run_and_runs_between() -> None:
    p = policy(schedule="0 3 1 1,4,7,10 *", timezone="Europe/Berlin")
    assert p.previous_run(datetime(2024, 5, 20, tzinfo=BERLIN)) == datetime(2024, 4, 1, 3, tzinfo=BERLIN)
    at = datetime(2024, 4, 1, 3, tzinfo=BERLIN)
    assert p.previous_run(at) == at
    hourly = policy(schedule="@hourly")
    runs = hourly.runs_between(datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 1, 2, tzinfo=UTC))
    assert len(runs) == 24 and runs[-1] == datetime(2024, 1, 2, tzinfo=UTC)


@pytest.mark.parametrize(
    ("schedule", "tz", "gap"),
    [
        ("0 * * * *", "UTC", timedelta(hours=1)),
        ("*/15 * * * *", "Europe/Berlin", timedelta(minutes=15)),
        ("@daily", "UTC", timedelta(days=1)),
        ("0 9 * * 1-5", "UTC", timedelta(days=3)),
        ("0 0 1 * *", "UTC", timedelta(days=31)),
        ("0 0 29 2 *", "UTC", timedelta(days=4 * 365 + 1)),
    ],
)
def test_interval_max(schedule: str, tz: str, gap: timedelta) -> None:
    assert CronSchedule(schedule, ZoneInfo(tz)).interval_max() == gap


@pytest.mark.parametrize(
    ("expr", "fields"),
    [
        ("@hourly", "0 * * * *"),
        ("@weekly", "0 0 * * 0"),
        ("0 3 1 jan,apr *", "0 3 1 jan,apr *"),
        ("5-10/2 * * * mon-fri", "5-10/2 * * * mon-fri"),
    ],
)
def test_normalize_cron(expr: str, fields: str) -> None:
    assert normalize_cron(expr) == fields


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ("0 0 * * 10-2", "day-of-week field: 10 is out of range"),
        ("0 5-1 * * *", "runs backwards"),
        ("x * * * *", "not a number"),
    ],
)
def test_normalize_cron_rejects(expr: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        normalize_cron(expr)


# -- selectors and the set ------------------------------------------------------------------------


def test_selector_all_given_criteria_must_match() -> None:
    sel = policy(selector={"tenant": "acme", "labels": {"tier": "std"}, "desktops": ["alice", "bob"]}).selector
    assert sel.matches("alice", "acme", {"tier": "std", "other": "x"})
    assert not sel.matches("carol", "acme", {"tier": "std"})
    assert not sel.matches("alice", "other", {"tier": "std"})
    assert not sel.matches("alice", "acme", {"tier": "exec"})
    assert not sel.matches("alice", None, {"tier": "std"})
    only_tenant = policy(selector={"tenant": "acme"}).selector
    assert only_tenant.matches("anyone", "acme", {})


def test_policy_set_get_and_for_desktop(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", {**BASE, "name": "std", "selector": {"labels": {"tier": "standard"}}})
    write(tmp_path, "b.yaml", {**BASE, "name": "acme-all", "selector": {"tenant": "acme"}})
    policies = load_policies([tmp_path])
    assert isinstance(policies, PolicySet) and len(policies) == 2 and "std" in policies
    assert policies.sources["std"] == tmp_path / "a.yaml"
    assert [p.name for p in policies.for_desktop("alice", "acme", {"tier": "standard"})] == [
        "acme-all",
        "std",
    ]
    assert [p.name for p in policies.for_desktop("bob", None, {"tier": "standard"})] == ["std"]
    assert policies.for_desktop("carol") == []
    with pytest.raises(NotFound) as info:
        policies.get("stdd")
    assert info.value.exit_code == EXIT_NOT_FOUND
    assert "did you mean 'std'?" in info.value.message and "acme-all, std" in info.value.message


def test_policy_is_immutable() -> None:
    p = policy()
    with pytest.raises(ValueError):
        p.name = "other"  # type: ignore[misc]


@settings(max_examples=150, deadline=None)
@given(
    st.sampled_from(["0 * * * *", "30 2 * * *", "*/20 * * * *", "0 1-3 * * *", "15 0,2 * * 0", "@daily"]),
    st.sampled_from(["UTC", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe"]),
    st.datetimes(min_value=datetime(2024, 1, 1), max_value=datetime(2025, 12, 31), timezones=st.just(UTC)),
)
def test_schedule_iteration_is_consistent(expr: str, zone: str, start: datetime) -> None:
    schedule = CronSchedule(expr, ZoneInfo(zone))
    runs = schedule.next_runs(start, 6)
    utc = [r.astimezone(UTC) for r in runs]
    assert len(runs) == 6 and utc[0] > start
    assert all(a < b for a, b in pairwise(utc))
    assert all(r.tzinfo is ZoneInfo(zone) for r in runs)
    assert [r.astimezone(UTC) for r in schedule.next_runs(runs[0], 5)] == utc[1:]
    assert schedule.previous_run(runs[3]).astimezone(UTC) == utc[3]  # type: ignore[union-attr]
    assert schedule.previous_run(utc[3] - timedelta(seconds=1)).astimezone(UTC) == utc[2]  # type: ignore[union-attr]
    if zone == "UTC":
        it = croniter(normalize_cron(expr), start)
        assert utc == [it.get_next(datetime) for _ in range(6)]
