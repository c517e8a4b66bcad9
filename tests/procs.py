"""Process-level test helpers: real ``chronod`` subprocesses, their logs, deadlines and signals.

Every process is started through :class:`Processes`, a context manager that guarantees nothing
outlives the test: on exit it resumes (SIGCONT) and SIGKILLs every process group it started that is
still alive, reaps them, and prints the tail of every log (pytest shows that output for a failing
test). Use it from a fixture::

    @pytest.fixture
    def procs(tmp_path: Path) -> Iterator[Processes]:
        with Processes(tmp_path / "procs") as started:
            yield started

Daemons log JSON lines (``--log-format json``) to a file of their own, which
:class:`ChronodProcess` parses incrementally into :class:`LogEntry` values. Tests wait for
conditions with :func:`wait_until` / :meth:`ChronodProcess.wait_for_log` (polling with a deadline),
never with a bare sleep. Each process runs in its own session (process group), so a terminal's
Ctrl-C never reaches it and :meth:`ChronodProcess.kill_group` can take a worker's job children
down with it; the failure signals (:meth:`~ChronodProcess.kill`, :meth:`~ChronodProcess.stop`, …)
target the chronod process alone, as a crash or a stall would.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

REPO = Path(__file__).resolve().parent.parent
CHRONOD = (sys.executable, "-m", "chronod")
# Variables that would make a child use something other than what the test passes explicitly.
SCRUBBED_ENV = (
    "CHRONOD_CONFIG",
    "CHRONOD_STORE",
    "CHRONOD_LOG_FORMAT",
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    "STATE_DIRECTORY",
)
POLL = 0.02  # seconds between two looks at a condition

T = TypeVar("T")


class Timeout(AssertionError):
    """A condition did not hold before its deadline."""


def wait_until(
    condition: Callable[[], T | None],
    *,
    timeout: float,
    what: str,
    interval: float = POLL,
    context: Callable[[], str] | None = None,
) -> T:
    """Poll ``condition`` until it returns a truthy value (returned) or ``timeout`` seconds pass.

    On timeout raise :class:`Timeout` naming ``what``, plus ``context()`` (e.g. log tails).
    The condition is always evaluated once more after the deadline, so a slow poll never fails a
    condition that holds.
    """
    deadline = time.monotonic() + timeout
    while True:
        expired = time.monotonic() >= deadline
        value = condition()
        if value:
            return value
        if expired:
            detail = f"\n{context()}" if context is not None else ""
            raise Timeout(f"timed out after {timeout:.1f} s waiting for {what}{detail}")
        time.sleep(interval)


def hold_for(
    invariant: Callable[[], bool],
    *,
    seconds: float,
    what: str,
    interval: float = POLL,
    context: Callable[[], str] | None = None,
) -> None:
    """Check ``invariant`` repeatedly for ``seconds``; fail at the first look where it is false.

    For "nothing happens during this window" assertions: the window is the point of the test, so
    it is a deadline, not synchronisation.
    """
    deadline = time.monotonic() + seconds
    while True:
        if not invariant():
            detail = f"\n{context()}" if context is not None else ""
            raise AssertionError(f"{what} stopped holding{detail}")
        if time.monotonic() >= deadline:
            return
        time.sleep(interval)


def write_atomically(path: Path, text: str) -> None:
    """Replace ``path`` in one rename: a daemon reloading concurrently never reads half a file."""
    scratch = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    scratch.write_text(text, encoding="utf-8")
    os.replace(scratch, path)


@dataclass(frozen=True)
class LogEntry:
    """One log line. Non-JSON lines (a traceback, a crash message) have ``level`` ``"raw"``."""

    ts: datetime | None  # aware UTC, from the line itself
    level: str
    logger: str
    msg: str
    fields: dict[str, Any]
    raw: str
    index: int  # position among the process's entries (for "after this one" waits)

    def matches(self, pattern: str | re.Pattern[str]) -> re.Match[str] | None:
        return re.search(pattern, self.msg)


def parse_line(line: str, index: int) -> LogEntry:
    try:
        body = json.loads(line)
    except ValueError:
        body = None
    if not isinstance(body, dict) or "msg" not in body:
        return LogEntry(None, "raw", "", line, {}, line, index)
    stamp = body.pop("ts", None)
    ts = datetime.fromisoformat(stamp.replace("Z", "+00:00")) if isinstance(stamp, str) else None
    level = str(body.pop("level", ""))
    logger = str(body.pop("logger", ""))
    msg = str(body.pop("msg"))
    return LogEntry(ts, level, logger, msg, body, line, index)


class ChronodProcess:
    """One chronod subprocess, its log file, and the signals a test sends it."""

    def __init__(
        self, name: str, argv: Sequence[str], log_path: Path, env: dict[str, str], cwd: Path = REPO
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.started = time.monotonic()
        self.popen = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
            start_new_session=True,
        )
        self._entries: list[LogEntry] = []
        self._offset = 0
        self._partial = b""

    def __repr__(self) -> str:
        return f"<{self.name} pid={self.pid} {'alive' if self.alive() else 'exited'}>"

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def node(self) -> str:
        """The node name the daemon uses in the lease (``host:pid``)."""
        return f"{socket.gethostname()}:{self.pid}"

    # -- the log ----------------------------------------------------------------------------------

    def entries(self) -> list[LogEntry]:
        """Every complete line logged so far (read incrementally)."""
        with self.log_path.open("rb") as handle:
            handle.seek(self._offset)
            data = handle.read()
        self._offset += len(data)
        data = self._partial + data
        *lines, self._partial = data.split(b"\n")
        for line in lines:
            text = line.decode("utf-8", errors="replace").rstrip("\r")
            if text:
                self._entries.append(parse_line(text, len(self._entries)))
        return list(self._entries)

    def find(self, pattern: str | re.Pattern[str], *, after: int = -1) -> list[LogEntry]:
        """Entries whose message matches ``pattern`` (``re.search``), with index > ``after``."""
        return [e for e in self.entries() if e.index > after and e.matches(pattern)]

    def wait_for_log(
        self,
        pattern: str | re.Pattern[str],
        *,
        timeout: float,
        after: int = -1,
        allow_exit: bool = False,
        interval: float = POLL,
    ) -> LogEntry:
        """The first entry after ``after`` matching ``pattern``; fails if the process exits."""

        def look() -> LogEntry | None:
            found = self.find(pattern, after=after)
            if found:
                return found[0]
            if not allow_exit and not self.alive():
                self.entries()
                raise AssertionError(
                    f"{self.name} exited ({self.popen.returncode}) before logging {pattern!r}\n"
                    + self.tail()
                )
            return None

        return wait_until(
            look,
            timeout=timeout,
            what=f"{self.name} to log {pattern!r}",
            interval=interval,
            context=self.tail,
        )

    def last_index(self) -> int:
        """Index of the newest entry (-1 when none): pass as ``after`` to wait for newer ones."""
        entries = self.entries()
        return entries[-1].index if entries else -1

    def tail(self, lines: int = 40) -> str:
        text = self.log_path.read_bytes().decode("utf-8", errors="replace").splitlines()
        shown = "\n".join(f"  {line}" for line in text[-lines:])
        return f"--- {self.name} (pid {self.pid}, {self.status()}), last {lines} lines:\n{shown}"

    # -- state and signals ------------------------------------------------------------------------

    def alive(self) -> bool:
        return self.popen.poll() is None

    def status(self) -> str:
        code = self.popen.poll()
        return "running" if code is None else f"exit {code}"

    def send(self, sig: signal.Signals) -> None:
        """Signal the chronod process itself (not its children)."""
        if self.alive():
            os.kill(self.pid, sig)

    def kill(self) -> float:
        """SIGKILL and reap; returns the wall-clock instant (``time.time()``) of the kill."""
        at = time.time()
        self.send(signal.SIGKILL)
        self.popen.wait(timeout=10)
        return at

    def kill_group(self) -> None:
        """SIGKILL the whole process group (the daemon and any job processes it started)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGCONT)
            os.killpg(self.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=10)

    def stop(self) -> float:
        """SIGSTOP (freeze, as a stalled VM would be); returns the wall-clock instant."""
        at = time.time()
        self.send(signal.SIGSTOP)
        return at

    def cont(self) -> float:
        at = time.time()
        self.send(signal.SIGCONT)
        return at

    def hup(self) -> None:
        self.send(signal.SIGHUP)

    def term(self) -> None:
        self.send(signal.SIGTERM)

    def wait_exit(self, timeout: float) -> int:
        """Wait for the process to exit and return its code."""
        return self.popen.wait(timeout=timeout)

    def close(self) -> None:
        """Kill (if still alive) and release the log handle."""
        if self.popen.poll() is None:
            self.kill_group()
        else:  # the chronod process is gone; job children it left behind are not
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, signal.SIGKILL)
        self._log.close()


