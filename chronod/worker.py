"""Workers: a small supervisor of N child processes, each running one run at a time (DESIGN §4).

Processes
    :class:`WorkerPool` (the supervisor: ``chronod worker``, or embedded in ``chronod run``) forks N
    children with the signals it handles blocked, so none of its handlers can run in a child before
    the child has installed its own. Each child opens its **own** store connection after the fork,
    then loops in :class:`Consumer`: claim → check the job against its own config → run the attempt
    (:mod:`chronod.runner`, the run in its own process group) → finish. The supervisor only forks,
    reaps and respawns: :meth:`WorkerPool.check` reaps children without blocking and respawns the
    ones that died, after a backoff that grows while they keep dying young. It never uses a
    store connection a child could inherit mid-call: the process's store sampler thread
    (:mod:`chronod.telemetry`) holds :attr:`PoolHooks.fork_lock <chronod.runtime.PoolHooks>`
    while in the store, and every fork takes it. Children report their runs (started, finished)
    to the supervisor on a pipe, for ``--metrics``. Children always leave through
    :func:`os._exit` with a named code, never by returning into the supervisor's code.

Signals (in each child)
    SIGTERM, or a first SIGINT: stop claiming; a running run may go on for up to ``drain_timeout``,
    then it is terminated (SIGTERM to its group, SIGKILL after ``kill_grace``) and handed back so
    another worker retries it without spending an attempt. A SIGINT while already stopping: kill
    the run now (SIGKILL) and hand it back. SIGHUP: reload the config file before the next claim.
    A child whose supervisor died stops as on SIGTERM (Linux: ``PR_SET_PDEATHSIG``; elsewhere the
    loop compares :func:`os.getppid` before each claim) and exits :data:`EXIT_ORPHANED`.

Config drift
    A run carries the digest of the job definition it was dispatched with. A child runs it only if
    its own config defines the job with the same digest; otherwise (after re-reading the config
    file once, in case only this worker is behind) it finishes the run as ``config-mismatch``,
    naming the job and host. Nothing from the store is ever executed: the command, call target,
    arguments, environment and cwd all come from the worker's own config.

Retries
    A failed or timed-out attempt with attempts left is retried at store time + ``retry_delay`` ·
    2^(attempt−1), capped at a day (or at ``retry_delay`` if larger), times a uniform jitter of
    ±15 % (so every delay is still longer than the previous one: 2 × 0.85 > 1.15).
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import secrets
import signal
import socket
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import NoReturn

from chronod._proc import (
    FORK_BLOCKED,
    Waker,
    become_subreaper,
    close_quietly,
    die_with_parent,
    open_pidfd,
    reap_strays,
    signal_name,
    signal_process,
    wait_readable,
)
from chronod.clock import Clock, SystemClock
from chronod.config import QUEUE_NAME, Config, JobConfig, load_config
from chronod.errors import (
    ConfigError,
    StoreConfigError,
    StoreError,
    StoreUnavailable,
    UsageError,
)
from chronod.instants import format_utc
from chronod.logs import event
from chronod.metrics import ChronodMetrics
from chronod.notify import Notifier
from chronod.runner import Ending, Report, RunInfo, StopRequest, Supervision, run_attempt
from chronod.runtime import Pool, PoolHooks, store_settings
from chronod.store import StoreSettings, open_store
from chronod.store.base import AttemptResult, Claim, FinishStatus, Outcome, Store, WorkerInfo
from chronod.telemetry import EventWriter, Telemetry, plural

log = logging.getLogger("chronod.worker")

# Exit codes of a worker child (the supervisor logs them by name).
EXIT_OK = 0  # stopped on request (drained)
EXIT_ORPHANED = 3  # its supervisor died; it drained and left
EXIT_STORE_ERROR = 69  # EX_UNAVAILABLE: the store failed in a way that is not transient
EXIT_CRASHED = 70  # EX_SOFTWARE: an unexpected exception
EXIT_CONFIG = 78  # EX_CONFIG: the store settings are unusable
EXIT_NAMES = {
    EXIT_OK: "stopped",
    EXIT_ORPHANED: "orphaned",
    EXIT_STORE_ERROR: "store error",
    EXIT_CRASHED: "crashed",
    EXIT_CONFIG: "bad store settings",
}

DEFAULT_ATTEMPT_TTL = timedelta(seconds=30)
CLAIM_WAIT = 1.0  # seconds a claim blocks for work: bounds how long a stop request waits
REGISTER_EVERY = 5.0  # seconds between worker registrations (entries expire after a minute)
RETRY_JITTER = 0.15
MAX_RETRY_DELAY = timedelta(days=1)
STORE_BACKOFF = (0.5, 1.0, 2.0, 5.0)  # seconds, when the store is unavailable
FINISH_PATIENCE = 600.0  # seconds to keep trying to record a result before leaving it to the reaper
HAND_BACK_PATIENCE = 10.0  # seconds to keep trying to hand a run back while stopping
RESPAWN_BACKOFF = (0.1, 0.5, 1.0, 2.0, 5.0, 10.0)  # seconds, by consecutive early deaths
STABLE_AFTER = 30.0  # seconds: a child that lived this long died "late"; its backoff restarts
STOP_MARGIN = 10.0  # seconds past drain + kill grace before the supervisor SIGKILLs a child
POLL_CHILDREN = 0.05  # seconds between looks at stopping children when there are no pidfds


def retry_at(now: datetime, base: timedelta, attempt: int, rng: random.Random) -> datetime:
    """When attempt ``attempt + 1`` may start after attempt ``attempt`` failed (see module doc)."""
    cap = max(base, MAX_RETRY_DELAY).total_seconds()
    seconds = min(base.total_seconds() * 2.0 ** min(attempt - 1, 64), cap)
    return now + timedelta(seconds=seconds * rng.uniform(1 - RETRY_JITTER, 1 + RETRY_JITTER))


def default_concurrency() -> int:
    return os.cpu_count() or 1


# --------------------------------------------------------------------------------------------------
# The config a worker runs from


class ConfigSource:
    """The worker's own config, re-read from its file on request (SIGHUP) or when it changed."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self._stamp: tuple[int, int, int] | None = None  # unknown: the first refresh reads it

    @property
    def jobs(self) -> Mapping[str, JobConfig]:
        return self.config.jobs

    def refresh(self, *, force: bool = False) -> bool:
        """Re-read the file if it changed (or ``force``); True if a new config was loaded."""
        stamp = _stamp(self.config.path)
        if stamp == self._stamp and not force:
            return False
        self._stamp = stamp
        try:
            config = load_config(self.config.path)
        except ConfigError as exc:
            event(log, logging.ERROR, f"config reload refused, keeping the running config: {exc}")
            return False
        changed = _digests(config) != _digests(self.config)
        self.config = config
        if changed:
            event(log, logging.INFO, "config reloaded", jobs=len(config.jobs))
        return changed


