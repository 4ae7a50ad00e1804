"""Validated scalar field types of policy files (durations, counts, cron, drill samples) and the
frozen, extra-forbidding base model every policy section derives from.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    PlainSerializer,
    PlainValidator,
)

from drsvc.policy.schedule import normalize_cron
from drsvc.units import format_duration, parse_duration


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
