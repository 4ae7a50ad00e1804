"""``crio://NAMESPACE?options``: CRI-O desktops under Kubernetes (kubelet checkpoint API + API server).

URL (``NAMESPACE`` is the Kubernetes namespace of the desktop pods; every option is optional)::

    crio://desktops?kubeconfig=/etc/drsvc/kubeconfig&context=prod&via=proxy
        &archive_root=/var/lib/kubelet/checkpoints&registry=registry.example:5000/drsvc
        &restore_mode=image&timeout=120&node=$NODE_NAME

- ``kubeconfig`` / ``context``: client configuration; without ``kubeconfig`` drsvc uses the
  in-cluster service account when it runs in a pod, else ``$KUBECONFIG`` / ``~/.kube/config``.
  (Tests pass a ready ``kubernetes.client.Configuration`` as the ``configuration=`` option.)
- ``via=proxy`` (default): the kubelet checkpoint API through the API server's node proxy
  (``POST /api/v1/nodes/NODE/proxy/checkpoint/NS/POD/CTR``, RBAC ``create nodes/proxy``);
  ``via=kubelet``: straight to ``kubelet_url`` (default ``https://{node}:10250``) with the
  client certificate ``kubelet_cert`` + ``kubelet_key`` and CA ``kubelet_ca``.
- ``archive_root``: where this process sees the node's ``/var/lib/kubelet/checkpoints`` (the
  node agent mounts it by hostPath); ``timeout``: kubelet checkpoint timeout in seconds.
- ``registry``: ``HOST[:PORT][/PREFIX]`` that receives checkpoint images on restore
  (``registry_insecure=1`` for plain HTTP); ``restore_mode=image`` (default) or ``archive``
  (CRI-O gets the archive path on the node as the image: the pod is pinned to ``node``).

Desktops are pods labelled ``drsvc.desktop`` (+ ``drsvc.volume``, ``drsvc.tenant``); the desktop
container is the one named by the pod label ``drsvc.container``, else the pod's first container.
Container names have the form ``NAMESPACE/POD/CONTAINER`` (``inspect`` also takes ``POD``,
``NAMESPACE/POD`` or a full container id).

Checkpoint: the kubelet writes ``checkpoint-<pod>_<ns>-<container>-<time>.tar`` on the node and
answers ``{"items": [path]}``; the adapter opens that file under ``archive_root`` (so it must run on
that node: the Kubernetes executor starts one node agent per node), streams it, and deletes it
afterwards whatever happens (the archive holds every memory page of the desktop). The stream is the
kubelet's archive with one member appended before the end-of-archive blocks, ``drsvc.pod.json`` (the
pod as it was: restores recreate it from that, so a point needs nothing from the cluster that lost
it); every member CRI-O and Podman read passes byte for byte, and both ignore the extra one.

Restore: the archive becomes a checkpoint OCI image (one uncompressed layer = the archive itself,
manifest annotation ``io.kubernetes.cri-o.annotations.checkpoint.name`` = container name), pushed to
``registry`` through the OCI distribution API, and the pod is created from its saved spec with that
image for the desktop container; CRI-O sees the annotation and restores instead of starting.

Kubernetes has no pause, exec needs a websocket stream drsvc does not implement yet, and base images
stay in their registry: those methods raise ``Unsupported`` (the freeze hook pairs memory and disk
without pause, as for Podman).
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import socket
import ssl
import time
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO, cast

from drsvc.errors import BackendError, DrsvcError, InvalidInput, NotFound
from drsvc.optional import require
from drsvc.runtimes import freeze
from drsvc.runtimes.archive import rewrite_archive
from drsvc.runtimes.base import LABEL_DESKTOP, DesktopRef, desktop_from_labels, is_full_id
from drsvc.streams import IterReader

LABEL_CONTAINER = "drsvc.container"  # which container of a desktop pod is the desktop
CHECKPOINT_ANNOTATION = "io.kubernetes.cri-o.annotations.checkpoint.name"
POD_MEMBER = "drsvc.pod.json"
KUBELET_CHECKPOINTS = "/var/lib/kubelet/checkpoints"
CHUNK = 1 << 20
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"

# Every Kubernetes API call this module makes: (API group, resource, verb) per operation. The RBAC
# manifests grant exactly these, and tests compare them with the calls observed on the fake API
# server (tests/unit/test_deploy_manifests.py).
API_CALLS: dict[str, list[tuple[str, str, str]]] = {
    "discover": [("", "pods", "list")],
    "inspect": [("", "pods", "get"), ("", "pods", "list")],  # list: lookup by container id
    "checkpoint": [("", "pods", "get"), ("", "nodes/proxy", "create")],  # nodes/proxy: via=proxy only
    "restore": [("", "pods", "create"), ("", "pods", "get")],
    "remove": [("", "pods", "delete"), ("", "pods", "get")],
}


class Unsupported(BackendError):
    """The operation has no equivalent on this runtime."""

    traceback = False


def from_url(url: str, **options: Any) -> CrioRuntime:
    """Open ``crio://NAMESPACE?option=value&…`` (see the module docstring for the options)."""
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme != "crio" or not parsed.netloc or parsed.path not in ("", "/"):
        raise InvalidInput(f"malformed CRI-O runtime URL {url!r}: expected crio://NAMESPACE?option=value&…")
    query = dict(urllib.parse.parse_qsl(parsed.query, keep_blank_values=True))
    unknown = sorted(set(query) - set(_URL_OPTIONS))
    if unknown:
        raise InvalidInput(f"CRI-O runtime URL {url!r}: unknown option(s) {', '.join(unknown)}; known: {_URL_OPTIONS}")
    merged: dict[str, Any] = {**query, **options}
    for key in ("timeout",):
        if key in merged and isinstance(merged[key], str):
            try:
                merged[key] = float(merged[key])
            except ValueError:
                raise InvalidInput(f"CRI-O runtime URL {url!r}: {key} must be a number of seconds") from None
    if "registry_insecure" in merged and isinstance(merged["registry_insecure"], str):
        merged["registry_insecure"] = merged["registry_insecure"].lower() in ("1", "true", "yes")
    return CrioRuntime(parsed.netloc, url=url, **merged)


