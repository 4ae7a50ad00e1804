"""Incremental volume capture: which objects a backup must read, and what it takes from its parent.

A point's volume is one stream: its objects' data back to back in name order, cut so that every
large object starts and ends a chunk and the small ones between are cut together
(``ChunkStore.write_objects``). An object is **unchanged** when it is still there with the same
size and the same **version** (the RADOS user version at the pool snapshot, which every change of
data, xattrs or omap moves, ``drsvc.volumes.rados_meta``); every other object is **dirty**:
changed, deleted, or new (a new object sits where its name falls between the parent's).

Every chunk of the parent's stream that holds no byte of a dirty object -- and into whose middle
no new object falls -- is taken as it is, unread. Each run of the other chunks becomes a
**region**: its new bytes are, in name order, the unchanged objects' bytes within the region
(taken from the parent's chunks in the hot store: at most the few chunks the region replaces) and
the dirty objects' new data (read from the snapshot), cut afresh as a full backup cuts objects. So
a backup reads exactly the dirty objects from the desktop's volume, whatever their neighbours;
a small object changed in a run of thousands costs its own bytes and the two or three chunks
around it. Unchanged objects' manifest entries (digest, xattrs, omap) are copied from the parent.

Versions are comparable only within one cluster and pool (``stamp_scope``), and only for the same
volume; a parent is used only when its chunks are all still stored. ``capture.full_every`` bounds
the chain: every N-th point reads everything (which also re-checks what versions vouched for).
Pure: the caller reads stamps and the parent manifest.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from drsvc.volumes.base import VolumeObject

VERSIONS = "rados-user-version"  # what the manifest's per-object "version" is


class Keep(NamedTuple):
    """Bytes of an unchanged object, at ``offset`` of the parent's stream, taken from its chunks."""

    name: str
    offset: int
    length: int


@dataclass
class Region:
    """The parent's chunks ``old`` (starting at stream offset ``start``) replaced by ``pieces``:
    ``Keep`` (unchanged bytes) and ``VolumeObject`` (a dirty object, read from the snapshot), in name order."""

    start: int
    old: tuple[tuple[str, int], ...]
    pieces: list[Keep | VolumeObject] = field(default_factory=list)

    @property
    def end(self) -> int:
        return self.start + sum(n for _, n in self.old)

    @property
    def keeps(self) -> bool:
        """Whether any parent byte is kept (then the replaced chunks are read from the hot store)."""
        return any(isinstance(p, Keep) for p in self.pieces)


@dataclass
class Plan:
    """The new stream in order: ``("reuse", chunks)`` and ``("region", Region)`` parts."""

    parts: list[tuple[str, Any]] = field(default_factory=list)
    to_read: list[VolumeObject] = field(default_factory=list)  # dirty objects now present, name order
    kept: dict[str, dict[str, Any]] = field(default_factory=dict)  # unchanged: name -> parent's entry
    parent: str | None = None
    since_full: int = 0  # incremental points since the last full read, this one included
    why_full: str | None = None  # set when everything is read

    @property
    def full(self) -> bool:
        return self.why_full is not None

    @property
    def reused_chunks(self) -> list[tuple[str, int]]:
        return [c for kind, what in self.parts if kind == "reuse" for c in what]

    @property
    def replaced_chunks(self) -> list[tuple[str, int]]:
        """Parent chunks read back from the hot store (regions that keep some of their bytes)."""
        return [c for kind, r in self.parts if kind == "region" and r.keeps for c in r.old]

    def summary(self) -> dict[str, Any]:
        """What the manifest records of how the volume was captured."""
        return {
            "mode": "full" if self.full else "incremental",
            "parent": self.parent,
            "since_full": self.since_full,
            "why_full": self.why_full,
            "read_objects": len(self.to_read),
            "read_bytes": sum(o.size for o in self.to_read),
            "reused_objects": len(self.kept),
            "reused_bytes": sum(n for _, n in self.reused_chunks),
            "hot_bytes_read": sum(n for _, n in self.replaced_chunks),
        }


def usable_parent(volume: dict[str, Any], *, url: str, scope: str) -> str | None:
    """Why the parent's volume section cannot be built on (None when it can)."""
    if volume.get("url") != url:
        return "the parent point is of another volume"
    stamps = volume.get("stamps") or {}
    if stamps.get("kind") != VERSIONS or stamps.get("scope") != scope:
        return "the parent point has no object versions of this pool"
    objects = volume.get("objects") or []
    if any(not isinstance(o.get("version"), int) for o in objects):
        return "the parent point has no object versions"
    chunks = (volume.get("stream") or {}).get("chunks") or []
    if sum(int(o["size"]) for o in objects) != sum(int(n) for _, n in chunks):
        return "the parent point's objects and stream do not line up"
    return None


class _Stream:
    """The parent's stream: where each object and chunk lies."""

    def __init__(self, volume: dict[str, Any]) -> None:
        self.objects: list[dict[str, Any]] = list(volume["objects"])
        self.names = [str(o["name"]) for o in self.objects]
        self.starts: list[int] = []
        offset = 0
        for o in self.objects:
            self.starts.append(offset)
            offset += int(o["size"])
        self.total = offset
        self.chunks = [(str(c), int(n)) for c, n in volume["stream"]["chunks"]]
        self.cstarts: list[int] = []
        offset = 0
        for _, n in self.chunks:
            self.cstarts.append(offset)
            offset += n

    def chunk_at(self, offset: int) -> int:
        """Index of the chunk holding byte ``offset`` (0 <= offset < total)."""
        return bisect.bisect_right(self.cstarts, offset) - 1

    def position(self, name: str) -> int:
        """Stream offset where an object of this name sits: before the first parent object named after it."""
        i = bisect.bisect_right(self.names, name)
        return self.starts[i] if i < len(self.starts) else self.total

    def boundary(self, offset: int) -> bool:
        return offset == self.total or self.cstarts[self.chunk_at(offset)] == offset


