"""Kubernetes across nodes on the lab: the scheduler's tick hands a due policy to node-agent Jobs, each
agent is the real ``drsvc backup --run`` in its own process (real CRIU checkpoints, pool snapshots,
RADOS hot store) working on a private catalog, and the scheduler imports exactly what they report.

What is fake: the API server (tests/fakes/kubelet.py, a protocol fake used through the real client):
it stores the Jobs and the coordination.k8s.io Lease; this test plays the Job controller by running
each Job's container args as a subprocess on this host (the Podman desktops' node).
"""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fakes.kubelet import FakeEnv, fake_env
from runtime_suite import read_counter
from waits import Background

from drsvc.catalog import Catalog
from drsvc.scheduler import Scheduler

REPO = Path(__file__).resolve().parents[2]
TEMPLATE = REPO / "deploy" / "kubernetes" / "node-agent-job.yaml"


@pytest.fixture
def k8s(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeEnv]:
    with fake_env(tmp_path / "k8s") as e:
        monkeypatch.setenv("KUBECONFIG", str(e.kubelet.kubeconfig(tmp_path / "kubeconfig")))
        monkeypatch.setenv("DRSVC_NAMESPACE", "drsvc")
        monkeypatch.setenv("DRSVC_NODE_AGENT_TEMPLATE", str(TEMPLATE))
        monkeypatch.setenv("DRSVC_NODE_AGENT_TIMEOUT", "300")
        yield e


class JobRunner:
    """The Job controller: each new Job's container args run as ``drsvc --config AGENT_CONFIG ...``.

    It plays until ``close()`` or ``seconds`` (then it fails, naming what it was waiting for);
    ``close()`` raises what went wrong in its thread (an agent that hung, a malformed Job)."""

    def __init__(self, k8s: FakeEnv, agent_config: Path, seconds: float = 420) -> None:
        self.k8s, self.agent_config, self.seconds = k8s, agent_config, seconds
        self.runs: list[dict[str, Any]] = []
        self.stop = threading.Event()
        self.background = Background("the fake Job controller", self._loop)

    def close(self) -> None:
        self.stop.set()
        self.background.join(30)

    def _loop(self) -> None:
        done: set[str] = set()
        deadline = time.monotonic() + self.seconds
        while not self.stop.is_set():
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"not stopped after {self.seconds:g} s: the test's scheduler tick did not end "
                    f"({len(self.runs)} Job(s) run: {[r['args'] for r in self.runs]})"
                )
            for (_, name), job in list(self.k8s.cluster.jobs.items()):
                if name in done:
                    continue
                done.add(name)
                args = job["spec"]["template"]["spec"]["containers"][0]["args"]
                p = subprocess.run(
                    [str(REPO / ".venv" / "bin" / "drsvc"), "--config", str(self.agent_config), *args],
                    capture_output=True,
                    text=True,
                    timeout=300,
                )
                self.runs.append({"args": args, "code": p.returncode, "stdout": p.stdout, "stderr": p.stderr})
                self.k8s.cluster.finish_job(name, exit_code=p.returncode, message=p.stderr[-2000:])
            time.sleep(0.05)


@pytest.mark.slow
def test_node_agents_report_and_the_scheduler_imports_their_points(drsvc_env, make_fleet, k8s, tmp_path):
    desktops = make_fleet(2)
    drsvc_env.write('executor = "kubernetes"\n')
    drsvc_env.policy("k8s", desktops, schedule="* * * * *")
    # the agents' config: the same stores, but a catalog path nobody may create (they keep theirs in memory)
    agent_root = tmp_path / "agent"
    agent_root.mkdir()
    (agent_root / "scratch").mkdir()
    shutil.copy2(drsvc_env.root / "drsvc.key", agent_root / "drsvc.key")
    shutil.copytree(drsvc_env.root / "policies", agent_root / "policies")
    (agent_root / "drsvc.toml").write_text(
        drsvc_env.config.read_text().replace('path = "catalog.db"', 'path = "scratch/catalog.db"')
    )
    services = drsvc_env.services()
    runtime = services.runtime
    before = {d: read_counter(runtime, d)[0] for d in desktops}
    runner = JobRunner(k8s, agent_root / "drsvc.toml")
    try:
        report = Scheduler(services).tick()
    finally:
        runner.close()
    (ran,) = [r for r in report.ran if r["purpose"] == "backup"]
    assert ran["exit_code"] == 0, (ran, runner.runs)
    (agent_run,) = runner.runs
    assert agent_run["code"] == 0 and "--run" in agent_run["args"], agent_run
    assert not (agent_root / "scratch" / "catalog.db").exists(), "the agent opened a catalog file"

    catalog = Catalog.open(drsvc_env.root / "catalog.db")
    try:
        rows = catalog.query("SELECT * FROM points ORDER BY desktop_id")
        assert [(r["desktop_id"], r["status"], r["consistency"]) for r in rows] == [
            (d, "complete", "paired") for d in sorted(desktops)
        ]
        assert {r["job_id"] for r in rows} == {ran["job_id"]}
        assert all(r["freeze_ms"] and r["checkpoint_ms"] for r in rows)
        snaps = catalog.query("SELECT name, removed_at FROM pool_snapshots")
        assert len(snaps) == 1 and snaps[0]["removed_at"] is None  # prune can find and remove it later
        assert catalog.query("SELECT * FROM leases") == []  # the work lease was the Kubernetes Lease
    finally:
        catalog.close()
    lease = k8s.cluster.leases[("drsvc", "drsvc-work")]["spec"]
    assert lease["leaseTransitions"] == 1 and lease["holderIdentity"] == ""

    # an imported point is a point like any other: restore it as a clone
    desktop = desktops[0]
    clone = f"{desktop}-clone"
    restored = drsvc_env.cli("--json", "restore", desktop, "--as", clone)
    try:
        assert restored.code == 0, (restored.stdout, restored.stderr)
        assert restored.json()["point_id"] == rows[0]["id"]
        value, _ = read_counter(runtime, clone)
        assert value >= before[desktop]
    finally:
        runtime.remove(clone)
        services.volume(f"rados://desktops/{clone}").purge()
