"""What a ``chronod run`` / ``chronod worker`` process knows about itself and the store.

How a process reports and survives store trouble: docs/design.md §7 and docs/faults.md.

It feeds three consumers: the systemd notifications (``READY`` once the store answered, ``STATUS``
with the queue depth or the outage, ``WATCHDOG`` only while healthy), the logs (one line when the
store becomes unreachable, one when it is back) and, with ``--metrics``, the Prometheus metrics.

:class:`StoreHealth`
    Whether the store answers, and whether it accepts writes, as last seen by anyone in this
    process (the sampler, the scheduler loop, the lease keeper, the worker children through the
    event pipe). The two differ on a full disk: reads go on, every write fails. Logs and
    announces transitions only, so an outage is two log lines, not one a second. A store that
    holds something unusable (:class:`~chronod.errors.StoreCorrupt`) is *fatal*: the process
    exits with that line, since no retry can fix it.
:class:`Sampler`
    A thread with a store connection of its own that reads the queue depths and the leader (plus,
    with metrics, every job's state) every :data:`SAMPLE_EVERY` seconds, and every
    :data:`PROBE_WHILE_DOWN` seconds while the store is unreachable so the process learns quickly
    that it is back. Sampling off the main loop keeps a slow store read from delaying a dispatch,
    and sampling on a timer (never per scrape) bounds the load many scrapers can put on the store.
:class:`EventWriter` / :class:`EventReader`
    Worker children are processes of their own: they report their runs (started, finished,
    quarantined) and the store's health as they see it (``store`` events, on each change) as one
    JSON line per event on a pipe (inherited) the supervisor reads from a thread and turns into
    metrics and its own store health. Lines are
    at most ``PIPE_BUF`` bytes, written in one non-blocking ``write``: lines from several children
    never interleave, and a supervisor that falls behind costs dropped samples, never a stalled run.

Health, for the systemd watchdog (see :meth:`Telemetry.problem`)
    A process is healthy while its machinery makes progress: its main loop iterates (it is what
    sends the ping) and its helper threads are alive, and the sampler finished a store request,
    answered *or failed*, within :data:`STALL_AFTER` seconds. The store being *down* is not
    unhealthy: restarting chronod cannot fix Redis, and a restart would kill the running jobs of
    the embedded pool for nothing. The outage is reported instead (log, ``STATUS``,
    ``chronod_store_up 0``) while the process keeps retrying. A store request that *hangs*
    (neither answers nor fails) is different: that is a wedged connection, which a restart does
    fix, so the ping stops and systemd restarts the service after ``WatchdogSec``. A helper
    thread that *died* (:meth:`Telemetry.dead_thread`) is a bug, not a state to wait out: the
    process exits with a line naming it, and the service manager restarts it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import select
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from chronod._proc import Waker, close_quietly, read_available, wait_readable
from chronod.clock import Clock, SystemClock
from chronod.errors import StoreCorrupt, StoreDiskError, StoreError
from chronod.instants import format_utc
from chronod.logs import event
from chronod.notify import Notifier
from chronod.runtime import PoolHooks
from chronod.store.base import LeaderInfo, Store

if TYPE_CHECKING:
    from chronod.config import JobConfig
    from chronod.metrics import ChronodMetrics

log = logging.getLogger("chronod.telemetry")

SAMPLE_EVERY = 5.0  # seconds between store samples while the store answers
PROBE_WHILE_DOWN = 1.0  # seconds between probes while it does not: notice its return quickly
STALL_AFTER = 30.0  # seconds a store request may take before it counts as hung, not failing
STOP_WAIT = 5.0  # seconds stop() waits for a thread in the middle of a store request
PIPE_SIZE = 1 << 20  # bytes asked for the event pipe (Linux; the default 64 KiB is ~400 events)
QUIET_AFTER = 5.0  # seconds without a failure before a run of store failures counts as over


def _nothing() -> None:
    pass


def plural(count: int, noun: str) -> str:
    """``1 job``, ``2 jobs`` (STATUS lines are read by people)."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


