"""Progress of long work: a rich progress bar (bytes, speed, ETA) on a terminal, plain lines otherwise.

Jobs report ``progress`` events: ``task`` (a label, e.g. ``backup alice``), ``advance`` (bytes
just moved), optional ``total`` (bytes expected, for the bar and the ETA), and for work counted in
items (chunks) ``item`` (items just done) and ``items`` (items expected). ``done=True`` ends a
task. On a terminal they drive one rich progress bar per task on stderr; piped or under cron they
become a plain line per task at most every ``every`` seconds and one when it ends, so logs stay short.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from drsvc.cli.jsonlines import JsonConsole
from drsvc.units import format_bytes

if TYPE_CHECKING:  # rich's progress bars are loaded on a terminal only: piped or under cron, never
    from rich.console import Console
    from rich.progress import Progress, ProgressColumn

Event = Callable[..., None]


def _amount_column() -> ProgressColumn:
    """``12.0 MiB / 40.0 MiB  8.1 MiB/s`` (or ``300 / 1200 chunks, 12.0 MiB  8.1 MiB/s``)."""
    from rich.progress import ProgressColumn, Task
    from rich.text import Text

    class Amount(ProgressColumn):
        def render(self, task: Task) -> Text:
            moved = task.fields.get("bytes", 0)
            speed = task.fields.get("speed")
            rate = f"  {format_bytes(speed)}/s" if speed else ""
            if task.fields.get("unit") == "items":
                total = f" / {int(task.total)}" if task.total else ""
                return Text(f"{int(task.completed)}{total} chunks, {format_bytes(moved)}{rate}")
            total = f" / {format_bytes(task.total)}" if task.total else ""
            return Text(f"{format_bytes(moved)}{total}{rate}")

    return Amount()


# a plain line gives a speed and an ETA once a task has run this long (seconds); the first line of a
# task comes right at its start, where "235 GiB/s, ~0s left" is what a rate over microseconds says
MEASURED_AFTER = 1.0


@dataclass
class _State:
    started: float
    bytes: int = 0
    items: int = 0
    total: int | None = None
    items_total: int | None = None
    printed: float = float("-inf")  # never: the first update prints (monotonic() may be small)


class ProgressView:
    """Turns ``progress`` events into bars (TTY) or plain lines; other events go to ``then``."""

    def __init__(self, console: Console | JsonConsole, *, then: Event | None = None, every: float = 10.0) -> None:
        self.console = console
        self.then = then
        self.every = every
        self.tty = console.is_terminal and not console.quiet
        self._lock = threading.Lock()
        self._tasks: dict[str, tuple[Any, _State]] = {}
        self._progress: Progress | None = None

    def __call__(self, kind: str, **fields: Any) -> None:
        if kind != "progress":
            if self.then is not None:
                self.then(kind, **fields)
            return
        with self._lock:
            self._update(fields)

    def _update(self, f: dict[str, Any]) -> None:
        name = str(f["task"])
        now = time.monotonic()
        if name not in self._tasks:
            self._tasks[name] = (self._add(name, f), _State(now))
        task_id, st = self._tasks[name]
        st.bytes += int(f.get("advance", 0))
        st.items += int(f.get("item", 0))
        if f.get("total") is not None:
            st.total = int(f["total"])
        if f.get("items") is not None:
            st.items_total = int(f["items"])
        elapsed = max(now - st.started, 1e-6)
        done = bool(f.get("done"))
        if self.tty:
            assert self._progress is not None
            by_items = st.items_total is not None and st.total is None
            self._progress.update(
                task_id,
                completed=st.items if by_items else st.bytes,
                total=(st.items_total if by_items else st.total),
                bytes=st.bytes,
                speed=st.bytes / elapsed,
                unit="items" if by_items else "bytes",
            )
            if done:
                self._progress.update(task_id, total=st.items if by_items else st.bytes)
                self._progress.stop_task(task_id)
        elif done or now - st.printed >= self.every:
            st.printed = now
            line = self._line(name, st, elapsed, done)
            if isinstance(self.console, JsonConsole):  # --log-format json: the numbers as fields
                self.console.event("info", "progress", line, **self._fields(name, st, elapsed, done))
            else:
                self.console.print(line, highlight=False, markup=False)
        if done:
            del self._tasks[name]
            if self.tty and not self._tasks and self._progress is not None:
                self._progress.stop()
                self._progress = None

    def _add(self, name: str, f: dict[str, Any]) -> Any:
        if not self.tty:
            return None
        if self._progress is None:
            from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                _amount_column(),
                TimeRemainingColumn(),
                console=self.console,  # type: ignore[arg-type]  # a rich Console: a JsonConsole is never a TTY
                transient=False,
            )
            self._progress.start()
        return self._progress.add_task(name, total=f.get("total"), bytes=0, speed=0.0, unit="bytes")

    @staticmethod
    def _fields(name: str, st: _State, elapsed: float, done: bool) -> dict[str, Any]:
        """A progress line's numbers, for a JSON event (those not known left out)."""
        fields = {
            "task": name,
            "bytes": st.bytes,
            "total": st.total,
            "items": st.items or None,
            "items_total": st.items_total,
            "seconds": round(elapsed, 3),
            "bytes_per_second": round(st.bytes / elapsed) if elapsed >= MEASURED_AFTER or done else None,
            "done": done,
        }
        return {k: v for k, v in fields.items() if v is not None}

    @staticmethod
    def _line(name: str, st: _State, elapsed: float, done: bool) -> str:
        rate = format_bytes(st.bytes / elapsed) + "/s"
        if done:
            items = f", {st.items} chunks" if st.items else ""
            return f"{name}: done, {format_bytes(st.bytes)}{items} in {elapsed:.1f}s ({rate})"
        if elapsed < MEASURED_AFTER:  # one chunk over a few microseconds: no speed, no ETA yet
            if st.total:
                return f"{name}: {format_bytes(st.bytes)} of {format_bytes(st.total)} ({st.bytes / st.total:.0%})"
            if st.items_total:
                return f"{name}: {st.items} of {st.items_total} chunks ({st.items / st.items_total:.0%})"
            return f"{name}: {format_bytes(st.bytes)}"
        if st.total:
            pct, left = st.bytes / st.total, (st.total - st.bytes) / max(st.bytes / elapsed, 1)
            return (
                f"{name}: {format_bytes(st.bytes)} of {format_bytes(st.total)} ({pct:.0%}, {rate}, ~{left:.0f}s left)"
            )
        if st.items_total:
            pct = st.items / st.items_total
            left = (st.items_total - st.items) / max(st.items / elapsed, 1e-6)
            return f"{name}: {st.items} of {st.items_total} chunks ({pct:.0%}, {rate}, ~{left:.0f}s left)"
        return f"{name}: {format_bytes(st.bytes)} ({rate})"

    def close(self) -> None:
        """Stop the bars (an error ended the work before its tasks said done)."""
        with self._lock:
            if self._progress is not None:
                self._progress.stop()
                self._progress = None
            self._tasks.clear()
