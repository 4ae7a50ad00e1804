"""``drsvc mount``: points as a read-only file system (FUSE, through mfusepy).

Layout (one point, or every point of a desktop as dated directories, like ``restic mount``)::

    DIR/volume/<objects>          the volume's objects ("/" in a name makes directories)
    DIR/rootfs/<files>            the checkpoint's root filesystem changes, when recorded
    DIR/2026-12-06T05:00:00Z/...  (desktop mounts) one directory per point, oldest first
    DIR/latest -> <newest>

Names are the safe paths of ``drsvc.granular.names`` (hostile names cannot leave the mount or
collide). Nothing is read at mount time but the catalog; a point's manifest is fetched when its
directory is first entered (a few are kept), and file data is fetched chunk by chunk on ``read``
through a bounded ``ChunkCache`` with read-ahead for sequential readers. Data comes from the hot
chunk store when the point is hot, else from the cold one.

``MountView`` is the file system as plain methods (unit-testable without FUSE); ``serve`` runs it
with mfusepy in the foreground. libfuse handles SIGINT/SIGTERM/SIGHUP itself (mfusepy hands it
SIGINT), leaves its loop and unmounts; ``serve`` then checks the directory is no longer a mount
point and unmounts with ``fusermount3 -u`` if libfuse could not.
"""

from __future__ import annotations

import collections
import errno
import itertools
import os
import shutil
import signal
import stat
import subprocess
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from drsvc import clock
from drsvc.errors import BackendError, DrsvcError, InvalidInput
from drsvc.granular import listing, names
from drsvc.granular.listing import ObjectEntry, RootfsFile
from drsvc.granular.reader import ChunkCache, PointSource, StreamSlicer

LATEST = "latest"
VOLUME_DIR = "volume"
ROOTFS_DIR = "rootfs"
KEEP_VIEWS = 8  # points whose manifests and trees stay loaded in a desktop mount


def _enoent() -> OSError:
    return OSError(errno.ENOENT, os.strerror(errno.ENOENT))


def _ns(seconds: float) -> int:
    return int(seconds * 1_000_000_000)


