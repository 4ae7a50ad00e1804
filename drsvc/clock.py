"""Time as the catalog stores it: aware UTC datetimes, ISO-8601 text that sorts as it compares."""

from __future__ import annotations

from datetime import UTC, datetime


def now() -> datetime:
    """The current time, aware, in UTC."""
    return datetime.now(UTC)


def to_iso(moment: datetime) -> str:
    """``2026-11-27T17:30:12.123456Z``: fixed width, so text order is time order."""
    if moment.tzinfo is None:
        raise ValueError("naive datetime: drsvc stores aware times only")
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def from_iso(text: str) -> datetime:
    """Parse what ``to_iso`` wrote (and any ISO-8601 time with an offset)."""
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        raise ValueError(f"time without a zone: {text!r}")
    return moment.astimezone(UTC)


def compact(moment: datetime) -> str:
    """``20261127T173012Z``: for names an operator reads (snapshot names, point ids)."""
    return moment.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