def _digests(config: Config) -> dict[str, str]:
    return {name: job.digest for name, job in config.jobs.items()}


def _stamp(path: Path) -> tuple[int, int, int] | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_mtime_ns, stat.st_size, stat.st_ino


# --------------------------------------------------------------------------------------------------
# One worker child: the consumer loop


@dataclass(frozen=True, kw_only=True)
class ConsumerSettings:
    queues: tuple[str, ...] | None = ("default",)  # None: every queue the config names
    attempt_ttl: timedelta = DEFAULT_ATTEMPT_TTL
    drain_timeout: timedelta = timedelta(seconds=30)
    claim_wait: float = CLAIM_WAIT
    register_every: float = REGISTER_EVERY
    finish_patience: float = FINISH_PATIENCE
    store_backoff: tuple[float, ...] = STORE_BACKOFF  # seconds, while the store is unavailable

    @property
    def heartbeat_every(self) -> float:
        return self.attempt_ttl.total_seconds() / 3


class Consumer:
    """Claims runs and executes them, one at a time, until asked to stop."""

    def __init__(
        self,
        store: Store,
        config: ConfigSource,
        settings: ConsumerSettings,
        *,
        clock: Clock | None = None,
        rng: random.Random | None = None,
        parent_pid: int | None = None,
        adopts_orphans: bool = False,
        events: EventWriter | None = None,
    ) -> None:
        self.store = store
        self.config = config
        self.settings = settings
        self.clock: Clock = clock or SystemClock()
        self.rng = rng or random.Random()
        self.parent_pid = parent_pid
        # Only a subreaper's strays are its runs' leftovers; elsewhere (an embedding process, a
        # test) waiting for "any child" could steal another component's child.
        self.adopts_orphans = adopts_orphans
        self.events = events or EventWriter(None)  # run events for the supervisor's metrics
        self.host = socket.gethostname()
        self.worker_id = f"{self.host}:{os.getpid()}"
        self.stop = StopRequest()
        self.waker = Waker()
        self.orphaned = False
        self._reload = False
        self._running = 0
        self._next_register = 0.0
        self._outages = 0

    # -- control: safe to call from signal handlers ----------------------------------------------

    @property
    def stopping(self) -> bool:
        return self.stop.terminate_at is not None

    def request_stop(self, *, immediate: bool = False) -> None:
        """Stop claiming; a running run gets ``drain_timeout`` (none if ``immediate``)."""
        now = self.clock.monotonic()
        if immediate:
            self.stop.kill = True
            self.stop.terminate_at = now
        elif self.stop.terminate_at is None:
            self.stop.terminate_at = now + self.settings.drain_timeout.total_seconds()
        self.waker.wake()

    def request_reload(self) -> None:
        self._reload = True
        self.waker.wake()

    def install_signals(self) -> None:
        signal.signal(signal.SIGTERM, lambda _s, _f: self.request_stop())
        signal.signal(signal.SIGINT, lambda _s, _f: self.request_stop(immediate=self.stopping))
        signal.signal(signal.SIGHUP, lambda _s, _f: self.request_reload())

    # -- the loop ---------------------------------------------------------------------------------

    def run(self) -> None:
        event(
            log,
            logging.INFO,
            "worker started",
            worker=self.worker_id,
            queues=",".join(self.queues()),
            store=self.store.describe(),
        )
        while not self.stopping:
            self.step()
        event(log, logging.INFO, "worker stopped", worker=self.worker_id)

    def step(self) -> Claim | None:
        """One claim (waiting up to ``claim_wait``) and, if one came, its whole attempt."""
        self._check_parent()
        if self._reload:
            self._reload = False
            self.config.refresh(force=True)
        self._register()
        if self.adopts_orphans:
            reap_strays()  # leftovers of finished runs that escaped their group, now ours
        claim = self._claim()
        if claim is not None:
            self.handle(claim)
        return claim

    def queues(self) -> tuple[str, ...]:
        if self.settings.queues is not None:
            return self.settings.queues
        return tuple(sorted({job.queue for job in self.config.jobs.values()})) or ("default",)

    def _check_parent(self) -> None:
        if self.parent_pid is not None and os.getppid() != self.parent_pid and not self.orphaned:
            self.orphaned = True
            event(
                log, logging.WARNING, "supervisor gone: draining and exiting", worker=self.worker_id
            )
            self.request_stop()

    def _claim(self) -> Claim | None:
        token = secrets.token_hex(16)
        try:
            claim = self.store.claim(
                self.worker_id,
                self.queues(),
                token,
                self.settings.attempt_ttl,
                self.settings.claim_wait,
            )
        except StoreUnavailable as exc:
            self._outage(exc)
            return None
        if self._outages:
            event(log, logging.INFO, "store reachable again", worker=self.worker_id)
            self._outages = 0
        return claim

    def _outage(self, exc: StoreUnavailable) -> None:
        backoff = self.settings.store_backoff
        delay = backoff[min(self._outages, len(backoff) - 1)]
        level = logging.WARNING if self._outages == 0 else logging.DEBUG
        event(
            log,
            level,
            f"store unavailable, not claiming: {exc}",
            worker=self.worker_id,
            retry_in=delay,
        )
        self._outages += 1
        self.waker.wait(delay)

    def _register(self, *, force: bool = False) -> None:
        now = self.clock.monotonic()
        if now < self._next_register and not force:
            return
        self._next_register = now + self.settings.register_every
        info = WorkerInfo(
            worker=self.worker_id,
            queues=self.queues(),
            seen_at=self.clock.now(),
            running=self._running,
            concurrency=1,
        )
        try:
            self.store.register_worker(info)
        except StoreUnavailable as exc:
            event(log, logging.DEBUG, f"could not register: {exc}", worker=self.worker_id)

    # -- one claim --------------------------------------------------------------------------------

    def handle(self, claim: Claim) -> None:
        """Refuse, run or hand back ``claim``, then record the attempt."""
        fields = self._fields(claim)
        job, refusal = self._job_for(claim)
        if job is None:
            event(log, logging.WARNING, f"refused: {refusal}", outcome="config-mismatch", **fields)
            result = AttemptResult(outcome=Outcome.CONFIG_MISMATCH, error=refusal)
            status = self._finish(claim, lambda: result, fields)
            self._report_finished(claim, result.outcome, status)
            return
        if self.stopping:
            self._hand_back(claim, fields)
            return
        self._running = 1
        try:
            report = run_attempt(job, self._info(claim), self._supervision(claim, fields))
        finally:
            self._running = 0
        self._conclude(claim, job, report, fields)

    def _job_for(self, claim: Claim) -> tuple[JobConfig | None, str]:
        run = claim.run
        job = self.config.jobs.get(run.job)
        if (job is None or job.digest != run.digest) and self.config.refresh():
            job = self.config.jobs.get(run.job)
        if job is None:
            return None, (
                f"unknown job {run.job!r} on host {self.host}: not defined in this "
                f"worker's config ({self.config.config.path})"
            )
        if job.digest != run.digest:
            return None, (
                f"job {run.job!r} on host {self.host}: definition differs from the "
                f"dispatcher's (digest {job.digest} here ≠ {run.digest} in the run)"
            )
        return job, ""

    def _info(self, claim: Claim) -> RunInfo:
        run = claim.run
        return RunInfo(
            job=run.job, run_id=run.run_id, slot=run.slot, attempt=claim.attempt, epoch=run.epoch
        )

    def _supervision(self, claim: Claim, fields: dict[str, object]) -> Supervision:
        def started(pid: int) -> None:
            # Lateness against this host's clock: exact with SQLite, approximate across hosts.
            ready = claim.run.not_before or claim.run.slot
            late = (self.clock.now() - ready).total_seconds()
            event(
                log, logging.INFO, "started", job_pid=pid, late_ms=round(late * 1000, 1), **fields
            )
            self.events.emit("started", job=claim.run.job, late=late)
            self._register(force=True)  # now "running": after the start, not delaying it

        return Supervision(
            heartbeat=lambda: self._heartbeat(claim),
            heartbeat_every=self.settings.heartbeat_every,
            stop=self.stop,
            wake_fd=self.waker.read_fd,
            on_start=started,
            monotonic=self.clock.monotonic,
        )

    def _heartbeat(self, claim: Claim) -> bool:
        self._check_parent()
        self._register()
        try:
            return self.store.heartbeat(claim.run.run_id, claim.token, self.settings.attempt_ttl)
        except StoreUnavailable as exc:
            # Keep running: if the lease lapses meanwhile, the next heartbeat that gets through
            # says so (and the run is stopped then).
            event(
                log,
                logging.WARNING,
                f"heartbeat failed, store unavailable: {exc}",
                **self._fields(claim),
            )
            return True

    def _conclude(
        self, claim: Claim, job: JobConfig, report: Report, fields: dict[str, object]
    ) -> None:
        if report.ending is Ending.LEASE_LOST:
            event(
                log,
                logging.WARNING,
                "attempt lease lost: result discarded (the run was reclaimed)",
                duration=_secs(report.duration),
                **fields,
            )
            return
        if report.ending is Ending.INTERRUPTED:
            event(
                log,
                logging.INFO,
                f"run stopped: {report.error}",
                duration=_secs(report.duration),
                **fields,
            )
            self._hand_back(claim, fields)
            return
        retry = report.outcome in (Outcome.FAILED, Outcome.TIMED_OUT) and (
            claim.attempt < claim.run.max_attempts
        )

        built: list[AttemptResult] = []

        def result() -> AttemptResult:
            # Store time, read on every try: a result recorded late must not retry early.
            when = None
            if retry:
                when = retry_at(self.store.now(), job.retry_delay, claim.attempt, self.rng)
            built.append(report.result(retry_at=when))
            return built[-1]

        status = self._finish(claim, result, fields)
        again = built[-1].retry_at if built and status is FinishStatus.RETRY else None
        outcome = report.outcome
        ran = report.ending in (Ending.EXITED, Ending.TIMED_OUT)
        self._report_finished(claim, outcome, status, report.duration if ran else None)
        level = logging.INFO if outcome is Outcome.SUCCEEDED else logging.WARNING
        event(
            log,
            level,
            "finished",
            outcome=outcome.value if outcome else None,
            duration=_secs(report.duration),
            exit_code=report.exit_code,
            status=status.value if status else "unrecorded",
            retry_at=format_utc(again) if again else None,
            error=report.error,
            **fields,
        )

    def _report_finished(
        self,
        claim: Claim,
        outcome: Outcome | None,
        status: FinishStatus | None,
        duration: float | None = None,
    ) -> None:
        self.events.emit(
            "finished",
            job=claim.run.job,
            outcome=outcome.value if outcome else None,
            recorded=status.value if status else None,
            duration=duration,
        )

    def _finish(
        self, claim: Claim, result: Callable[[], AttemptResult], fields: dict[str, object]
    ) -> FinishStatus | None:
        """Record the attempt, retrying while the store is unavailable (the token stays valid)."""
        patience = self.clock.monotonic() + self.settings.finish_patience
        for delay in _backoff(self.settings.store_backoff):
            try:
                status = self.store.finish(claim.run.run_id, claim.token, result())
            except StoreUnavailable as exc:
                if self.stop.kill or self.clock.monotonic() + delay > patience:
                    event(
                        log,
                        logging.ERROR,
                        f"could not record the result, giving up: {exc}; "
                        "the run is retried after its attempt lease expires",
                        **fields,
                    )
                    return None
                event(
                    log,
                    logging.WARNING,
                    f"could not record the result yet: {exc}",
                    retry_in=delay,
                    **fields,
                )
                self.waker.wait(delay)
                continue
            if status is FinishStatus.STALE:
                event(
                    log,
                    logging.WARNING,
                    "result refused: the attempt was reclaimed meanwhile",
                    **fields,
                )
            return status
        raise AssertionError("unreachable")  # pragma: no cover

    def _hand_back(self, claim: Claim, fields: dict[str, object]) -> None:
        patience = self.clock.monotonic() + HAND_BACK_PATIENCE
        for delay in _backoff(self.settings.store_backoff):
            try:
                returned = self.store.hand_back(claim.run.run_id, claim.token)
            except StoreUnavailable as exc:
                if self.clock.monotonic() + delay > patience:
                    event(
                        log,
                        logging.ERROR,
                        f"could not hand the run back: {exc}; it is "
                        "retried after its attempt lease expires",
                        **fields,
                    )
                    return
                self.waker.wait(delay)
                continue
            event(
                log,
                logging.INFO if returned else logging.WARNING,
                "handed back" if returned else "hand-back refused: the attempt was reclaimed",
                **fields,
            )
            return

    def _fields(self, claim: Claim) -> dict[str, object]:
        run = claim.run
        return {
            "job": run.job,
            "run_id": run.run_id,
            "slot": format_utc(run.slot),
            "attempt": claim.attempt,
            "epoch": run.epoch,
            "worker": self.worker_id,
        }

    def close(self) -> None:
        self.waker.close()


