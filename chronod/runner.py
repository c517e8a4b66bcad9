"""Run one attempt of one run in its own process group (docs/design.md §4).

:func:`run_attempt` starts the job and supervises it until it is over, in one single-threaded loop
that ``select``s on the output pipe, the fork server's socket (which says when the main process
exited) and the worker's wake-up pipe, with a timeout set by the nearest deadline (heartbeat, job
timeout, kill grace, drain). Time is monotonic; nothing sleeps.

Starting
    Every run is started by the worker's fork server (:mod:`chronod._forkserver`), a small process
    that forks it, so starting costs neither a fork of the worker nor a fresh interpreter.
    ``command`` as a string runs as ``/bin/sh -c STRING``; as an array it is exec'd as argv
    (``PATH`` from the run's environment). ``call`` runs the function in the forked process
    (:mod:`chronod._call`); its module may already be imported there (see "Call modules" in
    :mod:`chronod._forkserver`). Every run gets a new session, so its process group id is its pid;
    stdin is ``/dev/null``; stdout and stderr share one pipe. The environment is the worker's
    (minus systemd's ``NOTIFY_SOCKET``/``WATCHDOG_*``, which are the worker's own), plus the job's
    ``env``, plus ``CHRONOD_JOB``, ``CHRONOD_RUN_ID``, ``CHRONOD_SLOT`` (ISO 8601, ``Z``),
    ``CHRONOD_ATTEMPT``, ``CHRONOD_EPOCH`` and, for a job with ``after``,
    ``CHRONOD_UPSTREAM_RUN_ID``, which the job's ``env`` cannot override. On Linux
    the main process gets ``PR_SET_PDEATHSIG = SIGKILL`` tied to the fork server, which has the
    same tied to the worker: if the worker dies, the run's main process dies with it rather than
    run on unsupervised while its attempt is reclaimed elsewhere. (If only the fork server dies,
    the run dies too, and the attempt ends ``failed``: killed by SIGKILL.)

Ending
    * The run is over when its main process has exited **and** nothing is left in its process
      group. Whatever it left running in the group (``sleep 1000 &``) is terminated like a timeout
      would (SIGTERM, SIGKILL after ``kill_grace``): a run's lifetime is its main process's, as for
      a systemd service. The outcome is still the main process's exit status. (A process that
      leaves the group with ``setsid`` escapes this; contain such jobs with a cgroup.)
    * ``timeout``: SIGTERM to the group, SIGKILL to the group ``kill_grace`` later → ``timed-out``.
    * Lost attempt lease (the heartbeat callback returns False: the run was reclaimed and may be
      running elsewhere): the same termination; the report says ``lease-lost`` and the worker
      discards it.
    * Worker stopping (:class:`StopRequest`): ``terminate_at`` reached → the same termination;
      ``kill`` → SIGKILL at once. The report says ``interrupted``; the worker hands the run back.
    * If the runner itself fails (an exception from a callback), the group is SIGKILLed first.

Exit codes
    The main process's exit status; death by signal ``n`` is reported as ``128 + n`` (as a shell
    reports it: 137 for SIGKILL, 143 for SIGTERM) and the run's ``error`` names the signal, so a
    program that itself exits 137 is still told apart.

Output
    Read without blocking as it comes. The last :data:`~chronod.store.base.OUTPUT_TAIL` bytes go
    into the report (decoded as UTF-8, invalid bytes replaced); every line goes to the
    ``chronod.job`` logger as ``[RUN_ID] line``.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Any

from chronod._forkserver import ForkServer, StartFailed
from chronod._proc import (
    close_quietly,
    exit_code_of,
    group_alive,
    read_available,
    reap_group,
    set_nonblocking,
    signal_group,
    signal_name,
    wait_readable,
)
from chronod.celery.publish import Message, Publisher
from chronod.config import JobConfig
from chronod.instants import format_utc
from chronod.logs import event
from chronod.store.base import OUTPUT_TAIL, AttemptResult, Outcome, upstream_of

log = logging.getLogger("chronod.runner")
job_log = logging.getLogger("chronod.job")

MAX_WAIT = 1.0  # seconds: the longest single wait (signals wake the loop earlier via wake_fd)
POLL_EXIT = 0.05  # seconds between looks at the main process once its fork server is gone
POLL_GROUP = 0.02  # seconds between looks at a group's leftovers once the main process is gone
KILL_PATIENCE = 2.0  # seconds after SIGKILL to wait for the group to vanish (D state) before going
MAX_LINE = 16 * 1024  # bytes: a longer line without a newline is logged in pieces
# The worker's own dealings with systemd: a job that inherited them could speak for the worker.
WORKER_ONLY_ENV = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


class Ending(str, Enum):
    """Why an attempt ended, from the runner's point of view."""

    EXITED = "exited"  # the main process exited by itself: succeeded or failed by its status
    TIMED_OUT = "timed-out"  # terminated at the job's timeout
    LEASE_LOST = "lease-lost"  # terminated because the attempt lease was lost: discard the result
    INTERRUPTED = "interrupted"  # terminated because the worker is stopping: hand the run back
    NOT_STARTED = "not-started"  # could not be started (no such program, bad cwd, fork failed)
    SENT = "sent"  # a celery job's message is with the broker (chronod.celery.publish)


