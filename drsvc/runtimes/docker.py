"""``docker:///path/to/docker.sock``: Docker Engine (``dockerd --experimental``) through the docker SDK.

The low-level ``docker.APIClient`` does the talking; the experimental checkpoint endpoints have no
SDK helpers and go through its ``_url``/``_post_json``/``_post``/``_delete`` plumbing.

Docker's checkpoints are not drsvc's archive: ``POST /containers/{id}/checkpoints`` leaves a raw
CRIU image directory under ``<DockerRootDir>/containers/<id>/checkpoints/<name>/`` (no archive, no
root filesystem, no config). This adapter therefore works **on the Docker host** (like the Podman
adapter's ``probe_tcp``) and packs the same layout Podman and CRI-O use, streamed member by member:

- ``config.dump``: a small Podman-like summary (id, name, image, labels, network mode, runtime);
- ``docker-config.json``: the container's full inspect document (what a restore re-creates from);
- ``spec.dump``: a minimal OCI-like spec (args, env, cwd, hostname) for tools reading archives;
- ``checkpoint/``: the CRIU images, read straight from Docker's checkpoint directory;
- ``rootfs-diff.tar``: the container's added/changed files (``GET /containers/{id}/changes``,
  content read from the overlay2 upper dir), ``deleted.files``: JSON list of deleted paths.

Restore re-creates the container from ``docker-config.json`` (same name, or a clone under a new name,
with label overrides and ``network``), writes the rootfs diff into it (``PUT /containers/{id}/archive``;
deletions as overlay whiteouts in its upper dir), copies the CRIU images under the new container's
own ``checkpoints/`` directory (dockerd 20.10 refuses a custom checkpoint dir on start) and starts it
with ``?checkpoint=<name>``. The archive is consumed in one pass; nothing is buffered whole.

Facts measured in the lab (Docker 20.10.24, containerd 1.6.20, runc 1.1.5, CRIU 4.2):

- runc under containerd hands CRIU ``/etc/criu/runc.conf``, so drsvc's freeze hook
  (``drsvc.runtimes.freeze``) pairs Docker checkpoints with pool snapshots like Podman's; the
  cgroup path is ``/docker/<id>`` (cgroupfs driver), where the hook finds the id.
- Docker's checkpoint API has no ``tcpEstablished`` switch (moby passes only ``Exit``): a container
  holding established TCP connections can be checkpointed only if ``tcp-established`` is in the
  CRIU config. ``tcp_established`` is accepted for interface parity and otherwise ignored.
- Docker does not record that a container was started from a checkpoint. A restore labels the new
  container ``drsvc.restored-at=<time>``; ``restored_at`` reports it while the container has not
  stopped since (``State.FinishedAt`` still zero). The label is hidden from ``DesktopRef.labels``.
- containerd keeps a checkpoint's blobs until its garbage collector runs (0.3-1.3 s after dockerd
  deletes the checkpoint image). Meanwhile another checkpoint of the same container (same spec
  blob) fails with "content sha256:...: already exists" (moby#42900): the adapter retries with
  backoff. A restore uploads its checkpoint directory the same way; a marker file unique to the
  restore keeps it from equalling containerd's copy of a checkpoint taken within the same second.
- The rootfs diff is read right after CRIU let the container go (as Podman does), so files the
  desktop writes in between appear in it; the files CRIU checks at restore are put back as they
  stood at the dump by ``freeze.checkpoint_batch`` (``heldfiles``); data belongs on the volume.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import stat
import tarfile
import tempfile
import threading
import time
import urllib.parse
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO, cast

from drsvc.errors import BackendError, DrsvcError, InvalidInput, NotFound
from drsvc.optional import require
from drsvc.runtimes import freeze
from drsvc.runtimes.base import LABEL_DESKTOP, DesktopRef, desktop_from_labels, probe_tcp_in_netns, with_criu_log
from drsvc.streams import IterReader

CHUNK = 1 << 20
LABEL_RESTORED_AT = "drsvc.restored-at"
CONFIG_MEMBER = "docker-config.json"
RESTORE_MARKER = "drsvc-restore.id"
_ZERO_TIME = "0001-01-01T00:00:00Z"
# seconds between checkpoint attempts while containerd still holds the previous one (8.75 s in all)
_CONTENT_EXISTS_BACKOFF = (0.25, 0.5, 1.0, 2.0, 5.0)
# HostConfig fields that tie a container to its original identity; a clone drops them
_CLONE_DROP_HOSTCONFIG = ("PortBindings", "ContainerIDFile", "Links")


def from_url(url: str, **options: Any) -> DockerRuntime:
    """Open ``docker:///absolute/path/to/docker.sock``."""
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme != "docker" or parsed.netloc or not parsed.path.startswith("/") or parsed.query:
        raise InvalidInput(f"malformed Docker runtime URL {url!r}: expected docker:///absolute/path/to/docker.sock")
    return DockerRuntime(parsed.path, **options)