def _backoff(delays: tuple[float, ...]) -> Iterator[float]:
    yield from delays
    while True:
        yield delays[-1]


def _secs(value: float) -> float:
    return round(value, 3)


# --------------------------------------------------------------------------------------------------
# The supervisor


@dataclass(frozen=True, kw_only=True)
class PoolSettings:
    concurrency: int
    queues: tuple[str, ...] | None = ("default",)  # None: every queue the config names
    attempt_ttl: timedelta = DEFAULT_ATTEMPT_TTL
    drain_timeout: timedelta = timedelta(seconds=30)
    claim_wait: float = CLAIM_WAIT
    respawn_backoff: tuple[float, ...] = RESPAWN_BACKOFF

    def consumer(self) -> ConsumerSettings:
        return ConsumerSettings(
            queues=self.queues,
            attempt_ttl=self.attempt_ttl,
            drain_timeout=self.drain_timeout,
            claim_wait=self.claim_wait,
        )


@dataclass
class _Slot:
    """One place in the pool and the child currently filling it."""

    index: int
    pid: int | None = None
    born: float = 0.0
    failures: int = 0  # consecutive early deaths
    respawn_at: float = 0.0


@dataclass
class WorkerPool:
    """The supervisor (implements :class:`chronod.runtime.Pool`)."""

    config: Config
    store: StoreSettings
    settings: PoolSettings
    clock: Clock = field(default_factory=SystemClock)
    hooks: PoolHooks = field(default_factory=PoolHooks)
    slots: list[_Slot] = field(default_factory=list)
    stopping: bool = False

    def start(self) -> None:
        self.stopping = False
        self.slots = [_Slot(i) for i in range(self.settings.concurrency)]
        event(
            log,
            logging.INFO,
            "worker pool starting",
            concurrency=self.settings.concurrency,
            queues=",".join(self.settings.queues or ("(all configured)",)),
        )
        self.check()

    def pids(self) -> list[int]:
        return [slot.pid for slot in self.slots if slot.pid is not None]

    def check(self) -> None:
        """Reap dead children (never blocks) and respawn those whose backoff has passed."""
        now = self.clock.monotonic()
        for slot in self.slots:
            if slot.pid is not None:
                self._reap(slot, now)
            if slot.pid is None and not self.stopping and now >= slot.respawn_at:
                self._spawn(slot)

    def next_check_in(self) -> float:
        """Seconds until :meth:`check` has something to do that no signal announces (a respawn)."""
        now = self.clock.monotonic()
        due = [s.respawn_at - now for s in self.slots if s.pid is None]
        return max(0.0, min(due, default=1.0))

    def reload(self, config: Config) -> None:
        """Use ``config`` for children started from now on, and tell the running ones to reload."""
        self.config = config
        for pid in self.pids():
            signal_process(pid, signal.SIGHUP)

    def interrupt(self) -> None:
        """Forward an impatient SIGINT: children kill their runs now and hand them back."""
        for pid in self.pids():
            signal_process(pid, signal.SIGINT)

    def stop(self) -> None:
        """SIGTERM every child and wait for them to drain; SIGKILL what outlives the deadline."""
        self.stopping = True
        pids = self.pids()
        if not pids:
            return
        event(
            log,
            logging.INFO,
            "worker pool stopping: draining",
            children=len(pids),
            drain_timeout=self.settings.drain_timeout.total_seconds(),
        )
        for pid in pids:
            signal_process(pid, signal.SIGTERM)
        grace = max((job.kill_grace for job in self.config.jobs.values()), default=timedelta())
        limit = (self.settings.drain_timeout + grace).total_seconds() + STOP_MARGIN
        with self._forwarding_sigint():
            self._wait_all(self.clock.monotonic() + limit)
        for slot in self.slots:
            if slot.pid is not None:
                event(
                    log,
                    logging.ERROR,
                    "worker child did not stop in time: killing it",
                    child_pid=slot.pid,
                )
                signal_process(slot.pid, signal.SIGKILL)
                _, status = os.waitpid(slot.pid, 0)
                self._exited(slot, status, self.clock.monotonic())
        event(log, logging.INFO, "worker pool stopped")

    # -- children ---------------------------------------------------------------------------------

    def _spawn(self, slot: _Slot) -> None:
        for stream in (sys.stdout, sys.stderr):  # or the child would flush our buffers again
            with contextlib.suppress(Exception):
                stream.flush()
        parent = os.getpid()
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, FORK_BLOCKED)
        try:
            with self.hooks.fork_lock:
                pid = os.fork()
            if pid == 0:
                _child_main(
                    self.config,
                    self.store,
                    self.settings.consumer(),
                    parent,
                    previous,
                    self.hooks.events,
                )
        except OSError as exc:
            slot.respawn_at = self.clock.monotonic() + self._backoff(slot)
            event(log, logging.ERROR, f"cannot start a worker child: {exc}", slot=slot.index)
            return
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)
        slot.pid = pid
        slot.born = self.clock.monotonic()

    def _reap(self, slot: _Slot, now: float) -> None:
        assert slot.pid is not None
        try:
            pid, status = os.waitpid(slot.pid, os.WNOHANG)
        except ChildProcessError:  # reaped elsewhere; the status is lost
            pid, status = slot.pid, 0
        if pid:
            self._exited(slot, status, now)

    def _exited(self, slot: _Slot, status: int, now: float) -> None:
        pid, slot.pid = slot.pid, None
        code = os.waitstatus_to_exitcode(status)
        reason = EXIT_NAMES.get(code, f"killed by {signal_name(-code)}" if code < 0 else "?")
        if self.stopping:
            event(
                log,
                logging.INFO,
                "worker child exited",
                child_pid=pid,
                exit_code=code,
                reason=reason,
            )
            return
        if now - slot.born >= STABLE_AFTER:
            slot.failures = 0
        delay = self._backoff(slot)
        slot.respawn_at = now + delay
        event(
            log,
            logging.WARNING,
            "worker child died: respawning",
            child_pid=pid,
            exit_code=code,
            reason=reason,
            respawn_in=delay,
        )

    def _backoff(self, slot: _Slot) -> float:
        backoff = self.settings.respawn_backoff
        delay = backoff[min(slot.failures, len(backoff) - 1)]
        slot.failures += 1
        return delay

    def _wait_all(self, deadline: float) -> None:
        pidfds = {slot.index: open_pidfd(slot.pid) for slot in self.slots if slot.pid is not None}
        try:
            while True:
                now = self.clock.monotonic()
                for slot in self.slots:
                    if slot.pid is not None:
                        self._reap(slot, now)
                live = [s for s in self.slots if s.pid is not None]
                if not live or now >= deadline:
                    return
                fds = [fd for s in live if (fd := pidfds.get(s.index)) is not None]
                cap = 1.0 if len(fds) == len(live) else POLL_CHILDREN
                wait_readable(fds, min(deadline - now, cap))
        finally:
            for fd in pidfds.values():
                close_quietly(fd)

    @contextlib.contextmanager
    def _forwarding_sigint(self) -> Iterator[None]:
        """While stopping, a SIGINT to the supervisor means "now" for the children too."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = signal.signal(signal.SIGINT, lambda _s, _f: self.interrupt())
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)


def _child_main(
    config: Config,
    store: StoreSettings,
    settings: ConsumerSettings,
    parent: int,
    mask: Iterable[int],
    events: int | None = None,
) -> NoReturn:
    """Body of a worker child, right after fork: never returns into the supervisor's code."""
    code = EXIT_CRASHED
    try:
        code = _child(config, store, settings, parent, mask, events)
    except BaseException:
        log.exception("worker child crashed")
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code)


