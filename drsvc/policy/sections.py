"""The sections of a policy file, one validated immutable model each: ``selector``, ``capture``,
``retention`` (per tier), ``tiering``, ``sites``, ``objectives``, ``drill``, ``verify`` and ``probe``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    ConfigDict,
    Field,
    PlainValidator,
    PrivateAttr,
    StrictBool,
    field_validator,
    model_validator,
)
from pydantic.dataclasses import dataclass as pydantic_dataclass

from drsvc.policy.fields import Count, Cron, Duration, PositiveCount, Sample, _Model
from drsvc.policy.schedule import CronSchedule
from drsvc.retention import RetentionRules

S3_STORAGE_CLASSES = (
    "STANDARD",
    "STANDARD_IA",
    "ONEZONE_IA",
    "INTELLIGENT_TIERING",
    "GLACIER",
    "GLACIER_IR",
    "DEEP_ARCHIVE",
)


class Selector(_Model):
    """Which desktops a policy covers. Every criterion given must match; at least one is required."""

    tenant: str | None = None
    labels: dict[str, str] = {}  # noqa: RUF012 (pydantic copies defaults)
    desktops: list[str] = []  # noqa: RUF012 (pydantic copies defaults)

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
    deadline: Duration = timedelta(hours=2)
    """How long each desktop's capture may take: its checkpoint archive's stream into the store,
    and then its store (volume, base image). Past it that desktop fails (its archive: a point
    without memory), so a desktop whose processes made their data slow to read holds its run's
    other desktops no longer; raise it for volumes whose full read takes longer."""

    @field_validator("deadline")
    @classmethod
    def _deadline(cls, value: timedelta) -> timedelta:
        if not timedelta(seconds=10) <= value <= timedelta(days=1):
            raise ValueError(
                "must be between 10s and 1d (a desktop's capture that takes longer fails; the other "
                "desktops of its run go on)"
            )
        return value

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
