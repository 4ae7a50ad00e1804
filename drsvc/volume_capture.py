"""A desktop's volume at a pool snapshot into the hot store: read whole, or only what changed.

``VolumeCapture.capture`` returns the manifest's ``volume`` section and the stream reference.
With a usable parent point (the desktop's newest point with a hot copy, of the same volume, whose
objects carry versions of the same pool) it asks the snapshot only for each object's size and
version, takes unchanged groups of the parent's stream unread, and reads the rest
(``drsvc.incremental``); otherwise, and every ``capture.full_every``-th point, it reads everything.
Either way the section lists every object (name, size, version, digest, xattrs, omap) and says
how it was captured (``capture``: mode, parent, objects and bytes read and reused).
"""

from __future__ import annotations

import collections
import contextlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, cast

from drsvc import clock, deadline, incremental
from drsvc.catalog import Catalog
from drsvc.chunks import ChunkStore, Reuse, StreamRef
from drsvc.errors import DrsvcError
from drsvc.volumes.base import ObjectHasher, VersionedVolume, Volume, VolumeObject

MiB = 1 << 20


def object_entry(obj: VolumeObject, digest: str) -> dict[str, Any]:
    """One object as the manifest lists it."""
    return {
        "name": obj.name,
        "size": obj.size,
        "version": obj.version,
        "digest": digest,
        "mtime": clock.to_iso(datetime.fromtimestamp(obj.mtime, UTC)) if obj.mtime is not None else None,
        "xattrs": {k: v.hex() for k, v in sorted(obj.xattrs.items())},
        "omap": {k: v.hex() for k, v in sorted(obj.omap.items())},
    }


def versioned(volume: Volume) -> bool:
    """Whether the volume tells object versions (``VersionedVolume``; checked by its two methods, so a
    volume need not be a runtime-checkable ``Volume`` in every other respect)."""
    return callable(getattr(volume, "stamp_scope", None)) and callable(getattr(volume, "stamps_at", None))


def _stamps(
    volume: VersionedVolume, snap: str, names: list[str] | None, stamped: Mapping[str, VolumeObject] | None
) -> list[VolumeObject]:
    """``volume.stamps_at(snap, names)``, sorted by name; names in ``stamped`` (taken at the same
    snapshot, which never changes) are not stat'ed again. Without ``names`` the volume lists itself."""
    if names is None:
        return volume.stamps_at(snap)
    if not stamped:
        return volume.stamps_at(snap, names)
    wanted = set(names)
    rest = sorted(wanted - stamped.keys())
    found = [o for name, o in stamped.items() if name in wanted]
    return sorted(found + (volume.stamps_at(snap, rest) if rest else []), key=lambda o: o.name)


class _Entries:
    """The manifest's object list: entries of objects read (as they are read) and kept from the parent.

    An object's digest is taken on a thread of its own (the hash releases the GIL on large
    buffers), so the capture thread, which reads and cuts, does not hash every byte a second
    time itself: pieces go over in batches of ``batch`` bytes, at most ``window`` bytes waiting
    (memory stays bounded), and ``listed`` waits for the last. Use as a context manager.
    """

    def __init__(self, progress: Callable[[int], None], *, batch: int = 4 * MiB, window: int = 32 * MiB) -> None:
        self.by_name: dict[str, dict[str, Any] | Future[dict[str, Any]]] = {}
        self.progress = progress
        self.batch = batch
        self.window = window
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="drsvc-digest")
        self._pending: collections.deque[tuple[Future[Any], int]] = collections.deque()
        self._pending_bytes = 0

    def __enter__(self) -> _Entries:
        return self

    def __exit__(self, *exc: object) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def hashed(self, obj: VolumeObject, pieces: Iterable[bytes]) -> Iterator[bytes]:
        """Pass ``pieces`` through, then list the object with its digest (taken on the digest thread)."""
        hasher = ObjectHasher()
        batch: list[bytes] = []
        size = 0
        for piece in pieces:
            batch.append(piece)
            size += len(piece)
            if size >= self.batch:
                self._submit(size, _feed, hasher, batch)
                batch, size = [], 0
            self.progress(len(piece))
            yield piece
        self.by_name[obj.name] = self._submit(size, _finish, hasher, batch, obj)

    def _submit(self, size: int, fn: Callable[..., Any], *args: Any) -> Future[Any]:
        """Queue work for the digest thread (in order), first waiting while ``window`` bytes wait."""
        while self._pending and self._pending_bytes + size > self.window:
            done, n = self._pending.popleft()
            done.result()
            self._pending_bytes -= n
        future = self._pool.submit(fn, *args)
        self._pending.append((future, size))
        self._pending_bytes += size
        return future

    def objects(self, stream: Iterable[tuple[VolumeObject, Iterable[bytes]]]) -> Iterator[tuple[int, Iterator[bytes]]]:
        for obj, pieces in stream:
            deadline.check()  # the store thread's (``capture.deadline``): per object, empty ones too
            yield obj.size, self.hashed(obj, pieces)

    def listed(self, names: Iterable[str]) -> list[dict[str, Any]]:
        """The entries in this order (every name must have been read or kept); waits for the digests."""
        return [e.result() if isinstance(e, Future) else e for e in (self.by_name[n] for n in names)]


