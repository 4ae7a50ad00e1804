"""``DockerRuntime``: the ``ContainerRuntime`` protocol on a Docker Engine of this host.

Made of the adapter's pieces: ``client`` (the Engine API), ``pack`` (checkpoint → archive),
``unpack`` (archive → container), ``paths`` (where Docker keeps things on this host).
"""

from __future__ import annotations

import json
import shutil
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from typing import Any, BinaryIO, cast

from drsvc.errors import BackendError, DrsvcError, InvalidInput, NotFound
from drsvc.runtimes import freeze
from drsvc.runtimes.base import (
    LABEL_CLONE_STORAGE,
    LABEL_DESKTOP,
    DesktopRef,
    Isolation,
    desktop_from_labels,
    image_matches,
    inspect_isolation,
    loaded_image_id,
    probe_tcp_in_netns,
)
from drsvc.runtimes.cgroupmem import dumped_memory
from drsvc.runtimes.docker.client import CHUNK, DockerClient, chunks
from drsvc.runtimes.docker.pack import LABEL_RESTORED_AT, archive_members, rootfs_diff, tar_stream, visible_labels
from drsvc.runtimes.docker.paths import (
    backup_checkpoint_name,
    checkpoint_dir,
    remove_backup_checkpoint,
    spool_dir,
)
from drsvc.runtimes.docker.unpack import Unpacker
from drsvc.streams import IterReader

_ZERO_TIME = "0001-01-01T00:00:00Z"


