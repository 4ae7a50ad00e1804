"""``podman:///path/to/podman.sock``: Podman through its libpod REST API over a unix socket.

Stdlib only (``http.client`` over ``AF_UNIX``), one short-lived connection per call, so a runtime
object is safe to share between threads (checkpoints of a batch run concurrently).

Facts about the libpod API (podman 4.3.1) this module relies on, measured in the lab:

- ``POST /containers/{name}/checkpoint?export=true&leaveRunning=true`` answers only once CRIU is
  done (podman writes the archive to its own temp file first), then streams it as an uncompressed
  tar with chunked encoding. With the freeze hook waiting in ``post-dump`` the response therefore
  arrives after ``FreezeBatch.release()``; call it from a worker thread per desktop.
- ``POST /containers/import/restore?import=true`` accepts the archive as a chunked request body
  (podman copies the body to a temp file before restoring), so archives of unknown size stream
  straight through: drsvc never spools them.
- Restore has no network option (``keep, tcpEstablished, import, name, ignoreRootFS,
  ignoreVolumes, ignoreStaticIP, ignoreStaticMAC, printStats, fileLocks, publishPorts``). A clone
  restored into another network (``network='none'`` for drills) gets an archive whose
  ``config.dump`` is rewritten on the fly (network mode, attached networks, port mappings) and
  whose ``network.status`` (old IP/MAC) is dropped; every other member passes through unchanged.
- Podman refuses to checkpoint a paused container ("container state improper"): pair memory and
  disk with the CRIU freeze hook (``drsvc.runtimes.freeze``) instead of pause.
"""

from __future__ import annotations

import http.client
import json
import shutil
import socket
import struct
import subprocess
import time
import urllib.parse
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, BinaryIO, cast

from drsvc.errors import BackendError, DrsvcError, InvalidInput, NotFound
from drsvc.runtimes import freeze
from drsvc.runtimes.archive import Editor, checked, rewrite_archive
from drsvc.runtimes.base import (
    LABEL_DESKTOP,
    DesktopRef,
    Isolation,
    desktop_from_labels,
    image_matches,
    inspect_isolation,
    loaded_image_id,
    probe_tcp_in_netns,
    with_criu_log,
)
from drsvc.runtimes.cgroupmem import dumped_memory
from drsvc.runtimes.node import local_node_name
from drsvc.runtimes.podman_clone import CloneRewrite, clone_volume, remove_clone_storage

API_VERSION = "4.3.1"
CHUNK = 1 << 20


def from_url(url: str, **options: Any) -> PodmanRuntime:
    """Open ``podman:///absolute/path/to/podman.sock``."""
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme != "podman" or parsed.netloc or not parsed.path.startswith("/") or parsed.query:
        raise InvalidInput(f"malformed Podman runtime URL {url!r}: expected podman:///absolute/path/to/podman.sock")
    return PodmanRuntime(parsed.path, **options)


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        try:
            s.connect(self._path)
        except BaseException:
            s.close()
            raise
        self.sock = s


def _restored_at(c: dict[str, Any]) -> str | None:
    """State.RestoredAt of an inspect document; Podman reports the zero time when never restored."""
    value = str((c.get("State") or {}).get("RestoredAt") or "")
    return value if value and not value.startswith("0001-") else None


def _iter_chunks(stream: BinaryIO) -> Iterator[bytes]:
    while chunk := stream.read(CHUNK):
        yield chunk


