"""``exclude`` / ``exclude_file``: drop the fires of any schedule that land on given local dates.

Semantics: docs/schedules.md. A fire is excluded when its wall-clock date *in the job's zone* is
one of the dates; the fire after it says which fires were skipped and why (``chronod next``). The
wrapper only filters: it never moves a fire, so what remains is exactly the inner schedule's
fires on other dates.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime, time, timedelta
from types import MappingProxyType
from typing import Any

from chronod.schedules.base import Fire, Schedule

_TICK = timedelta(microseconds=1)
_NOTED = 3  # skipped fires named in one note; more are counted


class ExcludedSchedule(Schedule):
    """``inner`` without its fires on ``dates`` (local dates in ``inner.zone``).

    ``dates`` maps each date to where it was given (``exclude``, ``holidays.txt:3``): shown in
    notes, not part of the fingerprint (moving a date between the list and the file changes no
    slot).
    """

    def __init__(self, inner: Schedule, dates: Mapping[date, str]) -> None:
        self.inner = inner
        self.zone = inner.zone
        self.dates: Mapping[date, str] = MappingProxyType(dict(dates))
        # Built once: a holiday file in [defaults] gives thousands of jobs thousands of dates.
        self._listed = tuple(d.isoformat() for d in sorted(self.dates))

    def _first_after(self, after: datetime) -> Fire | None:
        skipped: list[Fire] = []
        current = after
        # Each round past a fire on an excluded date jumps past the end of that local date, so
        # no round sees the same date twice: the loop ends within len(dates) + 1 rounds.
        for _ in range(len(self.dates) + 1):
            fire = self.inner.next_fire(current)
            if fire is None:
                return None
            day = self.zone.wall(fire.at).date()
            if day not in self.dates:
                return self._noted(fire, skipped)
            skipped.append(fire)
            current = max(self._last_instant_of(day), fire.at)
        return None  # pragma: no cover - the bound above is never reached

    def _last_instant_of(self, day: date) -> datetime:
        """The last microsecond whose local date is ``day`` (the next midnight may be in a gap)."""
        following = datetime.combine(day + timedelta(days=1), time())
        resolution = self.zone.resolve(following)
        start = resolution.instants[0] if resolution.instants else resolution.gap_end
        assert start is not None
        return start - _TICK

    def _noted(self, fire: Fire, skipped: list[Fire]) -> Fire:
        if not skipped:
            return fire
        shown = []
        for each in skipped[:_NOTED]:
            local = self.zone.wall(each.at)
            shown.append(f"{local:%Y-%m-%d %H:%M} (excluded by {self.dates[local.date()]})")
        text = "skipped " + ", ".join(shown)
        if len(skipped) > _NOTED:
            text += f" and {len(skipped) - _NOTED} more excluded fires"
        note = text if fire.note is None else f"{fire.note}; {text}"
        return Fire(fire.at, note)

    def canonical(self) -> dict[str, Any]:
        return {**self.inner.canonical(), "exclude": self._listed}

    def describe(self) -> str:
        count = len(self.dates)
        return f"{self.inner.describe()}, except on {count} date{'s' if count != 1 else ''}"
