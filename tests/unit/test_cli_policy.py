"""``drsvc policy check | plan`` through the real entry point: exit codes, messages, output."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml
from golden import check_golden

REPO = Path(__file__).resolve().parents[2]
POLICIES = str(REPO / "policies")
GOLDEN = Path(__file__).parent / "golden"
BERLIN = ZoneInfo("Europe/Berlin")

BASE: dict[str, Any] = {
    "name": "p",
    "selector": {"labels": {"tier": "x"}},
    "schedule": "0 * * * *",
    "timezone": "UTC",
}


def write(directory: Path, name: str, doc: Any) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(doc if isinstance(doc, str) else yaml.safe_dump(doc), encoding="utf-8")
    return path


def test_check_shipped_policies(run_cli) -> None:
    result = run_cli("policy", "check", POLICIES)
    assert result.code == 0, result.output
    assert result.stdout.strip() == "OK  3 policies in 3 files"
    assert result.stderr == ""


def test_check_json(run_cli) -> None:
    result = run_cli("--json", "policy", "check", POLICIES)
    assert result.code == 0
    doc = result.json()
    assert doc["policies"] == ["executive", "lab", "standard"]
    assert [Path(f).name for f in doc["files"]] == ["executive.yaml", "lab.yaml", "standard.yaml"]
    assert doc["warnings"] == [] and doc["errors"] == []


BROKEN = [
    ("cron.yaml", {**BASE, "schedule": "61 * * * *"}, "schedule: minute field: 61 is out of range 0-59"),
    (
        "typo.yaml",
        {k: v for k, v in {**BASE, "schedul": "@daily"}.items() if k != "schedule"},
        "schedul: unknown field (did you mean 'schedule'?)",
    ),
    (
        "negative.yaml",
        {**BASE, "retention": {"hot": {"last": -1}}},
        "retention.hot.last: must be a non-negative integer, got -1",
    ),
    (
        "float.yaml",
        {**BASE, "retention": {"hot": {"daily": 1.5}}},
        "retention.hot.daily: must be a non-negative integer",
    ),
    (
        "string.yaml",
        {**BASE, "retention": {"cold": {"weekly": "3"}}},
        "retention.cold.weekly: must be a non-negative integer",
    ),
    ("duration.yaml", {**BASE, "objectives": {"rpo": "1hour"}}, "objectives.rpo: malformed duration '1hour'"),
    (
        "syntax.yaml",
        "name: p\nselector: {tenant: t}\nschedule: '0 * * * *'\ncapture: [checkpoint\n",
        "line 5: ",
    ),
    ("list.yaml", "- name: p\n", "(top level): must be a mapping"),
]


@pytest.mark.parametrize(("name", "doc", "expected"), BROKEN, ids=[b[0] for b in BROKEN])
def test_check_broken_policy(run_cli, tmp_path: Path, name: str, doc: Any, expected: str) -> None:
    file = write(tmp_path, name, doc)
    result = run_cli("policy", "check", str(file))
    assert result.code == 2
    assert f"{file}: {expected}" in result.stderr
    assert result.stdout == ""


def test_check_broken_policy_json(run_cli, tmp_path: Path) -> None:
    file = write(tmp_path, "x.yaml", {**BASE, "schedule": "61 * * * *"})
    result = run_cli("--json", "policy", "check", str(file))
    assert result.code == 2
    assert result.json()["details"] == [f"{file}: schedule: minute field: 61 is out of range 0-59"]


def test_check_lists_every_error_of_every_file(run_cli, tmp_path: Path) -> None:
    one = write(tmp_path, "one.yaml", {**BASE, "name": "one", "schedule": "61 * * * *"})
    two = write(tmp_path, "two.yaml", {**BASE, "name": "two", "objectives": {"rpo": "1hour"}, "tiering": {}})
    result = run_cli("policy", "check", str(tmp_path))
    assert result.code == 2
    assert f"{one}: schedule: " in result.stderr
    assert f"{two}: objectives.rpo: " in result.stderr
    assert f"{two}: tiering.after: required field missing" in result.stderr
    assert "3 problems in policy files" in result.stderr


def test_check_duplicate_names_across_files(run_cli, tmp_path: Path) -> None:
    first = write(tmp_path / "a", "std.yaml", BASE)
    second = write(tmp_path / "b", "std.yaml", BASE)
    result = run_cli("policy", "check", str(tmp_path / "a"), str(tmp_path / "b"))
    assert result.code == 2
    assert f"{second}: name: policy 'p' is already defined in {first}" in result.stderr


def test_check_rpo_warning_is_not_an_error(run_cli, tmp_path: Path) -> None:
    file = write(tmp_path, "x.yaml", {**BASE, "schedule": "@daily", "objectives": {"rpo": "1h"}})
    result = run_cli("policy", "check", str(file))
    assert result.code == 0
    assert result.stdout.strip() == "OK  1 policy in 1 file"
    assert f"warning: {file}: objectives.rpo: 1h is shorter than the longest gap" in result.stderr


def test_check_without_paths_needs_config(run_cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Without PATH the configured directory is checked; with no config at all it is a config error.
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DRSVC_CONFIG", raising=False)
    if Path("/etc/drsvc/drsvc.toml").exists():
        pytest.skip("a system config exists on this machine")
    result = run_cli("policy", "check")
    assert result.code == 2
    assert result.stderr.startswith("drsvc: error: ")


# -- plan -----------------------------------------------------------------------------------------


def test_plan_next_runs_exact(run_cli) -> None:
    result = run_cli("policy", "plan", "standard", "--policies", POLICIES, "--from", "2024-03-31T00:30:00+01:00")
    assert result.code == 0, result.output
    # Independently: hourly on the hour, stepped in UTC, shown in Berlin time (DST jump at 02:00).
    start = datetime(2024, 3, 31, 0, 0, tzinfo=UTC)
    expected = [(start + timedelta(hours=i)).astimezone(BERLIN) for i in range(5)]
    assert [t.isoformat() for t in expected] == [
        "2024-03-31T01:00:00+01:00",
        "2024-03-31T03:00:00+02:00",
        "2024-03-31T04:00:00+02:00",
        "2024-03-31T05:00:00+02:00",
        "2024-03-31T06:00:00+02:00",
    ]
    for i, t in enumerate(expected, 1):
        assert f"│ {i} │ {t.isoformat()} │ {t:%a} │" in result.stdout
    assert "2024-03-31T02:00:00" not in result.stdout


def test_plan_next_json(run_cli) -> None:
    result = run_cli(
        "--json",
        "policy",
        "plan",
        "executive",
        "--next",
        "3",
        "--policies",
        POLICIES,
        "--from",
        "2024-10-27T02:50:00+02:00",
    )
    assert result.code == 0
    doc = result.json()
    assert doc["policy"] == "executive" and doc["timezone"] == "Europe/Berlin"
    assert doc["next_runs"] == [
        "2024-10-27T02:00:00+01:00",
        "2024-10-27T02:15:00+01:00",
        "2024-10-27T02:30:00+01:00",
    ]
    assert "retention" not in doc


def test_plan_naive_from_is_policy_time(run_cli) -> None:
    result = run_cli(
        "--json", "policy", "plan", "lab", "--next", "1", "--policies", POLICIES, "--from", "2024-06-01T12:00"
    )
    assert result.json()["next_runs"] == ["2024-06-02T00:00:00+00:00"]


def test_plan_retention_explains_every_keep(run_cli) -> None:
    args = (
        "policy",
        "plan",
        "standard",
        "--policies",
        POLICIES,
        "--from",
        "2024-04-02T12:30:00+02:00",
        "--retention",
        "--days",
        "10",
    )
    doc = run_cli("--json", *args).json()
    hot, cold = doc["retention"]["hot"], doc["retention"]["cold"]
    assert len(hot) == 10 * 24  # ten days (real time, DST or not) of hourly runs
    kept = [row for row in hot if row["keep"]]
    assert all(row["reasons"] for row in kept)
    assert all(not row["reasons"] for row in hot if not row["keep"])
    assert [row["reasons"] for row in kept[:2]] == [["last 1/24", "daily 1/7 (2024-04-02)"], ["last 2/24"]]
    # the 24 newest (back to 04-01 13:00, so 04-02 and 04-01 are in), plus 03-31 .. 03-27
    assert len(kept) == 24 + 5
    assert hot[0]["taken_at"] == "2024-04-02T12:00:00+02:00"
    # cold: only points at least 1d old, kept by daily 30 / weekly 8 / monthly 12
    assert cold[0]["taken_at"] == "2024-04-01T12:00:00+02:00"
    assert cold[0]["reasons"] == [
        "daily 1/30 (2024-04-01)",
        "weekly 1/8 (2024-W14)",
        "monthly 1/12 (2024-04)",
    ]
    assert len(cold) == 9 * 24  # 03-23 12:00 CET (11:00Z) .. 04-01 12:00 CEST (10:00Z)
    assert sum(row["keep"] for row in cold) == 10  # one per day: 2024-04-01 back to 2024-03-23

    human = run_cli(*args)
    assert human.code == 0
    assert "hot tier (last 24, daily 7): 240 points, 29 kept, 211 dropped" in human.stdout
    assert "cold tier (daily 30, weekly 8, monthly 12): 216 points, 10 kept, 206 dropped" in human.stdout
    keep_rows = [line for line in human.stdout.splitlines() if "│ keep " in line]
    assert len(keep_rows) == 29 + 10
    assert all(line.split("│")[4].strip() for line in keep_rows)


def test_plan_retention_golden(run_cli) -> None:
    result = run_cli(
        "--json",
        "policy",
        "plan",
        "lab",
        "--policies",
        POLICIES,
        "--from",
        "2024-03-31T12:00:00Z",
        "--retention",
        "--days",
        "40",
    )
    assert result.code == 0
    doc = result.json()
    # facts checked without the golden file: 40 daily points; the lab policy keeps the newest 3 hot
    # (daily: 3) and, of the 38 old enough to be tiered (after: 2d), 4 weeklies and the monthlies
    hot, cold = doc["retention"]["hot"], doc["retention"]["cold"]
    assert len(hot) == 40 and len(cold) == 38
    newest = sorted(hot, key=lambda d: d["taken_at"], reverse=True)
    assert [d["keep"] for d in newest] == [True] * 3 + [False] * 37
    assert 4 <= sum(d["keep"] for d in cold) <= 4 + 2  # Feb and Mar 2024 are in the 40 days
    assert all(d["reasons"] for d in hot + cold if d["keep"]), "a kept point without the rule that kept it"
    check_golden(GOLDEN / "plan_lab_retention.json", result.stdout)


def test_plan_unknown_policy_is_not_found(run_cli) -> None:
    result = run_cli("policy", "plan", "standrad", "--policies", POLICIES)
    assert result.code == 3
    assert "no policy named 'standrad' (did you mean 'standard'?)" in result.stderr


def test_plan_bad_from(run_cli) -> None:
    result = run_cli("policy", "plan", "standard", "--policies", POLICIES, "--from", "yesterday")
    assert result.code == 2
    assert "--from" in result.stderr


def test_plan_refuses_an_invalid_policy_set(run_cli, tmp_path: Path) -> None:
    write(tmp_path, "good.yaml", BASE)
    bad = write(tmp_path, "bad.yaml", {**BASE, "name": "bad", "timezone": "Nowhere/Land"})
    result = run_cli("policy", "plan", "p", "--policies", str(tmp_path))
    assert result.code == 2
    assert f"{bad}: timezone: unknown time zone 'Nowhere/Land'" in result.stderr


def test_help_texts(run_cli) -> None:
    for args in (("policy",), ("policy", "check"), ("policy", "plan")):
        result = run_cli(*args, "--help")
        assert result.code == 0
        assert "Exit codes" in result.stdout
    plan_help = run_cli("policy", "plan", "--help").stdout
    for option in ("--next", "--retention", "--days", "--policies", "--from"):
        assert option in plan_help


def test_check_and_plan_use_the_configured_directory(run_cli, tmp_path: Path) -> None:
    policies = tmp_path / "pol"
    write(policies, "p.yaml", {**BASE, "schedule": "@weekly"})
    (tmp_path / "key").write_text("00" * 32)
    config = tmp_path / "drsvc.toml"
    config.write_text('policies_dir = "pol"\n[catalog]\npath = "catalog.db"\n[keys]\nfile = "key"\n', encoding="utf-8")
    result = run_cli("--config", str(config), "--json", "policy", "check")
    assert result.code == 0, result.output
    assert result.json()["policies"] == ["p"]
    result = run_cli("--config", str(config), "--json", "policy", "plan", "p", "--next", "1", "--from", "2024-06-05")
    assert result.code == 0, result.output
    assert result.json()["next_runs"] == ["2024-06-09T00:00:00+00:00"]  # Sunday midnight
