"""Celery ``crontab`` fields as a chronod cron expression: pure functions of the expanded sets.

Celery runs a crontab when *every* field matches, day-of-month and day-of-week included. cron
(cronie, and chronod) runs it when either day field matches once both are restricted. The two
agree whenever one day field is unrestricted (written ``*``, never as its full range, which cron
would count as restricted). With both restricted, Celery's AND is still expressible when the
days of the month are whole "weeks of the month" (1-7, 8-14, 15-21, 22-28, 29-31): "Monday with
day 1-7" is the first Monday, ``1#1``. Anything else ("Friday the 13th") has no cron equivalent:
it is refused with the reason.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

MINUTES = frozenset(range(60))
HOURS = frozenset(range(24))
DAYS_OF_WEEK = frozenset(range(7))  # 0 = Sunday, as in cron and Celery
DAYS_OF_MONTH = frozenset(range(1, 32))
MONTHS = frozenset(range(1, 13))
# The n-th occurrence of a weekday in a month falls on exactly these days.
WEEKS_OF_MONTH = {n: frozenset(range(7 * n - 6, min(7 * n, 31) + 1)) for n in range(1, 6)}
ORDINALS = {1: "first", 2: "second", 3: "third", 4: "fourth", 5: "fifth"}


class Untranslatable(ValueError):
    """The crontab has no cron equivalent; the text says why, for the user."""


@dataclass(frozen=True)
class Cron:
    expression: str
    note: (
        str | None
    )  # said as a comment above the job when the writing differs in a way that matters


def field(values: Iterable[int], full: frozenset[int]) -> str:
    """A set of values as a cron field: ``*``, ``*/n``, ranges and lists (``1-5,7``)."""
    chosen = sorted(set(values))
    if not chosen:
        raise Untranslatable("a field matches nothing: Celery would never run it")
    if set(chosen) == full:
        return "*"
    low = min(full)
    for step in range(2, len(full)):
        if set(chosen) == set(range(low, max(full) + 1, step)):
            return f"*/{step}"
    parts: list[str] = []
    start = previous = chosen[0]
    for value in [*chosen[1:], None]:
        if value is not None and value == previous + 1:
            previous = value
            continue
        # cron refuses a one-value range such as 5-5 (chronod too): a lone value is written alone.
        parts.append(str(start) if start == previous else f"{start}-{previous}")
        if value is not None:
            start = previous = value
    return ",".join(parts)


def translate(
    minute: Iterable[int],
    hour: Iterable[int],
    day_of_week: Iterable[int],
    day_of_month: Iterable[int],
    month_of_year: Iterable[int],
) -> Cron:
    """The cron expression that fires exactly when Celery's crontab does; or raise
    :class:`Untranslatable`."""
    dows, doms = frozenset(day_of_week), frozenset(day_of_month)
    head = f"{field(minute, MINUTES)} {field(hour, HOURS)}"
    months = field(month_of_year, MONTHS)
    if dows == DAYS_OF_WEEK or doms == DAYS_OF_MONTH:
        return Cron(
            f"{head} {field(doms, DAYS_OF_MONTH)} {months} {field(dows, DAYS_OF_WEEK)}", None
        )
    weeks = [n for n, days in WEEKS_OF_MONTH.items() if days <= doms]
    if not dows or set().union(*(WEEKS_OF_MONTH[n] for n in weeks)) != doms:
        raise Untranslatable(
            f"Celery runs it only on days that are both day-of-month {field(doms, DAYS_OF_MONTH)} "
            f"and day-of-week {field(dows, DAYS_OF_WEEK)}; cron runs a job on days matching "
            "either field, and that AND has no cron form (only whole weeks of the month, such as "
            "1-7 for 'the first Monday', do): schedule it daily on those days of the month and "
            "let the task check the weekday, or the other way round"
        )
    items = ",".join(f"{dow}#{n}" for dow in sorted(dows) for n in weeks)
    said = ", ".join(ORDINALS[n] for n in weeks)
    note = (
        f"Celery: day-of-month {field(doms, DAYS_OF_MONTH)} AND day-of-week "
        f"{field(dows, DAYS_OF_WEEK)}; cron would OR those fields, so written as the {said} "
        "such weekday of the month (the same days)"
    )
    return Cron(f"{head} * {months} {items}", note)
