"""A PROTOCOL FAKE of the kubelet checkpoint API and the Kubernetes API server subset drsvc calls.

Not a Kubernetes: an HTTPS server (self-signed certificate made with ``cryptography`` at test time)
that speaks exactly the documented endpoints and status codes, so the real ``kubernetes`` client
and drsvc's ``crio://`` adapter and Kubernetes executor can be exercised where neither CRI-O nor a
kubelet can run:

- kubelet ``POST /checkpoint/{ns}/{pod}/{container}?timeout=N`` (client certificate required)
  and the same through the API server node proxy ``POST /api/v1/nodes/{node}/proxy/checkpoint/…``:
  200 ``{"items": ["/var/lib/kubelet/checkpoints/checkpoint-<pod>_<ns>-<container>-<time>.tar"]}``
  (the file is written to ``node_dir``), 404 ``pod does not exist`` / ``container X does not
  exist``, 404 ``404 page not found`` with ``checkpoint_enabled=False`` (feature gate off),
  500 ``checkpointing of ns/pod/ctr failed (<CRI text>)`` when a failure is queued;
- API server (bearer token, else 401 Status): pods list (``labelSelector``), get, create, delete;
  batch/v1 jobs create, get, delete, watch (``?watch=true``, newline-delimited events, honours
  ``resourceVersion`` and ``timeoutSeconds``); ``/version``. ``allowed`` (a set of
  ``(group, resource, verb)``) turns anything else into a 403 Status as RBAC would; every call is
  recorded in ``calls`` as ``(group, resource, verb)``; coordination.k8s.io/v1 leases get, create,
  update (``PUT`` with optimistic concurrency: a stale ``metadata.resourceVersion`` is 409 Conflict,
  an existing name on create 409 AlreadyExists, a ``MicroTime`` without its six fractional digits
  400 BadRequest, as the API server's decoder answers).

What the containers *are* is a ``Node`` backend: ``SyntheticNode`` (unit tests: archives are
made-up tar files, pods "run" at once) or a Podman-backed one in the integration test (real CRIU
archives). ``FakeRegistry`` is the OCI distribution subset a push uses (blob POST/PATCH/PUT,
manifest PUT/GET, blob GET), plain HTTP.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import ipaddress
import json
import re
import secrets
import ssl
import tarfile
import threading
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Protocol

KUBELET_DIR = "/var/lib/kubelet/checkpoints"
TOKEN = "drsvc-fake-token"


# ---------------------------------------------------------------------- certificates
@dataclass
class Certs:
    ca: Path  # the server certificate (self-signed: it is its own CA)
    server_key: Path
    client_cert: Path  # for the kubelet's client-certificate authentication
    client_key: Path


def make_certs(directory: Path) -> Certs:
    """A self-signed server certificate for 127.0.0.1/localhost and a self-signed client certificate."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    def make(cn: str, san: bool) -> tuple[bytes, bytes]:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
        now = dt.datetime.now(dt.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        )
        if san:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
                ),
                critical=False,
            )
        cert = builder.sign(key, hashes.SHA256())
        pem_key = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        return cert.public_bytes(serialization.Encoding.PEM), pem_key

    directory.mkdir(parents=True, exist_ok=True)
    s_cert, s_key = make("fake-apiserver", True)
    c_cert, c_key = make("system:drsvc-node-agent", False)
    paths = Certs(directory / "ca.pem", directory / "server.key", directory / "client.pem", directory / "client.key")
    paths.ca.write_bytes(s_cert)
    paths.server_key.write_bytes(s_key)
    paths.client_cert.write_bytes(c_cert)
    paths.client_key.write_bytes(c_key)
    return paths


# ---------------------------------------------------------------------- node backends
class Node(Protocol):
    def checkpoint(self, pod: dict[str, Any], container: str, dest: Path) -> None:
        """Write the container's checkpoint archive to ``dest`` (raise to make the kubelet answer 500)."""

    def start(self, pod: dict[str, Any], container: str, archive: Path | None) -> str:
        """Run a created pod's desktop container (restored from ``archive`` when given); its id."""

    def stop(self, pod: dict[str, Any]) -> None:
        """The pod was deleted."""