def _feed(hasher: ObjectHasher, pieces: list[bytes]) -> None:
    for piece in pieces:
        hasher.update(piece)


def _finish(hasher: ObjectHasher, pieces: list[bytes], obj: VolumeObject) -> dict[str, Any]:
    _feed(hasher, pieces)
    return object_entry(obj, hasher.finish(obj.xattrs, obj.omap))


class ParentFinder:
    """The point a desktop's next backup builds on: its newest complete point with a hot copy.

    Asks the catalog; a node agent's private catalog knows no points, so then the hot store's
    manifests are listed, once per run, and the newest of the desktop's is taken (every manifest
    in the hot store is a complete point with its chunks there).
    """

    def __init__(self, catalog: Catalog, hot: ChunkStore, *, skip: str) -> None:
        self.catalog = catalog
        self.hot = hot
        self.skip = skip  # the manifests' "desktop" that is no desktop (base images)
        self._listing: dict[str, str] | None = None

    def find(self, desktop: str) -> tuple[str, dict[str, Any]] | None:
        rows = self.catalog.query(
            "SELECT p.id FROM points p JOIN point_tiers t ON t.point_id = p.id AND t.tier = 'hot' "
            "WHERE p.desktop_id = ? AND p.status = 'complete' ORDER BY p.taken_at DESC, p.id DESC LIMIT 1",
            [desktop],
        )
        pid = rows[0]["id"] if rows else self._newest_in_store(desktop)
        if pid is None:
            return None
        try:
            return pid, self.hot.get_manifest(desktop, pid)
        except DrsvcError:  # gone or unreadable: capture everything rather than build on it
            return None

    def _newest_in_store(self, desktop: str) -> str | None:
        if self._listing is None:
            newest: dict[str, str] = {}
            for d, pid in self.hot.list_manifests():
                if d != self.skip and pid > newest.get(d, ""):  # point ids start with their time
                    newest[d] = pid
            self._listing = newest
        return self._listing.get(desktop)


