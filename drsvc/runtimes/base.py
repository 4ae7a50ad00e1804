"""The container runtime interface every runtime adapter implements.

A runtime adapter knows containers, checkpoints and images, nothing of the catalog or policies.
Desktops are containers carrying the label ``drsvc.desktop=<id>`` (plus ``drsvc.volume`` and
``drsvc.tenant``); ``list_desktops`` turns them into ``DesktopRef`` values.

Checkpoints travel as one **archive stream** in the Podman/CRI-O layout (``config.dump``,
``spec.dump``, ``checkpoint/`` CRIU images, ``rootfs-diff.tar`` …), whatever the runtime does
underneath: Podman streams it from its API, CRI-O (kubelet checkpoint API) writes it to a path on
the node and the adapter streams that file, Docker writes a raw CRIU directory the adapter packs
into the same layout. Restores take that stream back. The desktop keeps running across a
checkpoint; pairing memory with a volume snapshot uses the CRIU freeze hook (``freeze.py``).
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Protocol, cast, runtime_checkable

LABEL_DESKTOP = "drsvc.desktop"
LABEL_VOLUME = "drsvc.volume"
LABEL_TENANT = "drsvc.tenant"
LABEL_CLONE_OF = "drsvc.clone-of"  # set on clones restored beside their desktop (restore --as, drills)
LABEL_RESTORE = "drsvc.restore"  # on a clone: the writer mark of the restore that made it (what cleanup removes)

LABEL_CLONE_STORAGE = "drsvc.clone"  # on storage a runtime made for a clone (its volumes): removed with it

_FULL_ID = re.compile(r"^[0-9a-f]{64}$")


def is_full_id(value: str) -> bool:
    """Whether ``value`` is a full 64-hex-digit container/image id."""
    return bool(_FULL_ID.match(value or ""))


_CRIU_LOG = re.compile(r"log file: (/\S+?\.log)\b")


def with_criu_log(message: str, *, lines: int = 4) -> str:
    """``message`` and, when it names a CRIU log on this host, that log's last error lines.

    A runtime reports a failed CRIU run as e.g. ``criu failed: type NOTIFY errno 0 log file:
    PATH``: the type is only the last message exchanged, the reason is in the log, and the
    runtime deletes the log with the failed container or task. Read while it exists (a local
    runtime), the error an operator sees says why; otherwise ``message`` is returned unchanged.
    """
    match = _CRIU_LOG.search(message)
    if match is None:
        return message
    try:
        with open(match.group(1), "rb") as f:
            f.seek(max(0, os.fstat(f.fileno()).st_size - 256 * 1024))  # the end says why; logs can be long
            tail = [line.strip() for line in f.read().decode(errors="replace").splitlines() if line.strip()]
    except OSError:
        return message
    errors = [line for line in tail if "Error (" in line]
    # CRIU logs the reason, then "Restoring FAILED." / "Dumping FAILED.", then its teardown's own
    # errors (e.g. "cg: cgroupd: recv req error"): those say nothing of why and would push the
    # reason out of the last lines
    failed = [i for i, line in enumerate(errors) if "FAILED." in line]
    if failed:
        errors = errors[: failed[-1] + 1]
    picked = (errors or tail)[-lines:]
    if not picked:
        return message
    return f"{message} [CRIU log: {' | '.join(line[:300] for line in picked)}]"


@dataclass(frozen=True)
class DesktopRef:
    """One desktop container as its runtime sees it."""

    desktop_id: str  # label drsvc.desktop (falls back to the container name when unlabelled)
    container: str  # runtime name of the container
    container_id: str  # full id
    volume: str | None  # label drsvc.volume, e.g. rados://desktops/alice
    tenant: str | None  # label drsvc.tenant
    labels: dict[str, str] = field(default_factory=dict, hash=False, compare=False)
    image: str = ""  # image reference the container was created from
    image_id: str = ""  # full image id (what a restore needs present locally)
    state: str = ""  # 'running' | 'paused' | 'exited' | 'created' | ...
    node: str | None = None  # host/node the container runs on
    network: str | None = None  # 'host' | 'none' | network name(s), comma-separated
    restored_at: str | None = None  # when the running container was restored from a checkpoint

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (labels as a plain dict)."""
        return {
            "desktop_id": self.desktop_id,
            "container": self.container,
            "container_id": self.container_id,
            "volume": self.volume,
            "tenant": self.tenant,
            "labels": dict(self.labels),
            "image": self.image,
            "image_id": self.image_id,
            "state": self.state,
            "node": self.node,
            "network": self.network,
            "restored_at": self.restored_at,
        }


