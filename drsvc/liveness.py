"""The daemon's liveness, served as ``/healthz`` beside ``/metrics`` (``drsvc run --metrics-listen``).

Liveness, not objectives: whether the scheduler loop is alive and able to work, which is what a
Kubernetes livenessProbe restarts on. Missed RPOs, failed backups and drills are objectives, told
by ``drsvc status`` (exit 5) and the alert rules; restarting the daemon would not mend those.

Unhealthy (HTTP 503) when

- ``FAILED_TICKS`` ticks in a row ended in an exception: the daemon cannot do its work at all
  (catalog, policies, lease); a window whose backups fail is not this, its tick succeeds;
- no tick has started for ``IDLE_LIMIT`` while none runs: the loop is wedged (it wakes at least
  every 5 minutes, and within a minute after a failed tick).

A tick that is running is alive however long it takes (a large backup can take hours); its age is
reported so an operator can see it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

__all__ = ["FAILED_TICKS", "IDLE_LIMIT", "DaemonHealth"]

FAILED_TICKS = 3
# the loop's longest sleep (scheduler.next_wakeup's 5-minute cap) + ERROR_RETRY + 2 minutes of grace
IDLE_LIMIT = 8 * 60.0


class DaemonHealth:
    """What the loop last did, updated by the scheduler's tick hooks and read by ``/healthz``."""

    def __init__(self, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._now = monotonic
        self._lock = threading.Lock()  # hooks run in the loop's thread, checks in the server's
        self._since = monotonic()  # start, or the end of the last tick
        self._running_since: float | None = None
        self.ticks = 0
        self.failed_in_a_row = 0
        self.last_error: str | None = None

    def tick_started(self) -> None:
        """The scheduler began a tick."""
        with self._lock:
            self._running_since = self._now()

    def tick_finished(self, seconds: float, error: BaseException | None) -> None:
        """The scheduler's tick ended (``error``: the exception that ended it, if any)."""
        with self._lock:
            self._running_since = None
            self._since = self._now()
            self.ticks += 1
            if error is None:
                self.failed_in_a_row = 0
            else:
                self.failed_in_a_row += 1
                self.last_error = str(error) or type(error).__name__

    def check(self) -> tuple[bool, dict[str, Any]]:
        """(healthy, the document ``/healthz`` serves)."""
        with self._lock:
            now = self._now()
            running = None if self._running_since is None else now - self._running_since
            idle = None if running is not None else now - self._since
            reason = "ok"
            if self.failed_in_a_row >= FAILED_TICKS:
                reason = f"the last {self.failed_in_a_row} ticks failed: {self.last_error}"
            elif idle is not None and idle > IDLE_LIMIT:
                reason = f"no tick for {idle:.0f}s (limit {IDLE_LIMIT:.0f}s): the scheduler loop is stuck"
            return reason == "ok", {
                "healthy": reason == "ok",
                "reason": reason,
                "ticks": self.ticks,
                "failed_ticks_in_a_row": self.failed_in_a_row,
                "last_error": self.last_error,
                "tick_running_seconds": running,
                "idle_seconds": idle,
            }
