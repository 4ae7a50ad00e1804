"""Files a frozen desktop holds open in its own root filesystem, read while the freeze lasts.

CRIU records the size and mode of every regular file a process holds open or has mapped (all but
files opened write-only for appending) and refuses a restore when the file it finds differs
("File tmp/x has bad size 40 (expect 0)"). The runtimes export the container's root filesystem
changes (``rootfs-diff.tar``) only after CRIU has let the container go, so a file written in that
instant makes the checkpoint unrestorable, and a retry cannot help. While the freeze hook holds
the container nothing in it can touch such a file: ``capture`` copies every one of them that lies
in the container's writable layer, and ``patch_archive`` puts those copies into the archive's
``rootfs-diff.tar`` in place of what the runtime read later (and takes them off
``deleted.files``). Memory and root filesystem then describe the same instant for every file
CRIU checks; other root filesystem files may still be a moment newer, as before.

Everything is read from the host's ``/proc`` and the overlay upper directory, never through the
runtime (which holds the container's lock while it stands frozen). The upper directory is the one
the host's mount table names for the container's root file system, and files are opened beneath
it without following links (``drsvc.containment``): a tenant shapes its own mount table and
file names, never what drsvc opens on the host. Files on other mounts (the
runtime's bind mounts, tmpfs, the desktop's volume) are not the root filesystem's and are left
alone. Copies live in a spool directory until the archive has streamed (``HeldFiles.close``).
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from drsvc.containment import Escape, Root, clean
from drsvc.runtimes.archive import TarWalker, file_member, stream_member

ROOTFS_DIFF = "rootfs-diff.tar"
DELETED_FILES = "deleted.files"
BUDGET = 64 << 20  # bytes copied per desktop inside the freeze (each MiB lengthens it by ~1 ms)
_APPEND_ONLY = os.O_WRONLY | os.O_APPEND


@dataclass(frozen=True)
class HeldFile:
    """One file as it stood at the freeze: where it lives in the container and its copy."""

    path: str  # relative to the container's root, as in rootfs-diff.tar ("tmp/held")
    size: int
    mode: int
    uid: int
    gid: int
    mtime: float
    copy: Path


@dataclass
class HeldFiles:
    """The held files of one frozen container, and why any could not be taken."""

    files: dict[str, HeldFile] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    spool: Path | None = None

    def summary(self) -> dict[str, Any]:
        """What a manifest records: each file's path and size, and the notes."""
        return {
            "files": [{"path": f.path, "size": f.size} for f in sorted(self.files.values(), key=lambda f: f.path)],
            "notes": list(self.notes),
        }

    def close(self) -> None:
        """Drop the copies (idempotent)."""
        if self.spool is not None:
            shutil.rmtree(self.spool, ignore_errors=True)
            self.spool = None


# ---------------------------------------------------------------------- reading /proc inside the freeze
@dataclass(frozen=True)
class Mount:
    mount_id: int
    mount_point: str
    fstype: str
    options: dict[str, str]
    dev: str = ""  # major:minor of the file system (the kernel's, the same in every mount namespace)


def parse_mountinfo(text: str) -> list[Mount]:
    """The mounts of ``/proc/PID/mountinfo`` (mount id, mount point, fs type, super options)."""
    mounts = []
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if not sep or len(fields) < 5 or len(tail) < 3:
            continue
        options = {}
        for opt in tail[2].split(","):
            key, _, value = opt.partition("=")
            options[key] = _unescape(value)
        mounts.append(Mount(int(fields[0]), _unescape(fields[4]), tail[0], options, fields[2]))
    return mounts


def checked_by_criu(flags: int) -> bool:
    """Whether CRIU records (and on restore checks) the size of a regular file open with ``flags``."""
    return (flags & os.O_ACCMODE) != os.O_WRONLY or not flags & os.O_APPEND


def mount_of(path: str, mounts: list[Mount]) -> Mount | None:
    """The mount ``path`` (absolute, in the container's view) lies on: the deepest, last mounted."""
    best: Mount | None = None
    depth = -1
    for m in mounts:
        point = m.mount_point.rstrip("/")
        if (not point or path == point or path.startswith(point + "/")) and len(point) >= depth:
            best, depth = m, len(point)
    return best


def host_upper_dir(root: Mount, host_mountinfo: str) -> str | None:
    """The upper dir of the container's root overlay, as the host's own mount table names it.

    The container's ``mountinfo`` is the tenant's to shape (its root may mount whatever it likes
    over ``/`` in its own namespace), so its ``upperdir=`` string is never opened. The kernel's
    device number of the root mount is the same in every namespace: the host's overlay mount of
    that device names the real upper dir. None when the host has no such overlay.
    """
    if not root.dev:
        return None
    for m in parse_mountinfo(host_mountinfo):
        if m.dev == root.dev and m.fstype == "overlay" and m.options.get("upperdir", "").startswith("/"):
            return m.options["upperdir"]
    return None


