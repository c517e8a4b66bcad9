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

DST is cronie's rule (docs/design.md §2). A job is *fixed-time* unless its minute or hour field
starts with ``*``. A fixed-time job fires, for each matching wall time t, at the first instant at
which the wall clock shows t or later: once for an ordinary t, at the first occurrence of a repeated
t, at the end of the gap for a skipped t (several skipped times collapse into one fire). A
*wildcard* job fires at every real instant whose wall time matches: skipped times never fire,
repeated ones fire at each occurrence.

What croniter accepts but would misread, or what could never fire, is refused at load time, each
with its own message: the list is in :mod:`chronod.schedules.cron.parse`.

The package, by concern: :mod:`~chronod.schedules.cron.parse` (reading and refusing),
:mod:`~chronod.schedules.cron.tables` (the lookup tables), :mod:`~chronod.schedules.cron.schedule`
(matching and the DST rule) and :mod:`~chronod.schedules.cron.words` (describing). Import from
here.
"""

from __future__ import annotations

from chronod.schedules.cron.parse import (
    ALIASES,
    DAY_NAMES,
    DOM,
    DOW,
    FIELD_NAMES,
    HOUR,
    MINUTE,
    MONTH,
    MONTH_NAMES,
)
from chronod.schedules.cron.schedule import CronCache, CronSchedule
from chronod.schedules.cron.tables import CronTables

__all__ = [
    "ALIASES",
    "DAY_NAMES",
    "DOM",
    "DOW",
    "FIELD_NAMES",
    "HOUR",
    "MINUTE",
    "MONTH",
    "MONTH_NAMES",
    "CronCache",
    "CronSchedule",
    "CronTables",
]
