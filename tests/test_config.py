"""Config loading: one test per error class, asserting the located message."""

from __future__ import annotations

import sys
import textwrap
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from chronod.config import load_config
from chronod.config import loader as config_module
from chronod.errors import ConfigError
from chronod.tz import UTC

HEADER = '[defaults]\ntimezone = "Europe/Berlin"\n'


def write(tmp_path: Path, body: str, header: str = HEADER) -> Path:
    path = tmp_path / "schedules.toml"
    path.write_text(header + textwrap.dedent(body))
    return path


def errors(tmp_path: Path, body: str, header: str = HEADER) -> list[str]:
    path = write(tmp_path, body, header)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return [issue.format().replace(str(path), "FILE") for issue in info.value.issues]


def test_example_file_loads() -> None:
    config = load_config(Path(__file__).parent.parent / "schedules.toml")
    assert {"digest", "month-end-report", "lights-on", "heartbeat"} <= set(config.jobs)
    digest = config.jobs["digest"]
    assert digest.kind == "cron"
    assert digest.timezone == "Europe/Berlin"
    assert digest.retries == 2
    assert digest.retry_delay == timedelta(minutes=1)
    assert config.jobs["lights-on"].kind == "solar"
    assert config.jobs["heartbeat"].kind == "interval"


def test_defaults_and_job_values(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        [chronod]
        store = "redis://localhost:6379/0"
        lease = "15s"
        workers = 3
        history = 50

        [jobs.a]
        every = "1h30m"
        call = "mypkg.tasks:run"
        args = [1, "two"]
        kwargs = { flag = true }
        queue = "io"
        overlap = "queue"
        catchup = "all"
        catchup_limit = 5
        env = { A = "1" }
        """,
    )
    config = load_config(path)
    assert config.daemon.store == "redis://localhost:6379/0"
    assert config.daemon.lease == timedelta(seconds=15)
    assert config.daemon.workers == 3
    assert config.daemon.history == 50
    job = config.jobs["a"]
    assert job.call == "mypkg.tasks:run"
    assert job.args == (1, "two")
    assert dict(job.kwargs) == {"flag": True}
    assert (job.queue, job.overlap, job.catchup, job.catchup_limit) == ("io", "queue", "all", 5)
    assert dict(job.env) == {"A": "1"}
    assert job.timeout == timedelta(hours=1)  # docs/design.md §4 defaults
    assert job.kill_grace == timedelta(seconds=10)
    assert job.grace == timedelta(seconds=60)


def test_syntax_error_is_located(tmp_path: Path) -> None:
    found = errors(tmp_path, '[jobs.a]\nevery = "1m"\ncommand = "x\n')
    assert len(found) == 1
    assert found[0].startswith("FILE:5:")  # two header lines + the third job line
    # Not tomllib's "Illegal character '\\n'" at the end of the line: the quote that opens it.
    assert found[0] == (
        'FILE:5:11: string not closed: a "..." string must end on the line where it starts '
        '(add the closing ", or use """...""" for text on several lines)'
    )


def test_missing_key_value_syntax(tmp_path: Path) -> None:
    found = errors(tmp_path, "[jobs.a]\nevery\n")
    assert found[0].startswith("FILE:4:")


def test_unknown_key_did_you_mean(tmp_path: Path) -> None:
    found = errors(tmp_path, '[jobs.a]\nevery = "1m"\ncomand = "true"\n')
    assert "FILE: jobs.a.comand: unknown key; did you mean 'command'?" in found


def test_unknown_section(tmp_path: Path) -> None:
    found = errors(tmp_path, '[job.a]\nevery = "1m"\ncommand = "true"\n')
    assert any(e.startswith("FILE: job: unknown key; did you mean 'jobs'?") for e in found)


def test_zero_schedule_kinds(tmp_path: Path) -> None:
    found = errors(tmp_path, '[jobs.a]\ncommand = "true"\n')
    assert found == [
        "FILE: jobs.a: needs exactly one schedule: 'every', 'cron', 'solar', 'at' or 'after' "
        "(found none)"
    ]


def test_two_schedule_kinds(tmp_path: Path) -> None:
    found = errors(tmp_path, '[jobs.a]\nevery = "1m"\ncron = "* * * * *"\ncommand = "true"\n')
    assert found == [
        "FILE: jobs.a: needs exactly one schedule: 'every', 'cron', 'solar', 'at' or 'after' "
        "(found every and cron)"
    ]


def test_command_and_call_exclusive(tmp_path: Path) -> None:
    assert errors(tmp_path, '[jobs.a]\nevery = "1m"\n') == [
        "FILE: jobs.a: needs exactly one of 'command', 'call' or 'celery' (found none)"
    ]
    both = errors(tmp_path, '[jobs.a]\nevery = "1m"\ncommand = "x"\ncall = "m:f"\n')
    assert both == [
        "FILE: jobs.a: needs exactly one of 'command', 'call' or 'celery' (found command and call)"
    ]


@pytest.mark.parametrize("value", ['"90"', '"1h1h"', '"soon"', "90", '"-5m"'])
def test_bad_duration(tmp_path: Path, value: str) -> None:
    found = errors(tmp_path, f'[jobs.a]\nevery = "1m"\ncommand = "x"\ntimeout = {value}\n')
    assert len(found) == 1
    assert found[0].startswith("FILE: jobs.a.timeout: ")
    assert found[0].endswith(f"(got {value.replace(chr(39), chr(34))})")


@pytest.mark.parametrize("value", ['"0s"', '"50ms"'])
def test_grace_below_100ms_is_refused(tmp_path: Path, value: str) -> None:
    # Every dispatch is a few milliseconds late: such a grace would mark every slot missed.
    found = errors(tmp_path, f'[jobs.a]\nevery = "1m"\ncommand = "x"\ngrace = {value}\n')
    assert found == [f"FILE: jobs.a.grace: must be at least 0.1s (got {value})"]


def test_unknown_zone_did_you_mean(tmp_path: Path) -> None:
    found = errors(tmp_path, '[jobs.a]\nevery = "1m"\ncommand = "x"\ntimezone = "Europe/Berln"\n')
    assert found == [
        "FILE: jobs.a.timezone: unknown time zone; did you mean 'Europe/Berlin'? "
        '(got "Europe/Berln")'
    ]


def test_missing_zone_is_an_error(tmp_path: Path) -> None:
    found = errors(tmp_path, '[jobs.a]\nevery = "1m"\ncommand = "x"\n', header="")
    assert found == [
        "FILE: jobs.a.timezone: required: set 'timezone' on the job or in [defaults] "
        "(the server's local time is never used)"
    ]


def test_bad_default_reported_once(tmp_path: Path) -> None:
    body = '[jobs.a]\nevery = "1m"\ncommand = "x"\n[jobs.b]\nevery = "1m"\ncommand = "x"\n'
    found = errors(tmp_path, body, header='[defaults]\ntimezone = "UTC"\nretries = -1\n')
    assert found == ["FILE: defaults.retries: expected a whole number from 0 to 100 (got -1)"]


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("latitude", "91", "expected a number from -90 to 90 (got 91)"),
        ("longitude", "-181.5", "expected a number from -180 to 180 (got -181.5)"),
    ],
)
def test_coordinates_out_of_range(tmp_path: Path, key: str, value: str, message: str) -> None:
    coords = {"latitude": "52.5", "longitude": "13.4"}
    coords[key] = value
    body = (
        f'[jobs.s]\nsolar = "sunset"\nlatitude = {coords["latitude"]}\n'
        f'longitude = {coords["longitude"]}\ncommand = "x"\n'
    )
    assert errors(tmp_path, body) == [f"FILE: jobs.s.{key}: {message}"]


def test_solar_needs_coordinates(tmp_path: Path) -> None:
    found = errors(tmp_path, '[jobs.s]\nsolar = "sunset"\ncommand = "x"\n')
    assert (
        "FILE: jobs.s.latitude: required for solar schedules (on the job or in [defaults])" in found
    )
    assert (
        "FILE: jobs.s.longitude: required for solar schedules (on the job or in [defaults])"
        in found
    )


def test_solar_keys_on_other_kinds(tmp_path: Path) -> None:
    found = errors(tmp_path, '[jobs.a]\nevery = "1m"\noffset = "-5m"\ncommand = "x"\n')
    assert found == ["FILE: jobs.a.offset: only applies to solar schedules, this job uses 'every'"]


@pytest.mark.parametrize(
    "expression",
    ["5-5 * * * *", "0 0 * * 0,L0", "0 0 1 * L0", "0 0 30 2 *", "61 * * * *", "* * * *"],
)
def test_cron_traps_are_rejected(tmp_path: Path, expression: str) -> None:
    found = errors(tmp_path, f'[jobs.c]\ncron = "{expression}"\ncommand = "x"\n')
    assert len(found) == 1
    assert found[0].startswith("FILE: jobs.c.cron: ")
    assert found[0].endswith(f'(got "{expression}")')


def test_non_json_args(tmp_path: Path) -> None:
    found = errors(tmp_path, '[jobs.a]\nevery = "1m"\ncall = "m:f"\nargs = [1979-05-27]\n')
    assert found == [
        'FILE: jobs.a.args: must be JSON-serializable (no dates, times or NaN) (got ["1979-05-27"])'
    ]


def test_args_without_call(tmp_path: Path) -> None:
    found = errors(tmp_path, '[jobs.a]\nevery = "1m"\ncommand = "x"\nargs = [1]\n')
    assert "FILE: jobs.a.args: only applies to 'call' and 'celery' jobs" in found


def test_bad_call_target(tmp_path: Path) -> None:
    found = errors(tmp_path, '[jobs.a]\nevery = "1m"\ncall = "not a target"\n')
    assert found == ["FILE: jobs.a.call: expected 'package.module:function' (got \"not a target\")"]


def test_bad_choice_and_job_name(tmp_path: Path) -> None:
    found = errors(
        tmp_path,
        '[jobs.a]\nevery = "1m"\ncommand = "x"\noverlap = "never"\n'
        '[jobs."bad name"]\nevery = "1m"\ncommand = "x"\n',
    )
    assert "FILE: jobs.a.overlap: expected one of 'skip', 'queue', 'allow' (got \"never\")" in found
    assert any(e.startswith("FILE: jobs.bad name: a job name uses") for e in found)


def test_every_error_in_one_pass(tmp_path: Path) -> None:
    found = errors(
        tmp_path,
        """
        [jobs.a]
        every = "0s"
        command = "x"
        [jobs.b]
        cron = "0 0 30 2 *"
        command = "x"
        retries = "two"
        [jobs.c]
        solar = "moonrise"
        latitude = 1
        longitude = 2
        call = "m:f"
        """,
    )
    wheres = [e.split(": ")[1] for e in found]
    assert wheres == ["jobs.a.every", "jobs.b.cron", "jobs.b.retries", "jobs.c.solar"]


def test_window_and_anchor_in_job_zone(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        [jobs.w]
        every = "1d"
        anchor = "2026-01-01T06:00:00"
        start = 2026-12-01
        end = "2026-12-31T00:00:00Z"
        command = "x"
        """,
    )
    job = load_config(path).jobs["w"]
    canonical = job.schedule.canonical()
    assert canonical["anchor"] == "2026-01-01T05:00:00Z"  # 06:00 in Berlin (CET, +01)
    assert canonical["start"] == "2026-11-30T23:00:00Z"
    fires = [f.at for f in job.schedule.fires(datetime(2026, 1, 1, tzinfo=UTC))]
    assert fires[0] == datetime(2026, 12, 1, 5, 0, tzinfo=UTC)
    assert fires[-1] == datetime(2026, 12, 30, 5, 0, tzinfo=UTC)
    assert len(fires) == 30