@dataclass(frozen=True, kw_only=True)
class RunInfo:
    """The identity of the attempt, as the job sees it in its environment."""

    job: str
    run_id: str
    slot: datetime
    attempt: int
    epoch: int

    def environment(self) -> dict[str, str]:
        # A job with 'after' learns which upstream run it follows (docs/schedules.md).
        upstream = upstream_of(self.run_id)
        return {
            "CHRONOD_JOB": self.job,
            "CHRONOD_RUN_ID": self.run_id,
            "CHRONOD_SLOT": format_utc(self.slot),
            "CHRONOD_ATTEMPT": str(self.attempt),
            "CHRONOD_EPOCH": str(self.epoch),
            **({} if upstream is None else {"CHRONOD_UPSTREAM_RUN_ID": upstream}),
        }


@dataclass(kw_only=True)
class StopRequest:
    """Set by the worker (from its signal handlers); read by the runner on every pass."""

    terminate_at: float | None = None  # monotonic: terminate the run (SIGTERM, grace, SIGKILL)
    kill: bool = False  # SIGKILL the run now


@dataclass(frozen=True, kw_only=True)
class Supervision:
    """How the worker watches over a run: heartbeat, stop requests, wake-ups, start notice."""

    heartbeat: Callable[[], bool] = lambda: True  # False: the attempt lease is lost
    heartbeat_every: float = 10.0  # seconds
    stop: StopRequest = field(default_factory=StopRequest)
    wake_fd: int | None = None  # readable when the worker was signalled (drained by the runner)
    on_start: Callable[[int], None] | None = None  # called with the pid once the run started
    monotonic: Callable[[], float] = time.monotonic


@dataclass(frozen=True, kw_only=True)
class Report:
    """What happened to one attempt."""

    ending: Ending
    exit_code: int | None
    output: str  # tail, at most OUTPUT_TAIL bytes of UTF-8
    error: str | None
    pid: int | None
    duration: float  # seconds, start to end

    @property
    def outcome(self) -> Outcome | None:
        """The outcome to record; None when nothing may be recorded (lease lost, handed back)."""
        if self.ending is Ending.EXITED:
            return Outcome.SUCCEEDED if self.exit_code == 0 else Outcome.FAILED
        if self.ending is Ending.TIMED_OUT:
            return Outcome.TIMED_OUT
        if self.ending is Ending.NOT_STARTED:
            return Outcome.FAILED
        if self.ending is Ending.SENT:
            return Outcome.SENT
        return None

    def result(self, retry_at: datetime | None = None) -> AttemptResult:
        outcome = self.outcome
        if outcome is None:
            raise ValueError(f"an attempt that ended {self.ending.value} has no result to record")
        return AttemptResult(
            outcome=outcome,
            exit_code=self.exit_code,
            output=self.output,
            error=self.error,
            retry_at=retry_at if outcome in (Outcome.FAILED, Outcome.TIMED_OUT) else None,
        )


def run_attempt(
    job: JobConfig,
    info: RunInfo,
    watch: Supervision | None = None,
    server: ForkServer | None = None,
    publisher: Publisher | None = None,
) -> Report:
    """Run ``job`` once for ``info`` and return how it went (see the module docstring).

    ``server`` is the worker's fork server; without one, a server is started for this attempt
    alone (tests, one-off runs). A ``celery`` job is published with ``publisher`` instead."""
    if job.celery is not None:
        if publisher is None:
            raise ValueError(f"job {job.name!r} is a celery job: publishing needs a Publisher")
        return publish_run(job, info, publisher)
    if server is None:
        own = ForkServer()
        try:
            return run_attempt(job, info, watch, own)
        finally:
            own.close()
    watch = watch or Supervision()
    began = watch.monotonic()
    out_r, out_w = os.pipe()
    report_r, report_w = os.pipe() if job.call is not None else (-1, -1)
    try:
        fds = [fd for fd in (out_w, report_w) if fd >= 0]
        leader = _Leader(server.spawn(start_request(job, run_environment(job, info)), fds))
    except StartFailed as exc:
        for fd in (out_r, report_r):
            close_quietly(fd if fd >= 0 else None)
        return Report(
            ending=Ending.NOT_STARTED,
            exit_code=None,
            output="",
            pid=None,
            error=f"cannot start: {exc}",
            duration=watch.monotonic() - began,
        )
    finally:
        for fd in (out_w, report_w):
            close_quietly(fd if fd >= 0 else None)
    if watch.wake_fd is not None:
        set_nonblocking(watch.wake_fd)  # it is drained, never waited on by reading
    report_fd = report_r if report_r >= 0 else None
    attempt = _Attempt(
        job, info, watch, leader=leader, server=server, out_fd=out_r, report_fd=report_fd
    )
    return attempt.supervise(began)


