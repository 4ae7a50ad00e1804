"""Single-object restore: bring named objects of a point back into a running desktop, or into files.

``drsvc restore DESKTOP --object NAME... | --prefix P`` writes each chosen object -- data, xattrs
and omap whole -- into the desktop's own RADOS namespace while the desktop keeps running; no other
object is read or written. By default an object that exists now is first kept as
``NAME.drsvc-<point id>`` (its current data, xattrs and omap), so a restore never destroys
anything; ``--overwrite`` replaces it. An object whose current content already equals the point's
(same digest) is left alone. A live object whose xattrs and omap are past what drsvc reads of one
object (``OBJECT_METADATA_MAX``: its desktop's processes wrote them) cannot be kept aside: the
plan refuses it, naming ``--overwrite``, which replaces it without reading them. ``--to-dir DIR``
writes the objects as files beneath DIR instead (paths from ``drsvc.granular.names``: nothing a
manifest names can leave DIR), with their xattrs and omap in ``DIR/%drsvc-objects.json``.

Data comes from the fastest copy (``PointSource``): the pool snapshot while it exists, else the
hot chunks, else the cold chunks, fetching only the chunks that cover the objects. Every object
is checked against the manifest's digest as it is written; a mismatch fails the restore with
exit 4 and names the object. Everything is validated before the first write (unknown names,
a kept name that already exists, files in the way), and the restore is recorded first
(``object_restores``: who, what, which point, when, how long) and audited (``point_access``).

Kills: each object (and each kept copy) up to ``WHOLE_MAX`` is written in one operation, so a
kill -9 leaves the old object or the point's, never a mix; a kept copy that is whole and equal to
the live object is what an interrupted run of this restore left, and the same command goes on.

Concurrency: the desktop may write an object while it is being restored; an object larger than
``WHOLE_MAX`` is written with one ``write_full`` plus appends (as whole-desktop restores do), so a
write racing it can interleave. Restore objects a desktop is actively rewriting only with it stopped.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from drsvc import clock, hostfs
from drsvc.errors import DrsvcError, InvalidInput, NotFound
from drsvc.granular import names
from drsvc.granular.listing import ObjectEntry
from drsvc.granular.reader import PointSource, open_point
from drsvc.granular.scope import Scope, audited
from drsvc.intents import reading
from drsvc.restore import RestoreJob
from drsvc.services import Services
from drsvc.units import format_bytes
from drsvc.volumes import base
from drsvc.volumes.base import MetadataTooLarge, ObjectHasher, Volume, VolumeObject

KEEP_SUFFIX = ".drsvc-"
META_FILE = "%drsvc-objects.json"  # a name object paths never take (names.parts never yields '%d')

Event = Callable[..., None]


def _quiet(*_a: Any, **_k: Any) -> None:
    return None


def kept_name(name: str, point_id: str) -> str:
    """Where the current object is kept when a point's version replaces it."""
    return f"{name}{KEEP_SUFFIX}{point_id}"


@dataclass
class ObjectPlan:
    """What an object restore will do, validated; nothing touched yet."""

    source: PointSource
    entries: list[ObjectEntry]
    mode: str  # keep | overwrite | to-dir
    target: str  # the namespace URL, or the directory
    tiers: list[str]  # copies to read from, fastest first
    overwrite: bool = False
    plan_seconds: float = 0.0

    def document(self) -> dict[str, Any]:
        return {
            "desktop": self.source.point["desktop_id"],
            "point_id": self.source.id,
            "taken_at": self.source.point["taken_at"],
            "mode": self.mode,
            "target": self.target,
            "tiers": self.tiers,
            "objects": [{"name": e.name, "size": e.size} for e in self.entries],
            "bytes": sum(e.size for e in self.entries),
        }


@dataclass
class ObjectResult:
    plan: ObjectPlan
    restore_id: int = 0
    tier: str | None = None
    seconds: float = 0.0
    objects: list[dict[str, Any]] = field(default_factory=list)

    @property
    def bytes(self) -> int:
        return sum(o["size"] for o in self.objects if o["status"] == "restored")

    def document(self) -> dict[str, Any]:
        return {
            **self.plan.document(),
            "restore_id": self.restore_id,
            "tier": self.tier,
            "seconds": round(self.seconds, 3),
            "plan_seconds": round(self.plan.plan_seconds, 3),
            "objects": self.objects,
            "bytes": self.bytes,
        }