def test_end_before_start(tmp_path: Path) -> None:
    found = errors(
        tmp_path,
        '[jobs.w]\nevery = "1d"\nstart = "2027-01-01"\nend = "2026-01-01"\ncommand = "x"\n',
    )
    assert found == ["FILE: jobs.w.end: ends before 'start' (got \"2026-01-01\")"]


def test_fingerprint_ignores_command_digest_ignores_schedule(tmp_path: Path) -> None:
    base = '[jobs.a]\ncron = "0 9 * * *"\ncommand = "echo one"\n'
    first = load_config(write(tmp_path, base)).jobs["a"]
    command_edit = load_config(write(tmp_path, base.replace("one", "two"))).jobs["a"]
    schedule_edit = load_config(write(tmp_path, base.replace("0 9", "0 10"))).jobs["a"]
    assert first.fingerprint == command_edit.fingerprint
    assert first.digest != command_edit.digest
    assert first.fingerprint != schedule_edit.fingerprint
    assert first.digest == schedule_edit.digest


POINT_ELSEWHERE = "(give the schedules file with --config PATH or CHRONOD_CONFIG)"


def test_missing_file_names_the_absolute_path_and_no_fake_location(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as info:
        load_config("missing.toml")
    assert [issue.format() for issue in info.value.issues] == [
        f"{tmp_path / 'missing.toml'}: no such file {POINT_ELSEWHERE}"
    ]


def test_a_directory_is_not_a_schedules_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path)
    assert str(info.value) == f"{tmp_path}: is a directory, not a schedules file {POINT_ELSEWHERE}"


