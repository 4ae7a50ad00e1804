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
