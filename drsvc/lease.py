"""A catalog lease held while a job mutates points, stores or snapshots.

Cron may start ``drsvc run --once`` every minute while the previous run still works; the lease
makes the second one step aside. The lease expires unless renewed (a background thread renews it
every third of its lifetime), so a machine that died does not block the fleet forever, and a
holder on this host whose process is gone (``kill -9``) is recognised at once. Every
acquisition gets a larger fencing token: before work is committed (a point marked complete), the
job checks that its token is still the current one, so a run that lost its lease while paused
(GC pause, suspended VM) cannot commit over a newer run's work.
"""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path
from types import TracebackType

from drsvc.catalog import Catalog
from drsvc.errors import Busy, DrsvcError

WORK_LEASE = "work"


class LeaseLost(DrsvcError):
    """The lease expired or was taken over while this job worked; nothing more is committed."""


def holder_id() -> str:
    """``host:pid@start``: this process, and when it started (``/proc``), so a reused pid is not it."""
    start = _start_ticks(os.getpid())
    return f"{socket.gethostname()}:{os.getpid()}" + (f"@{start}" if start else "")


def _start_ticks(pid: int) -> str | None:
    """When process ``pid`` started, in clock ticks since boot (immune to wall-clock steps)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rpartition(")")[2].split()  # the name in parentheses may hold spaces
    return fields[19] if len(fields) > 19 else None  # field 22, counted from the state (field 3)


def holder_here(holder: str) -> bool | None:
    """Whether ``holder`` (``host:pid[@start]``) is a live process on this host; None elsewhere.

    A holder here is judged by its process, never by the wall clock: an NTP step forward must not
    make a live run look lapsed, a step back must not make a dead one look held. A holder written
    without a start time (an older drsvc) is dead when its pid is gone, and otherwise unknown
    (None: its pid may have been reused; its lease's expiry decides, as before).
    """
    host, _, rest = holder.rpartition(":")
    pid, _, start = rest.partition("@")
    if host != socket.gethostname() or not pid.isdigit():
        return None
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process: it exists
    if not start:
        return None
    return _start_ticks(int(pid)) in (None, start)


def holder_dead(holder: str) -> bool:
    """Whether ``holder`` is a process on this host that no longer exists (or a reused pid)."""
    return holder_here(holder) is False


def holder_alive(holder: str) -> bool:
    """Whether ``holder`` is a live process on this host (held whatever its lease's expiry says)."""
    return holder_here(holder) is True


class Lease:
    """Context manager: acquire (or raise ``Busy``), renew in the background, release on exit.

    This one keeps the lease in the catalog. ``drsvc.executors.kubernetes_lease.KubernetesLease``
    keeps it in a ``coordination.k8s.io`` Lease instead (a multi-node deployment shares no
    catalog); both fill in the four steps below: acquire, renew, release, valid.
    """

    def __init__(self, catalog: Catalog, name: str = WORK_LEASE, ttl: float = 900) -> None:
        self.catalog = catalog
        self._setup(name, ttl)

    def _setup(self, name: str, ttl: float) -> None:
        self.name = name
        self.ttl = ttl
        self.holder = holder_id()
        self.token: int | None = None
        self._lost = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.joined = False

    # ---- the four steps a lease store provides
    def _acquire(self) -> int:
        """Take the lease; its new fencing token, or ``Busy``."""
        token = self.catalog.acquire_lease(self.name, self.holder, self.ttl, live=holder_alive)
        if token is None:
            rows = self.catalog.query("SELECT holder FROM leases WHERE name = ?", [self.name])
            other = rows[0]["holder"] if rows else "?"
            if holder_dead(other):
                token = self.catalog.acquire_lease(self.name, self.holder, self.ttl, take_from=other)
            if token is None:
                raise Busy(f"another drsvc run holds the {self.name!r} lease ({other}); try again later")
        return token

    def _renew_once(self, token: int) -> bool:
        """Extend the lease; False when it was lost."""
        return self.catalog.renew_lease(self.name, token, self.ttl)

    def _release(self, token: int) -> None:
        self.catalog.release_lease(self.name, token)

    def _valid(self, token: int) -> bool:
        """Whether ``token`` is still the lease's current, unexpired token."""
        return self.catalog.lease_valid(self.name, token, live=holder_alive)

    # ---- shared behaviour
    def __enter__(self) -> Lease:
        self.token = self._acquire()
        self._thread = threading.Thread(target=self._renew, name=f"lease-{self.name}", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self.token is not None:
            self._release(self.token)

    def _renew(self) -> None:
        assert self.token is not None
        while not self._stop.wait(self.ttl / 3):
            try:
                renewed = self._renew_once(self.token)
            except DrsvcError:
                continue  # the lease store is unreachable for now: try again; expiry decides
            if not renewed:
                self._lost.set()
                return

    def check(self) -> None:
        """Raise ``LeaseLost`` unless this lease is still held with its token (the fence)."""
        if self.token is None or self._lost.is_set() or not self._valid(self.token):
            self._lost.set()
            raise LeaseLost(f"lost the {self.name!r} lease (token {self.token}); stopping without committing")


class JoinedLease(Lease):
    """A lease another process holds and renews (the scheduler), joined by its token.

    Node agents started by the Kubernetes executor work under the scheduler's lease: they
    neither acquire, renew nor release it, but every commit is fenced by its token all the same.
    """

    def __init__(self, catalog: Catalog, token: int, name: str = WORK_LEASE) -> None:
        super().__init__(catalog, name)
        self.token = token
        self.joined = True

    def __enter__(self) -> JoinedLease:
        self.check()
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        return None