def publish_run(job: JobConfig, info: RunInfo, publisher: Publisher) -> Report:
    """A celery job's attempt: its message handed to the broker (docs/celery.md)."""
    message = Message.of(
        job, run_id=info.run_id, slot=info.slot, attempt=info.attempt, epoch=info.epoch
    )
    error, took = publisher.attempt(message)
    return Report(
        ending=Ending.NOT_STARTED if error else Ending.SENT,
        exit_code=None,
        output="" if error else message.describe(),
        error=error,
        pid=None,
        duration=took,
    )


def run_environment(
    job: JobConfig, info: RunInfo, base: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The worker's environment (``base``), then the job's ``env``, then the ``CHRONOD_*`` set."""
    env = dict(os.environ if base is None else base)
    for name in WORKER_ONLY_ENV:
        env.pop(name, None)
    env.update(job.env)
    env.update(info.environment())
    return env


def start_request(job: JobConfig, env: Mapping[str, str]) -> dict[str, Any]:
    """What the fork server is asked to start (:mod:`chronod._forkserver`)."""
    if job.call is not None:
        return {
            "call": job.call,
            "args": list(job.args),
            "kwargs": dict(job.kwargs),
            "env": dict(env),
            "cwd": job.cwd,
            # Only where an import in the server sees what the run's own import would.
            "cache": not job.env and job.cwd is None,
        }
    assert job.command is not None
    argv = ["/bin/sh", "-c", job.command] if isinstance(job.command, str) else list(job.command)
    return {"argv": argv, "env": dict(env), "cwd": job.cwd}


@dataclass
class _Leader:
    """The run's main process (its pid is also its process group id)."""

    pid: int
    status: int | None = None  # wait status once known
    vanished: bool = False  # its fork server died and it was reaped elsewhere: status unknown
    orphaned: bool = False  # its fork server died: we reaped it ourselves (as the subreaper)

    @property
    def done(self) -> bool:
        return self.status is not None or self.vanished


# --------------------------------------------------------------------------------------------------
# supervising


class _Output:
    """The tail kept for the run record, and every line sent to the log."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.tail = bytearray()
        self.partial = bytearray()

    def feed(self, data: bytes) -> None:
        if not data:
            return
        self.tail += data
        if len(self.tail) > OUTPUT_TAIL:
            del self.tail[: len(self.tail) - OUTPUT_TAIL]
        self.partial += data
        *lines, rest = bytes(self.partial).split(b"\n")
        for line in lines:
            self._log(line)
        while len(rest) > MAX_LINE:
            self._log(rest[:MAX_LINE])
            rest = rest[MAX_LINE:]
        self.partial = bytearray(rest)

    def finish(self) -> str:
        if self.partial:
            self._log(bytes(self.partial))
            self.partial.clear()
        text = self.tail.decode("utf-8", errors="replace")
        encoded = text.encode("utf-8")
        if len(encoded) > OUTPUT_TAIL:  # replacement characters are longer than the bytes
            text = encoded[-OUTPUT_TAIL:].decode("utf-8", errors="ignore")
        return text

    def _log(self, line: bytes) -> None:
        text = line.decode("utf-8", errors="replace").rstrip("\r")
        job_log.info("[%s] %s", self.run_id, text)


class _Phase(Enum):
    """Where an attempt is on its way to the end. Every move is made by :meth:`_Attempt._end`."""

    RUNNING = "running"  # no ending decided yet
    ENDING = "ending"  # an ending is decided; nothing signalled yet (or nothing left to signal)
    TERMINATING = "terminating"  # SIGTERM sent to the group: SIGKILL due after ``kill_grace``
    KILLED = "killed"  # SIGKILL sent: the group should vanish within KILL_PATIENCE


class _Attempt:
    """The supervision loop of one started run.

    Each pass gathers facts (the main process exited, a heartbeat lost the lease, a deadline or a
    stop request came) and :meth:`_end` alone turns them into the ending and the next phase.
    """

    def __init__(
        self,
        job: JobConfig,
        info: RunInfo,
        watch: Supervision,
        *,
        leader: _Leader,
        server: ForkServer,
        out_fd: int,
        report_fd: int | None,
    ) -> None:
        self.job = job
        self.info = info
        self.watch = watch
        self.leader = leader
        self.server = server
        self.pgid = leader.pid
        self.out_fd: int | None = out_fd
        self.report_fd = report_fd
        self.output = _Output(info.run_id)
        self.phase = _Phase.RUNNING
        self.ending: Ending | None = None  # decided by _end (None while RUNNING)
        self.phase_since = 0.0  # monotonic: when the current phase began
        self.terminated = False  # SIGTERM was sent before any SIGKILL
        self.lease_lost = False  # a heartbeat said so: the result is discarded, whatever it is
        self.deadline = 0.0
        self.next_beat = 0.0
        self.exited_at: float | None = None
        set_nonblocking(out_fd)

    def supervise(self, began: float) -> Report:
        self.deadline = began + self.job.timeout.total_seconds()
        self.next_beat = began + self.watch.heartbeat_every
        try:
            if self.watch.on_start is not None:
                self.watch.on_start(self.leader.pid)
            while not self._over(self.watch.monotonic()):
                self._pass()
        except BaseException:
            self._signal(signal.SIGKILL)  # never leave a run behind unsupervised
            raise
        finally:
            self._collect()
        self._decide(self.watch.monotonic())
        return self._report(began)

    # -- one pass ---------------------------------------------------------------------------------

    def _pass(self) -> None:
        now = self.watch.monotonic()
        self._beat(now)
        self._end(now)
        fds, timeout = self._plan(now)
        ready = wait_readable(fds, timeout)
        if self.out_fd is not None and self.out_fd in ready:
            data, eof = read_available(self.out_fd)
            self.output.feed(data)
            if eof:
                close_quietly(self.out_fd)
                self.out_fd = None
        if self.watch.wake_fd is not None and self.watch.wake_fd in ready:
            read_available(self.watch.wake_fd)
        server = self.server.fileno()
        if server is not None and server in ready:
            self.server.pump()

    def _reap(self, now: float) -> None:
        """Learn whether the main process exited; reap leftovers that became ours."""
        leader = self.leader
        status = self.server.exit_status(leader.pid)
        if status is not None and not leader.done:
            leader.status = status
            self.exited_at = now
        # Leftovers of the run are reparented to the worker (the subreaper), and so is the main
        # process itself if its fork server died first.
        for pid, reaped in reap_group(self.pgid):
            if pid == leader.pid and not leader.done:
                leader.status, leader.orphaned = reaped, True
                self.exited_at = now
        if not leader.done and self.server.lost and not group_alive(self.pgid):
            leader.vanished = True  # reaped by someone else (no subreaper here): status unknown
            self.exited_at = now

    def _over(self, now: float) -> bool:
        self._reap(now)
        if not self.leader.done:
            return False
        if not group_alive(self.pgid):
            return True
        return self.phase is _Phase.KILLED and now >= self.phase_since + KILL_PATIENCE

    def _beat(self, now: float) -> None:
        if self.lease_lost or now < self.next_beat:
            return
        self.next_beat = now + self.watch.heartbeat_every
        if not self.watch.heartbeat():
            self.lease_lost = True
            info = self.info
            event(
                log,
                logging.WARNING,
                "attempt lease lost: terminating the run (its result will be discarded)",
                job=info.job,
                run_id=info.run_id,
                slot=format_utc(info.slot),
                attempt=info.attempt,
                epoch=info.epoch,
            )

    def _decide(self, now: float) -> None:
        """Set the ending from the facts: the first one seen decides it, except that a lost lease
        always does (the result is not ours to record any more, however the run ended)."""
        if self.lease_lost:
            self.ending = Ending.LEASE_LOST
        if self.ending is not None:
            return
        stop = self.watch.stop
        if self.leader.done:
            self.ending = Ending.EXITED
        elif stop.kill or (stop.terminate_at is not None and now >= stop.terminate_at):
            self.ending = Ending.INTERRUPTED
        elif now >= self.deadline:
            self.ending = Ending.TIMED_OUT

    def _end(self, now: float) -> None:
        """Decide the ending (:meth:`_decide`), then move the phase on: SIGTERM to what is left of
        the group, SIGKILL once ``kill_grace`` ran out (at once if the stop says "now")."""
        self._decide(now)
        if self.ending is None or self.phase is _Phase.KILLED:
            return
        if self.phase is _Phase.RUNNING:
            self._enter(_Phase.ENDING, now)
        grace_over = now >= self.phase_since + self.job.kill_grace.total_seconds()
        if self.watch.stop.kill or (self.phase is _Phase.TERMINATING and grace_over):
            self._signal(signal.SIGKILL)
            self._enter(_Phase.KILLED, now)
        elif self.phase is _Phase.ENDING and (not self.leader.done or group_alive(self.pgid)):
            self._signal(signal.SIGTERM)
            self.terminated = True
            self._enter(_Phase.TERMINATING, now)

    def _enter(self, phase: _Phase, now: float) -> None:
        self.phase, self.phase_since = phase, now

    def _signal(self, sig: int) -> None:
        # The fork server says "started" only after the run's setsid(), and a session leader
        # cannot leave its group: the group always reaches the main process.
        signal_group(self.pgid, sig)

    def _plan(self, now: float) -> tuple[list[int], float]:
        """Descriptors to wait on and for how long (seconds)."""
        deadlines = [self.next_beat, now + MAX_WAIT]
        if self.phase is _Phase.RUNNING:
            deadlines.append(self.deadline)
            if self.watch.stop.terminate_at is not None:
                deadlines.append(self.watch.stop.terminate_at)
        elif self.phase is _Phase.TERMINATING:
            deadlines.append(self.phase_since + self.job.kill_grace.total_seconds())
        elif self.phase is _Phase.KILLED:
            deadlines.append(now + POLL_GROUP)
        server = self.server.fileno()
        fds = [fd for fd in (self.out_fd, self.watch.wake_fd, server) if fd is not None]
        if self.leader.done:
            deadlines.append(now + POLL_GROUP)  # leftovers: nothing to wait on but time
        elif server is None:
            deadlines.append(now + POLL_EXIT)  # its server is gone: we (may) reap it ourselves
        return fds, min(deadlines) - now

    # -- the end ----------------------------------------------------------------------------------

    def _collect(self) -> None:
        if self.out_fd is not None:
            data, _ = read_available(self.out_fd)
            self.output.feed(data)
            close_quietly(self.out_fd)
            self.out_fd = None
        reap_group(self.pgid)

    def _call_error(self) -> str | None:
        if self.report_fd is None:
            return None
        data, _ = read_available(self.report_fd)
        close_quietly(self.report_fd)
        self.report_fd = None
        try:
            error = json.loads(data.decode("utf-8")).get("error") if data else None
        except (ValueError, AttributeError):
            return None
        return str(error) if error else None

    def _report(self, began: float) -> Report:
        ending = self.ending or Ending.EXITED
        status = self.leader.status
        exit_code, reason = exit_code_of(status) if status is not None else (None, "not reaped")
        call_error = self._call_error()
        if ending is Ending.EXITED:
            error = call_error or reason
        else:
            error = self._termination_text(ending, exit_code)
        if self.leader.vanished:
            error = "the fork server died during the run: its exit status is unknown"
        elif self.leader.orphaned:
            error = f"{error} (the fork server died during the run, taking it down)"
        return Report(
            ending=ending,
            exit_code=exit_code,
            output=self.output.finish(),
            error=error,
            pid=self.leader.pid,
            duration=(self.exited_at or self.watch.monotonic()) - began,
        )

    def _termination_text(self, ending: Ending, exit_code: int | None) -> str:
        why = {
            Ending.TIMED_OUT: f"timed out after {_seconds(self.job.timeout.total_seconds())}",
            Ending.LEASE_LOST: "attempt lease lost (the run was reclaimed)",
            Ending.INTERRUPTED: "interrupted: the worker is stopping",
        }.get(ending, ending.value)
        killed = self.phase is _Phase.KILLED
        last = "SIGKILL" if killed else "SIGTERM"
        if killed and self.terminated:
            how = f"SIGTERM, then SIGKILL after {_seconds(self.job.kill_grace.total_seconds())}"
        else:
            how = last
        if exit_code is not None and exit_code > 128 and signal_name(exit_code - 128) != last:
            how += f"; ended by {signal_name(exit_code - 128)}"
        elif exit_code is not None and exit_code <= 128:
            how += f"; exited with status {exit_code}"
        return f"{why} ({how})"


def _seconds(value: float) -> str:
    return f"{value:g}s"