class Episode:
    """A run of failures of one kind, for the logs: its first failure and its end get a line, the
    failures in between do not. It ends only once ``quiet`` seconds passed without a failure, so a
    store that fails every few seconds (a disk that is all but full, where each checkpoint frees
    a little room) is one episode of two lines, not two lines per failure. Thread-safe."""

    def __init__(self, monotonic: Callable[[], float], quiet: float = QUIET_AFTER) -> None:
        self._monotonic = monotonic
        self._quiet = quiet
        self._lock = threading.Lock()
        self._started: float | None = None
        self._last_failure = 0.0

    def failed(self) -> bool:
        """Record a failure; True if it starts an episode (the caller logs it)."""
        with self._lock:
            self._last_failure = now = self._monotonic()
            if self._started is not None:
                return False
            self._started = now
            return True

    def succeeded(self) -> float | None:
        """Record a success; the episode's length (seconds) if this ends one (the caller logs
        that), else None."""
        with self._lock:
            if self._started is None:
                return None
            now = self._monotonic()
            if now - self._last_failure < self._quiet:
                return None
            length, self._started = now - self._started, None
            return length


class StoreHealth:
    """Whether the store answers and accepts writes; thread-safe. ``up`` is None until the first
    answer or failure; ``writable`` is True until a write fails."""

    def __init__(self, clock: Clock, metrics: ChronodMetrics | None = None) -> None:
        self.clock = clock
        self.metrics = metrics
        self.wake: Callable[[], None] = _nothing  # the owner's main loop, told of each transition
        self._lock = threading.Lock()
        self.up: bool | None = None
        self.ever_up = False
        self.down_since: datetime | None = None
        self.error = ""
        self._down_at = 0.0  # monotonic
        self.writable = True
        self.write_error = ""
        self.unwritable_since: datetime | None = None
        self._writes = Episode(clock.monotonic)
        self.fatal: str | None = None  # the store holds something unusable: exit

    def ok(self) -> None:
        """The store answered a request."""
        with self._lock:
            was, self.up, self.ever_up = self.up, True, True
            down_for = self.clock.monotonic() - self._down_at
        if was is True:
            return
        if was is False:
            event(log, logging.INFO, "store reachable again", down_for=round(down_for, 1))
        self._changed(up=True)

    def wrote(self) -> None:
        """The store committed a write (it answered, and it accepts writes again once no write
        failed for a few seconds: see :class:`Episode`)."""
        self.ok()
        failed_for = self._writes.succeeded()
        if failed_for is None:
            return
        with self._lock:
            self.writable = True
        event(log, logging.INFO, "store accepts writes again", failed_for=round(failed_for, 1))
        if self.metrics is not None:
            self.metrics.store_writable(True)
        self.wake()

    def failed(self, exc: Exception) -> None:
        """A request failed with ``exc``: a full or failing disk means the store answers but
        cannot write; a corrupt store is fatal; anything else means it cannot be reached."""
        if isinstance(exc, StoreCorrupt):
            self._fatal(str(exc))
        if isinstance(exc, StoreDiskError | StoreCorrupt):
            self._write_failed(exc)
            return
        with self._lock:
            was, self.up, self.error = self.up, False, str(exc)
            if was is not False:
                self.down_since = self.clock.now()
                self._down_at = self.clock.monotonic()
        if was is False:
            return
        event(log, logging.WARNING, f"store unreachable, retrying until it is back: {exc}")
        self._changed(up=False)

    def reported(self, body: Mapping[str, Any]) -> None:
        """A ``store`` event from a worker child (see :meth:`EventWriter.store`)."""
        state, error = body.get("state"), str(body.get("error", ""))
        if state == "wrote":
            self.wrote()
        elif state == "disk":
            self._write_failed(StoreDiskError(error))
        elif state == "corrupt":
            self._fatal(error)
            self._write_failed(StoreCorrupt(error))
        elif state == "unreachable":
            self.failed(StoreError(error))

    def _write_failed(self, exc: Exception) -> None:
        if self.metrics is not None:
            self.metrics.store_write_failed()
        with self._lock:
            self.write_error = str(exc)
        if not self._writes.failed():
            return
        with self._lock:
            self.writable = False
            self.unwritable_since = self.clock.now()
        event(log, logging.ERROR, f"store cannot write, not dispatching until it can: {exc}")
        if self.metrics is not None:
            self.metrics.store_writable(False)
        self.wake()

    def _fatal(self, error: str) -> None:
        with self._lock:
            first, self.fatal = self.fatal is None, self.fatal or error
        if first:
            self.wake()

    def _changed(self, *, up: bool) -> None:
        if self.metrics is not None:
            self.metrics.store_reachable(up)
        self.wake()

    def outage(self) -> str | None:
        """``store unavailable since …: error`` while it is down, ``store cannot write since …:
        error`` while writes fail, else None."""
        with self._lock:
            if self.up is False and self.down_since is not None:
                return f"store unavailable since {format_utc(self.down_since)}: {self.error}"
            if not self.writable and self.unwritable_since is not None:
                since = format_utc(self.unwritable_since)
                return f"store cannot write since {since}: {self.write_error}"
            return None


