"""Retention as a pure function: which recovery points to keep, and which rule kept each one.

Grandfather-father-son rules, each applied independently to all points of one tier:

``last N``
    keeps the N newest points.
``hourly N`` / ``daily N`` / ``weekly N`` / ``monthly N`` / ``yearly N``
    keeps the newest point of each of the N most recent periods *that have points*. Periods are
    calendar periods in the policy's time zone: the local hour, the local date, the ISO week
    (Monday to Sunday), the calendar month, the calendar year.

A point is kept if any rule keeps it; ``RetentionResult.keep`` lists every rule that did, as
readable reasons (``"last 1/24"``, ``"daily 2/7 (2024-03-30)"``), so ``prune --dry-run`` and
``policy plan --retention`` can explain themselves.

Decisions worth knowing:

* **No "keep the oldest when there are fewer periods than asked" fallback** (borg's
  ``--keep-*`` does that). It looks kind for young repositories but breaks monotonicity: a point
  kept only because it is the oldest would be dropped as soon as one more period appears, and
  whether a *newer* point is kept would then depend on older history. Without it, adding an
  older point never changes the verdict on newer ones, and pruning is idempotent (pruning the
  kept set again keeps all of it) -- the properties the tests check.
* **No rules at all means keep everything** (``RetentionRules().empty``): a tier a policy says
  nothing about is never pruned. Rules that are all zero are a different thing -- they keep
  nothing; policy validation rejects them as almost surely a mistake.
* **Ties are deterministic**: points are ordered by ``(taken_at, point_id)``; of two points with
  the same instant the one with the greater id counts as newer.
* **DST**: hourly periods are real hours: the repeated wall-clock hour of a fall-back night is
  two periods (told apart by their UTC offset), the skipped hour of a spring-forward night none.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

__all__ = ["PERIOD_RULES", "RULE_NAMES", "RetentionResult", "RetentionRules", "apply_retention"]

RULE_NAMES = ("last", "hourly", "daily", "weekly", "monthly", "yearly")


@dataclass(frozen=True, eq=False)
class RetentionRules:
    """How many points each rule keeps; ``None`` = rule not given, ``0`` = rule keeps nothing.

    Equal when the rules are equal, whatever the subclass (policies use a validating one).
    """

    last: int | None = None
    hourly: int | None = None
    daily: int | None = None
    weekly: int | None = None
    monthly: int | None = None
    yearly: int | None = None

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None and (type(value) is not int or value < 0):
                raise ValueError(f"{f.name}: must be a non-negative integer, got {value!r}")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RetentionRules):
            return NotImplemented
        return all(getattr(self, name) == getattr(other, name) for name in RULE_NAMES)

    def __hash__(self) -> int:
        return hash(tuple(getattr(self, name) for name in RULE_NAMES))

    @property
    def empty(self) -> bool:
        """True when no rule is given at all: such a tier keeps every point (never pruned)."""
        return all(getattr(self, name) is None for name in RULE_NAMES)

    def items(self) -> list[tuple[str, int]]:
        """The given rules as ``(name, count)`` in canonical order (``last`` first)."""
        return [(name, n) for name in RULE_NAMES if (n := getattr(self, name)) is not None]

    def describe(self) -> str:
        """``"last 24, daily 7"``, or ``"keep everything (no rules)"``."""
        if self.empty:
            return "keep everything (no rules)"
        return ", ".join(f"{name} {n}" for name, n in self.items())


@dataclass
class RetentionResult:
    """Verdict per point. Both ``keep`` (insertion order) and ``drop`` are newest first."""

    keep: dict[str, list[str]] = field(default_factory=dict)
    drop: list[str] = field(default_factory=list)
    order: list[str] = field(default_factory=list)
    """Every point id, newest first: convenient for rendering keep and drop interleaved."""


def _hour(t: datetime) -> tuple[Hashable, str]:
    return (t.year, t.month, t.day, t.hour, t.utcoffset()), t.strftime("%Y-%m-%d %H:00 %z")


def _day(t: datetime) -> tuple[Hashable, str]:
    return t.date(), t.strftime("%Y-%m-%d")


def _week(t: datetime) -> tuple[Hashable, str]:
    iso = t.isocalendar()
    return (iso.year, iso.week), f"{iso.year}-W{iso.week:02d}"


def _month(t: datetime) -> tuple[Hashable, str]:
    return (t.year, t.month), f"{t.year}-{t.month:02d}"


def _year(t: datetime) -> tuple[Hashable, str]:
    return t.year, str(t.year)


PERIOD_RULES: dict[str, Callable[[datetime], tuple[Hashable, str]]] = {
    "hourly": _hour,
    "daily": _day,
    "weekly": _week,
    "monthly": _month,
    "yearly": _year,
}
"""Bucket function per period rule: local time -> (period key, period label)."""


def apply_retention(points: Iterable[tuple[str, datetime]], rules: RetentionRules, tz: ZoneInfo) -> RetentionResult:
    """Decide which points to keep under ``rules``, with periods in time zone ``tz``.

    ``points`` are ``(point_id, taken_at)`` with aware ``taken_at`` (naive values are taken as
    UTC); ids must be unique. Pure: no I/O, no clock, same input -> same output.
    """
    ordered: list[tuple[datetime, str]] = []
    seen: set[str] = set()
    for point_id, taken_at in points:
        if point_id in seen:
            raise ValueError(f"duplicate point id {point_id!r}")
        seen.add(point_id)
        # Compare in UTC: two datetimes sharing one tzinfo compare by wall time, ignoring fold,
        # so the two 02:30 of a fall-back night would otherwise look like one instant.
        utc = taken_at.replace(tzinfo=UTC) if taken_at.tzinfo is None else taken_at.astimezone(UTC)
        ordered.append((utc, point_id))
    ordered.sort(reverse=True)
    result = RetentionResult(order=[pid for _, pid in ordered])

    reasons: dict[str, list[str]] = {pid: [] for pid in result.order}
    if rules.empty:
        for pid in result.order:
            reasons[pid].append("no retention rules: keep all")
    else:
        for name, count in rules.items():
            if count == 0:
                continue
            if name == "last":
                for rank, (_, pid) in enumerate(ordered[:count], start=1):
                    reasons[pid].append(f"last {rank}/{count}")
                continue
            bucket = PERIOD_RULES[name]
            rank = 0
            periods: set[Hashable] = set()
            # Newest first, so the first point met in a period is that period's newest. A set, not
            # "same as the previous key": where a zone falls back across midnight the local date
            # steps backwards, and a period may then reappear after another one.
            for taken_at, pid in ordered:
                key, label = bucket(taken_at.astimezone(tz))
                if key in periods:
                    continue
                periods.add(key)
                rank += 1
                if rank > count:
                    break
                reasons[pid].append(f"{name} {rank}/{count} ({label})")

    for pid in result.order:
        if reasons[pid]:
            result.keep[pid] = reasons[pid]
        else:
            result.drop.append(pid)
    return result
