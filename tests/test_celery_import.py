"""``chronod import celery`` (issue 15) on :mod:`tests.celery_beat_app`, a sample app with every
kind of beat entry: the printed file passes ``chronod check``, says what changes, refuses what has
no chronod form, and ``chronod next`` on it shows Celery's own upcoming instants
(``remaining_estimate``) for the entries that convert exactly — solar ones within a minute."""

from __future__ import annotations

import inspect
import json
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from click.testing import CliRunner

from chronod.celery.crontab import Untranslatable, translate
from chronod.cli import cli
from chronod.config import load_config

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised only on 3.10
    import tomli as tomllib

celery = pytest.importorskip("celery", reason="the celery extra is not installed")
APP = "tests.celery_beat_app:app"
BERLIN = ZoneInfo("Europe/Berlin")
AFTER = datetime(2027, 5, 3, 0, 0, tzinfo=BERLIN)
# Compared up to the autumn DST change: across it Celery's own estimate is off by the change of
# offset (from 2027-10-04 03:00 CEST it gives the next first Monday as 04:00 CET, an hour late:
# celery#1604), which chronod's cronie rule does not reproduce.
DST_CHANGE = datetime(2027, 10, 31, 1, 0, tzinfo=ZoneInfo("UTC"))
COUNT = 8


def runner() -> CliRunner:
    """A runner that keeps stderr apart: click 8.1 mixes it in unless told (``mix_stderr``);
    click 8.2 removed the option and always keeps it apart. Both are in chronod's range."""
    apart: dict[str, Any] = {}
    if "mix_stderr" in inspect.signature(CliRunner).parameters:
        apart["mix_stderr"] = False
    return CliRunner(**apart)


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    result = runner().invoke(cli, ["import", "celery", APP])
    assert result.exit_code == 0, result.output
    path = tmp_path_factory.mktemp("import") / "schedules.toml"
    path.write_text(result.stdout)
    assert "3 beat entries refused" in result.stderr
    return path


def test_the_converted_file_passes_check(converted: Path) -> None:
    result = CliRunner().invoke(cli, ["--config", str(converted), "check"])
    assert result.exit_code == 0, result.output
    assert "OK, 10 jobs (4 cron, 3 interval, 3 solar)" in result.output


def test_every_entry_is_converted_or_refused_with_its_reason(converted: Path) -> None:
    text = converted.read_text()
    data = tomllib.loads(text)
    assert data["chronod"]["celery"] == {"app": APP}
    assert data["defaults"] == {"timezone": "Europe/Berlin"}
    jobs = data["jobs"]
    assert jobs["digest"] == {
        "cron": "30 17 * * 5",
        "celery": "reports.tasks.send_digest",
        "args": [7],
        "kwargs": {"format": "html"},
        "queue": "reports",
        "grace": "5m",
    }
    assert jobs["every-quarter-hour"]["cron"] == "*/15 * * * *"
    assert jobs["month-start"]["cron"] == "0 6,18 1,15 1-6 *"
    assert jobs["first-monday"]["cron"] == "0 3 * * 1#1"  # Celery's AND, written exactly
    assert [jobs[n]["every"] for n in ("heartbeat", "number", "schedule-object")] == [
        "1m30s",
        "30s",
        "1h",
    ]
    assert jobs["nautical-dawn"] == {
        "solar": "dawn",
        "latitude": 52.52,
        "longitude": 13.405,
        "depression": "nautical",
        "celery": "home.tasks.birds",
    }
    assert jobs["noon"]["solar"] == "noon"
    assert set(jobs) == {
        "digest",
        "every-quarter-hour",
        "month-start",
        "first-monday",
        "heartbeat",
        "number",
        "schedule-object",
        "lights-on",
        "nautical-dawn",
        "noon",
    }
    assert '\n# Celery beat entry "every quarter hour"\n[jobs.every-quarter-hour]\n' in text
    # Comments where the meaning changes, and the refusals with their reasons (lines rejoined).
    joined = " ".join(text.replace("#", " ").split())
    assert "options chronod does not carry (set them in the app's routing): priority=5" in joined
    assert "Celery counts this interval from the task's last run" in joined
    refused = joined[joined.index("REFUSED beat entry") :]
    assert "day-of-month 13 and day-of-week 5" in refused
    assert "0.5 s: chronod's shortest is 1s" in refused
    assert "cannot be written in TOML" in refused


