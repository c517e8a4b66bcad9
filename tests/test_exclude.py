"""``exclude`` / ``exclude_file``: the wrapper against a brute-force filter, and the config keys."""

from __future__ import annotations

import textwrap
from datetime import date, datetime, timedelta
from itertools import islice
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chronod.config import JobConfig, load_config
from chronod.errors import ConfigError
from chronod.plan import plan_slots
from chronod.preview import upcoming
from chronod.schedules import IntervalSchedule, Schedule
from chronod.schedules.cron import CronSchedule
from chronod.schedules.exclude import ExcludedSchedule
from chronod.tz import UTC, get_zone

ZONES = [get_zone(n) for n in ("America/New_York", "Europe/Berlin", "Australia/Lord_Howe", "UTC")]
EXPRESSIONS = ["30 2 * * *", "0 * * * *", "*/20 1-3 * * *", "0 0 * * 0", "15 9 1 * *"]
START = datetime(2026, 1, 1, tzinfo=UTC)


def inner_schedules(
    expressions: list[str] = EXPRESSIONS, seconds: tuple[int, int] = (600, 3 * 86400)
) -> st.SearchStrategy[Schedule]:
    """Cron schedules of ``expressions`` and intervals of ``seconds`` (low, high), in ``ZONES``."""
    zones = st.sampled_from(ZONES)
    crons = st.builds(CronSchedule, st.sampled_from(expressions), zones)
    periods = st.integers(*seconds).map(lambda s: timedelta(seconds=s))
    return st.one_of(crons, st.builds(IntervalSchedule, periods, zones))


@settings(max_examples=150, deadline=None)
@given(
    inner=inner_schedules(),
    offsets=st.sets(st.integers(-1, 22), max_size=15),
    after=st.integers(0, 365 * 86400).map(lambda s: START + timedelta(seconds=s)),
)
def test_matches_a_brute_force_filter(inner: Schedule, offsets: set[int], after: datetime) -> None:
    """The wrapper yields exactly the inner fires whose local date is not excluded, in order."""
    days = {after.date() + timedelta(days=offset) for offset in offsets}
    wrapped = ExcludedSchedule(inner, dict.fromkeys(days, "exclude"))
    horizon = after + timedelta(days=21)  # crosses a DST change for about one example in 8
    expected = []
    for fire in inner.fires(after):
        if fire.at > horizon:
            break
        if inner.zone.wall(fire.at).date() not in days:
            expected.append(fire.at)
    got = []
    for fire in wrapped.fires(after):
        if fire.at > horizon:
            break
        got.append(fire.at)
    assert got == expected


def test_note_says_which_fires_were_skipped_and_why() -> None:
    berlin = get_zone("Europe/Berlin")
    wrapped = ExcludedSchedule(
        CronSchedule("0 9 * * *", berlin),
        {date(2026, 12, 24): "exclude", date(2026, 12, 25): "holidays.txt:2"},
    )
    fire = wrapped.next_fire(datetime(2026, 12, 23, 12, tzinfo=UTC))
    assert fire is not None
    assert fire.at == datetime(2026, 12, 26, 8, tzinfo=UTC)
    assert fire.note == (
        "skipped 2026-12-24 09:00 (excluded by exclude), "
        "2026-12-25 09:00 (excluded by holidays.txt:2)"
    )


def test_local_date_decides_not_the_utc_date() -> None:
    """23:30 in New York is the next day in UTC: the New York date is the one excluded."""
    ny = get_zone("America/New_York")
    wrapped = ExcludedSchedule(CronSchedule("30 23 * * *", ny), {date(2026, 7, 4): "exclude"})
    fires = [f.at for f in islice(wrapped.fires(datetime(2026, 7, 4, tzinfo=UTC)), 2)]
    assert fires == [
        datetime(2026, 7, 4, 3, 30, tzinfo=UTC),  # 23:30 on 3 July in New York
        datetime(2026, 7, 6, 3, 30, tzinfo=UTC),  # 4 July's 23:30 (5 July in UTC) skipped
    ]


