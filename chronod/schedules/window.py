"""``start`` / ``end``: bound any schedule to a window of instants, both ends inclusive."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from chronod.instants import format_utc
from chronod.schedules.base import Fire, Schedule

_TICK = timedelta(microseconds=1)


class WindowedSchedule(Schedule):
    def __init__(self, inner: Schedule, start: datetime | None, end: datetime | None) -> None:
        self.inner = inner
        self.zone = inner.zone
        self.start = start
        self.end = end

    def _first_after(self, after: datetime) -> Fire | None:
        if self.start is not None and after < self.start:
            after = self.start - _TICK  # a fire exactly at ``start`` belongs to the window
        fire = self.inner.next_fire(after)
        if fire is None or (self.end is not None and fire.at > self.end):
            return None
        return fire

    def canonical(self) -> dict[str, Any]:
        return {
            **self.inner.canonical(),
            "start": None if self.start is None else format_utc(self.start),
            "end": None if self.end is None else format_utc(self.end),
        }

    def describe(self) -> str:
        text = self.inner.describe()
        if self.start is not None:
            text += f", from {format_utc(self.start)}"
        if self.end is not None:
            text += f", until {format_utc(self.end)}"
        return text
