"""The backup's side threads: the store pool, and what a batch reads from its new pool snapshot.

Split from ``drsvc.backup`` (which imports these names, so ``drsvc.backup.SnapshotReads`` and
``drsvc.backup.STORE_NICE`` still resolve): how the run's threads are made and prioritised is a
concern of its own, beside the job's flow.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import os
from collections.abc import Callable

from drsvc.runtimes.base import DesktopRef
from drsvc.volumes.base import VolumeObject

STORE_NICE = 10  # store threads' nice value above the run's own: the next batch's dumps come first


def _give_way() -> None:
    """Lower the calling store thread's CPU priority (and its helper threads', which inherit it).

    Pipelined stores overlap the next batch's checkpoints; CRIU dumps that memory while desktops
    stand frozen, so a dump slowed by chunking lengthens every freeze of its batch. On Linux nice
    is per thread; elsewhere (or when refused) nothing changes.
    """
    with contextlib.suppress(OSError, AttributeError):
        os.setpriority(os.PRIO_PROCESS, 0, min(19, os.getpriority(os.PRIO_PROCESS, 0) + STORE_NICE))


def store_pool(workers: int, *, pipelined: bool) -> cf.ThreadPoolExecutor:
    """The run's store threads: at lower priority only when batches are pipelined (``[scheduler]
    pipeline``); otherwise no checkpoint runs beside them and they keep the run's priority."""
    return cf.ThreadPoolExecutor(workers, thread_name_prefix="store", initializer=_give_way if pipelined else None)


class SnapshotReads:
    """What a batch's stores read from its new pool snapshot, started on side threads the moment the
    snapshot exists, while the checkpoints end: the pool listing (one for the whole batch) and, per
    desktop, the stats of the objects its parent point names (most of what the listing will name).

    ``start`` is the snapshot callback: it only submits (the desktops still stand frozen). Should it
    not have run, ``listing`` submits the listing itself: a batch lists its pool once either way.
    """

    def __init__(
        self,
        side: cf.Executor,
        list_pool: Callable[[], dict[str, list[str]]],
        stamp_ahead: Callable[[DesktopRef, str], dict[str, VolumeObject]],
        batch: list[DesktopRef],
        snap: str,
    ) -> None:
        self._side = side
        self._list_pool = list_pool
        self._stamp_ahead = stamp_ahead
        self._batch = batch
        self._snap = snap
        self._listing: cf.Future[dict[str, list[str]]] | None = None
        self.stamped: dict[str, cf.Future[dict[str, VolumeObject]]] = {}  # desktop id -> its stats

    def start(self) -> None:
        """Submit the listing and every desktop's stats (called once, as soon as the snapshot exists)."""
        self._listing = self._side.submit(self._list_pool)
        for d in self._batch:
            self.stamped[d.desktop_id] = self._side.submit(self._stamp_ahead, d, self._snap)

    def listing(self) -> cf.Future[dict[str, list[str]]]:
        """The batch's listing: the one ``start`` submitted, else one submitted now."""
        if self._listing is None:
            self._listing = self._side.submit(self._list_pool)
        return self._listing
