"""Policies: ``policies/*.yaml`` -> validated, immutable models, and when each policy runs.

A policy says which desktops (``selector``), when (``schedule``, cron in ``timezone``), what to
capture, how long to keep points per tier (``retention``, see ``drsvc.retention``), when points
go cold (``tiering``), the objectives (``objectives.rpo`` / ``.rto``), how drills sample it
(``drill``) and how a restored desktop is checked (``probe``).

``load_policies(paths)`` reads every file, collects **every** problem across all of them, and
either returns a complete ``PolicySet`` or raises one ``PolicyError`` whose ``details`` are
``"<file>: <field path>: <why>"`` lines. Nothing is half-applied.

Schedules follow classic cron on the wall clock of the policy's time zone (what an operator
means by "02:00 Berlin"), with Vixie cron's DST rules:

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
import math
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal, get_args
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from croniter import croniter
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    PrivateAttr,
    StrictBool,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.dataclasses import dataclass as pydantic_dataclass
from pydantic_core import ErrorDetails

from drsvc.errors import NotFound, PolicyError
from drsvc.retention import RetentionRules
from drsvc.units import format_duration, parse_duration

__all__ = [
    "S3_STORAGE_CLASSES",
    "Capture",
    "CronSchedule",
    "Drill",
    "Objectives",
    "Policy",
    "PolicyRetentionRules",
    "PolicySet",
    "Probe",
    "Retention",
    "Selector",
    "SiteCopy",
    "Tiering",
    "load_policies",
    "policy_files",
]

S3_STORAGE_CLASSES = (
    "STANDARD",
    "STANDARD_IA",
    "ONEZONE_IA",
    "INTELLIGENT_TIERING",
    "GLACIER",
    "GLACIER_IR",
    "DEEP_ARCHIVE",
)
POLICY_SUFFIXES = (".yaml", ".yml")

# --------------------------------------------------------------------------------------------
# cron


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


# --------------------------------------------------------------------------------------------
# field types


def _check_duration(value: Any) -> timedelta:
    if isinstance(value, timedelta):
        return value
    if not isinstance(value, str):
        raise ValueError(f"must be a duration like 30s, 15m, 1h, 1d, 2w, got {value!r}")
    return parse_duration(value)


Duration = Annotated[timedelta, PlainValidator(_check_duration), PlainSerializer(format_duration, return_type=str)]


def _check_count(value: Any) -> int:
    if type(value) is not int:
        kind = "a string" if isinstance(value, str) else "non-integer"
        raise ValueError(f"must be a non-negative integer, got {kind} {value!r}")
    if value < 0:
        raise ValueError(f"must be a non-negative integer, got {value}")
    return value


Count = Annotated[int, PlainValidator(_check_count)]


def _check_positive(value: Any) -> int:
    if type(value) is not int or value < 1:
        raise ValueError(f"must be a positive integer, got {value!r}")
    return value


PositiveCount = Annotated[int, PlainValidator(_check_positive)]


def _check_cron(value: Any) -> str:
    normalize_cron(value)
    return str(value).strip()


Cron = Annotated[str, PlainValidator(_check_cron)]


def _check_sample(value: Any) -> int | str:
    if type(value) is int:
        if value < 1:
            raise ValueError(f"must be a count >= 1 or a percentage like 10%, got {value}")
        return value
    if isinstance(value, str):
        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*%\s*", value)
        if m and 0 < float(m.group(1)) <= 100:
            return f"{float(m.group(1)):g}%"
    raise ValueError(f"must be a count >= 1 or a percentage in (0, 100] like 10%, got {value!r}")


Sample = Annotated[int | str, PlainValidator(_check_sample)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --------------------------------------------------------------------------------------------
# models


class Selector(_Model):
    """Which desktops a policy covers. Every criterion given must match; at least one is required."""

    tenant: str | None = None
    labels: dict[str, str] = {}
    desktops: list[str] = []

    @model_validator(mode="after")
    def _not_empty(self) -> Selector:
        if self.tenant is None and not self.labels and not self.desktops:
            raise ValueError("needs at least one of tenant, labels, desktops (an empty selector covers nothing)")
        return self

    def matches(self, desktop_id: str, tenant: str | None, labels: Mapping[str, str]) -> bool:
        """True when the desktop satisfies every criterion this selector gives."""
        if self.tenant is not None and tenant != self.tenant:
            return False
        if self.desktops and desktop_id not in self.desktops:
            return False
        return all(labels.get(key) == value for key, value in self.labels.items())


class Capture(_Model):
    """What a recovery point holds and how consistent memory and disk are."""

    checkpoint: StrictBool = True
    volumes: StrictBool = True
    consistency: Literal["paired", "crash"] = Field(default="paired", validate_default=True)
    freeze_batch: PositiveCount = 8
    """Max desktops frozen together for one pool snapshot (bounds the pause every user sees)."""
    full_every: PositiveCount = 24
    """Every N-th point reads the whole volume; the others read only objects whose version changed
    since the previous point (1: always read everything)."""
    freeze_timeout: Duration = timedelta(seconds=5)
    """The freeze budget: no desktop stands still longer; a point that would is not called paired."""

    @field_validator("freeze_timeout")
    @classmethod
    def _freeze_timeout(cls, value: timedelta) -> timedelta:
        if not timedelta(seconds=1) <= value <= timedelta(minutes=2):
            raise ValueError("must be between 1s and 2m (users notice a frozen desktop within seconds)")
        return value

    @field_validator("consistency")
    @classmethod
    def _consistency(cls, value: str, info: Any) -> str:
        checkpoint = info.data.get("checkpoint", True)
        volumes = info.data.get("volumes", True)
        if value == "paired" and not (checkpoint and volumes):
            raise ValueError("'paired' needs checkpoint: true and volumes: true; use 'crash' for volume-only")
        if value == "crash" and checkpoint:
            raise ValueError("'crash' captures the volume only; set checkpoint: false (or use 'paired')")
        if value == "crash" and not volumes:
            raise ValueError("'crash' captures the volume, but volumes is false: nothing would be captured")
        return value


@pydantic_dataclass(frozen=True, eq=False, config=ConfigDict(extra="forbid"))
class PolicyRetentionRules(RetentionRules):
    """``RetentionRules`` as validated from a policy file (same class for ``apply_retention``)."""

    last: Count | None = None
    hourly: Count | None = None
    daily: Count | None = None
    weekly: Count | None = None
    monthly: Count | None = None
    yearly: Count | None = None


def _check_rules_not_all_zero(rules: PolicyRetentionRules) -> PolicyRetentionRules:
    if not rules.empty and all(n == 0 for _, n in rules.items()):
        raise ValueError("every rule is 0, which would delete every point; omit the tier to keep everything")
    return rules


TierRules = Annotated[PolicyRetentionRules, AfterValidator(_check_rules_not_all_zero)]


class Retention(_Model):
    """Rules per tier; a tier without rules keeps every point (``RetentionRules.empty``)."""

    hot: TierRules = PolicyRetentionRules()
    cold: TierRules = PolicyRetentionRules()


class Tiering(_Model):
    """When points are copied to the cold tier (S3) and how they are stored there."""

    after: Duration
    storage_class: Literal[
        "STANDARD",
        "STANDARD_IA",
        "ONEZONE_IA",
        "INTELLIGENT_TIERING",
        "GLACIER",
        "GLACIER_IR",
        "DEEP_ARCHIVE",
    ] = "STANDARD_IA"
    object_lock_days: Count | None = None


_SITE_NAME = re.compile(r"^[a-z][a-z0-9-]{0,31}$")


class SiteCopy(_Model):
    """Copies of this policy's points at another site (``[sites.NAME]`` in the config)."""

    after: Duration = timedelta(0)
    """A point is copied once it is cold and at least this old."""
    retention: TierRules = PolicyRetentionRules()
    """The site's own retention; empty keeps every copy."""
    object_lock_days: Count | None = None
    """S3 Object Lock of the copies (default: the site's ``object_lock_days``)."""


