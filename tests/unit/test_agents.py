"""Node agents never write the scheduler's catalog: they report through the hot store, and the scheduler
imports exactly the points they report (drsvc/agents.py), end to end through the Kubernetes executor,
the coordination.k8s.io work Lease and the real kubernetes client against the protocol fake."""

from __future__ import annotations

import os
import threading
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from fakes.kubelet import FakeEnv, fake_env

from drsvc import clock
from drsvc.agents import ResultWriter, import_run, read_result, result_document, result_key, write_result
from drsvc.backup import MANIFEST_FORMAT
from drsvc.catalog import Catalog
from drsvc.chunks import StreamRef
from drsvc.config import parse_config
from drsvc.crypto import generate_key_file
from drsvc.errors import EXIT_OK, EXIT_PARTIAL, IntegrityError, NotFound
from drsvc.lease import Lease, LeaseLost
from drsvc.scheduler import Scheduler
from drsvc.services import Services

TEMPLATE = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes" / "node-agent-job.yaml"


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeEnv]:
    with fake_env(tmp_path / "k8s") as e:
        monkeypatch.setenv("KUBECONFIG", str(e.kubelet.kubeconfig(tmp_path / "kubeconfig")))
        monkeypatch.setenv("DRSVC_NAMESPACE", "drsvc")
        monkeypatch.setenv("DRSVC_NODE_AGENT_TEMPLATE", str(TEMPLATE))
        monkeypatch.setenv("DRSVC_NODE_AGENT_TIMEOUT", "20")
        yield e


def make_config(root: Path, runtime_url: str | None = None, executor: str = "kubernetes") -> Path:
    (root / "policies").mkdir(parents=True, exist_ok=True)
    if not (root / "drsvc.key").exists():
        generate_key_file(root / "drsvc.key")
    text = (
        f'policies_dir = "policies"\n[catalog]\npath = "db/catalog.db"\n[keys]\nfile = "drsvc.key"\n'
        f'[hot]\nstore = "file://{root}/hot"\n'
        + (f'[runtime]\nurl = "{runtime_url}"\n' if runtime_url else "")
        + f'[scheduler]\nexecutor = "{executor}"\n'
    )
    (root / "db").mkdir(exist_ok=True)
    (root / "drsvc.toml").write_text(text)
    (root / "policies" / "std.yaml").write_text(
        yaml.safe_dump(
            {
                "name": "std",
                "selector": {"labels": {"tier": "std"}},
                "schedule": "* * * * *",
                "retention": {"hot": {"last": 100}},
                "capture": {"checkpoint": False, "consistency": "crash"},
            }
        )
    )
    return root / "drsvc.toml"


def services_for(config_path: Path, catalog: Catalog | None = None) -> Services:
    config = parse_config(tomllib.loads(config_path.read_text()), config_path)
    return Services(config, catalog or Catalog.open(config.catalog.path))


