"""One attempt in its own process group: outcomes, argv vs shell, call jobs, env, output, kills.

Jobs here are real processes. Nothing waits on a bare sleep: the runner returns when the run is
over, and deadlines (timeout, kill grace, heartbeat) are short and checked against the report's
duration. Whether a process survived is judged from ``/proc`` (a zombie nobody reaped is dead),
independently of the code under test.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from chronod.config import JobConfig, parse_config
from chronod.runner import (
    Ending,
    Report,
    RunInfo,
    StopRequest,
    Supervision,
    run_attempt,
    run_environment,
)
from chronod.store.base import OUTPUT_TAIL, Outcome
from chronod.tz import UTC

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="process groups checked via /proc")

SLOT = datetime(2026, 11, 27, 14, 30, tzinfo=UTC)
INFO = RunInfo(job="t", run_id="t@2026-11-27T14:30:00Z", slot=SLOT, attempt=2, epoch=7)
BASE = parse_config(
    b'[defaults]\ntimezone = "UTC"\n[jobs.t]\nevery = "1m"\ncommand = "true"\n', Path("x.toml")
).jobs["t"]


def job(**changes: Any) -> JobConfig:
    """The base job with ``changes`` (durations may be below the config's 1 s minimum)."""
    return replace(BASE, **changes)


def call_job(module: str, function: str, **changes: Any) -> JobConfig:
    return job(command=None, call=f"{module}:{function}", **changes)


def alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie is not), from /proc."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return False
    return stat[stat.rfind(b")") + 2 :].split()[0] != b"Z"


def read_pid(path: Path) -> int:
    return int(path.read_text().split()[0])


@pytest.fixture
def job_lines() -> Iterator[list[str]]:
    """Messages logged by ``chronod.job`` (each output line of a run)."""
    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    logger = logging.getLogger("chronod.job")
    handler = Collect()
    logger.addHandler(handler)
    previous = logger.level
    logger.setLevel(logging.INFO)
    yield lines
    logger.removeHandler(handler)
    logger.setLevel(previous)


@pytest.fixture
def module(tmp_path: Path) -> str:
    """A tiny module of ``call`` targets in ``tmp_path/lib`` (put on PYTHONPATH by the job env)."""
    name = f"jobmod_{uuid.uuid4().hex[:8]}"
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / f"{name}.py").write_text(
        textwrap.dedent(
            """
            import json, os, sys

            def record(path, *, value):
                with open(path, "w") as f:
                    json.dump({"value": value, "env": dict(os.environ), "cwd": os.getcwd()}, f)
                print("recorded", value)

            def boom():
                print("about to fail")
                raise ValueError("boom")

            def leave(code):
                sys.exit(code)

            def hang():
                import time
                while True:
                    time.sleep(1)
            """
        )
    )
    return name


def lib_env(tmp_path: Path) -> dict[str, str]:
    return {"PYTHONPATH": str(tmp_path / "lib")}


# -- outcomes --------------------------------------------------------------------------------------


def test_exit_zero_succeeds_with_output() -> None:
    report = run_attempt(job(command="echo hello; echo oops >&2"), INFO)
    assert report.ending is Ending.EXITED
    assert (report.exit_code, report.error, report.outcome) == (0, None, Outcome.SUCCEEDED)
    assert report.output == "hello\noops\n"
    assert report.result().outcome is Outcome.SUCCEEDED


def test_nonzero_exit_fails_with_its_code() -> None:
    report = run_attempt(job(command="exit 7"), INFO)
    assert (report.ending, report.exit_code, report.outcome) == (Ending.EXITED, 7, Outcome.FAILED)
    assert report.error == "exited with status 7"


def test_death_by_signal_is_128_plus_n() -> None:
    report = run_attempt(job(command=("sh", "-c", "kill -USR1 $$")), INFO)
    assert report.exit_code == 128 + signal.SIGUSR1
    assert report.error == "killed by signal SIGUSR1"
    assert report.outcome is Outcome.FAILED


def test_string_command_goes_through_the_shell() -> None:
    report = run_attempt(job(command="echo $((1 + 2)) | tr 3 x"), INFO)
    assert report.output == "x\n"


