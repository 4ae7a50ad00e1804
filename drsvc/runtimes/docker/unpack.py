"""drsvc's archive back into a Docker container, in one pass over the stream.

``Unpacker`` reads the archive member by member: ``docker-config.json`` creates the container
(``container_body``: like the checkpointed one, or a clone), ``checkpoint/`` fills a checkpoint
directory under the new container (dockerd 20.10 refuses a custom checkpoint dir on start),
``rootfs-diff.tar`` goes in through ``PUT /containers/{id}/archive``, ``deleted.files`` become
overlay whiteouts in its upper dir. ``start`` then starts it from that checkpoint. Nothing is
buffered whole.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import stat
import tarfile
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

from drsvc.containment import Escape, Root, clean
from drsvc.errors import BackendError, InvalidInput
from drsvc.runtimes.archive import checked
from drsvc.runtimes.base import LABEL_CLONE_STORAGE
from drsvc.runtimes.docker.client import CHUNK, DockerClient, chunks
from drsvc.runtimes.docker.pack import CONFIG_MEMBER, LABEL_RESTORED_AT
from drsvc.runtimes.docker.paths import RESTORE_MARKER, checkpoint_dir, remove_restore_leftovers, upper_dir
from drsvc.streams import IterReader

# HostConfig fields that tie a container to its original identity; a clone drops them
_CLONE_DROP_HOSTCONFIG = ("PortBindings", "ContainerIDFile", "Links")


def container_body(
    saved: dict[str, Any],
    *,
    image: str,
    name: str | None,
    network: str | None,
    labels: dict[str, str] | None,
) -> dict[str, Any]:
    """The create body of a container like the checkpointed one (``saved``: its inspect document).

    ``name`` other than the saved one makes a clone: no published ports, links or MAC address, and
    nothing shared with the original but the image (``isolate_clone``); ``network`` replaces the
    network mode; ``labels`` are merged over the saved ones.
    """
    config = dict(saved.get("Config") or {})
    host = dict(saved.get("HostConfig") or {})
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
    if clone:
        isolate_clone(saved, config, host, name=str(name), network=network)
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
    return body


def isolate_clone(
    saved: dict[str, Any], config: dict[str, Any], host: dict[str, Any], *, name: str, network: str | None
) -> None:
    """Make a clone's create body share nothing with its original but the image.

    No host (or other container's) network, PID, IPC or UTS namespace; every volume and bind
    mount of the original (``saved["Mounts"]``, ``VolumesFrom``, the image's own volumes)
    becomes a new empty volume of the clone's own at the same place, labelled ``drsvc.clone``
    so ``remove`` takes it along. Published ports, links and the MAC address are dropped by the
    caller. A clone restored with the original's network (``network=None``) of the host is refused.
    """
    mode = str(host.get("NetworkMode") or "")
    if network is None and (mode == "host" or mode.startswith("container:")):
        raise InvalidInput(
            f"clone {name}: the desktop uses network {mode!r}; a clone never shares it: restore it with "
            "network 'none' or a network of its own"
        )
    for key in ("PidMode", "UTSMode"):
        if str(host.get(key) or "") == "host" or str(host.get(key) or "").startswith("container:"):
            host[key] = ""
    if str(host.get("IpcMode") or "") in ("host", "shareable") or str(host.get("IpcMode") or "").startswith(
        "container:"
    ):
        host["IpcMode"] = "private"
    targets: dict[str, bool] = {}  # destination -> read-only
    for m in saved.get("Mounts") or []:
        if m.get("Type") in ("bind", "volume") and m.get("Destination"):
            targets[str(m["Destination"])] = not m.get("RW", True)
    for dest in config.get("Volumes") or {}:
        targets.setdefault(str(dest), False)
    kept = [m for m in host.get("Mounts") or [] if m.get("Type") == "tmpfs" and m.get("Target") not in targets]
    own = [
        {
            "Type": "volume",
            "Target": dest,
            "ReadOnly": read_only,
            "VolumeOptions": {"Labels": {LABEL_CLONE_STORAGE: name}},
        }
        for dest, read_only in sorted(targets.items())
    ]
    host["Binds"] = None
    host["VolumesFrom"] = None
    host["Mounts"] = kept + own or None


class Unpacker:
    """One restore: the container it created, the checkpoint directory it fills, what it has seen."""

    def __init__(
        self,
        client: DockerClient,
        *,
        name: str | None,
        network: str | None,
        labels: dict[str, str] | None,
        what: str,
    ) -> None:
        self.client = client
        self.name, self.network, self.labels, self.what = name, network, labels, what
        self.ckpt = f"drsvc-{uuid.uuid4().hex[:12]}"
        self.created: str | None = None
        self.ckpt_dir: Path | None = None
        self.saved: dict[str, Any] | None = None
        self.images = 0

    def unpack(self, archive: BinaryIO) -> None:
        """Create the container and put the archive's pieces in place (not started yet)."""
        what = self.what
        try:
            source = IterReader(checked(chunks(archive), what=f"{what}: checkpoint archive"))
            tf = tarfile.open(fileobj=source, mode="r|")  # noqa: SIM115 - closed below, one pass
        except tarfile.TarError as e:
            raise BackendError(f"{what}: the checkpoint archive is not a tar stream: {e}") from e
        try:
            for member in tf:
                mname = member.name.removeprefix("./")
                if mname == CONFIG_MEMBER:
                    self.saved = json.load(_must(tf.extractfile(member), mname))
                    self._create(self.saved)
                elif mname.startswith("checkpoint/") or mname == "checkpoint":
                    self.images += self._write_image_member(tf, member)
                elif mname == "rootfs-diff.tar" and member.isfile():
                    self._put_rootfs_diff(_must(tf.extractfile(member), mname))
                elif mname == "deleted.files" and member.isfile():
                    gone = json.load(_must(tf.extractfile(member), mname)) or []
                    if gone:
                        self._apply_deletions(self._created(), gone)
        except (tarfile.TarError, ValueError, EOFError) as e:
            raise BackendError(f"{what}: broken checkpoint archive: {e}") from e
        except OSError as e:
            raise BackendError(f"{what}: writing the checkpoint's pieces on this host: {e}") from e
        finally:
            tf.close()
        if self.created is None or self.saved is None or self.ckpt_dir is None:
            raise BackendError(f"{what}: not a Docker checkpoint archive (no {CONFIG_MEMBER})")
        if not self.images:
            raise BackendError(f"{what}: the archive holds no CRIU images (checkpoint/)")

    def start(self) -> str:
        """Start the unpacked container from its checkpoint; return its id."""
        cid = self._created()
        self.client.start_from_checkpoint(cid, self.ckpt, self.what)
        return cid

    def cleanup(self) -> None:
        """Delete the checkpoint directory (CRIU has read it once the container started, or failed)."""
        if self.created is not None and self.ckpt_dir is not None:
            self.client.delete_checkpoint(self.created, self.ckpt)
            shutil.rmtree(self.ckpt_dir, ignore_errors=True)
            # containerd's own unpacked copy of it (memory in plaintext), which it never deletes
            remove_restore_leftovers(self.ckpt)

    # ------------------------------------------------------------------ members
    def _created(self) -> str:
        if self.created is None:
            raise BackendError(f"{self.what}: not a Docker checkpoint archive (no {CONFIG_MEMBER} first)")
        return self.created

    def _ckpt_dir(self) -> Path:
        if self.ckpt_dir is None:
            raise BackendError(f"{self.what}: not a Docker checkpoint archive (no {CONFIG_MEMBER} first)")
        return self.ckpt_dir

    def _create(self, saved: dict[str, Any]) -> None:
        target = self.name or str(saved.get("Name") or "").lstrip("/")
        if not target:
            raise BackendError(f"{self.what}: the archive names no container and no name was given")
        body = container_body(saved, image=self._image(saved), name=self.name, network=self.network, labels=self.labels)
        self.created = self.client.create_container(body, target, self.what)
        self.ckpt_dir = checkpoint_dir(self.client.root_dir(), self.created, self.ckpt)
        self.ckpt_dir.mkdir(parents=True)
        # dockerd uploads this directory to containerd by digest; a restore within the second of
        # its checkpoint would equal containerd's own copy, still awaiting garbage collection
        # ("content sha256:...: already exists"). A unique file makes every upload distinct;
        # CRIU reads only the images it knows.
        (self.ckpt_dir / RESTORE_MARKER).write_text(self.ckpt + "\n")

    def _image(self, saved: dict[str, Any]) -> str:
        """Exactly the checkpointed image: its name while that still names it, else its id."""
        image_id = str(saved.get("Image") or "")
        image = str((saved.get("Config") or {}).get("Image") or image_id)
        if image_id and self.client.image_id(image) != image_id:
            return image_id  # the name is gone, or moved on to another image
        return image

    def _put_rootfs_diff(self, reader: Any) -> None:
        created = self._created()
        with self.client.errors(f"{self.what}: writing the root filesystem changes", missing="backend"):
            ok = self.client.api.put_archive(created, "/", chunks(reader))
        if not ok:
            raise BackendError(f"{self.what}: Docker refused the root filesystem changes")

    def _write_image_member(self, tf: tarfile.TarFile, member: tarfile.TarInfo) -> int:
        """One ``checkpoint/`` member into the checkpoint directory, beneath its fd; 1 for a file."""
        rel = clean(member.name, what="checkpoint archive member").removeprefix("checkpoint").lstrip("/")
        if not rel:
            return 0
        if not (member.isdir() or member.isfile()):  # CRIU writes regular files only
            raise Escape(f"{self.what}: checkpoint archive member {member.name!r} is a link or device")
        with Root(self._ckpt_dir(), what="checkpoint directory") as root:
            if member.isdir():
                root.makedirs(rel, 0o700)
                return 0
            parent = rel.rpartition("/")[0]
            if parent:
                root.makedirs(parent, 0o700)
            src = _must(tf.extractfile(member), member.name)
            with os.fdopen(root.create(rel, member.mode & 0o777 or 0o600), "wb") as out:
                shutil.copyfileobj(src, out, CHUNK)
        return 1

    def _apply_deletions(self, cid: str, paths: Iterable[str]) -> None:
        """Delete files of the image in a created container: overlay whiteouts in its upper dir.

        The paths are the archive's; each is resolved beneath the upper dir's fd without following
        a link, so a symlink the rootfs diff put there cannot turn a deletion into a host path.
        """
        upper = upper_dir(self.client.inspect_raw(cid))
        with Root(upper, what=f"upper dir of {cid[:12]}") as root:
            for path in paths:
                rel = clean(str(path), what=f"{self.what}: deleted.files entry", absolute=True)
                if not rel:
                    raise Escape(f"{self.what}: deleted.files names the root itself")
                try:
                    root.remove(rel)
                    parent = rel.rpartition("/")[0]
                    if parent:
                        root.makedirs(parent)
                    root.mknod(rel, stat.S_IFCHR | 0o000, os.makedev(0, 0))
                except OSError as e:
                    if e.errno in (errno.ELOOP, errno.EXDEV, errno.ENOTDIR):
                        raise Escape(
                            f"{self.what}: deleted.files entry {path!r} lies beneath a symlink or leaves the "
                            "root filesystem; refused"
                        ) from None
                    raise BackendError(f"{self.what}: cannot delete {path} in the restored root filesystem: {e}") from e


def _must(f: Any, name: str) -> Any:
    if f is None:
        raise BackendError(f"checkpoint archive member {name} is not a regular file")
    return f
