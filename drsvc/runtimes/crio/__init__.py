"""``crio://NAMESPACE?options``: CRI-O desktops under Kubernetes (kubelet checkpoint API + API server).

The adapter in pieces: ``kube`` (API server client, the calls it makes, errors), ``kubelet``
(the checkpoint call), ``pods`` (desktop pods, the pod a point keeps), ``registry`` (checkpoint
images pushed through the OCI distribution API), ``runtime`` (the ``ContainerRuntime``).

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
  (``registry_insecure=1`` for plain HTTP: warned about at every restore); ``restore_mode=image``
  (default) or ``archive`` (CRI-O gets the archive path on the node as the image: the pod is
  pinned to ``node``). The image, or the node's copy, is deleted once CRI-O restored from it.
- ``sandbox``: a namespace for clones (``restore --as``, drills): a clone named ``POD`` is created
  there, where a deny-all NetworkPolicy and Pod Security ``baseline`` apply and drills' service
  account may create pods (deploy/kubernetes). Without it clones go to ``NAMESPACE``.
- ``kubelet_url`` may name ``{node}`` (the node's name) or ``{node_ip}`` (``$NODE_IP``, the
  node agent's ``status.hostIP``).

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

import urllib.parse
from typing import Any

from drsvc.errors import InvalidInput
from drsvc.runtimes.crio.kube import API_CALLS, KUBELET_CALLS, PROXY_CALLS, Unsupported, load_configuration
from drsvc.runtimes.crio.pods import LABEL_CONTAINER, POD_MEMBER
from drsvc.runtimes.crio.registry import CHECKPOINT_ANNOTATION
from drsvc.runtimes.crio.runtime import CrioRuntime

__all__ = [
    "API_CALLS",
    "CHECKPOINT_ANNOTATION",
    "KUBELET_CALLS",
    "LABEL_CONTAINER",
    "POD_MEMBER",
    "PROXY_CALLS",
    "CrioRuntime",
    "Unsupported",
    "from_url",
    "load_configuration",
]


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
    "sandbox",
)