def test_unreadable_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, "")

    def refuse(self: Path, mode: str = "r") -> None:
        raise PermissionError(13, "Permission denied", str(self))

    # Root reads a chmod 000 file anyway, so the refusal is staged.
    monkeypatch.setattr(Path, "open", refuse)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == f"{path}: cannot read it: Permission denied {POINT_ELSEWHERE}"


def test_a_file_over_the_size_limit_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(config_module, "MAX_FILE_BYTES", 100)
    path = write(tmp_path, "# " + "x" * 200 + "\n")
    with pytest.raises(ConfigError, match="larger than 0 MiB"):
        load_config(path)


# -- one load shares what its jobs repeat --------------------------------------------------------


def test_jobs_with_the_same_definition_share_their_schedule(tmp_path: Path) -> None:
    body = ""
    for i in range(3):
        body += f'[jobs.c{i}]\ncron = "*/5 * * * *"\ncommand = "x"\n'
        body += f'[jobs.i{i}]\nevery = "1m"\ncommand = "x"\n'
        body += f'[jobs.w{i}]\nevery = "1m"\nstart = "2026-01-01"\ncommand = "x"\n'
    body += '[jobs.other-zone]\ncron = "*/5 * * * *"\ntimezone = "UTC"\ncommand = "x"\n'
    body += '[jobs.other-anchor]\nevery = "1m"\nanchor = "2026-01-01T00:00:30Z"\ncommand = "x"\n'
    jobs = load_config(write(tmp_path, body)).jobs
    for kind in "ciw":
        assert jobs[f"{kind}0"].schedule is jobs[f"{kind}1"].schedule is jobs[f"{kind}2"].schedule
    assert jobs["other-zone"].schedule is not jobs["c0"].schedule
    assert jobs["other-anchor"].schedule is not jobs["i0"].schedule
    assert jobs["w0"].schedule is not jobs["i0"].schedule
    # Sharing is per load: a second load builds its own.
    again = load_config(write(tmp_path, body)).jobs
    assert again["c0"].schedule is not jobs["c0"].schedule


