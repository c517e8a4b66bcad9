"""Schedule kinds behind one interface: ``Schedule.next_fire`` (first fire strictly after t)."""

from __future__ import annotations

from chronod.schedules.base import Fire, Schedule, fingerprint_of
from chronod.schedules.interval import IntervalSchedule
from chronod.schedules.window import WindowedSchedule

__all__ = ["Fire", "IntervalSchedule", "Schedule", "WindowedSchedule", "fingerprint_of"]
