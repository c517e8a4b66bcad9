"""The interface every schedule kind implements.

A schedule is a pure function of (definition, instant): given an instant it names the first fire
strictly after it. Nothing here reads a clock or a store. Instants in and out are aware UTC
datetimes.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from typing import Any

from chronod.instants import END_OF_TIME
from chronod.tz import Zone


@dataclass(frozen=True, slots=True)
class Fire:
    """One scheduled instant, with a note for humans when the rules moved or dropped something.

    Notes are the ones ``chronod next`` prints: a fire moved out of a DST gap, a repeated hour that
    was
    not re-run, solar days without the event.
    """

    at: datetime
    note: str | None = None


class Schedule(ABC):
    """Slots of one job: ``next_fire(t)`` is the first fire strictly after ``t``, or None if none.

    Implementations must be deterministic and side-effect free; ``fingerprint`` must change exactly
    when the set of instants the schedule produces could change (kind, fields, zone, window), and
    must
    not depend on anything else (command, queue, retries …).
    """

    zone: Zone
    # Whether fires lie after their nominal instants (jitter): a run's CHRONOD_SLOT is then
    # computed from the fire by :meth:`nominal`, which needs the whole definition.
    delays_fires: bool = False

    def next_fire(self, after: datetime) -> Fire | None:
        """First fire strictly after ``after`` (aware), or None when the schedule has ended.

        Every kind ends before :data:`~chronod.instants.END_OF_TIME`, a year before the end of
        the calendar: whatever is added to a fire (a zone's offset for display, a lease, a
        guard's lifetime, a retry delay) stays representable, and a kind whose arithmetic would
        overflow near the end has simply ended there.
        """
        try:
            fire = self._first_after(after)
        except OverflowError:
            return None
        if fire is None or fire.at >= END_OF_TIME:
            return None
        return fire

    @abstractmethod
    def _first_after(self, after: datetime) -> Fire | None:
        """:meth:`next_fire` of the kind, which may run past :data:`END_OF_TIME` or overflow."""

    @abstractmethod
    def canonical(self) -> dict[str, Any]:
        """Normalized definition (JSON-able) from which the fingerprint is computed."""

    @abstractmethod
    def describe(self) -> str:
        """The schedule in words, e.g. ``at 17:30 every Friday``."""

    def nominal(self, fire_at: datetime) -> datetime:
        """The nominal instant of the fire at ``fire_at`` (itself, unless fires are delayed)."""
        return fire_at

    def next_after(self, after: datetime) -> datetime | None:
        fire = self.next_fire(after)
        return None if fire is None else fire.at

    def fires(self, after: datetime) -> Iterator[Fire]:
        """All fires strictly after ``after``, in order (possibly infinite)."""
        current = after
        while (fire := self.next_fire(current)) is not None:
            yield fire
            current = fire.at

    @cached_property
    def fingerprint(self) -> str:
        # Computed once: a schedule is immutable, and one load shares it between every job with
        # the same definition (chronod.config.shared), 100,000 of them at times.
        return fingerprint_of(self.canonical())


def fingerprint_of(canonical: dict[str, Any]) -> str:
    text = json.dumps(canonical, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]
