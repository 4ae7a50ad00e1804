"""``--log-format json``: every line drsvc writes on stderr (and on stdout without --json) is one
JSON object, for each state-changing command, when it succeeds and when it fails: progress as
``progress`` events with their numbers, notes as ``COMMAND.note``, the result as one
``COMMAND.result`` line, the final error as an ``error`` event with ``exit_code``, ``message``
and ``hint``. ``--json`` documents are unchanged.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from contractlib import contract
from deployment import Deployment


def lines(result: Any) -> list[dict[str, Any]]:
    """Every line of stdout and stderr, each parsed as one JSON object (fails on any other line)."""
    parsed = []
    for stream in (result.stdout, result.stderr):
        for line in stream.splitlines():
            try:
                doc = json.loads(line)
            except json.JSONDecodeError:
                pytest.fail(f"not a JSON line: {line!r}\n{result.output}")
            assert isinstance(doc, dict) and {"time", "level", "event", "message"} <= set(doc), line
            parsed.append(doc)
    return parsed


def final_error(result: Any, code: int) -> dict[str, Any]:
    assert result.code == code, result.output
    errors = [d for d in lines(result) if d["event"] == "error"]
    assert len(errors) == 1, result.output
    [error] = errors
    assert error["exit_code"] == code and error["level"] == "error" and "hint" in error, error
    return error


SUCCESSES = [
    ("backup", "alice"),
    ("backup", "--policy", "standard", "--dry-run"),
    ("tier",),
    ("prune",),
    ("verify", "--all", "--read-data"),
    ("restore", "alice", "--force"),
    ("restore", "bob", "--as", "bob-clone"),
    ("drill", "alice"),
    ("cleanup",),
    ("run", "--once"),
    ("catalog", "rebuild"),
    ("keys", "rotate", "--tenant", "acme"),
    ("copy",),
    ("catalog", "adopt-store", "cold"),
    ("init",),
]


@contract("backup", 0)
@pytest.mark.parametrize("args", SUCCESSES, ids=" ".join)
def test_every_line_of_a_command_that_succeeds_is_json(fleet: Deployment, args: tuple[str, ...]) -> None:
    r = fleet.cli("--log-format", "json", *args)
    assert r.code in (0, 5), r.output
    docs = lines(r)
    command = args[0]
    results = [d for d in docs if d["event"] == f"{command}.result"]
    assert len(results) == 1 and isinstance(results[0]["result"], dict | list), r.output
    assert r.stdout.count("\n") == 1, "stdout holds the one result line"


def test_reading_commands_print_json_lines_too(fleet: Deployment) -> None:
    [point] = [p["id"] for p in fleet.cli("--json", "points", "list", "alice").json()]
    for args in (
        ("points", "list"),
        ("points", "show", point),
        ("points", "ls", point),
        ("points", "diff", point, point),
        ("desktops", "list"),
        ("status",),
        ("policy", "check"),
        ("runbook", "list"),
        ("site", "list"),
    ):
        r = fleet.cli("--log-format", "json", *args)
        assert r.code in (0, 5), r.output
        assert [d["event"] for d in lines(r) if d["event"].endswith(".result")] == [f"{args[0]}.result"], r.output


def test_progress_is_an_event_with_its_numbers(fleet: Deployment) -> None:
    r = fleet.cli("--log-format", "json", "backup", "alice")
    assert r.code == 0, r.output
    progress = [d for d in lines(r) if d["event"] == "progress"]
    assert progress, r.output
    done = [d for d in progress if d["done"]]
    assert done and all(isinstance(d["bytes"], int) and d["task"] for d in done), progress


def test_the_option_is_taken_after_the_command_too(fleet: Deployment) -> None:
    r = fleet.cli("backup", "nobody", "--log-format", "json")
    error = final_error(r, 3)
    assert "nobody" in error["message"]


FAILURES = [
    (("backup", "nobody"), 3),
    (("restore", "nobody", "--force"), 3),
    (("restore", "alice", "--at", "yesterday-ish"), 2),
    (("drill", "nobody"), 3),
    (("backup", "--no-such-option"), 2),
    (("tier", "extra-argument"), 2),
    (("keys", "rotate", "--tenant", "nobody"), 3),
    (("copy", "--site", "nope"), 3),
    (("verify", "20010101T000000Z-nope"), 3),
    (("prune", "--bogus"), 2),
    (("cleanup", "extra"), 2),
    (("run", "--once", "--metrics-listen", "nowhere"), 2),
    (("catalog", "restore"), 2),
    (("catalog", "adopt-store"), 2),
    (("drill", "alice", "--sample", "0"), 2),
]


@contract("restore", 3)
@pytest.mark.parametrize(("args", "code"), FAILURES, ids=lambda v: " ".join(v) if isinstance(v, tuple) else str(v))
def test_every_line_of_a_command_that_fails_is_json(fleet: Deployment, args: tuple[str, ...], code: int) -> None:
    error = final_error(fleet.cli("--log-format", "json", *args), code)
    assert error["message"] and not error["message"].startswith("drsvc: error"), error


def test_an_integrity_failure_reports_and_ends_with_a_json_error(fleet: Deployment) -> None:
    [point] = [p["id"] for p in fleet.cli("--json", "points", "list", "alice").json()]
    fleet.damage_hot_chunk("alice", point)
    r = fleet.cli("--log-format", "json", "verify", "--all", "--read-data")
    assert r.code == 4, r.output
    docs = lines(r)
    assert any(d["event"] == "verify.result" for d in docs)
    assert any(d["level"] == "error" and point in d["message"] for d in docs), r.output


def test_a_policy_error_carries_its_details(deploy: Deployment) -> None:
    deploy.policy("broken", schedule="every tuesday")
    error = final_error(deploy.cli("--log-format", "json", "policy", "check"), 2)
    assert any("schedule" in line for line in error["details"]), error


def test_json_documents_are_unchanged_under_json_logs(fleet: Deployment) -> None:
    r = fleet.cli("--log-format", "json", "--json", "backup", "alice")
    assert r.code == 0, r.output
    assert json.loads(r.stdout)["results"][0]["desktop"] == "alice"
    for line in r.stderr.splitlines():
        json.loads(line)
    failed = fleet.cli("--log-format", "json", "--json", "restore", "nobody")
    assert failed.code == 3
    assert json.loads(failed.stdout)["exit_code"] == 3
    [error] = [json.loads(line) for line in failed.stderr.splitlines()]
    assert error["event"] == "error" and error["exit_code"] == 3


def test_text_errors_stay_one_line(fleet: Deployment) -> None:
    r = fleet.cli("restore", "nobody")
    assert r.code == 3
    assert [ln for ln in r.stderr.splitlines() if ln.startswith("drsvc: error:")] == r.stderr.splitlines()