class ObjectRestoreJob:
    """Plans and runs single-object restores of one desktop."""

    def __init__(self, services: Services, scope: Scope, *, on_event: Event = _quiet) -> None:
        self.services = services
        self.scope = scope
        self.on_event = on_event

    # ------------------------------------------------------------------ planning

    def plan(
        self,
        desktop_id: str,
        *,
        objects: list[str] | None = None,
        prefix: str | None = None,
        point_id: str | None = None,
        at: datetime | None = None,
        tier: str | None = None,
        copy: str | None = None,
        overwrite: bool = False,
        to_dir: Path | None = None,
    ) -> ObjectPlan:
        """Validate a request (``tier`` hot|cold narrows the copies; ``copy`` names one: snapshot|hot|cold)."""
        started = time.monotonic()
        if bool(objects) == (prefix is not None):
            raise InvalidInput("give --object NAME (one or more) or --prefix P, not both")
        request = {"objects": objects, "prefix": prefix, "point": point_id, "to_dir": str(to_dir) if to_dir else None}
        desktop = self.scope.desktop(desktop_id, detail=request)
        try:
            point = RestoreJob(self.services).choose_point(desktop_id, at=at, point_id=point_id)
            source = open_point(self.services, point, desktop)
            entries = self._select(source, objects, prefix)
            tiers = self._tiers(source, tier, copy)
            if to_dir is not None:
                mode, target = "to-dir", str(to_dir)
                self._check_dir(to_dir, entries, overwrite)
            else:
                mode = "overwrite" if overwrite else "keep"
                target = self._own_volume(desktop, source)
                if not overwrite:
                    self._check_kept_names(target, entries, source.id)
        except DrsvcError as e:  # refused before anything was touched: recorded all the same
            self.scope.record("refused", desktop=desktop_id, point=point_id, detail={**request, "reason": str(e)})
            raise
        return ObjectPlan(source, entries, mode, target, tiers, overwrite, time.monotonic() - started)

    @staticmethod
    def _select(source: PointSource, objects: list[str] | None, prefix: str | None) -> list[ObjectEntry]:
        everything = source.entries()
        if prefix is not None:
            chosen = [e for name, e in everything.items() if name.startswith(prefix)]
            if not chosen:
                raise NotFound(f"point {source.id} has no object under prefix {prefix!r}")
            return chosen
        assert objects
        missing = [n for n in objects if n not in everything]
        if missing:
            raise NotFound(
                f"point {source.id} has no object {missing[0]!r}"
                + (f" (and {len(missing) - 1} more missing)" if len(missing) > 1 else "")
                + f"; `drsvc points ls {source.id}` lists its objects"
            )
        return [everything[n] for n in dict.fromkeys(objects)]

    @staticmethod
    def _tiers(source: PointSource, tier: str | None, copy: str | None = None) -> list[str]:
        tiers = source.tiers
        if copy is not None:
            if copy not in tiers:
                raise NotFound(f"point {source.id} has no {copy} copy (copies: {', '.join(tiers) or 'none'})")
            return [copy]
        if tier == "hot":
            tiers = [t for t in tiers if t in ("snapshot", "hot")]
        elif tier == "cold":
            tiers = [t for t in tiers if t == "cold"]
        if not tiers:
            raise NotFound(f"point {source.id} has no {tier} copy (tiers: {', '.join(source.point['tiers'])})")
        return tiers

    def _own_volume(self, desktop: dict[str, Any], source: PointSource) -> str:
        """The desktop's own namespace, by the restore-target rules of ``drsvc.targets`` (exit 2 otherwise)."""
        target = RestoreJob(self.services).check_target(desktop, source.manifest, None)
        return target.volume_url

    def _check_kept_names(self, url: str, entries: list[ObjectEntry], point_id: str) -> None:
        volume = self.services.volume(url)
        for e in entries:
            try:
                volume.stat(e.name)
            except MetadataTooLarge:
                raise InvalidInput(
                    f"the live object {e.name} in {url} holds more xattrs and omap than drsvc reads of one "
                    f"object ({format_bytes(base.OBJECT_METADATA_MAX)}; the desktop's own processes wrote "
                    "them), so it cannot be kept aside before the point's copy replaces it: pass --overwrite "
                    "to replace it without reading them (its current content is lost), or --to-dir DIR to "
                    "get the point's copy as files; nothing was touched"
                ) from None
        taken = [kept_name(e.name, point_id) for e in entries if not _keepable(volume, e, point_id)]
        if taken:
            raise InvalidInput(
                f"{taken[0]} already exists in {url} (an earlier restore from this point kept it there); "
                "remove it or pass --overwrite; nothing was touched"
            )

    @staticmethod
    def _check_dir(directory: Path, entries: list[ObjectEntry], overwrite: bool) -> None:
        if directory.exists() and not directory.is_dir():
            raise InvalidInput(f"--to-dir {directory}: not a directory")
        if overwrite or not directory.exists():
            return
        tree = names.Tree((e.name, e) for e in entries)
        for path, _ in tree.paths():
            if os.path.lexists(directory.joinpath(*path)):
                raise InvalidInput(f"--to-dir: {directory.joinpath(*path)} exists; pass --overwrite to replace it")

    # ------------------------------------------------------------------ running

    def run(self, plan: ObjectPlan) -> ObjectResult:
        """Restore the plan's objects; recorded in ``object_restores`` and audited."""
        result = ObjectResult(plan)
        source = plan.source
        point = source.point
        cursor = self.services.catalog.execute(
            "INSERT INTO object_restores (desktop_id, point_id, target, mode, objects, requested_by, tenant, "
            "started_at, status) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'running')",
            [
                point["desktop_id"],
                point["id"],
                plan.target,
                plan.mode,
                json.dumps([{"name": e.name, "size": e.size} for e in plan.entries]),
                self.scope.who,
                self.scope.tenant,
                clock.to_iso(clock.now()),
            ],
        )
        result.restore_id = int(cursor.lastrowid or 0)
        detail = {"restore_id": result.restore_id, "objects": len(plan.entries), "mode": plan.mode}
        started = time.monotonic()
        status, error = "failed", None
        try:
            with (
                audited(self.scope, desktop=point["desktop_id"], point=point["id"], detail=detail),
                reading(self.services.catalog, [point["id"]], object_restore=result.restore_id),
            ):
                if plan.mode == "to-dir":
                    with hostfs.writing(plan.target):  # a full or read-only disk: one line, no traceback
                        self._to_dir(plan, result)
                else:
                    self._in_place(plan, result)
            status = "ok"
        except BaseException as e:
            error = str(e) if isinstance(e, DrsvcError) else f"{type(e).__name__}: {e}"
            raise
        finally:
            result.seconds = time.monotonic() - started
            self.services.catalog.execute(
                "UPDATE object_restores SET finished_at = ?, seconds = ?, tier = ?, objects = ?, bytes = ?, "
                "status = ?, error = ? WHERE id = ?",
                [
                    clock.to_iso(clock.now()),
                    result.seconds,
                    result.tier,
                    json.dumps(result.objects),
                    result.bytes,
                    status,
                    error,
                    result.restore_id,
                ],
            )
        return result

    @staticmethod
    def _data(plan: ObjectPlan, entry: ObjectEntry, result: ObjectResult) -> Iterator[bytes]:
        tier, data = plan.source.open_object(entry, plan.tiers)
        if result.tier is None:
            result.tier = tier
        elif tier not in result.tier.split("+"):
            result.tier += f"+{tier}"
        return data

    def _in_place(self, plan: ObjectPlan, result: ObjectResult) -> None:
        volume = self.services.volume(plan.target)
        for entry in plan.entries:
            self.on_event("object", name=entry.name, state="start", size=entry.size)
            record: dict[str, Any] = {"name": entry.name, "size": entry.size, "kept_as": None}
            current = _live(volume, entry.name, plan.mode)
            if current is not None and _same(volume, current, entry):
                record["status"] = "unchanged"
            else:
                if current is not None and plan.mode == "keep":
                    record["kept_as"] = self._keep(volume, current, plan.source.id)
                obj = VolumeObject(entry.name, entry.size, entry.xattrs, entry.omap)
                # whole: a kill or a reader sees today's object or the point's, never part of it
                volume.write_objects([(obj, self._data(plan, entry, result))], exact=False, whole=True)
                record["status"] = "restored"
            result.objects.append(record)
            self.on_event("object", name=entry.name, state=record["status"], kept_as=record["kept_as"])

    @staticmethod
    def _keep(volume: Volume, current: VolumeObject, point_id: str) -> str:
        """Copy the live object (data, xattrs, omap) aside before the point's version replaces it
        (already there, whole, when an interrupted run of the same restore kept it: not again)."""
        name = kept_name(current.name, point_id)
        kept = volume.stat(name)
        if kept is not None and _same_object(volume, kept, current):
            return name
        copy = VolumeObject(name, current.size, current.xattrs, current.omap)
        for _obj, data in volume.read_objects([current]):
            volume.write_objects([(copy, data)], exact=False, whole=True)
        return name

    def _to_dir(self, plan: ObjectPlan, result: ObjectResult) -> None:
        directory = Path(plan.target)
        directory.mkdir(parents=True, exist_ok=True)
        overwrite = plan.overwrite
        root = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            meta: list[dict[str, Any]] = []
            for path, entry in names.Tree((e.name, e) for e in plan.entries).paths():
                self.on_event("object", name=entry.name, state="start", size=entry.size)
                fd = names.write_beneath(root, path, overwrite=overwrite)
                with os.fdopen(fd, "wb") as out:
                    for piece in self._data(plan, entry, result):
                        hostfs.write_all(out, piece)  # a full disk: never a short file
                    if entry.mtime:
                        moment = clock.from_iso(entry.mtime).timestamp()
                        os.utime(out.fileno(), (moment, moment))
                rel = "/".join(path)
                result.objects.append({"name": entry.name, "size": entry.size, "path": rel, "status": "restored"})
                meta.append(
                    {
                        "name": entry.name,
                        "path": rel,
                        "size": entry.size,
                        "digest": entry.digest,
                        "xattrs": {k: v.hex() for k, v in sorted(entry.xattrs.items())},
                        "omap": {k: v.hex() for k, v in sorted(entry.omap.items())},
                    }
                )
                self.on_event("object", name=entry.name, state="restored", kept_as=None)
            fd = names.write_beneath(root, [META_FILE], overwrite=True, mode=0o600)
            with os.fdopen(fd, "w") as out:
                json.dump(
                    {"point_id": plan.source.id, "desktop": plan.source.point["desktop_id"], "objects": meta}, out
                )
        finally:
            os.close(root)


