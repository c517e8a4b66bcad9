"""A slow, obviously-correct cron evaluator written from docs/design.md §2, for tests only.

It shares nothing with ``chronod.schedules.cron`` but :class:`chronod.tz.Zone`: the fields arrive
as plain value sets (built by the test's own generator, not parsed by the code under test), days are
matched one calendar date at a time, and DST is applied exactly as the design words it:

* fixed-time: enumerate every matching naive wall minute, map it through ``Zone.resolve`` (once →
  that instant, twice → the first, gap → ``gap_end``) and keep the distinct instants;
* wildcard: walk real UTC minutes and keep those whose wall time matches.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

from chronod.tz import WallKind, Zone

LAST = -1  # the n of an "L<d>" rule in CronSpec.nth
_MINUTE = timedelta(minutes=1)
_DAY = timedelta(days=1)


@dataclass(frozen=True)
class CronSpec:
    """What a cron expression means, as value sets; ``*`` fields hold every value."""

    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]  # day-of-month numbers
    last_day: bool  # day-of-month L
    months: frozenset[int]
    weekdays: frozenset[int]  # plain day-of-week values, Sunday = 0
    nth: frozenset[tuple[int, int]]  # (weekday, n): n-th such weekday of the month, n = LAST: last
    dom_starts_with_star: bool
    dow_starts_with_star: bool
    fixed_time: bool  # neither minute nor hour starts with '*'


@dataclass(frozen=True)
class RefFire:
    at: datetime
    noted: bool  # fixed-time fire whose (earliest) wall time was skipped or repeated


def cron_weekday(day: date) -> int:
    return (day.weekday() + 1) % 7  # Python: Monday = 0; cron: Sunday = 0


def day_matches(spec: CronSpec, day: date) -> bool:
    if day.month not in spec.months:
        return False
    last = calendar.monthrange(day.year, day.month)[1]
    by_date = day.day in spec.days or (spec.last_day and day.day == last)
    weekday = cron_weekday(day)
    by_weekday = weekday in spec.weekdays
    for rule_weekday, n in spec.nth:
        if rule_weekday != weekday:
            continue
        if n == LAST and day.day + 7 > last:
            by_weekday = True
        if n != LAST and (day.day - 1) // 7 + 1 == n:
            by_weekday = True
    if spec.dom_starts_with_star or spec.dow_starts_with_star:
        return by_date and by_weekday
    return by_date or by_weekday


def wall_matches(spec: CronSpec, wall: datetime) -> bool:
    return (
        wall.second == 0
        and wall.microsecond == 0
        and wall.minute in spec.minutes
        and wall.hour in spec.hours
        and day_matches(spec, wall.date())
    )


def reference_fires(
    spec: CronSpec, zone: Zone, start: datetime, end: datetime, *, first_only: bool = False
) -> list[RefFire]:
    """Every fire in (start, end], in order (or just the first one, if asked and there is one)."""
    if spec.fixed_time:
        fires = _fixed_fires(spec, zone, start, end)
    else:
        fires = _wildcard_fires(spec, zone, start, end, first_only=first_only)
    return fires[:1] if first_only else fires


def _fixed_fires(spec: CronSpec, zone: Zone, start: datetime, end: datetime) -> list[RefFire]:
    earliest_wall: dict[datetime, tuple[datetime, WallKind]] = {}
    day = (zone.wall(start) - _DAY).date()
    last_day = (zone.wall(end) + _DAY).date()
    while day <= last_day:
        if day_matches(spec, day):
            for hour in range(24):
                for minute in range(60):
                    if hour not in spec.hours or minute not in spec.minutes:
                        continue
                    wall = datetime.combine(day, time(hour, minute))
                    resolution = zone.resolve(wall)
                    if resolution.kind is WallKind.GAP:
                        assert resolution.gap_end is not None
                        at = resolution.gap_end
                    else:
                        at = resolution.instants[0]
                    if start < at <= end and (
                        at not in earliest_wall or wall < earliest_wall[at][0]
                    ):
                        earliest_wall[at] = (wall, resolution.kind)
        day += _DAY
    return [
        RefFire(at, earliest_wall[at][1] is not WallKind.UNIQUE) for at in sorted(earliest_wall)
    ]


def _wildcard_fires(
    spec: CronSpec, zone: Zone, start: datetime, end: datetime, *, first_only: bool
) -> list[RefFire]:
    fires: list[RefFire] = []
    instant = start.replace(second=0, microsecond=0) + _MINUTE
    while instant <= end:
        assert zone.offset_at(instant) % _MINUTE == timedelta(0), "whole-minute offsets only"
        wall = zone.wall(instant)
        if wall_matches(spec, wall):
            fires.append(RefFire(instant, False))
            if first_only:
                break
        # Between transitions the wall clock runs with real time, so a day (or hour) that does not
        # match can be skipped up to the next wall midnight (hour) or the next transition.
        if not day_matches(spec, wall.date()):
            step = 24 * 60 - (wall.hour * 60 + wall.minute)
        elif wall.hour not in spec.hours:
            step = 60 - wall.minute
        else:
            step = min([m for m in spec.minutes if m > wall.minute] or [60]) - wall.minute
        following = instant + step * _MINUTE
        transition = zone.next_transition(instant)
        if transition is not None and transition < following:
            assert transition.second == 0, "transitions on whole minutes only"
            following = transition
        instant = following
    return fires