_URL_OPTIONS = (
    "kubeconfig",
    "context",
    "via",
    "kubelet_url",
    "kubelet_cert",
    "kubelet_key",
    "kubelet_ca",
    "archive_root",
    "registry",
    "registry_insecure",
    "restore_mode",
    "timeout",
    "node",
)


def _client() -> Any:
    return require("kubernetes.client", "kubernetes", "the crio:// runtime")


def _load_configuration(kubeconfig: str | None, context: str | None) -> Any:
    kclient = _client()
    from kubernetes import config as kconfig

    configuration = kclient.Configuration()
    try:
        if kubeconfig:
            kconfig.load_kube_config(config_file=kubeconfig, context=context, client_configuration=configuration)
        elif os.environ.get("KUBERNETES_SERVICE_HOST"):
            kconfig.load_incluster_config(client_configuration=configuration)
        else:
            kconfig.load_kube_config(context=context, client_configuration=configuration)
    except (kconfig.ConfigException, OSError) as e:
        raise InvalidInput(f"crio:// runtime: no usable Kubernetes client configuration: {e}") from e
    return configuration


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
    ) -> None:
        if via not in ("proxy", "kubelet"):
            raise InvalidInput(f"crio:// runtime: via must be 'proxy' or 'kubelet', not {via!r}")
        if restore_mode not in ("image", "archive"):
            raise InvalidInput(f"crio:// runtime: restore_mode must be 'image' or 'archive', not {restore_mode!r}")
        self.namespace = namespace
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
        kclient = _client()
        self._configuration = configuration or _load_configuration(kubeconfig, context)
        self._api = kclient.ApiClient(self._configuration)
        self._core = kclient.CoreV1Api(self._api)

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
            raise _api_error(what, e.status or 0, e.body, verb, resource, self.namespace) from None
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
                    if _strip_id(status.container_id) == name:
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

    def _lookup(self, name: str) -> tuple[Any, str]:
        namespace, pod_name, container = self._resolve(name)
        pod = self._pod(namespace, pod_name, missing_ok=True)
        if pod is None:
            raise NotFound(f"no pod {namespace}/{pod_name} (container {name!r})")
        container = container or _desktop_container(pod)
        if container not in [c.name for c in pod.spec.containers]:
            raise NotFound(f"pod {namespace}/{pod_name} has no container {container!r}")
        return pod, container

    def inspect(self, name: str) -> DesktopRef:
        """One desktop container by ``NS/POD/CONTAINER``, ``NS/POD``, ``POD`` or id; ``NotFound`` if missing."""
        pod, container = self._lookup(name)
        return self._ref(pod, container)

    def _ref(self, pod: Any, container: str | None = None) -> DesktopRef:
        container = container or _desktop_container(pod)
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
            container_id=_strip_id(status.container_id if status else None),
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
        status, body = self._kubelet_checkpoint(node, namespace, pod_name, container, what)
        if status != 200:
            raise _kubelet_error(what, status, body, self.via, node)
        try:
            items = json.loads(body)["items"]
            remote = str(items[0])
        except (ValueError, KeyError, IndexError, TypeError) as e:
            raise BackendError(f"{what}: unexpected kubelet answer {body[:300]!r}") from e
        local = self.archive_root / PurePosixPath(remote).name
        try:
            try:
                f = local.open("rb")
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
                    **_portable_pod(self._api.sanitize_for_serialization(pod)),
                }
                pod_member = (POD_MEMBER, json.dumps(doc).encode())
                yield cast(BinaryIO, IterReader(rewrite_archive(f, {}, append=[pod_member])))
        finally:
            # every memory page of the desktop: never leave it behind on the node
            local.unlink(missing_ok=True)

    def _kubelet_checkpoint(self, node: str, ns: str, pod: str, container: str, what: str) -> tuple[int, bytes]:
        path = "/checkpoint/" + "/".join(urllib.parse.quote(p, safe="") for p in (ns, pod, container))
        query = [("timeout", str(int(self.timeout)))]
        if self.via == "proxy":
            from kubernetes.client.exceptions import ApiException
            from urllib3.exceptions import HTTPError

            try:
                # the client's generic call: its node-proxy helpers only know GET/POST without a query
                method, url, headers, _, _ = self._api.param_serialize(
                    "POST",
                    f"/api/v1/nodes/{urllib.parse.quote(node, safe='')}/proxy{path}",
                    query_params=query,
                    header_params={"Accept": "application/json"},
                    auth_settings=["BearerToken"],
                )
                resp = self._api.call_api(method, url, header_params=headers, _request_timeout=self.timeout + 30)
                return int(resp.status), bytes(resp.read() or b"")
            except ApiException as e:
                if not e.status:
                    raise BackendError(f"{what}: API server node proxy for {node}: {e.reason}") from e
                return int(e.status), e.body if isinstance(e.body, bytes) else str(e.body or "").encode()
            except (HTTPError, OSError) as e:
                raise BackendError(f"{what}: API server node proxy for {node} unreachable: {e}") from e
        base = urllib.parse.urlsplit(self.kubelet_url.format(node=node))
        ctx = ssl.create_default_context(cafile=self.kubelet_ca)
        if self.kubelet_cert:
            ctx.load_cert_chain(self.kubelet_cert, self.kubelet_key)
        conn = http.client.HTTPSConnection(
            base.hostname or node, base.port or 10250, context=ctx, timeout=self.timeout + 30
        )
        try:
            conn.request("POST", path + "?" + urllib.parse.urlencode(query))
            resp2 = conn.getresponse()
            return resp2.status, resp2.read()
        except (OSError, http.client.HTTPException) as e:
            raise BackendError(f"{what}: kubelet on {node} ({base.netloc}) unreachable: {e}") from e
        finally:
            conn.close()

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
    ) -> DesktopRef:
        """Recreate the desktop's pod from the archive: under its old name (None) or as clone ``name``.

        ``name`` for a clone: ``POD`` (in this runtime's namespace) or ``NS/POD[/CONTAINER]``.
        ``network='none'`` marks the pod ``drsvc.network=none`` (label and annotation): the
        isolation itself is a deny-all NetworkPolicy selecting that label (deploy/kubernetes).
        """
        what = f"restore {name or 'desktop'}"
        capture: dict[str, bytes] = {}
        if self.restore_mode == "image":
            if not self.registry:
                raise InvalidInput(f"{what}: restore_mode=image needs registry=HOST[/PREFIX] in the crio:// URL")
            tag = f"restore-{datetime.now(UTC).strftime('%Y%m%dT%H%M%S%f')}"
            image = self._push_checkpoint_image(_capturing(archive, POD_MEMBER, capture), capture, tag, what)
        else:
            image = self._place_archive(_capturing(archive, POD_MEMBER, capture), what)
        doc = _pod_doc(capture, what)
        original = doc["drsvc"]["container"]
        namespace, pod_name, container = doc["metadata"]["namespace"], doc["metadata"]["name"], original
        if name:
            namespace, pod_name, maybe = self._resolve(name)
            container = maybe or original
        meta = doc["metadata"]
        meta.update(name=pod_name, namespace=namespace)
        meta["labels"] = {**(meta.get("labels") or {}), **(labels or {})}
        meta["annotations"] = {**(meta.get("annotations") or {}), "drsvc.restored-at": _now_iso()}
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

    def _wait_running(self, namespace: str, pod_name: str, container: str, what: str) -> DesktopRef:
        deadline = time.monotonic() + self.timeout
        while True:
            pod = self._pod(namespace, pod_name, missing_ok=True)
            if pod is not None:
                ref = self._ref(pod, container)
                if ref.state == "running":
                    return ref
                problem = _pod_problem(pod, container)
                if problem:
                    raise BackendError(f"{what}: pod {namespace}/{pod_name}: {problem}")
            if time.monotonic() > deadline:
                raise BackendError(f"{what}: pod {namespace}/{pod_name} not running after {self.timeout:g} s")
            time.sleep(0.2)

    def _place_archive(self, stream: Iterator[bytes], what: str) -> str:
        if not self.node:
            raise InvalidInput(f"{what}: restore_mode=archive needs node=NODE (or $NODE_NAME): the archive stays there")
        self.archive_root.mkdir(parents=True, exist_ok=True)
        name = f"restore-{datetime.now(UTC).strftime('%Y%m%dT%H%M%S%f')}.tar"
        with (self.archive_root / name).open("wb") as out:
            for piece in stream:
                out.write(piece)
        return f"{KUBELET_CHECKPOINTS}/{name}"

    def _push_checkpoint_image(self, stream: Iterator[bytes], capture: dict[str, bytes], tag: str, what: str) -> str:
        """Upload the archive as the one layer of a checkpoint image; return its reference."""
        assert self.registry is not None
        host, _, prefix = self.registry.partition("/")
        repo = f"{prefix}/checkpoints" if prefix else "drsvc/checkpoints"
        reg = _Registry(host, insecure=self.registry_insecure, timeout=self.timeout)
        layer_digest, layer_size = reg.upload_blob(repo, stream, what)
        doc = _pod_doc(capture, what)
        container = doc["drsvc"]["container"]
        config = json.dumps(
            {
                "architecture": "amd64",
                "os": "linux",
                "created": _now_iso(),
                "config": {"Labels": {CHECKPOINT_ANNOTATION: container}},
                "rootfs": {"type": "layers", "diff_ids": [layer_digest]},  # uncompressed: diff id = digest
                "history": [{"created": _now_iso(), "created_by": "drsvc restore (checkpoint archive)"}],
            },
            sort_keys=True,
        ).encode()
        config_digest, _ = reg.upload_blob(repo, iter([config]), what)
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": len(config)},
                "layers": [{"mediaType": OCI_LAYER, "digest": layer_digest, "size": layer_size}],
                "annotations": {
                    CHECKPOINT_ANNOTATION: container,
                    "org.opencontainers.image.created": _now_iso(),
                },
            },
            sort_keys=True,
        ).encode()
        reg.put_manifest(repo, tag, manifest, what)
        return f"{host}/{repo}:{tag}"

    def remove(self, name: str) -> None:
        """Delete the desktop's pod at once (grace 0) and wait until it is gone; a missing pod is fine."""
        try:
            namespace, pod_name, _ = self._resolve(name)
        except NotFound:
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
        kclient = _client()
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