def chronod_next(config: Path, job: str, count: int) -> list[datetime]:
    args = ["--config", str(config), "next", "--json", "--job", job, "--count", str(count)]
    result = CliRunner().invoke(cli, [*args, "--after", AFTER.isoformat()])
    assert result.exit_code == 0, result.output
    return [
        datetime.fromisoformat(f["utc"].replace("Z", "+00:00")) for f in json.loads(result.stdout)
    ]


def celery_next(entry: str, count: int, *, step: timedelta = timedelta()) -> list[datetime]:
    """Celery's own next instants: remaining_estimate from each previous one, with its clock
    fixed at AFTER (it answers "next - now")."""
    from tests.celery_beat_app import app

    schedule = app.conf.beat_schedule[entry]["schedule"]
    schedule.app = app
    schedule.nowfun = lambda: AFTER
    found: list[datetime] = []
    last = AFTER
    for _ in range(count):
        nxt = AFTER + schedule.remaining_estimate(last)
        found.append(nxt.astimezone(ZoneInfo("UTC")))
        last = nxt + step
    return found


@pytest.mark.parametrize(
    ("job", "entry"),
    [
        ("digest", "digest"),
        ("every-quarter-hour", "every quarter hour"),
        ("month-start", "month start"),
        ("first-monday", "first-monday"),
    ],
)
def test_next_agrees_with_celery_for_exact_conversions(
    converted: Path, job: str, entry: str
) -> None:
    ours = [at for at in chronod_next(converted, job, COUNT) if at < DST_CHANGE]
    theirs = [at for at in celery_next(entry, COUNT) if at < DST_CHANGE]
    assert len(ours) >= 5
    assert ours == theirs


@pytest.mark.parametrize(
    ("job", "entry"),
    [("lights-on", "lights-on"), ("nautical-dawn", "nautical-dawn"), ("noon", "noon")],
)
def test_next_agrees_with_celery_solar_within_a_minute(
    converted: Path, job: str, entry: str
) -> None:
    ours = chronod_next(converted, job, 5)
    theirs = celery_next(entry, 5, step=timedelta(minutes=5))
    assert all(abs(a - b) < timedelta(seconds=60) for a, b in zip(ours, theirs, strict=True)), (
        ours,
        theirs,
    )


def test_day_fields_follow_celerys_and() -> None:
    every_day = range(1, 32)
    assert translate([0], [9], range(7), [1, 15], range(1, 13)).expression == "0 9 1,15 * *"
    assert translate([0], [9], [1, 2, 3, 4, 5], every_day, range(1, 13)).expression == "0 9 * * 1-5"
    both = translate([0], [9], [1, 3], range(1, 15), [1, 4, 7, 10])
    assert both.expression == "0 9 * */3 1#1,1#2,3#1,3#2"
    assert both.note is not None
    assert translate([5], [4], [0], range(29, 32), range(1, 13)).expression == "5 4 * * 0#5"
    with pytest.raises(Untranslatable, match="day-of-month 10-16 and day-of-week 2"):
        translate([0], [9], [2], range(10, 17), range(1, 13))


def test_import_explains_an_app_it_cannot_load() -> None:
    result = CliRunner().invoke(cli, ["import", "celery", "tests.no_such_module:app"])
    assert result.exit_code == 2
    assert "cannot import the Celery app tests.no_such_module:app" in result.output


def test_converted_jobs_load_as_celery_jobs(converted: Path) -> None:
    config = load_config(converted)
    job: Any = config.jobs["digest"]
    assert (job.celery, job.celery_queue, job.grace) == (
        "reports.tasks.send_digest",
        "reports",
        timedelta(minutes=5),
    )
