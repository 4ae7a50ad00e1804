"""Policy schedules: cron expressions evaluated on the wall clock of a policy's time zone.

``normalize_cron`` validates an expression (field by field, with messages naming the field) and
``CronSchedule`` answers when it runs. Schedules follow classic cron on the wall clock of the
policy's time zone (what an operator means by "02:00 Berlin"), with Vixie cron's DST rules:

* a wall-clock time skipped by a spring-forward jump runs at the same offset after the jump
  (``0 2 * * *`` runs at 03:00 on that day), once;
* a wall-clock time repeated by a fall-back runs once (at its first occurrence) when the hour
  field is fixed, and at both occurrences when the hour field is ``*`` or ``*/n`` (an hourly
  policy keeps its hourly rhythm through the night instead of leaving a two-hour gap).

croniter is used for matching the expression on the wall clock; the DST mapping is ours because
croniter's own (aware) iteration runs fixed-hour jobs twice on fall-back nights.
"""

from __future__ import annotations

import difflib
import heapq
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

from croniter import croniter

_MACROS = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
}
_CRON_FIELDS = (
    ("minute", 0, 59, ()),
    ("hour", 0, 23, ()),
    ("day-of-month", 1, 31, ()),
    ("month", 1, 12, ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")),
    ("day-of-week", 0, 7, ("sun", "mon", "tue", "wed", "thu", "fri", "sat")),
)
_CRON_ITEM = re.compile(r"^(?:(\*)|([0-9a-z]+)(?:-([0-9a-z]+))?)(?:/(\d+))?$")
_CRON_HINT = "expected 5 fields 'minute hour day-of-month month day-of-week' or @hourly/@daily/@weekly/@monthly/@yearly"


def _cron_value(text: str, name: str, low: int, high: int, names: tuple[str, ...]) -> int:
    if text.isdigit():
        value = int(text)
    elif text in names:
        # month names count from 1 (jan), weekday names from 0 (sun)
        value = names.index(text) + low
    else:
        raise ValueError(f"{name} field: {text!r} is not a number")
    if not low <= value <= high:
        raise ValueError(f"{name} field: {value} is out of range {low}-{high}")
    return value


def normalize_cron(expr: str) -> str:
    """Validate a 5-field cron expression or macro; return its 5-field form.

    Checks every field's range explicitly (croniter accepts some values real cron rejects and
    its messages do not say which field is wrong), then lets croniter confirm the whole.
    """
    if not isinstance(expr, str):
        raise ValueError(f"must be a cron expression string, got {expr!r}; {_CRON_HINT}")
    text = " ".join(expr.lower().split())
    if text.startswith("@"):
        if text not in _MACROS:
            close = difflib.get_close_matches(text, list(_MACROS), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"unknown cron macro {expr!r}{hint}; known: {', '.join(_MACROS)}")
        text = _MACROS[text]
    parts = text.split(" ")
    if len(parts) != 5:
        raise ValueError(f"{expr!r} has {len(parts)} fields; {_CRON_HINT}")
    for part, (name, low, high, names) in zip(parts, _CRON_FIELDS, strict=True):
        for item in part.split(","):
            m = _CRON_ITEM.match(item)
            if m is None:
                raise ValueError(f"{name} field: {item!r} is malformed (use *, N, N-M, */S, N-M/S or lists)")
            star, first, last, step = m.groups()
            if step is not None and int(step) == 0:
                raise ValueError(f"{name} field: step 0 in {item!r}")
            if star is None:
                a = _cron_value(first, name, low, high, names)
                if last is not None and a > _cron_value(last, name, low, high, names):
                    raise ValueError(f"{name} field: range {item!r} runs backwards")
    if not croniter.is_valid(text):
        raise ValueError(f"{expr!r} is not a valid cron expression; {_CRON_HINT}")
    try:
        croniter(text, datetime(2000, 1, 1)).get_next(datetime)
    except Exception as e:  # croniter raises CroniterBadDateError for e.g. "0 0 30 2 *"
        raise ValueError(f"{expr!r} never fires (no date matches it)") from e
    return text


@dataclass(frozen=True)
class CronSchedule:
    """A validated cron expression evaluated on the wall clock of ``tz`` (see module docstring)."""

    expr: str
    tz: ZoneInfo

    def __post_init__(self) -> None:
        object.__setattr__(self, "_fields", normalize_cron(self.expr))

    @property
    def fields(self) -> str:
        """The expression as 5 fields (macros expanded)."""
        return str(self.__dict__["_fields"])

    def _instants(self, wall: datetime) -> list[datetime]:
        """UTC instants at which the local wall-clock time ``wall`` runs (0, 1 or 2 of them)."""
        first = wall.replace(tzinfo=self.tz, fold=0)
        second = wall.replace(tzinfo=self.tz, fold=1)
        if first.utcoffset() == second.utcoffset():
            return [first.astimezone(UTC)]
        utc = first.astimezone(UTC)
        if utc.astimezone(self.tz).replace(tzinfo=None) != wall:
            # Skipped by a spring-forward jump: fold=0 reads it with the offset from before the
            # jump, which lands the same distance after the jump (02:30 -> 03:30). Vixie cron.
            return [utc]
        if self.fields.split(" ")[1].startswith("*"):
            return [utc, second.astimezone(UTC)]
        return [utc]

    def iter_runs(self, after: datetime) -> Iterator[datetime]:
        """Run instants strictly after ``after``, ascending, as aware datetimes in ``tz``.

        ``after`` may be naive, meaning wall-clock time in ``tz``. Note that two results sharing
        ``tz`` subtract and compare by wall time (Python's rule); convert to UTC for real gaps.
        """
        if after.tzinfo is None:
            after = after.replace(tzinfo=self.tz)
        after_utc = after.astimezone(UTC)
        # Start a little before, on the wall clock: a fall-back hour maps later wall times to
        # earlier instants, so runs are gathered in a heap and released once no later wall time
        # can still produce an earlier instant (no zone shifts more than 3 h at once).
        slack = timedelta(hours=3)
        wall = after_utc.astimezone(self.tz).replace(tzinfo=None) - slack
        it = croniter(self.fields, wall)
        pending: list[datetime] = []
        last: datetime | None = None
        while True:
            wall = it.get_next(datetime)
            for instant in self._instants(wall):
                if instant > after_utc:
                    heapq.heappush(pending, instant)
            bound = wall.replace(tzinfo=self.tz).astimezone(UTC) - slack
            while pending and pending[0] < bound:
                instant = heapq.heappop(pending)
                if instant != last:
                    last = instant
                    yield instant.astimezone(self.tz)

    def next_runs(self, after: datetime, n: int) -> list[datetime]:
        """The next ``n`` runs strictly after ``after``."""
        runs: list[datetime] = []
        for run in self.iter_runs(after):
            if len(runs) >= n:
                break
            runs.append(run)
        return runs

    def runs_between(self, start: datetime, end: datetime) -> list[datetime]:
        """Runs with ``start < run <= end``."""
        end_utc = end.astimezone(UTC) if end.tzinfo else end.replace(tzinfo=self.tz).astimezone(UTC)
        runs: list[datetime] = []
        for run in self.iter_runs(start):
            if run.astimezone(UTC) > end_utc:
                break
            runs.append(run)
        return runs

    def previous_run(self, at: datetime) -> datetime | None:
        """The latest run at or before ``at`` (None only if none in the 8 years before)."""
        if at.tzinfo is None:
            at = at.replace(tzinfo=self.tz)
        for days in (2, 35, 400, 3000):
            runs = self.runs_between(at - timedelta(days=days), at)
            if runs:
                return runs[-1]
        return None

    def interval_max(self) -> timedelta:
        """The longest real-time gap between consecutive runs, sampled over a reference year.

        The year 2025 in ``tz`` is sampled (up to 3,000 runs), plus a few days around each of
        its UTC-offset changes, so DST effects (a 25-hour day for ``0 2 * * *``) are counted.
        Sparse schedules are followed further, until at least 3 runs (Feb 29 needs years).
        """
        return _interval_max(self.fields, self.tz.key)


@lru_cache(maxsize=256)
def _interval_max(fields: str, tz_key: str) -> timedelta:
    schedule = CronSchedule(fields, ZoneInfo(tz_key))
    tz = schedule.tz
    start = datetime(2025, 1, 1, tzinfo=tz)
    year_end = datetime(2026, 1, 1, tzinfo=tz)

    def max_gap(begin: datetime, stop: datetime | None, cap: int) -> timedelta:
        best = timedelta(0)
        prev: datetime | None = None
        for count, run in enumerate(schedule.iter_runs(begin), start=1):
            utc = run.astimezone(UTC)
            if prev is not None:
                best = max(best, utc - prev)
            prev = utc
            if count >= cap or (stop is not None and utc > stop and count >= 3):
                break
        return best

    gaps = [max_gap(start, year_end, 3_000)]
    day = datetime(2025, 1, 1, 12, tzinfo=UTC)
    while day < datetime(2026, 1, 1, tzinfo=UTC):
        nxt = day + timedelta(days=1)
        if day.astimezone(tz).utcoffset() != nxt.astimezone(tz).utcoffset():
            gaps.append(max_gap(day - timedelta(days=3), nxt + timedelta(days=3), 5_000))
        day = nxt
    return max(gaps)
