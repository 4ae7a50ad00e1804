"""What a RADOS namespace's objects are, without their data: size, version, xattrs, omap.

The **version** is the object's RADOS user version: the OSD raises it with every change to the
object (data written, truncated or appended, an xattr or omap key set, the object deleted and
created again), from a per-PG counter that only grows, and a pool snapshot keeps the value the
object had when it was taken. Measured in the lab (pacific), at two pool snapshots of one
namespace: a same-size rewrite within the same second, an xattr set, an omap value changed, a
truncate, an append and a delete + re-create of the same bytes each changed it; an untouched
object kept it; a write after the second snapshot left that snapshot's value alone. Size misses
all same-size changes and the binding's mtime has one-second resolution (and the writing client
sets it), so neither is trusted: incremental capture compares versions.

The binding has no completion-level version and no compound stat/xattr read op, so a version is
read with a synchronous ``stat`` followed by ``get_last_version`` on an I/O context of the calling
thread's own (the value is per context). Those calls release the GIL: a few threads, each with its
context open on the same snapshot, pipeline them. Omap pages still come from an aio window on the
caller's context.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import threading
import time
from collections.abc import Callable, Generator, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from drsvc import ceph
from drsvc.errors import NotFound
from drsvc.volumes.base import MetadataBudget, VolumeObject, metadata_bytes

OMAP_PAGE = 1000
_BATCH = 32  # names per thread task: keeps the executor's own cost per object small


class ThreadContexts:
    """One I/O context per thread, opened on demand with ``open_io`` and all closed by ``close``."""

    def __init__(self, open_io: Callable[[], Any]) -> None:
        self._open = open_io
        self._local = threading.local()
        self._all: list[Any] = []
        self._lock = threading.Lock()

    def get(self) -> Any:
        io = getattr(self._local, "io", None)
        if io is None:
            io = self._open()
            self._local.io = io
            with self._lock:
                self._all.append(io)
        return io

    def close(self) -> None:
        with self._lock:
            for io in self._all:
                io.close()
            self._all.clear()


def _value(raw: bytes | None) -> bytes:
    """An omap value as the binding hands it back: an empty one comes as None (a tenant writes it;
    ``bytes(None)`` raised a TypeError out of every live read: restore --verify, each drill)."""
    return b"" if raw is None else bytes(raw)


class MetadataScan:
    """Reads object metadata of one namespace as one context (a snapshot, or head) sees it."""

    def __init__(self, open_io: Callable[[], Any], url: str, where: str, *, window: int, threads: int) -> None:
        self.url = url
        self.where = where
        self.window = max(1, window)
        self.threads = max(1, threads)
        self._contexts = ThreadContexts(open_io)
        self.budget = MetadataBudget(url + where)

    def close(self) -> None:
        self._contexts.close()

    # ------------------------------------------------------------ per-thread reads
    def _stat(self, name: str) -> tuple[int, int, int | None] | None:
        """(size, version, mtime) of ``name``, None when absent."""
        io = self._contexts.get()
        try:
            with ceph.ceph_errors(f"stat {self.url}/{name}{self.where}"):
                size, mtime = io.stat(name)
                version = int(io.get_last_version())
        except NotFound:
            return None
        return int(size), version, int(time.mktime(mtime)) if mtime is not None else None

    def _stat_xattrs(self, name: str) -> tuple[int, int, int | None, dict[str, bytes]] | None:
        stat = self._stat(name)
        if stat is None:
            return None
        io = self._contexts.get()
        try:
            with ceph.ceph_errors(f"read xattrs of {self.url}/{name}{self.where}"):
                xattrs = {k: bytes(v) for k, v in io.get_xattrs(name)}
        except NotFound:  # removed between stat and getxattrs (live volume only)
            return None
        return *stat, xattrs

    def _batches(self, names: list[str], work: Callable[[str], Any]) -> Iterator[tuple[str, Any]]:
        """``work(name)`` for every name on the threads, results in input order."""

        def batch(chunk: list[str]) -> list[tuple[str, Any]]:
            return [(name, work(name)) for name in chunk]

        chunks = [names[i : i + _BATCH] for i in range(0, len(names), _BATCH)]
        with ThreadPoolExecutor(self.threads, thread_name_prefix="drsvc-stat") as pool:
            for done in pool.map(batch, chunks):
                yield from done

    # ------------------------------------------------------------ what callers use
    def stamps(self, names: list[str]) -> list[VolumeObject]:
        """Name, size and version of each name that exists here (no xattrs, no omap), in input order."""
        out = []
        for name, stat in self._batches(names, self._stat):
            if stat is not None:
                out.append(VolumeObject(name, stat[0], version=stat[1], mtime=stat[2]))
        return out

    def objects(self, io: Any, names: list[str]) -> list[VolumeObject]:
        """Full metadata (size, version, xattrs, omap) of each name that exists here, in input order.

        Omap pages come from an aio window on ``io`` (the caller's context, same view) while the
        threads stat and read xattrs.
        """
        return list(self.iter_objects(io, names))

    def iter_objects(self, io: Any, names: list[str]) -> Generator[VolumeObject, None, None]:
        """``objects`` one by one as the threads finish them, so a reader of their data can start at once."""
        omaps = self._omaps(io, names)
        try:
            for name, meta in self._batches(names, self._stat_xattrs):
                omap = next(omaps)
                if meta is None or omap is None:
                    continue
                size, version, mtime, xattrs = meta
                self.budget.take(name, xattrs, omap)
                yield VolumeObject(name, size, xattrs, omap, mtime=mtime, version=version)
            for _ in omaps:  # drain (the generator closes its window)
                pass
        finally:
            omaps.close()

    def _omaps(self, io: Any, names: list[str]) -> Generator[dict[str, bytes] | None, None, None]:
        """Each name's omap (None when absent), in input order, through an aio window."""
        inflight: collections.deque[tuple[str, Any, Any, Any]] = collections.deque()

        def submit(name: str) -> None:
            op = io.create_read_op()
            try:
                with ceph.ceph_errors(f"read omap of {self.url}/{name}{self.where}"):
                    it, _ = io.get_omap_vals(op, "", "", OMAP_PAGE)
                    comp = io.operate_aio_read_op(op, name)
            except BaseException:
                op.release()
                raise
            inflight.append((name, op, it, comp))

        def reap() -> dict[str, bytes] | None:
            name, op, it, comp = inflight.popleft()
            try:
                ceph.wait(comp)
                rv = comp.get_return_value()
                if rv == -errno.ENOENT:
                    return None
                if rv < 0:
                    raise ceph.rv_error(f"read omap of {self.url}/{name}{self.where}", rv)
                with ceph.ceph_errors(f"read omap of {self.url}/{name}{self.where}"):  # keys decode here
                    omap = {k: _value(v) for k, v in it}
            finally:
                op.release()
            if len(omap) >= OMAP_PAGE:
                omap = self._omap_rest(io, name, omap)
            return omap

        try:
            for name in names:
                submit(name)
                if len(inflight) >= self.window:
                    yield reap()
            while inflight:
                yield reap()
        finally:
            while inflight:  # after an error: wait for every completion still in flight
                _name, op, _it, comp = inflight.popleft()
                with contextlib.suppress(Exception):  # already failing: the first error is the one to report
                    ceph.wait(comp)
                op.release()

    def _omap_rest(self, io: Any, name: str, omap: dict[str, bytes]) -> dict[str, bytes]:
        rados = ceph.rados_module()
        after = max(omap)
        held = metadata_bytes(omap)  # this object's xattrs are counted once all of it is in (``take``)
        while True:
            self.budget.check(name, held)
            with ceph.ceph_errors(f"read omap of {self.url}/{name}{self.where}"), rados.ReadOpCtx() as op:
                it, _ = io.get_omap_vals(op, after, "", OMAP_PAGE)
                io.operate_read_op(op, name)
                page = [(k, _value(v)) for k, v in it]
            omap.update(page)
            held += sum(len(k.encode()) + len(v) for k, v in page)
            if len(page) < OMAP_PAGE:
                return omap
            after = page[-1][0]
