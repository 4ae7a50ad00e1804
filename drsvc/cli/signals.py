"""SIGTERM, SIGHUP and SIGINT end a command as an interrupted job, not as a killed process.

Python's default for SIGTERM and SIGHUP is to die on the spot: no ``finally`` runs, so a job row
stays ``running``, leases and intents wait for their owner's pid to be noticed gone, and a batch
of frozen desktops thaws only when the kernel drops the freeze hook's lock. Raising ``Interrupted``
(a ``KeyboardInterrupt``, which every job already handles as Ctrl-C) in the main thread instead
runs the same unwinding Ctrl-C does: the freeze is released, the job row is recorded
``interrupted``, leases are released; what the job started and did not finish stays recorded as
intents for ``drsvc cleanup`` / the next run. The command then exits 1 (failed: the contract's
codes are 0-6, and an interrupted job did not do its work) with one line naming the signal.

The first signal interrupts; later ones are ignored while the command unwinds (a second raise
inside a ``finally`` would skip the rest of the cleanup); ``kill -9`` still ends it at once. A
signal the parent set to be ignored (``nohup`` ignores SIGHUP) stays ignored. The daemon
(``drsvc run``) installs its own handlers: stop after the current work, interrupt on a second.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

from drsvc.errors import Interrupted

SIGNALS = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)
NEXT_STEP = "the job is recorded interrupted; `drsvc cleanup` (or the next run) finishes what it left"


def interrupted(error: KeyboardInterrupt) -> Interrupted:
    """``error`` as an ``Interrupted`` (a plain ``KeyboardInterrupt`` is Ctrl-C: SIGINT)."""
    return error if isinstance(error, Interrupted) else Interrupted(signal.SIGINT)


def message(error: Interrupted) -> str:
    """The one line the entry point prints."""
    return f"interrupted by {signal.Signals(error.signum).name}: {NEXT_STEP}"


class _Once:
    """The handler: raise ``Interrupted`` at the first signal, ignore the ones after it."""

    def __init__(self) -> None:
        self.fired = False

    def __call__(self, signum: int, _frame: FrameType | None) -> None:
        if self.fired:
            return
        self.fired = True
        raise Interrupted(signum)


@contextmanager
def interrupting() -> Iterator[None]:
    """Inside the block, SIGTERM/SIGHUP/SIGINT raise ``Interrupted`` (main thread only); the
    previous handlers come back after it (drsvc runs in-process in tests and embedders)."""
    previous: dict[int, Any] = {}
    handler = _Once()
    try:
        for sig in SIGNALS:
            current = signal.getsignal(sig)
            if current in (signal.SIG_DFL, signal.default_int_handler):
                previous[sig] = signal.signal(sig, handler)
    except ValueError:
        pass  # not the main thread: signals cannot be handled here, the defaults stay
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)
