"""deploy/kubernetes: every manifest parses into the kubernetes client's models, and the RBAC grants
exactly the API calls the crio:// adapter and the Kubernetes executor make (nothing missing, nothing extra).

The calls are declared in the code (``API_CALLS`` tables) and observed here on the protocol fake, so
the table cannot drift from the code, nor the Roles from the table.
"""

from __future__ import annotations

import io
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes.client as kclient
import pytest
import yaml
from fakes.kubelet import FakeEnv, fake_env

from drsvc.executors import kubernetes as executor_mod
from drsvc.executors import kubernetes_lease as lease_mod
from drsvc.executors.kubernetes import KubernetesExecutor, load_template
from drsvc.executors.kubernetes_lease import KubernetesLease
from drsvc.runtimes import crio
from drsvc.runtimes.base import DesktopRef

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes"
NOT_MANIFESTS = {"kustomization.yaml"}
DRSVC_NS, DESKTOPS_NS, SANDBOX_NS = "drsvc", "desktops", "drsvc-sandbox"


def _ops(*ops: str) -> list[tuple[str, str, str]]:
    return [c for op in ops for c in crio.API_CALLS[op]]


# which operations each identity performs, and in which namespace (None: cluster scope). Clones
# (drills the scheduler runs, ops' restore --as) are made in the sandbox namespace only.
ROLE_OF_SA: dict[str, list[tuple[str | None, list[tuple[str, str, str]]]]] = {
    "drsvc-scheduler": [
        (DRSVC_NS, executor_mod.API_CALLS + lease_mod.API_CALLS["hold"]),
        (DESKTOPS_NS, _ops("discover", "inspect")),
        (SANDBOX_NS, _ops("inspect", "restore", "remove")),
    ],
    "drsvc-node-agent": [
        (DESKTOPS_NS, _ops("discover", "checkpoint")),
        (DRSVC_NS, lease_mod.API_CALLS["join"]),
    ],
    "drsvc-restore": [
        (DESKTOPS_NS, _ops("discover", "inspect", "restore", "remove")),
        (SANDBOX_NS, _ops("inspect", "restore", "remove")),
    ],
    # the node-local kubelet client certificate's user: what the kubelet asks the API server about
    "drsvc:node-agent": [(None, crio.KUBELET_CALLS)],
}
CLUSTER_RESOURCES = {"nodes", "nodes/proxy", "nodes/checkpoint"}


def documents() -> Iterator[tuple[str, dict[str, Any]]]:
    for path in sorted(DEPLOY.glob("*.yaml")):
        if path.name in NOT_MANIFESTS:
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                yield path.name, doc


def _strip_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_strip_none(v) for v in value]
    return value


def test_every_manifest_is_a_valid_kubernetes_object() -> None:
    api = kclient.ApiClient()
    kinds = []
    for name, doc in documents():
        group_version = doc["apiVersion"].split("/")[-1]
        model = getattr(kclient, f"{group_version.capitalize()}{doc['kind']}")
        obj = model.from_dict(doc)
        # a round trip through the model keeps every key: a misspelt or unknown field would vanish
        assert _strip_none(api.sanitize_for_serialization(obj)) == _strip_none(doc), f"{name}: {doc['kind']}"
        kinds.append(doc["kind"])
    assert {"Deployment", "Job", "ServiceAccount", "Role", "ClusterRole", "RoleBinding", "ConfigMap", "Secret"} <= set(
        kinds
    )


def test_kustomization_lists_every_manifest_but_the_template() -> None:
    kustomization = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    files = {p.name for p in DEPLOY.glob("*.yaml")} - NOT_MANIFESTS - {"node-agent-job.yaml"}
    assert set(kustomization["resources"]) == files
    (gen,) = kustomization["configMapGenerator"]
    assert gen["files"] == ["job.yaml=node-agent-job.yaml"]