# ---------------------------------------------------------------------- errors
def _api_error(what: str, status: int, body: Any, verb: str, resource: str, namespace: str) -> DrsvcError:
    message = _status_message(body)
    if status == 401:
        return BackendError(f"{what}: the API server rejected drsvc's credentials (HTTP 401): {message}")
    if status == 403:
        return BackendError(
            f"{what}: forbidden (HTTP 403): the service account lacks RBAC '{verb}' on '{resource}' "
            f"in namespace {namespace} (deploy/kubernetes/rbac.yaml): {message}"
        )
    if status == 404:
        return NotFound(f"{what}: {message or 'not found'}")
    return BackendError(f"{what}: {message or 'no message'} (HTTP {status})")


def _kubelet_error(what: str, status: int, body: bytes, via: str, node: str) -> DrsvcError:
    message = _status_message(body)
    if status == 401:
        who = "API server" if via == "proxy" else f"kubelet on {node}"
        return BackendError(f"{what}: the {who} rejected drsvc's credentials (HTTP 401): {message}")
    if status == 403:
        need = (
            "RBAC 'create' on 'nodes/proxy' (ClusterRole drsvc-node-agent, deploy/kubernetes/rbac.yaml)"
            if via == "proxy"
            else "kubelet authorization of 'create' on 'nodes/checkpoint' for the client certificate's user"
        )
        return BackendError(f"{what}: forbidden (HTTP 403): needs {need}: {message}")
    if status == 404:
        if "page not found" in message or not message:
            return BackendError(
                f"{what}: the kubelet on {node} has no checkpoint API (HTTP 404): enable the "
                "ContainerCheckpoint feature gate (kubelet and CRI-O enable_criu_support = true)"
            )
        return NotFound(f"{what}: {message}")
    return BackendError(f"{what}: kubelet on {node} failed (HTTP {status}): {message or 'no message'}")