class PodmanRuntime:
    """A Podman host reached through its API socket."""

    def __init__(self, socket_path: str, *, timeout: float = 900.0, api_version: str = API_VERSION) -> None:
        self.socket_path = socket_path
        self.timeout = timeout
        self._prefix = f"/v{api_version}/libpod"
        self._node: str | None = None

    @property
    def url(self) -> str:
        """The URL this runtime was opened from."""
        return f"podman://{self.socket_path}"

    # ------------------------------------------------------------------ HTTP plumbing
    def _open(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        body: Any = None,
        headers: dict[str, str] | None = None,
        chunked: bool = False,
        timeout: float | None = None,
        what: str,
    ) -> tuple[_UnixHTTPConnection, http.client.HTTPResponse]:
        q = ("?" + urllib.parse.urlencode(params)) if params else ""
        conn = _UnixHTTPConnection(self.socket_path, self.timeout if timeout is None else timeout)
        try:
            conn.request(method, self._prefix + path + q, body=body, headers=headers or {}, encode_chunked=chunked)
            return conn, conn.getresponse()
        except (FileNotFoundError, ConnectionRefusedError) as e:
            conn.close()
            raise BackendError(
                f"{what}: the Podman API service is not running at {self.socket_path} ({e.strerror or e}); "
                f"start it with `podman system service --time=0 unix://{self.socket_path}`"
            ) from e
        except TimeoutError as e:
            conn.close()
            raise BackendError(f"{what}: Podman API at {self.socket_path} did not answer in time") from e
        except (OSError, http.client.HTTPException) as e:
            conn.close()
            raise BackendError(f"{what}: Podman API at {self.socket_path}: {e}") from e

    def _call(
        self,
        method: str,
        path: str,
        *,
        what: str,
        params: dict[str, str] | None = None,
        json_body: Any = None,
        ok: tuple[int, ...] = (200, 201, 204),
        missing_ok: bool = False,
        timeout: float | None = None,
    ) -> tuple[int, Any]:
        body = None if json_body is None else json.dumps(json_body).encode()
        headers = {"Content-Type": "application/json"} if body is not None else {}
        conn, resp = self._open(method, path, params=params, body=body, headers=headers, timeout=timeout, what=what)
        try:
            data = resp.read()
        except (OSError, http.client.HTTPException) as e:
            raise BackendError(f"{what}: reading Podman's answer failed: {e}") from e
        finally:
            conn.close()
        if resp.status == 404 and missing_ok:
            return resp.status, None
        if resp.status not in ok:
            _raise_for(resp.status, data, what)
        if not data.strip():
            return resp.status, None
        try:
            return resp.status, json.loads(data)
        except ValueError:
            return resp.status, data

    def _node_name(self) -> str:
        """The host name Podman reports (``/info``): this host's own when Podman provably runs in this
        process's UTS namespace (``drsvc.runtimes.node``, no request), else asked once."""
        if self._node is None:
            self._node = local_node_name(self.socket_path)
        if self._node is None:
            try:
                _, info = self._call("GET", "/info", what="podman info")
                self._node = str(((info or {}).get("host") or {}).get("hostname") or socket.gethostname())
            except DrsvcError:
                return socket.gethostname()
        return self._node

    # ------------------------------------------------------------------ containers
    def list_desktops(self) -> list[DesktopRef]:
        """Every container (any state) labelled ``drsvc.desktop``, in one API call.

        ``network`` lists the attached networks; it is None when the list cannot tell (host or no
        network): ``inspect`` is exact.
        """
        filters = json.dumps({"label": [LABEL_DESKTOP]})
        _, items = self._call(
            "GET", "/containers/json", params={"all": "true", "filters": filters}, what="list containers"
        )
        node = self._node_name()
        out = []
        for c in items or []:
            names = c.get("Names") or [c["Id"][:12]]
            out.append(
                desktop_from_labels(
                    name=names[0],
                    container_id=c["Id"],
                    labels=c.get("Labels"),
                    image=c.get("Image") or "",
                    image_id=c.get("ImageID") or "",
                    state=c.get("State") or "",
                    node=node,
                    network=",".join(c.get("Networks") or []) or None,
                )
            )
        return sorted(out, key=lambda d: (d.desktop_id, d.container))

    def _inspect_raw(self, name: str) -> dict[str, Any]:
        _, data = self._call("GET", f"/containers/{_q(name)}/json", what=f"inspect container {name}")
        return cast(dict[str, Any], data)

    def inspect(self, name: str) -> DesktopRef:
        """One container by name or id; raise ``NotFound`` if it does not exist."""
        return self._ref(self._inspect_raw(name))

    def _ref(self, c: dict[str, Any]) -> DesktopRef:
        mode = str((c.get("HostConfig") or {}).get("NetworkMode") or "")
        nets = sorted(((c.get("NetworkSettings") or {}).get("Networks") or {}).keys())
        network = ",".join(nets) if nets and mode not in ("host", "none") else (mode or None)
        return desktop_from_labels(
            name=str(c.get("Name") or c["Id"][:12]).lstrip("/"),
            container_id=c["Id"],
            labels=(c.get("Config") or {}).get("Labels"),
            image=c.get("ImageName") or (c.get("Config") or {}).get("Image") or "",
            image_id=c.get("Image") or "",
            state=str((c.get("State") or {}).get("Status") or ""),
            node=self._node_name(),
            network=network,
            restored_at=_restored_at(c),
        )

    def rootfs_path(self, name: str) -> str | None:
        """Host path of the container's mounted root filesystem (overlay ``MergedDir``), if mounted."""
        c = self._inspect_raw(name)
        return ((c.get("GraphDriver") or {}).get("Data") or {}).get("MergedDir") or None

    def checkpoint_space(self, name: str) -> tuple[int, str] | None:
        """The container's memory CRIU would dump (bytes) and where Podman writes its checkpoint
        (the container's userdata directory); None when either is unknown (``drsvc.checkpoint_space``)."""
        c = self._inspect_raw(name)
        memory = dumped_memory(int((c.get("State") or {}).get("Pid") or 0))
        path = str(c.get("StaticDir") or "")
        return None if memory is None or not path else (memory, path)

    def pause(self, name: str) -> None:
        """Freeze every process of the container (cgroup freezer); ``NotFound`` if missing."""
        self._call("POST", f"/containers/{_q(name)}/pause", what=f"pause {name}")

    def unpause(self, name: str) -> None:
        """Thaw a paused container; ``NotFound`` if missing."""
        self._call("POST", f"/containers/{_q(name)}/unpause", what=f"unpause {name}")

    @contextmanager
    def checkpoint(self, name: str, *, tcp_established: bool = True) -> Iterator[BinaryIO]:
        """Checkpoint a container, leaving it running; yield the archive as a stream (not buffered whole)."""
        params = {"export": "true", "leaveRunning": "true", "tcpEstablished": _b(tcp_established)}
        conn, resp = self._open("POST", f"/containers/{_q(name)}/checkpoint", params=params, what=f"checkpoint {name}")
        try:
            if resp.status != 200:
                _raise_for(resp.status, resp.read(), f"checkpoint {name}")
            yield cast(BinaryIO, resp)
        finally:
            conn.close()

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

        ``network``: None keeps the checkpointed network; ``'none'`` restores into an empty network
        namespace (loopback only: drill sandboxes); another value names a Podman network to attach.
        ``labels`` are merged into the container's labels (a clone gets its own drsvc.desktop and
        drsvc.volume). A clone (``name`` given) never reuses the original's static IP/MAC.
        """
        what = f"restore {name or 'container'}"
        params = {"import": "true", "tcpEstablished": _b(tcp_established)}
        if name:
            params.update(name=name, ignoreStaticIP="true", ignoreStaticMAC="true")
        headers = {"Content-Type": "application/x-tar"}
        body: Iterator[bytes]
        edits: dict[str, Editor | None] = {}
        if network is not None:
            if network == "host" or not network.strip():
                raise InvalidInput(f"{what}: network must be 'none' or a Podman network name, not {network!r}")
            edits = {"config.dump": _network_editor(network), "network.status": None}
            if name is None:
                params.update(ignoreStaticIP="true", ignoreStaticMAC="true")
        if labels:
            edits["config.dump"] = _chain(edits.get("config.dump"), _labels_editor(labels))
        renames: dict[str, str] = {}
        if name:
            # a clone: its own volumes and bind sources, no host namespaces (podman_clone)
            clone = CloneRewrite(name, renames=renames)
            edits["config.dump"] = _chain(edits.get("config.dump"), clone.config)
            edits["spec.dump"] = clone.spec
        body = rewrite_archive(archive, edits, renames=renames) if edits else _iter_chunks(archive)
        # Podman extracts the archive itself (rootfs diff, deleted files) into the container's
        # root: nothing that could reach past it leaves drsvc (containment rules, exit 4)
        body = checked(body, what=f"{what}: checkpoint archive")
        # podman accepts a chunked body (measured), so an archive of unknown size streams through;
        # Content-Length is sent only when the caller knows it and the bytes pass unchanged.
        chunked = not (size is not None and not edits)
        if not chunked:
            headers["Content-Length"] = str(size)
        conn, resp = self._open(
            "POST",
            "/containers/import/restore",
            params=params,
            body=body,
            headers=headers,
            chunked=chunked,
            what=what,
        )
        try:
            data = resp.read()
        finally:
            conn.close()
        if resp.status != 200:
            _raise_for(resp.status, data, what, missing_is_not_found=False)
        try:
            report = json.loads(data)
        except ValueError as e:
            raise BackendError(f"{what}: unexpected answer from Podman: {data[:500]!r}") from e
        if report.get("Err"):
            raise BackendError(f"{what}: {with_criu_log(str(report['Err']))}")
        restored = report.get("Id") or name or ""
        if network == "none":
            # Podman restores into a fresh network namespace whose loopback is down; a sandbox is
            # "loopback only", so bring it up (health probes and the desktop's own local sockets).
            self._loopback_up(restored)
        return self.inspect(restored)

    def isolation(self, name: str) -> Isolation:
        """What the container shares with the host and other containers: network, namespaces, mounts."""
        c = self._inspect_raw(name)
        return inspect_isolation(c, self._ref(c).network)

    def _loopback_up(self, name: str) -> None:
        pid = int((self._inspect_raw(name).get("State") or {}).get("Pid") or 0)
        if pid > 0:
            subprocess.run(
                ["nsenter", "-t", str(pid), "-n", "ip", "link", "set", "lo", "up"], capture_output=True, timeout=10
            )

    def remove(self, name: str) -> None:
        """Remove a container by force without grace period; a missing container is fine.

        A clone's own storage (volumes and bind sources ``restore`` made for it) goes with it.
        """
        self._call(
            "DELETE",
            f"/containers/{_q(name)}",
            params={"force": "true", "timeout": "0"},  # libpod: `timeout`, not `t`
            missing_ok=True,
            what=f"remove {name}",
        )
        _, volumes = self._call("GET", "/volumes/json", missing_ok=True, what=f"volumes of clone {name}")
        for v in volumes or []:
            if clone_volume(name, str(v.get("Name") or "")):
                self._call(
                    "DELETE",
                    f"/volumes/{_q(v['Name'])}",
                    params={"force": "true"},
                    missing_ok=True,
                    what=f"remove volume {v['Name']} of clone {name}",
                )
        remove_clone_storage(name)

    def exec(self, name: str, argv: Sequence[str], timeout: float = 30.0) -> tuple[int, str]:
        """Run ``argv`` inside the container; return (exit code, stdout+stderr)."""
        what = f"exec in {name}"
        _, created = self._call(
            "POST",
            f"/containers/{_q(name)}/exec",
            json_body={"Cmd": list(argv), "AttachStdout": True, "AttachStderr": True, "Tty": False},
            what=what,
        )
        exec_id = created["Id"]
        conn, resp = self._open(
            "POST",
            f"/exec/{exec_id}/start",
            body=json.dumps({"Detach": False, "Tty": False}).encode(),
            headers={"Content-Type": "application/json"},
            timeout=timeout,
            what=what,
        )
        try:
            if resp.status != 200:
                _raise_for(resp.status, resp.read(), what)
            try:
                output = _demux(resp)
            except TimeoutError as e:
                raise BackendError(f"{what}: {argv[0] if argv else ''} did not finish within {timeout:g} s") from e
        finally:
            conn.close()
        deadline = time.monotonic() + 5
        while True:
            _, info = self._call("GET", f"/exec/{exec_id}/json", what=what)
            if not info.get("Running") or time.monotonic() > deadline:
                return int(info.get("ExitCode") or 0), output.decode(errors="replace")
            time.sleep(0.02)

    # ------------------------------------------------------------------ images
    def probe_tcp(self, name: str, port: int, timeout: float = 2.0) -> bool:
        """Whether something accepts TCP connections on 127.0.0.1:``port`` inside the container."""
        pid = int((self._inspect_raw(name).get("State") or {}).get("Pid") or 0)
        return probe_tcp_in_netns(pid, port, timeout)

    def image_exists(self, image_id: str) -> bool:
        """Whether an image (id or reference) is present locally."""
        status, _ = self._call(
            "GET", f"/images/{_q(image_id)}/exists", missing_ok=True, what=f"image exists {image_id}"
        )
        return status == 204

    @contextmanager
    def save_image(self, image: str) -> Iterator[BinaryIO]:
        """Yield an image (id or reference) as a docker-archive tar stream that ``load_image`` accepts."""
        what = f"save image {image}"
        conn, resp = self._open("GET", f"/images/{_q(image)}/get", params={"format": "docker-archive"}, what=what)
        try:
            if resp.status != 200:
                _raise_for(resp.status, resp.read(), what)
            yield cast(BinaryIO, resp)
        finally:
            conn.close()

    def load_image(self, stream: BinaryIO) -> list[str]:
        """Load an image tar stream made by ``save_image``; return the names/ids it loaded."""
        conn, resp = self._open(
            "POST",
            "/images/load",
            body=_iter_chunks(stream),
            headers={"Content-Type": "application/x-tar"},
            chunked=True,
            what="load image",
        )
        try:
            data = resp.read()
        finally:
            conn.close()
        if resp.status != 200:
            _raise_for(resp.status, data, "load image", missing_is_not_found=False)
        return list(json.loads(data).get("Names") or [])

    def tag_image(self, image: str, repo: str, tag: str) -> None:
        """Add ``repo:tag`` to a local image (tests and drills use throwaway tags)."""
        self._call("POST", f"/images/{_q(image)}/tag", params={"repo": repo, "tag": tag}, what=f"tag {image}")

    def untag_image(self, image: str, repo: str, tag: str) -> None:
        """Remove the name ``repo:tag`` from a local image (the image stays under its other names)."""
        self._call("POST", f"/images/{_q(image)}/untag", params={"repo": repo, "tag": tag}, what=f"untag {image}")

    def remove_image(self, image: str) -> None:
        """Remove a local image reference; a missing image is fine."""
        self._call("DELETE", f"/images/{_q(image)}", missing_ok=True, what=f"remove image {image}")

    def forget(self, kind: str, target: str) -> str:
        """Remove a base image a killed restore loaded ("undone"), unless a container runs from it ("kept")."""
        if kind != "loaded-image":
            raise InvalidInput(f"forget {kind} {target}: podman:// leaves no {kind}")
        target = loaded_image_id(self.url, target)  # an exact image id, never a name or a path
        if not self.image_exists(target):
            return "undone"
        _, items = self._call("GET", "/containers/json", params={"all": "true"}, what=f"forget image {target}")
        if any(image_matches(c.get("ImageID") or "", target) for c in items or []):
            return "kept"
        self.remove_image(target)  # not forced: Podman refuses it (409) if a container appeared meanwhile
        return "undone"

    # ------------------------------------------------------------------ health
    def health(self) -> dict[str, Any]:
        """Runtime version, CRIU version when known, whether the freeze hook is installed."""
        _, v = self._call("GET", "/version", what="podman version")
        components = {c.get("Name"): c.get("Version") for c in (v or {}).get("Components") or []}
        oci = next((str(val) for k, val in components.items() if str(k).startswith("OCI Runtime")), None)
        return {
            "runtime": "podman",
            "url": self.url,
            "version": (v or {}).get("Version"),
            "api_version": ((v or {}).get("Components") or [{}])[0].get("Details", {}).get("APIVersion"),
            "oci_runtime": oci.splitlines()[0] if oci else None,
            # the socket is local, so the CRIU podman will run is the one on this host's PATH
            "criu_version": criu_version(),
            "freeze_hook_installed": freeze.hook_installed(),
            "node": self._node_name(),
        }

    def close(self) -> None:
        """Nothing to release: every call opens and closes its own connection."""

    def __enter__(self) -> PodmanRuntime:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---------------------------------------------------------------------- helpers
def _q(name: str) -> str:
    return urllib.parse.quote(name, safe="")


def _b(flag: bool) -> str:
    return "true" if flag else "false"


def _raise_for(status: int, body: bytes, what: str, *, missing_is_not_found: bool = True) -> None:
    message = body.decode(errors="replace").strip()
    cause = ""
    try:
        doc = json.loads(body)
        message = str(doc.get("message") or message)
        cause = str(doc.get("cause") or "")
    except (ValueError, AttributeError):
        pass
    if missing_is_not_found and (status == 404 or "no such container" in (cause or message)):
        raise NotFound(f"{what}: {message}")
    raise BackendError(f"{what}: {with_criu_log(message) or 'no message'} (HTTP {status})")


def _demux(resp: http.client.HTTPResponse) -> bytes:
    """Undo the attach stream's framing (8-byte header: stream type, 3 zero bytes, big-endian length)."""
    out = bytearray()
    while True:
        head = resp.read(8)
        if len(head) < 8:
            out += head
            return bytes(out)
        kind, length = head[0], struct.unpack(">I", head[4:])[0]
        if kind not in (0, 1, 2) or head[1:4] != b"\0\0\0":  # not framed (tty): raw bytes
            out += head + resp.read()
            return bytes(out)
        out += resp.read(length)


