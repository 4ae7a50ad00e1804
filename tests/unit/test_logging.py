"""Logs: -v/-q, --log-format json (one object a line), the scheduler's errors logged; --json anywhere."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys

import pytest

from drsvc.cli.main import hoist_global_options
from drsvc.errors import Busy
from drsvc.log import event, level_for, setup


@pytest.fixture
def captured():
    stream = io.StringIO()
    yield stream
    setup(logging.WARNING, "text", sys.stderr)


def test_json_lines_carry_the_documented_fields(captured) -> None:
    setup(logging.INFO, "json", captured)
    log = logging.getLogger("drsvc.backup")
    event(log, logging.INFO, "backup.desktop", "d1 complete", desktop="d1", point="d1-20261206", job=7, policy=None)
    event(log, logging.ERROR, "scheduler.error", "tick failed", error="pool full", exc_info=Busy("pool full"))
    first, second = (json.loads(line) for line in captured.getvalue().splitlines())
    assert first["event"] == "backup.desktop" and first["level"] == "info"
    assert (first["desktop"], first["point"], first["job"]) == ("d1", "d1-20261206", 7)
    assert "policy" not in first  # None fields are left out
    assert first["time"].endswith("Z") and first["message"] == "d1 complete"
    assert (second["level"], second["error"]) == ("error", "pool full")
    assert "traceback" not in second  # a drsvc error explains itself; tracebacks are for bugs or -vv


def test_a_bug_is_logged_with_its_traceback(captured) -> None:
    setup(logging.INFO, "text", captured)
    try:
        raise KeyError("oops")
    except KeyError as e:
        event(logging.getLogger("drsvc.scheduler"), logging.ERROR, "scheduler.error", "tick failed", exc_info=e)
    text = captured.getvalue()
    assert " error scheduler.error: tick failed" in text
    assert "Traceback (most recent call last)" in text and "KeyError: 'oops'" in text


def test_verbosity_steps() -> None:
    assert level_for(0, 0) == logging.WARNING
    assert level_for(1, 0) == logging.INFO
    assert level_for(5, 0) == logging.DEBUG
    assert level_for(0, 1) == logging.ERROR
    assert level_for(0, 0, logging.INFO) == logging.INFO
    assert level_for(0, 1, logging.INFO) == logging.WARNING


def test_json_is_accepted_after_the_command() -> None:
    assert hoist_global_options(["points", "list", "--json"]) == ["--json", "points", "list"]
    assert hoist_global_options(["--json", "status"]) == ["--json", "status"]
    assert hoist_global_options(["backup", "--", "--json"]) == ["backup", "--", "--json"]
    # --config too, with its value, in both spellings; never after --
    assert hoist_global_options(["status", "--config", "a.toml", "-v"]) == ["--config", "a.toml", "status", "-v"]
    assert hoist_global_options(["status", "--config=a.toml"]) == ["--config=a.toml", "status"]
    assert hoist_global_options(["backup", "--", "--config", "x"]) == ["backup", "--", "--config", "x"]


def test_json_after_the_command_through_the_entry_point(run_cli) -> None:
    result = run_cli("runbook", "list", "--json")
    assert result.code == 0, result.output
    assert {b["name"] for b in json.loads(result.stdout)} >= {"ransomware", "catalog-lost"}


def test_the_scheduler_logs_a_failed_window_as_json(fleet) -> None:
    """Through a real process: `run --once` logs each failure as a JSON line on stderr."""
    config = fleet.config()
    fleet.desktop("d1")
    done = subprocess.run(
        [sys.executable, "-m", "drsvc", "--config", str(config), "--log-format", "json", "run", "--once"],
        capture_output=True,
        text=True,
        check=False,
    )
    lines = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    failed = [r for r in lines if r["event"] == "scheduler.backup"]
    assert failed, done.stderr
    assert failed[0]["level"] == "error" and failed[0]["policy"] == "gold"
    assert "no container runtime configured" in failed[0]["error"]


def test_shell_completion_as_the_readme_documents() -> None:
    env = {
        **os.environ,
        "_DRSVC_COMPLETE": "bash_complete",
        "COMP_WORDS": "drsvc stat",
        "COMP_CWORD": "1",
    }
    done = subprocess.run([sys.executable, "-m", "drsvc"], env=env, capture_output=True, text=True, check=False)
    assert "status" in done.stdout, done.stdout + done.stderr