@dataclass(frozen=True)
class Sample:
    depths: Mapping[str, int]
    leader: LeaderInfo | None

    def queued(self) -> str:
        """``3 queued (default 2, reports 1)`` for a STATUS line."""
        total = sum(self.depths.values())
        detail = ", ".join(f"{q} {n}" for q, n in sorted(self.depths.items()) if n)
        return f"{total} queued" + (f" ({detail})" if detail and len(self.depths) > 1 else "")


class Sampler:
    """Reads the store on a timer from its own thread (module docstring)."""

    def __init__(
        self,
        store: Store,
        health: StoreHealth,
        *,
        clock: Clock,
        metrics: ChronodMetrics | None = None,
        every: float = SAMPLE_EVERY,
        scheduler: str | None = None,
    ) -> None:
        self.store = store
        self.health = health
        self.clock = clock
        self.metrics = metrics
        self.every = every
        self.scheduler = scheduler  # this node announces itself as a scheduler each round
        self.latest: Sample | None = None
        self._jobs: Mapping[str, JobConfig] | None = None  # a config whose periods are not computed
        self._started_at: float | None = None  # monotonic: the request in progress began then
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="chronod-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=STOP_WAIT)
        self.store.close()

    def configured(self, jobs: Mapping[str, JobConfig]) -> None:
        """A config was loaded: compute its jobs' periods (metrics) on the next round."""
        self._jobs = jobs

    def dead(self) -> str | None:
        if self._thread is not None and not self._thread.is_alive() and not self._stop.is_set():
            return "the store sampler thread died"
        return None

    def stalled(self) -> str | None:
        """Why the sampler is not making progress, or None."""
        dead = self.dead()
        if dead is not None:
            return dead
        began = self._started_at
        if began is not None and self.clock.monotonic() - began > STALL_AFTER:
            return f"a store request has hung for more than {STALL_AFTER:g}s"
        return None

    def probe(self) -> bool:
        """One round: read, report to health and metrics; True if the store answered."""
        self._started_at = self.clock.monotonic()
        try:
            if self.scheduler is not None:  # so that `chronod status` lists standbys too
                self.store.announce(self.scheduler, "scheduler")
            depths = self.store.queue_depths()
            leader = self.store.leader()
            states = self.store.job_states() if self.metrics is not None else None
        except StoreError as exc:
            self.health.failed(exc)
            return False
        finally:
            self._started_at = None
        self.latest = Sample(depths, leader)
        self.health.ok()
        if self.metrics is not None:
            self.metrics.sampled(depths, leader, states)
        return True

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self._periods()
                answered = self.probe()
                self._stop.wait(self.every if answered else PROBE_WHILE_DOWN)
        except BaseException:
            log.exception("the store sampler crashed")  # the watchdog notices (stalled)
            raise

    def _periods(self) -> None:
        jobs, self._jobs = self._jobs, None
        if jobs is not None and self.metrics is not None:
            self.metrics.configured(jobs, self.clock.now())


