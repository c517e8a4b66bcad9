"""The only module that touches pytz (docs/design.md §2).

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

pytz's tables end with the transitions of 2037 (pytz reads only the 32-bit part of each zone
file) and pytz keeps the offset of the last one for ever after: south of the equator that is
summer time, all year. The files pytz ships are TZif version 2 or later (RFC 8536): they also
list the transitions after 2037 in 64-bit form, and end with the zone's recurring rule as a POSIX
TZ string, e.g. ``AEST-10AEDT,M10.1.0,M4.1.0/3`` for Sydney. :func:`get_zone` appends the listed
later transitions to pytz's table and computes the ones after them from that rule, year by year,
as other tz engines (Python's ``zoneinfo``, glibc) read the same files; ``tests/test_tz.py``
compares every zone with ``zoneinfo``.
"""

from __future__ import annotations

import bisect
import re
import struct
from dataclasses import dataclass, field
from datetime import MAXYEAR, date, datetime, time, timedelta, timezone
from enum import Enum
from functools import cache, lru_cache
from importlib import resources

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


# A segment of a zone's timeline: from ``start`` (naive UTC) on, ``offset`` and ``abbreviation``.
_Entry = tuple[datetime, timedelta, str]


@dataclass(frozen=True, eq=False)
class Zone:
    """An IANA zone with O(log n) offset and transition lookups. Build it with :func:`get_zone`.

    Segment k < len(_starts) comes from pytz's table; the segments after it (when the zone has a
    recurring DST rule) are computed from ``_rule``, two a year, indexed on from there.
    """

    name: str
    # Segment k starts at _starts[k] (naive UTC) and has offset _offsets[k] and abbreviation
    # _names[k].
    _starts: tuple[datetime, ...] = field(repr=False)
    _offsets: tuple[timedelta, ...] = field(repr=False)
    _names: tuple[str, ...] = field(repr=False)
    _rule: _Rule | None = field(default=None, repr=False)
    # How many of the rule's transitions in the table's last year the table already holds.
    _skip: int = field(default=0, repr=False)
    _rule_from: datetime = field(init=False, repr=False)  # start of the first computed segment

    def __post_init__(self) -> None:
        first = self._entry(len(self._starts)) if self._rule is not None else None
        object.__setattr__(self, "_rule_from", datetime.max if first is None else first[0])

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Zone) and other.name == self.name

    def __hash__(self) -> int:
        return hash(self.name)

    # -- segments ------------------------------------------------------------------------------

    def _entry(self, k: int) -> _Entry | None:
        """Segment ``k``, or None past the last one (no rule, or beyond year 9999)."""
        n = len(self._starts)
        if k < n:
            return self._starts[k], self._offsets[k], self._names[k]
        if self._rule is None:
            return None
        j = k - n + self._skip
        year = self._starts[-1].year + j // 2
        if year >= MAXYEAR:
            return None
        return _rule_year(self._rule, year)[j % 2]

    def _locate(self, naive: datetime) -> int:
        """Index of the segment holding the naive UTC instant ``naive`` (0 before the first)."""
        if self._rule is None or naive < self._rule_from:
            return max(bisect.bisect_right(self._starts, naive) - 1, 0)
        n = len(self._starts)
        # Two computed segments a year: start a little before the year of ``naive`` and walk.
        base = n + 2 * (naive.year - self._starts[-1].year) - self._skip
        found = n
        for k in range(max(base - 2, n), base + 3):
            entry = self._entry(k)
            if entry is None or entry[0] > naive:
                break
            found = k
        return found

    def _segment(self, instant: datetime) -> int:
        return self._locate(_naive_utc(instant))

    def _offset(self, k: int) -> timedelta:
        if k < len(self._offsets):
            return self._offsets[k]
        entry = self._entry(k)
        assert entry is not None  # _locate only returns segments that exist
        return entry[1]

    # -- lookups -------------------------------------------------------------------------------

    def offset_at(self, instant: datetime) -> timedelta:
        """UTC offset in effect at ``instant`` (aware)."""
        return self._offset(self._segment(instant))

    def abbreviation(self, instant: datetime) -> str:
        """Abbreviation in effect at ``instant``, e.g. ``EDT`` or ``+03``."""
        entry = self._entry(self._segment(instant))
        assert entry is not None
        return entry[2]

    def next_transition(self, instant: datetime) -> datetime | None:
        """First instant strictly after ``instant`` at which the offset changes, or None."""
        k = self._segment(instant)
        previous = self._offset(k)
        while (entry := self._entry(k + 1)) is not None:
            if entry[1] != previous:
                return entry[0].replace(tzinfo=UTC)
            k += 1
        return None

    def wall(self, instant: datetime) -> datetime:
        """The naive wall-clock time shown in this zone at ``instant``."""
        return (_naive_utc(instant) + self.offset_at(instant)).replace(tzinfo=None)

    def to_local(self, instant: datetime) -> datetime:
        """``instant`` as an aware local datetime with a fixed-offset, abbreviation-named tzinfo."""
        entry = self._entry(self._segment(instant))
        assert entry is not None
        return instant.astimezone(timezone(entry[1], entry[2]))

    def resolve(self, wall: datetime) -> WallResolution:
        """When does the naive wall time ``wall`` happen in this zone?"""
        guess = self._locate(wall)
        found: list[datetime] = []
        gap_end: datetime | None = None
        previous = self._entry(guess - _SEGMENT_WINDOW - 1) if guess > _SEGMENT_WINDOW else None
        current = self._entry(max(guess - _SEGMENT_WINDOW, 0))
        for k in range(max(guess - _SEGMENT_WINDOW, 0), guess + _SEGMENT_WINDOW + 1):
            if current is None:
                break
            start, offset, _ = current
            following = self._entry(k + 1)
            candidate = wall - offset
            if (k == 0 or candidate >= start) and (following is None or candidate < following[0]):
                found.append(candidate.replace(tzinfo=UTC))
            if previous is not None and start + previous[1] <= wall < start + offset:
                gap_end = start.replace(tzinfo=UTC)
            previous, current = current, following
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