@dataclass
class Processes:
    """Starts chronod subprocesses under ``directory`` and makes sure none outlives the test."""

    directory: Path
    env: dict[str, str] = field(default_factory=dict)  # extra environment for every process
    # Working directory of every process; ``python -m chronod`` imports chronod from here first.
    cwd: Path = REPO
    started: list[ChronodProcess] = field(default_factory=list)
    show_logs: bool = True  # print log tails on exit (pytest shows them for a failing test)

    def __post_init__(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)

    def __enter__(self) -> Processes:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cleanup()

    def _environment(self, extra: dict[str, str] | None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in SCRUBBED_ENV}
        path = env.get("PYTHONPATH")
        env["PYTHONPATH"] = f"{REPO}{os.pathsep}{path}" if path else str(REPO)
        env.update(self.env)
        env.update(extra or {})
        return env

    def spawn(
        self, name: str, args: Sequence[str], *, env: dict[str, str] | None = None
    ) -> ChronodProcess:
        """Start ``python -m chronod ARGS``; stdout and stderr go to ``<directory>/<name>.log``."""
        taken = {p.name for p in self.started}
        unique, n = name, 1
        while unique in taken:
            n += 1
            unique = f"{name}-{n}"
        process = ChronodProcess(
            unique,
            [*CHRONOD, *args],
            self.directory / f"{unique}.log",
            self._environment(env),
            self.cwd,
        )
        self.started.append(process)
        return process

    def command(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> ChronodProcess:
        """Start any program (``argv``) with the same guarantees as :meth:`spawn`: own session, log
        in ``<directory>/<name>.log``, killed with its group at the end (for other schedulers that
        benchmarks compare with, say)."""
        taken = {p.name for p in self.started}
        unique, n = name, 1
        while unique in taken:
            n += 1
            unique = f"{name}-{n}"
        process = ChronodProcess(
            unique,
            argv,
            self.directory / f"{unique}.log",
            self._environment(env),
            cwd or self.cwd,
        )
        self.started.append(process)
        return process

    def run(
        self,
        config: Path,
        store: str,
        *,
        workers: int = 0,
        name: str = "run",
        extra: Sequence[str] = (),
        env: dict[str, str] | None = None,
    ) -> ChronodProcess:
        """``chronod --config CONFIG --store STORE --log-format json run --workers N``."""
        args = [
            "--config",
            str(config),
            "--store",
            store,
            "--log-format",
            "json",
            "run",
            "--workers",
            str(workers),
            *extra,
        ]
        return self.spawn(name, args, env=env)

    def worker(
        self,
        config: Path,
        store: str,
        *,
        concurrency: int | None = None,
        queues: Sequence[str] = (),
        name: str = "worker",
        extra: Sequence[str] = (),
        env: dict[str, str] | None = None,
    ) -> ChronodProcess:
        """``chronod --config CONFIG --store STORE --log-format json worker [...]``."""
        args = ["--config", str(config), "--store", store, "--log-format", "json", "worker"]
        if concurrency is not None:
            args += ["--concurrency", str(concurrency)]
        for queue in queues:
            args += ["--queue", queue]
        return self.spawn(name, [*args, *extra], env=env)

    def alive(self) -> list[ChronodProcess]:
        return [p for p in self.started if p.alive()]

    def logs(self, lines: int = 40) -> str:
        """Tails of every process's log, for failure messages."""
        return "\n".join(p.tail(lines) for p in self.started)

    def cleanup(self) -> None:
        """Kill everything still running (resuming stopped ones first), reap, show the logs."""
        for process in self.started:
            process.close()
        if self.show_logs and self.started:
            print(self.logs(60))


@contextlib.contextmanager
def processes(directory: Path, **env: str) -> Iterator[Processes]:
    """``with processes(tmp_path) as procs:`` — :class:`Processes` with extra environment."""
    with Processes(directory, env=dict(env)) as started:
        yield started


# -- processes by pid, and a job body for ``call`` jobs (worker tests and benches) ----------------


def process_state(pid: int) -> str | None:
    """The state letter of ``pid`` from ``/proc/PID/stat`` (``R``, ``S``, ``T``, ``Z``, …), or None
    when there is no such process (Linux)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    fields = stat[stat.rfind(b")") + 2 :].split()
    return fields[0].decode() if fields else None


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` is a process that still runs (a zombie does not count)."""
    state = process_state(pid)
    return state is not None and state not in ("Z", "X")


def group_members(pgid: int) -> list[int]:
    """Pids of the live (non-zombie) processes whose process group is ``pgid`` (Linux)."""
    found: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_bytes()
        except OSError:
            continue  # exited while we looked
        fields = stat[stat.rfind(b")") + 2 :].split()
        if len(fields) >= 3 and fields[0] not in (b"Z", b"X") and int(fields[2]) == pgid:
            found.append(int(entry.name))
    return sorted(found)


def child_pids(pid: int) -> list[int]:
    """Direct children of ``pid`` (Linux ``/proc/PID/task/*/children``)."""
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                found += [int(word) for word in (task / "children").read_text().split()]
    return sorted(set(found))


def signal_pid(pid: int, sig: signal.Signals) -> None:
    """Send ``sig`` to ``pid``; a process already gone is not an error."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def worker_pid(entry: LogEntry) -> int:
    """The pid of the worker child named by a worker log entry's ``worker`` field (``host:pid``)."""
    worker = entry.fields.get("worker")
    assert isinstance(worker, str), f"no worker field in {entry.raw}"
    return int(worker.rpartition(":")[2])


def find_event(
    process: ChronodProcess, pattern: str | re.Pattern[str], *, after: int = -1, **fields: Any
) -> list[LogEntry]:
    """Entries of ``process`` matching ``pattern`` whose fields include ``fields``."""
    return [
        e
        for e in process.find(pattern, after=after)
        if all(e.fields.get(k) == v for k, v in fields.items())
    ]


def wait_for_event(
    process: ChronodProcess,
    pattern: str | re.Pattern[str],
    *,
    timeout: float,
    after: int = -1,
    allow_exit: bool = False,
    **fields: Any,
) -> LogEntry:
    """Like :meth:`ChronodProcess.wait_for_log`, for an entry whose fields include ``fields``."""

    def look() -> LogEntry | None:
        found = find_event(process, pattern, after=after, **fields)
        if found:
            return found[0]
        if not allow_exit and not process.alive():
            raise AssertionError(
                f"{process.name} exited ({process.popen.returncode}) before logging "
                f"{pattern!r} with {fields}\n{process.tail()}"
            )
        return None

    return wait_until(
        look,
        timeout=timeout,
        what=f"{process.name} to log {pattern!r} with {fields}",
        context=process.tail,
    )


def record_run(path: str) -> None:
    """A ``call`` job body: append ``RUN_ID ATTEMPT PID TIME`` (``time.time()`` at entry) to
    ``path`` in one ``write`` (``O_APPEND``: lines from concurrent runs never interleave)."""
    now = time.time()
    line = (
        f"{os.environ.get('CHRONOD_RUN_ID', '-')} {os.environ.get('CHRONOD_ATTEMPT', '-')} "
        f"{os.getpid()} {now:.6f}\n"
    )
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)
