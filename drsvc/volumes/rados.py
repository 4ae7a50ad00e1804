"""``rados://POOL/NAMESPACE``: one desktop's data as one RADOS namespace; snapshots are pool snapshots.

What librados actually does (pacific, measured in the lab) and how this module copes:

* ``list_objects()`` ignores ``set_read``: it lists live objects *plus* those deleted since any
  snapshot that still holds them (and, after a snapshot is removed, until the OSD has trimmed it).
  A snapshot's exact content is therefore: list, then ``stat`` every name at the snap and keep
  those found; the live content likewise needs a ``stat`` at head.
* Round trips are pipelined: stat, omap and data reads use librados aio with a bounded window
  (objects and bytes in flight). The binding has no aio for ``get_xattrs`` and ``snap_rollback``,
  but its sync calls release the GIL, so those run on a few threads beside the aio stream.
* A write replaces an object whole in one compound op — ``remove`` (FAILOK) or an exclusive
  create + ``write_full`` + xattrs + omap — so no stale xattr or omap key survives, without a read
  first (``drsvc.volumes.rados_write``: data past the op's first 32 MiB follows as ``aio_write`` at
  explicit offsets; ops on one object keep their order).
* ``snap_rollback(oid, snap)`` restores data, xattrs and omap and brings back an object deleted
  since the snap; on an object absent at the snap it deletes it.
* A pool snapshot preserves a write only if the PG that takes it already has the osdmap with the
  snapshot; writes from other clients right after ``create_snap`` can slip through. ``create``
  therefore returns only after an op at the new epoch reached every PG (see ``_settle``).
* ``aio_read`` of an empty object hands back its whole (uninitialised) buffer: trim to the
  completion's return value.
* A pool holds pool snapshots or self-managed (RBD) snapshots, never both: a pool used by RBD
  images cannot take pool snapshots (EINVAL), reported as such.

Opening a volume does not connect; the first operation does (through ``drsvc.ceph``).

The pieces: this module (URLs and ``RadosVolume``), ``drsvc.volumes.rados_snapshots`` (pool
snapshots, re-exported here), ``drsvc.volumes.rados_io`` (shared librados helpers),
``drsvc.volumes.rados_scan`` (reading object metadata: which reader, ``rados_stamps``' compound
aio ops through the C API or ``rados_meta``'s threads), ``drsvc.volumes.rados_window`` (data reads
at a snapshot), ``drsvc.volumes.rados_write`` (whole-object writes), ``drsvc.volumes.rados_odd``
(removing what the binding cannot address: a locator key, a name that is not UTF-8).
"""

from __future__ import annotations

import collections
import errno
from collections.abc import Generator, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from drsvc import ceph, faults
from drsvc.errors import IntegrityError, InvalidInput, NotFound
from drsvc.volumes import rados_odd, rados_removal
from drsvc.volumes.base import (
    READ_SIZE,
    ObjectStream,
    VolumeObject,
    digest_streams,
)
from drsvc.volumes.rados_io import (
    _NAMESPACE,
    _POOL,
    SCHEME,
    _drain,
    _ioctx,
    _lookup_snap,
    _rv_error,
)
from drsvc.volumes.rados_scan import NamespaceScanner, list_names
from drsvc.volumes.rados_snapshots import (
    RadosPoolSnapshots,
    create_pool_snapshot,
    list_pool_snapshots,
    remove_pool_snapshot,
    snapshots_from_scope,
)
from drsvc.volumes.rados_window import ReadWindow
from drsvc.volumes.rados_write import WriteWindow

__all__ = [
    "SCHEME",
    "RadosPoolSnapshots",
    "RadosVolume",
    "create_pool_snapshot",
    "from_url",
    "list_pool_snapshots",
    "parse_url",
    "remove_pool_snapshot",
    "snapshots_from_scope",
]


# ---------------------------------------------------------------- URLs and names
def parse_url(url: str) -> tuple[str, str]:
    """``rados://POOL/NAMESPACE`` -> (pool, namespace); else ``InvalidInput`` naming the URL."""
    prefix = f"{SCHEME}://"
    rest = url[len(prefix) :] if isinstance(url, str) and url.startswith(prefix) else None
    pool, _, namespace = (rest or "").partition("/")
    if rest is None or not _POOL.match(pool) or not _NAMESPACE.match(namespace):
        raise InvalidInput(
            f"malformed volume URL {url!r}: expected rados://POOL/NAMESPACE "
            "(pool: letters, digits, _ . -; namespace: letters, digits, _ . @ + = : -; both required)"
        )
    return pool, namespace