class DockerRuntime:
    """A Docker Engine on this host, reached through its API socket (experimental features on)."""

    def __init__(self, socket_path: str, *, timeout: float = 900.0) -> None:
        self.socket_path = socket_path
        self.timeout = timeout
        self._api: Any = None
        self._info: dict[str, Any] | None = None
        self._lock = threading.Lock()  # checkpoints of a batch run in threads

    @property
    def url(self) -> str:
        """The URL this runtime was opened from."""
        return f"docker://{self.socket_path}"

    # ------------------------------------------------------------------ plumbing
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
                        f"the Docker API is not answering at {self.socket_path} ({_cause(e)}); "
                        f"start dockerd with -H unix://{self.socket_path} --experimental"
                    ) from e
            return self._api

    @contextmanager
    def _errors(self, what: str, *, missing: str = "not_found") -> Iterator[None]:
        """Translate SDK/HTTP failures: 404 -> NotFound (unless ``missing='backend'``), others BackendError."""
        import docker
        import requests

        try:
            yield
        except DrsvcError:
            raise
        except docker.errors.NotFound as e:
            if missing == "backend":
                raise BackendError(f"{what}: {_explain(e)}") from e
            raise NotFound(f"{what}: {_explain(e)}") from e
        except docker.errors.APIError as e:
            raise BackendError(f"{what}: {_explain(e)} (HTTP {e.status_code})") from e
        except (requests.exceptions.ConnectionError, FileNotFoundError, ConnectionRefusedError) as e:
            raise BackendError(f"{what}: the Docker API is not answering at {self.socket_path} ({_cause(e)})") from e
        except (requests.exceptions.RequestException, docker.errors.DockerException, OSError) as e:
            raise BackendError(f"{what}: Docker API at {self.socket_path}: {_cause(e)}") from e

    def _root_dir(self) -> Path:
        if self._info is None:
            with self._errors("docker info"):
                self._info = cast(dict[str, Any], self.api.info())
        return Path(str(self._info.get("DockerRootDir") or "/var/lib/docker"))

    def _inspect_raw(self, name: str) -> dict[str, Any]:
        with self._errors(f"inspect container {name}"):
            return cast(dict[str, Any], self.api.inspect_container(name))

    # ------------------------------------------------------------------ containers
    def list_desktops(self) -> list[DesktopRef]:
        """Every container (any state) labelled ``drsvc.desktop``, in one API call."""
        with self._errors("list containers"):
            items = self.api.containers(all=True, filters={"label": [LABEL_DESKTOP]})
        node = self._node_name()
        out = []
        for c in items or []:
            names = [n.lstrip("/") for n in c.get("Names") or []] or [c["Id"][:12]]
            mode = str((c.get("HostConfig") or {}).get("NetworkMode") or "")
            nets = sorted(((c.get("NetworkSettings") or {}).get("Networks") or {}).keys())
            out.append(
                desktop_from_labels(
                    name=names[0],
                    container_id=c["Id"],
                    labels=_visible_labels(c.get("Labels")),
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
        return self._ref(self._inspect_raw(name))

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
            labels=_visible_labels(labels),
            image=config.get("Image") or "",
            image_id=c.get("Image") or "",
            state=str(state.get("Status") or ""),
            node=self._node_name(),
            network=_network(mode, nets),
            restored_at=restored_at,
        )

    def rootfs_path(self, name: str) -> str | None:
        """Host path of the container's mounted root filesystem (overlay2 ``MergedDir``), if any."""
        c = self._inspect_raw(name)
        return ((c.get("GraphDriver") or {}).get("Data") or {}).get("MergedDir") or None

    def pause(self, name: str) -> None:
        """Freeze every process of the container (cgroup freezer); ``NotFound`` if missing."""
        with self._errors(f"pause {name}"):
            self.api.pause(name)

    def unpause(self, name: str) -> None:
        """Thaw a paused container; ``NotFound`` if missing."""
        with self._errors(f"unpause {name}"):
            self.api.unpause(name)

    # ------------------------------------------------------------------ checkpoint
    @contextmanager
    def checkpoint(self, name: str, *, tcp_established: bool = True) -> Iterator[BinaryIO]:
        """Checkpoint a container, leaving it running; yield drsvc's archive as a stream.

        The CRIU images stay in Docker's checkpoint directory while the archive streams and are
        deleted afterwards (also when the consumer fails).
        """
        what = f"checkpoint {name}"
        c = self._inspect_raw(name)  # NotFound before anything else happens
        cid = c["Id"]
        if str((c.get("State") or {}).get("Status")) != "running":
            raise BackendError(f"{what}: container is {(c.get('State') or {}).get('Status')}, not running")
        ckpt = f"drsvc-{uuid.uuid4().hex[:12]}"
        self._create_checkpoint(cid, ckpt, what)
        ckpt_dir = self._root_dir() / "containers" / cid / "checkpoints" / ckpt
        diff_file: Any = None
        try:
            if not ckpt_dir.is_dir():
                raise BackendError(
                    f"{what}: Docker reported success but {ckpt_dir} does not exist "
                    "(the adapter must run on the Docker host)"
                )
            # the rootfs diff is captured right away (closest to the memory instant), spooled to
            # disk beside Docker's data: its size must be known before it enters the archive
            diff_file, deleted = self._rootfs_diff(c)
            members = _archive_members(c, ckpt_dir, diff_file, deleted)
            yield cast(BinaryIO, IterReader(_tar_stream(members)))
        finally:
            if diff_file is not None:
                diff_file.close()
            self._delete_checkpoint(cid, ckpt, ckpt_dir)

    def _create_checkpoint(self, cid: str, ckpt: str, what: str) -> None:
        """``POST /containers/{id}/checkpoints``, waiting out containerd's copy of the previous one.

        containerd keeps a checkpoint's blobs (among them the container's spec, the same every
        time) until its garbage collector runs, shortly after dockerd deletes the checkpoint image;
        a checkpoint of the same container taken meanwhile fails with "content sha256:...: already
        exists" (moby#42900). Measured in the lab: back-to-back checkpoints clear within 0.3-1.3 s.
        """
        url = self.api._url("/containers/{0}/checkpoints", cid)
        for delay in (*_CONTENT_EXISTS_BACKOFF, None):
            with self._errors(what, missing="backend"):
                resp = self.api._post_json(url, data={"CheckpointID": ckpt, "Exit": False})
                if delay is not None and _content_exists(resp):
                    resp.close()
                    time.sleep(delay)
                    continue
                self.api._raise_for_status(resp)
                return

    def _delete_checkpoint(self, cid: str, ckpt: str, ckpt_dir: Path) -> None:
        try:
            resp = self.api._delete(self.api._url("/containers/{0}/checkpoints/{1}", cid, ckpt))
            resp.close()
        except Exception:
            pass  # best effort: the directory goes below anyway
        shutil.rmtree(ckpt_dir, ignore_errors=True)

    def _rootfs_diff(self, c: dict[str, Any]) -> tuple[Any, list[str]]:
        """(spooled tar of added/changed entries, deleted paths) of a container's writable layer."""
        cid = c["Id"]
        with self._errors(f"changes of {cid[:12]}"):
            changes = self.api.diff(cid) or []
        upper = _upper_dir(c)
        tmp_root = self._root_dir() / "tmp"
        # handed to the caller, which closes it once the archive has streamed
        spool = tempfile.TemporaryFile(dir=tmp_root if tmp_root.is_dir() else None)  # noqa: SIM115
        deleted: list[str] = []
        try:
            with tarfile.open(fileobj=spool, mode="w", format=tarfile.PAX_FORMAT) as tf:
                for ch in sorted(changes, key=lambda x: x["Path"]):
                    path = str(ch["Path"])
                    if int(ch.get("Kind", 0)) == 2:
                        deleted.append(path)
                        continue
                    src = upper / path.lstrip("/")
                    try:
                        info = tf.gettarinfo(str(src), arcname=path.lstrip("/"))
                    except FileNotFoundError:
                        continue  # gone again since Docker listed it
                    if info.isfile():
                        with src.open("rb") as f:
                            # a file still being written: take what is there now, exactly info.size
                            tf.addfile(info, _Exact(f, info.size))
                    elif info.isdir() or info.issym() or info.islnk() or info.ischr() or info.isblk():
                        if info.ischr() and info.devmajor == 0 and info.devminor == 0:
                            continue  # an overlay whiteout, listed by Docker as a deletion
                        tf.addfile(info)
            spool.seek(0)
        except OSError as e:
            spool.close()
            raise BackendError(f"reading the root filesystem changes of {cid[:12]} from {upper}: {e}") from e
        except BaseException:
            spool.close()
            raise
        return spool, deleted

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
        created: str | None = None
        ckpt = f"drsvc-{uuid.uuid4().hex[:12]}"
        ckpt_dir: Path | None = None
        try:
            saved: dict[str, Any] | None = None
            n_images = 0
            try:
                tf = tarfile.open(fileobj=archive, mode="r|")  # noqa: SIM115 - closed below, one pass
            except tarfile.TarError as e:
                raise BackendError(f"{what}: the checkpoint archive is not a tar stream: {e}") from e
            try:
                for member in tf:
                    mname = member.name.removeprefix("./")
                    if mname == CONFIG_MEMBER:
                        saved = json.load(_must(tf.extractfile(member), mname))
                        created = self._create_from(saved, name=name, network=network, labels=labels, what=what)
                        ckpt_dir = self._root_dir() / "containers" / created / "checkpoints" / ckpt
                        ckpt_dir.mkdir(parents=True)
                        # dockerd uploads this directory to containerd by digest; a restore within the
                        # second of its checkpoint would equal containerd's own copy, still awaiting
                        # garbage collection ("content sha256:...: already exists"). A unique file
                        # makes every upload distinct; CRIU reads only the images it knows.
                        (ckpt_dir / RESTORE_MARKER).write_text(ckpt + "\n")
                    elif mname.startswith("checkpoint/") or mname == "checkpoint":
                        if ckpt_dir is None:
                            raise BackendError(f"{what}: not a Docker checkpoint archive (no {CONFIG_MEMBER} first)")
                        n_images += self._write_image_member(tf, member, ckpt_dir, mname)
                    elif mname == "rootfs-diff.tar" and member.isfile():
                        if created is None:
                            raise BackendError(f"{what}: not a Docker checkpoint archive (no {CONFIG_MEMBER} first)")
                        reader = _must(tf.extractfile(member), mname)
                        with self._errors(f"{what}: writing the root filesystem changes", missing="backend"):
                            ok = self.api.put_archive(created, "/", _chunks(reader))
                        if not ok:
                            raise BackendError(f"{what}: Docker refused the root filesystem changes")
                    elif mname == "deleted.files" and member.isfile():
                        if created is None:
                            raise BackendError(f"{what}: not a Docker checkpoint archive (no {CONFIG_MEMBER} first)")
                        gone = json.load(_must(tf.extractfile(member), mname)) or []
                        if gone:
                            self._apply_deletions(created, gone, what)
            except (tarfile.TarError, ValueError, EOFError) as e:
                raise BackendError(f"{what}: broken checkpoint archive: {e}") from e
            finally:
                tf.close()
            if created is None or saved is None or ckpt_dir is None:
                raise BackendError(f"{what}: not a Docker checkpoint archive (no {CONFIG_MEMBER})")
            if not n_images:
                raise BackendError(f"{what}: the archive holds no CRIU images (checkpoint/)")
            with self._errors(f"{what}: start from checkpoint", missing="backend"):
                resp = self.api._post(self.api._url("/containers/{0}/start", created), params={"checkpoint": ckpt})
                self.api._raise_for_status(resp)
        except BaseException:
            if created is not None:
                self._remove_quietly(created)
            raise
        finally:
            if created is not None and ckpt_dir is not None:
                self._delete_checkpoint(created, ckpt, ckpt_dir)
        return self.inspect(created)

    def _create_from(
        self,
        saved: dict[str, Any],
        *,
        name: str | None,
        network: str | None,
        labels: dict[str, str] | None,
        what: str,
    ) -> str:
        """Create (not start) a container like the checkpointed one; return its id."""
        config = dict(saved.get("Config") or {})
        host = dict(saved.get("HostConfig") or {})
        target = name or str(saved.get("Name") or "").lstrip("/")
        if not target:
            raise BackendError(f"{what}: the archive names no container and no name was given")
        image_id = str(saved.get("Image") or "")
        image = str(config.get("Image") or image_id)
        if image_id and not self.image_exists(image):
            image = image_id
        elif image_id and self._image_id(image) != image_id:
            image = image_id  # the name moved on to another image: use exactly the checkpointed one
        config["Image"] = image
        config["Labels"] = {
            **{k: v for k, v in (config.get("Labels") or {}).items() if k != LABEL_RESTORED_AT},
            **(labels or {}),
            LABEL_RESTORED_AT: datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z"),
        }
        clone = name is not None and name != str(saved.get("Name") or "").lstrip("/")
        networking: dict[str, Any] | None = None
        if clone or network is not None:
            config.pop("MacAddress", None)
            for key in _CLONE_DROP_HOSTCONFIG:
                host.pop(key, None)
        if network is not None:
            host["NetworkMode"] = network
        elif not clone:
            # same desktop again: keep addresses that were pinned on user-defined networks
            endpoints = {
                net: {k: v for k, v in ep.items() if k in ("IPAMConfig", "Aliases") and v}
                for net, ep in ((saved.get("NetworkSettings") or {}).get("Networks") or {}).items()
                if net not in ("bridge", "host", "none") and (ep or {}).get("IPAMConfig")
            }
            if endpoints:
                networking = {"EndpointsConfig": endpoints}
        body = {**config, "HostConfig": host}
        if networking:
            body["NetworkingConfig"] = networking
        with self._errors(f"{what}: create container {target}", missing="backend"):
            resp = self.api._post_json(self.api._url("/containers/create"), data=body, params={"name": target})
            created = self.api._result(resp, json=True)
        return str(created["Id"])

    @staticmethod
    def _write_image_member(tf: tarfile.TarFile, member: tarfile.TarInfo, ckpt_dir: Path, mname: str) -> int:
        rel = mname.removeprefix("checkpoint").lstrip("/")
        if not rel:
            return 0
        dest = (ckpt_dir / rel).resolve()
        if ckpt_dir.resolve() not in dest.parents:
            raise BackendError(f"checkpoint archive member escapes its directory: {member.name}")
        if member.isdir():
            dest.mkdir(parents=True, exist_ok=True)
            return 0
        if not member.isfile():
            return 0  # CRIU writes regular files only
        dest.parent.mkdir(parents=True, exist_ok=True)
        src = _must(tf.extractfile(member), mname)
        with dest.open("wb") as out:
            shutil.copyfileobj(src, out, CHUNK)
        os.chmod(dest, member.mode & 0o777 or 0o600)
        return 1

    def _apply_deletions(self, cid: str, paths: Iterable[str], what: str) -> None:
        """Delete files of the image in a created container: overlay whiteouts in its upper dir."""
        c = self._inspect_raw(cid)
        upper = _upper_dir(c)
        for path in paths:
            rel = str(path).lstrip("/")
            if not rel:
                continue
            dest = upper / rel
            try:
                if dest.is_dir() and not dest.is_symlink():
                    shutil.rmtree(dest)
                elif dest.exists() or dest.is_symlink():
                    dest.unlink()
                dest.parent.mkdir(parents=True, exist_ok=True)
                os.mknod(dest, stat.S_IFCHR | 0o000, os.makedev(0, 0))
            except OSError as e:
                raise BackendError(f"{what}: cannot delete {path} in the restored root filesystem: {e}") from e

    def _remove_quietly(self, cid: str) -> None:
        with suppress(DrsvcError):
            self.remove(cid)

    # ------------------------------------------------------------------ others
    def remove(self, name: str) -> None:
        """Remove a container by force (SIGKILL, no grace period); a missing container is fine."""
        try:
            with self._errors(f"remove {name}"):
                self.api.remove_container(name, force=True)
        except NotFound:
            pass

    def exec(self, name: str, argv: Sequence[str], timeout: float = 30.0) -> tuple[int, str]:
        """Run ``argv`` inside the container; return (exit code, stdout+stderr)."""
        from docker.utils.socket import frames_iter

        what = f"exec in {name}"
        with self._errors(what):
            exec_id = self.api.exec_create(name, list(argv), stdout=True, stderr=True, tty=False)["Id"]
        with self._errors(what, missing="backend"):
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
            with self._errors(what):
                info = self.api.exec_inspect(exec_id)
            if not info.get("Running") or time.monotonic() > deadline:
                return int(info.get("ExitCode") or 0), bytes(output).decode(errors="replace")
            time.sleep(0.02)

    def probe_tcp(self, name: str, port: int, timeout: float = 2.0) -> bool:
        """Whether something accepts TCP connections on 127.0.0.1:``port`` inside the container."""
        pid = int((self._inspect_raw(name).get("State") or {}).get("Pid") or 0)
        return probe_tcp_in_netns(pid, port, timeout)

    # ------------------------------------------------------------------ images
    def image_exists(self, image_id: str) -> bool:
        """Whether an image (id or reference) is present locally."""
        return self._image_id(image_id) is not None

    def _image_id(self, image: str) -> str | None:
        try:
            with self._errors(f"inspect image {image}"):
                return str(self.api.inspect_image(image)["Id"])
        except NotFound:
            return None

    @contextmanager
    def save_image(self, image: str) -> Iterator[BinaryIO]:
        """Yield an image (id or reference) as a ``docker save`` tar stream that ``load_image`` accepts."""
        what = f"save image {image}"
        with self._errors(what):
            resp = self.api._get(self.api._url("/images/{0}/get", image), stream=True)
            self.api._raise_for_status(resp)
        try:
            yield cast(BinaryIO, IterReader(resp.iter_content(CHUNK)))
        finally:
            resp.close()

    def load_image(self, stream: BinaryIO) -> list[str]:
        """Load an image tar stream made by ``save_image``; return the names/ids it loaded."""
        with self._errors("load image", missing="backend"):
            resp = self.api._post(
                self.api._url("/images/load"),
                data=_chunks(stream),
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
        with self._errors(f"tag {image}"):
            self.api.tag(image, repo, tag)

    def untag_image(self, image: str, repo: str, tag: str) -> None:
        """Remove the name ``repo:tag`` (the image stays while it has other names)."""
        with self._errors(f"untag {image}"):
            self.api.remove_image(f"{repo}:{tag}", noprune=True)

    def remove_image(self, image: str) -> None:
        """Remove a local image reference; a missing image is fine."""
        try:
            with self._errors(f"remove image {image}"):
                self.api.remove_image(image)
        except NotFound:
            pass

    # ------------------------------------------------------------------ health
    def _node_name(self) -> str:
        if self._info is None:
            try:
                self._root_dir()
            except DrsvcError:
                return socket.gethostname()
        return str((self._info or {}).get("Name") or socket.gethostname())

    def health(self) -> dict[str, Any]:
        """Docker version, whether experimental (checkpoint) features are on, CRIU, the freeze hook."""
        from drsvc.runtimes.podman import criu_version

        with self._errors("docker version"):
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
            "node": self._node_name(),
        }

    def close(self) -> None:
        """Close the SDK's connection pool (idempotent)."""
        with self._lock:
            api, self._api = self._api, None
        if api is not None:
            api.close()

    def __enter__(self) -> DockerRuntime:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---------------------------------------------------------------------- helpers
def _network(mode: str, nets: list[str]) -> str | None:
    if mode in ("host", "none") or mode.startswith("container:"):
        return mode
    return ",".join(nets) or mode or None


def _visible_labels(labels: dict[str, str] | None) -> dict[str, str]:
    return {k: v for k, v in (labels or {}).items() if k != LABEL_RESTORED_AT}


def _upper_dir(c: dict[str, Any]) -> Path:
    driver = c.get("GraphDriver") or {}
    upper = (driver.get("Data") or {}).get("UpperDir")
    if not upper:
        raise BackendError(
            f"container {c['Id'][:12]}: graph driver {driver.get('Name')!r} has no upper dir; "
            "drsvc's Docker adapter needs overlay2 for root filesystem changes"
        )
    return Path(upper)


def _content_exists(resp: Any) -> bool:
    """Whether dockerd answered that containerd already holds a blob it meant to write."""
    return bool(resp.status_code == 500 and "content sha256:" in resp.text and "already exists" in resp.text)


def _explain(e: Any) -> str:
    return with_criu_log(str(getattr(e, "explanation", None) or e).strip())


def _cause(e: BaseException) -> str:
    text = str(e)
    return text[:300] if text else type(e).__name__


def _must(f: Any, name: str) -> Any:
    if f is None:
        raise BackendError(f"checkpoint archive member {name} is not a regular file")
    return f


def _chunks(stream: Any) -> Iterator[bytes]:
    while chunk := stream.read(CHUNK):
        yield chunk


class _Exact(io.RawIOBase):
    """Exactly ``size`` bytes of a file that may be changing: truncated, or zero-padded if it shrank."""

    def __init__(self, f: BinaryIO, size: int) -> None:
        self._f, self._left = f, size

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        if self._left <= 0:
            return b""
        n = self._left if n is None or n < 0 else min(n, self._left)
        data = self._f.read(n) or b"\0" * n
        self._left -= len(data)
        return data


Member = tuple[tarfile.TarInfo, "Path | bytes | BinaryIO | None"]


def _json_member(name: str, doc: Any) -> Member:
    data = json.dumps(doc, indent=1).encode()
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), 0o600, int(time.time())
    return info, data