def agent_point(agent: Services, desktop: str, *, status: str = "complete", snap: str = "snap-1") -> str:
    """What BackupJob leaves behind for one desktop, in the agent's private catalog and the hot store."""
    catalog, hot = agent.catalog, agent.hot
    taken = clock.now()
    pid = f"{clock.compact(taken)}-{desktop}-{os.urandom(3).hex()}"
    catalog.upsert_desktop({"id": desktop, "runtime_url": "crio://desktops", "container": desktop})
    rows = catalog.query("SELECT id FROM pool_snapshots WHERE name = ?", [snap])
    snap_id = (
        rows[0]["id"]
        if rows
        else catalog.execute(
            "INSERT INTO pool_snapshots (pool, name, taken_at) VALUES ('rados://desktops', ?, ?)",
            [snap, clock.to_iso(taken)],
        ).lastrowid
    )
    catalog.add_point(
        {
            "id": pid,
            "desktop_id": desktop,
            "policy": "std",
            "taken_at": clock.to_iso(taken),
            "status": "pending",
            "consistency": "crash",
            "pool_snapshot_id": snap_id,
        }
    )
    if status == "pending":
        return pid
    if status == "failed":
        catalog.update_point(pid, status="failed", reason="volume read failed: boom")
        return pid
    data = os.urandom(200_000)
    vol = hot.write_objects([(len(data), [data])])
    manifest = {
        "format": MANIFEST_FORMAT,
        "point_id": pid,
        "desktop": desktop,
        "taken_at": clock.to_iso(taken),
        "policy": "std",
        "consistency": "crash",
        "reason": "policy asks for crash consistency",
        "freeze_ms": None,
        "runtime": {"url": "crio://desktops", "container": desktop, "labels": {"tier": "std"}, "tenant": "acme"},
        "volume": {
            "url": f"rados://desktops/{desktop}",
            "pool_snapshot": snap,
            "objects": [{"name": "obj", "size": len(data)}],
            "stream": vol.to_dict(),
        },
        "checkpoint": None,
        "image": None,
    }
    hot.put_manifest(desktop, pid, manifest)
    catalog.add_artifact(
        {
            "point_id": pid,
            "kind": "volume",
            "name": manifest["volume"]["url"],
            "bytes": vol.size,
            "chunks": len(vol.chunks),
            "new_chunks": vol.stats.chunks_new,
            "new_bytes": vol.stats.bytes_new_stored,
            "digest": vol.hash,
        }
    )
    catalog.set_tier(pid, "hot", hot.store.url, stored_bytes=vol.stats.bytes_new_stored)
    catalog.update_point(
        pid, status="complete", reason=manifest["reason"], bytes=vol.size, completed_at=clock.to_iso(taken)
    )
    return pid


class Kit:
    def __init__(self, root: Path) -> None:
        self.config = make_config(root, executor="local")
        self.scheduler = services_for(self.config)
        for d in ("alice", "bob", "carol", "dave", "erin"):
            self.scheduler.catalog.upsert_desktop({"id": d, "runtime_url": "crio://desktops", "container": d})

    def agent(self) -> Services:
        return services_for(self.config, Catalog.open(":memory:"))


@pytest.fixture
def kit(tmp_path: Path) -> Iterator[Kit]:
    k = Kit(tmp_path)
    yield k
    k.scheduler.catalog.close()


def points(catalog: Catalog) -> dict[str, dict[str, Any]]:
    return {r["id"]: r for r in catalog.query("SELECT * FROM points")}


def test_the_scheduler_imports_exactly_the_reported_points(kit: Kit) -> None:
    agent = kit.agent()
    a = agent_point(agent, "alice")
    b = agent_point(agent, "bob")
    c = agent_point(agent, "carol", status="failed")
    d = agent_point(agent, "dave", status="pending")  # the agent died while storing it
    write_result(agent.hot, result_document(agent.catalog, run="r1", node="n1", final=False))
    unreported = agent_point(agent, "alice")  # written after the last report: a valid manifest, not imported
    sched = kit.scheduler
    job = sched.catalog.start_job("backup", policy="std")
    with Lease(sched.catalog) as lease:
        report = import_run(sched, "r1", {"n1": ["alice", "bob", "carol", "dave"]}, job_id=job, lease=lease)
    assert report.problems == []
    got = points(sched.catalog)
    assert set(got) == {a, b, c, d} and unreported not in got
    assert got[a]["status"] == got[b]["status"] == "complete" and got[a]["job_id"] == job
    assert got[c]["status"] == "failed" and got[c]["reason"] == "volume read failed: boom"
    assert got[d]["status"] == "failed" and "interrupted" in got[d]["reason"]
    tiers = sched.catalog.query("SELECT * FROM point_tiers WHERE point_id = ?", [a])
    assert tiers[0]["tier"] == "hot" and tiers[0]["stored_bytes"] > 190_000  # what only the live run knew
    art = sched.catalog.artifacts(a)
    assert art[0]["kind"] == "volume" and art[0]["new_bytes"] == tiers[0]["stored_bytes"]
    snaps = sched.catalog.query("SELECT name, job_id FROM pool_snapshots")
    assert [(s["name"], s["job_id"]) for s in snaps] == [("snap-1", job)]
    with pytest.raises(NotFound):
        read_result(sched.hot, "r1", "n1")  # imported, then deleted
    # the hot copy is restorable from the catalog's record: the manifest's stream reads back
    m = sched.hot.get_manifest("alice", a)
    assert len(sched.hot.read_bytes(StreamRef.from_dict(m["volume"]["stream"]))) == 200_000


