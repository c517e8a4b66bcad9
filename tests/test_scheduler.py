"""The leader's Scheduler on a real SQLite store with a manual clock: store failures in the middle
of a tick, and plans prepared ahead of the due instant (``Scheduler.prepare``)."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chronod.clock import ManualClock
from chronod.config import JobConfig
from chronod.dispatch import LOG_EACH, DueHeap, Scheduler, TickReport, _Prepared, plan_slots
from chronod.errors import StoreUnavailable
from chronod.instants import format_utc
from chronod.logs import fields_of
from chronod.schedules import IntervalSchedule
from chronod.store.base import (
    DispatchResult,
    DispatchStatus,
    JobState,
    Lease,
    MissedSlots,
    Overlap,
    SlotDispatch,
    overlap_reason,
    superseded_reason,
)
from chronod.store.sqlite import SQLiteStore
from chronod.tz import UTC, get_zone

T0 = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
SECOND = timedelta(seconds=1)
MINUTE = timedelta(minutes=1)


def job(name: str, every: timedelta = MINUTE, **overrides: Any) -> JobConfig:
    return JobConfig(
        name=name,
        schedule=IntervalSchedule(every, get_zone("UTC")),
        timezone="UTC",
        command="true",
        overlap="allow",
        **overrides,
    )


class FlakyStore(SQLiteStore):
    """A SQLite store whose next ``dispatch`` / ``advance`` calls fail, as a store blip would."""

    fail_dispatch = 0
    fail_advance = 0

    def dispatch(self, lease: Lease, items: Sequence[SlotDispatch]) -> list[DispatchResult]:
        if self.fail_dispatch:
            self.fail_dispatch -= 1
            raise StoreUnavailable("blip")
        return super().dispatch(lease, items)

    def advance(
        self,
        lease: Lease,
        job: str,
        fingerprint: str,
        missed: Sequence[datetime],
        missed_count: int,
        next_due: datetime | None,
    ) -> JobState:
        if self.fail_advance:
            self.fail_advance -= 1
            raise StoreUnavailable("blip")
        return super().advance(lease, job, fingerprint, missed, missed_count, next_due)

    def advance_many(self, lease: Lease, items: Sequence[MissedSlots]) -> list[JobState]:
        if self.fail_advance:  # the scheduler records missed slots in batches
            self.fail_advance -= 1
            raise StoreUnavailable("blip")
        return super().advance_many(lease, items)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(T0 + timedelta(seconds=30))


@pytest.fixture
def store(tmp_path: Path, clock: ManualClock) -> Iterator[FlakyStore]:
    opened = FlakyStore(tmp_path / "state.db", clock=clock)
    yield opened
    opened.close()


def lead(store: FlakyStore) -> Lease:
    lease = store.acquire_lease("node", "token", timedelta(days=1))
    assert lease is not None
    return lease


def queued(store: FlakyStore, name: str) -> list[datetime]:
    return [run.slot for run in store.live_runs(name)]


def test_a_failed_dispatch_is_retried_at_once_not_at_the_next_slot(
    store: FlakyStore, clock: ManualClock
) -> None:
    lease = lead(store)
    scheduler = Scheduler(store)
    scheduler.load(lease, {"hourly": job("hourly", every=timedelta(hours=1))})
    due = scheduler.next_wake()
    assert due == T0 + timedelta(minutes=60)
    clock.set(due)
    store.fail_dispatch = 1
    with pytest.raises(StoreUnavailable):
        scheduler.tick(lease, store.now())
    # Still due now (not in an hour): the daemon's retry after its backoff dispatches it.
    assert scheduler.next_wake() == due
    clock.advance(2)
    report = scheduler.tick(lease, store.now())
    assert [r.status for _, r in report.dispatched] == [DispatchStatus.QUEUED]
    assert queued(store, "hourly") == [due]
    assert scheduler.next_wake() == due + timedelta(hours=1)


def test_a_failure_while_recording_missed_slots_loses_no_job(
    store: FlakyStore, clock: ManualClock
) -> None:
    lease = lead(store)
    jobs = {name: job(name) for name in ("a", "b", "c")}
    scheduler = Scheduler(store)
    scheduler.load(lease, jobs)
    # Down for five minutes: every job has missed slots to record before it dispatches.
    clock.set(T0 + 5 * MINUTE + timedelta(seconds=10))
    store.fail_advance = 1
    with pytest.raises(StoreUnavailable):
        scheduler.tick(lease, store.now())
    assert scheduler.due_count() == 3  # nobody fell out of the heap
    assert scheduler.next_wake() == T0 + MINUTE
    report = scheduler.tick(lease, store.now())
    assert sorted(item.job for item, _ in report.dispatched) == ["a", "b", "c"]
    for name in jobs:
        assert queued(store, name) == [T0 + 5 * MINUTE]
        assert store.job_states()[name].missed == 4


def test_prepared_plans_dispatch_exactly_what_planning_at_the_tick_would(
    tmp_path: Path, store: FlakyStore, clock: ManualClock
) -> None:
    jobs = {f"j{i}": job(f"j{i}", every=SECOND * (1 + i % 3)) for i in range(9)}
    other = FlakyStore(tmp_path / "other.db", clock=clock)  # the same jobs, never prepared
    prepared, fresh = Scheduler(store), Scheduler(other)
    leases = lead(store), lead(other)
    prepared.load(leases[0], jobs)
    fresh.load(leases[1], jobs)
    for step in range(20):
        wake = prepared.next_wake()
        assert wake is not None
        assert wake == fresh.next_wake()
        assert prepared.prepare(wake) > 0
        clock.set(wake + timedelta(milliseconds=3 * step))  # the tick comes a little late
        ours = prepared.tick(leases[0], store.now())
        theirs = fresh.tick(leases[1], other.now())
        assert [item for item, _ in ours.dispatched] == [item for item, _ in theirs.dispatched]
        assert all(r.status is DispatchStatus.QUEUED for _, r in ours.dispatched)
    assert prepared.prepared_until is not None
    other.close()


@given(
    every_s=st.integers(1, 600),
    grace_s=st.integers(0, 900),
    catchup=st.sampled_from(["none", "latest", "all"]),
    watermark_back_s=st.integers(0, 3600),
    prepared_back_ms=st.integers(0, 5000),
    late_ms=st.integers(0, 5000),
)
def test_a_prepared_plan_is_used_only_when_it_equals_planning_at_the_tick(
    every_s: int,
    grace_s: int,
    catchup: str,
    watermark_back_s: int,
    prepared_back_ms: int,
    late_ms: int,
) -> None:
    spec = job(
        "j",
        every=timedelta(seconds=every_s),
        grace=timedelta(seconds=grace_s),
        catchup=catchup,
        catchup_limit=3,
    )
    watermark = T0 - timedelta(seconds=watermark_back_s)
    at = T0 - timedelta(milliseconds=prepared_back_ms)
    now = T0 + timedelta(milliseconds=late_ms)
    plan = plan_slots(spec, watermark, at)
    ahead = _Prepared(at, watermark, plan, [])
    if ahead.valid_at(spec, watermark, now):
        assert plan_slots(spec, watermark, now) == plan
    # Planned at the due instant and used within grace, an on-time slot's plan is always reused.
    due = spec.schedule.next_after(watermark)
    assert due is not None
    on_time = _Prepared(due, watermark, plan_slots(spec, watermark, due), [])
    following = spec.schedule.next_after(due)
    if due <= now <= due + spec.grace and (following is None or following > now):
        assert on_time.valid_at(spec, watermark, now) == (on_time.plan.missed_count == 0)
    # Never reused for a different watermark, or before the instant it was planned for.
    assert not ahead.valid_at(spec, watermark - SECOND, now)
    assert not ahead.valid_at(spec, watermark, at - timedelta(microseconds=1))


# -- logging: a line per slot for small ticks, a summary for large ones ------------------------


class Records(logging.Handler):
    """Records of the scheduler's logger (attached to it directly: the chronod logger may not
    propagate to the root logger that caplog listens on)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def at(self, level: int) -> list[logging.LogRecord]:
        return [r for r in self.records if r.levelno == level]


