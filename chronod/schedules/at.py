"""``at = ["2027-01-01T09:00", …]``: a job that fires at a list of instants only, each once.

Semantics: docs/schedules.md. The instants are resolved once, when the config is read (wall time
in the job's zone with cronie's DST rule, or an instant with an offset), so every host holds the
same sorted list; slots are those instants, and the store's watermark makes each one run at most
once like any other slot. After the last one the schedule has ended.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping
from datetime import datetime
from types import MappingProxyType
from typing import Any

from chronod.instants import format_utc
from chronod.schedules.base import Fire, Schedule
from chronod.tz import Zone


class AtSchedule(Schedule):
    """Fires at ``instants`` (aware), each once; ``notes`` explain instants a DST change moved.

    Several items resolving to one instant are one fire: a job never fires twice at one instant.
    """

    def __init__(
        self,
        instants: Iterable[datetime],
        zone: Zone,
        notes: Mapping[datetime, str] | None = None,
    ) -> None:
        self.instants: tuple[datetime, ...] = tuple(sorted(set(instants)))
        if not self.instants:
            raise ValueError("expected at least one date-time")
        if any(at.tzinfo is None for at in self.instants):
            raise ValueError("an 'at' instant must be aware")
        self.zone = zone
        self.notes: Mapping[datetime, str] = MappingProxyType(dict(notes or {}))

    def _first_after(self, after: datetime) -> Fire | None:
        index = bisect.bisect_right(self.instants, after)
        if index == len(self.instants):
            return None
        at = self.instants[index]
        return Fire(at, self.notes.get(at))

    def canonical(self) -> dict[str, Any]:
        return {
            "kind": "at",
            "at": [format_utc(at) for at in self.instants],
            "zone": self.zone.name,
        }

    def describe(self) -> str:
        last = self.zone.to_local(self.instants[-1])
        shown = f"{last:%Y-%m-%d %H:%M}" + (f":{last:%S}" if last.second else "")
        if len(self.instants) == 1:
            return f"once, at {shown}"
        return f"at {len(self.instants)} set times, the last at {shown}"
