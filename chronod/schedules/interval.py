"""``every = "15m"``: slots at ``anchor + k·every``, elapsed time, untouched by DST.

Semantics: docs/design.md §2.

The phase is a property of the definition, not of when a daemon started: slots are computed from the
anchor alone, so a restart at any instant lands on the same grid.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from chronod.durations import format_duration
from chronod.errors import ScheduleError
from chronod.instants import format_utc
from chronod.schedules.base import Fire, Schedule
from chronod.tz import UTC, Zone

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MIN_EVERY = timedelta(seconds=1)


class IntervalSchedule(Schedule):
    def __init__(self, every: timedelta, zone: Zone, anchor: datetime = EPOCH) -> None:
        if every < MIN_EVERY:
            raise ScheduleError(f"an interval must be at least {format_duration(MIN_EVERY)}")
        if anchor.tzinfo is None:
            raise ScheduleError("anchor must be an instant with a UTC offset")
        self.every = every
        self.anchor = anchor.astimezone(UTC)
        self.zone = zone

    def _first_after(self, after: datetime) -> Fire | None:
        # Floor division of timedeltas is exact integer arithmetic on microseconds.
        steps = (after - self.anchor) // self.every + 1
        return Fire(self.anchor + steps * self.every)

    def canonical(self) -> dict[str, Any]:
        return {
            "kind": "interval",
            "every_us": self.every // timedelta(microseconds=1),
            "anchor": format_utc(self.anchor),
            "zone": self.zone.name,
        }

    def describe(self) -> str:
        text = f"every {format_duration(self.every, parts=4).replace(' ', '')}"
        if self.anchor != EPOCH:
            text += f" from {format_utc(self.anchor)}"
        return text