def _check_sites(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"must be a mapping of site name -> {{after, retention, object_lock_days}}, got {value!r}")
    for name in value:
        if not isinstance(name, str) or not _SITE_NAME.match(name):
            raise ValueError(f"site name {name!r}: lower-case letters, digits and '-' (max 32), as in [sites.NAME]")
    return value


class Objectives(_Model):
    """Recovery point and recovery time objectives; ``rpo`` None means not tracked."""

    rpo: Duration | None = None
    rto: Duration = timedelta(seconds=30)


class Drill(_Model):
    """When drills of this policy run and how many desktops each samples."""

    schedule: Cron
    sample: Sample = "10%"

    _cron: CronSchedule | None = PrivateAttr(default=None)

    @property
    def cron(self) -> CronSchedule:
        """The drill schedule in its policy's time zone (bound when the policy is built)."""
        if self._cron is None:
            raise RuntimeError("drill schedule not bound to a policy time zone; use Policy.drill.cron")
        return self._cron

    def sample_size(self, population: int) -> int:
        """Desktops to drill out of ``population``: a count (capped), or a percentage rounded up."""
        if population <= 0:
            return 0
        if isinstance(self.sample, int):
            return min(self.sample, population)
        return max(1, math.ceil(population * float(self.sample.rstrip("%")) / 100))