# --------------------------------------------------------------------------------------------------
# The recurring rule of a zone's TZif footer (POSIX TZ string with RFC 8536's extensions)


@dataclass(frozen=True, slots=True)
class _RuleDate:
    """One end of a DST rule: a day of the year and a local time of day (which may be negative
    or past 24 h, RFC 8536 §3.3.1)."""

    form: str  # "M" (month.week.weekday), "J" (1-365, 29 February never counted), "n" (0-365)
    month: int
    week: int  # 1-5, 5 = the last such weekday of the month
    weekday: int  # 0 = Sunday
    day: int
    at: timedelta

    def wall(self, year: int) -> datetime:
        """The naive local wall time of this date in ``year``."""
        if self.form == "M":
            first = date(year, self.month, 1)
            day = 1 + (self.weekday - (first.weekday() + 1)) % 7 + 7 * (self.week - 1)
            following = date(year + 1, 1, 1) if self.month == 12 else date(year, self.month + 1, 1)
            while day > (following - first).days:
                day -= 7
            when = first.replace(day=day)
        elif self.form == "J":
            leap_shift = 1 if self.day >= 60 and _is_leap(year) else 0
            when = date(year, 1, 1) + timedelta(days=self.day - 1 + leap_shift)
        else:
            when = date(year, 1, 1) + timedelta(days=self.day)
        return datetime.combine(when, time()) + self.at


@dataclass(frozen=True, slots=True)
class _Rule:
    std: timedelta  # UTC offsets (east positive), unlike POSIX's
    std_name: str
    dst: timedelta
    dst_name: str
    start: _RuleDate  # into DST, in standard wall time
    end: _RuleDate  # out of DST, in daylight wall time


@lru_cache(maxsize=4096)
def _rule_year(rule: _Rule, year: int) -> tuple[_Entry, _Entry]:
    """The two transitions of ``rule`` in ``year``, in UTC order."""
    into_dst = (rule.start.wall(year) - rule.std, rule.dst, rule.dst_name)
    into_std = (rule.end.wall(year) - rule.dst, rule.std, rule.std_name)
    first, second = sorted((into_dst, into_std), key=lambda entry: entry[0])
    return first, second


def _is_leap(year: int) -> bool:
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)


_NAME = r"<[A-Za-z0-9+-]+>|[A-Za-z]{3,}"
_HMS = r"[+-]?\d{1,3}(?::\d{1,2}(?::\d{1,2})?)?"
_DATE = rf"(?:M\d{{1,2}}\.\d\.\d|J\d{{1,3}}|\d{{1,3}})(?:/{_HMS})?"
_POSIX_TZ = re.compile(
    rf"(?P<std>{_NAME})(?P<std_offset>{_HMS})"
    rf"(?:(?P<dst>{_NAME})(?P<dst_offset>{_HMS})?,(?P<start>{_DATE}),(?P<end>{_DATE}))?"
)


def _hms(text: str) -> timedelta:
    sign = -1 if text.startswith("-") else 1
    parts = [int(p) for p in text.lstrip("+-").split(":")]
    parts += [0] * (3 - len(parts))
    return sign * timedelta(hours=parts[0], minutes=parts[1], seconds=parts[2])


def _rule_date(text: str) -> _RuleDate:
    day_text, _, at_text = text.partition("/")
    at = _hms(at_text) if at_text else timedelta(hours=2)
    if day_text.startswith("M"):
        month, week, weekday = (int(p) for p in day_text[1:].split("."))
        if not (1 <= month <= 12 and 1 <= week <= 5 and 0 <= weekday <= 6):
            raise ValueError(f"bad month rule {text!r}")
        return _RuleDate("M", month, week, weekday, 0, at)
    if day_text.startswith("J"):
        day = int(day_text[1:])
        if not 1 <= day <= 365:
            raise ValueError(f"bad Julian day {text!r}")
        return _RuleDate("J", 0, 0, 0, day, at)
    if not 0 <= int(day_text) <= 365:
        raise ValueError(f"bad day {text!r}")
    return _RuleDate("n", 0, 0, 0, int(day_text), at)


