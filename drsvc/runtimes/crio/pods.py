"""Desktop pods: which container is the desktop, what a pod's state means, a pod as a point keeps it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any, BinaryIO, cast

from drsvc.errors import InvalidInput
from drsvc.runtimes.archive import rewrite_archive

LABEL_CONTAINER = "drsvc.container"  # which container of a desktop pod is the desktop
POD_MEMBER = "drsvc.pod.json"


def pod_problem(pod: Any, container: str) -> str | None:
    if pod.status.phase == "Failed":
        return f"failed: {pod.status.message or pod.status.reason or 'no reason given'}"
    for status in pod.status.container_statuses or []:
        waiting = status.state.waiting if status.state else None
        if status.name == container and waiting is not None and waiting.reason in _FATAL_WAITING:
            return f"{waiting.reason}: {waiting.message or ''}".strip()
        terminated = status.state.terminated if status.state else None
        if status.name == container and terminated is not None:
            return f"container exited ({terminated.reason or terminated.exit_code}): {terminated.message or ''}"
    return None


_FATAL_WAITING = {"CreateContainerError", "ErrImagePull", "ImagePullBackOff", "InvalidImageName", "CrashLoopBackOff"}


def strip_id(container_id: str | None) -> str:
    """``cri-o://<64 hex>`` → ``<64 hex>``."""
    return (container_id or "").rpartition("://")[2]


def desktop_container(pod: Any) -> str:
    return str((pod.metadata.labels or {}).get(LABEL_CONTAINER) or pod.spec.containers[0].name)


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def portable_pod(doc: dict[str, Any]) -> dict[str, Any]:
    """The parts of a pod a new pod can be created from (no uid, status, node binding, owners)."""
    meta = doc.get("metadata") or {}
    spec = dict(doc.get("spec") or {})
    spec.pop("nodeName", None)  # the scheduler places the restored pod (archive mode pins it)
    return {
        "metadata": {
            "name": meta.get("name"),
            "namespace": meta.get("namespace"),
            "labels": meta.get("labels") or {},
            "annotations": {k: v for k, v in (meta.get("annotations") or {}).items() if not k.startswith("drsvc.")},
        },
        "spec": spec,
    }


def pod_doc(capture: dict[str, bytes], what: str) -> dict[str, Any]:
    data = capture.get(POD_MEMBER)
    if data is None:
        raise InvalidInput(
            f"{what}: the checkpoint archive carries no {POD_MEMBER}: it was not taken through crio://, "
            "so there is no pod spec to recreate the desktop from"
        )
    return cast(dict[str, Any], json.loads(data))


def capturing(src: BinaryIO, member: str, into: dict[str, bytes]) -> Iterator[bytes]:
    """Pass ``src`` through unchanged while keeping a copy of the small member ``member``."""

    def keep(data: bytes) -> bytes:
        into[member] = data
        return data

    return rewrite_archive(src, {member: keep})


# volume kinds a clone may keep: they carry nothing of the original's storage (the pod's own
# configuration, its service account token, scratch space)
_CLONE_KEEPS = ("configMap", "secret", "downwardAPI", "projected", "emptyDir")


def isolate_clone_pod(spec: dict[str, Any], *, other_namespace: bool = False) -> dict[str, Any]:
    """A clone's pod spec sharing nothing with its original's storage or the node's namespaces.

    No host network, PID or IPC namespace; every volume that is not the pod's own configuration
    (``persistentVolumeClaim``, ``hostPath``, ``nfs``, ``csi``, ``cephfs``, ``rbd``, ephemeral
    claims …) becomes an ``emptyDir`` of the clone's own, under the same name (the containers'
    mounts stay valid). ``other_namespace`` (a sandbox): the original namespace's ConfigMaps,
    Secrets and service account do not exist there either: their volumes become ``emptyDir`` too
    (the service account token stays: every namespace's default account has one).
    """
    spec = dict(spec)
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        spec.pop(key, None)
    if other_namespace:
        for key in ("serviceAccountName", "serviceAccount", "imagePullSecrets"):
            spec.pop(key, None)
    volumes = []
    for v in spec.get("volumes") or []:
        keep = any(k in v for k in _CLONE_KEEPS)
        if other_namespace and ("configMap" in v or "secret" in v):
            keep = False
        if other_namespace and "projected" in v:
            keep = all(
                "serviceAccountToken" in src
                or "downwardAPI" in src
                or (src.get("configMap") or {}).get("name") == "kube-root-ca.crt"
                for src in (v["projected"].get("sources") or [])
            )
        volumes.append(v if keep else {"name": v["name"], "emptyDir": {}})
    if volumes:
        spec["volumes"] = volumes
    return spec


def pod_isolation(pod: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(host namespaces the pod shares, storage it mounts that is not its own) of a pod document."""
    spec = pod.get("spec") or {}
    shared = [ns for ns, key in (("network", "hostNetwork"), ("pid", "hostPID"), ("ipc", "hostIPC")) if spec.get(key)]
    sources = []
    for v in spec.get("volumes") or []:
        if any(k in v for k in _CLONE_KEEPS):
            continue
        if "persistentVolumeClaim" in v:
            sources.append(f"pvc:{v['persistentVolumeClaim'].get('claimName')}")
        elif "hostPath" in v:
            sources.append(f"hostPath:{v['hostPath'].get('path')}")
        else:
            kind = next((k for k in v if k != "name"), "volume")
            sources.append(f"{kind}:{v['name']}")
    return shared, sorted(sources)