@dataclass(frozen=True)
class Isolation:
    """What a container can reach beyond itself, as its runtime reports it (drills assert it for clones).

    ``network``: the network mode ('none', 'host', a network name); ``interfaces``: the network
    interfaces up in its network namespace other than loopback, None when drsvc cannot look in
    (a remote runtime); ``host_namespaces``: the namespaces it shares with the host ('network',
    'pid', 'ipc'); ``sources``: where its volumes and bind mounts come from on the host (or the
    PVCs and host paths of a pod), the runtime's own files (hosts, resolv.conf, secrets) left out.
    """

    network: str | None
    interfaces: list[str] | None
    host_namespaces: list[str]
    sources: list[str]

    def document(self) -> dict[str, Any]:
        return {
            "network": self.network,
            "interfaces": self.interfaces,
            "host_namespaces": list(self.host_namespaces),
            "sources": list(self.sources),
        }


def inspect_isolation(inspect: dict[str, Any], network: str | None) -> Isolation:
    """``Isolation`` from a Docker-compatible inspect document (Docker's and Podman's API alike);
    ``network`` is the mode as the adapter names it."""
    host = inspect.get("HostConfig") or {}
    shared = [
        ns
        for ns, key in (("network", "NetworkMode"), ("pid", "PidMode"), ("ipc", "IpcMode"))
        if str(host.get(key) or "") == "host"
    ]
    sources = sorted(
        str(m.get("Name") or m.get("Source") or "")
        for m in inspect.get("Mounts") or []
        if m.get("Type") in ("bind", "volume")
    )
    pid = int((inspect.get("State") or {}).get("Pid") or 0)
    return Isolation(network, netns_interfaces(pid), shared, sources)


