"""The Docker Engine API as drsvc uses it: one low-level SDK client, errors translated, checkpoint endpoints.

The experimental checkpoint endpoints have no SDK helpers and go through the client's
``_url``/``_post_json``/``_post``/``_delete`` plumbing.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

from drsvc.errors import BackendError, DrsvcError, NotFound
from drsvc.optional import require
from drsvc.runtimes.base import with_criu_log
from drsvc.runtimes.node import local_node_name

CHUNK = 1 << 20
# seconds between checkpoint attempts while containerd still holds the previous one (8.75 s in all)
_CONTENT_EXISTS_BACKOFF = (0.25, 0.5, 1.0, 2.0, 5.0)


class DockerClient:
    """A Docker Engine on this host, reached through its API socket (experimental features on)."""

    def __init__(self, socket_path: str, *, timeout: float = 900.0) -> None:
        self.socket_path = socket_path
        self.timeout = timeout
        self._api: Any = None
        self._info: dict[str, Any] | None = None
        self._node: str | None = None
        self._lock = threading.Lock()  # checkpoints of a batch run in threads

    @property
    def api(self) -> Any:
        """The SDK's low-level client (created on first use, so opening never touches the socket)."""
        with self._lock:
            if self._api is None:
                docker = require("docker", "docker")

                try:
                    self._api = docker.APIClient(
                        base_url=f"unix://{self.socket_path}", version="auto", timeout=int(self.timeout)
                    )
                except docker.errors.DockerException as e:
                    raise BackendError(
                        f"the Docker API is not answering at {self.socket_path} ({cause(e)}); "
                        f"start dockerd with -H unix://{self.socket_path} --experimental"
                    ) from e
            return self._api

    @contextmanager
    def errors(self, what: str, *, missing: str = "not_found") -> Iterator[None]:
        """Translate SDK/HTTP failures: 404 -> NotFound (unless ``missing='backend'``), others BackendError."""
        docker = require("docker", "docker")  # entered before ``api``: a missing extra is named here too
        import requests  # a dependency of docker

        try:
            yield
        except DrsvcError:
            raise
        except docker.errors.NotFound as e:
            if missing == "backend":
                raise BackendError(f"{what}: {explain(e)}") from e
            raise NotFound(f"{what}: {explain(e)}") from e
        except docker.errors.APIError as e:
            raise BackendError(f"{what}: {explain(e)} (HTTP {e.status_code})") from e
        except (requests.exceptions.ConnectionError, FileNotFoundError, ConnectionRefusedError) as e:
            raise BackendError(f"{what}: the Docker API is not answering at {self.socket_path} ({cause(e)})") from e
        except (requests.exceptions.RequestException, docker.errors.DockerException, OSError) as e:
            raise BackendError(f"{what}: Docker API at {self.socket_path}: {cause(e)}") from e

    def info(self) -> dict[str, Any]:
        """``docker info``, asked once."""
        if self._info is None:
            with self.errors("docker info"):
                self._info = cast(dict[str, Any], self.api.info())
        return self._info

    def root_dir(self) -> Path:
        """Docker's data root on this host (``DockerRootDir``)."""
        return Path(str(self.info().get("DockerRootDir") or "/var/lib/docker"))

    def node_name(self) -> str:
        """The Engine's host name: this host's own when dockerd provably runs in this process's UTS
        namespace (``drsvc.runtimes.node``, no request), else ``docker info``'s (this host's when the
        Engine does not answer)."""
        if self._node is None:
            self._node = local_node_name(self.socket_path)
        if self._node is not None:
            return self._node
        try:
            return str(self.info().get("Name") or socket.gethostname())
        except DrsvcError:
            return socket.gethostname()

    def inspect_raw(self, name: str) -> dict[str, Any]:
        """The inspect document of a container by name or id; ``NotFound`` if there is none."""
        with self.errors(f"inspect container {name}"):
            return cast(dict[str, Any], self.api.inspect_container(name))

    def create_checkpoint(self, cid: str, ckpt: str, what: str) -> None:
        """``POST /containers/{id}/checkpoints``, waiting out containerd's copy of the previous one.

        containerd keeps a checkpoint's blobs (among them the container's spec, the same every
        time) until its garbage collector runs, shortly after dockerd deletes the checkpoint image;
        a checkpoint of the same container taken meanwhile fails with "content sha256:...: already
        exists" (moby#42900). Measured in the lab: back-to-back checkpoints clear within 0.3-1.3 s.
        """
        url = self.api._url("/containers/{0}/checkpoints", cid)
        for delay in (*_CONTENT_EXISTS_BACKOFF, None):
            with self.errors(what, missing="backend"):
                resp = self.api._post_json(url, data={"CheckpointID": ckpt, "Exit": False})
                if delay is not None and _content_exists(resp):
                    resp.close()
                    time.sleep(delay)
                    continue
                self.api._raise_for_status(resp)
                return

    def delete_checkpoint(self, cid: str, ckpt: str) -> None:
        """``DELETE /containers/{id}/checkpoints/{name}``, best effort (its directory goes anyway)."""
        try:
            resp = self.api._delete(self.api._url("/containers/{0}/checkpoints/{1}", cid, ckpt))
            resp.close()
        except Exception:
            pass

    def start_from_checkpoint(self, cid: str, ckpt: str, what: str) -> None:
        """``POST /containers/{id}/start?checkpoint=NAME``."""
        with self.errors(f"{what}: start from checkpoint", missing="backend"):
            resp = self.api._post(self.api._url("/containers/{0}/start", cid), params={"checkpoint": ckpt})
            self.api._raise_for_status(resp)

    def create_container(self, body: dict[str, Any], name: str, what: str) -> str:
        """``POST /containers/create?name=NAME`` with a full create body; return the new id."""
        with self.errors(f"{what}: create container {name}", missing="backend"):
            resp = self.api._post_json(self.api._url("/containers/create"), data=body, params={"name": name})
            created = self.api._result(resp, json=True)
        return str(created["Id"])

    def remove(self, name: str) -> None:
        """Remove a container by force (SIGKILL, no grace period); a missing container is fine."""
        try:
            with self.errors(f"remove {name}"):
                self.api.remove_container(name, force=True)
        except NotFound:
            pass

    def image_id(self, image: str) -> str | None:
        """The full id of a local image (id or reference), None when absent."""
        try:
            with self.errors(f"inspect image {image}"):
                return str(self.api.inspect_image(image)["Id"])
        except NotFound:
            return None

    def close(self) -> None:
        """Close the SDK's connection pool (idempotent)."""
        with self._lock:
            api, self._api = self._api, None
        if api is not None:
            api.close()


def _content_exists(resp: Any) -> bool:
    """Whether dockerd answered that containerd already holds a blob it meant to write."""
    return bool(resp.status_code == 500 and "content sha256:" in resp.text and "already exists" in resp.text)


def explain(e: Any) -> str:
    """An SDK error's message, with the CRIU log's reason when it names one on this host."""
    return with_criu_log(str(getattr(e, "explanation", None) or e).strip())


def cause(e: BaseException) -> str:
    text = str(e)
    return text[:300] if text else type(e).__name__


def chunks(stream: Any) -> Iterator[bytes]:
    """A binary stream as pieces of at most 1 MiB."""
    while chunk := stream.read(CHUNK):
        yield chunk
