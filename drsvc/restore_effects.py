"""What a restore changes outside the catalog, written down before it is changed (``drsvc.intents``).

One restore run records, under an owner lease of its own:

* ``point-read`` on the point it reads: prune keeps that point (hot and cold) until the run ends;
* in place: ``restore-in-place`` on the desktop, with the phase reached. A run that dies leaves it
  pending; cleanup marks it ``interrupted`` (visible in ``points list``, an event for alerting) and
  the same ``drsvc restore DESKTOP`` resumes it from the same point;
* as a clone: ``clone-volume`` (with the names of the objects it may write, before it writes one)
  and ``clone-container`` (with the phase reached). Both carry the run's writer ``mark``: into an
  empty namespace each object is created carrying it (``WRITER_XATTR``, taken off once the
  intent says ``written``), and the clone's container gets it as label ``drsvc.restore``. Kept
  when the restore succeeds (a drill's temporary clones stay pending until its teardown). When it
  fails, the teardown removes the objects this run wrote (``created``) and the container only if
  this run made it; when the run was killed, cleanup removes the recorded names that carry the
  mark (all of them once ``written``) and the container only if it carries the mark. Never
  anything else in the namespace: an object another writer put there (a racing restore of the
  same name, an operator) stays, and the output says so;
* what the runtime's restore leaves while it runs (``artifact``): a CRI-O checkpoint image in the
  registry (``checkpoint-image``) or the archive on the node (``checkpoint-archive``), both every
  memory page of the desktop in plaintext. The adapter deletes them when it is done; the run then
  asks the runtime to ``forget`` them (a no-op when they are gone) and resolves the intent
  ``done``; a killed run leaves the intent to cleanup, which deletes them;
* ``loaded-image`` for a base image the run loads because the runtime lacks it (``loading``):
  ``kept`` once the restored container runs from it; removed again (unless a container uses it)
  when the run fails, and by cleanup when it was killed.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from types import TracebackType
from typing import TYPE_CHECKING

from drsvc.catalog import Catalog
from drsvc.desktop_guard import refuse_restore_in_place
from drsvc.errors import DrsvcError
from drsvc.intents import Intents, Owner, interrupted_restores, pack_names, pending, resolve
from drsvc.leftovers import recorded
from drsvc.runtimes.base import LABEL_RESTORE, forget, restore_artifact

if TYPE_CHECKING:
    from drsvc.restore_plan import RestorePlan

log = logging.getLogger(__name__)

# The phases in which a restore removes and creates the container: before them, a container at
# the clone's name is not this run's.
CONTAINER_PHASES = ("container", "health")


@contextmanager
def leaving(intents: Intents, runtime: object, **detail: object) -> Iterator[str | None]:
    """Around one ``runtime.restore``: yield the token to pass it (None: it leaves nothing).

    What the restore would leave (``restore_artifact``) is recorded before the block and forgotten
    after it (``leftovers.recorded``).
    """
    token = uuid.uuid4().hex[:16]
    left = restore_artifact(runtime, token)
    if left is None:
        yield None
        return
    with recorded(intents, runtime, left, "restore.artifact-kept", token=token, **detail):
        yield token


class RestoreEffects:
    """The intents of one restore run (a context manager around it)."""

    def __init__(
        self, catalog: Catalog, plan: RestorePlan, restore_id: int, *, temporary: bool = False, runtime: object = None
    ) -> None:
        self.catalog = catalog
        self.runtime = runtime
        self.plan = plan
        self.restore_id = restore_id
        self.temporary = temporary
        self.owner = Owner(catalog)
        self.intents = Intents(catalog, self.owner.name)
        self.read: int | None = None
        self.in_place: int | None = None
        self.clone: list[int] = []
        self.loaded: list[tuple[int, str]] = []
        self.created: set[str] = set()  # objects this run wrote into a clone's namespace (the volume fills it)
        self.reached: set[str] = set()  # the phases this run entered
        # what this run's objects (while written) and its clone container carry: nothing else has it
        self.mark = f"{restore_id}.{uuid.uuid4().hex[:16]}"

    def __enter__(self) -> RestoreEffects:
        self.owner.__enter__()
        try:
            self._record()
        except BaseException as e:  # refused (a backup of the desktop runs): nothing was touched
            self.__exit__(type(e), e, e.__traceback__)
            raise
        return self

    def _record(self) -> None:
        plan = self.plan
        self.read = self.intents.record("point-read", plan.point["id"], restore=self.restore_id)
        if plan.as_name:
            # every name it may write, before it writes one: after a kill -9, cleanup removes these and no other
            names = pack_names(o["name"] for o in plan.manifest["volume"]["objects"])
            of = plan.desktop["id"]
            # objects are marked only where they are created exclusively (an empty namespace)
            marked = {"mark": self.mark} if plan.target.empty else {}
            self.clone = [
                self.intents.record(
                    "clone-volume",
                    plan.volume_url,
                    restore=self.restore_id,
                    of=of,
                    fresh=plan.target.empty,
                    **marked,
                    **names,
                ),
                self.intents.record(
                    "clone-container", plan.name, restore=self.restore_id, of=of, phase="plan", mark=self.mark
                ),
            ]
        else:
            # recorded and checked in one transaction: a live backup of the desktop, or another
            # in-place restore of it, is seen by one of the two (drsvc.desktop_guard)
            with self.catalog.transaction():
                self.in_place = self.intents.record(
                    "restore-in-place",
                    plan.desktop["id"],
                    restore=self.restore_id,
                    point=plan.point["id"],
                    phase="plan",
                )
                refuse_restore_in_place(self.catalog, plan.desktop["id"], self.in_place)

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        try:
            if self.read is not None:
                resolve(self.catalog, self.read, "done")
        finally:
            self.owner.__exit__(et, ev, tb)

    def phase(self, name: str) -> None:
        """Remember how far the restore got: an interrupted in-place restore shows it; a clone's
        container is removed (teardown, cleanup) only once its container phase began."""
        self.reached.add(name)
        if self.in_place is not None:
            self.intents.note(self.in_place, phase=name)
        elif self.clone and name in CONTAINER_PHASES:
            self.intents.note(self.clone[1], phase=name)

    @property
    def volume_mark(self) -> str | None:
        """The mark this run's clone objects carry while written (None: not a clone into an empty namespace)."""
        return self.mark if self.clone and self.plan.target.empty else None

    def volume_written(self) -> None:
        """Every recorded name is this run's object now: said durably before the marks come off."""
        if self.clone:
            self.intents.note(self.clone[0], written=True)

    def container_labels(self) -> dict[str, str]:
        """The label the clone's container gets from this run (what cleanup checks before removing it)."""
        target = self.plan.target
        return {LABEL_RESTORE: self.mark} if self.clone and target.clone and target.foreign is None else {}

    @property
    def container_made(self) -> bool:
        """Whether this run began to replace or create the clone's container."""
        return bool(self.reached & set(CONTAINER_PHASES))

    def artifact(self) -> AbstractContextManager[str | None]:
        """Around ``runtime.restore``: the token naming what it leaves, recorded first (``leaving``)."""
        return leaving(self.intents, self.runtime, restore=self.restore_id)

    def loading(self, image_id: str) -> None:
        """Record, before loading it, a base image the runtime lacks."""
        intent_id = self.intents.record("loaded-image", image_id, restore=self.restore_id, of=self.plan.desktop["id"])
        self.loaded.append((intent_id, image_id))

    def succeeded(self) -> None:
        if self.in_place is not None:
            resolve(self.catalog, self.in_place, "done")
            # an earlier interrupted restore of this desktop is finished by this one
            for intent in interrupted_restores(self.catalog):
                if intent.target == self.plan.desktop["id"]:
                    resolve(self.catalog, intent.id, "done")
        if not self.temporary:
            for intent_id in self.clone:
                resolve(self.catalog, intent_id, "kept")
        for intent_id, _ in self.loaded:
            resolve(self.catalog, intent_id, "kept")  # the restored container runs from it

    def failed(self, teardown: Callable[[], None]) -> None:
        """The run raised: remove a clone it may have made; an in-place restore is marked failed."""
        if self.in_place is not None:
            resolve(self.catalog, self.in_place, "failed")
        if self.clone:
            try:
                teardown()
            except DrsvcError:
                return  # stays pending: once this process is gone, cleanup retries
            for intent_id in self.clone:
                resolve(self.catalog, intent_id, "undone")
        for intent_id, image_id in self.loaded:
            try:  # after the teardown: the clone no longer runs from it
                resolve(self.catalog, intent_id, forget(self.runtime, "loaded-image", image_id))
            except DrsvcError:
                continue  # stays pending: cleanup retries


def resolve_clone(catalog: Catalog, container: str, volume_url: str) -> None:
    """After a clone was torn down (drills): its pending intents are done with."""
    for kind, target in (("clone-container", container), ("clone-volume", volume_url)):
        for intent in pending(catalog, kind, target):
            resolve(catalog, intent.id, "undone")