def _status_message(body: Any) -> str:
    text = body.decode(errors="replace") if isinstance(body, bytes) else str(body or "")
    try:
        doc = json.loads(text)
        if isinstance(doc, dict) and doc.get("message"):
            return str(doc["message"])
    except ValueError:
        pass
    return text.strip()


def _pod_problem(pod: Any, container: str) -> str | None:
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


# ---------------------------------------------------------------------- pods
def _strip_id(container_id: str | None) -> str:
    """``cri-o://<64 hex>`` → ``<64 hex>``."""
    return (container_id or "").rpartition("://")[2]


def _desktop_container(pod: Any) -> str:
    return str((pod.metadata.labels or {}).get(LABEL_CONTAINER) or pod.spec.containers[0].name)


def _now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _portable_pod(doc: dict[str, Any]) -> dict[str, Any]:
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


def _pod_doc(capture: dict[str, bytes], what: str) -> dict[str, Any]:
    data = capture.get(POD_MEMBER)
    if data is None:
        raise InvalidInput(
            f"{what}: the checkpoint archive carries no {POD_MEMBER}: it was not taken through crio://, "
            "so there is no pod spec to recreate the desktop from"
        )
    return cast(dict[str, Any], json.loads(data))


# ---------------------------------------------------------------------- archive streams
def _capturing(src: BinaryIO, member: str, into: dict[str, bytes]) -> Iterator[bytes]:
    """Pass ``src`` through unchanged while keeping a copy of the small member ``member``."""

    def keep(data: bytes) -> bytes:
        into[member] = data
        return data

    return rewrite_archive(src, {member: keep})