class SyntheticNode:
    """Made-up archives (a CRIU-like layout with random 'pages') and pods that run at once."""

    def __init__(self) -> None:
        self.restored: dict[str, bytes] = {}  # pod name -> archive bytes it was restored from

    def checkpoint(self, pod: dict[str, Any], container: str, dest: Path) -> None:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            for name, data in (
                ("config.dump", json.dumps({"id": pod["status"]["containerStatuses"][0]["containerID"]}).encode()),
                (
                    "spec.dump",
                    json.dumps({"annotations": {"io.kubernetes.pod.name": pod["metadata"]["name"]}}).encode(),
                ),
                ("checkpoint/pages-1.img", secrets.token_bytes(300_000)),
            ):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        dest.write_bytes(buf.getvalue())

    def start(self, pod: dict[str, Any], container: str, archive: Path | None) -> str:
        if archive is not None:
            self.restored[pod["metadata"]["name"]] = archive.read_bytes()
        return secrets.token_hex(32)

    def stop(self, pod: dict[str, Any]) -> None:
        return None


# ---------------------------------------------------------------------- the fake server
@dataclass
class FakeCluster:
    """State behind the fake: pods, jobs, the node's checkpoint dir, recorded calls."""

    node_dir: Path
    node: Node = field(default_factory=SyntheticNode)
    registry: FakeRegistry | None = None
    checkpoint_enabled: bool = True
    allowed: set[tuple[str, str, str]] | None = None  # None: everything (RBAC off)
    pods: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    jobs: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    leases: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    calls: list[tuple[str, str, str]] = field(default_factory=list)
    kubelet_calls: list[str] = field(default_factory=list)
    fail_checkpoint: list[tuple[int, str]] = field(default_factory=list)  # queued (status, text)
    kubelet_gone: set[str] = field(default_factory=set)  # "ns/pod/ctr" the API lists but the node lost
    events: list[tuple[int, str, str, dict[str, Any]]] = field(default_factory=list)  # rv, ns, type, job
    rv: int = 100
    lock: threading.Condition = field(default_factory=threading.Condition)

    # ---- helpers for tests
    def add_pod(
        self,
        name: str,
        *,
        namespace: str = "desktops",
        labels: dict[str, str] | None = None,
        container: str = "desktop",
        image: str = "registry.example/desk:1",
        image_id: str = "",
        container_id: str | None = None,
        node: str = "node-1",
        extra_spec: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "labels": labels or {}, "uid": secrets.token_hex(8)},
            "spec": {"containers": [{"name": container, "image": image}], "nodeName": node, **(extra_spec or {})},
        }
        self._set_running(pod, container, container_id or secrets.token_hex(32), image_id or f"sha256:{'a' * 64}")
        with self.lock:
            self.pods[(namespace, name)] = pod
        return pod

    def _set_running(self, pod: dict[str, Any], container: str, cid: str, image_id: str) -> None:
        pod["metadata"]["resourceVersion"] = str(self._next_rv())
        pod["status"] = {
            "phase": "Running",
            "podIP": "127.0.0.1",
            "containerStatuses": [
                {
                    "name": container,
                    "containerID": f"cri-o://{cid}",
                    "image": pod["spec"]["containers"][0]["image"],
                    "imageID": image_id,
                    "ready": True,
                    "restartCount": 0,
                    "state": {"running": {"startedAt": _now()}},
                }
            ],
        }

    def _next_rv(self) -> int:
        self.rv += 1
        return self.rv

    def finish_job(self, name: str, *, namespace: str = "drsvc", exit_code: int = 0, message: str = "") -> None:
        """The Job's one pod ran to ``exit_code``: Complete (0) or Failed (anything else)."""
        with self.lock:
            job = self.jobs[(namespace, name)]
            ok = exit_code == 0
            job["status"] = {
                "succeeded" if ok else "failed": 1,
                "conditions": [
                    {
                        "type": "Complete" if ok else "Failed",
                        "status": "True",
                        "reason": "" if ok else "BackoffLimitExceeded",
                    }
                ],
            }
            job["metadata"]["resourceVersion"] = str(self._next_rv())
            pod_name = f"{name}-{secrets.token_hex(3)}"
            self.pods[(namespace, pod_name)] = {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": pod_name, "namespace": namespace, "labels": {"job-name": name}},
                "spec": job["spec"]["template"]["spec"],
                "status": {
                    "phase": "Succeeded" if ok else "Failed",
                    "containerStatuses": [
                        {
                            "name": "drsvc",
                            "image": "drsvc",
                            "imageID": "",
                            "ready": False,
                            "restartCount": 0,
                            "state": {"terminated": {"exitCode": exit_code, "message": message, "reason": "Error"}},
                        }
                    ],
                },
            }
            self.events.append((self.rv, namespace, "MODIFIED", json.loads(json.dumps(job))))
            self.lock.notify_all()


