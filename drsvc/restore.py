"""Restore: bring one desktop back from a recovery point, phase by phase, and measure its RTO.

Phases (each timed, recorded in ``restores``; the RTO is the wall clock of all of them):

* ``plan`` (``drsvc.restore_plan``): pick the point (latest complete, latest at or before ``--at``,
  or ``--point``) and the fastest tier holding it (hot while its pool snapshot exists, else cold),
  read its manifest;
* ``fetch``: the checkpoint archive from that tier into a local spool file (plus the base image,
  when the runtime lacks it); runs *while* the volume phase works, so the two overlap;
* ``volume``: hot: roll the namespace back to the pool snapshot (objects deleted since come back,
  objects created since go, xattrs and omap included); cold: write it from chunks, exactly;
  a clone (``--as``) gets the snapshot's content in a namespace of its own;
* ``container``: restore the container from its checkpoint, in place or as a clone;
* ``health``: it runs, it was restored from the checkpoint (not restarted), and the policy's
  probe (TCP port or command) answers.

Before the first phase, ``plan`` checks who owns the target (``drsvc.targets``): a restore
writes only into the desktop's own container and namespace, or a clone name no desktop owns whose
namespace is empty; another desktop's target needs ``allow_cross_tenant`` (recorded). A desktop
that is running is not overwritten without ``force``; a container is removed only while it is
still the one the plan validated. A clone gets no network unless the operator asks for one
(``network_for``), and the runtimes give it none of the original's volumes or host namespaces:
drill sandboxes and ``--as`` clones cannot reach the production desktop's data.
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any

from drsvc import clock, faults
from drsvc.backup import IMAGES, image_key, image_record_id
from drsvc.chunks import ChunkStore, StreamRef
from drsvc.errors import (
    BackendError,
    DrsvcError,
    IntegrityError,
    InvalidInput,
    NotFound,
)
from drsvc.log import event
from drsvc.restore_effects import RestoreEffects
from drsvc.restore_plan import (
    DEFAULT_TARGET,
    PHASES,
    SETTLE_SECONDS,
    RestorePlan,
    RestorePlanner,
    RestoreResult,
    network_for,
    parse_time,
)
from drsvc.runtimes import archive as archive_rules
from drsvc.runtimes.base import LABEL_VOLUME, DesktopRef, is_full_id
from drsvc.targets import confirm_identity, namespace_of, owned_clone
from drsvc.volumes.base import VolumeObject

log = logging.getLogger(__name__)

# planning moved to drsvc.restore_plan; these names stay importable from here
__all__ = [
    "DEFAULT_TARGET",
    "PHASES",
    "RestoreJob",
    "RestorePlan",
    "RestoreResult",
    "network_for",
    "parse_time",
]


class RestoreJob(RestorePlanner):
    """Plans (``RestorePlanner``) and runs restores of single desktops."""

    _effects: RestoreEffects | None = None  # the running restore's intents (``run``)

    # ------------------------------------------------------------------ running

    def run(
        self,
        plan: RestorePlan,
        *,
        force: bool = False,
        network: str | None = None,
        verify: bool = False,
        drill_id: int | None = None,
        temporary: bool = False,
    ) -> RestoreResult:
        """Restore according to ``plan``; records the phases and the RTO in the catalog.

        What it changes is recorded first (``RestoreEffects``): a clone it made is removed again
        when the restore fails (``temporary``: also kept pending on success, for ``teardown``).
        """
        if plan.container_state == "running" and not force:
            what = f"--as {plan.as_name}: a container of that name" if plan.as_name else f"desktop {plan.name}"
            raise InvalidInput(f"{what} is running; refusing to overwrite it without --force")
        network = network_for(plan, network)
        result = RestoreResult(plan)
        result.phases["plan"] = plan.plan_seconds
        now = clock.to_iso(clock.now())
        target = plan.target
        cursor = self.catalog.execute(
            "INSERT INTO restores (desktop_id, point_id, tier, as_name, drill_id, started_at, target_seconds, status, "
            "target_container, target_volume, foreign_owner, foreign_tenant, allowed_by, allowed_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, 'running', ?, ?, ?, ?, ?, ?)",
            [
                plan.desktop["id"],
                plan.point["id"],
                plan.tier,
                plan.as_name,
                drill_id,
                now,
                plan.target_seconds,
                target.container,
                target.volume_url,
                target.foreign.desktop_id if target.foreign else None,
                target.foreign.tenant if target.foreign else None,
                target.allowed_by,
                now if target.allowed_by else None,
            ],
        )
        result.restore_id = int(cursor.lastrowid or 0)
        started = time.monotonic() - plan.plan_seconds
        try:
            effects = RestoreEffects(
                self.catalog, plan, result.restore_id, temporary=temporary, runtime=self.services.runtime
            )
            with effects:
                self._effects = effects
                try:
                    self._run(plan, result, network=network, verify=verify)
                except BaseException:
                    effects.failed(lambda: self.teardown(plan, effects))
                    raise
                effects.succeeded()
            result.rto_seconds = time.monotonic() - started
            result.status = "ok" if result.rto_seconds <= plan.target_seconds else "objective_missed"
        except BaseException as e:
            result.rto_seconds = time.monotonic() - started
            result.status = "failed"
            result.error = str(e) or type(e).__name__
            raise
        finally:
            self._effects = None
            self.catalog.execute(
                "UPDATE restores SET finished_at = ?, rto_seconds = ?, phases = ?, status = ?, error = ? WHERE id = ?",
                [
                    clock.to_iso(clock.now()),
                    result.rto_seconds,
                    json.dumps(result.phases),
                    result.status,
                    result.error,
                    result.restore_id,
                ],
            )
        return result

    def teardown(self, plan: RestorePlan, effects: RestoreEffects) -> None:
        """After a failed clone restore: remove what this run made (``effects``), nothing else.

        The container goes only if this run reached its container phase and it is still the clone
        of this desktop; of the namespace, only the objects this run wrote (``effects.created``).
        Whatever else is there (a racing restore's or an operator's objects, written after the plan
        found the namespace empty) stays, and is said, as is another desktop's volume the operator
        allowed writing into (``--allow-cross-tenant``). Never the desktop itself.
        """
        if not plan.as_name:
            return
        left: list[str] = []
        runtime = self.services.runtime
        try:
            ref: DesktopRef | None = runtime.inspect(plan.name)
        except NotFound:
            ref = None
        if ref is not None:
            # only the clone this restore made: never a container someone else put there meanwhile
            made = effects.container_labels().items() <= ref.labels.items()
            if effects.container_made and made and owned_clone(ref, plan.desktop["id"], plan.name):
                runtime.remove(plan.name)
            else:
                left.append(f"container {plan.name} (this restore did not make it)")
        volume = self.services.volume(plan.volume_url)
        removed = 0
        if plan.target.foreign is not None:
            left.append(
                f"namespace {plan.volume_url} of {plan.target.foreign.desktop_id} as this restore left it "
                f"(written on purpose, allowed by {plan.target.allowed_by})"
            )
        else:
            removed = volume.remove_objects(effects.created) if effects.created else 0
            try:  # a listing, on the failure path only: what stays is said
                others = len(volume.objects_now())
            except DrsvcError as e:
                left.append(f"whatever else {plan.volume_url} holds (not listed: {e})")
            else:
                if others:
                    left.append(f"{others} object(s) in {plan.volume_url} this restore did not write")
        message = f"clone {plan.name} torn down: {removed} object(s) this restore wrote removed"
        if left:
            message += "; left: " + "; ".join(left)
        event(log, logging.WARNING if left else logging.INFO, "restore.teardown", message, restore=plan.name)
        self.on_event("teardown", message=message, left=left)

    def _created(self) -> set[str] | None:
        """Where the volume phase notes each object it wrote (what a failed clone's teardown removes)."""
        return self._effects.created if self._effects is not None else None

    def _mark(self) -> str | None:
        """The writer mark each object of a clone carries while it is written (None: not marked)."""
        return self._effects.volume_mark if self._effects is not None else None

    def _artifact(self) -> AbstractContextManager[str | None]:
        return self._effects.artifact() if self._effects is not None else nullcontext(None)

    @contextmanager
    def _phase(self, result: RestoreResult, name: str) -> Iterator[None]:
        if self._effects is not None:
            self._effects.phase(name)
        self.on_event("phase", phase=name, state="start")
        t = time.monotonic()
        try:
            yield
        finally:
            result.phases[name] = result.phases.get(name, 0.0) + time.monotonic() - t
            self.on_event("phase", phase=name, state="done", seconds=result.phases[name])

    def _run(self, plan: RestorePlan, result: RestoreResult, *, network: str | None, verify: bool) -> None:
        manifest = plan.manifest
        store = self.store(plan.tier)
        checkpoint = manifest.get("checkpoint")
        spool_dir = Path(tempfile.mkdtemp(prefix="drsvc-restore-"))
        # the clone's writer marks come off beside the container and health phases (_restore_volume)
        unmarking = cf.ThreadPoolExecutor(1, thread_name_prefix="restore-unmark")
        unmarked: cf.Future[object] | None = None
        try:
            with cf.ThreadPoolExecutor(2, thread_name_prefix="restore") as pool:
                fetched = pool.submit(self._fetch, plan, result, store, spool_dir) if checkpoint else None
                with self._phase(result, "volume"):
                    unmark = self._restore_volume(plan, store, verify=verify, result=result)
                if unmark is not None:
                    unmarked = unmarking.submit(unmark)
                faults.point("after-restore-volume")
                archive = fetched.result() if fetched else None
            if archive is None:
                result.checks["container"] = "not restored: crash-consistent point (volume only)"
            else:
                self._container(plan, result, archive, network)
        finally:
            unmarking.shutdown(wait=True)  # never leave it running under a teardown or a report
            shutil.rmtree(spool_dir, ignore_errors=True)
        if unmarked is not None:
            unmarked.result()  # a mark left on an object fails the restore (the RTO counts the wait)

    def _container(self, plan: RestorePlan, result: RestoreResult, archive: Path, network: str | None) -> None:
        """The container and health phases: the desktop's container restored from its checkpoint."""
        manifest = plan.manifest
        runtime = self.services.runtime
        with self._phase(result, "container"):
            if confirm_identity(runtime.inspect, plan.target):  # still the container validated
                runtime.remove(plan.name)
                faults.point("after-container-removed")
            labels = plan.target.labels()
            if labels is None and self.relocate is not None:
                labels = {LABEL_VOLUME: plan.volume_url}  # restored in place, its volume elsewhere
            if labels is not None and self._effects is not None:
                labels.update(self._effects.container_labels())  # the mark cleanup checks after a kill
            for attempt in (1, 2):
                try:
                    # what the runtime leaves while it restores (a CRI-O checkpoint image) is recorded first
                    with archive.open("rb") as body, self._artifact() as token:
                        restored = runtime.restore(
                            body,
                            name=None if plan.name == manifest["runtime"]["container"] else plan.name,
                            tcp_established=bool(manifest["runtime"].get("tcp_established", True)),
                            network=network,
                            size=archive.stat().st_size,
                            labels=labels,
                            **({"token": token} if token else {}),
                        )
                    break
                except BackendError as e:
                    # CRIU restores now and then fail transiently when several run at once
                    # ("criu failed: type NOTIFY"); one retry, counted in the RTO and reported.
                    if attempt == 2 or "criu failed" not in str(e):
                        raise
                    runtime.remove(plan.name)
                    result.checks["container_retry"] = f"first restore attempt failed: {str(e)[:200]}"
            faults.point("after-clone-created")
        with self._phase(result, "health"):
            self._health(plan, restored, result)

    def _fetch(self, plan: RestorePlan, result: RestoreResult, store: ChunkStore, spool_dir: Path) -> Path:
        with self._phase(result, "fetch"):
            image = plan.manifest.get("image")
            runtime = self.services.runtime
            if image and image.get("image_id") and not is_full_id(str(image["image_id"]).removeprefix("sha256:")):
                # what it names is asked of the runtime, loaded, recorded and later forgotten: an id, no name or path
                raise IntegrityError(
                    f"point {plan.point['id']}: its manifest names base image {str(image['image_id'])[:80]!r}, "
                    "not a full image id; refused"
                )
            if image and image.get("image_id") and not runtime.image_exists(image["image_id"]):
                record = store.get_manifest(IMAGES, image_record_id(plan.manifest) or image_key(image["image_id"]))
                ref = StreamRef.from_dict(record["stream"])
                if ref.key_id != StreamRef.from_dict(plan.manifest["volume"]["stream"]).key_id:
                    # a point names only its own tenant's image records (dedup stays in a tenant)
                    point_id = plan.point["id"]
                    raise IntegrityError(f"base image record of point {point_id} is sealed with another tenant's key")
                if self._effects is not None:
                    self._effects.loading(image["image_id"])  # recorded before the runtime has it
                runtime.load_image(store.open_stream(ref))
                faults.point("after-image-loaded")
                result.checks["image"] = f"loaded {image['image']} from the {plan.tier} store"
            path = spool_dir / "checkpoint.tar"
            ref = StreamRef.from_dict(plan.manifest["checkpoint"]["stream"])
            task = f"fetch checkpoint ({plan.tier})"
            # every memory page of the desktop: readable by root alone while it exists
            with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as out:
                # held to the archive rules before the container phase: a hostile archive stops
                # the restore before the desktop's container is removed
                pieces = store.read_stream(ref)
                for piece in archive_rules.checked(pieces, what=f"checkpoint archive of point {plan.point['id']}"):
                    out.write(piece)
                    self.on_event("progress", task=task, advance=len(piece), total=ref.size)
            self.on_event("progress", task=task, done=True)
            return path

    def _restore_volume(
        self, plan: RestorePlan, store: ChunkStore, *, verify: bool, result: RestoreResult
    ) -> Callable[[], object] | None:
        """Write the volume; what still has to run before the restore is done (the writer marks'
        removal, which ``_run`` overlaps with the container and health phases), if anything."""
        manifest = plan.manifest
        source = self.services.volume(manifest["volume"]["url"])
        snap = manifest["volume"]["pool_snapshot"]
        objects = manifest["volume"]["objects"]
        if plan.tier == "hot" and plan.from_snapshot and plan.in_place:
            source.rollback_to(snap, keep=[o["name"] for o in objects])
            target = source
            result.checks["volume"] = f"rolled back to pool snapshot {snap}"
        elif plan.tier == "hot" and plan.from_snapshot:
            # the manifest lists the snapshot's objects with their metadata: no scan of the snapshot
            listed = [_volume_object(entry) for entry in objects]
            # a namespace the plan listed and found empty is not listed again (a whole-pool scan)
            namespace = namespace_of(plan.volume_url) or ""
            target = source.clone_from_snapshot(
                snap, namespace, listed, fresh=plan.target.empty, created=self._created(), mark=self._mark()
            )
            result.checks["volume"] = f"copied from pool snapshot {snap} into {plan.volume_url}"
        else:  # cold, or hot chunks whose pool snapshot is gone
            target = self.services.volume(plan.volume_url)
            stream = _Waited(store.read_stream(StreamRef.from_dict(manifest["volume"]["stream"])))
            started = time.monotonic()
            # a namespace the plan listed and found empty is not listed again (a whole-pool scan)
            target.write_objects(
                _split_objects(objects, stream),
                exact=True,
                fresh=plan.target.empty,
                created=self._created(),
                mark=self._mark(),
            )
            result.checks["volume"] = f"written from {len(objects)} objects' chunks in the {plan.tier} store"
            # where the writer's time went: waiting for verified chunks (fetch, decrypt, decompress,
            # re-hash on the read workers), the rest submitting writes and waiting on RADOS
            waited = stream.seconds
            result.checks["volume_detail"] = {
                "chunks_wait_s": round(waited, 3),
                "writes_s": round(time.monotonic() - started - waited, 3),
            }
        unmark: Callable[[], object] | None = None
        if self._effects is not None and self._mark() is not None:
            # recorded first: once the marks are off, only this says every recorded name is this run's
            # (so a kill while they come off is cleaned up by name, as after the marks are gone)
            self._effects.volume_written()
            names = [o["name"] for o in objects]
            # one rmxattr op per object (~1.5 s for a 1 GiB desktop's 7,223 objects on the lab's OSD):
            # nothing the container or its health check needs, so it runs beside them
            unmark = _Timed(lambda: target.unmark(names), result.checks.setdefault("volume_detail", {}), "unmark_s")
            if verify:  # the digests below would count the marks
                unmark()
                unmark = None
        if verify:
            expected = {o["name"]: o["digest"] for o in objects}
            # each object hashed in the form its digest was recorded in: a point may mix forms
            actual = target.digests_now(like=expected)
            if actual != expected:
                missing = sorted(set(expected) - set(actual))
                extra = sorted(set(actual) - set(expected))
                wrong = sorted(n for n in set(expected) & set(actual) if expected[n] != actual[n])
                raise IntegrityError(
                    f"restored volume {plan.volume_url} differs from the manifest: "
                    f"{len(missing)} missing, {len(extra)} extra, {len(wrong)} different"
                    + (f" (e.g. {(missing + extra + wrong)[0]})" if missing or extra or wrong else "")
                )
            result.checks["data"] = f"{len(expected)} objects match the manifest's digests"
        return unmark

    def _health(self, plan: RestorePlan, restored: DesktopRef, result: RestoreResult) -> None:
        runtime = self.services.runtime
        time.sleep(SETTLE_SECONDS)
        now = runtime.inspect(plan.name)
        if now.state != "running":
            raise DrsvcError(f"restored container {plan.name} is {now.state or 'gone'}, not running")
        if not (now.restored_at or restored.restored_at):
            raise DrsvcError(f"container {plan.name} runs but was not restored from the checkpoint")
        result.checks["running"] = True
        result.checks["restored_from_checkpoint"] = True
        probe = plan.policy.probe if plan.policy else None
        if probe is None:
            return
        deadline = time.monotonic() + probe.timeout.total_seconds()
        last = ""
        while True:
            ok, last = self._probe_once(plan, probe)
            if ok:
                result.checks["probe"] = last
                return
            if time.monotonic() >= deadline:
                raise DrsvcError(f"health probe failed for {plan.name}: {last}")
            time.sleep(0.2)

    def _probe_once(self, plan: RestorePlan, probe: Any) -> tuple[bool, str]:
        runtime = self.services.runtime
        if probe.command:
            code, out = runtime.exec(plan.name, list(probe.command), timeout=probe.timeout.total_seconds())
            return code == 0, f"command {' '.join(probe.command)} exit {code}: {out.strip()[:200]}"
        port = int(probe.tcp)
        if runtime.probe_tcp(plan.name, port):
            return True, f"tcp {port} accepts connections"
        return False, f"tcp {port} refused"


class _Waited:
    """An iterator passed through, counting the seconds its consumer waited for each next item."""

    def __init__(self, items: Iterator[bytes]) -> None:
        self.items = items
        self.seconds = 0.0

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        t = time.monotonic()
        try:
            return next(self.items)
        finally:
            self.seconds += time.monotonic() - t


class _Timed:
    """``fn()``, its seconds stored as ``into[key]`` (the marks' removal, beside the container phase)."""

    def __init__(self, fn: Callable[[], object], into: dict[str, float], key: str) -> None:
        self.fn, self.into, self.key = fn, into, key

    def __call__(self) -> object:
        t = time.monotonic()
        try:
            return self.fn()
        finally:
            self.into[self.key] = round(time.monotonic() - t, 3)


def _volume_object(entry: dict[str, Any]) -> VolumeObject:
    """One object of a manifest's volume section, as a volume writes it."""
    return VolumeObject(
        name=entry["name"],
        size=int(entry["size"]),
        xattrs={k: bytes.fromhex(v) for k, v in entry["xattrs"].items()},
        omap={k: bytes.fromhex(v) for k, v in entry["omap"].items()},
    )


def _split_objects(
    objects: list[dict[str, Any]], stream: Iterable[bytes]
) -> Iterator[tuple[VolumeObject, Iterator[bytes]]]:
    """Cut the volume's one data stream back into its objects (sizes from the manifest)."""
    pending = memoryview(b"")
    pieces = iter(stream)

    def take(n: int) -> Iterator[bytes]:
        nonlocal pending
        while n > 0:
            if not pending:
                nxt = next(pieces, None)
                if nxt is None:
                    raise IntegrityError("volume stream ended before its last object")
                if len(nxt) <= n:  # the whole chunk lies in this object: passed on as it is, not copied
                    n -= len(nxt)
                    yield nxt
                    continue
                pending = memoryview(nxt)
            part = pending[:n]
            pending = pending[n:]
            n -= len(part)
            yield bytes(part)

    for entry in objects:
        obj = _volume_object(entry)
        data = take(obj.size)
        yield obj, data
        for _ in data:  # a consumer that stopped early must not shift the next object
            pass