def test_excluded_fires_are_not_slots_so_never_missed() -> None:
    """A daemon down over an excluded day misses nothing on it (the slot never existed)."""
    job = _job_with(CronSchedule("0 9 * * *", get_zone("UTC")), {date(2026, 12, 25)})
    plan = plan_slots(
        job, datetime(2026, 12, 24, 10, tzinfo=UTC), datetime(2026, 12, 25, 23, tzinfo=UTC)
    )
    assert plan.run == ()
    assert plan.missed_count == 0
    assert plan.next_due == datetime(2026, 12, 26, 9, tzinfo=UTC)


def _job_with(inner: Schedule, days: set[date]) -> JobConfig:
    return JobConfig(
        name="j",
        schedule=ExcludedSchedule(inner, dict.fromkeys(days, "exclude")),
        timezone=inner.zone.name,
        command="true",
    )


HEADER = '[defaults]\ntimezone = "Europe/Berlin"\n'


def _load_errors(tmp_path: Path, body: str) -> list[str]:
    path = tmp_path / "schedules.toml"
    path.write_text(HEADER + textwrap.dedent(body))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return [issue.format().replace(str(path), "FILE") for issue in info.value.issues]


def test_config_merges_list_and_file_and_preview_explains(tmp_path: Path) -> None:
    (tmp_path / "holidays.txt").write_text(
        "# public holidays\n2026-12-25  # Christmas\n\n2026-12-26\n"
    )
    path = tmp_path / "schedules.toml"
    path.write_text(
        HEADER
        + 'exclude_file = "holidays.txt"\n'
        + '[jobs.report]\ncron = "0 9 * * *"\nexclude = ["2026-12-24", 2026-12-31]\n'
        + 'command = "true"\n'
        + '[jobs.plain]\nevery = "1d"\nexclude_file = "holidays.txt"\ncommand = "true"\n'
    )
    config = load_config(path)
    report = config.jobs["report"]
    rows = upcoming(report, datetime(2026, 12, 23, 12, tzinfo=UTC), 2)
    assert [r.local.date() for r in rows] == [date(2026, 12, 27), date(2026, 12, 28)]
    assert rows[0].note is not None
    assert "2026-12-25 09:00 (excluded by holidays.txt:2)" in rows[0].note
    assert "2026-12-24 09:00 (excluded by exclude)" in rows[0].note
    # The dates are part of the schedule's identity; where they were written is not.
    assert report.fingerprint != config.jobs["plain"].fingerprint
    (tmp_path / "holidays.txt").write_text("2026-12-26\n2026-12-25\n")
    assert load_config(path).jobs["report"].fingerprint == report.fingerprint


def test_check_locates_every_mistake(tmp_path: Path) -> None:
    (tmp_path / "bad.txt").write_text("2026-12-25\n\n2026-13-01 # typo\n")
    found = _load_errors(
        tmp_path,
        """
        [jobs.a]
        cron = "0 9 * * *"
        exclude = ["2026-12-25", "tomorrow"]
        command = "true"
        [jobs.b]
        every = "1h"
        exclude_file = "bad.txt"
        command = "true"
        [jobs.c]
        every = "1h"
        exclude_file = "missing.txt"
        exclude = "2026-12-25"
        command = "true"
        [jobs.d]
        every = "1h"
        exclude = [2026-12-25T10:00:00]
        command = "true"
        """,
    )
    assert found[0].startswith("FILE: jobs.a.exclude: item 2: expected an ISO date like 2026-12-25")
    assert found[1].startswith(
        "FILE: jobs.b.exclude_file: bad.txt:3: expected an ISO date like 2026-12-25 "
        "(got '2026-13-01')"
    )
    assert found[2].startswith("FILE: jobs.c.exclude: expected an array of dates")
    assert found[3].startswith("FILE: jobs.c.exclude_file: no such file: ")
    assert "missing.txt" in found[3]
    assert found[4].startswith("FILE: jobs.d.exclude: item 1: expected a date like 2026-12-25")
    assert len(found) == 5
