"""Run a policy's backup as one Kubernetes Job per node, watch them, report per-node outcomes.

A CRI-O checkpoint archive lands on the desktop's node (``/var/lib/kubelet/checkpoints``), and the
CRIU freeze hook's rendezvous directory is node-local too, so the work of a run is cut by node:
the scheduler (a Deployment running ``drsvc run``) creates one node-agent Job per node that
holds desktops of the due policy, pinned there with ``nodeName``, running

    drsvc --json backup --policy POLICY --node NODE --lease-token TOKEN --run RUN

from the Job template ``deploy/kubernetes/node-agent-job.yaml`` (mounted into the scheduler pod,
path ``$DRSVC_NODE_AGENT_TEMPLATE``). Agents never open the scheduler's catalog: each writes its
points' manifests and a result document to the hot store, which the scheduler imports
(``drsvc.agents``). The executor watches the Jobs (watch API, bounded by a timeout), reads each
agent's exit code (the CLI contract: 0 ok, 6 partial, else failed) from its pod, and returns one
outcome per node plus the run's exit code. Jobs still running at the deadline are deleted and
reported failed.

Entry point: ``KubernetesExecutor.from_environment().run_backup(policy, desktops, lease_token=…)``.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import os
import re
import secrets
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast

import yaml

from drsvc.errors import EXIT_FAILED, EXIT_OK, EXIT_PARTIAL, BackendError, ConfigError, DrsvcError
from drsvc.optional import require
from drsvc.runtimes.base import DesktopRef

DEFAULT_TEMPLATE = "/etc/drsvc/node-agent/job.yaml"
AGENT_CONTAINER = "drsvc"
LABEL_RUN = "drsvc.run"

# Every Kubernetes API call the executor makes (API group, resource, verb); the scheduler's Role
# grants exactly these (tests/unit/test_deploy_manifests.py compares both with the calls observed).
API_CALLS: list[tuple[str, str, str]] = [
    ("batch", "jobs", "create"),
    ("batch", "jobs", "watch"),
    ("batch", "jobs", "get"),
    ("batch", "jobs", "delete"),
    ("", "pods", "list"),  # the agent pod of a Job: its exit code and termination message
]


def agent_args(policy: str, node: str, lease_token: int | None, run_id: str) -> list[str]:
    """The node agent's command line (the image's entrypoint is ``drsvc``)."""
    args = ["--json", "backup", "--policy", policy, "--node", node]
    if lease_token is not None:
        args += ["--lease-token", str(lease_token)]
    return [*args, "--run", run_id]


def new_run_id() -> str:
    """A run's id: part of Job names (DNS labels) and of the agents' result keys."""
    return secrets.token_hex(3)


def _dns_label(text: str, limit: int) -> str:
    clean = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")
    return clean[:limit].strip("-") or "x"


def job_name(policy: str, run_id: str, node: str) -> str:
    """``drsvc-<policy>-<run>-<node>-<hash>``, a valid DNS-1123 name of at most 63 characters."""
    digest = hashlib.sha256(node.encode()).hexdigest()[:6]
    return f"drsvc-{_dns_label(policy, 16)}-{run_id}-{_dns_label(node, 24)}-{digest}"


class KubernetesExecutor:
    """Creates, watches and collects the node-agent Jobs of one backup run."""

    def __init__(
        self,
        *,
        namespace: str,
        template: dict[str, Any],
        configuration: Any = None,
        timeout: float = 3600.0,
        watch_seconds: int = 60,
        on_event: Callable[..., None] | None = None,
    ) -> None:
        kclient = require("kubernetes.client", "kubernetes", "the Kubernetes executor")

        self.namespace = namespace
        self.template = template
        self.timeout = timeout
        self.watch_seconds = watch_seconds
        self.on_event = on_event or (lambda *a, **k: None)
        if configuration is None:
            from drsvc.executors.kubernetes_lease import client_configuration

            configuration = client_configuration()
        self._api = kclient.ApiClient(configuration)
        self._batch = kclient.BatchV1Api(self._api)
        self._core = kclient.CoreV1Api(self._api)

    @classmethod
    def from_environment(cls, **options: Any) -> KubernetesExecutor:
        """Namespace: ``$DRSVC_NAMESPACE`` or the pod's own; Job template: ``$DRSVC_NODE_AGENT_TEMPLATE``."""
        from drsvc.executors.kubernetes_lease import namespace_from_environment

        namespace = namespace_from_environment()
        path = Path(os.environ.get("DRSVC_NODE_AGENT_TEMPLATE") or DEFAULT_TEMPLATE)
        options.setdefault("timeout", float(os.environ.get("DRSVC_NODE_AGENT_TIMEOUT") or 3600))
        return cls(namespace=namespace, template=load_template(path), **options)

    # ------------------------------------------------------------------ Jobs
    def jobs_for(
        self, policy: str, desktops: Sequence[DesktopRef], *, run_id: str, lease_token: int | None
    ) -> dict[str, dict[str, Any]]:
        """One Job body per node holding any of ``desktops`` (node name -> Job); pure."""
        by_node: dict[str, list[str]] = defaultdict(list)
        for d in desktops:
            if not d.node:
                raise BackendError(f"desktop {d.desktop_id} is not scheduled on a node: cannot back it up there")
            by_node[d.node].append(d.desktop_id)
        jobs = {}
        for node, ids in sorted(by_node.items()):
            job = copy.deepcopy(self.template)
            meta = job.setdefault("metadata", {})
            meta["name"] = job_name(policy, run_id, node)
            meta["namespace"] = self.namespace
            meta.pop("generateName", None)
            labels = {LABEL_RUN: run_id, "drsvc.policy": _dns_label(policy, 63)}
            meta["labels"] = {**(meta.get("labels") or {}), **labels}
            meta["annotations"] = {
                **(meta.get("annotations") or {}),
                "drsvc.node": node,
                "drsvc.desktops": ",".join(ids),
            }
            pod = job["spec"]["template"]
            pod.setdefault("metadata", {})["labels"] = {**(pod["metadata"].get("labels") or {}), **labels}
            pod["spec"]["nodeName"] = node
            container = next((c for c in pod["spec"]["containers"] if c["name"] == AGENT_CONTAINER), None)
            if container is None:
                raise ConfigError(f"node-agent Job template: no container named {AGENT_CONTAINER!r}")
            container["args"] = agent_args(policy, node, lease_token, run_id)
            jobs[node] = job
        return jobs

    def _call(self, what: str, call: Callable[[], Any], *, missing_ok: bool = False) -> Any:
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            return call()
        except ApiException as e:
            if e.status == 404 and missing_ok:
                return None
            message = str(e.body or e.reason)
            if e.status == 403:
                message = (
                    f"forbidden: grant it to the scheduler's service account (deploy/kubernetes/rbac.yaml): {message}"
                )
            raise BackendError(f"{what}: {message} (HTTP {e.status})") from None
        except (HTTPError, OSError) as e:
            raise BackendError(f"{what}: Kubernetes API server unreachable: {e}") from e

    def run_backup(
        self,
        policy: str,
        desktops: Sequence[DesktopRef],
        *,
        lease_token: int | None = None,
        run_id: str | None = None,
    ) -> dict[str, Any]:
        """Back up ``desktops`` of ``policy`` with one Job per node; per-node outcomes and the run's exit code."""
        run_id = run_id or new_run_id()
        bodies = self.jobs_for(policy, desktops, run_id=run_id, lease_token=lease_token)
        started = time.monotonic()
        created: dict[str, str] = {}  # job name -> node
        first_rv: int | None = None
        for node, body in bodies.items():
            job = self._call(
                f"create node-agent Job for {node}",
                functools.partial(self._batch.create_namespaced_job, self.namespace, cast(Any, body)),
            )
            created[job.metadata.name] = node
            rv = int(job.metadata.resource_version or 0)
            first_rv = rv if first_rv is None else min(first_rv, rv)
            self.on_event("node-job", node=node, job=job.metadata.name)
        finished = self._wait(run_id, created, (first_rv or 1) - 1, started)
        nodes = []
        for name, node in created.items():
            outcome = finished.get(name)
            if outcome is None:
                self._call(
                    f"delete timed-out Job {name}",
                    functools.partial(
                        self._batch.delete_namespaced_job, name, self.namespace, propagation_policy="Background"
                    ),
                    missing_ok=True,
                )
                outcome = {"exit_code": EXIT_FAILED, "error": f"did not finish within {self.timeout:g} s; deleted"}
            code = outcome["exit_code"]
            nodes.append(
                {
                    "node": node,
                    "job": name,
                    "desktops": bodies[node]["metadata"]["annotations"]["drsvc.desktops"].split(","),
                    "status": {EXIT_OK: "ok", EXIT_PARTIAL: "partial"}.get(code, "failed"),
                    "exit_code": code,
                    "error": outcome.get("error"),
                }
            )
        codes = {n["exit_code"] for n in nodes}
        if codes <= {EXIT_OK}:
            exit_code = EXIT_OK
        elif codes & {EXIT_OK, EXIT_PARTIAL}:
            exit_code = EXIT_PARTIAL
        else:
            exit_code = EXIT_FAILED
        errors = "; ".join(f"{n['node']}: {n['error']}" for n in nodes if n["error"])
        return {
            "policy": policy,
            "purpose": "backup",
            "executor": "kubernetes",
            "run": run_id,
            "exit_code": exit_code,
            "desktops": len(desktops),
            "nodes": nodes,
            **({"error": errors} if errors else {}),
        }

    def _wait(self, run_id: str, jobs: dict[str, str], since_rv: int, started: float) -> dict[str, dict[str, Any]]:
        """Watch the run's Jobs until all finished or the deadline; name -> outcome of the finished ones."""
        from kubernetes import watch

        finished: dict[str, dict[str, Any]] = {}
        while len(finished) < len(jobs):
            left = self.timeout - (time.monotonic() - started)
            if left <= 0:
                break
            w = watch.Watch()
            try:
                for event in w.stream(
                    self._batch.list_namespaced_job,
                    self.namespace,
                    label_selector=f"{LABEL_RUN}={run_id}",
                    resource_version=str(since_rv),
                    timeout_seconds=max(1, int(min(left, self.watch_seconds))),
                ):
                    job = event["object"]
                    since_rv = max(since_rv, int(job.metadata.resource_version or 0))
                    name = job.metadata.name
                    if name in jobs and name not in finished and _job_done(job):
                        finished[name] = self._outcome(job)
                        self.on_event("node-job-done", job=name, node=jobs[name], **finished[name])
                    if len(finished) == len(jobs):
                        w.stop()
            except DrsvcError:
                raise
            except Exception as e:  # a broken watch: fall back to reading each Job, then watch again
                self.on_event("watch-error", error=str(e))
                since_rv = 0
            for name in jobs:  # events a watch can miss (expired resourceVersion, reconnects)
                if name not in finished:
                    job = self._call(
                        f"get Job {name}", functools.partial(self._batch.read_namespaced_job, name, self.namespace)
                    )
                    if _job_done(job):
                        finished[name] = self._outcome(job)
        return finished

    def _outcome(self, job: Any) -> dict[str, Any]:
        name = job.metadata.name
        pods = self._call(
            f"list pods of Job {name}",
            lambda: self._core.list_namespaced_pod(self.namespace, label_selector=f"job-name={name}"),
        )
        for pod in sorted(pods.items or [], key=lambda p: p.metadata.name, reverse=True):
            for status in pod.status.container_statuses or []:
                terminated = status.state.terminated if status.state else None
                if status.name == AGENT_CONTAINER and terminated is not None:
                    code = int(terminated.exit_code)
                    message = (terminated.message or "").strip()
                    return {"exit_code": code, "error": None if code == EXIT_OK else (message[-500:] or f"exit {code}")}
        if _condition(job, "Complete"):
            return {"exit_code": EXIT_OK, "error": None}
        reason = next((c.reason or c.message for c in job.status.conditions or [] if c.type == "Failed"), None)
        return {"exit_code": EXIT_FAILED, "error": f"Job failed: {reason or 'no reason given'}"}

    def close(self) -> None:
        """Close the API client's connection pool."""
        self._api.close()


def _condition(job: Any, kind: str) -> bool:
    return any(c.type == kind and c.status == "True" for c in (job.status.conditions if job.status else None) or [])


def _job_done(job: Any) -> bool:
    return _condition(job, "Complete") or _condition(job, "Failed")


def load_template(path: Path) -> dict[str, Any]:
    """The node-agent Job template (YAML); ``ConfigError`` naming the file when unusable."""
    try:
        doc = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: node-agent Job template not found (mount deploy/kubernetes/node-agent-job.yaml there, "
            "or set DRSVC_NODE_AGENT_TEMPLATE)"
        ) from None
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"{path}: unreadable node-agent Job template: {e}") from None
    if not isinstance(doc, dict) or doc.get("kind") != "Job":
        raise ConfigError(f"{path}: the node-agent template must be one batch/v1 Job")
    return doc