def test_node_agent_template_mounts_what_the_agent_needs() -> None:
    job = load_template(DEPLOY / "node-agent-job.yaml")
    spec = job["spec"]["template"]["spec"]
    host = {v["hostPath"]["path"] for v in spec["volumes"] if "hostPath" in v}
    assert {
        "/var/lib/kubelet/checkpoints",
        "/run/drsvc/freeze",
        "/etc/criu",
        "/usr/local/lib/drsvc",
        "/var/lib/containers/storage",
    } <= host
    mounts = {m["mountPath"] for m in spec["containers"][0]["volumeMounts"]}
    assert {
        "/var/lib/kubelet/checkpoints",
        "/run/drsvc/freeze",
        "/var/lib/drsvc",
        "/var/lib/containers/storage",
    } <= mounts
    assert spec["hostPID"] is True  # held files are read from the host's /proc
    # agents never mount the scheduler's catalog (they report through the hot store: drsvc.agents)
    assert not any("persistentVolumeClaim" in v for v in spec["volumes"])
    scheduler = next(d for _, d in documents() if d["kind"] == "Deployment")
    assert scheduler["spec"]["replicas"] == 1 and scheduler["spec"]["strategy"]["type"] == "Recreate"
    pod = scheduler["spec"]["template"]["spec"]
    args = pod["containers"][0]["args"]
    assert "run" in args and "--once" not in args, "the scheduler is the daemon, not a pod a minute"
    assert args[args.index("--metrics-listen") + 1] == ":9477"  # /metrics, on the container's metrics port
    claims = {v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"] if "persistentVolumeClaim" in v}
    pvc = next(d for _, d in documents() if d["kind"] == "PersistentVolumeClaim")
    assert claims == {pvc["metadata"]["name"]} and pvc["spec"]["accessModes"] == ["ReadWriteOnce"]
    config = next(d for _, d in documents() if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "drsvc-config")
    assert 'executor = "kubernetes"' in config["data"]["drsvc.toml"]


# ---------------------------------------------------------------------- pod security
def _agent() -> dict[str, Any]:
    return dict(load_template(DEPLOY / "node-agent-job.yaml")["spec"]["template"]["spec"])


def _scheduler() -> dict[str, Any]:
    return dict(next(d for _, d in documents() if d["kind"] == "Deployment")["spec"]["template"]["spec"])


def test_drsvcs_namespaces_carry_pod_security_labels() -> None:
    namespaces = {d["metadata"]["name"]: d["metadata"]["labels"] for _, d in documents() if d["kind"] == "Namespace"}
    assert set(namespaces) == {DRSVC_NS, SANDBOX_NS}
    for labels in namespaces.values():
        assert {f"pod-security.kubernetes.io/{m}" for m in ("enforce", "audit", "warn")} <= set(labels)
    # the agents need host PIDs and paths: said out loud, and audited against baseline
    assert namespaces[DRSVC_NS]["pod-security.kubernetes.io/enforce"] == "privileged"
    assert namespaces[DRSVC_NS]["pod-security.kubernetes.io/audit"] == "baseline"
    # clones may have nothing of the host's
    assert namespaces[SANDBOX_NS]["pod-security.kubernetes.io/enforce"] in ("baseline", "restricted")


def test_agents_run_with_runtime_default_seccomp_and_only_the_capabilities_they_use() -> None:
    (container,) = _agent()["containers"]
    ctx = container["securityContext"]
    assert ctx["seccompProfile"] == {"type": "RuntimeDefault"}
    assert ctx["allowPrivilegeEscalation"] is False and not ctx.get("privileged")
    assert ctx["readOnlyRootFilesystem"] is True
    assert ctx["capabilities"]["drop"] == ["ALL"]
    assert set(ctx["capabilities"]["add"]) == {"DAC_READ_SEARCH", "SYS_PTRACE", "CHECKPOINT_RESTORE"}
    (scheduler,) = _scheduler()["containers"]
    sctx = scheduler["securityContext"]
    assert sctx["seccompProfile"] == {"type": "RuntimeDefault"} and sctx["capabilities"] == {"drop": ["ALL"]}
    assert sctx["allowPrivilegeEscalation"] is False and not sctx.get("privileged")


def test_agents_hold_no_s3_credentials() -> None:
    spec = _agent()
    (container,) = spec["containers"]
    assert not [e for e in container.get("env") or [] if "AWS" in e["name"] or "secretKeyRef" in str(e)]
    for volume in spec["volumes"]:
        if "secret" in volume:
            items = {i["key"] for i in volume["secret"].get("items") or [{"key": "<everything>"}]}
            assert not {k for k in items if "AWS" in k or k == "<everything>"}, volume["name"]
    secret = next(d for _, d in documents() if d["kind"] == "Secret")
    assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= set(secret["stringData"])  # the scheduler's


def test_the_key_is_a_plain_file_where_the_config_names_it() -> None:
    """A Secret volume's files are symlinks (..data/): drsvc refuses a linked key file, so a subPath mount."""
    config = next(d for _, d in documents() if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "drsvc-config")
    key_path = next(
        line.split("=", 1)[1].strip().strip('"')
        for line in config["data"]["drsvc.toml"].splitlines()
        if line.strip().startswith("file =")
    )
    for spec in (_agent(), _scheduler()):
        (container,) = spec["containers"]
        mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
        assert mounts[key_path]["subPath"] == "drsvc.key", key_path


def test_agents_checkpoint_through_their_kubelet_not_the_api_servers_node_proxy() -> None:
    config = next(d for _, d in documents() if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "drsvc-config")
    url = next(line for line in config["data"]["drsvc.toml"].splitlines() if line.strip().startswith("url ="))
    assert "via=kubelet" in url and "kubelet_cert=" in url and "sandbox=drsvc-sandbox" in url
    for _, doc in documents():
        for rule in doc.get("rules") or []:
            assert "nodes/proxy" not in rule["resources"], doc["metadata"]["name"]
            assert "pods/exec" not in rule["resources"] and "*" not in rule["resources"] + rule["verbs"]
    env = {e["name"]: e for e in _agent()["containers"][0]["env"]}
    assert env["NODE_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.hostIP"


def test_sandboxes_are_cut_off_from_the_network() -> None:
    policies = [d for _, d in documents() if d["kind"] == "NetworkPolicy"]
    sandbox = next(p for p in policies if p["metadata"]["namespace"] == SANDBOX_NS)
    assert sandbox["spec"]["podSelector"] == {} and set(sandbox["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    assert "ingress" not in sandbox["spec"] and "egress" not in sandbox["spec"]  # no rule lets anything through


# ---------------------------------------------------------------------- RBAC
def granted() -> dict[str, set[tuple[str | None, str, str, str]]]:
    """service account -> {(namespace or None, group, resource, verb)} from the Roles bound to it."""
    roles: dict[tuple[str, str | None], list[dict[str, Any]]] = {}
    bindings = []
    for _, doc in documents():
        if doc["kind"] in ("Role", "ClusterRole"):
            roles[(doc["kind"], doc["metadata"].get("namespace"))] = roles.get(
                (doc["kind"], doc["metadata"].get("namespace")), []
            )
            roles[(doc["kind"], doc["metadata"].get("namespace"))].append(doc)
        elif doc["kind"] in ("RoleBinding", "ClusterRoleBinding"):
            bindings.append(doc)
    out: dict[str, set[tuple[str | None, str, str, str]]] = defaultdict(set)
    for b in bindings:
        ns = b["metadata"].get("namespace")
        kind = b["roleRef"]["kind"]
        role = next(
            r for r in roles[(kind, ns if kind == "Role" else None)] if r["metadata"]["name"] == b["roleRef"]["name"]
        )
        for subject in b["subjects"]:
            for rule in role["rules"]:
                for group in rule["apiGroups"]:
                    for resource in rule["resources"]:
                        for verb in rule["verbs"]:
                            out[subject["name"]].add((ns, group, resource, verb))
    return out


def test_lease_reads_and_updates_name_only_the_work_lease() -> None:
    for _, doc in documents():
        for rule in doc.get("rules") or []:
            if "leases" in rule["resources"] and set(rule["verbs"]) - {"create"}:
                assert rule.get("resourceNames") == [lease_mod.lease_object_name("work")], doc["metadata"]["name"]


def test_rbac_grants_exactly_what_the_code_calls() -> None:
    have = granted()
    for sa, parts in ROLE_OF_SA.items():
        need = {
            (None if resource in CLUSTER_RESOURCES else ns, group, resource, verb)
            for ns, calls in parts
            for group, resource, verb in calls
        }
        assert have[sa] - need == set(), f"{sa}: granted but never called"
        assert need - have[sa] == set(), f"{sa}: called but not granted"
    assert set(have) == set(ROLE_OF_SA)


@pytest.fixture
def env(tmp_path: Path) -> Iterator[FakeEnv]:
    with fake_env(tmp_path) as e:
        e.cluster.add_pod("alice", labels={"drsvc.desktop": "alice"}, container_id="a" * 64)
        yield e


def test_declared_calls_are_the_calls_observed(env: FakeEnv) -> None:
    rt = crio.from_url(env.crio_url(), configuration=env.kubelet.configuration())
    observed: dict[str, set[tuple[str, str, str]]] = {}

    def record(op: str) -> Any:
        env.cluster.calls.clear()

        class Rec:
            def __enter__(self) -> None:
                return None

            def __exit__(self, *exc: object) -> None:
                observed[op] = set(env.cluster.calls)

        return Rec()

    with record("discover"):
        rt.list_desktops()
    with record("inspect"):
        rt.inspect("alice")
        rt.inspect("a" * 64)
    certs = env.kubelet.certs
    direct = crio.from_url(
        env.crio_url(
            via="kubelet",
            kubelet_url=env.kubelet.url,
            kubelet_ca=str(certs.ca),
            kubelet_cert=str(certs.client_cert),
            kubelet_key=str(certs.client_key),
        ),
        configuration=env.kubelet.configuration(),
    )
    with record("checkpoint"), direct.checkpoint("alice") as stream:
        archive = stream.read()
    env.cluster.calls.clear()
    with rt.checkpoint("alice") as stream:  # via=proxy: the node proxy on top (never granted)
        stream.read()
    assert set(env.cluster.calls) == set(crio.API_CALLS["checkpoint"] + crio.PROXY_CALLS)
    with record("remove"):
        rt.remove("alice")
    with record("restore"):
        rt.restore(io.BytesIO(archive))
    for op, calls in crio.API_CALLS.items():
        assert observed[op] == set(calls), op

    ex = KubernetesExecutor(
        namespace=DRSVC_NS,
        template=load_template(DEPLOY / "node-agent-job.yaml"),
        configuration=env.kubelet.configuration(),
        timeout=1.2,
        watch_seconds=1,
    )

    def finish() -> None:
        while not env.cluster.jobs:
            time.sleep(0.02)
        env.cluster.finish_job(next(iter(env.cluster.jobs))[1], exit_code=0)

    env.cluster.calls.clear()
    with KubernetesLease(namespace=DRSVC_NS, configuration=env.kubelet.configuration()) as held:
        assert held.token is not None
        with KubernetesLease.join(held.token, namespace=DRSVC_NS, configuration=env.kubelet.configuration()):
            pass
    assert set(env.cluster.calls) == set(lease_mod.API_CALLS["hold"])
    joined = KubernetesLease.join(1, namespace=DRSVC_NS, configuration=env.kubelet.configuration())
    env.cluster.calls.clear()
    joined._valid(1)
    assert set(env.cluster.calls) == set(lease_mod.API_CALLS["join"])

    env.cluster.calls.clear()
    t = threading.Thread(target=finish, daemon=True)
    t.start()
    d = DesktopRef("alice", "desktops/alice/desktop", "a" * 64, None, None, node="n1")
    ex.run_backup("standard", [d, DesktopRef("bob", "desktops/bob/desktop", "b" * 64, None, None, node="n2")])
    t.join(5)
    # n1 finished (watch, pods list); n2 timed out (get, delete)
    assert set(env.cluster.calls) == set(executor_mod.API_CALLS)