def test_array_command_is_exec_argv_without_a_shell() -> None:
    report = run_attempt(job(command=("printf", "%s|", "a b", "$HOME", "*")), INFO)
    assert report.output == "a b|$HOME|*|"


def test_missing_program_fails_without_starting() -> None:
    report = run_attempt(job(command=("/nonexistent/program",)), INFO)
    assert report.ending is Ending.NOT_STARTED
    assert report.outcome is Outcome.FAILED
    assert str(report.error).startswith("cannot start:")
    assert report.pid is None


def test_result_refuses_an_attempt_with_nothing_to_record() -> None:
    report = Report(
        ending=Ending.INTERRUPTED, exit_code=143, output="", error=None, pid=1, duration=1.0
    )
    assert report.outcome is None
    with pytest.raises(ValueError, match="interrupted"):
        report.result()
    failed = Report(ending=Ending.EXITED, exit_code=1, output="", error="x", pid=1, duration=1.0)
    assert failed.result(retry_at=SLOT).retry_at == SLOT
    succeeded = replace(failed, exit_code=0)
    assert succeeded.result(retry_at=SLOT).retry_at is None  # nothing to retry


# -- call jobs ----------------------------------------------------------------------------------


def test_call_job_runs_the_function_in_a_child(tmp_path: Path, module: str) -> None:
    out = tmp_path / "out.json"
    spec = call_job(
        module, "record", args=(str(out),), kwargs={"value": [1, "two"]}, env=lib_env(tmp_path)
    )
    report = run_attempt(spec, INFO)
    assert (report.ending, report.exit_code, report.outcome) == (
        Ending.EXITED,
        0,
        Outcome.SUCCEEDED,
    )
    assert report.output == "recorded [1, 'two']\n"
    written = json.loads(out.read_text())
    assert written["value"] == [1, "two"]
    assert written["env"]["CHRONOD_RUN_ID"] == INFO.run_id
    assert report.pid != os.getpid()


def test_call_job_exception_fails_with_traceback(tmp_path: Path, module: str) -> None:
    report = run_attempt(call_job(module, "boom", env=lib_env(tmp_path)), INFO)
    assert (report.exit_code, report.outcome) == (1, Outcome.FAILED)
    assert report.error == "ValueError: boom"
    assert report.output.startswith("about to fail\nTraceback")
    assert report.output.rstrip().endswith("ValueError: boom")


def test_call_job_system_exit_sets_the_code(tmp_path: Path, module: str) -> None:
    report = run_attempt(call_job(module, "leave", args=(4,), env=lib_env(tmp_path)), INFO)
    assert (report.exit_code, report.error) == (4, "exited with status 4")


def test_call_job_unknown_module_fails(tmp_path: Path) -> None:
    report = run_attempt(call_job("no_such_module_xyz", "f"), INFO)
    assert report.outcome is Outcome.FAILED
    assert "ModuleNotFoundError" in str(report.error)


# -- environment and cwd --------------------------------------------------------------------------


def test_environment_has_chronod_variables_and_job_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FROM_WORKER", "w")
    monkeypatch.setenv("NOTIFY_SOCKET", "/run/systemd/notify")
    out = tmp_path / "env"
    spec = job(command=f"env > {out}", env={"FROM_JOB": "j", "CHRONOD_RUN_ID": "forged"})
    assert run_attempt(spec, INFO).outcome is Outcome.SUCCEEDED
    env = dict(line.split("=", 1) for line in out.read_text().splitlines() if "=" in line)
    assert env["CHRONOD_JOB"] == "t"
    assert env["CHRONOD_RUN_ID"] == "t@2026-11-27T14:30:00Z"  # the job's env cannot forge it
    assert env["CHRONOD_SLOT"] == "2026-11-27T14:30:00Z"
    assert env["CHRONOD_ATTEMPT"] == "2"
    assert env["CHRONOD_EPOCH"] == "7"
    assert env["FROM_JOB"] == "j"
    assert env["FROM_WORKER"] == "w"
    assert "NOTIFY_SOCKET" not in env


