"""``jitter``: delays against a brute-force reference, their spread, their stability, and the
nominal slot a run sees."""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import datetime, timedelta
from itertools import islice, pairwise
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chronod.config import JobConfig, load_config
from chronod.errors import ConfigError
from chronod.plan import plan_slots
from chronod.schedules import IntervalSchedule, Schedule
from chronod.schedules.cron import CronSchedule
from chronod.schedules.exclude import ExcludedSchedule
from chronod.schedules.jitter import JitteredSchedule
from chronod.store.base import Outcome, Store
from chronod.tz import UTC, get_zone
from chronod.worker import ConfigSource, Consumer, ConsumerSettings
from tests.test_exclude import inner_schedules
from tests.test_ops import job_sync, slot_item

EXPRESSIONS = ["0 * * * *", "30 2 * * *", "*/5 9-17 * * 1-5", "0 0 1 * *", "* * * * *"]
START = datetime(2026, 1, 1, tzinfo=UTC)
SECOND = timedelta(seconds=1)


names = st.from_regex(r"[a-z][a-z0-9_.-]{0,20}", fullmatch=True)
jitters = st.integers(1, 3600).map(lambda s: timedelta(seconds=s))
offsets = st.integers(0, 365 * 86400).map(
    lambda s: START + timedelta(seconds=s, microseconds=s % 7)
)


def reference(schedule: JitteredSchedule, after: datetime, count: int) -> list[datetime]:
    """Every nominal fire that could be delayed past ``after`` (from ``after - jitter`` on),
    delayed by the rule, the ``count`` earliest after ``after``: what a host that has been walking
    the schedule all along would see. Assumes nothing about the order of delayed fires: it stops
    only at a nominal fire later than the ``count`` earliest found (a delay is never negative)."""
    inner = schedule.inner
    kept: list[datetime] = []
    for fire in inner.fires(after - schedule.jitter - SECOND):
        if len(kept) >= count and fire.at > sorted(kept)[count - 1]:
            break
        delayed = fire.at + schedule.delay(fire.at, inner.next_after(fire.at))
        if delayed > after:
            kept.append(delayed)
    return sorted(kept)[:count]


@settings(max_examples=200, deadline=None)
@given(
    inner=inner_schedules(EXPRESSIONS, (1, 2 * 86400)), name=names, jitter=jitters, after=offsets
)
def test_matches_the_reference_from_any_instant(
    inner: Schedule, name: str, jitter: timedelta, after: datetime
) -> None:
    """A host (re)starting at any instant computes the same delayed fires as one that walked the
    schedule all along; each is in [nominal, nominal + jitter), before the next nominal fire, and
    maps back to its nominal instant."""
    schedule = JitteredSchedule(inner, name, jitter)
    fires = [f.at for f in islice(schedule.fires(after), 5)]
    assert fires == reference(schedule, after, 5)
    for at in fires:
        nominal = schedule.nominal(at)
        assert nominal <= at < nominal + jitter
        following = inner.next_after(nominal)
        assert following is None or at < following
        assert (at - nominal) % SECOND == timedelta()
    # Every host agrees: a second object built from the same definition gives the same fires.
    again = JitteredSchedule(inner, name, jitter)
    assert [f.at for f in islice(again.fires(after), 5)] == fires