def capture(init_pid: int, *, budget: int = BUDGET, proc: str = "/proc") -> HeldFiles:
    """Copy the files CRIU will check that the frozen container ``init_pid`` holds in its writable layer.

    Call only while the container stands frozen (the hook waits in ``post-dump``). Never raises
    for what it cannot read: the reason goes into ``notes`` and the checkpoint is as it was.
    The upper dir comes from the host's mount table (``host_upper_dir``) and every file is opened
    beneath it through ``containment.Root``: never a path the container names, never a link.
    """
    held = HeldFiles()
    try:
        mounts = parse_mountinfo(Path(proc, str(init_pid), "mountinfo").read_text())
    except OSError as e:
        held.notes.append(f"root filesystem files not read: /proc/{init_pid} is not visible here ({e.strerror})")
        return held
    root = mount_of("/", mounts)
    if root is None or root.fstype != "overlay":
        held.notes.append("root filesystem files not read: the container's root is not an overlay with an upper dir")
        return held
    upper = host_upper_dir(root, _host_mountinfo(proc))
    if upper is None:
        held.notes.append(
            f"root filesystem files not read: the host's mount table has no overlay for the container's root "
            f"(device {root.dev or '?'})"
        )
        return held
    paths = _held_paths(init_pid, root, mounts, proc)
    try:
        layer = Root(upper, what="upper dir")
    except OSError as e:
        held.notes.append(f"root filesystem files not read: {e.strerror or e}")
        return held
    with layer:
        _copy_held(held, layer, paths, budget)
    return held


def _host_mountinfo(proc: str) -> str:
    """The host's mount table: init's (drsvc may run in a container of its own with the host's pids)."""
    for pid in ("1", "self"):
        try:
            return Path(proc, pid, "mountinfo").read_text()
        except OSError:
            continue
    return ""


def _copy_held(held: HeldFiles, layer: Root, paths: set[str], budget: int) -> None:
    spent = 0
    for path in sorted(paths):
        try:
            # O_PATH: the type is known before anything is opened for reading. A desktop can hold a
            # FIFO (a read open would wait for a writer, the batch frozen) or a device node it made
            # (a read open runs the host driver's open): only a regular file is opened to be read.
            fd = layer.open(clean(path, what="held file", absolute=True), os.O_PATH | os.O_NOFOLLOW)
        except (OSError, Escape):
            continue  # not in the writable layer (an image file, unchanged), or only through a link
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                continue
            # the same inode, now for reading (the magic link is the O_PATH fd's own file)
            data = os.open(f"/proc/self/fd/{fd}", os.O_RDONLY | os.O_CLOEXEC)
            os.close(fd)
            fd = data
            if spent + st.st_size > budget:
                held.notes.append(f"/{path} ({st.st_size} bytes) not copied: over the {budget} bytes budget")
                continue
            if held.spool is None:
                held.spool = Path(tempfile.mkdtemp(prefix="drsvc-held-"))
            copy = held.spool / str(len(held.files))
            with os.fdopen(os.dup(fd), "rb") as f, copy.open("wb") as out:
                shutil.copyfileobj(f, out, 1 << 20)
            if copy.stat().st_size != st.st_size:  # something outside the container wrote to it
                held.notes.append(f"/{path} changed while it was copied: left as the runtime reads it")
                copy.unlink()
                continue
            spent += st.st_size
            held.files[path] = HeldFile(path, st.st_size, st.st_mode, st.st_uid, st.st_gid, st.st_mtime, copy)
        except OSError as e:
            held.notes.append(f"/{path} not copied: {e.strerror or e}")
        finally:
            os.close(fd)


def _held_paths(init_pid: int, root: Mount, mounts: list[Mount], proc: str) -> set[str]:
    """Paths (relative to the root) of regular files on the root mount that the tree holds open or mapped."""
    paths: set[str] = set()
    for pid in _tree(init_pid, proc):
        base = Path(proc, str(pid))
        for fd in _listdir(base / "fd"):
            try:
                target = os.readlink(base / "fd" / fd)
                info = dict(
                    line.split(":", 1) for line in (base / "fdinfo" / fd).read_text().splitlines() if ":" in line
                )
                flags, mount_id = int(info["flags"].strip(), 8), int(info["mnt_id"].strip())
            except (OSError, KeyError, ValueError):
                continue  # closed meanwhile, or not a file
            if mount_id == root.mount_id and checked_by_criu(flags) and _plain(target):
                paths.add(target.lstrip("/"))
        for mapping in _listdir(base / "map_files"):
            try:
                target = os.readlink(base / "map_files" / mapping)
            except OSError:
                continue
            mount = mount_of(target, mounts)
            if _plain(target) and mount is not None and mount.mount_id == root.mount_id:
                paths.add(target.lstrip("/"))
    return paths