class DockerRuntime:
    """A Docker Engine on this host, reached through its API socket (experimental features on)."""

    def __init__(self, socket_path: str, *, timeout: float = 900.0) -> None:
        self.client = DockerClient(socket_path, timeout=timeout)
        self.socket_path = socket_path

    @property
    def url(self) -> str:
        """The URL this runtime was opened from."""
        return f"docker://{self.socket_path}"

    @property
    def api(self) -> Any:
        """The SDK's low-level client (created on first use)."""
        return self.client.api

    # ------------------------------------------------------------------ containers
    def list_desktops(self) -> list[DesktopRef]:
        """Every container (any state) labelled ``drsvc.desktop``, in one API call."""
        with self.client.errors("list containers"):
            items = self.api.containers(all=True, filters={"label": [LABEL_DESKTOP]})
        node = self.client.node_name()
        out = []
        for c in items or []:
            names = [n.lstrip("/") for n in c.get("Names") or []] or [c["Id"][:12]]
            mode = str((c.get("HostConfig") or {}).get("NetworkMode") or "")
            nets = sorted(((c.get("NetworkSettings") or {}).get("Networks") or {}).keys())
            out.append(
                desktop_from_labels(
                    name=names[0],
                    container_id=c["Id"],
                    labels=visible_labels(c.get("Labels")),
                    image=c.get("Image") or "",
                    image_id=c.get("ImageID") or "",
                    state=c.get("State") or "",
                    node=node,
                    network=_network(mode, nets),
                )
            )
        return sorted(out, key=lambda d: (d.desktop_id, d.container))

    def inspect(self, name: str) -> DesktopRef:
        """One container by name or id; raise ``NotFound`` if it does not exist."""
        return self._ref(self.client.inspect_raw(name))

    def _ref(self, c: dict[str, Any]) -> DesktopRef:
        mode = str((c.get("HostConfig") or {}).get("NetworkMode") or "")
        nets = sorted(((c.get("NetworkSettings") or {}).get("Networks") or {}).keys())
        config = c.get("Config") or {}
        state = c.get("State") or {}
        labels = config.get("Labels") or {}
        restored_at = labels.get(LABEL_RESTORED_AT) or None
        if restored_at and str(state.get("FinishedAt") or _ZERO_TIME) != _ZERO_TIME:
            restored_at = None  # stopped (and maybe started afresh) since the restore
        return desktop_from_labels(
            name=str(c.get("Name") or c["Id"][:12]).lstrip("/"),
            container_id=c["Id"],
            labels=visible_labels(labels),
            image=config.get("Image") or "",
            image_id=c.get("Image") or "",
            state=str(state.get("Status") or ""),
            node=self.client.node_name(),
            network=_network(mode, nets),
            restored_at=restored_at,
        )

    def rootfs_path(self, name: str) -> str | None:
        """Host path of the container's mounted root filesystem (overlay2 ``MergedDir``), if any."""
        c = self.client.inspect_raw(name)
        return ((c.get("GraphDriver") or {}).get("Data") or {}).get("MergedDir") or None

    def pause(self, name: str) -> None:
        """Freeze every process of the container (cgroup freezer); ``NotFound`` if missing."""
        with self.client.errors(f"pause {name}"):
            self.api.pause(name)

    def unpause(self, name: str) -> None:
        """Thaw a paused container; ``NotFound`` if missing."""
        with self.client.errors(f"unpause {name}"):
            self.api.unpause(name)

    # ------------------------------------------------------------------ checkpoint
    def checkpoint_artifact(self, token: str) -> tuple[str, str]:
        """What ``checkpoint(..., token=token)`` leaves on this host while it runs (see runtimes.base)."""
        return "checkpoint-dir", backup_checkpoint_name(token)

    def checkpoint_space(self, name: str) -> tuple[int, str] | None:
        """The container's memory CRIU would dump (bytes) and where dockerd writes its checkpoint
        (``<DockerRootDir>/containers/<id>``); None when the memory is unknown (``drsvc.checkpoint_space``)."""
        c = self.client.inspect_raw(name)
        memory = dumped_memory(int((c.get("State") or {}).get("Pid") or 0))
        return None if memory is None else (memory, str(self.client.root_dir() / "containers" / c["Id"]))

    @contextmanager
    def checkpoint(self, name: str, *, tcp_established: bool = True, token: str | None = None) -> Iterator[BinaryIO]:
        """Checkpoint a container, leaving it running; yield drsvc's archive as a stream.

        The CRIU images stay in Docker's checkpoint directory while the archive streams and are
        deleted afterwards (also when the consumer fails). ``token`` names the directory
        (``checkpoint_artifact``): a backup records it first, so that a kill -9 leaves a record.
        """
        what = f"checkpoint {name}"
        c = self.client.inspect_raw(name)  # NotFound before anything else happens
        cid = c["Id"]
        if str((c.get("State") or {}).get("Status")) != "running":
            raise BackendError(f"{what}: container is {(c.get('State') or {}).get('Status')}, not running")
        ckpt = backup_checkpoint_name(token or uuid.uuid4().hex)
        self.client.create_checkpoint(cid, ckpt, what)
        root = self.client.root_dir()
        ckpt_dir = checkpoint_dir(root, cid, ckpt)
        diff_file: Any = None
        try:
            if not ckpt_dir.is_dir():
                raise BackendError(
                    f"{what}: Docker reported success but {ckpt_dir} does not exist "
                    "(the adapter must run on the Docker host)"
                )
            # the rootfs diff is captured right away (closest to the memory instant), spooled to
            # disk beside Docker's data: its size must be known before it enters the archive
            with self.client.errors(f"changes of {cid[:12]}"):
                changes = self.api.diff(cid) or []
            diff_file, deleted = rootfs_diff(c, changes, spool_dir(root))
            yield cast(BinaryIO, IterReader(tar_stream(archive_members(c, ckpt_dir, diff_file, deleted))))
        finally:
            if diff_file is not None:
                diff_file.close()
            self.client.delete_checkpoint(cid, ckpt)
            shutil.rmtree(ckpt_dir, ignore_errors=True)

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
        """Start a container from an archive stream, under its old name (``name=None``) or as clone ``name``.

        ``network``: None keeps the checkpointed network mode; ``'none'`` restores into an empty
        network namespace (loopback only: drill sandboxes); another value names a Docker network.
        ``labels`` are merged into the container's labels. A clone never keeps published ports or
        the original's MAC address.
        """
        what = f"restore {name or 'container'}"
        if network is not None and (network == "host" or not network.strip()):
            raise InvalidInput(f"{what}: network must be 'none' or a Docker network name, not {network!r}")
        unpacker = Unpacker(self.client, name=name, network=network, labels=labels, what=what)
        try:
            unpacker.unpack(archive)
            created = unpacker.start()
        except BaseException:
            if unpacker.created is not None:
                with suppress(DrsvcError):
                    self.remove(unpacker.created)
            raise
        finally:
            unpacker.cleanup()
        return self.inspect(created)

    # ------------------------------------------------------------------ others
    def remove(self, name: str) -> None:
        """Remove a container by force (SIGKILL, no grace period); a missing container is fine.

        A clone's own volumes (``drsvc.clone=<name>``, made by ``restore``) go with it.
        """
        self.client.remove(name)
        with self.client.errors(f"volumes of clone {name}"):
            owned = (self.api.volumes(filters={"label": f"{LABEL_CLONE_STORAGE}={name}"}) or {}).get("Volumes") or []
        for volume in owned:
            with suppress(NotFound), self.client.errors(f"remove volume {volume['Name']} of clone {name}"):
                self.api.remove_volume(volume["Name"], force=True)

    def isolation(self, name: str) -> Isolation:
        """What the container shares with the host: network, namespaces, where its mounts come from."""
        c = self.client.inspect_raw(name)
        mode = str((c.get("HostConfig") or {}).get("NetworkMode") or "")
        nets = sorted(((c.get("NetworkSettings") or {}).get("Networks") or {}).keys())
        return inspect_isolation(c, _network(mode, nets))

    def exec(self, name: str, argv: Sequence[str], timeout: float = 30.0) -> tuple[int, str]:
        """Run ``argv`` inside the container; return (exit code, stdout+stderr)."""
        from docker.utils.socket import frames_iter

        what = f"exec in {name}"
        with self.client.errors(what):
            exec_id = self.api.exec_create(name, list(argv), stdout=True, stderr=True, tty=False)["Id"]
        with self.client.errors(what, missing="backend"):
            sock = self.api.exec_start(exec_id, tty=False, socket=True)
        try:
            raw = getattr(sock, "_sock", sock)
            if hasattr(raw, "settimeout"):
                raw.settimeout(timeout)
            try:
                output = b"".join(data for _, data in frames_iter(sock, False))
            except TimeoutError as e:
                raise BackendError(f"{what}: {argv[0] if argv else ''} did not finish within {timeout:g} s") from e
            except OSError as e:
                raise BackendError(f"{what}: {e}") from e
        finally:
            sock.close()
        deadline = time.monotonic() + 5
        while True:
            with self.client.errors(what):
                info = self.api.exec_inspect(exec_id)
            if not info.get("Running") or time.monotonic() > deadline:
                return int(info.get("ExitCode") or 0), bytes(output).decode(errors="replace")
            time.sleep(0.02)

    def probe_tcp(self, name: str, port: int, timeout: float = 2.0) -> bool:
        """Whether something accepts TCP connections on 127.0.0.1:``port`` inside the container."""
        pid = int((self.client.inspect_raw(name).get("State") or {}).get("Pid") or 0)
        return probe_tcp_in_netns(pid, port, timeout)

    # ------------------------------------------------------------------ images
    def image_exists(self, image_id: str) -> bool:
        """Whether an image (id or reference) is present locally."""
        return self.client.image_id(image_id) is not None

    @contextmanager
    def save_image(self, image: str) -> Iterator[BinaryIO]:
        """Yield an image (id or reference) as a ``docker save`` tar stream that ``load_image`` accepts."""
        what = f"save image {image}"
        with self.client.errors(what):
            resp = self.api._get(self.api._url("/images/{0}/get", image), stream=True)
            self.api._raise_for_status(resp)
        try:
            yield cast(BinaryIO, IterReader(resp.iter_content(CHUNK)))
        finally:
            resp.close()

    def load_image(self, stream: BinaryIO) -> list[str]:
        """Load an image tar stream made by ``save_image``; return the names/ids it loaded."""
        with self.client.errors("load image", missing="backend"):
            resp = self.api._post(
                self.api._url("/images/load"),
                data=chunks(stream),
                params={"quiet": "1"},
                headers={"Content-Type": "application/x-tar"},
            )
            self.api._raise_for_status(resp)
            text = resp.text
        names: list[str] = []
        for line in text.splitlines():
            try:
                doc = json.loads(line)
            except ValueError:
                continue
            if doc.get("errorDetail") or doc.get("error"):
                raise BackendError(f"load image: {(doc.get('errorDetail') or {}).get('message') or doc.get('error')}")
            msg = str(doc.get("stream") or "").strip()
            for prefix in ("Loaded image: ", "Loaded image ID: "):
                if msg.startswith(prefix):
                    names.append(msg[len(prefix) :])
        if not names:
            raise BackendError(f"load image: Docker loaded nothing ({text.strip()[:300]!r})")
        return names

    def tag_image(self, image: str, repo: str, tag: str) -> None:
        """Add ``repo:tag`` to a local image (tests and drills use throwaway tags)."""
        with self.client.errors(f"tag {image}"):
            self.api.tag(image, repo, tag)

    def untag_image(self, image: str, repo: str, tag: str) -> None:
        """Remove the name ``repo:tag`` (the image stays while it has other names)."""
        with self.client.errors(f"untag {image}"):
            self.api.remove_image(f"{repo}:{tag}", noprune=True)

    def remove_image(self, image: str) -> None:
        """Remove a local image reference; a missing image is fine."""
        try:
            with self.client.errors(f"remove image {image}"):
                self.api.remove_image(image)
        except NotFound:
            pass

    def forget(self, kind: str, target: str) -> str:
        """Remove what a killed job left: a backup's checkpoint directory, or a base image a restore
        loaded ("undone"), unless a container runs from it ("kept")."""
        if kind == "checkpoint-dir":
            remove_backup_checkpoint(self.client.root_dir(), target)  # drsvc-<12 hex> only, no links
            return "undone"
        if kind != "loaded-image":
            raise InvalidInput(f"forget {kind} {target}: docker:// leaves no {kind}")
        target = loaded_image_id(self.url, target)  # an exact image id, never a name or a path
        if self.client.image_id(target) is None:
            return "undone"
        with self.client.errors(f"forget image {target}"):
            items = self.api.containers(all=True)
        if any(image_matches(str(c.get("ImageID") or ""), target) for c in items or []):
            return "kept"
        self.remove_image(target)  # not forced: Docker refuses it (409) if a container appeared meanwhile
        return "undone"

    # ------------------------------------------------------------------ health
    def health(self) -> dict[str, Any]:
        """Docker version, whether experimental (checkpoint) features are on, CRIU, the freeze hook."""
        from drsvc.runtimes.podman import criu_version

        with self.client.errors("docker version"):
            v = cast(dict[str, Any], self.api.version())
        components = {str(c.get("Name")): c for c in v.get("Components") or []}
        runc = components.get("runc") or {}
        experimental = bool(v.get("Experimental"))
        criu = criu_version()  # the socket is local: runc runs this host's criu
        return {
            "runtime": "docker",
            "url": self.url,
            "version": v.get("Version"),
            "api_version": v.get("ApiVersion"),
            "experimental": experimental,
            "oci_runtime": f"runc {runc.get('Version')}" if runc else None,
            "containerd_version": (components.get("containerd") or {}).get("Version"),
            "criu_version": criu,
            "checkpoint_ready": experimental and criu is not None,
            "freeze_hook_installed": freeze.hook_installed(),
            "node": self.client.node_name(),
        }

    def close(self) -> None:
        """Close the SDK's connection pool (idempotent)."""
        self.client.close()

    def __enter__(self) -> DockerRuntime:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _network(mode: str, nets: list[str]) -> str | None:
    if mode in ("host", "none") or mode.startswith("container:"):
        return mode
    return ",".join(nets) or mode or None
