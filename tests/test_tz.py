from __future__ import annotations

from datetime import datetime, timedelta

import pytest
import pytz
from hypothesis import given, settings
from hypothesis import strategies as st

from chronod.tz import UTC, UnknownZone, WallKind, get_zone

ZONES = [
    "America/New_York",
    "Europe/London",
    "Europe/Dublin",
    "Australia/Lord_Howe",
    "America/Santiago",
    "Asia/Kolkata",
    "Pacific/Chatham",
    "Pacific/Apia",
    "UTC",
    "Etc/GMT+5",
]
instants = st.datetimes(datetime(1990, 1, 1), datetime(2036, 12, 31)).map(
    lambda d: d.replace(tzinfo=UTC)
)


@settings(max_examples=300, deadline=None)
@given(name=st.sampled_from(ZONES), instant=instants)
def test_offset_and_wall_agree_with_pytz(name: str, instant: datetime) -> None:
    zone = get_zone(name)
    expected = instant.astimezone(pytz.timezone(name))
    assert zone.offset_at(instant) == expected.utcoffset()
    assert zone.wall(instant) == expected.replace(tzinfo=None)
    assert zone.abbreviation(instant) == expected.tzname()
    assert zone.to_local(instant) == instant
    assert zone.to_local(instant).tzname() == expected.tzname()


@settings(max_examples=300, deadline=None)
@given(name=st.sampled_from(ZONES), wall=st.datetimes(datetime(1990, 1, 1), datetime(2036, 12, 31)))
def test_resolve_agrees_with_pytz(name: str, wall: datetime) -> None:
    tz = pytz.timezone(name)
    zone = get_zone(name)
    result = zone.resolve(wall)
    # Every instant returned shows exactly this wall time ...
    for instant in result.instants:
        assert instant.astimezone(tz).replace(tzinfo=None) == wall
    # ... and pytz finds the same set (it only tells apart is_dst True/False).
    expected = set()
    for is_dst in (True, False):
        expected.add(tz.localize(wall, is_dst=is_dst).astimezone(UTC))
    real = {e for e in expected if e.astimezone(tz).replace(tzinfo=None) == wall}
    assert set(result.instants) == real
    if result.kind is WallKind.GAP:
        assert result.gap_end is not None
        before = result.gap_end - timedelta(microseconds=1)
        assert (
            zone.wall(before) < wall < zone.wall(result.gap_end)
            or zone.wall(result.gap_end) == wall
        )


def test_new_york_transitions() -> None:
    ny = get_zone("America/New_York")
    gap = ny.resolve(datetime(2027, 3, 14, 2, 30))
    assert gap.kind is WallKind.GAP
    assert gap.gap_end == datetime(2027, 3, 14, 7, 0, tzinfo=UTC)
    twice = ny.resolve(datetime(2026, 11, 1, 1, 30))
    assert twice.kind is WallKind.AMBIGUOUS
    assert twice.instants == (
        datetime(2026, 11, 1, 5, 30, tzinfo=UTC),
        datetime(2026, 11, 1, 6, 30, tzinfo=UTC),
    )
    assert ny.next_transition(datetime(2026, 7, 1, tzinfo=UTC)) == datetime(
        2026, 11, 1, 6, 0, tzinfo=UTC
    )


def test_apia_skipped_a_whole_day() -> None:
    apia = get_zone("Pacific/Apia")
    gap = apia.resolve(datetime(2011, 12, 30, 12, 0))
    assert gap.kind is WallKind.GAP
    assert apia.wall(gap.gap_end or datetime.min) == datetime(2011, 12, 31, 0, 0)


def test_static_zone_has_no_transitions() -> None:
    kolkata = get_zone("Etc/GMT-5")
    assert kolkata.next_transition(datetime(2026, 1, 1, tzinfo=UTC)) is None
    assert kolkata.offset_at(datetime(2026, 1, 1, tzinfo=UTC)) == timedelta(hours=5)


def test_unknown_zone() -> None:
    with pytest.raises(UnknownZone, match="unknown time zone 'Mars/Olympus'"):
        get_zone("Mars/Olympus")


def test_naive_instant_is_refused() -> None:
    with pytest.raises(ValueError, match="naive"):
        get_zone("UTC").offset_at(datetime(2026, 1, 1))
