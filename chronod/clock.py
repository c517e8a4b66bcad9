"""The one clock seam.

Loops take ``now`` from a :class:`Clock` and sleep through it; tests pass a :class:`ManualClock`
and drive time instead of waiting for it. Wall time is only ever an aware UTC instant; durations to
wait are measured on the monotonic clock so a wall-clock jump can neither stall nor hurry a loop.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta
from typing import Protocol

from chronod.tz import UTC


class Clock(Protocol):
    def now(self) -> datetime:
        """Current instant, aware UTC."""

    def monotonic(self) -> float:
        """Seconds on a clock that never jumps; only differences are meaningful."""

    def wait(self, event: threading.Event, seconds: float) -> bool:
        """Block until ``event`` is set or ``seconds`` passed; return whether the event is set."""


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()

    def wait(self, event: threading.Event, seconds: float) -> bool:
        return event.wait(max(seconds, 0.0))


class ManualClock:
    """A clock that moves only when told to; ``wait`` advances it instead of blocking."""

    def __init__(self, start: datetime) -> None:
        if start.tzinfo is None:
            raise ValueError("ManualClock needs an aware start instant")
        self._now = start.astimezone(UTC)
        self._mono = 1000.0

    def now(self) -> datetime:
        return self._now

    def monotonic(self) -> float:
        return self._mono

    def advance(self, seconds: float) -> None:
        self._now += timedelta(seconds=seconds)
        self._mono += seconds

    def set(self, instant: datetime) -> None:
        """Jump the wall clock (monotonic time moves by the same amount, never backwards)."""
        delta = (instant - self._now).total_seconds()
        self._now = instant.astimezone(UTC)
        self._mono += max(delta, 0.0)

    def wait(self, event: threading.Event, seconds: float) -> bool:
        if event.is_set():
            return True
        self.advance(max(seconds, 0.0))
        return event.is_set()
