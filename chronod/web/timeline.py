"""The timeline the web page draws: fires, solar days without the event, runs and UTC offsets of
every configured job over a window of time, as snapshots and as JSON.

Upcoming fires follow the daemon's rules (:mod:`chronod.preview`); runs and run objects are
:mod:`chronod.ops`'s, the same as ``chronod history`` shows.

JSON shape (keys are stable; instants are ISO 8601 UTC ``...Z`` strings, absent values null):
``{"now", "at", "start", "end", "zone", "jobs"}``; each job is ``{"job", "timezone",
"schedule", "paused", "fires", "more_fires", "skipped_days", "offsets", "runs"}``: ``fires`` are
``{"utc", "local", "at", "note"}`` (``at`` in the chosen zone), ``skipped_days`` ``{"first",
"last", "start", "end", "note"}`` (local dates, and the UTC instants bounding them), ``offsets``
``{"start", "end", "offset_s", "abbreviation"}`` (the chosen zone's UTC offset over the window,
so a page can label instants without a tz database), ``runs`` run objects without ``output``
(:func:`timeline_json`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any, Literal

from chronod.config import Config, JobConfig
from chronod.errors import StoreMissing
from chronod.instants import format_utc
from chronod.ops import run_json
from chronod.preview import Upcoming
from chronod.schedules import Schedule, WindowedSchedule
from chronod.schedules.exclude import ExcludedSchedule
from chronod.schedules.jitter import JitteredSchedule
from chronod.schedules.solar import SolarSchedule
from chronod.store.base import RunRecord, Store
from chronod.tz import Zone, get_zone

# Fires listed per job and window at most: an every-second job has 604,800 in a week, more than
# any page can draw; past the cap the page draws the row as dense instead of mark by mark.
MAX_TIMELINE_FIRES = 500
TimelineZone = Literal["job", "utc"]
_TICK = timedelta(microseconds=1)
_DAY = timedelta(days=1)


@dataclass(frozen=True, kw_only=True)
class SkippedDays:
    """Local dates (job zone, both inclusive) without the solar event, and the instants bounding
    them (local midnight before ``first``, local midnight after ``last``)."""

    first: date
    last: date
    start: datetime
    end: datetime
    note: str | None  # the note of the fire after the gap, which names the reason


@dataclass(frozen=True, kw_only=True)
class OffsetSpan:
    """A stretch of the window during which the zone's UTC offset stays the same."""

    start: datetime
    end: datetime
    offset: timedelta
    abbreviation: str


@dataclass(frozen=True, kw_only=True)
class JobTimeline:
    job: JobConfig
    paused: bool
    fires: tuple[Upcoming, ...]  # after ``at`` up to the window's end, at most MAX_TIMELINE_FIRES
    more_fires: bool  # the window holds fires beyond ``fires``
    skipped: tuple[SkippedDays, ...]
    runs: tuple[RunRecord, ...]  # live and kept runs touching the window, oldest slot first


@dataclass(frozen=True, kw_only=True)
class Timeline:
    now: datetime  # store time
    at: datetime  # the instant upcoming fires are counted from (normally ``now``)
    start: datetime
    end: datetime
    jobs: tuple[JobTimeline, ...]


def timeline(
    store: Store,
    config: Config,
    *,
    now: datetime,
    at: datetime,
    before: timedelta,
    after: timedelta,
) -> Timeline:
    """Every configured job over ``[at - before, at + after]``: upcoming fires after ``at``, solar
    days without the event, and the runs (live or in the kept history) inside the window."""
    start, end = at - before, at + after
    try:
        states, live = store.job_states(), store.live_runs()
        exists = True
    except StoreMissing:  # no daemon has used it yet: the fires, and no runs
        states, live, exists = {}, [], False
    jobs = []
    for job in config.jobs.values():
        fires, more = fires_between(job, at, end)
        kept = store.history(job.name, config.daemon.history) if exists else []
        runs = [*kept, *_of_job(live, job.name)]
        state = states.get(job.name)
        jobs.append(
            JobTimeline(
                job=job,
                paused=state is not None and state.paused,
                fires=fires,
                more_fires=more,
                skipped=skipped_days(job, start, end),
                runs=_runs_between(runs, start, end, now),
            )
        )
    return Timeline(now=now, at=at, start=start, end=end, jobs=tuple(jobs))


def fires_between(
    job: JobConfig, after: datetime, until: datetime, limit: int = MAX_TIMELINE_FIRES
) -> tuple[tuple[Upcoming, ...], bool]:
    """Fires of ``job`` in ``(after, until]``, at most ``limit``; and whether more were left out."""
    zone = job.schedule.zone
    fires: list[Upcoming] = []
    for fire in job.schedule.fires(after):
        if fire.at > until:
            return tuple(fires), False
        if len(fires) == limit:
            return tuple(fires), True
        fires.append(
            Upcoming(job=job.name, at=fire.at, local=zone.to_local(fire.at), note=fire.note)
        )
    return tuple(fires), False


