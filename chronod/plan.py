"""Planning one job's slots: which are due, which run, which are missed. Pure functions.

:func:`plan_slots` splits the slots of a job in (watermark, now] by ``grace``: slots late by at
most ``grace`` are dispatched, oldest first; older ones follow ``catchup`` (``none``: recorded
missed; ``latest``: the newest runs; ``all``: the newest ``catchup_limit`` run) and the rest are
recorded missed. Nothing here reads a clock or a store: the scheduler (:mod:`chronod.dispatch`)
passes the store's time and the job's watermark, and the store re-checks whatever it is sent.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import islice
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterator

    from chronod.config import JobConfig
    from chronod.schedules import Schedule

TICK = timedelta(microseconds=1)
GUARD_MIN = timedelta(hours=24)
# Missed slots get history entries for at most this many of the newest ones per decision; the
# counter still counts them all (up to COUNT_CAP, past which a long outage is summarised).
MISSED_ENTRIES = 20
COUNT_CAP = 100_000


@dataclass(frozen=True, kw_only=True)
class Plan:
    """What to do with one job's due slots."""

    run: tuple[datetime, ...]  # to dispatch, oldest first
    missed: tuple[datetime, ...]  # newest missed slots that get history entries
    missed_count: int  # all missed slots (>= len(missed); capped at COUNT_CAP)
    next_due: datetime | None  # first slot after ``now``


def plan_slots(job: JobConfig, watermark: datetime | None, now: datetime) -> Plan:
    """Split the slots of ``job`` in (watermark, now] by grace and catchup. Pure."""
    schedule = job.schedule
    floor = watermark if watermark is not None else now
    cutoff = now - job.grace  # a slot at exactly ``cutoff`` is late by ``grace``: still runs
    start = max(floor, cutoff - TICK)
    in_grace: list[datetime] = []
    next_due: datetime | None = None
    # One walk gives the slots in (start, now] and the first one after ``now``: the schedule is
    # the costly part of planning, so it is not asked for that first slot a second time.
    for fire in schedule.fires(start):
        if fire.at > now:
            next_due = fire.at
            break
        in_grace.append(fire.at)
    if start > now:  # a watermark ahead of ``now`` (the store's clock went back)
        next_due = schedule.next_after(now)
    keep = {"none": 0, "latest": 1, "all": job.catchup_limit}[job.catchup]
    older, count = _newest_before(schedule, floor, cutoff, keep + MISSED_ENTRIES)
    split = max(len(older) - keep, 0)
    catch_up, missed = older[split:], older[:split]
    return Plan(
        run=(*catch_up, *in_grace),
        missed=tuple(missed[-MISSED_ENTRIES:]),
        missed_count=count - len(catch_up),
        next_due=next_due,
    )


def _fires_between(schedule: Schedule, after: datetime, until: datetime) -> Iterator[datetime]:
    """Fires in (after, until]."""
    for fire in schedule.fires(after):
        if fire.at > until:
            return
        yield fire.at


def _newest_before(
    schedule: Schedule, floor: datetime, cutoff: datetime, need: int
) -> tuple[list[datetime], int]:
    """The newest ``need`` fires in (floor, cutoff) and how many there are in all (capped).

    Schedules only walk forward, so look back from ``cutoff`` through a window that grows 4x until
    it holds ``need`` fires or reaches ``floor``; then count what lies before the window.
    """
    if cutoff <= floor + TICK:
        return [], 0
    span = timedelta(minutes=1)
    while True:
        # Compared before subtracting: a span grown past the years before ``cutoff`` (a window
        # that opens millennia ahead) would overflow ``cutoff - span``.
        low = floor if span >= cutoff - floor else cutoff - span
        found = list(_fires_between(schedule, low, cutoff - TICK))
        if len(found) >= need or low == floor:
            break
        span *= 4
    count = len(found)
    if low > floor:
        count += sum(1 for _ in islice(_fires_between(schedule, floor, low), COUNT_CAP))
    return found[-need:] if need else [], min(count, COUNT_CAP)


def guard_ttl(job: JobConfig, slot: datetime, next_due: datetime | None) -> timedelta:
    """How long the slot's guard must live: max(24 h, 2 periods) (docs/design.md §5)."""
    period = (next_due - slot) if next_due is not None else timedelta()
    return max(GUARD_MIN, 2 * period)


class Plans:
    """:func:`plan_slots` for the jobs of one tick (or one
    :meth:`chronod.dispatch.Scheduler.prepare`), computed once per distinct input.

    A plan depends only on the schedule, the watermark, ``now`` and the grace/catchup settings,
    and jobs with the same definition share one schedule object (chronod.config): the 20,000
    crons of a burst at second 0 typically need a handful of plans, not 20,000. Plans are
    immutable, so sharing them is safe. Lives for one call: nothing is kept between ticks.
    """

    def __init__(self) -> None:
        self._plans: dict[tuple[object, ...], Plan] = {}

    def plan(self, job: JobConfig, watermark: datetime | None, now: datetime) -> Plan:
        # id(): the schedule is kept alive by the job for the whole call, so its id is stable.
        key = (id(job.schedule), watermark, now, job.grace, job.catchup, job.catchup_limit)
        found = self._plans.get(key)
        if found is None:
            found = self._plans[key] = plan_slots(job, watermark, now)
        return found