def _archive_members(c: dict[str, Any], ckpt_dir: Path, diff: Any, deleted: list[str]) -> Iterator[Member]:
    """The archive's members in the order restore needs them (config first, diff after the images)."""
    config = c.get("Config") or {}
    host = c.get("HostConfig") or {}
    labels = _visible_labels(config.get("Labels"))
    yield _json_member(
        "config.dump",
        {
            "id": c["Id"],
            "name": str(c.get("Name") or "").lstrip("/"),
            "rootfsImageName": config.get("Image"),
            "rootfsImageID": str(c.get("Image") or "").removeprefix("sha256:"),
            "createdTime": c.get("Created"),
            "labels": labels,
            "networkMode": host.get("NetworkMode"),
            "runtime": "docker",
            "checkpointedTime": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        },
    )
    saved = dict(c)
    saved["Config"] = {**config, "Labels": labels}
    yield _json_member(CONFIG_MEMBER, saved)
    yield _json_member(
        "spec.dump",
        {
            "ociVersion": "1.0.2",
            "process": {
                "args": list(config.get("Entrypoint") or []) + list(config.get("Cmd") or []),
                "env": list(config.get("Env") or []),
                "cwd": config.get("WorkingDir") or "/",
                "terminal": bool(config.get("Tty")),
            },
            "hostname": config.get("Hostname"),
            "annotations": labels,
        },
    )
    d = tarfile.TarInfo("checkpoint")
    d.type, d.mode, d.mtime = tarfile.DIRTYPE, 0o700, int(time.time())
    yield d, None
    for path in sorted(ckpt_dir.rglob("*")):
        st = path.lstat()
        info = tarfile.TarInfo("checkpoint/" + path.relative_to(ckpt_dir).as_posix())
        info.mode, info.mtime = st.st_mode & 0o777, int(st.st_mtime)
        if stat.S_ISDIR(st.st_mode):
            info.type = tarfile.DIRTYPE
            yield info, None
        elif stat.S_ISREG(st.st_mode):
            info.size = st.st_size
            yield info, path
    diff.seek(0, os.SEEK_END)
    info = tarfile.TarInfo("rootfs-diff.tar")
    info.size, info.mode, info.mtime = diff.tell(), 0o600, int(time.time())
    diff.seek(0)
    yield info, diff
    yield _json_member("deleted.files", deleted)


def _tar_stream(members: Iterable[Member]) -> Iterator[bytes]:
    """A tar archive produced member by member (headers, then file data in 1 MiB pieces)."""
    for info, source in members:
        yield info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
        if source is None or not info.isfile():
            continue
        left = info.size
        if isinstance(source, bytes):
            yield source
            left = 0
        else:
            f = source.open("rb") if isinstance(source, Path) else source
            try:
                while left > 0:
                    block = f.read(min(CHUNK, left))
                    if not block:
                        raise BackendError(f"{info.name} shrank while it was being archived")
                    left -= len(block)
                    yield block
            finally:
                if isinstance(source, Path):
                    f.close()
        if info.size % 512:
            yield b"\0" * (512 - info.size % 512)
    yield b"\0" * 1024
