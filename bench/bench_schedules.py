"""Next-slot computations per second for each schedule kind, on one core, and the cost of computing
the next slot of 100,000 mixed jobs. Compares the cron kind with croniter's own ``get_next``.

    .venv/bin/python bench/bench_schedules.py [--seconds 1.0] [--jobs 100000]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from datetime import datetime, timedelta

from croniter import croniter

from chronod.durations import format_duration
from chronod.schedules import IntervalSchedule, Schedule
from chronod.schedules.cron import CronSchedule
from chronod.schedules.solar import SolarSchedule
from chronod.tz import UTC, get_zone

START = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
CRON_EXPRESSIONS = ("30 17 * * 5", "*/5 * * * *", "0 9 * * L0", "30 2 * * *", "0 0 1 * *")


def rate(step: Callable[[], object], seconds: float) -> float:
    """Calls per second of ``step`` over about ``seconds``."""
    calls = 0
    began = time.perf_counter()
    deadline = began + seconds
    while True:
        for _ in range(100):
            step()
        calls += 100
        now = time.perf_counter()
        if now >= deadline:
            return calls / (now - began)


def walker(schedule: Schedule) -> Callable[[], object]:
    """Repeatedly ask for the next fire after the previous one (how the daemon walks a schedule)."""
    state = [START]

    def step() -> object:
        nxt = schedule.next_after(state[0])
        state[0] = nxt if nxt is not None else START
        return nxt

    return step


def croniter_walker(expression: str) -> Callable[[], object]:
    import pytz

    it = croniter(expression, START.astimezone(pytz.timezone("America/New_York")))
    return lambda: it.get_next(datetime)


def mixed_jobs(count: int) -> list[Schedule]:
    ny, berlin, tokyo = (
        get_zone("America/New_York"),
        get_zone("Europe/Berlin"),
        get_zone("Asia/Tokyo"),
    )
    jobs: list[Schedule] = []
    for i in range(count):
        kind = i % 3
        if kind == 0:
            jobs.append(CronSchedule(f"{i % 60} {i % 24} * * *", (ny, berlin, tokyo)[i % 3]))
        elif kind == 1:
            jobs.append(IntervalSchedule(timedelta(seconds=30 + i % 3600), berlin))
        else:
            jobs.append(
                SolarSchedule(
                    event=("sunrise", "sunset", "dusk")[i % 3],
                    latitude=-60 + (i % 120),
                    longitude=-180 + (i % 360),
                    zone=tokyo,
                    offset=timedelta(minutes=i % 30),
                )
            )
    return jobs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.0, help="measuring time per figure")
    parser.add_argument("--jobs", type=int, default=100_000, help="jobs in the mixed-load figure")
    args = parser.parse_args()
    ny = get_zone("America/New_York")

    print(f"{'schedule':44} {'chronod next/s':>15} {'croniter get_next/s':>20}")
    for expression in CRON_EXPRESSIONS:
        ours = rate(walker(CronSchedule(expression, ny)), args.seconds)
        theirs = rate(croniter_walker(expression), args.seconds)
        print(f"{'cron ' + repr(expression) + ' New York':44} {ours:15,.0f} {theirs:20,.0f}")
    interval = IntervalSchedule(timedelta(minutes=15), ny)
    print(f"{'interval every 15m':44} {rate(walker(interval), args.seconds):15,.0f}")
    for event, offset in (
        ("sunset", timedelta(minutes=-30)),
        ("sunrise", timedelta()),
        ("dawn", timedelta()),
        ("noon", timedelta()),
    ):
        solar = SolarSchedule(
            event=event,
            latitude=52.52,
            longitude=13.405,
            zone=get_zone("Europe/Berlin"),
            offset=offset,
        )
        label = f"solar {event} Berlin" + (f" offset {format_duration(offset)}" if offset else "")
        print(f"{label:44} {rate(walker(solar), args.seconds):15,.0f}")

    built = time.perf_counter()
    jobs = mixed_jobs(args.jobs)
    built = time.perf_counter() - built
    began = time.perf_counter()
    for schedule in jobs:
        schedule.next_after(START)
    elapsed = time.perf_counter() - began
    print(
        f"\n{args.jobs:,} mixed jobs (1/3 cron, 1/3 interval, 1/3 solar): "
        f"build {built:.2f} s, next slot of every job {elapsed:.2f} s "
        f"({args.jobs / elapsed:,.0f} jobs/s)"
    )


if __name__ == "__main__":
    main()
