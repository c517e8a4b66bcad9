from __future__ import annotations

import io
import zoneinfo
from datetime import datetime, timedelta
from functools import cache

import pytest
import pytz
from hypothesis import given, settings
from hypothesis import strategies as st

from chronod.tz import UTC, UnknownZone, WallKind, get_zone, parse_posix_rule, zone_file
from chronod.tz import _rule_year as rule_year

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


# -- after 2037: the zone file's 64-bit transitions and its footer rule ----------------------------

SOUTH_AND_NORTH = [
    "Australia/Sydney",
    "Australia/Lord_Howe",
    "America/Santiago",
    "Pacific/Chatham",
    "Pacific/Auckland",
    "America/New_York",
    "Europe/Berlin",
]
late_instants = st.datetimes(datetime(2038, 1, 1), datetime(2060, 12, 31)).map(
    lambda d: d.replace(tzinfo=UTC)
)


@cache
def reference(name: str) -> zoneinfo.ZoneInfo:
    """Python's own reader of the very file pytz ships: it applies the footer rule (RFC 8536)."""
    return zoneinfo.ZoneInfo.from_file(io.BytesIO(zone_file(name)), key=name)


@settings(max_examples=400, deadline=None)
@given(name=st.sampled_from(SOUTH_AND_NORTH), instant=late_instants)
def test_offsets_after_2037_agree_with_zoneinfo(name: str, instant: datetime) -> None:
    zone = get_zone(name)
    expected = instant.astimezone(reference(name))
    assert zone.offset_at(instant) == expected.utcoffset()
    assert zone.abbreviation(instant) == expected.tzname()
    assert zone.wall(instant) == expected.replace(tzinfo=None)


@settings(max_examples=400, deadline=None)
@given(
    name=st.sampled_from(SOUTH_AND_NORTH),
    wall=st.datetimes(datetime(2038, 1, 1), datetime(2060, 12, 31)),
)
def test_wall_times_after_2037_resolve_as_zoneinfo_reads_them(name: str, wall: datetime) -> None:
    tz = reference(name)
    # zoneinfo answers with fold=0/1; the instants that show ``wall`` again are the real ones.
    candidates = {wall.replace(tzinfo=tz, fold=fold).astimezone(UTC) for fold in (0, 1)}
    real = {c for c in candidates if c.astimezone(tz).replace(tzinfo=None) == wall}
    result = get_zone(name).resolve(wall)
    assert set(result.instants) == real
    if result.kind is WallKind.GAP:
        assert result.gap_end is not None
        before = result.gap_end - timedelta(microseconds=1)
        assert before.astimezone(tz).replace(tzinfo=None) < wall
        assert result.gap_end.astimezone(tz).replace(tzinfo=None) > wall


@pytest.mark.parametrize("name", SOUTH_AND_NORTH)
def test_every_transition_2038_to_2060_is_zoneinfos(name: str) -> None:
    zone, tz = get_zone(name), reference(name)
    instant = datetime(2037, 12, 31, tzinfo=UTC)
    found = []
    end = datetime(2061, 1, 1, tzinfo=UTC)
    while (instant := zone.next_transition(instant) or end) < end:
        before = instant - timedelta(seconds=1)
        assert zone.offset_at(before) == before.astimezone(tz).utcoffset()
        assert zone.offset_at(instant) == instant.astimezone(tz).utcoffset()
        assert zone.offset_at(before) != zone.offset_at(instant)
        found.append(instant)
    assert len(found) == 2 * 23  # a summer begins and ends every year, south and north


def test_every_zone_after_2037_agrees_with_zoneinfo() -> None:
    # Including zones whose file lists transitions past 2037 in its 64-bit block (Asia/Gaza's
    # Ramadan changes until 2086), which pytz's 32-bit reading leaves out.
    for name in pytz.all_timezones:
        zone, tz = get_zone(name), reference(name)
        for year in range(2038, 2090, 3):
            for month in range(1, 13):
                instant = datetime(year, month, 11 + month, 12, tzinfo=UTC)
                expected = instant.astimezone(tz).utcoffset()
                assert zone.offset_at(instant) == expected, (name, instant)


def test_sydney_is_on_standard_time_in_july_2038() -> None:
    sydney = get_zone("Australia/Sydney")
    july = datetime(2038, 7, 1, tzinfo=UTC)
    assert sydney.offset_at(july) == timedelta(hours=10)
    assert sydney.abbreviation(july) == "AEST"
    assert sydney.next_transition(july) == datetime(2038, 10, 2, 16, 0, tzinfo=UTC)


def test_year_9999_ends_the_computed_transitions() -> None:
    sydney = get_zone("Australia/Sydney")
    assert sydney.next_transition(datetime(9999, 12, 1, tzinfo=UTC)) is None
    assert sydney.offset_at(datetime.max.replace(tzinfo=UTC)) in (
        timedelta(hours=10),
        timedelta(hours=11),
    )
    assert sydney.resolve(datetime(9999, 12, 31, 23, 59)).kind is WallKind.UNIQUE


@pytest.mark.parametrize(
    ("text", "year", "into_dst", "into_std"),
    [
        # Sydney: first Sunday of October 02:00 standard, first Sunday of April 03:00 summer time.
        ("AEST-10AEDT,M10.1.0,M4.1.0/3", 2040, "2040-10-06T16:00", "2040-03-31T16:00"),
        # Santiago: "24:00 on the first Saturday" is midnight ending it (RFC 8536's hour 24).
        ("<-04>4<-03>,M9.1.6/24,M4.1.6/24", 2040, "2040-09-02T04:00", "2040-04-08T03:00"),
        # Nuuk: a negative time of day (-01:00, the evening before).
        ("<-02>2<-01>,M3.5.0/-1,M10.5.0/0", 2040, "2040-03-25T01:00", "2040-10-28T01:00"),
        # Jerusalem: 26:00 on the Thursday is 02:00 on the Friday.
        ("IST-2IDT,M3.4.4/26,M10.5.0", 2040, "2040-03-23T00:00", "2040-10-27T23:00"),
        # Julian forms: Jn never counts 29 February, n does.
        ("XST3XDT,J60/0,100/0", 2040, "2040-03-01T03:00", "2040-04-10T02:00"),
    ],
)
def test_posix_rules(text: str, year: int, into_dst: str, into_std: str) -> None:
    rule = parse_posix_rule(text)
    assert rule is not None
    starts = {entry[1]: entry[0] for entry in rule_year(rule, year)}
    assert starts[rule.dst] == datetime.fromisoformat(into_dst)
    assert starts[rule.std] == datetime.fromisoformat(into_std)


@pytest.mark.parametrize("text", ["CET-1", "<+0545>-5:45", "UTC0", "EST5EDT5,M3.2.0,M11.1.0"])
def test_posix_strings_without_transitions(text: str) -> None:
    assert parse_posix_rule(text) is None


@pytest.mark.parametrize("text", ["", "CET", "CET-1CEST,M13.1.0,M10.5.0", "nonsense!"])
def test_not_posix_strings(text: str) -> None:
    with pytest.raises(ValueError, match=r"POSIX TZ string|bad month rule"):
        parse_posix_rule(text)
