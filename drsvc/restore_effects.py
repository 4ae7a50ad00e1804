"""What a restore changes outside the catalog, written down before it is changed (``drsvc.intents``).

One restore run records, under an owner lease of its own:

* ``point-read`` on the point it reads: prune keeps that point (hot and cold) until the run ends;
* in place: ``restore-in-place`` on the desktop, with the phase reached. A run that dies leaves it
  pending; cleanup marks it ``interrupted`` (visible in ``points list``, an event for alerting) and
  the same ``drsvc restore DESKTOP`` resumes it from the same point;
* as a clone: ``clone-volume`` and ``clone-container``. Kept when the restore succeeds (a drill's
  temporary clones stay pending until its teardown); removed again when it fails; removed by
  cleanup when the run was killed.
"""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING

from drsvc.catalog import Catalog
from drsvc.errors import DrsvcError
from drsvc.intents import Intents, Owner, interrupted_restores, pending, resolve

if TYPE_CHECKING:
    from drsvc.restore import RestorePlan


class RestoreEffects:
    """The intents of one restore run (a context manager around it)."""

    def __init__(self, catalog: Catalog, plan: RestorePlan, restore_id: int, *, temporary: bool = False) -> None:
        self.catalog = catalog
        self.plan = plan
        self.restore_id = restore_id
        self.temporary = temporary
        self.owner = Owner(catalog)
        self.intents = Intents(catalog, self.owner.name)
        self.read: int | None = None
        self.in_place: int | None = None
        self.clone: list[int] = []

    def __enter__(self) -> RestoreEffects:
        self.owner.__enter__()
        plan = self.plan
        self.read = self.intents.record("point-read", plan.point["id"], restore=self.restore_id)
        if plan.as_name:
            self.clone = [
                self.intents.record("clone-volume", plan.volume_url, restore=self.restore_id, of=plan.desktop["id"]),
                self.intents.record("clone-container", plan.name, restore=self.restore_id, of=plan.desktop["id"]),
            ]
        else:
            self.in_place = self.intents.record(
                "restore-in-place", plan.desktop["id"], restore=self.restore_id, point=plan.point["id"], phase="plan"
            )
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        try:
            if self.read is not None:
                resolve(self.catalog, self.read, "done")
        finally:
            self.owner.__exit__(et, ev, tb)

    def phase(self, name: str) -> None:
        """Remember how far an in-place restore got (shown when it is interrupted)."""
        if self.in_place is not None:
            self.intents.note(self.in_place, phase=name)

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


def resolve_clone(catalog: Catalog, container: str, volume_url: str) -> None:
    """After a clone was torn down (drills): its pending intents are done with."""
    for kind, target in (("clone-container", container), ("clone-volume", volume_url)):
        for intent in pending(catalog, kind, target):
            resolve(catalog, intent.id, "undone")