def netns_interfaces(pid: int) -> list[str] | None:
    """The network interfaces other than loopback in the network namespace of host process ``pid``."""
    if pid <= 0:
        return None
    try:
        out = subprocess.run(
            ["nsenter", "-t", str(pid), "-n", "ip", "-o", "link", "show"], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    up = []
    for line in out.stdout.splitlines():
        parts = line.split(":", 2)
        if len(parts) < 3:
            continue
        name, flags = parts[1].strip().split("@")[0], parts[2].split(">", 1)[0]
        # a new namespace may also hold the kernel's fallback tunnels (tunl0, sit0 ...), down and
        # unusable: only interfaces brought up can carry traffic
        if name != "lo" and "UP" in flags.lstrip(" <").split(","):
            up.append(name)
    return sorted(up)


@runtime_checkable
class ContainerRuntime(Protocol):
    """Checkpoint, restore and inspect desktop containers on one runtime endpoint."""

    @property
    def url(self) -> str:
        """The URL this runtime was opened from (no credentials)."""
        ...

    def list_desktops(self) -> list[DesktopRef]:
        """Every container (any state) labelled ``drsvc.desktop``."""
        ...

    def inspect(self, name: str) -> DesktopRef:
        """One container by name or id; raise ``NotFound`` if it does not exist."""
        ...

    def pause(self, name: str) -> None:
        """Freeze every process of the container (cgroup freezer); ``NotFound`` if missing."""
        ...

    def unpause(self, name: str) -> None:
        """Thaw a paused container; ``NotFound`` if missing."""
        ...

    def checkpoint(self, name: str, *, tcp_established: bool = True) -> AbstractContextManager[BinaryIO]:
        """Checkpoint a container, leaving it running; yield the archive as a stream (not buffered whole)."""
        ...

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
        """Start a container from an archive stream: under its old name (name=None) or as clone ``name``."""
        ...

    def remove(self, name: str) -> None:
        """Remove a container by force without grace period; a missing container is fine."""
        ...

    def exec(self, name: str, argv: Sequence[str], timeout: float = 30.0) -> tuple[int, str]:
        """Run ``argv`` inside the container; return (exit code, stdout+stderr)."""
        ...

    def probe_tcp(self, name: str, port: int, timeout: float = 2.0) -> bool:
        """Whether something accepts TCP connections on ``port`` inside the container's network."""
        ...

    def image_exists(self, image_id: str) -> bool:
        """Whether an image (id or reference) is present locally."""
        ...

    def save_image(self, image: str) -> AbstractContextManager[BinaryIO]:
        """Yield an image (id or reference) as a tar stream that ``load_image`` accepts."""
        ...

    def load_image(self, stream: BinaryIO) -> list[str]:
        """Load an image tar stream made by ``save_image``; return the names/ids it loaded."""
        ...

    def health(self) -> dict[str, Any]:
        """Runtime version, CRIU version when known, whether the freeze hook is installed."""
        ...

    def close(self) -> None:
        """Release connections (idempotent)."""
        ...


# Optional members of a runtime (none of them is part of ``ContainerRuntime``: a runtime whose
# restore leaves nothing behind needs neither). A restore names what it would leave with a token,
# records it (``drsvc.intents``) and only then calls ``restore(..., token=token)``; whoever finds
# the record of a killed restore asks the runtime to ``forget`` it.
#
#   restore_artifact(token) -> (kind, target) | None
#       what ``restore(..., token=token)`` leaves outside drsvc while it runs (an intent kind of
#       ``drsvc.intents.ARTIFACT_KINDS`` and the artifact's exact name), None for nothing;
#   forget(kind, target) -> "undone" | "kept"
#       remove that artifact (idempotent: gone already is "undone"); "kept" when it is in use
#       (a loaded image a container runs from); ``DrsvcError`` when it cannot (it stays recorded).


# A backup's checkpoint may leave something too (Docker's checkpoint directory, the desktop's memory
# image): ``checkpoint_artifact(token) -> (kind, target)`` names it, the backup records it and then
# calls ``checkpoint(name, token=token)``; ``forget`` removes it after a kill.


def checkpoint_artifact(runtime: object, token: str) -> tuple[str, str] | None:
    """What ``runtime.checkpoint(..., token=token)`` leaves behind while it runs; None: nothing."""
    fn = getattr(runtime, "checkpoint_artifact", None)
    return None if fn is None else cast("tuple[str, str] | None", fn(token))


def restore_artifact(runtime: object, token: str) -> tuple[str, str] | None:
    """What ``runtime.restore(..., token=token)`` would leave behind while it runs; None: nothing."""
    fn = getattr(runtime, "restore_artifact", None)
    return None if fn is None else cast("tuple[str, str] | None", fn(token))


def image_matches(image_id: str, target: str) -> bool:
    """Whether a container's image id names the image ``target`` (full or short id, with or without ``sha256:``)."""
    have, want = image_id.removeprefix("sha256:"), target.removeprefix("sha256:")
    return bool(have and want) and have.startswith(want)


def loaded_image_id(runtime_url: str, target: str) -> str:
    """The full image id a ``loaded-image`` intent names (``sha256:`` + 64 hex digits, or the 64 alone).

    The target comes from a point's manifest (a store is hostile) or the catalog: anything else
    (a reference like ``repo:tag`` that other desktops' images share, a short prefix, another
    desktop's or container's name, a path such as ``../containers/NAME`` that an HTTP API would
    resolve elsewhere) is refused with ``InvalidInput`` before the runtime is asked anything.
    """
    from drsvc.errors import InvalidInput

    if not is_full_id(target.removeprefix("sha256:")):
        raise InvalidInput(
            f"forget loaded-image {target[:120]!r} on {runtime_url}: not a full image id (sha256:<64 hex>); refused"
        )
    return target


def forget(runtime: object, kind: str, target: str) -> str:
    """Remove an artifact a restore left (see above); a runtime without ``forget`` has nothing to forget."""
    fn = getattr(runtime, "forget", None)
    return "undone" if fn is None else str(fn(kind, target))


def desktop_from_labels(
    *,
    name: str,
    container_id: str,
    labels: Mapping[str, str] | None,
    image: str = "",
    image_id: str = "",
    state: str = "",
    node: str | None = None,
    network: str | None = None,
    restored_at: str | None = None,
) -> DesktopRef:
    """Build a ``DesktopRef`` from a container's labels (shared by every adapter)."""
    labels = dict(labels or {})
    return DesktopRef(
        desktop_id=labels.get(LABEL_DESKTOP) or name,
        container=name,
        container_id=container_id,
        volume=labels.get(LABEL_VOLUME) or None,
        tenant=labels.get(LABEL_TENANT) or None,
        labels=labels,
        image=image,
        image_id=image_id,
        state=state,
        node=node,
        network=network,
        restored_at=restored_at,
    )


def probe_tcp_in_netns(pid: int, port: int, timeout: float = 2.0) -> bool:
    """Whether something accepts TCP connections on 127.0.0.1:``port`` in the network namespace of
    host process ``pid``: connects from the host with ``nsenter``, so it works for clones without
    any network and needs no tool inside the desktop's image (local runtimes share it)."""
    if pid <= 0:
        return False
    cmd = ["nsenter", "-t", str(pid), "-n", "bash", "-c", f"exec 3<>/dev/tcp/127.0.0.1/{int(port)}"]
    try:
        return subprocess.run(cmd, capture_output=True, timeout=timeout).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False