_VERSION = {
    "major": "1",
    "minor": "30",
    "gitVersion": "v1.30.0-fake",
    "gitCommit": "0" * 40,
    "gitTreeState": "clean",
    "buildDate": "2024-01-01T00:00:00Z",
    "goVersion": "go1.22",
    "compiler": "gc",
    "platform": "linux/amd64",
}


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


def _matches(labels: dict[str, str], selector: str) -> bool:
    for term in filter(None, (t.strip() for t in selector.split(","))):
        if "!=" in term:
            k, v = term.split("!=", 1)
            if labels.get(k) == v:
                return False
        elif "=" in term:
            k, v = term.split("=", 1)
            if labels.get(k.rstrip("=")) != v:
                return False
        elif term not in labels:
            return False
    return True


_POD = re.compile(r"^/api/v1/namespaces/([^/]+)/pods(?:/([^/]+))?$")
_JOB = re.compile(r"^/apis/batch/v1/namespaces/([^/]+)/jobs(?:/([^/]+))?$")
_LEASE = re.compile(r"^/apis/coordination\.k8s\.io/v1/namespaces/([^/]+)/leases(?:/([^/]+))?$")
_MICROTIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}(Z|[+-]\d\d:\d\d)$")
_CKPT = re.compile(r"^(?:/api/v1/nodes/([^/]+)/proxy)?/checkpoint/([^/]+)/([^/]+)/([^/]+)$")


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:
        return None

    # ---- plumbing
    def _send(self, code: int, doc: Any, content_type: str = "application/json") -> None:
        body = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _body(self) -> bytes:
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _authorised(self, group: str, resource: str, verb: str) -> bool:
        cluster = self.server.cluster
        if self.headers.get("Authorization") != f"Bearer {TOKEN}" or (
            cluster.allowed is not None and (group, resource, verb) not in cluster.allowed
        ):
            self._body()  # refused: drain the request body, or it would be read as the next request
        if self.headers.get("Authorization") != f"Bearer {TOKEN}":
            self._send(401, _status(401, "Unauthorized", "Unauthorized"))
            return False
        with cluster.lock:
            cluster.calls.append((group, resource, verb))
        if cluster.allowed is not None and (group, resource, verb) not in cluster.allowed:
            self._send(
                403,
                _status(
                    403,
                    "Forbidden",
                    f'{resource} is forbidden: User "system:serviceaccount:drsvc:test" cannot {verb} '
                    f'resource "{resource}" in API group "{group}"',
                ),
            )
            return False
        return True

    def _route(self, method: str) -> None:
        url = urllib.parse.urlsplit(self.path)
        query = dict(urllib.parse.parse_qsl(url.query))
        path = url.path
        if path in ("/version", "/version/") and method == "GET":
            self._send(200, _VERSION)
            return
        if m := _CKPT.match(path):
            node, ns, pod, ctr = m.groups()
            if method != "POST":
                self._send(405, b"405 method not allowed", "text/plain")
                return
            if node is not None:
                if not self._authorised("", "nodes/proxy", "create"):
                    return
            elif not self.connection.getpeercert():  # type: ignore[attr-defined]
                self._send(401, b"Unauthorized", "text/plain")
                return
            self._checkpoint(ns, pod, ctr, query)
            return
        if m := _POD.match(path):
            ns, name = m.groups()
            verb = {"GET": "get" if name else "list", "POST": "create", "DELETE": "delete"}.get(method, "?")
            if not self._authorised("", "pods", verb):
                return
            self._pods(verb, ns, name, query)
            return
        if m := _LEASE.match(path):
            ns, name = m.groups()
            verb = {"GET": "get" if name else "list", "POST": "create", "PUT": "update"}.get(method, "?")
            if not self._authorised("coordination.k8s.io", "leases", verb):
                return
            self._leases(verb, ns, name)
            return
        if m := _JOB.match(path):
            ns, name = m.groups()
            verb = {"GET": "get" if name else "list", "POST": "create", "DELETE": "delete"}.get(method, "?")
            if verb == "list" and query.get("watch") in ("true", "1"):
                verb = "watch"
            if not self._authorised("batch", "jobs", verb):
                return
            self._jobs(verb, ns, name, query)
            return
        self._send(404, b"404 page not found", "text/plain")

    def do_GET(self) -> None:
        self._route("GET")

    def do_POST(self) -> None:
        self._route("POST")

    def do_DELETE(self) -> None:
        self._route("DELETE")

    def do_PUT(self) -> None:
        self._route("PUT")

    # ---- kubelet
    def _checkpoint(self, ns: str, pod_name: str, ctr: str, query: dict[str, str]) -> None:
        cluster = self.server.cluster
        self._body()
        cluster.kubelet_calls.append(f"{ns}/{pod_name}/{ctr}?timeout={query.get('timeout')}")
        if not cluster.checkpoint_enabled:
            self._send(404, b"404 page not found", "text/plain")
            return
        pod = cluster.pods.get((ns, pod_name))
        if pod is None:
            self._send(404, b"pod does not exist", "text/plain")
            return
        if (
            ctr not in [c["name"] for c in pod["spec"]["containers"]]
            or f"{ns}/{pod_name}/{ctr}" in cluster.kubelet_gone
        ):
            self._send(404, f"container {ctr} does not exist".encode(), "text/plain")
            return
        if cluster.fail_checkpoint:
            code, text = cluster.fail_checkpoint.pop(0)
            self._send(code, f"checkpointing of {ns}/{pod_name}/{ctr} failed ({text})".encode(), "text/plain")
            return
        stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        fname = f"checkpoint-{pod_name}_{ns}-{ctr}-{stamp}.tar"
        try:
            cluster.node.checkpoint(pod, ctr, cluster.node_dir / fname)
        except Exception as e:
            self._send(500, f"checkpointing of {ns}/{pod_name}/{ctr} failed ({e})".encode(), "text/plain")
            return
        self._send(200, {"items": [f"{KUBELET_DIR}/{fname}"]})

    # ---- pods
    def _pods(self, verb: str, ns: str, name: str | None, query: dict[str, str]) -> None:
        cluster = self.server.cluster
        if verb == "list":
            selector = query.get("labelSelector", "")
            with cluster.lock:
                items = [p for (pns, _), p in sorted(cluster.pods.items()) if pns == ns]
            items = [p for p in items if _matches(p["metadata"].get("labels") or {}, selector)]
            self._send(
                200,
                {
                    "kind": "PodList",
                    "apiVersion": "v1",
                    "metadata": {"resourceVersion": str(cluster.rv)},
                    "items": items,
                },
            )
            return
        if verb == "create":
            pod = json.loads(self._body())
            name = pod["metadata"]["name"]
            if (ns, name) in cluster.pods:
                self._send(409, _status(409, "AlreadyExists", f'pods "{name}" already exists'))
                return
            pod["metadata"].update(namespace=ns, uid=secrets.token_hex(8), creationTimestamp=_now())
            ctr = (pod["metadata"].get("labels") or {}).get("drsvc.container") or pod["spec"]["containers"][0]["name"]
            image = next(c["image"] for c in pod["spec"]["containers"] if c["name"] == ctr)
            try:
                archive = self._archive_for(image)
                cid = cluster.node.start(pod, ctr, archive)
            except Exception as e:
                pod["status"] = {
                    "phase": "Pending",
                    "containerStatuses": [
                        {
                            "name": ctr,
                            "image": image,
                            "imageID": "",
                            "ready": False,
                            "restartCount": 0,
                            "state": {"waiting": {"reason": "CreateContainerError", "message": str(e)}},
                        }
                    ],
                }
            else:
                cluster._set_running(pod, ctr, cid, f"sha256:{hashlib.sha256(image.encode()).hexdigest()}")
                pod["spec"].setdefault("nodeName", "node-1")
            with cluster.lock:
                cluster.pods[(ns, name)] = pod
            self._send(201, pod)
            return
        assert name is not None
        pod = cluster.pods.get((ns, name))
        if pod is None:
            self._send(404, _status(404, "NotFound", f'pods "{name}" not found'))
            return
        if verb == "delete":
            self._body()
            with cluster.lock:
                cluster.pods.pop((ns, name), None)
            cluster.node.stop(pod)
        self._send(200, pod)

    def _archive_for(self, image: str) -> Path | None:
        """The checkpoint archive a pod's image names: a node path, or a checkpoint image in the registry."""
        cluster = self.server.cluster
        if image.startswith(KUBELET_DIR + "/"):
            return cluster.node_dir / image.rsplit("/", 1)[1]
        reg = cluster.registry
        if reg is None or not image.startswith(reg.host + "/"):
            return None
        repo, _, tag = image[len(reg.host) + 1 :].rpartition(":")
        manifest = json.loads(reg.manifests[(repo, tag)])
        if "io.kubernetes.cri-o.annotations.checkpoint.name" not in (manifest.get("annotations") or {}):
            return None
        dest = cluster.node_dir / f"pulled-{tag}.tar"
        dest.write_bytes(reg.blobs[manifest["layers"][0]["digest"]])
        return dest

    # ---- leases (coordination.k8s.io/v1)
    def _leases(self, verb: str, ns: str, name: str | None) -> None:
        cluster = self.server.cluster
        if verb == "get":
            assert name is not None
            with cluster.lock:
                lease = cluster.leases.get((ns, name))
            if lease is None:
                self._send(404, _status(404, "NotFound", f'leases.coordination.k8s.io "{name}" not found'))
            else:
                self._send(200, lease)
            return
        if verb not in ("create", "update"):
            self._send(405, _status(405, "MethodNotAllowed", f"{verb} is not supported on leases here"))
            return
        lease = json.loads(self._body())
        spec = lease.get("spec") or {}
        for key in ("acquireTime", "renewTime"):
            value = spec.get(key)
            if value is not None and not (isinstance(value, str) and _MICROTIME.match(value)):
                self._send(
                    400,
                    _status(
                        400,
                        "BadRequest",
                        f'Lease in version "v1" cannot be handled as a Lease: parsing time {json.dumps(value)} '
                        'as "2006-01-02T15:04:05.000000Z07:00": cannot parse',
                    ),
                )
                return
            if value is not None:
                spec[key] = dt.datetime.fromisoformat(value).astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        meta = lease.setdefault("metadata", {})
        body_name = meta.get("name")
        with cluster.lock:
            if verb == "create":
                if (ns, body_name) in cluster.leases:
                    self._send(
                        409,
                        _status(409, "AlreadyExists", f'leases.coordination.k8s.io "{body_name}" already exists'),
                    )
                    return
                meta.update(namespace=ns, uid=secrets.token_hex(8), creationTimestamp=_now())
            else:
                current = cluster.leases.get((ns, name or ""))
                if body_name != name:
                    self._send(400, _status(400, "BadRequest", "the name of the object does not match the URL"))
                    return
                if current is None:
                    self._send(404, _status(404, "NotFound", f'leases.coordination.k8s.io "{name}" not found'))
                    return
                given = meta.get("resourceVersion")
                if given and given != current["metadata"]["resourceVersion"]:
                    self._send(
                        409,
                        _status(
                            409,
                            "Conflict",
                            f'Operation cannot be fulfilled on leases.coordination.k8s.io "{name}": the object has '
                            "been modified; please apply your changes to the latest version and try again",
                        ),
                    )
                    return
                meta.update(
                    namespace=ns,
                    uid=current["metadata"]["uid"],
                    creationTimestamp=current["metadata"]["creationTimestamp"],
                )
            lease.update(apiVersion="coordination.k8s.io/v1", kind="Lease")
            meta["resourceVersion"] = str(cluster._next_rv())
            cluster.leases[(ns, meta["name"])] = lease
        self._send(201 if verb == "create" else 200, lease)

    # ---- jobs
    def _jobs(self, verb: str, ns: str, name: str | None, query: dict[str, str]) -> None:
        cluster = self.server.cluster
        if verb == "create":
            job = json.loads(self._body())
            name = job["metadata"]["name"]
            with cluster.lock:
                if (ns, name) in cluster.jobs:
                    self._send(409, _status(409, "AlreadyExists", f'jobs.batch "{name}" already exists'))
                    return
                job["metadata"].update(namespace=ns, uid=secrets.token_hex(8), resourceVersion=str(cluster._next_rv()))
                job["status"] = {}
                cluster.jobs[(ns, name)] = job
                cluster.events.append((cluster.rv, ns, "ADDED", json.loads(json.dumps(job))))
                cluster.lock.notify_all()
            self._send(201, job)
            return
        if verb == "watch":
            self._watch(ns, query)
            return
        if verb == "list":
            items = [j for (jns, _), j in cluster.jobs.items() if jns == ns]
            self._send(200, {"kind": "JobList", "apiVersion": "batch/v1", "metadata": {}, "items": items})
            return
        assert name is not None
        job = cluster.jobs.get((ns, name))
        if job is None:
            self._send(404, _status(404, "NotFound", f'jobs.batch "{name}" not found'))
            return
        if verb == "delete":
            self._body()
            with cluster.lock:
                cluster.jobs.pop((ns, name), None)
                cluster.events.append((cluster._next_rv(), ns, "DELETED", job))
                cluster.lock.notify_all()
        self._send(200, job)

    def _watch(self, ns: str, query: dict[str, str]) -> None:
        cluster = self.server.cluster
        since = int(query.get("resourceVersion") or 0)
        timeout = float(query.get("timeoutSeconds") or 30)
        selector = query.get("labelSelector", "")
        deadline = dt.datetime.now().timestamp() + timeout
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

        def chunk(data: bytes) -> None:
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()

        try:
            while not self.server.stopping:
                with cluster.lock:
                    fresh = [e for e in cluster.events if e[0] > since and e[1] == ns]
                    if not fresh:
                        left = deadline - dt.datetime.now().timestamp()
                        if left <= 0:
                            break
                        cluster.lock.wait(min(left, 0.2))
                        continue
                for rv, _, kind, job in fresh:
                    since = max(since, rv)
                    if _matches(job["metadata"].get("labels") or {}, selector):
                        chunk(json.dumps({"type": kind, "object": job}).encode() + b"\n")
            chunk(b"")
        except (BrokenPipeError, ConnectionResetError):
            pass
        self.close_connection = True


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    cluster: FakeCluster
    stopping: bool = False