def _child(
    config: Config,
    store_settings: StoreSettings,
    settings: ConsumerSettings,
    parent: int,
    mask: Iterable[int],
    events: int | None = None,
) -> int:
    # Signals are blocked (see WorkerPool._spawn): drop the supervisor's handlers first.
    for sig in FORK_BLOCKED:
        signal.signal(sig, signal.SIG_DFL)
    with contextlib.suppress(ValueError):
        signal.set_wakeup_fd(-1)
    # Parent death = drain and leave. (Linux sends it when the *thread* that forked us ends: the
    # pool is driven from the supervisor's main thread, which lives as long as the process.)
    die_with_parent(signal.SIGTERM)
    adopts = become_subreaper()
    try:
        store = open_store(store_settings)  # our own connection: none crosses the fork
    except StoreConfigError as exc:
        event(log, logging.ERROR, f"worker child cannot open the store: {exc}")
        return EXIT_CONFIG
    consumer = Consumer(
        store,
        ConfigSource(config),
        settings,
        parent_pid=parent,
        adopts_orphans=adopts,
        events=EventWriter(events),
    )
    try:
        consumer.install_signals()
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        consumer.run()
    except StoreError as exc:
        event(
            log,
            logging.ERROR,
            f"worker child stopping on a store error: {exc}",
            worker=consumer.worker_id,
        )
        return EXIT_STORE_ERROR
    finally:
        consumer.close()
        store.close()
    return EXIT_ORPHANED if os.getppid() != parent else EXIT_OK


