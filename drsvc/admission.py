"""Admission control: bounded work per shared resource while many desktops are restored at once.

A restore storm (a lost node, pool or site) restores dozens of desktops together, and what they
compete for is not "restores" but three resources with very different costs:

* ``download``: reading from the store the restore comes from (S3 bandwidth and request slots;
  the checkpoint fetch and the volume's chunks of one desktop count once: they overlap anyway);
* ``ceph``: writing a volume into Ceph (rollbacks and chunk writes share the OSDs);
* ``criu@HOST``: CRIU restores on one host (CPU and memory of that host; a restored desktop's
  pages are written at once).

Everything at once divides each resource by the number of desktops: every desktop takes as long as
the slowest, and the first is up no sooner than the last. Admission gives each resource a few
slots and lets desktops through in priority order -- a freed slot goes to the waiting desktop
ranked first in the plan, whichever thread the OS wakes first (``RankedSlots``) -- so the first are
up in about their own restore time, and the pipeline keeps every resource busy (one desktop
downloads while another's CRIU restore runs). ``RestoreGate`` maps one restore's phases
(``RestoreJob``'s ``phase`` events) onto the slots: it blocks in the event of a phase start until
that phase's resources are free, and releases them when the phase is done. Waiting counts in the
desktop's RTO, not in its phases.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Event = Callable[..., None]


@dataclass(frozen=True)
class Limits:
    """Slots per shared resource."""

    downloads: int = 3
    ceph_writes: int = 2
    criu_per_host: int = 2

    def document(self) -> dict[str, int]:
        return {"downloads": self.downloads, "ceph_writes": self.ceph_writes, "criu_per_host": self.criu_per_host}


class RankedSlots:
    """``size`` slots given to waiters by rank (lowest first; equal ranks in arrival order).

    A semaphore lets whichever thread runs first take a freed slot, so a desktop of lower priority
    that happens to ask at the right moment would overtake one that waits; here a free slot goes
    only to the first-ranked waiter.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._free = size
        self._waiting: list[tuple[int, int]] = []  # heap of (rank, arrival)
        self._arrivals = itertools.count()
        self._changed = threading.Condition()

    def acquire(self, rank: int) -> None:
        with self._changed:
            me = (rank, next(self._arrivals))
            heapq.heappush(self._waiting, me)
            while not (self._free and self._waiting[0] == me):
                self._changed.wait()
            heapq.heappop(self._waiting)
            self._free -= 1
            self._changed.notify_all()  # the next-ranked waiter may take a slot still free

    def release(self) -> None:
        with self._changed:
            if self._free >= self.size:
                raise ValueError("slot released more often than acquired")
            self._free += 1
            self._changed.notify_all()

    def waiting(self) -> int:
        """How many wait now (for reports and tests)."""
        with self._changed:
            return len(self._waiting)


class Admission:
    """The slots of every shared resource of one storm (``limits`` None: no bounds at all)."""

    def __init__(self, limits: Limits | None) -> None:
        self.limits = limits
        self._slots: dict[str, RankedSlots] = {}
        self._lock = threading.Lock()
        self.waited: dict[str, float] = defaultdict(float)  # resource kind -> seconds spent waiting

    def _size(self, resource: str) -> int:
        assert self.limits is not None
        kind = resource.partition("@")[0]
        return {"download": self.limits.downloads, "ceph": self.limits.ceph_writes}.get(kind, self.limits.criu_per_host)

    def acquire(self, resource: str, rank: int = 0) -> None:
        """Take one slot of ``resource`` (``criu@HOST`` slots exist per host), waiting for it
        behind every waiter of a lower ``rank`` (the desktop's place in the plan)."""
        if self.limits is None:
            return
        with self._lock:
            slot = self._slots.get(resource)
            if slot is None:
                slot = self._slots[resource] = RankedSlots(self._size(resource))
        started = time.monotonic()
        slot.acquire(rank)
        waited = time.monotonic() - started
        with self._lock:
            self.waited[resource.partition("@")[0]] += waited

    def release(self, resource: str) -> None:
        if self.limits is None:
            return
        self._slots[resource].release()

    def document(self) -> dict[str, Any]:
        if self.limits is None:
            return {}
        return {**self.limits.document(), "waited_seconds": {k: round(v, 2) for k, v in self.waited.items()}}


class RestoreGate:
    """One desktop's restore phases on the shared slots: an ``on_event`` for ``RestoreJob``.

    ``fetch`` and ``volume`` run at once in two threads: the desktop holds one ``download`` slot
    from the first of them starting to the last finishing (the second waits with the first while
    it is taken); ``volume`` also holds a ``ceph`` slot; ``container`` holds ``criu@HOST``.
    Resources are always taken in that order (download, ceph, criu), so no two desktops wait for
    each other. ``rank`` is the desktop's place in the plan: a lower rank is served first. Every
    event is passed on to ``forward``.
    """

    def __init__(self, admission: Admission, host: str, forward: Event | None = None, *, rank: int = 0) -> None:
        self.admission = admission
        self.host = host
        self.rank = rank
        self.forward = forward
        self._lock = threading.Lock()  # fetch and volume: who takes the download slot
        self._held_lock = threading.Lock()  # never held while waiting for a slot
        self._transfers = 0
        self._held: list[str] = []

    def _take(self, resource: str) -> None:
        self.admission.acquire(resource, self.rank)
        with self._held_lock:
            self._held.append(resource)

    def _give(self, resource: str) -> None:
        with self._held_lock:
            if resource not in self._held:
                return
            self._held.remove(resource)
        self.admission.release(resource)

    def __call__(self, kind: str, **fields: Any) -> None:
        if kind == "phase":
            phase, state = fields.get("phase"), fields.get("state")
            if state == "start":
                self._start(str(phase))
            elif state == "done":
                self._done(str(phase))
        if self.forward is not None:
            self.forward(kind, **fields)

    def _start(self, phase: str) -> None:
        if phase in ("fetch", "volume"):
            with self._lock:  # the second of fetch/volume waits here while the first takes the slot
                if self._transfers == 0:
                    self._take("download")
                self._transfers += 1
            if phase == "volume":
                self._take("ceph")
        elif phase == "container":
            self._take(f"criu@{self.host}")

    def _done(self, phase: str) -> None:
        if phase in ("fetch", "volume"):
            if phase == "volume":
                self._give("ceph")
            with self._lock:
                self._transfers -= 1
                if self._transfers == 0:
                    self._give("download")
        elif phase == "container":
            self._give(f"criu@{self.host}")

    def release_all(self) -> None:
        """Give back whatever is still held (a restore that ended in an error between events)."""
        with self._held_lock:
            held = list(self._held)
        for resource in held:
            self._give(resource)
        self._transfers = 0
