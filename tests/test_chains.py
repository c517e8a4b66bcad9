"""``after``/``when`` (chains, issue 18) in the config, in ``chronod next``, in status, and the
chained run ids. The store's side is in tests/test_store_contract.py ("chains"), the processes'
in tests/test_process_chains.py."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest

from chronod import ops
from chronod.config import load_config
from chronod.config.chains import chain_links
from chronod.preview import job_lines, overview_lines, upcoming
from chronod.schedules.after import AfterSchedule
from chronod.store.base import ChainLink, JobState, chained_run_id, upstream_of
from chronod.tz import UTC
from tests.test_config import errors, write

CHAIN = """
[jobs.extract]
cron = "0 3 * * *"
command = "bin/extract"

[jobs.load]
after = "extract"
command = "bin/load"
queue = "etl"
retries = 2

[jobs.report]
after = ["load", "extract"]
when = "finished"
overlap = "queue"
command = "bin/report"
"""


def test_after_jobs_load_with_their_links(tmp_path: Path) -> None:
    # [defaults] keys that shape slots do not apply to a job without slots of its own.
    header = '[defaults]\ntimezone = "UTC"\njitter = "5m"\ngrace = "1h"\nexclude = ["2027-01-01"]\n'
    config = load_config(write(tmp_path, CHAIN, header))
    load, report = config.jobs["load"], config.jobs["report"]
    assert isinstance(load.schedule, AfterSchedule)
    assert (load.kind, load.schedule.upstreams, load.schedule.when) == (
        "after",
        ("extract",),
        "succeeded",
    )
    assert load.schedule.describe() == "after extract (succeeded)"
    assert report.schedule.describe() == "after load, extract (finished)"
    assert load.schedule.next_fire(datetime(2027, 1, 1, tzinfo=UTC)) is None
    # The upstreams and `when` are the schedule's identity; the command is not.
    assert load.fingerprint != report.fingerprint
    links = chain_links(config.jobs)

    def linked(job: str, upstream: str) -> ChainLink:
        found = config.jobs[job]
        assert isinstance(found.schedule, AfterSchedule)
        return ChainLink(
            job=job,
            upstream=upstream,
            when=found.schedule.when,
            queue=found.queue,
            digest=found.digest,
            overlap=found.overlap,
            max_attempts=found.max_attempts,
        )

    assert links == [
        linked("load", "extract"),
        linked("report", "load"),
        linked("report", "extract"),
    ]
    assert (links[0].queue, links[0].max_attempts, links[2].overlap) == ("etl", 3, "queue")


def test_cycles_are_named(tmp_path: Path) -> None:
    found = errors(
        tmp_path,
        """
        [jobs.a]
        after = "b"
        command = "true"
        [jobs.b]
        after = ["c"]
        command = "true"
        [jobs.c]
        after = ["x", "a"]
        command = "true"
        [jobs.x]
        every = "1m"
        command = "true"
        [jobs.self]
        after = "self"
        command = "true"
        """,
    )
    assert found == [
        "FILE: jobs.a.after: a cycle: a → b → c → a",
        "FILE: jobs.self.after: a cycle: self → self",
    ]


def test_unknown_upstreams_are_located(tmp_path: Path) -> None:
    found = errors(
        tmp_path,
        """
        [jobs.extract]
        every = "1h"
        command = "true"
        [jobs.load]
        after = ["extract", "extrct", "nothing-like-it"]
        command = "true"
        """,
    )
    assert found == [
        "FILE: jobs.load.after: no job named 'extrct'; did you mean 'extract'?",
        "FILE: jobs.load.after: no job named 'nothing-like-it'",
    ]


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            'after = "x"\ncron = "0 * * * *"',
            "FILE: jobs.a: needs exactly one schedule: 'every', 'cron', 'solar', 'at' or 'after' "
            "(found cron and after)",
        ),
        (
            'after = "x"\nat = ["2027-01-01T09:00"]',
            "FILE: jobs.a: needs exactly one schedule: 'every', 'cron', 'solar', 'at' or 'after' "
            "(found at and after)",
        ),
        (
            'after = "x"\njitter = "5m"',
            "FILE: jobs.a.jitter: does not apply to a job with "
            "'after' (it has no slots of its own)",
        ),
        (
            'after = "x"\ngrace = "5m"',
            "FILE: jobs.a.grace: does not apply to a job with 'after' (it has no slots of its own)",
        ),
        (
            'after = "x"\ncatchup = "all"',
            "FILE: jobs.a.catchup: does not apply to a job with "
            "'after' (it has no slots of its own)",
        ),
        (
            'after = "x"\nstart = "2027-01-01T00:00"',
            "FILE: jobs.a.start: does not apply to a job with 'after' (it has no slots of its own)",
        ),
        (
            'after = "x"\nexclude = ["2027-01-01"]',
            "FILE: jobs.a.exclude: does not apply to a "
            "job with 'after' (it has no slots of its own)",
        ),
        (
            'after = "x"\nanchor = "2027-01-01T00:00"',
            "FILE: jobs.a.anchor: only applies to every schedules, this job uses 'after'",
        ),
        (
            'every = "1m"\nwhen = "failed"',
            "FILE: jobs.a.when: only applies to jobs with 'after', this job uses 'every'",
        ),
        (
            'after = "x"\nwhen = "sometimes"',
            "FILE: jobs.a.when: expected one of 'succeeded', "
            "'failed', 'finished' (got \"sometimes\")",
        ),
        (
            "after = []",
            "FILE: jobs.a.after: expected a job name or an array of 1 to 100 job "
            'names like ["extract", "fetch"] (got [])',
        ),
        ('after = ["x", "x"]', 'FILE: jobs.a.after: names a job twice (got ["x", "x"])'),
        (
            'after = ["x", 3]',
            "FILE: jobs.a.after: item 2: expected a job name (letters, "
            """digits, '_', '.', '-') (got ["x", 3])""",
        ),
    ],
)
def test_mistakes_are_located(tmp_path: Path, body: str, expected: str) -> None:
    text = f'[jobs.x]\nevery = "1m"\ncommand = "true"\n[jobs.a]\ncommand = "true"\n{body}\n'
    assert errors(tmp_path, text) == [expected]


def test_next_explains_that_a_job_follows_another(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, CHAIN))
    start = datetime(2027, 1, 1, tzinfo=UTC)
    report = config.jobs["report"]
    assert upcoming(report, start, 5) == []
    assert job_lines(report, start, []) == [
        "report: after load, extract (finished) (Europe/Berlin)",
        "  follows load, extract: runs once after each finished run "
        "(CHRONOD_UPSTREAM_RUN_ID names it), no schedule of its own",
    ]
    rows = overview_lines([(config.jobs["load"], start, [])])
    assert rows[1].split() == [
        "load",
        "-",
        "-",
        "follows",
        "extract",
        "after",
        "extract",
        "(succeeded)",
    ]


def test_status_never_shows_an_after_job_finished(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, CHAIN))
    load = config.jobs["load"]
    state = JobState(
        name="load",
        fingerprint=load.fingerprint,
        watermark=datetime(2027, 1, 1, tzinfo=UTC),
        last_slot=None,
        next_due=None,
    )
    status = ops.JobStatus(name="load", config=load, state=state, next_fire=None)
    assert not status.finished
    shape = ops.job_json(status)
    assert (shape["after"], shape["when"], shape["schedule"]) == (
        ["extract"],
        "succeeded",
        "after extract (succeeded)",
    )


@pytest.mark.parametrize(
    ("upstream_run_id", "upstream", "chained"),
    [
        ("extract@2027-01-01T03:00:00Z", "extract", "load@2027-01-01T03:00:00Z~after~extract"),
        (
            "extract@2027-01-01T03:00:00.123456Z~manual",
            "extract",
            "load@2027-01-01T03:00:00.123456Z~manual~after~extract",
        ),
        (  # a chain of chains: report after load after extract
            "load@2027-01-01T03:00:00Z~after~extract",
            "load",
            "report@2027-01-01T03:00:00Z~after~extract~after~load",
        ),
    ],
)
def test_chained_run_ids_name_their_upstream_run(
    upstream_run_id: str, upstream: str, chained: str
) -> None:
    job = chained.split("@", maxsplit=1)[0]
    assert chained_run_id(job, upstream_run_id, upstream) == chained
    assert upstream_of(chained) == upstream_run_id
    assert upstream_of(upstream_run_id.replace("~after~extract", "")) is None


def test_upstream_of_plain_run_ids_is_none() -> None:
    for run_id in ("a@2027-01-01T00:00:00Z", "a@2027-01-01T00:00:00Z~manual", "odd", "~after~x"):
        assert upstream_of(run_id) is None


def test_the_readme_chain_example_loads(tmp_path: Path) -> None:
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    section = readme[readme.index("**Chains.**") :]
    block = section[
        section.index("```toml\n") + 8 : section.index("```\n", section.index("```toml"))
    ]
    config = load_config(write(tmp_path, block, '[defaults]\ntimezone = "UTC"\n'))
    assert [(link.job, link.upstream, link.when) for link in chain_links(config.jobs)] == [
        ("load", "extract", "succeeded"),
        ("page-oncall", "extract", "failed"),
        ("page-oncall", "load", "failed"),
    ]