# --------------------------------------------------------------------------------------------------
# `chronod worker` in the foreground, and the pool embedded in `chronod run`


class Foreground:
    """``chronod worker``: run a pool until SIGTERM/SIGINT; SIGHUP reloads the config.

    For systemd (:mod:`chronod.notify`): ``READY=1`` once the store has answered, ``STATUS=`` with
    the pool and the queue depth (or the store outage), ``WATCHDOG=1`` from this loop while the
    process is healthy (:mod:`chronod.telemetry`), ``RELOADING=1``/``READY=1`` around a reload.
    """

    def __init__(
        self, pool: WorkerPool, telemetry: Telemetry, notifier: Notifier | None = None
    ) -> None:
        self.pool = pool
        self.telemetry = telemetry
        self.notifier = notifier or Notifier()
        self.waker = Waker()
        self.stop_requested = False
        self.reload_requested = False

    def install_signals(self) -> None:
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        signal.signal(signal.SIGHUP, self._on_hup)
        signal.signal(signal.SIGCHLD, lambda _s, _f: self.waker.wake())  # a child died: reap now

    def _on_stop(self, sig: int, _frame: FrameType | None) -> None:
        if self.stop_requested and sig == signal.SIGINT:
            self.pool.interrupt()
        self.stop_requested = True
        self.waker.wake()

    def _on_hup(self, _sig: int, _frame: FrameType | None) -> None:
        self.reload_requested = True
        self.waker.wake()

    def run(self) -> int:
        self.telemetry.start(wake=self.waker.wake)
        self.pool.start()
        try:
            while not self.stop_requested:
                if self.reload_requested:
                    self._reload()
                self.pool.check()
                self.telemetry.announce(self.notifier, self.status_line())
                self.telemetry.feed_watchdog(self.notifier)
                wait = min(self.pool.next_check_in(), self.notifier.watchdog_interval() or 1.0)
                self.waker.wait(wait)
        finally:
            self.notifier.stopping()
            self.pool.stop()
            self.telemetry.stop()
            self.waker.close()
        return EXIT_OK

    def status_line(self) -> str:
        settings = self.pool.settings
        queues = ",".join(settings.queues or ("all queues",))
        pool = f"{plural(settings.concurrency, 'worker')} on {queues}"
        outage = self.telemetry.health.outage()
        if outage is not None:
            return f"{outage}; {pool}"
        if not self.telemetry.health.ever_up:
            return f"waiting for the store; {pool}"
        return f"{pool}; {self.telemetry.queued()}"

    def _reload(self) -> None:
        self.reload_requested = False
        self.notifier.reloading()
        try:
            config = load_config(self.pool.config.path)
        except ConfigError as exc:
            for issue in exc.issues:
                event(
                    log,
                    logging.ERROR,
                    f"reload refused, keeping the running config: {issue.format()}",
                )
        else:
            self.pool.reload(config)
            self.telemetry.configured(config.jobs)
            event(log, logging.INFO, "config reloaded", jobs=len(config.jobs))
        self.telemetry.announce(self.notifier, self.status_line(), reloaded=True)


