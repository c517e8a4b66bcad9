"""``cron = "30 1 * * *"``: croniter syntax, cronie semantics, an explicit DST rule.

Syntax is croniter's five-field form, or ``@yearly``, ``@annually``, ``@monthly``, ``@weekly``,
``@daily``, ``@midnight``, ``@hourly``: numbers, names (``jan``, ``mon``, any case), ``*``,
ranges, steps (``*/15``, ``5-50/5``, ``10/15`` = from 10 to the field's end), lists, ``7`` =
Sunday, wrap-around ranges without a step (``22-2``, ``fri-mon``), ``L`` in day-of-month (the
last day; ``25-L`` = from the 25th to the end), ``L<d>`` in day-of-week (``L0``/``L7`` = last
Sunday of the month) and ``d#n`` (``1#2`` = second Monday). croniter expands the fields; matching
is done here over the expanded sets with calendar arithmetic (croniter is never called per fire).

Day matching is cronie's: when neither day-of-month nor day-of-week starts with ``*``, a day
matches if either field matches; otherwise it must match both, which for a plain ``*`` means the
other field alone decides (``*/2`` with day-of-week ``1`` means odd days that are Mondays).

DST is cronie's rule (DESIGN §2). A job is *fixed-time* unless its minute or hour field starts
with ``*``. A fixed-time job fires, for each matching wall time t, at the first instant at which
the wall clock shows t or later: once for an ordinary t, at the first occurrence of a repeated t,
at the end of the gap for a skipped t (several skipped times collapse into one fire). A
*wildcard* job fires at every real instant whose wall time matches: skipped times never fire,
repeated ones fire at each occurrence.

Refused at load time, each with its own message (croniter accepts most of these and then reads
something else, or the expression could never fire):

* anything but five fields (croniter reads a sixth and seventh as seconds and years), unknown
  ``@`` shortcuts;
* ``?`` (croniter reads it as ``*``), ``W`` (nearest weekday), ``H``/``R`` (hashed, random);
* malformed items, empty list items, unknown names, values outside the field, a step of 0;
* ranges with equal ends: ``5-5``, ``jan-jan``, ``7-7``, ``7-0``, ``31-L`` (croniter expands them
  to the whole field);
* ``*`` inside a list, ``*,5`` (croniter keeps the ``*`` next to the values, or drops ``#`` rules);
* a step as large as the field's cycle (``*/60``, ``*/24``, ``*/31``, ``*/12``, ``*/7``): cron
  steps restart every hour/day/month/year/week, so ``*/90`` would be minute 0 only;
* a step on a wrap-around range, ``50-10/7`` (croniter restarts the step off by one);
* ``7/n`` in day-of-week (croniter reads ``7/2`` as ``0,2,4,6``), ranges with ``#``
  (``mon-wed#2``), ``#n`` outside 1-5, a bare ``L`` in day-of-week;
* ``L<d>`` or ``d#n`` mixed with plain weekdays (``0,L0``: croniter keeps only ``L0``), and
  ``L<d>``/``d#n`` with a day-of-month other than ``*`` (croniter requires both, not either);
* ``L`` outside day-of-month and day-of-week, as a range start, or with a step of its own;
  ``L`` together with 30 other days (``L,2-31``: croniter reads it as every day);
* day-of-month values none of which exists in the selected months (``0 0 30 2 *``,
  ``0 0 31 4,6 *``; 29 February is fine), even when day-of-week could still match, and any day
  rule that no date satisfies;
* as a safety net, any field that croniter expands differently from this module's own reading.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from types import MappingProxyType
from typing import Any, Final

from croniter import croniter

from chronod.errors import ScheduleError
from chronod.schedules.base import Fire, Schedule, fingerprint_of
from chronod.tz import UTC, WallKind, Zone

MINUTE, HOUR, DOM, MONTH, DOW = range(5)
FIELD_NAMES: Final = ("minute", "hour", "day-of-month", "month", "day-of-week")
# Values a field may be written with (day-of-week admits 7 = Sunday) and the length of its cycle.
_LIMITS: Final = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 7))
_CYCLE: Final = (60, 24, 31, 12, 7)
# Largest value croniter expands "N/step" up to: for day-of-week it stops at 6, not 7.
_STEP_END: Final = (59, 23, 31, 12, 6)

MONTH_NAMES: Final = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)
_MONTH_ABBR: Final = tuple(name[:3].lower() for name in MONTH_NAMES)
DAY_NAMES: Final = ("Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday")
_DOW_ABBR: Final = tuple(name[:3].lower() for name in DAY_NAMES)
_ORDINALS: Final = ("first", "second", "third", "fourth", "fifth")

ALIASES: Final = MappingProxyType(
    {
        "@yearly": "0 0 1 1 *",
        "@annually": "0 0 1 1 *",
        "@monthly": "0 0 1 * *",
        "@weekly": "0 0 * * 0",
        "@daily": "0 0 * * *",
        "@midnight": "0 0 * * *",
        "@hourly": "0 * * * *",
    }
)

_DAYS_IN_MONTH: Final = (0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
# The Gregorian calendar repeats every 400 years (146097 days, a whole number of weeks), so a day
# rule that matches nothing within 400 years never matches; one more year covers a partial start.
_HORIZON_YEARS: Final = 401
_LAST: Final = 0  # the "n" of an L<d> rule in (weekday, n) pairs; #n rules use 1-5
# Bit masks of the days first, first + 7, ... of a month (bit d = day d), for first = 1..7.
_EVERY_SEVENTH_DAY: Final = (0, *(sum(1 << d for d in range(f, 32, 7)) for f in range(1, 8)))

_FIELD_SPLIT: Final = re.compile(r"\S+", re.ASCII)  # croniter's own field separator
_ITEM: Final = re.compile(r"(?:(\*)|(\w+)(?:-(\w+))?)(?:/(\w+))?", re.ASCII)
_HASHED: Final = re.compile(r"[hr](?:\(\d+-\d+\))?(?:/\d+)?", re.ASCII)
_NEAREST_WEEKDAY: Final = re.compile(r"\d+w|w\d+|lw|wl", re.ASCII)
_LAST_WEEKDAY: Final = re.compile(r"l(\w+)", re.ASCII)
_NTH_WEEKDAY: Final = re.compile(r"(\w+)#(\w*)", re.ASCII)
_MINUTE: Final = timedelta(minutes=1)


@dataclass(frozen=True, slots=True)
class _Field:
    """One field as this module reads it (independently of croniter, to catch its misreadings)."""

    values: frozenset[int]  # day-of-week: 0-6, Sunday = 0
    last_day: bool = False  # day-of-month L
    nth: frozenset[tuple[int, int]] = frozenset()  # day-of-week (weekday, n); n = _LAST for L<d>


@dataclass(frozen=True, slots=True, eq=False)
class CronTables:
    """One cron expression read, checked and expanded into lookup tables.

    Independent of the zone and immutable, so every job whose expression reads the same shares
    one (:class:`CronCache`): building them (croniter's expansion above all) costs far more than
    any number of lookups, and 60,000 jobs saying ``* * * * *`` need them once.
    """

    fields: tuple[str, ...]  # the five fields as read (lower case, shortcut expanded)
    fixed_time: bool  # neither minute nor hour starts with '*' (DST rule, module doc)
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    dom: tuple[int, ...]
    last_day: bool
    months: frozenset[int]
    dow: tuple[int, ...]
    nth: tuple[tuple[int, int], ...]
    day_or: bool  # cronie: "either" only when neither day field starts with '*'
    next_minute: tuple[int, ...]
    next_hour: tuple[int, ...]
    month_ok: tuple[bool, ...]
    day_masks: tuple[tuple[int, ...], ...]

    @classmethod
    def parse(cls, expression: str) -> CronTables:
        """Read ``expression``; raise :class:`ScheduleError` saying what is wrong with it."""
        return cls.from_fields(_split(expression))

    @classmethod
    def from_fields(cls, fields_text: tuple[str, ...]) -> CronTables:
        parsed = tuple(_parse_field(i, text) for i, text in enumerate(fields_text))
        _check_day_fields(fields_text, parsed)
        expanded = _croniter_expand(" ".join(fields_text))
        _cross_check(fields_text, parsed, expanded)
        # croniter's expansion drives matching; _cross_check has proven it equal to our reading.
        minutes, hours, dom, last_day, months, dow, nth = expanded
        day_or = not (fields_text[DOM].startswith("*") or fields_text[DOW].startswith("*"))
        day_masks = _build_day_masks(dom, last_day, dow, nth, day_or)
        _check_reachable(months, dom, last_day, day_masks)
        return cls(
            fields=fields_text,
            fixed_time=not (
                fields_text[MINUTE].startswith("*") or fields_text[HOUR].startswith("*")
            ),
            minutes=minutes,
            hours=hours,
            dom=dom,
            last_day=last_day,
            months=months,
            dow=dow,
            nth=nth,
            day_or=day_or,
            next_minute=_next_table(minutes, 60),
            next_hour=_next_table(hours, 24),
            month_ok=tuple(m in months for m in range(13)),
            day_masks=day_masks,
        )


class CronCache:
    """Cron expressions read during one config load, shared by the jobs that use them.

    Create one per load (:func:`chronod.config.load_config` does) and build schedules with
    :meth:`CronSchedule.cached`. Tables are shared by expressions that read the same (``@daily``
    and ``0 0 * * *``); whole schedules by jobs with the same expression text and zone. Errors are
    remembered too, so every job with a bad expression gets its own report without re-reading it.
    It holds only immutable values, and nothing outlives the load that made it.
    """

    def __init__(self) -> None:
        self._tables: dict[tuple[str, ...], CronTables | ScheduleError] = {}
        self._schedules: dict[tuple[str, str], CronSchedule] = {}

    def tables(self, expression: str) -> CronTables:
        fields_text = _split(expression)
        found = self._tables.get(fields_text)
        if found is None:
            try:
                found = CronTables.from_fields(fields_text)
            except ScheduleError as exc:
                found = exc
            self._tables[fields_text] = found
        if isinstance(found, ScheduleError):
            raise ScheduleError(str(found))  # a fresh exception per job: tracebacks differ
        return found

    def schedule(self, expression: str, zone: Zone) -> CronSchedule:
        key = (expression.strip(), zone.name)
        found = self._schedules.get(key)
        if found is None:
            tables = self.tables(key[0])
            found = self._schedules[key] = CronSchedule._from_tables(key[0], zone, tables)
        return found


class CronSchedule(Schedule):
    """A cron expression evaluated in ``zone`` with cronie's day and DST rules (see module doc).

    Immutable: the parsed tables (:class:`CronTables`) and the fingerprint may be shared.
    """

    # Slots: a config may hold tens of thousands of these; with shared tables each is a few words.
    __slots__ = ("_fingerprint", "_t", "expression", "zone")

    def __init__(self, expression: str, zone: Zone) -> None:
        self.expression = expression.strip()
        self.zone = zone
        self._t = CronTables.parse(self.expression)
        self._fingerprint: str | None = None

    @classmethod
    def _from_tables(cls, expression: str, zone: Zone, tables: CronTables) -> CronSchedule:
        """A schedule of ``expression`` that reuses ``tables`` (what ``expression`` reads as)."""
        schedule = cls.__new__(cls)
        schedule.expression = expression.strip()
        schedule.zone = zone
        schedule._t = tables
        schedule._fingerprint = None
        return schedule

    @classmethod
    def cached(cls, expression: str, zone: Zone, cache: CronCache) -> CronSchedule:
        """The schedule of ``expression`` in ``zone``, shared through ``cache`` with every other
        job of the same load that has the same expression and zone."""
        return cache.schedule(expression, zone)

    # The tables under the names the describing helpers (and tests) read.
    @property
    def _minutes(self) -> tuple[int, ...]:
        return self._t.minutes

    @property
    def _hours(self) -> tuple[int, ...]:
        return self._t.hours

    @property
    def _dom(self) -> tuple[int, ...]:
        return self._t.dom

    @property
    def _last_day(self) -> bool:
        return self._t.last_day

    @property
    def _months(self) -> frozenset[int]:
        return self._t.months

    @property
    def _dow(self) -> tuple[int, ...]:
        return self._t.dow

    @property
    def _nth(self) -> tuple[tuple[int, int], ...]:
        return self._t.nth

    @property
    def _day_or(self) -> bool:
        return self._t.day_or

    @property
    def _fixed_time(self) -> bool:
        return self._t.fixed_time

    # -- matching ------------------------------------------------------------------------------

    def _scan(self, y: int, mo: int, d: int, h: int, mi: int) -> datetime | None:
        """First matching wall minute at or after y-mo-d h:mi (h may be 24, mi 60), or None.

        Months are skipped by table lookups and days by bit tricks, so sparse schedules cost a
        few operations per month rather than per minute.
        """
        t = self._t
        next_hour, next_minute, month_ok, day_masks = (
            t.next_hour,
            t.next_minute,
            t.month_ok,
            t.day_masks,
        )
        first_hour, first_minute = t.hours[0], t.minutes[0]
        limit = min(y + _HORIZON_YEARS, 9999)
        while y <= limit:
            if month_ok[mo]:
                length = _DAYS_IN_MONTH[mo]
                if mo == 2 and y % 4 == 0 and (y % 100 != 0 or y % 400 == 0):
                    length = 29
                mask = day_masks[date(y, mo, 1).weekday()][length - 28] >> d
                if mask & 1:
                    hour = next_hour[h]
                    if hour == h:
                        minute = next_minute[mi]
                        if minute >= 0:
                            return datetime(y, mo, d, h, minute)
                        hour = next_hour[h + 1]
                    if hour >= 0:
                        return datetime(y, mo, d, hour, first_minute)
                mask >>= 1
                if mask:
                    day = d + (mask & -mask).bit_length()
                    return datetime(y, mo, day, first_hour, first_minute)
            d, h, mi = 1, 0, 0
            mo += 1
            if mo == 13:
                mo, y = 1, y + 1
        return None

    def _next_wall(self, wall: datetime, *, inclusive: bool) -> datetime | None:
        """First matching wall time after ``wall``, or at it if ``inclusive`` and on a minute."""
        minute = wall.minute
        if not inclusive or wall.second or wall.microsecond:
            minute += 1
        return self._scan(wall.year, wall.month, wall.day, wall.hour, minute)

    def _first_after(self, after: datetime) -> Fire | None:
        if after.tzinfo is None:  # astimezone() would read it as the server's local time
            raise ValueError(f"naive datetime {after!r} where an aware instant was expected")
        if self._t.fixed_time:
            return self._next_fixed(after.astimezone(UTC))
        return self._next_wildcard(after.astimezone(UTC))

    def _next_fixed(self, after: datetime) -> Fire | None:
        zone = self.zone
        # A wall time t fires at the first instant the clock shows t or later, a non-decreasing
        # function of t; every t up to wall(after) was shown by then, so fires start beyond it.
        wall = self._next_wall(zone.wall(after), inclusive=False)
        while wall is not None:
            resolution = zone.resolve(wall)
            if resolution.kind is WallKind.GAP:
                assert resolution.gap_end is not None
                if resolution.gap_end > after:
                    return Fire(resolution.gap_end, self._gap_note(wall, resolution.gap_end))
            else:
                first = resolution.instants[0]
                if first > after:
                    note = None
                    if resolution.kind is WallKind.AMBIGUOUS:
                        note = self._repeat_note(wall, resolution.instants)
                    return Fire(first, note)
            # Only reached inside a repeated stretch whose first pass is already behind `after`.
            wall = self._next_wall(wall, inclusive=False)
        return None

    def _next_wildcard(self, after: datetime) -> Fire | None:
        zone = self.zone
        offset = zone.offset_at(after)
        boundary = zone.next_transition(after)
        wall = self._next_wall(after.replace(tzinfo=None) + offset, inclusive=False)
        # Walk the offset segments in real-time order: within one segment wall time runs evenly,
        # so its first match is the next fire unless it lies beyond the segment's end.
        while wall is not None:
            instant = wall.replace(tzinfo=UTC) - offset
            if boundary is None or instant < boundary:
                return Fire(instant)
            offset = zone.offset_at(boundary)
            start = boundary
            boundary = zone.next_transition(start)
            wall = self._next_wall(start.replace(tzinfo=None) + offset, inclusive=True)
        return None

    # -- notes -----------------------------------------------------------------------------------

    def _gap_note(self, wall: datetime, at: datetime) -> str:
        local = self.zone.to_local(at)
        return (
            f"{wall:%H:%M} does not exist on {wall:%Y-%m-%d} (DST gap); "
            f"runs at {local:%H:%M} {local.tzname()}"
        )

    def _repeat_note(self, wall: datetime, instants: tuple[datetime, ...]) -> str:
        first, second = self.zone.abbreviation(instants[0]), self.zone.abbreviation(instants[1])
        if first == second:  # same abbreviation on both sides: name the offset instead
            first = _format_offset(self.zone.offset_at(instants[0]))
        times = "twice" if len(instants) == 2 else f"{len(instants)} times"
        return f"{wall:%H:%M} happens {times} on {wall:%Y-%m-%d}; runs once, at the first ({first})"

    # -- identity and words --------------------------------------------------------------------

    def canonical(self) -> dict[str, Any]:
        return {
            "kind": "cron",
            "minute": _compact(self._minutes, range(60)),
            "hour": _compact(self._hours, range(24)),
            "month": _compact(self._months, range(1, 13)),
            "days": self._canonical_days(),
            "dst": "fixed-time" if self._fixed_time else "wildcard",
            "zone": self.zone.name,
        }

    def _canonical_days(self) -> dict[str, Any]:
        dom_all = set(self._dom) >= set(range(1, 32))
        dow_all = not self._nth and set(self._dow) == set(range(7))
        dom: list[int | str] = [*self._dom, *(["L"] if self._last_day else [])]
        dow: list[str] = [str(d) for d in self._dow] if not self._nth else []
        dow += [f"L{wd}" if n == _LAST else f"{wd}#{n}" for wd, n in self._nth]
        dow.sort()
        if self._day_or:
            if dom_all or dow_all:
                return {"dom": "*", "dow": "*"}
            return {"dom": dom, "dow": dow, "match": "either"}
        if dom_all:
            return {"dom": "*", "dow": "*" if dow_all else dow}
        if dow_all:
            return {"dom": dom, "dow": "*"}
        return {"dom": dom, "dow": dow, "match": "both"}

    @property
    def fingerprint(self) -> str:
        # Computed once: the schedule is immutable, and shared by every job that uses it.
        if self._fingerprint is None:
            self._fingerprint = fingerprint_of(self.canonical())
        return self._fingerprint

    def describe(self) -> str:
        text = _describe(self)
        return text if text is not None else f"cron '{self.expression}'"

    def __repr__(self) -> str:
        return f"CronSchedule({self.expression!r}, {self.zone.name!r})"


# -- tables ---------------------------------------------------------------------------------------


def _build_day_masks(
    dom: tuple[int, ...],
    last_day: bool,
    dow: tuple[int, ...],
    nth: tuple[tuple[int, int], ...],
    day_or: bool,
) -> tuple[tuple[int, ...], ...]:
    """Matching days of a month as bit masks (bit d = day d), by weekday of the 1st and length.

    Which days match depends only on those two numbers, so 7 x 4 masks describe every month of
    every year and matching a month costs one table lookup.
    """
    if len(dom) == 31 and len(dow) == 7:  # every day (the common case)
        return (tuple((1 << (length + 1)) - 2 for length in (28, 29, 30, 31)),) * 7
    dom_bits = 0
    for day in dom:
        dom_bits |= 1 << day
    # Python weekdays (Monday = 0) are what date.weekday() gives; cron's Sunday = 0 is shifted.
    plain = [(wd + 6) % 7 for wd in dow]
    shifted = [((wd + 6) % 7, n) for wd, n in nth]
    rows: list[tuple[int, ...]] = []
    for first_weekday in range(7):
        row: list[int] = []
        weekly = 0
        for wd in plain:
            weekly |= _EVERY_SEVENTH_DAY[1 + (wd - first_weekday) % 7]
        for length in (28, 29, 30, 31):
            whole = (1 << (length + 1)) - 2
            dom_mask = (dom_bits & whole) | ((1 << length) if last_day else 0)
            dow_mask = weekly & whole
            for wd, n in shifted:
                first = 1 + (wd - first_weekday) % 7
                day = first + 7 * ((length - first) // 7) if n == _LAST else first + 7 * (n - 1)
                if day <= length:
                    dow_mask |= 1 << day
            if day_or:
                row.append(dom_mask | dow_mask)
            else:
                row.append(dom_mask & dow_mask)
        rows.append(tuple(row))
    return tuple(rows)


def _check_reachable(
    month_set: frozenset[int],
    dom: tuple[int, ...],
    last_day: bool,
    day_masks: tuple[tuple[int, ...], ...],
) -> None:
    months = sorted(month_set)
    longest = max(29 if m == 2 else _DAYS_IN_MONTH[m] for m in months)
    if dom and not last_day and min(dom) > longest:
        # Every listed day lies beyond the longest selected month: a typo, even if
        # day-of-week could still match on its own.
        days = ", ".join(str(d) for d in sorted(dom))
        verb = "never occurs" if len(dom) == 1 else "never occur"
        raise ScheduleError(f"day-of-month {days} {verb} in {_join_or(_month_names(months))}")
    for month in months:
        for length in (28, 29) if month == 2 else (_DAYS_IN_MONTH[month],):
            if any(row[length - 28] for row in day_masks):
                return
    raise ScheduleError("no date ever matches both day-of-month and day-of-week")


# -- parsing ------------------------------------------------------------------------------------


def _split(expression: str) -> tuple[str, ...]:
    text = expression.strip().lower()
    if not text:
        raise ScheduleError("empty cron expression")
    if text.startswith("@"):
        if text not in ALIASES:
            raise ScheduleError(
                "unknown shortcut; use @yearly, @annually, @monthly, @weekly, @daily, "
                "@midnight or @hourly"
            )
        text = ALIASES[text]
    fields = tuple(_FIELD_SPLIT.findall(text))
    if len(fields) != 5:
        extra = " (seconds and years fields are not supported)" if len(fields) in (6, 7) else ""
        raise ScheduleError(
            "expected 5 fields (minute hour day-of-month month day-of-week), "
            f"got {len(fields)}{extra}"
        )
    return fields


def _value(index: int, word: str) -> int:
    """A number or name of field ``index``, range-checked against what the field admits."""
    name = FIELD_NAMES[index]
    if word.isdigit():
        number = int(word)
    elif index == MONTH and word in _MONTH_ABBR:
        number = _MONTH_ABBR.index(word) + 1
    elif index == DOW and word in _DOW_ABBR:
        number = _DOW_ABBR.index(word)
    elif word == "l":
        raise ScheduleError(
            "'L' is only allowed in day-of-month (alone or ending a range, like '25-L') "
            "and in day-of-week as 'L<weekday>' (e.g. 'L0' = last Sunday)"
        )
    else:
        raise ScheduleError(f"{name} field: unknown value '{word}'")
    low, high = _LIMITS[index]
    if not low <= number <= high:
        raise ScheduleError(f"{name} field: {number} is out of range ({low}-{high})")
    return number


def _step(index: int, word: str) -> int:
    name = FIELD_NAMES[index]
    if not word.isdigit():
        raise ScheduleError(f"{name} field: step '{word}' is not a number")
    step = int(word)
    if step == 0:
        raise ScheduleError(f"{name} field: a step must be at least 1")
    if step >= _CYCLE[index]:
        period = ("hour", "day", "month", "year", "week")[index]
        raise ScheduleError(
            f"{name} field: step {step} does not fit the field; cron steps restart every "
            f"{period} (for a fixed period use an interval schedule, 'every')"
        )
    return step


@dataclass(slots=True)
class _FieldBuilder:
    values: set[int] = field(default_factory=set)
    last_day: bool = False
    nth: set[tuple[int, int]] = field(default_factory=set)


def _parse_special(index: int, item: str, into: _FieldBuilder) -> bool:
    """Handle (or refuse) the items that are not numbers, names, ranges or steps."""
    name = FIELD_NAMES[index]
    if item == "?":
        raise ScheduleError("'?' is not supported; use '*'")
    if _HASHED.fullmatch(item):
        raise ScheduleError(f"{name} field: hashed or random values ('H', 'R') are not supported")
    if index == DOM:
        if item == "l":
            into.last_day = True
            return True
        if _NEAREST_WEEKDAY.fullmatch(item):
            raise ScheduleError("'W' (nearest weekday) is not supported")
    if index != DOW:
        return False
    if item == "l":
        raise ScheduleError("day-of-week 'L' needs a weekday, e.g. 'L5' = last Friday")
    if (match := _LAST_WEEKDAY.fullmatch(item)) and match[1].isdigit():
        into.nth.add((_value(DOW, match[1]) % 7, _LAST))
        return True
    if match := _NTH_WEEKDAY.fullmatch(item):
        if not match[2].isdigit() or not 1 <= int(match[2]) <= 5:
            raise ScheduleError("day-of-week '#n' needs n from 1 to 5 (e.g. '1#2')")
        into.nth.add((_value(DOW, match[1]) % 7, int(match[2])))
        return True
    if "#" in item:
        raise ScheduleError("day-of-week '#' takes a single weekday (e.g. '1#2', not a range)")
    return False


def _item_values(index: int, item: str) -> list[int]:
    """The values of a number, name, ``*``, range or step item (day-of-week 7 not yet folded)."""
    name = FIELD_NAMES[index]
    match = _ITEM.fullmatch(item)
    if match is None:
        raise ScheduleError(f"{name} field: cannot read '{item}'")
    star, start_word, end_word, step_word = match.groups()
    step = 1 if step_word is None else _step(index, step_word)
    low, high = _LIMITS[index]
    if star:
        return list(range(low, _STEP_END[index] + 1, step))
    start = _value(index, start_word)
    if end_word is None:
        if step_word is None:
            return [start]
        if index == DOW and start == 7:
            raise ScheduleError("day-of-week field: write 0, not 7, to start a step at Sunday")
        return list(range(start, _STEP_END[index] + 1, step))
    end = high if index == DOM and end_word == "l" else _value(index, end_word)
    if start == end or (index == DOW and start == 7 and end == 0):
        raise ScheduleError(
            f"{name} field: range '{item}' has equal ends (croniter reads that as the whole "
            f"field); write the single value"
        )
    if index == DOW and start == 7:
        start = 0  # Sunday; as an end, 7 stays 7 so that 1-7 is Monday to Sunday
    if start < end:
        return list(range(start, end + 1, step))
    if step_word is not None:
        raise ScheduleError(
            f"{name} field: a step on a wrap-around range ('{item}') is not supported; "
            f"list the values"
        )
    # Wrap-around: up to the top of the field, then on from its bottom.
    return [*range(start, (6 if index == DOW else high) + 1), *range(low, end + 1)]


def _parse_field(index: int, text: str) -> _Field:
    items = text.split(",")
    into = _FieldBuilder()
    for item in items:
        if not item:
            raise ScheduleError(f"{FIELD_NAMES[index]} field has an empty list item")
        if item == "*" and len(items) > 1:
            raise ScheduleError(f"{FIELD_NAMES[index]} field: '*' cannot be part of a list")
        if not _parse_special(index, item, into):
            values = _item_values(index, item)
            into.values.update([value % 7 for value in values] if index == DOW else values)
    if into.nth and into.values:
        raise ScheduleError(
            "day-of-week cannot mix plain weekdays with 'L' or '#' entries "
            "(croniter would ignore the plain ones)"
        )
    return _Field(frozenset(into.values), into.last_day, frozenset(into.nth))


def _check_day_fields(texts: tuple[str, ...], parsed: tuple[_Field, ...]) -> None:
    if parsed[DOM].last_day and len(parsed[DOM].values) == 30:
        # croniter counts 'L' as a 31st value and collapses the field to '*' (every day).
        raise ScheduleError(
            "day-of-month field: 'L' together with 30 other days is read by croniter as "
            "every day; leave out 'L' or the days it already covers"
        )
    if parsed[DOW].nth and texts[DOM] != "*":
        raise ScheduleError(
            "day-of-month must be '*' when day-of-week uses 'L' or '#' "
            "(croniter would require both instead of either)"
        )


_Expanded = tuple[
    tuple[int, ...],  # minutes
    tuple[int, ...],  # hours
    tuple[int, ...],  # days of month, numeric
    bool,  # day-of-month L
    frozenset[int],  # months
    tuple[int, ...],  # weekdays, Sunday = 0
    tuple[tuple[int, int], ...],  # (weekday, n) with n = _LAST for L<d>
]


def _croniter_expand(text: str) -> _Expanded:
    try:
        fields, nth_map = croniter.expand(text)
    except Exception as exc:  # croniter raises ValueError subclasses and, on odd input, others
        first_line = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise ScheduleError(f"croniter cannot read this expression: {first_line}") from None

    def numbers(index: int) -> tuple[int, ...]:
        field = fields[index]
        if field == ["*"]:
            low, high = _LIMITS[index]
            return tuple(range(low, min(high, _STEP_END[index]) + 1))
        return tuple(sorted(v for v in field if isinstance(v, int)))

    nth: list[tuple[int, int]] = []
    for weekday, ns in nth_map.items():
        nth.extend((int(weekday) % 7, _LAST if n == "l" else int(n)) for n in ns)
    dow = () if nth else numbers(DOW)
    return (
        numbers(MINUTE),
        numbers(HOUR),
        numbers(DOM),
        "l" in fields[DOM],
        frozenset(numbers(MONTH)),
        tuple(sorted({d % 7 for d in dow})),
        tuple(sorted(nth)),
    )


def _cross_check(texts: tuple[str, ...], parsed: tuple[_Field, ...], expanded: _Expanded) -> None:
    """Refuse what croniter expands differently from the rules above (its silent misreadings)."""
    minutes, hours, dom, last_day, months, dow, nth = expanded
    ours: list[tuple[object, object]] = [
        (parsed[MINUTE].values, frozenset(minutes)),
        (parsed[HOUR].values, frozenset(hours)),
        ((parsed[DOM].values, parsed[DOM].last_day), (frozenset(dom), last_day)),
        (parsed[MONTH].values, months),
        (parsed[DOW].values if not parsed[DOW].nth else frozenset(), frozenset(dow)),
    ]
    for index, (mine, theirs) in enumerate(ours):
        if mine != theirs:
            raise ScheduleError(
                f"{FIELD_NAMES[index]} field: croniter reads '{texts[index]}' differently "
                f"from cron; write the values as a plain list"
            )
    if parsed[DOW].nth != frozenset(nth):
        raise ScheduleError(
            f"day-of-week field: croniter reads '{texts[DOW]}' differently from cron; "
            f"write one 'L<d>' or 'd#n' entry per weekday"
        )


def _next_table(values: tuple[int, ...], size: int) -> tuple[int, ...]:
    """``table[i]`` = smallest value >= i, or -1; one extra slot so i = size means "none left"."""
    table = [-1] * (size + 1)
    for i in range(size - 1, -1, -1):
        table[i] = i if i in values else table[i + 1]
    return tuple(table)


# -- words --------------------------------------------------------------------------------------


def _compact(values: tuple[int, ...] | frozenset[int], whole: range) -> list[int] | str:
    return "*" if set(values) >= set(whole) else sorted(values)


def _format_offset(offset: timedelta) -> str:
    total = int(offset.total_seconds()) // 60
    sign = "-" if total < 0 else "+"
    hours, minutes = divmod(abs(total), 60)
    return f"UTC{sign}{hours:02d}:{minutes:02d}"


def _join(words: list[str], last: str = "and") -> str:
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} {last} {words[-1]}"


def _join_or(words: list[str]) -> str:
    return _join(words, "or")


def _month_names(months: list[int]) -> list[str]:
    return [MONTH_NAMES[m - 1] for m in months]


def _describe_time(minutes: tuple[int, ...], hours: tuple[int, ...]) -> str | None:
    step = minutes[1] - minutes[0] if len(minutes) > 1 else 0
    regular = len(minutes) > 1 and minutes == tuple(range(0, 60, step)) and 60 % step == 0
    every = "every minute" if len(minutes) == 60 else f"every {step} minutes" if regular else None
    if len(hours) == 24:
        if every is None and len(minutes) <= 4:
            return f"every hour at {_join([f':{m:02d}' for m in minutes])}"
        return every
    hour_step = hours[1] - hours[0] if len(hours) > 2 else 0
    if (
        len(minutes) == 1
        and hour_step
        and hours == tuple(range(0, 24, hour_step))
        and 24 % hour_step == 0
    ):
        return f"every {hour_step} hours at :{minutes[0]:02d}"
    if len(minutes) * len(hours) <= 6:
        return "at " + _join([f"{h:02d}:{m:02d}" for h in hours for m in minutes])
    if every is not None and hours == tuple(range(hours[0], hours[-1] + 1)):
        return f"{every} from {hours[0]:02d}:00 to {hours[-1]:02d}:{minutes[-1]:02d}"
    return None


def _describe_weekdays(schedule: CronSchedule, *, plural: bool) -> str:
    """``every Friday`` after a time of day, ``on Fridays`` after a repetition."""
    if schedule._nth:
        parts = []
        for wd, n in sorted(schedule._nth, key=lambda p: (p[1] == _LAST, p[1], p[0])):
            which = "last" if n == _LAST else _ORDINALS[n - 1]
            parts.append(f"the {which} {DAY_NAMES[wd]}")
        return f"on {_join(parts)} of the month"
    days = sorted(schedule._dow)
    if days == [1, 2, 3, 4, 5]:
        return "on weekdays"
    if days == [0, 6]:
        return "on weekends"
    if plural:
        return "on " + _join([f"{DAY_NAMES[d]}s" for d in days])
    return "every " + _join([DAY_NAMES[d] for d in days])


def _describe_month_days(schedule: CronSchedule) -> str | None:
    words = [str(d) for d in schedule._dom]
    if len(words) > 4:
        return None
    if schedule._last_day:
        words.append("the last day")
    if words == ["the last day"]:
        return "on the last day of the month"
    label = "day" if len(schedule._dom) == 1 else "days"
    return f"on {label} {_join(words)} of the month"


def _describe(schedule: CronSchedule) -> str | None:
    time = _describe_time(schedule._minutes, schedule._hours)
    if time is None:
        return None
    months = sorted(schedule._months)
    if 4 < len(months) < 12:
        return None
    month_text = "" if len(months) == 12 else f" in {_join(_month_names(months))}"
    days = schedule._canonical_days()
    if days["dom"] == "*" and days["dow"] == "*":
        day_text = " every day" if time.startswith("at ") else ""
    elif days.get("match") == "both":
        return None
    elif days["dow"] == "*":
        if (
            len(months) == 1
            and len(schedule._dom) == 1
            and not schedule._last_day
            and not schedule._day_or
        ):
            return f"{time} on {schedule._dom[0]} {MONTH_NAMES[months[0] - 1]}"
        found = _describe_month_days(schedule)
        if found is None:
            return None
        day_text = " " + found
    elif days["dom"] == "*":
        day_text = " " + _describe_weekdays(schedule, plural=not time.startswith("at "))
    else:
        by_date = _describe_month_days(schedule)
        if by_date is None:
            return None
        day_text = f" {by_date} or {_describe_weekdays(schedule, plural=False)}"
    return f"{time}{day_text}{month_text}"
