"""The fork server (chronod._forkserver): call-module caching, retirement, replacement, refusals,
the next run's process forked ahead of need (a spare, chronod._runchild).

Each test counts how often a call module's top-level code ran by having it append a line to a file
at import: that is what a user would notice (a module-level side effect running once per server
rather than once per run), and it is independent of the server's own bookkeeping.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import textwrap
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from chronod._forkserver import ForkServer
from chronod.config import JobConfig, parse_config
from chronod.runner import Ending, RunInfo, run_attempt
from chronod.store.base import Outcome
from chronod.tz import UTC
from tests.procs import child_pids, pid_alive, wait_until

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="PR_SET_PDEATHSIG, /proc")

INFO = RunInfo(
    job="t",
    run_id="t@2026-11-27T14:30:00Z",
    slot=datetime(2026, 11, 27, tzinfo=UTC),
    attempt=1,
    epoch=1,
)
BASE = parse_config(
    b'[defaults]\ntimezone = "UTC"\n[jobs.t]\nevery = "1m"\ncommand = "true"\n', Path("x.toml")
).jobs["t"]


class Lib:
    """A directory with call modules whose imports are counted in ``imports``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.imports = root / "imports.log"

    def module(self, body: str = "") -> str:
        name = f"fsmod_{uuid.uuid4().hex[:8]}"
        head = f"with open({str(self.imports)!r}, 'a') as _f:\n    _f.write({name!r} + '\\n')\n"
        tail = "def work(*args, **kwargs):\n    print('worked', args, kwargs)\n"
        (self.root / f"{name}.py").write_text(head + textwrap.dedent(body) + tail)
        return name

    def count(self, name: str) -> int:
        if not self.imports.exists():
            return 0
        return self.imports.read_text().split().count(name)


@pytest.fixture
def lib(tmp_path: Path) -> Lib:
    root = tmp_path / "lib"
    root.mkdir()
    return Lib(root)


@pytest.fixture
def server(lib: Lib) -> Iterator[ForkServer]:
    notices: list[str] = []
    fork_server = ForkServer(sys_path=[str(lib.root), *sys.path], notice=notices.append)
    fork_server.notices = notices  # type: ignore[attr-defined]
    yield fork_server
    fork_server.close()


def call(module: str, **changes: Any) -> JobConfig:
    return replace(BASE, command=None, call=f"{module}:work", args=(1,), **changes)


def succeed(job: JobConfig, server: ForkServer) -> None:
    report = run_attempt(job, INFO, None, server)
    assert report.ending is Ending.EXITED, report
    assert report.outcome is Outcome.SUCCEEDED, report.output
    assert "worked (1,)" in report.output


def test_a_call_module_is_imported_by_the_first_run_and_once_more_by_the_server(
    lib: Lib, server: ForkServer
) -> None:
    name = lib.module()
    for _ in range(4):
        succeed(call(name), server)
    # Run 1 imported it itself, then the server did; runs 2-4 were forked with it imported.
    assert lib.count(name) == 2


def test_a_job_with_env_or_cwd_imports_its_module_in_every_run(
    lib: Lib, server: ForkServer, tmp_path: Path
) -> None:
    name = lib.module()
    for _ in range(3):
        succeed(call(name, env={"X": "1"}), server)
    assert lib.count(name) == 3
    other = lib.module()
    for _ in range(2):
        succeed(call(other, cwd=str(tmp_path)), server)
    assert lib.count(other) == 2