def plan(
    stamps: Sequence[VolumeObject],
    parent_volume: dict[str, Any] | None,
    *,
    parent_id: str | None,
    parent_since_full: int,
    full_every: int,
    url: str,
    scope: str,
) -> Plan:
    """What to reuse and what to read, given every object at the snapshot (name, size, version)."""
    if parent_volume is None or parent_id is None:
        return Plan(to_read=list(stamps), why_full="no earlier point to build on")
    why = usable_parent(parent_volume, url=url, scope=scope)
    if why is None and parent_since_full + 1 >= full_every:
        why = f"capture.full_every = {full_every}: a full read is due"
    if why is not None:
        return Plan(to_read=list(stamps), parent=parent_id, why_full=why)
    old = _Stream(parent_volume)
    current = {o.name: o for o in stamps}
    result = Plan(parent=parent_id, since_full=parent_since_full + 1)
    dirty_chunks: set[int] = set()
    insertions: dict[int, list[VolumeObject]] = {}  # boundary offset -> dirty objects with no old bytes there
    for obj, start in zip(old.objects, old.starts, strict=True):
        name, size = str(obj["name"]), int(obj["size"])
        now = current.get(name)
        if now is not None and now.version is not None and now.version == obj["version"] and now.size == size:
            result.kept[name] = obj
            continue
        if size:  # its old bytes go: every chunk holding one is replaced
            dirty_chunks.update(range(old.chunk_at(start), old.chunk_at(start + size - 1) + 1))
            continue
        if now is not None:  # an empty object changed: like a new object at its place
            _insert(old, start, now, dirty_chunks, insertions)
    known = set(old.names)
    for name, now in current.items():
        if name not in known:
            _insert(old, old.position(name), now, dirty_chunks, insertions)
    result.to_read = [o for o in stamps if o.name not in result.kept]
    regions = _regions(old, dirty_chunks, insertions, current, result.kept)
    cursor = 0
    for first, last, region in regions:
        if cursor < first:
            result.parts.append(("reuse", old.chunks[cursor:first]))
        result.parts.append(("region", region))
        cursor = last
    if cursor < len(old.chunks):
        result.parts.append(("reuse", old.chunks[cursor:]))
    return result


def _insert(
    old: _Stream, offset: int, obj: VolumeObject, dirty_chunks: set[int], insertions: dict[int, list[VolumeObject]]
) -> None:
    """A dirty object with no old bytes, placed at ``offset``: inside a chunk it dirties that chunk."""
    insertions.setdefault(offset, []).append(obj)
    if not old.boundary(offset):
        dirty_chunks.add(old.chunk_at(offset))


def _regions(
    old: _Stream,
    dirty_chunks: set[int],
    insertions: dict[int, list[VolumeObject]],
    current: dict[str, VolumeObject],
    kept: dict[str, dict[str, Any]],
) -> list[tuple[int, int, Region]]:
    """Runs of dirty chunks (and insertions at chunk boundaries) as regions, in stream order."""
    runs: list[list[int]] = []  # [first, last) chunk indexes
    for i in sorted(dirty_chunks):
        if runs and runs[-1][1] == i:
            runs[-1][1] = i + 1
        else:
            runs.append([i, i + 1])
    extra: dict[int, list[VolumeObject]] = {}  # run index -> insertions within it or at its edges
    bare: list[tuple[int, list[VolumeObject]]] = []  # insertions at a boundary no run touches
    run_starts = [old.cstarts[first] for first, _ in runs]
    run_ends = [old.cstarts[last - 1] + old.chunks[last - 1][1] for _, last in runs]
    for offset, objs in insertions.items():
        k = bisect.bisect_right(run_starts, offset) - 1  # the last run starting at or before it
        if k >= 0 and offset <= run_ends[k]:
            extra.setdefault(k, []).extend(objs)
        else:
            bare.append((offset, objs))
    out: list[tuple[int, int, Region]] = []
    for k, (first, last) in enumerate(runs):
        start = old.cstarts[first]
        region = Region(start, tuple(old.chunks[first:last]))
        end = region.end
        pieces: list[Keep | VolumeObject] = []
        lo = max(bisect.bisect_right(old.starts, start) - 1, 0)
        for j in range(lo, len(old.objects)):
            s = old.starts[j]
            if s >= end:
                break
            obj = old.objects[j]
            name, size = str(obj["name"]), int(obj["size"])
            if size == 0 or s + size <= start:
                continue
            if name in kept:
                a, b = max(s, start), min(s + size, end)
                pieces.append(Keep(name, a, b - a))
            elif name in current:  # changed: read it whole (its bytes lie within the region)
                pieces.append(current[name])
        pieces += extra.get(k, [])
        region.pieces = sorted(pieces, key=lambda p: p.name)
        out.append((first, last, region))
    for offset, objs in bare:
        index = len(old.chunks) if offset == old.total else old.chunk_at(offset)
        out.append((index, index, Region(offset, (), sorted(objs, key=lambda o: o.name))))
    out.sort(key=lambda r: (r[2].start, r[1]))  # an insertion at a run's start comes before the run
    return out