def dated_names(points: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Directory name -> point, oldest first: its time to the second, plus its id's tail when two share one."""
    ordered = sorted(points, key=lambda p: (p["taken_at"], p["id"]))
    base = [p["taken_at"][:19] + "Z" for p in ordered]
    counts = collections.Counter(base)
    out: dict[str, dict[str, Any]] = {}
    for name, p in zip(base, ordered, strict=True):
        if counts[name] > 1:
            name = f"{name}-{p['id'].rsplit('-', 1)[-1]}"
        out[names.component(name)] = p
    return out


@dataclass
class _File:
    """An open-able file: a byte range of one of the point's streams."""

    source: PointSource
    stream: str  # volume | checkpoint
    offset: int
    size: int
    mtime_ns: int
    mode: int = 0o444


class PointView:
    """One point as a tree: ``volume/`` (its objects) and ``rootfs/`` (root filesystem changes, if recorded)."""

    def __init__(self, source: PointSource) -> None:
        self.source = source
        taken = _ns(clock.from_iso(source.point["taken_at"]).timestamp())
        self.taken_ns = taken
        entries = listing.objects(source.manifest)
        self.volume: names.Tree[ObjectEntry] = names.Tree((e.name, e) for e in entries)
        rootfs = listing.rootfs(source.manifest)
        self.rootfs: names.Tree[RootfsFile] | None = None
        self.rootfs_dirs: dict[tuple[str, ...], RootfsFile] = {}
        if rootfs.recorded:
            by_path = {f.path: f for f in rootfs.files}
            shown = []
            for f in rootfs.files:
                if f.type == "dir":
                    self.rootfs_dirs[tuple(names.parts(f.path))] = f
                elif f.type == "hardlink" and f.link and by_path.get(f.link.removeprefix("./")):
                    target = by_path[f.link.removeprefix("./")]
                    shown.append(
                        (
                            f.path,
                            RootfsFile(
                                f.path,
                                target.type,
                                target.size,
                                target.mode,
                                target.mtime,
                                target.uid,
                                target.gid,
                                target.link,
                                target.offset,
                            ),
                        )
                    )
                elif f.type in ("file", "symlink"):
                    shown.append((f.path, f))
            self.rootfs = names.Tree(shown)
            for parts in self.rootfs_dirs:  # empty directories of the diff exist too
                node = self.rootfs.root
                for piece in parts:
                    node = node.dirs.setdefault(piece, names.Node())

    def top(self) -> list[str]:
        return [VOLUME_DIR] + ([ROOTFS_DIR] if self.rootfs is not None else [])

    def resolve(self, parts: list[str]) -> Any:
        """A ``names.Node`` (directory), an entry (file/symlink), or raises ENOENT."""
        if not parts:
            return self
        head, rest = parts[0], parts[1:]
        tree: names.Tree[Any] | None = self.volume if head == VOLUME_DIR else None
        if head == ROOTFS_DIR:
            tree = self.rootfs
        if tree is None:
            raise _enoent()
        node = tree.lookup_dir(rest)
        if node is not None:
            return node
        parent = tree.lookup_dir(rest[:-1])
        if parent is None or rest[-1] not in parent.files:
            raise _enoent()
        return parent.files[rest[-1]]

    def file(self, entry: ObjectEntry | RootfsFile) -> _File:
        if isinstance(entry, ObjectEntry):
            mtime = _ns(clock.from_iso(entry.mtime).timestamp()) if entry.mtime else self.taken_ns
            return _File(self.source, "volume", entry.offset, entry.size, mtime)
        if entry.offset is None:
            raise OSError(errno.EIO, "no recorded data offset")
        return _File(self.source, "checkpoint", entry.offset, entry.size, _ns(entry.mtime), entry.mode & 0o555)


class MountView:
    """The mounted file system: one point, or every point of a desktop (dated directories)."""

    use_ns = True  # mfusepy: times in nanoseconds

    def __init__(
        self,
        points: dict[str, dict[str, Any]] | None,
        opener: Callable[[dict[str, Any]], PointSource],
        cache: ChunkCache,
        *,
        single: PointSource | None = None,
    ) -> None:
        self.points = points or {}
        self.opener = opener
        self.cache = cache
        self.single = PointView(single) if single is not None else None
        self._views: collections.OrderedDict[str, PointView] = collections.OrderedDict()
        self._lock = threading.Lock()
        self._handles: dict[int, _File] = {}
        self._next = itertools.count(1)
        self.reads = 0

    # ---------------------------------------------------------------- resolution

    def _view(self, dirname: str) -> PointView:
        with self._lock:
            view = self._views.get(dirname)
            if view is not None:
                self._views.move_to_end(dirname)
                return view
        point = self.points.get(dirname)
        if point is None:
            raise _enoent()
        try:
            view = PointView(self.opener(point))
        except DrsvcError as e:
            raise OSError(errno.EIO, str(e)) from e
        with self._lock:
            self._views[dirname] = view
            while len(self._views) > KEEP_VIEWS:
                self._views.popitem(last=False)
        return view

    def _resolve(self, path: str) -> tuple[str, Any, PointView | None]:
        """(kind, thing, view): kind is root | latest | point | node | entry."""
        parts = [p for p in path.split("/") if p]
        if self.single is not None:
            found = self.single.resolve(parts)
            return (
                "point" if found is self.single else "node" if isinstance(found, names.Node) else "entry",
                found,
                self.single,
            )
        if not parts:
            return "root", None, None
        if parts[0] == LATEST and self.points:
            if len(parts) > 1:
                raise _enoent()
            return "latest", None, None
        view = self._view(parts[0])
        found = view.resolve(parts[1:])
        if found is view:
            return "point", view, view
        return ("node" if isinstance(found, names.Node) else "entry"), found, view

    # ---------------------------------------------------------------- operations

    def getattr(self, path: str, fh: int | None = None) -> dict[str, Any]:
        kind, thing, view = self._resolve(path)
        now = view.taken_ns if view else _ns(clock.now().timestamp())
        base = {"st_uid": os.getuid(), "st_gid": os.getgid(), "st_atime": now, "st_ctime": now, "st_mtime": now}
        if kind == "latest":
            target = self._latest()
            return {**base, "st_mode": stat.S_IFLNK | 0o444, "st_nlink": 1, "st_size": len(target)}
        if kind in ("root", "point", "node"):
            return {**base, "st_mode": stat.S_IFDIR | 0o555, "st_nlink": 2, "st_size": 0}
        assert view is not None
        if isinstance(thing, RootfsFile) and thing.type == "symlink":
            link = thing.link or ""
            return {**base, "st_mode": stat.S_IFLNK | 0o444, "st_nlink": 1, "st_size": len(link.encode())}
        f = view.file(thing)
        return {
            **base,
            "st_mode": stat.S_IFREG | f.mode,
            "st_nlink": 1,
            "st_size": f.size,
            "st_mtime": f.mtime_ns,
            "st_blocks": (f.size + 511) // 512,
        }

    def readdir(self, path: str, fh: int = 0) -> list[str]:
        kind, thing, view = self._resolve(path)
        if kind == "root":
            return [".", "..", *self.points, *([LATEST] if self.points else [])]
        if kind == "point":
            assert view is not None
            return [".", "..", *view.top()]
        if kind == "node":
            return [".", "..", *sorted(thing.dirs), *sorted(thing.files)]
        raise OSError(errno.ENOTDIR, os.strerror(errno.ENOTDIR))

    def readlink(self, path: str) -> str:
        kind, thing, _view = self._resolve(path)
        if kind == "latest":
            return self._latest()
        if isinstance(thing, RootfsFile) and thing.type == "symlink":
            return thing.link or ""
        raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))

    def open(self, path: str, flags: int) -> int:
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS))
        kind, thing, view = self._resolve(path)
        if kind != "entry" or view is None:
            raise OSError(errno.EISDIR, os.strerror(errno.EISDIR))
        handle = next(self._next)
        with self._lock:
            self._handles[handle] = view.file(thing)
        return handle

    def read(self, path: str | None, size: int, offset: int, fh: int) -> bytes:
        f = self._handles.get(fh)
        if f is None:
            raise OSError(errno.EBADF, os.strerror(errno.EBADF))
        size = min(size, f.size - offset)
        if size <= 0:
            return b""
        source = f.source
        slicer: StreamSlicer = source.slicer(f.stream)
        try:
            data = self.cache.read(source.store(source.chunk_tier()), slicer, f.offset + offset, size)
        except DrsvcError as e:
            raise OSError(errno.EIO, str(e)) from e
        self.reads += 1
        return data

    def release(self, path: str | None, fh: int) -> int:
        with self._lock:
            self._handles.pop(fh, None)
        return 0

    def statfs(self, path: str) -> dict[str, Any]:
        return {"f_bsize": 4096, "f_frsize": 4096, "f_namemax": names.NAME_MAX}

    def _latest(self) -> str:
        return list(self.points)[-1]