def test_identities_computed_at_load_are_what_the_job_would_compute(tmp_path: Path) -> None:
    body = """
        [jobs.a]
        cron = "0 9 * * *"
        command = "x"
        [jobs.b]
        cron = "0 9 * * *"
        command = "x"
        timeout = "5m"
        [jobs.c]
        every = "1m"
        call = "pkg.mod:fn"
        args = [1]
        [jobs.d]
        every = "1m"
        command = ["x", "y"]
        env = { A = "1" }
        """
    jobs = load_config(write(tmp_path, body)).jobs
    for job in jobs.values():
        fresh = replace(job)  # a new instance: nothing remembered, both computed from scratch
        assert "fingerprint" not in vars(fresh)
        assert "digest" not in vars(fresh)
        assert (job.fingerprint, job.digest) == (fresh.fingerprint, fresh.digest)
    assert jobs["a"].fingerprint == jobs["b"].fingerprint
    assert jobs["a"].digest != jobs["b"].digest  # the timeout is part of what runs


def test_digests_shared_by_a_load_follow_what_each_job_runs(tmp_path: Path) -> None:
    body = """
        [jobs.a]
        every = "1m"
        command = "x"
        [jobs.b]
        every = "5m"
        command = "x"
        [jobs.c]
        every = "1m"
        command = "x"
        env = { A = "1" }
        """
    jobs = load_config(write(tmp_path, body)).jobs
    for job in jobs.values():
        assert job.digest == replace(job, digests=None).digest  # computed alone, no sharing
    assert jobs["a"].digest == jobs["b"].digest != jobs["c"].digest
    # A copy keeps the load's memo; it must not hand the copy the digest of what it no longer runs.
    edited = replace(jobs["b"], command="y")
    assert edited.digest == replace(edited, digests=None).digest != jobs["a"].digest