class Verify(Drill):
    """Scheduled verification: when it runs, how many of the policy's complete points it checks (a
    count, or a percentage of them; each desktop's newest point, the one a restore would use, is
    picked before older ones), and whether it reads, decrypts and re-hashes every chunk."""

    sample: Sample = 1
    read_data: bool = False


def _check_port(value: Any) -> int:
    if type(value) is not int or not 1 <= value <= 65535:
        raise ValueError(f"must be a TCP port 1-65535, got {value!r}")
    return value


class Probe(_Model):
    """How a restored desktop is checked healthy: a TCP port answers, or a command exits 0."""

    tcp: Annotated[int, PlainValidator(_check_port)] | None = None
    command: list[str] | None = None
    timeout: Duration = timedelta(seconds=10)

    @model_validator(mode="after")
    def _exactly_one(self) -> Probe:
        if (self.tcp is None) == (self.command is None):
            raise ValueError("give exactly one of tcp (a port) or command (an argv list)")
        if self.command is not None and not self.command:
            raise ValueError("command: must not be empty")
        return self


def _check_timezone(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"must be an IANA time zone name like UTC or Europe/Berlin, got {value!r}")
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {value!r}; use an IANA name like UTC or Europe/Berlin") from None
    return value


_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")


class Policy(_Model):
    """One validated policy file. Immutable; times come back in the policy's time zone."""

    name: str
    description: str = ""
    selector: Selector
    schedule: Cron
    timezone: Annotated[str, PlainValidator(_check_timezone)] = "UTC"
    capture: Capture = Capture()
    retention: Retention = Retention()
    tiering: Tiering | None = None
    objectives: Objectives = Objectives()
    drill: Drill | None = None
    verify: Verify | None = None
    probe: Probe | None = None
    priority: PositiveCount = 100
    """Order in a site recovery or restore storm: 1 first; ties go by RTO target, then desktop id."""
    sites: Annotated[dict[str, SiteCopy], BeforeValidator(_check_sites)] = {}

    _cron: CronSchedule = PrivateAttr()

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME_RE.match(value):
            raise ValueError(f"{value!r}: use letters, digits, '.', '_', '-' (max 63, no leading punctuation)")
        return value

    def model_post_init(self, context: Any, /) -> None:
        self._cron = CronSchedule(self.schedule, ZoneInfo(self.timezone))
        if self.drill is not None:
            # The drill runs on the policy's wall clock; a drill section has no zone of its own.
            self.drill._cron = CronSchedule(self.drill.schedule, self._cron.tz)
        if self.verify is not None:
            self.verify._cron = CronSchedule(self.verify.schedule, self._cron.tz)

    @property
    def tz(self) -> ZoneInfo:
        return self._cron.tz

    @property
    def cron(self) -> CronSchedule:
        return self._cron

    def next_runs(self, after: datetime, n: int) -> list[datetime]:
        """The next ``n`` scheduled runs strictly after ``after`` (naive = policy wall time)."""
        return self._cron.next_runs(after, n)

    def runs_between(self, start: datetime, end: datetime) -> list[datetime]:
        """Scheduled runs with ``start < run <= end``."""
        return self._cron.runs_between(start, end)

    def previous_run(self, at: datetime) -> datetime | None:
        """The latest scheduled run at or before ``at``."""
        return self._cron.previous_run(at)

    def interval_max(self) -> timedelta:
        """Longest real-time gap between consecutive runs (DST included); see ``CronSchedule``."""
        return self._cron.interval_max()

    def covers(self, desktop_id: str, tenant: str | None, labels: Mapping[str, str]) -> bool:
        return self.selector.matches(desktop_id, tenant, labels)


