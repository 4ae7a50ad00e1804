"""The daemon's /healthz: alive while its loop ticks, 503 when it cannot work or has stopped ticking.

Liveness only (what a Kubernetes livenessProbe restarts on); objectives are `drsvc status` and the
alert rules. The rules run on a fake monotonic clock; the endpoint is served for real beside
/metrics, and a real `drsvc run --metrics-listen` daemon answers it.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from drsvc import metrics
from drsvc.liveness import FAILED_TICKS, IDLE_LIMIT, DaemonHealth

REPO = Path(__file__).resolve().parents[2]


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def test_a_daemon_that_ticks_is_healthy(clock) -> None:
    health = DaemonHealth(clock)
    ok, doc = health.check()
    assert ok and doc["ticks"] == 0, doc  # starting: the first tick comes at once
    health.tick_started()
    clock.t += 3 * IDLE_LIMIT  # a long backup is not a wedged daemon
    ok, doc = health.check()
    assert ok and doc["tick_running_seconds"] == 3 * IDLE_LIMIT, doc
    health.tick_finished(3 * IDLE_LIMIT, None)
    clock.t += IDLE_LIMIT - 1
    ok, doc = health.check()
    assert ok and doc["ticks"] == 1 and doc["tick_running_seconds"] is None, doc


def test_no_tick_for_the_idle_limit_is_unhealthy(clock) -> None:
    health = DaemonHealth(clock)
    health.tick_started()
    health.tick_finished(1.0, None)
    clock.t += IDLE_LIMIT + 1
    ok, doc = health.check()
    assert not ok and "no tick" in doc["reason"], doc
    health.tick_started()  # it woke up: alive again
    assert health.check()[0]


def test_ticks_failing_in_a_row_are_unhealthy_until_one_succeeds(clock) -> None:
    health = DaemonHealth(clock)
    for n in range(FAILED_TICKS):
        assert health.check()[0], f"unhealthy after only {n} failed tick(s)"
        health.tick_started()
        health.tick_finished(0.1, RuntimeError("catalog is locked"))
    ok, doc = health.check()
    assert not ok, doc
    assert doc["failed_ticks_in_a_row"] == FAILED_TICKS and "catalog is locked" in doc["reason"], doc
    health.tick_started()
    health.tick_finished(0.1, None)
    ok, doc = health.check()
    assert ok and doc["failed_ticks_in_a_row"] == 0 and doc["last_error"] == "catalog is locked", doc


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def test_healthz_is_served_beside_metrics(fleet, clock) -> None:
    fleet.desktop("d1")
    health = DaemonHealth(clock)
    server, _ = metrics.serve(metrics.registry(fleet.catalog.path, lambda: fleet.policies), "127.0.0.1:0", health)
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        code, body = _get(f"{base}/healthz")
        assert code == 200 and json.loads(body)["healthy"] is True, body
        code, body = _get(f"{base}/metrics")
        assert code == 200 and b"drsvc_rpo_breached" in body
        for _ in range(FAILED_TICKS):
            health.tick_started()
            health.tick_finished(0.1, RuntimeError("no policies"))
        code, body = _get(f"{base}/healthz")
        assert code == 503 and json.loads(body)["healthy"] is False, body
    finally:
        server.shutdown()
        server.server_close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_the_running_daemon_answers_healthz(fleet, tmp_path) -> None:
    """`drsvc run --metrics-listen`: /healthz says 200 once it has ticked; SIGTERM stops it cleanly."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRSVC_")}
    daemon = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "drsvc",
            "--config",
            str(fleet.config()),
            "run",
            "--metrics-listen",
            f"127.0.0.1:{port}",
        ],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    doc: Any = None
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                code, body = _get(f"http://127.0.0.1:{port}/healthz")
            except OSError:  # not listening yet
                time.sleep(0.2)
                continue
            doc = json.loads(body)
            if doc["ticks"] >= 1:
                break
            time.sleep(0.2)
        assert doc is not None and doc["ticks"] >= 1 and code == 200, doc
    finally:
        daemon.send_signal(signal.SIGTERM)
        _, err = daemon.communicate(timeout=60)
    assert daemon.returncode == 0, err[-2000:]


def test_the_scheduler_deployment_probes_healthz_on_the_metrics_port() -> None:
    import yaml

    deployment = yaml.safe_load((REPO / "deploy" / "kubernetes" / "scheduler.yaml").read_text())
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    probe = container["livenessProbe"]["httpGet"]
    assert probe["path"] == "/healthz"
    [port] = [p for p in container["ports"] if p["name"] == probe["port"]]
    listen = container["args"][container["args"].index("--metrics-listen") + 1]
    assert listen.endswith(f":{port['containerPort']}")
