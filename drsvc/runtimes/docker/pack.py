"""A Docker checkpoint as drsvc's archive: the CRIU images, the container's config and its changed files.

Docker leaves a raw CRIU image directory and nothing else; ``archive_members`` lists what the
archive holds (``config.dump``, ``docker-config.json``, ``spec.dump``, ``checkpoint/``,
``rootfs-diff.tar``, ``deleted.files``) and ``tar_stream`` writes it member by member, never
holding a memory image whole. ``rootfs_diff`` reads the container's changed files from its
overlay upper dir into a spooled tar.
"""

from __future__ import annotations

import errno
import io
import json
import os
import stat
import tarfile
import tempfile
import time
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

from drsvc.containment import Root, clean
from drsvc.errors import BackendError
from drsvc.runtimes.docker.client import CHUNK
from drsvc.runtimes.docker.paths import upper_dir

LABEL_RESTORED_AT = "drsvc.restored-at"
CONFIG_MEMBER = "docker-config.json"


def visible_labels(labels: dict[str, str] | None) -> dict[str, str]:
    """A container's labels without drsvc's bookkeeping one (``drsvc.restored-at``)."""
    return {k: v for k, v in (labels or {}).items() if k != LABEL_RESTORED_AT}


def rootfs_diff(c: dict[str, Any], changes: list[dict[str, Any]], spool_dir: Path | None) -> tuple[Any, list[str]]:
    """(spooled tar of added/changed entries, deleted paths) of a container's writable layer.

    ``changes`` is the Engine's ``GET /containers/{id}/changes``; the content is read from the
    overlay upper dir the inspect document ``c`` names, through ``containment.Root``: the
    container keeps running meanwhile and its tenant may swap a directory for a symlink at any
    moment, so nothing is looked up by host path and no symlink is followed. An entry that is no
    longer what Docker listed (gone, or now reached only through a link) is left out.
    """
    cid = c["Id"]
    upper = upper_dir(c)
    # handed to the caller, which closes it once the archive has streamed
    spool = tempfile.TemporaryFile(dir=spool_dir)  # noqa: SIM115
    deleted: list[str] = []
    try:
        with (
            Root(upper, what=f"upper dir of {cid[:12]}") as root,
            tarfile.open(fileobj=spool, mode="w", format=tarfile.PAX_FORMAT) as tf,
        ):
            layer = _LayerReader(root, tf)
            for ch in sorted(changes, key=lambda x: str(x["Path"])):
                path = str(ch["Path"])
                rel = clean(path, what=f"changed path of {cid[:12]}", absolute=True)
                if not rel:
                    continue
                if int(ch.get("Kind", 0)) == 2:
                    deleted.append("/" + rel)
                    continue
                layer.add(rel)
        spool.seek(0)
    except OSError as e:
        spool.close()
        raise BackendError(f"reading the root filesystem changes of {cid[:12]} from {upper}: {e}") from e
    except BaseException:
        spool.close()
        raise
    return spool, deleted


class _LayerReader:
    """Adds entries of a live upper dir to a tar, each read through one fd opened beneath the root."""

    def __init__(self, root: Root, tf: tarfile.TarFile) -> None:
        self.root, self.tf = root, tf
        self.inodes: dict[tuple[int, int], str] = {}  # hard links: (dev, ino) -> first path archived

    def add(self, rel: str) -> None:
        try:
            fd = self.root.open(rel, os.O_PATH | os.O_NOFOLLOW)
        except OSError as e:
            if e.errno == errno.ELOOP and self._is_link(rel):
                self._add_link(rel)
                return
            if e.errno in _GONE:
                return  # gone again since Docker listed it, or reached only through a swapped-in link
            raise
        try:
            st = os.fstat(fd)
            info = _info(rel, st)
            if stat.S_ISLNK(st.st_mode):  # O_PATH|O_NOFOLLOW opened the link itself
                self._add_link(rel)
            elif stat.S_ISREG(st.st_mode):
                self._add_file(rel, fd, st, info)
            elif stat.S_ISDIR(st.st_mode):
                info.type = tarfile.DIRTYPE
                self.tf.addfile(info)
            elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
                    return  # an overlay whiteout, listed by Docker as a deletion
                info.type = tarfile.CHRTYPE if stat.S_ISCHR(st.st_mode) else tarfile.BLKTYPE
                info.devmajor, info.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
                self.tf.addfile(info)
            elif stat.S_ISFIFO(st.st_mode):
                info.type = tarfile.FIFOTYPE
                self.tf.addfile(info)
        finally:
            os.close(fd)

    def _is_link(self, rel: str) -> bool:
        try:
            return stat.S_ISLNK(self.root.lstat(rel).st_mode)
        except OSError:
            return False  # the link is in a parent: not an entry of this layer

    def _add_link(self, rel: str) -> None:
        try:
            st = self.root.lstat(rel)
            target = self.root.readlink(rel)
        except OSError as e:
            if e.errno in _GONE:
                return
            raise
        info = _info(rel, st)
        info.type, info.linkname = tarfile.SYMTYPE, target  # archived as a link, never followed
        self.tf.addfile(info)

    def _add_file(self, rel: str, found: int, st: os.stat_result, info: tarfile.TarInfo) -> None:
        """The regular file at ``rel`` into the tar, read through ``found`` (its ``O_PATH`` fd, type checked)."""
        if st.st_nlink > 1:
            first = self.inodes.get((st.st_dev, st.st_ino))
            if first is not None:
                info.type, info.linkname = tarfile.LNKTYPE, first
                self.tf.addfile(info)
                return
            self.inodes[(st.st_dev, st.st_ino)] = rel
        # Read through the descriptor whose type was checked, never the path again: the container
        # runs, and its tenant may have swapped the file for a FIFO (a read open would wait for a
        # writer for ever) or a device node (a read open runs the host driver's open) meanwhile.
        fd = os.open(f"/proc/self/fd/{found}", os.O_RDONLY | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as f:
            now = os.fstat(f.fileno())
            info.size = now.st_size
            # a file still being written: take what is there now, exactly info.size
            self.tf.addfile(info, _Exact(f, info.size))


_GONE = (errno.ENOENT, errno.ENOTDIR, errno.ELOOP, errno.EXDEV)


def _info(rel: str, st: os.stat_result) -> tarfile.TarInfo:
    info = tarfile.TarInfo(rel)
    info.mode = stat.S_IMODE(st.st_mode)
    info.uid, info.gid, info.mtime = st.st_uid, st.st_gid, int(st.st_mtime)
    return info


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


def archive_members(c: dict[str, Any], ckpt_dir: Path, diff: Any, deleted: list[str]) -> Iterator[Member]:
    """The archive's members in the order restore needs them (config first, diff after the images)."""
    config = c.get("Config") or {}
    host = c.get("HostConfig") or {}
    labels = visible_labels(config.get("Labels"))
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


def tar_stream(members: Iterable[Member]) -> Iterator[bytes]:
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