# --------------------------------------------------------------------------------------------------
# Worker children → supervisor


class EventWriter:
    """In a worker child: report a run event to the supervisor (module docstring); never blocks."""

    def __init__(self, fd: int | None, monotonic: Callable[[], float] | None = None) -> None:
        self.fd = fd
        self._monotonic = monotonic or SystemClock().monotonic
        self._store_state: str | None = None
        self._store_sent = 0.0

    def store(self, exc: StoreError | None) -> None:
        """The store as this child just saw it: None after a committed write, else the error.
        Sent when it changes, and again at most every QUIET_AFTER / 2 seconds while it stays
        the same: the supervisor ends a run of failures only after QUIET_AFTER seconds without
        one (:class:`Episode`), so it must keep hearing of failures that go on, and hear of a
        success after that time."""
        if exc is None:
            state = "wrote"
        elif isinstance(exc, StoreCorrupt):
            state = "corrupt"
        elif isinstance(exc, StoreDiskError):
            state = "disk"
        else:
            state = "unreachable"
        now = self._monotonic()
        if state != self._store_state or now - self._store_sent >= QUIET_AFTER / 2:
            self._store_state, self._store_sent = state, now
            self.emit("store", state=state, error=None if exc is None else str(exc)[:300])

    def emit(self, kind: str, **fields: object) -> None:
        if self.fd is None:
            return
        body = {"event": kind, **{k: v for k, v in fields.items() if v is not None}}
        data = (json.dumps(body, separators=(",", ":"), default=str) + "\n").encode()
        if len(data) > select.PIPE_BUF:  # larger writes are not atomic: could interleave
            event(log, logging.DEBUG, "run event too large to report", kind=kind)
            return
        try:
            os.write(self.fd, data)
        except OSError as exc:  # full (the supervisor is behind) or gone: a lost sample
            event(log, logging.DEBUG, f"run event not reported: {exc}", kind=kind)


class EventReader:
    """In the supervisor: a pipe for the children and a thread passing each line to ``on_event``."""

    def __init__(self, on_event: Callable[[dict[str, Any]], None]) -> None:
        self.on_event = on_event
        self.read_fd, self.write_fd = os.pipe()
        os.set_blocking(self.read_fd, False)
        os.set_blocking(self.write_fd, False)  # the children's writes: see EventWriter
        resize = getattr(fcntl, "F_SETPIPE_SZ", None)  # Linux only
        if resize is not None:
            with contextlib.suppress(OSError):  # above /proc/sys/fs/pipe-max-size: keep 64 KiB
                fcntl.fcntl(self.write_fd, resize, PIPE_SIZE)
        self._stop = Waker()
        self._partial = b""
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="chronod-events", daemon=True)
        self._thread.start()

    def alive(self) -> bool:
        return self._thread is None or self._thread.is_alive()

    def stop(self) -> None:
        """Read what is left, stop the thread, close the pipe (after the children are gone)."""
        self._stop.wake()
        if self._thread is not None:
            self._thread.join(timeout=STOP_WAIT)
        self._drain()
        for fd in (self.read_fd, self.write_fd):
            close_quietly(fd)
        self._stop.close()

    def _run(self) -> None:
        try:
            while True:
                ready = wait_readable([self.read_fd, self._stop.read_fd], 1.0)
                if self._stop.read_fd in ready:
                    return
                if self.read_fd in ready:
                    self._drain()
        except BaseException:
            log.exception("the run event reader crashed")  # the watchdog notices (alive)
            raise

    def _drain(self) -> None:
        data, _ = read_available(self.read_fd)
        *lines, self._partial = (self._partial + data).split(b"\n")
        for line in lines:
            self._dispatch(line)

    def _dispatch(self, line: bytes) -> None:
        try:
            body = json.loads(line)
        except ValueError:
            event(log, logging.DEBUG, "unreadable run event", line=line[:200])
            return
        if isinstance(body, dict):
            self.on_event(body)


# --------------------------------------------------------------------------------------------------
# One process's telemetry