def _live(volume: Volume, name: str, mode: str) -> VolumeObject | None:
    """The live object as ``stat`` reads it; with ``--overwrite``, None for one whose xattrs and
    omap are past what drsvc reads (``MetadataTooLarge``): the desktop's processes wrote them, it
    cannot equal the point's copy (which was read within the bound), and the write replaces data,
    xattrs and omap whole without reading them. Keeping one aside was refused in the plan."""
    try:
        return volume.stat(name)
    except MetadataTooLarge:
        if mode != "overwrite":
            raise
        return None


def _keepable(volume: Volume, entry: ObjectEntry, point_id: str) -> bool:
    """Whether keeping ``entry``'s live object aside can go ahead: its kept name is free, or holds
    what an interrupted run of this same restore left -- a whole copy of the live object, or the
    live object is the point's already (restored; nothing more to keep)."""
    kept = volume.stat(kept_name(entry.name, point_id))
    if kept is None:
        return True
    current = volume.stat(entry.name)
    return current is not None and (_same(volume, current, entry) or _same_object(volume, kept, current))


def _content(volume: Volume, obj: VolumeObject) -> str:
    h = hashlib.sha256()
    for _obj, data in volume.read_objects([obj]):
        for piece in data:
            h.update(piece)
    return h.hexdigest()


def _same_object(volume: Volume, a: VolumeObject, b: VolumeObject) -> bool:
    """Whether two live objects hold the same data, xattrs and omap (cheap checks first)."""
    if a.size != b.size or a.xattrs != b.xattrs or a.omap != b.omap:
        return False
    return _content(volume, a) == _content(volume, b)


def _same(volume: Volume, current: VolumeObject, entry: ObjectEntry) -> bool:
    """Whether the live object already equals the point's (cheap checks first, then its data's digest)."""
    if current.size != entry.size or current.xattrs != entry.xattrs or current.omap != entry.omap:
        return False
    hasher = ObjectHasher.like(entry.digest)
    for _obj, data in volume.read_objects([current]):
        for piece in data:
            hasher.update(piece)
    return hasher.finish(current.xattrs, current.omap) == entry.digest