@pytest.fixture
def records() -> Iterator[Records]:
    logger = logging.getLogger("chronod.scheduler")
    handler, level = Records(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(level)


def run_tick(store: FlakyStore, clock: ManualClock, count: int, down: timedelta) -> TickReport:
    lease = lead(store)
    scheduler = Scheduler(store)
    scheduler.load(lease, {f"j{i:03d}": job(f"j{i:03d}") for i in range(count)})
    clock.set(T0 + MINUTE + down)
    return scheduler.tick(lease, store.now())


def test_a_small_tick_logs_each_slot_with_its_fields(
    store: FlakyStore, clock: ManualClock, records: Records
) -> None:
    report = run_tick(store, clock, LOG_EACH, timedelta(seconds=1))
    assert len(report.dispatched) == LOG_EACH
    lines = records.at(logging.INFO)
    assert len(lines) == LOG_EACH
    item, result = report.dispatched[0]
    assert lines[0].getMessage() == f"dispatched {result.run_id} (queued)"
    assert fields_of(lines[0]) == {
        "job": item.job,
        "run_id": result.run_id,
        "slot": format_utc(item.slot),
        "epoch": 1,
    }
    assert records.at(logging.DEBUG) == []


def test_a_large_tick_logs_one_summary_and_each_slot_at_debug(
    store: FlakyStore, clock: ManualClock, records: Records
) -> None:
    report = run_tick(store, clock, LOG_EACH + 1, timedelta(seconds=1))
    [summary] = records.at(logging.INFO)
    assert (
        summary.getMessage()
        == f"dispatched {LOG_EACH + 1} slot(s) of {LOG_EACH + 1} decided in one tick"
    )
    assert fields_of(summary) == {"epoch": 1, "lateness_max_ms": 1000.0, "queued": LOG_EACH + 1}
    assert [r.getMessage() for r in records.at(logging.DEBUG)] == [
        f"dispatched {result.run_id} (queued)" for _, result in report.dispatched
    ]


def test_missed_slots_are_summarised_past_the_threshold(
    store: FlakyStore, clock: ManualClock, records: Records
) -> None:
    # Down five minutes with the default grace (60 s) and catchup "none": every job misses four.
    run_tick(store, clock, LOG_EACH + 1, timedelta(minutes=4, seconds=10))
    [summary] = records.at(logging.WARNING)
    assert summary.getMessage() == (
        f"{4 * (LOG_EACH + 1)} slot(s) of {LOG_EACH + 1} jobs missed (each job's catchup applied)"
    )
    per_job = [r.getMessage() for r in records.at(logging.DEBUG) if "missed" in r.getMessage()]
    assert per_job[0] == "job j000: 4 slot(s) missed (catchup=none), newest 2026-11-21T12:04:00Z"
    assert len(per_job) == LOG_EACH + 1


def test_missed_slots_of_few_jobs_are_logged_per_job(
    store: FlakyStore, clock: ManualClock, records: Records
) -> None:
    run_tick(store, clock, 2, timedelta(minutes=4, seconds=10))
    assert [r.getMessage() for r in records.at(logging.WARNING)] == [
        f"job j00{i}: 4 slot(s) missed (catchup=none), newest 2026-11-21T12:04:00Z"
        for i in range(2)
    ]


# -- slots that come due together (after an outage) ----------------------------------------------


def skipping(name: str, **overrides: Any) -> JobConfig:
    return replace(job(name, grace=10 * MINUTE, **overrides), overlap="skip")


def test_slots_due_together_with_overlap_skip_run_once_the_newest(
    store: FlakyStore, clock: ManualClock
) -> None:
    """Five slots within grace after an outage: the newest runs, the older four are recorded
    skipped as superseded by it (not "previous run still queued" behind the oldest)."""
    lease = lead(store)
    scheduler = Scheduler(store)
    scheduler.load(lease, {"m": skipping("m")})
    clock.set(T0 + 5 * MINUTE + 10 * SECOND)
    report = scheduler.tick(lease, store.now())
    slots = [T0 + n * MINUTE for n in range(1, 6)]
    assert [(item.slot, r.status) for item, r in report.dispatched] == [
        *((at, DispatchStatus.SKIPPED) for at in slots[:-1]),
        (slots[-1], DispatchStatus.QUEUED),
    ]
    assert queued(store, "m") == [slots[-1]]
    newest = f"m@{format_utc(slots[-1])}"
    history = list(reversed(store.history("m", 10)))
    assert [(e.slot, e.error) for e in history] == [
        (at, superseded_reason(newest)) for at in slots[:-1]
    ]
    assert scheduler.next_wake() == T0 + 6 * MINUTE


def test_slots_due_together_behind_a_run_still_active_say_so(
    store: FlakyStore, clock: ManualClock
) -> None:
    lease = lead(store)
    scheduler = Scheduler(store)
    scheduler.load(lease, {"m": skipping("m")})
    clock.set(T0 + MINUTE)
    scheduler.tick(lease, store.now())  # m@T0+1m queued, never claimed
    clock.set(T0 + 4 * MINUTE)
    report = scheduler.tick(lease, store.now())
    assert {r.status for _, r in report.dispatched} == {DispatchStatus.SKIPPED}
    reasons = [e.error for e in reversed(store.history("m", 10))]
    newest = f"m@{format_utc(T0 + 4 * MINUTE)}"
    active = f"m@{format_utc(T0 + MINUTE)}"
    assert reasons == [
        superseded_reason(newest),
        superseded_reason(newest),
        overlap_reason(active, "queued"),
    ]


@pytest.mark.parametrize("overlap", ["queue", "allow"])
def test_slots_due_together_with_queue_or_allow_each_run(
    store: FlakyStore, clock: ManualClock, overlap: Overlap
) -> None:
    lease = lead(store)
    scheduler = Scheduler(store)
    scheduler.load(lease, {"m": replace(job("m", grace=10 * MINUTE), overlap=overlap)})
    clock.set(T0 + 3 * MINUTE)
    report = scheduler.tick(lease, store.now())
    assert DispatchStatus.SKIPPED not in {r.status for _, r in report.dispatched}
    assert [run.slot for run in store.live_runs("m")] == [T0 + n * MINUTE for n in (1, 2, 3)]
    assert store.history("m", 10) == []


# -- the due heap ---------------------------------------------------------------------------------


@given(
    st.lists(
        st.tuples(st.sampled_from("abcde"), st.none() | st.integers(0, 20)), min_size=1, max_size=40
    ),
    st.integers(0, 20),
)
def test_the_due_heap_holds_each_job_once_at_its_latest_instant(
    pushes: list[tuple[str, int | None]], now_s: int
) -> None:
    """Rescheduling leaves superseded entries in the heap; none of them is ever seen."""
    heap = DueHeap(crowd=2)
    latest: dict[str, datetime] = {}
    for name, offset in pushes:
        at = None if offset is None else T0 + timedelta(seconds=offset)
        heap.push(name, at)
        if at is None:
            latest.pop(name, None)
        else:
            latest[name] = at
    now = T0 + timedelta(seconds=now_s)
    due = {name: at for name, at in latest.items() if at <= now}
    assert len(heap) == len(latest)
    counts = Counter(latest.values())
    for instant in {*counts, T0}:
        assert heap.count_at(instant) == counts[instant]
    crowded = sorted(at for at, n in counts.items() if n >= 2)
    assert heap.crowded(None, now) == next((at for at in crowded if at <= now), None)
    assert heap.crowded(now, now + MINUTE) == next((at for at in crowded if at > now), None)
    assert heap.head() == min(latest.values(), default=None)
    assert sorted(heap.due_by(now)) == sorted(due.items())
    popped = list(heap.pop_due(now))
    assert popped == sorted(due.items(), key=lambda item: (item[1], item[0]))
    assert {name: heap.due_at(name) for name in latest} == {
        name: None if name in due else at for name, at in latest.items()
    }
    # Popped entries no longer count.
    left = Counter(at for at in latest.values() if at > now)
    assert all(heap.count_at(at) == left[at] for at in counts)