class Telemetry:
    """The store health, the sampler and (with metrics) the run event pipe of one process."""

    def __init__(
        self,
        store: Store,
        *,
        clock: Clock,
        metrics: ChronodMetrics | None,
        scheduler: str | None = None,
    ) -> None:
        self.metrics = metrics
        self.health = StoreHealth(clock, metrics)
        self.sampler = Sampler(
            store, self.health, clock=clock, metrics=metrics, scheduler=scheduler
        )
        # Always: the worker children report the store's health on it, metrics or not.
        self.events = EventReader(self._on_event)
        self.hooks = PoolHooks(events=self.events.write_fd)
        self._announced = False  # READY=1 sent
        self._unhealthy: str | None = None  # why the watchdog was last not fed

    def start(self, wake: Callable[[], None]) -> None:
        """Start the threads; ``wake`` is called when the store goes away or comes back."""
        self.health.wake = wake
        self.events.start()
        self.sampler.start()

    def stop(self) -> None:
        self.sampler.stop()
        self.events.stop()

    def _on_event(self, body: dict[str, Any]) -> None:
        if body.get("event") == "store":
            self.health.reported(body)
        elif self.metrics is not None:
            self.metrics.run_event(body)

    def configured(self, jobs: Mapping[str, JobConfig]) -> None:
        self.sampler.configured(jobs)

    def problem(self) -> str | None:
        """Why this process is not healthy (module docstring), or None."""
        return self.dead_thread() or self.sampler.stalled()

    def dead_thread(self) -> str | None:
        """Which helper thread ended without being asked to (a bug: the process should exit and
        be restarted), or None."""
        if not self.events.alive():
            return "the run event reader thread died"
        return self.sampler.dead()

    def fatal(self) -> str | None:
        """Why this process must exit (the store holds something unusable), or None."""
        return self.health.fatal

    def announce(self, notifier: Notifier, status: str, *, reloaded: bool = False) -> None:
        """``READY=1`` the first time the store has answered and after a reload (once the store
        has answered: never early); otherwise ``STATUS=`` if it changed."""
        if self.health.ever_up and (reloaded or not self._announced):
            notifier.ready(status)
            self._announced = True
        else:
            notifier.status(status)

    def feed_watchdog(self, notifier: Notifier, problem: str | None = None) -> None:
        """Ping the watchdog unless ``problem`` (the caller's own) or :meth:`problem` says why not.

        Each change of cause is logged once."""
        problem = problem or self.problem()
        if problem is None:
            notifier.watchdog()
            if self._unhealthy is not None:
                event(log, logging.INFO, "healthy again: feeding the systemd watchdog")
        elif problem != self._unhealthy:
            event(log, logging.ERROR, f"unhealthy, not feeding the systemd watchdog: {problem}")
        self._unhealthy = problem

    def queued(self) -> str:
        sample = self.sampler.latest
        return sample.queued() if sample is not None else "queue depth not sampled yet"

    def status_line(
        self,
        serves: str,
        *,
        role: str | None = None,
        role_in_outage: str | None = None,
        store: str | None = None,
    ) -> str:
        """The one ``STATUS=`` line of a ``run`` or ``worker`` process (:mod:`chronod.notify`).

        ``serves`` is what the process runs (``12 jobs``, ``4 workers on default``), ``role``
        what it is while the store answers (``leader, epoch 7``), ``role_in_outage`` what it is
        while the store fails (``not dispatching``), ``store`` the store it waits for at start.
        The store's trouble comes first, since it is what the reader needs to know; the queue
        depth only while the store answers::

            ROLE; SERVES; QUEUED
            OUTAGE; ROLE_IN_OUTAGE; SERVES
            waiting for the store (STORE); SERVES
        """
        outage = self.health.outage()
        if outage is not None:
            return _joined(outage, role_in_outage, serves)
        if not self.health.ever_up:
            waiting = "waiting for the store" + (f" ({store})" if store else "")
            return _joined(waiting, serves)
        return _joined(role, serves, self.queued())


def _joined(*parts: str | None) -> str:
    return "; ".join(part for part in parts if part)