class VolumeCapture:
    """Captures volumes into the hot store for one backup run (shared by its threads)."""

    def __init__(
        self,
        hot: ChunkStore,
        parents: ParentFinder,
        progress: Callable[[int], None] | None = None,
        *,
        timed: Callable[[str], contextlib.AbstractContextManager[None]] | None = None,
    ) -> None:
        self.hot = hot
        self.parents = parents
        self.progress = progress or (lambda _n: None)  # bytes captured, read or reused
        # times the metadata scan at the snapshot (listing, stats) as phase "scan" (``drsvc.backup_commit.Phases``)
        self.timed = timed or (lambda _name: contextlib.nullcontext())

    def capture(
        self,
        volume: Volume,
        desktop: str,
        snap: str,
        *,
        full_every: int,
        names: list[str] | None = None,
        stamped: Mapping[str, VolumeObject] | None = None,
    ) -> tuple[dict[str, Any], StreamRef]:
        """The manifest's ``volume`` section (without ``url``) and the stream, at pool snapshot ``snap``.

        ``names``: the volume's object names from a listing taken after the snapshot (a backup batch
        lists its pool once for all its desktops); ``None``: the volume is listed here. Only a
        versioned volume takes them (its ``objects_at`` and ``stamps_at`` read just those names).
        ``stamped``: stamps at ``snap`` already taken by name (a backup batch stats the parent
        point's objects while its listing runs); with ``names``, only names not in it are stat'ed.
        """
        if names is not None and not versioned(volume):
            names = None
        plan, scope = self._plan(volume, desktop, snap, full_every, names, stamped)
        with _Entries(self.progress) as entries:
            if plan.full:
                with self.timed("scan"):
                    if names is None:
                        objects = volume.objects_at(snap)
                    else:
                        objects = cast(VersionedVolume, volume).objects_at(snap, names)
                plan.to_read = objects
                names = [o.name for o in objects]
                ref = self.hot.write_objects(entries.objects(volume.read_objects_at(snap, objects)))
            else:
                entries.by_name.update((name, dict(entry)) for name, entry in plan.kept.items())
                names = sorted([*plan.kept, *(o.name for o in plan.to_read)])
                ref = self.hot.write_parts(self._parts(cast(VersionedVolume, volume), snap, plan, entries))
            section: dict[str, Any] = {
                "pool_snapshot": snap,
                "objects": entries.listed(names),
                "stream": ref.to_dict(),
                "capture": plan.summary(),
            }
        if scope is not None:
            section["stamps"] = {"kind": incremental.VERSIONS, "scope": scope}
        return section, ref

    def _plan(
        self,
        volume: Volume,
        desktop: str,
        snap: str,
        full_every: int,
        names: list[str] | None,
        stamped: Mapping[str, VolumeObject] | None = None,
    ) -> tuple[incremental.Plan, str | None]:
        if not versioned(volume):
            return incremental.Plan(why_full="this volume type has no object versions"), None
        scope = cast(VersionedVolume, volume).stamp_scope()
        found = self.parents.find(desktop)
        if found is None:
            return incremental.Plan(why_full="no earlier point to build on"), scope
        pid, manifest = found
        parent_volume = manifest.get("volume") or {}
        since = int((parent_volume.get("capture") or {}).get("since_full") or 0)
        if since + 1 >= full_every:  # decided before reading any stamp
            return incremental.Plan(
                parent=pid, why_full=f"capture.full_every = {full_every}: a full read is due"
            ), scope
        why = incremental.usable_parent(parent_volume, url=volume.url, scope=scope)
        if why is None and (parent_volume.get("stream") or {}).get("data_key") != self.hot.write_keys.key_id:
            why = "the parent point's chunks are under another data key"
        if why is not None:
            return incremental.Plan(parent=pid, why_full=why), scope
        try:
            with self.timed("scan"):
                stamps = _stamps(cast(VersionedVolume, volume), snap, names, stamped)
            plan = incremental.plan(
                stamps,
                parent_volume,
                parent_id=pid,
                parent_since_full=since,
                full_every=full_every,
                url=volume.url,
                scope=scope,
            )
        except ValueError as e:
            return incremental.Plan(parent=pid, why_full=f"the parent point's stream is unusable: {e}"), scope
        missing = self.hot.missing(cid for cid, _ in plan.reused_chunks + plan.replaced_chunks)
        if missing:
            return incremental.Plan(parent=pid, why_full=f"{len(missing)} chunk(s) of the parent point are gone"), scope
        return plan, scope

    def _parts(
        self, volume: VersionedVolume, snap: str, plan: incremental.Plan, entries: _Entries
    ) -> Iterator[Reuse | Iterator[tuple[int, Iterable[bytes]]]]:
        """The composed stream's parts; dirty objects' metadata and data are read in one pipeline."""
        wanted = plan.to_read
        fresh = volume.objects_at(snap, [o.name for o in wanted]) if wanted else []
        if [o.name for o in fresh] != [o.name for o in wanted]:
            raise DrsvcError(f"{volume.url} at {snap}: objects changed under a pool snapshot")
        data = entries.objects(volume.read_objects_at(snap, fresh)) if fresh else iter(())
        for kind, what in plan.parts:
            if kind == "reuse":
                self.progress(sum(n for _, n in what))
                yield Reuse(tuple(what))
            else:
                yield self._region(what, data)

    def _region(
        self, region: incremental.Region, data: Iterator[tuple[int, Iterator[bytes]]]
    ) -> Iterator[tuple[int, Iterable[bytes]]]:
        """A region's objects in order: kept bytes from the parent's chunks, dirty ones from ``data``."""
        old = b"".join(self.hot.read_chunks(region.old, key_id=self.hot.write_keys.key_id)) if region.keeps else b""
        view = memoryview(old)
        for piece in region.pieces:
            if isinstance(piece, incremental.Keep):
                at = piece.offset - region.start
                self.progress(piece.length)
                yield piece.length, [bytes(view[at : at + piece.length])]
            else:
                yield next(data)