def skipped_days(job: JobConfig, start: datetime, end: datetime) -> tuple[SkippedDays, ...]:
    """Local dates between ``start`` and ``end`` on which a solar job's event does not happen.

    Fire notes name such gaps too, but only on the fire after the gap, which may lie far beyond the
    window (a polar night lasts weeks); a page needs the days themselves. The walk follows the
    *events* (fire minus offset), because an event's local date is what the rule is about. Other
    kinds have no such days: a cron rule that skips a day does so by definition.
    """
    solar = _solar(job.schedule)
    if solar is None:
        return ()
    zone = solar.zone
    expected = zone.wall(start).date()  # first local date not yet known to have its event
    last_day = zone.wall(end).date()
    found: list[SkippedDays] = []
    walk = _local_midnight(zone, expected) + solar.offset - _TICK  # events from that midnight on
    for fire in solar.fires(walk):
        day = zone.wall(fire.at - solar.offset).date()
        if day > expected:
            found.append(_skipped(zone, expected, min(day - _DAY, last_day), fire.note))
        if day >= last_day:
            return tuple(found)
        expected = max(expected, day + _DAY)
    # The schedule ended (no event for a year, e.g. dusk at -30° at a pole): nothing comes back.
    found.append(_skipped(zone, expected, last_day, None))
    return tuple(found)


def offset_spans(zone: Zone, start: datetime, end: datetime) -> tuple[OffsetSpan, ...]:
    """``zone``'s UTC offsets over ``[start, end]``, one span per offset change."""
    spans: list[OffsetSpan] = []
    cursor = start
    while True:
        change = zone.next_transition(cursor)
        stop = end if change is None or change >= end else change
        spans.append(
            OffsetSpan(
                start=cursor,
                end=stop,
                offset=zone.offset_at(cursor),
                abbreviation=zone.abbreviation(cursor),
            )
        )
        if stop == end:
            return tuple(spans)
        cursor = stop


def _solar(schedule: Schedule) -> SolarSchedule | None:
    while isinstance(schedule, WindowedSchedule | ExcludedSchedule | JitteredSchedule):
        schedule = schedule.inner
    return schedule if isinstance(schedule, SolarSchedule) else None


def _local_midnight(zone: Zone, day: date) -> datetime:
    resolution = zone.resolve(datetime.combine(day, time()))
    if resolution.instants:
        return resolution.instants[0]
    assert resolution.gap_end is not None  # midnight inside a DST gap: the day starts after it
    return resolution.gap_end


def _skipped(zone: Zone, first: date, last: date, note: str | None) -> SkippedDays:
    return SkippedDays(
        first=first,
        last=last,
        start=_local_midnight(zone, first),
        end=_local_midnight(zone, last + _DAY),
        note=note,
    )


def _of_job(runs: Iterable[RunRecord], job: str) -> list[RunRecord]:
    return [run for run in runs if run.job == job]


def _runs_between(
    runs: Iterable[RunRecord], start: datetime, end: datetime, now: datetime
) -> tuple[RunRecord, ...]:
    """Runs whose slot or execution (a running one: up to ``now``) touches ``[start, end]``."""
    inside = []
    for run in runs:
        first = min(run.slot, run.started_at or run.slot)
        last = max(run.slot, run.finished_at or (now if run.started_at else run.slot))
        if first <= end and last >= start:
            inside.append(run)
    return tuple(sorted(inside, key=lambda r: (r.slot, r.started_at or r.slot, r.attempt)))


def timeline_json(line: Timeline, zone: TimelineZone = "job") -> dict[str, Any]:
    """``zone`` chooses the zone of each fire's ``at`` and of ``offsets``: the job's, or UTC."""
    return {
        "now": format_utc(line.now),
        "at": format_utc(line.at),
        "start": format_utc(line.start),
        "end": format_utc(line.end),
        "zone": zone,
        "jobs": [_job_timeline_json(job, line, zone) for job in line.jobs],
    }


def _job_timeline_json(job: JobTimeline, line: Timeline, zone: TimelineZone) -> dict[str, Any]:
    config = job.job
    shown = config.schedule.zone if zone == "job" else get_zone("UTC")
    return {
        "job": config.name,
        "timezone": config.timezone,
        "schedule": config.schedule.describe(),
        "paused": job.paused,
        "fires": [
            {
                "utc": format_utc(f.at),
                "local": f.local.isoformat(),
                "at": f.local.isoformat() if zone == "job" else format_utc(f.at),
                "note": f.note,
            }
            for f in job.fires
        ],
        "more_fires": job.more_fires,
        "skipped_days": [
            {
                "first": d.first.isoformat(),
                "last": d.last.isoformat(),
                "start": format_utc(d.start),
                "end": format_utc(d.end),
                "note": d.note,
            }
            for d in job.skipped
        ],
        "offsets": [
            {
                "start": format_utc(o.start),
                "end": format_utc(o.end),
                "offset_s": int(o.offset.total_seconds()),
                "abbreviation": o.abbreviation,
            }
            for o in offset_spans(shown, line.start, line.end)
        ],
        "runs": [_timeline_run_json(run) for run in job.runs],
    }


def _timeline_run_json(run: RunRecord) -> dict[str, Any]:
    # The output tail (up to 64 KiB per run) stays on the job page: the timeline is polled.
    data = run_json(run)
    del data["output"]
    return data