# --------------------------------------------------------------------------------------------
# loading


@dataclass(frozen=True)
class PolicySet:
    """Every valid policy, by name, with the file each came from and non-fatal warnings."""

    policies: Mapping[str, Policy] = field(default_factory=dict)
    sources: Mapping[str, Path] = field(default_factory=dict)
    files: tuple[Path, ...] = ()

    @cached_property
    def warnings(self) -> tuple[str, ...]:
        """Non-fatal problems, computed on first use: the RPO check samples a year of cron runs,
        which commands that only need the policies (restore at 3 a.m.) should not pay for."""
        return tuple(w for name, policy in self.policies.items() for w in _warnings(self.sources[name], policy))

    def __iter__(self) -> Iterator[Policy]:
        return iter(self.policies.values())

    def __len__(self) -> int:
        return len(self.policies)

    def __contains__(self, name: object) -> bool:
        return name in self.policies

    @property
    def names(self) -> list[str]:
        return list(self.policies)

    def get(self, name: str) -> Policy:
        """The policy called ``name``; ``NotFound`` (exit 3) names the known ones."""
        try:
            return self.policies[name]
        except KeyError:
            known = ", ".join(sorted(self.policies)) or "none"
            close = difflib.get_close_matches(name, list(self.policies), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise NotFound(f"no policy named {name!r}{hint}; known policies: {known}") from None

    def for_desktop(
        self, desktop_id: str, tenant: str | None = None, labels: Mapping[str, str] | None = None
    ) -> list[Policy]:
        """Every policy whose selector matches the desktop, in name order."""
        labels = labels or {}
        return [p for name, p in sorted(self.policies.items()) if p.selector.matches(desktop_id, tenant, labels)]


def policy_files(paths: Iterable[str | Path]) -> tuple[list[Path], list[str]]:
    """Expand files and directories (``*.yaml`` / ``*.yml`` in them, sorted) -> (files, errors)."""
    files: list[Path] = []
    errors: list[str] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix in POLICY_SUFFIXES and p.is_file())
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            errors.append(f"{path}: no such file or directory")
    unique = list(dict.fromkeys(files))
    return unique, errors