@dataclass
class FakeKubelet:
    """The running fake: ``url`` (https://127.0.0.1:PORT), ``certs``, ``cluster``; ``configuration()`` for clients."""

    cluster: FakeCluster
    certs: Certs
    server: _Server
    thread: threading.Thread

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.server.server_address[1]}"

    def configuration(self, token: str = TOKEN) -> Any:
        import kubernetes.client as kclient

        c = kclient.Configuration()
        c.host = self.url
        c.ssl_ca_cert = str(self.certs.ca)
        c.verify_ssl = True
        c.api_key = {"authorization": token}
        c.api_key_prefix = {"authorization": "Bearer"}
        return c

    def kubeconfig(self, path: Path, token: str = TOKEN) -> Path:
        """A kubeconfig file for this fake (what ``$KUBECONFIG`` or ``kubeconfig=`` would name)."""
        import yaml

        doc = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {"name": "fake", "cluster": {"server": self.url, "certificate-authority": str(self.certs.ca)}}
            ],
            "users": [{"name": "drsvc", "user": {"token": token}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "drsvc"}}],
            "current-context": "fake",
        }
        path.write_text(yaml.safe_dump(doc))
        return path

    def stop(self) -> None:
        self.server.stopping = True
        with self.cluster.lock:
            self.cluster.lock.notify_all()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


