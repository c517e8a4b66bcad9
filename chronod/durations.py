"""Durations as written in ``schedules.toml``: ``"90s"``, ``"15m"``, ``"1h30m"``, ``"1d"``.

Units are d, h, m, s and ms, largest first, each at most once; solar offsets may be signed
(``"-30m"``). A duration is elapsed time: it is never stretched or shrunk by DST.

No duration is longer than :data:`MAX_DURATION` (3650 days, about ten years): far beyond any
useful interval, timeout or delay, and short enough that a duration added to any instant a
schedule can produce stays inside the calendar (``datetime`` ends with year 9999).
"""

from __future__ import annotations

import re
from datetime import timedelta

_UNITS: tuple[tuple[str, timedelta], ...] = (
    ("d", timedelta(days=1)),
    ("h", timedelta(hours=1)),
    ("m", timedelta(minutes=1)),
    ("s", timedelta(seconds=1)),
    ("ms", timedelta(milliseconds=1)),
)
_PATTERN = re.compile(r"^([+-]?)(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?(?:(\d+)ms)?$")
MAX_DURATION = timedelta(days=3650)
_MAX_DIGITS = 16  # more digits than any duration up to MAX_DURATION needs, in any unit
_MICRO = timedelta(microseconds=1)


def parse_duration(text: str, *, signed: bool = False) -> timedelta:
    """Parse ``text``; raise :class:`ValueError` with a user-facing reason if it is no duration.

    ``signed`` admits a leading ``+``/``-`` (solar offsets); otherwise a sign is an error.
    """
    match = _PATTERN.match(text.strip().replace(" ", ""))
    if match is None or not any(match.groups()[1:]):
        raise ValueError('expected a duration like "90s", "15m", "1h30m" or "1d"')
    sign, *parts = match.groups()
    if sign and not signed:
        raise ValueError("a duration cannot be negative or signed here")
    # Summed as integer microseconds: timedelta itself overflows at 999,999,999 days.
    micros = 0
    for (_, unit), part in zip(_UNITS, parts, strict=True):
        if part is not None:
            if len(part.lstrip("0")) > _MAX_DIGITS:
                micros = MAX_DURATION // _MICRO + 1
                break
            micros += int(part) * (unit // _MICRO)
    if micros > MAX_DURATION // _MICRO:
        raise ValueError(f"at most {MAX_DURATION.days}d (about ten years)")
    total = timedelta(microseconds=micros)
    return -total if sign == "-" else total


def format_duration(delta: timedelta, *, parts: int = 2) -> str:
    """Render ``delta`` with its ``parts`` largest units: ``3d 4h``, ``1h30m`` → ``1h 30m``."""
    negative = delta < timedelta()
    remaining = abs(delta)
    out: list[str] = []
    for name, unit in _UNITS[:-1]:
        count, remaining = divmod(remaining, unit)
        if count:
            out.append(f"{count}{name}")
    if not out:
        millis = remaining // timedelta(milliseconds=1)
        out.append(f"{millis}ms" if millis else "0s")
    text = " ".join(out[:parts])
    return f"-{text}" if negative else text
