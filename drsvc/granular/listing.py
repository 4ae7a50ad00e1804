"""What a point holds, from its manifest alone: volume objects, root filesystem files, and diffs.

A manifest lists its volume's objects in name order (the order their data was concatenated into
the volume's one stream), so each object's place in that stream is the sum of the sizes before
it: ``ObjectEntry.offset``. The root filesystem changes of the checkpoint (``checkpoint.rootfs``)
are recorded since drsvc indexes archives as they are stored; older points have no such record
and say so (``RootfsListing.recorded`` is False). Manifests come from a store and are checked
here before anything trusts them: a malformed entry is an ``IntegrityError``, never a crash.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from drsvc.errors import IntegrityError
from drsvc.incremental import VERSIONS
from drsvc.volumes.base import digest_form, valid_digest


@dataclass(slots=True)
class ObjectEntry:
    """One volume object as its point recorded it (xattrs and omap as raw bytes)."""

    name: str
    size: int
    digest: str
    offset: int  # where its data starts in the volume's stream
    xattrs: dict[str, bytes] = field(default_factory=dict, compare=False)
    omap: dict[str, bytes] = field(default_factory=dict, compare=False)
    mtime: str | None = None
    version: int | None = None  # the backend's change counter at the snapshot, where recorded

    def document(self, *, long: bool = False) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "name": self.name,
            "size": self.size,
            "mtime": self.mtime,
            "digest": self.digest,
            "xattrs": len(self.xattrs),
            "omap": len(self.omap),
        }
        if long:
            doc["xattrs"] = {k: v.hex() for k, v in sorted(self.xattrs.items())}
            doc["omap"] = {k: v.hex() for k, v in sorted(self.omap.items())}
        return doc


@dataclass(frozen=True)
class RootfsFile:
    """One member of the checkpoint's root filesystem diff (``offset``: its data in the archive stream)."""

    path: str
    type: str
    size: int
    mode: int
    mtime: int
    uid: int = 0
    gid: int = 0
    link: str | None = None
    offset: int | None = None

    def document(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "type": self.type,
            "size": self.size,
            "mode": f"{self.mode & 0o7777:04o}",
            "uid": self.uid,
            "gid": self.gid,
            "mtime": self.mtime,
            "link": self.link,
        }


@dataclass
class RootfsListing:
    """The root filesystem part of a point: recorded or not, and why."""

    recorded: bool
    files: list[RootfsFile] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _bytes_map(value: Any, what: str) -> dict[str, bytes]:
    if not value:
        if value is None or isinstance(value, dict):
            return {}
        raise IntegrityError(f"manifest: {what} is not a mapping")
    if not isinstance(value, dict):
        raise IntegrityError(f"manifest: {what} is not a mapping")
    out = {}
    try:
        for k, v in value.items():
            if type(k) is not str or type(v) is not str:
                raise IntegrityError(f"manifest: {what} holds a key or value that is not a string")
            out[k] = bytes.fromhex(v)
    except ValueError:
        raise IntegrityError(f"manifest: {what} holds a value that is not hex") from None
    return out


def objects(manifest: dict[str, Any]) -> list[ObjectEntry]:
    """The volume's objects in stream order, with offsets; ``IntegrityError`` when the manifest is malformed.

    One pass, cheap per object: a point may hold 100,000 of them and ``points ls`` waits on this.
    """
    volume = manifest.get("volume")
    if not isinstance(volume, dict) or not isinstance(volume.get("objects"), list):
        raise IntegrityError("manifest has no volume object list")
    out: list[ObjectEntry] = []
    append = out.append
    offset = 0
    for i, o in enumerate(volume["objects"]):
        try:
            name, size, digest = o["name"], o["size"], o["digest"]
        except (KeyError, TypeError):
            raise IntegrityError(f"manifest: volume object #{i} lacks a name, size or digest") from None
        if type(name) is not str or not name or "\0" in name:
            raise IntegrityError(f"manifest: volume object #{i} has no valid name")
        if type(size) is not int or size < 0:
            raise IntegrityError(f"manifest: volume object {name!r} has no valid size")
        if not valid_digest(digest):
            raise IntegrityError(f"manifest: volume object {name!r} has no valid digest")
        mtime = o.get("mtime")
        version = o.get("version")
        append(
            ObjectEntry(
                name,
                size,
                digest,
                offset,
                _bytes_map(o.get("xattrs"), f"{name!r} xattrs"),
                _bytes_map(o.get("omap"), f"{name!r} omap"),
                mtime if type(mtime) is str else None,
                version if type(version) is int else None,
            )
        )
        offset += size
    return out


def rootfs(manifest: dict[str, Any]) -> RootfsListing:
    """The checkpoint's root filesystem diff as recorded at backup (or why there is none)."""
    checkpoint = manifest.get("checkpoint")
    if not isinstance(checkpoint, dict):
        return RootfsListing(False, notes=["no checkpoint: a crash-consistent point holds the volume only"])
    record = checkpoint.get("rootfs")
    if not isinstance(record, dict):
        return RootfsListing(
            False,
            notes=["root filesystem files were not recorded for this point (taken before drsvc indexed archives)"],
        )
    files: list[RootfsFile] = []
    for f in record.get("files") or []:
        try:
            files.append(
                RootfsFile(
                    path=str(f["path"]),
                    type=str(f["type"]),
                    size=int(f["size"]),
                    mode=int(f["mode"]),
                    mtime=int(f["mtime"]),
                    uid=int(f.get("uid", 0)),
                    gid=int(f.get("gid", 0)),
                    link=str(f["link"]) if f.get("link") is not None else None,
                    offset=int(f["offset"]) if f.get("offset") is not None else None,
                )
            )
        except (KeyError, TypeError, ValueError) as e:
            raise IntegrityError(f"manifest: malformed root filesystem entry ({e})") from e
    notes = [str(n) for n in record.get("notes") or []]
    if record.get("truncated"):
        notes.append("the root filesystem index was truncated at backup (too many files)")
    deleted = [str(p) for p in record.get("deleted") or []]
    return RootfsListing(True, files, deleted, notes)


