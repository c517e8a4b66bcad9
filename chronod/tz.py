"""The only module that touches pytz.

pytz is chronod's single tz database: its version pins the rules, so every host agrees on every
instant. Everything outside this module sees :class:`Zone` and plain ``datetime`` objects:

* instants are aware UTC datetimes;
* wall-clock times are naive datetimes, meaningful only together with a :class:`Zone`;
* local display times carry a stdlib fixed-offset ``timezone`` (named with the zone's
  abbreviation), so arithmetic on them is plain elapsed time and no pytz tzinfo ever leaks out.

Offsets are looked up by bisecting pytz's transition table. pytz exposes that table only through
underscored attributes; using them here (and only here) is what lets schedules answer "which offset
applies at this instant" and "when is the next transition" in O(log n) without pytz's
``localize``/``normalize`` dance. ``tests/test_tz.py`` checks the lookups against pytz's public API.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from enum import Enum
from functools import cache

import pytz

UTC = timezone.utc
_SEGMENT_WINDOW = 3  # segments examined on each side when resolving a wall time


class UnknownZone(ValueError):
    """The name is not an IANA zone known to the installed pytz."""


class WallKind(Enum):
    UNIQUE = "unique"  # the wall time happens exactly once
    AMBIGUOUS = "ambiguous"  # it happens twice (or more): clocks were set back over it
    GAP = "gap"  # it never happens: clocks jumped over it


@dataclass(frozen=True, slots=True)
class WallResolution:
    """The real instants at which a wall-clock time happens in a zone.

    ``instants`` is sorted and empty exactly when ``kind`` is GAP; ``gap_end`` is then the first
    instant after the gap (the transition itself).
    """

    kind: WallKind
    instants: tuple[datetime, ...]
    gap_end: datetime | None = None


@dataclass(frozen=True, eq=False)
class Zone:
    """An IANA zone with O(log n) offset and transition lookups. Build it with :func:`get_zone`."""

    name: str
    # Segment k starts at _starts[k] (naive UTC) and has offset _offsets[k] and abbreviation
    # _names[k].
    _starts: tuple[datetime, ...] = field(repr=False)
    _offsets: tuple[timedelta, ...] = field(repr=False)
    _names: tuple[str, ...] = field(repr=False)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Zone) and other.name == self.name

    def __hash__(self) -> int:
        return hash(self.name)

    def _segment(self, instant: datetime) -> int:
        return max(bisect.bisect_right(self._starts, _naive_utc(instant)) - 1, 0)

    def offset_at(self, instant: datetime) -> timedelta:
        """UTC offset in effect at ``instant`` (aware)."""
        return self._offsets[self._segment(instant)]

    def abbreviation(self, instant: datetime) -> str:
        """Abbreviation in effect at ``instant``, e.g. ``EDT`` or ``+03``."""
        return self._names[self._segment(instant)]

    def next_transition(self, instant: datetime) -> datetime | None:
        """First instant strictly after ``instant`` at which the offset changes, or None."""
        k = self._segment(instant) + 1
        while k < len(self._starts):
            if self._offsets[k] != self._offsets[k - 1]:
                return self._starts[k].replace(tzinfo=UTC)
            k += 1
        return None

    def wall(self, instant: datetime) -> datetime:
        """The naive wall-clock time shown in this zone at ``instant``."""
        return (_naive_utc(instant) + self.offset_at(instant)).replace(tzinfo=None)

    def to_local(self, instant: datetime) -> datetime:
        """``instant`` as an aware local datetime with a fixed-offset, abbreviation-named tzinfo."""
        k = self._segment(instant)
        tz = timezone(self._offsets[k], self._names[k])
        return instant.astimezone(tz)

    def resolve(self, wall: datetime) -> WallResolution:
        """When does the naive wall time ``wall`` happen in this zone?"""
        guess = bisect.bisect_right(self._starts, wall) - 1
        lo = max(guess - _SEGMENT_WINDOW, 0)
        hi = min(guess + _SEGMENT_WINDOW + 1, len(self._starts))
        found: list[datetime] = []
        gap_end: datetime | None = None
        for k in range(lo, hi):
            start = self._starts[k]
            end = self._starts[k + 1] if k + 1 < len(self._starts) else None
            candidate = wall - self._offsets[k]
            if (k == 0 or candidate >= start) and (end is None or candidate < end):
                found.append(candidate.replace(tzinfo=UTC))
            if k > 0 and start + self._offsets[k - 1] <= wall < start + self._offsets[k]:
                gap_end = start.replace(tzinfo=UTC)
        if found:
            found.sort()
            kind = WallKind.UNIQUE if len(found) == 1 else WallKind.AMBIGUOUS
            return WallResolution(kind, tuple(found))
        if gap_end is None:  # pragma: no cover - would mean pytz's table is inconsistent
            raise AssertionError(f"{wall} neither happens nor falls in a gap in {self.name}")
        return WallResolution(WallKind.GAP, (), gap_end)


def _naive_utc(instant: datetime) -> datetime:
    if instant.tzinfo is None:
        raise ValueError(f"naive datetime {instant!r} where an aware instant was expected")
    return instant.astimezone(UTC).replace(tzinfo=None)


@cache
def get_zone(name: str) -> Zone:
    """The :class:`Zone` called ``name``; raise :class:`UnknownZone` if pytz does not know it."""
    try:
        tz = pytz.timezone(name)
    except pytz.UnknownTimeZoneError:
        raise UnknownZone(
            f"unknown time zone {name!r} (use an IANA name like 'Europe/Berlin')"
        ) from None
    starts = getattr(tz, "_utc_transition_times", None)
    infos = getattr(tz, "_transition_info", None)
    if starts is None or infos is None:  # StaticTzInfo and UTC: one offset forever
        offset = tz.utcoffset(datetime(2000, 1, 1)) or timedelta()
        abbrev = tz.tzname(datetime(2000, 1, 1)) or name
        return Zone(name, (datetime.min,), (offset,), (abbrev,))
    return Zone(
        name,
        tuple(starts),
        tuple(info[0] for info in infos),
        tuple(info[2] for info in infos),
    )


def is_zone(name: str) -> bool:
    return name in pytz.all_timezones_set


def zone_names() -> list[str]:
    return list(pytz.all_timezones)