def start_fake(cluster: FakeCluster, certs: Certs) -> FakeKubelet:
    """Serve ``cluster`` over HTTPS on 127.0.0.1 (client certificates optional: the kubelet path needs one)."""
    server = _Server(("127.0.0.1", 0), _Handler)
    server.cluster = cluster
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(certs.ca, certs.server_key)
    ctx.load_verify_locations(certs.client_cert)
    ctx.verify_mode = ssl.CERT_OPTIONAL
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), name="fake-kubelet", daemon=True)
    thread.start()
    return FakeKubelet(cluster, certs, server, thread)


# ---------------------------------------------------------------------- OCI registry
class _RegistryHandler(BaseHTTPRequestHandler):
    server: _RegistryServer
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:
        return None

    def _send(self, code: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(code)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    self.rfile.readline()
                    return bytes(out)
                out += self.rfile.read(size)
                self.rfile.readline()
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def do_POST(self) -> None:
        reg = self.server.registry
        m = re.match(r"^/v2/(.+)/blobs/uploads/$", self.path)
        if not m:
            self._send(404)
            return
        self._read_body()
        uid = secrets.token_hex(8)
        reg.uploads[uid] = bytearray()
        reg.requests.append(("POST", self.path))
        self._send(202, headers={"Location": f"/v2/{m.group(1)}/blobs/uploads/{uid}", "Docker-Upload-UUID": uid})

    def do_PATCH(self) -> None:
        reg = self.server.registry
        m = re.match(r"^/v2/(.+)/blobs/uploads/([0-9a-f]+)$", self.path)
        if not m or m.group(2) not in reg.uploads:
            self._send(404)
            return
        data = self._read_body()
        reg.uploads[m.group(2)] += data
        reg.requests.append(("PATCH", self.path))
        n = len(reg.uploads[m.group(2)])
        self._send(202, headers={"Location": self.path, "Range": f"0-{max(n - 1, 0)}"})

    def do_PUT(self) -> None:
        reg = self.server.registry
        url = urllib.parse.urlsplit(self.path)
        data = self._read_body()
        reg.requests.append(("PUT", url.path))
        if m := re.match(r"^/v2/(.+)/blobs/uploads/([0-9a-f]+)$", url.path):
            digest = dict(urllib.parse.parse_qsl(url.query)).get("digest", "")
            blob = bytes(reg.uploads.pop(m.group(2), b"")) + data
            if digest != f"sha256:{hashlib.sha256(blob).hexdigest()}":
                self._send(400, json.dumps({"errors": [{"code": "DIGEST_INVALID"}]}).encode())
                return
            reg.blobs[digest] = blob
            self._send(201, headers={"Location": f"/v2/{m.group(1)}/blobs/{digest}", "Docker-Content-Digest": digest})
            return
        if m := re.match(r"^/v2/(.+)/manifests/([^/]+)$", url.path):
            doc = json.loads(data)
            missing = [d["digest"] for d in [doc["config"], *doc["layers"]] if d["digest"] not in reg.blobs]
            if missing:
                self._send(400, json.dumps({"errors": [{"code": "MANIFEST_BLOB_UNKNOWN", "detail": missing}]}).encode())
                return
            reg.manifests[(m.group(1), m.group(2))] = data
            reg.pushed[(m.group(1), m.group(2))] = data
            reg.manifest_types[(m.group(1), m.group(2))] = self.headers.get("Content-Type", "")
            digest = f"sha256:{hashlib.sha256(data).hexdigest()}"
            self._send(201, headers={"Docker-Content-Digest": digest})
            return
        self._send(404)

    def do_GET(self) -> None:
        reg = self.server.registry
        if m := re.match(r"^/v2/(.+)/manifests/([^/]+)$", self.path):
            data = reg.manifests.get((m.group(1), m.group(2)))
            self._send(
                200, data, {"Content-Type": "application/vnd.oci.image.manifest.v1+json"}
            ) if data else self._send(404)
            return
        if m := re.match(r"^/v2/(.+)/blobs/(sha256:[0-9a-f]+)$", self.path):
            blob = reg.blobs.get(m.group(2))
            self._send(200, blob) if blob is not None else self._send(404)
            return
        self._send(404)

    def do_DELETE(self) -> None:
        """Manifests by digest (every tag naming it goes), blobs by digest; 405 when deletes are off."""
        reg = self.server.registry
        reg.requests.append(("DELETE", self.path))
        if not reg.deletes:
            self._send(405, json.dumps({"errors": [{"code": "UNSUPPORTED"}]}).encode())
            return
        if m := re.match(r"^/v2/(.+)/manifests/(sha256:[0-9a-f]+)$", self.path):
            tags = [
                k
                for k, v in reg.manifests.items()
                if k[0] == m.group(1) and hashlib.sha256(v).hexdigest() == m.group(2)[7:]
            ]
            for key in tags:
                del reg.manifests[key]
            self._send(202) if tags else self._send(404)
            return
        if m := re.match(r"^/v2/(.+)/blobs/(sha256:[0-9a-f]+)$", self.path):
            found = reg.blobs.pop(m.group(2), None)
            self._send(202) if found is not None else self._send(404)
            return
        self._send(404)


class _RegistryServer(ThreadingHTTPServer):
    daemon_threads = True
    registry: FakeRegistry


class FakeRegistry:
    """Plain-HTTP OCI distribution subset: blob uploads (POST, PATCH, PUT ?digest=), manifests, blob GET, DELETE."""

    def __init__(self) -> None:
        self.uploads: dict[str, bytearray] = {}
        self.blobs: dict[str, bytes] = {}
        self.manifests: dict[tuple[str, str], bytes] = {}
        self.pushed: dict[tuple[str, str], bytes] = {}  # every manifest ever put, deleted or not
        self.manifest_types: dict[tuple[str, str], str] = {}
        self.deletes = True  # False: answer DELETE with 405, as registries with deletes disabled do
        self.requests: list[tuple[str, str]] = []
        self._server = _RegistryServer(("127.0.0.1", 0), _RegistryHandler)
        self._server.registry = self
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="fake-registry", daemon=True
        )
        self._thread.start()

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self._server.server_address[1]}"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