def test_delays_are_uniform_enough_and_differ_between_jobs() -> None:
    """Over 20,000 hourly slots with jitter 10m, each tenth of [0, 10m) holds 10 % ± 1 %, and two
    jobs on the same schedule are delayed independently."""
    inner = CronSchedule("0 * * * *", get_zone("UTC"))
    a = JitteredSchedule(inner, "report", timedelta(minutes=10))
    b = JitteredSchedule(inner, "export", timedelta(minutes=10))
    hours = [START + timedelta(hours=k) for k in range(20_000)]
    delays_a = [a.delay(h, h + timedelta(hours=1)) // SECOND for h in hours]
    buckets = Counter(d // 60 for d in delays_a)
    assert sorted(buckets) == list(range(10))
    assert all(1800 <= n <= 2200 for n in buckets.values()), buckets
    delays_b = [b.delay(h, h + timedelta(hours=1)) // SECOND for h in hours]
    same = sum(x == y for x, y in zip(delays_a, delays_b, strict=True))
    assert same < 200  # 1 in 600 expected by chance: ~33
    # The schedule itself fires at those delays (00:00 too: its fire is after START).
    assert [f.at for f in islice(a.fires(START), 100)] == [
        h + SECOND * d for h, d in zip(hours[:100], delays_a[:100], strict=True)
    ]


def test_jitter_wider_than_the_gap_stays_before_the_next_slot() -> None:
    inner = IntervalSchedule(timedelta(minutes=1), get_zone("UTC"))
    schedule = JitteredSchedule(inner, "fast", timedelta(hours=1))
    fires = [f.at for f in islice(schedule.fires(START), 500)]
    assert all(b > a for a, b in pairwise(fires))
    assert all(timedelta() <= at - schedule.nominal(at) < timedelta(minutes=1) for at in fires)


def test_excluded_days_and_next_notes_pass_through() -> None:
    berlin = get_zone("Europe/Berlin")
    inner = ExcludedSchedule(
        CronSchedule("0 9 * * *", berlin), {datetime(2026, 12, 25).date(): "exclude"}
    )
    schedule = JitteredSchedule(inner, "report", timedelta(minutes=10))
    fire = schedule.next_fire(datetime(2026, 12, 24, 12, tzinfo=UTC))
    assert fire is not None
    assert schedule.nominal(fire.at) == datetime(2026, 12, 26, 8, tzinfo=UTC)
    assert fire.note is not None
    assert fire.note.startswith(
        "skipped 2026-12-25 09:00 (excluded by exclude); nominal 09:00:00 CET, +"
    )


HEADER = '[defaults]\ntimezone = "Europe/Berlin"\n'


def test_stable_across_edits_of_unrelated_fields_and_reset_by_schedule_edits(
    tmp_path: Path,
) -> None:
    path = tmp_path / "schedules.toml"

    def load(body: str) -> list[datetime]:
        path.write_text(HEADER + "[jobs.report]\n" + body)
        job = load_config(path).jobs["report"]
        return [f.at for f in islice(job.schedule.fires(START), 50)]

    base = load('cron = "0 * * * *"\njitter = "10m"\ncommand = "true"\n')
    edited = load('cron = "0 * * * *"\njitter = "10m"\ncommand = "other"\ntimeout = "5m"\n')
    assert edited == base
    assert load('cron = "0 * * * *"\njitter = "20m"\ncommand = "true"\n') != base


def test_catchup_and_grace_judge_the_delayed_instant() -> None:
    """A slot is late from its delayed instant: a leader back 30 s after the delayed fire, with
    grace 60 s, still runs it, although the nominal instant is minutes ago."""
    config_job = _job(grace=timedelta(seconds=60))
    fire = config_job.schedule.next_fire(START)
    assert fire is not None
    nominal = config_job.schedule.nominal(fire.at)
    assert fire.at - nominal > timedelta(minutes=1)  # this job's first delay (fixed by its name)
    plan = plan_slots(config_job, START, fire.at + timedelta(seconds=30))
    assert plan.run == (fire.at,)
    plan = plan_slots(config_job, START, fire.at - SECOND)
    assert plan.run == ()  # not due before its delayed instant
    assert plan.next_due == fire.at


def _job(**values: Any) -> JobConfig:
    inner = CronSchedule("0 * * * *", get_zone("UTC"))
    return JobConfig(
        name="report",
        schedule=JitteredSchedule(inner, "report", timedelta(minutes=10)),
        timezone="UTC",
        command="true",
        **values,
    )


def test_a_run_sees_its_nominal_slot(store: Store, tmp_path: Path) -> None:
    """CHRONOD_SLOT is the nominal instant; the run id names the delayed fire (the slot the
    store guards)."""
    marker = tmp_path / "env"
    path = tmp_path / "schedules.toml"
    path.write_text(
        '[defaults]\ntimezone = "UTC"\n[jobs.report]\ncron = "0 * * * *"\njitter = "10m"\n'
        f'command = "echo $CHRONOD_SLOT $CHRONOD_RUN_ID > {marker}"\n'
    )
    config = load_config(path)
    job = config.jobs["report"]
    now = store.now()
    fire = job.schedule.next_fire(now - timedelta(hours=2))
    assert fire is not None
    lease = store.acquire_lease("node-a", uuid.uuid4().hex, timedelta(seconds=60))
    assert lease is not None
    store.sync_jobs(lease, [job_sync(job, fire.at - SECOND)], fire.at - SECOND)
    store.dispatch(lease, [slot_item(job, fire.at)])
    settings = ConsumerSettings(queues=("default",), claim_wait=0.2)
    consumer = Consumer(store, ConfigSource(config), settings)
    try:
        claim = consumer.step()
    finally:
        consumer.close()
    assert claim is not None
    slot, run_id = marker.read_text().split()
    nominal = job.schedule.nominal(fire.at)
    assert nominal < fire.at
    assert slot == nominal.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert run_id == f"report@{fire.at:%Y-%m-%dT%H:%M:%SZ}"
    assert store.history("report", 1)[0].state is Outcome.SUCCEEDED


def test_check_locates_a_bad_jitter(tmp_path: Path) -> None:
    path = tmp_path / "schedules.toml"
    path.write_text(
        '[defaults]\ntimezone = "UTC"\njitter = 5\n'
        '[jobs.a]\ncron = "0 * * * *"\njitter = "0s"\ncommand = "true"\n'
    )
    with pytest.raises(ConfigError) as info:
        load_config(path)
    found = [i.format().replace(str(path), "FILE") for i in info.value.issues]
    assert found == [
        'FILE: defaults.jitter: expected a duration string like "90s", "15m", "1h30m" or "1d" '
        "(got 5)",
        'FILE: jobs.a.jitter: must be at least 1s (got "0s")',
    ]
