"""Containment: every path a container, an archive or a store names is resolved beneath a root.

drsvc runs as root on the host. Paths it reads from a running container (its changed files, the
files it holds open), from a checkpoint archive (member names, link targets, deleted files) or
from a store are hostile: a tenant controls its own root filesystem and can race drsvc while it
reads. So no such path is ever joined to a host directory and handed to ``open``. Instead:

- ``clean(name)`` turns a name into a relative path of plain components, or refuses it
  (absolute where the format has none, ``..``, NUL, empty);
- ``Root`` is a directory opened once by a path the host or the runtime names (an overlay upper
  dir from the runtime's inspect or the host's mount table, a spool dir drsvc made); everything
  beneath it is reached through its fd with ``openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
  RESOLVE_NO_MAGICLINKS)`` — or, on kernels without ``openat2``, one ``O_NOFOLLOW`` component
  at a time — and acted on with the ``*at`` calls relative to the parent's fd. No symlink is ever
  followed beneath a root (the formats drsvc reads name real paths: a symlink is archived as a
  link, never through), so a directory swapped for a symlink mid-walk fails the lookup (ELOOP)
  instead of leading to ``/etc``;
- ``MemberRules`` decides which tar members a format allows: no member beneath a symlink the same
  archive created, hard links only to an earlier regular member, device nodes only in a root
  filesystem diff.

Runtimes and backup walks call this module; they never build host paths from what they read.
Podman's and runc's ``securejoin`` are the model.
"""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
import stat
import tarfile
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path

from drsvc.errors import IntegrityError

# openat2(2): linux/openat2.h
_SYS_OPENAT2 = 437  # the same number on every architecture (a syscall added after the unification)
RESOLVE_NO_XDEV = 0x01
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08
_RESOLVE = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS


class Escape(IntegrityError):
    """A path leaves its root, or an archive holds a member its format does not allow."""


def clean(name: str, *, what: str = "path", absolute: bool = False) -> str:
    """``name`` as a relative path of plain components ("a/b"), "" for the root itself.

    ``absolute``: the format names paths from the container's root ("/etc/x", as deleted-file
    lists do): one leading "/" is expected and removed. Refused (``Escape``): ``..`` anywhere,
    NUL, an absolute name where the format has relative ones.
    """
    if not isinstance(name, str):
        raise Escape(f"{what} {name!r}: not a path")
    if "\0" in name:
        raise Escape(f"{what} {name!r}: contains a NUL byte")
    rel = name
    if absolute:
        rel = rel.lstrip("/")
    elif rel.startswith("/"):
        raise Escape(f"{what} {name!r}: an absolute path (it must stay beneath its root)")
    parts = [p for p in rel.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise Escape(f"{what} {name!r}: '..' leaves its root")
    return "/".join(parts)


# ---------------------------------------------------------------------- openat2 or O_NOFOLLOW walks
class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


_libc = ctypes.CDLL(None, use_errno=True)
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long
_openat2_works: bool | None = None  # learnt on first use: ENOSYS (old kernel, seccomp) means fall back


def _openat2(dirfd: int, rel: str, flags: int, mode: int) -> int:
    how = _OpenHow(flags | os.O_CLOEXEC, mode if flags & os.O_CREAT else 0, _RESOLVE)
    fd = _syscall(
        ctypes.c_long(_SYS_OPENAT2),
        ctypes.c_int(dirfd),
        ctypes.c_char_p(os.fsencode(rel)),
        ctypes.byref(how),
        ctypes.c_size_t(ctypes.sizeof(how)),
    )
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), rel)
    return int(fd)


def _walk_open(dirfd: int, rel: str, flags: int, mode: int) -> int:
    """The fallback: one component at a time, each opened ``O_NOFOLLOW`` relative to the last."""
    parts = rel.split("/") if rel else []
    current = os.open(".", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=dirfd)
    try:
        for part in parts[:-1]:
            nxt = os.open(part, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=current)
            os.close(current)
            current = nxt
        last = parts[-1] if parts else "."
        return os.open(last, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=current)
    finally:
        os.close(current)