def under(entries: Iterable[ObjectEntry], prefix: str | None) -> Iterator[ObjectEntry]:
    """The entries whose name starts with ``prefix`` (all when None)."""
    for e in entries:
        if prefix is None or e.name.startswith(prefix):
            yield e


# ---------------------------------------------------------------------- diff


@dataclass
class Change:
    """One object present in both points whose content differs, and in what."""

    name: str
    before: ObjectEntry
    after: ObjectEntry

    @property
    def what(self) -> list[str]:
        parts = []
        if self.before.size != self.after.size:
            parts.append("size")
        if self.before.xattrs != self.after.xattrs:
            parts.append("xattrs")
        if self.before.omap != self.after.omap:
            parts.append("omap")
        if not parts or "size" in parts:
            parts.insert(0, "data")  # same size, same metadata, another digest: the bytes changed
        return parts

    def document(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "what": self.what,
            "size_before": self.before.size,
            "size_after": self.after.size,
            "digest_before": self.before.digest,
            "digest_after": self.after.digest,
        }


@dataclass
class Diff:
    """Objects added, removed and changed from point A to point B (and root filesystem files)."""

    added: list[ObjectEntry]
    removed: list[ObjectEntry]
    changed: list[Change]
    unchanged: int
    rootfs: dict[str, list[str]] | None  # added/removed/changed paths, None when either point lacks the index
    read: list[str] = field(default_factory=list)  # objects whose data was read to compare them

    def document(self) -> dict[str, Any]:
        return {
            "added": [e.document() for e in self.added],
            "removed": [e.document() for e in self.removed],
            "changed": [c.document() for c in self.changed],
            "unchanged": self.unchanged,
            "rootfs": self.rootfs,
            "read": len(self.read),
        }


SameContent = Callable[[ObjectEntry, ObjectEntry], bool]
"""Whether an object of point A and the same-named object of point B hold the same data (read it)."""


def diff(a: dict[str, Any], b: dict[str, Any], same_content: SameContent | None = None) -> Diff:
    """Compare two manifests object by object (digests cover data, xattrs and omap).

    Digests of one form are compared as they are. Two forms (a point recorded before BLAKE3 beside
    one after; ``drsvc.volumes.base.digest_form``) cannot be compared, so the same content must be
    told another way, never reported as a change: different size, xattrs or omap is a change; the
    same RADOS version of the same volume and pool is no change (the evidence incremental capture
    builds points on, ``drsvc.incremental``); else ``same_content`` reads the data (without it, the
    object counts as changed: nothing vouches that it is not).
    """
    old = {e.name: e for e in objects(a)}
    new = {e.name: e for e in objects(b)}
    added = [new[n] for n in sorted(new.keys() - old.keys())]
    removed = [old[n] for n in sorted(old.keys() - new.keys())]
    both = sorted(old.keys() & new.keys())
    versions_compare = _versions_compare(a, b)
    changed: list[Change] = []
    read: list[str] = []
    for n in both:
        before, after = old[n], new[n]
        if before.digest == after.digest:
            continue
        if digest_form(before.digest) == digest_form(after.digest) or not _same_meta(before, after):
            changed.append(Change(n, before, after))
        elif versions_compare and before.version is not None and before.version == after.version:
            continue
        elif same_content is None:
            changed.append(Change(n, before, after))
        else:
            read.append(n)
            if not same_content(before, after):
                changed.append(Change(n, before, after))
    return Diff(added, removed, changed, len(both) - len(changed), _rootfs_diff(rootfs(a), rootfs(b)), read)


def _same_meta(a: ObjectEntry, b: ObjectEntry) -> bool:
    return a.size == b.size and a.xattrs == b.xattrs and a.omap == b.omap


def _versions_compare(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether the two points' object versions are of one volume and one pool (one counter)."""
    va, vb = a.get("volume") or {}, b.get("volume") or {}
    sa, sb = va.get("stamps"), vb.get("stamps")
    return (
        va.get("url") == vb.get("url")
        and isinstance(sa, dict)
        and sa.get("kind") == VERSIONS
        and bool(sa.get("scope"))
        and sa == sb
    )


def _rootfs_diff(a: RootfsListing, b: RootfsListing) -> dict[str, list[str]] | None:
    if not (a.recorded and b.recorded):
        return None

    def key(f: RootfsFile) -> tuple[Any, ...]:
        return (f.type, f.size, f.mode, f.mtime, f.link)

    old = {f.path: key(f) for f in a.files}
    new = {f.path: key(f) for f in b.files}
    return {
        "added": sorted(new.keys() - old.keys()),
        "removed": sorted(old.keys() - new.keys()),
        "changed": sorted(p for p in old.keys() & new.keys() if old[p] != new[p]),
        "deleted_from_image": sorted(set(b.deleted) - set(a.deleted)),
    }