def test_points_of_desktops_not_sent_to_that_node_are_refused(kit: Kit) -> None:
    agent = kit.agent()
    a = agent_point(agent, "alice")
    e = agent_point(agent, "erin")  # erin lives on another node: this agent has no business reporting her
    write_result(agent.hot, result_document(agent.catalog, run="r2", node="n1", final=True))
    sched = kit.scheduler
    with Lease(sched.catalog) as lease:
        report = import_run(sched, "r2", {"n1": ["alice"]}, job_id=None, lease=lease)
    assert set(points(sched.catalog)) == {a} and e not in points(sched.catalog)
    assert report.problems == [f"n1: reported point {e} of desktop erin, which was not sent there"]


def test_a_damaged_or_missing_result_fails_only_its_node(kit: Kit) -> None:
    one, two = kit.agent(), kit.agent()
    a = agent_point(one, "alice")
    agent_point(two, "bob")
    write_result(one.hot, result_document(one.catalog, run="r3", node="n1", final=True))
    write_result(two.hot, result_document(two.catalog, run="r3", node="n2", final=True))
    key = result_key("r3", "n2")
    blob = bytearray(two.hot.store.get(key))
    blob[-1] ^= 1
    two.hot.store.put(key, bytes(blob))
    sched = kit.scheduler
    with Lease(sched.catalog) as lease:
        report = import_run(sched, "r3", {"n1": ["alice"], "n2": ["bob"], "n3": ["carol"]}, job_id=None, lease=lease)
    assert set(points(sched.catalog)) == {a}
    assert [p.split(":")[0] for p in report.problems] == ["n2", "n3"]
    assert "reported no result" in report.problems[1]
    with pytest.raises(IntegrityError):
        read_result(sched.hot, "r3", "n2")
    # a result moved to another node's key does not authenticate there (sealed for its key)
    write_result(one.hot, result_document(one.catalog, run="r4", node="n1", final=True))
    sched.hot.store.put(result_key("r4", "n9"), sched.hot.store.get(result_key("r4", "n1")))
    with pytest.raises(IntegrityError):
        read_result(sched.hot, "r4", "n9")


def test_an_import_under_a_lost_lease_commits_nothing(kit: Kit) -> None:
    agent = kit.agent()
    agent_point(agent, "alice")
    write_result(agent.hot, result_document(agent.catalog, run="r5", node="n1", final=True))
    sched = kit.scheduler
    lease = Lease(sched.catalog, ttl=60)
    with lease:
        sched.catalog.execute("UPDATE leases SET token = token + 1")  # taken over meanwhile
        with pytest.raises(LeaseLost):
            import_run(sched, "r5", {"n1": ["alice"]}, job_id=None, lease=lease)
    assert points(sched.catalog) == {}
    assert read_result(sched.hot, "r5", "n1")["points"], "the result stays for the lease's new holder"


def test_the_result_writer_reports_progress_at_most_once_a_second(kit: Kit) -> None:
    agent = kit.agent()
    writer = ResultWriter(agent.hot, agent.catalog, run="r6", node="n1", interval=3600)
    agent_point(agent, "alice")
    writer.progress()
    first = read_result(agent.hot, "r6", "n1")
    assert len(first["points"]) == 1 and not first["final"]
    agent_point(agent, "bob")
    writer.progress()  # too soon: not rewritten
    assert len(read_result(agent.hot, "r6", "n1")["points"]) == 1
    writer.final()
    last = read_result(agent.hot, "r6", "n1")
    assert len(last["points"]) == 2 and last["final"]


# ---------------------------------------------------------------------- end to end on the fake cluster