def open_beneath(dirfd: int, rel: str, flags: int = os.O_RDONLY, mode: int = 0o600) -> int:
    """Open ``rel`` (already ``clean``) beneath the directory ``dirfd``, following no symlink; return the fd.

    A symlink anywhere on the way (the last component included) fails with ELOOP, a path leaving
    the directory with EXDEV; both as ``OSError``.
    """
    global _openat2_works
    if _openat2_works is not False:
        try:
            fd = _openat2(dirfd, rel or ".", flags, mode)
            _openat2_works = True
            return fd
        except OSError as e:
            if e.errno not in (errno.ENOSYS, errno.EPERM) or _openat2_works:
                raise
            _openat2_works = False  # no openat2 here (kernel < 5.6 or a seccomp filter)
    return _walk_open(dirfd, rel, flags, mode)


# ---------------------------------------------------------------------- a root directory
class Root:
    """A directory the host or the runtime named, opened once; every path beneath it goes through its fd."""

    def __init__(self, path: str | os.PathLike[str], *, what: str = "root") -> None:
        self.path = Path(path)
        self.what = what
        try:
            self.fd = os.open(self.path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as e:
            raise OSError(e.errno, f"{what} {self.path}: {e.strerror}") from None

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> Root:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Root({str(self.path)!r})"

    # -- lookups
    def open(self, rel: str, flags: int = os.O_RDONLY, mode: int = 0o600) -> int:
        """An fd for ``rel`` (``clean``ed here) beneath the root; symlinks are never followed."""
        return open_beneath(self.fd, clean(rel, what=self.what), flags, mode)

    def parent(self, rel: str) -> tuple[int, str]:
        """(fd of ``rel``'s parent directory, its last component): for the ``*at`` calls. Close the fd."""
        rel = clean(rel, what=self.what)
        if not rel:
            raise Escape(f"{self.what} {self.path}: the root itself has no parent here")
        head, _, name = rel.rpartition("/")
        return open_beneath(self.fd, head, os.O_PATH | os.O_DIRECTORY), name

    def lstat(self, rel: str) -> os.stat_result:
        """The entry itself (a symlink is reported, not followed); ``FileNotFoundError`` if absent."""
        fd, name = self.parent(rel)
        try:
            return os.stat(name, dir_fd=fd, follow_symlinks=False)
        finally:
            os.close(fd)

    def readlink(self, rel: str) -> str:
        fd, name = self.parent(rel)
        try:
            return os.readlink(name, dir_fd=fd)
        finally:
            os.close(fd)

    def listdir(self, rel: str = "") -> list[str]:
        fd = self.open(rel, os.O_RDONLY | os.O_DIRECTORY)
        try:
            return sorted(os.listdir(fd))
        finally:
            os.close(fd)

    def exists(self, rel: str) -> bool:
        try:
            self.lstat(rel)
            return True
        except FileNotFoundError:
            return False

    # -- changes
    def makedirs(self, rel: str, mode: int = 0o755) -> None:
        """Create ``rel`` and its missing parents as directories, one ``mkdirat`` at a time."""
        rel = clean(rel, what=self.what)
        done = ""
        for part in rel.split("/") if rel else []:
            fd = open_beneath(self.fd, done, os.O_PATH | os.O_DIRECTORY)
            try:
                with suppress(FileExistsError):
                    os.mkdir(part, mode, dir_fd=fd)
            finally:
                os.close(fd)
            done = f"{done}/{part}" if done else part
            os.close(open_beneath(self.fd, done, os.O_PATH | os.O_DIRECTORY))  # a directory, not a link

    def create(self, rel: str, mode: int = 0o600) -> int:
        """A new regular file (``O_EXCL``: never an existing file, never through a link); return its fd."""
        return self.open(rel, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)

    def remove(self, rel: str) -> bool:
        """Remove the entry at ``rel`` (a directory with everything in it); whether there was one.

        The tree is removed through fds (``shutil.rmtree`` with ``dir_fd``), so a link inside it
        is removed as a link, never followed.
        """
        try:
            fd, name = self.parent(rel)
        except FileNotFoundError:
            return False  # no parent, no entry (a parent that is a link fails with ELOOP instead)
        try:
            try:
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            except FileNotFoundError:
                return False
            if stat.S_ISDIR(st.st_mode):
                shutil.rmtree(name, dir_fd=fd)
            else:
                os.unlink(name, dir_fd=fd)
            return True
        finally:
            os.close(fd)

    def mknod(self, rel: str, mode: int, device: int = 0) -> None:
        fd, name = self.parent(rel)
        try:
            os.mknod(name, mode, device, dir_fd=fd)
        finally:
            os.close(fd)

    def walk(self, rel: str = "") -> Iterator[tuple[str, os.stat_result]]:
        """Every entry beneath ``rel`` (relative path, lstat), parents first, through fds; links not followed."""
        for name in self.listdir(rel):
            path = f"{rel}/{name}" if rel else name
            try:
                st = self.lstat(path)
            except FileNotFoundError:
                continue  # gone meanwhile
            yield path, st
            if stat.S_ISDIR(st.st_mode):
                try:
                    yield from self.walk(path)
                except OSError as e:
                    if e.errno not in (errno.ENOENT, errno.ELOOP, errno.ENOTDIR):
                        raise


# ---------------------------------------------------------------------- which tar members a format allows
CHECKPOINT = "checkpoint archive"  # config.dump, spec.dump, checkpoint/ images, rootfs-diff.tar, ...
ROOTFS_DIFF = "rootfs-diff.tar"  # a container's changed files: every file type a root filesystem has


@dataclass
class MemberRules:
    """The members of one tar stream, checked in order against what its format allows.

    ``CHECKPOINT``: regular files and directories only (CRIU images, JSON, nested tars).
    ``ROOTFS_DIFF``: regular files, directories, symlinks, hard links, fifos and device nodes
    (a root filesystem may hold them, and the runtime creates them inside the container's root);
    a hard link only to an earlier regular member; no member beneath a symlink of the same
    archive. (Parents need not be members: Podman leaves out directories of the image that only
    changed their content. A tenant cannot make an image directory a symlink without the symlink
    being a member; a parent that is a symlink in the *image* is the runtime's extraction to handle.)
    """

    kind: str
    context: str = ""
    files: set[str] = field(default_factory=set)
    dirs: set[str] = field(default_factory=set)
    links: set[str] = field(default_factory=set)  # symlinks this archive created

    def check(self, info: tarfile.TarInfo, name: str | None = None) -> str:
        """The member's clean path; ``Escape`` when the format does not allow it."""
        raw = info.name if name is None else name
        where = f"{self.context}{self.kind} member {raw!r}"
        rel = clean(raw, what=f"{self.context}{self.kind} member")
        if not rel:
            if info.isdir():
                return rel  # "./": the root directory itself
            raise Escape(f"{where}: names the root itself")
        head = rel.rpartition("/")[0]
        for parent in prefixes(head):
            if parent in self.links:
                raise Escape(f"{where}: lies beneath {parent!r}, a symlink this archive created")
        if self.kind == CHECKPOINT:
            if not (info.isfile() or info.isdir()):
                raise Escape(f"{where}: a {_type_name(info)}; a checkpoint archive holds only files and directories")
        else:
            self._check_rootfs(info, where)
        # a later member replaces an earlier one of the same name: what it is now counts
        self.files.discard(rel)
        self.dirs.discard(rel)
        self.links.discard(rel)
        if info.isdir():
            self.dirs.add(rel)
        elif info.issym():
            self.links.add(rel)
        elif info.isfile():
            self.files.add(rel)
        return rel

    def _check_rootfs(self, info: tarfile.TarInfo, where: str) -> None:
        if info.islnk():
            target = clean(info.linkname, what=f"{where}: hard link target")
            if target not in self.files:
                raise Escape(
                    f"{where}: a hard link to {info.linkname!r}, not to an earlier regular file of the archive"
                )
        elif not (info.isfile() or info.isdir() or info.issym() or info.ischr() or info.isblk() or info.isfifo()):
            raise Escape(f"{where}: a {_type_name(info)}, which a root filesystem diff does not hold")


def prefixes(path: str) -> Iterator[str]:
    """ "a/b/c" → "a", "a/b", "a/b/c"."""
    if not path:
        return
    parts = path.split("/")
    for i in range(1, len(parts) + 1):
        yield "/".join(parts[:i])


def _type_name(info: tarfile.TarInfo) -> str:
    names = {
        tarfile.SYMTYPE: "symlink",
        tarfile.LNKTYPE: "hard link",
        tarfile.CHRTYPE: "character device",
        tarfile.BLKTYPE: "block device",
        tarfile.FIFOTYPE: "fifo",
        tarfile.CONTTYPE: "contiguous file",
    }
    return names.get(info.type, f"member of type {info.type!r}")