def criu_version() -> str | None:
    """Version of the ``criu`` binary on this host (None when absent)."""
    exe = shutil.which("criu") or next((p for p in ("/usr/local/sbin/criu", "/usr/sbin/criu") if shutil.which(p)), None)
    if not exe:
        return None
    try:
        out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    for line in out.splitlines():
        if line.startswith("Version:"):
            return line.split(":", 1)[1].strip()
    return out.strip() or None


# ---------------------------------------------------------------------- archive rewriting
def _network_editor(network: str) -> Editor:
    def edit(data: bytes) -> bytes:
        cfg = json.loads(data)
        cfg["createNetNS"] = True
        cfg["portMappings"] = None
        if network == "none":
            cfg["networkMode"] = "none"
            cfg.pop("newNetworks", None)
        else:
            cfg["networkMode"] = "bridge"
            cfg["newNetworks"] = {network: {}}
        return json.dumps(cfg).encode()

    return edit


def _labels_editor(labels: dict[str, str]) -> Editor:
    def edit(data: bytes) -> bytes:
        cfg = json.loads(data)
        cfg["labels"] = {**(cfg.get("labels") or {}), **labels}
        return json.dumps(cfg).encode()

    return edit


def _chain(first: Editor | None, second: Editor) -> Editor:
    if first is None:
        return second
    return lambda data: second(first(data))
