"""Human units: durations (``30s``, ``15m``, ``1h``, ``1d``, ``2w``) and byte sizes (IEC).

Policy files, CLI options and reports all speak these. Parsing is strict on purpose: a policy
that says ``rpo: 1hour`` or ``rpo: 0m`` is a mistake the user must hear about, not a value to
guess at.
"""

from __future__ import annotations

import re
from datetime import timedelta

__all__ = ["format_bytes", "format_duration", "parse_bytes", "parse_duration"]

_DURATION_UNITS: dict[str, int] = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION_RE = re.compile(r"(\d+)([smhdw])")
_DURATION_HINT = "expected a positive whole number and a unit s, m, h, d or w (e.g. 30s, 15m, 1h, 1d, 2w)"


def parse_duration(text: str) -> timedelta:
    """Parse ``"30s"``, ``"15m"``, ``"1h"``, ``"1d"``, ``"2w"`` (or a sum like ``"1h30m"``).

    Raises ``ValueError`` with a message fit for the user on anything else, including zero and
    negative durations (no policy field means "never" by zero; omit the field instead).
    """
    if not isinstance(text, str) or isinstance(text, bool):
        raise ValueError(f"must be a duration string, got {text!r}; {_DURATION_HINT}")
    s = text.strip().lower()
    if not s:
        raise ValueError(f"empty duration; {_DURATION_HINT}")
    if s.startswith("-"):
        raise ValueError(f"duration must be positive, got {text!r}")
    pos = 0
    seconds = 0
    seen: set[str] = set()
    while pos < len(s):
        m = _DURATION_RE.match(s, pos)
        if m is None:
            raise ValueError(f"malformed duration {text!r}; {_DURATION_HINT}")
        unit = m.group(2)
        if unit in seen:
            raise ValueError(f"malformed duration {text!r}: unit {unit!r} given twice")
        seen.add(unit)
        seconds += int(m.group(1)) * _DURATION_UNITS[unit]
        pos = m.end()
    if seconds == 0:
        raise ValueError(f"duration must be positive, got {text!r}")
    return timedelta(seconds=seconds)


def format_duration(td: timedelta) -> str:
    """Render a duration in the units ``parse_duration`` reads, largest first: ``1d2h``, ``90s`` → ``1m30s``.

    Sub-second parts are kept as a decimal on the seconds (``1.25s``), negative values get a
    leading ``-``, zero is ``0s``. Round-trips with ``parse_duration`` for whole positive seconds.
    """
    total = td.total_seconds()
    if total == 0:
        return "0s"
    sign = "-" if total < 0 else ""
    total = abs(total)
    whole = int(total)
    frac = total - whole
    parts = []
    for unit, size in (("w", 7 * 86400), ("d", 86400), ("h", 3600), ("m", 60)):
        if whole >= size:
            parts.append(f"{whole // size}{unit}")
            whole %= size
    if whole or frac:
        secs = whole + frac
        parts.append(f"{secs:g}s" if frac else f"{whole}s")
    return sign + "".join(parts)


_IEC = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"]
_BYTES_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(?:([kmgtpe])i?b?|b)?\s*$", re.IGNORECASE)


def format_bytes(n: int | float) -> str:
    """IEC size with one decimal: ``0 B``, ``1023 B``, ``1.5 MiB``, ``2.0 GiB``."""
    sign = "-" if n < 0 else ""
    value = float(abs(n))
    if value < 1024:
        return f"{sign}{int(value)} B"
    for unit in _IEC[1:]:
        value /= 1024
        if value < 1024 or unit == _IEC[-1]:
            return f"{sign}{value:.1f} {unit}"
    raise AssertionError("unreachable")


def parse_bytes(text: str | int) -> int:
    """Parse ``"512"``, ``"4KiB"``, ``"1.5 MiB"``, ``"2G"`` (binary multiples: K = KiB) into bytes.

    Decimal units (kB = 1000) are deliberately not offered: sizes in drsvc are chunk and
    buffer sizes, where powers of two are what people mean.
    """
    if isinstance(text, bool):
        raise ValueError(f"must be a size, got {text!r}")
    if isinstance(text, int):
        if text < 0:
            raise ValueError(f"size must not be negative, got {text}")
        return text
    m = _BYTES_RE.match(text)
    if m is None:
        raise ValueError(f"malformed size {text!r}; expected e.g. 512, 4KiB, 1.5 MiB, 2GiB")
    number, prefix = float(m.group(1)), (m.group(2) or "").lower()
    power = "kmgtpe".index(prefix) + 1 if prefix else 0
    result = number * 1024**power
    if result != int(result):
        raise ValueError(f"size {text!r} is not a whole number of bytes")
    return int(result)
