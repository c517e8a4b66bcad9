"""A cron expression as lookup tables: months, days of a month by bit mask, hours and minutes.

Which days of a month match depends only on the weekday of its first day and its length, so
7 x 4 bit masks describe every month of every year; matching a month is one table lookup.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from chronod.errors import ScheduleError
from chronod.schedules.cron.parse import DOM, DOW, HOUR, LAST, MINUTE, read, split
from chronod.schedules.cron.words import join_or, month_names

DAYS_IN_MONTH: Final = (0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
# The Gregorian calendar repeats every 400 years (146097 days, a whole number of weeks), so a day
# rule that matches nothing within 400 years never matches; one more year covers a partial start.
HORIZON_YEARS: Final = 401
# Bit masks of the days first, first + 7, ... of a month (bit d = day d), for first = 1..7.
_EVERY_SEVENTH_DAY: Final = (0, *(sum(1 << d for d in range(f, 32, 7)) for f in range(1, 8)))


@dataclass(frozen=True, slots=True, eq=False)
class CronTables:
    """One cron expression read, checked and expanded into lookup tables.

    Independent of the zone and immutable, so every job whose expression reads the same shares
    one (:class:`~chronod.schedules.cron.schedule.CronCache`): building them (croniter's
    expansion above all) costs far more than any number of lookups, and 60,000 jobs saying
    ``* * * * *`` need them once.
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
        return cls.from_fields(split(expression))

    @classmethod
    def from_fields(cls, fields_text: tuple[str, ...]) -> CronTables:
        # croniter's expansion drives matching; read() has proven it equal to cron's reading.
        minutes, hours, dom, last_day, months, dow, nth = read(fields_text)
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

    def canonical_days(self) -> dict[str, Any]:
        """The day rule in normal form: what the fingerprint holds, and what the words follow."""
        dom_all = set(self.dom) >= set(range(1, 32))
        dow_all = not self.nth and set(self.dow) == set(range(7))
        dom: list[int | str] = [*self.dom, *(["L"] if self.last_day else [])]
        dow: list[str] = [str(d) for d in self.dow] if not self.nth else []
        dow += [f"L{wd}" if n == LAST else f"{wd}#{n}" for wd, n in self.nth]
        dow.sort()
        if self.day_or:
            if dom_all or dow_all:
                return {"dom": "*", "dow": "*"}
            return {"dom": dom, "dow": dow, "match": "either"}
        if dom_all:
            return {"dom": "*", "dow": "*" if dow_all else dow}
        if dow_all:
            return {"dom": dom, "dow": "*"}
        return {"dom": dom, "dow": dow, "match": "both"}


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
                day = first + 7 * ((length - first) // 7) if n == LAST else first + 7 * (n - 1)
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
    longest = max(29 if m == 2 else DAYS_IN_MONTH[m] for m in months)
    if dom and not last_day and min(dom) > longest:
        # Every listed day lies beyond the longest selected month: a typo, even if
        # day-of-week could still match on its own.
        days = ", ".join(str(d) for d in sorted(dom))
        verb = "never occurs" if len(dom) == 1 else "never occur"
        raise ScheduleError(f"day-of-month {days} {verb} in {join_or(month_names(months))}")
    for month in months:
        for length in (28, 29) if month == 2 else (DAYS_IN_MONTH[month],):
            if any(row[length - 28] for row in day_masks):
                return
    raise ScheduleError("no date ever matches both day-of-month and day-of-week")


def _next_table(values: tuple[int, ...], size: int) -> tuple[int, ...]:
    """``table[i]`` = smallest value >= i, or -1; one extra slot so i = size means "none left"."""
    table = [-1] * (size + 1)
    for i in range(size - 1, -1, -1):
        table[i] = i if i in values else table[i + 1]
    return tuple(table)