def _tree(init_pid: int, proc: str) -> list[int]:
    """``init_pid`` and every process descending from it (CRIU dumps the whole tree)."""
    children: dict[int, list[int]] = {}
    for entry in _listdir(Path(proc)):
        if not entry.isdigit():
            continue
        try:
            stat_line = Path(proc, entry, "stat").read_text()
            ppid = int(stat_line.rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    tree, todo = [], [init_pid]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, ()))
    return tree


def _plain(target: str) -> bool:
    # an absolute path that still has a name (CRIU carries unlinked files in its own images)
    return target.startswith("/") and not target.endswith(" (deleted)")


def _listdir(path: Path) -> list[str]:
    try:
        return os.listdir(path)
    except OSError:
        return []


def _unescape(value: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo
    if "\\" not in value:
        return value
    return value.encode("latin-1").decode("unicode_escape").encode("latin-1").decode("utf-8", "surrogateescape")


# ---------------------------------------------------------------------- the archive
def patch_archive(src: BinaryIO, held: HeldFiles) -> Iterator[bytes]:
    """Stream a checkpoint archive with the held files in its ``rootfs-diff.tar`` as they stood at the freeze.

    Every other member passes through as read; ``rootfs-diff.tar`` is spooled to a temporary
    file to be rewritten (its new size must be known before its header goes out).
    """
    walker = TarWalker(src)
    seen_diff = False
    for m in walker:
        if m.name == ROOTFS_DIFF and m.info.isfile() and held.files:
            seen_diff = True
            with tempfile.TemporaryFile() as old:
                for block in walker.data():
                    old.write(block)
                old.seek(0)
                yield from _rootfs_diff_member(m.info, old, held)
        elif m.name == DELETED_FILES and m.info.isfile() and held.files:
            gone = json.loads(walker.read(m.info.size) or b"[]") or []
            kept = [p for p in gone if str(p).lstrip("/") not in held.files]
            yield file_member(m.info, m.name, json.dumps(kept).encode())
        else:
            yield m.raw
            yield from walker.data()
    if held.files and not seen_diff:  # the runtime found no changes left: the held files are the diff
        template = tarfile.TarInfo(ROOTFS_DIFF)
        template.mode = 0o600
        yield from _rootfs_diff_member(template, None, held)
    yield from walker.end()


def _rootfs_diff_member(template: tarfile.TarInfo, old: BinaryIO | None, held: HeldFiles) -> Iterator[bytes]:
    """The ``rootfs-diff.tar`` member: ``old`` (a tar of the writable layer, or none) with the held
    files replaced or added, spooled first (its size goes into the header)."""
    with tempfile.TemporaryFile() as new:
        _patch_rootfs_diff(old, new, held)
        size = new.tell()
        new.seek(0)
        yield from stream_member(template, ROOTFS_DIFF, size, new)


def _patch_rootfs_diff(old: BinaryIO | None, new: BinaryIO, held: HeldFiles) -> None:
    pending = dict(held.files)
    with tarfile.open(fileobj=new, mode="w", format=tarfile.PAX_FORMAT) as out:
        if old is not None:
            with tarfile.open(fileobj=old, mode="r:") as diff:
                for member in diff:
                    h = pending.pop(member.name.removeprefix("./").rstrip("/"), None)
                    if h is not None:
                        _add_held(out, h, member)
                    elif member.isfile():
                        out.addfile(member, diff.extractfile(member))
                    else:
                        out.addfile(member)
        for h in pending.values():  # gone from the layer since the freeze: back as it stood
            _add_held(out, h, None)


def _add_held(out: tarfile.TarFile, h: HeldFile, template: tarfile.TarInfo | None) -> None:
    info = tarfile.TarInfo(h.path)
    info.type, info.size, info.mode = tarfile.REGTYPE, h.size, stat.S_IMODE(h.mode)
    info.uid, info.gid, info.mtime = h.uid, h.gid, h.mtime
    if template is not None:
        info.uname, info.gname = template.uname, template.gname
        # extended attributes (security.capability …) are the file's, not the moment's
        info.pax_headers = {k: v for k, v in template.pax_headers.items() if k.startswith("SCHILY.xattr.")}
    with h.copy.open("rb") as f:
        out.addfile(info, f)
