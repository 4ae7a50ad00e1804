"""The Kubernetes API as the ``crio://`` adapter uses it: client configuration, the calls it makes, errors."""

from __future__ import annotations

import json
import os
from typing import Any

from drsvc.errors import BackendError, DrsvcError, InvalidInput, NotFound
from drsvc.optional import require

# Every Kubernetes API call this module makes: (API group, resource, verb) per operation. The RBAC
# manifests grant exactly these, and tests compare them with the calls observed on the fake API
# server (tests/unit/test_deploy_manifests.py).
API_CALLS: dict[str, list[tuple[str, str, str]]] = {
    "discover": [("", "pods", "list")],
    "inspect": [("", "pods", "get"), ("", "pods", "list")],  # list: lookup by container id
    "checkpoint": [("", "pods", "get")],
    "restore": [("", "pods", "create"), ("", "pods", "get")],
    "remove": [("", "pods", "delete"), ("", "pods", "get")],
}
# via=kubelet (what deploy/kubernetes uses): drsvc calls the node's kubelet with a node-local client
# certificate; the kubelet asks the API server whether that certificate's user may do this
# (a SubjectAccessReview), so RBAC grants it to that user, not to a service account.
KUBELET_CALLS: list[tuple[str, str, str]] = [("", "nodes/checkpoint", "create")]
# via=proxy: through the API server's node proxy. `create nodes/proxy` lets its holder call any
# kubelet API on any node (exec in every pod): deploy/kubernetes never grants it.
PROXY_CALLS: list[tuple[str, str, str]] = [("", "nodes/proxy", "create")]


class Unsupported(BackendError):
    """The operation has no equivalent on this runtime."""

    traceback = False


def client_module() -> Any:
    return require("kubernetes.client", "kubernetes", "the crio:// runtime")


def load_configuration(kubeconfig: str | None, context: str | None) -> Any:
    kclient = client_module()
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


def api_error(what: str, status: int, body: Any, verb: str, resource: str, namespace: str) -> DrsvcError:
    message = status_message(body)
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


def status_message(body: Any) -> str:
    text = body.decode(errors="replace") if isinstance(body, bytes) else str(body or "")
    try:
        doc = json.loads(text)
        if isinstance(doc, dict) and doc.get("message"):
            return str(doc["message"])
    except ValueError:
        pass
    return text.strip()