def test_a_call_run_gets_exactly_its_environment_whatever_the_server_import_changed(
    lib: Lib, server: ForkServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Runs apply only the differences from the server's environment: what a cached module's
    # import added or changed there must still be gone from the run, in os.environ and in the C
    # environment that a program it starts inherits.
    monkeypatch.setenv("FS_SHARED", "worker")
    name = lib.module(
        """
        import json, os, subprocess
        os.environ["FS_SHARED"] = "import"
        os.environ["FS_LEFT"] = "import"
        def show():
            seen = {k: os.environ.get(k) for k in ("FS_SHARED", "FS_LEFT", "CHRONOD_RUN_ID")}
            inherited = subprocess.run(["env"], capture_output=True, text=True).stdout
            print(json.dumps([seen, sorted(inherited.splitlines())]))
        """
    )
    job = replace(BASE, command=None, call=f"{name}:show")
    # Run 1 imports it itself (and sees what its own import did); runs 2-3 are forked from the
    # server that imported it.
    assert run_attempt(job, INFO, None, server).outcome is Outcome.SUCCEEDED
    for _ in range(2):
        report = run_attempt(job, INFO, None, server)
        assert report.outcome is Outcome.SUCCEEDED, report.output
        seen, inherited = json.loads(report.output)
        assert seen == {"FS_SHARED": "worker", "FS_LEFT": None, "CHRONOD_RUN_ID": INFO.run_id}
        assert "FS_SHARED=worker" in inherited
        assert not [line for line in inherited if line.startswith("FS_LEFT=")]
    assert lib.count(name) == 2


def test_a_new_server_imports_again(lib: Lib, server: ForkServer) -> None:
    name = lib.module()
    succeed(call(name), server)
    succeed(call(name), server)
    before = server.pid
    server.close()  # what a worker does on reload
    succeed(call(name), server)
    assert server.pid != before
    assert lib.count(name) == 4  # two per server


def test_a_module_that_starts_a_thread_retires_the_server_and_is_not_cached_again(
    lib: Lib, server: ForkServer
) -> None:
    name = lib.module(
        """
        import threading, time
        threading.Thread(target=time.sleep, args=(3600,), daemon=True).start()
        """
    )
    succeed(call(name), server)  # the server imports it afterwards, finds a thread, retires
    first = server.pid
    for _ in range(3):
        succeed(call(name), server)
    assert server.pid != first  # replaced: forking a threaded process is unsafe
    # Run 1 + the retired server's import + one per later run, never cached by the new server.
    assert lib.count(name) == 5
    assert any("gone" in notice for notice in server.notices)  # type: ignore[attr-defined]


def test_a_killed_server_is_replaced_on_the_next_run(lib: Lib, server: ForkServer) -> None:
    name = lib.module()
    succeed(call(name), server)
    dead = server.pid
    assert dead is not None
    os.kill(dead, signal.SIGKILL)
    succeed(call(name), server)
    assert server.pid not in (None, dead)


def test_a_missing_program_or_cwd_is_refused_without_losing_the_server(
    server: ForkServer, tmp_path: Path
) -> None:
    missing = replace(BASE, command=("/nonexistent/program",))
    report = run_attempt(missing, INFO, None, server)
    assert report.ending is Ending.NOT_STARTED
    assert "nonexistent" in (report.error or "")
    pid = server.pid
    nowhere = replace(BASE, command="true", cwd=str(tmp_path / "absent"))
    assert run_attempt(nowhere, INFO, None, server).ending is Ending.NOT_STARTED
    assert run_attempt(replace(BASE, command="true"), INFO, None, server).outcome is (
        Outcome.SUCCEEDED
    )
    assert server.pid == pid


def test_runs_start_with_default_signal_dispositions(server: ForkServer) -> None:
    # The server ignores SIGINT/SIGTERM/SIGHUP (it follows its worker); a run must not inherit that.
    script = "grep -E '^Sig(Ign|Blk)' /proc/self/status"
    report = run_attempt(replace(BASE, command=script), INFO, None, server)
    assert report.outcome is Outcome.SUCCEEDED, report.output
    masks = dict(line.split(":") for line in report.output.split("\n") if ":" in line)
    ignored = int(masks["SigIgn"].strip(), 16)
    blocked = int(masks["SigBlk"].strip(), 16)
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGPIPE):
        assert not ignored & (1 << (sig - 1)), signal.Signals(sig).name
        assert not blocked & (1 << (sig - 1)), signal.Signals(sig).name


def idle_children(server: ForkServer) -> set[int]:
    """The fork server's live children: between runs, only the next run's process (a spare)."""
    assert server.pid is not None
    return {pid for pid in child_pids(server.pid) if pid_alive(pid)}


def test_the_next_run_is_forked_ahead_of_need_and_gets_exactly_its_own_environment(
    lib: Lib, server: ForkServer
) -> None:
    # The fork is off the run's path: while the worker is between runs, the server already holds
    # the next run's process, and the next run starts in it (its pid is the spare's).
    name = lib.module(
        """
        import json, os, subprocess
        def show():
            seen = {k: os.environ.get(k) for k in ("FS_FIRST", "CHRONOD_RUN_ID")}
            inherited = subprocess.run(["env"], capture_output=True, text=True).stdout
            print(json.dumps([os.getpid(), seen, sorted(inherited.splitlines())]))
        """
    )
    show = replace(BASE, command=None, call=f"{name}:show")
    first = run_attempt(replace(show, env={"FS_FIRST": "1"}), INFO, None, server)
    assert first.outcome is Outcome.SUCCEEDED, first.output
    # A spare after a call rehearses that call's environment; the next run sees only its own.
    for run_id, job in (("t@2026-11-27T14:31:00Z", show), ("t@2026-11-27T14:32:00Z", BASE)):
        spare = wait_until(lambda: idle_children(server), timeout=10, what="a spare")
        info = replace(INFO, run_id=run_id)
        report = run_attempt(job, info, None, server)
        assert report.outcome is Outcome.SUCCEEDED, report.output
        assert {report.pid} == spare
        if job.call is not None:
            pid, seen, inherited = json.loads(report.output)
            assert pid == report.pid
            assert seen == {"FS_FIRST": None, "CHRONOD_RUN_ID": run_id}
            assert f"CHRONOD_RUN_ID={run_id}" in inherited
            assert not [line for line in inherited if line.startswith("FS_FIRST=")]


def test_a_run_whose_spare_died_is_forked_when_asked_for(lib: Lib, server: ForkServer) -> None:
    name = lib.module()
    succeed(call(name), server)
    (spare,) = wait_until(lambda: idle_children(server), timeout=10, what="a spare")
    os.kill(spare, signal.SIGKILL)
    wait_until(lambda: not pid_alive(spare), timeout=10, what="the spare's end")
    pid = server.pid
    report = run_attempt(call(name), INFO, None, server)
    assert report.outcome is Outcome.SUCCEEDED, report.output
    assert "worked (1,)" in report.output
    assert report.pid != spare
    assert server.pid == pid  # the same server forked it; and a spare follows again
    wait_until(lambda: idle_children(server), timeout=10, what="a new spare")
