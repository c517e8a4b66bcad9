"""``jitter = "10m"``: each fire of a schedule delayed by a deterministic amount in [0, jitter).

Semantics: docs/schedules.md. The delay of the fire whose nominal instant is N is a hash of the
job's name and N, scaled to ``min(jitter, gap)`` in whole seconds, where ``gap`` is the time to the
next nominal fire: every host computes the same instant, no fire is ever before its nominal
instant, and no delayed fire reaches the next nominal one, so the delayed fires keep the nominal
order (the watermark, grace and catch-up see an ordinary increasing schedule).

The delayed instant is the fire: it is the slot the store guards and the run id names. The
nominal instant is what a run sees as ``CHRONOD_SLOT`` (:meth:`Schedule.nominal`).
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta
from typing import Any

from chronod.durations import format_duration
from chronod.instants import format_utc
from chronod.schedules.base import Fire, Schedule

SECOND = timedelta(seconds=1)
_PROBE = timedelta(seconds=1)  # first look-back when searching the nominal fire before an instant


def delay_fraction(job: str, nominal: datetime) -> int:
    """A 64-bit hash of (job, nominal instant); the same on every host and Python version."""
    text = f"{job}@{format_utc(nominal)}".encode()
    return int.from_bytes(hashlib.sha256(text).digest()[:8], "big")


class JitteredSchedule(Schedule):
    """``inner``'s fires, each delayed by :meth:`delay` (``jitter`` at least one second)."""

    delays_fires = True

    def __init__(self, inner: Schedule, job: str, jitter: timedelta) -> None:
        if jitter < SECOND:
            raise ValueError("jitter must be at least 1s")
        self.inner = inner
        self.zone = inner.zone
        self.job = job
        self.jitter = jitter

    def delay(self, nominal: datetime, following: datetime | None) -> timedelta:
        """The delay of the nominal fire at ``nominal``; ``following`` is the next nominal one."""
        span = self.jitter if following is None else min(self.jitter, following - nominal)
        seconds = span // SECOND  # whole seconds: delays are whole seconds
        return SECOND * ((delay_fraction(self.job, nominal) * seconds) >> 64)

    def _delayed(self, fire: Fire) -> Fire:
        following = self.inner.next_after(fire.at)
        delay = self.delay(fire.at, following)
        local = self.zone.to_local(fire.at)
        text = f"nominal {local:%H:%M:%S} {local.tzname()}, +{format_duration(delay)} jitter"
        note = text if fire.note is None else f"{fire.note}; {text}"
        return Fire(fire.at + delay, note)

    def _last_nominal_at_or_before(self, instant: datetime) -> Fire | None:
        """The last nominal fire in (instant - jitter, instant], or None.

        Schedules only walk forward: look back 1 s, 4 s, 16 s, … (at most ``jitter``) until a
        fire lies in the window, then walk forward to the last one at or before ``instant``.
        """
        lowest = instant - self.jitter
        step = _PROBE
        while True:
            start = max(instant - step, lowest)
            found = self.inner.next_fire(start)
            if found is not None and found.at <= instant:
                while (later := self.inner.next_fire(found.at)) is not None and later.at <= instant:
                    found = later
                return found
            if start == lowest:
                return None
            step *= 4

    def _first_after(self, after: datetime) -> Fire | None:
        # Delayed fires keep the nominal order and each lies before the next nominal fire, so
        # the answer is the last nominal fire at or before ``after`` (if its delay carries it
        # past ``after``) or else the first nominal fire after ``after``.
        before = self._last_nominal_at_or_before(after)
        if before is not None:
            delayed = self._delayed(before)
            if delayed.at > after:
                return delayed
        fire = self.inner.next_fire(after)
        return None if fire is None else self._delayed(fire)

    def nominal(self, fire_at: datetime) -> datetime:
        found = self._last_nominal_at_or_before(fire_at)
        return fire_at if found is None else found.at

    def canonical(self) -> dict[str, Any]:
        # The inner schedule by its fingerprint, computed once on the object the load shares
        # (this wrapper is per job). The job's name is part of the slots too, but a renamed job
        # is another job anyway.
        return {
            "kind": self.inner.canonical()["kind"],
            "inner": self.inner.fingerprint,
            "jitter_us": self.jitter // timedelta(microseconds=1),
        }

    def describe(self) -> str:
        return f"{self.inner.describe()}, delayed up to {format_duration(self.jitter)}"