def test_run_environment_order() -> None:
    spec = job(env={"A": "job", "B": "job"})
    env = run_environment(spec, INFO, base={"A": "worker", "C": "worker", "WATCHDOG_USEC": "1"})
    assert (env["A"], env["B"], env["C"]) == ("job", "job", "worker")
    assert "WATCHDOG_USEC" not in env


@pytest.mark.parametrize("kind", ["command", "call"])
def test_cwd_applies(tmp_path: Path, module: str, kind: str) -> None:
    where = tmp_path / "work dir"
    where.mkdir()
    if kind == "command":
        report = run_attempt(job(command="pwd", cwd=str(where)), INFO)
        assert report.output == f"{where}\n"
    else:
        out = tmp_path / "out.json"
        spec = call_job(
            module,
            "record",
            args=(str(out),),
            kwargs={"value": 1},
            env=lib_env(tmp_path),
            cwd=str(where),
        )
        assert run_attempt(spec, INFO).outcome is Outcome.SUCCEEDED
        assert json.loads(out.read_text())["cwd"] == str(where)


def test_missing_cwd_fails_without_starting(tmp_path: Path) -> None:
    report = run_attempt(job(command="true", cwd=str(tmp_path / "absent")), INFO)
    assert report.ending is Ending.NOT_STARTED


# -- output ----------------------------------------------------------------------------------------


def test_output_tail_keeps_the_last_64_kib(job_lines: list[str]) -> None:
    # 200 000 bytes in lines "000000\n" … then a final marker without a newline.
    script = "i=0; while [ $i -lt 25000 ]; do printf '%07d\\n' $i; i=$((i+1)); done; printf END"
    report = run_attempt(job(command=("bash", "-c", script), timeout=timedelta(seconds=60)), INFO)
    assert report.outcome is Outcome.SUCCEEDED
    assert len(report.output.encode()) == OUTPUT_TAIL
    assert report.output.endswith("0024999\nEND")
    # Every line went to the log, prefixed with the run id, in order.
    assert len(job_lines) == 25001
    assert job_lines[0] == f"[{INFO.run_id}] 0000000"
    assert job_lines[-2:] == [f"[{INFO.run_id}] 0024999", f"[{INFO.run_id}] END"]


def test_invalid_utf8_output_is_replaced() -> None:
    report = run_attempt(job(command=("printf", "a\\377b")), INFO)
    assert report.output == "a\ufffdb"


# -- timeouts, kill grace, leftovers ---------------------------------------------------------------


def test_timeout_kills_the_whole_group_including_a_background_grandchild(tmp_path: Path) -> None:
    script = f"sleep 1000 & echo $! > {tmp_path}/bg; echo $$ > {tmp_path}/main; wait"
    spec = job(command=script, timeout=timedelta(seconds=0.5), kill_grace=timedelta(seconds=5))
    report = run_attempt(spec, INFO)
    assert report.ending is Ending.TIMED_OUT
    assert report.outcome is Outcome.TIMED_OUT
    assert report.exit_code == 128 + signal.SIGTERM
    assert str(report.error).startswith("timed out after 0.5s")
    assert 0.5 <= report.duration < 4.0  # SIGTERM worked: no wait for the 5 s grace
    for name in ("bg", "main"):
        pid = read_pid(tmp_path / name)
        assert not alive(pid), f"{name} process {pid} survived the timeout"


def test_kill_grace_escalates_to_sigkill_for_a_job_ignoring_sigterm(tmp_path: Path) -> None:
    # The shell and its sleeps ignore SIGTERM; a child of it does too (SIG_IGN is inherited). The
    # timeout leaves a loaded machine time to start the shell and set its trap: a SIGTERM that
    # came first would end it (exit 143) before it ever ignored anything.
    script = f"trap '' TERM; sleep 1000 & echo $! > {tmp_path}/bg; while :; do sleep 0.05; done"
    spec = job(
        command=("sh", "-c", script),
        timeout=timedelta(seconds=1.5),
        kill_grace=timedelta(seconds=0.4),
    )
    report = run_attempt(spec, INFO)
    assert report.ending is Ending.TIMED_OUT
    assert report.exit_code == 128 + signal.SIGKILL
    assert "then SIGKILL after 0.4s" in str(report.error)
    assert report.duration >= 1.9
    assert not alive(read_pid(tmp_path / "bg"))


