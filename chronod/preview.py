"""What ``chronod next`` shows: upcoming fires with the daemon's exact rules, for humans and JSON.

Pure functions of (jobs, instant); the CLI and the web page format the same :class:`Upcoming` rows.
Text comes back as lines; printing them is the caller's.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from itertools import islice
from typing import Any

from chronod.config import JobConfig
from chronod.durations import format_duration
from chronod.instants import format_utc
from chronod.schedules.after import AfterSchedule


@dataclass(frozen=True, kw_only=True)
class Upcoming:
    job: str
    at: datetime  # UTC
    local: datetime  # same instant in the job's zone (fixed-offset tzinfo named by abbreviation)
    note: str | None


def upcoming(job: JobConfig, after: datetime, count: int) -> list[Upcoming]:
    """The next ``count`` fires of ``job`` strictly after ``after`` (fewer if the schedule ends)."""
    zone = job.schedule.zone
    return [
        Upcoming(job=job.name, at=fire.at, local=zone.to_local(fire.at), note=fire.note)
        for fire in islice(job.schedule.fires(after), count)
    ]


def as_json(rows: Iterable[Upcoming]) -> list[dict[str, Any]]:
    return [
        {"job": r.job, "at": r.local.isoformat(), "utc": format_utc(r.at), "note": r.note}
        for r in rows
    ]


def local_text(row: Upcoming) -> str:
    """``Fri 2026-11-27 17:30 +03`` (seconds only when not zero)."""
    fmt = (
        "%a %Y-%m-%d %H:%M:%S" if row.local.second or row.local.microsecond else "%a %Y-%m-%d %H:%M"
    )
    return f"{row.local.strftime(fmt)} {row.local.tzname()}"


def relative_text(row: Upcoming, now: datetime) -> str:
    delta = row.at - now
    if delta.total_seconds() < 0:
        return f"{format_duration(-delta)} ago"
    return f"in {format_duration(delta)}"


def table(rows: list[list[str]]) -> list[str]:
    """Left-aligned columns separated by two spaces; the last column is not padded."""
    if not rows:
        return []
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    return [
        "  ".join([*(c.ljust(w) for c, w in zip(r, widths, strict=False)), r[-1]]).rstrip()
        for r in rows
    ]


def job_lines(job: JobConfig, start: datetime, fires: list[Upcoming]) -> list[str]:
    """``chronod next --job NAME``: the schedule in words, then one line per fire (relative to
    ``start``), each followed by its note."""
    lines = [f"{job.name}: {job.schedule.describe()} ({job.timezone})"]
    if not fires:
        lines.append(f"  {_no_fires(job)}")
    rows = table([[local_text(u), format_utc(u.at), relative_text(u, start)] for u in fires])
    for line, fire in zip(rows, fires, strict=True):
        lines.append(f"  {line}")
        if fire.note:
            lines.append(f"      note: {fire.note}")
    return lines


def overview_lines(jobs: Iterable[tuple[JobConfig, datetime, list[Upcoming]]]) -> list[str]:
    """``chronod next``: one table of every job's fires (relative to its start), then the notes."""
    grid = [["JOB", "NEXT (local)", "UTC", "", "SCHEDULE"]]
    notes: list[str] = []
    for job, start, fires in jobs:
        for fire in fires:
            grid.append(
                [
                    job.name,
                    local_text(fire),
                    format_utc(fire.at),
                    relative_text(fire, start),
                    job.schedule.describe(),
                ]
            )
            if fire.note:
                notes.append(f"note: {job.name}: {fire.note}")
        if not fires:
            grid.append([job.name, "-", "-", _no_fires(job, brief=True), job.schedule.describe()])
    return [*table(grid), *notes]


def _no_fires(job: JobConfig, *, brief: bool = False) -> str:
    """What a job without upcoming fires does: nothing more, or follow other jobs."""
    schedule = job.schedule
    if not isinstance(schedule, AfterSchedule):
        return "no upcoming fires"
    names = ", ".join(schedule.upstreams)
    if brief:
        return f"follows {names}"
    return (
        f"follows {names}: runs once after each {schedule.when} run "
        f"(CHRONOD_UPSTREAM_RUN_ID names it), no schedule of its own"
    )
