"""The kubelet checkpoint API: ``POST /checkpoint/NS/POD/CONTAINER``, via the API server's node proxy or the kubelet."""

from __future__ import annotations

import http.client
import os
import ssl
import urllib.parse
from dataclasses import dataclass
from typing import Any

from drsvc.errors import BackendError, DrsvcError, NotFound
from drsvc.runtimes.crio.kube import status_message

KUBELET_CHECKPOINTS = "/var/lib/kubelet/checkpoints"


@dataclass(frozen=True)
class Kubelet:
    """How drsvc reaches kubelets: the API server's node proxy (``api``), or straight with a client certificate."""

    via: str  # 'proxy' | 'kubelet'
    api: Any  # the kubernetes ApiClient (node proxy)
    url: str  # 'https://{node}:10250'
    cert: str | None
    key: str | None
    ca: str | None
    timeout: float

    def checkpoint(self, node: str, ns: str, pod: str, container: str, what: str) -> tuple[int, bytes]:
        """(HTTP status, body) of the kubelet's checkpoint call for one container."""
        return _checkpoint(self, node, ns, pod, container, what)


def _checkpoint(self: Kubelet, node: str, ns: str, pod: str, container: str, what: str) -> tuple[int, bytes]:
    path = "/checkpoint/" + "/".join(urllib.parse.quote(p, safe="") for p in (ns, pod, container))
    query = [("timeout", str(int(self.timeout)))]
    if self.via == "proxy":
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            # the client's generic call: its node-proxy helpers only know GET/POST without a query
            method, url, headers, _, _ = self.api.param_serialize(
                "POST",
                f"/api/v1/nodes/{urllib.parse.quote(node, safe='')}/proxy{path}",
                query_params=query,
                header_params={"Accept": "application/json"},
                auth_settings=["BearerToken"],
            )
            resp = self.api.call_api(method, url, header_params=headers, _request_timeout=self.timeout + 30)
            return int(resp.status), bytes(resp.read() or b"")
        except ApiException as e:
            if not e.status:
                raise BackendError(f"{what}: API server node proxy for {node}: {e.reason}") from e
            return int(e.status), e.body if isinstance(e.body, bytes) else str(e.body or "").encode()
        except (HTTPError, OSError) as e:
            raise BackendError(f"{what}: API server node proxy for {node} unreachable: {e}") from e
    base = urllib.parse.urlsplit(self.url.format(node=node, node_ip=os.environ.get("NODE_IP") or node))
    ctx = ssl.create_default_context(cafile=self.ca)
    if self.cert:
        ctx.load_cert_chain(self.cert, self.key)
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


def kubelet_error(what: str, status: int, body: bytes, via: str, node: str) -> DrsvcError:
    message = status_message(body)
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
