"""A deadline for one desktop's work on one thread, checked where that work waits for a backend.

A desktop's processes shape what its capture reads (a million objects, huge ones, metadata slow to
page through): each backend call has its own timeout (``[timeouts]``), but the calls add up to
hours, and a run's next batch waits for its slowest store. ``within`` sets a deadline for the
calling thread (a ``contextvars`` variable: the store threads of a run each carry their own);
``check`` raises ``DeadlineExceeded`` once it has passed. Checked before each Ceph call is sent
(``drsvc.ceph.ceph_errors``; never in an aio wait: an op sent is always waited for), between
listed names and stat'ed objects, and between the objects and chunks a capture reads: a desktop
past its deadline fails at the next call, at most one call's timeout late. Threads a capture starts
(scans, digests, uploads) carry no deadline; the thread that waits for them checks it.

Its own module (it imports only ``errors`` and ``units``), so adapters can check without importing a job.
"""

from __future__ import annotations

import contextlib
import contextvars
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta

from drsvc.errors import DrsvcError
from drsvc.units import format_duration

__all__ = ["Deadline", "DeadlineExceeded", "check", "within"]


class DeadlineExceeded(DrsvcError):
    """One desktop's work did not finish within its deadline (that desktop fails, the others go on)."""


@dataclass(frozen=True)
class Deadline:
    what: str  # whose work and which setting bounds it, for the error
    seconds: float
    at: float  # time.monotonic() instant

    @classmethod
    def after(cls, seconds: float, what: str) -> Deadline:
        """A deadline ``seconds`` from now."""
        return cls(what, seconds, time.monotonic() + seconds)

    def exceeded(self) -> DeadlineExceeded:
        return DeadlineExceeded(
            f"{self.what} took longer than {_shown(self.seconds)}: stopped there, so the other desktops "
            "of the run go on"
        )


_current: contextvars.ContextVar[Deadline | None] = contextvars.ContextVar("drsvc_deadline", default=None)


@contextlib.contextmanager
def within(deadline: Deadline | None) -> Iterator[None]:
    """Run the block under ``deadline`` on this thread (None: none); checked on entry."""
    if deadline is None:
        yield
        return
    token = _current.set(deadline)
    try:
        check()
        yield
    finally:
        _current.reset(token)


def check() -> None:
    """Raise ``DeadlineExceeded`` if this thread's deadline has passed (free without one)."""
    deadline = _current.get()
    if deadline is not None and time.monotonic() >= deadline.at:
        raise deadline.exceeded()


def _shown(seconds: float) -> str:
    return format_duration(timedelta(seconds=seconds))
