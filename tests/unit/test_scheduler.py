"""Due windows: missed windows run once, a window never runs twice, failures back off."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from drsvc.catalog import Catalog
from drsvc.policy import load_policies
from drsvc.scheduler import MAX_ATTEMPTS, State, backoff, due, load_states, record_outcome

T = datetime(2026, 11, 27, 10, 0, 30, tzinfo=UTC)


@pytest.fixture
def policies(tmp_path):
    (tmp_path / "hourly.yaml").write_text(
        "name: hourly\nselector: {tenant: acme}\nschedule: '0 * * * *'\ntimezone: UTC\n"
    )
    (tmp_path / "quarter.yaml").write_text(
        "name: quarter\nselector: {tenant: acme}\nschedule: '*/15 * * * *'\ntimezone: UTC\n"
    )
    return load_policies([tmp_path])


def test_never_run_policies_are_due_at_their_latest_window(policies):
    items = {d.policy: d for d in due(policies, {}, T)}
    assert items["hourly"].window == datetime(2026, 11, 27, 10, 0, tzinfo=UTC)
    assert items["quarter"].window == datetime(2026, 11, 27, 10, 0, tzinfo=UTC)
    assert "never ran" in items["hourly"].why


def test_a_window_that_ran_is_not_due_again(policies):
    ran = {("hourly", "backup"): State(datetime(2026, 11, 27, 10, 0, tzinfo=UTC))}
    assert [d.policy for d in due(policies, ran, T + timedelta(minutes=59))] == ["quarter"]


def test_missed_windows_collapse_into_one_run(policies):
    ran = {("quarter", "backup"): State(datetime(2026, 11, 27, 6, 0, tzinfo=UTC))}
    [item] = [d for d in due(policies, ran, T) if d.policy == "quarter"]
    assert item.missed == 16 and item.window == datetime(2026, 11, 27, 10, 0, tzinfo=UTC)
    assert "16 windows missed" in item.why and "runs once" in item.why


def test_failures_back_off_then_give_up_on_the_window(policies):
    catalog = Catalog.open(":memory:")
    [item] = [d for d in due(policies, {}, T) if d.policy == "hourly"]
    record_outcome(catalog, item, "ceph down", T)
    states = load_states(catalog)
    assert states[("hourly", "backup")].attempts == 1
    assert not [d for d in due(policies, states, T + timedelta(seconds=30)) if d.policy == "hourly"]
    later = [d for d in due(policies, states, T + backoff(1)) if d.policy == "hourly"]
    assert later and "attempt 2" in later[0].why
    for _ in range(2, MAX_ATTEMPTS + 1):
        record_outcome(catalog, item, "ceph down", T)
    state = load_states(catalog)[("hourly", "backup")]
    assert state.last_window == item.window and state.attempts == 0  # given up: next window retries
    assert [backoff(n).total_seconds() for n in (1, 2, 3, 8)] == [60, 120, 240, 3600]


def test_success_closes_the_window(policies):
    catalog = Catalog.open(":memory:")
    [item] = [d for d in due(policies, {}, T) if d.policy == "hourly"]
    record_outcome(catalog, item, None, T)
    assert not [d for d in due(policies, load_states(catalog), T) if d.policy == "hourly"]


def test_drill_schedules_are_due_like_backups(tmp_path):
    (tmp_path / "q.yaml").write_text(
        "name: q\nselector: {tenant: acme}\nschedule: '0 * * * *'\ntimezone: UTC\n"
        "drill: {schedule: '0 3 1 1,4,7,10 *', sample: 2}\n"
    )
    items = {(d.policy, d.purpose): d for d in due(load_policies([tmp_path]), {}, T)}
    assert items[("q", "drill")].window == datetime(2026, 10, 1, 3, 0, tzinfo=UTC)
    ran = {("q", "drill"): State(datetime(2026, 10, 1, 3, 0, tzinfo=UTC))}
    assert ("q", "drill") not in {(d.policy, d.purpose) for d in due(load_policies([tmp_path]), ran, T)}


def test_a_window_recorded_before_the_clock_stepped_back_does_not_stop_backups(policies):
    """The host ran 3 h ahead (a bad RTC, no NTP yet) and recorded 13:00 as its last window; NTP
    steps it back to 10:00. The window of now runs (one extra point), not nothing until 14:00."""
    ahead = {("hourly", "backup"): State(datetime(2026, 11, 27, 13, 0, tzinfo=UTC))}
    [item] = [d for d in due(policies, ahead, T) if d.policy == "hourly"]
    assert item.window == datetime(2026, 11, 27, 10, 0, tzinfo=UTC) and item.missed == 1
    assert "clock stepped back" in item.why


def test_a_retry_time_beyond_any_backoff_is_a_clock_step_back_and_not_waited_for(policies):
    ahead = {("hourly", "backup"): State(None, 1, T + timedelta(hours=3))}
    assert [d.policy for d in due(policies, ahead, T) if d.policy == "hourly"] == ["hourly"]
    soon = {("hourly", "backup"): State(None, 1, T + backoff(1))}
    assert not [d for d in due(policies, soon, T) if d.policy == "hourly"], "a real backoff was not waited for"
