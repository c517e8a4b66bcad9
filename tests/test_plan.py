"""plan_slots: grace and catch-up as pure functions of (job, watermark, now)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from chronod.config import JobConfig
from chronod.dispatch import COUNT_CAP, MISSED_ENTRIES, guard_ttl, plan_slots
from chronod.schedules import IntervalSchedule
from chronod.tz import UTC, get_zone

T0 = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)


def job(every: timedelta = MINUTE, **overrides: Any) -> JobConfig:
    return JobConfig(
        name="j",
        schedule=IntervalSchedule(every, get_zone("UTC")),
        timezone="UTC",
        command="true",
        **overrides,
    )


def test_on_time_slot_is_dispatched() -> None:
    plan = plan_slots(job(), T0 - MINUTE, T0)
    assert plan.run == (T0,)
    assert plan.missed == ()
    assert plan.missed_count == 0
    assert plan.next_due == T0 + MINUTE


def test_late_within_grace_is_dispatched_oldest_first() -> None:
    # Down for 2.5 minutes with a 3-minute grace: every slot still runs, oldest first.
    now = T0 + timedelta(seconds=150)
    plan = plan_slots(job(grace=timedelta(minutes=3)), T0 - MINUTE, now)
    assert plan.run == (T0, T0 + MINUTE, T0 + 2 * MINUTE)
    assert plan.missed_count == 0


def test_slot_late_by_exactly_grace_still_runs() -> None:
    plan = plan_slots(job(grace=timedelta(seconds=60)), T0 - MINUTE, T0 + timedelta(seconds=60))
    assert plan.run == (T0, T0 + MINUTE)


def test_catchup_none_records_missed() -> None:
    now = T0 + timedelta(minutes=10, seconds=30)
    plan = plan_slots(job(), T0 - MINUTE, now)
    # T0 .. T0+9m are older than the 60 s grace; T0+10m is 30 s late and runs.
    assert plan.run == (T0 + 10 * MINUTE,)
    assert plan.missed_count == 10
    assert plan.missed == tuple(T0 + i * MINUTE for i in range(10))


def test_catchup_latest_runs_the_newest_missed_once() -> None:
    now = T0 + timedelta(minutes=10, seconds=30)
    plan = plan_slots(job(catchup="latest"), T0 - MINUTE, now)
    assert plan.run == (T0 + 9 * MINUTE, T0 + 10 * MINUTE)
    assert plan.missed_count == 9
    assert plan.missed[-1] == T0 + 8 * MINUTE


def test_catchup_all_respects_the_limit() -> None:
    now = T0 + timedelta(minutes=10, seconds=30)
    plan = plan_slots(job(catchup="all", catchup_limit=4), T0 - MINUTE, now)
    assert plan.run == tuple(T0 + i * MINUTE for i in range(6, 11))
    assert plan.missed_count == 6


def test_new_job_without_watermark_runs_nothing_past() -> None:
    plan = plan_slots(job(), None, T0 + timedelta(seconds=30))
    assert plan.run == ()
    assert plan.missed_count == 0


def test_long_outage_is_summarised_not_enumerated() -> None:
    # A one-second job down for ~3 years: the count is capped, history entries are bounded.
    plan = plan_slots(job(every=timedelta(seconds=1)), T0 - timedelta(days=1000), T0)
    assert plan.missed_count == COUNT_CAP
    assert len(plan.missed) == MISSED_ENTRIES
    assert plan.missed[-1] == T0 - timedelta(seconds=61)


@given(
    minutes_down=st.integers(0, 300),
    seconds=st.integers(0, 59),
    grace_s=st.integers(0, 600),
    catchup=st.sampled_from(["none", "latest", "all"]),
    limit=st.integers(1, 50),
)
def test_every_slot_is_decided_exactly_once(
    minutes_down: int, seconds: int, grace_s: int, catchup: str, limit: int
) -> None:
    """run ∪ missed covers (watermark, now] exactly, with no overlap, when the outage is short."""
    watermark = T0
    now = T0 + timedelta(minutes=minutes_down, seconds=seconds)
    plan = plan_slots(
        job(grace=timedelta(seconds=grace_s), catchup=catchup, catchup_limit=limit), watermark, now
    )
    all_slots = [T0 + i * MINUTE for i in range(1, minutes_down + 1)]
    assert plan.missed_count + len(plan.run) == len(all_slots)
    assert list(plan.run) == sorted(plan.run)
    assert set(plan.run) <= set(all_slots)
    assert set(plan.missed).isdisjoint(plan.run)
    cutoff = now - timedelta(seconds=grace_s)
    assert {s for s in all_slots if s >= cutoff} <= set(plan.run)
    late_runs = [s for s in plan.run if s < cutoff]
    expected_late = {"none": 0, "latest": 1, "all": limit}[catchup]
    assert len(late_runs) == min(expected_late, len([s for s in all_slots if s < cutoff]))


def test_guard_ttl_is_at_least_a_day_and_two_periods() -> None:
    assert guard_ttl(job(), T0, T0 + MINUTE) == timedelta(hours=24)
    assert guard_ttl(job(), T0, T0 + timedelta(days=7)) == timedelta(days=14)
    assert guard_ttl(job(), T0, None) == timedelta(hours=24)


def test_slots_missed_over_millennia_are_counted_without_overflowing() -> None:
    """The look back from ``now`` grows its window 4x a step: past the years before ``now`` it
    must stop at the watermark rather than reach below year 1 (a window opening millennia ahead
    of its last slot was enough: the config fuzz test found it)."""
    millennium = timedelta(days=365_000)
    anchor = datetime(1970, 1, 1, tzinfo=UTC)
    plan = plan_slots(
        JobConfig(
            name="j",
            schedule=IntervalSchedule(millennium, get_zone("UTC"), anchor),
            timezone="UTC",
            command="true",
        ),
        datetime(2, 1, 1, tzinfo=UTC),
        anchor + millennium - MINUTE,
    )
    assert plan.run == ()
    assert plan.missed == (anchor - millennium, anchor)
    assert plan.missed_count == 2
    assert plan.next_due == anchor + millennium
