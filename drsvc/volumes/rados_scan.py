"""Reading a RADOS namespace's object metadata (size, version, xattrs, omap) — which reader does it.

Two readers give the same results:

* ``drsvc.volumes.rados_stamps`` (librados' C API through ``ctypes``): at a pool snapshot, one aio
  op per object in a bounded window on one thread — a stat alone for stamps, a compound read op
  (stat + getxattrs + the first omap page; a longer omap read on in pages) for full metadata.
* ``drsvc.volumes.rados_meta.MetadataScan`` (the Python binding): a synchronous stat and getxattrs
  on a few threads, each with its own I/O context, and omap pages in an aio window. The fallback
  wherever the C API cannot be had (no ``librados.so.2``, a symbol missing, the connection
  refused), the live namespace (the C API reader works at snapshots only), and the streaming scan
  that feeds data reads while it goes on.

``RadosVolume`` asks a ``NamespaceScanner`` and never chooses a reader itself.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any

from drsvc import ceph, deadline
from drsvc.volumes import base, rados_stamps
from drsvc.volumes.base import VolumeObject
from drsvc.volumes.rados_meta import MetadataScan

ODD_SHOWN = 16  # a restore's listing keeps this many odd names to show (it may meet millions)


def list_names(io: Any, url: str, *, bounded: bool = False, odd: list[str] | None = None) -> list[str]:
    """Every object name ``io`` lists in its namespace, sorted, once each (``url`` names it in errors).

    At a snapshot the listing also holds names deleted since (``drsvc.volumes.rados`` says why): the
    readers leave out whatever is absent where they look. ``bounded``: past ``VOLUME_OBJECTS_MAX``
    names raise ``TooManyObjects`` (a capture's listings; a restore that removes what is extra
    must see every name, however many the desktop made).

    An object the binding cannot address (a locator key; a name or locator that is not UTF-8,
    which the binding cannot decode) raises ``LocatorKeyed`` or ``NotUtf8Name``: read by name
    alone it would look absent and be left out of a point without a word. ``odd`` (a restore's
    listings): such objects are left out instead and the first ``ODD_SHOWN`` put in it, shown escaped, for
    ``rados_odd.remove`` to remove through the C API.
    """
    names: set[str] = set()
    op = f"list {url}"
    with ceph.ceph_errors(op):
        listing = io.list_objects()
        while True:
            try:
                o = next(listing)
            except StopIteration:
                break
            except UnicodeDecodeError as e:
                if odd is None:
                    raise
                # the binding advanced past the object before decoding it: the listing goes on
                if len(odd) < ODD_SHOWN:
                    odd.append(bytes(e.object).decode("utf-8", "backslashreplace"))
                continue
            if o.locator_key:
                if odd is None:
                    raise ceph.locator_keyed(op, o.key, o.locator_key)
                if len(odd) < ODD_SHOWN:
                    odd.append(o.key)
                continue
            names.add(o.key)
            if len(names) % 1024 == 0:  # a long listing is many pages: a capture's deadline ends it
                deadline.check()
            if bounded and len(names) > base.VOLUME_OBJECTS_MAX:  # stop before the names cost more memory
                raise base.too_many_objects(url)
    return sorted(names)


class NamespaceScanner:
    """Metadata reads of one namespace, at a pool snapshot (its id) or live (``snap_id`` None).

    ``open_io(snap_id)`` opens a context on the namespace reading at ``snap_id`` (the threads'
    fallback opens one per thread); ``conn`` is the cluster connection's settings (conffile,
    keyring, name), which the C API reader uses for a connection of its own.
    """

    def __init__(
        self,
        conn: dict[str, Any],
        pool: str,
        namespace: str,
        url: str,
        open_io: Callable[[int | None], Any],
        *,
        window: int,
        threads: int,
    ) -> None:
        self._conn = conn
        self._pool = pool
        self._namespace = namespace
        self._url = url
        self._open = open_io
        self._window = window
        self._threads = threads

    def _on_threads(self, snap_id: int | None, where: str) -> MetadataScan:
        return MetadataScan(lambda: self._open(snap_id), self._url, where, window=self._window, threads=self._threads)

    def objects(
        self, io: Any, where: str, snap_id: int | None = None, names: list[str] | None = None
    ) -> list[VolumeObject]:
        """Metadata (size, version, xattrs, omap) of ``names`` (default: a listing) as ``io`` sees them,
        sorted by name; names absent there are left out.

        At a snapshot, one compound aio op per object (``rados_stamps.metadata``); the binding's
        threads where the C API cannot be had, and for the live namespace.
        """
        wanted = list_names(io, self._url, bounded=True) if names is None else sorted(set(names))
        if snap_id is not None:
            what = self._url + where
            fast = rados_stamps.metadata(self._conn, self._pool, self._namespace, snap_id, wanted, what=what)
            if fast is not None:
                return fast
        meta = self._on_threads(snap_id, where)
        try:
            return meta.objects(io, wanted)
        finally:
            meta.close()

    def stamps(self, io: Any, where: str, snap_id: int, names: list[str] | None = None) -> list[VolumeObject]:
        """Name, size and version (no xattrs, omap or data) of ``names`` (default: a listing) at
        snapshot ``snap_id``, sorted by name; names absent there are left out.

        Many aio stats on one thread (``rados_stamps.stamps``); the binding's threads where it cannot.
        """
        wanted = list_names(io, self._url, bounded=True) if names is None else sorted(set(names))
        fast = rados_stamps.stamps(self._conn, self._pool, self._namespace, snap_id, wanted, what=self._url + where)
        if fast is not None:
            return fast
        meta = self._on_threads(snap_id, where)
        try:
            return meta.stamps(wanted)
        finally:
            meta.close()

    def iter_objects(self, io: Any, where: str, snap_id: int | None) -> Generator[VolumeObject, None, None]:
        """Every listed object's metadata one by one as the threads finish it, so a reader of its data
        can start at once (metadata is final at a snapshot).

        The listing is made here, before the first object is asked for (its error is raised by
        this call). Closing the generator ends the scan's threads, then closes their contexts (a
        scan thread never outlives its context); ``io`` stays the caller's to close afterwards.
        """
        names = list_names(io, self._url, bounded=True)
        meta = self._on_threads(snap_id, where)
        return _closing(meta, meta.iter_objects(io, names))


def _closing(meta: MetadataScan, scan: Generator[VolumeObject, None, None]) -> Generator[VolumeObject, None, None]:
    try:
        yield from scan
    finally:
        try:
            scan.close()
        finally:
            meta.close()
