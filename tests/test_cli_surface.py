"""What a user meets first: `chronod check` output (the README's example is the real one), a
config file that is not there, and every bind and file error of every command: one line, the
right exit code, never a traceback."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from chronod.cli import main
from chronod.config import load_config, unused_queues
from chronod.errors import ConfigError
from tests.procs import REPO, SCRUBBED_ENV, Processes, write_atomically

README = REPO / "README.md"
MISTAKES = "examples/mistakes.toml"


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str


def chronod(capsys: pytest.CaptureFixture[str], *args: str) -> Result:
    """The console entry point in this process: exit code and output."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(list(args))
    captured = capsys.readouterr()
    code = exit_info.value.code
    return Result(code if isinstance(code, int) else 1, captured.out, captured.err)


def console_block(heading: str, command: str) -> list[str]:
    """The lines printed under ``$ COMMAND`` in the README's section ``heading``."""
    text = README.read_text()
    section = text[text.index(heading) :]
    for block in re.finditer(r"```console\n(.*?)```", section, re.S):
        prompt, *lines = block.group(1).rstrip("\n").split("\n")
        if prompt == f"$ {command}":
            return lines
    raise AssertionError(f"no console block for {command!r} under {heading!r}")


# -- chronod check ---------------------------------------------------------------------------------