def test_values_parsed_once_are_still_checked_per_job(tmp_path: Path) -> None:
    # 1, 1.0 and true are equal in Python; a remembered "retries = 1" must not let them pass.
    body = """
        [jobs.a]
        every = "1m"
        command = "x"
        retries = 1
        [jobs.b]
        every = "1m"
        command = "x"
        retries = true
        [jobs.c]
        every = "1m"
        command = "x"
        retries = 1.0
        [jobs.d]
        cron = "*/60 * * * *"
        command = "x"
        [jobs.e]
        cron = "*/60 * * * *"
        command = "x"
        """
    found = errors(tmp_path, body)
    assert found == [
        "FILE: jobs.b.retries: expected a whole number from 0 to 100 (got true)",
        "FILE: jobs.c.retries: expected a whole number from 0 to 100 (got 1.0)",
        "FILE: jobs.d.cron: minute field: step 60 does not fit the field; cron steps restart "
        "every hour (for a fixed period use an interval schedule, 'every') (got \"*/60 * * * *\")",
        "FILE: jobs.e.cron: minute field: step 60 does not fit the field; cron steps restart "
        "every hour (for a fixed period use an interval schedule, 'every') (got \"*/60 * * * *\")",
    ]


# -- one mistake never hides another ---------------------------------------------------------------


def test_a_bad_zone_hides_no_schedule_or_window_mistake(tmp_path: Path) -> None:
    found = errors(
        tmp_path,
        """
        [jobs.a]
        cron = "5-5 * * * *"
        start = "soon"
        command = "x"
        [jobs.b]
        every = "0s"
        anchor = "never"
        command = "x"
        [jobs.c]
        solar = "sunset"
        latitude = 100
        longitude = 0
        command = "x"
        """,
        header='[defaults]\ntimezone = "Europe/Berln"\n',
    )
    wheres = [e.split(": ")[1] for e in found]
    assert wheres == [
        "defaults.timezone",
        "jobs.a.start",
        "jobs.a.cron",
        "jobs.b.every",
        "jobs.b.anchor",
        "jobs.c.latitude",
    ]


