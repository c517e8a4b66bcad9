"""``at = [...]``: one-off instants against a brute-force reference, as slots, and in the config."""

from __future__ import annotations

import textwrap
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chronod.config import JobConfig, load_config
from chronod.config.dates import at_schedule
from chronod.errors import ConfigError
from chronod.plan import plan_slots
from chronod.preview import upcoming
from chronod.schedules.at import AtSchedule
from chronod.tz import UTC, Zone, get_zone

ZONES = [get_zone(n) for n in ("America/New_York", "Europe/Berlin", "Australia/Lord_Howe", "UTC")]
STEP = timedelta(minutes=15)  # every offset change of these zones lies on a quarter hour


def reference_instant(wall: datetime, zone: Zone) -> datetime:
    """When the naive ``wall`` happens in ``zone``, found by walking real time in quarter hours:
    its first occurrence, or (in a gap) the first instant whose wall time is later."""
    candidate = (wall - timedelta(hours=15)).replace(tzinfo=UTC)
    while True:
        shown = zone.wall(candidate)
        if shown >= wall:
            return candidate
        candidate += STEP


walls = st.datetimes(datetime(2026, 1, 1), datetime(2028, 12, 31)).map(
    lambda d: d.replace(minute=d.minute // 15 * 15, second=0, microsecond=0)
)
# Nights of DST changes, where the reference and the DST rule matter most.
changes = st.sampled_from(
    [
        *(datetime(2027, 3, 14, 2, 30), datetime(2027, 11, 7, 1, 30), datetime(2027, 3, 28, 2, 15)),
        *(datetime(2027, 10, 31, 2, 45), datetime(2027, 4, 4, 1, 45), datetime(2027, 10, 3, 2, 0)),
    ]
)


@settings(max_examples=200, deadline=None)
@given(
    zone=st.sampled_from(ZONES),
    items=st.lists(st.one_of(walls, changes), min_size=1, max_size=6),
    offsets=st.lists(st.integers(-720, 720), max_size=3),
    after=walls,
)
def test_matches_a_brute_force_reference(
    zone: Zone, items: list[datetime], offsets: list[int], after: datetime
) -> None:
    """Fires are exactly the resolved instants after ``after``, sorted, each once."""
    values: list[object] = [w.isoformat() for w in items]
    aware = [
        items[0].replace(tzinfo=UTC) + timedelta(minutes=o) for o in offsets
    ]  # with an offset: taken as written
    values += [a.isoformat() for a in aware]
    schedule = at_schedule(values, zone)
    expected = sorted({reference_instant(w, zone) for w in items} | set(aware))
    start = after.replace(tzinfo=UTC)
    assert [f.at for f in schedule.fires(start)] == [e for e in expected if e > start]
    assert schedule.next_fire(expected[-1]) is None


def test_dst_notes_and_toml_datetimes() -> None:
    ny = get_zone("America/New_York")
    schedule = at_schedule(
        ["2027-03-14T02:30", datetime(2027, 11, 7, 1, 30), "2027-06-01T12:00:00-04:00"], ny
    )
    fires = list(schedule.fires(datetime(2027, 1, 1, tzinfo=UTC)))
    assert [f.at for f in fires] == [
        datetime(2027, 3, 14, 7, tzinfo=UTC),  # 03:00 EDT, the end of the gap
        datetime(2027, 6, 1, 16, tzinfo=UTC),
        datetime(2027, 11, 7, 5, 30, tzinfo=UTC),  # 01:30 EDT, the first of the two
    ]
    assert fires[0].note == (
        "2027-03-14 02:30 does not exist in America/New_York (clocks go forward): runs at 03:00 EDT"
    )
    assert fires[1].note is None
    assert fires[2].note == (
        "2027-11-07 01:30 happens twice in America/New_York (clocks go back): runs once, at EDT"
    )


def job(schedule: AtSchedule, **values: Any) -> JobConfig:
    return JobConfig(name="once", schedule=schedule, timezone="UTC", command="true", **values)


AT = datetime(2027, 1, 1, 9, tzinfo=UTC)
ONCE = AtSchedule([AT, AT + timedelta(hours=1)], get_zone("UTC"))


def test_each_instant_is_one_slot_and_the_schedule_ends() -> None:
    plan = plan_slots(job(ONCE), AT - timedelta(minutes=5), AT + timedelta(seconds=1))
    assert plan.run == (AT,)
    assert plan.next_due == AT + timedelta(hours=1)
    # After a restart the watermark is the dispatched slot: the instant is never run again.
    plan = plan_slots(job(ONCE), AT, AT + timedelta(minutes=30))
    assert plan.run == ()
    plan = plan_slots(job(ONCE), AT + timedelta(hours=1), AT + timedelta(days=1))
    assert plan.run == ()
    assert plan.missed_count == 0
    assert plan.next_due is None


@pytest.mark.parametrize(
    ("catchup", "run", "missed"),
    [
        ("none", (), 2),
        ("latest", (AT + timedelta(hours=1),), 1),
        ("all", (AT, AT + timedelta(hours=1)), 0),
    ],
)
def test_a_past_instant_is_a_missed_slot(
    catchup: str, run: tuple[datetime, ...], missed: int
) -> None:
    """A daemon down over the instants: grace and catchup decide, as for any slot."""
    plan = plan_slots(
        job(ONCE, catchup=catchup), AT - timedelta(minutes=5), AT + timedelta(hours=3)
    )
    assert plan.run == run
    assert plan.missed_count == missed


def test_late_within_grace_still_runs() -> None:
    plan = plan_slots(
        job(ONCE, grace=timedelta(minutes=10)), AT - timedelta(minutes=5), AT + timedelta(minutes=9)
    )
    assert plan.run == (AT,)


HEADER = '[defaults]\ntimezone = "Europe/Berlin"\n'


def test_config_reads_wall_time_in_the_job_zone_and_next_shows_it(tmp_path: Path) -> None:
    path = tmp_path / "schedules.toml"
    path.write_text(
        HEADER + '[jobs.once]\nat = ["2027-01-01T09:00", 2027-01-02T08:00:00Z]\ncommand = "true"\n'
    )
    once = load_config(path).jobs["once"]
    assert once.kind == "at"
    assert once.schedule.describe() == "at 2 set times, the last at 2027-01-02 09:00"
    rows = upcoming(once, datetime(2026, 12, 1, tzinfo=UTC), 5)
    assert [r.at for r in rows] == [
        datetime(2027, 1, 1, 8, tzinfo=UTC),
        datetime(2027, 1, 2, 8, tzinfo=UTC),
    ]


def test_check_locates_every_mistake(tmp_path: Path) -> None:
    path = tmp_path / "schedules.toml"
    path.write_text(
        HEADER
        + textwrap.dedent(
            """
            [jobs.a]
            at = ["2027-01-01T09:00", "soon"]
            command = "true"
            [jobs.b]
            at = [2027-01-01]
            command = "true"
            [jobs.c]
            at = []
            command = "true"
            [jobs.d]
            at = "2027-01-01T09:00"
            every = "1h"
            command = "true"
            """
        )
    )
    with pytest.raises(ConfigError) as info:
        load_config(path)
    found = [i.format().replace(str(path), "FILE") for i in info.value.issues]
    assert found[0].startswith(
        "FILE: jobs.a.at: item 2: expected an ISO date-time like 2027-01-01T09:00"
    )
    assert found[1].startswith(
        "FILE: jobs.b.at: item 1: expected a date-time like 2027-01-01T09:00"
    )
    assert found[2].startswith("FILE: jobs.c.at: expected a non-empty array of date-times")
    assert found[3].startswith("FILE: jobs.d: needs exactly one schedule")
    assert found[4].startswith("FILE: jobs.d.at: expected a non-empty array of date-times")
    assert len(found) == 5