def parse_posix_rule(text: str) -> _Rule | None:
    """The DST rule of a POSIX TZ string, or None when it has none (or one we cannot extend).

    Raises ValueError when ``text`` is not a TZ string at all.
    """
    match = _POSIX_TZ.fullmatch(text)
    if match is None:
        raise ValueError(f"not a POSIX TZ string: {text!r}")
    if match["dst"] is None:
        return None
    std = -_hms(match["std_offset"])  # POSIX counts hours west of Greenwich
    dst = -_hms(match["dst_offset"]) if match["dst_offset"] else std + timedelta(hours=1)
    if dst == std:
        return None
    rule = _Rule(
        std=std,
        std_name=match["std"].strip("<>"),
        dst=dst,
        dst_name=match["dst"].strip("<>"),
        start=_rule_date(match["start"]),
        end=_rule_date(match["end"]),
    )
    # "DST all year" is spelled as a rule whose summer runs from 1 January to past 31 December;
    # it has no transitions to compute (the table's last offset already is that summer time).
    sample = _rule_year(rule, 2001)
    if sample[1][0] - sample[0][0] >= timedelta(days=365) or sample[0][0] == sample[1][0]:
        return None
    return rule


_HEADER = struct.Struct(">4sc15x6l")  # magic, version, then the six counts of RFC 8536 §3.1
# Transitions of the 64-bit block that a datetime can hold (the block starts at -2**59).
_EPOCH = datetime(1970, 1, 1)
_FIRST_SECOND = int((datetime(1, 1, 2) - _EPOCH).total_seconds())
_LAST_SECOND = int((datetime(MAXYEAR, 12, 30) - _EPOCH).total_seconds())


def _read_tzif(name: str) -> tuple[list[_Entry], str | None]:
    """The transitions of the zone file's 64-bit data (TZif version 2+) and its footer TZ string.

    pytz reads only the first, 32-bit data block, which cannot hold instants after 2038-01-19;
    the second block and the footer are what it leaves out. Empty and None for a version 1 file.
    """
    data = zone_file(name)
    magic, version, *counts = _HEADER.unpack_from(data)
    if magic != b"TZif" or version == b"\0":
        return [], None
    isut, isstd, leap, times, types, chars = counts
    position = _HEADER.size + times * 5 + types * 6 + chars + leap * 8 + isstd + isut
    magic, version, *counts = _HEADER.unpack_from(data, position)
    isut, isstd, leap, times, types, chars = counts
    position += _HEADER.size
    instants = struct.unpack_from(f">{times}q", data, position)
    position += times * 8
    indices = data[position : position + times]
    position += times
    infos = [struct.unpack_from(">lBB", data, position + 6 * i) for i in range(types)]
    position += types * 6
    names = data[position : position + chars]
    position += chars + leap * 12 + isstd + isut
    entries: list[_Entry] = []
    for instant, index in zip(instants, indices, strict=True):
        if not _FIRST_SECOND <= instant <= _LAST_SECOND:
            continue
        offset, _, name_at = infos[index]
        abbreviation = names[name_at : names.index(b"\0", name_at)].decode("ascii", "replace")
        start = _EPOCH + timedelta(seconds=instant)
        entries.append((start, timedelta(seconds=offset), abbreviation))
    footer = data[position:].strip(b"\n").decode("ascii", "replace")
    return entries, footer or None


def _extend(name: str, starts: tuple[datetime, ...]) -> tuple[list[_Entry], _Rule | None, int]:
    """What continues pytz's table of zone ``name``: the file's later transitions, the rule that
    follows them, and how many of that rule's transitions in the last listed year are listed."""
    entries, footer = _read_tzif(name)
    later = [entry for entry in entries if not starts or entry[0] > starts[-1]]
    last = later[-1][0] if later else starts[-1] if starts else None
    try:
        rule = parse_posix_rule(footer) if footer and last is not None else None
    except ValueError:
        rule = None  # an unreadable footer: keep pytz's own behaviour (its last offset)
    if rule is None or last is None:
        return later, None, 0
    skip = sum(1 for entry in _rule_year(rule, last.year) if entry[0] <= last)
    return later, rule, skip


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
    later, rule, skip = _extend(tz.zone or name, tuple(starts))
    return Zone(
        name,
        (*starts, *(entry[0] for entry in later)),
        (*(info[0] for info in infos), *(entry[1] for entry in later)),
        (*(info[2] for info in infos), *(entry[2] for entry in later)),
        rule,
        skip,
    )


def zone_file(name: str) -> bytes:
    """The TZif file pytz ships for the zone ``name`` (what ``pytz.open_resource`` opens)."""
    if not is_zone(name):
        raise UnknownZone(f"unknown time zone {name!r}")
    return resources.files(pytz).joinpath("zoneinfo", *name.split("/")).read_bytes()


def is_zone(name: str) -> bool:
    return name in pytz.all_timezones_set


def zone_names() -> list[str]:
    return list(pytz.all_timezones)
