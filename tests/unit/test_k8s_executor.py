"""The Kubernetes executor against the protocol fake API server: one Job per node, watched to the end."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fakes.kubelet import FakeEnv, fake_env
from waits import Background, wait_for

from drsvc.errors import EXIT_FAILED, EXIT_OK, EXIT_PARTIAL
from drsvc.executors.kubernetes import KubernetesExecutor, agent_args, job_name, load_template
from drsvc.runtimes.base import DesktopRef

TEMPLATE = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes" / "node-agent-job.yaml"


def desk(ident: str, node: str | None) -> DesktopRef:
    return DesktopRef(ident, f"desktops/{ident}/desktop", "c" * 64, f"rados://desktops/{ident}", "acme", node=node)


@pytest.fixture
def env(tmp_path: Path) -> Iterator[FakeEnv]:
    with fake_env(tmp_path) as e:
        yield e


def executor(env: FakeEnv, **kw: float) -> KubernetesExecutor:
    return KubernetesExecutor(
        namespace="drsvc",
        template=load_template(TEMPLATE),
        configuration=env.kubelet.configuration(),
        watch_seconds=1,
        **kw,  # type: ignore[arg-type]
    )


def finish_when_created(env: FakeEnv, outcomes: dict[str, int], count: int) -> Background:
    """Play the Job controller: once ``count`` Jobs exist, finish each (by node) with its exit code.

    ``join`` on what it returns fails naming what the controller waited for, if it never came."""

    def run() -> None:
        awaited = f"the executor to create {count} Job(s) (nodes {', '.join(sorted(outcomes))})"
        wait_for(awaited, lambda: len(env.cluster.jobs) >= count, timeout=10)
        for (_, name), job in list(env.cluster.jobs.items()):
            node = job["metadata"]["annotations"]["drsvc.node"]
            env.cluster.finish_job(name, exit_code=outcomes[node], message=f"agent on {node} exited")

    return Background("the fake Job controller", run)


def test_job_bodies_one_per_node() -> None:
    ex = KubernetesExecutor.__new__(KubernetesExecutor)
    ex.namespace, ex.template = "drsvc", load_template(TEMPLATE)
    jobs = ex.jobs_for("standard", [desk("a", "n1"), desk("b", "n2"), desk("c", "n1")], run_id="abc123", lease_token=7)
    assert sorted(jobs) == ["n1", "n2"]
    n1 = jobs["n1"]
    assert n1["metadata"]["name"] == job_name("standard", "abc123", "n1") and len(n1["metadata"]["name"]) <= 63
    assert n1["metadata"]["labels"]["drsvc.run"] == "abc123"
    assert n1["metadata"]["annotations"]["drsvc.desktops"] == "a,c"
    pod = n1["spec"]["template"]["spec"]
    assert pod["nodeName"] == "n1" and pod["serviceAccountName"] == "drsvc-node-agent"
    assert pod["containers"][0]["args"] == agent_args("standard", "n1", 7, "abc123")
    assert agent_args("standard", "n1", 7, "abc123") == [
        "--json", "backup", "--policy", "standard", "--node", "n1", "--lease-token", "7", "--run", "abc123"
    ]  # fmt: skip
    assert "catalog" not in {v["name"] for v in pod["volumes"]}, "agents never mount the shared catalog"
    long = job_name("a-very-long-policy-name-indeed", "abc123", "ip-10-0-0-1.eu-west-1.compute.internal")
    assert len(long) <= 63 and long.replace("-", "").isalnum()


def test_a_job_succeeding_and_one_failing(env: FakeEnv) -> None:
    worker = finish_when_created(env, {"n1": EXIT_OK, "n2": EXIT_FAILED}, 2)
    result = executor(env).run_backup("standard", [desk("a", "n1"), desk("b", "n2")], lease_token=3)
    worker.join(5)
    assert result["exit_code"] == EXIT_PARTIAL and result["purpose"] == "backup" and result["policy"] == "standard"
    by_node = {n["node"]: n for n in result["nodes"]}
    assert by_node["n1"]["status"] == "ok" and by_node["n1"]["error"] is None
    assert by_node["n2"]["status"] == "failed" and by_node["n2"]["exit_code"] == 1
    assert "agent on n2 exited" in by_node["n2"]["error"] and "n2" in result["error"]
    verbs = {c for c in env.cluster.calls}
    assert ("batch", "jobs", "create") in verbs and ("batch", "jobs", "watch") in verbs


def test_partial_node_and_all_ok(env: FakeEnv) -> None:
    worker = finish_when_created(env, {"n1": EXIT_PARTIAL}, 1)
    result = executor(env).run_backup("standard", [desk("a", "n1")])
    worker.join(5)
    assert result["exit_code"] == EXIT_PARTIAL and result["nodes"][0]["status"] == "partial"
    env.cluster.jobs.clear()
    worker = finish_when_created(env, {"n1": EXIT_OK, "n2": EXIT_OK}, 2)
    result = executor(env).run_backup("standard", [desk("a", "n1"), desk("b", "n2")])
    worker.join(5)
    assert result["exit_code"] == EXIT_OK and "error" not in result


def test_a_job_that_never_finishes_is_deleted_and_failed(env: FakeEnv) -> None:
    result = executor(env, timeout=0.5).run_backup("standard", [desk("a", "n1")])
    assert result["exit_code"] == EXIT_FAILED
    assert "did not finish" in result["nodes"][0]["error"]
    assert not env.cluster.jobs, "the timed-out Job is deleted (its pending points are recovered next tick)"
    assert ("batch", "jobs", "delete") in env.cluster.calls
