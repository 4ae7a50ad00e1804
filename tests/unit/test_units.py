"""drsvc.units: strict durations and IEC sizes."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drsvc.units import format_bytes, format_duration, parse_bytes, parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30s", 30),
        ("15m", 900),
        ("1h", 3600),
        ("1d", 86400),
        ("2w", 1209600),
        ("1h30m", 5400),
        (" 2D ", 172800),
    ],
)
def test_parse_duration(text: str, seconds: int) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("1hour", "malformed duration '1hour'"),
        ("", "empty duration"),
        ("h", "malformed"),
        ("1.5h", "malformed"),
        ("0m", "must be positive"),
        ("-1h", "must be positive"),
        ("1h1h", "given twice"),
        ("1y", "malformed"),
    ],
)
def test_parse_duration_rejects(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        parse_duration(text)
    assert "30s" in str(info.value) or "positive" in str(info.value) or "twice" in str(info.value)


@pytest.mark.parametrize("value", [3600, None, 1.5, True])
def test_parse_duration_rejects_non_strings(value: object) -> None:
    with pytest.raises(ValueError, match="must be a duration string"):
        parse_duration(value)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (30, "30s"),
        (90, "1m30s"),
        (3600, "1h"),
        (90000, "1d1h"),
        (1209600, "2w"),
        (-60, "-1m"),
        (1.25, "1.25s"),
    ],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(timedelta(seconds=seconds)) == text


@given(st.integers(min_value=1, max_value=10**9))
def test_duration_round_trip(seconds: int) -> None:
    td = timedelta(seconds=seconds)
    assert parse_duration(format_duration(td)) == td


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (0, "0 B"),
        (1023, "1023 B"),
        (1024, "1.0 KiB"),
        (1536 * 1024, "1.5 MiB"),
        (2 * 1024**3, "2.0 GiB"),
        (-2048, "-2.0 KiB"),
    ],
)
def test_format_bytes(n: int, text: str) -> None:
    assert format_bytes(n) == text


@pytest.mark.parametrize(
    ("text", "n"),
    [("512", 512), ("4KiB", 4096), ("1.5 MiB", 1572864), ("2G", 2 * 1024**3), ("1b", 1), (7, 7)],
)
def test_parse_bytes(text: str | int, n: int) -> None:
    assert parse_bytes(text) == n


@pytest.mark.parametrize("text", ["1x", "KiB", "1 KB B", "1.5", -1, True])
def test_parse_bytes_rejects(text: str | int) -> None:
    with pytest.raises(ValueError):
        parse_bytes(text)
