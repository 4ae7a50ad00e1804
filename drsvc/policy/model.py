"""``Policy``: one validated policy file (its sections, name, time zone and schedule), immutable;
run times come back in the policy's time zone.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BeforeValidator,
    PlainValidator,
    PrivateAttr,
    field_validator,
)

from drsvc.policy.fields import Cron, PositiveCount, _Model
from drsvc.policy.schedule import CronSchedule
from drsvc.policy.sections import (
    Capture,
    Drill,
    Objectives,
    Probe,
    Retention,
    Selector,
    SiteCopy,
    Tiering,
    Verify,
    _check_sites,
)


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
    sites: Annotated[dict[str, SiteCopy], BeforeValidator(_check_sites)] = {}  # noqa: RUF012 (pydantic copies defaults)

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
