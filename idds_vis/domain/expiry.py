"""Durations as people write them ("24h", "90m", "1h30m", "60s") and the expiry policy."""

from __future__ import annotations

import re
from datetime import datetime, timedelta

from idds_vis.domain.errors import InvalidRequest

DEFAULT_TTL = timedelta(hours=24)
_UNITS = {"d": 86400, "h": 3600, "m": 60, "s": 1}
_PART = re.compile(r"(\d+(?:\.\d+)?)([dhms])")


# Longer than any lifetime a UI, a link or a setting may have; bounded so that adding it to a
# date never overflows (a share link asked for 999999999d was an HTTP 500, red team).
LONGEST = timedelta(days=3650)


def parse_duration(text: str | int | float | timedelta) -> timedelta:
    """Parse ``"24h"``, ``"1h30m"``, ``"45s"``, ``"2d"`` or a number of seconds (at most
    ``LONGEST``)."""
    try:
        value = _parse(text)
    except (OverflowError, ValueError):  # beyond what a timedelta holds (or NaN)
        value = LONGEST + LONGEST
    if value > LONGEST:
        raise InvalidRequest(f"duration {text!r} is longer than {LONGEST.days} days")
    if value <= timedelta(0):
        raise InvalidRequest(f"duration {text!r} must be positive")
    return value


def _parse(text: str | int | float | timedelta) -> timedelta:
    if isinstance(text, timedelta):
        value = text
    elif isinstance(text, (int, float)):
        value = timedelta(seconds=text)
    else:
        compact = text.strip().lower().replace(" ", "")
        if re.fullmatch(r"\d+(\.\d+)?", compact):
            value = timedelta(seconds=float(compact))
        elif compact and _PART.sub("", compact) == "":
            seconds = sum(float(n) * _UNITS[u] for n, u in _PART.findall(compact))
            value = timedelta(seconds=seconds)
        else:
            raise InvalidRequest(
                f"cannot read duration {text!r}: write it like 24h, 90m, 1h30m or 60s"
            )
    return value


def format_duration(value: timedelta) -> str:
    seconds = int(value.total_seconds())
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts) or "0s"


def expiry_after(ready_at: datetime, ttl: timedelta) -> datetime:
    """The TTL runs from the moment the UI is reachable, so a slow start costs the user nothing."""
    return ready_at + ttl


def check_ttl(ttl: timedelta, maximum: timedelta | None) -> None:
    if maximum is not None and ttl > maximum:
        raise InvalidRequest(
            f"TTL {format_duration(ttl)} is over the maximum of {format_duration(maximum)}"
        )
