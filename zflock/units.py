"""Sizes and durations for humans: parsing and formatting (pure)."""

from __future__ import annotations

import re

from zflock.errors import UsageError

_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40, "P": 1 << 50}
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([KMGTP]?)(?:i?B)?", re.IGNORECASE)


def parse_size(text: str, what: str = "size") -> int:
    """'512M', '10G', '1.5T', '4096' -> bytes (binary units, like zfs)."""
    match = _SIZE.fullmatch(text.strip())
    if not match:
        raise UsageError(f"invalid {what} {text!r}: use a number with a K, M, G or T suffix")
    value = int(float(match.group(1)) * _UNITS[match.group(2).upper()])
    if value <= 0:
        raise UsageError(f"invalid {what} {text!r}: must be positive")
    return value


def format_bytes(n: int | float | None) -> str:
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


def format_age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = max(0, int(seconds))
    if s < 120:
        return f"{s}s"
    if s < 7200:
        return f"{s // 60}m"
    if s < 172800:
        return f"{s // 3600}h"
    return f"{s // 86400}d"


# Durations: one or more NUMBER+UNIT pairs, largest unit first ("90s", "1h30m",
# "2d"), or a bare number of seconds. Whole seconds only: every interval zflock
# schedules or keeps is at least a second, and integers round-trip exactly
# through a ZFS property.
_DURATION_UNITS = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1}
_DURATION_PART = re.compile(r"(\d{1,9})([wdhms])")
_DURATION = re.compile(r"(?:\d{1,9}[wdhms])+|\d{1,9}")


def parse_duration(text: str, what: str = "duration") -> int:
    """'30s', '5m', '1h30m', '2d', '1w', '45' -> whole seconds (> 0)."""
    compact = text.strip().lower()
    if not _DURATION.fullmatch(compact):
        raise UsageError(
            f"invalid {what} {text!r}: use a number with s, m, h, d or w (e.g. 30s, 5m, 1h30m)"
        )
    if compact.isdigit():
        seconds = int(compact)
    else:
        parts = _DURATION_PART.findall(compact)
        units = [unit for _, unit in parts]
        order = list(_DURATION_UNITS)
        if len(set(units)) != len(units) or units != sorted(units, key=order.index):
            raise UsageError(f"invalid {what} {text!r}: give each unit once, largest first")
        seconds = sum(int(number) * _DURATION_UNITS[unit] for number, unit in parts)
    if seconds <= 0:
        raise UsageError(f"invalid {what} {text!r}: must be positive")
    return seconds


def format_duration(seconds: int) -> str:
    """The canonical text of a whole number of seconds: 90 -> '1m30s', 86400 -> '1d'.

    `parse_duration(format_duration(n)) == n` for every n > 0.
    """
    if seconds <= 0:
        raise ValueError(f"a duration must be positive, got {seconds}")
    parts = []
    rest = seconds
    for unit, size in _DURATION_UNITS.items():
        count, rest = divmod(rest, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)
