"""``CrioRuntime``: the ``ContainerRuntime`` protocol on the desktop pods of one Kubernetes namespace.

Made of the adapter's pieces: ``kube`` (API server calls and errors), ``kubelet`` (the checkpoint
call), ``pods`` (desktop pods and the pod a point keeps), ``registry`` (checkpoint images).
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO, cast

from drsvc import faults
from drsvc.containment import Root, clean
from drsvc.errors import BackendError, InvalidInput, NotFound
from drsvc.log import event
from drsvc.runtimes import freeze
from drsvc.runtimes.archive import CHUNK, checked, rewrite_archive
from drsvc.runtimes.base import LABEL_DESKTOP, DesktopRef, Isolation, desktop_from_labels, is_full_id
from drsvc.runtimes.crio.kube import Unsupported, api_error, client_module, load_configuration
from drsvc.runtimes.crio.kubelet import KUBELET_CHECKPOINTS, Kubelet, kubelet_error
from drsvc.runtimes.crio.pods import (
    LABEL_CONTAINER,
    POD_MEMBER,
    capturing,
    desktop_container,
    isolate_clone_pod,
    now_iso,
    pod_doc,
    pod_isolation,
    pod_problem,
    portable_pod,
    strip_id,
)
from drsvc.runtimes.crio.registry import (
    PushedImage,
    checkpoint_repo,
    delete_checkpoint_image,
    forget_checkpoint_image,
    push_checkpoint_image,
)
from drsvc.streams import IterReader

log = logging.getLogger(__name__)
INSECURE_REGISTRY = (
    "registry {} is reached over plain HTTP (registry_insecure=1): the checkpoint image (every memory page "
    "of the desktop) crosses the network unencrypted and unauthenticated; use an HTTPS registry"
)
_TOKEN = re.compile(r"[0-9a-f]{8,64}")
_ARTIFACT = re.compile(r"restore-[0-9a-f]{8,64}(\.tar)?")  # what restore(token=…) names its image tag / archive


def _artifact_name(token: str | None) -> str:
    """``restore-<token>`` (the image tag, the archive's stem); without a token, a time stamp."""
    return f"restore-{token or datetime.now(UTC).strftime('%Y%m%dT%H%M%S%f')}"


class CrioRuntime:
    """Desktop pods of one namespace, checkpointed through the kubelet and restored by CRI-O."""

    stores_images = False  # base images stay in their registry: backups need not save them

    def __init__(
        self,
        namespace: str,
        *,
        url: str | None = None,
        configuration: Any = None,
        kubeconfig: str | None = None,
        context: str | None = None,
        via: str = "proxy",
        kubelet_url: str = "https://{node}:10250",
        kubelet_cert: str | None = None,
        kubelet_key: str | None = None,
        kubelet_ca: str | None = None,
        archive_root: str = KUBELET_CHECKPOINTS,
        registry: str | None = None,
        registry_insecure: bool = False,
        restore_mode: str = "image",
        timeout: float = 120.0,
        node: str | None = None,
        sandbox: str | None = None,
    ) -> None:
        if via not in ("proxy", "kubelet"):
            raise InvalidInput(f"crio:// runtime: via must be 'proxy' or 'kubelet', not {via!r}")
        if restore_mode not in ("image", "archive"):
            raise InvalidInput(f"crio:// runtime: restore_mode must be 'image' or 'archive', not {restore_mode!r}")
        self.namespace = namespace
        self.sandbox = sandbox or None
        self._url = url or f"crio://{namespace}"
        self.via = via
        self.kubelet_url = kubelet_url
        self.kubelet_cert, self.kubelet_key, self.kubelet_ca = kubelet_cert, kubelet_key, kubelet_ca
        self.archive_root = Path(archive_root)
        self.registry = registry.rstrip("/") if registry else None
        self.registry_insecure = registry_insecure
        self.restore_mode = restore_mode
        self.timeout = timeout
        self.node = node or os.environ.get("NODE_NAME") or None
        kclient = client_module()
        self._configuration = configuration or load_configuration(kubeconfig, context)
        self._api = kclient.ApiClient(self._configuration)
        self._core = kclient.CoreV1Api(self._api)
        self.kubelet = Kubelet(via, self._api, kubelet_url, kubelet_cert, kubelet_key, kubelet_ca, timeout)

    @property
    def url(self) -> str:
        """The URL this runtime was opened from (options included: they hold no secrets, only paths)."""
        return self._url

    # ------------------------------------------------------------------ API plumbing
    def _k8s(self, what: str, verb: str, resource: str, call: Callable[[], Any], *, missing_ok: bool = False) -> Any:
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            return call()
        except ApiException as e:
            if e.status == 404 and missing_ok:
                return None
            raise api_error(what, e.status or 0, e.body, verb, resource, self.namespace) from None
        except (HTTPError, OSError) as e:
            raise BackendError(f"{what}: Kubernetes API server {self._configuration.host} unreachable: {e}") from e

    def _pods(self, label_selector: str = LABEL_DESKTOP) -> list[Any]:
        result = self._k8s(
            "list desktop pods",
            "list",
            "pods",
            lambda: self._core.list_namespaced_pod(self.namespace, label_selector=label_selector),
        )
        return list(result.items or [])

    def _pod(self, namespace: str, pod: str, *, missing_ok: bool = False) -> Any:
        return self._k8s(
            f"get pod {namespace}/{pod}",
            "get",
            "pods",
            lambda: self._core.read_namespaced_pod(pod, namespace),
            missing_ok=missing_ok,
        )

    # ------------------------------------------------------------------ desktops
    def list_desktops(self) -> list[DesktopRef]:
        """Every pod of the namespace labelled ``drsvc.desktop``, in one API call."""
        return sorted((self._ref(p) for p in self._pods()), key=lambda d: (d.desktop_id, d.container))

    def _resolve(self, name: str) -> tuple[str, str, str | None]:
        """(namespace, pod, container or None) of a name in any accepted form; ids are looked up."""
        if is_full_id(name):
            for pod in self._pods():
                for status in pod.status.container_statuses or []:
                    if strip_id(status.container_id) == name:
                        return pod.metadata.namespace, pod.metadata.name, status.name
            raise NotFound(f"no desktop pod in namespace {self.namespace} has container id {name}")
        parts = name.split("/")
        if len(parts) == 3 and all(parts):
            return parts[0], parts[1], parts[2]
        if len(parts) == 2 and all(parts):
            return parts[0], parts[1], None
        if len(parts) == 1 and name:
            return self.namespace, name, None
        raise InvalidInput(f"container name {name!r}: expected NAMESPACE/POD/CONTAINER, NAMESPACE/POD or POD")

    def _locate(self, name: str) -> tuple[str, str, str | None, Any]:
        """``_resolve`` plus the pod (None when absent): a bare POD not in the namespace may be a sandbox clone."""
        namespace, pod_name, container = self._resolve(name)
        pod = self._pod(namespace, pod_name, missing_ok=True)
        if pod is None and self.sandbox and "/" not in name and not is_full_id(name):
            found = self._pod(self.sandbox, pod_name, missing_ok=True)
            if found is not None:
                return self.sandbox, pod_name, container, found
        return namespace, pod_name, container, pod

    def _lookup(self, name: str) -> tuple[Any, str]:
        namespace, pod_name, container, pod = self._locate(name)
        if pod is None:
            raise NotFound(f"no pod {namespace}/{pod_name} (container {name!r})")
        container = container or desktop_container(pod)
        if container not in [c.name for c in pod.spec.containers]:
            raise NotFound(f"pod {namespace}/{pod_name} has no container {container!r}")
        return pod, container

    def inspect(self, name: str) -> DesktopRef:
        """One desktop container by ``NS/POD/CONTAINER``, ``NS/POD``, ``POD`` or id; ``NotFound`` if missing."""
        pod, container = self._lookup(name)
        return self._ref(pod, container)

    def _ref(self, pod: Any, container: str | None = None) -> DesktopRef:
        container = container or desktop_container(pod)
        status = next((s for s in pod.status.container_statuses or [] if s.name == container), None)
        spec = next((c for c in pod.spec.containers if c.name == container), None)
        state = "created"
        if status is not None and status.state is not None:
            if status.state.running is not None:
                state = "running"
            elif status.state.terminated is not None:
                state = "exited"
        if pod.metadata.deletion_timestamp is not None:
            state = "removing"
        annotations = pod.metadata.annotations or {}
        return desktop_from_labels(
            name=f"{pod.metadata.namespace}/{pod.metadata.name}/{container}",
            container_id=strip_id(status.container_id if status else None),
            labels=pod.metadata.labels,
            image=(spec.image if spec else "") or "",
            image_id=(status.image_id if status else "") or "",
            state=state,
            node=pod.spec.node_name,
            network="host" if pod.spec.host_network else (annotations.get("drsvc.network") or "pod"),
            restored_at=annotations.get("drsvc.restored-at"),
        )

    def pause(self, name: str) -> None:
        """Kubernetes cannot pause a pod: ``Unsupported`` (``NotFound`` first when it does not exist)."""
        self._lookup(name)
        raise Unsupported(f"pause {name}: Kubernetes has no pause; drsvc pairs memory and disk with the freeze hook")

    def unpause(self, name: str) -> None:
        """Kubernetes cannot pause a pod: ``Unsupported`` (``NotFound`` first when it does not exist)."""
        self._lookup(name)
        raise Unsupported(f"unpause {name}: Kubernetes has no pause")

    # ------------------------------------------------------------------ checkpoint
    @contextmanager
    def checkpoint(self, name: str, *, tcp_established: bool = True) -> Iterator[BinaryIO]:
        """Checkpoint through the kubelet, leaving the container running; stream the node's archive, then delete it.

        ``tcp_established`` is CRI-O's own setting on the node (the kubelet API has no option for it).
        """
        pod, container = self._lookup(name)
        namespace, pod_name, node = pod.metadata.namespace, pod.metadata.name, pod.spec.node_name
        if not node:
            raise BackendError(f"checkpoint {name}: pod {namespace}/{pod_name} is not scheduled on a node")
        what = f"checkpoint {namespace}/{pod_name}/{container}"
        status, body = self.kubelet.checkpoint(node, namespace, pod_name, container, what)
        if status != 200:
            raise kubelet_error(what, status, body, self.via, node)
        try:
            items = json.loads(body)["items"]
            remote = str(items[0])
        except (ValueError, KeyError, IndexError, TypeError) as e:
            raise BackendError(f"{what}: unexpected kubelet answer {body[:300]!r}") from e
        name = clean(PurePosixPath(remote).name, what=f"{what}: kubelet archive name")
        if not name:
            raise BackendError(f"{what}: unexpected kubelet answer {body[:300]!r}")
        try:
            root = Root(self.archive_root, what="kubelet checkpoint directory")
        except OSError as e:
            raise BackendError(f"{what}: {e}; run checkpoints on node {node} with {KUBELET_CHECKPOINTS} mounted") from e
        try:
            try:
                # beneath the checkpoint directory, never through a link: a name the kubelet gives
                f = os.fdopen(root.open(name, os.O_RDONLY | os.O_NOFOLLOW), "rb")
            except FileNotFoundError:
                raise BackendError(
                    f"{what}: the kubelet wrote {remote} on node {node}, but it is not under {self.archive_root} "
                    f"here: run checkpoints on that node (executor = 'kubernetes' starts one node agent per node, "
                    f"with {KUBELET_CHECKPOINTS} mounted)"
                ) from None
            with f:
                doc = {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "drsvc": {"container": container, "node": node, "archive": remote},
                    **portable_pod(self._api.sanitize_for_serialization(pod)),
                }
                pod_member = (POD_MEMBER, json.dumps(doc).encode())
                yield cast(BinaryIO, IterReader(rewrite_archive(f, {}, append=[pod_member])))
        finally:
            # every memory page of the desktop: never leave it behind on the node
            with suppress(OSError):
                root.remove(name)
            root.close()

    # ------------------------------------------------------------------ restore
    def restore(
        self,
        archive: BinaryIO,
        *,
        name: str | None = None,
        tcp_established: bool = True,
        network: str | None = None,
        size: int | None = None,
        labels: dict[str, str] | None = None,
        token: str | None = None,
    ) -> DesktopRef:
        """Recreate the desktop's pod from the archive: under its old name (None) or as clone ``name``.

        ``name`` for a clone: ``POD`` (in this runtime's namespace) or ``NS/POD[/CONTAINER]``.
        ``token`` names the checkpoint image's tag or the archive's file on the node
        (``restore_artifact``), so that a restore killed before it deleted them can be cleaned up.
        ``network='none'`` marks the pod ``drsvc.network=none`` (label and annotation): the
        isolation itself is a deny-all NetworkPolicy selecting that label (deploy/kubernetes).
        """
        what = f"restore {name or 'desktop'}"
        if token is not None and not _TOKEN.fullmatch(token):
            raise InvalidInput(f"{what}: token {token!r} is not 8-64 lowercase hex digits")
        capture: dict[str, bytes] = {}
        # CRI-O extracts the archive itself into the container's root: check it on the way
        raw = archive
        archive = cast(BinaryIO, IterReader(checked(iter(lambda: raw.read(CHUNK), b""), what=f"{what}: archive")))
        pushed: PushedImage | None = None
        placed: str | None = None
        try:
            if self.restore_mode == "image":
                if not self.registry:
                    raise InvalidInput(f"{what}: restore_mode=image needs registry=HOST[/PREFIX] in the crio:// URL")
                if self.registry_insecure:
                    event(log, logging.WARNING, "restore.insecure-registry", INSECURE_REGISTRY.format(self.registry))
                tag = _artifact_name(token)
                pushed = push_checkpoint_image(
                    self.registry,
                    capturing(archive, POD_MEMBER, capture),
                    capture,
                    tag,
                    what,
                    insecure=self.registry_insecure,
                    timeout=self.timeout,
                )
                image = pushed.reference
                faults.point("after-checkpoint-pushed")
            else:
                placed = self._place_archive(capturing(archive, POD_MEMBER, capture), what, token)
                image = f"{KUBELET_CHECKPOINTS}/{placed}"
                faults.point("after-checkpoint-placed")
            return self._create_pod(pod_doc(capture, what), image, name=name, network=network, labels=labels, what=what)
        finally:
            # the checkpoint image and the node's copy of the archive hold every memory page of the
            # desktop in plaintext: once CRI-O has restored from them (or failed to), they go
            self._forget(pushed, placed, what)

    def _create_pod(
        self,
        doc: dict[str, Any],
        image: str,
        *,
        name: str | None,
        network: str | None,
        labels: dict[str, str] | None,
        what: str,
    ) -> DesktopRef:
        original = doc["drsvc"]["container"]
        namespace, pod_name, container = doc["metadata"]["namespace"], doc["metadata"]["name"], original
        if name:
            namespace, pod_name, maybe = self._resolve(name)
            container = maybe or original
            if self.sandbox and "/" not in name and pod_name != doc["metadata"]["name"]:
                namespace = self.sandbox  # clones live in the sandbox namespace
        clone = (namespace, pod_name) != (doc["metadata"]["namespace"], doc["metadata"]["name"])
        if clone:
            # nothing of the original's storage or the node's namespaces (PVCs, hostPaths, hostNetwork);
            # in another namespace, nothing of the original namespace's objects either
            moved = namespace != doc["metadata"]["namespace"]
            doc["spec"] = isolate_clone_pod(doc["spec"], other_namespace=moved)
        meta = doc["metadata"]
        meta.update(name=pod_name, namespace=namespace)
        meta["labels"] = {**(meta.get("labels") or {}), **(labels or {})}
        meta["annotations"] = {**(meta.get("annotations") or {}), "drsvc.restored-at": now_iso()}
        if container != original:
            meta["labels"][LABEL_CONTAINER] = container
        if network is not None:
            if network != "none":
                raise InvalidInput(f"{what}: network must be 'none' (a sandbox) on Kubernetes, not {network!r}")
            meta["labels"]["drsvc.network"] = "none"
            meta["annotations"]["drsvc.network"] = "none"
        spec = doc["spec"]
        for c in spec.get("containers") or []:
            if c.get("name") == original:
                c["name"], c["image"] = container, image
        if self.restore_mode == "archive":
            spec["nodeName"] = self.node
        body = {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec}
        self._k8s(
            f"{what}: create pod {namespace}/{pod_name}",
            "create",
            "pods",
            lambda: self._core.create_namespaced_pod(namespace, body),
        )
        return self._wait_running(namespace, pod_name, container, what)

    def _forget(self, pushed: PushedImage | None, placed: str | None, what: str) -> None:
        """Delete the pushed checkpoint image and the node's copy of the archive (warn when that fails)."""
        if pushed is not None:
            problem = delete_checkpoint_image(pushed, insecure=self.registry_insecure, timeout=self.timeout)
            if problem:
                event(log, logging.WARNING, "restore.image-kept", problem)
        if placed is not None:
            try:
                with Root(self.archive_root, what="kubelet checkpoint directory") as root:
                    root.remove(placed)
            except OSError as e:
                event(log, logging.WARNING, "restore.archive-kept", f"{what}: {self.archive_root}/{placed} kept: {e}")

    def restore_artifact(self, token: str) -> tuple[str, str] | None:
        """What ``restore(token=token)`` leaves while it runs: the checkpoint image, or the archive on the node."""
        if self.restore_mode == "archive":
            return "checkpoint-archive", str(self.archive_root / f"{_artifact_name(token)}.tar")
        if not self.registry:
            return None  # restore refuses to run (restore_mode=image needs a registry)
        host, repo = checkpoint_repo(self.registry)
        return "checkpoint-image", f"{host}/{repo}:{_artifact_name(token)}"

    def forget(self, kind: str, target: str) -> str:
        """Delete a checkpoint image or node archive that a killed restore of this runtime left ("undone").

        Only what ``restore_artifact`` names: this registry's checkpoint repository and a
        ``restore-<token>`` tag, or a ``restore-<token>.tar`` directly in the checkpoint directory.
        """
        what = f"forget {kind} {target}"
        if kind == "checkpoint-archive":
            path = Path(target)
            if path.parent != self.archive_root or not _ARTIFACT.fullmatch(path.name) or not path.name.endswith(".tar"):
                raise InvalidInput(f"{what}: not a restore archive in this runtime's {self.archive_root}")
            try:
                with Root(self.archive_root, what="kubelet checkpoint directory") as root:
                    root.remove(path.name)
            except FileNotFoundError:
                pass
            except OSError as e:
                raise BackendError(f"{what}: {e}") from e
            return "undone"
        if kind == "checkpoint-image":
            reference, _, tag = target.rpartition(":")
            host, repo = checkpoint_repo(self.registry) if self.registry else ("", "")
            if reference != f"{host}/{repo}" or not _ARTIFACT.fullmatch(tag) or tag.endswith(".tar"):
                raise InvalidInput(f"{what}: not a checkpoint image of this runtime's registry {self.registry}")
            forget_checkpoint_image(host, repo, tag, insecure=self.registry_insecure, timeout=self.timeout)
            return "undone"
        raise InvalidInput(f"{what}: crio:// leaves no {kind}")

    def isolation(self, name: str) -> Isolation:
        """What the pod shares with the node and other pods' storage (the NetworkPolicy is the network's guard)."""
        pod, _ = self._lookup(name)
        shared, sources = pod_isolation(self._api.sanitize_for_serialization(pod))
        ref = self._ref(pod)
        return Isolation(ref.network, None, shared, sources)

    def _wait_running(self, namespace: str, pod_name: str, container: str, what: str) -> DesktopRef:
        deadline = time.monotonic() + self.timeout
        while True:
            pod = self._pod(namespace, pod_name, missing_ok=True)
            if pod is not None:
                ref = self._ref(pod, container)
                if ref.state == "running":
                    return ref
                problem = pod_problem(pod, container)
                if problem:
                    raise BackendError(f"{what}: pod {namespace}/{pod_name}: {problem}")
            if time.monotonic() > deadline:
                raise BackendError(f"{what}: pod {namespace}/{pod_name} not running after {self.timeout:g} s")
            time.sleep(0.2)

    def _place_archive(self, stream: Iterator[bytes], what: str, token: str | None = None) -> str:
        """Write the archive where CRI-O on this node reads it (0600, a new file); return its name there."""
        if not self.node:
            raise InvalidInput(f"{what}: restore_mode=archive needs node=NODE (or $NODE_NAME): the archive stays there")
        self.archive_root.mkdir(parents=True, exist_ok=True)
        name = f"{_artifact_name(token)}.tar"
        with Root(self.archive_root, what="kubelet checkpoint directory") as root:
            fd = root.create(name, 0o600)  # every memory page: root's alone, never an existing file or link
        try:
            with os.fdopen(fd, "wb") as out:
                for piece in stream:
                    out.write(piece)
        except BaseException:
            with suppress(OSError), Root(self.archive_root) as root:
                root.remove(name)
            raise
        return name

    def remove(self, name: str) -> None:
        """Delete the desktop's pod at once (grace 0) and wait until it is gone; a missing pod is fine."""
        try:
            namespace, pod_name, _, pod = self._locate(name)
        except NotFound:
            return
        if pod is None:
            return
        self._k8s(
            f"remove pod {namespace}/{pod_name}",
            "delete",
            "pods",
            lambda: self._core.delete_namespaced_pod(pod_name, namespace, grace_period_seconds=0),
            missing_ok=True,
        )
        deadline = time.monotonic() + self.timeout
        while self._pod(namespace, pod_name, missing_ok=True) is not None:
            if time.monotonic() > deadline:
                raise BackendError(f"remove pod {namespace}/{pod_name}: still there after {self.timeout:g} s")
            time.sleep(0.2)

    # ------------------------------------------------------------------ not available on Kubernetes
    def exec(self, name: str, argv: Sequence[str], timeout: float = 30.0) -> tuple[int, str]:
        """Not implemented yet (``pods/exec`` is a websocket stream): ``Unsupported``."""
        raise Unsupported(f"exec in {name}: not implemented for crio:// (needs the pods/exec stream)")

    def probe_tcp(self, name: str, port: int, timeout: float = 2.0) -> bool:
        """Whether the pod IP accepts TCP on ``port`` (from wherever drsvc runs)."""
        pod, _ = self._lookup(name)
        ip = pod.status.pod_ip
        if not ip:
            return False
        try:
            with socket.create_connection((ip, int(port)), timeout=timeout):
                return True
        except OSError:
            return False

    def image_exists(self, image_id: str) -> bool:
        """Nodes pull images from their registry themselves: always True (drsvc sees no node image store)."""
        return True

    @contextmanager
    def save_image(self, image: str) -> Iterator[BinaryIO]:
        """Base images stay in their registry: ``Unsupported`` (``stores_images`` is False)."""
        raise Unsupported(f"save image {image}: crio:// leaves base images in their registry")
        yield  # pragma: no cover

    def load_image(self, stream: BinaryIO) -> list[str]:
        """Base images stay in their registry: ``Unsupported``."""
        raise Unsupported("load image: crio:// leaves base images in their registry")

    # ------------------------------------------------------------------ health
    def health(self) -> dict[str, Any]:
        """API server version; CRIU and the freeze hook as seen from here (meaningful on a node agent)."""
        kclient = client_module()
        info = self._k8s("kubernetes version", "get", "version", lambda: kclient.VersionApi(self._api).get_code())
        from drsvc.runtimes.podman import criu_version

        return {
            "runtime": "crio",
            "url": self.url,
            "version": info.git_version,
            "via": self.via,
            "restore_mode": self.restore_mode,
            "criu_version": criu_version(),
            "freeze_hook_installed": freeze.hook_installed(),
            "node": self.node,
        }

    def close(self) -> None:
        """Close the API client's connection pool (idempotent)."""
        api, self._api = self._api, None
        if api is not None:
            api.close()

    def __enter__(self) -> CrioRuntime:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