# ---------------------------------------------------------------------- OCI distribution API
class _Registry:
    """Just the OCI distribution calls a push needs: blob upload (POST, PATCH…, PUT) and manifest PUT."""

    def __init__(self, host: str, *, insecure: bool, timeout: float) -> None:
        self.host, self.insecure, self.timeout = host, insecure, timeout

    def _conn(self) -> http.client.HTTPConnection:
        hostname, _, port = self.host.partition(":")
        if self.insecure:
            return http.client.HTTPConnection(hostname, int(port or 80), timeout=self.timeout)
        return http.client.HTTPSConnection(hostname, int(port or 443), timeout=self.timeout)

    def _request(
        self, method: str, path: str, what: str, *, body: Any = None, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        conn = self._conn()
        try:
            conn.request(
                method, path, body=body, headers=headers or {}, encode_chunked=not isinstance(body, bytes | None)
            )
            resp = conn.getresponse()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
        except (OSError, http.client.HTTPException) as e:
            raise BackendError(f"{what}: registry {self.host} unreachable: {e}") from e
        finally:
            conn.close()

    def _location(self, headers: dict[str, str], what: str) -> str:
        location = headers.get("location")
        if not location:
            raise BackendError(f"{what}: registry {self.host} gave no upload location")
        parsed = urllib.parse.urlsplit(location)
        return parsed.path + (f"?{parsed.query}" if parsed.query else "")

    def upload_blob(self, repo: str, chunks: Iterator[bytes], what: str) -> tuple[str, int]:
        """Stream ``chunks`` as one blob (hashed on the way); return (digest, size)."""
        status, headers, body = self._request("POST", f"/v2/{repo}/blobs/uploads/", what)
        if status != 202:
            raise _registry_error(what, self.host, status, body)
        digest, size = hashlib.sha256(), 0

        def hashed() -> Iterator[bytes]:
            nonlocal size
            for chunk in chunks:
                digest.update(chunk)
                size += len(chunk)
                yield chunk

        status, headers, body = self._request(
            "PATCH",
            self._location(headers, what),
            what,
            body=hashed(),
            headers={"Content-Type": "application/octet-stream"},
        )
        if status != 202:
            raise _registry_error(what, self.host, status, body)
        location = self._location(headers, what)
        sep = "&" if "?" in location else "?"
        ref = f"sha256:{digest.hexdigest()}"
        status, _, body = self._request(
            "PUT", f"{location}{sep}digest={urllib.parse.quote(ref)}", what, body=b"", headers={"Content-Length": "0"}
        )
        if status != 201:
            raise _registry_error(what, self.host, status, body)
        return ref, size

    def put_manifest(self, repo: str, tag: str, manifest: bytes, what: str) -> None:
        status, _, body = self._request(
            "PUT", f"/v2/{repo}/manifests/{tag}", what, body=manifest, headers={"Content-Type": OCI_MANIFEST}
        )
        if status != 201:
            raise _registry_error(what, self.host, status, body)


def _registry_error(what: str, host: str, status: int, body: bytes) -> DrsvcError:
    text = body.decode(errors="replace")[:500]
    if status in (401, 403):
        return BackendError(f"{what}: registry {host} refused the push (HTTP {status}): {text}")
    return BackendError(f"{what}: registry {host} failed (HTTP {status}): {text}")
