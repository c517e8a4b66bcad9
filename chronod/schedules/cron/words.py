"""A cron schedule in words (``at 17:30 every Friday``), or None where words would mislead."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Final

from chronod.schedules.cron.parse import DAY_NAMES, LAST, MONTH_NAMES

if TYPE_CHECKING:
    from chronod.schedules.cron.tables import CronTables

_ORDINALS: Final = ("first", "second", "third", "fourth", "fifth")


def format_offset(offset: timedelta) -> str:
    total = int(offset.total_seconds()) // 60
    sign = "-" if total < 0 else "+"
    hours, minutes = divmod(abs(total), 60)
    return f"UTC{sign}{hours:02d}:{minutes:02d}"


def _join(words: list[str], last: str = "and") -> str:
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} {last} {words[-1]}"


def join_or(words: list[str]) -> str:
    return _join(words, "or")


def month_names(months: list[int]) -> list[str]:
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


def _describe_weekdays(t: CronTables, *, plural: bool) -> str:
    """``every Friday`` after a time of day, ``on Fridays`` after a repetition."""
    if t.nth:
        parts = []
        for wd, n in sorted(t.nth, key=lambda p: (p[1] == LAST, p[1], p[0])):
            which = "last" if n == LAST else _ORDINALS[n - 1]
            parts.append(f"the {which} {DAY_NAMES[wd]}")
        return f"on {_join(parts)} of the month"
    days = sorted(t.dow)
    if days == [1, 2, 3, 4, 5]:
        return "on weekdays"
    if days == [0, 6]:
        return "on weekends"
    if plural:
        return "on " + _join([f"{DAY_NAMES[d]}s" for d in days])
    return "every " + _join([DAY_NAMES[d] for d in days])


def _describe_month_days(t: CronTables) -> str | None:
    words = [str(d) for d in t.dom]
    if len(words) > 4:
        return None
    if t.last_day:
        words.append("the last day")
    if words == ["the last day"]:
        return "on the last day of the month"
    label = "day" if len(t.dom) == 1 else "days"
    return f"on {label} {_join(words)} of the month"


def in_words(t: CronTables) -> str | None:
    time = _describe_time(t.minutes, t.hours)
    if time is None:
        return None
    months = sorted(t.months)
    if 4 < len(months) < 12:
        return None
    month_text = "" if len(months) == 12 else f" in {_join(month_names(months))}"
    days = t.canonical_days()
    if days["dom"] == "*" and days["dow"] == "*":
        day_text = " every day" if time.startswith("at ") else ""
    elif days.get("match") == "both":
        return None
    elif days["dow"] == "*":
        if len(months) == 1 and len(t.dom) == 1 and not t.last_day and not t.day_or:
            return f"{time} on {t.dom[0]} {MONTH_NAMES[months[0] - 1]}"
        found = _describe_month_days(t)
        if found is None:
            return None
        day_text = " " + found
    elif days["dom"] == "*":
        day_text = " " + _describe_weekdays(t, plural=not time.startswith("at "))
    else:
        by_date = _describe_month_days(t)
        if by_date is None:
            return None
        day_text = f" {by_date} or {_describe_weekdays(t, plural=False)}"
    return f"{time}{day_text}{month_text}"