def test_defaults_are_checked_even_when_every_job_overrides_them(tmp_path: Path) -> None:
    found = errors(
        tmp_path,
        """
        [jobs.a]
        every = "1m"
        queue = "io"
        timeout = "5m"
        command = "x"
        """,
        header='[defaults]\ntimezone = "UTC"\nqueue = "bad queue!"\ntimeout = "5 min"\n'
        "latitude = 95\n",
    )
    assert [e.split(": ")[1] for e in found] == [
        "defaults.queue",
        "defaults.timeout",
        "defaults.latitude",
    ]


def test_a_job_with_a_bad_name_or_two_schedules_still_has_its_values_checked(
    tmp_path: Path,
) -> None:
    found = errors(
        tmp_path,
        """
        [jobs."bad name"]
        every = "1m"
        retries = -1
        command = "x"
        [jobs.two]
        every = "0s"
        cron = "5-5 * * * *"
        command = "x"
        """,
    )
    assert [e.split(": ")[1] for e in found] == [
        "jobs.bad name",
        "jobs.bad name.retries",
        "jobs.two",
        "jobs.two.every",
        "jobs.two.cron",
    ]


# -- bounds: what check accepts, next and the daemon can use ---------------------------------------


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("every", '"999999999d"', "at most 3650d (about ten years)"),
        ("every", '"1000000d"', "at most 3650d"),
        ("every", '"1000000000d"', "at most 3650d"),
        ("every", '"' + "9" * 5000 + 's"', "at most 3650d"),
        ("timeout", '"3651d"', "at most 3650d"),
        ("start", '"9999-12-31T23:00:00Z"', "expected an instant from 1970-01-01 to 9998-12-31"),
        ("end", "9999-06-01", "expected an instant from 1970-01-01 to 9998-12-31"),
        ("anchor", '"0001-01-01T00:00:00"', "expected an instant from 1970-01-01 to 9998-12-31"),
        ("start", '"1969-12-31T23:00:00Z"', "expected an instant from 1970-01-01"),
        ("description", '"' + "x" * 70_000 + '"', "longer than 65536 characters"),
        ("env", '{ "A=B" = "1" }', "\"A=B\": a variable name is not empty and has no '='"),
        ("env", '{ A = "a\\u0000b" }', '"A": a variable name is not empty'),
        ("cwd", '"/tmp/\\u0000"', "must not contain a NUL character"),
    ],
)
def test_values_beyond_the_bounds_are_refused_where_they_are(
    tmp_path: Path, key: str, value: str, message: str
) -> None:
    found = errors(
        tmp_path,
        f'[jobs.a]\nevery = "1h"\ncommand = "x"\n{key} = {value}\n'.replace(
            'every = "1h"\n', "" if key == "every" else 'every = "1h"\n'
        ),
    )
    assert len(found) == 1, found
    assert found[0].startswith(f"FILE: jobs.a.{key}: {message}"), found[0]


def test_args_nested_deeper_than_32_levels_are_refused(tmp_path: Path) -> None:
    fine = "[" * 32 + "]" * 32
    path = write(tmp_path, f'[jobs.a]\nevery = "1h"\ncall = "m:f"\nargs = {fine}\n')
    nested: list[object] = []
    for _ in range(30):  # args is the 32nd level
        nested = [nested]
    assert load_config(path).jobs["a"].args == (nested,)
    # Dotted keys nest without brackets: 40 levels the parser reads without recursion.
    deep = ".".join(["k"] * 40)
    found = errors(tmp_path, f'[jobs.a]\nevery = "1h"\ncall = "m:f"\nkwargs.{deep} = 1\n')
    (message,) = found
    assert message.startswith('FILE: jobs.a.kwargs: nested more than 32 levels deep (got {"k": ')


def test_command_and_args_are_limited_as_a_whole(tmp_path: Path) -> None:
    argv = ", ".join(['"' + "x" * 20_000 + '"'] * 4)
    found = errors(tmp_path, f'[jobs.a]\nevery = "1h"\ncommand = [{argv}]\n')
    assert len(found) == 1
    assert found[0].startswith(
        "FILE: jobs.a.command: the arguments take more than 65536 characters"
    )
    found = errors(tmp_path, f'[jobs.a]\nevery = "1h"\ncall = "m:f"\nargs = [{argv}]\n')
    assert found[0].startswith("FILE: jobs.a.args: as JSON, they take more than 65536 characters")