def test_leftovers_of_a_finished_run_are_terminated(tmp_path: Path) -> None:
    script = f"sleep 1000 & echo $! > {tmp_path}/bg; exit 0"
    report = run_attempt(job(command=script, kill_grace=timedelta(seconds=5)), INFO)
    assert (report.ending, report.outcome) == (Ending.EXITED, Outcome.SUCCEEDED)
    assert report.duration < 4.0
    assert not alive(read_pid(tmp_path / "bg"))


def test_call_job_timeout_kills_it(tmp_path: Path, module: str) -> None:
    spec = call_job(module, "hang", env=lib_env(tmp_path), timeout=timedelta(seconds=0.3))
    report = run_attempt(spec, INFO)
    assert report.ending is Ending.TIMED_OUT
    assert report.pid is not None
    assert not alive(report.pid)


# -- heartbeats and stop requests ---------------------------------------------------------------


def test_heartbeat_is_called_while_the_job_runs() -> None:
    beats: list[int] = []

    def beat() -> bool:
        beats.append(1)
        return True

    watch = Supervision(heartbeat=beat, heartbeat_every=0.05)
    report = run_attempt(job(command="sleep 0.5"), INFO, watch)
    assert report.outcome is Outcome.SUCCEEDED
    assert 3 <= len(beats) <= 12  # every 0.05 s during 0.5 s, not in a busy loop


def test_lost_heartbeat_kills_the_job_and_discards_the_result(tmp_path: Path) -> None:
    answers = iter([True, True, False])
    watch = Supervision(heartbeat=lambda: next(answers, False), heartbeat_every=0.05)
    script = f"echo $$ > {tmp_path}/main; sleep 1000"
    report = run_attempt(job(command=script), INFO, watch)
    assert report.ending is Ending.LEASE_LOST
    assert report.outcome is None
    assert report.duration < 3.0
    assert not alive(read_pid(tmp_path / "main"))


def test_stop_request_terminates_the_run_at_its_deadline(tmp_path: Path) -> None:
    stop = StopRequest()

    def beat() -> bool:  # the worker's signal handler would do this
        if stop.terminate_at is None:
            stop.terminate_at = time.monotonic() + 0.2
        return True

    watch = Supervision(heartbeat=beat, heartbeat_every=0.05, stop=stop)
    report = run_attempt(job(command="exec sleep 1000"), INFO, watch)
    assert report.ending is Ending.INTERRUPTED
    assert report.exit_code == 128 + signal.SIGTERM
    assert report.outcome is None


def test_immediate_stop_kills_at_once_despite_kill_grace(tmp_path: Path) -> None:
    stop = StopRequest()

    def beat() -> bool:
        stop.kill = True
        stop.terminate_at = time.monotonic()
        return True

    watch = Supervision(heartbeat=beat, heartbeat_every=0.1, stop=stop)
    spec = job(
        command=("sh", "-c", "trap '' TERM; while :; do sleep 0.05; done"),
        kill_grace=timedelta(seconds=30),
    )
    report = run_attempt(spec, INFO, watch)
    assert report.ending is Ending.INTERRUPTED
    assert report.exit_code == 128 + signal.SIGKILL
    assert report.duration < 3.0


def test_wake_fd_is_drained_and_start_is_announced() -> None:
    read_fd, write_fd = os.pipe()
    os.write(write_fd, b"xyz")
    started: list[int] = []
    watch = Supervision(wake_fd=read_fd, on_start=started.append)
    report = run_attempt(job(command="sleep 0.1"), INFO, watch)
    assert started == [report.pid]
    os.set_blocking(read_fd, False)
    with pytest.raises(BlockingIOError):
        os.read(read_fd, 10)
    os.close(read_fd)
    os.close(write_fd)