class AgentController:
    """Plays the Job controller and the node agents: for each Job created, the agent's work
    (its points into the hot store, its result document) from the Job's own args, then the Job's end."""

    def __init__(self, env: FakeEnv, config: Path, exit_codes: dict[str, int]) -> None:
        self.env, self.config, self.exit_codes = env, config, exit_codes
        self.seen: list[dict[str, Any]] = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.stop = threading.Event()
        self.thread.start()

    def _run(self) -> None:
        done: set[str] = set()
        while not self.stop.is_set():
            for (_, name), job in list(self.env.cluster.jobs.items()):
                if name in done:
                    continue
                done.add(name)
                args = job["spec"]["template"]["spec"]["containers"][0]["args"]
                opts = dict(zip(args[2::2], args[3::2], strict=True))
                self.seen.append({"args": args, "volumes": job["spec"]["template"]["spec"]["volumes"]})
                node = opts["--node"]
                agent = services_for(self.config, Catalog.open(":memory:"))
                with agent.joined_lease(int(opts["--lease-token"])) as lease:
                    lease.check()
                    for desktop in job["metadata"]["annotations"]["drsvc.desktops"].split(","):
                        agent_point(agent, desktop, status="failed" if self.exit_codes[node] else "complete")
                write_result(agent.hot, result_document(agent.catalog, run=opts["--run"], node=node, final=True))
                self.env.cluster.finish_job(name, exit_code=self.exit_codes[node], message=f"agent on {node}")
            time.sleep(0.02)


def test_a_scheduler_tick_on_kubernetes_records_what_its_agents_report(env: FakeEnv, tmp_path: Path) -> None:
    for name, node in (("alice", "n1"), ("bob", "n1"), ("carol", "n2")):
        env.cluster.add_pod(name, labels={"drsvc.desktop": name, "tier": "std"}, node=node)
    config = make_config(tmp_path / "site", env.crio_url(kubeconfig=os.environ["KUBECONFIG"]))
    services = services_for(config)
    controller = AgentController(env, config, {"n1": EXIT_OK, "n2": 1})
    try:
        report = Scheduler(services).tick()
    finally:
        controller.stop.set()
        controller.thread.join(5)
    (ran,) = [r for r in report.ran if r["purpose"] == "backup"]
    assert ran["exit_code"] == EXIT_PARTIAL, ran
    by_node = {n["node"]: n for n in ran["nodes"]}
    assert by_node["n1"]["status"] == "ok" and by_node["n2"]["status"] == "failed"
    got = points(services.catalog)
    assert sorted((r["desktop_id"], r["status"]) for r in got.values()) == [
        ("alice", "complete"),
        ("bob", "complete"),
        ("carol", "failed"),
    ]
    assert {r["job_id"] for r in got.values()} == {ran["job_id"]}
    job = services.catalog.query("SELECT status, detail FROM jobs WHERE id = ?", [ran["job_id"]])[0]
    assert job["status"] == "partial" and '"executor": "kubernetes"' in job["detail"]
    for seen in controller.seen:
        assert "--run" in seen["args"] and not any("persistentVolumeClaim" in v for v in seen["volumes"])
    # the tick held the coordination.k8s.io Lease, released it, and the agents joined it by its token
    lease = env.cluster.leases[("drsvc", "drsvc-work")]["spec"]
    assert lease["holderIdentity"] == "" and lease["leaseTransitions"] == 1
    assert ("coordination.k8s.io", "leases", "update") in env.cluster.calls
    assert services.catalog.query("SELECT * FROM leases") == [], "the catalog lease was not used"


def test_an_agent_never_opens_the_shared_catalog(env: FakeEnv, tmp_path: Path, run_cli: Any) -> None:
    env.cluster.add_pod("alice", labels={"drsvc.desktop": "alice", "tier": "std"}, node="n1")
    config = make_config(tmp_path / "site", env.crio_url(kubeconfig=os.environ["KUBECONFIG"]))
    with services_for(config, Catalog.open(":memory:")).work_lease() as lease:
        result = run_cli(
            "--config", str(config), "--json", "backup", "--policy", "std",
            "--node", "n-empty", "--lease-token", str(lease.token), "--run", "r7",
        )  # fmt: skip
        assert result.code == 0, (result.stdout, result.stderr)
    assert not (tmp_path / "site" / "db" / "catalog.db").exists()
    doc = read_result(services_for(config, Catalog.open(":memory:")).hot, "r7", "n-empty")
    assert doc["final"] and doc["points"] == []
