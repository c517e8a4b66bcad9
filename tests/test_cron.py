"""Cron schedules: worked examples (docs/design.md §2), the refusals, notes, words, fingerprints."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from itertools import islice

import pytest

from chronod.errors import ScheduleError
from chronod.schedules.base import Fire
from chronod.schedules.cron import CronCache, CronSchedule, CronTables
from chronod.tz import get_zone

UTC = timezone.utc
NEW_YORK = get_zone("America/New_York")


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def fires(expression: str, zone: str, after: str, count: int) -> list[Fire]:
    schedule = CronSchedule(expression, get_zone(zone))
    found: list[Fire] = []
    for fire in schedule.fires(utc(after)):
        found.append(fire)
        if len(found) == count:
            break
    return found


def instants(expression: str, zone: str, after: str, count: int) -> list[str]:
    return [f"{f.at:%Y-%m-%dT%H:%MZ}" for f in fires(expression, zone, after, count)]


# -- worked examples (docs/design.md §2) ----------------------------------------------------------


def test_fixed_time_in_the_spring_gap_runs_at_the_end_of_the_gap() -> None:
    found = fires("30 2 * * *", "America/New_York", "2027-03-13T12:00Z", 2)
    assert [f.at for f in found] == [utc("2027-03-14T07:00Z"), utc("2027-03-15T06:30Z")]
    assert found[0].note == "02:30 does not exist on 2027-03-14 (DST gap); runs at 03:00 EDT"
    assert found[1].note is None


def test_fixed_time_in_the_repeated_hour_runs_once_at_the_first() -> None:
    found = fires("30 1 * * *", "America/New_York", "2026-11-01T00:00-04:00", 2)
    assert [f.at for f in found] == [utc("2026-11-01T05:30Z"), utc("2026-11-02T06:30Z")]
    assert found[0].note == "01:30 happens twice on 2026-11-01; runs once, at the first (EDT)"
    assert found[1].note is None


def test_fixed_time_asked_between_the_two_occurrences_does_not_rerun() -> None:
    schedule = CronSchedule("30 1 * * *", NEW_YORK)
    fire = schedule.next_fire(utc("2026-11-01T05:45Z"))  # 01:45 EDT: before the second 01:30
    assert fire == Fire(utc("2026-11-02T06:30Z"))


def test_hourly_fires_at_both_real_occurrences_of_the_repeated_hour() -> None:
    assert instants("0 * * * *", "America/New_York", "2026-11-01T03:30Z", 4) == [
        "2026-11-01T04:00Z",  # 00:00 EDT
        "2026-11-01T05:00Z",  # 01:00 EDT
        "2026-11-01T06:00Z",  # 01:00 EST
        "2026-11-01T07:00Z",  # 02:00 EST
    ]
    assert all(
        f.note is None for f in fires("0 * * * *", "America/New_York", "2026-11-01T03:30Z", 4)
    )


def test_last_sunday_of_the_month_in_istanbul() -> None:
    assert instants("0 9 * * L0", "Europe/Istanbul", "2026-11-21T00:00Z", 3) == [
        "2026-11-29T06:00Z",
        "2026-12-27T06:00Z",
        "2027-01-31T06:00Z",
    ]


def test_midnight_in_santiagos_midnight_gap() -> None:
    found = fires("0 0 * * *", "America/Santiago", "2026-09-05T12:00-04:00", 2)
    assert found[0].at == utc("2026-09-06T04:00Z")  # 01:00 -03
    assert found[0].note == "00:00 does not exist on 2026-09-06 (DST gap); runs at 01:00 -03"
    assert found[1].at == utc("2026-09-07T03:00Z")


def test_gap_times_collapse_into_one_fire() -> None:
    assert instants("0,30 2 * * *", "America/New_York", "2027-03-14T00:00Z", 3) == [
        "2027-03-14T07:00Z",
        "2027-03-15T06:00Z",
        "2027-03-15T06:30Z",
    ]


def test_gap_fire_and_a_real_fire_at_the_same_instant_are_one_fire() -> None:
    # 02:00 and 02:30 are skipped onto 03:00 EDT, which the job also names itself.
    assert instants("0,30 2,3 * * *", "America/New_York", "2027-03-14T06:00Z", 3) == [
        "2027-03-14T07:00Z",
        "2027-03-14T07:30Z",
        "2027-03-15T06:00Z",
    ]


def test_every_fifteen_minutes_through_the_fall_back() -> None:
    found = instants("*/15 * * * *", "America/New_York", "2026-11-01T04:59Z", 10)
    assert found == [
        "2026-11-01T05:00Z",  # 01:00 EDT
        "2026-11-01T05:15Z",
        "2026-11-01T05:30Z",
        "2026-11-01T05:45Z",
        "2026-11-01T06:00Z",  # 01:00 EST
        "2026-11-01T06:15Z",
        "2026-11-01T06:30Z",
        "2026-11-01T06:45Z",
        "2026-11-01T07:00Z",  # 02:00 EST
        "2026-11-01T07:15Z",
    ]


def test_every_fifteen_minutes_skips_the_spring_gap() -> None:
    assert instants("*/15 * * * *", "America/New_York", "2027-03-14T06:40Z", 3) == [
        "2027-03-14T06:45Z",  # 01:45 EST
        "2027-03-14T07:00Z",  # 03:00 EDT; 02:00-02:45 never happen
        "2027-03-14T07:15Z",
    ]


def test_wildcard_hour_in_the_gap_does_not_fire_that_day() -> None:
    assert instants("*/20 2 * * *", "America/New_York", "2027-03-13T12:00Z", 2) == [
        "2027-03-15T06:00Z",
        "2027-03-15T06:20Z",
    ]


def test_lord_howe_half_hour_gap() -> None:
    # 2026-10-04: 02:00 +10:30 becomes 02:30 +11 (15:30Z).
    found = fires("15 2 * * *", "Australia/Lord_Howe", "2026-10-03T12:00Z", 2)
    assert found[0].at == utc("2026-10-03T15:30Z")
    assert found[0].note == "02:15 does not exist on 2026-10-04 (DST gap); runs at 02:30 +11"
    assert found[1].at == utc("2026-10-04T15:15Z")
    assert instants("*/15 2 * * *", "Australia/Lord_Howe", "2026-10-03T12:00Z", 3) == [
        "2026-10-03T15:30Z",  # 02:30 +11
        "2026-10-03T15:45Z",  # 02:45 +11
        "2026-10-04T15:00Z",  # next day 02:00 +11
    ]


def test_lord_howe_half_hour_repeat() -> None:
    # 2026-04-05: 02:00 +11 falls back to 01:30 +10:30 (15:00Z); 01:30-01:59 happen twice.
    assert instants("*/15 1 * * *", "Australia/Lord_Howe", "2026-04-04T13:00Z", 6) == [
        "2026-04-04T14:00Z",  # 01:00 +11
        "2026-04-04T14:15Z",
        "2026-04-04T14:30Z",  # 01:30 +11
        "2026-04-04T14:45Z",
        "2026-04-04T15:00Z",  # 01:30 +10:30
        "2026-04-04T15:15Z",  # 01:45 +10:30
    ]
    found = fires("45 1 * * *", "Australia/Lord_Howe", "2026-04-04T13:00Z", 2)
    assert found[0].at == utc("2026-04-04T14:45Z")
    assert found[0].note == "01:45 happens twice on 2026-04-05; runs once, at the first (+11)"
    assert found[1].at == utc("2026-04-05T15:15Z")


def test_repeat_note_names_the_offset_when_abbreviations_agree() -> None:
    schedule = CronSchedule("30 1 * * *", NEW_YORK)
    assert schedule._repeat_note(  # abbreviations differ in New York; force the other branch
        datetime(2026, 11, 1, 1, 30), (utc("2026-11-01T05:30Z"), utc("2026-11-01T05:30Z"))
    ) == ("01:30 happens twice on 2026-11-01; runs once, at the first (UTC-04:00)")


# -- day matching -------------------------------------------------------------------------------


def test_day_of_month_or_day_of_week_when_both_are_restricted() -> None:
    # 2026-06: the 13th is a Saturday; Fridays are 5, 12, 19, 26.
    assert instants("0 12 13 6 5", "UTC", "2026-06-01T00:00Z", 6) == [
        "2026-06-05T12:00Z",
        "2026-06-12T12:00Z",
        "2026-06-13T12:00Z",
        "2026-06-19T12:00Z",
        "2026-06-26T12:00Z",
        "2027-06-04T12:00Z",
    ]


def test_day_fields_starting_with_star_must_both_match() -> None:
    # cronie: '*/2' starts with '*', so odd days that are also Mondays.
    assert instants("0 0 */2 6 1", "UTC", "2026-05-31T00:00Z", 3) == [
        "2026-06-01T00:00Z",
        "2026-06-15T00:00Z",
        "2026-06-29T00:00Z",
    ]


def test_last_day_and_lists_with_last_day() -> None:
    assert instants("0 0 L * *", "UTC", "2028-01-31T00:00Z", 2) == [
        "2028-02-29T00:00Z",
        "2028-03-31T00:00Z",
    ]
    assert instants("0 0 1,L * *", "UTC", "2027-02-02T00:00Z", 3) == [
        "2027-02-28T00:00Z",
        "2027-03-01T00:00Z",
        "2027-03-31T00:00Z",
    ]
    assert instants("0 0 28-L 2 *", "UTC", "2027-01-01T00:00Z", 2) == [
        "2027-02-28T00:00Z",
        "2028-02-28T00:00Z",
    ]


def test_nth_weekday_and_sunday_as_seven() -> None:
    assert instants("0 9 * * 1#2", "UTC", "2026-01-01T00:00Z", 2) == [
        "2026-01-12T09:00Z",
        "2026-02-09T09:00Z",
    ]
    assert instants("0 9 * * 7#5", "UTC", "2026-01-01T00:00Z", 2) == [
        "2026-03-29T09:00Z",
        "2026-05-31T09:00Z",
    ]
    assert instants("0 9 * * L7", "UTC", "2026-01-01T00:00Z", 1) == ["2026-01-25T09:00Z"]
    assert instants("0 9 * * 7", "UTC", "2026-01-01T00:00Z", 1) == ["2026-01-04T09:00Z"]


def test_wrap_around_ranges_and_names() -> None:
    assert instants("58-1 23 * * *", "UTC", "2026-01-01T00:00Z", 2) == [
        "2026-01-01T23:00Z",
        "2026-01-01T23:01Z",
    ]
    assert instants("0 0 * * FRI-mon", "UTC", "2026-01-01T00:00Z", 4) == [
        "2026-01-02T00:00Z",  # Friday
        "2026-01-03T00:00Z",
        "2026-01-04T00:00Z",
        "2026-01-05T00:00Z",  # Monday
    ]
    assert instants("0 0 1 nov-feb *", "UTC", "2026-03-01T00:00Z", 2) == [
        "2026-11-01T00:00Z",
        "2026-12-01T00:00Z",
    ]


# -- after, horizon and termination --------------------------------------------------------------


def test_strictly_after_with_seconds_and_microseconds() -> None:
    schedule = CronSchedule("30 9 * * *", get_zone("UTC"))
    assert schedule.next_after(utc("2026-01-01T09:30:00Z")) == utc("2026-01-02T09:30Z")
    assert schedule.next_after(utc("2026-01-01T09:29:59.999999Z")) == utc("2026-01-01T09:30Z")
    assert schedule.next_after(utc("2026-01-01T09:30:00.000001Z")) == utc("2026-01-02T09:30Z")
    every = CronSchedule("* * * * *", NEW_YORK)
    assert every.next_after(utc("2026-01-01T09:30:30Z")) == utc("2026-01-01T09:31Z")


def test_naive_after_is_refused_rather_than_read_as_server_time() -> None:
    with pytest.raises(ValueError, match="naive datetime"):
        CronSchedule("0 0 * * *", NEW_YORK).next_fire(datetime(2026, 1, 1))


def test_after_in_another_offset_is_the_same_instant() -> None:
    schedule = CronSchedule("0 12 * * *", get_zone("Europe/Paris"))
    plus_nine = timezone(timedelta(hours=9))
    assert schedule.next_after(datetime(2026, 7, 1, 18, 59, tzinfo=plus_nine)) == utc(
        "2026-07-01T10:00Z"
    )


def test_leap_days_follow_the_gregorian_rules() -> None:
    assert instants("0 0 29 2 *", "UTC", "2097-01-01T00:00Z", 2) == [
        "2104-02-29T00:00Z",  # 2100 is not a leap year
        "2108-02-29T00:00Z",
    ]
    assert instants("0 0 29 2 *", "UTC", "1997-01-01T00:00Z", 1) == ["2000-02-29T00:00Z"]
    assert instants("0 0 29 2 *", "UTC", "2397-01-01T00:00Z", 1) == ["2400-02-29T00:00Z"]
    assert instants("0 0 L 2 *", "UTC", "2100-01-01T00:00Z", 1) == ["2100-02-28T00:00Z"]
    assert instants("0 0 29 2 1", "UTC", "2026-01-01T00:00Z", 2) == [
        "2026-02-02T00:00Z",  # either: Mondays in February, or 29 February
        "2026-02-09T00:00Z",
    ]


def test_rare_fifth_monday_of_february() -> None:
    # Needs a leap year whose 1 February is a Monday: 2016, 2044, 2072, then 2112 (2100 is no leap).
    assert instants("0 0 * 2 1#5", "UTC", "2073-01-01T00:00Z", 1) == ["2112-02-29T00:00Z"]


def test_no_fire_beyond_year_9999() -> None:
    schedule = CronSchedule("0 0 29 2 *", NEW_YORK)
    assert schedule.next_fire(utc("9996-03-01T00:00Z")) is None
    assert (
        CronSchedule("* * * * *", get_zone("UTC")).next_fire(datetime.max.replace(tzinfo=UTC))
        is None
    )


# -- refusals -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "reason"),
    [
        ("", "empty cron expression"),
        ("@reboot", "unknown shortcut"),
        (
            "0 0 * * * *",
            "expected 5 fields (minute hour day-of-month month day-of-week), got 6 (seconds",
        ),
        ("0 0 * * * * 2030", "got 7 (seconds and years fields are not supported)"),
        ("0 0 * *", "expected 5 fields"),
        ("0 0 ? * *", "'?' is not supported; use '*'"),
        ("0 0 * * ?", "'?' is not supported"),
        ("0 0 15W * *", "'W' (nearest weekday) is not supported"),
        ("0 0 LW * *", "'W' (nearest weekday) is not supported"),
        ("H * * * *", "minute field: hashed or random values ('H', 'R') are not supported"),
        ("R 0 * * *", "hashed or random values"),
        ("H/15 * * * *", "hashed or random values"),
        ("5-5 * * * *", "minute field: range '5-5' has equal ends"),
        ("5,5-5/2 * * * *", "range '5-5/2' has equal ends"),
        ("0 0 * jan-jan *", "month field: range 'jan-jan' has equal ends"),
        ("0 0 * * 7-7", "day-of-week field: range '7-7' has equal ends"),
        ("0 0 * * 7-0", "range '7-0' has equal ends"),
        ("0 0 31-L * *", "day-of-month field: range '31-l' has equal ends"),
        ("*,5 * * * *", "minute field: '*' cannot be part of a list"),
        ("0 0 * * *,1#2", "day-of-week field: '*' cannot be part of a list"),
        (
            "*/60 * * * *",
            "minute field: step 60 does not fit the field; cron steps restart every hour",
        ),
        ("*/90 * * * *", "step 90 does not fit"),
        (
            "0 */24 * * *",
            "hour field: step 24 does not fit the field; cron steps restart every day",
        ),
        ("0 0 */31 * *", "restart every month"),
        ("0 0 1 */12 *", "restart every year"),
        ("0 0 * * */7", "restart every week"),
        ("*/0 * * * *", "minute field: a step must be at least 1"),
        (
            "50-10/7 * * * *",
            "minute field: a step on a wrap-around range ('50-10/7') is not supported",
        ),
        ("0 0 * * fri-mon/2", "a step on a wrap-around range"),
        ("0 0 * * 7/2", "day-of-week field: write 0, not 7, to start a step at Sunday"),
        ("0 0 * * 0,L0", "day-of-week cannot mix plain weekdays with 'L' or '#' entries"),
        ("0 0 * * 1-5,L5", "cannot mix plain weekdays"),
        ("0 0 * * 1,2#3", "cannot mix plain weekdays"),
        ("0 0 15 * 1#2", "day-of-month must be '*' when day-of-week uses 'L' or '#'"),
        ("0 0 L * L5", "day-of-month must be '*'"),
        ("0 0 */2 * L5", "day-of-month must be '*'"),
        ("0 0 * * 5#0", "day-of-week '#n' needs n from 1 to 5"),
        ("0 0 * * 5#6", "needs n from 1 to 5"),
        ("0 0 * * 5#", "needs n from 1 to 5"),
        ("0 0 * * mon-wed#2", "day-of-week '#' takes a single weekday"),
        ("0 0 * * L", "day-of-week 'L' needs a weekday, e.g. 'L5' = last Friday"),
        ("L * * * *", "'L' is only allowed in day-of-month"),
        ("0 L * * *", "'L' is only allowed in day-of-month"),
        ("0 0 * L *", "'L' is only allowed in day-of-month"),
        ("0 0 L/2 * *", "'L' is only allowed in day-of-month (alone or ending a range"),
        ("0 0 L-5 * *", "'L' is only allowed in day-of-month"),
        ("0 0 * * Lsun", "day-of-week field: unknown value 'lsun'"),
        ("0 0 L,2-31 * *", "day-of-month field: 'L' together with 30 other days"),
        ("0 0 1-30,L * 1", "'L' together with 30 other days"),
        ("0 0 30 2 *", "day-of-month 30 never occurs in February"),
        ("0 0 30,31 2 *", "day-of-month 30, 31 never occur in February"),
        ("0 0 31 4,6,9,11 *", "day-of-month 31 never occurs in April, June, September or November"),
        ("0 0 31 4 1", "day-of-month 31 never occurs in April"),
        ("60 * * * *", "minute field: 60 is out of range (0-59)"),
        ("0 24 * * *", "hour field: 24 is out of range (0-23)"),
        ("0 0 0 * *", "day-of-month field: 0 is out of range (1-31)"),
        ("0 0 32 * *", "day-of-month field: 32 is out of range (1-31)"),
        ("0 0 * 13 *", "month field: 13 is out of range (1-12)"),
        ("0 0 * * 8", "day-of-week field: 8 is out of range (0-7)"),
        ("0 0 * * mon-fry", "day-of-week field: unknown value 'fry'"),
        ("0 0 * mon *", "month field: unknown value 'mon'"),
        ("0 0 * * jan", "day-of-week field: unknown value 'jan'"),
        ("1,,2 * * * *", "minute field has an empty list item"),
        ("-1 * * * *", "minute field: cannot read '-1'"),
        ("1-2-3 * * * *", "minute field: cannot read '1-2-3'"),
        ("*/5/2 * * * *", "minute field: cannot read '*/5/2'"),
        ("*/x * * * *", "minute field: step 'x' is not a number"),
        ("0\u00a00 * * * *", "minute field: cannot read"),  # only ASCII whitespace separates
    ],
)
def test_refusals(expression: str, reason: str) -> None:
    with pytest.raises(ScheduleError) as caught:
        CronSchedule(expression, NEW_YORK)
    assert reason in str(caught.value)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    "expression",
    [
        "0 0 29 2 *",  # 29 February exists in leap years
        "0 0 15,30 2 *",  # some listed days exist
        "0 0 31 1-3 *",
        "@yearly",
        "@ANNUALLY",
        "@monthly",
        "@weekly",
        "@daily",
        "@midnight",
        "@hourly",
        "  30 1 * * *  ",
        "0\t0 * * *",
        "59/15 * * * *",
        "0 0 * * 0-7",
        "0 0 * * 1-7/2",
        "0 0 * * sat-7",
        "0 0 * * sun#5,L6",
        "0 0 1-L/2 * *",
        "0 0 25-L * *",
    ],
)
def test_accepted(expression: str) -> None:
    assert CronSchedule(expression, NEW_YORK).next_fire(utc("2026-01-01T00:00Z")) is not None


def test_cross_check_refuses_what_croniter_expands_differently() -> None:
    # Our reading and croniter's agree on every supported spelling; monkeypatching the reading is
    # the only way to show that a disagreement is refused rather than silently used.
    from chronod.schedules.cron import parse as cron

    original = cron._parse_field

    def skewed(index: int, text: str) -> cron._Field:
        field = original(index, text)
        return cron._Field(field.values | {7} if index == cron.MINUTE else field.values)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(cron, "_parse_field", skewed)
        with pytest.raises(ScheduleError, match="minute field: croniter reads '5' differently"):
            CronSchedule("5 0 * * *", NEW_YORK)


def _expected_values(index: int, start: int, end: int | None, step: int) -> set[int] | None:
    """What cron means by start[-end][/step] in a field, or None where chronod must refuse."""
    low, high = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 7))[index]
    cycle = (60, 24, 31, 12, 7)[index]
    step_end = (59, 23, 31, 12, 6)[index]
    if step >= cycle:
        return None
    if end is None:  # "start/step" runs to croniter's end of the field
        if index == 4 and start == 7:
            return None
        return {v % 7 if index == 4 else v for v in range(start, step_end + 1, step)}
    if start == end or (index == 4 and (start, end) == (7, 0)):
        return None  # equal ends (croniter reads them as the whole field)
    if index == 4 and start == 7:
        start = 0
    if start < end:
        return {v % 7 if index == 4 else v for v in range(start, end + 1, step)}
    if step != 1:
        return None
    top = 6 if index == 4 else high
    return {*range(start, top + 1), *range(low, end + 1)}


@pytest.mark.parametrize("index", [0, 1, 2, 3, 4])
def test_every_range_is_read_as_cron_means_or_refused(index: int) -> None:
    """a-b, a-b/s and a/s for every a and b of each field: every step for month and day-of-week,
    telling ones (1, small primes, the largest allowed, the cycle) for the others."""
    low, high = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 7))[index]
    cycle = (60, 24, 31, 12, 7)[index]
    steps = range(1, cycle + 2) if index in (3, 4) else (1, 7, 13, cycle - 1, cycle)
    fields = ["0", "0", "*", "*", "*"]
    checked = 0
    for start in range(low, high + 1):
        for end in [None, *range(low, high + 1)]:
            for step in steps:
                token = str(start) if end is None else f"{start}-{end}"
                if step > 1 or end is None:
                    token += f"/{step}"
                fields[index] = token
                expected = _expected_values(index, start, end, step)
                if expected is None:
                    with pytest.raises(ScheduleError):
                        CronSchedule(" ".join(fields), get_zone("UTC"))
                    continue
                schedule = CronSchedule(" ".join(fields), get_zone("UTC"))
                got = (
                    schedule._minutes,
                    schedule._hours,
                    schedule._dom,
                    tuple(schedule._months),
                    schedule._dow,
                )[index]
                assert set(got) == expected, token
                checked += 1
    assert checked > 100


# -- words and identity -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "words"),
    [
        ("30 17 * * 5", "at 17:30 every Friday"),
        ("0 9 * * L0", "at 09:00 on the last Sunday of the month"),
        ("*/15 * * * *", "every 15 minutes"),
        ("* * * * *", "every minute"),
        ("@hourly", "every hour at :00"),
        ("5,35 * * * *", "every hour at :05 and :35"),
        ("0 */6 * * *", "every 6 hours at :00"),
        ("@daily", "at 00:00 every day"),
        ("@yearly", "at 00:00 on 1 January"),
        ("@monthly", "at 00:00 on day 1 of the month"),
        ("0 8,12,17 * * 1-5", "at 08:00, 12:00 and 17:00 on weekdays"),
        ("0 10 * * sat,sun", "at 10:00 on weekends"),
        ("0 10 * * 1,3,5", "at 10:00 every Monday, Wednesday and Friday"),
        ("0 9 * * 1#2", "at 09:00 on the second Monday of the month"),
        ("0 9 * * 1#1,L5", "at 09:00 on the first Monday and the last Friday of the month"),
        ("0 0 L * *", "at 00:00 on the last day of the month"),
        ("0 0 1,15,L * *", "at 00:00 on days 1, 15 and the last day of the month"),
        ("0 0 1 * 1", "at 00:00 on day 1 of the month or every Monday"),
        ("30 6 * 3,9 *", "at 06:30 every day in March and September"),
        ("*/10 * * * 0", "every 10 minutes on Sundays"),
        ("*/15 9-17 * * 1-5", "every 15 minutes from 09:00 to 17:45 on weekdays"),
        ("* 9 * * 2,4", "every minute from 09:00 to 09:59 on Tuesdays and Thursdays"),
        ("0 0,12 * * *", "at 00:00 and 12:00 every day"),
        ("0 1-23/2 * * *", "cron '0 1-23/2 * * *'"),
        ("7,19,31,43,55 */5 * * *", "cron '7,19,31,43,55 */5 * * *'"),
        ("0 0 */2 * 1", "cron '0 0 */2 * 1'"),
        ("0 0 * 1-6 *", "cron '0 0 * 1-6 *'"),
    ],
)
def test_describe(expression: str, words: str) -> None:
    assert CronSchedule(expression, NEW_YORK).describe() == words


@pytest.mark.parametrize(
    ("one", "other"),
    [
        ("@daily", "0 0 * * *"),
        ("@midnight", "0 0 * * *"),
        ("@weekly", "0 0 * * 7"),
        ("0 0 * * sun", "0 0 * * 0"),
        ("0,15,30,45 3 * * *", "0-59/15 3 * * *"),
        ("0 0 * JAN-mar *", "0 0 * 1,2,3 *"),
        ("0 0 * * L7", "0 0 * * L0"),
        ("0 0 1-31 * *", "0 0 * * *"),
        ("0 0 1-31 * 1", "0 0 * * *"),  # either: every day
        ("0 0 * * 0-6", "0 0 * * *"),
        ("  30 1 * * *", "30 1 * * *"),
    ],
)
def test_equivalent_spellings_share_a_fingerprint(one: str, other: str) -> None:
    assert CronSchedule(one, NEW_YORK).fingerprint == CronSchedule(other, NEW_YORK).fingerprint


@pytest.mark.parametrize(
    ("one", "other"),
    [
        ("30 1 * * *", "30 2 * * *"),
        ("0,15,30,45 3 * * *", "*/15 3 * * *"),  # fixed-time vs wildcard: different DST handling
        ("0 0 1 * 1", "0 0 */1 * 1"),  # either vs both
        ("0 0 L * *", "0 0 31 * *"),
        ("0 0 * * 1#1", "0 0 * * 1#2"),
    ],
)
def test_different_definitions_have_different_fingerprints(one: str, other: str) -> None:
    assert CronSchedule(one, NEW_YORK).fingerprint != CronSchedule(other, NEW_YORK).fingerprint


def test_fingerprint_depends_on_the_zone() -> None:
    paris = CronSchedule("30 1 * * *", get_zone("Europe/Paris"))
    assert paris.fingerprint != CronSchedule("30 1 * * *", NEW_YORK).fingerprint
    assert paris.fingerprint == CronSchedule("30 1 * * *", get_zone("Europe/Paris")).fingerprint


def test_canonical_and_attributes() -> None:
    schedule = CronSchedule("  0 9 * * L0 ", NEW_YORK)
    assert schedule.expression == "0 9 * * L0"
    assert schedule.zone is NEW_YORK
    assert schedule.canonical() == {
        "kind": "cron",
        "minute": [0],
        "hour": [9],
        "month": "*",
        "days": {"dom": "*", "dow": ["L0"]},
        "dst": "fixed-time",
        "zone": "America/New_York",
    }
    assert CronSchedule("*/5 * * * *", NEW_YORK).canonical()["dst"] == "wildcard"
    assert repr(schedule) == "CronSchedule('0 9 * * L0', 'America/New_York')"


# -- sharing parsed expressions (one CronCache per config load) ---------------------------------


def test_cache_shares_tables_and_schedules() -> None:
    cache = CronCache()
    berlin = get_zone("Europe/Berlin")
    first = CronSchedule.cached("*/15 9-17 * * mon-fri", NEW_YORK, cache)
    # The same text and zone: the very same (immutable) schedule.
    assert CronSchedule.cached(" */15 9-17 * * mon-fri ", NEW_YORK, cache) is first
    # Another zone: its own schedule, the same tables.
    other = CronSchedule.cached("*/15 9-17 * * mon-fri", berlin, cache)
    assert other is not first
    assert other._t is first._t
    # Expressions that read the same share tables too.
    assert CronSchedule.cached("@daily", NEW_YORK, cache)._t is cache.tables("0 0 * * *")
    # A cached schedule is indistinguishable from one built on its own.
    alone = CronSchedule("*/15 9-17 * * mon-fri", NEW_YORK)
    start = utc("2026-03-06T12:00Z")
    assert list(islice(first.fires(start), 50)) == list(islice(alone.fires(start), 50))
    assert first.fingerprint == alone.fingerprint
    assert first.canonical() == alone.canonical()
    assert first.describe() == alone.describe()
    assert first.expression == alone.expression


def test_cache_reports_a_bad_expression_every_time() -> None:
    cache = CronCache()
    for _ in range(3):
        with pytest.raises(ScheduleError, match="step 60 does not fit"):
            CronSchedule.cached("*/60 * * * *", NEW_YORK, cache)


def test_caches_are_independent() -> None:
    one, two = CronCache(), CronCache()
    assert CronSchedule.cached("5 4 * * *", NEW_YORK, one) is not CronSchedule.cached(
        "5 4 * * *", NEW_YORK, two
    )


def test_tables_parse_is_what_the_constructor_reads() -> None:
    assert CronTables.parse("0 9 * * L0").nth == CronSchedule("0 9 * * L0", NEW_YORK)._nth
    with pytest.raises(ScheduleError):
        CronTables.parse("0 0 30 2 *")
