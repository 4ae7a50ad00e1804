"""A real Prometheus scrapes a running `drsvc run --metrics-listen` and an alert fires.

One desktop backs up fine, one cannot (its volume names a pool that does not exist). The daemon
runs on the lab with the real rule file (deploy/prometheus/drsvc-alerts.yml) loaded into Debian's
Prometheus, scraping every second: DrsvcBackupsFailing must fire for the failing desktop and for
no other, and the daemon must have logged each failure as a JSON line.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "deploy" / "prometheus" / "drsvc-alerts.yml"
BUSYBOX = "localhost/drsvc-desk:busybox"

pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


def _wait(what: str, probe, timeout: float = 90.0, every: float = 1.0) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = probe()
        except OSError as e:  # not listening yet
            last = e
        if last and not isinstance(last, Exception):
            return last
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


@pytest.fixture
def broken_desktop(lab):
    """A running container labelled as a desktop whose volume is in a pool that does not exist."""
    name = f"service-{uuid.uuid4().hex[:6]}-broken"
    subprocess.run(
        [
            "podman", "run", "-d", "--pull=never", "--name", name,
            "--label", f"drsvc.desktop={name}",
            "--label", f"drsvc.volume=rados://service-nopool-{uuid.uuid4().hex[:6]}/{name}",
            BUSYBOX, "sleep", "3600",
        ],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    yield name
    subprocess.run(["podman", "rm", "-f", "-t", "0", name], capture_output=True, timeout=120)


def test_prometheus_fires_backups_failing_for_the_desktop_whose_backups_fail(
    drsvc_env, make_fleet, broken_desktop, tmp_path
) -> None:
    prometheus = shutil.which("prometheus")
    if prometheus is None:
        pytest.fail("Debian's prometheus is not installed (dev/lab up installs it)")
    [good] = make_fleet(1)
    drsvc_env.policy("good", [good])
    drsvc_env.policy("failing", [broken_desktop], schedule="* * * * *")
    assert drsvc_env.cli("desktops", "discover").code == 0
    assert drsvc_env.cli("backup", "--policy", "good").code == 0
    for _ in range(3):  # three failed points in a row before the daemon starts
        assert drsvc_env.cli("backup", "--policy", "failing").code != 0

    metrics_port, prom_port = _free_port(), _free_port()
    daemon = drsvc_env.subprocess("--log-format", "json", "run", "--metrics-listen", f"127.0.0.1:{metrics_port}")
    (tmp_path / "prometheus.yml").write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        f"rule_files: ['{RULES}']\n"
        "scrape_configs:\n"
        f"  - job_name: drsvc\n    static_configs: [{{targets: ['127.0.0.1:{metrics_port}']}}]\n"
    )
    server = subprocess.Popen(
        [
            prometheus,
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{prom_port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        api = f"http://127.0.0.1:{prom_port}/api/v1"

        def up() -> bool:
            targets = _get(f"{api}/targets")["data"]["activeTargets"]
            return any(t["health"] == "up" for t in targets)

        _wait("Prometheus to scrape drsvc", up)

        def firing() -> list[dict[str, Any]]:
            alerts = _get(f"{api}/alerts")["data"]["alerts"]
            return [a for a in alerts if a["labels"]["alertname"] == "DrsvcBackupsFailing" and a["state"] == "firing"]

        alerts = _wait("DrsvcBackupsFailing to fire", firing)
        assert {a["labels"]["desktop"] for a in alerts} == {broken_desktop}
        assert alerts[0]["labels"]["policy"] == "failing"
        assert "runbook: drsvc runbook show backups-failing" in alerts[0]["annotations"]["summary"]
        query = _get(f"{api}/query?query=drsvc_rpo_breached")["data"]["result"]
        assert {r["metric"]["desktop"] for r in query} == {good, broken_desktop}
        healthy = _get(f"{api}/query?query=drsvc_backup_consecutive_failures%7Bpolicy%3D%22good%22%7D")
        assert [r["value"][1] for r in healthy["data"]["result"]] == ["0"]
        # failing backups are objectives, not a sick daemon: its liveness stays 200
        live = _get(f"http://127.0.0.1:{metrics_port}/healthz")
        assert live["healthy"] and live["ticks"] >= 1 and live["failed_ticks_in_a_row"] == 0, live
    finally:
        server.terminate()
        daemon.terminate()
        server.communicate(timeout=60)
        _, daemon_err = daemon.communicate(timeout=120)
    assert daemon.returncode == 0, daemon_err[-3000:]  # SIGTERM: stops after the current work
    lines = [json.loads(line) for line in daemon_err.splitlines() if line.startswith("{")]
    failed = [r for r in lines if r["event"] == "scheduler.backup" and r["level"] == "error"]
    assert failed and failed[0]["policy"] == "failing", daemon_err[-3000:]
    assert any(r["event"] == "metrics.listen" for r in lines)
    # and status, the Nagios-style check, lists the failing desktop
    status = drsvc_env.cli("--json", "status")
    doc = status.json()
    (broken,) = [d for d in doc["desktops"] if d["desktop"] == broken_desktop]
    assert broken["consecutive_failures"] >= 3 and broken["last_error"]
