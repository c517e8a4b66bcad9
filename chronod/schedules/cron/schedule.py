"""The cron schedule: matching over the tables, and cronie's DST rule (see the package doc)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from chronod.errors import ScheduleError
from chronod.schedules.base import Fire, Schedule, fingerprint_of
from chronod.schedules.cron.parse import split
from chronod.schedules.cron.tables import DAYS_IN_MONTH, HORIZON_YEARS, CronTables
from chronod.schedules.cron.words import format_offset, in_words
from chronod.tz import UTC, WallKind, Zone


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
        fields_text = split(expression)
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
    """A cron expression evaluated in ``zone`` with cronie's day and DST rules (package doc).

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
        limit = min(y + HORIZON_YEARS, 9999)
        while y <= limit:
            if month_ok[mo]:
                length = DAYS_IN_MONTH[mo]
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
            first = format_offset(self.zone.offset_at(instants[0]))
        times = "twice" if len(instants) == 2 else f"{len(instants)} times"
        return f"{wall:%H:%M} happens {times} on {wall:%Y-%m-%d}; runs once, at the first ({first})"

    # -- identity and words --------------------------------------------------------------------

    def canonical(self) -> dict[str, Any]:
        return {
            "kind": "cron",
            "minute": _compact(self._minutes, range(60)),
            "hour": _compact(self._hours, range(24)),
            "month": _compact(self._months, range(1, 13)),
            "days": self._t.canonical_days(),
            "dst": "fixed-time" if self._fixed_time else "wildcard",
            "zone": self.zone.name,
        }

    @property
    def fingerprint(self) -> str:
        # Computed once: the schedule is immutable, and shared by every job that uses it.
        if self._fingerprint is None:
            self._fingerprint = fingerprint_of(self.canonical())
        return self._fingerprint

    def describe(self) -> str:
        text = in_words(self._t)
        return text if text is not None else f"cron '{self.expression}'"

    def __repr__(self) -> str:
        return f"CronSchedule({self.expression!r}, {self.zone.name!r})"


def _compact(values: tuple[int, ...] | frozenset[int], whole: range) -> list[int] | str:
    return "*" if set(values) >= set(whole) else sorted(values)