def from_url(url: str, **options: Any) -> RadosVolume:
    """Open ``rados://POOL/NAMESPACE``; options: conffile, keyring, name, window, window_bytes, threads."""
    pool, namespace = parse_url(url)
    return RadosVolume(pool, namespace, **options)


# ---------------------------------------------------------------- the volume
class RadosVolume:
    """One RADOS namespace of a pool, read at pool snapshots or live, rolled back, written, purged."""

    def __init__(
        self,
        pool: str,
        namespace: str,
        *,
        conffile: str | None = None,
        keyring: str | None = None,
        name: str | None = None,
        window: int = 64,
        window_bytes: int = 64 * 1024 * 1024,
        threads: int = 8,
    ) -> None:
        self.url = f"{SCHEME}://{pool}/{namespace}"
        parse_url(self.url)
        self.pool = pool
        self.namespace = namespace
        self.scope = f"{SCHEME}://{pool}"
        self._conn = {"conffile": conffile, "keyring": keyring, "name": name}
        self._window = max(1, window)
        self._window_bytes = max(READ_SIZE, window_bytes)
        self._threads = max(1, threads)
        self._head: Any = None
        self._scans = NamespaceScanner(
            self._conn, pool, namespace, self.url, self._open, window=self._window, threads=self._threads
        )

    def __repr__(self) -> str:
        return f"RadosVolume({self.url!r})"

    # ------------------------------------------------------------ handles
    def _open(self, snap_id: int | None = None) -> Any:
        io = _ioctx(self.pool, self._conn)
        io.set_namespace(self.namespace)
        if snap_id is not None:
            io.set_read(snap_id)
        return io

    def _head_io(self) -> Any:
        if self._head is None:
            self._head = self._open()
        return self._head

    def _snap_io(self, snap_name: str) -> tuple[Any, int]:
        """A context reading at pool snapshot ``snap_name``, and the snapshot's id."""
        io = self._open()
        try:
            snap_id = _lookup_snap(io, self.pool, snap_name)
            io.set_read(snap_id)
        except BaseException:
            io.close()
            raise
        return io, snap_id

    def close(self) -> None:
        """Close the live I/O context (the cluster connection stays cached for the process)."""
        io, self._head = self._head, None
        if io is not None:
            io.close()

    def snapshots(self) -> RadosPoolSnapshots:
        """The pool snapshots of this volume's pool."""
        return RadosPoolSnapshots(self.pool, **self._conn)

    # ------------------------------------------------------------ listing
    def _names(self, io: Any) -> list[str]:
        """The live names, for a restore or purge that removes what is not wanted: objects the
        binding cannot address (``rados_odd``: never in a point) are removed here first."""
        odd: list[str] = []
        names = list_names(io, self.url, odd=odd)
        if odd:
            rados_odd.remove(self._conn, self.pool, self.namespace, what=self.url, seen=odd)
        return names

    # ------------------------------------------------------------ data
    def _stream(self, io: Any, objects: Iterable[VolumeObject], where: str, exact_size: bool) -> Iterator[ObjectStream]:
        """Yield (object, chunks) in input order: the first ≤4 MiB of each comes from an aio window."""
        inflight: collections.deque[tuple[VolumeObject, int, Any, dict[str, bytes]]] = collections.deque()
        inflight_bytes = 0

        def ask(obj: VolumeObject) -> int:
            # live: one byte more than the stat said, so a short read proves the object is complete
            return min(obj.size if exact_size else obj.size + 1, READ_SIZE)

        def submit(obj: VolumeObject) -> None:
            nonlocal inflight_bytes
            want = ask(obj)
            slot: dict[str, bytes] = {}
            comp = None
            if want > 0:

                def on_read(comp: Any, data: bytes | None) -> None:
                    # the binding leaves its whole buffer (uninitialised) when a read returns 0 bytes
                    rv = comp.get_return_value()
                    if data is not None and rv >= 0:
                        slot["data"] = data[:rv]

                with ceph.ceph_errors(f"read {self.url}/{obj.name}{where}"):
                    comp = io.aio_read(obj.name, want, 0, on_read)
            inflight.append((obj, want, comp, slot))
            inflight_bytes += want

        def wait(entry: tuple[VolumeObject, int, Any, dict[str, bytes]]) -> None:
            if entry[2] is not None:
                ceph.wait(entry[2])

        def reap() -> ObjectStream:
            nonlocal inflight_bytes
            obj, want, comp, slot = inflight.popleft()
            inflight_bytes -= want
            first = b""
            if comp is not None:
                ceph.wait(comp)
                rv = comp.get_return_value()
                if rv == -errno.ENOENT:
                    raise NotFound(f"object {obj.name} not found in {self.url}{where}")
                if rv < 0:
                    raise _rv_error(f"read {self.url}/{obj.name}{where}", rv)
                first = slot.get("data", b"")
            return obj, self._rest(io, obj, first, want, where, exact_size)

        try:
            for obj in objects:
                while inflight and (len(inflight) >= self._window or inflight_bytes + ask(obj) > self._window_bytes):
                    yield reap()
                submit(obj)
            while inflight:
                yield reap()
        finally:
            _drain(inflight, wait)

    def _rest(
        self, io: Any, obj: VolumeObject, first: bytes, asked: int, where: str, exact_size: bool
    ) -> Iterator[bytes]:
        """The object's data: ``first`` (the aio window's read of ``asked`` bytes), then sync reads."""
        if first:
            yield first
        offset = len(first)
        if exact_size:  # at a snapshot: the size is known and final
            while offset < obj.size:
                with ceph.ceph_errors(f"read {self.url}/{obj.name}{where}"):
                    data = io.read(obj.name, min(READ_SIZE, obj.size - offset), offset)
                if not data:
                    break
                yield data
                offset += len(data)
            if offset != obj.size:
                raise IntegrityError(f"{self.url}/{obj.name}{where}: read {offset} bytes, stat said {obj.size}")
            return
        # live: the object may have changed since the stat; a short read is its end
        if asked and len(first) < asked:
            return
        while True:
            with ceph.ceph_errors(f"read {self.url}/{obj.name}{where}"):
                data = io.read(obj.name, READ_SIZE, offset)
            if data:
                yield data
            offset += len(data)
            if len(data) < READ_SIZE:
                return

    def _stat_one(self, io: Any, name: str, where: str) -> VolumeObject:
        try:
            with ceph.ceph_errors(f"stat {self.url}/{name}{where}"):
                size, _ = io.stat(name)
        except NotFound as e:
            raise NotFound(f"object {name} not found in {self.url}{where}") from e
        return VolumeObject(name, int(size))

    def _closing(self, io: Any, stream: Iterator[Any]) -> Iterator[Any]:
        try:
            yield from stream
        finally:
            io.close()

    # ------------------------------------------------------------ at a snapshot
    def objects_at(self, snap_name: str, names: list[str] | None = None) -> list[VolumeObject]:
        """The namespace's objects at pool snapshot ``snap_name`` (only ``names`` if given), sorted, with
        version, xattrs and omap; names absent at the snapshot are left out."""
        io, snap_id = self._snap_io(snap_name)
        try:
            return self._scans.objects(io, f" at snapshot {snap_name}", snap_id, names)
        finally:
            io.close()

    def stamps_at(self, snap_name: str, names: list[str] | None = None) -> list[VolumeObject]:
        """Every object at the snapshot with its size and version only (no xattrs, omap or data), sorted.

        One listing (none when ``names`` are given: ``RadosPoolSnapshots.names_by_volume``) and one
        stat per object: what incremental capture compares with the parent point
        (``drsvc.volumes.rados_meta`` says why the version is the thing to compare).
        """
        io, snap_id = self._snap_io(snap_name)
        try:
            return self._scans.stamps(io, f" at snapshot {snap_name}", snap_id, names)
        finally:
            io.close()

    def stamp_scope(self) -> str:
        """Where versions are comparable: this cluster (fsid) and pool (id); a re-created pool is another scope."""
        io = self._head_io()
        with ceph.ceph_errors(f"read the pool id of {self.pool}"):
            pool_id = io.get_pool_id()
            fsid = ceph.cluster(**self._conn).get_fsid()
        return f"rados:{fsid}:{pool_id}"

    def read_objects_at(self, snap_name: str, objects: Iterable[VolumeObject] | None = None) -> Iterator[ObjectStream]:
        """Yield (object, data chunks) at the snapshot in input order (default: ``objects_at``), pipelined.

        Without ``objects``, data reads start with the first objects the metadata scan has done,
        while it goes on with the rest (the object's metadata is final at a snapshot)."""
        io, snap_id = self._snap_io(snap_name)
        where = f" at snapshot {snap_name}"
        if objects is not None:
            window = ReadWindow(io, self.url, where, window=self._window, window_bytes=self._window_bytes)
            return self._closing(io, window.stream(objects))
        try:
            scan = self._scans.iter_objects(io, where, snap_id)
        except BaseException:
            io.close()
            raise
        return self._scanned(io, scan, where)

    def _scanned(self, io: Any, scan: Generator[VolumeObject, None, None], where: str) -> Iterator[ObjectStream]:
        """Data of the objects ``scan`` yields, read while it goes on; the scan (its threads, then their
        contexts), then ``io``, closed in that order at the end."""
        window = ReadWindow(io, self.url, where, window=self._window, window_bytes=self._window_bytes)
        try:
            yield from window.stream(scan)
        finally:
            try:
                scan.close()
            finally:
                io.close()

    def read_at(self, snap_name: str, name: str) -> Iterator[bytes]:
        """Stream one object's data at the snapshot in reads of ≤ 4 MiB; ``NotFound`` if absent there."""
        io, _ = self._snap_io(snap_name)
        where = f" at snapshot {snap_name}"
        try:
            obj = self._stat_one(io, name, where)
        except BaseException:
            io.close()
            raise
        return self._closing(io, self._rest(io, obj, b"", 0, where, exact_size=True))

    def digest_at(self, snap_name: str, like: Mapping[str, str] | None = None) -> dict[str, str]:
        """name -> ``object_digest`` of every object at the snapshot (forms as ``digest_streams``)."""
        return digest_streams(self.read_objects_at(snap_name), like)

    # ------------------------------------------------------------ live
    def objects_now(self) -> list[VolumeObject]:
        """The live objects of the namespace, sorted, with xattrs and omap."""
        return self._scans.objects(self._head_io(), "")

    def read_objects(self, objects: Iterable[VolumeObject] | None = None) -> Iterator[ObjectStream]:
        """Yield (object, data chunks) of live objects in input order (default: all), pipelined."""
        io = self._head_io()
        objs = self._scans.objects(io, "") if objects is None else objects
        return self._stream(io, objs, "", exact_size=False)

    def read(self, name: str) -> Iterator[bytes]:
        """Stream one live object's data in reads of ≤ 4 MiB; ``NotFound`` if it does not exist."""
        io = self._head_io()
        obj = self._stat_one(io, name, "")
        return self._rest(io, obj, b"", 0, "", exact_size=False)

    def stat(self, name: str) -> VolumeObject | None:
        """One live object with xattrs, omap and mtime (one stat, no listing); None when absent."""
        found = self._scans.objects(self._head_io(), "", names=[name])
        return found[0] if found else None

    def digests_now(self, like: Mapping[str, str] | None = None) -> dict[str, str]:
        """name -> ``object_digest`` of every live object (forms as ``digest_streams``)."""
        return digest_streams(self.read_objects(), like)

    # ------------------------------------------------------------ changing the live namespace
    def rollback_to(self, snap_name: str, keep: Iterable[str] | None = None) -> None:
        """Make the live namespace equal the snapshot: remove objects created since, roll back the rest.

        ``keep`` = the names at the snap when the caller knows them (a manifest); else they are
        listed here. Rollback restores data, xattrs and omap and brings deleted objects back.
        """
        rados = ceph.rados_module()
        io = self._head_io()
        _lookup_snap(io, self.pool, snap_name)  # NotFound before touching anything
        wanted = set(keep) if keep is not None else {o.name for o in self.objects_at(snap_name)}
        self._remove_many(io, [n for n in self._names(io) if n not in wanted])

        def roll(name: str) -> None:
            faults.point("mid-restore-volume")
            try:
                io.snap_rollback(name, snap_name)
            except rados.Error as e:
                raise ceph.error(f"roll {self.url}/{name} back to snapshot {snap_name}", e) from e

        # no aio rollback in the binding; its sync call releases the GIL, so threads pipeline it
        # (2000 objects in the lab: 4 threads 1.4 s, 8: 1.0 s, 16: 0.75 s — writes wait longer than reads)
        with ThreadPoolExecutor(2 * self._threads, thread_name_prefix="drsvc-rollback") as pool:
            for _ in pool.map(roll, sorted(wanted)):
                pass

    def write_objects(
        self,
        items: Iterable[ObjectStream],
        *,
        exact: bool = True,
        fresh: bool = False,
        created: set[str] | None = None,
        mark: str | None = None,
        whole: bool = False,
    ) -> int:
        """Write each (object, data chunks) whole — data, xattrs, omap replaced — pipelined; return the count.

        ``exact``: afterwards the namespace holds exactly these objects (others are removed).
        ``fresh``: the caller found the namespace empty; nothing is listed and every object is
        created exclusively (one that appeared since is never overwritten: the write fails).
        ``created``: gets the name of every object whose write went through, also when a later
        one fails (what a failed restore's teardown may remove, and nothing else).
        ``mark`` (with ``fresh``): the op that creates each object also sets ``WRITER_XATTR`` to it
        (``drsvc.volumes.rados_removal``: what cleanup after a kill -9 removes, and nothing else).
        ``whole``: each object up to ``WHOLE_MAX`` in one write op (atomic: a kill never leaves part
        of it, a reader never sees part of it); larger ones are written in pieces after the first op.
        A data stream whose length differs from ``object.size`` raises ``IntegrityError``.
        """
        io = self._head_io()
        with ThreadPoolExecutor(1, thread_name_prefix="drsvc-list") as pool:
            # what to remove afterwards is listed while the writes go on (listing a namespace scans
            # the pool: seconds in a large one); an object written meanwhile is in `written`, kept
            before = pool.submit(self._names_apart) if exact and not fresh else None
            written = self._write_all(
                io, items, fresh=fresh, created=created, mark=mark if fresh else None, whole=whole
            )
            if before is not None:
                self._remove_many(io, [n for n in before.result() if n not in written])
        return len(written)

    def _names_apart(self) -> list[str]:
        """``_names`` on a context of its own (for a thread beside the one using the head context)."""
        io = self._open()
        try:
            return self._names(io)
        finally:
            io.close()

    def _write_all(
        self,
        io: Any,
        items: Iterable[ObjectStream],
        *,
        fresh: bool = False,
        created: set[str] | None = None,
        mark: str | None = None,
        whole: bool = False,
    ) -> set[str]:
        """Write every object through the aio window (``WriteWindow``); the names written (``fresh``,
        ``created``, ``mark``, ``whole``: as in ``write_objects``)."""
        window = WriteWindow(
            io,
            self.url,
            window=self._window,
            window_bytes=self._window_bytes,
            fresh=fresh,
            created=created,
            mark=mark,
            whole=whole,
        )
        return window.write_all(items)

    def clone_from_snapshot(
        self,
        snap_name: str,
        target: str,
        objects: Iterable[VolumeObject] | None = None,
        *,
        fresh: bool = False,
        created: set[str] | None = None,
        mark: str | None = None,
    ) -> RadosVolume:
        """Copy the snapshot's content of this namespace into namespace ``target`` (made exact); return it.

        ``objects``: what the snapshot holds (names, sizes, xattrs, omap), when the caller knows it
        (a point's manifest, taken from this very snapshot); else every object is scanned first.
        ``fresh``: the caller found ``target`` empty (``write_objects``: not listed again, objects
        created exclusively). ``created``, ``mark``: as in ``write_objects``.
        """
        if target == self.namespace:
            raise InvalidInput(f"clone of {self.url} into itself: use rollback_to")
        clone = RadosVolume(
            self.pool,
            target,
            **self._conn,
            window=self._window,
            window_bytes=self._window_bytes,
            threads=self._threads,
        )
        clone.write_objects(
            self.read_objects_at(snap_name, objects), exact=True, fresh=fresh, created=created, mark=mark
        )
        return clone

    def purge(self) -> int:
        """Delete every live object of this namespace (drill teardown); return how many were removed."""
        io = self._head_io()
        odd: list[str] = []
        names = list_names(io, self.url, odd=odd)
        removed = rados_odd.remove(self._conn, self.pool, self.namespace, what=self.url, seen=odd) if odd else 0
        return removed + self._remove_many(io, names)

    def remove_objects(self, names: Iterable[str], *, marked: str | None = None) -> int:
        """Delete the named objects (absent ones are fine), nothing else; return how many were removed
        (``marked``: only those still carrying that writer mark, ``rados_removal.remove_marked``)."""
        if marked is not None:
            return rados_removal.remove_marked(self._head_io(), self.url, sorted(set(names)), marked)
        return self._remove_many(self._head_io(), sorted(set(names)))

    def unmark(self, names: Iterable[str]) -> int:
        """Take the writer mark off the named objects (``rados_removal.unmark``); return how many had it."""
        return rados_removal.unmark(self._head_io(), self.url, names, self._window)

    def _remove_many(self, io: Any, names: list[str]) -> int:
        return rados_removal.remove_many(io, self.url, names, self._window)
