"""Checkpoint images: the archive as the one layer of an OCI image, pushed through the distribution API."""

from __future__ import annotations

import hashlib
import http.client
import json
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from drsvc.errors import BackendError, DrsvcError
from drsvc.runtimes.crio.pods import now_iso, pod_doc

CHECKPOINT_ANNOTATION = "io.kubernetes.cri-o.annotations.checkpoint.name"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"


@dataclass(frozen=True)
class PushedImage:
    """A checkpoint image in a registry: every memory page of a desktop, to be deleted once restored."""

    host: str
    repo: str
    tag: str
    manifest_digest: str
    blobs: tuple[str, ...]  # the layer (the archive) and the config

    @property
    def reference(self) -> str:
        return f"{self.host}/{self.repo}:{self.tag}"


def checkpoint_repo(registry: str) -> tuple[str, str]:
    """(host, repository) checkpoint images of ``registry`` (HOST[/PREFIX]) are pushed to."""
    host, _, prefix = registry.partition("/")
    return host, f"{prefix}/checkpoints" if prefix else "drsvc/checkpoints"


def push_checkpoint_image(
    registry: str,
    stream: Iterator[bytes],
    capture: dict[str, bytes],
    tag: str,
    what: str,
    *,
    insecure: bool,
    timeout: float,
) -> PushedImage:
    """Upload the archive as the one layer of a checkpoint image to ``registry`` (HOST[/PREFIX]); its reference."""
    host, repo = checkpoint_repo(registry)
    reg = _Registry(host, insecure=insecure, timeout=timeout)
    layer_digest, layer_size = reg.upload_blob(repo, stream, what)
    doc = pod_doc(capture, what)
    container = doc["drsvc"]["container"]
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "created": now_iso(),
            "config": {"Labels": {CHECKPOINT_ANNOTATION: container}},
            "rootfs": {"type": "layers", "diff_ids": [layer_digest]},  # uncompressed: diff id = digest
            "history": [{"created": now_iso(), "created_by": "drsvc restore (checkpoint archive)"}],
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
                "org.opencontainers.image.created": now_iso(),
            },
        },
        sort_keys=True,
    ).encode()
    reg.put_manifest(repo, tag, manifest, what)
    digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
    return PushedImage(host, repo, tag, digest, (layer_digest, config_digest))


def delete_checkpoint_image(image: PushedImage, *, insecure: bool, timeout: float) -> str | None:
    """Delete a pushed checkpoint image (manifest, then its blobs); None when done, else why not.

    The distribution API deletes by digest; a registry with deletes disabled answers 405 (the
    image then stays until someone removes it: the caller warns).
    """
    reg = _Registry(image.host, insecure=insecure, timeout=timeout)
    what = f"delete checkpoint image {image.reference}"
    problems = []
    for path in [f"/v2/{image.repo}/manifests/{image.manifest_digest}"] + [
        f"/v2/{image.repo}/blobs/{digest}" for digest in image.blobs
    ]:
        try:
            status, _, body = reg._request("DELETE", path, what)
        except DrsvcError as e:
            problems.append(str(e))
            continue
        if status not in (200, 202, 404):
            problems.append(f"{path}: HTTP {status} {body.decode(errors='replace')[:200]}")
    if problems:
        return f"{what}: the registry kept it ({'; '.join(problems)}); delete it there: it holds the desktop's memory"
    return None


def forget_checkpoint_image(host: str, repo: str, tag: str, *, insecure: bool, timeout: float) -> None:
    """Delete the checkpoint image ``host/repo:tag`` a killed restore left (its manifest, then its blobs).

    The distribution API deletes manifests by digest only: GET the manifest by tag (accepting the
    OCI and Docker v2 types), take its digest, DELETE it and the blobs it names. Gone already
    (404) is fine; a manifest without drsvc's checkpoint annotation is not ours and stays
    (``BackendError``, as when the registry refuses the delete).
    """
    reg = _Registry(host, insecure=insecure, timeout=timeout)
    what = f"delete checkpoint image {host}/{repo}:{tag}"
    status, headers, body = reg._request(
        "GET", f"/v2/{repo}/manifests/{tag}", what, headers={"Accept": f"{OCI_MANIFEST}, {DOCKER_MANIFEST}"}
    )
    if status == 404:
        return
    if status != 200:
        raise _registry_error(what, host, status, body)
    try:
        doc = json.loads(body)
        blobs = tuple(str(d["digest"]) for d in [*doc["layers"], doc["config"]])
        annotations = doc.get("annotations") or {}
    except (ValueError, KeyError, TypeError) as e:
        raise BackendError(f"{what}: registry {host} returned an unreadable manifest ({e})") from None
    if CHECKPOINT_ANNOTATION not in annotations:
        raise BackendError(f"{what}: not a checkpoint image drsvc pushed (no {CHECKPOINT_ANNOTATION}); left alone")
    # the registry names the digest it deletes by; else it is the digest of the bytes served
    digest = headers.get("docker-content-digest") or "sha256:" + hashlib.sha256(body).hexdigest()
    problem = delete_checkpoint_image(PushedImage(host, repo, tag, digest, blobs), insecure=insecure, timeout=timeout)
    if problem:
        raise BackendError(problem)


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
