"""deploy/systemd: the units pass `systemd-analyze verify` without a single warning."""

from __future__ import annotations

import configparser
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNITS = Path(__file__).resolve().parents[2] / "deploy" / "systemd"
INSTALLED = "/opt/drsvc/bin/drsvc"  # where the README's Install section puts the venv


def _unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(UNITS / name)
    return parser


def test_systemd_analyze_verify_is_clean(tmp_path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        if os.environ.get("DRSVC_LAB_REQUIRED") == "1":
            pytest.fail("systemd-analyze is missing (Debian package systemd)")
        pytest.skip("systemd-analyze is not installed: the units are not verified")
    # verify checks that ExecStart exists: point it at this venv's drsvc instead of /opt/drsvc
    drsvc = Path(sys.executable).parent / "drsvc"
    copies = []
    for unit in sorted(UNITS.glob("drsvc*")):
        copy = tmp_path / unit.name
        copy.write_text(unit.read_text().replace(INSTALLED, str(drsvc)))
        copies.append(str(copy))
    assert len(copies) == 3
    done = subprocess.run([analyze, "verify", *copies], capture_output=True, text=True, check=False)
    # unknown keys and bad values are only warnings (exit 0): any output at all is a failure
    assert done.returncode == 0 and done.stdout == "" and done.stderr == "", done.stdout + done.stderr


def test_the_daemon_restarts_on_failure_and_runs_sandboxed() -> None:
    service = _unit("drsvc.service")["Service"]
    assert service["Restart"] == "on-failure"
    assert service["ExecStart"].startswith(INSTALLED) and " run --metrics-listen " in service["ExecStart"]
    assert service["ProtectSystem"] == "strict" and "/var/lib/drsvc" in service["ReadWritePaths"]
    assert service["NoNewPrivileges"] == "yes" and service["PrivateTmp"] == "yes"


def test_the_timer_alternative_ticks_every_minute_and_excludes_the_daemon() -> None:
    timer = _unit("drsvc-run.timer")
    assert timer["Timer"]["OnCalendar"] == "minutely"
    run = _unit("drsvc-run.service")
    assert run["Service"]["Type"] == "oneshot" and run["Service"]["ExecStart"].endswith("run --once")
    assert run["Unit"]["Conflicts"] == "drsvc.service"
    assert "metrics --textfile" in run["Service"]["ExecStopPost"]


def test_both_services_read_their_s3_credentials_from_an_environment_file() -> None:
    # ProtectHome hides root's ~/.aws and a unit starts with no AWS_* environment: without this file
    # the daemon's first tier fails "no S3 credentials" (README "Install")
    for name in ("drsvc.service", "drsvc-run.service"):
        assert _unit(name)["Service"]["EnvironmentFile"] == "-/etc/drsvc/drsvc.env", name
