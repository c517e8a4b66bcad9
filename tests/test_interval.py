from __future__ import annotations

from datetime import datetime, timedelta
from itertools import islice, pairwise

from hypothesis import given, settings
from hypothesis import strategies as st

from chronod.schedules import IntervalSchedule, WindowedSchedule
from chronod.tz import UTC, get_zone

NY = get_zone("America/New_York")
instants = st.datetimes(datetime(1971, 1, 1), datetime(2100, 1, 1)).map(
    lambda d: d.replace(tzinfo=UTC)
)
periods = st.integers(1, 10 * 86400).map(lambda s: timedelta(seconds=s))


@settings(max_examples=500, deadline=None)
@given(every=periods, restart=instants)
def test_phase_survives_any_restart_instant(every: timedelta, restart: datetime) -> None:
    """Wherever a daemon (re)starts, the next slot is on the epoch grid and the first after it."""
    fire = IntervalSchedule(every, NY).next_after(restart)
    assert fire is not None
    assert restart < fire <= restart + every
    assert (fire - datetime(1970, 1, 1, tzinfo=UTC)) % every == timedelta()


@settings(max_examples=300, deadline=None)
@given(every=periods, anchor=instants, after=instants)
def test_anchor_is_respected(every: timedelta, anchor: datetime, after: datetime) -> None:
    fire = IntervalSchedule(every, NY, anchor).next_after(after)
    assert fire is not None
    assert after < fire <= after + every
    assert (fire - anchor) % every == timedelta()


def test_aligned_to_clock_boundaries() -> None:
    schedule = IntervalSchedule(timedelta(minutes=15), NY)
    assert schedule.next_after(datetime(2026, 11, 21, 10, 7, 3, tzinfo=UTC)) == datetime(
        2026, 11, 21, 10, 15, tzinfo=UTC
    )
    # strictly after: a slot instant itself is not "next"
    assert schedule.next_after(datetime(2026, 11, 21, 10, 15, tzinfo=UTC)) == datetime(
        2026, 11, 21, 10, 30, tzinfo=UTC
    )


def test_dst_does_not_move_elapsed_time() -> None:
    """Across New York's fall-back night, an hourly interval fires every 60 real minutes."""
    schedule = IntervalSchedule(timedelta(hours=1), NY)
    fires = [f.at for f in islice(schedule.fires(datetime(2026, 11, 1, 3, 30, tzinfo=UTC)), 6)]
    assert all(b - a == timedelta(hours=1) for a, b in pairwise(fires))
    walls = [NY.wall(f).hour for f in fires]
    assert walls == [0, 1, 1, 2, 3, 4]  # 01:00 shows up twice on the wall, as it really happens


def test_window_bounds_inclusive() -> None:
    start = datetime(2026, 1, 1, 0, 10, tzinfo=UTC)
    end = datetime(2026, 1, 1, 0, 30, tzinfo=UTC)
    schedule = WindowedSchedule(IntervalSchedule(timedelta(minutes=10), NY), start, end)
    fires = [f.at for f in schedule.fires(datetime(2025, 12, 31, tzinfo=UTC))]
    assert fires == [start, start + timedelta(minutes=10), end]


def test_fingerprint_depends_on_schedule_only() -> None:
    a = IntervalSchedule(timedelta(minutes=5), NY)
    assert (
        a.fingerprint
        == IntervalSchedule(timedelta(minutes=5), get_zone("America/New_York")).fingerprint
    )
    assert a.fingerprint != IntervalSchedule(timedelta(minutes=6), NY).fingerprint
    assert a.fingerprint != IntervalSchedule(timedelta(minutes=5), get_zone("UTC")).fingerprint
    moved = IntervalSchedule(timedelta(minutes=5), NY, datetime(2026, 1, 1, 0, 1, tzinfo=UTC))
    assert a.fingerprint != moved.fingerprint
    assert a.describe() == "every 5m"