def watch_events(lines: Iterator[bytes]) -> Iterator[dict[str, Any]]:
    """Parse newline-delimited watch events (for tests reading the watch stream by hand)."""
    for line in lines:
        if line.strip():
            yield json.loads(line)


@dataclass
class FakeEnv:
    """A started fake API server + kubelet and registry, with its node checkpoint dir."""

    kubelet: FakeKubelet
    registry: FakeRegistry
    node_dir: Path

    @property
    def cluster(self) -> FakeCluster:
        return self.kubelet.cluster

    def crio_url(self, **options: str) -> str:
        query = {"archive_root": str(self.node_dir), "registry": self.registry.host, "registry_insecure": "1"}
        query.update(timeout="5")
        query.update(options)
        return "crio://desktops?" + urllib.parse.urlencode(query)


@contextmanager
def fake_env(tmp: Path, node: Node | None = None) -> Iterator[FakeEnv]:
    """Start the fakes in ``tmp`` (certificates, node dir) and stop them afterwards."""
    node_dir = tmp / "node-checkpoints"
    node_dir.mkdir(parents=True, exist_ok=True)
    registry = FakeRegistry()
    cluster = FakeCluster(node_dir=node_dir, node=node or SyntheticNode(), registry=registry)
    kubelet = start_fake(cluster, make_certs(tmp / "certs"))
    try:
        yield FakeEnv(kubelet, registry, node_dir)
    finally:
        kubelet.stop()
        registry.stop()
