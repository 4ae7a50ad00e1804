"""Pool snapshots of a Ceph pool, the snapshot scope of every ``rados://POOL/…`` volume.

A pool snapshot preserves a write only if the PG that takes it already has the osdmap with the
snapshot; writes from other clients right after ``create_snap`` can slip through. ``create``
therefore returns only after an op at the new epoch reached every PG (see ``_settle``). A pool
holds pool snapshots or self-managed (RBD) snapshots, never both: a pool used by RBD images
cannot take pool snapshots (EINVAL), reported as such.
"""

from __future__ import annotations

import builtins
import collections
import errno
import json
import uuid
from collections.abc import Iterable
from datetime import UTC
from typing import Any

from drsvc import ceph
from drsvc.errors import BackendError, InvalidInput, NotFound
from drsvc.volumes import base, rados_odd
from drsvc.volumes.base import (
    SnapshotInfo,
)
from drsvc.volumes.rados_io import _NAMESPACE, _POOL, SCHEME, _drain, _ignore, _ioctx, _lookup_snap

_SETTLE_PER_PG = 16
_SETTLE_NAMESPACE = "drsvc.snapshot-settle"  # only stat'ed, never written


class RadosPoolSnapshots:
    """Pool snapshots of one Ceph pool (the snapshot scope of every ``rados://POOL/…`` volume)."""

    def __init__(
        self, pool: str, *, conffile: str | None = None, keyring: str | None = None, name: str | None = None
    ) -> None:
        if not _POOL.match(pool or ""):
            raise InvalidInput(f"bad Ceph pool name {pool!r}")
        self.pool = pool
        self.scope = f"{SCHEME}://{pool}"
        self._conn = {"conffile": conffile, "keyring": keyring, "name": name}

    def create(self, name: str) -> int:
        """Take pool snapshot ``name`` now; return its id once every PG honours it (~20 ms in the lab)."""
        rados = ceph.rados_module()
        io = _ioctx(self.pool, self._conn)
        try:
            try:
                io.create_snap(name)
            except rados.ObjectExists as e:
                raise BackendError(f"pool snapshot {name!r} already exists in pool {self.pool}") from e
            except rados.Error as e:
                if getattr(e, "errno", None) == errno.EINVAL:
                    raise BackendError(
                        f"pool {self.pool} refuses pool snapshots ({e}): it holds self-managed (RBD) "
                        "snapshots, and a pool can have one kind or the other, never both"
                    ) from e
                raise ceph.error(f"create pool snapshot {name!r} in pool {self.pool}", e) from e
            snap_id = _lookup_snap(io, self.pool, name)
            self._settle(io)
            return snap_id
        finally:
            io.close()

    def _settle(self, io: Any) -> None:
        """Return only once every PG of the pool applies the new snapshot to incoming writes.

        The OSD copies-on-write using its PG's own osdmap: a write that reaches a PG still on the
        previous epoch is not preserved by the snapshot (seen in the lab: ~1 % of writes issued
        right after ``create_snap`` by another client). An op sent at the new epoch makes its PG
        catch up first, so: fetch the latest map, then stat ``_SETTLE_PER_PG`` x pg_num random
        names (every PG is hit with near certainty: P(miss) ~ pg_num * e^-16). ~6 ms for 8 PGs.
        """
        handle = ceph.cluster(**self._conn)
        with ceph.ceph_errors(f"wait for the osdmap of pool {self.pool}"):
            handle.wait_for_latest_osdmap()
            rv, out, err = handle.mon_command(
                json.dumps({"prefix": "osd pool get", "pool": self.pool, "var": "pg_num", "format": "json"}),
                b"",
            )
        if rv != 0:
            raise BackendError(f"read pg_num of pool {self.pool}: {err or rv}")
        probes = _SETTLE_PER_PG * int(json.loads(out)["pg_num"])
        io.set_namespace(_SETTLE_NAMESPACE)
        inflight: collections.deque[Any] = collections.deque()
        salt = uuid.uuid4().hex
        try:
            for i in range(probes):
                with ceph.ceph_errors(f"settle pool snapshot of {self.pool}"):
                    inflight.append(io.aio_stat(f"{salt}.{i}", _ignore))
                if len(inflight) >= 256:
                    ceph.wait(inflight.popleft())
            while inflight:
                ceph.wait(inflight.popleft())
        finally:
            _drain(inflight, ceph.wait)

    def remove(self, name: str) -> None:
        """Remove the pool snapshot ``name``; a missing one is fine, in a missing pool too.

        A backup records its pool snapshot before it asks Ceph for it (so a killed run's can be
        found), also when the pool does not exist; prune and cleanup then remove that record.
        """
        rados = ceph.rados_module()
        try:
            io = _ioctx(self.pool, self._conn)
        except NotFound:
            return  # no pool, no snapshot in it
        try:
            io.remove_snap(name)
        except rados.ObjectNotFound:
            pass
        except rados.Error as e:
            raise ceph.error(f"remove pool snapshot {name!r} from pool {self.pool}", e) from e
        finally:
            io.close()

    def lookup(self, name: str) -> int:
        """The id of the pool snapshot ``name``; ``NotFound`` if it does not exist."""
        io = _ioctx(self.pool, self._conn)
        try:
            return _lookup_snap(io, self.pool, name)
        finally:
            io.close()

    def list(self) -> list[SnapshotInfo]:
        """Every pool snapshot of the pool (drsvc's and others'), oldest first."""
        io = _ioctx(self.pool, self._conn)
        try:
            with ceph.ceph_errors(f"list pool snapshots of {self.pool}"):
                snaps = [
                    # the binding returns naive local time (minute resolution seen in pacific)
                    SnapshotInfo(s.name, int(s.snap_id), s.get_timestamp().astimezone(UTC))
                    for s in io.list_snaps()
                ]
        finally:
            io.close()
        return sorted(snaps, key=lambda s: s.snap_id)

    def names_by_volume(self, urls: Iterable[str]) -> dict[str, builtins.list[str]]:
        """The object names of each ``rados://POOL/NAMESPACE`` volume of this pool, from ONE listing.

        RADOS lists a namespace by scanning every object of the pool, so one pass over all
        namespaces costs about what one namespace does; a backup batch takes one after its pool
        snapshot instead of one per desktop. The names are exactly what each volume's own listing
        gives: live objects plus those deleted since a snapshot that still holds them (listings
        ignore the read snapshot), so a listing taken after a snapshot names everything the
        snapshot holds, and readers stat each name at the snapshot and drop those absent there.
        Sorted; every URL is a key (an empty list when its namespace holds nothing), but one whose
        namespace holds more than ``VOLUME_OBJECTS_MAX`` objects, an object with a locator key or a
        name that is not UTF-8 (its desktop's own listing fails, naming it). One URL: its namespace
        is listed alone (the same scan, only its names sent back).
        """
        prefix = f"{SCHEME}://{self.pool}/"
        by_namespace: dict[str, str] = {}
        for url in urls:
            namespace = url.removeprefix(prefix)
            if not url.startswith(prefix) or not _NAMESPACE.match(namespace):
                raise InvalidInput(f"volume {url!r} is not a namespace of pool {self.pool} ({prefix}NAMESPACE)")
            by_namespace[namespace] = url
        try:
            return self._names_by_namespace(by_namespace)
        except ceph.NotUtf8Name:
            # the binding's listing stops at the first such name in any namespace of the pool: list
            # again through the C API (names as bytes), where it drops its own namespace alone
            # (about twice the binding's time: 15 µs an object against 8 in the lab), rather than
            # make every desktop of the batch scan the pool for its own
            listed = rados_odd.names_by_namespace(
                self._conn, self.pool, set(by_namespace), bound=base.VOLUME_OBJECTS_MAX
            )
            if listed is None:
                raise
            return {by_namespace[ns]: names for ns, names in listed.items()}

    def _names_by_namespace(self, by_namespace: dict[str, str]) -> dict[str, builtins.list[str]]:
        """``names_by_volume`` through the binding's listing (URL of each namespace in ``by_namespace``)."""
        found: dict[str, set[str]] = {ns: set() for ns in by_namespace}
        if found:
            rados = ceph.rados_module()
            io = _ioctx(self.pool, self._conn)
            try:
                # One namespace: the OSDs scan the same objects either way, but only its own come
                # back (not every desktop's of the pool, each turned into a Python object here).
                io.set_namespace(next(iter(found)) if len(found) == 1 else rados.LIBRADOS_ALL_NSPACES)
                with ceph.ceph_errors(f"list the objects of pool {self.pool}"):
                    for obj in io.list_objects():
                        names = found.get(obj.nspace)
                        if names is not None and obj.locator_key:
                            # read by name alone it would look absent: its desktop lists its own, and fails
                            del found[obj.nspace]
                        elif names is not None:
                            names.add(obj.key)
                            if len(names) > base.VOLUME_OBJECTS_MAX:
                                # no names for it: its desktop lists its own namespace, and fails there
                                del found[obj.nspace]
            finally:
                io.close()
        return {by_namespace[ns]: sorted(names) for ns, names in found.items()}


def snapshots_from_scope(scope: str, **conn: Any) -> RadosPoolSnapshots:
    """``rados://POOL`` -> that pool's snapshots."""
    prefix = f"{SCHEME}://"
    pool = scope.removeprefix(prefix)
    if not scope.startswith(prefix) or not pool or "/" in pool:
        raise InvalidInput(f"malformed snapshot scope {scope!r}: expected {prefix}POOL")
    return RadosPoolSnapshots(pool, **conn)


def create_pool_snapshot(pool: str, name: str, **conn: Any) -> int:
    """Take pool snapshot ``name`` of ``pool``; return its snap id."""
    return RadosPoolSnapshots(pool, **conn).create(name)


def remove_pool_snapshot(pool: str, name: str, **conn: Any) -> None:
    """Remove pool snapshot ``name`` of ``pool``; a missing one is fine."""
    RadosPoolSnapshots(pool, **conn).remove(name)


def list_pool_snapshots(pool: str, **conn: Any) -> list[SnapshotInfo]:
    """(name, snap_id, created) of every pool snapshot of ``pool``, oldest first."""
    return RadosPoolSnapshots(pool, **conn).list()