class _Loader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate keys (PyYAML silently keeps the last one)."""


def _construct_mapping(loader: _Loader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        try:
            first = seen.get(key)
        except TypeError:
            continue  # unhashable key: SafeLoader reports it below
        if first is not None:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (first given on line {first + 1})", key_node.start_mark
            )
        seen[key] = key_node.start_mark.line
    return yaml.SafeLoader.construct_mapping(loader, node, deep)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _yaml_error(file: Path, e: yaml.YAMLError) -> str:
    if isinstance(e, yaml.MarkedYAMLError) and e.problem_mark is not None:
        what = " ".join(p for p in (e.problem, e.context and f"({e.context})") if p)
        return f"{file}: line {e.problem_mark.line + 1}: {what or 'invalid YAML'}"
    return f"{file}: invalid YAML: {e}"


def _model_of(annotation: Any) -> type | None:
    if isinstance(annotation, type) and hasattr(annotation, "__pydantic_fields__"):
        return annotation
    for arg in get_args(annotation):
        found = _model_of(arg)
        if found is not None:
            return found
    return None


def _known_fields(parent: Sequence[int | str]) -> list[str]:
    """Field names of the model at ``parent`` (a pydantic error location) in ``Policy``."""
    cls: type | None = Policy
    for part in parent:
        fields = getattr(cls, "__pydantic_fields__", {})
        if part not in fields:
            return []
        cls = _model_of(fields[part].annotation)
    return list(getattr(cls, "__pydantic_fields__", {}))


def _loc(loc: Sequence[int | str]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _why(error: ErrorDetails) -> str:
    kind = error["type"]
    loc = error["loc"]
    value = error.get("input")
    if kind in ("extra_forbidden", "unexpected_keyword_argument"):
        known = _known_fields(loc[:-1])
        close = difflib.get_close_matches(str(loc[-1]), known, n=1, cutoff=0.6)
        if close:
            return f"unknown field (did you mean {close[0]!r}?)"
        return f"unknown field (known: {', '.join(known)})" if known else "unknown field"
    if kind == "missing":
        return "required field missing"
    if kind == "literal_error":
        expected = re.findall(r"'([^']*)'", str((error.get("ctx") or {}).get("expected", "")))
        close = difflib.get_close_matches(str(value).upper(), expected, n=1) or difflib.get_close_matches(
            str(value), expected, n=1
        )
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return f"must be one of {', '.join(expected)}, got {value!r}{hint}"
    if kind in ("model_type", "dict_type", "dataclass_type", "model_attributes_type"):
        return f"must be a mapping (key: value), got {type(value).__name__} {value!r}"
    if kind == "bool_type":
        return f"must be true or false, got {value!r}"
    msg = error["msg"]
    if kind == "value_error":
        msg = msg.removeprefix("Value error, ")
    elif kind in ("string_type", "list_type", "int_type"):
        msg = f"{msg[0].lower()}{msg[1:]}, got {value!r}"
    return msg


def _validation_errors(file: Path, e: ValidationError) -> list[str]:
    return [f"{file}: {_loc(err['loc'])}: {_why(err)}" for err in e.errors()]


def _warnings(file: Path, policy: Policy) -> list[str]:
    out = []
    rpo = policy.objectives.rpo
    if rpo is not None:
        gap = policy.interval_max()
        if rpo < gap:
            out.append(
                f"{file}: objectives.rpo: {format_duration(rpo)} is shorter than the longest gap between "
                f"scheduled runs ({format_duration(gap)}); the RPO will be missed every such gap"
            )
    if not policy.retention.cold.empty and policy.tiering is None:
        out.append(f"{file}: retention.cold: rules given but no tiering section, so no point ever goes cold")
    if policy.sites and policy.tiering is None:
        out.append(f"{file}: sites: copies go to other sites from the cold tier, but there is no tiering section")
    return out


def load_policies(paths: Iterable[str | Path]) -> PolicySet:
    """Load and validate every policy under ``paths`` (files or directories), all or nothing.

    Raises ``PolicyError`` listing every problem in every file (``"<file>: <field>: <why>"``);
    otherwise returns the complete set, with warnings (e.g. RPO shorter than the schedule allows).
    """
    files, errors = policy_files(paths)
    policies: dict[str, Policy] = {}
    sources: dict[str, Path] = {}
    for file in files:
        try:
            raw = yaml.load(file.read_text(encoding="utf-8"), Loader=_Loader)
        except yaml.YAMLError as e:
            errors.append(_yaml_error(file, e))
            continue
        except (OSError, UnicodeDecodeError) as e:
            errors.append(f"{file}: cannot read: {e}")
            continue
        if raw is None:
            errors.append(f"{file}: (top level): file is empty; expected a mapping with name, selector, schedule, ...")
            continue
        if not isinstance(raw, dict):
            errors.append(f"{file}: (top level): must be a mapping (key: value), got {type(raw).__name__}")
            continue
        try:
            policy = Policy.model_validate(raw)
        except ValidationError as e:
            errors.extend(_validation_errors(file, e))
            continue
        if policy.name in policies:
            errors.append(f"{file}: name: policy {policy.name!r} is already defined in {sources[policy.name]}")
            continue
        policies[policy.name] = policy
        sources[policy.name] = file
    if errors:
        count = len(errors)
        raise PolicyError(
            f"{count} problem{'s' if count != 1 else ''} in policy files; nothing was loaded", details=errors
        )
    return PolicySet(policies=policies, sources=sources, files=tuple(files))