def test_a_value_is_quoted_back_short(tmp_path: Path) -> None:
    found = errors(
        tmp_path, '[jobs.a]\nevery = "1h"\ncommand = "x"\nretries = "' + "y" * 500 + '"\n'
    )
    assert found == [
        'FILE: jobs.a.retries: expected a whole number from 0 to 100 (got "' + "y" * 59 + '…")'
    ]


def test_a_long_valid_job_name_is_kept_whole(tmp_path: Path) -> None:
    name = "n" * 100
    path = write(tmp_path, f'[jobs.{name}]\nevery = "1h"\ncommand = "x"\n')
    assert load_config(path).jobs[name].name == name
    found = errors(tmp_path, f'[jobs.{name}]\nevery = "1h"\ncommand = "x"\nretries = -1\n')
    assert found[0].startswith(f"FILE: jobs.{name}.retries: ")


CELERY = """
[chronod.celery]
broker = "redis://:secret@127.0.0.1:6379/0"

[defaults]
timezone = "UTC"

[jobs.digest]
cron = "30 17 * * 5"
celery = "reports.tasks.send_digest"
args = [7]
kwargs = { format = "html" }
queue = "reports"
"""


def test_celery_job(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, CELERY, header=""))
    job = config.jobs["digest"]
    assert (job.celery, job.args, dict(job.kwargs)) == (
        "reports.tasks.send_digest",
        (7,),
        {"format": "html"},
    )
    assert (job.queue, job.celery_queue) == ("reports", "reports")
    assert config.daemon.celery is not None
    assert "secret" not in repr(config.daemon)
    # Without its own queue the Celery app routes the task; chronod's queue is the default one.
    plain = load_config(write(tmp_path, CELERY.replace('queue = "reports"\n', ""), header=""))
    assert (plain.jobs["digest"].queue, plain.jobs["digest"].celery_queue) == ("default", None)
    assert plain.jobs["digest"].digest != job.digest


def test_celery_job_mistakes(tmp_path: Path) -> None:
    no_table = CELERY.replace('[chronod.celery]\nbroker = "redis://:secret@127.0.0.1:6379/0"\n', "")
    assert errors(tmp_path, no_table + 'env = { A = "1" }\n', header="") == [
        "FILE: jobs.digest.env: only applies to 'command' and 'call' jobs",
        "FILE: chronod.celery: required by celery jobs (digest): add a [chronod.celery] table "
        "with broker = URL or app = 'package.module:app'",
    ]
    both = CELERY.replace('broker = "redis', 'app = "proj.celery:app"\nbroker = "redis')
    assert errors(tmp_path, both, header="") == [
        "FILE: chronod.celery: needs exactly one of 'broker' or 'app' (found broker and app)"
    ]
    bad = CELERY.replace('"redis://:secret@', '"secret@').replace("send_digest", "send digest")
    assert errors(tmp_path, bad, header="") == [
        "FILE: chronod.celery.broker: expected a broker URL like 'redis://HOST/0'",
        "FILE: jobs.digest.celery: expected a Celery task name like 'proj.tasks.digest' "
        '(got "reports.tasks.send digest")',
    ]


def test_check_says_celery_is_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from chronod.cli import cli

    path = write(tmp_path, CELERY, header="")
    assert CliRunner().invoke(cli, ["--config", str(path), "check"]).exit_code == 0
    monkeypatch.setitem(sys.modules, "celery", None)  # what find_spec answers when it is absent
    result = CliRunner().invoke(cli, ["--config", str(path), "check"])
    assert result.exit_code == 2
    assert (
        f"{path}: jobs.digest.celery: Celery is not installed here: pip install 'chronod[celery]'"
        in result.output
    )