def serve(
    config: Config,
    store_override: str | None,
    *,
    concurrency: int | None = None,
    queues: tuple[str, ...] = (),
    metrics: ChronodMetrics | None = None,
) -> int:
    """``chronod worker``: validate the arguments, then run a pool in the foreground."""
    for queue in queues:
        if not QUEUE_NAME.match(queue):
            raise UsageError(f"--queue {queue!r}: a queue name uses letters, digits, '_', '.', '-'")
    settings = store_settings(config, store_override)
    # A bad URL fails here, once (stores connect lazily). The supervisor's own connection is the
    # sampler's (queue depth for STATUS and metrics); the children open theirs after the fork.
    telemetry = Telemetry(open_store(settings), clock=SystemClock(), metrics=metrics)
    telemetry.configured(config.jobs)
    pool = WorkerPool(
        config=config,
        store=settings,
        settings=PoolSettings(
            concurrency=concurrency or default_concurrency(),
            queues=tuple(dict.fromkeys(queues)) or ("default",),
            drain_timeout=config.daemon.drain_timeout,
        ),
        hooks=telemetry.hooks,
    )
    foreground = Foreground(pool, telemetry)
    foreground.install_signals()
    return foreground.run()


def embedded_pool_factory(
    workers: int | None, store_override: str | None
) -> Callable[[Config, PoolHooks], Pool | None]:
    """``chronod run --workers N``: the pool the daemon supervises (N=0: none).

    N defaults to ``[chronod] workers``, else the CPU count. The embedded pool serves every queue
    the config names, so a single-host setup runs all its jobs; hosts that should not run some
    queues run the scheduler with ``--workers 0`` and separate ``chronod worker --queue`` pools.
    """

    def build(config: Config, hooks: PoolHooks) -> Pool | None:
        size = workers if workers is not None else config.daemon.workers
        size = default_concurrency() if size is None else size
        if size <= 0:
            return None
        settings = PoolSettings(
            concurrency=size, queues=None, drain_timeout=config.daemon.drain_timeout
        )
        return WorkerPool(
            config=config,
            store=store_settings(config, store_override),
            settings=settings,
            hooks=hooks,
        )

    return build