# ---------------------------------------------------------------------- serving


def fusermount() -> str:
    """The unmount helper (Debian package ``fuse3``)."""
    for candidate in ("fusermount3", "fusermount"):
        found = shutil.which(candidate)
        if found:
            return found
    raise BackendError("neither fusermount3 nor fusermount is installed (Debian: apt-get install fuse3)")


def load_fuse() -> Any:
    """mfusepy (the ``mount`` extra), with an install hint when it or libfuse is missing."""
    from drsvc.optional import require

    try:
        return require("mfusepy", "mount")
    except OSError as e:  # mfusepy found, libfuse itself not loadable by ctypes
        raise BackendError(f"drsvc mount: libfuse not loadable (Debian: apt-get install fuse3): {e}") from None


def serve(view: MountView, directory: Path, *, fsname: str, threads: bool = True) -> None:
    """Mount ``view`` read-only at ``directory`` and serve it until unmounted or interrupted."""
    if not directory.is_dir():
        raise InvalidInput(f"mount point {directory} is not a directory")
    if os.path.ismount(directory):
        raise InvalidInput(f"{directory} is already a mount point")
    if not os.path.exists("/dev/fuse"):
        raise BackendError("/dev/fuse does not exist: FUSE is not available here (modprobe fuse)")
    helper = fusermount()
    mfusepy = load_fuse()
    try:
        with _libfuse_signals():
            _fuse(mfusepy, view, directory, threads, fsname)
    except RuntimeError as e:
        raise BackendError(f"mount {directory} failed (libfuse returned {e}); see the message above") from None
    finally:
        if os.path.ismount(directory):  # libfuse could not unmount (busy, killed helper): try once more
            subprocess.run([helper, "-u", "-z", str(directory)], capture_output=True, timeout=30, check=False)


def _fuse(mfusepy: Any, view: Any, directory: Path, threads: bool, fsname: str) -> None:
    mfusepy.FUSE(
        view,
        str(directory),
        foreground=True,
        nothreads=not threads,
        ro=True,
        default_permissions=True,
        fsname=fsname.replace(",", "_"),
        subtype="drsvc",
    )


@contextmanager
def _libfuse_signals() -> Iterator[None]:
    """SIGTERM and SIGHUP at their defaults while libfuse serves: it installs its own handlers
    (leave the loop, unmount) only over a default one, and drsvc's entry point has its own there
    (``drsvc.cli.signals``), which Python could not run while the loop blocks in C. mfusepy does
    the same for SIGINT."""
    previous: dict[signal.Signals, Any] = {}
    try:
        for sig in (signal.SIGTERM, signal.SIGHUP):
            previous[sig] = signal.signal(sig, signal.SIG_DFL)
    except ValueError:
        pass  # not the main thread (tests): nothing was installed here either
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