def test_readme_mistakes_block_is_the_real_output(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(REPO)
    result = chronod(capsys, "--config", MISTAKES, "check")
    shown = console_block("### Mistakes are located", f"chronod --config {MISTAKES} check")
    assert result.code == 2
    assert result.err.splitlines() == shown
    assert len(shown) > 5  # every mistake of the example, in one pass


def test_readme_syntax_example_is_the_real_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shown = console_block("### Mistakes are located", "chronod check")
    path = tmp_path / "schedules.toml"
    path.write_text("# line\n" * 11 + 'command = "echo hi\n')
    result = chronod(capsys, "--config", str(path), "check")
    assert result.code == 2
    assert result.err.replace(str(path), "schedules.toml").splitlines() == shown


def test_a_bad_default_zone_hides_no_cron_mistake(tmp_path: Path) -> None:
    path = tmp_path / "schedules.toml"
    path.write_text(
        '[defaults]\ntimezone = "Europe/Berln"\n'
        '[jobs.backup]\ncron = "5-5 * * * *"\ncommand = "x"\n'
        '[jobs.other]\nevery = "1m"\ncommand = "x"\n'
    )
    with pytest.raises(ConfigError) as info:
        load_config(path)
    wheres = [issue.where for issue in info.value.issues]
    assert wheres == ["defaults.timezone", "jobs.backup.cron"]  # the zone once, not per job


MISSING_TAIL = "(give the schedules file with --config PATH or CHRONOD_CONFIG)"


@pytest.mark.parametrize("command", [["check"], ["next"], ["status"], ["worker"]])
def test_no_config_file_names_where_it_looked(
    command: list[str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CHRONOD_CONFIG", raising=False)
    result = chronod(capsys, *command)
    assert result.code == 2
    lines = result.err.splitlines()
    assert len(lines) == 1, lines
    assert f"{tmp_path / 'schedules.toml'}: no such file {MISSING_TAIL}" in lines[0]
    assert ":1:1:" not in lines[0]  # no made-up location inside a file that does not exist
    assert not (tmp_path / ".chronod").exists()


def test_chronod_config_names_the_file_too(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CHRONOD_CONFIG", "etc/chronod.toml")
    result = chronod(capsys, "check")
    assert (result.code, result.err) == (
        2,
        f"{tmp_path / 'etc' / 'chronod.toml'}: no such file {MISSING_TAIL}\n",
    )


def test_a_directory_given_as_the_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    result = chronod(capsys, "--config", str(tmp_path), "next")
    assert (result.code, result.err) == (
        2,
        f"chronod: error: {tmp_path}: is a directory, not a schedules file {MISSING_TAIL}\n",
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "--metrics", "bad"], "Invalid value for '--metrics'"),
        (["run", "--metrics", "127.0.0.1:99999"], "port 99999 is out of range"),
        (["next", "--count", "0"], "Invalid value for '--count'"),
        (["history"], "Missing option '--job'"),
        (["nosuch"], "No such command 'nosuch'"),
    ],
)
def test_usage_errors_are_one_line(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    result = chronod(capsys, "--config", str(REPO / "schedules.toml"), *args)
    assert result.code == 2
    assert len(result.err.splitlines()) == 1, result.err
    assert result.err.startswith("chronod: error: ")
    assert message in result.err


def test_next_after_out_of_range_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    result = chronod(
        capsys, "--config", str(REPO / "schedules.toml"), "next", "--after", "9999-06-01T00:00Z"
    )
    assert (result.code, result.err) == (
        2,
        "chronod: error: --after: expected an instant from 1970-01-01 to 9998-12-31, "
        "got '9999-06-01T00:00Z'\n",
    )


def test_next_shows_sydney_on_standard_time_in_july_2038(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "schedules.toml"
    path.write_text(
        '[jobs.morning]\ncron = "0 9 * * *"\ntimezone = "Australia/Sydney"\ncommand = "x"\n'
    )
    result = chronod(
        capsys, "--config", str(path), "next", "--after", "2038-07-01", "--count", "1", "--json"
    )
    assert result.code == 0, result.err
    (fire,) = json.loads(result.out)
    assert fire["at"] == "2038-07-01T09:00:00+10:00"  # AEST: pytz alone said +11:00 (AEDT)
    assert fire["utc"] == "2038-06-30T23:00:00Z"
    text = chronod(
        capsys, "--config", str(path), "next", "--job", "morning", "--after", "2038-07-01"
    )
    assert "Thu 2038-07-01 09:00 AEST" in text.out


def test_next_as_text_puts_notes_under_fires_and_says_when_none_come(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "schedules.toml"
    path.write_text(
        '[defaults]\ntimezone = "America/New_York"\n'
        '[jobs.gap]\ncron = "30 2 * * *"\ncommand = "x"\n'
        '[jobs.ended]\nevery = "1h"\nend = "2020-01-01"\ncommand = "x"\n'
    )
    after = ("--after", "2027-03-13T12:00", "--count", "2")
    overview = chronod(capsys, "--config", str(path), "next", *after)
    assert overview.out.splitlines() == [
        "JOB    NEXT (local)              UTC                                      SCHEDULE",
        "gap    Sun 2027-03-14 03:00 EDT  2027-03-14T07:00:00Z  in 14h             "
        "at 02:30 every day",
        "gap    Mon 2027-03-15 02:30 EDT  2027-03-15T06:30:00Z  in 1d 13h          "
        "at 02:30 every day",
        "ended  -                         -                     no upcoming fires  "
        "every 1h, until 2020-01-01T05:00:00Z",
        "note: gap: 02:30 does not exist on 2027-03-14 (DST gap); runs at 03:00 EDT",
    ]
    one = chronod(capsys, "--config", str(path), "next", "--job", "gap", *after)
    assert one.out.splitlines() == [
        "gap: at 02:30 every day (America/New_York)",
        "  Sun 2027-03-14 03:00 EDT  2027-03-14T07:00:00Z  in 14h",
        "      note: 02:30 does not exist on 2027-03-14 (DST gap); runs at 03:00 EDT",
        "  Mon 2027-03-15 02:30 EDT  2027-03-15T06:30:00Z  in 1d 13h",
    ]
    none = chronod(capsys, "--config", str(path), "next", "--job", "ended", *after)
    assert none.out.splitlines() == [
        "ended: every 1h, until 2020-01-01T05:00:00Z (America/New_York)",
        "  no upcoming fires",
    ]


# -- bind and file errors of every command, as real processes -----------------------------------


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port something else listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "schedules.toml"
    path.write_text('[jobs.a]\nevery = "1h"\ntimezone = "UTC"\ncommand = "true"\n')
    return path


def run_chronod(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in SCRUBBED_ENV}
    env["PYTHONPATH"] = str(REPO)
    return subprocess.run(
        [sys.executable, "-m", "chronod", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=60,
        check=False,
    )


SURFACES = {
    "web port in use": (["web", "--bind", "127.0.0.1:{port}"], 1, "address already in use"),
    "web bind syntax": (["web", "--bind", "127.0.0.1"], 2, "--bind: expected HOST:PORT"),
    "web bind port range": (["web", "--bind", "[::1]:70000"], 2, "--bind: expected HOST:PORT"),
    "web host unknown": (["web", "--bind", "nosuch.invalid:8750"], 1, "cannot resolve"),
    "web not our address": (["web", "--bind", "192.0.2.1:8750"], 1, "not an address of this"),
    "run metrics in use": (["run", "--metrics", "127.0.0.1:{port}"], 1, "address already in use"),
    "run metrics bad": (["run", "--metrics", "localhost"], 2, "Invalid value for '--metrics'"),
    "run metrics unknown host": (["run", "--metrics", "nosuch.invalid:1"], 1, "cannot resolve"),
    "worker metrics in use": (
        ["worker", "--metrics", "127.0.0.1:{port}"],
        1,
        "address already in use",
    ),
    "worker metrics bad": (["worker", "--metrics", "1:2:3"], 2, "Invalid value for '--metrics'"),
    "store path under a file": (
        ["--store", "sqlite:///etc/hostname/state.db", "status"],
        1,
        "/etc/hostname/state.db",
    ),
    "config is a directory": (["--config", ".", "check"], 2, "is a directory"),
}


@pytest.mark.process
@pytest.mark.parametrize("surface", list(SURFACES))
def test_every_bind_and_file_error_is_one_line(
    surface: str, tmp_path: Path, config_file: Path, taken_port: int
) -> None:
    args, code, message = SURFACES[surface]
    argv = [arg.format(port=taken_port) for arg in args]
    result = run_chronod(tmp_path, "--config", str(config_file), *argv)
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.splitlines()
    assert (result.returncode, len(lines)) == (code, 1), result.stderr
    assert lines[0].startswith("chronod: error: ") or code == 2, lines[0]
    assert message in lines[0]
    assert result.stdout == ""


# -- chronod worker --queue that no job uses -------------------------------------------------------


def test_unused_queue_warning(config_file: Path) -> None:
    config = load_config(config_file)
    assert unused_queues(config, ["default"]) is None
    assert unused_queues(config, ["default", "reprots"]) == (
        f"no job in {config_file} uses queue 'reprots': this worker takes no runs from it "
        "(queues in use: default)"
    )


@pytest.mark.process
def test_worker_warns_about_a_queue_no_job_uses_at_start_and_after_a_reload(
    procs: Processes, tmp_path: Path, config_file: Path
) -> None:
    store = f"sqlite:///{tmp_path / 'state.db'}"
    worker = procs.worker(config_file, store, concurrency=1, queues=["nosuch"])
    first = worker.wait_for_log("uses queue 'nosuch'", timeout=60)
    assert first.level == "warning"
    mark = worker.wait_for_log("worker pool starting", timeout=60).index
    # Still unused after the edit: said again.
    write_atomically(
        config_file,
        config_file.read_text() + '[jobs.b]\nevery = "2h"\ntimezone = "UTC"\ncommand = "true"\n',
    )
    worker.hup()
    again = worker.wait_for_log("uses queue 'nosuch'", timeout=60, after=mark)
    reloaded = worker.wait_for_log("config reloaded", timeout=60, after=again.index)
    # Now a job uses it: no warning at the next reload.
    write_atomically(config_file, config_file.read_text() + 'queue = "nosuch"\n')
    worker.hup()
    done = worker.wait_for_log("config reloaded", timeout=60, after=reloaded.index)
    assert not worker.find("uses queue 'nosuch'", after=reloaded.index)
    assert done.index > reloaded.index
